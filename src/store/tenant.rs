//! Per-tenant stores (`<data>/tenants/<tenant_id>.db`), each a SQLCipher file opened with the
//! tenant's own raw key, opened lazily and held in a bounded LRU (after meilisearch's
//! `IndexMapper`). Also the tenant-side SQL: users, sessions, applications, service tokens.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
pub struct TenantStores {
    dir: PathBuf,
    master: Arc<MasterKey>,
    catalog: Catalog,
    busy_ms: u64,
    cache: Mutex<LruCache<TenantId, Db>>,
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
            cache: Mutex::new(LruCache::new(cap)),
        }
    }

    /// File of one tenant store.
    pub fn path_of(&self, t: &TenantId) -> PathBuf {
        self.dir.join(format!("{}.db", t.as_str()))
    }

    /// Number of stores currently open.
    pub fn open_count(&self) -> usize {
        self.cache.lock().len()
    }

    /// Create a tenant store file with `key` (used when creating a tenant).
    pub fn create_file(&self, t: &TenantId, key: &Key256) -> StoreResult<Connection> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path_of(t);
        if path.exists() {
            return Err(StoreError::Conflict(format!(
                "store for {t} already exists"
            )));
        }
        open_encrypted(&path, key, true, self.busy_ms, &migrations::tenant())
    }

    /// Get the open store of a tenant, opening it (blocking) when it is not cached.
    pub fn get_blocking(&self, t: &TenantId) -> StoreResult<Db> {
        if let Some(db) = self.cache.lock().get(t) {
            return Ok(db.clone());
        }
        let (version, wrapped) = {
            let c = self.catalog.db().lock();
            catalog::active_key(&c, t.as_str(), KeyPurpose::Db)?
        };
        let key = keyring::unwrap(&self.master, t.as_str(), version, KeyPurpose::Db, &wrapped)
            .map_err(|e| StoreError::Key(e.to_string()))?;
        let path = self.path_of(t);
        if !path.is_file() {
            return Err(StoreError::NotFound);
        }
        let conn = open_encrypted(&path, &key, false, self.busy_ms, &migrations::tenant())?;
        let db: Db = Arc::new(Mutex::new(conn));
        let mut cache = self.cache.lock();
        // Another task may have opened it meanwhile; keep the first.
        if let Some(existing) = cache.get(t) {
            return Ok(existing.clone());
        }
        cache.put(t.clone(), db.clone());
        Ok(db)
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
    if let Some(max) = max_users {
        let n: i64 = tx.query_row("SELECT count(*) FROM users WHERE active = 1", [], |r| {
            r.get(0)
        })?;
        if u.active && n >= i64::from(max) {
            return Err(StoreError::Conflict("user_limit".into()));
        }
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
    Ok(c.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
        [id],
        user_from_row,
    )
    .optional()?)
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
    Ok(c.query_row(
        "SELECT user_id, csrf_hash, created_at, last_seen FROM sessions WHERE id_hash = ?1",
        [id_hash],
        |r| {
            Ok(SessionRow {
                subject_id: r.get(0)?,
                csrf_hash: r.get(1)?,
                created_at: r.get(2)?,
                last_seen: r.get(3)?,
            })
        },
    )
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
    Ok(c.query_row(
        &format!("SELECT {APP_COLS} FROM applications WHERE id = ?1"),
        [id],
        app_from_row,
    )
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
pub fn delete_application(c: &mut Connection, id: &str, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute("DELETE FROM applications WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
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
    Ok(c.query_row(
        &format!(
            "SELECT {TOKEN_COLS} FROM service_tokens WHERE token_hash = ?1 AND revoked_at IS NULL"
        ),
        [hash],
        token_from_row,
    )
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
