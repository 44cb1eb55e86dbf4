//! Who is calling: the authenticated principal and the client's address.

use serde::Serialize;
use utoipa::ToSchema;

use zeroize::Zeroizing;

use crate::audit::Actor;
use crate::crypto::token::{self, TokenKind};
use crate::domain::{Role, TenantId};
use crate::error::{ApiError, ApiResult};

/// Token id and audit actor of the embedded runner (`serve`'s own workers).
pub const EMBEDDED_RUNNER: &str = "runner:embedded";

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
        /// Still on a one-time password: only `/me`, `/me/password` and logout are allowed.
        must_change_password: bool,
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
        /// Still on a one-time password: only `/me`, `/me/password` and logout are allowed.
        must_change_password: bool,
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

    /// Whether the caller still has to replace a one-time password (members and PlatformAdmins
    /// created with a generated or admin-chosen password; token principals never).
    pub fn must_change_password(&self) -> bool {
        match self {
            Principal::User {
                must_change_password,
                ..
            }
            | Principal::Platform {
                must_change_password,
                ..
            } => *must_change_password,
            _ => false,
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
            Principal::Agent { token_id, .. } if token_id == EMBEDDED_RUNNER => {
                EMBEDDED_RUNNER.to_string()
            }
            Principal::Agent { name, .. } => format!("agent-token:{name}"),
            Principal::Scim { name, .. } => format!("scim-token:{name}"),
        }
    }

    /// The embedded runner of `serve` acting on one application of `tenant`: an agent
    /// principal whose token id is [`EMBEDDED_RUNNER`] (no stored token has that id, so no
    /// request can authenticate as it); audited as `runner:embedded`.
    pub fn embedded_runner(tenant: TenantId, application_id: String) -> Self {
        Principal::Agent {
            tenant,
            token_id: EMBEDDED_RUNNER.into(),
            name: "embedded".into(),
            application_id,
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
    /// The tenant's display name (absent for PlatformAdmin).
    pub tenant_name: Option<String>,
    /// User / admin / token id.
    pub id: String,
    /// Email or token name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Whether the one-time password must still be changed.
    pub must_change_password: bool,
}

/// A token a request presented, parsed once (by the residency middleware) into its kind and the
/// tenant its prefix names (`fga_<tenant>_…`, `fgs_<tenant>_…`, `fgu_<tenant>_…`; `fgp_catalog_…`
/// names none). A value that does not have a token's shape keeps `kind: None` and authenticates
/// nobody.
#[derive(Clone)]
pub struct PresentedToken {
    /// The token as sent (a secret: never logged).
    pub raw: Zeroizing<String>,
    /// Its kind, when it has a token's shape.
    pub kind: Option<TokenKind>,
    /// The scope after the prefix (`<tenant>` or `catalog`), when it has a token's shape.
    pub scope: Option<String>,
    /// The tenant it names, for tenant token kinds with a valid tenant id.
    pub tenant: Option<TenantId>,
}

impl PresentedToken {
    /// Parse `raw` (see [`token::parse_token`]).
    pub fn parse(raw: &str) -> Self {
        let parsed = token::parse_token(raw);
        let tenant = match parsed {
            // Normalised like every tenant reference (issue 24): an upper-cased scope still
            // names its tenant's region, so residency decides on it before authentication.
            Some((TokenKind::Agent | TokenKind::Scim | TokenKind::UserSession, scope)) => {
                super::region::tenant_id_of(scope)
            }
            _ => None,
        };
        Self {
            raw: Zeroizing::new(raw.to_string()),
            kind: parsed.map(|(k, _)| k),
            scope: parsed.map(|(_, s)| s.to_string()),
            tenant,
        }
    }
}

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedToken")
            .field("kind", &self.kind)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// What `Authorization` carried.
#[derive(Debug, Clone)]
pub enum Authorization {
    /// `Bearer <token>`.
    Bearer(PresentedToken),
    /// Any other scheme or an undecodable value (authenticates nobody: 401).
    Invalid,
}

/// The credentials of one request, parsed once by the residency middleware (which decides the
/// region from their tenants) and handed to the authentication extractor through the request's
/// extensions. A bearer token wins over the session cookie.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The `Authorization` header, if any.
    pub authorization: Option<Authorization>,
    /// The session cookie (`fg_session`), if any.
    pub session: Option<PresentedToken>,
}

impl Credentials {
    /// Every tenant the credentials name (bearer first, then the session cookie).
    pub fn tenants(&self) -> impl Iterator<Item = &TenantId> {
        let bearer = match &self.authorization {
            Some(Authorization::Bearer(t)) => t.tenant.as_ref(),
            _ => None,
        };
        bearer
            .into_iter()
            .chain(self.session.as_ref().and_then(|t| t.tenant.as_ref()))
    }
}

/// An authenticated caller of a route open to more than one kind of principal (a tenant member
/// or a PlatformAdmin), with the client's address.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// From where.
    pub client: ClientInfo,
}

impl Caller {
    /// Audit actor.
    pub fn actor(&self) -> Actor {
        self.principal.actor(&self.client)
    }
}

/// An authenticated caller of a tenant route: the tenant, resolved once from the credential by
/// the route's guard (a PlatformAdmin never holds a tenant permission), the principal and the
/// client's address.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    /// The caller's tenant.
    pub tenant: TenantId,
    /// Who (never `Principal::Platform`).
    pub principal: Principal,
    /// From where.
    pub client: ClientInfo,
}

impl TenantCtx {
    /// The context of a tenant principal; a PlatformAdmin (no tenant) gets 403 `forbidden`.
    pub fn of(principal: Principal, client: ClientInfo) -> ApiResult<Self> {
        let tenant = principal
            .tenant()
            .cloned()
            .ok_or_else(ApiError::forbidden)?;
        Ok(Self {
            tenant,
            principal,
            client,
        })
    }
    /// Audit actor.
    pub fn actor(&self) -> Actor {
        self.principal.actor(&self.client)
    }
    /// Name recorded as the audit actor.
    pub fn actor_name(&self) -> String {
        self.principal.actor_name()
    }
    /// The caller's role.
    pub fn role(&self) -> Role {
        self.principal.role()
    }
}
