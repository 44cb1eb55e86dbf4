//! The built-in agent (`flowguard agent run`) against the real appliance and real headless
//! Chromium, on a small web app served by the test harness on 127.0.0.1:0.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const SECRET: &str = "Tok3n-Canary-9931-xq";
const PASSWORD: &str = "Pw-Canary-5521-kv";

const LOGIN_HTML: &str = r#"<!doctype html>
<html><head><title>Login</title>
<style>
 body { margin: 0; font: 16px sans-serif; background: #fff; }
 #overlay { position: absolute; left: 600px; top: 20px; width: 200px; height: 60px; background: rgba(0,0,255,0.3); }
 #covered { position: absolute; left: 620px; top: 30px; width: 120px; height: 30px; }
 #token { position: absolute; left: 40px; top: 400px; width: 400px; height: 40px; font-size: 24px; color: #f00; background: #ff0; border: 0; }
</style></head>
<body>
 <form id="f" onsubmit="return false">
  <input id="user" name="user" type="text">
  <input id="password" name="password" type="password">
  <select id="plan"><option value="basic">Basic plan</option><option value="pro">Pro plan</option><option value="ent">Enterprise</option></select>
  <button id="go" type="button">Sign in</button>
 </form>
 <div id="tabs"><button class="tab" type="button">one</button><button class="tab" type="button">two</button></div>
 <p id="tab-state">none</p>
 <button id="covered" type="button">hidden under overlay</button>
 <div id="overlay"></div>
 <input id="token" type="text" autocomplete="off">
 <p id="gone">temporary</p>
 <script>
  document.querySelectorAll('.tab').forEach((b, i) => b.addEventListener('click', () => {
    document.getElementById('tab-state').textContent = 'tab ' + (i + 1);
  }));
  document.getElementById('covered').addEventListener('click', (e) => e.target.setAttribute('data-clicked', 'yes'));
  document.getElementById('go').addEventListener('click', () => {
    const u = document.getElementById('user').value;
    const pw = document.getElementById('password').value;
    console.error('debug: login attempt with password=' + pw);
    fetch('/api/missing?pw=' + encodeURIComponent(pw)).catch(() => {});
    document.getElementById('gone').remove();
    history.pushState({}, '', '/welcome?user=' + encodeURIComponent(u));
    setTimeout(() => {
      const p = document.createElement('p');
      p.id = 'welcome';
      p.setAttribute('data-user', u);
      p.textContent = 'Welcome,   ' + u + '!';
      document.body.appendChild(p);
    }, 800);
  });
 </script>
</body></html>"#;

const CARD_HTML: &str = r#"<!doctype html>
<html><head><title>Card</title>
<style>
 body { margin: 0; background: #fff; }
 .card-number { position: absolute; left: 100px; top: 150px; width: 300px; height: 40px; background: #0f0; color: #f0f; font-size: 28px; }
 #banner { position: absolute; left: 500px; top: 150px; width: 200px; height: 40px; background: #00f; }
</style></head>
<body><div class="card-number">4111 1111 1111 1111</div><div id="banner"></div></body></html>"#;

/// The web app under test: a tiny HTTP/1.1 server on 127.0.0.1:0 (one request per connection).
async fn serve_web_app() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let route = path.split('?').next().unwrap_or("/");
                let (status, ctype, body) = match route {
                    "/login" | "/welcome" => ("200 OK", "text/html", LOGIN_HTML.to_string()),
                    "/card" => ("200 OK", "text/html", CARD_HTML.to_string()),
                    _ => ("404 Not Found", "text/plain", "not found".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

struct World {
    app: TestApp,
    owner: Session,
    app_id: String,
    token: String,
    cert_path: PathBuf,
}

async fn world() -> World {
    let web = serve_web_app().await;
    let app = spawn_app().await;
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "webapp", "base_url": web})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_string();
    for (name, value, secret) in [
        ("user", "alice", false),
        ("password", PASSWORD, true),
        ("api_token", SECRET, true),
    ] {
        owner
            .json(
                Method::PUT,
                &format!("/api/v1/applications/{app_id}/variables/{name}"),
                Some(json!({"value": value, "secret": secret})),
                200,
            )
            .await;
    }
    let t = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": app_id, "name": "builtin"})),
            201,
        )
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    let cert_path = app.data.join("tls/cert.pem");
    World {
        app,
        owner,
        app_id,
        token,
        cert_path,
    }
}

impl World {
    async fn flow(&self, name: &str, steps: Value) -> String {
        let f = self
            .owner
            .json(
                Method::POST,
                &format!("/api/v1/applications/{}/flows", self.app_id),
                Some(json!({"name": name, "steps": steps})),
                201,
            )
            .await;
        f["id"].as_str().unwrap().to_string()
    }

    async fn queue(&self, flow: &str) -> String {
        let r = self
            .owner
            .json(
                Method::POST,
                &format!("/api/v1/flows/{flow}/runs"),
                Some(json!({})),
                201,
            )
            .await;
        r["id"].as_str().unwrap().to_string()
    }

    /// Run the real agent binary to completion.
    async fn agent(&self, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "run".into(),
            "--server".into(),
            self.app.base.clone(),
            "--ca-file".into(),
            self.cert_path.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let token = self.token.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(bin())
                .args(&args)
                .env_remove("FLOWGUARD_CONFIG")
                .env("FLOWGUARD_AGENT_TOKEN", token)
                .stdin(Stdio::null())
                .output()
                .expect("run agent")
        })
        .await
        .unwrap()
    }

    async fn run_detail(&self, run: &str) -> Value {
        self.owner
            .json(Method::GET, &format!("/api/v1/runs/{run}"), None, 200)
            .await
    }

    /// The stored (masked) screenshot of a step, fetched through its signed URL.
    async fn shot(&self, run: &str, n: usize) -> (u32, u32, Vec<u8>) {
        let u = self
            .owner
            .json(
                Method::GET,
                &format!("/api/v1/runs/{run}/steps/{n}/screenshot"),
                None,
                200,
            )
            .await;
        let url = u["url"].as_str().unwrap();
        let full = if url.starts_with("http") {
            url.to_string()
        } else {
            self.app.url(url)
        };
        let r = self.app.anonymous().client.get(full).send().await.unwrap();
        assert_eq!(r.status(), 200);
        decode_rgba(&r.bytes().await.unwrap())
    }
}

