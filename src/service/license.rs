//! The deployment license: loading at start (with the `license.required` gate), install,
//! reload (route and SIGHUP), revocation, entitlements per tenant, the feature gate and the
//! expiry notifications.
//!
//! The active license lives in [`LicenseState`] inside `AppState` (no global state); the token
//! itself lives in the configured file (`license.file`, default `<data>/license.jwt`, mode
//! 0600), the revocation list in the catalog. A license is *in force* when its signature
//! verifies with a trusted key, `nbf ≤ now < exp`, and its id is not revoked. Without a license
//! in force every tenant gets [`Entitlements::free`]; nothing is ever deleted because a license
//! lapsed.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use utoipa::ToSchema;

use super::{unix_now, AppState, Caller};
use crate::audit::{Actor, NewAuditEvent};
use crate::crypto::license::{self, rfc3339, LicenseClaims, LicenseError, SignedLicense};
use crate::domain::{now_rfc3339, Entitlements, Plan, Role, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::catalog;
pub use crate::store::catalog::RevocationRow;
pub use crate::store::catalog::TrialRow;
use crate::store::{Catalog, Conflict, StoreError, StoreResult};

/// Days before expiry from which Owners and PlatformAdmins are warned.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The loaded license and the revocation list, shared by all requests.
#[derive(Debug, Default)]
pub struct LicenseState {
    inner: RwLock<Loaded>,
}

#[derive(Debug, Default, Clone)]
struct Loaded {
    /// The installed license whose signature verified (may have expired since).
    active: Option<SignedLicense>,
    /// Revoked license ids.
    revoked: HashSet<String>,
    /// The deployment's offline trial, once started (in force while it runs and no license is).
    trial: Option<TrialRow>,
    /// The latest time (Unix seconds) the catalog has seen: trial time never goes below it.
    latest_seen: i64,
}

/// Days the offline trial lasts.
pub const TRIAL_DAYS: i64 = 30;

/// Issuer recorded in the synthetic claims of the offline trial (never a signed token).
pub const TRIAL_ISSUER: &str = "flowguard-offline-trial";

/// The claims the trial grants: the Enterprise plan with every known feature and no limits.
fn trial_claims(t: &TrialRow) -> LicenseClaims {
    LicenseClaims {
        jti: t.trial_id.clone(),
        iss: TRIAL_ISSUER.into(),
        sub: "Offline trial".into(),
        iat: t.started_at,
        nbf: t.started_at,
        exp: t.ends_at,
        plan: Plan::Enterprise,
        features: crate::domain::plan::KNOWN_FEATURES
            .iter()
            .map(|f| f.to_string())
            .collect(),
        max_applications: None,
        max_users: None,
        retention_days: 365,
        regions: vec![],
    }
}

/// Where the installed license stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    /// No license installed: Free.
    None,
    /// In force.
    Active,
    /// Installed but past its expiry: Free limits, data kept.
    Expired,
    /// Installed but its validity has not started: Free limits.
    NotYetValid,
    /// Installed but on the revocation list: Free limits.
    Revoked,
    /// No license in force; the offline trial is (every feature until it ends).
    Trial,
}

impl LicenseState {
    /// Claims of the license in force at `now`, if any: the installed license, else the
    /// offline trial while it runs.
    pub fn in_force(&self, now: i64) -> Option<LicenseClaims> {
        self.license_in_force(now)
            .or_else(|| self.trial_in_force(now).map(|t| trial_claims(&t)))
    }

    fn license_in_force(&self, now: i64) -> Option<LicenseClaims> {
        let l = self.inner.read();
        let a = l.active.as_ref()?;
        (a.claims.check_time(now).is_ok() && !l.revoked.contains(&a.claims.jti))
            .then(|| a.claims.clone())
    }

    /// The trial if it runs at `now` — judged at the later of `now` and the latest time the
    /// catalog has seen, so moving the clock back neither restarts nor extends it.
    pub fn trial_in_force(&self, now: i64) -> Option<TrialRow> {
        let l = self.inner.read();
        let t = l.trial.as_ref()?;
        let at = now.max(l.latest_seen);
        (at < t.ends_at).then(|| t.clone())
    }

    /// The trial, started or ended (none when never started).
    pub fn trial(&self) -> Option<TrialRow> {
        self.inner.read().trial.clone()
    }

