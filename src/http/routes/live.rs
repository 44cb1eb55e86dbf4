//! Live run pages over Server-Sent Events (issue 22; WHATWG HTML "Server-sent events").
//!
//! * `GET /api/v1/runs/{run}/events`: `status` (the run, as `GET /runs/{run}` shows it, without
//!   steps), `step` (one step result, in index order, whenever it changes) and `screenshot`
//!   (`{"index": n}` once a step's screenshot is stored). The first events describe the run as
//!   it is; the stream ends after the final `status` (`passed|failed|cancelled|error`).
//! * `GET /api/v1/applications/{app}/runs/events`: `run` (a run of the newest page, as in the
//!   list) whenever one appears or changes; ends after 30 minutes (`EventSource` reconnects).
//!
//! Same permission as reading the run (`RunRead`); at most
//! [`crate::service::live::MAX_STREAMS_PER_CALLER`] streams per caller (429 beyond). The
//! streams wake when a service changes a run of the tenant ([`live::changed`]), then read the
//! read services; a slow safety poll (2 s / 5 s) catches changes made by another process. A
//! comment line every 15 s keeps proxies from closing the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{get, web, HttpResponse};
use serde::Serialize;

use super::runs::{Run, StepResult};
use crate::error::{ApiError, ErrorCode};
use crate::http::extract::{perm, Require};
use crate::service::live::{self, Slot};
use crate::service::runs as svc;
use crate::service::{AppState, TenantCtx};

/// Longest wait for a change notification before reading anyway (safety poll).
const RUN_TICK: Duration = Duration::from_secs(2);
const LIST_TICK: Duration = Duration::from_secs(5);
const KEEPALIVE: Duration = Duration::from_secs(15);
const MAX_LIST_STREAM: Duration = Duration::from_secs(30 * 60);
/// A run stream also ends after this long (a run cannot run longer than its heartbeats allow).
const MAX_RUN_STREAM: Duration = Duration::from_secs(6 * 60 * 60);

fn event(out: &mut String, seq: &mut u64, name: &str, data: &impl Serialize) {
    *seq += 1;
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    out.push_str(&format!("id: {seq}\nevent: {name}\ndata: {json}\n\n"));
}

