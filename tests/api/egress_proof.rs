//! Issue 24 item 12: zero-egress proof. The appliance runs under `strace -f` (every process and
//! thread it starts), recording each `connect`/`sendto`/`sendmsg` with a destination address,
//! while the test drives every feature in [`FEATURES`] against local stand-ins (slapd on
//! loopback, a fake AI endpoint on loopback). The test fails on any IPv4/IPv6 destination that
//! is neither loopback nor one of the configured endpoints, and it checks that the configured
//! endpoints *were* contacted (so the trace is not vacuous). CLI jobs run under strace too.
//!
//! Adding a feature (tickets, OIDC, backup, runner…) is one line in [`FEATURES`] plus its
//! driver function, and its configured endpoint in [`World::configured`].

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use reqwest::Method;
use serde_json::json;

use crate::ai::{start_fake, Fake};
use crate::helpers::*;
use crate::ldap_support::{config_body, Pki, Slapd};
use crate::license::{install_ok, license};

/// Everything the feature drivers need.
struct World {
    app: TestApp,
    owner: Session,
    pa: Session,
    pki: Pki,
    slapd: Slapd,
    fake: Fake,
    traces: PathBuf,
}

impl World {
    /// The configured outbound endpoints (address, port).
    fn configured(&self) -> Vec<(IpAddr, u16)> {
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        vec![(lo, self.slapd.ldaps_port), (lo, self.fake.addr.port())]
    }