    /// The latest time seen (Unix seconds).
    pub fn latest_seen(&self) -> i64 {
        self.inner.read().latest_seen
    }

    fn set_trial(&self, t: Option<TrialRow>, latest_seen: i64) {
        let mut l = self.inner.write();
        l.trial = t;
        l.latest_seen = l.latest_seen.max(latest_seen);
    }

    /// Status of the installed license at `now` (`trial` while the trial is what is in force).
    pub fn status(&self, now: i64) -> LicenseStatus {
        if self.license_in_force(now).is_none() && self.trial_in_force(now).is_some() {
            return LicenseStatus::Trial;
        }
        let l = self.inner.read();
        match &l.active {
            None => LicenseStatus::None,
            Some(a) if l.revoked.contains(&a.claims.jti) => LicenseStatus::Revoked,
            Some(a) => match a.claims.check_time(now) {
                Ok(()) => LicenseStatus::Active,
                Err(LicenseError::NotYetValid { .. }) => LicenseStatus::NotYetValid,
                Err(_) => LicenseStatus::Expired,
            },
        }
    }

    /// Whether a license file with a valid signature was loaded (in force or not).
    pub fn has_installed(&self) -> bool {
        self.inner.read().active.is_some()
    }

    fn installed(&self) -> Option<SignedLicense> {
        self.inner.read().active.clone()
    }

    fn set_active(&self, l: Option<SignedLicense>) -> Option<SignedLicense> {
        std::mem::replace(&mut self.inner.write().active, l)
    }

    fn set_revoked(&self, ids: HashSet<String>) {
        self.inner.write().revoked = ids;
    }

    fn add_revoked(&self, id: &str) {
        self.inner.write().revoked.insert(id.to_string());
    }

    fn is_revoked(&self, id: &str) -> bool {
        self.inner.read().revoked.contains(id)
    }

    /// Entitlements of a tenant on `tenant_plan` at `now`: the license's features and limits,
    /// with the plan capped at the license's plan; Free when no license is in force or the
    /// tenant is on `free`.
    pub fn entitlements(&self, tenant_plan: Plan, now: i64) -> Entitlements {
        match self.in_force(now) {
            None => Entitlements::free(),
            Some(l) if l.iss == TRIAL_ISSUER => {
                // The trial keeps Free retention: its end then deletes nothing that Free
                // retention would have kept anyway.
                let mut e = entitlements_from(&l, tenant_plan);
                e.retention_days = Entitlements::free().retention_days;
                e
            }
            Some(l) => entitlements_from(&l, tenant_plan),
        }
    }
}

fn entitlements_from(l: &LicenseClaims, tenant_plan: Plan) -> Entitlements {
    let plan = tenant_plan.min(l.plan);
    if plan == Plan::Free {
        return Entitlements::free();
    }
    Entitlements {
        plan,
        features: l.features.iter().cloned().collect::<BTreeSet<_>>(),
        max_applications: l.max_applications,
        max_users: l.max_users,
        retention_days: plan.default_retention_days().unwrap_or(l.retention_days),
    }
}

/// Map a refusal to a 422 problem whose `code` names the reason and whose detail says it.
pub fn refusal(e: &LicenseError) -> ApiError {
    let code = match e {
        LicenseError::Malformed(_) => ErrorCode::LicenseMalformed,
        LicenseError::BadSignature => ErrorCode::LicenseBadSignature,
        LicenseError::InvalidClaims(_) => ErrorCode::LicenseInvalidClaims,
        LicenseError::Expired { .. } => ErrorCode::LicenseExpired,
        LicenseError::NotYetValid { .. } => ErrorCode::LicenseNotYetValid,
        LicenseError::Revoked(_) => ErrorCode::LicenseRevoked,
        LicenseError::Signing(_) => ErrorCode::LicenseSigningFailed,
    };
    ApiError::new(code, e.to_string())
}

/// Fully verify a token at `now`: signature, shape, validity period, revocation list.
pub fn verify_for_install(
    token: &str,
    now: i64,
    revoked: impl Fn(&str) -> bool,
) -> Result<SignedLicense, LicenseError> {
    let s = license::verify_signature(token)?;
    if revoked(&s.claims.jti) {
        return Err(LicenseError::Revoked(s.claims.jti));
    }
    s.claims.check_time(now)?;
    Ok(s)
}

