//! Typed settings, layered defaults → TOML file → `FLOWGUARD_*` environment → CLI flags.
//!
//! Modelled on lldap's `configuration.rs` (figment) and kanidm's `deny_unknown_fields`: every
//! table rejects unknown keys with a message naming the key. Secrets may be given inline or as a
//! `*_file` key naming a file that holds them (e.g. `metrics.token_file`).
//!
//! Environment variables use `__` for nesting: `FLOWGUARD_TLS__MODE=off` sets `tls.mode`.
//! `FLOWGUARD_AGENT_TOKEN`, `FLOWGUARD_CONFIG` and `FLOWGUARD_LOG` belong to other parts of the
//! binary and are not settings; any other `FLOWGUARD_*` variable must name a setting, so tools
//! around the appliance must not use the `FLOWGUARD_` prefix for their own variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::domain::Region;

/// Environment variables with the `FLOWGUARD_` prefix that are *not* settings.
const NON_SETTING_ENV: &[&str] = &[
    "AGENT_TOKEN",
    "CONFIG",
    "LOG",
    "LOG_FORMAT",
    // Debug-build test hooks (issue 4): failpoints, failpoint pauses and the test clock; ignored
    // by release builds.
    "FAULT",
    "FAULT_PAUSE",
    "FAULT_CLOCK",
    // `test-faults` builds: a store's migration fails / a store gets a schema version / the
    // volume is "full" while a flag file exists (src/fault.rs).
    "FAULT_MIGRATION",
    "FAULT_SCHEMA_VERSION",
    "FAULT_DISK_FULL",
    "TEST_CLOCK_FILE",
    // The test harness's binary path (`tests/api/helpers.rs`, set by the shared-target build
    // wrapper); inherited by every process the tests start.
    "BIN",
];

/// All settings of one deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory holding keys, stores, TLS material and screenshots. Default `./flowguard-data`.
    pub data_dir: PathBuf,
    /// Listen address `ADDR:PORT`; port 0 picks a free port (written to `<data>/listen.addr`).
    pub listen: String,
    /// This deployment's region (lowercase letters/digits, 2–16 chars). Default `local`.
    pub region: String,
    /// Public endpoint of every region, e.g. `{ weu = "https://weu.flowguard.corp" }`.
    pub regions: BTreeMap<String, String>,
    /// Master key (KEK) file; default `<data>/keys/master.key`.
    pub master_key_file: Option<PathBuf>,
    /// TLS settings.
    pub tls: TlsSettings,
    /// Session lifetimes.
    pub session: SessionSettings,
    /// Login throttling.
    pub login: LoginSettings,
    /// Prometheus metrics endpoint.
    pub metrics: MetricsSettings,
    /// Tenant store cache.
    pub store: StoreSettings,
    /// Proxies whose `X-Forwarded-For` is believed (CIDR list). Empty: only the peer address.
    pub trusted_proxies: Vec<IpNet>,
    /// Run lifecycle.
    pub runs: RunSettings,
    /// Public base URL of this deployment (e.g. `https://flowguard.corp.example`); when set,
    /// signed screenshot URLs are absolute.
    pub public_url: Option<String>,
    /// Screenshot settings.
    pub screenshots: ScreenshotSettings,
    /// Logging.
    pub log: LogSettings,
    /// Where the appliance may connect at all: LDAP directories, the AI endpoint (issue 11).
    pub egress: EgressSettings,
    /// Tenant key rotation.
    pub keys: KeySettings,
    /// License file and startup gate.
    pub license: LicenseSettings,
    /// Background job schedules.
    pub jobs: JobsSettings,
    /// AI endpoint for checkpoint verdicts and its rate limit (issue 11).
    pub ai: AiSettings,
    /// What clients may hold before they authenticate (issue 24).
    pub connections: ConnectionSettings,
    /// The generated self-signed certificate (used when `tls.cert_file` is not set).
    pub self_signed: SelfSignedSettings,
    /// The embedded runner of `serve` (issue 22).
    pub runner: RunnerSettings,
    /// Backups: where `backup create` writes by default (issue 19).
    pub backup: BackupSettings,
    /// The config file these settings were loaded from (set by [`Settings::load`]; not a key).
    #[serde(skip)]
    pub loaded_from: Option<PathBuf>,
}

