//! The embedded runner: `serve`'s own workers that execute queued runs (issue 22).
//!
//! Each worker claims through `service::runner::claim_next` (the same atomic claim as
//! external agents, round robin across tenants and applications; it opens only the stores of
//! tenants hinted to have queued runs, and every tenant's at most once per `runner.poll_ms` —
//! `service::runner::QueuedHints`) and executes the run with the
//! agent's executor ([`crate::agent::execute`]); results go to the same service functions the
//! agent API routes call ([`ServiceSink`]), so masking, secret scrubbing, checkpoints and
//! screenshots follow one code path. Audit actor: `runner:embedded`.
//!
//! Workers run on their own thread and Tokio runtime (browsers and their DevTools traffic stay
//! off the HTTP workers). Without Chromium, or when its sandbox cannot start and
//! `runner.allow_no_sandbox` is off, the runner stays off and says why in
//! `GET /api/v1/runners`; the server still starts and `/readyz` is unaffected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::browser::{self, Launcher};
use crate::agent::client::{Claim, MaskEntry, RunInfo, Sent, StepReport, Verdict};
use crate::agent::RunSink;
use crate::error::{ApiError, ErrorCode};
use crate::service::runner::{self as svc, EmbeddedInfo};
use crate::service::runs::{self, Complete, RunRow};
use crate::service::{AppState, TenantCtx};

/// Results of a run executed by an embedded worker, handed to the service layer directly.
pub struct ServiceSink {
    state: Arc<AppState>,
    ctx: TenantCtx,
}

fn info(r: RunRow) -> RunInfo {
    RunInfo {
        id: r.id,
        status: r.status,
        reason: r.reason,
        error: r.error,
    }
}

fn stopped_or_err(e: ApiError, what: &str) -> anyhow::Result<Sent> {
    if e.code == ErrorCode::InvalidTransition {
        Ok(Sent::Stopped(e.detail))
    } else {
        Err(anyhow::anyhow!(
            "{what}: {} ({})",
            e.detail,
            e.code.as_str()
        ))
    }
}

impl RunSink for ServiceSink {
    async fn report(&self, run: &str, rep: &StepReport) -> anyhow::Result<Sent> {
        let body = runs::StepReport {
            index: rep.index as i64,
            status: rep.status.to_string(),
            duration_ms: rep.duration_ms.map(|d| d as i64),
            error: rep.error.clone(),
            console: rep.console.clone(),
            network: rep.network.clone(),
        };
        match runs::report_step(&self.state, &self.ctx, run, body).await {
            Ok(_) => Ok(Sent::Ok),
            Err(e) => stopped_or_err(e, "report step"),
        }
    }

    async fn heartbeat(&self, run: &str) -> anyhow::Result<Sent> {
        match runs::heartbeat(&self.state, &self.ctx, run).await {
            Ok(()) => Ok(Sent::Ok),
            Err(e) => stopped_or_err(e, "heartbeat"),
        }
    }

    async fn complete(
        &self,
        run: &str,
        verdict: Verdict,
        error: Option<&str>,
    ) -> anyhow::Result<Result<RunInfo, String>> {
        let body = Complete {
            status: verdict.as_str().into(),
            error: error.map(str::to_string),
        };
        match runs::complete(&self.state, &self.ctx, run, body).await {
            Ok(r) => Ok(Ok(info(r))),
            Err(e) if e.code == ErrorCode::InvalidTransition => Ok(Err(e.detail)),
            Err(e) => Err(anyhow::anyhow!(
                "complete run: {} ({})",
                e.detail,
                e.code.as_str()
            )),
        }
    }

    async fn upload(
        &self,
        run: &str,
        n: usize,
        png: Vec<u8>,
        masks: &[MaskEntry],
    ) -> anyhow::Result<Sent> {
        let masks = serde_json::to_vec(masks)?;
        match crate::service::screenshots::upload(
            &self.state,
            &self.ctx,
            run,
            n as i64,
            png,
            Some(masks),
            None,
        )
        .await
        {
            Ok(_) => Ok(Sent::Ok),
            Err(e) => stopped_or_err(e, "store screenshot"),
        }
    }

    async fn run(&self, run: &str) -> anyhow::Result<RunInfo> {
        runs::get_as_agent(&self.state, &self.ctx, run)
            .await
            .map(info)
            .map_err(|e| anyhow::anyhow!("read run: {}", e.detail))
    }
}

/// A started embedded runner; [`Runner::shutdown`] stops it.
pub struct Runner {
    stop: Arc<AtomicBool>,
    launcher: Option<Arc<Launcher>>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: Arc<AppState>,
}

/// Why the runner cannot start, or the launcher to start browsers with.
fn prepare(state: &AppState) -> Result<Launcher, String> {
    let s = &state.settings.runner;
    let chromium = browser::find_chromium(s.chromium.as_deref()).map_err(|e| format!("{e:#}"))?;
    let l = Launcher::prepare(
        chromium,
        &s.browser_user,
        s.allow_no_sandbox,
        &state.settings.secret_paths(),
    )
    .map_err(|e| format!("{e:#}"))?;
    // Profiles live under the system temp dir, never in the data dir.
    Ok(l)
}

/// `chromium --version`, trimmed (None when it does not run).
fn chromium_version(chromium: &std::path::Path) -> Option<String> {
    let o = std::process::Command::new(chromium)
        .arg("--version")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !v.is_empty()).then_some(v)
}