/// Load the revocation list and the license file at start.
///
/// With `license.required = true`, anything but a license in force is an error saying why (the
/// server then refuses to start). Otherwise a missing file means Free; an unusable file is
/// logged and ignored (Free); an expired or revoked one stays loaded so its status is visible,
/// with Free limits.
///
/// Host commands pass `enforce_required = false`: they load what is there without the gate.
pub fn load_at_start(state: &AppState, enforce_required: bool) -> anyhow::Result<()> {
    let revoked: HashSet<String> = {
        let c = state.catalog.db().lock();
        catalog::list_revocations(&c)?
            .into_iter()
            .map(|r| r.license_id)
            .collect()
    };
    state.license.set_revoked(revoked.clone());
    observe_clock_blocking(state)?;
    let path = state.settings.license_path();
    let required = enforce_required && state.settings.license.required;
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if required {
                anyhow::bail!(
                    "license.required is set but there is no license file at {} (install one with `flowguard license install FILE`)",
                    path.display()
                );
            }
            tracing::info!(file = %path.display(), "no license installed: running with Free limits");
            return Ok(());
        }
        Err(e) => anyhow::bail!("cannot read license file {}: {}", path.display(), e.kind()),
    };
    let now = unix_now();
    match license::verify_signature(&token) {
        Err(e) => {
            if required {
                anyhow::bail!(
                    "license.required is set and the license in {} is refused: {e}",
                    path.display()
                );
            }
            tracing::error!(file = %path.display(), reason = %e, "license refused: running with Free limits");
        }
        Ok(s) => {
            let problem = if revoked.contains(&s.claims.jti) {
                Some(LicenseError::Revoked(s.claims.jti.clone()))
            } else {
                s.claims.check_time(now).err()
            };
            if let Some(e) = &problem {
                if required {
                    anyhow::bail!(
                        "license.required is set and the license in {} is not valid: {e}",
                        path.display()
                    );
                }
                tracing::warn!(license_id = %s.claims.jti, reason = %e, "license not in force: running with Free limits");
            } else {
                tracing::info!(license_id = %s.claims.jti, licensee = %s.claims.sub, plan = %s.claims.plan, expires = %rfc3339(s.claims.exp), key = s.key, "license loaded");
            }
            state.license.set_active(Some(s));
        }
    }
    Ok(())
}

/// Public view of a license's claims.
#[derive(Debug, Serialize, ToSchema)]
pub struct LicenseInfo {
    /// License id.
    pub id: String,
    /// Licensee.
    pub licensee: String,
    /// Plan.
    pub plan: Plan,
    /// Features.
    pub features: Vec<String>,
    /// Applications per tenant (`null` = unlimited).
    pub max_applications: Option<u32>,
    /// Active users per tenant (`null` = unlimited).
    pub max_users: Option<u32>,
    /// Enterprise retention in days.
    pub retention_days: u32,
    /// Regions tenants may be created in (empty = any).
    pub regions: Vec<String>,
    /// Issued at (RFC 3339).
    pub issued_at: String,
    /// Not before (RFC 3339).
    pub not_before: String,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// Which trusted key signed it: `vendor` or `dev`.
    pub signed_by: String,
}

impl LicenseInfo {
    fn of(s: &SignedLicense) -> Self {
        let c = &s.claims;
        Self {
            id: c.jti.clone(),
            licensee: c.sub.clone(),
            plan: c.plan,
            features: c.features.clone(),
            max_applications: c.max_applications,
            max_users: c.max_users,
            retention_days: c.retention_days,
            regions: c.regions.clone(),
            issued_at: rfc3339(c.iat),
            not_before: rfc3339(c.nbf),
            expires_at: rfc3339(c.exp),
            signed_by: s.key.to_string(),
        }
    }
}

/// `GET /api/v1/platform/license`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LicenseView {
    /// Where the installed license stands.
    pub status: LicenseStatus,
    /// The installed license (absent when none).
    pub license: Option<LicenseInfo>,
    /// Whole days until expiry (negative once expired).
    pub days_until_expiry: Option<i64>,
    /// What a tenant on the license's plan gets right now (Free when not in force).
    pub effective: Entitlements,
    /// Whether this build trusts the published development key (never in packaged builds).
    pub dev_key_trusted: bool,
    /// The offline trial, once started (it runs once per deployment).
    pub trial: Option<TrialView>,
    /// Whether `POST /api/v1/platform/license/trial` (or `flowguard license trial`) can start
    /// the trial now: never started and no license in force.
    pub trial_available: bool,
}

