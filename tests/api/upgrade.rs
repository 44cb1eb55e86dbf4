//! Upgrades (issue 19): the new binary starts on a data dir written by the previous release
//! (`tests/fixtures/release-ad12d9f/`, made by `tests/fixtures/make-release-ad12d9f.sh`) and
//! every tenant, user, flow version, run, step, masked screenshot, secret variable and audit
//! chain reads back, with every store migrated to this binary's schema version.
//!
//! [`make_release_fixture`] is the (ignored) generator the script runs against the OLD binary
//! (`FG_FIXTURE_BIN`), writing the data dir and `fixture.json` (ids and passwords) to
//! `FG_FIXTURE_OUT`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::runs::{decode_rgba, white_png};

/// The secret variable's value in the fixture.
const SECRET: &str = "Fixture-Secret-ad12d9f-7731";
const VIEWER: (&str, &str) = ("viewer@fixture.example", "viewer-fixture-pass-1");
const TESTER2: (&str, &str) = ("tester@tenant2.example", "tester2-fixture-pass-1");
const OWNER2: &str = "owner2@tenant2.example";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-ad12d9f")
}

fn cli_with(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "warn")
        .output()
        .expect("run flowguard")
}

fn out_text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copy a directory tree; directories 0700, files 0600 (git checks files out 0644, and the
/// server refuses a data dir readable by group/world).
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if skip.iter().any(|s| name == *s || name.ends_with(s)) {
            continue;
        }
        let dst = to.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst, skip);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
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

fn flow_body(last_selector: &str) -> Value {
    json!({"name": "login", "tags": ["smoke"], "source": "manual", "steps": [
        {"type": "navigate", "url": "/login"},
        {"type": "fill", "selector": "#user", "value": "{{user}}"},
        {"type": "fill", "selector": "#pw", "value": "{{password}}"},
        {"type": "screenshot", "mask": ["#card"]},
        {"type": "click", "selector": last_selector}
    ]})
}

/// Create a run of `flow`, claim it, report steps (step `fail_at` failed), upload the masked
/// step-3 screenshot and complete it. Returns the run id.
async fn full_run(owner: &Session, agent: &Session, flow: &str, fail_at: Option<i64>) -> String {
    let run = owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{flow}/runs"),
            None,
            201,
        )
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let c = agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    assert_eq!(c["run_id"], id.as_str());
    assert_eq!(c["steps"][2]["value"], SECRET);
    for i in 0..5i64 {
        let failed = fail_at == Some(i);
        agent
            .json(
                Method::POST,
                &format!("/api/v1/agent/runs/{id}/steps"),
                Some(json!({"index": i, "status": if failed { "failed" } else { "passed" },
                    "duration_ms": 10 + i,
                    "error": if failed { Value::String("element #go not found".into()) } else { Value::Null }})),
                200,
            )
            .await;
    }
    let r = upload(agent, &id, 3).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let status = if fail_at.is_some() {
        "failed"
    } else {
        "passed"
    };
    agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{id}/complete"),
            Some(json!({"status": status})),
            200,
        )
        .await;
    id
}

