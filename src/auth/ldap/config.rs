//! The per-tenant LDAP configuration: the body of `PUT /api/v1/sso/ldap`, its validation, the
//! stored (non-secret) form, and the view returned to Owners (never a secret).

use crate::error::ErrorCode;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::dn::{self, Dn};
use super::filter;
use crate::domain::Role;

/// Default connect timeout (TCP + TLS + StartTLS), milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default timeout of one LDAP operation, milliseconds.
pub const DEFAULT_OP_TIMEOUT_MS: u64 = 10_000;
/// Default and largest depth of recursive nested-group expansion.
pub const DEFAULT_NESTED_DEPTH: u8 = 5;
/// Largest `nested_max_depth`.
pub const MAX_NESTED_DEPTH: u8 = 10;
/// Most `role_mapping` entries.
pub const MAX_MAPPINGS: usize = 200;
/// Largest secret (bind password, client key) in bytes.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;
/// Largest PEM bundle in bytes.
pub const MAX_PEM_BYTES: usize = 256 * 1024;

/// A field at fault and why (mapped to 422 `validation_failed` with `field`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON field name, e.g. `url` or `role_mapping[2].group_dn`.
    pub field: String,
    /// Human explanation.
    pub detail: String,
    /// Stable code (`validation_failed`, `tls_required`).
    pub code: ErrorCode,
}

fn bad(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        detail: detail.into(),
        code: ErrorCode::ValidationFailed,
    }
}

/// One `group DN → role` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// Group DN (compared semantically: case, spacing and `\,` vs `\2c` do not matter).
    pub group_dn: String,
    /// `Owner`, `Admin`, `Tester` or `Viewer` (case-insensitive on input).
    pub role: String,
}

/// Parse a member role written as in the issue (`Admin`) or lowercase (`admin`).
pub fn parse_role(s: &str) -> Option<Role> {
    Role::parse_member(&s.to_ascii_lowercase()).ok()
}

/// The display form used in this API: `Owner`, `Admin`, `Tester`, `Viewer`.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Owner => "Owner",
        Role::Admin => "Admin",
        Role::Tester => "Tester",
        _ => "Viewer",
    }
}

/// Distinguish an absent field (`None`) from an explicit `null` (`Some(None)`).
fn tri<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PUT /api/v1/sso/ldap`. Secrets (`bind_password`, `client_key_pem`) are write-only:
/// omit them to keep the stored value — except that changing `url` or `ca_pem` requires the
/// bind password again, so a stored password can never be sent to a server it was not entered
/// for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LdapConfigInput {
    /// LDAP login on/off for this tenant.
    pub enabled: bool,
    /// `ldaps://host[:port]` or `ldap://host[:port]` (then `starttls` must be true).
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (RFC 4511 §4.14); no plaintext fallback.
    #[serde(default)]
    pub starttls: bool,
    /// PEM CA bundle the server certificate must chain to (the only trust anchors used).
    pub ca_pem: String,
    /// Optional PEM client certificate chain (mutual TLS).
    #[serde(default)]
    pub client_cert_pem: Option<String>,
    /// PEM private key of the client certificate (write-only).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub client_key_pem: Option<Zeroizing<String>>,
    /// Service account DN used for searches.
    pub bind_dn: String,
    /// Service account password (write-only, envelope-encrypted at rest).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub bind_password: Option<Zeroizing<String>>,
    /// Base DN of the user search (subtree).
    pub user_base: String,
    /// User search filter with `{username}`, e.g. `(uid={username})`.
    pub user_filter: String,
    /// Attribute holding the email (default `mail`).
    #[serde(default = "default_email_attr")]
    pub email_attr: String,
    /// Attribute holding the display name (default `cn`).
    #[serde(default = "default_name_attr")]
    pub name_attr: String,
    /// Attribute on user (and group) entries listing groups, e.g. `memberOf` (optional).
    #[serde(default)]
    pub member_of_attr: Option<String>,
    /// Base DN of the group search (optional; with `group_filter`).
    #[serde(default)]
    pub group_base: Option<String>,
    /// Group search filter with `{dn}` (the member's DN) and/or `{username}`, e.g.
    /// `(member={dn})`.
    #[serde(default)]
    pub group_filter: Option<String>,
    /// Resolve nested groups (AD's in-chain rule where available, else bounded recursion).
    #[serde(default)]
    pub nested_groups: bool,
    /// Depth limit of recursive expansion, 1–10 (default 5).
    #[serde(default = "default_depth")]
    pub nested_max_depth: u8,
    /// `group DN → role` rules; the highest role wins (Owner > Admin > Tester > Viewer).
    #[serde(default)]
    pub role_mapping: Vec<RoleMapping>,
    /// Role when no rule matches; absent = `Viewer`, `null` = deny the login.
    #[serde(default, deserialize_with = "tri")]
    #[schema(value_type = Option<String>)]
    pub default_role: Option<Option<String>>,
    /// TCP + TLS (+ StartTLS) connect timeout in ms, 100–60000 (default 5000).
    #[serde(default = "default_connect")]
    pub connect_timeout_ms: u64,
    /// Timeout of each LDAP operation in ms, 100–120000 (default 10000).
    #[serde(default = "default_op")]
    pub op_timeout_ms: u64,
}

