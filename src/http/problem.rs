//! The one table that turns the error vocabulary ([`ErrorCode`]) into HTTP: status, title and
//! problem type of every code, and the RFC 9457 `application/problem+json` rendering of an
//! [`ApiError`]. Services never pick a status; they pick a code, and this table decides.
//!
//! The problem type of code `c` is `https://flowguard.dev/problems/c` (RFC 9457 §3.1.1). The
//! OpenAPI document's error responses and the README's code list are generated from / checked
//! against [`TABLE`].

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::http::residency::ENDPOINT_HEADER;

/// Base of every problem type URI.
pub const PROBLEM_TYPE_BASE: &str = "https://flowguard.dev/problems/";

/// `application/problem+json` (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Problem details body (RFC 9457 §3.1) plus FlowGuard's `code`, `field` and `feature` members.
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

/// One row of the code table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The code.
    pub code: ErrorCode,
    /// HTTP status it is answered with.
    pub status: StatusCode,
    /// The problem type's title.
    pub title: &'static str,
}

macro_rules! table {
    ($( $variant:ident => $status:ident, $title:literal; )+) => {
        /// Every code with its status and title, in the order of [`ErrorCode::ALL`].
        pub const TABLE: &[Row] = &[
            $( Row { code: ErrorCode::$variant, status: StatusCode::$status, title: $title }, )+
        ];

        /// The table row of `code` (exhaustive: a new code does not compile without its row).
        pub fn row(code: ErrorCode) -> Row {
            match code {
                $( ErrorCode::$variant => Row { code, status: StatusCode::$status, title: $title }, )+
            }
        }
    };
}

table! {
    ValidationFailed => UNPROCESSABLE_ENTITY, "Validation failed";
    MalformedJson => BAD_REQUEST, "Malformed JSON";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "Payload too large";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "Unsupported media type";
    InvalidQuery => BAD_REQUEST, "Invalid query string";
    InvalidCursor => BAD_REQUEST, "Invalid cursor";
    InvalidRange => BAD_REQUEST, "Invalid time range";
    InvalidTimestamp => BAD_REQUEST, "Invalid timestamp";
    InvalidFormat => BAD_REQUEST, "Invalid format";
    InvalidProfile => BAD_REQUEST, "Invalid profile";
    InvalidMultipart => BAD_REQUEST, "Invalid multipart body";
    TooManyParts => BAD_REQUEST, "Too many parts";
    InvalidImage => UNPROCESSABLE_ENTITY, "Invalid image";
    ImageDimensionsExceeded => UNPROCESSABLE_ENTITY, "Image dimensions exceeded";
    InvalidMasks => UNPROCESSABLE_ENTITY, "Invalid masks";
    SecretOutsideOrigin => UNPROCESSABLE_ENTITY, "Secret outside its origin";
    InvalidRegion => UNPROCESSABLE_ENTITY, "Invalid checkpoint region";
    MaskMissing => UNPROCESSABLE_ENTITY, "Mask missing";
    PasswordTooLong => BAD_REQUEST, "Password too long";
    MalformedRequest => BAD_REQUEST, "Malformed request";
    UriTooLong => URI_TOO_LONG, "URI too long";
    HeaderFieldsTooLarge => REQUEST_HEADER_FIELDS_TOO_LARGE, "Request header fields too large";
    HttpVersionNotSupported => HTTP_VERSION_NOT_SUPPORTED, "HTTP version not supported";
    Unauthenticated => UNAUTHORIZED, "Authentication required";
    InvalidCredentials => UNAUTHORIZED, "Invalid credentials";
    WrongCurrentPassword => FORBIDDEN, "Invalid credentials";
    NoSession => BAD_REQUEST, "No session";
    Forbidden => FORBIDDEN, "Forbidden";
    PasswordChangeRequired => FORBIDDEN, "Password change required";
    CsrfFailed => FORBIDDEN, "CSRF check failed";
    OwnerRequired => FORBIDDEN, "Owner required";
    TenantSuspended => FORBIDDEN, "Tenant suspended";
    InvalidSignature => FORBIDDEN, "Invalid signature";
    PlanLimit => FORBIDDEN, "Plan limit reached";
    PlanNotLicensed => FORBIDDEN, "Plan not licensed";
    RegionNotLicensed => FORBIDDEN, "Region not licensed";
    FeatureNotLicensed => FORBIDDEN, "Feature not licensed";
    NotFound => NOT_FOUND, "Not found";
    UnknownRegionRoute => NOT_FOUND, "Unknown region";
    UnknownRegion => UNPROCESSABLE_ENTITY, "Unknown region";
    MisdirectedRequest => MISDIRECTED_REQUEST, "Misdirected Request";
    RequestTimeout => REQUEST_TIMEOUT, "Request timeout";
    NameTaken => CONFLICT, "Name taken";
    MemberExists => CONFLICT, "Member exists";
    LastOwner => CONFLICT, "Last owner";
    TenantExists => CONFLICT, "Tenant exists";
    InvalidTransition => CONFLICT, "Invalid state transition";
    AlreadyRevoked => CONFLICT, "Already revoked";
    RotationInProgress => CONFLICT, "Rotation in progress";
    NotLocalAccount => CONFLICT, "Not a local account";
    LdapNotConfigured => CONFLICT, "LDAP not configured";
    OidcNotConfigured => CONFLICT, "Single sign-on not configured";
    AiEndpointNotConfigured => CONFLICT, "AI endpoint not configured";
    IntegrationNotConfigured => CONFLICT, "Integration not configured";
    EgressDenied => UNPROCESSABLE_ENTITY, "Egress denied";
    TlsRequired => UNPROCESSABLE_ENTITY, "TLS required";
    LicenseMissing => UNPROCESSABLE_ENTITY, "License missing";
    TrialUnavailable => CONFLICT, "Trial unavailable";
    BackupRunning => CONFLICT, "Backup running";
    LicenseMalformed => UNPROCESSABLE_ENTITY, "License malformed";
    LicenseBadSignature => UNPROCESSABLE_ENTITY, "License signature invalid";
    LicenseInvalidClaims => UNPROCESSABLE_ENTITY, "License claims invalid";
    LicenseExpired => UNPROCESSABLE_ENTITY, "License expired";
    LicenseNotYetValid => UNPROCESSABLE_ENTITY, "License not yet valid";
    LicenseRevoked => UNPROCESSABLE_ENTITY, "License revoked";
    LicenseSigningFailed => UNPROCESSABLE_ENTITY, "License signing failed";
    TooManyAttempts => TOO_MANY_REQUESTS, "Too many attempts";
    RateLimited => TOO_MANY_REQUESTS, "Rate limited";
    LdapServiceBindFailed => BAD_GATEWAY, "Directory service bind failed";
    LdapError => BAD_GATEWAY, "Directory error";
    OidcProviderError => BAD_GATEWAY, "OpenID provider error";
    LdapUnavailable => SERVICE_UNAVAILABLE, "Directory unavailable";
    TlsFailed => BAD_GATEWAY, "TLS handshake failed";
    Busy => SERVICE_UNAVAILABLE, "Server busy";
    NotReady => SERVICE_UNAVAILABLE, "Not ready";
    InsufficientStorage => INSUFFICIENT_STORAGE, "Insufficient storage";
    Internal => INTERNAL_SERVER_ERROR, "Internal error";
}

