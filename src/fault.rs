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
