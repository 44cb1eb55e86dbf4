//! One headless Chromium per run, driven over the DevTools protocol (chromiumoxide, tokio, no
//! browser download): started by [`Launcher`] in its own process group, as an unprivileged user
//! when we are root, with its sandbox (never `--no-sandbox` unless explicitly allowed), a fresh
//! profile in a private temp dir (removed afterwards), `--headless=new`, no background
//! networking, no first-run UI, no GPU, HTTPS errors respected. Console errors and failed requests are collected per step from CDP
//! events (`Runtime.consoleAPICalled`, `Runtime.exceptionThrown`, `Log.entryAdded`,
//! `Network.*`), which also feed the network-idle wait.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network::{
    EventLoadingFailed, EventLoadingFinished, EventRequestWillBeSent, EventResponseReceived,
};
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, NavigateParams, Viewport as Clip,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EvaluateParams, EventConsoleApiCalled, EventExceptionThrown, RemoteObject,
};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::layout::Point;
use chromiumoxide::{Browser, Page};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// Viewport width in CSS pixels.
pub const VIEWPORT_WIDTH: u32 = 1280;
/// Viewport height in CSS pixels.
pub const VIEWPORT_HEIGHT: u32 = 720;
/// Longest a navigation (`navigate` step) may take.
pub const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Most console or network entries kept per step (the count is still exact).
const MAX_ENTRIES: usize = 20;
/// Longest text kept per console entry or URL.
const MAX_TEXT: usize = 500;

/// Chromium flags besides headless/sandbox/profile (chromiumoxide's defaults are switched off
/// so this list is the whole story).
///
/// What no flag stops: before each host resolution (cached for 1 s, also for IP literals)
/// Chromium's resolver checks whether IPv6 is reachable by `connect()`ing a UDP socket to
/// `[2001:4860:4860::8888]:443`, reading its local address and closing it. A UDP `connect()`
/// sends no packet; the zero-egress test proves from the trace that nothing is ever sent on that
/// socket.
const FLAGS: &[&str] = &[
    "disable-background-networking",
    "no-first-run",
    "no-default-browser-check",
    "disable-gpu",
    "disable-sync",
    "disable-default-apps",
    "disable-component-update",
    "disable-domain-reliability",
    "disable-breakpad",
    "disable-client-side-phishing-detection",
    "disable-hang-monitor",
    "disable-popup-blocking",
    "disable-prompt-on-repost",
    "disable-background-timer-throttling",
    "disable-backgrounding-occluded-windows",
    "disable-renderer-backgrounding",
    "disable-dev-shm-usage",
    "metrics-recording-only",
    "use-mock-keychain",
    // Chromium's own calls to Google services that the flags above do not stop: each was seen
    // in the zero-egress trace (tests/api/egress_proof.rs, issue 24 item 12; DNS query names
    // decoded from the trace, the requests named from Chromium's net log) and is gone with its
    // flag. Chromium refuses port 9 (ERR_UNSAFE_PORT) before opening any connection,
    // so "http://127.0.0.1:9/" is a server that is never contacted.
    // - NetworkTimeServiceQuerying: the network-time tracker's GET
    //   http://clients2.google.com/time/1/current.
    // - AutofillServerCommunication: the autofill field-type query to
    //   content-autofill.googleapis.com for every page with a form field.
    "disable-features=NetworkTimeServiceQuerying,AutofillServerCommunication",
    // - An on-demand component update check (the "Optimization Guide On Device Models Manifest",
    //   app id ceofaddefefcbblgcgnibnonglccbfja) at https://update.googleapis.com, which
    //   `disable-component-update` does not cover: the updater's server is the refused port.
    "component-updater=url-source=http://127.0.0.1:9/",
    // - The account reconcilor: POST https://accounts.google.com/ListAccounts. Chromium's
    //   sign-in origin (Gaia) becomes the refused port; pages of accounts.google.com still load
    //   as any other site, only Chromium's own account features lose their server.
    "gaia-url=http://127.0.0.1:9/",
];

/// Whether the process runs as root (then the browser runs as `runner.browser_user`).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Find Chromium: `--chromium PATH`, else `chromium`, `chromium-browser`, `google-chrome`,
/// `google-chrome-stable` on `PATH`. Never downloads anything.
pub fn find_chromium(explicit: Option<&Path>) -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            anyhow::bail!("--chromium {} is not a file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join(name);
            if cand.is_file() {
                return Ok(cand);
            }
        }
    }
    anyhow::bail!(
        "no Chromium found on PATH (install the `chromium` package or pass --chromium PATH)"
    )
}

/// One console error.
#[derive(Debug, Clone, serde::Serialize)]
struct ConsoleEntry {
    /// `console`, `exception` or `log`.
    source: &'static str,
    text: String,
}

