//! Ticket integrations (issue 20): an application's tracker configuration, the tickets filed for
//! failed runs, and their delivery.
//!
//! - **Configuration** ([`get_integration`], [`put_integration`], [`delete_integration`],
//!   [`test_integration`]; Owner and Admin). The token is sealed through [`super::sealing`]
//!   (column [`sealing::INTEGRATION_TOKEN`]; rotation re-seals it), write-only: views say
//!   `token_set: true` and audit rows never carry it. `base_url` must lie within the operator's
//!   `egress.allow` (422 `egress_denied`) and is checked again on every connection.
//! - **Filing**. Manually ([`file_for_run`]) for any failed run; automatically
//!   ([`on_run_finished_blocking`], called when a run completes) only for a *test* failure
//!   ([`is_test_failure`]: a step reported `failed` or a checkpoint verdict `fail`). Never for
//!   `cancelled`, `agent_timeout`, an AI endpoint error (`checkpoint_error`), an unevaluated
//!   checkpoint, a missing step result or an agent that gave up without a failed step (browser
//!   crash and other infrastructure outcomes). Only
//!   after `after_consecutive_failures` such failures in a row of the flow (passes reset the
//!   count, infrastructure outcomes neither count nor reset). One open ticket per **failure
//!   signature** = SHA-256 of (flow, failing step index, error class); a repeat adds a comment
//!   (`comment_on_repeat`, at most one per hour per ticket); a pass closes the flow's open
//!   tickets, commenting the recovery when `comment_on_recovery`.
//! - **Content** ([`content_of`]): title from the flow and failing step; body with the run link
//!   (`public_url` + `/runs/{id}`), step, error and the last console lines, with every secret
//!   variable value of the application replaced by `[REDACTED]`; the masked screenshot of the
//!   failing step is attached where the tracker takes attachments (Jira, GitLab, Azure DevOps).
//! - **Delivery** through the outbox (`ticket_outbox`): [`kick`] delivers right away in the
//!   background and the `ticket-outbox` job picks up what is due (also after a restart). A
//!   delivery counts as filed only on the tracker's expected JSON ([`providers`]); 429/5xx and
//!   connection failures retry with exponential backoff (5 s doubling, ≤ 1 h) or after
//!   `Retry-After`, at most [`MAX_ATTEMPTS`] calls; a 401 stops at once and marks the
//!   integration (`integration_auth_failed` notification for Owners); anything else fails with
//!   its reason. Audit: `ticket.filed`, `ticket.commented`, `ticket.failed`.

