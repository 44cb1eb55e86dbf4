//! One headless Chromium per run, driven over the DevTools protocol (chromiumoxide, tokio, no
//! browser download): a fresh profile in a private temp dir (removed afterwards), `--headless=new`,
//! `--no-sandbox` only when running as root, no background networking, no first-run UI, no GPU,
//! HTTPS errors respected. Console errors and failed requests are collected per step from CDP
//! events (`Runtime.consoleAPICalled`, `Runtime.exceptionThrown`, `Log.entryAdded`,
//! `Network.*`), which also feed the network-idle wait.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network::{
    EventLoadingFailed, EventLoadingFinished, EventRequestWillBeSent, EventResponseReceived,
};
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, NavigateParams, Viewport as Clip,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EvaluateParams, EventConsoleApiCalled, EventExceptionThrown, RemoteObject,
};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::layout::Point;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// Viewport width in CSS pixels.
pub const VIEWPORT_WIDTH: u32 = 1280;
/// Viewport height in CSS pixels.
pub const VIEWPORT_HEIGHT: u32 = 720;
/// Longest a navigation (`navigate` step) may take.
pub const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Most console or network entries kept per step (the count is still exact).
const MAX_ENTRIES: usize = 20;
/// Longest text kept per console entry or URL.
const MAX_TEXT: usize = 500;

/// Chromium flags besides headless/sandbox/profile (chromiumoxide's defaults are switched off
/// so this list is the whole story).
const FLAGS: &[&str] = &[
    "disable-background-networking",
    "no-first-run",
    "no-default-browser-check",
    "disable-gpu",
    "disable-sync",
    "disable-default-apps",
    "disable-component-update",
    "disable-domain-reliability",
    "disable-breakpad",
    "disable-client-side-phishing-detection",
    "disable-hang-monitor",
    "disable-popup-blocking",
    "disable-prompt-on-repost",
    "disable-background-timer-throttling",
    "disable-backgrounding-occluded-windows",
    "disable-renderer-backgrounding",
    "disable-dev-shm-usage",
    "metrics-recording-only",
    "use-mock-keychain",
];

/// Whether the process runs as root (then Chromium's sandbox cannot start and is disabled).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Find Chromium: `--chromium PATH`, else `chromium`, `chromium-browser`, `google-chrome`,
/// `google-chrome-stable` on `PATH`. Never downloads anything.
pub fn find_chromium(explicit: Option<&Path>) -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            anyhow::bail!("--chromium {} is not a file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join(name);
            if cand.is_file() {
                return Ok(cand);
            }
        }
    }
    anyhow::bail!(
        "no Chromium found on PATH (install the `chromium` package or pass --chromium PATH)"
    )
}

/// One console error.
#[derive(Debug, Clone, serde::Serialize)]
struct ConsoleEntry {
    /// `console`, `exception` or `log`.
    source: &'static str,
    text: String,
}

/// One failed request.
#[derive(Debug, Clone, serde::Serialize)]
struct NetEntry {
    method: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Events of the current step plus the in-flight request set.
#[derive(Default)]
struct Events {
    console: Vec<ConsoleEntry>,
    console_count: usize,
    network: Vec<NetEntry>,
    network_count: usize,
    requests: HashMap<String, (String, String)>,
    inflight: HashSet<String>,
    /// Requests that got their response, finished or failed. Each event type arrives on its own stream, so a
    /// `loadingFinished` can be seen before its `requestWillBeSent`; this keeps such a request
    /// from counting as in flight forever.
    done: HashSet<String>,
    last_activity: Option<Instant>,
}

impl Events {
    fn console(&mut self, source: &'static str, text: String) {
        self.console_count += 1;
        if self.console.len() < MAX_ENTRIES {
            self.console.push(ConsoleEntry {
                source,
                text: cut(&text, MAX_TEXT),
            });
        }
    }

