//! `POST /api/v1/auth/login`, `POST /api/v1/auth/logout`, `GET /api/v1/me`,
//! `POST /api/v1/me/password`, and OpenID Connect sign-in (`GET /api/v1/auth/oidc/start`,
//! `/callback`, `/available`).

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require, SESSION_COOKIE};
use crate::service::principal::MeView;
use crate::service::{auth, oidc, AppState, ClientInfo, Principal};

/// Login body. `tenant` is the tenant id or its unique name; absent or null logs a
/// PlatformAdmin in to the catalog. The login name goes in `email` or its synonym `username`
/// (for directory accounts, whatever the tenant's `user_filter` expects, e.g. `alice`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Tenant id or name.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Email (or directory login name).
    #[serde(default)]
    pub email: Option<String>,
    /// Synonym of `email`; give one of the two.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (at most 1024 bytes); `null` counts as empty.
    #[serde(deserialize_with = "nullable_secret")]
    #[schema(value_type = String, format = Password)]
    pub password: Zeroizing<String>,
}

/// A required secret where JSON `null` means empty (refused as `empty_password`, like `""`);
/// a missing field is still a 422.
fn nullable_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    Ok(Zeroizing::new(
        Option::<String>::deserialize(d)?.unwrap_or_default(),
    ))
}

/// Directory login body (`POST /api/v1/auth/ldap/login`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LdapLoginRequest {
    /// Tenant id or name (required).
    pub tenant: String,
    /// Login name as the tenant's `user_filter` expects it (e.g. `alice`).
    pub username: String,
    /// Password; empty or `null` is refused before any directory traffic.
    #[serde(deserialize_with = "nullable_secret")]
    #[schema(value_type = String, format = Password)]
    pub password: Zeroizing<String>,
}

fn login_name(
    email: Option<String>,
    username: Option<String>,
) -> Result<(String, &'static str), ApiError> {
    match (email, username) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "username",
            "give email or username, not both",
        )),
        (Some(e), None) => Ok((e, "email")),
        (None, Some(u)) => Ok((u, "username")),
        (None, None) => Err(ApiError::invalid(
            "email",
            "email (or username) is required",
        )),
    }
}

/// Login result; the session itself is the `fg_session` cookie (HttpOnly; Secure; SameSite=Strict).
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `X-CSRF-Token` on every unsafe request made with the cookie.
    pub csrf_token: String,
    /// Who logged in.
    pub me: MeView,
}

fn session_cookie(value: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

fn me_view(p: &Principal, tenant_name: Option<String>, must_change: bool) -> MeView {
    let (kind, id, name) = match p {
        Principal::User { user_id, email, .. } => ("user", user_id.clone(), email.clone()),
        Principal::Platform {
            admin_id, email, ..
        } => ("platform_admin", admin_id.clone(), email.clone()),
        Principal::Agent { token_id, name, .. } => ("agent", token_id.clone(), name.clone()),
        Principal::Scim { token_id, name, .. } => ("scim", token_id.clone(), name.clone()),
    };
    MeView {
        kind,
        tenant_id: p.tenant().map(|t| t.to_string()),
        tenant_name,
        id,
        name,
        role: p.role(),
        must_change_password: must_change,
    }
}

/// Log in with email (or `username`) and password: a local account, else — when the tenant has
/// LDAP on — the directory.
///
/// Same 401 body for unknown tenant, unknown user and wrong password; 429 with `Retry-After`
/// after repeated failures from one address; 400 for a password over 1024 bytes; 503
/// `ldap_unavailable` when a directory login cannot reach the directory.
#[utoipa::path(tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = LoginResponse), (status = 401, body = crate::http::problem::Problem),
    (status = 429, body = crate::http::problem::Problem), (status = 503, body = crate::http::problem::Problem)))]
#[post("/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    client: ClientInfo,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let b = body.into_inner();
    // Residency first: a tenant id of another region → 421 before any lookup or counter.
    if let Some(t) = &b.tenant {
        crate::http::residency::check_tenant_ref(&state.settings, t)?;
    }
    let (name, field) = login_name(b.email, b.username)?;
    let out = auth::login(
        &state,
        auth::LoginInput {
            tenant: b.tenant,
            email: name,
            login_field: field,
            password: b.password,
            mode: auth::LoginMode::Any,
        },
        &client,
    )
    .await?;
    logged_in(&state, out).await
}

async fn logged_in(
    state: &std::sync::Arc<AppState>,
    out: auth::LoginOutcome,
) -> Result<HttpResponse, ApiError> {
    let max_age = i64::from(state.settings.session.absolute_hours) * 3600;
    let tenant_name = auth::tenant_name(state, &out.principal).await?;
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(out.session, max_age))
        .json(LoginResponse {
            csrf_token: out.csrf_token,
            me: me_view(&out.principal, tenant_name, out.must_change_password),
        }))
}

