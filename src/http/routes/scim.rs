//! `/scim/v2`: SCIM 2.0 (RFC 7644) for identity providers (Entra ID, Okta, …), authenticated by
//! a SCIM token (`Authorization: Bearer fgs_<tenant>_…`).
//!
//! - `GET/POST /Users`, `GET/PUT/PATCH/DELETE /Users/{id}`, `POST /Users/.search`, `POST /.search`
//!   need [`perm::ScimUsers`]; `GET /ServiceProviderConfig`, `/Schemas[/{id}]`,
//!   `/ResourceTypes[/{id}]` need [`perm::ScimDiscovery`]. Both belong to the Scim role only.
//! - Requests may be `application/scim+json` or `application/json` (anything else: 415);
//!   responses are `application/scim+json`, or `application/json` for a client whose `Accept`
//!   names JSON but not SCIM JSON (RFC 7644 §3.1, §8.1).
//! - Every error — including 401/403 from the guard and 404/405 for unknown routes and methods —
//!   is the SCIM error schema (§3.12) with `status` as a string.
//! - `meta.version` is the `ETag`; `If-Match` on PUT/PATCH/DELETE (412 on mismatch) and
//!   `If-None-Match` on GET (304) follow RFC 7644 §3.14.
//!
//! Handlers parse and map; rules live in `service::scim`.

use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{
    delete, get, patch, post, put, web, FromRequest, HttpRequest, HttpResponse, ResponseError,
};
use futures_util::future::LocalBoxFuture;
use scim_v2::models::resource_types::{ResourceType, SchemaExtension};
use scim_v2::models::scim_schema::Meta;
use scim_v2::models::service_provider_config::{
    AuthenticationScheme, Bulk, Filter as FilterSupport, ServiceProviderConfig, Supported,
};
use scim_v2::Asserted;
use serde_json::{json, Map, Value};

use crate::domain::scim::resource::{etag, parse_selection, Selected};
use crate::domain::scim::schema::schemas;
use crate::domain::scim::{ScimError, ENTERPRISE_USER, ERROR, LIST_RESPONSE, SEARCH_REQUEST, USER};
use crate::error::ApiError;
use crate::http::extract::{self, perm};
use crate::service::scim::{self as svc, IfMatch, Page, Query, Rendered};
use crate::service::AppState;

/// `application/scim+json` (RFC 7644 §8.1).
pub const SCIM_JSON: &str = "application/scim+json";
/// Mount point of the SCIM service.
pub const PREFIX: &str = "/scim/v2";

impl ResponseError for ScimError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status_code());
        b.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON)));
        if let Some(s) = self.retry_after {
            b.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.status == 401 {
            b.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            ));
        }
        let mut body = json!({
            "schemas": [ERROR],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = Value::String(t.as_str().into());
        }
        b.body(body.to_string())
    }
}

/// A guard failure (401/403/503 …) in the SCIM error format.
fn from_api(e: ApiError) -> ScimError {
    ScimError {
        status: crate::http::problem::status_of(&e).as_u16(),
        scim_type: None,
        detail: e.detail,
        retry_after: e.retry_after,
    }
}

/// `https://<Host>/scim/v2`: the base of `meta.location` and `$ref` values. The scheme is the
/// listener's (`http` with `tls.mode = "off"`, unless a trusted proxy says `X-Forwarded-Proto:
/// https`); the host is the request's `Host` (or HTTP/2 `:authority`) when it is a plain host name.
fn base_url(req: &HttpRequest, state: &AppState) -> String {
    let tls_on = state.settings.tls.mode == crate::config::TlsMode::On;
    let trusted_peer = req.peer_addr().is_some_and(|a| {
        state
            .settings
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&a.ip()))
    });
    let forwarded_https = trusted_peer
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let scheme = if tls_on || forwarded_https {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or_else(|| req.app_config().local_addr().to_string());
    format!("{scheme}://{host}{PREFIX}")
}

