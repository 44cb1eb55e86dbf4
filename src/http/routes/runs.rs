//! Runs (`/api/v1/flows/{flow}/runs`, `/api/v1/applications/{app}/runs`, `/api/v1/runs/{run}`),
//! the webhook trigger, the agent API (`/api/v1/agent/runs/…`) and signed screenshot URLs.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorCode};
use crate::http::extract::{perm, Guarded, Require};
use crate::service::runs::{self as svc, Claim, Complete, RunRow, StepReport, StepRow};
use crate::service::screenshots::{self, SignedUrl, MAX_UPLOAD_BYTES};
use crate::service::{AppState, ClientInfo};

/// A run.
#[derive(Serialize, ToSchema)]
#[schema(as = RunRow)]
pub struct Run {
    /// Run id.
    pub id: String,
    /// Flow.
    pub flow_id: String,
    /// Application.
    pub application_id: String,
    /// Pinned flow version.
    pub flow_version: i64,
    /// `queued|running|passed|failed|cancelled|error` (`error`: the runner failed, reason
    /// `runner_error`; such a run is retried once).
    pub status: String,
    /// `manual|schedule|webhook`.
    pub trigger: String,
    /// Who or what triggered it.
    pub triggered_by: Option<String>,
    /// Machine reason for the final status (e.g. `agent_timeout`, `step_failed`).
    pub reason: Option<String>,
    /// Error text (secrets scrubbed).
    pub error: Option<String>,
    /// Queued (RFC 3339).
    pub queued_at: String,
    /// Claimed.
    pub started_at: Option<String>,
    /// Finished.
    pub finished_at: Option<String>,
    /// Who ran it: an agent token id, or `runner:embedded`.
    pub runner: Option<String>,
    /// The run this one automatically retries (after a `runner_error`).
    pub retry_of: Option<String>,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Self {
        Self {
            id: r.id,
            flow_id: r.flow_id,
            application_id: r.application_id,
            flow_version: r.flow_version,
            status: r.status,
            trigger: r.trigger,
            triggered_by: r.triggered_by,
            reason: r.reason,
            error: r.error,
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            runner: r.agent_token_id,
            retry_of: r.retry_of,
        }
    }
}

/// What can run this tenant's flows: the embedded runner (enabled, workers, busy, or why it is
/// off) and the external agents seen in the last 5 minutes, with how to start one.
#[utoipa::path(tag = "runs", responses((status = 200, body = crate::service::runner::Runners)), security(("session" = [])))]
#[get("/runners")]
pub async fn runners(state: web::Data<AppState>, g: Require<perm::RunRead>) -> HttpResponse {
    HttpResponse::Ok().json(crate::service::runner::runners(&state, &g.ctx))
}

/// One AI call made for a checkpoint step: what was asked and how it went (never the image,
/// the prompt or the key).
#[derive(Serialize, ToSchema)]
pub struct AiCall {
    /// Model asked.
    pub model: String,
    /// Request bytes sent (0 when refused before sending).
    pub bytes_sent: i64,
    /// Milliseconds until the reply (or the failure).
    pub latency_ms: i64,
    /// `verdict`, `invalid_reply`, `http_error`, `timeout`, `redirect_refused`,
    /// `egress_denied`, `tls_failed` or `connect_failed`.
    pub outcome: String,
    /// Why there is no verdict (absent when `outcome` is `verdict`).
    pub error: Option<String>,
    /// When (RFC 3339, UTC).
    pub evaluated_at: String,
}

