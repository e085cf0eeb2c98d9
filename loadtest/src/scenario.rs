//! Scenarios and the runner: join consultations through a [`Target`] at a ramp-up rate, publish
//! real media, and measure quality over a window — once, or step by step until a quality limit
//! is crossed (ramp mode).

use crate::measure::{Histogram, MediaKind, SendLog, TrackReport};
use crate::media::{MediaSource, Publishing, VideoVariant, publish};
use crate::peer::PeerOptions;
use crate::server_stats::{self, ProcStats};
use crate::target::{JoinSpec, Session, Target};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the consultations look like.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// Practitioner + patient, both publishing audio and video.
    OneToOne,
    /// `size` participants, all publishing.
    Group { size: usize },
    /// One publisher (the practitioner) and `subscribers` patients who only receive.
    Fanout { subscribers: usize },
}

impl Scenario {
    /// Whether each participant publishes, in joining order (index 0 is the host).
    pub fn participants(&self) -> Vec<bool> {
        match *self {
            Scenario::OneToOne => vec![true, true],
            Scenario::Group { size } => vec![true; size.max(2)],
            Scenario::Fanout { subscribers } => {
                let mut v = vec![false; subscribers + 1];
                v[0] = true;
                v
            }
        }
    }
}

/// Ramp mode: add `step` consultations at a time until a limit is crossed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ramp {
    pub step: usize,
    /// Stop after this many consultations even if quality holds.
    pub max_consultations: usize,
    /// Limit: packet loss ratio on any track (0.01 = 1 %).
    pub max_loss: f64,
    /// Limit: p99 forwarding latency on any track, milliseconds.
    pub max_p99_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunOptions {
    pub scenario: Scenario,
    /// Consultations to start (first step in ramp mode); fan-out runs one.
    pub consultations: usize,
    /// Measurement window (per step in ramp mode).
    pub duration: Duration,
    /// Consultations started per second during ramp-up.
    pub ramp_rate: f64,
    /// Time after joining before measuring (connections, first keyframes).
    pub settle: Duration,
    pub video: VideoVariant,
    pub ramp: Option<Ramp>,
    /// The server's process id, for CPU and RSS.
    pub server_pid: Option<u32>,
    /// The server's `/metrics` URL.
    pub metrics_url: Option<String>,
    /// Draw progress bars on the terminal.
    pub progress: bool,
}

/// A server sample for the time-series plots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub packets_out: Option<f64>,
    pub participants: usize,
}

/// The server during one measurement window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerWindow {
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// Whole-process RSS ÷ participants (includes the server's fixed footprint).
    pub rss_per_participant_bytes: Option<f64>,
    /// (RSS − RSS before the first participant joined) ÷ participants: what each participant
    /// adds.
    #[serde(default)]
    pub rss_added_per_participant_bytes: Option<f64>,
    pub packets_forwarded: Option<f64>,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    /// From the server's own histogram (`teleconsult_forwarding_latency_seconds`).
    pub server_latency_p50_ms: Option<f64>,
    pub server_latency_p99_ms: Option<f64>,
}

/// One measurement window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReport {
    pub consultations: usize,
    pub participants: usize,
    pub window_secs: f64,
    pub tracks: Vec<TrackReport>,
    /// Expected tracks that never arrived (`subscriber <- publisher kind`).
    pub missing: Vec<String>,
    pub packets: u64,
    pub worst_loss: f64,
    pub mean_loss: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub worst_track_p99_ms: f64,
    pub worst_jitter_ms: f64,
    pub server: ServerWindow,
    /// Within the limits (ramp mode) / no missing tracks.
    pub held: bool,
    /// Latency distribution over all tracks: (µs, cumulative fraction).
    pub latency_cdf: Vec<(u64, f64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
}

impl Machine {
    pub fn here() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub target: String,
    pub options: RunOptions,
    pub machine: Machine,
    /// Unix seconds at start.
    pub started: u64,
    pub steps: Vec<StepReport>,
    /// Ramp mode: consultations in the last step that held the limits.
    pub last_held_consultations: Option<usize>,
    /// Server RSS before the first participant joined.
    #[serde(default)]
    pub server_idle_rss_bytes: Option<u64>,
    pub samples: Vec<Sample>,
    /// Join failures, server errors, missing tracks.
    pub errors: Vec<String>,
}

/// Why a run could not even start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("media: {0}")]
    Media(#[from] crate::media::MediaError),
}

struct Member {
    session: Box<dyn Session>,
    publish: bool,
    _publishing: Option<Publishing>,
}

struct Live {
    name: String,
    members: Vec<Member>,
}

