//! Extractors: the client's address ([`ClientInfo`]) and the permission guard [`Require<P>`]
//! (after meilisearch's `GuardedData<ActionPolicy<…>>`): a handler that takes `Require<P>`
//! cannot run without an authenticated principal whose role holds `P`.
//!
//! Outcomes: no or invalid credentials → 401 `unauthenticated`; role lacks the permission → 403
//! `forbidden`; cookie-authenticated unsafe request without the session's `X-CSRF-Token` → 403
//! `csrf_failed`.

use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

use crate::crypto::{ct_eq, token};
use crate::domain::Permission;
use crate::error::{ApiError, ErrorCode};
use crate::service::{auth, AppState, ClientInfo, Principal};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "fg_session";
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// The shared state from app data.
pub fn state(req: &HttpRequest) -> Result<Arc<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|d| d.clone().into_inner())
        .ok_or_else(|| ApiError::internal("app state missing"))
}

/// Client IP: the peer, or — when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_info(req: &HttpRequest, state: &AppState) -> ClientInfo {
    let peer = req.peer_addr().map(|a| a.ip());
    let trusted = |ip: &IpAddr| {
        state
            .settings
            .trusted_proxies
            .iter()
            .any(|n| n.contains(ip))
    };
    let mut ip = peer;
    if let Some(p) = peer {
        if trusted(&p) {
            if let Some(xff) = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                for hop in xff.split(',').rev() {
                    match hop.trim().parse::<IpAddr>() {
                        Ok(h) if trusted(&h) => continue,
                        Ok(h) => {
                            ip = Some(h);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
    }
    let user_agent = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect());
    ClientInfo {
        ip: ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "unknown".into()),
        user_agent,
    }
}

impl FromRequest for ClientInfo {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(state(req).map(|s| client_info(req, &s)))
    }
}

/// Marker types naming permissions, one per [`Permission`] variant.
pub mod perm {
    use crate::domain::Permission;

    /// A type-level permission.
    pub trait PermMarker: 'static {
        /// The permission.
        const P: Permission;
    }

    macro_rules! perms {
        ($($n:ident),* $(,)?) => {$(
            #[doc = concat!("Type-level `Permission::", stringify!($n), "`.")]
            pub struct $n;
            impl PermMarker for $n { const P: Permission = Permission::$n; }
        )*};
    }
    perms!(
        SelfRead,
        SelfPassword,
        ApplicationRead,
        ApplicationWrite,
        MemberRead,
        MemberWrite,
        AgentTokenManage,
        ScimTokenManage,
        AuditRead,
        AgentSelf,
        PlatformRead,
        FlowRead,
        FlowWrite,
        RunRead,
        RunTrigger,
        VariableRead,
        VariableWrite,
        WebhookManage,
        AgentRun,
        ScimUsers,
        ScimDiscovery,
        SsoManage,
        KeyRead,
        KeyRotate,
        PlatformWrite,
        LicenseRead,
        NotificationRead,
        AuditKeyRead,
        AiEndpointManage,
    );
}

/// Authenticate the request: Bearer service token, else the session cookie.
pub async fn authenticate(
    req: &HttpRequest,
    state: &Arc<AppState>,
) -> Result<Option<Principal>, ApiError> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let v = h.to_str().map_err(|_| ApiError::unauthenticated())?;
        let bearer = v
            .strip_prefix("Bearer ")
            .ok_or_else(ApiError::unauthenticated)?;
        return match auth::bearer_principal(state, bearer.trim()).await? {
            Some(p) => Ok(Some(p)),
            None => Err(ApiError::unauthenticated()),
        };
    }
    match req.cookie(SESSION_COOKIE) {
        Some(c) => auth::session_principal(state, c.value()).await,
        None => Ok(None),
    }
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Guard: an authenticated principal holding `P`.
pub struct Require<P: perm::PermMarker> {
    /// The caller.
    pub principal: Principal,
    _p: PhantomData<P>,
}

impl<P: perm::PermMarker> Require<P> {
    /// The permission this guard checks.
    pub fn permission() -> Permission {
        P::P
    }
}

/// Authenticate and authorise the request for `P` (the body of every guard).
pub async fn check<P: perm::PermMarker>(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = state(req)?;
    let principal = authenticate(req, &state)
        .await?
        .ok_or_else(ApiError::unauthenticated)?;
    if !principal.role().allows(P::P) {
        return Err(ApiError::forbidden());
    }
    if let Some(expected) = principal.csrf_hash() {
        if !is_safe(req.method()) {
            let presented = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if presented.is_empty()
                || !ct_eq(token::token_hash(presented).as_bytes(), expected.as_bytes())
            {
                return Err(ApiError::new(
                    ErrorCode::CsrfFailed,
                    "missing or wrong X-CSRF-Token",
                ));
            }
        }
    }
    Ok(principal)
}

impl<P: perm::PermMarker> FromRequest for Require<P> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            Ok(Self {
                principal: check::<P>(&req).await?,
                _p: PhantomData,
            })
        })
    }
}

/// Guard plus an inner extractor (`web::Json<T>`, `web::Query<T>`) that runs only **after**
/// authentication and authorisation succeeded, so an anonymous or unauthorised caller never
/// gets body-validation feedback (actix polls sibling extractors concurrently).
pub struct Guarded<P: perm::PermMarker, T> {
    /// The caller.
    pub principal: Principal,
    /// The inner extractor's value.
    pub inner: T,
    _p: PhantomData<P>,
}

impl<P: perm::PermMarker, T: FromRequest + 'static> FromRequest for Guarded<P, T>
where
    T::Error: Into<actix_web::Error>,
{
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let principal = check::<P>(&req).await?;
            let inner = T::from_request(&req, &mut payload)
                .await
                .map_err(Into::into)?;
            Ok(Self {
                principal,
                inner,
                _p: PhantomData,
            })
        })
    }
}