/// One failed request.
#[derive(Debug, Clone, serde::Serialize)]
struct NetEntry {
    method: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Events of the current step plus the in-flight request set.
#[derive(Default)]
struct Events {
    console: Vec<ConsoleEntry>,
    console_count: usize,
    network: Vec<NetEntry>,
    network_count: usize,
    requests: HashMap<String, (String, String)>,
    inflight: HashSet<String>,
    /// Requests that got their response, finished or failed. Each event type arrives on its own stream, so a
    /// `loadingFinished` can be seen before its `requestWillBeSent`; this keeps such a request
    /// from counting as in flight forever.
    done: HashSet<String>,
    last_activity: Option<Instant>,
}

impl Events {
    fn console(&mut self, source: &'static str, text: String) {
        self.console_count += 1;
        if self.console.len() < MAX_ENTRIES {
            self.console.push(ConsoleEntry {
                source,
                text: cut(&text, MAX_TEXT),
            });
        }
    }

    fn failed(&mut self, e: NetEntry) {
        self.network_count += 1;
        if self.network.len() < MAX_ENTRIES {
            self.network.push(e);
        }
    }
}

/// Per-step console and network summary (`{error_count, errors:[{source,text}]}` and
/// `{failed_count, failed:[{method,url,status|error}]}`).
pub struct StepEvents {
    /// Console summary.
    pub console: serde_json::Value,
    /// Network summary.
    pub network: serde_json::Value,
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

fn remote_text(o: &RemoteObject) -> String {
    match (&o.value, &o.description) {
        (Some(serde_json::Value::String(s)), _) => s.clone(),
        (Some(v), _) => v.to_string(),
        (None, Some(d)) => d.clone(),
        (None, None) => format!("{:?}", o.r#type),
    }
}

/// What to capture.
#[derive(Debug, Clone, Copy)]
pub enum Capture {
    /// The viewport.
    Viewport,
    /// The whole document (`width`×`height` CSS pixels from the top left).
    FullPage {
        /// Document width.
        width: f64,
        /// Document height.
        height: f64,
    },
    /// A rectangle of the document, in CSS pixels.
    Region {
        /// Left (document coordinates).
        x: f64,
        /// Top (document coordinates).
        y: f64,
        /// Width.
        width: f64,
        /// Height.
        height: f64,
    },
}

/// How the browser is started: which Chromium, as which user, with or without its sandbox.
///
/// * **User.** When FlowGuard runs as root, Chromium runs as `browser_user` (default `nobody`),
///   so it cannot open the data dir or the master key (both are root-only, mode 0700/0600). As
///   any other user (the packaged systemd unit runs `serve` as `flowguard`), Chromium keeps that
///   user but starts in its own user + mount namespace in which the paths given to
///   [`Launcher::prepare`] (data dir, master key, license, backups, TLS files) are covered by an
///   empty tmpfs or `/dev/null`, and `serve` is made non-dumpable so `/proc/<serve>/root` does
///   not lead back to them.
/// * **Sandbox.** Chromium's sandbox needs unprivileged user namespaces (or its setuid helper).
///   [`Launcher::prepare`] probes them as the browser user; when they are missing the launcher
///   refuses to start browsers unless `allow_no_sandbox` is set, which passes `--no-sandbox`
///   and is reported by [`Launcher::warnings`] (logged at every start, shown in the dashboard).
/// * **Processes.** Each browser is the leader of its own process group; closing a session (or a
///   crash, a timeout, a cancel, [`Launcher::kill_all`] at shutdown) kills the whole group with
///   `SIGKILL` and reaps every member that was re-parented to this process (as PID 1 in a
///   container, orphans become ours). The browser gets `SIGKILL` if the thread that started it
///   dies (`PR_SET_PDEATHSIG`), and it sees no environment variable of ours (no token leaks).
/// * **Profile.** A fresh profile directory per session, owned by the browser user, removed on
///   close.
#[derive(Debug)]
pub struct Launcher {
    chromium: std::path::PathBuf,
    /// `(uid, gid)` to switch to before exec (only when running as root).
    ids: Option<(u32, u32)>,
    /// Namespaces hiding the data dir (only when not root).
    iso: Option<Isolation>,
    no_sandbox: bool,
    /// Pass `--js-flags=--jitless` (W+X memory is denied).
    jitless: bool,
    /// Why the sandbox probe failed (then `no_sandbox`).
    sandbox_problem: Option<String>,
    profile_root: std::path::PathBuf,
    warnings: Vec<String>,
    live: Arc<Mutex<HashSet<i32>>>,
}

/// Smallest `/dev/shm` (bytes) Chromium is comfortable with; below it tabs crash under load.
pub const MIN_SHM_BYTES: u64 = 64 * 1024 * 1024;

/// Size of `/dev/shm` in bytes (None when it is not mounted).
pub fn shm_size() -> Option<u64> {
    let c = std::ffi::CString::new("/dev/shm").ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let (blocks, frsize): (u64, u64) = (st.f_blocks, st.f_frsize);
    Some(blocks.saturating_mul(frsize))
}

/// Whether this process may not map writable + executable memory (systemd's
/// `MemoryDenyWriteExecute=yes`, inherited by every child). Chromium's JavaScript JIT needs such
/// memory, so the browser then runs JavaScript interpreted (`--js-flags=--jitless`).
pub fn write_execute_denied() -> bool {
    // SAFETY: an anonymous private mapping we unmap at once; no memory of ours is touched.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return true;
        }
        libc::munmap(p, 4096);
    }
    false
}

/// `(uid, gid)` of a user name from the password database.
pub fn lookup_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let c = std::ffi::CString::new(name).context("user name contains NUL")?;
    // SAFETY: getpwnam returns NULL or a pointer to static storage valid until the next call;
    // we copy the two ids out immediately.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        anyhow::bail!("user `{name}` does not exist (create it, or set runner.browser_user)");
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Drop to `ids` (when given) in a forked child before exec; async-signal-safe calls only.
fn drop_privileges(ids: Option<(u32, u32)>, parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: plain syscalls in the forked child; no allocation, no locks.
    unsafe {
        if let Some((uid, gid)) = ids {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        // After the uid change: a credential change clears the parent-death signal.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // The parent died before the signal was armed: do not start an orphan.
        if libc::getppid() != parent {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// This process's id, for [`drop_privileges`]'s parent check.
fn my_pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// First argument of the `flowguard` binary's helper mode that starts an isolated browser
/// (see [`exec_helper`]); not a subcommand users see.
pub const EXEC_HELPER: &str = "__browser-exec";

/// How a browser started by a non-root `serve` is kept away from the appliance's files: a new
/// user namespace (mapping only our own uid and gid) with a new mount namespace in which every
/// hidden directory is covered by an empty read-only tmpfs and every hidden file by `/dev/null`.
/// The browser keeps our (unprivileged) uid, so it gets no capability outside; Chromium's own
/// sandbox nests its user/pid/net namespaces inside this one.
///
/// The namespaces are entered by a fresh `exec` of our own binary ([`exec_helper`]), not in the
/// forked child of `serve`: `serve` is non-dumpable (so the browser, which has our uid, cannot
/// open `/proc/<serve>/root` or its memory), a fork of it is too, and a non-dumpable process
/// cannot write its own `/proc/self/uid_map`; making the fork dumpable would expose a copy of
/// `serve`'s memory (keys included) until `exec`. The helper's memory holds no secret.
#[derive(Debug, Clone)]
struct Isolation {
    /// Paths to cover, with whether each is a directory (outer directories first).
    hide: Vec<(std::path::PathBuf, bool)>,
}

impl Isolation {
    /// The isolation for the given paths (missing ones are skipped; a path inside another
    /// hidden directory is covered by it). Errors when the profile root or Chromium itself would
    /// be hidden.
    fn new(
        hide: &[std::path::PathBuf],
        profile_root: &Path,
        chromium: &Path,
    ) -> anyhow::Result<Self> {
        let mut paths: Vec<(std::path::PathBuf, bool)> = Vec::new();
        for p in hide {
            let Ok(c) = std::fs::canonicalize(p) else {
                continue;
            };
            if c == Path::new("/") {
                anyhow::bail!(
                    "cannot hide `/` from the browser ({} resolves to it)",
                    p.display()
                );
            }
            let dir = c.is_dir();
            if !paths.iter().any(|(q, _)| q == &c) {
                paths.push((c, dir));
            }
        }
        // Outer directories first; drop what an outer hidden directory already covers.
        paths.sort_by_key(|(p, _)| p.components().count());
        let mut kept: Vec<(std::path::PathBuf, bool)> = Vec::new();
        for (p, dir) in paths {
            if !kept.iter().any(|(q, qd)| *qd && p.starts_with(q)) {
                kept.push((p, dir));
            }
        }
        let root = std::fs::canonicalize(profile_root).unwrap_or_else(|_| profile_root.into());
        let exe = std::fs::canonicalize(chromium).unwrap_or_else(|_| chromium.into());
        for (p, dir) in &kept {
            if *dir && (root.starts_with(p) || exe.starts_with(p)) {
                anyhow::bail!(
                    "the browser's profile dir ({}) or Chromium ({}) lies inside {}, which the browser must not see; set TMPDIR / runner.chromium elsewhere",
                    root.display(),
                    exe.display(),
                    p.display()
                );
            }
        }
        Ok(Self { hide: kept })
    }

    /// `std::process::Command` for `program args…` started through the helper:
    /// `/proc/self/exe __browser-exec [--nested] (--dir P | --file P)… -- program args…`.
    fn command(
        &self,
        nested: bool,
        program: &Path,
    ) -> (std::path::PathBuf, Vec<std::ffi::OsString>) {
        let mut args: Vec<std::ffi::OsString> = vec![EXEC_HELPER.into()];
        if nested {
            args.push("--nested".into());
        }
        for (p, dir) in &self.hide {
            args.push(if *dir { "--dir" } else { "--file" }.into());
            args.push(p.into());
        }
        args.push("--".into());
        args.push(program.into());
        ("/proc/self/exe".into(), args)
    }
}

/// Write `data` to a `/proc/self` file.
fn write_proc(path: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// `mount(2)`.
fn mount(
    src: &std::ffi::CStr,
    target: &Path,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let t = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: every pointer is a NUL-terminated string we own, or NULL where mount(2) allows it.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            fstype.map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!("cannot cover {}: {e}", target.display()),
        ));
    }
    Ok(())
}

/// Enter a new user + mount namespace and cover the hidden paths. The capabilities this needs
/// exist only inside the new user namespace and are dropped by the `exec` that follows (our uid
/// is not 0 there).
fn isolate(hide: &[(std::path::PathBuf, bool)]) -> std::io::Result<()> {
    // SAFETY: getuid/getgid cannot fail; unshare only changes this (single-threaded) process.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!("cannot create a user + mount namespace: {e}"),
        ));
    }
    write_proc("/proc/self/setgroups", b"deny")?;
    write_proc("/proc/self/uid_map", format!("{uid} {uid} 1\n").as_bytes())?;
    write_proc("/proc/self/gid_map", format!("{gid} {gid} 1\n").as_bytes())?;
    // Nothing mounted here propagates back to the host.
    mount(
        c"none",
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    for (p, dir) in hide {
        if *dir {
            mount(
                c"tmpfs",
                p,
                Some(c"tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"size=4k,nr_inodes=1,mode=0500"),
            )?;
        } else {
            mount(c"/dev/null", p, None, libc::MS_BIND, None)?;
        }
    }
    Ok(())
}

/// The helper mode `flowguard __browser-exec [--nested] (--dir P | --file P)… -- PROGRAM
/// ARGS…` (called by `main` before anything else, so the process is single-threaded): enter the
/// isolation of [`Isolation`], with `--nested` create one more user namespace (the sandbox
/// probe), then `exec` PROGRAM. Returns only on error, after saying why on stderr (exit 126).
pub fn exec_helper(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let mut hide = Vec::new();
    let mut nested = false;
    let mut it = args.iter();
    let mut rest: Vec<&std::ffi::OsString> = Vec::new();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--nested") => nested = true,
            Some("--dir") | Some("--file") => match it.next() {
                Some(p) => hide.push((std::path::PathBuf::from(p), a == "--dir")),
                None => break,
            },
            Some("--") => {
                rest = it.by_ref().collect();
                break;
            }
            _ => break,
        }
    }
    let Some((program, pargs)) = rest.split_first() else {
        eprintln!("{EXEC_HELPER}: usage: {EXEC_HELPER} [--nested] (--dir P|--file P)... -- PROGRAM ARGS...");
        return std::process::ExitCode::from(126);
    };
    if let Err(e) = isolate(&hide) {
        eprintln!("{EXEC_HELPER}: {e}");
        return std::process::ExitCode::from(126);
    }
    // SAFETY: unshare only changes this process.
    if nested && unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        eprintln!(
            "{EXEC_HELPER}: no nested user namespace for Chromium's sandbox: {}",
            std::io::Error::last_os_error()
        );
        return std::process::ExitCode::from(126);
    }
    // Re-armed after the namespace change (a credential change may clear it).
    // SAFETY: prctl only changes this process's parent-death signal.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    let e = std::process::Command::new(program).args(pargs).exec();
    eprintln!(
        "{EXEC_HELPER}: cannot start {}: {e}",
        program.to_string_lossy()
    );
    std::process::ExitCode::from(126)
}

