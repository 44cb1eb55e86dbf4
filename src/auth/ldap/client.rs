//! The directory conversation, over [`ldap3`] with rustls (ring provider):
//!
//! 1. **Connect** through the egress policy to a checked address, then TLS — `ldaps://`, or
//!    StartTLS on `ldap://` before anything else is sent (RFC 4513 §3.1.1, RFC 4511 §4.14).
//!    The server identity is checked against the configured host name (RFC 4513 §3.1.3, an IP
//!    literal needs an iPAddress SAN) and the tenant's CA bundle is the only trust anchor.
//!    There is no "skip verification" and no plaintext retry: if StartTLS fails, the
//!    connection is dropped. Any failure before the TLS session exists is reported as one
//!    [`DirError::Unavailable`] after the full connect timeout, so neither the answer nor its
//!    timing tells a closed port from an open one.
//! 2. **Service bind** with the service account.
//! 3. **Search** the user under `user_base` with the filter-escaped login name; zero or more
//!    than one entry is "not found" (never "take the first"). Referrals are not chased.
//! 4. **User bind** with the entry's DN exactly as returned. An empty password never reaches
//!    the wire (RFC 4513 §5.1.2, §6.3.1).
//! 5. **Groups**: `member_of_attr` values and/or a group search, then nested groups through
//!    AD's `LDAP_MATCHING_RULE_IN_CHAIN` when the server advertises AD capabilities, else by a
//!    breadth-first expansion bounded by depth and count, safe against cycles.
//!
//! Every operation has the configured timeout.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions, StdStream,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::config::LdapConfig;
use super::{dn, filter};
use crate::net::{ConnectError, EgressDenied, EgressPolicy};

/// AD capability OIDs in the root DSE `supportedCapabilities` (MS-ADTS §3.1.1.3.4.3):
/// `LDAP_CAP_ACTIVE_DIRECTORY_OID` and `LDAP_CAP_ACTIVE_DIRECTORY_ADAM_OID`. A server that
/// advertises one of them evaluates `LDAP_MATCHING_RULE_IN_CHAIN`.
pub const AD_CAPABILITIES: [&str; 2] = ["1.2.840.113556.1.4.800", "1.2.840.113556.1.4.1851"];
/// Most groups collected for one user (direct and nested together).
pub const MAX_GROUPS: usize = 1000;

/// Secrets needed to talk to the directory, decrypted for one conversation (zeroed on drop).
pub struct Secrets {
    /// Service account password.
    pub bind_password: Zeroizing<String>,
    /// Client certificate key (PEM), when mutual TLS is configured.
    pub client_key_pem: Option<Zeroizing<String>>,
}

/// Why the directory conversation failed. Messages never contain a secret, a password or
/// anything that tells whether a port is open.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// No verified TLS session could be set up (refused, filtered, timeout, handshake or
    /// StartTLS failure, untrusted or mismatched certificate), or the server went away.
    #[error("directory unavailable")]
    Unavailable,
    /// An operation exceeded `op_timeout_ms`.
    #[error("directory operation timed out")]
    Timeout,
    /// The egress policy refuses the server.
    #[error(transparent)]
    Egress(#[from] EgressDenied),
    /// The service account could not bind.
    #[error("service account bind rejected (result code {0})")]
    ServiceBind(u32),
    /// The stored TLS material is unusable.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// TCP connected but the TLS handshake failed, by kind (unknown issuer, expired, name
    /// mismatch, CA used as leaf…); the detail is rustls's text. Only the Owner's connection
    /// test shows it; a login answers the one `ldap_unavailable`.
    #[error("TLS handshake failed: {}", .0.describe())]
    Tls(crate::net::tls::TlsFailure, String),
    /// An unexpected result code or protocol error.
    #[error("directory error: {0}")]
    Protocol(String),
}

fn map_err(e: LdapError) -> DirError {
    match e {
        LdapError::Timeout { .. } => DirError::Timeout,
        LdapError::Io { .. }
        | LdapError::OpSend { .. }
        | LdapError::ResultRecv { .. }
        | LdapError::IdScrubSend { .. }
        | LdapError::EndOfStream => DirError::Unavailable,
        LdapError::LdapResult { result } if result.rc == 51 || result.rc == 52 => {
            DirError::Unavailable
        }
        LdapError::LdapResult { result } => {
            DirError::Protocol(format!("result code {}", result.rc))
        }
        other => DirError::Protocol(crate::domain::truncate(&other.to_string(), 120)),
    }
}

