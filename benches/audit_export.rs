//! Audit export benchmark (issue 5): rows/s and peak RSS of the real server streaming
//! `GET /api/v1/audit/export` for 100k and 1M rows in both formats, beside `sqlite3 -csv`
//! dumping the same rows from an unencrypted copy of the store.
//!
//! Goals: export rows/s ≥ 0.5 × sqlite3's; peak RSS at 1M ≤ 1.2 × peak RSS at 100k.
//!
//! Run: `cargo bench --bench audit_export` (needs the `sqlite3` CLI: `apt-get install sqlite3`).
//! `FG_BENCH_ROWS=100000,1000000` picks the sizes. Each (size, format) gets a fresh server
//! process so its `VmHWM` (peak resident set) is that export's alone. `FG_BENCH_KEEP=1` keeps
//! each prepared data dir (path printed on stderr) for profiling a server on it by hand.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowguard::audit::{Actor, NewAuditEvent};
use flowguard::config::{CliOverrides, Settings};
use flowguard::domain::TenantId;
use flowguard::startup;
use flowguard::store::{audit, catalog, write_tx};

const BIN: &str = env!("CARGO_BIN_EXE_flowguard");
const PASSWORD: &str = "bench-password-123";

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("FLOWGUARD_CONFIG")
        .output()
        .expect("run flowguard");
    assert!(
        out.status.success(),
        "flowguard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// A data dir with one tenant holding `n` audit rows, on plan pro with an `audit.export`
/// license, plus an unencrypted copy of the tenant store. Returns (data dir, tenant id, plain db).
fn prepare(root: &Path, n: u64) -> (PathBuf, String, PathBuf) {
    let data = root.join("data");
    let pw = root.join("pw");
    std::fs::write(&pw, PASSWORD).expect("pw");
    let tid = cli(&[
        "init",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--tenant-name",
        "bench",
        "--owner-email",
        "owner@bench.example",
        "--owner-password-file",
        pw.to_str().expect("utf8"),
    ])
    .trim()
    .to_string();
    let token = cli(&[
        "license",
        "issue",
        "--dev",
        "--plan",
        "pro",
        "--features",
        "audit.export",
        "--expires",
        "2099-01-01T00:00:00Z",
    ]);
    let lic = root.join("license.jwt");
    std::fs::write(&lic, token.trim()).expect("license");
    cli(&[
        "license",
        "install",
        lic.to_str().expect("utf8"),
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);

    let settings = Settings::load(
        None,
        &CliOverrides {
            data_dir: Some(data.clone()),
            listen: None,
        },
    )
    .expect("settings");
    let opened = startup::open_data_dir(&settings, false).expect("open");
    let state = startup::build_state(Arc::new(settings), opened).expect("state");
    let actor = Actor {
        email: Some("bench@bench.example".into()),
        role: Some("owner".into()),
        client_ip: Some("203.0.113.7".into()),
        user_agent: Some(format!(
            "Mozilla/5.0 (X11; Linux x86_64) bench/{}",
            "x".repeat(60)
        )),
    };
    {
        let ev = NewAuditEvent::new(&actor, "tenant.plan_change", Some(format!("tenant:{tid}")));
        let mut c = state.catalog.db().lock();
        let id = flowguard::domain::TenantId::parse(&tid).expect("tenant id");
        catalog::set_tenant_plan(&mut c, &id, "pro", &ev).expect("plan");
    }
    let t = TenantId::parse(&tid).expect("tid");
    let db = state.tenants.get_blocking(&t).expect("store");
    let mut c = db.lock();
    let start = Instant::now();
    let mut i = 0u64;
    while i < n {
        let tx = write_tx(&mut c).expect("tx");
        for _ in 0..10_000.min(n - i) {
            let ev = NewAuditEvent::new(
                &actor,
                "application.update",
                Some(format!("application:{i:08}")),
            )
            .details(serde_json::json!({
                "before": {"name": format!("shop-{i}"), "base_url": "https://shop.example"},
                "after": {"name": format!("shop-{i}, \"renamed\""), "base_url": "https://shop.example/v2"},
            }));
            audit::append(&tx, &ev).expect("append");
            i += 1;
        }
        tx.commit().expect("commit");
    }
    eprintln!(
        "  generated {n} rows in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let plain = root.join("plain.db");
    // The store connection may not create files: an empty file is an empty database.
    std::fs::File::create(&plain).expect("plain.db");
    c.execute_batch(&format!(
        "ATTACH DATABASE '{}' AS plaintext KEY ''; SELECT sqlcipher_export('plaintext'); DETACH DATABASE plaintext;",
        plain.display()
    ))
    .expect("sqlcipher_export");
    (data, tid, plain)
}

fn start_server(data: &Path) -> (Server, String) {
    let _ = std::fs::remove_file(data.join("listen.addr"));
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = std::fs::read_to_string(data.join("listen.addr")) {
            if !s.trim().is_empty() {
                return (server, format!("https://{}", s.trim()));
            }
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Stream one export; returns (seconds, bytes, peak RSS KiB of the server).
async fn export_once(data: &Path, tid: &str, format: &str) -> (f64, u64, u64) {
    let (server, base) = start_server(data);
    let cert = std::fs::read(data.join("tls/cert.pem")).expect("cert");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).expect("cert"))
        .tls_built_in_root_certs(false)
        .cookie_store(true)
        .http1_only()
        .build()
        .expect("client");
    loop {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let r = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"tenant": tid, "email": "owner@bench.example", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert!(r.status().is_success(), "login {}", r.status());
    let start = Instant::now();
    let mut r = client
        .get(format!("{base}/api/v1/audit/export?format={format}"))
        .send()
        .await
        .expect("export");
    assert!(r.status().is_success(), "export {}", r.status());
    let mut bytes = 0u64;
    let mut tail = Vec::new();
    while let Some(c) = r.chunk().await.expect("chunk") {
        bytes += c.len() as u64;
        tail = c.to_vec();
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        String::from_utf8_lossy(&tail).contains("trailer"),
        "export ended without a trailer"
    );
    let rss = peak_rss_kib(server.0.id());
    drop(server);
    (secs, bytes, rss)
}

fn sqlite3_baseline(plain: &Path) -> f64 {
    let start = Instant::now();
    let out = Command::new("sqlite3")
        .arg("-csv")
        .arg(plain)
        .arg("SELECT seq, id, ts, actor_email, actor_role, client_ip, user_agent, action, target, details, prev_hash, hash FROM audit ORDER BY seq")
        .stdout(Stdio::null())
        .status()
        .expect("sqlite3 CLI not found: apt-get install sqlite3");
    assert!(out.success(), "sqlite3 failed");
    start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = std::env::var("FG_BENCH_ROWS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut results = Vec::new();
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("tmp");
        eprintln!("preparing {n} rows …");
        let (data, tid, plain) = prepare(dir.path(), n);
        if std::env::var_os("FG_BENCH_KEEP").is_some() {
            eprintln!("  kept: {} (tenant {tid})", dir.path().display());
            std::mem::forget(dir);
        }
        let base = sqlite3_baseline(&plain);
        for format in ["ndjson", "csv"] {
            let (secs, bytes, rss) = export_once(&data, &tid, format).await;
            results.push((n, format, secs, bytes, rss, base));
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n| rows | format | export rows/s | MB/s | peak RSS MiB | sqlite3 -csv rows/s | ratio |\n|---|---|---|---|---|---|---|"
    );
    for (n, f, secs, bytes, rss, base) in &results {
        let rate = *n as f64 / secs;
        let base_rate = *n as f64 / base;
        let _ = writeln!(
            out,
            "| {n} | {f} | {rate:.0} | {:.1} | {:.1} | {base_rate:.0} | {:.2} |",
            *bytes as f64 / secs / 1e6,
            *rss as f64 / 1024.0,
            rate / base_rate
        );
    }
    for f in ["ndjson", "csv"] {
        let small = results.iter().find(|r| r.0 == 100_000 && r.1 == f);
        let big = results.iter().find(|r| r.0 == 1_000_000 && r.1 == f);
        if let (Some(s), Some(b)) = (small, big) {
            let _ = writeln!(
                out,
                "{f}: RSS 1M / 100k = {:.2} (goal ≤ 1.2)",
                b.4 as f64 / s.4 as f64
            );
        }
    }
}
