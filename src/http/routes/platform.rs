//! PlatformAdmin catalog routes (never tenant data): tenants and the license.
//!
//! - `GET /api/v1/platform/tenants`, `POST /api/v1/platform/tenants`,
//!   `GET /api/v1/platform/tenants/{id}`, `POST /api/v1/platform/tenants/{id}/suspend`,
//!   `POST /api/v1/platform/tenants/{id}/resume`, `PUT /api/v1/platform/tenants/{id}/plan`
//! - `GET /api/v1/platform/license`, `POST /api/v1/platform/license` (body: the token,
//!   `Content-Type: application/jwt`), `POST /api/v1/platform/license/reload`,
//!   `GET|POST /api/v1/platform/license/revocations`
//! - `GET /api/v1/platform/backups`, `POST /api/v1/platform/backups` (issue 19)

use actix_web::http::header;
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::http::extract::{perm, Guarded, Require};
use crate::service::backup::{self as bk, BackupRow};
use crate::service::license::{self as lic, LicenseView, RevocationRow};
use crate::service::platform::{self as svc, NewTenant, TenantRow};
use crate::service::AppState;

/// A tenant as the catalog knows it.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantRow)]
pub struct Tenant {
    /// Tenant id (`<region>-<random>`).
    pub id: String,
    /// Unique display name.
    pub name: String,
    /// Home region.
    pub region: String,
    /// Plan: `free|pro|business|enterprise`.
    pub plan: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// `active` or `suspended` (a suspended tenant's users and tokens are refused; data is kept).
    pub status: String,
    /// The plan follows the license in force (the bootstrap tenant until a PlatformAdmin sets
    /// its plan; `plan` is then the stored fallback used when no license is in force).
    pub plan_follows_license: bool,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Self {
            id: r.id.to_string(),
            name: r.name,
            region: r.region,
            plan: r.plan,
            created_at: r.created_at,
            status: r.status,
            plan_follows_license: r.plan_follows_license,
        }
    }
}

/// A created tenant with its Owner's one-time password (shown once).
#[derive(Serialize, ToSchema)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Owner email.
    pub owner_email: String,
    /// One-time Owner password; it must be changed at first login.
    pub owner_password: String,
}

impl From<svc::CreatedTenant> for CreatedTenant {
    fn from(c: svc::CreatedTenant) -> Self {
        Self {
            tenant: c.tenant.into(),
            owner_email: c.owner_email,
            owner_password: c.owner_password,
        }
    }
}

/// An entry of the license revocation list.
#[derive(Serialize, ToSchema)]
#[schema(as = RevocationRow)]
pub struct Revocation {
    /// The revoked license id (`jti`).
    pub license_id: String,
    /// Free-text reason given by the PlatformAdmin.
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub revoked_at: String,
    /// Who (email, or `host-cli`).
    pub revoked_by: String,
}

impl From<RevocationRow> for Revocation {
    fn from(r: RevocationRow) -> Self {
        Self {
            license_id: r.license_id,
            reason: r.reason,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
        }
    }
}

/// Tenants page.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    /// Tenants of this deployment.
    pub items: Vec<Tenant>,
}

/// List the deployment's tenants (catalog data only).
#[utoipa::path(tag = "platform", responses((status = 200, body = TenantList)), security(("session" = [])))]
#[get("/platform/tenants")]
pub async fn tenants(
    state: web::Data<AppState>,
    _g: Require<perm::PlatformRead>,
) -> Result<HttpResponse, ApiError> {
    let items = svc::list(&state.into_inner()).await?;
    Ok(HttpResponse::Ok().json(TenantList {
        items: items.into_iter().map(Tenant::from).collect(),
    }))
}

/// Body of `POST /api/v1/platform/tenants`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    /// Unique name: 1–64 letters, digits, spaces, `-`, `_`, `.`; must not look like a tenant id.
    pub name: String,
    /// Email of the first Owner (gets a one-time password, returned once).
    pub owner_email: String,
    /// Region (default: this deployment's). Another configured region → 421 with
    /// `X-FlowGuard-Region-Endpoint`; must be among the license's regions when it lists any.
    #[serde(default)]
    pub region: Option<String>,
    /// Plan (default `free`), at most the license's plan.
    #[serde(default)]
    pub plan: Option<String>,
}

/// Create a tenant, pinned to its region forever, with one Owner.
#[utoipa::path(tag = "platform", request_body = CreateTenantBody, responses(
    (status = 201, body = CreatedTenant), (status = 403, body = crate::http::problem::Problem),
    (status = 409, body = crate::http::problem::Problem), (status = 421, body = crate::http::problem::Problem),
    (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/platform/tenants")]
pub async fn create_tenant(
    state: web::Data<AppState>,
    g: Guarded<perm::PlatformWrite, web::Json<CreateTenantBody>>,
) -> Result<HttpResponse, ApiError> {
    let b = g.inner.into_inner();
    let created = svc::create(
        &state.into_inner(),
        &g.ctx,
        NewTenant {
            name: b.name,
            owner_email: b.owner_email,
            region: b.region,
            plan: b.plan,
        },
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/platform/tenants/{}", created.tenant.id),
        ))
        .json(CreatedTenant::from(created)))
}

