//! Audit chain verification and the streamed export (see [`crate::audit::export`] for the
//! format). Rows are read in pages of [`PAGE_ROWS`] by ascending `seq` — the store lock is held
//! for one page at a time — and handed to the response through a bounded channel, so memory does
//! not grow with the number of rows and a slow reader slows the producer (backpressure). The
//! export is a snapshot: rows appended after it started (including its own `audit.export` row)
//! are not in it.

use std::sync::Arc;

use futures_util::Stream;
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::{AppState, TenantCtx};
use crate::audit::export::{ExportWriter, Format, Profile};
use crate::audit::{verify_chain, Actor, BadRow, ChainState, NewAuditEvent};
use crate::domain::plan::FEATURE_AUDIT_EXPORT;
use crate::domain::TenantId;
use crate::error::ApiResult;
use crate::store::{audit, catalog, StoreError, StoreResult};

/// Rows per store page.
pub const PAGE_ROWS: u32 = 500;
/// Chunks buffered between the producer and the response.
const CHANNEL_CHUNKS: usize = 8;

/// Which chain: one tenant's, or the catalog's.
#[derive(Debug, Clone)]
pub enum Chain {
    /// A tenant audit trail.
    Tenant(TenantId),
    /// The catalog audit trail (PlatformAdmin).
    Catalog,
}

impl Chain {
    /// Run `f` on the chain's store connection (off the executor).
    pub async fn run<F, R>(&self, state: &AppState, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut crate::store::Conn) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Chain::Tenant(t) => state.tenants.run(t, f).await,
            Chain::Catalog => state.catalog.run(f).await,
        }
    }

    /// The chain's store connection (blocking: may open a tenant store). Call from a blocking
    /// thread only.
    fn db_blocking(&self, state: &AppState) -> StoreResult<crate::store::Db> {
        match self {
            Chain::Tenant(t) => state.tenants.get_blocking(t),
            Chain::Catalog => Ok(state.catalog.db().clone()),
        }
    }

    async fn append(&self, state: &AppState, ev: NewAuditEvent) -> StoreResult<()> {
        match self {
            Chain::Tenant(t) => {
                state
                    .tenants
                    .run(t, move |c| audit::append_audit(c, &ev))
                    .await
            }
            Chain::Catalog => {
                state
                    .catalog
                    .run(move |c| catalog::append_audit(c, &ev))
                    .await
            }
        }
    }
}

/// Result of `GET /api/v1/audit/verify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyReport {
    /// True when every row links to the previous one and matches its hash.
    pub ok: bool,
    /// Rows checked.
    pub rows: u64,
    /// Hash of the last row (the chain head).
    pub last_hash: Option<String>,
    /// The first bad row, if any.
    pub first_bad: Option<BadRow>,
}

/// Walk a whole chain in pages and name the first bad row.
pub async fn verify(state: &AppState, chain: &Chain) -> ApiResult<VerifyReport> {
    let (max, anchor) = chain
        .run(state, |c| Ok((audit::max_seq(c)?, audit::anchor(c)?)))
        .await?;
    let mut st = ChainState {
        last_hash: anchor.map(|a| a.1),
        ..Default::default()
    };
    let mut after = 0i64;
    loop {
        let page = chain
            .run(state, move |c| {
                audit::page_asc(c, None, None, after, max, 2000)
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            verify_chain(&mut st, r);
        }
    }
    Ok(VerifyReport {
        ok: st.first_bad.is_none(),
        rows: st.rows,
        last_hash: st.last_hash,
        first_bad: st.first_bad,
    })
}

/// A validated export request.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Inclusive lower bound (UTC, normalised).
    pub from: Option<String>,
    /// Exclusive upper bound.
    pub to: Option<String>,
    /// Format.
    pub format: Format,
    /// CSV profile (`None` for NDJSON).
    pub profile: Profile,
}

/// 403 `feature_not_licensed` unless the chain's owner has `audit.export`: the tenant's
/// entitlements, or for the catalog the deployment's license in force.
pub async fn require_export_feature(state: &Arc<AppState>, chain: &Chain) -> ApiResult<()> {
    match chain {
        Chain::Tenant(t) => super::license::require_feature(state, t, FEATURE_AUDIT_EXPORT).await,
        Chain::Catalog => {
            let ok = state
                .license
                .in_force(super::unix_now())
                .is_some_and(|l| l.features.iter().any(|f| f == FEATURE_AUDIT_EXPORT));
            if ok {
                Ok(())
            } else {
                Err(super::license::feature_not_licensed(FEATURE_AUDIT_EXPORT))
            }
        }
    }
}