pub mod config;
pub mod providers;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use self::config::{Integration, IntegrationBody, Raw, Rules};
use self::providers::{Check, Created, Failure, Tracker};
use super::license::Notification;
use super::sealing::{self, Plain};
use super::{unix_now, AppState, Caller, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::domain::flow::Step;
use crate::domain::{new_object_id, now_rfc3339, Role, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::net::tracker::TrackerClient;
use crate::store::integrations::{self as store, Attempt, IntegrationRow, NewDelivery, OutboxRow};
use crate::store::runs::{RunRow, StepRow};
use crate::store::{Conn, StoreError, StoreResult};

/// Most calls made for one delivery before it is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// Least time between two repeat comments on one ticket (seconds).
pub const COMMENT_INTERVAL_SECS: i64 = 3600;
/// Days before `token_expires_at` from which Owners are warned.
pub const TOKEN_WARNING_DAYS: i64 = 14;
/// Timeout of one tracker call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Console lines quoted in a ticket.
pub const CONSOLE_LINES: usize = 20;
/// How long a claimed delivery is reserved for its worker (seconds).
const LEASE_SECS: i64 = 300;

// ---------------------------------------------------------------- configuration

/// An application's integration as the API shows it (never the token).
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    /// Application.
    pub application_id: String,
    /// `jira|github|gitlab|azure-devops`.
    pub provider: String,
    /// Base URL.
    pub base_url: String,
    /// Project.
    pub project: String,
    /// Jira Cloud e-mail.
    pub email: Option<String>,
    /// Always true: a token is stored (it is never returned).
    pub token_set: bool,
    /// Whether a CA bundle replaces the public roots.
    pub ca_pem_set: bool,
    /// Token expiry (RFC 3339).
    pub token_expires_at: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Extra fields.
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Rules.
    pub rules: Rules,
    /// When the tracker last refused the token (401), until a new token or a successful call.
    pub auth_failed_at: Option<String>,
    /// Last change.
    pub updated_at: String,
    /// Who changed it.
    pub updated_by: String,
}

fn view_of(row: &IntegrationRow, i: &Integration) -> IntegrationView {
    IntegrationView {
        application_id: row.application_id.clone(),
        provider: i.provider.as_str().to_string(),
        base_url: i.base_url.to_string(),
        project: i.project.clone(),
        email: i.email.clone(),
        token_set: true,
        ca_pem_set: i.ca_pem.is_some(),
        token_expires_at: i.token_expires_at.clone(),
        labels: i.labels.clone(),
        fields: i.fields.clone(),
        rules: i.rules,
        auth_failed_at: row.auth_failed_at.clone(),
        updated_at: row.updated_at.clone(),
        updated_by: row.updated_by.clone(),
    }
}

fn integration_of(row: &IntegrationRow, token: &str) -> StoreResult<Integration> {
    let bad = |what: &str| StoreError::Migration(format!("stored integration invalid: {what}"));
    let labels: Vec<String> = serde_json::from_str(&row.labels).map_err(|_| bad("labels"))?;
    let fields: Map<String, Value> =
        serde_json::from_str(&row.fields).map_err(|_| bad("fields"))?;
    let rules: Rules = serde_json::from_str(&row.rules).map_err(|_| bad("rules"))?;
    Integration::parse(Raw {
        provider: &row.provider,
        base_url: &row.base_url,
        project: &row.project,
        email: row.email.as_deref(),
        token,
        ca_pem: row.ca_pem.as_deref(),
        token_expires_at: row.token_expires_at.as_deref(),
        labels,
        fields,
        rules,
    })
    .map_err(|e| bad(e.field.as_deref().unwrap_or("value")))
}

/// The integration of `app` with its token opened (blocking); read again when a rotation
/// retired the DEK in between.
pub fn load_blocking(
    state: &AppState,
    t: &TenantId,
    app: &str,
) -> StoreResult<Option<(IntegrationRow, Integration)>> {
    sealing::reread(|| {
        let db = state.tenants.get_blocking(t)?;
        let row = {
            let c = db.lock();
            store::integration(&c, app)?
        };
        row.map(|r| {
            let pt = sealing::open(
                state,
                t,
                &sealing::INTEGRATION_TOKEN,
                &[&r.application_id],
                &r.token,
            )?;
            let token = Zeroizing::new(String::from_utf8_lossy(&pt).into_owned());
            let i = integration_of(&r, &token)?;
            Ok((r, i))
        })
        .transpose()
    })
}

async fn load(
    state: &Arc<AppState>,
    t: &TenantId,
    app: &str,
) -> ApiResult<Option<(IntegrationRow, Integration)>> {
    let (st, t, app) = (state.clone(), t.clone(), app.to_string());
    Ok(
        tokio::task::spawn_blocking(move || load_blocking(&st, &t, &app))
            .await
            .map_err(ApiError::internal)??,
    )
}

async fn require_app(state: &Arc<AppState>, t: &TenantId, app: &str) -> ApiResult<()> {
    let a = app.to_string();
    if state
        .tenants
        .run(t, move |c| store::application_exists(c, &a))
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// The application's integration; 404 when the application or its integration does not exist.
pub async fn get_integration(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
) -> ApiResult<IntegrationView> {
    let (row, i) = load(state, &ctx.tenant, app)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(view_of(&row, &i))
}

/// Validate, check egress, seal the token and store the integration (full replacement;
/// audited `integration.save` with provider, base URL and project, never the token).
pub async fn put_integration(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
    body: IntegrationBody,
) -> ApiResult<IntegrationView> {
    let t = ctx.tenant.clone();
    require_app(state, &t, app).await?;
    let i = Integration::parse(Raw {
        provider: &body.provider,
        base_url: &body.base_url,
        project: &body.project,
        email: body.auth.email.as_deref(),
        token: &body.auth.token,
        ca_pem: body.ca_pem.as_deref(),
        token_expires_at: body.token_expires_at.as_deref(),
        labels: body.labels.clone().unwrap_or_default(),
        fields: body.fields.clone().unwrap_or_default(),
        rules: body.rules.unwrap_or_default(),
    })?;
    let (host, port) = i.host_port();
    state
        .egress
        .check_host(&host, port)
        .await
        .map_err(|d| ApiError::new(ErrorCode::EgressDenied, d.message).field("base_url"))?;
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "integration.save",
        Some(format!("application:{app}")),
    )
    .details(json!({
        "provider": i.provider.as_str(),
        "base_url": i.base_url.as_str(),
        "project": i.project,
        "email_set": i.email.is_some(),
        "ca_pem_set": i.ca_pem.is_some(),
        "token_expires_at": i.token_expires_at,
        "rules": i.rules,
    }));
    let base = IntegrationRow {
        application_id: app.to_string(),
        provider: i.provider.as_str().to_string(),
        base_url: i.base_url.to_string(),
        project: i.project.clone(),
        email: i.email.clone(),
        token: Vec::new(),
        ca_pem: i.ca_pem.clone(),
        token_expires_at: i.token_expires_at.clone(),
        labels: to_json(&i.labels),
        fields: to_json(&i.fields),
        rules: to_json(&i.rules),
        auth_failed_at: None,
        updated_at: now_rfc3339(),
        updated_by: ctx.principal.actor_name(),
    };
    let values = vec![Plain::column(
        &t,
        &sealing::INTEGRATION_TOKEN,
        &[app],
        i.token.as_bytes(),
    )];
    let row = sealing::write_sealed(state, &t, values, |_, cts| {
        let mut row = base.clone();
        row.token = cts.into_iter().next().unwrap_or_default();
        let (r2, ev) = (row.clone(), ev.clone());
        let tenants = state.tenants.clone();
        let t = t.clone();
        async move {
            tenants
                .run(&t, move |c| store::put_integration(c, &r2, &ev))
                .await?;
            Ok(row)
        }
    })
    .await?;
    Ok(view_of(&row, &i))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Remove the application's integration and the tickets it tracks (404 when none; audited
/// `integration.delete`).
pub async fn delete_integration(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
) -> ApiResult<()> {
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "integration.delete",
        Some(format!("application:{app}")),
    );
    let a = app.to_string();
    if state
        .tenants
        .run(&ctx.tenant, move |c| store::delete_integration(c, &a, &ev))
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// A ticket preview.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Title.
    pub title: String,
    /// Body (plain text; secrets scrubbed).
    pub body: String,
}

/// Result of `POST …/integration/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// Every check passed.
    pub ok: bool,
    /// `reachability`, `authentication`, `project`, `issue_type`, in order.
    pub checks: Vec<Check>,
    /// The ticket that would be filed for the application's latest failed run (`null` when it
    /// has none). Nothing is created.
    pub preview: Option<Preview>,
}

