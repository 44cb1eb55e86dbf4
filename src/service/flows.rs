//! Flows: create, read (current or any version), save a new version, delete, list by tag;
//! schedules (cron + IANA timezone); webhook trigger tokens.

use std::sync::Arc;

use super::{unix_now, AppState, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::crypto::token;
use crate::domain::flow::FlowDef;
use crate::domain::schedule::CronSchedule;
use crate::domain::{new_object_id, now_rfc3339};
use crate::error::{ApiError, ApiResult, ErrorCode};
pub use crate::store::flows::FlowRow;
use crate::store::flows::{self, NewVersion};
use crate::store::webhooks;
pub use crate::store::webhooks::WebhookRow;
use crate::store::StoreError;

fn parse_def(body: &serde_json::Value) -> ApiResult<FlowDef> {
    FlowDef::parse(body).map_err(|e| {
        let mut err = ApiError::new(ErrorCode::ValidationFailed, e.human());
        if !e.field.is_empty() {
            err = err.field(e.field);
        }
        err
    })
}

/// 422 `secret_outside_origin` (field `steps[i].url` or `steps[i].expected`) when the flow
/// would send a secret variable of application `app` outside its base URL's origin (see
/// [`crate::domain::flow::secret_outside_origin`]).
async fn check_secret_placement(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
    def: &FlowDef,
) -> ApiResult<()> {
    let a = app.to_string();
    let (base, secrets) = state
        .tenants
        .run(&ctx.tenant, move |c| {
            let base = crate::store::applications::application(c, &a)?.map(|r| r.base_url);
            let names: Vec<String> = crate::store::variables::variables(c, &a)?
                .into_iter()
                .filter(|v| v.secret)
                .map(|v| v.name)
                .collect();
            Ok((base, names))
        })
        .await?;
    let Some(base) = base else {
        return Ok(()); // the write answers 404
    };
    match crate::domain::flow::secret_outside_origin(&def.steps, &secrets, &base) {
        None => Ok(()),
        Some((i, why)) => {
            let field = match def.steps.get(i) {
                Some(crate::domain::flow::Step::Assert { .. }) => format!("steps[{i}].expected"),
                _ => format!("steps[{i}].url"),
            };
            Err(ApiError::new(ErrorCode::SecretOutsideOrigin, why).field(field))
        }
    }
}

struct Encoded {
    tags: String,
    steps: String,
    source: String,
}

fn encode(d: &FlowDef) -> ApiResult<Encoded> {
    Ok(Encoded {
        tags: serde_json::to_string(&d.tags).map_err(ApiError::internal)?,
        steps: serde_json::to_string(&d.steps).map_err(ApiError::internal)?,
        source: serde_json::to_value(d.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "manual".into()),
    })
}

/// Create a flow under an application (404 if the application is not in this tenant).
pub async fn create(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
    body: &serde_json::Value,
) -> ApiResult<FlowRow> {
    let t = ctx.tenant.clone();
    let def = parse_def(body)?;
    check_secret_placement(state, ctx, app, &def).await?;
    let enc = encode(&def)?;
    let id = new_object_id();
    let ev = NewAuditEvent::new(&ctx.actor(), "flow.create", Some(format!("flow:{id}")))
        .details(serde_json::json!({"name": def.name, "application_id": app, "version": 1, "steps": def.steps.len()}));
    let (app, by, id2) = (app.to_string(), ctx.principal.actor_name(), id.clone());
    let name = def.name.clone();
    state
        .tenants
        .run(&t, move |c| {
            let v = NewVersion {
                name: &name,
                tags: &enc.tags,
                source: &enc.source,
                steps: &enc.steps,
                created_by: &by,
            };
            flows::insert_flow(c, &id2, &app, &v, &ev)
        })
        .await?;
    get(state, ctx, &id, None).await
}

/// Read a flow at its current version or at `version`.
pub async fn get(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    version: Option<i64>,
) -> ApiResult<FlowRow> {
    let t = ctx.tenant.clone();
    let id = id.to_string();
    state
        .tenants
        .run(&t, move |c| flows::flow(c, &id, version))
        .await?
        .ok_or_else(ApiError::not_found)
}

/// List live flows of an application, optionally by tag.
pub async fn list(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
    tag: Option<String>,
) -> ApiResult<Vec<FlowRow>> {
    let t = ctx.tenant.clone();
    let app = app.to_string();
    let exists = {
        let a = app.clone();
        state
            .tenants
            .run(&t, move |c| crate::store::applications::application(c, &a))
            .await?
            .is_some()
    };
    if !exists {
        return Err(ApiError::not_found());
    }
    Ok(state
        .tenants
        .run(&t, move |c| flows::list_flows(c, &app, tag.as_deref()))
        .await?)
}

/// Save a new immutable version.
pub async fn update(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    body: &serde_json::Value,
) -> ApiResult<FlowRow> {
    let t = ctx.tenant.clone();
    let def = parse_def(body)?;
    let enc = encode(&def)?;
    let cur = get(state, ctx, id, None).await?;
    check_secret_placement(state, ctx, &cur.application_id, &def).await?;
    let ev = NewAuditEvent::new(&ctx.actor(), "flow.update", Some(format!("flow:{id}")))
        .details(serde_json::json!({"name": def.name, "from_version": cur.current_version, "steps": def.steps.len()}));
    let (by, id2, name) = (ctx.principal.actor_name(), id.to_string(), def.name.clone());
    state
        .tenants
        .run(&t, move |c| {
            let v = NewVersion {
                name: &name,
                tags: &enc.tags,
                source: &enc.source,
                steps: &enc.steps,
                created_by: &by,
            };
            flows::insert_version(c, &id2, &v, &ev)
        })
        .await?;
    get(state, ctx, id, None).await
}

/// Delete (soft: versions stay readable through runs; webhook tokens are revoked).
pub async fn delete(state: &Arc<AppState>, ctx: &TenantCtx, id: &str) -> ApiResult<()> {
    let t = ctx.tenant.clone();
    let cur = get(state, ctx, id, None).await?;
    let ev = NewAuditEvent::new(&ctx.actor(), "flow.delete", Some(format!("flow:{id}")))
        .details(serde_json::json!({"name": cur.name}));
    let id = id.to_string();
    state
        .tenants
        .run(&t, move |c| flows::delete_flow(c, &id, &ev))
        .await?;
    Ok(())
}

/// Validate a cron expression (5 fields, or 6 with seconds) and an IANA timezone; the schedule
/// follows the daylight-saving rule of [`CronSchedule`].
pub fn parse_schedule(cron: &str, tz: &str) -> ApiResult<CronSchedule> {
    CronSchedule::parse(cron, tz).map_err(|(field, e)| ApiError::invalid(field, e.0))
}

/// Set (`Some`) or clear (`None`) a flow's schedule. Ticks are counted from now.
pub async fn set_schedule(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    sched: Option<(String, String)>,
) -> ApiResult<FlowRow> {
    let t = ctx.tenant.clone();
    if let Some((cron, tz)) = &sched {
        parse_schedule(cron, tz)?;
    }
    let ev = NewAuditEvent::new(&ctx.actor(), "flow.schedule", Some(format!("flow:{id}")))
        .details(serde_json::json!({"cron": sched.as_ref().map(|s| &s.0), "timezone": sched.as_ref().map(|s| &s.1)}));
    let id2 = id.to_string();
    let now = unix_now();
    state
        .tenants
        .run(&t, move |c| {
            let s = sched.as_ref().map(|(a, b)| (a.trim(), b.trim()));
            flows::set_schedule(c, &id2, s, now, &ev)
        })
        .await?;
    get(state, ctx, id, None).await
}

/// Create a webhook trigger token (`fgw_<tenant>_…`, shown once) for a flow.
pub async fn create_webhook(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    flow: &str,
    name: &str,
) -> ApiResult<(WebhookRow, String)> {
    let t = ctx.tenant.clone();
    let name = crate::domain::DisplayName::parse(name, 100)
        .map_err(|e| ApiError::invalid("name", e.0))?
        .into_string();
    let name = name.as_str();
    let secret = format!("fgw_{}_{}", t.as_str(), token::random_secret());
    let row = WebhookRow {
        id: new_object_id(),
        flow_id: flow.to_string(),
        name: name.to_string(),
        prefix: secret.chars().take(secret.len() - 37).collect(),
        created_at: now_rfc3339(),
        created_by: ctx.principal.actor_name(),
        revoked_at: None,
    };
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "webhook_token.create",
        Some(format!("webhook_token:{}", row.id)),
    )
    .details(serde_json::json!({"flow_id": flow, "name": name, "prefix": row.prefix}));
    let (r2, h) = (row.clone(), token::token_hash(&secret));
    state
        .tenants
        .run(&t, move |c| webhooks::insert_webhook(c, &r2, &h, &ev))
        .await?;
    Ok((row, secret))
}

/// List a flow's webhook tokens.
pub async fn list_webhooks(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    flow: &str,
) -> ApiResult<Vec<WebhookRow>> {
    let t = ctx.tenant.clone();
    get(state, ctx, flow, None).await?;
    let f = flow.to_string();
    Ok(state
        .tenants
        .run(&t, move |c| webhooks::webhooks(c, &f))
        .await?)
}

/// Revoke a webhook token.
pub async fn revoke_webhook(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    flow: &str,
    id: &str,
) -> ApiResult<()> {
    let t = ctx.tenant.clone();
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "webhook_token.revoke",
        Some(format!("webhook_token:{id}")),
    )
    .details(serde_json::json!({"flow_id": flow}));
    let (f, i) = (flow.to_string(), id.to_string());
    state
        .tenants
        .run(&t, move |c| webhooks::revoke_webhook(c, &f, &i, &ev))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(),
            other => other.into(),
        })?;
    Ok(())
}