/// `[backup]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// Directory `flowguard backup create`, `POST /api/v1/platform/backups` and the scheduled
    /// job write into (default `<data>/backups`; put it on another volume).
    pub dir: Option<PathBuf>,
    /// Cron expression with seconds (`sec min hour day month weekday`, like
    /// `keys.rotation_cron`) of the scheduled `backup` job; unset (the default) = no scheduled
    /// backups.
    pub schedule: Option<String>,
    /// After a successful scheduled backup, keep this many complete backups in `dir` and delete
    /// the older ones (default 7; at least 1 is always kept).
    pub keep: usize,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            dir: None,
            schedule: None,
            keep: 7,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./flowguard-data"),
            listen: "127.0.0.1:8443".into(),
            region: "local".into(),
            regions: BTreeMap::new(),
            master_key_file: None,
            tls: TlsSettings::default(),
            session: SessionSettings::default(),
            login: LoginSettings::default(),
            metrics: MetricsSettings::default(),
            store: StoreSettings::default(),
            trusted_proxies: Vec::new(),
            runs: RunSettings::default(),
            public_url: None,
            screenshots: ScreenshotSettings::default(),
            log: LogSettings::default(),
            egress: EgressSettings::default(),
            keys: KeySettings::default(),
            license: LicenseSettings::default(),
            jobs: JobsSettings::default(),
            ai: AiSettings::default(),
            connections: ConnectionSettings::default(),
            self_signed: SelfSignedSettings::default(),
            runner: RunnerSettings::default(),
            backup: BackupSettings::default(),
            loaded_from: None,
        }
    }
}

/// `[runner]` table: the embedded runner that executes queued runs inside `serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerSettings {
    /// Embedded workers (each runs one browser at a time). Default: one per two CPUs, at
    /// least 1; `0` disables the embedded runner (then only external agents run flows).
    pub embedded_workers: Option<usize>,
    /// Chromium executable; default: `chromium`, `chromium-browser`, `google-chrome` or
    /// `google-chrome-stable` found on `PATH`.
    pub chromium: Option<PathBuf>,
    /// When `serve` runs as root, the browser runs as this user (default `nobody`), so it
    /// cannot read the data dir or the master key.
    pub browser_user: String,
    /// Run Chromium without its sandbox when the sandbox cannot start. Off by default: the
    /// runner then refuses to run flows; when on, a warning is logged at every start and shown
    /// in the dashboard.
    pub allow_no_sandbox: bool,
    /// Interval of the full queue scan, in milliseconds (default 10 000): at most one scan of
    /// every tenant's store per interval across all workers (and the first claim). Runs queued
    /// by this process (API, schedules, retries) wake the workers at once and are claimed by
    /// looking only in the stores of the tenants that queued them
    /// (`service::runner::QueuedHints`); the full scan only finds runs queued by another process
    /// (e.g. `flowguard jobs run schedules`).
    pub poll_ms: u64,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            embedded_workers: None,
            chromium: None,
            browser_user: "nobody".into(),
            allow_no_sandbox: false,
            poll_ms: 10_000,
        }
    }
}

impl RunnerSettings {
    /// Effective worker count: the configured one, else `max(1, CPUs / 2)`.
    pub fn workers(&self) -> usize {
        self.embedded_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| (n.get() / 2).max(1))
                .unwrap_or(1)
        })
    }
}

/// `tls.mode`: `on` (default) serves HTTPS; `off` serves plain HTTP behind a TLS-terminating proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// HTTPS with TLS 1.2/1.3 (rustls, ring provider).
    #[default]
    On,
    /// Plain HTTP; a warning is logged at start.
    Off,
}

/// `[tls]` table.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// `on` or `off`.
    pub mode: TlsMode,
    /// PEM certificate chain. With neither file set, a self-signed certificate is generated into
    /// `<data>/tls/`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// `[session]` table (minutes/hours).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Idle timeout in minutes (default 30).
    pub idle_minutes: u32,
    /// Absolute lifetime in hours (default 12).
    pub absolute_hours: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_minutes: 30,
            absolute_hours: 12,
        }
    }
}

/// `[login]` table: brute-force throttling (OWASP Authentication Cheat Sheet).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSettings {
    /// Failures allowed per (account, client IP) pair before 429 (default 5).
    pub max_failures_per_pair: u32,
    /// First lockout in seconds; doubles with each further failure (default 30).
    pub base_lockout_secs: u64,
    /// Cap on one lockout in seconds (default 900 = 15 minutes).
    pub max_lockout_secs: u64,
    /// Failed attempts per client IP across all accounts within the window before 429 (default 50).
    pub max_failures_per_ip: u32,
    /// Window in seconds after which counters expire by themselves (default 900).
    pub window_secs: u64,
    /// Concurrent argon2id computations (0 = number of CPUs).
    pub hash_concurrency: usize,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            max_failures_per_pair: 5,
            base_lockout_secs: 30,
            max_lockout_secs: 900,
            max_failures_per_ip: 50,
            window_secs: 900,
            hash_concurrency: 0,
        }
    }
}

