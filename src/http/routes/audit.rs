//! `GET /api/v1/audit` (Owner): filters `from`, `to`, `action`, `actor`; cursor paging with
//! `cursor` (opaque; pass back `next_cursor`) and `limit` (1–1000, default 100).

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::AuditRecord;
use crate::error::ApiError;
use crate::http::extract::{perm, Guarded};
use crate::service::audit_log::{self as svc, parse_ts, DEFAULT_LIMIT};
use crate::service::AppState;
use crate::store::audit::AuditQuery;

/// Query parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Inclusive lower bound, RFC 3339.
    pub from: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    pub to: Option<String>,
    /// Exact action, e.g. `member.role_change`.
    pub action: Option<String>,
    /// Actor email.
    pub actor: Option<String>,
    /// Cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (1–1000).
    pub limit: Option<u32>,
}

/// A page of audit rows, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Rows.
    pub items: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Read the tenant audit trail.
#[utoipa::path(tag = "audit", params(AuditParams), responses((status = 200, body = AuditPage), (status = 400, body = crate::error::Problem)), security(("session" = [])))]
#[get("/audit")]
pub async fn list(
    state: web::Data<AppState>,
    g: Guarded<perm::AuditRead, web::Query<AuditParams>>,
) -> Result<HttpResponse, ApiError> {
    let q = g.inner.into_inner();
    let before_seq = match &q.cursor {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "cursor is not valid").field("cursor")
        })?),
    };
    let query = AuditQuery {
        from: q.from.as_deref().map(|v| parse_ts("from", v)).transpose()?,
        to: q.to.as_deref().map(|v| parse_ts("to", v)).transpose()?,
        action: q.action,
        actor: q.actor,
        before_seq,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let (items, next_cursor) = svc::list(&state.into_inner(), &g.principal, query).await?;
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}
