//! Per-tenant stores (`<data>/tenants/<tenant_id>.db`), each a SQLCipher file opened with the
//! tenant's own raw key, opened lazily and held in a bounded LRU (after meilisearch's
//! `IndexMapper`). Also the tenant-side SQL: users, sessions, applications, service tokens.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use lru::LruCache;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::catalog::{self, SessionRow};
use super::{audit, migrations, open_encrypted, write_tx, Catalog, Db, StoreError, StoreResult};
use crate::audit::NewAuditEvent;
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
    cache: Mutex<OpenStores>,
}

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
            cache: Mutex::new(OpenStores {
                lru: LruCache::new(cap),
                live: HashMap::new(),
            }),
        }
    }

    /// Page cache bound of every store opened from now on, in KiB (`store.page_cache_kib`).
    pub fn with_page_cache_kib(mut self, kib: u32) -> Self {
        self.page_cache_kib = kib;
        self
    }

    fn sized(&self, c: Connection) -> StoreResult<Connection> {
        c.execute_batch(&format!("PRAGMA cache_size = -{}", self.page_cache_kib))?;
        Ok(c)
    }

    /// File of one tenant store.
    pub fn path_of(&self, t: &TenantId) -> PathBuf {
        self.dir.join(format!("{}.db", t.as_str()))
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
            return Err(StoreError::Conflict(format!(
                "store for {t} already exists"
            )));
        }
        self.sized(open_encrypted(
            &path,
            key,
            true,
            self.busy_ms,
            &migrations::tenant(),
        )?)
    }

    /// Get the open store of a tenant, opening it (blocking) when it is not cached. The store is
    /// opened with the tenant's active database key or, when that fails (a rotation crashed after
    /// its `PRAGMA rekey` committed), with a pending one: at every instant the file is under one
    /// of the keys the catalog holds.
    pub fn get_blocking(&self, t: &TenantId) -> StoreResult<Db> {
        if let Some(db) = self.cache.lock().find(t) {
            return Ok(db);
        }
        let path = self.path_of(t);
        if !path.is_file() {
            return Err(StoreError::NotFound);
        }
        let conn = self.open_with_catalog_keys(t, &path)?;
        let db: Db = Arc::new(Mutex::new(conn));
        let mut cache = self.cache.lock();
        // Another task may have opened it meanwhile; keep the first.
        if let Some(existing) = cache.find(t) {
            return Ok(existing);
        }
        cache.insert(t, &db);
        Ok(db)
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
            catalog::usable_keys(&c, t.as_str(), KeyPurpose::Db)?
        };
        if candidates.is_empty() {
            return Err(StoreError::NotFound);
        }
        let mut last = StoreError::WrongKey(path.to_path_buf());
        for (version, wrapped) in candidates {
            let key = keyring::unwrap(&self.master, t.as_str(), version, KeyPurpose::Db, &wrapped)
                .map_err(|e| StoreError::Key(e.to_string()))?;
            match open_encrypted(path, &key, false, self.busy_ms, &migrations::tenant()) {
                Ok(c) => return self.sized(c),
                Err(StoreError::WrongKey(p)) => last = StoreError::WrongKey(p),
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Re-key a tenant store from `old` to `new` (SQLCipher `PRAGMA rekey`) while holding its
    /// only connection, so requests for the tenant wait and none sees a half-switched handle.
    /// The outcome is proven with fresh connections (`new` opens, `old` does not) and the cached
    /// connection is **replaced** by a fresh one on the key that opens the file. When the store
    /// already opens with `new` (a crashed rotation that committed its rekey) nothing is
    /// re-encrypted. Returns `Key("rekey did not take effect")` when the file is still under `old`.
    pub fn rekey_blocking(&self, t: &TenantId, old: &Key256, new: &Key256) -> StoreResult<()> {
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
            if let Some(row) = super::try_read_now(self.catalog.db(), busy, &|c| {
                catalog::tenant_by_id(c, t.as_str())
            }) {
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
                catalog::tenant_by_id(&c, t.as_str())?
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

// ---------------------------------------------------------------- users

/// A tenant member.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UserRow {
    /// Id (UUID).
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// `owner|admin|tester|viewer`.
    pub role: String,
    /// `local`, `ldap` or `scim`.
    pub source: String,
    /// May log in.
    pub active: bool,
    /// The one-time password must be changed.
    pub must_change_password: bool,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Updated (RFC 3339).
    pub updated_at: String,
    /// PHC hash; never serialised.
    #[serde(skip)]
    pub password_hash: Option<String>,
}

const USER_COLS: &str =
    "id, email, display_name, role, source, active, must_change_password, created_at, updated_at, password_hash";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        email: r.get(1)?,
        display_name: r.get(2)?,
        role: r.get(3)?,
        source: r.get(4)?,
        active: r.get(5)?,
        must_change_password: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        password_hash: r.get(9)?,
    })
}

