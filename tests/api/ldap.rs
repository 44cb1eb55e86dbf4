//! Directory login against a real OpenLDAP slapd (issue 7; case file ldap.md C07, C08).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::ldap_support::*;

async fn app() -> TestApp {
    spawn_with(Opts {
        config: Some(APP_CONFIG.to_string()),
        ..Default::default()
    })
    .await
}

async fn configure(owner: &Session, body: Value) -> Value {
    owner
        .json(Method::PUT, "/api/v1/sso/ldap", Some(body), 200)
        .await
}

/// POST /api/v1/auth/login with `username`; returns status, body and whether a session cookie
/// was set.
async fn login(app: &TestApp, user: &str, pw: Value) -> (StatusCode, Value, bool) {
    login_at(app, "/api/v1/auth/login", user, pw).await
}

async fn login_at(app: &TestApp, path: &str, user: &str, pw: Value) -> (StatusCode, Value, bool) {
    let c = app.client();
    let r = c
        .post(app.url(path))
        .json(&json!({"tenant": app.tenant_id(), "username": user, "password": pw}))
        .send()
        .await
        .unwrap();
    let st = r.status();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap_or("").starts_with("fg_session=fgu_"));
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (st, v, cookie)
}

async fn role_of(app: &TestApp, user: &str, pw: &str) -> String {
    let (st, v, cookie) = login(app, user, json!(pw)).await;
    assert_eq!(st, 200, "login of {user:?}: {v}");
    assert!(cookie, "no session cookie for {user}");
    v["me"]["role"].as_str().unwrap().to_string()
}

async fn audit(owner: &Session) -> Vec<Value> {
    let v = owner
        .json(Method::GET, "/api/v1/audit?limit=500", None, 200)
        .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

fn failures_with(rows: &[Value], reason: &str) -> usize {
    rows.iter()
        .filter(|r| r["action"] == "login.failure" && r["details"]["reason"] == reason)
        .count()
}

#[tokio::test]
async fn ldap_roles_per_user_through_group_search_and_nested_groups() {
    let pki = Pki::new();
    let slapd = Slapd::start(&pki, true);
    let app = app().await;
    let owner = app.owner().await;
    let saved = configure(
        &owner,
        config_body(&slapd.ldaps_url(), &pki.ca_pem, json!({})),
    )
    .await;
    assert_eq!(saved["bind_password_set"], true);
    assert!(saved.get("bind_password").is_none(), "{saved}");

    assert_eq!(role_of(&app, "alice", "alice-pw-1").await, "admin");
    assert_eq!(role_of(&app, "olivia", "olivia-pw-1").await, "owner");
    // C07: CN `Doe, Jane`; the group filter needs the DN filter-escaped (`\5c,`); Tester beats
    // Viewer (precedence), and the mapping spelled `cn=Ops\2c EMEA` matches semantically.
    assert_eq!(role_of(&app, "jdoe", "jane-pw-1").await, "tester");
    // A login name with `*` and `(`: escaped in the user filter, its DN escaped in the group
    // filter.
    assert_eq!(role_of(&app, "s*(tar", "star-pw-1").await, "tester");
    // Nested: ops-oncall ∈ fg-admins.
    assert_eq!(role_of(&app, "carol", "carol-pw-1").await, "admin");
    // A cycle (loop-a ∈ loop-b ∈ loop-a) terminates; loop-b ∈ fg-testers.
    assert_eq!(role_of(&app, "eve", "eve-pw-1").await, "tester");
    // In no mapped group: the default role.
    assert_eq!(role_of(&app, "dave", "dave-pw-1").await, "viewer");

    // The members exist with source `ldap`, name and email from the directory.
    let members = owner.json(Method::GET, "/api/v1/members", None, 200).await;
    let items = members["items"].as_array().unwrap();
    let jane = items
        .iter()
        .find(|m| m["email"] == "jane.doe@corp.example")
        .expect("jane provisioned");
    assert_eq!(jane["source"], "ldap");
    assert_eq!(jane["display_name"], "Doe, Jane");
    assert_eq!(jane["role"], "tester");
    assert_eq!(items.iter().filter(|m| m["source"] == "ldap").count(), 7);

    // A second login updates, not duplicates; the role follows the directory.
    assert_eq!(role_of(&app, "alice", "alice-pw-1").await, "admin");
    let members = owner.json(Method::GET, "/api/v1/members", None, 200).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 8);

    // Without nested groups carol only has the default role, and the change is audited.
    configure(
        &owner,
        config_body(
            &slapd.ldaps_url(),
            &pki.ca_pem,
            json!({"nested_groups": false}),
        ),
    )
    .await;
    assert_eq!(role_of(&app, "carol", "carol-pw-1").await, "viewer");

    let rows = audit(&owner).await;
    let ok = rows
        .iter()
        .filter(|r| r["action"] == "login.success" && r["details"]["source"] == "ldap")
        .count();
    assert_eq!(ok, 9);
    assert!(rows.iter().any(|r| r["action"] == "member.role_change"
        && r["target"] == "member:carol@corp.example"
        && r["details"]["to"] == "viewer"));
    assert_eq!(
        rows.iter()
            .filter(|r| r["action"] == "member.add" && r["details"]["source"] == "ldap")
            .count(),
        7
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["action"] == "sso.config_change")
            .count(),
        2
    );
    // No password anywhere in the audit trail.
    let all = serde_json::to_string(&rows).unwrap();
    for secret in [SVC_PW, "alice-pw-1", "jane-pw-1", "carol-pw-1"] {
        assert!(!all.contains(secret), "audit leaks {secret}");
    }
    assert!(
        !app.log_text().contains(SVC_PW),
        "server log leaks the bind password"
    );
}

