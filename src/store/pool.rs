//! Per-tenant stores (`<data>/tenants/<tenant_id>.db`), each a SQLCipher file opened with the
//! tenant's own raw key, opened lazily and held in a bounded LRU (after meilisearch's
//! `IndexMapper`): [`TenantStores`] (the cache, re-keying, and the `run`/`read`/`read_admitted`
//! plumbing every tenant request goes through) and [`Admitted`]. Owns no table; it reads the
//! catalog (`tenants`, `tenant_keys`) to find and admit a tenant's store, which is why it is the
//! one store module that imports `catalog`.
//!
//! **Background WAL checkpoints** (issue 25, [`TenantStores::start_background_checkpoints`],
//! [`TenantStores::checkpoint_pass_blocking`]): SQLite's automatic checkpoint runs inside the
//! commit that crosses `wal_autocheckpoint` pages, so one request in ~40 step reports paid for
//! copying the whole WAL into the database file (P9: step-report thread-CPU p99 ×2). With the
//! server's checkpointer on, the request connections keep only a backstop autocheckpoint
//! ([`BACKSTOP_AUTOCHECKPOINT_PAGES`]) for when the pass falls behind, and a background pass
//! runs `PRAGMA wal_checkpoint(PASSIVE)` on every open store whose WAL file has reached
//! [`CHECKPOINT_WAL_BYTES`] — on the store's own connection, taken only when no request holds
//! it (idle time; a store whose connection is busy is skipped until the next pass). The same
//! connection, not a second one: a second SQLCipher connection doing the checkpoints made every
//! read on the request connection ~0.5 ms dearer in P9 (thread-CPU p50 of the run list 0.13 →
//! 0.65 ms), and holding the request connection is also the key-rotation fence:
//! [`TenantStores::rekey_blocking`] holds it for the whole re-key, so no checkpoint runs during
//! one and the next uses the re-keyed connection. A checkpoint only moves frames that are
//! already committed from the WAL into the database file (syncing the WAL first, as
//! `synchronous = NORMAL` does for every checkpoint); after a crash at any point the WAL still
//! holds every frame a checkpoint had not finished copying and recovery replays it, so no
//! acknowledged write is lost.
//!
//! **Read connections** (issue 25, `store.read_connections`, default on): besides its one write
//! connection, an open store gets a second connection, opened lazily with the same key and
//! `PRAGMA query_only = ON`, for the bounded per-request reads ([`TenantStores::read`],
//! [`TenantStores::read_admitted`], [`TenantStores::read_off`], [`TenantStores::read_blocking`]:
//! run list, run detail, authentication, the agent's run and flow lookups) **whenever the write
//! connection is held** (a free write connection is used first: its page cache is warm). In WAL
//! mode a reader never waits for a writer, so these reads no longer queue behind the step
//! reports and screenshots a busy store is committing (P8: the run list's server p99 at K = 16
//! fell from ≤ 25–50 ms to ≤ 15–20 ms). The price (P8 profile: HMAC-SHA512 2 % → 7 % of server
//! CPU when every read used it): SQLite discards a connection's whole page
//! cache when it begins a read after **another** connection committed
//! (`pagerBeginReadTransaction` → `pager_reset` in `sqlite3.c`), and on a SQLCipher store every
//! page read back is decrypted and HMAC-checked again, so a read on a store that is being
//! written pays its pages' decryption (that, not key derivation — the key is raw, no KDF — is
//! why a second connection made reads dearer in the last session's experiment). Writes,
//! transactions and audit rows stay on the one write connection. The key-rotation fence covers
//! both: [`TenantStores::rekey_blocking`] holds the write connection **and** the read slot,
//! closes the read connection, and the next read opens a new one with the key the catalog then
//! holds.
//!
//! **Busy-store page cache** (issue 25, `store.busy_page_cache_kib`, `store.busy_stores`,
//! `store.busy_page_cache_budget_kib`, [`TenantStores::page_cache_pass_blocking`], run by
//! `serve` every [`PAGE_CACHE_PERIOD`]): every open store's connections keep
//! `store.page_cache_kib` (2 MiB), except the write connections of the few stores that took the
//! most requests in the last period, which get a cache sized from their file
//! ([`busy_cache_plan`]: the whole store if it fits, at most 256 MiB each and 256 MiB together),
//! so a tenant with a large history under load keeps its hot pages decrypted (BENCHMARKS.md P9:
//! at 1 M runs every request answers in the time it takes at 10 k runs). The memory bound stays
//! fixed: the budget, whatever the number and size of the tenants.
//!
//! **Group commit** (issue 25, `store.group_commit`, default on,
//! [`TenantStores::write_grouped`]): agent step reports of one store that arrive while another
//! is committing are queued and committed together by the next writer to get the write
//! connection — one `BEGIN IMMEDIATE … COMMIT`, each report in its own savepoint — and every
//! report is answered only after that commit returned, so durability is what it was with one
//! transaction each.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use lru::LruCache;
use parking_lot::Mutex;
use rusqlite::Connection;

use super::catalog;
use super::{migrations, open_encrypted, Catalog, Conflict, Db, StoreError, StoreResult};
use crate::crypto::keyring::{self, KeyPurpose};
use crate::crypto::{Key256, MasterKey};
use crate::domain::TenantId;

/// The tenant stores of one deployment.
///
/// At most one connection per tenant store is live in the process: a handle evicted from the
/// LRU while a task still holds it is found again (through `live`) instead of a second
/// connection being opened, so writes stay serialised and a re-key (see
/// [`TenantStores::rekey_blocking`]) can hold the only connection.
pub struct TenantStores {
    dir: PathBuf,
    master: Arc<MasterKey>,
    catalog: Catalog,
    busy_ms: u64,
    page_cache_kib: u32,
    /// Page cache (KiB) of the busiest stores' write connections ([`TenantStores::page_cache_pass_blocking`]).
    busy_cache_kib: u32,
    /// How many stores get `busy_cache_kib` (0 = none).
    busy_stores: usize,
    /// Total page cache (KiB) the busy stores' write connections may take together
    /// ([`busy_cache_plan`]).
    busy_budget_kib: u64,
    /// Open stores ranked busy whose write connection got its planned cache in the last pass.
    busy_now: std::sync::atomic::AtomicUsize,
    plaintext: bool,
    background_checkpoints: AtomicBool,
    read_connections: bool,
    group_commit: bool,
    cache: Mutex<OpenStores>,
    /// The closer thread's queue ([`TenantStores::locked`]); `None` when it could not start
    /// (handles are then dropped on the caller's thread, still outside the cache lock).
    closer: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Closing>>>,
    /// Stores refused at open ([`StoreError::Schema`]: newer schema, or a failed migration), by
    /// tenant id, with the message; not retried until a restart.
    refused: Mutex<std::collections::BTreeMap<String, String>>,
    /// Held while a store is opened (and so migrated): one open at a time, so two tasks needing
    /// the same cold store do not both migrate it (or both keep a pre-migration copy).
    opening: Mutex<()>,
}

/// WAL file size (bytes) from which the background pass checkpoints an open store: about 256
/// pages, a quarter of SQLite's default autocheckpoint threshold (the file keeps its size when
/// SQLite restarts the log, so a store stays on the pass while it is open).
pub const CHECKPOINT_WAL_BYTES: u64 = 1 << 20;

/// `wal_autocheckpoint` of request connections while the background checkpointer runs: a
/// backstop (~32 MiB of WAL) that only a pass falling far behind lets a commit reach.
pub const BACKSTOP_AUTOCHECKPOINT_PAGES: u32 = 8000;

