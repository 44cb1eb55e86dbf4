//! Signed screenshot URLs (DESIGN.md "Screenshots"; shared/cases/signed-urls.md C12).
//!
//! Shape: `/shots/<tenant>/<object>.png?exp=<unix seconds>&kid=<key id>&sig=<base64url MAC>`.
//! `sig = HMAC-SHA256(K_kid, "flowguard/shot/v1\n<tenant>\n<object>\n<exp>\n<kid>")` where
//! `K_kid = HMAC-SHA256(master key, "flowguard/signed-url-key/<kid>")`, so keys are derived from
//! the master key and rotate by changing `kid`.
//!
//! Verification rules: the query is parsed strictly (each of `exp`, `kid`, `sig` exactly once,
//! nothing else; `exp` only ASCII digits, at most 12); valid only while `now < exp`; refused when
//! `exp − now` exceeds [`MAX_LIFETIME_SECS`] + [`CLOCK_SKEW_LEEWAY_SECS`] (a leaked key or signer
//! bug cannot mint long-lived URLs; the leeway absorbs a signer clock up to 60 s ahead). The MAC
//! is compared in constant time. There is no not-before check.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::MasterKey;
use crate::domain::TenantId;

/// Longest lifetime of a signed URL (15 minutes).
pub const MAX_LIFETIME_SECS: u64 = 900;
/// The single leeway constant: tolerated signer-clock lead when checking the maximum lifetime.
pub const CLOCK_SKEW_LEEWAY_SECS: u64 = 60;
/// Current key id.
pub const CURRENT_KID: &str = "1";

type HmacSha256 = Hmac<Sha256>;

fn key_for(master: &MasterKey, kid: &str) -> Option<HmacSha256> {
    let mut k = <HmacSha256 as Mac>::new_from_slice(master.bytes()).ok()?;
    k.update(format!("flowguard/signed-url-key/{kid}").as_bytes());
    let derived = k.finalize().into_bytes();
    <HmacSha256 as Mac>::new_from_slice(&derived).ok()
}

fn message(tenant: &str, object: &str, exp: u64, kid: &str) -> String {
    format!("flowguard/shot/v1\n{tenant}\n{object}\n{exp}\n{kid}")
}

/// Sign; returns the path with query.
pub fn sign(master: &MasterKey, tenant: &TenantId, object: &str, exp: u64) -> Option<String> {
    let mut mac = key_for(master, CURRENT_KID)?;
    mac.update(message(tenant.as_str(), object, exp, CURRENT_KID).as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Some(format!(
        "/shots/{tenant}/{object}.png?exp={exp}&kid={CURRENT_KID}&sig={sig}"
    ))
}

/// Verify a request for `tenant`/`object` with raw query string `query` at time `now`.
/// Any failure is the same `false` (no oracle).
pub fn verify(master: &MasterKey, tenant: &str, object: &str, query: &str, now: u64) -> bool {
    let (mut exp, mut kid, mut sig) = (None, None, None);
    for pair in query.split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            return false;
        };
        let slot = match k {
            "exp" => &mut exp,
            "kid" => &mut kid,
            "sig" => &mut sig,
            _ => return false,
        };
        if slot.is_some() {
            return false; // duplicated parameter
        }
        *slot = Some(v);
    }
    let (Some(exp), Some(kid), Some(sig)) = (exp, kid, sig) else {
        return false;
    };
    if exp.is_empty() || exp.len() > 12 || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(exp_n) = exp.parse::<u64>() else {
        return false;
    };
    if exp_n.to_string() != exp {
        return false; // leading zeros: not canonical
    }
    if now >= exp_n || exp_n - now > MAX_LIFETIME_SECS + CLOCK_SKEW_LEEWAY_SECS {
        return false;
    }
    if kid != CURRENT_KID {
        return false;
    }
    let Ok(sig_bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let Some(mut mac) = key_for(master, kid) else {
        return false;
    };
    mac.update(message(tenant, object, exp_n, kid).as_bytes());
    mac.verify_slice(&sig_bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(url: &str) -> &str {
        url.split_once('?').unwrap().1
    }

    #[test]
    fn c12_windows() {
        let m = MasterKey::from_bytes(crate::crypto::random_key(), "mem".into());
        let t = 1_800_000_000u64;
        let url = sign(&m, &TenantId::parse("eus-abc123").unwrap(), "obj1", t + 900).unwrap();
        assert!(verify(&m, "eus-abc123", "obj1", q(&url), t + 899));
        assert!(!verify(&m, "eus-abc123", "obj1", q(&url), t + 900));
        assert!(!verify(&m, "eus-abc123", "obj1", q(&url), t + 901));
        // signer 40 s ahead: verifier at T_v + 1 where T_v = t - 40
        assert!(verify(&m, "eus-abc123", "obj1", q(&url), t - 40 + 1));
        // cross-object / cross-tenant
        assert!(!verify(&m, "eus-abc123", "obj2", q(&url), t));
        assert!(!verify(&m, "eus-zzz999", "obj1", q(&url), t));
        // too long a lifetime, even if correctly signed
        let long = sign(
            &m,
            &TenantId::parse("eus-abc123").unwrap(),
            "obj1",
            t + 86_400,
        )
        .unwrap();
        assert!(!verify(&m, "eus-abc123", "obj1", q(&long), t));
        // malformed exp, duplicates, altered exp
        let sig = q(&url).split("sig=").nth(1).unwrap();
        for bad in [
            format!("exp=&kid=1&sig={sig}"),
            format!("exp=1.7e9&kid=1&sig={sig}"),
            format!("exp=-1&kid=1&sig={sig}"),
            format!("exp=99999999999999999999&kid=1&sig={sig}"),
            format!("exp={}&exp={}&kid=1&sig={sig}", t + 900, t + 900),
            format!("exp={}&kid=1&sig={sig}", t + 900 + 600),
            format!("exp=0{}&kid=1&sig={sig}", t + 900),
            format!("exp={}&kid=2&sig={sig}", t + 900),
            format!("exp={}&kid=1&sig={sig}&x=1", t + 900),
        ] {
            assert!(!verify(&m, "eus-abc123", "obj1", &bad, t), "{bad}");
        }
    }
}
