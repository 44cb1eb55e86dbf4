//! The agent's client of the appliance's agent API (`/api/v1/agent/…`, README "Flows, runs and
//! the agent API"): reqwest on rustls with the *ring* provider, bearer `fga_…` token, and — with
//! `--ca-file` — that PEM bundle as the only trust anchor.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Timeout of one API request (screenshot uploads included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A run as the server shows it (`RunRow`).
#[derive(Debug, Clone, Deserialize)]
pub struct RunInfo {
    /// Run id.
    pub id: String,
    /// `queued|running|passed|failed|cancelled|error`.
    pub status: String,
    /// Machine reason for the final status.
    #[serde(default)]
    pub reason: Option<String>,
    /// Error text (secrets scrubbed by the server).
    #[serde(default)]
    pub error: Option<String>,
}

/// What a claim returns: the pinned steps with variables resolved, and the selectors the
/// server demands masks for, per step index.
#[derive(Debug, Deserialize, Serialize)]
pub struct Claim {
    /// Run id.
    pub run_id: String,
    /// Flow id.
    pub flow_id: String,
    /// Pinned flow version.
    pub flow_version: i64,
    /// Application base URL (relative `navigate`/`wait url` targets resolve against it).
    pub base_url: String,
    /// Steps (`{type, …options}`), `{{variables}}` already substituted.
    pub steps: Vec<serde_json::Value>,
    /// Selectors that must be masked in step i's screenshot.
    pub mask_required: Vec<Vec<String>>,
}

/// One step result as sent to `POST /agent/runs/{run}/steps`.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// Step index (0-based).
    pub index: usize,
    /// `passed|failed|skipped`.
    pub status: &'static str,
    /// Duration in milliseconds.
    pub duration_ms: Option<u64>,
    /// Error text (already redacted by the agent).
    pub error: Option<String>,
    /// Console summary.
    pub console: Option<serde_json::Value>,
    /// Network summary.
    pub network: Option<serde_json::Value>,
}

/// One mask entry of a screenshot upload, in image pixels.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum MaskEntry {
    /// A rectangle to paint.
    Rect {
        /// Selector it belongs to.
        selector: String,
        /// Left.
        x: i64,
        /// Top.
        y: i64,
        /// Width (> 0).
        width: i64,
        /// Height (> 0).
        height: i64,
    },
    /// The selector matched no visible element.
    NotFound {
        /// Selector.
        selector: String,
        /// Always true.
        not_found: bool,
    },
}

/// What the executor tells the server at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every step ran and passed (the server still checks the step results).
    Passed,
    /// A step failed.
    Failed,
    /// The browser crashed, could not start or lost its DevTools connection: the run ends
    /// `error` with reason `runner_error` (retried once by the server), never `failed`.
    RunnerError,
}

impl Verdict {
    /// Wire value of `status` in `POST /agent/runs/{run}/complete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::RunnerError => "error",
        }
    }
}

/// Outcome of a call that a cancelled run answers with 409.
#[derive(Debug)]
pub enum Sent {
    /// Accepted.
    Ok,
    /// 409: the run is no longer running (cancelled on the server, or timed out).
    Stopped(String),
}

/// The agent API client.
pub struct ApiClient {
    http: Client,
    api: String,
    token: Zeroizing<String>,
}

fn problem_text(status: StatusCode, body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let code = v["code"].as_str().unwrap_or("");
    let detail = v["detail"]
        .as_str()
        .or_else(|| v["title"].as_str())
        .unwrap_or("");
    let detail: String = detail.chars().take(300).collect();
    format!("HTTP {} {code}: {detail}", status.as_u16())
}