#[tokio::test]
async fn ldap_roles_through_member_of_attribute_with_recursion() {
    let pki = Pki::new();
    let slapd = Slapd::start(&pki, true);
    let app = app().await;
    let owner = app.owner().await;
    configure(
        &owner,
        config_body(
            &slapd.ldaps_url(),
            &pki.ca_pem,
            json!({"group_base": null, "group_filter": null, "member_of_attr": "memberOf"}),
        ),
    )
    .await;
    assert_eq!(role_of(&app, "jdoe", "jane-pw-1").await, "tester");
    assert_eq!(role_of(&app, "carol", "carol-pw-1").await, "admin");
    assert_eq!(role_of(&app, "eve", "eve-pw-1").await, "tester");
    assert_eq!(role_of(&app, "alice", "alice-pw-1").await, "admin");

    // Dry run: the DN as the directory returns it, the groups (nested, recursive) and the role.
    let d = owner
        .json(
            Method::POST,
            "/api/v1/sso/ldap/test",
            Some(json!({"username": "carol"})),
            200,
        )
        .await;
    assert_eq!(d["outcome"], "allow");
    assert_eq!(d["dn"], "uid=carol,ou=people,dc=corp,dc=example");
    assert_eq!(d["nested_method"], "recursive");
    assert_eq!(d["role"], "Admin");
    assert_eq!(d["truncated"], false, "{d}");
    let groups: Vec<String> = d["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_lowercase())
        .collect();
    assert!(
        groups.contains(&"cn=ops-oncall,ou=groups,dc=corp,dc=example".to_string()),
        "{d}"
    );
    assert!(
        groups.contains(&"cn=fg-admins,ou=groups,dc=corp,dc=example".to_string()),
        "{d}"
    );

    // eve ∈ loop-a ∈ loop-b ∈ fg-testers: depth 1 (the direct groups' parents) stops at loop-b.
    configure(
        &owner,
        config_body(
            &slapd.ldaps_url(),
            &pki.ca_pem,
            json!({"group_base": null, "group_filter": null, "member_of_attr": "memberOf", "nested_max_depth": 1}),
        ),
    )
    .await;
    let d = owner
        .json(
            Method::POST,
            "/api/v1/sso/ldap/test",
            Some(json!({"username": "eve"})),
            200,
        )
        .await;
    assert_eq!(d["role"], "Viewer", "{d}");
    assert_eq!(d["by_default"], true);
    assert_eq!(d["truncated"], true);
    // carol's chain is one level deep: complete at depth 1.
    let d = owner
        .json(
            Method::POST,
            "/api/v1/sso/ldap/test",
            Some(json!({"username": "carol"})),
            200,
        )
        .await;
    assert_eq!(d["role"], "Admin", "{d}");
    assert_eq!(d["truncated"], false, "{d}");
}

#[tokio::test]
async fn ldap_wrong_and_empty_passwords_are_refused_empty_without_any_traffic() {
    let pki = Pki::new();
    let slapd = Slapd::start(&pki, true);
    let app = app().await;
    let owner = app.owner().await;
    configure(
        &owner,
        config_body(&slapd.ldaps_url(), &pki.ca_pem, json!({})),
    )
    .await;

    let (st, wrong, cookie) = login(&app, "alice", json!("not-alices-password")).await;
    assert_eq!(st, 401);
    assert!(!cookie);
    assert_eq!(wrong["code"], "invalid_credentials");

    // C08 (a): empty and null passwords, before any LDAP traffic.
    let conns = slapd.connections();
    let binds = slapd.binds();
    for pw in [json!(""), Value::Null] {
        for path in ["/api/v1/auth/login", "/api/v1/auth/ldap/login"] {
            let (st, v, cookie) = login_at(&app, path, "alice", pw.clone()).await;
            assert_eq!(st, 401, "{path} {pw}: {v}");
            assert!(!cookie);
            assert_eq!(v, wrong, "same body as a wrong password");
        }
    }
    // A missing password field and an empty login name are request errors.
    let r = app
        .client()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"tenant": app.tenant_id(), "username": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["field"], "password");
    let (st, v, _) = login(&app, "", json!("alice-pw-1")).await;
    assert_eq!(st, 422);
    assert_eq!(v["field"], "username");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        slapd.connections(),
        conns,
        "an empty password reached the directory"
    );
    assert_eq!(slapd.binds(), binds);

    let rows = audit(&owner).await;
    assert_eq!(failures_with(&rows, "empty_password"), 4);
    assert_eq!(failures_with(&rows, "invalid_credentials"), 1);
    assert!(rows
        .iter()
        .filter(|r| r["action"] == "login.failure")
        .all(|r| r["details"]["source"] == "ldap"));
}

