//! Tenant creation and first-start bootstrap (blocking; used by `flowguard init` and by `serve`
//! on an empty data dir).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;

use crate::audit::{Actor, NewAuditEvent};
use crate::auth::password;
use crate::crypto::keyring::{self, KeyPurpose, TenantKeySet};
use crate::domain::{new_object_id, now_rfc3339, Email, Role, TenantId, TenantName};
use crate::service::AppState;
use crate::store::catalog::{self, PlatformAdminRow, TenantRow};
use crate::store::users::{self, UserRow};
use crate::store::{Catalog, StoreError};

/// Failures while creating tenants or admins.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Invalid input (message names the field).
    #[error("{0}")]
    Invalid(String),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failure.
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    /// Writing the credentials file failed.
    #[error("cannot write {path}: {reason}")]
    Io { path: String, reason: String },
}

/// What bootstrap created; passwords are present only when generated here.
#[derive(Debug, Serialize)]
pub struct Created {
    /// New tenant id.
    pub tenant_id: String,
    /// Tenant name.
    pub tenant_name: String,
    /// Owner email.
    pub owner_email: String,
    /// Generated owner password (one-time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_password: Option<String>,
    /// PlatformAdmin email, if one was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_admin_email: Option<String>,
    /// Generated PlatformAdmin password (one-time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_admin_password: Option<String>,
}

fn system_actor() -> Actor {
    Actor {
        email: Some("system".into()),
        role: Some("system".into()),
        client_ip: None,
        user_agent: None,
    }
}

/// Create a tenant in the deployment's region with its key set and one Owner. The tenant store file is written
/// first; the catalog row (with wrapped keys) commits last, so a crash leaves at most an orphan
/// file and never a catalog entry without a store.
pub fn create_tenant(
    state: &AppState,
    name: &str,
    owner_email: &str,
    owner_password_hash: &str,
    must_change_password: bool,
    actor: Option<&Actor>,
) -> Result<TenantId, BootstrapError> {
    let (master, catalog, stores) = (&*state.master, &state.catalog, &*state.tenants);
    let region = &state.settings.region();
    let name = TenantName::parse(name)
        .map_err(|e| BootstrapError::Invalid(format!("tenant name: {e}")))?;
    let email = Email::parse(owner_email)
        .map_err(|e| BootstrapError::Invalid(format!("owner email: {e}")))?;
    {
        let c = catalog.db().lock();
        if catalog::find_tenant(&c, name.as_str())?.is_some() {
            return Err(BootstrapError::Invalid(format!(
                "a tenant named `{}` already exists",
                name.as_str()
            )));
        }
    }
    let id = TenantId::generate(region);
    let keys = TenantKeySet::generate(1);
    let wrap = |p: KeyPurpose, k: &[u8; 32]| {
        keyring::wrap(master, &id, keys.version, p, k)
            .map_err(|e| BootstrapError::Invalid(e.to_string()))
    };
    let w_db = wrap(KeyPurpose::Db, &keys.db_key)?;
    let w_dek = wrap(KeyPurpose::Dek, &keys.dek)?;
    let now = now_rfc3339();
    let bootstrap = actor.is_none();
    let actor = actor.cloned().unwrap_or_else(system_actor);
    {
        let mut conn = stores.create_file(&id, &keys.db_key)?;
        let owner = UserRow {
            id: new_object_id(),
            email: email.as_str().to_string(),
            display_name: None,
            role: Role::Owner.as_str().into(),
            source: "local".into(),
            active: true,
            must_change_password,
            created_at: now.clone(),
            updated_at: now.clone(),
            password_hash: Some(owner_password_hash.to_string()),
        };
        let ev = NewAuditEvent::new(
            &actor,
            "member.add",
            Some(format!("member:{}", email.as_str())),
        )
        .details(serde_json::json!({"role": "owner", "source": "bootstrap"}));
        users::insert_user(&mut conn, &owner, Some(&ev))?;
    }
    let row = TenantRow {
        id: id.clone(),
        name: name.as_str().into(),
        region: region.as_str().into(),
        plan: "free".into(),
        created_at: now,
        status: "active".into(),
        // The bootstrap tenant (first start, `init`) follows the license's plan until a
        // PlatformAdmin sets one: a license then just works on a one-tenant install.
        plan_follows_license: bootstrap,
    };
    let ev = NewAuditEvent::new(&actor, "tenant.create", Some(format!("tenant:{}", id))).details(
        serde_json::json!({"name": name.as_str(), "region": region.as_str(), "plan": "free"}),
    );
    let res = catalog.blocking(|c| catalog::insert_tenant(c, &row, &w_db, &w_dek, &ev));
    if let Err(e) = res {
        let _ = std::fs::remove_file(stores.path_of(&id));
        return Err(e.into());
    }
    Ok(id)
}

/// Create a PlatformAdmin in the catalog.
pub fn create_platform_admin(
    catalog: &Catalog,
    email: &str,
    hash: &str,
    must_change: bool,
) -> Result<(), BootstrapError> {
    let email = Email::parse(email)
        .map_err(|e| BootstrapError::Invalid(format!("platform admin email: {e}")))?;
    let row = PlatformAdminRow {
        id: new_object_id(),
        email: email.as_str().into(),
        password_hash: hash.into(),
        must_change_password: must_change,
    };
    let ev = NewAuditEvent::new(
        &system_actor(),
        "platform_admin.create",
        Some(format!("platform_admin:{}", email)),
    );
    let mut c = catalog.db().lock();
    catalog::insert_platform_admin(&mut c, &row, &ev)?;
    Ok(())
}

/// Read a password file (trailing newline trimmed); enforces the length rules.
pub fn read_password_file(path: &Path) -> Result<zeroize::Zeroizing<String>, BootstrapError> {
    let s =
        zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| BootstrapError::Io {
                path: path.display().to_string(),
                reason: e.kind().to_string(),
            })?,
        );
    let p = zeroize::Zeroizing::new(s.trim_end_matches(['\r', '\n']).to_string());
    check_new_password(&p)
        .map_err(|m| BootstrapError::Invalid(format!("{}: {m}", path.display())))?;
    Ok(p)
}

/// Rules for a new password: 12..=1024 bytes.
pub fn check_new_password(p: &str) -> Result<(), &'static str> {
    if p.len() > password::MAX_PASSWORD_BYTES {
        return Err("password longer than 1024 bytes");
    }
    if p.chars().count() < password::MIN_PASSWORD_CHARS {
        return Err("password shorter than 12 characters");
    }
    Ok(())
}

/// Write `<data>/initial-credentials` (0600, refusing to overwrite).
pub fn write_initial_credentials(data_dir: &Path, c: &Created) -> Result<(), BootstrapError> {
    let path = data_dir.join("initial-credentials");
    let err = |e: std::io::Error| BootstrapError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    let mut text = String::from(
        "# FlowGuard initial credentials: one-time passwords generated on first start.\n\
         # Log in, change each password (POST /api/v1/me/password), then delete this file.\n",
    );
    text.push_str(&format!(
        "tenant_id = {}\ntenant_name = {}\n",
        c.tenant_id, c.tenant_name
    ));
    text.push_str(&format!("owner_email = {}\n", c.owner_email));
    if let Some(p) = &c.owner_password {
        text.push_str(&format!("owner_password = {p}\n"));
    }
    if let Some(e) = &c.platform_admin_email {
        text.push_str(&format!("platform_admin_email = {e}\n"));
    }
    if let Some(p) = &c.platform_admin_password {
        text.push_str(&format!("platform_admin_password = {p}\n"));
    }
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}
