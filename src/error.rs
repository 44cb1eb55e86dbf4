//! The error vocabulary shared by services, jobs and the CLI: one [`ErrorCode`] per stable
//! machine code, and [`ApiError`], the error every use case returns. Nothing here knows HTTP:
//! `http::problem` holds the one table that maps each code to its status, title and problem type
//! and renders the RFC 9457 `application/problem+json` body (after meilisearch's
//! `make_error_codes!`). The internal cause of an `internal` error is logged, never sent.

/// Declares [`ErrorCode`]: `Variant => "wire_code"`, with a doc line each.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident => $code:literal, )+) => {
        /// A stable machine code of an error (the problem's `code` member). A few wire codes have
        /// two variants because they are answered with two statuses (see `http::problem`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl ErrorCode {
            /// Every code, in declaration order (for the code table, the OpenAPI document and
            /// the README check).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire code, e.g. `validation_failed`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }
        }
    };
}

error_codes! {
    /// A field is invalid (its name in `field`).
    ValidationFailed => "validation_failed",
    /// The request body is not JSON.
    MalformedJson => "malformed_json",
    /// The body is larger than the route accepts.
    PayloadTooLarge => "payload_too_large",
    /// The body's media type is not the one the route accepts.
    UnsupportedMediaType => "unsupported_media_type",
    /// The query string does not parse.
    InvalidQuery => "invalid_query",
    /// A pagination cursor does not parse or is not this list's.
    InvalidCursor => "invalid_cursor",
    /// A time range is invalid (`from` after `to`, too long).
    InvalidRange => "invalid_range",
    /// A timestamp is not RFC 3339.
    InvalidTimestamp => "invalid_timestamp",
    /// An export format is unknown.
    InvalidFormat => "invalid_format",
    /// An export profile is unknown.
    InvalidProfile => "invalid_profile",
    /// A multipart body is malformed or carries unexpected parts.
    InvalidMultipart => "invalid_multipart",
    /// A multipart body has too many parts.
    TooManyParts => "too_many_parts",
    /// An uploaded image is not a valid PNG.
    InvalidImage => "invalid_image",
    /// An image is larger than the decoder accepts.
    ImageDimensionsExceeded => "image_dimensions_exceeded",
    /// Mask rectangles are malformed.
    InvalidMasks => "invalid_masks",
    /// A flow step would send a secret variable somewhere else than the application's origin
    /// (a `navigate` URL of another origin, or an assertion's `expected`).
    SecretOutsideOrigin => "secret_outside_origin",
    /// A checkpoint region is malformed.
    InvalidRegion => "invalid_region",
    /// A mask selector listed by the step has no rectangle.
    MaskMissing => "mask_missing",
    /// A password is longer than accepted.
    PasswordTooLong => "password_too_long",
    /// The HTTP layer refused the request line or a header field (bad method token or syntax).
    MalformedRequest => "malformed_request",
    /// The request target (path and query) is longer than 8 KiB.
    UriTooLong => "uri_too_long",
    /// The header section is larger than 32 KiB or has more than 96 fields.
    HeaderFieldsTooLarge => "header_fields_too_large",
    /// The request names an HTTP version other than 1.0, 1.1 (or 2 by ALPN).
    HttpVersionNotSupported => "http_version_not_supported",
    /// No credentials, or invalid ones.
    Unauthenticated => "unauthenticated",
    /// Login refused; one body for unknown user and wrong password.
    InvalidCredentials => "invalid_credentials",
    /// The current password given with a password change is wrong (403).
    WrongCurrentPassword => "invalid_credentials",
    /// A logout without a session.
    NoSession => "no_session",
    /// The caller's role lacks the permission.
    Forbidden => "forbidden",
    /// The caller is still on a one-time password: only `/me`, `/me/password` and logout work.
    PasswordChangeRequired => "password_change_required",
    /// A cookie-authenticated unsafe request without the session's `X-CSRF-Token`.
    CsrfFailed => "csrf_failed",
    /// Only an Owner may grant or touch the Owner role.
    OwnerRequired => "owner_required",
    /// The tenant is suspended.
    TenantSuspended => "tenant_suspended",
    /// A signed URL's signature is missing, altered or expired.
    InvalidSignature => "invalid_signature",
    /// A limit of the plan (applications, seats) is reached.
    PlanLimit => "plan_limit",
    /// The license does not allow this plan.
    PlanNotLicensed => "plan_not_licensed",
    /// The license does not allow this region.
    RegionNotLicensed => "region_not_licensed",
    /// The license lacks the feature named in `feature`.
    FeatureNotLicensed => "feature_not_licensed",
    /// No such resource (or another tenant's).
    NotFound => "not_found",
    /// A route names a region no deployment serves (404).
    UnknownRegionRoute => "unknown_region",
    /// A field names a region that is not configured (422).
    UnknownRegion => "unknown_region",
    /// The request belongs to another region (421 with `X-FlowGuard-Region-Endpoint`).
    MisdirectedRequest => "misdirected_request",
    /// An upload took too long.
    RequestTimeout => "request_timeout",
    /// A name is already used.
    NameTaken => "name_taken",
    /// A member with this e-mail exists.
    MemberExists => "member_exists",
    /// The last active Owner cannot be removed or demoted.
    LastOwner => "last_owner",
    /// A tenant with this id exists.
    TenantExists => "tenant_exists",
    /// The object is not in a state that allows the change.
    InvalidTransition => "invalid_transition",
    /// The token or license is already revoked.
    AlreadyRevoked => "already_revoked",
    /// A key rotation of the tenant is already running.
    RotationInProgress => "rotation_in_progress",
    /// The account has no local password.
    NotLocalAccount => "not_local_account",
    /// LDAP is not configured for the tenant.
    LdapNotConfigured => "ldap_not_configured",
    /// OpenID Connect single sign-on is not configured (or not enabled) for the tenant.
    OidcNotConfigured => "oidc_not_configured",
    /// No AI endpoint is configured for the tenant.
    AiEndpointNotConfigured => "ai_endpoint_not_configured",
    /// The application has no ticket integration.
    IntegrationNotConfigured => "integration_not_configured",
    /// A host is not allowed by the deployment's `egress.allow`.
    EgressDenied => "egress_denied",
    /// A directory URL is not LDAPS and StartTLS is off.
    TlsRequired => "tls_required",
    /// No license is installed.
    LicenseMissing => "license_missing",
    /// The offline trial cannot start: it was used already, or a license is in force (409).
    TrialUnavailable => "trial_unavailable",
    /// A backup is running already; one runs at a time (409).
    BackupRunning => "backup_running",
    /// A license token does not parse.
    LicenseMalformed => "license_malformed",
    /// A license signature does not verify.
    LicenseBadSignature => "license_bad_signature",
    /// A license's claims break the shape rules.
    LicenseInvalidClaims => "license_invalid_claims",
    /// A license has expired.
    LicenseExpired => "license_expired",
    /// A license is not yet valid.
    LicenseNotYetValid => "license_not_yet_valid",
    /// A license is revoked.
    LicenseRevoked => "license_revoked",
    /// A license could not be signed.
    LicenseSigningFailed => "license_signing_failed",
    /// Too many failed login attempts (with `Retry-After`).
    TooManyAttempts => "too_many_attempts",
    /// Too many AI-cost calls (with `Retry-After`).
    RateLimited => "rate_limited",
    /// The directory refused the service account bind.
    LdapServiceBindFailed => "ldap_service_bind_failed",
    /// The directory answered with an unexpected error.
    LdapError => "ldap_error",
    /// The OpenID provider could not be reached or answered unexpectedly (discovery, JWKS).
    OidcProviderError => "oidc_provider_error",
    /// The directory is unreachable (with `Retry-After`).
    LdapUnavailable => "ldap_unavailable",
    /// An outbound TLS handshake failed (unknown issuer, expired, name mismatch, CA used as leaf…).
    TlsFailed => "tls_failed",
    /// The server is busy (with `Retry-After`).
    Busy => "busy",
    /// The server is not ready to serve.
    NotReady => "not_ready",
    /// The data volume is full: the write was not made (507).
    InsufficientStorage => "insufficient_storage",
    /// An internal error (the cause is logged, never sent).
    Internal => "internal",
}

