//! Test harness: start the real `flowguard` binary on 127.0.0.1:0 with a temp data dir, wait
//! for `<data>/listen.addr` and `/healthz`, and talk to it over real TLS (trusting the
//! generated certificate, with hostname verification on).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Path of the binary under test: `FG_TEST_BIN` when set (a private copy of the build, so
/// several worktrees sharing one target dir can test at once), else cargo's own binary.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FG_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_flowguard").to_string())
    })
}

/// A running appliance.
pub struct TestApp {
    pub dir: TempDir,
    pub data: PathBuf,
    pub addr: SocketAddr,
    pub base: String,
    pub child: ChildGuard,
    pub log: PathBuf,
    pub creds: HashMap<String, String>,
    pub cert: Vec<u8>,
}

/// Kills the server process when dropped (also when a `TestApp` is destructured to keep its dir).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Options for [`spawn_with`].
#[derive(Default)]
pub struct Opts {
    /// TOML config text (written to `<tmp>/flowguard.toml`).
    pub config: Option<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Reuse an existing temp dir (with `data/` inside).
    pub dir: Option<TempDir>,
    /// Run the binary under this command prefix (e.g. `strace -f -o FILE --`).
    pub wrap: Vec<String>,
    /// Another `flowguard` binary to start instead of [`bin`] (an older release, for the
    /// upgrade fixture).
    pub bin: Option<String>,
}

/// Run the binary to completion with args (for CLI tests).
pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env_remove("FLOWGUARD_CONFIG")
        .output()
        .expect("run flowguard")
}

/// Start a server on a fresh data dir.
pub async fn spawn_app() -> TestApp {
    spawn_with(Opts::default()).await
}

/// Start a server with options; panics with the server log if it does not come up.
pub async fn spawn_with(opts: Opts) -> TestApp {
    match try_spawn(opts).await {
        Ok(app) => app,
        Err(e) => panic!("server did not start: {}\n--- log ---\n{}", e.msg, e.log),
    }
}

/// A server that did not come up: why, its log, and the temp dir (kept for inspection).
pub struct SpawnError {
    pub msg: String,
    pub log: String,
    pub dir: TempDir,
}