/// The HTTP status of `e`.
pub fn status_of(e: &ApiError) -> StatusCode {
    row(e.code).status
}

/// The RFC 9457 body of `e`.
pub fn problem(e: &ApiError) -> Problem {
    let r = row(e.code);
    Problem {
        type_: format!("{PROBLEM_TYPE_BASE}{}", e.code.as_str()),
        title: r.title.to_string(),
        status: r.status.as_u16(),
        detail: Some(e.detail.clone()),
        code: e.code.as_str().to_string(),
        field: e.field.clone(),
        feature: e.feature().map(str::to_string),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status_of(self)
    }
    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(status_of(self));
        b.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(s) = self.retry_after {
            b.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if let Some(url) = self.region_endpoint() {
            if let Ok(v) = HeaderValue::from_str(url) {
                b.insert_header((ENDPOINT_HEADER, v));
            }
            b.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        }
        b.json(problem(self))
    }
}

/// Document every operation's error answers from [`TABLE`]: for each status a code is answered
/// with, one `application/problem+json` response (schema `Problem`) whose description lists the
/// codes of that status. Replaces the success-only responses the route annotations declare for
/// error statuses. Every operation gets every error status: the residency check (421), the
/// body and query parsers (400/413/415/422), the guards (401/403), the stores (503 `busy`) and
/// the catch-all `internal` (500) sit in front of or behind every route.
pub fn document_errors(api: &mut utoipa::openapi::OpenApi) {
    use std::collections::BTreeMap;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    let mut by_status: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for r in TABLE {
        let codes = by_status.entry(r.status.as_u16()).or_default();
        if !codes.contains(&r.code.as_str()) {
            codes.push(r.code.as_str());
        }
    }
    let responses: Vec<(String, utoipa::openapi::Response)> = by_status
        .iter()
        .map(|(status, codes)| {
            let reason = StatusCode::from_u16(*status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let list = codes
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            let resp = ResponseBuilder::new()
                .description(format!("{reason}; `code` is one of {list}"))
                .content(PROBLEM_JSON, content)
                .build();
            (status.to_string(), resp)
        })
        .collect();
    let scim_error = scim_error_response();
    for (path, item) in api.paths.paths.iter_mut() {
        let scim = path.starts_with(SCIM_PREFIX);
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in ops.into_iter().flatten() {
            for (status, resp) in &responses {
                // SCIM answers its errors in its own format (RFC 7644 §3.12); the residency
                // check in front of it answers 421 as problem+json.
                let resp = if scim && status != "421" {
                    scim_error.clone()
                } else {
                    resp.clone()
                };
                op.responses.responses.insert(status.clone(), resp.into());
            }
            if scim {
                for extra in SCIM_ONLY_STATUSES {
                    op.responses
                        .responses
                        .insert(extra.to_string(), scim_error.clone().into());
                }
            }
            document_bodies(path, scim, op);
        }
    }
}

/// Mount point of the SCIM service (its operations answer `application/scim+json`).
const SCIM_PREFIX: &str = "/scim/v2";
/// Statuses only SCIM answers: 405 (method not allowed on a SCIM path) and 412 (`If-Match`).
const SCIM_ONLY_STATUSES: [&str; 2] = ["405", "412"];

/// The SCIM error response (RFC 7644 §3.12): `application/scim+json` with `schemas`, `status`
/// (a string), `detail` and an optional `scimType`.
fn scim_error_response() -> utoipa::openapi::Response {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, ResponseBuilder};
    let schema = ObjectBuilder::new()
        .property(
            "schemas",
            utoipa::openapi::schema::ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String)),
        )
        .property("status", ObjectBuilder::new().schema_type(Type::String))
        .property("detail", ObjectBuilder::new().schema_type(Type::String))
        .property("scimType", ObjectBuilder::new().schema_type(Type::String))
        .required("schemas")
        .required("status")
        .build();
    ResponseBuilder::new()
        .description("SCIM error (RFC 7644 §3.12)")
        .content(
            "application/scim+json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// Give success responses declared without a body the media type they are sent with: SCIM
/// resources (`application/scim+json`), `/healthz` and `/readyz` (`application/json`) and
/// `/metrics` (Prometheus text).
fn document_bodies(path: &str, scim: bool, op: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, RefOr};
    let media = match path {
        _ if scim => "application/scim+json",
        "/healthz" | "/readyz" => "application/json",
        "/metrics" => "text/plain",
        _ => return,
    };
    for (status, resp) in op.responses.responses.iter_mut() {
        if !status.starts_with('2') || status == "204" {
            continue;
        }
        if let RefOr::T(r) = resp {
            if r.content.is_empty() {
                let schema = if media == "text/plain" {
                    ObjectBuilder::new().schema_type(Type::String)
                } else {
                    ObjectBuilder::new().schema_type(Type::Object)
                };
                r.content.insert(
                    media.to_string(),
                    ContentBuilder::new().schema(Some(schema)).build(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_code_once_in_order() {
        assert_eq!(TABLE.len(), ErrorCode::ALL.len());
        for (r, c) in TABLE.iter().zip(ErrorCode::ALL) {
            assert_eq!(r.code, *c);
            assert_eq!(row(*c).status, r.status);
        }
    }

    #[test]
    fn a_wire_code_shared_by_two_variants_differs_only_in_status() {
        for a in TABLE {
            for b in TABLE {
                if a.code != b.code && a.code.as_str() == b.code.as_str() {
                    assert_ne!(a.status, b.status, "{}", a.code.as_str());
                }
            }
        }
    }

    /// The README's "Error codes" list and [`TABLE`] name the same (code, status) pairs; the
    /// test prints the table so a failure shows what to copy.
    #[test]
    fn readme_lists_exactly_the_codes_of_the_table() {
        let mut printed = String::new();
        for r in TABLE {
            printed.push_str(&format!(
                "| `{}` | {} | {} |\n",
                r.code.as_str(),
                r.status.as_u16(),
                r.title
            ));
        }
        println!("{printed}");
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let section = readme
            .split("\n## Error codes\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has an `## Error codes` section");
        let mut listed = std::collections::BTreeSet::new();
        for line in section.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 4 || !cells[1].starts_with('`') {
                continue;
            }
            let code = cells[1].trim_matches('`').to_string();
            let status: u16 = cells[2].parse().expect("status column is a number");
            assert!(
                listed.insert((code.clone(), status)),
                "listed twice: {code} {status}"
            );
        }
        let table: std::collections::BTreeSet<(String, u16)> = TABLE
            .iter()
            .map(|r| (r.code.as_str().to_string(), r.status.as_u16()))
            .collect();
        let missing: Vec<_> = table.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "codes missing from the README: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "README lists codes the table lacks: {extra:?}"
        );
    }
}