/// Interval of the server's background checkpoint passes (`serve` runs
/// [`TenantStores::checkpoint_pass_blocking`] at this period).
pub const CHECKPOINT_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// Interval of the server's page-cache passes ([`TenantStores::page_cache_pass_blocking`]):
/// the busiest stores of the last 5 s get the larger page cache.
pub const PAGE_CACHE_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Uses of a store within one [`PAGE_CACHE_PERIOD`] below which it is never "busy" (a person
/// opening a page now and then does not take a large cache).
pub const BUSY_MIN_USES: u64 = 20;

/// The ids of at most `n` stores with the most uses (each at least [`BUSY_MIN_USES`]), busiest
/// first; ties by id, so the choice does not depend on hash order.
fn busiest(uses: &HashMap<TenantId, u64>, n: usize) -> Vec<TenantId> {
    let mut ranked: Vec<(&TenantId, u64)> = uses
        .iter()
        .filter(|(_, &u)| u >= BUSY_MIN_USES)
        .map(|(t, &u)| (t, u))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
    ranked.into_iter().take(n).map(|(t, _)| t.clone()).collect()
}

/// What an open store has besides its write connection.
struct Side {
    /// The read connection (`None` until the first read opens it, and again after a re-key
    /// closed it).
    reader: Mutex<Option<Connection>>,
    /// Writes waiting for the store's next group commit ([`TenantStores::write_grouped`]).
    queue: Mutex<Vec<GroupJob>>,
}

type ReadSlot = Arc<Side>;

/// Handles for the closer thread to drop ([`TenantStores::locked`]).
type Closing = Vec<Box<dyn Send>>;

/// One write waiting for a group commit: `run` executes it inside the group's transaction and
/// returns how to hand over its result once the commit's outcome is known (`None` = committed);
/// `fail` hands over an error without running it (the group's `BEGIN` failed).
struct GroupJob {
    run: Box<dyn FnOnce(&mut Connection) -> Deliver + Send>,
    fail: Box<dyn FnOnce(StoreError) + Send>,
}

type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// How long a store's files must have been unchanged for [`TenantStores::stamp`] to stamp them.
pub const STAMP_QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// Size and modification time of a store's database and WAL ([`TenantStores::stamp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    db: (u64, std::time::SystemTime),
    wal: Option<(u64, std::time::SystemTime)>,
}

/// Page cache in KiB for each busy store, in the order of `store_bytes` (each store's database
/// plus WAL file size in bytes): what the whole file needs (plus 1/16 for SQLite's per-page
/// header), at least `floor_kib` (`store.page_cache_kib`, what every store has anyway) and at
/// most `cap_kib` (`store.busy_page_cache_kib`), and together at most `budget_kib`
/// (`store.busy_page_cache_budget_kib`): water-filling, smallest need first, so a small store
/// gets all it needs and the large ones share what is left equally. Only `floor_kib` is ever
/// given beyond the budget (`busy_stores` × `floor_kib` > budget).
///
/// Why sized from the file (issue 25, BENCHMARKS.md P9): `PRAGMA cache_size` is a bound, not an
/// allocation, so a cache larger than the store costs nothing, while a store larger than its
/// cache decrypts (AES-256-CBC + HMAC-SHA512) every page it reads back; a 1 M-run store (11 GB)
/// answers in the time a 10 k-run one does with 256 MiB, and ~2× slower at the deep end with
/// 32 MiB. The budget keeps the memory bound fixed however many stores are large.
pub fn busy_cache_plan(
    store_bytes: &[u64],
    floor_kib: u32,
    cap_kib: u32,
    budget_kib: u64,
) -> Vec<u32> {
    let floor = u64::from(floor_kib);
    let cap = u64::from(cap_kib).max(floor);
    let need = |b: u64| (b.saturating_add(b / 16) / 1024 + 1).clamp(floor, cap);
    let mut order: Vec<usize> = (0..store_bytes.len()).collect();
    order.sort_by_key(|&i| need(store_bytes[i]));
    let mut out = vec![floor_kib; store_bytes.len()];
    let mut left = budget_kib;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (order.len() - k) as u64;
        let give = need(store_bytes[i]).min(share).max(floor);
        left = left.saturating_sub(give);
        out[i] = u32::try_from(give).unwrap_or(cap_kib.max(floor_kib));
    }
    out
}

/// The error each write of a failed group commit gets (the same kind: a full volume stays
/// `Full`, contention `Busy`).
fn group_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full => StoreError::Full,
        StoreError::Busy => StoreError::Busy,
        other => StoreError::Task(format!("group commit failed: {other}")),
    }
}

struct OpenStores {
    lru: LruCache<TenantId, Db>,
    /// Uses of each store (lookups through [`OpenStores::find`] and opens) since the last
    /// [`TenantStores::page_cache_pass_blocking`].
    uses: HashMap<TenantId, u64>,
    live: HashMap<TenantId, Weak<Mutex<Connection>>>,
    /// Read slot of each store, with the write connection it belongs to (a slot whose write
    /// connection was closed is dropped, and a store opened again gets a new slot).
    readers: HashMap<TenantId, (Weak<Mutex<Connection>>, ReadSlot)>,
    /// Handles taken out of the cache under its lock (an evicted store's write connection, a
    /// read slot whose write connection is gone): dropping the last one closes a SQLite
    /// connection, which for a store's last connection checkpoints the WAL and syncs, so
    /// [`TenantStores::locked`] hands them to the closer thread after the lock is released.
    evicted: Closing,
}

impl OpenStores {
    fn find(&mut self, t: &TenantId) -> Option<Db> {
        match self.uses.get_mut(t) {
            Some(u) => *u += 1,
            None => {
                self.uses.insert(t.clone(), 1);
            }
        }
        if let Some(db) = self.lru.get(t) {
            return Some(db.clone());
        }
        let db = self.live.get(t).and_then(Weak::upgrade)?;
        self.put(t, &db);
        Some(db)
    }

    /// Puts `db` in the LRU; the store it evicts goes to `evicted`.
    fn put(&mut self, t: &TenantId, db: &Db) {
        if let Some((old_t, old)) = self.lru.push(t.clone(), db.clone()) {
            if old_t != *t {
                self.evicted.push(Box::new(old));
            }
        }
    }

    fn insert(&mut self, t: &TenantId, db: &Db) {
        self.put(t, db);
        if self.live.len() >= 2 * self.lru.cap().get() {
            self.live.retain(|_, w| w.strong_count() > 0);
        }
        self.live.insert(t.clone(), Arc::downgrade(db));
        let gone: Vec<TenantId> = self
            .readers
            .iter()
            .filter(|(_, (w, _))| w.strong_count() == 0)
            .map(|(t, _)| t.clone())
            .collect();
        for t in gone {
            if let Some(slot) = self.readers.remove(&t) {
                self.evicted.push(Box::new(slot));
            }
        }
    }

    /// The read slot of the store whose write connection is `db`.
    fn reader(&mut self, t: &TenantId, db: &Db) -> ReadSlot {
        if let Some((w, slot)) = self.readers.get(t) {
            if std::ptr::eq(w.as_ptr(), Arc::as_ptr(db)) {
                return slot.clone();
            }
        }
        let slot: ReadSlot = Arc::new(Side {
            reader: Mutex::new(None),
            queue: Mutex::new(Vec::new()),
        });
        self.readers
            .insert(t.clone(), (Arc::downgrade(db), slot.clone()));
        slot
    }
}

impl TenantStores {
    /// Runs `f` under the cache lock, then hands whatever it evicted to the closer thread.
    ///
    /// Why (issue 25, BENCHMARKS.md P9 tenants): closing a store's last connection checkpoints
    /// its WAL into the database file and syncs it (`sqlite3_close` → `sqlite3WalClose`), a few
    /// ms. Dropped inside the cache lock, as it was, every request of every tenant waited for
    /// it; dropped on the request's thread, the request that opened a cold store paid for
    /// closing the store it evicted. The closer thread drains its queue even after the stores
    /// are dropped; a store evicted and asked for again before it closed is found through
    /// `live` and reused, so there is still at most one write connection per store.
    fn locked<R>(&self, f: impl FnOnce(&mut OpenStores) -> R) -> R {
        let (r, evicted) = {
            let mut cache = self.cache.lock();
            let r = f(&mut cache);
            (r, std::mem::take(&mut cache.evicted))
        };
        if !evicted.is_empty() {
            self.close_later(evicted);
        }
        r
    }

