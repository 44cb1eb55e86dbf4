//! Tenant-store SQL for ticket integrations (issue 20): tables `integrations` (one per
//! application; the tracker token held only as an envelope ciphertext, sealed by the service,
//! its write checking the DEK fence in the same transaction), `tickets` (the tickets FlowGuard
//! filed or is filing, at most one **open** per application and failure signature) and
//! `ticket_outbox` (one row per delivery to the tracker: create, comment or recovery comment,
//! `pending → filed | failed`, with attempts and the next attempt's unix time).
//!
//! Rows go away with their application (`ON DELETE CASCADE`) and outbox rows with their run.

use rusqlite::{params, Connection, OptionalExtension};

use super::{audit, fence, write_tx, StoreResult};
use crate::audit::NewAuditEvent;
use crate::domain::now_rfc3339;

/// An application's integration as stored.
#[derive(Debug, Clone)]
pub struct IntegrationRow {
    /// Application.
    pub application_id: String,
    /// `jira|github|gitlab|azure-devops`.
    pub provider: String,
    /// `https://` base URL.
    pub base_url: String,
    /// Project key / `owner/repo` / project id or path / project name.
    pub project: String,
    /// Jira Cloud e-mail (Basic auth with the token).
    pub email: Option<String>,
    /// Envelope ciphertext of the token (AAD: tenant, `integrations`, application id, `token`).
    pub token: Vec<u8>,
    /// PEM CA bundle replacing the public roots.
    pub ca_pem: Option<String>,
    /// When the token expires (RFC 3339), as told by the user.
    pub token_expires_at: Option<String>,
    /// JSON array of labels.
    pub labels: String,
    /// JSON object of extra tracker fields.
    pub fields: String,
    /// JSON object of the filing rules.
    pub rules: String,
    /// Set when the tracker answered 401 (cleared by a new token or a successful call).
    pub auth_failed_at: Option<String>,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Who changed it.
    pub updated_by: String,
}

const INT_COLS: &str = "application_id, provider, base_url, project, email, token, ca_pem, token_expires_at, labels, fields, rules, auth_failed_at, updated_at, updated_by";

fn int_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IntegrationRow> {
    Ok(IntegrationRow {
        application_id: r.get(0)?,
        provider: r.get(1)?,
        base_url: r.get(2)?,
        project: r.get(3)?,
        email: r.get(4)?,
        token: r.get(5)?,
        ca_pem: r.get(6)?,
        token_expires_at: r.get(7)?,
        labels: r.get(8)?,
        fields: r.get(9)?,
        rules: r.get(10)?,
        auth_failed_at: r.get(11)?,
        updated_at: r.get(12)?,
        updated_by: r.get(13)?,
    })
}

/// The integration of application `app`, if any.
pub fn integration(c: &Connection, app: &str) -> StoreResult<Option<IntegrationRow>> {
    Ok(c.query_row(
        &format!("SELECT {INT_COLS} FROM integrations WHERE application_id = ?1"),
        [app],
        int_from_row,
    )
    .optional()?)
}