    fn failed(&mut self, e: NetEntry) {
        self.network_count += 1;
        if self.network.len() < MAX_ENTRIES {
            self.network.push(e);
        }
    }
}

/// Per-step console and network summary (`{error_count, errors:[{source,text}]}` and
/// `{failed_count, failed:[{method,url,status|error}]}`).
pub struct StepEvents {
    /// Console summary.
    pub console: serde_json::Value,
    /// Network summary.
    pub network: serde_json::Value,
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

fn remote_text(o: &RemoteObject) -> String {
    match (&o.value, &o.description) {
        (Some(serde_json::Value::String(s)), _) => s.clone(),
        (Some(v), _) => v.to_string(),
        (None, Some(d)) => d.clone(),
        (None, None) => format!("{:?}", o.r#type),
    }
}

/// What to capture.
#[derive(Debug, Clone, Copy)]
pub enum Capture {
    /// The viewport.
    Viewport,
    /// The whole document (`width`×`height` CSS pixels from the top left).
    FullPage {
        /// Document width.
        width: f64,
        /// Document height.
        height: f64,
    },
    /// A rectangle of the document, in CSS pixels.
    Region {
        /// Left (document coordinates).
        x: f64,
        /// Top (document coordinates).
        y: f64,
        /// Width.
        width: f64,
        /// Height.
        height: f64,
    },
}

/// A running Chromium with one page.
pub struct Session {
    browser: Browser,
    handler: JoinHandle<()>,
    listeners: Vec<JoinHandle<()>>,
    page: Page,
    events: Arc<Mutex<Events>>,
    profile: Option<tempfile::TempDir>,
}

impl Session {
    /// Launch Chromium with a fresh profile and open a blank page.
    pub async fn launch(chromium: &Path) -> anyhow::Result<Self> {
        let profile = tempfile::Builder::new()
            .prefix("flowguard-agent-profile-")
            .tempdir()
            .context("cannot create a temporary Chromium profile")?;
        let mut b = BrowserConfig::builder()
            .chrome_executable(chromium)
            .user_data_dir(profile.path())
            .new_headless_mode()
            .disable_default_args()
            .args(FLAGS.iter().copied())
            .arg(("lang", "en-US"))
            .arg(("force-color-profile", "srgb"))
            .arg(("password-store", "basic"))
            .window_size(VIEWPORT_WIDTH, VIEWPORT_HEIGHT)
            .viewport(Viewport {
                width: VIEWPORT_WIDTH,
                height: VIEWPORT_HEIGHT,
                device_scale_factor: Some(1.0),
                emulating_mobile: false,
                is_landscape: true,
                has_touch: false,
            })
            .respect_https_errors()
            .disable_cache()
            .launch_timeout(Duration::from_secs(30));
        if running_as_root() {
            b = b.no_sandbox();
        }
        let config = b
            .build()
            .map_err(|e| anyhow::anyhow!("Chromium configuration: {e}"))?;
        let (browser, mut handler) = Browser::launch(config)
            .await
            .with_context(|| format!("could not start Chromium ({})", chromium.display()))?;
        let handler = tokio::spawn(async move {
            // Errors here are single undecodable protocol messages; keep serving the page.
            while let Some(_ev) = handler.next().await {}
        });
        let events = Arc::new(Mutex::new(Events::default()));
        let opened = async {
            let page = browser.new_page("about:blank").await?;
            let listeners = listen(&page, &events).await?;
            Ok::<_, chromiumoxide::error::CdpError>((page, listeners))
        }
        .await;
        match opened {
            Ok((page, listeners)) => Ok(Self {
                browser,
                handler,
                listeners,
                page,
                events,
                profile: Some(profile),
            }),
            Err(e) => {
                let mut browser = browser;
                let _ = browser.kill().await;
                let _ = browser.wait().await;
                handler.abort();
                Err(anyhow::anyhow!("Chromium did not open a page: {e}"))
            }
        }
    }

    /// Close Chromium, wait for it to exit and delete the profile.
    pub async fn close(mut self) {
        for l in &self.listeners {
            l.abort();
        }
        let closed = tokio::time::timeout(Duration::from_secs(10), self.browser.close()).await;
        let exited = matches!(closed, Ok(Ok(_)))
            && matches!(
                tokio::time::timeout(Duration::from_secs(10), self.browser.wait()).await,
                Ok(Ok(_))
            );
        if !exited {
            let _ = self.browser.kill().await;
            let _ = self.browser.wait().await;
        }
        self.handler.abort();
        if let Some(p) = self.profile.take() {
            let _ = p.close();
        }
    }

    /// Start attributing console/network events to a new step.
    pub fn begin_step(&self) {
        let mut e = self.events.lock();
        e.console.clear();
        e.console_count = 0;
        e.network.clear();
        e.network_count = 0;
    }

    /// The current step's console and network summaries.
    pub fn take_step(&self) -> StepEvents {
        let e = self.events.lock();
        StepEvents {
            console: serde_json::json!({"error_count": e.console_count, "errors": e.console}),
            network: serde_json::json!({"failed_count": e.network_count, "failed": e.network}),
        }
    }

    /// Requests in flight (method and URL of each), and how long ago the last network
    /// activity was.
    pub fn network_activity(&self) -> (Vec<String>, Option<Duration>) {
        let e = self.events.lock();
        let inflight = e
            .inflight
            .iter()
            .map(|id| match e.requests.get(id) {
                Some((m, u)) => format!("{m} {}", cut(u, 200)),
                None => "unknown request".to_string(),
            })
            .collect();
        (inflight, e.last_activity.map(|t| t.elapsed()))
    }

    /// Evaluate a JavaScript expression in the page's main frame, awaiting promises, and
    /// deserialize its JSON value.
    pub async fn eval<T: DeserializeOwned>(&self, expression: String) -> anyhow::Result<T> {
        let params = EvaluateParams::builder()
            .expression(expression)
            .return_by_value(true)
            .await_promise(true)
            .build()
            .map_err(|e| anyhow::anyhow!("evaluate: {e}"))?;
        let r = self
            .page
            .evaluate_expression(params)
            .await
            .map_err(|e| anyhow::anyhow!("page script failed: {}", cut(&e.to_string(), 300)))?;
        r.into_value::<T>()
            .map_err(|e| anyhow::anyhow!("page script returned an unexpected value: {e}"))
    }

    /// Navigate and wait for the load event (at most [`NAVIGATION_TIMEOUT`]).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        let nav = NavigateParams::builder()
            .url(url)
            .build()
            .map_err(|e| anyhow::anyhow!("navigate: {e}"))?;
        match tokio::time::timeout(NAVIGATION_TIMEOUT, self.page.goto(nav)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(
                "navigation to {url} failed: {}",
                cut(&e.to_string(), 300)
            )),
            Err(_) => Err(anyhow::anyhow!(
                "timeout after {} ms navigating to {url}",
                NAVIGATION_TIMEOUT.as_millis()
            )),
        }
    }

