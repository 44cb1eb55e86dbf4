//! Directory login use cases: the tenant's LDAP configuration (`PUT/GET /api/v1/sso/ldap`,
//! audited as `sso.config_change`), the connection test, the mapping dry run, and the LDAP
//! branch of login (search-then-bind, group → role, member provisioning, session, audit).
//!
//! Secrets: the bind password and client key are sealed with the tenant DEK through
//! [`super::sealing`] (columns [`sealing::LDAP_BIND_PASSWORD`], [`sealing::LDAP_CLIENT_KEY`]:
//! AAD = tenant, `ldap_config`, `1`, column; the write is fence-checked against a concurrent key
//! rotation) and never leave this module except to the directory.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::sealing::{self, Plain};
use super::{unix_now, AppState, ClientInfo, Principal, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::auth::ldap::config::{role_name, FieldError, RoleMapping};
use crate::auth::ldap::{
    self as dir, client, dn, mapping, DirError, LdapConfig, LdapConfigInput, LdapConfigView,
    Lookup, Secrets,
};
use crate::crypto::ct_eq;
use crate::crypto::token::{self, TokenKind};
use crate::domain::{Email, Role, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::net::tls::TlsFailure;
use crate::store::ldap::{self as st, ConfigRow, DirectoryUser, NewSession, Provisioned};
use crate::store::{Conflict, StoreError, StoreResult};

/// Longest accepted login name (bytes).
pub const MAX_USERNAME_BYTES: usize = 256;

fn field_error(e: FieldError) -> ApiError {
    ApiError::new(e.code, e.detail).field(e.field)
}

/// 503 `ldap_unavailable`: the directory could not be reached over a verified TLS session, or
/// did not answer in time. Deliberately one message for every cause.
pub fn unavailable() -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::LdapUnavailable,
        "the directory is unavailable; try again later (local accounts can still log in)",
    );
    e.retry_after = Some(5);
    e
}

fn not_configured() -> ApiError {
    ApiError::new(
        ErrorCode::LdapNotConfigured,
        "LDAP is not configured for this tenant (PUT /api/v1/sso/ldap)",
    )
}

fn dir_error(e: DirError) -> ApiError {
    match e {
        DirError::Unavailable | DirError::Timeout => unavailable(),
        DirError::Egress(d) => ApiError::new(ErrorCode::EgressDenied,
            d.to_string(),
        )
        .field("url"),
        DirError::ServiceBind(rc) => ApiError::new(ErrorCode::LdapServiceBindFailed,
            format!("the directory refused the service account bind (LDAP result code {rc}); check bind_dn and bind_password"),
        )
        .field("bind_dn"),
        DirError::TlsConfig(m) => ApiError::new(ErrorCode::ValidationFailed,
            m,
        ),
        // Only failures that prove the server holds a certificate tied to the configured
        // `ca_pem` (issued by it or pinned in it) are named; an unknown issuer or another
        // handshake failure stays the one 503 a closed port gives, so the connection test is
        // no port-probing oracle (`ldap_errors_do_not_reveal_whether_a_port_is_open`).
        DirError::Tls(
            TlsFailure::UnknownIssuer | TlsFailure::Handshake | TlsFailure::BadCertificate,
            _,
        ) => unavailable(),
        DirError::Tls(kind, detail) => ApiError::new(ErrorCode::TlsFailed,
            format!("TLS handshake with the directory failed: {} ({}) [{}]", kind.describe(), crate::domain::truncate(&detail, 200), kind.code()),
        )
        .field("ca_pem"),
        DirError::Protocol(m) => {
            tracing::warn!(error = %m, "LDAP protocol error");
            ApiError::new(ErrorCode::LdapError,
                "the directory answered with an unexpected error",
            )
        }
    }
}

// ---------------------------------------------------------------- keys and secrets

/// The stored configuration, not decrypted.
async fn load_row(
    state: &Arc<AppState>,
    tid: &TenantId,
) -> ApiResult<Option<(LdapConfig, ConfigRow)>> {
    let row = state.tenants.run(tid, |c| st::config(c)).await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let cfg: LdapConfig = serde_json::from_str(&r.config).map_err(ApiError::internal)?;
            Ok(Some((cfg, r)))
        }
    }
}

