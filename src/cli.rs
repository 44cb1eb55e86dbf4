//! Command line (clap): `serve`, `init`, `tenant`, `jobs`, `users unlock`, `keys`, `audit`,
//! `license issue|install`, `agent run`, `--version`. `--config FILE` and `--data-dir DIR` work on
//! every subcommand (the agent uses neither).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::audit::NewAuditEvent;
use crate::auth::password;
use crate::config::{CliOverrides, Settings};
use crate::service::tenants::{self, Created};
use crate::startup;

/// FlowGuard Appliance: self-hosted end-to-end test automation in one binary.
#[derive(Parser, Debug)]
#[command(name = "flowguard", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (defaults → this file → FLOWGUARD_* env → flags).
    #[arg(long, global = true, env = "FLOWGUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./flowguard-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTPS appliance (bootstraps an empty data dir on first start).
    Serve(ServeArgs),
    /// Initialise a new data dir non-interactively and print the tenant id.
    Init(InitArgs),
    /// Tenant maintenance on the host (create, list).
    Tenant {
        /// Action.
        #[command(subcommand)]
        action: TenantCommand,
    },
    /// Background jobs.
    Jobs {
        /// Action.
        #[command(subcommand)]
        action: JobsCommand,
    },
    /// Tenant user maintenance on the host.
    Users {
        /// Action.
        #[command(subcommand)]
        action: UsersCommand,
    },
    /// Key lifecycle: status, tenant key rotation, master key rotation.
    Keys {
        /// Action.
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Audit trail: verify a chain, verify an export file.
    Audit {
        /// Action.
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Licenses: sign one (vendor side) or install one offline.
    License {
        /// Action.
        #[command(subcommand)]
        action: LicenseCommand,
    },
    /// Backups: create one (while `serve` runs or not) and verify one.
    Backup {
        /// Action.
        #[command(subcommand)]
        action: BackupCommand,
    },
    /// Restore a backup into an empty or absent data dir (`--data-dir NEW`): checks the master
    /// key and verifies the backup before writing anything, then verifies the restored files.
    Restore(RestoreArgs),
    /// Check a data dir's health (server running or not): stores open and pass the integrity
    /// checks, sealed values that do not decrypt (per table and column), WAL sizes, free disk,
    /// license, clock. Exit 1 when there is a finding, each with what to do.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The built-in agent: run flows in headless Chromium and report to an appliance.
    Agent {
        /// Action.
        #[command(subcommand)]
        action: AgentCommand,
    },
}

/// `keys` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Show every tenant's key versions, states and next rotation.
    Status {
        /// Only this tenant (id or name).
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rotate tenant key sets now (or finish interrupted rotations). The server must be stopped;
    /// a running server rotates through `POST /api/v1/keys/rotate` and its key-rotation job.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["tenant", "all"])))]
    Rotate {
        /// The tenant to rotate (id or name).
        #[arg(long)]
        tenant: Option<String>,
        /// Rotate every tenant.
        #[arg(long)]
        all: bool,
    },
    /// Re-wrap every tenant key set under a new master key and re-key the catalog, then install
    /// the new key as the master key file (the old key is no longer needed afterwards). The
    /// server must be stopped. Resumable: after an interruption, rerun with the same file.
    RotateMaster {
        /// File holding the new master key: 32 raw random bytes, mode 0600 or 0400
        /// (e.g. `head -c 32 /dev/urandom > new.key; chmod 600 new.key`).
        #[arg(long, value_name = "F")]
        new_key_file: PathBuf,
    },
}

/// `backup` subcommands.
#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Write `DIR/flowguard-backup-<UTC yyyymmddThhmmssZ>/`: a consistent snapshot of the
    /// catalog and every (or each named) tenant store, the screenshot files, the license, the
    /// wrapped audit-signing key and a signed manifest. Never the master key.
    Create {
        /// Directory to write the backup into (default `[backup] dir`, else `<data>/backups`).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Only these tenants' stores (repeatable; the catalog is always included).
        #[arg(long = "tenant", value_name = "ID")]
        tenants: Vec<String>,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Verify a backup: signature, every file's SHA-256, every store opens with its key
    /// (unwrapped by the master key of `--data-dir`), integrity checks, row counts, audit
    /// chains. Exit 0, or 1 naming the first problem.
    Verify {
        /// The backup directory.
        dir: PathBuf,
        /// Master key file to use instead of the data dir's.
        #[arg(long, value_name = "FILE")]
        master_key: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `restore` flags.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup directory.
    pub dir: PathBuf,
    /// The master key file the backup was made under (default: the configured
    /// `master_key_file`; required when none is configured). Installed as `<NEW>/keys/master.key` unless a
    /// `master_key_file` is configured.
    #[arg(long, value_name = "FILE")]
    pub master_key: Option<PathBuf>,
}

/// `agent` subcommands.
#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Claim queued runs of the token's application, execute them and report. The agent token
    /// is read from the FLOWGUARD_AGENT_TOKEN environment variable only.
    Run(AgentRunArgs),
}

/// `agent run` flags.
#[derive(Args, Debug)]
pub struct AgentRunArgs {
    /// Appliance URL, e.g. https://flowguard.internal:8443 (http:// only for loopback).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// PEM file with the CA (or self-signed certificate) to trust for the server; when given it
    /// is the only trust anchor.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Handle at most one run, then exit.
    #[arg(long, conflicts_with_all = ["flow", "poll_interval"])]
    pub once: bool,
    /// Wait between claims when nothing is queued (e.g. 5s, 500ms, 1m).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_interval)]
    pub poll_interval: std::time::Duration,
    /// Chromium executable (default: chromium, chromium-browser, google-chrome on PATH).
    #[arg(long, value_name = "PATH")]
    pub chromium: Option<PathBuf>,
    /// Queue a run of this flow first (needs --wait).
    #[arg(long, value_name = "ID", requires = "wait")]
    pub flow: Option<String>,
    /// With --flow: execute that run, print its verdict and exit non-zero unless it passed.
    #[arg(long, requires = "flow")]
    pub wait: bool,
    /// When the agent runs as root, the browser runs as this user (it must not be root).
    #[arg(long, value_name = "USER", default_value = "nobody")]
    pub browser_user: String,
    /// Run Chromium without its sandbox when the sandbox cannot start (logged as a warning).
    #[arg(long)]
    pub allow_no_sandbox: bool,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 5s, 500ms, 1m)"))?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(3600) {
        return Err("must be between 100ms and 1h".into());
    }
    Ok(d)
}