/// Check the tracker (reachability, authentication, project, issue type) and preview the
/// ticket for the latest failed run, creating nothing. 409 `integration_not_configured` when the
/// application has no integration. Audited `integration.test` with the check results.
pub async fn test_integration(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    app: &str,
) -> ApiResult<TestResult> {
    let t = ctx.tenant.clone();
    require_app(state, &t, app).await?;
    let Some((_, i)) = load(state, &t, app).await? else {
        return Err(ApiError::new(
            ErrorCode::IntegrationNotConfigured,
            "the application has no ticket integration",
        ));
    };
    let checks = match TrackerClient::new(
        state.egress.clone(),
        &i.base_url,
        i.ca_pem.as_deref(),
        CALL_TIMEOUT,
    ) {
        Ok(client) => {
            Tracker {
                cfg: &i,
                client: &client,
            }
            .checks()
            .await
        }
        Err(m) => vec![Check {
            name: "reachability",
            ok: false,
            detail: m,
        }],
    };
    let ok = checks.len() == 4 && checks.iter().all(|c| c.ok);
    let (st, t2, a) = (state.clone(), t.clone(), app.to_string());
    let preview = tokio::task::spawn_blocking(move || -> StoreResult<Option<Preview>> {
        let db = st.tenants.get_blocking(&t2)?;
        let run = {
            let c = db.lock();
            match store::latest_failed_run(&c, &a)? {
                Some(r) => crate::store::runs::run(&c, &r)?,
                None => None,
            }
        };
        let Some(run) = run else { return Ok(None) };
        let secrets = secrets_blocking(&st, &t2, &a)?;
        let c = db.lock();
        Ok(content_of(&st, &c, &run, &secrets)?.map(|x| Preview {
            title: x.title,
            body: x.body,
        }))
    })
    .await
    .map_err(ApiError::internal)??;
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "integration.test",
        Some(format!("application:{app}")),
    )
    .details(json!({
        "provider": i.provider.as_str(),
        "ok": ok,
        "checks": checks.iter().map(|c| json!({"name": c.name, "ok": c.ok})).collect::<Vec<_>>(),
    }));
    state
        .tenants
        .run(&t, move |c| store::append_audit(c, &ev))
        .await?;
    Ok(TestResult {
        ok,
        checks,
        preview,
    })
}

// ---------------------------------------------------------------- notifications

/// Notices for Owners of `caller`'s tenant: `integration_auth_failed` for every integration the
/// tracker last answered 401, `integration_token_expiring` for every token within
/// [`TOKEN_WARNING_DAYS`] days of (or past) its `token_expires_at`. Nothing for other roles.
pub async fn notices(state: &Arc<AppState>, caller: &Caller) -> Vec<Notification> {
    if caller.principal.role() != Role::Owner {
        return Vec::new();
    }
    let Some(t) = caller.principal.tenant().cloned() else {
        return Vec::new();
    };
    let rows = match state.tenants.run(&t, |c| store::integrations(c)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(tenant = %t, error = %e, "integration notices unavailable");
            return Vec::new();
        }
    };
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for r in rows {
        if let Some(at) = &r.auth_failed_at {
            out.push(Notification {
                kind: "integration_auth_failed",
                severity: "critical",
                message: format!(
                    "The {} integration of application {} was refused by the tracker (HTTP 401) at {at}; ticket delivery is stopped until a new token is saved.",
                    r.provider, r.application_id
                ),
                expires_at: None,
            });
        }
        if let Some(exp) = r
            .token_expires_at
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            let left = exp.with_timezone(&chrono::Utc) - now;
            if left.num_days() < TOKEN_WARNING_DAYS {
                out.push(Notification {
                    kind: "integration_token_expiring",
                    severity: "warning",
                    message: format!(
                        "The {} token of application {} expires on {} (in {} days); save a new token before then.",
                        r.provider,
                        r.application_id,
                        exp.to_rfc3339(),
                        left.num_days().max(0)
                    ),
                    expires_at: r.token_expires_at.clone(),
                });
            }
        }
    }
    out
}

/// The caller's notifications: the license warnings ([`super::license::notifications`]) and,
/// for Owners, the integration notices ([`notices`]).
pub async fn all_notifications(state: &Arc<AppState>, caller: &Caller) -> Vec<Notification> {
    let mut out = super::license::notifications(state, caller);
    out.extend(notices(state, caller).await);
    out
}

// ---------------------------------------------------------------- content

/// What a ticket says about a run.
#[derive(Debug, Clone)]
pub struct Content {
    /// Title.
    pub title: String,
    /// Body (plain text).
    pub body: String,
    /// Masked screenshot of the failing step (object id).
    pub screenshot_id: Option<String>,
    /// Failure signature (hex SHA-256 of flow, step index, error class).
    pub signature: String,
    /// Failing step index, if one failed.
    pub step_index: Option<i64>,
}

fn secrets_blocking(
    state: &AppState,
    t: &TenantId,
    app: &str,
) -> StoreResult<Vec<Zeroizing<String>>> {
    Ok(super::variables::secret_values(
        &super::variables::resolve_blocking(state, t, app)?,
    ))
}

/// An error message reduced to its class: first line, quoted text and numbers blanked,
/// whitespace collapsed, at most 120 characters.
pub fn error_class(error: &str) -> String {
    let first = error.lines().next().unwrap_or("");
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for ch in first.chars() {
        match quote {
            Some(q) if ch == q => {
                quote = None;
                out.push('…');
                out.push(ch);
            }
            Some(_) => {}
            None if matches!(ch, '"' | '\'' | '`') => {
                quote = Some(ch);
                out.push(ch);
            }
            None if ch.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            None => out.push(ch),
        }
    }
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(120).collect()
}

