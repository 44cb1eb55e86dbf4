//! Client for the customer's AI endpoint: an OpenAI-compatible Chat Completions server
//! (`openai-chat`: `POST …/v1/chat/completions`, image as a `data:` URL) or an Anthropic Messages
//! API gateway (`anthropic-messages`: `POST …/v1/messages`, image as a base64 source block).
//!
//! One call asks for a structured checkpoint verdict `{"verdict": "pass"|"fail", "confidence":
//! 0–1, "rationale": "…"}` about one (already masked) PNG and one (already scrubbed) expectation.
//! There is no default endpoint and no fallback: a failed call is reported as failed.
//!
//! Connection discipline: rustls with the **ring** provider only (TLS 1.2/1.3) through the
//! shared builder [`super::tls::client_config`], trusting exactly the endpoint's `ca_pem` bundle
//! when one is set — a certificate in it that the endpoint presents itself is pinned, so a
//! self-signed `openssl req -x509` (CA:TRUE) certificate works — else the Mozilla roots compiled
//! in through `webpki-roots`; a TLS failure is reported by kind (`tls_failed`); HTTPS only; no proxy from the environment; redirects are never followed (a
//! 3xx is an error); every address is decided by the [`EgressPolicy`] — literal addresses before
//! the request, names inside the resolver, so the client connects only to addresses the policy
//! returned (no DNS-rebinding bypass); one total timeout covers connect, TLS, request and reply;
//! replies larger than [`MAX_REPLY_BYTES`] are refused. The API key travels only in the
//! `Authorization` (OpenAI) or `x-api-key` (Anthropic) header, marked sensitive.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::egress::{literal, DenyKind, EgressDenied, EgressPolicy, EgressResolver};

/// Largest reply body read (1 MiB).
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// Smallest and largest `timeout_ms`.
pub const TIMEOUT_RANGE_MS: (u64, u64) = (100, 300_000);
/// Default `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Smallest and largest `max_tokens`.
pub const MAX_TOKENS_RANGE: (u32, u32) = (16, 32_768);
/// Default `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 512;
/// Longest rationale kept (characters).
pub const MAX_RATIONALE_CHARS: usize = 2000;
/// `anthropic-version` header sent to Anthropic-compatible gateways.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The instruction sent with every checkpoint (the system prompt).
pub const SYSTEM_PROMPT: &str = "You are the visual checkpoint of an automated end-to-end test. \
You get a screenshot of a web application and an expectation. Black rectangles were painted over \
sensitive areas on purpose; ignore them. Decide whether the screenshot satisfies the expectation. \
Answer with exactly one JSON object and nothing else: \
{\"verdict\": \"pass\" or \"fail\", \"confidence\": a number from 0 to 1, \"rationale\": one or two sentences}.";

/// Wire protocol of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AiKind {
    /// OpenAI-compatible Chat Completions (vLLM, Ollama, LiteLLM, Azure-style gateways).
    OpenaiChat,
    /// Anthropic Messages API.
    AnthropicMessages,
}

impl AiKind {
    /// Stable name (`openai-chat`, `anthropic-messages`).
    pub fn as_str(self) -> &'static str {
        match self {
            AiKind::OpenaiChat => "openai-chat",
            AiKind::AnthropicMessages => "anthropic-messages",
        }
    }
    /// Parse a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai-chat" => Some(AiKind::OpenaiChat),
            "anthropic-messages" => Some(AiKind::AnthropicMessages),
            _ => None,
        }
    }
}