/// `[connections]` table: bounds on what clients hold before authenticating (see
/// `src/http/listener.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionSettings {
    /// Open connections one client address (IPv4 address or IPv6 /64) may hold, counted from
    /// TCP accept — before TLS — to close; more are closed at once (default 128, 1–100000).
    pub max_per_client: usize,
    /// Open connections in total; more are closed at once (default 4096, 1–1000000).
    pub max_total: usize,
    /// Milliseconds a new connection has to complete its TLS handshake (default 3000,
    /// 100–60000).
    pub tls_handshake_timeout_ms: u64,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_per_client: 128,
            max_total: 4096,
            tls_handshake_timeout_ms: 3000,
        }
    }
}

/// `[self_signed]` table: the certificate generated when no `tls.cert_file` is configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfSignedSettings {
    /// Validity of a generated certificate in days (default 397, 1–397: the CA/Browser Forum
    /// limit for server certificates).
    pub validity_days: u32,
    /// Renew when fewer than this many days are left (default 30, below `validity_days`).
    pub renew_before_days: u32,
}

impl Default for SelfSignedSettings {
    fn default() -> Self {
        Self {
            validity_days: 397,
            renew_before_days: 30,
        }
    }
}

/// `[metrics]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `/metrics` (default true).
    pub enabled: bool,
    /// Answer `/metrics` only to loopback peers (default true).
    pub loopback_only: bool,
    /// Optional bearer token that non-loopback scrapers must present (secret).
    pub token: Option<String>,
    /// File holding `token` (the `*_file` form of the secret).
    pub token_file: Option<PathBuf>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            loopback_only: true,
            token: None,
            token_file: None,
        }
    }
}

/// `[store]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Most tenant stores held open at once (LRU; default 64).
    pub max_open_tenants: usize,
    /// SQLite busy timeout in milliseconds (default 5000).
    pub busy_timeout_ms: u64,
    /// Page cache of each open tenant store in KiB (`PRAGMA cache_size = -N`; default 2000,
    /// SQLite's own default; 256..=1048576). Memory is taken only as pages are used, up to this
    /// bound per open store (× `max_open_tenants`). On a SQLCipher store every page brought back
    /// into the cache is decrypted and its HMAC checked, so a tenant that ingests many run steps
    /// into a large store runs faster with a larger cache: BENCHMARKS.md P1 measured 4,618 → 10,964
    /// steps/s with 32768 on a store growing to ~50 MB.
    pub page_cache_kib: u32,
    /// Most page cache in KiB of the write connection of each of the `busy_stores` busiest
    /// open tenant stores (default 262144 = 256 MiB; 256..=1048576). Every 5 s the server ranks
    /// the open stores by how often requests used them in that window; the busiest (at least 20
    /// uses in the window) get a cache sized from their file (database + WAL, plus 1/16): the
    /// whole store when it fits in this bound, never below `page_cache_kib` (so raising only
    /// `page_cache_kib` still raises every store), and all of them together within
    /// `busy_page_cache_budget_kib`; the others go back to `page_cache_kib` (issue 25: a store
    /// taking a fleet's step reports while people browse its history keeps its hot pages
    /// decrypted; BENCHMARKS.md P8/P9: a 1 M-run store needs 256 MiB to answer as fast as a
    /// 10 k-run one).
    pub busy_page_cache_kib: u32,
    /// Most page cache in KiB that the busy stores' write connections take together (default
    /// 262144 = 256 MiB; 256..=67108864): small busy stores get their whole file, large ones
    /// share the rest equally (`store::pool::busy_cache_plan`). Memory bound of all tenant page
    /// caches: this plus `page_cache_kib` × 2 connections × `max_open_tenants`.
    pub busy_page_cache_budget_kib: u64,
    /// How many of the busiest open tenant stores get `busy_page_cache_kib` (default 4; 0 = every
    /// store keeps `page_cache_kib`; at most `max_open_tenants`).
    pub busy_stores: usize,
    /// Each open tenant store gets a second, read-only connection for the per-request reads
    /// (run list and detail, authentication, the agent API's run lookups), so they do not wait
    /// behind the store's writes (default `true`; issue 25, BENCHMARKS.md P8). It takes its own
    /// page cache (up to `page_cache_kib`). `false`: every read waits for the store's one write
    /// connection, as before (kept so the benchmark can measure the lever on one binary).
    pub read_connections: bool,
    /// Step reports of one tenant store that arrive while another is being committed are
    /// committed together in one transaction (each in its own savepoint; each answered only
    /// after that commit, so durability is unchanged). Default `true` (issue 25, BENCHMARKS.md
    /// P8); `false`: one transaction per report (kept so the benchmark can measure the lever).
    pub group_commit: bool,
    /// **Benchmark anchor only — never in production.** When `true`, tenant stores are created and
    /// opened as plain SQLite files (no `PRAGMA key`; same pragmas, schema and code otherwise),
    /// so `bench/appliance.py` can run the P8 fleet workload on the same binary over unencrypted
    /// stores (BENCHMARKS.md P8, the anchor of the SQLCipher cost). Default `false`; the catalog,
    /// screenshots and secrets stay encrypted either way. A data dir created with one setting
    /// does not open with the other (the open fails with the wrong-key error), tenant-key rotation
    /// is refused while it is set, and the server logs a warning at start.
    pub bench_plaintext_tenant_stores: bool,
    /// `flowguard doctor` reports a finding when the data dir's volume has less free space than
    /// this many MiB (default 1024), or less than the data itself (a backup or a pre-migration
    /// copy would not fit).
    pub min_free_mib: u64,
    /// Copies of each store kept in `<data_dir>/pre-migration/` from before it was migrated to
    /// a new schema version (the file as it was, under the same key; the oldest are deleted
    /// beyond this number; default 3, 0 = take none). Not included in backups.
    pub pre_migration_copies: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            max_open_tenants: 64,
            busy_timeout_ms: 5000,
            page_cache_kib: 2000,
            busy_page_cache_kib: 262_144,
            busy_page_cache_budget_kib: 262_144,
            busy_stores: 4,
            read_connections: true,
            group_commit: true,
            bench_plaintext_tenant_stores: false,
            min_free_mib: 1024,
            pre_migration_copies: 3,
        }
    }
}