    /// Hands `handles` to the closer thread (started on first use).
    fn close_later(&self, handles: Closing) {
        let tx = self.closer.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Closing>();
            let spawned = std::thread::Builder::new()
                .name("fg-store-close".into())
                .spawn(move || {
                    while let Ok(handles) = rx.recv() {
                        drop(handles);
                    }
                });
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "store closer thread did not start; closing on the request's thread");
                    None
                }
            }
        });
        match tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(handles)) = tx.send(handles) {
                    drop(handles);
                }
            }
            None => drop(handles),
        }
    }

    /// Directory of tenant stores under `data_dir`.
    pub fn dir_in(data_dir: &Path) -> PathBuf {
        data_dir.join("tenants")
    }

    /// Set up the cache; nothing is opened yet.
    pub fn new(
        data_dir: &Path,
        master: Arc<MasterKey>,
        catalog: Catalog,
        max_open: usize,
        busy_ms: u64,
    ) -> Self {
        let cap = NonZeroUsize::new(max_open).unwrap_or(NonZeroUsize::MIN);
        Self {
            dir: Self::dir_in(data_dir),
            master,
            catalog,
            busy_ms,
            page_cache_kib: 2000,
            busy_cache_kib: 2000,
            busy_stores: 0,
            busy_budget_kib: 0,
            busy_now: std::sync::atomic::AtomicUsize::new(0),
            plaintext: false,
            background_checkpoints: AtomicBool::new(false),
            read_connections: true,
            group_commit: true,
            cache: Mutex::new(OpenStores {
                lru: LruCache::new(cap),
                uses: HashMap::new(),
                live: HashMap::new(),
                readers: HashMap::new(),
                evicted: Vec::new(),
            }),
            closer: std::sync::OnceLock::new(),
            refused: Mutex::new(Default::default()),
            opening: Mutex::new(()),
        }
    }

    /// Checkpoint busy stores in the background (`serve`, before it opens any store; see the
    /// module doc): request connections opened from now on keep only the backstop
    /// autocheckpoint, and the caller runs [`TenantStores::checkpoint_pass_blocking`] every
    /// [`CHECKPOINT_PERIOD`] from now on. CLI commands never call it (they keep SQLite's
    /// automatic checkpoints).
    pub fn start_background_checkpoints(&self) {
        self.background_checkpoints.store(true, Ordering::Relaxed);
    }

    /// Page cache bound of every store opened from now on, in KiB (`store.page_cache_kib`).
    pub fn with_page_cache_kib(mut self, kib: u32) -> Self {
        self.page_cache_kib = kib;
        self
    }

    /// Page cache of the write connections of the `stores` busiest open stores, in KiB
    /// (`store.busy_page_cache_kib`: at most this much KiB per store; `store.busy_stores`: how
    /// many; `store.busy_page_cache_budget_kib`: at most this much KiB for all of them together;
    /// each sized from its file by [`busy_cache_plan`], never below the page cache of every
    /// store). Applied by [`TenantStores::page_cache_pass_blocking`]; default: none.
    pub fn with_busy_page_cache(mut self, kib: u32, stores: usize, budget_kib: u64) -> Self {
        self.busy_cache_kib = kib;
        self.busy_stores = stores;
        self.busy_budget_kib = budget_kib;
        self
    }

    /// Whether the per-request reads use each store's read connection (`store.read_connections`,
    /// default `true`; see the module doc). `false`: every read takes the write connection, as
    /// before issue 25 (kept to measure the lever on the same binary, BENCHMARKS.md P8).
    pub fn with_read_connections(mut self, on: bool) -> Self {
        self.read_connections = on;
        self
    }

    /// Whether [`TenantStores::write_grouped`] commits concurrent writes of a store together
    /// (`store.group_commit`, default `true`). `false`: each write is its own transaction.
    pub fn with_group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Benchmark anchor (`store.bench_plaintext_tenant_stores`, BENCHMARKS.md P8): tenant stores
    /// opened from now on are plain SQLite, created and opened through the same code without the
    /// `PRAGMA key` step ([`super::open_tenant_schema_for_bench`]'s seam). Never set in
    /// production; re-keying is refused while it is set.
    pub fn with_plaintext_for_bench(mut self, plaintext: bool) -> Self {
        self.plaintext = plaintext;
        self
    }

    /// Open (or create) the tenant store at `path` with `key`, or without one for the
    /// benchmark anchor.
    fn open_file(&self, path: &Path, key: &Key256, create: bool) -> StoreResult<Connection> {
        let key = (!self.plaintext).then_some(key);
        super::open_with(path, key, create, self.busy_ms, &migrations::tenant())
    }

    fn sized(&self, c: Connection) -> StoreResult<Connection> {
        c.execute_batch(&format!("PRAGMA cache_size = -{}", self.page_cache_kib))?;
        if self.background_checkpoints.load(Ordering::Relaxed) {
            c.execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {BACKSTOP_AUTOCHECKPOINT_PAGES}"
            ))?;
        }
        Ok(c)
    }

    /// File of one tenant store.
    pub fn path_of(&self, t: &TenantId) -> PathBuf {
        self.dir.join(format!("{}.db", t.as_str()))
    }

    /// Tenant ids of the stores in the open-store cache (for `/metrics`).
    pub fn open_ids(&self) -> Vec<TenantId> {
        self.cache
            .lock()
            .lru
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Number of stores currently open.
    pub fn open_count(&self) -> usize {
        self.cache.lock().lru.len()
    }

    /// Create a tenant store file with `key` (used when creating a tenant).
    pub fn create_file(&self, t: &TenantId, key: &Key256) -> StoreResult<Connection> {
        super::private_dir(&self.dir)?;
        let path = self.path_of(t);
        if path.exists() {
            return Err(StoreError::Conflict(Conflict::StoreExists));
        }
        self.sized(self.open_file(&path, key, true)?)
    }

    /// Get the open store of a tenant, opening it (blocking) when it is not cached. The store is
    /// opened with the tenant's active database key or, when that fails (a rotation crashed after
    /// its `PRAGMA rekey` committed), with a pending one: at every instant the file is under one
    /// of the keys the catalog holds.
    pub fn get_blocking(&self, t: &TenantId) -> StoreResult<Db> {
        if let Some(db) = self.locked(|c| c.find(t)) {
            return Ok(db);
        }
        let _opening = self.opening.lock();
        if let Some(db) = self.locked(|c| c.find(t)) {
            return Ok(db);
        }
        if let Some(msg) = self.refused.lock().get(t.as_str()) {
            return Err(StoreError::Schema(msg.clone()));
        }
        let path = self.path_of(t);
        if !path.is_file() {
            // A tenant the catalog lists without its store (a `--tenant` restore, a deleted
            // file) is refused and named by `/readyz`, like a store refused by a migration.
            let known = {
                let c = self.catalog.db().lock();
                catalog::tenant_by_id(&c, t)?.is_some()
            };
            if known {
                let msg = format!(
                    "tenants/{}.db is missing: restore the deployment from a backup (`flowguard restore`) or put the file back",
                    t.as_str()
                );
                tracing::error!(tenant = %t.as_str(), "store refused: the file is missing");
                self.refused
                    .lock()
                    .insert(t.as_str().to_string(), msg.clone());
                return Err(StoreError::Schema(msg));
            }
            return Err(StoreError::NotFound);
        }
        let conn = match self.open_with_catalog_keys(t, &path) {
            Err(StoreError::Schema(msg)) => {
                self.refused
                    .lock()
                    .insert(t.as_str().to_string(), msg.clone());
                return Err(StoreError::Schema(msg));
            }
            Err(StoreError::WrongKey(_)) => {
                // Not under any key the catalog holds for the tenant (a store file from a
                // backup older than a key rotation, a damaged file): refused and named like a
                // store refused by a migration, instead of a 500 per request.
                let msg = format!(
                    "tenants/{}.db does not open with any database key the catalog holds for this tenant (damaged, or a file from before a key rotation)",
                    t.as_str()
                );
                tracing::error!(tenant = %t.as_str(), "store refused: no key opens it");
                self.refused
                    .lock()
                    .insert(t.as_str().to_string(), msg.clone());
                return Err(StoreError::Schema(msg));
            }
            r => r?,
        };
        let db: Db = Arc::new(Mutex::new(conn));
        // Another task may have opened it meanwhile; keep the first.
        let existing = self.locked(|cache| {
            let existing = cache.find(t);
            if existing.is_none() {
                cache.insert(t, &db);
            }
            existing
        });
        Ok(existing.unwrap_or(db))
    }

    /// Stores refused since the start (tenant id → message naming the file and both schema
    /// versions): a newer schema, or a migration that failed and was rolled back. `/readyz`
    /// lists them.
    pub fn refused(&self) -> Vec<(String, String)> {
        self.refused
            .lock()
            .iter()
            .map(|(t, m)| (t.clone(), m.clone()))
            .collect()
    }

    /// Run `f` on a tenant's store for a background pass over every tenant (blocking). A store
    /// the pass had to open is dropped from the LRU again afterwards, so a job walking 1,000
    /// tenants does not leave 64 stores (SQLCipher connections with their page caches) open
    /// that no request asked for (issue 12 P7, idle RSS). A request that found the store
    /// meanwhile keeps its handle (the `live` map still finds it), so there is still at most one
    /// connection per store.
    pub fn for_pass<R>(
        &self,
        t: &TenantId,
        f: impl FnOnce(&Db) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let was_open = self.cache.lock().lru.contains(t);
        let db = self.get_blocking(t)?;
        let r = f(&db);
        if !was_open {
            self.locked(|cache| {
                if let Some(db) = cache.lru.pop(t) {
                    cache.evicted.push(Box::new(db));
                }
                if let Some(slot) = cache.readers.remove(t) {
                    cache.evicted.push(Box::new(slot));
                }
            });
        }
        r
    }

    /// The store's read slot, opening its read connection when the slot is empty, held while
    /// `f` runs on it. `None` when read connections are off, or the read connection does not
    /// open (logged; the caller reads on the write connection instead).
    fn with_reader<R>(
        &self,
        t: &TenantId,
        db: &Db,
        f: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> Option<StoreResult<R>> {
        if !self.read_connections {
            return None;
        }
        let slot = self.cache.lock().reader(t, db);
        let mut g = slot.reader.lock();
        if g.is_none() {
            match self.open_reader(t) {
                Ok(c) => *g = Some(c),
                Err(e) => {
                    tracing::warn!(tenant = %t.as_str(), error = %e, "read connection did not open; reading on the write connection");
                    return None;
                }
            }
        }
        g.as_ref().map(f)
    }

    /// Open a read connection on a store whose write connection is open, with the first key
    /// of the catalog's usable keys that opens it (as the write connection was opened).
    fn open_reader(&self, t: &TenantId) -> StoreResult<Connection> {
        let path = self.path_of(t);
        if self.plaintext {
            return self.sized_reader(super::open_reader(&path, None, self.busy_ms)?);
        }
        let candidates = {
            let c = self.catalog.db().lock();
            catalog::usable_keys(&c, t, KeyPurpose::Db)?
        };
        let mut last = StoreError::WrongKey(path.clone());
        for (version, wrapped) in candidates {
            let key = keyring::unwrap(&self.master, t, version, KeyPurpose::Db, &wrapped)
                .map_err(|e| StoreError::Key(e.to_string()))?;
            match super::open_reader(&path, Some(&key), self.busy_ms) {
                Ok(c) => return self.sized_reader(c),
                Err(StoreError::WrongKey(p)) => last = StoreError::WrongKey(p),
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn sized_reader(&self, c: Connection) -> StoreResult<Connection> {
        c.execute_batch(&format!("PRAGMA cache_size = -{}", self.page_cache_kib))?;
        Ok(c)
    }

    /// Run the bounded read `f` on a tenant's store (blocking): on the write connection when it
    /// is free, else on the read connection (see the module doc; on the write connection,
    /// waiting for it, when read connections are off).
    pub fn read_blocking<R>(
        &self,
        t: &TenantId,
        f: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let db = self.get_blocking(t)?;
        let mut f = Some(f);
        // A free write connection first: its page cache is warm (the read connection's is
        // discarded after every commit of the writer); the read connection when a write holds it.
        if let Some(c) = db.try_lock() {
            if let Some(f) = f.take() {
                return f(&c);
            }
        }
        if let Some(r) = self.with_reader(t, &db, |c| match f.take() {
            Some(f) => f(c),
            None => Err(StoreError::Task("read ran twice".into())),
        }) {
            return r;
        }
        let c = db.lock();
        match f.take() {
            Some(f) => f(&c),
            None => Err(StoreError::Task("read ran twice".into())),
        }
    }

    /// Run the write `f` on a tenant's store (blocking) as part of a **group commit**: writes of
    /// the same store that arrive while another is committing queue up, and the next one to get
    /// the write connection runs every queued write in one transaction — each inside its own
    /// `SAVEPOINT`, so a write that fails is undone alone and gets its own error — and commits
    /// once. Each caller gets its result only after that commit returned, so an acknowledged
    /// write is exactly as durable as with its own transaction; if the commit fails every write
    /// of the group gets the error (same kind) and none of them is kept. `f` must open its
    /// transaction with [`super::write_tx_nested`] (it is inside the group's) and write its
    /// audit rows inside it. With `store.group_commit = false`, `f` simply runs alone.
    pub fn write_grouped<R: Send + 'static>(
        &self,
        t: &TenantId,
        f: impl FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let db = self.get_blocking(t)?;
        if !self.group_commit {
            let mut c = db.lock();
            return f(&mut c);
        }
        let side = self.cache.lock().reader(t, &db);
        let (tx, rx) = std::sync::mpsc::sync_channel::<StoreResult<R>>(1);
        let fail_tx = tx.clone();
        side.queue.lock().push(GroupJob {
            run: Box::new(move |c: &mut Connection| {
                let r = (|| {
                    c.execute_batch("SAVEPOINT grouped_write")?;
                    let r = f(c);
                    if r.is_err() {
                        c.execute_batch("ROLLBACK TO grouped_write")?;
                    }
                    c.execute_batch("RELEASE grouped_write")?;
                    r
                })();
                Box::new(move |commit: Option<&StoreError>| {
                    let _ = tx.send(match (r, commit) {
                        (Ok(_), Some(e)) => Err(group_error(e)),
                        (r, _) => r,
                    });
                })
            }),
            fail: Box::new(move |e| {
                let _ = fail_tx.send(Err(e));
            }),
        });
        let c = db.lock();
        // Holding the write connection: our write was either committed by the group before
        // (its result is waiting) or is still queued, and then we run the queue.
        if let Ok(r) = rx.try_recv() {
            return r;
        }
        let jobs = std::mem::take(&mut *side.queue.lock());
        Self::commit_group(c, jobs);
        rx.recv()
            .unwrap_or_else(|_| Err(StoreError::Task("group commit: write was dropped".into())))
    }

    /// Run `jobs` in one `BEGIN IMMEDIATE` transaction and commit it, then hand every job its
    /// result (while still holding the connection, so a waiting writer finds its result).
    fn commit_group(mut c: parking_lot::MutexGuard<'_, Connection>, jobs: Vec<GroupJob>) {
        if let Err(e) = c.execute_batch("BEGIN IMMEDIATE") {
            let e = StoreError::from(e);
            for j in jobs {
                (j.fail)(group_error(&e));
            }
            return;
        }
        let mut deliver = Vec::with_capacity(jobs.len());
        for j in jobs {
            let run = j.run;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut c))) {
                Ok(d) => deliver.push(d),
                // A write that panicked: its caller gets a task error (its result channel is
                // gone); its writes are undone, the others go on.
                Err(_) => {
                    let _ = c.execute_batch("ROLLBACK TO grouped_write; RELEASE grouped_write");
                }
            }
        }
        let committed = c.execute_batch("COMMIT").map_err(StoreError::from);
        if committed.is_err() && !c.is_autocommit() {
            let _ = c.execute_batch("ROLLBACK");
        }
        let err = committed.err();
        for d in deliver {
            d(err.as_ref());
        }
    }

    /// [`TenantStores::read_blocking`] off the executor (reads whose size depends on the data,
    /// such as a run's detail with its steps).
    pub async fn read_off<F, R>(self: &Arc<Self>, t: &TenantId, f: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let me = self.clone();
        let t = t.clone();
        tokio::task::spawn_blocking(move || me.read_blocking(&t, f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Try the short read `f` right now on the executor: on the store's read connection when
    /// it is open and free (or on the write connection when read connections are off), as
    /// [`super::try_read_now`]. `None`: go off the executor.
    fn try_read_inline<R>(
        &self,
        t: &TenantId,
        db: &Db,
        f: &dyn Fn(&Connection) -> StoreResult<R>,
    ) -> Option<StoreResult<R>> {
        if !self.read_connections {
            return super::try_read_now(db, self.busy_ms, f);
        }
        // The write connection when it is free (warm page cache), else the read connection.
        if let Some(c) = db.try_lock() {
            if let Some(r) = super::try_read_on(&c, self.busy_ms, f) {
                return Some(r);
            }
        }
        let slot = self.cache.lock().reader(t, db);
        let g = slot.reader.try_lock_for(super::INLINE_LOCK_WAIT)?;
        super::try_read_on(g.as_ref()?, self.busy_ms, f)
    }

    fn open_with_catalog_keys(&self, t: &TenantId, path: &Path) -> StoreResult<Connection> {
        let candidates = {
            let c = self.catalog.db().lock();
            catalog::usable_keys(&c, t, KeyPurpose::Db)?
        };
        if candidates.is_empty() {
            return Err(StoreError::NotFound);
        }
        let mut last = StoreError::WrongKey(path.to_path_buf());
        for (version, wrapped) in candidates {
            let key = keyring::unwrap(&self.master, t, version, KeyPurpose::Db, &wrapped)
                .map_err(|e| StoreError::Key(e.to_string()))?;
            match self.open_file(path, &key, false) {
                Ok(c) => return self.sized(c),
                Err(StoreError::WrongKey(p)) => last = StoreError::WrongKey(p),
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// One background checkpoint pass (blocking; the server runs it every
    /// [`CHECKPOINT_PERIOD`]): `PRAGMA wal_checkpoint(PASSIVE)` on every open store whose WAL
    /// file has reached [`CHECKPOINT_WAL_BYTES`] and whose connection no request (nor a re-key)
    /// holds right now. Returns the number of stores checkpointed. A failure is logged and the
    /// store is tried again next pass (the backstop autocheckpoint bounds the WAL meanwhile).
    pub fn checkpoint_pass_blocking(&self) -> usize {
        let open: Vec<(TenantId, Db)> = {
            let cache = self.cache.lock();
            cache
                .live
                .iter()
                .filter_map(|(t, w)| w.upgrade().map(|db| (t.clone(), db)))
                .collect()
        };
        let mut done = 0;
        for (t, db) in open {
            if self.wal_bytes(&t) < CHECKPOINT_WAL_BYTES {
                continue;
            }
            // Idle time only: a request (or a re-key) holding the connection keeps it.
            let Some(c) = db.try_lock() else {
                continue;
            };
            match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::warn!(tenant = %t.as_str(), error = %e, "background WAL checkpoint failed");
                }
            }
        }
        done
    }

    /// One page-cache pass (blocking; the server runs it every [`PAGE_CACHE_PERIOD`]): the open
    /// stores are ranked by their uses since the last pass, and the write connection of each of
    /// the `busy_stores` busiest with at least [`BUSY_MIN_USES`] uses gets the `PRAGMA
    /// cache_size` [`busy_cache_plan`] gives it from its file size (at most
    /// `busy_page_cache_kib`, all together at most `busy_page_cache_budget_kib`), every other
    /// open store's `page_cache_kib` (SQLite frees the pages beyond a lowered bound). A store
    /// whose connection a request (or a re-key) holds right now keeps its size until the next
    /// pass. Read connections keep `page_cache_kib`:
    /// their cache is discarded whenever the write connection commits (module doc), so a large
    /// one would not stay warm. Returns the number of connections re-sized.
    ///
    /// Why (issue 25, BENCHMARKS.md P9): on a SQLCipher store every page brought back into the
    /// cache is decrypted and its HMAC checked, so a tenant with a million runs whose hot pages
    /// do not fit 2 MB pays ~0.3 ms more per run-list page than one with 10 k runs.
    pub fn page_cache_pass_blocking(&self) -> usize {
        // Nothing is ever made larger: no store to look at (the uses are dropped all the same).
        if self.busy_stores == 0 {
            self.cache.lock().uses.clear();
            return 0;
        }
        let (open, uses) = {
            let mut cache = self.cache.lock();
            let uses = std::mem::take(&mut cache.uses);
            let open: Vec<(TenantId, Db)> = cache
                .lru
                .iter()
                .map(|(t, db)| (t.clone(), db.clone()))
                .collect();
            (open, uses)
        };
        // Only open stores are ranked (one evicted since its uses takes no share of the budget).
        let mut uses = uses;
        let is_open: std::collections::HashSet<&TenantId> = open.iter().map(|(t, _)| t).collect();
        uses.retain(|t, _| is_open.contains(t));
        let busy = busiest(&uses, self.busy_stores);
        let bytes: Vec<u64> = busy
            .iter()
            .map(|t| {
                let db = std::fs::metadata(self.path_of(t)).map_or(0, |m| m.len());
                db.saturating_add(self.wal_bytes(t))
            })
            .collect();
        let plan: HashMap<TenantId, u32> = busy
            .into_iter()
            .zip(busy_cache_plan(
                &bytes,
                self.page_cache_kib,
                self.busy_cache_kib,
                self.busy_budget_kib,
            ))
            .collect();
        let (mut resized, mut at_big) = (0, 0);
        for (t, db) in open {
            let want = plan.get(&t).copied().unwrap_or(self.page_cache_kib);
            // Between two writes of a busy store: wait a little for its connection.
            let Some(c) = db.try_lock_for(std::time::Duration::from_millis(20)) else {
                continue;
            };
            let have: i64 = match c.query_row("PRAGMA cache_size", [], |r| r.get(0)) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(tenant = %t.as_str(), error = %e, "page cache size not readable");
                    continue;
                }
            };
            if have != -i64::from(want) {
                if let Err(e) = c.execute_batch(&format!("PRAGMA cache_size = -{want}")) {
                    tracing::warn!(tenant = %t.as_str(), error = %e, "page cache not re-sized");
                    continue;
                }
                resized += 1;
            }
            if plan.contains_key(&t) {
                at_big += 1;
            }
        }
        self.busy_now.store(at_big, Ordering::Relaxed);
        resized
    }

    /// Open stores ranked busy by the last [`TenantStores::page_cache_pass_blocking`] whose
    /// write connection got its planned page cache (`flowguard_busy_tenant_stores`).
    pub fn busy_count(&self) -> usize {
        self.busy_now.load(Ordering::Relaxed)
    }

    /// The on-disk state of `t`'s store (size and modification time of the database and its
    /// WAL) when both files have been quiet for at least [`STAMP_QUIET`], else `None`. Equal
    /// stamps taken at two times mean no commit and no checkpoint reached the store in between
    /// — by this process or another one (`flowguard jobs run …` beside `serve`): every commit
    /// appends to the WAL and every checkpoint writes the database. The quiet margin covers
    /// file systems whose timestamps are coarser than a commit: a write after the stamp was
    /// taken carries a later time than the stamp's own (at least `STAMP_QUIET` old). A passes
    /// uses it to skip a store it found with nothing to do at the same stamp
    /// (`service::runner`, issue 25).
    pub fn stamp(&self, t: &TenantId) -> Option<FileStamp> {
        let now = std::time::SystemTime::now();
        let quiet = |m: &std::fs::Metadata| -> Option<(u64, std::time::SystemTime)> {
            let at = m.modified().ok()?;
            (now.duration_since(at).ok()? >= STAMP_QUIET).then_some((m.len(), at))
        };
        let path = self.path_of(t);
        let db = quiet(&std::fs::metadata(&path).ok()?)?;
        let wal = match std::fs::metadata(super::wal_path(&path)) {
            Ok(m) => Some(quiet(&m)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => return None,
        };
        Some(FileStamp { db, wal })
    }

    fn wal_bytes(&self, t: &TenantId) -> u64 {
        super::wal_bytes(&self.path_of(t))
    }

    /// Re-key a tenant store from `old` to `new` (SQLCipher `PRAGMA rekey`) while holding its
    /// only connection, so requests for the tenant wait and none sees a half-switched handle.
    /// The outcome is proven with fresh connections (`new` opens, `old` does not) and the cached
    /// connection is **replaced** by a fresh one on the key that opens the file. When the store
    /// already opens with `new` (a crashed rotation that committed its rekey) nothing is
    /// re-encrypted. Returns `Key("rekey did not take effect")` when the file is still under `old`.
    pub fn rekey_blocking(&self, t: &TenantId, old: &Key256, new: &Key256) -> StoreResult<()> {
        if self.plaintext {
            return Err(StoreError::Key(
                "store.bench_plaintext_tenant_stores is set: plain benchmark stores are not re-keyed"
                    .into(),
            ));
        }
        let db = self.get_blocking(t)?;
        let mut conn = db.lock();
        // The read connection is closed and its slot held until the re-key is over: no read
        // runs during it, and the next one opens with the key that then opens the file.
        // (Lock order everywhere: write connection, then read slot.)
        let slot = self.cache.lock().reader(t, &db);
        let mut reader = slot.reader.lock();
        *reader = None;
        let path = self.path_of(t);
        let mig = migrations::tenant();
        if let Ok(fresh) = open_encrypted(&path, new, false, self.busy_ms, &mig) {
            *conn = self.sized(fresh)?;
            return Ok(());
        }
        match super::rekey_verified(&conn, &path, old, new, self.busy_ms, &mig)? {
            super::Rekeyed::Done(fresh) => {
                *conn = self.sized(fresh)?;
                Ok(())
            }
            super::Rekeyed::NotDone(fresh) => {
                *conn = self.sized(fresh)?;
                Err(StoreError::Key("rekey did not take effect".into()))
            }
        }
    }

    /// Run the short, bounded read `f` on the store of a tenant the catalog knows and has not
    /// suspended — the authentication of every tenant request. The catalog row and `f` are read
    /// on the calling task when both connections are free and the store is already open
    /// ([`super::try_read_now`]; issue 12 P2 measured each `spawn_blocking` hop), otherwise in
    /// **one** blocking task; `f` runs on the store's read connection (module doc). The catalog lock is released before the tenant store is locked;
    /// the store is not opened for an unknown or suspended tenant.
    pub async fn read_admitted<F, R>(
        self: &Arc<Self>,
        t: &TenantId,
        f: F,
    ) -> StoreResult<Admitted<R>>
    where
        F: Fn(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let open = self.locked(|c| c.find(t));
        if let Some(db) = open {
            let busy = self.catalog.busy_ms();
            if let Some(row) =
                super::try_read_now(self.catalog.db(), busy, &|c| catalog::tenant_by_id(c, t))
            {
                if let Some(a) = Admitted::refused(row?) {
                    return Ok(a);
                }
                if let Some(r) = self.try_read_inline(t, &db, &f) {
                    return r.map(Admitted::Ran);
                }
            }
        }
        let me = self.clone();
        let t = t.clone();
        tokio::task::spawn_blocking(move || {
            let row = {
                let c = me.catalog.db().lock();
                catalog::tenant_by_id(&c, &t)?
            };
            if let Some(a) = Admitted::refused(row) {
                return Ok(a);
            }
            me.read_blocking(&t, |c| f(c)).map(Admitted::Ran)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Run the short, bounded read `f` on a tenant's store: on the calling task when the store
    /// is open and its read connection free ([`super::try_read_now`]), else off the executor
    /// ([`TenantStores::read_off`]).
    pub async fn read<F, R>(self: &Arc<Self>, t: &TenantId, f: F) -> StoreResult<R>
    where
        F: Fn(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let open = self.locked(|c| c.find(t));
        if let Some(db) = open {
            if let Some(r) = self.try_read_inline(t, &db, &f) {
                return r;
            }
        }
        self.read_off(t, move |c| f(c)).await
    }

    /// Run `f` on a tenant's store off the executor.
    pub async fn run<F, R>(self: &Arc<Self>, t: &TenantId, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let me = self.clone();
        let t = t.clone();
        tokio::task::spawn_blocking(move || {
            let db = me.get_blocking(&t)?;
            let mut c = db.lock();
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// What [`TenantStores::read_admitted`] found in the catalog.
#[derive(Debug)]
pub enum Admitted<R> {
    /// No tenant has this id.
    Unknown,
    /// The tenant exists but is suspended.
    Suspended,
    /// The tenant is active; the closure's result.
    Ran(R),
}

impl<R> Admitted<R> {
    /// The refusal for a catalog row (`None` = the tenant is active).
    fn refused(row: Option<catalog::TenantRow>) -> Option<Self> {
        match row {
            None => Some(Admitted::Unknown),
            Some(r) if r.status == catalog::TENANT_SUSPENDED => Some(Admitted::Suspended),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores(dir: &Path, plaintext: bool) -> TenantStores {
        let master = MasterKey::load_or_create(&dir.join("master.key"), false).unwrap();
        let catalog = Catalog::open(dir, &master, true, 5000).unwrap();
        TenantStores::new(dir, Arc::new(master), catalog, 4, 5000)
            .with_plaintext_for_bench(plaintext)
    }

    /// Stores with one tenant created as `service::tenants::create_tenant` does (store file,
    /// then the catalog row with the wrapped keys); returns the stores, the tenant and its key.
    fn with_tenant(dir: &Path, read_connections: bool) -> (TenantStores, TenantId, Key256) {
        let master = Arc::new(MasterKey::load_or_create(&dir.join("master.key"), false).unwrap());
        let catalog = Catalog::open(dir, &master, true, 5000).unwrap();
        let s = TenantStores::new(dir, master, catalog, 4, 5000)
            .with_read_connections(read_connections);
        let (t, key) = add_tenant(&s, "eus-abc123", "acme");
        (s, t, key)
    }

    /// Create a tenant (store file, then the catalog row with the wrapped keys, as
    /// `service::tenants::create_tenant` does) on `s`; returns it and its database key.
    fn add_tenant(s: &TenantStores, id: &str, name: &str) -> (TenantId, Key256) {
        let t = TenantId::parse(id).unwrap();
        let key = crate::crypto::random_key();
        drop(s.create_file(&t, &key).unwrap());
        let w = |p| keyring::wrap(&s.master, &t, 1, p, &key).unwrap();
        let row = catalog::TenantRow {
            id: t.clone(),
            name: name.into(),
            region: "eus".into(),
            plan: "free".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            status: "active".into(),
            plan_follows_license: false,
        };
        let actor = crate::audit::Actor {
            email: None,
            role: None,
            client_ip: None,
            user_agent: None,
        };
        let ev = crate::audit::NewAuditEvent::new(&actor, "tenant.create", None);
        let mut c = s.catalog.db().lock();
        catalog::insert_tenant(&mut c, &row, &w(KeyPurpose::Db), &w(KeyPurpose::Dek), &ev).unwrap();
        (t, key)
    }

    /// `PRAGMA cache_size` of a store's write connection (negative: KiB).
    fn cache_size(s: &TenantStores, t: &TenantId) -> i64 {
        let db = s.get_blocking(t).unwrap();
        let c = db.lock();
        c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap()
    }

    fn use_n(s: &TenantStores, t: &TenantId, n: u64) {
        for _ in 0..n {
            drop(s.get_blocking(t).unwrap());
        }
    }

    /// Grows a store's file by about `mib` MiB (a blob, checkpointed into the file).
    fn grow(s: &TenantStores, t: &TenantId, mib: i64) {
        let db = s.get_blocking(t).unwrap();
        let c = db.lock();
        c.execute_batch("CREATE TABLE IF NOT EXISTS filler(b BLOB)")
            .unwrap();
        c.execute("INSERT INTO filler VALUES (zeroblob(?1))", [mib << 20])
            .unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }

    /// Set the modification time of `t`'s database and WAL (when present) to `at`.
    fn age(s: &TenantStores, t: &TenantId, at: std::time::SystemTime) {
        let p = s.path_of(t);
        for f in [p.clone(), super::super::wal_path(&p)] {
            if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&f) {
                file.set_modified(at).unwrap();
            }
        }
    }

    #[test]
    fn a_store_is_stamped_only_when_quiet_and_any_commit_changes_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a, _) = with_tenant(dir.path(), false);
        let db = s.get_blocking(&a).unwrap();
        db.lock()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        // Just written: no stamp (a write in the same timestamp tick could follow unseen).
        assert_eq!(s.stamp(&a), None);
        let old = std::time::SystemTime::now() - 10 * STAMP_QUIET;
        age(&s, &a, old);
        let first = s.stamp(&a).expect("quiet files are stamped");
        assert_eq!(
            s.stamp(&a),
            Some(first.clone()),
            "unchanged files, same stamp"
        );
        // One more commit (one WAL frame more), the files set back to the very same times:
        // the stamp still differs.
        db.lock().execute("INSERT INTO t VALUES (2)", []).unwrap();
        age(&s, &a, old);
        let second = s.stamp(&a).unwrap();
        assert_ne!(first, second);
        // A checkpoint writes the database: different again, even at equal times.
        db.lock()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        age(&s, &a, old);
        assert_ne!(s.stamp(&a).unwrap(), second);
        // A commit with the clock as it is: not quiet, no stamp.
        db.lock().execute("INSERT INTO t VALUES (3)", []).unwrap();
        assert_eq!(s.stamp(&a), None);
        // No store, no stamp.
        assert_eq!(s.stamp(&TenantId::parse("eus-zzz999").unwrap()), None);
    }

    #[test]
    fn an_evicted_store_is_closed_by_the_closer_thread_and_a_held_one_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a, _) = with_tenant(dir.path(), true); // at most 4 open
        let others: Vec<TenantId> = (0..4)
            .map(|i| add_tenant(&s, &format!("eus-ccc{i:03}"), &format!("other{i}")).0)
            .collect();
        grow(&s, &a, 1);
        let wal = super::super::wal_path(&s.path_of(&a));
        assert!(wal.exists());
        let weak = Arc::downgrade(&s.get_blocking(&a).unwrap());
        for t in &others {
            drop(s.get_blocking(t).unwrap());
        }
        // Evicted and closed (off the request's thread): the last connection checkpointed the
        // WAL into the file and removed it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while weak.strong_count() > 0 || wal.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the evicted store never closed"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let db = s.get_blocking(&a).unwrap();
        let n: i64 = db
            .lock()
            .query_row("SELECT count(*) FROM filler", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        // A store evicted while a request holds it is found again, never opened a second time.
        let held = db;
        for t in &others {
            drop(s.get_blocking(t).unwrap());
        }
        assert!(!s.cache.lock().lru.contains(&a));
        let again = s.get_blocking(&a).unwrap();
        assert!(Arc::ptr_eq(&held, &again));
    }

    #[test]
    fn busy_cache_plan_sizes_each_store_from_its_file_within_the_cap_and_the_budget() {
        let mib: u64 = 1 << 20;
        // A store smaller than the floor keeps the floor; a 4 MiB one gets its file plus 1/16;
        // a larger one the cap.
        assert_eq!(busy_cache_plan(&[100_000], 1000, 8000, 100_000), vec![1000]);
        assert_eq!(busy_cache_plan(&[4 * mib], 1000, 8000, 100_000), vec![4353]);
        assert_eq!(
            busy_cache_plan(&[100 * mib], 1000, 8000, 100_000),
            vec![8000]
        );
        // The budget: the smallest need first, the large ones share what is left equally.
        assert_eq!(
            busy_cache_plan(&[100 * mib, 4 * mib, 100 * mib], 1000, 8000, 14_000),
            vec![4823, 4353, 4824]
        );
        assert_eq!(
            busy_cache_plan(&[100 * mib, 4 * mib, 100 * mib], 1000, 8000, 12_000),
            vec![4000, 4000, 4000]
        );
        // Never below the floor, even beyond the budget; a cap below the floor is the floor.
        assert_eq!(
            busy_cache_plan(&[100 * mib; 3], 1000, 8000, 2000),
            vec![1000; 3]
        );
        assert_eq!(
            busy_cache_plan(&[100 * mib], 1000, 500, 100_000),
            vec![1000]
        );
        assert!(busy_cache_plan(&[], 1000, 8000, 100_000).is_empty());
        // Whatever the sizes, the total stays within the budget when the floors fit in it.
        for budget in [3000u64, 9000, 20_000, 50_000] {
            let sizes = [mib, 3 * mib, 7 * mib, 50 * mib, 900 * mib];
            let plan = busy_cache_plan(&sizes, 500, 16_000, budget);
            let total: u64 = plan.iter().map(|&k| u64::from(k)).sum();
            assert!(total <= budget, "{budget}: {plan:?}");
            assert!(
                plan.iter().all(|&k| (500..=16_000).contains(&k)),
                "{plan:?}"
            );
        }
    }

    #[test]
    fn the_busiest_stores_get_the_large_page_cache_and_give_it_back_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a, _) = with_tenant(dir.path(), true);
        let s = s
            .with_page_cache_kib(1000)
            .with_busy_page_cache(8000, 1, 100_000);
        let (b, _) = add_tenant(&s, "eus-bbb222", "bbb");
        // `a` is larger than the per-store cap; `b` needs less than the cap, more than the floor.
        grow(&s, &a, 12);
        grow(&s, &b, 5);
        let b_bytes = std::fs::metadata(s.path_of(&b)).unwrap().len() + s.wal_bytes(&b);
        let b_need = i64::from(busy_cache_plan(&[b_bytes], 1000, 8000, 100_000)[0]);
        assert!((5000..8000).contains(&b_need), "{b_need}");
        assert_eq!((cache_size(&s, &a), cache_size(&s, &b)), (-1000, -1000));
        s.page_cache_pass_blocking(); // the uses of the probes above
                                      // The busiest store with enough uses gets the large cache; only one may (busy_stores).
        use_n(&s, &a, 30);
        use_n(&s, &b, 25);
        assert_eq!(s.page_cache_pass_blocking(), 1);
        assert_eq!((cache_size(&s, &a), cache_size(&s, &b)), (-8000, -1000));
        assert_eq!(s.busy_count(), 1);
        // The ranking follows the last window, and a store that left it shrinks again; the
        // busy one gets what its file needs.
        use_n(&s, &b, 30);
        assert_eq!(s.page_cache_pass_blocking(), 2);
        assert_eq!((cache_size(&s, &a), cache_size(&s, &b)), (-1000, -b_need));
        // Below BUSY_MIN_USES nobody is busy.
        use_n(&s, &a, BUSY_MIN_USES - 5);
        s.page_cache_pass_blocking();
        assert_eq!((cache_size(&s, &a), cache_size(&s, &b)), (-1000, -1000));
        assert_eq!(s.busy_count(), 0);
        // A connection a request holds keeps its size until a later pass.
        use_n(&s, &a, 30);
        let db = s.get_blocking(&a).unwrap();
        let held = db.lock();
        assert_eq!(s.page_cache_pass_blocking(), 0);
        drop(held);
        assert_eq!(cache_size(&s, &a), -1000);
        use_n(&s, &a, 30);
        assert_eq!(s.page_cache_pass_blocking(), 1);
        assert_eq!(cache_size(&s, &a), -8000);
        // Two busy stores share the budget: the smaller need first, each half of 9000 here.
        let s = s.with_busy_page_cache(8000, 2, 9000);
        use_n(&s, &a, 30);
        use_n(&s, &b, 30);
        s.page_cache_pass_blocking();
        assert_eq!((cache_size(&s, &a), cache_size(&s, &b)), (-4500, -4500));
        assert_eq!(s.busy_count(), 2);
        // Never below the page cache of every store.
        let s = s.with_busy_page_cache(500, 1, 100_000);
        use_n(&s, &b, 30);
        s.page_cache_pass_blocking();
        assert_eq!((cache_size(&s, &a), cache_size(&s, &b)), (-1000, -1000));
    }

    /// Reads `probe.x` through `read_blocking` on another thread while this thread holds the
    /// store's write connection; `Some(x)` when the read answered within `wait`.
    fn read_while_writer_held(
        s: &Arc<TenantStores>,
        t: &TenantId,
        wait: std::time::Duration,
    ) -> Option<i64> {
        let db = s.get_blocking(t).unwrap();
        let held = db.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let (s2, t2) = (s.clone(), t.clone());
        let h = std::thread::spawn(move || {
            let r = s2.read_blocking(&t2, |c| {
                Ok(c.query_row("SELECT max(x) FROM probe", [], |r| r.get::<_, i64>(0))?)
            });
            let _ = tx.send(r.unwrap());
        });
        let got = rx.recv_timeout(wait).ok();
        drop(held);
        h.join().unwrap();
        got
    }

    #[test]
    fn reads_use_the_read_connection_and_never_wait_for_the_write_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (s, t, _) = with_tenant(dir.path(), true);
        let s = Arc::new(s);
        let db = s.get_blocking(&t).unwrap();
        db.lock()
            .execute_batch("CREATE TABLE probe(x INTEGER); INSERT INTO probe VALUES (7);")
            .unwrap();
        // The read answers while a writer holds the store's connection, and sees its commits.
        let wait = std::time::Duration::from_secs(10);
        assert_eq!(read_while_writer_held(&s, &t, wait), Some(7));
        db.lock()
            .execute("INSERT INTO probe VALUES (8)", [])
            .unwrap();
        assert_eq!(read_while_writer_held(&s, &t, wait), Some(8));
        // The read connection is read-only.
        // (While a write holds the write connection, so the read goes to the read connection.)
        let held = db.lock();
        let (s3, t3) = (s.clone(), t.clone());
        let w = std::thread::spawn(move || {
            s3.read_blocking(&t3, |c| Ok(c.execute("INSERT INTO probe VALUES (9)", [])?))
        })
        .join()
        .unwrap();
        drop(held);
        assert!(w.is_err(), "a write through the read connection must fail");
        // Without read connections the same read waits for the write connection (what the
        // lever removes; also proves the check above can fail).
        let dir2 = tempfile::tempdir().unwrap();
        let (s2, t2, _) = with_tenant(dir2.path(), false);
        let s2 = Arc::new(s2);
        s2.get_blocking(&t2)
            .unwrap()
            .lock()
            .execute_batch("CREATE TABLE probe(x INTEGER); INSERT INTO probe VALUES (7);")
            .unwrap();
        assert_eq!(
            read_while_writer_held(&s2, &t2, std::time::Duration::from_millis(300)),
            None
        );
    }

    #[test]
    fn a_rekey_closes_the_read_connection_and_the_next_read_opens_with_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let (s, t, old) = with_tenant(dir.path(), true);
        let s = Arc::new(s);
        let db = s.get_blocking(&t).unwrap();
        db.lock()
            .execute_batch("CREATE TABLE probe(x INTEGER); INSERT INTO probe VALUES (7);")
            .unwrap();
        let wait = std::time::Duration::from_secs(10);
        // Reads while the write connection is held go to the read connection.
        assert_eq!(read_while_writer_held(&s, &t, wait), Some(7));
        let slot = s.cache.lock().reader(&t, &db);
        assert!(
            slot.reader.lock().is_some(),
            "the read opened the read connection"
        );
        // The rotation's pending key in the catalog, then the re-key (as keys.rs does).
        let new = crate::crypto::random_key();
        let w = |p| keyring::wrap(&s.master, &t, 2, p, &new).unwrap();
        {
            let mut c = s.catalog.db().lock();
            catalog::insert_pending_keys(
                &mut c,
                &t,
                2,
                &w(KeyPurpose::Db),
                &w(KeyPurpose::Dek),
                "2026-01-02T00:00:00Z",
            )
            .unwrap();
        }
        s.rekey_blocking(&t, &old, &new).unwrap();
        assert!(
            slot.reader.lock().is_none(),
            "the re-key closed the read connection"
        );
        db.lock()
            .execute("INSERT INTO probe VALUES (8)", [])
            .unwrap();
        assert_eq!(read_while_writer_held(&s, &t, wait), Some(8));
        let c = slot.reader.lock();
        let c = c.as_ref().expect("the read opened a new read connection");
        // It is the new key's connection: the file no longer opens with the old key.
        assert!(matches!(
            crate::store::open_reader(&s.path_of(&t), Some(&old), 5000),
            Err(StoreError::WrongKey(_))
        ));
        assert_eq!(
            c.query_row("SELECT count(*) FROM probe", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            2
        );
    }

    #[test]
    fn concurrent_grouped_writes_commit_together_and_a_failing_one_is_undone_alone() {
        for grouped in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (s, t, _) = with_tenant(dir.path(), true);
            let s = Arc::new(s.with_group_commit(grouped));
            let db = s.get_blocking(&t).unwrap();
            {
                let c = db.lock();
                c.execute_batch("CREATE TABLE probe(x INTEGER)").unwrap();
                assert!(crate::store::checkpoint_truncate(&c).unwrap());
            }
            let held = db.lock();
            let n = 8_i64;
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (s, t) = (s.clone(), t.clone());
                    std::thread::spawn(move || {
                        s.write_grouped(&t, move |c| {
                            let tx = crate::store::write_tx_nested(c)?;
                            tx.execute("INSERT INTO probe VALUES (?1)", [i])?;
                            if i == 3 {
                                return Err(StoreError::NotFound);
                            }
                            tx.commit()
                        })
                    })
                })
                .collect();
            if grouped {
                // Every writer queues while the connection is held.
                let side = s.cache.lock().reader(&t, &db);
                let t0 = std::time::Instant::now();
                while (side.queue.lock().len() as i64) < n
                    && t0.elapsed() < std::time::Duration::from_secs(10)
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                assert_eq!(side.queue.lock().len() as i64, n);
            } else {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            drop(held);
            for (i, h) in handles.into_iter().enumerate() {
                let r = h.join().unwrap();
                if i == 3 {
                    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
                } else {
                    assert!(r.is_ok(), "write {i}: {r:?}");
                }
            }
            let c = db.lock();
            let rows: Vec<i64> = c
                .prepare("SELECT x FROM probe ORDER BY x")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows, vec![0, 1, 2, 4, 5, 6, 7], "grouped = {grouped}");
            // WAL frames written since the truncation: the group's one commit writes the
            // table's page once; seven transactions write it seven times.
            let frames: i64 = c
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .unwrap();
            if grouped {
                assert!(frames < 4, "{frames} WAL frames for one group commit");
            } else {
                assert!(frames >= 7, "{frames} WAL frames for seven commits");
            }
        }
    }

    fn header_is_plain(p: &Path) -> bool {
        std::fs::read(p).unwrap().starts_with(b"SQLite format 3\0")
    }

    #[test]
    fn tenant_stores_are_encrypted_unless_the_bench_anchor_is_set() {
        let t = TenantId::parse("eus-abc123").unwrap();
        let key = crate::crypto::random_key();
        let enc = tempfile::tempdir().unwrap();
        let s = stores(enc.path(), false);
        drop(s.create_file(&t, &key).unwrap());
        assert!(
            !header_is_plain(&s.path_of(&t)),
            "default store must be SQLCipher"
        );
        let plain = tempfile::tempdir().unwrap();
        let s = stores(plain.path(), true);
        drop(s.create_file(&t, &key).unwrap());
        assert!(
            header_is_plain(&s.path_of(&t)),
            "bench anchor store is plain SQLite"
        );
        // A plain file never opens as a keyed store, nor the other way round.
        assert!(matches!(
            open_encrypted(&s.path_of(&t), &key, false, 5000, &migrations::tenant()),
            Err(StoreError::WrongKey(_))
        ));
        let enc_path = TenantStores::dir_in(enc.path()).join("eus-abc123.db");
        assert!(matches!(
            super::super::open_with(&enc_path, None, false, 5000, &migrations::tenant()),
            Err(StoreError::WrongKey(_))
        ));
        // Re-keying is refused for the anchor.
        assert!(matches!(
            s.rekey_blocking(&t, &key, &crate::crypto::random_key()),
            Err(StoreError::Key(_))
        ));
    }
}