fn default_email_attr() -> String {
    "mail".into()
}
fn default_name_attr() -> String {
    "cn".into()
}
fn default_depth() -> u8 {
    DEFAULT_NESTED_DEPTH
}
fn default_connect() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_op() -> u64 {
    DEFAULT_OP_TIMEOUT_MS
}

/// A validated mapping rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMapping {
    /// Group DN as entered.
    pub group_dn: String,
    /// Role.
    pub role: Role,
}

/// The stored, validated, non-secret configuration (JSON in `ldap_config.config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LdapConfig {
    /// On/off.
    pub enabled: bool,
    /// Server URL (`ldaps://` or `ldap://` + StartTLS).
    pub url: String,
    /// StartTLS on `ldap://`.
    pub starttls: bool,
    /// Trust anchors (PEM).
    pub ca_pem: String,
    /// Client certificate chain (PEM).
    pub client_cert_pem: Option<String>,
    /// Service account DN.
    pub bind_dn: String,
    /// User search base.
    pub user_base: String,
    /// User filter template.
    pub user_filter: String,
    /// Email attribute.
    pub email_attr: String,
    /// Display-name attribute.
    pub name_attr: String,
    /// Group-list attribute (`memberOf`).
    pub member_of_attr: Option<String>,
    /// Group search base.
    pub group_base: Option<String>,
    /// Group filter template.
    pub group_filter: Option<String>,
    /// Nested groups on/off.
    pub nested_groups: bool,
    /// Recursion depth limit.
    pub nested_max_depth: u8,
    /// Mapping rules.
    pub role_mapping: Vec<StoredMapping>,
    /// Fallback role; `None` denies.
    pub default_role: Option<Role>,
    /// Connect timeout (ms).
    pub connect_timeout_ms: u64,
    /// Operation timeout (ms).
    pub op_timeout_ms: u64,
}

/// What the server needs from a parsed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `ldaps` or `ldap`.
    pub scheme: &'static str,
    /// Host name or IPv4 address.
    pub host: String,
    /// Port (default 636 for ldaps, 389 for ldap).
    pub port: u16,
}