fn sse(
    stream: impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Content-Type", "text/event-stream"))
        .insert_header(("Cache-Control", "no-cache, no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

/// Wait until a run of the tenant changes, at most `max`.
async fn wait_change(rx: &mut tokio::sync::watch::Receiver<u64>, max: Duration) {
    match tokio::time::timeout(max, rx.changed()).await {
        Ok(Ok(())) | Err(_) => {}
        // No sender any more (never happens: senders live as long as the state): plain poll.
        Ok(Err(_)) => tokio::time::sleep(max).await,
    }
}

fn finished(status: &str) -> bool {
    !matches!(status, "queued" | "running")
}

struct RunWatch {
    state: Arc<AppState>,
    ctx: TenantCtx,
    run: String,
    changes: tokio::sync::watch::Receiver<u64>,
    _slot: Slot,
    seq: u64,
    status: Option<String>,
    steps: HashMap<i64, (String, Option<String>, bool)>,
    first: bool,
    done: bool,
    since: Instant,
    quiet: Instant,
}

impl RunWatch {
    /// One poll: the events since the last one, or `Err` when the run is gone.
    async fn poll(&mut self) -> Result<String, ApiError> {
        let d = svc::get(&self.state, &self.ctx, &self.run).await?;
        let mut out = String::new();
        let mut steps = d.steps;
        steps.sort_by_key(|s| s.index);
        for s in steps {
            let key = (s.status.clone(), s.reported_at.clone(), s.has_screenshot);
            let prev = self.steps.get(&s.index).cloned();
            if prev.as_ref() == Some(&key) {
                continue;
            }
            let shot_new = s.has_screenshot && !prev.as_ref().is_some_and(|p| p.2);
            let index = s.index;
            self.steps.insert(index, key);
            event(&mut out, &mut self.seq, "step", &StepResult::from(s));
            if shot_new {
                event(
                    &mut out,
                    &mut self.seq,
                    "screenshot",
                    &serde_json::json!({ "index": index }),
                );
            }
        }
        let status = d.run.status.clone();
        if self.status.as_deref() != Some(status.as_str()) {
            self.status = Some(status.clone());
            event(&mut out, &mut self.seq, "status", &Run::from(d.run));
        }
        if finished(&status) {
            self.done = true;
        }
        Ok(out)
    }
}

/// Live events of one run (status changes, step results, screenshot ready); ends with the run.
#[utoipa::path(tag = "runs", params(("run" = String, Path)), responses((status = 200, description = "text/event-stream: `status`, `step`, `screenshot` events"), (status = 404, body = crate::http::problem::Problem), (status = 429, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/runs/{run}/events")]
pub async fn run_events(
    state: web::Data<AppState>,
    g: Require<perm::RunRead>,
    run: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    // Not found (or another tenant's run) answers 404 before the stream starts.
    svc::get(&state, &g.ctx, &run).await?;
    let slot = live::open(&state, &g.ctx)?;
    let changes = live::watch(&state, &g.ctx.tenant);
    let w = RunWatch {
        state,
        ctx: g.ctx.clone(),
        run: run.into_inner(),
        changes,
        _slot: slot,
        seq: 0,
        status: None,
        steps: HashMap::new(),
        first: true,
        done: false,
        since: Instant::now(),
        quiet: Instant::now(),
    };
    let s = futures_util::stream::unfold(w, |mut w| async move {
        if w.done || w.since.elapsed() > MAX_RUN_STREAM {
            return None;
        }
        loop {
            if !w.first {
                wait_change(&mut w.changes, RUN_TICK).await;
            }
            w.first = false;
            match w.poll().await {
                Ok(text) if !text.is_empty() => {
                    w.quiet = Instant::now();
                    return Some((Ok(Bytes::from(text)), w));
                }
                Ok(_) if w.quiet.elapsed() > KEEPALIVE => {
                    w.quiet = Instant::now();
                    return Some((Ok(Bytes::from_static(b": keepalive\n\n")), w));
                }
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::NotFound => return None,
                Err(_) => {} // busy store: try again next tick
            }
        }
    });
    Ok(sse(s))
}

struct ListWatch {
    state: Arc<AppState>,
    ctx: TenantCtx,
    app: String,
    changes: tokio::sync::watch::Receiver<u64>,
    _slot: Slot,
    seq: u64,
    seen: HashMap<String, (String, Option<String>, Option<String>)>,
    first: bool,
    since: Instant,
    quiet: Instant,
}

/// Live changes of an application's newest runs (`run` events); ends after 30 minutes.
#[utoipa::path(tag = "runs", params(("app" = String, Path)), responses((status = 200, description = "text/event-stream: `run` events"), (status = 404, body = crate::http::problem::Problem), (status = 429, body = crate::http::problem::Problem)), security(("session" = [])))]
#[get("/applications/{app}/runs/events")]
pub async fn app_run_events(
    state: web::Data<AppState>,
    g: Require<perm::RunRead>,
    app: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    svc::list(&state, &g.ctx, &app, None, None, 1, Default::default()).await?;
    let slot = live::open(&state, &g.ctx)?;
    let changes = live::watch(&state, &g.ctx.tenant);
    let w = ListWatch {
        state,
        ctx: g.ctx.clone(),
        app: app.into_inner(),
        changes,
        _slot: slot,
        seq: 0,
        seen: HashMap::new(),
        first: true,
        since: Instant::now(),
        quiet: Instant::now(),
    };
    let s = futures_util::stream::unfold(w, |mut w| async move {
        loop {
            if w.since.elapsed() > MAX_LIST_STREAM {
                return None;
            }
            if !w.first {
                wait_change(&mut w.changes, LIST_TICK).await;
            }
            w.first = false;
            let Ok((rows, _)) =
                svc::list(&w.state, &w.ctx, &w.app, None, None, 50, Default::default()).await
            else {
                continue;
            };
            let mut out = String::new();
            // Oldest first, so a client applying events in order ends with the newest on top.
            for r in rows.into_iter().rev() {
                let key = (
                    r.status.clone(),
                    r.started_at.clone(),
                    r.finished_at.clone(),
                );
                if w.seen.get(&r.id) == Some(&key) {
                    continue;
                }
                w.seen.insert(r.id.clone(), key);
                event(&mut out, &mut w.seq, "run", &Run::from(r));
            }
            if !out.is_empty() {
                w.quiet = Instant::now();
                return Some((Ok::<_, actix_web::Error>(Bytes::from(out)), w));
            }
            if w.quiet.elapsed() > KEEPALIVE {
                w.quiet = Instant::now();
                return Some((Ok(Bytes::from_static(b": keepalive\n\n")), w));
            }
        }
    });
    Ok(sse(s))
}