/// The offline trial as the License page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialView {
    /// Trial id (`trial-<uuid>`).
    pub id: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub ends_at: String,
    /// Whether it is running (judged at the later of now and the latest time seen).
    pub active: bool,
    /// Whole days left (0 once ended).
    pub days_left: i64,
}

/// The current license view.
pub fn view(state: &AppState) -> LicenseView {
    let now = unix_now();
    let installed = state.license.installed();
    let trial = state.license.trial().map(|t| {
        let at = now.max(state.license.latest_seen());
        TrialView {
            id: t.trial_id.clone(),
            started_at: rfc3339(t.started_at),
            ends_at: rfc3339(t.ends_at),
            active: state.license.trial_in_force(now).is_some(),
            days_left: ((t.ends_at - at).max(0) + 86_399).div_euclid(86_400),
        }
    });
    let trial_available = trial.is_none() && state.license.license_in_force(now).is_none();
    let in_force = state.license.in_force(now);
    let plan = match (&in_force, &installed) {
        (Some(l), _) => l.plan,
        (None, Some(s)) => s.claims.plan,
        _ => Plan::Free,
    };
    LicenseView {
        trial,
        trial_available,
        status: state.license.status(now),
        days_until_expiry: installed
            .as_ref()
            .map(|s| (s.claims.exp - now).div_euclid(86_400)),
        license: installed.as_ref().map(LicenseInfo::of),
        effective: state.license.entitlements(plan, now),
        dev_key_trusted: license::dev_key_trusted(),
    }
}

fn details(s: &SignedLicense) -> serde_json::Value {
    serde_json::json!({
        "license_id": s.claims.jti,
        "licensee": s.claims.sub,
        "plan": s.claims.plan,
        "features": s.claims.features,
        "expires_at": rfc3339(s.claims.exp),
        "signed_by": s.key,
    })
}

/// Write `token` to `path` atomically (temp file in the same directory, mode 0600, fsync,
/// rename by the caller). Returns the temp path.
fn write_temp(path: &Path, token: &str) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "license".into()),
        crate::domain::new_object_id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.trim().as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(tmp)
}

/// Install a license into a data dir's license file without a running server
/// (`flowguard license install`): full verification against the catalog's revocation list, then
/// an atomic write and a `license.install` catalog audit row committed together.
pub fn install_offline(
    catalog: &Catalog,
    path: &Path,
    token: &str,
    actor: &Actor,
) -> anyhow::Result<SignedLicense> {
    let revoked: HashSet<String> = {
        let c = catalog.db().lock();
        catalog::list_revocations(&c)?
            .into_iter()
            .map(|r| r.license_id)
            .collect()
    };
    let s = verify_for_install(token, unix_now(), |id| revoked.contains(id))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tmp = write_temp(path, token)?;
    let ev = NewAuditEvent::new(
        actor,
        "license.install",
        Some(format!("license:{}", s.claims.jti)),
    )
    .details(details(&s));
    let res =
        catalog.blocking(|c| catalog::append_audit_with(c, &ev, || std::fs::rename(&tmp, path)));
    match res {
        Ok(Ok(())) => Ok(s),
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&tmp);
            Err(anyhow::anyhow!("cannot write {}: {e}", path.display()))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

/// Install a license presented to the API: verify, write the license file, activate, audit
/// `license.install` — all or nothing. Refusals are 422 with a code naming the reason.
pub async fn install(state: &Arc<AppState>, ctx: &Caller, token: String) -> ApiResult<LicenseView> {
    let s = verify_for_install(&token, unix_now(), |id| state.license.is_revoked(id))
        .map_err(|e| refusal(&e))?;
    activate(state, s, &token, "license.install", &ctx.actor()).await?;
    Ok(view(state))
}

/// Write the file (unless it already holds `token`), commit the audit row and switch the
/// in-memory license, under the catalog lock so concurrent installs cannot interleave.
async fn activate(
    state: &Arc<AppState>,
    s: SignedLicense,
    token: &str,
    action: &'static str,
    actor: &Actor,
) -> ApiResult<()> {
    let path = state.settings.license_path();
    let ev = NewAuditEvent::new(actor, action, Some(format!("license:{}", s.claims.jti)))
        .details(details(&s));
    let write_file = action == "license.install";
    let tmp = if write_file {
        Some(write_temp(&path, token).map_err(crate::store::StoreError::Io)?)
    } else {
        None
    };
    let st = state.clone();
    let tmp2 = tmp.clone();
    let res = state
        .catalog
        .run(move |c| {
            catalog::append_audit_with(c, &ev, || -> std::io::Result<()> {
                if let Some(t) = &tmp2 {
                    std::fs::rename(t, &path)?;
                }
                st.license.set_active(Some(s));
                Ok(())
            })
        })
        .await;
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            if let Some(t) = tmp {
                let _ = std::fs::remove_file(t);
            }
            Err(ApiError::internal(format!(
                "cannot write license file: {e}"
            )))
        }
        Err(e) => {
            if let Some(t) = tmp {
                let _ = std::fs::remove_file(t);
            }
            Err(e.into())
        }
    }
}

