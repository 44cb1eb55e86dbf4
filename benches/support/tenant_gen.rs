//! Tenant-store generation shared by the benches (`cost_growth`, `backup_speed`): an
//! application with a 25-step flow ([`seed`]) and runs written through the library exactly as
//! the services write them ([`add_runs`]), with their audit rows (a verifiable chain).
//! Included with `#[path = "support/tenant_gen.rs"] mod tenant_gen;`.

use flowguard::audit::{Actor, NewAuditEvent};
use flowguard::store::applications::{self, ApplicationRow};
use flowguard::store::flows::{self, NewVersion};
use flowguard::store::runs::{self, StepReportRow};
use rusqlite::Connection;
use serde_json::{json, Value};

pub const APP: &str = "app-bench";
pub const FLOW: &str = "flow-bench";
pub const STEPS: i64 = 25;

pub fn actor() -> Actor {
    Actor {
        email: Some("bench".into()),
        role: Some("operator".into()),
        client_ip: None,
        user_agent: None,
    }
}

/// Application + a 25-step flow in a fresh tenant-schema store.
pub fn seed(conn: &mut Connection) -> anyhow::Result<()> {
    let actor = actor();
    let now = flowguard::domain::now_rfc3339();
    applications::insert_application(
        conn,
        &ApplicationRow {
            id: APP.into(),
            name: "bench".into(),
            base_url: "https://bench.example".into(),
            repo_url: None,
            created_at: now.clone(),
            updated_at: now,
        },
        None,
        &NewAuditEvent::new(&actor, "application.create", None),
    )?;
    let mut steps = vec![json!({"type": "navigate", "url": "/"})];
    for i in 1..STEPS {
        steps.push(json!({"type": "click", "selector": format!("#button-{i}")}));
    }
    flows::insert_flow(
        conn,
        FLOW,
        APP,
        &NewVersion {
            name: "bench",
            tags: "[]",
            source: "manual",
            steps: &Value::Array(steps).to_string(),
            created_by: "bench",
        },
        &NewAuditEvent::new(&actor, "flow.create", None),
    )?;
    Ok(())
}

pub fn report(i: i64) -> StepReportRow {
    StepReportRow {
        index: i,
        status: "passed".into(),
        duration_ms: Some(40 + i),
        error: None,
        console: Some(json!([
            {"level": "info", "text": "GET https://bench.example/ 200 in 83 ms"},
            {"level": "warning", "text": "Deprecation: synchronous XMLHttpRequest on the main thread"},
            {"level": "info", "text": "app booted; user=[REDACTED]; feature flags: a,b,c,d"}
        ])),
        network: Some(json!({"requests": 17, "failed": 0, "bytes": 482_133})),
    }
}

pub fn decide(r: &runs::StepRow) -> (String, Option<String>) {
    (r.reported_status.clone().unwrap_or_default(), None)
}

pub fn run_id(n: u64) -> String {
    format!("run-{n:010}")
}

/// Grow the store by `n` runs (queue, claim, 25 reports, complete; audited like the services).
pub fn add_runs(conn: &mut Connection, from: u64, n: u64) -> anyhow::Result<()> {
    let actor = actor();
    for k in from..from + n {
        let id = run_id(k);
        let target = Some(format!("run:{id}"));
        runs::queue_run(
            conn,
            &id,
            FLOW,
            "manual",
            "bench",
            Some(&NewAuditEvent::new(&actor, "run.trigger", target.clone())),
        )?;
        runs::claim_run_id(conn, APP, &id, "tok-bench", 0)?;
        for i in 0..STEPS {
            runs::record_step_report(conn, &id, &report(i), &decide)?;
        }
        let to = if k % 10 == 3 { "failed" } else { "passed" };
        runs::transition(
            conn,
            &id,
            &["running"],
            to,
            None,
            None,
            Some(&NewAuditEvent::new(&actor, "run.complete", target)),
        )?;
    }
    Ok(())
}

pub fn generation_pragmas(c: &Connection) -> anyhow::Result<()> {
    c.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -65536;")?;
    Ok(())
}