/// Build the rustls client configuration through the shared outbound builder
/// ([`crate::net::tls::client_config`]): ring provider, TLS 1.2/1.3, the CA bundle as the only
/// trust anchors (a certificate in it that the server presents itself is pinned, e.g. a
/// self-signed CA:TRUE certificate), optional client certificate. Errors name the PEM field at
/// fault.
pub fn tls_config(
    ca_pem: &str,
    client_cert_pem: Option<&str>,
    client_key_pem: Option<&str>,
) -> Result<rustls::ClientConfig, (&'static str, String)> {
    crate::net::tls::parse_bundle(ca_pem)
        .map_err(|_| ("ca_pem", "no CA certificate found".to_string()))?;
    let auth = match (client_cert_pem, client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|_| ("client_cert_pem", "not a PEM certificate chain".to_string()))?;
            if chain.is_empty() {
                return Err(("client_cert_pem", "no certificate found".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| ("client_key_pem", "not a PEM private key".to_string()))?;
            Some((chain, key))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err((
                "client_key_pem",
                "client_cert_pem needs client_key_pem".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "client_cert_pem",
                "client_key_pem needs client_cert_pem".into(),
            ))
        }
    };
    let has_auth = auth.is_some();
    crate::net::tls::client_config(Some(ca_pem), auth).map_err(|m| {
        if has_auth && m.starts_with("client_key_pem") {
            (
                "client_key_pem",
                "key does not match the client certificate".to_string(),
            )
        } else {
            ("ca_pem", m)
        }
    })
}

/// A user entry found by the search.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// DN exactly as the directory returned it.
    pub dn: String,
    /// First value of `email_attr`.
    pub email: Option<String>,
    /// First value of `name_attr`.
    pub display_name: Option<String>,
    /// Values of `member_of_attr` (when configured).
    pub member_of: Vec<String>,
}

/// Result of the user search.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No entry matched.
    NotFound,
    /// More than one entry matched.
    Ambiguous,
    /// Exactly one entry.
    Found(UserEntry),
}

/// How nested groups were resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedMethod {
    /// Nested groups are off: direct groups only.
    Off,
    /// AD's in-chain matching rule, one check per mapped group.
    InChain,
    /// Breadth-first expansion.
    Recursive,
}

impl NestedMethod {
    /// Stable name (`off`, `in_chain`, `recursive`).
    pub fn as_str(self) -> &'static str {
        match self {
            NestedMethod::Off => "off",
            NestedMethod::InChain => "in_chain",
            NestedMethod::Recursive => "recursive",
        }
    }
}

/// Groups of one user.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Group DNs as the directory spelled them (deduplicated semantically).
    pub dns: Vec<String>,
    /// Nested-group method used.
    pub method: NestedMethod,
    /// The depth or count bound stopped the expansion early.
    pub truncated: bool,
}

/// One open, TLS-protected connection.
pub struct DirSession {
    ldap: Ldap,
    op_timeout: Duration,
    /// `ldaps` or `starttls`.
    pub tls: &'static str,
}

/// Open a verified TLS connection (see the module doc). Failures before the TLS session exists
/// take the whole `connect_timeout_ms` and give [`DirError::Unavailable`].
pub async fn connect(
    cfg: &LdapConfig,
    secrets: &Secrets,
    egress: &EgressPolicy,
) -> Result<DirSession, DirError> {
    let start = Instant::now();
    let ct = Duration::from_millis(cfg.connect_timeout_ms);
    let res = connect_inner(cfg, secrets, egress, start, ct).await;
    if matches!(res, Err(DirError::Unavailable | DirError::Tls(..))) {
        tokio::time::sleep(ct.saturating_sub(start.elapsed())).await;
    }
    res
}

async fn connect_inner(
    cfg: &LdapConfig,
    secrets: &Secrets,
    egress: &EgressPolicy,
    start: Instant,
    ct: Duration,
) -> Result<DirSession, DirError> {
    let ep = cfg.endpoint().map_err(|e| DirError::Protocol(e.detail))?;
    // Defence in depth: the stored config was validated, but never speak LDAP without TLS.
    let tls_mode = match (ep.scheme, cfg.starttls) {
        ("ldaps", false) => "ldaps",
        ("ldap", true) => "starttls",
        _ => return Err(DirError::Protocol("configuration without TLS".into())),
    };
    let tls = tls_config(
        &cfg.ca_pem,
        cfg.client_cert_pem.as_deref(),
        secrets.client_key_pem.as_ref().map(|k| k.as_str()),
    )
    .map_err(|(f, m)| DirError::TlsConfig(format!("{f}: {m}")))?;
    let stream = egress
        .connect(&ep.host, ep.port, ct)
        .await
        .map_err(|e| match e {
            ConnectError::Denied(d) => DirError::Egress(d),
            ConnectError::Unreachable => DirError::Unavailable,
        })?;
    let std = stream.into_std().map_err(|_| DirError::Unavailable)?;
    let remaining = ct
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1));
    let settings = LdapConnSettings::new()
        .set_std_stream(StdStream::Tcp(std))
        .set_config(Arc::new(tls))
        .set_starttls(cfg.starttls)
        .set_conn_timeout(remaining);
    let url = url::Url::parse(&format!("{}://{}:{}", ep.scheme, ep.host, ep.port))
        .map_err(|_| DirError::Protocol("bad url".into()))?;
    let (conn, ldap) = match LdapConnAsync::from_url_with_settings(settings, &url).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %crate::domain::truncate(&e.to_string(), 200), "LDAP TLS connection failed");
            // TCP connected (the egress connect above succeeded): a TLS failure is named for
            // what it is (issue 24); anything else stays one `Unavailable`.
            return Err(match crate::net::tls::tls_failure(&e) {
                Some((kind, detail)) => DirError::Tls(kind, detail),
                None => DirError::Unavailable,
            });
        }
    };
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    Ok(DirSession {
        ldap,
        op_timeout: Duration::from_millis(cfg.op_timeout_ms),
        tls: tls_mode,
    })
}

