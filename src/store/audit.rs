//! SQL for the `audit` table shared by the catalog and tenant stores (same shape, separate
//! chains). Appends run inside the caller's transaction so the row commits with the change.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::audit::{chain_hash, AuditRecord, NewAuditEvent, GENESIS_HASH};
use crate::domain::{new_object_id, now_rfc3339};

use super::StoreResult;

/// Append one event to the chain inside `tx`.
pub fn append(tx: &Transaction<'_>, ev: &NewAuditEvent) -> StoreResult<()> {
    let prev: String = tx
        .query_row(
            "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| GENESIS_HASH.to_string());
    let id = new_object_id();
    let ts = now_rfc3339();
    let a = &ev.actor;
    let hash = chain_hash(
        &prev,
        &id,
        &ts,
        a.email.as_deref(),
        a.role.as_deref(),
        a.client_ip.as_deref(),
        a.user_agent.as_deref(),
        ev.action,
        ev.target.as_deref(),
        &ev.details,
    );
    tx.execute(
        "INSERT INTO audit (id, ts, actor_email, actor_role, client_ip, user_agent, action, target, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            id,
            ts,
            a.email,
            a.role,
            a.client_ip,
            a.user_agent,
            ev.action,
            ev.target,
            ev.details.to_string(),
            prev,
            hash
        ],
    )?;
    Ok(())
}

/// Filters for listing audit rows.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Inclusive lower bound (RFC 3339 UTC, normalised).
    pub from: Option<String>,
    /// Exclusive upper bound.
    pub to: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact actor email (case-insensitive).
    pub actor: Option<String>,
    /// Return rows with `seq` below this (descending paging).
    pub before_seq: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// List rows newest first.
pub fn list(conn: &rusqlite::Connection, q: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
    let mut stmt = conn.prepare(
        "SELECT seq, id, ts, actor_email, actor_role, client_ip, user_agent, action, target, details, prev_hash, hash
         FROM audit
         WHERE (?1 IS NULL OR ts >= ?1) AND (?2 IS NULL OR ts < ?2)
           AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR actor_email = ?4 COLLATE NOCASE)
           AND (?5 IS NULL OR seq < ?5)
         ORDER BY seq DESC LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![q.from, q.to, q.action, q.actor, q.before_seq, q.limit],
        row_to_record,
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Map a row selected with the column order used in [`list`].
pub fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    let details: String = r.get(9)?;
    Ok(AuditRecord {
        seq: r.get(0)?,
        id: r.get(1)?,
        ts: r.get(2)?,
        actor_email: r.get(3)?,
        actor_role: r.get(4)?,
        client_ip: r.get(5)?,
        user_agent: r.get(6)?,
        action: r.get(7)?,
        target: r.get(8)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}