    /// A real mouse click (move, press, release) at viewport coordinates in CSS pixels.
    pub async fn click_at(&self, x: f64, y: f64) -> anyhow::Result<()> {
        self.page
            .click(Point { x, y })
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("click failed: {}", cut(&e.to_string(), 300)))
    }

    /// Insert text into the focused element as if typed (one `input` event).
    pub async fn insert_text(&self, text: &str) -> anyhow::Result<()> {
        self.page
            .execute(InsertTextParams::new(text))
            .await
            .map(|_| ())
            .map_err(|_| anyhow::anyhow!("typing into the field failed"))
    }

    /// Capture a PNG.
    pub async fn capture(&self, what: Capture) -> anyhow::Result<Vec<u8>> {
        let mut p = CaptureScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .from_surface(true);
        match what {
            Capture::Viewport => {}
            Capture::FullPage { width, height } => {
                p = p.capture_beyond_viewport(true).clip(Clip {
                    x: 0.0,
                    y: 0.0,
                    width,
                    height,
                    scale: 1.0,
                });
            }
            Capture::Region {
                x,
                y,
                width,
                height,
            } => {
                p = p.clip(Clip {
                    x,
                    y,
                    width,
                    height,
                    scale: 1.0,
                });
            }
        }
        let r = self
            .page
            .execute(p.build())
            .await
            .map_err(|e| anyhow::anyhow!("screenshot failed: {}", cut(&e.to_string(), 300)))?;
        use base64::Engine as _;
        let data: &str = r.result.data.as_ref();
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| anyhow::anyhow!("screenshot data is not base64"))
    }
}

