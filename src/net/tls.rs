//! The one TLS client configuration for every outbound connection (the AI endpoint, LDAP, ticket
//! trackers and OpenID Connect): rustls with the **ring** provider only, TLS 1.2/1.3.
//!
//! Trust ([`client_config`]):
//! - With a `ca_pem` bundle, its certificates are the only trust anchors (no system or Mozilla
//!   roots), and each of them is also **pinned**: a server presenting exactly one of those
//!   certificates (byte for byte) is trusted for that connection even when it could not be a
//!   chain's end entity — the common self-signed certificate from `openssl req -x509`, which is
//!   marked CA:TRUE and used as the leaf. A pinned certificate must still be valid now and name
//!   the host (a `subjectAltName` DNS/IP entry; a certificate without any `subjectAltName` is
//!   matched on its subject CN, as `openssl req -x509 -subj /CN=host` makes it), and the
//!   handshake signature is still verified with its key, so only the holder of the private key
//!   passes.
//! - Without `ca_pem`, the Mozilla roots compiled in through `webpki-roots`.
//!
//! Failures ([`TlsFailure`], [`tls_failure`]): a handshake that fails on the certificate is
//! reported as what it is — unknown issuer, expired, not yet valid, name mismatch, CA certificate
//! used as a leaf, revoked, bad certificate — and any other TLS failure as a handshake failure,
//! never as "cannot connect" once TCP succeeded.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Client certificate and key for mutual TLS.
pub type ClientAuth = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificates of a PEM bundle. Errors: not PEM, or no `CERTIFICATE` block.
pub fn parse_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "ca_pem is not valid PEM".to_string())?;
    if certs.is_empty() {
        return Err("ca_pem holds no CERTIFICATE block".into());
    }
    Ok(certs)
}

/// Validate a `ca_pem` setting exactly as the clients will use it (a configuration's check on
/// save): the message names what is wrong.
pub fn check_ca_pem(pem: &str) -> Result<(), String> {
    client_config(Some(pem), None).map(|_| ())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for an outbound connection: ring, TLS 1.2/1.3, trust as in
/// the module doc (`ca_pem` = anchors and pins; `None` = Mozilla roots), optional client
/// certificate. Errors are human messages naming `ca_pem` or the client key.
pub fn client_config(
    ca_pem: Option<&str>,
    client_auth: Option<ClientAuth>,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let (roots, pinned) = match ca_pem {
        Some(p) => {
            let certs = parse_bundle(p)?;
            let mut roots = rustls::RootCertStore::empty();
            for c in &certs {
                roots
                    .add(c.clone())
                    .map_err(|e| format!("ca_pem holds an unusable certificate: {e}"))?;
            }
            (roots, certs)
        }
        None => (
            rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Vec::new(),
        ),
    };
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("ca_pem: {e}"))?;
    let verifier = Arc::new(PinningVerifier {
        inner,
        pinned,
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|_| "client_key_pem: key does not match the client certificate".to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// WebPKI verification against the anchors, then — only when that fails and the server's
/// certificate is byte for byte one of `pinned` — the pinned checks (validity, name).
#[derive(Debug)]
struct PinningVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl PinningVerifier {
    /// Whether `cert` names an issuer that could be an anchor: not self-issued (a self-issued
    /// certificate that is not byte for byte in `ca_pem` chains to nothing), and — with
    /// `ca_pem` — issued by the subject of one of its certificates.
    fn issuer_known(&self, cert: &CertificateDer<'_>) -> bool {
        let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            return false;
        };
        let issuer = x.issuer().as_raw();
        if issuer == x.subject().as_raw() {
            return false;
        }
        self.pinned.is_empty()
            || self.pinned.iter().any(|p| {
                x509_parser::parse_x509_certificate(p.as_ref())
                    .is_ok_and(|(_, a)| a.subject().as_raw() == issuer)
            })
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(e)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                tracing::debug!(error = %e, "server certificate is a pinned ca_pem certificate");
                verify_pinned(end_entity, server_name, now)
            }
            // webpki checks basicConstraints before the issuer: a CA:TRUE certificate that no
            // anchor issued (e.g. another self-signed one than the pasted) is first of all
            // of an unknown issuer.
            Err(e)
                if TlsFailure::of(&e) == TlsFailure::CaUsedAsLeaf
                    && !self.issuer_known(end_entity) =>
            {
                Err(CertificateError::UnknownIssuer.into())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The checks for a pinned certificate: valid at `now`, and names `server_name` (SAN, or the
/// subject CN when the certificate has no SAN at all).
fn verify_pinned(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, rustls::Error> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let t = now.as_secs() as i64;
    let v = x.validity();
    if t < v.not_before.timestamp() {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                v.not_before.timestamp().max(0) as u64,
            )),
        }
        .into());
    }
    if t > v.not_after.timestamp() {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                v.not_after.timestamp().max(0) as u64,
            )),
        }
        .into());
    }
    let has_san = x.subject_alternative_name().ok().flatten().is_some();
    if has_san {
        let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
    } else {
        let want = match server_name {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            _ => return Err(CertificateError::NotValidForName.into()),
        };
        let cn_matches = x
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .any(|cn| cn.eq_ignore_ascii_case(want.trim_end_matches('.')));
        if !cn_matches {
            return Err(CertificateError::NotValidForName.into());
        }
    }
    Ok(ServerCertVerified::assertion())
}

