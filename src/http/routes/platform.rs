//! PlatformAdmin catalog routes (never tenant data).

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::http::extract::{perm, Require};
use crate::service::AppState;
use crate::store::catalog::{self, TenantRow};

/// Tenants page.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    /// Tenants of this deployment.
    pub items: Vec<TenantRow>,
}

/// List the deployment's tenants (catalog data only).
#[utoipa::path(tag = "platform", responses((status = 200, body = TenantList)), security(("session" = [])))]
#[get("/platform/tenants")]
pub async fn tenants(
    state: web::Data<AppState>,
    _g: Require<perm::PlatformRead>,
) -> Result<HttpResponse, ApiError> {
    let items = state.catalog.run(|c| catalog::list_tenants(c)).await?;
    Ok(HttpResponse::Ok().json(TenantList { items }))
}