#[tokio::test]
async fn ldap_injection_and_wildcard_usernames_never_match_others() {
    let pki = Pki::new();
    let slapd = Slapd::start(&pki, true);
    let app = app().await;
    let owner = app.owner().await;
    configure(
        &owner,
        config_body(&slapd.ldaps_url(), &pki.ca_pem, json!({})),
    )
    .await;

    // C07: each with the password of a user the pattern would match if unescaped.
    let attempts: &[(&str, &str)] = &[
        ("*", "alice-pw-1"),
        ("al*", "alice-pw-1"),
        ("*lice", "alice-pw-1"),
        ("*)(uid=*", "alice-pw-1"),
        ("alice)(|(uid=*", "alice-pw-1"),
        ("*)(|(objectClass=*", "alice-pw-1"),
        ("s*", "star-pw-1"),
        ("s\\2a(tar", "star-pw-1"),
        ("s*\\28tar", "star-pw-1"),
        ("alice\u{0}", "alice-pw-1"),
        ("jdoe*", "jane-pw-1"),
        ("Doe, Jane", "jane-pw-1"),
        // Two entries carry uid=twin: ambiguous is refused, never "take the first".
        ("twin", "twin-pw-1"),
    ];
    for (u, pw) in attempts {
        let (st, v, cookie) = login(&app, u, json!(pw)).await;
        assert_eq!(st, 401, "{u:?} logged in: {v}");
        assert!(!cookie, "{u:?}");
        assert_eq!(v["code"], "invalid_credentials");
    }
    // The dry run agrees: nothing found for the patterns.
    for u in ["*", "al*", "*)(uid=*"] {
        let d = owner
            .json(
                Method::POST,
                "/api/v1/sso/ldap/test",
                Some(json!({"username": u})),
                200,
            )
            .await;
        assert_eq!(d["outcome"], "not_found", "{u}: {d}");
    }
    let d = owner
        .json(
            Method::POST,
            "/api/v1/sso/ldap/test",
            Some(json!({"username": "twin"})),
            200,
        )
        .await;
    assert_eq!(d["outcome"], "ambiguous");
    // The real names still work, including the one with `*` and `(`.
    assert_eq!(role_of(&app, "s*(tar", "star-pw-1").await, "tester");
    assert_eq!(role_of(&app, "alice", "alice-pw-1").await, "admin");
    let members = owner.json(Method::GET, "/api/v1/members", None, 200).await;
    assert_eq!(
        members["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["source"] == "ldap")
            .count(),
        2,
        "an injection attempt provisioned someone"
    );
}

#[tokio::test]
async fn ldap_config_refuses_plaintext_and_unlisted_servers_and_never_returns_secrets() {
    let pki = Pki::new();
    let app = app().await;
    let owner = app.owner().await;
    let r = owner.get("/api/v1/sso/ldap").await;
    assert_eq!(r.status(), 404);

    // A plain ldap:// server without StartTLS is refused.
    let v = owner
        .json(
            Method::PUT,
            "/api/v1/sso/ldap",
            Some(config_body(
                "ldap://localhost:389",
                &pki.ca_pem,
                json!({"starttls": false}),
            )),
            422,
        )
        .await;
    assert_eq!(v["code"], "tls_required");
    assert_eq!(v["field"], "url");

    // Egress: outside the list, and metadata, are refused naming the host.
    for host in ["10.1.2.3", "169.254.169.254", "dc1.corp.example"] {
        let v = owner
            .json(
                Method::PUT,
                "/api/v1/sso/ldap",
                Some(config_body(
                    &format!("ldaps://{host}:636"),
                    &pki.ca_pem,
                    json!({}),
                )),
                422,
            )
            .await;
        assert_eq!(v["code"], "egress_denied", "{host}: {v}");
        assert_eq!(v["field"], "url");
        assert!(v["detail"].as_str().unwrap().contains(host), "{v}");
    }
    // Field validation names the field.
    for (over, field) in [
        (json!({"user_filter": "(uid=alice)"}), "user_filter"),
        (json!({"user_filter": "(uid={username}"}), "user_filter"),
        (json!({"ca_pem": "not a pem"}), "ca_pem"),
        (json!({"bind_dn": "cn=svc;dc=x"}), "bind_dn"),
        (json!({"bind_password": ""}), "bind_password"),
        (
            json!({"role_mapping": [{"group_dn": "cn=x,dc=y", "role": "Agent"}]}),
            "role_mapping[0].role",
        ),
        (
            json!({"role_mapping": [{"group_dn": "cn=x\\zz", "role": "Admin"}]}),
            "role_mapping[0].group_dn",
        ),
        (json!({"email_attr": "mail)(x"}), "email_attr"),
        (json!({"op_timeout_ms": 5}), "op_timeout_ms"),
        (json!({"surprise": 1}), "surprise"),
    ] {
        let v = owner
            .json(
                Method::PUT,
                "/api/v1/sso/ldap",
                Some(config_body(
                    "ldaps://localhost:636",
                    &pki.ca_pem,
                    over.clone(),
                )),
                422,
            )
            .await;
        assert_eq!(v["field"], field, "{over}: {v}");
    }
    // Nothing was written and nothing audited by the refused requests.
    assert_eq!(owner.get("/api/v1/sso/ldap").await.status(), 404);
    assert!(!audit(&owner)
        .await
        .iter()
        .any(|r| r["action"] == "sso.config_change"));

    // Saved: the password is never returned.
    let saved = configure(
        &owner,
        config_body("ldaps://localhost:636", &pki.ca_pem, json!({})),
    )
    .await;
    let got = owner.json(Method::GET, "/api/v1/sso/ldap", None, 200).await;
    for v in [&saved, &got] {
        assert!(!v.to_string().contains(SVC_PW));
        assert_eq!(v["bind_password_set"], true);
        assert_eq!(v["default_role"], "Viewer");
        assert_eq!(v["role_mapping"][1]["role"], "Admin");
    }
    // Changing only the mapping keeps the stored password; changing the URL needs it again.
    let mut body = config_body(
        "ldaps://localhost:636",
        &pki.ca_pem,
        json!({"default_role": null}),
    );
    body.as_object_mut().unwrap().remove("bind_password");
    let v = configure(&owner, body.clone()).await;
    assert_eq!(v["default_role"], Value::Null);
    body["url"] = json!("ldaps://localhost:1636");
    let v = owner
        .json(Method::PUT, "/api/v1/sso/ldap", Some(body.clone()), 422)
        .await;
    assert_eq!(v["field"], "bind_password");
    // An identical PUT writes no audit row.
    body["url"] = json!("ldaps://localhost:636");
    configure(&owner, body).await;
    let rows = audit(&owner).await;
    let changes: Vec<&Value> = rows
        .iter()
        .filter(|r| r["action"] == "sso.config_change")
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(!serde_json::to_string(&rows).unwrap().contains(SVC_PW));
    assert!(changes
        .iter()
        .any(|r| r["details"]["bind_password_changed"] == true));
    // Non-owners cannot read or change it.
    owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": "adm@example.com", "role": "admin", "password": "admin-password-1"})),
            201,
        )
        .await;
    let adm = app
        .login(
            Some(&app.tenant_id()),
            "adm@example.com",
            "admin-password-1",
        )
        .await;
    assert_eq!(adm.get("/api/v1/sso/ldap").await.status(), 403);
}

