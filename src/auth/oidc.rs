//! OpenID Connect single sign-on (issue 21), the protocol side: the per-tenant configuration
//! (body of `PUT /api/v1/sso/oidc`, validation, stored form, view), discovery (OpenID Connect
//! Discovery 1.0 §4: `<issuer>/.well-known/openid-configuration`, whose `issuer` must equal the
//! configured one exactly), the JWKS, the authorization-code exchange with PKCE (RFC 7636, S256)
//! and client authentication `client_secret_basic` (RFC 6749 §2.3.1), and ID-token verification
//! (OpenID Connect Core 1.0 §3.1.3.7) with `jsonwebtoken`:
//!
//! - asymmetric algorithms only ([`ALLOWED_ALGS`]); `none` and HMAC are refused before any key
//!   is looked at (an HS256 token keyed with the provider's public key never verifies);
//! - the key by `kid` from the provider's JWKS (cached by the service, refetched once when the
//!   `kid` is unknown);
//! - `iss` equal to the configured issuer, `aud` containing the client id, `azp` (when present,
//!   or when `aud` names several audiences) equal to the client id;
//! - `exp`, `nbf` and `iat` with at most [`LEEWAY_SECS`] of clock skew; `nonce` equal to the
//!   one sent.
//!
//! Every request goes through the egress policy ([`crate::net::https`]). Nothing here touches a
//! store; `service::oidc` orchestrates.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::ldap::config::{parse_role, role_name};
use super::ldap::mapping::highest;
use crate::domain::{Email, Role};
use crate::net::https::{self, Body, FetchError};
use crate::net::EgressPolicy;

/// Largest accepted clock skew on `exp`, `nbf` and `iat`, seconds.
pub const LEEWAY_SECS: u64 = 120;
/// Timeout of one request to the provider.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `scopes`.
pub const DEFAULT_SCOPES: &str = "openid email profile";
/// Most `role_mapping` entries.
pub const MAX_MAPPINGS: usize = 200;
/// Largest client secret, bytes.
pub const MAX_SECRET_BYTES: usize = 4096;
/// Largest `ca_pem`, bytes.
pub const MAX_PEM_BYTES: usize = 256 * 1024;
/// The ID-token signature algorithms accepted (asymmetric only).
pub const ALLOWED_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A field at fault and why (422 `validation_failed` with `field`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON field name, e.g. `issuer` or `role_mapping[1].role`.
    pub field: String,
    /// Explanation.
    pub detail: String,
}

fn bad(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        detail: detail.into(),
    }
}

/// Claim names read from the ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimNames {
    /// E-mail claim (default `email`); used only for a member created now, never to link.
    #[serde(default = "d_email")]
    pub email: String,
    /// Display-name claim (default `name`).
    #[serde(default = "d_name")]
    pub name: String,
    /// Groups claim (default `groups`): an array of strings (or one string).
    #[serde(default = "d_groups")]
    pub groups: String,
}

fn d_email() -> String {
    "email".into()
}
fn d_name() -> String {
    "name".into()
}
fn d_groups() -> String {
    "groups".into()
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            email: d_email(),
            name: d_name(),
            groups: d_groups(),
        }
    }
}

/// One `group → role` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRole {
    /// Group value as the provider sends it in the groups claim (exact match; Entra sends
    /// object ids, Keycloak paths such as `/qa`, Okta names).
    pub group: String,
    /// `Owner`, `Admin`, `Tester` or `Viewer` (case-insensitive on input).
    pub role: String,
}