fn decode_rgba(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    (info.width, info.height, buf[..info.buffer_size()].to_vec())
}

fn pixel(img: &(u32, u32, Vec<u8>), x: u32, y: u32) -> [u8; 4] {
    let i = ((y * img.0 + x) * 4) as usize;
    [img.2[i], img.2[i + 1], img.2[i + 2], img.2[i + 3]]
}

/// Every pixel of the rectangle is solid black.
fn assert_solid(img: &(u32, u32, Vec<u8>), x0: u32, y0: u32, w: u32, h: u32) {
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            assert_eq!(
                pixel(img, x, y),
                [0, 0, 0, 255],
                "pixel ({x},{y}) is not masked"
            );
        }
    }
}

fn text_of(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn agent_runs_a_passing_flow_with_every_action_step() {
    let w = world().await;
    let flow = w
        .flow(
            "every action",
            json!([
                {"type": "navigate", "url": "/login"},
                {"type": "fill", "selector": "#user", "value": "{{user}}"},
                {"type": "fill", "selector": "#password", "value": "{{password}}"},
                {"type": "fill", "selector": "#user", "value": "-x", "clear_first": false},
                {"type": "fill", "selector": "#user", "value": "{{user}}", "clear_first": true},
                {"type": "select", "selector": "#plan", "value": "ent"},
                {"type": "assert", "selector": "#plan", "assertion": "text_equals", "expected": "ent"},
                {"type": "select", "selector": "#plan", "value": "Basic plan"},
                {"type": "assert", "selector": "#plan", "assertion": "text_equals", "expected": "basic"},
                {"type": "select", "selector": "#plan", "value": "1"},
                {"type": "assert", "selector": "#plan", "assertion": "text_equals", "expected": "pro"},
                {"type": "click", "selector": ".tab", "nth": 1},
                {"type": "assert", "selector": "#tab-state", "assertion": "text_equals", "expected": "tab 2"},
                {"type": "click", "selector": "#covered", "force": true},
                {"type": "assert", "selector": "#covered", "assertion": "attr_equals", "attribute": "data-clicked", "expected": "yes"},
                {"type": "click", "selector": "#go"},
                {"type": "wait", "for": "selector", "selector": "#welcome", "timeout_ms": 5000},
                {"type": "wait", "for": "url", "url": "/welcome*", "timeout_ms": 5000},
                {"type": "wait", "for": "network-idle", "timeout_ms": 10000},
                {"type": "wait", "for": "timeout", "timeout_ms": 100},
                {"type": "assert", "selector": "#welcome", "assertion": "exists"},
                {"type": "assert", "selector": "#gone", "assertion": "not_exists"},
                {"type": "assert", "selector": "#welcome", "assertion": "text_equals", "expected": "Welcome, alice!"},
                {"type": "assert", "selector": "#welcome", "assertion": "text_contains", "expected": "alice"},
                {"type": "assert", "selector": "#welcome", "assertion": "attr_equals", "attribute": "data-user", "expected": "alice"},
                {"type": "screenshot", "mask": ["#welcome"], "full_page": true}
            ]),
        )
        .await;
    let run = w.queue(&flow).await;
    let out = w.agent(&["--once"]).await;
    let printed = text_of(&out);
    assert!(out.status.success(), "agent failed:\n{printed}");
    let d = w.run_detail(&run).await;
    assert_eq!(d["status"], "passed", "run: {d:#}\nagent:\n{printed}");
    let steps = d["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 26);
    for s in steps {
        assert_eq!(s["status"], "passed", "{s:#}");
        assert!(s["duration_ms"].as_i64().unwrap() >= 0);
    }
    // The click on #go logged a console error and fetched a 404: both are summarised (on that
    // step, or on a following wait when the browser reports them late under load).
    let after_go: Vec<&Value> = steps[15..20].iter().collect();
    assert!(
        after_go
            .iter()
            .any(|s| s["console"]["error_count"].as_u64().unwrap() >= 1),
        "no console error summarised: {after_go:#?}"
    );
    assert!(
        after_go.iter().any(|s| s["network"]["failed"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f["status"] == 404))),
        "no 404 summarised: {after_go:#?}"
    );
    // The logged password never reaches the server in clear.
    let all = d.to_string();
    assert!(!all.contains(PASSWORD), "secret stored: {all}");
    assert!(all.contains("[REDACTED]"), "{all}");
    assert!(!printed.contains(PASSWORD));
    // A full-page screenshot was stored for the last step.
    assert_eq!(steps[25]["has_screenshot"], true);
    let img = w.shot(&run, 25).await;
    assert!(img.0 >= 1280 && img.1 >= 720, "{}x{}", img.0, img.1);
}

#[tokio::test]
async fn failing_assert_reports_a_readable_error_and_skips_the_rest() {
    let w = world().await;
    let flow = w
        .flow(
            "bad assert",
            json!([
                {"type": "navigate", "url": "/card"},
                {"type": "assert", "selector": "#banner", "assertion": "text_equals", "expected": "Summer sale"},
                {"type": "click", "selector": "#banner"},
                {"type": "screenshot"}
            ]),
        )
        .await;
    let run = w.queue(&flow).await;
    let out = w.agent(&["--once"]).await;
    assert!(out.status.success(), "{}", text_of(&out));
    let d = w.run_detail(&run).await;
    assert_eq!(d["status"], "failed", "{d:#}");
    assert_eq!(d["reason"], "agent_reported_failure");
    let steps = d["steps"].as_array().unwrap();
    assert_eq!(steps[0]["status"], "passed");
    assert_eq!(steps[1]["status"], "failed");
    assert_eq!(
        steps[1]["error"],
        "expected text of `#banner` to equal \"Summer sale\", got \"\""
    );
    assert_eq!(steps[1]["has_screenshot"], true, "screenshot on failure");
    assert_eq!(steps[2]["status"], "skipped");
    assert_eq!(steps[3]["status"], "skipped");
    assert!(d["error"]
        .as_str()
        .unwrap()
        .contains("step 2 (assert) failed"));

    // A missing selector names the selector and the time waited.
    let flow = w
        .flow(
            "missing",
            json!([
                {"type": "navigate", "url": "/card"},
                {"type": "click", "selector": "#nope"}
            ]),
        )
        .await;
    let run = w.queue(&flow).await;
    w.agent(&["--once"]).await;
    let d = w.run_detail(&run).await;
    assert_eq!(
        d["steps"][1]["error"],
        "selector `#nope` not found after 5000 ms"
    );
    // A wait that times out says so.
    let flow = w
        .flow(
            "slow",
            json!([
                {"type": "navigate", "url": "/card"},
                {"type": "wait", "for": "selector", "selector": "#never", "timeout_ms": 300}
            ]),
        )
        .await;
    // `--flow ID --wait` queues the run itself, prints the verdict and exits non-zero.
    let out = w.agent(&["--flow", &flow, "--wait"]).await;
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": failed"), "{stdout}");
    assert!(
        stdout.contains("timeout after 300 ms waiting for selector `#never`"),
        "{stdout}"
    );
}

