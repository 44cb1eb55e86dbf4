//! Tenant-store SQL for OpenID Connect single sign-on (issue 21): the tenant's configuration
//! (`oidc_config`, one row; the client secret as an envelope ciphertext, fence-checked on
//! write), the link (issuer, subject) → member (`oidc_identities`), the pending sign-ins
//! (`oidc_pending`: state, nonce, PKCE verifier, browser binding; single use) and the sign-in
//! provisioning transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::users::{self, UserRow};
use super::{audit, fence, write_tx, Conflict, StoreError, StoreResult};
use crate::audit::NewAuditEvent;

/// Table name used in the envelope AAD of the client secret.
pub const CONFIG_TABLE: &str = "oidc_config";
/// Row id of the single configuration row (also in the AAD).
pub const CONFIG_ROW: &str = "1";

/// The stored configuration row.
#[derive(Debug, Clone)]
pub struct ConfigRow {
    /// JSON of `auth::oidc::OidcConfig` (no secret).
    pub config: String,
    /// Envelope ciphertext of the client secret.
    pub client_secret: Vec<u8>,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Email of who changed it.
    pub updated_by: String,
}

/// Read the configuration row.
pub fn config(c: &Connection) -> StoreResult<Option<ConfigRow>> {
    Ok(c.query_row(
        "SELECT config, client_secret, updated_at, updated_by FROM oidc_config WHERE id = 1",
        [],
        |r| {
            Ok(ConfigRow {
                config: r.get(0)?,
                client_secret: r.get(1)?,
                updated_at: r.get(2)?,
                updated_by: r.get(3)?,
            })
        },
    )
    .optional()?)
}

