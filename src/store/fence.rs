//! The DEK rotation fence and re-sealing (issue 4), tenant store: table `key_state` (the fence,
//! `min_dek_version`), the generic sealed-column helpers used to re-seal envelope ciphertexts
//! under a new DEK ([`SealedColumn`], [`reseal_batch`], [`count_sealed`], [`sealed_below`]) and
//! the `screenshots.key_version` bookkeeping of the same rotation. Every write path that stores
//! a ciphertext (`variables.rs`, `ldap.rs`, `ai.rs`: [`check_sealed_fence`]; `screenshots.rs`:
//! [`check_dek_fence`]) checks the fence inside its own transaction; the services reach them
//! through `service::sealing::write_sealed`, which re-seals and retries on `key_rotated`.
//! Imports no other aggregate file ([`ShotRow`] lives in `store/mod.rs`).

use rusqlite::{params, Connection};

use super::{audit, write_tx, Conflict, ShotRow, StoreError, StoreResult};
use crate::audit::NewAuditEvent;

/// The key-version fence: the lowest DEK version a new ciphertext may carry.
pub fn dek_fence(c: &Connection) -> StoreResult<u32> {
    Ok(c.query_row(
        "SELECT min_dek_version FROM key_state WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

/// Raise the fence to `version` (never lowers it) and append `ev` in the same transaction.
/// Returns false (and audits nothing) when the fence already stood at `version` or above.
pub fn raise_dek_fence(c: &mut Connection, version: u32, ev: &NewAuditEvent) -> StoreResult<bool> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE key_state SET min_dek_version = ?1 WHERE id = 1 AND min_dek_version < ?1",
        [version],
    )?;
    if n == 0 {
        return Ok(false);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(true)
}

/// Inside a write transaction: refuse a ciphertext sealed under DEK `version` when a rotation
/// has raised the fence above it (`Conflict("key_rotated")`; the caller re-seals and retries).
pub fn check_dek_fence(tx: &Connection, version: u32) -> StoreResult<()> {
    if version < dek_fence(tx)? {
        return Err(StoreError::Conflict(Conflict::KeyRotated));
    }
    Ok(())
}

/// Inside a write transaction: [`check_dek_fence`] for the DEK version recorded in the header of
/// an envelope ciphertext about to be stored (`Key` when it is not an envelope).
pub fn check_sealed_fence(tx: &Connection, ciphertext: &[u8]) -> StoreResult<()> {
    let v = crate::crypto::envelope::key_version(ciphertext)
        .map_err(|e| StoreError::Key(e.to_string()))?;
    check_dek_fence(tx, v)
}

/// An envelope-encrypted column of the tenant store: its table, the column, and the key columns
/// whose values (in this order) are part of the ciphertext's AAD.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    /// Table name.
    pub table: &'static str,
    /// Column holding envelope ciphertexts (BLOB).
    pub column: &'static str,
    /// Key columns (TEXT), in AAD order.
    pub key_columns: &'static [&'static str],
}

