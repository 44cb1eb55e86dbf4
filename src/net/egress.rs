//! Egress discipline: the operator's `egress.allow` list decides where the appliance may open a
//! connection at all (the AI endpoint today; LDAP and ticket servers use the same policy). Tenants
//! choose only within it.
//!
//! Entries (config `egress.allow`, strings):
//!
//! | form | example | matches |
//! |---|---|---|
//! | host name | `llm.corp.example` | that name, any port |
//! | host name and port | `llm.corp.example:8443` | that name on that port |
//! | wildcard | `*.corp.example[:port]` | any name *below* `corp.example` (not the apex) |
//! | address or CIDR | `10.20.0.0/16`, `192.0.2.7[:port]` | resolved addresses in the network |
//! | IPv6 | `fd00::/8`, `[fd00::/8]:443`, `[2001:db8::7]:443` | likewise |
//!
//! The deployment's own default AI endpoint (`[ai.endpoint]`) is allowed implicitly.
//!
//! The decision is made twice: on save by name or literal address ([`EgressPolicy::check_host`]),
//! and at connect time on **every resolved address** ([`EgressPolicy::resolve`]), so a name that
//! re-resolves elsewhere (DNS rebinding) cannot reach an address the list does not allow. The
//! caller must connect only to the addresses `resolve` returned. Addresses in
//! [`never_reachable`] ranges — unspecified, link-local (169.254.0.0/16, fe80::/10), cloud
//! metadata (169.254.169.254, fd00:ec2::254, 100.100.100.200), multicast and broadcast,
//! including their IPv4-mapped and NAT64 forms — are refused whatever the list says.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// What one rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Exact host name (lowercase, no trailing dot).
    Name(String),
    /// `*.suffix`: names strictly below `suffix`.
    Below(String),
    /// Addresses in a network.
    Net(IpNet),
}

/// One parsed `egress.allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    target: Target,
    port: Option<u16>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// Neither the name nor any resolved address is covered by `egress.allow`.
    NotListed,
    /// A never-reachable address (see [`never_reachable`]).
    Never,
    /// The name did not resolve (at connect time; on save this counts as not listed).
    Unresolved,
}

/// A refused connection: the host (and port) and why. The message names the host, never a
/// credential.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EgressDenied {
    /// Host as given (name or address).
    pub host: String,
    /// Why.
    pub kind: DenyKind,
    /// Human explanation naming the host.
    pub message: String,
}

