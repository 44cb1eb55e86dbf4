//! Tenant members: list, add (local account with an initial password), role change, remove.
//! Rules: only an Owner may grant, change or remove the Owner role; the last active Owner can be
//! neither removed nor demoted (409 `last_owner`, re-checked inside the write transaction).

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{AppState, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::domain::{new_object_id, now_rfc3339, Email, Role, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::users;
pub use crate::store::users::UserRow;
use crate::store::{Conflict, StoreError};

fn map_owner_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(Conflict::UserLimit) => ApiError::new(
            ErrorCode::PlanLimit,
            "the license in force allows no more users for this tenant",
        ),
        StoreError::Conflict(Conflict::LastOwner) => ApiError::new(
            ErrorCode::LastOwner,
            "the last Owner cannot be removed or demoted",
        )
        .field("role"),
        StoreError::Conflict(Conflict::Constraint(_)) => {
            ApiError::new(ErrorCode::MemberExists, "a member with this email exists").field("email")
        }
        other => other.into(),
    }
}

/// All members.
pub async fn list(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<Vec<UserRow>> {
    let t = ctx.tenant.clone();
    Ok(state.tenants.run(&t, |c| users::list_users(c)).await?)
}

/// Add a local member.
pub async fn add(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    email: &str,
    role: &str,
    password: Zeroizing<String>,
) -> ApiResult<UserRow> {
    let t = ctx.tenant.clone();
    let email = Email::parse(email).map_err(|e| ApiError::invalid("email", e.0))?;
    let role = Role::parse_member(role).map_err(|e| ApiError::invalid("role", e.0))?;
    if role == Role::Owner && ctx.principal.role() != Role::Owner {
        return Err(ApiError::new(
            ErrorCode::OwnerRequired,
            "only an Owner may grant the Owner role",
        )
        .field("role"));
    }
    super::tenants::check_new_password(&password).map_err(|m| ApiError::invalid("password", m))?;
    let hash = state.passwords.hash(password).await?;
    let now = now_rfc3339();
    let row = UserRow {
        id: new_object_id(),
        email: email.as_str().into(),
        display_name: None,
        role: role.as_str().into(),
        source: "local".into(),
        active: true,
        must_change_password: true,
        created_at: now.clone(),
        updated_at: now,
        password_hash: Some(hash),
    };
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "member.add",
        Some(format!("member:{}", row.email)),
    )
    .details(serde_json::json!({"role": row.role, "member_id": row.id}));
    let r2 = row.clone();
    let max = super::license::tenant_entitlements(state, &t)
        .await?
        .max_users;
    state
        .tenants
        .run(&t, move |c| {
            users::insert_user_within(c, &r2, max, Some(&ev))
        })
        .await
        .map_err(map_owner_conflict)?;
    Ok(row)
}

async fn load(state: &Arc<AppState>, t: &TenantId, id: &str) -> ApiResult<UserRow> {
    let id = id.to_string();
    state
        .tenants
        .run(t, move |c| users::user_by_id(c, &id))
        .await?
        .ok_or_else(ApiError::not_found)
}

/// Change a member's role.
pub async fn change_role(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    role: &str,
) -> ApiResult<UserRow> {
    let t = ctx.tenant.clone();
    let new_role = Role::parse_member(role).map_err(|e| ApiError::invalid("role", e.0))?;
    let current = load(state, &t, id).await?;
    let touches_owner = new_role == Role::Owner || current.role == Role::Owner.as_str();
    if touches_owner && ctx.principal.role() != Role::Owner {
        return Err(ApiError::new(
            ErrorCode::OwnerRequired,
            "only an Owner may change the Owner role",
        )
        .field("role"));
    }
    if current.role == new_role.as_str() {
        return Ok(current);
    }
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "member.role_change",
        Some(format!("member:{}", current.email)),
    )
    .details(
        serde_json::json!({"from": current.role, "to": new_role.as_str(), "member_id": current.id}),
    );
    let uid = current.id.clone();
    state
        .tenants
        .run(&t, move |c| {
            users::set_user_role(c, &uid, new_role.as_str(), &ev)
        })
        .await
        .map_err(map_owner_conflict)?;
    load(state, &t, id).await
}

/// Remove a member.
pub async fn remove(state: &Arc<AppState>, ctx: &TenantCtx, id: &str) -> ApiResult<()> {
    let t = ctx.tenant.clone();
    let current = load(state, &t, id).await?;
    if current.role == Role::Owner.as_str() && ctx.principal.role() != Role::Owner {
        return Err(ApiError::new(
            ErrorCode::OwnerRequired,
            "only an Owner may remove an Owner",
        ));
    }
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "member.remove",
        Some(format!("member:{}", current.email)),
    )
    .details(serde_json::json!({"role": current.role, "member_id": current.id}));
    let uid = current.id.clone();
    state
        .tenants
        .run(&t, move |c| users::delete_user(c, &uid, &ev))
        .await
        .map_err(map_owner_conflict)?;
    Ok(())
}