/// `audit` subcommands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk a tenant's (or the catalog's) audit hash chain; exit 1 naming the first bad row.
    Verify {
        /// Tenant id or name.
        #[arg(long, conflicts_with = "catalog")]
        tenant: Option<String>,
        /// Verify the catalog chain instead.
        #[arg(long)]
        catalog: bool,
    },
    /// Verify an export file (CSV or NDJSON) offline: exit 0 when complete and untouched, 1
    /// naming the reason otherwise.
    VerifyExport {
        /// The export file.
        file: PathBuf,
        /// The audit-signing public key (SPKI PEM, from GET /api/v1/audit/signing-key).
        #[arg(long, value_name = "PEM")]
        public_key: PathBuf,
    },
}

/// `license` subcommands.
#[derive(Subcommand, Debug)]
pub enum LicenseCommand {
    /// Sign a license and print the token (vendor side). With `--data-dir`, the issue is also
    /// recorded in that deployment's catalog audit (`license.issue`).
    Issue(IssueArgs),
    /// Verify a license token file and install it as this deployment's license file (offline;
    /// a running server picks it up on SIGHUP or `POST /api/v1/platform/license/reload`).
    Install {
        /// File holding the token.
        file: PathBuf,
    },
    /// Start the 30-day offline trial: every licensed feature, once per deployment, no vendor
    /// contact (recorded in the catalog and audited as `license.trial_start`). It ends into Free
    /// without deleting anything; installing a license replaces it. A running server picks it up
    /// within 10 minutes, on SIGHUP or `POST /api/v1/platform/license/reload`.
    Trial,
}

/// `license issue` flags.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Ed25519 private key (PKCS#8 PEM) to sign with.
    #[arg(
        long,
        value_name = "PEM",
        required_unless_present = "dev",
        conflicts_with = "dev"
    )]
    pub signing_key: Option<PathBuf>,
    /// Sign with the published development key (only in builds with `dev-license-key`).
    #[arg(long)]
    pub dev: bool,
    /// License id (default: a random UUID).
    #[arg(long)]
    pub license_id: Option<String>,
    /// Licensee (customer name).
    #[arg(long, default_value = "FlowGuard customer")]
    pub licensee: String,
    /// Plan: free, pro, business or enterprise.
    #[arg(long)]
    pub plan: String,
    /// Features, comma-separated (known: audit.export, regions).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Most applications per tenant (default: unlimited).
    #[arg(long)]
    pub max_applications: Option<u32>,
    /// Most active users per tenant (default: unlimited).
    #[arg(long)]
    pub max_users: Option<u32>,
    /// Retention days for Enterprise tenants (default: the plan's, 365 for Enterprise).
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Regions tenants may be created in, comma-separated (default: any).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Start of validity, RFC 3339 (default: now).
    #[arg(long, value_name = "RFC3339")]
    pub not_before: Option<String>,
    /// Expiry, RFC 3339.
    #[arg(long, value_name = "RFC3339")]
    pub expires: String,
}

/// `serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Listen address ADDR:PORT (port 0 picks a free port; see <data>/listen.addr).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
}

/// `init` flags.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Name of the first tenant.
    #[arg(long)]
    pub tenant_name: String,
    /// Email of its Owner.
    #[arg(long)]
    pub owner_email: String,
    /// File holding the Owner's password (else one is generated and printed).
    #[arg(long, value_name = "FILE")]
    pub owner_password_file: Option<PathBuf>,
    /// Also create a PlatformAdmin with this email.
    #[arg(long)]
    pub platform_admin_email: Option<String>,
    /// File holding the PlatformAdmin's password (else one is generated and printed).
    #[arg(long, value_name = "FILE", requires = "platform_admin_email")]
    pub platform_admin_password_file: Option<PathBuf>,
    /// Print one JSON object (tenant id and any generated passwords).
    #[arg(long)]
    pub json: bool,
}

