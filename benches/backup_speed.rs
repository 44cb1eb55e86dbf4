//! **Backup and restore throughput** (issue 19), driven by `bench/run`; also runnable by hand
//! with `cargo bench --bench backup_speed -- [--quick]`.
//!
//! A data dir (catalog + one tenant created by `service::tenants::create_tenant`) whose tenant
//! store is grown through the library (`support/tenant_gen.rs`: runs queued, claimed, 25 step
//! reports, completed, with their audit rows, so the chain verifies) to `FG_BENCH_BACKUP_MB`
//! (default 200; `--quick`: 4) MB of store. Then, on the same stores, one after the other:
//!
//! - **backup**: `service::backup::create_recorded`, the function `flowguard backup create`
//!   calls (SQLCipher `sqlcipher_export` snapshot of every store into a new file keyed with the
//!   store's key, `fsync`, integrity + HMAC checks of each copy, audit chain check, manifest);
//! - **restore**: `service::backup::restore_blocking`, the function `flowguard restore` calls
//!   (checks the master key and the manifest's signature, copies the files, then runs every check
//!   of `backup verify` once, on the restored files);
//! - **anchor**: `VACUUM INTO` of each of the same stores on a connection keyed like the backup's
//!   (`store::backup::open_source`), then `fsync`. On a keyed SQLCipher connection `VACUUM INTO`
//!   writes the copy encrypted with the same key (SQLCipher attaches the target with the main
//!   database's key); the bench checks that the copy does not start with the plain SQLite
//!   header and opens with the key (`store::backup::open_copy`), and fails otherwise.
//!
//! MB/s = bytes of the source stores (catalog + tenant, after a TRUNCATE checkpoint) / wall
//! seconds, the same numerator for all three, so the ratios are ratios of times. Goal (issue
//! 19): backup and restore each ≥ 0.5 of the `VACUUM INTO` rate. Prints a table and one
//! `BENCH_JSON {"bench": "backup", …}` line; no timing is asserted. Below the table, where the
//! time of backup and restore goes: the wall time of each `debug` span of `service::backup` and
//! `store::backup` (snapshot export, fsync, hashing, `cipher_integrity_check`, `integrity_check`,
//! row counts, audit chain, copy, …), collected by a `tracing` layer ([`PhaseLayer`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flowguard::config::{CliOverrides, Settings};
use flowguard::crypto::keyring::{self, KeyPurpose};
use flowguard::crypto::Key256;
use flowguard::store::backup as snap;
use serde_json::json;

#[path = "support/tenant_gen.rs"]
mod tenant_gen;

/// Bytes per run the library writes (P9: ~11.2 KB), to size the generation.
const BYTES_PER_RUN: u64 = 11_200;

/// Wall seconds and count per phase: the debug spans of `service::backup` / `store::backup`
/// (`backup.export.snapshot`, `check.integrity_check`, `restore.copy`, …), keyed by the span's
/// path (`restore.verify_restored > check.integrity_check`).
type PhaseTimes = Arc<Mutex<BTreeMap<String, (u32, f64)>>>;

/// A `tracing` layer summing the wall time of every closed span into [`PhaseTimes`].
struct PhaseLayer(PhaseTimes);

/// Extension stored on each span: its path and when it was created.
struct Started(String, Instant);

impl<S> tracing_subscriber::Layer<S> for PhaseLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let name = attrs.metadata().name();
        let path = match span.parent() {
            Some(p) => match p.extensions().get::<Started>() {
                Some(Started(pp, _)) => format!("{pp} > {name}"),
                None => name.to_string(),
            },
            None => name.to_string(),
        };
        span.extensions_mut().insert(Started(path, Instant::now()));
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        let Some(Started(path, t)) = ext.get::<Started>() else {
            return;
        };
        if let Ok(mut m) = self.0.lock() {
            let e = m.entry(path.clone()).or_default();
            e.0 += 1;
            e.1 += t.elapsed().as_secs_f64();
        }
    }
}