/// Whether Chromium's sandbox can start for a browser launched like [`Launcher::launch`] does
/// (as `ids`, inside `iso`): the probe enters the same namespaces, then (`nested`) creates one
/// more user namespace (what the sandbox needs when its setuid helper is absent) and runs
/// `chromium --version`. `Err` says what failed.
fn sandbox_probe(
    chromium: &Path,
    ids: Option<(u32, u32)>,
    iso: Option<&Isolation>,
    nested: bool,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = match iso {
        Some(iso) => {
            let (prog, args) = iso.command(nested, chromium);
            let mut c = std::process::Command::new(prog);
            c.args(args);
            c
        }
        None => std::process::Command::new(chromium),
    };
    cmd.arg("--version")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .current_dir("/");
    let direct = iso.is_none() && nested;
    let parent = my_pid();
    // SAFETY: the closure only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            drop_privileges(ids, parent)?;
            if direct && libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let why = err
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{EXEC_HELPER}: ")))
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!("`{} --version` failed ({})", chromium.display(), o.status)
                });
            Err(why)
        }
        Err(e) => Err(format!(
            "cannot create a user namespace for the browser user: {e}"
        )),
    }
}

impl Launcher {
    /// Resolve the browser user, probe the sandbox and `/dev/shm`. Errors when the sandbox cannot
    /// start and `allow_no_sandbox` is false, or when the browser user does not exist.
    ///
    /// `hide` lists the files and directories the browser must not see (the data dir, the
    /// master key, …). As root they are protected by the browser user's lack of permission; as
    /// any other user every browser starts in its own user + mount namespace in which they are
    /// covered (see [`Isolation`]), and this process becomes non-dumpable so the browser, which
    /// keeps our uid, cannot reach our files through `/proc/<pid>/root` or our memory.
    pub fn prepare(
        chromium: std::path::PathBuf,
        browser_user: &str,
        allow_no_sandbox: bool,
        hide: &[std::path::PathBuf],
    ) -> anyhow::Result<Self> {
        let ids = if running_as_root() {
            let ids = lookup_user(browser_user)?;
            (ids.0 != 0).then_some(ids)
        } else {
            None
        };
        let profile_root = std::env::temp_dir();
        let mut warnings = Vec::new();
        if running_as_root() && ids.is_none() {
            warnings.push(format!(
                "the browser runs as root (runner.browser_user = `{browser_user}`); it can read the data dir"
            ));
        }
        let mut iso = if !running_as_root() && !hide.is_empty() {
            Some(Isolation::new(hide, &profile_root, &chromium)?)
        } else {
            None
        };
        let probe = sandbox_probe(&chromium, ids, iso.as_ref(), true);
        if let Err(why) = &probe {
            if !allow_no_sandbox {
                anyhow::bail!(
                    "Chromium's sandbox cannot start here ({why}): the browser user needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces; under systemd RestrictNamespaces= must allow user mnt pid net); or set runner.allow_no_sandbox = true to run without it"
                );
            }
            warnings.push(
                "runner.allow_no_sandbox = true: Chromium runs WITHOUT its sandbox (--no-sandbox)"
                    .into(),
            );
            if iso.is_some() && sandbox_probe(&chromium, ids, iso.as_ref(), false).is_err() {
                iso = None;
                warnings.push(
                    "the browser cannot be put in its own mount namespace: it runs as this user and can read the data dir".into(),
                );
            }
        }
        if iso.is_some() {
            // SAFETY: prctl(PR_SET_DUMPABLE) only changes this process's dumpable flag.
            if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
                anyhow::bail!(
                    "cannot make this process non-dumpable: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        let jitless = write_execute_denied();
        if jitless {
            warnings.push(
                "writable+executable memory is denied here (systemd MemoryDenyWriteExecute=yes): Chromium runs JavaScript without its JIT (--js-flags=--jitless: slower, no WebAssembly)".into(),
            );
        }
        if let Some(sz) = shm_size() {
            if sz < MIN_SHM_BYTES {
                warnings.push(format!(
                    "/dev/shm is {} MiB (< 64 MiB); Chromium uses --disable-dev-shm-usage (slower, /tmp instead)",
                    sz / (1024 * 1024)
                ));
            }
        }
        Ok(Self {
            chromium,
            ids,
            iso,
            no_sandbox: probe.is_err(),
            jitless,
            sandbox_problem: probe.err(),
            profile_root,
            warnings,
            live: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The paths hidden from the browser by its own mount namespace (empty when none is used:
    /// as root, or when the isolation is not available).
    pub fn hidden(&self) -> Vec<std::path::PathBuf> {
        self.iso
            .as_ref()
            .map(|i| i.hide.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default()
    }

    /// Why Chromium's sandbox cannot start here (None when it can).
    pub fn sandbox_problem(&self) -> Option<&str> {
        self.sandbox_problem.as_deref()
    }

    /// Warnings to log at start and show (no sandbox, small `/dev/shm`, browser as root).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether browsers run without Chromium's sandbox.
    pub fn no_sandbox(&self) -> bool {
        self.no_sandbox
    }

    /// The Chromium executable.
    pub fn chromium(&self) -> &Path {
        &self.chromium
    }

    /// Kill every browser process group still alive (shutdown).
    pub fn kill_all(&self) {
        let groups: Vec<i32> = self.live.lock().iter().copied().collect();
        for g in groups {
            kill_group(g);
        }
    }

    /// Launch Chromium with a fresh profile and open a blank page.
    pub async fn launch(&self) -> anyhow::Result<Session> {
        use tokio::io::AsyncBufReadExt;
        let profile = tempfile::Builder::new()
            .prefix("flowguard-browser-profile-")
            .tempdir_in(&self.profile_root)
            .context("cannot create a temporary Chromium profile")?;
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(profile.path(), Some(uid), Some(gid))
                .context("cannot hand the profile directory to the browser user")?;
        }
        let mut cmd = match &self.iso {
            Some(iso) => {
                let (prog, args) = iso.command(false, &self.chromium);
                let mut c = tokio::process::Command::new(prog);
                c.args(args);
                c
            }
            None => tokio::process::Command::new(&self.chromium),
        };
        cmd.args(FLAGS.iter().map(|f| format!("--{f}")))
            .arg("--headless=new")
            .arg("--hide-scrollbars")
            .arg("--mute-audio")
            .arg("--disable-extensions")
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={VIEWPORT_WIDTH},{VIEWPORT_HEIGHT}"))
            .arg("--lang=en-US")
            .arg("--force-color-profile=srgb")
            .arg("--password-store=basic");
        if self.no_sandbox {
            cmd.arg("--no-sandbox");
        }
        if self.jitless {
            cmd.arg("--js-flags=--jitless");
        }
        cmd.arg("about:blank")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", profile.path())
            .env("TMPDIR", profile.path())
            .env("LANG", "C.UTF-8")
            .current_dir(profile.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let ids = self.ids;
        let parent = my_pid();
        // SAFETY: the closure only makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || drop_privileges(ids, parent));
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start Chromium ({})", self.chromium.display()))?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        if pid > 0 {
            self.live.lock().insert(pid);
        }
        let guard = Group {
            pid,
            live: self.live.clone(),
        };
        let Some(stderr) = child.stderr.take() else {
            anyhow::bail!("Chromium's stderr is not captured");
        };
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut tail: Vec<String> = Vec::new();
        let ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                    return Some(url.to_string());
                }
                if tail.len() < 20 {
                    tail.push(cut(&line, 300));
                }
            }
            None
        })
        .await;
        let ws = match ws {
            Ok(Some(ws)) => ws,
            Ok(None) => {
                guard.kill_and_reap(&mut child).await;
                anyhow::bail!("Chromium exited during start: {}", tail.join(" | "));
            }
            Err(_) => {
                guard.kill_and_reap(&mut child).await;
                anyhow::bail!("Chromium did not start within 30 s: {}", tail.join(" | "));
            }
        };
        // Keep draining stderr so Chromium never blocks on a full pipe.
        let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let cfg = chromiumoxide::handler::HandlerConfig {
            ignore_https_errors: false,
            viewport: Some(Viewport {
                width: VIEWPORT_WIDTH,
                height: VIEWPORT_HEIGHT,
                device_scale_factor: Some(1.0),
                emulating_mobile: false,
                is_landscape: true,
                has_touch: false,
            }),
            cache_enabled: false,
            ..Default::default()
        };
        let (browser, mut handler) = match Browser::connect_with_config(ws, cfg).await {
            Ok(x) => x,
            Err(e) => {
                drain.abort();
                guard.kill_and_reap(&mut child).await;
                anyhow::bail!("cannot connect to Chromium's DevTools endpoint: {e}");
            }
        };
        let handler = tokio::spawn(async move {
            // Errors here are single undecodable protocol messages; keep serving the page.
            while let Some(_ev) = handler.next().await {}
        });
        let events = Arc::new(Mutex::new(Events::default()));
        let opened = async {
            let page = browser.new_page("about:blank").await?;
            let listeners = listen(&page, &events).await?;
            Ok::<_, chromiumoxide::error::CdpError>((page, listeners))
        }
        .await;
        match opened {
            Ok((page, listeners)) => Ok(Session {
                browser,
                handler,
                listeners,
                page,
                events,
                profile: Some(profile),
                child,
                group: guard,
                drain,
            }),
            Err(e) => {
                handler.abort();
                drain.abort();
                guard.kill_and_reap(&mut child).await;
                Err(anyhow::anyhow!("Chromium did not open a page: {e}"))
            }
        }
    }
}

/// `SIGKILL` to process group `pgid`.
fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Members of process group `pgid` as `(pid, ppid, state)` from `/proc`.
pub fn group_members(pgid: i32) -> Vec<(i32, i32, char)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let state = f[0].chars().next().unwrap_or('?');
        let (Ok(ppid), Ok(pgrp)) = (f[1].parse::<i32>(), f[2].parse::<i32>()) else {
            continue;
        };
        if pgrp == pgid {
            out.push((pid, ppid, state));
        }
    }
    out
}

