//! `flowguard agent run`: the built-in agent. It claims runs of its token's application from the
//! appliance's agent API, executes their steps in a fresh headless Chromium, heartbeats, reports
//! every step (duration, console errors, failed requests, a screenshot on failure) and completes
//! the run. `--once` handles at most one run; `--flow ID --wait` queues a run of that flow first
//! and exits non-zero unless it passes (for CI pipelines after a deploy).
//!
//! Secrets: the token comes only from `FLOWGUARD_AGENT_TOKEN`. The agent learns which values are
//! secret only through the claim's `mask_required`: every `fill` step listed there is treated as
//! secret — its value is redacted (`[REDACTED]`) from everything the agent prints or sends, and
//! its selector is masked in every later screenshot of the run.

pub mod browser;
pub mod client;
pub mod steps;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use zeroize::Zeroizing;

use crate::domain::flow::Step;
use client::{ApiClient, Claim, MaskEntry, RunInfo, Sent, StepReport, Verdict};

/// Where an executing run's results go. `flowguard agent` sends them to the appliance's agent
/// API over HTTPS ([`ApiClient`]); the embedded runner in `serve` (`crate::runner`) hands them to
/// the same service functions those API routes call. Either way the one executor below
/// ([`execute`]) drives the browser, so masking, secret scrubbing, screenshots and step reports
/// follow one code path.
pub trait RunSink: Send + Sync + 'static {
    /// Report one step result.
    fn report(
        &self,
        run: &str,
        rep: &StepReport,
    ) -> impl std::future::Future<Output = anyhow::Result<Sent>> + Send;
    /// Heartbeat of the running run.
    fn heartbeat(
        &self,
        run: &str,
    ) -> impl std::future::Future<Output = anyhow::Result<Sent>> + Send;
    /// Complete the run; `Err(why)` inside when the server no longer takes it (409).
    fn complete(
        &self,
        run: &str,
        verdict: Verdict,
        error: Option<&str>,
    ) -> impl std::future::Future<Output = anyhow::Result<Result<RunInfo, String>>> + Send;
    /// Store step `n`'s PNG with its mask list.
    fn upload(
        &self,
        run: &str,
        n: usize,
        png: Vec<u8>,
        masks: &[MaskEntry],
    ) -> impl std::future::Future<Output = anyhow::Result<Sent>> + Send;
    /// The run as the server recorded it.
    fn run(&self, run: &str) -> impl std::future::Future<Output = anyhow::Result<RunInfo>> + Send;
}

impl RunSink for ApiClient {
    async fn report(&self, run: &str, rep: &StepReport) -> anyhow::Result<Sent> {
        ApiClient::report(self, run, rep).await
    }
    async fn heartbeat(&self, run: &str) -> anyhow::Result<Sent> {
        ApiClient::heartbeat(self, run).await
    }
    async fn complete(
        &self,
        run: &str,
        verdict: Verdict,
        error: Option<&str>,
    ) -> anyhow::Result<Result<RunInfo, String>> {
        ApiClient::complete(self, run, verdict, error).await
    }
    async fn upload(
        &self,
        run: &str,
        n: usize,
        png: Vec<u8>,
        masks: &[MaskEntry],
    ) -> anyhow::Result<Sent> {
        ApiClient::upload(self, run, n, png, masks).await
    }
    async fn run(&self, run: &str) -> anyhow::Result<RunInfo> {
        ApiClient::run(self, run).await
    }
}

/// Environment variable holding the agent token (`fga_<tenant>_…`).
pub const TOKEN_ENV: &str = "FLOWGUARD_AGENT_TOKEN";
/// Heartbeat period while a run executes (the server's default timeout is 300 s).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(20);
/// Pause after an action step so the events it caused are summarised on it.
pub const EVENT_SETTLE: Duration = Duration::from_millis(50);
/// Replacement for secret values in text.
pub const REDACTED: &str = "[REDACTED]";

