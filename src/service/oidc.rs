//! OpenID Connect single sign-on use cases (issue 21): the tenant's configuration
//! (`GET|PUT|DELETE /api/v1/sso/oidc`, Owner; audited `sso.oidc.save` / `sso.oidc.delete`
//! without secrets), the connection test and the claims dry run, and sign-in
//! (`/api/v1/auth/oidc/start` → provider → `/api/v1/auth/oidc/callback`).
//!
//! Rules:
//! - the client secret is sealed with the tenant DEK through [`super::sealing`]
//!   ([`sealing::OIDC_CLIENT_SECRET`], rotation-fenced) and leaves this module only towards the
//!   token endpoint;
//! - the issuer's host must pass `egress.allow` on save, and every request goes through the
//!   egress policy ([`crate::net::https`]);
//! - `redirect_uri` = `public_url` + `/api/v1/auth/oidc/callback`, never from request headers;
//! - `state` (hashed), `nonce` and the PKCE verifier are kept server-side per sign-in, bound to
//!   the browser by a random value in the `fg_oidc` cookie (hashed server-side), single use,
//!   valid [`PENDING_TTL_SECS`];
//! - identity is (issuer, subject); a first sign-in links an existing member only through
//!   `link_claim` = SCIM `externalId`, never by e-mail; otherwise JIT within the seats, or a
//!   refusal; disabled members are refused;
//! - roles: the highest mapped group wins (as LDAP); with no mapped group a member keeps the
//!   role they have (an Owner's manual role stays), a new member gets `default_role`, and
//!   `default_role: null` refuses.
//!
//! Every refusal is audited `login.failure` with `method: oidc` and a `reason`; success is
//! `login.success` with `method: oidc`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::sealing::{self, Plain};
use super::{unix_now, AppState, ClientInfo, Principal, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::auth::ldap::config::role_name;
use crate::auth::oidc::{
    self as proto, Discovery, OidcConfig, OidcConfigInput, OidcConfigView, ProviderError,
    TokenRefusal, Verified,
};
use crate::crypto::ct_eq;
use crate::crypto::token::{self, TokenKind};
use crate::domain::{Role, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::catalog;
use crate::store::oidc::{self as st, ConfigRow, Match, NewSession, Resolved, SsoUser, Taken};
use crate::store::{audit, StoreError, StoreResult};

/// How long a started sign-in may take (seconds): the `fg_oidc` cookie's `Max-Age` and the
/// pending row's life.
pub const PENDING_TTL_SECS: i64 = 600;
/// How long discovery and JWKS stay cached (seconds); an unknown `kid` refetches the JWKS once
/// earlier.
pub const CACHE_TTL_SECS: u64 = 3600;
/// The callback path appended to `public_url`.
pub const CALLBACK_PATH: &str = "/api/v1/auth/oidc/callback";

// ---------------------------------------------------------------- cache

#[derive(Clone)]
struct Cached {
    issuer: String,
    ca_pem: Option<String>,
    discovery: Discovery,
    jwks: Arc<JwkSet>,
    at: Instant,
}

/// Per-tenant cache of the provider's discovery document and JWKS (in memory; cleared when the
/// tenant's configuration changes).
#[derive(Default)]
pub struct OidcCache {
    inner: parking_lot::Mutex<HashMap<TenantId, Cached>>,
}

impl OidcCache {
    fn get(&self, t: &TenantId, cfg: &OidcConfig) -> Option<Cached> {
        let m = self.inner.lock();
        m.get(t)
            .filter(|c| {
                c.issuer == cfg.issuer
                    && c.ca_pem == cfg.ca_pem
                    && c.at.elapsed().as_secs() < CACHE_TTL_SECS
            })
            .cloned()
    }
    fn put(&self, t: &TenantId, c: Cached) {
        self.inner.lock().insert(t.clone(), c);
    }
    fn forget(&self, t: &TenantId) {
        self.inner.lock().remove(t);
    }
}

async fn provider(
    state: &Arc<AppState>,
    t: &TenantId,
    cfg: &OidcConfig,
    refresh: bool,
) -> Result<Cached, ProviderError> {
    if !refresh {
        if let Some(c) = state.oidc.get(t, cfg) {
            return Ok(c);
        }
    }
    let discovery = proto::discover(&state.egress, cfg).await?;
    let jwks = proto::fetch_jwks(&state.egress, cfg, &discovery).await?;
    let c = Cached {
        issuer: cfg.issuer.clone(),
        ca_pem: cfg.ca_pem.clone(),
        discovery,
        jwks: Arc::new(jwks),
        at: Instant::now(),
    };
    state.oidc.put(t, c.clone());
    Ok(c)
}

// ---------------------------------------------------------------- configuration

fn redirect_uri(state: &AppState) -> Option<String> {
    state
        .settings
        .public_url
        .as_deref()
        .map(|u| format!("{}{CALLBACK_PATH}", u.trim_end_matches('/')))
}

fn not_configured() -> ApiError {
    ApiError::new(
        ErrorCode::OidcNotConfigured,
        "single sign-on is not configured for this tenant (PUT /api/v1/sso/oidc)",
    )
}

fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Egress(m) => ApiError::new(ErrorCode::EgressDenied, m).field("issuer"),
        ProviderError::Tls(_, m) => ApiError::new(ErrorCode::TlsFailed, m),
        ProviderError::Unavailable(m) => ApiError::new(ErrorCode::OidcProviderError, m),
    }
}

