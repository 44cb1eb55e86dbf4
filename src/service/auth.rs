//! Local login, sessions, bearer tokens, throttling and password change.
//!
//! Throttling (OWASP Authentication Cheat Sheet, "Account lockout"): counters live in the
//! catalog (server-side, visible to the break-glass `flowguard users unlock`). After
//! `login.max_failures_per_pair` failures for one (tenant, normalised account, client IP) pair,
//! that pair gets 429 + `Retry-After` for `base_lockout_secs · 2^(n − max)` seconds, capped at
//! `max_lockout_secs`; the lock expires by itself and counters reset after `window_secs` without
//! failures. Other addresses are unaffected, so an attacker cannot lock the real Owner out. A
//! per-IP limit on failures across accounts (`max_failures_per_ip`) stops spraying.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::principal::PresentedToken;
use super::{unix_now, AppState, Caller, ClientInfo, Principal};
use crate::audit::NewAuditEvent;
use crate::auth::password::{self, PasswordError};
use crate::crypto::token::{self, TokenKind};
use crate::domain::{Role, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::catalog::{self, FailureState};
use crate::store::pool::Admitted;
use crate::store::{audit, sessions, tokens, users};

/// Which credentials a login may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMode {
    /// A local account with that email first; else the tenant's directory when LDAP is on.
    Any,
    /// The tenant's directory only (`POST /api/v1/auth/ldap/login`).
    DirectoryOnly,
}

/// A login request after JSON parsing.
pub struct LoginInput {
    /// Tenant id or unique name; `None` logs a PlatformAdmin in to the catalog.
    pub tenant: Option<String>,
    /// Login name as typed: an email for local accounts, whatever `user_filter` expects for
    /// directory accounts.
    pub email: String,
    /// The request field the login name came from (`email` or `username`), for errors.
    pub login_field: &'static str,
    /// Password (zeroed on drop).
    pub password: Zeroizing<String>,
    /// Local and directory, or directory only.
    pub mode: LoginMode,
}

/// A new session.
pub struct LoginOutcome {
    /// Session id for the cookie (secret).
    pub session: String,
    /// CSRF token (secret, returned once in the body).
    pub csrf_token: String,
    /// Who logged in.
    pub principal: Principal,
    /// One-time password still to be changed.
    pub must_change_password: bool,
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => ApiError::busy(2),
            PasswordError::Internal(m) => ApiError::internal(m),
        }
    }
}

fn pair_key(tenant: &str, account: &str, ip: &str) -> String {
    format!("{tenant}|{account}|{ip}")
}

/// Seconds left on a lock, if any.
fn locked_for(s: &FailureState, now: i64) -> Option<u64> {
    (s.locked_until > now).then(|| (s.locked_until - now) as u64)
}

/// Outcome of recording one failure.
struct Recorded {
    /// This failure started a lockout of the pair (seconds).
    pair_locked: Option<u64>,
    /// This failure started a lockout of the IP (seconds).
    ip_locked: Option<u64>,
}

fn record_failure(
    c: &crate::store::Conn,
    st: &crate::config::LoginSettings,
    pk: &str,
    account: &str,
    ip: &str,
    now: i64,
) -> crate::store::StoreResult<Recorded> {
    let window = st.window_secs as i64;
    let mut pair = catalog::failure_state(c, "pair", pk)?;
    if now - pair.last_failure > window && pair.locked_until <= now {
        pair.failures = 0;
    }
    pair.failures += 1;
    pair.last_failure = now;
    let mut pair_locked = None;
    if pair.failures >= st.max_failures_per_pair {
        let exp = (pair.failures - st.max_failures_per_pair).min(20);
        let secs = st
            .base_lockout_secs
            .saturating_mul(1u64 << exp)
            .min(st.max_lockout_secs)
            .max(1);
        pair.locked_until = now + secs as i64;
        pair_locked = Some(secs);
    }
    catalog::put_failure_state(c, "pair", pk, Some(account), pair)?;

    let mut ipst = catalog::failure_state(c, "ip", ip)?;
    if now - ipst.last_failure > window && ipst.locked_until <= now {
        ipst.failures = 0;
    }
    ipst.failures += 1;
    ipst.last_failure = now;
    let mut ip_locked = None;
    if ipst.failures >= st.max_failures_per_ip && ipst.locked_until <= now {
        ipst.locked_until = now + st.window_secs as i64;
        ip_locked = Some(st.window_secs);
    }
    catalog::put_failure_state(c, "ip", ip, None, ipst)?;
    Ok(Recorded {
        pair_locked,
        ip_locked,
    })
}

