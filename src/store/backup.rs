//! Backup snapshots of a store (catalog or tenant) and the checks that prove a copy good. Owns
//! no table: it reads every table of the store it snapshots (row counts) and the `screenshots`
//! and `audit` tables of a copy.
//!
//! A snapshot is taken on a **dedicated** connection (never the cached one a server's requests
//! use), inside one read transaction: `ATTACH '<copy>' AS bk KEY "x'…'"`, the row count of every
//! table, then `SELECT sqlcipher_export('bk')`, then `COMMIT`. The export therefore holds exactly
//! the rows the counts saw, and every write committed before the transaction began, while writers
//! on other connections continue (WAL). This is SQLCipher's documented way to copy an encrypted
//! database (sqlcipher/sqlcipher#393, #338); the online backup API refuses encrypted pairs and
//! restarts under writes, and a file copy of a live WAL database is not a consistent snapshot.
//! The copy is written in rollback-journal mode, so it is one self-contained file that can be
//! opened read-only later without creating `-wal`/`-shm` files beside it.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{StoreError, StoreResult};
use crate::crypto::Key256;

/// SQLCipher settings of a store, as recorded in a backup manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CipherSettings {
    /// `PRAGMA cipher_version` of the library that wrote the copy.
    pub cipher_version: String,
    /// `PRAGMA cipher_page_size` in bytes.
    pub page_size: i64,
    /// `PRAGMA cipher_hmac_algorithm`.
    pub hmac_algorithm: String,
    /// `PRAGMA cipher_kdf_algorithm` (unused with a raw key, recorded for completeness).
    pub kdf_algorithm: String,
    /// How the database key is given: always a raw 256-bit key (`x'…'`), no passphrase.
    pub key_kind: String,
}

/// What one snapshot saw: the schema version (`user_version`) and the rows of every table.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `PRAGMA user_version` of the source.
    pub schema_version: i64,
    /// Rows per table (every table in `sqlite_master`, internal `sqlite_%` tables excluded).
    pub tables: BTreeMap<String, i64>,
    /// Cipher settings of the source connection.
    pub cipher: CipherSettings,
}

fn key_sql(key: &Key256) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(format!("\"x'{}'\"", hex::encode(key.as_ref())))
}

fn quote_path(p: &Path) -> StoreResult<String> {
    let s = p.to_str().ok_or_else(|| {
        StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path is not UTF-8",
        ))
    })?;
    Ok(format!("'{}'", s.replace('\'', "''")))
}

fn prove_key(conn: &Connection, path: &Path) -> StoreResult<()> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|_| ())
    .map_err(|e| match StoreError::from(e) {
        StoreError::Busy => StoreError::Busy,
        _ => StoreError::WrongKey(path.to_path_buf()),
    })
}

/// Open a **live** store file as a snapshot source: keyed with `key`, no migrations, no pragma
/// that writes, not shared with any other task. Errors: [`StoreError::WrongKey`] when `key` does
/// not open it.
pub fn open_source(path: &Path, key: &Key256, busy_ms: u64) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let _ = conn.query_row("PRAGMA cipher_log_level = NONE", [], |_| Ok(()));
    conn.execute_batch(&format!("PRAGMA key = {};", key_sql(key).as_str()))?;
    prove_key(&conn, path)?;
    conn.busy_timeout(std::time::Duration::from_millis(busy_ms))?;
    Ok(conn)
}