/// `[runs]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// A running run whose agent sent no heartbeat for this many seconds fails with
    /// `agent_timeout` (default 300 = 5 minutes).
    pub heartbeat_timeout_secs: u64,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            heartbeat_timeout_secs: 300,
        }
    }
}

/// `[screenshots]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScreenshotSettings {
    /// Lifetime of signed screenshot URLs in seconds (1–900; default 900 = 15 minutes).
    pub url_ttl_secs: u64,
}

impl Default for ScreenshotSettings {
    fn default() -> Self {
        Self { url_ttl_secs: 900 }
    }
}

/// `[log]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `auto` (default: human-readable lines when stderr is a terminal, JSON lines otherwise),
    /// `json` or `pretty`.
    pub format: String,
    /// tracing filter, e.g. `info` or `flowguard=debug,actix_web=info`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "auto".into(),
            level: "info".into(),
        }
    }
}

/// `[egress]` table: the operator's list of where the appliance may connect (AI endpoint, LDAP,
/// ticket servers). Entry forms are described in [`crate::net::egress`]; tenants choose only
/// within the list; link-local and cloud-metadata addresses are never reachable.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSettings {
    /// `host`, `host:port`, `*.domain[:port]`, `10.0.0.0/8[:port]`, `[fd00::/8]:443`.
    /// Empty (default): nothing but the deployment's own `[ai.endpoint]`.
    pub allow: Vec<String>,
}

/// `[ai]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiSettings {
    /// Per-tenant token bucket on AI-cost calls: refill rate in calls per minute (default 30).
    pub rate_per_minute: u32,
    /// Bucket size: calls allowed in a burst (default 10).
    pub burst: u32,
    /// The deployment default endpoint (`[ai.endpoint]`); none unless configured. Tenants'
    /// Owners may override it (`PUT /api/v1/ai-endpoint`) within `egress.allow`.
    pub endpoint: Option<AiEndpointSettings>,
}

impl Default for AiSettings {
    fn default() -> Self {
        Self {
            rate_per_minute: 30,
            burst: 10,
            endpoint: None,
        }
    }
}

/// `[keys]` table: automatic rotation of tenant key sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    /// Rotate a tenant whose active key set is at least this many days old (default 90, 1–3650).
    pub rotation_days: u32,
    /// When the `key-rotation` job checks, as a cron expression with seconds
    /// (`sec min hour dom month dow`, UTC; default `0 17 3 * * *`, daily at 03:17).
    pub rotation_cron: String,
    /// Secrets re-sealed per store transaction during a rotation (default 500, 1–100000).
    pub rewrap_batch: usize,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            rotation_days: 90,
            rotation_cron: "0 17 3 * * *".into(),
            rewrap_batch: 500,
        }
    }
}