/// Replace the configuration row and audit, in one transaction. A secret sealed under a DEK
/// version below the rotation fence → `Conflict::KeyRotated` (`service::sealing::write_sealed`
/// seals again and retries).
pub fn put_config(c: &mut Connection, row: &ConfigRow, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    fence::check_sealed_fence(&tx, &row.client_secret)?;
    tx.execute(
        "INSERT INTO oidc_config (id, config, client_secret, updated_at, updated_by)
         VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET config = ?1, client_secret = ?2, updated_at = ?3,
             updated_by = ?4",
        params![
            row.config,
            row.client_secret,
            row.updated_at,
            row.updated_by
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Remove the configuration (and the pending sign-ins); audited only when one existed.
/// Member links stay, so a configuration saved again for the same issuer finds its members.
pub fn delete_config(c: &mut Connection, ev: &NewAuditEvent) -> StoreResult<bool> {
    let tx = write_tx(c)?;
    let n = tx.execute("DELETE FROM oidc_config WHERE id = 1", [])?;
    tx.execute("DELETE FROM oidc_pending", [])?;
    if n == 1 {
        audit::append(&tx, ev)?;
    }
    tx.commit()?;
    Ok(n == 1)
}

/// A pending sign-in (between `start` and `callback`).
#[derive(Debug, Clone)]
pub struct Pending {
    /// SHA-256 (hex) of the `state` parameter.
    pub state_hash: String,
    /// SHA-256 (hex) of the browser-binding cookie value.
    pub binding_hash: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE `code_verifier`.
    pub verifier: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Store a pending sign-in; rows older than `purge_before` (unix seconds) go in the same
/// transaction.
pub fn insert_pending(c: &mut Connection, p: &Pending, purge_before: i64) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "DELETE FROM oidc_pending WHERE created_at < ?1",
        [purge_before],
    )?;
    tx.execute(
        "INSERT INTO oidc_pending (state_hash, binding_hash, nonce, verifier, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            p.state_hash,
            p.binding_hash,
            p.nonce,
            p.verifier,
            p.created_at
        ],
    )?;
    tx.commit()?;
    Ok(())
}

/// What [`take_pending`] found.
#[derive(Debug, Clone)]
pub enum Taken {
    /// No such state (never issued, or purged).
    Unknown,
    /// The state was used before.
    Reused,
    /// First use: now marked used.
    Fresh(Pending),
}

/// Mark the pending sign-in of `state_hash` used (single use) and return it.
pub fn take_pending(c: &mut Connection, state_hash: &str, now: i64) -> StoreResult<Taken> {
    let tx = write_tx(c)?;
    let row = tx
        .query_row(
            "SELECT state_hash, binding_hash, nonce, verifier, created_at, used_at
               FROM oidc_pending WHERE state_hash = ?1",
            [state_hash],
            |r| {
                Ok((
                    Pending {
                        state_hash: r.get(0)?,
                        binding_hash: r.get(1)?,
                        nonce: r.get(2)?,
                        verifier: r.get(3)?,
                        created_at: r.get(4)?,
                    },
                    r.get::<_, Option<i64>>(5)?,
                ))
            },
        )
        .optional()?;
    let out = match row {
        None => Taken::Unknown,
        Some((_, Some(_))) => Taken::Reused,
        Some((p, None)) => {
            tx.execute(
                "UPDATE oidc_pending SET used_at = ?2 WHERE state_hash = ?1",
                params![state_hash, now],
            )?;
            Taken::Fresh(p)
        }
    };
    tx.commit()?;
    Ok(out)
}

/// The member linked to (issuer, subject).
pub fn user_by_identity(
    c: &Connection,
    issuer: &str,
    subject: &str,
) -> StoreResult<Option<UserRow>> {
    let id: Option<String> = c
        .query_row(
            "SELECT user_id FROM oidc_identities WHERE issuer = ?1 AND subject = ?2",
            [issuer, subject],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => users::user_by_id(c, &id),
        None => Ok(None),
    }
}

/// The member whose SCIM `externalId` is `external_id` (exact match), if exactly one.
pub fn user_by_external_id(c: &Connection, external_id: &str) -> StoreResult<Option<UserRow>> {
    let ids: Vec<String> = {
        let mut s = c.prepare("SELECT id FROM users WHERE external_id = ?1 LIMIT 2")?;
        let rows = s.query_map([external_id], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    match ids.as_slice() {
        [one] => users::user_by_id(c, one),
        _ => Ok(None),
    }
}

/// Whether the member already carries a link (to any issuer/subject).
fn has_identity(c: &Connection, user_id: &str) -> StoreResult<bool> {
    Ok(c.query_row(
        "SELECT count(*) FROM oidc_identities WHERE user_id = ?1",
        [user_id],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// The signed-in identity, after the ID token was verified and the role decided.
#[derive(Debug, Clone)]
pub struct SsoUser {
    /// `iss` (the configured issuer).
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The `link_claim` value, when configured and present.
    pub link_value: Option<String>,
    /// Normalised email (required to create a member).
    pub email: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Role from a matched group mapping (`owner|admin|tester|viewer`): applied at each sign-in.
    pub mapped_role: Option<String>,
    /// Role for a member created now when no mapping matched.
    pub default_role: Option<String>,
    /// Create unknown members.
    pub jit: bool,
}

/// How a member was found or made (for the dry run and the audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// By an existing (issuer, subject) link.
    Identity,
    /// By `link_claim` against SCIM `externalId` (linked now).
    LinkClaim,
    /// Created now (JIT).
    Created,
}

impl Match {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Match::Identity => "identity",
            Match::LinkClaim => "link_claim",
            Match::Created => "jit",
        }
    }
}

/// Outcome of [`resolve`] / [`provision_login`].
#[derive(Debug, Clone)]
pub enum Resolved {
    /// Allowed: the member (after the role update) and how it was found; `previous_role` is
    /// `None` for a member created now.
    Ok {
        /// The member.
        user: Box<UserRow>,
        /// How.
        how: Match,
        /// Role before (None = new).
        previous_role: Option<String>,
    },
    /// Refused with an audit reason: `unknown_user`, `user_disabled`, `email_conflict`,
    /// `missing_email`, `identity_conflict`, `last_owner`, `plan_limit`, `no_matching_group`.
    Refused(&'static str),
}

/// Decide, without writing, which member a sign-in of `d` matches or would create and the role
/// it gets (the transaction of [`provision_login`] and the dry run share this).
pub fn resolve(c: &Connection, d: &SsoUser, max_users: Option<u32>) -> StoreResult<Resolved> {
    let linked = user_by_identity(c, &d.issuer, &d.subject)?;
    let (found, how) = match linked {
        Some(u) => (Some(u), Match::Identity),
        None => match d
            .link_value
            .as_deref()
            .map(|v| user_by_external_id(c, v))
            .transpose()?
            .flatten()
        {
            Some(u) => {
                if has_identity(c, &u.id)? {
                    return Ok(Resolved::Refused("identity_conflict"));
                }
                (Some(u), Match::LinkClaim)
            }
            None => (None, Match::Created),
        },
    };
    match found {
        Some(u) => {
            if !u.active {
                return Ok(Resolved::Refused("user_disabled"));
            }
            let prev = u.role.clone();
            let role = d.mapped_role.clone().unwrap_or_else(|| u.role.clone());
            if prev == "owner" && role != "owner" {
                let owners: i64 = c.query_row(
                    "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1 AND id <> ?1",
                    [&u.id],
                    |r| r.get(0),
                )?;
                if owners == 0 {
                    return Ok(Resolved::Refused("last_owner"));
                }
            }
            Ok(Resolved::Ok {
                user: Box::new(UserRow { role, ..u }),
                how,
                previous_role: Some(prev),
            })
        }
        None => {
            if !d.jit {
                return Ok(Resolved::Refused("unknown_user"));
            }
            let Some(email) = d.email.clone() else {
                return Ok(Resolved::Refused("missing_email"));
            };
            // Never linked by email: a member who holds this address is someone else's.
            if users::user_by_email(c, &email)?.is_some() {
                return Ok(Resolved::Refused("email_conflict"));
            }
            let Some(role) = d.mapped_role.clone().or_else(|| d.default_role.clone()) else {
                return Ok(Resolved::Refused("no_matching_group"));
            };
            match users::check_user_limit(c, max_users) {
                Err(StoreError::Conflict(Conflict::UserLimit)) => {
                    return Ok(Resolved::Refused("plan_limit"))
                }
                other => other?,
            }
            let now = crate::domain::now_rfc3339();
            Ok(Resolved::Ok {
                user: Box::new(UserRow {
                    id: crate::domain::new_object_id(),
                    email,
                    display_name: d.display_name.clone(),
                    role,
                    source: "oidc".into(),
                    active: true,
                    must_change_password: false,
                    created_at: now.clone(),
                    updated_at: now,
                    password_hash: None,
                }),
                how: Match::Created,
                previous_role: None,
            })
        }
    }
}

/// A session to store with the sign-in.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the session id.
    pub id_hash: String,
    /// SHA-256 of the CSRF token.
    pub csrf_hash: String,
    /// Unix seconds.
    pub now: i64,
}

/// Resolve (see [`resolve`]), then create or update the member, link (issuer, subject), store
/// the session and append `events(user, how, previous_role)` — one transaction. A refusal
/// writes nothing.
pub fn provision_login<F>(
    c: &mut Connection,
    d: &SsoUser,
    session: &NewSession,
    max_users: Option<u32>,
    events: F,
) -> StoreResult<Resolved>
where
    F: FnOnce(&UserRow, Match, Option<&str>) -> Vec<NewAuditEvent>,
{
    let tx = write_tx(c)?;
    let res = resolve(&tx, d, max_users)?;
    let Resolved::Ok {
        user,
        how,
        previous_role,
    } = &res
    else {
        return Ok(res);
    };
    let now = crate::domain::now_rfc3339();
    if *how == Match::Created {
        tx.execute(
            "INSERT INTO users (id, email, display_name, role, password_hash, source, active, must_change_password, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, NULL, 'oidc', 1, 0, ?5, ?5)",
            params![user.id, user.email, user.display_name, user.role, now],
        )?;
    } else if previous_role.as_deref() != Some(user.role.as_str()) {
        tx.execute(
            "UPDATE users SET role = ?2, updated_at = ?3 WHERE id = ?1",
            params![user.id, user.role, now],
        )?;
    }
    tx.execute(
        "INSERT INTO oidc_identities (user_id, issuer, subject, linked_at, last_login_at)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (user_id) DO UPDATE SET last_login_at = ?4",
        params![user.id, d.issuer, d.subject, now],
    )?;
    tx.execute(
        "INSERT INTO sessions (id_hash, user_id, csrf_hash, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![session.id_hash, user.id, session.csrf_hash, session.now],
    )?;
    for ev in events(user, *how, previous_role.as_deref()) {
        audit::append(&tx, &ev)?;
    }
    tx.commit()?;
    Ok(res)
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

    fn member(c: &mut Connection, email: &str, role: &str, ext: Option<&str>) -> UserRow {
        let now = crate::domain::now_rfc3339();
        let u = UserRow {
            id: crate::domain::new_object_id(),
            email: email.into(),
            display_name: None,
            role: role.into(),
            source: "scim".into(),
            active: true,
            must_change_password: false,
            created_at: now.clone(),
            updated_at: now,
            password_hash: None,
        };
        users::insert_user(c, &u, None).unwrap();
        c.execute(
            "UPDATE users SET external_id = ?2 WHERE id = ?1",
            params![u.id, ext],
        )
        .unwrap();
        u
    }

    fn sso(sub: &str, email: &str) -> SsoUser {
        SsoUser {
            issuer: "https://idp".into(),
            subject: sub.into(),
            link_value: None,
            email: Some(email.into()),
            display_name: None,
            mapped_role: None,
            default_role: Some("viewer".into()),
            jit: true,
        }
    }

    fn login(c: &mut Connection, d: &SsoUser, n: u8) -> Resolved {
        let s = NewSession {
            id_hash: format!("s{n}"),
            csrf_hash: "c".into(),
            now: 1,
        };
        provision_login(c, d, &s, None, |_, _, _| Vec::new()).unwrap()
    }

    #[test]
    fn never_links_by_email_and_links_by_external_id() {
        let mut c = db();
        member(&mut c, "owner@x", "owner", None);
        let scim = member(&mut c, "bob@x", "tester", Some("oid-bob"));
        // Same email, no link claim: refused, not taken over.
        let d = sso("bob-sub", "bob@x");
        assert!(matches!(
            login(&mut c, &d, 1),
            Resolved::Refused("email_conflict")
        ));
        // Link claim matching the SCIM externalId: linked, manual role kept.
        let d = SsoUser {
            link_value: Some("oid-bob".into()),
            ..d
        };
        let Resolved::Ok { user, how, .. } = login(&mut c, &d, 2) else {
            panic!("not linked")
        };
        assert_eq!(
            (user.id.as_str(), how),
            (scim.id.as_str(), Match::LinkClaim)
        );
        assert_eq!(user.role, "tester");
        // From now on by (issuer, subject), even without the claim.
        let d = SsoUser {
            link_value: None,
            mapped_role: Some("admin".into()),
            ..d
        };
        let Resolved::Ok { user, how, .. } = login(&mut c, &d, 3) else {
            panic!("not found")
        };
        assert_eq!(
            (user.id.as_str(), how, user.role.as_str()),
            (scim.id.as_str(), Match::Identity, "admin")
        );
        // Another subject with the same link value cannot take the member over.
        let d2 = SsoUser {
            subject: "intruder".into(),
            link_value: Some("oid-bob".into()),
            ..sso("intruder", "i@x")
        };
        assert!(matches!(
            login(&mut c, &d2, 4),
            Resolved::Refused("identity_conflict")
        ));
    }

    #[test]
    fn jit_off_disabled_and_last_owner() {
        let mut c = db();
        let d = SsoUser {
            jit: false,
            ..sso("a", "a@x")
        };
        assert!(matches!(
            login(&mut c, &d, 1),
            Resolved::Refused("unknown_user")
        ));
        let d = SsoUser {
            mapped_role: Some("owner".into()),
            ..sso("a", "a@x")
        };
        let Resolved::Ok { user, .. } = login(&mut c, &d, 2) else {
            panic!("not created")
        };
        assert_eq!(user.source, "oidc");
        let d = SsoUser {
            mapped_role: Some("viewer".into()),
            ..d
        };
        assert!(matches!(
            login(&mut c, &d, 3),
            Resolved::Refused("last_owner")
        ));
        c.execute("UPDATE users SET active = 0 WHERE id = ?1", [&user.id])
            .unwrap();
        assert!(matches!(
            login(&mut c, &d, 4),
            Resolved::Refused("user_disabled")
        ));
    }

    #[test]
    fn pending_state_is_single_use() {
        let mut c = db();
        let p = Pending {
            state_hash: "h".into(),
            binding_hash: "b".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            created_at: 100,
        };
        insert_pending(&mut c, &p, 0).unwrap();
        assert!(matches!(
            take_pending(&mut c, "h", 101).unwrap(),
            Taken::Fresh(_)
        ));
        assert!(matches!(
            take_pending(&mut c, "h", 102).unwrap(),
            Taken::Reused
        ));
        assert!(matches!(
            take_pending(&mut c, "x", 102).unwrap(),
            Taken::Unknown
        ));
    }
}
