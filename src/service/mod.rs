//! Use cases: permission-independent rules, audit writes and cross-store orchestration.
//! Handlers call these after the `Require<P>` extractor has checked the route's permission.

pub mod ai_endpoint;
pub mod applications;
pub mod audit_export;
pub mod audit_log;
pub mod auth;
pub mod backup;
pub mod doctor;
pub mod flows;
pub mod host;
pub mod keys;
pub mod ldap;
pub mod license;
pub mod live;
pub mod members;
pub mod oidc;
pub mod platform;
pub mod principal;
pub mod region;
pub mod retention;
pub mod runner;
pub mod runs;
pub mod scim;
pub mod screenshots;
pub mod sealing;
pub mod tenants;
pub mod tickets;
pub mod tokens;
pub mod variables;

use std::sync::Arc;

pub use principal::{Caller, ClientInfo, Credentials, Principal, TenantCtx};

use crate::auth::Passwords;
use crate::config::Settings;
use crate::crypto::MasterKey;
use crate::store::{Catalog, TenantStores};

/// Everything the request handlers and jobs share. Built once by `startup`; no global state.
pub struct AppState {
    /// Loaded settings.
    pub settings: Arc<Settings>,
    /// Master key (KEK).
    pub master: Arc<MasterKey>,
    /// Catalog store.
    pub catalog: Catalog,
    /// Tenant stores (LRU).
    pub tenants: Arc<TenantStores>,
    /// Password hashing service.
    pub passwords: Passwords,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Concurrent image decodes (screenshot uploads), bounding memory (cases R03).
    pub image_slots: Arc<tokio::sync::Semaphore>,
    /// Low-priority threads (one per image slot) that decode, mask and encode screenshots
    /// (issue 25, P8: ~25 % of the server's CPU under a fleet's ingest, which then no longer
    /// competes on equal terms with the requests of people browsing; `crate::workers`).
    pub image_workers: crate::workers::LowPriority,
    /// Key lifecycle: clock and running rotations (issue 4).
    pub keys: keys::KeyRuntime,
    /// The installed license and the revocation list.
    pub license: license::LicenseState,
    /// The deployment's audit-signing key (export trailers).
    pub audit_signer: Arc<crate::crypto::audit_signing::AuditSigner>,
    /// Where the appliance may connect (`egress.allow` + the default AI endpoint).
    pub egress: Arc<crate::net::egress::EgressPolicy>,
    /// Per-tenant token bucket on AI-cost calls.
    pub ai_limiter: Arc<ai_endpoint::AiLimiter>,
    /// OpenID Connect: cached provider discovery documents and JWKS per tenant.
    pub oidc: Arc<oidc::OidcCache>,
    /// The embedded runner's status and the external agents seen recently (issue 22).
    pub runner: Arc<runner::RunnerState>,
    /// Woken whenever a run is queued (the embedded runner's workers wait on it).
    pub run_queued: Arc<tokio::sync::Notify>,
    /// Open live-event streams per caller (bounded).
    pub live: live::Streams,
    /// Which tenants have ticket deliveries waiting (the `ticket-outbox` job's worklist).
    pub ticket_due: tickets::DueHints,
}

/// The actor recorded in audit rows written by background job `job` (`job:<name>`, role
/// `system`).
pub fn job_actor(job: &str) -> crate::audit::Actor {
    crate::audit::Actor {
        email: Some(format!("job:{job}")),
        role: Some("system".into()),
        client_ip: None,
        user_agent: None,
    }
}

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}
