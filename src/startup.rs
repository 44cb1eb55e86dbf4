//! Start-up: open (or create) the data dir, check the master key, bootstrap an empty
//! deployment, build the TLS config, and run the server. `serve` and the tests (which start the
//! real binary) share this one path.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::{anyhow, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::{password, Passwords};
use crate::config::{Settings, TlsMode};
use crate::crypto::MasterKey;
use crate::crypto::MasterKeyError;
use crate::metrics::Metrics;
use crate::service::tenants::{self, Created};
use crate::service::AppState;
use crate::store::{Catalog, StoreError, TenantStores};

/// Email of the Owner created on first start.
pub const DEFAULT_OWNER_EMAIL: &str = "admin@localhost";
/// Email of the PlatformAdmin created on first start.
pub const DEFAULT_PLATFORM_ADMIN_EMAIL: &str = "platform-admin@localhost";
/// Name of the tenant created on first start.
pub const DEFAULT_TENANT_NAME: &str = "default";

/// An opened data dir.
pub struct Opened {
    /// Master key.
    pub master: Arc<MasterKey>,
    /// Catalog.
    pub catalog: Catalog,
    /// The catalog was created just now.
    pub fresh: bool,
}

fn stores_exist(data_dir: &Path) -> bool {
    Catalog::path_in(data_dir).exists()
        || std::fs::read_dir(TenantStores::dir_in(data_dir))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
}

/// Forbid migrating existing stores in this process (every host command but `serve`); see
/// [`crate::store::forbid_migrations`].
pub fn forbid_migrations() {
    crate::store::forbid_migrations();
}

/// Open every store read-only in this process (`doctor`); see [`crate::store::set_read_only`].
pub fn read_only() {
    crate::store::set_read_only();
}

/// Open the data dir: check/create the master key and open (or create when `create`) the
/// catalog. Never creates a key over existing stores.
pub fn open_data_dir(s: &Settings, create: bool) -> anyhow::Result<Opened> {
    let dir = &s.data_dir;
    let exists = stores_exist(dir);
    if !exists && !create {
        return Err(anyhow!(
            "no FlowGuard data in {} (run `flowguard init` or `flowguard serve` first)",
            dir.display()
        ));
    }
    crate::store::private_dir(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    if !exists {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set mode 0700 on {}", dir.display()))?;
    }
    let key_path = s.master_key_path();
    if s.master_key_file.is_some() && !key_path.exists() {
        return Err(MasterKeyError::Unreadable {
            path: key_path,
            reason: "configured master_key_file does not exist".into(),
        }
        .into());
    }
    let master = Arc::new(MasterKey::load_or_create(&key_path, exists)?);
    crate::store::set_pre_migration_copies(s.store.pre_migration_copies);
    let catalog = match Catalog::open(dir, &master, !exists, s.store.busy_timeout_ms) {
        Ok(c) => c,
        Err(StoreError::WrongKey(_)) => {
            if let Some(id) = crate::service::keys::interrupted_master_rotation(dir) {
                return Err(anyhow!(
                    "{}; a master key rotation to the key with id {id} was interrupted after the catalog was re-keyed: \
                     rerun `flowguard keys rotate-master --new-key-file <that key file>` to finish it",
                    MasterKeyError::Wrong(key_path)
                ));
            }
            return Err(MasterKeyError::Wrong(key_path).into());
        }
        Err(e) => return Err(anyhow!("cannot open catalog: {e}")),
    };
    // A master key rotation that installed its key but stopped before removing its marker.
    if crate::service::keys::interrupted_master_rotation(dir).as_deref() == Some(&master.kek_id()) {
        let _ = std::fs::remove_file(crate::service::keys::master_marker_path(dir));
    }
    Ok(Opened {
        master,
        catalog,
        fresh: !exists,
    })
}

/// Screenshot uploads decoded at once (`AppState::image_slots`; each holds one decoded image,
/// ≤ `service::screenshots::MAX_PIXELS` × 4 bytes), and the low-priority threads doing the pixel
/// work (`AppState::image_workers`).
pub const IMAGE_SLOTS: usize = 2;

/// File (in the data dir) that `serve` and key-changing host commands lock.
pub const LOCK_FILE: &str = "flowguard.lock";

/// An exclusive advisory lock (`flock(2)`) on `<data>/flowguard.lock`, released when dropped or
/// when the process dies (also by SIGKILL). `serve` holds it for its whole life; host commands
/// that change key material (`keys rotate`, `keys rotate-master`, `jobs run key-rotation`) take
/// it too, because a running server holds connections opened with the current keys.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Take the data-dir lock without waiting; fails naming the lock file when another flowguard
/// process (a server, or another key command) holds it.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(anyhow!(
            "another flowguard process (a running server, or another key command) holds {}; \
             stop the server first (a running server rotates tenant keys itself: POST /api/v1/keys/rotate \
             or the key-rotation job)",
            path.display()
        )),
        Err(e) => Err(anyhow!("cannot lock {}: {e}", path.display())),
    }
}