    /// `flowguard ARGS --data-dir DATA` under strace, to completion; its stdout.
    fn cli(&self, name: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("strace")
            .args(strace_args(&self.traces.join(format!("cli-{name}"))))
            .arg(bin())
            .args(args)
            .arg("--data-dir")
            .arg(&self.app.data)
            .env_remove("FLOWGUARD_CONFIG")
            .output()
            .expect("strace flowguard");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

type Fut<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Drives one feature against the traced appliance.
type Driver = for<'a> fn(&'a World) -> Fut<'a>;

/// The features driven while tracing, one line each.
const FEATURES: &[(&str, Driver)] = &[
    ("serve", serve),
    ("ldap", ldap),
    ("ai", ai),
    ("rotation", rotation),
    ("audit_export", audit_export),
    ("jobs", jobs),
    ("backup", backup),
];

fn serve(w: &World) -> Fut<'_> {
    Box::pin(async move {
        w.owner.json(Method::GET, "/api/v1/me", None, 200).await;
        let app = w
            .owner
            .json(
                Method::POST,
                "/api/v1/applications",
                Some(json!({"name": "Shop", "base_url": "https://shop.example"})),
                201,
            )
            .await;
        assert!(app["id"].is_string());
        let r = w
            .app
            .client()
            .get(w.app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    })
}

fn ldap(w: &World) -> Fut<'_> {
    Box::pin(async move {
        w.owner
            .json(
                Method::PUT,
                "/api/v1/sso/ldap",
                Some(config_body(&w.slapd.ldaps_url(), &w.pki.ca_pem, json!({}))),
                200,
            )
            .await;
        let t = w
            .owner
            .json(Method::POST, "/api/v1/sso/ldap/test-connection", None, 200)
            .await;
        assert_eq!(t["service_bind"], true);
        let r = w
            .app
            .client()
            .post(w.app.url("/api/v1/auth/login"))
            .json(&json!({"tenant": w.app.tenant_id(), "username": "alice", "password": "alice-pw-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    })
}

fn ai(w: &World) -> Fut<'_> {
    Box::pin(async move {
        w.owner
            .json(
                Method::PUT,
                "/api/v1/ai-endpoint",
                Some(
                    json!({"kind": "openai-chat", "base_url": w.fake.url("/v1"), "model": "m",
                    "ca_pem": w.fake.cert_pem, "timeout_ms": 3000}),
                ),
                200,
            )
            .await;
        let v = w
            .owner
            .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
            .await;
        assert_eq!(v["ok"], true, "{v}");
    })
}

fn rotation(w: &World) -> Fut<'_> {
    Box::pin(async move {
        w.owner
            .json(Method::POST, "/api/v1/keys/rotate", None, 200)
            .await;
    })
}

fn audit_export(w: &World) -> Fut<'_> {
    Box::pin(async move {
        let tid = w.app.tenant_id();
        install_ok(&w.pa, &license("lic-egress", "pro", "audit.export", None)).await;
        w.pa.json(
            Method::PUT,
            &format!("/api/v1/platform/tenants/{tid}/plan"),
            Some(json!({"plan": "pro"})),
            200,
        )
        .await;
        let r = w
            .owner
            .req(Method::GET, "/api/v1/audit/export?format=csv", None)
            .await;
        assert_eq!(r.status(), 200);
        assert!(!r.bytes().await.unwrap().is_empty());
    })
}

fn jobs(w: &World) -> Fut<'_> {
    Box::pin(async move {
        for job in [
            "schedules",
            "agent-timeouts",
            "retention",
            "ticket-outbox",
            "license-clock",
        ] {
            w.cli(job, &["jobs", "run", job]);
        }
    })
}

/// Issue 19: an online backup of the serving appliance, then its verification (both CLI runs
/// traced).
fn backup(w: &World) -> Fut<'_> {
    Box::pin(async move {
        let to = w.traces.with_file_name("backups");
        let out = w.cli(
            "backup-create",
            &[
                "backup",
                "create",
                "--to",
                to.to_str().expect("utf-8"),
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("backup --json");
        let dir = v["dir"].as_str().expect("backup dir").to_string();
        w.cli("backup-verify", &["backup", "verify", &dir]);
    })
}

/// strace arguments writing to `out.<pid>` (one file per process).
fn strace_args(out: &Path) -> Vec<String> {
    vec![
        "-f".into(),
        "-ff".into(),
        "-qq".into(),
        "-e".into(),
        "trace=connect,sendto,sendmsg".into(),
        "-o".into(),
        out.display().to_string(),
        "--".into(),
    ]
}

/// `(address, port, line)` of every IPv4/IPv6 destination in the trace files under `dir`.
fn destinations(dir: &Path) -> Vec<(IpAddr, u16, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("trace dir") {
        let text = std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default();
        for line in text.lines() {
            let v4 = line.contains("sa_family=AF_INET,");
            let v6 = line.contains("sa_family=AF_INET6,");
            if !(v4 || v6) {
                continue;
            }
            let between = |start: &str, end: char| -> Option<String> {
                let i = line.find(start)? + start.len();
                let rest = &line[i..];
                Some(rest[..rest.find(end)?].to_string())
            };
            let port = between(
                if v4 {
                    "sin_port=htons("
                } else {
                    "sin6_port=htons("
                },
                ')',
            )
            .and_then(|p| p.parse().ok());
            let addr = if v4 {
                between("sin_addr=inet_addr(\"", '"')
            } else {
                between("inet_pton(AF_INET6, \"", '"')
            }
            .and_then(|a| a.parse().ok());
            match (addr, port) {
                (Some(a), Some(p)) => out.push((a, p, line.to_string())),
                _ => panic!("unparsed trace line: {line}"),
            }
        }
    }
    out
}

fn is_loopback(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback() || v.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// Kills the traced appliance when dropped (also when the test fails half-way): killing only
/// strace would leave its tracee running.
struct TracedTree(u32);

impl Drop for TracedTree {
    fn drop(&mut self) {
        stop_traced(self.0);
    }
}

/// Kill the traced appliance (strace's children) so strace exits and flushes.
fn stop_traced(strace_pid: u32) {
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .unwrap_or_default();
    for pid in children.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
}

#[tokio::test]
async fn zero_egress_every_outbound_connection_goes_to_a_configured_endpoint() {
    let pki = Pki::new();
    let slapd = Slapd::start(&pki, true);
    let fake = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    let app = spawn_with(Opts {
        config: Some(format!(
            "[egress]\nallow = [\"localhost:{}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n[ai]\nrate_per_minute = 600\nburst = 100\n",
            slapd.ldaps_port,
            slapd.ldaps_port,
            fake.addr.port()
        )),
        wrap: {
            let mut w = vec!["strace".to_string()];
            w.extend(strace_args(&traces.join("serve")));
            w
        },
        ..Default::default()
    })
    .await;
    let strace_pid = app.child.0.id();
    let _tree = TracedTree(strace_pid);
    let owner = app.owner().await;
    let pa = app.platform_admin().await;
    let w = World {
        app,
        owner,
        pa,
        pki,
        slapd,
        fake,
        traces: traces.clone(),
    };
    for (name, drive) in FEATURES {
        eprintln!("zero-egress: driving {name}");
        drive(&w).await;
    }
    stop_traced(strace_pid);
    let configured = w.configured();
    let World { mut app, .. } = w;
    // strace exits (and has written everything) once its tracees are gone.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.child.0.try_wait().ok().flatten().is_none() && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(app);

    let seen = destinations(&traces);
    let foreign: Vec<&(IpAddr, u16, String)> = seen
        .iter()
        .filter(|(a, p, _)| !is_loopback(*a) && !configured.contains(&(*a, *p)))
        .collect();
    assert!(
        foreign.is_empty(),
        "outbound connections to destinations that are not configured:\n{foreign:#?}"
    );
    // Not vacuous: the trace saw the configured endpoints being used.
    let dests: BTreeSet<(IpAddr, u16)> = seen.iter().map(|(a, p, _)| (*a, *p)).collect();
    for (_, port) in &configured {
        assert!(
            dests.iter().any(|(a, p)| p == port && is_loopback(*a)),
            "no connection to configured port {port} in the trace: {dests:?}"
        );
    }
    eprintln!(
        "zero-egress: {} recorded destinations, all loopback/configured: {dests:?}",
        seen.len()
    );
}
