//! Bounded storage (issue 19): a full data volume refuses writes with 507
//! `insufficient_storage`, keeps every acknowledged write and every read, and takes writes again
//! once space is freed, without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// A tmpfs mounted for the test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `mib` MiB, mode 0700, at `at`. The test needs root (CI runs as root);
    /// it fails, saying so, otherwise.
    fn mount(at: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "this test mounts a tmpfs as the data dir and needs root: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the volume of `dir` with `file` until the write fails with ENOSPC, then give back
/// `headroom` bytes.
fn fill(file: &Path, headroom: u64) {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the volume: {e}"),
        }
    }
    drop(f);
    let keep = written.saturating_sub(headroom);
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(keep)
        .unwrap();
}

fn steps(i: usize) -> Value {
    let long = "x".repeat(400);
    Value::Array(
        (0..40)
            .map(|j| json!({"type": "click", "selector": format!("#flow-{i}-step-{j}-{long}")}))
            .collect(),
    )
}

#[tokio::test]
async fn a_full_volume_refuses_writes_with_507_keeps_reads_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let _mnt = Tmpfs::mount(&tmp.path().join("data"), 24);
    let app = spawn_with(Opts {
        dir: Some(tmp),
        ..Default::default()
    })
    .await;
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
    let flows_url = format!("/api/v1/applications/{app_id}/flows");

    // Fill the volume, leaving ~1 MiB, then write until the volume is full.
    let filler = app.data.join("filler");
    fill(&filler, 1024 * 1024);
    let mut acked: Vec<String> = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let r = owner
            .req(
                Method::POST,
                &flows_url,
                Some(json!({"name": format!("f{i}"), "steps": steps(i)})),
            )
            .await;
        match r.status().as_u16() {
            201 => {
                let v: Value = r.json().await.unwrap();
                acked.push(v["id"].as_str().unwrap().to_string());
            }
            507 => {
                refused = Some(r.json::<Value>().await.unwrap());
                break;
            }
            s => panic!(
                "flow {i}: unexpected {s}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
    let p = refused.expect("the volume never filled up");
    assert_eq!(p["code"], "insufficient_storage", "{p}");
    assert_eq!(p["status"], 507, "{p}");
    assert!(
        !acked.is_empty(),
        "no write succeeded before the volume was full"
    );
    // Still full: further writes are refused the same way, reads keep working.
    let r = owner
        .req(
            Method::POST,
            &flows_url,
            Some(json!({"name": "again", "steps": steps(9999)})),
        )
        .await;
    assert_eq!(r.status(), 507);
    for id in &acked {
        owner
            .json(Method::GET, &format!("/api/v1/flows/{id}"), None, 200)
            .await;
    }
    let listed = owner.json(Method::GET, &flows_url, None, 200).await;
    assert_eq!(app.anonymous().get("/readyz").await.status(), 200);

    // Space freed: writes work again on the same process; nothing acknowledged was lost.
    std::fs::remove_file(&filler).unwrap();
    let f = owner
        .json(
            Method::POST,
            &flows_url,
            Some(json!({"name": "after", "steps": steps(10_000)})),
            201,
        )
        .await;
    for id in acked
        .iter()
        .chain([f["id"].as_str().unwrap().to_string()].iter())
    {
        owner
            .json(Method::GET, &format!("/api/v1/flows/{id}"), None, 200)
            .await;
    }
    let after = owner.json(Method::GET, &flows_url, None, 200).await;
    let count = |v: &Value| {
        v.as_array()
            .or_else(|| v["items"].as_array())
            .map(|a| a.len())
            .unwrap_or(0)
    };
    assert_eq!(count(&listed), acked.len(), "{listed}");
    assert_eq!(count(&after), acked.len() + 1, "{after}");
    assert!(
        app.log_text().contains("the data volume is full"),
        "{}",
        app.log_text()
    );
    // The audit chain of the tenant is intact after the refused writes.
    let o = run_cli(&[
        "audit",
        "verify",
        "--tenant",
        &app.tenant_id(),
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