/// Parse and check a server URL: `ldaps://host[:port]`, or `ldap://host[:port]` with
/// `starttls` — a URL without TLS is refused with code `tls_required`.
pub fn parse_endpoint(url: &str, starttls: bool) -> Result<Endpoint, FieldError> {
    let u = url::Url::parse(url.trim())
        .map_err(|_| bad("url", "not a URL; expected ldaps://host[:port]"))?;
    let scheme = match u.scheme() {
        "ldaps" => {
            if starttls {
                return Err(bad(
                    "starttls",
                    "starttls applies to ldap:// URLs; ldaps:// is already TLS",
                ));
            }
            "ldaps"
        }
        "ldap" => {
            if !starttls {
                return Err(FieldError {
                    field: "url".into(),
                    detail: "a directory connection without TLS is refused: use ldaps:// or set starttls: true".into(),
                    code: ErrorCode::TlsRequired,
                });
            }
            "ldap"
        }
        _ => {
            return Err(bad(
                "url",
                "scheme must be ldaps:// or ldap:// (with StartTLS)",
            ))
        }
    };
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "url",
            "credentials do not belong in the URL; use bind_dn and bind_password",
        ));
    }
    if !(u.path().is_empty() || u.path() == "/") || u.query().is_some() || u.fragment().is_some() {
        return Err(bad(
            "url",
            "the URL must not carry a DN, attributes or a filter; use user_base and user_filter",
        ));
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(_)) => {
            return Err(bad(
                "url",
                "IPv6 address literals are not supported; use a host name",
            ))
        }
        _ => return Err(bad("url", "the URL needs a host")),
    };
    let port = u
        .port()
        .unwrap_or(if scheme == "ldaps" { 636 } else { 389 });
    Ok(Endpoint { scheme, host, port })
}

fn check_dn(field: &str, v: &str, allow_empty: bool) -> Result<String, FieldError> {
    let t = v.trim();
    match Dn::parse(t) {
        Ok(d) if d.is_empty() && !allow_empty => Err(bad(field, "a DN is required")),
        Ok(_) => Ok(t.to_string()),
        Err(e) => Err(bad(field, e.to_string())),
    }
}

fn check_attr(field: &str, v: &str) -> Result<String, FieldError> {
    let t = v.trim();
    if dn::is_attribute_name(t) {
        Ok(t.to_string())
    } else {
        Err(bad(
            field,
            "not an attribute name (e.g. mail, cn, memberOf)",
        ))
    }
}

fn check_pem_certs(field: &str, pem: &str) -> Result<usize, FieldError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    if pem.len() > MAX_PEM_BYTES {
        return Err(bad(field, "PEM bundle larger than 256 KiB"));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(field, "not a PEM certificate bundle"))?;
    if certs.is_empty() {
        return Err(bad(field, "no PEM certificate found"));
    }
    Ok(certs.len())
}

fn check_timeout(field: &str, v: u64, max: u64) -> Result<u64, FieldError> {
    if (100..=max).contains(&v) {
        Ok(v)
    } else {
        Err(bad(field, format!("must be 100-{max} ms")))
    }
}

