//! The deployment's audit-signing key (Ed25519, RFC 8032) that signs the sentinel trailer of
//! every audit export. The 32-byte seed is created on first use and kept wrapped under the master
//! key (AES-256-GCM, AAD bound to purpose `_audit-signing`) in `<data>/keys/audit-signing.key`
//! (mode 0600: 12-byte nonce ‖ ciphertext). The public key is served at
//! `GET /api/v1/audit/signing-key` as SPKI PEM.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::keyring::{self, KeyPurpose, WrappedKey};
use super::MasterKey;

/// AAD "tenant" slot used for the wrapped seed (cannot collide with a tenant id).
const WRAP_SCOPE: &str = "_audit-signing";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4), followed by the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Failures loading or creating the key.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The key file could not be read or written.
    #[error("audit signing key {path}: {reason}")]
    Io {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file does not unwrap with this master key or is damaged.
    #[error("audit signing key {0} does not unwrap with the master key (damaged, or written under another master key); put back this deployment's copy of the file: every backup holds it as keys/audit-signing.key (README \"Backup and restore\")")]
    Unwrap(PathBuf),
    /// The file is missing (or empty) in a deployment that already has data, so a new key
    /// would silently replace the one that signed its audit exports and backup manifests.
    #[error("audit signing key {path} is {what}, but this deployment already has data signed with its key (audit rows, backups); refusing to create a new key, which would make every earlier signed audit export and backup manifest unverifiable against the published key: copy keys/audit-signing.key from any backup of this deployment back to {path} (mode 0600; README \"Backup and restore\", the key files), then start again")]
    Missing {
        /// File.
        path: PathBuf,
        /// "missing" or "empty (0 bytes)".
        what: &'static str,
    },
}

/// The loaded signing key.
pub struct AuditSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("key_id", &self.key_id())
            .finish()
    }
}

fn read_wrapped(path: &Path) -> Result<Option<WrappedKey>, SigningKeyError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() > 12 => Ok(Some(WrappedKey {
            nonce: bytes[..12].to_vec(),
            ciphertext: bytes[12..].to_vec(),
        })),
        Ok(_) => Err(SigningKeyError::Unwrap(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SigningKeyError::Io {
            path: path.to_path_buf(),
            reason: e.kind().to_string(),
        }),
    }
}