/// The caller of a SCIM route, authorised for `P`, with the response base URL.
pub struct ScimCall<P: perm::PermMarker> {
    /// The SCIM token's context.
    pub ctx: extract::Ctx<P>,
    /// `https://<host>/scim/v2`.
    pub base: String,
    _p: PhantomData<P>,
}

async fn call<P: perm::PermMarker>(req: &HttpRequest) -> Result<ScimCall<P>, ScimError> {
    let ctx = extract::guard::<P>(req).await.map_err(from_api)?;
    let state = extract::state(req).map_err(from_api)?;
    Ok(ScimCall {
        ctx,
        base: base_url(req, &state),
        _p: PhantomData,
    })
}

impl<P: perm::PermMarker> FromRequest for ScimCall<P> {
    type Error = ScimError;
    type Future = LocalBoxFuture<'static, Result<Self, ScimError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { call::<P>(&req).await })
    }
}

/// [`ScimCall`] plus the JSON body, read only **after** authorisation (so an anonymous caller
/// learns nothing from body checks). Content types: `application/scim+json`,
/// `application/json` or none; others → 415. Over 1 MiB → 413; not JSON → 400 `invalidSyntax`.
pub struct ScimBody<P: perm::PermMarker> {
    /// The authorised caller.
    pub call: ScimCall<P>,
    /// The parsed body.
    pub body: Value,
}

impl<P: perm::PermMarker> FromRequest for ScimBody<P> {
    type Error = ScimError;
    type Future = LocalBoxFuture<'static, Result<Self, ScimError>>;
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let c = call::<P>(&req).await?;
            if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
                let essence = ct
                    .to_str()
                    .unwrap_or("")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if essence != SCIM_JSON && essence != "application/json" {
                    return Err(ScimError::new(
                        415,
                        "send application/scim+json (or application/json)",
                    ));
                }
            }
            let bytes = web::Bytes::from_request(&req, &mut payload)
                .await
                .map_err(|e| {
                    if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                        ScimError::new(413, "request body exceeds 1 MiB")
                    } else {
                        ScimError::invalid_syntax("the request body could not be read")
                    }
                })?;
            let body: Value = serde_json::from_slice(&bytes)
                .map_err(|_| ScimError::invalid_syntax("the request body is not valid JSON"))?;
            Ok(Self { call: c, body })
        })
    }
}

/// The media type to answer with: SCIM JSON unless `Accept` names JSON and not SCIM JSON.
fn media(req: &HttpRequest) -> &'static str {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if accept.contains("application/json") && !accept.contains(SCIM_JSON) && !accept.contains("*/*")
    {
        "application/json"
    } else {
        SCIM_JSON
    }
}

fn respond(req: &HttpRequest, status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, media(req)))
        .body(body.to_string())
}

fn respond_resource(
    req: &HttpRequest,
    status: StatusCode,
    r: &Rendered,
    doc: Map<String, Value>,
) -> HttpResponse {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::CONTENT_TYPE, media(req)))
        .insert_header((header::ETAG, etag(r.version)));
    if status == StatusCode::CREATED {
        if let Some(loc) = r
            .doc
            .get("meta")
            .and_then(|m| m.get("location"))
            .and_then(Value::as_str)
        {
            b.insert_header((header::LOCATION, loc.to_string()));
        }
    }
    b.body(Value::Object(doc).to_string())
}

fn list_response(total: usize, start: usize, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ScimError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ScimError::invalid_value("the query string is malformed"))
}

fn int_param(name: &str, v: &str) -> Result<i64, ScimError> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| ScimError::invalid_value(format!("`{name}` must be an integer")))
}

fn selection(
    attributes: Vec<Selected>,
    excluded: Vec<Selected>,
) -> Result<(Vec<Selected>, Vec<Selected>), ScimError> {
    if !attributes.is_empty() && !excluded.is_empty() {
        return Err(ScimError::invalid_value(
            "`attributes` and `excludedAttributes` are mutually exclusive (RFC 7644 §3.9)",
        ));
    }
    Ok((attributes, excluded))
}

