//! `teleconsult`: the server (`serve`), invitations (`invite`, `revoke`, `cancel`), the
//! pre-accounts practitioner token (`token`) and billing exports.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use teleconsult::config::ExposeSecret;
use teleconsult::config::{Config, ConfigError, parse_duration};
use teleconsult::token::{self, Claims, Role};

/// `println!` for command output that may go to a closed pipe (`teleconsult token | head -1`):
/// a broken pipe ends the command quietly (exit 0, like other Unix tools) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, $($arg)*).and_then(|()| stdout.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("teleconsult: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }};
}

#[derive(Parser, Debug)]
#[command(
    name = "teleconsult",
    version,
    about = "Teleconsult telehealth video server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: web client, WebSocket signalling and media (SFU).
    Serve {
        /// TOML configuration file (every key: config/default.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Development mode: loopback only, plain HTTP on 8080, media UDP 40000, the public
        /// development secret; prints demo join links.
        #[arg(long)]
        dev: bool,
    },
    /// Invite a patient or guest: create the invitation (one seat) in the configured store,
    /// and the scheduled consultation if it does not exist yet; print the join link.
    Invite {
        /// Consultation id (letters, digits, `-`, `_`).
        #[arg(long)]
        consultation: String,
        /// patient or guest.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The seat's label as the practitioner wants to see it (a pseudonym; need not be a
        /// real name).
        #[arg(long)]
        label: String,
        /// When the consultation is scheduled (ISO-8601 UTC), for a new consultation: links
        /// are valid from 15 min before to 4 h after it (consultation.invitation_*_secs).
        #[arg(long, value_parser = parse_time)]
        at: Option<i64>,
        /// Organisation id of a new consultation (default in --dev: dev-organisation).
        #[arg(long)]
        organisation: Option<String>,
        /// Practitioner account id of a new consultation (default in --dev: dev-practitioner).
        #[arg(long)]
        practitioner: Option<String>,
        /// Policy of a new consultation: standard (default), recordable or end_to_end
        /// (docs/compliance.md); fixed once created.
        #[arg(long, value_parser = parse_policy)]
        policy: Option<teleconsult_store::Policy>,
        /// TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use the development configuration, secret and store.
        #[arg(long)]
        dev: bool,
    },
    /// Revoke one invitation (its link stops working at once).
    Revoke {
        /// The invitation id (`jti`), printed by `invite`.
        #[arg(long)]
        invitation: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long)]
        dev: bool,
    },
    /// Cancel a scheduled consultation: every invitation of it is revoked.
    Cancel {
        #[arg(long)]
        consultation: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long)]
        dev: bool,
    },
    /// (Pre-accounts) mint a practitioner's join token and print it with its join link.
    /// Patients and guests get invitations (`invite`).
    Token {
        /// Consultation id (letters, digits, `-`, `_`).
        #[arg(long)]
        consultation: String,
        /// The practitioner's account id, shown as their name until accounts exist.
        #[arg(long)]
        identity: String,
        /// practitioner (the only role a token may carry).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Lifetime, e.g. 90s, 15m, 2h, 1d (default: auth.token_ttl_secs).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use the development configuration and secret.
        #[arg(long)]
        dev: bool,
    },
    /// Billing records, read straight from the store (docs/billing.md).
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
    /// Organisations and staff accounts, written straight to the store (the first admin; after
    /// that, the admin page at /admin).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Recordings of consultations (docs/compliance.md): list them, export one to WebM.
    Recording {
        #[command(subcommand)]
        command: RecordingCommand,
    },
    /// Drain a running cluster node (a rolling update): it takes no new consultations, keeps
    /// the calls it carries until they end (at most --limit), then leaves the cluster and
    /// exits. Talks to the node's metrics listener with cluster.operator_token.
    Drain {
        /// The node's metrics listener (default: http://metrics.bind:metrics.port of the
        /// configuration, loopback for an unspecified bind).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// How long the node waits for its calls to end before it stops anyway, seconds
        /// (default: its cluster.drain_limit_secs).
        #[arg(long, value_name = "SECS")]
        limit: Option<u64>,
        /// How long this command waits for the node to exit, seconds (default: the limit plus
        /// a minute); it exits 0 once the node is gone, 2 if it is still running then.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        /// The configuration holding cluster.operator_token (and the metrics address).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long)]
        dev: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RecordingCommand {
    /// List the recordings in storage.data_dir/recordings: id, consultation, start, duration.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// TOML configuration file (storage.data_dir, documents.master_key).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use the development configuration.
        #[arg(long)]
        dev: bool,
    },
    /// Export a recording: one WebM file per participant (VP8 + Opus) and manifest.json in
    /// DIR (an audited access: `recording.export`).
    Export {
        /// The recording id (`rec_…`, from `list`).
        id: String,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
        /// Also render `composite.webm`: the participants side by side, their audio mixed
        /// (needs ffmpeg).
        #[arg(long)]
        composite: bool,
        /// TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use the development configuration.
        #[arg(long)]
        dev: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create an organisation (a clinic); prints its id.
    CreateOrganisation {
        /// The organisation's name.
        #[arg(long)]
        name: String,
        /// TOML configuration file (storage.*).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use the development configuration (embedded store in ./.teleconsult-data).
        #[arg(long)]
        dev: bool,
    },
    /// Create a staff account; prints its id. The password is read from a prompt (or, when
    /// standard input is not a terminal, its first line), never from the command line.
    CreateAccount {
        /// The organisation's id (from create-organisation).
        #[arg(long)]
        organisation: String,
        /// The login email.
        #[arg(long)]
        email: String,
        /// The name shown to colleagues and patients (default: the email).
        #[arg(long)]
        display_name: Option<String>,
        /// practitioner, billing or admin; repeat for several.
        #[arg(long = "role", required = true, value_parser = parse_staff_role)]
        roles: Vec<teleconsult::accounts::StaffRole>,
        /// TOML configuration file (storage.*, accounts.*).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use the development configuration.
        #[arg(long)]
        dev: bool,
    },
}

fn parse_staff_role(s: &str) -> Result<teleconsult::accounts::StaffRole, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
enum BillingCommand {
    /// Export consultation summaries starting in [--from, --to) as CSV or JSON.
    Export {
        /// Start of the period, ISO-8601 UTC (2026-01-01 or 2026-01-01T08:00:00Z), inclusive.
        #[arg(long, value_parser = parse_time)]
        from: i64,
        /// End of the period, ISO-8601 UTC, exclusive.
        #[arg(long, value_parser = parse_time)]
        to: i64,
        /// Only this practitioner's consultations (their identity).
        #[arg(long)]
        practitioner: Option<String>,
        /// csv or json.
        #[arg(long, default_value = "csv", value_parser = parse_format)]
        format: teleconsult::billing::ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// TOML configuration file (storage.*, billing.rounding).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use the development configuration (embedded store in ./.teleconsult-data).
        #[arg(long)]
        dev: bool,
    },
    /// (Benchmarks) Write COUNT synthetic consultation summaries into the store.
    #[command(hide = true)]
    Seed {
        #[arg(long)]
        count: u64,
        /// First consultation's start, ISO-8601 UTC; one starts every minute after it.
        #[arg(long, default_value = "2026-01-01", value_parser = parse_time)]
        start: i64,
        #[arg(long, default_value_t = 50)]
        practitioners: u32,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long)]
        dev: bool,
    },
}

