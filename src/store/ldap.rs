//! Tenant-store SQL for directory login: the tenant's LDAP configuration (one row; secrets as
//! envelope ciphertexts) and the link between a directory entry and a tenant member
//! (`ldap_identities`), plus the login-time provisioning transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::tenant::{self, UserRow};
use super::{audit, write_tx, StoreResult};
use crate::audit::NewAuditEvent;

/// Table name used in the envelope AAD of the secrets below.
pub const CONFIG_TABLE: &str = "ldap_config";
/// Row id of the single configuration row (also in the AAD).
pub const CONFIG_ROW: &str = "1";

/// The stored configuration row.
#[derive(Debug, Clone)]
pub struct ConfigRow {
    /// JSON of `auth::ldap::LdapConfig`.
    pub config: String,
    /// Envelope ciphertext of the bind password.
    pub bind_password: Vec<u8>,
    /// Envelope ciphertext of the client key, if any.
    pub client_key: Option<Vec<u8>>,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Email of who changed it.
    pub updated_by: String,
}

/// Read the configuration row.
pub fn config(c: &Connection) -> StoreResult<Option<ConfigRow>> {
    Ok(c.query_row(
        "SELECT config, bind_password, client_key, updated_at, updated_by FROM ldap_config WHERE id = 1",
        [],
        |r| {
            Ok(ConfigRow {
                config: r.get(0)?,
                bind_password: r.get(1)?,
                client_key: r.get(2)?,
                updated_at: r.get(3)?,
                updated_by: r.get(4)?,
            })
        },
    )
    .optional()?)
}

/// Replace the configuration row and audit, in one transaction.
pub fn put_config(c: &mut Connection, row: &ConfigRow, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "INSERT INTO ldap_config (id, config, bind_password, client_key, updated_at, updated_by)
         VALUES (1, ?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET config = ?1, bind_password = ?2, client_key = ?3,
             updated_at = ?4, updated_by = ?5",
        params![
            row.config,
            row.bind_password,
            row.client_key,
            row.updated_at,
            row.updated_by
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// What the directory says about the member logging in.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    /// DN as returned.
    pub dn: String,
    /// Normalised DN (the identity key).
    pub dn_key: String,
    /// Login name as typed.
    pub username: String,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Mapped role (`owner|admin|tester|viewer`).
    pub role: String,
}

/// A new session to store with the login.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the session id.
    pub id_hash: String,
    /// SHA-256 of the CSRF token.
    pub csrf_hash: String,
    /// Unix seconds.
    pub now: i64,
}

/// Outcome of [`provision_login`].
#[derive(Debug, Clone)]
pub enum Provisioned {
    /// Session stored. `previous_role` is `None` for a new member.
    Ok {
        /// The member after the update.
        user: Box<UserRow>,
        /// Role before this login (`None` = created now).
        previous_role: Option<String>,
    },
    /// The linked member is disabled.
    Disabled,
    /// The email belongs to a member that is not an LDAP member, or to another LDAP member.
    EmailConflict,
    /// The update would leave the tenant without an active Owner.
    LastOwner,
}

/// The member linked to a directory entry, by normalised DN.
pub fn user_by_dn_key(c: &Connection, dn_key: &str) -> StoreResult<Option<UserRow>> {
    let id: Option<String> = c
        .query_row(
            "SELECT user_id FROM ldap_identities WHERE dn_key = ?1",
            [dn_key],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => tenant::user_by_id(c, &id),
        None => Ok(None),
    }
}

/// Create or update the member for a successful directory login, link the entry, store the
/// session and append the audit rows `events(user, previous_role)` — all in one transaction.
/// A member is found by its directory link, else by email when that member is an LDAP member
/// (entry renamed or moved); a local or SCIM member with the same email is never taken over.
pub fn provision_login<F>(
    c: &mut Connection,
    d: &DirectoryUser,
    session: &NewSession,
    events: F,
) -> StoreResult<Provisioned>
where
    F: FnOnce(&UserRow, Option<&str>) -> Vec<NewAuditEvent>,
{
    let tx = write_tx(c)?;
    let now = crate::domain::now_rfc3339();
    let linked = user_by_dn_key(&tx, &d.dn_key)?;
    let by_email = tenant::user_by_email(&tx, &d.email)?;
    let existing = match (linked, by_email) {
        (Some(u), Some(other)) if other.id != u.id => return Ok(Provisioned::EmailConflict),
        (Some(u), _) => Some(u),
        (None, Some(u)) if u.source == "ldap" => Some(u),
        (None, Some(_)) => return Ok(Provisioned::EmailConflict),
        (None, None) => None,
    };
    let (user, previous_role) = match existing {
        Some(u) => {
            if !u.active {
                return Ok(Provisioned::Disabled);
            }
            tx.execute(
                "UPDATE users SET email = ?2, display_name = ?3, role = ?4, updated_at = ?5 WHERE id = ?1",
                params![u.id, d.email, d.display_name, d.role, now],
            )?;
            let owners: i64 = tx.query_row(
                "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
                [],
                |r| r.get(0),
            )?;
            if owners == 0 {
                return Ok(Provisioned::LastOwner);
            }
            let prev = u.role.clone();
            let updated = UserRow {
                email: d.email.clone(),
                display_name: d.display_name.clone(),
                role: d.role.clone(),
                updated_at: now.clone(),
                ..u
            };
            (updated, Some(prev))
        }
        None => {
            let u = UserRow {
                id: crate::domain::new_object_id(),
                email: d.email.clone(),
                display_name: d.display_name.clone(),
                role: d.role.clone(),
                source: "ldap".into(),
                active: true,
                must_change_password: false,
                created_at: now.clone(),
                updated_at: now.clone(),
                password_hash: None,
            };
            tx.execute(
                "INSERT INTO users (id, email, display_name, role, password_hash, source, active, must_change_password, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, NULL, 'ldap', 1, 0, ?5, ?5)",
                params![u.id, u.email, u.display_name, u.role, now],
            )?;
            (u, None)
        }
    };
    tx.execute(
        "INSERT INTO ldap_identities (user_id, dn_key, dn, username, last_login_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id) DO UPDATE SET dn_key = ?2, dn = ?3, username = ?4, last_login_at = ?5",
        params![user.id, d.dn_key, d.dn, d.username, now],
    )?;
    tx.execute(
        "INSERT INTO sessions (id_hash, user_id, csrf_hash, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![session.id_hash, user.id, session.csrf_hash, session.now],
    )?;
    for ev in events(&user, previous_role.as_deref()) {
        audit::append(&tx, &ev)?;
    }
    tx.commit()?;
    Ok(Provisioned::Ok {
        user: Box::new(user),
        previous_role,
    })
}

/// The directory no longer grants access: end the linked member's sessions and audit, in one
/// transaction. Returns how many sessions ended.
pub fn revoke_linked_sessions(
    c: &mut Connection,
    dn_key: &str,
    events: &[NewAuditEvent],
) -> StoreResult<usize> {
    let tx = write_tx(c)?;
    let n = match user_by_dn_key(&tx, dn_key)? {
        Some(u) => tx.execute("DELETE FROM sessions WHERE user_id = ?1", [&u.id])?,
        None => 0,
    };
    for ev in events {
        audit::append(&tx, ev)?;
    }
    tx.commit()?;
    Ok(n)
}
