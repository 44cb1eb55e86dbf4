//! SCIM 2.0 User provisioning use cases (RFC 7644 §3): list/search with filters and paging, read,
//! create, replace (PUT), modify (PATCH), delete — with `meta.version` ETags, `If-Match`
//! preconditions, audit rows naming the SCIM token as actor, and session revocation.
//!
//! Rules (README "SCIM 2.0 provisioning"):
//! - SCIM sees every member of the token's tenant; new users get role Viewer, source `scim`,
//!   no password (they sign in through the directory).
//! - Only `active: true` lets a user log in: `active` false or unassigned, or DELETE, ends every
//!   session of the user in the same transaction.
//! - The last active Owner can be neither deactivated nor deleted (409).
//! - A request that changes nothing writes nothing (no version bump, no audit row).
//! - Audit actions: `user.created`, `user.updated`, `user.deactivated`, `user.reactivated`,
//!   `user.deleted`; details name the changed attributes, never their values.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{AppState, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::domain::scim::filter::{compile_str, matches, Compiled};
use crate::domain::scim::patch;
use crate::domain::scim::resource::{self, Attrs, MetaInfo, Selected};
use crate::domain::scim::{ScimError, ENTERPRISE_USER};
use crate::domain::{new_object_id, now_rfc3339, Role, TenantId};
use crate::store::scim::{self as store, ScimUserRow};
use crate::store::{Conflict, StoreError};

/// Largest page; also `ServiceProviderConfig.filter.maxResults`. A request without `count`
/// gets this many.
pub const MAX_RESULTS: usize = 1000;

/// Attributes held in their own columns rather than in `scim_attrs`.
const COLUMN_ATTRS: [&str; 4] = ["userName", "displayName", "active", "externalId"];

/// A `GET /Users` or `POST /.search` query after parsing.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Filter text (RFC 7644 §3.4.2.2), if any.
    pub filter: Option<String>,
    /// 1-based start index as sent (values below 1 mean 1, RFC 7644 §3.4.2.4).
    pub start_index: Option<i64>,
    /// Page size as sent (negative means 0; absent means [`MAX_RESULTS`]).
    pub count: Option<i64>,
    /// `attributes`.
    pub attributes: Vec<Selected>,
    /// `excludedAttributes`.
    pub excluded: Vec<Selected>,
}

/// One page of a ListResponse.
#[derive(Debug)]
pub struct Page {
    /// Every match, regardless of paging.
    pub total_results: usize,
    /// The 1-based index of the first returned resource.
    pub start_index: usize,
    /// The resources on this page.
    pub resources: Vec<Map<String, Value>>,
}

/// A rendered resource and its version (for the `ETag` header).
#[derive(Debug)]
pub struct Rendered {
    /// The resource.
    pub doc: Map<String, Value>,
    /// Version counter.
    pub version: i64,
}

/// `If-Match` as sent (RFC 9110 §13.1.1).
#[derive(Debug, Clone)]
pub enum IfMatch {
    /// `*`: any current version.
    Any,
    /// Entity tags; compared on their opaque part (weak and strong alike, as RFC 7644 §3.14's
    /// weak `W/"…"` versions require).
    Tags(Vec<String>),
}

impl IfMatch {
    /// Parse a header value; `None` for an empty one.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        if raw == "*" {
            return Some(IfMatch::Any);
        }
        Some(IfMatch::Tags(
            raw.split(',')
                .map(|t| {
                    let t = t.trim();
                    t.strip_prefix("W/").unwrap_or(t).to_string()
                })
                .filter(|t| !t.is_empty())
                .collect(),
        ))
    }

    /// Whether the current `version` satisfies this precondition.
    pub fn allows(&self, version: i64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Tags(tags) => {
                let want = format!("\"{version}\"");
                tags.contains(&want)
            }
        }
    }
}

/// The license's active-user limit for the tenant (None = unlimited).
async fn max_users(state: &Arc<AppState>, t: &TenantId) -> Result<Option<u32>, ScimError> {
    super::license::tenant_entitlements(state, t)
        .await
        .map(|e| e.max_users)
        .map_err(|e| {
            tracing::error!(
                code = e.code.as_str(),
                "SCIM: cannot read the tenant's entitlements"
            );
            ScimError::internal()
        })
}

