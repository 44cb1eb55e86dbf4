//! Issue 11: bring-your-own AI endpoint. A real HTTPS server inside the test process (actix-web
//! on rustls with an rcgen certificate handed to the appliance as `ca_pem`) plays the customer's
//! OpenAI-compatible and Anthropic-compatible endpoint; the appliance under test is the real
//! binary. We check what the endpoint received (masked, cropped pixels; no secret text; model
//! and max_tokens as configured), the verdicts stored, every failure mode failing closed, the
//! egress list, the rate limit, and that the API key never shows up anywhere.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "S3cr3t-Canary-9127-qx";
const KEY: &str = "sk-canary-KEY-8841-do-not-leak";

/// How the fake endpoint answers.
#[derive(Clone, Debug)]
enum Mode {
    Pass,
    Fail,
    /// A 200 whose body is not JSON at all.
    MalformedJson,
    /// Valid JSON, but the model's answer is prose, not a verdict.
    NotAVerdict,
    Status500,
    /// Answer after this many ms.
    Slow(u64),
    /// 302 to this URL.
    Redirect(String),
}

/// One request the fake endpoint received.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone)]
struct FakeState {
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A customer AI endpoint on 127.0.0.1 over HTTPS (also used by `rotation.rs`).
pub(crate) struct Fake {
    pub(crate) addr: SocketAddr,
    pub(crate) cert_pem: String,
    state: FakeState,
}

impl Fake {
    fn set(&self, m: Mode) {
        *self.state.mode.lock().unwrap() = m;
    }
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }
}

const PASS_ANSWER: &str =
    r#"{"verdict": "pass", "confidence": 0.93, "rationale": "The welcome banner is visible."}"#;
const FAIL_ANSWER: &str =
    r#"{"verdict": "fail", "confidence": 0.81, "rationale": "No welcome banner is shown."}"#;

fn reply(path: &str, answer: &str) -> HttpResponse {
    let body = if path.ends_with("/messages") {
        json!({"id": "msg_1", "type": "message", "role": "assistant",
               "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn"})
    } else {
        json!({"id": "chatcmpl-1", "object": "chat.completion",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]})
    };
    HttpResponse::Ok().json(body)
}

async fn handle(req: HttpRequest, body: web::Bytes, st: web::Data<FakeState>) -> HttpResponse {
    st.seen.lock().unwrap().push(Seen {
        path: req.path().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    });
    let mode = st.mode.lock().unwrap().clone();
    let path = req.path().to_string();
    match mode {
        Mode::Pass => reply(&path, PASS_ANSWER),
        Mode::Fail => reply(&path, FAIL_ANSWER),
        Mode::MalformedJson => HttpResponse::Ok()
            .content_type("application/json")
            .body("{\"choices\": [{\"message\": "),
        Mode::NotAVerdict => reply(&path, "Looks good to me, I would say it passes."),
        Mode::Status500 => HttpResponse::InternalServerError().body("upstream model crashed"),
        Mode::Slow(ms) => {
            actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
            reply(&path, PASS_ANSWER)
        }
        Mode::Redirect(to) => HttpResponse::Found()
            .insert_header(("Location", to))
            .finish(),
    }
}

/// Start a fake endpoint on 127.0.0.1:0 (its own thread and actix system).
pub(crate) fn start_fake() -> Fake {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    start_fake_with(ck.cert.pem(), ck.cert.der().clone(), key)
}

/// Start a fake endpoint presenting `cert` (PEM and DER) with `key`.
fn start_fake_with(
    cert_pem: String,
    cert: rustls_pki_types::CertificateDer<'static>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Fake {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let state = FakeState {
        mode: Arc::new(Mutex::new(Mode::Pass)),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let st = state.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let srv = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(st.clone()))
                    .app_data(web::PayloadConfig::new(32 * 1024 * 1024))
                    .default_service(web::to(handle))
            })
            .workers(1)
            .listen_rustls_0_23(listener, tls)
            .unwrap()
            .run();
            tx.send(()).unwrap();
            let _ = srv.await;
        })
    });
    rx.recv().unwrap();
    Fake {
        addr,
        cert_pem,
        state,
    }
}

/// A `w`×`h` white RGBA PNG.
fn white_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&vec![255u8; (w * h * 4) as usize])
            .unwrap();
    }
    out
}

