//! Flows, runs, the agent API, masked encrypted screenshots behind signed URLs, secret variables.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "S3cr3t-Canary-4417-zq";

/// A `w`×`h` RGBA PNG, every pixel white.
pub fn white_png(w: u32, h: u32) -> Vec<u8> {
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

pub fn decode_rgba(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    (info.width, info.height, buf[..info.buffer_size()].to_vec())
}

pub struct Setup {
    pub owner: Session,
    pub app_id: String,
    pub flow_id: String,
    pub agent: Session,
    pub agent_token: String,
}

/// Owner, one application with a secret variable, a 5-step flow and an agent token.
pub async fn setup(app: &TestApp) -> Setup {
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
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/applications/{app_id}/variables/user"),
            Some(json!({"value": "alice", "secret": false})),
            200,
        )
        .await;
    let flow = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{app_id}/flows"),
            Some(
                json!({"name": "login", "tags": ["smoke"], "source": "manual", "steps": [
                    {"type": "navigate", "url": "/login"},
                    {"type": "fill", "selector": "#user", "value": "{{user}}"},
                    {"type": "fill", "selector": "#pw", "value": "{{password}}"},
                    {"type": "screenshot", "mask": ["#card"]},
                    {"type": "click", "selector": "#go"}
                ]}),
            ),
            201,
        )
        .await;
    let flow_id = flow["id"].as_str().unwrap().to_string();
    let t = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": app_id, "name": "ci"})),
            201,
        )
        .await;
    let agent_token = t["token"].as_str().unwrap().to_string();
    let agent = app.bearer(&agent_token);
    Setup {
        owner,
        app_id,
        flow_id,
        agent,
        agent_token,
    }
}

