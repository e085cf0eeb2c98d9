//! `teleconsult-loadtest`: run a scenario of synthetic participants (real WebRTC peers publishing
//! Opus and VP8) against a server and report quality and server cost.
//!
//! ```sh
//! teleconsult-loadtest --dev --server http://127.0.0.1:8080 --server-pid $(pgrep -n teleconsult) \
//!     one-to-one --consultations 10
//! teleconsult-loadtest --in-process --ramp --step 2 one-to-one --consultations 2
//! ```

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use teleconsult::config::ExposeSecret;
use teleconsult_loadtest::janus::Janus;
use teleconsult_loadtest::media::VideoVariant;
use teleconsult_loadtest::scenario::{self, Ramp, RunOptions, Scenario};
use teleconsult_loadtest::target::{Target, Teleconsult};

#[derive(Parser)]
#[command(name = "teleconsult-loadtest", version, about)]
struct Cli {
    /// The server's base URL (signalling at /ws).
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// The server's Prometheus scrape (its own listener, `[metrics]` in the configuration).
    #[arg(long, default_value = "http://127.0.0.1:9464/metrics", global = true)]
    metrics: String,
    /// Sign join tokens with the public development secret (`serve --dev`).
    #[arg(long, global = true)]
    dev: bool,
    /// The server's configuration file: its storage (patients' invitations are created there)
    /// and signing keys.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Sign join tokens with this secret (also from TELECONSULT_SIGNING_SECRET).
    #[arg(
        long,
        env = "TELECONSULT_SIGNING_SECRET",
        hide_env_values = true,
        global = true
    )]
    signing_secret: Option<String>,
    /// Start a server inside this process (test settings) instead of using --server. Its CPU
    /// figures then include the load generator's.
    #[arg(long, global = true)]
    in_process: bool,
    /// The server's process id: sample its CPU time and RSS from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Server under test.
    #[arg(long, value_enum, default_value = "teleconsult", global = true)]
    target: TargetKind,
    /// Janus's WebSocket API (with --target janus).
    #[arg(long, default_value = "ws://127.0.0.1:8188", global = true)]
    janus_url: String,
    /// Measurement window in seconds (per step in ramp mode).
    #[arg(long, default_value_t = 30, global = true)]
    duration: u64,
    /// Consultations started per second during ramp-up.
    #[arg(long, default_value_t = 2.0, global = true)]
    ramp_rate: f64,
    /// Seconds between the last join and the start of measuring.
    #[arg(long, default_value_t = 3, global = true)]
    settle: u64,
    /// Video: `low` (320x240, ~500 kbit/s) or `high` (640x360, ~1.2 Mbit/s).
    #[arg(long, value_enum, default_value = "low", global = true)]
    video: VideoVariant,
    /// Ramp mode: add --step consultations at a time until a limit is crossed.
    #[arg(long, global = true)]
    ramp: bool,
    #[arg(long, default_value_t = 2, global = true)]
    step: usize,
    /// Ramp mode: stop at this many consultations.
    #[arg(long, default_value_t = 200, global = true)]
    max_consultations: usize,
    /// Ramp limit: loss on any track, percent.
    #[arg(long, default_value_t = 1.0, global = true)]
    max_loss_percent: f64,
    /// Ramp limit: p99 forwarding latency on any track, milliseconds.
    #[arg(long, default_value_t = 20.0, global = true)]
    max_p99_ms: f64,
    /// Where report.json and report.html go.
    #[arg(long, default_value = "loadtest-results", global = true)]
    out: PathBuf,
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    scenario: ScenarioCmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetKind {
    Teleconsult,
    /// Janus's VideoRoom at --janus-url (benchmark only: scripts/bench).
    Janus,
}

