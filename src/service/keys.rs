//! Tenant key lifecycle (DESIGN.md "Keys and encryption"; NIST SP 800-57 Part 1 terms: the
//! master key is the KEK, each tenant has versioned key sets of a SQLCipher database key and a
//! data-encryption key, DEK).
//!
//! # One rotation (crash-safe)
//!
//! From the active version `v` to `n = max + 1`; every step is idempotent, so after a crash the
//! next run (the `key-rotation` job runs once at start, then on `keys.rotation_cron`) resumes
//! the pending version where it stopped:
//!
//! 1. **pending** — key set `n` (random) is wrapped under the master key and recorded `pending`
//!    in the catalog, fsynced. From now on new ciphertexts are sealed under DEK `n`.
//! 2. **fence** — the tenant store's `key_state.min_dek_version` is raised to `n` (with the
//!    tenant audit row `key.rotate`), so a write still carrying an older DEK version is refused
//!    (`key_rotated`) and re-sealed by [`super::sealing::write_sealed`]: the rewrap cannot miss a
//!    concurrent write.
//! 3. **rewrap** — every registered sealed column ([`SEALED_COLUMNS`], owned by
//!    `service::sealing` with its AAD recipe) is re-sealed under DEK `n` in batches of
//!    `keys.rewrap_batch` rows, one store transaction per batch.
//! 4. **rekey** — `PRAGMA rekey` of the tenant store to database key `n`, holding its only
//!    connection; proven by opening the file afresh with `n` (must work) and `v` (must fail);
//!    the cached connection is replaced. Then database key `n` becomes active and `v`'s is retired
//!    with its wrapped material destroyed. A crash inside the rekey leaves the file wholly under
//!    `v` or wholly under `n`, both held by the catalog; the store opener tries both.
//! 5. **screenshots** — every screenshot file sealed below `n` is re-encrypted (temp file,
//!    fsync, atomic rename) and its row updated.
//! 6. **retire** — after proving no cell of the store and no screenshot is sealed below `n`
//!    (a scan of every column, not only the registered ones), DEK `n` becomes active and the old
//!    DEKs are retired and destroyed, with the catalog audit row `key.rotate`, in one
//!    transaction.
//!
//! Failpoints (debug builds, `FLOWGUARD_FAULT`, see [`crate::fault`]): `rotation:after_pending`,
//! `rotation:after_fence`, `rotation:rewrap_batch` (after the first re-sealed batch),
//! `rotation:after_rewrap`, `rotation:after_rekey` (before the catalog knows),
//! `rotation:after_db_key`, `rotation:screenshot` (after the first file),
//! `rotation:after_screenshots`, `rotation:after_retire`; for the master key:
//! `master:after_stage`, `master:after_rekey`, `master:after_swap`.
//!
//! # Master key rotation
//!
//! [`rotate_master_blocking`] (host CLI, server stopped): stage every wrapped key re-wrapped
//! under the new master key beside the current material (fsynced) → `PRAGMA rekey` the catalog
//! to the new master's catalog key (proven) → switch the staged material in, with the catalog
//! audit row `key.rotate_master` → install the new key file atomically. Until the rekey the
//! catalog opens with the old key only; after it, with the new key only, and a marker file
//! (`<data>/keys/rotate-master.pending`, no secrets) tells the operator to rerun the command,
//! which resumes. Tenant stores are not touched: their database keys do not change.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::sealing::{Resealer, SEALED_COLUMNS};
use super::{screenshots, AppState, TenantCtx};
use crate::audit::{Actor, NewAuditEvent};
use crate::config::Settings;
use crate::crypto::keyring::{self, KeyPurpose, TenantKeySet};
use crate::crypto::{Key256, MasterKey, MasterKeyError};
use crate::domain::TenantId;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::fault;
use crate::store::fence;
use crate::store::{catalog, Catalog, Conflict, StoreError, StoreResult};

/// Actor of rotations started by the `key-rotation` job.
pub const SCHEDULER_ACTOR: &str = "system:scheduler";

