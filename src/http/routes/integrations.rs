//! `/api/v1/applications/{app}/integration` (an application's ticket tracker; Owner, Admin)
//! and `POST /api/v1/runs/{run}/ticket` (file a ticket for a failed run; Owner, Admin, Tester).
//! Issue 20.

use actix_web::{delete, get, post, put, web, HttpResponse};

use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::tickets::config::IntegrationBody;
use crate::service::tickets::{self as svc, IntegrationView, TestResult, TicketView};
use crate::service::AppState;

/// The application's integration (`token_set: true`; the token is never returned); 404 when
/// it has none.
#[utoipa::path(tag = "integrations", params(("app" = String, Path)), responses((status = 200, body = IntegrationView), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/applications/{app}/integration")]
pub async fn get(
    state: web::Data<AppState>,
    g: Require<perm::IntegrationManage>,
    app: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::get_integration(&state.into_inner(), &g.ctx, &app).await?))
}

/// Set the application's integration (full replacement; audited `integration.save` without the
/// token). 422 naming the field for invalid values; 422 `egress_denied` (field `base_url`) when
/// the host is outside the deployment's `egress.allow`.
#[utoipa::path(tag = "integrations", params(("app" = String, Path)), request_body = IntegrationBody, responses((status = 200, body = IntegrationView), (status = 404, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[put("/applications/{app}/integration")]
pub async fn put(
    state: web::Data<AppState>,
    g: Guarded<perm::IntegrationManage, web::Json<IntegrationBody>>,
    app: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let body = g.inner.into_inner();
    Ok(HttpResponse::Ok()
        .json(svc::put_integration(&state.into_inner(), &g.ctx, &app, body).await?))
}

/// Remove the application's integration and the tickets it tracks (the tracker's tickets
/// stay); 404 when it has none. Audited `integration.delete`.
#[utoipa::path(tag = "integrations", params(("app" = String, Path)), responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/applications/{app}/integration")]
pub async fn remove(
    state: web::Data<AppState>,
    g: Require<perm::IntegrationManage>,
    app: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    svc::delete_integration(&state.into_inner(), &g.ctx, &app).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Check reachability, authentication, the project and the issue type, and preview the ticket
/// for the latest failed run: `{ok, checks: [{name, ok, detail}], preview: {title, body} | null}`.
/// Nothing is created. 409 `integration_not_configured`. Audited `integration.test`.
#[utoipa::path(tag = "integrations", params(("app" = String, Path)), responses((status = 200, body = TestResult), (status = 404, body = crate::http::problem::Problem), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/applications/{app}/integration/test")]
pub async fn test(
    state: web::Data<AppState>,
    g: Require<perm::IntegrationManage>,
    app: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::test_integration(&state.into_inner(), &g.ctx, &app).await?))
}

/// File a ticket for a failed run (or comment on the open ticket with the same failure
/// signature): 202 with the delivery `{status: pending|filed|failed, kind, key, url, error,
/// attempts}`, delivered in the background (follow it on `GET /api/v1/runs/{run}`). 404 unknown
/// run; 409 `invalid_transition` when the run is not failed; 409 `integration_not_configured`.
#[utoipa::path(tag = "integrations", params(("run" = String, Path)), responses((status = 202, body = TicketView), (status = 404, body = crate::http::problem::Problem), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/runs/{run}/ticket")]
pub async fn file_ticket(
    state: web::Data<AppState>,
    g: Require<perm::TicketFile>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Accepted().json(svc::file_for_run(&state.into_inner(), &g.ctx, &run).await?))
}