/// Log in through the tenant's directory only (search-then-bind; see `PUT /api/v1/sso/ldap`).
///
/// 401 with one body for unknown user, wrong or empty password, no mapped group; 503
/// `ldap_unavailable` when the directory cannot be reached over TLS or is slow; 429 after
/// repeated failures.
#[utoipa::path(tag = "auth", request_body = LdapLoginRequest, responses(
    (status = 200, body = LoginResponse), (status = 401, body = crate::http::problem::Problem),
    (status = 429, body = crate::http::problem::Problem), (status = 503, body = crate::http::problem::Problem)))]
#[post("/auth/ldap/login")]
pub async fn ldap_login(
    state: web::Data<AppState>,
    client: ClientInfo,
    body: web::Json<LdapLoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let b = body.into_inner();
    // Residency first (issue 24): a tenant id of another region → 421 before any lookup,
    // lockout counter or audit row.
    crate::http::residency::check_tenant_ref(&state.settings, &b.tenant)?;
    if b.tenant.trim().is_empty() {
        return Err(ApiError::invalid("tenant", "tenant is required"));
    }
    let out = auth::login(
        &state,
        auth::LoginInput {
            tenant: Some(b.tenant),
            email: b.username,
            login_field: "username",
            password: b.password,
            mode: auth::LoginMode::DirectoryOnly,
        },
        &client,
    )
    .await?;
    logged_in(&state, out).await
}

/// End the current session.
#[utoipa::path(tag = "auth", responses((status = 204), (status = 401, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/auth/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    g: Require<perm::SelfRead>,
) -> Result<HttpResponse, ApiError> {
    auth::logout(&state.into_inner(), &g.ctx).await?;
    let mut gone = session_cookie(String::new(), 0);
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}

/// The caller.
#[utoipa::path(tag = "auth", responses((status = 200, body = MeView), (status = 401, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/me")]
pub async fn me(
    state: web::Data<AppState>,
    g: Require<perm::SelfRead>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let must_change = auth::must_change_password(&state, &g.ctx).await?;
    let tenant_name = auth::tenant_name(&state, &g.ctx.principal).await?;
    Ok(HttpResponse::Ok().json(me_view(&g.ctx.principal, tenant_name, must_change)))
}

/// Password change body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// Current password.
    #[schema(value_type = String, format = Password)]
    pub current_password: Zeroizing<String>,
    /// New password, 12–1024 bytes.
    #[schema(value_type = String, format = Password)]
    pub new_password: Zeroizing<String>,
}

/// Change one's own local password; other sessions end.
#[utoipa::path(tag = "auth", request_body = ChangePassword, responses((status = 204), (status = 403, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/me/password")]
pub async fn change_password(
    state: web::Data<AppState>,
    g: Guarded<perm::SelfPassword, web::Json<ChangePassword>>,
) -> Result<HttpResponse, ApiError> {
    let b = g.inner.into_inner();
    auth::change_password(
        &state.into_inner(),
        &g.ctx,
        b.current_password,
        b.new_password,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------- OpenID Connect (issue 21)

/// Cookie binding a started OpenID Connect sign-in to the browser: `<tenant id>.<random>`,
/// `HttpOnly; Secure; SameSite=Lax; Path=/api/v1/auth/oidc`, 10 minutes, single use.
pub const OIDC_COOKIE: &str = "fg_oidc";
/// Cookie handing the CSRF token of a session opened by single sign-on to the dashboard once
/// (readable by the page, `Secure; SameSite=Lax`, 2 minutes; the dashboard deletes it).
pub const SSO_CSRF_COOKIE: &str = "fg_sso_csrf";

fn oidc_cookie(value: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(OIDC_COOKIE, value)
        .path("/api/v1/auth/oidc")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

fn sso_refused(reason: &str) -> HttpResponse {
    let mut gone = oidc_cookie(String::new(), 0);
    gone.make_removal();
    HttpResponse::Found()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/signin?sso_error={reason}"),
        ))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .cookie(gone)
        .finish()
}

/// Query of the sign-in start.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct OidcStartQuery {
    /// Tenant id or name.
    pub tenant: Option<String>,
}

/// Start single sign-on for a tenant: 302 to the provider's authorization endpoint
/// (authorization code + PKCE S256, random `state` and `nonce`) with the `fg_oidc` cookie. A
/// tenant of another region → 421 with the region endpoint, before anything else. Unknown
/// tenant, SSO off or a provider that cannot be reached → 302 to the dashboard's sign-in page
/// with `sso_error=<reason>`.
#[utoipa::path(tag = "auth", params(OidcStartQuery), responses(
    (status = 302, description = "to the provider, or to /signin?sso_error=<reason>"),
    (status = 421, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)))]
