//! License tokens: a JWT (RFC 7519) signed with EdDSA / Ed25519 (RFC 8037), verified against
//! the vendor public key compiled into the binary (`keys/license-vendor.pub.pem`). Builds with
//! the cargo feature `dev-license-key` additionally trust the **published** development key
//! (`keys/license-dev.*.pem`) and can sign with it; packaged builds never enable that feature.
//!
//! Token shape: header `{"alg":"EdDSA","typ":"JWT","kid":"vendor"|"dev"}`, claims
//! [`LicenseClaims`]. Verification is split in two steps so the caller can tell an installed
//! license that has since expired (which falls back to Free) from a refused one:
//! [`verify_signature`] (signature and claim shapes) and [`LicenseClaims::check_time`].

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::plan::KNOWN_FEATURES;
use crate::domain::{Plan, Region};

/// `iss` of every FlowGuard license.
pub const ISSUER: &str = "flowguard-licensing";

/// The vendor's Ed25519 public key (SPKI PEM), compiled in.
pub const VENDOR_PUBLIC_KEY_PEM: &str = include_str!("../../keys/license-vendor.pub.pem");

/// The published development key pair (PKCS#8 / SPKI PEM). Only in builds with the
/// `dev-license-key` feature; licenses it signs carry `kid = "dev"`.
#[cfg(feature = "dev-license-key")]
pub mod dev {
    /// Development signing key (public knowledge: never trust it in production).
    pub const PRIVATE_KEY_PEM: &str = include_str!("../../keys/license-dev.private.pem");
    /// Development verification key.
    pub const PUBLIC_KEY_PEM: &str = include_str!("../../keys/license-dev.pub.pem");
}

/// Whether this build trusts the development license key.
pub const fn dev_key_trusted() -> bool {
    cfg!(feature = "dev-license-key")
}

/// Largest token accepted (bytes); licenses are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The claims of a license token. Times are unix seconds (RFC 7519 NumericDate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LicenseClaims {
    /// License id (`jti`): what the revocation list names.
    pub jti: String,
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// Licensee (the customer's name).
    pub sub: String,
    /// Issued at.
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// Expiry: invalid from this second on.
    pub exp: i64,
    /// Highest plan tenants may be assigned.
    pub plan: Plan,
    /// Licensed features, e.g. `audit.export`, `regions`.
    #[serde(default)]
    pub features: Vec<String>,
    /// Most applications per tenant; absent = unlimited.
    #[serde(default)]
    pub max_applications: Option<u32>,
    /// Most active users per tenant; absent = unlimited.
    #[serde(default)]
    pub max_users: Option<u32>,
    /// Retention in days for Enterprise tenants (Pro/Business use 90/365).
    pub retention_days: u32,
    /// Regions tenants may be created in; empty = any configured region.
    #[serde(default)]
    pub regions: Vec<String>,
}

/// Why a license was refused. The `Display` text is the operator-facing reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    /// Not a compact JWS, not EdDSA, or claims of the wrong shape.
    #[error("license is malformed: {0}")]
    Malformed(String),
    /// The signature does not verify with any trusted key (tampered, or signed by another key).
    #[error("license signature does not verify with the vendor key (altered, or signed by an untrusted key)")]
    BadSignature,
    /// Claims verify but say something impossible (wrong issuer, `nbf` after `exp`, …).
    #[error("license claims are invalid: {0}")]
    InvalidClaims(String),
    /// `exp` has passed.
    #[error("license {id} expired at {at}")]
    Expired {
        /// License id.
        id: String,
        /// Expiry (RFC 3339).
        at: String,
    },
    /// `nbf` is in the future.
    #[error("license {id} is not valid before {at}")]
    NotYetValid {
        /// License id.
        id: String,
        /// Start (RFC 3339).
        at: String,
    },
    /// On this deployment's revocation list.
    #[error("license {0} has been revoked")]
    Revoked(String),
    /// Signing failed (bad signing key).
    #[error("cannot sign: {0}")]
    Signing(String),
}

