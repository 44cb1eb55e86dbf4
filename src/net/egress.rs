//! Outbound connections under the operator's egress list (DESIGN.md "AI endpoint": "where the
//! appliance may connect at all … is the operator's decision").
//!
//! `egress.allow` in the config file lists what tenants may point the appliance at. Entries:
//!
//! | entry | means |
//! |---|---|
//! | `dc1.corp.example` | that host name, any port |
//! | `dc1.corp.example:636` | that host name, port 636 only |
//! | `*.corp.example` | any name below `corp.example` (not `corp.example` itself) |
//! | `10.20.0.0/16`, `10.20.0.0/16:636` | any address in the network (optionally one port) |
//! | `10.20.1.5`, `10.20.1.5:389` | one address |
//! | `[fd00::/8]:636`, `fd00::/8`, `::1` | IPv6, brackets needed only with a port |
//!
//! An empty list (the default) allows nothing. Whatever the list says, link-local and cloud
//! metadata addresses (`169.254.0.0/16`, `fe80::/10`, `fd00:ec2::254`), unspecified,
//! broadcast and multicast addresses are never reached ([`always_denied`]).
//!
//! The check is made twice: when a tenant saves a target ([`EgressPolicy::check_target`]) and
//! at connect time on the **resolved** addresses ([`EgressPolicy::connect`]), which connects to
//! exactly the address it checked — a DNS answer that changes between the two (DNS rebinding)
//! cannot reach an address the list does not allow. A host-name entry trusts the operator's
//! DNS for that name (its addresses still pass [`always_denied`]); a tenant-chosen name not on
//! the list is allowed only when every address it resolves to lies in an allowed network.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Exact host name (lowercase, no trailing dot).
    Name(String),
    /// `*.suffix`: any name ending in `.suffix` (lowercase).
    Wildcard(String),
    /// A network (a single address is a /32 or /128).
    Net(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    target: Target,
    port: Option<u16>,
}

/// The deployment's parsed egress allow list.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    rules: Vec<Rule>,
}

/// A target the policy refuses; names the host (never resolves to a reason that tells whether
/// a port is open).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{host}` is not on this deployment's egress allow list (egress.allow)")]
pub struct EgressDenied {
    /// Host as given.
    pub host: String,
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

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn parse_port(p: &str, entry: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("egress.allow: bad port in `{entry}`")),
    }
}

fn parse_net(s: &str, entry: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "egress.allow: `{entry}` is not a host name, address or CIDR"
    ))
}

fn parse_entry(entry: &str) -> Result<Rule, String> {
    let e = entry.trim();
    if e.is_empty() {
        return Err("egress.allow: empty entry".into());
    }
    if let Some(rest) = e.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("egress.allow: unclosed `[` in `{entry}`"))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("egress.allow: bad `{entry}`"))?,
                entry,
            )?),
        };
        return Ok(Rule {
            target: Target::Net(parse_net(inner, entry)?),
            port,
        });
    }
    let colons = e.matches(':').count();
    if colons > 1 {
        // Bare IPv6 address or network: no port possible.
        return Ok(Rule {
            target: Target::Net(parse_net(e, entry)?),
            port: None,
        });
    }
    let (host, port) = match e.split_once(':') {
        Some((h, p)) => (h, Some(parse_port(p, entry)?)),
        None => (e, None),
    };
    if host.contains('/') || host.parse::<IpAddr>().is_ok() {
        return Ok(Rule {
            target: Target::Net(parse_net(host, entry)?),
            port,
        });
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(suffix) = name.strip_prefix("*.") {
        if !is_host_name(suffix) {
            return Err(format!("egress.allow: bad wildcard `{entry}`"));
        }
        return Ok(Rule {
            target: Target::Wildcard(suffix.to_string()),
            port,
        });
    }
    if !is_host_name(&name) {
        return Err(format!(
            "egress.allow: `{entry}` is not a host name, address or CIDR"
        ));
    }
    Ok(Rule {
        target: Target::Name(name),
        port,
    })
}

/// Unwrap IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) so they are judged as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Addresses never reached, whatever `egress.allow` says: link-local (incl. the cloud metadata
/// service 169.254.169.254), AWS's IPv6 metadata `fd00:ec2::254`, unspecified, broadcast and
/// multicast.
pub fn always_denied(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            let metadata = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == metadata
                || v6.is_unspecified()
                || v6.is_multicast()
        }
    }
}

fn port_ok(rule: &Rule, port: u16) -> bool {
    rule.port.is_none_or(|p| p == port)
}

