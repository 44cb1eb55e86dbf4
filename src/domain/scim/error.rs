//! SCIM error responses (RFC 7644 §3.12): an HTTP status, an optional `scimType` keyword and a
//! human `detail`. Rendered by the HTTP layer as
//! `{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400","scimType":…,"detail":…}`
//! with `Content-Type: application/scim+json`.

use std::fmt;

/// The `scimType` keywords of RFC 7644 §3.12, Table 9 (all for status 400 except `uniqueness`,
/// which goes with 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    /// The filter syntax was invalid or the attribute/comparison is not supported.
    InvalidFilter,
    /// The filter yields more results than the server will return.
    TooMany,
    /// One or more attribute values are already in use or reserved (409).
    Uniqueness,
    /// The modification is incompatible with the attribute's mutability or current state.
    Mutability,
    /// The request body structure was invalid or did not conform to the schema.
    InvalidSyntax,
    /// The `path` attribute was invalid or malformed.
    InvalidPath,
    /// The `path` did not yield an attribute or value that could be operated on.
    NoTarget,
    /// A required value was missing, or the value given was not compatible.
    InvalidValue,
    /// The protocol version is not supported.
    InvalidVers,
    /// The request cannot be completed because of sensitive information in the URI.
    Sensitive,
}

impl ScimType {
    /// The keyword as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

/// One SCIM error. `detail` is shown to the client and never holds a secret or internal cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScimError {
    /// HTTP status code (400, 401, 403, 404, 405, 409, 412, 413, 415, 429, 500, 503 …).
    pub status: u16,
    /// The RFC 7644 §3.12 keyword, where the table defines one for this failure.
    pub scim_type: Option<ScimType>,
    /// Human-readable explanation.
    pub detail: String,
    /// Seconds for a `Retry-After` header (429/503).
    pub retry_after: Option<u64>,
}

impl fmt::Display for ScimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scim_type {
            Some(t) => write!(f, "{} {}: {}", self.status, t.as_str(), self.detail),
            None => write!(f, "{}: {}", self.status, self.detail),
        }
    }
}

impl ScimError {
    /// An error with a status and no `scimType`.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type: None,
            detail: detail.into(),
            retry_after: None,
        }
    }
    /// A 400 with a `scimType`.
    pub fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self {
            status: 400,
            scim_type: Some(scim_type),
            detail: detail.into(),
            retry_after: None,
        }
    }
    /// 400 `invalidFilter`.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidFilter, detail)
    }
    /// 400 `invalidSyntax`.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidSyntax, detail)
    }
    /// 400 `invalidValue`.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidValue, detail)
    }
    /// 400 `invalidPath`.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidPath, detail)
    }
    /// 400 `noTarget`.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::NoTarget, detail)
    }
    /// 400 `mutability`.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::Mutability, detail)
    }
    /// 409 `uniqueness`.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self {
            status: 409,
            scim_type: Some(ScimType::Uniqueness),
            detail: detail.into(),
            retry_after: None,
        }
    }
    /// 404 for a resource that does not exist (or belongs to another tenant).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, detail)
    }
    /// 412 Precondition Failed: `If-Match` names another version (RFC 7644 §3.14).
    pub fn precondition_failed() -> Self {
        Self::new(
            412,
            "the resource has changed: If-Match does not match the current version",
        )
    }
    /// 500 with a fixed detail; the caller logs the cause.
    pub fn internal() -> Self {
        Self::new(500, "internal error")
    }
}
