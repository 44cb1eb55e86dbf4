//! OpenID Connect single sign-on (issue 21) against a real, certified OpenID provider: the npm
//! package `oidc-provider` (pinned in tests/oidc/package.json, installed by `.ci/run` into
//! `$OIDC_NODE_DIR`, default /var/tmp/flowguard-npm-oidc), started per test on a free loopback
//! port by tests/oidc/provider.mjs, serving TLS from a CA made here with rcgen. The appliance
//! trusts that CA through the configuration's `ca_pem` and reaches `localhost` through
//! `egress.allow`. Its `public_url` is `https://flowguard.test`, so the provider redirects the
//! browser there; the test's "browser" (reqwest with a cookie store, no automatic redirects)
//! follows every redirect by hand and sends the callback to the real server.
//!
//! Negative ID tokens come from the same real flow: the provider script's test mode rewrites the
//! ID token its token endpoint returns (alg none, HS256 keyed with the public key, other
//! issuer/audience, expired, skewed, wrong nonce).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, Method, Url};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::*;

pub(crate) const PUBLIC_URL: &str = "https://flowguard.test";
const CLIENT_ID: &str = "flowguard-appliance";
const CLIENT_SECRET: &str = "idp-client-secret-4711-abcdefghijklmnop";

/// A running test provider.
pub struct Idp {
    _dir: TempDir,
    child: Child,
    pub port: u16,
    pub ca_pem: String,
    client: Client,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn users() -> Value {
    json!({
        "alice": {"sub": "alice-sub", "email": "alice@corp.example", "email_verified": true,
                  "name": "Alice Admin", "groups": ["fg-admins", "fg-testers", "other"]},
        "carol": {"sub": "carol-sub", "email": "carol@corp.example", "name": "Carol",
                  "groups": ["fg-viewers"]},
        "dave": {"sub": "dave-sub", "email": "dave@corp.example", "name": "Dave", "groups": []},
        "bob": {"sub": "bob-sub", "email": "bob.sso@corp.example", "name": "Bob",
                "groups": ["fg-testers"], "oid": "oid-bob-0001"},
        "mallory": {"sub": "mallory-sub", "email": "admin@localhost", "name": "Mallory",
                    "groups": ["fg-admins"]}
    })
}

impl Idp {
    pub fn start() -> Idp {
        Self::start_with(false)
    }