/// Log in with email + password. Same error body (and similar time) for unknown tenant, unknown
/// user, inactive user, empty or wrong password.
pub async fn login(
    state: &Arc<AppState>,
    input: LoginInput,
    client: &ClientInfo,
) -> ApiResult<LoginOutcome> {
    if input.password.len() > password::MAX_PASSWORD_BYTES {
        return Err(ApiError::new(
            ErrorCode::PasswordTooLong,
            "password longer than 1024 bytes",
        )
        .field("password"));
    }
    let account = input.email.trim().to_lowercase();
    if account.is_empty() {
        return Err(ApiError::invalid(
            input.login_field,
            format!("{} is required", input.login_field),
        ));
    }
    if account.len() > 254 {
        return Err(ApiError::invalid(
            input.login_field,
            format!("{} is longer than 254 bytes", input.login_field),
        ));
    }
    let tenant_ref = input
        .tenant
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);

    // Resolve the tenant (catalog) and check throttles before any hashing.
    let st = state.settings.login.clone();
    let ip = client.ip.clone();
    let now = unix_now();
    let (tenant_row, retry) = {
        let tref = tenant_ref.clone();
        let account = account.clone();
        let ip = ip.clone();
        state
            .catalog
            .run(move |c| {
                let t = match &tref {
                    Some(r) => catalog::find_tenant(c, r)?,
                    None => None,
                };
                let scope = t
                    .as_ref()
                    .map(|t| t.id.to_string())
                    .or(tref)
                    .unwrap_or_else(|| "catalog".into());
                let pair = catalog::failure_state(c, "pair", &pair_key(&scope, &account, &ip))?;
                let ipst = catalog::failure_state(c, "ip", &ip)?;
                Ok((t, locked_for(&pair, now).max(locked_for(&ipst, now))))
            })
            .await?
    };
    if let Some(secs) = retry {
        return Err(ApiError::throttled(secs));
    }
    let scope = tenant_row
        .as_ref()
        .map(|t| t.id.to_string())
        .or_else(|| tenant_ref.clone())
        .unwrap_or_else(|| "catalog".into());

    // Look up the credential.
    enum Subject {
        User(users::UserRow, TenantId),
        Admin(catalog::PlatformAdminRow),
        Nobody(Option<TenantId>),
    }
    let subject = match (&tenant_ref, &tenant_row) {
        (None, _) => {
            let a = account.clone();
            match state
                .catalog
                .run(move |c| catalog::find_platform_admin(c, &a))
                .await?
            {
                Some(admin) => Subject::Admin(admin),
                None => Subject::Nobody(None),
            }
        }
        (Some(_), None) => Subject::Nobody(None),
        (Some(_), Some(t)) => {
            let tid = t.id.clone();
            let a = account.clone();
            let local = match input.mode {
                LoginMode::Any => {
                    state
                        .tenants
                        .run(&tid, move |c| users::user_by_email(c, &a))
                        .await?
                }
                LoginMode::DirectoryOnly => None,
            };
            match local {
                Some(u) if u.active && u.password_hash.is_some() => Subject::User(u, tid),
                _ if super::ldap::enabled(state, &tid).await? => {
                    let attempt = Attempt {
                        state,
                        settings: &st,
                        scope,
                        account,
                        ip,
                        now,
                        client,
                    };
                    let login = input.email.trim().to_string();
                    return ldap_login(&attempt, tid, login, input.password).await;
                }
                _ => Subject::Nobody(Some(tid)),
            }
        }
    };
    let phc = match &subject {
        Subject::User(u, _) => u.password_hash.clone(),
        Subject::Admin(a) => Some(a.password_hash.clone()),
        Subject::Nobody(_) => None,
    };
    let empty = input.password.is_empty();
    let ok = state.passwords.verify(input.password, phc).await? && !empty;

    if !ok {
        let reason = if empty {
            "empty_password"
        } else {
            "invalid_credentials"
        };
        let tid = match &subject {
            Subject::User(_, t) => Some(t.clone()),
            Subject::Nobody(t) => t.clone(),
            Subject::Admin(_) => None,
        };
        let attempt = Attempt {
            state,
            settings: &st,
            scope: scope.clone(),
            account: account.clone(),
            ip: ip.clone(),
            now,
            client,
        };
        return Err(
            record_failed(&attempt, tid, serde_json::json!({"reason": reason}), None).await?,
        );
    }

    // A suspended tenant: the right credentials get told so, and no session.
    if tenant_row
        .as_ref()
        .is_some_and(|t| t.status == catalog::TENANT_SUSPENDED)
    {
        return Err(tenant_suspended());
    }
    // Success: forget this pair's failures, open a session.
    let pk = pair_key(&scope, &account, &ip);
    state
        .catalog
        .run(move |c| catalog::clear_failures(c, "pair", &pk))
        .await?;
    let csrf_token = token::random_secret();
    let csrf_hash = token::token_hash(&csrf_token);
    match subject {
        Subject::User(u, tid) => {
            let session = token::new_token(TokenKind::UserSession, tid.as_str());
            let sh = token::token_hash(&session);
            let role = Role::parse_member(&u.role).map_err(ApiError::internal)?;
            let principal = Principal::User {
                tenant: tid.clone(),
                user_id: u.id.clone(),
                email: u.email.clone(),
                role,
                session_hash: sh.clone(),
                csrf_hash: csrf_hash.clone(),
                must_change_password: u.must_change_password,
            };
            let ev = NewAuditEvent::new(
                &principal.actor(client),
                "login.success",
                Some(format!("member:{}", u.email)),
            );
            let uid = u.id.clone();
            let ch = csrf_hash.clone();
            state
                .tenants
                .run(&tid, move |c| {
                    sessions::insert_session(c, &sh, &uid, &ch, now)?;
                    audit::append_audit(c, &ev)
                })
                .await?;
            Ok(LoginOutcome {
                session,
                csrf_token,
                principal,
                must_change_password: u.must_change_password,
            })
        }
        Subject::Admin(a) => {
            let session = token::new_token(TokenKind::PlatformSession, "catalog");
            let sh = token::token_hash(&session);
            let principal = Principal::Platform {
                admin_id: a.id.clone(),
                email: a.email.clone(),
                session_hash: sh.clone(),
                csrf_hash: csrf_hash.clone(),
                must_change_password: a.must_change_password,
            };
            let ev = NewAuditEvent::new(
                &principal.actor(client),
                "login.success",
                Some(format!("platform_admin:{}", a.email)),
            );
            let aid = a.id.clone();
            let ch = csrf_hash.clone();
            state
                .catalog
                .run(move |c| {
                    catalog::insert_platform_session(c, &sh, &aid, &ch, now)?;
                    catalog::append_audit(c, &ev)
                })
                .await?;
            Ok(LoginOutcome {
                session,
                csrf_token,
                principal,
                must_change_password: a.must_change_password,
            })
        }
        Subject::Nobody(_) => Err(ApiError::invalid_credentials()),
    }
}

