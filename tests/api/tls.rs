//! TLS: 1.2 and 1.3 accepted (with ALPN h2), 1.1 refused; security headers on responses.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;

use crate::helpers::*;

async fn handshake(
    app: &TestApp,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<(rustls::ProtocolVersion, Option<Vec<u8>>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&app.cert) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, s) = conn.get_ref();
    Ok((
        s.protocol_version().unwrap(),
        s.alpn_protocol().map(|a| a.to_vec()),
    ))
}

#[tokio::test]
async fn tls12_and_tls13_accepted_with_h2() {
    let app = spawn_app().await;
    let (v, alpn) = handshake(&app, &rustls::version::TLS12).await.unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (v, _) = handshake(&app, &rustls::version::TLS13).await.unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_3);
    // HTTP/2 end to end.
    let r = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

fn s_client(app: &TestApp, flag: &str) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &app.addr.to_string(),
            flag,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-servername",
            "localhost",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client (install the openssl package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn tls11_handshake_refused() {
    let app = spawn_app().await;
    // Control: the same client tool completes a TLS 1.2 handshake.
    let (_, ok12) = s_client(&app, "-tls1_2");
    assert!(
        ok12.contains("BEGIN CERTIFICATE") || ok12.contains("Server certificate"),
        "TLS 1.2 control failed:\n{ok12}"
    );
    let (_, t11) = s_client(&app, "-tls1_1");
    assert!(
        !t11.contains("BEGIN CERTIFICATE"),
        "TLS 1.1 handshake completed:\n{t11}"
    );
    // The refusal must come from the server (an alert), not from the client's own policy.
    assert!(
        !t11.contains("no protocols available"),
        "client refused to offer TLS 1.1; test is vacuous:\n{t11}"
    );
    // rustls answers a TLS 1.1-only ClientHello with a fatal alert (handshake_failure or
    // protocol_version) and no certificate; the session shows no cipher.
    let low = t11.to_lowercase();
    assert!(
        low.contains("alert handshake failure") || low.contains("alert protocol version"),
        "expected a fatal alert from the server:\n{t11}"
    );
    assert!(t11.contains("Cipher is (NONE)"), "{t11}");
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let app = spawn_app().await;
    let c = app.client();
    for path in ["/healthz", "/api/v1/version", "/api/v1/nope", "/"] {
        let r = c.get(app.url(path)).send().await.unwrap();
        let h = r.headers();
        assert!(
            h.get("strict-transport-security").is_some(),
            "{path}: no HSTS"
        );
        assert_eq!(
            h.get("x-content-type-options").unwrap(),
            "nosniff",
            "{path}"
        );
        assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer", "{path}");
        if path.starts_with("/api/") || path == "/healthz" {
            assert_eq!(h.get("cache-control").unwrap(), "no-store", "{path}");
        } else {
            let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
            assert!(
                csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
                "{csp}"
            );
        }
    }
}

#[tokio::test]
async fn plain_http_only_when_tls_off() {
    let app = spawn_with(Opts {
        config: Some("[tls]\nmode = \"off\"\n".into()),
        ..Default::default()
    })
    .await;
    assert!(app.base.starts_with("http://"));
    let r = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
    assert!(app.log_text().contains("plain HTTP"), "a warning is logged");
}
