//! Issue 24 item 12: zero-egress proof. The appliance runs under `strace -f -ff -yy` (every
//! process and thread it starts, Chromium included), recording every call that can name a
//! destination or send on a socket ([`TRACED`]), while the test drives every feature in
//! [`FEATURES`] against local stand-ins (slapd, a fake AI endpoint, a fake ticket tracker, the
//! node oidc-provider, a web page for the embedded runner's Chromium; all on loopback). CLI jobs
//! and backups run under strace too. [`check`] fails on traffic to any IPv4/IPv6 destination that
//! is neither loopback nor one of the configured endpoints; the only foreign destinations it
//! accepts are a UDP `connect()` on which nothing is ever sent (no packet leaves: Chromium's
//! IPv6 reachability probe) and DNS questions for configured host names (none in this test:
//! every configured host is an IP literal or `localhost`). It also checks that the configured
//! endpoints *were* contacted, and the `trace_rules_*` tests feed it foreign traffic, so the proof
//! cannot pass by not seeing.
//!
//! Adding a feature is one line in [`FEATURES`] plus its driver function, and its configured
//! endpoint in [`World::configured`]. `FG_EGRESS_TRACES=DIR` keeps the trace files.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use reqwest::Method;
use serde_json::json;

use crate::ai::{start_fake, Fake};
use crate::helpers::*;
use crate::ldap_support::{config_body, Pki, Slapd};
use crate::license::{install_ok, license};
use crate::oidc::{self, Idp};
use crate::runner::{finished, make_flow, queue, serve_page, wait_run};
use crate::tickets::{integration, settled, start_tracker, wait_ticket, Tracker};

/// Everything the feature drivers need.
struct World {
    app: TestApp,
    owner: Session,
    pa: Session,
    pki: Pki,
    slapd: Slapd,
    fake: Fake,
    tracker: Tracker,
    idp: Idp,
    /// Base URL of the loopback web page the embedded runner's Chromium opens.
    web: String,
    traces: PathBuf,
}

impl World {
    /// The configured outbound endpoints (address, port).
    fn configured(&self) -> Vec<(IpAddr, u16)> {
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        vec![
            (lo, self.slapd.ldaps_port),
            (lo, self.fake.addr.port()),
            (lo, self.tracker.addr.port()),
            (lo, self.idp.port),
            // The flow's target, opened by the embedded runner's Chromium: proves the browser's
            // processes were traced too.
            (lo, web_port(&self.web)),
        ]
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
    ("oidc", oidc_sign_in),
    ("ldap", ldap),
    ("ai", ai),
    ("rotation", rotation),
    ("audit_export", audit_export),
    ("jobs", jobs),
    ("backup", backup),
    ("runner", runner),
    ("tickets", tickets),
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

/// A full OIDC sign-in (authorization code + PKCE) against the local oidc-provider: discovery,
/// JWKS and token requests from the appliance.
fn oidc_sign_in(w: &World) -> Fut<'_> {
    Box::pin(async move {
        w.owner
            .json(
                Method::PUT,
                "/api/v1/sso/oidc",
                Some(oidc::config_body(&w.idp, json!({}))),
                200,
            )
            .await;
        let b = oidc::browser(&w.app, &w.idp);
        let o = oidc::sign_in(&b, &w.app, &w.app.tenant_id(), "carol").await;
        assert_eq!(o.error(), None, "{}", o.location);
        let me = oidc::session_of(&w.app, &b, &o)
            .json(Method::GET, "/api/v1/me", None, 200)
            .await;
        assert!(me.to_string().contains("carol@corp.example"), "{me}");
    })
}

/// The port of a `http://127.0.0.1:PORT` base URL.
fn web_port(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("web port")
}

/// An application named `name` on the loopback web page; its id.
async fn web_app(w: &World, name: &str) -> String {
    let a = w
        .owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": name, "base_url": w.web})),
            201,
        )
        .await;
    a["id"].as_str().expect("application id").to_string()
}