/// How long a name may take to resolve.
pub const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl EgressDenied {
    fn not_listed(host: &str, port: u16) -> Self {
        Self {
            host: host.to_string(),
            kind: DenyKind::NotListed,
            message: format!(
                "host `{host}` (port {port}) is not in the deployment's egress.allow list"
            ),
        }
    }
    fn never(host: &str, addr: IpAddr) -> Self {
        let what = if host == addr.to_string() {
            format!("`{host}`")
        } else {
            format!("host `{host}` resolves to {addr}, which")
        };
        Self {
            host: host.to_string(),
            kind: DenyKind::Never,
            message: format!(
                "{what} is an unspecified, link-local, cloud-metadata, multicast or broadcast address and is never reachable"
            ),
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        })
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{p}` is not a port (1-65535)")),
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

impl Rule {
    /// Parse one entry (see the module table). Errors name what is wrong.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let e = entry.trim();
        if e.is_empty() {
            return Err("empty entry".into());
        }
        // [v6 or v6/len]:port
        if let Some(rest) = e.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{e}`: missing `]`"))?;
            let net = parse_net(inner)
                .ok_or_else(|| format!("`{inner}` is not an IP address or CIDR"))?;
            let port = match after {
                "" => None,
                p => {
                    Some(parse_port(p.strip_prefix(':').ok_or_else(|| {
                        format!("`{e}`: expected `:port` after `]`")
                    })?)?)
                }
            };
            return Ok(Rule {
                target: Target::Net(net),
                port,
            });
        }
        // Bare IPv6 address or network (two or more colons): no port.
        if e.matches(':').count() >= 2 {
            let net =
                parse_net(e).ok_or_else(|| format!("`{e}` is not an IPv6 address or CIDR"))?;
            return Ok(Rule {
                target: Target::Net(net),
                port: None,
            });
        }
        let (host, port) = match e.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (e, None),
        };
        if let Some(net) = parse_net(host) {
            return Ok(Rule {
                target: Target::Net(net),
                port,
            });
        }
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(suffix) = lower.strip_prefix("*.") {
            if !valid_name(suffix) || !suffix.contains('.') {
                return Err(format!(
                    "`{host}`: a wildcard needs a domain with at least two labels"
                ));
            }
            return Ok(Rule {
                target: Target::Below(suffix.to_string()),
                port,
            });
        }
        if lower.contains('/') || !valid_name(&lower) {
            return Err(format!(
                "`{host}` is neither a host name, a wildcard `*.domain`, an address nor a CIDR"
            ));
        }
        Ok(Rule {
            target: Target::Name(lower),
            port,
        })
    }

    fn port_ok(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    fn name_ok(&self, name: &str, port: u16) -> bool {
        self.port_ok(port)
            && match &self.target {
                Target::Name(n) => n == name,
                Target::Below(s) => name
                    .strip_suffix(s.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                Target::Net(_) => false,
            }
    }

    fn addr_ok(&self, addr: IpAddr, port: u16) -> bool {
        self.port_ok(port) && matches!(&self.target, Target::Net(n) if n.contains(&canonical(addr)))
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses as the IPv4 address
/// they reach; everything else unchanged.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Whether `addr` is in a range that is never reachable, whatever `egress.allow` says:
/// 0.0.0.0/8 and `::` (unspecified), 169.254.0.0/16 and fe80::/10 (link-local, incl. the
/// 169.254.169.254 metadata service of AWS, GCP, Azure and OCI), fd00:ec2::254 (AWS IMDS over
/// IPv6), 100.100.100.200 (Alibaba Cloud metadata), 224.0.0.0/4 and ff00::/8 (multicast),
/// 255.255.255.255 (broadcast) — also when written as IPv4-mapped or NAT64 IPv6.
pub fn never_reachable(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 0
                || (o[0] == 169 && o[1] == 254)
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_multicast()
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// The parsed allow list of one deployment (plus the implicit default AI endpoint).
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    rules: Vec<Rule>,
}

impl EgressPolicy {
    /// Parse the configured entries; `implicit` are `(host, port)` pairs allowed in addition (the
    /// deployment default AI endpoint). Errors name the entry index and the problem.
    pub fn new(allow: &[String], implicit: &[(String, u16)]) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(allow.len() + implicit.len());
        for (i, e) in allow.iter().enumerate() {
            rules.push(Rule::parse(e).map_err(|m| format!("egress.allow[{i}]: {m}"))?);
        }
        for (host, port) in implicit {
            let target = match parse_net(host.trim_matches(['[', ']'])) {
                Some(n) => Target::Net(n),
                None => Target::Name(host.trim_end_matches('.').to_ascii_lowercase()),
            };
            rules.push(Rule {
                target,
                port: Some(*port),
            });
        }
        Ok(Self { rules })
    }

    /// Save-time check of a host (name or literal address) and port. A literal address must be
    /// reachable and covered by an address rule; a name must be covered by a name rule, or else
    /// every address it resolves to now must be covered by an address rule (see [`Self::resolve`]).
    pub async fn check_host(&self, host: &str, port: u16) -> Result<(), EgressDenied> {
        if let Some(ip) = literal(host) {
            return self.check_literal(host, ip, port);
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if self.rules.iter().any(|r| r.name_ok(&name, port)) {
            return Ok(());
        }
        if !self
            .rules
            .iter()
            .any(|r| matches!(r.target, Target::Net(_)) && r.port_ok(port))
        {
            return Err(EgressDenied::not_listed(host, port));
        }
        match self.resolve(host, port).await {
            Ok(_) => Ok(()),
            Err(d) if d.kind == DenyKind::Unresolved => Err(EgressDenied::not_listed(host, port)),
            Err(d) => Err(d),
        }
    }

    /// Check a literal address (no resolution involved).
    pub fn check_literal(&self, host: &str, ip: IpAddr, port: u16) -> Result<(), EgressDenied> {
        if never_reachable(ip) {
            return Err(EgressDenied::never(host, ip));
        }
        if self.rules.iter().any(|r| r.addr_ok(ip, port)) {
            Ok(())
        } else {
            Err(EgressDenied::not_listed(host, port))
        }
    }

    /// Decide on already-resolved addresses of `host`: refused if any is never reachable;
    /// otherwise the addresses allowed (by a matching name rule, or an address rule containing
    /// them). Empty result → refused.
    pub fn filter(
        &self,
        host: &str,
        port: u16,
        addrs: &[IpAddr],
    ) -> Result<Vec<SocketAddr>, EgressDenied> {
        if let Some(bad) = addrs.iter().find(|a| never_reachable(**a)) {
            return Err(EgressDenied::never(host, *bad));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let by_name = literal(host).is_none() && self.rules.iter().any(|r| r.name_ok(&name, port));
        let out: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| by_name || self.rules.iter().any(|r| r.addr_ok(**a, port)))
            .map(|a| SocketAddr::new(*a, port))
            .collect();
        if out.is_empty() {
            Err(EgressDenied::not_listed(host, port))
        } else {
            Ok(out)
        }
    }

    /// Connect-time decision: resolve `host` (the system resolver), then [`Self::filter`]. The
    /// caller connects only to the returned addresses. An IP literal is not resolved at all;
    /// `localhost` and names below it are the loopback addresses (127.0.0.1, then ::1) without
    /// asking the system resolver (RFC 6761 §6.3), which would send them to DNS when
    /// `/etc/hosts` does not list them.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressDenied> {
        if let Some(ip) = literal(host) {
            self.check_literal(host, ip, port)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if is_localhost(host) {
            let loopback = [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            return self.filter(host, port, &loopback);
        }
        let addrs: Vec<IpAddr> = match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((host, port)),
        )
        .await
        {
            Ok(Ok(it)) => it.map(|s| s.ip()).collect(),
            _ => Vec::new(),
        };
        if addrs.is_empty() {
            return Err(EgressDenied {
                host: host.to_string(),
                kind: DenyKind::Unresolved,
                message: format!("host `{host}` does not resolve"),
            });
        }
        self.filter(host, port, &addrs)
    }
}

/// Connect failures, kept coarse on purpose: callers answer every variant the same way.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The policy refuses the host or every address it resolves to.
    #[error(transparent)]
    Denied(#[from] EgressDenied),
    /// Name resolution failed, no address answered, or the timeout passed.
    #[error("could not connect")]
    Unreachable,
}

impl EgressPolicy {
    /// Save-time check of a tenant-chosen `host:port` within `timeout` (see
    /// [`Self::check_host`]); used by the LDAP configuration.
    pub async fn check_target(
        &self,
        host: &str,
        port: u16,
        timeout: std::time::Duration,
    ) -> Result<(), EgressDenied> {
        match tokio::time::timeout(timeout, self.check_host(host, port)).await {
            Ok(r) => r,
            Err(_) => Err(EgressDenied::not_listed(host, port)),
        }
    }

    /// Resolve `host` through the policy ([`Self::resolve`]) and connect to the first allowed
    /// address that answers, all within `timeout`. The stream is connected to an address that
    /// was checked — no second resolution happens (no DNS-rebinding bypass).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: std::time::Duration,
    ) -> Result<tokio::net::TcpStream, ConnectError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let work = async {
            let addrs = match self.resolve(host, port).await {
                Ok(a) => a,
                Err(d) if d.kind == DenyKind::Unresolved => return Err(ConnectError::Unreachable),
                Err(d) => return Err(ConnectError::Denied(d)),
            };
            for a in addrs {
                if let Ok(s) = tokio::net::TcpStream::connect(a).await {
                    return Ok(s);
                }
            }
            Err(ConnectError::Unreachable)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ConnectError::Unreachable)?
    }
}

/// `host` as a literal address (`192.0.2.1`, `::1`, `[::1]`), if it is one.
pub fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether `host` is `localhost` or a name below it (RFC 6761 §6.3), in any case, with or
/// without the final dot.
fn is_localhost(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// The one egress-checked name resolver of every outbound HTTP client (the AI endpoint, ticket
/// trackers, OpenID Connect): reqwest asks it for every name, it asks the policy, and the client
/// connects only to the addresses returned.
pub struct EgressResolver {
    policy: Arc<EgressPolicy>,
    port: u16,
    /// The refusal, kept so the caller can report it whatever error chain the client builds.
    denied: Arc<parking_lot::Mutex<Option<EgressDenied>>>,
}

impl EgressResolver {
    /// A resolver for connections to `port`; a refusal is also kept in `denied`.
    pub fn new(
        policy: Arc<EgressPolicy>,
        port: u16,
        denied: Arc<parking_lot::Mutex<Option<EgressDenied>>>,
    ) -> Self {
        Self {
            policy,
            port,
            denied,
        }
    }
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, port, host) = (self.policy.clone(), self.port, name.as_str().to_string());
        let denied = self.denied.clone();
        Box::pin(async move {
            match policy.resolve(&host, port).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(d) => {
                    *denied.lock() = Some(d.clone());
                    Err(Box::new(d) as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        for (e, ok) in [
            ("llm.corp.example", true),
            ("LLM.corp.example.:8443", true),
            ("*.corp.example", true),
            ("*.example", false),
            ("10.0.0.0/8", true),
            ("10.0.0.0/8:443", true),
            ("192.0.2.7:443", true),
            ("[fd00::/8]:443", true),
            ("fd00::/8", true),
            ("[2001:db8::7]:443", true),
            ("host:0", false),
            ("host:99999", false),
            ("bad host", false),
            ("", false),
            ("http://x", false),
        ] {
            assert_eq!(Rule::parse(e).is_ok(), ok, "{e}");
        }
    }

    #[test]
    fn never_reachable_ranges_win_over_any_rule() {
        let p = EgressPolicy::new(&["0.0.0.0/0".into(), "::/0".into()], &[]).unwrap();
        for a in [
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "fe80::1",
            "fd00:ec2::254",
            "::",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "100.100.100.200",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(
                p.check_literal(a, ip(a), 80).is_err(),
                "{a} must never be reachable"
            );
        }
        assert!(p.check_literal("10.1.1.1", ip("10.1.1.1"), 80).is_ok());
    }

    #[tokio::test]
    async fn localhost_names_are_loopback_without_asking_the_system_resolver() {
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let p =
            EgressPolicy::new(&["localhost:389".into(), "ldap.localhost:636".into()], &[]).unwrap();
        assert_eq!(
            p.resolve("localhost", 389).await.unwrap(),
            vec![sa("127.0.0.1:389"), sa("[::1]:389")]
        );
        // Not in /etc/hosts: the system resolver would have asked DNS (and found nothing).
        assert_eq!(
            p.resolve("LDAP.localhost.", 636).await.unwrap(),
            vec![sa("127.0.0.1:636"), sa("[::1]:636")]
        );
        assert!(p.resolve("localhost", 390).await.is_err());
        assert!(!is_localhost("localhost.example") && !is_localhost("notlocalhost"));
        // Address rules still decide which loopback address may be used.
        let q = EgressPolicy::new(&["127.0.0.1:389".into()], &[]).unwrap();
        assert_eq!(
            q.resolve("localhost", 389).await.unwrap(),
            vec![sa("127.0.0.1:389")]
        );
    }

    #[test]
    fn resolved_addresses_decide() {
        let p = EgressPolicy::new(
            &[
                "llm.corp.example:443".into(),
                "10.20.0.0/16".into(),
                "*.gw.example".into(),
            ],
            &[("default.example".into(), 8443)],
        )
        .unwrap();
        // Allowed by name: any reachable address, but only on the listed port.
        assert!(p
            .filter("llm.corp.example", 443, &[ip("192.0.2.1")])
            .is_ok());
        assert!(p
            .filter("llm.corp.example", 80, &[ip("192.0.2.1")])
            .is_err());
        // A rebinding answer pointing at metadata is refused even for a listed name.
        let e = p
            .filter(
                "llm.corp.example",
                443,
                &[ip("192.0.2.1"), ip("169.254.169.254")],
            )
            .unwrap_err();
        assert!(e.message.contains("169.254.169.254"), "{}", e.message);
        // Not listed by name: only addresses inside a CIDR rule are kept.
        let ok = p
            .filter("other.example", 443, &[ip("10.20.1.1"), ip("10.99.1.1")])
            .unwrap();
        assert_eq!(ok, vec!["10.20.1.1:443".parse().unwrap()]);
        assert!(p.filter("other.example", 443, &[ip("10.99.1.1")]).is_err());
        // Wildcards match below the domain only; the implicit default endpoint is allowed.
        assert!(p.filter("a.gw.example", 1, &[ip("192.0.2.9")]).is_ok());
        assert!(p.filter("gw.example", 1, &[ip("192.0.2.9")]).is_err());
        assert!(p.filter("xgw.example", 1, &[ip("192.0.2.9")]).is_err());
        assert!(p
            .filter("default.example", 8443, &[ip("192.0.2.9")])
            .is_ok());
        assert!(p
            .filter("default.example", 443, &[ip("192.0.2.9")])
            .is_err());
    }
}
