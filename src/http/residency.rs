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
//! session cookie (`fgu_<tenant>_…`), the `X-FlowGuard-Tenant` header, and every path that
//! names a tenant ([`TENANT_PATHS`]: `/api/v1/platform/tenants/{id}`, signed screenshot URLs
//! `/shots/{tenant}/{object}.png`, webhook triggers `/api/v1/hooks/runs/fgw_<tenant>_…`). The
//! login bodies' `tenant` (`/auth/login`, `/auth/ldap/login`) is checked by the handlers with
//! [`check_tenant_ref`] before anything else happens. Every reference is decided on its
//! decoded, normalised value: the path percent-decoded, ids trimmed and lower-cased
//! (`WEU-ABCD12` is `weu-abcd12`). Tenant *names* carry no region and are always looked up
//! locally.

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

/// What the path segment after a [`TENANT_PATHS`] prefix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRef {
    /// A tenant id (`/api/v1/platform/tenants/{id}`, `/shots/{tenant}/…`).
    TenantId,
    /// A webhook trigger token `fgw_<tenant>_<secret>` (`/api/v1/hooks/runs/{token}`).
    WebhookToken,
}

/// Every route whose path names a tenant: the decoded path prefix and what the segment after it
/// is. `tests/api/residency.rs` walks the OpenAPI document and fails on a route naming a tenant
/// that this table misses.
pub const TENANT_PATHS: &[(&str, PathRef)] = &[
    ("/api/v1/platform/tenants/", PathRef::TenantId),
    ("/shots/", PathRef::TenantId),
    ("/api/v1/hooks/runs/", PathRef::WebhookToken),
];

/// The tenant part of a webhook trigger token (`fgw_<tenant>_<secret>`), prefix matched in any
/// letter case; `None` when the text has no such shape.
fn webhook_tenant(token: &str) -> Option<&str> {
    let t = token.trim();
    let rest = t
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("fgw_"))
        .and(t.get(4..))?;
    rest.split_once('_').map(|(tenant, _)| tenant)
}

/// The request path percent-decoded once (as the router decodes it before matching), so an
/// encoded tenant id (`weu%2Dabcd12`) or an encoded route prefix is decided on what it names.
pub fn decoded_path(req: &HttpRequest) -> String {
    percent_encoding::percent_decode_str(req.path())
        .decode_utf8_lossy()
        .into_owned()
}

/// Check every tenant reference the request carries (see the module docs); `creds` are the
/// request's parsed [`credentials`]. Every reference is decided on its decoded, normalised form
/// (percent-decoding for paths, trimmed and lower-cased ids everywhere).
pub fn check_request(req: &HttpRequest, s: &Settings, creds: &Credentials) -> Result<(), ApiError> {
    let path = decoded_path(req);
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
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
    for (prefix, kind) in TENANT_PATHS {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let segment = rest.split('/').next().unwrap_or("");
        match kind {
            PathRef::TenantId => check_tenant_ref(s, segment)?,
            PathRef::WebhookToken => {
                if let Some(t) = webhook_tenant(segment) {
                    check_tenant_ref(s, t)?;
                }
            }
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
        for form in ["WEU-ABCD12", " weu-abcd12 ", "Weu-AbCd12"] {
            let e = check_tenant_ref(&s, form).unwrap_err();
            assert_eq!(e.code, ErrorCode::MisdirectedRequest, "{form}");
        }
        assert_eq!(webhook_tenant("fgw_weu-abcd12_x"), Some("weu-abcd12"));
        assert_eq!(webhook_tenant("FGW_WEU-ABCD12_x"), Some("WEU-ABCD12"));
        assert_eq!(webhook_tenant("fga_weu-abcd12_x"), None);
        let e = check_tenant_ref(&s, "apac-abcd12").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownRegionRoute);
        assert_eq!(crate::http::problem::status_of(&e).as_u16(), 404);
    }
}
