//! Agent tokens (`/api/v1/agent-tokens`, scoped to one application) and SCIM tokens
//! (`/api/v1/scim-tokens`). The secret is returned once as `token`.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::crypto::token::TokenKind;
use crate::error::ApiError;
use crate::http::extract::{perm, Guarded, Require};
use crate::service::tokens::{self as svc, ServiceTokenRow};
use crate::service::{AppState, Principal};

/// An agent or SCIM token (never the secret itself).
#[derive(Serialize, ToSchema)]
#[schema(as = ServiceTokenRow)]
pub struct ServiceToken {
    /// Id (UUID).
    pub id: String,
    /// `agent` or `scim`.
    pub kind: String,
    /// Application an agent token is scoped to.
    pub application_id: Option<String>,
    /// Label.
    pub name: String,
    /// Visible prefix, e.g. `fga_eus-7k2m9q_AbC…` (first chars only).
    pub prefix: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Creator email.
    pub created_by: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
}

impl From<ServiceTokenRow> for ServiceToken {
    fn from(r: ServiceTokenRow) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            application_id: r.application_id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            created_by: r.created_by,
            revoked_at: r.revoked_at,
        }
    }
}

/// Agent-token body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentToken {
    /// Application the token is scoped to.
    pub application_id: String,
    /// Label.
    pub name: String,
}

/// SCIM-token body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScimToken {
    /// Label.
    pub name: String,
}

/// A created token: metadata plus the secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// Metadata.
    #[serde(flatten)]
    pub meta: ServiceToken,
    /// The bearer secret (`fga_<tenant>_…` or `fgs_<tenant>_…`); stored only as SHA-256.
    pub token: String,
}

/// Token list.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    /// Items (no secrets).
    pub items: Vec<ServiceToken>,
}

/// List agent tokens.
#[utoipa::path(tag = "tokens", responses((status = 200, body = TokenList)), security(("session" = [])))]
#[get("/agent-tokens")]
pub async fn list_agent(
    state: web::Data<AppState>,
    g: Require<perm::AgentTokenManage>,
) -> Result<HttpResponse, ApiError> {
    let items = svc::list(&state.into_inner(), &g.ctx, TokenKind::Agent).await?;
    Ok(HttpResponse::Ok().json(TokenList {
        items: items.into_iter().map(ServiceToken::from).collect(),
    }))
}

/// Create an agent token for one application.
#[utoipa::path(tag = "tokens", request_body = CreateAgentToken, responses((status = 201, body = CreatedToken), (status = 422, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/agent-tokens")]
pub async fn create_agent(
    state: web::Data<AppState>,
    g: Guarded<perm::AgentTokenManage, web::Json<CreateAgentToken>>,
) -> Result<HttpResponse, ApiError> {
    let body = &g.inner;
    let (meta, token) = svc::create(
        &state.into_inner(),
        &g.ctx,
        TokenKind::Agent,
        &body.name,
        Some(&body.application_id),
    )
    .await?;
    Ok(HttpResponse::Created().json(CreatedToken {
        meta: meta.into(),
        token,
    }))
}

/// Revoke an agent token.
#[utoipa::path(tag = "tokens", params(("id" = String, Path)), responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/agent-tokens/{id}")]
pub async fn revoke_agent(
    state: web::Data<AppState>,
    g: Require<perm::AgentTokenManage>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    svc::revoke(&state.into_inner(), &g.ctx, TokenKind::Agent, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// List SCIM tokens.
#[utoipa::path(tag = "tokens", responses((status = 200, body = TokenList)), security(("session" = [])))]
#[get("/scim-tokens")]
pub async fn list_scim(
    state: web::Data<AppState>,
    g: Require<perm::ScimTokenManage>,
) -> Result<HttpResponse, ApiError> {
    let items = svc::list(&state.into_inner(), &g.ctx, TokenKind::Scim).await?;
    Ok(HttpResponse::Ok().json(TokenList {
        items: items.into_iter().map(ServiceToken::from).collect(),
    }))
}

/// Create a SCIM token.
#[utoipa::path(tag = "tokens", request_body = CreateScimToken, responses((status = 201, body = CreatedToken)), security(("session" = [])))]
#[post("/scim-tokens")]
pub async fn create_scim(
    state: web::Data<AppState>,
    g: Guarded<perm::ScimTokenManage, web::Json<CreateScimToken>>,
) -> Result<HttpResponse, ApiError> {
    let body = &g.inner;
    let (meta, token) = svc::create(
        &state.into_inner(),
        &g.ctx,
        TokenKind::Scim,
        &body.name,
        None,
    )
    .await?;
    Ok(HttpResponse::Created().json(CreatedToken {
        meta: meta.into(),
        token,
    }))
}

/// Revoke a SCIM token.
#[utoipa::path(tag = "tokens", params(("id" = String, Path)), responses((status = 204), (status = 404, body = crate::http::problem::Problem)), security(("session" = [])))]
#[delete("/scim-tokens/{id}")]
pub async fn revoke_scim(
    state: web::Data<AppState>,
    g: Require<perm::ScimTokenManage>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    svc::revoke(&state.into_inner(), &g.ctx, TokenKind::Scim, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An agent token's scope.
#[derive(Serialize, ToSchema)]
pub struct AgentScope {
    /// Tenant id.
    pub tenant_id: String,
    /// The one application this token acts on.
    pub application_id: String,
    /// Token name.
    pub name: String,
}

/// What an agent token may act on.
#[utoipa::path(tag = "agent", responses((status = 200, body = AgentScope)), security(("bearer" = [])))]
#[get("/agent/whoami")]
pub async fn agent_whoami(g: Require<perm::AgentSelf>) -> Result<HttpResponse, ApiError> {
    match g.ctx.principal {
        Principal::Agent {
            application_id,
            name,
            ..
        } => Ok(HttpResponse::Ok().json(AgentScope {
            tenant_id: g.ctx.tenant.to_string(),
            application_id,
            name,
        })),
        _ => Err(ApiError::forbidden()),
    }
}
