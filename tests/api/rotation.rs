//! Key lifecycle (issue 4): Owner rotation over the API, SIGKILL of the real server at every
//! phase boundary and at random instants, rotation under load, the scheduled job driven by a
//! test clock, host CLI rotation, and a crash-safe master key rotation.
//!
//! "Decrypts" is checked with the library against the data dir itself (a fresh process view of
//! the files, like a restart): every secret resolves to the value that was acknowledged and every
//! screenshot file decrypts to a PNG.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::runs::{setup, white_png};

/// What a test put into the tenant: secret values by name and the screenshots' (run, step).
struct Fixture {
    app_id: String,
    flow_id: String,
    agent_token: String,
    secrets: BTreeMap<String, String>,
    shots: Vec<(String, usize)>,
}

async fn upload_shot(agent: &Session, run: &str, n: usize) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(white_png(32, 24))
                .file_name("s.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text(
            "masks",
            json!([{"selector": "#card", "x": 1, "y": 1, "width": 5, "height": 5}]).to_string(),
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

/// An application with `n_secrets` secret variables (plus `password`) and `n_shots` runs, each
/// with an uploaded screenshot of step 3.
async fn seed(app: &TestApp, n_secrets: usize, n_shots: usize) -> Fixture {
    let s = setup(app).await;
    let mut secrets = BTreeMap::new();
    for i in 0..=n_secrets {
        let (name, value) = if i == 0 {
            ("password".to_string(), "pw-rotation-canary-0".to_string())
        } else {
            (
                format!("s{i}"),
                format!("secret-value-{i}-{}", "x".repeat(i % 7)),
            )
        };
        s.owner
            .json(
                Method::PUT,
                &format!("/api/v1/applications/{}/variables/{name}", s.app_id),
                Some(json!({"value": value, "secret": true})),
                200,
            )
            .await;
        secrets.insert(name, value);
    }
    let mut shots = Vec::new();
    for _ in 0..n_shots {
        let run = s
            .owner
            .json(
                Method::POST,
                &format!("/api/v1/flows/{}/runs", s.flow_id),
                None,
                201,
            )
            .await;
        let run_id = run["id"].as_str().unwrap().to_string();
        let claim = s
            .agent
            .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
            .await;
        assert_eq!(claim["run_id"], run_id.as_str());
        let r = upload_shot(&s.agent, &run_id, 3).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        shots.push((run_id, 3));
    }
    Fixture {
        app_id: s.app_id,
        flow_id: s.flow_id,
        agent_token: s.agent_token,
        secrets,
        shots,
    }
}

/// Open the data dir with the library (as a restarted process would) and prove that the stores
/// open, every expected secret decrypts to its value and every screenshot file decrypts to a PNG.
/// Returns the number of screenshots checked.
fn verify_offline(
    data: &Path,
    tenant: &str,
    app_id: &str,
    secrets: &BTreeMap<String, String>,
) -> usize {
    use flowguard::domain::TenantId;
    let state = offline_state(data);
    let t = TenantId::parse(tenant).unwrap();
    state.tenants.get_blocking(&t).expect("tenant store opens");
    let resolved = flowguard::service::variables::resolve_blocking(&state, &t, app_id)
        .expect("every secret decrypts");
    for (name, value) in secrets {
        let got = resolved
            .iter()
            .find(|r| &r.name == name)
            .unwrap_or_else(|| panic!("acknowledged secret {name} is missing"));
        assert!(got.secret);
        assert_eq!(got.value.as_str(), value, "secret {name}");
    }
    let mut n = 0;
    for e in std::fs::read_dir(data.join("screenshots").join(tenant)).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "fgs") {
            continue;
        }
        let object = p.file_stem().unwrap().to_str().unwrap().to_string();
        let png = flowguard::service::screenshots::decrypt_blocking(&state, &t, &object)
            .unwrap_or_else(|e| panic!("screenshot {object} does not decrypt: {e}"))
            .unwrap_or_else(|| panic!("screenshot file {object} has no row"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{object} is not a PNG"
        );
        n += 1;
    }
    n
}

/// Whether the catalog records an unfinished rotation of `tenant` (a pending key version).
fn rotation_pending(data: &Path, tenant: &str) -> bool {
    use flowguard::config::{CliOverrides, Settings};
    let settings = Settings::load(
        None,
        &CliOverrides {
            data_dir: Some(data.to_path_buf()),
            listen: None,
        },
    )
    .unwrap();
    let opened = flowguard::startup::open_data_dir(&settings, false).unwrap();
    let c = opened.catalog.db().lock();
    flowguard::store::catalog::tenant_keys(&c, &flowguard::domain::TenantId::parse(tenant).unwrap())
        .unwrap()
        .iter()
        .any(|k| k.state == "pending")
}

/// Wait for a server process to exit; return its status.
fn wait_exit(app: &mut TestApp) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = app.child.0.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Restart a server on a stopped app's data dir.
async fn restart(app: TestApp, config: &str, env: Vec<(String, String)>) -> TestApp {
    let TestApp {
        dir, data, child, ..
    } = app;
    drop(child);
    let _ = std::fs::remove_file(data.join("listen.addr"));
    spawn_with(Opts {
        dir: Some(dir),
        config: Some(config.to_string()),
        env,
        ..Default::default()
    })
    .await
}

async fn keys_status(s: &Session) -> Value {
    s.json(Method::GET, "/api/v1/keys", None, 200).await
}