/// Start an export: records `audit.export` in the chain (after fixing the snapshot bound, so the
/// row is not part of this export) and returns the body stream. The stream ends with the signed
/// trailer, or with an error (no trailer, connection aborted) if reading fails mid-way.
pub async fn export(
    state: &Arc<AppState>,
    actor: &Actor,
    chain: Chain,
    req: ExportRequest,
) -> ApiResult<impl Stream<Item = Result<Vec<u8>, ExportAborted>>> {
    let max = chain.run(state, |c| audit::max_seq(c)).await?;
    let ev = NewAuditEvent::new(actor, "audit.export", Some("audit".to_string())).details(
        serde_json::json!({
            "format": req.format,
            "profile": req.profile.as_str(),
            "from": req.from,
            "to": req.to,
            "up_to_seq": max,
        }),
    );
    chain.append(state, ev).await?;

    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, String>>(CHANNEL_CHUNKS);
    let st = state.clone();
    // One blocking producer reads a page (holding the store lock for that page only), formats
    // and hashes it, and hands the chunk over; the response side encrypts and sends meanwhile,
    // so reading and TLS overlap on two cores (issue 12 P3). `blocking_send` waits while the
    // channel is full: a slow client slows the producer.
    let produce = move || {
        let fail = |e: String| -> Result<Vec<u8>, String> {
            tracing::error!(error = %e, "audit export aborted mid-stream; no trailer written");
            Err(e)
        };
        let mut w = ExportWriter::new(req.format, req.profile, req.from.clone(), req.to.clone());
        match w.header() {
            Ok(h) if !h.is_empty() => {
                if tx.blocking_send(Ok(h)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.blocking_send(fail(e.to_string()));
                return;
            }
        }
        let mut after = 0i64;
        loop {
            let page: Result<_, StoreError> = chain.db_blocking(&st).and_then(|db| {
                let c = db.lock();
                audit::page_asc_export(
                    &c,
                    req.from.as_deref(),
                    req.to.as_deref(),
                    after,
                    max,
                    PAGE_ROWS,
                )
            });
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.blocking_send(fail(e.to_string()));
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            let mut chunk = Vec::with_capacity(page.len() * 512);
            for r in &page {
                if injected_fault(w.count()) {
                    // Deliver what was produced, then fail like a broken cursor would.
                    let _ = tx.blocking_send(Ok(chunk));
                    let _ = tx.blocking_send(fail("injected fault".into()));
                    return;
                }
                if let Err(e) = w.row_into(r, &mut chunk) {
                    let _ = tx.blocking_send(fail(e.to_string()));
                    return;
                }
            }
            if tx.blocking_send(Ok(chunk)).is_err() {
                return; // client went away
            }
        }
        // Pages were read in separate short transactions; still, the WAL grew while the export
        // ran: truncate it now (best effort).
        if let Ok(db) = chain.db_blocking(&st) {
            let c = db.lock();
            if let Err(e) = crate::store::checkpoint_truncate(&c) {
                tracing::warn!(error = %e, "WAL checkpoint after the audit export failed");
            }
        }
        let out = match w.finish(&st.audit_signer) {
            Ok(b) => Ok(b),
            Err(e) => fail(e.to_string()),
        };
        let _ = tx.blocking_send(out);
    };
    // The producer starts on the body's second poll: the first one answers "not ready", so the
    // server flushes the status line and headers before any row exists — a failure in the first
    // rows still reaches the client as `200` + a body that ends without the trailer.
    let start: Option<Box<dyn FnOnce() + Send>> = Some(Box::new(produce));
    Ok(futures_util::stream::unfold(
        (start, rx),
        |(mut start, mut rx)| async move {
            if let Some(p) = start.take() {
                tokio::task::yield_now().await;
                tokio::task::spawn_blocking(p);
            }
            rx.recv().await.map(|item| {
                // An error ends the body without the final chunk: the client sees truncation.
                let item = item.map_err(|_| ExportAborted);
                (item, (start, rx))
            })
        },
    ))
}

/// An export stream ended early (the cause is logged); the body ends without its trailer.
#[derive(Debug, thiserror::Error)]
#[error("audit export aborted")]
pub struct ExportAborted;

/// The audit chain of the caller's tenant.
pub fn tenant_chain(ctx: &TenantCtx) -> Chain {
    Chain::Tenant(ctx.tenant.clone())
}

/// Test builds only (`test-faults`): fail the export once `rows` rows were written when
/// `FG_TEST_FAULT_EXPORT_AFTER_ROWS` says so.
#[cfg(feature = "test-faults")]
fn injected_fault(rows: u64) -> bool {
    std::env::var("FG_TEST_FAULT_EXPORT_AFTER_ROWS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| rows >= n)
}

#[cfg(not(feature = "test-faults"))]
fn injected_fault(_rows: u64) -> bool {
    false
}
