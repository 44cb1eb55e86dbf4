//! Audit trail rows and their hash chain (DESIGN.md "Audit").
//!
//! `hash = SHA-256(prev_hash ‖ canonical row)`, hex-encoded; the first row's `prev_hash` is 64
//! zeros. The canonical row is the compact JSON array
//! `[id, ts, actor_email, actor_role, client_ip, user_agent, action, target, details]` where
//! `details` is the JSON object with keys sorted (serde_json's default map). Editing, removing or
//! reordering a row breaks every later hash.

pub mod export;

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// `prev_hash` of the first row of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who did it and from where; filled by the HTTP layer, passed through services.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// Email of the acting identity (or the attempted username on login failures).
    pub email: Option<String>,
    /// Role name (`owner`, …); `None` for anonymous.
    pub role: Option<String>,
    /// Client IP (peer, or `X-Forwarded-For` from a trusted proxy).
    pub client_ip: Option<String>,
    /// `User-Agent` header, truncated to 512 chars.
    pub user_agent: Option<String>,
}

/// One audit row to append. Never put a secret in `details`.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    /// Who.
    pub actor: Actor,
    /// `resource.verb` style action, e.g. `member.role_change`.
    pub action: &'static str,
    /// Target object (`application:<id>`, `member:<email>` …).
    pub target: Option<String>,
    /// Structured details (JSON object).
    pub details: serde_json::Value,
}

impl NewAuditEvent {
    /// Build an event.
    pub fn new(actor: &Actor, action: &'static str, target: impl Into<Option<String>>) -> Self {
        Self {
            actor: actor.clone(),
            action,
            target: target.into(),
            details: serde_json::Value::Object(Default::default()),
        }
    }
    /// Attach details.
    pub fn details(mut self, d: serde_json::Value) -> Self {
        self.details = d;
        self
    }
}

/// A stored audit row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRecord {
    /// Monotonic sequence number (cursor for paging).
    pub seq: i64,
    /// Row id (UUID).
    pub id: String,
    /// UTC timestamp, RFC 3339 with milliseconds and `Z`.
    pub ts: String,
    /// Actor email.
    pub actor_email: Option<String>,
    /// Actor role.
    pub actor_role: Option<String>,
    /// Client IP.
    pub client_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Action name.
    pub action: String,
    /// Target.
    pub target: Option<String>,
    /// Details object.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// Compute a row's chain hash.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    prev_hash: &str,
    id: &str,
    ts: &str,
    actor_email: Option<&str>,
    actor_role: Option<&str>,
    client_ip: Option<&str>,
    user_agent: Option<&str>,
    action: &str,
    target: Option<&str>,
    details: &serde_json::Value,
) -> String {
    let canonical = serde_json::json!([
        id,
        ts,
        actor_email,
        actor_role,
        client_ip,
        user_agent,
        action,
        target,
        details
    ]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Recompute the hash of a stored row.
pub fn record_hash(r: &AuditRecord) -> String {
    chain_hash(
        &r.prev_hash,
        &r.id,
        &r.ts,
        r.actor_email.as_deref(),
        r.actor_role.as_deref(),
        r.client_ip.as_deref(),
        r.user_agent.as_deref(),
        &r.action,
        r.target.as_deref(),
        &r.details,
    )
}

/// The first row where a chain walk failed.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct BadRow {
    /// Sequence number of the row.
    pub seq: i64,
    /// Row id.
    pub id: String,
    /// Why: edited content, or a broken link (row removed or reordered).
    pub reason: String,
}

/// State of a chain walk (rows in ascending `seq`).
#[derive(Debug, Clone, Default)]
pub struct ChainState {
    /// Rows checked.
    pub rows: u64,
    /// Hash of the last row seen.
    pub last_hash: Option<String>,
    /// The first bad row, if any (later rows are still counted).
    pub first_bad: Option<BadRow>,
}

/// Check one row of a chain walk: its `prev_hash` must equal the previous row's hash (the
/// genesis hash for the first row) and its `hash` must match its content.
pub fn verify_chain(st: &mut ChainState, r: &AuditRecord) {
    st.rows += 1;
    if st.first_bad.is_none() {
        let expected_prev = st.last_hash.as_deref().unwrap_or(GENESIS_HASH);
        let reason = if r.prev_hash != expected_prev {
            Some("prev_hash does not match the previous row's hash: a row before it was removed, inserted or reordered")
        } else if record_hash(r) != r.hash {
            Some("hash does not match the row's content: the row was edited")
        } else {
            None
        };
        if let Some(reason) = reason {
            st.first_bad = Some(BadRow {
                seq: r.seq,
                id: r.id.clone(),
                reason: reason.into(),
            });
        }
    }
    st.last_hash = Some(r.hash.clone());
}
