//! The catalog store (`<data>/catalog.db`): tenants with region and plan, wrapped tenant key sets,
//! platform admins and their sessions, login-failure counters and the catalog audit chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::sessions::SessionRow;
use super::{audit, migrations, open_encrypted, write_tx, Conflict, Db, StoreError, StoreResult};
use crate::audit::NewAuditEvent;
use crate::crypto::keyring::{KeyPurpose, WrappedKey};
use crate::crypto::MasterKey;
use crate::domain::{now_rfc3339, TenantId};

/// File name of the catalog inside the data dir.
pub const CATALOG_FILE: &str = "catalog.db";

/// `tenants.status` of a suspended tenant (its users and tokens are refused; data is kept).
pub const TENANT_SUSPENDED: &str = "suspended";

/// A tenant as the catalog knows it. Serialize only for `flowguard tenant list --json`; the
/// API sends `http::routes::platform::Tenant`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantRow {
    /// Tenant id (`<region>-<random>`).
    pub id: TenantId,
    /// Unique display name.
    pub name: String,
    /// Home region.
    pub region: String,
    /// Plan: `free|pro|business|enterprise`.
    pub plan: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// `active` or `suspended` (a suspended tenant's users and tokens are refused; data is kept).
    pub status: String,
    /// The tenant's plan follows the license in force (the bootstrap tenant, until a
    /// PlatformAdmin sets its plan explicitly); `plan` is then ignored for entitlements.
    pub plan_follows_license: bool,
}

/// A platform admin credential row.
#[derive(Debug, Clone)]
pub struct PlatformAdminRow {
    /// Id.
    pub id: String,
    /// Email.
    pub email: String,
    /// PHC argon2id hash.
    pub password_hash: String,
    /// Must change the one-time password.
    pub must_change_password: bool,
}

/// Login-failure counter state for one key.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailureState {
    /// Failures in the current window.
    pub failures: u32,
    /// Locked until (unix seconds); 0 when not locked.
    pub locked_until: i64,
    /// Last failure (unix seconds).
    pub last_failure: i64,
}

/// Handle on the open catalog.
#[derive(Clone)]
pub struct Catalog {
    db: Db,
    path: PathBuf,
    busy_ms: u64,
}

impl Catalog {
    /// Path of the catalog under `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(CATALOG_FILE)
    }

    /// Open (or create when `create`) the catalog with the key derived from the master key.
    /// A wrong master key gives [`StoreError::WrongKey`].
    pub fn open(
        data_dir: &Path,
        master: &MasterKey,
        create: bool,
        busy_ms: u64,
    ) -> StoreResult<Self> {
        let path = Self::path_in(data_dir);
        let conn = open_encrypted(
            &path,
            &master.catalog_db_key(),
            create,
            busy_ms,
            &migrations::catalog(),
        )?;
        Ok(Self {
            db: Arc::new(Mutex::new(conn)),
            path,
            busy_ms,
        })
    }

    /// The shared connection (for [`super::run`]).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Catalog file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` off the executor.
    pub async fn run<F, R>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        super::run(&self.db, f).await
    }

    /// Run the short, bounded read `f` (see [`super::read`]): inline when the connection is
    /// free, else off the executor.
    pub async fn read<F, R>(&self, f: F) -> StoreResult<R>
    where
        F: Fn(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        super::read(&self.db, self.busy_ms, f).await
    }

    /// Busy timeout of catalog connections (ms).
    /// Run `f` on the catalog connection on the calling thread, holding the connection's lock
    /// for `f` only: for code that already runs off the async executor (key rotation, jobs, the
    /// CLI). Async callers use [`Catalog::run`] / [`Catalog::read`].
    pub fn blocking<R>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<R>) -> StoreResult<R> {
        let mut c = self.db.lock();
        f(&mut c)
    }

    pub fn busy_ms(&self) -> u64 {
        self.busy_ms
    }
}