fn normalise_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl EgressPolicy {
    /// Parse `egress.allow`. Errors name the bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let rules = entries
            .iter()
            .map(|e| parse_entry(e))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Whether the list is empty (nothing allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn name_allowed(&self, host: &str, port: u16) -> bool {
        let h = normalise_host(host);
        self.rules.iter().any(|r| {
            port_ok(r, port)
                && match &r.target {
                    Target::Name(n) => *n == h,
                    Target::Wildcard(s) => h.len() > s.len() + 1 && h.ends_with(&format!(".{s}")),
                    Target::Net(_) => false,
                }
        })
    }

    fn addr_in_nets(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        self.rules
            .iter()
            .any(|r| port_ok(r, port) && matches!(&r.target, Target::Net(n) if n.contains(&ip)))
    }

    /// Connect-time decision for one resolved address of `host`.
    pub fn allows_resolved(&self, host: &str, ip: IpAddr, port: u16) -> bool {
        !always_denied(ip) && (self.name_allowed(host, port) || self.addr_in_nets(ip, port))
    }

    /// Save-time check of a tenant-chosen `host:port`. An address literal must lie in an allowed
    /// network; a name must be on the list, or resolve (within `timeout`) only to addresses in
    /// allowed networks.
    pub async fn check_target(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(), EgressDenied> {
        let denied = || EgressDenied {
            host: host.to_string(),
        };
        let h = normalise_host(host);
        if let Ok(ip) = h.parse::<IpAddr>() {
            return if self.allows_resolved(&h, ip, port) {
                Ok(())
            } else {
                Err(denied())
            };
        }
        if self.name_allowed(&h, port) {
            return Ok(());
        }
        if self.is_empty() {
            return Err(denied());
        }
        let addrs = resolve(&h, port, timeout).await.map_err(|_| denied())?;
        if !addrs.is_empty()
            && addrs
                .iter()
                .all(|a| !always_denied(a.ip()) && self.addr_in_nets(a.ip(), port))
        {
            Ok(())
        } else {
            Err(denied())
        }
    }

    /// Resolve `host`, keep only the addresses the policy allows, and connect to the first that
    /// answers, all within `timeout`. The returned stream is connected to an address that was
    /// checked — no second resolution happens.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream, ConnectError> {
        let h = normalise_host(host);
        let work = async {
            let addrs: Vec<SocketAddr> = match h.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((h.as_str(), port))
                    .await
                    .map_err(|_| ConnectError::Unreachable)?
                    .collect(),
            };
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| self.allows_resolved(&h, a.ip(), port))
                .collect();
            if allowed.is_empty() {
                return Err(ConnectError::Denied(EgressDenied {
                    host: host.to_string(),
                }));
            }
            for a in allowed {
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

async fn resolve(host: &str, port: u16, timeout: Duration) -> std::io::Result<Vec<SocketAddr>> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(r) => Ok(r?.collect()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "resolution timed out",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn pol(e: &[&str]) -> EgressPolicy {
        EgressPolicy::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entry_forms() {
        let p = pol(&[
            "dc1.corp.example:636",
            "*.ldap.example",
            "10.20.0.0/16",
            "10.30.0.5:389",
            "[fd00::/8]:636",
            "2001:db8::/32",
        ]);
        assert!(p.allows_resolved("dc1.corp.example", ip("192.0.2.1"), 636));
        assert!(p.allows_resolved("DC1.corp.example.", ip("192.0.2.1"), 636));
        assert!(!p.allows_resolved("dc1.corp.example", ip("192.0.2.1"), 389));
        assert!(p.allows_resolved("a.ldap.example", ip("192.0.2.1"), 1));
        assert!(!p.allows_resolved("ldap.example", ip("192.0.2.1"), 1));
        assert!(!p.allows_resolved("evilldap.example", ip("192.0.2.1"), 1));
        assert!(p.allows_resolved("x", ip("10.20.9.9"), 1234));
        assert!(p.allows_resolved("x", ip("10.30.0.5"), 389));
        assert!(!p.allows_resolved("x", ip("10.30.0.5"), 636));
        assert!(p.allows_resolved("x", ip("fd12::1"), 636));
        assert!(!p.allows_resolved("x", ip("fd12::1"), 389));
        assert!(p.allows_resolved("x", ip("2001:db8::7"), 389));
        assert!(!p.allows_resolved("x", ip("10.21.0.1"), 389));
    }

    #[test]
    fn bad_entries_named() {
        for bad in [
            "",
            "a b",
            "10.0.0.0/33",
            "host:0",
            "host:99999",
            "[::1",
            "*.",
            "-a.b",
        ] {
            let e = EgressPolicy::parse(&[bad.to_string()]);
            assert!(e.is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn metadata_and_link_local_never_reachable() {
        let p = pol(&["0.0.0.0/0", "::/0", "metadata.internal"]);
        for a in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
        ] {
            assert!(always_denied(ip(a)), "{a}");
            assert!(!p.allows_resolved("metadata.internal", ip(a), 80), "{a}");
        }
        assert!(p.allows_resolved("x", ip("192.0.2.10"), 636));
    }

    #[test]
    fn mapped_v4_judged_as_v4() {
        let p = pol(&["10.0.0.0/8"]);
        assert!(p.allows_resolved("x", ip("::ffff:10.1.2.3"), 389));
    }

    #[test]
    fn empty_list_allows_nothing() {
        let p = pol(&[]);
        assert!(!p.allows_resolved("localhost", ip("127.0.0.1"), 636));
    }

    #[tokio::test]
    async fn save_time_checks() {
        let p = pol(&["127.0.0.0/8"]);
        let t = Duration::from_secs(2);
        assert!(p.check_target("127.0.0.1", 636, t).await.is_ok());
        assert!(p.check_target("10.0.0.1", 636, t).await.is_err());
        assert!(p.check_target("169.254.169.254", 80, t).await.is_err());
        // A name not on the list passes only through the addresses it resolves to.
        assert!(p.check_target("localhost.invalid", 636, t).await.is_err());
        let e = p.check_target("10.9.9.9", 1, t).await.unwrap_err();
        assert!(e.to_string().contains("10.9.9.9"));
    }

    #[tokio::test]
    async fn connect_checks_resolved_address() {
        let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Duration::from_secs(2);
        // Allowed by network.
        assert!(pol(&["127.0.0.0/8"])
            .connect("127.0.0.1", port, t)
            .await
            .is_ok());
        // Not allowed: refused before any packet.
        assert!(matches!(
            pol(&["10.0.0.0/8"]).connect("127.0.0.1", port, t).await,
            Err(ConnectError::Denied(_))
        ));
        // A listed name still has to resolve to a reachable, non-forbidden address.
        assert!(pol(&["localhost"])
            .connect("localhost", port, t)
            .await
            .is_ok());
    }
}
