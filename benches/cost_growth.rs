//! **P9 cost growth** (issue 25), driven by `bench/run`; also runnable by hand with
//! `cargo bench --bench cost_growth -- [growth] [tenants] [--quick]`.
//!
//! - `growth` — one tenant store (SQLCipher, opened by the production code through
//!   `store::open_tenant_schema_for_bench` with a key) grown to each size of `FG_BENCH_RUNS`
//!   (default `10000,100000,1000000` runs of 25 steps; `--quick`: `200,400`): the first
//!   `FG_BENCH_TEMPLATE_RUNS` (default 10000) through the library — each run queued, claimed, 25
//!   step reports, completed (1 in 10 failed), with the audit rows the services write — and the
//!   rest as older copies of those rows in one transaction per block (`copy_block`; ~3 ms per
//!   run through the library made 1M runs an hour). At every size, with the server's page cache
//!   for its busiest stores (sized from the store's file by
//!   [`flowguard::store::pool::busy_cache_plan`], at most `store.busy_page_cache_kib` = 256 MiB:
//!   the one store under load is the busiest;
//!   [`flowguard::store::pool::TenantStores::page_cache_pass_blocking`]) and
//!   `synchronous = NORMAL`, after `sync`, in steady state (`FG_BENCH_WARMUP`, default 2000,
//!   unrecorded warm-up samples on the connection) and just opened (20): p50/p99 (wall and
//!   thread-CPU; JSON also has the CPU max and total) over `FG_BENCH_SAMPLES` (default 200) of
//!   the run list (first page, `status = failed` page, a cursor page 90 % deep), run detail (the
//!   run, its steps and the pinned flow version, as `service::runs::get` reads them), claim and
//!   step report; the retention purge of the oldest 10 % of finished runs (one transaction as
//!   the retention job runs it; on a copy of the store, except at the largest size, which purges
//!   in place after its measurement) with duration and runs/s; store bytes per run.
//! - `tenants` — a data dir with each count of `FG_BENCH_TENANTS` (default `1,100,1000`) tenants
//!   created by `service::tenants::create_tenant`, each holding `FG_BENCH_TENANT_RUNS` (default
//!   10000) runs (tenant 0 grown through the library as above, the others copies of its store
//!   re-keyed to their own database key with `PRAGMA rekey`), then the same requests through
//!   `TenantStores` (the server's LRU, `store.max_open_tenants` = 64: opening an evicted store
//!   is part of the request) in two patterns — `random`: each sample's requests to a random
//!   tenant (most stores cold: what the number of tenants *in use* costs), `one busy`: every
//!   sample to one tenant, `FG_BENCH_BUSY_SAMPLES` (default 5000) after `FG_BENCH_WARMUP`
//!   unrecorded samples, while the others exist and a background thread
//!   walks every tenant's store as the server's jobs do (`service::runner::queued_per_app_blocking`
//!   every `FG_BENCH_PASS_EVERY_MS`, default 5000 — the runner's full scan every 10 s, agent
//!   time-outs every minute, a `/metrics` scrape every 15 s, all skipping stores found idle
//!   whose files did not change — and the `schedules` job 10 s after the start, then every
//!   minute, opening every store it has not found without schedules at the same file stamp;
//!   both run once, untimed, before the warm-up: the server's steady state after its first
//!   minute) (what the number of tenants *at rest* costs) — plus the embedded runner's claim
//!   (`service::runner::claim_next` of a run queued and hinted as the API does) and one full
//!   scan (every tenant's store, what every embedded claim cost before the hints), and the
//!   process RSS. `FG_BENCH_TENANTS_DIR=<dir>` keeps each generated data dir there and reuses
//!   it on the next run (the largest count only; the 1,000-tenant set-up takes ~20 min).
//!
//! `FG_BENCH_CACHE_KIB=N` measures `growth` with an N KiB page cache instead (2000: every
//! store's default, the page-cache lever of issue 25 off); `tenants` runs the server's
//! page-cache pass every 25 samples; `FG_BENCH_PRAGMAS` adds pragmas to the measured connections
//! (e.g. `PRAGMA wal_autocheckpoint = 0`); `FG_BENCH_CHECKPOINTER=1` measures `growth` with the
//! server's background checkpoints (issue 25 lever a; see `BackgroundCheckpoints`). Generation runs with `synchronous = OFF` and a 64 MiB page cache to save time; measurement
//! with the production pragmas. Prints a human table and one `BENCH_JSON {…}` line per mode.
//! No timing is asserted anywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use flowguard::config::{CliOverrides, Settings};
use flowguard::crypto::keyring::{self, KeyPurpose};
use flowguard::crypto::Key256;
use flowguard::store::flows;
use flowguard::store::runs;
use rusqlite::Connection;
use serde_json::{json, Value};

#[path = "support/tenant_gen.rs"]
mod tenant_gen;
use tenant_gen::*;

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs generated through the library before the rest of a size is copied
/// (`FG_BENCH_TEMPLATE_RUNS`, default 10000; see [`copy_block`]).
fn template_runs() -> u64 {
    env_list("FG_BENCH_TEMPLATE_RUNS", "10000")
        .first()
        .copied()
        .unwrap_or(10_000)
        .max(1)
}