/// `tenant` subcommands.
#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant in this deployment's region with one Owner; prints the tenant id.
    Create {
        /// Unique tenant name.
        #[arg(long)]
        name: String,
        /// Owner email.
        #[arg(long)]
        owner_email: String,
        /// File holding the Owner's password (else one is generated and printed).
        #[arg(long, value_name = "FILE")]
        owner_password_file: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List tenants (id, name, region, plan).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `jobs` subcommands.
#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Run one job now against the data dir (`schedules`, `agent-timeouts`, `key-rotation`; the
    /// last only with the server stopped).
    #[command(alias = "run-once")]
    Run {
        /// Job name.
        name: String,
        /// Evaluate as of this instant (RFC 3339; default now). Only `retention` (e.g. to catch
        /// up after downtime; it then prints its per-tenant report as JSON) and `schedules`
        /// (runs due at that instant are queued and anchored there) take it.
        #[arg(long, value_name = "RFC3339")]
        as_of: Option<String>,
    },
    /// List the jobs and their cron expressions.
    List,
}

/// `users` subcommands.
#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Break-glass: clear login throttling for an account (all addresses).
    Unlock {
        /// Account email.
        email: String,
        /// Limit to one tenant (id or name).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Parse arguments and run; errors print one line to stderr and exit 1.
pub fn main() -> ExitCode {
    // The embedded runner starts isolated browsers through this binary (a fresh `exec`, so no
    // copy of the server's memory); see `agent::browser::exec_helper`.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::agent::browser::EXEC_HELPER)
    {
        return crate::agent::browser::exec_helper(&args[2..]);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowguard: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // The agent is a client: it reads no data dir or server settings.
    if let Command::Agent {
        action: AgentCommand::Run(a),
    } = cli.command
    {
        return agent_run(a);
    }
    let listen = match &cli.command {
        Command::Serve(a) => a.listen.clone(),
        _ => None,
    };
    let settings = Settings::load(
        cli.config.as_deref(),
        &CliOverrides {
            data_dir: cli.data_dir.clone(),
            listen,
        },
    )?;
    let mode = match &cli.command {
        Command::Serve(_) => crate::telemetry::Mode::Server,
        _ => crate::telemetry::Mode::Cli,
    };
    crate::telemetry::init(&settings.log, mode);
    // Only `serve` upgrades a data dir. Every host command may run beside a server (of this or
    // an older release, review 3 F14) or before the upgrade is meant to happen, so it refuses a
    // store below this binary's schema version (naming both versions) instead of migrating it.
    // Creating a new store (`init`, `tenant create`) is not a migration and stays allowed.
    if !matches!(cli.command, Command::Serve(_)) {
        startup::forbid_migrations();
    }
    match cli.command {
        Command::Serve(_) => startup::serve(settings),
        Command::Init(a) => init(settings, a),
        Command::Users {
            action: UsersCommand::Unlock { email, tenant },
        } => unlock(settings, &email, tenant.as_deref()),
        Command::Tenant {
            action:
                TenantCommand::Create {
                    name,
                    owner_email,
                    owner_password_file,
                    json,
                },
        } => tenant_create(
            settings,
            &name,
            &owner_email,
            owner_password_file.as_deref(),
            json,
        ),
        Command::Tenant {
            action: TenantCommand::List { json },
        } => tenant_list(settings, json),
        Command::Agent {
            action: AgentCommand::Run(a),
        } => agent_run(a),
        Command::Jobs {
            action: JobsCommand::List,
        } => {
            let mut table = Table::new(&["JOB", "SCHEDULE (CRON)"]);
            for j in crate::jobs::JOBS {
                table.row(vec![
                    j.name.to_string(),
                    crate::jobs::cron_for(&settings, j).unwrap_or_else(|| "(not scheduled)".into()),
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        Command::Keys { action } => keys(settings, action),
        Command::Backup {
            action: BackupCommand::Create { to, tenants, json },
        } => backup_create(settings, to, &tenants, json),
        Command::Backup {
            action:
                BackupCommand::Verify {
                    dir,
                    master_key,
                    json,
                },
        } => backup_verify(settings, &dir, master_key.as_deref(), json),
        Command::Restore(a) => restore(settings, a),
        Command::Doctor { json } => doctor(settings, json),
        Command::Audit {
            action: AuditCommand::Verify { tenant, catalog },
        } => audit_verify(settings, tenant.as_deref(), catalog),
        Command::Audit {
            action: AuditCommand::VerifyExport { file, public_key },
        } => audit_verify_export(&file, &public_key),
        Command::License {
            action: LicenseCommand::Issue(a),
        } => license_issue(settings, cli.data_dir.is_some(), a),
        Command::License {
            action: LicenseCommand::Install { file },
        } => license_install(settings, &file),
        Command::License {
            action: LicenseCommand::Trial,
        } => license_trial(settings),
        Command::Jobs {
            action: JobsCommand::Run { name, as_of },
        } if name == crate::jobs::RETENTION_JOB => jobs_retention(settings, as_of.as_deref()),
        Command::Jobs {
            action:
                JobsCommand::Run {
                    name,
                    as_of: Some(as_of),
                },
        } if name == crate::jobs::SCHEDULES_JOB => {
            let t = parse_time("--as-of", &as_of)?;
            let t = chrono::DateTime::from_timestamp(t, 0)
                .ok_or_else(|| anyhow::anyhow!("--as-of: `{as_of}` is out of range"))?;
            let opened = startup::open_data_dir(&settings, false)?;
            let state = startup::build_state(std::sync::Arc::new(settings), opened)?;
            let n = crate::service::runs::queue_scheduled_at(&state, t);
            println!("{name}: {n} handled");
            Ok(())
        }
        Command::Jobs {
            action: JobsCommand::Run { name, as_of },
        } => {
            if as_of.is_some() {
                anyhow::bail!("--as-of applies to the `retention` and `schedules` jobs only");
            }
            let _lock = if crate::jobs::EXCLUSIVE_JOBS.contains(&name.as_str()) {
                Some(startup::lock_data_dir(&settings.data_dir)?)
            } else {
                None
            };
            let opened = startup::open_data_dir(&settings, false)?;
            let state = startup::build_state(std::sync::Arc::new(settings), opened)?;
            // Jobs that talk to customer systems (the ticket outbox) drive async clients from
            // their blocking pass; give them a runtime context as `serve` does.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let _ctx = rt.enter();
            let n = crate::jobs::run_once(&state, &name).ok_or_else(|| {
                anyhow::anyhow!("unknown job `{name}` (see `flowguard jobs list`)")
            })?;
            println!("{name}: {n} handled");
            Ok(())
        }
    }
}

fn agent_run(a: AgentRunArgs) -> anyhow::Result<()> {
    let passed = crate::agent::run(crate::agent::Options {
        server: a.server,
        ca_file: a.ca_file,
        once: a.once,
        poll_interval: a.poll_interval,
        chromium: a.chromium,
        flow: a.flow,
        browser_user: a.browser_user,
        allow_no_sandbox: a.allow_no_sandbox,
    })?;
    if passed {
        Ok(())
    } else {
        Err(anyhow::anyhow!("the run did not pass"))
    }
}

fn parse_time(flag: &str, v: &str) -> anyhow::Result<i64> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp())
        .map_err(|_| anyhow::anyhow!("{flag}: `{v}` is not an RFC 3339 timestamp"))
}

fn license_issue(settings: Settings, record: bool, a: IssueArgs) -> anyhow::Result<()> {
    use crate::crypto::license::{self, LicenseClaims};
    use crate::domain::Plan;
    let plan = Plan::parse(&a.plan).map_err(|e| anyhow::anyhow!("--plan: {e}"))?;
    let features: Vec<String> = a
        .features
        .iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    license::check_known_features(&features).map_err(|e| anyhow::anyhow!("--features: {e}"))?;
    let regions: Vec<String> = a
        .regions
        .iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    let now = chrono::Utc::now().timestamp();
    let claims = LicenseClaims {
        jti: a.license_id.unwrap_or_else(crate::domain::new_object_id),
        iss: license::ISSUER.into(),
        sub: a.licensee,
        iat: now,
        nbf: match &a.not_before {
            Some(v) => parse_time("--not-before", v)?,
            None => now,
        },
        exp: parse_time("--expires", &a.expires)?,
        plan,
        features,
        max_applications: a.max_applications,
        max_users: a.max_users,
        retention_days: a
            .retention_days
            .unwrap_or_else(|| plan.default_retention_days().unwrap_or(365)),
        regions,
    };
    let token = if a.dev {
        issue_with_dev_key(&claims)?
    } else {
        let path = a
            .signing_key
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--signing-key or --dev is required"))?;
        let pem = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "--signing-key: cannot read {}: {}",
                path.display(),
                e.kind()
            )
        })?);
        license::issue(&claims, &pem, "vendor")?
    };
    if record {
        let opened = startup::open_data_dir(&settings, false)?;
        let ev = NewAuditEvent::new(
            &host_actor(),
            "license.issue",
            Some(format!("license:{}", claims.jti)),
        )
        .details(serde_json::json!({
            "license_id": claims.jti,
            "licensee": claims.sub,
            "plan": claims.plan,
            "features": claims.features,
            "expires_at": license::rfc3339(claims.exp),
            "signed_by": if a.dev { "dev" } else { "vendor" },
        }));
        crate::service::host::record_catalog_event(&opened.catalog, &ev)?;
    }
    println!("{token}");
    Ok(())
}