/// What went wrong in a TLS handshake, by kind. [`TlsFailure::code`] is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The certificate does not chain to `ca_pem` (or the built-in roots) and is not pinned.
    UnknownIssuer,
    /// The certificate (or one in its chain) has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate does not name the host connected to.
    NameMismatch,
    /// A CA certificate (basicConstraints CA:TRUE) is used as the server certificate and is not
    /// one pasted in `ca_pem`.
    CaUsedAsLeaf,
    /// The certificate is revoked.
    Revoked,
    /// The certificate is malformed, badly signed or otherwise unusable.
    BadCertificate,
    /// Any other TLS failure (protocol, alert, no common version or cipher suite).
    Handshake,
}

impl TlsFailure {
    /// Stable code: `unknown_issuer`, `expired`, `not_yet_valid`, `name_mismatch`,
    /// `ca_used_as_leaf`, `revoked`, `bad_certificate`, `handshake`.
    pub fn code(self) -> &'static str {
        match self {
            TlsFailure::UnknownIssuer => "unknown_issuer",
            TlsFailure::Expired => "expired",
            TlsFailure::NotYetValid => "not_yet_valid",
            TlsFailure::NameMismatch => "name_mismatch",
            TlsFailure::CaUsedAsLeaf => "ca_used_as_leaf",
            TlsFailure::Revoked => "revoked",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::Handshake => "handshake",
        }
    }

    /// One sentence for an operator.
    pub fn describe(self) -> &'static str {
        match self {
            TlsFailure::UnknownIssuer => {
                "unknown issuer: the server certificate is not signed by a certificate in ca_pem (or the built-in roots) and is not itself in ca_pem"
            }
            TlsFailure::Expired => "the server certificate has expired",
            TlsFailure::NotYetValid => "the server certificate is not valid yet",
            TlsFailure::NameMismatch => {
                "name mismatch: the server certificate does not name the host in the URL"
            }
            TlsFailure::CaUsedAsLeaf => {
                "the server presents a CA certificate (CA:TRUE) as its own certificate; paste that exact certificate as ca_pem to pin it, or give the server a leaf certificate"
            }
            TlsFailure::Revoked => "the server certificate is revoked",
            TlsFailure::BadCertificate => "the server certificate is malformed or badly signed",
            TlsFailure::Handshake => "the TLS handshake failed",
        }
    }

    /// The kind of a rustls error.
    pub fn of(e: &rustls::Error) -> Self {
        use CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => TlsFailure::UnknownIssuer,
                C::Expired | C::ExpiredContext { .. } => TlsFailure::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => TlsFailure::NotYetValid,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
                C::Revoked => TlsFailure::Revoked,
                C::Other(o) => match o.0.downcast_ref::<webpki::Error>() {
                    Some(webpki::Error::CaUsedAsEndEntity) => TlsFailure::CaUsedAsLeaf,
                    _ => TlsFailure::BadCertificate,
                },
                _ => TlsFailure::BadCertificate,
            },
            _ => TlsFailure::Handshake,
        }
    }
}

/// The rustls error somewhere in `e`'s source chain, looking inside `std::io::Error`s too (their
/// `source()` skips the error they wrap, which is where TLS streams put the rustls error).
pub fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut depth = 0;
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = find_rustls_error(inner) {
                    return Some(t);
                }
            }
        }
        depth += 1;
        if depth > 32 {
            break;
        }
        cur = c.source();
    }
    None
}

