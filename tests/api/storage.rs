//! Bounded storage (issue 19): a full data volume refuses writes with 507
//! `insufficient_storage`, keeps every acknowledged write and every read, and takes writes again
//! once space is freed, without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// A tmpfs mounted for the test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `mib` MiB, mode 0700, at `at`. The test needs root (CI runs as root);
    /// it fails, saying so, otherwise.
    fn mount(at: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "this test mounts a tmpfs as the data dir and needs root: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the volume of `dir` with `file` until the write fails with ENOSPC, then give back
/// `headroom` bytes.
fn fill(file: &Path, headroom: u64) {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the volume: {e}"),
        }
    }
    drop(f);
    let keep = written.saturating_sub(headroom);
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(keep)
        .unwrap();
}

fn steps(i: usize) -> Value {
    let long = "x".repeat(400);
    Value::Array(
        (0..40)
            .map(|j| json!({"type": "click", "selector": format!("#flow-{i}-step-{j}-{long}")}))
            .collect(),
    )
}

#[tokio::test]
async fn a_full_volume_refuses_writes_with_507_keeps_reads_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let _mnt = Tmpfs::mount(&tmp.path().join("data"), 24);
    let app = spawn_with(Opts {
        dir: Some(tmp),
        ..Default::default()
    })
    .await;
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_string();
    let flows_url = format!("/api/v1/applications/{app_id}/flows");

    // Fill the volume, leaving ~1 MiB, then write until the volume is full.
    let filler = app.data.join("filler");
    fill(&filler, 1024 * 1024);
    let mut acked: Vec<String> = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let r = owner
            .req(
                Method::POST,
                &flows_url,
                Some(json!({"name": format!("f{i}"), "steps": steps(i)})),
            )
            .await;
        match r.status().as_u16() {
            201 => {
                let v: Value = r.json().await.unwrap();
                acked.push(v["id"].as_str().unwrap().to_string());
            }
            507 => {
                refused = Some(r.json::<Value>().await.unwrap());
                break;
            }
            s => panic!(
                "flow {i}: unexpected {s}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
    let p = refused.expect("the volume never filled up");
    assert_eq!(p["code"], "insufficient_storage", "{p}");
    assert_eq!(p["status"], 507, "{p}");
    assert!(
        !acked.is_empty(),
        "no write succeeded before the volume was full"
    );
    // Still full: further writes are refused the same way, reads keep working.
    let r = owner
        .req(
            Method::POST,
            &flows_url,
            Some(json!({"name": "again", "steps": steps(9999)})),
        )
        .await;
    assert_eq!(r.status(), 507);
    for id in &acked {
        owner
            .json(Method::GET, &format!("/api/v1/flows/{id}"), None, 200)
            .await;
    }
    let listed = owner.json(Method::GET, &flows_url, None, 200).await;
    assert_eq!(app.anonymous().get("/readyz").await.status(), 200);

    // Space freed: writes work again on the same process; nothing acknowledged was lost.
    std::fs::remove_file(&filler).unwrap();
    let f = owner
        .json(
            Method::POST,
            &flows_url,
            Some(json!({"name": "after", "steps": steps(10_000)})),
            201,
        )
        .await;
    for id in acked
        .iter()
        .chain([f["id"].as_str().unwrap().to_string()].iter())
    {
        owner
            .json(Method::GET, &format!("/api/v1/flows/{id}"), None, 200)
            .await;
    }
    let after = owner.json(Method::GET, &flows_url, None, 200).await;
    let count = |v: &Value| {
        v.as_array()
            .or_else(|| v["items"].as_array())
            .map(|a| a.len())
            .unwrap_or(0)
    };
    assert_eq!(count(&listed), acked.len(), "{listed}");
    assert_eq!(count(&after), acked.len() + 1, "{after}");
    assert!(
        app.log_text().contains("the data volume is full"),
        "{}",
        app.log_text()
    );
    // The audit chain of the tenant is intact after the refused writes.
    let o = run_cli(&[
        "audit",
        "verify",
        "--tenant",
        &app.tenant_id(),
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `-wal` size of a store file.
fn wal_len(db: &Path) -> u64 {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    std::fs::metadata(PathBuf::from(p))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_wal_is_truncated_after_a_backup_under_write_load_and_metrics_show_it() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let flows_url = format!("/api/v1/applications/{}/flows", a["id"].as_str().unwrap());
    let store = app.data.join(format!("tenants/{}.db", app.tenant_id()));

    // A write load runs while `backup create` holds its snapshot's read transaction open for
    // 2.5 s per store (debug failpoint pause): the WAL cannot be reset meanwhile and grows.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (owner, url, stop) = (app.owner().await, flows_url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = owner
                    .req(
                        Method::POST,
                        &url,
                        Some(json!({"name": format!("load{i}"), "steps": steps(i)})),
                    )
                    .await;
                assert_eq!(r.status(), 201);
                i += 1;
            }
            i
        })
    };
    let (data, to) = (app.data.clone(), app.dir.path().join("backups"));
    let backup = std::thread::spawn(move || {
        Command::new(bin())
            .args(["backup", "create", "--data-dir"])
            .arg(&data)
            .arg("--to")
            .arg(&to)
            .env_remove("FLOWGUARD_CONFIG")
            .env("FLOWGUARD_LOG", "warn")
            .env("FLOWGUARD_FAULT_PAUSE", "backup:in_snapshot=2500")
            .output()
            .unwrap()
    });
    // WAL sizes sampled every 20 ms while the backup runs.
    let mut samples = Vec::new();
    while !backup.is_finished() {
        samples.push(wal_len(&store));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = load.await.unwrap();
    let o = backup.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(writes > 10, "the load made only {writes} writes");
    // The WAL grew past SQLite's auto-checkpoint size (1000 pages of 4 KiB + frame headers,
    // ~4.1 MB) while the tenant store's snapshot was open…
    let bound = 5 << 20;
    let peak = samples.iter().copied().max().unwrap_or(0);
    assert!(
        peak > bound,
        "the WAL never grew under the load: peak {peak} bytes"
    );
    let at = samples.iter().position(|&v| v > bound).unwrap_or(0);
    // …and the backup truncated it when that snapshot ended. The load goes on during the
    // catalog's (also paused) snapshot, so the file grows again afterwards; what proves the
    // truncation is that it fell far below its peak. Without it the file would keep its size
    // (a checkpoint that resets the WAL only cuts the file to `journal_size_limit`, 16 MiB,
    // above this peak), so the smallest size seen after the peak would stay above `bound`.
    let low = samples[at..].iter().copied().min().unwrap_or(peak);
    assert!(
        low < 1 << 20,
        "the WAL was not truncated after the snapshot: peak {peak} bytes, never below {low} after passing {bound} ({samples:?})"
    );

    // /metrics: WAL bytes of the catalog and the open tenant store, free bytes of the data dir.
    let m = app.anonymous().get("/metrics").await.text().await.unwrap();
    let gauge = |prefix: &str| -> Option<f64> {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let t = app.tenant_id();
    assert!(
        gauge("flowguard_store_wal_bytes{store=\"catalog\"}").is_some(),
        "{m}"
    );
    let tenant_wal = gauge(&format!("flowguard_store_wal_bytes{{store=\"{t}\"}}"));
    assert_eq!(tenant_wal, Some(wal_len(&store) as f64), "{m}");
    let free = gauge("flowguard_data_dir_free_bytes").unwrap_or(0.0);
    assert!(free > 0.0, "{m}");
}

async fn upload_shot(agent: &Session, run: &str, n: usize) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(crate::runs::white_png(40, 30))
            .file_name("s.png")
            .mime_str("image/png")
            .unwrap(),
    );
    agent
        .client
        .post(format!(
            "{}/api/v1/agent/runs/{run}/steps/{n}/screenshot",
            agent.base
        ))
        .bearer_auth(agent.bearer.as_ref().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// A 507 `insufficient_storage` problem+json.
async fn assert_507(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 507, "{what}");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("application/problem+json"), "{what}: {ct}");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "insufficient_storage", "{what}: {p}");
    assert_eq!(p["status"], 507, "{what}: {p}");
}