#[tokio::test]
async fn ldap_starttls_works_and_every_tls_failure_fails_closed() {
    let pki = Pki::new();
    let slapd = Slapd::start(&pki, true);
    let no_tls = Slapd::start(&pki, false);
    let after_seed = no_tls.mark();
    let app = app().await;
    let owner = app.owner().await;

    // StartTLS against the TLS-capable server: works.
    configure(
        &owner,
        config_body(&slapd.starttls_url(), &pki.ca_pem, json!({})),
    )
    .await;
    let t = owner
        .json(Method::POST, "/api/v1/sso/ldap/test-connection", None, 200)
        .await;
    assert_eq!(t["tls"], "starttls");
    assert_eq!(t["service_bind"], true);
    assert_eq!(t["in_chain_supported"], false);
    assert_eq!(role_of(&app, "alice", "alice-pw-1").await, "admin");

    // C08 (b): failures → 503, and no BindRequest ever reaches the server.
    let cases = [
        // The server answers the StartTLS request with an error.
        (
            "starttls refused",
            format!("ldap://localhost:{}", no_tls.ldap_port),
            pki.ca_pem.clone(),
        ),
        // Certificate for another name (the cert names only `localhost`).
        (
            "name mismatch",
            format!("ldap://127.0.0.1:{}", slapd.ldap_port),
            pki.ca_pem.clone(),
        ),
        (
            "name mismatch ldaps",
            format!("ldaps://127.0.0.1:{}", slapd.ldaps_port),
            pki.ca_pem.clone(),
        ),
        // Untrusted CA.
        (
            "untrusted ca",
            slapd.starttls_url(),
            pki.other_ca_pem.clone(),
        ),
        (
            "untrusted ca ldaps",
            slapd.ldaps_url(),
            pki.other_ca_pem.clone(),
        ),
    ];
    for (what, url, ca) in cases {
        configure(
            &owner,
            config_body(&url, &ca, json!({"connect_timeout_ms": 600})),
        )
        .await;
        let binds = (slapd.binds(), no_tls.binds());
        let (st, v, cookie) = login(&app, "alice", json!("alice-pw-1")).await;
        assert_eq!(st, 503, "{what}: {v}");
        assert_eq!(v["code"], "ldap_unavailable", "{what}");
        assert!(!cookie);
        let t = owner
            .req(Method::POST, "/api/v1/sso/ldap/test-connection", None)
            .await;
        if what.starts_with("name mismatch") {
            // Issue 24: a certificate from the configured CA that names another host is
            // reported as what it is (only to the Owner's connection test).
            assert_eq!(t.status(), 502, "{what}");
            let v: Value = t.json().await.unwrap();
            assert_eq!(v["code"], "tls_failed", "{what}: {v}");
            let d = v["detail"].as_str().unwrap();
            assert!(
                d.contains("name mismatch") && d.contains("[name_mismatch]"),
                "{d}"
            );
        } else {
            assert_eq!(t.status(), 503, "{what}");
        }
        assert_eq!(
            (slapd.binds(), no_tls.binds()),
            binds,
            "{what}: a bind was sent"
        );
    }
    // The TLS-less server saw StartTLS requests and nothing else.
    let log = no_tls.log_since(after_seed);
    assert!(log.contains("oid=1.3.6.1.4.1.1466.20037"), "{log}");
    assert!(!log.contains(" BIND "), "{log}");
    assert!(!log.contains(" SRCH "), "{log}");
    let rows = audit(&owner).await;
    assert!(failures_with(&rows, "directory_unavailable") >= 5);
}

