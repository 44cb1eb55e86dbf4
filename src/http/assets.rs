//! The embedded dashboard (rust-embed over `assets/`): compiled in, no CDN, served with ETags.
//! Unknown non-API GET paths fall back to `index.html` for client-side routes.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rust_embed::RustEmbed;

use crate::error::ApiError;

/// Files under `assets/`.
#[derive(RustEmbed)]
#[folder = "assets/"]
pub struct Assets;

fn respond(path: &str, req: Option<&HttpRequest>) -> Result<HttpResponse, ApiError> {
    let file = Assets::get(path).ok_or_else(ApiError::not_found)?;
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    if let Some(req) = req {
        if req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            == Some(etag.as_str())
        {
            return Ok(HttpResponse::NotModified()
                .insert_header((header::ETAG, etag))
                .finish());
        }
    }
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    Ok(HttpResponse::Ok()
        .content_type(mime.as_ref())
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(file.data.into_owned()))
}

/// `index.html`.
pub fn serve_index() -> Result<HttpResponse, ApiError> {
    respond("index.html", None)
}

async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    respond(&path.into_inner(), Some(&req))
}

async fn index(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    respond("index.html", Some(&req))
}

/// Routes `/` and `/assets/{path}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/assets/{path:.*}", web::get().to(asset));
}