/// Options of `flowguard agent run`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Appliance URL (`https://host:port`).
    pub server: String,
    /// PEM bundle trusted for the server (only it, when given).
    pub ca_file: Option<PathBuf>,
    /// Handle at most one run, then exit.
    pub once: bool,
    /// Sleep between claims when nothing is queued.
    pub poll_interval: Duration,
    /// Chromium executable (else found on PATH).
    pub chromium: Option<PathBuf>,
    /// Queue a run of this flow first and wait for its verdict.
    pub flow: Option<String>,
    /// User the browser runs as when the agent runs as root (default `nobody`).
    pub browser_user: String,
    /// Run Chromium without its sandbox when the sandbox cannot start (never silently).
    pub allow_no_sandbox: bool,
}

/// Replaces every known secret value with [`REDACTED`].
#[derive(Default)]
pub struct Redactor {
    secrets: Vec<Zeroizing<String>>,
}

impl Redactor {
    /// Secrets = values of the `fill` steps the server demands masks for (non-empty ones).
    pub fn from_claim(steps: &[Step], mask_required: &[Vec<String>]) -> Self {
        let mut secrets: Vec<Zeroizing<String>> = steps
            .iter()
            .enumerate()
            .filter(|(i, _)| mask_required.get(*i).is_some_and(|m| !m.is_empty()))
            .filter_map(|(_, s)| match s {
                Step::Fill { value, .. } if !value.is_empty() => {
                    Some(Zeroizing::new(value.clone()))
                }
                _ => None,
            })
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup_by(|a, b| a.as_str() == b.as_str());
        Self { secrets }
    }

    fn prepared(&self) -> crate::domain::redact::Secrets {
        crate::domain::redact::Secrets::new(self.secrets.iter().map(|s| s.as_str()))
    }

    /// `text` with every secret replaced, also in its JSON-escaped and URL-encoded forms
    /// ([`crate::domain::redact`]).
    pub fn scrub(&self, text: &str) -> String {
        self.prepared().scrub_str(text)
    }

    /// A JSON value with every secret replaced in each decoded string (keys included).
    pub fn scrub_json(&self, v: serde_json::Value) -> serde_json::Value {
        if self.secrets.is_empty() {
            return v;
        }
        self.prepared().scrub_json(&v)
    }
}

/// Where one run's wall time went, in milliseconds (logged per run; `bench/runner.py` reads it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Starting the browser and opening its page.
    pub launch_ms: u64,
    /// Executing steps other than `screenshot`/`checkpoint`.
    pub steps_ms: u64,
    /// Executing `screenshot`/`checkpoint` steps (capture and mask measurement).
    pub screenshots_ms: u64,
    /// Sending results: screenshot uploads and step reports.
    pub upload_ms: u64,
    /// Closing the browser and removing its profile.
    pub close_ms: u64,
}

/// How a run ended on the agent's side.
enum Ended {
    /// Every step ran; `Some(err)` when one failed.
    Finished(Option<String>),
    /// The browser crashed, could not start, or its DevTools connection was lost: an
    /// infrastructure error (`runner_error`), never a test failure.
    Infra(String),
    /// The server stopped taking reports (cancelled or timed out): `why`.
    Stopped(String),
}

fn say(line: &str) {
    eprintln!("flowguard agent: {line}");
}

/// `flowguard agent run`: `Ok(true)` when the agent did its job (and, with `--wait`, the run
/// passed); `Ok(false)` when a `--wait`ed run did not pass; `Err` when the agent could not work.
pub fn run(opts: Options) -> anyhow::Result<bool> {
    let token = std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| Zeroizing::new(t.trim().to_string()))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("set the agent token in the {TOKEN_ENV} environment variable (it is never accepted as an argument)"))?;
    if !token.starts_with("fga_") {
        anyhow::bail!("{TOKEN_ENV} does not hold an agent token (fga_…)");
    }
    let api = Arc::new(ApiClient::new(
        &opts.server,
        opts.ca_file.as_deref(),
        token,
    )?);
    let launcher = browser::Launcher::prepare(
        browser::find_chromium(opts.chromium.as_deref())?,
        &opts.browser_user,
        opts.allow_no_sandbox,
        &[],
    )?;
    for w in launcher.warnings() {
        say(&format!("warning: {w}"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match &opts.flow {
            Some(flow) => wait_for_flow(&api, &launcher, flow, opts.poll_interval).await,
            None => serve(&api, &launcher, &opts).await,
        }
    })
}