/// One run of a flow by the embedded runner (Chromium) against the loopback page.
fn runner(w: &World) -> Fut<'_> {
    Box::pin(async move {
        let a = web_app(w, "Shop in Chromium").await;
        let flow = make_flow(
            &w.owner,
            &a,
            json!([
                {"type": "navigate", "url": "/"},
                {"type": "assert", "selector": "#title", "assertion": "text_equals", "expected": "Shop"},
                // Typing into a form field (autofill, spelling) and a click, then a quiet spell
                // for what the browser does afterwards.
                {"type": "fill", "selector": "#q", "value": "running shoes teh best"},
                {"type": "click", "selector": "#title"},
                {"type": "wait", "for": "network-idle"},
                {"type": "wait", "for": "timeout", "timeout_ms": 2000},
                {"type": "screenshot"}
            ]),
        )
        .await;
        let run = queue(&w.owner, &flow).await;
        let d = wait_run(&w.owner, &run, 90, finished).await;
        assert_eq!(d["status"], "passed", "{d:#}\n{}", w.app.log_text());
        assert_eq!(d["runner"], "runner:embedded");
    })
}

/// A flow failing in the embedded runner is filed at the fake tracker (Jira) by the outbox.
fn tickets(w: &World) -> Fut<'_> {
    Box::pin(async move {
        let a = web_app(w, "Shop with tickets").await;
        w.owner
            .json(
                Method::PUT,
                &format!("/api/v1/applications/{a}/integration"),
                Some(integration(
                    "jira",
                    w.tracker.url("/jira"),
                    "ED",
                    &w.tracker.ca_pem,
                    json!({"file_on_failure": true, "after_consecutive_failures": 1}),
                )),
                200,
            )
            .await;
        let flow = make_flow(
            &w.owner,
            &a,
            json!([
                {"type": "navigate", "url": "/"},
                {"type": "wait", "for": "selector", "selector": "#never-there", "timeout_ms": 300}
            ]),
        )
        .await;
        let run = queue(&w.owner, &flow).await;
        let d = wait_run(&w.owner, &run, 90, finished).await;
        assert_eq!(d["status"], "failed", "{d:#}");
        let t = wait_ticket(&w.owner, &run, settled).await;
        assert_eq!(t["status"], "filed", "{t}");
        assert!(
            w.tracker
                .seen()
                .iter()
                .any(|s| s.method == "POST" && s.path.ends_with("/rest/api/2/issue")),
            "the tracker saw no issue creation"
        );
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

/// The system calls recorded: every way to name a destination (`connect`, `sendto`,
/// `sendmsg`, `sendmmsg`), every way to send on a connected socket (those plus `write`,
/// `writev`), and `close` (which shows a socket's final local/peer addresses).
const TRACED: &str = "trace=connect,sendto,sendmsg,sendmmsg,write,writev,close";

/// The calls that put data on a socket.
const SENDS: &[&str] = &["sendto", "sendmsg", "sendmmsg", "write", "writev"];

/// strace arguments writing to `out.<tid>` (one file per thread, so no line is split), with
/// each fd's socket annotated (`-yy`: `UDP:[local->peer]`) and payloads long enough to hold any
/// DNS question (`-s 300`; `-x` prints non-ASCII bytes as `\xNN`).
fn strace_args(out: &Path) -> Vec<String> {
    [
        "-f", "-ff", "-qq", "-yy", "-x", "-s", "300", "-e", TRACED, "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string(), "--".to_string()])
    .collect()
}

/// One traced system call.
#[derive(Debug)]
struct Call {
    /// Trace file name (`serve.<tid>`, `cli-<name>.<tid>`).
    file: String,
    /// System call name.
    name: String,
    /// First argument (every traced call takes an fd first).
    fd: Option<u32>,
    /// The fd's `-yy` annotation, e.g. `UDPv6:[[fd00::2]:39089->[2001:4860:4860::8888]:443]`.
    sock: Option<String>,
    /// The whole line.
    line: String,
}

impl Call {
    fn parse(file: &str, line: &str) -> Option<Call> {
        let open = line.find('(')?;
        let name = &line[..open];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None; // `+++ exited`, `--- SIGCHLD`
        }
        let rest = &line[open + 1..];
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        let fd = rest[..digits].parse().ok();
        let sock = rest[digits..].strip_prefix('<').and_then(|a| {
            // The annotation ends at the `>` before the next argument (`->` inside it is part
            // of a socket's address pair).
            let end = [a.find(">,"), a.find(">)")].into_iter().flatten().min()?;
            Some(a[..end].to_string())
        });
        Some(Call {
            file: file.to_string(),
            name: name.to_string(),
            fd,
            sock,
            line: line.to_string(),
        })
    }

    /// Every IPv4/IPv6 socket address written in the call (a `connect` target, a `sendto`
    /// destination, a `msg_name`); panics on one it cannot read, so nothing slips through.
    fn destinations(&self) -> Vec<(IpAddr, u16)> {
        let mut out = Vec::new();
        for (i, _) in self.line.match_indices("sa_family=AF_INET") {
            let at = &self.line[i..];
            let v6 = at.starts_with("sa_family=AF_INET6,");
            let between = |start: &str, end: char| -> Option<&str> {
                let i = at.find(start)? + start.len();
                Some(&at[i..i + at[i..].find(end)?])
            };
            let port = between(
                if v6 {
                    "sin6_port=htons("
                } else {
                    "sin_port=htons("
                },
                ')',
            )
            .and_then(|p| p.parse().ok());
            let addr = if v6 {
                between("inet_pton(AF_INET6, \"", '"')
            } else {
                between("sin_addr=inet_addr(\"", '"')
            }
            .and_then(|a| a.parse().ok());
            match (addr, port) {
                (Some(a), Some(p)) => out.push((a, p)),
                _ => panic!("unparsed trace line in {}: {}", self.file, self.line),
            }
        }
        out
    }

    /// The datagrams the call sends: one per `msg_hdr` of a `sendmmsg`, else one; each the
    /// concatenation of the string arguments after the fd. `None` when a string was cut short
    /// by `-s` (strace then prints `"..."...`).
    fn datagrams(&self) -> Option<Vec<Vec<u8>>> {
        let args = &self.line[self.line.find('(')? + 1..];
        let args = match self.sock.as_deref() {
            Some(s) => &args[args.find(s)? + s.len()..],
            None => args,
        };
        let parts: Vec<&str> = if self.name == "sendmmsg" {
            args.split("msg_hdr=").skip(1).collect()
        } else {
            vec![args]
        };
        parts.into_iter().map(strings).collect()
    }
}

/// The C strings in a piece of strace output, unescaped and concatenated; `None` if one was
/// truncated.
fn strings(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\\' => {
                    let e = *b.get(i + 1)?;
                    i += 2;
                    match e {
                        b'x' => {
                            let h = std::str::from_utf8(b.get(i..i + 2)?).ok()?;
                            out.push(u8::from_str_radix(h, 16).ok()?);
                            i += 2;
                        }
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'v' => out.push(0x0b),
                        b'f' => out.push(0x0c),
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            while i < b.len() && (b'0'..=b'7').contains(&b[i]) && v < 0o40 {
                                v = v * 8 + u32::from(b[i] - b'0');
                                i += 1;
                            }
                            out.push(u8::try_from(v).ok()?);
                        }
                        other => out.push(other),
                    }
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        i += 1;
        if b[i..].starts_with(b"...") {
            return None;
        }
    }
    Some(out)
}

