//! Flows (`/api/v1/applications/{app}/flows`, `/api/v1/flows/{flow}` …), schedules, webhook
//! trigger tokens, and variables (`/api/v1/applications/{app}/variables`).

use actix_web::{delete, get, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::flows::{self as svc, FlowRow, WebhookRow};
use crate::service::variables::VariableView;
use crate::service::{variables, AppState};

/// One flow version as stored.
#[derive(Serialize, ToSchema)]
#[schema(as = FlowRow)]
pub struct Flow {
    /// Flow id.
    pub id: String,
    /// Application.
    pub application_id: String,
    /// This version number (1-based).
    pub version: i64,
    /// Latest version of the flow.
    pub current_version: i64,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// `manual|recorded|ai|imported`.
    pub source: String,
    /// Steps (JSON objects with `type`).
    #[schema(value_type = Vec<Object>)]
    pub steps: serde_json::Value,
    /// Cron schedule (if any).
    pub schedule: Option<Schedule>,
    /// When this version was saved.
    pub created_at: String,
    /// Who saved this version.
    pub created_by: String,
}

/// A flow's schedule.
#[derive(Serialize, ToSchema)]
pub struct Schedule {
    /// Cron expression (5 or 6 fields).
    pub cron: String,
    /// IANA timezone.
    pub timezone: String,
    /// The next run after now (none if the expression never fires again). Daylight saving: a
    /// local time that does not exist runs once at the first valid instant after it; one that
    /// happens twice runs once, at its first occurrence (README "Schedules and daylight
    /// saving").
    pub next_run: Option<NextRun>,
}

/// The next run of a schedule, in its zone and in UTC.
#[derive(Serialize, ToSchema)]
pub struct NextRun {
    /// RFC 3339 in the schedule's zone, with that instant's offset (`2027-03-28T03:00:00+02:00`).
    pub local: String,
    /// The same instant in UTC (`2027-03-28T01:00:00Z`).
    pub utc: String,
}

fn next_run(cron: &str, tz: &str) -> Option<NextRun> {
    let s = crate::domain::schedule::CronSchedule::parse(cron, tz).ok()?;
    let t = s.next_after(chrono::Utc::now())?;
    Some(NextRun {
        local: t
            .with_timezone(&s.zone())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        utc: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

impl From<FlowRow> for Flow {
    fn from(r: FlowRow) -> Self {
        Self {
            id: r.id,
            application_id: r.application_id,
            version: r.version,
            current_version: r.current_version,
            name: r.name,
            tags: r.tags,
            source: r.source,
            steps: r.steps,
            schedule: r.schedule.map(|s| Schedule {
                next_run: next_run(&s.cron, &s.timezone),
                cron: s.cron,
                timezone: s.timezone,
            }),
            created_at: r.created_at,
            created_by: r.created_by,
        }
    }
}

/// A webhook trigger token (never the secret).
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookRow)]
pub struct Webhook {
    /// Id.
    pub id: String,
    /// Flow it triggers.
    pub flow_id: String,
    /// Label.
    pub name: String,
    /// Visible prefix.
    pub prefix: String,
    /// Created.
    pub created_at: String,
    /// Creator.
    pub created_by: String,
    /// Revoked at.
    pub revoked_at: Option<String>,
}

impl From<WebhookRow> for Webhook {
    fn from(r: WebhookRow) -> Self {
        Self {
            id: r.id,
            flow_id: r.flow_id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            created_by: r.created_by,
            revoked_at: r.revoked_at,
        }
    }
}

/// Flow body: `{name, tags, source, steps}`; each step an object with `type` and its options.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct FlowBody {
    /// Name (1–200 chars).
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `manual|recorded|ai|imported` (default `manual`).
    #[serde(default)]
    pub source: Option<String>,
    /// Steps.
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<serde_json::Value>,
}

/// Flow list.
#[derive(Serialize, ToSchema)]
pub struct FlowList {
    /// Flows at their current version.
    pub items: Vec<Flow>,
}

/// Flow list filter.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// Only flows carrying this tag.
    pub tag: Option<String>,
}

/// Create a flow (version 1).
#[utoipa::path(tag = "flows", params(("app" = String, Path)), request_body = FlowBody, responses((status = 201, body = Flow), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/applications/{app}/flows")]
pub async fn create(
    state: web::Data<AppState>,
    app: web::Path<String>,
    g: Guarded<perm::FlowWrite, web::Json<serde_json::Value>>,
) -> Result<HttpResponse, ApiError> {
    let f = svc::create(&state.into_inner(), &g.ctx, &app, &g.inner).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/flows/{}", f.id)))
        .json(Flow::from(f)))
}