    /// `self_signed`: the provider serves one self-signed CA:TRUE certificate for `localhost`
    /// as its own (what `openssl req -x509` makes), and `ca_pem` is that certificate.
    pub fn start_with(self_signed: bool) -> Idp {
        let dir = tempfile::tempdir().unwrap();
        // Test CA and a server certificate for `localhost`.
        let mut cap = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cap.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        cap.distinguished_name
            .push(rcgen::DnType::CommonName, "FlowGuard test IdP CA");
        cap.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cak = rcgen::KeyPair::generate().unwrap();
        let ca = cap.self_signed(&cak).unwrap();
        let mut sp = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        sp.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let sk = rcgen::KeyPair::generate().unwrap();
        let server = sp.signed_by(&sk, &ca, &cak).unwrap();
        // (ca_pem, served certificate, its key)
        let (ca_pem, server_pem, key_pem) = if self_signed {
            let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "localhost");
            let k = rcgen::KeyPair::generate().unwrap();
            let c = p.self_signed(&k).unwrap();
            (c.pem(), c.pem(), k.serialize_pem())
        } else {
            (ca.pem(), server.pem(), sk.serialize_pem())
        };
        std::fs::write(dir.path().join("cert.pem"), server_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), key_pem).unwrap();
        let cfg = json!({
            "cert": dir.path().join("cert.pem"),
            "key": dir.path().join("key.pem"),
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [format!("{PUBLIC_URL}/api/v1/auth/oidc/callback")],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic"
            }],
            "users": users(),
        });
        let cfg_path = dir.path().join("provider.json");
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let node_dir = std::env::var("OIDC_NODE_DIR")
            .unwrap_or_else(|_| "/var/tmp/flowguard-npm-oidc".to_string());
        assert!(
            std::path::Path::new(&node_dir)
                .join("node_modules/oidc-provider/package.json")
                .exists(),
            "the test provider is not installed in {node_dir}: run .ci/run (npm ci of tests/oidc)"
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/provider.mjs");
        let log = std::fs::File::create(dir.path().join("provider.log")).unwrap();
        let mut child = Command::new("node")
            .arg(script)
            .arg(&cfg_path)
            .env("OIDC_NODE_DIR", &node_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .spawn()
            .expect("start node");
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("PORT=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "provider did not start: {line:?}\n{}",
                    std::fs::read_to_string(dir.path().join("provider.log")).unwrap_or_default()
                )
            });
        let client = Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Idp {
            _dir: dir,
            child,
            port,
            ca_pem,
            client,
        }
    }

    pub fn issuer(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Rewrite the next ID tokens (see provider.mjs).
    pub async fn mode(&self, m: &str) {
        let r = self
            .client
            .post(format!("{}/__test/mode?m={m}", self.issuer()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// A new signing key; the old one leaves the JWKS.
    pub async fn rotate(&self) -> String {
        let v: Value = self
            .client
            .post(format!("{}/__test/rotate", self.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["kid"].as_str().unwrap().to_string()
    }
}

pub fn app_config(extra: &str) -> String {
    format!("public_url = \"{PUBLIC_URL}\"\n{extra}\n[egress]\nallow = [\"localhost\"]\n")
}

pub async fn spawn_sso_app(extra_env: Vec<(String, String)>) -> TestApp {
    spawn_with(Opts {
        config: Some(app_config("")),
        env: extra_env,
        ..Default::default()
    })
    .await
}

pub fn config_body(idp: &Idp, over: Value) -> Value {
    let mut v = json!({
        "enabled": true,
        "issuer": idp.issuer(),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "claims": {"email": "email", "name": "name", "groups": "groups"},
        "role_mapping": [
            {"group": "fg-admins", "role": "Admin"},
            {"group": "fg-testers", "role": "Tester"},
            {"group": "fg-viewers", "role": "Viewer"}
        ],
        "default_role": "Viewer",
        "jit_provisioning": true,
        "ca_pem": idp.ca_pem,
    });
    if let (Some(m), Some(o)) = (v.as_object_mut(), over.as_object()) {
        for (k, x) in o {
            m.insert(k.clone(), x.clone());
        }
    }
    v
}

/// A browser: cookie store, no automatic redirects, trusting the appliance's and the IdP's CA.
pub fn browser(app: &TestApp, idp: &Idp) -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(&app.cert).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(idp.ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response, base: &Url) -> Url {
    let l = r
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {} {}", r.status(), r.url()))
        .to_str()
        .unwrap();
    base.join(l).unwrap()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The outcome of one sign-in attempt.
pub struct Outcome {
    /// Where our callback sent the browser (`/` or `/signin?sso_error=…`).
    pub location: String,
    /// The callback response's cookies.
    pub cookies: Vec<String>,
}

impl Outcome {
    pub fn error(&self) -> Option<String> {
        self.location
            .strip_prefix("/signin?sso_error=")
            .map(str::to_string)
    }
    pub fn csrf(&self) -> String {
        self.cookies
            .iter()
            .find_map(|c| c.strip_prefix("fg_sso_csrf="))
            .and_then(|c| c.split(';').next())
            .expect("csrf hand-off cookie")
            .to_string()
    }
}

/// Start at the appliance, log in at the provider as `user`, and bring the provider's redirect
/// back to the real server. Returns the first authorization URL too.
pub async fn start(b: &Client, app: &TestApp, tenant: &str) -> reqwest::Response {
    b.get(app.url(&format!("/api/v1/auth/oidc/start?tenant={tenant}")))
        .send()
        .await
        .unwrap()
}

/// Drive the provider from the authorization URL to the redirect back (on `public_url`).
pub async fn at_provider(b: &Client, auth_url: Url, user: &str) -> Url {
    let mut url = auth_url;
    for _ in 0..12 {
        if url.as_str().starts_with(PUBLIC_URL) {
            return url;
        }
        let r = b.get(url.clone()).send().await.unwrap();
        if r.status().is_redirection() {
            url = location(&r, &url);
            continue;
        }
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "provider at {url}: {body}");
        assert!(body.contains("name=\"login\""), "not a login form: {body}");
        let post = url.join(&format!("{}/login", url.path())).unwrap();
        let r = b
            .post(post.clone())
            .form(&[("login", user)])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "login post: {}", r.status());
        url = location(&r, &post);
    }
    panic!("the provider never redirected back");
}

/// Send the provider's redirect (built on `public_url`) to the real server.
pub async fn deliver(b: &Client, app: &TestApp, callback: &Url) -> (String, Vec<String>) {
    let path = &callback.as_str()[PUBLIC_URL.len()..];
    let r = b.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 302, "callback: {}", r.status());
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    (loc, set_cookies(&r))
}

pub async fn sign_in(b: &Client, app: &TestApp, tenant: &str, user: &str) -> Outcome {
    let r = start(b, app, tenant).await;
    assert_eq!(
        r.status(),
        302,
        "start: {}",
        r.text().await.unwrap_or_default()
    );
    let auth = location(&r, &Url::parse(&app.base).unwrap());
    let callback = at_provider(b, auth, user).await;
    let (location, cookies) = deliver(b, app, &callback).await;
    Outcome { location, cookies }
}

/// The signed-in session behind `b` (cookie) and the handed-over CSRF token.
pub fn session_of(app: &TestApp, b: &Client, o: &Outcome) -> Session {
    Session {
        client: b.clone(),
        csrf: o.csrf(),
        base: app.base.clone(),
        bearer: None,
    }
}

async fn audit(owner: &Session) -> Vec<Value> {
    let v = owner
        .json(Method::GET, "/api/v1/audit?limit=500", None, 200)
        .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

fn oidc_failures(rows: &[Value], reason: &str) -> usize {
    rows.iter()
        .filter(|r| {
            r["action"] == "login.failure"
                && r["details"]["method"] == "oidc"
                && r["details"]["reason"] == reason
        })
        .count()
}

async fn configure(owner: &Session, idp: &Idp, over: Value) -> Value {
    owner
        .json(
            Method::PUT,
            "/api/v1/sso/oidc",
            Some(config_body(idp, over)),
            200,
        )
        .await
}

#[tokio::test]
async fn oidc_full_sign_in_through_redirects_with_group_roles_and_audit() {
    let idp = Idp::start();
    let app = spawn_sso_app(vec![]).await;
    let owner = app.owner().await;
    let tenant = app.tenant_id();
    let view = configure(&owner, &idp, json!({})).await;
    assert_eq!(view["client_secret_set"], true);
    assert!(view.get("client_secret").is_none(), "{view}");
    assert_eq!(
        view["redirect_uri"],
        format!("{PUBLIC_URL}/api/v1/auth/oidc/callback")
    );
    assert!(!view.to_string().contains(CLIENT_SECRET));

    // The sign-in page's question.
    let anon = app.anonymous();
    let v = anon
        .json(
            Method::GET,
            &format!("/api/v1/auth/oidc/available?tenant={tenant}"),
            None,
            200,
        )
        .await;
    assert_eq!(v["enabled"], true);
    let v = anon
        .json(
            Method::GET,
            "/api/v1/auth/oidc/available?tenant=nope",
            None,
            200,
        )
        .await;
    assert_eq!(v["enabled"], false);

    // The authorization request: code + PKCE S256, state, nonce, redirect_uri from public_url,
    // and the binding cookie's attributes.
    let b = browser(&app, &idp);
    let r = start(&b, &app, &tenant).await;
    assert_eq!(r.status(), 302);
    let cookies = set_cookies(&r);
    let c = cookies
        .iter()
        .find(|c| c.starts_with("fg_oidc="))
        .expect("binding cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Max-Age=600"] {
        assert!(c.contains(attr), "{attr} missing: {c}");
    }
    let auth = location(&r, &Url::parse(&app.base).unwrap());
    assert!(auth
        .as_str()
        .starts_with(&format!("{}/auth?", idp.issuer())));
    let q: std::collections::HashMap<String, String> = auth.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(
        q["redirect_uri"],
        format!("{PUBLIC_URL}/api/v1/auth/oidc/callback")
    );
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43);
    assert_eq!(q["code_challenge"].len(), 43);

    // Alice: groups fg-admins and fg-testers → Admin (highest wins), created (JIT).
    let callback = at_provider(&b, auth, "alice").await;
    let (loc, cookies) = deliver(&b, &app, &callback).await;
    assert_eq!(loc, "/", "{cookies:?}");
    let o = Outcome {
        location: loc,
        cookies,
    };
    let s = o
        .cookies
        .iter()
        .find(|c| c.starts_with("fg_session="))
        .expect("session cookie");
    assert!(s.contains("HttpOnly") && s.contains("Secure") && s.contains("SameSite=Strict"));
    let alice = session_of(&app, &b, &o);
    let me = alice.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(me["role"], "admin", "{me}");
    assert_eq!(me["name"], "alice@corp.example");
    // The session works for unsafe requests with the handed-over CSRF token.
    alice
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;

    // The same callback again (new browser cookie): the state is single use.
    let b2 = browser(&app, &idp);
    assert_eq!(start(&b2, &app, &tenant).await.status(), 302);
    let (loc, _) = deliver(&b2, &app, &callback).await;
    assert_eq!(loc, "/signin?sso_error=state_reused");

    // Carol: fg-viewers → Viewer.
    let b3 = browser(&app, &idp);
    let o = sign_in(&b3, &app, &tenant, "carol").await;
    assert_eq!(o.location, "/");
    let me = session_of(&app, &b3, &o)
        .json(Method::GET, "/api/v1/me", None, 200)
        .await;
    assert_eq!(me["role"], "viewer");

    // Mallory's e-mail is the Owner's: never linked by e-mail, refused.
    let b4 = browser(&app, &idp);
    let o = sign_in(&b4, &app, &tenant, "mallory").await;
    assert_eq!(o.error().as_deref(), Some("email_conflict"));
    assert_eq!(
        b4.get(app.url("/api/v1/me")).send().await.unwrap().status(),
        401
    );

    // State missing, wrong, and a callback without the browser's cookie.
    let b5 = browser(&app, &idp);
    assert_eq!(start(&b5, &app, &tenant).await.status(), 302);
    let r = b5
        .get(app.url("/api/v1/auth/oidc/callback?code=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/signin?sso_error=state_missing");
    assert_eq!(start(&b5, &app, &tenant).await.status(), 302);
    let r = b5
        .get(app.url("/api/v1/auth/oidc/callback?code=abc&state=forged-state"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/signin?sso_error=state_unknown");
    // A state started in another browser: the binding cookie does not match.
    let b6 = browser(&app, &idp);
    let r = start(&b6, &app, &tenant).await;
    let auth = location(&r, &Url::parse(&app.base).unwrap());
    let cb = at_provider(&b6, auth, "carol").await;
    let b7 = browser(&app, &idp);
    assert_eq!(start(&b7, &app, &tenant).await.status(), 302);
    let (loc, _) = deliver(&b7, &app, &cb).await;
    assert_eq!(loc, "/signin?sso_error=state_mismatch");
    let fresh = browser(&app, &idp);
    let (loc, _) = deliver(&fresh, &app, &cb).await;
    assert_eq!(loc, "/signin?sso_error=state_missing");

    // Audit: success and failures, method oidc; member.add for the JIT members.
    let rows = audit(&owner).await;
    let ok: Vec<&Value> = rows
        .iter()
        .filter(|r| r["action"] == "login.success" && r["details"]["method"] == "oidc")
        .collect();
    assert_eq!(ok.len(), 2, "{ok:?}");
    assert_eq!(
        ok.iter()
            .filter(|r| r["details"]["subject"] == "alice-sub")
            .count(),
        1
    );
    assert!(rows
        .iter()
        .any(|r| r["action"] == "member.add" && r["details"]["source"] == "oidc"));
    for reason in [
        "state_reused",
        "email_conflict",
        "state_missing",
        "state_unknown",
        "state_mismatch",
    ] {
        assert!(oidc_failures(&rows, reason) >= 1, "{reason} not audited");
    }
    assert!(rows.iter().any(|r| r["action"] == "sso.oidc.save"));
    let all = serde_json::to_string(&rows).unwrap();
    assert!(!all.contains(CLIENT_SECRET), "the secret reached the audit");
    assert!(
        !app.log_text().contains(CLIENT_SECRET),
        "the secret reached the log"
    );
}

#[tokio::test]
async fn oidc_id_token_checks_refuse_forged_tokens_and_accept_skew_inside_leeway() {
    let idp = Idp::start();
    let app = spawn_sso_app(vec![]).await;
    let owner = app.owner().await;
    let tenant = app.tenant_id();
    configure(&owner, &idp, json!({})).await;
    for (mode, want) in [
        ("none", Some("alg_not_allowed")),
        ("hs256", Some("alg_not_allowed")),
        ("iss", Some("wrong_issuer")),
        ("aud", Some("wrong_audience")),
        ("expired", Some("token_expired")),
        ("skew_out", Some("clock_skew")),
        ("nonce", Some("nonce_mismatch")),
        ("skew_in", None),
        ("off", None),
    ] {
        idp.mode(mode).await;
        let b = browser(&app, &idp);
        let o = sign_in(&b, &app, &tenant, "carol").await;
        assert_eq!(o.error().as_deref(), want, "mode {mode}: {}", o.location);
        let me = b.get(app.url("/api/v1/me")).send().await.unwrap().status();
        assert_eq!(me == 200, want.is_none(), "mode {mode}: /me {me}");
    }
    let rows = audit(&owner).await;
    for reason in [
        "alg_not_allowed",
        "wrong_issuer",
        "wrong_audience",
        "token_expired",
        "clock_skew",
        "nonce_mismatch",
    ] {
        assert!(oidc_failures(&rows, reason) >= 1, "{reason} not audited");
    }
    assert_eq!(oidc_failures(&rows, "alg_not_allowed"), 2);
}

#[tokio::test]
async fn oidc_jwks_rotation_at_the_provider_is_picked_up_once() {
    let idp = Idp::start();
    let app = spawn_sso_app(vec![]).await;
    let owner = app.owner().await;
    let tenant = app.tenant_id();
    configure(&owner, &idp, json!({})).await;
    let b = browser(&app, &idp);
    assert_eq!(sign_in(&b, &app, &tenant, "alice").await.location, "/");
    // The appliance cached the JWKS; the provider now signs with a new key only.
    idp.rotate().await;
    let b = browser(&app, &idp);
    let o = sign_in(&b, &app, &tenant, "alice").await;
    assert_eq!(o.location, "/", "after rotation");
    let b = browser(&app, &idp);
    assert_eq!(sign_in(&b, &app, &tenant, "carol").await.location, "/");
}

#[tokio::test]
async fn oidc_links_scim_members_by_link_claim_jit_off_deprovisioned_and_unmapped() {
    let idp = Idp::start();
    let app = spawn_sso_app(vec![]).await;
    let owner = app.owner().await;
    let tenant = app.tenant_id();
    configure(
        &owner,
        &idp,
        json!({"jit_provisioning": false, "link_claim": "oid", "default_role": null}),
    )
    .await;
    // SCIM provisions Bob with externalId = his Entra object id, and a manual role.
    let tok = owner
        .json(
            Method::POST,
            "/api/v1/scim-tokens",
            Some(json!({"name": "entra"})),
            201,
        )
        .await;
    let scim = app.bearer(tok["token"].as_str().unwrap());
    let r = scim
        .client
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(scim.bearer.as_deref().unwrap())
        .header("Content-Type", "application/scim+json")
        .header("Accept", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "bob@corp.example", "externalId": "oid-bob-0001", "active": true})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let bob_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Dry run: Bob's claims match the SCIM member through the link claim, role Tester.
    let dry = owner
        .json(
            Method::POST,
            "/api/v1/sso/oidc/test",
            Some(json!({"claims": {"sub": "bob-sub", "oid": "oid-bob-0001",
                                   "email": "bob.sso@corp.example", "groups": ["fg-testers"]}})),
            200,
        )
        .await;
    assert_eq!(dry["outcome"], "allow", "{dry}");
    assert_eq!(dry["matched_by"], "link_claim");
    assert_eq!(dry["member_id"], bob_id.as_str());
    assert_eq!(dry["role"], "Tester");
    // Nothing was written by the dry run.
    let dry2 = owner
        .json(
            Method::POST,
            "/api/v1/sso/oidc/test",
            Some(json!({"claims": {"sub": "bob-sub", "groups": ["fg-testers"]}})),
            200,
        )
        .await;
    assert_eq!(dry2["reason"], "unknown_user", "{dry2}");

    // Alice is unknown and JIT is off: refused.
    let b = browser(&app, &idp);
    let o = sign_in(&b, &app, &tenant, "alice").await;
    assert_eq!(o.error().as_deref(), Some("unknown_user"));
    // Dave has no mapped group and default_role is null: refused.
    let b = browser(&app, &idp);
    assert_eq!(
        sign_in(&b, &app, &tenant, "dave").await.error().as_deref(),
        Some("no_matching_group")
    );

    // Bob signs in: linked to the SCIM member (whose e-mail differs from the claim).
    let b = browser(&app, &idp);
    let o = sign_in(&b, &app, &tenant, "bob").await;
    assert_eq!(o.location, "/");
    let me = session_of(&app, &b, &o)
        .json(Method::GET, "/api/v1/me", None, 200)
        .await;
    assert_eq!(me["id"], bob_id.as_str());
    assert_eq!(me["role"], "tester");
    let dry = owner
        .json(
            Method::POST,
            "/api/v1/sso/oidc/test",
            Some(json!({"claims": {"sub": "bob-sub", "groups": ["fg-testers"]}})),
            200,
        )
        .await;
    assert_eq!(dry["matched_by"], "identity", "{dry}");

    // SCIM deprovisions Bob (active false): refused.
    let r = scim
        .client
        .patch(app.url(&format!("/scim/v2/Users/{bob_id}")))
        .bearer_auth(scim.bearer.as_deref().unwrap())
        .header("Content-Type", "application/scim+json")
        .header("Accept", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "active", "value": false}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let b = browser(&app, &idp);
    assert_eq!(
        sign_in(&b, &app, &tenant, "bob").await.error().as_deref(),
        Some("user_disabled")
    );
    let rows = audit(&owner).await;
    for reason in ["unknown_user", "no_matching_group", "user_disabled"] {
        assert!(oidc_failures(&rows, reason) >= 1, "{reason} not audited");
    }
}

#[tokio::test]
async fn oidc_configuration_validation_egress_secret_test_connection_and_delete() {
    let idp = Idp::start();
    let app = spawn_sso_app(vec![]).await;
    let owner = app.owner().await;
    assert_eq!(owner.get("/api/v1/sso/oidc").await.status(), 404);
    let r = owner
        .post("/api/v1/sso/oidc/test-connection", json!({}))
        .await;
    assert_eq!(r.status(), 409);
    // First save needs the secret.
    let mut body = config_body(&idp, json!({}));
    body.as_object_mut().unwrap().remove("client_secret");
    let v = owner
        .json(Method::PUT, "/api/v1/sso/oidc", Some(body), 422)
        .await;
    assert_eq!(v["field"], "client_secret");
    // http:// issuer.
    let v = owner
        .json(
            Method::PUT,
            "/api/v1/sso/oidc",
            Some(config_body(&idp, json!({"issuer": "http://localhost:1"}))),
            422,
        )
        .await;
    assert_eq!(v["field"], "issuer");
    // An issuer outside egress.allow (only `localhost` is listed).
    let v = owner
        .json(
            Method::PUT,
            "/api/v1/sso/oidc",
            Some(config_body(
                &idp,
                json!({"issuer": format!("https://127.0.0.1:{}", idp.port)}),
            )),
            422,
        )
        .await;
    assert_eq!(v["code"], "egress_denied", "{v}");
    let v = owner
        .json(
            Method::PUT,
            "/api/v1/sso/oidc",
            Some(config_body(
                &idp,
                json!({"issuer": "https://idp.elsewhere.example"}),
            )),
            422,
        )
        .await;
    assert_eq!(v["code"], "egress_denied", "{v}");
    // Saved; a second save without the secret keeps it (same issuer and CA).
    configure(&owner, &idp, json!({})).await;
    let mut body = config_body(&idp, json!({"jit_provisioning": false}));
    body.as_object_mut().unwrap().remove("client_secret");
    owner
        .json(Method::PUT, "/api/v1/sso/oidc", Some(body), 200)
        .await;
    let v = owner
        .json(Method::POST, "/api/v1/sso/oidc/test-connection", None, 200)
        .await;
    assert_eq!(v["issuer"], idp.issuer());
    assert_eq!(v["keys"], 1);
    // Without our CA the provider's certificate is not trusted: a TLS failure, named by kind.
    configure(&owner, &idp, json!({"ca_pem": null})).await;
    let v = owner
        .json(Method::POST, "/api/v1/sso/oidc/test-connection", None, 502)
        .await;
    assert_eq!(v["code"], "tls_failed", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("[unknown_issuer]"),
        "{v}"
    );
    let b = browser(&app, &idp);
    let r = start(&b, &app, &app.tenant_id()).await;
    assert_eq!(
        r.headers()["location"],
        "/signin?sso_error=provider_unavailable"
    );
    // Delete: audited, then gone; sign-in says so.
    let r = owner.req(Method::DELETE, "/api/v1/sso/oidc", None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(owner.get("/api/v1/sso/oidc").await.status(), 404);
    let r = start(&b, &app, &app.tenant_id()).await;
    assert_eq!(r.headers()["location"], "/signin?sso_error=not_configured");
    let rows = audit(&owner).await;
    assert!(rows.iter().any(|r| r["action"] == "sso.oidc.delete"));
    let saves: Vec<&Value> = rows
        .iter()
        .filter(|r| r["action"] == "sso.oidc.save")
        .collect();
    assert_eq!(saves.len(), 3, "{saves:?}");
    assert!(!serde_json::to_string(&rows)
        .unwrap()
        .contains(CLIENT_SECRET));
}

#[tokio::test]
async fn oidc_state_older_than_ten_minutes_is_refused() {
    let idp = Idp::start();
    let app = spawn_sso_app(vec![(
        "FLOWGUARD_FAULT_CLOCK".into(),
        "oidc:callback=601".into(),
    )])
    .await;
    let owner = app.owner().await;
    configure(&owner, &idp, json!({})).await;
    let b = browser(&app, &idp);
    let o = sign_in(&b, &app, &app.tenant_id(), "alice").await;
    assert_eq!(o.error().as_deref(), Some("state_expired"));
    assert_eq!(oidc_failures(&audit(&owner).await, "state_expired"), 1);
}

#[tokio::test]
async fn oidc_start_for_a_tenant_of_another_region_is_misdirected() {
    let app = spawn_with(Opts {
        config: Some(format!(
            "region = \"eus\"\n{}[regions]\neus = \"https://eus.example\"\nweu = \"https://weu.example\"\n",
            app_config("")
        )),
        ..Default::default()
    })
    .await;
    let b = app.anonymous();
    let r = b
        .client
        .get(app.url("/api/v1/auth/oidc/start?tenant=weu-abc123"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    assert_eq!(
        r.headers()["x-flowguard-region-endpoint"],
        "https://weu.example"
    );
    assert!(r.headers().get("set-cookie").is_none());
}

// ------------------------------------------------------------------------------------------
// The same sign-in from the dashboard's button in headless Chromium. The browser reaches the
// appliance under its public_url (https://flowguard.test, mapped to the test server's port with
// --host-resolver-rules), so the provider's redirect lands on the real server.

mod chromium {
    use std::time::{Duration, Instant};

    use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
    use chromiumoxide::{Browser, BrowserConfig, Page};
    use futures_util::StreamExt;

    pub struct Ui {
        pub browser: Browser,
        pub handler: tokio::task::JoinHandle<()>,
        pub page: Page,
    }

    const DEADLINE: Duration = Duration::from_secs(45);

    impl Ui {
        pub async fn launch(dir: &std::path::Path, app_port: u16) -> Ui {
            let profile = dir.join("chromium-profile-sso");
            std::fs::create_dir_all(&profile).unwrap();
            let exe = flowguard::agent::browser::find_chromium(None)
                .expect("Chromium (.ci/run installs Debian's `chromium`)");
            let rules = format!("host-resolver-rules=MAP flowguard.test:443 127.0.0.1:{app_port}");
            let config = BrowserConfig::builder()
                .chrome_executable(exe)
                .user_data_dir(&profile)
                .disable_default_args()
                .no_sandbox()
                .args([
                    "disable-gpu",
                    "disable-background-networking",
                    "no-first-run",
                    "no-default-browser-check",
                    "disable-component-update",
                    "disable-sync",
                    "disable-dev-shm-usage",
                    "ignore-certificate-errors",
                    rules.as_str(),
                ])
                .launch_timeout(Duration::from_secs(60))
                .request_timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            let (browser, mut handler) = Browser::launch(config).await.expect("launch Chromium");
            let handler = tokio::spawn(async move { while let Some(_e) = handler.next().await {} });
            let page = browser.new_page("about:blank").await.expect("new page");
            Ui {
                browser,
                handler,
                page,
            }
        }

        pub async fn eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> Result<T, String> {
            let p = EvaluateParams::builder()
                .expression(js)
                .return_by_value(true)
                .await_promise(true)
                .build()
                .map_err(|e| e.to_string())?;
            let r = self
                .page
                .evaluate_expression(p)
                .await
                .map_err(|e| e.to_string())?;
            r.into_value::<T>().map_err(|e| e.to_string())
        }

        /// Poll `js` (an expression) until true.
        pub async fn wait(&self, what: &str, js: &str) -> Result<(), String> {
            let end = Instant::now() + DEADLINE;
            loop {
                if let Ok(true) = self.eval::<bool>(js).await {
                    return Ok(());
                }
                if Instant::now() > end {
                    let url: String = self.eval("location.href").await.unwrap_or_default();
                    let body: String = self
                        .eval("document.body ? document.body.innerText : ''")
                        .await
                        .unwrap_or_default();
                    return Err(format!("timed out waiting for {what} at {url}: {body}"));
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }

        pub async fn goto(&self, url: &str) {
            let _ = tokio::time::timeout(DEADLINE, self.page.goto(url)).await;
        }

        pub async fn close(mut self) {
            let _ = tokio::time::timeout(Duration::from_secs(10), self.browser.close()).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.browser.wait()).await;
            let _ = self.browser.kill().await;
            self.handler.abort();
        }
    }
}

#[tokio::test]
async fn oidc_sign_in_from_the_dashboard_button_in_headless_chromium() {
    let idp = Idp::start();
    let app = spawn_sso_app(vec![]).await;
    let owner = app.owner().await;
    configure(&owner, &idp, json!({})).await;
    let tenant = app.tenant_id();
    let ui = chromium::Ui::launch(app.dir.path(), app.addr.port()).await;
    let res: Result<(), String> = async {
        ui.goto(&format!("{PUBLIC_URL}/signin")).await;
        ui.wait("the sign-in form", "!!document.querySelector('#signin-tenant')")
            .await?;
        let t = serde_json::to_string(&tenant).unwrap();
        ui.eval::<bool>(&format!(
            "(() => {{ const e = document.querySelector('#signin-tenant'); e.focus(); e.value = {t}; e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"
        ))
        .await?;
        ui.wait(
            "the single sign-on button",
            "(() => { const b = document.querySelector('#sso-signin'); return !!b && !b.hidden && b.textContent.trim() === 'Sign in with single sign-on'; })()",
        )
        .await?;
        ui.eval::<bool>("(() => { document.querySelector('#sso-signin').click(); return true; })()")
            .await?;
        // The provider's login form (scripted interaction of the test provider).
        ui.wait(
            "the provider's login form",
            "location.hostname === 'localhost' && !!document.querySelector('#login')",
        )
        .await?;
        ui.eval::<bool>(
            "(() => { document.querySelector('#login').value = 'alice'; document.querySelector('#submit').click(); return true; })()",
        )
        .await?;
        // Back on the dashboard, signed in as Admin, with the CSRF token taken over.
        ui.wait(
            "the dashboard after sign-in",
            "location.hostname === 'flowguard.test' && location.pathname !== '/signin' && !!document.querySelector('main h1') && !document.cookie.includes('fg_sso_csrf=') && !!sessionStorage.getItem('fg_csrf')",
        )
        .await?;
        let me: serde_json::Value = ui
            .eval("fetch('/api/v1/me').then(r => r.json())")
            .await?;
        if me["role"] != "admin" || me["name"] != "alice@corp.example" {
            return Err(format!("unexpected /me: {me}"));
        }
        // An unsafe request with the handed-over CSRF token works.
        let st: u16 = ui
            .eval("fetch('/api/v1/applications', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': sessionStorage.getItem('fg_csrf')}, body: JSON.stringify({name: 'sso-app', base_url: 'https://shop.example'})}).then(r => r.status)")
            .await?;
        if st != 201 {
            return Err(format!("create application with the SSO session: {st}"));
        }
        // A refusal lands on the sign-in page, which says why.
        ui.eval::<bool>("fetch('/api/v1/auth/logout', {method: 'POST', headers: {'X-CSRF-Token': sessionStorage.getItem('fg_csrf')}}).then(() => true)")
            .await?;
        ui.goto(&format!("{PUBLIC_URL}/api/v1/auth/oidc/callback?code=x&state=y"))
            .await;
        ui.wait(
            "the refusal message",
            "(() => { const e = document.querySelector('#sso-error'); return !!e && e.dataset.reason === 'state_missing' && e.textContent.includes('Start again'); })()",
        )
        .await?;
        Ok(())
    }
    .await;
    ui.close().await;
    if let Err(e) = res {
        panic!("{e}\n--- server log tail ---\n{}", {
            let l = app.log_text();
            l.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        });
    }
}

#[tokio::test]
async fn oidc_jit_stays_within_the_license_user_limit() {
    let idp = Idp::start();
    let app = spawn_sso_app(vec![]).await;
    let pa = app.platform_admin().await;
    let owner = app.owner().await;
    let tenant = app.tenant_id();
    let exp = (chrono::Utc::now() + chrono::Duration::days(90)).to_rfc3339();
    let token = crate::license::issue(&[
        "--license-id",
        "lic-sso-seats",
        "--plan",
        "pro",
        "--max-users",
        "2",
        "--expires",
        &exp,
    ]);
    crate::license::install_ok(&pa, &token).await;
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{tenant}/plan"),
        Some(json!({"plan": "pro"})),
        200,
    )
    .await;
    configure(&owner, &idp, json!({})).await;
    // The Owner plus Alice fill the two seats; Carol would be the third.
    let b = browser(&app, &idp);
    assert_eq!(sign_in(&b, &app, &tenant, "alice").await.location, "/");
    let b = browser(&app, &idp);
    assert_eq!(
        sign_in(&b, &app, &tenant, "carol").await.error().as_deref(),
        Some("plan_limit")
    );
    // Alice, already a member, still signs in.
    let b = browser(&app, &idp);
    assert_eq!(sign_in(&b, &app, &tenant, "alice").await.location, "/");
    assert_eq!(oidc_failures(&audit(&owner).await, "plan_limit"), 1);
}

/// Issue 24 item 9 for OpenID Connect: discovery, JWKS and the token endpoint use the shared TLS
/// client. A provider serving a self-signed CA:TRUE certificate is trusted when that exact
/// certificate is pasted as `ca_pem` (pinning) — test-connection and a full sign-in work —
/// and another pasted certificate is `tls_failed` 502 naming `unknown_issuer`.
#[tokio::test]
async fn oidc_provider_with_a_pasted_self_signed_certificate_is_pinned() {
    let idp = Idp::start_with(true);
    let app = spawn_sso_app(vec![]).await;
    let owner = app.owner().await;
    configure(&owner, &idp, json!({})).await;
    let v = owner
        .json(Method::POST, "/api/v1/sso/oidc/test-connection", None, 200)
        .await;
    assert_eq!(v["issuer"], idp.issuer());
    // The test's browser accepts the provider's self-signed certificate (the point here is
    // the appliance's own client: discovery, JWKS and the code exchange).
    let b = Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let o = sign_in(&b, &app, &app.tenant_id(), "alice").await;
    assert_eq!(o.error(), None, "sign-in through the pinned provider");
    assert_eq!(o.location, "/");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .unwrap()
        .cert
        .pem();
    configure(&owner, &idp, json!({"ca_pem": other})).await;
    let v = owner
        .json(Method::POST, "/api/v1/sso/oidc/test-connection", None, 502)
        .await;
    assert_eq!(v["code"], "tls_failed", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("[unknown_issuer]"),
        "{v}"
    );
}