/// Insert a user; `ev` (if any) is audited in the same transaction. Duplicate email → Conflict.
pub fn insert_user(c: &mut Connection, u: &UserRow, ev: Option<&NewAuditEvent>) -> StoreResult<()> {
    insert_user_within(c, u, None, ev)
}

/// Insert a user if the tenant has fewer than `max_users` active users (None = unlimited),
/// counted inside the same `BEGIN IMMEDIATE` transaction so concurrent inserts cannot overshoot.
/// Over the limit → `Conflict("user_limit")`; duplicate email → `Conflict`.
pub fn insert_user_within(
    c: &mut Connection,
    u: &UserRow,
    max_users: Option<u32>,
    ev: Option<&NewAuditEvent>,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if u.active {
        check_user_limit(&tx, max_users)?;
    }
    tx.execute(
        "INSERT INTO users (id, email, display_name, role, password_hash, source, active, must_change_password, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![u.id, u.email, u.display_name, u.role, u.password_hash, u.source, u.active, u.must_change_password, u.created_at, u.updated_at],
    )?;
    if let Some(ev) = ev {
        audit::append(&tx, ev)?;
    }
    tx.commit()?;
    Ok(())
}

/// Refuse with `Conflict("user_limit")` when the tenant already has `max_users` active users
/// (None = unlimited). Call it inside the write transaction that adds or activates a user, so
/// concurrent requests cannot overshoot (they serialise on `BEGIN IMMEDIATE`).
pub fn check_user_limit(c: &Connection, max_users: Option<u32>) -> StoreResult<()> {
    if let Some(max) = max_users {
        let n: i64 = c.query_row("SELECT count(*) FROM users WHERE active = 1", [], |r| {
            r.get(0)
        })?;
        if n >= i64::from(max) {
            return Err(StoreError::Conflict("user_limit".into()));
        }
    }
    Ok(())
}

/// Find a user by email (case-insensitive).
pub fn user_by_email(c: &Connection, email: &str) -> StoreResult<Option<UserRow>> {
    Ok(c.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE email = ?1"),
        [email],
        user_from_row,
    )
    .optional()?)
}

/// Find a user by id.
pub fn user_by_id(c: &Connection, id: &str) -> StoreResult<Option<UserRow>> {
    Ok(
        c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
            .query_row([id], user_from_row)
            .optional()?,
    )
}