/// Store failures as SCIM errors.
pub fn store_error(e: StoreError) -> ScimError {
    match e {
        StoreError::Busy => ScimError {
            retry_after: Some(2),
            ..ScimError::new(503, "server busy; retry later")
        },
        StoreError::NotFound => ScimError::not_found("no such user"),
        StoreError::Conflict(Conflict::LastOwner) => ScimError::new(
            409,
            "the last active Owner of the tenant cannot be deactivated or deleted",
        ),
        StoreError::Conflict(Conflict::Version) => ScimError::precondition_failed(),
        StoreError::Conflict(Conflict::UserLimit) => ScimError::new(
            403,
            "plan_limit: the license's active-user limit is reached",
        ),
        StoreError::Conflict(_) => ScimError::uniqueness("`userName` is already taken"),
        other => {
            tracing::error!(error = %other, "SCIM store error");
            ScimError::internal()
        }
    }
}

fn to_attrs(row: &ScimUserRow) -> Result<Attrs, ScimError> {
    let mut a: Attrs = serde_json::from_str(&row.attrs_json).map_err(|e| {
        tracing::error!(error = %e, user = %row.id, "stored SCIM attributes unreadable");
        ScimError::internal()
    })?;
    a.insert("userName".into(), Value::String(row.user_name.clone()));
    if let Some(d) = &row.display_name {
        a.insert("displayName".into(), Value::String(d.clone()));
    }
    if !row.active_unset {
        a.insert("active".into(), Value::Bool(row.active));
    }
    if let Some(x) = &row.external_id {
        a.insert("externalId".into(), Value::String(x.clone()));
    }
    Ok(a)
}

/// Fill the SCIM columns of `row` from `attrs`.
fn apply_attrs(row: &mut ScimUserRow, attrs: &Attrs) -> Result<(), ScimError> {
    let mut rest = attrs.clone();
    for k in COLUMN_ATTRS {
        rest.remove(k);
    }
    row.user_name = attrs
        .get("userName")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_string())
        .ok_or_else(|| ScimError::invalid_value("`userName` is required"))?;
    row.display_name = attrs
        .get("displayName")
        .and_then(Value::as_str)
        .map(str::to_string);
    match attrs.get("active").and_then(Value::as_bool) {
        Some(b) => {
            row.active = b;
            row.active_unset = false;
        }
        None => {
            row.active = false;
            row.active_unset = true;
        }
    }
    row.external_id = attrs
        .get("externalId")
        .and_then(Value::as_str)
        .map(str::to_string);
    row.attrs_json = Value::Object(rest).to_string();
    Ok(())
}

fn meta_of(row: &ScimUserRow) -> MetaInfo {
    MetaInfo {
        id: row.id.clone(),
        created: row.created_at.clone(),
        last_modified: row.updated_at.clone(),
        version: row.version,
    }
}

fn render_row(row: &ScimUserRow, base: &str) -> Result<Map<String, Value>, ScimError> {
    Ok(resource::render(&to_attrs(row)?, &meta_of(row), base))
}

/// `GET /Users`, `POST /Users/.search`, `POST /.search`: filter (400 `invalidFilter` for
/// anything unsupported, before any data is read), then page. `totalResults` counts every match.
pub async fn list(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    q: Query,
    base: &str,
) -> Result<Page, ScimError> {
    let t = ctx.tenant.clone();
    let compiled: Option<Compiled> = match q.filter.as_deref().map(str::trim) {
        Some(f) if !f.is_empty() => Some(compile_str(f)?),
        Some(_) => return Err(ScimError::invalid_filter("the filter is empty")),
        None => None,
    };
    let rows = state
        .tenants
        .run(&t, |c| store::list_users(c))
        .await
        .map_err(store_error)?;
    let mut matched = Vec::new();
    for row in &rows {
        let doc = render_row(row, base)?;
        if compiled.as_ref().is_none_or(|f| matches(f, &doc)) {
            matched.push(doc);
        }
    }
    let start = q.start_index.unwrap_or(1).max(1);
    let count = match q.count {
        None => MAX_RESULTS,
        Some(c) => usize::try_from(c.max(0))
            .unwrap_or(MAX_RESULTS)
            .min(MAX_RESULTS),
    };
    let total = matched.len();
    let skip = usize::try_from(start - 1).unwrap_or(usize::MAX);
    let resources = matched
        .into_iter()
        .skip(skip)
        .take(count)
        .map(|d| resource::project(d, &q.attributes, &q.excluded))
        .collect();
    Ok(Page {
        total_results: total,
        start_index: usize::try_from(start).unwrap_or(usize::MAX),
        resources,
    })
}