async fn listen(
    page: &Page,
    events: &Arc<Mutex<Events>>,
) -> chromiumoxide::Result<Vec<JoinHandle<()>>> {
    let mut out = Vec::new();

    let mut s = page.event_listener::<EventRequestWillBeSent>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let mut g = ev.lock();
            let id = e.request_id.inner().clone();
            if !e.request.url.starts_with("data:") && !g.done.contains(&id) {
                g.inflight.insert(id.clone());
            }
            g.requests.insert(
                id,
                (e.request.method.clone(), cut(&e.request.url, MAX_TEXT)),
            );
            g.last_activity = Some(Instant::now());
        }
    }));

    let mut s = page.event_listener::<EventResponseReceived>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let mut g = ev.lock();
            g.last_activity = Some(Instant::now());
            // Headers received: no longer in flight (a body the page never reads, or a stream,
            // would otherwise keep the page from ever being idle).
            let id = e.request_id.inner();
            g.inflight.remove(id);
            g.done.insert(id.clone());
            if e.response.status >= 400 {
                let method = g
                    .requests
                    .get(e.request_id.inner())
                    .map(|r| r.0.clone())
                    .unwrap_or_else(|| "GET".into());
                g.failed(NetEntry {
                    method,
                    url: cut(&e.response.url, MAX_TEXT),
                    status: Some(e.response.status),
                    error: None,
                });
            }
        }
    }));

    let mut s = page.event_listener::<EventLoadingFinished>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let mut g = ev.lock();
            let id = e.request_id.inner();
            g.inflight.remove(id);
            g.requests.remove(id);
            g.done.insert(id.clone());
            g.last_activity = Some(Instant::now());
        }
    }));

    let mut s = page.event_listener::<EventLoadingFailed>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let mut g = ev.lock();
            let id = e.request_id.inner();
            g.inflight.remove(id);
            g.done.insert(id.clone());
            let req = g.requests.remove(id);
            g.last_activity = Some(Instant::now());
            if e.canceled != Some(true) {
                let (method, url) = req.unwrap_or_else(|| ("GET".into(), String::new()));
                g.failed(NetEntry {
                    method,
                    url,
                    status: None,
                    error: Some(cut(&e.error_text, 200)),
                });
            }
        }
    }));

    let mut s = page.event_listener::<EventConsoleApiCalled>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            if matches!(
                e.r#type,
                ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
            ) {
                let text = e.args.iter().map(remote_text).collect::<Vec<_>>().join(" ");
                ev.lock().console("console", text);
            }
        }
    }));

    let mut s = page.event_listener::<EventExceptionThrown>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let d = &e.exception_details;
            let text = match &d.exception {
                Some(o) => format!("{} {}", d.text, remote_text(o)),
                None => d.text.clone(),
            };
            ev.lock().console("exception", text);
        }
    }));

    let mut s = page.event_listener::<EventEntryAdded>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            if e.entry.level == LogEntryLevel::Error {
                ev.lock().console("log", e.entry.text.clone());
            }
        }
    }));
    Ok(out)
}