fn open_string(
    state: &AppState,
    tid: &TenantId,
    col: &sealing::Sealed,
    ct: &[u8],
) -> StoreResult<Zeroizing<String>> {
    let pt = sealing::open(state, tid, col, &[], ct)?;
    let s = String::from_utf8(pt.to_vec())
        .map_err(|_| StoreError::Key(format!("{} is not UTF-8", col.name())))?;
    Ok(Zeroizing::new(s))
}

/// The stored configuration row with its secrets opened (blocking); read again when a key
/// rotation retired the DEK of the row between the read and the key lookup.
fn load_secrets_blocking(
    state: &AppState,
    tid: &TenantId,
) -> StoreResult<Option<(ConfigRow, Secrets)>> {
    sealing::reread(|| {
        let db = state.tenants.get_blocking(tid)?;
        let row = {
            let c = db.lock();
            st::config(&c)?
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let bind_password =
            open_string(state, tid, &sealing::LDAP_BIND_PASSWORD, &row.bind_password)?;
        let client_key_pem = match &row.client_key {
            Some(ct) => Some(open_string(state, tid, &sealing::LDAP_CLIENT_KEY, ct)?),
            None => None,
        };
        Ok(Some((
            row,
            Secrets {
                bind_password,
                client_key_pem,
            },
        )))
    })
}

/// The stored configuration with its secrets in clear.
async fn load_with_secrets(
    state: &Arc<AppState>,
    tid: &TenantId,
) -> ApiResult<Option<(LdapConfig, ConfigRow, Secrets)>> {
    let (st, t) = (state.clone(), tid.clone());
    let loaded = tokio::task::spawn_blocking(move || load_secrets_blocking(&st, &t))
        .await
        .map_err(ApiError::internal)??;
    match loaded {
        None => Ok(None),
        Some((row, secrets)) => {
            let cfg: LdapConfig = serde_json::from_str(&row.config).map_err(ApiError::internal)?;
            Ok(Some((cfg, row, secrets)))
        }
    }
}

/// Whether LDAP sign-in is on in the tenant store `db` — for a pass over every tenant through
/// `TenantStores::for_pass` (blocking), which does not leave the store open nor evict the
/// stores requests keep open.
///
/// Errors: the store read, or a configuration row that does not parse (`internal`).
pub fn enabled_in(db: &crate::store::Db) -> ApiResult<bool> {
    let row = st::config(&db.lock())?;
    let cfg: Option<LdapConfig> = row
        .map(|r| serde_json::from_str(&r.config))
        .transpose()
        .map_err(ApiError::internal)?;
    Ok(cfg.is_some_and(|c| c.enabled))
}

/// Whether LDAP login is on for a tenant.
pub async fn enabled(state: &Arc<AppState>, tid: &TenantId) -> ApiResult<bool> {
    Ok(load_row(state, tid).await?.is_some_and(|(c, _)| c.enabled))
}

// ---------------------------------------------------------------- configuration

/// The current configuration (secrets reported as set/unset only); 404 when none.
pub async fn get_config(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<LdapConfigView> {
    let tid = ctx.tenant.clone();
    let (cfg, row) = load_row(state, &tid)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(LdapConfigView::new(
        &cfg,
        row.client_key.is_some(),
        row.updated_at,
        row.updated_by,
    ))
}

fn changed_fields(old: Option<&LdapConfig>, new: &LdapConfig) -> Vec<String> {
    let new_v = serde_json::to_value(new).unwrap_or_default();
    let old_v = old.map(|o| serde_json::to_value(o).unwrap_or_default());
    let mut out = Vec::new();
    if let Some(map) = new_v.as_object() {
        for (k, v) in map {
            if old_v.as_ref().and_then(|o| o.get(k)) != Some(v) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// Replace the tenant's configuration (Owner). Validates every field (422 with `field`),
/// refuses a server outside the egress list (422 `egress_denied`), requires the bind password
/// on first save and whenever `url` or `ca_pem` changes, seals the secrets with the tenant
/// DEK, and writes the row and one `sso.config_change` audit row in one transaction. A PUT
/// that changes nothing writes nothing.
pub async fn put_config(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    input: LdapConfigInput,
) -> ApiResult<LdapConfigView> {
    let tid = ctx.tenant.clone();
    let cfg = input.validate().map_err(field_error)?;
    let (previous, prev_secrets) = match load_with_secrets(state, &tid).await? {
        Some((cfg, row, secrets)) => (Some((cfg, row)), Some(secrets)),
        None => (None, None),
    };
    let same_target = previous.as_ref().is_some_and(|(o, _)| {
        o.url == cfg.url && o.starttls == cfg.starttls && o.ca_pem == cfg.ca_pem
    });

    // Bind password: given, or kept only when the server and its trust anchors are unchanged.
    let (bind_password, bind_changed) = match (&input.bind_password, &prev_secrets) {
        (Some(pw), prev) => {
            let same = prev
                .as_ref()
                .is_some_and(|s| ct_eq(s.bind_password.as_bytes(), pw.as_bytes()));
            (pw.clone(), !same)
        }
        (None, Some(s)) if same_target => (s.bind_password.clone(), false),
        (None, _) => return Err(ApiError::invalid(
            "bind_password",
            "bind_password is required on first configuration and whenever url or ca_pem changes",
        )),
    };
    let (client_key, key_changed) =
        match (&cfg.client_cert_pem, &input.client_key_pem, &prev_secrets) {
            (None, _, prev) => (
                None,
                prev.as_ref().is_some_and(|s| s.client_key_pem.is_some()),
            ),
            (Some(_), Some(k), prev) => {
                let same = prev
                    .as_ref()
                    .and_then(|s| s.client_key_pem.as_ref())
                    .is_some_and(|old| ct_eq(old.as_bytes(), k.as_bytes()));
                (Some(k.clone()), !same)
            }
            (Some(_), None, Some(s)) if s.client_key_pem.is_some() => {
                (s.client_key_pem.clone(), false)
            }
            (Some(_), None, _) => {
                return Err(ApiError::invalid(
                    "client_key_pem",
                    "client_cert_pem needs client_key_pem",
                ))
            }
        };
    client::tls_config(
        &cfg.ca_pem,
        cfg.client_cert_pem.as_deref(),
        client_key.as_ref().map(|k| k.as_str()),
    )
    .map_err(|(f, m)| ApiError::invalid(f, m))?;

    let ep = cfg.endpoint().map_err(field_error)?;
    state
        .egress
        .check_target(
            &ep.host,
            ep.port,
            std::time::Duration::from_millis(cfg.connect_timeout_ms),
        )
        .await
        .map_err(|d| ApiError::new(ErrorCode::EgressDenied, d.to_string()).field("url"))?;

    let changed = changed_fields(previous.as_ref().map(|(c, _)| c), &cfg);
    if changed.is_empty() && !bind_changed && !key_changed {
        if let Some((c, row)) = previous {
            return Ok(LdapConfigView::new(
                &c,
                row.client_key.is_some(),
                row.updated_at,
                row.updated_by,
            ));
        }
    }

    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "sso.config_change",
        Some("sso:ldap".to_string()),
    )
    .details(serde_json::json!({
        "provider": "ldap",
        "enabled": cfg.enabled,
        "url": cfg.url,
        "starttls": cfg.starttls,
        "bind_dn": cfg.bind_dn,
        "changed": changed,
        "bind_password_changed": bind_changed,
        "client_key_changed": key_changed,
        "role_mapping_count": cfg.role_mapping.len(),
        "default_role": cfg.default_role.map(role_name),
    }));
    // Sealed (both secrets under one DEK version) and written through the sealing module: the
    // store checks the rotation fence and secrets sealed under a DEK the rotation is retiring
    // are sealed again under the new one.
    let mut values = vec![Plain::column(
        &tid,
        &sealing::LDAP_BIND_PASSWORD,
        &[],
        bind_password.as_bytes(),
    )];
    if let Some(k) = &client_key {
        values.push(Plain::column(
            &tid,
            &sealing::LDAP_CLIENT_KEY,
            &[],
            k.as_bytes(),
        ));
    }
    let config = serde_json::to_string(&cfg).map_err(ApiError::internal)?;
    let by = ctx.principal.actor_name();
    let row = sealing::write_sealed(state, &tid, values, |_, cts| {
        let mut cts = cts.into_iter();
        let row = ConfigRow {
            config: config.clone(),
            bind_password: cts.next().unwrap_or_default(),
            client_key: cts.next(),
            updated_at: crate::domain::now_rfc3339(),
            updated_by: by.clone(),
        };
        let (r2, ev) = (row.clone(), ev.clone());
        let tenants = state.tenants.clone();
        let t = tid.clone();
        async move {
            tenants
                .run(&t, move |c| st::put_config(c, &r2, &ev))
                .await?;
            Ok(row)
        }
    })
    .await?;
    super::auth::sign_in_methods_changed(&tid);
    Ok(LdapConfigView::new(
        &cfg,
        row.client_key.is_some(),
        row.updated_at,
        row.updated_by,
    ))
}

// ---------------------------------------------------------------- connection test and dry run

/// Result of `POST /api/v1/sso/ldap/test-connection`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionReport {
    /// Always true (failures are problem responses).
    pub ok: bool,
    /// `ldaps` or `starttls`.
    pub tls: String,
    /// The service account bound.
    pub service_bind: bool,
    /// The server advertises AD capabilities (nested groups via the in-chain rule).
    pub in_chain_supported: bool,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

async fn loaded(state: &Arc<AppState>, tid: &TenantId) -> ApiResult<(LdapConfig, Secrets)> {
    let (cfg, _, secrets) = load_with_secrets(state, tid)
        .await?
        .ok_or_else(not_configured)?;
    Ok((cfg, secrets))
}

/// Check TLS and the service bind of the saved configuration (Owner). Nothing is written.
pub async fn test_connection(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
) -> ApiResult<ConnectionReport> {
    let tid = ctx.tenant.clone();
    let (cfg, secrets) = loaded(state, &tid).await?;
    let start = Instant::now();
    let egress = state.egress.clone();
    let mut s = client::connect(&cfg, &secrets, &egress)
        .await
        .map_err(dir_error)?;
    let res = async {
        s.service_bind(&cfg, &secrets).await?;
        s.supports_in_chain().await
    }
    .await;
    let tls = s.tls.to_string();
    s.close().await;
    let in_chain = res.map_err(dir_error)?;
    Ok(ConnectionReport {
        ok: true,
        tls,
        service_bind: true,
        in_chain_supported: in_chain,
        elapsed_ms: start.elapsed().as_millis() as u64,
    })
}

/// Result of the mapping dry run.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunReport {
    /// The login name tested.
    pub username: String,
    /// `allow`, `deny` (no group matched and `default_role` is null), `not_found` or
    /// `ambiguous` (the filter matched more than one entry).
    pub outcome: String,
    /// DN found, as the directory returned it.
    pub dn: Option<String>,
    /// Email attribute value.
    pub email: Option<String>,
    /// Display-name attribute value.
    pub display_name: Option<String>,
    /// Groups resolved (direct and nested).
    pub groups: Vec<String>,
    /// `off`, `in_chain` or `recursive`.
    pub nested_method: String,
    /// The depth or count bound cut the group expansion short.
    pub truncated: bool,
    /// Rules that matched.
    pub matched: Vec<RoleMapping>,
    /// Role that would be given (`Owner`…`Viewer`), or null.
    pub role: Option<String>,
    /// The role is the default (no rule matched).
    pub by_default: bool,
}

fn check_username(field: &str, u: &str) -> ApiResult<String> {
    let t = u.trim();
    if t.is_empty() {
        return Err(ApiError::invalid(field, format!("{field} is required")));
    }
    if t.len() > MAX_USERNAME_BYTES {
        return Err(ApiError::invalid(field, "longer than 256 bytes"));
    }
    Ok(t.to_string())
}

/// Show what a login of `username` would give (Owner), without logging anyone in.
pub async fn dry_run(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    username: &str,
) -> ApiResult<DryRunReport> {
    let tid = ctx.tenant.clone();
    let username = check_username("username", username)?;
    let (cfg, secrets) = loaded(state, &tid).await?;
    let egress = state.egress.clone();
    let mut s = client::connect(&cfg, &secrets, &egress)
        .await
        .map_err(dir_error)?;
    let res = async {
        s.service_bind(&cfg, &secrets).await?;
        let entry = match s.find_user(&cfg, &username).await? {
            Lookup::NotFound => return Ok((Some("not_found"), None, None)),
            Lookup::Ambiguous => return Ok((Some("ambiguous"), None, None)),
            Lookup::Found(e) => e,
        };
        let groups = s.resolve_groups(&cfg, &entry, &username).await?;
        Ok::<_, DirError>((None, Some(entry), Some(groups)))
    }
    .await;
    s.close().await;
    let (early, entry, groups) = res.map_err(dir_error)?;
    let mut report = DryRunReport {
        username: username.clone(),
        outcome: early.unwrap_or("deny").to_string(),
        dn: None,
        email: None,
        display_name: None,
        groups: Vec::new(),
        nested_method: dir::NestedMethod::Off.as_str().to_string(),
        truncated: false,
        matched: Vec::new(),
        role: None,
        by_default: false,
    };
    if let (Some(e), Some(g)) = (entry, groups) {
        let d = mapping::decide(&g.dns, &cfg.role_mapping, cfg.default_role);
        report.outcome = if d.role.is_some() { "allow" } else { "deny" }.into();
        report.dn = Some(e.dn);
        report.email = e.email;
        report.display_name = e.display_name;
        report.groups = g.dns;
        report.nested_method = g.method.as_str().into();
        report.truncated = g.truncated;
        report.matched = d
            .matched
            .iter()
            .map(|m| RoleMapping {
                group_dn: m.group_dn.clone(),
                role: role_name(m.role).into(),
            })
            .collect();
        report.role = d.role.map(|r| role_name(r).to_string());
        report.by_default = d.by_default;
    }
    Ok(report)
}

// ---------------------------------------------------------------- login

/// A successful directory authentication, before provisioning.
pub struct Authenticated {
    /// The directory's view of the member.
    pub user: DirectoryUser,
    /// Role given.
    pub role: Role,
}

/// Why a directory login was refused (audit `reason`); every one is a 401 to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No entry matched the filter.
    UnknownUser,
    /// More than one entry matched.
    AmbiguousUser,
    /// The user bind failed.
    InvalidCredentials,
    /// No mapped group and `default_role` is null. Carries nothing; the DN key is returned
    /// separately so linked sessions can end.
    NoMatchingGroup,
    /// The entry has no usable email.
    MissingEmail,
}

impl Refusal {
    /// Audit reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownUser => "unknown_user",
            Refusal::AmbiguousUser => "ambiguous_user",
            Refusal::InvalidCredentials => "invalid_credentials",
            Refusal::NoMatchingGroup => "no_matching_group",
            Refusal::MissingEmail => "missing_email",
        }
    }
}