impl LdapConfigInput {
    /// Validate everything that needs no I/O and produce the stored form plus the new
    /// secrets given (if any). Errors name the first field at fault.
    pub fn validate(&self) -> Result<LdapConfig, FieldError> {
        parse_endpoint(&self.url, self.starttls)?;
        check_pem_certs("ca_pem", &self.ca_pem)?;
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(c), Some(k)) => {
                check_pem_certs("client_cert_pem", c)?;
                if k.len() > MAX_SECRET_BYTES {
                    return Err(bad("client_key_pem", "key larger than 16 KiB"));
                }
            }
            (Some(_), None) => {
                // The key may be kept from the stored config; checked by the service.
            }
            (None, Some(_)) => {
                return Err(bad(
                    "client_cert_pem",
                    "client_key_pem needs client_cert_pem",
                ))
            }
            (None, None) => {}
        }
        let bind_dn = check_dn("bind_dn", &self.bind_dn, false)?;
        if let Some(pw) = &self.bind_password {
            if pw.is_empty() {
                return Err(bad(
                    "bind_password",
                    "an empty password is an unauthenticated bind (RFC 4513 §5.1.2); give the service account's password",
                ));
            }
            if pw.len() > 1024 {
                return Err(bad("bind_password", "longer than 1024 bytes"));
            }
        }
        let user_base = check_dn("user_base", &self.user_base, false)?;
        filter::validate(&self.user_filter, &[filter::USERNAME], &[filter::USERNAME])
            .map_err(|e| bad("user_filter", e.0))?;
        let email_attr = check_attr("email_attr", &self.email_attr)?;
        let name_attr = check_attr("name_attr", &self.name_attr)?;
        let member_of_attr = self
            .member_of_attr
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| check_attr("member_of_attr", s))
            .transpose()?;
        let group_base = self
            .group_base
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| check_dn("group_base", s, false))
            .transpose()?;
        let group_filter = self
            .group_filter
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(str::trim)
            .map(str::to_string);
        match (&group_base, &group_filter) {
            (Some(_), Some(f)) => {
                filter::validate(f, &[filter::DN, filter::USERNAME], &[])
                    .map_err(|e| bad("group_filter", e.0))?;
                if !f.contains("{dn}") && !f.contains("{username}") {
                    return Err(bad(
                        "group_filter",
                        "filter must contain {dn} or {username}",
                    ));
                }
                if self.nested_groups && member_of_attr.is_none() && !f.contains("{dn}") {
                    return Err(bad(
                        "group_filter",
                        "nested groups through a group search need {dn} in group_filter",
                    ));
                }
            }
            (Some(_), None) => return Err(bad("group_filter", "group_base needs group_filter")),
            (None, Some(_)) => return Err(bad("group_base", "group_filter needs group_base")),
            (None, None) => {}
        }
        if !self.role_mapping.is_empty() && member_of_attr.is_none() && group_base.is_none() {
            return Err(bad(
                "role_mapping",
                "role_mapping needs a group lookup: member_of_attr or group_base + group_filter",
            ));
        }
        if !(1..=MAX_NESTED_DEPTH).contains(&self.nested_max_depth) {
            return Err(bad("nested_max_depth", "must be 1-10"));
        }
        if self.role_mapping.len() > MAX_MAPPINGS {
            return Err(bad("role_mapping", "at most 200 rules"));
        }
        let mut seen = std::collections::HashSet::new();
        let mut role_mapping = Vec::with_capacity(self.role_mapping.len());
        for (i, m) in self.role_mapping.iter().enumerate() {
            let field = format!("role_mapping[{i}].group_dn");
            let g = check_dn(&field, &m.group_dn, false)?;
            let role = parse_role(&m.role).ok_or_else(|| {
                bad(
                    format!("role_mapping[{i}].role"),
                    "role must be Owner, Admin, Tester or Viewer",
                )
            })?;
            if !seen.insert(dn::key(&g).unwrap_or_default()) {
                return Err(bad(field, "this group is mapped twice"));
            }
            role_mapping.push(StoredMapping { group_dn: g, role });
        }
        let default_role = match &self.default_role {
            None => Some(Role::Viewer),
            Some(None) => None,
            Some(Some(r)) => Some(parse_role(r).ok_or_else(|| {
                bad(
                    "default_role",
                    "role must be Owner, Admin, Tester, Viewer or null",
                )
            })?),
        };
        Ok(LdapConfig {
            enabled: self.enabled,
            url: self.url.trim().to_string(),
            starttls: self.starttls,
            ca_pem: self.ca_pem.clone(),
            client_cert_pem: self.client_cert_pem.clone(),
            bind_dn,
            user_base,
            user_filter: self.user_filter.trim().to_string(),
            email_attr,
            name_attr,
            member_of_attr,
            group_base,
            group_filter,
            nested_groups: self.nested_groups,
            nested_max_depth: self.nested_max_depth,
            role_mapping,
            default_role,
            connect_timeout_ms: check_timeout(
                "connect_timeout_ms",
                self.connect_timeout_ms,
                60_000,
            )?,
            op_timeout_ms: check_timeout("op_timeout_ms", self.op_timeout_ms, 120_000)?,
        })
    }
}

impl LdapConfig {
    /// The parsed endpoint (validated on save).
    pub fn endpoint(&self) -> Result<Endpoint, FieldError> {
        parse_endpoint(&self.url, self.starttls)
    }
}

