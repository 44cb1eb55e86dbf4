//! The appliance's own self-signed TLS certificate (used when no `tls.cert_file` is configured)
//! and the resolver that lets a renewed certificate take over without a restart.
//!
//! A generated certificate is a **leaf**: `basicConstraints CA:FALSE`, key usage
//! digitalSignature + keyEncipherment, extended key usage serverAuth, a random 128-bit serial, an
//! ECDSA P-256 key, and a validity of at most 397 days (the CA/Browser Forum Baseline
//! Requirements' limit for server certificates, §6.3.2), starting one day before issue to absorb
//! client clock skew. It is renewed when fewer than `self_signed.renew_before_days` are left.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Datelike, Duration, Utc};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Longest validity of a generated certificate, in days (CA/B Forum BR §6.3.2).
pub const MAX_VALIDITY_DAYS: u32 = 397;

/// A generated certificate and its key, PEM.
pub struct Generated {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// SHA-256 of the certificate's DER, lowercase hex (the fingerprint operators compare).
    pub sha256_fingerprint: String,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

fn rc_time(t: DateTime<Utc>) -> time::OffsetDateTime {
    rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8)
}

/// Generate a leaf certificate for `names` (DNS names or IP literals) valid from yesterday for
/// `validity_days` (clamped to 1..=[`MAX_VALIDITY_DAYS`]), at `now`.
pub fn generate(
    names: Vec<String>,
    validity_days: u32,
    now: DateTime<Utc>,
) -> Result<Generated, rcgen::Error> {
    let days = validity_days.clamp(1, MAX_VALIDITY_DAYS);
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "FlowGuard appliance (self-signed)");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
    serial[0] &= 0x7f; // positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let start = now - Duration::days(1);
    // Whole days (rcgen dates are midnight UTC): the span never exceeds `days`.
    let end = start + Duration::days(i64::from(days));
    params.not_before = rc_time(start);
    params.not_after = rc_time(end);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let not_after = end
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc())
        .unwrap_or(end);
    Ok(Generated {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        sha256_fingerprint: super::sha256_hex(cert.der()),
        not_after,
    })
}

/// What renewal needs to know about a certificate.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// `basicConstraints` says CA:TRUE.
    pub is_ca: bool,
    /// Length of the validity period in whole days (rounded up).
    pub validity_days: u32,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

/// Inspect the first certificate in `pem`; `None` when it does not parse.
pub fn inspect(pem: &[u8]) -> Option<Inspected> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let v = cert.validity();
    let span = v.not_after.timestamp() - v.not_before.timestamp();
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    Some(Inspected {
        is_ca,
        validity_days: u32::try_from((span.max(0) + 86_399) / 86_400).unwrap_or(u32::MAX),
        not_after: DateTime::from_timestamp(v.not_after.timestamp(), 0)?,
    })
}

/// Whether a certificate ending at `not_after` is due for renewal at `now`.
pub fn due(not_after: DateTime<Utc>, renew_before_days: u32, now: DateTime<Utc>) -> bool {
    not_after - now < Duration::days(i64::from(renew_before_days))
}

/// A certificate resolver whose certificate can be replaced while the server runs.
#[derive(Debug)]
pub struct Swappable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Swappable {
    /// Start with `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(key),
        })
    }

    /// Serve `key` from the next handshake on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        let mut g = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g = key;
    }
}

impl ResolvesServerCert for Swappable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_is_a_short_lived_leaf() {
        let now = Utc::now();
        let g = generate(vec!["localhost".into(), "127.0.0.1".into()], 397, now).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(g.cert_pem.as_bytes()).unwrap();
        let c = p.parse_x509().unwrap();
        let bc = c
            .basic_constraints()
            .unwrap()
            .expect("basicConstraints present");
        assert!(!bc.value.ca, "CA:FALSE");
        let v = c.validity();
        let span = v.not_after.timestamp() - v.not_before.timestamp();
        assert!(span <= 397 * 86_400, "{span}");
        assert!(v.not_before.timestamp() <= now.timestamp());
        assert!(v.not_after.timestamp() > now.timestamp() + 300 * 86_400);
        let i = inspect(g.cert_pem.as_bytes()).unwrap();
        assert_eq!(i.not_after, g.not_after);
        assert!(!i.is_ca && i.validity_days <= 397, "{i:?}");
        let eku = c.extended_key_usage().unwrap().expect("EKU present");
        assert!(eku.value.server_auth);
        // Longer requests are clamped.
        let g2 = generate(vec!["localhost".into()], 5000, now).unwrap();
        assert!(g2.not_after - now <= Duration::days(397));
    }

    #[test]
    fn renewal_is_due_inside_the_window() {
        let now = Utc::now();
        assert!(!due(now + Duration::days(31), 30, now));
        assert!(due(now + Duration::days(29), 30, now));
        assert!(due(now - Duration::days(1), 30, now));
    }
}