/// Poll `GET /api/v1/keys` until no rotation is pending and `version` is active.
async fn wait_rotated(app: &TestApp, version: u64) -> Value {
    let owner = app.owner().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let k = keys_status(&owner).await;
        if k["pending_version"].is_null() && k["active_version"] == version {
            return k;
        }
        assert!(
            Instant::now() < deadline,
            "rotation to v{version} did not complete: {k}\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_versions(k: &Value, active: u64) {
    let versions = k["versions"].as_array().unwrap();
    assert_eq!(versions.len() as u64, active, "{k}");
    for v in versions {
        let want = if v["version"] == active {
            "active"
        } else {
            "retired"
        };
        assert_eq!(v["state"], want, "{k}");
        assert_eq!(v["db_key_state"], want, "{k}");
        assert_eq!(v["dek_state"], want, "{k}");
    }
}

#[tokio::test]
async fn owner_rotates_keys_and_everything_still_decrypts() {
    let app = spawn_app().await;
    let fx = seed(&app, 5, 2).await;
    let owner = app.owner().await;
    let before = keys_status(&owner).await;
    assert_eq!(before["active_version"], 1);
    assert_eq!(before["rotation_days"], 90);
    assert_eq!(before["rotation_due"], false);
    assert!(before["next_rotation_at"].is_string());
    assert!(before.get("pending_version").is_none());
    let text = before.to_string();
    assert!(
        !text.contains("wrapped") && !text.contains("nonce"),
        "no key material: {text}"
    );

    let r = owner
        .json(Method::POST, "/api/v1/keys/rotate", None, 200)
        .await;
    assert_eq!(r["rotation"]["from_version"], 1);
    assert_eq!(r["rotation"]["to_version"], 2);
    assert_eq!(r["rotation"]["resumed"], false);
    assert_eq!(r["rotation"]["secrets_resealed"], 6);
    assert_eq!(r["rotation"]["screenshots_resealed"], 2);
    assert_versions(&r["keys"], 2);
    assert!(r["keys"]["versions"][0]["retired_at"].is_string());

    // Secrets still reach the agent; screenshots still serve through signed URLs.
    owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", fx.flow_id),
            None,
            201,
        )
        .await;
    let agent = app.bearer(&fx.agent_token);
    let claim = agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    assert_eq!(claim["steps"][2]["value"], fx.secrets["password"].as_str());
    for (run, n) in &fx.shots {
        let u = owner
            .json(
                Method::GET,
                &format!("/api/v1/runs/{run}/steps/{n}/screenshot"),
                None,
                200,
            )
            .await;
        let img = app
            .client()
            .get(app.url(u["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(img.status(), 200);
        assert!(img.bytes().await.unwrap().starts_with(b"\x89PNG"));
    }
    // New writes after the rotation are sealed under the new key and decrypt too.
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/applications/{}/variables/after", fx.app_id),
            Some(json!({"value": "written-after", "secret": true})),
            200,
        )
        .await;

    // Audit: the tenant trail names the actor and the versions, never key material.
    let audit = owner
        .json(Method::GET, "/api/v1/audit?action=key.rotate", None, 200)
        .await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["actor_email"], "admin@localhost");
    assert_eq!(items[0]["details"]["from_version"], 1);
    assert_eq!(items[0]["details"]["to_version"], 2);

    // Non-owners cannot rotate (and nothing happens).
    let admin_pw = "admin-password-1234";
    owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": "adm@x.example", "role": "admin", "password": admin_pw})),
            201,
        )
        .await;
    let admin = app
        .login(Some(&app.tenant_id()), "adm@x.example", admin_pw)
        .await;
    let r = admin.req(Method::POST, "/api/v1/keys/rotate", None).await;
    assert_eq!(r.status(), 403);
    assert_versions(&keys_status(&owner).await, 2);

    let tid = app.tenant_id();
    let TestApp {
        dir, data, child, ..
    } = app;
    drop(child);
    let mut secrets = fx.secrets.clone();
    secrets.insert("after".into(), "written-after".into());
    assert_eq!(verify_offline(&data, &tid, &fx.app_id, &secrets), 2);
    drop(dir);
}

/// Failpoints at every phase boundary of a rotation, in order.
const PHASES: &[&str] = &[
    "rotation:after_pending",
    "rotation:after_fence",
    "rotation:rewrap_batch",
    "rotation:after_rewrap",
    "rotation:after_rekey",
    "rotation:after_db_key",
    "rotation:screenshot",
    "rotation:after_screenshots",
    "rotation:after_retire",
];

const SMALL_BATCH: &str = "[keys]\nrewrap_batch = 3\n";

#[tokio::test]
async fn sigkill_at_every_phase_boundary_then_restart_finishes_the_rotation() {
    let mut app = spawn_with(Opts {
        config: Some(SMALL_BATCH.into()),
        ..Default::default()
    })
    .await;
    let fx = seed(&app, 10, 3).await;
    let tid = app.tenant_id();
    for (i, fault) in PHASES.iter().enumerate() {
        let target = i as u64 + 2;
        app = restart(
            app,
            SMALL_BATCH,
            vec![("FLOWGUARD_FAULT".into(), fault.to_string())],
        )
        .await;
        let owner = app.owner().await;
        // The rotation request dies with the process.
        let _ = owner
            .client
            .post(app.url("/api/v1/keys/rotate"))
            .header("X-CSRF-Token", &owner.csrf)
            .send()
            .await;
        let st = wait_exit(&mut app);
        assert_eq!(
            st.signal(),
            Some(9),
            "{fault}: killed by SIGKILL\n{}",
            app.log_text()
        );

        // At the crash instant: the stores open and everything decrypts.
        assert_eq!(
            verify_offline(&app.data, &tid, &fx.app_id, &fx.secrets),
            3,
            "{fault}"
        );

        // Restart: the start-up run of the key-rotation job finishes the rotation.
        app = restart(app, SMALL_BATCH, vec![]).await;
        let k = wait_rotated(&app, target).await;
        assert_versions(&k, target);
        assert_eq!(
            verify_offline(&app.data, &tid, &fx.app_id, &fx.secrets),
            3,
            "{fault}"
        );
    }
    // The Owner-facing trail has one `key.rotate` row per rotation.
    let owner = app.owner().await;
    let audit = owner
        .json(
            Method::GET,
            "/api/v1/audit?action=key.rotate&limit=100",
            None,
            200,
        )
        .await;
    assert_eq!(
        audit["items"].as_array().unwrap().len(),
        PHASES.len(),
        "{audit}"
    );
}