/// `attributes`/`excludedAttributes` from the query string (names matched without case).
fn query_selection(req: &HttpRequest) -> Result<(Vec<Selected>, Vec<Selected>), ScimError> {
    let mut inc = Vec::new();
    let mut exc = Vec::new();
    for (k, v) in query_pairs(req)? {
        if k.eq_ignore_ascii_case("attributes") {
            inc.extend(parse_selection(v.split(','))?);
        } else if k.eq_ignore_ascii_case("excludedAttributes") {
            exc.extend(parse_selection(v.split(','))?);
        }
    }
    selection(inc, exc)
}

/// `GET /Users` parameters (RFC 7644 §3.4.2): `filter`, `startIndex`, `count`, `attributes`,
/// `excludedAttributes`; names matched without regard to case. `sortBy`/`sortOrder` are
/// ignored (`sort.supported` is false): results come in creation order.
fn list_query(req: &HttpRequest) -> Result<Query, ScimError> {
    let mut q = Query::default();
    for (k, v) in query_pairs(req)? {
        match k.to_ascii_lowercase().as_str() {
            "filter" => q.filter = Some(v),
            "startindex" => q.start_index = Some(int_param("startIndex", &v)?),
            "count" => q.count = Some(int_param("count", &v)?),
            _ => {}
        }
    }
    let (a, e) = query_selection(req)?;
    q.attributes = a;
    q.excluded = e;
    Ok(q)
}

fn get_ci<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn names(v: Option<&Value>, field: &str) -> Result<Vec<Selected>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => parse_selection(s.split(',')),
        Some(Value::Array(a)) => {
            let mut items = Vec::new();
            for x in a {
                items.push(x.as_str().ok_or_else(|| {
                    ScimError::invalid_value(format!("`{field}` must list strings"))
                })?);
            }
            parse_selection(items)
        }
        Some(_) => Err(ScimError::invalid_value(format!(
            "`{field}` must list strings"
        ))),
    }
}

/// A SearchRequest body (RFC 7644 §3.4.3).
fn search_query(body: &Value) -> Result<Query, ScimError> {
    let o = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    let listed = get_ci(o, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .any(|s| s.eq_ignore_ascii_case(SEARCH_REQUEST))
        });
    if !listed {
        return Err(ScimError::invalid_syntax(format!(
            "`schemas` must list {SEARCH_REQUEST}"
        )));
    }
    let int = |key: &str| -> Result<Option<i64>, ScimError> {
        match get_ci(o, key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ScimError::invalid_value(format!("`{key}` must be an integer"))),
        }
    };
    let filter = match get_ci(o, "filter") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ScimError::invalid_filter("`filter` must be a string")),
    };
    let (attributes, excluded) = selection(
        names(get_ci(o, "attributes"), "attributes")?,
        names(get_ci(o, "excludedAttributes"), "excludedAttributes")?,
    )?;
    Ok(Query {
        filter,
        start_index: int("startIndex")?,
        count: int("count")?,
        attributes,
        excluded,
    })
}

fn if_match(req: &HttpRequest) -> Option<IfMatch> {
    req.headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(IfMatch::parse)
}

fn page_response(req: &HttpRequest, page: Page) -> HttpResponse {
    let resources = page.resources.into_iter().map(Value::Object).collect();
    respond(
        req,
        StatusCode::OK,
        &list_response(page.total_results, page.start_index, resources),
    )
}

/// List users (filter, paging; never 404 for no match).
#[utoipa::path(tag = "scim", responses((status = 200, description = "ListResponse (application/scim+json)"), (status = 400, description = "SCIM error, e.g. invalidFilter")), security(("bearer" = [])))]
#[get("/Users")]
pub async fn list_users(
    state: web::Data<AppState>,
    req: HttpRequest,
    g: ScimCall<perm::ScimUsers>,
) -> Result<HttpResponse, ScimError> {
    let q = list_query(&req)?;
    let page = svc::list(&state.into_inner(), &g.ctx, q, &g.base).await?;
    Ok(page_response(&req, page))
}