/// Re-read the configured license file and activate it (`license.reload`). A missing or refused
/// file changes nothing (the current license stays) and writes no audit row.
pub async fn reload(state: &Arc<AppState>, actor: &Actor) -> ApiResult<LicenseView> {
    // A trial started offline (`flowguard license trial`) is picked up here too.
    let st = state.clone();
    tokio::task::spawn_blocking(move || observe_clock_blocking(&st))
        .await
        .map_err(ApiError::internal)??;
    let path = state.settings.license_path();
    let token = match tokio::fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                ErrorCode::LicenseMissing,
                "there is no license file to reload",
            ))
        }
        Err(e) => {
            return Err(ApiError::internal(format!(
                "cannot read license file: {}",
                e.kind()
            )))
        }
    };
    let revoked: HashSet<String> = state
        .catalog
        .run(|c| catalog::list_revocations(c))
        .await?
        .into_iter()
        .map(|r| r.license_id)
        .collect();
    let s = verify_for_install(&token, unix_now(), |id| revoked.contains(id))
        .map_err(|e| refusal(&e))?;
    state.license.set_revoked(revoked);
    activate(state, s, &token, "license.reload", actor).await?;
    Ok(view(state))
}

/// The actor recorded for a reload triggered by SIGHUP.
pub fn signal_actor() -> Actor {
    Actor {
        email: Some("system".into()),
        role: Some("system".into()),
        client_ip: None,
        user_agent: Some("SIGHUP".into()),
    }
}

/// Add a license id to the revocation list (`license.revoke`). A revoked license in force stops
/// counting at once. 422 for a malformed id, 409 `already_revoked` for a listed one.
pub async fn revoke(
    state: &Arc<AppState>,
    ctx: &Caller,
    license_id: &str,
    reason: Option<&str>,
) -> ApiResult<RevocationRow> {
    let id = license_id.trim();
    if id.is_empty() || id.chars().count() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "license_id",
            "license_id must be 1-128 printable characters",
        ));
    }
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if let Some(r) = reason {
        if r.chars().count() > 500 || r.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ApiError::invalid(
                "reason",
                "reason must be at most 500 printable characters",
            ));
        }
    }
    let row = RevocationRow {
        license_id: id.to_string(),
        reason: reason.map(str::to_string),
        revoked_at: now_rfc3339(),
        revoked_by: ctx.principal.actor_name(),
    };
    let was_active = state
        .license
        .installed()
        .is_some_and(|s| s.claims.jti == row.license_id);
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "license.revoke",
        Some(format!("license:{}", row.license_id)),
    )
    .details(serde_json::json!({"license_id": row.license_id, "reason": row.reason, "was_installed": was_active}));
    let r2 = row.clone();
    let st = state.clone();
    state
        .catalog
        .run(move |c| {
            catalog::insert_revocation(c, &r2, &ev)?;
            st.license.add_revoked(&r2.license_id);
            Ok(())
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(Conflict::Constraint(_)) => ApiError::new(
                ErrorCode::AlreadyRevoked,
                "this license id is already on the revocation list",
            )
            .field("license_id"),
            other => other.into(),
        })?;
    Ok(row)
}