/// Add `g` unless a semantically equal DN is there already; true when added.
fn add(g: String, seen: &mut HashSet<String>, dns: &mut Vec<String>) -> bool {
    match dn::key(&g) {
        Some(k) if !seen.contains(&k) => {
            seen.insert(k);
            dns.push(g);
            true
        }
        _ => false,
    }
}

fn attr_values(e: &SearchEntry, name: &str) -> Vec<String> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

impl DirSession {
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        sizelimit: i32,
    ) -> Result<(Vec<SearchEntry>, u32), DirError> {
        let r = self
            .ldap
            .with_timeout(self.op_timeout)
            .with_search_options(SearchOptions::new().sizelimit(sizelimit))
            .search(base, scope, filter, attrs.to_vec())
            .await
            .map_err(map_err)?;
        let rc = r.1.rc;
        if rc == 51 || rc == 52 {
            return Err(DirError::Unavailable);
        }
        let entries = r.0.into_iter().map(SearchEntry::construct).collect();
        Ok((entries, rc))
    }

    /// Bind as the service account. An empty stored password is never sent.
    pub async fn service_bind(
        &mut self,
        cfg: &LdapConfig,
        secrets: &Secrets,
    ) -> Result<(), DirError> {
        if secrets.bind_password.is_empty() {
            return Err(DirError::ServiceBind(49));
        }
        let r = self
            .ldap
            .with_timeout(self.op_timeout)
            .simple_bind(&cfg.bind_dn, &secrets.bind_password)
            .await
            .map_err(map_err)?;
        match r.rc {
            0 => Ok(()),
            51 | 52 => Err(DirError::Unavailable),
            rc => Err(DirError::ServiceBind(rc)),
        }
    }

    /// Whether the root DSE advertises Active Directory (so the in-chain rule is evaluated).
    pub async fn supports_in_chain(&mut self) -> Result<bool, DirError> {
        let (entries, rc) = self
            .search(
                "",
                Scope::Base,
                "(objectClass=*)",
                &["supportedCapabilities"],
                1,
            )
            .await?;
        if rc != 0 {
            return Ok(false);
        }
        Ok(entries.iter().any(|e| {
            attr_values(e, "supportedCapabilities")
                .iter()
                .any(|c| AD_CAPABILITIES.contains(&c.as_str()))
        }))
    }

    /// Search the user; exactly one entry is `Found`.
    pub async fn find_user(
        &mut self,
        cfg: &LdapConfig,
        username: &str,
    ) -> Result<Lookup, DirError> {
        let f = filter::render(&cfg.user_filter, &[(filter::USERNAME, username)]);
        let mut attrs = vec![cfg.email_attr.as_str(), cfg.name_attr.as_str()];
        if let Some(m) = &cfg.member_of_attr {
            attrs.push(m.as_str());
        }
        let (mut entries, rc) = self
            .search(&cfg.user_base, Scope::Subtree, &f, &attrs, 2)
            .await?;
        match rc {
            0 => {}
            4 => return Ok(Lookup::Ambiguous),
            // noSuchObject (base missing) and referral (not chased): nothing here.
            10 | 32 => return Ok(Lookup::NotFound),
            rc => return Err(DirError::Protocol(format!("user search result code {rc}"))),
        }
        match entries.len() {
            0 => Ok(Lookup::NotFound),
            1 => {
                let e = entries.remove(0);
                Ok(Lookup::Found(UserEntry {
                    email: attr_values(&e, &cfg.email_attr).into_iter().next(),
                    display_name: attr_values(&e, &cfg.name_attr).into_iter().next(),
                    member_of: cfg
                        .member_of_attr
                        .as_deref()
                        .map(|m| attr_values(&e, m))
                        .unwrap_or_default(),
                    dn: e.dn,
                }))
            }
            _ => Ok(Lookup::Ambiguous),
        }
    }

    /// Bind as the user with the DN as returned. `Ok(false)` for any refusal (wrong password,
    /// disabled account, referral); an empty password returns `Ok(false)` without traffic.
    pub async fn user_bind(&mut self, dn: &str, password: &str) -> Result<bool, DirError> {
        if password.is_empty() || dn.is_empty() {
            return Ok(false);
        }
        let r = self
            .ldap
            .with_timeout(self.op_timeout)
            .simple_bind(dn, password)
            .await
            .map_err(map_err)?;
        match r.rc {
            0 => Ok(true),
            51 | 52 => Err(DirError::Unavailable),
            _ => Ok(false),
        }
    }

    async fn group_search(
        &mut self,
        cfg: &LdapConfig,
        member_dn: &str,
        username: &str,
        truncated: &mut bool,
    ) -> Result<Vec<String>, DirError> {
        let (Some(base), Some(tpl)) = (&cfg.group_base, &cfg.group_filter) else {
            return Ok(Vec::new());
        };
        let f = filter::render(
            tpl,
            &[(filter::DN, member_dn), (filter::USERNAME, username)],
        );
        let (entries, rc) = self
            .search(base, Scope::Subtree, &f, &["1.1"], MAX_GROUPS as i32)
            .await?;
        match rc {
            0 | 10 | 32 => {}
            4 => *truncated = true,
            rc => return Err(DirError::Protocol(format!("group search result code {rc}"))),
        }
        Ok(entries.into_iter().map(|e| e.dn).collect())
    }

    async fn groups_of_group(
        &mut self,
        cfg: &LdapConfig,
        group_dn: &str,
        username: &str,
        truncated: &mut bool,
    ) -> Result<Vec<String>, DirError> {
        let mut out = Vec::new();
        if let Some(attr) = &cfg.member_of_attr {
            let (entries, rc) = self
                .search(
                    group_dn,
                    Scope::Base,
                    "(objectClass=*)",
                    &[attr.as_str()],
                    1,
                )
                .await?;
            if rc == 0 {
                for e in &entries {
                    out.extend(attr_values(e, attr));
                }
            }
        }
        if cfg
            .group_filter
            .as_deref()
            .is_some_and(|f| f.contains("{dn}"))
        {
            out.extend(
                self.group_search(cfg, group_dn, username, truncated)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Resolve the user's groups (see the module doc).
    pub async fn resolve_groups(
        &mut self,
        cfg: &LdapConfig,
        user: &UserEntry,
        username: &str,
    ) -> Result<Groups, DirError> {
        let mut truncated = false;
        let mut seen: HashSet<String> = HashSet::new();
        let mut dns: Vec<String> = Vec::new();
        for g in user.member_of.iter().cloned() {
            add(g, &mut seen, &mut dns);
        }
        let searched = self
            .group_search(cfg, &user.dn, username, &mut truncated)
            .await?;
        for g in searched {
            add(g, &mut seen, &mut dns);
        }
        if !cfg.nested_groups {
            return Ok(Groups {
                dns,
                method: NestedMethod::Off,
                truncated,
            });
        }
        if self.supports_in_chain().await? {
            let attr = cfg.member_of_attr.as_deref().unwrap_or("memberOf");
            for m in &cfg.role_mapping {
                let (entries, rc) = self
                    .search(
                        &user.dn,
                        Scope::Base,
                        &filter::in_chain(attr, &m.group_dn),
                        &["1.1"],
                        1,
                    )
                    .await?;
                if rc == 0 && !entries.is_empty() {
                    add(m.group_dn.clone(), &mut seen, &mut dns);
                }
            }
            return Ok(Groups {
                dns,
                method: NestedMethod::InChain,
                truncated,
            });
        }
        // Breadth-first expansion; `seen` makes cycles terminate.
        let mut frontier: Vec<String> = dns.clone();
        let mut depth = 0u8;
        while !frontier.is_empty() {
            let at_limit = depth >= cfg.nested_max_depth;
            depth = depth.saturating_add(1);
            let mut next = Vec::new();
            'level: for g in frontier {
                for parent in self
                    .groups_of_group(cfg, &g, username, &mut truncated)
                    .await?
                {
                    let new = dn::key(&parent).is_some_and(|k| !seen.contains(&k));
                    if new && (at_limit || dns.len() >= MAX_GROUPS) {
                        // A group exists beyond the bound: report it, do not follow it.
                        truncated = true;
                        break 'level;
                    }
                    if add(parent.clone(), &mut seen, &mut dns) {
                        next.push(parent);
                    }
                }
            }
            if at_limit {
                break;
            }
            frontier = next;
        }
        Ok(Groups {
            dns,
            method: NestedMethod::Recursive,
            truncated,
        })
    }

    /// Say goodbye (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ldap.unbind()).await;
    }
}