async fn serve(
    api: &Arc<ApiClient>,
    launcher: &browser::Launcher,
    opts: &Options,
) -> anyhow::Result<bool> {
    if !opts.once {
        let app = match api.whoami().await {
            Ok((tenant, app, name)) => {
                format!("application {app} (tenant {tenant}, token `{name}`)")
            }
            Err(e) => {
                if format!("{e:#}").contains("--ca-file") {
                    return Err(e);
                }
                format!("the application of agent token {}…", api.token_prefix())
            }
        };
        say(&format!(
            "started: polling {} for queued runs of {app} every {}",
            opts.server.trim().trim_end_matches('/'),
            humantime::format_duration(opts.poll_interval)
        ));
    }
    loop {
        let claimed = if opts.once {
            api.claim(None).await?
        } else {
            match api.claim(None).await {
                Ok(c) => c,
                Err(e) => {
                    say(&format!("{e:#}; retrying in {:?}", opts.poll_interval));
                    None
                }
            }
        };
        match claimed {
            Some(c) => {
                let run_id = c.run_id.clone();
                let res = tokio::select! {
                    r = execute(api, launcher, c) => r,
                    _ = tokio::signal::ctrl_c() => {
                        let _ = api.complete(&run_id, Verdict::Failed, Some("the agent was interrupted")).await;
                        anyhow::bail!("interrupted; run {run_id} was reported as failed");
                    }
                };
                match res {
                    Ok(info) => say(&verdict_line(&info)),
                    Err(e) if opts.once => return Err(e),
                    Err(e) => say(&format!("run {run_id}: {e:#}")),
                }
                if opts.once {
                    return Ok(true);
                }
            }
            None if opts.once => {
                say("no queued run");
                return Ok(true);
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(opts.poll_interval) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(true),
                }
            }
        }
    }
}