async fn load(state: &Arc<AppState>, t: &TenantId, id: &str) -> Result<ScimUserRow, ScimError> {
    let id = id.to_string();
    state
        .tenants
        .run(t, move |c| store::user(c, &id))
        .await
        .map_err(store_error)?
        .ok_or_else(|| ScimError::not_found("no such user"))
}

/// `GET /Users/{id}`.
pub async fn get(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    base: &str,
) -> Result<Rendered, ScimError> {
    let t = ctx.tenant.clone();
    let row = load(state, &t, id).await?;
    Ok(Rendered {
        doc: render_row(&row, base)?,
        version: row.version,
    })
}

/// `POST /Users`: 201 with the resource; a taken `userName` (compared without regard to case) is
/// 409 `uniqueness`. Role Viewer, source `scim`, `active` true unless the body says otherwise.
pub async fn create(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    body: &Value,
    base: &str,
) -> Result<Rendered, ScimError> {
    let t = ctx.tenant.clone();
    let mut attrs = resource::from_body(body)?;
    attrs.entry("active").or_insert(Value::Bool(true));
    let now = now_rfc3339();
    let mut row = ScimUserRow {
        id: new_object_id(),
        user_name: String::new(),
        display_name: None,
        active: true,
        active_unset: false,
        external_id: None,
        attrs_json: "{}".into(),
        version: 1,
        role: Role::Viewer.as_str().into(),
        source: "scim".into(),
        created_at: now.clone(),
        updated_at: now,
    };
    apply_attrs(&mut row, &attrs)?;
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "user.created",
        Some(format!("member:{}", row.user_name)),
    )
    .details(serde_json::json!({
        "member_id": row.id, "role": row.role, "source": "scim", "active": row.active,
        "attributes": attr_names(&attrs),
    }));
    let r2 = row.clone();
    let max = max_users(state, &t).await?;
    state
        .tenants
        .run(&t, move |c| store::insert_user(c, &r2, max, &ev))
        .await
        .map_err(store_error)?;
    Ok(Rendered {
        doc: render_row(&row, base)?,
        version: row.version,
    })
}

/// Names of the attributes present (extension attributes URN-qualified).
fn attr_names(a: &Attrs) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        if k == ENTERPRISE_USER {
            if let Some(o) = v.as_object() {
                out.extend(o.keys().map(|s| format!("{ENTERPRISE_USER}:{s}")));
            }
        } else {
            out.push(k.clone());
        }
    }
    out
}

/// Names of the attributes whose value differs between `old` and `new`.
fn changed_names(old: &Attrs, new: &Attrs) -> Vec<String> {
    let ext = |a: &Attrs| {
        a.get(ENTERPRISE_USER)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut keys: Vec<&String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| *k != ENTERPRISE_USER)
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if old.get(k) != new.get(k) {
            out.push(k.clone());
        }
    }
    let (eo, en) = (ext(old), ext(new));
    let mut ek: Vec<&String> = eo.keys().chain(en.keys()).collect();
    ek.sort();
    ek.dedup();
    for k in ek {
        if eo.get(k) != en.get(k) {
            out.push(format!("{ENTERPRISE_USER}:{k}"));
        }
    }
    out
}

