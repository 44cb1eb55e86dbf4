//! Runs and their lifecycle `queued → running → passed | failed | cancelled` (any other
//! transition is 409 `invalid_transition`), triggers (manual, webhook, schedule), the agent API
//! (claim, step results, heartbeat, complete) with secret scrubbing, and the jobs that fail
//! runs without heartbeats and queue scheduled runs.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::runner::{visit_unless_nothing, Found};
use super::variables::{self, Resolved};
use super::{unix_now, AppState, ClientInfo, Principal, TenantCtx};
use crate::audit::{Actor, NewAuditEvent};
use crate::crypto::token;
use crate::domain::flow::{render_template, template_vars, Step};
use crate::domain::{new_object_id, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::runs::{self, StepReportRow};
pub use crate::store::runs::{RunRow, StepRow};
use crate::store::{catalog, flows, webhooks, Conflict, StoreError};

/// Reason of a run that ended `error` because the runner failed (browser crash, lost DevTools
/// connection, out-of-memory kill, browser that could not start); such a run is retried once.
pub const RUNNER_ERROR: &str = "runner_error";
/// Reason stored on checkpoint steps until an AI endpoint is configured.
pub const NOT_EVALUATED_REASON: &str = "no AI endpoint configured";
/// Reason stored on a reported checkpoint step whose screenshot has not been judged yet.
pub const AWAITING_SCREENSHOT_REASON: &str = "awaiting the checkpoint screenshot";

/// The effective `(status, reason)` of step `step` from its stored row — the one rule for how
/// an agent's report and a checkpoint verdict combine:
///
/// * non-checkpoint steps: what the agent reported;
/// * a checkpoint the agent reported `failed` (it could not perform it) or `skipped`: that —
///   a verdict never turns an agent failure into a pass;
/// * otherwise (reported `passed`, or not reported yet) the AI decides: verdict `pass` →
///   `passed`, `fail` → `failed`; a call without a valid verdict (invalid reply, 4xx/5xx,
///   timeout, redirect, egress refusal) → `error` with the reason; no call yet →
///   `not_evaluated` (reason [`AWAITING_SCREENSHOT_REASON`], or [`NOT_EVALUATED_REASON`] when
///   no endpoint is `configured`).
///
/// A run is Passed only when no step is `failed`, `error` or `not_evaluated` (see [`complete`]).
pub fn step_status(step: &Step, row: &StepRow, configured: bool) -> (String, Option<String>) {
    let reported = row.reported_status.as_deref();
    if !matches!(step, Step::Checkpoint { .. }) {
        return (reported.unwrap_or("not_evaluated").to_string(), None);
    }
    match reported {
        Some(s @ ("failed" | "skipped")) => (s.to_string(), None),
        _ => match (row.verdict.as_deref(), &row.ai_call) {
            (Some("pass"), _) => ("passed".into(), None),
            (Some(_), _) => ("failed".into(), None),
            (None, Some(call)) => (
                "error".into(),
                Some(
                    call.error
                        .clone()
                        .unwrap_or_else(|| "AI evaluation failed".into()),
                ),
            ),
            (None, None) => (
                "not_evaluated".into(),
                Some(
                    if configured {
                        AWAITING_SCREENSHOT_REASON
                    } else {
                        NOT_EVALUATED_REASON
                    }
                    .into(),
                ),
            ),
        },
    }
}

fn map_transition(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(Conflict::Transition(st)) => ApiError::new(
            ErrorCode::InvalidTransition,
            format!("the run is {st}; this transition is not allowed"),
        ),
        other => other.into(),
    }
}

/// A run with its step results.
#[derive(Debug)]
pub struct RunDetail {
    /// The run.
    pub run: RunRow,
    /// Step results by index.
    pub steps: Vec<StepRow>,
    /// Number of steps in the pinned flow version.
    pub step_count: usize,
    /// The run's ticket delivery (issue 20), if any.
    pub ticket: Option<super::tickets::TicketView>,
}

