//! Plans and what a plan entitles a tenant to (DESIGN.md "Licenses and plans").
//!
//! Plans are ordered `free < pro < business < enterprise`. A tenant's effective entitlements come
//! from the deployment's license (when one is in force) capped by the tenant's assigned plan; a
//! tenant on `free`, or any tenant while no license is in force (none installed, expired,
//! revoked), gets [`Entitlements::free`]: 1 application, no user limit, 7-day retention, no
//! licensed features.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Invalid;

/// Feature name gating the audit export (`GET /api/v1/audit/export`).
pub const FEATURE_AUDIT_EXPORT: &str = "audit.export";
/// Feature name gating multi-region operation (tenant creation through the platform API in a
/// deployment whose `[regions]` lists more than one region).
pub const FEATURE_REGIONS: &str = "regions";
/// Every feature this build knows; `flowguard license issue` accepts only these.
pub const KNOWN_FEATURES: &[&str] = &[FEATURE_AUDIT_EXPORT, FEATURE_REGIONS];

/// A plan, ordered by what it includes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// No license needed: 1 application, 7-day retention, no features.
    Free,
    /// 90-day retention.
    Pro,
    /// 365-day retention.
    Business,
    /// Retention from the license.
    Enterprise,
}

impl Plan {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Business => "business",
            Plan::Enterprise => "enterprise",
        }
    }

    /// Parse `free|pro|business|enterprise`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Ok(match s {
            "free" => Plan::Free,
            "pro" => Plan::Pro,
            "business" => Plan::Business,
            "enterprise" => Plan::Enterprise,
            _ => {
                return Err(Invalid(
                    "plan must be one of free, pro, business, enterprise".into(),
                ))
            }
        })
    }

    /// Audit/run retention of the plan in days; `None` for Enterprise (taken from the license).
    pub fn default_retention_days(self) -> Option<u32> {
        match self {
            Plan::Free => Some(7),
            Plan::Pro => Some(90),
            Plan::Business => Some(365),
            Plan::Enterprise => None,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tenant may use right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Entitlements {
    /// Effective plan (the tenant's plan capped by the license's; `free` without a license).
    pub plan: Plan,
    /// Licensed features, e.g. `audit.export`.
    pub features: BTreeSet<String>,
    /// Most applications per tenant; `null` = unlimited.
    pub max_applications: Option<u32>,
    /// Most active users per tenant; `null` = unlimited.
    pub max_users: Option<u32>,
    /// Days runs, steps, screenshots and tenant audit rows are kept.
    pub retention_days: u32,
}

impl Entitlements {
    /// The Free plan: 1 application, no user limit, 7-day retention, no features.
    pub fn free() -> Self {
        Self {
            plan: Plan::Free,
            features: BTreeSet::new(),
            max_applications: Some(1),
            max_users: None,
            retention_days: 7,
        }
    }

    /// Whether `feature` is included.
    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_ordered_and_roundtrip() {
        assert!(Plan::Free < Plan::Pro && Plan::Pro < Plan::Business);
        assert!(Plan::Business < Plan::Enterprise);
        for p in [Plan::Free, Plan::Pro, Plan::Business, Plan::Enterprise] {
            assert_eq!(Plan::parse(p.as_str()).unwrap(), p);
        }
        assert!(Plan::parse("gold").is_err());
        assert_eq!(Entitlements::free().max_applications, Some(1));
        assert!(!Entitlements::free().has(FEATURE_AUDIT_EXPORT));
    }
}
