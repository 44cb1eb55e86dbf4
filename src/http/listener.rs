//! The listening socket and what a connection may hold before it is authenticated (issue 24,
//! "pre-auth connection exhaustion").
//!
//! Every accepted TCP connection passes the [`Gate`] **before** its TLS handshake starts. The
//! gate counts open connections per client address (an IPv4 address, or an IPv6 /64 — one host
//! usually owns a whole /64) and in total, and closes a connection at once when it would exceed
//! `connections.max_per_client` or `connections.max_total`, counting it in
//! `flowguard_connections_refused_total{reason="per_client"|"total"}`. A connection holds its
//! slot until it closes. A connection that does not finish its TLS handshake within
//! `connections.tls_handshake_timeout_ms` is closed by the TLS acceptor.
//!
//! Why this is enough: the TLS acceptor runs at most 256 handshakes at once per worker and stops
//! accepting while they are all busy. Without the gate a few thousand sockets that never send a
//! ClientHello, kept topped up from one address, hold every handshake slot and every other
//! client waits in the kernel's accept queue (seen: `/healthz` 18 s). With the gate, one address
//! holds at most `max_per_client` (default 128) of them; the rest of its sockets are closed as
//! fast as they are accepted, and other addresses keep being served.
//!
//! The server itself is an actix-server built here (the same HTTP service, keep-alive and
//! timeouts `actix_web::HttpServer` builds, ALPN h2/http1.1), because `HttpServer` offers no hook
//! between `accept` and the TLS handshake, nor between TLS and the HTTP codec — where
//! [`ProblemIo`] turns the codec's bare error answers into problem+json.
//!
//! Between the gate and the TLS acceptor, [`PlainHttpProbe`] peeks at the first bytes of the
//! connection: a browser or `curl` speaking plain `http://` to the HTTPS port gets a short
//! `400` in plain text naming the `https://` address instead of an empty reply. The peek, the
//! read of that request and the TLS handshake share ONE deadline,
//! `connections.tls_handshake_timeout_ms` from when the connection was admitted, so the probe
//! gives a silent or slow client no extra time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, Protocol};
use actix_rt::net::TcpStream;
use actix_service::{Service, ServiceFactory, ServiceFactoryExt};
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_tls::accept::TlsError;
use actix_web::dev::AppConfig;
use futures_util::future::LocalBoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::ConnectionSettings;
use crate::http::wire_errors::ProblemIo;
use crate::metrics::Metrics;
use crate::service::AppState;

/// Why a connection was refused (the `reason` label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its client address already holds `max_per_client` connections.
    PerClient,
    /// The server already holds `max_total` connections.
    Total,
}

impl Refused {
    /// Label value: `per_client` or `total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::PerClient => "per_client",
            Refused::Total => "total",
        }
    }
}

/// The key a connection is counted under: the IPv4 address (IPv4-mapped IPv6 included), or the
/// /64 prefix of an IPv6 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Open-connection counters shared by every worker.
pub struct ConnLimits {
    max_per_client: usize,
    max_total: usize,
    counts: Mutex<Counts>,
    metrics: Option<Metrics>,
}

/// A connection's slot; released when dropped (the connection closed).
pub struct Slot {
    limits: Arc<ConnLimits>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .limits
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_client.remove(&self.key);
            }
        }
        if let Some(m) = &self.limits.metrics {
            m.connections_open.set(c.total as i64);
        }
    }
}

impl ConnLimits {
    /// Limits from config; refusals and the open count go to `metrics` when given.
    pub fn new(s: &ConnectionSettings, metrics: Option<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            max_per_client: s.max_per_client,
            max_total: s.max_total,
            counts: Mutex::new(Counts::default()),
            metrics,
        })
    }

    /// Take a slot for a connection from `ip`, or say why not (and count the refusal).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = client_key(ip);
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refused = if c.total >= self.max_total {
            Some(Refused::Total)
        } else if c.per_client.get(&key).copied().unwrap_or(0) >= self.max_per_client {
            Some(Refused::PerClient)
        } else {
            None
        };
        if let Some(r) = refused {
            if let Some(m) = &self.metrics {
                m.connections_refused.with_label_values(&[r.as_str()]).inc();
            }
            return Err(r);
        }
        c.total += 1;
        *c.per_client.entry(key).or_insert(0) += 1;
        if let Some(m) = &self.metrics {
            m.connections_open.set(c.total as i64);
        }
        Ok(Slot {
            limits: self.clone(),
            key,
        })
    }

    /// Connections open now (all addresses).
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .total
    }
}