#[cfg(feature = "dev-license-key")]
fn issue_with_dev_key(c: &crate::crypto::license::LicenseClaims) -> anyhow::Result<String> {
    Ok(crate::crypto::license::issue_dev(c)?)
}

#[cfg(not(feature = "dev-license-key"))]
fn issue_with_dev_key(_: &crate::crypto::license::LicenseClaims) -> anyhow::Result<String> {
    anyhow::bail!(
        "--dev: this build does not include the development license key (build with the `dev-license-key` feature)"
    )
}

fn license_install(settings: Settings, file: &std::path::Path) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {}", file.display(), e.kind()))?;
    let opened = startup::open_data_dir(&settings, false)?;
    let path = settings.license_path();
    let s =
        crate::service::license::install_offline(&opened.catalog, &path, &token, &host_actor())?;
    println!(
        "installed license {} ({}, plan {}, expires {}) into {}",
        s.claims.jti,
        s.claims.sub,
        s.claims.plan,
        crate::crypto::license::rfc3339(s.claims.exp),
        path.display()
    );
    Ok(())
}

fn license_trial(settings: Settings) -> anyhow::Result<()> {
    let opened = startup::open_data_dir(&settings, false)?;
    let state = startup::build_state(std::sync::Arc::new(settings), opened)?;
    crate::service::license::load_at_start(&state, false)?;
    let t = crate::service::license::start_trial_blocking(&state, &host_actor())?;
    println!(
        "offline trial {} started: every licensed feature until {} ({} days); afterwards Free limits apply and nothing is deleted. A running server picks it up within 10 minutes (or now: `kill -HUP` it, or Reload on the License page).",
        t.trial_id,
        crate::crypto::license::rfc3339(t.ends_at),
        crate::service::license::TRIAL_DAYS
    );
    Ok(())
}

