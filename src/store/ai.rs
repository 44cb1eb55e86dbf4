//! Tenant-store SQL for the tenant's own AI endpoint (one row, `id = 1`). The API key is held
//! only as an envelope ciphertext (sealed by the service under the tenant DEK); storing it checks
//! the DEK fence ([`super::fence::check_sealed_fence`]) in the same transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::{audit, fence, write_tx, StoreResult};
use crate::audit::NewAuditEvent;

/// The tenant's AI endpoint as stored.
#[derive(Debug, Clone)]
pub struct AiEndpointRow {
    /// `openai-chat` or `anthropic-messages`.
    pub kind: String,
    /// `https://` base URL.
    pub base_url: String,
    /// Model.
    pub model: String,
    /// Envelope ciphertext of the API key (AAD: tenant, `ai_endpoint`, `1`, `api_key`).
    pub api_key: Option<Vec<u8>>,
    /// PEM CA bundle.
    pub ca_pem: Option<String>,
    /// Timeout in ms.
    pub timeout_ms: i64,
    /// Max tokens.
    pub max_tokens: i64,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Who changed it.
    pub updated_by: String,
}

/// The tenant's endpoint, if it set one.
pub fn ai_endpoint(c: &Connection) -> StoreResult<Option<AiEndpointRow>> {
    Ok(c.prepare_cached(
        "SELECT kind, base_url, model, api_key, ca_pem, timeout_ms, max_tokens, updated_at, updated_by
           FROM ai_endpoint WHERE id = 1",
    )?
    .query_row(
        [],
        |r| {
            Ok(AiEndpointRow {
                kind: r.get(0)?,
                base_url: r.get(1)?,
                model: r.get(2)?,
                api_key: r.get(3)?,
                ca_pem: r.get(4)?,
                timeout_ms: r.get(5)?,
                max_tokens: r.get(6)?,
                updated_at: r.get(7)?,
                updated_by: r.get(8)?,
            })
        },
    )
    .optional()?)
}

/// Replace the tenant's endpoint; audited in the same transaction. An API key sealed under a
/// DEK version below the rotation fence → `Conflict::KeyRotated` (seal it again under the
/// current DEK and retry; `service::sealing::write_sealed` does).
pub fn put_ai_endpoint(
    c: &mut Connection,
    e: &AiEndpointRow,
    ev: &NewAuditEvent,
) -> StoreResult<()> {
    let tx = write_tx(c)?;
    if let Some(ct) = &e.api_key {
        fence::check_sealed_fence(&tx, ct)?;
    }
    tx.execute(
        "INSERT INTO ai_endpoint (id, kind, base_url, model, api_key, ca_pem, timeout_ms, max_tokens, updated_at, updated_by)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET kind = ?1, base_url = ?2, model = ?3, api_key = ?4, ca_pem = ?5,
             timeout_ms = ?6, max_tokens = ?7, updated_at = ?8, updated_by = ?9",
        params![
            e.kind,
            e.base_url,
            e.model,
            e.api_key,
            e.ca_pem,
            e.timeout_ms,
            e.max_tokens,
            e.updated_at,
            e.updated_by
        ],
    )?;
    audit::append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// Remove the tenant's endpoint; audited only when one existed. Returns whether it existed.
pub fn delete_ai_endpoint(c: &mut Connection, ev: &NewAuditEvent) -> StoreResult<bool> {
    let tx = write_tx(c)?;
    let n = tx.execute("DELETE FROM ai_endpoint WHERE id = 1", [])?;
    if n == 1 {
        audit::append(&tx, ev)?;
    }
    tx.commit()?;
    Ok(n == 1)
}
