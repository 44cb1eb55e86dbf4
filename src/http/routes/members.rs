//! `/api/v1/members`: list, add, role change, remove.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::{members as svc, AppState};
use crate::store::users::UserRow;

/// Add-member body: a local account with an initial password (12–1024 bytes) that the member
/// must change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Email.
    pub email: String,
    /// `owner|admin|tester|viewer`.
    pub role: String,
    /// Initial password.
    #[schema(value_type = String, format = Password)]
    pub password: Zeroizing<String>,
}

/// Role-change body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    /// New role.
    pub role: String,
}

/// Members page.
#[derive(Serialize, ToSchema)]
pub struct MemberList {
    /// Items.
    pub items: Vec<UserRow>,
}

/// List members.
#[utoipa::path(tag = "members", responses((status = 200, body = MemberList)), security(("session" = [])))]
#[get("/members")]
pub async fn list(
    state: web::Data<AppState>,
    g: Require<perm::MemberRead>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(MemberList {
        items: svc::list(&state.into_inner(), &g.ctx).await?,
    }))
}

/// Add a local member.
#[utoipa::path(tag = "members", request_body = AddMember, responses((status = 201, body = UserRow), (status = 409, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/members")]
pub async fn add(
    state: web::Data<AppState>,
    g: Guarded<perm::MemberWrite, web::Json<AddMember>>,
) -> Result<HttpResponse, ApiError> {
    let b = g.inner.into_inner();
    let row = svc::add(&state.into_inner(), &g.ctx, &b.email, &b.role, b.password).await?;
    Ok(HttpResponse::Created().json(row))
}

/// Change a member's role (the last Owner cannot be demoted: 409 `last_owner`).
#[utoipa::path(tag = "members", params(("id" = String, Path)), request_body = ChangeRole, responses((status = 200, body = UserRow), (status = 404, body = crate::http::problem::Problem), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[patch("/members/{id}")]
pub async fn change_role(
    state: web::Data<AppState>,
    id: web::Path<String>,
    g: Guarded<perm::MemberWrite, web::Json<ChangeRole>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok()
        .json(svc::change_role(&state.into_inner(), &g.ctx, &id, &g.inner.role).await?))
}

/// Remove a member (the last Owner cannot be removed: 409 `last_owner`).
#[utoipa::path(tag = "members", params(("id" = String, Path)), responses((status = 204), (status = 404, body = crate::http::problem::Problem), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/members/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    g: Require<perm::MemberWrite>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    svc::remove(&state.into_inner(), &g.ctx, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
