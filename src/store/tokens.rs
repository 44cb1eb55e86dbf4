//! Tenant-store SQL for service tokens: table `service_tokens` (agent tokens scoped to an
//! application, SCIM tokens); only digests and visible prefixes are stored.

use rusqlite::{params, Connection, OptionalExtension};

use super::{audit, write_tx, StoreError, StoreResult};
use crate::audit::NewAuditEvent;

/// An agent or SCIM token (never the secret itself).
#[derive(Debug, Clone)]
pub struct ServiceTokenRow {
    /// Id (UUID).
    pub id: String,
    /// `agent` or `scim`.
    pub kind: String,
    /// Application an agent token is scoped to.
    pub application_id: Option<String>,
    /// Label.
    pub name: String,
    /// Visible prefix, e.g. `fga_eus-7k2m9q_AbC…` (first chars only).
    pub prefix: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Creator email.
    pub created_by: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
    /// SHA-256 of the token; never serialised.
    pub token_hash: String,
}

const TOKEN_COLS: &str =
    "id, kind, application_id, name, prefix, created_at, created_by, revoked_at, token_hash";

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceTokenRow> {
    Ok(ServiceTokenRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        application_id: r.get(2)?,
        name: r.get(3)?,
        prefix: r.get(4)?,
        created_at: r.get(5)?,
        created_by: r.get(6)?,
        revoked_at: r.get(7)?,
        token_hash: r.get(8)?,
    })
}

/// Insert a token; audited. An agent token's application must exist (else NotFound).
pub fn insert_token(
    c: &mut Connection,
    t: &ServiceTokenRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if let Some(app) = &t.application_id {
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM applications WHERE id = ?1)",
            [app],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(StoreError::NotFound);
        }
    }
    tx.execute(
        &format!(
            "INSERT INTO service_tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ),
        params![
            t.id,
            t.kind,
            t.application_id,
            t.name,
            t.prefix,
            t.created_at,
            t.created_by,
            t.revoked_at,
            t.token_hash
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Tokens of one kind, newest first.
pub fn list_tokens(c: &Connection, kind: &str) -> StoreResult<Vec<ServiceTokenRow>> {
    let mut s = c.prepare(&format!(
        "SELECT {TOKEN_COLS} FROM service_tokens WHERE kind = ?1 ORDER BY created_at DESC"
    ))?;
    let rows = s.query_map([kind], token_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An unrevoked token by digest.
pub fn active_token_by_hash(c: &Connection, hash: &str) -> StoreResult<Option<ServiceTokenRow>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TOKEN_COLS} FROM service_tokens WHERE token_hash = ?1 AND revoked_at IS NULL"
    ))?
    .query_row([hash], token_from_row)
    .optional()?)
}

/// Revoke a token of `kind`; audited. Unknown or already revoked → NotFound.
pub fn revoke_token(
    c: &mut Connection,
    id: &str,
    kind: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE service_tokens SET revoked_at = ?3 WHERE id = ?1 AND kind = ?2 AND revoked_at IS NULL",
        params![id, kind, crate::domain::now_rfc3339()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}