#[tokio::test]
async fn random_sigkills_during_rotation_lose_no_acknowledged_write() {
    use rand::Rng;
    let mut app = spawn_with(Opts {
        config: Some(SMALL_BATCH.into()),
        ..Default::default()
    })
    .await;
    let fx = seed(&app, 60, 4).await;
    let tid = app.tenant_id();
    let mut acked = fx.secrets.clone();

    // Calibrate: how long one uninterrupted rotation takes here.
    let owner = app.owner().await;
    let t0 = Instant::now();
    owner
        .json(Method::POST, "/api/v1/keys/rotate", None, 200)
        .await;
    let span = t0.elapsed().as_millis() as u64;

    let mut rng = rand::thread_rng();
    let mut mid_rotation = 0;
    let mut kills = 0;
    // At least 20 kills; on a loaded machine keep going (up to 60) until at least 3 of them
    // landed inside a rotation, so the assertion below measures the code, not the scheduler.
    for iter in 0..60 {
        if iter >= 20 && mid_rotation >= 3 {
            break;
        }
        kills += 1;
        app = restart(app, SMALL_BATCH, vec![]).await;
        let owner = Arc::new(app.owner().await);
        // A writer whose acknowledged secrets must all survive.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (owner, stop, app_id) = (owner.clone(), stop.clone(), fx.app_id.clone());
            tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (name, value) = (format!("w{iter}_{k}"), format!("acked-{iter}-{k}"));
                    let r = owner
                        .client
                        .put(format!(
                            "{}/api/v1/applications/{app_id}/variables/{name}",
                            owner.base
                        ))
                        .header("X-CSRF-Token", &owner.csrf)
                        .json(&json!({"value": value, "secret": true}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => ok.push((name, value)),
                        _ => break,
                    }
                    k += 1;
                }
                ok
            })
        };
        // Rotate (the start-up job may still be finishing the previous one: 409 → again).
        let rotator = {
            let owner = owner.clone();
            tokio::spawn(async move {
                loop {
                    let r = owner
                        .client
                        .post(format!("{}/api/v1/keys/rotate", owner.base))
                        .header("X-CSRF-Token", &owner.csrf)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 409 => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        _ => break,
                    }
                }
            })
        };
        let delay = rng.gen_range(0..=span * 3 / 2 + 20);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        app.child.0.kill().unwrap();
        let st = wait_exit(&mut app);
        assert_eq!(st.signal(), Some(9));
        stop.store(true, Ordering::Relaxed);
        for (n, v) in writer.await.unwrap() {
            acked.insert(n, v);
        }
        let _ = rotator.await;
        if rotation_pending(&app.data, &tid) {
            mid_rotation += 1;
        }
        assert_eq!(
            verify_offline(&app.data, &tid, &fx.app_id, &acked),
            4,
            "iteration {iter} (killed after {delay} ms)"
        );
    }
    // The kills are spread over the rotation: some must have landed inside one (a pending
    // version on disk), or this test proved nothing about crash safety.
    eprintln!("{mid_rotation} of {kills} kills landed inside a rotation (window {span} ms)");
    assert!(
        mid_rotation >= 3,
        "only {mid_rotation} of {kills} kills landed mid-rotation"
    );
    app = restart(app, SMALL_BATCH, vec![]).await;
    let owner = app.owner().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let k = loop {
        let k = keys_status(&owner).await;
        if k["pending_version"].is_null() {
            break k;
        }
        assert!(Instant::now() < deadline, "rotation never completed: {k}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let active = k["active_version"].as_u64().unwrap();
    assert!(active >= 3, "{k}");
    assert_versions(&k, active);
    assert_eq!(verify_offline(&app.data, &tid, &fx.app_id, &acked), 4);
}

#[tokio::test]
async fn rotating_while_eight_clients_read_and_write_fails_no_request() {
    let app = spawn_with(Opts {
        config: Some(SMALL_BATCH.into()),
        ..Default::default()
    })
    .await;
    let fx = Arc::new(seed(&app, 20, 2).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..8 {
        let s = app.owner().await;
        let (fx, stop) = (fx.clone(), stop.clone());
        let agent = app.bearer(&fx.agent_token);
        let base = app.base.clone();
        let plain = app.client();
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut acked = Vec::new();
            let mut k = 0;
            let mut record = |what: String, st: u16, body: String, want: &[u16]| {
                if !want.contains(&st) {
                    failures.push(format!("client {i}: {what} → {st} {body}"));
                }
            };
            while !stop.load(Ordering::Relaxed) || k < 3 {
                let (name, value) = (format!("c{i}_{k}"), format!("v-{i}-{k}"));
                let r = s
                    .req(
                        Method::PUT,
                        &format!("/api/v1/applications/{}/variables/{name}", fx.app_id),
                        Some(json!({"value": value, "secret": true})),
                    )
                    .await;
                let st = r.status().as_u16();
                record(format!("PUT {name}"), st, r.text().await.unwrap(), &[200]);
                if st == 200 {
                    acked.push((name, value));
                }
                let r = s
                    .get(&format!("/api/v1/applications/{}/variables", fx.app_id))
                    .await;
                record(
                    "GET variables".into(),
                    r.status().as_u16(),
                    String::new(),
                    &[200],
                );
                let (run, n) = &fx.shots[i % fx.shots.len()];
                let r = s
                    .get(&format!("/api/v1/runs/{run}/steps/{n}/screenshot"))
                    .await;
                let st = r.status().as_u16();
                let u: Value = r.json().await.unwrap_or(Value::Null);
                record("GET screenshot url".into(), st, u.to_string(), &[200]);
                if let Some(url) = u["url"].as_str() {
                    let img = plain.get(format!("{base}{url}")).send().await.unwrap();
                    let st = img.status().as_u16();
                    let b = img.bytes().await.unwrap();
                    record("GET screenshot".into(), st, String::new(), &[200]);
                    if st == 200 && !b.starts_with(b"\x89PNG") {
                        record("screenshot is not a PNG".into(), st, String::new(), &[]);
                    }
                }
                if i < 2 {
                    // Secrets resolved for an agent while keys change.
                    let r = s
                        .req(
                            Method::POST,
                            &format!("/api/v1/flows/{}/runs", fx.flow_id),
                            None,
                        )
                        .await;
                    record("trigger".into(), r.status().as_u16(), String::new(), &[201]);
                    let r = agent
                        .req(Method::POST, "/api/v1/agent/runs/claim", None)
                        .await;
                    let st = r.status().as_u16();
                    record("claim".into(), st, String::new(), &[200, 204]);
                    if st == 200 {
                        let c: Value = r.json().await.unwrap();
                        if c["steps"][2]["value"] != fx.secrets["password"].as_str() {
                            record(
                                "claim resolved a wrong secret".into(),
                                st,
                                c.to_string(),
                                &[],
                            );
                        }
                    }
                }
                k += 1;
            }
            (failures, acked)
        }));
    }
    let owner = app.owner().await;
    for v in 2..=4u64 {
        let r = owner
            .json(Method::POST, "/api/v1/keys/rotate", None, 200)
            .await;
        assert_eq!(r["rotation"]["to_version"], v);
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = fx.secrets.clone();
    let mut failures = Vec::new();
    for c in clients {
        let (f, a) = c.await.unwrap();
        failures.extend(f);
        acked.extend(a);
    }
    assert!(
        failures.is_empty(),
        "failed requests:\n{}",
        failures.join("\n")
    );
    assert_versions(&keys_status(&owner).await, 4);
    assert_eq!(
        verify_offline(&app.data, &app.tenant_id(), &fx.app_id, &acked),
        2
    );
}

