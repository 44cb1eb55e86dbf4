//! Agent tokens (scoped to one application) and SCIM tokens: random, returned once, stored as
//! SHA-256, prefixed by kind and tenant (`fga_<tenant>_…`, `fgs_<tenant>_…`), revocable.

use std::sync::Arc;

use super::{AppState, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::crypto::token::{self, TokenKind};
use crate::domain::{new_object_id, now_rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::store::tokens;
pub use crate::store::tokens::ServiceTokenRow;
use crate::store::StoreError;

fn kind_name(k: TokenKind) -> &'static str {
    if k == TokenKind::Agent {
        "agent"
    } else {
        "scim"
    }
}

fn action(k: TokenKind, verb: &str) -> &'static str {
    match (k, verb) {
        (TokenKind::Agent, "create") => "agent_token.create",
        (TokenKind::Agent, _) => "agent_token.revoke",
        (_, "create") => "scim_token.create",
        _ => "scim_token.revoke",
    }
}

/// List tokens of a kind (no secrets).
pub async fn list(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    kind: TokenKind,
) -> ApiResult<Vec<ServiceTokenRow>> {
    let t = ctx.tenant.clone();
    let k = kind_name(kind);
    Ok(state
        .tenants
        .run(&t, move |c| tokens::list_tokens(c, k))
        .await?)
}

/// Create a token; returns the row and the secret (shown once).
pub async fn create(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    kind: TokenKind,
    name: &str,
    application_id: Option<&str>,
) -> ApiResult<(ServiceTokenRow, String)> {
    let t = ctx.tenant.clone();
    let name = crate::domain::DisplayName::parse(name, 100)
        .map_err(|e| ApiError::invalid("name", e.0))?
        .into_string();
    let name = name.as_str();
    if kind == TokenKind::Agent && application_id.is_none_or(|a| a.trim().is_empty()) {
        return Err(ApiError::invalid(
            "application_id",
            "application_id is required",
        ));
    }
    let secret = token::new_token(kind, t.as_str());
    let prefix: String = secret.chars().take(secret.len() - 43 + 6).collect();
    let row = ServiceTokenRow {
        id: new_object_id(),
        kind: kind_name(kind).into(),
        application_id: application_id.map(str::to_string),
        name: name.into(),
        prefix,
        created_at: now_rfc3339(),
        created_by: ctx.principal.actor_name(),
        revoked_at: None,
        token_hash: token::token_hash(&secret),
    };
    let ev = NewAuditEvent::new(&ctx.actor(), action(kind, "create"), Some(format!("{}_token:{}", row.kind, row.id)))
        .details(serde_json::json!({"name": row.name, "application_id": row.application_id, "prefix": row.prefix}));
    let r2 = row.clone();
    state
        .tenants
        .run(&t, move |c| tokens::insert_token(c, &r2, &ev))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::invalid("application_id", "no such application"),
            other => other.into(),
        })?;
    Ok((row, secret))
}

/// Revoke a token by id.
pub async fn revoke(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    kind: TokenKind,
    id: &str,
) -> ApiResult<()> {
    let t = ctx.tenant.clone();
    let k = kind_name(kind);
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        action(kind, "revoke"),
        Some(format!("{k}_token:{id}")),
    );
    let id = id.to_string();
    state
        .tenants
        .run(&t, move |c| tokens::revoke_token(c, &id, k, &ev))
        .await?;
    Ok(())
}
