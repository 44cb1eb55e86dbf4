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

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
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
            let inner = acceptor
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