fn decode_rgba(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    (info.width, info.height, buf[..info.buffer_size()].to_vec())
}

struct World {
    owner: Session,
    agent: Session,
    flow_id: String,
}

/// Owner, an application with a secret variable, a flow `navigate → fill {{password}} →
/// checkpoint` (the expectation quotes the secret, the region crops to 40×20) and an agent.
async fn world(app: &TestApp) -> World {
    let owner = app.owner().await;
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "shop", "base_url": "https://shop.example"})),
            201,
        )
        .await;
    let app_id = a["id"].as_str().unwrap().to_string();
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/applications/{app_id}/variables/password"),
            Some(json!({"value": SECRET, "secret": true})),
            200,
        )
        .await;
    let flow = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{app_id}/flows"),
            Some(json!({"name": "login", "steps": [
                {"type": "navigate", "url": "/login"},
                {"type": "fill", "selector": "#pw", "value": "{{password}}"},
                {"type": "checkpoint",
                 "expectation": format!("The welcome banner is visible and the password {SECRET} is not shown"),
                 "region": {"x": 0, "y": 0, "width": 40, "height": 20}}
            ]})),
            201,
        )
        .await;
    let t = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": app_id, "name": "ci"})),
            201,
        )
        .await;
    let agent = app.bearer(t["token"].as_str().unwrap());
    World {
        owner,
        agent,
        flow_id: flow["id"].as_str().unwrap().to_string(),
    }
}

/// Trigger and claim a run; report steps 0 and 1 passed. Returns (run id, claim).
async fn start_run(w: &World) -> (String, Value) {
    w.owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", w.flow_id),
            None,
            201,
        )
        .await;
    let claim = w
        .agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    let rid = claim["run_id"].as_str().unwrap().to_string();
    for i in 0..2 {
        w.agent
            .json(
                Method::POST,
                &format!("/api/v1/agent/runs/{rid}/steps"),
                Some(json!({"index": i, "status": "passed"})),
                200,
            )
            .await;
    }
    (rid, claim)
}

/// The `#pw` field sits at (10,5) 20×10 in the 64×48 screenshot.
fn pw_mask() -> Value {
    json!([{"selector": "#pw", "x": 10, "y": 5, "width": 20, "height": 10}])
}

async fn upload(
    agent: &Session,
    run: &str,
    n: usize,
    masks: Option<Value>,
    region: Option<Value>,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(white_png(64, 48))
            .file_name("s.png")
            .mime_str("image/png")
            .unwrap(),
    );
    if let Some(m) = masks {
        form = form.text("masks", m.to_string());
    }
    if let Some(r) = region {
        form = form.text("region", r.to_string());
    }
    agent
        .client
        .post(format!(
            "{}/api/v1/agent/runs/{run}/steps/{n}/screenshot",
            agent.base
        ))
        .bearer_auth(agent.bearer.as_ref().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Upload the checkpoint screenshot (masked), report the step passed, complete the run; returns
/// (upload response, completed run).
async fn judge(w: &World, rid: &str) -> (Value, Value) {
    let r = upload(&w.agent, rid, 2, Some(pw_mask()), None).await;
    assert_eq!(r.status(), 201);
    let up: Value = r.json().await.unwrap();
    w.agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/steps"),
            Some(json!({"index": 2, "status": "passed"})),
            200,
        )
        .await;
    let done = w
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;
    (up, done)
}

/// The image the endpoint received, decoded, and the text of the request.
fn received_image_and_text(s: &Seen) -> ((u32, u32, Vec<u8>), String) {
    let v = s.json();
    let (b64, texts): (String, Vec<String>) = if s.path.ends_with("/messages") {
        let content = v["messages"][0]["content"].as_array().unwrap();
        let img = content.iter().find(|p| p["type"] == "image").unwrap();
        assert_eq!(img["source"]["type"], "base64");
        assert_eq!(img["source"]["media_type"], "image/png");
        (
            img["source"]["data"].as_str().unwrap().to_string(),
            content
                .iter()
                .filter_map(|p| p["text"].as_str().map(str::to_string))
                .chain([v["system"].as_str().unwrap().to_string()])
                .collect(),
        )
    } else {
        let msgs = v["messages"].as_array().unwrap();
        let user = msgs.iter().find(|m| m["role"] == "user").unwrap();
        let content = user["content"].as_array().unwrap();
        let img = content.iter().find(|p| p["type"] == "image_url").unwrap();
        let url = img["image_url"]["url"].as_str().unwrap();
        (
            url.strip_prefix("data:image/png;base64,")
                .expect("image as a PNG data URL")
                .to_string(),
            content
                .iter()
                .filter_map(|p| p["text"].as_str().map(str::to_string))
                .chain(
                    msgs.iter()
                        .filter_map(|m| m["content"].as_str().map(str::to_string)),
                )
                .collect(),
        )
    };
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    (decode_rgba(&png), texts.join("\n"))
}

