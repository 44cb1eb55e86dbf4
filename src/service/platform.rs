//! PlatformAdmin catalog operations on tenants: create (in an allowed region, pinned forever),
//! list, read, suspend/resume, plan assignment up to the license's plan. Catalog data only —
//! nothing here opens a tenant's data beyond writing the new tenant's first Owner.

use std::sync::Arc;

use super::{unix_now, AppState, Caller};
use crate::audit::NewAuditEvent;
use crate::auth::password;
use crate::domain::plan::FEATURE_REGIONS;
use crate::domain::{Plan, Region, TenantName};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::service::tenants::{self, BootstrapError};
use crate::store::catalog;
pub use crate::store::catalog::TenantRow;

/// Input of `POST /api/v1/platform/tenants`.
pub struct NewTenant {
    /// Unique name (must not look like a tenant id).
    pub name: String,
    /// First Owner's email.
    pub owner_email: String,
    /// Region; default: this deployment's.
    pub region: Option<String>,
    /// Plan; default `free`.
    pub plan: Option<String>,
}

/// A created tenant with its Owner's one-time password (shown once).
#[derive(Debug)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: TenantRow,
    /// Owner email.
    pub owner_email: String,
    /// One-time Owner password; it must be changed at first login.
    pub owner_password: String,
}

/// 403 when `plan` is above what the license in force allows (`free` without a license).
fn check_plan_licensed(state: &AppState, plan: Plan) -> ApiResult<()> {
    let ceiling = state
        .license
        .in_force(unix_now())
        .map(|l| l.plan)
        .unwrap_or(Plan::Free);
    if plan > ceiling {
        return Err(ApiError::new(
            ErrorCode::PlanNotLicensed,
            format!("the license in force allows plans up to `{ceiling}`, not `{plan}`"),
        )
        .field("plan"));
    }
    Ok(())
}

fn parse_plan(s: &str) -> ApiResult<Plan> {
    Plan::parse(s.trim()).map_err(|e| ApiError::invalid("plan", e.0))
}

/// Create a tenant with one Owner. Region rules: a region served by another deployment → 421
/// (create it there); a region this deployment does not know → 422 `unknown_region`; outside the
/// license's regions → 403 `region_not_licensed`; a deployment configured with several regions
/// needs the `regions` feature (403 `feature_not_licensed`).
pub async fn create(
    state: &Arc<AppState>,
    ctx: &Caller,
    input: NewTenant,
) -> ApiResult<CreatedTenant> {
    let name = TenantName::parse(&input.name).map_err(|e| ApiError::invalid("name", e.0))?;
    let email = crate::domain::Email::parse(&input.owner_email)
        .map_err(|e| ApiError::invalid("owner_email", e.0))?;
    let here = state.settings.region();
    let region = match input.region.as_deref().map(str::trim) {
        None | Some("") => here.clone(),
        Some(r) => Region::parse(r).map_err(|e| ApiError::invalid("region", e.0))?,
    };
    if region != here {
        return Err(match super::region::endpoint_of(&state.settings, &region) {
            Some(url) => super::region::misdirected(&region, url),
            None => ApiError::new(
                ErrorCode::UnknownRegion,
                format!("region `{region}` is not configured"),
            )
            .field("region"),
        });
    }
    let plan = match input.plan.as_deref() {
        None => Plan::Free,
        Some(s) => parse_plan(s)?,
    };
    let now = unix_now();
    let lic = state.license.in_force(now);
    let multi_region = state.settings.regions.keys().any(|r| r != here.as_str());
    if multi_region
        && !lic
            .as_ref()
            .is_some_and(|l| l.features.iter().any(|f| f == FEATURE_REGIONS))
    {
        return Err(super::license::feature_not_licensed(FEATURE_REGIONS));
    }
    if let Some(l) = &lic {
        if !l.regions.is_empty() && !l.regions.iter().any(|r| r == region.as_str()) {
            return Err(ApiError::new(
                ErrorCode::RegionNotLicensed,
                format!("the license does not allow tenants in region `{region}`"),
            )
            .field("region"));
        }
    }
    check_plan_licensed(state, plan)?;

    let pw = zeroize::Zeroizing::new(password::random_password());
    let hash = state.passwords.hash(pw.clone()).await?;
    let actor = ctx.actor();
    let st = state.clone();
    let (name_s, email_s) = (name.as_str().to_string(), email.as_str().to_string());
    let a2 = actor.clone();
    let tid = tokio::task::spawn_blocking(move || {
        tenants::create_tenant(&st, &name_s, &email_s, &hash, true, Some(&a2))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        BootstrapError::Invalid(m) if m.contains("already exists") => {
            ApiError::new(ErrorCode::TenantExists, "a tenant with this name exists").field("name")
        }
        BootstrapError::Store(crate::store::StoreError::Conflict(
            crate::store::Conflict::Constraint(_) | crate::store::Conflict::StoreExists,
        )) => {
            ApiError::new(ErrorCode::TenantExists, "a tenant with this name exists").field("name")
        }
        BootstrapError::Invalid(m) => ApiError::invalid("name", m),
        BootstrapError::Store(s) => s.into(),
        other => ApiError::internal(other),
    })?;
    if plan != Plan::Free {
        set_plan(state, ctx, tid.as_str(), plan.as_str()).await?;
    }
    let tenant = get(state, tid.as_str()).await?;
    Ok(CreatedTenant {
        tenant,
        owner_email: email.as_str().to_string(),
        owner_password: pw.to_string(),
    })
}