#[tokio::test]
async fn masked_element_is_solid_black_in_the_stored_image() {
    let w = world().await;
    let flow = w
        .flow(
            "card",
            json!([
                {"type": "navigate", "url": "/card"},
                {"type": "screenshot", "mask": [".card-number", ".absent"]},
                {"type": "checkpoint", "expectation": "the banner is blue", "region": {"x": 50, "y": 100, "width": 700, "height": 150}}
            ]),
        )
        .await;
    let out = w.agent(&["--flow", &flow, "--wait"]).await;
    // The checkpoint cannot be evaluated without an AI endpoint, so the run does not pass.
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let run = stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let d = w.run_detail(&run).await;
    assert_eq!(d["reason"], "checkpoint_not_evaluated:2", "{d:#}");
    assert_eq!(d["steps"][1]["status"], "passed");

    let img = w.shot(&run, 1).await;
    assert_eq!((img.0, img.1), (1280, 720));
    // .card-number: left 100, top 150, 300×40 CSS px at DPR 1 → solid in the stored image.
    assert_solid(&img, 100, 150, 300, 40);
    // The unmasked banner next to it keeps its colour.
    assert_eq!(pixel(&img, 600, 170), [0, 0, 255, 255]);
    assert_eq!(pixel(&img, 50, 50), [255, 255, 255, 255]);

    // The checkpoint's region screenshot: 700×150 from (50,100); masks are per step, so the
    // card (not masked by the checkpoint) sits unpainted at (50,50) in it.
    let region = w.shot(&run, 2).await;
    assert_eq!((region.0, region.1), (700, 150));
    assert_eq!(pixel(&region, 10, 10), [255, 255, 255, 255]);
    assert_eq!(pixel(&region, 60, 55), [0, 255, 0, 255]);
    assert_eq!(pixel(&region, 550, 70), [0, 0, 255, 255]);
}