/// Grow the store from `have` to `size` runs: through the library (queue, claim, 25 reports,
/// complete, audited; [`add_runs`]) up to [`template_runs`], beyond that by copying those runs
/// ([`copy_block`]) in one transaction per block.
fn grow_to(conn: &mut Connection, have: u64, size: u64) -> anyhow::Result<()> {
    let t = template_runs();
    let lib = size.min(t.max(have));
    let mut have = have;
    if have < lib {
        add_runs(conn, have, lib - have)?;
        have = lib;
    }
    while have < size {
        let n = (size - have).min(t);
        copy_block(conn, have, n, t)?;
        have += n;
    }
    Ok(())
}

/// Copy the first `n` library-generated runs (ids `0..n`) as runs `off..off + n`: every column
/// of their `runs`, `run_steps` and `audit` rows (the `run.trigger` / `run.complete` events),
/// each timestamp moved back by `off / t` times the span the template runs cover, so block
/// `j` is older history than block `j - 1` and lists, cursors and the purge see a store whose
/// rows, sizes and index shapes are those the library writes. One transaction per block (the
/// library path commits 28 times per run, ~3 ms/run: 1M runs took ~1 h). The copied audit rows
/// keep their originals' `prev_hash`/`hash`, so the copied part of the chain does not verify
/// (no P9 request reads it).
fn copy_block(conn: &mut Connection, off: u64, n: u64, t: u64) -> anyhow::Result<()> {
    let j = (off / t).max(1) as i64;
    let span_s: f64 = conn.query_row(
        "SELECT (julianday(max(coalesce(finished_at, queued_at))) - julianday(min(queued_at))) * 86400.0 + 1.0
           FROM runs WHERE id >= ?1 AND id < ?2",
        [run_id(0), run_id(t)],
        |r| r.get(0),
    )?;
    let shift = format!("{:.3} seconds", -(j as f64) * span_s);
    let cols = |table: &str| -> anyhow::Result<Vec<String>> {
        let mut s = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
        let rows = s.query_map([table], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let moved = |c: &str| format!("strftime('%Y-%m-%dT%H:%M:%fZ', {c}, ?3)");
    let renum = |c: &str| format!("printf('run-%010d', CAST(substr({c}, 5) AS INTEGER) + ?4)");
    let copy_sql = |table: &str, filter: &str, map: &dyn Fn(&str) -> Option<String>| {
        let cols = cols(table)?;
        let keep: Vec<&String> = cols.iter().filter(|c| c.as_str() != "seq").collect();
        let names = keep
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let exprs = keep
            .iter()
            .map(|c| {
                map(c).unwrap_or_else(|| {
                    if c.ends_with("_at") || c.as_str() == "ts" {
                        moved(c)
                    } else {
                        c.to_string()
                    }
                })
            })
            .collect::<Vec<_>>()
            .join(", ");
        anyhow::Ok(format!(
            "INSERT INTO {table} ({names}) SELECT {exprs} FROM {table} WHERE {filter}"
        ))
    };
    let runs_sql = copy_sql("runs", "id >= ?1 AND id < ?2", &|c| {
        (c == "id").then(|| renum("id"))
    })?;
    let steps_sql = copy_sql("run_steps", "run_id >= ?1 AND run_id < ?2", &|c| {
        (c == "run_id").then(|| renum("run_id"))
    })?;
    let audit_sql = copy_sql(
        "audit",
        "target >= 'run:' || ?1 AND target < 'run:' || ?2",
        &|c| match c {
            "id" => Some("id || '-' || ?5".into()),
            "target" => Some(format!("'run:' || {}", renum("substr(target, 5)"))),
            _ => None,
        },
    )?;
    let tx = flowguard::store::write_tx(conn)?;
    let p = rusqlite::params![run_id(0), run_id(n), shift, off as i64, j];
    for sql in [&runs_sql, &steps_sql, &audit_sql] {
        let mut st = tx.prepare(sql)?;
        // Numbered parameters: the count is the highest number the statement uses.
        for i in 1..=st.parameter_count() {
            st.raw_bind_parameter(i, p[i - 1])?;
        }
        st.raw_execute()?;
    }
    tx.commit()?;
    Ok(())
}

/// Page cache in KiB of the measured connection in `growth` for a store of `bytes` (database +
/// WAL): what the server gives its busiest store of that size
/// ([`flowguard::store::pool::busy_cache_plan`] with the default `store.page_cache_kib`,
/// `store.busy_page_cache_kib` and `store.busy_page_cache_budget_kib`; issue 25 — the one store
/// taking every request is the busiest), or `FG_BENCH_CACHE_KIB` (e.g. 2000: every store's
/// default, the lever off).
fn cache_kib(bytes: u64) -> u64 {
    let d = Settings::default().store;
    std::env::var("FG_BENCH_CACHE_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let plan = flowguard::store::pool::busy_cache_plan(
                &[bytes],
                d.page_cache_kib,
                d.busy_page_cache_kib,
                d.busy_page_cache_budget_kib,
            );
            plan.first()
                .map_or(u64::from(d.page_cache_kib), |&k| u64::from(k))
        })
}

fn production_pragmas(c: &Connection, cache_kib: u64) -> anyhow::Result<()> {
    // The server's: synchronous = NORMAL (store::open) and the page cache.
    c.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{cache_kib};"
    ))?;
    // Experiment knob (not used by bench/run): extra pragmas for the measured connections, e.g.
    // `FG_BENCH_PRAGMAS='PRAGMA wal_autocheckpoint = 0'` to see what checkpoints cost the p99.
    if let Ok(extra) = std::env::var("FG_BENCH_PRAGMAS") {
        c.execute_batch(&extra)?;
    }
    Ok(())
}

