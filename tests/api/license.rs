//! Licenses (issue 8): signed tokens issued with the published development key (the test binary
//! is built with the `dev-license-key` feature), refusals with a reason, install / reload
//! (route and SIGHUP) / revoke, the startup gate, Free fallback without data loss, limits under
//! concurrency, and the PlatformAdmin tenant operations.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// Issue a license with the CLI (`--dev` unless `extra` names `--signing-key`).
pub fn issue(extra: &[&str]) -> String {
    let mut args = vec!["license", "issue"];
    if !extra.contains(&"--signing-key") {
        args.push("--dev");
    }
    args.extend_from_slice(extra);
    let out = run_cli(&args);
    assert!(
        out.status.success(),
        "license issue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A license valid now for a year with `plan`, `features`, and limits.
pub fn license(id: &str, plan: &str, features: &str, max_apps: Option<u32>) -> String {
    let exp = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let mut a = vec![
        "--license-id",
        id,
        "--licensee",
        "Example Corp",
        "--plan",
        plan,
        "--expires",
        &exp,
    ];
    if !features.is_empty() {
        a.extend_from_slice(&["--features", features]);
    }
    let n = max_apps.map(|n| n.to_string());
    if let Some(n) = &n {
        a.extend_from_slice(&["--max-applications", n]);
    }
    issue(&a)
}

/// POST the token as `application/jwt`.
pub async fn install(pa: &Session, token: &str) -> reqwest::Response {
    pa.client
        .post(format!("{}/api/v1/platform/license", pa.base))
        .header("X-CSRF-Token", &pa.csrf)
        .header("Content-Type", "application/jwt")
        .body(token.to_string())
        .send()
        .await
        .unwrap()
}

/// Install and assert 200.
pub async fn install_ok(pa: &Session, token: &str) -> Value {
    let r = install(pa, token).await;
    let st = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn create_app(s: &Session, name: &str) -> reqwest::Response {
    s.post(
        "/api/v1/applications",
        json!({"name": name, "base_url": "https://shop.example"}),
    )
    .await
}

async fn set_plan(pa: &Session, tid: &str, plan: &str) -> (u16, Value) {
    problem(
        pa.req(
            Method::PUT,
            &format!("/api/v1/platform/tenants/{tid}/plan"),
            Some(json!({"plan": plan})),
        )
        .await,
    )
    .await
}

/// Change one claim of a token's payload, keeping the original signature.
fn tamper(token: &str, key: &str, value: Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims[key] = value;
    let payload = b64.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{}.{}", parts[0], payload, parts[2])
}

#[tokio::test]
async fn refused_licenses_each_name_their_reason() {
    let app = spawn_app().await;
    let pa = app.platform_admin().await;

    let good = license("lic-good", "business", "audit.export", Some(3));
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "tampered",
            tamper(&good, "plan", json!("enterprise")),
            "license_bad_signature",
            "signature",
        ),
        (
            "expired",
            issue(&[
                "--plan",
                "pro",
                "--not-before",
                "2020-01-01T00:00:00Z",
                "--expires",
                "2021-01-01T00:00:00Z",
            ]),
            "license_expired",
            "expired at 2021-01-01T00:00:00Z",
        ),
        (
            "not yet valid",
            issue(&[
                "--plan",
                "pro",
                "--not-before",
                "2099-01-01T00:00:00Z",
                "--expires",
                "2100-01-01T00:00:00Z",
            ]),
            "license_not_yet_valid",
            "not valid before 2099-01-01T00:00:00Z",
        ),
        (
            "garbage",
            "not-a-jwt".to_string(),
            "license_malformed",
            "malformed",
        ),
    ];
    // Wrong key: a fresh Ed25519 key the appliance does not trust.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let key_file = write_secret_file(app.dir.path(), "other.pem", &other.serialize_pem());
    let wrong = issue(&[
        "--signing-key",
        key_file.to_str().unwrap(),
        "--plan",
        "pro",
        "--expires",
        "2099-01-01T00:00:00Z",
    ]);
    let mut cases = cases;
    cases.push(("wrong key", wrong, "license_bad_signature", "untrusted key"));

    for (what, token, code, reason) in &cases {
        let (st, v) = problem(install(&pa, token).await).await;
        assert_eq!(st, 422, "{what}: {v}");
        assert_eq!(v["code"], *code, "{what}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(reason),
            "{what}: detail should say `{reason}`: {v}"
        );
    }

    // Revoked: revoke the id first, then the otherwise valid license is refused.
    let (st, v) = problem(
        pa.post(
            "/api/v1/platform/license/revocations",
            json!({"license_id": "lic-good", "reason": "leaked"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = problem(install(&pa, &good).await).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("license_revoked")),
        "{v}"
    );
    // Revoking twice → 409.
    let (st, v) = problem(
        pa.post(
            "/api/v1/platform/license/revocations",
            json!({"license_id": "lic-good"}),
        )
        .await,
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (409, Some("already_revoked")));

    // Wrong media type → 415, nothing installed.
    let r = pa
        .client
        .post(app.url("/api/v1/platform/license"))
        .header("X-CSRF-Token", &pa.csrf)
        .json(&json!({"token": good}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    let v = pa
        .json(Method::GET, "/api/v1/platform/license", None, 200)
        .await;
    assert_eq!(v["status"], "none", "nothing was installed: {v}");
    assert_eq!(v["effective"]["plan"], "free");
    assert!(!app.data.join("license.jwt").exists());

    // The offline installer refuses with the same reasons.
    for (what, token, _, reason) in &cases {
        let f = app.dir.path().join("candidate.jwt");
        std::fs::write(&f, token).unwrap();
        let out = run_cli(&[
            "license",
            "install",
            f.to_str().unwrap(),
            "--data-dir",
            app.data.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{what} was installed offline");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{what}: {err}");
    }
    assert!(!app.data.join("license.jwt").exists());
}

#[tokio::test]
async fn install_assign_plan_limits_and_revoke() {
    let app = spawn_app().await;
    let pa = app.platform_admin().await;
    let owner = app.owner().await;
    let tid = app.tenant_id();

    // Free: one application.
    assert_eq!(create_app(&owner, "a1").await.status(), 201);
    let (st, v) = problem(create_app(&owner, "a2").await).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("plan_limit")), "{v}");
    // No license: plans above free cannot be assigned.
    let (st, v) = set_plan(&pa, &tid, "pro").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("plan_not_licensed")),
        "{v}"
    );

    let v = install_ok(
        &pa,
        &license("lic-biz", "business", "audit.export", Some(3)),
    )
    .await;
    assert_eq!(v["status"], "active");
    assert_eq!(v["license"]["id"], "lic-biz");
    assert_eq!(v["license"]["signed_by"], "dev");
    assert_eq!(v["dev_key_trusted"], true);
    assert!(app.data.join("license.jwt").exists());

    // The bootstrap tenant follows the license's plan until a plan is assigned (issue 23).
    assert_eq!(create_app(&owner, "a2").await.status(), 201);
    let (st, v) = set_plan(&pa, &tid, "enterprise").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("plan_not_licensed")),
        "{v}"
    );
    let (st, v) = set_plan(&pa, &tid, "business").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["plan"], "business");
    let lic = owner.json(Method::GET, "/api/v1/license", None, 200).await;
    assert_eq!(lic["entitlements"]["plan"], "business");
    assert_eq!(lic["entitlements"]["max_applications"], 3);
    assert_eq!(lic["entitlements"]["retention_days"], 365);
    assert_eq!(lic["entitlements"]["features"], json!(["audit.export"]));
    assert_eq!(create_app(&owner, "a3").await.status(), 201);
    let (st, v) = problem(create_app(&owner, "a4").await).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("plan_limit")), "{v}");

    // Revoke the installed license: Free at once, data kept.
    let (st, v) = problem(
        pa.post(
            "/api/v1/platform/license/revocations",
            json!({"license_id": "lic-biz", "reason": "contract ended"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let v = pa
        .json(Method::GET, "/api/v1/platform/license", None, 200)
        .await;
    assert_eq!(v["status"], "revoked");
    let lic = owner.json(Method::GET, "/api/v1/license", None, 200).await;
    assert_eq!(lic["entitlements"]["plan"], "free");
    let (st, _) = problem(create_app(&owner, "a4").await).await;
    assert_eq!(st, 403);
    let apps = owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert_eq!(
        apps["items"].as_array().unwrap().len(),
        3,
        "no data deleted"
    );
    let list = pa
        .json(
            Method::GET,
            "/api/v1/platform/license/revocations",
            None,
            200,
        )
        .await;
    assert_eq!(list["items"][0]["license_id"], "lic-biz");
    assert_eq!(list["items"][0]["revoked_by"], "platform-admin@localhost");
    let n = owner
        .json(Method::GET, "/api/v1/notifications", None, 200)
        .await;
    assert_eq!(n["items"][0]["kind"], "license_revoked", "{n}");

    // The revocation survives a restart (catalog), and so does the installed file.
    let TestApp { dir, child, .. } = app;
    drop(child);
    std::fs::remove_file(dir.path().join("data/listen.addr")).unwrap();
    let app = spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let pa = app
        .login(None, "platform-admin@localhost", &pa_password(&app))
        .await;
    let v = pa
        .json(Method::GET, "/api/v1/platform/license", None, 200)
        .await;
    assert_eq!(v["status"], "revoked", "{v}");
}

fn pa_password(app: &TestApp) -> String {
    app.creds["platform_admin_password"].clone()
}

#[tokio::test]
async fn limits_hold_under_concurrency() {
    let app = spawn_app().await;
    let pa = app.platform_admin().await;
    let owner = app.owner().await;
    let tid = app.tenant_id();
    let exp = (chrono::Utc::now() + chrono::Duration::days(90)).to_rfc3339();
    let token = issue(&[
        "--license-id",
        "lic-limits",
        "--plan",
        "pro",
        "--max-applications",
        "5",
        "--max-users",
        "4",
        "--expires",
        &exp,
    ]);
    install_ok(&pa, &token).await;
    assert_eq!(set_plan(&pa, &tid, "pro").await.0, 200);

    // Applications: 4 of 5 exist, then 20 parallel creates → exactly one succeeds.
    for i in 0..4 {
        assert_eq!(create_app(&owner, &format!("pre{i}")).await.status(), 201);
    }
    let futs = (0..20).map(|i| {
        let owner = &owner;
        async move { create_app(owner, &format!("race{i}")).await }
    });
    let results = futures_util::future::join_all(futs).await;
    let mut created = 0;
    for r in results {
        let (st, v) = problem(r).await;
        match st {
            201 => created += 1,
            403 => assert_eq!(v["code"], "plan_limit", "{v}"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(created, 1, "exactly one create may win the last slot");
    let apps = owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert_eq!(apps["items"].as_array().unwrap().len(), 5);

    // Users: the Owner plus 2 members = 3 of 4, then 20 parallel adds → exactly one succeeds.
    for i in 0..2 {
        owner
            .json(
                Method::POST,
                "/api/v1/members",
                Some(json!({"email": format!("m{i}@example.com"), "role": "viewer", "password": "member-password-1"})),
                201,
            )
            .await;
    }
    let futs = (0..20).map(|i| {
        let owner = &owner;
        async move {
            owner
                .post(
                    "/api/v1/members",
                    json!({"email": format!("r{i}@example.com"), "role": "viewer", "password": "member-password-1"}),
                )
                .await
        }
    });
    let mut added = 0;
    for r in futures_util::future::join_all(futs).await {
        let (st, v) = problem(r).await;
        match st {
            201 => added += 1,
            403 => assert_eq!(v["code"], "plan_limit", "{v}"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(added, 1, "exactly one add may win the last seat");
    let members = owner.json(Method::GET, "/api/v1/members", None, 200).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 4);

    // The same seats bind SCIM provisioning: an active user beyond them is a SCIM 403 and
    // writes nothing; an inactive one is created, and activating it is refused too.
    let t = owner
        .json(
            Method::POST,
            "/api/v1/scim-tokens",
            Some(json!({"name": "entra"})),
            201,
        )
        .await;
    let scim = app.bearer(t["token"].as_str().unwrap());
    let user = |name: &str, active: bool| json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "active": active});
    let r = scim
        .post("/scim/v2/Users", user("s1@example.com", true))
        .await;
    let (st, v) = problem(r).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("plan_limit"), "{v}");
    let r = scim
        .post("/scim/v2/Users", user("s2@example.com", false))
        .await;
    let (st, v) = problem(r).await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let r = scim
        .client
        .patch(format!("{}/scim/v2/Users/{id}", scim.base))
        .bearer_auth(scim.bearer.as_ref().unwrap())
        .header("Content-Type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "active", "value": true}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let (st, v) = problem(r).await;
    assert_eq!(st, 403, "{v}");
    let members = owner.json(Method::GET, "/api/v1/members", None, 200).await;
    let active = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["active"] == true)
        .count();
    assert_eq!(active, 4, "{members}");
}

/// Poll the license view until `pred` holds (bounded).
async fn wait_license(pa: &Session, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = pa
            .json(Method::GET, "/api/v1/platform/license", None, 200)
            .await;
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn reload_by_route_and_sighup_without_restart() {
    let app = spawn_app().await;
    let pa = app.platform_admin().await;
    let file = app.data.join("license.jwt");

    // Nothing to reload yet.
    let (st, v) = problem(
        pa.req(Method::POST, "/api/v1/platform/license/reload", None)
            .await,
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (422, Some("license_missing")));

    std::fs::write(&file, license("lic-a", "pro", "", None)).unwrap();
    let v = pa
        .json(Method::POST, "/api/v1/platform/license/reload", None, 200)
        .await;
    assert_eq!(v["license"]["id"], "lic-a");
    assert_eq!(v["status"], "active");

    // A bad file on reload changes nothing.
    std::fs::write(&file, "garbage").unwrap();
    let (st, v) = problem(
        pa.req(Method::POST, "/api/v1/platform/license/reload", None)
            .await,
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (422, Some("license_malformed")));
    let v = pa
        .json(Method::GET, "/api/v1/platform/license", None, 200)
        .await;
    assert_eq!(v["license"]["id"], "lic-a");

    // Offline installer + SIGHUP: the running server picks up license B.
    let f = app.dir.path().join("b.jwt");
    std::fs::write(
        &f,
        license("lic-b", "enterprise", "audit.export,regions", None),
    )
    .unwrap();
    let out = run_cli(&[
        "license",
        "install",
        f.to_str().unwrap(),
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = app.child.0.id().to_string();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let v = wait_license(&pa, "SIGHUP reload", |v| v["license"]["id"] == "lic-b").await;
    assert_eq!(v["license"]["plan"], "enterprise");
    assert_eq!(v["status"], "active");
    // Still the same process, and it says so. The line is written after the reload returned,
    // so it can trail the API answer by a moment: wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.log_text().contains("SIGHUP: license reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no 'SIGHUP: license reloaded' line in the log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn startup_gate_refuses_without_a_valid_license() {
    let cfg = "[license]\nrequired = true\n".to_string();
    // No license at all.
    let e = try_spawn(Opts {
        config: Some(cfg.clone()),
        ..Default::default()
    })
    .await
    .err()
    .expect("must not start without a license");
    assert!(
        e.log.contains("license.required") && e.log.contains("no license file"),
        "{}",
        e.log
    );

    // An expired one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/license.jwt"),
        issue(&[
            "--plan",
            "pro",
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--expires",
            "2021-01-01T00:00:00Z",
        ]),
    )
    .unwrap();
    let e = try_spawn(Opts {
        config: Some(cfg.clone()),
        dir: Some(dir),
        ..Default::default()
    })
    .await
    .err()
    .expect("must not start with an expired license");
    assert!(e.log.contains("expired"), "{}", e.log);

    // A valid one in a configured file: starts.
    let dir = tempfile::tempdir().unwrap();
    let lic = dir.path().join("license.jwt");
    std::fs::write(&lic, license("lic-req", "pro", "", None)).unwrap();
    let app = spawn_with(Opts {
        config: Some(format!(
            "[license]\nrequired = true\nfile = \"{}\"\n",
            lic.display()
        )),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let pa = app.platform_admin().await;
    let v = pa
        .json(Method::GET, "/api/v1/platform/license", None, 200)
        .await;
    assert_eq!(v["license"]["id"], "lic-req");
}

#[tokio::test]
async fn expiry_warns_then_falls_back_to_free_without_deleting_data() {
    let app = spawn_app().await;
    let pa = app.platform_admin().await;
    let owner = app.owner().await;
    let tid = app.tenant_id();
    let exp = (chrono::Utc::now() + chrono::Duration::seconds(8))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let token = issue(&[
        "--license-id",
        "lic-short",
        "--plan",
        "pro",
        "--max-applications",
        "3",
        "--expires",
        &exp,
    ]);
    install_ok(&pa, &token).await;
    assert_eq!(set_plan(&pa, &tid, "pro").await.0, 200);
    for i in 0..3 {
        assert_eq!(create_app(&owner, &format!("app{i}")).await.status(), 201);
    }
    // Within 30 days of expiry: Owners and PlatformAdmins are warned, others are not.
    let n = owner
        .json(Method::GET, "/api/v1/notifications", None, 200)
        .await;
    assert_eq!(n["items"][0]["kind"], "license_expiring", "{n}");
    assert_eq!(n["items"][0]["expires_at"], exp.as_str());
    let n = pa
        .json(Method::GET, "/api/v1/notifications", None, 200)
        .await;
    assert_eq!(n["items"][0]["kind"], "license_expiring");
    owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": "v@example.com", "role": "viewer", "password": "viewer-password-1"})),
            201,
        )
        .await;
    let viewer = app
        .login(Some(&tid), "v@example.com", "viewer-password-1")
        .await;
    let n = viewer
        .json(Method::GET, "/api/v1/notifications", None, 200)
        .await;
    assert_eq!(n["items"], json!([]));

    wait_license(&pa, "expiry", |v| v["status"] == "expired").await;
    let lic = owner.json(Method::GET, "/api/v1/license", None, 200).await;
    assert_eq!(lic["entitlements"]["plan"], "free");
    let (st, v) = problem(create_app(&owner, "app3").await).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("plan_limit")));
    let apps = owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert_eq!(
        apps["items"].as_array().unwrap().len(),
        3,
        "no data deleted"
    );
    let n = owner
        .json(Method::GET, "/api/v1/notifications", None, 200)
        .await;
    assert_eq!(n["items"][0]["kind"], "license_expired", "{n}");
    // The tenant keeps its assigned plan for when a new license arrives.
    let t = pa
        .json(
            Method::GET,
            &format!("/api/v1/platform/tenants/{tid}"),
            None,
            200,
        )
        .await;
    assert_eq!(t["plan"], "pro");
}

#[tokio::test]
async fn platform_admin_manages_tenants_and_sees_no_tenant_data() {
    let app = spawn_app().await;
    let pa = app.platform_admin().await;

    let created = pa
        .json(
            Method::POST,
            "/api/v1/platform/tenants",
            Some(json!({"name": "acme", "owner_email": "owner@acme.example"})),
            201,
        )
        .await;
    let tid = created["tenant"]["id"].as_str().unwrap().to_string();
    assert!(tid.starts_with("local-"), "{tid}");
    assert_eq!(created["tenant"]["region"], "local");
    assert_eq!(created["tenant"]["plan"], "free");
    assert_eq!(created["tenant"]["status"], "active");
    let pw = created["owner_password"].as_str().unwrap();
    let owner = app
        .login_one_time(Some(&tid), "owner@acme.example", pw)
        .await;
    let me = owner.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(me["must_change_password"], true);
    // Issue 24: nothing but /me, /me/password and logout until the one-time password changes.
    let r = create_app(&owner, "acme-app").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "password_change_required"
    );
    // The helper login clears the one-time flag (keeping the password).
    let owner = app.login(Some(&tid), "owner@acme.example", pw).await;
    assert_eq!(create_app(&owner, "acme-app").await.status(), 201);

    // Bad input: 422 naming the field, 409 for a duplicate; nothing created.
    for (body, field) in [
        (
            json!({"name": "weu-abcd12", "owner_email": "o@x.example"}),
            "name",
        ),
        (
            json!({"name": "ok name", "owner_email": "not-an-email"}),
            "owner_email",
        ),
        (
            json!({"name": "ok name", "owner_email": "o@x.example", "plan": "gold"}),
            "plan",
        ),
        (
            json!({"name": "ok name", "owner_email": "o@x.example", "region": "Bad Region"}),
            "region",
        ),
        (
            json!({"name": "ok name", "owner_email": "o@x.example", "region": "apac"}),
            "region",
        ),
    ] {
        let (st, v) = problem(pa.post("/api/v1/platform/tenants", body.clone()).await).await;
        assert_eq!(st, 422, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    let (st, v) = problem(
        pa.post(
            "/api/v1/platform/tenants",
            json!({"name": "ACME", "owner_email": "o@x.example"}),
        )
        .await,
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (409, Some("tenant_exists")));
    let list = pa
        .json(Method::GET, "/api/v1/platform/tenants", None, 200)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // Suspend: the tenant's session and logins are refused; data is kept; resume restores.
    let t = pa
        .json(
            Method::POST,
            &format!("/api/v1/platform/tenants/{tid}/suspend"),
            None,
            200,
        )
        .await;
    assert_eq!(t["status"], "suspended");
    let (st, v) = problem(owner.get("/api/v1/applications").await).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("tenant_suspended")));
    let r = app
        .client()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"tenant": tid, "email": "owner@acme.example", "password": pw}))
        .send()
        .await
        .unwrap();
    let (st, v) = problem(r).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("tenant_suspended")));
    // The other tenant is unaffected.
    let other = app.owner().await;
    other
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    pa.json(
        Method::POST,
        &format!("/api/v1/platform/tenants/{tid}/resume"),
        None,
        200,
    )
    .await;
    let apps = owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert_eq!(apps["items"].as_array().unwrap().len(), 1);
    let (st, _) = problem(
        pa.req(
            Method::POST,
            "/api/v1/platform/tenants/local-zzzz99/suspend",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(st, 404);

    // PlatformAdmin never reads tenant data, even naming the tenant.
    for path in [
        "/api/v1/applications",
        "/api/v1/members",
        "/api/v1/audit",
        "/api/v1/agent-tokens",
        "/api/v1/scim-tokens",
        "/api/v1/license",
    ] {
        let r = pa
            .client
            .get(app.url(path))
            .header("X-FlowGuard-Tenant", &tid)
            .send()
            .await
            .unwrap();
        let (st, v) = problem(r).await;
        assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")), "{path}");
    }
    // Tenant roles get 403 on platform routes.
    for (m, path) in [
        (Method::GET, "/api/v1/platform/tenants".to_string()),
        (Method::GET, "/api/v1/platform/license".to_string()),
        (
            Method::POST,
            format!("/api/v1/platform/tenants/{tid}/suspend"),
        ),
    ] {
        let (st, _) = problem(owner.req(m, &path, None).await).await;
        assert_eq!(st, 403, "{path}");
    }
}

#[tokio::test]
async fn dashboard_loads_the_notifications_banner() {
    let app = spawn_app().await;
    let c = app.client();
    let index = c
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The dashboard (issue 9) loads /api/v1/notifications into the `banners` region.
    assert!(index.contains("src=\"/assets/app.js"), "{index}");
    assert!(index.contains("id=\"banners\""), "{index}");
    let js = c.get(app.url("/assets/app.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    let js = js.text().await.unwrap();
    assert!(js.contains("'/notifications'") && js.contains("banners"));
}