/// The configuration as Owners read it back: every field but the secrets, which are reported
/// only as set/unset.
#[derive(Debug, Serialize, ToSchema)]
pub struct LdapConfigView {
    /// On/off.
    pub enabled: bool,
    /// Server URL.
    pub url: String,
    /// StartTLS.
    pub starttls: bool,
    /// CA bundle.
    pub ca_pem: String,
    /// Client certificate chain.
    pub client_cert_pem: Option<String>,
    /// Whether a client key is stored (the key itself is never returned).
    pub client_key_set: bool,
    /// Service account DN.
    pub bind_dn: String,
    /// Whether a bind password is stored (it is never returned).
    pub bind_password_set: bool,
    /// User search base.
    pub user_base: String,
    /// User filter.
    pub user_filter: String,
    /// Email attribute.
    pub email_attr: String,
    /// Display-name attribute.
    pub name_attr: String,
    /// Group-list attribute.
    pub member_of_attr: Option<String>,
    /// Group search base.
    pub group_base: Option<String>,
    /// Group filter.
    pub group_filter: Option<String>,
    /// Nested groups.
    pub nested_groups: bool,
    /// Recursion depth limit.
    pub nested_max_depth: u8,
    /// Mapping rules (roles as `Owner`, `Admin`, `Tester`, `Viewer`).
    pub role_mapping: Vec<RoleMapping>,
    /// Fallback role; `null` = deny.
    pub default_role: Option<String>,
    /// Connect timeout (ms).
    pub connect_timeout_ms: u64,
    /// Operation timeout (ms).
    pub op_timeout_ms: u64,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Who changed it last.
    pub updated_by: String,
}

impl LdapConfigView {
    /// Build the view.
    pub fn new(
        c: &LdapConfig,
        client_key_set: bool,
        updated_at: String,
        updated_by: String,
    ) -> Self {
        Self {
            enabled: c.enabled,
            url: c.url.clone(),
            starttls: c.starttls,
            ca_pem: c.ca_pem.clone(),
            client_cert_pem: c.client_cert_pem.clone(),
            client_key_set,
            bind_dn: c.bind_dn.clone(),
            bind_password_set: true,
            user_base: c.user_base.clone(),
            user_filter: c.user_filter.clone(),
            email_attr: c.email_attr.clone(),
            name_attr: c.name_attr.clone(),
            member_of_attr: c.member_of_attr.clone(),
            group_base: c.group_base.clone(),
            group_filter: c.group_filter.clone(),
            nested_groups: c.nested_groups,
            nested_max_depth: c.nested_max_depth,
            role_mapping: c
                .role_mapping
                .iter()
                .map(|m| RoleMapping {
                    group_dn: m.group_dn.clone(),
                    role: role_name(m.role).into(),
                })
                .collect(),
            default_role: c.default_role.map(|r| role_name(r).to_string()),
            connect_timeout_ms: c.connect_timeout_ms,
            op_timeout_ms: c.op_timeout_ms,
            updated_at,
            updated_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_ldap_refused() {
        let e = parse_endpoint("ldap://dc1.corp.example:389", false).unwrap_err();
        assert_eq!(e.code.as_str(), "tls_required");
        assert_eq!(e.field, "url");
        assert!(parse_endpoint("ldap://dc1.corp.example", true).is_ok());
        assert_eq!(
            parse_endpoint("ldaps://DC1.corp.example", false).unwrap(),
            Endpoint {
                scheme: "ldaps",
                host: "dc1.corp.example".into(),
                port: 636
            }
        );
        assert!(parse_endpoint("ldaps://h", true).is_err());
        assert!(parse_endpoint("http://h", false).is_err());
        assert!(parse_endpoint("ldaps://u:p@h", false).is_err());
        assert!(parse_endpoint("ldaps://h/dc=x??sub", false).is_err());
        assert!(parse_endpoint("ldaps://[::1]:636", false).is_err());
    }

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!(parse_role("Admin"), Some(Role::Admin));
        assert_eq!(parse_role("owner"), Some(Role::Owner));
        assert_eq!(parse_role("Agent"), None);
        assert_eq!(role_name(Role::Tester), "Tester");
    }
}