/// A browser's process group, registered with its launcher while alive.
struct Group {
    pid: i32,
    live: Arc<Mutex<HashSet<i32>>>,
}

impl Group {
    /// Kill the group, reap the leader and every member re-parented to us; wait (≤ 5 s) until
    /// no member is left.
    async fn kill_and_reap(&self, child: &mut tokio::process::Child) {
        kill_group(self.pid);
        let _ = child.kill().await;
        let _ = child.wait().await;
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let deadline = Instant::now() + Duration::from_secs(5);
        if self.pid > 1 {
            loop {
                let members = group_members(self.pid);
                if members.is_empty() || Instant::now() > deadline {
                    break;
                }
                for (pid, ppid, _) in members {
                    kill_group(self.pid);
                    if ppid == me {
                        // An orphan re-parented to us (PID 1 / subreaper): reap exactly it.
                        // SAFETY: waitpid on a specific child pid with WNOHANG.
                        unsafe {
                            libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.live.lock().remove(&self.pid);
    }
}

/// A running Chromium with one page.
pub struct Session {
    browser: Browser,
    handler: JoinHandle<()>,
    listeners: Vec<JoinHandle<()>>,
    page: Page,
    events: Arc<Mutex<Events>>,
    profile: Option<tempfile::TempDir>,
    child: tokio::process::Child,
    group: Group,
    drain: JoinHandle<()>,
}

impl Session {
    /// Process id of the browser (its process group id too).
    pub fn pid(&self) -> i32 {
        self.group.pid
    }

    /// Whether the browser still runs and its DevTools connection is open.
    pub fn alive(&self) -> bool {
        if self.handler.is_finished() {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.group.pid)) {
            Ok(stat) => !stat
                .rfind(')')
                .map(|i| stat[i + 1..].trim_start().starts_with(['Z', 'X']))
                .unwrap_or(true),
            Err(_) => false,
        }
    }

    /// Resolves once the browser process has exited or its DevTools connection closed
    /// (checked every 200 ms), with a sentence saying which.
    pub async fn gone(&self) -> String {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.handler.is_finished() {
                return "the browser's DevTools connection was lost".into();
            }
            if !self.alive() {
                return "the browser process exited (crash or out-of-memory kill)".into();
            }
        }
    }

    /// Close Chromium (`SIGKILL` to its whole process group), reap it and delete the profile.
    pub async fn close(mut self) {
        for l in &self.listeners {
            l.abort();
        }
        // No polite `Browser.close`: the profile is thrown away anyway, and waiting for Chromium
        // to shut down cost ~2 s per run (bench/runner.py); SIGKILL to the group is immediate.
        self.group.kill_and_reap(&mut self.child).await;
        drop(self.browser);
        self.handler.abort();
        self.drain.abort();
        if let Some(p) = self.profile.take() {
            let _ = p.close();
        }
    }

    /// Start attributing console/network events to a new step.
    pub fn begin_step(&self) {
        let mut e = self.events.lock();
        e.console.clear();
        e.console_count = 0;
        e.network.clear();
        e.network_count = 0;
    }

    /// The current step's console and network summaries.
    pub fn take_step(&self) -> StepEvents {
        let e = self.events.lock();
        StepEvents {
            console: serde_json::json!({"error_count": e.console_count, "errors": e.console}),
            network: serde_json::json!({"failed_count": e.network_count, "failed": e.network}),
        }
    }

    /// Requests in flight (method and URL of each), and how long ago the last network
    /// activity was.
    pub fn network_activity(&self) -> (Vec<String>, Option<Duration>) {
        let e = self.events.lock();
        let inflight = e
            .inflight
            .iter()
            .map(|id| match e.requests.get(id) {
                Some((m, u)) => format!("{m} {}", cut(u, 200)),
                None => "unknown request".to_string(),
            })
            .collect();
        (inflight, e.last_activity.map(|t| t.elapsed()))
    }

    /// Evaluate a JavaScript expression in the page's main frame, awaiting promises, and
    /// deserialize its JSON value.
    pub async fn eval<T: DeserializeOwned>(&self, expression: String) -> anyhow::Result<T> {
        let params = EvaluateParams::builder()
            .expression(expression)
            .return_by_value(true)
            .await_promise(true)
            .build()
            .map_err(|e| anyhow::anyhow!("evaluate: {e}"))?;
        let r = self
            .page
            .evaluate_expression(params)
            .await
            .map_err(|e| anyhow::anyhow!("page script failed: {}", cut(&e.to_string(), 300)))?;
        r.into_value::<T>()
            .map_err(|e| anyhow::anyhow!("page script returned an unexpected value: {e}"))
    }

    /// Navigate and wait for the load event (at most [`NAVIGATION_TIMEOUT`]).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        let nav = NavigateParams::builder()
            .url(url)
            .build()
            .map_err(|e| anyhow::anyhow!("navigate: {e}"))?;
        match tokio::time::timeout(NAVIGATION_TIMEOUT, self.page.goto(nav)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(
                "navigation to {url} failed: {}",
                cut(&e.to_string(), 300)
            )),
            Err(_) => Err(anyhow::anyhow!(
                "timeout after {} ms navigating to {url}",
                NAVIGATION_TIMEOUT.as_millis()
            )),
        }
    }

    /// A real mouse click (move, press, release) at viewport coordinates in CSS pixels.
    pub async fn click_at(&self, x: f64, y: f64) -> anyhow::Result<()> {
        self.page
            .click(Point { x, y })
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("click failed: {}", cut(&e.to_string(), 300)))
    }

