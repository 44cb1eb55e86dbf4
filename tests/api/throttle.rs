//! Brute-force throttling per (account, client IP), without locking the real user out from
//! elsewhere; the break-glass unlock; argon2 off the executor.

use std::net::IpAddr;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn attempt(
    app: &TestApp,
    from: &str,
    tenant: &str,
    email: &str,
    pw: &str,
) -> reqwest::Response {
    let ip: IpAddr = from.parse().unwrap();
    app.client_from(Some(ip))
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"tenant": tenant, "email": email, "password": pw}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn five_failures_throttle_one_address_only() {
    let app = spawn_app().await;
    let tid = app.tenant_id();
    let pw = app.owner_password();
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let r = attempt(&app, "127.0.0.2", &tid, "admin@localhost", "wrong-password").await;
        assert_eq!(r.status(), 401);
        bodies.push(r.text().await.unwrap());
    }
    // Sixth attempt from the same address: 429 with Retry-After, even with the right password.
    let r = attempt(&app, "127.0.0.2", &tid, "Admin@LocalHost", &pw).await;
    assert_eq!(r.status(), 429);
    let ra: u64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&ra), "{ra}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "too_many_attempts");

    // The same account still logs in from another address.
    let r = attempt(&app, "127.0.0.3", &tid, "admin@localhost", &pw).await;
    assert_eq!(r.status(), 200);

    // Unknown user and wrong password look the same.
    let r = attempt(
        &app,
        "127.0.0.4",
        &tid,
        "nobody@localhost",
        "wrong-password",
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), bodies[0]);

    // Audit: failures and the lockout are recorded with the client IP.
    let owner = app.owner().await;
    let page = owner
        .json(Method::GET, "/api/v1/audit?action=login.failure", None, 200)
        .await;
    let rows = page["items"].as_array().unwrap();
    assert!(rows.len() >= 6);
    assert!(rows
        .iter()
        .any(|r| r["client_ip"] == "127.0.0.2" && r["actor_email"] == "admin@localhost"));
    let page = owner
        .json(Method::GET, "/api/v1/audit?action=login.lockout", None, 200)
        .await;
    assert_eq!(page["items"][0]["client_ip"], "127.0.0.2");

    // Break-glass unlock on the host clears it.
    let out = run_cli(&[
        "users",
        "unlock",
        "admin@localhost",
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = attempt(&app, "127.0.0.2", &tid, "admin@localhost", &pw).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn lockout_grows_and_is_capped() {
    let app = spawn_with(Opts {
        config: Some(
            "[login]\nmax_failures_per_pair = 2\nbase_lockout_secs = 3\nmax_lockout_secs = 5\n"
                .into(),
        ),
        ..Default::default()
    })
    .await;
    let tid = app.tenant_id();
    for _ in 0..2 {
        assert_eq!(
            attempt(&app, "127.0.0.5", &tid, "admin@localhost", "x-wrong")
                .await
                .status(),
            401
        );
    }
    let r = attempt(&app, "127.0.0.5", &tid, "admin@localhost", "x-wrong").await;
    assert_eq!(r.status(), 429);
    // The lock expires by itself.
    let mut waited = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        waited += 250;
        let r = attempt(&app, "127.0.0.5", &tid, "admin@localhost", "x-wrong").await;
        if r.status() == 401 {
            break;
        }
        assert!(waited < 15000, "lock did not expire");
    }
    // Next failure locks again, for longer but within the cap.
    let r = attempt(&app, "127.0.0.5", &tid, "admin@localhost", "x-wrong").await;
    assert_eq!(r.status(), 429);
    let ra: u64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Second lock: 3 s doubled = 6 s, capped at 5 s (a loaded machine may shave a second).
    assert!((4..=5).contains(&ra), "{ra}");
}

#[tokio::test]
async fn oversized_and_empty_passwords() {
    let app = spawn_app().await;
    let tid = app.tenant_id();
    let big = "a".repeat(1025);
    let r = attempt(&app, "127.0.0.6", &tid, "admin@localhost", &big).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "password_too_long");
    let r = attempt(&app, "127.0.0.6", &tid, "admin@localhost", "").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let owner = app.owner().await;
    let page = owner
        .json(Method::GET, "/api/v1/audit?action=login.failure", None, 200)
        .await;
    assert_eq!(page["items"][0]["details"]["reason"], "empty_password");
}

#[tokio::test]
async fn healthz_stays_fast_during_a_login_burst() {
    let app = spawn_app().await;
    let tid = app.tenant_id();
    let mut burst = Vec::new();
    for i in 0..24 {
        let c = app.client();
        let url = app.url("/api/v1/auth/login");
        let tid = tid.clone();
        burst.push(tokio::spawn(async move {
            c.post(url).json(&json!({"tenant": tid, "email": format!("u{i}@x.example"), "password": "wrong-password"})).send().await.map(|r| r.status().as_u16())
        }));
    }
    // /healthz answers while hashing runs (hashing is off the executor).
    let c = app.client();
    for _ in 0..10 {
        let r = c.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for b in burst {
        let st = b.await.unwrap().unwrap();
        assert!(st == 401 || st == 429 || st == 503, "{st}");
    }
}
