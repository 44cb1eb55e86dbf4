//! Backup snapshots of a store (catalog or tenant) and the checks that prove a copy good; owns
//! the catalog's `backups` table (backups started from the API or the scheduled job). It reads
//! every table of the store it snapshots (row counts) and the `screenshots` and `audit` tables
//! of a copy.
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

/// In a backup's own catalog **copy** (before its manifest is written and hashed), record the
/// backup that is taking it as `done` in `dir`: the snapshot was read while that row said
/// `running`, and a deployment restored from the backup would otherwise list its own source
/// backup as interrupted (review 3, F2). Its size and manifest hash stay unset: they depend on
/// this very file. Opens the copy read-write with `key` and closes it (no `-wal`/`-journal` file
/// is left). Returns whether the row was there (a `--tenant`… backup always has it; a backup
/// without a catalog row, e.g. the benchmark's, has none).
pub fn mark_own_backup_done(
    path: &Path,
    key: &Key256,
    id: &str,
    dir: &str,
    duration_ms: i64,
    now: &str,
) -> StoreResult<bool> {
    if !path.is_file() {
        return Err(StoreError::NotFound);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let _ = conn.query_row("PRAGMA cipher_log_level = NONE", [], |_| Ok(()));
    conn.execute_batch(&format!("PRAGMA key = {};", key_sql(key).as_str()))?;
    prove_key(&conn, path)?;
    let n = conn.execute(
        "UPDATE backups SET status = 'done', dir = ?2, duration_ms = ?3, finished_at = ?4,
                error = NULL
          WHERE id = ?1",
        rusqlite::params![id, dir, duration_ms, now],
    )?;
    conn.close().map_err(|(_, e)| StoreError::from(e))?;
    Ok(n == 1)
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
    let snapshot_span = tracing::debug_span!("backup.export.snapshot").entered();
    let res = (|| -> StoreResult<Snapshot> {
        src.execute_batch("BEGIN DEFERRED;")?;
        let inner = (|| -> StoreResult<Snapshot> {
            // The first read starts the read transaction: counts and export see one snapshot.
            let tables = table_counts(src)?;
            // Test builds: widen the window in which this read transaction is open.
            crate::fault::pause("backup:in_snapshot");
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
    drop(snapshot_span);
    let snap = res?;
    detach?;
    let _checkpoint = tracing::debug_span!("backup.export.checkpoint").entered();
    // The snapshot's read transaction kept checkpoints from resetting the WAL while writers
    // went on: move it into the file and truncate it now.
    if !super::checkpoint_truncate(src)? {
        tracing::warn!("WAL not truncated after the backup snapshot: another reader is active");
    }
    drop(_checkpoint);
    // Make the copy durable before anyone calls it complete.
    let _fsync = tracing::debug_span!("backup.export.fsync").entered();
    std::fs::File::open(dest)?.sync_all()?;
    Ok(snap)
}

/// Problems SQLCipher's and SQLite's integrity checks report for an open copy (empty: good):
/// [`cipher_integrity_problems`] then [`btree_integrity_problems`].
pub fn integrity_problems(c: &Connection) -> StoreResult<Vec<String>> {
    let mut out = cipher_integrity_problems(c)?;
    out.extend(btree_integrity_problems(c)?);
    Ok(out)
}

/// Problems `PRAGMA cipher_integrity_check` reports (SQLCipher: the HMAC of every page of the
/// file, in use or not), each prefixed `cipher_integrity_check: `; empty: good.
pub fn cipher_integrity_problems(c: &Connection) -> StoreResult<Vec<String>> {
    let _span = tracing::debug_span!("check.cipher_integrity_check").entered();
    let mut s = c.prepare("PRAGMA cipher_integrity_check")?;
    let rows = s.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|r| Ok(format!("cipher_integrity_check: {}", r?)))
        .collect()
}

/// Most page cache [`btree_integrity_problems`] gives `integrity_check`: 256 MiB.
pub const INTEGRITY_CHECK_CACHE_MAX_BYTES: i64 = 256 << 20;

/// Problems `PRAGMA integrity_check` reports (SQLite: every b-tree, index against table, pages
/// never used; each page read is decrypted and its HMAC checked), each prefixed
/// `integrity_check: `; empty: good.
///
/// For the check the connection's page cache is raised to the size of the database, at most
/// [`INTEGRITY_CHECK_CACHE_MAX_BYTES`], and set back afterwards: with a small cache the check
/// reads (decrypts and HMAC-checks) many pages more than once (issue-19 benchmark, 200 MB
/// store: 1.33 s with the default cache, 1.0 s with one that holds the file).
pub fn btree_integrity_problems(c: &Connection) -> StoreResult<Vec<String>> {
    let _span = tracing::debug_span!("check.integrity_check").entered();
    let before: i64 = c.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    // SQLCipher answers `page_size` itself, as text (`cipher_page_size`).
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| {
        let v = r.get_ref(0)?;
        Ok(v.as_i64()
            .ok()
            .or_else(|| v.as_str().ok().and_then(|t| t.trim().parse().ok()))
            .unwrap_or(4096))
    })?;
    let want_kib = pages
        .saturating_mul(page_size)
        .min(INTEGRITY_CHECK_CACHE_MAX_BYTES)
        / 1024;
    // `cache_size` < 0 is KiB, > 0 pages.
    let before_kib = if before < 0 {
        -before
    } else {
        before.saturating_mul(page_size) / 1024
    };
    let raised = want_kib > before_kib;
    if raised {
        c.execute_batch(&format!("PRAGMA cache_size = -{want_kib};"))?;
    }
    let res = (|| -> StoreResult<Vec<String>> {
        let mut s = c.prepare("PRAGMA integrity_check")?;
        let rows = s.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            let r = r?;
            if r != "ok" {
                out.push(format!("integrity_check: {r}"));
            }
        }
        Ok(out)
    })();
    if raised {
        c.execute_batch(&format!("PRAGMA cache_size = {before};"))?;
    }
    res
}

/// Object ids of every screenshot row in a tenant store (copy or live).
pub fn screenshot_ids(c: &Connection) -> StoreResult<Vec<String>> {
    let mut s = c.prepare("SELECT id FROM screenshots ORDER BY id")?;
    let rows = s.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A row of the catalog's `backups` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRow {
    /// Backup id (random).
    pub id: String,
    /// `api`, `schedule` or `cli` (`flowguard backup create`).
    pub trigger: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    /// The complete backup directory (when done).
    pub dir: Option<String>,
    /// Total bytes of its files (when done).
    pub bytes: Option<i64>,
    /// Wall time in milliseconds (when finished).
    pub duration_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Lowercase hex SHA-256 of its `manifest.json` (when done).
    pub manifest_sha256: Option<String>,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    pub finished_at: Option<String>,
}

const BACKUP_COLS: &str =
    "id, trigger, status, dir, bytes, duration_ms, error, manifest_sha256, started_at, finished_at";

fn backup_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        id: r.get(0)?,
        trigger: r.get(1)?,
        status: r.get(2)?,
        dir: r.get(3)?,
        bytes: r.get(4)?,
        duration_ms: r.get(5)?,
        error: r.get(6)?,
        manifest_sha256: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
    })
}