#[tokio::test]
async fn a_filled_secret_never_appears_unmasked() {
    let w = world().await;
    let flow = w
        .flow(
            "secret",
            json!([
                {"type": "navigate", "url": "/login"},
                {"type": "fill", "selector": "#token", "value": "{{api_token}}"},
                {"type": "fill", "selector": "#password", "value": "{{password}}"},
                {"type": "screenshot"},
                {"type": "assert", "selector": "#token", "assertion": "text_equals", "expected": "something else"}
            ]),
        )
        .await;
    let run = w.queue(&flow).await;
    let out = w.agent(&["--once"]).await;
    let printed = text_of(&out);
    assert!(out.status.success(), "{printed}");
    let d = w.run_detail(&run).await;
    assert_eq!(d["status"], "failed");
    let steps = d["steps"].as_array().unwrap();
    assert_eq!(steps[3]["status"], "passed");
    // The failing assert read the field's value: the error carries it redacted only.
    let err = steps[4]["error"].as_str().unwrap();
    assert!(err.contains("[REDACTED]"), "{err}");
    // #token (left 40, top 400, 400×40) is painted in the screenshot step and in the failure
    // screenshot, although neither step listed it as a mask.
    for n in [3, 4] {
        assert_eq!(steps[n]["has_screenshot"], true);
        let img = w.shot(&run, n).await;
        assert_solid(&img, 40, 400, 400, 40);
    }
    // No text anywhere holds the secrets: API views, agent output, server log, audit, files.
    let views = [
        d.to_string(),
        w.owner
            .json(
                Method::GET,
                &format!("/api/v1/applications/{}/runs", w.app_id),
                None,
                200,
            )
            .await
            .to_string(),
        w.owner
            .json(Method::GET, "/api/v1/audit", None, 200)
            .await
            .to_string(),
        printed,
        w.app.log_text(),
    ];
    for v in &views {
        assert!(!v.contains(SECRET), "secret leaked: {v}");
        assert!(!v.contains(PASSWORD), "password leaked: {v}");
    }
    for f in files_under(&w.app.data) {
        let bytes = std::fs::read(&f).unwrap();
        for s in [SECRET, PASSWORD] {
            assert!(
                !bytes.windows(s.len()).any(|x| x == s.as_bytes()),
                "{} holds a secret",
                f.display()
            );
        }
    }
}

#[tokio::test]
async fn agent_refuses_a_token_argument_and_a_missing_token() {
    // The token is never a CLI argument.
    let out = run_cli(&[
        "agent",
        "run",
        "--server",
        "https://127.0.0.1:9",
        "--token",
        "fga_x_y",
    ]);
    assert!(!out.status.success());
    let out = Command::new(bin())
        .args(["agent", "run", "--server", "https://127.0.0.1:9", "--once"])
        .env_remove("FLOWGUARD_AGENT_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLOWGUARD_AGENT_TOKEN"));
    // Plain http to a non-loopback host would expose the token.
    let out = Command::new(bin())
        .args([
            "agent",
            "run",
            "--server",
            "http://flowguard.example",
            "--once",
        ])
        .env("FLOWGUARD_AGENT_TOKEN", "fga_x_y")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
}

