//! Envelope encryption of single values under a tenant's data-encryption key (DEK), as
//! DESIGN.md "Keys and encryption" describes: AES-256-GCM (NIST SP 800-38D) with a fresh 96-bit
//! nonce from the OS CSPRNG, AAD binding the value to where it is stored (tenant, table, row id,
//! column), and the DEK version recorded in the ciphertext so a rotation can tell which key
//! opens it.
//!
//! Ciphertext layout (all in one byte string, stored as a BLOB):
//!
//! ```text
//! magic "FGE1" (4) | key version u32 big-endian (4) | nonce (12) | ciphertext ‖ tag (n + 16)
//! ```
//!
//! The AAD is `flowguard/envelope/v1` followed by the key version and every AAD part, each as a
//! u32 big-endian length and its bytes, so parts cannot be shifted into one another
//! (`["ab","c"]` ≠ `["a","bc"]`) and the header cannot be altered without failing the tag.
//! A value sealed for one (tenant, table, row, column) does not open for any other.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// Leading bytes of every envelope ciphertext (format version 1).
pub const MAGIC: &[u8; 4] = b"FGE1";
const HEADER_LEN: usize = 4 + 4 + 12;
const TAG_LEN: usize = 16;
const AAD_DOMAIN: &[u8] = b"flowguard/envelope/v1";

/// Why sealing or opening failed. Deliberately carries no detail: a wrong key, a moved value
/// (other AAD) and an altered byte all look the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not an envelope ciphertext (too short or wrong magic).
    #[error("not an envelope ciphertext")]
    Malformed,
    /// Authentication failed: wrong key, wrong AAD, or altered bytes.
    #[error("envelope ciphertext does not open (wrong key, wrong context or altered)")]
    Open,
    /// Encryption failed (only for absurd plaintext sizes).
    #[error("envelope encryption failed")]
    Seal,
}

fn aad(version: u32, parts: &[&str]) -> Vec<u8> {
    let mut a =
        Vec::with_capacity(AAD_DOMAIN.len() + 4 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    a.extend_from_slice(AAD_DOMAIN);
    a.extend_from_slice(&version.to_be_bytes());
    for p in parts {
        a.extend_from_slice(&(p.len() as u32).to_be_bytes());
        a.extend_from_slice(p.as_bytes());
    }
    a
}

/// Encrypt `plaintext` under `dek` (key version `version`), bound to `aad_parts` — by
/// convention `[tenant_id, table, row_id, column]`. Returns the self-describing ciphertext.
///
/// Errors: [`EnvelopeError::Seal`] only when AES-GCM refuses the input (over 64 GiB).
pub fn seal(
    dek: &[u8; 32],
    version: u32,
    aad_parts: &[&str],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let cipher = Aes256Gcm::new_from_slice(dek).map_err(|_| EnvelopeError::Seal)?;
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = aad(version, aad_parts);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| EnvelopeError::Seal)?;
    let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The DEK version a ciphertext was sealed with (read from the header, not yet authenticated:
/// use it only to pick the key, then [`open`] checks it).
pub fn key_version(ciphertext: &[u8]) -> Result<u32, EnvelopeError> {
    if ciphertext.len() < HEADER_LEN + TAG_LEN || &ciphertext[..4] != MAGIC {
        return Err(EnvelopeError::Malformed);
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&ciphertext[4..8]);
    Ok(u32::from_be_bytes(v))
}

/// Decrypt a value sealed by [`seal`] with the same `dek` and `aad_parts`. The plaintext is
/// zeroed on drop.
///
/// Errors: [`EnvelopeError::Malformed`] for a string that is not an envelope;
/// [`EnvelopeError::Open`] for a wrong key, other AAD parts, or any altered byte (header
/// included: the key version is part of the AAD).
pub fn open(
    dek: &[u8; 32],
    aad_parts: &[&str],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let version = key_version(ciphertext)?;
    let cipher = Aes256Gcm::new_from_slice(dek).map_err(|_| EnvelopeError::Open)?;
    let aad = aad(version, aad_parts);
    let pt = cipher
        .decrypt(
            Nonce::from_slice(&ciphertext[8..HEADER_LEN]),
            Payload {
                msg: &ciphertext[HEADER_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| EnvelopeError::Open)?;
    Ok(Zeroizing::new(pt))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTS: [&str; 4] = ["eus-abcdef", "ldap_config", "1", "bind_password"];

    fn key() -> [u8; 32] {
        *crate::crypto::random_key()
    }

    #[test]
    fn roundtrip_and_version_recorded() {
        let k = key();
        let ct = seal(&k, 7, &PARTS, b"s3cret").unwrap();
        assert_eq!(&ct[..4], MAGIC);
        assert_eq!(key_version(&ct).unwrap(), 7);
        assert_eq!(open(&k, &PARTS, &ct).unwrap().as_slice(), b"s3cret");
        // Empty plaintext is fine too.
        let e = seal(&k, 1, &PARTS, b"").unwrap();
        assert!(open(&k, &PARTS, &e).unwrap().is_empty());
    }

    #[test]
    fn fresh_nonce_every_time() {
        let k = key();
        let a = seal(&k, 1, &PARTS, b"same").unwrap();
        let b = seal(&k, 1, &PARTS, b"same").unwrap();
        assert_ne!(a, b);
        assert_ne!(a[8..20], b[8..20]);
    }

    #[test]
    fn plaintext_not_visible() {
        let k = key();
        let ct = seal(&k, 1, &PARTS, b"very-secret-bind-password").unwrap();
        assert!(!ct
            .windows(b"very-secret".len())
            .any(|w| w == b"very-secret"));
    }

    #[test]
    fn bound_to_every_aad_part() {
        let k = key();
        let ct = seal(&k, 1, &PARTS, b"pw").unwrap();
        for i in 0..PARTS.len() {
            let mut other = PARTS;
            other[i] = "x";
            assert_eq!(open(&k, &other, &ct), Err(EnvelopeError::Open), "part {i}");
        }
        assert_eq!(open(&k, &PARTS[..3], &ct), Err(EnvelopeError::Open));
        // Length-prefixed: shifting bytes between parts does not collide.
        let ct2 = seal(&k, 1, &["ab", "c"], b"pw").unwrap();
        assert_eq!(open(&k, &["a", "bc"], &ct2), Err(EnvelopeError::Open));
    }

    #[test]
    fn wrong_key_and_tampering_fail() {
        let k = key();
        let ct = seal(&k, 3, &PARTS, b"pw").unwrap();
        assert_eq!(open(&key(), &PARTS, &ct), Err(EnvelopeError::Open));
        for i in 4..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 0x01;
            assert!(
                open(&k, &PARTS, &t).is_err(),
                "flipped byte {i} still opened"
            );
        }
        // The version in the header is authenticated.
        let mut t = ct.clone();
        t[7] = 4;
        assert_eq!(key_version(&t).unwrap(), 4);
        assert_eq!(open(&k, &PARTS, &t), Err(EnvelopeError::Open));
    }

    #[test]
    fn malformed_inputs() {
        let k = key();
        assert_eq!(open(&k, &PARTS, b""), Err(EnvelopeError::Malformed));
        assert_eq!(open(&k, &PARTS, b"FGE1"), Err(EnvelopeError::Malformed));
        let mut ct = seal(&k, 1, &PARTS, b"pw").unwrap();
        ct[0] = b'X';
        assert_eq!(open(&k, &PARTS, &ct), Err(EnvelopeError::Malformed));
        assert_eq!(key_version(&ct), Err(EnvelopeError::Malformed));
    }
}
