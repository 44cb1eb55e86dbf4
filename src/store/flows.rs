//! Tenant-store SQL for flows (immutable versions), runs and their steps, screenshots index,
//! variables and webhook trigger tokens. Write paths use `BEGIN IMMEDIATE` and append their
//! audit row in the same transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use utoipa::ToSchema;

use super::{audit, write_tx, StoreError, StoreResult};
use crate::audit::NewAuditEvent;
use crate::domain::now_rfc3339;

// ---------------------------------------------------------------- flows

/// One flow version as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowRow {
    /// Flow id.
    pub id: String,
    /// Application.
    pub application_id: String,
    /// This version number (1-based).
    pub version: i64,
    /// Latest version of the flow.
    pub current_version: i64,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// `manual|recorded|ai|imported`.
    pub source: String,
    /// Steps (JSON objects with `type`).
    #[schema(value_type = Vec<Object>)]
    pub steps: serde_json::Value,
    /// Cron schedule (if any).
    pub schedule: Option<Schedule>,
    /// When this version was saved.
    pub created_at: String,
    /// Who saved this version.
    pub created_by: String,
}

/// A flow's schedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Schedule {
    /// Cron expression (5 or 6 fields).
    pub cron: String,
    /// IANA timezone.
    pub timezone: String,
}

const FLOW_SELECT: &str = "SELECT f.id, f.application_id, v.version, f.current_version, v.name, v.tags, v.source, v.steps,
        f.schedule_cron, f.schedule_tz, v.created_at, v.created_by
   FROM flows f JOIN flow_versions v ON v.flow_id = f.id";

fn flow_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FlowRow> {
    let tags: String = r.get(5)?;
    let steps: String = r.get(7)?;
    let cron: Option<String> = r.get(8)?;
    let tz: Option<String> = r.get(9)?;
    Ok(FlowRow {
        id: r.get(0)?,
        application_id: r.get(1)?,
        version: r.get(2)?,
        current_version: r.get(3)?,
        name: r.get(4)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        source: r.get(6)?,
        steps: serde_json::from_str(&steps).unwrap_or(serde_json::Value::Null),
        schedule: cron
            .zip(tz)
            .map(|(cron, timezone)| Schedule { cron, timezone }),
        created_at: r.get(10)?,
        created_by: r.get(11)?,
    })
}

/// Fields of a new flow version.
pub struct NewVersion<'a> {
    /// Name.
    pub name: &'a str,
    /// Tags JSON array.
    pub tags: &'a str,
    /// Source.
    pub source: &'a str,
    /// Steps JSON array.
    pub steps: &'a str,
    /// Author.
    pub created_by: &'a str,
}