/// Queue a manual run of a flow.
pub async fn trigger(state: &Arc<AppState>, ctx: &TenantCtx, flow: &str) -> ApiResult<RunRow> {
    let t = ctx.tenant.clone();
    let id = new_object_id();
    let ev = NewAuditEvent::new(&ctx.actor(), "run.trigger", Some(format!("run:{id}")))
        .details(serde_json::json!({"flow_id": flow, "trigger": "manual"}));
    let (f, by) = (flow.to_string(), ctx.principal.actor_name());
    let row = state
        .tenants
        .run(&t, move |c| {
            runs::queue_run(c, &id, &f, "manual", &by, Some(&ev))
        })
        .await?;
    super::runner::run_queued(state, &ctx.tenant);
    super::live::changed(state, &ctx.tenant);
    Ok(row)
}

/// Queue a run through a webhook token `fgw_<tenant>_…` (no session). Unknown or revoked
/// tokens → 404 (no oracle on which part was wrong).
pub async fn trigger_webhook(
    state: &Arc<AppState>,
    secret: &str,
    client: &ClientInfo,
) -> ApiResult<RunRow> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "unknown trigger token");
    let rest = secret.strip_prefix("fgw_").ok_or_else(not_found)?;
    let (tenant, s) = rest.split_once('_').ok_or_else(not_found)?;
    if s.len() != 43 {
        return Err(not_found());
    }
    let t = TenantId::parse(tenant).map_err(|_| not_found())?;
    let tid = t.as_str().to_string();
    if state
        .catalog
        .run(move |c| catalog::find_tenant(c, &tid))
        .await?
        .is_none_or(|r| r.id != t)
    {
        return Err(not_found());
    }
    let h = token::token_hash(secret);
    let (wid, flow) = state
        .tenants
        .run(&t, move |c| webhooks::webhook_flow(c, &h))
        .await?
        .ok_or_else(not_found)?;
    let id = new_object_id();
    let actor = Actor {
        email: Some(format!("webhook-token:{wid}")),
        role: Some("webhook".into()),
        client_ip: Some(client.ip.clone()),
        user_agent: client.user_agent.clone(),
    };
    let ev = NewAuditEvent::new(&actor, "run.trigger", Some(format!("run:{id}"))).details(
        serde_json::json!({"flow_id": flow, "trigger": "webhook", "webhook_token_id": wid}),
    );
    let by = format!("webhook-token:{wid}");
    let row = state
        .tenants
        .run(&t, move |c| {
            runs::queue_run(c, &id, &flow, "webhook", &by, Some(&ev))
        })
        .await?;
    super::runner::run_queued(state, &t);
    super::live::changed(state, &t);
    Ok(row)
}

/// Cancel a queued or running run.
pub async fn cancel(state: &Arc<AppState>, ctx: &TenantCtx, run: &str) -> ApiResult<RunRow> {
    let t = ctx.tenant.clone();
    let ev = NewAuditEvent::new(&ctx.actor(), "run.cancel", Some(format!("run:{run}")));
    let r = run.to_string();
    let r = state
        .tenants
        .run(&t, move |c| {
            runs::transition(
                c,
                &r,
                &["queued", "running"],
                "cancelled",
                Some("cancelled"),
                None,
                Some(&ev),
            )
        })
        .await
        .map_err(map_transition)?;
    super::live::changed(state, &ctx.tenant);
    Ok(r)
}

/// Optional filters of the runs list: one flow (id) and queue times `[from, to)` (RFC 3339).
#[derive(Debug, Default)]
pub struct RunListFilter {
    /// Flow id.
    pub flow: Option<String>,
    /// Queued at or after (RFC 3339).
    pub from: Option<String>,
    /// Queued before (RFC 3339).
    pub to: Option<String>,
}