type Snapshot = HashMap<(String, String, MediaKind), TrackReport>;

struct Runner {
    target: Arc<dyn Target>,
    source: Arc<MediaSource>,
    log: Arc<SendLog>,
    options: RunOptions,
    run_id: String,
    live: Vec<Live>,
    started: u64,
    errors: Vec<String>,
    publishers: usize,
    /// Server RSS before the first participant joined.
    idle_rss: Option<u64>,
}

async fn join_consultation(
    target: Arc<dyn Target>,
    source: Arc<MediaSource>,
    log: Arc<SendLog>,
    scenario: Scenario,
    name: String,
    first_publisher: usize,
) -> (Live, Vec<String>) {
    let roles = scenario.participants();
    let mut live = Live {
        name: name.clone(),
        members: Vec::new(),
    };
    let mut errors = Vec::new();
    for (index, &publishing) in roles.iter().enumerate() {
        let spec = JoinSpec {
            consultation: name.clone(),
            index,
            capacity: roles.len(),
            publish: publishing,
        };
        let options = PeerOptions {
            publish: publishing,
            measure: Some(log.clone()),
            ..PeerOptions::default()
        };
        match target.join(&spec, options).await {
            Ok(session) => {
                let publishing = publishing.then(|| {
                    publish(
                        session.peer(),
                        source.clone(),
                        log.clone(),
                        session.stream_id(),
                        first_publisher + index,
                    )
                });
                live.members.push(Member {
                    publish: publishing.is_some(),
                    session,
                    _publishing: publishing,
                });
            }
            Err(e) => {
                errors.push(format!("{name} participant {index}: {e}"));
                if index == 0 {
                    break;
                }
            }
        }
    }
    (live, errors)
}

impl Runner {
    fn participants(&self) -> usize {
        self.live.iter().map(|l| l.members.len()).sum()
    }

    /// Start `n` more consultations at the ramp-up rate.
    async fn add(&mut self, n: usize, bar: &ProgressBar) {
        let spacing = Duration::from_secs_f64(1.0 / self.options.ramp_rate.max(0.01));
        let mut joins = tokio::task::JoinSet::new();
        let per = self.options.scenario.participants().len();
        for _ in 0..n {
            let k = self.live.len() + joins.len();
            let name = format!("{}-c{k}", self.run_id);
            joins.spawn(join_consultation(
                self.target.clone(),
                self.source.clone(),
                self.log.clone(),
                self.options.scenario,
                name,
                self.publishers + k * per,
            ));
            tokio::time::sleep(spacing).await;
            while let Some(Ok((live, errors))) = joins.try_join_next() {
                self.accept(live, errors, bar);
            }
        }
        while let Some(r) = joins.join_next().await {
            if let Ok((live, errors)) = r {
                self.accept(live, errors, bar);
            }
        }
    }

    fn accept(&mut self, live: Live, errors: Vec<String>, bar: &ProgressBar) {
        self.errors.extend(errors);
        bar.inc(1);
        self.live.push(live);
    }

    fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        for l in &self.live {
            for m in &l.members {
                for mut r in m.session.receiver().track_reports(m.session.stream_id()) {
                    r.publisher = self.target.publisher_of(&r.publisher);
                    let key = (
                        r.subscriber.clone(),
                        r.publisher.clone(),
                        r.kind.unwrap_or(MediaKind::Audio),
                    );
                    out.insert(key, r);
                }
            }
        }
        out
    }

    fn server_now(&self) -> Option<ProcStats> {
        self.options
            .server_pid
            .and_then(|pid| server_stats::read_proc(pid).ok())
    }

    async fn scrape(&self) -> Option<String> {
        match &self.options.metrics_url {
            Some(url) => server_stats::http_get(url).await.ok(),
            None => None,
        }
    }

    /// Measure for the configured window.
    async fn measure(
        &mut self,
        bar: &ProgressBar,
        samples: &Arc<Mutex<Vec<Sample>>>,
        t0: Instant,
    ) -> StepReport {
        let window = self.options.duration;
        let (proc0, page0) = (self.server_now(), self.scrape().await);
        let before = self.snapshot();
        let start = Instant::now();
        bar.set_length(window.as_secs().max(1));
        bar.set_position(0);
        while start.elapsed() < window {
            tokio::time::sleep(Duration::from_millis(500).min(window)).await;
            bar.set_position(start.elapsed().as_secs().min(window.as_secs()));
            let (proc, page) = (self.server_now(), self.scrape().await);
            samples.lock().unwrap().push(Sample {
                t: t0.elapsed().as_secs_f64(),
                cpu_seconds: proc.map(|p| p.cpu_seconds),
                rss_bytes: proc.map(|p| p.rss_bytes),
                packets_out: page
                    .as_deref()
                    .map(|p| server_stats::metric_sum(p, "teleconsult_rtp_packets_out_total")),
                participants: self.participants(),
            });
        }
        let secs = start.elapsed().as_secs_f64();
        let after = self.snapshot();
        let (proc1, page1) = (self.server_now(), self.scrape().await);
        let mut step = self.evaluate(&before, &after, secs);
        let participants = step.participants.max(1) as f64;
        let mut server = ServerWindow::default();
        if let (Some(a), Some(b)) = (proc0, proc1) {
            server.cpu_percent = Some((b.cpu_seconds - a.cpu_seconds) / secs * 100.0);
            server.rss_bytes = Some(b.rss_bytes);
            server.rss_per_participant_bytes = Some(b.rss_bytes as f64 / participants);
            server.rss_added_per_participant_bytes = self
                .idle_rss
                .map(|idle| b.rss_bytes.saturating_sub(idle) as f64 / participants);
        }
        if let (Some(a), Some(b)) = (&page0, &page1) {
            let name = "teleconsult_rtp_packets_out_total";
            let n = server_stats::metric_sum(b, name) - server_stats::metric_sum(a, name);
            server.packets_forwarded = Some(n);
            if let (Some(p0), Some(p1)) = (proc0, proc1)
                && n > 0.0
            {
                server.cpu_us_per_forwarded_packet =
                    Some((p1.cpu_seconds - p0.cpu_seconds) * 1e6 / n);
            }
            let h = "teleconsult_forwarding_latency_seconds";
            let (h0, h1) = (
                server_stats::histogram_buckets(a, h),
                server_stats::histogram_buckets(b, h),
            );
            server.server_latency_p50_ms =
                server_stats::histogram_quantile(&h0, &h1, 0.5).map(|s| s * 1000.0);
            server.server_latency_p99_ms =
                server_stats::histogram_quantile(&h0, &h1, 0.99).map(|s| s * 1000.0);
        }
        step.server = server;
        step
    }

    /// Per-track quality over the window between two snapshots; checks every subscriber got
    /// every publisher's tracks.
    fn evaluate(&self, before: &Snapshot, after: &Snapshot, secs: f64) -> StepReport {
        let mut tracks = Vec::new();
        let mut missing = Vec::new();
        let mut all = Histogram::default();
        for l in &self.live {
            for sub in &l.members {
                for publ in l.members.iter().filter(|p| p.publish) {
                    if std::ptr::eq(sub, publ) {
                        continue;
                    }
                    for kind in [MediaKind::Audio, MediaKind::Video] {
                        let key = (
                            sub.session.stream_id().to_string(),
                            publ.session.stream_id().to_string(),
                            kind,
                        );
                        let Some(a) = after.get(&key) else {
                            missing.push(format!("{}: {} <- {} {kind:?}", l.name, key.0, key.1));
                            continue;
                        };
                        let r = window(before.get(&key), a, secs);
                        if r.packets == 0 {
                            missing.push(format!(
                                "{}: {} <- {} {kind:?} (stalled)",
                                l.name, key.0, key.1
                            ));
                        }
                        all.merge(&r.latency);
                        tracks.push(r);
                    }
                }
            }
        }
        let packets = tracks.iter().map(|t| t.packets).sum();
        let worst_loss = tracks.iter().map(|t| t.loss_ratio).fold(0.0, f64::max);
        let (lost, expected) = tracks
            .iter()
            .fold((0, 0), |(l, e), t| (l + t.lost, e + t.expected));
        let worst_track_p99_ms = tracks.iter().map(|t| t.latency_p99_ms).fold(0.0, f64::max);
        let mut held = missing.is_empty();
        if let Some(ramp) = &self.options.ramp {
            held &= worst_loss <= ramp.max_loss && worst_track_p99_ms <= ramp.max_p99_ms;
        }
        StepReport {
            consultations: self.live.len(),
            participants: self.participants(),
            window_secs: secs,
            packets,
            worst_loss,
            mean_loss: if expected > 0 {
                lost as f64 / expected as f64
            } else {
                0.0
            },
            latency_p50_ms: all.quantile_us(0.5) as f64 / 1000.0,
            latency_p99_ms: all.quantile_us(0.99) as f64 / 1000.0,
            worst_track_p99_ms,
            worst_jitter_ms: tracks.iter().map(|t| t.jitter_ms).fold(0.0, f64::max),
            latency_cdf: all.cdf(),
            tracks,
            missing,
            server: ServerWindow::default(),
            held,
        }
    }
}

