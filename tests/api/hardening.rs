//! Issue 24 (hardening from an outside review), items 1, 5, 7 and 8: connection floods before
//! authentication, `/metrics` behind a trusted proxy, the self-signed leaf certificate and its
//! renewal, one-time passwords. (Items 2 and 4 are in `runs.rs`, item 3 in `residency.rs`.)

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::helpers::*;

/// Open a TCP connection to `to` from `from` that never sends a byte.
async fn idle_socket(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// `flowguard_connections_refused_total{reason="…"}` as read from `/metrics` (loopback).
async fn refused(app: &TestApp, reason: &str) -> u64 {
    let text = app
        .client()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = format!("flowguard_connections_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("{key} missing in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Item 1: 2,000 idle sockets (no ClientHello) from 127.0.0.2 against the default per-client
/// cap: the address holds at most `max_per_client` (128), the rest are closed at accept and
/// counted, and a client on 127.0.0.1 is served while the flood's sockets stay open. The
/// handshake timeout is raised for this test so no admitted socket is closed (and replaced)
/// while the flood is opened. Functional only — the p99 of `/healthz` under the flood is
/// measured by `bench/run` (P8).
#[tokio::test]
async fn idle_flood_from_one_address_is_capped_counted_and_others_are_served() {
    let app = spawn_with(Opts {
        config: Some("[connections]\ntls_handshake_timeout_ms = 60000\n".into()),
        ..Default::default()
    })
    .await;
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    let before = refused(&app, "per_client").await;
    let mut held = Vec::new();
    for _ in 0..2000 {
        // A refused connection may already be closed (or reset) by the server; either way the
        // client keeps its socket open, as the attacker's tool does.
        if let Ok(s) = idle_socket(flooder, app.addr).await {
            held.push(s);
        }
    }
    assert!(held.len() > 1000, "opened only {} sockets", held.len());
    // Another address is served while every flood socket is still open.
    let r = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The over-cap sockets were closed by the server: count the ones that read EOF/reset.
    let mut closed = 0usize;
    for s in held.iter_mut() {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    assert!(
        closed >= held.len() - 128 - 8,
        "{closed} of {} sockets closed; at most 128 may stay",
        held.len()
    );
    // Every refusal is counted (the counter may trail the accept loop briefly: poll).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = refused(&app, "per_client").await - before;
        if n as usize >= held.len() - 128 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} refusals counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same address is still served once its idle sockets are gone.
    drop(held);
    let c = app.client_from(Some(flooder));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = c.get(app.url("/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "127.0.0.2 never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Item 1: a connection that never sends its ClientHello is closed by the server after the
/// configured handshake timeout (polled with a generous deadline, not timed).
#[tokio::test]
async fn silent_connection_is_closed_by_the_handshake_timeout() {
    let app = spawn_with(Opts {
        config: Some("[connections]\ntls_handshake_timeout_ms = 500\n".into()),
        ..Default::default()
    })
    .await;
    let mut s = idle_socket("127.0.0.3".parse().unwrap(), app.addr)
        .await
        .unwrap();
    let mut b = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(30), s.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the server kept a silent connection open: {r:?}"
    );
}

/// Item 1: the per-client cap is configuration; the connection over it is refused at once.
#[tokio::test]
async fn per_client_cap_is_configurable() {
    let app = spawn_with(Opts {
        config: Some("[connections]\nmax_per_client = 3\n".into()),
        ..Default::default()
    })
    .await;
    let from: IpAddr = "127.0.0.4".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(idle_socket(from, app.addr).await.unwrap());
    }
    // Wait until the server has admitted the three (open gauge), then a fourth is refused.
    let mut fourth = idle_socket(from, app.addr).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(30), fourth.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    assert!(refused(&app, "per_client").await >= 1);
    // Another address is unaffected.
    let r = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Item 5: behind a trusted proxy on the same host, `/metrics` is decided on the real client
/// (`X-Forwarded-For`), not the proxy's loopback address.
#[tokio::test]
async fn metrics_behind_a_trusted_proxy_decide_on_the_real_client() {
    let app = spawn_with(Opts {
        config: Some("trusted_proxies = [\"127.0.0.1/32\"]\n".into()),
        ..Default::default()
    })
    .await;
    let c = app.client();
    let get = |xff: Option<&'static str>| {
        let mut b = c.get(app.url("/metrics"));
        if let Some(x) = xff {
            b = b.header("X-Forwarded-For", x);
        }
        b.send()
    };
    // A remote client through the proxy: refused (404, as when metrics are off).
    assert_eq!(get(Some("203.0.113.9")).await.unwrap().status(), 404);
    // A spoofed loopback hop in front of the real client changes nothing.
    assert_eq!(
        get(Some("127.0.0.1, 203.0.113.9")).await.unwrap().status(),
        404
    );
    // A proxied request that does not say who its client is counts as remote.
    assert_eq!(get(None).await.unwrap().status(), 404);
    // A loopback client through the proxy, and a direct loopback peer that is no proxy.
    assert_eq!(get(Some("127.0.0.1")).await.unwrap().status(), 200);
    let direct = app
        .client_from(Some("127.0.0.5".parse().unwrap()))
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);

    // With `loopback_only = false` and a token, the remote client needs the token.
    let app = spawn_with(Opts {
        config: Some(
            "trusted_proxies = [\"127.0.0.1/32\"]\n[metrics]\nloopback_only = false\ntoken = \"scrape-token-123\"\n"
                .into(),
        ),
        ..Default::default()
    })
    .await;
    let c = app.client();
    let r = c
        .get(app.url("/metrics"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(app.url("/metrics"))
        .header("X-Forwarded-For", "203.0.113.9")
        .bearer_auth("scrape-token-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The leaf certificate of `pem`: (is CA, validity in seconds, not_after unix seconds).
fn leaf(pem: &[u8]) -> (bool, i64, i64) {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let c = p.parse_x509().unwrap();
    let ca = c
        .basic_constraints()
        .unwrap()
        .map(|b| b.value.ca)
        .expect("basicConstraints present");
    let v = c.validity();
    (
        ca,
        v.not_after.timestamp() - v.not_before.timestamp(),
        v.not_after.timestamp(),
    )
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Item 7: the generated certificate is a leaf (CA:FALSE) valid at most 397 days; one due for
/// renewal (here: a renewal window wider than what is left) is replaced at start with a new
/// fingerprint in the log, and the server serves the new one; so is a pre-issue-24 CA
/// certificate.
#[tokio::test]
async fn self_signed_certificate_is_a_short_lived_leaf_and_renewed() {
    let app = spawn_app().await;
    let (ca, span, _) = leaf(&app.cert);
    assert!(!ca, "the generated certificate must not be a CA");
    assert!(span <= 397 * 86_400, "valid {span} s");
    let first = sha256_hex(&der_of(&app.cert));
    assert!(app.log_text().contains(&first), "fingerprint logged");
    let TestApp { dir, child, .. } = app;
    drop(child);

    // Not yet due: kept.
    let app = spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    assert_eq!(sha256_hex(&der_of(&app.cert)), first);
    let TestApp { dir, child, .. } = app;
    drop(child);

    // Due (fewer than 396 days left): renewed at start, new fingerprint logged and served.
    let app = spawn_with(Opts {
        dir: Some(dir),
        config: Some("[self_signed]\nrenew_before_days = 396\n".into()),
        ..Default::default()
    })
    .await;
    let second = sha256_hex(&der_of(&app.cert));
    assert_ne!(second, first, "renewed");
    let log = app.log_text();
    assert!(log.contains(&second), "new fingerprint logged: {log}");
    assert!(
        log.contains("\"renewed\":true") || log.contains("renewed=true"),
        "{log}"
    );
    // The helpers' client trusts only the new certificate file and verifies the host: the
    // served certificate is the new one.
    let r = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let TestApp {
        dir, child, data, ..
    } = app;
    drop(child);

    // A certificate made the old way (CA, decades long) is replaced at start.
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let old = params.self_signed(&key).unwrap();
    std::fs::write(data.join("tls/cert.pem"), old.pem()).unwrap();
    std::fs::write(data.join("tls/key.pem"), key.serialize_pem()).unwrap();
    let app = spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let (ca, span, _) = leaf(&app.cert);
    assert!(!ca && span <= 397 * 86_400, "old CA certificate replaced");
    let r = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Item 8: on a one-time password only `/me`, `/me/password` and logout work; everything else
/// is 403 `password_change_required` — for a member and for the PlatformAdmin — until changed.
#[tokio::test]
async fn one_time_password_allows_only_me_password_and_logout() {
    let app = spawn_app().await;
    let tid = app.tenant_id();
    let pw = app.creds["owner_password"].clone();
    let owner = app.login_one_time(Some(&tid), "admin@localhost", &pw).await;
    let me = owner.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(me["must_change_password"], true);
    for (m, path, body) in [
        (Method::GET, "/api/v1/applications", None),
        (
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "a", "base_url": "https://a.example"})),
        ),
        (Method::GET, "/api/v1/members", None),
        (Method::GET, "/api/v1/agent-tokens", None),
        (
            Method::POST,
            "/api/v1/scim-tokens",
            Some(json!({"name": "entra"})),
        ),
        (Method::GET, "/api/v1/audit", None),
        (Method::GET, "/api/v1/notifications", None),
    ] {
        let r = owner.req(m.clone(), path, body).await;
        assert_eq!(r.status(), 403, "{m} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "password_change_required", "{m} {path}");
    }
    // Logout works; a fresh one-time session still may change the password.
    let r = owner.req(Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(r.status(), 204);
    let owner = app.login_one_time(Some(&tid), "admin@localhost", &pw).await;
    owner
        .json(
            Method::POST,
            "/api/v1/me/password",
            Some(json!({"current_password": pw, "new_password": "owner-passphrase-2026"})),
            204,
        )
        .await;
    owner
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await;

    // The PlatformAdmin too.
    let pa_pw = app.creds["platform_admin_password"].clone();
    let pa = app
        .login_one_time(None, "platform-admin@localhost", &pa_pw)
        .await;
    let r = pa.get("/api/v1/platform/tenants").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "password_change_required"
    );
    pa.json(Method::GET, "/api/v1/me", None, 200).await;
    pa.json(
        Method::POST,
        "/api/v1/me/password",
        Some(json!({"current_password": pa_pw, "new_password": "platform-passphrase-2026"})),
        204,
    )
    .await;
    pa.json(Method::GET, "/api/v1/platform/tenants", None, 200)
        .await;

    // A member added with an initial password is on a one-time password as well.
    owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": "ed@example.test", "role": "tester", "password": "editor-initial-2026"})),
            201,
        )
        .await;
    let ed = app
        .login_one_time(Some(&tid), "ed@example.test", "editor-initial-2026")
        .await;
    let r = ed.get("/api/v1/applications").await;
    assert_eq!(r.status(), 403);
}

/// Send `raw` over a fresh TLS connection (ALPN http/1.1) and read the whole answer.
async fn raw_exchange(app: &TestApp, raw: Vec<u8>) -> (u16, String, String) {
    use rustls_pki_types::pem::PemObject;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&app.cert) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1")
                .unwrap()
                .to_owned(),
            tcp,
        )
        .await
        .unwrap();
    // The server may answer (and close) before it has read everything: ignore write errors.
    let _ = tls.write_all(&raw).await;
    let _ = tls.flush().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Item 6: errors of the HTTP layer itself are problem+json with the right status.
#[tokio::test]
async fn http_layer_errors_are_problem_json() {
    let app = spawn_app().await;
    // Over the application's limits (8 KiB target, 32 KiB headers) and over actix-http's own
    // 128 KiB head limit (answered from the codec).
    let long_uri = |n: usize| {
        format!(
            "GET /api/v1/version?q={} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "a".repeat(n)
        )
    };
    let huge_header = |n: usize| {
        format!(
            "GET /api/v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    let mut many = String::from("GET /api/v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let cases = [
        (long_uri(10_000), 414, "uri_too_long"),
        (long_uri(140_000), 414, "uri_too_long"),
        (huge_header(40_000), 431, "header_fields_too_large"),
        (huge_header(140_000), 431, "header_fields_too_large"),
        (many, 431, "header_fields_too_large"),
        (
            "G@T /api/v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_string(),
            400,
            "malformed_request",
        ),
        (
            "GET /api/v1/version HTTP/3.0\r\nHost: 127.0.0.1\r\n\r\n".to_string(),
            505,
            "http_version_not_supported",
        ),
    ];
    for (raw, status, code) in cases {
        let (st, head, body) = raw_exchange(&app, raw.into_bytes()).await;
        assert_eq!(st, status, "{code}: {head}\n{body}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{code}: {head}"
        );
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{code}: {e}: {body:?}"));
        assert_eq!(v["code"], code);
        assert_eq!(v["status"], status);
    }
    // A normal request on a fresh connection is unaffected.
    let (st, _, body) = raw_exchange(
        &app,
        b"GET /api/v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
}

/// What curl got for one request over HTTP/2 (ALPN h2 over TLS).
#[derive(Debug)]
struct CurlAnswer {
    exit: i32,
    version: String,
    status: u16,
    content_type: String,
    body: String,
}

/// One request with the curl CLI over HTTP/2 (`--http2`: ALPN h2), `body` sent as is.
fn curl_h2(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> CurlAnswer {
    let dir = app.dir.path();
    let body_file = dir.join("curl-body");
    let out_file = dir.join("curl-out");
    std::fs::write(&body_file, body).unwrap();
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-k", "--http2", "-X", method, "--data-binary"])
        .arg(format!("@{}", body_file.display()))
        .arg("-o")
        .arg(&out_file)
        .args(["-w", "%{http_version} %{http_code} %{content_type}"]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = cmd.arg(app.url(path)).output().expect("run curl");
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = w.splitn(3, ' ');
    CurlAnswer {
        exit: out.status.code().unwrap_or(-1),
        version: parts.next().unwrap_or("").to_string(),
        status: parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        content_type: parts.next().unwrap_or("").to_string(),
        body: std::fs::read_to_string(&out_file).unwrap_or_default()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

fn assert_problem_h2(a: &CurlAnswer, status: u16, code: &str, what: &str) {
    assert_eq!(a.exit, 0, "{what}: curl failed (stream error?): {a:?}");
    assert_eq!(a.version, "2", "{what}: not HTTP/2: {a:?}");
    assert_eq!(a.status, status, "{what}: {a:?}");
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "{what}: {a:?}"
    );
    let v: Value = serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("{what}: {a:?}"));
    assert_eq!(v["code"], code, "{what}");
    assert_eq!(v["status"], status, "{what}");
}

/// A JSON body of about `n` bytes (far beyond the first 64 KiB an h2 client may send before
/// the server's window opens, and beyond actix' 1 MiB stream window when `n` is larger).
fn big_json(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"name": "a", "base_url": "https://a.example", "pad": "x".repeat(n)}))
        .unwrap()
}

/// The session cookie and CSRF token of a login, with a plain client (no cookie store).
async fn login_cookie(
    app: &TestApp,
    tenant: &str,
    email: &str,
    password: &str,
) -> (String, String) {
    let r = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&app.cert).unwrap())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"tenant": tenant, "email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("fg_session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let v: Value = r.json().await.unwrap();
    (
        format!("fg_session={cookie}"),
        v["csrf_token"].as_str().unwrap().to_string(),
    )
}

/// The reported bug: a session on a one-time password POSTing a JSON body over HTTP/2 got
/// `curl: (92) Stream error in the HTTP/2 framing layer` instead of the 403 (the body was
/// dropped before the answer was sent, so h2 reset the stream with CANCEL).
#[tokio::test]
async fn one_time_password_refusal_of_an_h2_post_with_a_body_is_problem_json() {
    let app = spawn_app().await;
    let tid = app.tenant_id();
    let (cookie, csrf) = login_cookie(&app, &tid, "admin@localhost", &app.owner_password()).await;
    let hdrs = [
        ("Cookie", cookie.as_str()),
        ("X-CSRF-Token", csrf.as_str()),
        ("Content-Type", "application/json"),
    ];
    for n in [10, 100_000, 3_000_000] {
        let a = curl_h2(&app, "POST", "/api/v1/applications", &hdrs, &big_json(n));
        assert_problem_h2(
            &a,
            403,
            "password_change_required",
            &format!("{n}-byte body"),
        );
    }
    // reqwest (hyper) over h2 as well.
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&app.cert).unwrap())
        .tls_built_in_root_certs(false)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .post(app.url("/api/v1/applications"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .header("Content-Type", "application/json")
        .body(big_json(3_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "password_change_required");
    // A body beyond the drain bound is not waited for: the complete answer, then
    // RST_STREAM(NO_ERROR), which hyper takes as the end of a complete exchange.
    let r = c
        .post(app.url("/api/v1/applications"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .header("Content-Type", "application/json")
        .body(big_json(20_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "password_change_required");
}

/// Every early refusal of a request whose body is not read arrives over HTTP/2 as a complete
/// problem+json answer: 401, 403, 413, 414, 415, 421 (and a 422 after reading, as a control).
#[tokio::test]
async fn early_refusals_over_h2_with_an_unread_body_are_problem_json() {
    let app = spawn_with(Opts {
        config: Some(
            "region = \"eus\"\n[regions]\neus = \"https://eus.flowguard.test\"\nweu = \"https://weu.flowguard.test\"\n"
                .into(),
        ),
        ..Default::default()
    })
    .await;
    let tid = app.tenant_id();
    assert!(tid.starts_with("eus-"), "{tid}");
    let other_region = tid.replacen("eus-", "weu-", 1);
    let big = big_json(3_000_000);
    let json_ct = ("Content-Type", "application/json");

    let a = curl_h2(&app, "POST", "/api/v1/applications", &[json_ct], &big);
    assert_problem_h2(&a, 401, "unauthenticated", "anonymous");
    let a = curl_h2(
        &app,
        "POST",
        "/api/v1/applications",
        &[json_ct, ("X-FlowGuard-Tenant", other_region.as_str())],
        &big,
    );
    assert_problem_h2(&a, 421, "misdirected_request", "other region");
    let long = format!("/api/v1/applications?q={}", "a".repeat(9 * 1024));
    let a = curl_h2(&app, "POST", &long, &[json_ct], &big);
    assert_problem_h2(&a, 414, "uri_too_long", "long target");

    let (cookie, csrf) = login_cookie(&app, &tid, "admin@localhost", &app.owner_password()).await;
    let auth = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let with = |extra: (&'static str, &'static str)| {
        let mut h = auth.to_vec();
        h.push(extra);
        h
    };
    let a = curl_h2(&app, "POST", "/api/v1/applications", &with(json_ct), &big);
    assert_problem_h2(&a, 403, "password_change_required", "one-time password");

    // Replace the one-time password; the same session may then create applications.
    let a = curl_h2(
        &app,
        "POST",
        "/api/v1/me/password",
        &with(json_ct),
        &serde_json::to_vec(&json!({"current_password": app.owner_password(), "new_password": "owner-passphrase-2026"}))
            .unwrap(),
    );
    assert_eq!((a.exit, a.status), (0, 204), "{a:?}");
    let a = curl_h2(&app, "POST", "/api/v1/applications", &with(json_ct), &big);
    assert_problem_h2(&a, 413, "payload_too_large", "body over 1 MiB");
    let a = curl_h2(
        &app,
        "POST",
        "/api/v1/applications",
        &with(("Content-Type", "text/plain")),
        &big,
    );
    assert_problem_h2(&a, 415, "unsupported_media_type", "wrong media type");
    let bad = serde_json::to_vec(
        &json!({"name": 5, "base_url": "https://a.example", "pad": "x".repeat(500_000)}),
    )
    .unwrap();
    let a = curl_h2(&app, "POST", "/api/v1/applications", &with(json_ct), &bad);
    assert_problem_h2(&a, 422, "validation_failed", "invalid body (read)");
    // And the connection's requests still work: a valid create over h2.
    let ok =
        serde_json::to_vec(&json!({"name": "shop", "base_url": "https://shop.example"})).unwrap();
    let a = curl_h2(&app, "POST", "/api/v1/applications", &with(json_ct), &ok);
    assert_eq!(
        (a.exit, a.version.as_str(), a.status),
        (0, "2", 201),
        "{a:?}"
    );
}

/// A GET over HTTP/2 with curl, without curl's own `Accept` and `User-Agent` fields, so the
/// request carries exactly `headers` (and no others besides the pseudo-header fields).
fn curl_h2_get(app: &TestApp, path: &str, headers: &[String]) -> CurlAnswer {
    let out_file = app.dir.path().join("curl-get-out");
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "-k",
        "--http2",
        "-H",
        "Accept:",
        "-H",
        "User-Agent:",
        "-o",
    ])
    .arg(&out_file)
    .args(["-w", "%{http_version} %{http_code} %{content_type}"]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd.arg(app.url(path)).output().expect("run curl");
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = w.splitn(3, ' ');
    CurlAnswer {
        exit: out.status.code().unwrap_or(-1),
        version: parts.next().unwrap_or("").to_string(),
        status: parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        content_type: parts.next().unwrap_or("").to_string(),
        body: std::fs::read_to_string(&out_file).unwrap_or_default()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

/// Item 6 over HTTP/2 (review F9): the same head limits as HTTP/1.1 — at most 96 header
/// fields, a 32 KiB header section, an 8 KiB request target — answered with the same
/// problem+json 431/414; and what a client gets for a target h2 itself refuses (64 KiB).
#[tokio::test]
async fn http_layer_limits_over_h2_match_http1() {
    let app = spawn_app().await;
    let fields = |n: usize| (0..n).map(|i| format!("X-H{i}: y")).collect::<Vec<_>>();

    // The header-field count: 96 served, 97 and 300 refused — over HTTP/1.1 as well.
    let a = curl_h2_get(&app, "/api/v1/version", &fields(96));
    assert_eq!(
        (a.exit, a.version.as_str(), a.status),
        (0, "2", 200),
        "96 fields: {a:?}"
    );
    let a = curl_h2_get(&app, "/api/v1/version", &fields(97));
    assert_problem_h2(&a, 431, "header_fields_too_large", "97 fields");
    assert!(a.body.contains("at most 96"), "{a:?}");
    let a = curl_h2_get(&app, "/api/v1/version", &fields(300));
    assert_problem_h2(&a, 431, "header_fields_too_large", "300 fields");
    for (n, status) in [(94, 200), (95, 431)] {
        // `Host` and `Connection` are fields of their own over HTTP/1.1 (n + 2 in all).
        let mut raw = String::from("GET /api/v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for i in 0..n {
            raw.push_str(&format!("X-H{i}: y\r\n"));
        }
        raw.push_str("Connection: close\r\n\r\n");
        let (st, _, body) = raw_exchange(&app, raw.into_bytes()).await;
        assert_eq!(st, status, "HTTP/1.1 with {} fields: {body}", n + 2);
    }

    // The header section's size: 32 KiB.
    let big = format!("X-Big: {}", "a".repeat(40_000));
    let a = curl_h2_get(&app, "/api/v1/version", &[big]);
    assert_problem_h2(&a, 431, "header_fields_too_large", "40 KB field");

    // The request target: 8 KiB served, longer → 414, up to what h2 itself accepts.
    let target = |n: usize| format!("/api/v1/version?q={}", "a".repeat(n));
    let a = curl_h2_get(&app, &target(8 * 1024 - 20), &[]);
    assert_eq!((a.exit, a.status), (0, 200), "8 KiB target: {a:?}");
    for n in [9_000, 20_000, 60_000] {
        let a = curl_h2_get(&app, &target(n), &[]);
        assert_problem_h2(&a, 414, "uri_too_long", &format!("{n} B target"));
    }
    // Over 65534 bytes the h2 codec refuses the `:path` before the application sees it (the
    // `http` crate's URI limit): the stream is reset, no answer. The server keeps serving.
    let a = curl_h2_get(&app, &target(70_000), &[]);
    assert_ne!(a.exit, 0, "70 KB target: {a:?}");
    let a = curl_h2_get(&app, "/api/v1/version", &[]);
    assert_eq!((a.exit, a.status), (0, 200), "after: {a:?}");
}
