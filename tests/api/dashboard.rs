//! The embedded dashboard (issue 9): asset caching and fallback over plain HTTP, and the real
//! UI driven in real headless Chromium (chromiumoxide over the DevTools protocol) against the
//! real server over its self-signed TLS. Every wait polls with a deadline; nothing sleeps for
//! a fixed time to "let the page settle". On failure a PNG of the page is saved under the
//! test's temp dir (kept) and its path printed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
use chromiumoxide::cdp::browser_protocol::network::EventRequestWillBeSent;
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    EvaluateParams, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;
use parking_lot::Mutex;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::helpers::*;

/// Generous: the CI machine has 2 shared cores and several builds at once.
const DEADLINE: Duration = Duration::from_secs(30);

type Res<T = ()> = Result<T, String>;

// ------------------------------------------------------------------------------------------
// Without a browser: caching scheme, headers, fallback.

#[tokio::test]
async fn dashboard_assets_are_versioned_cached_and_fall_back_to_index() {
    let app = spawn_app().await;
    let c = app.client();

    let r = c.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["cache-control"], "no-cache");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap().to_string();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let etag = h["etag"].to_str().unwrap().to_string();
    let html = r.text().await.unwrap();
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=\"/assets/")
            .count(),
        "no inline script: {html}"
    );
    for handler in ["onclick=", "onload=", "onerror=", "onsubmit=", "style="] {
        assert!(!html.contains(handler), "inline {handler} in {html}");
    }

    // index.html references its assets with a content hash.
    let js_ref = html
        .split('"')
        .find(|s| s.starts_with("/assets/app.js?v="))
        .expect("versioned app.js reference")
        .to_string();
    let css_ref = html
        .split('"')
        .find(|s| s.starts_with("/assets/app.css?v="))
        .expect("versioned app.css reference")
        .to_string();

    // Conditional GET of index.html → 304.
    let r = c
        .get(app.url("/"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // Versioned URL → immutable; unversioned or stale → no-cache; both with ETags and 304s.
    for (path, immutable) in [
        (js_ref.as_str(), true),
        (css_ref.as_str(), true),
        ("/assets/app.js", false),
        ("/assets/app.js?v=0000000000000000", false),
    ] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let cc = r.headers()["cache-control"].to_str().unwrap().to_string();
        if immutable {
            assert_eq!(cc, "public, max-age=31536000, immutable", "{path}");
        } else {
            assert_eq!(cc, "no-cache", "{path}");
        }
        let et = r.headers()["etag"].to_str().unwrap().to_string();
        let r2 = c
            .get(app.url(path))
            .header("If-None-Match", &et)
            .send()
            .await
            .unwrap();
        assert_eq!(r2.status(), 304, "{path}");
    }
    let r = c.get(app.url(&js_ref)).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));

    // Client routes get index.html; API, SCIM and asset misses stay 404 problem+json.
    for path in ["/runs/123", "/apps/x/flows", "/audit?cursor=5"] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
        assert!(
            r.text().await.unwrap().contains("/assets/app.js?v="),
            "{path}"
        );
    }
    for path in ["/api/v1/nope", "/assets/nope.js", "/assets/index.html"] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json"),
            "{path}"
        );
    }
    let r = c.get(app.url("/scim/v2/nope")).send().await.unwrap();
    assert!(r.status().is_client_error(), "SCIM keeps its own errors");
    assert!(
        !r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "no page for SCIM misses"
    );
    // Non-GET to an unknown path is not answered with the page.
    let r = c.post(app.url("/runs/123")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

// ------------------------------------------------------------------------------------------
// Browser harness

struct Ui {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    page: Page,
    /// Every URL the page asked for (CDP `Network.requestWillBeSent`), across all navigations.
    urls: Arc<Mutex<Vec<String>>>,
    /// Console errors and uncaught exceptions (printed on failure).
    console: Arc<Mutex<Vec<String>>>,
    base: String,
    shots: PathBuf,
}

fn chromium() -> PathBuf {
    flowguard::agent::browser::find_chromium(None)
        .expect("Chromium is needed for the dashboard tests (.ci/run installs Debian's `chromium`)")
}

impl Ui {
    async fn launch(base: &str, dir: &Path) -> Ui {
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(chromium())
            .user_data_dir(&profile)
            .disable_default_args()
            // `--headless` (the default mode of the builder) and `--no-sandbox` are added by
            // the builder; the rest is the list plus the self-signed certificate.
            .no_sandbox()
            .args([
                "disable-gpu",
                "disable-background-networking",
                "no-first-run",
                "no-default-browser-check",
                "disable-component-update",
                "disable-sync",
                "disable-dev-shm-usage",
                "ignore-certificate-errors",
            ])
            .window_size(1280, 900)
            .viewport(Viewport {
                width: 1280,
                height: 900,
                device_scale_factor: Some(1.0),
                emulating_mobile: false,
                is_landscape: true,
                has_touch: false,
            })
            .launch_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config).await.expect("launch Chromium");
        let handler = tokio::spawn(async move { while let Some(_e) = handler.next().await {} });
        let page = browser.new_page("about:blank").await.expect("new page");
        let urls = Arc::new(Mutex::new(Vec::new()));
        let console = Arc::new(Mutex::new(Vec::new()));
        let mut s = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .unwrap();
        let u = urls.clone();
        tokio::spawn(async move {
            while let Some(e) = s.next().await {
                u.lock().push(e.request.url.clone());
            }
        });
        let mut s = page
            .event_listener::<EventConsoleApiCalled>()
            .await
            .unwrap();
        let c = console.clone();
        tokio::spawn(async move {
            while let Some(e) = s.next().await {
                let text: Vec<String> = e
                    .args
                    .iter()
                    .map(|a| {
                        a.value
                            .as_ref()
                            .map(|v| v.to_string())
                            .or_else(|| a.description.clone())
                            .unwrap_or_default()
                    })
                    .collect();
                c.lock()
                    .push(format!("console.{:?}: {}", e.r#type, text.join(" ")));
            }
        });
        let mut s = page.event_listener::<EventExceptionThrown>().await.unwrap();
        let c = console.clone();
        tokio::spawn(async move {
            while let Some(e) = s.next().await {
                let d = &e.exception_details;
                c.lock().push(format!(
                    "exception: {} {}",
                    d.text,
                    d.exception
                        .as_ref()
                        .and_then(|x| x.description.clone())
                        .unwrap_or_default()
                ));
            }
        });
        Ui {
            browser,
            handler,
            page,
            urls,
            console,
            base: base.to_string(),
            shots: dir.to_path_buf(),
        }
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.browser.close()).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.browser.wait()).await;
        let _ = self.browser.kill().await;
        self.handler.abort();
    }

    async fn eval<T: DeserializeOwned>(&self, js: &str) -> Res<T> {
        let p = EvaluateParams::builder()
            .expression(js)
            .return_by_value(true)
            .await_promise(true)
            .build()
            .map_err(|e| e.to_string())?;
        let r = self
            .page
            .evaluate_expression(p)
            .await
            .map_err(|e| format!("evaluate failed: {e}\n{js}"))?;
        r.into_value::<T>()
            .map_err(|e| format!("unexpected value: {e}\n{js}"))
    }

    /// Poll a JS expression until it is `true`.
    async fn wait(&self, what: &str, js: &str) -> Res {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Ok(true) = self.eval::<bool>(js).await {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!("timed out after {DEADLINE:?} waiting for {what}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for(&self, sel: &str) -> Res {
        let s = js_str(sel);
        self.wait(
            &format!("element {sel}"),
            &format!("!!document.querySelector({s})"),
        )
        .await
    }

    async fn goto(&self, path: &str) -> Res {
        let url = format!("{}{}", self.base, path);
        let res = tokio::time::timeout(DEADLINE, self.page.goto(url.as_str())).await;
        let err = match res {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => format!("navigation to {url} failed: {e}"),
            Err(_) => format!("navigation to {url} timed out"),
        };
        // On a loaded 2-core runner the driver can miss the load event of a page that did load
        // (seen as "Request timed out" with the app already calling the API). Accept the
        // navigation only if the document is ours and finished loading; the caller's waits then
        // check its content as before.
        let loaded: Res<bool> = self
            .eval(&format!(
                "location.origin === new URL({}).origin && document.readyState !== 'loading'",
                js_str(&url)
            ))
            .await;
        match loaded {
            Ok(true) => Ok(()),
            _ => Err(err),
        }
    }

    /// Click the first enabled element matching `sel` (polling until there is one).
    async fn click(&self, sel: &str) -> Res {
        let s = js_str(sel);
        self.wait(
            &format!("clickable {sel}"),
            &format!(
                "(() => {{ const e = document.querySelector({s}); if (!e || e.disabled) return false; e.click(); return true; }})()"
            ),
        )
        .await
    }

    /// Click the enabled button or link inside `scope` whose text is exactly `text`.
    async fn click_text(&self, scope: &str, text: &str) -> Res {
        let (s, t) = (js_str(scope), js_str(text));
        self.wait(
            &format!("“{text}” in {scope}"),
            &format!(
                "(() => {{ const e = [...document.querySelectorAll({s} + ' button, ' + {s} + ' a')].find(b => b.textContent.trim() === {t} && !b.disabled); if (!e) return false; e.click(); return true; }})()"
            ),
        )
        .await
    }

    /// Set a field's value as typing would (input + change events).
    async fn fill(&self, sel: &str, value: &str) -> Res {
        let (s, v) = (js_str(sel), js_str(value));
        self.wait(
            &format!("fillable {sel}"),
            &format!(
                "(() => {{ const e = document.querySelector({s}); if (!e || e.disabled) return false; e.focus(); e.value = {v}; e.dispatchEvent(new Event('input', {{bubbles: true}})); e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"
            ),
        )
        .await
    }

    /// Focus a field and type into it through the DevTools input domain (real key input).
    async fn type_into(&self, sel: &str, text: &str) -> Res {
        let s = js_str(sel);
        self.wait(
            &format!("focusable {sel}"),
            &format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.focus(); e.select && e.select(); return document.activeElement === e; }})()"
            ),
        )
        .await?;
        self.page
            .execute(InsertTextParams::new(text))
            .await
            .map_err(|e| format!("typing into {sel}: {e}"))?;
        Ok(())
    }

    async fn path(&self) -> String {
        self.eval::<String>("location.pathname")
            .await
            .unwrap_or_default()
    }

    async fn heading_is(&self, text: &str) -> Res {
        let t = js_str(text);
        self.wait(
            &format!("heading “{text}”"),
            &format!("(() => {{ const h = document.querySelector('main h1'); return !!h && h.textContent.trim() === {t}; }})()"),
        )
        .await
    }

    async fn set_width(&self, width: i64) -> Res {
        let p = SetDeviceMetricsOverrideParams::builder()
            .width(width)
            .height(900)
            .device_scale_factor(1.0)
            .mobile(false)
            .build()
            .map_err(|e| e.to_string())?;
        self.page
            .execute(p)
            .await
            .map_err(|e| format!("resize: {e}"))?;
        Ok(())
    }

    /// Save a PNG of the page; returns its path.
    async fn snapshot(&self, name: &str) -> Option<PathBuf> {
        let p = CaptureScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .build();
        let r = self.page.execute(p).await.ok()?;
        use base64::Engine as _;
        let data: &str = r.result.data.as_ref();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).ok()?;
        Some(path)
    }
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// On failure: PNG of the page (kept with the temp dir), console output, server log tail, as
/// the panic message.
async fn fail(ui: &Ui, app: TestApp, step: &str, err: String) -> String {
    let shot = ui.snapshot("dashboard-failure").await;
    let console = ui.console.lock().join("\n");
    let log = app.log_text();
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let TestApp { dir, child, .. } = app;
    drop(child);
    let kept = dir.keep();
    format!(
        "dashboard step “{step}” failed: {err}\nscreenshot: {}\nkept dir: {}\n--- browser console ---\n{console}\n--- server log (tail) ---\n{tail}",
        shot.map(|p| p.display().to_string())
            .unwrap_or_else(|| "(could not capture)".into()),
        kept.display()
    )
}

