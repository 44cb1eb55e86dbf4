//! Issue 23: the rough edges a new user hit (CLI messages and exit codes, display names, role
//! names, step numbers, agent hints, logs, shutdown) and the offline trial (once per deployment,
//! not restartable or extendable by moving the clock back).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut a: Vec<&str> = args.to_vec();
    a.extend_from_slice(&["--data-dir", app.data.to_str().unwrap()]);
    run_cli(&a)
}

async fn attempt(app: &TestApp, ip: &str, tenant: &str, pw: &str) -> u16 {
    let c = app.client_from(Some(ip.parse().unwrap()));
    c.post(app.url("/api/v1/auth/login"))
        .json(&json!({"tenant": tenant, "email": "admin@localhost", "password": pw}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn cli_rough_edges() {
    let app = spawn_with(Opts {
        config: Some("[login]\nmax_failures_per_pair = 2\n".into()),
        ..Default::default()
    })
    .await;
    let tid = app.tenant_id();

    // `users unlock`: an unknown tenant and "nothing matched" exit non-zero with a message.
    let out = cli(
        &app,
        &["users", "unlock", "admin@localhost", "--tenant", "nosuch"],
    );
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("no tenant `nosuch`"), "{err}");
    let out = cli(
        &app,
        &["users", "unlock", "admin@localhost", "--tenant", "default"],
    );
    let (_, err) = text(&out);
    assert!(!out.status.success(), "nothing to unlock must fail");
    assert!(err.contains("nothing to unlock"), "{err}");
    // A locked account is unlocked by tenant NAME.
    for _ in 0..2 {
        assert_eq!(attempt(&app, "127.0.0.7", &tid, "wrong-pass-1").await, 401);
    }
    assert_eq!(
        attempt(&app, "127.0.0.7", &tid, &app.owner_password()).await,
        429
    );
    let out = cli(
        &app,
        &["users", "unlock", "ADMIN@localhost", "--tenant", "Default"],
    );
    let (so, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(so.contains("cleared 1"), "{so}");
    assert_eq!(
        attempt(&app, "127.0.0.7", &tid, &app.owner_password()).await,
        200
    );

    // One name rule for the CLI and the API: id-shaped and control/bidi names are refused.
    for bad in ["weu-abcd12", "ac\u{202E}me", "ac\u{7}me"] {
        let out = cli(
            &app,
            &[
                "tenant",
                "create",
                "--name",
                bad,
                "--owner-email",
                "o@x.example",
            ],
        );
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(text(&out).1.contains("--name"), "{}", text(&out).1);
    }
    let pa = app.platform_admin().await;
    let r = pa
        .post(
            "/api/v1/platform/tenants",
            json!({"name": "weu-abcd12", "owner_email": "o@x.example"}),
        )
        .await;
    assert_eq!(r.status(), 422);

    // Tables have headers; CLI commands print no migration lines.
    let out = cli(&app, &["tenant", "list"]);
    let (so, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let mut lines = so.lines();
    let head = lines.next().unwrap();
    assert!(
        head.starts_with("ID") && head.contains("NAME") && head.contains("PLAN"),
        "{so}"
    );
    assert!(lines.next().unwrap().starts_with(&tid), "{so}");
    assert!(
        !err.contains("migrated"),
        "migration lines on a CLI command: {err}"
    );
    let out = run_cli(&["jobs", "list"]);
    let so = text(&out).0;
    assert!(so.lines().next().unwrap().starts_with("JOB"), "{so}");
    assert!(so.contains("license-clock"), "{so}");

    // `audit verify` without arguments says what to pass.
    let out = cli(&app, &["audit", "verify"]);
    let err = text(&out).1;
    assert!(!out.status.success());
    assert!(
        err.contains("--tenant") && err.contains("--catalog"),
        "{err}"
    );
}

#[tokio::test]
async fn names_roles_steps_and_quiet_client_errors() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    // Display names: no control characters (NUL included), no bidi overrides.
    for bad in ["a\u{0}b", "inv\u{202E}oice", "x\u{2066}y", "tab\there"] {
        let r = owner
            .post(
                "/api/v1/applications",
                json!({"name": bad, "base_url": "https://shop.example"}),
            )
            .await;
        assert_eq!(r.status(), 422, "{bad:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["field"], "name");
    }
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "Shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap();
    let flows = format!("/api/v1/applications/{app_id}/flows");
    let r = owner
        .post(&flows, json!({"name": "pay\u{202E}", "steps": []}))
        .await;
    assert_eq!(r.status(), 422);
    let r = owner
        .post(
            "/api/v1/agent-tokens",
            json!({"name": "ci\u{0}", "application_id": app_id}),
        )
        .await;
    assert_eq!(r.status(), 422);
    // Step numbers are 1-based in the message, the field path stays 0-based.
    let r = owner
        .post(
            &flows,
            json!({"name": "checkout", "steps": [{"type": "navigate", "url": "/"}, {"type": "navigate"}]}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["field"], "steps[1].url");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.starts_with("step 2 (url)"), "{detail}");
    assert!(!detail.contains("missing field"), "{detail}");
    // Role names in any case.
    owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(
                json!({"email": "v@x.example", "role": "Viewer", "password": "viewer-password-1"}),
            ),
            201,
        )
        .await;
    // Expected client errors are not WARN lines with a debug dump; the log is JSON off a TTY.
    assert_eq!(app.anonymous().get("/api/v1/me").await.status(), 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = app.log_text();
    assert!(
        log.lines().filter(|l| l.starts_with('{')).count() > 3,
        "JSON log lines expected when stderr is not a terminal"
    );
    assert!(
        !log.contains("ApiError {"),
        "a client error was logged as a debug dump:\n{log}"
    );
    assert!(!log
        .lines()
        .any(|l| l.contains("\"WARN\"") && l.contains("authentication required")));
}

#[tokio::test]
async fn sigterm_with_open_keepalive_connections_stops_within_5s() {
    let app = spawn_app().await;
    // A client with a pooled keep-alive connection (like an open dashboard tab), and a raw TLS
    // connection left idle after one request.
    let c = app.client();
    assert!(c
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let owner = app.owner().await;
    owner.json(Method::GET, "/api/v1/me", None, 200).await;
    let pid = app.child.0.id().to_string();
    let start = Instant::now();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let TestApp { mut child, .. } = app;
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM with idle connections open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
}

#[tokio::test]
async fn agent_says_how_to_trust_the_certificate_and_what_it_polls() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "Shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_string();
    let t = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"name": "ci", "application_id": app_id})),
            201,
        )
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    // Without --ca-file: the self-signed certificate is refused with the hint.
    let out = Command::new(bin())
        .args(["agent", "run", "--once", "--server", &app.base])
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_AGENT_TOKEN", &token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out).1;
    assert!(!out.status.success());
    assert!(err.contains("--ca-file <data>/tls/cert.pem"), "{err}");
    // Poll mode: one start line naming the server, the application and the interval.
    let logf = app.dir.path().join("agent.log");
    let mut child = ChildGuard(
        Command::new(bin())
            .args([
                "agent",
                "run",
                "--server",
                &app.base,
                "--ca-file",
                app.data.join("tls/cert.pem").to_str().unwrap(),
                "--poll-interval",
                "200ms",
            ])
            .env_remove("FLOWGUARD_CONFIG")
            .env("FLOWGUARD_AGENT_TOKEN", &token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&logf).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let s = std::fs::read_to_string(&logf).unwrap_or_default();
        if let Some(l) = s.lines().find(|l| l.contains("started: polling")) {
            break l.to_string();
        }
        assert!(child.0.try_wait().unwrap().is_none(), "agent exited: {s}");
        assert!(Instant::now() < deadline, "no start line: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(line.contains(&app.base), "{line}");
    assert!(line.contains(&app_id), "{line}");
    assert!(line.contains("200ms"), "{line}");
}

fn set_clock(path: &std::path::Path, t: chrono::DateTime<chrono::Utc>) {
    std::fs::write(path, t.to_rfc3339()).unwrap();
}

#[tokio::test]
async fn offline_trial_once_and_not_extended_by_moving_the_clock_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    let t0 = chrono::Utc::now();
    set_clock(&clock, t0);
    let env = vec![(
        "FLOWGUARD_TEST_CLOCK_FILE".to_string(),
        clock.display().to_string(),
    )];
    let app = spawn_with(Opts {
        env: env.clone(),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let pa = app.platform_admin().await;
    let owner = app.owner().await;
    let v = pa
        .json(Method::GET, "/api/v1/platform/license", None, 200)
        .await;
    assert_eq!(v["status"], "none");
    assert_eq!(v["trial_available"], true);
    // Without a license the refusal says so.
    let r = owner.get("/api/v1/audit/export?format=ndjson").await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("no license is in force"),
        "{p}"
    );

    // Start: every feature for 30 days; the bootstrap tenant follows the trial's plan.
    let v = pa
        .json(Method::POST, "/api/v1/platform/license/trial", None, 200)
        .await;
    assert_eq!(v["status"], "trial", "{v}");
    assert_eq!(v["trial"]["active"], true);
    assert_eq!(v["trial"]["days_left"], 30);
    assert_eq!(v["trial_available"], false);
    let r = owner.get("/api/v1/audit/export?format=ndjson").await;
    assert_eq!(
        r.status(),
        200,
        "the bootstrap tenant follows the trial's plan"
    );
    let n = owner
        .json(Method::GET, "/api/v1/notifications", None, 200)
        .await;
    assert!(
        n.to_string().contains("trial_active"),
        "countdown banner for the Owner: {n}"
    );
    let audit = pa
        .json(
            Method::GET,
            "/api/v1/platform/audit?action=license.trial_start",
            None,
            200,
        )
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    // Once per deployment, by API and CLI.
    let r = pa.post("/api/v1/platform/license/trial", json!({})).await;
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "trial_unavailable");
    let out = cli(&app, &["license", "trial"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("once per deployment"),
        "{}",
        text(&out).1
    );

    // A tenant plan set explicitly stops following; the refusal then names the tenant's plan.
    let tid = app.tenant_id();
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{tid}/plan"),
        Some(json!({"plan": "free"})),
        200,
    )
    .await;
    let r = owner.get("/api/v1/audit/export?format=ndjson").await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("the tenant's plan `free`"),
        "{p}"
    );
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{tid}/plan"),
        Some(json!({"plan": "enterprise"})),
        200,
    )
    .await;

    // 31 days later the trial has ended (Free, nothing deleted).
    let TestApp { dir, child, .. } = app;
    drop(child);
    set_clock(&clock, t0 + chrono::Duration::days(31));
    let app = spawn_with(Opts {
        env: env.clone(),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let pa = app.platform_admin().await;
    let v = pa
        .json(Method::GET, "/api/v1/platform/license", None, 200)
        .await;
    assert_eq!(v["status"], "none", "{v}");
    assert_eq!(v["trial"]["active"], false);
    let owner = app.owner().await;
    let apps = owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert!(apps["items"].is_array());

    // The clock moved back to day 1: the trial neither restarts nor runs again.
    let TestApp { dir, child, .. } = app;
    drop(child);
    set_clock(&clock, t0 + chrono::Duration::days(1));
    let app = spawn_with(Opts {
        env,
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let pa = app.platform_admin().await;
    let v = pa
        .json(Method::GET, "/api/v1/platform/license", None, 200)
        .await;
    assert_eq!(
        v["status"], "none",
        "clock moved back revived the trial: {v}"
    );
    assert_eq!(v["trial"]["active"], false);
    assert_eq!(v["trial_available"], false);
    let r = pa.post("/api/v1/platform/license/trial", json!({})).await;
    assert_eq!(r.status(), 409);
    let owner = app.owner().await;
    assert_eq!(
        owner
            .get("/api/v1/audit/export?format=ndjson")
            .await
            .status(),
        403
    );

    // A real license replaces it.
    let token = crate::license::license("lic-after-trial", "enterprise", "audit.export", None);
    let v = crate::license::install_ok(&pa, &token).await;
    assert_eq!(v["status"], "active");
}

/// An application with a one-step flow and finished runs with these outcomes (oldest first),
/// completed through the agent API. Returns (application id, flow id, run ids).
pub async fn flow_with_history(app: &TestApp, outcomes: &[bool]) -> (String, String, Vec<String>) {
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "History", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_string();
    let f = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{app_id}/flows"),
            Some(json!({"name": "home", "steps": [{"type": "navigate", "url": "/"}]})),
            201,
        )
        .await;
    let flow_id = f["id"].as_str().unwrap().to_string();
    let t = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"name": "hist", "application_id": app_id})),
            201,
        )
        .await;
    let agent = app.bearer(t["token"].as_str().unwrap());
    let mut ids = Vec::new();
    for &pass in outcomes {
        let r = owner
            .json(
                Method::POST,
                &format!("/api/v1/flows/{flow_id}/runs"),
                Some(json!({})),
                201,
            )
            .await;
        let id = r["id"].as_str().unwrap().to_string();
        let c = agent
            .req(
                Method::POST,
                &format!("/api/v1/agent/runs/claim?run={id}"),
                None,
            )
            .await;
        assert_eq!(c.status(), 200);
        let step = agent
            .post(
                &format!("/api/v1/agent/runs/{id}/steps"),
                json!({"index": 0, "status": if pass { "passed" } else { "failed" }, "duration_ms": 40, "error": if pass { Value::Null } else { json!("boom") }}),
            )
            .await;
        assert!(step.status().is_success(), "{}", step.text().await.unwrap());
        let done = agent
            .post(
                &format!("/api/v1/agent/runs/{id}/complete"),
                json!({"status": if pass { "passed" } else { "failed" }, "error": if pass { Value::Null } else { json!("boom") }}),
            )
            .await;
        assert!(done.status().is_success(), "{}", done.text().await.unwrap());
        ids.push(id);
    }
    (app_id, flow_id, ids)
}