fn assert_masked_crop(img: &(u32, u32, Vec<u8>)) {
    let (w, h, px) = img;
    assert_eq!((*w, *h), (40, 20), "cropped to the checkpoint region");
    for y in 0..*h {
        for x in 0..*w {
            let i = ((y * w + x) * 4) as usize;
            let inside = (10..30).contains(&x) && (5..15).contains(&y);
            let want: &[u8] = if inside {
                &[0, 0, 0, 255]
            } else {
                &[255, 255, 255, 255]
            };
            assert_eq!(&px[i..i + 4], want, "pixel ({x},{y})");
        }
    }
}

fn egress_config(allow: &[String], extra: &str) -> String {
    let list: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[egress]\nallow = [{}]\n[ai]\nrate_per_minute = 600\nburst = 100\n{extra}",
        list.join(", ")
    )
}

#[tokio::test]
async fn tenant_openai_endpoint_judges_masked_scrubbed_checkpoints() {
    let fake = start_fake();
    let app = spawn_with(Opts {
        config: Some(egress_config(
            &[format!("127.0.0.1:{}", fake.addr.port())],
            "",
        )),
        ..Default::default()
    })
    .await;
    let w = world(&app).await;

    // No endpoint yet.
    let v = w
        .owner
        .json(Method::GET, "/api/v1/ai-endpoint", None, 200)
        .await;
    assert_eq!(v["source"], "none");
    let v = w
        .owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 409)
        .await;
    assert_eq!(v["code"], "ai_endpoint_not_configured");

    // The Owner sets the tenant's endpoint; the key is never returned.
    let body = json!({"kind": "openai-chat", "base_url": fake.url("/v1"), "model": "vision-test-1",
        "api_key": KEY, "ca_pem": fake.cert_pem, "timeout_ms": 1500, "max_tokens": 321});
    let r = w
        .owner
        .req(Method::PUT, "/api/v1/ai-endpoint", Some(body))
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(KEY), "PUT answer shows the key: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["source"], "tenant");
    assert_eq!(v["api_key_set"], true);
    assert_eq!(v["ca_pem_set"], true);
    assert_eq!(v["max_tokens"], 321);
    let text = w
        .owner
        .get("/api/v1/ai-endpoint")
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains(KEY));
    assert!(text.contains("vision-test-1"));

    // The test call works against the probe image.
    let t = w
        .owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["verdict"]["verdict"], "pass");
    assert_eq!(fake.seen().len(), 1);

    // A run: the checkpoint demands the mask of the secret field typed earlier.
    let (rid, claim) = start_run(&w).await;
    assert_eq!(claim["mask_required"][2], json!(["#pw"]));
    let st = w
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/steps"),
            Some(json!({"index": 2, "status": "passed"})),
            200,
        )
        .await;
    assert_eq!(st["status"], "not_evaluated");
    assert_eq!(st["reason"], "awaiting the checkpoint screenshot");
    let r = upload(&w.agent, &rid, 2, None, None).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "mask_missing");
    assert_eq!(fake.seen().len(), 1, "nothing is sent for a refused upload");
    let r = upload(
        &w.agent,
        &rid,
        2,
        Some(pw_mask()),
        Some(json!({"x": 500, "y": 500, "width": 10, "height": 10})),
    )
    .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invalid_region");
    assert_eq!(v["field"], "region");
    assert_eq!(fake.seen().len(), 1);

    // Pass verdict: stored on the step, the run passes.
    let r = upload(&w.agent, &rid, 2, Some(pw_mask()), None).await;
    assert_eq!(r.status(), 201);
    let up: Value = r.json().await.unwrap();
    assert_eq!(up["step"]["status"], "passed", "{up}");
    assert_eq!(up["step"]["verdict"], "pass");
    assert_eq!(up["step"]["confidence"], 0.93);
    assert_eq!(up["step"]["rationale"], "The welcome banner is visible.");
    assert_eq!(up["step"]["ai_call"]["model"], "vision-test-1");
    assert_eq!(up["step"]["ai_call"]["outcome"], "verdict");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let req = &seen[1];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        up["step"]["ai_call"]["bytes_sent"].as_u64().unwrap(),
        req.body.len() as u64
    );
    let body = req.json();
    assert_eq!(body["model"], "vision-test-1");
    assert_eq!(body["max_tokens"], 321);
    let raw = String::from_utf8_lossy(&req.body);
    assert!(!raw.contains(SECRET), "secret sent to the endpoint");
    let (img, text) = received_image_and_text(req);
    assert_masked_crop(&img);
    assert!(
        text.contains("The welcome banner is visible and the password [REDACTED] is not shown"),
        "{text}"
    );
    let done = w
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;
    assert_eq!(done["status"], "passed", "{done}");
    let detail = w
        .owner
        .json(Method::GET, &format!("/api/v1/runs/{rid}"), None, 200)
        .await;
    assert_eq!(detail["steps"][2]["verdict"], "pass");
    assert_eq!(detail["steps"][2]["reported_status"], "passed");

    // The agent's own region (in image pixels) wins over the step's; a fail verdict fails the run.
    fake.set(Mode::Fail);
    let (rid, _) = start_run(&w).await;
    let r = upload(
        &w.agent,
        &rid,
        2,
        Some(pw_mask()),
        Some(json!({"x": 0, "y": 0, "width": 64, "height": 48})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let up: Value = r.json().await.unwrap();
    assert_eq!(up["step"]["status"], "failed");
    assert_eq!(up["step"]["verdict"], "fail");
    assert_eq!(up["step"]["confidence"], 0.81);
    let (img, _) = received_image_and_text(fake.seen().last().unwrap());
    assert_eq!((img.0, img.1), (64, 48));
    let done = w
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["reason"], "step_failed:2");

    // An agent-reported failure is never turned into a pass by a verdict.
    fake.set(Mode::Pass);
    let (rid, _) = start_run(&w).await;
    w.agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/steps"),
            Some(json!({"index": 2, "status": "failed", "error": "page did not load"})),
            200,
        )
        .await;
    let r = upload(&w.agent, &rid, 2, Some(pw_mask()), None).await;
    let up: Value = r.json().await.unwrap();
    assert_eq!(up["step"]["verdict"], "pass");
    assert_eq!(up["step"]["status"], "failed");

    // Changes are audited without the key; the key appears in no response, log or audit row.
    let a = w
        .owner
        .json(
            Method::GET,
            "/api/v1/audit?action=ai_endpoint.set",
            None,
            200,
        )
        .await;
    let items = a["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["details"]["api_key_set"], true);
    assert_eq!(items[0]["details"]["model"], "vision-test-1");
    let a = w
        .owner
        .json(
            Method::GET,
            "/api/v1/audit?action=ai_endpoint.test",
            None,
            200,
        )
        .await;
    assert_eq!(a["items"].as_array().unwrap().len(), 1);
    let all = w
        .owner
        .get("/api/v1/audit?limit=500")
        .await
        .text()
        .await
        .unwrap();
    assert!(!all.contains(KEY), "key in the audit trail");
    assert!(!all.contains(SECRET), "secret in the audit trail");
    let log = app.log_text();
    assert!(log.contains("checkpoint evaluated"), "AI calls are logged");
    assert!(!log.contains(KEY), "key in the server log");
    assert!(!log.contains(SECRET), "secret in the server log");

    // The sealed API key is re-sealed by a key rotation (registered in SEALED_COLUMNS): the
    // rotation retires the old DEK and the endpoint still authenticates afterwards.
    let rot = w
        .owner
        .json(Method::POST, "/api/v1/keys/rotate", None, 200)
        .await;
    assert_eq!(rot["keys"]["active_version"], 2, "{rot}");
    let t = w
        .owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    assert_eq!(t["ok"], true, "after rotation: {t}");

    // Removing the override: no endpoint again, checkpoints are not evaluated.
    let r = w
        .owner
        .req(Method::DELETE, "/api/v1/ai-endpoint", None)
        .await;
    assert_eq!(r.status(), 204);
    let v = w
        .owner
        .json(Method::DELETE, "/api/v1/ai-endpoint", None, 404)
        .await;
    assert_eq!(v["code"], "not_found");
    let n = fake.seen().len();
    let (rid, _) = start_run(&w).await;
    let (up, done) = judge(&w, &rid).await;
    assert!(up.get("step").is_none(), "{up}");
    assert_eq!(fake.seen().len(), n, "no call without an endpoint");
    assert_eq!(done["status"], "failed");
    assert_eq!(done["reason"], "checkpoint_not_evaluated:2");
}