async fn load_row(
    state: &Arc<AppState>,
    t: &TenantId,
) -> ApiResult<Option<(OidcConfig, ConfigRow)>> {
    match state.tenants.run(t, |c| st::config(c)).await? {
        None => Ok(None),
        Some(r) => {
            let cfg: OidcConfig = serde_json::from_str(&r.config).map_err(ApiError::internal)?;
            Ok(Some((cfg, r)))
        }
    }
}

fn load_secret_blocking(
    state: &AppState,
    t: &TenantId,
) -> StoreResult<Option<(ConfigRow, Zeroizing<String>)>> {
    sealing::reread(|| {
        let db = state.tenants.get_blocking(t)?;
        let row = {
            let c = db.lock();
            st::config(&c)?
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let pt = sealing::open(
            state,
            t,
            &sealing::OIDC_CLIENT_SECRET,
            &[],
            &row.client_secret,
        )?;
        let s = String::from_utf8(pt.to_vec())
            .map_err(|_| StoreError::Key("oidc_config.client_secret is not UTF-8".into()))?;
        Ok(Some((row, Zeroizing::new(s))))
    })
}

async fn load_with_secret(
    state: &Arc<AppState>,
    t: &TenantId,
) -> ApiResult<Option<(OidcConfig, ConfigRow, Zeroizing<String>)>> {
    let (s, tid) = (state.clone(), t.clone());
    let loaded = tokio::task::spawn_blocking(move || load_secret_blocking(&s, &tid))
        .await
        .map_err(ApiError::internal)??;
    match loaded {
        None => Ok(None),
        Some((row, secret)) => {
            let cfg: OidcConfig = serde_json::from_str(&row.config).map_err(ApiError::internal)?;
            Ok(Some((cfg, row, secret)))
        }
    }
}

/// The current configuration (the secret reported as set only); 404 when none.
pub async fn get_config(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<OidcConfigView> {
    let (cfg, row) = load_row(state, &ctx.tenant)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(OidcConfigView::new(
        &cfg,
        redirect_uri(state),
        row.updated_at,
        row.updated_by,
    ))
}

/// Whether single sign-on (OpenID Connect) is on in the tenant store `db` — for a pass over every tenant through
/// `TenantStores::for_pass` (blocking), which does not leave the store open nor evict the
/// stores requests keep open.
///
/// Errors: the store read, or a configuration row that does not parse (`internal`).
pub fn enabled_in(db: &crate::store::Db) -> ApiResult<bool> {
    let row = st::config(&db.lock())?;
    let cfg: Option<OidcConfig> = row
        .map(|r| serde_json::from_str(&r.config))
        .transpose()
        .map_err(ApiError::internal)?;
    Ok(cfg.is_some_and(|c| c.enabled))
}

/// Whether single sign-on is on for the tenant named `tenant_ref` (id or name); false for an
/// unknown tenant (same answer as a tenant without it).
pub async fn available(state: &Arc<AppState>, tenant_ref: &str) -> ApiResult<bool> {
    let r = tenant_ref.trim().to_string();
    if r.is_empty() {
        return Ok(false);
    }
    let Some(t) = state
        .catalog
        .run(move |c| catalog::find_tenant(c, &r))
        .await?
    else {
        return Ok(false);
    };
    Ok(load_row(state, &t.id)
        .await?
        .is_some_and(|(c, _)| c.enabled))
}

fn changed_fields(old: Option<&OidcConfig>, new: &OidcConfig) -> Vec<String> {
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

/// Replace the tenant's configuration (Owner): validates (422 with `field`), refuses an issuer
/// host outside `egress.allow` (422 `egress_denied`), requires `client_secret` on first save and
/// whenever `issuer` or `ca_pem` changes, seals the secret and writes the row with one
/// `sso.oidc.save` audit row (no secret) in one transaction.
pub async fn put_config(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    input: OidcConfigInput,
) -> ApiResult<OidcConfigView> {
    let tid = ctx.tenant.clone();
    let cfg = input
        .validate()
        .map_err(|e| ApiError::invalid(&e.field, e.detail))?;
    let previous = load_with_secret(state, &tid).await?;
    let same_target = previous
        .as_ref()
        .is_some_and(|(o, _, _)| o.issuer == cfg.issuer && o.ca_pem == cfg.ca_pem);
    let (secret, secret_changed) = match (&input.client_secret, &previous) {
        (Some(s), prev) => {
            let same = prev
                .as_ref()
                .is_some_and(|(_, _, old)| ct_eq(old.as_bytes(), s.as_bytes()));
            (s.clone(), !same)
        }
        (None, Some((_, _, old))) if same_target => (old.clone(), false),
        (None, _) => {
            return Err(ApiError::invalid(
                "client_secret",
                "client_secret is required on first configuration and whenever issuer or ca_pem changes",
            ))
        }
    };
    let (host, port) = cfg.issuer_host_port();
    state
        .egress
        .check_target(&host, port, std::time::Duration::from_secs(5))
        .await
        .map_err(|d| ApiError::new(ErrorCode::EgressDenied, d.to_string()).field("issuer"))?;

    let changed = changed_fields(previous.as_ref().map(|(c, _, _)| c), &cfg);
    if let Some((c, row, _)) = &previous {
        if changed.is_empty() && !secret_changed {
            return Ok(OidcConfigView::new(
                c,
                redirect_uri(state),
                row.updated_at.clone(),
                row.updated_by.clone(),
            ));
        }
    }
    let ev = NewAuditEvent::new(&ctx.actor(), "sso.oidc.save", Some("sso:oidc".to_string()))
        .details(serde_json::json!({
            "enabled": cfg.enabled,
            "issuer": cfg.issuer,
            "client_id": cfg.client_id,
            "changed": changed,
            "client_secret_changed": secret_changed,
            "role_mapping_count": cfg.role_mapping.len(),
            "default_role": cfg.default_role.map(role_name),
            "link_claim": cfg.link_claim,
            "jit_provisioning": cfg.jit_provisioning,
        }));
    let values = vec![Plain::column(
        &tid,
        &sealing::OIDC_CLIENT_SECRET,
        &[],
        secret.as_bytes(),
    )];
    let config = serde_json::to_string(&cfg).map_err(ApiError::internal)?;
    let by = ctx.principal.actor_name();
    let row = sealing::write_sealed(state, &tid, values, |_, cts| {
        let row = ConfigRow {
            config: config.clone(),
            client_secret: cts.into_iter().next().unwrap_or_default(),
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
    state.oidc.forget(&tid);
    super::auth::sign_in_methods_changed(&tid);
    Ok(OidcConfigView::new(
        &cfg,
        redirect_uri(state),
        row.updated_at,
        row.updated_by,
    ))
}

/// Remove the configuration (Owner); audited `sso.oidc.delete`. 404 when none. Member links
/// (issuer, subject) are kept.
pub async fn delete_config(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<()> {
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "sso.oidc.delete",
        Some("sso:oidc".to_string()),
    );
    let existed = state
        .tenants
        .run(&ctx.tenant, move |c| st::delete_config(c, &ev))
        .await?;
    state.oidc.forget(&ctx.tenant);
    super::auth::sign_in_methods_changed(&ctx.tenant);
    if existed {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// Result of `POST /api/v1/sso/oidc/test-connection`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionReport {
    /// Always true (failures are problem responses).
    pub ok: bool,
    /// The issuer the discovery document names (equal to the configured one).
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// JWKS URL.
    pub jwks_uri: String,
    /// Keys in the JWKS.
    pub keys: usize,
    /// The redirect URI to register at the provider (null while `public_url` is unset).
    pub redirect_uri: Option<String>,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// Fetch discovery and JWKS of the saved configuration afresh (Owner). Nothing is written.
pub async fn test_connection(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
) -> ApiResult<ConnectionReport> {
    let (cfg, _) = load_row(state, &ctx.tenant)
        .await?
        .ok_or_else(not_configured)?;
    let start = Instant::now();
    let p = provider(state, &ctx.tenant, &cfg, true)
        .await
        .map_err(provider_error)?;
    Ok(ConnectionReport {
        ok: true,
        issuer: p.discovery.issuer.clone(),
        authorization_endpoint: p.discovery.authorization_endpoint.clone(),
        token_endpoint: p.discovery.token_endpoint.clone(),
        jwks_uri: p.discovery.jwks_uri.clone(),
        keys: p.jwks.keys.len(),
        redirect_uri: redirect_uri(state),
        elapsed_ms: start.elapsed().as_millis() as u64,
    })
}

/// Body of the dry run: a claims object as the provider would put it in the ID token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// Sample claims, e.g. `{"sub": "…", "email": "…", "groups": ["…"], "oid": "…"}`.
    #[schema(value_type = Object)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Result of the dry run.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunReport {
    /// `allow` or `deny`.
    pub outcome: String,
    /// Why a sign-in would be refused (`unknown_user`, `no_matching_group`, …), else null.
    pub reason: Option<String>,
    /// How the member is found: `identity` (issuer, subject), `link_claim` (SCIM
    /// `externalId`), `jit` (would be created); null when refused.
    pub matched_by: Option<String>,
    /// The member's id (null for one that would be created or when refused).
    pub member_id: Option<String>,
    /// The member's e-mail.
    pub email: Option<String>,
    /// Role the sign-in would give (`Owner`…`Viewer`).
    pub role: Option<String>,
    /// Groups read from the claims.
    pub groups: Vec<String>,
    /// Groups of matching rules.
    pub matched_groups: Vec<String>,
}

/// What the role decision and the member lookup give for `claims` (shared by sign-in and the
/// dry run). `Err(reason)` for a refusal before the store is asked.
fn sso_user(cfg: &OidcConfig, id: &proto::Identity) -> Result<SsoUser, &'static str> {
    let d = proto::decide(&id.groups, &cfg.role_mapping);
    if d.mapped.is_none() && cfg.default_role.is_none() {
        return Err("no_matching_group");
    }
    Ok(SsoUser {
        issuer: cfg.issuer.clone(),
        subject: id.subject.clone(),
        link_value: id.link_value.clone(),
        email: id.email.as_ref().map(|e| e.as_str().to_string()),
        display_name: id.name.clone(),
        mapped_role: d.mapped.map(|r| r.as_str().to_string()),
        default_role: cfg.default_role.map(|r| r.as_str().to_string()),
        jit: cfg.jit_provisioning,
    })
}

fn display_role(r: &str) -> String {
    Role::parse_member(r)
        .map(|r| role_name(r).to_string())
        .unwrap_or_else(|_| r.to_string())
}

/// Show which member a sign-in with `claims` would match or create and its role (Owner).
/// Nothing is written.
pub async fn dry_run(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    req: DryRunRequest,
) -> ApiResult<DryRunReport> {
    let (cfg, _) = load_row(state, &ctx.tenant)
        .await?
        .ok_or_else(not_configured)?;
    let id = proto::identity(&cfg, &req.claims)
        .ok_or_else(|| ApiError::invalid("claims.sub", "the claims need a non-empty sub"))?;
    let d = proto::decide(&id.groups, &cfg.role_mapping);
    let mut report = DryRunReport {
        outcome: "deny".into(),
        reason: None,
        matched_by: None,
        member_id: None,
        email: None,
        role: None,
        groups: id.groups.clone(),
        matched_groups: d.matched.clone(),
    };
    let u = match sso_user(&cfg, &id) {
        Ok(u) => u,
        Err(reason) => {
            report.reason = Some(reason.into());
            return Ok(report);
        }
    };
    let max = super::license::tenant_entitlements(state, &ctx.tenant)
        .await?
        .max_users;
    match state
        .tenants
        .run(&ctx.tenant, move |c| st::resolve(c, &u, max))
        .await?
    {
        Resolved::Refused(reason) => report.reason = Some(reason.into()),
        Resolved::Ok { user, how, .. } => {
            report.outcome = "allow".into();
            report.matched_by = Some(how.as_str().into());
            report.member_id = (how != Match::Created).then(|| user.id.clone());
            report.email = Some(user.email.clone());
            report.role = Some(display_role(&user.role));
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------- sign-in

/// Where a sign-in goes next.
pub enum SignIn {
    /// Send the browser to the provider (`location`) with the `fg_oidc` cookie value.
    Redirect {
        /// Authorization URL.
        location: String,
        /// `fg_oidc` cookie value: `<tenant id>.<binding>`.
        cookie: String,
    },
    /// Refused: the dashboard's sign-in page names `reason`.
    Refused(&'static str),
}

/// The refusal reasons the dashboard explains (the `sso_error` query value of `/signin`).
pub const REASONS: &[&str] = &[
    "not_configured",
    "provider_unavailable",
    "provider_refused",
    "state_missing",
    "state_unknown",
    "state_reused",
    "state_expired",
    "state_mismatch",
    "token_exchange_failed",
    "alg_not_allowed",
    "unknown_key",
    "bad_signature",
    "wrong_issuer",
    "wrong_audience",
    "token_expired",
    "clock_skew",
    "nonce_mismatch",
    "invalid_token",
    "unknown_user",
    "user_disabled",
    "email_conflict",
    "missing_email",
    "identity_conflict",
    "last_owner",
    "plan_limit",
    "no_matching_group",
    "tenant_suspended",
];

async fn audit_failure(
    state: &Arc<AppState>,
    tid: Option<&TenantId>,
    client: &ClientInfo,
    account: Option<String>,
    reason: &'static str,
    extra: serde_json::Value,
) -> ApiResult<()> {
    let target = Some(match &account {
        Some(a) => format!("account:{a}"),
        None => "sso:oidc".to_string(),
    });
    let mut details = serde_json::json!({"method": "oidc", "reason": reason});
    if let (Some(d), Some(x)) = (details.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            d.insert(k.clone(), v.clone());
        }
    }
    let ev = NewAuditEvent::new(&client.anonymous_actor(account), "login.failure", target)
        .details(details);
    match tid {
        Some(t) => {
            state
                .tenants
                .run(t, move |c| audit::append_audit(c, &ev))
                .await?
        }
        None => {
            state
                .catalog
                .run(move |c| catalog::append_audit(c, &ev))
                .await?
        }
    }
    Ok(())
}

/// Start a sign-in for the tenant `tenant_ref` (id or name; the caller checked residency):
/// discovery (cached), a pending row with hashed state, nonce and PKCE verifier, and the
/// authorization URL. Unknown tenant, SSO off, `public_url` unset → `Refused("not_configured")`.
pub async fn start(
    state: &Arc<AppState>,
    tenant_ref: &str,
    client: &ClientInfo,
) -> ApiResult<SignIn> {
    let r = tenant_ref.trim().to_string();
    let row = if r.is_empty() {
        None
    } else {
        state
            .catalog
            .run(move |c| catalog::find_tenant(c, &r))
            .await?
    };
    let Some(t) = row else {
        return Ok(SignIn::Refused("not_configured"));
    };
    let tid = t.id.clone();
    let cfg = match load_row(state, &tid).await? {
        Some((c, _)) if c.enabled => c,
        _ => return Ok(SignIn::Refused("not_configured")),
    };
    let Some(redirect) = redirect_uri(state) else {
        tracing::warn!(tenant = %tid, "OIDC sign-in needs public_url in the configuration");
        audit_failure(
            state,
            Some(&tid),
            client,
            None,
            "not_configured",
            serde_json::json!({"detail": "public_url is not set"}),
        )
        .await?;
        return Ok(SignIn::Refused("not_configured"));
    };
    let p = match provider(state, &tid, &cfg, false).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(tenant = %tid, error = %e, "OIDC discovery failed");
            audit_failure(
                state,
                Some(&tid),
                client,
                None,
                "provider_unavailable",
                serde_json::json!({}),
            )
            .await?;
            return Ok(SignIn::Refused("provider_unavailable"));
        }
    };
    let (state_v, nonce, verifier, binding) = (
        proto::random_value(),
        proto::random_value(),
        proto::random_value(),
        proto::random_value(),
    );
    let location =
        proto::authorization_url(&p.discovery, &cfg, &redirect, &state_v, &nonce, &verifier)
            .map_err(|e| ApiError::internal(e.to_string()))?;
    let now = unix_now();
    let pending = st::Pending {
        state_hash: token::token_hash(&state_v),
        binding_hash: token::token_hash(&binding),
        nonce,
        verifier,
        created_at: now,
    };
    state
        .tenants
        .run(&tid, move |c| {
            st::insert_pending(c, &pending, now - 2 * PENDING_TTL_SECS)
        })
        .await?;
    Ok(SignIn::Redirect {
        location,
        cookie: format!("{}.{binding}", tid.as_str()),
    })
}

/// The callback's query (RFC 6749 §4.1.2 and §4.1.2.1).
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    /// Authorization code.
    pub code: Option<String>,
    /// State as sent.
    pub state: Option<String>,
    /// Error code from the provider.
    pub error: Option<String>,
    /// RFC 9207 issuer identification (checked when present).
    pub iss: Option<String>,
}

/// A finished sign-in.
pub enum Finished {
    /// Session stored.
    Ok {
        /// Session id (cookie, secret).
        session: String,
        /// CSRF token (handed to the dashboard once).
        csrf_token: String,
        /// Who.
        principal: Principal,
    },
    /// Refused (audited); the dashboard names `reason`.
    Refused(&'static str),
}

/// Finish a sign-in: check the browser binding (`cookie` = the `fg_oidc` value) and the state
/// (known, unused, not expired), exchange the code, verify the ID token, find/link/create the
/// member, apply the role and store the session. Every refusal is audited.
pub async fn callback(
    state: &Arc<AppState>,
    q: CallbackQuery,
    cookie: Option<String>,
    client: &ClientInfo,
) -> ApiResult<Finished> {
    // The tenant comes from our own cookie; without it nothing is known about the sign-in.
    let parsed = cookie.as_deref().and_then(|c| {
        let (t, b) = c.split_once('.')?;
        Some((TenantId::parse(t).ok()?, b.to_string()))
    });
    let Some((tid, binding)) = parsed else {
        audit_failure(
            state,
            None,
            client,
            None,
            "state_missing",
            serde_json::json!({"detail": "no sign-in cookie"}),
        )
        .await?;
        return Ok(Finished::Refused("state_missing"));
    };
    let refuse = |reason: &'static str, account: Option<String>, extra: serde_json::Value| {
        let (state, tid, client) = (state.clone(), tid.clone(), client.clone());
        async move {
            audit_failure(&state, Some(&tid), &client, account, reason, extra).await?;
            Ok::<_, ApiError>(Finished::Refused(reason))
        }
    };
    if state
        .catalog
        .run({
            let t = tid.clone();
            move |c| catalog::find_tenant(c, t.as_str())
        })
        .await?
        .is_none()
    {
        audit_failure(
            state,
            None,
            client,
            None,
            "state_unknown",
            serde_json::json!({}),
        )
        .await?;
        return Ok(Finished::Refused("state_unknown"));
    }
    let Some(state_v) = q.state.as_deref().filter(|s| !s.is_empty()) else {
        return refuse("state_missing", None, serde_json::json!({})).await;
    };
    // (`FLOWGUARD_FAULT_CLOCK=oidc:callback=<secs>` ages the state in debug-build tests.)
    let now = unix_now() + crate::fault::clock_offset("oidc:callback");
    let sh = token::token_hash(state_v);
    let pending = match state
        .tenants
        .run(&tid, move |c| st::take_pending(c, &sh, now))
        .await?
    {
        Taken::Unknown => return refuse("state_unknown", None, serde_json::json!({})).await,
        Taken::Reused => return refuse("state_reused", None, serde_json::json!({})).await,
        Taken::Fresh(p) => p,
    };
    if !ct_eq(
        token::token_hash(&binding).as_bytes(),
        pending.binding_hash.as_bytes(),
    ) {
        return refuse("state_mismatch", None, serde_json::json!({})).await;
    }
    if now - pending.created_at > PENDING_TTL_SECS {
        return refuse("state_expired", None, serde_json::json!({})).await;
    }
    if let Some(err) = &q.error {
        let e: String = err.chars().take(64).collect();
        return refuse("provider_refused", None, serde_json::json!({"error": e})).await;
    }
    let Some((cfg, _, secret)) = load_with_secret(state, &tid).await? else {
        return refuse("not_configured", None, serde_json::json!({})).await;
    };
    if !cfg.enabled {
        return refuse("not_configured", None, serde_json::json!({})).await;
    }
    if q.iss.as_deref().is_some_and(|i| i != cfg.issuer) {
        return refuse(
            "wrong_issuer",
            None,
            serde_json::json!({"detail": "iss parameter"}),
        )
        .await;
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return refuse(
            "provider_refused",
            None,
            serde_json::json!({"error": "no code"}),
        )
        .await;
    };
    let Some(redirect) = redirect_uri(state) else {
        return refuse("not_configured", None, serde_json::json!({})).await;
    };
    let p = match provider(state, &tid, &cfg, false).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(tenant = %tid, error = %e, "OIDC discovery failed");
            return refuse("provider_unavailable", None, serde_json::json!({})).await;
        }
    };
    let id_token = match proto::exchange_code(
        &state.egress,
        &cfg,
        &p.discovery,
        &secret,
        code,
        &pending.verifier,
        &redirect,
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(tenant = %tid, error = %e, "OIDC code exchange failed");
            return refuse(
                "token_exchange_failed",
                None,
                serde_json::json!({"detail": e.to_string()}),
            )
            .await;
        }
    };
    drop(secret);
    let mut verified = proto::verify_id_token(&id_token, &p.jwks, &cfg, &pending.nonce, now);
    if matches!(verified, Verified::KeyNotFound) {
        // Key rotation at the provider: refetch the JWKS once.
        verified = match provider(state, &tid, &cfg, true).await {
            Ok(p2) => proto::verify_id_token(&id_token, &p2.jwks, &cfg, &pending.nonce, now),
            Err(_) => Verified::Refused(TokenRefusal::UnknownKey),
        };
    }
    let claims = match verified {
        Verified::Claims(c) => c,
        Verified::KeyNotFound => {
            return refuse(
                TokenRefusal::UnknownKey.reason(),
                None,
                serde_json::json!({}),
            )
            .await
        }
        Verified::Refused(r) => return refuse(r.reason(), None, serde_json::json!({})).await,
    };
    let Some(id) = proto::identity(&cfg, &claims) else {
        return refuse("invalid_token", None, serde_json::json!({})).await;
    };
    let account = Some(format!("oidc:{}", id.subject));
    let extra = serde_json::json!({"issuer": cfg.issuer, "subject": id.subject});
    let user = match sso_user(&cfg, &id) {
        Ok(u) => u,
        Err(reason) => return refuse(reason, account, extra).await,
    };
    let tenant_row = state
        .catalog
        .run({
            let t = tid.clone();
            move |c| catalog::find_tenant(c, t.as_str())
        })
        .await?;
    if tenant_row.is_some_and(|t| t.status == catalog::TENANT_SUSPENDED) {
        return refuse("tenant_suspended", account, extra).await;
    }
    let max = super::license::tenant_entitlements(state, &tid)
        .await?
        .max_users;
    let session = token::new_token(TokenKind::UserSession, tid.as_str());
    let csrf_token = token::random_secret();
    let ns = NewSession {
        id_hash: token::token_hash(&session),
        csrf_hash: token::token_hash(&csrf_token),
        now,
    };
    let (ns2, client2, tid2, issuer) =
        (ns.clone(), client.clone(), tid.clone(), cfg.issuer.clone());
    let subject = id.subject.clone();
    let res = state
        .tenants
        .run(&tid, move |c| {
            st::provision_login(c, &user, &ns2, max, |u, how, prev| {
                let role = Role::parse_member(&u.role).unwrap_or(Role::Viewer);
                let p = Principal::User {
                    tenant: tid2.clone(),
                    user_id: u.id.clone(),
                    email: u.email.clone(),
                    role,
                    session_hash: ns2.id_hash.clone(),
                    csrf_hash: ns2.csrf_hash.clone(),
                    // The provider authenticated the member; no local password is involved (as
                    // for a directory login).
                    must_change_password: false,
                };
                let actor = p.actor(&client2);
                let target = Some(format!("member:{}", u.email));
                let mut evs = Vec::new();
                match prev {
                    None => evs.push(
                        NewAuditEvent::new(&actor, "member.add", target.clone()).details(
                            serde_json::json!({"role": u.role, "member_id": u.id, "source": "oidc"}),
                        ),
                    ),
                    Some(old) if old != u.role => evs.push(
                        NewAuditEvent::new(&actor, "member.role_change", target.clone()).details(
                            serde_json::json!({"from": old, "to": u.role, "member_id": u.id, "source": "oidc"}),
                        ),
                    ),
                    Some(_) => {}
                }
                evs.push(
                    NewAuditEvent::new(&actor, "login.success", target).details(serde_json::json!({
                        "method": "oidc",
                        "issuer": issuer,
                        "subject": subject,
                        "matched_by": how.as_str(),
                        "role": u.role,
                    })),
                );
                evs
            })
        })
        .await;
    let res = match res {
        Ok(r) => r,
        // Two first sign-ins racing: the loser hits a unique index.
        Err(StoreError::Conflict(_)) => Resolved::Refused("identity_conflict"),
        Err(e) => return Err(e.into()),
    };
    match res {
        Resolved::Refused(reason) => refuse(reason, account, extra).await,
        Resolved::Ok { user, .. } => {
            let role = Role::parse_member(&user.role).map_err(ApiError::internal)?;
            Ok(Finished::Ok {
                session,
                csrf_token,
                principal: Principal::User {
                    tenant: tid.clone(),
                    user_id: user.id.clone(),
                    email: user.email.clone(),
                    role,
                    session_hash: ns.id_hash,
                    csrf_hash: ns.csrf_hash,
                    must_change_password: false,
                },
            })
        }
    }
}
