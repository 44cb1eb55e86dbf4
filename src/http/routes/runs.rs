//! Runs (`/api/v1/flows/{flow}/runs`, `/api/v1/applications/{app}/runs`, `/api/v1/runs/{run}`),
//! the webhook trigger, the agent API (`/api/v1/agent/runs/…`) and signed screenshot URLs.

use actix_multipart::Multipart;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorCode};
use crate::http::extract::{perm, Guarded, Require};
use crate::service::runs::{self as svc, Claim, Complete, RunDetail, StepReport};
use crate::service::screenshots::{self, SignedUrl, Uploaded, MAX_UPLOAD_BYTES};
use crate::service::{AppState, ClientInfo};
use crate::store::runs::{RunRow, StepRow};

/// Queue a manual run of a flow's current version.
#[utoipa::path(tag = "runs", params(("flow" = String, Path)), responses((status = 201, body = RunRow), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/flows/{flow}/runs")]
pub async fn trigger(
    state: web::Data<AppState>,
    g: Require<perm::RunTrigger>,
    flow: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::trigger(&state.into_inner(), &g.ctx, &flow).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/runs/{}", r.id)))
        .json(r))
}

/// Queue a run through a flow's webhook trigger token (no session; the token is the credential).
#[utoipa::path(tag = "runs", params(("token" = String, Path)), responses((status = 201, body = RunRow), (status = 404, body = crate::http::problem::Problem)))]
#[post("/hooks/runs/{token}")]
pub async fn webhook(
    state: web::Data<AppState>,
    client: ClientInfo,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::trigger_webhook(&state.into_inner(), &token, &client).await?;
    Ok(HttpResponse::Created().json(r))
}

/// Cancel a queued or running run (else 409 `invalid_transition`).
#[utoipa::path(tag = "runs", params(("run" = String, Path)), responses((status = 200, body = RunRow), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/runs/{run}/cancel")]
pub async fn cancel(
    state: web::Data<AppState>,
    g: Require<perm::RunTrigger>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::cancel(&state.into_inner(), &g.ctx, &run).await?))
}

/// Run list filters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    /// `queued|running|passed|failed|cancelled`.
    pub status: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1–200, default 50).
    pub limit: Option<u32>,
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunPage {
    /// Runs.
    pub items: Vec<RunRow>,
    /// Cursor for the next page.
    pub next_cursor: Option<String>,
}

/// List an application's runs.
#[utoipa::path(tag = "runs", params(("app" = String, Path), RunFilter), responses((status = 200, body = RunPage)), security(("session" = [])))]
#[get("/applications/{app}/runs")]
pub async fn list(
    state: web::Data<AppState>,
    app: web::Path<String>,
    g: Guarded<perm::RunRead, web::Query<RunFilter>>,
) -> Result<HttpResponse, ApiError> {
    let q = g.inner.into_inner();
    let (items, next_cursor) = svc::list(
        &state.into_inner(),
        &g.ctx,
        &app,
        q.status,
        q.cursor,
        q.limit.unwrap_or(50),
    )
    .await?;
    Ok(HttpResponse::Ok().json(RunPage { items, next_cursor }))
}

/// A run with its steps.
#[utoipa::path(tag = "runs", params(("run" = String, Path)), responses((status = 200, body = RunDetail), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/runs/{run}")]
pub async fn get(
    state: web::Data<AppState>,
    g: Require<perm::RunRead>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::get(&state.into_inner(), &g.ctx, &run).await?))
}

/// A signed URL (≤ 15 minutes) for a step's screenshot.
#[utoipa::path(tag = "runs", params(("run" = String, Path), ("n" = i64, Path)), responses((status = 200, body = SignedUrl), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/runs/{run}/steps/{n}/screenshot")]
pub async fn screenshot_url(
    state: web::Data<AppState>,
    g: Require<perm::RunRead>,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (run, n) = path.into_inner();
    Ok(HttpResponse::Ok()
        .json(screenshots::signed_url_for(&state.into_inner(), &g.ctx, &run, n).await?))
}