/// Take the phase times collected so far (and start again from empty).
fn take_phases(p: &PhaseTimes) -> BTreeMap<String, (u32, f64)> {
    p.lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default()
}

fn print_phases(title: &str, total_s: f64, phases: &BTreeMap<String, (u32, f64)>) {
    println!();
    println!("{title}: where the {total_s:.2} s go (debug spans; nested spans are inside their parent's time)");
    println!("| phase | count | s | share of total |");
    println!("|---|---|---|---|");
    for (k, (n, s)) in phases {
        println!("| {k} | {n} | {s:.3} | {:.0} % |", 100.0 * s / total_s);
    }
}

fn settings_for(data: &Path) -> anyhow::Result<Settings> {
    Ok(Settings::load(
        None,
        &CliOverrides {
            data_dir: Some(data.to_path_buf()),
            listen: None,
        },
    )?)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let mb: u64 = if quick {
        4
    } else {
        std::env::var("FG_BENCH_BACKUP_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
    };
    let runs = (mb * 1_000_000 / BYTES_PER_RUN).max(1);
    let dir = tempfile::tempdir_in(
        std::env::var_os("FG_BENCH_TMP").unwrap_or_else(|| "/var/tmp".into()),
    )?;
    let data = dir.path().join("data");
    let settings = settings_for(&data)?;
    let phases: PhaseTimes = Arc::default();
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("flowguard::service::backup", tracing::Level::DEBUG)
            .with_target("flowguard::store::backup", tracing::Level::DEBUG);
        let subscriber =
            tracing_subscriber::registry().with(PhaseLayer(phases.clone()).with_filter(filter));
        tracing::subscriber::set_global_default(subscriber)?;
    }

    // --- generation -------------------------------------------------------------------------
    let t0 = Instant::now();
    let (tenant_path, tenant_key) = {
        let opened = flowguard::startup::open_data_dir(&settings, true)?;
        let state = flowguard::startup::build_state(Arc::new(settings.clone()), opened)?;
        let hash = flowguard::auth::password::hash_blocking("benchmark-owner-password")?;
        let id = flowguard::service::tenants::create_tenant(
            &state,
            "bench_backup",
            "owner@bench.example",
            &hash,
            false,
            None,
        )?;
        {
            let db = state.tenants.get_blocking(&id)?;
            let mut c = db.lock();
            tenant_gen::generation_pragmas(&c)?;
            tenant_gen::seed(&mut c)?;
            tenant_gen::add_runs(&mut c, 0, runs)?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        let key = {
            let c = state.catalog.db().lock();
            let keys = flowguard::store::catalog::usable_keys(&c, &id, KeyPurpose::Db)?;
            let (v, w) = keys
                .first()
                .ok_or_else(|| anyhow::anyhow!("no database key for the tenant"))?;
            keyring::unwrap(&state.master, &id, *v, KeyPurpose::Db, w)
                .map_err(|e| anyhow::anyhow!("unwrap: {e}"))?
        };
        (state.tenants.path_of(&id), key)
    };
    let gen_s = t0.elapsed().as_secs_f64();

    // The CLI's view of the data dir: opened without the server (as `flowguard backup create`).
    let opened = flowguard::startup::open_data_dir(&settings, false)?;
    let catalog_path = flowguard::store::catalog::Catalog::path_in(&data);
    let catalog_key = opened.master.catalog_db_key();
    let stores: Vec<(PathBuf, Key256)> =
        vec![(catalog_path, catalog_key), (tenant_path, tenant_key)];
    let store_bytes: u64 = stores.iter().map(|(p, _)| file_len(p)).sum();
    let mbs = |secs: f64| store_bytes as f64 / 1e6 / secs;

    // --- (a) backup -------------------------------------------------------------------------
    let to = dir.path().join("backups");
    take_phases(&phases);
    let t1 = Instant::now();
    let summary = flowguard::service::backup::create_recorded(
        &settings,
        &opened.master,
        &opened.catalog,
        None,
        &to,
        None,
        &tenant_gen::actor(),
        &|_| {},
    )?;
    let backup_s = t1.elapsed().as_secs_f64();
    let backup_phases = take_phases(&phases);

    // --- (b) restore ------------------------------------------------------------------------
    let restored = dir.path().join("restored");
    let rsettings = settings_for(&restored)?;
    let target = flowguard::service::backup::RestoreTarget {
        data_dir: &restored,
        license_file: rsettings.license_path(),
        master_key_dest: None,
    };
    let t2 = Instant::now();
    flowguard::service::backup::restore_blocking(&summary.dir, &target, &opened.master)?;
    let restore_s = t2.elapsed().as_secs_f64();
    let restore_phases = take_phases(&phases);

    // --- (c) anchor: VACUUM INTO of the same stores with the same keys -----------------------
    let vdir = dir.path().join("vacuum");
    std::fs::create_dir(&vdir)?;
    let t3 = Instant::now();
    let mut outs = Vec::new();
    for (i, (p, k)) in stores.iter().enumerate() {
        let out = vdir.join(format!("store{i}.db"));
        let c = snap::open_source(p, k, 5000)?;
        let q = out
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
        c.execute("VACUUM INTO ?1", [q])?;
        std::fs::File::open(&out)?.sync_all()?;
        outs.push(out);
    }
    let vacuum_s = t3.elapsed().as_secs_f64();
    // The anchor's copies must be encrypted with the store's key, as the backup's are.
    for (out, (_, k)) in outs.iter().zip(&stores) {
        let head = std::fs::read(out)?;
        if head.starts_with(b"SQLite format 3\0") {
            anyhow::bail!("{}: VACUUM INTO wrote a plaintext copy", out.display());
        }
        let c = snap::open_copy(out, k)?;
        snap::table_counts(&c)?;
    }
    let vacuum_bytes: u64 = outs.iter().map(|p| file_len(p)).sum();

    let (b, r, v) = (mbs(backup_s), mbs(restore_s), mbs(vacuum_s));
    println!(
        "Backup and restore vs VACUUM INTO (issue 19): catalog + 1 tenant store, {runs} runs, {:.1} MB of stores (generated in {gen_s:.0} s); MB/s = store MB / wall s",
        store_bytes as f64 / 1e6
    );
    println!("| path | s | MB/s | ratio to VACUUM INTO | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| backup create (create_recorded: export + fsync + checks + manifest) | {backup_s:.2} | {b:.1} | {:.2} | ≥ 0.5 |",
        b / v
    );
    println!(
        "| restore (restore_blocking: key + signature, copy, verify restored) | {restore_s:.2} | {r:.1} | {:.2} | ≥ 0.5 |",
        r / v
    );
    println!(
        "| VACUUM INTO, same stores, same keys (encrypted copy) + fsync | {vacuum_s:.2} | {v:.1} | 1.00 | anchor |"
    );
    print_phases("backup create", backup_s, &backup_phases);
    print_phases("restore", restore_s, &restore_phases);
    let phase_json = |m: &BTreeMap<String, (u32, f64)>| {
        m.iter()
            .map(|(k, (_, s))| (k.clone(), json!(s)))
            .collect::<serde_json::Map<_, _>>()
    };
    println!(
        "BENCH_JSON {}",
        json!({"bench": "backup", "quick": quick, "runs": runs, "store_bytes": store_bytes,
               "backup_bytes": summary.bytes, "vacuum_bytes": vacuum_bytes, "gen_s": gen_s,
               "backup_s": backup_s, "restore_s": restore_s, "vacuum_s": vacuum_s,
               "backup_mb_s": b, "restore_mb_s": r, "vacuum_mb_s": v,
               "backup_ratio": b / v, "restore_ratio": r / v, "goal": 0.5,
               "backup_phases_s": phase_json(&backup_phases),
               "restore_phases_s": phase_json(&restore_phases)})
    );
    Ok(())
}
