//! Issue 20: ticket integrations. One fake tracker inside the test process (actix-web on
//! rustls/ring, its certificate issued by a private CA made with rcgen, the CA handed to the
//! appliance as `ca_pem`) answers as Jira (`/jira`), GitHub Enterprise (`/gh`), GitLab (`/gl`)
//! and Azure DevOps (`/ado/Default Collection`) do, checks the auth header of each, and records
//! every request; the appliance under test is the real binary.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "Tr4ck3r-S3cret-5521-zz";
pub(crate) const TOKEN: &str = "pat-canary-TOKEN-7731-never-log";

#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A scripted answer to the next issue-creating request.
#[derive(Clone, Debug)]
enum Scripted {
    Status(u16, Option<u64>),
    Html,
    Empty,
    Redirect,
}

#[derive(Default)]
struct St {
    seen: Vec<Seen>,
    script: VecDeque<Scripted>,
    /// Answer 401 to every request (an expired token).
    expired: bool,
    /// Token the fake accepts.
    token: String,
    counter: u64,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<St>>);

pub(crate) struct Tracker {
    pub(crate) addr: SocketAddr,
    pub(crate) ca_pem: String,
    st: Shared,
}

impl Tracker {
    pub(crate) fn url(&self, p: &str) -> String {
        format!("https://{}{p}", self.addr)
    }
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.st.0.lock().unwrap().seen.clone()
    }
    fn posts(&self, suffix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && s.path.ends_with(suffix))
            .collect()
    }
    fn script(&self, s: Scripted) {
        self.st.0.lock().unwrap().script.push_back(s);
    }
    fn expire(&self, on: bool) {
        self.st.0.lock().unwrap().expired = on;
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn j(status: u16, v: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(v)
}

fn is_create(method: &str, path: &str) -> bool {
    method == "POST"
        && (path.ends_with("/rest/api/2/issue")
            || path.ends_with("/issues")
            || path.contains("/_apis/wit/workitems/$Bug"))
}

async fn handle(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    let method = req.method().as_str().to_string();
    let path = req.path().to_string();
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    };
    let (expired, token, scripted, n) = {
        let mut s = st.0.lock().unwrap();
        s.seen.push(seen.clone());
        s.counter += 1;
        let scripted = if is_create(&method, &path) {
            s.script.pop_front()
        } else {
            None
        };
        (s.expired, s.token.clone(), scripted, s.counter)
    };
    // Authentication, exactly as each API documents it.
    let authed = if path.starts_with("/jira/") {
        let a = seen.header("authorization").unwrap_or("");
        a == format!("Bearer {token}")
            || a == format!("Basic {}", b64(&format!("qa@corp.example:{token}")))
    } else if path.starts_with("/gh/") {
        seen.header("authorization") == Some(format!("Bearer {token}").as_str())
            && seen.header("accept") == Some("application/vnd.github+json")
    } else if path.starts_with("/gl/") {
        seen.header("private-token") == Some(token.as_str())
    } else if path.starts_with("/ado/") {
        seen.header("authorization")
            == Some(format!("Basic {}", b64(&format!(":{token}"))).as_str())
    } else {
        false
    };
    if expired || !authed {
        return j(
            401,
            json!({"message": "401 Unauthorized", "errorMessages": ["token expired"]}),
        );
    }
    if let Some(s) = scripted {
        return match s {
            Scripted::Status(code, ra) => {
                let mut r =
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap());
                if let Some(ra) = ra {
                    r.insert_header(("Retry-After", ra.to_string()));
                }
                r.json(json!({"message": "try later"}))
            }
            Scripted::Html => HttpResponse::Ok()
                .content_type("text/html")
                .body("<html><body>Sign in</body></html>"),
            Scripted::Empty => HttpResponse::Ok().finish(),
            Scripted::Redirect => HttpResponse::Found()
                .insert_header(("Location", "https://sso.corp.example/login"))
                .finish(),
        };
    }
    let base = format!("https://{}", req.connection_info().host());
    let m = method.as_str();
    match (m, path.as_str()) {
        // ---- Jira (project ED)
        ("GET", "/jira/rest/api/2/myself") => {
            j(200, json!({"name": "svc-flowguard", "key": "svc"}))
        }
        ("GET", "/jira/rest/api/2/project/ED") => j(
            200,
            json!({"id": "10000", "key": "ED",
            "issueTypes": [{"name": "Bug"}, {"name": "Task"}]}),
        ),
        ("GET", p) if p.starts_with("/jira/rest/api/2/project/") => j(
            404,
            json!({"errorMessages": ["No project could be found with key 'NOPE'."], "errors": {}}),
        ),
        ("POST", "/jira/rest/api/2/issue") => {
            let v = seen.json();
            if v["fields"]["project"]["key"] != "ED" {
                return j(
                    400,
                    json!({"errorMessages": [], "errors": {"project": "project is required"}}),
                );
            }
            j(
                201,
                json!({"id": format!("{}", 10000 + n), "key": format!("ED-{n}"),
                "self": format!("{base}/jira/rest/api/2/issue/{}", 10000 + n)}),
            )
        }
        ("POST", p) if p.starts_with("/jira/rest/api/2/issue/") && p.ends_with("/attachments") => {
            if seen.header("x-atlassian-token") != Some("no-check")
                || !seen
                    .header("content-type")
                    .unwrap_or("")
                    .starts_with("multipart/form-data; boundary=")
            {
                return j(403, json!({"errorMessages": ["XSRF check failed"]}));
            }
            j(200, json!([{"id": "20001", "filename": "shot.png"}]))
        }
        ("POST", p) if p.starts_with("/jira/rest/api/2/issue/") && p.ends_with("/comment") => j(
            201,
            json!({"id": format!("{n}"), "body": seen.json()["body"]}),
        ),
        // ---- GitHub Enterprise Server (repo acme/shop)
        ("GET", "/gh/api/v3/user") => j(200, json!({"login": "flowguard-bot", "id": 1})),
        ("GET", "/gh/api/v3/repos/acme/shop") => j(
            200,
            json!({"id": 5, "full_name": "acme/shop", "has_issues": true}),
        ),
        ("POST", "/gh/api/v3/repos/acme/shop/issues") => j(
            201,
            json!({"id": 900 + n, "number": n, "html_url": format!("{base}/gh/acme/shop/issues/{n}")}),
        ),
        ("POST", p)
            if p.starts_with("/gh/api/v3/repos/acme/shop/issues/") && p.ends_with("/comments") =>
        {
            j(
                201,
                json!({"id": 7000 + n, "html_url": format!("{base}/gh/acme/shop/issues#c{n}")}),
            )
        }
        // ---- GitLab (project grp/shop, by url-encoded path)
        ("GET", "/gl/api/v4/user") => j(200, json!({"id": 3, "username": "flowguard-bot"})),
        ("GET", "/gl/api/v4/projects/grp%2Fshop") => {
            j(200, json!({"id": 77, "issues_enabled": true}))
        }
        ("POST", "/gl/api/v4/projects/grp%2Fshop/uploads") => {
            if !seen
                .header("content-type")
                .unwrap_or("")
                .starts_with("multipart/form-data; boundary=")
                || !seen.text().contains("name=\"file\"")
            {
                return j(400, json!({"message": "file is missing"}));
            }
            j(
                201,
                json!({"alt": "shot", "url": "/uploads/abc123/shot.png",
                "markdown": "![shot](/uploads/abc123/shot.png)"}),
            )
        }
        ("POST", "/gl/api/v4/projects/grp%2Fshop/issues") => j(
            201,
            json!({"id": 500 + n, "iid": n, "web_url": format!("{base}/gl/grp/shop/-/issues/{n}")}),
        ),
        ("POST", p)
            if p.starts_with("/gl/api/v4/projects/grp%2Fshop/issues/") && p.ends_with("/notes") =>
        {
            j(201, json!({"id": 600 + n, "body": seen.json()["body"]}))
        }
        // ---- Azure DevOps Server (collection "Default Collection", project "My Project")
        ("GET", "/ado/Default%20Collection/_apis/connectionData") => j(
            200,
            json!({"authenticatedUser": {"id": "u1", "providerDisplayName": "FlowGuard Service"}}),
        ),
        ("GET", "/ado/Default%20Collection/_apis/projects/My%20Project") => {
            j(200, json!({"id": "p-1", "name": "My Project"}))
        }
        ("GET", "/ado/Default%20Collection/My%20Project/_apis/wit/workitemtypes/Bug") => j(
            200,
            json!({"name": "Bug", "referenceName": "Microsoft.VSTS.WorkItemTypes.Bug"}),
        ),
        ("POST", "/ado/Default%20Collection/My%20Project/_apis/wit/attachments") => {
            if seen.header("content-type") != Some("application/octet-stream") {
                return j(400, json!({"message": "binary expected"}));
            }
            j(
                201,
                json!({"id": "att-1", "url": format!("{base}/ado/Default%20Collection/_apis/wit/attachments/att-1")}),
            )
        }
        ("POST", "/ado/Default%20Collection/My%20Project/_apis/wit/workitems/$Bug") => {
            if seen.header("content-type") != Some("application/json-patch+json")
                || !seen.json().is_array()
            {
                return j(415, json!({"message": "json-patch expected"}));
            }
            j(
                200,
                json!({"id": 40 + n, "rev": 1,
                "url": format!("{base}/ado/Default%20Collection/_apis/wit/workItems/{}", 40 + n),
                "_links": {"html": {"href": format!("{base}/ado/Default%20Collection/My%20Project/_workitems/edit/{}", 40 + n)}}}),
            )
        }
        ("POST", p)
            if p.starts_with("/ado/Default%20Collection/My%20Project/_apis/wit/workItems/")
                && p.ends_with("/comments") =>
        {
            j(200, json!({"id": n, "text": seen.json()["text"]}))
        }
        _ => j(404, json!({"message": "404 Not Found"})),
    }
}