    /// Insert text into the focused element as if typed (one `input` event).
    pub async fn insert_text(&self, text: &str) -> anyhow::Result<()> {
        self.page
            .execute(InsertTextParams::new(text))
            .await
            .map(|_| ())
            .map_err(|_| anyhow::anyhow!("typing into the field failed"))
    }

    /// Capture a PNG.
    pub async fn capture(&self, what: Capture) -> anyhow::Result<Vec<u8>> {
        let mut p = CaptureScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .from_surface(true);
        match what {
            Capture::Viewport => {}
            Capture::FullPage { width, height } => {
                p = p.capture_beyond_viewport(true).clip(Clip {
                    x: 0.0,
                    y: 0.0,
                    width,
                    height,
                    scale: 1.0,
                });
            }
            Capture::Region {
                x,
                y,
                width,
                height,
            } => {
                p = p.clip(Clip {
                    x,
                    y,
                    width,
                    height,
                    scale: 1.0,
                });
            }
        }
        let r = self
            .page
            .execute(p.build())
            .await
            .map_err(|e| anyhow::anyhow!("screenshot failed: {}", cut(&e.to_string(), 300)))?;
        use base64::Engine as _;
        let data: &str = r.result.data.as_ref();
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| anyhow::anyhow!("screenshot data is not base64"))
    }
}