async fn upload(
    agent: &Session,
    run: &str,
    n: usize,
    png: Vec<u8>,
    masks: Value,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(png)
                .file_name("s.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("masks", masks.to_string());
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

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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
async fn full_run_with_masked_encrypted_screenshot() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let mut seen = String::new();
    let run = s
        .owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s.flow_id),
            None,
            201,
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    assert_eq!(run["status"], "queued");
    assert_eq!(run["flow_version"], 1);

    // Claim: the pinned version with variables resolved and the masks the server will demand.
    let claim = s
        .agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    assert_eq!(claim["run_id"], run_id.as_str());
    assert_eq!(claim["steps"][1]["value"], "alice");
    assert_eq!(
        claim["steps"][2]["value"], SECRET,
        "the agent needs the secret to type it"
    );
    assert_eq!(claim["mask_required"][2], json!(["#pw"]));
    assert_eq!(claim["mask_required"][3], json!(["#card"]));
    assert_eq!(claim["base_url"], "https://shop.example");
    // Nothing else queued.
    assert_eq!(
        s.agent
            .req(Method::POST, "/api/v1/agent/runs/claim", None)
            .await
            .status(),
        204
    );

    // Step results; the agent leaks the secret in its error and console text.
    for i in 0..5 {
        let body = json!({"index": i, "status": "passed", "duration_ms": 12,
            "error": if i == 2 { Value::String(format!("typed {SECRET} into #pw")) } else { Value::Null },
            "console": [{"level": "info", "text": format!("pw={SECRET}")}],
            "network": {"requests": 3}});
        let r = s
            .agent
            .json(
                Method::POST,
                &format!("/api/v1/agent/runs/{run_id}/steps"),
                Some(body),
                200,
            )
            .await;
        seen.push_str(&r.to_string());
    }
    s.agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/heartbeat"),
            None,
            204,
        )
        .await;

    // Screenshot of the screenshot step without the #card rectangle → 422, nothing stored.
    let shots_dir = app.data.join("screenshots");
    let r = upload(
        &s.agent,
        &run_id,
        3,
        white_png(64, 48),
        json!([{"selector": "#other", "x": 0, "y": 0, "width": 5, "height": 5}]),
    )
    .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "mask_missing");
    assert!(
        files_under(&shots_dir).is_empty(),
        "a refused upload leaves no file"
    );
    // The fill step with a secret needs its selector masked too.
    let r = upload(&s.agent, &run_id, 2, white_png(64, 48), json!([])).await;
    assert_eq!(r.status(), 422);
    let r = upload(
        &s.agent,
        &run_id,
        2,
        white_png(64, 48),
        json!([{"selector": "#pw", "not_found": true}]),
    )
    .await;
    assert_eq!(r.status(), 201);
    // With the rectangle (partly outside the image: clipped).
    let r = upload(
        &s.agent,
        &run_id,
        3,
        white_png(64, 48),
        json!([{"selector": "#card", "x": 10, "y": 20, "width": 100, "height": 8}]),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let done = s
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;
    assert_eq!(done["status"], "passed");
    // Completed runs reject further reports (409).
    let r = s
        .agent
        .req(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/steps"),
            Some(json!({"index": 0, "status": "failed"})),
        )
        .await;
    assert_eq!(r.status(), 409);

    // The run as people see it.
    let detail = s
        .owner
        .json(Method::GET, &format!("/api/v1/runs/{run_id}"), None, 200)
        .await;
    seen.push_str(&detail.to_string());
    assert_eq!(detail["steps"].as_array().unwrap().len(), 5);
    assert_eq!(detail["steps"][2]["error"], "typed [REDACTED] into #pw");
    assert_eq!(detail["steps"][3]["has_screenshot"], true);
    let list = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{}/runs?status=passed", s.app_id),
            None,
            200,
        )
        .await;
    assert_eq!(list["items"][0]["id"], run_id.as_str());

    // Signed URL → masked PNG.
    let su = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/runs/{run_id}/steps/3/screenshot"),
            None,
            200,
        )
        .await;
    let url = su["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("/shots/") && url.contains("exp=") && url.contains("sig="),
        "{url}"
    );
    let anon = app.anonymous();
    let r = anon.get(&url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let (w, h, px) = decode_rgba(&r.bytes().await.unwrap());
    assert_eq!((w, h), (64, 48));
    let at = |x: u32, y: u32| &px[((y * w + x) * 4) as usize..((y * w + x) * 4 + 4) as usize];
    for y in 20..28 {
        for x in 10..64 {
            assert_eq!(at(x, y), [0, 0, 0, 255], "pixel {x},{y} not masked");
        }
    }
    assert_eq!(at(5, 5), [255, 255, 255, 255]);
    assert_eq!(at(12, 30), [255, 255, 255, 255]);

    // On disk: encrypted, 0600, no PNG signature or chunk names.
    let files = files_under(&shots_dir);
    assert_eq!(files.len(), 2);
    for f in &files {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.starts_with(b"\x89PNG"),
            "{} is a plain PNG",
            f.display()
        );
        assert!(
            !bytes.windows(4).any(|w| w == b"IHDR" || w == b"IDAT"),
            "{} holds PNG plaintext",
            f.display()
        );
    }

    // Altered, cross-object, duplicated or extended URLs → the same 403, no bytes.
    let other = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/runs/{run_id}/steps/2/screenshot"),
            None,
            200,
        )
        .await;
    let other_obj = other["url"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(3)
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let (path, query) = url.split_once('?').unwrap();
    let exp: u64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("exp="))
        .unwrap()
        .parse()
        .unwrap();
    let obj = path
        .split('/')
        .nth(3)
        .unwrap()
        .trim_end_matches(".png")
        .to_string();
    let bad = vec![
        format!(
            "{path}?{}",
            query.replace(&format!("exp={exp}"), &format!("exp={}", exp + 600))
        ),
        format!(
            "{path}?{}",
            query.replace(&format!("exp={exp}"), &format!("exp={}", exp - 1000))
        ),
        format!("{}?{query}", path.replace(&obj, &other_obj)),
        format!("{path}?{query}&exp={exp}"),
        format!("{path}?{}", &query[..query.len() - 2]),
        format!("{path}?{}", query.replace("kid=1", "kid=2")),
        path.to_string(),
    ];
    for b in bad {
        let r = anon.get(&b).await;
        assert_eq!(r.status(), 403, "{b}");
        let body = r.bytes().await.unwrap();
        assert!(!body.starts_with(b"\x89PNG"));
    }

    // The secret never appears in responses, logs or stored step text.
    let audit = s
        .owner
        .get("/api/v1/audit?limit=1000")
        .await
        .text()
        .await
        .unwrap();
    seen.push_str(&audit);
    let vars = s
        .owner
        .get(&format!("/api/v1/applications/{}/variables", s.app_id))
        .await
        .text()
        .await
        .unwrap();
    assert!(vars.contains("\"set\":true"), "{vars}");
    seen.push_str(&vars);
    seen.push_str(
        &s.owner
            .get(&format!(
                "/api/v1/applications/{}/variables/password",
                s.app_id
            ))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(!seen.contains(SECRET), "secret in an API response");
    assert!(!app.log_text().contains(SECRET), "secret in the log");
    for f in files_under(&app.data) {
        let b = std::fs::read(&f).unwrap();
        assert!(
            !b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "secret in clear in {}",
            f.display()
        );
    }
    let _ = s.agent_token;
}

