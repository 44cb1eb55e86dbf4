//! Members, last-Owner protection, agent tokens scoped to one application.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn last_owner_cannot_be_removed_or_demoted() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let me = owner.json(Method::GET, "/api/v1/me", None, 200).await;
    let oid = me["id"].as_str().unwrap();
    let r = owner
        .req(
            Method::PATCH,
            &format!("/api/v1/members/{oid}"),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "last_owner");
    let r = owner
        .req(Method::DELETE, &format!("/api/v1/members/{oid}"), None)
        .await;
    assert_eq!(r.status(), 409);
    // With a second owner, demotion works.
    let o2 = owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(
                json!({"email": "o2@x.example", "role": "owner", "password": "second-owner-pass"}),
            ),
            201,
        )
        .await;
    owner
        .json(
            Method::PATCH,
            &format!("/api/v1/members/{oid}"),
            Some(json!({"role": "admin"})),
            200,
        )
        .await;
    // Now o2 is the last owner.
    let s2 = app
        .login(Some(&app.tenant_id()), "o2@x.example", "second-owner-pass")
        .await;
    let r = s2
        .req(
            Method::DELETE,
            &format!("/api/v1/members/{}", o2["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn admin_cannot_grant_or_touch_owner() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": "ad@x.example", "role": "admin", "password": "admin-password-1"})),
            201,
        )
        .await;
    let admin = app
        .login(Some(&app.tenant_id()), "ad@x.example", "admin-password-1")
        .await;
    let r = admin
        .post(
            "/api/v1/members",
            json!({"email": "o3@x.example", "role": "owner", "password": "owner-password-3"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "owner_required");
    let me = owner.json(Method::GET, "/api/v1/me", None, 200).await;
    let r = admin
        .req(
            Method::DELETE,
            &format!("/api/v1/members/{}", me["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r.status(), 403);
    // Admin may add a tester; duplicate emails conflict case-insensitively.
    admin
        .json(
            Method::POST,
            "/api/v1/members",
            Some(
                json!({"email": "t@x.example", "role": "tester", "password": "tester-password-1"}),
            ),
            201,
        )
        .await;
    let r = admin
        .post(
            "/api/v1/members",
            json!({"email": "T@X.example", "role": "viewer", "password": "tester-password-1"}),
        )
        .await;
    assert_eq!(r.status(), 409);
    // Removing a member ends their sessions.
    let t = app
        .login(Some(&app.tenant_id()), "t@x.example", "tester-password-1")
        .await;
    let list = owner.json(Method::GET, "/api/v1/members", None, 200).await;
    let tid = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "t@x.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        list["items"][0].get("password_hash").is_none(),
        "hashes are never returned"
    );
    owner
        .json(Method::DELETE, &format!("/api/v1/members/{tid}"), None, 204)
        .await;
    assert_eq!(t.get("/api/v1/me").await.status(), 401);
}

#[tokio::test]
async fn agent_tokens_are_scoped_shown_once_and_revocable() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "a", "base_url": "https://a.example"})),
            201,
        )
        .await;
    let aid = a["id"].as_str().unwrap();
    let t = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": aid, "name": "ci"})),
            201,
        )
        .await;
    let token = t["token"].as_str().unwrap();
    assert!(
        token.starts_with(&format!("fga_{}_", app.tenant_id())),
        "{token}"
    );
    let list = owner
        .json(Method::GET, "/api/v1/agent-tokens", None, 200)
        .await;
    let listed = serde_json::to_string(&list).unwrap();
    assert!(!listed.contains(token), "the secret is shown only once");
    assert!(!listed.contains("token_hash"));
    let agent = app.bearer(token);
    let who = agent
        .json(Method::GET, "/api/v1/agent/whoami", None, 200)
        .await;
    assert_eq!(who["application_id"], aid);
    assert_eq!(
        agent.get("/api/v1/applications").await.status(),
        403,
        "no dashboard access"
    );
    // Unknown application → 422; tampered token → 401.
    let r = owner
        .post(
            "/api/v1/agent-tokens",
            json!({"application_id": "nope", "name": "x"}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let mut bad = token.to_string();
    bad.pop();
    bad.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        app.bearer(&bad).get("/api/v1/agent/whoami").await.status(),
        401
    );
    owner
        .json(
            Method::DELETE,
            &format!("/api/v1/agent-tokens/{}", t["id"].as_str().unwrap()),
            None,
            204,
        )
        .await;
    assert_eq!(
        agent.get("/api/v1/agent/whoami").await.status(),
        401,
        "revoked token stops working"
    );
    assert_eq!(
        owner
            .req(
                Method::DELETE,
                &format!("/api/v1/agent-tokens/{}", t["id"].as_str().unwrap()),
                None
            )
            .await
            .status(),
        404
    );
}