/// The clock key ages are measured with. Release builds use the system clock; debug builds
/// honour `FLOWGUARD_TEST_CLOCK_FILE` (a file holding an RFC 3339 instant, re-read on every
/// call) so tests drive the rotation schedule without sleeping.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    file: Option<PathBuf>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { file: None }
    }

    /// The system clock, or in debug builds the test clock file named by
    /// `FLOWGUARD_TEST_CLOCK_FILE`.
    pub fn from_env() -> Self {
        #[cfg(debug_assertions)]
        if let Some(p) = std::env::var_os("FLOWGUARD_TEST_CLOCK_FILE") {
            return Self {
                file: Some(PathBuf::from(p)),
            };
        }
        Self::system()
    }

    /// Now (UTC). An unreadable or unparsable clock file falls back to the system clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now)
    }

    fn now_rfc3339(&self) -> String {
        self.now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

/// Key-lifecycle state shared by requests and jobs: the clock and the tenants being rotated in
/// this process (one rotation per tenant at a time).
#[derive(Debug, Default)]
pub struct KeyRuntime {
    /// Clock for key ages and key timestamps.
    pub clock: Clock,
    rotating: parking_lot::Mutex<HashSet<String>>,
}

impl KeyRuntime {
    /// A runtime with `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            rotating: Default::default(),
        }
    }

    fn claim(&self, t: &TenantId) -> Option<Claim<'_>> {
        self.rotating
            .lock()
            .insert(t.as_str().to_string())
            .then(|| Claim {
                rt: self,
                tenant: t.as_str().to_string(),
            })
    }
}

struct Claim<'a> {
    rt: &'a KeyRuntime,
    tenant: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.rt.rotating.lock().remove(&self.tenant);
    }
}

fn key_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Key(e.to_string())
}

fn db_key(state: &AppState, t: &TenantId, version: u32) -> StoreResult<Key256> {
    let w = state
        .catalog
        .blocking(|c| catalog::key_version(c, t, KeyPurpose::Db, version))?;
    keyring::unwrap(&state.master, t, version, KeyPurpose::Db, &w).map_err(key_err)
}

// ---------------------------------------------------------------- status

/// One key-set version of a tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyVersionView {
    /// Version (1, 2, …).
    pub version: u32,
    /// `pending` (a rotation to it is under way), `active`, or `retired` (material destroyed).
    pub state: String,
    /// State of the SQLCipher database key of this version.
    pub db_key_state: String,
    /// State of the data-encryption key of this version.
    pub dek_state: String,
    /// Created (RFC 3339, UTC).
    pub created_at: String,
    /// Retired (RFC 3339, UTC), once both keys are retired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

/// A tenant's key sets (`GET /api/v1/keys`, `flowguard keys status`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyStatus {
    /// Tenant id.
    pub tenant_id: String,
    /// Version whose DEK is active.
    pub active_version: Option<u32>,
    /// Version a rotation is moving to (present while one is unfinished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_version: Option<u32>,
    /// `keys.rotation_days`.
    pub rotation_days: u32,
    /// When the active key set becomes due for automatic rotation (RFC 3339, UTC).
    pub next_rotation_at: Option<String>,
    /// Whether the next `key-rotation` job run will rotate (or finish rotating) this tenant.
    pub rotation_due: bool,
    /// Every version, oldest first.
    pub versions: Vec<KeyVersionView>,
}

/// A tenant's key status (blocking).
pub fn status_blocking(state: &AppState, t: &TenantId) -> StoreResult<KeyStatus> {
    let rows = state.catalog.blocking(|c| catalog::tenant_keys(c, t))?;
    Ok(build_status(
        t,
        &rows,
        state.settings.keys.rotation_days,
        state.keys.clock.now(),
    ))
}