/// Build the shared state.
pub fn build_state(s: Arc<Settings>, o: Opened) -> anyhow::Result<AppState> {
    let tenants = Arc::new(
        TenantStores::new(
            &s.data_dir,
            o.master.clone(),
            o.catalog.clone(),
            s.store.max_open_tenants,
            s.store.busy_timeout_ms,
        )
        .with_page_cache_kib(s.store.page_cache_kib)
        .with_busy_page_cache(
            s.store.busy_page_cache_kib,
            s.store.busy_stores,
            s.store.busy_page_cache_budget_kib,
        )
        .with_read_connections(s.store.read_connections)
        .with_group_commit(s.store.group_commit)
        .with_plaintext_for_bench(s.store.bench_plaintext_tenant_stores),
    );
    if s.store.bench_plaintext_tenant_stores {
        tracing::warn!(
            "store.bench_plaintext_tenant_stores = true: tenant stores are NOT encrypted \
             (benchmark anchor only; never use this setting for real data)"
        );
    }
    let passwords = Passwords::new(s.login.hash_concurrency)?;
    // Key files are created on a first start only (see `keys::audit_signer`).
    let audit_signer = Arc::new(crate::service::keys::audit_signer(
        &s.data_dir,
        &o.master,
        &o.catalog,
    )?);
    let metrics = Metrics::new()?;
    let egress = Arc::new(s.egress_policy()?);
    let ai_limiter = Arc::new(crate::service::ai_endpoint::AiLimiter::new(&s.ai));
    Ok(AppState {
        settings: s,
        master: o.master,
        catalog: o.catalog,
        tenants,
        passwords,
        metrics,
        image_slots: Arc::new(tokio::sync::Semaphore::new(IMAGE_SLOTS)),
        image_workers: crate::workers::LowPriority::start(
            "image",
            IMAGE_SLOTS,
            IMAGE_SLOTS,
            || {},
        )?,
        keys: crate::service::keys::KeyRuntime::new(crate::service::keys::Clock::from_env()),
        license: Default::default(),
        audit_signer,
        egress,
        ai_limiter,
        oidc: Arc::default(),
        runner: Default::default(),
        run_queued: Default::default(),
        live: Default::default(),
        ticket_due: Default::default(),
    })
}

/// On a deployment without tenants: create tenant `default`, Owner `admin@localhost` and a
/// PlatformAdmin with random one-time passwords, written to `<data>/initial-credentials` (0600).
pub fn bootstrap_if_empty(state: &AppState) -> anyhow::Result<Option<Created>> {
    {
        let c = state.catalog.db().lock();
        if crate::store::catalog::has_tenants(&c)? {
            return Ok(None);
        }
    }
    let owner_pw = password::random_password();
    let admin_pw = password::random_password();
    let owner_hash = password::hash_blocking(&owner_pw)?;
    let admin_hash = password::hash_blocking(&admin_pw)?;
    let tid = tenants::create_tenant(
        state,
        DEFAULT_TENANT_NAME,
        DEFAULT_OWNER_EMAIL,
        &owner_hash,
        true,
        None,
    )?;
    tenants::create_platform_admin(
        &state.catalog,
        DEFAULT_PLATFORM_ADMIN_EMAIL,
        &admin_hash,
        true,
    )?;
    let created = Created {
        tenant_id: tid.to_string(),
        tenant_name: DEFAULT_TENANT_NAME.into(),
        owner_email: DEFAULT_OWNER_EMAIL.into(),
        owner_password: Some(owner_pw),
        platform_admin_email: Some(DEFAULT_PLATFORM_ADMIN_EMAIL.into()),
        platform_admin_password: Some(admin_pw),
    };
    tenants::write_initial_credentials(&state.settings.data_dir, &created)?;
    Ok(Some(created))
}

