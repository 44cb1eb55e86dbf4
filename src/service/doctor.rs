//! `flowguard doctor` (issue 19): the health of a data dir, server running or not. Each check
//! that fails becomes a [`Finding`] saying what is wrong and what to do; the command exits 1
//! when there is any.
//!
//! Checks: every store opens with a key the catalog holds and passes SQLCipher's
//! `cipher_integrity_check` and SQLite's `integrity_check`; every sealed value of every column
//! in [`sealing::SEALED_COLUMNS`] and every screenshot file decrypts (counted per table and
//! column, after GitLab's `gitlab:doctor:secrets`); the WAL size of every store; free disk
//! against `store.min_free_mib` and the size of the data; the license state; clock sanity (now
//! is not earlier than the newest audit row).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{sealing, AppState};
use crate::domain::TenantId;
use crate::store::{backup as snap, fence};

/// One problem and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Which check (`store`, `sealed`, `disk`, `license`, `clock`).
    pub check: String,
    /// The store or resource concerned.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

/// Health of one store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreHealth {
    /// `catalog` or the tenant id.
    pub name: String,
    /// Whether it opened with its key.
    pub opens: bool,
    /// Integrity check problems (empty: clean).
    pub integrity: Vec<String>,
    /// Size of its `-wal` file in bytes (0 when none).
    pub wal_bytes: u64,
    /// Sealed values checked per `table.column` (screenshot files as `screenshots.file`).
    pub sealed_checked: BTreeMap<String, u64>,
    /// Sealed values that do **not** decrypt per `table.column`.
    pub sealed_undecryptable: BTreeMap<String, u64>,
}

/// The doctor's report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No findings.
    pub ok: bool,
    /// Per store.
    pub stores: Vec<StoreHealth>,
    /// Bytes under the data dir.
    pub data_bytes: u64,
    /// Free bytes on the data dir's volume (for unprivileged users).
    pub free_bytes: u64,
    /// License status (`none`, `active`, `expired`, …).
    pub license: String,
    /// Newest audit row seen (RFC 3339), if any.
    pub newest_audit_row: Option<String>,
    /// Everything that is wrong.
    pub findings: Vec<Finding>,
    /// The embedded runner as `serve` would start it (filled by [`add_runner`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerHealth>,
}

/// Whether the embedded runner of `serve` can run flows on this host, as the user running the
/// doctor (run it as the service user: `sudo -u flowguard flowguard doctor`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunnerHealth {
    /// `runner.embedded_workers` is above 0.
    pub enabled: bool,
    /// Configured workers.
    pub workers: usize,
    /// The Chromium executable found, if any.
    pub chromium: Option<String>,
    /// `chromium --version` output, if it ran.
    pub chromium_version: Option<String>,
    /// Chromium's sandbox can start for the browser user.
    pub sandbox: bool,
    /// Why the sandbox cannot start (when it cannot).
    pub sandbox_problem: Option<String>,
    /// `runner.allow_no_sandbox` is on.
    pub allow_no_sandbox: bool,
    /// Size of `/dev/shm` in bytes (None when it is not mounted).
    pub shm_bytes: Option<u64>,
    /// Paths hidden from the browser by its own mount namespace (non-root `serve`).
    pub hidden: Vec<String>,
    /// Warnings `serve` logs at start and shows in `GET /api/v1/runners`.
    pub warnings: Vec<String>,
    /// The runner is enabled and can start browsers.
    pub can_run: bool,
    /// Why it cannot (when enabled and it cannot).
    pub problem: Option<String>,
}

/// Add the runner's health to `report`: a finding (so exit 1) when the runner is enabled but
/// cannot run flows.
pub fn add_runner(report: &mut Report, h: RunnerHealth) {
    if h.enabled && !h.can_run {
        report.findings.push(Finding {
            check: "runner".into(),
            subject: "embedded runner".into(),
            problem: h
                .problem
                .clone()
                .unwrap_or_else(|| "the embedded runner cannot start browsers".into()),
            fix: "install Chromium (`apt install chromium` / `dnf install chromium`) or set runner.chromium; allow unprivileged user namespaces for the service user; or set runner.embedded_workers = 0 and run `flowguard agent run` elsewhere".into(),
        });
        report.ok = false;
    }
    report.runner = Some(h);
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => dir_bytes(&p),
                Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => 0,
            }
        })
        .sum()
}