/// Build a status from catalog rows (shared by the API and the CLI).
pub fn build_status(
    tenant: &TenantId,
    rows: &[catalog::TenantKeyRow],
    rotation_days: u32,
    now: DateTime<Utc>,
) -> KeyStatus {
    let mut versions: Vec<KeyVersionView> = Vec::new();
    for r in rows {
        let idx = match versions.iter().position(|v| v.version == r.version) {
            Some(i) => i,
            None => {
                versions.push(KeyVersionView {
                    version: r.version,
                    state: String::new(),
                    db_key_state: String::new(),
                    dek_state: String::new(),
                    created_at: r.created_at.clone(),
                    retired_at: None,
                });
                versions.len() - 1
            }
        };
        let v = &mut versions[idx];
        if r.purpose == "db" {
            v.db_key_state = r.state.clone();
        } else {
            v.dek_state = r.state.clone();
        }
        if r.retired_at > v.retired_at {
            v.retired_at = r.retired_at.clone();
        }
    }
    for v in &mut versions {
        let s = [v.db_key_state.as_str(), v.dek_state.as_str()];
        v.state = if s.contains(&"pending") {
            "pending"
        } else if s.iter().all(|x| *x == "retired") {
            "retired"
        } else {
            "active"
        }
        .into();
        if v.state != "retired" {
            v.retired_at = None;
        }
    }
    versions.sort_by_key(|v| v.version);
    let active = versions
        .iter()
        .filter(|v| v.dek_state == "active")
        .max_by_key(|v| v.version);
    let pending_version = versions
        .iter()
        .filter(|v| v.state == "pending")
        .map(|v| v.version)
        .max();
    let next = active
        .and_then(|a| DateTime::parse_from_rfc3339(&a.created_at).ok())
        .map(|c| c.with_timezone(&Utc) + chrono::Duration::days(i64::from(rotation_days)));
    KeyStatus {
        tenant_id: tenant.to_string(),
        active_version: active.map(|a| a.version),
        pending_version,
        rotation_days,
        next_rotation_at: next.map(|n| n.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        rotation_due: pending_version.is_some() || next.is_some_and(|n| now >= n),
        versions,
    }
}

/// `GET /api/v1/keys`: the caller's tenant's key sets.
pub async fn status(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<KeyStatus> {
    let t = ctx.tenant.clone();
    let st = state.clone();
    Ok(
        tokio::task::spawn_blocking(move || status_blocking(&st, &t))
            .await
            .map_err(ApiError::internal)??,
    )
}

/// Key status of every tenant of the deployment, oldest tenant first (`GET
/// /api/v1/platform/keys`, PlatformAdmin; what `flowguard keys status` prints). Catalog data
/// only — versions, states and dates; never key material, never tenant data.
pub async fn status_all(state: &Arc<AppState>) -> ApiResult<Vec<KeyStatus>> {
    let st = state.clone();
    Ok(
        tokio::task::spawn_blocking(move || -> StoreResult<Vec<KeyStatus>> {
            let tenants = st.catalog.blocking(|c| catalog::list_tenants(c))?;
            let now = st.keys.clock.now();
            let days = st.settings.keys.rotation_days;
            st.catalog.blocking(|c| {
                tenants
                    .iter()
                    .map(|t| -> StoreResult<KeyStatus> {
                        Ok(build_status(
                            &t.id,
                            &catalog::tenant_keys(c, &t.id)?,
                            days,
                            now,
                        ))
                    })
                    .collect()
            })
        })
        .await
        .map_err(ApiError::internal)??,
    )
}

// ---------------------------------------------------------------- rotation

/// Rotation phases, in order (for progress reporting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recording the pending key set.
    Pending,
    /// Re-sealing secrets.
    Rewrap,
    /// `PRAGMA rekey` of the tenant store.
    Rekey,
    /// Re-encrypting screenshot files.
    Screenshots,
    /// Retiring the old version.
    Retire,
}

impl Phase {
    /// Short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Rewrap => "rewrap",
            Phase::Rekey => "rekey",
            Phase::Screenshots => "screenshots",
            Phase::Retire => "retire",
        }
    }
}

/// Progress of one rotation: `done` of `total` items in `phase`.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// Items done in this phase.
    pub done: u64,
    /// Items in this phase (an estimate while writes continue).
    pub total: u64,
}

/// What one rotation did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RotationReport {
    /// Tenant id.
    pub tenant_id: String,
    /// Version that was active before.
    pub from_version: u32,
    /// Version now active.
    pub to_version: u32,
    /// Whether an interrupted rotation was finished rather than a new one started.
    pub resumed: bool,
    /// Secrets re-sealed under the new DEK.
    pub secrets_resealed: u64,
    /// Screenshot files re-encrypted under the new DEK.
    pub screenshots_resealed: u64,
}