async fn listen(
    page: &Page,
    events: &Arc<Mutex<Events>>,
) -> chromiumoxide::Result<Vec<JoinHandle<()>>> {
    let mut out = Vec::new();

    let mut s = page.event_listener::<EventRequestWillBeSent>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let mut g = ev.lock();
            let id = e.request_id.inner().clone();
            if !e.request.url.starts_with("data:") && !g.done.contains(&id) {
                g.inflight.insert(id.clone());
            }
            g.requests.insert(
                id,
                (e.request.method.clone(), cut(&e.request.url, MAX_TEXT)),
            );
            g.last_activity = Some(Instant::now());
        }
    }));

    let mut s = page.event_listener::<EventResponseReceived>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let mut g = ev.lock();
            g.last_activity = Some(Instant::now());
            // Headers received: no longer in flight (a body the page never reads, or a stream,
            // would otherwise keep the page from ever being idle).
            let id = e.request_id.inner();
            g.inflight.remove(id);
            g.done.insert(id.clone());
            if e.response.status >= 400 {
                let method = g
                    .requests
                    .get(e.request_id.inner())
                    .map(|r| r.0.clone())
                    .unwrap_or_else(|| "GET".into());
                g.failed(NetEntry {
                    method,
                    url: cut(&e.response.url, MAX_TEXT),
                    status: Some(e.response.status),
                    error: None,
                });
            }
        }
    }));

    let mut s = page.event_listener::<EventLoadingFinished>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let mut g = ev.lock();
            let id = e.request_id.inner();
            g.inflight.remove(id);
            g.requests.remove(id);
            g.done.insert(id.clone());
            g.last_activity = Some(Instant::now());
        }
    }));

    let mut s = page.event_listener::<EventLoadingFailed>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let mut g = ev.lock();
            let id = e.request_id.inner();
            g.inflight.remove(id);
            g.done.insert(id.clone());
            let req = g.requests.remove(id);
            g.last_activity = Some(Instant::now());
            if e.canceled != Some(true) {
                let (method, url) = req.unwrap_or_else(|| ("GET".into(), String::new()));
                g.failed(NetEntry {
                    method,
                    url,
                    status: None,
                    error: Some(cut(&e.error_text, 200)),
                });
            }
        }
    }));

    let mut s = page.event_listener::<EventConsoleApiCalled>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            if matches!(
                e.r#type,
                ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
            ) {
                let text = e.args.iter().map(remote_text).collect::<Vec<_>>().join(" ");
                ev.lock().console("console", text);
            }
        }
    }));

    let mut s = page.event_listener::<EventExceptionThrown>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            let d = &e.exception_details;
            let text = match &d.exception {
                Some(o) => format!("{} {}", d.text, remote_text(o)),
                None => d.text.clone(),
            };
            ev.lock().console("exception", text);
        }
    }));

    let mut s = page.event_listener::<EventEntryAdded>().await?;
    let ev = events.clone();
    out.push(tokio::spawn(async move {
        while let Some(e) = s.next().await {
            if e.entry.level == LogEntryLevel::Error {
                ev.lock().console("log", e.entry.text.clone());
            }
        }
    }));
    Ok(out)
}