fn step_type(s: &Step) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_string))
        .unwrap_or_else(|| "step".into())
}

fn console_excerpt(v: &Value) -> Vec<String> {
    let line = |e: &Value| -> String {
        let s = match e {
            Value::String(s) => s.clone(),
            Value::Object(o) => {
                let text = ["text", "message", "msg"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_str))
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string());
                match o
                    .get("level")
                    .or_else(|| o.get("type"))
                    .and_then(Value::as_str)
                {
                    Some(l) => format!("[{l}] {text}"),
                    None => text,
                }
            }
            other => other.to_string(),
        };
        s.chars().take(300).collect()
    };
    let all: Vec<String> = match v {
        Value::Array(a) => a.iter().map(line).collect(),
        Value::Null => Vec::new(),
        other => vec![line(other)],
    };
    let skip = all.len().saturating_sub(CONSOLE_LINES);
    all.into_iter().skip(skip).collect()
}

/// A run's page on the dashboard.
pub fn run_link(state: &AppState, run: &str) -> String {
    match &state.settings.public_url {
        Some(u) => format!("{}/runs/{run}", u.trim_end_matches('/')),
        None => format!("/runs/{run} on the FlowGuard appliance (public_url is not configured)"),
    }
}

/// The ticket for `run` (blocking, on the tenant's connection): `None` when the pinned flow
/// version cannot be read. Every secret value in `secrets` is replaced by `[REDACTED]` in the
/// title and the body.
pub fn content_of(
    state: &AppState,
    c: &Conn,
    run: &RunRow,
    secrets: &[Zeroizing<String>],
) -> StoreResult<Option<Content>> {
    let Some(flow_name) = store::flow_name(c, &run.flow_id, run.flow_version)? else {
        return Ok(None);
    };
    let steps: Vec<Step> = crate::store::flows::version_steps(c, &run.flow_id, run.flow_version)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let results = crate::store::runs::steps(c, &run.id)?;
    let app_name = store::application_name(c, &run.application_id)?.unwrap_or_default();
    let reason_index = run
        .reason
        .as_deref()
        .and_then(|r| r.split_once(':'))
        .and_then(|(_, n)| n.parse::<i64>().ok());
    let failing: Option<&StepRow> = reason_index
        .and_then(|i| results.iter().find(|s| s.index == i))
        .or_else(|| results.iter().find(|s| s.status == "failed"));
    let idx = failing.map(|s| s.index).or(reason_index);
    let kind = idx
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| steps.get(i))
        .map(step_type);
    let error = failing
        .and_then(|s| s.error.clone())
        .or_else(|| failing.and_then(|s| s.reason.clone()))
        .or_else(|| {
            failing.and_then(|s| {
                s.rationale
                    .clone()
                    .map(|r| format!("checkpoint verdict fail: {r}"))
            })
        })
        .or_else(|| run.error.clone())
        .unwrap_or_else(|| run.reason.clone().unwrap_or_else(|| "failed".into()));
    let class = match failing {
        Some(s) if s.verdict.as_deref() == Some("fail") => "checkpoint verdict fail".to_string(),
        _ => error_class(&error),
    };
    let class = format!("{}: {class}", kind.as_deref().unwrap_or("run"));
    let step_label = match (idx, &kind) {
        (Some(i), Some(k)) => format!("step {} of {} ({k})", i + 1, steps.len()),
        (Some(i), None) => format!("step {}", i + 1),
        _ => "no single step".to_string(),
    };
    let title = format!("[FlowGuard] {flow_name}: {step_label} failed");
    let screenshot_id = match idx {
        Some(i) => crate::store::screenshots::screenshot_of(c, &run.id, i)?.map(|s| s.id),
        None => None,
    };
    let console = failing
        .and_then(|s| s.console.as_ref())
        .map(console_excerpt)
        .unwrap_or_default();
    let mut body = format!(
        "FlowGuard: flow \"{flow_name}\" of application \"{app_name}\" failed.\n\n\
         Run: {}\nFailing step: {step_label}\nError class: {class}\n\nError:\n{error}\n",
        run_link(state, &run.id)
    );
    if !console.is_empty() {
        body.push_str(&format!(
            "\nConsole (last {} lines):\n{}\n",
            console.len(),
            console.join("\n")
        ));
    }
    body.push_str(&format!(
        "\nScreenshot: {}\n\nRun {} · trigger {} · finished {}\n",
        if screenshot_id.is_some() {
            "the masked screenshot of the failing step is attached where the tracker supports attachments; otherwise see the run page"
        } else {
            "none recorded for the failing step"
        },
        run.id,
        run.trigger,
        run.finished_at.as_deref().unwrap_or("-")
    ));
    let scrub = |s: &str| super::variables::scrub(s, secrets);
    let signature = hex::encode(Sha256::digest(
        format!(
            "{}\u{0}{}\u{0}{class}",
            run.flow_id,
            idx.map_or("-".to_string(), |i| i.to_string())
        )
        .as_bytes(),
    ));
    Ok(Some(Content {
        title: scrub(&title),
        body: scrub(&body),
        screenshot_id,
        signature,
        step_index: idx,
    }))
}

// ---------------------------------------------------------------- filing