/// A validated endpoint. `Debug` never shows the API key.
#[derive(Clone)]
pub struct Endpoint {
    /// Protocol.
    pub kind: AiKind,
    /// `https://` base URL without query, fragment or credentials.
    pub base_url: Url,
    /// Model name sent in every request.
    pub model: String,
    /// API key (none for endpoints without authentication).
    pub api_key: Option<Zeroizing<String>>,
    /// PEM CA bundle to trust instead of the built-in roots.
    pub ca_pem: Option<String>,
    /// Total time for one call, in milliseconds.
    pub timeout_ms: u64,
    /// `max_tokens` sent in every request.
    pub max_tokens: u32,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url.as_str())
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("timeout_ms", &self.timeout_ms)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// Raw endpoint fields (from the API or the config file) before validation.
#[derive(Debug, Clone, Copy)]
pub struct EndpointInput<'a> {
    /// `openai-chat` or `anthropic-messages`.
    pub kind: &'a str,
    /// Base URL.
    pub base_url: &'a str,
    /// Model.
    pub model: &'a str,
    /// API key.
    pub api_key: Option<&'a str>,
    /// PEM bundle.
    pub ca_pem: Option<&'a str>,
    /// Timeout (default [`DEFAULT_TIMEOUT_MS`]).
    pub timeout_ms: Option<u64>,
    /// Max tokens (default [`DEFAULT_MAX_TOKENS`]).
    pub max_tokens: Option<u32>,
}

/// A field that failed validation and why (the message never repeats a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field name (`kind`, `base_url`, `model`, `api_key`, `ca_pem`, `timeout_ms`, `max_tokens`).
    pub field: &'static str,
    /// Explanation.
    pub message: String,
}

fn ferr(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

impl Endpoint {
    /// Validate raw fields: `kind` known; `base_url` an `https://` URL with a host and no
    /// credentials, query or fragment (≤ 2048 chars); `model` 1–200 visible characters; `api_key`
    /// 1–4096 visible ASCII characters when given; `ca_pem` ≤ 1 MiB of PEM certificates;
    /// `timeout_ms` in [`TIMEOUT_RANGE_MS`]; `max_tokens` in [`MAX_TOKENS_RANGE`].
    pub fn parse(i: EndpointInput<'_>) -> Result<Self, FieldError> {
        let kind = AiKind::parse(i.kind)
            .ok_or_else(|| ferr("kind", "kind must be openai-chat or anthropic-messages"))?;
        let raw = i.base_url.trim();
        let bad_url = || {
            ferr(
                "base_url",
                "base_url must be an https:// URL with a host and no credentials, query or fragment",
            )
        };
        if raw.len() > 2048 {
            return Err(bad_url());
        }
        let mut url = Url::parse(raw).map_err(|_| bad_url())?;
        if url.scheme() != "https"
            || url.host_str().is_none_or(str::is_empty)
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(bad_url());
        }
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        let model = i.model.trim();
        if model.is_empty()
            || model.chars().count() > 200
            || model.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ferr(
                "model",
                "model must be 1-200 characters without spaces or control characters",
            ));
        }
        let api_key = match i.api_key {
            None => None,
            Some(k) => {
                if k.is_empty() || k.len() > 4096 || !k.bytes().all(|b| (0x21..=0x7e).contains(&b))
                {
                    return Err(ferr(
                        "api_key",
                        "api_key must be 1-4096 visible ASCII characters (omit it for an endpoint without a key)",
                    ));
                }
                Some(Zeroizing::new(k.to_string()))
            }
        };
        let ca_pem = match i.ca_pem.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(p) => {
                if p.len() > MAX_REPLY_BYTES {
                    return Err(ferr("ca_pem", "ca_pem is larger than 1 MiB"));
                }
                super::tls::check_ca_pem(p).map_err(|m| ferr("ca_pem", m))?;
                Some(p.to_string())
            }
        };
        let timeout_ms = i.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(TIMEOUT_RANGE_MS.0..=TIMEOUT_RANGE_MS.1).contains(&timeout_ms) {
            return Err(ferr(
                "timeout_ms",
                format!(
                    "timeout_ms must be {}-{}",
                    TIMEOUT_RANGE_MS.0, TIMEOUT_RANGE_MS.1
                ),
            ));
        }
        let max_tokens = i.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if !(MAX_TOKENS_RANGE.0..=MAX_TOKENS_RANGE.1).contains(&max_tokens) {
            return Err(ferr(
                "max_tokens",
                format!(
                    "max_tokens must be {}-{}",
                    MAX_TOKENS_RANGE.0, MAX_TOKENS_RANGE.1
                ),
            ));
        }
        Ok(Self {
            kind,
            base_url: url,
            model: model.to_string(),
            api_key,
            ca_pem,
            timeout_ms,
            max_tokens,
        })
    }

    /// Host (name or literal address, IPv6 without brackets) and port (default 443).
    pub fn host_port(&self) -> (String, u16) {
        let host = self
            .base_url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        (host, self.base_url.port_or_known_default().unwrap_or(443))
    }

    /// The URL called: the base URL plus `/chat/completions` (OpenAI) or `/messages`
    /// (Anthropic), with `/v1` inserted unless the base URL already ends in `/v1`.
    pub fn request_url(&self) -> Url {
        let mut u = self.base_url.clone();
        let base = u.path().trim_end_matches('/').to_string();
        let v1 = if base.ends_with("/v1") { "" } else { "/v1" };
        let tail = match self.kind {
            AiKind::OpenaiChat => "/chat/completions",
            AiKind::AnthropicMessages => "/messages",
        };
        u.set_path(&format!("{base}{v1}{tail}"));
        u
    }
}