fn audit_verify(settings: Settings, tenant: Option<&str>, catalog: bool) -> anyhow::Result<()> {
    use crate::service::audit_export::{self, Chain};
    if tenant.is_none() && !catalog {
        anyhow::bail!(
            "say which audit chain to verify: --tenant ID_OR_NAME for a tenant's, or --catalog for the deployment's (see `flowguard tenant list`)"
        );
    }
    let opened = startup::open_data_dir(&settings, false)?;
    let chain = if catalog {
        Chain::Catalog
    } else {
        let r = tenant.unwrap_or_default().to_string();
        let row = crate::service::host::find_tenant(&opened.catalog, &r)?
            .ok_or_else(|| anyhow::anyhow!("--tenant: no tenant `{r}`"))?;
        Chain::Tenant(row.id)
    };
    let settings = std::sync::Arc::new(settings);
    let state = startup::build_state(settings, opened)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt
        .block_on(audit_export::verify(&state, &chain))
        .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    println!("{}", serde_json::to_string(&report)?);
    match &report.first_bad {
        None => Ok(()),
        Some(b) => anyhow::bail!(
            "audit chain broken at seq {} (id {}): {}",
            b.seq,
            b.id,
            b.reason
        ),
    }
}

fn audit_verify_export(file: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(key).map_err(|e| {
        anyhow::anyhow!("--public-key: cannot read {}: {}", key.display(), e.kind())
    })?;
    let public = crate::crypto::audit_signing::parse_public_key_pem(&pem)
        .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let bytes = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {}", file.display(), e.kind()))?;
    let v = crate::audit::export::verify_export(&bytes, &public)
        .map_err(|e| anyhow::anyhow!("{}: export NOT verified: {e}", file.display()))?;
    println!(
        "{}: verified {} export, {} rows, signed by key {}",
        file.display(),
        v.format,
        v.count,
        v.key_id
    );
    Ok(())
}

fn jobs_retention(settings: Settings, as_of: Option<&str>) -> anyhow::Result<()> {
    let as_of = as_of.map(|v| parse_time("--as-of", v)).transpose()?;
    let opened = startup::open_data_dir(&settings, false)?;
    let state = startup::build_state(std::sync::Arc::new(settings), opened)?;
    // Retention depends on the license: load it (without the startup gate).
    crate::service::license::load_at_start(&state, false)?;
    let report =
        crate::jobs::retention_blocking(&state, as_of.unwrap_or_else(crate::service::unix_now));
    println!("{}", serde_json::to_string(&report)?);
    if report.iter().any(|r| r.error.is_some()) {
        anyhow::bail!("retention failed for some tenants (see the report)");
    }
    Ok(())
}

