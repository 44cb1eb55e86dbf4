//! Per-tenant versioned key sets (NIST SP 800-57 terms: a KEK wraps DEKs).
//!
//! A key set has a `version` and two 256-bit keys: the SQLCipher raw database key (`db`) and the
//! data-encryption key (`dek`) for envelope encryption. Each is stored only *wrapped*:
//! AES-256-GCM under the master key with a fresh 96-bit nonce and
//! AAD = `flowguard/keywrap/v1|<tenant>|<version>|<purpose>`, so a wrapped key cannot be moved to
//! another tenant, version or purpose.

use crate::domain::TenantId;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use super::{Key256, MasterKey};

/// What a wrapped key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// SQLCipher raw database key.
    Db,
    /// Data-encryption key for envelope encryption.
    Dek,
}

impl KeyPurpose {
    /// Stable name stored in the catalog (`db`, `dek`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Db => "db",
            KeyPurpose::Dek => "dek",
        }
    }
}

/// A wrapped key as stored in the catalog: 12-byte nonce and ciphertext+tag.
#[derive(Debug, Clone)]
pub struct WrappedKey {
    /// AES-GCM nonce (96 bits).
    pub nonce: Vec<u8>,
    /// Ciphertext with the 128-bit tag appended.
    pub ciphertext: Vec<u8>,
}

/// Key wrapping failed: a wrong master key, or a wrapped key that was altered or moved.
#[derive(Debug, thiserror::Error)]
#[error("key unwrap failed (wrong master key or altered key material)")]
pub struct UnwrapError;

/// One tenant key set in memory (zeroed on drop).
pub struct TenantKeySet {
    /// Version number, starting at 1.
    pub version: u32,
    /// SQLCipher raw key.
    pub db_key: Key256,
    /// Data-encryption key.
    pub dek: Key256,
}

impl std::fmt::Debug for TenantKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKeySet")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl TenantKeySet {
    /// A fresh random key set.
    pub fn generate(version: u32) -> Self {
        Self {
            version,
            db_key: super::random_key(),
            dek: super::random_key(),
        }
    }
}

fn aad(tenant: &str, version: u32, purpose: KeyPurpose) -> Vec<u8> {
    format!(
        "flowguard/keywrap/v1|{tenant}|{version}|{}",
        purpose.as_str()
    )
    .into_bytes()
}

/// Wrap tenant `tenant`'s key `version`/`purpose` under the master key (AES-256-GCM, AAD
/// `flowguard/keywrap/v1|<tenant>|<version>|<purpose>`).
pub fn wrap(
    master: &MasterKey,
    tenant: &TenantId,
    version: u32,
    purpose: KeyPurpose,
    key: &[u8; 32],
) -> Result<WrappedKey, UnwrapError> {
    wrap_scoped(master, tenant.as_str(), version, purpose, key)
}

/// Unwrap tenant `tenant`'s key; fails on a wrong master key or any change of nonce,
/// ciphertext or AAD.
pub fn unwrap(
    master: &MasterKey,
    tenant: &TenantId,
    version: u32,
    purpose: KeyPurpose,
    w: &WrappedKey,
) -> Result<Key256, UnwrapError> {
    unwrap_scoped(master, tenant.as_str(), version, purpose, w)
}

/// [`wrap`] for a key whose AAD scope is not a tenant id (the deployment's audit-signing key,
/// `audit-signing`) or a scope read back from the catalog as stored (master-key rotation).
pub fn wrap_scoped(
    master: &MasterKey,
    tenant: &str,
    version: u32,
    purpose: KeyPurpose,
    key: &[u8; 32],
) -> Result<WrappedKey, UnwrapError> {
    let cipher = Aes256Gcm::new_from_slice(master.bytes()).map_err(|_| UnwrapError)?;
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = aad(tenant, version, purpose);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key,
                aad: &aad,
            },
        )
        .map_err(|_| UnwrapError)?;
    Ok(WrappedKey {
        nonce: nonce.to_vec(),
        ciphertext: ct,
    })
}

/// [`unwrap`] for a scope that is not a [`TenantId`] (see [`wrap_scoped`]).
pub fn unwrap_scoped(
    master: &MasterKey,
    tenant: &str,
    version: u32,
    purpose: KeyPurpose,
    w: &WrappedKey,
) -> Result<Key256, UnwrapError> {
    if w.nonce.len() != 12 {
        return Err(UnwrapError);
    }
    let cipher = Aes256Gcm::new_from_slice(master.bytes()).map_err(|_| UnwrapError)?;
    let aad = aad(tenant, version, purpose);
    let pt = zeroize::Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&w.nonce),
                Payload {
                    msg: &w.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| UnwrapError)?,
    );
    if pt.len() != 32 {
        return Err(UnwrapError);
    }
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&pt);
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk() -> MasterKey {
        MasterKey::from_bytes(crate::crypto::random_key(), "mem".into())
    }

    #[test]
    fn wrap_roundtrip_and_binding() {
        let m = mk();
        let k = crate::crypto::random_key();
        let w = wrap_scoped(&m, "eus-abcdef", 1, KeyPurpose::Db, &k).unwrap();
        assert_eq!(
            *unwrap_scoped(&m, "eus-abcdef", 1, KeyPurpose::Db, &w).unwrap(),
            *k
        );
        assert!(unwrap_scoped(&m, "eus-zzzzzz", 1, KeyPurpose::Db, &w).is_err());
        assert!(unwrap_scoped(&m, "eus-abcdef", 2, KeyPurpose::Db, &w).is_err());
        assert!(unwrap_scoped(&m, "eus-abcdef", 1, KeyPurpose::Dek, &w).is_err());
        assert!(unwrap_scoped(&mk(), "eus-abcdef", 1, KeyPurpose::Db, &w).is_err());
    }
}