fn verdict_line(info: &RunInfo) -> String {
    let mut s = format!("run {}: {}", info.id, info.status);
    if let Some(r) = &info.reason {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(e) = &info.error {
        s.push_str(&format!(": {e}"));
    }
    s
}

/// `--flow ID --wait`: queue, claim exactly that run and execute it (or, if another agent took
/// it first, follow it), print the verdict on stdout, exit 0 only for `passed`.
async fn wait_for_flow(
    api: &Arc<ApiClient>,
    launcher: &browser::Launcher,
    flow: &str,
    poll: Duration,
) -> anyhow::Result<bool> {
    let queued = api.trigger(flow).await?;
    say(&format!("queued run {} of flow {flow}", queued.id));
    let info = match api.claim(Some(&queued.id)).await? {
        Some(c) => execute(api, launcher, c).await?,
        None => loop {
            let r = api.run(&queued.id).await?;
            if ["passed", "failed", "cancelled", "error"].contains(&r.status.as_str()) {
                break r;
            }
            tokio::time::sleep(poll).await;
        },
    };
    println!("{}", verdict_line(&info));
    Ok(info.status == "passed")
}

/// Execute a claimed run end to end in a fresh browser from `launcher`; returns the run as the
/// server recorded it. Shared by `flowguard agent` and the embedded runner.
pub async fn execute<A: RunSink>(
    api: &Arc<A>,
    launcher: &browser::Launcher,
    claim: Claim,
) -> anyhow::Result<RunInfo> {
    let run_id = claim.run_id.clone();
    say(&format!(
        "claimed run {run_id}: flow {} v{}, {} step(s)",
        claim.flow_id,
        claim.flow_version,
        claim.steps.len()
    ));
    let parsed: Result<Vec<Step>, String> = claim
        .steps
        .iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<Step>(v.clone()).map_err(|_| {
                format!(
                    "step {} has a type or option this agent does not know",
                    i + 1
                )
            })
        })
        .collect();
    let steps = match parsed {
        Ok(s) => s,
        Err(e) => return finish(api.as_ref(), &run_id, Some(e)).await,
    };
    let redact = Redactor::from_claim(&steps, &claim.mask_required);

    let stopped = Arc::new(AtomicBool::new(false));
    let hb = {
        let (api, run, stopped) = (api.clone(), run_id.clone(), stopped.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                if let Ok(Sent::Stopped(_)) = api.heartbeat(&run).await {
                    stopped.store(true, Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    let mut t = Timings::default();
    let t0 = Instant::now();
    let launched = launcher.launch().await;
    t.launch_ms = t0.elapsed().as_millis() as u64;
    let (ended, sess) = match launched {
        Ok(sess) => {
            // A crash (or OOM kill) can leave a step waiting on a DevTools reply that never
            // comes; the watchdog ends the run as soon as the browser is gone.
            let r = tokio::select! {
                r = run_steps(api.as_ref(), &sess, &claim, &steps, &redact, &stopped, &mut t) => r,
                why = sess.gone() => Ok(Ended::Infra(why)),
            };
            let crashed = !sess.alive();
            let r = match r {
                // A step error while the browser died under it is the browser's, not the flow's.
                Ok(Ended::Finished(Some(e))) if crashed => Ok(Ended::Infra(format!(
                    "the browser exited or lost its DevTools connection ({e})"
                ))),
                Err(e) if crashed => Ok(Ended::Infra(format!(
                    "the browser exited or lost its DevTools connection ({e:#})"
                ))),
                other => other,
            };
            (r, Some(sess))
        }
        Err(e) => (Ok(Ended::Infra(redact.scrub(&format!("{e:#}")))), None),
    };
    hb.abort();
    // The run's result goes out first; closing the browser (killing and reaping its process
    // group, removing the profile: ~1.7 s) follows, before this worker claims again.
    let reported = async {
        match ended? {
            Ended::Finished(err) => finish(api.as_ref(), &run_id, err).await,
            Ended::Infra(why) => {
                let why = redact.scrub(&why);
                say(&format!("run {run_id}: runner error: {why}"));
                match api
                    .complete(&run_id, Verdict::RunnerError, Some(&why))
                    .await?
                {
                    Ok(info) => Ok(info),
                    Err(_) => api.run(&run_id).await,
                }
            }
            Ended::Stopped(why) => {
                say(&format!("run {run_id}: stopped by the server ({why})"));
                api.run(&run_id).await
            }
        }
    }
    .await;
    if let Some(sess) = sess {
        let c0 = Instant::now();
        sess.close().await;
        t.close_ms = c0.elapsed().as_millis() as u64;
    }
    say(&format!(
        "run {run_id}: timings launch_ms={} steps_ms={} screenshots_ms={} upload_ms={} close_ms={}",
        t.launch_ms, t.steps_ms, t.screenshots_ms, t.upload_ms, t.close_ms
    ));
    reported
}

async fn finish<A: RunSink>(api: &A, run: &str, err: Option<String>) -> anyhow::Result<RunInfo> {
    let verdict = if err.is_none() {
        Verdict::Passed
    } else {
        Verdict::Failed
    };
    match api.complete(run, verdict, err.as_deref()).await? {
        Ok(info) => Ok(info),
        Err(why) => {
            say(&format!("run {run}: not completed ({why})"));
            api.run(run).await
        }
    }
}

async fn run_steps<A: RunSink>(
    api: &A,
    sess: &browser::Session,
    claim: &Claim,
    steps: &[Step],
    redact: &Redactor,
    stopped: &AtomicBool,
    timings: &mut Timings,
) -> anyhow::Result<Ended> {
    let run_id = claim.run_id.as_str();
    // Selectors of secret fills already typed: masked in every later screenshot.
    let mut secret_fields: Vec<String> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if stopped.load(Ordering::SeqCst) {
            return Ok(Ended::Stopped("the run is no longer running".into()));
        }
        let required = claim.mask_required.get(i).cloned().unwrap_or_default();
        if let Step::Fill { selector, .. } = step {
            if !required.is_empty() && !secret_fields.contains(selector) {
                secret_fields.push(selector.clone());
            }
        }
        let mut masks: Vec<String> = required;
        if let Step::Screenshot { mask, .. } = step {
            masks.extend(mask.iter().cloned());
        }
        masks.extend(secret_fields.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        masks.retain(|m| seen.insert(m.clone()));

        sess.begin_step();
        let started = Instant::now();
        let ctx = steps::StepCtx {
            base_url: &claim.base_url,
            masks: &masks,
        };
        let budget = steps::step_budget(step);
        let outcome = match tokio::time::timeout(budget, steps::run(sess, step, &ctx)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "step did not finish within {} ms",
                budget.as_millis()
            )),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        if matches!(step, Step::Screenshot { .. } | Step::Checkpoint { .. }) {
            timings.screenshots_ms += duration_ms;
        } else {
            timings.steps_ms += duration_ms;
        }
        if matches!(
            step,
            Step::Navigate { .. } | Step::Click { .. } | Step::Fill { .. } | Step::Select { .. }
        ) {
            // Let console/network events caused by the action arrive before summarising.
            tokio::time::sleep(EVENT_SETTLE).await;
        }
        let mut error = outcome.as_ref().err().map(|e| redact.scrub(e));
        // Screenshot of the step, or one on failure.
        let shot = match outcome {
            Ok(Some(shot)) => Some(shot),
            Ok(None) => None,
            Err(_) => steps::screenshot(sess, &masks, false, None).await.ok(),
        };
        let u0 = Instant::now();
        if let Some(shot) = shot {
            match api.upload(run_id, i, shot.png, &shot.masks).await {
                Ok(Sent::Ok) => {}
                Ok(Sent::Stopped(why)) => return Ok(Ended::Stopped(why)),
                Err(e) if error.is_none() => {
                    error = Some(redact.scrub(&format!("screenshot not stored: {e:#}")))
                }
                Err(_) => {}
            }
        }
        let ev = sess.take_step();
        let status = if error.is_some() { "failed" } else { "passed" };
        let rep = StepReport {
            index: i,
            status,
            duration_ms: Some(duration_ms),
            error: error.clone(),
            console: Some(redact.scrub_json(ev.console)),
            network: Some(redact.scrub_json(ev.network)),
        };
        match error.as_deref() {
            None => say(&format!(
                "run {run_id}: step {} {} passed ({duration_ms} ms)",
                i + 1,
                step.kind()
            )),
            Some(e) => say(&format!(
                "run {run_id}: step {} {} failed ({duration_ms} ms): {e}",
                i + 1,
                step.kind()
            )),
        }
        let sent = api.report(run_id, &rep).await?;
        timings.upload_ms += u0.elapsed().as_millis() as u64;
        if let Sent::Stopped(why) = sent {
            return Ok(Ended::Stopped(why));
        }
        if let Some(e) = error {
            for j in i + 1..steps.len() {
                let skip = StepReport {
                    index: j,
                    status: "skipped",
                    duration_ms: None,
                    error: None,
                    console: None,
                    network: None,
                };
                if let Sent::Stopped(why) = api.report(run_id, &skip).await? {
                    return Ok(Ended::Stopped(why));
                }
            }
            return Ok(Ended::Finished(Some(format!(
                "step {} ({}) failed: {e}",
                i + 1,
                step.kind()
            ))));
        }
    }
    Ok(Ended::Finished(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_masked_fill_steps_only() {
        let steps = vec![
            Step::Fill {
                selector: "#user".into(),
                value: "alice".into(),
                clear_first: true,
            },
            Step::Fill {
                selector: "#pw".into(),
                value: "hunter2-long".into(),
                clear_first: true,
            },
            Step::Screenshot {
                mask: vec![".card".into()],
                full_page: false,
            },
        ];
        let masks = vec![vec![], vec!["#pw".into()], vec![".card".into()]];
        let r = Redactor::from_claim(&steps, &masks);
        assert_eq!(
            r.scrub("alice typed hunter2-long twice: hunter2-long"),
            "alice typed [REDACTED] twice: [REDACTED]"
        );
        let v = r.scrub_json(serde_json::json!({"errors": [{"text": "pw=hunter2-long"}]}));
        assert_eq!(v["errors"][0]["text"], "pw=[REDACTED]");
    }
}
