//! Background jobs on tokio-cron-scheduler, registered by name (after kanidm's named tasks and
//! vaultwarden's cron strings in config). Each job also has a `run_once` entry used by the
//! `flowguard jobs run-once NAME` command and by the tests.
//!
//! - `retention` (config `jobs.retention_cron`, default daily at 03:15 UTC): for every tenant,
//!   purge the tenant audit rows older than the tenant's retention (Free 7 days, Pro 90,
//!   Business 365, Enterprise from the license; Free whenever no license is in force). Only the
//!   oldest prefix of the chain is deleted; the last deleted row's hash becomes the chain's
//!   anchor, so `GET /api/v1/audit/verify` still verifies, and the purge writes an
//!   `audit.purge` row. The catalog audit is never purged. (Runs, steps and screenshots join
//!   this job when those stores exist.)

use std::sync::Arc;

use serde::Serialize;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::audit::{Actor, NewAuditEvent};
use crate::domain::{Plan, TenantId};
use crate::service::{unix_now, AppState};
use crate::store::{audit, catalog};

/// Name of the retention job.
pub const RETENTION: &str = "retention";
/// Every job name.
pub const JOBS: &[&str] = &[RETENTION];

/// One tenant's purge.
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
    /// Rows deleted.
    pub purged_rows: u64,
    /// Failure, if the purge of this tenant failed (the others still run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The actor recorded for job actions.
fn job_actor(name: &str) -> Actor {
    Actor {
        email: Some(format!("job:{name}")),
        role: Some("system".into()),
        client_ip: None,
        user_agent: None,
    }
}

/// Run the retention purge as of `as_of` (unix seconds; the scheduler passes now).
pub async fn retention(state: &Arc<AppState>, as_of: i64) -> anyhow::Result<Vec<TenantPurge>> {
    let tenants = state.catalog.run(|c| catalog::list_tenants(c)).await?;
    let mut out = Vec::new();
    for t in tenants {
        let plan = Plan::parse(&t.plan).unwrap_or(Plan::Free);
        let ent = state.license.entitlements(plan, unix_now());
        let cutoff_secs = as_of - i64::from(ent.retention_days) * 86_400;
        let cutoff = chrono::DateTime::from_timestamp(cutoff_secs, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .ok_or_else(|| anyhow::anyhow!("cutoff out of range"))?;
        let ev = NewAuditEvent::new(
            &job_actor(RETENTION),
            "audit.purge",
            Some("audit".to_string()),
        )
        .details(serde_json::json!({
            "cutoff": cutoff,
            "retention_days": ent.retention_days,
            "plan": ent.plan,
        }));
        let mut report = TenantPurge {
            tenant_id: t.id.clone(),
            plan: ent.plan,
            retention_days: ent.retention_days,
            cutoff: cutoff.clone(),
            purged_rows: 0,
            error: None,
        };
        let res = match TenantId::parse(&t.id) {
            Ok(tid) => state
                .tenants
                .run(&tid, move |c| audit::purge_before(c, &cutoff, &ev))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(Some(p)) => {
                report.purged_rows = p.rows;
                tracing::info!(tenant = %t.id, rows = p.rows, anchor_seq = p.anchor_seq, "retention: purged audit rows");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(tenant = %t.id, error = %e, "retention: purge failed");
                report.error = Some(e);
            }
        }
        out.push(report);
    }
    Ok(out)
}

/// Run one job by name now (`as_of`: unix seconds, default now). Returns its report as JSON.
pub async fn run_once(
    state: &Arc<AppState>,
    name: &str,
    as_of: Option<i64>,
) -> anyhow::Result<serde_json::Value> {
    match name {
        RETENTION => Ok(serde_json::to_value(
            retention(state, as_of.unwrap_or_else(unix_now)).await?,
        )?),
        other => anyhow::bail!("unknown job `{other}` (known: {})", JOBS.join(", ")),
    }
}

/// Start the scheduler with every job on its configured schedule.
pub async fn start(state: Arc<AppState>) -> anyhow::Result<JobScheduler> {
    let sched = JobScheduler::new().await?;
    let cron = state.settings.jobs.retention_cron.clone();
    let st = state.clone();
    let job = Job::new_async(cron.as_str(), move |_id, _l| {
        let st = st.clone();
        Box::pin(async move {
            match retention(&st, unix_now()).await {
                Ok(r) => tracing::info!(tenants = r.len(), "retention job finished"),
                Err(e) => tracing::error!(error = %e, "retention job failed"),
            }
        })
    })
    .map_err(|e| anyhow::anyhow!("jobs.retention_cron `{cron}`: {e}"))?;
    sched.add(job).await?;
    sched.start().await?;
    tracing::info!(retention_cron = %cron, "job scheduler started");
    Ok(sched)
}