/// The embedded runner's health as `serve` would start it with `settings` (for
/// `flowguard doctor`): Chromium and its version, the sandbox probe, `/dev/shm`, warnings.
pub fn diagnose(settings: &crate::config::Settings) -> crate::service::doctor::RunnerHealth {
    let s = &settings.runner;
    let workers = s.workers();
    let mut h = crate::service::doctor::RunnerHealth {
        enabled: workers > 0,
        workers,
        allow_no_sandbox: s.allow_no_sandbox,
        shm_bytes: browser::shm_size(),
        ..Default::default()
    };
    if workers == 0 {
        return h;
    }
    let chromium = match browser::find_chromium(s.chromium.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            h.problem = Some(format!("{e:#}"));
            return h;
        }
    };
    h.chromium = Some(chromium.display().to_string());
    h.chromium_version = chromium_version(&chromium);
    match Launcher::prepare(
        chromium,
        &s.browser_user,
        s.allow_no_sandbox,
        &settings.secret_paths(),
    ) {
        Ok(l) => {
            h.sandbox = !l.no_sandbox();
            h.sandbox_problem = l.sandbox_problem().map(str::to_string);
            h.hidden = l.hidden().iter().map(|p| p.display().to_string()).collect();
            h.warnings = l.warnings().to_vec();
            h.can_run = true;
        }
        Err(e) => {
            let why = format!("{e:#}");
            h.sandbox_problem = Some(why.clone());
            h.problem = Some(why);
        }
    }
    h
}

impl Runner {
    /// Probe Chromium and start `runner.embedded_workers` workers (none when 0 or when the
    /// browser cannot run; the reason is recorded in the runner state and logged).
    pub fn start(state: Arc<AppState>) -> Self {
        // Runs a previous process's workers were executing end `runner_error` (retried once).
        svc::recover_interrupted_blocking(&state);
        let workers = state.settings.runner.workers();
        let stop = Arc::new(AtomicBool::new(false));
        let off = |state: &Arc<AppState>, reason: String| {
            tracing::warn!(reason = %reason, "embedded runner is off");
            state.runner.set_embedded(EmbeddedInfo {
                enabled: false,
                workers: 0,
                reason: Some(reason),
                ..Default::default()
            });
            Self {
                stop: stop.clone(),
                launcher: None,
                thread: None,
                state: state.clone(),
            }
        };
        if workers == 0 {
            return off(
                &state,
                "runner.embedded_workers = 0 (only external agents run flows)".into(),
            );
        }
        let launcher = match prepare(&state) {
            Ok(l) => Arc::new(l),
            Err(why) => return off(&state, why),
        };
        for w in launcher.warnings() {
            tracing::warn!(warning = %w, "embedded runner");
        }
        state.runner.set_embedded(EmbeddedInfo {
            enabled: true,
            workers,
            reason: None,
            chromium: Some(launcher.chromium().display().to_string()),
            no_sandbox: launcher.no_sandbox(),
            warnings: launcher.warnings().to_vec(),
        });
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flowguard-runner")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return off(&state, format!("cannot start the runner's runtime: {e}")),
        };
        let (st, l, stp) = (state.clone(), launcher.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("flowguard-runner".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for n in 0..workers {
                        let (st, l, stp) = (st.clone(), l.clone(), stp.clone());
                        tasks.push(tokio::spawn(worker(n, st, l, stp)));
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                });
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => return off(&state, format!("cannot start the runner thread: {e}")),
        };
        tracing::info!(workers, chromium = %launcher.chromium().display(), "embedded runner started");
        Self {
            stop,
            launcher: Some(launcher),
            thread,
            state,
        }
    }

    /// Stop the workers: no new claims, every browser process group killed (its run ends
    /// `error`/`runner_error` and is queued again once), then wait up to 10 s for the workers.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.state.run_queued.notify_waiters();
        if let Some(l) = &self.launcher {
            l.kill_all();
        }
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        if let Some(l) = &self.launcher {
            l.kill_all();
        }
    }
}

fn to_agent_claim(c: runs::Claim) -> Claim {
    Claim {
        run_id: c.run_id,
        flow_id: c.flow_id,
        flow_version: c.flow_version,
        base_url: c.base_url,
        steps: c.steps,
        mask_required: c.mask_required,
    }
}

async fn worker(n: usize, state: Arc<AppState>, launcher: Arc<Launcher>, stop: Arc<AtomicBool>) {
    let poll = Duration::from_millis(state.settings.runner.poll_ms.max(50));
    while !stop.load(Ordering::SeqCst) {
        // Register for a wake-up before looking, so a run queued meanwhile is not missed.
        let woken = state.run_queued.notified();
        match svc::claim_next(&state).await {
            Ok(Some((ctx, claim))) => {
                let _busy = svc::busy(&state);
                let run_id = claim.run_id.clone();
                tracing::info!(worker = n, run = %run_id, tenant = %ctx.tenant, "embedded runner: claimed");
                let sink = Arc::new(ServiceSink {
                    state: state.clone(),
                    ctx,
                });
                match crate::agent::execute(&sink, &launcher, to_agent_claim(claim)).await {
                    Ok(r) => {
                        tracing::info!(worker = n, run = %r.id, status = %r.status, reason = ?r.reason, "embedded runner: run ended")
                    }
                    Err(e) => {
                        tracing::warn!(worker = n, run = %run_id, error = %format!("{e:#}"), "embedded runner: run not completed")
                    }
                }
            }
            Ok(None) => {
                let _ = tokio::time::timeout(poll, woken).await;
            }
            Err(e) => {
                tracing::warn!(worker = n, code = e.code.as_str(), detail = %e.detail, "embedded runner: claim failed");
                tokio::time::sleep(poll).await;
            }
        }
    }
}
