//! Storage: the encrypted catalog (`catalog.db`) and one encrypted store per tenant
//! (`tenants/<tenant_id>.db`), both SQLCipher through rusqlite. All SQL lives under this module.
//!
//! Every connection runs, in order: `PRAGMA cipher_log_level = NONE`, `PRAGMA key = "x'…'"`
//! (raw 256-bit key, so no PBKDF2 per open), a read that proves the key, then `busy_timeout`,
//! `journal_mode = WAL`, `foreign_keys = ON`, `synchronous = NORMAL`, and the embedded
//! migrations (rusqlite_migration, version in `user_version`; a store newer than this binary is
//! refused, never downgraded). Each store has one write connection behind a mutex, so writes
//! are serialised in-process; write transactions use `BEGIN IMMEDIATE`. A tenant store may also
//! have one read connection (`query_only`, [`open_reader`]) for the bounded per-request reads
//! ([`pool`] module doc, issue 25). Work runs off the async
//! executor ([`run`]) except short, bounded per-request reads ([`read`], [`try_read_now`]), which
//! run inline when the connection is free and never wait on the executor for a lock.
//!
//! Layout: this file holds the shared plumbing (opening, errors, [`run`]/[`read`], [`write_tx`],
//! and the row types two files share); [`pool`] the tenant-store LRU; `migrations` the schema;
//! [`audit`] the `audit` table of both stores; then one file per aggregate, each owning the
//! tables its module doc names — catalog: [`catalog`]; backup snapshots and copy checks
//! (no table of its own): [`backup`]; tenant store: [`users`], [`sessions`],
//! [`applications`], [`tokens`], [`flows`], [`runs`], [`screenshots`], [`variables`],
//! [`webhooks`], [`fence`], [`ai`], [`ldap`], [`oidc`], [`scim`], [`integrations`].
//!
//! Imports between store files (nothing else, so no two files import each other; checked by the
//! unit test `store_files_import_each_other_only_along_the_documented_map` below):
//! - any file → items of this module, [`audit`] (append inside the caller's transaction),
//!   `migrations`;
//! - [`pool`] → [`catalog`] (tenant admission and the keys that open a tenant store);
//! - [`runs`], [`applications`] → [`cascade`]: deleting runs with their steps and screenshot rows
//!   (retention, application deletion) is one function there, so neither imports the other;
//! - [`screenshots`], [`variables`], [`ldap`], [`oidc`], [`ai`], [`integrations`] → [`fence`]: the DEK-fence check inside
//!   their write transaction, for every sealed value they store ([`ShotRow`] is defined here so
//!   that [`fence`] needs nothing back);
//! - [`ldap`], [`oidc`], [`scim`] → [`users`]: directory, single sign-on and SCIM provisioning find and create members and
//!   apply the active-user limit;
//! - [`catalog`] → [`sessions`]: [`sessions::SessionRow`] is the row of both `sessions` and the
//!   catalog's `platform_sessions`.

pub mod ai;
pub mod applications;
pub mod audit;
pub mod backup;
pub mod cascade;
pub mod catalog;
pub mod fence;
pub mod flows;
pub mod integrations;
pub mod ldap;
mod migrations;
pub mod oidc;
pub mod pool;
pub mod runs;
pub mod scim;
pub mod screenshots;
pub mod sessions;
pub mod tokens;
pub mod users;
pub mod variables;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::crypto::Key256;

pub use catalog::Catalog;
pub use pool::TenantStores;

/// The connection a store function hands to the closure it runs ([`Catalog::run`],
/// [`TenantStores::run`], …), inside which services call store functions. Services name this
/// alias, never `rusqlite`: the connection's lifetime and locking stay the store's.
pub type Conn = Connection;

/// A store connection shared between tasks.
pub type Db = Arc<Mutex<Connection>>;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not open this file (wrong key, or not a SQLCipher store).
    #[error("store {0} cannot be opened with this key")]
    WrongKey(PathBuf),
    /// Contention longer than the busy timeout.
    #[error("database busy")]
    Busy,
    /// A row that must exist does not.
    #[error("not found")]
    NotFound,
    /// A store rule refused the write (the service maps each kind to its own code).
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// A stored value no longer has the shape this binary reads.
    #[error("migration: {0}")]
    Migration(String),
    /// The store cannot be used by this binary: its schema version is newer than this binary's,
    /// or migrating it failed (rolled back: the store is unchanged at its old version). The text
    /// names the file and both versions; the store stays closed until a restart.
    #[error("schema: {0}")]
    Schema(String),
    /// Key material could not be unwrapped.
    #[error("key material: {0}")]
    Key(String),
    /// Any other SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// Filesystem error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The volume is full (`SQLITE_FULL`, or `ENOSPC`/`EDQUOT` from SQLite's own writes): the
    /// write was rolled back; nothing committed before is affected.
    #[error("disk full")]
    Full,
    /// The blocking task failed.
    #[error("task: {0}")]
    Task(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy,
                ErrorCode::DiskFull => StoreError::Full,
                ErrorCode::ConstraintViolation
                    if crate::fault::is_injected_disk_full(f.extended_code) =>
                {
                    StoreError::Full
                }
                ErrorCode::ConstraintViolation => {
                    StoreError::Conflict(Conflict::Constraint(msg.clone().unwrap_or_default()))
                }
                _ => StoreError::Sqlite(e),
            },
            _ => StoreError::Sqlite(e),
        }
    }
}

