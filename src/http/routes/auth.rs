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
use crate::store::{catalog, tenant};

/// Login body. `tenant` is the tenant id or its unique name; absent or null logs a
/// PlatformAdmin in to the catalog.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Tenant id or name.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Email.
    pub email: String,
    /// Password (at most 1024 bytes).
    #[schema(value_type = String, format = Password)]
    pub password: Zeroizing<String>,
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

/// Log in with email and password.
///
/// Same 401 body for unknown tenant, unknown user and wrong password; 429 with `Retry-After`
/// after repeated failures from one address; 400 for a password over 1024 bytes.
#[utoipa::path(tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = LoginResponse), (status = 401, body = crate::error::Problem),
    (status = 429, body = crate::error::Problem)))]
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
    let out = auth::login(
        &state,
        auth::LoginInput {
            tenant: b.tenant,
            email: b.email,
            password: b.password,
        },
        &client,
    )
    .await?;
    let max_age = i64::from(state.settings.session.absolute_hours) * 3600;
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(out.session, max_age))
        .json(LoginResponse {
            csrf_token: out.csrf_token,
            me: me_view(&out.principal, out.must_change_password),
        }))
}

/// End the current session.
#[utoipa::path(tag = "auth", responses((status = 204), (status = 401, body = crate::error::Problem)), security(("session" = [])))]
#[post("/auth/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    g: Require<perm::SelfRead>,
    client: ClientInfo,
) -> Result<HttpResponse, ApiError> {
    auth::logout(&state.into_inner(), &g.principal, &client).await?;
    let mut gone = session_cookie(String::new(), 0);
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}

/// The caller.
#[utoipa::path(tag = "auth", responses((status = 200, body = MeView), (status = 401, body = crate::error::Problem)), security(("session" = [])))]
#[get("/me")]
pub async fn me(
    state: web::Data<AppState>,
    g: Require<perm::SelfRead>,
) -> Result<HttpResponse, ApiError> {
    let must_change = match g.principal.clone() {
        Principal::User {
            tenant, user_id, ..
        } => state
            .tenants
            .run(&tenant, move |c| tenant::user_by_id(c, &user_id))
            .await?
            .is_some_and(|u| u.must_change_password),
        Principal::Platform { admin_id, .. } => state
            .catalog
            .run(move |c| catalog::platform_admin_by_id(c, &admin_id))
            .await?
            .is_some_and(|a| a.must_change_password),
        _ => false,
    };
    Ok(HttpResponse::Ok().json(me_view(&g.principal, must_change)))
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
#[utoipa::path(tag = "auth", request_body = ChangePassword, responses((status = 204), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)), security(("session" = [])))]
#[post("/me/password")]
pub async fn change_password(
    state: web::Data<AppState>,
    client: ClientInfo,
    g: Guarded<perm::SelfPassword, web::Json<ChangePassword>>,
) -> Result<HttpResponse, ApiError> {
    let b = g.inner.into_inner();
    auth::change_password(
        &state.into_inner(),
        &g.principal,
        b.current_password,
        b.new_password,
        &client,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