#[tokio::test]
async fn a_full_volume_by_fault_injection_refuses_writes_with_507_keeps_reads_and_recovers() {
    // The disk-full test without root (issue 19): the `test-faults` failpoint
    // FLOWGUARD_FAULT_DISK_FULL makes every store commit fail as SQLITE_FULL (rolled back) and
    // every screenshot file write fail with ENOSPC while its flag file exists. Runs as root too.
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("disk-full.flag");
    let app = spawn_with(Opts {
        dir: Some(tmp),
        env: vec![(
            "FLOWGUARD_FAULT_DISK_FULL".into(),
            flag.display().to_string(),
        )],
        ..Default::default()
    })
    .await;
    let s1 = crate::runs::setup(&app).await;
    let owner = &s1.owner;
    let flows_url = format!("/api/v1/applications/{}/flows", s1.app_id);
    let mut acked = Vec::new();
    for i in 0..5 {
        let v = owner
            .json(
                Method::POST,
                &flows_url,
                Some(json!({"name": format!("f{i}"), "steps": steps(i)})),
                201,
            )
            .await;
        acked.push(v["id"].as_str().unwrap().to_string());
    }
    let run = owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s1.flow_id),
            None,
            201,
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    s1.agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    let before = owner.json(Method::GET, &flows_url, None, 200).await;

    // The volume is "full".
    std::fs::write(&flag, b"").unwrap();
    let r = owner
        .req(
            Method::POST,
            &flows_url,
            Some(json!({"name": "refused", "steps": steps(99)})),
        )
        .await;
    assert_507(r, "flow create").await;
    let r = s1
        .agent
        .req(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/steps"),
            Some(json!({"index": 0, "status": "passed", "duration_ms": 7})),
        )
        .await;
    assert_507(r, "step report").await;
    assert_507(upload_shot(&s1.agent, &run_id, 0).await, "screenshot").await;
    let shots = app.data.join("screenshots").join(app.tenant_id());
    let left: Vec<_> = std::fs::read_dir(&shots)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused screenshot left files: {left:?}");
    // Reads keep working: every acknowledged flow, the list, the run, /readyz.
    for id in &acked {
        owner
            .json(Method::GET, &format!("/api/v1/flows/{id}"), None, 200)
            .await;
    }
    let during = owner.json(Method::GET, &flows_url, None, 200).await;
    assert_eq!(during, before);
    let r = owner
        .json(Method::GET, &format!("/api/v1/runs/{run_id}"), None, 200)
        .await;
    assert_eq!(r["id"], run_id.as_str(), "{r}");
    assert_eq!(app.anonymous().get("/readyz").await.status(), 200);
    assert!(
        app.log_text().contains("the data volume is full"),
        "{}",
        app.log_text()
    );

    // Space freed: writes work again on the same process; nothing acknowledged was lost.
    std::fs::remove_file(&flag).unwrap();
    let f = owner
        .json(
            Method::POST,
            &flows_url,
            Some(json!({"name": "after", "steps": steps(100)})),
            201,
        )
        .await;
    s1.agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/steps"),
            Some(json!({"index": 0, "status": "passed", "duration_ms": 7})),
            200,
        )
        .await;
    assert_eq!(upload_shot(&s1.agent, &run_id, 0).await.status(), 201);
    acked.push(f["id"].as_str().unwrap().to_string());
    for id in &acked {
        owner
            .json(Method::GET, &format!("/api/v1/flows/{id}"), None, 200)
            .await;
    }
    let after = owner.json(Method::GET, &flows_url, None, 200).await;
    let count = |v: &Value| {
        v.as_array()
            .or_else(|| v["items"].as_array())
            .map(|a| a.len())
            .unwrap_or(0)
    };
    assert_eq!(count(&after), count(&before) + 1, "{after}");
    let o = run_cli(&[
        "audit",
        "verify",
        "--tenant",
        &app.tenant_id(),
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The value of the unlabelled gauge `name` in a `/metrics` text.
fn gauge(metrics: &str, name: &str) -> Option<i64> {
    metrics
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// `flowguard_busy_tenant_stores` from a `/metrics` text.
fn busy_stores(metrics: &str) -> Option<i64> {
    gauge(metrics, "flowguard_busy_tenant_stores")
}

/// Issue 25, busy-store page cache: the server's 5-s pass gives the tenant store that takes the
/// requests the larger page cache (`store.busy_page_cache_kib`) and takes it back once the store
/// is idle; `/metrics` shows how many stores have it.
#[tokio::test]
async fn a_busy_tenant_store_gets_the_large_page_cache_and_gives_it_back_when_idle() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let anon = app.anonymous();
    let m = anon.get("/metrics").await.text().await.unwrap();
    assert_eq!(busy_stores(&m), Some(0), "{m}");
    // Requests on the tenant's store until a pass has seen them (at most a few periods).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        for _ in 0..10 {
            owner.json(Method::GET, "/api/v1/me", None, 200).await;
        }
        let m = anon.get("/metrics").await.text().await.unwrap();
        if busy_stores(&m) == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the busy store never got the large cache: {m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Idle: the next pass that sees no use gives it back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let m = anon.get("/metrics").await.text().await.unwrap();
        if busy_stores(&m) == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle store kept the large cache: {m}"
        );
    }
}

/// `flowguard_open_tenant_stores` from a `/metrics` text.
fn open_stores(metrics: &str) -> Option<i64> {
    gauge(metrics, "flowguard_open_tenant_stores")
}

/// Issue 25: the anonymous sign-in page's `GET /api/v1/auth/methods` asks every tenant's store
/// the first time, through the same pass the jobs use — the stores it had to open are closed
/// again, not left in the open-store cache (where they would evict the stores requests use).
#[tokio::test]
async fn sign_in_methods_read_every_tenant_without_leaving_their_stores_open() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    owner.json(Method::GET, "/api/v1/me", None, 200).await;
    create_tenant(&app, "methods-b", "owner@methods-b.example");
    create_tenant(&app, "methods-c", "owner@methods-c.example");
    let anon = app.anonymous();
    let before = open_stores(&anon.get("/metrics").await.text().await.unwrap());
    let m = anon
        .json(Method::GET, "/api/v1/auth/methods", None, 200)
        .await;
    assert_eq!(m, json!({"password": true, "ldap": false, "oidc": false}));
    let after = open_stores(&anon.get("/metrics").await.text().await.unwrap());
    assert!(before.is_some(), "no gauge");
    assert_eq!(before, after, "the methods pass left stores open");
}
