//! Background jobs, registered by name (after kanidm's named tasks and vaultwarden's cron
//! strings): tokio-cron-scheduler drives them in `serve`, and [`run_once`] runs one by name for
//! tests and operators (`flowguard jobs run NAME`).
//!
//! | name | default cron (sec min hour …) | what |
//! |---|---|---|
//! | `schedules` | `0 * * * * *` (every minute) | queue runs of flows whose cron tick passed (missed ticks collapse into one); skips a store found without scheduled flows whose files did not change since |
//! | `agent-timeouts` | `30 * * * * *` (every minute) | fail running runs without a heartbeat for 5 minutes (`agent_timeout`); skips a store found with no queued or running run whose files did not change since (`service::runner::RunnerState::found_nothing_unchanged`, issue 25) |
//! | `key-rotation` | `keys.rotation_cron` (default `0 17 3 * * *`, daily) | rotate tenant key sets older than `keys.rotation_days`; finish interrupted rotations |
//! | `ticket-outbox` | `*/20 * * * * *` (every 20 s) | deliver due ticket filings and comments (retries after backoff or `Retry-After`; issue 20); visits only the tenants with deliveries waiting (`tickets::DueHints`), every tenant store on its first run and every 10 min |
//! | `license-clock` | `0 */10 * * * *` (every 10 minutes) | record the latest time seen in the catalog (the offline trial is judged against it, so moving the clock back cannot extend it) and pick up a trial started offline |
//! | `backup` | `[backup] schedule` (default unset: not scheduled, no catch-up run at start) | write a backup into `[backup] dir`, then delete the oldest complete backups there beyond `[backup] keep` (issue 19) |
//! | `retention` | `jobs.retention_cron` (default `0 15 3 * * *`, daily) | purge finished runs (with their steps and screenshot files) and tenant audit rows older than the plan's retention ([`retention`]) |
//!
//! All but `backup` also run once at start, in the background while the server already serves, so a tick
//! missed while the server was down runs once (and an interrupted key rotation is finished).

use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::Settings;
pub use crate::service::retention::{retention_blocking, TenantPurge};
use crate::service::{keys, runs, AppState};

/// A registered job.
pub struct JobSpec {
    /// Name.
    pub name: &'static str,
    /// Cron expression with seconds.
    pub cron: &'static str,
    /// Body (blocking); returns how many items it handled.
    pub run: fn(&AppState) -> usize,
}

/// All jobs.
pub const JOBS: &[JobSpec] = &[
    JobSpec {
        name: SCHEDULES_JOB,
        cron: "0 * * * * *",
        run: runs::queue_scheduled_blocking,
    },
    JobSpec {
        name: "agent-timeouts",
        cron: "30 * * * * *",
        run: runs::fail_stale_runs_blocking,
    },
    JobSpec {
        name: KEY_ROTATION_JOB,
        cron: "0 17 3 * * *",
        run: keys::rotation_job_blocking,
    },
    JobSpec {
        name: TICKET_OUTBOX_JOB,
        cron: "*/20 * * * * *",
        run: crate::service::tickets::deliver_job_blocking,
    },
    JobSpec {
        name: RETENTION_JOB,
        cron: "0 15 3 * * *",
        run: crate::service::retention::retention_job_blocking,
    },
    JobSpec {
        name: BACKUP_JOB,
        cron: "",
        run: crate::service::backup::scheduled_job_blocking,
    },
    JobSpec {
        name: "license-clock",
        cron: "0 */10 * * * *",
        run: crate::service::license::clock_job_blocking,
    },
];

/// Name of the ticket delivery job (issue 20).
pub const TICKET_OUTBOX_JOB: &str = "ticket-outbox";

/// Name of the schedules job.
pub const SCHEDULES_JOB: &str = "schedules";

/// Name of the retention job.
pub const RETENTION_JOB: &str = "retention";

/// Name of the scheduled backup job.
pub use crate::service::backup::BACKUP_JOB;

/// Name of the key rotation job.
pub const KEY_ROTATION_JOB: &str = "key-rotation";

/// Jobs that change key material: from the host CLI they run only with the data dir locked
/// (no server running), because a server holds open connections on the current keys.
pub const EXCLUSIVE_JOBS: &[&str] = &[KEY_ROTATION_JOB];

/// The cron expression a job runs on: the configured one where settings name one
/// (`keys.rotation_cron`, `jobs.retention_cron`, `backup.schedule`), else its default.
/// `None`: the job is not scheduled (`backup` without `[backup] schedule`).
pub fn cron_for(settings: &Settings, spec: &JobSpec) -> Option<String> {
    match spec.name {
        KEY_ROTATION_JOB => Some(settings.keys.rotation_cron.clone()),
        RETENTION_JOB => Some(settings.jobs.retention_cron.clone()),
        BACKUP_JOB => settings.backup.schedule.clone(),
        _ => Some(spec.cron.to_string()),
    }
}

/// Run one job now by name (blocking). Unknown name → `None`.
pub fn run_once(state: &AppState, name: &str) -> Option<usize> {
    JOBS.iter().find(|j| j.name == name).map(|j| (j.run)(state))
}

async fn run_named(state: Arc<AppState>, name: &'static str) {
    let st = state.clone();
    match tokio::task::spawn_blocking(move || {
        let n = run_once(&st, name);
        release_free_memory();
        n
    })
    .await
    {
        Ok(Some(n)) if n > 0 => tracing::info!(job = name, handled = n, "job ran"),
        Ok(_) => tracing::debug!(job = name, "job ran"),
        Err(e) => tracing::error!(job = name, error = %e, "job panicked"),
    }
}

/// Hand memory the allocator keeps after a job back to the OS. A pass over every tenant opens
/// and closes up to all of their stores; glibc keeps the freed memory in the blocking thread's
/// arena, which showed as ~11 MiB of idle RSS at 1,000 tenants (BENCHMARKS.md P7).
/// `malloc_trim` (glibc ≥ 2.8 trims every arena) only returns free pages; it is a no-op
/// elsewhere.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes a plain integer, touches only the allocator's own free lists
    // (it is thread-safe in glibc) and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Start the scheduler with every job, after running each once. Returns the scheduler (keep it
/// alive; `shutdown` it on exit).
pub async fn start(state: Arc<AppState>) -> anyhow::Result<JobScheduler> {
    let sched = JobScheduler::new().await?;
    // A backup cannot survive a restart: rows a previous process left `running` failed.
    let n = crate::service::backup::fail_interrupted_blocking(&state);
    if n > 0 {
        tracing::warn!(
            backups = n,
            "backups interrupted by a restart marked failed"
        );
    }
    // The catch-up passes run in the background, one job after the other: with many tenants each
    // opens every store, so serving must not wait for them (start to /readyz, BENCHMARKS.md P7),
    // and running them one at a time keeps the memory peak of a single pass.
    let st = state.clone();
    tokio::spawn(async move {
        for spec in JOBS.iter().filter(|j| j.name != BACKUP_JOB) {
            run_named(st.clone(), spec.name).await;
        }
    });
    for spec in JOBS {
        let st = state.clone();
        let name = spec.name;
        let Some(cron) = cron_for(&state.settings, spec) else {
            continue;
        };
        let job = Job::new_async(cron.as_str(), move |_id, _l| {
            let st = st.clone();
            Box::pin(async move { run_named(st, name).await })
        })?;
        sched.add(job).await?;
    }
    sched.start().await?;
    Ok(sched)
}
