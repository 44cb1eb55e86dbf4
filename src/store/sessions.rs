//! Tenant-store SQL for member sessions: table `sessions` (cookie digest, CSRF digest, unix-second
//! timestamps). [`SessionRow`] is also the row of the catalog's `platform_sessions`
//! (`catalog.rs` imports it from here).

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreResult;

/// A stored session (catalog or tenant): owner id, CSRF digest and unix-second timestamps.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// User or admin id.
    pub subject_id: String,
    /// SHA-256 of the CSRF token.
    pub csrf_hash: String,
    /// Created (unix seconds).
    pub created_at: i64,
    /// Last use (unix seconds).
    pub last_seen: i64,
}

/// Store a session.
pub fn insert_session(
    c: &Connection,
    id_hash: &str,
    user_id: &str,
    csrf_hash: &str,
    now: i64,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO sessions (id_hash, user_id, csrf_hash, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![id_hash, user_id, csrf_hash, now],
    )?;
    Ok(())
}

/// Look up a session.
pub fn session(c: &Connection, id_hash: &str) -> StoreResult<Option<SessionRow>> {
    // Cached statements (here and in the other per-request lookups): parsing the SQL again on
    // every request was a visible share of the authenticated request in the P2 profile.
    Ok(c.prepare_cached(
        "SELECT user_id, csrf_hash, created_at, last_seen FROM sessions WHERE id_hash = ?1",
    )?
    .query_row([id_hash], |r| {
        Ok(SessionRow {
            subject_id: r.get(0)?,
            csrf_hash: r.get(1)?,
            created_at: r.get(2)?,
            last_seen: r.get(3)?,
        })
    })
    .optional()?)
}

/// Refresh `last_seen`.
pub fn touch_session(c: &Connection, id_hash: &str, now: i64) -> StoreResult<()> {
    c.execute(
        "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1",
        params![id_hash, now],
    )?;
    Ok(())
}

/// Delete a session.
pub fn delete_session(c: &Connection, id_hash: &str) -> StoreResult<()> {
    c.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
    Ok(())
}