#[get("/auth/oidc/start")]
pub async fn oidc_start(
    state: web::Data<AppState>,
    client: ClientInfo,
    q: web::Query<OidcStartQuery>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let t = q.into_inner().tenant.unwrap_or_default();
    if t.trim().is_empty() {
        return Err(ApiError::invalid("tenant", "tenant is required"));
    }
    crate::http::residency::check_tenant_ref(&state.settings, t.trim())?;
    Ok(match oidc::start(&state, &t, &client).await? {
        oidc::SignIn::Redirect { location, cookie } => HttpResponse::Found()
            .insert_header((actix_web::http::header::LOCATION, location))
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .cookie(oidc_cookie(cookie, oidc::PENDING_TTL_SECS))
            .finish(),
        oidc::SignIn::Refused(reason) => sso_refused(reason),
    })
}

/// Query of the callback (RFC 6749 §4.1.2; other parameters such as `error_description` and
/// `session_state` are ignored — a provider's text is never shown).
#[derive(Deserialize, utoipa::IntoParams)]
pub struct OidcCallbackQuery {
    /// Authorization code.
    pub code: Option<String>,
    /// State.
    pub state: Option<String>,
    /// Provider error code.
    pub error: Option<String>,
    /// RFC 9207 issuer.
    pub iss: Option<String>,
}

/// The provider's redirect back: checks state and browser binding, exchanges the code, verifies
/// the ID token, opens the same session as a local login and redirects to the dashboard
/// (the session cookie plus a one-time `fg_sso_csrf` cookie). Every refusal redirects to
/// `/signin?sso_error=<reason>` and is audited as `login.failure` (method `oidc`).
#[utoipa::path(tag = "auth", params(OidcCallbackQuery), responses(
    (status = 302, description = "to the dashboard, or to /signin?sso_error=<reason>")))]
#[get("/auth/oidc/callback")]
pub async fn oidc_callback(
    state: web::Data<AppState>,
    client: ClientInfo,
    req: actix_web::HttpRequest,
    q: web::Query<OidcCallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let q = q.into_inner();
    let cookie = req.cookie(OIDC_COOKIE).map(|c| c.value().to_string());
    let query = oidc::CallbackQuery {
        code: q.code,
        state: q.state,
        error: q.error,
        iss: q.iss,
    };
    Ok(
        match oidc::callback(&state, query, cookie, &client).await? {
            oidc::Finished::Refused(reason) => sso_refused(reason),
            oidc::Finished::Ok {
                session,
                csrf_token,
                ..
            } => {
                let max_age = i64::from(state.settings.session.absolute_hours) * 3600;
                let mut gone = oidc_cookie(String::new(), 0);
                gone.make_removal();
                let handoff = Cookie::build(SSO_CSRF_COOKIE, csrf_token)
                    .path("/")
                    .secure(true)
                    .same_site(SameSite::Lax)
                    .max_age(CookieDuration::seconds(120))
                    .finish();
                HttpResponse::Found()
                    .insert_header((actix_web::http::header::LOCATION, "/"))
                    .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
                    .cookie(gone)
                    .cookie(session_cookie(session, max_age))
                    .cookie(handoff)
                    .finish()
            }
        },
    )
}

/// Which sign-in methods the deployment offers, for the sign-in page (anonymous). Deployment-
/// wide: it names no tenant and tells nothing about any one tenant — `ldap` is true when any
/// active tenant of this region has directory sign-in on, `oidc` likewise for single sign-on
/// (whether one tenant offers it is `GET /api/v1/auth/oidc/available`). Cached for up to 30 s;
/// a configuration change through the API shows at once.
#[utoipa::path(tag = "auth", responses((status = 200, body = auth::SignInMethods)))]
#[get("/auth/methods")]
pub async fn methods(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let m = auth::sign_in_methods(&state.into_inner()).await?;
    Ok(HttpResponse::Ok().json(m))
}

/// Whether a tenant offers single sign-on.
#[derive(Serialize, ToSchema)]
pub struct OidcAvailable {
    /// True when the tenant has OpenID Connect on (false for an unknown tenant too).
    pub enabled: bool,
}

/// Whether the sign-in page should offer "Sign in with single sign-on" for `tenant`. A tenant
/// of another region → 421.
#[utoipa::path(tag = "auth", params(OidcStartQuery), responses(
    (status = 200, body = OidcAvailable), (status = 421, body = crate::http::problem::Problem)))]
#[get("/auth/oidc/available")]
pub async fn oidc_available(
    state: web::Data<AppState>,
    q: web::Query<OidcStartQuery>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let t = q.into_inner().tenant.unwrap_or_default();
    if !t.trim().is_empty() {
        crate::http::residency::check_tenant_ref(&state.settings, t.trim())?;
    }
    let enabled = oidc::available(&state, &t).await?;
    Ok(HttpResponse::Ok().json(OidcAvailable { enabled }))
}
