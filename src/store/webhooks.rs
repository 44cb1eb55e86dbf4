//! Tenant-store SQL for webhook trigger tokens: table `webhook_tokens` (digest and visible prefix,
//! never the secret), each bound to a live flow.

use rusqlite::{params, Connection, OptionalExtension};

use super::{audit, write_tx, StoreError, StoreResult};
use crate::audit::NewAuditEvent;
use crate::domain::now_rfc3339;

/// A webhook trigger token (never the secret).
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// Id.
    pub id: String,
    /// Flow it triggers.
    pub flow_id: String,
    /// Label.
    pub name: String,
    /// Visible prefix.
    pub prefix: String,
    /// Created.
    pub created_at: String,
    /// Creator.
    pub created_by: String,
    /// Revoked at.
    pub revoked_at: Option<String>,
}

/// Insert a webhook token for a live flow; audited.
pub fn insert_webhook(
    c: &mut Connection,
    w: &WebhookRow,
    hash: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let live: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM flows WHERE id = ?1 AND deleted_at IS NULL)",
        [&w.flow_id],
        |r| r.get(0),
    )?;
    if !live {
        return Err(StoreError::NotFound);
    }
    tx.execute(
        "INSERT INTO webhook_tokens (id, flow_id, name, token_hash, prefix, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![w.id, w.flow_id, w.name, hash, w.prefix, w.created_at, w.created_by],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Webhook tokens of a flow.
pub fn webhooks(c: &Connection, flow: &str) -> StoreResult<Vec<WebhookRow>> {
    let mut s = c.prepare("SELECT id, flow_id, name, prefix, created_at, created_by, revoked_at FROM webhook_tokens WHERE flow_id = ?1 ORDER BY created_at DESC")?;
    let rows = s.query_map([flow], |r| {
        Ok(WebhookRow {
            id: r.get(0)?,
            flow_id: r.get(1)?,
            name: r.get(2)?,
            prefix: r.get(3)?,
            created_at: r.get(4)?,
            created_by: r.get(5)?,
            revoked_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revoke a webhook token of a flow; audited.
pub fn revoke_webhook(
    c: &mut Connection,
    flow: &str,
    id: &str,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    let n = tx.execute(
        "UPDATE webhook_tokens SET revoked_at = ?3 WHERE id = ?1 AND flow_id = ?2 AND revoked_at IS NULL",
        params![id, flow, now_rfc3339()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// The flow of an active webhook token.
pub fn webhook_flow(c: &Connection, hash: &str) -> StoreResult<Option<(String, String)>> {
    Ok(c.query_row(
        "SELECT w.id, w.flow_id FROM webhook_tokens w JOIN flows f ON f.id = w.flow_id
         WHERE w.token_hash = ?1 AND w.revoked_at IS NULL AND f.deleted_at IS NULL",
        [hash],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}