/// Generator of the fixture (run by `tests/fixtures/make-release-ad12d9f.sh` against the old
/// binary): populates a fresh data dir through the HTTP API, stops the server with SIGTERM and
/// copies the data dir plus `fixture.json` to `FG_FIXTURE_OUT`.
#[tokio::test]
#[ignore = "generator of tests/fixtures/release-ad12d9f; run by make-release-ad12d9f.sh"]
async fn make_release_fixture() {
    let old = std::env::var("FG_FIXTURE_BIN").expect("FG_FIXTURE_BIN: the old binary");
    let out = PathBuf::from(std::env::var("FG_FIXTURE_OUT").expect("FG_FIXTURE_OUT"));
    let mut app = spawn_with(Opts {
        bin: Some(old.clone()),
        ..Default::default()
    })
    .await;
    let t1 = app.tenant_id();
    let owner = app.owner().await;
    // Users of tenant 1.
    owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": VIEWER.0, "role": "viewer", "password": VIEWER.1})),
            201,
        )
        .await;
    // Application, variables (one secret), flow, agent token.
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_string();
    for (k, v, secret) in [("password", SECRET, true), ("user", "alice", false)] {
        owner
            .json(
                Method::PUT,
                &format!("/api/v1/applications/{app_id}/variables/{k}"),
                Some(json!({"value": v, "secret": secret})),
                200,
            )
            .await;
    }
    let flow = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{app_id}/flows"),
            Some(flow_body("#go")),
            201,
        )
        .await;
    let flow_id = flow["id"].as_str().unwrap().to_string();
    let t = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": app_id, "name": "ci"})),
            201,
        )
        .await;
    let agent_token = t["token"].as_str().unwrap().to_string();
    let agent = app.bearer(&agent_token);
    // Run on version 1, then version 2 of the flow, its run failing at step 4, then a queued run.
    let run_v1 = full_run(&owner, &agent, &flow_id, None).await;
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/flows/{flow_id}"),
            Some(flow_body("#submit")),
            200,
        )
        .await;
    let run_v2 = full_run(&owner, &agent, &flow_id, Some(4)).await;
    let queued = owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{flow_id}/runs"),
            None,
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A second tenant with its own user and application.
    let o = cli_with(
        &old,
        &[
            "tenant",
            "create",
            "--data-dir",
            app.data.to_str().unwrap(),
            "--name",
            "second",
            "--owner-email",
            OWNER2,
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", out_text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let t2 = v["tenant_id"].as_str().unwrap().to_string();
    let owner2_pw = v["owner_password"].as_str().unwrap().to_string();
    let owner2 = app.login(Some(&t2), OWNER2, &owner2_pw).await;
    owner2
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": TESTER2.0, "role": "tester", "password": TESTER2.1})),
            201,
        )
        .await;
    owner2
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "crm", "base_url": "https://crm.example"})),
            201,
        )
        .await;
    // Stop cleanly (SIGTERM), then copy the data dir.
    let pid = app.child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "old server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&out);
    copy_tree(&app.data, &out.join("data"), &["listen.addr", ".log"]);
    let fx = json!({
        "tenant1": t1,
        "tenant2": t2,
        "owner2_password": owner2_pw,
        "application": app_id,
        "flow": flow_id,
        "agent_token": agent_token,
        "run_v1": run_v1,
        "run_v2": run_v2,
        "run_queued": queued,
    });
    std::fs::write(
        out.join("fixture.json"),
        serde_json::to_string_pretty(&fx).unwrap(),
    )
    .unwrap();
}

