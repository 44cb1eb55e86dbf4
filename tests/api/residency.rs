//! Data residency (issue 8): two real server processes configured as regions `eus` and `weu`.
//! Every way of naming a tenant gets 421 Misdirected Request with `X-FlowGuard-Region-Endpoint`
//! from the wrong region — before authentication and with no side effect — and works on the
//! right one.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::license::{install_ok, license};

const EUS_URL: &str = "https://eus.flowguard.test";
const WEU_URL: &str = "https://weu.flowguard.test";

fn config(region: &str) -> String {
    // A low per-IP failure limit makes any counted failure visible (429) within a few tries.
    format!(
        "region = \"{region}\"\n[regions]\neus = \"{EUS_URL}\"\nweu = \"{WEU_URL}\"\n[login]\nmax_failures_per_ip = 3\n"
    )
}

async fn spawn_region(region: &str) -> TestApp {
    spawn_with(Opts {
        config: Some(config(region)),
        ..Default::default()
    })
    .await
}

/// Assert a 421 naming `endpoint`, with `Cache-Control: no-store`, no cookie, and a problem body.
async fn assert_misdirected(r: reqwest::Response, endpoint: &str, what: &str) {
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "{what}");
    let h = r.headers().clone();
    assert_eq!(
        h.get("x-flowguard-region-endpoint")
            .and_then(|v| v.to_str().ok()),
        Some(endpoint),
        "{what}"
    );
    assert_eq!(
        h.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "{what}"
    );
    assert!(
        h.get("set-cookie").is_none(),
        "{what}: no session on a misdirected request"
    );
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{what}"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], 421, "{what}");
    assert_eq!(v["code"], "misdirected_request", "{what}");
}

fn session_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("fg_session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string()
}

