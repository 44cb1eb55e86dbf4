//! Tenant-store SQL for directory login: the tenant's LDAP configuration (one row; secrets as
//! envelope ciphertexts, fence-checked on write) and the link between a directory entry and a
//! tenant member (`ldap_identities`), plus the login-time provisioning transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::users::{self, UserRow};
use super::{audit, fence, write_tx, Conflict, StoreError, StoreResult};
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

/// Replace the configuration row and audit, in one transaction. A secret sealed under a DEK
/// version below the rotation fence → `Conflict::KeyRotated` (seal again under the current DEK
/// and retry; `service::sealing::write_sealed` does).
pub fn put_config(c: &mut Connection, row: &ConfigRow, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    fence::check_sealed_fence(&tx, &row.bind_password)?;
    if let Some(ct) = &row.client_key {
        fence::check_sealed_fence(&tx, ct)?;
    }
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
    /// A new member would exceed the license's active-user limit.
    UserLimit,
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
        Some(id) => users::user_by_id(c, &id),
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
    max_users: Option<u32>,
    events: F,
) -> StoreResult<Provisioned>
where
    F: FnOnce(&UserRow, Option<&str>) -> Vec<NewAuditEvent>,
{
    let tx = write_tx(c)?;
    let now = crate::domain::now_rfc3339();
    let linked = user_by_dn_key(&tx, &d.dn_key)?;
    let by_email = users::user_by_email(&tx, &d.email)?;
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
            if u.role == "owner" && d.role != "owner" {
                let owners: i64 = tx.query_row(
                    "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
                    [],
                    |r| r.get(0),
                )?;
                if owners == 0 {
                    return Ok(Provisioned::LastOwner);
                }
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
            match users::check_user_limit(&tx, max_users) {
                Err(StoreError::Conflict(Conflict::UserLimit)) => {
                    return Ok(Provisioned::UserLimit)
                }
                other => other?,
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrations::tenant()
            .to_latest(&mut c)
            .unwrap();
        c
    }

    fn local(c: &mut Connection, email: &str, role: &str, active: bool) -> UserRow {
        let now = crate::domain::now_rfc3339();
        let u = UserRow {
            id: crate::domain::new_object_id(),
            email: email.into(),
            display_name: None,
            role: role.into(),
            source: "local".into(),
            active,
            must_change_password: false,
            created_at: now.clone(),
            updated_at: now,
            password_hash: Some("$argon2id$x".into()),
        };
        users::insert_user(c, &u, None).unwrap();
        u
    }

    fn dir_user(dn: &str, email: &str, role: &str) -> DirectoryUser {
        DirectoryUser {
            dn: dn.into(),
            dn_key: crate::auth::ldap::dn::key(dn).unwrap(),
            username: "u".into(),
            email: email.into(),
            display_name: Some("U".into()),
            role: role.into(),
        }
    }

    fn session(n: u8) -> NewSession {
        NewSession {
            id_hash: format!("s{n}"),
            csrf_hash: "c".into(),
            now: 1,
        }
    }

    fn login(c: &mut Connection, d: &DirectoryUser, n: u8) -> Provisioned {
        provision_login(c, d, &session(n), None, |_, _| Vec::new()).unwrap()
    }

    #[test]
    fn create_update_and_relink_after_rename() {
        let mut c = db();
        local(&mut c, "owner@x", "owner", true);
        let d = dir_user("uid=a,ou=p,dc=x", "a@x", "viewer");
        let Provisioned::Ok {
            user,
            previous_role,
        } = login(&mut c, &d, 1)
        else {
            panic!("not provisioned")
        };
        assert_eq!(previous_role, None);
        assert_eq!(user.source, "ldap");
        // Same entry, new role: updated in place.
        let d2 = dir_user("UID=a, ou=P,dc=x", "a@x", "admin");
        let Provisioned::Ok {
            user: u2,
            previous_role,
        } = login(&mut c, &d2, 2)
        else {
            panic!("not provisioned")
        };
        assert_eq!(u2.id, user.id);
        assert_eq!(previous_role.as_deref(), Some("viewer"));
        // Entry moved (new DN), same email: relinked, not duplicated.
        let d3 = dir_user("uid=a,ou=moved,dc=x", "a@x", "admin");
        let Provisioned::Ok { user: u3, .. } = login(&mut c, &d3, 3) else {
            panic!("not provisioned")
        };
        assert_eq!(u3.id, user.id);
        assert_eq!(users::list_users(&c).unwrap().len(), 2);
    }

    #[test]
    fn local_account_is_never_taken_over_and_disabled_stays_out() {
        let mut c = db();
        local(&mut c, "owner@x", "owner", true);
        let d = dir_user("uid=m,dc=x", "owner@x", "owner");
        assert!(matches!(login(&mut c, &d, 1), Provisioned::EmailConflict));
        assert_eq!(users::list_users(&c).unwrap().len(), 1);

        let d = dir_user("uid=b,dc=x", "b@x", "viewer");
        let Provisioned::Ok { user, .. } = login(&mut c, &d, 2) else {
            panic!("not provisioned")
        };
        c.execute("UPDATE users SET active = 0 WHERE id = ?1", [&user.id])
            .unwrap();
        assert!(matches!(login(&mut c, &d, 3), Provisioned::Disabled));
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM sessions WHERE user_id = ?1",
                [&user.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "the refused login stored a session");
    }

    #[test]
    fn directory_cannot_demote_the_last_owner() {
        let mut c = db();
        let d = dir_user("uid=o,dc=x", "o@x", "owner");
        assert!(matches!(login(&mut c, &d, 1), Provisioned::Ok { .. }));
        let d = dir_user("uid=o,dc=x", "o@x", "viewer");
        assert!(matches!(login(&mut c, &d, 2), Provisioned::LastOwner));
        assert_eq!(users::count_active_owners(&c).unwrap(), 1);
    }

    #[test]
    fn revoking_ends_linked_sessions() {
        let mut c = db();
        let d = dir_user("uid=r,dc=x", "r@x", "viewer");
        login(&mut c, &d, 1);
        login(&mut c, &d, 2);
        assert_eq!(revoke_linked_sessions(&mut c, &d.dn_key, &[]).unwrap(), 2);
        assert_eq!(revoke_linked_sessions(&mut c, "uid=none", &[]).unwrap(), 0);
    }
}
