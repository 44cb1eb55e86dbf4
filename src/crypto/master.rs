//! The deployment master key (KEK): 32 random bytes in a file (default
//! `<data>/keys/master.key`, mode 0600 in a 0700 directory), created on first start.
//!
//! Refusals (never a new key over existing data): the file is missing while stores exist, is
//! unreadable, too open, has the wrong length, or does not open the catalog (checked by the
//! store layer, reported as [`MasterKeyError::Wrong`]).
//!
//! "Too open" means any world bit, or any group bit on a file not owned by root. A root-owned
//! file with group *read* only (0440/0640) is accepted, as PostgreSQL does for its TLS key: that
//! is how a Kubernetes Secret appears when the pod sets `fsGroup`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Key256;

/// Why the master key could not be used. Messages name the file and the reason, never the key.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// Stores exist but the key file does not.
    #[error("master key file {0} is missing but encrypted stores already exist in the data dir; refusing to create a new key over existing data: put back the escrowed copy of this key (it is never in a backup; README \"Backup and restore\")")]
    Missing(PathBuf),
    /// The file could not be read.
    #[error("master key file {path} is unreadable: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// Group or world permission bits are set.
    #[error("master key file {path} is too open (mode {mode:o}); it must be 0600 or 0400, or 0440/0640 when owned by root (chmod 600 {path})")]
    TooOpen { path: PathBuf, mode: u32 },
    /// Not exactly 32 bytes.
    #[error("master key file {path} has the wrong length ({len} bytes, expected 32 raw bytes): put back the escrowed copy of this key (README \"Backup and restore\")")]
    BadLength { path: PathBuf, len: usize },
    /// The key does not decrypt the existing catalog.
    #[error("master key file {0} is the wrong key: it does not open the existing catalog")]
    Wrong(PathBuf),
    /// Could not create the key file.
    #[error("cannot create master key file {path}: {reason}")]
    Create { path: PathBuf, reason: String },
}

/// The master key; zeroed on drop, never printed.
pub struct MasterKey {
    key: Key256,
    path: PathBuf,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Load the key at `path`, or create it when it is absent and `stores_exist` is false.
    pub fn load_or_create(path: &Path, stores_exist: bool) -> Result<Self, MasterKeyError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if stores_exist {
                    Err(MasterKeyError::Missing(path.to_path_buf()))
                } else {
                    Self::create(path)
                }
            }
            Err(e) => Err(MasterKeyError::Unreadable {
                path: path.to_path_buf(),
                reason: e.kind().to_string(),
            }),
            Ok(_) => Self::load(path),
        }
    }

    /// Load an existing key file, checking its mode and length.
    pub fn load(path: &Path) -> Result<Self, MasterKeyError> {
        let unreadable = |e: std::io::Error| MasterKeyError::Unreadable {
            path: path.to_path_buf(),
            reason: e.kind().to_string(),
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        let mode = meta.permissions().mode() & 0o777;
        let root_group_read =
            std::os::unix::fs::MetadataExt::uid(&meta) == 0 && mode & 0o070 & !0o040 == 0;
        if mode & 0o007 != 0 || (mode & 0o070 != 0 && !root_group_read) {
            return Err(MasterKeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(unreadable)?);
        if bytes.len() != 32 {
            return Err(MasterKeyError::BadLength {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        Ok(Self {
            key,
            path: path.to_path_buf(),
        })
    }

    fn create(path: &Path) -> Result<Self, MasterKeyError> {
        let err = |e: std::io::Error| MasterKeyError::Create {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        let key = super::random_key();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(key.as_ref()).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(Self {
            key,
            path: path.to_path_buf(),
        })
    }

    /// Build from raw bytes (tests, key rotation).
    pub fn from_bytes(key: Key256, path: PathBuf) -> Self {
        Self { key, path }
    }

    /// Path the key was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw key bytes for the keyring (crate-internal).
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// A public identifier of this key (16 hex chars): the first 8 bytes of
    /// HMAC-SHA256(KEK, "flowguard/kek-id/v1"). Safe to show and log; reveals nothing of the key.
    pub fn kek_id(&self) -> String {
        match <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()) {
            Ok(mut mac) => {
                mac.update(b"flowguard/kek-id/v1");
                hex::encode(&mac.finalize().into_bytes()[..8])
            }
            Err(_) => String::new(),
        }
    }

    /// Whether two keys are the same key (constant time).
    pub fn same_key(&self, other: &MasterKey) -> bool {
        super::ct_eq(self.key.as_ref(), other.key.as_ref())
    }

    /// Write this key to `path` atomically and durably (a 0600 temporary file in the same
    /// directory, fsynced, renamed over `path`, directory fsynced), so a crash leaves either the
    /// old file or the new one, never a partial key.
    pub fn install_at(&self, path: &Path) -> Result<(), MasterKeyError> {
        let err = |e: std::io::Error| MasterKeyError::Create {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let tmp = dir.join(format!(
            ".{}.new",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "master.key".into())
        ));
        let _ = std::fs::remove_file(&tmp);
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(self.key.as_ref()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    /// The catalog's SQLCipher raw key: HMAC-SHA256(KEK, "flowguard/catalog-db-key/v1")
    /// (a KDF in counter-less single-block form, NIST SP 800-108 style).
    pub fn catalog_db_key(&self) -> Key256 {
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        // HMAC accepts keys of any length; new_from_slice cannot fail here.
        if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()) {
            mac.update(b"flowguard/catalog-db-key/v1");
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_and_reloads() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys/master.key");
        let k = MasterKey::load_or_create(&p, false).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let k2 = MasterKey::load_or_create(&p, true).unwrap();
        assert_eq!(k.bytes(), k2.bytes());
    }

    #[test]
    fn kek_id_and_install() {
        let d = tempfile::tempdir().unwrap();
        let a = MasterKey::from_bytes(crate::crypto::random_key(), "a".into());
        let b = MasterKey::from_bytes(crate::crypto::random_key(), "b".into());
        assert_eq!(a.kek_id().len(), 16);
        assert_ne!(a.kek_id(), b.kek_id());
        assert!(!a.same_key(&b));
        let p = d.path().join("master.key");
        a.install_at(&p).unwrap();
        b.install_at(&p).unwrap();
        let got = MasterKey::load(&p).unwrap();
        assert!(got.same_key(&b));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn refusals() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("master.key");
        assert!(matches!(
            MasterKey::load_or_create(&p, true),
            Err(MasterKeyError::Missing(_))
        ));
        std::fs::write(&p, [1u8; 32]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load(&p),
            Err(MasterKeyError::TooOpen { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, [1u8; 31]).unwrap();
        assert!(matches!(
            MasterKey::load(&p),
            Err(MasterKeyError::BadLength { .. })
        ));
    }
}