/// Why a rotation did not complete. A failed rotation stays pending and is resumed later; the
/// store keeps opening with a key the catalog holds.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// Another rotation of this tenant is running in this process.
    #[error("a key rotation of this tenant is already running")]
    InProgress,
    /// The tenant has no active key set (unknown tenant).
    #[error("the tenant has no active key set")]
    NoActiveKey,
    /// Ciphertexts under an old key remain where the rotation does not re-seal (an unregistered
    /// column); the old key is kept.
    #[error("data sealed under an old key remains in {0}; the old key is kept")]
    Remaining(String),
    /// Storage or key failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RotationError> for ApiError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::InProgress => ApiError::new(
                ErrorCode::RotationInProgress,
                "a key rotation of this tenant is already running",
            ),
            RotationError::Store(s) => s.into(),
            other => ApiError::internal(other),
        }
    }
}

/// Rotate (or finish rotating) a tenant's key set, blocking. See the module docs for the steps.
/// `actor` is audited; `progress` is called as work advances.
pub fn rotate_tenant_blocking(
    state: &AppState,
    t: &TenantId,
    actor: &Actor,
    progress: &dyn Fn(Progress),
) -> Result<RotationReport, RotationError> {
    let _claim = state.keys.claim(t).ok_or(RotationError::InProgress)?;
    let rows = state.catalog.blocking(|c| catalog::tenant_keys(c, t))?;
    let from = rows
        .iter()
        .filter(|r| r.purpose == "dek" && r.state == "active")
        .map(|r| r.version)
        .max()
        .ok_or(RotationError::NoActiveKey)?;
    let pending = rows
        .iter()
        .filter(|r| r.state == "pending")
        .map(|r| r.version)
        .max();
    let (to, resumed) = match pending {
        Some(v) => (v, true),
        None => (rows.iter().map(|r| r.version).max().unwrap_or(0) + 1, false),
    };
    let span = tracing::info_span!("key_rotation", tenant = %t, from, to, resumed);
    let _enter = span.enter();
    tracing::info!("key rotation started");

    // 1. pending
    progress(Progress {
        phase: Phase::Pending,
        done: 0,
        total: 1,
    });
    if !resumed {
        let set = TenantKeySet::generate(to);
        let w_db =
            keyring::wrap(&state.master, t, to, KeyPurpose::Db, &set.db_key).map_err(key_err)?;
        let w_dek =
            keyring::wrap(&state.master, t, to, KeyPurpose::Dek, &set.dek).map_err(key_err)?;
        let now = state.keys.clock.now_rfc3339();
        let res = state
            .catalog
            .blocking(|c| catalog::insert_pending_keys(c, t, to, &w_db, &w_dek, &now));
        match res {
            Err(StoreError::Conflict(Conflict::RotationPending | Conflict::StaleVersion)) => {
                return Err(RotationError::InProgress)
            }
            other => other?,
        }
        fault::point("rotation:after_pending");
    }
    progress(Progress {
        phase: Phase::Pending,
        done: 1,
        total: 1,
    });

    // 2. fence (+ tenant audit)
    let db = state.tenants.get_blocking(t)?;
    let ev = NewAuditEvent::new(actor, "key.rotate", Some(format!("tenant:{t}")))
        .details(serde_json::json!({"from_version": from, "to_version": to, "step": "started"}));
    {
        let mut c = db.lock();
        fence::raise_dek_fence(&mut c, to, &ev)?;
    }
    drop(db);
    fault::point("rotation:after_fence");

    // 3. rewrap
    let secrets = reseal_secrets(state, t, to, progress)?;
    fault::point("rotation:after_rewrap");

    // 4. rekey
    let db_rows = state.catalog.blocking(|c| catalog::tenant_keys(c, t))?;
    let db_pending = db_rows
        .iter()
        .any(|r| r.purpose == "db" && r.version == to && r.state == "pending");
    if db_pending {
        progress(Progress {
            phase: Phase::Rekey,
            done: 0,
            total: 1,
        });
        let old_version = db_rows
            .iter()
            .filter(|r| r.purpose == "db" && r.state == "active")
            .map(|r| r.version)
            .max()
            .ok_or(RotationError::NoActiveKey)?;
        let old = db_key(state, t, old_version)?;
        let new = db_key(state, t, to)?;
        state.tenants.rekey_blocking(t, &old, &new)?;
        fault::point("rotation:after_rekey");
        let now = state.keys.clock.now_rfc3339();
        state
            .catalog
            .blocking(|c| catalog::activate_db_key(c, t, to, &now))?;
        fault::point("rotation:after_db_key");
        progress(Progress {
            phase: Phase::Rekey,
            done: 1,
            total: 1,
        });
    }

    // 5. screenshots
    let shots = reseal_screenshots(state, t, to, progress)?;
    fault::point("rotation:after_screenshots");

    // 6. retire
    progress(Progress {
        phase: Phase::Retire,
        done: 0,
        total: 1,
    });
    let db = state.tenants.get_blocking(t)?;
    let (left, shots_left) = {
        let c = db.lock();
        (
            fence::sealed_below(&c, to)?,
            fence::count_screenshots_below(&c, to)?,
        )
    };
    drop(db);
    if let Some((table, column, n)) = left.first() {
        tracing::error!(
            table,
            column,
            count = n,
            "old-key ciphertexts remain; not retiring"
        );
        return Err(RotationError::Remaining(format!("{table}.{column}")));
    }
    if shots_left > 0 {
        return Err(RotationError::Remaining("screenshots".into()));
    }
    let ev = NewAuditEvent::new(actor, "key.rotate", Some(format!("tenant:{t}"))).details(
        serde_json::json!({
            "from_version": from,
            "to_version": to,
            "resumed": resumed,
            "secrets_resealed": secrets,
            "screenshots_resealed": shots,
        }),
    );
    let now = state.keys.clock.now_rfc3339();
    state
        .catalog
        .blocking(|c| catalog::finish_rotation(c, t, to, &now, &ev))?;
    fault::point("rotation:after_retire");
    progress(Progress {
        phase: Phase::Retire,
        done: 1,
        total: 1,
    });
    tracing::info!(
        secrets_resealed = secrets,
        screenshots_resealed = shots,
        "key rotation finished"
    );
    Ok(RotationReport {
        tenant_id: t.to_string(),
        from_version: from,
        to_version: to,
        resumed,
        secrets_resealed: secrets,
        screenshots_resealed: shots,
    })
}