/// A step result: what the agent reported and, for checkpoints, the AI verdict.
#[derive(Serialize, ToSchema)]
#[schema(as = StepRow)]
pub struct StepResult {
    /// Step index (0-based).
    pub index: i64,
    /// Effective status `passed|failed|skipped|not_evaluated|error` (for checkpoints decided
    /// from the verdict, see `service::runs::step_status`).
    pub status: String,
    /// What the agent reported (`passed|failed|skipped`); absent until it reports.
    pub reported_status: Option<String>,
    /// When the agent reported (RFC 3339); absent when only a verdict exists yet.
    pub reported_at: Option<String>,
    /// Duration in ms.
    pub duration_ms: Option<i64>,
    /// Error (scrubbed).
    pub error: Option<String>,
    /// Console summary (scrubbed JSON).
    #[schema(value_type = Object)]
    pub console: Option<serde_json::Value>,
    /// Network summary (scrubbed JSON).
    #[schema(value_type = Object)]
    pub network: Option<serde_json::Value>,
    /// Why (e.g. `no AI endpoint configured`, `AI endpoint answered HTTP 500`).
    pub reason: Option<String>,
    /// Checkpoint verdict `pass|fail`.
    pub verdict: Option<String>,
    /// Verdict confidence 0–1.
    pub confidence: Option<f64>,
    /// The model's rationale (secret values scrubbed).
    pub rationale: Option<String>,
    /// The last AI call for this step.
    pub ai_call: Option<AiCall>,
    /// Whether a screenshot is stored.
    pub has_screenshot: bool,
}

impl From<StepRow> for StepResult {
    fn from(r: StepRow) -> Self {
        Self {
            index: r.index,
            status: r.status,
            reported_status: r.reported_status,
            reported_at: r.reported_at,
            duration_ms: r.duration_ms,
            error: r.error,
            console: r.console,
            network: r.network,
            reason: r.reason,
            verdict: r.verdict,
            confidence: r.confidence,
            rationale: r.rationale,
            ai_call: r.ai_call.map(|c| AiCall {
                model: c.model,
                bytes_sent: c.bytes_sent,
                latency_ms: c.latency_ms,
                outcome: c.outcome,
                error: c.error,
                evaluated_at: c.evaluated_at,
            }),
            has_screenshot: r.has_screenshot,
        }
    }
}

/// A run with its step results.
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Step results by index.
    pub steps: Vec<StepResult>,
    /// Number of steps in the pinned flow version.
    pub step_count: usize,
    /// The run's ticket (issue 20): `{status: pending|filed|failed, kind, key, url, error,
    /// attempts}`, `null` when none was filed.
    pub ticket: Option<crate::service::tickets::TicketView>,
}

impl From<svc::RunDetail> for RunDetail {
    fn from(d: svc::RunDetail) -> Self {
        Self {
            run: d.run.into(),
            steps: d.steps.into_iter().map(StepResult::from).collect(),
            step_count: d.step_count,
            ticket: d.ticket,
        }
    }
}

/// Upload result.
#[derive(Serialize, ToSchema)]
pub struct Uploaded {
    /// Stored object id.
    pub id: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// For a `checkpoint` step judged by the AI endpoint: the step with its verdict (or the
    /// `error` and its reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<StepResult>,
}

impl From<screenshots::Uploaded> for Uploaded {
    fn from(u: screenshots::Uploaded) -> Self {
        Self {
            id: u.id,
            width: u.width,
            height: u.height,
            step: u.step.map(StepResult::from),
        }
    }
}

/// Queue a manual run of a flow's current version.
#[utoipa::path(tag = "runs", params(("flow" = String, Path)), responses((status = 201, body = Run), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/flows/{flow}/runs")]
pub async fn trigger(
    state: web::Data<AppState>,
    g: Require<perm::RunTrigger>,
    flow: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::trigger(&state.into_inner(), &g.ctx, &flow).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/runs/{}", r.id)))
        .json(Run::from(r)))
}

/// Queue a run through a flow's webhook trigger token (no session; the token is the credential).
#[utoipa::path(tag = "runs", params(("token" = String, Path)), responses((status = 201, body = Run), (status = 404, body = crate::http::problem::Problem)))]
#[post("/hooks/runs/{token}")]
pub async fn webhook(
    state: web::Data<AppState>,
    client: ClientInfo,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::trigger_webhook(&state.into_inner(), &token, &client).await?;
    Ok(HttpResponse::Created().json(Run::from(r)))
}