/// One login attempt's throttle and audit context.
struct Attempt<'a> {
    state: &'a Arc<AppState>,
    settings: &'a crate::config::LoginSettings,
    /// Tenant id (or the name given, or `catalog`).
    scope: String,
    /// Normalised login name.
    account: String,
    /// Client IP.
    ip: String,
    now: i64,
    client: &'a ClientInfo,
}

/// Count a failed attempt (throttling), append `login.failure` with `details` (plus
/// `login.lockout` rows when a lock starts) to the tenant's audit — or the catalog's for
/// platform logins — and return the uniform 401. With `revoke_dn_key`, the directory-linked
/// member's sessions end in the same transaction as the audit rows.
async fn record_failed(
    a: &Attempt<'_>,
    tid: Option<TenantId>,
    details: serde_json::Value,
    revoke_dn_key: Option<String>,
) -> ApiResult<ApiError> {
    let st2 = a.settings.clone();
    let pk = pair_key(&a.scope, &a.account, &a.ip);
    let (acc, ip2, now) = (a.account.clone(), a.ip.clone(), a.now);
    let rec = a
        .state
        .catalog
        .run(move |c| record_failure(c, &st2, &pk, &acc, &ip2, now))
        .await?;
    let account = &a.account;
    let ip = &a.ip;
    let actor = a.client.anonymous_actor(Some(account.clone()));
    let mut events =
        vec![
            NewAuditEvent::new(&actor, "login.failure", Some(format!("account:{account}")))
                .details(details),
        ];
    if let Some(secs) = rec.pair_locked {
        events.push(
            NewAuditEvent::new(&actor, "login.lockout", Some(format!("account:{account}")))
                .details(serde_json::json!({"scope": "account_ip", "seconds": secs})),
        );
    }
    if let Some(secs) = rec.ip_locked {
        events.push(
            NewAuditEvent::new(&actor, "login.lockout", Some(format!("ip:{ip}")))
                .details(serde_json::json!({"scope": "ip", "seconds": secs})),
        );
    }
    match (tid, revoke_dn_key) {
        (Some(t), Some(key)) => super::ldap::revoke_linked(a.state, &t, key, events).await?,
        (Some(t), None) => {
            a.state
                .tenants
                .run(&t, move |c| {
                    for ev in &events {
                        audit::append_audit(c, ev)?;
                    }
                    Ok(())
                })
                .await?
        }
        (None, _) => {
            a.state
                .catalog
                .run(move |c| {
                    for ev in &events {
                        catalog::append_audit(c, ev)?;
                    }
                    Ok(())
                })
                .await?
        }
    }
    Ok(ApiError::invalid_credentials())
}

