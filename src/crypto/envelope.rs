//! Envelope encryption of values and files under a tenant's data-encryption key (DEK):
//! AES-256-GCM (NIST SP 800-38D) with a fresh 96-bit nonce and AAD binding the value to where
//! it lives (tenant, table, row id, column …), so a ciphertext cannot be moved elsewhere.
//!
//! Format (bytes): `"FGE1"` ‖ key version (u32 big-endian) ‖ nonce (12) ‖ ciphertext ‖ tag (16).
//! Every ciphertext records the key version that sealed it, so rotation can find old ones.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use super::Key256;

const MAGIC: &[u8; 4] = b"FGE1";
const HEADER: usize = 4 + 4 + 12;

/// Sealing or opening failed (wrong key, wrong AAD, altered or truncated data).
#[derive(Debug, thiserror::Error)]
#[error("envelope decryption failed")]
pub struct EnvelopeError;

/// Canonical AAD from parts: each part length-prefixed (u32 BE), so `("ab","c")` ≠ `("a","bc")`.
pub fn aad(parts: &[&str]) -> Vec<u8> {
    let mut out = b"flowguard/envelope/v1".to_vec();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// Encrypt `plaintext` under `dek` (version `version`) with `aad`.
pub fn seal(
    dek: &Key256,
    version: u32,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let cipher = Aes256Gcm::new_from_slice(dek.as_ref()).map_err(|_| EnvelopeError)?;
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| EnvelopeError)?;
    let mut out = Vec::with_capacity(HEADER + ct.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The key version recorded in a ciphertext.
pub fn key_version(data: &[u8]) -> Result<u32, EnvelopeError> {
    if data.len() < HEADER + 16 || &data[..4] != MAGIC {
        return Err(EnvelopeError);
    }
    Ok(u32::from_be_bytes([data[4], data[5], data[6], data[7]]))
}

/// Decrypt with `dek`, which must be the key of [`key_version`]`(data)`.
pub fn open(
    dek: &Key256,
    aad: &[u8],
    data: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, EnvelopeError> {
    key_version(data)?;
    let cipher = Aes256Gcm::new_from_slice(dek.as_ref()).map_err(|_| EnvelopeError)?;
    let pt = cipher
        .decrypt(
            Nonce::from_slice(&data[8..HEADER]),
            Payload {
                msg: &data[HEADER..],
                aad,
            },
        )
        .map_err(|_| EnvelopeError)?;
    Ok(zeroize::Zeroizing::new(pt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_binding() {
        let k = crate::crypto::random_key();
        let a = aad(&["eus-abc123", "variables", "app1", "password"]);
        let c = seal(&k, 3, &a, b"hunter2").unwrap();
        assert_eq!(key_version(&c).unwrap(), 3);
        assert_eq!(&open(&k, &a, &c).unwrap()[..], b"hunter2");
        assert!(open(&k, &aad(&["eus-abc123", "variables", "app1", "other"]), &c).is_err());
        assert!(open(&crate::crypto::random_key(), &a, &c).is_err());
        let mut t = c.clone();
        let n = t.len() - 1;
        t[n] ^= 1;
        assert!(open(&k, &a, &t).is_err());
        assert!(open(&k, &a, &c[..c.len() - 1]).is_err());
        assert_ne!(aad(&["ab", "c"]), aad(&["a", "bc"]));
    }
}
