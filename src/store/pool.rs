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
    plaintext: bool,
    background_checkpoints: AtomicBool,
    cache: Mutex<OpenStores>,
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

struct OpenStores {
    lru: LruCache<TenantId, Db>,
    live: HashMap<TenantId, Weak<Mutex<Connection>>>,
}

impl OpenStores {
    fn find(&mut self, t: &TenantId) -> Option<Db> {
        if let Some(db) = self.lru.get(t) {
            return Some(db.clone());
        }
        let db = self.live.get(t).and_then(Weak::upgrade)?;
        self.lru.put(t.clone(), db.clone());
        Some(db)
    }

    fn insert(&mut self, t: &TenantId, db: &Db) {
        self.lru.put(t.clone(), db.clone());
        if self.live.len() >= 2 * self.lru.cap().get() {
            self.live.retain(|_, w| w.strong_count() > 0);
        }
        self.live.insert(t.clone(), Arc::downgrade(db));
    }
}

impl TenantStores {
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
            plaintext: false,
            background_checkpoints: AtomicBool::new(false),
            cache: Mutex::new(OpenStores {
                lru: LruCache::new(cap),
                live: HashMap::new(),
            }),
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
        if let Some(db) = self.cache.lock().find(t) {
            return Ok(db);
        }
        let _opening = self.opening.lock();
        if let Some(db) = self.cache.lock().find(t) {
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
        let mut cache = self.cache.lock();
        // Another task may have opened it meanwhile; keep the first.
        if let Some(existing) = cache.find(t) {
            return Ok(existing);
        }
        cache.insert(t, &db);
        Ok(db)
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
            self.cache.lock().lru.pop(t);
        }
        r
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

    fn wal_bytes(&self, t: &TenantId) -> u64 {
        let mut p = self.path_of(t).into_os_string();
        p.push("-wal");
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
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
    /// **one** blocking task. The catalog lock is released before the tenant store is locked;
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
        let open = self.cache.lock().find(t);
        if let Some(db) = open {
            let busy = self.catalog.busy_ms();
            if let Some(row) =
                super::try_read_now(self.catalog.db(), busy, &|c| catalog::tenant_by_id(c, t))
            {
                if let Some(a) = Admitted::refused(row?) {
                    return Ok(a);
                }
                if let Some(r) = super::try_read_now(&db, self.busy_ms, &f) {
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
            let db = me.get_blocking(&t)?;
            let c = db.lock();
            f(&c).map(Admitted::Ran)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Run the short, bounded read `f` on a tenant's store: on the calling task when the store
    /// is open and its connection free ([`super::try_read_now`]), else off the executor.
    pub async fn read<F, R>(self: &Arc<Self>, t: &TenantId, f: F) -> StoreResult<R>
    where
        F: Fn(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let open = self.cache.lock().find(t);
        if let Some(db) = open {
            if let Some(r) = super::try_read_now(&db, self.busy_ms, &f) {
                return r;
            }
        }
        self.run(t, move |c| f(c)).await
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