/// The directory branch of login (issue 7). An empty password is refused before any LDAP
/// traffic (RFC 4513 §6.3.1); a directory that cannot be reached gives 503
/// `ldap_unavailable` (audited, not counted against the account).
async fn ldap_login(
    a: &Attempt<'_>,
    tid: TenantId,
    login: String,
    password: Zeroizing<String>,
) -> ApiResult<LoginOutcome> {
    let why = |reason: &str| serde_json::json!({"reason": reason, "source": "ldap"});
    if password.is_empty() {
        return Err(record_failed(a, Some(tid), why("empty_password"), None).await?);
    }
    let state = a.state;
    let auth = match super::ldap::authenticate(state, &tid, &login, &password).await {
        Ok(r) => r,
        Err(e) => {
            if e.code == ErrorCode::LdapUnavailable {
                let ev = NewAuditEvent::new(
                    &a.client.anonymous_actor(Some(a.account.clone())),
                    "login.failure",
                    Some(format!("account:{}", a.account)),
                )
                .details(why("directory_unavailable"));
                state
                    .tenants
                    .run(&tid, move |c| audit::append_audit(c, &ev))
                    .await?;
            }
            return Err(e);
        }
    };
    drop(password);
    let ok = match auth {
        Err((refusal, dn_key)) => {
            let revoke = (refusal == super::ldap::Refusal::NoMatchingGroup)
                .then_some(dn_key)
                .flatten();
            return Err(record_failed(a, Some(tid), why(refusal.reason()), revoke).await?);
        }
        Ok(ok) => ok,
    };
    match super::ldap::provision(state, &tid, ok, a.client).await? {
        super::ldap::LoginResult::Refused(reason) => {
            Err(record_failed(a, Some(tid), why(reason), None).await?)
        }
        super::ldap::LoginResult::Ok {
            principal,
            session,
            csrf_token,
        } => {
            let pk = pair_key(&a.scope, &a.account, &a.ip);
            state
                .catalog
                .run(move |c| catalog::clear_failures(c, "pair", &pk))
                .await?;
            Ok(LoginOutcome {
                session,
                csrf_token,
                principal,
                must_change_password: false,
            })
        }
    }
}

