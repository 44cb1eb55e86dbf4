//! Every route × every role (incl. anonymous), from one table of expected outcomes. The table
//! must cover exactly the routes of the OpenAPI document generated from the code, so a new
//! route without an entry fails this test.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// Columns: anonymous, owner, admin, tester, viewer, agent, scim, platform_admin.
/// `ok` = permitted (any status but 401 and 403/`forbidden`), `401`, `403`.
const COLS: [&str; 8] = [
    "anon", "owner", "admin", "tester", "viewer", "agent", "scim", "platform",
];

/// (method, OpenAPI path, expected outcomes in COLS order)
const TABLE: &[(&str, &str, [&str; 8])] = &[
    (
        "GET",
        "/healthz",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "GET",
        "/readyz",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "GET",
        "/metrics",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "GET",
        "/api/v1/version",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "GET",
        "/api/v1/openapi.json",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "POST",
        "/api/v1/auth/login",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "POST",
        "/api/v1/auth/ldap/login",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    // Issue 21: single sign-on start/callback are browser redirects open to anyone.
    (
        "GET",
        "/api/v1/auth/oidc/start",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "GET",
        "/api/v1/auth/oidc/callback",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "GET",
        "/api/v1/auth/oidc/available",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    // Issue 23: the deployment-wide sign-in methods for the sign-in page (anonymous).
    (
        "GET",
        "/api/v1/auth/methods",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "POST",
        "/api/v1/auth/logout",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/me",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "ok"],
    ),
    (
        "POST",
        "/api/v1/me/password",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/applications",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/applications",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/applications/{id}",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "PUT",
        "/api/v1/applications/{id}",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/applications/{id}",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/members",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/members",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "PATCH",
        "/api/v1/members/{id}",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/members/{id}",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/agent-tokens",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/agent-tokens",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/agent-tokens/{id}",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/scim-tokens",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/scim-tokens",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/scim-tokens/{id}",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/agent/whoami",
        ["401", "403", "403", "403", "403", "ok", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/audit",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/platform/tenants",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ), // SCIM 2.0 (issue 6): the SCIM token only; everyone else 403, anonymous 401.
    (
        "GET",
        "/scim/v2/Users",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "POST",
        "/scim/v2/Users",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "POST",
        "/scim/v2/Users/.search",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "POST",
        "/scim/v2/.search",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "GET",
        "/scim/v2/Users/{id}",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "PUT",
        "/scim/v2/Users/{id}",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "PATCH",
        "/scim/v2/Users/{id}",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "DELETE",
        "/scim/v2/Users/{id}",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "GET",
        "/scim/v2/ServiceProviderConfig",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "GET",
        "/scim/v2/Schemas",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "GET",
        "/scim/v2/Schemas/{id}",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "GET",
        "/scim/v2/ResourceTypes",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    (
        "GET",
        "/scim/v2/ResourceTypes/{id}",
        ["401", "403", "403", "403", "403", "403", "ok", "403"],
    ),
    // Issue 3: flows, runs, agent API, screenshots, variables, webhooks.
    (
        "GET",
        "/shots/{tenant}/{object}.png",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "POST",
        "/api/v1/hooks/runs/{token}",
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"],
    ),
    (
        "GET",
        "/api/v1/applications/{app}/flows",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/applications/{app}/flows",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/flows/{flow}",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "PUT",
        "/api/v1/flows/{flow}",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/flows/{flow}",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/flows/{flow}/versions/{n}",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "PUT",
        "/api/v1/flows/{flow}/schedule",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/flows/{flow}/schedule",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/flows/{flow}/webhook-tokens",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/flows/{flow}/webhook-tokens",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/flows/{flow}/webhook-tokens/{id}",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/applications/{app}/variables",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/applications/{app}/variables/{name}",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "PUT",
        "/api/v1/applications/{app}/variables/{name}",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/applications/{app}/variables/{name}",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/flows/{flow}/runs",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/runs/{run}/cancel",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/applications/{app}/runs",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/runs/{run}",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/runners",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/runs/{run}/events",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/applications/{app}/runs/events",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/runs/{run}/steps/{n}/screenshot",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/agent/runs/claim",
        ["401", "403", "403", "403", "403", "ok", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/agent/runs/{run}/steps",
        ["401", "403", "403", "403", "403", "ok", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/agent/runs/{run}/heartbeat",
        ["401", "403", "403", "403", "403", "ok", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/agent/runs/{run}/complete",
        ["401", "403", "403", "403", "403", "ok", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/agent/runs/{run}/steps/{n}/screenshot",
        ["401", "403", "403", "403", "403", "ok", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/sso/ldap",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "PUT",
        "/api/v1/sso/ldap",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/sso/ldap/test",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/sso/ldap/test-connection",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/sso/oidc",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "PUT",
        "/api/v1/sso/oidc",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/sso/oidc",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/sso/oidc/test",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/sso/oidc/test-connection",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/keys",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/keys/rotate",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    // Issue 13: the built-in agent's `run --flow ID --wait` path.
    (
        "POST",
        "/api/v1/agent/flows/{flow}/runs",
        ["401", "403", "403", "403", "403", "ok", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/agent/runs/{run}",
        ["401", "403", "403", "403", "403", "ok", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/platform/tenants",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/platform/tenants/{id}",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "POST",
        "/api/v1/platform/tenants/{id}/suspend",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "POST",
        "/api/v1/platform/tenants/{id}/resume",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "PUT",
        "/api/v1/platform/tenants/{id}/plan",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/platform/license",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "POST",
        "/api/v1/platform/license",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "POST",
        "/api/v1/platform/license/reload",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "POST",
        "/api/v1/platform/license/trial",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/platform/backups",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    // Issue 23: key status of every tenant for the PlatformAdmin page (no key material).
    (
        "GET",
        "/api/v1/platform/keys",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "POST",
        "/api/v1/platform/backups",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/platform/license/revocations",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "POST",
        "/api/v1/platform/license/revocations",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/audit/export",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/audit/verify",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/audit/signing-key",
        ["401", "ok", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/platform/audit",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/platform/audit/export",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/platform/audit/verify",
        ["401", "403", "403", "403", "403", "403", "403", "ok"],
    ),
    (
        "GET",
        "/api/v1/license",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "GET",
        "/api/v1/notifications",
        ["401", "ok", "ok", "ok", "ok", "403", "403", "ok"],
    ),
    // Issue 11: the tenant's AI endpoint (Owners only).
    (
        "GET",
        "/api/v1/ai-endpoint",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "PUT",
        "/api/v1/ai-endpoint",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/ai-endpoint",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/ai-endpoint/test",
        ["401", "ok", "403", "403", "403", "403", "403", "403"],
    ),
    // Issue 20: ticket integrations (Owner, Admin) and manual filing (Owner, Admin, Tester).
    (
        "GET",
        "/api/v1/applications/{app}/integration",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "PUT",
        "/api/v1/applications/{app}/integration",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "DELETE",
        "/api/v1/applications/{app}/integration",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/applications/{app}/integration/test",
        ["401", "ok", "ok", "403", "403", "403", "403", "403"],
    ),
    (
        "POST",
        "/api/v1/runs/{run}/ticket",
        ["401", "ok", "ok", "ok", "403", "403", "403", "403"],
    ),
];

/// Routes served outside the generated document (none today; the dashboard is not an API).
const NOT_IN_OPENAPI: &[&str] = &[];

/// Fill every `{param}` with a harmless value: numbers for `{n}`, random ids elsewhere.
fn concrete_path(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').unwrap() + i;
        out.push_str(if &rest[i + 1..j] == "n" {
            "0"
        } else {
            "00000000-0000-4000-8000-000000000000"
        });
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

fn classify(status: u16, body: &Value) -> &'static str {
    match status {
        401 => "401",
        403 if body["code"] == "forbidden" => "403",
        // SCIM routes answer in the SCIM error format (RFC 7644 §3.12).
        403 if body["schemas"][0] == "urn:ietf:params:scim:api:messages:2.0:Error"
            && body["status"] == "403" =>
        {
            "403"
        }
        403 if body["code"] == "csrf_failed" => "csrf",
        _ => "ok",
    }
}

#[tokio::test]
async fn every_route_times_every_role() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let tid = app.tenant_id();

    // Members for each tenant role.
    let pw = "member-password-123";
    let mut sessions = Vec::new();
    for role in ["admin", "tester", "viewer"] {
        let email = format!("{role}@example.com");
        owner
            .json(
                Method::POST,
                "/api/v1/members",
                Some(json!({"email": email, "role": role, "password": pw})),
                201,
            )
            .await;
        sessions.push(app.login(Some(&tid), &email, pw).await);
    }
    let appl = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = appl["id"].as_str().unwrap().to_string();
    let agent = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": app_id, "name": "ci"})),
            201,
        )
        .await;
    let scim = owner
        .json(
            Method::POST,
            "/api/v1/scim-tokens",
            Some(json!({"name": "entra"})),
            201,
        )
        .await;
    let agent_s = app.bearer(agent["token"].as_str().unwrap());
    let scim_s = app.bearer(scim["token"].as_str().unwrap());
    let platform = app.platform_admin().await;
    let anon = app.anonymous();
    let [admin, tester, viewer]: [Session; 3] = sessions.try_into().ok().unwrap();
    let principals: [&Session; 8] = [
        &anon, &owner, &admin, &tester, &viewer, &agent_s, &scim_s, &platform,
    ];

    // The table covers exactly the documented routes.
    let doc: Value = anon
        .json(Method::GET, "/api/v1/openapi.json", None, 200)
        .await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1 expected"
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            documented.insert((m.to_uppercase(), path.clone()));
        }
    }
    let tabled: BTreeSet<(String, String)> = TABLE
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = documented.difference(&tabled).collect();
    let extra: Vec<_> = tabled
        .difference(&documented)
        .filter(|(_, p)| !NOT_IN_OPENAPI.contains(&p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a matrix entry: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "matrix entries not in the OpenAPI document: {extra:?}"
    );

    let mut failures = Vec::new();
    for (method, path, expected) in TABLE {
        // Non-destructive ids: a random id → allowed roles get 404, others 401/403.
        let concrete = concrete_path(path);
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        for (i, s) in principals.iter().enumerate() {
            // Skip logging the real sessions out and changing passwords: send an invalid body.
            let body = match (*method, *path) {
                ("POST", "/api/v1/auth/logout") => None,
                ("GET", _) | ("DELETE", _) => None,
                _ => Some(json!({})),
            };
            if *path == "/api/v1/auth/logout" && expected[i] == "ok" {
                // Verified below with a throwaway session.
                continue;
            }
            let r = s.req(m.clone(), &concrete, body).await;
            let st = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            let got = classify(st, &v);
            if got != expected[i] {
                failures.push(format!(
                    "{method} {path} as {}: expected {}, got {st} {v}",
                    COLS[i], expected[i]
                ));
            }
        }
    }
    // Logout for each session kind, with throwaway sessions.
    let extra_owner = app.owner().await;
    let r = extra_owner
        .req(Method::POST, "/api/v1/auth/logout", None)
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        extra_owner.get("/api/v1/me").await.status(),
        401,
        "session must end at logout"
    );
    let extra_pa = app.platform_admin().await;
    assert_eq!(
        extra_pa
            .req(Method::POST, "/api/v1/auth/logout", None)
            .await
            .status(),
        204
    );

    assert!(
        failures.is_empty(),
        "route × role mismatches:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn cookie_auth_needs_csrf_on_unsafe_methods() {
    let app = spawn_app().await;
    let mut owner = app.owner().await;
    let good = owner.csrf.clone();
    owner.csrf = String::new();
    let r = owner
        .post(
            "/api/v1/applications",
            json!({"name": "a", "base_url": "https://a.example"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "csrf_failed");
    owner.csrf = "wrong".into();
    assert_eq!(
        owner
            .post(
                "/api/v1/applications",
                json!({"name": "a", "base_url": "https://a.example"})
            )
            .await
            .status(),
        403
    );
    owner.csrf = good;
    assert_eq!(
        owner
            .post(
                "/api/v1/applications",
                json!({"name": "a", "base_url": "https://a.example"})
            )
            .await
            .status(),
        201
    );
    // Nothing was written by the rejected attempts: exactly one application.
    let list = owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tenant_a_cannot_read_tenant_b() {
    let app = spawn_app().await;
    let (tid_b, pw_b) = create_tenant(&app, "other", "owner@other.example");
    assert!(
        tid_b.starts_with("local-"),
        "tenant id carries the region: {tid_b}"
    );
    let owner_b = app.login(Some(&tid_b), "owner@other.example", &pw_b).await;
    let b_app = owner_b
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "secret-app", "base_url": "https://b.example"})),
            201,
        )
        .await;
    let id = b_app["id"].as_str().unwrap();
    let owner_a = app.owner().await;
    let r = owner_a.get(&format!("/api/v1/applications/{id}")).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "not_found");
    assert_eq!(
        owner_a
            .req(Method::DELETE, &format!("/api/v1/applications/{id}"), None)
            .await
            .status(),
        404
    );
    let list = owner_a
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;
    assert!(list["items"].as_array().unwrap().is_empty());
    // B's own view is intact; login by tenant name works too.
    owner_b
        .json(
            Method::GET,
            &format!("/api/v1/applications/{id}"),
            None,
            200,
        )
        .await;
    app.login(Some("other"), "owner@other.example", &pw_b).await;
    // A's session cookie cannot be replayed against B: the cookie names A's tenant.
    let me = owner_a.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(me["tenant_id"], app.tenant_id());
}