#[tokio::test]
async fn deployment_anthropic_endpoint_fails_closed() {
    let fake = start_fake();
    let other = start_fake();
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_secret_file(dir.path(), "ai.key", &format!("{KEY}\n"));
    let ca_file = write_secret_file(dir.path(), "ai-ca.pem", &fake.cert_pem);
    // The deployment default endpoint is allowed implicitly: egress.allow stays empty.
    let cfg = egress_config(
        &[],
        &format!(
            "[ai.endpoint]\nkind = \"anthropic-messages\"\nbase_url = \"{}\"\nmodel = \"claude-vision-test\"\napi_key_file = \"{}\"\nca_pem_file = \"{}\"\ntimeout_ms = 1000\nmax_tokens = 256\n",
            fake.url(""),
            key_file.display(),
            ca_file.display()
        ),
    );
    let app = spawn_with(Opts {
        config: Some(cfg),
        ..Default::default()
    })
    .await;
    let w = world(&app).await;
    let v = w
        .owner
        .json(Method::GET, "/api/v1/ai-endpoint", None, 200)
        .await;
    assert_eq!(v["source"], "deployment");
    assert_eq!(v["kind"], "anthropic-messages");
    assert_eq!(v["api_key_set"], true);
    assert!(!v.to_string().contains(KEY));

    // Pass, with the Anthropic request shape.
    let (rid, _) = start_run(&w).await;
    let (up, done) = judge(&w, &rid).await;
    assert_eq!(up["step"]["status"], "passed", "{up}");
    assert_eq!(done["status"], "passed");
    let req = fake.seen().pop().unwrap();
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some(KEY));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert!(req.header("authorization").is_none());
    let body = req.json();
    assert_eq!(body["model"], "claude-vision-test");
    assert_eq!(body["max_tokens"], 256);
    assert!(!String::from_utf8_lossy(&req.body).contains(SECRET));
    let (img, text) = received_image_and_text(&req);
    assert_masked_crop(&img);
    assert!(text.contains("[REDACTED]"));

    // Every failure leaves the step `error` with the reason, and the run Failed.
    for (mode, outcome, reason_part) in [
        (Mode::MalformedJson, "invalid_reply", "not a valid verdict"),
        (Mode::NotAVerdict, "invalid_reply", "not a valid verdict"),
        (Mode::Status500, "http_error", "HTTP 500"),
        (Mode::Slow(3000), "timeout", "within 1000 ms"),
        (
            Mode::Redirect(other.url("/v1/messages")),
            "redirect_refused",
            "not followed",
        ),
    ] {
        fake.set(mode.clone());
        let (rid, _) = start_run(&w).await;
        let (up, done) = judge(&w, &rid).await;
        let step = &up["step"];
        assert_eq!(step["status"], "error", "{mode:?}: {up}");
        assert!(step["verdict"].is_null());
        assert_eq!(step["ai_call"]["outcome"], outcome, "{mode:?}");
        assert!(
            step["reason"].as_str().unwrap().contains(reason_part),
            "{mode:?}: {step}"
        );
        assert!(!step.to_string().contains(KEY));
        assert_eq!(done["status"], "failed", "{mode:?}");
        assert_eq!(done["reason"], "checkpoint_error:2", "{mode:?}");
        if matches!(mode, Mode::Slow(_)) {
            let ms = step["ai_call"]["latency_ms"].as_u64().unwrap();
            assert!((900..2900).contains(&ms), "timed out after {ms} ms");
        }
    }
    assert!(other.seen().is_empty(), "the redirect was followed");
    let log = app.log_text();
    assert!(!log.contains(KEY), "key in the server log");
    assert!(
        !log.contains("upstream model crashed"),
        "endpoint body in the log"
    );
}