const WAL_WARN_BYTES: u64 = 256 << 20;

fn tenant_health(state: &AppState, t: &TenantId, findings: &mut Vec<Finding>) -> StoreHealth {
    let path = state.tenants.path_of(t);
    let mut h = StoreHealth {
        name: t.to_string(),
        opens: false,
        integrity: Vec::new(),
        wal_bytes: crate::store::wal_bytes(&path),
        sealed_checked: BTreeMap::new(),
        sealed_undecryptable: BTreeMap::new(),
    };
    let read = state.tenants.for_pass(t, |db| {
        let c = db.lock();
        let integrity = snap::integrity_problems(&c)?;
        let mut cells = Vec::new();
        for col in sealing::SEALED_COLUMNS {
            cells.push((col, fence::sealed_cells(&c, &col.column)?));
        }
        Ok((integrity, cells, snap::screenshot_ids(&c)?))
    });
    let (integrity, cells, shots) = match read {
        Ok(r) => r,
        Err(e) => {
            findings.push(Finding {
                check: "store".into(),
                subject: format!("tenant {t}"),
                problem: format!("the store does not open: {e}"),
                fix: "check the master key file and `flowguard keys status --tenant`; if the file is damaged, restore the tenant from a backup (`flowguard restore`)".into(),
            });
            return h;
        }
    };
    h.opens = true;
    if !integrity.is_empty() {
        findings.push(Finding {
            check: "store".into(),
            subject: format!("tenant {t}"),
            problem: integrity.join("; "),
            fix: "stop the server and restore this tenant from the newest backup that `flowguard backup verify` accepts".into(),
        });
    }
    h.integrity = integrity;
    for (col, rows) in cells {
        let name = col.name();
        let mut bad = 0u64;
        for (key, ct) in &rows {
            let k: Vec<&str> = key.iter().map(String::as_str).collect();
            if sealing::open(state, t, col, &k, ct).is_err() {
                bad += 1;
            }
        }
        h.sealed_checked.insert(name.clone(), rows.len() as u64);
        if bad > 0 {
            findings.push(Finding {
                check: "sealed".into(),
                subject: format!("tenant {t} {name}"),
                problem: format!("{bad} of {} sealed values do not decrypt", rows.len()),
                fix: "the key set that sealed them is missing or the master key is not the one they were written under: restore the data dir with its own master key, or set these values again (secret variables: PUT them again)".into(),
            });
            h.sealed_undecryptable.insert(name, bad);
        }
    }
    let mut bad = 0u64;
    for id in &shots {
        match super::screenshots::decrypt_blocking(state, t, id) {
            Ok(Some(_)) => {}
            _ => bad += 1,
        }
    }
    h.sealed_checked
        .insert("screenshots.file".into(), shots.len() as u64);
    if bad > 0 {
        findings.push(Finding {
            check: "sealed".into(),
            subject: format!("tenant {t} screenshots.file"),
            problem: format!("{bad} of {} screenshot files are missing or do not decrypt", shots.len()),
            fix: "restore the screenshots directory of this tenant from a backup made with the same master key".into(),
        });
        h.sealed_undecryptable
            .insert("screenshots.file".into(), bad);
    }
    if h.wal_bytes > WAL_WARN_BYTES {
        findings.push(Finding {
            check: "wal".into(),
            subject: format!("tenant {t}"),
            problem: format!("write-ahead log is {} bytes", h.wal_bytes),
            fix: "a long reader keeps it from being checkpointed: finish or stop long exports/backups; it is truncated at the next checkpoint".into(),
        });
    }
    h
}