/// A run's ticket as `GET /api/v1/runs/{run}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TicketView {
    /// `pending|filed|failed`.
    pub status: String,
    /// `create`, `comment` (a repeat of an open ticket) or `recovery`.
    pub kind: String,
    /// Tracker key (`ED-24`, `#12`, `42`) once the ticket exists.
    pub key: Option<String>,
    /// Browser URL once the ticket exists.
    pub url: Option<String>,
    /// Why the last attempt failed (or a note such as a refused attachment).
    pub error: Option<String>,
    /// Calls made.
    pub attempts: i64,
}

/// The latest ticket delivery about `run` (on the tenant's connection).
pub fn ticket_of_run(c: &Conn, run: &str) -> StoreResult<Option<TicketView>> {
    let Some(o) = store::latest_for_run(c, run)? else {
        return Ok(None);
    };
    let t = store::ticket(c, &o.ticket_id)?;
    Ok(Some(TicketView {
        status: o.status,
        kind: o.kind,
        key: t.as_ref().and_then(|t| t.key.clone()),
        url: t.and_then(|t| t.url),
        error: o.error,
        attempts: o.attempts,
    }))
}

/// Whether a finished run is a *test* failure, the only kind filed automatically: `failed`
/// with reason `step_failed:N`, or `agent_reported_failure` with a step reported `failed` (how
/// the agent ends a run whose step failed). Every other reason — `agent_timeout`,
/// `checkpoint_error:N` (AI endpoint error), `checkpoint_not_evaluated:N`,
/// `missing_step_result:N`, an agent that gave up without a failed step (browser crash) — is an
/// infrastructure outcome.
pub fn is_test_failure(f: &store::Finished) -> bool {
    f.status == "failed"
        && match f.reason.as_deref() {
            Some(r) if r.starts_with("step_failed:") => true,
            Some("agent_reported_failure") => f.failed_step,
            _ => false,
        }
}

/// Queue the delivery for `content` on the tenant's connection: a comment on the open ticket
/// of its signature (when `comment` allows: `None` = always, `Some(now)` = if the last comment
/// is older than an hour; `false`-like rules skip it) or a new ticket.
fn enqueue_for(
    c: &mut Conn,
    run: &RunRow,
    content: Content,
    repeat_comment: Option<bool>,
    now: i64,
) -> StoreResult<Option<OutboxRow>> {
    let open = store::open_ticket(c, &run.application_id, &content.signature)?;
    let d = |kind, body| NewDelivery {
        id: new_object_id(),
        run_id: run.id.clone(),
        application_id: run.application_id.clone(),
        flow_id: run.flow_id.clone(),
        signature: content.signature.clone(),
        kind,
        title: content.title.clone(),
        body,
        screenshot_id: content.screenshot_id.clone(),
    };
    match open {
        Some(tk) => {
            let allowed = match repeat_comment {
                None => true,
                Some(false) => false,
                Some(true) => tk
                    .last_comment_at
                    .is_none_or(|at| now - at >= COMMENT_INTERVAL_SECS),
            };
            if !allowed {
                return Ok(None);
            }
            let body = format!("The same failure happened again.\n\n{}", content.body);
            Ok(Some(store::enqueue(
                c,
                &d("comment", body),
                &tk.id,
                now,
                None,
            )?))
        }
        None => {
            let tid = new_object_id();
            Ok(Some(store::enqueue(
                c,
                &d("create", content.body.clone()),
                &tid,
                now,
                None,
            )?))
        }
    }
}

/// `POST /api/v1/runs/{run}/ticket`: file (or, when a ticket with the same failure signature
/// is open, comment on) a ticket for a failed run. 404 unknown run; 409 `invalid_transition`
/// when the run is not `failed`; 409 `integration_not_configured`. A run that already has a
/// pending or filed delivery gets that one back.
pub async fn file_for_run(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    run: &str,
) -> ApiResult<TicketView> {
    let t = ctx.tenant.clone();
    let (st, t2, r) = (state.clone(), t.clone(), run.to_string());
    let view = tokio::task::spawn_blocking(move || -> ApiResult<TicketView> {
        let db = st.tenants.get_blocking(&t2)?;
        let row = {
            let c = db.lock();
            crate::store::runs::run(&c, &r)?
        }
        .ok_or_else(ApiError::not_found)?;
        if row.status != "failed" {
            return Err(ApiError::new(
                ErrorCode::InvalidTransition,
                format!(
                    "the run is {}; only a failed run can be ticketed",
                    row.status
                ),
            ));
        }
        let configured = {
            let c = db.lock();
            store::integration(&c, &row.application_id)?.is_some()
        };
        if !configured {
            return Err(ApiError::new(
                ErrorCode::IntegrationNotConfigured,
                "the application has no ticket integration",
            ));
        }
        let secrets = secrets_blocking(&st, &t2, &row.application_id)?;
        let mut c = db.lock();
        if let Some(v) = ticket_of_run(&c, &row.id)? {
            if v.status != "failed" {
                return Ok(v);
            }
        }
        let content = content_of(&st, &c, &row, &secrets)?
            .ok_or_else(|| ApiError::internal("the run's flow version is unreadable"))?;
        enqueue_for(&mut c, &row, content, None, unix_now())?;
        ticket_of_run(&c, &row.id)?.ok_or_else(|| ApiError::internal("ticket not queued"))
    })
    .await
    .map_err(ApiError::internal)??;
    kick(state, &t);
    Ok(view)
}

/// The automatic rule, after `run` finished (blocking; errors are logged, never raised: a
/// tracker problem must not fail a run's completion). See the module documentation.
pub fn on_run_finished_blocking(state: &Arc<AppState>, t: &TenantId, run: &RunRow) {
    match on_run_finished_inner(state, t, run) {
        Ok(true) => kick(state, t),
        Ok(false) => {}
        Err(e) => tracing::error!(tenant = %t, run = %run.id, error = %e, "ticket rule failed"),
    }
}