/// Authenticate a session cookie value. Expired (idle or absolute) sessions are deleted.
pub async fn session_principal(
    state: &Arc<AppState>,
    cookie: &PresentedToken,
) -> ApiResult<Option<Principal>> {
    let (Some(kind), Some(scope)) = (cookie.kind, cookie.scope.as_deref()) else {
        return Ok(None);
    };
    let sh = token::token_hash(&cookie.raw);
    let now = unix_now();
    let idle = i64::from(state.settings.session.idle_minutes) * 60;
    let abs = i64::from(state.settings.session.absolute_hours) * 3600;
    let expired =
        move |s: &sessions::SessionRow| now - s.last_seen > idle || now - s.created_at > abs;
    match kind {
        TokenKind::UserSession => {
            let Some(tid) = cookie.tenant.clone() else {
                return Ok(None);
            };
            // The lookup is a read (inline when the store is free); the rare writes — ending an
            // expired session, moving `last_seen` at most every 15 s — go off the executor.
            let key = sh.clone();
            let found = state
                .tenants
                .read_admitted(&tid, move |c| {
                    let Some(s) = sessions::session(c, &key)? else {
                        return Ok(None);
                    };
                    let u = users::user_by_id(c, &s.subject_id)?;
                    Ok(Some((s, u)))
                })
                .await?;
            let Some((s, user)) = admitted(found)?.flatten() else {
                return Ok(None);
            };
            if expired(&s) {
                state
                    .tenants
                    .run(&tid, move |c| sessions::delete_session(c, &sh))
                    .await?;
                return Ok(None);
            }
            let Some(u) = user.filter(|u| u.active) else {
                return Ok(None);
            };
            let Ok(role) = Role::parse_member(&u.role) else {
                return Ok(None);
            };
            if now - s.last_seen >= 15 {
                let key = sh.clone();
                // On a full volume the refresh is skipped, so reads keep working.
                match state
                    .tenants
                    .run(&tid, move |c| sessions::touch_session(c, &key, now))
                    .await
                {
                    Ok(()) | Err(crate::store::StoreError::Full) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Some(Principal::User {
                tenant: tid,
                user_id: u.id,
                email: u.email,
                role,
                session_hash: sh,
                csrf_hash: s.csrf_hash,
                must_change_password: u.must_change_password,
            }))
        }
        TokenKind::PlatformSession if scope == "catalog" => state
            .catalog
            .run(move |c| {
                let Some(s) = catalog::platform_session(c, &sh)? else {
                    return Ok(None);
                };
                if expired(&s) {
                    catalog::delete_platform_session(c, &sh)?;
                    return Ok(None);
                }
                let Some(a) = catalog::platform_admin_by_id(c, &s.subject_id)? else {
                    return Ok(None);
                };
                if now - s.last_seen >= 15 {
                    // On a full volume the refresh is skipped, so reads keep working.
                    match catalog::touch_platform_session(c, &sh, now) {
                        Ok(()) | Err(crate::store::StoreError::Full) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Some(Principal::Platform {
                    admin_id: a.id,
                    email: a.email,
                    session_hash: sh,
                    csrf_hash: s.csrf_hash,
                    must_change_password: a.must_change_password,
                }))
            })
            .await
            .map_err(Into::into),
        _ => Ok(None),
    }
}

/// A credential naming an unknown tenant authenticates nobody (`None`); a suspended tenant →
/// 403 `tenant_suspended`.
fn admitted<R>(a: Admitted<R>) -> ApiResult<Option<R>> {
    match a {
        Admitted::Unknown => Ok(None),
        Admitted::Suspended => Err(tenant_suspended()),
        Admitted::Ran(r) => Ok(Some(r)),
    }
}

/// 403 `tenant_suspended`: the tenant exists but a PlatformAdmin suspended it.
pub fn tenant_suspended() -> ApiError {
    ApiError::new(
        ErrorCode::TenantSuspended,
        "this tenant is suspended; contact the platform administrator",
    )
}

/// Authenticate a bearer service token (agent or SCIM).
pub async fn bearer_principal(
    state: &Arc<AppState>,
    bearer: &PresentedToken,
) -> ApiResult<Option<Principal>> {
    let want = match bearer.kind {
        Some(TokenKind::Agent) => "agent",
        Some(TokenKind::Scim) => "scim",
        _ => return Ok(None),
    };
    let Some(tid) = bearer.tenant.clone() else {
        return Ok(None);
    };
    let h = token::token_hash(&bearer.raw);
    let t2 = tid.clone();
    let found = state
        .tenants
        .read_admitted(&tid, move |c| tokens::active_token_by_hash(c, &h))
        .await?;
    Ok(match admitted(found)?.flatten() {
        Some(r) if r.kind == want => match r.kind.as_str() {
            "agent" => r.application_id.map(|app| Principal::Agent {
                tenant: t2,
                token_id: r.id,
                name: r.name,
                application_id: app,
            }),
            _ => Some(Principal::Scim {
                tenant: t2,
                token_id: r.id,
                name: r.name,
            }),
        },
        _ => None,
    })
}

/// Whether the caller still has to change a one-time password (`GET /api/v1/me`): a member or
/// PlatformAdmin whose row says so; token principals never.
pub async fn must_change_password(state: &Arc<AppState>, ctx: &Caller) -> ApiResult<bool> {
    Ok(match ctx.principal.clone() {
        Principal::User {
            tenant, user_id, ..
        } => state
            .tenants
            .read(&tenant, move |c| users::user_by_id(c, &user_id))
            .await?
            .is_some_and(|u| u.must_change_password),
        Principal::Platform { admin_id, .. } => state
            .catalog
            .read(move |c| catalog::platform_admin_by_id(c, &admin_id))
            .await?
            .is_some_and(|a| a.must_change_password),
        _ => false,
    })
}

/// End the caller's session (audited as `logout`).
pub async fn logout(state: &Arc<AppState>, ctx: &Caller) -> ApiResult<()> {
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "logout",
        Some(format!("session:{}", ctx.principal.actor_name())),
    );
    match ctx.principal.clone() {
        Principal::User {
            tenant,
            session_hash,
            ..
        } => {
            state
                .tenants
                .run(&tenant, move |c| {
                    sessions::delete_session(c, &session_hash)?;
                    audit::append_audit(c, &ev)
                })
                .await?
        }
        Principal::Platform { session_hash, .. } => {
            state
                .catalog
                .run(move |c| {
                    catalog::delete_platform_session(c, &session_hash)?;
                    catalog::append_audit(c, &ev)
                })
                .await?
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::NoSession,
                "token callers have no session",
            ))
        }
    }
    Ok(())
}

