//! Tenant-store SQL for application variables: table `variables` (plain values, and secret values
//! only as envelope ciphertexts). Storing a secret checks the DEK fence
//! ([`super::fence::check_sealed_fence`]) in the same transaction.

use rusqlite::{params, Connection};

use super::{audit, fence, write_tx, StoreError, StoreResult};
use crate::audit::NewAuditEvent;

/// A variable as stored (secret values only as ciphertext).
#[derive(Debug, Clone)]
pub struct VariableRow {
    /// Name.
    pub name: String,
    /// Secret?
    pub secret: bool,
    /// Plain value.
    pub value: Option<String>,
    /// Envelope ciphertext of a secret value.
    pub ciphertext: Option<Vec<u8>>,
    /// Updated (RFC 3339).
    pub updated_at: String,
}

/// Upsert a variable of an existing application; audited. A secret sealed under a DEK version
/// below the rotation fence → `Conflict("key_rotated")` (re-seal with the current DEK and retry).
pub fn put_variable(
    c: &mut Connection,
    app: &str,
    v: &VariableRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM applications WHERE id = ?1)",
        [app],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(StoreError::NotFound);
    }
    if let Some(ct) = &v.ciphertext {
        fence::check_sealed_fence(&tx, ct)?;
    }
    tx.execute(
        "INSERT INTO variables (application_id, name, secret, value, ciphertext, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (application_id, name) DO UPDATE SET secret = ?3, value = ?4, ciphertext = ?5, updated_at = ?6",
        params![app, v.name, v.secret, v.value, v.ciphertext, v.updated_at],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Variables of an application by name.
pub fn variables(c: &Connection, app: &str) -> StoreResult<Vec<VariableRow>> {
    let mut s = c.prepare_cached("SELECT name, secret, value, ciphertext, updated_at FROM variables WHERE application_id = ?1 ORDER BY name")?;
    let rows = s.query_map([app], |r| {
        Ok(VariableRow {
            name: r.get(0)?,
            secret: r.get(1)?,
            value: r.get(2)?,
            ciphertext: r.get(3)?,
            updated_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Delete a variable; audited.
pub fn delete_variable(
    c: &mut Connection,
    app: &str,
    name: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if tx.execute(
        "DELETE FROM variables WHERE application_id = ?1 AND name = ?2",
        params![app, name],
    )? == 0
    {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}
