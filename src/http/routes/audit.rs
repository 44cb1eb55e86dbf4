//! `GET /api/v1/audit` (Owner): filters `from`, `to`, `action`, `actor`; cursor paging with
//! `cursor` (opaque; pass back `next_cursor`) and `limit` (1–1000, default 100).

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::export::{Format, Profile};
use crate::audit::AuditRecord;
use crate::error::{ApiError, ErrorCode};
use crate::http::extract::{perm, Guarded, Require};
use crate::service::audit_export::{self as exp, Chain, ExportRequest, VerifyReport};
use crate::service::audit_log::{self as svc, parse_ts, AuditQuery, DEFAULT_LIMIT};
use crate::service::AppState;

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
#[utoipa::path(tag = "audit", params(AuditParams), responses((status = 200, body = AuditPage), (status = 400, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/audit")]
pub async fn list(
    state: web::Data<AppState>,
    g: Guarded<perm::AuditRead, web::Query<AuditParams>>,
) -> Result<HttpResponse, ApiError> {
    let q = g.inner.into_inner();
    let before_seq = match &q.cursor {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::new(ErrorCode::InvalidCursor, "cursor is not valid").field("cursor")
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
    let (items, next_cursor) = svc::list(&state.into_inner(), &g.ctx, query).await?;
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}

/// Query of the export routes.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Inclusive lower bound, RFC 3339 (any offset; normalised to UTC).
    pub from: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    pub to: Option<String>,
    /// `csv` or `ndjson`.
    pub format: String,
    /// CSV only: `spreadsheet` (default; formula-looking cells prefixed with `'`) or `machine`
    /// (raw values).
    pub profile: Option<String>,
}

fn export_request(q: ExportParams) -> Result<ExportRequest, ApiError> {
    let format = match q.format.as_str() {
        "csv" => Format::Csv,
        "ndjson" => Format::Ndjson,
        _ => {
            return Err(
                ApiError::new(ErrorCode::InvalidFormat, "format must be csv or ndjson")
                    .field("format"),
            )
        }
    };
    let profile = match (format, q.profile.as_deref()) {
        (Format::Ndjson, None) => Profile::None,
        (Format::Ndjson, Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidProfile,
                "profile applies to format=csv only (NDJSON is always raw)",
            )
            .field("profile"))
        }
        (Format::Csv, None | Some("spreadsheet")) => Profile::Spreadsheet,
        (Format::Csv, Some("machine")) => Profile::Machine,
        (Format::Csv, Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidProfile,
                "profile must be spreadsheet or machine",
            )
            .field("profile"))
        }
    };
    let from = q.from.as_deref().map(|v| parse_ts("from", v)).transpose()?;
    let to = q.to.as_deref().map(|v| parse_ts("to", v)).transpose()?;
    if let (Some(f), Some(t)) = (&from, &to) {
        if f > t {
            return Err(
                ApiError::new(ErrorCode::InvalidRange, "from must not be after to").field("from"),
            );
        }
    }
    Ok(ExportRequest {
        from,
        to,
        format,
        profile,
    })
}

fn export_response(
    req: &ExportRequest,
    scope: &str,
    body: impl futures_util::Stream<Item = Result<Vec<u8>, exp::ExportAborted>> + 'static,
) -> HttpResponse {
    use futures_util::TryStreamExt;
    // An error ends the body without the final chunk: the client sees the truncation.
    let body = body.map_ok(actix_web::web::Bytes::from);
    let (ct, ext) = match req.format {
        Format::Csv => ("text/csv; charset=utf-8; header=present", "csv"),
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    HttpResponse::Ok()
        .content_type(ct)
        .insert_header(("X-Export-Sanitization", req.profile.as_str()))
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"audit-{scope}-{stamp}.{ext}\""),
        ))
        .streaming(body)
}

/// Export the tenant audit trail as CSV or NDJSON, streamed, ending with a signed trailer
/// (format in the README). Requires the license feature `audit.export` (403
/// `feature_not_licensed`); bad or reversed `from`/`to` → 400.
#[utoipa::path(tag = "audit", params(ExportParams), responses(
    (status = 200, description = "CSV or NDJSON stream ending with the signed trailer", content_type = "text/csv"),
    (status = 400, body = crate::http::problem::Problem), (status = 403, body = crate::http::problem::Problem)),
    security(("session" = [])))]