/// Whether a file-system error means the volume (or the user's quota) is full: `ENOSPC`,
/// `EDQUOT`. Screenshot files and other files the appliance writes map to
/// `insufficient_storage` through this, like [`StoreError::Full`].
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(n) if n == rustix::io::Errno::NOSPC.raw_os_error()
            || n == rustix::io::Errno::DQUOT.raw_os_error())
}

/// Why a store refused a write: typed, so services match on the kind, never on text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A SQLite constraint (unique index, foreign key, check) refused the row; the text is
    /// SQLite's (for logs only).
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The license's `max_users` is reached.
    #[error("user limit reached")]
    UserLimit,
    /// The license's `max_applications` is reached.
    #[error("application limit reached")]
    PlanLimit,
    /// The change would leave the tenant without an active Owner.
    #[error("last owner")]
    LastOwner,
    /// The row changed since the caller read it (SCIM `If-Match` / version check).
    #[error("version mismatch")]
    Version,
    /// The run is in state `.0`, which does not allow the change.
    #[error("the run is {0}")]
    Transition(String),
    /// A sealed value was sealed under a DEK version below the rotation fence: seal again.
    #[error("key rotated")]
    KeyRotated,
    /// The tenant already has a pending key version (a rotation is running).
    #[error("rotation pending")]
    RotationPending,
    /// A new key version is not above every existing one.
    #[error("stale key version")]
    StaleVersion,
    /// The key version does not exist.
    #[error("no such key version")]
    NoSuchVersion,
    /// The database key version to retire against is not the active one.
    #[error("database key not active")]
    DbKeyNotActive,
    /// A key with material has no staging for the new master key.
    #[error("unstaged keys")]
    UnstagedKeys,
    /// A tenant store file already exists.
    #[error("store file exists")]
    StoreExists,
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Screenshot metadata (a row of the tenant store's `screenshots` table, see `screenshots.rs`).
/// Defined here rather than in `screenshots.rs` because the rotation fence (`fence.rs`) reads the
/// same rows and `screenshots.rs` calls the fence: keeping the type in either file would make the
/// two import each other.
#[derive(Debug, Clone)]
pub struct ShotRow {
    /// Object id (file name).
    pub id: String,
    /// Run.
    pub run_id: String,
    /// Step index.
    pub step_index: i64,
    /// DEK version that sealed the file.
    pub key_version: i64,
}

/// Open (creating when `create`) a SQLCipher file with a raw key, prove the key, set pragmas and
/// run `migrations`.
pub fn open_encrypted(
    path: &Path,
    key: &Key256,
    create: bool,
    busy_timeout_ms: u64,
    migrations: &rusqlite_migration::Migrations<'static>,
) -> StoreResult<Connection> {
    open_with(path, Some(key), create, busy_timeout_ms, migrations)
}

/// Benchmark seam (issue 12, P1), never called by the product: open (creating when missing) a
/// store with the **tenant schema** at `path`, through the same code as [`open_encrypted`]. With
/// `Some(key)` this is exactly the production open; with `None` the `PRAGMA key` step is skipped
/// and the file is plain SQLite with the same pragmas and migrations — the unencrypted anchor the
/// SQLCipher cost is measured against (`benches/hot_paths.rs`). Every production path opens
/// through [`open_encrypted`] (or the catalog/tenant wrappers), which always keys; the one
/// exception is the server-level benchmark anchor of issue 25 (P8): with the non-default setting
/// `store.bench_plaintext_tenant_stores = true`, [`TenantStores`] creates and opens tenant
/// stores through the same code without a key (see `TenantStores::with_plaintext_for_bench`).
///
/// Errors: as [`open_encrypted`].
#[doc(hidden)]
pub fn open_tenant_schema_for_bench(path: &Path, key: Option<&Key256>) -> StoreResult<Connection> {
    open_with(path, key, true, 5_000, &migrations::tenant())
}

fn open_with(
    path: &Path,
    key: Option<&Key256>,
    create: bool,
    busy_timeout_ms: u64,
    migrations: &rusqlite_migration::Migrations<'static>,
) -> StoreResult<Connection> {
    if READ_ONLY.load(Ordering::Relaxed) {
        return open_read_only(path, key, busy_timeout_ms, migrations);
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
        // Create the file 0600 ourselves: SQLite gives its -wal/-shm files the same mode, so
        // no store file depends on the process umask.
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
        }
    }
    if !create {
        refuse_empty(path)?;
    }
    let mut conn = Connection::open_with_flags(path, flags)?;
    key_and_prove(&conn, path, key, busy_timeout_ms)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    // Bound the WAL file: after a checkpoint resets the log, SQLite truncates it to this size
    // (without it the file keeps the largest size it ever reached).
    conn.query_row(
        &format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}"),
        [],
        |_| Ok(()),
    )?;
    // Migrations run with foreign keys off (SQLite's procedure for rebuilding a table that
    // others reference: a DROP would otherwise cascade into the children), then are checked.
    // Off explicitly: the bundled SQLCipher is built with `SQLITE_DEFAULT_FOREIGN_KEYS=1`, so a
    // new connection starts with them ON (issue 19: the issue-22 runs rebuild deleted every step
    // and screenshot row of an upgraded store before this line).
    conn.execute_batch("PRAGMA foreign_keys = OFF;")?;
    // The foreign-key check reads every row of every referencing table (and looks up its
    // parent), so it runs only after a migration ran — never on a plain open: at every open it
    // cost ~150 ms on a store of 5,000 runs and grew with the store (issue 25, P9 tenants: it
    // was most of the time of a request that reopens an evicted store).
    if migrate(&mut conn, path, migrations)? {
        let broken: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap_or(0);
        if broken > 0 {
            tracing::warn!(path = %path.display(), rows = broken, "rows violate a foreign key after migrating");
        }
    }
    conn.execute_batch("PRAGMA foreign_keys = ON;")?;
    crate::fault::disk_full_hook(&conn);
    Ok(conn)
}

