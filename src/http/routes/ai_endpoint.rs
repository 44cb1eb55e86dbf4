//! `/api/v1/ai-endpoint`: the tenant's AI endpoint for checkpoint verdicts (Owners only).

use actix_web::{delete, get, post, put, web, HttpResponse};

use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::ai_endpoint::{self as svc, AiEndpointBody, AiEndpointView, TestResult};
use crate::service::AppState;

/// The effective endpoint: the tenant's own, else the deployment default, else `source: none`.
/// The API key is never returned (`api_key_set` only).
#[utoipa::path(tag = "ai", responses((status = 200, body = AiEndpointView)), security(("session" = [])))]
#[get("/ai-endpoint")]
pub async fn get(
    state: web::Data<AppState>,
    g: Require<perm::AiEndpointManage>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::get(&state.into_inner(), &g.ctx).await?))
}

/// Set the tenant's endpoint (full replacement; audited `ai_endpoint.set`). 422 naming the field
/// for invalid values, 422 `egress_denied` (field `base_url`, naming the host) when the host is
/// outside the deployment's `egress.allow` or is a link-local/metadata address.
#[utoipa::path(tag = "ai", request_body = AiEndpointBody, responses((status = 200, body = AiEndpointView), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[put("/ai-endpoint")]
pub async fn put(
    state: web::Data<AppState>,
    g: Guarded<perm::AiEndpointManage, web::Json<AiEndpointBody>>,
) -> Result<HttpResponse, ApiError> {
    let body = g.inner.into_inner();
    Ok(HttpResponse::Ok().json(svc::put(&state.into_inner(), &g.ctx, body).await?))
}

/// Remove the tenant's endpoint (the deployment default applies again, if any); 404 when the
/// tenant has none. Audited `ai_endpoint.delete`.
#[utoipa::path(tag = "ai", responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/ai-endpoint")]
pub async fn remove(
    state: web::Data<AppState>,
    g: Require<perm::AiEndpointManage>,
) -> Result<HttpResponse, ApiError> {
    svc::delete(&state.into_inner(), &g.ctx).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Check the effective endpoint with a probe image: 200 with `ok` and the outcome; 409
/// `ai_endpoint_not_configured` when there is none; 429 `rate_limited` when the tenant's AI
/// budget is spent. Audited `ai_endpoint.test`.
#[utoipa::path(tag = "ai", responses((status = 200, body = TestResult), (status = 409, body = crate::http::problem::Problem), (status = 429, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/ai-endpoint/test")]
pub async fn test(
    state: web::Data<AppState>,
    g: Require<perm::AiEndpointManage>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::test(&state.into_inner(), &g.ctx).await?))
}