/// List an application's flows, optionally by tag.
#[utoipa::path(tag = "flows", params(("app" = String, Path), FlowFilter), responses((status = 200, body = FlowList)), security(("session" = [])))]
#[get("/applications/{app}/flows")]
pub async fn list(
    state: web::Data<AppState>,
    app: web::Path<String>,
    g: Guarded<perm::FlowRead, web::Query<FlowFilter>>,
) -> Result<HttpResponse, ApiError> {
    let items = svc::list(&state.into_inner(), &g.ctx, &app, g.inner.into_inner().tag).await?;
    Ok(HttpResponse::Ok().json(FlowList {
        items: items.into_iter().map(Flow::from).collect(),
    }))
}

/// Read a flow at its current version.
#[utoipa::path(tag = "flows", params(("flow" = String, Path)), responses((status = 200, body = Flow), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/flows/{flow}")]
pub async fn get(
    state: web::Data<AppState>,
    g: Require<perm::FlowRead>,
    flow: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let f = svc::get(&state.into_inner(), &g.ctx, &flow, None).await?;
    Ok(HttpResponse::Ok().json(Flow::from(f)))
}

/// Read an old (immutable) version.
#[utoipa::path(tag = "flows", params(("flow" = String, Path), ("n" = i64, Path)), responses((status = 200, body = Flow), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/flows/{flow}/versions/{n}")]
pub async fn version(
    state: web::Data<AppState>,
    g: Require<perm::FlowRead>,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (flow, n) = path.into_inner();
    let f = svc::get(&state.into_inner(), &g.ctx, &flow, Some(n)).await?;
    Ok(HttpResponse::Ok().json(Flow::from(f)))
}

/// Save a new version.
#[utoipa::path(tag = "flows", params(("flow" = String, Path)), request_body = FlowBody, responses((status = 200, body = Flow), (status = 404, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[put("/flows/{flow}")]
pub async fn update(
    state: web::Data<AppState>,
    flow: web::Path<String>,
    g: Guarded<perm::FlowWrite, web::Json<serde_json::Value>>,
) -> Result<HttpResponse, ApiError> {
    let f = svc::update(&state.into_inner(), &g.ctx, &flow, &g.inner).await?;
    Ok(HttpResponse::Ok().json(Flow::from(f)))
}

/// Delete a flow (its runs stay readable).
#[utoipa::path(tag = "flows", params(("flow" = String, Path)), responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/flows/{flow}")]
pub async fn remove(
    state: web::Data<AppState>,
    g: Require<perm::FlowWrite>,
    flow: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    svc::delete(&state.into_inner(), &g.ctx, &flow).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Schedule body: a cron expression (5 fields, or 6 with seconds) and an IANA timezone.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// e.g. `0 6 * * 1-5`.
    pub cron: String,
    /// e.g. `Europe/Berlin`.
    pub timezone: String,
}

/// Set a flow's schedule. A tick missed while the server was down runs once at start.
#[utoipa::path(tag = "flows", params(("flow" = String, Path)), request_body = ScheduleBody, responses((status = 200, body = Flow), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[put("/flows/{flow}/schedule")]
pub async fn set_schedule(
    state: web::Data<AppState>,
    flow: web::Path<String>,
    g: Guarded<perm::FlowWrite, web::Json<ScheduleBody>>,
) -> Result<HttpResponse, ApiError> {
    let b = g.inner.into_inner();
    let f = svc::set_schedule(
        &state.into_inner(),
        &g.ctx,
        &flow,
        Some((b.cron, b.timezone)),
    )
    .await?;
    Ok(HttpResponse::Ok().json(Flow::from(f)))
}

/// Remove a flow's schedule.
#[utoipa::path(tag = "flows", params(("flow" = String, Path)), responses((status = 200, body = Flow)), security(("session" = [])))]
#[delete("/flows/{flow}/schedule")]
pub async fn clear_schedule(
    state: web::Data<AppState>,
    g: Require<perm::FlowWrite>,
    flow: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let f = svc::set_schedule(&state.into_inner(), &g.ctx, &flow, None).await?;
    Ok(HttpResponse::Ok().json(Flow::from(f)))
}

/// Webhook-token body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// Label.
    pub name: String,
}