/// Run one named step; on error, save a screenshot and panic with context.
macro_rules! step {
    ($ui:expr, $app:expr, $name:expr, $body:expr) => {
        match $body.await {
            Ok(v) => v,
            Err(e) => {
                let msg = fail(&$ui, $app, $name, e).await;
                panic!("{msg}")
            }
        }
    };
}

fn ensure(cond: bool, msg: impl Into<String>) -> Res {
    if cond {
        Ok(())
    } else {
        Err(msg.into())
    }
}

async fn upload_shot(app: &TestApp, token: &str, run: &str, n: usize, png: Vec<u8>, masks: Value) {
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(png)
                .file_name("s.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("masks", masks.to_string());
    let r = app
        .client()
        .post(app.url(&format!("/api/v1/agent/runs/{run}/steps/{n}/screenshot")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

const VIEWER_EMAIL: &str = "viewer@example.test";
const VIEWER_PASSWORD: &str = "viewer-password-2026";

async fn sign_in(ui: &Ui, tenant: &str, email: &str, password: &str) -> Res {
    ui.wait_for("#signin-email").await?;
    ui.type_into("#signin-tenant", tenant).await?;
    ui.type_into("#signin-email", email).await?;
    ui.type_into("#signin-password", password).await?;
    ui.click("#signin-submit").await?;
    ui.heading_is("Applications").await
}

// ------------------------------------------------------------------------------------------
// The journey

#[tokio::test]
async fn dashboard_owner_and_viewer_journey_in_headless_chromium() {
    let app = spawn_app().await;
    let tenant = app.tenant_id();
    let owner_api = app.owner().await;
    owner_api
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": VIEWER_EMAIL, "role": "viewer", "password": VIEWER_PASSWORD})),
            201,
        )
        .await;
    // The initial password is a one-time one: the helper login clears that (keeping the
    // password), so the browser journey sees the viewer's pages.
    app.login(Some(&tenant), VIEWER_EMAIL, VIEWER_PASSWORD)
        .await;
    let ui = Ui::launch(&app.base, app.dir.path()).await;

    // Sign in as Owner through the form.
    step!(ui, app, "open the dashboard", async {
        ui.goto("/").await?;
        ui.wait_for("#signin-tenant").await?;
        ensure(
            ui.path().await == "/signin",
            "anonymous visit goes to /signin",
        )?;
        // `hidden` elements take no space even where a class sets `display` (the signed-out
        // header, "Load more" without a next page).
        let header_h: f64 = ui
            .eval("document.querySelector('#top').getBoundingClientRect().height")
            .await?;
        ensure(
            header_h == 0.0,
            "the hidden header takes no space when signed out",
        )
    });
    step!(ui, app, "wrong password shows a readable error", async {
        ui.type_into("#signin-tenant", &tenant).await?;
        ui.type_into("#signin-email", "admin@localhost").await?;
        ui.type_into("#signin-password", "not-the-password").await?;
        ui.click("#signin-submit").await?;
        ui.wait(
            "sign-in error",
            "(() => { const a = document.querySelector('form .alert.error'); return !!a && !a.hidden && a.textContent.includes('Sign-in failed'); })()",
        )
        .await
    });
    step!(
        ui,
        app,
        "sign in as Owner",
        sign_in(&ui, &tenant, "admin@localhost", &app.owner_password())
    );
    step!(ui, app, "owner sees owner navigation", async {
        for text in [
            "Audit log",
            "Keys",
            "Members",
            "Tokens",
            "LDAP",
            "AI endpoint",
            "License",
        ] {
            let t = js_str(text);
            ui.wait(
                &format!("nav link {text}"),
                &format!(
                    "[...document.querySelectorAll('#top nav a')].some(a => a.textContent === {t})"
                ),
            )
            .await?;
        }
        ui.wait_for("p.empty").await
    });

    // Create an application through the UI.
    step!(ui, app, "create an application", async {
        ui.click("#app-new").await?;
        ui.fill("#app-name", "shop").await?;
        ui.fill("#app-base-url", "https://shop.example").await?;
        ui.click("#app-save").await?;
        ui.wait(
            "the new application in the table",
            "!!document.querySelector('#apps-table') && document.querySelector('#apps-table').textContent.includes('https://shop.example')",
        )
        .await
    });
    step!(
        ui,
        app,
        "only one application form is open at a time",
        async {
            let forms: u32 = ui
            .eval(
                "(() => { const b = [...document.querySelectorAll('#apps-table button')].find(x => x.textContent.trim() === 'Edit'); b.click(); b.click(); document.querySelector('#app-new').click(); return document.querySelectorAll('#app-name').length; })()",
            )
            .await?;
            ensure(
                forms == 1,
                "Edit twice then New application leaves exactly one form",
            )
        }
    );

    // Create a flow with a navigate and a screenshot step; the server's validation message
    // lands at the step at fault first.
    step!(ui, app, "open the flow editor", async {
        ui.click_text("#top nav", "Flows").await?;
        ui.heading_is("Flows").await?;
        ui.click("#flow-new").await?;
        ui.heading_is("New flow").await
    });
    step!(ui, app, "build the flow", async {
        ui.fill("#flow-name", "checkout").await?;
        ui.fill("#flow-tags", "smoke, pay").await?;
        ui.click("#step-add").await?;
        ui.wait_for("#step-0-url").await?;
        ui.fill("#step-add-type", "screenshot").await?;
        ui.click("#step-add").await?;
        ui.wait_for("#step-1-mask").await?;
        ui.fill("#step-1-mask", "#card").await?;
        ui.click("#flow-save").await?;
        ui.wait(
            "the server's message at step 1 (url missing)",
            "(() => { const p = document.querySelector('#step-0-error'); return !!p && !p.hidden && p.textContent.length > 0 && document.querySelector('#step-0-url').getAttribute('aria-invalid') === 'true'; })()",
        )
        .await?;
        let second_ok: bool = ui
            .eval("document.querySelector('#step-1-error').hidden")
            .await?;
        ensure(second_ok, "the error is shown at the step at fault only")?;
        ui.fill("#step-0-url", "/checkout").await?;
        ui.click("#flow-save").await?;
        ui.heading_is("Flow: checkout").await?;
        ui.wait(
            "version history",
            "document.querySelector('#flow-versions').textContent.includes('Version 1 (current)')",
        )
        .await
    });
    let app_id = owner_api
        .json(Method::GET, "/api/v1/applications", None, 200)
        .await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let flows = owner_api
        .json(
            Method::GET,
            &format!("/api/v1/applications/{app_id}/flows"),
            None,
            200,
        )
        .await;
    let flow = &flows["items"][0];
    assert_eq!(flow["name"], "checkout");
    let mut tags: Vec<&str> = flow["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["pay", "smoke"]);
    assert_eq!(
        flow["steps"],
        json!([{"type": "navigate", "url": "/checkout"}, {"type": "screenshot", "mask": ["#card"], "full_page": false}])
    );

    // Trigger a run from the flows list.
    step!(ui, app, "run now", async {
        ui.click_text("#top nav", "Flows").await?;
        ui.wait_for("#flows-table").await?;
        ui.click_text("#flows-table", "Run now").await?;
        ui.wait(
            "run detail",
            "location.pathname.startsWith('/runs/') && !!document.querySelector('#run-facts')",
        )
        .await
    });
    let run_id = ui.path().await.trim_start_matches("/runs/").to_string();

    // An API agent claims it, reports both steps and uploads a masked PNG.
    let token = owner_api
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": app_id, "name": "ci"})),
            201,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = app.bearer(&token);
    let claim = agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    assert_eq!(claim["run_id"], run_id.as_str());
    for i in 0..2 {
        agent
            .json(
                Method::POST,
                &format!("/api/v1/agent/runs/{run_id}/steps"),
                Some(json!({"index": i, "status": "passed", "duration_ms": 40 + i})),
                200,
            )
            .await;
    }
    upload_shot(
        &app,
        &token,
        &run_id,
        1,
        crate::runs::white_png(160, 100),
        json!([{"selector": "#card", "x": 20, "y": 10, "width": 60, "height": 30}]),
    )
    .await;
    agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;

    // Run detail (a full reload of a client route): statuses, durations, and the screenshot
    // through its signed URL, masked.
    step!(ui, app, "run detail shows the reported run", async {
        ui.goto(&format!("/runs/{run_id}")).await?;
        ui.wait(
            "passed run with two passed steps",
            "(() => { const f = document.querySelector('#run-facts'); const s = document.querySelectorAll('#run-steps .run-step .badge.s-passed'); return !!f && f.textContent.includes('passed') && s.length === 2; })()",
        )
        .await?;
        ui.wait(
            "step durations",
            "document.querySelector('#run-steps').textContent.includes('41 ms')",
        )
        .await?;
        ui.wait(
            "the screenshot image loaded",
            "(() => { const i = document.querySelector('#shot-1'); return !!i && i.complete && i.naturalWidth > 0; })()",
        )
        .await?;
        let (src, px): (String, Vec<Vec<u8>>) = ui
            .eval(
                "(() => { const i = document.querySelector('#shot-1'); const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight; const x = c.getContext('2d'); x.drawImage(i, 0, 0); return [i.getAttribute('src'), [Array.from(x.getImageData(40, 20, 1, 1).data), Array.from(x.getImageData(5, 80, 1, 1).data)]]; })()",
            )
            .await?;
        ensure(
            src.starts_with("/shots/") && src.contains("sig="),
            format!("signed URL expected, got {src}"),
        )?;
        ensure(
            px[0] == [0, 0, 0, 255],
            format!("masked pixel is {:?}", px[0]),
        )?;
        ensure(
            px[1] == [255, 255, 255, 255],
            format!("unmasked pixel is {:?}", px[1]),
        )
    });

    // Runs list with a status filter.
    step!(ui, app, "runs list filters by status", async {
        ui.goto(&format!("/apps/{app_id}/runs?status=passed"))
            .await?;
        ui.wait(
            "the passed run listed",
            &format!("(() => {{ const t = document.querySelector('#runs-table'); return !!t && !!t.querySelector('tr[data-id=\"{run_id}\"]'); }})()"),
        )
        .await?;
        ui.goto(&format!("/apps/{app_id}/runs?status=failed"))
            .await?;
        ui.wait(
            "empty state for failed",
            "(() => { const t = document.querySelector('#runs-table'); return !!t && t.textContent.includes('No failed runs.'); })()",
        )
        .await
    });

    // Audit log with rows; at 768 px nothing overflows the page width.
    step!(ui, app, "audit page", async {
        ui.click_text("#top nav", "Audit log").await?;
        ui.heading_is("Audit log").await?;
        ui.wait(
            "audit rows",
            "(() => { const t = document.querySelector('#audit-table'); return !!t && t.querySelectorAll('tbody tr').length >= 3 && t.textContent.includes('flow.create') && t.textContent.includes('application.create'); })()",
        )
        .await?;
        ui.wait_for("#audit-export, #audit-export-note").await
    });
    step!(ui, app, "audit filter by action", async {
        ui.fill("#audit-action", "flow.create").await?;
        ui.click_text("main form", "Apply filters").await?;
        ui.wait(
            "only flow.create rows",
            "(() => { const rows = [...document.querySelectorAll('#audit-table tbody tr')]; return location.search.includes('action=flow.create') && rows.length === 1 && rows[0].textContent.includes('flow.create'); })()",
        )
        .await
    });
    step!(ui, app, "768 px layout", async {
        ui.set_width(768).await?;
        for path in [
            "/audit".to_string(),
            format!("/flows/{}", flow["id"].as_str().unwrap_or("")),
        ] {
            ui.goto(&path).await?;
            ui.wait_for("main h1").await?;
            ui.wait(
                &format!("no horizontal overflow at 768 px on {path}"),
                "document.documentElement.scrollWidth <= 768",
            )
            .await?;
        }
        ui.set_width(1280).await
    });

    // Sign out, sign in as Viewer: no create buttons anywhere, read-only editor.
    step!(ui, app, "sign out", async {
        ui.click("#signout").await?;
        ui.wait_for("#signin-email").await
    });
    step!(
        ui,
        app,
        "sign in as Viewer",
        sign_in(&ui, &tenant, VIEWER_EMAIL, VIEWER_PASSWORD)
    );
    const NO_CREATE: &str = "document.querySelectorAll('.create, #app-new, #flow-new, #run-trigger, #flow-save, #step-add, #app-save').length === 0 && ![...document.querySelectorAll('main button')].some(b => ['Edit', 'Delete', 'Run now', 'Cancel'].includes(b.textContent.trim()))";
    step!(ui, app, "viewer: applications", async {
        ui.wait_for("#apps-table").await?;
        ensure(
            ui.eval::<bool>(NO_CREATE).await?,
            "create buttons on applications",
        )?;
        let nav: Vec<String> = ui
            .eval("[...document.querySelectorAll('#top nav a')].map(a => a.textContent)")
            .await?;
        ensure(
            !nav.iter().any(|t| {
                ["Audit log", "Keys", "Members", "Tokens", "Variables"].contains(&t.as_str())
            }),
            format!("viewer navigation: {nav:?}"),
        )
    });
    step!(ui, app, "viewer: flows", async {
        ui.click_text("#top nav", "Flows").await?;
        ui.wait_for("#flows-table").await?;
        ensure(ui.eval::<bool>(NO_CREATE).await?, "create buttons on flows")
    });
    step!(ui, app, "viewer: runs", async {
        ui.click_text("#top nav", "Runs").await?;
        ui.wait_for("#runs-table tbody tr[data-id]").await?;
        ensure(ui.eval::<bool>(NO_CREATE).await?, "create buttons on runs")
    });
    step!(ui, app, "viewer: read-only flow", async {
        ui.click_text("#top nav", "Flows").await?;
        ui.click_text("#flows-table", "checkout").await?;
        ui.heading_is("Flow: checkout").await?;
        ui.wait(
            "disabled editor",
            "document.querySelector('#flow-name').disabled && document.querySelector('#step-1-mask').disabled",
        )
        .await?;
        ensure(ui.eval::<bool>(NO_CREATE).await?, "create buttons on flow")
    });
    step!(ui, app, "viewer: audit page refused", async {
        ui.goto("/audit").await?;
        ui.heading_is("Not available").await
    });

    // Nothing was requested from any host but the appliance.
    let urls = ui.urls.lock().clone();
    let foreign: Vec<&String> = urls
        .iter()
        .filter(|u| {
            if u.starts_with("data:") || u.starts_with("about:") {
                return false;
            }
            match url::Url::parse(u) {
                Ok(p) => {
                    !(p.scheme() == "https"
                        && p.host_str() == Some("127.0.0.1")
                        && p.port() == Some(app.addr.port()))
                }
                Err(_) => true,
            }
        })
        .collect();
    step!(ui, app, "only the appliance was contacted", async {
        ensure(
            urls.len() > 20,
            format!("too few requests recorded: {urls:?}"),
        )?;
        ensure(
            urls.iter().any(|u| u.contains("/shots/")),
            "the screenshot request was recorded",
        )?;
        ensure(foreign.is_empty(), format!("foreign requests: {foreign:?}"))
    });
    step!(ui, app, "no script errors", async {
        let c = ui.console.lock().clone();
        let bad: Vec<&String> = c
            .iter()
            .filter(|l| l.starts_with("exception") || l.contains("Content Security Policy"))
            .collect();
        ensure(bad.is_empty(), format!("{bad:?}"))
    });
    ui.close().await;
}

// ------------------------------------------------------------------------------------------
// Issue 23: the PlatformAdmin pages and the 1280 px top bar

#[tokio::test]
async fn dashboard_platform_admin_pages_and_one_row_top_bar() {
    let app = spawn_app().await;
    // Both sign in below with the passwords they hold; the helper logins first replace the
    // one-time flag (same password), else the API sends them to Account first (issue 24 item 8).
    app.platform_admin().await;
    app.owner().await;
    let ui = Ui::launch(&app.base, app.dir.path()).await;
    let pa_email = "platform-admin@localhost".to_string();
    let pa_pw = app
        .creds
        .get("platform_admin_password")
        .cloned()
        .unwrap_or_default();

    step!(
        ui,
        app,
        "the sign-in page says where the first credentials are",
        async {
            ui.goto("/").await?;
            ui.wait_for("#signin-help").await?;
            let t: String = ui
                .eval("document.querySelector('#signin-help').textContent")
                .await?;
            ensure(t.contains("initial-credentials"), format!("help text: {t}"))
        }
    );
    step!(ui, app, "a PlatformAdmin lands on Tenants", async {
        ui.type_into("#signin-email", &pa_email).await?;
        ui.type_into("#signin-password", &pa_pw).await?;
        ui.click("#signin-submit").await?;
        ui.heading_is("Tenants").await?;
        ui.wait_for("#tenants-table tr[data-tenant]").await?;
        let current: Vec<String> = ui
            .eval("[...document.querySelectorAll('#top nav [aria-current=page]')].map(a => a.textContent)")
            .await?;
        ensure(
            current == vec!["Tenants".to_string()],
            format!("highlighted: {current:?}"),
        )?;
        // No focus ring on the heading focused by the page load.
        let outline: String = ui
            .eval("getComputedStyle(document.querySelector('main h1')).outlineStyle")
            .await?;
        ensure(
            outline == "none",
            format!("heading outline after load: {outline}"),
        )
    });
    step!(
        ui,
        app,
        "create a tenant: the Owner's password is shown once and the list refreshes",
        async {
            ui.fill("#tenant-name", "weu-abcd12").await?;
            ui.fill("#tenant-owner", "o@acme.example").await?;
            ui.click("#tenant-create").await?;
            ui.wait(
                "the name is marked",
                "document.querySelector('#tenant-name').getAttribute('aria-invalid') === 'true'",
            )
            .await?;
            ui.fill("#tenant-name", "Acme").await?;
            ui.click("#tenant-create").await?;
            ui.wait_for("#tenant-owner-password").await?;
            ui.wait(
            "the new tenant in the list",
            "[...document.querySelectorAll('#tenants-table td')].some(td => td.textContent === 'Acme')",
        )
        .await
        }
    );
    step!(
        ui,
        app,
        "license page: how-to, trial button, countdown",
        async {
            ui.click_text("#top nav", "License").await?;
            ui.heading_is("License").await?;
            ui.wait_for("#license-howto").await?;
            let t: String = ui
                .eval("document.querySelector('#license-howto').textContent")
                .await?;
            ensure(
                t.contains("flowguard license install"),
                format!("how-to: {t}"),
            )?;
            ui.eval::<bool>("(window.confirm = () => true, true)")
                .await?;
            ui.click("#trial-start").await?;
            ui.wait_for("#trial-countdown").await?;
            let t: String = ui
                .eval("document.querySelector('#trial-countdown').textContent")
                .await?;
            ensure(t.contains("30 days left"), format!("countdown: {t}"))
        }
    );
    step!(
        ui,
        app,
        "catalog audit: filters, key/value details, linked targets",
        async {
            ui.goto("/platform/audit?action=license.trial_start")
                .await?;
            ui.heading_is("Catalog audit").await?;
            ui.wait_for("#caudit-table dl.kv").await?;
            let n: u32 = ui
                .eval("document.querySelectorAll('#caudit-table tr[data-seq]').length")
                .await?;
            ensure(n == 1, format!("{n} rows for the filter"))?;
            let linked: bool = ui
                .eval("!!document.querySelector('#caudit-table a[href^=\"/platform/license\"]')")
                .await?;
            ensure(linked, "the target is a link")
        }
    );
    step!(
        ui,
        app,
        "the Owner's top bar is one row at 1280 px",
        async {
            ui.click("#signout").await?;
            ui.wait_for("#signin-email").await?;
            ui.set_width(1280).await?;
            sign_in(&ui, "default", "admin@localhost", &app.owner_password()).await?;
            // The trial runs, so the Owner sees the countdown banner.
            ui.wait(
                "trial banner",
                "!!document.querySelector('#banners [data-kind=trial_active]')",
            )
            .await?;
            let rows: Value = ui
            .eval("(() => { const rs = [...document.querySelectorAll('#top nav li, #top .brand, #top .who')].map(e => e.getBoundingClientRect()); const oneLine = Math.max(...rs.map(r => r.top)) < Math.min(...rs.map(r => r.bottom)); const t = document.querySelector('#top').getBoundingClientRect(); return { distinct: oneLine ? 1 : 2, height: t.height, width: document.documentElement.clientWidth }; })()")
            .await?;
            let shot = ui.snapshot("top-bar-1280").await;
            ensure(
                rows["distinct"] == 1 && rows["height"].as_f64().unwrap_or(999.0) < 70.0,
                format!("top bar wraps at 1280 px: {rows} (screenshot {shot:?})"),
            )?;
            // The screenshot, read as an image: the bar's dark colour spans one band at the top.
            if let Some(p) = shot {
                let bytes = std::fs::read(&p).map_err(|e| e.to_string())?;
                let mut r = png::Decoder::new(std::io::Cursor::new(bytes))
                    .read_info()
                    .map_err(|e| e.to_string())?;
                let mut rgba = vec![0; r.output_buffer_size()];
                let info = r.next_frame(&mut rgba).map_err(|e| e.to_string())?;
                let (w, hgt) = (info.width, info.height);
                let bpp = info.color_type.samples() as u32;
                let dark = |y: u32| {
                    let i = ((y * w + 5) * bpp) as usize;
                    let px = &rgba[i..i + 3];
                    px[0] < 60 && px[1] < 80 && px[2] > 50
                };
                let img_h = hgt;
                let band = (0..img_h.min(200)).take_while(|&y| dark(y)).count();
                ensure(
                    (30..70).contains(&band),
                    format!("top bar band in the screenshot is {band} px high"),
                )?;
            }
            Ok::<(), String>(())
        }
    );
    let (_, flow_id, _) =
        crate::newuser::flow_with_history(&app, &[true, false, true, false, false]).await;
    step!(
        ui,
        app,
        "the flow page shows the run history at a glance",
        async {
            ui.goto(&format!("/flows/{flow_id}")).await?;
            ui.heading_is("Flow: home").await?;
            ui.wait_for("#flow-strip").await?;
            let v: Value = ui
            .eval("({ bars: document.querySelectorAll('#flow-strip rect').length, failed: document.querySelectorAll('#flow-strip rect.run-failed').length, durations: document.querySelectorAll('#flow-durations rect').length, stats: document.querySelector('#flow-stats').textContent, flaky: !!document.querySelector('#flow-flaky'), runNow: !!document.querySelector('#run-now') })")
            .await?;
            ensure(
                v["bars"] == 5 && v["failed"] == 3 && v["durations"] == 5,
                format!("history bars: {v}"),
            )?;
            let stats = v["stats"].as_str().unwrap_or_default();
            ensure(
                stats.contains("40% passed") && stats.contains("failing since run 4"),
                format!("stats: {stats}"),
            )?;
            ensure(v["flaky"] == true, "flips on one version are marked flaky")?;
            ensure(v["runNow"] == true, "Run now on the flow page")
        }
    );
    ui.close().await;
}

/// Issue 22: "Run now" with no agent anywhere: the embedded runner runs the flow and the run
/// page turns `passed` by itself (live events, no reload, no refresh button).
#[tokio::test]
async fn run_now_without_an_agent_turns_the_run_page_passed_by_itself() {
    let web = crate::runner::serve_page().await;
    let (app, _profiles) = crate::runner::spawn_runner(1).await;
    let owner = app.owner().await;
    let a = crate::runner::make_app(&owner, &web).await;
    crate::runner::make_flow(
        &owner,
        &a,
        json!([
            {"type": "navigate", "url": "/"},
            {"type": "assert", "selector": "#title", "assertion": "text_equals", "expected": "Shop"}
        ]),
    )
    .await;
    let ui = Ui::launch(&app.base, app.dir.path()).await;
    let res: Res = async {
        ui.goto("/").await?;
        sign_in(&ui, &app.tenant_id(), "admin@localhost", &app.owner_password()).await?;
        ui.goto(&format!("/apps/{a}/flows")).await?;
        ui.wait_for("#flows-table").await?;
        ui.click_text("#flows-table", "Run now").await?;
        ui.wait("the run page", "location.pathname.startsWith('/runs/') && !!document.querySelector('#run-facts')")
            .await?;
        // A marker that a full page load would wipe.
        ui.eval::<bool>("(window.__fgNoReload = true, true)").await?;
        ensure(
            !ui.eval::<bool>("[...document.querySelectorAll('button')].some(b => b.textContent === 'Refresh')")
                .await?,
            "the run page has no refresh button",
        )?;
        ui.wait(
            "the run page showing passed by itself",
            "window.__fgNoReload === true && (document.querySelector('#run-facts .badge')?.textContent === 'passed') && document.querySelectorAll('#run-steps .badge.s-passed').length === 2",
        )
        .await
    }
    .await;
    if let Err(e) = res {
        let msg = fail(&ui, app, "run now turns passed", e).await;
        panic!("{msg}");
    }
    ui.close().await;
}

// ------------------------------------------------------------------------------------------
// Issue 23, second wave: sign-in methods, Account tenant name.

/// `GET /api/v1/auth/methods` is deployment-wide (no tenant named, same keys for everybody);
/// the sign-in page hides the account-type (LDAP) choice while no tenant has a directory and
/// shows it once one has; Account shows the tenant's name (`/me` `tenant_name`).
#[tokio::test]
async fn sign_in_offers_ldap_only_when_configured_and_account_names_the_tenant() {
    let app = spawn_with(Opts {
        config: Some(crate::ldap_support::APP_CONFIG.to_string()),
        ..Default::default()
    })
    .await;
    let owner = app.owner().await;
    let anon = app.anonymous();
    let m = anon
        .json(Method::GET, "/api/v1/auth/methods", None, 200)
        .await;
    assert_eq!(m, json!({"password": true, "ldap": false, "oidc": false}));
    let me = owner.json(Method::GET, "/api/v1/me", None, 200).await;
    let tenant_name = me["tenant_name"].as_str().unwrap_or_default().to_string();
    assert!(!tenant_name.is_empty(), "/me names the tenant: {me}");
    let pa = app.platform_admin().await;
    let pme = pa.json(Method::GET, "/api/v1/me", None, 200).await;
    assert!(pme["tenant_name"].is_null(), "{pme}");

    let ui = Ui::launch(&app.base, app.dir.path()).await;
    let mode_hidden = "(() => { const f = document.querySelector('form[data-methods]'); if (!f) return null; return document.querySelector('#signin-mode').closest('.field').hidden; })()";
    step!(ui, app, "no directory: no account-type choice", async {
        ui.goto("/").await?;
        ui.wait_for("form[data-methods]").await?;
        let hidden: Option<bool> = ui.eval(mode_hidden).await?;
        ensure(
            hidden == Some(true),
            format!("account type hidden: {hidden:?}"),
        )?;
        let visible: bool = ui
            .eval("document.querySelector('#signin-mode').getClientRects().length > 0")
            .await?;
        ensure(!visible, "the select is not rendered")
    });
    step!(ui, app, "Account shows the tenant's name", async {
        sign_in(
            &ui,
            &app.tenant_id(),
            "admin@localhost",
            &app.owner_password(),
        )
        .await?;
        ui.goto("/account").await?;
        ui.heading_is("Account").await?;
        ui.wait_for("#account-tenant").await?;
        let t: String = ui
            .eval("document.querySelector('#account-tenant').textContent")
            .await?;
        ensure(
            t.contains(&tenant_name) && t.contains(&app.tenant_id()),
            format!("tenant on Account: {t}"),
        )?;
        ui.click("#signout").await?;
        ui.wait_for("#signin-email").await
    });

    let pki = crate::ldap_support::Pki::new();
    owner
        .json(
            Method::PUT,
            "/api/v1/sso/ldap",
            Some(crate::ldap_support::config_body(
                "ldaps://localhost:636",
                &pki.ca_pem,
                json!({}),
            )),
            200,
        )
        .await;
    let m = anon
        .json(Method::GET, "/api/v1/auth/methods", None, 200)
        .await;
    assert_eq!(m, json!({"password": true, "ldap": true, "oidc": false}));
    step!(
        ui,
        app,
        "a directory configured: the choice is offered",
        async {
            ui.goto("/signin").await?;
            ui.wait("methods loaded with ldap", "document.querySelector('form[data-methods]')?.dataset.methods.includes('ldap') === true").await?;
            let hidden: Option<bool> = ui.eval(mode_hidden).await?;
            ensure(
                hidden == Some(false),
                format!("account type hidden: {hidden:?}"),
            )
        }
    );
    ui.close().await;
}

/// Issue 23: the flow editor shows only the options of the step's type (src/domain/flow.rs
/// `Step`), and within a type only those its choice uses (a wait for `url` has no selector,
/// only `attr_equals` has an attribute); options hidden are not sent.
#[tokio::test]
async fn flow_editor_shows_only_the_options_of_the_step_type() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "Editor", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_string();
    let ui = Ui::launch(&app.base, app.dir.path()).await;
    let fields = |i: usize| {
        format!("[...document.querySelectorAll('#steps li[data-step=\"{i}\"] [data-field]')].map(e => e.dataset.field).join(',')")
    };
    let uir = &ui;
    let expect = |i: usize, want: &'static str| {
        let js = format!("{} === {}", fields(i), js_str(want));
        async move {
            let ui = uir;
            match ui
                .wait(&format!("step {} options {want}", i + 1), &js)
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => {
                    let got: String = ui.eval(&fields(i)).await.unwrap_or_default();
                    Err(format!("{e}; shown: {got}"))
                }
            }
        }
    };
    step!(ui, app, "sign in and open a new flow", async {
        ui.goto("/").await?;
        sign_in(
            &ui,
            &app.tenant_id(),
            "admin@localhost",
            &app.owner_password(),
        )
        .await?;
        ui.goto(&format!("/apps/{app_id}/flows/new")).await?;
        ui.wait_for("#step-add").await?;
        ui.fill("#flow-name", "checkout").await
    });
    step!(
        ui,
        app,
        "one step of each kind shows its own options",
        async {
            for t in ["navigate", "click", "wait", "assert"] {
                ui.fill("#step-add-type", t).await?;
                ui.click("#step-add").await?;
            }
            expect(0, "type,url").await?;
            expect(1, "type,selector,nth,force").await?;
            expect(2, "type,for,selector,timeout_ms").await?;
            expect(3, "type,selector,assertion").await
        }
    );
    step!(ui, app, "choices inside a type change the options", async {
        ui.fill("#step-2-for", "url").await?;
        expect(2, "type,for,url,timeout_ms").await?;
        ui.fill("#step-2-for", "network-idle").await?;
        expect(2, "type,for,timeout_ms").await?;
        ui.fill("#step-2-for", "url").await?;
        expect(2, "type,for,url,timeout_ms").await?;
        ui.fill("#step-3-assertion", "attr_equals").await?;
        expect(3, "type,selector,assertion,attribute,expected").await?;
        ui.fill("#step-3-assertion", "text_contains").await?;
        expect(3, "type,selector,assertion,expected").await?;
        ui.fill("#step-1-type", "fill").await?;
        expect(1, "type,selector,value,clear_first").await
    });
    step!(ui, app, "save: the flow has only what was shown", async {
        ui.fill("#step-0-url", "/").await?;
        ui.fill("#step-1-selector", "#q").await?;
        ui.fill("#step-1-value", "shoes").await?;
        ui.fill("#step-2-url", "/done").await?;
        ui.fill("#step-3-selector", "#title").await?;
        ui.fill("#step-3-expected", "Shop").await?;
        ui.click("#flow-save").await?;
        ui.wait(
            "the saved flow page",
            "location.pathname.startsWith('/flows/') && !!document.querySelector('#flow-versions')",
        )
        .await
    });
    let flow_id = ui.path().await.trim_start_matches("/flows/").to_string();
    let f = owner
        .json(Method::GET, &format!("/api/v1/flows/{flow_id}"), None, 200)
        .await;
    let steps = &f["steps"];
    assert_eq!(steps[0], json!({"type": "navigate", "url": "/"}), "{f}");
    assert_eq!(steps[1]["type"], "fill", "{f}");
    assert_eq!(steps[1]["value"], "shoes", "{f}");
    assert_eq!(steps[2]["for"], "url", "{f}");
    assert_eq!(steps[2]["url"], "/done", "{f}");
    assert!(steps[2].get("selector").is_none(), "{f}");
    assert_eq!(steps[3]["assertion"], "text_contains", "{f}");
    assert!(steps[3].get("attribute").is_none(), "{f}");
    ui.close().await;
}

/// Issue 23: a step's screenshot renders inline on the run page and the page keeps its signed
/// link valid (`screenshots.url_ttl_secs = 2` here): once the first link has expired (the
/// server refuses it) the page's link works, and an image the browser re-requests with the
/// expired link is shown again through a renewed one.
#[tokio::test]
async fn run_page_renews_an_expired_screenshot_link() {
    let app = spawn_with(Opts {
        config: Some("[screenshots]\nurl_ttl_secs = 2\n".into()),
        ..Default::default()
    })
    .await;
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "Shots", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_string();
    let f = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{app_id}/flows"),
            Some(json!({"name": "shot", "steps": [{"type": "screenshot"}]})),
            201,
        )
        .await;
    let flow_id = f["id"].as_str().unwrap().to_string();
    let run = owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{flow_id}/runs"),
            Some(json!({})),
            201,
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let token = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": app_id, "name": "shots"})),
            201,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = app.bearer(&token);
    agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/claim?run={run_id}"),
            None,
            200,
        )
        .await;
    agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/steps"),
            Some(json!({"index": 0, "status": "passed", "duration_ms": 12})),
            200,
        )
        .await;
    upload_shot(
        &app,
        &token,
        &run_id,
        0,
        crate::runs::white_png(160, 100),
        json!([]),
    )
    .await;
    agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;

    let ui = Ui::launch(&app.base, app.dir.path()).await;
    let loaded = "(() => { const i = document.querySelector('#shot-0'); return !!i && i.complete && i.naturalWidth === 160; })()";
    step!(ui, app, "the screenshot renders inline", async {
        ui.goto("/").await?;
        sign_in(
            &ui,
            &app.tenant_id(),
            "admin@localhost",
            &app.owner_password(),
        )
        .await?;
        ui.goto(&format!("/runs/{run_id}")).await?;
        ui.wait("the inline image", loaded).await
    });
    let first: String = step!(ui, app, "the first signed link", async {
        ui.eval::<String>("document.querySelector('#shot-0').getAttribute('src')")
            .await
    });
    assert!(
        first.starts_with("/shots/") && first.contains("sig="),
        "{first}"
    );
    step!(ui, app, "the first link expires", async {
        ui.wait(
            "the server refusing the first link",
            &format!("fetch({}).then(r => r.status === 403)", js_str(&first)),
        )
        .await
    });
    step!(ui, app, "the page's link is renewed and works", async {
        ui.wait(
            "a renewed link that the server serves",
            &format!(
                "(() => {{ const a = document.querySelector('#shot-0-link'); if (!a || a.getAttribute('href') === {f}) return false; return fetch(a.href).then(r => r.status === 200); }})()",
                f = js_str(&first)
            ),
        )
        .await
    });
    step!(
        ui,
        app,
        "an image re-requested with the expired link is shown again",
        async {
            ui.eval::<bool>(&format!(
                "(() => {{ document.querySelector('#shot-0').setAttribute('src', {}); return true; }})()",
                js_str(&first)
            ))
            .await?;
            ui.wait(
                "the image loaded again through a renewed link",
                &format!(
                    "(() => {{ const i = document.querySelector('#shot-0'); return !!i && Number(i.dataset.renewed || 0) >= 1 && i.getAttribute('src') !== {} && i.complete && i.naturalWidth === 160; }})()",
                    js_str(&first)
                ),
            )
            .await?;
            // Still the screenshot: a white pixel read back from the image.
            let px: Vec<u8> = ui
                .eval("(() => { const i = document.querySelector('#shot-0'); const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight; const x = c.getContext('2d'); x.drawImage(i, 0, 0); return Array.from(x.getImageData(5, 80, 1, 1).data); })()")
                .await?;
            ensure(px == [255, 255, 255, 255], format!("pixel {px:?}"))
        }
    );
    ui.close().await;
}