/// Step 3: re-seal every registered sealed column under DEK `to`, in batches. Returns how many
/// ciphertexts were re-sealed. Public for the benchmark.
pub fn reseal_secrets(
    state: &AppState,
    t: &TenantId,
    to: u32,
    progress: &dyn Fn(Progress),
) -> Result<u64, RotationError> {
    let resealer = Resealer::new(state, t, to)?;
    let db = state.tenants.get_blocking(t)?;
    let mut total = 0u64;
    for s in SEALED_COLUMNS {
        let c = db.lock();
        total += u64::try_from(fence::count_sealed(&c, &s.column)?).unwrap_or(0);
    }
    let batch = state.settings.keys.rewrap_batch;
    let (mut done, mut changed_total, mut first) = (0u64, 0u64, true);
    progress(Progress {
        phase: Phase::Rewrap,
        done,
        total,
    });
    for s in SEALED_COLUMNS {
        let mut after = 0i64;
        loop {
            let (scanned, changed, last) = {
                let mut c = db.lock();
                fence::reseal_batch(&mut c, &s.column, after, batch, |key, sealed| {
                    resealer.column(s, key, sealed)
                })?
            };
            if scanned == 0 {
                break;
            }
            after = last;
            done += scanned as u64;
            changed_total += changed as u64;
            progress(Progress {
                phase: Phase::Rewrap,
                done,
                total: total.max(done),
            });
            if changed > 0 && first {
                first = false;
                fault::point("rotation:rewrap_batch");
            }
        }
    }
    Ok(changed_total)
}

