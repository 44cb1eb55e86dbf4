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
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;

use crate::crypto::{ct_eq, token};
use crate::domain::Permission;
use crate::error::{ApiError, ErrorCode};
use crate::service::principal::Authorization;
use crate::service::{auth, AppState, Caller, ClientInfo, Credentials, Principal, TenantCtx};

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

/// How much of a context a permission's routes get: [`TenantScope`] (the caller's tenant,
/// resolved once) or [`AnyScope`] (routes open to tenant members and PlatformAdmins alike).
pub trait Scope: 'static {
    /// What the guard hands the handler.
    type Ctx;
    /// Build the context of an authorised principal.
    fn ctx(p: Principal, client: ClientInfo) -> Result<Self::Ctx, ApiError>;
}

/// Tenant routes: the handler gets a [`TenantCtx`].
pub struct TenantScope;
impl Scope for TenantScope {
    type Ctx = TenantCtx;
    fn ctx(p: Principal, client: ClientInfo) -> Result<TenantCtx, ApiError> {
        TenantCtx::of(p, client)
    }
}

/// Routes open to more than one kind of principal: the handler gets a [`Caller`].
pub struct AnyScope;
impl Scope for AnyScope {
    type Ctx = Caller;
    fn ctx(principal: Principal, client: ClientInfo) -> Result<Caller, ApiError> {
        Ok(Caller { principal, client })
    }
}

/// Marker types naming permissions, one per [`Permission`] variant, each with its [`Scope`].
pub mod perm {
    use crate::domain::Permission;

    /// A type-level permission.
    pub trait PermMarker: 'static {
        /// The permission.
        const P: Permission;
        /// The context its routes get.
        type Scope: super::Scope;
    }

    macro_rules! perms {
        ($list:ident, $scope:ident: $($n:ident),* $(,)?) => {
            $(
                #[doc = concat!("Type-level `Permission::", stringify!($n), "`.")]
                pub struct $n;
                impl PermMarker for $n {
                    const P: Permission = Permission::$n;
                    type Scope = super::$scope;
                }
            )*
            #[doc = concat!("Every permission whose routes get the `", stringify!($scope), "` context.")]
            pub const $list: &[Permission] = &[$(Permission::$n),*];
        };
    }
    // Held only by tenant roles (checked by `tenant_permissions_are_never_platform_admins`).
    perms!(
        TENANT_SCOPED,
        TenantScope: ApplicationRead,
        ApplicationWrite,
        MemberRead,
        MemberWrite,
        AgentTokenManage,
        ScimTokenManage,
        AuditRead,
        AgentSelf,
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
        LicenseRead,
        AiEndpointManage,
        IntegrationManage,
        TicketFile,
    );
    perms!(
        ANY_SCOPED,
        AnyScope: SelfRead,
        SelfPassword,
        PlatformRead,
        PlatformWrite,
        NotificationRead,
        AuditKeyRead,
    );
}

/// The credentials the residency middleware parsed for this request.
fn credentials(req: &HttpRequest) -> Result<Credentials, ApiError> {
    req.extensions()
        .get::<Credentials>()
        .cloned()
        .ok_or_else(|| ApiError::internal("request credentials were not parsed"))
}