/// Cancel a queued or running run (else 409 `invalid_transition`).
#[utoipa::path(tag = "runs", params(("run" = String, Path)), responses((status = 200, body = Run), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/runs/{run}/cancel")]
pub async fn cancel(
    state: web::Data<AppState>,
    g: Require<perm::RunTrigger>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::cancel(&state.into_inner(), &g.ctx, &run).await?;
    Ok(HttpResponse::Ok().json(Run::from(r)))
}

/// Run list filters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    /// `queued|running|passed|failed|cancelled`.
    pub status: Option<String>,
    /// Only runs of this flow (id).
    pub flow: Option<String>,
    /// Queued at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Queued before this time (RFC 3339).
    pub to: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1–200, default 50).
    pub limit: Option<u32>,
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunPage {
    /// Runs.
    pub items: Vec<Run>,
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
        svc::RunListFilter {
            flow: q.flow,
            from: q.from,
            to: q.to,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(RunPage {
        items: items.into_iter().map(Run::from).collect(),
        next_cursor,
    }))
}

/// A run with its steps.
#[utoipa::path(tag = "runs", params(("run" = String, Path)), responses((status = 200, body = RunDetail), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/runs/{run}")]
pub async fn get(
    state: web::Data<AppState>,
    g: Require<perm::RunRead>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let d = svc::get(&state.into_inner(), &g.ctx, &run).await?;
    Ok(HttpResponse::Ok().json(RunDetail::from(d)))
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
#[utoipa::path(tag = "agent", params(("flow" = String, Path)), responses((status = 201, body = Run), (status = 404, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[post("/agent/flows/{flow}/runs")]
pub async fn agent_trigger(
    state: web::Data<AppState>,
    g: Require<perm::AgentRun>,
    flow: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::trigger_as_agent(&state.into_inner(), &g.ctx, &flow).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/agent/runs/{}", r.id)))
        .json(Run::from(r)))
}

/// A run of the agent's application (status, reason, error), to follow it to its verdict.
#[utoipa::path(tag = "agent", params(("run" = String, Path)), responses((status = 200, body = Run), (status = 404, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[get("/agent/runs/{run}")]
pub async fn agent_get(
    state: web::Data<AppState>,
    g: Require<perm::AgentRun>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::get_as_agent(&state.into_inner(), &g.ctx, &run).await?;
    Ok(HttpResponse::Ok().json(Run::from(r)))
}

/// Report one step result (secret values are scrubbed before storage).
#[utoipa::path(tag = "agent", params(("run" = String, Path)), request_body = StepReport, responses((status = 200, body = StepResult), (status = 404, body = crate::http::problem::Problem), (status = 409, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[post("/agent/runs/{run}/steps")]
pub async fn report_step(
    state: web::Data<AppState>,
    run: web::Path<String>,
    g: Guarded<perm::AgentRun, web::Json<StepReport>>,
) -> Result<HttpResponse, ApiError> {
    let step = svc::report_step(&state.into_inner(), &g.ctx, &run, g.inner.into_inner()).await?;
    Ok(HttpResponse::Ok().json(StepResult::from(step)))
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
#[utoipa::path(tag = "agent", params(("run" = String, Path)), request_body = Complete, responses((status = 200, body = Run), (status = 409, body = crate::http::problem::Problem)), security(("bearer" = [])))]
#[post("/agent/runs/{run}/complete")]
pub async fn complete(
    state: web::Data<AppState>,
    run: web::Path<String>,
    g: Guarded<perm::AgentRun, web::Json<Complete>>,
) -> Result<HttpResponse, ApiError> {
    let r = svc::complete(&state.into_inner(), &g.ctx, &run, g.inner.into_inner()).await?;
    Ok(HttpResponse::Ok().json(Run::from(r)))
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
    g: Guarded<perm::AgentRun, crate::http::extract::SafeMultipart>,
) -> Result<HttpResponse, ApiError> {
    let (run, n) = path.into_inner();
    let mut mp = g.inner.0;
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
    Ok(HttpResponse::Created().json(Uploaded::from(up)))
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