#[get("/audit/export")]
pub async fn export(
    state: web::Data<AppState>,
    g: Guarded<perm::AuditRead, web::Query<ExportParams>>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let chain = exp::tenant_chain(&g.ctx);
    exp::require_export_feature(&state, &chain).await?;
    let req = export_request(g.inner.into_inner())?;
    let scope = g.ctx.tenant.to_string();
    let body = exp::export(&state, &g.ctx.actor(), chain, req.clone()).await?;
    Ok(export_response(&req, &scope, body))
}

/// Walk the tenant audit chain and name the first bad row.
#[utoipa::path(tag = "audit", responses((status = 200, body = VerifyReport)), security(("session" = [])))]
#[get("/audit/verify")]
pub async fn verify(
    state: web::Data<AppState>,
    g: Require<perm::AuditRead>,
) -> Result<HttpResponse, ApiError> {
    let chain = exp::tenant_chain(&g.ctx);
    Ok(HttpResponse::Ok().json(exp::verify(&state, &chain).await?))
}

/// The deployment's audit-signing public key.
#[derive(Serialize, ToSchema)]
pub struct SigningKey {
    /// Always `Ed25519`.
    pub algorithm: &'static str,
    /// First 16 hex digits of SHA-256 over the raw key (the trailer's `key_id`).
    pub key_id: String,
    /// SubjectPublicKeyInfo PEM (for `flowguard audit verify-export --public-key`).
    pub public_key_pem: String,
    /// Raw 32-byte key, base64.
    pub public_key: String,
}

/// The public key that verifies export trailers.
#[utoipa::path(tag = "audit", responses((status = 200, body = SigningKey)), security(("session" = [])))]
#[get("/audit/signing-key")]
pub async fn signing_key(
    state: web::Data<AppState>,
    _g: Require<perm::AuditKeyRead>,
) -> Result<HttpResponse, ApiError> {
    use base64::Engine;
    let s = &state.audit_signer;
    Ok(HttpResponse::Ok().json(SigningKey {
        algorithm: "Ed25519",
        key_id: s.key_id(),
        public_key_pem: s.public_key_pem(),
        public_key: base64::engine::general_purpose::STANDARD.encode(s.public_key()),
    }))
}

/// Read the catalog audit trail (PlatformAdmin; kept for the life of the deployment).
#[utoipa::path(tag = "platform", params(AuditParams), responses((status = 200, body = AuditPage), (status = 400, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/platform/audit")]
pub async fn platform_list(
    state: web::Data<AppState>,
    g: Guarded<perm::PlatformRead, web::Query<AuditParams>>,
) -> Result<HttpResponse, ApiError> {
    let q = g.inner.into_inner();
    let before_seq = match &q.cursor {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::new(ErrorCode::InvalidCursor, "cursor is not valid").field("cursor")
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
    let (items, next_cursor) = svc::list_catalog(&state.into_inner(), query).await?;
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}

/// Export the catalog audit trail (PlatformAdmin; needs `audit.export` in the license in force).
#[utoipa::path(tag = "platform", params(ExportParams), responses(
    (status = 200, description = "CSV or NDJSON stream ending with the signed trailer", content_type = "text/csv"),
    (status = 400, body = crate::http::problem::Problem), (status = 403, body = crate::http::problem::Problem)),
    security(("session" = [])))]
#[get("/platform/audit/export")]
pub async fn platform_export(
    state: web::Data<AppState>,
    g: Guarded<perm::PlatformRead, web::Query<ExportParams>>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    exp::require_export_feature(&state, &Chain::Catalog).await?;
    let req = export_request(g.inner.into_inner())?;
    let body = exp::export(&state, &g.ctx.actor(), Chain::Catalog, req.clone()).await?;
    Ok(export_response(&req, "catalog", body))
}

/// Walk the catalog audit chain and name the first bad row.
#[utoipa::path(tag = "platform", responses((status = 200, body = VerifyReport)), security(("session" = [])))]
#[get("/platform/audit/verify")]
pub async fn platform_verify(
    state: web::Data<AppState>,
    _g: Require<perm::PlatformRead>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(exp::verify(&state, &Chain::Catalog).await?))
}