/// Runs of an application, newest first; `cursor` is the last row's `queued_at|id`; `filter`
/// narrows to one flow and a queue-time range (400 `invalid_query` naming a bad time).
#[allow(clippy::too_many_arguments)]
pub async fn list(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
    status: Option<String>,
    cursor: Option<String>,
    limit: u32,
    filter: RunListFilter,
) -> ApiResult<(Vec<RunRow>, Option<String>)> {
    let t = ctx.tenant.clone();
    let norm = |field: &'static str, v: Option<String>| -> ApiResult<Option<String>> {
        v.filter(|s| !s.trim().is_empty())
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s.trim())
                    .map(|d| {
                        d.with_timezone(&chrono::Utc)
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    })
                    .map_err(|_| {
                        ApiError::new(
                            ErrorCode::InvalidQuery,
                            format!("{field} must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z"),
                        )
                        .field(field)
                    })
            })
            .transpose()
    };
    let from = norm("from", filter.from)?;
    let to = norm("to", filter.to)?;
    let flow = filter.flow.filter(|s| !s.trim().is_empty());
    if let Some(s) = &status {
        if ![
            "queued",
            "running",
            "passed",
            "failed",
            "cancelled",
            "error",
        ]
        .contains(&s.as_str())
        {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "status must be queued, running, passed, failed, cancelled or error",
            )
            .field("status"));
        }
    }
    let before = match &cursor {
        Some(c) => Some(
            c.split_once('|')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::InvalidCursor, "cursor is not valid").field("cursor")
                })?,
        ),
        None => None,
    };
    let limit = limit.clamp(1, 200);
    let a = app.to_string();
    // The application check and the query in one bounded read (≤ 200 rows, index order).
    let rows = state
        .tenants
        .read(&t, move |c| {
            if crate::store::applications::application(c, &a)?.is_none() {
                return Ok(None);
            }
            runs::list_runs(
                c,
                &a,
                status.as_deref(),
                before.as_ref().map(|(x, y)| (x.as_str(), y.as_str())),
                limit,
                &runs::RunNarrow {
                    flow: flow.as_deref(),
                    from: from.as_deref(),
                    to: to.as_deref(),
                },
            )
            .map(Some)
        })
        .await?
        .ok_or_else(ApiError::not_found)?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| format!("{}|{}", r.queued_at, r.id)))
        .flatten();
    Ok((rows, next))
}

/// A run with its steps.
pub async fn get(state: &Arc<AppState>, ctx: &TenantCtx, run: &str) -> ApiResult<RunDetail> {
    let t = ctx.tenant.clone();
    let r = run.to_string();
    // On the store's read connection, off the executor (the steps' size depends on the data).
    state
        .tenants
        .read_off(&t, move |c| {
            let Some(run) = runs::run(c, &r)? else {
                return Ok(None);
            };
            let steps = runs::steps(c, &r)?;
            let step_count = pinned_steps(c, &run.flow_id, run.flow_version)
                .map(|s| s.len())
                .unwrap_or(0);
            let ticket = super::tickets::ticket_of_run(c, &r)?;
            Ok(Some(RunDetail {
                run,
                steps,
                step_count,
                ticket,
            }))
        })
        .await?
        .ok_or_else(ApiError::not_found)
}

fn pinned_steps(c: &crate::store::Conn, flow: &str, version: i64) -> Result<Vec<Step>, StoreError> {
    let s = flows::version_steps(c, flow, version)?;
    serde_json::from_str(&s)
        .map_err(|e| StoreError::Migration(format!("stored steps unreadable: {e}")))
}

// ---------------------------------------------------------------- agent API

