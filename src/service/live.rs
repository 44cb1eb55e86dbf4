//! Live run pages (issue 22): the bound on concurrent Server-Sent-Event streams per caller.
//! The streams wake on [`changed`] (called by the services that change runs) and then read the
//! same read functions as
//! `GET /runs/{run}` and `GET /applications/{app}/runs`, so they show exactly what the caller
//! may read.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{AppState, TenantCtx};
use crate::domain::TenantId;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// Most event streams one caller (tenant + principal) may hold open at once.
pub const MAX_STREAMS_PER_CALLER: usize = 6;

/// Open streams per caller, and the change notifications the streams wait on.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<String, usize>>,
    changes: Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
}

/// Tell the live streams of `tenant` that a run of it changed (queued, claimed, a step
/// reported, a screenshot stored, completed, cancelled, timed out). Cheap when nobody watches.
pub fn changed(state: &AppState, tenant: &TenantId) {
    if let Some(tx) = state.live.changes.lock().get(tenant.as_str()) {
        tx.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A receiver that wakes on every [`changed`] of `tenant` (streams still poll slowly, as a
/// safety net for changes made by other processes).
pub fn watch(state: &AppState, tenant: &TenantId) -> tokio::sync::watch::Receiver<u64> {
    state
        .live
        .changes
        .lock()
        .entry(tenant.as_str().to_string())
        .or_insert_with(|| tokio::sync::watch::channel(0).0)
        .subscribe()
}

/// One open stream; dropping it frees the slot.
pub struct Slot {
    streams: Arc<AppState>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.streams.live.open.lock();
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Take a stream slot for `ctx`'s caller; 429 `rate_limited` (Retry-After 5 s) beyond
/// [`MAX_STREAMS_PER_CALLER`].
pub fn open(state: &Arc<AppState>, ctx: &TenantCtx) -> ApiResult<Slot> {
    let key = format!("{}\u{0}{}", ctx.tenant, ctx.actor_name());
    let mut m = state.live.open.lock();
    let n = m.entry(key.clone()).or_insert(0);
    if *n >= MAX_STREAMS_PER_CALLER {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("at most {MAX_STREAMS_PER_CALLER} live event streams at once; close one"),
        )
        .retry_after(5));
    }
    *n += 1;
    Ok(Slot {
        streams: state.clone(),
        key,
    })
}
