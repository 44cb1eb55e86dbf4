//! Operations: liveness, readiness, version, Prometheus metrics.

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::crypto::ct_eq;
use crate::error::{ApiError, ErrorCode};
use crate::service::{platform, AppState};

/// Liveness: the process answers.
#[utoipa::path(tag = "operations", responses((status = 200, description = "alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the catalog opens and answers a query. When a tenant store was refused (a schema
/// version above this binary's, or a migration that failed and was rolled back) the server is
/// still ready for every other tenant: 200 with `status: "degraded"` and the refused stores
/// (`refused_stores`: tenant id and a message naming the file and both schema versions); the
/// refused tenant's requests answer 503 `not_ready`. 503 only when the catalog does not answer.
#[utoipa::path(tag = "operations", responses((status = 200, description = "ready (`status: ready`) or degraded (`status: degraded`, `refused_stores` lists the tenant stores that cannot be used)"), (status = 503, description = "not ready", body = crate::http::problem::Problem)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match platform::ready(&state).await {
        Ok(refused) if refused.is_empty() => {
            Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
        }
        Ok(refused) => Ok(HttpResponse::Ok()
            .json(serde_json::json!({"status": "degraded", "refused_stores": refused}))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(ErrorCode::NotReady, "catalog unavailable"))
        }
    }
}

/// Build information.
#[derive(Serialize, ToSchema)]
pub struct Version {
    /// Crate version.
    pub version: &'static str,
    /// This deployment's region.
    pub region: String,
}

/// Version and region of this appliance.
#[utoipa::path(tag = "operations", responses((status = 200, body = Version)))]
#[get("/version")]
pub async fn version(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Version {
        version: env!("CARGO_PKG_VERSION"),
        region: state.settings.region.clone(),
    })
}

/// Whether the *real* client of `req` is on loopback. Without a trusted proxy this is the TCP
/// peer. When the peer is listed in `trusted_proxies` the peer is only the proxy (often on the
/// same host, so itself loopback): the decision is then taken on the client address resolved
/// from `X-Forwarded-For` (right-most hop that is not a trusted proxy, as for audit rows), and
/// a proxied request **without** `X-Forwarded-For` counts as remote — a proxy that does not say
/// who its client is never makes a remote scraper look local.
fn real_client_is_loopback(req: &HttpRequest, state: &AppState) -> bool {
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else {
        return false;
    };
    let proxied = state
        .settings
        .trusted_proxies
        .iter()
        .any(|n| n.contains(&peer));
    if !proxied {
        return peer.is_loopback();
    }
    if !req.headers().contains_key("x-forwarded-for") {
        return false;
    }
    crate::http::extract::client_info(req, state)
        .ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Prometheus text exposition. Disabled → 404; a client that is not on loopback needs the
/// metrics token (and gets 404 when `metrics.loopback_only`). "Loopback" is decided on the real
/// client address, not a trusted proxy's (see [`real_client_is_loopback`]).
#[utoipa::path(tag = "operations", responses((status = 200, description = "text/plain; version=0.0.4"), (status = 404, body = crate::http::problem::Problem)))]
#[get("/metrics")]
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let m = &state.settings.metrics;
    if !m.enabled {
        return Err(ApiError::not_found());
    }
    let loopback = real_client_is_loopback(&req, &state);
    if !loopback {
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if m.loopback_only {
            return Err(ApiError::not_found());
        }
        if let Some(t) = &m.token {
            if !presented.is_some_and(|p| ct_eq(t.as_bytes(), p.as_bytes())) {
                return Err(ApiError::not_found());
            }
        }
    }
    state
        .metrics
        .open_stores
        .set(state.tenants.open_count() as i64);
    state
        .metrics
        .busy_stores
        .set(state.tenants.busy_count() as i64);
    let (wal, free) = platform::storage_gauges(&state);
    state.metrics.wal_bytes.reset();
    for (store, bytes) in wal {
        state
            .metrics
            .wal_bytes
            .with_label_values(&[store.as_str()])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    state
        .metrics
        .data_dir_free_bytes
        .set(i64::try_from(free).unwrap_or(i64::MAX));
    let st = state.clone().into_inner();
    let queued = web::block(move || crate::service::runner::queued_per_app_blocking(&st))
        .await
        .map_err(ApiError::internal)?;
    state.metrics.runs_queued.reset();
    for (t, app, n) in queued {
        state
            .metrics
            .runs_queued
            .with_label_values(&[t.as_str(), app.as_str()])
            .set(n);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}

/// The OpenAPI document rendered once at start-up.
pub struct OpenApiJson(pub String);

/// This API's OpenAPI 3.1 document, generated from the registered routes.
#[utoipa::path(tag = "operations", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
#[get("/openapi.json")]
pub async fn openapi(doc: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}