fn write_file_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("rot");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Step 5: re-encrypt every screenshot file recorded below version `to`.
fn reseal_screenshots(
    state: &AppState,
    t: &TenantId,
    to: u32,
    progress: &dyn Fn(Progress),
) -> Result<u64, RotationError> {
    let resealer = Resealer::new(state, t, to)?;
    let db = state.tenants.get_blocking(t)?;
    let total = {
        let c = db.lock();
        u64::try_from(fence::count_screenshots_below(&c, to)?).unwrap_or(0)
    };
    let (mut done, mut resealed) = (0u64, 0u64);
    progress(Progress {
        phase: Phase::Screenshots,
        done,
        total,
    });
    loop {
        let rows = {
            let c = db.lock();
            fence::screenshots_below(&c, to, 100)?
        };
        if rows.is_empty() {
            break;
        }
        for r in rows {
            let path = screenshots::shot_path(state, t, &r.id);
            match std::fs::read(&path) {
                Ok(data) => {
                    if let Some(sealed) = resealer.screenshot(&r.id, &data)? {
                        write_file_atomically(&path, &sealed).map_err(StoreError::Io)?;
                        resealed += 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(screenshot = %r.id, "screenshot file missing; nothing to re-encrypt");
                }
                Err(e) => return Err(StoreError::Io(e).into()),
            }
            let exists = {
                let c = db.lock();
                fence::set_screenshot_version(&c, &r.id, to)?
            };
            if !exists {
                // Replaced or deleted meanwhile: do not leave a re-created orphan behind.
                let _ = std::fs::remove_file(&path);
            }
            done += 1;
            progress(Progress {
                phase: Phase::Screenshots,
                done,
                total: total.max(done),
            });
            if done == 1 {
                fault::point("rotation:screenshot");
            }
        }
    }
    Ok(resealed)
}

/// Public data of a rotate request (`POST /api/v1/keys/rotate`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    /// What the rotation did.
    pub rotation: RotationReport,
    /// Key sets afterwards.
    pub keys: KeyStatus,
}

/// `POST /api/v1/keys/rotate`: rotate the caller's tenant now (or finish an interrupted
/// rotation). Runs to completion even if the client disconnects.
pub async fn rotate_now(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<Rotated> {
    let t = ctx.tenant.clone();
    let actor = ctx.actor();
    let st = state.clone();
    tokio::task::spawn_blocking(move || -> ApiResult<Rotated> {
        let rotation = rotate_tenant_blocking(&st, &t, &actor, &|_| {})?;
        let keys = status_blocking(&st, &t)?;
        Ok(Rotated { rotation, keys })
    })
    .await
    .map_err(ApiError::internal)?
}

/// The actor of scheduled rotations.
pub fn scheduler_actor() -> Actor {
    Actor {
        email: Some(SCHEDULER_ACTOR.into()),
        role: Some("system".into()),
        client_ip: None,
        user_agent: None,
    }
}

/// The `key-rotation` job: rotate every tenant whose active key set is at least
/// `keys.rotation_days` old by [`KeyRuntime::clock`], and finish any interrupted rotation.
/// Returns how many tenants were rotated; failures are logged and retried on the next run.
pub fn rotation_job_blocking(state: &AppState) -> usize {
    let tenants = state.catalog.blocking(|c| catalog::list_tenants(c));
    let tenants = match tenants {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "key-rotation: cannot list tenants");
            return 0;
        }
    };
    let actor = scheduler_actor();
    let mut rotated = 0;
    for row in tenants {
        let t = row.id;
        match status_blocking(state, &t) {
            Ok(s) if s.rotation_due => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(tenant = %t, error = %e, "key-rotation: cannot read key status");
                continue;
            }
        }
        match rotate_tenant_blocking(state, &t, &actor, &|_| {}) {
            Ok(_) => rotated += 1,
            Err(RotationError::InProgress) => {}
            Err(e) => {
                tracing::error!(tenant = %t, error = %e, "key-rotation: rotation failed; it resumes on the next run")
            }
        }
    }
    rotated
}

// ---------------------------------------------------------------- master key rotation

/// File (in `<data>/keys/`) marking an unfinished master key rotation; holds key ids only.
pub const MASTER_ROTATION_MARKER: &str = "rotate-master.pending";