/// The per-connection service in front of TLS/HTTP: admit or close.
pub struct Gate<S> {
    inner: S,
    limits: Arc<ConnLimits>,
}

impl<S> Service<TcpStream> for Gate<S>
where
    S: Service<TcpStream, Response = ()>,
    S::Future: 'static,
    S::Error: 'static,
{
    type Response = ();
    type Error = S::Error;
    type Future = LocalBoxFuture<'static, Result<(), S::Error>>;

    actix_service::forward_ready!(inner);

    fn call(&self, io: TcpStream) -> Self::Future {
        let slot = io.peer_addr().ok().map(|a| self.limits.admit(a.ip()));
        match slot {
            Some(Ok(slot)) => {
                let fut = self.inner.call(io);
                Box::pin(async move {
                    let r = fut.await;
                    drop(slot);
                    r
                })
            }
            // Refused (or no peer address): close now, before any TLS work.
            _ => {
                drop(io);
                Box::pin(async { Ok(()) })
            }
        }
    }
}

/// Factory of [`Gate`]s around the factory of the TLS/HTTP service.
pub struct GateFactory<F> {
    inner: F,
    limits: Arc<ConnLimits>,
}

impl<F> ServiceFactory<TcpStream> for GateFactory<F>
where
    F: ServiceFactory<TcpStream, Config = (), Response = ()>,
    F::Future: 'static,
    F::Service: 'static,
    <F::Service as Service<TcpStream>>::Future: 'static,
    F::Error: 'static,
{
    type Response = ();
    type Error = F::Error;
    type Config = ();
    type Service = Gate<F::Service>;
    type InitError = F::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, Self::InitError>>;

    fn new_service(&self, cfg: ()) -> Self::Future {
        let fut = self.inner.new_service(cfg);
        let limits = self.limits.clone();
        Box::pin(async move {
            Ok(Gate {
                inner: fut.await?,
                limits,
            })
        })
    }
}

/// What the first bytes a client sends on the TLS port look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS handshake record (content type 22, RFC 8446 §5.1).
    Tls,
    /// An HTTP/1.x request line: a method token of upper-case letters (RFC 9110 §9.1) followed
    /// by a space — `GET / HTTP/1.1` sent to `http://` on the HTTPS port.
    PlainHttp,
    /// Anything else (left to the TLS acceptor, which refuses it).
    Other,
}

/// Classify the first bytes of a connection (as many as have arrived; at least one).
pub fn classify(first: &[u8]) -> FirstBytes {
    match first.first() {
        Some(0x16) => FirstBytes::Tls,
        Some(b) if b.is_ascii_uppercase() => {
            let token = match first.iter().position(|&c| c == b' ') {
                Some(end) => &first[..end],
                None => first,
            };
            if token.len() <= 16 && token.iter().all(u8::is_ascii_uppercase) {
                FirstBytes::PlainHttp
            } else {
                FirstBytes::Other
            }
        }
        _ => FirstBytes::Other,
    }
}

/// The answer to a plain-HTTP request on the TLS port: `400` in plain text naming `https_base`
/// (the configured `public_url` when it is `https://`, else `https://` + the local address the
/// client connected to — never the client's `Host` header, which is not reflected).
pub fn plain_http_answer(https_base: &str) -> String {
    let body = format!("This port speaks HTTPS only. Use {https_base}/ instead of http://.\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    )
}

/// Bytes of a plain-HTTP request head read (and discarded) before answering it, so closing the
/// socket does not reset the connection under the answer.
const PLAIN_HTTP_HEAD_MAX: usize = 8 * 1024;

/// Read the request head (up to `\r\n\r\n` or [`PLAIN_HTTP_HEAD_MAX`] bytes), answer with
/// [`plain_http_answer`] and close; everything before `deadline`, else just close.
async fn answer_plain_http(
    mut io: TcpStream,
    deadline: tokio::time::Instant,
    public_https: Option<Rc<str>>,
) {
    let base = match public_https {
        Some(u) => u.to_string(),
        None => match io.local_addr() {
            Ok(a) => format!("https://{a}"),
            Err(_) => return,
        },
    };
    let exchange = async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while head.len() < PLAIN_HTTP_HEAD_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        io.write_all(plain_http_answer(&base).as_bytes()).await?;
        io.shutdown().await
    };
    // Timed out or failed: the connection is closed either way (dropped).
    let _ = tokio::time::timeout_at(deadline, exchange).await;
}