/// Why the appliance is not ready: the catalog did not answer (the cause, for the log only).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct NotReady(#[from] crate::store::StoreError);

/// A tenant store the server refused since it started: a schema version above this binary's,
/// or a migration that failed and was rolled back (the store is unchanged at its old version).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RefusedStore {
    /// Tenant id.
    pub tenant_id: String,
    /// What happened, naming the store file (relative to the data dir) and both schema versions.
    pub error: String,
}

/// Readiness: the catalog opens and answers a query. `Ok` carries the tenant stores refused since
/// the start (empty when every store opened so far is usable): the server stays ready for the
/// other tenants (`/readyz` answers 200 with `status: "degraded"` and names them).
pub async fn ready(state: &AppState) -> Result<Vec<RefusedStore>, NotReady> {
    state.catalog.run(|c| catalog::ready_check(c)).await?;
    Ok(state
        .tenants
        .refused()
        .into_iter()
        .map(|(tenant_id, error)| RefusedStore { tenant_id, error })
        .collect())
}

/// Storage gauges for `/metrics`: WAL bytes of the catalog (`"catalog"`) and of each open tenant
/// store (by tenant id), and the bytes available on the data dir's file system (0 when
/// `statvfs` fails). File metadata only: no store lock is taken.
pub fn storage_gauges(state: &AppState) -> (Vec<(String, u64)>, u64) {
    let mut wal = vec![(
        "catalog".to_string(),
        crate::store::wal_bytes(state.catalog.path()),
    )];
    for t in state.tenants.open_ids() {
        let bytes = crate::store::wal_bytes(&state.tenants.path_of(&t));
        wal.push((t.as_str().to_string(), bytes));
    }
    let free = rustix::fs::statvfs(&state.settings.data_dir)
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
        .unwrap_or(0);
    (wal, free)
}

/// Open (and so migrate) every tenant store once, at start, so a store that cannot be migrated
/// is found and named by `/readyz` before a request needs it. Stores are opened one at a time
/// and not kept open ([`crate::store::TenantStores::for_pass`]); `progress(done, total)` is
/// called after each (systemd's start timeout is extended from it). Returns how many stores
/// were refused; each refusal is logged where it happens.
pub fn migrate_all_blocking(state: &AppState, mut progress: impl FnMut(usize, usize)) -> usize {
    let tenants = match state.catalog.blocking(|c| catalog::list_tenants(c)) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot list tenants to migrate their stores");
            return 0;
        }
    };
    let total = tenants.len();
    let mut refused = 0;
    for (i, t) in tenants.iter().enumerate() {
        match state.tenants.for_pass(&t.id, |_| Ok(())) {
            Ok(()) | Err(crate::store::StoreError::NotFound) => {}
            Err(crate::store::StoreError::Schema(_)) => refused += 1,
            Err(e) => {
                tracing::warn!(tenant_id = %t.id.as_str(), error = %e, "tenant store did not open at start")
            }
        }
        progress(i + 1, total);
    }
    refused
}

/// All tenants.
pub async fn list(state: &Arc<AppState>) -> ApiResult<Vec<TenantRow>> {
    Ok(state.catalog.run(|c| catalog::list_tenants(c)).await?)
}

/// One tenant by id (names are not accepted here; 404 otherwise).
pub async fn get(state: &Arc<AppState>, id: &str) -> ApiResult<TenantRow> {
    let id = id.to_string();
    state
        .catalog
        .run(move |c| Ok(catalog::find_tenant(c, &id)?.filter(|t| t.id.as_str() == id)))
        .await?
        .ok_or_else(ApiError::not_found)
}

/// Suspend (`suspended = true`) or resume a tenant. Idempotent: a tenant already in that state
/// is returned unchanged with no audit row.
pub async fn set_suspended(
    state: &Arc<AppState>,
    ctx: &Caller,
    id: &str,
    suspended: bool,
) -> ApiResult<TenantRow> {
    let t = get(state, id).await?;
    let (status, action) = if suspended {
        ("suspended", "tenant.suspend")
    } else {
        ("active", "tenant.resume")
    };
    if t.status != status {
        let ev = NewAuditEvent::new(&ctx.actor(), action, Some(format!("tenant:{}", t.id)))
            .details(serde_json::json!({"name": t.name, "from": t.status, "to": status}));
        let tid = t.id.clone();
        state
            .catalog
            .run(move |c| catalog::set_tenant_status(c, &tid, status, &ev))
            .await?;
    }
    get(state, id).await
}

/// Assign a plan up to the license's plan (`free` is always allowed). Same plan → unchanged, no
/// audit row.
pub async fn set_plan(
    state: &Arc<AppState>,
    ctx: &Caller,
    id: &str,
    plan: &str,
) -> ApiResult<TenantRow> {
    let plan = parse_plan(plan)?;
    let t = get(state, id).await?;
    check_plan_licensed(state, plan)?;
    if t.plan != plan.as_str() {
        let ev = NewAuditEvent::new(
            &ctx.actor(),
            "tenant.plan_change",
            Some(format!("tenant:{}", t.id)),
        )
        .details(serde_json::json!({"name": t.name, "from": t.plan, "to": plan.as_str()}));
        let tid = t.id.clone();
        state
            .catalog
            .run(move |c| catalog::set_tenant_plan(c, &tid, plan.as_str(), &ev))
            .await?;
    } else if t.plan_follows_license {
        // Set explicitly (even to the same value): the tenant stops following the license.
        let tid = t.id.clone();
        state
            .catalog
            .run(move |c| catalog::pin_tenant_plan(c, &tid))
            .await?;
    }
    get(state, id).await
}