/// Search users with a SearchRequest body.
#[utoipa::path(tag = "scim", responses((status = 200, description = "ListResponse")), security(("bearer" = [])))]
#[post("/Users/.search")]
pub async fn search_users(
    state: web::Data<AppState>,
    req: HttpRequest,
    g: ScimBody<perm::ScimUsers>,
) -> Result<HttpResponse, ScimError> {
    let q = search_query(&g.body)?;
    let page = svc::list(&state.into_inner(), &g.call.ctx, q, &g.call.base).await?;
    Ok(page_response(&req, page))
}

/// Search from the service root (Users are the only resource type).
#[utoipa::path(tag = "scim", responses((status = 200, description = "ListResponse")), security(("bearer" = [])))]
#[post("/.search")]
pub async fn search_root(
    state: web::Data<AppState>,
    req: HttpRequest,
    g: ScimBody<perm::ScimUsers>,
) -> Result<HttpResponse, ScimError> {
    let q = search_query(&g.body)?;
    let page = svc::list(&state.into_inner(), &g.call.ctx, q, &g.call.base).await?;
    Ok(page_response(&req, page))
}

/// Create a user (role Viewer).
#[utoipa::path(tag = "scim", responses((status = 201, description = "User (application/scim+json)"), (status = 409, description = "uniqueness")), security(("bearer" = [])))]
#[post("/Users")]
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    g: ScimBody<perm::ScimUsers>,
) -> Result<HttpResponse, ScimError> {
    let (inc, exc) = query_selection(&req)?;
    let r = svc::create(&state.into_inner(), &g.call.ctx, &g.body, &g.call.base).await?;
    let doc = crate::domain::scim::resource::project(r.doc.clone(), &inc, &exc);
    Ok(respond_resource(&req, StatusCode::CREATED, &r, doc))
}

/// Read a user (`If-None-Match` → 304).
#[utoipa::path(tag = "scim", params(("id" = String, Path)), responses((status = 200, description = "User"), (status = 404, description = "SCIM error")), security(("bearer" = [])))]
#[get("/Users/{id}")]
pub async fn get_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    g: ScimCall<perm::ScimUsers>,
    id: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    let (inc, exc) = query_selection(&req)?;
    let r = svc::get(&state.into_inner(), &g.ctx, &id, &g.base).await?;
    let current = etag(r.version);
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(IfMatch::parse)
        .is_some_and(|m| m.allows(r.version));
    if not_modified {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, current))
            .finish());
    }
    let doc = crate::domain::scim::resource::project(r.doc.clone(), &inc, &exc);
    Ok(respond_resource(&req, StatusCode::OK, &r, doc))
}

/// Replace a user.
#[utoipa::path(tag = "scim", params(("id" = String, Path)), responses((status = 200, description = "User"), (status = 412, description = "If-Match mismatch")), security(("bearer" = [])))]
#[put("/Users/{id}")]
pub async fn replace_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    g: ScimBody<perm::ScimUsers>,
) -> Result<HttpResponse, ScimError> {
    let (inc, exc) = query_selection(&req)?;
    let im = if_match(&req);
    let r = svc::replace(
        &state.into_inner(),
        &g.call.ctx,
        &id,
        &g.body,
        im.as_ref(),
        &g.call.base,
    )
    .await?;
    let doc = crate::domain::scim::resource::project(r.doc.clone(), &inc, &exc);
    Ok(respond_resource(&req, StatusCode::OK, &r, doc))
}

