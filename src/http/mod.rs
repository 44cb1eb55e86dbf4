//! HTTP layer: the one app builder used by `serve` (and so by the tests), middleware, extractors
//! and routes. Handlers parse and map; rules live in `service`.

pub mod assets;
pub mod extract;
pub mod listener;
pub mod problem;
pub mod residency;
pub mod routes;
pub mod unread_body;
pub mod wire_errors;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{error, web, App, HttpRequest, HttpResponse};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

use crate::error::{ApiError, ErrorCode};
use crate::service::AppState;

/// Largest accepted request body (JSON), 1 MiB; larger → 413 `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// OpenAPI 3.1 document root; paths are collected from the registered services.
#[derive(OpenApi)]
#[openapi(
    info(title = "FlowGuard Appliance API", description = "Self-hosted FlowGuard: errors are application/problem+json (RFC 9457) with a stable `code`."),
    components(schemas(crate::http::problem::Problem)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;
impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(extract::SESSION_COOKIE))),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn json_error(err: error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let e = match &err {
        error::JsonPayloadError::Overflow { .. }
        | error::JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body exceeds 1 MiB")
        }
        error::JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ),
        error::JsonPayloadError::Deserialize(d) if d.is_data() => {
            // Type or missing-field errors: name the field when serde says which.
            let msg = d.to_string();
            let field = msg.split('`').nth(1).map(str::to_string);
            let mut e = ApiError::new(
                ErrorCode::ValidationFailed,
                format!(
                    "invalid request body: {}",
                    crate::domain::truncate(&msg, 200)
                ),
            );
            e.field = field;
            e
        }
        _ => ApiError::new(ErrorCode::MalformedJson, "request body is not valid JSON"),
    };
    e.into()
}

fn query_error(err: error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(
        ErrorCode::InvalidQuery,
        format!(
            "invalid query string: {}",
            crate::domain::truncate(&err.to_string(), 200)
        ),
    )
    .into()
}

fn path_error(_err: error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::not_found().into()
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = req.path();
    if p == routes::scim::PREFIX || p.starts_with("/scim/") {
        return Ok(routes::scim::fallback(&req));
    }
    if p.starts_with("/api/")
        || p.starts_with("/scim/")
        || req.method() != actix_web::http::Method::GET
    {
        return Err(ApiError::new(ErrorCode::NotFound, "no such route"));
    }
    assets::serve_index(&req)
}

/// Build the application: routes, OpenAPI, middleware and error mapping.
pub fn create_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let (app, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    let mut api = api;
    problem::document_errors(&mut api);
    let api_json = api.to_pretty_json().unwrap_or_default();
    let tls_on = state.settings.tls.mode == crate::config::TlsMode::On;
    let metrics = state.metrics.clone();
    let settings = state.settings.clone();
    app.app_data(state)
        .app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(json_error))
        .app_data(web::PayloadConfig::default().limit(MAX_BODY_BYTES))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::Data::new(routes::ops::OpenApiJson(api_json)))
        .configure(assets::configure)
        .default_service(web::to(not_found))
        // Residency runs inside the header/metrics wrapper (so a 421 gets the security headers
        // and is counted) and before routing, extractors and authentication.
        .wrap_fn(move |req, srv| {
            use futures_util::future::{ready, Either, FutureExt};
            // The credentials are parsed once, here, and handed to the guards.
            let creds = residency::credentials(req.request());
            // The request head's own limits first (414/431), then residency (421).
            let verdict = wire_errors::check_limits(req.request())
                .and_then(|()| residency::check_request(req.request(), &settings, &creds));
            match verdict {
                Ok(()) => Either::Left({
                    actix_web::HttpMessage::extensions_mut(&req).insert(creds);
                    actix_web::dev::Service::call(srv, req)
                        .map(|r| r.map(ServiceResponse::map_into_left_body))
                }),
                Err(e) => {
                    let res = req.into_response(actix_web::ResponseError::error_response(&e));
                    Either::Right(ready(Ok(res.map_into_right_body())))
                }
            }
        })
        .wrap_fn(move |req, srv| {
            let start = Instant::now();
            let method = req.method().to_string();
            let path = req.path().to_string();
            let fut = actix_web::dev::Service::call(srv, req);
            let metrics = metrics.clone();
            async move {
                let mut res = fut.await?;
                let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
                let status = res.status().as_u16().to_string();
                metrics.requests.with_label_values(&[&method, &route, &status]).inc();
                metrics.latency.with_label_values(&[&method, &route]).observe(start.elapsed().as_secs_f64());
                let h = res.headers_mut();
                if tls_on {
                    h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
                }
                // Also the mark `wire_errors::ProblemIo` tells the application's answers by.
                h.insert(wire_errors::APP_MARK, HeaderValue::from_static("nosniff"));
                h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
                h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                let api = path.starts_with("/api/") || path.starts_with("/scim/") || matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
                if api {
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                } else {
                    h.insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
                    );
                }
                Ok(res)
            }
        })
        .wrap(tracing_actix_web::TracingLogger::<RequestLog>::new())
        // Outermost: an HTTP/2 request body not read by an early answer (401, 403, 413, 415,
        // 421, ...) stays open until that answer has been sent (see `unread_body`).
        .wrap_fn(|mut req, srv| {
            use futures_util::FutureExt;
            let holder = unread_body::hold(&mut req);
            actix_web::dev::Service::call(srv, req)
                .map(move |r| r.map(|res| unread_body::answer(res, holder)))
        })
}

/// The request span builder: tracing-actix-web's default span, and one event per failed
/// request. Client errors (401 before sign-in, 404 for an unset configuration, a 422 on a form)
/// are expected and logged at debug; server errors at error. Both log the problem's code and
/// detail (the `Display` of [`ApiError`]), never a Rust debug dump.
pub struct RequestLog;

impl tracing_actix_web::RootSpanBuilder for RequestLog {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_start(request)
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        let failed = match outcome {
            Ok(res) => res
                .response()
                .error()
                .map(|e| (res.status(), e.to_string())),
            Err(e) => Some((e.as_response_error().status_code(), e.to_string())),
        };
        if let Some((status, msg)) = &failed {
            let _entered = span.enter();
            if status.is_server_error() {
                tracing::error!(status = status.as_u16(), "request failed: {msg}");
            } else {
                tracing::debug!(status = status.as_u16(), "request refused: {msg}");
            }
        }
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