/// Read one tenant (catalog data only).
#[utoipa::path(tag = "platform", params(("id" = String, Path)), responses((status = 200, body = Tenant), (status = 404, body = crate::http::problem::Problem), (status = 421, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/platform/tenants/{id}")]
pub async fn get_tenant(
    state: web::Data<AppState>,
    _g: Require<perm::PlatformRead>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = svc::get(&state.into_inner(), &id).await?;
    Ok(HttpResponse::Ok().json(Tenant::from(t)))
}

/// Suspend a tenant: its users and tokens are refused (403 `tenant_suspended`); data is kept.
#[utoipa::path(tag = "platform", params(("id" = String, Path)), responses((status = 200, body = Tenant), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/platform/tenants/{id}/suspend")]
pub async fn suspend_tenant(
    state: web::Data<AppState>,
    g: Require<perm::PlatformWrite>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = svc::set_suspended(&state.into_inner(), &g.ctx, &id, true).await?;
    Ok(HttpResponse::Ok().json(Tenant::from(t)))
}

/// Resume a suspended tenant.
#[utoipa::path(tag = "platform", params(("id" = String, Path)), responses((status = 200, body = Tenant), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/platform/tenants/{id}/resume")]
pub async fn resume_tenant(
    state: web::Data<AppState>,
    g: Require<perm::PlatformWrite>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = svc::set_suspended(&state.into_inner(), &g.ctx, &id, false).await?;
    Ok(HttpResponse::Ok().json(Tenant::from(t)))
}

/// Body of `PUT /api/v1/platform/tenants/{id}/plan`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// `free|pro|business|enterprise`, at most the license's plan.
    pub plan: String,
}

/// Assign a tenant's plan (up to the license's plan).
#[utoipa::path(tag = "platform", params(("id" = String, Path)), request_body = PlanBody, responses((status = 200, body = Tenant), (status = 403, body = crate::http::problem::Problem), (status = 404, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[put("/platform/tenants/{id}/plan")]
pub async fn set_plan(
    state: web::Data<AppState>,
    id: web::Path<String>,
    g: Guarded<perm::PlatformWrite, web::Json<PlanBody>>,
) -> Result<HttpResponse, ApiError> {
    let t = svc::set_plan(&state.into_inner(), &g.ctx, &id, &g.inner.plan).await?;
    Ok(HttpResponse::Ok().json(Tenant::from(t)))
}

/// The installed license, its status and the entitlements it gives.
#[utoipa::path(tag = "platform", responses((status = 200, body = LicenseView)), security(("session" = [])))]
#[get("/platform/license")]
pub async fn license(
    state: web::Data<AppState>,
    _g: Require<perm::PlatformRead>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(lic::view(&state)))
}

/// Install a license: the body is the token itself with `Content-Type: application/jwt`.
/// Refused licenses → 422 with a code naming the reason (`license_bad_signature`,
/// `license_expired`, `license_not_yet_valid`, `license_revoked`, `license_malformed`, …).
#[utoipa::path(tag = "platform", request_body(content = String, content_type = "application/jwt"), responses(
    (status = 200, body = LicenseView), (status = 415, body = crate::http::problem::Problem),
    (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/platform/license")]
pub async fn install_license(
    state: web::Data<AppState>,
    req: HttpRequest,
    g: Guarded<perm::PlatformWrite, web::Bytes>,
) -> Result<HttpResponse, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/jwt") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/jwt with the license token as the body",
        ));
    }
    let token = std::str::from_utf8(&g.inner).map_err(|_| {
        lic::refusal(&crate::crypto::license::LicenseError::Malformed(
            "body is not UTF-8".into(),
        ))
    })?;
    let v = lic::install(&state.into_inner(), &g.ctx, token.trim().to_string()).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Re-read the configured license file without a restart (SIGHUP does the same).
