//! One API error type rendered as `application/problem+json` (RFC 9457) with a stable machine
//! `code`, after meilisearch's error-code table. The internal cause is logged, never sent.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// Problem details body (RFC 9457 §3.1) plus FlowGuard's `code` and `field` members.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// URI reference naming the problem type: `https://flowguard.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short human summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Human explanation of this occurrence (never a secret or an internal cause).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine code, e.g. `validation_failed`, `plan_limit`, `not_found`.
    pub code: String,
    /// The request field at fault (JSON pointer-ish name such as `email`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The license feature a `feature_not_licensed` problem is about (e.g. `audit.export`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
}

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code.
    pub code: &'static str,
    /// Message shown to the client.
    pub detail: String,
    /// Field at fault.
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (429/503).
    pub retry_after: Option<u64>,
    /// Rarely used extension members (boxed to keep `ApiError` small).
    pub extra: Option<Box<ProblemExtra>>,
}

/// Extension members of a few problems.
#[derive(Debug, Default, Clone)]
pub struct ProblemExtra {
    /// License feature named by `feature_not_licensed` (sent as the `feature` member).
    pub feature: Option<String>,
    /// For 421 Misdirected Request: the public endpoint of the tenant's region, sent as
    /// `X-FlowGuard-Region-Endpoint`.
    pub region_endpoint: Option<String>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
            retry_after: None,
            extra: None,
        }
    }
    /// Name the license feature (`feature` member of the problem).
    pub fn with_feature(mut self, f: impl Into<String>) -> Self {
        self.extra.get_or_insert_with(Default::default).feature = Some(f.into());
        self
    }
    /// Attach the region endpoint (`X-FlowGuard-Region-Endpoint` header of a 421).
    pub fn with_region_endpoint(mut self, url: impl Into<String>) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .region_endpoint = Some(url.into());
        self
    }
    /// The region endpoint of a 421, if any.
    pub fn region_endpoint(&self) -> Option<&str> {
        self.extra
            .as_ref()
            .and_then(|e| e.region_endpoint.as_deref())
    }
    /// Attach the field at fault.
    pub fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }
    /// 400 `validation_failed` for a field (use 422 for semantically invalid values).
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        )
        .field(field)
    }
    /// 400 `bad_request`.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    /// 401 `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "authentication required",
        )
    }
    /// 401 `invalid_credentials` — same body for unknown user and wrong password.
    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "invalid credentials",
        )
    }
    /// 403 `forbidden`.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "not allowed for this role",
        )
    }
    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
    /// 409 `conflict`.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    /// 429 `too_many_attempts` with `Retry-After`.
    pub fn throttled(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed attempts; try again later",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }
    /// 503 `busy` with `Retry-After`.
    pub fn busy(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "server busy; retry later",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }
    /// 500 `internal`: logs `cause` (which must not contain secrets) and hides it from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    /// The RFC 9457 body.
    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("https://flowguard.dev/problems/{}", self.code),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail: Some(self.detail.clone()),
            code: self.code.to_string(),
            field: self.field.clone(),
            feature: self.extra.as_ref().and_then(|e| e.feature.clone()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        b.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(s) = self.retry_after {
            b.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if let Some(url) = self.region_endpoint() {
            if let Ok(v) = HeaderValue::from_str(url) {
                b.insert_header((crate::http::residency::ENDPOINT_HEADER, v));
            }
            b.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        }
        b.json(self.problem())
    }
}

/// Store-level errors mapped onto API errors. Busy databases surface as 503 + `Retry-After`.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Busy => ApiError::busy(2),
            StoreError::NotFound => ApiError::not_found(),
            other => ApiError::internal(other),
        }
    }
}

/// Shorthand result for handlers and services.
pub type ApiResult<T> = Result<T, ApiError>;