/// Search-then-bind `username` with `password` against the tenant's directory and map the
/// role. `Ok(Err(refusal, dn_key))` for a refused login; `Err` when the directory is
/// unavailable or misconfigured (the caller answers 503). The password must be non-empty
/// (checked by the caller before any traffic; checked again here).
pub async fn authenticate(
    state: &Arc<AppState>,
    tid: &TenantId,
    username: &str,
    password: &str,
) -> ApiResult<Result<Authenticated, (Refusal, Option<String>)>> {
    if password.is_empty() {
        return Ok(Err((Refusal::InvalidCredentials, None)));
    }
    let (cfg, secrets) = loaded(state, tid).await?;
    if !cfg.enabled {
        return Ok(Err((Refusal::UnknownUser, None)));
    }
    let egress = state.egress.clone();
    let overall = std::time::Duration::from_millis(cfg.connect_timeout_ms + 3 * cfg.op_timeout_ms);
    let work = tokio::time::timeout(overall, async {
        let mut s = client::connect(&cfg, &secrets, &egress).await?;
        let res = async {
            s.service_bind(&cfg, &secrets).await?;
            let entry = match s.find_user(&cfg, username).await? {
                Lookup::NotFound => return Ok(Err((Refusal::UnknownUser, None))),
                Lookup::Ambiguous => return Ok(Err((Refusal::AmbiguousUser, None))),
                Lookup::Found(e) => e,
            };
            let key = dn::key(&entry.dn);
            if !s.user_bind(&entry.dn, password).await? {
                return Ok(Err((Refusal::InvalidCredentials, key)));
            }
            // Back to the service identity for group lookups.
            s.service_bind(&cfg, &secrets).await?;
            let groups = s.resolve_groups(&cfg, &entry, username).await?;
            Ok(Ok((entry, groups)))
        }
        .await;
        s.close().await;
        res
    })
    .await;
    let outcome = work.unwrap_or(Err(DirError::Timeout));
    let (entry, groups) = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(refusal)) => return Ok(Err(refusal)),
        Err(e) => {
            // Misconfiguration (service bind, TLS material, egress) is the Owner's to fix
            // (test-connection names it); the person logging in gets the one 503.
            tracing::warn!(tenant = %tid, error = %e, "LDAP login could not complete");
            return Err(unavailable());
        }
    };
    let Some(dn_key) = dn::key(&entry.dn) else {
        return Err(unavailable());
    };
    let decision = mapping::decide(&groups.dns, &cfg.role_mapping, cfg.default_role);
    let Some(role) = decision.role else {
        return Ok(Err((Refusal::NoMatchingGroup, Some(dn_key))));
    };
    let Some(email) = entry.email.as_deref().and_then(|m| Email::parse(m).ok()) else {
        return Ok(Err((Refusal::MissingEmail, Some(dn_key))));
    };
    Ok(Ok(Authenticated {
        user: DirectoryUser {
            dn: entry.dn,
            dn_key,
            username: username.to_string(),
            email: email.as_str().to_string(),
            display_name: entry.display_name,
            role: role.as_str().to_string(),
        },
        role,
    }))
}