/// What a claim hands the agent: the pinned flow version with variables resolved.
#[derive(Debug, Serialize, ToSchema)]
pub struct Claim {
    /// Run id.
    pub run_id: String,
    /// Flow id.
    pub flow_id: String,
    /// Pinned version.
    pub flow_version: i64,
    /// Application base URL (relative `navigate` URLs resolve against it).
    pub base_url: String,
    /// Steps with `{{variables}}` substituted.
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<serde_json::Value>,
    /// Selectors that must be masked in each step's screenshot (screenshot `mask` lists and
    /// `fill` steps whose value uses a secret variable), by step index.
    pub mask_required: Vec<Vec<String>>,
}

fn agent_scope(ctx: &TenantCtx) -> ApiResult<(TenantId, String, String)> {
    match &ctx.principal {
        Principal::Agent {
            application_id,
            token_id,
            ..
        } => Ok((ctx.tenant.clone(), application_id.clone(), token_id.clone())),
        _ => Err(ApiError::forbidden()),
    }
}

/// Selectors that must be masked in the screenshot of step `idx` of `steps`: the step's own
/// ([`required_masks`]) and, for a `checkpoint` (whose image goes to the AI endpoint), every
/// selector an earlier `fill` step typed a secret variable into.
pub fn required_masks_at(steps: &[Step], idx: usize, secret_names: &[String]) -> Vec<String> {
    let Some(step) = steps.get(idx) else {
        return Vec::new();
    };
    let mut out = required_masks(step, secret_names);
    if matches!(step, Step::Checkpoint { .. }) {
        for s in &steps[..idx] {
            if let Step::Fill { .. } = s {
                for sel in required_masks(s, secret_names) {
                    if !out.contains(&sel) {
                        out.push(sel);
                    }
                }
            }
        }
    }
    out
}

/// Selectors that must be masked in step `s`'s screenshot.
pub fn required_masks(s: &Step, secret_names: &[String]) -> Vec<String> {
    match s {
        Step::Screenshot { mask, .. } => mask.clone(),
        Step::Fill {
            selector, value, ..
        } if template_vars(value)
            .iter()
            .any(|v| secret_names.contains(v)) =>
        {
            vec![selector.clone()]
        }
        _ => vec![],
    }
}

/// Claim the oldest queued run of the agent's application, or — with `only` — exactly that
/// queued run of the application (None when nothing matching is queued).
pub async fn claim(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    only: Option<String>,
) -> ApiResult<Option<Claim>> {
    let (t, app, token_id) = agent_scope(ctx)?;
    state.runner.saw_agent(ctx);
    let now = unix_now();
    let st = state.clone();
    let out = tokio::task::spawn_blocking(move || -> ApiResult<Option<Claim>> {
        let db = st.tenants.get_blocking(&t)?;
        let (run, base_url, steps) = {
            let mut c = db.lock();
            let claimed = match &only {
                Some(id) => runs::claim_run_id(&mut c, &app, id, &token_id, now)?,
                None => runs::claim_run(&mut c, &app, &token_id, now)?,
            };
            let Some(run) = claimed else {
                return Ok(None);
            };
            let base = crate::store::applications::application(&c, &app)?
                .map(|a| a.base_url)
                .unwrap_or_default();
            let steps = pinned_steps(&c, &run.flow_id, run.flow_version)?;
            (run, base, steps)
        };
        let vars: Vec<Resolved> = variables::resolve_blocking(&st, &t, &app)?;
        let secret_names: Vec<String> = vars
            .iter()
            .filter(|v| v.secret)
            .map(|v| v.name.clone())
            .collect();
        let lookup = |n: &str| {
            vars.iter()
                .find(|v| v.name == n)
                .map(|v| v.value.to_string())
        };
        let mut out = Vec::with_capacity(steps.len());
        let mut masks = Vec::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            masks.push(required_masks_at(&steps, i, &secret_names));
            let mut v = serde_json::to_value(s).map_err(ApiError::internal)?;
            if let Some(obj) = v.as_object_mut() {
                for key in ["url", "value", "expected"] {
                    if let Some(serde_json::Value::String(text)) = obj.get(key) {
                        let r = render_template(text, &lookup);
                        obj.insert(key.into(), serde_json::Value::String(r));
                    }
                }
            }
            out.push(v);
        }
        Ok(Some(Claim {
            run_id: run.id,
            flow_id: run.flow_id,
            flow_version: run.flow_version,
            base_url,
            steps: out,
            mask_required: masks,
        }))
    })
    .await
    .map_err(ApiError::internal)??;
    if out.is_some() {
        super::live::changed(state, &ctx.tenant);
    }
    Ok(out)
}