#[tokio::test]
async fn two_regions_misdirect_every_way_of_naming_a_tenant() {
    let eus = spawn_region("eus").await;
    let weu = spawn_region("weu").await;
    let weu_tid = weu.tenant_id();
    let eus_tid = eus.tenant_id();
    assert!(weu_tid.starts_with("weu-") && eus_tid.starts_with("eus-"));
    let weu_pw = weu.owner_password();

    // Credentials of the weu tenant, made on weu.
    let owner = weu.owner().await;
    let appl = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let agent = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": appl["id"], "name": "ci"})),
            201,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let scim = owner
        .json(
            Method::POST,
            "/api/v1/scim-tokens",
            Some(json!({"name": "entra"})),
            201,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let login = weu
        .client()
        .post(weu.url("/api/v1/auth/login"))
        .json(&json!({"tenant": weu_tid, "email": "admin@localhost", "password": weu_pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = session_cookie(&login);

    // Plain clients without cookie stores, so each request carries only what we give it.
    let plain = |app: &TestApp| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&app.cert).unwrap())
            .tls_built_in_root_certs(false)
            .build()
            .unwrap()
    };
    for (app, right) in [(&eus, false), (&weu, true)] {
        let c = plain(app);
        let what = |w: &str| format!("{w} on {}", if right { "weu" } else { "eus" });

        // 1. Agent bearer token (fga_<tenant>_…).
        let r = c
            .get(app.url("/api/v1/agent/whoami"))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap();
        if right {
            assert_eq!(r.status(), 200, "{}", what("agent token"));
        } else {
            assert_misdirected(r, WEU_URL, &what("agent token")).await;
        }

        // 2. SCIM token (fgs_<tenant>_…): authenticated on the right region (403 = known
        //    token without the permission, not 401).
        let r = c
            .get(app.url("/api/v1/me"))
            .bearer_auth(&scim)
            .send()
            .await
            .unwrap();
        if right {
            assert_eq!(r.status(), 403, "{}", what("scim token"));
        } else {
            assert_misdirected(r, WEU_URL, &what("scim token")).await;
        }

        // 3. Session cookie (fgu_<tenant>_…).
        let r = c
            .get(app.url("/api/v1/me"))
            .header("Cookie", format!("fg_session={cookie}"))
            .send()
            .await
            .unwrap();
        if right {
            assert_eq!(r.status(), 200, "{}", what("session cookie"));
            let me: Value = r.json().await.unwrap();
            assert_eq!(me["tenant_id"], weu_tid.as_str());
        } else {
            assert_misdirected(r, WEU_URL, &what("session cookie")).await;
        }

        // 4. X-FlowGuard-Tenant header, anonymous: 421 comes before authentication (not 401).
        let r = c
            .get(app.url("/api/v1/applications"))
            .header("X-FlowGuard-Tenant", &weu_tid)
            .send()
            .await
            .unwrap();
        if right {
            assert_eq!(r.status(), 401, "{}", what("tenant header"));
        } else {
            assert_misdirected(r, WEU_URL, &what("tenant header")).await;
        }

        // 5. Login body.
        let r = c
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"tenant": weu_tid, "email": "admin@localhost", "password": weu_pw}))
            .send()
            .await
            .unwrap();
        if right {
            assert_eq!(r.status(), 200, "{}", what("login body"));
        } else {
            assert_misdirected(r, WEU_URL, &what("login body")).await;
        }

        // 6. Tenant id in a platform path.
        let r = c
            .get(app.url(&format!("/api/v1/platform/tenants/{weu_tid}")))
            .send()
            .await
            .unwrap();
        if right {
            assert_eq!(r.status(), 401, "{}", what("platform path"));
        } else {
            assert_misdirected(r, WEU_URL, &what("platform path")).await;
        }

        // 7. Signed screenshot URL (the signature is checked only where the tenant lives).
        let r = c
            .get(app.url(&format!(
                "/shots/{weu_tid}/0123456789abcdef.png?exp=9999999999&kid=1&sig=AAAA"
            )))
            .send()
            .await
            .unwrap();
        if right {
            assert_eq!(r.status(), 403, "{}", what("signed URL"));
        } else {
            assert_misdirected(r, WEU_URL, &what("signed URL")).await;
        }
    }

    // The other direction: eus's tenant named on weu points at eus.
    let r = plain(&weu)
        .post(weu.url("/api/v1/auth/login"))
        .json(&json!({"tenant": eus_tid, "email": "admin@localhost", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_misdirected(r, EUS_URL, "eus tenant on weu").await;

    // An unknown region → 404 problem.
    let r = plain(&eus)
        .get(eus.url("/api/v1/me"))
        .header("X-FlowGuard-Tenant", "apac-abcd12")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unknown_region");

    // No side effect: many misdirected wrong-password logins leave no counter on eus (the IP
    // limit there is 3), so a real failure on eus is a plain 401, not 429.
    for _ in 0..6 {
        let r = plain(&eus)
            .post(eus.url("/api/v1/auth/login"))
            .json(&json!({"tenant": weu_tid, "email": "admin@localhost", "password": "wrong-password-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421);
    }
    let r = plain(&eus)
        .post(eus.url("/api/v1/auth/login"))
        .json(
            &json!({"tenant": eus_tid, "email": "admin@localhost", "password": "wrong-password-1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "misdirected attempts must not count on eus"
    );
    // …and none on weu either: its owner logs in normally.
    weu.owner().await;
    // No audit row on eus for any of it: eus's own tenant audit holds only its own events.
    let eus_owner = eus.owner().await;
    let audit = eus_owner
        .json(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await;
    for row in audit["items"].as_array().unwrap() {
        let s = row.to_string();
        assert!(!s.contains(&weu_tid), "eus audit mentions weu: {s}");
    }
}

#[tokio::test]
async fn tenant_creation_is_pinned_to_licensed_regions() {
    let eus = spawn_region("eus").await;
    let pa = eus.platform_admin().await;

    // Multi-region operation needs the `regions` feature.
    let r = pa
        .post(
            "/api/v1/platform/tenants",
            json!({"name": "team-a", "owner_email": "o@a.example"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "feature_not_licensed");
    assert_eq!(v["feature"], "regions");
    assert!(v["detail"].as_str().unwrap().contains("`regions`"));

    // A license limited to region weu: eus tenants are refused.
    let exp = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let only_weu = crate::license::issue(&[
        "--license-id",
        "lic-weu",
        "--plan",
        "enterprise",
        "--features",
        "regions",
        "--regions",
        "weu",
        "--expires",
        &exp,
    ]);
    install_ok(&pa, &only_weu).await;
    let r = pa
        .post(
            "/api/v1/platform/tenants",
            json!({"name": "team-a", "owner_email": "o@a.example", "region": "eus"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "region_not_licensed");

    install_ok(&pa, &license("lic-all", "enterprise", "regions", None)).await;
    // Another region's tenant must be created there: 421 with its endpoint.
    let r = pa
        .post(
            "/api/v1/platform/tenants",
            json!({"name": "team-w", "owner_email": "o@w.example", "region": "weu"}),
        )
        .await;
    assert_misdirected(r, WEU_URL, "create in weu on eus").await;
    let created = pa
        .json(
            Method::POST,
            "/api/v1/platform/tenants",
            Some(json!({"name": "team-a", "owner_email": "o@a.example", "region": "eus", "plan": "business"})),
            201,
        )
        .await;
    assert!(created["tenant"]["id"]
        .as_str()
        .unwrap()
        .starts_with("eus-"));
    assert_eq!(created["tenant"]["plan"], "business");
    let list = pa
        .json(Method::GET, "/api/v1/platform/tenants", None, 200)
        .await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        !names.contains(&"team-w"),
        "the misdirected create wrote nothing"
    );
}

/// `s` with every byte percent-encoded (`weu-abcd12` → `%77%65%75…`).
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// How a path parameter names a tenant, decided by the route it sits in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Names {
    TenantId,
    WebhookToken,
    Nothing,
}

/// Parameters that name no tenant. A route with a parameter in neither this list nor the
/// tenant-naming rules below fails the walk until someone decides which it is.
const NOT_TENANT: &[&str] = &["app", "flow", "id", "name", "n", "object", "run"];

fn classify(path: &str, param: &str) -> Names {
    let before = &path[..path.find(&format!("{{{param}}}")).unwrap()];
    match param {
        "tenant" => Names::TenantId,
        "id" if before.ends_with("/platform/tenants/") => Names::TenantId,
        "token" if before.ends_with("/hooks/runs/") => Names::WebhookToken,
        p if NOT_TENANT.contains(&p) => Names::Nothing,
        p => panic!(
            "{path}: decide whether path parameter `{p}` names a tenant (residency, issue 24)"
        ),
    }
}

/// Issue 24 (3): walk every route of the OpenAPI document. Each route whose path names a
/// tenant answers 421 for a tenant of another region in every form — plain, upper-case, mixed
/// case, percent-encoded, a webhook token of that region — without credentials, i.e. before
/// authentication; and every route answers 421 to credentials (bearer, cookie, tenant header)
/// naming such a tenant in any letter case.
#[tokio::test]
async fn every_route_naming_a_tenant_is_misdirected_in_every_form() {
    let eus = spawn_region("eus").await;
    let doc: Value = eus
        .client()
        .get(eus.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let weu = "weu-abcd12";
    let secret = "a".repeat(43);
    let id_forms = [
        weu.to_string(),
        weu.to_uppercase(),
        "Weu-AbCd12".to_string(),
        encode_all(weu),
        "weu%2dabcd12".to_string(),
        encode_all(&weu.to_uppercase()),
    ];
    let token_forms = [
        format!("fgw_{weu}_{secret}"),
        format!("FGW_{}_{secret}", weu.to_uppercase()),
        encode_all(&format!("fgw_{weu}_{secret}")),
    ];
    let c = eus.client();
    let mut tenant_routes = Vec::new();
    let mut all_routes = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let params: Vec<String> = path
            .split('{')
            .skip(1)
            .filter_map(|p| p.split('}').next().map(str::to_string))
            .collect();
        let kinds: Vec<(String, Names)> = params
            .iter()
            .map(|p| (p.clone(), classify(path, p)))
            .collect();
        for method in item.as_object().unwrap().keys() {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                continue;
            }
            all_routes += 1;
            let fill = |form: &str, kind: Names| {
                let mut p = path.clone();
                for (name, k) in &kinds {
                    let v = if *k == kind { form } else { "x1" };
                    p = p.replace(&format!("{{{name}}}"), v);
                }
                p
            };
            let send = |p: String| {
                let mut b = c.request(m.clone(), eus.url(&p));
                if m != Method::GET && m != Method::DELETE {
                    b = b.json(&json!({}));
                }
                b
            };
            // Path forms, no credentials at all.
            for (kind, forms) in [
                (Names::TenantId, &id_forms[..]),
                (Names::WebhookToken, &token_forms[..]),
            ] {
                if !kinds.iter().any(|(_, k)| *k == kind) {
                    continue;
                }
                tenant_routes.push(format!("{m} {path}"));
                for f in forms {
                    let p = fill(f, kind);
                    let r = send(p.clone()).send().await.unwrap();
                    assert_misdirected(r, WEU_URL, &format!("{m} {p}")).await;
                }
            }
            // Credential forms on every route (the operations probes take no credentials and
            // name no tenant).
            if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
                continue;
            }
            let p = fill("x1", Names::Nothing);
            let upper = weu.to_uppercase();
            for (what, b) in [
                (
                    "bearer",
                    send(p.clone()).bearer_auth(format!("fga_{upper}_{secret}")),
                ),
                (
                    "cookie",
                    send(p.clone()).header("Cookie", format!("fg_session=fgu_Weu-abcd12_{secret}")),
                ),
                (
                    "header",
                    send(p.clone()).header("X-FlowGuard-Tenant", format!(" {upper} ")),
                ),
            ] {
                let r = b.send().await.unwrap();
                assert_misdirected(r, WEU_URL, &format!("{what}: {m} {p}")).await;
            }
        }
    }
    assert!(all_routes > 50, "walked only {all_routes} routes");
    for known in [
        "GET /api/v1/platform/tenants/{id}",
        "POST /api/v1/platform/tenants/{id}/suspend",
        "POST /api/v1/hooks/runs/{token}",
    ] {
        assert!(
            tenant_routes.iter().any(|r| r == known),
            "{known} not walked: {tenant_routes:?}"
        );
    }
}

/// Issue 24 (3): the login bodies (`/auth/login`, `/auth/ldap/login`) naming another region's
/// tenant in any letter case get 421 before anything is counted: after more misdirected
/// attempts than the per-address failure limit, a correct local login from the same address
/// still succeeds.
#[tokio::test]
async fn login_bodies_of_another_region_are_misdirected_without_counting() {
    let eus = spawn_region("eus").await;
    let anon = eus.anonymous();
    for tenant in ["weu-abcd12", "WEU-ABCD12", " Weu-AbCd12 "] {
        let r = anon
            .post(
                "/api/v1/auth/ldap/login",
                json!({"tenant": tenant, "username": "someone", "password": "wrong"}),
            )
            .await;
        assert_misdirected(r, WEU_URL, &format!("ldap login {tenant:?}")).await;
        let r = anon
            .post(
                "/api/v1/auth/login",
                json!({"tenant": tenant, "email": "someone@example.test", "password": "wrong"}),
            )
            .await;
        assert_misdirected(r, WEU_URL, &format!("login {tenant:?}")).await;
    }
    // Six misdirected attempts from 127.0.0.1, limit 3 per address: nothing was counted.
    let s = eus.owner().await;
    s.json(Method::GET, "/api/v1/me", None, 200).await;
}