/// Distinguish an absent field (`None`) from an explicit `null` (`Some(None)`).
fn tri<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PUT /api/v1/sso/oidc`. `client_secret` is write-only: omit it to keep the stored
/// one — except that changing `issuer` or `ca_pem` requires it again, so a stored secret is
/// never sent to a provider it was not entered for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcConfigInput {
    /// Single sign-on on/off for this tenant.
    pub enabled: bool,
    /// `https://` issuer identifier; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Client id registered at the provider.
    pub client_id: String,
    /// Client secret (write-only; envelope-encrypted at rest; sent only to the token endpoint).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub client_secret: Option<Zeroizing<String>>,
    /// Space-separated scopes (default `openid email profile`; must contain `openid`).
    #[serde(default)]
    pub scopes: Option<String>,
    /// Claim names (defaults `email`, `name`, `groups`).
    #[serde(default)]
    pub claims: Option<ClaimNames>,
    /// `group → role` rules; the highest mapped role wins (Owner > Admin > Tester > Viewer).
    #[serde(default)]
    pub role_mapping: Vec<GroupRole>,
    /// Role when no rule matches; absent = `Viewer`, `null` = refuse users without a mapped
    /// group. A member's existing role is kept when no rule matches.
    #[serde(default, deserialize_with = "tri")]
    #[schema(value_type = Option<String>)]
    pub default_role: Option<Option<String>>,
    /// Claim matched against a member's SCIM `externalId` at first sign-in (Entra: `oid`,
    /// Okta: `sub`); absent = no linking of existing members.
    #[serde(default)]
    pub link_claim: Option<String>,
    /// Create unknown members at first sign-in (within the license's seats).
    #[serde(default)]
    pub jit_provisioning: bool,
    /// PEM CA bundle the provider's certificate must chain to (else the public Web PKI roots).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// The stored, validated, non-secret configuration (JSON in `oidc_config.config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcConfig {
    /// On/off.
    pub enabled: bool,
    /// Issuer identifier (no trailing slash unless the provider's has one).
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Scopes.
    pub scopes: String,
    /// Claim names.
    pub claims: ClaimNames,
    /// Rules.
    pub role_mapping: Vec<(String, Role)>,
    /// Fallback role; `None` refuses.
    pub default_role: Option<Role>,
    /// Link claim.
    pub link_claim: Option<String>,
    /// JIT.
    pub jit_provisioning: bool,
    /// Trust anchors.
    pub ca_pem: Option<String>,
}

impl OidcConfig {
    /// Host and port of the issuer.
    pub fn issuer_host_port(&self) -> (String, u16) {
        let u = url::Url::parse(&self.issuer).ok();
        (
            u.as_ref()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default(),
            u.and_then(|u| u.port_or_known_default()).unwrap_or(443),
        )
    }
}

fn check_claim(field: &str, v: &str) -> Result<String, FieldError> {
    let t = v.trim();
    if t.is_empty() || t.len() > 128 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(field, "a claim name: 1-128 visible characters"));
    }
    Ok(t.to_string())
}

impl OidcConfigInput {
    /// Validate every field (the secret's presence is the service's to decide).
    pub fn validate(&self) -> Result<OidcConfig, FieldError> {
        let issuer = self.issuer.trim().to_string();
        let u = url::Url::parse(&issuer).map_err(|_| bad("issuer", "not a URL"))?;
        if u.scheme() != "https" {
            return Err(bad("issuer", "the issuer must be an https:// URL"));
        }
        if u.host_str().is_none_or(str::is_empty)
            || !u.username().is_empty()
            || u.password().is_some()
            || u.query().is_some()
            || u.fragment().is_some()
        {
            return Err(bad(
                "issuer",
                "the issuer is https://host[:port][/path] without credentials, query or fragment",
            ));
        }
        let client_id = self.client_id.trim().to_string();
        if client_id.is_empty() || client_id.len() > 512 {
            return Err(bad(
                "client_id",
                "client_id is required (at most 512 bytes)",
            ));
        }
        if let Some(s) = &self.client_secret {
            if s.is_empty() || s.len() > MAX_SECRET_BYTES {
                return Err(bad("client_secret", "1-4096 bytes"));
            }
        }
        let scopes = self
            .scopes
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_SCOPES);
        let scope_list: Vec<&str> = scopes.split_whitespace().collect();
        if !scope_list.contains(&"openid") {
            return Err(bad("scopes", "scopes must contain openid"));
        }
        if scope_list
            .iter()
            .any(|s| s.chars().any(|c| c == '"' || c == '\\' || c.is_control()))
        {
            return Err(bad("scopes", "a scope contains a forbidden character"));
        }
        let c = self.claims.clone().unwrap_or_default();
        let claims = ClaimNames {
            email: check_claim("claims.email", &c.email)?,
            name: check_claim("claims.name", &c.name)?,
            groups: check_claim("claims.groups", &c.groups)?,
        };
        if self.role_mapping.len() > MAX_MAPPINGS {
            return Err(bad("role_mapping", "at most 200 rules"));
        }
        let mut role_mapping = Vec::new();
        for (i, m) in self.role_mapping.iter().enumerate() {
            if m.group.is_empty() || m.group.len() > 1024 {
                return Err(bad(
                    format!("role_mapping[{i}].group"),
                    "a group value of 1-1024 bytes",
                ));
            }
            let r = parse_role(&m.role).ok_or_else(|| {
                bad(
                    format!("role_mapping[{i}].role"),
                    "Owner, Admin, Tester or Viewer",
                )
            })?;
            role_mapping.push((m.group.clone(), r));
        }
        let default_role = match &self.default_role {
            None => Some(Role::Viewer),
            Some(None) => None,
            Some(Some(r)) => Some(
                parse_role(r)
                    .ok_or_else(|| bad("default_role", "Owner, Admin, Tester, Viewer or null"))?,
            ),
        };
        let link_claim = match self.link_claim.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(l) => Some(check_claim("link_claim", l)?),
        };
        let ca_pem = match self.ca_pem.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => {
                if p.len() > MAX_PEM_BYTES {
                    return Err(bad("ca_pem", "PEM bundle larger than 256 KiB"));
                }
                crate::net::tls::check_ca_pem(p).map_err(|m| bad("ca_pem", m))?;
                Some(p.to_string())
            }
        };
        Ok(OidcConfig {
            enabled: self.enabled,
            issuer,
            client_id,
            scopes: scope_list.join(" "),
            claims,
            role_mapping,
            default_role,
            link_claim,
            jit_provisioning: self.jit_provisioning,
            ca_pem,
        })
    }
}

