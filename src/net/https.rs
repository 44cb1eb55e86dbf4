//! Small HTTPS requests to a customer system under the egress policy (used by OpenID Connect:
//! discovery, JWKS, token endpoint). Same discipline as [`super::ai_client`]: the one TLS client
//! configuration ([`super::tls::client_config`]: ring only, `ca_pem` anchors and pins, else the
//! Mozilla roots; failures named by kind, [`FetchError::Tls`]), HTTPS only, no proxy from the
//! environment, no redirects, every address decided by the [`EgressPolicy`] (literal addresses
//! before the request, names inside the one [`EgressResolver`]), one total timeout, replies
//! capped at [`MAX_REPLY_BYTES`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, USER_AGENT};
use reqwest::Url;

use super::egress::{literal, DenyKind, EgressDenied, EgressPolicy, EgressResolver};
use super::tls::{client_config, tls_failure, TlsFailure};

/// Largest reply body read (1 MiB).
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The egress policy refused the host.
    #[error(transparent)]
    Egress(EgressDenied),
    /// The TLS handshake failed (after TCP connected): its kind and a message naming the host.
    #[error("{1}")]
    Tls(TlsFailure, String),
    /// Connect, timeout or an unreadable reply; the message names the host, never a secret.
    #[error("{0}")]
    Transport(String),
}

/// A reply: status and body (at most [`MAX_REPLY_BYTES`]).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// What to send.
pub enum Body<'a> {
    /// A GET.
    None,
    /// A POST of `application/x-www-form-urlencoded` pairs with HTTP Basic client
    /// authentication (RFC 6749 §2.3.1: both parts form-urlencoded first).
    FormBasic {
        /// Form pairs.
        form: &'a [(&'a str, &'a str)],
        /// `client_id`.
        user: &'a str,
        /// `client_secret` (sent only in the marked-sensitive `Authorization` header).
        password: &'a str,
    },
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Send one request to `url` (must be `https://`) and read the reply (any status).
pub async fn request(
    policy: Arc<EgressPolicy>,
    url: &str,
    ca_pem: Option<&str>,
    timeout: Duration,
    body: Body<'_>,
) -> Result<Reply, FetchError> {
    let u = Url::parse(url).map_err(|_| FetchError::Transport(format!("`{url}` is not a URL")))?;
    if u.scheme() != "https" {
        return Err(FetchError::Transport(format!("`{url}` is not https")));
    }
    let host = u.host_str().unwrap_or_default().to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    if let Some(ip) = literal(&host) {
        policy
            .check_literal(&host, ip, port)
            .map_err(FetchError::Egress)?;
    }
    let denied = Arc::new(parking_lot::Mutex::new(None));
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(ca_pem, None).map_err(FetchError::Transport)?)
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
        .build()
        .map_err(|e| FetchError::Transport(format!("HTTP client: {e}")))?;
    let mut req = match body {
        Body::None => client.get(u),
        Body::FormBasic {
            form,
            user,
            password,
        } => {
            let pairs: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter())
                .finish();
            let cred =
                zeroize::Zeroizing::new(format!("{}:{}", form_encode(user), form_encode(password)));
            use base64::Engine;
            let b64 = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(cred.as_bytes()),
            );
            let mut auth =
                HeaderValue::from_str(&format!("Basic {}", b64.as_str())).map_err(|_| {
                    FetchError::Transport("client credentials are not header-safe".into())
                })?;
            auth.set_sensitive(true);
            client
                .post(u)
                .header(reqwest::header::AUTHORIZATION, auth)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(pairs)
        }
    };
    req = req.header(ACCEPT, "application/json").header(
        USER_AGENT,
        concat!("flowguard-appliance/", env!("CARGO_PKG_VERSION")),
    );
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let denied = denied.lock().take();
            let tls = tls_failure(&e);
            return Err(match (denied, tls) {
                (Some(d), _) if d.kind == DenyKind::Unresolved => FetchError::Transport(d.message),
                (Some(d), _) => FetchError::Egress(d),
                (None, _) if e.is_timeout() => {
                    FetchError::Transport(format!("{host}:{port} did not answer in time"))
                }
                (None, Some((kind, detail))) => FetchError::Tls(
                    kind,
                    format!(
                        "TLS handshake with {host}:{port} failed [{}]: {} ({detail})",
                        kind.code(),
                        kind.describe()
                    ),
                ),
                (None, None) if e.is_connect() => {
                    FetchError::Transport(format!("cannot connect to {host}:{port} over TLS"))
                }
                (None, None) => FetchError::Transport(format!("request to {host}:{port} failed")),
            });
        }
    };
    let status = resp.status().as_u16();
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > MAX_REPLY_BYTES {
                    return Err(FetchError::Transport(format!(
                        "the reply of {host}:{port} is larger than 1 MiB"
                    )));
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(_) => {
                return Err(FetchError::Transport(format!(
                    "the reply of {host}:{port} was cut short"
                )))
            }
        }
    }
    Ok(Reply { status, body: buf })
}