/// Write `new` over `row` (the read-modify-write of PUT and PATCH). Nothing changed → nothing
/// written. `If-Match` must name the current version (412 otherwise), checked again inside the
/// write transaction.
#[allow(clippy::too_many_arguments)]
async fn write(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    t: &TenantId,
    row: ScimUserRow,
    new: Attrs,
    if_match: Option<&IfMatch>,
    base: &str,
) -> Result<Rendered, ScimError> {
    if if_match.is_some_and(|m| !m.allows(row.version)) {
        return Err(ScimError::precondition_failed());
    }
    let old = to_attrs(&row)?;
    let changed = changed_names(&old, &new);
    if changed.is_empty() {
        return Ok(Rendered {
            doc: render_row(&row, base)?,
            version: row.version,
        });
    }
    let mut next = row.clone();
    apply_attrs(&mut next, &new)?;
    next.version = row.version + 1;
    next.updated_at = now_rfc3339();
    let was_active = row.active && !row.active_unset;
    let now_active = next.active && !next.active_unset;
    let actor = ctx.actor();
    let target = Some(format!("member:{}", next.user_name));
    let mut events = Vec::new();
    let others: Vec<&String> = changed.iter().filter(|c| *c != "active").collect();
    if !others.is_empty() {
        events.push(
            NewAuditEvent::new(&actor, "user.updated", target.clone()).details(
                serde_json::json!({"member_id": next.id, "changed": others, "version": next.version}),
            ),
        );
    }
    if was_active && !now_active {
        events.push(
            NewAuditEvent::new(&actor, "user.deactivated", target.clone()).details(
                serde_json::json!({"member_id": next.id, "sessions_ended": true, "active": if next.active_unset { Value::Null } else { Value::Bool(false) }}),
            ),
        );
    } else if !was_active && now_active {
        events.push(
            NewAuditEvent::new(&actor, "user.reactivated", target.clone())
                .details(serde_json::json!({"member_id": next.id})),
        );
    } else if changed.iter().any(|c| c == "active") {
        // false ⇄ unassigned: still not allowed to log in, but a change all the same.
        events.push(
            NewAuditEvent::new(&actor, "user.updated", target.clone()).details(
                serde_json::json!({"member_id": next.id, "changed": ["active"], "version": next.version}),
            ),
        );
    }
    let end_sessions = !now_active;
    let max = max_users(state, t).await?;
    let n2 = next.clone();
    let expected = row.version;
    state
        .tenants
        .run(t, move |c| {
            store::update_user(c, &n2, expected, end_sessions, max, &events)
        })
        .await
        .map_err(store_error)?;
    Ok(Rendered {
        doc: render_row(&next, base)?,
        version: next.version,
    })
}

/// `PUT /Users/{id}` (RFC 7644 §3.5.1): the body replaces every writable attribute; attributes
/// left out are cleared — except `active`, which keeps its value when omitted (an omitted
/// `active` must never re-enable a deactivated user).
#[allow(clippy::too_many_arguments)]
pub async fn replace(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    body: &Value,
    if_match: Option<&IfMatch>,
    base: &str,
) -> Result<Rendered, ScimError> {
    let t = ctx.tenant.clone();
    let given = resource::from_body(body)?;
    let mut attempt = 0;
    loop {
        let row = load(state, &t, id).await?;
        let mut new = given.clone();
        if !new.contains_key("active") && !row.active_unset {
            new.insert("active".into(), Value::Bool(row.active));
        }
        match write(state, ctx, &t, row, new, if_match, base).await {
            Err(e) if raced(&e, if_match, &mut attempt) => continue,
            other => return other,
        }
    }
}

/// Without `If-Match`, a write that lost a race with another writer is retried (a few times).
fn raced(e: &ScimError, if_match: Option<&IfMatch>, attempt: &mut u32) -> bool {
    *attempt += 1;
    if_match.is_none() && e.status == 412 && *attempt < 3
}

/// `PATCH /Users/{id}` (RFC 7644 §3.5.2): all operations or none; 200 with the resource.
#[allow(clippy::too_many_arguments)]
pub async fn modify(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    body: &Value,
    if_match: Option<&IfMatch>,
    base: &str,
) -> Result<Rendered, ScimError> {
    let t = ctx.tenant.clone();
    let ops = patch::parse(body)?;
    let mut attempt = 0;
    loop {
        let row = load(state, &t, id).await?;
        if if_match.is_some_and(|m| !m.allows(row.version)) {
            return Err(ScimError::precondition_failed());
        }
        let new = patch::apply(&to_attrs(&row)?, &ops)?;
        match write(state, ctx, &t, row, new, if_match, base).await {
            Err(e) if raced(&e, if_match, &mut attempt) => continue,
            other => return other,
        }
    }
}

/// `DELETE /Users/{id}` (RFC 7644 §3.6): the user and their sessions are gone; later reads 404.
pub async fn delete(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    id: &str,
    if_match: Option<&IfMatch>,
) -> Result<(), ScimError> {
    let t = ctx.tenant.clone();
    let row = load(state, &t, id).await?;
    if if_match.is_some_and(|m| !m.allows(row.version)) {
        return Err(ScimError::precondition_failed());
    }
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "user.deleted",
        Some(format!("member:{}", row.user_name)),
    )
    .details(serde_json::json!({"member_id": row.id, "role": row.role, "sessions_ended": true}));
    let (uid, v) = (row.id.clone(), row.version);
    state
        .tenants
        .run(&t, move |c| store::delete_user(c, &uid, v, &ev))
        .await
        .map_err(store_error)
}