/// Authenticate the request: Bearer service token, else the session cookie.
pub async fn authenticate(
    req: &HttpRequest,
    state: &Arc<AppState>,
) -> Result<Option<Principal>, ApiError> {
    let creds = credentials(req)?;
    match &creds.authorization {
        Some(Authorization::Invalid) => Err(ApiError::unauthenticated()),
        Some(Authorization::Bearer(t)) => match auth::bearer_principal(state, t).await? {
            Some(p) => Ok(Some(p)),
            None => Err(ApiError::unauthenticated()),
        },
        None => match &creds.session {
            Some(t) => auth::session_principal(state, t).await,
            None => Ok(None),
        },
    }
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The context a guard for `P` hands its handler.
pub type Ctx<P> = <<P as perm::PermMarker>::Scope as Scope>::Ctx;

/// Guard: an authenticated principal holding `P`, as the context of `P`'s scope.
pub struct Require<P: perm::PermMarker> {
    /// The caller (a [`TenantCtx`] for tenant permissions, a [`Caller`] otherwise).
    pub ctx: Ctx<P>,
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
    // A one-time password must be replaced before anything else: only `/me` and logout
    // (`SelfRead`) and `/me/password` (`SelfPassword`) are open until then.
    if principal.must_change_password()
        && !matches!(P::P, Permission::SelfRead | Permission::SelfPassword)
    {
        return Err(ApiError::new(
            ErrorCode::PasswordChangeRequired,
            "change your one-time password first (POST /api/v1/me/password)",
        ));
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

/// [`check`], then the context of `P`'s scope.
pub async fn guard<P: perm::PermMarker>(req: &HttpRequest) -> Result<Ctx<P>, ApiError> {
    let principal = check::<P>(req).await?;
    let client = client_info(req, &*state(req)?);
    <P::Scope as Scope>::ctx(principal, client)
}

impl<P: perm::PermMarker> FromRequest for Require<P> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            Ok(Self {
                ctx: guard::<P>(&req).await?,
                _p: PhantomData,
            })
        })
    }
}

/// Guard plus an inner extractor (`web::Json<T>`, `web::Query<T>`) that runs only **after**
/// authentication and authorisation succeeded, so an anonymous or unauthorised caller never
/// gets body-validation feedback (actix polls sibling extractors concurrently).
pub struct Guarded<P: perm::PermMarker, T> {
    /// The caller (as in [`Require`]).
    pub ctx: Ctx<P>,
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
            let ctx = guard::<P>(&req).await?;
            let inner = T::from_request(&req, &mut payload)
                .await
                .map_err(Into::into)?;
            Ok(Self {
                ctx,
                inner,
                _p: PhantomData,
            })
        })
    }
}

/// Shortest multipart boundary accepted (RFC 2046 §5.1.1 allows 1–70 characters). Shorter ones
/// are refused before the body reaches `actix-multipart`: its 0.7.2 boundary search slices past
/// the end of a short line and panics on boundaries of 1–3 characters (found by the
/// `multipart_body` fuzz target, `tests/fuzz.rs`). Every boundary a browser, curl, reqwest or
/// our agent generates is far longer.
pub const MIN_MULTIPART_BOUNDARY: usize = 4;

/// Whether a request with these headers may be handed to the multipart parser: not multipart at
/// all, or a missing/unparsable boundary (the parser refuses those itself), or a boundary of at
/// least [`MIN_MULTIPART_BOUNDARY`] characters.
pub fn multipart_boundary_ok(headers: &actix_web::http::header::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let Ok(m) = ct.parse::<mime::Mime>() else {
        return true;
    };
    m.get_param(mime::BOUNDARY)
        .is_none_or(|b| b.as_str().chars().count() >= MIN_MULTIPART_BOUNDARY)
}

/// A `multipart/form-data` body whose boundary passed [`multipart_boundary_ok`]
/// (else 400 `invalid_multipart`, nothing read).
pub struct SafeMultipart(pub actix_multipart::Multipart);

impl FromRequest for SafeMultipart {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if !multipart_boundary_ok(req.headers()) {
            return Box::pin(async {
                Err(ApiError::new(
                    ErrorCode::InvalidMultipart,
                    format!(
                        "the multipart boundary is shorter than {MIN_MULTIPART_BOUNDARY} characters"
                    ),
                )
                .into())
            });
        }
        let fut = actix_multipart::Multipart::from_request(req, payload);
        Box::pin(async move { Ok(Self(fut.await?)) })
    }
}

#[cfg(test)]
mod tests {
    use super::perm::{ANY_SCOPED, TENANT_SCOPED};
    use crate::domain::Role;

    /// A tenant-scoped guard can always resolve the tenant: no permission of a tenant route is
    /// held by the one role without a tenant.
    #[test]
    fn tenant_permissions_are_never_platform_admins() {
        assert!(!TENANT_SCOPED.is_empty());
        for p in TENANT_SCOPED {
            assert!(!Role::PlatformAdmin.allows(*p), "{p:?}");
        }
        for p in ANY_SCOPED {
            assert!(!TENANT_SCOPED.contains(p), "{p:?} listed in both scopes");
        }
    }
}