/// Open a **read connection** on an existing store that a write connection of this process has
/// already opened (and so migrated): same key step and key proof as [`open_encrypted`], then
/// `busy_timeout`, the statement cache and `PRAGMA query_only = ON` (any write through it fails
/// with SQLite's read-only error). No migrations, no `journal_mode` change (WAL is recorded in
/// the file). `key = None` only for the benchmark anchor's plain stores
/// (`store.bench_plaintext_tenant_stores`).
///
/// Errors: [`StoreError::WrongKey`] when `key` does not open the file, [`StoreError::Schema`]
/// for an empty file, SQLite errors otherwise.
pub fn open_reader(
    path: &Path,
    key: Option<&Key256>,
    busy_timeout_ms: u64,
) -> StoreResult<Connection> {
    refuse_empty(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    key_and_prove(&conn, path, key, busy_timeout_ms)?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    Ok(conn)
}

static READ_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Open every store from now on in this process read-only (`flowguard doctor`, a health check
/// that must write nothing): `SQLITE_OPEN_READ_ONLY`, never created, never migrated (also
/// forbids migrations, [`forbid_migrations`]), no pragma that writes. A store with a `-wal` file
/// (a server has it open, or crashed) is read through the WAL with SQLite's normal locking; a
/// store without one (no connection has it open: a stopped server closes its WAL cleanly) is
/// opened `immutable=1`, so not even the `-wal`/`-shm` files a read-only WAL connection would
/// create and leave behind are written. A server that starts while such a read runs could make
/// the read see a half-written page (a spurious integrity finding; the file is never changed).
pub fn set_read_only() {
    forbid_migrations();
    READ_ONLY.store(true, Ordering::Relaxed);
}

/// Whether [`set_read_only`] was called in this process (callers skip their bookkeeping
/// writes, e.g. the license clock's high-water mark).
pub fn is_read_only() -> bool {
    READ_ONLY.load(Ordering::Relaxed)
}

/// `file:` URI of `path` for SQLite (RFC 3986 percent-encoding of every byte but unreserved
/// characters and `/`; <https://www.sqlite.org/uri.html>).
fn file_uri(path: &Path, query: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    /// Every byte but unreserved characters (RFC 3986 §2.3) and `/`.
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "file:{}?{query}",
        percent_encoding::percent_encode(path.as_os_str().as_bytes(), KEEP)
    )
}

/// [`open_with`] in read-only mode ([`set_read_only`]).
fn open_read_only(
    path: &Path,
    key: Option<&Key256>,
    busy_timeout_ms: u64,
    migrations: &rusqlite_migration::Migrations<'static>,
) -> StoreResult<Connection> {
    if !path.is_file() {
        return Err(StoreError::NotFound);
    }
    refuse_empty(path)?;
    let query = if wal_path(path).exists() {
        "mode=ro"
    } else {
        "mode=ro&immutable=1"
    };
    let mut conn = Connection::open_with_flags(
        file_uri(path, query),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    key_and_prove(&conn, path, key, busy_timeout_ms)?;
    // Refuses (never runs) a pending migration: migrations are forbidden in this mode.
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

/// The steps every store connection runs right after it is opened, in this order (module
/// doc): quiet SQLCipher's own logging, `PRAGMA key` with the raw key (`None`: the benchmark
/// anchor's plain stores), a first read that proves the key (SQLCipher answers NotADatabase for
/// a wrong key → [`StoreError::WrongKey`]; a lock → [`StoreError::Busy`]), `busy_timeout`, and
/// room for every per-request statement in the statement cache (rusqlite's default keeps 16;
/// the run list alone has four shapes, and an agent step report uses eight).
fn key_and_prove(
    conn: &Connection,
    path: &Path,
    key: Option<&Key256>,
    busy_timeout_ms: u64,
) -> StoreResult<()> {
    let _ = conn.query_row("PRAGMA cipher_log_level = NONE", [], |_| Ok(()));
    if let Some(key) = key {
        let hexkey =
            zeroize::Zeroizing::new(format!("PRAGMA key = \"x'{}'\"", hex::encode(key.as_ref())));
        conn.execute_batch(&hexkey)?;
    }
    if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        return Err(match StoreError::from(e) {
            StoreError::Busy => StoreError::Busy,
            _ => StoreError::WrongKey(path.to_path_buf()),
        });
    }
    conn.busy_timeout(std::time::Duration::from_millis(busy_timeout_ms))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// `PRAGMA journal_size_limit` of every store, in bytes (16 MiB): a WAL that grew past it (a
/// long reader kept checkpoints from resetting it) is truncated back to it at the next reset.
pub const JOURNAL_SIZE_LIMIT_BYTES: u64 = 16 << 20;

/// The `-wal` file beside the store at `path` (`<path>-wal`).
pub fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Size in bytes of the `-wal` file of the store at `path` (0 when there is none).
pub fn wal_bytes(path: &Path) -> u64 {
    std::fs::metadata(wal_path(path))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` on `c`: copy every WAL frame into the database and truncate
/// the WAL file to zero bytes. Run after a long reader (a backup snapshot, an audit export) so
/// the WAL it kept from being reset does not stay large. Waits (busy timeout) for writers of
/// other connections; returns whether it completed (`false`: another connection still reads an
/// old snapshot, the WAL was not reset).
pub fn checkpoint_truncate(c: &Connection) -> StoreResult<bool> {
    let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}

/// Directory in the data dir holding the copy of each store taken before it is migrated
/// (`<stem>.<UTC yyyymmddThhmmss.mmmZ>.v<old schema version>.db`, the file as it was, under the
/// same key). Not part of backups: a backup holds the migrated stores.
pub const PRE_MIGRATION_DIR: &str = "pre-migration";

static PRE_MIGRATION_KEEP: AtomicUsize = AtomicUsize::new(3);

/// How many pre-migration copies of each store to keep (`store.pre_migration_copies`, default
/// 3; 0 = none are taken). Set once at start, before any store is opened.
pub fn set_pre_migration_copies(n: usize) {
    PRE_MIGRATION_KEEP.store(n, Ordering::Relaxed);
}

static MIGRATIONS_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Forbid migrating any existing store opened from now on in this process: a store below this
/// binary's schema version is refused ([`StoreError::Schema`] naming the file and both
/// versions) instead. A new store (schema version 0: `init`, a tenant created by `tenant
/// create`) is still created at this binary's version. Every host command (all but `serve`)
/// calls it first, so none upgrades a data dir an older release may still be serving (review 3,
/// F14).
pub fn forbid_migrations() {
    MIGRATIONS_ALLOWED.store(false, Ordering::Relaxed);
}

fn user_version(conn: &Connection) -> StoreResult<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Bring `conn` (the store at `path`) to this binary's schema version. All pending steps and the
/// `user_version` bump run in **one** transaction (rusqlite_migration's `to_latest`), so a
/// failing step leaves the store exactly at its old version. Before migrating a store that has
/// data, a copy of the file is kept in [`PRE_MIGRATION_DIR`]. A store whose version is above this
/// binary's is refused, never downgraded.
///
/// Errors: [`StoreError::Schema`] naming the file and both versions (newer store, or failed
/// migration); [`StoreError::Busy`] when the pre-migration copy cannot get the write lock.
/// Bring the store to the binary's schema (refusing a newer one, or any pending migration where
/// migrations are not allowed). Returns whether a migration ran.
fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &rusqlite_migration::Migrations<'static>,
) -> StoreResult<bool> {
    crate::fault::set_schema_version(conn, path);
    let label = store_label(path);
    let from = user_version(conn)?;
    let pending = migrations
        .pending_migrations(conn)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    let ours = from + i64::from(pending);
    if pending < 0 {
        let msg = format!(
            "{} has schema version {from}, written by a newer flowguard; this binary (flowguard {}) \
             has schema version {ours}: run the newer release, or restore a backup made by this release",
            label,
            env!("CARGO_PKG_VERSION")
        );
        tracing::error!(store = %path.display(), store_version = from, binary_version = ours, "store refused: written by a newer flowguard");
        return Err(StoreError::Schema(msg));
    }
    if pending == 0 {
        return Ok(false);
    }
    if from > 0 && !MIGRATIONS_ALLOWED.load(Ordering::Relaxed) {
        return Err(StoreError::Schema(format!(
            "{label} has schema version {from}, this binary (flowguard {}) has {ours}: this \
             command never migrates a store; stop the older release and copy the data dir as a \
             backup, then start `flowguard serve` to upgrade it",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if from > 0 {
        keep_pre_migration_copy(conn, path, from)?;
    }
    crate::fault::fail_migration(conn, path);
    let r = migrations.to_latest(conn);
    crate::fault::fail_migration_done(conn);
    if let Err(e) = r {
        let now = user_version(conn)?;
        tracing::error!(store = %path.display(), from, to = ours, now, error = %e, "store migration failed and was rolled back");
        return Err(StoreError::Schema(format!(
            "{}: migrating from schema version {from} to {ours} failed and was rolled back \
             (the store is unchanged at schema version {now}): {e}",
            label
        )));
    }
    tracing::info!(store = %path.display(), from, to = ours, "store migrated");
    Ok(true)
}

/// Refuse to open an existing store file that is empty (0 bytes, no WAL content: a truncated
/// file after a full disk or a bad copy). SQLite would take it for a new database and the
/// migrations would turn it into an empty store, hiding the data loss (review 3, F1/F4).
///
/// Errors: [`StoreError::Schema`] naming the file (so `serve` lists a tenant store in
/// `/readyz` as refused and never writes to it).
fn refuse_empty(path: &Path) -> StoreResult<()> {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if len(path) == Some(0) && len(&wal_path(path)).unwrap_or(0) == 0 {
        let label = store_label(path);
        tracing::error!(store = %path.display(), "store refused: the file is empty (0 bytes)");
        return Err(StoreError::Schema(format!(
            "{label} is empty (0 bytes; truncated?): it is never recreated empty; restore the \
             deployment from a backup (`flowguard restore`) or put the right file back"
        )));
    }
    Ok(())
}

/// A store's name relative to the data dir (`catalog.db`, `tenants/<id>.db`), for messages that
/// clients may see.
fn store_label(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "tenants")
    {
        format!("tenants/{name}")
    } else {
        name
    }
}

/// The data dir of a store file: `<data>/catalog.db`, `<data>/tenants/<id>.db`.
fn data_dir_of(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new("."));
    if parent.file_name().is_some_and(|n| n == "tenants") {
        parent.parent().unwrap_or(parent).to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

/// Copy the store at `path` (schema version `from`) into [`PRE_MIGRATION_DIR`] before it is
/// migrated, then delete all but the newest `store.pre_migration_copies` copies of that store.
/// The WAL is first checkpointed into the file (`TRUNCATE`), and the file is copied while this
/// connection holds the write lock, so no other process commits into the WAL meanwhile and the
/// copy is exactly the committed store.
fn keep_pre_migration_copy(conn: &Connection, path: &Path, from: i64) -> StoreResult<()> {
    let keep = PRE_MIGRATION_KEEP.load(Ordering::Relaxed);
    if keep == 0 {
        return Ok(());
    }
    let dir = data_dir_of(path).join(PRE_MIGRATION_DIR);
    private_dir(&dir)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let wal = wal_path(path);
    let mut copied = false;
    for _ in 0..3 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            continue;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let empty_wal = std::fs::metadata(&wal)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        let r = if empty_wal {
            let ts = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
            let name = format!("{stem}.{ts}.v{from}.db");
            let tmp = dir.join(format!(".{name}.partial"));
            let done = (|| -> std::io::Result<()> {
                std::fs::copy(path, &tmp)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, dir.join(&name))?;
                std::fs::File::open(&dir)?.sync_all()
            })();
            if done.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            done.map(|()| true)
        } else {
            Ok(false)
        };
        conn.execute_batch("ROLLBACK")?;
        if r? {
            copied = true;
            break;
        }
    }
    if !copied {
        return Err(StoreError::Busy);
    }
    let prefix = format!("{stem}.");
    let mut copies: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".db"))
        .collect();
    copies.sort();
    let excess = copies.len().saturating_sub(keep);
    for old in &copies[..excess] {
        std::fs::remove_file(dir.join(old))?;
    }
    tracing::info!(store = %path.display(), copy = %dir.display(), schema_version = from, "kept a copy of the store before migrating it");
    Ok(())
}

/// Create a directory (and missing parents) with mode 0700, independent of the umask's group
/// and world bits.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// What [`rekey_verified`] found after `PRAGMA rekey`.
pub enum Rekeyed {
    /// The file now opens with the new key and not with the old one; a fresh connection on the
    /// new key (use it instead of the rekeyed connection).
    Done(Connection),
    /// The file still opens with the old key only (SQLCipher's rekey reports success even when it
    /// could not start its write transaction); a fresh connection on the old key.
    NotDone(Connection),
}

/// Re-encrypt the database behind `conn` (file `path`) under `new` with SQLCipher's
/// `PRAGMA rekey` (one write transaction rewriting every page, so a crash leaves the file wholly
/// under the old or wholly under the new key), move the WAL into the file with
/// `PRAGMA wal_checkpoint(TRUNCATE)`, then **prove** the outcome with fresh connections: `new`
/// must open the file and `old` must not. `conn`'s codec state is not trusted afterwards: the
/// caller replaces it with the returned connection. If neither key opens the file the result is
/// [`StoreError::WrongKey`].
pub fn rekey_verified(
    conn: &Connection,
    path: &Path,
    old: &Key256,
    new: &Key256,
    busy_timeout_ms: u64,
    migrations: &rusqlite_migration::Migrations<'static>,
) -> StoreResult<Rekeyed> {
    let sql = zeroize::Zeroizing::new(format!(
        "PRAGMA rekey = \"x'{}'\"",
        hex::encode(new.as_ref())
    ));
    let rekey = conn.execute_batch(&sql);
    if rekey.is_ok() {
        // Copy every re-keyed page from the WAL into the file and empty the WAL.
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    let with_new = open_encrypted(path, new, false, busy_timeout_ms, migrations);
    let with_old = open_encrypted(path, old, false, busy_timeout_ms, migrations);
    match (with_new, with_old) {
        (Ok(fresh), Err(_)) => Ok(Rekeyed::Done(fresh)),
        (_, Ok(fresh)) => Ok(Rekeyed::NotDone(fresh)),
        (Err(e), Err(_)) => Err(match rekey {
            Err(r) => StoreError::from(r),
            Ok(()) => e,
        }),
    }
}

/// Run `f` with `PRAGMA synchronous = FULL` on `c` (restored to `NORMAL` after): in WAL mode the
/// commit is then fsynced before it returns, so a key-state change survives power loss, not only
/// a process crash, before the next step relies on it.
pub fn durably<R>(
    c: &mut Connection,
    f: impl FnOnce(&mut Connection) -> StoreResult<R>,
) -> StoreResult<R> {
    c.execute_batch("PRAGMA synchronous = FULL;")?;
    let r = f(c);
    let restore = c.execute_batch("PRAGMA synchronous = NORMAL;");
    let r = r?;
    restore?;
    Ok(r)
}

/// Run `f` on `db` in a blocking thread (never on the async executor).
pub async fn run<F, R>(db: &Db, f: F) -> StoreResult<R>
where
    F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
    R: Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = db.lock();
        f(&mut c)
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Longest [`try_read_now`] waits for a connection another task holds: another worker's inline
/// read holds it for tens of microseconds; anything holding it longer is a writer or a long
/// read, and the caller hops to a blocking thread instead.
pub const INLINE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_micros(500);

/// Try the short read `f` on `db` right now: `None` when the connection stays held by another
/// task for [`INLINE_LOCK_WAIT`], or SQLite reports a lock held elsewhere (the busy timeout is
/// zero for the call and restored to `busy_ms` after it) — the caller then goes off the
/// executor.
///
/// This is what lets [`read`] run on the async executor: a per-request point read touches a
/// handful of B-tree pages from SQLite's page cache or the OS cache (microseconds), while a hop
/// to a blocking thread and back costs two thread switches — about a fifth of the server's time
/// in the issue 12 P2 profile. Never use it for writes or for reads whose size the caller does
/// not bound.
pub fn try_read_now<R>(
    db: &Db,
    busy_ms: u64,
    f: &dyn Fn(&Connection) -> StoreResult<R>,
) -> Option<StoreResult<R>> {
    let c = db.try_lock_for(INLINE_LOCK_WAIT)?;
    try_read_on(&c, busy_ms, f)
}

/// [`try_read_now`] on a connection the caller already holds: `f` with a zero busy timeout
/// (restored to `busy_ms` after), `None` when SQLite reports a lock held elsewhere.
pub fn try_read_on<R>(
    c: &Connection,
    busy_ms: u64,
    f: &dyn Fn(&Connection) -> StoreResult<R>,
) -> Option<StoreResult<R>> {
    c.busy_timeout(std::time::Duration::ZERO).ok()?;
    let r = f(c);
    if let Err(e) = c.busy_timeout(std::time::Duration::from_millis(busy_ms)) {
        return Some(Err(e.into()));
    }
    match r {
        Err(StoreError::Busy) => None,
        other => Some(other),
    }
}

/// Run the short, bounded read `f` on `db`: on the calling task when the connection is free
/// ([`try_read_now`]), otherwise off the executor like [`run`] (which waits for the lock and
/// for SQLite's busy timeout).
pub async fn read<F, R>(db: &Db, busy_ms: u64, f: F) -> StoreResult<R>
where
    F: Fn(&Connection) -> StoreResult<R> + Send + 'static,
    R: Send + 'static,
{
    if let Some(r) = try_read_now(db, busy_ms, &f) {
        return r;
    }
    run(db, move |c| f(c)).await
}

/// `BEGIN IMMEDIATE` transaction (SQLite "BEGIN TRANSACTION": takes the write lock up front, so
/// a read-then-write never fails to upgrade).
pub fn write_tx(c: &mut Connection) -> StoreResult<rusqlite::Transaction<'_>> {
    Ok(c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
}

/// A write transaction that nests: [`write_tx`] on a connection outside a transaction, a
/// `SAVEPOINT` inside one (a group commit, [`pool::TenantStores::write_grouped`]). Either way
/// [`NestedTx::commit`] keeps the writes (in the enclosing transaction's outcome when nested)
/// and dropping it undoes them.
pub enum NestedTx<'a> {
    /// Outside a transaction: `BEGIN IMMEDIATE` … `COMMIT`.
    Tx(rusqlite::Transaction<'a>),
    /// Inside one: `SAVEPOINT` … `RELEASE`.
    Sp(rusqlite::Savepoint<'a>),
}

impl std::ops::Deref for NestedTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            NestedTx::Tx(t) => t,
            NestedTx::Sp(s) => s,
        }
    }
}

impl NestedTx<'_> {
    /// Commit (outside a transaction) or release the savepoint (inside one).
    pub fn commit(self) -> StoreResult<()> {
        match self {
            NestedTx::Tx(t) => t.commit()?,
            NestedTx::Sp(s) => s.commit()?,
        }
        Ok(())
    }
}

/// [`write_tx`], or a savepoint when `c` is already inside a transaction ([`NestedTx`]).
pub fn write_tx_nested(c: &mut Connection) -> StoreResult<NestedTx<'_>> {
    if c.is_autocommit() {
        Ok(NestedTx::Tx(write_tx(c)?))
    } else {
        Ok(NestedTx::Sp(c.savepoint()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uri_escapes_every_byte_but_unreserved_and_slash() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/d ir/a%b?c#\xff_-.~z.db"));
        assert_eq!(
            file_uri(p, "mode=ro"),
            "file:/d%20ir/a%25b%3Fc%23%FF_-.~z.db?mode=ro"
        );
    }

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::crypto::random_key();
        let c = open_tenant_schema_for_bench(&dir.path().join("t.db"), Some(&key)).unwrap();
        (dir, Arc::new(Mutex::new(c)))
    }

    fn busy_ms(c: &Connection) -> i64 {
        c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn inline_read_runs_when_free_and_keeps_the_busy_timeout() {
        let (_d, db) = db();
        db.lock()
            .busy_timeout(std::time::Duration::from_millis(4321))
            .unwrap();
        let n = try_read_now(&db, 4321, &|c| {
            Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0))?)
        });
        assert_eq!(n.unwrap().unwrap(), 0);
        assert_eq!(busy_ms(&db.lock()), 4321);
    }

    #[test]
    fn inline_read_gives_way_to_a_holder_instead_of_waiting() {
        let (_d, db) = db();
        let held = db.lock();
        let other = db.clone();
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let r = try_read_now(&other, 5000, &|_c| Ok(()));
            (r.is_none(), start.elapsed())
        });
        let (gave_way, waited) = t.join().unwrap();
        drop(held);
        assert!(
            gave_way,
            "a held connection must send the caller off the executor"
        );
        assert!(waited < std::time::Duration::from_secs(1), "{waited:?}");
    }

    #[test]
    fn inline_read_is_not_held_up_by_a_writer_on_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::crypto::random_key();
        let path = dir.path().join("t.db");
        let c = open_tenant_schema_for_bench(&path, Some(&key)).unwrap();
        let db: Db = Arc::new(Mutex::new(c));
        // Another process (here: connection) is in the middle of a write transaction.
        let mut other = open_tenant_schema_for_bench(&path, Some(&key)).unwrap();
        let tx = write_tx(&mut other).unwrap();
        tx.execute("UPDATE key_state SET min_dek_version = 7", [])
            .unwrap();
        let start = std::time::Instant::now();
        let r = try_read_now(&db, 5000, &|c| {
            Ok(
                c.query_row("SELECT min_dek_version FROM key_state", [], |r| {
                    r.get::<_, i64>(0)
                })?,
            )
        });
        let waited = start.elapsed();
        drop(tx);
        assert!(
            waited < std::time::Duration::from_secs(1),
            "waited {waited:?} in the busy timeout"
        );
        // WAL: the reader sees the last committed state, not the open write.
        assert_eq!(r.unwrap().unwrap(), 0);
        assert_eq!(busy_ms(&db.lock()), 5000);
    }

    /// The store files another store file may import (besides this module, `audit` and
    /// `migrations`, which every file may use) — the map in the module doc.
    const ALLOWED: &[(&str, &[&str])] = &[
        ("pool", &["catalog"]),
        ("runs", &["cascade"]),
        ("applications", &["cascade"]),
        ("screenshots", &["fence"]),
        ("variables", &["fence"]),
        ("ai", &["fence"]),
        ("integrations", &["fence"]),
        ("ldap", &["users", "fence"]),
        ("oidc", &["users", "fence"]),
        ("scim", &["users"]),
        ("catalog", &["sessions"]),
    ];

    /// Store files named right after `super::` (`super::super::` inside the file's
    /// `#[cfg(test)]` module) or `crate::store::`, or inside the `{…}` group that follows, in the
    /// code (not the comments) of `src`.
    fn store_refs(src: &str, files: &[String]) -> std::collections::BTreeSet<String> {
        let code: String = src
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let tests_from = code.find("#[cfg(test)]").unwrap_or(code.len());
        let mut out = std::collections::BTreeSet::new();
        for pat in ["super::", "crate::store::"] {
            for (i, _) in code.match_indices(pat) {
                if code[..i].ends_with("::") {
                    continue;
                }
                let mut rest = &code[i..];
                let mut supers = 0;
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                    supers += 1;
                }
                let wanted = if i < tests_from { 1 } else { 2 };
                if pat == "super::" && supers != wanted {
                    continue;
                }
                rest = rest.strip_prefix("crate::store::").unwrap_or(rest);
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .collect(),
                    None => rest
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .take(1)
                        .collect(),
                };
                for name in names {
                    if files.iter().any(|f| f == name) {
                        out.insert(name.to_string());
                    }
                }
            }
        }
        out
    }

    #[test]
    fn store_files_import_each_other_only_along_the_documented_map() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(String::from))?
            })
            .filter(|f| f != "mod")
            .collect();
        files.sort();
        let mut bad = Vec::new();
        for f in &files {
            let src = std::fs::read_to_string(dir.join(format!("{f}.rs"))).unwrap();
            let allowed = ALLOWED
                .iter()
                .find(|(from, _)| from == f)
                .map_or(&[][..], |(_, to)| *to);
            for to in store_refs(&src, &files) {
                if to != *f
                    && to != "audit"
                    && to != "migrations"
                    && !allowed.contains(&to.as_str())
                {
                    bad.push(format!("{f} -> {to}"));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "store files import each other outside the map: {bad:?}; allowed (besides audit, \
             migrations and store/mod.rs): {ALLOWED:?}"
        );
    }
}