/// The revocation list.
pub async fn revocations(state: &Arc<AppState>) -> ApiResult<Vec<RevocationRow>> {
    Ok(state.catalog.run(|c| catalog::list_revocations(c)).await?)
}

/// The plan a tenant row stands for at `now`: the license's (or trial's) plan when the tenant
/// follows the license (the bootstrap tenant until a PlatformAdmin sets its plan), else the
/// stored plan.
pub fn effective_plan(license: &LicenseState, row: &catalog::TenantRow, now: i64) -> Plan {
    if row.plan_follows_license {
        if let Some(l) = license.in_force(now) {
            return l.plan;
        }
    }
    Plan::parse(&row.plan).unwrap_or(Plan::Free)
}

/// A tenant's plan (unknown tenant → 404), see [`effective_plan`].
pub async fn tenant_plan(state: &Arc<AppState>, t: &TenantId) -> ApiResult<Plan> {
    let id = t.as_str().to_string();
    let row = state
        .catalog
        .run(move |c| catalog::find_tenant(c, &id))
        .await?
        .filter(|r| &r.id == t)
        .ok_or_else(ApiError::not_found)?;
    Ok(effective_plan(&state.license, &row, unix_now()))
}

/// What the tenant may use right now.
pub async fn tenant_entitlements(state: &Arc<AppState>, t: &TenantId) -> ApiResult<Entitlements> {
    let plan = tenant_plan(state, t).await?;
    Ok(state.license.entitlements(plan, unix_now()))
}

/// 403 `feature_not_licensed` naming `feature` unless the tenant's entitlements include it. The
/// detail says which side lacks it: no license in force, the license, or the tenant's plan.
pub async fn require_feature(state: &Arc<AppState>, t: &TenantId, feature: &str) -> ApiResult<()> {
    let plan = tenant_plan(state, t).await?;
    let now = unix_now();
    if state.license.entitlements(plan, now).has(feature) {
        return Ok(());
    }
    let detail = match state.license.in_force(now) {
        None => format!(
            "no license is in force (Free limits): the feature `{feature}` needs a license or the offline trial (a PlatformAdmin installs one on the License page or with `flowguard license install`)"
        ),
        Some(l) if !l.features.iter().any(|f| f == feature) => {
            format!("the license in force does not include the feature `{feature}`")
        }
        Some(l) => format!(
            "the tenant's plan `{}` does not include the feature `{feature}` (the license in force, plan `{}`, does): a PlatformAdmin can change the tenant's plan",
            plan.as_str(),
            l.plan.as_str()
        ),
    };
    Err(ApiError::new(ErrorCode::FeatureNotLicensed, detail).with_feature(feature))
}

/// The problem answered by the feature gate.
pub fn feature_not_licensed(feature: &str) -> ApiError {
    ApiError::new(
        ErrorCode::FeatureNotLicensed,
        format!("the license in force does not include the feature `{feature}`"),
    )
    .with_feature(feature)
}

// ---------------------------------------------------------------- offline trial

/// Now for trial bookkeeping: the system clock (in debug builds the test clock file named by
/// `FLOWGUARD_TEST_CLOCK_FILE`, see [`super::keys::Clock`]).
fn clock_now() -> i64 {
    super::keys::Clock::from_env().now().timestamp()
}

/// Record the current time in the catalog (it keeps the latest ever seen) and load the trial
/// into `state`. Called at start, by the `license-clock` job, on reload and before a trial
/// starts. Returns the latest time seen.
pub fn observe_clock_blocking(state: &AppState) -> StoreResult<i64> {
    let now = clock_now();
    let read_only = crate::store::is_read_only();
    let (seen, trial) = state.catalog.blocking(|c| {
        // A read-only process (`doctor`) computes the mark without recording it.
        let seen = if read_only {
            catalog::clock_high_water(c)?.map_or(now, |s| s.max(now))
        } else {
            catalog::observe_clock(c, now)?
        };
        Ok((seen, catalog::get_trial(c)?))
    })?;
    state.license.set_trial(trial, seen);
    Ok(seen)
}

/// The `license-clock` job: [`observe_clock_blocking`]; 1 when it ran.
pub fn clock_job_blocking(state: &AppState) -> usize {
    match observe_clock_blocking(state) {
        Ok(_) => 1,
        Err(e) => {
            tracing::error!(error = %e, "license clock: catalog not updated");
            0
        }
    }
}