/// `[license]` table.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LicenseSettings {
    /// Refuse to start without a valid license (the Helm chart sets this). Default false: without
    /// one the appliance runs as Free.
    pub required: bool,
    /// The license token file read at start, by `POST /api/v1/platform/license/reload` and on
    /// SIGHUP, and written by installs. Default `<data>/license.jwt`.
    pub file: Option<PathBuf>,
}

/// `[jobs]` table: cron schedules (6 fields with seconds, UTC; tokio-cron-scheduler syntax).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSettings {
    /// Retention purge schedule (default `0 15 3 * * *`: daily at 03:15 UTC).
    pub retention_cron: String,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            retention_cron: "0 15 3 * * *".into(),
        }
    }
}

/// `[ai.endpoint]` table: the deployment default AI endpoint (see [`crate::net::ai_client`]).
/// `Debug` never shows the key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiEndpointSettings {
    /// `openai-chat` or `anthropic-messages`.
    pub kind: String,
    /// `https://` base URL, e.g. `https://llm.corp.example/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// API key (secret; prefer `api_key_file`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// File holding the API key.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// PEM CA bundle trusted for this endpoint (instead of the built-in roots).
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// File holding `ca_pem`.
    #[serde(default)]
    pub ca_pem_file: Option<PathBuf>,
    /// Total time for one call in ms (default 30000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `max_tokens` per request (default 512).
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

impl std::fmt::Debug for AiEndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiEndpointSettings")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("api_key_file", &self.api_key_file)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("ca_pem_file", &self.ca_pem_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

impl AiEndpointSettings {
    /// The validated endpoint (files already resolved by [`Settings::load`]).
    pub fn endpoint(
        &self,
    ) -> Result<crate::net::ai_client::Endpoint, crate::net::ai_client::FieldError> {
        crate::net::ai_client::Endpoint::parse(crate::net::ai_client::EndpointInput {
            kind: &self.kind,
            base_url: &self.base_url,
            model: &self.model,
            api_key: self.api_key.as_deref(),
            ca_pem: self.ca_pem.as_deref(),
            timeout_ms: self.timeout_ms,
            max_tokens: self.max_tokens,
        })
    }
}

