//! Library-level benchmarks for issue 12 (driven by `bench/run`; also runnable by hand with
//! `cargo bench --bench hot_paths -- <mode> [--quick]`):
//!
//! - `ingest` — **P1 SQLCipher cost**: run-step ingest through the store layer
//!   (`store::flows::put_step`, one `BEGIN IMMEDIATE` transaction per step, WAL,
//!   `synchronous = NORMAL`, as the agent API does it) on a tenant-schema store opened with a key
//!   (production) and on the same schema opened without one (plain SQLite), through the same open
//!   code (`store::open_tenant_schema_for_bench`). Rounds alternate which store goes first;
//!   medians of steps/s and the ratio encrypted/plain (goal ≥ 0.90).
//! - `hash` — **P5**: one argon2id hash and one verification with the production parameters
//!   (`auth::password`), median of several.
//! - `populate --data-dir DIR --count N` — add N tenants to an initialised data dir through the
//!   library (`service::tenants::create_tenant` with one precomputed password hash), for the P7
//!   start-up measurement with 1 000 tenants. The server must not be running.
//!
//! Every mode prints a human table and one `BENCH_JSON {…}` line that `bench/run` parses. No
//! timing is asserted anywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use flowguard::audit::{Actor, NewAuditEvent};
use flowguard::config::{CliOverrides, Settings};
use flowguard::store::applications::{self, ApplicationRow};
use flowguard::store::flows::{self, NewVersion};
use flowguard::store::runs::{self, StepReportRow};
use rusqlite::Connection;
use serde_json::json;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn actor() -> Actor {
    Actor {
        email: Some("bench".into()),
        role: Some("operator".into()),
        client_ip: None,
        user_agent: None,
    }
}

/// One store under test: its connection and the application/flow the runs belong to.
struct IngestStore {
    conn: Connection,
    runs: u64,
}

fn prepare_store(
    path: &Path,
    key: Option<&flowguard::crypto::Key256>,
) -> anyhow::Result<IngestStore> {
    let mut conn = flowguard::store::open_tenant_schema_for_bench(path, key)?;
    // Experiment knob (not used by bench/run): FG_BENCH_CACHE_KIB=N sets `PRAGMA cache_size = -N`
    // on both stores, to see how much of the SQLCipher cost is page-cache misses.
    if let Some(kib) = std::env::var("FG_BENCH_CACHE_KIB")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        conn.execute_batch(&format!("PRAGMA cache_size = -{kib}"))?;
    }
    let actor = actor();
    let now = flowguard::domain::now_rfc3339();
    let app = ApplicationRow {
        id: "app-bench".into(),
        name: "bench".into(),
        base_url: "https://bench.example".into(),
        repo_url: None,
        created_at: now.clone(),
        updated_at: now,
    };
    applications::insert_application(
        &mut conn,
        &app,
        None,
        &NewAuditEvent::new(&actor, "application.create", None),
    )?;
    let steps = json!([{"type": "navigate", "url": "/"}]).to_string();
    flows::insert_flow(
        &mut conn,
        "flow-bench",
        "app-bench",
        &NewVersion {
            name: "bench",
            tags: "[]",
            source: "manual",
            steps: &steps,
            created_by: "bench",
        },
        &NewAuditEvent::new(&actor, "flow.create", None),
    )?;
    Ok(IngestStore { conn, runs: 0 })
}