/// A valid structured verdict.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Verdict {
    /// `pass` or `fail`.
    pub verdict: String,
    /// 0–1.
    pub confidence: f64,
    /// The model's explanation (≤ [`MAX_RATIONALE_CHARS`] characters).
    pub rationale: String,
}

/// Why a call produced no verdict.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The egress policy refused the host or every resolved address.
    Egress(EgressDenied),
    /// No complete reply within `timeout_ms`.
    Timeout(u64),
    /// The endpoint answered with a redirect, which is not followed.
    Redirect(u16),
    /// The endpoint answered 4xx/5xx.
    Status(u16),
    /// The reply is not a valid structured verdict.
    InvalidReply(String),
    /// TCP connected, the TLS handshake failed (kind and a message naming host, port and kind).
    Tls {
        /// What failed.
        kind: super::tls::TlsFailure,
        /// Human message.
        message: String,
    },
    /// Connection failure (no TCP connection) or a failure after the handshake.
    Transport(String),
}

impl CallError {
    /// Stable outcome code stored on the step: `egress_denied`, `timeout`, `redirect_refused`,
    /// `http_error`, `invalid_reply`, `tls_failed`, `connect_failed`.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Egress(_) => "egress_denied",
            CallError::Timeout(_) => "timeout",
            CallError::Redirect(_) => "redirect_refused",
            CallError::Status(_) => "http_error",
            CallError::InvalidReply(_) => "invalid_reply",
            CallError::Tls { .. } => "tls_failed",
            CallError::Transport(_) => "connect_failed",
        }
    }

    /// Human reason stored on the step (never the key, prompt or image).
    pub fn reason(&self) -> String {
        match self {
            CallError::Egress(e) => format!("AI endpoint refused by egress policy: {e}"),
            CallError::Timeout(ms) => format!("AI endpoint did not answer within {ms} ms"),
            CallError::Redirect(s) => {
                format!("AI endpoint answered HTTP {s} (redirect); redirects are not followed")
            }
            CallError::Status(s) => format!("AI endpoint answered HTTP {s}"),
            CallError::InvalidReply(m) => format!("AI reply is not a valid verdict: {m}"),
            CallError::Tls { message, .. } => format!("AI endpoint TLS failure: {message}"),
            CallError::Transport(m) => format!("AI endpoint unreachable: {m}"),
        }
    }
}

/// What one call did: model, bytes sent, latency and the verdict or error.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// Model asked.
    pub model: String,
    /// Request body bytes sent (0 when refused before sending).
    pub bytes_sent: u64,
    /// Milliseconds from sending to the end of the reply (or the failure).
    pub latency_ms: u64,
    /// Verdict or why there is none.
    pub result: Result<Verdict, CallError>,
}