/// Claim filter.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ClaimQuery {
    /// Claim only this queued run (as queued by `POST /agent/flows/{flow}/runs`).
    pub run: Option<String>,
}

/// Claim the next queued run of the agent's application, or only `?run=` (204 when none is
/// queued).
#[utoipa::path(tag = "agent", params(ClaimQuery), responses((status = 200, body = Claim), (status = 204)), security(("bearer" = [])))]
#[post("/agent/runs/claim")]
pub async fn claim(
    state: web::Data<AppState>,
    g: Guarded<perm::AgentRun, web::Query<ClaimQuery>>,
) -> Result<HttpResponse, ApiError> {
    let only = g.inner.into_inner().run;
    Ok(match svc::claim(&state.into_inner(), &g.ctx, only).await? {
        Some(c) => HttpResponse::Ok().json(c),
        None => HttpResponse::NoContent().finish(),
    })
}

/// Queue a run of a flow of the agent's own application (`flowguard agent run --flow ID
/// --wait`); another application's flow → 404.
#[utoipa::path(tag = "agent", params(("flow" = String, Path)), responses((status = 201, body = RunRow), (status = 404, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[post("/agent/flows/{flow}/runs")]
pub async fn agent_trigger(
    state: web::Data<AppState>,
    g: Require<perm::AgentRun>,
    flow: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::trigger_as_agent(&state.into_inner(), &g.ctx, &flow).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/agent/runs/{}", r.id)))
        .json(r))
}

/// A run of the agent's application (status, reason, error), to follow it to its verdict.
#[utoipa::path(tag = "agent", params(("run" = String, Path)), responses((status = 200, body = RunRow), (status = 404, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[get("/agent/runs/{run}")]
pub async fn agent_get(
    state: web::Data<AppState>,
    g: Require<perm::AgentRun>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::get_as_agent(&state.into_inner(), &g.ctx, &run).await?))
}

/// Report one step result (secret values are scrubbed before storage).
#[utoipa::path(tag = "agent", params(("run" = String, Path)), request_body = StepReport, responses((status = 200, body = StepRow), (status = 404, body = crate::http::problem::Problem), (status = 409, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[post("/agent/runs/{run}/steps")]
pub async fn report_step(
    state: web::Data<AppState>,
    run: web::Path<String>,
    g: Guarded<perm::AgentRun, web::Json<StepReport>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok()
        .json(svc::report_step(&state.into_inner(), &g.ctx, &run, g.inner.into_inner()).await?))
}

/// Heartbeat (a running run without one for 5 minutes fails with `agent_timeout`).
#[utoipa::path(tag = "agent", params(("run" = String, Path)), responses((status = 204), (status = 409, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[post("/agent/runs/{run}/heartbeat")]
pub async fn heartbeat(
    state: web::Data<AppState>,
    g: Require<perm::AgentRun>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    svc::heartbeat(&state.into_inner(), &g.ctx, &run).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Complete a run; Passed only when every step passed or was skipped and no checkpoint is unevaluated.
#[utoipa::path(tag = "agent", params(("run" = String, Path)), request_body = Complete, responses((status = 200, body = RunRow), (status = 409, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[post("/agent/runs/{run}/complete")]
pub async fn complete(
    state: web::Data<AppState>,
    run: web::Path<String>,
    g: Guarded<perm::AgentRun, web::Json<Complete>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok()
        .json(svc::complete(&state.into_inner(), &g.ctx, &run, g.inner.into_inner()).await?))
}

/// Most parts in one upload (`image`, `masks`).
const MAX_PARTS: usize = 4;
/// Largest `masks` part.
const MAX_MASKS_BYTES: usize = 256 * 1024;
/// Largest `region` part.
const MAX_REGION_BYTES: usize = 4 * 1024;