/// Peeks at a connection before the TLS acceptor `inner` (see the module docs): plain HTTP is
/// answered by [`answer_plain_http`] and closed; the peek and the handshake share one deadline.
pub struct PlainHttpProbe<S> {
    inner: Rc<S>,
    timeout: Duration,
    public_https: Option<Rc<str>>,
}

impl<S> Service<TcpStream> for PlainHttpProbe<S>
where
    S: Service<TcpStream, Error = TlsError<std::io::Error, Infallible>> + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LocalBoxFuture<'static, Result<S::Response, S::Error>>;

    actix_service::forward_ready!(inner);

    fn call(&self, io: TcpStream) -> Self::Future {
        let inner = self.inner.clone();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let public_https = self.public_https.clone();
        Box::pin(async move {
            let mut first = [0u8; 16];
            let n = match tokio::time::timeout_at(deadline, io.peek(&mut first)).await {
                Err(_) => return Err(TlsError::Timeout),
                Ok(Err(e)) => return Err(TlsError::Tls(e)),
                Ok(Ok(n)) => n,
            };
            if n > 0 && classify(&first[..n]) == FirstBytes::PlainHttp {
                answer_plain_http(io, deadline, public_https).await;
                return Err(TlsError::Tls(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "plain HTTP on the HTTPS port",
                )));
            }
            match tokio::time::timeout_at(deadline, inner.call(io)).await {
                Ok(r) => r,
                Err(_) => Err(TlsError::Timeout),
            }
        })
    }
}

/// Factory of [`PlainHttpProbe`]s around the TLS acceptor's factory.
pub struct PlainHttpProbeFactory<F> {
    inner: F,
    timeout: Duration,
    public_https: Option<Rc<str>>,
}

impl<F> ServiceFactory<TcpStream> for PlainHttpProbeFactory<F>
where
    F: ServiceFactory<TcpStream, Config = (), Error = TlsError<std::io::Error, Infallible>>,
    F::Future: 'static,
    F::Service: 'static,
{
    type Response = F::Response;
    type Error = F::Error;
    type Config = ();
    type Service = PlainHttpProbe<F::Service>;
    type InitError = F::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, Self::InitError>>;

    fn new_service(&self, cfg: ()) -> Self::Future {
        let fut = self.inner.new_service(cfg);
        let timeout = self.timeout;
        let public_https = self.public_https.clone();
        Box::pin(async move {
            Ok(PlainHttpProbe {
                inner: Rc::new(fut.await?),
                timeout,
                public_https,
            })
        })
    }
}

/// Seconds in-flight requests get to finish after SIGTERM/SIGINT before every connection,
/// idle keep-alive and HTTP/2 ones included, is closed (the process stops within ~5 s).
pub const SHUTDOWN_GRACE_SECS: u64 = 3;

