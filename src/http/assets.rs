//! The embedded dashboard (rust-embed over `assets/`): compiled in, no CDN, served with ETags.
//!
//! Caching scheme ("cache busting by query"): when a text asset (`.html`, `.js`, `.css`) is
//! served, every reference `/assets/<file>` to another embedded file is rewritten to
//! `/assets/<file>?v=<h>`, where `<h>` is the first 16 hex digits of the SHA-256 of that file's
//! bytes. A request whose `v` equals the file's current hash is answered with
//! `Cache-Control: public, max-age=31536000, immutable`; any other request for an asset (no or
//! stale `v`) with `no-cache`. `index.html` (also served for client routes such as `/runs/123`)
//! is always `no-cache`, so a new binary's references reach the browser at its next load.
//! Every answer carries a strong `ETag` (SHA-256 of the bytes sent) and `If-None-Match` gives 304.
//! Unknown files under `/assets/` are 404 problem+json, never `index.html`.

use std::collections::HashMap;
use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Files under `assets/`.
#[derive(RustEmbed)]
#[folder = "assets/"]
pub struct Assets;

/// `Cache-Control` of a request naming the current content hash.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One file as served: bytes (references rewritten), its ETag and its version tag.
struct Served {
    body: Vec<u8>,
    etag: String,
    version: String,
    mime: String,
}

fn is_text(path: &str) -> bool {
    path.ends_with(".html") || path.ends_with(".js") || path.ends_with(".css")
}

/// First 16 hex digits of SHA-256.
fn short_hash(bytes: &[u8]) -> String {
    let mut h = hex::encode(Sha256::digest(bytes));
    h.truncate(16);
    h
}

/// Rewrite `/assets/<name>` references (followed by a quote or `)`) to carry `?v=<hash>`.
fn rewrite(text: &str, versions: &HashMap<String, String>) -> String {
    const PREFIX: &str = "/assets/";
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(pos) = rest.find(PREFIX) {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        let tail = &after[PREFIX.len()..];
        let end = tail
            .find(['"', '\'', ')', '?', '#', ' ', '\n', '`'])
            .unwrap_or(tail.len());
        let name = &tail[..end];
        out.push_str(PREFIX);
        out.push_str(name);
        let already = tail[end..].starts_with('?');
        if let (Some(v), false) = (versions.get(name), already) {
            out.push_str("?v=");
            out.push_str(v);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Every embedded file, built once: raw hashes first (the version of a file is the hash of its
/// embedded bytes), then text files rewritten with those versions.
fn table() -> &'static HashMap<String, Served> {
    static TABLE: OnceLock<HashMap<String, Served>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut versions = HashMap::new();
        for name in Assets::iter() {
            if let Some(f) = Assets::get(&name) {
                versions.insert(name.to_string(), short_hash(&f.data));
            }
        }
        let mut out = HashMap::new();
        for name in Assets::iter() {
            let Some(f) = Assets::get(&name) else {
                continue;
            };
            let body = match (is_text(&name), std::str::from_utf8(&f.data)) {
                (true, Ok(text)) => rewrite(text, &versions).into_bytes(),
                _ => f.data.into_owned(),
            };
            let etag = format!("\"{}\"", hex::encode(Sha256::digest(&body)));
            let mime = mime_guess::from_path(name.as_ref())
                .first_or_octet_stream()
                .to_string();
            let version = versions.get(name.as_ref()).cloned().unwrap_or_default();
            out.insert(
                name.to_string(),
                Served {
                    body,
                    etag,
                    version,
                    mime,
                },
            );
        }
        out
    })
}

/// The version tag (`?v=`) the dashboard uses for `path`, if it is embedded.
pub fn version_of(path: &str) -> Option<&'static str> {
    table().get(path).map(|s| s.version.as_str())
}

fn respond(path: &str, req: Option<&HttpRequest>) -> Result<HttpResponse, ApiError> {
    let file = table().get(path).ok_or_else(ApiError::not_found)?;
    let immutable = path != "index.html"
        && req.is_some_and(|r| {
            web::Query::<HashMap<String, String>>::from_query(r.query_string())
                .ok()
                .and_then(|q| q.get("v").cloned())
                .is_some_and(|v| v == file.version)
        });
    let cache = if immutable { IMMUTABLE } else { "no-cache" };
    if let Some(req) = req {
        let matches = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == file.etag || t.trim() == "*")
            });
        if matches {
            return Ok(HttpResponse::NotModified()
                .insert_header((header::ETAG, file.etag.clone()))
                .insert_header((header::CACHE_CONTROL, cache))
                .finish());
        }
    }
    Ok(HttpResponse::Ok()
        .content_type(file.mime.as_str())
        .insert_header((header::ETAG, file.etag.clone()))
        .insert_header((header::CACHE_CONTROL, cache))
        .body(file.body.clone()))
}

/// `index.html` (no-cache), for `/` and client-side routes.
pub fn serve_index(req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    respond("index.html", Some(req))
}

async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = path.into_inner();
    if p == "index.html" {
        return Err(ApiError::not_found());
    }
    respond(&p, Some(&req))
}

async fn index(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    respond("index.html", Some(&req))
}

/// Routes `/` and `/assets/{path}` (kept out of the OpenAPI document).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/assets/{path:.*}", web::get().to(asset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_versions() {
        let mut v = HashMap::new();
        v.insert("app.js".to_string(), "abc".to_string());
        assert_eq!(
            rewrite(
                r#"<script src="/assets/app.js"></script><x href="/assets/none.css">"#,
                &v
            ),
            r#"<script src="/assets/app.js?v=abc"></script><x href="/assets/none.css">"#
        );
        assert_eq!(rewrite("/assets/app.js?v=1", &v), "/assets/app.js?v=1");
    }

    #[test]
    fn index_references_every_versioned_file() {
        let idx = table().get("index.html").map(|s| s.body.clone());
        let idx = String::from_utf8(idx.unwrap_or_default()).unwrap_or_default();
        assert!(idx.contains(&format!(
            "/assets/app.js?v={}",
            version_of("app.js").unwrap_or("?")
        )));
    }
}