/// The configuration as shown to Owners (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct OidcConfigView {
    /// On/off.
    pub enabled: bool,
    /// Issuer.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Always true once saved: a secret is stored (it is never returned).
    pub client_secret_set: bool,
    /// Scopes.
    pub scopes: String,
    /// Claim names.
    pub claims: ClaimNames,
    /// Rules (roles as `Owner`, `Admin`, `Tester`, `Viewer`).
    pub role_mapping: Vec<GroupRole>,
    /// Fallback role; `null` refuses users without a mapped group.
    pub default_role: Option<String>,
    /// Link claim.
    pub link_claim: Option<String>,
    /// JIT provisioning.
    pub jit_provisioning: bool,
    /// Trust anchors.
    pub ca_pem: Option<String>,
    /// The redirect URI to register at the provider (`<public_url>/api/v1/auth/oidc/callback`),
    /// or null while `public_url` is not configured.
    pub redirect_uri: Option<String>,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Who changed it.
    pub updated_by: String,
}

impl OidcConfigView {
    /// Build the view.
    pub fn new(
        c: &OidcConfig,
        redirect_uri: Option<String>,
        updated_at: String,
        updated_by: String,
    ) -> Self {
        Self {
            enabled: c.enabled,
            issuer: c.issuer.clone(),
            client_id: c.client_id.clone(),
            client_secret_set: true,
            scopes: c.scopes.clone(),
            claims: c.claims.clone(),
            role_mapping: c
                .role_mapping
                .iter()
                .map(|(g, r)| GroupRole {
                    group: g.clone(),
                    role: role_name(*r).into(),
                })
                .collect(),
            default_role: c.default_role.map(|r| role_name(r).to_string()),
            link_claim: c.link_claim.clone(),
            jit_provisioning: c.jit_provisioning,
            ca_pem: c.ca_pem.clone(),
            redirect_uri,
            updated_at,
            updated_by,
        }
    }
}

// ---------------------------------------------------------------- role decision

/// The role decision for one sign-in's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Groups of rules that matched (configuration order).
    pub matched: Vec<String>,
    /// The highest mapped role, if a rule matched.
    pub mapped: Option<Role>,
}

/// Map `groups` with the same rule as LDAP: the highest mapped role wins.
pub fn decide(groups: &[String], rules: &[(String, Role)]) -> Decision {
    let set: HashSet<&str> = groups.iter().map(String::as_str).collect();
    let hits: Vec<&(String, Role)> = rules
        .iter()
        .filter(|(g, _)| set.contains(g.as_str()))
        .collect();
    Decision {
        matched: hits.iter().map(|(g, _)| g.clone()).collect(),
        mapped: highest(hits.iter().map(|(_, r)| *r)),
    }
}