/// Insert a tenant, its wrapped key set (version 1, active) and a `tenant.create` catalog audit
/// row in one transaction.
pub fn insert_tenant(
    c: &mut Connection,
    t: &TenantRow,
    db_key: &WrappedKey,
    dek: &WrappedKey,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "INSERT INTO tenants (id, name, region, plan, created_at, plan_follows_license) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![t.id.as_str(), t.name, t.region, t.plan, t.created_at, t.plan_follows_license],
    )?;
    for (purpose, w) in [(KeyPurpose::Db, db_key), (KeyPurpose::Dek, dek)] {
        tx.execute(
            "INSERT INTO tenant_keys (tenant_id, version, purpose, nonce, wrapped, state, created_at)
             VALUES (?1, 1, ?2, ?3, ?4, 'active', ?5)",
            params![t.id.as_str(), purpose.as_str(), w.nonce, w.ciphertext, t.created_at],
        )?;
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Parse a stored tenant id (a row that does not hold a valid id is a corrupt store).
fn tenant_id_at(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<TenantId> {
    let raw: String = r.get(idx)?;
    TenantId::parse(&raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("stored tenant id: {}", e.0).into(),
        )
    })
}

fn tenant_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRow> {
    Ok(TenantRow {
        id: tenant_id_at(r, 0)?,
        name: r.get(1)?,
        region: r.get(2)?,
        plan: r.get(3)?,
        created_at: r.get(4)?,
        status: r.get(5)?,
        plan_follows_license: r.get(6)?,
    })
}

/// The tenant with exactly this id (the per-request lookup: a cached statement on the primary
/// key; [`find_tenant`] also matches names).
pub fn tenant_by_id(c: &Connection, id: &TenantId) -> StoreResult<Option<TenantRow>> {
    Ok(c.prepare_cached(
        "SELECT id, name, region, plan, created_at, status, plan_follows_license FROM tenants WHERE id = ?1",
    )?
    .query_row([id.as_str()], tenant_from_row)
    .optional()?)
}

/// Find a tenant by id or (case-insensitive) unique name.
pub fn find_tenant(c: &Connection, id_or_name: &str) -> StoreResult<Option<TenantRow>> {
    Ok(c.query_row(
        "SELECT id, name, region, plan, created_at, status, plan_follows_license FROM tenants
         WHERE id = ?1 OR name = ?1 COLLATE NOCASE ORDER BY (id = ?1) DESC LIMIT 1",
        [id_or_name],
        tenant_from_row,
    )
    .optional()?)
}

/// Readiness probe: the catalog answers a query (`SELECT count(*) FROM tenants`).
pub fn ready_check(c: &Connection) -> StoreResult<()> {
    c.query_row("SELECT count(*) FROM tenants", [], |r| r.get::<_, i64>(0))?;
    Ok(())
}

/// All tenants, oldest first.
pub fn list_tenants(c: &Connection) -> StoreResult<Vec<TenantRow>> {
    let mut s = c.prepare(
        "SELECT id, name, region, plan, created_at, status, plan_follows_license FROM tenants ORDER BY created_at, id",
    )?;
    let rows = s.query_map([], tenant_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether any tenant exists.
pub fn has_tenants(c: &Connection) -> StoreResult<bool> {
    Ok(c.query_row("SELECT EXISTS (SELECT 1 FROM tenants)", [], |r| r.get(0))?)
}

/// Whether the catalog holds no row at all of a deployment's history: no tenant, platform
/// admin, audit row or backup (a first start, or one that stopped before bootstrapping). Only
/// then may start-up create key files (`startup::build_state`).
pub fn is_pristine(c: &Connection) -> StoreResult<bool> {
    Ok(c.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM tenants)
            AND NOT EXISTS (SELECT 1 FROM platform_admins)
            AND NOT EXISTS (SELECT 1 FROM audit)
            AND NOT EXISTS (SELECT 1 FROM backups)",
        [],
        |r| r.get(0),
    )?)
}

/// The active wrapped key of `purpose` for a tenant, with its version.
pub fn active_key(
    c: &Connection,
    tenant: &TenantId,
    purpose: KeyPurpose,
) -> StoreResult<(u32, WrappedKey)> {
    c.query_row(
        "SELECT version, nonce, wrapped FROM tenant_keys
         WHERE tenant_id = ?1 AND purpose = ?2 AND state = 'active'
         ORDER BY version DESC LIMIT 1",
        params![tenant.as_str(), purpose.as_str()],
        |r| {
            Ok((
                r.get(0)?,
                WrappedKey {
                    nonce: r.get(1)?,
                    ciphertext: r.get(2)?,
                },
            ))
        },
    )
    .map_err(StoreError::from)
}

