//! Tenant-side license routes: `GET /api/v1/license` (Owner: the tenant's entitlements and the
//! license's expiry) and `GET /api/v1/notifications` (license expiry warnings for Owners and
//! PlatformAdmins, shown by the dashboard).

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Entitlements;
use crate::error::ApiError;
use crate::http::extract::{perm, Require};
use crate::service::license::{self as lic, LicenseStatus, Notification};
use crate::service::AppState;

/// What the caller's tenant may use.
#[derive(Serialize, ToSchema)]
pub struct TenantLicense {
    /// Status of the deployment's license.
    pub status: LicenseStatus,
    /// License id, when one is installed.
    pub license_id: Option<String>,
    /// Licensee.
    pub licensee: Option<String>,
    /// Expiry (RFC 3339).
    pub expires_at: Option<String>,
    /// The tenant's entitlements right now.
    pub entitlements: Entitlements,
}

/// The tenant's license view (Owner).
#[utoipa::path(tag = "license", responses((status = 200, body = TenantLicense)), security(("session" = [])))]
#[get("/license")]
pub async fn tenant_license(
    state: web::Data<AppState>,
    g: Require<perm::LicenseRead>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let entitlements = lic::tenant_entitlements(&state, &g.ctx.tenant).await?;
    let v = lic::view(&state);
    Ok(HttpResponse::Ok().json(TenantLicense {
        status: v.status,
        license_id: v.license.as_ref().map(|l| l.id.clone()),
        licensee: v.license.as_ref().map(|l| l.licensee.clone()),
        expires_at: v.license.as_ref().map(|l| l.expires_at.clone()),
        entitlements,
    }))
}

/// Notifications page.
#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    /// Current notifications, most severe first.
    pub items: Vec<Notification>,
}

/// The caller's notifications: license expiry warnings from 30 days before expiry; for Owners
/// also `integration_auth_failed` and `integration_token_expiring` (issue 20).
#[utoipa::path(tag = "license", responses((status = 200, body = NotificationList)), security(("session" = [])))]
#[get("/notifications")]
pub async fn notifications(
    state: web::Data<AppState>,
    g: Require<perm::NotificationRead>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(NotificationList {
        items: crate::service::tickets::all_notifications(&state.into_inner(), &g.ctx).await,
    }))
}