fn init(settings: Settings, a: InitArgs) -> anyhow::Result<()> {
    if crate::service::host::is_initialised(&settings) {
        anyhow::bail!(
            "{} is already initialised; refusing to re-initialise",
            settings.data_dir.display()
        );
    }
    // Validate inputs before anything is written.
    crate::domain::TenantName::parse(&a.tenant_name)
        .map_err(|e| anyhow::anyhow!("--tenant-name: {e}"))?;
    crate::domain::Email::parse(&a.owner_email)
        .map_err(|e| anyhow::anyhow!("--owner-email: {e}"))?;
    if let Some(e) = &a.platform_admin_email {
        crate::domain::Email::parse(e)
            .map_err(|e| anyhow::anyhow!("--platform-admin-email: {e}"))?;
    }
    let (owner_pw, owner_generated) = match &a.owner_password_file {
        Some(f) => (tenants::read_password_file(f)?, false),
        None => (zeroize::Zeroizing::new(password::random_password()), true),
    };
    let admin_pw = match (&a.platform_admin_email, &a.platform_admin_password_file) {
        (Some(_), Some(f)) => Some((tenants::read_password_file(f)?, false)),
        (Some(_), None) => Some((zeroize::Zeroizing::new(password::random_password()), true)),
        _ => None,
    };
    let opened = startup::open_data_dir(&settings, true)?;
    let settings = std::sync::Arc::new(settings);
    let state = startup::build_state(settings.clone(), opened)?;
    let owner_hash = password::hash_blocking(&owner_pw)?;
    let tid = tenants::create_tenant(
        &state,
        &a.tenant_name,
        &a.owner_email,
        &owner_hash,
        owner_generated,
        None,
    )?;
    if let (Some(email), Some((pw, generated))) = (&a.platform_admin_email, &admin_pw) {
        tenants::create_platform_admin(
            &state.catalog,
            email,
            &password::hash_blocking(pw)?,
            *generated,
        )?;
    }
    let created = Created {
        tenant_id: tid.to_string(),
        tenant_name: a.tenant_name.trim().to_string(),
        owner_email: a.owner_email.trim().to_lowercase(),
        owner_password: owner_generated.then(|| owner_pw.to_string()),
        platform_admin_email: a.platform_admin_email.clone(),
        platform_admin_password: admin_pw
            .as_ref()
            .and_then(|(p, g)| g.then(|| p.to_string())),
    };
    if a.json {
        println!("{}", serde_json::to_string(&created)?);
    } else {
        println!("{}", created.tenant_id);
        if let Some(p) = &created.owner_password {
            eprintln!("owner {} one-time password: {p}", created.owner_email);
        }
        if let (Some(e), Some(p)) = (
            &created.platform_admin_email,
            &created.platform_admin_password,
        ) {
            eprintln!("platform admin {e} one-time password: {p}");
        }
    }
    Ok(())
}

fn unlock(settings: Settings, email: &str, tenant: Option<&str>) -> anyhow::Result<()> {
    let account = email.trim().to_lowercase();
    let opened = startup::open_data_dir(&settings, false)?;
    let tenant = match tenant {
        Some(t) => Some(
            crate::service::host::find_tenant(&opened.catalog, t)?
                .ok_or_else(|| {
                    anyhow::anyhow!("--tenant: no tenant `{t}` (see `flowguard tenant list`)")
                })?
                .id,
        ),
        None => None,
    };
    let n = crate::service::host::unlock_account(
        &opened.catalog,
        &account,
        tenant.as_ref().map(|t| t.as_str()),
    )?;
    if n == 0 {
        anyhow::bail!(
            "nothing to unlock: no failed sign-ins are recorded for {account}{}",
            tenant
                .map(|t| format!(" in tenant {t}"))
                .unwrap_or_default()
        );
    }
    println!("cleared {n} lockout counter(s) for {account}");
    Ok(())
}

fn tenant_create(
    settings: Settings,
    name: &str,
    owner_email: &str,
    pw_file: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    crate::domain::TenantName::parse(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    crate::domain::Email::parse(owner_email).map_err(|e| anyhow::anyhow!("--owner-email: {e}"))?;
    let (pw, generated) = match pw_file {
        Some(f) => (tenants::read_password_file(f)?, false),
        None => (zeroize::Zeroizing::new(password::random_password()), true),
    };
    let opened = startup::open_data_dir(&settings, false)?;
    let settings = std::sync::Arc::new(settings);
    let state = startup::build_state(settings.clone(), opened)?;
    let actor = host_actor();
    let tid = tenants::create_tenant(
        &state,
        name,
        owner_email,
        &password::hash_blocking(&pw)?,
        generated,
        Some(&actor),
    )?;
    let created = Created {
        tenant_id: tid.to_string(),
        tenant_name: name.trim().to_string(),
        owner_email: owner_email.trim().to_lowercase(),
        owner_password: generated.then(|| pw.to_string()),
        platform_admin_email: None,
        platform_admin_password: None,
    };
    if json {
        println!("{}", serde_json::to_string(&created)?);
    } else {
        println!("{}", created.tenant_id);
        if let Some(p) = &created.owner_password {
            eprintln!("owner {} one-time password: {p}", created.owner_email);
        }
    }
    Ok(())
}

fn tenant_list(settings: Settings, json: bool) -> anyhow::Result<()> {
    let opened = startup::open_data_dir(&settings, false)?;
    let rows = crate::service::host::list_tenants(&opened.catalog)?;
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        let mut table = Table::new(&["ID", "NAME", "REGION", "PLAN"]);
        for t in rows {
            table.row(vec![t.id.to_string(), t.name, t.region, t.plan]);
        }
        print!("{}", table.render());
    }
    Ok(())
}

use crate::service::host::host_actor;

