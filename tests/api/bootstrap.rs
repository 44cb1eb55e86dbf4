//! First start on an empty data dir, `flowguard init`, `--version`, config errors.

use std::os::unix::fs::PermissionsExt;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn first_start_bootstraps_and_login_works() {
    let app = spawn_app().await;
    let d = &app.data;
    assert_eq!(mode(&d.join("keys/master.key")), 0o600);
    assert_eq!(mode(&d.join("keys")), 0o700);
    assert_eq!(mode(&d.join("initial-credentials")), 0o600);
    assert_eq!(mode(&d.join("tls/key.pem")), 0o600);
    assert!(d.join("catalog.db").is_file());
    let tid = app.tenant_id();
    assert!(tid.starts_with("local-"), "{tid}");
    assert!(d.join(format!("tenants/{tid}.db")).is_file());
    let log = app.log_text();
    assert!(
        log.contains("initial-credentials"),
        "log must say where the credentials are"
    );
    assert!(
        log.contains("sha256_fingerprint"),
        "log must carry the certificate fingerprint"
    );
    // Nothing in the data dir is readable by group or world, whatever the umask.
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.clone());
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut all = Vec::new();
    walk(d, &mut all);
    for p in all.iter().filter(|p| !p.ends_with("listen.addr")) {
        // SQLite's journal and temp files come and go while the server runs; one that
        // vanished between the listing and this check cannot be read by anybody.
        let m = match std::fs::symlink_metadata(p) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", p.display()),
        };
        assert_eq!(m & 0o077, 0, "{} is mode {m:o}", p.display());
    }
    let addr = std::fs::read_to_string(d.join("listen.addr")).unwrap();
    assert_eq!(addr.trim(), app.addr.to_string());

    // Owner login by tenant id and by name; /me; one-time password flagged.
    let owner = app
        .login_one_time(Some(&tid), "admin@localhost", &app.owner_password())
        .await;
    let me = owner.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(me["role"], "owner");
    assert_eq!(me["name"], "admin@localhost");
    assert_eq!(me["must_change_password"], true);
    app.login_one_time(Some("default"), "ADMIN@localhost", &app.owner_password())
        .await;

    // Password change: old password stops working, new one works, flag cleared.
    owner
        .json(Method::POST, "/api/v1/me/password", Some(json!({"current_password": app.owner_password(), "new_password": "a-brand-new-passphrase"})), 204)
        .await;
    let r = app
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"tenant": tid, "email": "admin@localhost", "password": app.owner_password()}),
        )
        .await;
    assert_eq!(r.status(), 401);
    let s2 = app
        .login(Some(&tid), "admin@localhost", "a-brand-new-passphrase")
        .await;
    let me = s2.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(me["must_change_password"], false);

    // PlatformAdmin logs in to the catalog (no tenant) and sees tenants, not tenant data.
    let pa = app.platform_admin().await;
    let me = pa.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(me["role"], "platform_admin");
    assert!(me["tenant_id"].is_null());
    let t = pa
        .json(Method::GET, "/api/v1/platform/tenants", None, 200)
        .await;
    assert_eq!(t["items"][0]["id"], tid);
    assert_eq!(pa.get("/api/v1/applications").await.status(), 403);

    // Session cookie attributes.
    let r = app
        .client()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"tenant": tid, "email": "admin@localhost", "password": "a-brand-new-passphrase"}))
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
    }
    assert!(
        cookie.starts_with(&format!("fg_session=fgu_{tid}_")),
        "{cookie}"
    );
}

#[tokio::test]
async fn restart_keeps_data_and_does_not_rebootstrap() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "keep", "base_url": "https://k.example"})),
            201,
        )
        .await;
    let tid = app.tenant_id();
    let pw = app.owner_password();
    let TestApp { dir, child, .. } = app;
    drop(child); // stop the server, keep the dir
    let app2 = spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    let s = app2.login(Some(&tid), "admin@localhost", &pw).await;
    let list = s.json(Method::GET, "/api/v1/applications", None, 200).await;
    assert_eq!(list["items"][0]["name"], "keep");
    let out = run_cli(&[
        "tenant",
        "list",
        "--json",
        "--data-dir",
        app2.data.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        1,
        "restart must not create another tenant"
    );
}

#[test]
fn init_is_non_interactive_and_refuses_reinit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let pwf = write_secret_file(dir.path(), "pw", "init-owner-password-1\n");
    let out = run_cli(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--tenant-name",
        "acme",
        "--owner-email",
        "o@acme.example",
        "--owner-password-file",
        pwf.to_str().unwrap(),
        "--platform-admin-email",
        "ops@acme.example",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["tenant_id"].as_str().unwrap().starts_with("local-"));
    assert!(
        v.get("owner_password").is_none(),
        "given password must not be echoed"
    );
    assert_eq!(v["platform_admin_password"].as_str().unwrap().len(), 24);
    let again = run_cli(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--tenant-name",
        "x",
        "--owner-email",
        "o@x.example",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to re-initialise"));
    // Plain output: just the tenant id on stdout.
    let data2 = dir.path().join("d2");
    let out = run_cli(&[
        "init",
        "--data-dir",
        data2.to_str().unwrap(),
        "--tenant-name",
        "b",
        "--owner-email",
        "o@b.example",
    ]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.trim().starts_with("local-") && s.trim().lines().count() == 1,
        "{s}"
    );
}

#[tokio::test]
async fn init_then_serve_logs_in_with_given_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pwf = write_secret_file(dir.path(), "pw", "init-owner-password-1");
    let out = run_cli(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--tenant-name",
        "acme",
        "--owner-email",
        "o@acme.example",
        "--owner-password-file",
        pwf.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let tid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let app = spawn_with(Opts {
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    assert!(
        !app.data.join("initial-credentials").exists(),
        "an initialised dir is not bootstrapped again"
    );
    let s = app
        .login(Some("acme"), "o@acme.example", "init-owner-password-1")
        .await;
    let me = s.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(me["tenant_id"], tid);
    assert_eq!(me["must_change_password"], false);
}

#[test]
fn version_flag() {
    let out = run_cli(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "region = \"eus\"\n[tls]\nmodee = \"on\"\n").unwrap();
    let out = run_cli(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("modee"), "{err}");
    assert!(
        !dir.path().join("d").exists(),
        "nothing is created on a config error"
    );
    // The same through the environment.
    let out = std::process::Command::new(bin())
        .args([
            "serve",
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
        ])
        .env("FLOWGUARD_BOGUS_SETTING", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .to_lowercase()
        .contains("bogus_setting"));
}

#[tokio::test]
async fn region_from_config_shapes_tenant_ids() {
    let app = spawn_with(Opts {
        config: Some("region = \"eus\"\n".into()),
        ..Default::default()
    })
    .await;
    assert!(app.tenant_id().starts_with("eus-"), "{}", app.tenant_id());
    let v = app
        .anonymous()
        .json(Method::GET, "/api/v1/version", None, 200)
        .await;
    assert_eq!(v["region"], "eus");
}