/// Queue a run of `flow` for the agent's own application (the `agent run --flow … --wait`
/// path used by CI pipelines after a deploy). Recorded with trigger `manual` and
/// `triggered_by = agent-token:<name>`; audited as `run.trigger` with `via: agent`. A flow of
/// another application (or tenant) → 404.
pub async fn trigger_as_agent(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    flow: &str,
) -> ApiResult<RunRow> {
    let (t, app, _) = agent_scope(ctx)?;
    let id = new_object_id();
    let ev = NewAuditEvent::new(&ctx.actor(), "run.trigger", Some(format!("run:{id}")))
        .details(serde_json::json!({"flow_id": flow, "trigger": "manual", "via": "agent"}));
    let (f, by) = (flow.to_string(), ctx.principal.actor_name());
    let row = state
        .tenants
        .run(&t, move |c| {
            match flows::flow(c, &f, None)? {
                Some(row) if row.application_id == app => {}
                _ => return Err(StoreError::NotFound),
            }
            runs::queue_run(c, &id, &f, "manual", &by, Some(&ev))
        })
        .await?;
    super::runner::run_queued(state, &ctx.tenant);
    super::live::changed(state, &ctx.tenant);
    Ok(row)
}

/// A run of the agent's application (any agent's), for following a run to its verdict.
pub async fn get_as_agent(state: &Arc<AppState>, ctx: &TenantCtx, run: &str) -> ApiResult<RunRow> {
    let (t, app, _) = agent_scope(ctx)?;
    let run = run.to_string();
    state
        .tenants
        .run(&t, move |c| {
            Ok(runs::run(c, &run)?.filter(|r| r.application_id == app))
        })
        .await?
        .ok_or_else(ApiError::not_found)
}

/// One step result from an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepReport {
    /// Step index (0-based).
    pub index: i64,
    /// `passed|failed|skipped`.
    pub status: String,
    /// Duration in ms.
    #[serde(default)]
    pub duration_ms: Option<i64>,
    /// Error text.
    #[serde(default)]
    pub error: Option<String>,
    /// Console summary (any JSON).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub console: Option<serde_json::Value>,
    /// Network summary (any JSON).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub network: Option<serde_json::Value>,
}

/// Load a run the agent owns: same application and claimed by this token; else 404.
fn owned_run(
    c: &crate::store::Conn,
    run: &str,
    app: &str,
    token_id: &str,
) -> Result<RunRow, ApiError> {
    match runs::run(c, run)? {
        Some(r) if r.application_id == app && r.agent_token_id.as_deref() == Some(token_id) => {
            Ok(r)
        }
        _ => Err(ApiError::not_found()),
    }
}

fn scrub_json(v: &serde_json::Value, secrets: &[Zeroizing<String>]) -> Option<serde_json::Value> {
    Some(variables::scrub_json(v, secrets))
}