/// Open a **copy** (a backup file) read-only with `key`: nothing beside it is created or changed.
/// Errors: [`StoreError::WrongKey`] when `key` does not open it (or it is not a database).
pub fn open_copy(path: &Path, key: &Key256) -> StoreResult<Connection> {
    if !path.is_file() {
        return Err(StoreError::NotFound);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let _ = conn.query_row("PRAGMA cipher_log_level = NONE", [], |_| Ok(()));
    conn.execute_batch(&format!("PRAGMA key = {};", key_sql(key).as_str()))?;
    prove_key(&conn, path)?;
    Ok(conn)
}

fn pragma_text(c: &Connection, sql: &str) -> String {
    c.query_row(sql, [], |r| r.get::<_, String>(0))
        .optional()
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The cipher settings of an open, keyed connection.
pub fn cipher_settings(c: &Connection) -> CipherSettings {
    CipherSettings {
        cipher_version: pragma_text(c, "PRAGMA cipher_version"),
        page_size: c
            .query_row("PRAGMA cipher_page_size", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0),
        hmac_algorithm: pragma_text(c, "PRAGMA cipher_hmac_algorithm"),
        kdf_algorithm: pragma_text(c, "PRAGMA cipher_kdf_algorithm"),
        key_kind: "raw 256-bit key".into(),
    }
}

/// Rows per table of `schema` (`main` or an attached name).
pub fn table_counts(c: &Connection) -> StoreResult<BTreeMap<String, i64>> {
    let names: Vec<String> = {
        let mut s = c.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let rows = s.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = BTreeMap::new();
    for n in names {
        let q = format!("SELECT count(*) FROM \"{}\"", n.replace('"', "\"\""));
        out.insert(n, c.query_row(&q, [], |r| r.get::<_, i64>(0))?);
    }
    Ok(out)
}

/// `PRAGMA user_version`.
pub fn schema_version(c: &Connection) -> StoreResult<i64> {
    Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Export the database behind `src` into the new file `dest`, encrypted with `dest_key`, as
/// one consistent snapshot (see the module doc). `dest` must not exist. Returns what the
/// snapshot saw; the caller proves the copy with [`check_copy`].
pub fn export(src: &Connection, dest: &Path, dest_key: &Key256) -> StoreResult<Snapshot> {
    if dest.exists() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists", dest.display()),
        )));
    }
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)?;
    }
    let attach = zeroize::Zeroizing::new(format!(
        "ATTACH DATABASE {} AS bk KEY {};",
        quote_path(dest)?,
        key_sql(dest_key).as_str()
    ));
    src.execute_batch(&attach)?;
    let res = (|| -> StoreResult<Snapshot> {
        src.execute_batch("BEGIN DEFERRED;")?;
        let inner = (|| -> StoreResult<Snapshot> {
            // The first read starts the read transaction: counts and export see one snapshot.
            let tables = table_counts(src)?;
            let schema_version = schema_version(src)?;
            let cipher = cipher_settings(src);
            src.query_row("SELECT sqlcipher_export('bk')", [], |_| Ok(()))?;
            src.execute_batch(&format!("PRAGMA bk.user_version = {schema_version};"))?;
            Ok(Snapshot {
                schema_version,
                tables,
                cipher,
            })
        })();
        match inner {
            Ok(s) => {
                src.execute_batch("COMMIT;")?;
                Ok(s)
            }
            Err(e) => {
                let _ = src.execute_batch("ROLLBACK;");
                Err(e)
            }
        }
    })();
    let detach = src.execute_batch("DETACH DATABASE bk;");
    let snap = res?;
    detach?;
    // Make the copy durable before anyone calls it complete.
    std::fs::File::open(dest)?.sync_all()?;
    Ok(snap)
}

/// Problems SQLCipher's and SQLite's integrity checks report for an open copy (empty: good).
/// `PRAGMA cipher_integrity_check` verifies every page's HMAC; `PRAGMA integrity_check` the
/// b-trees.
pub fn integrity_problems(c: &Connection) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    {
        let mut s = c.prepare("PRAGMA cipher_integrity_check")?;
        let rows = s.query_map([], |r| r.get::<_, String>(0))?;
        for r in rows {
            out.push(format!("cipher_integrity_check: {}", r?));
        }
    }
    let mut s = c.prepare("PRAGMA integrity_check")?;
    let rows = s.query_map([], |r| r.get::<_, String>(0))?;
    for r in rows {
        let r = r?;
        if r != "ok" {
            out.push(format!("integrity_check: {r}"));
        }
    }
    Ok(out)
}

/// Object ids of every screenshot row in a tenant store (copy or live).
pub fn screenshot_ids(c: &Connection) -> StoreResult<Vec<String>> {
    let mut s = c.prepare("SELECT id FROM screenshots ORDER BY id")?;
    let rows = s.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_encrypted_consistent_and_checks_clean() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::crypto::random_key();
        let path = dir.path().join("t.db");
        let live = super::super::open_tenant_schema_for_bench(&path, Some(&key)).unwrap();
        live.execute_batch(
            "INSERT INTO users (id, email, role, created_at) VALUES ('u1', 'a@b.c', 'owner', 0)",
        )
        .ok();
        let src = open_source(&path, &key, 1000).unwrap();
        let out = dir.path().join("copy.db");
        let other = crate::crypto::random_key();
        let snap = export(&src, &out, &other).unwrap();
        assert!(snap.schema_version > 0);
        assert!(snap.tables.contains_key("users"));
        // Encrypted under the copy's key, not the source's, and not plain SQLite.
        assert!(matches!(
            open_copy(&out, &key),
            Err(StoreError::WrongKey(_))
        ));
        let raw = std::fs::read(&out).unwrap();
        assert!(!raw.starts_with(b"SQLite format 3"));
        let c = open_copy(&out, &other).unwrap();
        assert_eq!(integrity_problems(&c).unwrap(), Vec::<String>::new());
        assert_eq!(table_counts(&c).unwrap(), snap.tables);
        assert_eq!(schema_version(&c).unwrap(), snap.schema_version);
        // No -wal / -shm beside the copy after a read-only open.
        drop(c);
        assert!(!dir.path().join("copy.db-wal").exists());
    }
}