#[tokio::test]
async fn run_lifecycle_and_honest_status() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    async fn trigger(s: &Setup) -> Value {
        s.owner
            .json(
                Method::POST,
                &format!("/api/v1/flows/{}/runs", s.flow_id),
                None,
                201,
            )
            .await
    }
    // Cancel a queued run; cancelling again is 409.
    let r = trigger(&s).await;
    let id = r["id"].as_str().unwrap();
    s.owner
        .json(
            Method::POST,
            &format!("/api/v1/runs/{id}/cancel"),
            None,
            200,
        )
        .await;
    let v = s
        .owner
        .json(
            Method::POST,
            &format!("/api/v1/runs/{id}/cancel"),
            None,
            409,
        )
        .await;
    assert_eq!(v["code"], "invalid_transition");
    assert_eq!(
        s.agent
            .req(Method::POST, "/api/v1/agent/runs/claim", None)
            .await
            .status(),
        204,
        "cancelled runs are not claimable"
    );

    // A failed step makes the run Failed even if the agent says passed.
    trigger(&s).await;
    let c = s
        .agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    let rid = c["run_id"].as_str().unwrap().to_string();
    for i in 0..5 {
        let st = if i == 1 { "failed" } else { "passed" };
        s.agent
            .json(
                Method::POST,
                &format!("/api/v1/agent/runs/{rid}/steps"),
                Some(json!({"index": i, "status": st})),
                200,
            )
            .await;
    }
    let done = s
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["reason"], "step_failed:1");

    // Missing step results → Failed.
    trigger(&s).await;
    let c = s
        .agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    let rid = c["run_id"].as_str().unwrap().to_string();
    s.agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/steps"),
            Some(json!({"index": 0, "status": "passed"})),
            200,
        )
        .await;
    let done = s
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["reason"], "missing_step_result:1");
    // Out-of-range index → 422 naming the field; a report on a finished run → 409.
    let v = s
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/steps"),
            Some(json!({"index": 9, "status": "passed"})),
            422,
        )
        .await;
    assert_eq!(v["field"], "index");
    let v = s
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/steps"),
            Some(json!({"index": 1, "status": "passed"})),
            409,
        )
        .await;
    assert_eq!(v["code"], "invalid_transition");

    // A checkpoint is not evaluated without an AI endpoint → never Passed.
    let f = s
        .owner
        .json(Method::POST, &format!("/api/v1/applications/{}/flows", s.app_id), Some(json!({"name": "cp", "steps": [{"type": "checkpoint", "expectation": "cart shows 1 item"}]})), 201)
        .await;
    s.owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", f["id"].as_str().unwrap()),
            None,
            201,
        )
        .await;
    let c = s
        .agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    let rid = c["run_id"].as_str().unwrap().to_string();
    let st = s
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/steps"),
            Some(json!({"index": 0, "status": "passed"})),
            200,
        )
        .await;
    assert_eq!(st["status"], "not_evaluated");
    assert_eq!(st["reason"], "no AI endpoint configured");
    let done = s
        .agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/complete"),
            Some(json!({"status": "passed"})),
            200,
        )
        .await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["reason"], "checkpoint_not_evaluated:0");

    // Audit rows for trigger and cancel.
    let a = s
        .owner
        .json(Method::GET, "/api/v1/audit?action=run.cancel", None, 200)
        .await;
    assert_eq!(a["items"].as_array().unwrap().len(), 1);
    let a = s
        .owner
        .json(Method::GET, "/api/v1/audit?action=run.trigger", None, 200)
        .await;
    assert_eq!(a["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn two_agents_never_share_a_run() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let t2 = s
        .owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": s.app_id, "name": "ci-2"})),
            201,
        )
        .await;
    let a2 = app.bearer(t2["token"].as_str().unwrap());
    let n = 12;
    for _ in 0..n {
        s.owner
            .json(
                Method::POST,
                &format!("/api/v1/flows/{}/runs", s.flow_id),
                None,
                201,
            )
            .await;
    }
    async fn drain(a: &Session) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let r = a.req(Method::POST, "/api/v1/agent/runs/claim", None).await;
            if r.status() == 204 {
                return got;
            }
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            got.push(v["run_id"].as_str().unwrap().to_string());
        }
    }
    let (x, y) = tokio::join!(drain(&s.agent), drain(&a2));
    let sx: HashSet<_> = x.iter().cloned().collect();
    let sy: HashSet<_> = y.iter().cloned().collect();
    assert!(sx.is_disjoint(&sy), "a run was claimed twice: {x:?} {y:?}");
    assert_eq!(sx.len() + sy.len(), n);
    // An agent cannot report on a run the other one claimed.
    if let (Some(rx), false) = (x.first(), y.is_empty()) {
        let r = a2
            .req(
                Method::POST,
                &format!("/api/v1/agent/runs/{rx}/heartbeat"),
                None,
            )
            .await;
        assert_eq!(r.status(), 404);
    }
}

#[tokio::test]
async fn tenant_b_agent_cannot_claim_or_read_tenant_a_runs() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let run = s
        .owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s.flow_id),
            None,
            201,
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let (tid_b, pw_b) = create_tenant(&app, "tenant-b", "owner@b.example");
    let owner_b = app.login(Some(&tid_b), "owner@b.example", &pw_b).await;
    let ab = owner_b
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "b", "base_url": "https://b.example"})),
            201,
        )
        .await;
    let tb = owner_b
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": ab["id"], "name": "b"})),
            201,
        )
        .await;
    let agent_b = app.bearer(tb["token"].as_str().unwrap());
    assert_eq!(
        agent_b
            .req(Method::POST, "/api/v1/agent/runs/claim", None)
            .await
            .status(),
        204
    );
    assert_eq!(
        agent_b
            .get(&format!("/api/v1/runs/{run_id}"))
            .await
            .status(),
        403
    );
    assert_eq!(
        agent_b
            .req(
                Method::POST,
                &format!("/api/v1/agent/runs/{run_id}/steps"),
                Some(json!({"index": 0, "status": "passed"}))
            )
            .await
            .status(),
        404
    );
    assert_eq!(
        owner_b
            .get(&format!("/api/v1/runs/{run_id}"))
            .await
            .status(),
        404
    );
    // A's run is still queued and A's agent gets it.
    let c = s
        .agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    assert_eq!(c["run_id"], run_id.as_str());
}

