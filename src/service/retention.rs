//! Retention (issue 5): for every tenant, purge what is older than the tenant's retention
//! (Free 7 days, Pro 90, Business 365, Enterprise from the license; Free whenever no license is
//! in force):
//!
//! - finished runs (`passed`, `failed`, `cancelled`) whose finish (or queue) time is before the
//!   cutoff, with their steps and screenshot rows, and then their encrypted screenshot files;
//! - the oldest prefix of the tenant audit chain before the cutoff. The last deleted row's hash
//!   becomes the chain's anchor, so `GET /api/v1/audit/verify` still verifies, and the purge
//!   writes one `audit.purge` row (details: cutoff, retention days, plan, purged rows/runs/
//!   screenshots, anchor). Nothing purged → no row.
//!
//! The catalog audit is never purged. Queued and running runs are never purged.

use serde::Serialize;

use super::{screenshots, unix_now, AppState};
use crate::audit::NewAuditEvent;
use crate::domain::{Plan, TenantId};
use crate::store::{audit, catalog, runs};

/// One tenant's purge report (printed by `flowguard jobs run retention`).
#[derive(Debug, Serialize)]
pub struct TenantPurge {
    /// Tenant id.
    pub tenant_id: String,
    /// The tenant's effective plan.
    pub plan: Plan,
    /// Retention applied (days).
    pub retention_days: u32,
    /// Rows older than this (RFC 3339 UTC) were eligible.
    pub cutoff: String,
    /// Audit rows deleted.
    pub purged_rows: u64,
    /// Finished runs deleted (with their steps).
    pub purged_runs: u64,
    /// Screenshots deleted (rows and encrypted files).
    pub purged_screenshots: u64,
    /// Failure, if the purge of this tenant failed (the others still run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Run the retention purge as of `as_of` (unix seconds; the scheduler passes now). Blocking.
pub fn retention_blocking(state: &AppState, as_of: i64) -> Vec<TenantPurge> {
    let tenants = {
        let c = state.catalog.db().lock();
        match catalog::list_tenants(&c) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "retention: cannot list tenants");
                return Vec::new();
            }
        }
    };
    let mut out = Vec::new();
    for t in tenants {
        let now = unix_now();
        let plan = super::license::effective_plan(&state.license, &t, now);
        let ent = state.license.entitlements(plan, now);
        let cutoff = chrono::DateTime::from_timestamp(
            as_of.saturating_sub(i64::from(ent.retention_days) * 86_400),
            0,
        )
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut report = TenantPurge {
            tenant_id: t.id.to_string(),
            plan: ent.plan,
            retention_days: ent.retention_days,
            cutoff: cutoff.clone(),
            purged_rows: 0,
            purged_runs: 0,
            purged_screenshots: 0,
            error: None,
        };
        if let Err(e) = purge_tenant(state, &t.id, &cutoff, &ent, &mut report) {
            tracing::error!(tenant = %t.id, error = %e, "retention: purge failed");
            report.error = Some(e);
        }
        out.push(report);
    }
    out
}

fn purge_tenant(
    state: &AppState,
    tenant: &TenantId,
    cutoff: &str,
    ent: &crate::domain::Entitlements,
    report: &mut TenantPurge,
) -> Result<(), String> {
    let db = state
        .tenants
        .get_blocking(tenant)
        .map_err(|e| e.to_string())?;
    let mut c = db.lock();
    // Runs and audit rows go in one transaction; the screenshot files after the commit (a crash
    // in between leaves only unreachable ciphertext files, never a row pointing at no file).
    let tx = crate::store::write_tx(&mut c).map_err(|e| e.to_string())?;
    let purged = runs::purge_runs_in(&tx, cutoff).map_err(|e| e.to_string())?;
    let mut ev = NewAuditEvent::new(
        &super::job_actor("retention"),
        "audit.purge",
        Some("audit".to_string()),
    )
    .details(serde_json::json!({
        "cutoff": cutoff,
        "retention_days": ent.retention_days,
        "plan": ent.plan,
        "purged_runs": purged.runs,
        "purged_screenshots": purged.screenshots.len(),
    }));
    match audit::purge_in(&tx, cutoff, &ev).map_err(|e| e.to_string())? {
        Some(p) => report.purged_rows = p.rows,
        None if purged.runs > 0 => {
            // Runs went but no audit row was old enough: still record the purge.
            if let Some(o) = ev.details.as_object_mut() {
                o.insert("purged_rows".into(), serde_json::json!(0));
            }
            audit::append(&tx, &ev).map_err(|e| e.to_string())?;
        }
        None => {}
    }
    tx.commit().map_err(|e| e.to_string())?;
    drop(c);
    report.purged_runs = purged.runs;
    report.purged_screenshots = purged.screenshots.len() as u64;
    screenshots::remove_files(state, tenant, &purged.screenshots);
    if report.purged_rows + report.purged_runs > 0 {
        tracing::info!(tenant = %tenant, rows = report.purged_rows, runs = report.purged_runs, "retention: purged");
    }
    Ok(())
}

/// The scheduler's entry: purge as of now; returns the number of audit rows and runs purged.
pub fn retention_job_blocking(state: &AppState) -> usize {
    retention_blocking(state, unix_now())
        .iter()
        .map(|r| (r.purged_rows + r.purged_runs) as usize)
        .sum()
}