/// An error answered to an API client: a code, a human detail and optional members. Built by
/// services; rendered by `http::problem`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", code.as_str())]
pub struct ApiError {
    /// Stable machine code.
    pub code: ErrorCode,
    /// Message shown to the client (never a secret or an internal cause).
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
    /// A new error with `code` and the client-facing `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
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
    /// The license feature of a `feature_not_licensed`, if any.
    pub fn feature(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.feature.as_deref())
    }
    /// Attach the field at fault.
    pub fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }
    /// Attach `Retry-After` seconds (at least 1).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }
    /// `validation_failed` for `field`.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, detail).field(field)
    }
    /// `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::new(ErrorCode::Unauthenticated, "authentication required")
    }
    /// `invalid_credentials` — same body for unknown user and wrong password.
    pub fn invalid_credentials() -> Self {
        Self::new(ErrorCode::InvalidCredentials, "invalid credentials")
    }
    /// `forbidden`.
    pub fn forbidden() -> Self {
        Self::new(ErrorCode::Forbidden, "not allowed for this role")
    }
    /// `not_found`.
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such resource")
    }
    /// `too_many_attempts` with `Retry-After`.
    pub fn throttled(retry_after: u64) -> Self {
        Self::new(
            ErrorCode::TooManyAttempts,
            "too many failed attempts; try again later",
        )
        .retry_after(retry_after)
    }
    /// `busy` with `Retry-After`.
    pub fn busy(retry_after: u64) -> Self {
        Self::new(ErrorCode::Busy, "server busy; retry later").retry_after(retry_after)
    }
    /// `internal`: logs `cause` (which must not contain secrets) and hides it from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

/// Store-level errors mapped onto API errors. Busy databases surface as `busy` + `Retry-After`.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Busy => ApiError::busy(2),
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Full => insufficient_storage(),
            StoreError::Io(e) if crate::store::is_disk_full(&e) => insufficient_storage(),
            StoreError::Schema(msg) => {
                tracing::warn!(error = %msg, "store refused");
                ApiError::new(
                    ErrorCode::NotReady,
                    "this tenant's store is not available on this server (see /readyz and the server log)",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

/// `insufficient_storage` (507): the data volume is full (logged: an operator must free space).
fn insufficient_storage() -> ApiError {
    tracing::error!("the data volume is full: a write was refused (free space; no restart needed)");
    ApiError::new(
        ErrorCode::InsufficientStorage,
        "the server's storage is full; the change was not saved",
    )
}

/// Shorthand result for services, jobs and the CLI.
pub type ApiResult<T> = Result<T, ApiError>;