#[tokio::test]
async fn flows_are_versioned_validated_and_filtered() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let v = s
        .owner
        .json(Method::POST, &format!("/api/v1/applications/{}/flows", s.app_id), Some(json!({"name": "bad", "steps": [{"type": "navigate", "url": "/"}, {"type": "wait", "for": "selector"}]})), 422)
        .await;
    assert_eq!(v["field"], "steps[1].selector");
    let v = s
        .owner
        .json(Method::POST, &format!("/api/v1/applications/{}/flows", s.app_id), Some(json!({"name": "bad", "steps": [{"type": "click", "selector": "#a", "nth": "first"}]})), 422)
        .await;
    assert_eq!(v["field"], "steps[0].nth");
    let up = s
        .owner
        .json(Method::PUT, &format!("/api/v1/flows/{}", s.flow_id), Some(json!({"name": "login v2", "tags": ["regression"], "steps": [{"type": "navigate", "url": "/v2"}]})), 200)
        .await;
    assert_eq!(up["version"], 2);
    let v1 = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/flows/{}/versions/1", s.flow_id),
            None,
            200,
        )
        .await;
    assert_eq!(v1["name"], "login");
    assert_eq!(v1["steps"].as_array().unwrap().len(), 5);
    assert_eq!(
        v1["steps"][4],
        json!({"type": "click", "selector": "#go", "nth": 0, "force": false})
    );
    s.owner
        .json(
            Method::GET,
            &format!("/api/v1/flows/{}/versions/3", s.flow_id),
            None,
            404,
        )
        .await;
    let smoke = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{}/flows?tag=smoke", s.app_id),
            None,
            200,
        )
        .await;
    assert!(smoke["items"].as_array().unwrap().is_empty());
    let reg = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{}/flows?tag=regression", s.app_id),
            None,
            200,
        )
        .await;
    assert_eq!(reg["items"].as_array().unwrap().len(), 1);
    // A run records the version it ran.
    let r = s
        .owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s.flow_id),
            None,
            201,
        )
        .await;
    assert_eq!(r["flow_version"], 2);
    // Delete: gone for reads, runs stay readable.
    s.owner
        .json(
            Method::DELETE,
            &format!("/api/v1/flows/{}", s.flow_id),
            None,
            204,
        )
        .await;
    s.owner
        .json(
            Method::GET,
            &format!("/api/v1/flows/{}", s.flow_id),
            None,
            404,
        )
        .await;
    s.owner
        .json(
            Method::GET,
            &format!("/api/v1/runs/{}", r["id"].as_str().unwrap()),
            None,
            200,
        )
        .await;
    let a = s
        .owner
        .json(Method::GET, "/api/v1/audit?action=flow.update", None, 200)
        .await;
    assert_eq!(a["items"].as_array().unwrap().len(), 1);
    // Viewer reads but cannot write.
    s.owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(
                json!({"email": "v@x.example", "role": "viewer", "password": "viewer-password-1"}),
            ),
            201,
        )
        .await;
    let viewer = app
        .login(Some(&app.tenant_id()), "v@x.example", "viewer-password-1")
        .await;
    viewer
        .json(
            Method::GET,
            &format!("/api/v1/applications/{}/flows", s.app_id),
            None,
            200,
        )
        .await;
    viewer
        .json(
            Method::POST,
            &format!("/api/v1/applications/{}/flows", s.app_id),
            Some(json!({"name": "x", "steps": [{"type": "navigate", "url": "/"}]})),
            403,
        )
        .await;
}