/// Record a step result (secret values scrubbed from every text field).
pub async fn report_step(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    run: &str,
    rep: StepReport,
) -> ApiResult<StepRow> {
    let (t, app, token_id) = agent_scope(ctx)?;
    if !["passed", "failed", "skipped"].contains(&rep.status.as_str()) {
        return Err(ApiError::invalid(
            "status",
            "status must be passed, failed or skipped",
        ));
    }
    if rep.duration_ms.is_some_and(|d| d < 0) {
        return Err(ApiError::invalid("duration_ms", "must not be negative"));
    }
    if rep.error.as_ref().is_some_and(|e| e.len() > 64 * 1024) {
        return Err(ApiError::invalid("error", "longer than 64 KiB"));
    }
    let st = state.clone();
    let run = run.to_string();
    let out = tokio::task::spawn_blocking(move || -> ApiResult<StepRow> {
        // The run and its pinned steps from the read connection: the write connection is taken
        // once per report, for the transaction (`record_step_report` checks the run is still
        // running inside it).
        let (r, steps) = st
            .tenants
            .read_blocking(&t, |c| {
                let Some(r) = runs::run(c, &run)?.filter(|r| {
                    r.application_id == app
                        && r.agent_token_id.as_deref() == Some(token_id.as_str())
                }) else {
                    return Ok(None);
                };
                let steps = pinned_steps(c, &r.flow_id, r.flow_version)?;
                Ok(Some((r, steps)))
            })?
            .ok_or_else(ApiError::not_found)?;
        let idx = usize::try_from(rep.index)
            .ok()
            .filter(|i| *i < steps.len())
            .ok_or_else(|| {
                ApiError::invalid("index", format!("index must be 0..{}", steps.len()))
            })?;
        let secrets = variables::secret_values(&variables::resolve_blocking(&st, &t, &app)?);
        let report = StepReportRow {
            index: rep.index,
            status: rep.status.clone(),
            duration_ms: rep.duration_ms,
            error: rep.error.as_deref().map(|e| variables::scrub(e, &secrets)),
            console: rep.console.as_ref().and_then(|v| scrub_json(v, &secrets)),
            network: rep.network.as_ref().and_then(|v| scrub_json(v, &secrets)),
        };
        // Committed with the store's other concurrent step reports in one transaction (group
        // commit); answered only after that commit.
        let step = steps[idx].clone();
        let st2 = st.clone();
        st.tenants
            .write_grouped(&t, move |c| {
                let configured = super::ai_endpoint::configured(c, &st2)?;
                runs::record_step_report(c, &r.id, &report, &|row| {
                    step_status(&step, row, configured)
                })
            })
            .map_err(map_transition)
    })
    .await
    .map_err(ApiError::internal)??;
    super::live::changed(state, &ctx.tenant);
    Ok(out)
}

/// Heartbeat of a running run.
pub async fn heartbeat(state: &Arc<AppState>, ctx: &TenantCtx, run: &str) -> ApiResult<()> {
    let (t, app, token_id) = agent_scope(ctx)?;
    state.runner.saw_agent(ctx);
    let run = run.to_string();
    let now = unix_now();
    state
        .tenants
        .run(&t, move |c| {
            let r = match owned_run(c, &run, &app, &token_id) {
                Ok(r) => r,
                Err(_) => return Ok(Err(ApiError::not_found())),
            };
            if !runs::heartbeat(c, &r.id, now)? {
                return Ok(Err(ApiError::new(
                    ErrorCode::InvalidTransition,
                    format!("the run is {}", r.status),
                )));
            }
            Ok(Ok(()))
        })
        .await?
}

/// Completion body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    /// `passed|failed`, or `error` when the runner itself failed (the run ends `error` with
    /// reason `runner_error` and is retried once).
    pub status: String,
    /// Error text when failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// Complete a run. `passed` is recorded only if the agent reported every step, none is