/// All users by email.
pub fn list_users(c: &Connection) -> StoreResult<Vec<UserRow>> {
    let mut s = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY email"))?;
    let rows = s.query_map([], user_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Count active owners.
pub fn count_active_owners(c: &Connection) -> StoreResult<i64> {
    Ok(c.query_row(
        "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
        [],
        |r| r.get(0),
    )?)
}

/// Change a user's role inside a transaction that re-checks the last-owner rule.
/// Returns `Conflict("last_owner")` when it would leave no active owner.
pub fn set_user_role(
    c: &mut Connection,
    id: &str,
    role: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "UPDATE users SET role = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, role, crate::domain::now_rfc3339()],
    )?;
    let owners: i64 = tx.query_row(
        "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
        [],
        |r| r.get(0),
    )?;
    if owners == 0 {
        return Err(StoreError::Conflict("last_owner".into()));
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Delete a user (sessions cascade) inside a transaction that re-checks the last-owner rule.
pub fn delete_user(c: &mut Connection, id: &str, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    let owners: i64 = tx.query_row(
        "SELECT count(*) FROM users WHERE role = 'owner' AND active = 1",
        [],
        |r| r.get(0),
    )?;
    if owners == 0 {
        return Err(StoreError::Conflict("last_owner".into()));
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Set a user's password, drop their other sessions, audit.
pub fn set_user_password(
    c: &mut Connection,
    id: &str,
    hash: &str,
    keep_session: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "UPDATE users SET password_hash = ?2, must_change_password = 0, updated_at = ?3 WHERE id = ?1",
        params![id, hash, crate::domain::now_rfc3339()],
    )?;
    tx.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND id_hash <> ?2",
        params![id, keep_session],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

// ---------------------------------------------------------------- sessions

/// Store a session.
pub fn insert_session(
    c: &Connection,
    id_hash: &str,
    user_id: &str,
    csrf_hash: &str,
    now: i64,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO sessions (id_hash, user_id, csrf_hash, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![id_hash, user_id, csrf_hash, now],
    )?;
    Ok(())
}

/// Look up a session.
pub fn session(c: &Connection, id_hash: &str) -> StoreResult<Option<SessionRow>> {
    // Cached statements (here and in the other per-request lookups): parsing the SQL again on
    // every request was a visible share of the authenticated request in the P2 profile.
    Ok(c.prepare_cached(
        "SELECT user_id, csrf_hash, created_at, last_seen FROM sessions WHERE id_hash = ?1",
    )?
    .query_row([id_hash], |r| {
        Ok(SessionRow {
            subject_id: r.get(0)?,
            csrf_hash: r.get(1)?,
            created_at: r.get(2)?,
            last_seen: r.get(3)?,
        })
    })
    .optional()?)
}

/// Refresh `last_seen`.
pub fn touch_session(c: &Connection, id_hash: &str, now: i64) -> StoreResult<()> {
    c.execute(
        "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1",
        params![id_hash, now],
    )?;
    Ok(())
}

/// Delete a session.
pub fn delete_session(c: &Connection, id_hash: &str) -> StoreResult<()> {
    c.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
    Ok(())
}

// ---------------------------------------------------------------- applications

/// An application under test.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ApplicationRow {
    /// Id (UUID).
    pub id: String,
    /// Unique name (case-insensitive).
    pub name: String,
    /// Base URL of the app under test.
    pub base_url: String,
    /// Source repository URL.
    pub repo_url: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Updated (RFC 3339).
    pub updated_at: String,
}

const APP_COLS: &str = "id, name, base_url, repo_url, created_at, updated_at";

fn app_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApplicationRow> {
    Ok(ApplicationRow {
        id: r.get(0)?,
        name: r.get(1)?,
        base_url: r.get(2)?,
        repo_url: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

/// Insert an application if the tenant has fewer than `max` (None = unlimited) — checked in the
/// same `BEGIN IMMEDIATE` transaction. Over the limit → `Conflict("plan_limit")`.
pub fn insert_application(
    c: &mut Connection,
    a: &ApplicationRow,
    max: Option<u32>,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if let Some(max) = max {
        let n: i64 = tx.query_row("SELECT count(*) FROM applications", [], |r| r.get(0))?;
        if n >= i64::from(max) {
            return Err(StoreError::Conflict("plan_limit".into()));
        }
    }
    tx.execute(
        &format!("INSERT INTO applications ({APP_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            a.id,
            a.name,
            a.base_url,
            a.repo_url,
            a.created_at,
            a.updated_at
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// List applications by name.
pub fn list_applications(c: &Connection) -> StoreResult<Vec<ApplicationRow>> {
    let mut s = c.prepare(&format!(
        "SELECT {APP_COLS} FROM applications ORDER BY name"
    ))?;
    let rows = s.query_map([], app_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One application.
pub fn application(c: &Connection, id: &str) -> StoreResult<Option<ApplicationRow>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {APP_COLS} FROM applications WHERE id = ?1"
    ))?
    .query_row([id], app_from_row)
    .optional()?)
}

/// Replace an application's fields; audited.
pub fn update_application(
    c: &mut Connection,
    a: &ApplicationRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE applications SET name = ?2, base_url = ?3, repo_url = ?4, updated_at = ?5 WHERE id = ?1",
        params![a.id, a.name, a.base_url, a.repo_url, a.updated_at],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Delete an application (its agent tokens cascade); audited.
///
/// Its runs (with their steps and screenshot rows) go in the same transaction; flows, variables,
/// webhook tokens and agent tokens cascade. Returns the object ids of the deleted screenshots,
/// whose encrypted files the caller removes after the commit.
pub fn delete_application(
    c: &mut Connection,
    id: &str,
    ev: &NewAuditEvent,
) -> StoreResult<Vec<String>> {
    let tx = write_tx(c)?;
    let shots = super::flows::delete_runs_in(&tx, "application_id = ?1", id)?.screenshots;
    let n = tx.execute("DELETE FROM applications WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(shots)
}

// ---------------------------------------------------------------- service tokens

/// An agent or SCIM token (never the secret itself).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ServiceTokenRow {
    /// Id (UUID).
    pub id: String,
    /// `agent` or `scim`.
    pub kind: String,
    /// Application an agent token is scoped to.
    pub application_id: Option<String>,
    /// Label.
    pub name: String,
    /// Visible prefix, e.g. `fga_eus-7k2m9q_AbC…` (first chars only).
    pub prefix: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Creator email.
    pub created_by: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
    /// SHA-256 of the token; never serialised.
    #[serde(skip)]
    pub token_hash: String,
}

const TOKEN_COLS: &str =
    "id, kind, application_id, name, prefix, created_at, created_by, revoked_at, token_hash";

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceTokenRow> {
    Ok(ServiceTokenRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        application_id: r.get(2)?,
        name: r.get(3)?,
        prefix: r.get(4)?,
        created_at: r.get(5)?,
        created_by: r.get(6)?,
        revoked_at: r.get(7)?,
        token_hash: r.get(8)?,
    })
}

/// Insert a token; audited. An agent token's application must exist (else NotFound).
pub fn insert_token(
    c: &mut Connection,
    t: &ServiceTokenRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if let Some(app) = &t.application_id {
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM applications WHERE id = ?1)",
            [app],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(StoreError::NotFound);
        }
    }
    tx.execute(
        &format!(
            "INSERT INTO service_tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ),
        params![
            t.id,
            t.kind,
            t.application_id,
            t.name,
            t.prefix,
            t.created_at,
            t.created_by,
            t.revoked_at,
            t.token_hash
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Tokens of one kind, newest first.
pub fn list_tokens(c: &Connection, kind: &str) -> StoreResult<Vec<ServiceTokenRow>> {
    let mut s = c.prepare(&format!(
        "SELECT {TOKEN_COLS} FROM service_tokens WHERE kind = ?1 ORDER BY created_at DESC"
    ))?;
    let rows = s.query_map([kind], token_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An unrevoked token by digest.
pub fn active_token_by_hash(c: &Connection, hash: &str) -> StoreResult<Option<ServiceTokenRow>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TOKEN_COLS} FROM service_tokens WHERE token_hash = ?1 AND revoked_at IS NULL"
    ))?
    .query_row([hash], token_from_row)
    .optional()?)
}

/// Revoke a token of `kind`; audited. Unknown or already revoked → NotFound.
pub fn revoke_token(
    c: &mut Connection,
    id: &str,
    kind: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE service_tokens SET revoked_at = ?3 WHERE id = ?1 AND kind = ?2 AND revoked_at IS NULL",
        params![id, kind, crate::domain::now_rfc3339()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Append an audit row on its own (e.g. `login.failure`).
pub fn append_audit(c: &mut Connection, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

// ---------------------------------------------------------------- key lifecycle (issue 4)

/// The key-version fence: the lowest DEK version a new ciphertext may carry.
pub fn dek_fence(c: &Connection) -> StoreResult<u32> {
    Ok(c.query_row(
        "SELECT min_dek_version FROM key_state WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

/// Raise the fence to `version` (never lowers it) and append `ev` in the same transaction.
/// Returns false (and audits nothing) when the fence already stood at `version` or above.
pub fn raise_dek_fence(c: &mut Connection, version: u32, ev: &NewAuditEvent) -> StoreResult<bool> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE key_state SET min_dek_version = ?1 WHERE id = 1 AND min_dek_version < ?1",
        [version],
    )?;
    if n == 0 {
        return Ok(false);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(true)
}

/// Inside a write transaction: refuse a ciphertext sealed under DEK `version` when a rotation
/// has raised the fence above it (`Conflict("key_rotated")`; the caller re-seals and retries).
pub fn check_dek_fence(tx: &Connection, version: u32) -> StoreResult<()> {
    if version < dek_fence(tx)? {
        return Err(StoreError::Conflict("key_rotated".into()));
    }
    Ok(())
}

/// An envelope-encrypted column of the tenant store: its table, the column, and the key columns
/// whose values (in this order) are part of the ciphertext's AAD.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    /// Table name.
    pub table: &'static str,
    /// Column holding envelope ciphertexts (BLOB).
    pub column: &'static str,
    /// Key columns (TEXT), in AAD order.
    pub key_columns: &'static [&'static str],
}

/// Re-seal one batch of `col`: rows with `rowid > after` (at most `limit`), in one write
/// transaction. `f(key values, ciphertext)` returns the replacement, or `None` to keep the row.
/// Returns (rows scanned, rows replaced, last rowid scanned); 0 scanned means the end.
pub fn reseal_batch(
    c: &mut Connection,
    col: &SealedColumn,
    after: i64,
    limit: usize,
    mut f: impl FnMut(&[String], &[u8]) -> StoreResult<Option<Vec<u8>>>,
) -> StoreResult<(usize, usize, i64)> {
    let keys = col.key_columns.join(", ");
    let select = format!(
        "SELECT rowid, {col}, {keys} FROM {table} WHERE rowid > ?1 AND {col} IS NOT NULL ORDER BY rowid LIMIT ?2",
        col = col.column,
        table = col.table,
    );
    let update = format!(
        "UPDATE {table} SET {col} = ?2 WHERE rowid = ?1 AND {col} = ?3",
        col = col.column,
        table = col.table,
    );
    let tx = write_tx(c)?;
    let rows: Vec<(i64, Vec<u8>, Vec<String>)> = {
        let mut s = tx.prepare(&select)?;
        let n = col.key_columns.len();
        let rows = s.query_map(params![after, limit as i64], |r| {
            let mut k = Vec::with_capacity(n);
            for i in 0..n {
                k.push(r.get(2 + i)?);
            }
            Ok((r.get(0)?, r.get(1)?, k))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut changed = 0;
    let mut last = after;
    {
        let mut up = tx.prepare(&update)?;
        for (rowid, sealed, key) in &rows {
            last = *rowid;
            if let Some(new) = f(key, sealed)? {
                changed += up.execute(params![rowid, new, sealed])?;
            }
        }
    }
    tx.commit()?;
    Ok((rows.len(), changed, last))
}

/// Cells anywhere in the store that hold an envelope ciphertext (`FGE1` header) sealed under a
/// DEK version below `version`: (table, column, count) for each column with any. The safety net
/// before a DEK is destroyed, covering columns nobody registered for rewrap.
pub fn sealed_below(c: &Connection, version: u32) -> StoreResult<Vec<(String, String, i64)>> {
    let tables: Vec<String> = {
        let mut s = c.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let rows = s.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let v = version.to_be_bytes().to_vec();
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = {
            let mut s = c.prepare("SELECT name FROM pragma_table_info(?1)")?;
            let rows = s.query_map([&t], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for col in cols {
            let q = format!(
                "SELECT count(*) FROM \"{t}\" WHERE typeof(\"{col}\") = 'blob'
                 AND substr(\"{col}\", 1, 4) = X'46474531' AND substr(\"{col}\", 5, 4) < ?1",
                t = t.replace('"', "\"\""),
                col = col.replace('"', "\"\""),
            );
            let n: i64 = c.query_row(&q, [&v], |r| r.get(0))?;
            if n > 0 {
                out.push((t.clone(), col, n));
            }
        }
    }
    Ok(out)
}

/// Screenshots whose recorded key version is below `version` (at most `limit`), by id.
pub fn screenshots_below(
    c: &Connection,
    version: u32,
    limit: usize,
) -> StoreResult<Vec<super::flows::ShotRow>> {
    let mut s = c.prepare(
        "SELECT id, run_id, step_index, key_version FROM screenshots WHERE key_version < ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = s.query_map(params![version, limit as i64], |r| {
        Ok(super::flows::ShotRow {
            id: r.get(0)?,
            run_id: r.get(1)?,
            step_index: r.get(2)?,
            key_version: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Count screenshots whose recorded key version is below `version`.
pub fn count_screenshots_below(c: &Connection, version: u32) -> StoreResult<i64> {
    Ok(c.query_row(
        "SELECT count(*) FROM screenshots WHERE key_version < ?1",
        [version],
        |r| r.get(0),
    )?)
}

/// Record that screenshot `id` is now sealed under `version`. False when the row is gone
/// (replaced or deleted meanwhile).
pub fn set_screenshot_version(c: &Connection, id: &str, version: u32) -> StoreResult<bool> {
    Ok(c.execute(
        "UPDATE screenshots SET key_version = ?2 WHERE id = ?1 AND key_version < ?2",
        params![id, version],
    )? > 0
        || c.query_row(
            "SELECT EXISTS (SELECT 1 FROM screenshots WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )?)
}

/// Count the rows of a sealed column (for progress reporting).
pub fn count_sealed(c: &Connection, col: &SealedColumn) -> StoreResult<i64> {
    Ok(c.query_row(
        &format!(
            "SELECT count(*) FROM {} WHERE {} IS NOT NULL",
            col.table, col.column
        ),
        [],
        |r| r.get(0),
    )?)
}