#[derive(Subcommand)]
enum ScenarioCmd {
    /// N consultations of practitioner + patient, both publishing audio and video.
    OneToOne {
        #[arg(long, short = 'n', default_value_t = 1)]
        consultations: usize,
    },
    /// N consultations of K participants, all publishing.
    Group {
        #[arg(long, short = 'n', default_value_t = 1)]
        consultations: usize,
        #[arg(long, short = 'k', default_value_t = 4)]
        size: usize,
    },
    /// One publisher and N subscribers (a lecture or case conference).
    Fanout {
        #[arg(long, short = 'n', default_value_t = 10)]
        subscribers: usize,
    },
    /// Impaired links (issue 11): a simulcast publisher and subscribers whose downlink is capped,
    /// delayed and/or lossy for a while (in this process: `teleconsult_loadtest::netem`); the
    /// report shows each subscriber's estimate and layer second by second (impaired.svg). Run
    /// with --in-process to see the server's estimates.
    Impaired {
        /// Subscribers behind the impaired link.
        #[arg(long, default_value_t = 1)]
        impaired: usize,
        /// Add one subscriber on a clear link throughout.
        #[arg(long)]
        control: bool,
        /// Rate cap while impaired, kbit/s (none: uncapped).
        #[arg(long)]
        rate_kbps: Option<u64>,
        /// Delay added while impaired, ms.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Random loss while impaired, percent.
        #[arg(long, default_value_t = 0.0)]
        loss_percent: f64,
        /// Packets queued in front of the rate cap before it drops.
        #[arg(long, default_value_t = 100)]
        queue_packets: usize,
        /// Seconds on a clear link first...
        #[arg(long, default_value_t = 10)]
        before: u64,
        /// ...then impaired...
        #[arg(long, default_value_t = 20)]
        during: u64,
        /// ...then clear again.
        #[arg(long, default_value_t = 25)]
        after: u64,
    },
}

