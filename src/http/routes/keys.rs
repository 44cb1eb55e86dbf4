//! `GET /api/v1/keys` and `POST /api/v1/keys/rotate` (Owner): the tenant's versioned key sets
//! and rotating them now. See `service::keys` for the rotation steps.

use actix_web::{get, post, web, HttpResponse};

use crate::error::ApiError;
use crate::http::extract::{perm, Require};
use crate::service::keys::{self as svc, KeyStatus, Rotated};
use crate::service::AppState;

/// The tenant's key sets: versions (state, created, retired), the active and any pending
/// version, and when the next automatic rotation is due (`keys.rotation_days`).
#[utoipa::path(tag = "keys", responses((status = 200, body = KeyStatus)), security(("session" = [])))]
#[get("/keys")]
pub async fn status(
    state: web::Data<AppState>,
    g: Require<perm::KeyRead>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::status(&state.into_inner(), &g.ctx).await?))
}

/// Rotate the tenant's key set now (new version → re-seal secrets → SQLCipher rekey →
/// re-encrypt screenshots → retire the old version), or finish an interrupted rotation. Answers
/// when the rotation is complete; requests are served throughout. Any request body is ignored.
/// 409 `rotation_in_progress` while another rotation of the tenant runs.
#[utoipa::path(tag = "keys", responses((status = 200, body = Rotated), (status = 409, body = crate::http::problem::Problem)), security(("session" = [])))]
#[post("/keys/rotate")]
pub async fn rotate(
    state: web::Data<AppState>,
    g: Require<perm::KeyRotate>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc::rotate_now(&state.into_inner(), &g.ctx).await?))
}
