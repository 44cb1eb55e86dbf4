//! Tenant-store SQL for members: table `users` (local, LDAP and SCIM members alike), the
//! last-owner rule and the active-user limit ([`check_user_limit`], also checked by the SCIM and
//! directory provisioning in `scim.rs` and `ldap.rs`). Changing a password also ends the member's
//! other `sessions` rows in the same transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::{audit, write_tx, Conflict, StoreError, StoreResult};
use crate::audit::NewAuditEvent;

/// A tenant member.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Id (UUID).
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// `owner|admin|tester|viewer`.
    pub role: String,
    /// `local`, `ldap` or `scim`.
    pub source: String,
    /// May log in.
    pub active: bool,
    /// The one-time password must be changed.
    pub must_change_password: bool,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Updated (RFC 3339).
    pub updated_at: String,
    /// PHC hash; never serialised.
    pub password_hash: Option<String>,
}

const USER_COLS: &str =
    "id, email, display_name, role, source, active, must_change_password, created_at, updated_at, password_hash";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        email: r.get(1)?,
        display_name: r.get(2)?,
        role: r.get(3)?,
        source: r.get(4)?,
        active: r.get(5)?,
        must_change_password: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        password_hash: r.get(9)?,
    })
}

/// Insert a user; `ev` (if any) is audited in the same transaction. Duplicate email → Conflict.
pub fn insert_user(c: &mut Connection, u: &UserRow, ev: Option<&NewAuditEvent>) -> StoreResult<()> {
    insert_user_within(c, u, None, ev)
}

/// Insert a user if the tenant has fewer than `max_users` active users (None = unlimited),
/// counted inside the same `BEGIN IMMEDIATE` transaction so concurrent inserts cannot overshoot.
/// Over the limit → `Conflict("user_limit")`; duplicate email → `Conflict`.
pub fn insert_user_within(
    c: &mut Connection,
    u: &UserRow,
    max_users: Option<u32>,
    ev: Option<&NewAuditEvent>,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if u.active {
        check_user_limit(&tx, max_users)?;
    }
    tx.execute(
        "INSERT INTO users (id, email, display_name, role, password_hash, source, active, must_change_password, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![u.id, u.email, u.display_name, u.role, u.password_hash, u.source, u.active, u.must_change_password, u.created_at, u.updated_at],
    )?;
    if let Some(ev) = ev {
        audit::append(&tx, ev)?;
    }
    tx.commit()?;
    Ok(())
}

/// Refuse with `Conflict("user_limit")` when the tenant already has `max_users` active users
/// (None = unlimited). Call it inside the write transaction that adds or activates a user, so
/// concurrent requests cannot overshoot (they serialise on `BEGIN IMMEDIATE`).
pub fn check_user_limit(c: &Connection, max_users: Option<u32>) -> StoreResult<()> {
    if let Some(max) = max_users {
        let n: i64 = c.query_row("SELECT count(*) FROM users WHERE active = 1", [], |r| {
            r.get(0)
        })?;
        if n >= i64::from(max) {
            return Err(StoreError::Conflict(Conflict::UserLimit));
        }
    }
    Ok(())
}

/// Find a user by email (case-insensitive).
pub fn user_by_email(c: &Connection, email: &str) -> StoreResult<Option<UserRow>> {
    Ok(c.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE email = ?1"),
        [email],
        user_from_row,
    )
    .optional()?)
}

/// Find a user by id.
pub fn user_by_id(c: &Connection, id: &str) -> StoreResult<Option<UserRow>> {
    Ok(
        c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
            .query_row([id], user_from_row)
            .optional()?,
    )
}

/// All users by email.
pub fn list_users(c: &Connection) -> StoreResult<Vec<UserRow>> {
    let mut s = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY email"))?;
    let rows = s.query_map([], user_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Count active owners.
pub fn count_active_owners(c: &Connection) -> StoreResult<i64> {
    Ok(c.query_row(
        "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
        [],
        |r| r.get(0),
    )?)
}

/// Change a user's role inside a transaction that re-checks the last-owner rule.
/// Returns `Conflict("last_owner")` when it would leave no active owner.
pub fn set_user_role(
    c: &mut Connection,
    id: &str,
    role: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "UPDATE users SET role = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, role, crate::domain::now_rfc3339()],
    )?;
    let owners: i64 = tx.query_row(
        "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
        [],
        |r| r.get(0),
    )?;
    if owners == 0 {
        return Err(StoreError::Conflict(Conflict::LastOwner));
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Delete a user (sessions cascade) inside a transaction that re-checks the last-owner rule.
pub fn delete_user(c: &mut Connection, id: &str, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    let owners: i64 = tx.query_row(
        "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
        [],
        |r| r.get(0),
    )?;
    if owners == 0 {
        return Err(StoreError::Conflict(Conflict::LastOwner));
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Set a user's password, drop their other sessions, audit.
pub fn set_user_password(
    c: &mut Connection,
    id: &str,
    hash: &str,
    keep_session: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "UPDATE users SET password_hash = ?2, must_change_password = 0, updated_at = ?3 WHERE id = ?1",
        params![id, hash, crate::domain::now_rfc3339()],
    )?;
    tx.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND id_hash <> ?2",
        params![id, keep_session],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}