/// Change the caller's own local password; other sessions of the caller end.
pub async fn change_password(
    state: &Arc<AppState>,
    ctx: &Caller,
    current: Zeroizing<String>,
    new: Zeroizing<String>,
) -> ApiResult<()> {
    if current.len() > password::MAX_PASSWORD_BYTES {
        return Err(ApiError::new(
            ErrorCode::PasswordTooLong,
            "password longer than 1024 bytes",
        )
        .field("current_password"));
    }
    super::tenants::check_new_password(&new).map_err(|m| ApiError::invalid("new_password", m))?;
    let stored = match ctx.principal.clone() {
        Principal::User {
            tenant, user_id, ..
        } => state
            .tenants
            .run(&tenant, move |c| users::user_by_id(c, &user_id))
            .await?
            .and_then(|u| u.password_hash),
        Principal::Platform { admin_id, .. } => state
            .catalog
            .run(move |c| catalog::platform_admin_by_id(c, &admin_id))
            .await?
            .map(|a| a.password_hash),
        _ => return Err(ApiError::forbidden()),
    };
    if stored.is_none() {
        return Err(ApiError::new(
            ErrorCode::NotLocalAccount,
            "this account has no local password",
        ));
    }
    if !state.passwords.verify(current, stored).await? {
        return Err(
            ApiError::new(ErrorCode::WrongCurrentPassword, "current password is wrong")
                .field("current_password"),
        );
    }
    let hash = state.passwords.hash(new).await?;
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "user.password_change",
        Some(format!("member:{}", ctx.principal.actor_name())),
    );
    match ctx.principal.clone() {
        Principal::User {
            tenant,
            user_id,
            session_hash,
            ..
        } => {
            state
                .tenants
                .run(&tenant, move |c| {
                    users::set_user_password(c, &user_id, &hash, &session_hash, &ev)
                })
                .await?
        }
        Principal::Platform {
            admin_id,
            session_hash,
            ..
        } => {
            state
                .catalog
                .run(move |c| {
                    catalog::set_platform_admin_password(c, &admin_id, &hash, &session_hash, &ev)
                })
                .await?
        }
        _ => return Err(ApiError::forbidden()),
    }
    Ok(())
}