#[utoipa::path(tag = "platform", responses((status = 200, body = LicenseView), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/platform/license/reload")]
pub async fn reload_license(
    state: web::Data<AppState>,
    g: Require<perm::PlatformWrite>,
) -> Result<HttpResponse, ApiError> {
    let v = lic::reload(&state.into_inner(), &g.ctx.actor()).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Start the 30-day offline trial (every licensed feature, once per deployment; audited as
/// `license.trial_start`). 409 `trial_unavailable` when it was used already (moving the clock
/// back does not help) or a license is in force.
#[utoipa::path(tag = "platform", responses((status = 200, body = LicenseView), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/platform/license/trial")]
pub async fn start_trial(
    state: web::Data<AppState>,
    g: Require<perm::PlatformWrite>,
) -> Result<HttpResponse, ApiError> {
    let v = lic::start_trial(&state.into_inner(), &g.ctx).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Revocation list page.
#[derive(Serialize, ToSchema)]
pub struct RevocationList {
    /// Revoked license ids.
    pub items: Vec<Revocation>,
}

/// The license revocation list.
#[utoipa::path(tag = "platform", responses((status = 200, body = RevocationList)), security(("session" = [])))]
#[get("/platform/license/revocations")]
pub async fn revocations(
    state: web::Data<AppState>,
    _g: Require<perm::PlatformRead>,
) -> Result<HttpResponse, ApiError> {
    let items = lic::revocations(&state.into_inner()).await?;
    Ok(HttpResponse::Ok().json(RevocationList {
        items: items.into_iter().map(Revocation::from).collect(),
    }))
}

/// Body of `POST /api/v1/platform/license/revocations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// The license id (`jti`) to revoke.
    pub license_id: String,
    /// Why (at most 500 characters).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Revoke a license id: a revoked license stops counting at once (Free limits apply).
#[utoipa::path(tag = "platform", request_body = RevokeBody, responses((status = 201, body = Revocation), (status = 409, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/platform/license/revocations")]
pub async fn revoke_license(
    state: web::Data<AppState>,
    g: Guarded<perm::PlatformWrite, web::Json<RevokeBody>>,
) -> Result<HttpResponse, ApiError> {
    let row = lic::revoke(
        &state.into_inner(),
        &g.ctx,
        &g.inner.license_id,
        g.inner.reason.as_deref(),
    )
    .await?;
    Ok(HttpResponse::Created().json(Revocation::from(row)))
}

/// A backup started from the API, the scheduled job or `flowguard backup create`.
#[derive(Serialize, ToSchema)]
#[schema(as = BackupRow)]
pub struct Backup {
    /// Backup id.
    pub id: String,
    /// `api`, `schedule` or `cli` (`flowguard backup create`, `flowguard jobs run backup` is
    /// `schedule`).
    pub trigger: String,
    /// `running`, `done` or `failed` (a backup whose process ended before it finished — killed,
    /// crashed, restarted — is `failed`, error starting with "interrupted").
    pub status: String,
    /// The complete backup directory on the server (when done); check it with
    /// `flowguard backup verify DIR`.
    pub dir: Option<String>,
    /// Total size of its files in bytes (when done).
    pub size_bytes: Option<i64>,
    /// Wall time in milliseconds (when finished).
    pub duration_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Lowercase hex SHA-256 of its `manifest.json` (also in the `backup.create` audit row).
    pub manifest_sha256: Option<String>,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    pub finished_at: Option<String>,
}

impl From<BackupRow> for Backup {
    fn from(r: BackupRow) -> Self {
        Self {
            id: r.id,
            trigger: r.trigger,
            status: r.status,
            dir: r.dir,
            size_bytes: r.bytes,
            duration_ms: r.duration_ms,
            error: r.error,
            manifest_sha256: r.manifest_sha256,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

/// Key status of every tenant (`GET /api/v1/platform/keys`).
#[derive(Serialize, ToSchema)]
pub struct PlatformKeyStatus {
    /// `keys.rotation_days`: a tenant's key set is rotated automatically this many days after
    /// it became active.
    pub rotation_days: u32,
    /// One entry per tenant, oldest tenant first (as `flowguard keys status --json`).
    pub items: Vec<crate::service::keys::KeyStatus>,
}

/// Key status of every tenant — active and pending version, next automatic rotation, whether it
/// is due, every version's state — as `flowguard keys status` prints it. Catalog data only: no
/// key material, no tenant data.
#[utoipa::path(tag = "platform", responses((status = 200, body = PlatformKeyStatus)), security(("session" = [])))]
#[get("/platform/keys")]
pub async fn key_status(
    state: web::Data<AppState>,
    _g: Require<perm::PlatformRead>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let items = crate::service::keys::status_all(&state).await?;
    Ok(HttpResponse::Ok().json(PlatformKeyStatus {
        rotation_days: state.settings.keys.rotation_days,
        items,
    }))
}

/// Backups page.
#[derive(Serialize, ToSchema)]
pub struct BackupList {
    /// Backups started from the API or the schedule, newest first.
    pub items: Vec<Backup>,
}

/// Backups started from the API or the scheduled job, newest first (kept in the catalog).
#[utoipa::path(tag = "platform", responses((status = 200, body = BackupList)), security(("session" = [])))]
#[get("/platform/backups")]
pub async fn backups(
    state: web::Data<AppState>,
    _g: Require<perm::PlatformRead>,
) -> Result<HttpResponse, ApiError> {
    let items = bk::list_api(&state.into_inner()).await?;
    Ok(HttpResponse::Ok().json(BackupList {
        items: items.into_iter().map(Backup::from).collect(),
    }))
}

/// Start a backup of every store into `[backup] dir` in the background (no body); poll
/// `GET /api/v1/platform/backups` for its status. One runs at a time: 409 `backup_running`.
/// Audited as `backup.create` / `backup.failed` in the catalog.
#[utoipa::path(tag = "platform", responses((status = 202, body = Backup), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/platform/backups")]
pub async fn start_backup(
    state: web::Data<AppState>,
    g: Require<perm::PlatformWrite>,
) -> Result<HttpResponse, ApiError> {
    let row = bk::start_api(&state.into_inner(), &g.ctx).await?;
    Ok(HttpResponse::Accepted().json(Backup::from(row)))
}