/// `FG_BENCH_CHECKPOINTER=1`: measure as the server runs tenant stores (issue 25 lever a): the
/// measured connection keeps only the backstop autocheckpoint
/// (`store::pool::BACKSTOP_AUTOCHECKPOINT_PAGES`) and a thread runs `PRAGMA
/// wal_checkpoint(PASSIVE)` on that same connection every `store::pool::CHECKPOINT_PERIOD`
/// between requests, as `TenantStores::checkpoint_pass_blocking` does. Unset: SQLite's
/// automatic checkpoint inside the commits (the server before issue 25, and every CLI command).
fn background_checkpoints() -> bool {
    std::env::var("FG_BENCH_CHECKPOINTER").is_ok_and(|v| v == "1")
}

/// A bench thread that runs `tick` every `period`, the first time after `first`, until stopped;
/// [`Periodic::stop`] returns the sum of what the ticks returned (passes run).
struct Periodic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<anyhow::Result<u64>>,
}

impl Periodic {
    fn start(
        name: &str,
        first: std::time::Duration,
        period: std::time::Duration,
        mut tick: impl FnMut() -> anyhow::Result<u64> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new().name(name.into()).spawn(
            move || -> anyhow::Result<u64> {
                let (mut n, mut next) = (0, Instant::now() + first);
                loop {
                    while Instant::now() < next {
                        if flag.load(std::sync::atomic::Ordering::SeqCst) {
                            return Ok(n);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    n += tick()?;
                    next += period;
                }
            },
        )?;
        Ok(Self { stop, handle })
    }

    /// Stop the thread; what its ticks returned in total.
    fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))?
    }
}

/// The background checkpoint thread of `FG_BENCH_CHECKPOINTER=1` (a no-op otherwise): a
/// passive checkpoint every `CHECKPOINT_PERIOD`, as the server's pass does.
struct BackgroundCheckpoints(Option<Periodic>);

impl BackgroundCheckpoints {
    fn start(db: &Arc<parking_lot::Mutex<Connection>>) -> anyhow::Result<Self> {
        if !background_checkpoints() {
            return Ok(Self(None));
        }
        db.lock().execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {}",
            flowguard::store::pool::BACKSTOP_AUTOCHECKPOINT_PAGES
        ))?;
        let db = db.clone();
        let period = flowguard::store::pool::CHECKPOINT_PERIOD;
        Ok(Self(Some(Periodic::start(
            "bench-checkpoints",
            period,
            period,
            move || {
                db.lock()
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                Ok(1)
            },
        )?)))
    }

    /// Stop the thread; the number of passes it ran.
    fn stop(self) -> anyhow::Result<u64> {
        self.0.map_or(Ok(0), Periodic::stop)
    }
}

/// CPU time of the calling thread in ms (`CLOCK_THREAD_CPUTIME_ID`): unlike wall time it does
/// not grow when the benchmark is preempted on a loaded machine (4 ms scheduler slices dominate
/// a wall-clock p99 of sub-millisecond requests there).
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// Timings (ms) of one request kind: wall clock and the thread's CPU time.
#[derive(Default)]
struct Lat(Vec<f64>, Vec<f64>);

impl Lat {
    fn time<R>(&mut self, f: impl FnOnce() -> anyhow::Result<R>) -> anyhow::Result<R> {
        let c0 = thread_cpu_ms();
        let t0 = Instant::now();
        let r = f()?;
        self.0.push(t0.elapsed().as_secs_f64() * 1000.0);
        self.1.push(thread_cpu_ms() - c0);
        Ok(r)
    }
    fn json(&mut self) -> Value {
        // The CPU total and max show costs rarer than 1 % of the requests (a WAL checkpoint
        // inside one commit in a few hundred), which the p99 does not see.
        let cpu_sum: f64 = self.1.iter().sum();
        let cpu_max = self.1.iter().cloned().fold(0.0, f64::max);
        json!({"n": self.0.len(), "p50_ms": pct(&mut self.0, 50.0), "p99_ms": pct(&mut self.0, 99.0),
               "cpu_p50_ms": pct(&mut self.1, 50.0), "cpu_p99_ms": pct(&mut self.1, 99.0),
               "cpu_max_ms": cpu_max, "cpu_sum_ms": cpu_sum})
    }
}

/// Deterministic pseudo-random index below `n`.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

#[derive(Default)]
struct Lats {
    list_first: Lat,
    list_filtered: Lat,
    list_deep: Lat,
    detail: Lat,
    claim: Lat,
    step: Lat,
    /// `tenants` only: the embedded runner's claim through the service.
    embedded_claim: Lat,
}

impl Lats {
    fn json(&mut self) -> Value {
        let mut v = json!({"list_first": self.list_first.json(), "list_filtered": self.list_filtered.json(),
               "list_deep": self.list_deep.json(), "detail": self.detail.json(),
               "claim": self.claim.json(), "step": self.step.json()});
        if !self.embedded_claim.0.is_empty() {
            v["embedded_claim"] = self.embedded_claim.json();
        }
        v
    }
}