// ---------------------------------------------------------------- sign-in methods

/// Which sign-in methods the deployment offers, for the sign-in page before anyone is known
/// (`GET /api/v1/auth/methods`). Deployment-wide on purpose: it names no tenant and says nothing
/// about any one tenant (which tenant uses a directory is not told to anonymous callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SignInMethods {
    /// Local accounts (email and password): always true.
    pub password: bool,
    /// At least one active tenant of this region has directory (LDAP) sign-in on.
    pub ldap: bool,
    /// At least one active tenant of this region has single sign-on (OpenID Connect) on;
    /// whether a given tenant offers it is `GET /api/v1/auth/oidc/available?tenant=`.
    pub oidc: bool,
}

/// How long [`sign_in_methods`] reuses its answer (seconds). A configuration change through the
/// API drops the cached answer at once ([`sign_in_methods_changed`]); the TTL bounds how often
/// an anonymous caller can make the server list the catalog's tenants (each tenant's store is
/// read only the first time and after its configuration changed, `TENANT_SIGN_IN`).
pub const SIGN_IN_METHODS_TTL_SECS: u64 = 30;

static SIGN_IN_METHODS: std::sync::Mutex<Option<(std::time::Instant, SignInMethods)>> =
    std::sync::Mutex::new(None);

/// What each tenant offered when its store was last read: tenant id → (LDAP on, OIDC on). A
/// tenant's store is read once, then again only after its configuration changed
/// ([`sign_in_methods_changed`]); without this the anonymous sign-in page made the server open
/// every tenant store every [`SIGN_IN_METHODS_TTL_SECS`] (1,000 store opens at 1,000 tenants,
/// each evicting a busy store from the open-store cache; issue 25).
static TENANT_SIGN_IN: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, (bool, bool)>>,
> = std::sync::LazyLock::new(Default::default);

