//! Tenant-store SQL for runs: tables `runs` (queue, claim, transitions, heartbeat, stale runs,
//! retention purge) and `run_steps` (agent step reports, AI evaluations and the AI call record).
//! Runs are deleted only through `cascade::delete_runs_in`, which also removes their
//! steps and screenshot rows. Write paths use `BEGIN IMMEDIATE` and append their audit row in the
//! same transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::cascade::{self, PurgedRuns};
use super::{audit, write_tx, write_tx_nested, Conflict, StoreError, StoreResult};
use crate::audit::NewAuditEvent;
use crate::domain::now_rfc3339;

/// A run.
#[derive(Debug, Clone)]
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
    /// Agent token that claimed it (`runner:embedded` for the embedded runner).
    pub agent_token_id: Option<String>,
    /// The run this one automatically retries (after a `runner_error`).
    pub retry_of: Option<String>,
}

const RUN_COLS: &str = "id, flow_id, application_id, flow_version, status, trigger, triggered_by, reason, error, queued_at, started_at, finished_at, agent_token_id, retry_of";

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
        retry_of: r.get(13)?,
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
    // Cached: read by every agent request and run detail (issue 25 P8).
    Ok(
        c.prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"))?
            .query_row([id], run_from_row)
            .optional()?,
    )
}

/// Optional narrowing of [`list_runs`]: one flow, and queue times in `[from, to)` (RFC 3339
/// UTC text, compared as stored).
#[derive(Debug, Default, Clone, Copy)]
pub struct RunNarrow<'a> {
    /// Only this flow's runs.
    pub flow: Option<&'a str>,
    /// Queued at or after.
    pub from: Option<&'a str>,
    /// Queued before.
    pub to: Option<&'a str>,
}

