//! `/api/v1/sso/ldap`: the tenant's directory configuration (Owner), its connection test and
//! the mapping dry run.

use actix_web::{get, post, put, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::ldap::{LdapConfigInput, LdapConfigView};
use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::ldap::{self as svc, ConnectionReport, DryRunReport};
use crate::service::AppState;

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
