//! Failpoints for crash tests (debug and test builds only; compiled to nothing in release).
//!
//! `FLOWGUARD_FAULT=name[,name…]` makes [`point`]`(name)` kill the process with SIGKILL at that
//! instant — no destructors, no flushes, like a power cut for the process — so a test can prove
//! that a multi-step operation (key rotation, master key rotation) survives a crash between any
//! two of its steps. Names are `<operation>:<boundary>`, e.g. `rotation:after_rekey`; see
//! `service::keys` for the list.
//!
//! `FLOWGUARD_FAULT_PAUSE=name=ms[,name=ms…]` makes [`pause`]`(name)` sleep that long instead,
//! widening a race window so a test can hit it (`sealing:before_write`, see
//! `service::sealing`).

/// Stop the process here with SIGKILL when `FLOWGUARD_FAULT` names `name` (debug builds only).
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("FLOWGUARD_FAULT").is_ok_and(|v| v.split(',').any(|p| p.trim() == name)) {
        eprintln!("flowguard: failpoint {name} reached: SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Sleep here for the milliseconds `FLOWGUARD_FAULT_PAUSE` gives `name` (`name=ms`, comma
/// separated; debug builds only). Blocks the thread: call it only off the async executor.
pub fn pause(name: &str) {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("FLOWGUARD_FAULT_PAUSE") {
        let ms = v
            .split(',')
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| n.trim() == name)
            .and_then(|(_, ms)| ms.trim().parse::<u64>().ok());
        if let Some(ms) = ms {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Seconds `FLOWGUARD_FAULT_CLOCK` adds to the clock at `name` (`name=secs`, comma separated,
/// may be negative; debug builds only, else 0): lets a test age a short-lived value (the
/// OpenID Connect sign-in state, `oidc:callback`) without waiting.
pub fn clock_offset(name: &str) -> i64 {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("FLOWGUARD_FAULT_CLOCK") {
        return v
            .split(',')
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| n.trim() == name)
            .and_then(|(_, s)| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
    0
}

/// Whether `FLOWGUARD_FAULT_<var>` (comma separated file names) names the store file `path`.
#[cfg(feature = "test-faults")]
fn names_store(var: &str, path: &std::path::Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().to_string();
    let v = std::env::var(var).ok()?;
    v.split(',')
        .map(str::trim)
        .find(|p| p.split('=').next() == Some(name.as_str()))
        .map(str::to_string)
}

/// Test builds only (`test-faults`): when `FLOWGUARD_FAULT_MIGRATION` names the store file of
/// `path` (e.g. `catalog.db`, `<tenant_id>.db`), the migration about to run on `conn` fails at
/// its very end: every step runs, then writing the new `user_version` is refused (an
/// authorizer denies it), so the whole migration transaction rolls back.
/// [`fail_migration_done`] removes the authorizer.
pub fn fail_migration(conn: &rusqlite::Connection, path: &std::path::Path) {
    #[cfg(feature = "test-faults")]
    if names_store("FLOWGUARD_FAULT_MIGRATION", path).is_some() {
        use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
        conn.authorizer(Some(|ctx: AuthContext<'_>| match ctx.action {
            AuthAction::Pragma {
                pragma_name,
                pragma_value: Some(_),
            } if pragma_name.eq_ignore_ascii_case("user_version") => Authorization::Deny,
            _ => Authorization::Allow,
        }));
    }
    #[cfg(not(feature = "test-faults"))]
    let _ = (conn, path);
}

/// Remove what [`fail_migration`] installed (test builds only).
pub fn fail_migration_done(conn: &rusqlite::Connection) {
    #[cfg(feature = "test-faults")]
    conn.authorizer(None::<fn(rusqlite::hooks::AuthContext<'_>) -> rusqlite::hooks::Authorization>);
    #[cfg(not(feature = "test-faults"))]
    let _ = conn;
}

/// Test builds only (`test-faults`): `FLOWGUARD_FAULT_SCHEMA_VERSION=<file>=<n>` writes schema
/// version `n` into that store file when it is opened, before the version check — how a test
/// makes a store look as if a newer flowguard had written it.
pub fn set_schema_version(conn: &rusqlite::Connection, path: &std::path::Path) {
    #[cfg(feature = "test-faults")]
    if let Some(v) = names_store("FLOWGUARD_FAULT_SCHEMA_VERSION", path)
        .and_then(|p| p.split_once('=').and_then(|(_, n)| n.parse::<i64>().ok()))
    {
        let _ = conn.pragma_update(None, "user_version", v);
    }
    #[cfg(not(feature = "test-faults"))]
    let _ = (conn, path);
}

/// The flag file of `FLOWGUARD_FAULT_DISK_FULL` (test builds only).
#[cfg(feature = "test-faults")]
fn disk_full_flag() -> Option<std::path::PathBuf> {
    std::env::var_os("FLOWGUARD_FAULT_DISK_FULL").map(std::path::PathBuf::from)
}

/// SQLite's extended result code of a commit turned into a rollback by a commit hook
/// (`SQLITE_CONSTRAINT_COMMITHOOK`, <https://www.sqlite.org/rescode.html#constraint_commithook>).
#[cfg(feature = "test-faults")]
const CONSTRAINT_COMMITHOOK: std::os::raw::c_int = 531;

/// Test builds only (`test-faults`): a full data volume without root (the tmpfs test needs
/// root). When `FLOWGUARD_FAULT_DISK_FULL=<flag file>` is set at start, every write
/// transaction on `conn` fails at its commit **while that file exists** (a commit hook turns the
/// commit into a rollback, so nothing of it is kept), and [`is_injected_disk_full`] makes the
/// store layer report it as `SQLITE_FULL` (`StoreError::Full`, 507 `insufficient_storage`).
/// Removing the file lets writes through again on the same connection, without a restart.
/// Compiled to nothing in other builds.
pub fn disk_full_hook(conn: &rusqlite::Connection) {
    #[cfg(feature = "test-faults")]
    if let Some(flag) = disk_full_flag() {
        conn.commit_hook(Some(move || flag.exists()));
    }
    #[cfg(not(feature = "test-faults"))]
    let _ = conn;
}

/// Whether a SQLite failure with extended code `extended` is a commit refused by
/// [`disk_full_hook`] (test builds with `FLOWGUARD_FAULT_DISK_FULL` set only; else `false`).
pub fn is_injected_disk_full(extended: std::os::raw::c_int) -> bool {
    #[cfg(feature = "test-faults")]
    if disk_full_flag().is_some() {
        return extended == CONSTRAINT_COMMITHOOK;
    }
    let _ = extended;
    false
}

/// Test builds only (`test-faults`): `Err(ENOSPC)` while the `FLOWGUARD_FAULT_DISK_FULL` flag
/// file exists — called where the appliance writes a file of its own (a screenshot), after the
/// temporary file was created, so the cleanup of a failed write runs too. `Ok` otherwise.
pub fn disk_full_io() -> std::io::Result<()> {
    #[cfg(feature = "test-faults")]
    if disk_full_flag().is_some_and(|f| f.exists()) {
        return Err(std::io::Error::from_raw_os_error(
            rustix::io::Errno::NOSPC.raw_os_error(),
        ));
    }
    Ok(())
}
