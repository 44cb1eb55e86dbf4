//! The seven roles of DESIGN.md ("Identities and roles") and the one table that maps a role to
//! its permissions. Every route declares one [`Permission`] (see `http::extract::Require`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Invalid;

/// Who a principal is. Tenant users hold one of `Owner`, `Admin`, `Tester`, `Viewer`; `Agent` and
/// `Scim` are service tokens; `PlatformAdmin` is a catalog identity that never reads tenant data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the tenant.
    Owner,
    /// Applications, flows, integrations, members; no license, no audit.
    Admin,
    /// Create/edit/run flows, review results.
    Tester,
    /// Read-only.
    Viewer,
    /// Service token scoped to one application.
    Agent,
    /// SCIM provisioning token.
    Scim,
    /// Deployment operator (catalog only).
    PlatformAdmin,
}

impl Role {
    /// Roles a tenant member may hold.
    pub const MEMBER_ROLES: [Role; 4] = [Role::Owner, Role::Admin, Role::Tester, Role::Viewer];

    /// Stable lowercase name (`owner`, …, `platform_admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Tester => "tester",
            Role::Viewer => "viewer",
            Role::Agent => "agent",
            Role::Scim => "scim",
            Role::PlatformAdmin => "platform_admin",
        }
    }

    /// Parse a role name in any case (`viewer`, `Viewer`, `VIEWER`; `platform_admin`,
    /// `PlatformAdmin`, `platform-admin`), surrounding spaces ignored: the members API, SCIM,
    /// the LDAP group mapping and the CLI all accept what a person would type.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let norm: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        Ok(match norm.as_str() {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            "tester" => Role::Tester,
            "viewer" => Role::Viewer,
            "agent" => Role::Agent,
            "scim" => Role::Scim,
            "platformadmin" => Role::PlatformAdmin,
            _ => {
                return Err(Invalid(format!(
                    "unknown role `{}`",
                    super::truncate(s, 32)
                )))
            }
        })
    }

    /// Parse a role a member may hold (`owner|admin|tester|viewer`).
    pub fn parse_member(s: &str) -> Result<Self, Invalid> {
        match Role::parse(s) {
            Ok(r) if Role::MEMBER_ROLES.contains(&r) => Ok(r),
            _ => Err(Invalid(
                "role must be one of owner, admin, tester, viewer".into(),
            )),
        }
    }

    /// Rank for precedence (Owner > Admin > Tester > Viewer); service roles rank 0.
    pub fn rank(self) -> u8 {
        match self {
            Role::Owner => 4,
            Role::Admin => 3,
            Role::Tester => 2,
            Role::Viewer => 1,
            _ => 0,
        }
    }

    /// Whether this role holds `p` — the single role → permission table.
    pub fn allows(self, p: Permission) -> bool {
        use Permission as P;
        use Role::*;
        match p {
            P::SelfRead => matches!(self, Owner | Admin | Tester | Viewer | PlatformAdmin),
            P::SelfPassword => matches!(self, Owner | Admin | Tester | Viewer | PlatformAdmin),
            P::ApplicationRead => matches!(self, Owner | Admin | Tester | Viewer),
            P::ApplicationWrite => matches!(self, Owner | Admin),
            P::MemberRead => matches!(self, Owner | Admin),
            P::MemberWrite => matches!(self, Owner | Admin),
            P::AgentTokenManage => matches!(self, Owner | Admin),
            P::ScimTokenManage => matches!(self, Owner),
            P::AuditRead => matches!(self, Owner),
            P::AgentSelf => matches!(self, Agent),
            P::FlowRead => matches!(self, Owner | Admin | Tester | Viewer),
            P::FlowWrite => matches!(self, Owner | Admin | Tester),
            P::RunRead => matches!(self, Owner | Admin | Tester | Viewer),
            P::RunTrigger => matches!(self, Owner | Admin | Tester),
            P::VariableRead => matches!(self, Owner | Admin | Tester),
            P::VariableWrite => matches!(self, Owner | Admin | Tester),
            P::WebhookManage => matches!(self, Owner | Admin),
            P::AgentRun => matches!(self, Agent),
            P::PlatformRead => matches!(self, PlatformAdmin),
            P::ScimUsers => matches!(self, Scim),
            P::ScimDiscovery => matches!(self, Scim),
            P::SsoManage => matches!(self, Owner),
            P::KeyRead => matches!(self, Owner),
            P::KeyRotate => matches!(self, Owner),
            P::PlatformWrite => matches!(self, PlatformAdmin),
            P::LicenseRead => matches!(self, Owner),
            P::NotificationRead => matches!(self, Owner | Admin | Tester | Viewer | PlatformAdmin),
            P::AuditKeyRead => matches!(self, Owner | PlatformAdmin),
            P::AiEndpointManage => matches!(self, Owner),
            P::IntegrationManage => matches!(self, Owner | Admin),
            P::TicketFile => matches!(self, Owner | Admin | Tester),
        }
    }
}