/// Overrides given on the command line (highest precedence).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CliOverrides {
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// Errors while loading settings; messages name the offending key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing/merging failed (unknown key, wrong type, unreadable TOML).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A `*_file` secret could not be read.
    #[error("cannot read {key} from {path}: {reason}")]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl Settings {
    /// Load settings: embedded defaults, then `config_file` (TOML) if given, then `FLOWGUARD_*`
    /// environment variables, then `cli`. Unknown keys anywhere are an error naming the key.
    pub fn load(config_file: Option<&Path>, cli: &CliOverrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config_file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("FLOWGUARD_")
            .filter(|k| {
                !NON_SETTING_ENV
                    .iter()
                    .any(|n| k.as_str().eq_ignore_ascii_case(n))
            })
            .split("__");
        fig = fig.merge(env).merge(Serialized::defaults(cli));
        let mut s: Settings = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError::Invalid(msgs.join("; "))
        })?;
        s.resolve_secret_files()?;
        s.validate()?;
        s.loaded_from = config_file.map(Path::to_path_buf);
        Ok(s)
    }

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.metrics.token_file {
            let v = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
                key: "metrics.token_file",
                path: path.clone(),
                reason: e.kind().to_string(),
            })?;
            self.metrics.token = Some(v.trim_end_matches(['\r', '\n']).to_string());
        }
        if let Some(ep) = &mut self.ai.endpoint {
            if let Some(path) = &ep.api_key_file {
                if ep.api_key.is_some() {
                    return Err(ConfigError::Invalid(
                        "ai.endpoint: give api_key or api_key_file, not both".into(),
                    ));
                }
                let v = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
                    key: "ai.endpoint.api_key_file",
                    path: path.clone(),
                    reason: e.kind().to_string(),
                })?;
                ep.api_key = Some(v.trim_end_matches(['\r', '\n']).to_string());
            }
            if let Some(path) = &ep.ca_pem_file {
                if ep.ca_pem.is_some() {
                    return Err(ConfigError::Invalid(
                        "ai.endpoint: give ca_pem or ca_pem_file, not both".into(),
                    ));
                }
                let v = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
                    key: "ai.endpoint.ca_pem_file",
                    path: path.clone(),
                    reason: e.kind().to_string(),
                })?;
                ep.ca_pem = Some(v);
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Region::parse(&self.region).map_err(|e| ConfigError::Invalid(format!("region: {e}")))?;
        if self.runner.embedded_workers.is_some_and(|n| n > 64) {
            return Err(ConfigError::Invalid(
                "runner.embedded_workers: at most 64".into(),
            ));
        }
        if !(50..=60_000).contains(&self.runner.poll_ms) {
            return Err(ConfigError::Invalid("runner.poll_ms: 50 to 60000".into()));
        }
        if self.runner.browser_user.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "runner.browser_user: must name a user".into(),
            ));
        }
        for (name, url) in &self.regions {
            Region::parse(name)
                .map_err(|e| ConfigError::Invalid(format!("regions.{name}: {e}")))?;
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 2048
                && !url.ends_with("://")
                && url.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "regions.{name}: endpoint must be an http(s) URL without spaces"
                )));
            }
        }
        self.listen_addr()?;
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid(
                "tls.cert_file and tls.key_file must be given together".into(),
            ));
        }
        if self.session.idle_minutes == 0 || self.session.absolute_hours == 0 {
            return Err(ConfigError::Invalid(
                "session lifetimes must be positive".into(),
            ));
        }
        let c = &self.connections;
        if !(1..=100_000).contains(&c.max_per_client)
            || !(1..=1_000_000).contains(&c.max_total)
            || !(100..=60_000).contains(&c.tls_handshake_timeout_ms)
        {
            return Err(ConfigError::Invalid(
                "connections: max_per_client 1..=100000, max_total 1..=1000000, tls_handshake_timeout_ms 100..=60000".into(),
            ));
        }
        let ss = &self.self_signed;
        if !(1..=397).contains(&ss.validity_days) || ss.renew_before_days >= ss.validity_days {
            return Err(ConfigError::Invalid(
                "self_signed.validity_days must be 1..=397 and renew_before_days below it".into(),
            ));
        }
        if self.screenshots.url_ttl_secs == 0 || self.screenshots.url_ttl_secs > 900 {
            return Err(ConfigError::Invalid(
                "screenshots.url_ttl_secs must be 1..=900".into(),
            ));
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.ends_with('/') {
                return Err(ConfigError::Invalid(
                    "public_url must be an http(s) URL without a trailing slash".into(),
                ));
            }
        }
        if self.store.max_open_tenants == 0 {
            return Err(ConfigError::Invalid(
                "store.max_open_tenants must be positive".into(),
            ));
        }
        if !(256..=1_048_576).contains(&self.store.page_cache_kib) {
            return Err(ConfigError::Invalid(
                "store.page_cache_kib must be between 256 and 1048576".into(),
            ));
        }
        if !(256..=1_048_576).contains(&self.store.busy_page_cache_kib) {
            return Err(ConfigError::Invalid(
                "store.busy_page_cache_kib must be between 256 and 1048576".into(),
            ));
        }
        if !(256..=67_108_864).contains(&self.store.busy_page_cache_budget_kib) {
            return Err(ConfigError::Invalid(
                "store.busy_page_cache_budget_kib must be between 256 and 67108864".into(),
            ));
        }
        if self.store.busy_stores > self.store.max_open_tenants {
            return Err(ConfigError::Invalid(
                "store.busy_stores must be at most store.max_open_tenants".into(),
            ));
        }
        if !(1..=3650).contains(&self.keys.rotation_days) {
            return Err(ConfigError::Invalid(
                "keys.rotation_days must be between 1 and 3650".into(),
            ));
        }
        if !(1..=100_000).contains(&self.keys.rewrap_batch) {
            return Err(ConfigError::Invalid(
                "keys.rewrap_batch must be between 1 and 100000".into(),
            ));
        }
        croner::Cron::new(&self.keys.rotation_cron)
            .with_seconds_required()
            .with_dom_and_dow()
            .parse()
            .map_err(|e| {
                ConfigError::Invalid(format!(
                    "keys.rotation_cron: `{}` is not a cron expression with seconds: {e}",
                    self.keys.rotation_cron
                ))
            })?;
        if let Some(sched) = &self.backup.schedule {
            // Like `keys.rotation_cron`: server job schedules have six fields (seconds first).
            let fields = sched.split_whitespace().count();
            if fields != 6 {
                return Err(ConfigError::Invalid(format!(
                    "backup.schedule: `{sched}` has {fields} fields; expected 6 (sec min hour day-of-month month day-of-week, e.g. `0 30 2 * * *`)"
                )));
            }
            croner::Cron::new(sched)
                .with_seconds_required()
                .with_dom_and_dow()
                .parse()
                .map_err(|e| {
                    ConfigError::Invalid(format!(
                        "backup.schedule: `{sched}` is not a cron expression with seconds (sec min hour day-of-month month day-of-week, e.g. `0 30 2 * * *`): {e}"
                    ))
                })?;
        }
        if self.login.max_failures_per_pair == 0 || self.login.max_failures_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "login failure limits must be positive".into(),
            ));
        }
        if self.ai.rate_per_minute == 0 || self.ai.burst == 0 {
            return Err(ConfigError::Invalid(
                "ai.rate_per_minute and ai.burst must be positive".into(),
            ));
        }
        if let Some(ep) = &self.ai.endpoint {
            ep.endpoint().map_err(|e| {
                ConfigError::Invalid(format!("ai.endpoint.{}: {}", e.field, e.message))
            })?;
        }
        self.egress_policy()?;
        Ok(())
    }

    /// The parsed egress policy: `egress.allow` plus the deployment default AI endpoint's host
    /// and port (allowed implicitly).
    pub fn egress_policy(&self) -> Result<crate::net::egress::EgressPolicy, ConfigError> {
        let implicit: Vec<(String, u16)> = self
            .ai
            .endpoint
            .as_ref()
            .and_then(|e| e.endpoint().ok())
            .map(|e| vec![e.host_port()])
            .unwrap_or_default();
        crate::net::egress::EgressPolicy::new(&self.egress.allow, &implicit)
            .map_err(ConfigError::Invalid)
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::Invalid(format!("listen: `{}` is not ADDR:PORT", self.listen))
        })
    }

    /// The deployment region as a validated value.
    pub fn region(&self) -> Region {
        // validated in `load`; fall back to "local" only for hand-built settings in tests.
        Region::parse(&self.region).unwrap_or_else(|_| Region::local())
    }

    /// Path of the license file.
    pub fn license_path(&self) -> PathBuf {
        self.license
            .file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("license.jwt"))
    }

    /// Directory backups are written into: `[backup] dir`, else `<data>/backups`.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }

    /// Every file or directory holding data or secrets of this deployment: the data dir, the
    /// master key, the license, the backup dir, the config file and the configured secret files
    /// (TLS key, metrics token, AI key). The embedded runner hides them from the browser.
    pub fn secret_paths(&self) -> Vec<PathBuf> {
        let mut out = vec![
            self.data_dir.clone(),
            self.master_key_path(),
            self.license_path(),
            self.backup_dir(),
        ];
        out.extend(self.loaded_from.clone());
        out.extend(self.tls.key_file.clone());
        out.extend(self.metrics.token_file.clone());
        if let Some(e) = &self.ai.endpoint {
            out.extend(e.api_key_file.clone());
        }
        out
    }

    /// Path of the master key file.
    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("master.key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:0\"\n[tls]\nmode = \"on\"\nbogus_key = 1\n",
        )
        .unwrap();
        let err = Settings::load(Some(&f), &CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus_key"), "{err}");
    }

    #[test]
    fn cli_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9000\"\nregion = \"eus\"\n").unwrap();
        let cli = CliOverrides {
            listen: Some("127.0.0.1:0".into()),
            data_dir: None,
        };
        let s = Settings::load(Some(&f), &cli).unwrap();
        assert_eq!(s.listen, "127.0.0.1:0");
        assert_eq!(s.region, "eus");
    }

    #[test]
    fn secret_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tok");
        std::fs::write(&t, "s3cret\n").unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, format!("[metrics]\ntoken_file = \"{}\"\n", t.display())).unwrap();
        let s = Settings::load(Some(&f), &CliOverrides::default()).unwrap();
        assert_eq!(s.metrics.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn shipped_example_config_parses() {
        let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/flowguard.toml");
        Settings::load(Some(&f), &CliOverrides::default()).unwrap();
        // Every commented key, uncommented, is still a known key.
        let text = std::fs::read_to_string(&f).unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ai-api.key");
        std::fs::write(&key, "sk-example\n").unwrap();
        let ca = dir.path().join("ai-ca.pem");
        let ck = rcgen::generate_simple_self_signed(vec!["llm.corp.example".to_string()]).unwrap();
        std::fs::write(&ca, ck.cert.pem()).unwrap();
        let g = dir.path().join("all.toml");
        std::fs::write(
            &g,
            uncommented
                .replace("/etc/flowguard/metrics.token", "/dev/null")
                .replace("/etc/flowguard/ai-api.key", key.to_str().unwrap())
                .replace("/etc/flowguard/ai-ca.pem", ca.to_str().unwrap()),
        )
        .unwrap();
        let r = Settings::load(Some(&g), &CliOverrides::default());
        assert!(r.is_ok(), "{:?}", r.err());
    }

    #[test]
    fn key_settings_validated() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[keys]\nrotation_days = 30\nrotation_cron = \"*/5 * * * * *\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f), &CliOverrides::default()).unwrap();
        assert_eq!(s.keys.rotation_days, 30);
        for bad in [
            "[keys]\nrotation_days = 0\n",
            "[keys]\nrotation_cron = \"every day\"\n",
            "[keys]\nrotation_cron = \"0 3 * * *\"\n",
            "[keys]\nrewrap_batch = 0\n",
        ] {
            std::fs::write(&f, bad).unwrap();
            assert!(
                Settings::load(Some(&f), &CliOverrides::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn plaintext_bench_stores_are_off_unless_set_explicitly() {
        assert!(!Settings::default().store.bench_plaintext_tenant_stores);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[store]\nbench_plaintext_tenant_stores = true\n").unwrap();
        let s = Settings::load(Some(&f), &CliOverrides::default()).unwrap();
        assert!(s.store.bench_plaintext_tenant_stores);
    }

    #[test]
    fn page_cache_setting_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[store]\npage_cache_kib = 32768\n").unwrap();
        let s = Settings::load(Some(&f), &CliOverrides::default()).unwrap();
        assert_eq!(s.store.page_cache_kib, 32768);
        for bad in [
            "[store]\npage_cache_kib = 0\n",
            "[store]\npage_cache_kib = 2000000\n",
            "[store]\nbusy_page_cache_kib = 100\n",
            "[store]\nbusy_page_cache_kib = 2000000\n",
            "[store]\nbusy_page_cache_budget_kib = 100\n",
            "[store]\nmax_open_tenants = 8\nbusy_stores = 9\n",
        ] {
            std::fs::write(&f, bad).unwrap();
            let err = Settings::load(Some(&f), &CliOverrides::default()).unwrap_err();
            assert!(
                err.to_string().contains("page_cache_kib")
                    || err.to_string().contains("page_cache_budget_kib")
                    || err.to_string().contains("busy_stores"),
                "{err}"
            );
        }
    }

    #[test]
    fn ai_endpoint_and_egress_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "sk-from-file\n").unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            format!(
                "[egress]\nallow = [\"10.0.0.0/8:443\"]\n[ai.endpoint]\nkind = \"anthropic-messages\"\nbase_url = \"https://gw.corp.example:8443\"\nmodel = \"claude\"\napi_key_file = \"{}\"\n",
                key.display()
            ),
        )
        .unwrap();
        let s = Settings::load(Some(&f), &CliOverrides::default()).unwrap();
        let ep = s.ai.endpoint.as_ref().unwrap();
        assert_eq!(ep.api_key.as_deref(), Some("sk-from-file"));
        assert!(
            !format!("{s:?}").contains("sk-from-file"),
            "Debug shows the key"
        );
        // The default endpoint's host:port is allowed implicitly.
        let p = s.egress_policy().unwrap();
        assert!(p
            .filter("gw.corp.example", 8443, &["192.0.2.1".parse().unwrap()])
            .is_ok());
        assert!(p
            .filter("gw.corp.example", 443, &["192.0.2.1".parse().unwrap()])
            .is_err());
        for (text, needle) in [
            ("[egress]\nallow = [\"bad host\"]\n", "egress.allow[0]"),
            (
                "[ai.endpoint]\nkind = \"x\"\nbase_url = \"https://a.example\"\nmodel = \"m\"\n",
                "ai.endpoint.kind",
            ),
            (
                "[ai.endpoint]\nkind = \"openai-chat\"\nbase_url = \"http://a.example\"\nmodel = \"m\"\n",
                "ai.endpoint.base_url",
            ),
            ("[ai]\nburst = 0\n", "ai.burst"),
        ] {
            std::fs::write(&f, text).unwrap();
            let err = Settings::load(Some(&f), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn bad_region_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "region = \"Bad Region\"\n").unwrap();
        assert!(Settings::load(Some(&f), &CliOverrides::default()).is_err());
    }

    #[test]
    fn egress_list_validated() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[egress]\nallow = [\"dc1.corp.example:636\", \"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f), &CliOverrides::default()).unwrap();
        assert_eq!(s.egress.allow.len(), 2);
        std::fs::write(&f, "[egress]\nallow = [\"10.0.0.0/99\"]\n").unwrap();
        let err = Settings::load(Some(&f), &CliOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/99"), "{err}");
    }
}