fn ws_url(base: &str) -> Result<String> {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/ws"))
    } else {
        bail!("--server must start with http:// or https://")
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let impaired = match cli.scenario {
        ScenarioCmd::Impaired {
            impaired,
            control,
            rate_kbps,
            delay_ms,
            loss_percent,
            queue_packets,
            before,
            during,
            after,
        } => Some(teleconsult_loadtest::impaired::ImpairedOptions {
            impaired: impaired.max(1),
            control,
            rate_kbps,
            delay_ms,
            loss_percent,
            queue_packets,
            before: Duration::from_secs(before),
            during: Duration::from_secs(during),
            after: Duration::from_secs(after),
        }),
        _ => None,
    };
    let (scenario, consultations) = match cli.scenario {
        ScenarioCmd::Impaired { .. } => (Scenario::OneToOne, 1),
        ScenarioCmd::OneToOne { consultations } => (Scenario::OneToOne, consultations),
        ScenarioCmd::Group {
            consultations,
            size,
        } => {
            if size < 2 {
                bail!("--size must be at least 2");
            }
            (Scenario::Group { size }, consultations)
        }
        ScenarioCmd::Fanout { subscribers } => (Scenario::Fanout { subscribers }, 1),
    };
    // Keep the server handle alive for the whole run.
    let mut _server = None;
    let mut metrics_url = cli.metrics.clone();
    let (base, config, store, pid) = if cli.in_process {
        let mut config = teleconsult::config::Config::for_tests();
        config.consultation.max_participants = 100;
        let server = teleconsult::server::start(config.clone())
            .await
            .context("starting the in-process server")?;
        let base = format!("http://{}", server.http_addr);
        metrics_url = format!("http://{}/metrics", server.metrics_addr);
        let store = server.state.store.clone();
        _server = Some(server);
        (base, config, store, Some(std::process::id()))
    } else {
        // Patients' invitations go into the server's own store: the configuration names it
        // (`--dev`: the embedded store in ./.teleconsult-data, as `serve --dev` started here).
        let mut config =
            teleconsult::config::Config::load_for_tokens(cli.config.as_deref(), cli.dev)
                .context("the server's configuration (--config or --dev)")?;
        match (cli.dev, cli.signing_secret) {
            (_, Some(s)) => config.auth.signing_secret = s.into(),
            (true, None) => {}
            (false, None) if cli.config.is_some() => {}
            (false, None) => {
                bail!("give --config, --signing-secret (or TELECONSULT_SIGNING_SECRET) or --dev")
            }
        }
        let store = teleconsult_store::open(
            config.storage.mongodb_uri.expose_secret(),
            &config.storage.database,
            &config.storage.data_dir,
        )
        .await
        .context("opening the server's store (storage.*) for patients' invitations")?;
        (cli.server.clone(), config, store, cli.server_pid)
    };
    let target: Arc<dyn Target> = match cli.target {
        TargetKind::Teleconsult => Arc::new(Teleconsult::new(ws_url(&base)?, config, store)),
        TargetKind::Janus => Arc::new(Janus::new(cli.janus_url.clone())),
    };
    if let Some(options) = impaired {
        if !matches!(cli.target, TargetKind::Teleconsult) {
            bail!(
                "the impaired scenario runs against Teleconsult (simulcast is offered by its SFU)"
            );
        }
        let report = teleconsult_loadtest::impaired::run(target, options).await?;
        teleconsult_loadtest::impaired::write(&report, &cli.out)?;
        print!("{}", teleconsult_loadtest::impaired::table(&report));
        println!(
            "report: {} and {}",
            cli.out.join("impaired.json").display(),
            cli.out.join("impaired.svg").display()
        );
        if !report.errors.is_empty() {
            eprintln!(
                "{} errors, first: {}",
                report.errors.len(),
                report.errors[0]
            );
        }
        return Ok(());
    }
    let options = RunOptions {
        scenario,
        consultations,
        duration: Duration::from_secs(cli.duration.max(1)),
        ramp_rate: cli.ramp_rate,
        settle: Duration::from_secs(cli.settle),
        video: cli.video,
        ramp: cli.ramp.then(|| Ramp {
            step: cli.step.max(1),
            max_consultations: cli.max_consultations,
            max_loss: cli.max_loss_percent / 100.0,
            max_p99_ms: cli.max_p99_ms,
        }),
        server_pid: pid,
        // Janus has no Prometheus endpoint.
        metrics_url: matches!(cli.target, TargetKind::Teleconsult).then_some(metrics_url),
        progress: !cli.quiet,
    };
    let report = scenario::run(target, options).await?;
    teleconsult_loadtest::report::write(&report, &cli.out)?;
    println!("{}", serde_json::to_string_pretty(&summary(&report))?);
    println!(
        "report: {} and {}",
        cli.out.join("report.json").display(),
        cli.out.join("report.html").display()
    );
    if !report.errors.is_empty() {
        eprintln!(
            "{} errors, first: {}",
            report.errors.len(),
            report.errors[0]
        );
    }
    Ok(())
}

/// The headline figures, without per-track detail.
fn summary(r: &scenario::RunReport) -> serde_json::Value {
    let steps: Vec<_> = r
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "consultations": s.consultations,
                "participants": s.participants,
                "tracks": s.tracks.len(),
                "worst_loss_percent": s.worst_loss * 100.0,
                "latency_p50_ms": s.latency_p50_ms,
                "latency_p99_ms": s.latency_p99_ms,
                "worst_track_p99_ms": s.worst_track_p99_ms,
                "server_cpu_percent": s.server.cpu_percent,
                "server_rss_mib": s.server.rss_bytes.map(|b| b as f64 / 1048576.0),
                "cpu_us_per_forwarded_packet": s.server.cpu_us_per_forwarded_packet,
                "server_latency_p99_ms": s.server.server_latency_p99_ms,
                "held": s.held,
            })
        })
        .collect();
    serde_json::json!({
        "target": r.target,
        "steps": steps,
        "last_held_consultations": r.last_held_consultations,
        "errors": r.errors.len(),
    })
}
