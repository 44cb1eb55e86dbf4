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
        #[arg(long, required_unless_present = "catalog", conflicts_with = "catalog")]
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
        /// Limit to one tenant (id).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Parse arguments and run; errors print one line to stderr and exit 1.
pub fn main() -> ExitCode {
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
    crate::telemetry::init(&settings.log);
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
            for j in crate::jobs::JOBS {
                println!("{}\t{}", j.name, crate::jobs::cron_for(&settings, j));
            }
            Ok(())
        }
        Command::Keys { action } => keys(settings, action),
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

fn audit_verify(settings: Settings, tenant: Option<&str>, catalog: bool) -> anyhow::Result<()> {
    use crate::service::audit_export::{self, Chain};
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
    let n = crate::service::host::unlock_account(&opened.catalog, &account, tenant)?;
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
        for t in rows {
            println!("{}\t{}\t{}\t{}", t.id, t.name, t.region, t.plan);
        }
    }
    Ok(())
}

use crate::service::host::host_actor;

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