/// The request body for `kind`: the expectation text and the PNG (base64), with `model` and
/// `max_tokens`, temperature 0.
pub fn request_body(ep: &Endpoint, expectation: &str, png: &[u8]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let text = format!("Expectation: {expectation}");
    match ep.kind {
        AiKind::OpenaiChat => json!({
            "model": ep.model,
            "max_tokens": ep.max_tokens,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}}
                ]}
            ]
        }),
        AiKind::AnthropicMessages => json!({
            "model": ep.model,
            "max_tokens": ep.max_tokens,
            "temperature": 0,
            "system": SYSTEM_PROMPT,
            "messages": [
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}},
                    {"type": "text", "text": text}
                ]}
            ]
        }),
    }
}

/// The model's text from a reply body: OpenAI `choices[0].message.content` (a string or text
/// parts), Anthropic the concatenated `text` blocks of `content`.
fn reply_text(kind: AiKind, v: &Value) -> Result<String, String> {
    let parts_text = |arr: &Vec<Value>| -> String {
        arr.iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("")
    };
    let text = match kind {
        AiKind::OpenaiChat => match &v["choices"][0]["message"]["content"] {
            Value::String(s) => s.clone(),
            Value::Array(a) => parts_text(a),
            _ => return Err("no choices[0].message.content".into()),
        },
        AiKind::AnthropicMessages => match &v["content"] {
            Value::Array(a) => parts_text(a),
            _ => return Err("no content blocks".into()),
        },
    };
    if text.trim().is_empty() {
        return Err("empty answer".into());
    }
    Ok(text)
}

/// Parse the model's answer: exactly one JSON object (optionally inside one ```json fence) with
/// `verdict` `pass|fail`, `confidence` a finite number in 0–1 and a non-empty `rationale`.
pub fn parse_verdict(text: &str) -> Result<Verdict, String> {
    let mut t = text.trim();
    if let Some(inner) = t.strip_prefix("```") {
        let inner = inner.strip_prefix("json").unwrap_or(inner);
        t = inner
            .trim()
            .strip_suffix("```")
            .ok_or("unterminated code fence")?
            .trim();
    }
    let v: Value = serde_json::from_str(t).map_err(|_| "the answer is not one JSON object")?;
    let obj = v.as_object().ok_or("the answer is not a JSON object")?;
    let verdict = match obj.get("verdict").and_then(Value::as_str) {
        Some("pass") => "pass",
        Some("fail") => "fail",
        _ => return Err("`verdict` must be \"pass\" or \"fail\"".into()),
    };
    let confidence = obj
        .get("confidence")
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite() && (0.0..=1.0).contains(c))
        .ok_or("`confidence` must be a number from 0 to 1")?;
    let rationale = obj
        .get("rationale")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or("`rationale` must be a non-empty string")?;
    Ok(Verdict {
        verdict: verdict.to_string(),
        confidence,
        rationale: rationale.chars().take(MAX_RATIONALE_CHARS).collect(),
    })
}

/// Parse a whole reply body of `kind` into a verdict.
pub fn parse_reply(kind: AiKind, body: &[u8]) -> Result<Verdict, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the reply body is not JSON")?;
    parse_verdict(&reply_text(kind, &v)?)
}

fn tls_config(ep: &Endpoint) -> Result<rustls::ClientConfig, String> {
    super::tls::client_config(ep.ca_pem.as_deref(), None)
}

fn headers(ep: &Endpoint) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("flowguard-appliance/", env!("CARGO_PKG_VERSION"))),
    );
    if ep.kind == AiKind::AnthropicMessages {
        h.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    if let Some(k) = &ep.api_key {
        let (name, value) = match ep.kind {
            AiKind::OpenaiChat => (AUTHORIZATION.as_str(), format!("Bearer {}", k.as_str())),
            AiKind::AnthropicMessages => ("x-api-key", k.to_string()),
        };
        let value = Zeroizing::new(value);
        let mut v = HeaderValue::from_str(&value).map_err(|_| "api_key is not header-safe")?;
        v.set_sensitive(true);
        h.insert(name, v);
    }
    Ok(h)
}

fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

fn classify(e: &reqwest::Error, timeout_ms: u64, host: &str, port: u16) -> CallError {
    if e.is_timeout() {
        return CallError::Timeout(timeout_ms);
    }
    if let Some(d) = find_cause::<EgressDenied>(e) {
        return match d.kind {
            DenyKind::Unresolved => CallError::Transport(d.message.clone()),
            _ => CallError::Egress(d.clone()),
        };
    }
    if let Some((kind, detail)) = super::tls::tls_failure(e) {
        return CallError::Tls {
            kind,
            message: format!(
                "TLS handshake with {host}:{port} failed: {} ({detail})",
                kind.describe()
            ),
        };
    }
    if e.is_connect() {
        return CallError::Transport(format!("cannot connect to {host}:{port}"));
    }
    CallError::Transport(format!("request to {host}:{port} failed"))
}

/// Ask `ep` for a verdict on `png` against `expectation` (both already masked/scrubbed by the
/// caller). Never panics and never returns a verdict it did not parse from a 2xx reply.
pub async fn ask_verdict(
    policy: Arc<EgressPolicy>,
    ep: &Endpoint,
    expectation: &str,
    png: &[u8],
) -> CallReport {
    let (host, port) = ep.host_port();
    let report = |bytes_sent: u64, started: Option<Instant>, result| CallReport {
        model: ep.model.clone(),
        bytes_sent,
        latency_ms: started.map_or(0, |s| s.elapsed().as_millis() as u64),
        result,
    };
    if let Some(ip) = literal(&host) {
        if let Err(d) = policy.check_literal(&host, ip, port) {
            return report(0, None, Err(CallError::Egress(d)));
        }
    }
    let denied = Arc::new(parking_lot::Mutex::new(None));
    let built = tls_config(ep).and_then(|tls| {
        let timeout = Duration::from_millis(ep.timeout_ms);
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .dns_resolver(Arc::new(EgressResolver::new(
                policy.clone(),
                port,
                denied.clone(),
            )))
            .default_headers(headers(ep)?)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))
    });
    let client = match built {
        Ok(c) => c,
        Err(m) => return report(0, None, Err(CallError::Transport(m))),
    };
    let body = match serde_json::to_vec(&request_body(ep, expectation, png)) {
        Ok(b) => b,
        Err(e) => return report(0, None, Err(CallError::Transport(e.to_string()))),
    };
    let sent = body.len() as u64;
    let started = Instant::now();
    let mut resp = match client.post(ep.request_url()).body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            let err = match denied.lock().take() {
                Some(d) if d.kind == DenyKind::Unresolved => CallError::Transport(d.message),
                Some(d) => CallError::Egress(d),
                None => classify(&e, ep.timeout_ms, &host, port),
            };
            // An egress refusal happens before a single byte is sent.
            let sent = if matches!(err, CallError::Egress(_)) {
                0
            } else {
                sent
            };
            return report(sent, Some(started), Err(err));
        }
    };
    let status = resp.status();
    if status.is_redirection() {
        return report(
            sent,
            Some(started),
            Err(CallError::Redirect(status.as_u16())),
        );
    }
    if !status.is_success() {
        return report(sent, Some(started), Err(CallError::Status(status.as_u16())));
    }
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > MAX_REPLY_BYTES {
                    return report(
                        sent,
                        Some(started),
                        Err(CallError::InvalidReply(
                            "the reply is larger than 1 MiB".into(),
                        )),
                    );
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => {
                return report(
                    sent,
                    Some(started),
                    Err(classify(&e, ep.timeout_ms, &host, port)),
                )
            }
        }
    }
    let result = parse_reply(ep.kind, &buf).map_err(CallError::InvalidReply);
    report(sent, Some(started), result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: &str, url: &str) -> EndpointInput<'static> {
        EndpointInput {
            kind: Box::leak(kind.to_string().into_boxed_str()),
            base_url: Box::leak(url.to_string().into_boxed_str()),
            model: "m",
            api_key: None,
            ca_pem: None,
            timeout_ms: None,
            max_tokens: None,
        }
    }

    #[test]
    fn validates_and_builds_urls() {
        let e = Endpoint::parse(input("openai-chat", "https://llm.corp.example/v1/")).unwrap();
        assert_eq!(
            e.request_url().as_str(),
            "https://llm.corp.example/v1/chat/completions"
        );
        let e = Endpoint::parse(input("anthropic-messages", "https://gw.example:8443")).unwrap();
        assert_eq!(
            e.request_url().as_str(),
            "https://gw.example:8443/v1/messages"
        );
        assert_eq!(e.host_port(), ("gw.example".to_string(), 8443));
        for (k, u, f) in [
            ("openai", "https://a.example", "kind"),
            ("openai-chat", "http://a.example", "base_url"),
            ("openai-chat", "https://u:p@a.example", "base_url"),
            ("openai-chat", "https://a.example/?x=1", "base_url"),
        ] {
            assert_eq!(
                Endpoint::parse(input(k, u)).unwrap_err().field,
                f,
                "{k} {u}"
            );
        }
        let mut i = input("openai-chat", "https://a.example");
        i.api_key = Some("bad key");
        assert_eq!(Endpoint::parse(i).unwrap_err().field, "api_key");
        i.api_key = None;
        i.ca_pem = Some("not pem");
        assert_eq!(Endpoint::parse(i).unwrap_err().field, "ca_pem");
        i.ca_pem = None;
        i.timeout_ms = Some(10);
        assert_eq!(Endpoint::parse(i).unwrap_err().field, "timeout_ms");
        i.timeout_ms = None;
        i.max_tokens = Some(0);
        assert_eq!(Endpoint::parse(i).unwrap_err().field, "max_tokens");
    }

    #[test]
    fn verdict_parsing_is_strict() {
        let ok = parse_verdict(r#"{"verdict":"pass","confidence":0.9,"rationale":"ok"}"#).unwrap();
        assert_eq!(ok.verdict, "pass");
        assert!(parse_verdict(
            "```json\n{\"verdict\":\"fail\",\"confidence\":1,\"rationale\":\"no\"}\n```"
        )
        .is_ok());
        for bad in [
            "pass",
            r#"{"verdict":"PASS","confidence":0.9,"rationale":"x"}"#,
            r#"{"verdict":"pass","confidence":1.5,"rationale":"x"}"#,
            r#"{"verdict":"pass","confidence":"high","rationale":"x"}"#,
            r#"{"verdict":"pass","confidence":0.5,"rationale":""}"#,
            r#"{"verdict":"pass","confidence":0.5}"#,
            r#"[{"verdict":"pass"}]"#,
            r#"Sure! {"verdict":"pass","confidence":0.5,"rationale":"x"}"#,
        ] {
            assert!(parse_verdict(bad).is_err(), "{bad}");
        }
        let openai = json!({"choices": [{"message": {"content": "{\"verdict\":\"pass\",\"confidence\":0.8,\"rationale\":\"r\"}"}}]});
        assert!(parse_reply(AiKind::OpenaiChat, openai.to_string().as_bytes()).is_ok());
        assert!(parse_reply(AiKind::AnthropicMessages, openai.to_string().as_bytes()).is_err());
        let anthropic = json!({"content": [{"type": "text", "text": "{\"verdict\":\"fail\",\"confidence\":0.2,\"rationale\":\"r\"}"}]});
        assert_eq!(
            parse_reply(AiKind::AnthropicMessages, anthropic.to_string().as_bytes())
                .unwrap()
                .verdict,
            "fail"
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let mut i = input("openai-chat", "https://a.example");
        i.api_key = Some("sk-very-secret-123");
        let e = Endpoint::parse(i).unwrap();
        assert!(!format!("{e:?}").contains("sk-very-secret-123"));
        let h = headers(&e).unwrap();
        assert!(h[AUTHORIZATION].is_sensitive());
    }
}