/// Why a trial cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// The deployment used its trial already (ended or running).
    #[error("the offline trial of this deployment was already started on {started} (it {state} on {ends}); it runs once per deployment — install a license to continue")]
    Used {
        /// Start (RFC 3339).
        started: String,
        /// End (RFC 3339).
        ends: String,
        /// `ends` or `ended`.
        state: &'static str,
    },
    /// A license is in force: the trial would add nothing.
    #[error("a license is in force ({0}); the offline trial is for deployments without one")]
    LicenseInForce(String),
    /// The catalog refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TrialError> for ApiError {
    fn from(e: TrialError) -> Self {
        match e {
            TrialError::Store(s) => s.into(),
            other => ApiError::new(ErrorCode::TrialUnavailable, other.to_string()),
        }
    }
}

/// Start the 30-day offline trial (once per deployment), recorded in the catalog with its
/// `license.trial_start` audit row, and load it into `state`. Used by the CLI (`flowguard
/// license trial`, offline) and the PlatformAdmin route.
pub fn start_trial_blocking(state: &AppState, actor: &Actor) -> Result<TrialRow, TrialError> {
    let seen = observe_clock_blocking(state)?;
    let now = clock_now().max(seen);
    if let Some(l) = state.license.license_in_force(now) {
        return Err(TrialError::LicenseInForce(l.jti));
    }
    let used = |t: &TrialRow| TrialError::Used {
        started: rfc3339(t.started_at),
        ends: rfc3339(t.ends_at),
        state: if now < t.ends_at { "ends" } else { "ended" },
    };
    if let Some(t) = state.license.trial() {
        return Err(used(&t));
    }
    let row = TrialRow {
        trial_id: format!("trial-{}", crate::domain::new_object_id()),
        started_at: now,
        ends_at: now + TRIAL_DAYS * 86_400,
        started_by: actor.email.clone().unwrap_or_else(|| "host-cli".into()),
    };
    let ev = NewAuditEvent::new(
        actor,
        "license.trial_start",
        Some(format!("license:{}", row.trial_id)),
    )
    .details(serde_json::json!({
        "trial_id": row.trial_id,
        "plan": Plan::Enterprise,
        "features": crate::domain::plan::KNOWN_FEATURES,
        "started_at": rfc3339(row.started_at),
        "ends_at": rfc3339(row.ends_at),
    }));
    let res = state
        .catalog
        .blocking(|c| catalog::insert_trial(c, &row, &ev));
    match res {
        Ok(()) => {}
        Err(StoreError::Conflict(Conflict::Constraint(_))) => {
            // Another process started it in between: reload and report that one.
            observe_clock_blocking(state)?;
            return Err(state
                .license
                .trial()
                .map(|t| used(&t))
                .unwrap_or(TrialError::Store(StoreError::Conflict(
                    Conflict::Constraint("license_trial".into()),
                ))));
        }
        Err(e) => return Err(e.into()),
    }
    state.license.set_trial(Some(row.clone()), now);
    Ok(row)
}

/// `POST /api/v1/platform/license/trial`: start the trial and return the license view.
pub async fn start_trial(state: &Arc<AppState>, ctx: &Caller) -> ApiResult<LicenseView> {
    let st = state.clone();
    let actor = ctx.actor();
    tokio::task::spawn_blocking(move || start_trial_blocking(&st, &actor))
        .await
        .map_err(ApiError::internal)??;
    Ok(view(state))
}

/// One notification for the dashboard.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notification {
    /// Kind: `license_expiring`, `license_expired`, `license_revoked`, `trial_active`,
    /// `trial_ended`, `integration_auth_failed`, `integration_token_expiring`.
    pub kind: &'static str,
    /// `info`, `warning` or `critical`.
    pub severity: &'static str,
    /// Human text.
    pub message: String,
    /// License expiry (RFC 3339), when the notification is about expiry.
    pub expires_at: Option<String>,
}