#[tokio::test]
async fn runs_list_filters_by_flow_and_date() {
    let app = spawn_app().await;
    let (app_id, flow_id, ids) = flow_with_history(&app, &[true, false]).await;
    let owner = app.owner().await;
    let other = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{app_id}/flows"),
            Some(json!({"name": "other", "steps": [{"type": "navigate", "url": "/x"}]})),
            201,
        )
        .await;
    owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", other["id"].as_str().unwrap()),
            Some(json!({})),
            201,
        )
        .await;
    let all = owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{app_id}/runs"),
            None,
            200,
        )
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let only = owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{app_id}/runs?flow={flow_id}&status=failed"),
            None,
            200,
        )
        .await;
    let items = only["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ids[1].as_str());
    let past = owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{app_id}/runs?to=2020-01-01T00:00:00Z"),
            None,
            200,
        )
        .await;
    assert_eq!(past["items"].as_array().unwrap().len(), 0);
    let recent = owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{app_id}/runs?from=2020-01-01T00:00:00%2B02:00&flow={flow_id}"),
            None,
            200,
        )
        .await;
    assert_eq!(recent["items"].as_array().unwrap().len(), 2);
    let r = owner
        .get(&format!(
            "/api/v1/applications/{app_id}/runs?from=yesterday"
        ))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["field"], "from");
}