fn write_synced(path: &Path, w: &WrappedKey) -> Result<(), SigningKeyError> {
    let io = |e: std::io::Error| SigningKeyError::Io {
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(&w.nonce).map_err(io)?;
    f.write_all(&w.ciphertext).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Master key rotation, staging step (before the catalog is re-keyed): write the seed re-wrapped
/// under `new` to `<data>/keys/audit-signing.key.next` (0600, fsynced). Nothing to do when there
/// is no key file yet, or when the file already unwraps with `new` (a resumed rotation).
/// A file that unwraps with neither key → [`SigningKeyError::Unwrap`].
pub fn stage_rewrap(
    data_dir: &Path,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<(), SigningKeyError> {
    let path = AuditSigner::path_in(data_dir);
    let Some(w) = read_wrapped(&path)? else {
        return Ok(());
    };
    if keyring::unwrap_scoped(new, WRAP_SCOPE, 1, KeyPurpose::Dek, &w).is_ok() {
        return Ok(());
    }
    let seed = keyring::unwrap_scoped(old, WRAP_SCOPE, 1, KeyPurpose::Dek, &w)
        .map_err(|_| SigningKeyError::Unwrap(path.clone()))?;
    let next = keyring::wrap_scoped(new, WRAP_SCOPE, 1, KeyPurpose::Dek, &seed)
        .map_err(|_| SigningKeyError::Unwrap(path.clone()))?;
    write_synced(&next_path(&path), &next)
}

/// Master key rotation, switching step (after the catalog switched to the new key, before the
/// new key file is installed): move a staged `audit-signing.key.next` over the key file (atomic
/// rename, directory fsynced), then prove the key file unwraps with `key`. Idempotent.
pub fn finish_rewrap(data_dir: &Path, key: &MasterKey) -> Result<(), SigningKeyError> {
    let path = AuditSigner::path_in(data_dir);
    let next = next_path(&path);
    let io = |e: std::io::Error| SigningKeyError::Io {
        path: path.clone(),
        reason: e.kind().to_string(),
    };
    if next.exists() {
        std::fs::rename(&next, &path).map_err(io)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
    }
    match read_wrapped(&path)? {
        None => Ok(()),
        Some(w) => keyring::unwrap_scoped(key, WRAP_SCOPE, 1, KeyPurpose::Dek, &w)
            .map(|_| ())
            .map_err(|_| SigningKeyError::Unwrap(path.clone())),
    }
}

fn next_path(path: &Path) -> PathBuf {
    path.with_extension("key.next")
}

impl AuditSigner {
    /// Path of the key file in a data dir.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("keys").join("audit-signing.key")
    }

    /// Load the key from `<data>/keys/audit-signing.key`; when the file is absent and
    /// `may_create` (a first start: nothing in the deployment was signed yet), create it.
    ///
    /// Errors: absent or empty file when `!may_create` → [`SigningKeyError::Missing`] (a 0-byte
    /// file is never replaced either, also on a first start: it was written and then lost);
    /// unreadable → [`SigningKeyError::Io`]; does not unwrap → [`SigningKeyError::Unwrap`].
    pub fn load_or_create(
        data_dir: &Path,
        master: &MasterKey,
        may_create: bool,
    ) -> Result<Self, SigningKeyError> {
        let path = Self::path_in(data_dir);
        let io = |e: std::io::Error| SigningKeyError::Io {
            path: path.clone(),
            reason: e.kind().to_string(),
        };
        let seed = match std::fs::read(&path) {
            Ok(bytes) if bytes.is_empty() => {
                return Err(SigningKeyError::Missing {
                    path,
                    what: "empty (0 bytes)",
                })
            }
            Ok(bytes) => {
                if bytes.len() <= 12 {
                    return Err(SigningKeyError::Unwrap(path));
                }
                let w = WrappedKey {
                    nonce: bytes[..12].to_vec(),
                    ciphertext: bytes[12..].to_vec(),
                };
                keyring::unwrap_scoped(master, WRAP_SCOPE, 1, KeyPurpose::Dek, &w)
                    .map_err(|_| SigningKeyError::Unwrap(path.clone()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => {
                return Err(SigningKeyError::Missing {
                    path,
                    what: "missing",
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = zeroize::Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(seed.as_mut());
                let w = keyring::wrap_scoped(master, WRAP_SCOPE, 1, KeyPurpose::Dek, &seed)
                    .map_err(|_| SigningKeyError::Unwrap(path.clone()))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                f.write_all(&w.nonce).map_err(io)?;
                f.write_all(&w.ciphertext).map_err(io)?;
                f.sync_all().map_err(io)?;
                tracing::info!(file = %path.display(), "first start: created the audit signing key");
                seed
            }
            Err(e) => return Err(io(e)),
        };
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .map_err(|_| SigningKeyError::Unwrap(path.clone()))?;
        Ok(Self { pair })
    }

    /// Load an existing key file; never creates one (see [`Self::load_or_create`]).
    pub fn load(data_dir: &Path, master: &MasterKey) -> Result<Self, SigningKeyError> {
        Self::load_or_create(data_dir, master, false)
    }

    /// Sign `msg` (64-byte Ed25519 signature).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }

    /// Raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// SPKI PEM of the public key.
    pub fn public_key_pem(&self) -> String {
        public_key_pem(self.public_key())
    }

    /// Key id: the first 16 hex digits of SHA-256 over the raw public key.
    pub fn key_id(&self) -> String {
        key_id(self.public_key())
    }
}

/// Key id of a raw public key.
pub fn key_id(public: &[u8]) -> String {
    super::sha256_hex(public)[..16].to_string()
}

/// SPKI PEM (`-----BEGIN PUBLIC KEY-----`) of a raw Ed25519 public key.
pub fn public_key_pem(public: &[u8]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(public);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

/// Parse the audit-signing public key as published: either the SPKI PEM
/// (`-----BEGIN PUBLIC KEY-----`, RFC 8410 §4) or the whole JSON document of
/// `GET /api/v1/audit/signing-key` (its `public_key_pem` member). Returns the 32 key bytes.
/// Errors say which of the two shapes was expected and what is wrong.
pub fn parse_public_key_pem(text: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    let from_json = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            v.get("public_key_pem")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        });
    let pem = from_json.as_deref().unwrap_or(text);
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        "public key is neither an SPKI PEM nor the JSON of GET /api/v1/audit/signing-key"
            .to_string()
    })?;
    let der: &[u8] = der.as_ref();
    if der.len() != 44 || der[..12] != SPKI_PREFIX {
        return Err("public key is not an Ed25519 SubjectPublicKeyInfo".into());
    }
    Ok(der[12..].to_vec())
}

/// Verify an Ed25519 signature.
pub fn verify(public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(msg, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_reload_sign_verify() {
        let d = tempfile::tempdir().unwrap();
        let mk = MasterKey::from_bytes(zeroize::Zeroizing::new([7u8; 32]), d.path().join("m"));
        assert!(matches!(
            AuditSigner::load(d.path(), &mk),
            Err(SigningKeyError::Missing { .. })
        ));
        let a = AuditSigner::load_or_create(d.path(), &mk, true).unwrap();
        let b = AuditSigner::load(d.path(), &mk).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let sig = a.sign(b"hello");
        let pk = parse_public_key_pem(&a.public_key_pem()).unwrap();
        assert!(verify(&pk, b"hello", &sig));
        assert!(!verify(&pk, b"hellp", &sig));
        let other = MasterKey::from_bytes(zeroize::Zeroizing::new([8u8; 32]), d.path().join("m"));
        assert!(AuditSigner::load_or_create(d.path(), &other, true).is_err());
        std::fs::write(AuditSigner::path_in(d.path()), b"").unwrap();
        assert!(matches!(
            AuditSigner::load_or_create(d.path(), &mk, true),
            Err(SigningKeyError::Missing { .. })
        ));
    }

    #[test]
    fn public_key_accepted_as_pem_or_as_the_signing_key_document() {
        let d = tempfile::tempdir().unwrap();
        let mk = MasterKey::from_bytes(zeroize::Zeroizing::new([7u8; 32]), d.path().join("m"));
        let a = AuditSigner::load_or_create(d.path(), &mk, true).unwrap();
        let doc = serde_json::json!({"algorithm": "Ed25519", "public_key_pem": a.public_key_pem()});
        assert_eq!(
            parse_public_key_pem(&doc.to_string()).unwrap(),
            a.public_key().to_vec()
        );
        assert!(parse_public_key_pem("not a key").is_err());
        assert!(parse_public_key_pem("{\"public_key_pem\": 1}").is_err());
    }
}
