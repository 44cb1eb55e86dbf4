//! RFC 9457 problem details, body limits, unknown routes, nothing written on rejection.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let st = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct} for {st}"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], st);
    assert!(
        v["type"].is_string() && v["title"].is_string() && v["code"].is_string(),
        "{v}"
    );
    (st, v)
}

async fn audit_count(owner: &Session) -> usize {
    owner
        .json(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn malformed_oversized_unknown_and_invalid() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let before = audit_count(&owner).await;
    let url = app.url("/api/v1/applications");

    // Malformed JSON → 400.
    let r = owner
        .client
        .post(&url)
        .header("X-CSRF-Token", &owner.csrf)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let (st, v) = problem(r).await;
    assert_eq!((st, v["code"].as_str().unwrap()), (400, "malformed_json"));

    // Body over 1 MiB → 413.
    let big = json!({"name": "x".repeat(1 << 20), "base_url": "https://a.example"});
    let r = owner
        .client
        .post(&url)
        .header("X-CSRF-Token", &owner.csrf)
        .json(&big)
        .send()
        .await
        .unwrap();
    let (st, v) = problem(r).await;
    assert_eq!(
        (st, v["code"].as_str().unwrap()),
        (413, "payload_too_large")
    );

    // Invalid field → 422 naming it.
    let r = owner
        .post(
            "/api/v1/applications",
            json!({"name": "ok", "base_url": "ftp://nope"}),
        )
        .await;
    let (st, v) = problem(r).await;
    assert_eq!(st, 422);
    assert_eq!(v["field"], "base_url");
    let r = owner
        .post(
            "/api/v1/members",
            json!({"email": "not-an-email", "role": "viewer", "password": "long-enough-password"}),
        )
        .await;
    let (_, v) = problem(r).await;
    assert_eq!(v["field"], "email");
    let r = owner
        .post(
            "/api/v1/members",
            json!({"email": "a@b.example", "role": "god", "password": "long-enough-password"}),
        )
        .await;
    let (_, v) = problem(r).await;
    assert_eq!(v["field"], "role");
    // Missing field and unknown field → 422 naming the field.
    let r = owner
        .post("/api/v1/applications", json!({"name": "x"}))
        .await;
    let (st, v) = problem(r).await;
    assert_eq!(st, 422);
    assert_eq!(v["field"], "base_url");
    let r = owner
        .post(
            "/api/v1/applications",
            json!({"name": "x", "base_url": "https://x.example", "evil": 1}),
        )
        .await;
    let (st, v) = problem(r).await;
    assert_eq!(st, 422);
    assert_eq!(v["field"], "evil");

    // Unknown API route → 404 problem; wrong method on a known path too.
    let (st, v) = problem(owner.get("/api/v1/does-not-exist").await).await;
    assert_eq!((st, v["code"].as_str().unwrap()), (404, "not_found"));
    let (st, _) = problem(
        owner
            .req(Method::PATCH, "/api/v1/applications", Some(json!({})))
            .await,
    )
    .await;
    assert_eq!(st, 404);

    // Bad query → 400.
    let (st, v) = problem(owner.get("/api/v1/audit?from=yesterday").await).await;
    assert_eq!(st, 400);
    assert_eq!(v["field"], "from");
    let (st, _) = problem(owner.get("/api/v1/audit?limit=abc").await).await;
    assert_eq!(st, 400);

    // Nothing above was written: no applications, no members, no audit rows.
    assert!(owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await["items"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        owner.json(Method::GET, "/api/v1/members", None, 200).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(audit_count(&owner).await, before);
}

#[tokio::test]
async fn plan_limit_on_free() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "one", "base_url": "https://1.example"})),
            201,
        )
        .await;
    let r = owner
        .post(
            "/api/v1/applications",
            json!({"name": "two", "base_url": "https://2.example"}),
        )
        .await;
    let (st, v) = problem(r).await;
    assert_eq!((st, v["code"].as_str().unwrap()), (403, "plan_limit"));
    // Duplicate names conflict (after deleting, the name is free again).
    let list = owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    let upd = owner
        .json(Method::PUT, &format!("/api/v1/applications/{id}"), Some(json!({"name": "uno", "base_url": "https://1.example", "repo_url": "https://git.example/uno.git"})), 200)
        .await;
    assert_eq!(upd["name"], "uno");
    assert_eq!(upd["id"], id.as_str());
    owner
        .json(
            Method::DELETE,
            &format!("/api/v1/applications/{id}"),
            None,
            204,
        )
        .await;
    owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "two", "base_url": "https://2.example"})),
            201,
        )
        .await;
}

#[tokio::test]
async fn metrics_and_readiness() {
    let app = spawn_app().await;
    let c = app.client();
    assert_eq!(
        c.get(app.url("/readyz")).send().await.unwrap().status(),
        200
    );
    c.get(app.url("/api/v1/version")).send().await.unwrap();
    let text = c
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("flowguard_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/v1/version\""), "{text}");
    assert!(text.contains("flowguard_open_tenant_stores"));
    let off = spawn_with(Opts {
        config: Some("[metrics]\nenabled = false\n".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        off.client()
            .get(off.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