/// The TLS failure in `e`'s source chain, if any: its kind and the rustls text.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<(TlsFailure, String)> {
    find_rustls_error(e).map(|t| (TlsFailure::of(t), t.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Made {
        pem: String,
        der: CertificateDer<'static>,
        key: KeyPair,
    }

    fn params(sans: &[&str], ca: bool, days: (i64, i64)) -> CertificateParams {
        params_cn("localhost", sans, ca, days)
    }

    fn params_cn(cn: &str, sans: &[&str], ca: bool, days: (i64, i64)) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*s).try_into().unwrap()),
            })
            .collect();
        p.distinguished_name.push(DnType::CommonName, cn);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let now = time_now();
        p.not_before = now + time::Duration::days(days.0);
        p.not_after = now + time::Duration::days(days.1);
        p
    }

    fn time_now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    fn self_signed(p: CertificateParams) -> Made {
        let key = KeyPair::generate().unwrap();
        let c = p.self_signed(&key).unwrap();
        Made {
            pem: c.pem(),
            der: c.der().clone(),
            key,
        }
    }

    /// Serves one certificate chain and signing key, without checking that they belong together
    /// (so a test can present a certificate with a key that is not its own).
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    /// A TLS server on 127.0.0.1 presenting `chain` that answers "ok" to one line.
    async fn server(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> u16 {
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signer = provider().key_provider.load_private_key(key).unwrap();
        let ck = rustls::sign::CertifiedKey::new(chain, signer);
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(ck))));
        let acc = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acc = acc.clone();
                tokio::spawn(async move {
                    if let Ok(mut t) = acc.accept(s).await {
                        let mut b = [0u8; 3];
                        let _ = t.read_exact(&mut b).await;
                        let _ = t.write_all(b"ok\n").await;
                        let _ = t.shutdown().await;
                    }
                });
            }
        });
        port
    }

    /// Connect with `client_config(ca_pem)` to `host` (resolved to 127.0.0.1:port).
    async fn connect(ca_pem: &str, host: &str, port: u16) -> Result<(), Option<TlsFailure>> {
        let cfg = client_config(Some(ca_pem), None).unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|_| None)?;
        let name = ServerName::try_from(host.to_string()).unwrap();
        let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        match conn.connect(name, tcp).await {
            Ok(mut t) => {
                t.write_all(b"hi\n").await.unwrap();
                let mut b = Vec::new();
                t.read_to_end(&mut b).await.ok();
                assert_eq!(b, b"ok\n");
                Ok(())
            }
            Err(e) => Err(tls_failure(&e).map(|f| f.0)),
        }
    }

    #[tokio::test]
    async fn pinned_self_signed_ca_true_certificate_is_trusted_and_failures_are_named() {
        // `openssl req -x509` style: self-signed, CA:TRUE, used as the leaf.
        let ca_leaf = self_signed(params(&["localhost", "127.0.0.1"], true, (-1, 30)));
        let port = server(vec![ca_leaf.der.clone()], &ca_leaf.key).await;
        assert_eq!(connect(&ca_leaf.pem, "localhost", port).await, Ok(()));
        assert_eq!(connect(&ca_leaf.pem, "127.0.0.1", port).await, Ok(()));
        // Pinned, but another host name.
        assert_eq!(
            connect(&ca_leaf.pem, "other.example", port).await,
            Err(Some(TlsFailure::NameMismatch))
        );
        // Another certificate pasted: unknown issuer.
        let other = self_signed(params(&["localhost"], true, (-1, 30)));
        assert_eq!(
            connect(&other.pem, "localhost", port).await,
            Err(Some(TlsFailure::UnknownIssuer))
        );

        // Pinned but expired.
        let old = self_signed(params(&["localhost"], true, (-30, -1)));
        let port_old = server(vec![old.der.clone()], &old.key).await;
        assert_eq!(
            connect(&old.pem, "localhost", port_old).await,
            Err(Some(TlsFailure::Expired))
        );
        // Pinned but not valid yet.
        let young = self_signed(params(&["localhost"], true, (2, 30)));
        let port_young = server(vec![young.der.clone()], &young.key).await;
        assert_eq!(
            connect(&young.pem, "localhost", port_young).await,
            Err(Some(TlsFailure::NotYetValid))
        );

        // No SAN at all: the subject CN names the host (openssl req -x509 -subj /CN=localhost).
        let cn_only = self_signed(params(&[], true, (-1, 30)));
        let port_cn = server(vec![cn_only.der.clone()], &cn_only.key).await;
        assert_eq!(connect(&cn_only.pem, "localhost", port_cn).await, Ok(()));
        assert_eq!(
            connect(&cn_only.pem, "127.0.0.1", port_cn).await,
            Err(Some(TlsFailure::NameMismatch))
        );

        // A real CA in ca_pem issuing a CA:TRUE "leaf": the CA is trusted, the leaf is not
        // pinned, so the failure is named for what it is.
        let ca = self_signed(params_cn("Test CA", &[], true, (-1, 30)));
        let ca_cert = params_cn("Test CA", &[], true, (-1, 30))
            .self_signed(&ca.key)
            .unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params(&["localhost"], true, (-1, 30))
            .signed_by(&leaf_key, &ca_cert, &ca.key)
            .unwrap();
        let port_ca = server(vec![leaf.der().clone(), ca_cert.der().clone()], &leaf_key).await;
        assert_eq!(
            connect(&ca_cert.pem(), "localhost", port_ca).await,
            Err(Some(TlsFailure::CaUsedAsLeaf))
        );
        // …and a proper leaf from the same CA is trusted through the chain.
        let ok_leaf = params(&["localhost"], false, (-1, 30))
            .signed_by(&leaf_key, &ca_cert, &ca.key)
            .unwrap();
        let port_ok = server(vec![ok_leaf.der().clone()], &leaf_key).await;
        assert_eq!(connect(&ca_cert.pem(), "localhost", port_ok).await, Ok(()));
        // The handshake signature is still checked: the pinned certificate served with a key
        // that is not its own fails.
        let port_wrong_key = server(vec![ca_leaf.der.clone()], &other.key).await;
        assert!(connect(&ca_leaf.pem, "localhost", port_wrong_key)
            .await
            .is_err());
    }
}