/// Issue 23: the PlatformAdmin's Keys page (`GET /api/v1/platform/keys`: versions and dates of
/// every tenant, no key material) and Backups page (list, start one, see it finish), with the
/// PlatformAdmin's top bar still one row at 1280 px (screenshot read back as an image).
#[tokio::test]
async fn platform_admin_keys_and_backups_pages() {
    let app = spawn_app().await;
    let pa = app.platform_admin().await;
    app.owner().await;
    let (second, _) = create_tenant(&app, "Second", "owner2@example.test");
    let k = pa
        .json(Method::GET, "/api/v1/platform/keys", None, 200)
        .await;
    let items = k["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{k}");
    assert!(k["rotation_days"].as_u64().unwrap() > 0, "{k}");
    for it in items {
        let mut keys: Vec<&str> = it.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "active_version",
                "next_rotation_at",
                "rotation_days",
                "rotation_due",
                "tenant_id",
                "versions"
            ],
            "{it}"
        );
        for v in it["versions"].as_array().unwrap() {
            let mut vk: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            vk.sort();
            assert_eq!(
                vk,
                [
                    "created_at",
                    "db_key_state",
                    "dek_state",
                    "state",
                    "version"
                ],
                "{v}"
            );
        }
    }
    let pa_pw = app
        .creds
        .get("platform_admin_password")
        .cloned()
        .unwrap_or_default();
    let ui = Ui::launch(&app.base, app.dir.path()).await;
    step!(ui, app, "PlatformAdmin: Keys page", async {
        ui.goto("/").await?;
        ui.wait_for("#signin-email").await?;
        ui.type_into("#signin-email", "platform-admin@localhost")
            .await?;
        ui.type_into("#signin-password", &pa_pw).await?;
        ui.click("#signin-submit").await?;
        ui.heading_is("Tenants").await?;
        ui.click_text("#top nav", "Keys").await?;
        ui.heading_is("Tenant keys").await?;
        ui.wait_for("#platform-keys-table tr[data-tenant]").await?;
        let rows: Vec<String> = ui
            .eval("[...document.querySelectorAll('#platform-keys-table tr[data-tenant]')].map(r => r.textContent)")
            .await?;
        ensure(rows.len() == 2, format!("rows: {rows:?}"))?;
        ensure(
            rows.iter()
                .any(|r| r.contains("Second") && r.contains(&second) && r.contains("v1 active")),
            format!("rows: {rows:?}"),
        )
    });
    step!(
        ui,
        app,
        "PlatformAdmin: start a backup and see it finish",
        async {
            ui.click_text("#top nav", "Backups").await?;
            ui.heading_is("Backups").await?;
            ui.wait_for("#backups-table tbody tr").await?;
            ui.click("#backup-start").await?;
            ui.wait(
                "the backup listed as done",
                "!!document.querySelector('#backups-table tr[data-status=done] code')",
            )
            .await?;
            let current: Vec<String> = ui
            .eval("[...document.querySelectorAll('#top nav [aria-current=page]')].map(a => a.textContent)")
            .await?;
            ensure(
                current == vec!["Backups".to_string()],
                format!("highlighted: {current:?}"),
            )
        }
    );
    let dir: String = step!(ui, app, "the directory shown", async {
        ui.eval::<String>(
            "document.querySelector('#backups-table tr[data-status=done] code').textContent",
        )
        .await
    });
    let list = pa
        .json(Method::GET, "/api/v1/platform/backups", None, 200)
        .await;
    assert_eq!(list["items"][0]["dir"], dir.as_str(), "{list}");
    assert!(
        std::path::Path::new(&dir).join("manifest.json").exists(),
        "{dir}"
    );
    step!(
        ui,
        app,
        "the PlatformAdmin's top bar is one row at 1280 px",
        async {
            ui.set_width(1280).await?;
            let rows: Value = ui
            .eval("(() => { const rs = [...document.querySelectorAll('#top nav li, #top .brand, #top .who')].map(e => e.getBoundingClientRect()); return { oneLine: Math.max(...rs.map(r => r.top)) < Math.min(...rs.map(r => r.bottom)), height: document.querySelector('#top').getBoundingClientRect().height }; })()")
            .await?;
            let shot = ui.snapshot("platform-backups-1280").await;
            ensure(
                rows["oneLine"] == true && rows["height"].as_f64().unwrap_or(999.0) < 70.0,
                format!("top bar wraps: {rows} ({shot:?})"),
            )?;
            let p = shot.ok_or("no screenshot")?;
            let bytes = std::fs::read(&p).map_err(|e| e.to_string())?;
            let mut r = png::Decoder::new(std::io::Cursor::new(bytes))
                .read_info()
                .map_err(|e| e.to_string())?;
            let mut rgba = vec![0; r.output_buffer_size()];
            let info = r.next_frame(&mut rgba).map_err(|e| e.to_string())?;
            let bpp = info.color_type.samples() as u32;
            let dark = |y: u32| {
                let i = ((y * info.width + 5) * bpp) as usize;
                let px = &rgba[i..i + 3];
                px[0] < 60 && px[1] < 80 && px[2] > 50
            };
            let band = (0..info.height.min(200)).take_while(|&y| dark(y)).count();
            ensure(
                (30..70).contains(&band),
                format!("top bar band in the screenshot is {band} px high"),
            )
        }
    );
    ui.close().await;
}