/// Check a finished run of the fixture: version, steps, the masked screenshot via its signed URL.
async fn check_run(app: &TestApp, owner: &Session, id: &str, version: i64, failed_at: Option<i64>) {
    let d = owner
        .json(Method::GET, &format!("/api/v1/runs/{id}"), None, 200)
        .await;
    assert_eq!(d["flow_version"], version, "run {id}: {d}");
    assert_eq!(
        d["status"],
        if failed_at.is_some() {
            "failed"
        } else {
            "passed"
        },
        "run {id}: {d}"
    );
    let steps = d["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5, "run {id}: {d}");
    for s in steps {
        let i = s["index"].as_i64().unwrap();
        let want = if failed_at == Some(i) {
            "failed"
        } else {
            "passed"
        };
        assert_eq!(s["status"], want, "run {id} step {i}: {d}");
        assert_eq!(s["duration_ms"], 10 + i, "run {id} step {i}: {d}");
        assert_eq!(s["has_screenshot"], i == 3, "run {id} step {i}: {d}");
    }
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
    for (x, y) in [(2, 3), (3, 4), (7, 6)] {
        assert_eq!(
            at(x, y),
            [0, 0, 0, 255],
            "run {id}: masked pixel ({x},{y}) not black"
        );
    }
    assert_eq!(at(20, 20), [255, 255, 255, 255]);
    assert_eq!(at(8, 7), [255, 255, 255, 255]);
}

/// Schema version of every store (name → `user_version`), read through `backup create`.
fn schema_versions(data: &Path, to: &Path) -> Vec<(String, i64)> {
    let o = cli_with(
        bin(),
        &[
            "backup",
            "create",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", out_text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let dir = PathBuf::from(summary["dir"].as_str().unwrap());
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    m["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["schema_version"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn previous_release_data_dir_reads_back_after_the_upgrade() {
    let fx: Value =
        serde_json::from_slice(&std::fs::read(fixture_dir().join("fixture.json")).unwrap())
            .unwrap();
    let f = |k: &str| fx[k].as_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture_dir().join("data"), &tmp.path().join("data"), &[]);
    let app = spawn_with(Opts {
        dir: Some(tmp),
        ..Default::default()
    })
    .await;
    let r = app.anonymous().get("/readyz").await;
    assert_eq!(r.status(), 200, "{}", app.log_text());
    assert_eq!(app.tenant_id(), f("tenant1"));

    // Tenants and users: every login of the fixture still works.
    let owner = app.owner().await;
    app.login(Some(&f("tenant1")), VIEWER.0, VIEWER.1).await;
    let owner2 = app
        .login(Some(&f("tenant2")), OWNER2, &f("owner2_password"))
        .await;
    app.login(Some(&f("tenant2")), TESTER2.0, TESTER2.1).await;
    app.platform_admin().await;
    let members = owner
        .json(Method::GET, "/api/v1/members", None, 200)
        .await
        .to_string();
    assert!(members.contains(VIEWER.0), "{members}");
    let apps2 = owner2
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await
        .to_string();
    assert!(apps2.contains("crm") && !apps2.contains("shop"), "{apps2}");

    // Both flow versions.
    let flow = f("flow");
    for (n, sel) in [(1, "#go"), (2, "#submit")] {
        let v = owner
            .json(
                Method::GET,
                &format!("/api/v1/flows/{flow}/versions/{n}"),
                None,
                200,
            )
            .await;
        assert_eq!(v["steps"][4]["selector"], sel, "version {n}: {v}");
        assert_eq!(v["steps"][3]["mask"], json!(["#card"]), "version {n}: {v}");
    }

    // Runs, steps and masked screenshots (the runs table was rebuilt by a migration).
    check_run(&app, &owner, &f("run_v1"), 1, None).await;
    check_run(&app, &owner, &f("run_v2"), 2, Some(4)).await;
    let q = owner
        .json(
            Method::GET,
            &format!("/api/v1/runs/{}", f("run_queued")),
            None,
            200,
        )
        .await;
    assert_eq!(q["status"], "queued", "{q}");
    assert_eq!(q["flow_version"], 2, "{q}");

    // The secret variable opens: the fixture's agent token claims the queued run with it.
    let agent = app.bearer(&f("agent_token"));
    let c = agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    assert_eq!(c["run_id"], f("run_queued").as_str());
    assert_eq!(c["steps"][2]["value"], SECRET);
    assert_eq!(c["steps"][1]["value"], "alice");
    assert_eq!(c["steps"][4]["selector"], "#submit");

    // Audit chains of the catalog and both tenants.
    let data = app.data.to_str().unwrap().to_string();
    for args in [
        vec!["audit", "verify", "--catalog"],
        vec![
            "audit",
            "verify",
            "--tenant",
            fx["tenant1"].as_str().unwrap(),
        ],
        vec![
            "audit",
            "verify",
            "--tenant",
            fx["tenant2"].as_str().unwrap(),
        ],
    ] {
        let mut a = args.clone();
        a.extend(["--data-dir", data.as_str()]);
        let o = cli_with(bin(), &a);
        assert!(o.status.success(), "{a:?}: {}", out_text(&o));
    }

    // Every store is at this binary's schema version: the same as a fresh data dir's.
    let upgraded = schema_versions(&app.data, &app.dir.path().join("b"));
    let fresh = spawn_app().await;
    let fresh_v = schema_versions(&fresh.data, &fresh.dir.path().join("b"));
    let catalog_v = |v: &[(String, i64)]| v.iter().find(|(n, _)| n == "catalog").unwrap().1;
    let tenant_v = fresh_v.iter().find(|(n, _)| n != "catalog").unwrap().1;
    assert_eq!(upgraded.len(), 3, "{upgraded:?}");
    for (name, v) in &upgraded {
        let want = if name == "catalog" {
            catalog_v(&fresh_v)
        } else {
            tenant_v
        };
        assert_eq!(
            *v, want,
            "store {name} not migrated: {upgraded:?} vs fresh {fresh_v:?}"
        );
    }
}

/// Schema versions of the fixture's stores (release ad12d9f: 5 catalog steps, 9 tenant steps).
const FIXTURE_CATALOG_VERSION: i64 = 5;
const FIXTURE_TENANT_VERSION: i64 = 9;

/// Start the new binary on a copy of the fixture (or on `dir` again) with `env` and `config`.
async fn start_on(dir: tempfile::TempDir, env: &[(&str, String)], config: &str) -> TestApp {
    let _ = std::fs::remove_file(dir.path().join("data/listen.addr"));
    spawn_with(Opts {
        dir: Some(dir),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        config: Some(config.to_string()),
        ..Default::default()
    })
    .await
}

fn fixture_copy() -> (Value, tempfile::TempDir) {
    let fx: Value =
        serde_json::from_slice(&std::fs::read(fixture_dir().join("fixture.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture_dir().join("data"), &tmp.path().join("data"), &[]);
    (fx, tmp)
}

/// This binary's schema versions (catalog, tenant store): those of a fresh data dir.
async fn this_binarys_versions() -> (i64, i64) {
    let fresh = spawn_app().await;
    let v = schema_versions(&fresh.data, &fresh.dir.path().join("b"));
    let cat = v.iter().find(|(n, _)| n == "catalog").unwrap().1;
    let ten = v.iter().find(|(n, _)| n != "catalog").unwrap().1;
    (cat, ten)
}

/// Poll `/readyz` until it is degraded (the start-up pass opened every store); the body.
async fn wait_degraded(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.anonymous().get("/readyz").await;
        assert_eq!(r.status(), 200, "{}", app.log_text());
        let v: Value = r.json().await.unwrap();
        if v["status"] == "degraded" {
            return v;
        }
        assert!(Instant::now() < deadline, "readyz never degraded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A login attempt's status and problem code.
async fn login_status(app: &TestApp, tenant: &str, email: &str, password: &str) -> (u16, Value) {
    let r = app
        .client()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"tenant": tenant, "email": email, "password": password}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Names in `<data>/pre-migration/` starting with `stem.`, sorted.
fn pre_migration_copies(data: &Path, stem: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("pre-migration"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(&format!("{stem}.")))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn a_failed_migration_rolls_back_is_named_by_readyz_and_other_tenants_serve() {
    let (fx, tmp) = fixture_copy();
    let f = |k: &str| fx[k].as_str().unwrap().to_string();
    let (t1, t2) = (f("tenant1"), f("tenant2"));
    let fault = [("FLOWGUARD_FAULT_MIGRATION", format!("{t1}.db"))];

    // Start 1: tenant 1's migration fails at its very end (the version bump is refused).
    let app = start_on(tmp, &fault, "").await;
    let v = wait_degraded(&app).await;
    let refused = v["refused_stores"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{v}");
    assert_eq!(refused[0]["tenant_id"], t1.as_str(), "{v}");
    let err = refused[0]["error"].as_str().unwrap();
    let (_, fresh_tenant_version) = this_binarys_versions().await;
    for want in [
        format!("tenants/{t1}.db"),
        format!("from schema version {FIXTURE_TENANT_VERSION} to {fresh_tenant_version} failed"),
        format!("unchanged at schema version {FIXTURE_TENANT_VERSION}"),
    ] {
        assert!(err.contains(&want), "{want:?} not in {err:?}");
    }
    assert!(
        app.log_text()
            .contains("store migration failed and was rolled back"),
        "{}",
        app.log_text()
    );
    // Tenant 1 answers 503 not_ready; tenant 2 (migrated) serves.
    let (st, body) = login_status(&app, &t1, "admin@localhost", &app.owner_password()).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_ready")),
        "{body}"
    );
    let owner2 = app.login(Some(&t2), OWNER2, &f("owner2_password")).await;
    let apps2 = owner2
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert!(apps2.to_string().contains("crm"), "{apps2}");
    // A copy of every store was kept before migrating it, named with its old version.
    let data = app.data.clone();
    let cat = pre_migration_copies(&data, "catalog");
    assert_eq!(cat.len(), 1, "{cat:?}");
    assert!(
        cat[0].ends_with(&format!(".v{FIXTURE_CATALOG_VERSION}.db")),
        "{cat:?}"
    );
    for t in [&t1, &t2] {
        let c = pre_migration_copies(&data, t);
        assert_eq!(c.len(), 1, "{t}: {c:?}");
        assert!(
            c[0].ends_with(&format!(".v{FIXTURE_TENANT_VERSION}.db")),
            "{c:?}"
        );
    }

    // Start 2 (same fault, keep 2 copies): tenant 1 is still at the old version — nothing of
    // the first attempt was committed — and a second copy of it is kept.
    let TestApp { dir, child, .. } = app;
    drop(child);
    let keep2 = "[store]\npre_migration_copies = 2\n";
    let app = start_on(dir, &fault, keep2).await;
    let v = wait_degraded(&app).await;
    assert!(
        v["refused_stores"][0]["error"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "unchanged at schema version {FIXTURE_TENANT_VERSION}"
            )),
        "{v}"
    );
    let two = pre_migration_copies(&app.data, &t1);
    assert_eq!(two.len(), 2, "{two:?}");

    // Start 3 without the fault: tenant 1 migrates and reads back; its copies stay at 2
    // (the oldest was deleted).
    let TestApp { dir, child, .. } = app;
    drop(child);
    let app = start_on(dir, &[], keep2).await;
    let owner = app.owner().await;
    check_run(&app, &owner, &f("run_v1"), 1, None).await;
    let r = app.anonymous().get("/readyz").await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ready", "{v}");
    let now = pre_migration_copies(&app.data, &t1);
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(
        now[0], two[1],
        "the oldest copy is the one deleted: {two:?} → {now:?}"
    );
    // The store is at this binary's version now.
    let versions = schema_versions(&app.data, &app.dir.path().join("b"));
    assert!(
        versions.contains(&(t1.clone(), fresh_tenant_version)),
        "{versions:?}"
    );
}

#[tokio::test]
async fn a_store_written_by_a_newer_binary_is_refused_naming_both_versions() {
    let (fx, tmp) = fixture_copy();
    let f = |k: &str| fx[k].as_str().unwrap().to_string();
    let (t1, t2) = (f("tenant1"), f("tenant2"));
    // Start 1 writes schema version 99 into tenant 2's store (as a newer release would have).
    let app = start_on(
        tmp,
        &[("FLOWGUARD_FAULT_SCHEMA_VERSION", format!("{t2}.db=99"))],
        "",
    )
    .await;
    wait_degraded(&app).await;
    // Start 2 without any fault: the file itself says 99 and is refused.
    let TestApp { dir, child, .. } = app;
    drop(child);
    let app = start_on(dir, &[], "").await;
    let v = wait_degraded(&app).await;
    assert_eq!(v["refused_stores"][0]["tenant_id"], t2.as_str(), "{v}");
    let err = v["refused_stores"][0]["error"].as_str().unwrap();
    let (catalog_now, tenant_now) = this_binarys_versions().await;
    for want in [
        format!("tenants/{t2}.db has schema version 99"),
        "written by a newer flowguard".to_string(),
        format!("has schema version {tenant_now}:"),
    ] {
        assert!(err.contains(&want), "{want:?} not in {err:?}");
    }
    let (st, body) = login_status(&app, &t2, OWNER2, &f("owner2_password")).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_ready")),
        "{body}"
    );
    // Tenant 1 serves.
    app.owner().await;
    assert_eq!(app.tenant_id(), t1);

    // A newer catalog stops the start with the same message.
    let TestApp { dir, child, .. } = app;
    drop(child);
    let _ = std::fs::remove_file(dir.path().join("data/listen.addr"));
    let e = match try_spawn(Opts {
        dir: Some(dir),
        env: vec![(
            "FLOWGUARD_FAULT_SCHEMA_VERSION".into(),
            "catalog.db=42".into(),
        )],
        ..Default::default()
    })
    .await
    {
        Ok(_) => panic!("a catalog at schema version 42 must not start"),
        Err(e) => e,
    };
    assert!(
        e.log.contains("catalog.db has schema version 42")
            && e.log
                .contains(&format!("has schema version {catalog_now}:")),
        "{}",
        e.log
    );
}

/// Read `NOTIFY_SOCKET` datagrams until one has `want` as a line (or the timeout passes);
/// returns every datagram read, in order.
fn notify_until(sock: &std::os::unix::net::UnixDatagram, want: &str, log: &str) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("no `{want}` on NOTIFY_SOCKET ({e}); got {got:?}\n{log}"),
        };
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        let done = msg.lines().any(|l| l == want);
        got.push(msg);
        if done {
            return got;
        }
    }
}

/// systemd `Type=notify` (packaging/systemd/flowguard.service): on the previous release's data
/// dir (so the catalog migrates before the listener binds) `serve` extends the start timeout
/// (`EXTEND_TIMEOUT_USEC`) before `READY=1`, sends `READY=1` only once the catalog is migrated
/// and the listener is bound, and `STOPPING=1` when SIGTERM starts the graceful stop.
#[tokio::test]
async fn systemd_notify_extends_the_start_timeout_then_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let (_fx, tmp) = fixture_copy();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut app = start_on(
        tmp,
        &[("NOTIFY_SOCKET", sock_path.display().to_string())],
        "",
    )
    .await;
    let got = notify_until(&sock, "READY=1", &app.log_text());
    let ready = got.last().unwrap();
    assert!(
        ready.contains(&format!("STATUS=listening on {}", app.addr)),
        "{ready}"
    );
    let before = &got[..got.len() - 1];
    assert!(
        before
            .iter()
            .any(|m| m.lines().any(|l| l == "EXTEND_TIMEOUT_USEC=30000000")),
        "no EXTEND_TIMEOUT_USEC before READY=1: {got:?}"
    );
    assert!(!before.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    // At READY=1 the catalog is at this binary's version (it migrated before the listener).
    let (catalog_now, _) = this_binarys_versions().await;
    let v = schema_versions(&app.data, &app.dir.path().join("versions"));
    let catalog = v.iter().find(|(s, _)| s == "catalog").map(|(_, n)| *n);
    assert_eq!(catalog, Some(catalog_now), "{v:?}");
    assert!(catalog_now > FIXTURE_CATALOG_VERSION);

    let pid = app.child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let got = notify_until(&sock, "STOPPING=1", &app.log_text());
    assert!(
        !got.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "{got:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `doctor --json` on `data`: exit code, JSON (Null when none), and the whole output.
fn doctor_json(data: &Path) -> (Option<i32>, Value, String) {
    let o = run_cli(&["doctor", "--json", "--data-dir", data.to_str().unwrap()]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code(), v, out_text(&o))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[tokio::test]
async fn empty_or_missing_stores_are_never_recreated_empty() {
    // Review 3, F1/F3/F4: a truncated (0-byte) or missing store is refused and named, by
    // `serve` (/readyz degraded) and `doctor` (exit 1), and never written to.
    let app = spawn_app().await;
    let (t2, _) = create_tenant(&app, "trunc", "owner@trunc.example");
    let (t3, _) = create_tenant(&app, "gone", "owner@gone.example");
    let TestApp { dir, child, .. } = app;
    drop(child);
    let data = dir.path().join("data");
    let s2 = data.join(format!("tenants/{t2}.db"));
    std::fs::write(&s2, b"").unwrap();
    let _ = std::fs::remove_file(data.join(format!("tenants/{t2}.db-wal")));
    std::fs::remove_file(data.join(format!("tenants/{t3}.db"))).unwrap();
    let _ = std::fs::remove_file(data.join(format!("tenants/{t3}.db-wal")));

    let (code, v, out) = doctor_json(&data);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["ok"], false, "{out}");
    assert!(out.contains(&format!("tenants/{t2}.db is empty")), "{out}");
    assert_eq!(file_len(&s2), 0, "doctor wrote the truncated store");

    let app = start_on(dir, &[], "").await;
    let named = |v: &Value, t: &str| {
        v["refused_stores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["tenant_id"] == t)
            .map(|r| r["error"].as_str().unwrap().to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v = wait_degraded(&app).await;
        if named(&v, &t2).is_some() && named(&v, &t3).is_some() {
            break v;
        }
        assert!(Instant::now() < deadline, "not both refused: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let named = |t: &str| named(&v, t);
    assert!(named(&t2).is_some_and(|e| e.contains("is empty")), "{v}");
    assert!(named(&t3).is_some_and(|e| e.contains("is missing")), "{v}");
    assert_eq!(file_len(&s2), 0, "serve recreated the truncated store");
    assert!(!data.join(format!("tenants/{t3}.db")).exists());
    let (st, body) = login_status(&app, "trunc", "owner@trunc.example", "whatever-pass-1").await;
    assert_eq!(st, 503, "{body}");
    // The intact tenant serves.
    app.owner().await;

    // A truncated catalog is never a first start.
    let TestApp { dir, child, .. } = app;
    drop(child);
    let cat = data.join("catalog.db");
    std::fs::write(&cat, b"").unwrap();
    let _ = std::fs::remove_file(data.join("catalog.db-wal"));
    let (code, _, out) = doctor_json(&data);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("catalog.db is empty"), "{out}");
    assert_eq!(file_len(&cat), 0, "doctor wrote the truncated catalog");
    let _ = std::fs::remove_file(data.join("listen.addr"));
    let e = match try_spawn(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await
    {
        Ok(_) => panic!("a 0-byte catalog must not start"),
        Err(e) => e,
    };
    assert!(e.log.contains("catalog.db is empty"), "{}", e.log);
    assert!(!e.log.contains("first start"), "{}", e.log);
    assert_eq!(file_len(&cat), 0);
}

#[tokio::test]
async fn backup_create_and_doctor_never_migrate_an_older_data_dir() {
    // Review 3, F14: the previous release's data dir (catalog 5, tenant stores 9) is left
    // byte-for-byte as it is by `backup create` and `doctor` of this binary.
    let (_fx, tmp) = fixture_copy();
    let data = tmp.path().join("data");
    let snapshot = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v = vec![(
            "catalog.db".to_string(),
            std::fs::read(d.join("catalog.db")).unwrap(),
        )];
        for e in std::fs::read_dir(d.join("tenants")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "db") {
                v.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
        v.sort();
        v
    };
    let before = snapshot(&data);
    let to = tmp.path().join("bk");
    let o = cli_with(
        bin(),
        &[
            "backup",
            "create",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ],
    );
    let out = out_text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains(&format!("has schema version {FIXTURE_CATALOG_VERSION}"))
            && out.contains("never migrates"),
        "{out}"
    );
    let o = cli_with(bin(), &["doctor", "--data-dir", data.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", out_text(&o));
    assert!(snapshot(&data) == before, "a store file changed");
    assert!(!data.join("pre-migration").exists());

    // No host command migrates (only `serve` does): each one that opens the data dir refuses
    // the older catalog, naming its version, and changes nothing.
    let d = data.to_str().unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "a-long-enough-password-1").unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["jobs", "run", "backup"],
        vec!["jobs", "run", "retention"],
        vec!["jobs", "run", "schedules"],
        vec!["jobs", "run", "key-rotation"],
        vec!["jobs", "run", "ticket-outbox"],
        vec!["audit", "verify", "--catalog"],
        vec!["keys", "status"],
        vec!["keys", "rotate", "--all"],
        vec!["tenant", "list"],
        vec![
            "tenant",
            "create",
            "--name",
            "newcomer",
            "--owner-email",
            "o@newcomer.example",
            "--owner-password-file",
            pw.to_str().unwrap(),
        ],
        vec!["users", "unlock", "owner@example.com"],
        vec!["license", "trial"],
    ];
    for args in &commands {
        let mut a = args.clone();
        a.extend(["--data-dir", d]);
        let o = cli_with(bin(), &a);
        let out = out_text(&o);
        assert!(
            !o.status.success(),
            "{args:?} succeeded on an older data dir: {out}"
        );
        assert!(
            out.contains(&format!(
                "catalog.db has schema version {FIXTURE_CATALOG_VERSION}"
            )) && out.contains("never migrates"),
            "{args:?}: {out}"
        );
        assert!(snapshot(&data) == before, "{args:?} changed a store file");
        assert!(!data.join("pre-migration").exists(), "{args:?}");
    }

    // A tenant store left at the older version under a current catalog (its migration failed
    // in `serve`): host commands that open it refuse it too, and leave it as it is.
    let (fx, _) = fixture_copy();
    let t1 = fx["tenant1"].as_str().unwrap().to_string();
    let app = start_on(
        tmp,
        &[("FLOWGUARD_FAULT_MIGRATION", format!("{t1}.db"))],
        "",
    )
    .await;
    wait_degraded(&app).await;
    let TestApp {
        dir: tmp, child, ..
    } = app;
    drop(child);
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let store = data.join(format!("tenants/{t1}.db"));
    let store_before = std::fs::read(&store).unwrap();
    let copies = pre_migration_copies(&data, &t1);
    for args in [
        vec!["audit", "verify", "--tenant", t1.as_str()],
        vec!["jobs", "run", "retention"],
        vec!["doctor"],
    ] {
        let mut a = args.clone();
        a.extend(["--data-dir", d]);
        let o = cli_with(bin(), &a);
        let out = out_text(&o);
        assert!(!o.status.success(), "{args:?}: {out}");
        assert!(
            out.contains(&format!(
                "tenants/{t1}.db has schema version {FIXTURE_TENANT_VERSION}"
            )) && out.contains("never migrates"),
            "{args:?}: {out}"
        );
        assert!(
            std::fs::read(&store).unwrap() == store_before,
            "{args:?} changed the store"
        );
        assert_eq!(pre_migration_copies(&data, &t1), copies, "{args:?}");
    }
}
