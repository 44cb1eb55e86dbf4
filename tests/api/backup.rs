//! Backups and restores (issue 19): an online backup of the real server under a write load
//! (runs, step reports, screenshots), restored into another data dir and served on another
//! port; tampering with any backed-up file; restoring with another master key; kill -9 during a
//! backup.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::runs::{decode_rgba, setup, white_png};

const SECRET: &str = "S3cr3t-Canary-4417-zq";

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "warn")
        .output()
        .expect("run flowguard")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn complete_backups(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| {
                    // Exactly `flowguard-backup-yyyymmddThhmmssZ`.
                    let n = p.file_name().unwrap().to_str().unwrap();
                    n.starts_with("flowguard-backup-2") && n.len() == 33
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn upload(agent: &Session, run: &str, n: usize) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(white_png(40, 30))
                .file_name("s.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text(
            "masks",
            json!([{"selector": "#card", "x": 2, "y": 3, "width": 6, "height": 4}]).to_string(),
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

/// One run: create, claim, report step 0, upload the step-3 screenshot. Returns the run id
/// once all four writes were acknowledged.
async fn one_run(owner: &Session, agent: &Session, flow: &str) -> Result<String, String> {
    let r = owner
        .req(Method::POST, &format!("/api/v1/flows/{flow}/runs"), None)
        .await;
    if r.status() != 201 {
        return Err(format!("create run: {}", r.status()));
    }
    let run: Value = r.json().await.unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let r = agent
        .req(Method::POST, "/api/v1/agent/runs/claim", None)
        .await;
    if r.status() != 200 {
        return Err(format!("claim: {}", r.status()));
    }
    for i in [0, 3] {
        let r = agent
            .req(
                Method::POST,
                &format!("/api/v1/agent/runs/{id}/steps"),
                Some(json!({"index": i, "status": "passed", "duration_ms": 7})),
            )
            .await;
        if r.status() != 200 {
            return Err(format!("step {i}: {}", r.status()));
        }
    }
    let r = upload(agent, &id, 3).await;
    if r.status() != 201 {
        return Err(format!("screenshot: {}", r.status()));
    }
    Ok(id)
}

/// Check one run on a (restored) server: the step report and the masked screenshot through a
/// signed URL.
async fn check_run(app: &TestApp, owner: &Session, id: &str) {
    let d = owner
        .json(Method::GET, &format!("/api/v1/runs/{id}"), None, 200)
        .await;
    let steps = d["steps"].as_array().unwrap();
    let step = |i: i64| {
        steps
            .iter()
            .find(|s| s["index"] == i)
            .unwrap_or_else(|| panic!("run {id}: no step {i}: {d}"))
    };
    assert_eq!(step(0)["status"], "passed", "run {id}: {d}");
    assert_eq!(step(3)["has_screenshot"], true, "run {id}: {d}");
    let su = owner
        .json(
            Method::GET,
            &format!("/api/v1/runs/{id}/steps/3/screenshot"),
            None,
            200,
        )
        .await;
    let r = app.anonymous().get(su["url"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200, "run {id}: signed URL");
    let (w, h, px) = decode_rgba(&r.bytes().await.unwrap());
    assert_eq!((w, h), (40, 30));
    let at = |x: u32, y: u32| &px[((y * w + x) * 4) as usize..((y * w + x) * 4 + 4) as usize];
    assert_eq!(at(3, 4), [0, 0, 0, 255], "run {id}: masked pixel not black");
    assert_eq!(at(20, 20), [255, 255, 255, 255]);
}

#[tokio::test]
async fn online_backup_under_write_load_restores_everything_acknowledged_before_it() {
    let app = spawn_app().await;
    let s1 = setup(&app).await;
    let (t2, t2_pw) = create_tenant(&app, "second", "owner2@example.com");
    // Some history before the load starts.
    let mut before = Vec::new();
    for _ in 0..3 {
        before.push(one_run(&s1.owner, &s1.agent, &s1.flow_id).await.unwrap());
    }
    // The write load: runs, step reports, screenshots, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let owner = app.owner().await;
        let agent = app.bearer(&s1.agent_token);
        let flow = s1.flow_id.clone();
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match one_run(&owner, &agent, &flow).await {
                    Ok(id) => acked.lock().push(id),
                    Err(e) => errors.push(e),
                }
            }
            errors
        })
    };
    // Let the load get going, then take the acknowledged set and start the backup.
    while acked.lock().len() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    before.extend(acked.lock().iter().cloned());
    let to = app.dir.path().join("backups");
    let data = app.data.clone();
    let to2 = to.clone();
    let out = tokio::task::spawn_blocking(move || {
        cli(&[
            "backup",
            "create",
            "--data-dir",
            s(&data),
            "--to",
            s(&to2),
            "--json",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Writes went on during the backup.
    let during = acked.lock().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let errors = load.await.unwrap();
    assert!(errors.is_empty(), "the load saw failures: {errors:?}");
    assert!(acked.lock().len() > during || during > 3);

    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = PathBuf::from(summary["dir"].as_str().unwrap());
    assert_eq!(complete_backups(&to), vec![dir.clone()]);
    assert!(summary["manifest_sha256"].as_str().unwrap().len() == 64);
    // The manifest: every store, row counts, hashes; the master key id but never the key.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let stores: Vec<&str> = manifest["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(stores.contains(&"catalog"));
    assert!(stores.contains(&app.tenant_id().as_str()));
    assert!(stores.contains(&t2.as_str()));
    assert!(manifest["stores"][1]["tables"]["runs"].as_i64().unwrap() >= 0);
    assert!(manifest["cipher"]["cipher_version"].as_str().unwrap().len() > 1);
    let master = std::fs::read(app.data.join("keys/master.key")).unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let p = f["path"].as_str().unwrap();
        assert!(!p.contains("master"), "{p}");
        let bytes = std::fs::read(dir.join(p)).unwrap();
        assert!(
            !bytes.windows(master.len()).any(|w| w == &master[..]),
            "{p} holds the master key"
        );
    }

    // Verify against the live data dir's master key.
    let v = cli(&["backup", "verify", s(&dir), "--data-dir", s(&app.data)]);
    assert!(v.status.success(), "{}", text(&v));

    // Restore into a new data dir and serve it on another port, next to the original.
    let new_tmp = tempfile::tempdir().unwrap();
    let new_data = new_tmp.path().join("data");
    let r = cli(&[
        "restore",
        s(&dir),
        "--data-dir",
        s(&new_data),
        "--master-key",
        s(&app.data.join("keys/master.key")),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    // The test harness reads the first-start passwords from this file (not part of a backup).
    std::fs::copy(
        app.data.join("initial-credentials"),
        new_data.join("initial-credentials"),
    )
    .unwrap();
    let restored = spawn_with(Opts {
        dir: Some(new_tmp),
        ..Default::default()
    })
    .await;
    assert_ne!(restored.addr, app.addr);
    let owner = restored.owner().await;
    for id in &before {
        check_run(&restored, &owner, id).await;
    }
    // Secrets decrypt (the agent's claim resolves them) and the agent token still works.
    let agent = restored.bearer(&s1.agent_token);
    let run = owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s1.flow_id),
            None,
            201,
        )
        .await;
    // Runs the load left queued may be claimed first; claim until ours comes.
    let mut seen = false;
    for _ in 0..50 {
        let c = agent
            .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
            .await;
        assert_eq!(c["steps"][2]["value"], SECRET);
        if c["run_id"] == run["id"] {
            seen = true;
            break;
        }
    }
    assert!(seen);
    // The second tenant and its Owner.
    restored
        .login(Some(&t2), "owner2@example.com", &t2_pw)
        .await;
    // Audit chains of the restored deployment.
    let t1 = app.tenant_id();
    for args in [
        vec!["audit", "verify", "--catalog"],
        vec!["audit", "verify", "--tenant", t2.as_str()],
        vec!["audit", "verify", "--tenant", t1.as_str()],
    ] {
        let mut a = args.clone();
        a.extend(["--data-dir", s(&restored.data)]);
        let o = cli(&a);
        assert!(o.status.success(), "{a:?}: {}", text(&o));
    }
    // The original recorded the backup in its catalog audit.
    let admin = app.platform_admin().await;
    let audit = admin
        .json(Method::GET, "/api/v1/platform/audit?limit=50", None, 200)
        .await;
    let txt = audit.to_string();
    assert!(
        txt.contains("backup.create") && txt.contains(summary["manifest_sha256"].as_str().unwrap()),
        "{txt}"
    );
}

fn flip_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(p, b).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[tokio::test]
async fn tampering_wrong_master_key_and_kill_9_are_all_caught() {
    let app = spawn_app().await;
    let s1 = setup(&app).await;
    for _ in 0..2 {
        one_run(&s1.owner, &s1.agent, &s1.flow_id).await.unwrap();
    }
    let to = app.dir.path().join("backups");
    let out = cli(&[
        "backup",
        "create",
        "--data-dir",
        s(&app.data),
        "--to",
        s(&to),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = PathBuf::from(summary["dir"].as_str().unwrap());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut files: Vec<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(files.iter().any(|f| f.starts_with("screenshots/")));
    files.push("manifest.json".into());
    files.push("manifest.sig".into());

    // One flipped byte in any file: verify exits 1 naming it.
    let scratch = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        let copy = scratch.path().join(format!("b{i}"));
        copy_tree(&dir, &copy);
        flip_byte(&copy.join(f));
        let v = cli(&["backup", "verify", s(&copy), "--data-dir", s(&app.data)]);
        assert_eq!(v.status.code(), Some(1), "{f}: {}", text(&v));
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(err.contains(f.as_str()), "{f}: {err}");
    }
    // The untouched backup verifies.
    let v = cli(&["backup", "verify", s(&dir), "--data-dir", s(&app.data)]);
    assert!(v.status.success(), "{}", text(&v));

    // Restoring any of the damaged copies: exit 1 naming the file, and nothing restored is left
    // (restore checks the content once, on the restored files, and removes them when they fail;
    // an empty directory given as the target is left empty).
    let key = app.data.join("keys/master.key");
    for (i, f) in files.iter().enumerate() {
        let target = scratch.path().join(format!("r{i}"));
        let existed = i % 2 == 0;
        if existed {
            std::fs::create_dir(&target).unwrap();
        }
        let r = cli(&[
            "restore",
            s(&scratch.path().join(format!("b{i}"))),
            "--data-dir",
            s(&target),
            "--master-key",
            s(&key),
        ]);
        assert_eq!(r.status.code(), Some(1), "{f}: {}", text(&r));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains(f.as_str()), "{f}: {err}");
        if existed {
            let left: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
            assert!(left.is_empty(), "{f}: restore left {left:?}");
        } else {
            assert!(!target.exists(), "{f}: restore left {}", target.display());
        }
    }

    // Restore with another master key: exit 1 naming the expected key id, nothing written.
    let other = write_secret_file(scratch.path(), "other.key", &"k".repeat(32));
    let target = scratch.path().join("restored");
    let r = cli(&[
        "restore",
        s(&dir),
        "--data-dir",
        s(&target),
        "--master-key",
        s(&other),
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains(manifest["master_key_id"].as_str().unwrap()),
        "{err}"
    );
    assert!(
        !target.exists(),
        "a refused restore wrote {}",
        target.display()
    );
    // Verify with another master key fails too.
    let v = cli(&["backup", "verify", s(&dir), "--master-key", s(&other)]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    // Restore refuses a non-empty directory.
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("x"), "x").unwrap();
    let r = cli(&[
        "restore",
        s(&dir),
        "--data-dir",
        s(&target),
        "--master-key",
        s(&app.data.join("keys/master.key")),
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));

    // kill -9 at growing delays during a backup: never a complete-looking backup that does not
    // verify, and a partial one is never named like a complete one.
    let kto = scratch.path().join("killed");
    for delay_ms in [0u64, 5, 15, 30, 60, 100, 200] {
        let before: Vec<PathBuf> = complete_backups(&kto);
        let mut child = Command::new(bin())
            .args([
                "backup",
                "create",
                "--data-dir",
                s(&app.data),
                "--to",
                s(&kto),
            ])
            .env_remove("FLOWGUARD_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        for b in complete_backups(&kto) {
            if before.contains(&b) {
                continue;
            }
            let v = cli(&["backup", "verify", s(&b), "--data-dir", s(&app.data)]);
            assert!(
                v.status.success(),
                "kill after {delay_ms} ms left a complete-looking backup that does not verify: {}",
                text(&v)
            );
        }
        // Backups are named by the second: wait for the next one.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

fn doctor(data: &Path) -> (Option<i32>, Value, String) {
    let o = Command::new(bin())
        .args(["doctor", "--json", "--data-dir", s(data)])
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "warn")
        .env("FLOWGUARD_STORE__MIN_FREE_MIB", "1")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code(), v, text(&o))
}

#[tokio::test]
async fn doctor_counts_sealed_values_that_do_not_decrypt_per_column() {
    let app = spawn_app().await;
    let s1 = setup(&app).await;
    let run = one_run(&s1.owner, &s1.agent, &s1.flow_id).await.unwrap();
    let t = app.tenant_id();
    // Healthy while the server runs.
    let (code, v, out) = doctor(&app.data);
    assert_eq!(code, Some(0), "{out}");
    let store = v["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == t.as_str())
        .unwrap()
        .clone();
    assert_eq!(store["opens"], true);
    assert_eq!(store["sealed_checked"]["variables.ciphertext"], 1, "{v}");
    assert_eq!(store["sealed_checked"]["screenshots.file"], 1, "{v}");
    assert!(v["free_bytes"].as_u64().unwrap() > 0);

    // Damage one sealed value (flip a byte of its ciphertext) and lose one screenshot file.
    {
        use flowguard::config::{CliOverrides, Settings};
        let settings = Settings::load(
            None,
            &CliOverrides {
                data_dir: Some(app.data.clone()),
                listen: None,
            },
        )
        .unwrap();
        let opened = flowguard::startup::open_data_dir(&settings, false).unwrap();
        let state = flowguard::startup::build_state(std::sync::Arc::new(settings), opened).unwrap();
        let tid = flowguard::domain::TenantId::parse(&t).unwrap();
        let db = state.tenants.get_blocking(&tid).unwrap();
        let c = db.lock();
        let mut ct: Vec<u8> = c
            .query_row(
                "SELECT ciphertext FROM variables WHERE name = 'password'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n = ct.len();
        ct[n - 3] ^= 0x40;
        c.execute(
            "UPDATE variables SET ciphertext = ?1 WHERE name = 'password'",
            [ct],
        )
        .unwrap();
    }
    for e in std::fs::read_dir(app.data.join("screenshots").join(&t)).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let (code, v, out) = doctor(&app.data);
    assert_eq!(code, Some(1), "{out}");
    let store = v["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == t.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        store["sealed_undecryptable"]["variables.ciphertext"], 1,
        "{v}"
    );
    assert_eq!(store["sealed_undecryptable"]["screenshots.file"], 1, "{v}");
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{v}");
    assert!(findings
        .iter()
        .all(|f| f["fix"].as_str().unwrap().len() > 10));
    let _ = run;
}

async fn wait_backup_finished(admin: &Session, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let list = admin
            .json(Method::GET, "/api/v1/platform/backups", None, 200)
            .await;
        let row = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("backup {id} not listed: {list}"));
        if row["status"] != "running" {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backup still running: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn api_backup_runs_in_the_background_one_at_a_time_and_verifies() {
    let app = spawn_app().await;
    let admin = app.platform_admin().await;
    assert_eq!(
        admin
            .json(Method::GET, "/api/v1/platform/backups", None, 200)
            .await["items"],
        json!([])
    );
    // Two requests at once: one starts the backup (202), the other is refused (409).
    let (a, b) = tokio::join!(
        admin.req(Method::POST, "/api/v1/platform/backups", None),
        admin.req(Method::POST, "/api/v1/platform/backups", None)
    );
    let mut got = Vec::new();
    for r in [a, b] {
        let st = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        got.push((st, body));
    }
    got.sort_by_key(|(st, _)| *st);
    assert_eq!(got[0].0, 202, "{got:?}");
    assert_eq!(got[1].0, 409, "{got:?}");
    assert_eq!(got[1].1["code"], "backup_running", "{got:?}");
    let started = &got[0].1;
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(started["trigger"], "api", "{started}");
    let id = started["id"].as_str().unwrap().to_string();

    let row = wait_backup_finished(&admin, &id).await;
    assert_eq!(row["status"], "done", "{row}");
    assert!(row["error"].is_null(), "{row}");
    assert!(row["size_bytes"].as_i64().unwrap() > 0, "{row}");
    assert!(row["duration_ms"].as_i64().is_some(), "{row}");
    let sha = row["manifest_sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64, "{row}");
    let dir = PathBuf::from(row["dir"].as_str().unwrap());
    assert!(dir.starts_with(app.data.join("backups")), "{row}");
    let v = cli(&["backup", "verify", s(&dir), "--data-dir", s(&app.data)]);
    assert!(v.status.success(), "{}", text(&v));

    // Finished: the next request starts a new one.
    let r = admin
        .json(Method::POST, "/api/v1/platform/backups", None, 202)
        .await;
    // Same-second backups share a directory name; whichever way the second ends, it ends.
    let second = wait_backup_finished(&admin, r["id"].as_str().unwrap()).await;
    assert_ne!(second["status"], "running", "{second}");
    let list = admin
        .json(Method::GET, "/api/v1/platform/backups", None, 200)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["items"][1]["id"], id.as_str(), "newest first: {list}");

    // The catalog audit row carries the manifest hash.
    let audit = admin
        .json(Method::GET, "/api/v1/platform/audit?limit=50", None, 200)
        .await
        .to_string();
    assert!(
        audit.contains("backup.create") && audit.contains(&sha),
        "{audit}"
    );
}

#[tokio::test]
async fn backup_job_keeps_the_newest_complete_backups() {
    let app = spawn_with(Opts {
        env: vec![("FLOWGUARD_BACKUP__KEEP".into(), "2".into())],
        ..Default::default()
    })
    .await;
    let backups = app.data.join("backups");
    // Something that is not a complete backup is never pruned.
    std::fs::create_dir_all(backups.join(".flowguard-backup-19990101T000000Z.partial")).unwrap();
    // Nor is anything this deployment did not write as a full backup (review 3, F15): an
    // operator's renamed copies sorting before and after the real ones, an exactly-named dir
    // without a manifest, and (below) a copy whose manifest no longer matches its signature.
    let junk = [
        "flowguard-backup-0-archive-DO-NOT-DELETE",
        "flowguard-backup-notes-keepme",
        "flowguard-backup-20000101T000000Z",
    ];
    for j in junk {
        std::fs::create_dir_all(backups.join(j)).unwrap();
        std::fs::write(backups.join(j).join("data.txt"), "precious").unwrap();
    }
    let forged = backups.join("flowguard-backup-20000101T000001Z");
    let mut made = Vec::new();
    for i in 0..3 {
        let o = Command::new(bin())
            .args(["jobs", "run", "backup", "--data-dir", s(&app.data)])
            .env_remove("FLOWGUARD_CONFIG")
            .env("FLOWGUARD_LOG", "warn")
            .env("FLOWGUARD_BACKUP__KEEP", "2")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("backup: 1 handled"),
            "{}",
            text(&o)
        );
        let now = complete_backups(&backups);
        made.push(now.last().unwrap().clone());
        if i == 0 {
            copy_tree(&made[0], &forged);
            let m = std::fs::read_to_string(forged.join("manifest.json")).unwrap();
            std::fs::write(
                forged.join("manifest.json"),
                m.replacen("\"binary_version\": \"", "\"binary_version\": \"9", 1),
            )
            .unwrap();
        }
        // Directory names have a one-second resolution.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let left: Vec<PathBuf> = made.iter().filter(|p| p.exists()).cloned().collect();
    assert_eq!(left, made[1..].to_vec(), "oldest pruned: {left:?}");
    for j in junk {
        assert!(
            backups.join(j).join("data.txt").exists(),
            "{j} deleted: {:?}",
            complete_backups(&backups)
        );
    }
    assert!(forged.join("manifest.json").exists(), "forged copy deleted");
    assert!(backups
        .join(".flowguard-backup-19990101T000000Z.partial")
        .exists());
    // The list shows the scheduled backups that are kept, done.
    let admin = app.platform_admin().await;
    let list = admin
        .json(Method::GET, "/api/v1/platform/backups", None, 200)
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    for b in items {
        assert_eq!(b["status"], "done", "{b}");
        assert_eq!(b["trigger"], "schedule", "{b}");
    }
    for d in &left {
        let v = cli(&["backup", "verify", s(d), "--data-dir", s(&app.data)]);
        assert!(v.status.success(), "{}", text(&v));
    }
}

/// `restore DIR --data-dir NEW` with extra arguments and environment.
fn restore_with(
    dir: &Path,
    new: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(["restore", s(dir), "--data-dir", s(new)])
        .args(extra)
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[tokio::test]
async fn restore_refuses_clearly_and_writes_only_into_the_new_data_dir() {
    // Review 3, F6/F11/F13.
    let app = spawn_app().await;
    let lic = crate::license::license("lic-restore", "pro", "", None);
    let lic_file = app.dir.path().join("lic.jwt");
    std::fs::write(&lic_file, &lic).unwrap();
    let o = cli(&[
        "license",
        "install",
        s(&lic_file),
        "--data-dir",
        s(&app.data),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let to = app.dir.path().join("bk");
    let o = cli(&[
        "backup",
        "create",
        "--data-dir",
        s(&app.data),
        "--to",
        s(&to),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let bk = PathBuf::from(summary["dir"].as_str().unwrap());
    assert!(bk.join("license.jwt").exists());
    let key = app.data.join("keys/master.key");
    let key_arg = ["--master-key", s(&key)];
    let tmp = tempfile::tempdir().unwrap();

    // F19: `backup verify --json` prints the failure as JSON too.
    let edited = tmp.path().join("edited");
    copy_tree(&bk, &edited);
    let m = std::fs::read_to_string(edited.join("manifest.json")).unwrap();
    std::fs::write(
        edited.join("manifest.json"),
        m.replacen("\"binary_version\": \"", "\"binary_version\": \"9", 1),
    )
    .unwrap();
    let o = cli(&[
        "backup",
        "verify",
        s(&edited),
        "--master-key",
        s(&key),
        "--json",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json on failure");
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("manifest.json"),
        "{v}"
    );

    // F11: no --master-key and none configured: says so, naming the backup's key id.
    let new = tmp.path().join("r1");
    let o = restore_with(&bk, &new, &[], &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("--master-key FILE is required")
            && text(&o).contains(summary["master_key_id"].as_str().unwrap()),
        "{}",
        text(&o)
    );
    assert!(!new.exists());

    // F13: a dangling symlink is named, nothing is created.
    let dang = tmp.path().join("dang");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dang).unwrap();
    let o = restore_with(&bk, &dang, &key_arg, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("symbolic link to a missing directory"),
        "{}",
        text(&o)
    );
    assert!(!tmp.path().join("nowhere").exists());

    // F6: a configured license file (an existing read-only mount, or an absent path) outside
    // the new data dir is never written; the restore completes.
    let etc = tmp.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let live = etc.join("live.jwt");
    std::fs::write(&live, "the live deployment's license").unwrap();
    for (n, lic_path) in [(2, live.clone()), (3, etc.join("absent.jwt"))] {
        let new = tmp.path().join(format!("r{n}"));
        let o = restore_with(
            &bk,
            &new,
            &key_arg,
            &[("FLOWGUARD_LICENSE__FILE", s(&lic_path))],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            std::fs::read_to_string(new.join("license.jwt"))
                .unwrap()
                .trim(),
            lic.trim()
        );
        assert!(
            text(&o).contains("license.file is configured"),
            "{}",
            text(&o)
        );
    }
    assert_eq!(
        std::fs::read_to_string(&live).unwrap(),
        "the live deployment's license"
    );
    assert!(!etc.join("absent.jwt").exists());
}

#[tokio::test]
async fn a_root_run_backup_in_the_data_dir_keeps_the_data_dirs_owner() {
    // Review 3, F18: the data dir belongs to the service user (`nobody` standing in for
    // `flowguard`); `backup create` run as root writes `<data>/backups` owned by that user.
    use std::os::unix::fs::MetadataExt;
    if euid_is_root() {
        let app = spawn_app().await;
        let st = Command::new("chown")
            .args(["-R", "nobody:nogroup", s(&app.data)])
            .status()
            .unwrap();
        assert!(st.success());
        let uid = std::fs::metadata(&app.data).unwrap().uid();
        assert_ne!(uid, 0);
        let o = cli(&["backup", "create", "--data-dir", s(&app.data), "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let backups = app.data.join("backups");
        let mut todo = vec![backups.clone()];
        let mut n = 0;
        while let Some(p) = todo.pop() {
            assert_eq!(std::fs::metadata(&p).unwrap().uid(), uid, "{}", p.display());
            n += 1;
            if p.is_dir() {
                todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        assert!(n > 3, "{n}");
    }
}

fn euid_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test]
async fn a_five_field_backup_schedule_is_a_config_error_naming_the_setting() {
    // Review 3, F17: server job schedules have seconds, like keys.rotation_cron.
    for (bad, want) in [
        ("0 30 2 * *", "expected 6"),
        ("nonsense x y z w v", "not a cron"),
    ] {
        let e = match try_spawn(Opts {
            env: vec![("FLOWGUARD_BACKUP__SCHEDULE".into(), bad.into())],
            ..Default::default()
        })
        .await
        {
            Ok(_) => panic!("`{bad}` accepted"),
            Err(e) => e,
        };
        assert!(
            e.log.contains("backup.schedule") && e.log.contains(bad) && e.log.contains(want),
            "{}",
            e.log
        );
    }
}

#[tokio::test]
async fn doctor_reports_a_license_file_the_server_refuses() {
    // Review 3, F16.
    let app = spawn_app().await;
    for content in ["garbage", ""] {
        std::fs::write(app.data.join("license.jwt"), content).unwrap();
        let (code, v, out) = doctor(&app.data);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["check"] == "license"
                    && f["problem"].as_str().unwrap().contains("refused")),
            "{out}"
        );
    }
}

/// Backup directories (complete ones, any same-second suffix) under `dir`.
fn backup_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
                .filter(|n| n.starts_with("flowguard-backup-2"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn cli_backups_are_listed_and_same_second_backups_never_collide() {
    let app = spawn_app().await;
    let admin = app.platform_admin().await;
    // Three CLI backups started at once (the same second, most runs): each gets its own
    // directory (`…Z`, `…Z-2`, …), none deletes another's partial directory, all succeed.
    let data = app.data.clone();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let d = data.clone();
            std::thread::spawn(move || cli(&["backup", "create", "--data-dir", s(&d), "--json"]))
        })
        .collect();
    let mut summaries = Vec::new();
    for h in handles {
        let o = h.join().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        summaries.push(v);
    }
    let names = backup_dirs(&app.data.join("backups"));
    assert_eq!(names.len(), 3, "{names:?}");
    for n in &names {
        // `flowguard-backup-yyyymmddThhmmssZ` optionally `-<n>`.
        let (stamp, tail) = n.split_at(33);
        assert!(stamp.ends_with('Z'), "{n}");
        assert!(
            tail.is_empty() || (tail.starts_with('-') && tail[1..].parse::<u32>().is_ok()),
            "{n}"
        );
    }
    // Each is listed by the API as a `cli` backup with what it wrote.
    let list = admin
        .json(Method::GET, "/api/v1/platform/backups", None, 200)
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{list}");
    for sm in &summaries {
        let row = items
            .iter()
            .find(|r| r["dir"] == sm["dir"])
            .unwrap_or_else(|| panic!("{sm} not listed: {list}"));
        assert_eq!(row["trigger"], "cli", "{row}");
        assert_eq!(row["status"], "done", "{row}");
        assert_eq!(row["manifest_sha256"], sm["manifest_sha256"], "{row}");
        assert_eq!(row["size_bytes"], sm["bytes"], "{row}");
        assert!(row["duration_ms"].as_i64().is_some(), "{row}");
        let v = cli(&[
            "backup",
            "verify",
            sm["dir"].as_str().unwrap(),
            "--data-dir",
            s(&app.data),
        ]);
        assert!(v.status.success(), "{}", text(&v));
    }
    // A CLI backup and an API backup at once: both end `done` in distinct directories, or the
    // API one is refused while the CLI one runs (409 backup_running); never a failure.
    let d = data.clone();
    let c = std::thread::spawn(move || cli(&["backup", "create", "--data-dir", s(&d), "--json"]));
    let r = admin
        .req(Method::POST, "/api/v1/platform/backups", None)
        .await;
    let st = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let o = c.join().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    if st == 202 {
        let row = wait_backup_finished(&admin, body["id"].as_str().unwrap()).await;
        assert_eq!(row["status"], "done", "{row}");
    } else {
        assert_eq!(
            (st, body["code"].as_str()),
            (409, Some("backup_running")),
            "{body}"
        );
    }
    let list = admin
        .json(Method::GET, "/api/v1/platform/backups", None, 200)
        .await;
    for row in list["items"].as_array().unwrap() {
        assert_eq!(row["status"], "done", "{list}");
    }
    let dirs = backup_dirs(&app.data.join("backups"));
    assert_eq!(
        dirs.len(),
        list["items"].as_array().unwrap().len(),
        "{dirs:?} {list}"
    );
}

#[tokio::test]
async fn a_killed_backup_is_failed_and_never_blocks_the_next_one() {
    let app = spawn_app().await;
    let admin = app.platform_admin().await;
    let backups = app.data.join("backups");
    // `jobs run backup` killed (SIGKILL) while its partial directory exists.
    let mut child = Command::new(bin())
        .args(["jobs", "run", "backup", "--data-dir", s(&app.data)])
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&backups)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            })
            .unwrap_or(false);
        if partial {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no partial backup directory appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Its row is failed ("interrupted"), not `running` forever.
    let list = admin
        .json(Method::GET, "/api/v1/platform/backups", None, 200)
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["trigger"], "schedule", "{list}");
    assert_eq!(items[0]["status"], "failed", "{list}");
    assert!(
        items[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{list}"
    );
    // The next API backup starts (no 409) and completes, without a server restart.
    let r = admin
        .json(Method::POST, "/api/v1/platform/backups", None, 202)
        .await;
    let row = wait_backup_finished(&admin, r["id"].as_str().unwrap()).await;
    assert_eq!(row["status"], "done", "{row}");
    // So does the next `jobs run backup`.
    let o = cli(&["jobs", "run", "backup", "--data-dir", s(&app.data)]);
    assert!(o.status.success(), "{}", text(&o));
    let list = admin
        .json(Method::GET, "/api/v1/platform/backups", None, 200)
        .await;
    let done = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "done")
        .count();
    assert_eq!(done, 2, "{list}");
}

#[tokio::test]
async fn a_missing_audit_signing_key_is_refused_never_silently_replaced() {
    // Review 3, F20: only a first start creates `keys/audit-signing.key`; later a missing or
    // empty file stops `serve` and `backup create`, naming the file and the way back.
    let app = spawn_app().await;
    let owner = app.owner().await;
    let published = owner
        .json(Method::GET, "/api/v1/audit/signing-key", None, 200)
        .await;
    // The first start created it.
    let key_file = app.data.join("keys/audit-signing.key");
    let original = std::fs::read(&key_file).unwrap();
    let to = app.dir.path().join("bk");
    let o = cli(&[
        "backup",
        "create",
        "--data-dir",
        s(&app.data),
        "--to",
        s(&to),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let backup = complete_backups(&to).pop().unwrap();
    let TestApp { mut dir, child, .. } = app;
    drop(child);
    let data = dir.path().join("data");

    for (what, damage) in [("missing", None), ("empty (0 bytes)", Some(&b""[..]))] {
        let _ = std::fs::remove_file(&key_file);
        if let Some(bytes) = damage {
            std::fs::write(&key_file, bytes).unwrap();
        }
        // The host command that signs (a backup manifest) refuses too.
        let o = cli(&["backup", "create", "--data-dir", s(&data), "--to", s(&to)]);
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert!(
            out.contains(&format!("{} is {what}", key_file.display()))
                && out.contains("refusing to create a new key"),
            "{out}"
        );
        assert_eq!(complete_backups(&to).len(), 1, "{out}");
        let e = match try_spawn(Opts {
            dir: Some(dir),
            ..Default::default()
        })
        .await
        {
            Ok(_) => panic!("a deployment without its audit-signing key started"),
            Err(e) => e,
        };
        dir = e.dir;
        let e = e.log;
        assert!(
            e.contains(&format!("{} is {what}", key_file.display()))
                && e.contains("copy keys/audit-signing.key from any backup"),
            "{e}"
        );
        assert!(!e.contains("first start"), "{e}");
        // Nothing was created in its place.
        match damage {
            None => assert!(!key_file.exists()),
            Some(b) => assert_eq!(std::fs::read(&key_file).unwrap(), b),
        }
    }

    // The documented way back: the copy in any backup of this deployment.
    std::fs::remove_file(&key_file).unwrap();
    std::fs::copy(backup.join("keys/audit-signing.key"), &key_file).unwrap();
    let app = spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    assert_eq!(std::fs::read(&key_file).unwrap(), original);
    let owner = app.owner().await;
    let again = owner
        .json(Method::GET, "/api/v1/audit/signing-key", None, 200)
        .await;
    assert_eq!(again, published);
    let v = cli(&["backup", "verify", s(&backup), "--data-dir", s(&app.data)]);
    assert!(v.status.success(), "{}", text(&v));
}

#[tokio::test]
async fn a_restored_deployment_lists_its_source_backup_as_done() {
    // Review 3, F2: the catalog copy is taken while the backup's own row says `running`; the
    // restored deployment must list that backup as done, not failed/interrupted.
    let app = spawn_app().await;
    let admin = app.platform_admin().await;
    let r = admin
        .json(Method::POST, "/api/v1/platform/backups", None, 202)
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    let row = wait_backup_finished(&admin, &id).await;
    assert_eq!(row["status"], "done", "{row}");
    let dir = PathBuf::from(row["dir"].as_str().unwrap());
    // A CLI backup too (its row is written by the CLI process, in the live catalog).
    let to = app.dir.path().join("bk");
    let o = cli(&[
        "backup",
        "create",
        "--data-dir",
        s(&app.data),
        "--to",
        s(&to),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let cli_dir = complete_backups(&to).pop().unwrap();

    for (source, trigger) in [(&dir, "api"), (&cli_dir, "cli")] {
        // The manifest (signature, every file hash) still verifies.
        let v = cli(&["backup", "verify", s(source), "--data-dir", s(&app.data)]);
        assert!(v.status.success(), "{}", text(&v));
        let new_tmp = tempfile::tempdir().unwrap();
        let new_data = new_tmp.path().join("data");
        let r = cli(&[
            "restore",
            s(source),
            "--data-dir",
            s(&new_data),
            "--master-key",
            s(&app.data.join("keys/master.key")),
        ]);
        assert!(r.status.success(), "{}", text(&r));
        std::fs::copy(
            app.data.join("initial-credentials"),
            new_data.join("initial-credentials"),
        )
        .unwrap();
        let restored = spawn_with(Opts {
            dir: Some(new_tmp),
            ..Default::default()
        })
        .await;
        let a2 = restored.platform_admin().await;
        let list = a2
            .json(Method::GET, "/api/v1/platform/backups", None, 200)
            .await;
        let items = list["items"].as_array().unwrap();
        let own = items
            .iter()
            .find(|b| b["trigger"] == trigger)
            .unwrap_or_else(|| panic!("{trigger} backup not listed: {list}"));
        assert_eq!(own["status"], "done", "{list}");
        assert!(own["error"].is_null(), "{list}");
        assert_eq!(own["dir"], source.display().to_string(), "{list}");
        assert!(own["finished_at"].is_string(), "{list}");
        assert!(
            items.iter().all(|b| b["status"] == "done"),
            "a restored deployment lists a failed backup: {list}"
        );
    }
}

/// Every file and directory under `root`: (relative path, size, mtime in ns, mode), sorted.
fn tree_state(root: &Path) -> Vec<(String, u64, i128, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            // A directory's size is its entry table's: compare it by mtime (which any
            // creation or removal inside it changes) rather than size.
            let len = if m.is_dir() { 0 } else { m.len() };
            out.push((rel, len, mtime, m.mode()));
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    let m = std::fs::metadata(root).unwrap();
    out.push((
        ".".into(),
        0,
        i128::from(std::os::unix::fs::MetadataExt::mtime(&m)) * 1_000_000_000
            + i128::from(std::os::unix::fs::MetadataExt::mtime_nsec(&m)),
        0,
    ));
    out.sort();
    out
}

#[tokio::test]
async fn doctor_writes_nothing_to_a_stopped_data_dir() {
    // Issue 19: doctor opens every store read-only. On a data dir whose server has stopped,
    // not one file or directory changes (names, sizes, mtimes, modes), and it still reads
    // every store (sealed values and screenshot files checked).
    let app = spawn_app().await;
    let s1 = setup(&app).await;
    one_run(&s1.owner, &s1.agent, &s1.flow_id).await.unwrap();
    let (t2, _) = create_tenant(&app, "second", "owner2@example.com");
    let t = app.tenant_id();
    let pid = app.child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let TestApp { dir, mut child, .. } = app;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.0.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data = dir.path().join("data");
    // (Sleep past the mtime granularity, so a rewrite with the same size would show.)
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = tree_state(&data);
    let (code, v, out) = doctor(&data);
    assert_eq!(code, Some(0), "{out}");
    let stores = v["stores"].as_array().unwrap();
    assert_eq!(stores.len(), 3, "{v}");
    assert!(stores.iter().all(|s| s["opens"] == true), "{v}");
    let one = stores.iter().find(|s| s["name"] == t.as_str()).unwrap();
    assert_eq!(one["sealed_checked"]["variables.ciphertext"], 1, "{v}");
    assert_eq!(one["sealed_checked"]["screenshots.file"], 1, "{v}");
    assert!(stores.iter().any(|s| s["name"] == t2.as_str()), "{v}");
    let after = tree_state(&data);
    let changed: Vec<_> = before
        .iter()
        .filter(|b| !after.contains(b))
        .chain(after.iter().filter(|a| !before.contains(a)))
        .collect();
    assert!(
        changed.is_empty(),
        "doctor changed the data dir: {changed:?}"
    );
}

#[tokio::test]
async fn ticket_integrations_and_filed_tickets_survive_backup_and_restore() {
    // The tables added after the first backup format (issue 20's ticket integrations with their
    // sealed tracker token, the tickets filed, the outbox) come back from a restore and keep
    // working: the restored deployment files a new ticket with the restored (sealed) token.
    use crate::tickets::{config, integration, run_once, settled, start_tracker, wait_ticket, End};
    let tr = start_tracker();
    let app = spawn_with(Opts {
        config: Some(config(tr.addr.port())),
        ..Default::default()
    })
    .await;
    let w = crate::tickets::world(&app).await;
    let path = format!("/api/v1/applications/{}/integration", w.app_id);
    w.owner
        .json(
            Method::PUT,
            &path,
            Some(integration(
                "jira",
                tr.url("/jira"),
                "ED",
                &tr.ca_pem,
                json!({"file_on_failure": true}),
            )),
            200,
        )
        .await;
    let rid = run_once(&w, End::StepFails("card declined")).await;
    let before = wait_ticket(&w.owner, &rid, settled).await;
    assert_eq!(before["status"], "filed", "{before}");
    let integ_before = w.owner.json(Method::GET, &path, None, 200).await;
    assert_eq!(integ_before["token_set"], true, "{integ_before}");
    let filed_before = tr
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/rest/api/2/issue"))
        .count();

    let to = app.dir.path().join("bk");
    let o = cli(&[
        "backup",
        "create",
        "--data-dir",
        s(&app.data),
        "--to",
        s(&to),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let source = complete_backups(&to).pop().unwrap();
    let new_tmp = tempfile::tempdir().unwrap();
    let new_data = new_tmp.path().join("data");
    let r = cli(&[
        "restore",
        s(&source),
        "--data-dir",
        s(&new_data),
        "--master-key",
        s(&app.data.join("keys/master.key")),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    std::fs::copy(
        app.data.join("initial-credentials"),
        new_data.join("initial-credentials"),
    )
    .unwrap();
    let owner_password = app.owner_password();
    let tenant = app.tenant_id();
    let agent_token = w.agent.bearer.clone().unwrap();
    drop(app);
    let restored = spawn_with(Opts {
        config: Some(config(tr.addr.port())),
        dir: Some(new_tmp),
        ..Default::default()
    })
    .await;
    let owner = restored
        .login(Some(&tenant), "admin@localhost", &owner_password)
        .await;
    // The integration and the filed ticket read back as they were.
    let integ_after = owner.json(Method::GET, &path, None, 200).await;
    assert_eq!(integ_after, integ_before);
    let run = owner
        .json(Method::GET, &format!("/api/v1/runs/{rid}"), None, 200)
        .await;
    assert_eq!(run["ticket"], before, "{run}");
    // The sealed tracker token decrypts: a new failure is filed with it (the fake tracker
    // answers 401 to any other token).
    let w2 = crate::tickets::World {
        owner,
        agent: restored.bearer(&agent_token),
        app_id: w.app_id.clone(),
        flow_id: w.flow_id.clone(),
    };
    let rid2 = run_once(&w2, End::StepFails("a different failure after the restore")).await;
    let after = wait_ticket(&w2.owner, &rid2, settled).await;
    assert_eq!(after["status"], "filed", "{after}");
    assert_eq!(
        tr.seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/rest/api/2/issue"))
            .count(),
        filed_before + 1
    );
}