/// Record a new `running` backup unless one is running already (one statement, so two callers
/// cannot both start one). `false` when another backup is running.
pub fn start_backup(c: &Connection, id: &str, trigger: &str, now: &str) -> StoreResult<bool> {
    let n = c.execute(
        "INSERT INTO backups (id, trigger, status, started_at)
         SELECT ?1, ?2, 'running', ?3
          WHERE NOT EXISTS (SELECT 1 FROM backups WHERE status = 'running')",
        rusqlite::params![id, trigger, now],
    )?;
    Ok(n == 1)
}

/// Record a new `running` backup whatever else runs (`flowguard backup create`: a CLI backup
/// may run beside an API or scheduled one; their directory names never collide).
pub fn insert_backup(c: &Connection, id: &str, trigger: &str, now: &str) -> StoreResult<()> {
    c.execute(
        "INSERT INTO backups (id, trigger, status, started_at) VALUES (?1, ?2, 'running', ?3)",
        rusqlite::params![id, trigger, now],
    )?;
    Ok(())
}

/// Ids of the backups recorded as `running`.
pub fn running_backup_ids(c: &Connection) -> StoreResult<Vec<String>> {
    let mut s = c.prepare("SELECT id FROM backups WHERE status = 'running'")?;
    let rows = s.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Mark the running backup `id` `failed` with `error` (its process ended without saying how:
/// no duration is recorded).
pub fn fail_backup_interrupted(
    c: &Connection,
    id: &str,
    error: &str,
    now: &str,
) -> StoreResult<usize> {
    Ok(c.execute(
        "UPDATE backups SET status = 'failed', error = ?2, finished_at = ?3
          WHERE id = ?1 AND status = 'running'",
        rusqlite::params![id, error, now],
    )?)
}

/// Mark a running backup `done` with what it wrote.
pub fn finish_backup_done(
    c: &Connection,
    id: &str,
    dir: &str,
    bytes: i64,
    duration_ms: i64,
    manifest_sha256: &str,
    now: &str,
) -> StoreResult<()> {
    c.execute(
        "UPDATE backups SET status = 'done', dir = ?2, bytes = ?3, duration_ms = ?4,
                manifest_sha256 = ?5, finished_at = ?6
          WHERE id = ?1 AND status = 'running'",
        rusqlite::params![id, dir, bytes, duration_ms, manifest_sha256, now],
    )?;
    Ok(())
}

/// Mark a running backup `failed` with the error.
pub fn finish_backup_failed(
    c: &Connection,
    id: &str,
    error: &str,
    duration_ms: i64,
    now: &str,
) -> StoreResult<()> {
    c.execute(
        "UPDATE backups SET status = 'failed', error = ?2, duration_ms = ?3, finished_at = ?4
          WHERE id = ?1 AND status = 'running'",
        rusqlite::params![id, error, duration_ms, now],
    )?;
    Ok(())
}

/// Mark every `running` backup `failed` (called at start: a backup cannot survive a restart).
/// Returns how many.
pub fn fail_interrupted_backups(c: &Connection, now: &str) -> StoreResult<usize> {
    Ok(c.execute(
        "UPDATE backups SET status = 'failed', error = 'interrupted by a restart', finished_at = ?1
          WHERE status = 'running'",
        [now],
    )?)
}

/// One backup by id.
pub fn find_backup(c: &Connection, id: &str) -> StoreResult<Option<BackupRow>> {
    Ok(c.query_row(
        &format!("SELECT {BACKUP_COLS} FROM backups WHERE id = ?1"),
        [id],
        backup_from_row,
    )
    .optional()?)
}

/// Every recorded backup, newest first.
pub fn list_backups(c: &Connection) -> StoreResult<Vec<BackupRow>> {
    let mut s = c.prepare(&format!(
        "SELECT {BACKUP_COLS} FROM backups ORDER BY started_at DESC, rowid DESC"
    ))?;
    let rows = s.query_map([], backup_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forget the row of a backup directory that was deleted (pruned).
pub fn forget_backup_dir(c: &Connection, dir: &str) -> StoreResult<usize> {
    Ok(c.execute("DELETE FROM backups WHERE dir = ?1", [dir])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backup_runs_at_a_time_and_a_restart_fails_the_running_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::crypto::random_key();
        let c = super::super::open_encrypted(
            &dir.path().join("catalog.db"),
            &key,
            true,
            1000,
            &crate::store::migrations::catalog(),
        )
        .unwrap();
        let t0 = "2026-01-01T00:00:00Z";
        assert!(start_backup(&c, "a", "api", t0).unwrap());
        assert!(!start_backup(&c, "b", "schedule", t0).unwrap());
        finish_backup_done(&c, "a", "/x/flowguard-backup-1", 10, 5, "ab", t0).unwrap();
        assert!(start_backup(&c, "b", "schedule", "2026-01-02T00:00:00Z").unwrap());
        assert_eq!(fail_interrupted_backups(&c, t0).unwrap(), 1);
        let rows = list_backups(&c).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].id.as_str(), rows[0].status.as_str()),
            ("b", "failed")
        );
        assert_eq!(rows[0].error.as_deref(), Some("interrupted by a restart"));
        assert_eq!(
            (rows[1].id.as_str(), rows[1].status.as_str()),
            ("a", "done")
        );
        assert_eq!(rows[1].bytes, Some(10));
        assert_eq!(forget_backup_dir(&c, "/x/flowguard-backup-1").unwrap(), 1);
        assert!(find_backup(&c, "a").unwrap().is_none());
    }

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
