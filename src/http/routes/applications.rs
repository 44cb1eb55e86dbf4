//! `/api/v1/applications` CRUD.

use actix_web::{delete, get, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::applications::{self as svc, ApplicationInput, ApplicationRow};
use crate::service::AppState;

/// An application under test.
#[derive(Serialize, ToSchema)]
#[schema(as = ApplicationRow)]
pub struct Application {
    /// Id (UUID).
    pub id: String,
    /// Unique name (case-insensitive).
    pub name: String,
    /// Base URL of the app under test.
    pub base_url: String,
    /// Source repository URL.
    pub repo_url: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Updated (RFC 3339).
    pub updated_at: String,
}

impl From<ApplicationRow> for Application {
    fn from(r: ApplicationRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            base_url: r.base_url,
            repo_url: r.repo_url,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Create/replace body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationBody {
    /// 1–100 chars, unique in the tenant.
    pub name: String,
    /// `http(s)://` base URL of the app under test.
    pub base_url: String,
    /// Optional repository URL.
    #[serde(default)]
    pub repo_url: Option<String>,
}

/// A list page.
#[derive(Serialize, ToSchema)]
pub struct ApplicationList {
    /// Items.
    pub items: Vec<Application>,
}

/// List applications.
#[utoipa::path(tag = "applications", responses((status = 200, body = ApplicationList)), security(("session" = [])))]
#[get("/applications")]
pub async fn list(
    state: web::Data<AppState>,
    g: Require<perm::ApplicationRead>,
) -> Result<HttpResponse, ApiError> {
    let items = svc::list(&state.into_inner(), &g.ctx).await?;
    Ok(HttpResponse::Ok().json(ApplicationList {
        items: items.into_iter().map(Application::from).collect(),
    }))
}

/// Create an application (Free plan: at most 1 → 403 `plan_limit`).
#[utoipa::path(tag = "applications", request_body = ApplicationBody, responses((status = 201, body = Application), (status = 403, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/applications")]
pub async fn create(
    state: web::Data<AppState>,
    g: Guarded<perm::ApplicationWrite, web::Json<ApplicationBody>>,
) -> Result<HttpResponse, ApiError> {
    let body = &g.inner;
    let input = ApplicationInput::parse(&body.name, &body.base_url, body.repo_url.as_deref())?;
    let row = svc::create(&state.into_inner(), &g.ctx, input).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/applications/{}", row.id)))
        .json(Application::from(row)))
}

/// Read one application.
#[utoipa::path(tag = "applications", params(("id" = String, Path)), responses((status = 200, body = Application), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/applications/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    g: Require<perm::ApplicationRead>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = svc::get(&state.into_inner(), &g.ctx, &id).await?;
    Ok(HttpResponse::Ok().json(Application::from(row)))
}

/// Replace an application's fields.
#[utoipa::path(tag = "applications", params(("id" = String, Path)), request_body = ApplicationBody, responses((status = 200, body = Application), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[put("/applications/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    id: web::Path<String>,
    g: Guarded<perm::ApplicationWrite, web::Json<ApplicationBody>>,
) -> Result<HttpResponse, ApiError> {
    let body = &g.inner;
    let input = ApplicationInput::parse(&body.name, &body.base_url, body.repo_url.as_deref())?;
    let row = svc::update(&state.into_inner(), &g.ctx, &id, input).await?;
    Ok(HttpResponse::Ok().json(Application::from(row)))
}

/// Delete an application and its agent tokens.
#[utoipa::path(tag = "applications", params(("id" = String, Path)), responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/applications/{id}")]
pub async fn delete(
    state: web::Data<AppState>,
    g: Require<perm::ApplicationWrite>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    svc::delete(&state.into_inner(), &g.ctx, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