/// Runs of an application, newest first, optional status filter, `before` = (queued_at, id)
/// cursor, narrowed by `narrow` (flow, queue-time range).
pub fn list_runs(
    c: &Connection,
    app: &str,
    status: Option<&str>,
    before: Option<(&str, &str)>,
    limit: u32,
    narrow: &RunNarrow<'_>,
) -> StoreResult<Vec<RunRow>> {
    // One statement per shape, so each is answered in index order (`runs_app_queued`,
    // `runs_app_status`) without sorting; `?2 IS NULL OR …` forms defeat the index.
    let sql = format!(
        "SELECT {RUN_COLS} FROM runs WHERE application_id = ?1{}{}{}{}{}
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
        if narrow.flow.is_some() {
            " AND flow_id = ?6"
        } else {
            ""
        },
        if narrow.from.is_some() {
            " AND queued_at >= ?7"
        } else {
            ""
        },
        if narrow.to.is_some() {
            " AND queued_at < ?8"
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
    if let Some(f) = narrow.flow {
        bind(6, &f)?;
    }
    if let Some(f) = narrow.from {
        bind(7, &f)?;
    }
    if let Some(t) = narrow.to {
        bind(8, &t)?;
    }
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
        return Err(StoreError::Conflict(Conflict::Transition(cur.to_string())));
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

/// Applications with at least one queued run, in id order (the embedded runner's round robin).
pub fn apps_with_queued(c: &Connection) -> StoreResult<Vec<String>> {
    let mut s = c.prepare_cached(
        "SELECT DISTINCT application_id FROM runs WHERE status = 'queued' ORDER BY application_id",
    )?;
    let rows = s.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether any run is queued or running (`runs_status` index; a store where this is false has
/// nothing for the embedded runner, the queued-runs gauge or the agent time-outs).
pub fn any_active(c: &Connection) -> StoreResult<bool> {
    let mut s = c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE status IN ('queued', 'running'))",
    )?;
    Ok(s.query_row([], |r| r.get(0))?)
}

/// `(id, application_id)` of the running runs claimed by agent token `token_id` (the embedded
/// runner's orphans after a restart), oldest first.
pub fn running_claimed_by(c: &Connection, token_id: &str) -> StoreResult<Vec<(String, String)>> {
    let mut s = c.prepare_cached(
        "SELECT id, application_id FROM runs WHERE status = 'running' AND agent_token_id = ?1 ORDER BY started_at, id",
    )?;
    let rows = s.query_map([token_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Queued runs per application (`flowguard_runs_queued`).
pub fn queued_per_app(c: &Connection) -> StoreResult<Vec<(String, i64)>> {
    let mut s = c.prepare_cached(
        "SELECT application_id, count(*) FROM runs WHERE status = 'queued' GROUP BY application_id ORDER BY application_id",
    )?;
    let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// End running run `id` as `error` with reason `runner_error` (the browser crashed, could not
/// start or lost its DevTools connection), and — unless it already is a retry — queue one retry
/// `retry_id` of the same flow version, trigger and triggerer, in the same transaction. Returns
/// the ended run and the retry. `Conflict::Transition` when the run is not running.
pub fn end_with_runner_error(
    c: &mut Connection,
    id: &str,
    error: Option<&str>,
    ev: &NewAuditEvent,
    retry_id: &str,
    retry_ev: &NewAuditEvent,
) -> StoreResult<(RunRow, Option<RunRow>)> {
    let tx = write_tx(c)?;
    let cur: RunRow = tx
        .query_row(
            &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
            [id],
            run_from_row,
        )
        .optional()?
        .ok_or(StoreError::NotFound)?;
    if cur.status != "running" {
        return Err(StoreError::Conflict(Conflict::Transition(cur.status)));
    }
    tx.execute(
        "UPDATE runs SET status = 'error', reason = 'runner_error', error = ?2, finished_at = ?3 WHERE id = ?1",
        params![id, error, now_rfc3339()],
    )?;
    audit::append(&tx, ev)?;
    let retry = if cur.retry_of.is_none() {
        tx.execute(
            "INSERT INTO runs (id, flow_id, application_id, flow_version, status, trigger, triggered_by, queued_at, retry_of)
             VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8)",
            params![
                retry_id,
                cur.flow_id,
                cur.application_id,
                cur.flow_version,
                cur.trigger,
                cur.triggered_by,
                now_rfc3339(),
                id
            ],
        )?;
        audit::append(&tx, retry_ev)?;
        Some(tx.query_row(
            &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
            [retry_id],
            run_from_row,
        )?)
    } else {
        None
    };
    let ended = tx.query_row(
        &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
        [id],
        run_from_row,
    )?;
    tx.commit()?;
    Ok((ended, retry))
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
#[derive(Debug, Clone)]
pub struct AiCall {
    /// Model asked.
    pub model: String,
    /// Request bytes sent (0 when refused before sending).
    pub bytes_sent: i64,
    /// Milliseconds until the reply (or the failure).
    pub latency_ms: i64,
    /// `verdict`, `invalid_reply`, `http_error`, `timeout`, `redirect_refused`,
    /// `egress_denied`, `tls_failed` or `connect_failed`.
    pub outcome: String,
    /// Why there is no verdict (absent when `outcome` is `verdict`).
    pub error: Option<String>,
    /// When (RFC 3339, UTC).
    pub evaluated_at: String,
}

/// A step result: what the agent reported and, for checkpoints, the AI verdict.
#[derive(Debug, Clone)]
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
    pub console: Option<serde_json::Value>,
    /// Network summary (scrubbed JSON).
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
    // A savepoint inside a group commit (`TenantStores::write_grouped`), else its own
    // transaction.
    let tx = write_tx_nested(c)?;
    let st: String = tx
        .prepare_cached("SELECT status FROM runs WHERE id = ?1")?
        .query_row([run_id], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    if st != "running" {
        return Err(StoreError::Conflict(Conflict::Transition(st.to_string())));
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
    let mut s = c.prepare_cached(&format!(
        "SELECT {STEP_COLS} FROM run_steps s WHERE s.run_id = ?1 ORDER BY s.idx"
    ))?;
    let rows = s.query_map([run_id], step_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------- retention

/// Delete finished runs (`passed`, `failed`, `cancelled`) that finished (or, without a finish
/// time, were queued) before `cutoff` (RFC 3339 UTC, millisecond form), with their steps and
/// screenshot rows, inside the caller's transaction. Queued and running runs stay.
pub fn purge_runs_in(tx: &rusqlite::Transaction<'_>, cutoff: &str) -> StoreResult<PurgedRuns> {
    cascade::delete_runs_in(
        tx,
        "status IN ('passed','failed','cancelled') AND coalesce(finished_at, queued_at) < ?1",
        cutoff,
    )
}