/// Modify a user with a PatchOp.
#[utoipa::path(tag = "scim", params(("id" = String, Path)), responses((status = 200, description = "User"), (status = 400, description = "invalidSyntax, invalidValue, invalidPath, noTarget, mutability")), security(("bearer" = [])))]
#[patch("/Users/{id}")]
pub async fn patch_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    g: ScimBody<perm::ScimUsers>,
) -> Result<HttpResponse, ScimError> {
    let (inc, exc) = query_selection(&req)?;
    let im = if_match(&req);
    let r = svc::modify(
        &state.into_inner(),
        &g.call.ctx,
        &id,
        &g.body,
        im.as_ref(),
        &g.call.base,
    )
    .await?;
    let doc = crate::domain::scim::resource::project(r.doc.clone(), &inc, &exc);
    Ok(respond_resource(&req, StatusCode::OK, &r, doc))
}

/// Delete a user; their sessions end.
#[utoipa::path(tag = "scim", params(("id" = String, Path)), responses((status = 204), (status = 404, description = "SCIM error")), security(("bearer" = [])))]
#[delete("/Users/{id}")]
pub async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    g: ScimCall<perm::ScimUsers>,
    id: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    let im = if_match(&req);
    svc::delete(&state.into_inner(), &g.ctx, &id, im.as_ref()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// RFC 7644 §4: discovery endpoints answer a `filter` with 403.
fn no_filter(req: &HttpRequest) -> Result<(), ScimError> {
    if query_pairs(req)?
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("filter"))
    {
        return Err(ScimError::new(
            403,
            "filtering is not supported on discovery endpoints (RFC 7644 §4)",
        ));
    }
    Ok(())
}

fn meta(resource_type: &str, location: String) -> Meta {
    Meta {
        resource_type: Some(resource_type.into()),
        location: Some(location),
        ..Default::default()
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ScimError> {
    serde_json::to_value(v).map_err(|e| {
        tracing::error!(error = %e, "SCIM discovery document");
        ScimError::internal()
    })
}

/// What this server supports (RFC 7643 §5).
#[utoipa::path(tag = "scim", responses((status = 200, description = "ServiceProviderConfig")), security(("bearer" = [])))]
#[get("/ServiceProviderConfig")]
pub async fn service_provider_config(
    req: HttpRequest,
    g: ScimCall<perm::ScimDiscovery>,
) -> Result<HttpResponse, ScimError> {
    let spc = ServiceProviderConfig {
        schemas: vec![scim_v2::schema_urns::SERVICE_PROVIDER_CONFIG.to_string()],
        documentation_uri: None,
        patch: Supported { supported: true },
        bulk: Bulk {
            supported: false,
            max_operations: 0,
            max_payload_size: 0,
        },
        filter: FilterSupport {
            supported: true,
            max_results: svc::MAX_RESULTS as i64,
        },
        change_password: Supported { supported: false },
        sort: Supported { supported: false },
        etag: Supported { supported: true },
        authentication_schemes: vec![AuthenticationScheme {
            name: "OAuth Bearer Token".into(),
            r#type: Some("oauthbearertoken".into()),
            description: "A FlowGuard SCIM token (fgs_<tenant>_…) created by a tenant Owner, sent as `Authorization: Bearer`.".into(),
            spec_uri: Some("https://www.rfc-editor.org/info/rfc6750".into()),
            documentation_uri: None,
            primary: Some(true),
        }],
        meta: Some(meta("ServiceProviderConfig", format!("{}/ServiceProviderConfig", g.base))),
    };
    Ok(respond(&req, StatusCode::OK, &to_value(&spc)?))
}

fn schema_docs(base: &str) -> Result<Vec<Value>, ScimError> {
    let set = schemas()?;
    Ok(set
        .served
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let id = s
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            s["meta"] =
                json!({"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")});
            s
        })
        .collect())
}

/// Every served schema (User, Enterprise User, and the RFC 7643 §8.7.2 meta-schemas).
#[utoipa::path(tag = "scim", responses((status = 200, description = "ListResponse of Schema")), security(("bearer" = [])))]
#[get("/Schemas")]
pub async fn list_schemas(
    req: HttpRequest,
    g: ScimCall<perm::ScimDiscovery>,
) -> Result<HttpResponse, ScimError> {
    no_filter(&req)?;
    let docs = schema_docs(&g.base)?;
    Ok(respond(
        &req,
        StatusCode::OK,
        &list_response(docs.len(), 1, docs),
    ))
}

