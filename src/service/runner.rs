//! The embedded runner's side of the service layer (issue 22): its status, the external agents
//! seen recently, the fair claim across tenants and applications, and `GET /api/v1/runners`.
//!
//! The embedded workers (`crate::runner`) claim with the same atomic claim as external agents
//! ([`super::runs::claim`]) under an agent principal whose token id is
//! [`super::principal::EMBEDDED_RUNNER`], so reports, scrubbing, masks, screenshots and
//! completion go through the very functions the agent API routes call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use utoipa::ToSchema;

use super::principal::EMBEDDED_RUNNER;
use super::runs::Claim;
use super::{unix_now, AppState, ClientInfo, Principal, TenantCtx};
use crate::domain::TenantId;
use crate::error::{ApiError, ApiResult};
use crate::store::pool::FileStamp;
use crate::store::{catalog, runs, TenantStores};

/// How long an external agent counts as present after its last claim or heartbeat.
pub const AGENT_SEEN_WINDOW_SECS: i64 = 300;

/// The embedded runner as configured and probed at start.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct EmbeddedInfo {
    /// Whether embedded workers run queued runs.
    pub enabled: bool,
    /// Number of workers (0 when disabled).
    pub workers: usize,
    /// Why the runner is off (`runner.embedded_workers = 0`, no Chromium found, sandbox
    /// unavailable…); absent when enabled.
    pub reason: Option<String>,
    /// Chromium executable in use.
    pub chromium: Option<String>,
    /// Whether Chromium runs without its sandbox (`runner.allow_no_sandbox = true`).
    pub no_sandbox: bool,
    /// Start-up warnings (no sandbox, small `/dev/shm`, …).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
struct Seen {
    tenant: TenantId,
    name: String,
    application_id: String,
    at: i64,
}

/// Shared, in-memory runner state (nothing here is persisted).
#[derive(Default)]
pub struct RunnerState {
    info: RwLock<EmbeddedInfo>,
    busy: AtomicUsize,
    agents: Mutex<HashMap<String, Seen>>,
    cursor: Mutex<Option<(String, String)>>,
    hints: QueuedHints,
    /// Stores a pass found nothing of a kind in, with the file stamp taken before that read
    /// ([`RunnerState::found_nothing_unchanged`]).
    quiet: Mutex<HashMap<(Found, TenantId), FileStamp>>,
}

/// What a pass over every tenant looked for and did not find ([`RunnerState::note_found`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Found {
    /// No queued and no running run (runner full scan, queued-runs gauge, agent time-outs).
    NoActiveRuns,
    /// No scheduled flow (`schedules` job).
    NoSchedules,
}

/// The tenants that may have queued runs, so a claim by the embedded runner opens only their
/// stores instead of every tenant's (issue 25: with 1,000 tenants each claim opened 1,000
/// stores — after every run and every wake-up).
///
/// Invariant: every tenant with a queued run that this process queued (API, webhook, schedule,
/// retry, interrupted-run recovery — each calls [`run_queued`] after its commit) is hinted
/// until a scan of its store, begun after the queueing, finds no queued run. Runs queued by
/// another process (`flowguard jobs run schedules` beside `serve`) are found by the full scan,
/// which runs at most once per `runner.poll_ms` across all workers (and on the first claim).
/// Each hint carries the generation it was added at, so a scan that started before a run was
/// queued never removes that run's hint.
#[derive(Default)]
pub struct QueuedHints {
    inner: Mutex<HintsInner>,
}

#[derive(Default)]
struct HintsInner {
    /// Bumped by every [`QueuedHints::add`].
    generation: u64,
    /// Hinted tenant → generation of its latest hint.
    tenants: HashMap<TenantId, u64>,
    /// When the last full scan began (`None`: never, so the first scan is full).
    last_full: Option<Instant>,
}

/// Which stores one claim scan opens: every active tenant's, or only the hinted ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanPlan {
    /// Every active tenant (first claim, then at most once per `runner.poll_ms`).
    Full,
    /// Only these tenants (the hints at the start of the scan).
    Hinted(Vec<TenantId>),
}

impl QueuedHints {
    /// Note that `t` may have a queued run (call after the run's commit).
    pub fn add(&self, t: &TenantId) {
        let mut i = self.inner.lock();
        i.generation += 1;
        let g = i.generation;
        i.tenants.insert(t.clone(), g);
    }

