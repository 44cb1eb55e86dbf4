//! Deletes that cross aggregates, run inside the caller's transaction: runs with their
//! `run_steps` and `screenshots` rows. Kept here (not in `runs.rs`) so that both owners of a
//! deletion — retention (`runs::purge_runs_in`) and application deletion
//! (`applications::delete_application`) — share one implementation without one aggregate file
//! importing another. Imports nothing but `store/mod.rs`.

use super::StoreResult;

/// What `delete_runs_in` deleted (as returned by `runs::purge_runs_in`).
#[derive(Debug, Default)]
pub struct PurgedRuns {
    /// Runs deleted (their steps went with them).
    pub runs: u64,
    /// Object ids of the screenshots deleted (their files are the caller's to remove).
    pub screenshots: Vec<String>,
}

/// Delete the runs matching `filter` (an SQL condition on `runs` with one parameter `?1`) with
/// their steps and screenshot rows, inside the caller's transaction; returns what went. The one
/// place runs are deleted (retention, application deletion).
pub(crate) fn delete_runs_in(
    tx: &rusqlite::Transaction<'_>,
    filter: &str,
    param: &str,
) -> StoreResult<PurgedRuns> {
    let runs = format!("SELECT id FROM runs WHERE {filter}");
    let screenshots = {
        let mut st = tx.prepare(&format!(
            "SELECT id FROM screenshots WHERE run_id IN ({runs})"
        ))?;
        let rows = st.query_map([param], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute(
        &format!("DELETE FROM screenshots WHERE run_id IN ({runs})"),
        [param],
    )?;
    tx.execute(
        &format!("DELETE FROM run_steps WHERE run_id IN ({runs})"),
        [param],
    )?;
    let runs = tx.execute(&format!("DELETE FROM runs WHERE {filter}"), [param])? as u64;
    Ok(PurgedRuns { runs, screenshots })
}