/// The question names of a DNS query message (RFC 1035 §4.1), lower-case; `None` for anything
/// that is not a plain standard query (a response, another opcode, no question, a compression
/// pointer, a short message).
fn dns_question_names(m: &[u8]) -> Option<Vec<String>> {
    let flags = *m.get(2)?;
    if flags & 0x80 != 0 || (flags >> 3) & 0x0f != 0 {
        return None;
    }
    let count = u16::from_be_bytes([*m.get(4)?, *m.get(5)?]);
    if count == 0 {
        return None;
    }
    let mut at = 12;
    let mut names = Vec::new();
    for _ in 0..count {
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*m.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            labels.push(String::from_utf8(m.get(at..at + len)?.to_vec()).ok()?);
            at += len;
        }
        m.get(at..at + 4)?; // type and class
        at += 4;
        names.push(labels.join(".").to_ascii_lowercase());
    }
    Some(names)
}

/// The outcome of checking a trace directory.
#[derive(Debug, Default)]
struct Verdict {
    /// Every destination written in a call, with the file it came from.
    seen: Vec<(IpAddr, u16, String)>,
    /// Outbound traffic to a destination that is neither loopback nor configured.
    violations: Vec<String>,
    /// Foreign UDP `connect`s on which nothing was ever sent (Chromium's IPv6 probe).
    unsent_udp: Vec<String>,
    /// Allowed DNS questions (configured names), as `name via file`.
    dns: Vec<String>,
}