#[tokio::test]
async fn ldap_down_or_slow_gives_503_and_the_local_owner_still_logs_in() {
    let pki = Pki::new();
    let mut slapd = Slapd::start(&pki, true);
    let app = app().await;
    let owner = app.owner().await;
    configure(
        &owner,
        config_body(&slapd.ldaps_url(), &pki.ca_pem, json!({})),
    )
    .await;
    assert_eq!(role_of(&app, "alice", "alice-pw-1").await, "admin");

    slapd.stop();
    let (st, v, _) = login(&app, "alice", json!("alice-pw-1")).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["code"], "ldap_unavailable");
    // Break-glass: the local Owner (same tenant, same /auth/login) is unaffected.
    let again = app.owner().await;
    again.json(Method::GET, "/api/v1/me", None, 200).await;

    // Slow: a server that accepts TCP and never answers. Bounded by the timeouts.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let hold = std::thread::spawn(move || {
        let mut conns = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((c, _)) = silent.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    configure(
        &owner,
        config_body(&format!("ldaps://localhost:{port}"), &pki.ca_pem, json!({})),
    )
    .await;
    let start = Instant::now();
    let (st, v, _) = login(&app, "alice", json!("alice-pw-1")).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["code"], "ldap_unavailable");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "not bounded by the timeouts"
    );
    app.owner().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hold.join().unwrap();
}