/// The part of `after` accumulated since `before`.
fn window(before: Option<&TrackReport>, after: &TrackReport, secs: f64) -> TrackReport {
    let mut r = after.clone();
    if let Some(b) = before {
        r.packets -= b.packets.min(r.packets);
        r.bytes -= b.bytes.min(r.bytes);
        r.expected -= b.expected.min(r.expected);
        r.unmatched -= b.unmatched.min(r.unmatched);
        r.latency.subtract(&b.latency);
    }
    r.lost = r.expected.saturating_sub(r.packets);
    r.loss_ratio = if r.expected > 0 {
        r.lost as f64 / r.expected as f64
    } else {
        0.0
    };
    r.bitrate_kbps = r.bytes as f64 * 8.0 / secs / 1000.0;
    r.latency_p50_ms = r.latency.quantile_us(0.5) as f64 / 1000.0;
    r.latency_p99_ms = r.latency.quantile_us(0.99) as f64 / 1000.0;
    r.latency_max_ms = r.latency.max_us as f64 / 1000.0;
    r
}

fn bar(show: bool, len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// Run `options` against `target`.
pub async fn run(target: Arc<dyn Target>, options: RunOptions) -> Result<RunReport, RunError> {
    let source = Arc::new(MediaSource::new(options.video)?);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut runner = Runner {
        target,
        source,
        log: Arc::new(SendLog::default()),
        run_id: format!("lt{:06x}", rand::random::<u32>() & 0xff_ffff),
        options,
        live: Vec::new(),
        started,
        errors: Vec::new(),
        publishers: 0,
        idle_rss: None,
    };
    runner.idle_rss = runner.server_now().map(|p| p.rss_bytes);
    let t0 = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let first = match runner.options.scenario {
        Scenario::Fanout { .. } => 1,
        _ => runner.options.consultations.max(1),
    };
    let mut steps = Vec::new();
    let mut last_held = None;
    let show = runner.options.progress;
    let mut next = first;
    loop {
        let ramp_bar = bar(show, next as u64, "ramp-up");
        runner.add(next, &ramp_bar).await;
        ramp_bar.finish_and_clear();
        tokio::time::sleep(runner.options.settle).await;
        let run_bar = bar(
            show,
            runner.options.duration.as_secs(),
            &format!("{} cons.", runner.live.len()),
        );
        let step = runner.measure(&run_bar, &samples, t0).await;
        run_bar.finish_and_clear();
        if show {
            eprintln!(
                "{} consultations, {} participants: loss worst {:.3}% mean {:.3}%, latency p50 {:.2} ms p99 {:.2} ms (worst track {:.2} ms), server CPU {} -> {}",
                step.consultations,
                step.participants,
                step.worst_loss * 100.0,
                step.mean_loss * 100.0,
                step.latency_p50_ms,
                step.latency_p99_ms,
                step.worst_track_p99_ms,
                step.server
                    .cpu_percent
                    .map_or("n/a".into(), |c| format!("{c:.1}%")),
                if step.held { "held" } else { "LIMIT CROSSED" }
            );
        }
        let held = step.held;
        if held {
            last_held = Some(step.consultations);
        }
        steps.push(step);
        match &runner.options.ramp {
            Some(ramp) if held && runner.live.len() + ramp.step <= ramp.max_consultations => {
                next = ramp.step.max(1);
            }
            _ => break,
        }
    }
    // Errors seen by participants, and tracks that never came.
    for l in &runner.live {
        for m in &l.members {
            for e in m.session.errors() {
                runner
                    .errors
                    .push(format!("{} {}: {e}", l.name, m.session.stream_id()));
            }
        }
    }
    if let Some(last) = steps.last() {
        runner
            .errors
            .extend(last.missing.iter().map(|m| format!("missing track {m}")));
    }
    let target = runner.target.name().to_string();
    let errors = std::mem::take(&mut runner.errors);
    let mut leaving = tokio::task::JoinSet::new();
    for l in runner.live.drain(..) {
        for m in l.members {
            leaving.spawn(async move {
                drop(m._publishing);
                m.session.leave().await;
            });
        }
    }
    while leaving.join_next().await.is_some() {}
    let samples = samples.lock().unwrap().clone();
    let is_ramp = runner.options.ramp.is_some();
    Ok(RunReport {
        target,
        options: runner.options,
        machine: Machine::here(),
        started: runner.started,
        steps,
        last_held_consultations: if is_ramp { last_held } else { None },
        server_idle_rss_bytes: runner.idle_rss,
        samples,
        errors,
    })
}
