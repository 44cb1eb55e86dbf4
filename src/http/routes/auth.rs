//! `POST /api/v1/auth/login`, `POST /api/v1/auth/logout`, `GET /api/v1/me`,
//! `POST /api/v1/me/password`.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require, SESSION_COOKIE};
use crate::service::principal::MeView;
use crate::service::{auth, AppState, ClientInfo, Principal};

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

fn me_view(p: &Principal, must_change: bool) -> MeView {
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
    Ok(logged_in(&state, out))
}

fn logged_in(state: &AppState, out: auth::LoginOutcome) -> HttpResponse {
    let max_age = i64::from(state.settings.session.absolute_hours) * 3600;
    HttpResponse::Ok()
        .cookie(session_cookie(out.session, max_age))
        .json(LoginResponse {
            csrf_token: out.csrf_token,
            me: me_view(&out.principal, out.must_change_password),
        })
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
    Ok(logged_in(&state, out))
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
    let must_change = auth::must_change_password(&state.into_inner(), &g.ctx).await?;
    Ok(HttpResponse::Ok().json(me_view(&g.ctx.principal, must_change)))
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