fn parse_time(s: &str) -> Result<i64, String> {
    teleconsult::billing::time::parse(s)
}

fn parse_format(s: &str) -> Result<teleconsult::billing::ExportFormat, String> {
    s.parse()
}

fn parse_policy(s: &str) -> Result<teleconsult_store::Policy, String> {
    teleconsult_store::Policy::parse(s)
        .ok_or_else(|| format!("unknown policy {s:?}: expected standard, recordable or end_to_end"))
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Start-up errors are for people: no backtrace, one problem per line.
            match e.downcast_ref::<ConfigError>() {
                Some(ConfigError::Invalid(problems)) => {
                    eprintln!("teleconsult: invalid configuration:");
                    for p in problems {
                        eprintln!("  {p}");
                    }
                }
                _ => eprintln!("teleconsult: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, dev } => {
            init_tracing();
            let config = Config::load(config.as_deref(), dev)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(config, dev))
        }
        Command::Token {
            consultation,
            identity,
            role,
            ttl,
            config,
            dev,
        } => {
            anyhow::ensure!(
                role == Role::Practitioner,
                "--role: tokens are for practitioners only; invite patients and guests with `teleconsult invite`"
            );
            let config = Config::load_for_tokens(config.as_deref(), dev)?;
            let ttl = ttl.unwrap_or(Duration::from_secs(config.auth.token_ttl_secs));
            let token = mint(&config, &consultation, &identity, role, ttl)?;
            out!("{token}");
            out!("{}", config.join_link(&token));
            Ok(())
        }
        Command::Invite {
            consultation,
            role,
            label,
            at,
            organisation,
            practitioner,
            policy,
            config,
            dev,
        } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let (config, store) = open_store(config.as_deref(), dev).await?;
                let dev_default = |v: Option<String>, d: &str| v.or(dev.then(|| d.to_string()));
                let organisation = dev_default(organisation, teleconsult::invite::DEV_ORGANISATION);
                let practitioner = dev_default(practitioner, teleconsult::invite::DEV_PRACTITIONER);
                let (invitation, token) = teleconsult::invite::invite(
                    &*store,
                    &config,
                    teleconsult::invite::InviteRequest {
                        consultation: &consultation,
                        role,
                        label: &label,
                        scheduled_at: at,
                        organisation: organisation.as_deref(),
                        practitioner: practitioner.as_deref(),
                        policy,
                    },
                    teleconsult::consultation::invitation::now_millis(),
                )
                .await?;
                out!("invitation {}", invitation.jti);
                out!(
                    "valid {} to {}",
                    teleconsult::billing::time::format(invitation.not_before),
                    teleconsult::billing::time::format(invitation.expires)
                );
                out!("{}", config.join_link(&token));
                Ok(())
            })
        }
        Command::Revoke {
            invitation,
            config,
            dev,
        } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let (_, store) = open_store(config.as_deref(), dev).await?;
                store
                    .revoke_invitation(
                        &invitation,
                        teleconsult::consultation::invitation::now_millis(),
                    )
                    .await
                    .with_context(|| format!("--invitation {invitation}"))?;
                out!("invitation {invitation} revoked");
                Ok(())
            })
        }
        Command::Cancel {
            consultation,
            config,
            dev,
        } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let (_, store) = open_store(config.as_deref(), dev).await?;
                let n = store
                    .cancel_consultation(
                        &consultation,
                        teleconsult::consultation::invitation::now_millis(),
                    )
                    .await
                    .with_context(|| format!("--consultation {consultation}"))?;
                out!("consultation {consultation} cancelled; {n} invitations revoked");
                Ok(())
            })
        }
        Command::Billing { command } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(billing(command))
        }
        Command::Drain {
            url,
            limit,
            wait,
            config,
            dev,
        } => {
            let config = Config::load_for_tokens(config.as_deref(), dev)?;
            let token = config.cluster.operator_token.expose_secret();
            if token.is_empty() {
                anyhow::bail!(
                    "cluster.operator_token is not set in this configuration (or TELECONSULT_CLUSTER__OPERATOR_TOKEN): the node offers no drain endpoint without it"
                );
            }
            let url = url.unwrap_or_else(|| {
                let ip = if config.metrics.bind.is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    config.metrics.bind
                };
                format!(
                    "http://{}",
                    std::net::SocketAddr::new(ip, config.metrics.port)
                )
            });
            let limit_secs = limit.unwrap_or(config.cluster.drain_limit_secs);
            let wait = Duration::from_secs(wait.unwrap_or(limit_secs + 60));
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let outcome =
                runtime.block_on(teleconsult::drain::run(&url, token, limit, wait, |s| {
                    out!(
                        "{}: draining={} consultations={} participants={}",
                        s.node,
                        s.draining,
                        s.consultations,
                        s.participants
                    )
                }))?;
            match outcome {
                teleconsult::drain::Outcome::Exited => {
                    out!("drained: the node has exited");
                    Ok(())
                }
                teleconsult::drain::Outcome::StillRunning { participants } => {
                    eprintln!(
                        "teleconsult: the node is still draining ({participants} participants in calls); it exits when they end or its limit is reached"
                    );
                    std::process::exit(2);
                }
            }
        }
        Command::Recording { command } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(recording(command))
        }
        Command::Admin { command } => {
            let password = match &command {
                AdminCommand::CreateAccount { .. } => Some(read_password()?),
                AdminCommand::CreateOrganisation { .. } => None,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(admin(command, password))
        }
    }
}