/// Start the fake tracker on 127.0.0.1:0 (own thread and actix system), its certificate issued
/// by a private CA (`ca_pem` = that CA).
pub(crate) fn start_tracker() -> Tracker {
    start_tracker_with(false)
}

/// The fake tracker; `self_signed`: its certificate is one self-signed CA:TRUE certificate for
/// 127.0.0.1 used as the leaf (what `openssl req -x509` makes), and `ca_pem` is that certificate.
pub(crate) fn start_tracker_with(self_signed: bool) -> Tracker {
    if self_signed {
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "tracker.corp.example");
        let k = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&k).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::try_from(k.serialize_der()).unwrap();
        return serve_tracker(cert.der().clone(), key, cert.pem());
    }
    let mut cap = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    cap.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    cap.distinguished_name
        .push(rcgen::DnType::CommonName, "Corp private tracker CA");
    cap.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = cap.self_signed(&ca_key).unwrap();
    let lp = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let lk = rcgen::KeyPair::generate().unwrap();
    let leaf = lp.signed_by(&lk, &ca, &ca_key).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(lk.serialize_der()).unwrap();
    serve_tracker(leaf.der().clone(), key, ca.pem())
}

fn serve_tracker(
    leaf: rustls_pki_types::CertificateDer<'static>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    ca_pem: String,
) -> Tracker {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let st = Shared(Arc::new(Mutex::new(St {
        token: TOKEN.to_string(),
        ..Default::default()
    })));
    let st2 = st.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let srv = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(st2.clone()))
                    .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
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
    Tracker { addr, ca_pem, st }
}

