//! Host operations behind the CLI (an operator on the appliance's host, audited as `host-cli`):
//! tenant lookups, lockout resets, key status across tenants and catalog audit rows for
//! offline actions. The CLI reaches the stores only through these functions.

use chrono::{DateTime, Utc};

use super::keys::{self, KeyStatus};
use crate::audit::{Actor, NewAuditEvent};
use crate::config::Settings;
use crate::store::catalog::{self, TenantRow};
use crate::store::{Catalog, StoreResult};

/// The actor of host CLI actions: `host-cli`, role `operator`.
pub fn host_actor() -> Actor {
    Actor {
        email: Some("host-cli".into()),
        role: Some("operator".into()),
        client_ip: None,
        user_agent: None,
    }
}

/// Whether `settings.data_dir` already holds a catalog (an initialised data dir).
pub fn is_initialised(settings: &Settings) -> bool {
    Catalog::path_in(&settings.data_dir).exists()
}

/// Append `ev` to the catalog audit chain on its own (for actions taken offline, e.g.
/// `license issue --record`).
pub fn record_catalog_event(cat: &Catalog, ev: &NewAuditEvent) -> StoreResult<()> {
    cat.blocking(|c| catalog::append_audit(c, ev))
}

/// The tenant named by id or (case-insensitive) name, if any.
pub fn find_tenant(cat: &Catalog, id_or_name: &str) -> StoreResult<Option<TenantRow>> {
    cat.blocking(|c| catalog::find_tenant(c, id_or_name))
}

/// Every tenant, oldest first.
pub fn list_tenants(cat: &Catalog) -> StoreResult<Vec<TenantRow>> {
    cat.blocking(|c| catalog::list_tenants(c))
}

/// Clear the login lockout counters of `account` (optionally of one tenant), audited as
/// `login.unlock`. Returns how many counters were cleared.
pub fn unlock_account(cat: &Catalog, account: &str, tenant: Option<&str>) -> StoreResult<usize> {
    let ev = NewAuditEvent::new(
        &host_actor(),
        "login.unlock",
        Some(format!("account:{account}")),
    )
    .details(serde_json::json!({"tenant": tenant}));
    cat.blocking(|c| catalog::unlock_account(c, account, tenant, &ev))
}

/// Key status of `tenants` (as `flowguard keys status` shows it) at `now`.
pub fn key_status(
    cat: &Catalog,
    tenants: &[TenantRow],
    rotation_days: u32,
    now: DateTime<Utc>,
) -> StoreResult<Vec<KeyStatus>> {
    cat.blocking(|c| {
        let mut out = Vec::with_capacity(tenants.len());
        for t in tenants {
            let rows = catalog::tenant_keys(c, &t.id)?;
            out.push(keys::build_status(&t.id, &rows, rotation_days, now));
        }
        Ok(out)
    })
}