/// `failed`, and no checkpoint is `error` or `not_evaluated`; otherwise the run is Failed with
/// the reason (`agent_reported_failure`, `step_failed:N`, `checkpoint_error:N`,
/// `checkpoint_not_evaluated:N`, `missing_step_result:N`).
pub async fn complete(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    run: &str,
    body: Complete,
) -> ApiResult<RunRow> {
    let (t, app, token_id) = agent_scope(ctx)?;
    if !["passed", "failed", "error"].contains(&body.status.as_str()) {
        return Err(ApiError::invalid(
            "status",
            "status must be passed, failed or error",
        ));
    }
    if body.error.as_ref().is_some_and(|e| e.len() > 64 * 1024) {
        return Err(ApiError::invalid("error", "longer than 64 KiB"));
    }
    let st = state.clone();
    let run = run.to_string();
    let actor = ctx.principal.actor(&ClientInfo::default());
    let out = tokio::task::spawn_blocking(move || -> ApiResult<RunRow> {
        let secrets = variables::secret_values(&variables::resolve_blocking(&st, &t, &app)?);
        let db = st.tenants.get_blocking(&t)?;
        let mut c = db.lock();
        let r = owned_run(&c, &run, &app, &token_id)?;
        if body.status == "error" {
            // An infrastructure failure: never `failed`, never judged; retried once.
            let error = body.error.as_deref().map(|e| variables::scrub(e, &secrets));
            let retry_id = new_object_id();
            let ev = NewAuditEvent::new(&actor, "run.complete", Some(format!("run:{}", r.id)))
                .details(serde_json::json!({"reported": "error", "status": "error", "reason": RUNNER_ERROR}));
            let retry_ev =
                NewAuditEvent::new(&actor, "run.trigger", Some(format!("run:{retry_id}")))
                    .details(serde_json::json!({"flow_id": r.flow_id, "trigger": r.trigger, "retry_of": r.id}));
            let (ended, retry) = runs::end_with_runner_error(
                &mut c,
                &r.id,
                error.as_deref(),
                &ev,
                &retry_id,
                &retry_ev,
            )
            .map_err(map_transition)?;
            if retry.is_some() {
                super::runner::run_queued(&st, &t);
            }
            return Ok(ended);
        }
        let steps = pinned_steps(&c, &r.flow_id, r.flow_version)?;
        let results = runs::steps(&c, &r.id)?;
        let (final_status, reason) = if body.status == "failed" {
            ("failed", Some("agent_reported_failure".to_string()))
        } else if let Some(f) = results.iter().find(|s| s.status == "failed") {
            ("failed", Some(format!("step_failed:{}", f.index)))
        } else if let Some(e) = results.iter().find(|s| s.status == "error") {
            ("failed", Some(format!("checkpoint_error:{}", e.index)))
        } else if let Some(n) = results.iter().find(|s| s.status == "not_evaluated") {
            (
                "failed",
                Some(format!("checkpoint_not_evaluated:{}", n.index)),
            )
        } else if let Some(missing) = (0..steps.len() as i64).find(|i| {
            !results
                .iter()
                .any(|s| s.index == *i && s.reported_at.is_some())
        }) {
            ("failed", Some(format!("missing_step_result:{missing}")))
        } else {
            ("passed", None)
        };
        let error = body.error.as_deref().map(|e| variables::scrub(e, &secrets));
        let ev = NewAuditEvent::new(&actor, "run.complete", Some(format!("run:{}", r.id))).details(
            serde_json::json!({"reported": body.status, "status": final_status, "reason": reason}),
        );
        let done = runs::transition(
            &mut c,
            &r.id,
            &["running"],
            final_status,
            reason.as_deref(),
            error.as_deref(),
            Some(&ev),
        )
        .map_err(map_transition)?;
        drop(c);
        // Issue 20: file, comment or close tickets by the application's integration rules.
        super::tickets::on_run_finished_blocking(&st, &t, &done);
        Ok(done)
    })
    .await
    .map_err(ApiError::internal)??;
    super::live::changed(state, &ctx.tenant);
    Ok(out)
}

// ---------------------------------------------------------------- jobs

fn all_tenants(state: &AppState) -> Vec<TenantId> {
    let rows = {
        let c = state.catalog.db().lock();
        catalog::list_tenants(&c).unwrap_or_default()
    };
    rows.into_iter().map(|r| r.id).collect()
}