#[tokio::test]
async fn cron_schedule_creates_a_queued_run_and_webhook_triggers() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    s.owner
        .json(
            Method::PUT,
            &format!("/api/v1/flows/{}/schedule", s.flow_id),
            Some(json!({"cron": "not a cron", "timezone": "UTC"})),
            422,
        )
        .await;
    s.owner
        .json(
            Method::PUT,
            &format!("/api/v1/flows/{}/schedule", s.flow_id),
            Some(json!({"cron": "* * * * *", "timezone": "Mars/Olympus"})),
            422,
        )
        .await;
    // The server's own `schedules` job runs at second 0 of every minute; keep the window below
    // clear of it, so only the CLI run below can queue (else two runs are legitimately queued).
    loop {
        use chrono::Timelike;
        let sec = chrono::Utc::now().second();
        if (2..50).contains(&sec) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let f = s
        .owner
        .json(
            Method::PUT,
            &format!("/api/v1/flows/{}/schedule", s.flow_id),
            Some(json!({"cron": "* * * * * *", "timezone": "Europe/Berlin"})),
            200,
        )
        .await;
    assert_eq!(f["schedule"]["timezone"], "Europe/Berlin");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let out = run_cli(&[
        "jobs",
        "run",
        "schedules",
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{}/runs", s.app_id),
            None,
            200,
        )
        .await;
    let items = runs["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "missed ticks collapse into one run: {items:?}"
    );
    assert_eq!(items[0]["status"], "queued");
    assert_eq!(items[0]["trigger"], "schedule");
    s.owner
        .json(
            Method::DELETE,
            &format!("/api/v1/flows/{}/schedule", s.flow_id),
            None,
            200,
        )
        .await;

    // Webhook trigger token.
    let w = s
        .owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/webhook-tokens", s.flow_id),
            Some(json!({"name": "deploy"})),
            201,
        )
        .await;
    let tok = w["token"].as_str().unwrap();
    assert!(tok.starts_with(&format!("fgw_{}_", app.tenant_id())));
    let r = app
        .anonymous()
        .req(Method::POST, &format!("/api/v1/hooks/runs/{tok}"), None)
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["trigger"], "webhook");
    s.owner
        .json(
            Method::DELETE,
            &format!(
                "/api/v1/flows/{}/webhook-tokens/{}",
                s.flow_id,
                w["id"].as_str().unwrap()
            ),
            None,
            204,
        )
        .await;
    assert_eq!(
        app.anonymous()
            .req(Method::POST, &format!("/api/v1/hooks/runs/{tok}"), None)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn silent_agent_times_out() {
    let app = spawn_with(Opts {
        config: Some("[runs]\nheartbeat_timeout_secs = 1\n".into()),
        ..Default::default()
    })
    .await;
    let s = setup(&app).await;
    s.owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s.flow_id),
            None,
            201,
        )
        .await;
    let c = s
        .agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    let rid = c["run_id"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let cfg = app.dir.path().join("flowguard.toml");
    let out = run_cli(&[
        "jobs",
        "run",
        "agent-timeouts",
        "--data-dir",
        app.data.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = s
        .owner
        .json(Method::GET, &format!("/api/v1/runs/{rid}"), None, 200)
        .await;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["reason"], "agent_timeout");
}

#[tokio::test]
async fn hostile_uploads_are_refused_quickly() {
    use std::io::Write;
    let app = spawn_app().await;
    let s = setup(&app).await;
    s.owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s.flow_id),
            None,
            201,
        )
        .await;
    let c = s
        .agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    let rid = c["run_id"].as_str().unwrap().to_string();
    // (R03a) header bomb: 100000×100000 declared, tiny IDAT.
    fn chunk(t: &[u8], d: &[u8]) -> Vec<u8> {
        let mut v = (d.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(t);
        v.extend_from_slice(d);
        let mut h = crc32fast::Hasher::new();
        h.update(t);
        h.update(d);
        v.extend_from_slice(&h.finalize().to_be_bytes());
        v
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100000u32.to_be_bytes());
    ihdr.extend_from_slice(&100000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&[0u8; 64]).unwrap();
    let idat = z.finish().unwrap();
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    bomb.extend(chunk(b"IHDR", &ihdr));
    bomb.extend(chunk(b"IDAT", &idat));
    bomb.extend(chunk(b"IEND", b""));
    let t0 = std::time::Instant::now();
    let r = upload(&s.agent, &rid, 0, bomb, json!([])).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "image_dimensions_exceeded");
    assert!(t0.elapsed().as_secs() < 5);
    // Not a PNG.
    let r = upload(&s.agent, &rid, 0, b"GIF89a not a png".to_vec(), json!([])).await;
    assert_eq!(r.status(), 422);
    // (R05c) over 10 MiB → 413.
    let r = upload(
        &s.agent,
        &rid,
        0,
        vec![0u8; 10 * 1024 * 1024 + 1],
        json!([]),
    )
    .await;
    assert_eq!(r.status(), 413);
    assert!(files_under(&app.data.join("screenshots")).is_empty());
    // /healthz still answers.
    assert_eq!(app.anonymous().get("/healthz").await.status(), 200);
}