/// Bumped by every [`sign_in_methods_changed`]: an answer read while a change happened is not
/// kept (it may predate the change).
static SIGN_IN_CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Forget the cached [`sign_in_methods`] answer and what `tenant` offered (after an LDAP or
/// OIDC configuration change of that tenant).
pub fn sign_in_methods_changed(tenant: &TenantId) {
    SIGN_IN_CHANGES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    TENANT_SIGN_IN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(tenant.as_str());
    *SIGN_IN_METHODS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
}

/// (LDAP on, OIDC on) of one tenant: remembered, or read from its store (and remembered unless
/// a configuration changed meanwhile). An unreadable store counts as offering neither (logged,
/// not remembered).
async fn tenant_sign_in(state: &Arc<AppState>, t: &TenantId) -> (bool, bool) {
    if let Some(v) = TENANT_SIGN_IN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(t.as_str())
    {
        return *v;
    }
    let gen = SIGN_IN_CHANGES.load(std::sync::atomic::Ordering::SeqCst);
    // Through `for_pass`: the first answer after a start asks every tenant, and a store opened
    // for it must neither stay open nor evict the stores requests use (issue 25).
    let st = state.clone();
    let tid = t.clone();
    let read = tokio::task::spawn_blocking(move || {
        st.tenants.for_pass(&tid, |db| {
            Ok((
                super::ldap::enabled_in(db).map_err(|e| e.to_string()),
                super::oidc::enabled_in(db).map_err(|e| e.to_string()),
            ))
        })
    })
    .await;
    let (ldap, oidc) = match read
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(pair) => pair,
        Err(e) => (Err(e.clone()), Err(e)),
    };
    match (ldap, oidc) {
        (Ok(l), Ok(o)) => {
            let mut memo = TENANT_SIGN_IN
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if SIGN_IN_CHANGES.load(std::sync::atomic::Ordering::SeqCst) == gen {
                memo.insert(t.as_str().to_string(), (l, o));
            }
            (l, o)
        }
        (l, o) => {
            if let Err(e) = &l {
                tracing::warn!(tenant = %t, "sign-in methods: LDAP config unreadable: {e}");
            }
            if let Err(e) = &o {
                tracing::warn!(tenant = %t, "sign-in methods: OIDC config unreadable: {e}");
            }
            (l.unwrap_or(false), o.unwrap_or(false))
        }
    }
}

/// The deployment's [`SignInMethods`]: every active tenant of this region is asked (its LDAP
/// and OIDC configuration rows), at most once per [`SIGN_IN_METHODS_TTL_SECS`]. A tenant store
/// that cannot be read counts as offering neither (logged), so one broken store does not take
/// the sign-in page down.
pub async fn sign_in_methods(state: &Arc<AppState>) -> ApiResult<SignInMethods> {
    let ttl = std::time::Duration::from_secs(SIGN_IN_METHODS_TTL_SECS);
    if let Some((at, m)) = *SIGN_IN_METHODS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        if at.elapsed() < ttl {
            return Ok(m);
        }
    }
    let gen = SIGN_IN_CHANGES.load(std::sync::atomic::Ordering::SeqCst);
    let region = state.settings.region();
    let tenants = state.catalog.run(|c| catalog::list_tenants(c)).await?;
    let mut out = SignInMethods {
        password: true,
        ldap: false,
        oidc: false,
    };
    for t in tenants
        .iter()
        .filter(|t| t.status == "active" && t.region == region.as_str())
    {
        let (l, o) = tenant_sign_in(state, &t.id).await;
        out.ldap |= l;
        out.oidc |= o;
        if out.ldap && out.oidc {
            break;
        }
    }
    let mut cached = SIGN_IN_METHODS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if SIGN_IN_CHANGES.load(std::sync::atomic::Ordering::SeqCst) == gen {
        *cached = Some((std::time::Instant::now(), out));
    }
    Ok(out)
}

/// The display name of the caller's tenant (`None` for a PlatformAdmin, or a tenant gone from
/// the catalog).
pub async fn tenant_name(state: &Arc<AppState>, p: &Principal) -> ApiResult<Option<String>> {
    let Some(t) = p.tenant().cloned() else {
        return Ok(None);
    };
    Ok(state
        .catalog
        .run(move |c| catalog::tenant_by_id(c, &t))
        .await?
        .map(|r| r.name))
}