/// A created webhook token (secret shown once as `token`; POST it to `/api/v1/hooks/runs/{token}`).
#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// Metadata.
    #[serde(flatten)]
    pub meta: Webhook,
    /// The trigger secret `fgw_<tenant>_…`.
    pub token: String,
}

/// Webhook token list.
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    /// Items.
    pub items: Vec<Webhook>,
}

/// Create a webhook trigger token for a flow (post-deploy triggers).
#[utoipa::path(tag = "flows", params(("flow" = String, Path)), request_body = WebhookBody, responses((status = 201, body = CreatedWebhook)), security(("session" = [])))]
#[post("/flows/{flow}/webhook-tokens")]
pub async fn create_webhook(
    state: web::Data<AppState>,
    flow: web::Path<String>,
    g: Guarded<perm::WebhookManage, web::Json<WebhookBody>>,
) -> Result<HttpResponse, ApiError> {
    let (meta, token) =
        svc::create_webhook(&state.into_inner(), &g.ctx, &flow, &g.inner.name).await?;
    Ok(HttpResponse::Created().json(CreatedWebhook {
        meta: meta.into(),
        token,
    }))
}

/// List a flow's webhook tokens.
#[utoipa::path(tag = "flows", params(("flow" = String, Path)), responses((status = 200, body = WebhookList)), security(("session" = [])))]
#[get("/flows/{flow}/webhook-tokens")]
pub async fn list_webhooks(
    state: web::Data<AppState>,
    g: Require<perm::WebhookManage>,
    flow: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let items = svc::list_webhooks(&state.into_inner(), &g.ctx, &flow).await?;
    Ok(HttpResponse::Ok().json(WebhookList {
        items: items.into_iter().map(Webhook::from).collect(),
    }))
}

/// Revoke a webhook token.
#[utoipa::path(tag = "flows", params(("flow" = String, Path), ("id" = String, Path)), responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/flows/{flow}/webhook-tokens/{id}")]
pub async fn revoke_webhook(
    state: web::Data<AppState>,
    g: Require<perm::WebhookManage>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (flow, id) = path.into_inner();
    svc::revoke_webhook(&state.into_inner(), &g.ctx, &flow, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Variable body. Secret values are write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableBody {
    /// Value (≤ 16 KiB).
    #[schema(value_type = String)]
    pub value: Zeroizing<String>,
    /// Secret (encrypted, never returned, scrubbed from agent output).
    #[serde(default)]
    pub secret: bool,
}

/// Variable list.
#[derive(Serialize, ToSchema)]
pub struct VariableList {
    /// Items.
    pub items: Vec<VariableView>,
}

/// List an application's variables (secret values never shown).
#[utoipa::path(tag = "variables", params(("app" = String, Path)), responses((status = 200, body = VariableList)), security(("session" = [])))]
#[get("/applications/{app}/variables")]
pub async fn list_variables(
    state: web::Data<AppState>,
    g: Require<perm::VariableRead>,
    app: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(VariableList {
        items: variables::list(&state.into_inner(), &g.ctx, &app).await?,
    }))
}

/// Read one variable.
#[utoipa::path(tag = "variables", params(("app" = String, Path), ("name" = String, Path)), responses((status = 200, body = VariableView), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/applications/{app}/variables/{name}")]
pub async fn get_variable(
    state: web::Data<AppState>,
    g: Require<perm::VariableRead>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, name) = path.into_inner();
    Ok(HttpResponse::Ok().json(variables::get(&state.into_inner(), &g.ctx, &app, &name).await?))
}

/// Set a variable.
#[utoipa::path(tag = "variables", params(("app" = String, Path), ("name" = String, Path)), request_body = VariableBody, responses((status = 200, body = VariableView), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[put("/applications/{app}/variables/{name}")]
pub async fn put_variable(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    g: Guarded<perm::VariableWrite, web::Json<VariableBody>>,
) -> Result<HttpResponse, ApiError> {
    let (app, name) = path.into_inner();
    let b = g.inner.into_inner();
    Ok(HttpResponse::Ok()
        .json(variables::put(&state.into_inner(), &g.ctx, &app, &name, b.value, b.secret).await?))
}

/// Delete a variable.
#[utoipa::path(tag = "variables", params(("app" = String, Path), ("name" = String, Path)), responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/applications/{app}/variables/{name}")]
pub async fn delete_variable(
    state: web::Data<AppState>,
    g: Require<perm::VariableWrite>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, name) = path.into_inner();
    variables::delete(&state.into_inner(), &g.ctx, &app, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}