/// `http://` on the HTTPS port: a raw request and `curl http://` get a plain-text 400 naming the
/// `https://` address the client connected to (the `Host` header is not reflected); a request
/// head that never completes is closed within the handshake timeout (the probe takes no extra
/// time), and TLS clients are served as before.
#[tokio::test]
async fn plain_http_on_the_https_port_is_told_to_use_https() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_with(Opts {
        config: Some("[connections]\ntls_handshake_timeout_ms = 1500\n".into()),
        ..Default::default()
    })
    .await;
    let want = format!("https://{}/", app.addr);

    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nAccept: */*\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    assert!(got.contains("Content-Type: text/plain"), "{got}");
    assert!(got.contains(&want), "names {want}: {got}");
    assert!(!got.contains("evil.example"), "Host reflected: {got}");

    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .arg(format!("http://{}/", app.addr))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "curl failed: {stderr}");
    assert!(stdout.starts_with("HTTP/1.1 400"), "{stdout}");
    assert!(stdout.contains(&want), "{stdout}");

    // A request line without the end of its head: closed by the shared deadline (1.5 s), not
    // held open by the probe.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut b = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut b)).await;
    assert!(
        r.is_ok(),
        "the server kept an unfinished plain request open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );
    assert!(
        !String::from_utf8_lossy(&b).contains("HTTP/1.1 400"),
        "an unfinished head is closed, not answered"
    );

    // TLS on the same port is unaffected.
    let r = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
