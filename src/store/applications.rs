//! Tenant-store SQL for applications under test: table `applications`. Deleting an application
//! deletes its runs (with their steps and screenshot rows) through [`super::cascade`] in the same
//! transaction; flows, variables, webhook tokens and agent tokens go by `ON DELETE CASCADE`.

use rusqlite::{params, Connection, OptionalExtension};

use super::{audit, cascade, write_tx, Conflict, StoreError, StoreResult};
use crate::audit::NewAuditEvent;

/// An application under test.
#[derive(Debug, Clone)]
pub struct ApplicationRow {
    /// Id (UUID).
    pub id: String,
    /// Unique name (case-insensitive).
    pub name: String,
    /// Base URL of the app under test.
    pub base_url: String,
    /// Source repository URL.
    pub repo_url: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Updated (RFC 3339).
    pub updated_at: String,
}

const APP_COLS: &str = "id, name, base_url, repo_url, created_at, updated_at";

fn app_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApplicationRow> {
    Ok(ApplicationRow {
        id: r.get(0)?,
        name: r.get(1)?,
        base_url: r.get(2)?,
        repo_url: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

/// Insert an application if the tenant has fewer than `max` (None = unlimited) — checked in the
/// same `BEGIN IMMEDIATE` transaction. Over the limit → `Conflict("plan_limit")`.
pub fn insert_application(
    c: &mut Connection,
    a: &ApplicationRow,
    max: Option<u32>,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if let Some(max) = max {
        let n: i64 = tx.query_row("SELECT count(*) FROM applications", [], |r| r.get(0))?;
        if n >= i64::from(max) {
            return Err(StoreError::Conflict(Conflict::PlanLimit));
        }
    }
    tx.execute(
        &format!("INSERT INTO applications ({APP_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            a.id,
            a.name,
            a.base_url,
            a.repo_url,
            a.created_at,
            a.updated_at
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// List applications by name.
pub fn list_applications(c: &Connection) -> StoreResult<Vec<ApplicationRow>> {
    let mut s = c.prepare(&format!(
        "SELECT {APP_COLS} FROM applications ORDER BY name"
    ))?;
    let rows = s.query_map([], app_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One application.
pub fn application(c: &Connection, id: &str) -> StoreResult<Option<ApplicationRow>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {APP_COLS} FROM applications WHERE id = ?1"
    ))?
    .query_row([id], app_from_row)
    .optional()?)
}

/// Replace an application's fields; audited.
pub fn update_application(
    c: &mut Connection,
    a: &ApplicationRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE applications SET name = ?2, base_url = ?3, repo_url = ?4, updated_at = ?5 WHERE id = ?1",
        params![a.id, a.name, a.base_url, a.repo_url, a.updated_at],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Delete an application (its agent tokens cascade); audited.
///
/// Its runs (with their steps and screenshot rows) go in the same transaction; flows, variables,
/// webhook tokens and agent tokens cascade. Returns the object ids of the deleted screenshots,
/// whose encrypted files the caller removes after the commit.
pub fn delete_application(
    c: &mut Connection,
    id: &str,
    ev: &NewAuditEvent,
) -> StoreResult<Vec<String>> {
    let tx = write_tx(c)?;
    let shots = cascade::delete_runs_in(&tx, "application_id = ?1", id)?.screenshots;
    let n = tx.execute("DELETE FROM applications WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(shots)
}