/// Every shape of the run list (plain, status filter, cursor, both) pages newest first, with no
/// run missing or repeated across pages, and an unknown application is 404.
#[tokio::test]
async fn run_list_pages_every_shape_newest_first() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let mut queued = Vec::new();
    for _ in 0..7 {
        let r = s
            .owner
            .json(
                Method::POST,
                &format!("/api/v1/flows/{}/runs", s.flow_id),
                None,
                201,
            )
            .await;
        queued.push(r["id"].as_str().unwrap().to_string());
    }
    // Cancel three of them, so a status filter selects a strict subset.
    let mut cancelled = Vec::new();
    for id in [&queued[1], &queued[4], &queued[6]] {
        s.owner
            .json(
                Method::POST,
                &format!("/api/v1/runs/{id}/cancel"),
                None,
                200,
            )
            .await;
        cancelled.push(id.clone());
    }
    async fn pages(owner: &Session, base: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let url = match &cursor {
                Some(c) => {
                    let enc: String = c
                        .bytes()
                        .map(|b| {
                            if b.is_ascii_alphanumeric() {
                                (b as char).to_string()
                            } else {
                                format!("%{b:02X}")
                            }
                        })
                        .collect();
                    format!("{base}&cursor={enc}")
                }
                None => base.to_string(),
            };
            let page = owner.json(Method::GET, &url, None, 200).await;
            let items = page["items"].as_array().unwrap().clone();
            assert!(items.len() <= 3, "limit not applied: {page}");
            all.extend(items);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return all,
            }
        }
        panic!("paging did not end");
    }
    let sorted_newest_first = |v: &[Value]| {
        v.windows(2).all(|w| {
            let a = (
                w[0]["queued_at"].as_str().unwrap(),
                w[0]["id"].as_str().unwrap(),
            );
            let b = (
                w[1]["queued_at"].as_str().unwrap(),
                w[1]["id"].as_str().unwrap(),
            );
            a > b
        })
    };
    let ids = |v: &[Value]| -> HashSet<String> {
        v.iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };

    let all = pages(
        &s.owner,
        &format!("/api/v1/applications/{}/runs?limit=3", s.app_id),
    )
    .await;
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(sorted_newest_first(&all), "{all:?}");
    assert_eq!(ids(&all), queued.iter().cloned().collect());

    let only = pages(
        &s.owner,
        &format!(
            "/api/v1/applications/{}/runs?limit=2&status=cancelled",
            s.app_id
        ),
    )
    .await;
    assert_eq!(only.len(), 3, "{only:?}");
    assert!(sorted_newest_first(&only), "{only:?}");
    assert_eq!(ids(&only), cancelled.iter().cloned().collect());
    assert!(only.iter().all(|r| r["status"] == "cancelled"));

    let still = pages(
        &s.owner,
        &format!(
            "/api/v1/applications/{}/runs?limit=3&status=queued",
            s.app_id
        ),
    )
    .await;
    assert_eq!(still.len(), 4, "{still:?}");

    let r = s
        .owner
        .req(Method::GET, "/api/v1/applications/nope/runs", None)
        .await;
    assert_eq!(r.status(), 404);
}

/// Every string of `v`, object keys included.
fn all_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| all_strings(x, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            all_strings(x, out);
        }),
        _ => {}
    }
}

/// Issue 24 (2): a secret holding `"`, `\`, a control character and non-ASCII text is scrubbed
/// from what every role reads, in each encoding the agent may send it: raw text, JSON text
/// inside a console line, a percent-encoded URL, a form body, an object key.
#[tokio::test]
async fn secrets_with_quotes_backslashes_and_controls_are_scrubbed_in_every_encoding() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let secret = "pa\"ss\\wo\u{1}rd-ü-9";
    s.owner
        .json(
            Method::PUT,
            &format!("/api/v1/applications/{}/variables/password", s.app_id),
            Some(json!({"value": secret, "secret": true})),
            200,
        )
        .await;
    s.owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": "viewer@example.test", "role": "viewer", "password": "viewer-password-2026"})),
            201,
        )
        .await;
    let viewer = app
        .login(
            Some(&app.tenant_id()),
            "viewer@example.test",
            "viewer-password-2026",
        )
        .await;
    let run = s
        .owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s.flow_id),
            None,
            201,
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    s.agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    let enc: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let escaped = serde_json::to_string(secret).unwrap();
    let escaped = escaped[1..escaped.len() - 1].to_string();
    let mut network = json!({
        "requests": [{"url": format!("https://shop.example/login?pw={enc}&x=1")}],
        "form": format!("user=alice&pw={}", enc.replace("%20", "+")),
    });
    network
        .as_object_mut()
        .unwrap()
        .insert(secret.to_string(), json!(1));
    for i in [0, 1] {
        s.agent
            .json(
                Method::POST,
                &format!("/api/v1/agent/runs/{run_id}/steps"),
                Some(json!({"index": i, "status": "passed", "duration_ms": 1})),
                200,
            )
            .await;
    }
    s.agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{run_id}/steps"),
            Some(json!({"index": 2, "status": "failed", "duration_ms": 5,
                "error": format!("typed {secret} into #pw"),
                "console": [
                    {"level": "info", "text": format!("pw={secret}")},
                    {"level": "log", "text": format!("{{\"pw\":\"{escaped}\"}}")},
                ],
                "network": network})),
            200,
        )
        .await;
    for who in [&s.owner, &viewer] {
        let r = who.get(&format!("/api/v1/runs/{run_id}")).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(!text.contains(&escaped), "escaped secret in {text}");
        assert!(!text.contains(&enc), "encoded secret in {text}");
        let detail: Value = serde_json::from_str(&text).unwrap();
        let mut strings = Vec::new();
        all_strings(&detail, &mut strings);
        for st in &strings {
            assert!(!st.contains(secret), "secret in {st:?}");
            let decoded = percent_encoding_decode(st);
            assert!(!decoded.contains(secret), "encoded secret in {st:?}");
        }
        let step = &detail["steps"][2];
        assert_eq!(step["error"], "typed [REDACTED] into #pw");
        assert!(step["console"].to_string().contains("[REDACTED]"), "{step}");
        assert!(step["network"].to_string().contains("[REDACTED]"), "{step}");
    }
}