impl LicenseError {
    /// Stable problem code (`license_malformed`, `license_bad_signature`, …).
    pub fn code(&self) -> &'static str {
        match self {
            LicenseError::Malformed(_) => "license_malformed",
            LicenseError::BadSignature => "license_bad_signature",
            LicenseError::InvalidClaims(_) => "license_invalid_claims",
            LicenseError::Expired { .. } => "license_expired",
            LicenseError::NotYetValid { .. } => "license_not_yet_valid",
            LicenseError::Revoked(_) => "license_revoked",
            LicenseError::Signing(_) => "license_signing_failed",
        }
    }
}

/// Format unix seconds as RFC 3339 UTC (`Z`).
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

impl LicenseClaims {
    /// Shape rules every license must meet (also checked before signing).
    pub fn validate(&self) -> Result<(), LicenseError> {
        let bad = |m: &str| Err(LicenseError::InvalidClaims(m.to_string()));
        if self.iss != ISSUER {
            return bad("issuer is not flowguard-licensing");
        }
        let printable = |s: &str, max: usize| {
            !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
        };
        if !printable(&self.jti, 128) {
            return bad("license id must be 1-128 printable characters");
        }
        if !printable(&self.sub, 200) {
            return bad("licensee must be 1-200 printable characters");
        }
        if self.nbf >= self.exp {
            return bad("not-before must be earlier than expiry");
        }
        if self.retention_days == 0 || self.retention_days > 36_500 {
            return bad("retention days must be 1-36500");
        }
        for r in &self.regions {
            if Region::parse(r).is_err() {
                return bad("regions must be region names (2-16 lowercase letters or digits)");
            }
        }
        for f in &self.features {
            if !printable(f, 64) {
                return bad("feature names must be 1-64 printable characters");
            }
        }
        Ok(())
    }

    /// Whether the license is in force at `now` (unix seconds): `nbf ≤ now < exp`.
    pub fn check_time(&self, now: i64) -> Result<(), LicenseError> {
        if now < self.nbf {
            return Err(LicenseError::NotYetValid {
                id: self.jti.clone(),
                at: rfc3339(self.nbf),
            });
        }
        if now >= self.exp {
            return Err(LicenseError::Expired {
                id: self.jti.clone(),
                at: rfc3339(self.exp),
            });
        }
        Ok(())
    }
}

/// A license whose signature verified.
#[derive(Debug, Clone)]
pub struct SignedLicense {
    /// The claims.
    pub claims: LicenseClaims,
    /// Which trusted key verified it: `vendor` or `dev`.
    pub key: &'static str,
}

fn trusted_keys() -> Vec<(&'static str, &'static str)> {
    #[allow(unused_mut)]
    let mut keys = vec![("vendor", VENDOR_PUBLIC_KEY_PEM)];
    #[cfg(feature = "dev-license-key")]
    keys.push(("dev", dev::PUBLIC_KEY_PEM));
    keys
}

/// Check the signature (EdDSA only) against every trusted key and the claim shapes. Does **not**
/// check the validity period (see [`LicenseClaims::check_time`]).
pub fn verify_signature(token: &str) -> Result<SignedLicense, LicenseError> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(LicenseError::Malformed(
            "expected a compact JWT of at most 16 KiB".into(),
        ));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| LicenseError::Malformed("not a compact JWT".into()))?;
    if header.alg != Algorithm::EdDSA {
        return Err(LicenseError::Malformed(
            "signature algorithm must be EdDSA".into(),
        ));
    }
    let mut v = Validation::new(Algorithm::EdDSA);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    for (name, pem) in trusted_keys() {
        let key = DecodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|e| LicenseError::Malformed(format!("trusted key {name}: {e}")))?;
        match jsonwebtoken::decode::<LicenseClaims>(token, &key, &v) {
            Ok(data) => {
                data.claims.validate()?;
                return Ok(SignedLicense {
                    claims: data.claims,
                    key: name,
                });
            }
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => continue,
                jsonwebtoken::errors::ErrorKind::Json(_) => {
                    // The signature verified (decode checks it first) but the claims do not fit.
                    return Err(LicenseError::Malformed(
                        "claims do not have the license shape".into(),
                    ));
                }
                _ => return Err(LicenseError::Malformed("not a valid JWS".into())),
            },
        }
    }
    Err(LicenseError::BadSignature)
}