#[tokio::test]
async fn egress_list_is_enforced_on_save_and_at_connect_time() {
    let fake = start_fake();
    let port = fake.addr.port();
    // Only the address is listed: names must resolve into it.
    let app = spawn_with(Opts {
        config: Some(egress_config(&[format!("127.0.0.1:{port}")], "")),
        ..Default::default()
    })
    .await;
    let owner = app.owner().await;
    let put = |url: String| {
        json!({"kind": "openai-chat", "base_url": url, "model": "m", "api_key": KEY,
               "ca_pem": fake.cert_pem, "timeout_ms": 2000})
    };
    for (url, host) in [
        ("https://169.254.169.254/v1".to_string(), "169.254.169.254"),
        ("https://[fd00:ec2::254]/v1".to_string(), "fd00:ec2::254"),
        (
            "https://llm.outside.example/v1".to_string(),
            "llm.outside.example",
        ),
        (format!("https://127.0.0.1:{}/v1", port + 1), "127.0.0.1"),
    ] {
        let v = owner
            .json(
                Method::PUT,
                "/api/v1/ai-endpoint",
                Some(put(url.clone())),
                422,
            )
            .await;
        assert_eq!(v["code"], "egress_denied", "{url}: {v}");
        assert_eq!(v["field"], "base_url");
        assert!(v["detail"].as_str().unwrap().contains(host), "{v}");
        assert!(!v.to_string().contains(KEY));
    }
    // Invalid fields name the field.
    for (body, field) in [
        (
            json!({"kind": "gpt", "base_url": fake.url("/v1"), "model": "m"}),
            "kind",
        ),
        (
            json!({"kind": "openai-chat", "base_url": format!("http://127.0.0.1:{port}/v1"), "model": "m"}),
            "base_url",
        ),
        (
            json!({"kind": "openai-chat", "base_url": fake.url("/v1"), "model": ""}),
            "model",
        ),
        (
            json!({"kind": "openai-chat", "base_url": fake.url("/v1"), "model": "m", "ca_pem": "junk"}),
            "ca_pem",
        ),
        (
            json!({"kind": "openai-chat", "base_url": fake.url("/v1"), "model": "m", "timeout_ms": 1}),
            "timeout_ms",
        ),
        (
            json!({"kind": "openai-chat", "base_url": fake.url("/v1"), "model": "m", "max_tokens": 0}),
            "max_tokens",
        ),
    ] {
        let v = owner
            .json(Method::PUT, "/api/v1/ai-endpoint", Some(body), 422)
            .await;
        assert_eq!(v["field"], field, "{v}");
    }
    // Refused requests did nothing: no endpoint, no audit row, no call.
    let v = owner
        .json(Method::GET, "/api/v1/ai-endpoint", None, 200)
        .await;
    assert_eq!(v["source"], "none");
    let a = owner
        .json(
            Method::GET,
            "/api/v1/audit?action=ai_endpoint.set",
            None,
            200,
        )
        .await;
    assert!(a["items"].as_array().unwrap().is_empty());
    assert!(fake.seen().is_empty());

    // A name is decided by the address it resolves to: localhost → 127.0.0.1 is listed.
    owner
        .json(
            Method::PUT,
            "/api/v1/ai-endpoint",
            Some(put(format!("https://localhost:{port}/v1"))),
            200,
        )
        .await;
    let t = owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(fake.seen().len(), 1);

    // The operator narrows the list; the stored endpoint is refused again at connect time.
    let TestApp { dir, child, .. } = app;
    drop(child);
    // The stopped server's address file would point the harness at a dead port.
    let _ = std::fs::remove_file(dir.path().join("data").join("listen.addr"));
    let app = spawn_with(Opts {
        config: Some(egress_config(&["127.0.0.1:9".to_string()], "")),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let owner = app.owner().await;
    let t = owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    assert_eq!(t["ok"], false);
    assert_eq!(t["outcome"], "egress_denied", "{t}");
    assert_eq!(t["bytes_sent"], 0);
    assert!(t["error"].as_str().unwrap().contains("localhost"), "{t}");
    assert_eq!(fake.seen().len(), 1, "nothing reached the endpoint");
    assert!(!app.log_text().contains(KEY));
}

#[tokio::test]
async fn ai_calls_are_rate_limited_per_tenant() {
    let fake = start_fake();
    let cfg = format!(
        "[egress]\nallow = [\"127.0.0.1:{}\"]\n[ai]\nrate_per_minute = 1\nburst = 2\n",
        fake.addr.port()
    );
    let app = spawn_with(Opts {
        config: Some(cfg),
        ..Default::default()
    })
    .await;
    let w = world(&app).await;
    w.owner
        .json(
            Method::PUT,
            "/api/v1/ai-endpoint",
            Some(
                json!({"kind": "openai-chat", "base_url": fake.url("/v1"), "model": "m",
                        "ca_pem": fake.cert_pem}),
            ),
            200,
        )
        .await;
    w.owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    let (rid, _) = start_run(&w).await;
    let r = upload(&w.agent, &rid, 2, Some(pw_mask()), None).await;
    assert_eq!(r.status(), 201);
    // The bucket (2) is spent: the next AI-cost call is refused before anything is stored.
    let (rid2, _) = start_run(&w).await;
    let r = upload(&w.agent, &rid2, 2, Some(pw_mask()), None).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited");
    assert_eq!(fake.seen().len(), 2);
    let r = w
        .owner
        .get(&format!("/api/v1/runs/{rid2}/steps/2/screenshot"))
        .await;
    assert_eq!(r.status(), 404, "nothing stored for a refused upload");
    let v = w
        .owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 429)
        .await;
    assert_eq!(v["code"], "rate_limited");
}

/// A certificate made the default way, `openssl req -x509 -newkey ec … -subj /CN=127.0.0.1`:
/// self-signed, CA:TRUE, no subjectAltName. (PEM, DER, key.)
fn openssl_self_signed(
    dir: &std::path::Path,
    name: &str,
    days: &str,
) -> (
    String,
    rustls_pki_types::CertificateDer<'static>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    use rustls_pki_types::pem::PemObject;
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", days, "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&c).unwrap();
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&c)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "openssl's default certificate is expected to be a CA certificate"
    );
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&k).unwrap();
    (pem, der, key)
}