#[tokio::test]
async fn cancelled_run_stops_at_the_next_step() {
    let w = world().await;
    let flow = w
        .flow(
            "long",
            json!([
                {"type": "navigate", "url": "/card"},
                {"type": "wait", "for": "timeout", "timeout_ms": 3000},
                {"type": "assert", "selector": ".card-number", "assertion": "exists"},
                {"type": "assert", "selector": "#banner", "assertion": "exists"}
            ]),
        )
        .await;
    let run = w.queue(&flow).await;
    let agent = w.agent(&["--once"]);
    let cancel = async {
        // Cancel once the run is running (the agent claimed it).
        for _ in 0..200 {
            let d = w.run_detail(&run).await;
            if d["status"] == "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        w.owner
            .json(
                Method::POST,
                &format!("/api/v1/runs/{run}/cancel"),
                Some(json!({})),
                200,
            )
            .await;
    };
    let (out, _) = tokio::join!(agent, cancel);
    assert!(out.status.success(), "{}", text_of(&out));
    let d = w.run_detail(&run).await;
    assert_eq!(d["status"], "cancelled");
    // Nothing after the step in progress was executed or recorded.
    assert!(d["steps"].as_array().unwrap().len() <= 2, "{d:#}");
    assert!(text_of(&out).contains("stopped by the server"));
}

#[tokio::test]
async fn agent_trigger_and_run_lookup_stay_in_the_token_application() {
    let w = world().await;
    let agent = w.app.bearer(&w.token);
    let own = w
        .flow("own", json!([{"type": "navigate", "url": "/card"}]))
        .await;
    // A flow and a queued run of another tenant's application (the Free plan allows one
    // application per tenant).
    let (tb, pw) = create_tenant(&w.app, "other-co", "owner@other.example");
    let owner_b = w.app.login(Some(&tb), "owner@other.example", &pw).await;
    let other_app = owner_b
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "other", "base_url": "https://other.example"})),
            201,
        )
        .await;
    let other_flow = owner_b
        .json(
            Method::POST,
            &format!(
                "/api/v1/applications/{}/flows",
                other_app["id"].as_str().unwrap()
            ),
            Some(json!({"name": "x", "steps": [{"type": "navigate", "url": "/"}]})),
            201,
        )
        .await;
    let other_flow = other_flow["id"].as_str().unwrap();
    let r = agent
        .post(&format!("/api/v1/agent/flows/{other_flow}/runs"), json!({}))
        .await;
    assert_eq!(r.status(), 404);
    let other_run = owner_b
        .json(
            Method::POST,
            &format!("/api/v1/flows/{other_flow}/runs"),
            Some(json!({})),
            201,
        )
        .await;
    let other_run = other_run["id"].as_str().unwrap();
    assert_eq!(
        agent
            .get(&format!("/api/v1/agent/runs/{other_run}"))
            .await
            .status(),
        404
    );
    let r = agent
        .post(
            &format!("/api/v1/agent/runs/claim?run={other_run}"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let r = agent
        .post("/api/v1/agent/runs/claim?bogus=1", json!({}))
        .await;
    assert_eq!(r.status(), 400);

    // Its own flow: queued with who did it, readable, and claimable by id.
    let first = w.queue(&own).await;
    let run = agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/flows/{own}/runs"),
            Some(json!({})),
            201,
        )
        .await;
    assert_eq!(run["status"], "queued");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["triggered_by"], "agent-token:builtin");
    let id = run["id"].as_str().unwrap();
    let got = agent
        .json(Method::GET, &format!("/api/v1/agent/runs/{id}"), None, 200)
        .await;
    assert_eq!(got["status"], "queued");
    // Claiming by id skips the older queued run.
    let c = agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/claim?run={id}"),
            Some(json!({})),
            200,
        )
        .await;
    assert_eq!(c["run_id"], id);
    let again = agent
        .post(&format!("/api/v1/agent/runs/claim?run={id}"), json!({}))
        .await;
    assert_eq!(again.status(), 204);
    let d = w.run_detail(&first).await;
    assert_eq!(d["status"], "queued");
    let audit = w
        .owner
        .json(Method::GET, "/api/v1/audit?action=run.trigger", None, 200)
        .await;
    assert!(audit.to_string().contains("\"via\":\"agent\""), "{audit:#}");
}