fn on_run_finished_inner(state: &AppState, t: &TenantId, run: &RunRow) -> StoreResult<bool> {
    let db = state.tenants.get_blocking(t)?;
    let row = {
        let c = db.lock();
        store::integration(&c, &run.application_id)?
    };
    let Some(row) = row else { return Ok(false) };
    let rules: Rules = serde_json::from_str(&row.rules).unwrap_or_default();
    let now = unix_now();
    if run.status == "passed" {
        let mut c = db.lock();
        let mut queued = false;
        for tk in store::open_tickets_of_flow(&c, &run.flow_id)? {
            if rules.comment_on_recovery && tk.application_id == run.application_id {
                let d = NewDelivery {
                    id: new_object_id(),
                    run_id: run.id.clone(),
                    application_id: run.application_id.clone(),
                    flow_id: run.flow_id.clone(),
                    signature: tk.signature.clone(),
                    kind: "recovery",
                    title: String::new(),
                    body: format!(
                        "Recovered: run {} of this flow passed ({}).",
                        run.id,
                        run_link(state, &run.id)
                    ),
                    screenshot_id: None,
                };
                store::enqueue(&mut c, &d, &tk.id, now, None)?;
                queued = true;
            } else {
                store::close_ticket(&c, &tk.id)?;
            }
        }
        return Ok(queued);
    }
    if !rules.file_on_failure {
        return Ok(false);
    }
    let recent = {
        let c = db.lock();
        store::recent_finished_runs(&c, &run.flow_id, 200)?
    };
    // This run is the newest finished one; it must itself be a test failure.
    if !recent.first().is_some_and(is_test_failure) {
        return Ok(false);
    }
    let mut streak = 0u32;
    for f in &recent {
        if f.status == "passed" {
            break;
        }
        if is_test_failure(f) {
            streak += 1;
        }
    }
    if streak < rules.after_consecutive_failures {
        return Ok(false);
    }
    let secrets = secrets_blocking(state, t, &run.application_id)?;
    let mut c = db.lock();
    let Some(content) = content_of(state, &c, run, &secrets)? else {
        return Ok(false);
    };
    Ok(enqueue_for(&mut c, run, content, Some(rules.comment_on_repeat), now)?.is_some())
}

// ---------------------------------------------------------------- delivery

/// Seconds before retry `attempt` (1-based) without `Retry-After`: 5 s doubling, ≤ 1 h.
pub fn backoff(attempt: i64) -> i64 {
    let exp = u32::try_from(attempt.clamp(1, 20) - 1).unwrap_or(0);
    (5i64 << exp).min(3600)
}

fn audit_of(kind: &'static str, row: &OutboxRow, details: Value) -> NewAuditEvent {
    NewAuditEvent::new(
        &super::job_actor("ticket-outbox"),
        kind,
        Some(format!("run:{}", row.run_id)),
    )
    .details(details)
}