/// A plain-text table for the CLI: a header row and left-aligned columns padded with spaces.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = width[i]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

fn backup_create(
    settings: Settings,
    to: Option<PathBuf>,
    tenants: &[String],
    json: bool,
) -> anyhow::Result<()> {
    use crate::service::backup;
    // A backup copies the data dir as it is; upgrading it is `serve`'s job.
    startup::forbid_migrations();
    let opened = startup::open_data_dir(&settings, false)?;
    let ids = tenants
        .iter()
        .map(|t| {
            crate::service::host::find_tenant(&opened.catalog, t)?
                .map(|r| r.id)
                .ok_or_else(|| anyhow::anyhow!("--tenant: no tenant `{t}`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let to = to.unwrap_or_else(|| settings.backup_dir());
    let bar = progress_bar("backup".into());
    let res = backup::create_cli(
        &settings,
        &opened.master,
        &opened.catalog,
        &to,
        (!ids.is_empty()).then_some(&ids[..]),
        &host_actor(),
        &|p| {
            bar.set_message(p.what.clone());
            bar.set_length(p.total.max(1));
            bar.set_position(p.done);
        },
    );
    bar.finish_and_clear();
    let s = res?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "backup written to {} ({} stores, {} screenshots, {} bytes, {} ms); manifest sha256 {}; restore needs the master key with id {}",
            s.dir.display(),
            s.stores,
            s.screenshots,
            s.bytes,
            s.duration_ms,
            s.manifest_sha256,
            s.master_key_id
        );
    }
    Ok(())
}

fn backup_verify(
    settings: Settings,
    dir: &std::path::Path,
    master_key: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    let key_path = master_key
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| settings.master_key_path());
    let master = crate::crypto::MasterKey::load(&key_path)?;
    let r = match crate::service::backup::verify_blocking(dir, &master) {
        Ok(r) => r,
        Err(e) => {
            if json {
                // Scripts reading `--json` get the failure on stdout too.
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "dir": dir, "error": format!("{e:#}")})
                );
            }
            anyhow::bail!("{}: NOT verified: {e:#}", dir.display());
        }
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: verified ({} stores, {} files, {} bytes, master key id {})",
            r.dir.display(),
            r.stores,
            r.files,
            r.bytes,
            r.master_key_id
        );
    }
    Ok(())
}

fn doctor(settings: Settings, json: bool) -> anyhow::Result<()> {
    // A health check writes nothing: every store is opened read-only (never created, never
    // migrated), no key file is created, the license clock is not recorded.
    startup::read_only();
    let opened = startup::open_data_dir(&settings, false)?;
    let state = startup::build_state(std::sync::Arc::new(settings), opened)?;
    let mut r = crate::service::doctor::examine_blocking(&state, crate::service::unix_now());
    crate::service::doctor::add_runner(&mut r, crate::runner::diagnose(&state.settings));
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        for s in &r.stores {
            let bad: u64 = s.sealed_undecryptable.values().sum();
            let checked: u64 = s.sealed_checked.values().sum();
            println!(
                "{}\topens={}\tintegrity={}\twal_bytes={}\tsealed={checked} undecryptable={bad}",
                s.name,
                s.opens,
                if s.integrity.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                },
                s.wal_bytes
            );
        }
        println!(
            "disk: {} bytes free, {} bytes of data; license: {}",
            r.free_bytes, r.data_bytes, r.license
        );
        if let Some(h) = &r.runner {
            if !h.enabled {
                println!("runner: off (runner.embedded_workers = 0)");
            } else {
                println!(
                    "runner: {} worker(s), chromium {} ({}), sandbox {}, /dev/shm {}",
                    h.workers,
                    h.chromium.as_deref().unwrap_or("NOT FOUND"),
                    h.chromium_version.as_deref().unwrap_or("version unknown"),
                    match (&h.sandbox, &h.sandbox_problem) {
                        (true, _) => "on".to_string(),
                        (false, Some(why)) => format!("NOT possible: {why}"),
                        (false, None) => "NOT possible".to_string(),
                    },
                    h.shm_bytes
                        .map(|b| format!("{} MiB", b >> 20))
                        .unwrap_or_else(|| "not mounted".into())
                );
                if !h.hidden.is_empty() {
                    println!("runner: hidden from the browser: {}", h.hidden.join(", "));
                }
                for w in &h.warnings {
                    println!("runner WARNING: {w}");
                }
            }
        }
        for f in &r.findings {
            println!(
                "FINDING [{}] {}: {}\n  what to do: {}",
                f.check, f.subject, f.problem, f.fix
            );
        }
    }
    if r.ok {
        Ok(())
    } else {
        anyhow::bail!("{} finding(s)", r.findings.len())
    }
}