/// Issue 20's Integration page in headless Chromium (issue 23): an Owner connects a tracker (the
/// fake Jira of `tickets.rs`, its private CA pasted), the saved facts show the token only as
/// "set", the Test button lists the passed checks, and a failing run's delivery is shown on the
/// run page as a filed ticket linked to the tracker.
#[tokio::test]
async fn integration_page_configures_tests_and_shows_the_delivery() {
    let tr = crate::tickets::start_tracker();
    let app = spawn_with(Opts {
        config: Some(crate::tickets::config(tr.addr.port())),
        ..Default::default()
    })
    .await;
    let w = crate::tickets::world(&app).await;
    let ui = Ui::launch(&app.base, app.dir.path()).await;
    step!(
        ui,
        app,
        "connect a tracker on the Integration page",
        async {
            ui.goto("/").await?;
            sign_in(
                &ui,
                &app.tenant_id(),
                "admin@localhost",
                &app.owner_password(),
            )
            .await?;
            ui.goto(&format!("/apps/{}/integration", w.app_id)).await?;
            ui.heading_is("Ticket integration").await?;
            let current: Vec<String> = ui
            .eval("[...document.querySelectorAll('#top nav [aria-current=page]')].map(a => a.textContent)")
            .await?;
            ensure(
                current == vec!["Integration".to_string()],
                format!("highlighted: {current:?}"),
            )?;
            ui.fill("#int-provider", "jira").await?;
            ui.fill("#int-base-url", &tr.url("/jira")).await?;
            ui.fill("#int-project", "ED").await?;
            ui.fill("#int-token", crate::tickets::TOKEN).await?;
            ui.fill("#int-ca", &tr.ca_pem).await?;
            ui.fill("#int-labels", "flowguard, e2e").await?;
            ui.eval::<bool>("(() => { const c = document.querySelector('#int-file'); c.checked = true; return true; })()")
            .await?;
            ui.click("form button[type=submit]").await?;
            ui.wait_for("#integration-facts").await?;
            let facts: String = ui
                .eval("document.querySelector('#integration-facts').textContent")
                .await?;
            ensure(
                facts.contains("jira")
                    && facts.contains("ED")
                    && facts.contains("set (write-only)"),
                format!("facts: {facts}"),
            )?;
            let html: String = ui.eval("document.documentElement.outerHTML").await?;
            ensure(
                !html.contains(crate::tickets::TOKEN),
                "the token is never shown back",
            )
        }
    );
    step!(ui, app, "the Test button lists the checks", async {
        ui.click("#int-test").await?;
        ui.wait(
            "the test result",
            "document.querySelector('#integration-test h3')?.textContent === 'All checks passed'",
        )
        .await?;
        let checks: Vec<String> = ui
            .eval("[...document.querySelectorAll('#integration-test ul.checks li')].map(li => li.textContent)")
            .await?;
        ensure(
            checks.len() == 4
                && checks.iter().all(|c| c.starts_with("passed"))
                && checks.iter().any(|c| c.contains("authentication")),
            format!("checks: {checks:?}"),
        )
    });
    let rid = crate::tickets::run_once(
        &w,
        crate::tickets::End::StepFails("Timeout 30000ms waiting for #pay"),
    )
    .await;
    step!(ui, app, "the run page shows the filed ticket", async {
        ui.goto(&format!("/runs/{rid}")).await?;
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            ui.wait_for("#run-ticket").await?;
            let filed: bool = ui
                .eval("document.querySelector('#run-ticket .badge')?.textContent === 'filed'")
                .await?;
            if filed {
                break;
            }
            ensure(Instant::now() < end, "the ticket was never shown as filed")?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            ui.goto(&format!("/runs/{rid}")).await?;
        }
        let (text, href): (String, String) = ui
            .eval("[document.querySelector('#run-ticket-link').textContent, document.querySelector('#run-ticket-link').href]")
            .await?;
        ensure(
            text.starts_with("ED-") && href.ends_with(&format!("/jira/browse/{text}")),
            format!("ticket link: {text} {href}"),
        )
    });
    ui.close().await;
}
