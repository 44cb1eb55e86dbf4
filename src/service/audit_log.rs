//! Reading the tenant audit trail (Owner): filters `from`, `to` (RFC 3339, normalised to UTC),
//! `action`, `actor`, and a descending `seq` cursor.

use std::sync::Arc;

use super::{AppState, TenantCtx};
use crate::audit::AuditRecord;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::audit;
pub use crate::store::audit::AuditQuery;

/// Default and maximum page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
/// Maximum page size.
pub const MAX_LIMIT: u32 = 1000;

/// Parse an RFC 3339 timestamp (any offset) into the stored UTC form.
pub fn parse_ts(field: &str, v: &str) -> ApiResult<String> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidTimestamp,
                format!("{field} must be an RFC 3339 timestamp"),
            )
            .field(field)
        })
}

/// One page, newest first, plus the cursor for the next page.
pub async fn list(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    mut q: AuditQuery,
) -> ApiResult<(Vec<AuditRecord>, Option<String>)> {
    let t = ctx.tenant.clone();
    if let (Some(f), Some(to)) = (&q.from, &q.to) {
        if f > to {
            return Err(
                ApiError::new(ErrorCode::InvalidRange, "from must not be after to").field("from"),
            );
        }
    }
    q.limit = q.limit.clamp(1, MAX_LIMIT);
    let limit = q.limit as usize;
    let rows = state.tenants.run(&t, move |c| audit::list(c, &q)).await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok((rows, next))
}

/// One page of the catalog audit trail (PlatformAdmin), newest first.
pub async fn list_catalog(
    state: &Arc<AppState>,
    mut q: AuditQuery,
) -> ApiResult<(Vec<AuditRecord>, Option<String>)> {
    if let (Some(f), Some(to)) = (&q.from, &q.to) {
        if f > to {
            return Err(
                ApiError::new(ErrorCode::InvalidRange, "from must not be after to").field("from"),
            );
        }
    }
    q.limit = q.limit.clamp(1, MAX_LIMIT);
    let limit = q.limit as usize;
    let rows = state.catalog.run(move |c| audit::list(c, &q)).await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok((rows, next))
}