/// Checks every trace file under `dir`. A destination that is loopback or in `configured` is
/// fine. Any other is a violation, except:
/// - a `connect()` of a UDP socket (which sends no packet) on which no call ever sends — the
///   socket is identified by its `-yy` annotation after the connect (the next call on that fd in
///   the same thread, at the latest its `close`), which must name that peer, and every send in
///   any file names its socket that way;
/// - DNS: UDP datagrams to port 53 (on such a socket, or by `sendto`) that each decode as a
///   standard query whose every question is one of `dns_names` (configured host names).
fn check(dir: &Path, configured: &[(IpAddr, u16)], dns_names: &[&str]) -> Verdict {
    let mut files: Vec<Vec<Call>> = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("trace dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("trace file");
        files.push(text.lines().filter_map(|l| Call::parse(&name, l)).collect());
    }
    let sends_on = |sock: &str| -> Vec<&Call> {
        files
            .iter()
            .flatten()
            .filter(|c| SENDS.contains(&c.name.as_str()) && c.sock.as_deref() == Some(sock))
            .collect()
    };
    let mut v = Verdict::default();
    // Whether `c` sends only DNS questions for configured names to port `port`.
    let dns_ok = |c: &Call, port: u16, v: &mut Verdict| -> Result<(), String> {
        if port != 53 {
            return Err(format!("{} sends to port {port}", c.name));
        }
        let grams = c.datagrams().ok_or("a truncated payload")?;
        if grams.is_empty() {
            return Err("no payload found".into());
        }
        for g in grams {
            let names = dns_question_names(&g).ok_or("a payload that is not a DNS query")?;
            for n in names {
                if !dns_names.contains(&n.as_str()) {
                    return Err(format!("a DNS question for `{n}`, not a configured host"));
                }
                v.dns.push(format!("{n} via {}", c.file));
            }
        }
        Ok(())
    };
    for (fi, calls) in files.iter().enumerate() {
        for (ci, c) in calls.iter().enumerate() {
            for (addr, port) in c.destinations() {
                v.seen.push((addr, port, c.file.clone()));
                if is_loopback(addr) || configured.contains(&(addr, port)) {
                    continue;
                }
                let what = format!("{}: {}", c.file, c.line);
                let udp = c.sock.as_deref().is_some_and(|s| s.starts_with("UDP"));
                let outcome = if c.name == "connect" && udp {
                    // The same socket after the connect: the next call on this fd in this
                    // thread (strace shows the connected form of the socket there).
                    match files[fi][ci + 1..].iter().find(|n| n.fd == c.fd) {
                        None => Err("a UDP socket that is not followed to its close".to_string()),
                        Some(next) => {
                            let sock = next.sock.clone().unwrap_or_default();
                            let peer = match addr {
                                IpAddr::V4(a) => format!("->{a}:{port}]"),
                                IpAddr::V6(a) => format!("->[{a}]:{port}]"),
                            };
                            let sends = sends_on(&sock);
                            if sends.is_empty() && sock.contains(&peer) {
                                v.unsent_udp.push(what.clone());
                                Ok(())
                            } else if sends.is_empty() {
                                // Without the peer in the annotation this may be another
                                // socket that reused the fd.
                                Err(format!(
                                    "a UDP socket not identified after its connect ({sock})"
                                ))
                            } else {
                                sends.iter().try_for_each(|s| {
                                    dns_ok(s, port, &mut v)
                                        .map_err(|e| format!("{e}: {}: {}", s.file, s.line))
                                })
                            }
                        }
                    }
                } else if SENDS.contains(&c.name.as_str()) && udp {
                    dns_ok(c, port, &mut v)
                } else {
                    Err(format!("{} to a foreign address", c.name))
                };
                if let Err(why) = outcome {
                    v.violations.push(format!("{why} — {what}"));
                }
            }
        }
    }
    v
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
    let tracker = start_tracker();
    let idp = Idp::start();
    let web = serve_page().await;
    let dir = tempfile::tempdir().unwrap();
    // FG_EGRESS_TRACES=DIR keeps the trace files there (for reading a failure).
    let traces = match std::env::var_os("FG_EGRESS_TRACES") {
        Some(d) => PathBuf::from(d),
        None => dir.path().join("traces"),
    };
    std::fs::create_dir_all(&traces).unwrap();
    // The embedded runner's browser runs as an unprivileged user: its profiles go under a
    // world-traversable TMPDIR (as in tests/api/runner.rs `spawn_runner`).
    let app_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(app_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let profiles = app_dir.path().join("browsers");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::set_permissions(&profiles, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = spawn_with(Opts {
        config: Some(format!(
            "public_url = \"{}\"\n[egress]\nallow = [\"localhost:{}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\", \"localhost:{}\"]\n[ai]\nrate_per_minute = 600\nburst = 100\n",
            oidc::PUBLIC_URL,
            slapd.ldaps_port,
            slapd.ldaps_port,
            fake.addr.port(),
            tracker.addr.port(),
            idp.port
        )),
        dir: Some(app_dir),
        env: vec![
            ("FLOWGUARD_RUNNER__EMBEDDED_WORKERS".into(), "1".into()),
            ("FLOWGUARD_RUNNER__POLL_MS".into(), "200".into()),
            ("TMPDIR".into(), profiles.display().to_string()),
        ],
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
        tracker,
        idp,
        web,
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

    // No configured host is looked up in DNS: every one is an IP literal or `localhost` (the
    // loopback addresses, see `EgressPolicy::resolve`), so no DNS question is allowed at all.
    let v = check(&traces, &configured, &[]);
    assert!(
        v.violations.is_empty(),
        "outbound traffic to destinations that are not configured:\n{:#?}",
        v.violations
    );
    // Not vacuous: the trace saw the configured endpoints being used.
    let dests: BTreeSet<(IpAddr, u16)> = v.seen.iter().map(|(a, p, _)| (*a, *p)).collect();
    for (_, port) in &configured {
        assert!(
            dests.iter().any(|(a, p)| p == port && is_loopback(*a)),
            "no connection to configured port {port} in the trace: {dests:?}"
        );
    }
    eprintln!(
        "zero-egress: {} recorded destination addresses, distinct: {dests:?}; the foreign ones \
         are UDP connects that never sent (Chromium's IPv6 reachability probe): {:#?}; \
         DNS questions: {:?}",
        v.seen.len(),
        v.unsent_udp,
        v.dns
    );
}

// Self-checks of the trace rules on strace 6.1 output (the DNS and probe lines are copied from
// real traces): the proof above cannot pass by failing to see or read a foreign destination.

/// Writes `files` (name, lines) into a fresh directory and checks it.
fn check_lines(files: &[(&str, &[&str])], dns_names: &[&str]) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    for (name, lines) in files {
        std::fs::write(dir.path().join(name), lines.join("\n")).unwrap();
    }
    let configured = [("127.0.0.1".parse().unwrap(), 5000)];
    check(dir.path(), &configured, dns_names)
}

/// A `sendto` line carrying a DNS query for `name` (type A), as strace `-x` prints it.
fn dns_sendto(sock: &str, name: &str) -> String {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        m.push(u8::try_from(l.len()).unwrap());
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    let hex: String = m.iter().map(|b| format!("\\x{b:02x}")).collect();
    format!(
        "sendto({sock}, \"{hex}\", {}, MSG_NOSIGNAL, NULL, 0) = {}",
        m.len(),
        m.len()
    )
}

const PROBE_CONNECT: &str = "connect(24<UDPv6:[2620831]>, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, \"2001:4860:4860::8888\", &sin6_addr), sin6_scope_id=0}, 28) = 0";
const PROBE_SOCK: &str = "24<UDPv6:[[fd00::2]:39089->[2001:4860:4860::8888]:443]>";
const RESOLVER_CONNECT: &str = "connect(3<UDP:[2624437]>, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr(\"10.255.255.53\")}, 16) = 0";
/// glibc's A and AAAA queries for ldap.example.com in one `sendmmsg`.
const LDAP_SENDMMSG: &str = "sendmmsg(3<UDP:[192.0.2.2:32958->10.255.255.53:53]>, [{msg_hdr={msg_name=NULL, msg_namelen=0, msg_iov=[{iov_base=\"\\x62\\x08\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x04\\x6c\\x64\\x61\\x70\\x07\\x65\\x78\\x61\\x6d\\x70\\x6c\\x65\\x03\\x63\\x6f\\x6d\\x00\\x00\\x01\\x00\\x01\", iov_len=34}], msg_iovlen=1, msg_controllen=0, msg_flags=0}, msg_len=34}, {msg_hdr={msg_name=NULL, msg_namelen=0, msg_iov=[{iov_base=\"\\xd8\\x77\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x04\\x6c\\x64\\x61\\x70\\x07\\x65\\x78\\x61\\x6d\\x70\\x6c\\x65\\x03\\x63\\x6f\\x6d\\x00\\x00\\x1c\\x00\\x01\", iov_len=34}], msg_iovlen=1, msg_controllen=0, msg_flags=0}, msg_len=34}], 2, MSG_NOSIGNAL) = 2";
const RESOLVER_CLOSE: &str = "close(3<UDP:[192.0.2.2:32958->10.255.255.53:53]>) = 0";

#[test]
fn trace_rules_fail_on_a_foreign_tcp_connection_and_pass_loopback_and_configured() {
    let ok = check_lines(
        &[(
            "serve.10",
            &[
                "connect(9<TCP:[77]>, {sa_family=AF_INET, sin_port=htons(5000), sin_addr=inet_addr(\"127.0.0.1\")}, 16) = -1 EINPROGRESS (Operation now in progress)",
                "connect(9<TCPv6:[78]>, {sa_family=AF_INET6, sin6_port=htons(8080), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, \"::1\", &sin6_addr), sin6_scope_id=0}, 28) = 0",
                "+++ exited with 0 +++",
            ],
        )],
        &[],
    );
    assert!(ok.violations.is_empty(), "{:?}", ok.violations);
    assert_eq!(ok.seen.len(), 2);
    let bad = check_lines(
        &[(
            "serve.11",
            &["connect(12<TCP:[3001]>, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr(\"93.184.216.34\")}, 16) = -1 EINPROGRESS (Operation now in progress)"],
        )],
        &[],
    );
    assert_eq!(bad.violations.len(), 1, "{:?}", bad.violations);
    assert!(bad.violations[0].contains("93.184.216.34"));
    // The configured port on another (foreign) address is not configured.
    let other = check_lines(
        &[(
            "serve.12",
            &["connect(12<TCP:[3002]>, {sa_family=AF_INET, sin_port=htons(5000), sin_addr=inet_addr(\"10.0.0.7\")}, 16) = 0"],
        )],
        &[],
    );
    assert_eq!(other.violations.len(), 1, "{:?}", other.violations);
}

#[test]
fn trace_rules_allow_a_udp_connect_only_when_nothing_is_sent_on_it() {
    let close = format!("close({PROBE_SOCK}) = 0");
    let quiet = check_lines(&[("serve.20", &[PROBE_CONNECT, &close])], &[]);
    assert!(quiet.violations.is_empty(), "{:?}", quiet.violations);
    assert_eq!(quiet.unsent_udp.len(), 1);
    // One datagram on that socket, from another thread, by `write` or `sendto`.
    for send in [
        format!("write({PROBE_SOCK}, \"\\x00\", 1) = 1"),
        format!("sendto({PROBE_SOCK}, \"hello\", 5, 0, NULL, 0) = 5"),
    ] {
        let sent = check_lines(
            &[
                ("serve.20", &[PROBE_CONNECT, &close]),
                ("serve.21", &[&send]),
            ],
            &[],
        );
        assert_eq!(sent.violations.len(), 1, "{send}: {:?}", sent.violations);
    }
    // A socket the trace does not follow after its connect cannot be shown to stay silent,
    // nor one whose next use shows another peer (the fd was reused).
    let lost = check_lines(&[("serve.22", &[PROBE_CONNECT])], &[]);
    assert_eq!(lost.violations.len(), 1, "{:?}", lost.violations);
    let reused = check_lines(
        &[(
            "serve.22",
            &[
                PROBE_CONNECT,
                "close(24<UDPv6:[[fd00::2]:39089->[::1]:443]>) = 0",
            ],
        )],
        &[],
    );
    assert_eq!(reused.violations.len(), 1, "{:?}", reused.violations);
    // An unconnected `sendto` with a foreign destination is traffic.
    let direct = check_lines(
        &[(
            "serve.23",
            &["sendto(7<UDP:[0.0.0.0:4000]>, \"hi\", 2, 0, {sa_family=AF_INET, sin_port=htons(9999), sin_addr=inet_addr(\"198.51.100.7\")}, 16) = 2"],
        )],
        &[],
    );
    assert_eq!(direct.violations.len(), 1, "{:?}", direct.violations);
}

#[test]
fn trace_rules_allow_dns_only_for_configured_names() {
    let files: &[(&str, &[&str])] = &[(
        "serve.30",
        &[RESOLVER_CONNECT, LDAP_SENDMMSG, RESOLVER_CLOSE],
    )];
    let named = check_lines(files, &["ldap.example.com"]);
    assert!(named.violations.is_empty(), "{:?}", named.violations);
    assert_eq!(named.dns.len(), 2, "{:?}", named.dns);
    // The same query when that name is not configured.
    let unnamed = check_lines(files, &["ldap.corp.example"]);
    assert_eq!(unnamed.violations.len(), 1, "{:?}", unnamed.violations);
    assert!(unnamed.violations[0].contains("ldap.example.com"));
    // Chromium's resolver: bound before connecting, so strace shows only the local address.
    let sock = "18<UDP:[0.0.0.0:25865]>";
    let chromium = |name: &str| {
        let connect = "connect(18<UDP:[2541015]>, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr(\"10.255.255.53\")}, 16) = 0";
        let send = dns_sendto(sock, name);
        let close = format!("close({sock}) = 0");
        let lines = [connect.to_string(), send, close];
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serve.31"), lines.join("\n")).unwrap();
        check(dir.path(), &[], &["ldap.example.com"])
    };
    assert!(chromium("ldap.example.com").violations.is_empty());
    let google = chromium("accounts.google.com");
    assert_eq!(google.violations.len(), 1, "{:?}", google.violations);
    assert!(google.violations[0].contains("accounts.google.com"));
    // A cut-off payload cannot be read, so it is not allowed.
    let cut = LDAP_SENDMMSG.replacen("\\x00\\x01\", iov_len=34", "\\x00\"..., iov_len=34", 1);
    let truncated = check_lines(
        &[("serve.32", &[RESOLVER_CONNECT, &cut, RESOLVER_CLOSE])],
        &["ldap.example.com"],
    );
    assert_eq!(truncated.violations.len(), 1, "{:?}", truncated.violations);
    // Nor a datagram to port 53 that is not a DNS query (here a response).
    let answer = dns_sendto(sock, "ldap.example.com").replacen(
        "\\x01\\x00\\x00\\x01",
        "\\x81\\x80\\x00\\x01",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let connect = "connect(18<UDP:[2541015]>, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr(\"10.255.255.53\")}, 16) = 0";
    std::fs::write(dir.path().join("serve.33"), [connect, &answer].join("\n")).unwrap();
    assert_eq!(
        check(dir.path(), &[], &["ldap.example.com"])
            .violations
            .len(),
        1
    );
}

#[test]
fn dns_question_names_reads_queries_only() {
    let q = strings(&dns_sendto("1<UDP:[1]>", "a.b-c.example")).unwrap();
    assert_eq!(
        dns_question_names(&q),
        Some(vec!["a.b-c.example".to_string()])
    );
    assert_eq!(dns_question_names(&q[..q.len() - 2]), None);
    assert_eq!(dns_question_names(b"\x12\x34\x81\x80"), None);
    assert_eq!(
        strings("\"a\\\"b\\\\c\\x41\\101\""),
        Some(b"a\"b\\cAA".to_vec())
    );
    assert_eq!(strings("\"abc\"..."), None);
}