    /// The generation a scan of one store starts at (pass it to [`QueuedHints::scanned`]).
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Plan a scan at `now`: [`ScanPlan::Full`] when no full scan began within `every` (and
    /// then record `now` as its start), else the hinted tenants in a stable order.
    pub fn plan(&self, now: Instant, every: Duration) -> ScanPlan {
        let mut i = self.inner.lock();
        let due = i
            .last_full
            .is_none_or(|t| now.saturating_duration_since(t) >= every);
        if due {
            i.last_full = Some(now);
            return ScanPlan::Full;
        }
        let mut ts: Vec<TenantId> = i.tenants.keys().cloned().collect();
        ts.sort();
        ScanPlan::Hinted(ts)
    }

    /// Record what a scan of `t`'s store, begun at generation `since`, found: a tenant with
    /// queued runs stays (or becomes) hinted; one without loses its hint unless it was hinted
    /// again after `since`.
    pub fn scanned(&self, t: &TenantId, since: u64, has_queued: bool) {
        let mut i = self.inner.lock();
        if has_queued {
            if !i.tenants.contains_key(t) {
                let g = i.generation;
                i.tenants.insert(t.clone(), g);
            }
        } else if i.tenants.get(t).is_some_and(|g| *g <= since) {
            i.tenants.remove(t);
        }
    }

    /// Drop the hint of a tenant that is no longer active (suspended or deleted).
    pub fn forget(&self, t: &TenantId) {
        self.inner.lock().tenants.remove(t);
    }

    /// Number of hinted tenants (metrics, tests).
    pub fn len(&self) -> usize {
        self.inner.lock().tenants.len()
    }

    /// Whether no tenant is hinted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A run of tenant `t` was queued (committed): hint the embedded runner's next claim to look
/// in `t`'s store ([`QueuedHints`]) and wake the idle workers.
pub fn run_queued(state: &AppState, t: &TenantId) {
    state.runner.hints.add(t);
    state.run_queued.notify_waiters();
}

/// One visit of a pass over every tenant that looks only for rows of `kind` in `t`'s store:
/// `None` (the store is not opened) when a pass found none there at the store's current file
/// stamp ([`RunnerState::found_nothing_unchanged`]); else `f` runs on the store through
/// [`TenantStores::for_pass`] and returns its result and whether it found nothing of `kind`,
/// which is recorded against the stamp taken before the read. Used by the runner's claim scan,
/// the `flowguard_runs_queued` gauge and the `agent-timeouts` and `schedules` jobs.
pub fn visit_unless_nothing<R>(
    state: &AppState,
    kind: Found,
    t: &TenantId,
    f: impl FnOnce(&crate::store::Db) -> crate::store::StoreResult<(R, bool)>,
) -> Option<crate::store::StoreResult<R>> {
    let stamp = state.tenants.stamp(t);
    if state.runner.memo_matches(kind, t, stamp.as_ref()) {
        return None;
    }
    Some(state.tenants.for_pass(t, f).map(|(r, nothing)| {
        state.runner.note_found(kind, t, stamp, nothing);
        r
    }))
}

/// Decrements the busy count when a worker's run ends (even by panic or cancel).
pub struct BusyGuard(Arc<AppState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.runner.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RunnerState {
    /// Record what the embedded runner is (called once at start).
    pub fn set_embedded(&self, info: EmbeddedInfo) {
        *self.info.write() = info;
    }

    /// The embedded runner's configuration.
    pub fn embedded(&self) -> EmbeddedInfo {
        self.info.read().clone()
    }

    /// The tenants that may have queued runs ([`QueuedHints`]).
    pub fn hints(&self) -> &QueuedHints {
        &self.hints
    }

    /// Whether a pass found nothing of `kind` in `t`'s store and its files have not changed since
    /// ([`TenantStores::stamp`]): the passes over every tenant that only look for such rows —
    /// the runner's full scan, the `flowguard_runs_queued` gauge and the agent time-outs
    /// ([`Found::NoActiveRuns`]), the `schedules` job ([`Found::NoSchedules`]) — skip the store
    /// without opening it (issue 25: at 1,000 tenants each pass opened 1,000 stores, ~1 ms
    /// each). `false` when unsure (no stamp: files written in the last
    /// [`crate::store::pool::STAMP_QUIET`]).
    pub fn found_nothing_unchanged(
        &self,
        kind: Found,
        stores: &TenantStores,
        t: &TenantId,
    ) -> bool {
        self.memo_matches(kind, t, stores.stamp(t).as_ref())
    }

    /// Whether the memo holds `stamp` for `(kind, t)` (never for no stamp).
    fn memo_matches(&self, kind: Found, t: &TenantId, stamp: Option<&FileStamp>) -> bool {
        stamp.is_some() && self.quiet.lock().get(&(kind, t.clone())) == stamp
    }

    /// Record what a pass found in `t`'s store: `stamp` is [`TenantStores::stamp`] taken
    /// *before* the read, `nothing` whether the read found nothing of `kind`. A write after the
    /// stamp changes the files, so a later stamp differs and the store is read again.
    pub fn note_found(&self, kind: Found, t: &TenantId, stamp: Option<FileStamp>, nothing: bool) {
        let mut m = self.quiet.lock();
        match stamp {
            Some(st) if nothing => {
                m.insert((kind, t.clone()), st);
            }
            _ => {
                m.remove(&(kind, t.clone()));
            }
        }
    }

    /// Workers executing a run right now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// Note an external agent's claim or heartbeat.
    pub fn saw_agent(&self, ctx: &TenantCtx) {
        if let Principal::Agent {
            token_id,
            name,
            application_id,
            ..
        } = &ctx.principal
        {
            if token_id == EMBEDDED_RUNNER {
                return;
            }
            let now = unix_now();
            let mut m = self.agents.lock();
            m.retain(|_, s| now - s.at <= AGENT_SEEN_WINDOW_SECS);
            m.insert(
                token_id.clone(),
                Seen {
                    tenant: ctx.tenant.clone(),
                    name: name.clone(),
                    application_id: application_id.clone(),
                    at: now,
                },
            );
        }
    }
}

/// The context the embedded runner acts in for one application of a tenant.
pub fn embedded_ctx(tenant: TenantId, application_id: String) -> TenantCtx {
    TenantCtx {
        tenant: tenant.clone(),
        principal: Principal::embedded_runner(tenant, application_id),
        client: ClientInfo {
            ip: "embedded".into(),
            user_agent: Some(concat!("flowguard-runner/", env!("CARGO_PKG_VERSION")).into()),
        },
    }
}

/// Count a worker as busy until the guard drops.
pub fn busy(state: &Arc<AppState>) -> BusyGuard {
    state.runner.busy.fetch_add(1, Ordering::SeqCst);
    BusyGuard(state.clone())
}

/// `(tenant, application)` pairs with queued runs, in a stable order, active tenants only:
/// of every active tenant on a full scan, else of the hinted ones ([`QueuedHints::plan`]).
fn queued_pairs_blocking(state: &AppState) -> Vec<(TenantId, String)> {
    let every = Duration::from_millis(state.settings.runner.poll_ms.max(50));
    let plan = state.runner.hints.plan(Instant::now(), every);
    queued_pairs_in(state, &plan)
}

/// [`queued_pairs_blocking`] for a given plan (tests and benchmarks pass one).
pub fn queued_pairs_in(state: &AppState, plan: &ScanPlan) -> Vec<(TenantId, String)> {
    let hints = &state.runner.hints;
    let visit: Vec<TenantId> = {
        let c = state.catalog.db().lock();
        match plan {
            ScanPlan::Full => catalog::list_tenants(&c)
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.status == "active")
                .map(|t| t.id)
                .collect(),
            // Only the hinted tenants' catalog rows (one lookup each, not the whole list).
            ScanPlan::Hinted(ts) => ts
                .iter()
                .filter(|t| match catalog::tenant_by_id(&c, t) {
                    Ok(Some(row)) if row.status == "active" => true,
                    Ok(_) => {
                        hints.forget(t);
                        false
                    }
                    // Kept hinted: looked at again next time.
                    Err(_) => false,
                })
                .cloned()
                .collect(),
        }
    };
    let mut out = Vec::new();
    for t in visit {
        let since = hints.generation();
        let found = visit_unless_nothing(state, Found::NoActiveRuns, &t, |db| {
            let c = db.lock();
            let apps = runs::apps_with_queued(&c)?;
            let idle = !runs::any_active(&c)?;
            Ok((apps, idle))
        });
        match found {
            // Skipped: found without queued or running runs, unchanged since.
            None => hints.scanned(&t, since, false),
            Some(Ok(apps)) => {
                hints.scanned(&t, since, !apps.is_empty());
                out.extend(apps.into_iter().map(|a| (t.clone(), a)));
            }
            // Kept hinted: a store that cannot be read now is looked at again next time.
            Some(Err(e)) => {
                tracing::warn!(tenant = %t, error = %e, "runner: cannot list queued runs")
            }
        }
    }
    out.sort();
    out
}

/// Claim the next queued run for an embedded worker, round robin over `(tenant, application)`
/// pairs that have queued runs: the pair after the one served last goes first, so one tenant's
/// 1,000 queued runs never starve another's (within an application, oldest first). The pairs
/// come from the hinted tenants' stores, or every tenant's on a full scan
/// ([`QueuedHints::plan`]). The claim itself is [`super::runs::claim`] (one atomic UPDATE),
/// shared with external agents.
pub async fn claim_next(state: &Arc<AppState>) -> ApiResult<Option<(TenantCtx, Claim)>> {
    let st = state.clone();
    let pairs = tokio::task::spawn_blocking(move || queued_pairs_blocking(&st))
        .await
        .map_err(ApiError::internal)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let start = {
        let cur = state.runner.cursor.lock();
        match cur.as_ref() {
            Some((t, a)) => pairs
                .iter()
                .position(|(pt, pa)| (pt.as_str(), pa.as_str()) > (t.as_str(), a.as_str()))
                .unwrap_or(0),
            None => 0,
        }
    };
    for k in 0..pairs.len() {
        let (t, app) = &pairs[(start + k) % pairs.len()];
        let ctx = embedded_ctx(t.clone(), app.clone());
        *state.runner.cursor.lock() = Some((t.as_str().to_string(), app.clone()));
        if let Some(c) = super::runs::claim(state, &ctx, None).await? {
            return Ok(Some((ctx, c)));
        }
    }
    Ok(None)
}

/// The error text of a run the embedded runner of a previous `serve` process was executing.
pub const INTERRUPTED: &str =
    "the server stopped while its embedded runner was executing this run (restart or crash)";

/// At start-up, before any worker claims: end every run still `running` under the embedded
/// runner (claimed by a previous `serve` process that was killed or crashed mid-run; the browser
/// died with it) as `error` / `runner_error`, like a browser crash, and queue its one retry —
/// instead of leaving it to fail `agent_timeout` after the heartbeat timeout. Blocking; returns
/// how many runs were ended.
pub fn recover_interrupted_blocking(state: &AppState) -> usize {
    let tenants = {
        let c = state.catalog.db().lock();
        catalog::list_tenants(&c).unwrap_or_default()
    };
    let mut n = 0;
    for t in tenants {
        let res = state.tenants.for_pass(&t.id, |db| {
            let mut c = db.lock();
            let mut ended = Vec::new();
            for (id, app) in runs::running_claimed_by(&c, EMBEDDED_RUNNER)? {
                let actor = embedded_ctx(t.id.clone(), app).principal.actor(&ClientInfo::default());
                let retry_id = crate::domain::new_object_id();
                let ev = crate::audit::NewAuditEvent::new(&actor, "run.complete", Some(format!("run:{id}")))
                    .details(serde_json::json!({"reported": "error", "status": "error", "reason": super::runs::RUNNER_ERROR, "interrupted": true}));
                let retry_ev = crate::audit::NewAuditEvent::new(&actor, "run.trigger", Some(format!("run:{retry_id}")))
                    .details(serde_json::json!({"retry_of": id}));
                match runs::end_with_runner_error(&mut c, &id, Some(INTERRUPTED), &ev, &retry_id, &retry_ev) {
                    Ok(_) => ended.push(id),
                    // Ended meanwhile (an external `complete` raced us): nothing to do.
                    Err(crate::store::StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(ended)
        });
        match res {
            Ok(ids) => {
                if !ids.is_empty() {
                    state.runner.hints.add(&t.id);
                    super::live::changed(state, &t.id);
                }
                for id in &ids {
                    tracing::warn!(tenant = %t.id, run = %id, "run interrupted by a server stop: ended error/runner_error, retry queued");
                }
                n += ids.len();
            }
            Err(e) => {
                tracing::error!(tenant = %t.id, error = %e, "runner: cannot end interrupted runs")
            }
        }
    }
    if n > 0 {
        state.run_queued.notify_waiters();
    }
    n
}

/// An external agent seen recently.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentSeen {
    /// Agent token id.
    pub token_id: String,
    /// Token name.
    pub name: String,
    /// Its application.
    pub application_id: String,
    /// Last claim or heartbeat (RFC 3339).
    pub last_seen_at: String,
}

/// `GET /api/v1/runners`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Runners {
    /// The embedded runner.
    pub embedded: EmbeddedStatus,
    /// External agents of the caller's tenant seen in the last 5 minutes.
    pub agents: Vec<AgentSeen>,
    /// Whether anything can run a queued run of this tenant right now.
    pub can_run: bool,
    /// How to start an external agent (shown when nothing can run).
    pub how_to_start_agent: String,
}

/// The embedded runner's configuration plus its load.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddedStatus {
    /// Configuration and probe result.
    #[serde(flatten)]
    pub info: EmbeddedInfo,
    /// Workers executing a run right now.
    pub busy: usize,
}

/// What can run this tenant's flows: the embedded runner and the tenant's external agents
/// seen in the last [`AGENT_SEEN_WINDOW_SECS`] seconds.
pub fn runners(state: &AppState, ctx: &TenantCtx) -> Runners {
    let now = unix_now();
    let mut agents: Vec<AgentSeen> = state
        .runner
        .agents
        .lock()
        .iter()
        .filter(|(_, s)| s.tenant == ctx.tenant && now - s.at <= AGENT_SEEN_WINDOW_SECS)
        .map(|(id, s)| AgentSeen {
            token_id: id.clone(),
            name: s.name.clone(),
            application_id: s.application_id.clone(),
            last_seen_at: chrono::DateTime::from_timestamp(s.at, 0)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
        })
        .collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    let info = state.runner.embedded();
    let can_run = info.enabled || !agents.is_empty();
    Runners {
        embedded: EmbeddedStatus {
            info,
            busy: state.runner.busy(),
        },
        agents,
        can_run,
        how_to_start_agent: "create an agent token for the application (Settings → Agent tokens), then on a machine with Chromium: FLOWGUARD_AGENT_TOKEN=fga_… flowguard agent run --server https://<this appliance> [--ca-file cert.pem]".into(),
    }
}

/// Queued runs per `(tenant, application)` for the `flowguard_runs_queued` gauge (blocking).
pub fn queued_per_app_blocking(state: &AppState) -> Vec<(TenantId, String, i64)> {
    let tenants = {
        let c = state.catalog.db().lock();
        catalog::list_tenants(&c).unwrap_or_default()
    };
    let mut out = Vec::new();
    for t in tenants {
        // A store found without queued or running runs, unchanged since, is not opened.
        let found = visit_unless_nothing(state, Found::NoActiveRuns, &t.id, |db| {
            let c = db.lock();
            let rows = runs::queued_per_app(&c)?;
            let idle = !runs::any_active(&c)?;
            Ok((rows, idle))
        });
        if let Some(Ok(rows)) = found {
            out.extend(rows.into_iter().map(|(a, n)| (t.id.clone(), a, n)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).expect("tenant id")
    }

    #[test]
    fn the_first_scan_and_one_per_interval_are_full_the_others_visit_only_hinted_tenants() {
        let h = QueuedHints::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(h.plan(t0, every), ScanPlan::Full);
        assert_eq!(h.plan(t0, every), ScanPlan::Hinted(vec![]));
        h.add(&t("local-gamma"));
        h.add(&t("local-beta"));
        assert_eq!(
            h.plan(t0 + Duration::from_secs(9), every),
            ScanPlan::Hinted(vec![t("local-beta"), t("local-gamma")])
        );
        assert_eq!(h.plan(t0 + every, every), ScanPlan::Full);
        assert!(matches!(
            h.plan(t0 + every + Duration::from_secs(1), every),
            ScanPlan::Hinted(_)
        ));
    }

    #[test]
    fn a_hint_is_dropped_only_by_a_scan_that_began_after_it() {
        let h = QueuedHints::default();
        let b = t("local-beta");
        h.add(&b);
        // A scan begins, then a run is queued (hinted again) before the scan reads the store.
        let since = h.generation();
        h.add(&b);
        h.scanned(&b, since, false);
        assert_eq!(
            h.len(),
            1,
            "the scan that began before the run was queued dropped its hint"
        );
        // A scan that began after the last hint and found nothing drops it.
        let since = h.generation();
        h.scanned(&b, since, false);
        assert!(h.is_empty());
        // A scan that finds queued runs (queued by another process) hints the tenant.
        let since = h.generation();
        h.scanned(&t("local-gamma"), since, true);
        assert_eq!(h.len(), 1);
        h.forget(&t("local-gamma"));
        assert!(h.is_empty());
    }
}
