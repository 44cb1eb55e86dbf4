//! The AI endpoint a tenant's checkpoints are judged by: the deployment default (`[ai.endpoint]`
//! in the config file) unless the tenant's Owner set its own (`PUT /api/v1/ai-endpoint`). There
//! is no built-in default and no fallback: with neither, checkpoints stay `not_evaluated`; when
//! the chosen endpoint fails, the step is `error`.
//!
//! The tenant's API key is envelope-encrypted under the tenant DEK through [`super::sealing`]
//! (column [`sealing::AI_API_KEY`]: AES-256-GCM, AAD = tenant, `ai_endpoint`, `1`, `api_key`;
//! the write is fence-checked against a concurrent key rotation), never returned, logged or
//! audited. A tenant endpoint must lie
//! within the operator's `egress.allow` (checked on save, 422 `egress_denied` naming the host, and
//! again on every connection by [`crate::net::egress`]). AI-cost calls (checkpoint evaluations
//! and endpoint tests) pass a per-tenant token bucket (`ai.rate_per_minute`, `ai.burst`); beyond
//! it the caller gets 429 `rate_limited` with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::sealing::{self, Plain};
use super::{AppState, TenantCtx};
use crate::audit::NewAuditEvent;
use crate::config::AiSettings;
use crate::domain::{now_rfc3339, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::net::ai_client::{self, CallReport, Endpoint, EndpointInput, Verdict};
use crate::store::ai::{self as store, AiEndpointRow};
use crate::store::{StoreError, StoreResult};

/// Per-tenant token bucket on AI-cost calls (GCRA via `governor`), in memory per process.
pub struct AiLimiter {
    inner:
        RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>,
    clock: DefaultClock,
}

impl AiLimiter {
    /// A bucket of `burst` calls refilled at `rate_per_minute` (both clamped to ≥ 1).
    pub fn new(s: &AiSettings) -> Self {
        let rate = NonZeroU32::new(s.rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(s.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Take one call for `tenant`; when the bucket is empty, the whole seconds until the next
    /// call is allowed (≥ 1).
    pub fn take(&self, tenant: &TenantId) -> Result<(), u64> {
        self.inner
            .check_key(&tenant.as_str().to_string())
            .map_err(|nu| {
                let d = nu.wait_time_from(self.clock.now());
                d.as_secs() + u64::from(d.subsec_nanos() > 0)
            })
            .map_err(|s| s.max(1))
    }
}

/// Take one AI-cost call from the tenant's bucket, or 429 `rate_limited` with `Retry-After`.
pub fn take_call(state: &AppState, t: &TenantId) -> ApiResult<()> {
    state.ai_limiter.take(t).map_err(|secs| {
        let mut e = ApiError::new(
            ErrorCode::RateLimited,
            "too many AI calls for this tenant; retry later",
        );
        e.retry_after = Some(secs);
        e
    })
}

/// Where the effective endpoint comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The tenant's own endpoint.
    Tenant,
    /// The deployment default from the config file.
    Deployment,
    /// None configured: checkpoints are `not_evaluated`.
    None,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Tenant => "tenant",
            Source::Deployment => "deployment",
            Source::None => "none",
        }
    }
}

fn row_endpoint(state: &AppState, t: &TenantId, r: &AiEndpointRow) -> StoreResult<Endpoint> {
    let key = match &r.api_key {
        Some(ct) => {
            let pt = sealing::open(state, t, &sealing::AI_API_KEY, &[], ct)?;
            Some(Zeroizing::new(String::from_utf8_lossy(&pt).into_owned()))
        }
        None => None,
    };
    Endpoint::parse(EndpointInput {
        kind: &r.kind,
        base_url: &r.base_url,
        model: &r.model,
        api_key: key.as_ref().map(|k| k.as_str()),
        ca_pem: r.ca_pem.as_deref(),
        timeout_ms: u64::try_from(r.timeout_ms).ok(),
        max_tokens: u32::try_from(r.max_tokens).ok(),
    })
    .map_err(|e| StoreError::Migration(format!("stored AI endpoint invalid: {}", e.field)))
}

/// The endpoint that judges `t`'s checkpoints (key decrypted), and where it comes from; `None`
/// when neither the tenant nor the deployment configured one (blocking). The row is read again
/// when a key rotation retired its DEK between the read and the key lookup.
pub fn effective_blocking(
    state: &AppState,
    t: &TenantId,
) -> StoreResult<Option<(Source, Endpoint)>> {
    let tenant = sealing::reread(|| {
        let db = state.tenants.get_blocking(t)?;
        let row = {
            let c = db.lock();
            store::ai_endpoint(&c)?
        };
        row.map(|r| row_endpoint(state, t, &r)).transpose()
    })?;
    if let Some(e) = tenant {
        return Ok(Some((Source::Tenant, e)));
    }
    Ok(state
        .settings
        .ai
        .endpoint
        .as_ref()
        .and_then(|e| e.endpoint().ok())
        .map(|e| (Source::Deployment, e)))
}

/// Whether `t` has an endpoint (its own or the deployment's), without decrypting anything.
pub fn configured(c: &crate::store::Conn, state: &AppState) -> StoreResult<bool> {
    Ok(state.settings.ai.endpoint.is_some() || store::ai_endpoint(c)?.is_some())
}

/// The effective endpoint as the API shows it (never the key).
#[derive(Debug, Serialize, ToSchema)]
pub struct AiEndpointView {
    /// `tenant`, `deployment` or `none` (then every other field is absent).
    pub source: Source,
    /// `openai-chat` or `anthropic-messages`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether an API key is stored (the key itself is never returned).
    pub api_key_set: bool,
    /// Whether a CA bundle is set.
    pub ca_pem_set: bool,
    /// Timeout per call (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Max tokens per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Last change of the tenant's endpoint (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Who changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

fn view_of(source: Source, e: Option<&Endpoint>, row: Option<&AiEndpointRow>) -> AiEndpointView {
    AiEndpointView {
        source,
        kind: e.map(|e| e.kind.as_str().to_string()),
        base_url: e.map(|e| e.base_url.to_string()),
        model: e.map(|e| e.model.clone()),
        api_key_set: e.is_some_and(|e| e.api_key.is_some()),
        ca_pem_set: e.is_some_and(|e| e.ca_pem.is_some()),
        timeout_ms: e.map(|e| e.timeout_ms),
        max_tokens: e.map(|e| e.max_tokens),
        updated_at: row.map(|r| r.updated_at.clone()),
        updated_by: row.map(|r| r.updated_by.clone()),
    }
}

/// The effective endpoint of the caller's tenant.
pub async fn get(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<AiEndpointView> {
    let t = ctx.tenant.clone();
    let st = state.clone();
    tokio::task::spawn_blocking(move || -> ApiResult<AiEndpointView> {
        let db = st.tenants.get_blocking(&t)?;
        let row = {
            let c = db.lock();
            store::ai_endpoint(&c)?
        };
        Ok(match effective_blocking(&st, &t)? {
            Some((src, e)) => view_of(src, Some(&e), row.as_ref()),
            None => view_of(Source::None, None, None),
        })
    })
    .await
    .map_err(ApiError::internal)?
}

/// `PUT /api/v1/ai-endpoint` body; a full replacement (an omitted `api_key` means the endpoint
/// needs none; the stored key is replaced, never kept).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiEndpointBody {
    /// `openai-chat` or `anthropic-messages`.
    pub kind: String,
    /// `https://` base URL, e.g. `https://llm.corp.example/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// API key (write-only; stored encrypted).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub api_key: Option<Zeroizing<String>>,
    /// PEM CA bundle trusted for this endpoint instead of the built-in roots.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Total time per call in ms (100–300000, default 30000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `max_tokens` per request (16–32768, default 512).
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// Validate, check egress, encrypt the key and store the tenant's endpoint (audited
/// `ai_endpoint.set`; details name kind, URL, model and limits, never the key).
pub async fn put(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    body: AiEndpointBody,
) -> ApiResult<AiEndpointView> {
    let t = ctx.tenant.clone();
    let ep = Endpoint::parse(EndpointInput {
        kind: &body.kind,
        base_url: &body.base_url,
        model: &body.model,
        api_key: body.api_key.as_ref().map(|k| k.as_str()),
        ca_pem: body.ca_pem.as_deref(),
        timeout_ms: body.timeout_ms,
        max_tokens: body.max_tokens,
    })
    .map_err(|e| ApiError::invalid(e.field, e.message))?;
    let (host, port) = ep.host_port();
    state
        .egress
        .check_host(&host, port)
        .await
        .map_err(|d| ApiError::new(ErrorCode::EgressDenied, d.message).field("base_url"))?;
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "ai_endpoint.set",
        Some("ai-endpoint".to_string()),
    )
    .details(serde_json::json!({
        "kind": ep.kind.as_str(),
        "base_url": ep.base_url.as_str(),
        "model": ep.model,
        "api_key_set": ep.api_key.is_some(),
        "ca_pem_set": ep.ca_pem.is_some(),
        "timeout_ms": ep.timeout_ms,
        "max_tokens": ep.max_tokens,
    }));
    let by = ctx.principal.actor_name();
    // Sealed and written through the sealing module: the store checks the rotation fence and a
    // key sealed under a DEK the rotation is retiring is sealed again under the new one.
    let values: Vec<Plain> = ep
        .api_key
        .iter()
        .map(|k| Plain::column(&t, &sealing::AI_API_KEY, &[], k.as_bytes()))
        .collect();
    let row = sealing::write_sealed(state, &t, values, |_, cts| {
        let row = AiEndpointRow {
            kind: ep.kind.as_str().to_string(),
            base_url: ep.base_url.to_string(),
            model: ep.model.clone(),
            api_key: cts.into_iter().next(),
            ca_pem: ep.ca_pem.clone(),
            timeout_ms: ep.timeout_ms as i64,
            max_tokens: i64::from(ep.max_tokens),
            updated_at: now_rfc3339(),
            updated_by: by.clone(),
        };
        let (r2, ev) = (row.clone(), ev.clone());
        let tenants = state.tenants.clone();
        let t = t.clone();
        async move {
            tenants
                .run(&t, move |c| store::put_ai_endpoint(c, &r2, &ev))
                .await?;
            Ok(row)
        }
    })
    .await?;
    Ok(view_of(Source::Tenant, Some(&ep), Some(&row)))
}

/// Remove the tenant's endpoint (the deployment default, if any, applies again); 404 when the
/// tenant has none. Audited `ai_endpoint.delete`.
pub async fn delete(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<()> {
    let t = ctx.tenant.clone();
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "ai_endpoint.delete",
        Some("ai-endpoint".to_string()),
    );
    if state
        .tenants
        .run(&t, move |c| store::delete_ai_endpoint(c, &ev))
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// Result of `POST /api/v1/ai-endpoint/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The endpoint answered with a valid structured verdict.
    pub ok: bool,
    /// Which endpoint was tested.
    pub source: Source,
    /// `verdict`, `invalid_reply`, `http_error`, `timeout`, `redirect_refused`,
    /// `egress_denied`, `tls_failed` or `connect_failed`.
    pub outcome: String,
    /// The verdict on the probe image (when `ok`).
    pub verdict: Option<Verdict>,
    /// Why not (when not `ok`).
    pub error: Option<String>,
    /// When `outcome` is `tls_failed`: `unknown_issuer`, `expired`, `not_yet_valid`,
    /// `name_mismatch`, `ca_used_as_leaf`, `revoked`, `bad_certificate` or `handshake`.
    pub tls_error: Option<String>,
    /// Model asked.
    pub model: String,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Latency in ms.
    pub latency_ms: u64,
}

/// Expectation sent with the probe image of an endpoint test.
pub const PROBE_EXPECTATION: &str = "The image is a plain white square.";

fn probe_png() -> ApiResult<Vec<u8>> {
    let (w, h) = (64u32, 64u32);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(ApiError::internal)?;
        wr.write_image_data(&vec![255u8; (w * h * 4) as usize])
            .map_err(ApiError::internal)?;
    }
    Ok(out)
}

/// Ask the effective endpoint for a verdict on a 64×64 white probe image (an AI-cost call: rate
/// limited). 409 `ai_endpoint_not_configured` when there is none. Audited `ai_endpoint.test`
/// with the outcome.
pub async fn test(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<TestResult> {
    let t = ctx.tenant.clone();
    let (st, t2) = (state.clone(), t.clone());
    let eff = tokio::task::spawn_blocking(move || effective_blocking(&st, &t2))
        .await
        .map_err(ApiError::internal)??;
    let Some((source, ep)) = eff else {
        return Err(ApiError::new(
            ErrorCode::AiEndpointNotConfigured,
            "no AI endpoint is configured for this tenant or deployment",
        ));
    };
    take_call(state, &t)?;
    let rep =
        ai_client::ask_verdict(state.egress.clone(), &ep, PROBE_EXPECTATION, &probe_png()?).await;
    let out = test_result(source, rep);
    let ev = NewAuditEvent::new(
        &ctx.actor(),
        "ai_endpoint.test",
        Some("ai-endpoint".to_string()),
    )
    .details(serde_json::json!({
        "source": source.as_str(),
        "model": out.model,
        "outcome": out.outcome,
        "latency_ms": out.latency_ms,
    }));
    state
        .tenants
        .run(&t, move |c| crate::store::audit::append_audit(c, &ev))
        .await?;
    Ok(out)
}

fn test_result(source: Source, rep: CallReport) -> TestResult {
    let tls_error = match &rep.result {
        Err(ai_client::CallError::Tls { kind, .. }) => Some(kind.code().to_string()),
        _ => None,
    };
    let (ok, outcome, verdict, error) = match rep.result {
        Ok(v) => (true, "verdict".to_string(), Some(v), None),
        Err(e) => (false, e.outcome().to_string(), None, Some(e.reason())),
    };
    TestResult {
        ok,
        source,
        outcome,
        verdict,
        error,
        tls_error,
        model: rep.model,
        bytes_sent: rep.bytes_sent,
        latency_ms: rep.latency_ms,
    }
}
