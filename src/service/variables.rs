//! Per-application variables, plain or secret. Secret values are envelope-encrypted under the
//! tenant DEK through [`super::sealing`] (column [`sealing::VARIABLE`]: AES-256-GCM, AAD =
//! tenant + application + name), write-only through the API (reads show `set: true`), never
//! logged, and audit rows name the variable, never the value.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::sealing::{self, Plain};
use super::{AppState, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::domain::flow::valid_variable_name;
use crate::domain::{now_rfc3339, TenantId};
use crate::error::{ApiError, ApiResult};
use crate::store::variables::{self, VariableRow};
use crate::store::StoreResult;

/// Largest variable value (bytes).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// A variable as the API shows it; secret values are never returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariableView {
    /// Name.
    pub name: String,
    /// Secret?
    pub secret: bool,
    /// Plain value (absent for secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether a value is set.
    pub set: bool,
    /// Updated (RFC 3339).
    pub updated_at: String,
}

fn view(v: VariableRow) -> VariableView {
    VariableView {
        name: v.name,
        secret: v.secret,
        set: v.value.is_some() || v.ciphertext.is_some(),
        value: if v.secret { None } else { v.value },
        updated_at: v.updated_at,
    }
}

/// A resolved variable (secret values in clear; zeroed on drop).
pub struct Resolved {
    /// Name.
    pub name: String,
    /// Value.
    pub value: Zeroizing<String>,
    /// Secret?
    pub secret: bool,
}

/// Decrypt all variables of an application (blocking). A key rotation may retire the DEK of a
/// ciphertext between reading the row and fetching the key (the row was re-sealed meanwhile):
/// the rows are then read again, up to three times.
pub fn resolve_blocking(state: &AppState, t: &TenantId, app: &str) -> StoreResult<Vec<Resolved>> {
    sealing::reread(|| resolve_once(state, t, app))
}

fn resolve_once(state: &AppState, t: &TenantId, app: &str) -> StoreResult<Vec<Resolved>> {
    let rows = state
        .tenants
        .read_blocking(t, |c| variables::variables(c, app))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let value = match (r.secret, r.ciphertext, r.value) {
            (true, Some(ct), _) => {
                let pt = sealing::open(state, t, &sealing::VARIABLE, &[app, &r.name], &ct)?;
                Zeroizing::new(String::from_utf8_lossy(&pt).into_owned())
            }
            (false, _, Some(v)) => Zeroizing::new(v),
            _ => continue,
        };
        out.push(Resolved {
            name: r.name,
            value,
            secret: r.secret,
        });
    }
    Ok(out)
}

/// Replace every secret value occurring in `text` with `[REDACTED]` (longest first), also in
/// its JSON-escaped and URL-encoded forms ([`crate::domain::redact`]).
pub fn scrub(text: &str, secrets: &[Zeroizing<String>]) -> String {
    crate::domain::redact::Secrets::new(secrets.iter().map(|s| s.as_str())).scrub_str(text)
}

/// A reported JSON value (step `console`, `network`) with every secret replaced in the decoded
/// text of each string, object keys included ([`crate::domain::redact`]) — never in the
/// serialised JSON, where `"`, `\` and control characters appear escaped.
pub fn scrub_json(v: &serde_json::Value, secrets: &[Zeroizing<String>]) -> serde_json::Value {
    crate::domain::redact::Secrets::new(secrets.iter().map(|s| s.as_str())).scrub_json(v)
}

/// Secret values of an application, longest first (for [`scrub`]).
pub fn secret_values(resolved: &[Resolved]) -> Vec<Zeroizing<String>> {
    let mut v: Vec<Zeroizing<String>> = resolved
        .iter()
        .filter(|r| r.secret)
        .map(|r| r.value.clone())
        .collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v
}

async fn check_app(state: &Arc<AppState>, t: &TenantId, app: &str) -> ApiResult<()> {
    let a = app.to_string();
    state
        .tenants
        .run(t, move |c| crate::store::applications::application(c, &a))
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(())
}

/// List variables.
pub async fn list(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
) -> ApiResult<Vec<VariableView>> {
    let t = ctx.tenant.clone();
    check_app(state, &t, app).await?;
    let a = app.to_string();
    Ok(state
        .tenants
        .run(&t, move |c| variables::variables(c, &a))
        .await?
        .into_iter()
        .map(view)
        .collect())
}

/// Read one variable.
pub async fn get(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
    name: &str,
) -> ApiResult<VariableView> {
    list(state, ctx, app)
        .await?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(ApiError::not_found)
}

/// Set a variable.
pub async fn put(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
    name: &str,
    value: Zeroizing<String>,
    secret: bool,
) -> ApiResult<VariableView> {
    let t = ctx.tenant.clone();
    if !valid_variable_name(name) {
        return Err(ApiError::invalid(
            "name",
            "variable names are [A-Za-z_][A-Za-z0-9_]{0,63}",
        ));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::invalid("value", "value longer than 16 KiB"));
    }
    check_app(state, &t, app).await?;
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "variable.set",
        Some(format!("variable:{app}/{name}")),
    )
    .details(serde_json::json!({"application_id": app, "name": name, "secret": secret}));
    // Sealed and written through the sealing module: when a key rotation raises the DEK fence
    // between sealing and committing, the store refuses the write (`key_rotated`) and the value
    // is sealed again under the current DEK.
    let values = if secret {
        vec![Plain::column(
            &t,
            &sealing::VARIABLE,
            &[app, name],
            value.as_bytes(),
        )]
    } else {
        Vec::new()
    };
    let row = sealing::write_sealed(state, &t, values, |_, cts| {
        let row = VariableRow {
            name: name.to_string(),
            secret,
            value: (!secret).then(|| value.to_string()),
            ciphertext: cts.into_iter().next(),
            updated_at: now_rfc3339(),
        };
        let (app, r2, ev) = (app.to_string(), row.clone(), ev.clone());
        let tenants = state.tenants.clone();
        let t = t.clone();
        async move {
            tenants
                .run(&t, move |c| variables::put_variable(c, &app, &r2, &ev))
                .await?;
            Ok(row)
        }
    })
    .await?;
    Ok(view(row))
}

/// Delete a variable.
pub async fn delete(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
    name: &str,
) -> ApiResult<()> {
    let t = ctx.tenant.clone();
    check_app(state, &t, app).await?;
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "variable.delete",
        Some(format!("variable:{app}/{name}")),
    )
    .details(serde_json::json!({"application_id": app, "name": name}));
    let (a, n) = (app.to_string(), name.to_string());
    state
        .tenants
        .run(&t, move |c| variables::delete_variable(c, &a, &n, &ev))
        .await?;
    Ok(())
}