/// Sign `claims` with a PKCS#8 PEM Ed25519 private key; `kid` names the key (`vendor`, `dev`).
pub fn issue(
    claims: &LicenseClaims,
    signing_key_pem: &[u8],
    kid: &str,
) -> Result<String, LicenseError> {
    claims.validate()?;
    let key = EncodingKey::from_ed_pem(signing_key_pem)
        .map_err(|_| LicenseError::Signing("signing key is not an Ed25519 PKCS#8 PEM".into()))?;
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &key)
        .map_err(|_| LicenseError::Signing("signing key is not an Ed25519 PKCS#8 PEM".into()))
}

/// Sign with the published development key (builds with `dev-license-key` only).
#[cfg(feature = "dev-license-key")]
pub fn issue_dev(claims: &LicenseClaims) -> Result<String, LicenseError> {
    issue(claims, dev::PRIVATE_KEY_PEM.as_bytes(), "dev")
}

/// Check feature names against the ones this build knows (for the issuing CLI).
pub fn check_known_features(features: &[String]) -> Result<(), String> {
    for f in features {
        if !KNOWN_FEATURES.contains(&f.as_str()) {
            return Err(format!(
                "unknown feature `{}` (known: {})",
                crate::domain::truncate(f, 64),
                KNOWN_FEATURES.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> LicenseClaims {
        LicenseClaims {
            jti: "lic-1".into(),
            iss: ISSUER.into(),
            sub: "Example Corp".into(),
            iat: 1_700_000_000,
            nbf: 1_700_000_000,
            exp: 1_900_000_000,
            plan: Plan::Business,
            features: vec!["audit.export".into()],
            max_applications: Some(5),
            max_users: None,
            retention_days: 365,
            regions: vec!["eus".into()],
        }
    }

    fn other_key() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem()
    }

    #[test]
    fn foreign_key_is_refused() {
        let t = issue(&claims(), other_key().as_bytes(), "vendor").unwrap();
        assert_eq!(
            verify_signature(&t).unwrap_err(),
            LicenseError::BadSignature
        );
    }

    #[test]
    fn time_window() {
        let c = claims();
        assert!(c.check_time(1_800_000_000).is_ok());
        assert!(matches!(
            c.check_time(1_600_000_000),
            Err(LicenseError::NotYetValid { .. })
        ));
        assert!(matches!(
            c.check_time(1_900_000_000),
            Err(LicenseError::Expired { .. })
        ));
    }

    #[test]
    fn wrong_algorithm_and_garbage_refused() {
        assert!(matches!(
            verify_signature("x.y.z"),
            Err(LicenseError::Malformed(_))
        ));
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(matches!(
            verify_signature(&hs),
            Err(LicenseError::Malformed(_))
        ));
    }

    #[cfg(feature = "dev-license-key")]
    #[test]
    fn dev_roundtrip_and_tamper() {
        let t = issue_dev(&claims()).unwrap();
        let s = verify_signature(&t).unwrap();
        assert_eq!(s.key, "dev");
        assert_eq!(s.claims, claims());
        // Flip one character of the payload.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut p = parts[1].clone().into_bytes();
        p[10] = if p[10] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(p).unwrap();
        let tampered = parts.join(".");
        assert!(verify_signature(&tampered).is_err());
    }
}
