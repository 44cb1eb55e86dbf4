//! Applications under test. The tenant's license entitlements cap the number of applications
//! (Free: 1; otherwise the license's `max_applications`) — 403 `plan_limit`; the count is checked
//! inside the same `BEGIN IMMEDIATE` transaction as the insert, so parallel creates cannot
//! overshoot.

use std::sync::Arc;

use super::{AppState, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::domain::{new_object_id, now_rfc3339};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::applications;
pub use crate::store::applications::ApplicationRow;
use crate::store::{Conflict, StoreError};

/// Validated application fields.
#[derive(Debug, Clone)]
pub struct ApplicationInput {
    /// 1–100 chars.
    pub name: String,
    /// `http(s)://` URL.
    pub base_url: String,
    /// Optional repository URL (`https://`, `ssh://`, `git@…`).
    pub repo_url: Option<String>,
}

impl ApplicationInput {
    /// Validate raw fields (422 naming the field).
    pub fn parse(name: &str, base_url: &str, repo_url: Option<&str>) -> ApiResult<Self> {
        let name = crate::domain::DisplayName::parse(name, 100)
            .map_err(|e| ApiError::invalid("name", e.0))?
            .into_string();
        let name = name.as_str();
        let base = base_url.trim();
        let ok_scheme = base.starts_with("https://") || base.starts_with("http://");
        if !ok_scheme
            || base.len() > 2048
            || base.chars().any(|c| c.is_whitespace() || c.is_control())
            || base.ends_with("://")
        {
            return Err(ApiError::invalid(
                "base_url",
                "base_url must be an http(s) URL",
            ));
        }
        let repo = match repo_url.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(r) => {
                let ok =
                    (r.starts_with("https://") || r.starts_with("ssh://") || r.starts_with("git@"))
                        && r.len() <= 2048
                        && !r.chars().any(|c| c.is_whitespace() || c.is_control());
                if !ok {
                    return Err(ApiError::invalid(
                        "repo_url",
                        "repo_url must be an https://, ssh:// or git@ URL",
                    ));
                }
                Some(r.to_string())
            }
        };
        Ok(Self {
            name: name.into(),
            base_url: base.into(),
            repo_url: repo,
        })
    }
}

fn map_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(Conflict::PlanLimit) => ApiError::new(
            ErrorCode::PlanLimit,
            "the license in force allows no more applications for this tenant",
        ),
        StoreError::Conflict(Conflict::Constraint(_)) => {
            ApiError::new(ErrorCode::NameTaken, "an application with this name exists")
                .field("name")
        }
        other => other.into(),
    }
}

/// List.
pub async fn list(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<Vec<ApplicationRow>> {
    let t = ctx.tenant.clone();
    Ok(state
        .tenants
        .run(&t, |c| applications::list_applications(c))
        .await?)
}

/// Read one; another tenant's id is simply not found here (404).
pub async fn get(state: &Arc<AppState>, ctx: &TenantCtx, id: &str) -> ApiResult<ApplicationRow> {
    let t = ctx.tenant.clone();
    let id = id.to_string();
    state
        .tenants
        .run(&t, move |c| applications::application(c, &id))
        .await?
        .ok_or_else(ApiError::not_found)
}

/// Create.
pub async fn create(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    input: ApplicationInput,
) -> ApiResult<ApplicationRow> {
    let t = ctx.tenant.clone();
    let max = super::license::tenant_entitlements(state, &t)
        .await?
        .max_applications;
    let now = now_rfc3339();
    let row = ApplicationRow {
        id: new_object_id(),
        name: input.name,
        base_url: input.base_url,
        repo_url: input.repo_url,
        created_at: now.clone(),
        updated_at: now,
    };
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "application.create",
        Some(format!("application:{}", row.id)),
    )
    .details(serde_json::json!({"name": row.name, "base_url": row.base_url}));
    let r2 = row.clone();
    state
        .tenants
        .run(&t, move |c| {
            applications::insert_application(c, &r2, max, &ev)
        })
        .await
        .map_err(map_conflict)?;
    Ok(row)
}

/// Replace fields.
pub async fn update(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    input: ApplicationInput,
) -> ApiResult<ApplicationRow> {
    let t = ctx.tenant.clone();
    let mut row = get(state, ctx, id).await?;
    let before =
        serde_json::json!({"name": row.name, "base_url": row.base_url, "repo_url": row.repo_url});
    row.name = input.name;
    row.base_url = input.base_url;
    row.repo_url = input.repo_url;
    row.updated_at = now_rfc3339();
    let ev = NewAuditEvent::new(&ctx.actor(), "application.update", Some(format!("application:{}", row.id)))
        .details(serde_json::json!({"before": before, "after": {"name": row.name, "base_url": row.base_url, "repo_url": row.repo_url}}));
    let r2 = row.clone();
    state
        .tenants
        .run(&t, move |c| applications::update_application(c, &r2, &ev))
        .await
        .map_err(map_conflict)?;
    Ok(row)
}

/// Delete, with everything under it: flows and their versions, runs, steps, screenshots (rows
/// and encrypted files), variables, webhook and agent tokens.
pub async fn delete(state: &Arc<AppState>, ctx: &TenantCtx, id: &str) -> ApiResult<()> {
    let t = ctx.tenant.clone();
    let row = get(state, ctx, id).await?;
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "application.delete",
        Some(format!("application:{}", row.id)),
    )
    .details(serde_json::json!({"name": row.name}));
    let id = row.id.clone();
    let shots = state
        .tenants
        .run(&t, move |c| applications::delete_application(c, &id, &ev))
        .await?;
    super::screenshots::remove_files(state, &t, &shots);
    Ok(())
}