// ---------------------------------------------------------------- provider metadata

/// Why the provider could not be used (the Owner's test-connection names it; a person signing
/// in sees "provider unavailable").
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The egress policy refused a host.
    #[error("{0}")]
    Egress(String),
    /// The TLS handshake with the provider failed: its kind and a message naming the host.
    #[error("{1}")]
    Tls(crate::net::tls::TlsFailure, String),
    /// Transport, status or shape problem; the message names the URL, never a secret.
    #[error("{0}")]
    Unavailable(String),
}

impl From<FetchError> for ProviderError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Egress(d) => ProviderError::Egress(d.to_string()),
            FetchError::Tls(kind, m) => ProviderError::Tls(kind, m),
            FetchError::Transport(m) => ProviderError::Unavailable(m),
        }
    }
}

/// The parts of the discovery document used.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must equal the configured issuer exactly.
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
}

async fn get_json(
    policy: &Arc<EgressPolicy>,
    cfg: &OidcConfig,
    url: &str,
) -> Result<Value, ProviderError> {
    let r = https::request(
        policy.clone(),
        url,
        cfg.ca_pem.as_deref(),
        REQUEST_TIMEOUT,
        Body::None,
    )
    .await?;
    if r.status != 200 {
        return Err(ProviderError::Unavailable(format!(
            "{url} answered HTTP {}",
            r.status
        )));
    }
    serde_json::from_slice(&r.body)
        .map_err(|_| ProviderError::Unavailable(format!("{url} did not answer JSON")))
}

/// Read and check the discovery document: `issuer` equal to the configured one, every
/// endpoint `https://`.
pub async fn discover(
    policy: &Arc<EgressPolicy>,
    cfg: &OidcConfig,
) -> Result<Discovery, ProviderError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        cfg.issuer.trim_end_matches('/')
    );
    let v = get_json(policy, cfg, &url).await?;
    let d: Discovery = serde_json::from_value(v).map_err(|_| {
        ProviderError::Unavailable(format!(
            "{url} lacks issuer, authorization_endpoint, token_endpoint or jwks_uri"
        ))
    })?;
    if d.issuer != cfg.issuer {
        return Err(ProviderError::Unavailable(format!(
            "the provider names itself `{}`, not the configured issuer `{}`",
            d.issuer, cfg.issuer
        )));
    }
    for (n, e) in [
        ("authorization_endpoint", &d.authorization_endpoint),
        ("token_endpoint", &d.token_endpoint),
        ("jwks_uri", &d.jwks_uri),
    ] {
        if !e.starts_with("https://") {
            return Err(ProviderError::Unavailable(format!(
                "the provider's {n} is not https://"
            )));
        }
    }
    Ok(d)
}

/// Fetch the provider's JWKS.
pub async fn fetch_jwks(
    policy: &Arc<EgressPolicy>,
    cfg: &OidcConfig,
    d: &Discovery,
) -> Result<JwkSet, ProviderError> {
    let v = get_json(policy, cfg, &d.jwks_uri).await?;
    serde_json::from_value(v)
        .map_err(|_| ProviderError::Unavailable(format!("{} is not a JWK set", d.jwks_uri)))
}

// ---------------------------------------------------------------- authorization request

