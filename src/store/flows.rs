//! Tenant-store SQL for flows: tables `flows` (with the schedule columns) and `flow_versions`
//! (immutable versions). Deleting a flow also revokes its `webhook_tokens` rows in the same
//! transaction. Write paths use `BEGIN IMMEDIATE` and append their audit row in the same
//! transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::{audit, write_tx, StoreError, StoreResult};
use crate::audit::NewAuditEvent;
use crate::domain::now_rfc3339;

/// One flow version as stored.
#[derive(Debug, Clone)]
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
    pub steps: serde_json::Value,
    /// Cron schedule (if any).
    pub schedule: Option<Schedule>,
    /// When this version was saved.
    pub created_at: String,
    /// Who saved this version.
    pub created_by: String,
}

/// A flow's schedule.
#[derive(Debug, Clone)]
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
    // Cached: read by every step report and screenshot upload (issue 25 P8).
    Ok(
        c.prepare_cached("SELECT steps FROM flow_versions WHERE flow_id = ?1 AND version = ?2")?
            .query_row(params![flow, version], |r| r.get(0))?,
    )
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