/// Queue and claim `runs` runs (untimed), then time `steps` step reports per run.
fn ingest_round(s: &mut IngestStore, runs: u64, steps: i64) -> anyhow::Result<f64> {
    let mut ids = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let id = format!("run-{:08}", s.runs);
        s.runs += 1;
        runs::queue_run(&mut s.conn, &id, "flow-bench", "manual", "bench", None)?;
        runs::claim_run(&mut s.conn, "app-bench", "tok-bench", 0)?;
        ids.push(id);
    }
    let console = json!([
        {"level": "info", "text": "GET https://bench.example/ 200 in 83 ms"},
        {"level": "warning", "text": "Deprecation: synchronous XMLHttpRequest on the main thread"},
        {"level": "info", "text": "app booted; user=[REDACTED]; feature flags: a,b,c,d"}
    ]);
    let network = json!({"requests": 17, "failed": 0, "bytes": 482_133});
    let t0 = Instant::now();
    let mut n = 0u64;
    for id in &ids {
        for i in 0..steps {
            let row = StepReportRow {
                index: i,
                status: "passed".into(),
                duration_ms: Some(40 + i),
                error: None,
                console: Some(console.clone()),
                network: Some(network.clone()),
            };
            // The same store call the agent-report route makes (status decided like a
            // non-checkpoint step: as reported).
            runs::record_step_report(&mut s.conn, id, &row, &|r| {
                (r.reported_status.clone().unwrap_or_default(), None)
            })?;
            n += 1;
        }
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn ingest(quick: bool) -> anyhow::Result<()> {
    let (rounds, runs, steps) = if quick { (1, 10, 10) } else { (7, 400, 25) };
    let dir = tempfile::tempdir()?;
    let key = flowguard::crypto::random_key();
    let mut enc = prepare_store(&dir.path().join("encrypted.db"), Some(&key))?;
    let mut plain = prepare_store(&dir.path().join("plain.db"), None)?;
    // Warm-up round for both (page cache, statement cache), not recorded.
    ingest_round(&mut enc, 5, steps)?;
    ingest_round(&mut plain, 5, steps)?;
    let (mut e, mut p) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            e.push(ingest_round(&mut enc, runs, steps)?);
            p.push(ingest_round(&mut plain, runs, steps)?);
        } else {
            p.push(ingest_round(&mut plain, runs, steps)?);
            e.push(ingest_round(&mut enc, runs, steps)?);
        }
    }
    // Prove the anchor really is plain SQLite and the subject really is encrypted.
    let header = |p: PathBuf| -> anyhow::Result<bool> {
        let b = std::fs::read(p)?;
        Ok(b.starts_with(b"SQLite format 3\0"))
    };
    drop(enc);
    drop(plain);
    let enc_plain_header = header(dir.path().join("encrypted.db"))?;
    let plain_plain_header = header(dir.path().join("plain.db"))?;
    anyhow::ensure!(
        !enc_plain_header,
        "encrypted store has a plain SQLite header"
    );
    anyhow::ensure!(plain_plain_header, "anchor store is not plain SQLite");
    let (me, mp) = (median(&mut e.clone()), median(&mut p.clone()));
    println!("P1 step ingest through store::flows::put_step ({rounds} rounds × {runs} runs × {steps} steps, alternating)");
    println!("  SQLCipher (keyed)   {me:>10.0} steps/s   rounds {e:.0?}");
    println!("  plain SQLite        {mp:>10.0} steps/s   rounds {p:.0?}");
    println!("  ratio               {:>10.3}   (goal ≥ 0.90)", me / mp);
    println!(
        "BENCH_JSON {}",
        json!({"bench": "ingest", "rounds": rounds, "runs_per_round": runs, "steps_per_run": steps,
               "encrypted_steps_per_s": e, "plain_steps_per_s": p,
               "encrypted_median": me, "plain_median": mp, "ratio": me / mp})
    );
    Ok(())
}

fn hash(quick: bool) -> anyhow::Result<()> {
    use flowguard::auth::password;
    let n = if quick { 3 } else { 15 };
    let mut h = Vec::new();
    let mut v = Vec::new();
    let mut phc = String::new();
    // One untimed warm-up.
    let _ = password::hash_blocking("warm-up-password-123")?;
    for i in 0..n {
        let pw = format!("benchmark-password-{i:04}");
        let t0 = Instant::now();
        phc = password::hash_blocking(&pw)?;
        h.push(t0.elapsed().as_secs_f64() * 1000.0);
        let t0 = Instant::now();
        let ok = password::verify_blocking(&pw, &phc);
        v.push(t0.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(ok, "verification failed");
    }
    let (mh, mv) = (median(&mut h.clone()), median(&mut v.clone()));
    let params = phc.split('$').nth(3).unwrap_or("?").to_string();
    println!("P5 argon2id ({params}), {n} samples, one thread");
    println!("  hash     median {mh:>8.1} ms");
    println!("  verify   median {mv:>8.1} ms");
    println!(
        "BENCH_JSON {}",
        json!({"bench": "hash", "samples": n, "params": params, "hash_ms": h, "verify_ms": v,
               "hash_median_ms": mh, "verify_median_ms": mv})
    );
    Ok(())
}

fn populate(args: &[String]) -> anyhow::Result<()> {
    let data = arg_value(args, "--data-dir")
        .ok_or_else(|| anyhow::anyhow!("populate needs --data-dir DIR"))?;
    let count: usize = arg_value(args, "--count")
        .ok_or_else(|| anyhow::anyhow!("populate needs --count N"))?
        .parse()?;
    let settings = Settings::load(
        None,
        &CliOverrides {
            data_dir: Some(PathBuf::from(&data)),
            listen: None,
        },
    )?;
    let opened = flowguard::startup::open_data_dir(&settings, false)?;
    let state = flowguard::startup::build_state(Arc::new(settings), opened)?;
    let hash = flowguard::auth::password::hash_blocking("benchmark-owner-password")?;
    let t0 = Instant::now();
    for i in 0..count {
        flowguard::service::tenants::create_tenant(
            &state,
            &format!("bench_{i:05}"),
            &format!("owner{i}@bench.example"),
            &hash,
            false,
            None,
        )?;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("populate: {count} tenants in {secs:.1} s");
    println!(
        "BENCH_JSON {}",
        json!({"bench": "populate", "count": count, "secs": secs})
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; harness flags are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let modes: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["ingest", "hash", "populate"].contains(a))
        .collect();
    let modes = if modes.is_empty() {
        vec!["ingest", "hash"]
    } else {
        modes
    };
    for m in modes {
        match m {
            "ingest" => ingest(quick)?,
            "hash" => hash(quick)?,
            _ => populate(&args)?,
        }
    }
    Ok(())
}