/// Deliver one due outbox row of tenant `t` (blocking; the tracker call runs on `rt`). Returns
/// whether a call was made.
fn deliver_one_blocking(
    state: &AppState,
    rt: &tokio::runtime::Handle,
    t: &TenantId,
    id: &str,
) -> StoreResult<bool> {
    let db = state.tenants.get_blocking(t)?;
    let now = unix_now();
    let Some(row) = store::claim(&db.lock(), id, now, now + LEASE_SECS)? else {
        return Ok(false);
    };
    let record = |a: Attempt, ev: Option<NewAuditEvent>| -> StoreResult<()> {
        let mut c = db.lock();
        store::record_attempt(&mut c, &row, &a, ev.as_ref())
    };
    let loaded = load_blocking(state, t, &row.application_id)?;
    let Some((_, cfg)) = loaded else {
        let error = "the application's integration was removed".to_string();
        let ev = audit_of(
            "ticket.failed",
            &row,
            json!({"kind": row.kind, "error": error}),
        );
        record(Attempt::Failed { error }, Some(ev))?;
        return Ok(false);
    };
    let provider = cfg.provider.as_str();
    let ticket = store::ticket(&db.lock(), &row.ticket_id)?;
    let client = match TrackerClient::new(
        state.egress.clone(),
        &cfg.base_url,
        cfg.ca_pem.as_deref(),
        CALL_TIMEOUT,
    ) {
        Ok(c) => c,
        Err(error) => {
            let ev = audit_of(
                "ticket.failed",
                &row,
                json!({"provider": provider, "kind": row.kind, "error": error}),
            );
            record(Attempt::Failed { error }, Some(ev))?;
            return Ok(false);
        }
    };
    let tracker = Tracker {
        cfg: &cfg,
        client: &client,
    };
    let result: Result<Option<Created>, Failure> = if row.kind == "create" {
        let png = match (&row.screenshot_id, cfg.provider) {
            (_, config::Provider::Github) | (None, _) => None,
            (Some(obj), _) => match super::screenshots::decrypt_blocking(state, t, obj) {
                Ok(p) => p.map(|p| p.to_vec()),
                Err(e) => {
                    tracing::warn!(tenant = %t, error = %e, "screenshot for the ticket unreadable");
                    None
                }
            },
        };
        let name = format!("flowguard-run-{}.png", row.run_id);
        rt.block_on(tracker.create(
            &row.title,
            &row.body,
            png.as_deref().map(|p| (name.as_str(), p)),
        ))
        .map(Some)
    } else {
        let Some((rid, key)) = ticket
            .as_ref()
            .and_then(|tk| Some((tk.remote_id.clone()?, tk.key.clone()?)))
        else {
            // The ticket's creation is still pending: wait for it (no attempt counted); a
            // creation that failed leaves nothing to comment on.
            let create_failed =
                store::create_status(&db.lock(), &row.ticket_id)?.as_deref() != Some("pending");
            if create_failed {
                let error = "the ticket this comment belongs to was never filed".to_string();
                let ev = audit_of(
                    "ticket.failed",
                    &row,
                    json!({"provider": provider, "kind": row.kind, "error": error}),
                );
                record(Attempt::Failed { error }, Some(ev))?;
            } else {
                store::defer(&db.lock(), &row.id, now + 10)?;
            }
            return Ok(false);
        };
        rt.block_on(tracker.comment(&rid, &key, &row.body))
            .map(|()| None)
    };
    let attempts = row.attempts + 1;
    match result {
        Ok(created) => {
            store::set_auth_failed(&db.lock(), &row.application_id, false)?;
            let (key, url) = match (&created, &ticket) {
                (Some(c), _) => (Some(c.key.clone()), Some(c.url.clone())),
                (None, Some(tk)) => (tk.key.clone(), tk.url.clone()),
                (None, None) => (None, None),
            };
            let action = if row.kind == "create" {
                "ticket.filed"
            } else {
                "ticket.commented"
            };
            let note = created.as_ref().and_then(|c| c.note.clone());
            let ev = audit_of(
                action,
                &row,
                json!({"provider": provider, "kind": row.kind, "key": key, "url": url, "attempts": attempts, "note": note}),
            );
            record(
                Attempt::Filed {
                    created: created.map(|c| (c.remote_id, c.key, c.url)),
                    note,
                },
                Some(ev),
            )?;
        }
        Err(Failure::Auth(error)) => {
            store::set_auth_failed(&db.lock(), &row.application_id, true)?;
            tracing::warn!(tenant = %t, application = %row.application_id, provider, "tracker refused the token (401); deliveries stop");
            let ev = audit_of(
                "ticket.failed",
                &row,
                json!({"provider": provider, "kind": row.kind, "error": error, "attempts": attempts}),
            );
            record(Attempt::Failed { error }, Some(ev))?;
        }
        Err(Failure::Retry(m, retry_after)) if attempts < MAX_ATTEMPTS => {
            let wait = retry_after
                .map(|s| i64::try_from(s).unwrap_or(3600).clamp(1, 3600))
                .unwrap_or_else(|| backoff(attempts));
            tracing::info!(tenant = %t, delivery = %row.id, attempts, wait, "tracker call failed; retrying");
            record(
                Attempt::Retry {
                    error: m,
                    at: unix_now() + wait,
                },
                None,
            )?;
        }
        Err(f) => {
            let error = if matches!(f, Failure::Retry(..)) {
                format!("{} (gave up after {attempts} attempts)", f.reason())
            } else {
                f.reason().to_string()
            };
            let ev = audit_of(
                "ticket.failed",
                &row,
                json!({"provider": provider, "kind": row.kind, "error": error, "attempts": attempts}),
            );
            record(Attempt::Failed { error }, Some(ev))?;
        }
    }
    Ok(true)
}

/// Deliver every due outbox row of `t` (blocking, on a runtime thread). Returns calls made.
pub fn deliver_tenant_blocking(
    state: &AppState,
    rt: &tokio::runtime::Handle,
    t: &TenantId,
) -> usize {
    let mut n = 0;
    for _ in 0..10 {
        let ids = match state
            .tenants
            .get_blocking(t)
            .and_then(|db| store::due(&db.lock(), unix_now(), 20))
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(tenant = %t, error = %e, "ticket outbox unreadable");
                return n;
            }
        };
        if ids.is_empty() {
            break;
        }
        let mut progressed = false;
        for id in ids {
            match deliver_one_blocking(state, rt, t, &id) {
                Ok(true) => {
                    n += 1;
                    progressed = true;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(tenant = %t, delivery = %id, error = %e, "ticket delivery failed")
                }
            }
        }
        if !progressed {
            break;
        }
    }
    n
}

/// Which tenants have ticket deliveries waiting, and when the earliest is due (unix seconds),
/// so the `ticket-outbox` job visits only those instead of opening every tenant store every
/// 20 s. Filled by a full pass over every tenant store (the job's first run after the start,
/// then at most every [`FULL_PASS_SECS`] as a safety net) and kept current by every enqueue
/// ([`kick`]) and every delivery attempt (which reads the store's next due time back).
#[derive(Debug, Default)]
pub struct DueHints {
    inner: parking_lot::Mutex<DueInner>,
}

#[derive(Debug, Default)]
struct DueInner {
    /// When the last full pass over every tenant store ran.
    full_pass_at: Option<std::time::Instant>,
    /// Tenant → earliest due time of its outbox (absent: nothing waiting).
    next: std::collections::HashMap<TenantId, i64>,
}

/// How often the `ticket-outbox` job still looks into every tenant store (seconds), in case a
/// delivery was queued by something that did not go through [`kick`].
pub const FULL_PASS_SECS: u64 = 600;

impl DueHints {
    /// Record `t`'s next due time as read from its store (`None`: its outbox holds nothing due
    /// ever again).
    pub fn set(&self, t: &TenantId, next: Option<i64>) {
        let mut g = self.inner.lock();
        match next {
            Some(at) => {
                g.next.insert(t.clone(), at);
            }
            None => {
                g.next.remove(t);
            }
        }
    }