/// The new account's password: prompted twice on a terminal, else the first line of standard
/// input (scripts: `printf '%s\n' "$PW" | teleconsult admin create-account ...`).
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password for the new account: ")
            .context("reading the password")?;
        let again =
            rpassword::prompt_password("Repeat the password: ").context("reading the password")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        anyhow::ensure!(
            !password.is_empty(),
            "no password on standard input (give it as the first line)"
        );
        Ok(password)
    }
}

async fn admin(command: AdminCommand, password: Option<String>) -> anyhow::Result<()> {
    use teleconsult::accounts::{AccountService, NewAccount, now_millis};
    let (config_path, dev) = match &command {
        AdminCommand::CreateOrganisation { config, dev, .. }
        | AdminCommand::CreateAccount { config, dev, .. } => (config.clone(), *dev),
    };
    let (config, store) = open_store(config_path.as_deref(), dev).await?;
    let problems = config.accounts.problems(dev);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems).into());
    }
    let accounts = AccountService::new(
        &config.accounts,
        store as std::sync::Arc<dyn teleconsult_store::AccountStore>,
    );
    match command {
        AdminCommand::CreateOrganisation { name, .. } => {
            let org = accounts
                .create_organisation(&name, now_millis())
                .await
                .context("--name")?;
            out!("{}", org.id);
            eprintln!("organisation created: {}", org.id);
        }
        AdminCommand::CreateAccount {
            organisation,
            email,
            display_name,
            roles,
            ..
        } => {
            let account = accounts
                .create_account(
                    &organisation,
                    NewAccount {
                        display_name: display_name.unwrap_or_else(|| email.clone()),
                        email,
                        roles,
                        password: password.unwrap_or_default(),
                    },
                    now_millis(),
                )
                .await
                .map_err(|e| match e {
                    teleconsult::accounts::AccountError::NotFound => {
                        anyhow::anyhow!("--organisation: no such organisation")
                    }
                    e => anyhow::anyhow!("{e}"),
                })?;
            out!("{}", account.id);
            eprintln!("account created: {}", account.id);
        }
    }
    Ok(())
}

