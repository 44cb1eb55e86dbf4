//! SQL for SCIM-provisioned users (tenant store, table `users`; columns from the SCIM migration).
//! Writes run in one `BEGIN IMMEDIATE` transaction with their audit rows; a write that would
//! leave the tenant without an active Owner fails with `Conflict("last_owner")`.

use rusqlite::{params, Connection, OptionalExtension};

use super::{audit, users, write_tx, Conflict, StoreError, StoreResult};
use crate::audit::NewAuditEvent;

/// A user as SCIM sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimUserRow {
    /// Id (UUID); the SCIM `id`.
    pub id: String,
    /// `userName` (the login name, column `email`; unique without regard to ASCII case).
    pub user_name: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// May log in.
    pub active: bool,
    /// SCIM `active` is unassigned (then `active` is false).
    pub active_unset: bool,
    /// `externalId` (case-exact).
    pub external_id: Option<String>,
    /// Every other SCIM attribute, canonical JSON object text.
    pub attrs_json: String,
    /// `meta.version` counter.
    pub version: i64,
    /// Member role (`owner|admin|tester|viewer`).
    pub role: String,
    /// `local`, `ldap` or `scim`.
    pub source: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last modified (RFC 3339).
    pub updated_at: String,
}

const COLS: &str = "id, email, display_name, active, active_unset, external_id, scim_attrs, scim_version, role, source, created_at, updated_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScimUserRow> {
    Ok(ScimUserRow {
        id: r.get(0)?,
        user_name: r.get(1)?,
        display_name: r.get(2)?,
        active: r.get(3)?,
        active_unset: r.get(4)?,
        external_id: r.get(5)?,
        attrs_json: r.get(6)?,
        version: r.get(7)?,
        role: r.get(8)?,
        source: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

/// Every user, in creation order (an immutable key, so a static set pages the same way).
pub fn list_users(c: &Connection) -> StoreResult<Vec<ScimUserRow>> {
    let mut s = c.prepare(&format!("SELECT {COLS} FROM users ORDER BY created_at, id"))?;
    let rows = s.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One user by id.
pub fn user(c: &Connection, id: &str) -> StoreResult<Option<ScimUserRow>> {
    Ok(c.query_row(
        &format!("SELECT {COLS} FROM users WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()?)
}

fn owners_left(tx: &rusqlite::Transaction<'_>) -> StoreResult<()> {
    let owners: i64 = tx.query_row(
        "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
        [],
        |r| r.get(0),
    )?;
    if owners == 0 {
        return Err(StoreError::Conflict(Conflict::LastOwner));
    }
    Ok(())
}

/// Insert a provisioned user (no password: they sign in through the directory). A taken
/// `userName` → `Conflict`; an active user beyond the license's `max_users` →
/// `Conflict("user_limit")`.
pub fn insert_user(
    c: &mut Connection,
    u: &ScimUserRow,
    max_users: Option<u32>,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if u.active {
        users::check_user_limit(&tx, max_users)?;
    }
    tx.execute(
        "INSERT INTO users (id, email, display_name, role, password_hash, source, active, must_change_password,
                            created_at, updated_at, external_id, scim_attrs, scim_version, active_unset)
         VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            u.id,
            u.user_name,
            u.display_name,
            u.role,
            u.source,
            u.active,
            u.created_at,
            u.updated_at,
            u.external_id,
            u.attrs_json,
            u.version,
            u.active_unset
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Write the SCIM attributes of `u` if the stored version is still `expected_version`
/// (otherwise `Conflict("version")`; unknown id → `NotFound`). With `end_sessions` every session
/// of the user is deleted in the same transaction. Audit rows `events` are appended.
/// Activating an inactive user beyond the license's `max_users` → `Conflict("user_limit")`.
pub fn update_user(
    c: &mut Connection,
    u: &ScimUserRow,
    expected_version: i64,
    end_sessions: bool,
    max_users: Option<u32>,
    events: &[NewAuditEvent],
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if u.active {
        let was_active: Option<bool> = tx
            .query_row("SELECT active FROM users WHERE id = ?1", [&u.id], |r| {
                r.get(0)
            })
            .optional()?;
        if was_active == Some(false) {
            users::check_user_limit(&tx, max_users)?;
        }
    }
    let n = tx.execute(
        "UPDATE users SET email = ?2, display_name = ?3, active = ?4, active_unset = ?5, external_id = ?6,
                          scim_attrs = ?7, scim_version = ?8, updated_at = ?9
         WHERE id = ?1 AND scim_version = ?10",
        params![
            u.id,
            u.user_name,
            u.display_name,
            u.active,
            u.active_unset,
            u.external_id,
            u.attrs_json,
            u.version,
            u.updated_at,
            expected_version
        ],
    )?;
    if n == 0 {
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)",
            [&u.id],
            |r| r.get(0),
        )?;
        return Err(if exists {
            StoreError::Conflict(Conflict::Version)
        } else {
            StoreError::NotFound
        });
    }
    if end_sessions {
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [&u.id])?;
    }
    owners_left(&tx)?;
    for ev in events {
        audit::append(&tx, ev)?;
    }
    tx.commit()?;
    Ok(())
}

/// Delete a user (sessions cascade) if the stored version is still `expected_version`.
pub fn delete_user(
    c: &mut Connection,
    id: &str,
    expected_version: i64,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "DELETE FROM users WHERE id = ?1 AND scim_version = ?2",
        params![id, expected_version],
    )?;
    if n == 0 {
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        return Err(if exists {
            StoreError::Conflict(Conflict::Version)
        } else {
            StoreError::NotFound
        });
    }
    owners_left(&tx)?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}