/// One schema by its URN.
#[utoipa::path(tag = "scim", params(("id" = String, Path)), responses((status = 200, description = "Schema"), (status = 404, description = "SCIM error")), security(("bearer" = [])))]
#[get("/Schemas/{id}")]
pub async fn get_schema(
    req: HttpRequest,
    g: ScimCall<perm::ScimDiscovery>,
    id: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    let doc = schema_docs(&g.base)?
        .into_iter()
        .find(|s| {
            s.get("id")
                .and_then(Value::as_str)
                .is_some_and(|x| x.eq_ignore_ascii_case(&id))
        })
        .ok_or_else(|| ScimError::not_found("no such schema"))?;
    Ok(respond(&req, StatusCode::OK, &doc))
}

fn user_resource_type(base: &str) -> ResourceType {
    ResourceType {
        schemas: vec![scim_v2::schema_urns::RESOURCE_TYPE.to_string()],
        id: Some("User".into()),
        name: "User".into(),
        description: Some("User Account".into()),
        endpoint: "/Users".into(),
        schema: USER.into(),
        schema_extensions: Asserted::set(vec![SchemaExtension {
            schema: ENTERPRISE_USER.into(),
            required: false,
        }]),
        meta: Some(meta("ResourceType", format!("{base}/ResourceTypes/User"))),
    }
}

/// The resource types served (User).
#[utoipa::path(tag = "scim", responses((status = 200, description = "ListResponse of ResourceType")), security(("bearer" = [])))]
#[get("/ResourceTypes")]
pub async fn list_resource_types(
    req: HttpRequest,
    g: ScimCall<perm::ScimDiscovery>,
) -> Result<HttpResponse, ScimError> {
    no_filter(&req)?;
    let docs = vec![to_value(&user_resource_type(&g.base))?];
    Ok(respond(&req, StatusCode::OK, &list_response(1, 1, docs)))
}

/// One resource type by id (`User`).
#[utoipa::path(tag = "scim", params(("id" = String, Path)), responses((status = 200, description = "ResourceType"), (status = 404, description = "SCIM error")), security(("bearer" = [])))]
#[get("/ResourceTypes/{id}")]
pub async fn get_resource_type(
    req: HttpRequest,
    g: ScimCall<perm::ScimDiscovery>,
    id: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    if !id.eq_ignore_ascii_case("User") {
        return Err(ScimError::not_found("no such resource type"));
    }
    Ok(respond(
        &req,
        StatusCode::OK,
        &to_value(&user_resource_type(&g.base))?,
    ))
}

/// Unmatched `/scim/…` requests: 405 (with `Allow`) for a known endpoint and another method,
/// else 404 — both in the SCIM error format.
pub fn fallback(req: &HttpRequest) -> HttpResponse {
    let rest = req.path().strip_prefix(PREFIX).unwrap_or("");
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let allow = match segs.as_slice() {
        ["ServiceProviderConfig"]
        | ["Schemas"]
        | ["Schemas", _]
        | ["ResourceTypes"]
        | ["ResourceTypes", _] => Some("GET"),
        ["Users"] => Some("GET, POST"),
        ["Users", ".search"] | [".search"] => Some("POST"),
        ["Users", id] if !id.is_empty() => Some("GET, PUT, PATCH, DELETE"),
        _ => None,
    };
    match allow {
        Some(a) if rest.starts_with('/') => {
            let mut r =
                ScimError::new(405, format!("method not allowed here; use {a}")).error_response();
            if let Ok(v) = HeaderValue::from_str(a) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            r
        }
        _ => ScimError::not_found("no such SCIM endpoint").error_response(),
    }
}
