//! Region rules (DESIGN.md "Tenants and regions"): whether a tenant id lives in this
//! deployment's region, and the 421 Misdirected Request (RFC 9110 §15.5.20) problem naming the
//! region's public endpoint when it does not. Used by the residency middleware (before routing
//! and authentication), the login handlers and tenant creation.

use crate::config::Settings;
use crate::domain::{Region, TenantId};
use crate::error::{ApiError, ErrorCode};

/// Public endpoint of `region` from `[regions]`.
pub fn endpoint_of<'a>(s: &'a Settings, region: &Region) -> Option<&'a str> {
    s.regions.get(region.as_str()).map(String::as_str)
}

/// The 421 problem for a tenant living in `region`, served at `url`.
pub fn misdirected(region: &Region, url: &str) -> ApiError {
    ApiError::new(
        ErrorCode::MisdirectedRequest,
        format!("this tenant lives in region `{region}`; send the request to {url}"),
    )
    .with_region_endpoint(url)
}

/// Decide for one tenant id: `Ok` when it lives here, 421 when another known region serves
/// it, 404 `unknown_region` otherwise.
pub fn check_tenant(s: &Settings, t: &TenantId) -> Result<(), ApiError> {
    let region = t.region();
    if region == s.region() {
        return Ok(());
    }
    match endpoint_of(s, &region) {
        Some(url) => Err(misdirected(&region, url)),
        None => Err(ApiError::new(
            ErrorCode::UnknownRegionRoute,
            format!("no deployment serves region `{region}`"),
        )),
    }
}

/// The tenant id a reference names once normalised — surrounding white space trimmed, ASCII
/// letters lower-cased (ids are lower-case; `WEU-7K2M9Q` names `weu-7k2m9q`) — or `None` for a
/// reference that is not an id (a tenant name, which carries no region). Callers decode any
/// transport encoding (percent-encoding in a path) first.
pub fn tenant_id_of(r: &str) -> Option<TenantId> {
    TenantId::parse(&r.trim().to_ascii_lowercase()).ok()
}

/// Decide for a tenant reference that may be an id (in any letter case) or a name: names are
/// local; ids are decided on their normalised form ([`tenant_id_of`]).
pub fn check_tenant_ref(s: &Settings, r: &str) -> Result<(), ApiError> {
    match tenant_id_of(r) {
        Some(t) => check_tenant(s, &t),
        None => Ok(()),
    }
}