/// Open the store a configuration names. Only what minting links checks is validated: the
/// billing commands need no TLS files or media settings.
async fn open_store(
    config: Option<&std::path::Path>,
    dev: bool,
) -> anyhow::Result<(Config, std::sync::Arc<dyn teleconsult_store::Store>)> {
    let config = Config::load_for_tokens(config, dev)?;
    let store = teleconsult_store::open(
        config.storage.mongodb_uri.expose_secret(),
        &config.storage.database,
        &config.storage.data_dir,
    )
    .await
    .context("storage: cannot open the store")?;
    Ok((config, store))
}

async fn recording(command: RecordingCommand) -> anyhow::Result<()> {
    use teleconsult::recording;
    match command {
        RecordingCommand::List { json, config, dev } => {
            let (config, store) = open_store(config.as_deref(), dev).await?;
            let keys = recording::master_keys(&config.documents)?;
            let all = recording::list(&*store, &config.storage.data_dir, &keys).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                out!("id\tconsultation\tstarted\tduration_s\tinterrupted\tstored");
                for r in &all {
                    out!(
                        "{}\t{}\t{}\t{:.1}\t{}\t{}",
                        r.id,
                        r.consultation,
                        teleconsult::billing::time::format(r.created_ms),
                        r.duration_secs,
                        r.interrupted,
                        r.stored
                    );
                }
            }
            Ok(())
        }
        RecordingCommand::Export {
            id,
            output,
            composite,
            config,
            dev,
        } => {
            let (config, store) = open_store(config.as_deref(), dev).await?;
            let keys = recording::master_keys(&config.documents)?;
            let manifest =
                recording::export(&*store, &config.storage.data_dir, &keys, &id, &output).await?;
            store
                .record_audit(&teleconsult_store::AuditEvent {
                    id: format!("a{:032x}", rand::random::<u128>()),
                    at: teleconsult::accounts::now_millis(),
                    actor: "cli".into(),
                    action: "recording.export".into(),
                    consultation: Some(manifest.consultation.clone()),
                    target: Some(id),
                })
                .await
                .context("recording the export in the audit log")?;
            for p in &manifest.participants {
                out!("{}", output.join(&p.file).display());
            }
            out!("{}", output.join("manifest.json").display());
            if composite {
                out!(
                    "{}",
                    recording::composite(&output, &manifest).await?.display()
                );
            }
            Ok(())
        }
    }
}

