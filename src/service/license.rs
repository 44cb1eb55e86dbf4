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
use crate::store::{Catalog, Conflict, StoreError};

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
}

impl LicenseState {
    /// Claims of the license in force at `now`, if any.
    pub fn in_force(&self, now: i64) -> Option<LicenseClaims> {
        let l = self.inner.read();
        let a = l.active.as_ref()?;
        (a.claims.check_time(now).is_ok() && !l.revoked.contains(&a.claims.jti))
            .then(|| a.claims.clone())
    }

    /// Status of the installed license at `now`.
    pub fn status(&self, now: i64) -> LicenseStatus {
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
}

/// The current license view.
pub fn view(state: &AppState) -> LicenseView {
    let now = unix_now();
    let installed = state.license.installed();
    let plan = installed
        .as_ref()
        .map(|s| s.claims.plan)
        .unwrap_or(Plan::Free);
    LicenseView {
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
        Some(write_temp(&path, token).map_err(ApiError::internal)?)
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

/// A tenant's plan from the catalog (unknown tenant → 404).
pub async fn tenant_plan(state: &Arc<AppState>, t: &TenantId) -> ApiResult<Plan> {
    let id = t.as_str().to_string();
    let row = state
        .catalog
        .run(move |c| catalog::find_tenant(c, &id))
        .await?
        .filter(|r| &r.id == t)
        .ok_or_else(ApiError::not_found)?;
    Plan::parse(&row.plan).map_err(ApiError::internal)
}

/// What the tenant may use right now.
pub async fn tenant_entitlements(state: &Arc<AppState>, t: &TenantId) -> ApiResult<Entitlements> {
    let plan = tenant_plan(state, t).await?;
    Ok(state.license.entitlements(plan, unix_now()))
}

/// 403 `feature_not_licensed` naming `feature` unless the tenant's entitlements include it.
pub async fn require_feature(state: &Arc<AppState>, t: &TenantId, feature: &str) -> ApiResult<()> {
    if tenant_entitlements(state, t).await?.has(feature) {
        Ok(())
    } else {
        Err(feature_not_licensed(feature))
    }
}

/// The problem answered by the feature gate.
pub fn feature_not_licensed(feature: &str) -> ApiError {
    ApiError::new(
        ErrorCode::FeatureNotLicensed,
        format!("the license in force does not include the feature `{feature}`"),
    )
    .with_feature(feature)
}

/// One notification for the dashboard.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notification {
    /// Kind: `license_expiring`, `license_expired`, `license_revoked`,
    /// `integration_auth_failed`, `integration_token_expiring`.
    pub kind: &'static str,
    /// `warning` or `critical`.
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
        LicenseStatus::None | LicenseStatus::NotYetValid => {}
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