fn write_private(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Where a self-managed certificate lives: `<data>/tls/{cert,key}.pem`.
fn self_signed_paths(s: &Settings) -> (PathBuf, PathBuf) {
    let dir = s.data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Whether the certificate is the appliance's own (no `tls.cert_file` configured).
pub fn self_managed(s: &Settings) -> bool {
    s.tls.cert_file.is_none() || s.tls.key_file.is_none()
}

/// Names the generated certificate covers: the listen address (when specific), `localhost`,
/// the loopback addresses and the host name.
fn self_signed_names(s: &Settings) -> anyhow::Result<Vec<String>> {
    let host = s.listen_addr()?.ip();
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !host.is_unspecified() && !host.is_loopback() {
        names.insert(0, host.to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            names.push(h.to_string());
        }
    }
    Ok(names)
}

/// Whether a self-managed certificate must be (re)generated: missing, unreadable, a CA
/// certificate or longer-lived than 397 days (as generated before issue 24), or within
/// `self_signed.renew_before_days` of its end.
fn self_signed_stale(s: &Settings, cert: &Path, key: &Path) -> bool {
    use crate::crypto::server_cert;
    if !key.exists() {
        return true;
    }
    let Ok(pem) = std::fs::read(cert) else {
        return true;
    };
    match server_cert::inspect(&pem) {
        Some(i) => {
            i.is_ca
                || i.validity_days > server_cert::MAX_VALIDITY_DAYS
                || server_cert::due(
                    i.not_after,
                    s.self_signed.renew_before_days,
                    chrono::Utc::now(),
                )
        }
        None => true,
    }
}

/// (Re)generate the self-managed certificate when [`self_signed_stale`]; logs the new
/// SHA-256 fingerprint. Returns whether a new certificate was written.
pub fn renew_self_signed_if_due(s: &Settings) -> anyhow::Result<bool> {
    let (cert, key) = self_signed_paths(s);
    if !self_signed_stale(s, &cert, &key) {
        return Ok(false);
    }
    let dir = s.data_dir.join("tls");
    crate::store::private_dir(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let had = cert.exists();
    let g = crate::crypto::server_cert::generate(
        self_signed_names(s)?,
        s.self_signed.validity_days,
        chrono::Utc::now(),
    )
    .context("cannot generate self-signed certificate")?;
    // Key first: a crash between the two writes leaves a key without its certificate, which
    // the next start regenerates, never a certificate with the wrong key.
    write_private(&key, g.key_pem.as_bytes(), 0o600)?;
    write_private(&cert, g.cert_pem.as_bytes(), 0o600)?;
    tracing::info!(
        cert = %cert.display(),
        sha256_fingerprint = %g.sha256_fingerprint,
        not_after = %g.not_after.to_rfc3339(),
        renewed = had,
        "generated self-signed TLS certificate"
    );
    Ok(true)
}

/// Certificate and key paths: configured, or `<data>/tls/{cert,key}.pem`, generating (or
/// renewing, see [`renew_self_signed_if_due`]) the self-signed leaf certificate.
pub fn ensure_tls_files(s: &Settings) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(c), Some(k)) = (&s.tls.cert_file, &s.tls.key_file) {
        return Ok((c.clone(), k.clone()));
    }
    renew_self_signed_if_due(s)?;
    Ok(self_signed_paths(s))
}

/// Load a certificate chain and key as rustls' certified key (ring provider).
fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in {}", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read private key {}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .context("certificate and key do not match")?;
    Ok(Arc::new(ck))
}