    /// Note that `t` has a delivery due now (an enqueue).
    pub fn due_now(&self, t: &TenantId) {
        let now = unix_now();
        let mut g = self.inner.lock();
        let at = g.next.entry(t.clone()).or_insert(now);
        *at = (*at).min(now);
    }

    /// The tenants to visit: `None` when a full pass is due (then [`DueHints::full_pass_done`]
    /// is to be called), else those whose earliest delivery is due by `now`.
    fn plan(&self, now: i64) -> Option<Vec<TenantId>> {
        let g = self.inner.lock();
        match g.full_pass_at {
            Some(at) if at.elapsed() < Duration::from_secs(FULL_PASS_SECS) => Some(
                g.next
                    .iter()
                    .filter(|(_, &at)| at <= now)
                    .map(|(t, _)| t.clone())
                    .collect(),
            ),
            _ => None,
        }
    }

    fn full_pass_done(&self) {
        self.inner.lock().full_pass_at = Some(std::time::Instant::now());
    }
}

/// Deliver `t`'s due tickets in the background now, and again when the next retry is due
/// (within two minutes; later ones are left to the `ticket-outbox` job).
pub fn kick(state: &Arc<AppState>, t: &TenantId) {
    state.ticket_due.due_now(t);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (st, t) = (state.clone(), t.clone());
    rt.spawn(async move {
        loop {
            let (st2, t2) = (st.clone(), t.clone());
            let next = tokio::task::spawn_blocking(move || {
                let rt = tokio::runtime::Handle::current();
                deliver_tenant_blocking(&st2, &rt, &t2);
                let next = st2
                    .tenants
                    .get_blocking(&t2)
                    .and_then(|db| store::next_due(&db.lock()));
                if let Ok(n) = &next {
                    st2.ticket_due.set(&t2, *n);
                }
                next
            })
            .await;
            let Ok(Ok(Some(at))) = next else { break };
            let wait = at - unix_now();
            if wait > 120 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(u64::try_from(wait.max(1)).unwrap_or(1))).await;
        }
    });
}

/// The `ticket-outbox` job (blocking): deliver what is due in every tenant. Only the tenants
/// [`DueHints`] names are visited, except on the first run and every [`FULL_PASS_SECS`], when
/// every tenant store is looked into (and the hints rebuilt from what the stores say).
pub fn deliver_job_blocking(state: &AppState) -> usize {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::error!(
            job = "ticket-outbox",
            "no async runtime: nothing was delivered"
        );
        return 0;
    };
    let now = unix_now();
    let visit = match state.ticket_due.plan(now) {
        Some(due) => due,
        None => {
            let tenants = {
                let c = state.catalog.db().lock();
                crate::store::catalog::list_tenants(&c).unwrap_or_default()
            };
            let mut due = Vec::new();
            for tr in tenants {
                match state
                    .tenants
                    .for_pass(&tr.id, |db| store::next_due(&db.lock()))
                {
                    Ok(next) => {
                        state.ticket_due.set(&tr.id, next);
                        if next.is_some_and(|at| at <= now) {
                            due.push(tr.id);
                        }
                    }
                    // Unreadable now (refused, being restored): look again at the next pass.
                    Err(e) => {
                        tracing::debug!(tenant = %tr.id, error = %e, "ticket outbox not read")
                    }
                }
            }
            state.ticket_due.full_pass_done();
            due
        }
    };
    let mut n = 0;
    for t in visit {
        n += deliver_tenant_blocking(state, &rt, &t);
        match state.tenants.for_pass(&t, |db| store::next_due(&db.lock())) {
            Ok(next) => state.ticket_due.set(&t, next),
            Err(e) => tracing::error!(tenant = %t, error = %e, "ticket outbox unreadable"),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_ignore_numbers_and_quoted_values() {
        assert_eq!(
            error_class("Timeout 30000ms waiting for selector \"#submit-42\"\nstack…"),
            "Timeout #ms waiting for selector \"…\""
        );
        assert_eq!(
            error_class("element 'a' not found after 3 tries"),
            error_class("element 'b' not found after 5 tries")
        );
    }

    #[test]
    fn due_hints_ask_for_a_full_pass_first_then_name_only_due_tenants() {
        let h = DueHints::default();
        let (a, b, c) = (
            TenantId::parse("weu-aaaaaa").unwrap(),
            TenantId::parse("weu-bbbbbb").unwrap(),
            TenantId::parse("weu-cccccc").unwrap(),
        );
        let now = unix_now();
        h.set(&a, Some(now - 1));
        assert_eq!(h.plan(now), None, "the first run looks into every store");
        h.full_pass_done();
        h.set(&b, Some(now + 100));
        h.due_now(&c);
        let mut due = h.plan(now).unwrap();
        due.sort();
        assert_eq!(due, vec![a.clone(), c.clone()]);
        // An enqueue never moves a due time later; a delivery that empties the outbox drops it.
        h.set(&b, Some(now + 100));
        h.due_now(&b);
        h.set(&a, None);
        let mut due = h.plan(now).unwrap();
        due.sort();
        assert_eq!(due, vec![b, c]);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), 5);
        assert_eq!(backoff(2), 10);
        assert_eq!(backoff(4), 40);
        assert_eq!(backoff(15), 3600);
    }

    #[test]
    fn console_keeps_the_last_lines() {
        let v = Value::Array(
            (0..30)
                .map(|i| json!({"level": "error", "text": format!("l{i}")}))
                .collect(),
        );
        let ex = console_excerpt(&v);
        assert_eq!(ex.len(), CONSOLE_LINES);
        assert_eq!(ex.last().unwrap(), "[error] l29");
    }
}
