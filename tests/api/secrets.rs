//! A canary password never appears in logs, responses or audit details.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn canary_password_never_leaks() {
    let canary = "CANARY-pw-7f3a9c1e5b";
    let app = spawn_with(Opts {
        env: vec![("FLOWGUARD_LOG".into(), "debug".into())],
        ..Default::default()
    })
    .await;
    let owner = app.owner().await;
    let mut seen = String::new();
    // Member created with the canary as initial password, wrong-password logins, login, change.
    let m = owner
        .req(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": "c@x.example", "role": "viewer", "password": canary})),
        )
        .await;
    seen.push_str(&m.text().await.unwrap());
    for _ in 0..3 {
        let r = app.anonymous().post("/api/v1/auth/login", json!({"tenant": app.tenant_id(), "email": "c@x.example", "password": format!("{canary}-wrong")})).await;
        seen.push_str(&r.text().await.unwrap());
    }
    let r = app
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"tenant": app.tenant_id(), "email": "c@x.example", "password": canary}),
        )
        .await;
    seen.push_str(&format!("{:?}", r.headers()));
    seen.push_str(&r.text().await.unwrap());
    let s = app
        .login(Some(&app.tenant_id()), "c@x.example", canary)
        .await;
    let r = s
        .req(
            Method::POST,
            "/api/v1/me/password",
            Some(json!({"current_password": canary, "new_password": format!("{canary}-new")})),
        )
        .await;
    seen.push_str(&r.text().await.unwrap());
    // Malformed body containing the canary.
    let r = s
        .client
        .post(app.url("/api/v1/me/password"))
        .header("X-CSRF-Token", &s.csrf)
        .header("content-type", "application/json")
        .body(format!("{{\"current_password\": \"{canary}\""))
        .send()
        .await
        .unwrap();
    seen.push_str(&r.text().await.unwrap());
    let r = s
        .client
        .post(app.url("/api/v1/me/password"))
        .header("X-CSRF-Token", &s.csrf)
        .json(&json!({"current_password": 5, "new_password": canary}))
        .send()
        .await
        .unwrap();
    seen.push_str(&r.text().await.unwrap());
    let audit = owner
        .get("/api/v1/audit?limit=1000")
        .await
        .text()
        .await
        .unwrap();
    seen.push_str(&audit);
    assert!(!seen.contains(canary), "canary in a response");
    let log = app.log_text();
    assert!(log.contains("request"), "the log has content");
    assert!(!log.contains(canary), "canary in the log");
    // Nor in any file of the data dir in clear (stores are encrypted).
    for e in walk(&app.data) {
        let bytes = std::fs::read(&e).unwrap();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "canary in {}",
            e.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