impl ApiClient {
    /// Build a client for `server` (`https://host:port`, or `http://` on a loopback host only —
    /// the token must never travel in clear text), trusting only `ca_file` when given (else the
    /// bundled Mozilla roots).
    pub fn new(
        server: &str,
        ca_file: Option<&Path>,
        token: Zeroizing<String>,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(server.trim())
            .with_context(|| "--server must be an absolute URL such as https://flowguard:8443")?;
        match url.scheme() {
            "https" => {}
            "http" => {
                let loopback = match url.host() {
                    Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                    Some(url::Host::Ipv4(a)) => a.is_loopback(),
                    Some(url::Host::Ipv6(a)) => a.is_loopback(),
                    None => false,
                };
                if !loopback {
                    anyhow::bail!(
                        "--server must use https:// (plain http:// is accepted for loopback addresses only)"
                    );
                }
            }
            other => anyhow::bail!("--server has unsupported scheme `{other}`"),
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            anyhow::bail!("--server must not carry credentials, a query or a fragment");
        }
        let mut b = Client::builder()
            .use_rustls_tls()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("flowguard-agent/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read --ca-file {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-file {} is not a PEM bundle", ca.display()))?;
            if certs.is_empty() {
                anyhow::bail!("--ca-file {} holds no certificate", ca.display());
            }
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().context("cannot build the HTTPS client")?;
        Ok(Self {
            http,
            api: format!("{}/api/v1", url.as_str().trim_end_matches('/')),
            token,
        })
    }

    /// The token's visible prefix (`fga_<tenant>_` and a few characters), safe to print.
    pub fn token_prefix(&self) -> String {
        let t = self.token.as_str();
        let head = t.match_indices('_').nth(1).map(|(i, _)| i + 1).unwrap_or(0);
        t.chars().take(head + 6).collect()
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(self.token.as_str())
    }

    async fn send(&self, rb: RequestBuilder, what: &str) -> anyhow::Result<Response> {
        rb.send()
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {}", without_url(&e)))
    }

    async fn expect_json<T: for<'de> Deserialize<'de>>(
        &self,
        r: Response,
        want: StatusCode,
        what: &str,
    ) -> anyhow::Result<T> {
        let st = r.status();
        let body = r.text().await.unwrap_or_default();
        if st != want {
            anyhow::bail!("{what}: {}", problem_text(st, &body));
        }
        serde_json::from_str(&body).with_context(|| format!("{what}: unexpected response body"))
    }

    /// The token's scope from `GET /agent/whoami`: `(tenant_id, application_id, token name)`.
    pub async fn whoami(&self) -> anyhow::Result<(String, String, String)> {
        #[derive(Deserialize)]
        struct Scope {
            tenant_id: String,
            application_id: String,
            name: String,
        }
        let r = self
            .send(self.req(Method::GET, "/agent/whoami"), "whoami")
            .await?;
        let s: Scope = self.expect_json(r, StatusCode::OK, "whoami").await?;
        Ok((s.tenant_id, s.application_id, s.name))
    }

    /// Claim the next queued run (or only `run`); `None` when nothing is queued.
    pub async fn claim(&self, run: Option<&str>) -> anyhow::Result<Option<Claim>> {
        let mut rb = self.req(Method::POST, "/agent/runs/claim");
        if let Some(id) = run {
            rb = rb.query(&[("run", id)]);
        }
        let r = self.send(rb, "claim").await?;
        if r.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.expect_json(r, StatusCode::OK, "claim").await.map(Some)
    }

    /// Queue a run of `flow` (of the token's application).
    pub async fn trigger(&self, flow: &str) -> anyhow::Result<RunInfo> {
        let r = self
            .send(
                self.req(Method::POST, &format!("/agent/flows/{}/runs", seg(flow))),
                "queue run",
            )
            .await?;
        self.expect_json(r, StatusCode::CREATED, "queue run").await
    }

    /// A run of the token's application.
    pub async fn run(&self, run: &str) -> anyhow::Result<RunInfo> {
        let r = self
            .send(
                self.req(Method::GET, &format!("/agent/runs/{}", seg(run))),
                "read run",
            )
            .await?;
        self.expect_json(r, StatusCode::OK, "read run").await
    }

    async fn stoppable(&self, r: Response, what: &str) -> anyhow::Result<Sent> {
        let st = r.status();
        if st.is_success() {
            return Ok(Sent::Ok);
        }
        let body = r.text().await.unwrap_or_default();
        if st == StatusCode::CONFLICT {
            return Ok(Sent::Stopped(problem_text(st, &body)));
        }
        anyhow::bail!("{what}: {}", problem_text(st, &body))
    }

    /// Report one step result.
    pub async fn report(&self, run: &str, rep: &StepReport) -> anyhow::Result<Sent> {
        let r = self
            .send(
                self.req(Method::POST, &format!("/agent/runs/{}/steps", seg(run)))
                    .json(rep),
                "report step",
            )
            .await?;
        self.stoppable(r, "report step").await
    }

    /// Heartbeat.
    pub async fn heartbeat(&self, run: &str) -> anyhow::Result<Sent> {
        let r = self
            .send(
                self.req(Method::POST, &format!("/agent/runs/{}/heartbeat", seg(run))),
                "heartbeat",
            )
            .await?;
        self.stoppable(r, "heartbeat").await
    }

    /// Complete the run; returns the verdict the server recorded.
    pub async fn complete(
        &self,
        run: &str,
        verdict: Verdict,
        error: Option<&str>,
    ) -> anyhow::Result<Result<RunInfo, String>> {
        let body = serde_json::json!({
            "status": verdict.as_str(),
            "error": error,
        });
        let r = self
            .send(
                self.req(Method::POST, &format!("/agent/runs/{}/complete", seg(run)))
                    .json(&body),
                "complete run",
            )
            .await?;
        if r.status() == StatusCode::CONFLICT {
            let st = r.status();
            return Ok(Err(problem_text(st, &r.text().await.unwrap_or_default())));
        }
        self.expect_json(r, StatusCode::OK, "complete run")
            .await
            .map(Ok)
    }

    /// Upload step `n`'s PNG with its mask list.
    pub async fn upload(
        &self,
        run: &str,
        n: usize,
        png: Vec<u8>,
        masks: &[MaskEntry],
    ) -> anyhow::Result<Sent> {
        let part = reqwest::multipart::Part::bytes(png)
            .file_name("screenshot.png")
            .mime_str("image/png")?;
        let form = reqwest::multipart::Form::new()
            .part("image", part)
            .text("masks", serde_json::to_string(masks)?);
        let r = self
            .send(
                self.req(
                    Method::POST,
                    &format!("/agent/runs/{}/steps/{n}/screenshot", seg(run)),
                )
                .multipart(form),
                "upload screenshot",
            )
            .await?;
        self.stoppable(r, "upload screenshot").await
    }
}

/// Percent-encode one path segment (ids are URL-safe; this keeps a hostile `--flow` inert).
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A reqwest error as one line: its kind plus the source chain (TLS, connect, timeout detail).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if msg.contains("UnknownIssuer") || msg.contains("unknown issuer") {
        msg.push_str(
            " — the server's certificate is not signed by a CA this agent trusts; for the appliance's own self-signed certificate pass --ca-file <data>/tls/cert.pem (copied from the server's data dir)",
        );
    }
    msg
}
