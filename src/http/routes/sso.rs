//! `/api/v1/sso/ldap` and `/api/v1/sso/oidc`: the tenant's directory and OpenID Connect
//! configurations (Owner), their connection tests and dry runs.

use actix_web::{delete, get, post, put, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::ldap::{LdapConfigInput, LdapConfigView};
use crate::auth::oidc::{OidcConfigInput, OidcConfigView};
use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::ldap::{self as svc, ConnectionReport, DryRunReport};
use crate::service::{oidc, AppState};

/// Read the LDAP configuration. Secrets are never returned (`bind_password_set`,
/// `client_key_set`); 404 when none is saved.
#[utoipa::path(tag = "sso", responses((status = 200, body = LdapConfigView), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/sso/ldap")]
pub async fn get_ldap(
    state: web::Data<AppState>,
    g: Require<perm::SsoManage>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::get_config(&state.into_inner(), &g.ctx).await?))
}

/// Save the LDAP configuration (audited as `sso.config_change`). A URL without TLS is refused
/// (422 `tls_required`), so is a server outside the egress list (422 `egress_denied`).
#[utoipa::path(tag = "sso", request_body = LdapConfigInput, responses(
    (status = 200, body = LdapConfigView), (status = 422, body = crate::http::problem::Problem)),
    security(("session" = [])))]
#[put("/sso/ldap")]
pub async fn put_ldap(
    state: web::Data<AppState>,
    g: Guarded<perm::SsoManage, web::Json<LdapConfigInput>>,
) -> Result<HttpResponse, ApiError> {
    let view = svc::put_config(&state.into_inner(), &g.ctx, g.inner.into_inner()).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Dry-run body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// The login name to look up (as a user would type it).
    pub username: String,
}

/// Show the DN found, the groups resolved and the role a login would get — without logging
/// anyone in and without a password.
#[utoipa::path(tag = "sso", request_body = DryRunRequest, responses(
    (status = 200, body = DryRunReport), (status = 409, body = crate::http::problem::Problem),
    (status = 503, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/sso/ldap/test")]
pub async fn dry_run(
    state: web::Data<AppState>,
    g: Guarded<perm::SsoManage, web::Json<DryRunRequest>>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::dry_run(&state.into_inner(), &g.ctx, &g.inner.username).await?;
    Ok(HttpResponse::Ok().json(r))
}

/// Check the saved configuration's TLS connection and service bind.
#[utoipa::path(tag = "sso", responses(
    (status = 200, body = ConnectionReport), (status = 409, body = crate::http::problem::Problem),
    (status = 502, body = crate::http::problem::Problem), (status = 503, body = crate::http::problem::Problem)),
    security(("session" = [])))]
#[post("/sso/ldap/test-connection")]
pub async fn test_connection(
    state: web::Data<AppState>,
    g: Require<perm::SsoManage>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::test_connection(&state.into_inner(), &g.ctx).await?))
}

// ---------------------------------------------------------------- OpenID Connect (issue 21)

/// Read the OpenID Connect configuration (the client secret is never returned:
/// `client_secret_set`); 404 when none is saved. `redirect_uri` is what to register at the
/// provider.
#[utoipa::path(tag = "sso", responses((status = 200, body = OidcConfigView), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/sso/oidc")]
pub async fn get_oidc(
    state: web::Data<AppState>,
    g: Require<perm::SsoManage>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(oidc::get_config(&state.into_inner(), &g.ctx).await?))
}

/// Save the OpenID Connect configuration (audited as `sso.oidc.save`, without the secret). An
/// issuer that is not `https://` is refused (422 `validation_failed`), so is one whose host is
/// outside `egress.allow` (422 `egress_denied`).
#[utoipa::path(tag = "sso", request_body = OidcConfigInput, responses(
    (status = 200, body = OidcConfigView), (status = 422, body = crate::http::problem::Problem)),
    security(("session" = [])))]
#[put("/sso/oidc")]
pub async fn put_oidc(
    state: web::Data<AppState>,
    g: Guarded<perm::SsoManage, web::Json<OidcConfigInput>>,
) -> Result<HttpResponse, ApiError> {
    let view = oidc::put_config(&state.into_inner(), &g.ctx, g.inner.into_inner()).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Remove the OpenID Connect configuration (audited as `sso.oidc.delete`); member links stay.
#[utoipa::path(tag = "sso", responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/sso/oidc")]
pub async fn delete_oidc(
    state: web::Data<AppState>,
    g: Require<perm::SsoManage>,
) -> Result<HttpResponse, ApiError> {
    oidc::delete_config(&state.into_inner(), &g.ctx).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Check the saved configuration: discovery reachable over TLS through the egress policy, its
/// `issuer` equal to the configured one, and the JWKS readable.
#[utoipa::path(tag = "sso", responses(
    (status = 200, body = oidc::ConnectionReport), (status = 409, body = crate::http::problem::Problem),
    (status = 422, body = crate::http::problem::Problem), (status = 502, body = crate::http::problem::Problem)),
    security(("session" = [])))]
#[post("/sso/oidc/test-connection")]
pub async fn oidc_test_connection(
    state: web::Data<AppState>,
    g: Require<perm::SsoManage>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(oidc::test_connection(&state.into_inner(), &g.ctx).await?))
}

/// Dry run: which member a sign-in with these sample claims would match or create, and the
/// role it would get. Nothing is written.
#[utoipa::path(tag = "sso", request_body = oidc::DryRunRequest, responses(
    (status = 200, body = oidc::DryRunReport), (status = 409, body = crate::http::problem::Problem),
    (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/sso/oidc/test")]
pub async fn oidc_dry_run(
    state: web::Data<AppState>,
    g: Guarded<perm::SsoManage, web::Json<oidc::DryRunRequest>>,
) -> Result<HttpResponse, ApiError> {
    let r = oidc::dry_run(&state.into_inner(), &g.ctx, g.inner.into_inner()).await?;
    Ok(HttpResponse::Ok().json(r))
}