/// One sample of every request kind on `conn`, whose store holds runs `0..runs` (and `extra`
/// runs added by earlier claim samples, numbered from `next`).
fn sample(
    conn: &mut Connection,
    runs_n: u64,
    next: &mut u64,
    rnd: &mut Lcg,
    with_steps: bool,
    l: &mut Lats,
) -> anyhow::Result<()> {
    let page = l.list_first.time(|| {
        Ok(runs::list_runs(
            conn,
            APP,
            None,
            None,
            50,
            &Default::default(),
        )?)
    })?;
    anyhow::ensure!(page.len() == 50.min(runs_n as usize), "short first page");
    l.list_filtered.time(|| {
        Ok(runs::list_runs(
            conn,
            APP,
            Some("failed"),
            None,
            50,
            &Default::default(),
        )?)
    })?;
    // The cursor of a page ~90 % deep in the newest-first list (untimed lookup by position:
    // copied history is older than the runs it was copied from, so ids are not in time order).
    let deep: (String, String) = conn.query_row(
        "SELECT queued_at, id FROM runs WHERE application_id = ?1 ORDER BY queued_at, id LIMIT 1 OFFSET ?2",
        rusqlite::params![APP, (runs_n / 10 + rnd.below(runs_n / 100 + 1)) as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    l.list_deep.time(|| {
        Ok(runs::list_runs(
            conn,
            APP,
            None,
            Some((&deep.0, &deep.1)),
            50,
            &Default::default(),
        )?)
    })?;
    let id = run_id(rnd.below(runs_n));
    l.detail.time(|| {
        let r = runs::run(conn, &id)?.ok_or_else(|| anyhow::anyhow!("no run {id}"))?;
        let steps = runs::steps(conn, &id)?;
        let pinned = flows::version_steps(conn, &r.flow_id, r.flow_version)?;
        anyhow::ensure!(steps.len() == STEPS as usize && !pinned.is_empty());
        Ok(())
    })?;
    // Claim: a freshly queued run (queueing untimed), then its step reports.
    let id = run_id(*next);
    *next += 1;
    runs::queue_run(conn, &id, FLOW, "manual", "bench", None)?;
    let claimed = l
        .claim
        .time(|| Ok(runs::claim_run(conn, APP, "tok-bench", 0)?))?;
    anyhow::ensure!(
        claimed.map(|r| r.id) == Some(id.clone()),
        "claimed another run"
    );
    let reports = if with_steps { STEPS } else { 1 };
    for i in 0..reports {
        l.step
            .time(|| Ok(runs::record_step_report(conn, &id, &report(i), &decide)?))?;
    }
    runs::transition(conn, &id, &["running"], "passed", None, None, None)?;
    Ok(())
}

/// The table cells of every request kind (the tables' column order), joined with ` | `.
fn cells(lat: &Value) -> String {
    [
        "list_first",
        "list_filtered",
        "list_deep",
        "detail",
        "claim",
        "step",
    ]
    .map(|k| cell(lat, k))
    .join(" | ")
}

/// "wall p50 / wall p99 (CPU p99)" of one request kind, in ms.
fn cell(lat: &Value, k: &str) -> String {
    let g = |f: &str| lat[k][f].as_f64().unwrap_or(f64::NAN);
    format!(
        "{:.2} / {:.2} ({:.2})",
        g("p50_ms"),
        g("p99_ms"),
        g("cpu_p99_ms")
    )
}

fn store_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|s| {
            std::fs::metadata(format!("{}{s}", path.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

/// Measure every request kind `samples` times on a fresh connection to the store at `path`
/// (production pragmas, `cache` KiB page cache, after `warmup` unrecorded ones);
/// `variant` keeps the ids of the runs each measurement adds apart. Returns the latencies, the
/// background checkpoint passes and the connection.
fn measure_growth(
    path: &Path,
    key: &Key256,
    size: u64,
    samples: u64,
    cache: u64,
    variant: u64,
    warmup: u64,
) -> anyhow::Result<(Value, u64, Connection)> {
    let conn = flowguard::store::open_tenant_schema_for_bench(path, Some(key))?;
    production_pragmas(&conn, cache)?;
    // Behind a mutex like the server's (the checkpoint thread takes it between samples).
    let db = Arc::new(parking_lot::Mutex::new(conn));
    let checkpointer = BackgroundCheckpoints::start(&db)?;
    let mut next = 1_000_000_000 + size * 10 + variant * 100_000_000;
    let mut rnd = Lcg(size);
    let mut l = Lats::default();
    // The first `warmup` samples warm the statement cache and the page cache; not recorded.
    let mut warm = Lats::default();
    for s in 0..warmup + samples {
        let recorded = s >= warmup;
        let lats = if recorded { &mut l } else { &mut warm };
        sample(
            &mut db.lock(),
            size,
            &mut next,
            &mut rnd,
            recorded && s % 8 == 0,
            lats,
        )?;
    }
    let passes = checkpointer.stop()?;
    let conn = Arc::into_inner(db)
        .ok_or_else(|| anyhow::anyhow!("checkpoint thread still holds the store"))?
        .into_inner();
    Ok((l.json(), passes, conn))
}

/// Page cache (KiB) of the side-by-side measurement without the busy-store cache (issue 25's
/// page-cache lever off): `FG_BENCH_CACHE_OFF_KIB`, default every store's
/// `store.page_cache_kib` (2000); `0`: no second measurement.
fn cache_off_kib() -> Option<u64> {
    let d = u64::from(Settings::default().store.page_cache_kib);
    let kib = std::env::var("FG_BENCH_CACHE_OFF_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d);
    (kib != 0).then_some(kib)
}

/// Unrecorded samples before the recorded ones on a connection just opened (statement cache,
/// the first pages): the "just opened" rows.
const WARMUP_SAMPLES: u64 = 20;

/// Unrecorded samples before the recorded ones in the steady-state rows (`FG_BENCH_WARMUP`,
/// default 2000): a busy store's cache after a few minutes of its requests. At 1 M runs the
/// interior pages of the run and step B-trees alone are tens of MB, so 20 random samples leave
/// nearly every request paying for cold interior pages that a store under load keeps cached.
fn warmup_samples() -> u64 {
    env_list("FG_BENCH_WARMUP", "2000")[0]
}

/// `sync(1)`: every dirty page of the machine written back (the generator's, at 1M runs
/// ~11 GB written with `synchronous = OFF`), so measurements do not share the disk with it.
fn settle() -> anyhow::Result<()> {
    let st = std::process::Command::new("sync").status()?;
    anyhow::ensure!(st.success(), "sync failed: {st}");
    Ok(())
}

/// Retention purge of the oldest 10 % of runs, on a copy of the store (the original keeps
/// growing): one write transaction, as `service::retention` runs it.
fn purge_copy(conn: &Connection, path: &Path, key: &Key256, runs_n: u64) -> anyhow::Result<Value> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let copy = path.with_extension("purge.db");
    std::fs::copy(path, &copy)?;
    let mut c = flowguard::store::open_tenant_schema_for_bench(&copy, Some(key))?;
    production_pragmas(&c, cache_kib(store_bytes(path)))?;
    let r = purge_oldest_tenth(&mut c, runs_n);
    drop(c);
    for s in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{s}", copy.display()));
    }
    r
}

/// The retention purge of the oldest 10 % of `runs_n` finished runs on `c`, in one transaction
/// as the retention job runs it: runs, duration, runs/s.
fn purge_oldest_tenth(c: &mut Connection, runs_n: u64) -> anyhow::Result<Value> {
    // The edge of the oldest 10 % of finished runs, by the time the retention job compares.
    let edge: String = c.query_row(
        "SELECT coalesce(finished_at, queued_at) FROM runs WHERE status IN ('passed','failed','cancelled')
          ORDER BY 1 LIMIT 1 OFFSET ?1",
        [(runs_n / 10) as i64],
        |r| r.get(0),
    )?;
    let t0 = Instant::now();
    let tx = flowguard::store::write_tx(c)?;
    let purged = runs::purge_runs_in(&tx, &edge)?;
    tx.commit()?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({"runs": purged.runs, "secs": secs, "runs_per_s": purged.runs as f64 / secs}))
}

fn growth(quick: bool) -> anyhow::Result<()> {
    let sizes = if quick {
        vec![200, 400]
    } else {
        env_list("FG_BENCH_RUNS", "10000,100000,1000000")
    };
    let samples = if quick {
        10
    } else {
        env_list("FG_BENCH_SAMPLES", "200")[0]
    };
    let warm_n = if quick {
        WARMUP_SAMPLES
    } else {
        warmup_samples()
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tenant.db");
    let key = flowguard::crypto::random_key();
    let mut conn = flowguard::store::open_tenant_schema_for_bench(&path, Some(&key))?;
    seed(&mut conn)?;
    let mut have = 0u64;
    let mut rows = Vec::new();
    println!(
        "P9 cost growth, one tenant ({samples} samples per request kind after the warm-up samples of the row; page cache: the server's busy-store cache for a store of that size, steady state ({} warm-up samples) and just opened ({WARMUP_SAMPLES}){}; ms: wall p50 / wall p99 (thread-CPU p99))",
        warm_n,
        cache_off_kib().map_or(String::new(), |k| format!(
            ", and {k} KiB = every store's default, steady state, measured right after on the same store"
        ))
    );
    println!(
        "| runs | cache KiB | warm-up | gen s | list first | list filtered | list deep | detail | claim | step report | purge 10 % | purge runs/s | bytes/run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &size in &sizes {
        let t0 = Instant::now();
        generation_pragmas(&conn)?;
        grow_to(&mut conn, have, size)?;
        let gen = t0.elapsed().as_secs_f64();
        have = have.max(size);
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let bytes = store_bytes(&path);
        // The largest size purges in place after its measurement (a copy of a 1M-run store is
        // another ~11 GB on disk); smaller ones purge a copy, as the store keeps growing.
        let last = sizes.last() == Some(&size);
        let purge_before = if last {
            None
        } else {
            Some(purge_copy(&conn, &path, &key, size)?)
        };
        // Write back what generation and the purge copy left dirty (gigabytes at 1M runs with
        // `synchronous = OFF`) before measuring, so the samples do not queue behind the
        // generator's writeback — a server never starts right after writing 11 GB.
        settle()?;
        drop(conn);
        // The server's busy-store cache in steady state, the same cache just opened, then
        // (side by side, same store, steady state) every store's default.
        let kib = cache_kib(bytes);
        let (lat, passes, c) = measure_growth(&path, &key, size, samples, kib, 0, warm_n)?;
        drop(c);
        let (lat_cold, _, c) = measure_growth(&path, &key, size, samples, kib, 2, WARMUP_SAMPLES)?;
        let mut off = None;
        if let Some(kib) = cache_off_kib() {
            let (lat_off, _, c2) = {
                drop(c);
                measure_growth(&path, &key, size, samples, kib, 1, warm_n)?
            };
            off = Some((kib, lat_off));
            conn = c2;
        } else {
            conn = c;
        }
        let purge = match purge_before {
            Some(p) => p,
            None => purge_oldest_tenth(&mut conn, size)?,
        };
        let line = |lat: &Value, kib: u64, warm: u64, purge: Option<&Value>| {
            let (ps, pr) = purge.map_or(("—".to_string(), "—".to_string()), |p| {
                (
                    format!("{:.2} s", p["secs"].as_f64().unwrap_or(0.0)),
                    format!("{:.0}", p["runs_per_s"].as_f64().unwrap_or(0.0)),
                )
            });
            println!(
                "| {size} | {kib} | {warm} | {gen:.0} | {} | {ps} | {pr} | {} |",
                cells(lat),
                bytes / size.max(1)
            );
        };
        line(&lat, kib, warm_n, Some(&purge));
        line(&lat_cold, kib, WARMUP_SAMPLES, None);
        if let Some((kib, l)) = &off {
            line(l, *kib, warm_n, None);
        }
        rows.push(
            json!({"runs": size, "generate_s": gen, "store_bytes": bytes, "checkpoint_passes": passes,
                   "bytes_per_run": bytes / size.max(1), "purge": purge, "lat": lat,
                   "cache_kib": kib, "warmup": warm_n,
                   "just_opened": json!({"warmup": WARMUP_SAMPLES, "lat": lat_cold}),
                   "cache_off": off.map(|(kib, l)| json!({"cache_kib": kib, "lat": l}))}),
        );
    }
    println!(
        "BENCH_JSON {}",
        json!({"bench": "growth", "samples": samples,
               "background_checkpoints": background_checkpoints(), "rows": rows})
    );
    Ok(())
}

/// Database key of tenant `t` (active version), from the catalog.
fn db_key(
    state: &flowguard::service::AppState,
    t: &flowguard::domain::TenantId,
) -> anyhow::Result<Key256> {
    let c = state.catalog.db().lock();
    let keys = flowguard::store::catalog::usable_keys(&c, t, KeyPurpose::Db)?;
    let (v, w) = keys
        .first()
        .ok_or_else(|| anyhow::anyhow!("no database key for {}", t.as_str()))?;
    keyring::unwrap(&state.master, t, *v, KeyPurpose::Db, w)
        .map_err(|e| anyhow::anyhow!("unwrap: {e}"))
}

/// The data dir of `count` tenants × `per` runs: generated into a temp dir, or — for the
/// largest count (`keep`) only, so two large sets never share the disk — kept in (and reused
/// from) `FG_BENCH_TENANTS_DIR` (a `ready` file marks a finished set-up).
fn tenants_data(
    count: u64,
    per: u64,
    keep: bool,
) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf, bool)> {
    match std::env::var("FG_BENCH_TENANTS_DIR") {
        Ok(keep_in) if keep && !keep_in.is_empty() => {
            let keep = keep_in;
            let data = Path::new(&keep).join(format!("tenants-{count}x{per}"));
            let ready = data.join("ready").exists();
            if !ready && data.exists() {
                std::fs::remove_dir_all(&data)?;
            }
            Ok((None, data, ready))
        }
        _ => {
            let dir = tempfile::tempdir()?;
            let data = dir.path().join("data");
            Ok((Some(dir), data, false))
        }
    }
}

/// Create `count` tenants (`bench_00000`…), tenant 0 grown through the library to `per` runs,
/// the others copies of its store re-keyed to their own database key. Returns their ids.
fn populate(
    state: &flowguard::service::AppState,
    count: u64,
    per: u64,
) -> anyhow::Result<Vec<flowguard::domain::TenantId>> {
    let hash = flowguard::auth::password::hash_blocking("benchmark-owner-password")?;
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(flowguard::service::tenants::create_tenant(
            state,
            &format!("bench_{i:05}"),
            &format!("owner{i}@bench.example"),
            &hash,
            false,
            None,
        )?);
    }
    let template = state.tenants.path_of(&ids[0]);
    {
        let db = state.tenants.get_blocking(&ids[0])?;
        let mut c = db.lock();
        generation_pragmas(&c)?;
        seed(&mut c)?;
        add_runs(&mut c, 0, per)?;
        // Back to what `TenantStores` gave the connection (its page-cache pass re-sizes it).
        production_pragmas(&c, u64::from(Settings::default().store.page_cache_kib))?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    let k0 = db_key(state, &ids[0])?;
    for t in &ids[1..] {
        let dst = state.tenants.path_of(t);
        for s in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", dst.display()));
        }
        std::fs::copy(&template, &dst)?;
        let c = flowguard::store::open_tenant_schema_for_bench(&dst, Some(&k0))?;
        let kt = db_key(state, t)?;
        let sql = format!("PRAGMA rekey = \"x'{}'\"", hex::encode(kt.as_ref()));
        c.execute_batch(&sql)?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(ids)
}

/// The bench tenants of a kept data dir, in creation order (`bench_00000` first).
fn existing_tenants(
    state: &flowguard::service::AppState,
) -> anyhow::Result<Vec<flowguard::domain::TenantId>> {
    let c = state.catalog.db().lock();
    let mut ts = flowguard::store::catalog::list_tenants(&c)?;
    ts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ts.into_iter().map(|t| t.id).collect())
}

fn tenants(quick: bool) -> anyhow::Result<()> {
    let counts = if quick {
        vec![1, 3]
    } else {
        env_list("FG_BENCH_TENANTS", "1,100,1000")
    };
    let per = if quick {
        50
    } else {
        env_list("FG_BENCH_TENANT_RUNS", "10000")[0]
    };
    let samples = if quick {
        10
    } else {
        env_list("FG_BENCH_SAMPLES", "200")[0]
    };
    let busy = Busy {
        samples: if quick {
            100
        } else {
            env_list("FG_BENCH_BUSY_SAMPLES", "5000")[0]
        },
        warmup: if quick { 20 } else { warmup_samples() },
        pass_every_ms: env_list("FG_BENCH_PASS_EVERY_MS", "5000")[0],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    println!("P9 cost growth, tenants × {per} runs (through TenantStores; random = {samples} samples, each sample's requests to a random tenant; one busy = {} samples to one tenant after {} warm-up samples while a background thread walks every tenant's store every {} ms; ms: wall p50 / wall p99 (thread-CPU p99); embedded claim = service::runner::claim_next; full scan = one claim scan of every tenant's store)", busy.samples, busy.warmup, busy.pass_every_ms);
    println!("| tenants | requests to | setup s | list first | list filtered | list deep | detail | claim | step report | embedded claim | samples | passes | full scan ms | open stores | RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &count in &counts {
        let largest = counts.iter().max() == Some(&count);
        let (_tmp, data, ready) = tenants_data(count, per, largest)?;
        let settings = Settings::load(
            None,
            &CliOverrides {
                data_dir: Some(PathBuf::from(&data)),
                listen: None,
            },
        )?;
        let t0 = Instant::now();
        let opened = flowguard::startup::open_data_dir(&settings, true)?;
        let state = Arc::new(flowguard::startup::build_state(Arc::new(settings), opened)?);
        let ids = if ready {
            existing_tenants(&state)?
        } else {
            let ids = populate(&state, count, per)?;
            if _tmp.is_none() {
                std::fs::write(data.join("ready"), b"")?;
            }
            ids
        };
        anyhow::ensure!(
            ids.len() as u64 == count,
            "{} tenants in {}",
            ids.len(),
            data.display()
        );
        let setup = t0.elapsed().as_secs_f64();
        settle()?;
        for (pattern, spread) in [("random", true), ("one busy", false)] {
            // Every pattern starts from the generated stores: the runs earlier samples (or an
            // earlier run on a kept dir) added are deleted (untimed), ids from 2,000,000,000.
            let mut next = vec![2_000_000_000u64; ids.len()];
            for (k, t) in ids.iter().enumerate() {
                state.tenants.for_pass(t, |db| {
                    let c = db.lock();
                    let added = run_id(2_000_000_000);
                    c.execute("DELETE FROM run_steps WHERE run_id >= ?1", [&added])?;
                    let n = c.execute("DELETE FROM runs WHERE id >= ?1", [&added])?;
                    // The busy store without the free pages the deletion left (the same file
                    // at every count and on every run).
                    if k == 0 && n > 0 {
                        c.execute_batch("VACUUM")?;
                    }
                    Ok(())
                })?;
            }
            let m = measure_tenants(&rt, &state, &ids, per, samples, spread, &busy, &mut next)?;
            let mut l = m.lats;
            let rss = rss_kib();
            let open = state.tenants.open_count();
            // What every embedded claim cost before the hints: one scan of every store.
            let f0 = Instant::now();
            let pairs = flowguard::service::runner::queued_pairs_in(
                &state,
                &flowguard::service::runner::ScanPlan::Full,
            );
            let full_ms = f0.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(pairs.is_empty(), "runs left queued: {pairs:?}");
            let lat = l.json();
            println!(
                "| {count} | {pattern} | {setup:.0} | {} | {} | {} | {} | {full_ms:.1} | {open} | {:.1} |",
                cells(&lat),
                cell(&lat, "embedded_claim"),
                m.samples,
                m.passes,
                rss as f64 / 1024.0
            );
            rows.push(
                json!({"tenants": count, "pattern": pattern, "runs_per_tenant": per,
                       "setup_s": setup, "samples": m.samples, "background_passes": m.passes,
                       "full_scan_ms": full_ms, "open_stores": open, "rss_kib": rss, "lat": lat}),
            );
        }
        drop(state);
    }
    println!(
        "BENCH_JSON {}",
        json!({"bench": "tenants", "samples": samples, "busy_samples": busy.samples,
               "warmup": busy.warmup, "pass_every_ms": busy.pass_every_ms,
               "runs_per_tenant": per, "rows": rows})
    );
    Ok(())
}

/// How the `one busy` pattern runs: `samples` recorded samples after `warmup` unrecorded ones
/// (the same number at every tenant count, so the busy store grows alike), a background pass
/// over every tenant every `pass_every_ms`.
struct Busy {
    samples: u64,
    warmup: u64,
    pass_every_ms: u64,
}

/// What [`measure_tenants`] measured: the latencies, the recorded samples and the background
/// passes that ran meanwhile.
struct Measured {
    lats: Lats,
    samples: u64,
    passes: u64,
}

/// The server's background walk over every tenant's store, on its own thread as the server's
/// jobs run ([`Periodic`]): `service::runner::queued_per_app_blocking` every `every_ms` (what the
/// `flowguard_runs_queued` gauge, the runner's full scan and the agent time-outs read; they
/// skip stores found idle whose files did not change) and, from 10 s after the start every
/// 60 s, the `schedules` job (`service::runs::queue_scheduled_blocking`, which skips stores
/// found without schedules whose files did not change). Returns the thread; its `stop` gives
/// the passes run.
fn background_passes(
    state: &Arc<flowguard::service::AppState>,
    every_ms: u64,
) -> anyhow::Result<Periodic> {
    let st = state.clone();
    let start = Instant::now();
    let mut schedules_at = std::time::Duration::from_secs(10);
    Periodic::start(
        "bench-passes",
        std::time::Duration::ZERO,
        std::time::Duration::from_millis(every_ms),
        move || {
            flowguard::service::runner::queued_per_app_blocking(&st);
            let mut n = 1;
            if start.elapsed() >= schedules_at {
                flowguard::service::runs::queue_scheduled_blocking(&st);
                n += 1;
                schedules_at += std::time::Duration::from_secs(60);
            }
            Ok(n)
        },
    )
}

/// Every request kind through the server's `TenantStores` — each sample to a random tenant of
/// `ids` (`spread`: `samples` samples after one unrecorded warm-up), or each to `ids[0]`
/// (`busy.warmup` unrecorded samples, then `busy.samples` recorded ones) while
/// [`background_passes`] walks every tenant's store. Opening an evicted store
/// (catalog keys, unwrap, SQLCipher open) counts against the sample's first request, as in the
/// server; the server's page-cache pass runs every 25 samples (every 5 s in the server). Each
/// sample also queues a run (untimed, hinted as the API does) and claims it through the
/// embedded runner's `claim_next` (timed), then ends it (untimed).
#[allow(clippy::too_many_arguments)]
fn measure_tenants(
    rt: &tokio::runtime::Runtime,
    state: &Arc<flowguard::service::AppState>,
    ids: &[flowguard::domain::TenantId],
    per: u64,
    samples: u64,
    spread: bool,
    busy: &Busy,
    next: &mut [u64],
) -> anyhow::Result<Measured> {
    let count = ids.len() as u64;
    let mut rnd = Lcg(count + u64::from(spread));
    let mut l = Lats::default();
    let warmup = if spread { 1 } else { busy.warmup };
    let passes = if spread {
        None
    } else {
        // The server's steady state: every pass has walked the stores once since they were
        // last written (its first minute after a start opens every store; P7 measures that), so
        // the stores the clean-up just wrote go quiet and both passes run once, untimed.
        std::thread::sleep(
            flowguard::store::pool::STAMP_QUIET + std::time::Duration::from_millis(100),
        );
        flowguard::service::runner::queued_per_app_blocking(state);
        flowguard::service::runs::queue_scheduled_blocking(state);
        Some(background_passes(state, busy.pass_every_ms)?)
    };
    let mut recorded = 0u64;
    for s in 0.. {
        if s >= warmup && recorded >= if spread { samples } else { busy.samples } {
            break;
        }
        if s % 25 == 0 {
            state.tenants.page_cache_pass_blocking();
        }
        let i = if spread { rnd.below(count) as usize } else { 0 };
        let t1 = Instant::now();
        let db = state.tenants.get_blocking(&ids[i])?;
        let open_ms = t1.elapsed().as_secs_f64() * 1000.0;
        let mut one = Lats::default();
        {
            let mut c = db.lock();
            sample(&mut c, per, &mut next[i], &mut rnd, s % 8 == 0, &mut one)?;
            // A run for the embedded runner, queued as the API queues it (commit, then hint).
            let id = run_id(next[i]);
            next[i] += 1;
            runs::queue_run(&mut c, &id, FLOW, "manual", "bench", None)?;
        }
        flowguard::service::runner::run_queued(state, &ids[i]);
        let claimed = one.embedded_claim.time(|| {
            rt.block_on(flowguard::service::runner::claim_next(state))
                .map_err(|e| anyhow::anyhow!("claim_next: {}", e.detail))
        })?;
        let (_, claim) =
            claimed.ok_or_else(|| anyhow::anyhow!("the embedded claim found no run"))?;
        {
            let mut c = db.lock();
            runs::transition(
                &mut c,
                &claim.run_id,
                &["running"],
                "passed",
                None,
                None,
                None,
            )?;
        }
        if s < warmup {
            continue;
        }
        recorded += 1;
        if let Some(x) = one.list_first.0.first_mut() {
            *x += open_ms;
        }
        for (into, from) in [
            (&mut l.list_first, one.list_first),
            (&mut l.list_filtered, one.list_filtered),
            (&mut l.list_deep, one.list_deep),
            (&mut l.detail, one.detail),
            (&mut l.claim, one.claim),
            (&mut l.step, one.step),
            (&mut l.embedded_claim, one.embedded_claim),
        ] {
            into.0.extend(from.0);
            into.1.extend(from.1);
        }
    }
    let passes = passes.map(Periodic::stop).transpose()?.unwrap_or(0);
    Ok(Measured {
        lats: l,
        samples: recorded,
        passes,
    })
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; harness flags are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut modes: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["growth", "tenants"].contains(a))
        .collect();
    if modes.is_empty() {
        modes = vec!["growth", "tenants"];
    }
    for m in modes {
        match m {
            "growth" => growth(quick)?,
            _ => tenants(quick)?,
        }
    }
    Ok(())
}
