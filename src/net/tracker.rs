//! Transport to a customer's ticket tracker (Jira, GitHub, GitLab, Azure DevOps; issue 20).
//! The protocol of each tracker (paths, bodies, what counts as success) lives in
//! `service::tickets`; this module only carries one request and hands back the raw reply.
//!
//! Same connection discipline as the AI endpoint client ([`super::ai_client`]): the one TLS
//! client configuration ([`super::tls::client_config`]: ring only, TLS 1.2/1.3, the
//! integration's `ca_pem` bundle as the only anchors *and* pins — a pasted self-signed
//! certificate is trusted for its host — else the Mozilla roots; a failed handshake named by its
//! kind, [`TransportError::Tls`]); HTTPS only; no proxy from the environment;
//! redirects never followed (the 3xx comes back as a [`Reply`] and the caller fails it); every
//! address decided by the [`EgressPolicy`] (literal addresses before the request, names inside
//! the one [`EgressResolver`]); one total timeout; replies above [`MAX_REPLY_BYTES`] refused. Credentials are
//! passed as header values marked sensitive.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use reqwest::Url;
use zeroize::Zeroizing;

use super::egress::{literal, DenyKind, EgressDenied, EgressPolicy, EgressResolver};
use super::tls::{client_config, tls_failure, TlsFailure};

/// Largest reply body read (1 MiB).
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// One request to the tracker.
pub struct Request {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Full URL (on the integration's host).
    pub url: Url,
    /// Headers; values flagged `true` are secrets (sent marked sensitive).
    pub headers: Vec<(&'static str, Zeroizing<String>, bool)>,
    /// Body bytes.
    pub body: Option<Vec<u8>>,
}

/// The tracker's raw answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// `Retry-After` in seconds (delta-seconds form only).
    pub retry_after: Option<u64>,
    /// Body (≤ [`MAX_REPLY_BYTES`]).
    pub body: Vec<u8>,
}

/// Why no reply arrived.
#[derive(Debug, Clone)]
pub enum TransportError {
    /// The egress policy refused the host or every address it resolves to.
    Egress(EgressDenied),
    /// No complete reply within the timeout (ms).
    Timeout(u64),
    /// The TLS handshake failed (unknown issuer, expired, name mismatch, CA used as leaf, …):
    /// its kind and a message naming the host.
    Tls(TlsFailure, String),
    /// Connection refused, unreachable, reset, name not resolved, reply too large.
    Connect(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Egress(d) => write!(f, "refused by the egress policy: {d}"),
            TransportError::Timeout(ms) => write!(f, "no answer within {ms} ms"),
            TransportError::Tls(kind, m) => {
                write!(f, "TLS error tls_failed [{}]: {m}", kind.code())
            }
            TransportError::Connect(m) => write!(f, "unreachable: {m}"),
        }
    }
}

/// A client bound to one tracker host.
pub struct TrackerClient {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    host: String,
    port: u16,
    timeout_ms: u64,
    denied: Arc<parking_lot::Mutex<Option<EgressDenied>>>,
}

impl TrackerClient {
    /// A client for `base`'s host under `policy`, trusting `ca_pem` (else the public roots).
    /// `Err` with a reason when the bundle is unusable.
    pub fn new(
        policy: Arc<EgressPolicy>,
        base: &Url,
        ca_pem: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let host = base
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = base.port_or_known_default().unwrap_or(443);
        let tls = client_config(ca_pem, None)?;
        let denied = Arc::new(parking_lot::Mutex::new(None));
        let mut h = HeaderMap::new();
        h.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("flowguard-appliance/", env!("CARGO_PKG_VERSION"))),
        );
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .dns_resolver(Arc::new(EgressResolver::new(
                policy.clone(),
                port,
                denied.clone(),
            )))
            .default_headers(h)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            client,
            policy,
            host,
            port,
            timeout_ms: timeout.as_millis() as u64,
            denied,
        })
    }

    fn classify(&self, e: &reqwest::Error) -> TransportError {
        if let Some(d) = self.denied.lock().take() {
            return match d.kind {
                DenyKind::Unresolved => TransportError::Connect(d.message),
                _ => TransportError::Egress(d),
            };
        }
        if e.is_timeout() {
            return TransportError::Timeout(self.timeout_ms);
        }
        if let Some((kind, detail)) = tls_failure(e) {
            return TransportError::Tls(
                kind,
                format!(
                    "handshake with {}:{} failed: {} ({detail})",
                    self.host,
                    self.port,
                    kind.describe()
                ),
            );
        }
        if e.is_connect() {
            return TransportError::Connect(format!(
                "cannot connect to {}:{}",
                self.host, self.port
            ));
        }
        TransportError::Connect(format!("request to {}:{} failed", self.host, self.port))
    }

    /// Send one request; the reply whatever its status (3xx included, never followed).
    pub async fn send(&self, req: Request) -> Result<Reply, TransportError> {
        if let Some(ip) = literal(&self.host) {
            self.policy
                .check_literal(&self.host, ip, self.port)
                .map_err(TransportError::Egress)?;
        }
        let method = if req.method == "GET" {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let mut headers = HeaderMap::new();
        for (name, value, secret) in &req.headers {
            let n = HeaderName::from_static(name);
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                TransportError::Connect(format!("header {name} is not header-safe"))
            })?;
            v.set_sensitive(*secret);
            headers.insert(n, v);
        }
        let mut rb = self.client.request(method, req.url).headers(headers);
        if let Some(b) = req.body {
            rb = rb.body(b);
        }
        let mut resp = rb.send().await.map_err(|e| self.classify(&e))?;
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type");
        let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if body.len() + c.len() > MAX_REPLY_BYTES {
                        return Err(TransportError::Connect(
                            "the reply is larger than 1 MiB".into(),
                        ));
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(self.classify(&e)),
            }
        }
        Ok(Reply {
            status,
            content_type,
            retry_after,
            body,
        })
    }
}