/// Why a master key rotation stopped. Messages name files and key ids, never key material.
#[derive(Debug, thiserror::Error)]
pub enum MasterRotationError {
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] MasterKeyError),
    /// The new key is the current key.
    #[error("the new master key is the current master key")]
    SameKey,
    /// Neither key opens the catalog.
    #[error("neither the current master key nor the new one opens the catalog")]
    NeitherOpens,
    /// A wrapped key did not unwrap (wrong key, or altered material).
    #[error("tenant {tenant} key version {version} ({purpose}) does not unwrap under the {which} master key")]
    Unwrap {
        /// Tenant.
        tenant: String,
        /// Version.
        version: u32,
        /// Purpose.
        purpose: &'static str,
        /// `current` or `new`.
        which: &'static str,
    },
    /// The catalog rekey did not take effect.
    #[error("the catalog rekey did not take effect; nothing was switched (rerun the command)")]
    RekeyNotDone,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Filesystem failure.
    #[error("{0}")]
    Io(String),
}

/// What a master key rotation did.
#[derive(Debug, Serialize)]
pub struct MasterRotationReport {
    /// Id of the old key ([`MasterKey::kek_id`]).
    pub old_kek_id: String,
    /// Id of the new key.
    pub new_kek_id: String,
    /// Wrapped tenant keys now under the new key.
    pub keys_rewrapped: usize,
    /// Where the new key was installed.
    pub installed_at: PathBuf,
    /// Whether an interrupted rotation was resumed.
    pub resumed: bool,
}

/// The deployment's audit-signing key. It is created only while the catalog is pristine
/// ([`catalog::is_pristine`]: a first start, nothing signed yet); afterwards a missing or empty
/// `keys/audit-signing.key` is refused ([`crate::crypto::audit_signing::SigningKeyError::Missing`],
/// naming the file and how to put it back) instead of being silently replaced by a new key that
/// would orphan every earlier signature. Blocking.
pub fn audit_signer(
    data_dir: &Path,
    master: &MasterKey,
    cat: &Catalog,
) -> anyhow::Result<crate::crypto::audit_signing::AuditSigner> {
    // (A read-only process, `doctor`, never creates one.)
    let may_create = !crate::store::is_read_only() && cat.blocking(|c| catalog::is_pristine(c))?;
    Ok(crate::crypto::audit_signing::AuditSigner::load_or_create(
        data_dir, master, may_create,
    )?)
}

/// Path of the unfinished-master-rotation marker of a data dir.
pub fn master_marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join(MASTER_ROTATION_MARKER)
}

/// If a master key rotation was interrupted, the id of the key it moves to.
pub fn interrupted_master_rotation(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(master_marker_path(data_dir)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("new_kek_id="))
        .map(|s| s.trim().to_string())
}

fn write_marker(data_dir: &Path, old: &MasterKey, new: &MasterKey) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("keys");
    if !dir.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    write_file_atomically(
        &master_marker_path(data_dir),
        format!(
            "# flowguard keys rotate-master is unfinished: rerun it with the same --new-key-file\nold_kek_id={}\nnew_kek_id={}\n",
            old.kek_id(),
            new.kek_id()
        )
        .as_bytes(),
    )
}