/// Re-seal one batch of `col`: rows with `rowid > after` (at most `limit`), in one write
/// transaction. `f(key values, ciphertext)` returns the replacement, or `None` to keep the row.
/// Returns (rows scanned, rows replaced, last rowid scanned); 0 scanned means the end.
pub fn reseal_batch(
    c: &mut Connection,
    col: &SealedColumn,
    after: i64,
    limit: usize,
    mut f: impl FnMut(&[String], &[u8]) -> StoreResult<Option<Vec<u8>>>,
) -> StoreResult<(usize, usize, i64)> {
    let keys = col.key_columns.join(", ");
    let select = format!(
        "SELECT rowid, {col}, {keys} FROM {table} WHERE rowid > ?1 AND {col} IS NOT NULL ORDER BY rowid LIMIT ?2",
        col = col.column,
        table = col.table,
    );
    let update = format!(
        "UPDATE {table} SET {col} = ?2 WHERE rowid = ?1 AND {col} = ?3",
        col = col.column,
        table = col.table,
    );
    let tx = write_tx(c)?;
    let rows: Vec<(i64, Vec<u8>, Vec<String>)> = {
        let mut s = tx.prepare(&select)?;
        let n = col.key_columns.len();
        let rows = s.query_map(params![after, limit as i64], |r| {
            let mut k = Vec::with_capacity(n);
            for i in 0..n {
                k.push(r.get(2 + i)?);
            }
            Ok((r.get(0)?, r.get(1)?, k))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut changed = 0;
    let mut last = after;
    {
        let mut up = tx.prepare(&update)?;
        for (rowid, sealed, key) in &rows {
            last = *rowid;
            if let Some(new) = f(key, sealed)? {
                changed += up.execute(params![rowid, new, sealed])?;
            }
        }
    }
    tx.commit()?;
    Ok((rows.len(), changed, last))
}

/// Cells anywhere in the store that hold an envelope ciphertext (`FGE1` header) sealed under a
/// DEK version below `version`: (table, column, count) for each column with any. The safety net
/// before a DEK is destroyed, covering columns nobody registered for rewrap.
pub fn sealed_below(c: &Connection, version: u32) -> StoreResult<Vec<(String, String, i64)>> {
    let tables: Vec<String> = {
        let mut s = c.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let rows = s.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let v = version.to_be_bytes().to_vec();
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = {
            let mut s = c.prepare("SELECT name FROM pragma_table_info(?1)")?;
            let rows = s.query_map([&t], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for col in cols {
            let q = format!(
                "SELECT count(*) FROM \"{t}\" WHERE typeof(\"{col}\") = 'blob'
                 AND substr(\"{col}\", 1, 4) = X'46474531' AND substr(\"{col}\", 5, 4) < ?1",
                t = t.replace('"', "\"\""),
                col = col.replace('"', "\"\""),
            );
            let n: i64 = c.query_row(&q, [&v], |r| r.get(0))?;
            if n > 0 {
                out.push((t.clone(), col, n));
            }
        }
    }
    Ok(out)
}

/// Screenshots whose recorded key version is below `version` (at most `limit`), by id.
pub fn screenshots_below(c: &Connection, version: u32, limit: usize) -> StoreResult<Vec<ShotRow>> {
    let mut s = c.prepare(
        "SELECT id, run_id, step_index, key_version FROM screenshots WHERE key_version < ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = s.query_map(params![version, limit as i64], |r| {
        Ok(ShotRow {
            id: r.get(0)?,
            run_id: r.get(1)?,
            step_index: r.get(2)?,
            key_version: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Count screenshots whose recorded key version is below `version`.
pub fn count_screenshots_below(c: &Connection, version: u32) -> StoreResult<i64> {
    Ok(c.query_row(
        "SELECT count(*) FROM screenshots WHERE key_version < ?1",
        [version],
        |r| r.get(0),
    )?)
}

/// Record that screenshot `id` is now sealed under `version`. False when the row is gone
/// (replaced or deleted meanwhile).
pub fn set_screenshot_version(c: &Connection, id: &str, version: u32) -> StoreResult<bool> {
    Ok(c.execute(
        "UPDATE screenshots SET key_version = ?2 WHERE id = ?1 AND key_version < ?2",
        params![id, version],
    )? > 0
        || c.query_row(
            "SELECT EXISTS (SELECT 1 FROM screenshots WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )?)
}

/// Count the rows of a sealed column (for progress reporting).
pub fn count_sealed(c: &Connection, col: &SealedColumn) -> StoreResult<i64> {
    Ok(c.query_row(
        &format!(
            "SELECT count(*) FROM {} WHERE {} IS NOT NULL",
            col.table, col.column
        ),
        [],
        |r| r.get(0),
    )?)
}
/// Every non-NULL ciphertext of `col` with its key column values (for `flowguard doctor`, which
/// tries to open each one).
pub fn sealed_cells(
    c: &Connection,
    col: &SealedColumn,
) -> StoreResult<Vec<(Vec<String>, Vec<u8>)>> {
    let keys = if col.key_columns.is_empty() {
        "NULL".to_string()
    } else {
        col.key_columns.join(", ")
    };
    let sql = format!(
        "SELECT {col}, {keys} FROM {table} WHERE {col} IS NOT NULL ORDER BY rowid",
        col = col.column,
        table = col.table,
    );
    let mut s = c.prepare(&sql)?;
    let n = col.key_columns.len();
    let rows = s.query_map([], |r| {
        let mut k = Vec::with_capacity(n);
        for i in 0..n {
            k.push(r.get(1 + i)?);
        }
        Ok((k, r.get(0)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