/// What provisioning answered for the login.
pub enum LoginResult {
    /// Session stored.
    Ok {
        /// The session principal.
        principal: Principal,
        /// Session id (secret).
        session: String,
        /// CSRF token (secret).
        csrf_token: String,
    },
    /// Refused with an audit reason (`user_disabled`, `email_conflict`, `last_owner`).
    Refused(&'static str),
}

/// Create or update the member and open a session, auditing `login.success` (source `ldap`)
/// and, when it happens, `member.add` or `member.role_change` in the same transaction.
pub async fn provision(
    state: &Arc<AppState>,
    tid: &TenantId,
    a: Authenticated,
    client: &ClientInfo,
) -> ApiResult<LoginResult> {
    let session = token::new_token(TokenKind::UserSession, tid.as_str());
    let csrf_token = token::random_secret();
    let ns = NewSession {
        id_hash: token::token_hash(&session),
        csrf_hash: token::token_hash(&csrf_token),
        now: unix_now(),
    };
    let role = a.role;
    let ns2 = ns.clone();
    let client2 = client.clone();
    let tid2 = tid.clone();
    let user = a.user.clone();
    let max = super::license::tenant_entitlements(state, tid)
        .await?
        .max_users;
    let res = state
        .tenants
        .run(tid, move |c| {
            st::provision_login(c, &user, &ns2, max, |u, prev| {
                let p = Principal::User {
                    tenant: tid2.clone(),
                    user_id: u.id.clone(),
                    email: u.email.clone(),
                    role,
                    session_hash: ns2.id_hash.clone(),
                    csrf_hash: ns2.csrf_hash.clone(),
                    must_change_password: false,
                };
                let actor = p.actor(&client2);
                let target = Some(format!("member:{}", u.email));
                let mut evs = Vec::new();
                match prev {
                    None => evs.push(
                        NewAuditEvent::new(&actor, "member.add", target.clone()).details(
                            serde_json::json!({"role": u.role, "member_id": u.id, "source": "ldap"}),
                        ),
                    ),
                    Some(old) if old != u.role => evs.push(
                        NewAuditEvent::new(&actor, "member.role_change", target.clone()).details(
                            serde_json::json!({"from": old, "to": u.role, "member_id": u.id, "source": "ldap"}),
                        ),
                    ),
                    Some(_) => {}
                }
                evs.push(
                    NewAuditEvent::new(&actor, "login.success", target)
                        .details(serde_json::json!({"source": "ldap", "role": u.role})),
                );
                evs
            })
        })
        .await;
    let res = match res {
        Ok(r) => r,
        // Two first logins of one entry racing: the loser's insert hits a unique index.
        Err(StoreError::Conflict(Conflict::Constraint(_))) => Provisioned::EmailConflict,
        Err(e) => return Err(e.into()),
    };
    Ok(match res {
        Provisioned::Ok { user, .. } => LoginResult::Ok {
            principal: Principal::User {
                tenant: tid.clone(),
                user_id: user.id,
                email: user.email,
                role,
                session_hash: ns.id_hash,
                csrf_hash: ns.csrf_hash,
                must_change_password: false,
            },
            session,
            csrf_token,
        },
        Provisioned::Disabled => LoginResult::Refused("user_disabled"),
        Provisioned::EmailConflict => LoginResult::Refused("email_conflict"),
        Provisioned::LastOwner => LoginResult::Refused("last_owner"),
        Provisioned::UserLimit => LoginResult::Refused("plan_limit"),
    })
}

/// The directory refused access to a linked member (no mapped group): end their sessions and
/// audit the failure in one transaction.
pub async fn revoke_linked(
    state: &Arc<AppState>,
    tid: &TenantId,
    dn_key: String,
    events: Vec<NewAuditEvent>,
) -> ApiResult<()> {
    state
        .tenants
        .run(tid, move |c| {
            st::revoke_linked_sessions(c, &dn_key, &events).map(|_| ())
        })
        .await?;
    Ok(())
}