/// Notifications for the caller: license warnings for Owners and PlatformAdmins (from
/// [`EXPIRY_WARNING_DAYS`] days before expiry, and once it has lapsed); nothing for other roles.
pub fn notifications(state: &AppState, ctx: &Caller) -> Vec<Notification> {
    let mut out = Vec::new();
    if !matches!(ctx.principal.role(), Role::Owner | Role::PlatformAdmin) {
        return out;
    }
    let now = unix_now();
    if state.license.license_in_force(now).is_none() {
        if let Some(t) = state.license.trial() {
            let at = now.max(state.license.latest_seen());
            let ends = rfc3339(t.ends_at);
            if at < t.ends_at {
                let days = ((t.ends_at - at) + 86_399).div_euclid(86_400);
                out.push(Notification {
                    kind: "trial_active",
                    severity: if days <= 7 { "warning" } else { "info" },
                    message: format!(
                        "Offline trial: {days} day{} left (ends on {ends}). Every licensed feature is on until then; afterwards Free limits apply and nothing is deleted. Install a license on the License page to keep them.",
                        if days == 1 { "" } else { "s" }
                    ),
                    expires_at: Some(ends),
                });
            } else if state.license.installed().is_none() {
                out.push(Notification {
                    kind: "trial_ended",
                    severity: "warning",
                    message: format!(
                        "The offline trial ended on {ends}: Free limits apply until a license is installed. No data was deleted."
                    ),
                    expires_at: Some(ends),
                });
            }
        }
    }
    let Some(s) = state.license.installed() else {
        return out;
    };
    let exp = rfc3339(s.claims.exp);
    match state.license.status(now) {
        LicenseStatus::Active => {
            let left = s.claims.exp - now;
            if left <= EXPIRY_WARNING_DAYS * 86_400 {
                let days = left.div_euclid(86_400);
                out.push(Notification {
                    kind: "license_expiring",
                    severity: "warning",
                    message: format!(
                        "The license {} expires on {exp} (in {days} day{}). Without a renewal the appliance falls back to Free limits; no data is deleted.",
                        s.claims.jti,
                        if days == 1 { "" } else { "s" }
                    ),
                    expires_at: Some(exp),
                });
            }
        }
        LicenseStatus::Expired => out.push(Notification {
            kind: "license_expired",
            severity: "critical",
            message: format!(
                "The license {} expired on {exp}: Free limits apply until a new license is installed. No data was deleted.",
                s.claims.jti
            ),
            expires_at: Some(exp),
        }),
        LicenseStatus::Revoked => out.push(Notification {
            kind: "license_revoked",
            severity: "critical",
            message: format!(
                "The license {} has been revoked: Free limits apply until a new license is installed.",
                s.claims.jti
            ),
            expires_at: None,
        }),
        LicenseStatus::None | LicenseStatus::NotYetValid | LicenseStatus::Trial => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(plan: Plan) -> LicenseClaims {
        LicenseClaims {
            jti: "l1".into(),
            iss: license::ISSUER.into(),
            sub: "Corp".into(),
            iat: 0,
            nbf: 0,
            exp: 1000,
            plan,
            features: vec!["audit.export".into()],
            max_applications: Some(3),
            max_users: Some(10),
            retention_days: 30,
            regions: vec![],
        }
    }

    #[test]
    fn plan_capped_by_license_and_free_fallback() {
        let st = LicenseState::default();
        assert_eq!(st.entitlements(Plan::Business, 10), Entitlements::free());
        st.set_active(Some(SignedLicense {
            claims: claims(Plan::Pro),
            key: "vendor",
        }));
        let e = st.entitlements(Plan::Enterprise, 10);
        assert_eq!(e.plan, Plan::Pro);
        assert_eq!(e.retention_days, 90);
        assert_eq!(e.max_applications, Some(3));
        assert!(e.has("audit.export"));
        assert_eq!(st.entitlements(Plan::Free, 10), Entitlements::free());
        // Expired → Free; revoked → Free.
        assert_eq!(st.entitlements(Plan::Pro, 1000), Entitlements::free());
        assert_eq!(st.status(1000), LicenseStatus::Expired);
        st.add_revoked("l1");
        assert_eq!(st.entitlements(Plan::Pro, 10), Entitlements::free());
        assert_eq!(st.status(10), LicenseStatus::Revoked);
    }

    #[test]
    fn enterprise_retention_from_license() {
        let e = entitlements_from(&claims(Plan::Enterprise), Plan::Enterprise);
        assert_eq!(e.retention_days, 30);
    }
}