/// Percent-decoding (RFC 3986), `+` left alone.
fn percent_encoding_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Issue 24 (4): `screenshots.url_ttl_secs` sets the lifetime of signed screenshot URLs.
#[tokio::test]
async fn screenshot_url_ttl_is_the_configured_one() {
    let app = spawn_with(Opts {
        config: Some("[screenshots]\nurl_ttl_secs = 3\n".into()),
        ..Default::default()
    })
    .await;
    let s = setup(&app).await;
    let run = s
        .owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{}/runs", s.flow_id),
            None,
            201,
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    s.agent
        .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
        .await;
    for i in 0..5 {
        s.agent
            .json(
                Method::POST,
                &format!("/api/v1/agent/runs/{run_id}/steps"),
                Some(json!({"index": i, "status": "passed", "duration_ms": 1})),
                200,
            )
            .await;
    }
    let r = upload(
        &s.agent,
        &run_id,
        3,
        white_png(64, 48),
        json!([{"selector": "#card", "x": 10, "y": 20, "width": 10, "height": 8}]),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let before = chrono::Utc::now().timestamp();
    let su = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/runs/{run_id}/steps/3/screenshot"),
            None,
            200,
        )
        .await;
    let after = chrono::Utc::now().timestamp();
    let url = su["url"].as_str().unwrap().to_string();
    let exp: i64 = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("exp="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before + 3..=after + 3).contains(&exp),
        "exp {exp} is issue time + 3 s (issued between {before} and {after})"
    );
    let expires_at = chrono::DateTime::parse_from_rfc3339(su["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(expires_at, exp);
    // Once the server's clock passes `exp`, the link is refused (polled, no fixed sleep).
    let anon = app.anonymous();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let st = anon.get(&url).await.status();
        if st == 403 {
            assert!(chrono::Utc::now().timestamp() >= exp, "refused before exp");
            break;
        }
        assert_eq!(st, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "link still served after 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `flowguard jobs run schedules --as-of T` (a fresh process each time, i.e. a restart) and the
/// number of runs it queued.
fn schedules_as_of(app: &TestApp, t: &str) -> usize {
    let out = run_cli(&[
        "jobs",
        "run",
        "schedules",
        "--as-of",
        t,
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("schedules: ")
        .and_then(|r| r.strip_suffix(" handled"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {text:?}"))
}

/// Issue 24 item 11: a (cron, IANA zone) schedule across both Europe/Berlin changes of 2030,
/// each evaluation in a new process (a restart): the spring-forward 02:30 runs once at 03:00
/// CEST, the fall-back 02:30 runs once (its first occurrence), and the view shows the next run
/// in the zone and in UTC.
#[tokio::test]
async fn schedules_across_dst_and_restarts_run_once_per_local_time() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let f = s
        .owner
        .json(
            Method::PUT,
            &format!("/api/v1/flows/{}/schedule", s.flow_id),
            Some(json!({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})),
            200,
        )
        .await;
    let next = &f["schedule"]["next_run"];
    let (local, utc) = (
        next["local"].as_str().unwrap(),
        next["utc"].as_str().unwrap(),
    );
    assert!(utc.ends_with('Z'), "{f}");
    assert!(
        local.contains("T02:30:00+0") || local.contains("T03:00:00+02:00"),
        "{f}"
    );
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(local).unwrap(),
        chrono::DateTime::parse_from_rfc3339(utc).unwrap()
    );

    // Catch-up after a long stop: one run, however many ticks were missed.
    assert_eq!(schedules_as_of(&app, "2030-03-30T12:00:00Z"), 1);
    // Spring forward, 2030-03-31 02:00 CET → 03:00 CEST (01:00 UTC): 02:30 does not exist.
    assert_eq!(schedules_as_of(&app, "2030-03-31T00:59:00Z"), 0);
    assert_eq!(schedules_as_of(&app, "2030-03-31T01:00:00Z"), 1);
    assert_eq!(schedules_as_of(&app, "2030-03-31T01:00:30Z"), 0);
    assert_eq!(schedules_as_of(&app, "2030-03-31T22:00:00Z"), 0);
    assert_eq!(schedules_as_of(&app, "2030-04-01T00:30:00Z"), 1);
    // Fall back, 2030-10-27 03:00 CEST → 02:00 CET (01:00 UTC): 02:30 at 00:30Z and 01:30Z.
    assert_eq!(schedules_as_of(&app, "2030-10-26T12:00:00Z"), 1);
    assert_eq!(schedules_as_of(&app, "2030-10-27T00:29:00Z"), 0);
    assert_eq!(schedules_as_of(&app, "2030-10-27T00:30:00Z"), 1);
    assert_eq!(schedules_as_of(&app, "2030-10-27T01:10:00Z"), 0);
    assert_eq!(schedules_as_of(&app, "2030-10-27T01:30:00Z"), 0);
    assert_eq!(schedules_as_of(&app, "2030-10-27T01:45:00Z"), 0);
    assert_eq!(schedules_as_of(&app, "2030-10-28T01:29:00Z"), 0);
    assert_eq!(schedules_as_of(&app, "2030-10-28T01:30:00Z"), 1);

    let runs = s
        .owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{}/runs", s.app_id),
            None,
            200,
        )
        .await;
    let items = runs["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "{items:?}");
    assert!(items.iter().all(|r| r["trigger"] == "schedule"));
}

/// Issue 25, background WAL checkpoints: busy tenant stores are checkpointed by the server's
/// background pass (the database file grows while no request connection reaches the backstop
/// autocheckpoint), the pass stands aside for a database re-key and continues on the new key,
/// and every acknowledged step report survives a SIGKILL in the middle of that traffic.
#[tokio::test]
async fn step_reports_survive_background_checkpoints_a_rekey_and_sigkill() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let tid = app.tenant_id();
    let db = app.data.join("tenants").join(format!("{tid}.db"));
    let wal = app.data.join("tenants").join(format!("{tid}.db-wal"));
    // 5 reports of ~24 KiB per run: ~120 KiB of WAL per run.
    async fn one_run(s: &Setup, tag: &str, acked: &mut Vec<(String, i64, String)>) {
        let r = s
            .owner
            .json(
                Method::POST,
                &format!("/api/v1/flows/{}/runs", s.flow_id),
                None,
                201,
            )
            .await;
        let c = s
            .agent
            .json(Method::POST, "/api/v1/agent/runs/claim", None, 200)
            .await;
        assert_eq!(c["run_id"], r["id"]);
        let rid = c["run_id"].as_str().unwrap().to_string();
        for i in 0..5 {
            let marker = format!("{tag}-{rid}-{i}-");
            let error = format!("{marker}{}", "e".repeat(24 * 1024));
            s.agent
                .json(
                    Method::POST,
                    &format!("/api/v1/agent/runs/{rid}/steps"),
                    Some(json!({"index": i, "status": "passed", "error": error})),
                    200,
                )
                .await;
            acked.push((rid.clone(), i, marker));
        }
    }
    let mut acked = Vec::new();
    // Write until the database file has grown by 1 MiB while the WAL file stays below 3 MiB:
    // a request's commit checkpoints only at 1,000 WAL pages (SQLite's default, ~4 MiB) or,
    // with the background checkpointer on, at the 8,000-page backstop, so the growth is the
    // background pass's work.
    async fn fill_until_checkpointed(
        s: &Setup,
        tag: &str,
        acked: &mut Vec<(String, i64, String)>,
        db: &std::path::Path,
        wal: &std::path::Path,
    ) {
        let len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = len(db);
        let mut n = 0;
        while len(db) < before + (1 << 20) {
            one_run(s, tag, acked).await;
            assert!(len(wal) < 3 << 20, "WAL grew to {} bytes", len(wal));
            n += 1;
            assert!(n < 150, "no background checkpoint after {n} runs");
        }
    }
    // 1. The pass checkpoints a busy store.
    fill_until_checkpointed(&s, "a", &mut acked, &db, &wal).await;
    // 2. Rotate the keys (re-keys the store): the pass holds off, then continues on the new key.
    s.owner
        .json(Method::POST, "/api/v1/keys/rotate", None, 200)
        .await;
    fill_until_checkpointed(&s, "b", &mut acked, &db, &wal).await;
    assert!(
        !app.log_text().contains("background WAL checkpoint failed"),
        "{}",
        app.log_text()
    );

    // 3. More reports, then SIGKILL right after the last acknowledgement (a checkpoint may be
    //    copying frames at that instant); every acknowledged report must be there after restart.
    for _ in 0..10 {
        one_run(&s, "c", &mut acked).await;
    }
    let pw = app.owner_password();
    let TestApp { dir, child, .. } = app;
    drop(child); // SIGKILL
    let app = spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let owner = app.login(Some(&tid), "admin@localhost", &pw).await;
    let mut runs: Vec<&String> = acked.iter().map(|(r, _, _)| r).collect();
    runs.dedup();
    for rid in runs {
        let d = owner
            .json(Method::GET, &format!("/api/v1/runs/{rid}"), None, 200)
            .await;
        for (_, i, marker) in acked.iter().filter(|(r, _, _)| r == rid) {
            let e = d["steps"][*i as usize]["error"].as_str().unwrap_or("");
            assert!(e.starts_with(marker.as_str()), "lost report {marker}");
        }
    }
}