fn restore(settings: Settings, a: RestoreArgs) -> anyhow::Result<()> {
    let key_path = match (&a.master_key, &settings.master_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(configured)) => configured.clone(),
        (None, None) => {
            let id = crate::service::backup::read_manifest(&a.dir)
                .map(|(_, m)| {
                    format!(
                        " (the backup was made under master key id {})",
                        m.master_key_id
                    )
                })
                .unwrap_or_default();
            anyhow::bail!(
                "--master-key FILE is required{id}: the new data dir has no master key yet; nothing was written"
            );
        }
    };
    let master = crate::crypto::MasterKey::load(&key_path)?;
    let target = crate::service::backup::RestoreTarget {
        data_dir: &settings.data_dir,
        license_file: settings.license_path(),
        master_key_dest: (a.master_key.is_some() && settings.master_key_file.is_none())
            .then(|| settings.master_key_path()),
    };
    let r = crate::service::backup::restore_blocking(&a.dir, &target, &master)?;
    println!(
        "restored {} into {} and verified it ({} stores, {} files, {} bytes)",
        a.dir.display(),
        r.dir.display(),
        r.stores,
        r.files,
        r.bytes
    );
    if r.license_outside {
        println!(
            "the backup's license is in {}; license.file is configured as {}: nothing is written outside --data-dir, install the license there if it is not the same",
            settings.data_dir.join("license.jwt").display(),
            settings.license_path().display()
        );
    }
    Ok(())
}

fn progress_bar(prefix: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {msg:>11} [{bar:32}] {pos}/{len} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

fn keys(settings: Settings, action: KeysCommand) -> anyhow::Result<()> {
    use crate::service::keys as svc;
    match action {
        KeysCommand::Status { tenant, json } => {
            let opened = startup::open_data_dir(&settings, false)?;
            let clock = svc::Clock::from_env();
            let tenants = match &tenant {
                Some(t) => vec![crate::service::host::find_tenant(&opened.catalog, t)?
                    .ok_or_else(|| anyhow::anyhow!("--tenant: no tenant `{t}`"))?],
                None => crate::service::host::list_tenants(&opened.catalog)?,
            };
            let rows = crate::service::host::key_status(
                &opened.catalog,
                &tenants,
                settings.keys.rotation_days,
                clock.now(),
            )?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("TENANT\tACTIVE\tPENDING\tNEXT ROTATION\tDUE\tVERSIONS");
                for s in rows {
                    let versions: Vec<String> = s
                        .versions
                        .iter()
                        .map(|v| format!("v{}:{}", v.version, v.state))
                        .collect();
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.tenant_id,
                        s.active_version.map(|v| v.to_string()).unwrap_or_default(),
                        s.pending_version
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        s.next_rotation_at.unwrap_or_default(),
                        if s.rotation_due { "yes" } else { "no" },
                        versions.join(" ")
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Rotate { tenant, all } => {
            let _lock = startup::lock_data_dir(&settings.data_dir)?;
            let opened = startup::open_data_dir(&settings, false)?;
            let state = startup::build_state(std::sync::Arc::new(settings), opened)?;
            let tenants = match (&tenant, all) {
                (Some(t), _) => vec![crate::service::host::find_tenant(&state.catalog, t)?
                    .ok_or_else(|| anyhow::anyhow!("--tenant: no tenant `{t}`"))?],
                (None, true) => crate::service::host::list_tenants(&state.catalog)?,
                (None, false) => anyhow::bail!("name a tenant with --tenant ID, or use --all"),
            };
            let actor = host_actor();
            let mut failed = 0;
            for row in tenants {
                let t = row.id.clone();
                let bar = progress_bar(row.id.to_string());
                let res = svc::rotate_tenant_blocking(&state, &t, &actor, &|p| {
                    bar.set_message(p.phase.as_str());
                    bar.set_length(p.total.max(1));
                    bar.set_position(p.done);
                });
                bar.finish_and_clear();
                match res {
                    Ok(r) => println!(
                        "{}: rotated v{} -> v{}{} ({} secrets, {} screenshots re-sealed)",
                        r.tenant_id,
                        r.from_version,
                        r.to_version,
                        if r.resumed {
                            " (finished an interrupted rotation)"
                        } else {
                            ""
                        },
                        r.secrets_resealed,
                        r.screenshots_resealed
                    ),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}: rotation failed: {e}", row.id);
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} rotation(s) failed; rerun to resume them");
            }
            Ok(())
        }
        KeysCommand::RotateMaster { new_key_file } => {
            let _lock = startup::lock_data_dir(&settings.data_dir)?;
            let bar = progress_bar("master key".into());
            bar.set_message("rewrap");
            let res =
                svc::rotate_master_blocking(&settings, &new_key_file, &host_actor(), &|d, n| {
                    bar.set_length(n.max(1));
                    bar.set_position(d);
                });
            bar.finish_and_clear();
            let r = res?;
            println!(
                "master key rotated to key id {}{}: {} tenant key(s) re-wrapped, catalog re-keyed, new key installed at {}; the old key{} is no longer needed",
                r.new_kek_id,
                if r.resumed { " (finished an interrupted rotation)" } else { "" },
                r.keys_rewrapped,
                r.installed_at.display(),
                if r.old_kek_id.is_empty() { String::new() } else { format!(" (id {})", r.old_kek_id) },
            );
            Ok(())
        }
    }
}