fn write_clock(path: &Path, t: chrono::DateTime<chrono::Utc>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, t.to_rfc3339()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn job_runs(app: &TestApp) -> usize {
    app.log_text()
        .lines()
        .filter(|l| l.contains("\"job\":\"key-rotation\""))
        .count()
}

async fn wait_job_runs(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while job_runs(app) < n {
        assert!(
            Instant::now() < deadline,
            "key-rotation job did not run:\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn scheduled_job_rotates_once_the_key_is_older_than_rotation_days() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    let start = chrono::Utc::now();
    write_clock(&clock, start);
    let config = "[keys]\nrotation_days = 90\nrotation_cron = \"* * * * * *\"\n";
    let app = spawn_with(Opts {
        dir: Some(dir),
        config: Some(config.into()),
        env: vec![
            (
                "FLOWGUARD_TEST_CLOCK_FILE".into(),
                clock.display().to_string(),
            ),
            ("FLOWGUARD_LOG".into(), "info,flowguard::jobs=debug".into()),
        ],
        ..Default::default()
    })
    .await;
    let fx = seed(&app, 3, 1).await;
    let owner = app.owner().await;
    let k = keys_status(&owner).await;
    assert_eq!(k["active_version"], 1);
    let created =
        chrono::DateTime::parse_from_rfc3339(k["versions"][0]["created_at"].as_str().unwrap())
            .unwrap();
    let due =
        chrono::DateTime::parse_from_rfc3339(k["next_rotation_at"].as_str().unwrap()).unwrap();
    assert_eq!((due - created).num_days(), 90);

    // 89 days later the job runs (every second here) and leaves the key alone.
    write_clock(&clock, start + chrono::Duration::days(89));
    let seen = job_runs(&app);
    wait_job_runs(&app, seen + 2).await;
    let k = keys_status(&owner).await;
    assert_eq!(k["active_version"], 1, "{k}");
    assert_eq!(k["rotation_due"], false);

    // Past the limit: the next tick rotates.
    let later = start + chrono::Duration::days(91);
    write_clock(&clock, later);
    let k = wait_rotated(&app, 2).await;
    assert_versions(&k, 2);
    // The new key set is dated by the same clock, so it is not due again.
    let created2 =
        chrono::DateTime::parse_from_rfc3339(k["versions"][1]["created_at"].as_str().unwrap())
            .unwrap();
    assert!(
        (created2.with_timezone(&chrono::Utc) - later)
            .num_seconds()
            .abs()
            < 60,
        "{k}"
    );
    let seen = job_runs(&app);
    wait_job_runs(&app, seen + 2).await;
    assert_eq!(keys_status(&owner).await["active_version"], 2);

    let audit = owner
        .json(Method::GET, "/api/v1/audit?action=key.rotate", None, 200)
        .await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["actor_email"], "system:scheduler");
    let tid = app.tenant_id();
    let TestApp {
        dir, data, child, ..
    } = app;
    drop(child);
    verify_offline(&data, &tid, &fx.app_id, &fx.secrets);
    drop(dir);
}

fn cli(data: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(bin());
    c.args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[tokio::test]
async fn cli_rotation_needs_the_server_stopped_then_rotates_every_tenant() {
    let app = spawn_app().await;
    let fx = seed(&app, 4, 1).await;
    let (tid_b, _) = create_tenant(&app, "other", "o@other.example");
    let tid = app.tenant_id();
    // While the server runs, key-changing host commands refuse and change nothing.
    for args in [
        &["keys", "rotate", "--all"][..],
        &["jobs", "run", "key-rotation"][..],
    ] {
        let out = cli(&app.data, args, &[]);
        assert!(!out.status.success(), "{args:?} must refuse while serving");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("flowguard.lock") && err.contains("stop the server"),
            "{err}"
        );
    }
    let out = cli(&app.data, &["keys", "rotate"], &[]);
    assert!(!out.status.success(), "--tenant or --all is required");
    // Status works while serving.
    let out = cli(&app.data, &["keys", "status", "--json"], &[]);
    assert!(out.status.success());
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st.as_array().unwrap().len(), 2);
    assert!(st
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["active_version"] == 1));

    let TestApp {
        dir, data, child, ..
    } = app;
    drop(child);
    let out = cli(&data, &["keys", "rotate", "--tenant", &tid], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("v1 -> v2") && text.contains("5 secrets"),
        "{text}"
    );
    let out = cli(&data, &["keys", "rotate", "--all"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&data, &["keys", "status", "--json"], &[]);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in st.as_array().unwrap() {
        let want = if s["tenant_id"] == tid.as_str() { 3 } else { 2 };
        assert_eq!(s["active_version"], want, "{s}");
    }
    assert!(st.to_string().contains(&tid_b));
    // A CLI rotation killed half-way is finished by the next one.
    let out = cli(
        &data,
        &["keys", "rotate", "--tenant", &tid],
        &[("FLOWGUARD_FAULT", "rotation:after_rekey")],
    );
    assert_eq!(out.status.signal(), Some(9));
    verify_offline(&data, &tid, &fx.app_id, &fx.secrets);
    let out = cli(&data, &["keys", "rotate", "--tenant", &tid], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("finished an interrupted rotation"));
    let out = cli(&data, &["keys", "status", "--tenant", &tid, "--json"], &[]);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_versions(&st[0], 4);
    assert_eq!(verify_offline(&data, &tid, &fx.app_id, &fx.secrets), 1);
    drop(dir);
}

#[tokio::test]
async fn rotate_master_survives_sigkill_at_each_step_and_retires_the_old_key() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let fx = seed(&app, 4, 1).await;
    let (tid_b, _) = create_tenant(&app, "other", "o@other.example");
    let tid = app.tenant_id();
    let mut app = app;
    let mut keys_seen = vec![std::fs::read(app.data.join("keys/master.key")).unwrap()];
    // The audit-signing key is wrapped under the master key too: it must survive every
    // rotation unchanged (exports stay verifiable with the published public key).
    let signing_key = app
        .owner()
        .await
        .get("/api/v1/audit/signing-key")
        .await
        .text()
        .await
        .unwrap();
    assert!(signing_key.contains("PUBLIC KEY"), "{signing_key}");

    // Refused while the server runs.
    let newkey = app.dir.path().join("new0.key");
    std::fs::write(&newkey, [9u8; 32]).unwrap();
    std::fs::set_permissions(&newkey, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = cli(
        &app.data,
        &[
            "keys",
            "rotate-master",
            "--new-key-file",
            newkey.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    // A too-open key file is refused before anything changes.
    std::fs::set_permissions(&newkey, std::fs::Permissions::from_mode(0o644)).unwrap();

    for (round, fault) in [
        "master:after_stage",
        "master:after_rekey",
        "master:after_swap",
    ]
    .iter()
    .enumerate()
    {
        let TestApp {
            dir, data, child, ..
        } = app;
        drop(child);
        if round == 0 {
            let out = cli(
                &data,
                &[
                    "keys",
                    "rotate-master",
                    "--new-key-file",
                    newkey.to_str().unwrap(),
                ],
                &[],
            );
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("too open"));
        }
        let key: [u8; 32] = rand::random();
        let f = dir.path().join(format!("new{}.key", round + 1));
        std::fs::write(&f, key).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let args = [
            "keys",
            "rotate-master",
            "--new-key-file",
            f.to_str().unwrap(),
        ];
        let out = cli(&data, &args, &[("FLOWGUARD_FAULT", fault)]);
        assert_eq!(out.status.signal(), Some(9), "{fault}");
        if *fault != "master:after_stage" {
            // The catalog is under the new key now: starting with the old key refuses, naming
            // the unfinished rotation.
            let _ = std::fs::remove_file(data.join("listen.addr"));
            let e = match try_spawn(Opts {
                dir: Some(dir),
                ..Default::default()
            })
            .await
            {
                Ok(_) => panic!("{fault}: started with the old master key"),
                Err(e) => e,
            };
            assert!(e.log.contains("rotate-master"), "{fault}: {}", e.log);
            let out = cli(&data, &args, &[]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("finished an interrupted rotation"), "{text}");
            app = restart_dir(e.dir).await;
        } else {
            // Nothing irreversible happened: the old key still opens everything; rerun.
            verify_offline(&data, &tid, &fx.app_id, &fx.secrets);
            let out = cli(&data, &args, &[]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            app = restart_dir(dir).await;
        }
        assert_eq!(
            std::fs::read(app.data.join("keys/master.key")).unwrap(),
            key
        );
        assert!(!app.data.join("keys/rotate-master.pending").exists());
        keys_seen.push(key.to_vec());
        assert!(!app.data.join("keys/audit-signing.key.next").exists());
        let now_key = app
            .owner()
            .await
            .get("/api/v1/audit/signing-key")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(now_key, signing_key, "{fault}: audit-signing key changed");
        // Both tenants' data is intact under the new master key.
        app.owner().await;
        assert_eq!(verify_offline(&app.data, &tid, &fx.app_id, &fx.secrets), 1);
        let s = keys_status(&app.owner().await).await;
        assert_eq!(s["active_version"], 1);
        let out = cli(
            &app.data,
            &["keys", "status", "--tenant", &tid_b, "--json"],
            &[],
        );
        assert!(out.status.success());
    }
    // Every earlier master key is useless now: none opens the catalog.
    let data = app.data.clone();
    let TestApp { dir, child, .. } = app;
    drop(child);
    for old in &keys_seen[..keys_seen.len() - 1] {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        k.copy_from_slice(old);
        let m = flowguard::crypto::MasterKey::from_bytes(k, "old".into());
        assert!(matches!(
            flowguard::store::Catalog::open(&data, &m, false, 100),
            Err(flowguard::store::StoreError::WrongKey(_))
        ));
    }
    // Catalog audit: one key.rotate_master per rotation (read with the current key).
    let settings = flowguard::config::Settings::load(
        None,
        &flowguard::config::CliOverrides {
            data_dir: Some(data.clone()),
            listen: None,
        },
    )
    .unwrap();
    let opened = flowguard::startup::open_data_dir(&settings, false).unwrap();
    let rows = {
        let c = opened.catalog.db().lock();
        flowguard::store::audit::list(
            &c,
            &flowguard::store::audit::AuditQuery {
                action: Some("key.rotate_master".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap()
    };
    assert_eq!(rows.len(), 3);
    drop(dir);
}

async fn restart_dir(dir: tempfile::TempDir) -> TestApp {
    let _ = std::fs::remove_file(dir.path().join("data/listen.addr"));
    spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await
}

// ---------------------------------------------------------------- sealed writes racing rotations

/// Rounds of the race below (one rotation each).
const RACE_ROUNDS: u64 = 30;
/// Pause between sealing a value and its store write (debug failpoint `sealing:before_write`):
/// long enough that a value sealed just before a rotation records its pending key reaches the
/// store after the rotation raised the fence — and, were the store write not fence-checked,
/// after the rotation's rewrap had passed its column.
const RACE_PAUSE_MS: u64 = 20;
/// The secret variable the race writes.
const RACED_VAR: &str = "raced";

/// One writer of the race: each writes one sealed value over the API, again and again.
#[derive(Debug, Clone, Copy)]
enum Writer {
    /// `PUT /api/v1/applications/{app}/variables/raced` (secret): `variables.ciphertext`.
    Variable,
    /// `PUT /api/v1/ai-endpoint` with an `api_key`: `ai_endpoint.api_key`.
    AiKey,
    /// `PUT /api/v1/sso/ldap` with a new `bind_password` (and the client key):
    /// `ldap_config.bind_password` and `ldap_config.client_key`.
    Ldap,
    /// `PUT /api/v1/sso/oidc` with a new `client_secret`: `oidc_config.client_secret`.
    Oidc,
    /// A screenshot upload replacing step 3's: the sealed file.
    Shot,
    /// `PUT /api/v1/applications/{app}/integration` with a new token: `integrations.token`.
    Integration,
}

/// What the race writes to.
struct RaceCtx {
    app_id: String,
    run: String,
    ai_url: String,
    ai_ca: String,
    /// `PUT /api/v1/sso/ldap` body; `bind_password` is replaced on every write.
    ldap: Value,
}

/// The last value the server acknowledged for each sealed value.
#[derive(Debug, Default)]
struct Acked {
    variable: String,
    ai_key: String,
    ldap_bind: String,
    oidc_secret: String,
    /// Object id of step 3's screenshot.
    shot: String,
    /// The ticket integration's token.
    integration_token: String,
}

impl Acked {
    fn set(&mut self, w: Writer, v: String) {
        match w {
            Writer::Variable => self.variable = v,
            Writer::AiKey => self.ai_key = v,
            Writer::Ldap => self.ldap_bind = v,
            Writer::Oidc => self.oidc_secret = v,
            Writer::Shot => self.shot = v,
            Writer::Integration => self.integration_token = v,
        }
    }
}

async fn expect_status(r: reqwest::Response, want: u16, what: &str) -> Result<Value, String> {
    let st = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    if st == want {
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    } else {
        Err(format!("{what} → {st} {text}"))
    }
}

/// One write by `w` of a value tagged `tag`; the value (for a screenshot, its object id) once
/// acknowledged.
async fn race_write(w: Writer, s: &Session, cx: &RaceCtx, tag: &str) -> Result<String, String> {
    match w {
        Writer::Variable => {
            let value = format!("var-{tag}");
            let r = s
                .req(
                    Method::PUT,
                    &format!("/api/v1/applications/{}/variables/{RACED_VAR}", cx.app_id),
                    Some(json!({"value": value, "secret": true})),
                )
                .await;
            expect_status(r, 200, "PUT variable").await.map(|_| value)
        }
        Writer::AiKey => {
            let key = format!("sk-{tag}");
            let body = json!({"kind": "openai-chat", "base_url": cx.ai_url, "model": "race-model",
                "api_key": key, "ca_pem": cx.ai_ca});
            let r = s.req(Method::PUT, "/api/v1/ai-endpoint", Some(body)).await;
            expect_status(r, 200, "PUT ai-endpoint").await.map(|_| key)
        }
        Writer::Ldap => {
            let pw = format!("svc-{tag}");
            let mut body = cx.ldap.clone();
            body["bind_password"] = json!(pw);
            let r = s.req(Method::PUT, "/api/v1/sso/ldap", Some(body)).await;
            expect_status(r, 200, "PUT sso/ldap").await.map(|_| pw)
        }
        Writer::Oidc => {
            let secret = format!("oidc-{tag}");
            // Saving does not contact the provider; `localhost` passes egress.allow by name.
            let body = json!({"enabled": true, "issuer": "https://localhost:1/realms/race",
                "client_id": "flowguard", "client_secret": secret});
            let r = s.req(Method::PUT, "/api/v1/sso/oidc", Some(body)).await;
            expect_status(r, 200, "PUT sso/oidc").await.map(|_| secret)
        }
        Writer::Integration => {
            let token = format!("pat-{tag}");
            let body = json!({"provider": "gitlab", "base_url": cx.ai_url, "project": "grp/shop",
                "auth": {"token": token}, "ca_pem": cx.ai_ca});
            let r = s
                .req(
                    Method::PUT,
                    &format!("/api/v1/applications/{}/integration", cx.app_id),
                    Some(body),
                )
                .await;
            expect_status(r, 200, "PUT integration")
                .await
                .map(|_| token)
        }
        Writer::Shot => {
            let r = upload_shot(s, &cx.run, 3).await;
            let v = expect_status(r, 201, "upload screenshot").await?;
            Ok(v["id"].as_str().unwrap_or_default().to_string())
        }
    }
}

/// Open the data dir with the library (the server is idle between rounds) and prove that no
/// value is left under a retired key: no rotation is pending, the fence stands at the active DEK
/// version, no cell of the store nor any screenshot is sealed below it, and every sealed value
/// the race writes is sealed under the active DEK, opens, and is the last acknowledged write.
fn verify_sealed_offline(
    data: &Path,
    tenant: &str,
    cx: &RaceCtx,
    acked: &Acked,
    client_key_pem: &str,
    round: u64,
) -> u32 {
    use flowguard::crypto::envelope;
    use flowguard::domain::TenantId;
    use flowguard::service::sealing::{self, Sealed};
    use flowguard::store::{ai, fence, integrations, ldap, oidc, variables};
    let state = offline_state(data);
    let t = TenantId::parse(tenant).unwrap();
    let keys = flowguard::service::keys::status_blocking(&state, &t).unwrap();
    assert!(
        keys.pending_version.is_none(),
        "round {round}: a rotation is unfinished: {keys:?}"
    );
    let active = keys.active_version.expect("an active key set");
    let db = state.tenants.get_blocking(&t).expect("tenant store opens");
    let (fence_v, below, shots_below, var, ai_row, ldap_row, oidc_row, shot, integration) = {
        let c = db.lock();
        (
            fence::dek_fence(&c).unwrap(),
            fence::sealed_below(&c, active).unwrap(),
            fence::count_screenshots_below(&c, active).unwrap(),
            variables::variables(&c, &cx.app_id)
                .unwrap()
                .into_iter()
                .find(|v| v.name == RACED_VAR)
                .expect("the raced variable"),
            ai::ai_endpoint(&c).unwrap().expect("the AI endpoint"),
            ldap::config(&c).unwrap().expect("the LDAP configuration"),
            oidc::config(&c).unwrap().expect("the OIDC configuration"),
            flowguard::store::screenshots::screenshot_of(&c, &cx.run, 3)
                .unwrap()
                .expect("step 3's screenshot"),
            integrations::integration(&c, &cx.app_id)
                .unwrap()
                .expect("the ticket integration"),
        )
    };
    drop(db);
    assert_eq!(fence_v, active, "round {round}: fence below the active DEK");
    assert!(
        below.is_empty() && shots_below == 0,
        "round {round}: values under a retired DEK: {below:?}, {shots_below} screenshot(s)"
    );
    let check = |what: &str, col: &Sealed, key: &[&str], ct: &[u8], want: &str| {
        let v = envelope::key_version(ct).unwrap();
        assert!(
            v >= fence_v && v == active,
            "round {round}: {what} is sealed under DEK v{v} (fence v{fence_v}, active v{active})"
        );
        let pt = sealing::open(&state, &t, col, key, ct)
            .unwrap_or_else(|e| panic!("round {round}: {what} does not open: {e}"));
        assert_eq!(
            std::str::from_utf8(&pt).unwrap(),
            want,
            "round {round}: {what} is not the last acknowledged write"
        );
    };
    check(
        "the secret variable",
        &sealing::VARIABLE,
        &[&cx.app_id, RACED_VAR],
        var.ciphertext.as_deref().expect("sealed"),
        &acked.variable,
    );
    check(
        "the AI API key",
        &sealing::AI_API_KEY,
        &[],
        ai_row.api_key.as_deref().expect("an API key"),
        &acked.ai_key,
    );
    check(
        "the LDAP bind password",
        &sealing::LDAP_BIND_PASSWORD,
        &[],
        &ldap_row.bind_password,
        &acked.ldap_bind,
    );
    check(
        "the OIDC client secret",
        &sealing::OIDC_CLIENT_SECRET,
        &[],
        &oidc_row.client_secret,
        &acked.oidc_secret,
    );
    check(
        "the LDAP client key",
        &sealing::LDAP_CLIENT_KEY,
        &[],
        ldap_row.client_key.as_deref().expect("a client key"),
        client_key_pem,
    );
    check(
        "the integration token",
        &sealing::INTEGRATION_TOKEN,
        &[&cx.app_id],
        &integration.token,
        &acked.integration_token,
    );
    assert_eq!(
        shot.id, acked.shot,
        "round {round}: step 3's screenshot is not the last acknowledged upload"
    );
    assert_eq!(
        shot.key_version,
        i64::from(active),
        "round {round}: screenshot row"
    );
    let file = std::fs::read(
        data.join("screenshots")
            .join(tenant)
            .join(format!("{}.fgs", shot.id)),
    )
    .unwrap();
    assert_eq!(
        envelope::key_version(&file).unwrap(),
        active,
        "round {round}: screenshot file"
    );
    let png = flowguard::service::screenshots::decrypt_blocking(&state, &t, &shot.id)
        .unwrap()
        .expect("the screenshot file");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // And the variable resolves the way a claim resolves it for an agent.
    let resolved = flowguard::service::variables::resolve_blocking(&state, &t, &cx.app_id)
        .expect("every secret decrypts");
    let got = resolved.iter().find(|r| r.name == RACED_VAR).unwrap();
    assert_eq!(got.value.as_str(), acked.variable, "round {round}");
    active
}

/// Sealing in one place: writes to every sealed value — a secret variable, the AI endpoint API key,
/// the LDAP bind password and client key, the OIDC client secret, the ticket integration token, a
/// screenshot file — race a key rotation, round after round, each write paused between sealing and
/// storing. After every round no value is left under a retired key: each is sealed under the
/// active DEK (at or above the fence), opens, and is the last acknowledged write; every rotation
/// succeeds. Afterwards the server itself uses the values: the AI endpoint test sends the last
/// key, the LDAP service account binds with the last password, the screenshot serves.
#[tokio::test]
async fn writes_to_every_sealed_value_racing_rotations_never_end_under_a_retired_key() {
    let started = Instant::now();
    let fake = crate::ai::start_fake();
    let pki = crate::ldap_support::Pki::new();
    let slapd = crate::ldap_support::Slapd::start(&pki, true);
    let app = spawn_with(Opts {
        config: Some(
            "[egress]\nallow = [\"localhost\", \"127.0.0.0/8\"]\n[ai]\nrate_per_minute = 600\nburst = 100\n"
                .into(),
        ),
        env: vec![
            (
                "FLOWGUARD_FAULT_PAUSE".into(),
                format!("sealing:before_write={RACE_PAUSE_MS}"),
            ),
            (
                "FLOWGUARD_LOG".into(),
                "info,flowguard::service::sealing=debug".into(),
            ),
        ],
        ..Default::default()
    })
    .await;
    let tid = app.tenant_id();
    let fx = seed(&app, 0, 1).await;
    let client = rcgen::generate_simple_self_signed(vec!["flowguard-client".to_string()]).unwrap();
    let client_key_pem = client.key_pair.serialize_pem();
    let cx = Arc::new(RaceCtx {
        app_id: fx.app_id.clone(),
        run: fx.shots[0].0.clone(),
        ai_url: fake.url("/v1"),
        ai_ca: fake.cert_pem.clone(),
        ldap: crate::ldap_support::config_body(
            &slapd.ldaps_url(),
            &pki.ca_pem,
            json!({"client_cert_pem": client.cert.pem(), "client_key_pem": client_key_pem}),
        ),
    });
    let owner = app.owner().await;
    let writers = [
        (Writer::Variable, Arc::new(app.owner().await)),
        (Writer::AiKey, Arc::new(app.owner().await)),
        (Writer::Ldap, Arc::new(app.owner().await)),
        (Writer::Oidc, Arc::new(app.owner().await)),
        (Writer::Shot, Arc::new(app.bearer(&fx.agent_token))),
        (Writer::Integration, Arc::new(app.owner().await)),
    ];
    // Every value exists before the first rotation.
    let mut acked = Acked::default();
    for (w, s) in &writers {
        let v = race_write(*w, s, &cx, "r0").await.unwrap();
        acked.set(*w, v);
    }
    let mut writes = 0u64;
    for round in 1..=RACE_ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (w, s) in &writers {
            let (w, s, cx, stop) = (*w, s.clone(), cx.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let (mut last, mut errors, mut k) = (None, Vec::new(), 0u64);
                loop {
                    k += 1;
                    match race_write(w, &s, &cx, &format!("r{round}-{k}")).await {
                        Ok(v) => last = Some(v),
                        Err(e) => errors.push(format!("round {round}, {w:?} write {k}: {e}")),
                    }
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
                (w, last, errors, k)
            }));
        }
        // Start the rotation at a different phase of the writers' seal → write cycle each round.
        tokio::time::sleep(Duration::from_millis(1 + (round * 7) % RACE_PAUSE_MS)).await;
        let r = owner.req(Method::POST, "/api/v1/keys/rotate", None).await;
        let st = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for t in tasks {
            let (w, last, errors, k) = t.await.unwrap();
            failures.extend(errors);
            if let Some(v) = last {
                acked.set(w, v);
            }
            writes += k;
        }
        assert_eq!(
            st,
            200,
            "round {round}: the rotation failed: {body}\n{}",
            app.log_text()
                .lines()
                .filter(|l| l.contains("remain") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let rotated: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(rotated["rotation"]["to_version"], round + 1, "{rotated}");
        assert!(
            failures.is_empty(),
            "writes failed while rotating:\n{}",
            failures.join("\n")
        );
        let active = verify_sealed_offline(&app.data, &tid, &cx, &acked, &client_key_pem, round);
        assert_eq!(u64::from(active), round + 1);
    }

    // The server's own view: one active key set, every older one retired …
    assert_versions(&keys_status(&owner).await, RACE_ROUNDS + 1);
    // … the AI endpoint authenticates with the last acknowledged key …
    let t = owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    assert_eq!(t["ok"], true, "{t}");
    let seen = fake.seen();
    assert_eq!(
        seen.last().and_then(|s| s.header("authorization")),
        Some(format!("Bearer {}", acked.ai_key).as_str())
    );
    // … the directory accepts the last acknowledged bind password (and only that one) …
    slapd.ldap_modify(
        &format!(
            "dn: {}\nchangetype: modify\nreplace: userPassword\nuserPassword: {}\n",
            crate::ldap_support::SVC_DN,
            acked.ldap_bind
        ),
        false,
    );
    let c = owner
        .json(Method::POST, "/api/v1/sso/ldap/test-connection", None, 200)
        .await;
    assert_eq!(c["service_bind"], true, "{c}");
    // … and the screenshot serves.
    let u = owner
        .json(
            Method::GET,
            &format!("/api/v1/runs/{}/steps/3/screenshot", cx.run),
            None,
            200,
        )
        .await;
    let img = app
        .client()
        .get(app.url(u["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(img.status(), 200);
    assert!(img.bytes().await.unwrap().starts_with(b"\x89PNG"));
    // The race was real: writes sealed under a DEK a rotation was retiring were refused by the
    // fence and sealed again.
    let resealed = app
        .log_text()
        .matches("key rotated while writing; sealing again")
        .count();
    assert!(
        resealed > 0,
        "no write ever met the fence in {RACE_ROUNDS} rounds"
    );
    eprintln!(
        "{RACE_ROUNDS} rotations raced by {writes} sealed writes ({resealed} refused by the fence and sealed again) in {:.1?}",
        started.elapsed()
    );
}

/// The appliance state over `data` opened offline (the server of the test is stopped or between
/// rounds), for checks that read the stores with the library.
fn offline_state(data: &Path) -> flowguard::service::AppState {
    use flowguard::config::{CliOverrides, Settings};
    let settings = Settings::load(
        None,
        &CliOverrides {
            data_dir: Some(data.to_path_buf()),
            listen: None,
        },
    )
    .unwrap();
    let opened = flowguard::startup::open_data_dir(&settings, false).expect("catalog opens");
    flowguard::startup::build_state(Arc::new(settings), opened).unwrap()
}