/// Start a server; on failure return the message, the log and the dir.
pub async fn try_spawn(opts: Opts) -> Result<TestApp, SpawnError> {
    let dir = opts
        .dir
        .unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
    let data = dir.path().join("data");
    let log = dir
        .path()
        .join(format!("server-{}.log", std::process::id()));
    let logf = std::fs::File::create(&log).expect("log file");
    let program = opts.bin.as_deref().unwrap_or(bin());
    let mut cmd = match opts.wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&data);
    if let Some(cfg) = &opts.config {
        let p = dir.path().join("flowguard.toml");
        std::fs::write(&p, cfg).expect("write config");
        cmd.arg("--config").arg(&p);
    }
    // The embedded runner would claim the runs other tests hand to an external agent; tests
    // that exercise it opt in with `FLOWGUARD_RUNNER__EMBEDDED_WORKERS`.
    cmd.env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "info");
    // (A release from before the runner would refuse the unknown `runner` key.)
    if opts.bin.is_none() {
        cmd.env("FLOWGUARD_RUNNER__EMBEDDED_WORKERS", "0");
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::from(logf.try_clone().expect("clone")))
        .stderr(Stdio::from(logf))
        .stdin(Stdio::null());
    let _ = std::fs::remove_file(data.join("listen.addr"));
    let mut child = cmd.spawn().expect("spawn flowguard");
    let addr_file = data.join("listen.addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: SocketAddr = loop {
        if let Ok(s) = std::fs::read_to_string(&addr_file) {
            if let Ok(a) = s.trim().parse() {
                break a;
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(SpawnError {
                msg: format!("exited with {st}"),
                log: std::fs::read_to_string(&log).unwrap_or_default(),
                dir,
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(SpawnError {
                msg: "timeout waiting for listen.addr".into(),
                log: std::fs::read_to_string(&log).unwrap_or_default(),
                dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let tls_off = opts
        .config
        .as_deref()
        .is_some_and(|c| c.contains("mode = \"off\""));
    let cert = if tls_off {
        Vec::new()
    } else {
        std::fs::read(data.join("tls/cert.pem")).unwrap_or_default()
    };
    let base = format!("{}://{}", if tls_off { "http" } else { "https" }, addr);
    let creds = std::fs::read_to_string(data.join("initial-credentials"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once(" = ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let app = TestApp {
        dir,
        data,
        addr,
        base,
        child: ChildGuard(child),
        log,
        creds,
        cert,
    };
    // Readiness: poll /healthz.
    let c = app.client();
    loop {
        if let Ok(r) = c.get(app.url("/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            let log = app.log_text();
            let TestApp { dir, .. } = app;
            return Err(SpawnError {
                msg: "healthz never answered".into(),
                log,
                dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(app)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn tenant_id(&self) -> String {
        self.creds["tenant_id"].clone()
    }

    pub fn owner_password(&self) -> String {
        self.creds["owner_password"].clone()
    }

    /// A client trusting the server's certificate, with a cookie store.
    pub fn client(&self) -> Client {
        self.client_from(None)
    }

    /// A client bound to a local source address (e.g. 127.0.0.2).
    pub fn client_from(&self, local: Option<IpAddr>) -> Client {
        let mut b = Client::builder()
            .cookie_store(true)
            .user_agent("flowguard-tests/1.0")
            .timeout(Duration::from_secs(60))
            .local_address(local);
        if !self.cert.is_empty() {
            b = b
                .add_root_certificate(reqwest::Certificate::from_pem(&self.cert).expect("cert"))
                .tls_built_in_root_certs(false);
        }
        b.build().expect("client")
    }

    /// Log in and return a session that may use the API. An account still on a one-time
    /// password (which the API refuses everything but `/me`, `/me/password` and logout, issue 24)
    /// has the one-time flag cleared first by changing the password away and back to the same
    /// value, so the password a test holds stays valid. Tests about the one-time state use
    /// [`TestApp::login_one_time`].
    pub async fn login(&self, tenant: Option<&str>, email: &str, password: &str) -> Session {
        let (s, must_change) = self.login_inner(tenant, email, password).await;
        if must_change {
            let interim = format!("{password}-interim-by-test-helper");
            for (current, new) in [(password, interim.as_str()), (interim.as_str(), password)] {
                s.json(
                    Method::POST,
                    "/api/v1/me/password",
                    Some(json!({"current_password": current, "new_password": new})),
                    204,
                )
                .await;
            }
        }
        s
    }

    /// Log in exactly as given, leaving a one-time password in place.
    pub async fn login_one_time(
        &self,
        tenant: Option<&str>,
        email: &str,
        password: &str,
    ) -> Session {
        self.login_inner(tenant, email, password).await.0
    }

    async fn login_inner(
        &self,
        tenant: Option<&str>,
        email: &str,
        password: &str,
    ) -> (Session, bool) {
        let client = self.client();
        let r = client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"tenant": tenant, "email": email, "password": password}))
            .send()
            .await
            .expect("login request");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "login of {email} failed: {}",
            r.text().await.unwrap_or_default()
        );
        let v: Value = r.json().await.expect("json");
        let session = Session {
            client,
            csrf: v["csrf_token"].as_str().expect("csrf").to_string(),
            base: self.base.clone(),
            bearer: None,
        };
        (session, v["me"]["must_change_password"] == true)
    }

    /// The bootstrap Owner's session.
    pub async fn owner(&self) -> Session {
        self.login(
            Some(&self.tenant_id()),
            "admin@localhost",
            &self.owner_password(),
        )
        .await
    }

    /// The bootstrap PlatformAdmin's session.
    pub async fn platform_admin(&self) -> Session {
        self.login(
            None,
            "platform-admin@localhost",
            &self.creds["platform_admin_password"].clone(),
        )
        .await
    }

    /// Anonymous client session.
    pub fn anonymous(&self) -> Session {
        Session {
            client: self.client(),
            csrf: String::new(),
            base: self.base.clone(),
            bearer: None,
        }
    }

    /// A bearer-token session.
    pub fn bearer(&self, token: &str) -> Session {
        Session {
            client: self.client(),
            csrf: String::new(),
            base: self.base.clone(),
            bearer: Some(token.to_string()),
        }
    }
}

/// A logged-in (or anonymous / bearer) client.
pub struct Session {
    pub client: Client,
    pub csrf: String,
    pub base: String,
    pub bearer: Option<String>,
}

impl Session {
    pub async fn req(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut b = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if !self.csrf.is_empty() {
            b = b.header("X-CSRF-Token", &self.csrf);
        }
        if let Some(t) = &self.bearer {
            b = b.bearer_auth(t);
        }
        if let Some(v) = body {
            b = b.json(&v);
        }
        b.send().await.expect("request")
    }
    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.req(Method::POST, path, Some(body)).await
    }
    /// Request and parse JSON, asserting the status.
    pub async fn json(&self, method: Method, path: &str, body: Option<Value>, want: u16) -> Value {
        let r = self.req(method.clone(), path, body).await;
        let st = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(st, want, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// Write a file readable only by the owner.
pub fn write_secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// Create a second tenant with the CLI against a (possibly running) data dir; returns (id, owner password).
pub fn create_tenant(app: &TestApp, name: &str, owner: &str) -> (String, String) {
    let out = run_cli(&[
        "tenant",
        "create",
        "--data-dir",
        app.data.to_str().expect("utf8"),
        "--name",
        name,
        "--owner-email",
        owner,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "tenant create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    (
        v["tenant_id"].as_str().expect("id").to_string(),
        v["owner_password"].as_str().expect("pw").to_string(),
    )
}