/// A specific wrapped key version of `purpose` for a tenant, while it is pending or active
/// (a retired key's material is destroyed: `NotFound`).
pub fn key_version(
    c: &Connection,
    tenant: &TenantId,
    purpose: KeyPurpose,
    version: u32,
) -> StoreResult<WrappedKey> {
    c.query_row(
        "SELECT nonce, wrapped FROM tenant_keys WHERE tenant_id = ?1 AND purpose = ?2 AND version = ?3 AND state <> 'retired'",
        params![tenant.as_str(), purpose.as_str(), version],
        |r| Ok(WrappedKey { nonce: r.get(0)?, ciphertext: r.get(1)? }),
    )
    .map_err(StoreError::from)
}

/// Insert a platform admin (with a `platform_admin.create` catalog audit row).
pub fn insert_platform_admin(
    c: &mut Connection,
    a: &PlatformAdminRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "INSERT INTO platform_admins (id, email, password_hash, must_change_password, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            a.id,
            a.email,
            a.password_hash,
            a.must_change_password,
            now_rfc3339()
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

fn admin_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PlatformAdminRow> {
    Ok(PlatformAdminRow {
        id: r.get(0)?,
        email: r.get(1)?,
        password_hash: r.get(2)?,
        must_change_password: r.get(3)?,
    })
}

/// Find a platform admin by email.
pub fn find_platform_admin(c: &Connection, email: &str) -> StoreResult<Option<PlatformAdminRow>> {
    Ok(c.query_row(
        "SELECT id, email, password_hash, must_change_password FROM platform_admins WHERE email = ?1",
        [email],
        admin_from_row,
    )
    .optional()?)
}

/// Find a platform admin by id.
pub fn platform_admin_by_id(c: &Connection, id: &str) -> StoreResult<Option<PlatformAdminRow>> {
    Ok(c.query_row(
        "SELECT id, email, password_hash, must_change_password FROM platform_admins WHERE id = ?1",
        [id],
        admin_from_row,
    )
    .optional()?)
}

/// Set a platform admin's password hash, drop their other sessions, and audit.
pub fn set_platform_admin_password(
    c: &mut Connection,
    id: &str,
    hash: &str,
    keep_session: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "UPDATE platform_admins SET password_hash = ?2, must_change_password = 0 WHERE id = ?1",
        params![id, hash],
    )?;
    tx.execute(
        "DELETE FROM platform_sessions WHERE admin_id = ?1 AND id_hash <> ?2",
        params![id, keep_session],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Store a platform session.
pub fn insert_platform_session(
    c: &Connection,
    id_hash: &str,
    admin_id: &str,
    csrf_hash: &str,
    now: i64,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO platform_sessions (id_hash, admin_id, csrf_hash, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![id_hash, admin_id, csrf_hash, now],
    )?;
    Ok(())
}

/// Look up a platform session.
pub fn platform_session(c: &Connection, id_hash: &str) -> StoreResult<Option<SessionRow>> {
    Ok(c.query_row(
        "SELECT admin_id, csrf_hash, created_at, last_seen FROM platform_sessions WHERE id_hash = ?1",
        [id_hash],
        |r| Ok(SessionRow { subject_id: r.get(0)?, csrf_hash: r.get(1)?, created_at: r.get(2)?, last_seen: r.get(3)? }),
    )
    .optional()?)
}

/// Refresh `last_seen` of a platform session.
pub fn touch_platform_session(c: &Connection, id_hash: &str, now: i64) -> StoreResult<()> {
    c.execute(
        "UPDATE platform_sessions SET last_seen = ?2 WHERE id_hash = ?1",
        params![id_hash, now],
    )?;
    Ok(())
}

/// Delete a platform session.
pub fn delete_platform_session(c: &Connection, id_hash: &str) -> StoreResult<()> {
    c.execute(
        "DELETE FROM platform_sessions WHERE id_hash = ?1",
        [id_hash],
    )?;
    Ok(())
}

/// Read a login-failure counter.
pub fn failure_state(c: &Connection, scope: &str, key: &str) -> StoreResult<FailureState> {
    Ok(c.query_row(
        "SELECT failures, locked_until, last_failure FROM login_failures WHERE scope = ?1 AND key = ?2",
        params![scope, key],
        |r| Ok(FailureState { failures: r.get(0)?, locked_until: r.get(1)?, last_failure: r.get(2)? }),
    )
    .optional()?
    .unwrap_or_default())
}

/// Write a login-failure counter.
pub fn put_failure_state(
    c: &Connection,
    scope: &str,
    key: &str,
    account: Option<&str>,
    s: FailureState,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO login_failures (scope, key, account, failures, locked_until, last_failure)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (scope, key) DO UPDATE SET failures = ?4, locked_until = ?5, last_failure = ?6",
        params![scope, key, account, s.failures, s.locked_until, s.last_failure],
    )?;
    Ok(())
}

/// Forget a counter (after a successful login).
pub fn clear_failures(c: &Connection, scope: &str, key: &str) -> StoreResult<()> {
    c.execute(
        "DELETE FROM login_failures WHERE scope = ?1 AND key = ?2",
        params![scope, key],
    )?;
    Ok(())
}

/// Break-glass unlock: drop every per-pair counter for `account` (normalised email, optionally
/// limited to `tenant`). Returns how many counters were removed; writes a catalog audit row.
pub fn unlock_account(
    c: &mut Connection,
    account: &str,
    tenant: Option<&str>,
    ev: &NewAuditEvent,
) -> StoreResult<usize> {
    let tx = write_tx(c)?;
    let n = match tenant {
        Some(t) => tx.execute(
            "DELETE FROM login_failures WHERE scope = 'pair' AND account = ?1 AND key LIKE ?2 || '|%'",
            params![account, t],
        )?,
        None => tx.execute("DELETE FROM login_failures WHERE scope = 'pair' AND account = ?1", [account])?,
    };
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(n)
}

/// Append a catalog audit row on its own.
pub fn append_audit(c: &mut Connection, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

// ---------------------------------------------------------------- key lifecycle (issue 4)

/// One wrapped tenant key as the catalog lists it (never the material itself).
#[derive(Debug, Clone)]
pub struct TenantKeyRow {
    /// Key-set version.
    pub version: u32,
    /// `db` or `dek`.
    pub purpose: String,
    /// `pending`, `active` or `retired`.
    pub state: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Retired (RFC 3339), once retired.
    pub retired_at: Option<String>,
}

/// Every key row of a tenant, by version then purpose.
pub fn tenant_keys(c: &Connection, tenant: &TenantId) -> StoreResult<Vec<TenantKeyRow>> {
    let mut s = c.prepare(
        "SELECT version, purpose, state, created_at, retired_at FROM tenant_keys
         WHERE tenant_id = ?1 ORDER BY version, purpose",
    )?;
    let rows = s.query_map([tenant.as_str()], |r| {
        Ok(TenantKeyRow {
            version: r.get(0)?,
            purpose: r.get(1)?,
            state: r.get(2)?,
            created_at: r.get(3)?,
            retired_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The wrapped keys of `purpose` a store may currently be opened or read with: the active one
/// first, then pending ones (newest first). During a rotation the tenant store is under one of
/// these at every instant.
pub fn usable_keys(
    c: &Connection,
    tenant: &TenantId,
    purpose: KeyPurpose,
) -> StoreResult<Vec<(u32, WrappedKey)>> {
    let mut s = c.prepare(
        "SELECT version, nonce, wrapped FROM tenant_keys
         WHERE tenant_id = ?1 AND purpose = ?2 AND state IN ('active', 'pending')
         ORDER BY state = 'active' DESC, version DESC",
    )?;
    let rows = s.query_map(params![tenant.as_str(), purpose.as_str()], |r| {
        Ok((
            r.get(0)?,
            WrappedKey {
                nonce: r.get(1)?,
                ciphertext: r.get(2)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The DEK new ciphertexts are sealed with: the pending version during a rotation, else the
/// active one.
pub fn sealing_dek(c: &Connection, tenant: &TenantId) -> StoreResult<(u32, WrappedKey)> {
    c.query_row(
        "SELECT version, nonce, wrapped FROM tenant_keys
         WHERE tenant_id = ?1 AND purpose = 'dek' AND state IN ('active', 'pending')
         ORDER BY version DESC LIMIT 1",
        [tenant.as_str()],
        |r| {
            Ok((
                r.get(0)?,
                WrappedKey {
                    nonce: r.get(1)?,
                    ciphertext: r.get(2)?,
                },
            ))
        },
    )
    .map_err(StoreError::from)
}

/// Record a new key set `version` as `pending` (both purposes), fsynced before returning. Fails
/// with `Conflict("rotation_pending")` when the tenant already has a pending version and with
/// `Conflict("stale_version")` when `version` is not above every existing one.
pub fn insert_pending_keys(
    c: &mut Connection,
    tenant: &TenantId,
    version: u32,
    db_key: &WrappedKey,
    dek: &WrappedKey,
    created_at: &str,
) -> StoreResult<()> {
    super::durably(c, |c| {
        let tx = write_tx(c)?;
        let (pending, max): (i64, Option<u32>) = tx.query_row(
            "SELECT count(*) FILTER (WHERE state = 'pending'), max(version) FROM tenant_keys WHERE tenant_id = ?1",
            [tenant.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if pending > 0 {
            return Err(StoreError::Conflict(Conflict::RotationPending));
        }
        if max.is_some_and(|m| m >= version) {
            return Err(StoreError::Conflict(Conflict::StaleVersion));
        }
        for (purpose, w) in [(KeyPurpose::Db, db_key), (KeyPurpose::Dek, dek)] {
            tx.execute(
                "INSERT INTO tenant_keys (tenant_id, version, purpose, nonce, wrapped, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
                params![tenant.as_str(), version, purpose.as_str(), w.nonce, w.ciphertext, created_at],
            )?;
        }
        tx.commit()?;
        Ok(())
    })
}

/// After the tenant store was proven re-keyed to `version`: make that database key active and
/// retire every older database key, destroying its wrapped material (fsynced). Idempotent.
pub fn activate_db_key(
    c: &mut Connection,
    tenant: &TenantId,
    version: u32,
    now: &str,
) -> StoreResult<()> {
    super::durably(c, |c| {
        let tx = write_tx(c)?;
        tx.execute(
            "UPDATE tenant_keys SET state = 'active'
             WHERE tenant_id = ?1 AND purpose = 'db' AND version = ?2 AND state = 'pending'",
            params![tenant.as_str(), version],
        )?;
        let active: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM tenant_keys WHERE tenant_id = ?1 AND purpose = 'db' AND version = ?2 AND state = 'active')",
            params![tenant.as_str(), version],
            |r| r.get(0),
        )?;
        if !active {
            return Err(StoreError::Conflict(Conflict::NoSuchVersion));
        }
        retire_below(&tx, tenant, KeyPurpose::Db, version, now)?;
        tx.commit()?;
        Ok(())
    })
}

fn retire_below(
    tx: &Connection,
    tenant: &TenantId,
    purpose: KeyPurpose,
    version: u32,
    now: &str,
) -> StoreResult<usize> {
    Ok(tx.execute(
        "UPDATE tenant_keys SET state = 'retired', nonce = X'', wrapped = X'', next_nonce = NULL,
                next_wrapped = NULL, next_kek = NULL, retired_at = ?4
         WHERE tenant_id = ?1 AND purpose = ?2 AND version < ?3 AND state <> 'retired'",
        params![tenant.as_str(), purpose.as_str(), version, now],
    )?)
}

/// Finish a rotation to `version`: its DEK becomes active, every older DEK is retired and its
/// wrapped material destroyed, and `ev` (`key.rotate`) is appended to the catalog audit — one
/// fsynced transaction. Requires the database key of `version` to be active already
/// (`Conflict("db_key_not_active")`). Returns how many old DEK versions were retired.
pub fn finish_rotation(
    c: &mut Connection,
    tenant: &TenantId,
    version: u32,
    now: &str,
    ev: &NewAuditEvent,
) -> StoreResult<usize> {
    super::durably(c, |c| {
        let tx = write_tx(c)?;
        let db_active: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM tenant_keys WHERE tenant_id = ?1 AND purpose = 'db' AND version = ?2 AND state = 'active')",
            params![tenant.as_str(), version],
            |r| r.get(0),
        )?;
        if !db_active {
            return Err(StoreError::Conflict(Conflict::DbKeyNotActive));
        }
        tx.execute(
            "UPDATE tenant_keys SET state = 'active'
             WHERE tenant_id = ?1 AND purpose = 'dek' AND version = ?2 AND state = 'pending'",
            params![tenant.as_str(), version],
        )?;
        let n = retire_below(&tx, tenant, KeyPurpose::Dek, version, now)?;
        audit::append(&tx, ev)?;
        tx.commit()?;
        Ok(n)
    })
}

/// A wrapped key to re-wrap under a new master key.
#[derive(Debug, Clone)]
pub struct KeyMaterialRow {
    /// Tenant id.
    pub tenant: String,
    /// Version.
    pub version: u32,
    /// `db` or `dek`.
    pub purpose: KeyPurpose,
    /// Material under the current master key.
    pub wrapped: WrappedKey,
}

fn purpose_of(s: &str) -> rusqlite::Result<KeyPurpose> {
    match s {
        "db" => Ok(KeyPurpose::Db),
        "dek" => Ok(KeyPurpose::Dek),
        other => Err(rusqlite::Error::InvalidColumnType(
            0,
            format!("purpose {other}"),
            rusqlite::types::Type::Text,
        )),
    }
}

/// Every tenant key that still has wrapped material (pending and active ones; retired keys were
/// destroyed).
pub fn key_material(c: &Connection) -> StoreResult<Vec<KeyMaterialRow>> {
    let mut s = c.prepare(
        "SELECT tenant_id, version, purpose, nonce, wrapped FROM tenant_keys
         WHERE state <> 'retired' AND length(wrapped) > 0 ORDER BY tenant_id, version, purpose",
    )?;
    let rows = s.query_map([], |r| {
        Ok(KeyMaterialRow {
            tenant: r.get(0)?,
            version: r.get(1)?,
            purpose: purpose_of(&r.get::<_, String>(2)?)?,
            wrapped: WrappedKey {
                nonce: r.get(3)?,
                ciphertext: r.get(4)?,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Set a tenant's status (`active|suspended`) with its catalog audit row. Returns false (and
/// writes nothing) when the tenant does not exist or already has that status.
pub fn set_tenant_status(
    c: &mut Connection,
    id: &TenantId,
    status: &str,
    ev: &NewAuditEvent,
) -> StoreResult<bool> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE tenants SET status = ?2, status_changed_at = ?3 WHERE id = ?1 AND status <> ?2",
        params![id.as_str(), status, now_rfc3339()],
    )?;
    if n == 0 {
        return Ok(false);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(true)
}

/// Assign a tenant's plan with its catalog audit row. Returns false when the tenant is unknown.
pub fn set_tenant_plan(
    c: &mut Connection,
    id: &TenantId,
    plan: &str,
    ev: &NewAuditEvent,
) -> StoreResult<bool> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE tenants SET plan = ?2, plan_follows_license = 0 WHERE id = ?1",
        params![id.as_str(), plan],
    )?;
    if n == 0 {
        return Ok(false);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(true)
}

/// An entry of the license revocation list.
#[derive(Debug, Clone)]
pub struct RevocationRow {
    /// The revoked license id (`jti`).
    pub license_id: String,
    /// Free-text reason given by the PlatformAdmin.
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub revoked_at: String,
    /// Who (email, or `host-cli`).
    pub revoked_by: String,
}

/// Add a license id to the revocation list with its `license.revoke` audit row. An id already
/// listed → `Conflict`.
pub fn insert_revocation(
    c: &mut Connection,
    r: &RevocationRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "INSERT INTO license_revocations (license_id, reason, revoked_at, revoked_by) VALUES (?1, ?2, ?3, ?4)",
        params![r.license_id, r.reason, r.revoked_at, r.revoked_by],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// The revocation list, oldest first.
pub fn list_revocations(c: &Connection) -> StoreResult<Vec<RevocationRow>> {
    let mut s = c.prepare(
        "SELECT license_id, reason, revoked_at, revoked_by FROM license_revocations ORDER BY revoked_at, license_id",
    )?;
    let rows = s.query_map([], |r| {
        Ok(RevocationRow {
            license_id: r.get(0)?,
            reason: r.get(1)?,
            revoked_at: r.get(2)?,
            revoked_by: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Master key rotation, step 1: store each key re-wrapped under the next master key (id `kek`)
/// beside the current material, in one fsynced transaction (earlier staging is replaced).
pub fn stage_next_wraps(c: &mut Connection, kek: &str, rows: &[KeyMaterialRow]) -> StoreResult<()> {
    super::durably(c, |c| {
        let tx = write_tx(c)?;
        tx.execute(
            "UPDATE tenant_keys SET next_nonce = NULL, next_wrapped = NULL, next_kek = NULL",
            [],
        )?;
        for r in rows {
            let n = tx.execute(
                "UPDATE tenant_keys SET next_nonce = ?4, next_wrapped = ?5, next_kek = ?6
                 WHERE tenant_id = ?1 AND version = ?2 AND purpose = ?3 AND state <> 'retired'",
                params![
                    r.tenant,
                    r.version,
                    r.purpose.as_str(),
                    r.wrapped.nonce,
                    r.wrapped.ciphertext,
                    kek
                ],
            )?;
            if n != 1 {
                return Err(StoreError::NotFound);
            }
        }
        tx.commit()?;
        Ok(())
    })
}

/// The keys staged for master key `kek` (material under the next master key).
pub fn staged_wraps(c: &Connection, kek: &str) -> StoreResult<Vec<KeyMaterialRow>> {
    let mut s = c.prepare(
        "SELECT tenant_id, version, purpose, next_nonce, next_wrapped FROM tenant_keys
         WHERE next_kek = ?1 AND state <> 'retired' ORDER BY tenant_id, version, purpose",
    )?;
    let rows = s.query_map([kek], |r| {
        Ok(KeyMaterialRow {
            tenant: r.get(0)?,
            version: r.get(1)?,
            purpose: purpose_of(&r.get::<_, String>(2)?)?,
            wrapped: WrappedKey {
                nonce: r.get(3)?,
                ciphertext: r.get(4)?,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Master key rotation, last catalog step: make the staged material (for master key `kek`) the
/// current material and append `ev` (`key.rotate_master`), in one fsynced transaction. Refuses
/// with `Conflict("unstaged_keys")` when a key with material has no staging for `kek`. Returns
/// how many keys were switched (0 when an earlier run already switched them; no audit row then).
pub fn swap_staged_wraps(c: &mut Connection, kek: &str, ev: &NewAuditEvent) -> StoreResult<usize> {
    super::durably(c, |c| {
        let tx = write_tx(c)?;
        let staged: i64 = tx.query_row(
            "SELECT count(*) FROM tenant_keys WHERE next_kek = ?1 AND state <> 'retired'",
            [kek],
            |r| r.get(0),
        )?;
        if staged == 0 {
            return Ok(0);
        }
        let unstaged: i64 = tx.query_row(
            "SELECT count(*) FROM tenant_keys
             WHERE state <> 'retired' AND length(wrapped) > 0 AND (next_kek IS NULL OR next_kek <> ?1)",
            [kek],
            |r| r.get(0),
        )?;
        if unstaged > 0 {
            return Err(StoreError::Conflict(Conflict::UnstagedKeys));
        }
        let n = tx.execute(
            "UPDATE tenant_keys SET nonce = next_nonce, wrapped = next_wrapped,
                    next_nonce = NULL, next_wrapped = NULL, next_kek = NULL
             WHERE next_kek = ?1 AND state <> 'retired'",
            [kek],
        )?;
        audit::append(&tx, ev)?;
        tx.commit()?;
        Ok(n)
    })
}

/// Re-key the catalog itself (master key rotation): `PRAGMA rekey` on the shared connection,
/// proven with fresh connections, after which the shared connection is replaced by one on
/// `new`. See [`super::rekey_verified`].
pub fn rekey_catalog(
    cat: &Catalog,
    old: &crate::crypto::Key256,
    new: &crate::crypto::Key256,
    busy_ms: u64,
) -> StoreResult<bool> {
    let mut conn = cat.db.lock();
    match super::rekey_verified(&conn, &cat.path, old, new, busy_ms, &migrations::catalog())? {
        super::Rekeyed::Done(fresh) => {
            *conn = fresh;
            Ok(true)
        }
        super::Rekeyed::NotDone(fresh) => {
            *conn = fresh;
            Ok(false)
        }
    }
}

/// Append a catalog audit row and run `effect` (e.g. a file rename) inside the same transaction:
/// the row commits only when `effect` succeeded, so a failed effect leaves no audit row.
pub fn append_audit_with<E>(
    c: &mut Connection,
    ev: &NewAuditEvent,
    effect: impl FnOnce() -> Result<(), E>,
) -> StoreResult<Result<(), E>> {
    let tx = write_tx(c)?;
    audit::append(&tx, ev)?;
    if let Err(e) = effect() {
        return Ok(Err(e));
    }
    tx.commit()?;
    Ok(Ok(()))
}

// ---------------------------------------------------------------- offline trial (issue 23)

/// The deployment's trial, once started (there is at most one, ever).
#[derive(Debug, Clone)]
pub struct TrialRow {
    /// Trial id (`trial-<uuid>`), shown as the license id while it is in force.
    pub trial_id: String,
    /// Start, Unix seconds.
    pub started_at: i64,
    /// End, Unix seconds.
    pub ends_at: i64,
    /// Who started it (email, or `host-cli`).
    pub started_by: String,
}

/// The trial row, if a trial was ever started.
pub fn get_trial(c: &Connection) -> StoreResult<Option<TrialRow>> {
    Ok(c.query_row(
        "SELECT trial_id, started_at, ends_at, started_by FROM license_trial WHERE id = 1",
        [],
        |r| {
            Ok(TrialRow {
                trial_id: r.get(0)?,
                started_at: r.get(1)?,
                ends_at: r.get(2)?,
                started_by: r.get(3)?,
            })
        },
    )
    .optional()?)
}

/// Record the trial with its `license.trial_start` audit row. A trial already recorded →
/// `Conflict::Constraint` (once per deployment).
pub fn insert_trial(c: &mut Connection, t: &TrialRow, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = write_tx(c)?;
    tx.execute(
        "INSERT INTO license_trial (id, trial_id, started_at, ends_at, started_by) VALUES (1, ?1, ?2, ?3, ?4)",
        params![t.trial_id, t.started_at, t.ends_at, t.started_by],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Remember `now` (Unix seconds) if it is later than the latest time seen, and return the
/// latest time seen (never decreases, so a clock moved back does not move it back).
/// The recorded clock high-water mark, without changing it (`None` before the first one).
pub fn clock_high_water(c: &Connection) -> StoreResult<Option<i64>> {
    Ok(c.query_row(
        "SELECT latest_seen FROM clock_high_water WHERE id = 1",
        [],
        |r| r.get(0),
    )
    .optional()?)
}

pub fn observe_clock(c: &mut Connection, now: i64) -> StoreResult<i64> {
    let tx = write_tx(c)?;
    tx.execute(
        "INSERT INTO clock_high_water (id, latest_seen) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET latest_seen = max(latest_seen, excluded.latest_seen)",
        [now],
    )?;
    let seen = tx.query_row(
        "SELECT latest_seen FROM clock_high_water WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(seen)
}

/// Mark that a tenant's plan was set explicitly (it stops following the license).
pub fn pin_tenant_plan(c: &mut Connection, id: &TenantId) -> StoreResult<()> {
    c.execute(
        "UPDATE tenants SET plan_follows_license = 0 WHERE id = ?1",
        [id.as_str()],
    )?;
    Ok(())
}