/// rustls server config: ring provider only, TLS 1.2 and 1.3 only, ALPN h2 + http/1.1, and the
/// certificate behind a [`crate::crypto::server_cert::Swappable`] resolver so a renewed
/// self-signed certificate is served without a restart.
pub fn tls_config(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(
    rustls::ServerConfig,
    Arc<crate::crypto::server_cert::Swappable>,
)> {
    let ck = certified_key(cert, key)?;
    let fp = crate::crypto::sha256_hex(ck.cert[0].as_ref());
    let resolver = crate::crypto::server_cert::Swappable::new(ck);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tracing::info!(sha256_fingerprint = %fp, "TLS certificate loaded");
    Ok((cfg, resolver))
}

/// How often a running server checks whether its self-signed certificate is due for renewal.
pub const RENEWAL_CHECK_SECS: u64 = 3600;

/// Check the self-managed certificate every [`RENEWAL_CHECK_SECS`]; when it was renewed, serve
/// the new one from the next handshake on.
fn spawn_renewal(settings: Arc<Settings>, resolver: Arc<crate::crypto::server_cert::Swappable>) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(RENEWAL_CHECK_SECS));
        tick.tick().await; // the first tick is immediate; start-up already checked
        loop {
            tick.tick().await;
            let s = settings.clone();
            let r = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                if !renew_self_signed_if_due(&s)? {
                    return Ok(None);
                }
                let (c, k) = self_signed_paths(&s);
                Ok(Some(certified_key(&c, &k)?))
            })
            .await;
            match r {
                Ok(Ok(Some(ck))) => {
                    resolver.replace(ck);
                    tracing::info!("serving the renewed self-signed TLS certificate");
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "self-signed certificate renewal failed; the current one stays")
                }
                Err(e) => tracing::warn!(error = %e, "self-signed certificate renewal task failed"),
            }
        }
    });
}

fn write_listen_addr(data_dir: &Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let tmp = data_dir.join("listen.addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, data_dir.join("listen.addr"))?;
    Ok(())
}

pub use crate::http::listener::SHUTDOWN_GRACE_SECS;

/// How often `serve` re-extends the service manager's start timeout while it starts.
const START_EXTEND_EVERY: Duration = Duration::from_secs(10);
/// The start timeout `serve` asks for on every extension (`EXTEND_TIMEOUT_USEC`, microseconds):
/// three periods, so one late tick does not let systemd kill a migration.
const START_EXTEND_USEC: u32 = 30_000_000;

/// Tell the service manager about a state change (`sd_notify(3)`, protocol of
/// <https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html>). A no-op when
/// `NOTIFY_SOCKET` is unset (not started by systemd with `Type=notify`); a send error is logged
/// and otherwise ignored (the server keeps serving).
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Run the server until SIGTERM/SIGINT (graceful). SIGHUP reloads the license file.
///
/// Under systemd (`Type=notify`, `NOTIFY_SOCKET` set) it sends `EXTEND_TIMEOUT_USEC` every
/// [`START_EXTEND_EVERY`] from its start until it is ready, so a long catalog migration (or
/// pre-migration copy) is not killed by `TimeoutStartSec`; `READY=1` once the catalog is open
/// (migrated), the first-start bootstrap is done and the listener is bound; `STOPPING=1` when
/// SIGTERM/SIGINT starts the graceful stop. Tenant stores are NOT part of readiness: they are
/// migrated by a background pass after `READY=1` (and each on its first request), and a refused
/// one is named by `/readyz`, so a slow tenant migration never holds up or fails the start.
pub fn serve(settings: Settings) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(serve_async(settings))
}