/// Create a flow with version 1 under an existing application (else NotFound).
pub fn insert_flow(
    c: &mut Connection,
    id: &str,
    app: &str,
    v: &NewVersion<'_>,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM applications WHERE id = ?1)",
        [app],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(StoreError::NotFound);
    }
    let now = now_rfc3339();
    tx.execute(
        "INSERT INTO flows (id, application_id, current_version, created_at, updated_at) VALUES (?1, ?2, 1, ?3, ?3)",
        params![id, app, now],
    )?;
    tx.execute(
        "INSERT INTO flow_versions (flow_id, version, name, tags, source, steps, created_at, created_by) VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, v.name, v.tags, v.source, v.steps, now, v.created_by],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Save a new version of a live flow; returns the new version number.
pub fn insert_version(
    c: &mut Connection,
    id: &str,
    v: &NewVersion<'_>,
    ev: &NewAuditEvent,
) -> StoreResult<i64> {
    let tx = write_tx(c)?;
    let cur: Option<i64> = tx
        .query_row(
            "SELECT current_version FROM flows WHERE id = ?1 AND deleted_at IS NULL",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let next = cur.ok_or(StoreError::NotFound)? + 1;
    let now = now_rfc3339();
    tx.execute(
        "INSERT INTO flow_versions (flow_id, version, name, tags, source, steps, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![id, next, v.name, v.tags, v.source, v.steps, now, v.created_by],
    )?;
    tx.execute(
        "UPDATE flows SET current_version = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, next, now],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(next)
}

/// A live flow at its current version, or a given version.
pub fn flow(c: &Connection, id: &str, version: Option<i64>) -> StoreResult<Option<FlowRow>> {
    let sql = format!(
        "{FLOW_SELECT} WHERE f.id = ?1 AND f.deleted_at IS NULL AND v.version = COALESCE(?2, f.current_version)"
    );
    Ok(c.query_row(&sql, params![id, version], flow_from_row)
        .optional()?)
}

/// Live flows of an application at their current version, optionally with a tag.
pub fn list_flows(c: &Connection, app: &str, tag: Option<&str>) -> StoreResult<Vec<FlowRow>> {
    let sql = format!(
        "{FLOW_SELECT} WHERE f.application_id = ?1 AND f.deleted_at IS NULL AND v.version = f.current_version
           AND (?2 IS NULL OR EXISTS (SELECT 1 FROM json_each(v.tags) WHERE json_each.value = ?2))
         ORDER BY v.name, f.id"
    );
    let mut s = c.prepare(&sql)?;
    let rows = s.query_map(params![app, tag], flow_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Soft-delete a flow (versions stay for run history); audited.
pub fn delete_flow(c: &mut Connection, id: &str, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE flows SET deleted_at = ?2, schedule_cron = NULL, schedule_tz = NULL WHERE id = ?1 AND deleted_at IS NULL",
        params![id, now_rfc3339()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    tx.execute(
        "UPDATE webhook_tokens SET revoked_at = ?2 WHERE flow_id = ?1 AND revoked_at IS NULL",
        params![id, now_rfc3339()],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Set or clear a flow's schedule; `anchor` (unix s) is the time from which ticks count.
pub fn set_schedule(
    c: &mut Connection,
    id: &str,
    sched: Option<(&str, &str)>,
    anchor: i64,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE flows SET schedule_cron = ?2, schedule_tz = ?3, schedule_anchor = ?4 WHERE id = ?1 AND deleted_at IS NULL",
        params![id, sched.map(|s| s.0), sched.map(|s| s.1), anchor],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// The steps JSON of one flow version (deleted flows included: runs keep their history).
pub fn version_steps(c: &Connection, flow: &str, version: i64) -> StoreResult<String> {
    Ok(c.query_row(
        "SELECT steps FROM flow_versions WHERE flow_id = ?1 AND version = ?2",
        params![flow, version],
        |r| r.get(0),
    )?)
}

/// Move a flow's schedule anchor (ticks before it are considered handled).
pub fn advance_schedule(c: &Connection, flow: &str, anchor: i64) -> StoreResult<()> {
    c.execute(
        "UPDATE flows SET schedule_anchor = ?2 WHERE id = ?1",
        params![flow, anchor],
    )?;
    Ok(())
}

/// Scheduled flows: (flow id, cron, tz, anchor).
pub fn scheduled_flows(c: &Connection) -> StoreResult<Vec<(String, String, String, i64)>> {
    let mut s = c.prepare(
        "SELECT id, schedule_cron, schedule_tz, COALESCE(schedule_anchor, 0) FROM flows
         WHERE deleted_at IS NULL AND schedule_cron IS NOT NULL AND schedule_tz IS NOT NULL",
    )?;
    let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------- runs

/// A run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Flow.
    pub flow_id: String,
    /// Application.
    pub application_id: String,
    /// Pinned flow version.
    pub flow_version: i64,
    /// `queued|running|passed|failed|cancelled`.
    pub status: String,
    /// `manual|schedule|webhook`.
    pub trigger: String,
    /// Who or what triggered it.
    pub triggered_by: Option<String>,
    /// Machine reason for the final status (e.g. `agent_timeout`, `step_failed`).
    pub reason: Option<String>,
    /// Error text (secrets scrubbed).
    pub error: Option<String>,
    /// Queued (RFC 3339).
    pub queued_at: String,
    /// Claimed.
    pub started_at: Option<String>,
    /// Finished.
    pub finished_at: Option<String>,
    /// Agent token that claimed it.
    #[serde(skip)]
    pub agent_token_id: Option<String>,
}

const RUN_COLS: &str = "id, flow_id, application_id, flow_version, status, trigger, triggered_by, reason, error, queued_at, started_at, finished_at, agent_token_id";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        flow_id: r.get(1)?,
        application_id: r.get(2)?,
        flow_version: r.get(3)?,
        status: r.get(4)?,
        trigger: r.get(5)?,
        triggered_by: r.get(6)?,
        reason: r.get(7)?,
        error: r.get(8)?,
        queued_at: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        agent_token_id: r.get(12)?,
    })
}

/// Queue a run of a live flow at its current version; audited (`run.trigger`).
pub fn queue_run(
    c: &mut Connection,
    run_id: &str,
    flow_id: &str,
    trigger: &str,
    by: &str,
    ev: Option<&NewAuditEvent>,
) -> StoreResult<RunRow> {
    let tx = write_tx(c)?;
    let (app, version): (String, i64) = tx
        .query_row(
            "SELECT application_id, current_version FROM flows WHERE id = ?1 AND deleted_at IS NULL",
            [flow_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or(StoreError::NotFound)?;
    tx.execute(
        "INSERT INTO runs (id, flow_id, application_id, flow_version, status, trigger, triggered_by, queued_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
        params![run_id, flow_id, app, version, trigger, by, now_rfc3339()],
    )?;
    if let Some(ev) = ev {
        audit::append(&tx, ev)?;
    }
    let row = tx.query_row(
        &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
        [run_id],
        run_from_row,
    )?;
    tx.commit()?;
    Ok(row)
}

/// One run.
pub fn run(c: &Connection, id: &str) -> StoreResult<Option<RunRow>> {
    Ok(c.query_row(
        &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
        [id],
        run_from_row,
    )
    .optional()?)
}

/// Runs of an application, newest first, optional status filter, `before` = (queued_at, id) cursor.
pub fn list_runs(
    c: &Connection,
    app: &str,
    status: Option<&str>,
    before: Option<(&str, &str)>,
    limit: u32,
) -> StoreResult<Vec<RunRow>> {
    // One statement per shape, so each is answered in index order (`runs_app_queued`,
    // `runs_app_status`) without sorting; `?2 IS NULL OR …` forms defeat the index.
    let sql = format!(
        "SELECT {RUN_COLS} FROM runs WHERE application_id = ?1{}{}
         ORDER BY queued_at DESC, id DESC LIMIT ?5",
        if status.is_some() {
            " AND status = ?2"
        } else {
            ""
        },
        if before.is_some() {
            " AND (queued_at, id) < (?3, ?4)"
        } else {
            ""
        },
    );
    let mut s = c.prepare_cached(&sql)?;
    let mut bind =
        |i: usize, v: &dyn rusqlite::ToSql| -> StoreResult<()> { Ok(s.raw_bind_parameter(i, v)?) };
    bind(1, &app)?;
    if let Some(st) = status {
        bind(2, &st)?;
    }
    if let Some((q, id)) = before {
        bind(3, &q)?;
        bind(4, &id)?;
    }
    bind(5, &limit)?;
    let mut rows = s.raw_query();
    let mut out = Vec::with_capacity(limit as usize);
    while let Some(r) = rows.next()? {
        out.push(run_from_row(r)?);
    }
    Ok(out)
}

/// Atomically claim the oldest queued run of `app` for `token`: `BEGIN IMMEDIATE` plus a single
/// conditional UPDATE, so two agents never get the same run.
pub fn claim_run(
    c: &mut Connection,
    app: &str,
    token: &str,
    now: i64,
) -> StoreResult<Option<RunRow>> {
    let tx = write_tx(c)?;
    let id: Option<String> = tx
        .query_row(
            "UPDATE runs SET status = 'running', agent_token_id = ?2, started_at = ?3, last_heartbeat = ?4
             WHERE id = (SELECT id FROM runs WHERE application_id = ?1 AND status = 'queued' ORDER BY queued_at, id LIMIT 1)
               AND status = 'queued'
             RETURNING id",
            params![app, token, now_rfc3339(), now],
            |r| r.get(0),
        )
        .optional()?;
    let row = match id {
        Some(id) => Some(tx.query_row(
            &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
            [id],
            run_from_row,
        )?),
        None => None,
    };
    tx.commit()?;
    Ok(row)
}

/// Atomically claim the queued run `run_id` of `app` for `token` (the agent's
/// `run --flow … --wait` path). `None` when that run is not queued any more (another agent
/// claimed it, it was cancelled) or belongs to another application.
pub fn claim_run_id(
    c: &mut Connection,
    app: &str,
    run_id: &str,
    token: &str,
    now: i64,
) -> StoreResult<Option<RunRow>> {
    let tx = write_tx(c)?;
    let claimed = tx.execute(
        "UPDATE runs SET status = 'running', agent_token_id = ?3, started_at = ?4, last_heartbeat = ?5
         WHERE id = ?1 AND application_id = ?2 AND status = 'queued'",
        params![run_id, app, token, now_rfc3339(), now],
    )?;
    let row = if claimed == 1 {
        Some(tx.query_row(
            &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
            [run_id],
            run_from_row,
        )?)
    } else {
        None
    };
    tx.commit()?;
    Ok(row)
}

/// Move a run `from` one of the allowed states to `to`; `Conflict("transition")` otherwise.
pub fn transition(
    c: &mut Connection,
    id: &str,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
    error: Option<&str>,
    ev: Option<&NewAuditEvent>,
) -> StoreResult<RunRow> {
    let tx = write_tx(c)?;
    let cur: String = tx
        .query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    if !from.contains(&cur.as_str()) {
        return Err(StoreError::Conflict(format!("transition:{cur}")));
    }
    tx.execute(
        "UPDATE runs SET status = ?2, reason = ?3, error = ?4, finished_at = ?5 WHERE id = ?1",
        params![id, to, reason, error, now_rfc3339()],
    )?;
    if let Some(ev) = ev {
        audit::append(&tx, ev)?;
    }
    let row = tx.query_row(
        &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
        [id],
        run_from_row,
    )?;
    tx.commit()?;
    Ok(row)
}

/// Record a heartbeat of a running run.
pub fn heartbeat(c: &Connection, id: &str, now: i64) -> StoreResult<bool> {
    Ok(c.execute(
        "UPDATE runs SET last_heartbeat = ?2 WHERE id = ?1 AND status = 'running'",
        params![id, now],
    )? == 1)
}

/// Fail every running run whose last heartbeat is older than `cutoff` (unix s) with reason
/// `agent_timeout`; returns their ids. One audit row per run.
pub fn fail_stale_runs(
    c: &mut Connection,
    cutoff: i64,
    ev: &dyn Fn(&str) -> NewAuditEvent,
) -> StoreResult<Vec<String>> {
    let tx = write_tx(c)?;
    let ids: Vec<String> = {
        let mut s = tx.prepare(
            "SELECT id FROM runs WHERE status = 'running' AND COALESCE(last_heartbeat, 0) < ?1",
        )?;
        let rows = s.query_map([cutoff], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in &ids {
        tx.execute(
            "UPDATE runs SET status = 'failed', reason = 'agent_timeout', error = 'no heartbeat from the agent', finished_at = ?2 WHERE id = ?1",
            params![id, now_rfc3339()],
        )?;
        audit::append(&tx, &ev(id))?;
    }
    tx.commit()?;
    Ok(ids)
}

// ---------------------------------------------------------------- steps

/// One AI call made for a checkpoint step: what was asked and how it went (never the image,
/// the prompt or the key).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AiCall {
    /// Model asked.
    pub model: String,
    /// Request bytes sent (0 when refused before sending).
    pub bytes_sent: i64,
    /// Milliseconds until the reply (or the failure).
    pub latency_ms: i64,
    /// `verdict`, `invalid_reply`, `http_error`, `timeout`, `redirect_refused`,
    /// `egress_denied` or `connect_failed`.
    pub outcome: String,
    /// Why there is no verdict (absent when `outcome` is `verdict`).
    pub error: Option<String>,
    /// When (RFC 3339, UTC).
    pub evaluated_at: String,
}

/// A step result: what the agent reported and, for checkpoints, the AI verdict.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepRow {
    /// Step index (0-based).
    pub index: i64,
    /// Effective status `passed|failed|skipped|not_evaluated|error` (for checkpoints decided
    /// from the verdict, see `service::runs::step_status`).
    pub status: String,
    /// What the agent reported (`passed|failed|skipped`); absent until it reports.
    pub reported_status: Option<String>,
    /// When the agent reported (RFC 3339); absent when only a verdict exists yet.
    pub reported_at: Option<String>,
    /// Duration in ms.
    pub duration_ms: Option<i64>,
    /// Error (scrubbed).
    pub error: Option<String>,
    /// Console summary (scrubbed JSON).
    #[schema(value_type = Object)]
    pub console: Option<serde_json::Value>,
    /// Network summary (scrubbed JSON).
    #[schema(value_type = Object)]
    pub network: Option<serde_json::Value>,
    /// Why (e.g. `no AI endpoint configured`, `AI endpoint answered HTTP 500`).
    pub reason: Option<String>,
    /// Checkpoint verdict `pass|fail`.
    pub verdict: Option<String>,
    /// Verdict confidence 0–1.
    pub confidence: Option<f64>,
    /// The model's rationale (secret values scrubbed).
    pub rationale: Option<String>,
    /// The last AI call for this step.
    pub ai_call: Option<AiCall>,
    /// Whether a screenshot is stored.
    pub has_screenshot: bool,
}

impl StepRow {
    fn blank(index: i64) -> Self {
        Self {
            index,
            status: "not_evaluated".into(),
            reported_status: None,
            reported_at: None,
            duration_ms: None,
            error: None,
            console: None,
            network: None,
            reason: None,
            verdict: None,
            confidence: None,
            rationale: None,
            ai_call: None,
            has_screenshot: false,
        }
    }
}

/// What the agent reported for one step (already scrubbed).
#[derive(Debug, Clone)]
pub struct StepReportRow {
    /// Step index.
    pub index: i64,
    /// `passed|failed|skipped`.
    pub status: String,
    /// Duration in ms.
    pub duration_ms: Option<i64>,
    /// Error text.
    pub error: Option<String>,
    /// Console summary.
    pub console: Option<serde_json::Value>,
    /// Network summary.
    pub network: Option<serde_json::Value>,
}

/// An AI evaluation to record on a step: the verdict (when valid) and the call.
#[derive(Debug, Clone)]
pub struct EvaluationRow {
    /// `(verdict, confidence, rationale)` when the reply was a valid verdict.
    pub verdict: Option<(String, f64, String)>,
    /// The call.
    pub call: AiCall,
}

/// Decides a step's `(status, reason)` from its merged row (the service's rule).
pub type StepDecision<'a> = &'a dyn Fn(&StepRow) -> (String, Option<String>);

const STEP_COLS: &str = "s.idx, s.status, s.reported_status, s.reported_at, s.duration_ms, s.error, s.console, s.network, s.reason,
    s.verdict, s.confidence, s.rationale, s.ai_model, s.ai_bytes_sent, s.ai_latency_ms, s.ai_outcome, s.ai_error, s.evaluated_at,
    EXISTS (SELECT 1 FROM screenshots x WHERE x.run_id = s.run_id AND x.step_index = s.idx)";

fn step_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StepRow> {
    let console: Option<String> = r.get(6)?;
    let network: Option<String> = r.get(7)?;
    let model: Option<String> = r.get(12)?;
    let outcome: Option<String> = r.get(15)?;
    let ai_call = match (model, outcome) {
        (Some(model), Some(outcome)) => Some(AiCall {
            model,
            bytes_sent: r.get::<_, Option<i64>>(13)?.unwrap_or(0),
            latency_ms: r.get::<_, Option<i64>>(14)?.unwrap_or(0),
            outcome,
            error: r.get(16)?,
            evaluated_at: r.get::<_, Option<String>>(17)?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(StepRow {
        index: r.get(0)?,
        status: r.get(1)?,
        reported_status: r.get(2)?,
        reported_at: r.get(3)?,
        duration_ms: r.get(4)?,
        error: r.get(5)?,
        console: console.and_then(|c| serde_json::from_str(&c).ok()),
        network: network.and_then(|c| serde_json::from_str(&c).ok()),
        reason: r.get(8)?,
        verdict: r.get(9)?,
        confidence: r.get(10)?,
        rationale: r.get(11)?,
        ai_call,
        has_screenshot: r.get(18)?,
    })
}

fn step_in(c: &Connection, run_id: &str, idx: i64) -> StoreResult<Option<StepRow>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {STEP_COLS} FROM run_steps s WHERE s.run_id = ?1 AND s.idx = ?2"
    ))?
    .query_row(params![run_id, idx], step_from_row)
    .optional()?)
}

fn write_step(c: &Connection, run_id: &str, s: &StepRow) -> StoreResult<()> {
    let call = s.ai_call.as_ref();
    // Cached: one statement per step report (issue 12 P1 profile: SQL parsing was ~10%).
    c.prepare_cached(
        "INSERT INTO run_steps (run_id, idx, status, reported_status, reported_at, duration_ms, error, console, network, reason,
                                verdict, confidence, rationale, ai_model, ai_bytes_sent, ai_latency_ms, ai_outcome, ai_error, evaluated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
         ON CONFLICT (run_id, idx) DO UPDATE SET status = ?3, reported_status = ?4, reported_at = ?5, duration_ms = ?6,
             error = ?7, console = ?8, network = ?9, reason = ?10, verdict = ?11, confidence = ?12, rationale = ?13,
             ai_model = ?14, ai_bytes_sent = ?15, ai_latency_ms = ?16, ai_outcome = ?17, ai_error = ?18, evaluated_at = ?19",
    )?
    .execute(
        params![
            run_id,
            s.index,
            s.status,
            s.reported_status,
            s.reported_at,
            s.duration_ms,
            s.error,
            s.console.as_ref().map(|v| v.to_string()),
            s.network.as_ref().map(|v| v.to_string()),
            s.reason,
            s.verdict,
            s.confidence,
            s.rationale,
            call.map(|a| a.model.as_str()),
            call.map(|a| a.bytes_sent),
            call.map(|a| a.latency_ms),
            call.map(|a| a.outcome.as_str()),
            call.and_then(|a| a.error.as_deref()),
            call.map(|a| a.evaluated_at.as_str()),
        ],
    )?;
    Ok(())
}

/// Read-merge-decide-write of one step of a running run in one `BEGIN IMMEDIATE` transaction
/// (so a report and a verdict arriving together never lose each other).
fn merge_step(
    c: &mut Connection,
    run_id: &str,
    idx: i64,
    merge: &dyn Fn(&mut StepRow),
    decide: StepDecision<'_>,
) -> StoreResult<StepRow> {
    let tx = write_tx(c)?;
    let st: String = tx
        .prepare_cached("SELECT status FROM runs WHERE id = ?1")?
        .query_row([run_id], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    if st != "running" {
        return Err(StoreError::Conflict(format!("transition:{st}")));
    }
    let mut row = step_in(&tx, run_id, idx)?.unwrap_or_else(|| StepRow::blank(idx));
    merge(&mut row);
    let (status, reason) = decide(&row);
    row.status = status;
    row.reason = reason;
    write_step(&tx, run_id, &row)?;
    let out = step_in(&tx, run_id, idx)?.ok_or(StoreError::NotFound)?;
    tx.commit()?;
    Ok(out)
}

/// Record the agent's report of a step of a running run (`Conflict("transition:…")` otherwise);
/// a verdict already stored on the step is kept. Returns the step as stored.
pub fn record_step_report(
    c: &mut Connection,
    run_id: &str,
    rep: &StepReportRow,
    decide: StepDecision<'_>,
) -> StoreResult<StepRow> {
    let now = now_rfc3339();
    merge_step(
        c,
        run_id,
        rep.index,
        &|row| {
            row.reported_status = Some(rep.status.clone());
            row.reported_at = Some(now.clone());
            row.duration_ms = rep.duration_ms;
            row.error = rep.error.clone();
            row.console = rep.console.clone();
            row.network = rep.network.clone();
        },
        decide,
    )
}

/// Record an AI evaluation on a step of a running run (replacing an earlier one; the agent's
/// report, if any, is kept). Returns the step as stored.
pub fn record_step_evaluation(
    c: &mut Connection,
    run_id: &str,
    idx: i64,
    ev: &EvaluationRow,
    decide: StepDecision<'_>,
) -> StoreResult<StepRow> {
    merge_step(
        c,
        run_id,
        idx,
        &|row| {
            match &ev.verdict {
                Some((v, c, r)) => {
                    row.verdict = Some(v.clone());
                    row.confidence = Some(*c);
                    row.rationale = Some(r.clone());
                }
                None => {
                    row.verdict = None;
                    row.confidence = None;
                    row.rationale = None;
                }
            }
            row.ai_call = Some(ev.call.clone());
        },
        decide,
    )
}

/// Steps of a run by index.
pub fn steps(c: &Connection, run_id: &str) -> StoreResult<Vec<StepRow>> {
    let mut s = c.prepare(&format!(
        "SELECT {STEP_COLS} FROM run_steps s WHERE s.run_id = ?1 ORDER BY s.idx"
    ))?;
    let rows = s.query_map([run_id], step_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------- screenshots

/// Screenshot metadata.
#[derive(Debug, Clone)]
pub struct ShotRow {
    /// Object id (file name).
    pub id: String,
    /// Run.
    pub run_id: String,
    /// Step index.
    pub step_index: i64,
    /// DEK version that sealed the file.
    pub key_version: i64,
}

/// Record a screenshot (replacing an earlier one of the same step); returns the replaced id.
/// A file sealed under a DEK version below the rotation fence → `Conflict("key_rotated")`.
pub fn put_screenshot(
    c: &mut Connection,
    s: &ShotRow,
    width: u32,
    height: u32,
    bytes: usize,
) -> StoreResult<Option<String>> {
    let tx = write_tx(c)?;
    let st: String = tx
        .query_row("SELECT status FROM runs WHERE id = ?1", [&s.run_id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or(StoreError::NotFound)?;
    if st != "running" {
        return Err(StoreError::Conflict(format!("transition:{st}")));
    }
    super::tenant::check_dek_fence(&tx, u32::try_from(s.key_version).unwrap_or(0))?;
    let old: Option<String> = tx
        .query_row(
            "SELECT id FROM screenshots WHERE run_id = ?1 AND step_index = ?2",
            params![s.run_id, s.step_index],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute(
        "DELETE FROM screenshots WHERE run_id = ?1 AND step_index = ?2",
        params![s.run_id, s.step_index],
    )?;
    tx.execute(
        "INSERT INTO screenshots (id, run_id, step_index, key_version, width, height, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![s.id, s.run_id, s.step_index, s.key_version, width, height, bytes as i64, now_rfc3339()],
    )?;
    tx.commit()?;
    Ok(old)
}

/// A step's screenshot.
pub fn screenshot_of(c: &Connection, run_id: &str, idx: i64) -> StoreResult<Option<ShotRow>> {
    Ok(c.query_row(
        "SELECT id, run_id, step_index, key_version FROM screenshots WHERE run_id = ?1 AND step_index = ?2",
        params![run_id, idx],
        |r| Ok(ShotRow { id: r.get(0)?, run_id: r.get(1)?, step_index: r.get(2)?, key_version: r.get(3)? }),
    )
    .optional()?)
}

/// A screenshot by object id.
pub fn screenshot(c: &Connection, id: &str) -> StoreResult<Option<ShotRow>> {
    Ok(c.query_row(
        "SELECT id, run_id, step_index, key_version FROM screenshots WHERE id = ?1",
        [id],
        |r| {
            Ok(ShotRow {
                id: r.get(0)?,
                run_id: r.get(1)?,
                step_index: r.get(2)?,
                key_version: r.get(3)?,
            })
        },
    )
    .optional()?)
}

// ---------------------------------------------------------------- variables

/// A variable as stored (secret values only as ciphertext).
#[derive(Debug, Clone)]
pub struct VariableRow {
    /// Name.
    pub name: String,
    /// Secret?
    pub secret: bool,
    /// Plain value.
    pub value: Option<String>,
    /// Envelope ciphertext of a secret value.
    pub ciphertext: Option<Vec<u8>>,
    /// Updated (RFC 3339).
    pub updated_at: String,
}

/// Upsert a variable of an existing application; audited. A secret sealed under a DEK version
/// below the rotation fence → `Conflict("key_rotated")` (re-seal with the current DEK and retry).
pub fn put_variable(
    c: &mut Connection,
    app: &str,
    v: &VariableRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM applications WHERE id = ?1)",
        [app],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(StoreError::NotFound);
    }
    if let Some(ct) = &v.ciphertext {
        let kv =
            crate::crypto::envelope::key_version(ct).map_err(|e| StoreError::Key(e.to_string()))?;
        super::tenant::check_dek_fence(&tx, kv)?;
    }
    tx.execute(
        "INSERT INTO variables (application_id, name, secret, value, ciphertext, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (application_id, name) DO UPDATE SET secret = ?3, value = ?4, ciphertext = ?5, updated_at = ?6",
        params![app, v.name, v.secret, v.value, v.ciphertext, v.updated_at],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Variables of an application by name.
pub fn variables(c: &Connection, app: &str) -> StoreResult<Vec<VariableRow>> {
    let mut s = c.prepare("SELECT name, secret, value, ciphertext, updated_at FROM variables WHERE application_id = ?1 ORDER BY name")?;
    let rows = s.query_map([app], |r| {
        Ok(VariableRow {
            name: r.get(0)?,
            secret: r.get(1)?,
            value: r.get(2)?,
            ciphertext: r.get(3)?,
            updated_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Delete a variable; audited.
pub fn delete_variable(
    c: &mut Connection,
    app: &str,
    name: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if tx.execute(
        "DELETE FROM variables WHERE application_id = ?1 AND name = ?2",
        params![app, name],
    )? == 0
    {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

// ---------------------------------------------------------------- webhook tokens

/// A webhook trigger token (never the secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookRow {
    /// Id.
    pub id: String,
    /// Flow it triggers.
    pub flow_id: String,
    /// Label.
    pub name: String,
    /// Visible prefix.
    pub prefix: String,
    /// Created.
    pub created_at: String,
    /// Creator.
    pub created_by: String,
    /// Revoked at.
    pub revoked_at: Option<String>,
}

/// Insert a webhook token for a live flow; audited.
pub fn insert_webhook(
    c: &mut Connection,
    w: &WebhookRow,
    hash: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let live: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM flows WHERE id = ?1 AND deleted_at IS NULL)",
        [&w.flow_id],
        |r| r.get(0),
    )?;
    if !live {
        return Err(StoreError::NotFound);
    }
    tx.execute(
        "INSERT INTO webhook_tokens (id, flow_id, name, token_hash, prefix, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![w.id, w.flow_id, w.name, hash, w.prefix, w.created_at, w.created_by],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Webhook tokens of a flow.
pub fn webhooks(c: &Connection, flow: &str) -> StoreResult<Vec<WebhookRow>> {
    let mut s = c.prepare("SELECT id, flow_id, name, prefix, created_at, created_by, revoked_at FROM webhook_tokens WHERE flow_id = ?1 ORDER BY created_at DESC")?;
    let rows = s.query_map([flow], |r| {
        Ok(WebhookRow {
            id: r.get(0)?,
            flow_id: r.get(1)?,
            name: r.get(2)?,
            prefix: r.get(3)?,
            created_at: r.get(4)?,
            created_by: r.get(5)?,
            revoked_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revoke a webhook token of a flow; audited.
pub fn revoke_webhook(
    c: &mut Connection,
    flow: &str,
    id: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE webhook_tokens SET revoked_at = ?3 WHERE id = ?1 AND flow_id = ?2 AND revoked_at IS NULL",
        params![id, flow, now_rfc3339()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// The flow of an active webhook token.
pub fn webhook_flow(c: &Connection, hash: &str) -> StoreResult<Option<(String, String)>> {
    Ok(c.query_row(
        "SELECT w.id, w.flow_id FROM webhook_tokens w JOIN flows f ON f.id = w.flow_id
         WHERE w.token_hash = ?1 AND w.revoked_at IS NULL AND f.deleted_at IS NULL",
        [hash],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

/// What [`purge_runs_in`] deleted.
#[derive(Debug, Default)]
pub struct PurgedRuns {
    /// Runs deleted (their steps went with them).
    pub runs: u64,
    /// Object ids of the screenshots deleted (their files are the caller's to remove).
    pub screenshots: Vec<String>,
}

/// Delete finished runs (`passed`, `failed`, `cancelled`) that finished (or, without a finish
/// time, were queued) before `cutoff` (RFC 3339 UTC, millisecond form), with their steps and
/// screenshot rows, inside the caller's transaction. Queued and running runs stay.
pub fn purge_runs_in(tx: &rusqlite::Transaction<'_>, cutoff: &str) -> StoreResult<PurgedRuns> {
    delete_runs_in(
        tx,
        "status IN ('passed','failed','cancelled') AND coalesce(finished_at, queued_at) < ?1",
        cutoff,
    )
}

/// Delete the runs matching `filter` (an SQL condition on `runs` with one parameter `?1`) with
/// their steps and screenshot rows, inside the caller's transaction; returns what went. The one
/// place runs are deleted (retention, application deletion).
pub(crate) fn delete_runs_in(
    tx: &rusqlite::Transaction<'_>,
    filter: &str,
    param: &str,
) -> StoreResult<PurgedRuns> {
    let runs = format!("SELECT id FROM runs WHERE {filter}");
    let screenshots = {
        let mut st = tx.prepare(&format!(
            "SELECT id FROM screenshots WHERE run_id IN ({runs})"
        ))?;
        let rows = st.query_map([param], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute(
        &format!("DELETE FROM screenshots WHERE run_id IN ({runs})"),
        [param],
    )?;
    tx.execute(
        &format!("DELETE FROM run_steps WHERE run_id IN ({runs})"),
        [param],
    )?;
    let runs = tx.execute(&format!("DELETE FROM runs WHERE {filter}"), [param])? as u64;
    Ok(PurgedRuns { runs, screenshots })
}