async fn billing(command: BillingCommand) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use std::io::Write;
    match command {
        BillingCommand::Export {
            from,
            to,
            practitioner,
            format,
            output,
            config,
            dev,
        } => {
            anyhow::ensure!(to > from, "--to must be after --from");
            let (config, store) = open_store(config.as_deref(), dev).await?;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("--output: cannot create {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, &mut out);
            // A spinner on standard error (hidden when it is not a terminal): the row count and
            // rate, since the total is not known in advance.
            let progress = indicatif::ProgressBar::new_spinner();
            progress.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {human_pos} consultations exported ({per_sec}, {elapsed})",
                )
                .context("progress bar template")?,
            );
            progress.enable_steady_tick(Duration::from_millis(200));
            let mut w = teleconsult::billing::ExportWriter::new(format, config.billing.rounding);
            let mut buf = String::with_capacity(64 * 1024);
            w.begin(&mut buf);
            let mut rows = store.export_summaries(teleconsult_store::ExportQuery {
                from,
                to,
                practitioner,
            });
            while let Some(row) = rows.next().await {
                let row = row.context("reading the store")?;
                w.row(&mut buf, &row);
                if buf.len() >= 60 * 1024 {
                    out.write_all(buf.as_bytes())
                        .context("writing the export")?;
                    buf.clear();
                }
                if w.rows().is_multiple_of(1024) {
                    progress.set_position(w.rows());
                }
            }
            w.end(&mut buf);
            out.write_all(buf.as_bytes())
                .context("writing the export")?;
            out.flush().context("writing the export")?;
            progress.finish_and_clear();
            eprintln!("{} consultations exported", w.rows());
            Ok(())
        }
        BillingCommand::Seed {
            count,
            start,
            practitioners,
            config,
            dev,
        } => {
            let (config, store) = open_store(config.as_deref(), dev).await?;
            let secret = config.auth.signing_secret.clone();
            let progress = indicatif::ProgressBar::new(count);
            let summaries = futures_util::stream::iter(0..count).map(|i| {
                let store = store.clone();
                let secret = secret.clone();
                async move {
                    let consultation = format!("seed-{i:09}");
                    let billable_ms = ((i * 7919) % 3_600_000) as i64;
                    let summary = teleconsult_store::ConsultationSummary {
                        patient_pseudonym: teleconsult::billing::patient_pseudonym(
                            secret.expose_secret().as_bytes(),
                            &consultation,
                            "seed patient",
                        ),
                        practitioner: format!("Dr Seed {}", i % u64::from(practitioners.max(1))),
                        start: start + i as i64 * 60_000,
                        end: Some(start + i as i64 * 60_000 + billable_ms + 30_000),
                        billable_ms,
                        participants: 2 + (i % 3) as u32,
                        recovered: i % 1000 == 0,
                        consultation,
                    };
                    store.upsert_consultation_summary(&summary).await
                }
            });
            let mut done = summaries.buffer_unordered(32);
            while let Some(r) = done.next().await {
                r.context("writing a seeded summary")?;
                progress.inc(1);
            }
            progress.finish();
            Ok(())
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| "info".to_string());
    let filter = teleconsult::telemetry::log_filter(&spec);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Sign a token for `consultation`/`identity`/`role`, valid for `ttl` from now.
fn mint(
    config: &Config,
    consultation: &str,
    identity: &str,
    role: Role,
    ttl: Duration,
) -> anyhow::Result<String> {
    if consultation.is_empty()
        || consultation.len() > 128
        || !consultation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        anyhow::bail!("--consultation: 1 to 128 letters, digits, '-' or '_'");
    }
    if identity.trim().is_empty() || identity.len() > 200 {
        anyhow::bail!("--identity: must be non-empty and at most 200 bytes");
    }
    if ttl.is_zero() {
        anyhow::bail!("--ttl: must be positive");
    }
    let claims = Claims {
        consultation: consultation.to_string(),
        identity: identity.to_string(),
        role,
        exp: token::unix_now().saturating_add(ttl.as_secs()),
    };
    Ok(token::sign(
        config.auth.signing_secret.expose_secret().as_bytes(),
        &claims,
    ))
}