/// Examine the data dir behind `state` (blocking). `now` is the current Unix time.
pub fn examine_blocking(state: &AppState, now: i64) -> Report {
    let mut findings = Vec::new();
    let mut stores = Vec::new();
    let s = &state.settings;
    // Catalog.
    let cat_integrity = state
        .catalog
        .blocking(|c| snap::integrity_problems(c))
        .unwrap_or_else(|e| vec![e.to_string()]);
    if !cat_integrity.is_empty() {
        findings.push(Finding {
            check: "store".into(),
            subject: "catalog".into(),
            problem: cat_integrity.join("; "),
            fix: "stop the server and restore the data dir from the newest backup that `flowguard backup verify` accepts".into(),
        });
    }
    stores.push(StoreHealth {
        name: "catalog".into(),
        opens: true,
        integrity: cat_integrity,
        wal_bytes: crate::store::wal_bytes(state.catalog.path()),
        sealed_checked: BTreeMap::new(),
        sealed_undecryptable: BTreeMap::new(),
    });
    let mut newest = state
        .catalog
        .blocking(|c| crate::store::audit::newest_ts(c))
        .ok()
        .flatten();
    let tenants = super::host::list_tenants(&state.catalog).unwrap_or_default();
    for row in &tenants {
        stores.push(tenant_health(state, &row.id, &mut findings));
        if let Ok(Some(ts)) = state
            .tenants
            .for_pass(&row.id, |db| crate::store::audit::newest_ts(&db.lock()))
        {
            if newest.as_ref().is_none_or(|n| ts > *n) {
                newest = Some(ts);
            }
        }
    }
    // Disk.
    let data_bytes = dir_bytes(&s.data_dir);
    let free_bytes = rustix::fs::statvfs(&s.data_dir)
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
        .unwrap_or(0);
    let min_free = s.store.min_free_mib.saturating_mul(1 << 20);
    if free_bytes < min_free || free_bytes < data_bytes {
        findings.push(Finding {
            check: "disk".into(),
            subject: s.data_dir.display().to_string(),
            problem: format!(
                "{free_bytes} bytes free, below {} (store.min_free_mib) or the {data_bytes} bytes of data",
                min_free
            ),
            fix: "free space or grow the volume: writes fail with 507 insufficient_storage when it is full, and a backup or pre-migration copy needs room".into(),
        });
    }
    // License.
    let license = match super::license::load_at_start(state, false) {
        Ok(()) if s.license_path().exists() && !state.license.has_installed() => {
            // The server refuses this file and silently runs with Free limits (or does not
            // start with `license.required`); say so (review 3, F16).
            let why = std::fs::read_to_string(s.license_path())
                .map_err(|e| e.kind().to_string())
                .and_then(|t| {
                    crate::crypto::license::verify_signature(&t)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .err()
                .unwrap_or_else(|| "not in force".into());
            findings.push(Finding {
                check: "license".into(),
                subject: s.license_path().display().to_string(),
                problem: format!(
                    "the license file is refused ({why}): tenants run with Free limits, and `serve` does not start when license.required is set"
                ),
                fix: "install a valid license file (`flowguard license install FILE`) or remove the damaged one".into(),
            });
            "invalid".into()
        }
        Ok(()) => {
            let v = super::license::view(state);
            let status = serde_json::to_value(v.status)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            if matches!(
                v.status,
                super::license::LicenseStatus::Expired | super::license::LicenseStatus::Revoked
            ) {
                findings.push(Finding {
                    check: "license".into(),
                    subject: s.license_path().display().to_string(),
                    problem: format!(
                        "the installed license is {status}: tenants run with Free limits"
                    ),
                    fix: "install a current license (`flowguard license install FILE`)".into(),
                });
            }
            status
        }
        Err(e) => {
            findings.push(Finding {
                check: "license".into(),
                subject: s.license_path().display().to_string(),
                problem: format!("{e:#}"),
                fix: "install a valid license file (`flowguard license install FILE`) or remove the damaged one".into(),
            });
            "invalid".into()
        }
    };
    // Clock.
    if let Some(ts) = &newest {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
            if t.timestamp() > now + 60 {
                findings.push(Finding {
                    check: "clock".into(),
                    subject: "system clock".into(),
                    problem: format!("now is earlier than the newest audit row ({ts})"),
                    fix: "fix the system clock (NTP): timestamps, expiries and signed URLs depend on it".into(),
                });
            }
        }
    }
    Report {
        ok: findings.is_empty(),
        stores,
        data_bytes,
        free_bytes,
        license,
        newest_audit_row: newest,
        findings,
        runner: None,
    }
}
