//! Key rotation benchmark (issue 4), run with `cargo bench --bench key_rotation`.
//!
//! Builds a real data dir with the library (one tenant, `FG_BENCH_SECRETS` secret variables,
//! default 100 000, plus plain filler rows until the tenant store holds `FG_BENCH_STORE_MIB`,
//! default 256 MiB), then runs one real rotation (`service::keys::rotate_tenant_blocking`) and
//! times its phases from the progress callback:
//!
//! - **rewrap rate**: secrets re-sealed per second (goal ≥ 50 000/s);
//! - **rekey throughput**: store MiB per second through `PRAGMA rekey` + WAL checkpoint + the
//!   two proving opens + the catalog update;
//! - **anchor**: `VACUUM INTO` of the same store (same size, same machine, same key) as the I/O
//!   reference, and the ratio rekey/anchor (goal ≥ 0.5).
//!
//! One measurement, printed as a table; no timing is asserted anywhere (performance targets live
//! here, never in tests).

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowguard::audit::{Actor, NewAuditEvent};
use flowguard::config::{CliOverrides, Settings};
use flowguard::crypto::envelope;
use flowguard::domain::TenantId;
use flowguard::service::keys::{self, Phase};
use flowguard::service::sealing;
use flowguard::store::applications::{self, ApplicationRow};
use flowguard::store::variables::{self, VariableRow};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; accept and ignore harness flags.
    let secrets = env_num("FG_BENCH_SECRETS", 100_000);
    let store_mib = env_num("FG_BENCH_STORE_MIB", 256);
    let dir = tempfile::tempdir()?;
    let settings = Settings::load(
        None,
        &CliOverrides {
            data_dir: Some(dir.path().join("data")),
            listen: None,
        },
    )?;
    let opened = flowguard::startup::open_data_dir(&settings, true)?;
    let state = flowguard::startup::build_state(Arc::new(settings), opened)?;
    let hash = flowguard::auth::password::hash_blocking("benchmark-owner-password")?;
    let t: TenantId = flowguard::service::tenants::create_tenant(
        &state,
        "bench",
        "o@bench.example",
        &hash,
        false,
        None,
    )?;
    let actor = Actor {
        email: Some("bench".into()),
        role: Some("operator".into()),
        client_ip: None,
        user_agent: None,
    };
    let ev = |a: &'static str| NewAuditEvent::new(&actor, a, None);
    let db = state.tenants.get_blocking(&t)?;
    let now = flowguard::domain::now_rfc3339();
    for (id, name) in [("app-secrets", "secrets"), ("app-filler", "filler")] {
        let row = ApplicationRow {
            id: id.into(),
            name: name.into(),
            base_url: "https://bench.example".into(),
            repo_url: None,
            created_at: now.clone(),
            updated_at: now.clone(),
        };
        applications::insert_application(&mut db.lock(), &row, None, &ev("application.create"))?;
    }

    eprintln!("setup: {secrets} secret variables …");
    let t0 = Instant::now();
    let (v, dek) = sealing::active_dek(&state, &t)?;
    for i in 0..secrets {
        let name = format!("s{i}");
        let aad = envelope::aad(&[t.as_str(), "variables", "app-secrets", &name]);
        let ct = envelope::seal(&dek, v, &aad, format!("secret-value-{i:08}").as_bytes())?;
        let row = VariableRow {
            name,
            secret: true,
            value: None,
            ciphertext: Some(ct),
            updated_at: now.clone(),
        };
        variables::put_variable(&mut db.lock(), "app-secrets", &row, &ev("variable.set"))?;
    }
    eprintln!(
        "setup: secrets in {:.1?}; filler to {store_mib} MiB …",
        t0.elapsed()
    );
    let path = state.tenants.path_of(&t);
    let size = |db: &flowguard::store::Db| -> anyhow::Result<u64> {
        db.lock()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(std::fs::metadata(&path)?.len())
    };
    let filler: String = (0..64 * 1024)
        .map(|i| char::from(b'a' + ((i * 7919 + i / 13) % 26) as u8))
        .collect();
    let mut k = 0u64;
    while size(&db)? < store_mib * 1024 * 1024 {
        for _ in 0..256 {
            let row = VariableRow {
                name: format!("f{k}"),
                secret: false,
                value: Some(format!("{k:016}{filler}")),
                ciphertext: None,
                updated_at: now.clone(),
            };
            variables::put_variable(&mut db.lock(), "app-filler", &row, &ev("variable.set"))?;
            k += 1;
        }
    }
    let store_bytes = size(&db)?;

    // Anchor: VACUUM INTO of the same store (benchmark-only SQL, outside the product).
    let copy = dir.path().join("vacuum-into.db");
    let t0 = Instant::now();
    db.lock()
        .execute("VACUUM INTO ?1", [copy.to_string_lossy().as_ref()])?;
    let vacuum = t0.elapsed();
    std::fs::remove_file(&copy)?;
    drop(db);

    // One real rotation, timed per phase.
    let marks: parking_lot::Mutex<Vec<(Phase, u64, u64, Instant)>> = Default::default();
    let t0 = Instant::now();
    let report = keys::rotate_tenant_blocking(&state, &t, &actor, &|p| {
        marks
            .lock()
            .push((p.phase, p.done, p.total, Instant::now()));
    })?;
    let total = t0.elapsed();
    let marks = marks.into_inner();
    let span = |phase: Phase| -> Duration {
        let ts: Vec<Instant> = marks.iter().filter(|m| m.0 == phase).map(|m| m.3).collect();
        match (ts.first(), ts.last()) {
            (Some(a), Some(b)) => *b - *a,
            _ => Duration::ZERO,
        }
    };
    let rewrap = span(Phase::Rewrap);
    let rekey = span(Phase::Rekey);
    let rate = report.secrets_resealed as f64 / rewrap.as_secs_f64();
    let rekey_mibs = mib(store_bytes) / rekey.as_secs_f64();
    let vacuum_mibs = mib(store_bytes) / vacuum.as_secs_f64();
    println!("key rotation benchmark (one run; release build expected)");
    println!("  secrets re-sealed       {:>12}", report.secrets_resealed);
    println!("  tenant store            {:>12.1} MiB", mib(store_bytes));
    println!(
        "  rewrap                  {:>12.3} s  → {:>10.0} secrets/s  (goal ≥ 50000)",
        rewrap.as_secs_f64(),
        rate
    );
    println!(
        "  rekey (PRAGMA rekey+…)  {:>12.3} s  → {:>10.1} MiB/s",
        rekey.as_secs_f64(),
        rekey_mibs
    );
    println!(
        "  VACUUM INTO (anchor)    {:>12.3} s  → {:>10.1} MiB/s",
        vacuum.as_secs_f64(),
        vacuum_mibs
    );
    println!(
        "  rekey / anchor          {:>12.2}     (goal ≥ 0.5)",
        rekey_mibs / vacuum_mibs
    );
    println!(
        "  whole rotation          {:>12.3} s  (v{} → v{})",
        total.as_secs_f64(),
        report.from_version,
        report.to_version
    );
    Ok(())
}