/// A permission a route requires. Adding a variant forces a decision in [`Role::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read one's own identity (`GET /api/v1/me`).
    SelfRead,
    /// Change one's own local password.
    SelfPassword,
    /// List/read applications.
    ApplicationRead,
    /// Create/edit/delete applications.
    ApplicationWrite,
    /// List members.
    MemberRead,
    /// Add/remove members, change roles.
    MemberWrite,
    /// Create/list/revoke agent tokens.
    AgentTokenManage,
    /// Create/list/revoke SCIM tokens.
    ScimTokenManage,
    /// Read the tenant audit trail.
    AuditRead,
    /// An agent reading its own token's scope.
    AgentSelf,
    /// Read flows and their versions.
    FlowRead,
    /// Create, edit, delete flows; set schedules.
    FlowWrite,
    /// Read runs, steps and screenshots.
    RunRead,
    /// Trigger and cancel runs.
    RunTrigger,
    /// List variables (secret values never shown).
    VariableRead,
    /// Set and delete variables.
    VariableWrite,
    /// Create/revoke webhook trigger tokens (an integration).
    WebhookManage,
    /// Agent API: claim, report, heartbeat, complete, upload screenshots.
    AgentRun,
    /// Read catalog information (tenants) as PlatformAdmin.
    PlatformRead,
    /// Provision users over SCIM (`/scim/v2/Users`, `/.search`): SCIM tokens only.
    ScimUsers,
    /// Read the SCIM discovery endpoints (`ServiceProviderConfig`, `Schemas`, `ResourceTypes`).
    ScimDiscovery,
    /// Read and change the tenant's SSO/LDAP configuration, test it, dry-run mappings.
    SsoManage,
    /// Read the tenant's key versions and rotation schedule (never key material).
    KeyRead,
    /// Rotate the tenant's key set now.
    KeyRotate,
    /// Change the catalog as PlatformAdmin: tenants (create, suspend, resume, plan) and the
    /// license (install, reload, revoke).
    PlatformWrite,
    /// A tenant Owner reading the license and the tenant's entitlements.
    LicenseRead,
    /// Read one's notifications (license warnings are shown to Owners and PlatformAdmins only).
    NotificationRead,
    /// Read the deployment's audit-signing public key (to verify exports).
    AuditKeyRead,
    /// Read, set, remove and test the tenant's AI endpoint (Owners only, issue 11).
    AiEndpointManage,
    /// Read, set, remove and test an application's ticket integration (issue 20).
    IntegrationManage,
    /// File a ticket for a failed run (issue 20).
    TicketFile,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_admin_never_reads_tenant_data() {
        for p in [
            Permission::ApplicationRead,
            Permission::MemberRead,
            Permission::AuditRead,
            Permission::AgentTokenManage,
            Permission::LicenseRead,
        ] {
            assert!(!Role::PlatformAdmin.allows(p));
            assert!(!Role::Agent.allows(p));
            assert!(!Role::Scim.allows(p));
        }
    }

    #[test]
    fn role_names_in_any_case() {
        assert_eq!(Role::parse("Viewer").unwrap(), Role::Viewer);
        assert_eq!(Role::parse(" ADMIN ").unwrap(), Role::Admin);
        assert_eq!(Role::parse("PlatformAdmin").unwrap(), Role::PlatformAdmin);
        assert_eq!(Role::parse_member("Owner").unwrap(), Role::Owner);
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn names_roundtrip() {
        for r in [
            Role::Owner,
            Role::Admin,
            Role::Tester,
            Role::Viewer,
            Role::Agent,
            Role::Scim,
            Role::PlatformAdmin,
        ] {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
        }
        assert!(Role::parse_member("agent").is_err());
    }
}