/// Issue 24 item 9: an endpoint whose certificate is the default `openssl req -x509` one
/// (CA:TRUE used as the leaf) is trusted when that certificate is pasted as `ca_pem`; another
/// pasted certificate fails as `tls_failed` / `unknown_issuer`, never as "cannot connect".
#[tokio::test]
async fn self_signed_openssl_endpoint_is_pinned_and_tls_failures_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, der, key) = openssl_self_signed(dir.path(), "endpoint", "30");
    let fake = start_fake_with(pem.clone(), der, key);
    let app = spawn_with(Opts {
        config: Some(egress_config(
            &[format!("127.0.0.1:{}", fake.addr.port())],
            "",
        )),
        ..Default::default()
    })
    .await;
    let owner = app.owner().await;
    let put = |ca: &str| {
        json!({"kind": "openai-chat", "base_url": fake.url("/v1"), "model": "m",
               "ca_pem": ca, "timeout_ms": 3000})
    };
    owner
        .json(Method::PUT, "/api/v1/ai-endpoint", Some(put(&pem)), 200)
        .await;
    let v = owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["outcome"], "verdict");
    assert_eq!(fake.seen().len(), 1);

    // Another certificate pasted: the TLS failure is named.
    let (other, _, _) = openssl_self_signed(dir.path(), "other", "30");
    owner
        .json(Method::PUT, "/api/v1/ai-endpoint", Some(put(&other)), 200)
        .await;
    let v = owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["outcome"], "tls_failed", "{v}");
    assert_eq!(v["tls_error"], "unknown_issuer", "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("unknown issuer"), "{err}");
    assert!(!err.contains("cannot connect"), "{err}");
    assert_eq!(
        fake.seen().len(),
        1,
        "nothing was sent over an untrusted connection"
    );

    // No ca_pem: the built-in roots do not know a self-signed certificate.
    owner
        .json(
            Method::PUT,
            "/api/v1/ai-endpoint",
            Some(json!({"kind": "openai-chat", "base_url": fake.url("/v1"), "model": "m"})),
            200,
        )
        .await;
    let v = owner
        .json(Method::POST, "/api/v1/ai-endpoint/test", None, 200)
        .await;
    assert_eq!(v["outcome"], "tls_failed", "{v}");
    assert!(
        ["unknown_issuer", "ca_used_as_leaf"].contains(&v["tls_error"].as_str().unwrap()),
        "{v}"
    );
}