/// Upload a step's screenshot: multipart parts `image` (PNG ≤ 10 MiB), `masks` (JSON list
/// of `{selector, x, y, width, height}` or `{selector, not_found: true}`) and, for a checkpoint,
/// optionally `region` (`{x, y, width, height}` in image pixels). Mask rectangles are painted
/// before anything is stored; a missing rectangle → 422 and nothing stored. A checkpoint with an
/// AI endpoint configured is judged now: the response's `step` carries the verdict or the error
/// (429 `rate_limited` + `Retry-After` when the tenant's AI budget is spent, nothing stored).
#[utoipa::path(tag = "agent", params(("run" = String, Path), ("n" = i64, Path)), responses((status = 201, body = Uploaded), (status = 413, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem), (status = 429, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[post("/agent/runs/{run}/steps/{n}/screenshot")]
pub async fn upload(
    state: web::Data<AppState>,
    path: web::Path<(String, i64)>,
    g: Guarded<perm::AgentRun, Multipart>,
) -> Result<HttpResponse, ApiError> {
    let (run, n) = path.into_inner();
    let mut mp = g.inner;
    let mut image: Option<Vec<u8>> = None;
    let mut masks: Option<Vec<u8>> = None;
    let mut region: Option<Vec<u8>> = None;
    let mut parts = 0;
    let mut total = 0usize;
    let read = async {
        while let Some(field) = mp.next().await {
            let mut field = field.map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidMultipart,
                    format!(
                        "malformed multipart body: {}",
                        crate::domain::truncate(&e.to_string(), 120)
                    ),
                )
            })?;
            parts += 1;
            if parts > MAX_PARTS {
                return Err(ApiError::new(
                    ErrorCode::TooManyParts,
                    format!("at most {MAX_PARTS} parts"),
                ));
            }
            let name = field
                .content_disposition()
                .and_then(|cd| cd.get_name())
                .unwrap_or("")
                .to_string();
            let cap = match name.as_str() {
                "image" => MAX_UPLOAD_BYTES,
                "masks" => MAX_MASKS_BYTES,
                "region" => MAX_REGION_BYTES,
                _ => 0,
            };
            let mut buf = Vec::new();
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidMultipart,
                        format!(
                            "malformed multipart body: {}",
                            crate::domain::truncate(&e.to_string(), 120)
                        ),
                    )
                })?;
                total += chunk.len();
                if buf.len() + chunk.len() > cap
                    || total > MAX_UPLOAD_BYTES + MAX_MASKS_BYTES + MAX_REGION_BYTES
                {
                    return Err(ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        "the image may be at most 10 MiB",
                    )
                    .field(if name.is_empty() {
                        "image".to_string()
                    } else {
                        name.clone()
                    }));
                }
                buf.extend_from_slice(&chunk);
            }
            match name.as_str() {
                "image" if image.is_none() => image = Some(buf),
                "masks" if masks.is_none() => masks = Some(buf),
                "region" if region.is_none() => region = Some(buf),
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidMultipart,
                        "only one `image`, one `masks` and one `region` part are accepted",
                    ))
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(120), read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::RequestTimeout,
                "upload took too long",
            ))
        }
    }
    let image = image.ok_or_else(|| ApiError::invalid("image", "the `image` part is required"))?;
    let up =
        screenshots::upload(&state.into_inner(), &g.ctx, &run, n, image, masks, region).await?;
    Ok(HttpResponse::Created().json(up))
}

/// Serve a signed screenshot URL (no session). Any bad, altered, cross-object or expired
/// signature → the same 403 and no bytes.
#[utoipa::path(tag = "runs", params(("tenant" = String, Path), ("object" = String, Path), ("exp" = u64, Query), ("kid" = String, Query), ("sig" = String, Query)), responses((status = 200, content_type = "image/png"), (status = 403, body = crate::http::problem::Problem)))]
#[get("/shots/{tenant}/{object}.png")]
pub async fn shot(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, object) = path.into_inner();
    let bytes =
        screenshots::fetch_signed(&state.into_inner(), &tenant, &object, req.query_string())
            .await?;
    Ok(HttpResponse::Ok()
        .content_type("image/png")
        .insert_header(("Cache-Control", "private, no-store"))
        .body(bytes))
}