async fn serve(config: Config, dev: bool) -> anyhow::Result<()> {
    let mut server = teleconsult::server::start(config).await?;
    if dev {
        // The join link for the address actually bound (the port may have been 0).
        let mut shown = (*server.state.config).clone();
        shown.server.port = server.http_addr.port();
        out!("Development mode: never expose this server; its signing secret is public.");
        // A demo organisation and practitioner account (idempotent) owning the demo
        // consultation: the practitioner signs in and lands in its call (their session is the
        // credential; the consultation id travels in the fragment, no token anywhere).
        let demo = server
            .state
            .accounts
            .ensure_demo(teleconsult::accounts::now_millis())
            .await
            .context("preparing the demo account")?;
        let patient = teleconsult::invite::dev_demo(
            &*server.state.store,
            &server.state.config,
            "demo",
            &demo.organisation.id,
            &demo.account.id,
            teleconsult::consultation::invitation::now_millis(),
        )
        .await
        .context("creating the demo consultation's patient invitation")?;
        out!(
            "Practitioner link: {}/login#next=/workspace&start=demo",
            shown.base_url()
        );
        out!("  email:           {}", demo.account.email);
        out!("  password:        {}", demo.password);
        out!("Patient link:      {}", shown.join_link(&patient));
        out!(
            "Metrics (Prometheus): http://{}/metrics",
            server.metrics_addr
        );
    }

    // `teleconsult drain` (crate::drain) asks for the same drain as SIGTERM, with its limit.
    let drain_requested = {
        let node = server.state.cluster.clone();
        async move {
            match node {
                Some(node) => node.drain_requested().await,
                None => std::future::pending().await,
            }
        }
    };
    let mut limit = Duration::from_secs(server.state.config.cluster.drain_limit_secs);
    tokio::select! {
        result = server.wait() => {
            result?;
            anyhow::bail!("HTTP server stopped unexpectedly");
        }
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("shutting down");
        }
        asked = drain_requested => {
            limit = asked;
            tracing::info!(limit_secs = limit.as_secs(), "draining on the operator's request");
        }
    }
    if server.state.cluster.is_some() {
        // A rolling update: let the calls here end (a second signal stops at once).
        tokio::select! {
            _ = server.drain(limit) => {}
            signal = shutdown_signal() => {
                signal?;
                tracing::warn!("second signal: stopping without waiting for calls to end");
            }
        }
    }
    server.shutdown().await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn token_command_parses() {
        let cli = Cli::try_parse_from([
            "teleconsult",
            "token",
            "--consultation",
            "c1",
            "--identity",
            "Dr A",
            "--role",
            "patient",
            "--ttl",
            "15m",
            "--dev",
        ])
        .expect("parses");
        match cli.command {
            Command::Token { role, ttl, dev, .. } => {
                assert_eq!(role, Role::Patient);
                assert_eq!(ttl, Some(Duration::from_secs(900)));
                assert!(dev);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from([
                "teleconsult",
                "token",
                "--consultation",
                "c1",
                "--identity",
                "x",
                "--role",
                "doctor"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "teleconsult",
                "token",
                "--consultation",
                "c1",
                "--identity",
                "x",
                "--role",
                "guest",
                "--ttl",
                "2x"
            ])
            .is_err()
        );
    }

    #[test]
    fn invite_command_parses() {
        let cli = Cli::try_parse_from([
            "teleconsult",
            "invite",
            "--consultation",
            "c1",
            "--role",
            "guest",
            "--label",
            "Interpreter",
            "--at",
            "2026-12-01T10:00:00Z",
            "--dev",
        ])
        .expect("parses");
        match cli.command {
            Command::Invite { role, at, dev, .. } => {
                assert_eq!(role, Role::Guest);
                assert_eq!(at, Some(1_796_119_200_000));
                assert!(dev);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from([
                "teleconsult",
                "invite",
                "--consultation",
                "c1",
                "--role",
                "patient"
            ])
            .is_err(),
            "--label is required"
        );
    }

    #[test]
    fn minted_token_verifies() {
        let config = Config::dev();
        let t = mint(
            &config,
            "demo",
            "Dr A",
            Role::Practitioner,
            Duration::from_secs(60),
        )
        .expect("mint");
        let claims = token::verify(
            config.auth.signing_secret.expose_secret().as_bytes(),
            &t,
            token::unix_now(),
        )
        .expect("verifies");
        assert_eq!(claims.consultation, "demo");
        assert_eq!(claims.role, Role::Practitioner);
        assert!(
            mint(
                &config,
                "../x",
                "Dr A",
                Role::Guest,
                Duration::from_secs(60)
            )
            .is_err()
        );
        assert!(mint(&config, "demo", " ", Role::Guest, Duration::from_secs(60)).is_err());
    }
}