async fn serve_async(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    // Keep systemd's start timeout ahead of a long migration until READY=1 (the first tick is
    // immediate). The sender is dropped on every return, which also ends the task.
    let (ready_tx, mut ready_rx) = tokio::sync::oneshot::channel::<()>();
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(START_EXTEND_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => notify_systemd(&[
                    sd_notify::NotifyState::ExtendTimeoutUsec(START_EXTEND_USEC),
                    sd_notify::NotifyState::Status("starting: opening and migrating the stores"),
                ]),
                _ = &mut ready_rx => break,
            }
        }
    });
    // A stale address from an earlier run must never point scripts at a dead port.
    let _ = std::fs::remove_file(settings.data_dir.join("listen.addr"));
    let s2 = settings.clone();
    let (state, _lock) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(AppState, DataDirLock)> {
            let opened = open_data_dir(&s2, true)?;
            let lock = lock_data_dir(&s2.data_dir)?;
            Ok((build_state(s2, opened)?, lock))
        })
        .await??;
    // Busy tenant stores are checkpointed by a background pass, never inside a request's commit
    // (issue 25; `store::pool` module doc). On before any tenant store is opened.
    state.tenants.start_background_checkpoints();
    // The license gate (`license.required`) comes before anything is bootstrapped or served.
    crate::service::license::load_at_start(&state, true)?;
    let state = web::Data::new(state);
    let st_ckpt = state.clone().into_inner();
    actix_web::rt::spawn(async move {
        use crate::store::pool::{CHECKPOINT_PERIOD, PAGE_CACHE_PERIOD};
        let mut tick = tokio::time::interval(CHECKPOINT_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The busiest stores' page caches are re-sized every PAGE_CACHE_PERIOD (issue 25).
        let every = (PAGE_CACHE_PERIOD.as_millis() / CHECKPOINT_PERIOD.as_millis()).max(1);
        let mut n: u128 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let resize = n % every == 0;
            let st = st_ckpt.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || {
                st.tenants.checkpoint_pass_blocking();
                if resize {
                    st.tenants.page_cache_pass_blocking();
                }
            })
            .await
            {
                tracing::error!(error = %e, "background store pass panicked");
            }
        }
    });
    let st2 = state.clone();
    let created = tokio::task::spawn_blocking(move || bootstrap_if_empty(&st2)).await??;
    if let Some(c) = &created {
        tracing::warn!(
            tenant_id = %c.tenant_id,
            owner_email = %c.owner_email,
            platform_admin_email = ?c.platform_admin_email,
            credentials_file = %settings.data_dir.join("initial-credentials").display(),
            "first start: created tenant `default`, an Owner and a PlatformAdmin with one-time passwords (see the credentials file; change them after the first login)"
        );
        // Printed once on the terminal, outside the structured log.
        eprintln!(
            "\nFlowGuard first start — one-time credentials (also in {}):\n  tenant:          {} ({})\n  owner:           {} / {}\n  platform admin:  {} / {}\n",
            settings.data_dir.join("initial-credentials").display(),
            c.tenant_name,
            c.tenant_id,
            c.owner_email,
            c.owner_password.as_deref().unwrap_or(""),
            c.platform_admin_email.as_deref().unwrap_or(""),
            c.platform_admin_password.as_deref().unwrap_or(""),
        );
    }

    let addr = settings.listen_addr()?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let server = match settings.tls.mode {
        TlsMode::On => {
            let (cert, key) = ensure_tls_files(&settings)?;
            let (cfg, resolver) = tls_config(&cert, &key)?;
            if self_managed(&settings) {
                spawn_renewal(settings.clone(), resolver);
            }
            crate::http::listener::server(state.clone(), listener, Some(cfg))?
        }
        TlsMode::Off => {
            tracing::warn!("tls.mode = \"off\": serving plain HTTP; only run this behind a TLS-terminating proxy");
            crate::http::listener::server(state.clone(), listener, None)?
        }
    };
    write_listen_addr(&settings.data_dir, local)?;
    tracing::info!(addr = %local, region = %settings.region, tls = ?settings.tls.mode, "listening");
    let _ = ready_tx.send(());
    let status = format!("listening on {local}");
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    // actix-server stops gracefully on SIGTERM/SIGINT; tell systemd the stop has begun.
    actix_web::rt::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        notify_systemd(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: draining requests"),
        ]);
    });
    let running = server;
    let st3 = state.clone().into_inner();
    actix_web::rt::spawn(async move {
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            while hup.recv().await.is_some() {
                let actor = crate::service::license::signal_actor();
                match crate::service::license::reload(&st3, &actor).await {
                    Ok(v) => tracing::info!(
                        status = ?v.status,
                        license_id = ?v.license.as_ref().map(|l| l.id.clone()),
                        "SIGHUP: license reloaded"
                    ),
                    Err(e) => tracing::warn!(
                        code = e.code.as_str(),
                        reason = %e.detail,
                        "SIGHUP: license not reloaded; the current license stays"
                    ),
                }
            }
        }
    });
    // Every tenant store is opened (migrated) once in the background while the server serves
    // (stores a request needs first migrate on that request); refused stores are named by
    // /readyz.
    let st5 = state.clone().into_inner();
    tokio::task::spawn_blocking(move || {
        let refused = crate::service::platform::migrate_all_blocking(&st5, |_, _| {});
        if refused > 0 {
            tracing::error!(
                stores = refused,
                "tenant stores refused at start: see /readyz"
            );
        }
    });
    let mut sched = crate::jobs::start(state.clone().into_inner()).await?;
    let st4 = state.clone().into_inner();
    let runner = tokio::task::spawn_blocking(move || crate::runner::Runner::start(st4)).await?;
    running.await?;
    tokio::task::spawn_blocking(move || runner.shutdown()).await?;
    let _ = sched.shutdown().await;
    let _ = std::fs::remove_file(settings.data_dir.join("listen.addr"));
    tracing::info!("stopped");
    Ok(())
}
