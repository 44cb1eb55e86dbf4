//! `/api/v1/members`: list, add, role change, remove.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::members::{self as svc, UserRow};
use crate::service::AppState;

/// A tenant member.
#[derive(Serialize, ToSchema)]
#[schema(as = UserRow)]
pub struct Member {
    /// Id (UUID).
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// `owner|admin|tester|viewer`.
    pub role: String,
    /// `local`, `ldap` or `scim`.
    pub source: String,
    /// May log in.
    pub active: bool,
    /// The one-time password must be changed.
    pub must_change_password: bool,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Updated (RFC 3339).
    pub updated_at: String,
}

impl From<UserRow> for Member {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            email: r.email,
            display_name: r.display_name,
            role: r.role,
            source: r.source,
            active: r.active,
            must_change_password: r.must_change_password,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

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
    pub items: Vec<Member>,
}

/// List members.
#[utoipa::path(tag = "members", responses((status = 200, body = MemberList)), security(("session" = [])))]
#[get("/members")]
pub async fn list(
    state: web::Data<AppState>,
    g: Require<perm::MemberRead>,
) -> Result<HttpResponse, ApiError> {
    let items = svc::list(&state.into_inner(), &g.ctx).await?;
    Ok(HttpResponse::Ok().json(MemberList {
        items: items.into_iter().map(Member::from).collect(),
    }))
}

/// Add a local member.
#[utoipa::path(tag = "members", request_body = AddMember, responses((status = 201, body = Member), (status = 409, body = crate::http::problem::Problem), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/members")]
pub async fn add(
    state: web::Data<AppState>,
    g: Guarded<perm::MemberWrite, web::Json<AddMember>>,
) -> Result<HttpResponse, ApiError> {
    let b = g.inner.into_inner();
    let row = svc::add(&state.into_inner(), &g.ctx, &b.email, &b.role, b.password).await?;
    Ok(HttpResponse::Created().json(Member::from(row)))
}

/// Change a member's role (the last Owner cannot be demoted: 409 `last_owner`).
#[utoipa::path(tag = "members", params(("id" = String, Path)), request_body = ChangeRole, responses((status = 200, body = Member), (status = 404, body = crate::http::problem::Problem), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[patch("/members/{id}")]
pub async fn change_role(
    state: web::Data<AppState>,
    id: web::Path<String>,
    g: Guarded<perm::MemberWrite, web::Json<ChangeRole>>,
) -> Result<HttpResponse, ApiError> {
    let row = svc::change_role(&state.into_inner(), &g.ctx, &id, &g.inner.role).await?;
    Ok(HttpResponse::Ok().json(Member::from(row)))
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