#[tokio::test]
async fn ldap_errors_do_not_reveal_whether_a_port_is_open() {
    let pki = Pki::new();
    let app = app().await;
    let owner = app.owner().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Open but not LDAP: the appliance's own HTTPS port.
    let open = app.addr.port();
    let mut answers = Vec::new();
    for port in [closed, open] {
        configure(
            &owner,
            config_body(
                &format!("ldaps://localhost:{port}"),
                &pki.ca_pem,
                json!({"connect_timeout_ms": 800}),
            ),
        )
        .await;
        let start = Instant::now();
        let r = owner
            .req(Method::POST, "/api/v1/sso/ldap/test-connection", None)
            .await;
        let st = r.status();
        let body: Value = r.json().await.unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(750),
            "answered early: {took:?}"
        );
        answers.push((st, body));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, 503);
}

#[tokio::test]
async fn ldap_unmapped_conflicting_mailless_and_ambiguous_users_cannot_log_in() {
    let pki = Pki::new();
    let slapd = Slapd::start(&pki, true);
    let app = app().await;
    let owner = app.owner().await;
    configure(
        &owner,
        config_body(&slapd.ldaps_url(), &pki.ca_pem, json!({})),
    )
    .await;

    // dave (no group) gets the default Viewer; keep his session.
    let c = app.client();
    let r = c
        .post(app.url("/api/v1/auth/ldap/login"))
        .json(&json!({"tenant": app.tenant_id(), "username": "dave", "password": "dave-pw-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(app.url("/api/v1/me")).send().await.unwrap().status(),
        200
    );

    // "Deny when no group matches": dave is refused and his session ends.
    configure(
        &owner,
        config_body(
            &slapd.ldaps_url(),
            &pki.ca_pem,
            json!({"default_role": null}),
        ),
    )
    .await;
    let (st, _, cookie) = login(&app, "dave", json!("dave-pw-1")).await;
    assert_eq!(st, 401);
    assert!(!cookie);
    assert_eq!(
        c.get(app.url("/api/v1/me")).send().await.unwrap().status(),
        401
    );
    // Mapped users still get in.
    assert_eq!(role_of(&app, "alice", "alice-pw-1").await, "admin");

    // A directory entry whose mail is the local Owner's cannot take that account over.
    configure(
        &owner,
        config_body(&slapd.ldaps_url(), &pki.ca_pem, json!({})),
    )
    .await;
    let (st, _, _) = login(&app, "mallory", json!("mallory-pw-1")).await;
    assert_eq!(st, 401);
    // Nor can an entry without a usable email log in; the twin entries are ambiguous.
    assert_eq!(login(&app, "nomail", json!("nomail-pw-1")).await.0, 401);
    assert_eq!(login(&app, "twin", json!("twin-pw-1")).await.0, 401);
    assert_eq!(login(&app, "nobody", json!("x-pw-1")).await.0, 401);
    // The local Owner is still the local Owner.
    let me = app
        .owner()
        .await
        .json(Method::GET, "/api/v1/me", None, 200)
        .await;
    assert_eq!(me["role"], "owner");

    let rows = audit(&owner).await;
    for reason in [
        "no_matching_group",
        "email_conflict",
        "missing_email",
        "ambiguous_user",
        "unknown_user",
    ] {
        assert_eq!(failures_with(&rows, reason), 1, "{reason}");
    }
    // A local account with a directory name never falls through to LDAP with a wrong password.
    let (st, _, _) = login(&app, "admin@localhost", json!("mallory-pw-1")).await;
    assert_eq!(st, 401);
}