pub(crate) fn config(port: u16) -> String {
    format!("public_url = \"https://flowguard.corp.example\"\n[egress]\nallow = [\"127.0.0.1:{port}\"]\n")
}

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

pub(crate) struct World {
    pub(crate) owner: Session,
    pub(crate) agent: Session,
    pub(crate) app_id: String,
    pub(crate) flow_id: String,
}

/// Owner, an application with a secret variable, a flow `navigate → fill {{password}} → click`
/// and an agent.
pub(crate) async fn world(app: &TestApp) -> World {
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
            Some(json!({"name": "checkout", "steps": [
                {"type": "navigate", "url": "/login"},
                {"type": "fill", "selector": "#pw", "value": "{{password}}"},
                {"type": "click", "selector": "#pay"}
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
    World {
        agent: app.bearer(t["token"].as_str().unwrap()),
        owner,
        app_id,
        flow_id: flow["id"].as_str().unwrap().to_string(),
    }
}

/// How a run ends.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum End {
    /// Step 2 fails with error `err`, the agent completes `failed` (as the real agent does).
    StepFails(&'static str),
    /// All steps pass.
    Pass,
    /// The agent gives up without a failed step (browser crash).
    Crash,
}

/// Run the flow once, ending as `end`. Returns the run id.
pub(crate) async fn run_once(w: &World, end: End) -> String {
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
    let steps = if end == End::Crash { 1 } else { 2 };
    for i in 0..steps {
        w.agent
            .json(
                Method::POST,
                &format!("/api/v1/agent/runs/{rid}/steps"),
                Some(json!({"index": i, "status": "passed"})),
                200,
            )
            .await;
    }
    let complete = match end {
        End::StepFails(err) => {
            let form = reqwest::multipart::Form::new().part(
                "image",
                reqwest::multipart::Part::bytes(white_png(32, 24))
                    .file_name("s.png")
                    .mime_str("image/png")
                    .unwrap(),
            );
            let r = w
                .agent
                .client
                .post(format!(
                    "{}/api/v1/agent/runs/{rid}/steps/2/screenshot",
                    w.agent.base
                ))
                .bearer_auth(w.agent.bearer.as_ref().unwrap())
                .multipart(form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            w.agent
                .json(
                    Method::POST,
                    &format!("/api/v1/agent/runs/{rid}/steps"),
                    Some(json!({"index": 2, "status": "failed",
                        "error": format!("{err} (typed {SECRET})"),
                        "console": [{"level": "error", "text": format!("payment failed for {SECRET}")},
                                    {"level": "warn", "text": "retrying"}]})),
                    200,
                )
                .await;
            json!({"status": "failed", "error": err})
        }
        End::Pass => {
            w.agent
                .json(
                    Method::POST,
                    &format!("/api/v1/agent/runs/{rid}/steps"),
                    Some(json!({"index": 2, "status": "passed"})),
                    200,
                )
                .await;
            json!({"status": "passed"})
        }
        End::Crash => json!({"status": "failed", "error": "browser crashed: target closed"}),
    };
    w.agent
        .json(
            Method::POST,
            &format!("/api/v1/agent/runs/{rid}/complete"),
            Some(complete),
            200,
        )
        .await;
    rid
}

pub(crate) fn integration(
    provider: &str,
    base_url: String,
    project: &str,
    ca: &str,
    rules: Value,
) -> Value {
    json!({"provider": provider, "base_url": base_url, "project": project,
        "auth": {"token": TOKEN}, "ca_pem": ca, "labels": ["flowguard", "e2e"], "rules": rules})
}

/// Wait until the run's ticket is no longer pending (or `want` attempts were made).
pub(crate) async fn wait_ticket(s: &Session, run: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = s
            .json(Method::GET, &format!("/api/v1/runs/{run}"), None, 200)
            .await;
        if until(&r["ticket"]) {
            return r["ticket"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "ticket never settled: {}",
            r["ticket"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn settled(t: &Value) -> bool {
    t["status"] == "filed" || t["status"] == "failed"
}

fn assert_no_secrets(tr: &Tracker) {
    for s in tr.seen() {
        let all = format!("{} {} {:?} {}", s.path, s.query, s.headers, s.text());
        assert!(
            !all.contains(SECRET),
            "a secret variable value reached the tracker: {all}"
        );
    }
}

async fn audit_actions(owner: &Session) -> Vec<Value> {
    let a = owner
        .json(Method::GET, "/api/v1/audit?limit=200", None, 200)
        .await;
    a["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn jira_save_test_preview_and_automatic_filing_with_attachment() {
    let tr = start_tracker();
    let app = spawn_with(Opts {
        config: Some(config(tr.addr.port())),
        ..Default::default()
    })
    .await;
    let w = world(&app).await;
    let path = format!("/api/v1/applications/{}/integration", w.app_id);
    // Not configured yet.
    assert_eq!(w.owner.get(&path).await.status(), 404);
    let r = w
        .owner
        .req(Method::POST, &format!("{path}/test"), None)
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "integration_not_configured"
    );
    // Egress: a host outside egress.allow is refused on save.
    let mut body = integration(
        "jira",
        tr.url("/jira"),
        "ED",
        &tr.ca_pem,
        json!({"file_on_failure": true, "after_consecutive_failures": 1}),
    );
    body["fields"] = json!({"customfield_10010": {"value": "QA"}});
    let mut denied = body.clone();
    denied["base_url"] = json!("https://tracker.elsewhere.example/jira");
    let r = w.owner.req(Method::PUT, &path, Some(denied)).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "egress_denied", "{v}");
    assert_eq!(v["field"], "base_url");
    let mut http = body.clone();
    http["base_url"] = json!(format!("http://{}/jira", tr.addr));
    let r = w.owner.req(Method::PUT, &path, Some(http)).await;
    assert_eq!(r.status(), 422);
    // Save: write-only token.
    let saved = w
        .owner
        .json(Method::PUT, &path, Some(body.clone()), 200)
        .await;
    assert_eq!(saved["token_set"], true);
    assert_eq!(saved["provider"], "jira");
    let got = w.owner.json(Method::GET, &path, None, 200).await;
    assert!(!got.to_string().contains(TOKEN), "{got}");
    assert_eq!(got["rules"]["after_consecutive_failures"], 1);
    // Test with no failed run: every check passes, no preview, nothing created.
    let t = w
        .owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(t["ok"], true, "{t}");
    let names: Vec<&str> = t["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["reachability", "authentication", "project", "issue_type"]
    );
    assert!(t["preview"].is_null());
    assert!(tr.posts("/rest/api/2/issue").is_empty());
    let gets: Vec<String> = tr
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        gets,
        [
            "GET /jira/rest/api/2/myself",
            "GET /jira/rest/api/2/project/ED"
        ]
    );
    assert_eq!(
        tr.seen()[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // A failing run is filed automatically.
    let rid = run_once(&w, End::StepFails("Timeout 30000ms waiting for #pay")).await;
    let ticket = wait_ticket(&w.owner, &rid, settled).await;
    assert_eq!(ticket["status"], "filed", "{ticket}");
    assert_eq!(ticket["kind"], "create");
    assert_eq!(ticket["key"], "ED-3", "{ticket}");
    assert!(
        ticket["url"]
            .as_str()
            .unwrap()
            .ends_with("/jira/browse/ED-3"),
        "{ticket}"
    );
    assert_eq!(ticket["attempts"], 1);
    assert!(ticket["error"].is_null(), "{ticket}");
    let creates = tr.posts("/jira/rest/api/2/issue");
    assert_eq!(creates.len(), 1);
    let c = &creates[0];
    assert_eq!(
        c.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(c.header("content-type"), Some("application/json"));
    let f = &c.json()["fields"];
    assert_eq!(f["project"]["key"], "ED");
    assert_eq!(f["issuetype"]["name"], "Bug");
    assert_eq!(f["labels"], json!(["flowguard", "e2e"]));
    assert_eq!(f["customfield_10010"]["value"], "QA");
    assert_eq!(
        f["summary"],
        "[FlowGuard] checkout: step 3 of 3 (click) failed"
    );
    let d = f["description"].as_str().unwrap();
    assert!(
        d.contains(&format!("https://flowguard.corp.example/runs/{rid}")),
        "{d}"
    );
    assert!(d.contains("Timeout 30000ms waiting for #pay"), "{d}");
    assert!(d.contains("[error] payment failed for [REDACTED]"), "{d}");
    let att = tr.posts("/jira/rest/api/2/issue/ED-3/attachments");
    assert_eq!(att.len(), 1, "one attachment");
    assert_eq!(att[0].header("x-atlassian-token"), Some("no-check"));
    assert!(att[0].text().contains("Content-Type: image/png"));
    assert!(att[0].body.windows(8).any(|w| w == b"\x89PNG\r\n\x1a\n"));
    assert_no_secrets(&tr);

    // The preview now shows the latest failed run, scrubbed, and still creates nothing.
    let t = w
        .owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(
        t["preview"]["title"],
        "[FlowGuard] checkout: step 3 of 3 (click) failed"
    );
    assert!(t["preview"]["body"]
        .as_str()
        .unwrap()
        .contains("[REDACTED]"));
    assert!(!t.to_string().contains(SECRET));
    assert_eq!(tr.posts("/jira/rest/api/2/issue").len(), 1);

    // Audit rows, without the token.
    let audit = audit_actions(&w.owner).await;
    let actions: Vec<&str> = audit
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for want in ["integration.save", "integration.test", "ticket.filed"] {
        assert!(actions.contains(&want), "{want} missing: {actions:?}");
    }
    let save = audit
        .iter()
        .find(|a| a["action"] == "integration.save")
        .unwrap();
    assert_eq!(save["details"]["provider"], "jira");
    assert_eq!(save["details"]["project"], "ED");
    let all = serde_json::to_string(&audit).unwrap();
    assert!(!all.contains(TOKEN) && !all.contains(SECRET));
    assert!(!app.log_text().contains(TOKEN), "the token reached the log");

    // Delete.
    assert_eq!(w.owner.req(Method::DELETE, &path, None).await.status(), 204);
    assert_eq!(w.owner.get(&path).await.status(), 404);
    assert!(audit_actions(&w.owner)
        .await
        .iter()
        .any(|a| a["action"] == "integration.delete"));
}

#[tokio::test]
async fn rules_thresholds_signature_dedup_recovery_and_no_ticket_for_infrastructure() {
    let tr = start_tracker();
    let app = spawn_with(Opts {
        config: Some(config(tr.addr.port())),
        ..Default::default()
    })
    .await;
    let w = world(&app).await;
    let path = format!("/api/v1/applications/{}/integration", w.app_id);
    let body = integration(
        "github",
        tr.url("/gh"),
        "acme/shop",
        &tr.ca_pem,
        json!({"file_on_failure": true, "after_consecutive_failures": 2,
               "comment_on_repeat": true, "comment_on_recovery": true}),
    );
    w.owner.json(Method::PUT, &path, Some(body), 200).await;
    let issues = "/gh/api/v3/repos/acme/shop/issues";

    // Infrastructure outcomes never file, nor count towards the threshold.
    let crash = run_once(&w, End::Crash).await;
    let r1 = run_once(&w, End::StepFails("element #pay not found")).await;
    let crash2 = run_once(&w, End::Crash).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(tr.posts(issues).is_empty(), "filed below the threshold");
    for r in [&crash, &r1, &crash2] {
        let v = w
            .owner
            .json(Method::GET, &format!("/api/v1/runs/{r}"), None, 200)
            .await;
        assert!(v["ticket"].is_null(), "{v}");
    }
    // The second test failure in a row files one ticket.
    let r2 = run_once(&w, End::StepFails("element #pay not found")).await;
    let t = wait_ticket(&w.owner, &r2, settled).await;
    assert_eq!(t["status"], "filed", "{t}");
    let created = tr.posts(issues);
    assert_eq!(created.len(), 1);
    let c = &created[0];
    assert_eq!(c.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(c.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(c.json()["labels"], json!(["flowguard", "e2e"]));
    assert!(c.json()["title"].as_str().unwrap().contains("checkout"));
    let n = t["key"]
        .as_str()
        .unwrap()
        .trim_start_matches('#')
        .to_string();
    // The same failure again: a comment on the open ticket, no second ticket …
    let r3 = run_once(&w, End::StepFails("element #pay not found")).await;
    let t3 = wait_ticket(&w.owner, &r3, settled).await;
    assert_eq!(t3["kind"], "comment", "{t3}");
    assert_eq!(t3["status"], "filed");
    assert_eq!(t3["key"], t["key"]);
    let comments = format!("/gh/api/v3/repos/acme/shop/issues/{n}/comments");
    assert_eq!(tr.posts(&comments).len(), 1);
    // … and within the hour nothing more.
    let r4 = run_once(&w, End::StepFails("element #pay not found")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = w
        .owner
        .json(Method::GET, &format!("/api/v1/runs/{r4}"), None, 200)
        .await;
    assert!(v["ticket"].is_null(), "{v}");
    assert_eq!(tr.posts(&comments).len(), 1);
    assert_eq!(tr.posts(issues).len(), 1);
    // A different failure (another error class) is another signature: a new ticket once the
    // threshold is met (the streak counts the flow's failures).
    let r5 = run_once(&w, End::StepFails("HTTP 500 from /api/pay")).await;
    let t5 = wait_ticket(&w.owner, &r5, settled).await;
    assert_eq!(t5["kind"], "create", "{t5}");
    assert_ne!(t5["key"], t["key"]);
    assert_eq!(tr.posts(issues).len(), 2);
    // A pass comments the recovery on both open tickets.
    let p = run_once(&w, End::Pass).await;
    let tp = wait_ticket(&w.owner, &p, settled).await;
    assert_eq!(tp["kind"], "recovery", "{tp}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tr
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/comments"))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "recovery comments missing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(tr.posts(&comments).last().unwrap().json()["body"]
        .as_str()
        .unwrap()
        .starts_with("Recovered"));
    // After the recovery the next failure starts a new streak: one failure is not enough.
    let r6 = run_once(&w, End::StepFails("element #pay not found")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = w
        .owner
        .json(Method::GET, &format!("/api/v1/runs/{r6}"), None, 200)
        .await;
    assert!(v["ticket"].is_null(), "{v}");
    assert_no_secrets(&tr);
    let audit = audit_actions(&w.owner).await;
    assert!(audit.iter().any(|a| a["action"] == "ticket.commented"));
}

#[tokio::test]
async fn gitlab_and_azure_devops_requests_follow_their_apis() {
    let tr = start_tracker();
    let app = spawn_with(Opts {
        config: Some(config(tr.addr.port())),
        ..Default::default()
    })
    .await;
    let w = world(&app).await;
    let path = format!("/api/v1/applications/{}/integration", w.app_id);
    // A tester files manually; GitLab by url-encoded project path.
    w.owner
        .json(Method::POST, "/api/v1/members",
            Some(json!({"email": "tester@example.com", "role": "tester", "password": "member-password-123"})), 201)
        .await;
    let tester = app
        .login(
            Some(&app.tenant_id()),
            "tester@example.com",
            "member-password-123",
        )
        .await;
    let gl = integration("gitlab", tr.url("/gl"), "grp/shop", &tr.ca_pem, json!({}));
    w.owner.json(Method::PUT, &path, Some(gl), 200).await;
    let t = w
        .owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(t["ok"], true, "{t}");
    let rid = run_once(&w, End::StepFails("assertion failed")).await;
    // file_on_failure is off: nothing automatic.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(tr.posts("/issues").is_empty());
    let r = tester
        .req(Method::POST, &format!("/api/v1/runs/{rid}/ticket"), None)
        .await;
    assert_eq!(r.status(), 202);
    let t = wait_ticket(&w.owner, &rid, settled).await;
    assert_eq!(t["status"], "filed", "{t}");
    assert!(t["key"].as_str().unwrap().starts_with('#'), "{t}");
    assert!(
        t["url"]
            .as_str()
            .unwrap()
            .contains("/gl/grp/shop/-/issues/"),
        "{t}"
    );
    let up = tr.posts("/gl/api/v4/projects/grp%2Fshop/uploads");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].header("private-token"), Some(TOKEN));
    let issue = &tr.posts("/gl/api/v4/projects/grp%2Fshop/issues")[0];
    assert_eq!(issue.json()["labels"], "flowguard,e2e");
    assert!(issue.json()["description"]
        .as_str()
        .unwrap()
        .contains("![shot](/uploads/abc123/shot.png)"));
    // Filing the same run again returns the same ticket.
    let again: Value = tester
        .req(Method::POST, &format!("/api/v1/runs/{rid}/ticket"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["key"], t["key"]);
    assert_eq!(tr.posts("/gl/api/v4/projects/grp%2Fshop/issues").len(), 1);
    // A passed run cannot be ticketed.
    let ok = run_once(&w, End::Pass).await;
    let r = tester
        .req(Method::POST, &format!("/api/v1/runs/{ok}/ticket"), None)
        .await;
    assert_eq!(r.status(), 409);

    // Azure DevOps Server: collection and project names with spaces; JSON Patch; attachment.
    let ado = integration(
        "azure-devops",
        tr.url("/ado/Default Collection"),
        "My Project",
        &tr.ca_pem,
        json!({"file_on_failure": true}),
    );
    let mut ado = ado;
    ado["fields"] = json!({"System.AreaPath": "My Project\\Web", "System.IterationPath": "My Project\\Sprint 7"});
    w.owner.json(Method::PUT, &path, Some(ado), 200).await;
    let t = w
        .owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(t["ok"], true, "{t}");
    let rid = run_once(&w, End::StepFails("button disabled")).await;
    let t = wait_ticket(&w.owner, &rid, settled).await;
    assert_eq!(t["status"], "filed", "{t}");
    assert!(
        t["url"].as_str().unwrap().contains("/_workitems/edit/"),
        "{t}"
    );
    let att = tr.posts("/ado/Default%20Collection/My%20Project/_apis/wit/attachments");
    assert_eq!(att.len(), 1);
    assert!(att[0].query.contains("api-version=7.0"));
    assert!(att[0].body.starts_with(b"\x89PNG"));
    assert_eq!(
        att[0].header("authorization"),
        Some(format!("Basic {}", b64(&format!(":{TOKEN}"))).as_str())
    );
    let wi = tr.posts("/ado/Default%20Collection/My%20Project/_apis/wit/workitems/$Bug");
    assert_eq!(wi.len(), 1);
    assert_eq!(wi[0].query, "api-version=7.0");
    assert_eq!(
        wi[0].header("content-type"),
        Some("application/json-patch+json")
    );
    let ops = wi[0].json();
    let op = |p: &str| {
        ops.as_array()
            .unwrap()
            .iter()
            .find(|o| o["path"] == p)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(op("/fields/System.Title")["op"], "add");
    assert!(op("/fields/Microsoft.VSTS.TCM.ReproSteps")["value"]
        .as_str()
        .unwrap()
        .contains("button disabled"));
    assert_eq!(op("/fields/System.AreaPath")["value"], "My Project\\Web");
    assert_eq!(
        op("/fields/System.IterationPath")["value"],
        "My Project\\Sprint 7"
    );
    assert_eq!(op("/fields/System.Tags")["value"], "flowguard; e2e");
    let rel = &op("/relations/-")["value"];
    assert_eq!(rel["rel"], "AttachedFile");
    assert!(rel["url"]
        .as_str()
        .unwrap()
        .ends_with("/_apis/wit/attachments/att-1"));
    assert_no_secrets(&tr);
}

#[tokio::test]
async fn failures_retry_with_backoff_across_a_restart_and_a_401_stops_and_notifies() {
    let tr = start_tracker();
    let app = spawn_with(Opts {
        config: Some(config(tr.addr.port())),
        ..Default::default()
    })
    .await;
    let w = world(&app).await;
    let path = format!("/api/v1/applications/{}/integration", w.app_id);
    let mut body = integration(
        "jira",
        tr.url("/jira"),
        "ED",
        &tr.ca_pem,
        json!({"file_on_failure": true}),
    );
    body["auth"]["email"] = json!("qa@corp.example");
    body["token_expires_at"] = json!((chrono::Utc::now() + chrono::Duration::days(5)).to_rfc3339());
    w.owner
        .json(Method::PUT, &path, Some(body.clone()), 200)
        .await;
    // The token expires within 14 days: Owners are warned.
    let n = w
        .owner
        .json(Method::GET, "/api/v1/notifications", None, 200)
        .await;
    assert!(
        n["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "integration_token_expiring"),
        "{n}"
    );
    // 503 with Retry-After, then the server goes away before the retry.
    tr.script(Scripted::Status(503, Some(2)));
    let rid = run_once(&w, End::StepFails("net::ERR_CONNECTION_RESET")).await;
    let t = wait_ticket(&w.owner, &rid, |t| t["attempts"].as_i64().unwrap_or(0) >= 1).await;
    assert_eq!(t["status"], "pending", "{t}");
    assert!(t["error"].as_str().unwrap().contains("HTTP 503"), "{t}");
    let basic = format!("Basic {}", b64(&format!("qa@corp.example:{TOKEN}")));
    assert_eq!(
        tr.posts("/jira/rest/api/2/issue")[0].header("authorization"),
        Some(basic.as_str())
    );
    let TestApp { dir, child, .. } = app;
    drop(child);
    // While down: one 429 with Retry-After waits for the next attempt.
    tr.script(Scripted::Status(429, Some(1)));
    let app = spawn_with(Opts {
        config: Some(config(tr.addr.port())),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let owner = app.owner().await;
    let t = wait_ticket(&owner, &rid, settled).await;
    assert_eq!(t["status"], "filed", "{t}");
    assert_eq!(t["attempts"], 3, "{t}");
    assert_eq!(tr.posts("/jira/rest/api/2/issue").len(), 3);

    // An HTML login page, an empty 200 and a redirect are failures with a reason, never "filed".
    for (s, why) in [
        (Scripted::Html, "HTML"),
        (Scripted::Empty, "empty"),
        (Scripted::Redirect, "redirect"),
    ] {
        tr.script(s);
        let r = run_once(
            &World {
                owner: app.owner().await,
                agent: app.bearer(&w.agent.bearer.clone().unwrap()),
                app_id: w.app_id.clone(),
                flow_id: w.flow_id.clone(),
            },
            End::StepFails(match why {
                "HTML" => "first distinct",
                "empty" => "second distinct",
                _ => "third distinct",
            }),
        )
        .await;
        let t = wait_ticket(&owner, &r, settled).await;
        assert_eq!(t["status"], "failed", "{why}: {t}");
        assert!(t["key"].is_null());
        assert!(t["error"].as_str().unwrap().contains(why), "{why}: {t}");
    }
    // 401: no retry, the integration is marked, the Owner notified.
    tr.expire(true);
    let w2 = World {
        owner: app.owner().await,
        agent: app.bearer(&w.agent.bearer.clone().unwrap()),
        app_id: w.app_id.clone(),
        flow_id: w.flow_id.clone(),
    };
    let r = run_once(&w2, End::StepFails("yet another distinct failure")).await;
    let t = wait_ticket(&owner, &r, settled).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["attempts"], 1);
    assert!(t["error"].as_str().unwrap().contains("401"), "{t}");
    let n = owner
        .json(Method::GET, "/api/v1/notifications", None, 200)
        .await;
    assert!(
        n["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "integration_auth_failed"),
        "{n}"
    );
    assert!(owner.json(Method::GET, &path, None, 200).await["auth_failed_at"].is_string());
    let audit = audit_actions(&owner).await;
    assert!(audit.iter().any(|a| a["action"] == "ticket.failed"));
    // The test reports it as an authentication failure, and a new token clears the mark.
    let t = owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(t["ok"], false);
    assert_eq!(t["checks"][0]["ok"], true, "{t}");
    assert_eq!(t["checks"][1]["name"], "authentication");
    assert_eq!(t["checks"][1]["ok"], false, "{t}");
    tr.expire(false);
    owner.json(Method::PUT, &path, Some(body), 200).await;
    assert!(owner.json(Method::GET, &path, None, 200).await["auth_failed_at"].is_null());
    // Unknown project: the project check fails with the tracker's 404.
    let mut bad = integration("jira", tr.url("/jira"), "NOPE", &tr.ca_pem, json!({}));
    bad["auth"]["email"] = json!("qa@corp.example");
    owner.json(Method::PUT, &path, Some(bad), 200).await;
    let t = owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(t["checks"][2]["name"], "project");
    assert_eq!(t["checks"][2]["ok"], false);
    assert!(
        t["checks"][2]["detail"].as_str().unwrap().contains("404"),
        "{t}"
    );
    // A CA that did not issue the tracker's certificate: a TLS error, reported as such.
    let other = rcgen::generate_simple_self_signed(vec!["x".to_string()])
        .unwrap()
        .cert
        .pem();
    let wrong_ca = integration("jira", tr.url("/jira"), "ED", &other, json!({}));
    owner.json(Method::PUT, &path, Some(wrong_ca), 200).await;
    let t = owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(t["checks"][0]["ok"], false);
    assert!(
        t["checks"][0]["detail"].as_str().unwrap().contains("TLS"),
        "{t}"
    );
    assert!(!app.log_text().contains(TOKEN));
    assert_no_secrets(&tr);
}

/// Issue 24 item 9 for trackers: the tracker client is the shared TLS client. A tracker serving
/// a self-signed CA:TRUE certificate (as `openssl req -x509` makes it) works when that exact
/// certificate is pasted as `ca_pem` (pinning): checks pass and a failed run is filed. Another
/// pasted certificate is a TLS failure named by kind (`tls_failed [unknown_issuer]`), not
/// "cannot connect".
#[tokio::test]
async fn self_signed_tracker_certificate_is_pinned_and_tls_failures_are_named() {
    let tr = start_tracker_with(true);
    let app = spawn_with(Opts {
        config: Some(config(tr.addr.port())),
        ..Default::default()
    })
    .await;
    let w = world(&app).await;
    let path = format!("/api/v1/applications/{}/integration", w.app_id);
    let mut body = integration(
        "jira",
        tr.url("/jira"),
        "ED",
        &tr.ca_pem,
        json!({"file_on_failure": true, "after_consecutive_failures": 1}),
    );
    body["fields"] = json!({"customfield_10010": {"value": "QA"}});
    w.owner
        .json(Method::PUT, &path, Some(body.clone()), 200)
        .await;
    let t = w
        .owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(t["ok"], true, "{t}");
    let rid = run_once(&w, End::StepFails("Timeout 30000ms waiting for #pay")).await;
    let ticket = wait_ticket(&w.owner, &rid, settled).await;
    assert_eq!(ticket["status"], "filed", "{ticket}");
    assert_eq!(tr.posts("/jira/rest/api/2/issue").len(), 1);

    // Another self-signed certificate pasted: the handshake fails and says why.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .unwrap()
        .cert
        .pem();
    body["ca_pem"] = json!(other);
    w.owner.json(Method::PUT, &path, Some(body), 200).await;
    let t = w
        .owner
        .json(Method::POST, &format!("{path}/test"), None, 200)
        .await;
    assert_eq!(t["checks"][0]["name"], "reachability");
    assert_eq!(t["checks"][0]["ok"], false, "{t}");
    let detail = t["checks"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("tls_failed [unknown_issuer]"),
        "the TLS failure is named: {detail}"
    );
    assert!(!detail.contains("cannot connect"), "{detail}");
}