/// Every integration of the tenant (for notifications).
pub fn integrations(c: &Connection) -> StoreResult<Vec<IntegrationRow>> {
    let mut st = c.prepare(&format!(
        "SELECT {INT_COLS} FROM integrations ORDER BY application_id"
    ))?;
    let rows = st.query_map([], int_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether application `app` exists.
pub fn application_exists(c: &Connection, app: &str) -> StoreResult<bool> {
    Ok(c.query_row(
        "SELECT EXISTS (SELECT 1 FROM applications WHERE id = ?1)",
        [app],
        |r| r.get(0),
    )?)
}

/// Name of application `app`.
pub fn application_name(c: &Connection, app: &str) -> StoreResult<Option<String>> {
    Ok(
        c.query_row("SELECT name FROM applications WHERE id = ?1", [app], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

/// Create or replace an application's integration; audited in the same transaction. A token
/// sealed under a DEK below the rotation fence → `Conflict::KeyRotated`; an unknown application
/// → `NotFound`.
pub fn put_integration(
    c: &mut Connection,
    row: &IntegrationRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    fence::check_sealed_fence(&tx, &row.token)?;
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM applications WHERE id = ?1)",
        [&row.application_id],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(super::StoreError::NotFound);
    }
    tx.execute(
        &format!(
            "INSERT INTO integrations ({INT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12, ?13)
             ON CONFLICT (application_id) DO UPDATE SET provider = ?2, base_url = ?3, project = ?4,
                 email = ?5, token = ?6, ca_pem = ?7, token_expires_at = ?8, labels = ?9, fields = ?10,
                 rules = ?11, auth_failed_at = NULL, updated_at = ?12, updated_by = ?13"
        ),
        params![
            row.application_id,
            row.provider,
            row.base_url,
            row.project,
            row.email,
            row.token,
            row.ca_pem,
            row.token_expires_at,
            row.labels,
            row.fields,
            row.rules,
            row.updated_at,
            row.updated_by
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Remove an application's integration (and the tickets it tracks, with their pending
/// deliveries); audited only when one existed. Returns whether it existed.
pub fn delete_integration(c: &mut Connection, app: &str, ev: &NewAuditEvent) -> StoreResult<bool> {
    let tx = write_tx(c)?;
    let n = tx.execute("DELETE FROM integrations WHERE application_id = ?1", [app])?;
    if n == 1 {
        tx.execute("DELETE FROM tickets WHERE application_id = ?1", [app])?;
        audit::append(&tx, ev)?;
    }
    tx.commit()?;
    Ok(n == 1)
}

/// Record (or clear) a 401 from the tracker.
pub fn set_auth_failed(c: &Connection, app: &str, failed: bool) -> StoreResult<()> {
    c.execute(
        "UPDATE integrations SET auth_failed_at = CASE WHEN ?2 THEN COALESCE(auth_failed_at, ?3) END
          WHERE application_id = ?1",
        params![app, failed, now_rfc3339()],
    )?;
    Ok(())
}

/// An audit row on its own (e.g. `integration.test`).
pub fn append_audit(c: &mut Connection, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

// ---------------------------------------------------------------- tickets and outbox

/// A ticket FlowGuard tracks.
#[derive(Debug, Clone)]
pub struct TicketRow {
    /// Id.
    pub id: String,
    /// Application.
    pub application_id: String,
    /// Flow.
    pub flow_id: String,
    /// Failure signature (hex SHA-256 of flow, failing step, error class).
    pub signature: String,
    /// Tracker's id (Jira id, GitHub/GitLab issue number, work item id).
    pub remote_id: Option<String>,
    /// Display key (`ED-24`, `#12`, …), once filed.
    pub key: Option<String>,
    /// Browser URL, once filed.
    pub url: Option<String>,
    /// Open (a repeat comments on it instead of filing another).
    pub open: bool,
    /// Unix time of the last comment queued on it.
    pub last_comment_at: Option<i64>,
}

const TICKET_COLS: &str =
    "id, application_id, flow_id, signature, remote_id, key, url, open, last_comment_at";

fn ticket_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TicketRow> {
    Ok(TicketRow {
        id: r.get(0)?,
        application_id: r.get(1)?,
        flow_id: r.get(2)?,
        signature: r.get(3)?,
        remote_id: r.get(4)?,
        key: r.get(5)?,
        url: r.get(6)?,
        open: r.get(7)?,
        last_comment_at: r.get(8)?,
    })
}

/// The open ticket of `app` for `signature`.
pub fn open_ticket(c: &Connection, app: &str, signature: &str) -> StoreResult<Option<TicketRow>> {
    Ok(c.query_row(
        &format!("SELECT {TICKET_COLS} FROM tickets WHERE application_id = ?1 AND signature = ?2 AND open = 1"),
        params![app, signature],
        ticket_from_row,
    )
    .optional()?)
}

/// Open tickets of a flow.
pub fn open_tickets_of_flow(c: &Connection, flow: &str) -> StoreResult<Vec<TicketRow>> {
    let mut st = c.prepare(&format!(
        "SELECT {TICKET_COLS} FROM tickets WHERE flow_id = ?1 AND open = 1 ORDER BY created_at"
    ))?;
    let rows = st.query_map([flow], ticket_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// One ticket.
pub fn ticket(c: &Connection, id: &str) -> StoreResult<Option<TicketRow>> {
    Ok(c.query_row(
        &format!("SELECT {TICKET_COLS} FROM tickets WHERE id = ?1"),
        [id],
        ticket_from_row,
    )
    .optional()?)
}

/// One delivery of the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Id.
    pub id: String,
    /// The run it is about.
    pub run_id: String,
    /// Application.
    pub application_id: String,
    /// The ticket created or commented on.
    pub ticket_id: String,
    /// `create|comment|recovery`.
    pub kind: String,
    /// `pending|filed|failed`.
    pub status: String,
    /// Title (create).
    pub title: String,
    /// Body or comment text (secrets scrubbed).
    pub body: String,
    /// Masked screenshot to attach (object id).
    pub screenshot_id: Option<String>,
    /// Calls made so far.
    pub attempts: i64,
    /// Unix time of the next attempt (pending rows).
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

const OUT_COLS: &str = "id, run_id, application_id, ticket_id, kind, status, title, body, screenshot_id, attempts, next_attempt_at, error";

fn out_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        application_id: r.get(2)?,
        ticket_id: r.get(3)?,
        kind: r.get(4)?,
        status: r.get(5)?,
        title: r.get(6)?,
        body: r.get(7)?,
        screenshot_id: r.get(8)?,
        attempts: r.get(9)?,
        next_attempt_at: r.get(10)?,
        error: r.get(11)?,
    })
}

/// What to queue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Outbox id.
    pub id: String,
    /// Run.
    pub run_id: String,
    /// Application.
    pub application_id: String,
    /// Flow.
    pub flow_id: String,
    /// Failure signature.
    pub signature: String,
    /// `create|comment|recovery`.
    pub kind: &'static str,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Screenshot object id.
    pub screenshot_id: Option<String>,
}

/// Queue a delivery in one transaction: a `create` opens a new ticket row (id `ticket_id`);
/// a comment refers to `ticket_id` and stamps its `last_comment_at`; a recovery also closes it.
/// Audited when `ev` is given.
pub fn enqueue(
    c: &mut Connection,
    d: &NewDelivery,
    ticket_id: &str,
    now: i64,
    ev: Option<&NewAuditEvent>,
) -> StoreResult<OutboxRow> {
    let tx = write_tx(c)?;
    let ts = now_rfc3339();
    match d.kind {
        "create" => {
            tx.execute(
                "INSERT INTO tickets (id, application_id, flow_id, signature, open, created_at)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                params![ticket_id, d.application_id, d.flow_id, d.signature, ts],
            )?;
        }
        "recovery" => {
            tx.execute(
                "UPDATE tickets SET open = 0, last_comment_at = ?2 WHERE id = ?1",
                params![ticket_id, now],
            )?;
        }
        _ => {
            tx.execute(
                "UPDATE tickets SET last_comment_at = ?2 WHERE id = ?1",
                params![ticket_id, now],
            )?;
        }
    }
    tx.execute(
        "INSERT INTO ticket_outbox (id, run_id, application_id, ticket_id, kind, status, title, body,
             screenshot_id, attempts, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, 0, ?9, ?10, ?10)",
        params![
            d.id,
            d.run_id,
            d.application_id,
            ticket_id,
            d.kind,
            d.title,
            d.body,
            d.screenshot_id,
            now,
            ts
        ],
    )?;
    if let Some(ev) = ev {
        audit::append(&tx, ev)?;
    }
    let row = tx.query_row(
        &format!("SELECT {OUT_COLS} FROM ticket_outbox WHERE id = ?1"),
        [&d.id],
        out_from_row,
    )?;
    tx.commit()?;
    Ok(row)
}

/// Close a ticket locally without a comment (a pass when recovery comments are off).
pub fn close_ticket(c: &Connection, id: &str) -> StoreResult<()> {
    c.execute("UPDATE tickets SET open = 0 WHERE id = ?1", [id])?;
    Ok(())
}

/// The latest delivery about `run`.
pub fn latest_for_run(c: &Connection, run: &str) -> StoreResult<Option<OutboxRow>> {
    Ok(c.query_row(
        &format!("SELECT {OUT_COLS} FROM ticket_outbox WHERE run_id = ?1 ORDER BY created_at DESC, rowid DESC LIMIT 1"),
        [run],
        out_from_row,
    )
    .optional()?)
}

/// Ids of pending deliveries due at `now`, oldest first (at most `limit`).
pub fn due(c: &Connection, now: i64, limit: u32) -> StoreResult<Vec<String>> {
    let mut st = c.prepare(
        "SELECT id FROM ticket_outbox WHERE status = 'pending' AND next_attempt_at <= ?1
          ORDER BY next_attempt_at, rowid LIMIT ?2",
    )?;
    let rows = st.query_map(params![now, limit], |r| r.get(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Earliest next attempt among pending deliveries.
pub fn next_due(c: &Connection) -> StoreResult<Option<i64>> {
    Ok(c.query_row(
        "SELECT MIN(next_attempt_at) FROM ticket_outbox WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )?)
}

/// Claim a due pending delivery for one attempt: its next attempt moves to `lease_until`, so a
/// second worker does not take it meanwhile (a crash mid-call retries after the lease). `None`
/// when it is not pending or not due.
pub fn claim(
    c: &Connection,
    id: &str,
    now: i64,
    lease_until: i64,
) -> StoreResult<Option<OutboxRow>> {
    let n = c.execute(
        "UPDATE ticket_outbox SET next_attempt_at = ?3
          WHERE id = ?1 AND status = 'pending' AND next_attempt_at <= ?2",
        params![id, now, lease_until],
    )?;
    if n == 0 {
        return Ok(None);
    }
    Ok(c.query_row(
        &format!("SELECT {OUT_COLS} FROM ticket_outbox WHERE id = ?1"),
        [id],
        out_from_row,
    )
    .optional()?)
}

/// Outcome of one attempt.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// Filed: the ticket's tracker id, key and URL (set on a create).
    Filed {
        /// Tracker id, key and URL of a created ticket (`None` for a comment).
        created: Option<(String, String, String)>,
        /// A note (e.g. the attachment could not be added).
        note: Option<String>,
    },
    /// Try again at this unix time.
    Retry {
        /// Why.
        error: String,
        /// When.
        at: i64,
    },
    /// Given up.
    Failed {
        /// Why.
        error: String,
    },
}

/// Record an attempt (attempts + 1) and its audit row in one transaction. A failed create
/// closes its ticket row, so a later failure files again.
pub fn record_attempt(
    c: &mut Connection,
    row: &OutboxRow,
    a: &Attempt,
    ev: Option<&NewAuditEvent>,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let ts = now_rfc3339();
    match a {
        Attempt::Filed { created, note } => {
            tx.execute(
                "UPDATE ticket_outbox SET status = 'filed', attempts = attempts + 1, error = ?2, updated_at = ?3 WHERE id = ?1",
                params![row.id, note, ts],
            )?;
            if let Some((rid, key, url)) = created {
                tx.execute(
                    "UPDATE tickets SET remote_id = ?2, key = ?3, url = ?4 WHERE id = ?1",
                    params![row.ticket_id, rid, key, url],
                )?;
            }
        }
        Attempt::Retry { error, at } => {
            tx.execute(
                "UPDATE ticket_outbox SET attempts = attempts + 1, error = ?2, next_attempt_at = ?3, updated_at = ?4 WHERE id = ?1",
                params![row.id, error, at, ts],
            )?;
        }
        Attempt::Failed { error } => {
            tx.execute(
                "UPDATE ticket_outbox SET status = 'failed', attempts = attempts + 1, error = ?2, updated_at = ?3 WHERE id = ?1",
                params![row.id, error, ts],
            )?;
            if row.kind == "create" {
                tx.execute(
                    "UPDATE tickets SET open = 0 WHERE id = ?1",
                    [&row.ticket_id],
                )?;
            }
        }
    }
    if let Some(ev) = ev {
        audit::append(&tx, ev)?;
    }
    tx.commit()?;
    Ok(())
}

/// Status of the delivery that creates ticket `ticket_id` (`None` when there is none).
pub fn create_status(c: &Connection, ticket_id: &str) -> StoreResult<Option<String>> {
    Ok(c.query_row(
        "SELECT status FROM ticket_outbox WHERE ticket_id = ?1 AND kind = 'create'
          ORDER BY created_at DESC, rowid DESC LIMIT 1",
        [ticket_id],
        |r| r.get(0),
    )
    .optional()?)
}

/// A deferred delivery waits for its ticket's creation: its next attempt moves to `at`
/// without counting an attempt.
pub fn defer(c: &Connection, id: &str, at: i64) -> StoreResult<()> {
    c.execute(
        "UPDATE ticket_outbox SET next_attempt_at = ?2 WHERE id = ?1 AND status = 'pending'",
        params![id, at],
    )?;
    Ok(())
}

/// A finished run as the filing rule sees it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `passed|failed`.
    pub status: String,
    /// Reason of the final status.
    pub reason: Option<String>,
    /// Whether a step of it is `failed`.
    pub failed_step: bool,
}

/// Runs of `flow` that finished (`passed|failed`), newest first.
pub fn recent_finished_runs(c: &Connection, flow: &str, limit: u32) -> StoreResult<Vec<Finished>> {
    let mut st = c.prepare(
        "SELECT status, reason,
                EXISTS (SELECT 1 FROM run_steps s WHERE s.run_id = runs.id AND s.status = 'failed')
           FROM runs WHERE flow_id = ?1 AND status IN ('passed','failed')
          ORDER BY COALESCE(finished_at, queued_at) DESC, rowid DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![flow, limit], |r| {
        Ok(Finished {
            status: r.get(0)?,
            reason: r.get(1)?,
            failed_step: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The latest failed run of an application's flows.
pub fn latest_failed_run(c: &Connection, app: &str) -> StoreResult<Option<String>> {
    Ok(c.query_row(
        "SELECT id FROM runs WHERE application_id = ?1 AND status = 'failed'
          ORDER BY COALESCE(finished_at, queued_at) DESC, rowid DESC LIMIT 1",
        [app],
        |r| r.get(0),
    )
    .optional()?)
}

/// A flow's name at `version`.
pub fn flow_name(c: &Connection, flow: &str, version: i64) -> StoreResult<Option<String>> {
    Ok(c.query_row(
        "SELECT name FROM flow_versions WHERE flow_id = ?1 AND version = ?2",
        params![flow, version],
        |r| r.get(0),
    )
    .optional()?)
}