/// Fail running runs whose agent sent no heartbeat for `runs.heartbeat_timeout_secs` (blocking).
/// Returns how many runs were failed.
pub fn fail_stale_runs_blocking(state: &AppState) -> usize {
    let cutoff = unix_now() - state.settings.runs.heartbeat_timeout_secs as i64;
    let mut n = 0;
    for t in all_tenants(state) {
        // A store found without queued or running runs, unchanged since: nothing can time out.
        let Some(res) = visit_unless_nothing(state, Found::NoActiveRuns, &t, |db| {
            let mut c = db.lock();
            let ids = runs::fail_stale_runs(&mut c, cutoff, &|id| {
                NewAuditEvent::new(
                    &super::job_actor("agent-timeouts"),
                    "run.timeout",
                    Some(format!("run:{id}")),
                )
                .details(serde_json::json!({"reason": "agent_timeout"}))
            })?;
            // Failing a run wrote the store: the stamp taken before no longer matches anyway.
            let idle = ids.is_empty() && !runs::any_active(&c)?;
            Ok((ids, idle))
        }) else {
            continue;
        };
        match res {
            Ok(ids) => {
                if !ids.is_empty() {
                    super::live::changed(state, &t);
                }
                n += ids.len()
            }
            Err(e) => {
                tracing::error!(tenant = %t, error = %e, "agent-timeout job failed for tenant")
            }
        }
    }
    n
}

/// Queue one run for every scheduled flow whose next cron tick after its anchor has passed.
/// Missed ticks (e.g. while the server was down) collapse into one run. Returns runs queued.
pub fn queue_scheduled_blocking(state: &AppState) -> usize {
    queue_scheduled_at(state, chrono::Utc::now())
}

/// [`queue_scheduled_blocking`] as of `now` (`flowguard jobs run schedules --as-of`, tests):
/// a flow is due when the first tick after its stored anchor is not later than `now`
/// ([`crate::domain::schedule::CronSchedule::due`], with its daylight-saving rule); the anchor
/// then moves to `now`. Only the anchor and `now` decide, so a restart neither repeats nor
/// loses a tick.
pub fn queue_scheduled_at(state: &AppState, now: chrono::DateTime<chrono::Utc>) -> usize {
    let mut n = 0;
    for t in all_tenants(state) {
        // A store found without scheduled flows, unchanged since: nothing can be due.
        let Some(res) = visit_unless_nothing(state, Found::NoSchedules, &t, |db| {
            let mut c = db.lock();
            let mut queued = 0;
            let scheduled = flows::scheduled_flows(&c)?;
            let none = scheduled.is_empty();
            for (flow, cron, tz, anchor) in scheduled {
                let Ok(sched) = super::flows::parse_schedule(&cron, &tz) else {
                    continue;
                };
                let Some(from) = chrono::DateTime::from_timestamp(anchor, 0) else {
                    continue;
                };
                if sched.due(from, now).is_none() {
                    continue;
                }
                let id = new_object_id();
                let ev = NewAuditEvent::new(
                    &super::job_actor("schedules"),
                    "run.trigger",
                    Some(format!("run:{id}")),
                )
                .details(serde_json::json!({"flow_id": flow, "trigger": "schedule"}));
                let tx_ok = runs::queue_run(&mut c, &id, &flow, "schedule", "schedule", Some(&ev));
                // Advance the anchor whether or not the flow still exists, so ticks never pile up.
                flows::advance_schedule(&c, &flow, now.timestamp())?;
                if tx_ok.is_ok() {
                    queued += 1;
                }
            }
            Ok((queued, none))
        }) else {
            continue;
        };
        match res {
            Ok(q) => {
                if q > 0 {
                    state.runner.hints().add(&t);
                    super::live::changed(state, &t);
                }
                n += q
            }
            Err(e) => tracing::error!(tenant = %t, error = %e, "schedule job failed for tenant"),
        }
    }
    if n > 0 {
        state.run_queued.notify_waiters();
    }
    n
}