/// Bind the application on `listener` (TLS with `tls`, plain HTTP without) behind the
/// connection [`Gate`]; on SIGTERM/SIGINT in-flight requests get [`SHUTDOWN_GRACE_SECS`], then
/// every connection is closed.
pub fn server(
    state: actix_web::web::Data<AppState>,
    listener: std::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<actix_server::Server> {
    let s = &state.settings.connections;
    let limits = ConnLimits::new(s, Some(state.metrics.clone()));
    let handshake = Duration::from_millis(s.tls_handshake_timeout_ms);
    let local: SocketAddr = listener.local_addr()?;
    let secure = tls.is_some();
    // `public_url` names the plain-HTTP answer's address only when it is an https:// URL.
    let public_https: Option<String> = state
        .settings
        .public_url
        .clone()
        .filter(|u| u.starts_with("https://"));
    // One HTTP service per worker, configured as `HttpServer` configures it (a macro: the TLS
    // and plain-TCP services differ in their stream type).
    macro_rules! http {
        ($state:expr) => {{
            let host = local.to_string();
            let app = actix_service::map_config(crate::http::create_app($state), move |()| {
                // The only public constructor of the per-app config `HttpServer` passes.
                AppConfig::__priv_test_new(secure, host.clone(), local)
            });
            HttpService::build()
                .keep_alive(Duration::from_secs(5))
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .finish(app)
        }};
    }
    let builder = actix_server::Server::build().shutdown_timeout(SHUTDOWN_GRACE_SECS);
    let builder = match tls {
        Some(cfg) => builder.listen("flowguard", listener, move || {
            let mut acceptor = Acceptor::new(cfg.clone());
            acceptor.set_handshake_timeout(handshake);
            let probe = PlainHttpProbeFactory {
                inner: acceptor,
                timeout: handshake,
                public_https: public_https.as_deref().map(Rc::from),
            };
            let inner = probe
                .map_init_err(|_| ())
                .map_err(TlsError::into_service_error)
                .and_then(|io: TlsStream<TcpStream>| async move {
                    let h2 = io.get_ref().1.alpn_protocol().is_some_and(|p| p == b"h2");
                    let proto = if h2 { Protocol::Http2 } else { Protocol::Http1 };
                    let peer = io.get_ref().0.peer_addr().ok();
                    let io = if h2 {
                        ProblemIo::passthrough(io)
                    } else {
                        ProblemIo::http1(io)
                    };
                    Ok((io, proto, peer))
                })
                .and_then(http!(state.clone()).map_err(TlsError::Service));
            GateFactory {
                inner,
                limits: limits.clone(),
            }
        })?,
        None => builder.listen("flowguard", listener, move || {
            let inner = actix_service::fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((ProblemIo::http1(io), Protocol::Http1, peer))
            })
            .and_then(http!(state.clone()));
            GateFactory {
                inner,
                limits: limits.clone(),
            }
        })?,
    };
    Ok(builder.run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_plain_http() {
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), FirstBytes::Tls);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), FirstBytes::PlainHttp);
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), FirstBytes::PlainHttp);
        assert_eq!(
            classify(b"G"),
            FirstBytes::PlainHttp,
            "a first segment of one byte"
        );
        assert_eq!(classify(b"Get / HTTP/1.1"), FirstBytes::Other);
        assert_eq!(
            classify(b"\x80\x2e\x01"),
            FirstBytes::Other,
            "SSLv2-style hello"
        );
        assert_eq!(
            classify(b"PRI * HTTP/2.0"),
            FirstBytes::PlainHttp,
            "h2c preface"
        );
    }

    #[test]
    fn plain_http_answer_is_a_complete_400() {
        let a = plain_http_answer("https://127.0.0.1:8443");
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.contains("Connection: close"));
        assert!(body.contains("https://127.0.0.1:8443/"));
    }

    fn limits(per_client: usize, total: usize) -> Arc<ConnLimits> {
        ConnLimits::new(
            &ConnectionSettings {
                max_per_client: per_client,
                max_total: total,
                ..ConnectionSettings::default()
            },
            None,
        )
    }

    #[test]
    fn per_client_cap_refuses_only_that_client_and_frees_on_close() {
        let l = limits(3, 100);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| l.admit(a).unwrap()).collect();
        assert_eq!(l.admit(a).err(), Some(Refused::PerClient));
        assert!(l.admit(b).is_ok(), "another address is not affected");
        drop(held);
        assert_eq!(l.open(), 0);
        assert!(l.admit(a).is_ok(), "slots come back when connections close");
    }

    #[test]
    fn total_cap_refuses_everybody() {
        let l = limits(10, 4);
        let _held: Vec<_> = (1..=4)
            .map(|i| l.admit(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(
            l.admit("10.0.0.9".parse().unwrap()).err(),
            Some(Refused::Total)
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = limits(2, 100);
        let _x = l.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _y = l.admit("2001:db8:1:2:ffff::9".parse().unwrap()).unwrap();
        assert_eq!(
            l.admit("2001:db8:1:2:abcd::1".parse().unwrap()).err(),
            Some(Refused::PerClient),
            "one /64 is one client"
        );
        assert!(l.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
