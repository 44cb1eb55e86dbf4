//! Every key operation lives here: the master key (KEK), wrapping of per-tenant key sets
//! (AES-256-GCM, NIST SP 800-38D), derivation of the catalog database key, random tokens and
//! their SHA-256 digests, and constant-time comparison.

pub mod audit_signing;
pub mod envelope;
pub mod keyring;
pub mod license;
pub mod master;
pub mod server_cert;
pub mod signed_url;
pub mod token;

pub use keyring::{TenantKeySet, WrappedKey};
pub use master::{MasterKey, MasterKeyError};

/// A raw 256-bit key held only in memory and zeroed on drop.
pub type Key256 = zeroize::Zeroizing<[u8; 32]>;

/// Fill a fresh 256-bit key from the OS CSPRNG.
pub fn random_key() -> Key256 {
    use rand::RngCore;
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(k.as_mut());
    k
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
