//! Data residency (DESIGN.md "Tenants and regions"): a request that names a tenant of another
//! region gets **421 Misdirected Request** (RFC 9110 §15.5.20) with
//! `X-FlowGuard-Region-Endpoint: <that region's public URL>`, `Cache-Control: no-store` and a
//! problem body (`code` = `misdirected_request`). A tenant id whose region this deployment does
//! not know gets 404 `unknown_region`.
//!
//! The decision is taken from the request alone — the tenant id carries its region
//! (`eus-7k2m9q`) — in a middleware that runs **before routing and authentication**, so a
//! misdirected request has no side effect (no session, no audit row, no lockout counter). It
//! looks at, in order: the bearer token's prefix (`fga_<tenant>_…`, `fgs_<tenant>_…`), the
//! session cookie (`fgu_<tenant>_…`), the `X-FlowGuard-Tenant` header, the tenant id in a
//! `/api/v1/platform/tenants/{id}` path, and the tenant of a signed screenshot URL
//! (`/shots/{tenant}/{object}.png`). The login body's `tenant` is checked by the login
//! handler with [`check_tenant_ref`] before anything else happens. Tenant *names* carry no
//! region and are always looked up locally.

use actix_web::http::header;
use actix_web::HttpRequest;

use crate::config::Settings;
use crate::error::ApiError;
use crate::http::extract::SESSION_COOKIE;
use crate::service::principal::{Authorization, Credentials, PresentedToken};
use crate::service::region::check_tenant;
pub use crate::service::region::check_tenant_ref;

/// Response header naming the right region's endpoint.
pub const ENDPOINT_HEADER: &str = "X-FlowGuard-Region-Endpoint";
/// Request header naming the tenant a request is about.
pub const TENANT_HEADER: &str = "X-FlowGuard-Tenant";

/// Parse the request's credentials once: the `Authorization` header and the session cookie.
/// The result is checked here and handed to the authentication extractor.
pub fn credentials(req: &HttpRequest) -> Credentials {
    let authorization = req.headers().get(header::AUTHORIZATION).map(|h| {
        match h.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(b) => Authorization::Bearer(PresentedToken::parse(b.trim())),
            None => Authorization::Invalid,
        }
    });
    let session = req
        .cookie(SESSION_COOKIE)
        .map(|c| PresentedToken::parse(c.value()));
    Credentials {
        authorization,
        session,
    }
}

/// Check every tenant reference the request carries (see the module docs); `creds` are the
/// request's parsed [`credentials`].
pub fn check_request(req: &HttpRequest, s: &Settings, creds: &Credentials) -> Result<(), ApiError> {
    let path = req.path();
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return Ok(());
    }
    for t in creds.tenants() {
        check_tenant(s, t)?;
    }
    for v in req.headers().get_all(TENANT_HEADER) {
        if let Ok(v) = v.to_str() {
            check_tenant_ref(s, v)?;
        }
    }
    if let Some(rest) = path.strip_prefix("/api/v1/platform/tenants/") {
        if let Some(id) = rest.split('/').next() {
            check_tenant_ref(s, id)?;
        }
    }
    // Signed screenshot URLs name their tenant: `/shots/{tenant}/{object}.png`.
    if let Some(rest) = path.strip_prefix("/shots/") {
        if let Some(id) = rest.split('/').next() {
            check_tenant_ref(s, id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn settings() -> Settings {
        let mut s = Settings {
            region: "eus".into(),
            ..Settings::default()
        };
        s.regions.insert("eus".into(), "https://eus.example".into());
        s.regions.insert("weu".into(), "https://weu.example".into());
        s
    }

    #[test]
    fn decides_by_region_in_id() {
        let s = settings();
        assert!(check_tenant_ref(&s, "eus-abcd12").is_ok());
        assert!(check_tenant_ref(&s, "default").is_ok());
        let e = check_tenant_ref(&s, "weu-abcd12").unwrap_err();
        assert_eq!(e.code, ErrorCode::MisdirectedRequest);
        assert_eq!(e.region_endpoint(), Some("https://weu.example"));
        let e = check_tenant_ref(&s, "apac-abcd12").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownRegionRoute);
        assert_eq!(crate::http::problem::status_of(&e).as_u16(), 404);
    }
}
