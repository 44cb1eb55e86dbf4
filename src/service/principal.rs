//! Who is calling: the authenticated principal and the client's address.

use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::domain::{Role, TenantId};
use crate::error::{ApiError, ApiResult};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A tenant member with a session cookie.
    User {
        /// Tenant.
        tenant: TenantId,
        /// User id.
        user_id: String,
        /// Email.
        email: String,
        /// Member role.
        role: Role,
        /// SHA-256 of the session id.
        session_hash: String,
        /// SHA-256 of the CSRF token.
        csrf_hash: String,
    },
    /// A PlatformAdmin with a catalog session cookie.
    Platform {
        /// Admin id.
        admin_id: String,
        /// Email.
        email: String,
        /// SHA-256 of the session id.
        session_hash: String,
        /// SHA-256 of the CSRF token.
        csrf_hash: String,
    },
    /// An agent token scoped to one application.
    Agent {
        /// Tenant.
        tenant: TenantId,
        /// Token id.
        token_id: String,
        /// Token name.
        name: String,
        /// The one application it may act on.
        application_id: String,
    },
    /// A SCIM token.
    Scim {
        /// Tenant.
        tenant: TenantId,
        /// Token id.
        token_id: String,
        /// Token name.
        name: String,
    },
}

impl Principal {
    /// The role used for permission checks.
    pub fn role(&self) -> Role {
        match self {
            Principal::User { role, .. } => *role,
            Principal::Platform { .. } => Role::PlatformAdmin,
            Principal::Agent { .. } => Role::Agent,
            Principal::Scim { .. } => Role::Scim,
        }
    }

    /// The tenant, for tenant principals.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Principal::User { tenant, .. }
            | Principal::Agent { tenant, .. }
            | Principal::Scim { tenant, .. } => Some(tenant),
            Principal::Platform { .. } => None,
        }
    }

    /// Whether the caller authenticated with a cookie (and so needs a CSRF token on unsafe methods).
    pub fn csrf_hash(&self) -> Option<&str> {
        match self {
            Principal::User { csrf_hash, .. } | Principal::Platform { csrf_hash, .. } => {
                Some(csrf_hash)
            }
            _ => None,
        }
    }

    /// Name recorded as the audit actor (`email`, or `agent-token:<name>`).
    pub fn actor_name(&self) -> String {
        match self {
            Principal::User { email, .. } | Principal::Platform { email, .. } => email.clone(),
            Principal::Agent { name, .. } => format!("agent-token:{name}"),
            Principal::Scim { name, .. } => format!("scim-token:{name}"),
        }
    }

    /// Audit actor for this principal from `client`.
    pub fn actor(&self, client: &ClientInfo) -> Actor {
        Actor {
            email: Some(self.actor_name()),
            role: Some(self.role().as_str().to_string()),
            client_ip: Some(client.ip.clone()),
            user_agent: client.user_agent.clone(),
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Client IP: the peer address, or the right-most untrusted `X-Forwarded-For` hop when the
    /// peer is a configured trusted proxy.
    pub ip: String,
    /// `User-Agent`, cut to 512 chars.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// An anonymous audit actor (e.g. a failed login naming `attempted`).
    pub fn anonymous_actor(&self, attempted: Option<String>) -> Actor {
        Actor {
            email: attempted,
            role: None,
            client_ip: Some(self.ip.clone()),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// The caller as shown by `GET /api/v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// `user`, `platform_admin`, `agent` or `scim`.
    pub kind: &'static str,
    /// Tenant id (absent for PlatformAdmin).
    pub tenant_id: Option<String>,
    /// User / admin / token id.
    pub id: String,
    /// Email or token name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Whether the one-time password must still be changed.
    pub must_change_password: bool,
}

/// The tenant of a tenant principal; a PlatformAdmin (no tenant) gets 403 `forbidden`.
pub fn tenant_of(p: &Principal) -> ApiResult<TenantId> {
    p.tenant().cloned().ok_or_else(ApiError::forbidden)
}