/// Rotate the master key to the key in `new_key_file` (32 raw bytes, mode 0600/0400), blocking.
/// Run only with the server stopped (the CLI holds the data-dir lock). Resumable: rerun with the
/// same file after a crash. `progress(done, total)` counts re-wrapped keys.
pub fn rotate_master_blocking(
    settings: &Settings,
    new_key_file: &Path,
    actor: &Actor,
    progress: &dyn Fn(u64, u64),
) -> Result<MasterRotationReport, MasterRotationError> {
    let data_dir = &settings.data_dir;
    let key_path = settings.master_key_path();
    let old = MasterKey::load(&key_path)?;
    let new = MasterKey::load(new_key_file)?;
    if old.same_key(&new) {
        // Either nothing to do, or an earlier run already installed the new key: finish up.
        if interrupted_master_rotation(data_dir).as_deref() == Some(new.kek_id().as_str()) {
            let cat = Catalog::open(data_dir, &new, false, settings.store.busy_timeout_ms)?;
            verify_all(&cat, &new, "new")?;
            crate::crypto::audit_signing::finish_rewrap(data_dir, &new)
                .map_err(|e| MasterRotationError::Io(e.to_string()))?;
            let _ = std::fs::remove_file(master_marker_path(data_dir));
            return Ok(MasterRotationReport {
                old_kek_id: String::new(),
                new_kek_id: new.kek_id(),
                keys_rewrapped: 0,
                installed_at: key_path,
                resumed: true,
            });
        }
        return Err(MasterRotationError::SameKey);
    }
    let busy = settings.store.busy_timeout_ms;
    let kek = new.kek_id();
    let (cat, resumed) = match Catalog::open(data_dir, &old, false, busy) {
        Ok(cat) => {
            // Before the catalog rekey: stage every key re-wrapped under the new master key.
            write_marker(data_dir, &old, &new).map_err(|e| {
                MasterRotationError::Io(format!("cannot write the rotation marker: {e}"))
            })?;
            let rows = cat.blocking(|c| catalog::key_material(c))?;
            let total = rows.len() as u64;
            let mut staged = Vec::with_capacity(rows.len());
            for (i, r) in rows.into_iter().enumerate() {
                let k = keyring::unwrap_scoped(&old, &r.tenant, r.version, r.purpose, &r.wrapped)
                    .map_err(|_| MasterRotationError::Unwrap {
                    tenant: r.tenant.clone(),
                    version: r.version,
                    purpose: r.purpose.as_str(),
                    which: "current",
                })?;
                let w = keyring::wrap_scoped(&new, &r.tenant, r.version, r.purpose, &k)
                    .map_err(|e| MasterRotationError::Io(e.to_string()))?;
                staged.push(catalog::KeyMaterialRow { wrapped: w, ..r });
                progress(i as u64 + 1, total);
            }
            cat.blocking(|c| catalog::stage_next_wraps(c, &kek, &staged))?;
            // The audit-signing key (issue 5) is wrapped under the master key too.
            crate::crypto::audit_signing::stage_rewrap(data_dir, &old, &new)
                .map_err(|e| MasterRotationError::Io(e.to_string()))?;
            fault::point("master:after_stage");
            if !catalog::rekey_catalog(&cat, &old.catalog_db_key(), &new.catalog_db_key(), busy)? {
                return Err(MasterRotationError::RekeyNotDone);
            }
            fault::point("master:after_rekey");
            (cat, false)
        }
        Err(StoreError::WrongKey(_)) => match Catalog::open(data_dir, &new, false, busy) {
            Ok(cat) => (cat, true),
            Err(StoreError::WrongKey(_)) => return Err(MasterRotationError::NeitherOpens),
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    // The catalog is under the new key: check the staged material, then switch it in.
    let staged = cat.blocking(|c| catalog::staged_wraps(c, &kek))?;
    for r in &staged {
        keyring::unwrap_scoped(&new, &r.tenant, r.version, r.purpose, &r.wrapped).map_err(
            |_| MasterRotationError::Unwrap {
                tenant: r.tenant.clone(),
                version: r.version,
                purpose: r.purpose.as_str(),
                which: "new",
            },
        )?;
    }
    let ev = NewAuditEvent::new(actor, "key.rotate_master", Some("catalog".to_string())).details(
        serde_json::json!({"old_kek_id": old.kek_id(), "new_kek_id": kek, "keys_rewrapped": staged.len(), "resumed": resumed}),
    );
    let switched = cat.blocking(|c| catalog::swap_staged_wraps(c, &kek, &ev))?;
    fault::point("master:after_swap");
    verify_all(&cat, &new, "new")?;
    crate::crypto::audit_signing::finish_rewrap(data_dir, &new)
        .map_err(|e| MasterRotationError::Io(e.to_string()))?;
    drop(cat);
    // Only now, with the catalog and every wrap under the new key, replace the key file.
    new.install_at(&key_path)?;
    let _ = std::fs::remove_file(master_marker_path(data_dir));
    Ok(MasterRotationReport {
        old_kek_id: old.kek_id(),
        new_kek_id: kek,
        keys_rewrapped: switched,
        installed_at: key_path,
        resumed,
    })
}

fn verify_all(
    cat: &Catalog,
    key: &MasterKey,
    which: &'static str,
) -> Result<(), MasterRotationError> {
    let rows = cat.blocking(|c| catalog::key_material(c))?;
    for r in rows {
        keyring::unwrap_scoped(key, &r.tenant, r.version, r.purpose, &r.wrapped).map_err(|_| {
            MasterRotationError::Unwrap {
                tenant: r.tenant.clone(),
                version: r.version,
                purpose: r.purpose.as_str(),
                which,
            }
        })?;
    }
    Ok(())
}
