//! Tenant-store SQL for the screenshot index: table `screenshots` (one row per step, the
//! encrypted file itself lives on disk under its object id). [`ShotRow`] is defined in
//! `store/mod.rs` because the rotation fence (`fence.rs`) reads the same rows. Storing a
//! screenshot checks the DEK fence ([`super::fence::check_dek_fence`]) in the same transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::{fence, write_tx, Conflict, ShotRow, StoreError, StoreResult};
use crate::domain::now_rfc3339;

/// Record a screenshot (replacing an earlier one of the same step); returns the replaced id.
/// A file sealed under a DEK version below the rotation fence → `Conflict("key_rotated")`.
pub fn put_screenshot(
    c: &mut Connection,
    s: &ShotRow,
    width: u32,
    height: u32,
    bytes: usize,
) -> StoreResult<Option<String>> {
    let tx = write_tx(c)?;
    let st: String = tx
        .query_row("SELECT status FROM runs WHERE id = ?1", [&s.run_id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or(StoreError::NotFound)?;
    if st != "running" {
        return Err(StoreError::Conflict(Conflict::Transition(st.to_string())));
    }
    fence::check_dek_fence(&tx, u32::try_from(s.key_version).unwrap_or(0))?;
    let old: Option<String> = tx
        .query_row(
            "SELECT id FROM screenshots WHERE run_id = ?1 AND step_index = ?2",
            params![s.run_id, s.step_index],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute(
        "DELETE FROM screenshots WHERE run_id = ?1 AND step_index = ?2",
        params![s.run_id, s.step_index],
    )?;
    tx.execute(
        "INSERT INTO screenshots (id, run_id, step_index, key_version, width, height, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![s.id, s.run_id, s.step_index, s.key_version, width, height, bytes as i64, now_rfc3339()],
    )?;
    tx.commit()?;
    Ok(old)
}

/// A step's screenshot.
pub fn screenshot_of(c: &Connection, run_id: &str, idx: i64) -> StoreResult<Option<ShotRow>> {
    Ok(c.query_row(
        "SELECT id, run_id, step_index, key_version FROM screenshots WHERE run_id = ?1 AND step_index = ?2",
        params![run_id, idx],
        |r| Ok(ShotRow { id: r.get(0)?, run_id: r.get(1)?, step_index: r.get(2)?, key_version: r.get(3)? }),
    )
    .optional()?)
}

/// A screenshot by object id.
pub fn screenshot(c: &Connection, id: &str) -> StoreResult<Option<ShotRow>> {
    Ok(c.query_row(
        "SELECT id, run_id, step_index, key_version FROM screenshots WHERE id = ?1",
        [id],
        |r| {
            Ok(ShotRow {
                id: r.get(0)?,
                run_id: r.get(1)?,
                step_index: r.get(2)?,
                key_version: r.get(3)?,
            })
        },
    )
    .optional()?)
}