/// Random URL-safe value of 32 bytes (state, nonce, PKCE verifier, browser binding).
pub fn random_value() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The authorization request URL (code flow, PKCE S256).
pub fn authorization_url(
    d: &Discovery,
    cfg: &OidcConfig,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> Result<String, ProviderError> {
    let mut u = url::Url::parse(&d.authorization_endpoint)
        .map_err(|_| ProviderError::Unavailable("authorization_endpoint is not a URL".into()))?;
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &cfg.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &cfg.scopes)
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &pkce_challenge(verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(u.into())
}

/// Exchange `code` at the token endpoint (same `redirect_uri` as the authorization request);
/// returns the `id_token`.
pub async fn exchange_code(
    policy: &Arc<EgressPolicy>,
    cfg: &OidcConfig,
    d: &Discovery,
    secret: &str,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<Zeroizing<String>, ProviderError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let r = https::request(
        policy.clone(),
        &d.token_endpoint,
        cfg.ca_pem.as_deref(),
        REQUEST_TIMEOUT,
        Body::FormBasic {
            form: &form,
            user: &cfg.client_id,
            password: secret,
        },
    )
    .await?;
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    if r.status != 200 {
        let err = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error code");
        return Err(ProviderError::Unavailable(format!(
            "the token endpoint answered HTTP {} ({err})",
            r.status
        )));
    }
    v.get("id_token")
        .and_then(Value::as_str)
        .map(|s| Zeroizing::new(s.to_string()))
        .ok_or_else(|| ProviderError::Unavailable("the token response has no id_token".into()))
}

// ---------------------------------------------------------------- ID token

/// Why an ID token was refused (audit `reason`, shown on the dashboard's refusal page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// `alg` is `none`, HMAC or otherwise not in [`ALLOWED_ALGS`].
    AlgNotAllowed,
    /// No key in the JWKS has the token's `kid` (after one refetch).
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` lacks the client id, or `azp` names another client.
    WrongAudience,
    /// `exp` passed (beyond the leeway).
    Expired,
    /// `iat` or `nbf` in the future (beyond the leeway).
    ClockSkew,
    /// `nonce` differs from the one sent.
    NonceMismatch,
    /// Not a well-formed JWT or a required claim is missing.
    Malformed,
}

impl TokenRefusal {
    /// Audit reason code.
    pub fn reason(self) -> &'static str {
        match self {
            TokenRefusal::AlgNotAllowed => "alg_not_allowed",
            TokenRefusal::UnknownKey => "unknown_key",
            TokenRefusal::BadSignature => "bad_signature",
            TokenRefusal::WrongIssuer => "wrong_issuer",
            TokenRefusal::WrongAudience => "wrong_audience",
            TokenRefusal::Expired => "token_expired",
            TokenRefusal::ClockSkew => "clock_skew",
            TokenRefusal::NonceMismatch => "nonce_mismatch",
            TokenRefusal::Malformed => "invalid_token",
        }
    }
}

/// What verification needs to look up a key.
pub enum Verified {
    /// The verified claims.
    Claims(serde_json::Map<String, Value>),
    /// The `kid` is not in this JWKS: refetch once and try again.
    KeyNotFound,
    /// Refused.
    Refused(TokenRefusal),
}

fn header_alg(token: &str) -> Option<String> {
    let h = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg").and_then(Value::as_str).map(str::to_string)
}

/// Verify `token` against `jwks` for `cfg` with the expected `nonce`, at `now` (unix seconds).
pub fn verify_id_token(
    token: &str,
    jwks: &JwkSet,
    cfg: &OidcConfig,
    nonce: &str,
    now: i64,
) -> Verified {
    // The algorithm is decided before any key is touched: none and HMAC never verify.
    let Some(alg_name) = header_alg(token) else {
        return Verified::Refused(TokenRefusal::Malformed);
    };
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        Err(_) if alg_name.eq_ignore_ascii_case("none") => {
            return Verified::Refused(TokenRefusal::AlgNotAllowed)
        }
        Err(_) => return Verified::Refused(TokenRefusal::Malformed),
    };
    if !ALLOWED_ALGS.contains(&header.alg) {
        return Verified::Refused(TokenRefusal::AlgNotAllowed);
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    };
    let Some(jwk) = jwk else {
        return Verified::KeyNotFound;
    };
    let Ok(key) = DecodingKey::from_jwk(jwk) else {
        return Verified::Refused(TokenRefusal::UnknownKey);
    };
    let mut v = Validation::new(header.alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.set_issuer(&[cfg.issuer.as_str()]);
    v.set_audience(&[cfg.client_id.as_str()]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v) {
        Ok(d) => d,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind as K;
            return Verified::Refused(match e.kind() {
                K::ExpiredSignature => TokenRefusal::Expired,
                K::ImmatureSignature => TokenRefusal::ClockSkew,
                K::InvalidIssuer => TokenRefusal::WrongIssuer,
                K::InvalidAudience => TokenRefusal::WrongAudience,
                K::InvalidSignature => TokenRefusal::BadSignature,
                K::InvalidAlgorithm | K::InvalidAlgorithmName => TokenRefusal::AlgNotAllowed,
                _ => TokenRefusal::Malformed,
            });
        }
    };
    let claims = data.claims;
    // iat in the future beyond the leeway: the clocks disagree.
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat > now + LEEWAY_SECS as i64 => {
            return Verified::Refused(TokenRefusal::ClockSkew)
        }
        Some(_) => {}
        None => return Verified::Refused(TokenRefusal::Malformed),
    }
    // azp: when present it must be us; several audiences require it (Core §3.1.3.7 items 4-5).
    let several = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(a)) if *a == cfg.client_id => {}
        None if !several => {}
        _ => return Verified::Refused(TokenRefusal::WrongAudience),
    }
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
        return Verified::Refused(TokenRefusal::NonceMismatch);
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(|s| s.is_empty() || s.len() > 255)
    {
        return Verified::Refused(TokenRefusal::Malformed);
    }
    Verified::Claims(claims)
}

/// The identity and attributes read from verified (or sample) claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub subject: String,
    /// The `link_claim` value (string; a number is taken as its decimal text).
    pub link_value: Option<String>,
    /// Normalised e-mail, when the claim holds a valid address.
    pub email: Option<Email>,
    /// Display name.
    pub name: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
}

fn string_claim(claims: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Read the identity from `claims` per `cfg` (no `sub` → `None`).
pub fn identity(cfg: &OidcConfig, claims: &serde_json::Map<String, Value>) -> Option<Identity> {
    let subject = string_claim(claims, "sub")?;
    let groups = match claims.get(&cfg.claims.groups) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    Some(Identity {
        subject,
        link_value: cfg
            .link_claim
            .as_deref()
            .and_then(|l| string_claim(claims, l)),
        email: string_claim(claims, &cfg.claims.email).and_then(|e| Email::parse(&e).ok()),
        name: string_claim(claims, &cfg.claims.name).map(|n| n.chars().take(256).collect()),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> OidcConfigInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn validation() {
        let ok = input(
            serde_json::json!({"enabled": true, "issuer": "https://idp.example/realms/x",
            "client_id": "fg", "client_secret": "s", "role_mapping": [{"group": "qa", "role": "tester"}],
            "default_role": null}),
        );
        let c = ok.validate().unwrap();
        assert_eq!(c.scopes, DEFAULT_SCOPES);
        assert_eq!(c.default_role, None);
        assert_eq!(c.role_mapping, vec![("qa".to_string(), Role::Tester)]);
        for (v, field) in [
            (
                serde_json::json!({"enabled": true, "issuer": "http://idp", "client_id": "x"}),
                "issuer",
            ),
            (
                serde_json::json!({"enabled": true, "issuer": "https://idp", "client_id": ""}),
                "client_id",
            ),
            (
                serde_json::json!({"enabled": true, "issuer": "https://idp", "client_id": "x", "scopes": "email"}),
                "scopes",
            ),
            (
                serde_json::json!({"enabled": true, "issuer": "https://idp", "client_id": "x",
                "role_mapping": [{"group": "g", "role": "god"}]}),
                "role_mapping[0].role",
            ),
            (
                serde_json::json!({"enabled": true, "issuer": "https://idp", "client_id": "x", "ca_pem": "nope"}),
                "ca_pem",
            ),
        ] {
            assert_eq!(input(v).validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn highest_mapped_role_wins() {
        let rules = vec![
            ("v".to_string(), Role::Viewer),
            ("a".to_string(), Role::Admin),
            ("t".to_string(), Role::Tester),
        ];
        let d = decide(&["t".into(), "a".into(), "x".into()], &rules);
        assert_eq!(d.mapped, Some(Role::Admin));
        assert_eq!(d.matched, vec!["a".to_string(), "t".to_string()]);
        assert_eq!(decide(&["x".into()], &rules).mapped, None);
    }

    #[test]
    fn pkce_s256_is_base64url_of_sha256() {
        // Expected value computed independently: printf %s VERIFIER | openssl dgst -sha256
        // -binary | base64 | tr '+/' '-_' | tr -d '='
        assert_eq!(
            pkce_challenge("flowguard-pkce-test-verifier-0123456789abcdefghij"),
            "-jqqBXHPrzR2ktAhZOZFzq8sefkCwg6qBlzwkROx-Xo"
        );
    }
}
