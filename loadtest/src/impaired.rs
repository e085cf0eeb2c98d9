//! The impaired-link scenario (issue 11): one consultation, a practitioner publishing simulcast
//! video (three layers: 160×120, 320×240, 640×360) and Opus, and subscribers whose downlinks go
//! through [`crate::netem`]: clear for `before`, impaired (rate cap, delay, loss) for `during`,
//! clear again for `after`. A control subscriber may stay on a clear link throughout.
//!
//! Every second, per subscriber: the server's send-side estimate and the layer its allocation
//! aims at (`teleconsult_sfu::quality::subscriber`, readable when the server runs in this
//! process: `--in-process`), the layer that actually arrives (the size of the last VP8 keyframe
//! received), the video bitrate received and audio packets lost. The report: JSON, a text table
//! and an SVG plot of estimate and layer over time with the impaired window marked.

use crate::measure::SendLog;
use crate::media::{MediaSource, Publishing, SimulcastClips, VideoVariant, publish_simulcast};
use crate::netem::{Impairment, Link};
use crate::peer::{Observer, PeerOptions};
use crate::target::{JoinSpec, Session, Target};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Frame heights of the publisher's layers (lowest first): how a received keyframe names its layer.
pub const LAYER_HEIGHTS: [u16; 3] = [120, 240, 360];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImpairedOptions {
    /// Subscribers behind the impaired link.
    pub impaired: usize,
    /// One more subscriber on a clear link throughout (a control).
    pub control: bool,
    pub rate_kbps: Option<u64>,
    pub delay_ms: u64,
    pub loss_percent: f64,
    pub queue_packets: usize,
    pub before: Duration,
    pub during: Duration,
    pub after: Duration,
}

impl ImpairedOptions {
    fn impairment(&self) -> Impairment {
        Impairment {
            rate_bps: self.rate_kbps.map(|k| k * 1000),
            delay: Duration::from_millis(self.delay_ms),
            loss: (self.loss_percent / 100.0).clamp(0.0, 1.0),
            queue_packets: self.queue_packets.max(1),
        }
    }
}

/// One subscriber at one second.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the subscribers joined.
    pub t: f64,
    /// The server's estimate for this subscriber (kbit/s); `None` out of process or before
    /// any feedback.
    pub estimate_kbps: Option<f64>,
    /// The layer the server's allocation aims at (0 = lowest).
    pub target_layer: Option<u8>,
    /// The layer arriving (from the last keyframe's height).
    pub received_layer: Option<u8>,
    /// Video received in the last second (kbit/s).
    pub video_kbps: f64,
    /// Audio packets that never arrived, in the last second.
    pub audio_lost: u64,
    pub audio_received: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Series {
    pub participant: String,
    pub impaired: bool,
    pub points: Vec<Point>,
    /// Seconds from the impairment's start to the lowest layer arriving.
    pub down_after_s: Option<f64>,
    /// Seconds from the impairment's end to the top layer arriving again.
    pub up_after_s: Option<f64>,
    /// Audio loss over the impaired window once on the lowest layer (fraction).
    pub audio_loss_settled: Option<f64>,
    /// Packets the link dropped (its queue full, or random loss).
    pub link_dropped: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImpairedReport {
    pub options: ImpairedOptions,
    pub machine: crate::scenario::Machine,
    /// Unix seconds at start.
    pub started: u64,
    /// Seconds (on the series' clock) the impairment began and ended.
    pub impaired_from: f64,
    pub impaired_until: f64,
    pub subscribers: Vec<Series>,
    pub errors: Vec<String>,
}

fn layer_of_height(h: u16) -> Option<u8> {
    LAYER_HEIGHTS
        .iter()
        .position(|&l| h <= l)
        .map(|i| i as u8)
        .or(Some(2))
}

struct Subscriber {
    session: Box<dyn Session>,
    link: Arc<Link>,
    observer: Arc<Observer>,
    impaired: bool,
    last_video_bytes: u64,
    last_audio: (u64, u64),
    points: Vec<Point>,
}

impl Subscriber {
    fn sample(&mut self, t: f64) -> Point {
        let (mut video_bytes, mut size, mut audio_got, mut audio_lost) = (0u64, None, 0u64, 0u64);
        for (_, seen) in self.observer.tracks() {
            if seen.video {
                video_bytes += seen.bytes.load(Ordering::Relaxed);
                if let Some(s) = *seen.keyframe_size.lock().unwrap() {
                    size = Some(s);
                }
            } else {
                audio_got += seen.packets.load(Ordering::Relaxed);
                audio_lost += seen.lost();
            }
        }
        let allocation = teleconsult_sfu::quality::subscriber(self.session.stream_id());
        let point = Point {
            t,
            estimate_kbps: allocation
                .as_ref()
                .map(|a| a.estimate_bps / 1000.0)
                .filter(|e| e.is_finite()),
            target_layer: allocation
                .as_ref()
                .and_then(|a| a.layers.iter().map(|l| l.1).max()),
            received_layer: size.and_then(|(_, h)| layer_of_height(h)),
            video_kbps: (video_bytes - self.last_video_bytes) as f64 * 8.0 / 1000.0,
            audio_lost: audio_lost.saturating_sub(self.last_audio.1),
            audio_received: audio_got.saturating_sub(self.last_audio.0),
        };
        self.last_video_bytes = video_bytes;
        self.last_audio = (audio_got, audio_lost);
        self.points.push(point.clone());
        point
    }
}

/// Run the scenario against `target` (a Teleconsult server: simulcast is offered by the SFU).
pub async fn run(
    target: Arc<dyn Target>,
    options: ImpairedOptions,
) -> anyhow::Result<ImpairedReport> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let source = Arc::new(MediaSource::new(VideoVariant::Low)?);
    let clips = Arc::new(SimulcastClips::load()?);
    let log = Arc::new(SendLog::default());
    let consultation = format!("impaired-{:08x}", rand::random::<u32>());
    let count = options.impaired + usize::from(options.control);
    let capacity = count + 1;
    let mut errors = Vec::new();
    let host = target
        .join(
            &JoinSpec {
                consultation: consultation.clone(),
                index: 0,
                capacity,
                publish: true,
            },
            PeerOptions {
                publish: true,
                simulcast: true,
                ..PeerOptions::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("the publisher could not join: {e}"))?;
    let _publishing: Publishing = publish_simulcast(
        host.peer(),
        source.clone(),
        clips,
        log.clone(),
        host.stream_id(),
        0,
    );
    let mut subs = Vec::new();
    for i in 0..count {
        let link = Link::new(Impairment::NONE);
        let observer = Arc::new(Observer::default());
        let session = target
            .join(
                &JoinSpec {
                    consultation: consultation.clone(),
                    index: i + 1,
                    capacity,
                    publish: false,
                },
                PeerOptions {
                    publish: false,
                    link: Some(link.clone()),
                    observe: Some(observer.clone()),
                    // As browsers do: the server's bandwidth probes travel on RTX.
                    rtx: true,
                    ..PeerOptions::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("subscriber {} could not join: {e}", i + 1))?;
        subs.push(Subscriber {
            session,
            link,
            observer,
            impaired: i < options.impaired,
            last_video_bytes: 0,
            last_audio: (0, 0),
            points: Vec::new(),
        });
    }
    let t0 = Instant::now();
    let from = options.before.as_secs_f64();
    let until = from + options.during.as_secs_f64();
    let end = until + options.after.as_secs_f64();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut applied = false;
    let mut lifted = false;
    loop {
        tick.tick().await;
        let t = t0.elapsed().as_secs_f64();
        if !applied && t >= from {
            for s in subs.iter().filter(|s| s.impaired) {
                s.link.set(options.impairment());
            }
            applied = true;
        }
        if !lifted && t >= until {
            for s in &subs {
                s.link.set(Impairment::NONE);
            }
            lifted = true;
        }
        for s in &mut subs {
            s.sample(t);
        }
        if t >= end {
            break;
        }
    }
    let mut subscribers = Vec::new();
    for s in subs {
        errors.extend(s.session.errors());
        let dropped = s.link.dropped_queue.load(Ordering::Relaxed)
            + s.link.dropped_loss.load(Ordering::Relaxed);
        let down = s
            .points
            .iter()
            .find(|p| p.t >= from && p.t <= until && p.received_layer == Some(0))
            .map(|p| p.t - from);
        let up = s
            .points
            .iter()
            .find(|p| p.t >= until && p.received_layer == Some(2))
            .map(|p| p.t - until);
        let settled: Vec<&Point> = match down {
            Some(d) => s
                .points
                .iter()
                .filter(|p| p.t >= from + d + 2.0 && p.t <= until)
                .collect(),
            None => Vec::new(),
        };
        let (lost, got) = settled
            .iter()
            .fold((0, 0), |(l, g), p| (l + p.audio_lost, g + p.audio_received));
        subscribers.push(Series {
            participant: s.session.stream_id().to_string(),
            impaired: s.impaired,
            points: s.points,
            down_after_s: down,
            up_after_s: up,
            audio_loss_settled: (lost + got > 0).then(|| lost as f64 / (lost + got) as f64),
            link_dropped: dropped,
        });
        s.session.leave().await;
    }
    errors.extend(host.errors());
    host.leave().await;
    Ok(ImpairedReport {
        options,
        machine: crate::scenario::Machine::here(),
        started,
        impaired_from: from,
        impaired_until: until,
        subscribers,
        errors,
    })
}

/// `impaired.json`, `impaired.svg` (estimate and layer over time) and `impaired.txt` in `dir`.
pub fn write(report: &ImpairedReport, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("impaired.json"),
        serde_json::to_vec_pretty(report)?,
    )?;
    std::fs::write(dir.join("impaired.svg"), plot(report)?)?;
    std::fs::write(dir.join("impaired.txt"), table(report))?;
    Ok(())
}

/// Second by second, per subscriber: estimate, target and received layer, video kbit/s.
pub fn table(r: &ImpairedReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let o = &r.options;
    let _ = writeln!(
        out,
        "impaired link from {:.0} s to {:.0} s: rate {}, delay {} ms, loss {} %",
        r.impaired_from,
        r.impaired_until,
        o.rate_kbps
            .map_or("unlimited".to_string(), |k| format!("{k} kbit/s")),
        o.delay_ms,
        o.loss_percent
    );
    for s in &r.subscribers {
        let _ = writeln!(
            out,
            "\nsubscriber {} ({}): lowest layer after {}, top layer again after {}, audio loss settled {}, link dropped {}",
            s.participant,
            if s.impaired { "impaired" } else { "control" },
            s.down_after_s.map_or("—".into(), |d| format!("{d:.1} s")),
            s.up_after_s.map_or("—".into(), |d| format!("{d:.1} s")),
            s.audio_loss_settled
                .map_or("—".into(), |l| format!("{:.2} %", l * 100.0)),
            s.link_dropped
        );
        let _ = writeln!(
            out,
            "   t   estimate kbit/s   target   received   video kbit/s   audio lost"
        );
        for p in &s.points {
            let _ = writeln!(
                out,
                "{:4.0}   {:>15}   {:>6}   {:>8}   {:>12.0}   {:>10}",
                p.t,
                p.estimate_kbps.map_or("—".into(), |e| format!("{e:.0}")),
                p.target_layer.map_or("—".into(), |l| l.to_string()),
                p.received_layer.map_or("—".into(), |l| l.to_string()),
                p.video_kbps,
                p.audio_lost
            );
        }
    }
    out
}

/// Two panels: the estimate (and the video received) over time, and the layer received.
pub fn plot(r: &ImpairedReport) -> anyhow::Result<String> {
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("plot: {e:?}");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (top, bottom) = root.split_vertically(330);
        let x_max = r
            .subscribers
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.t))
            .fold(1.0, f64::max);
        let y_max = r
            .subscribers
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .map(|p| p.estimate_kbps.unwrap_or(0.0).max(p.video_kbps))
            })
            .fold(100.0, f64::max)
            .min(5000.0)
            * 1.1;
        let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        let mut chart = ChartBuilder::on(&top)
            .caption(
                "Per-subscriber estimate (solid) and video received (dotted)",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .y_desc("kbit/s")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(r.impaired_from, 0.0), (r.impaired_until, y_max)],
                RGBColor(255, 230, 200).filled(),
            )))
            .map_err(|e| err(&e))?;
        for (i, s) in r.subscribers.iter().enumerate() {
            let c = colours[i % colours.len()];
            let name = format!(
                "{} ({})",
                &s.participant[..s.participant.len().min(8)],
                if s.impaired { "impaired" } else { "control" }
            );
            chart
                .draw_series(LineSeries::new(
                    s.points
                        .iter()
                        .filter_map(|p| p.estimate_kbps.map(|e| (p.t, e.min(y_max)))),
                    c.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|p| Circle::new((p.t, p.video_kbps.min(y_max)), 2, c.filled())),
                )
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        let mut layers = ChartBuilder::on(&bottom)
            .caption(
                "Layer received (0 = 160×120, 1 = 320×240, 2 = 640×360)",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, -0.2f64..2.2f64)
            .map_err(|e| err(&e))?;
        layers
            .configure_mesh()
            .x_desc("time since the subscribers joined (s)")
            .y_desc("layer")
            .y_labels(3)
            .draw()
            .map_err(|e| err(&e))?;
        layers
            .draw_series(std::iter::once(Rectangle::new(
                [(r.impaired_from, -0.2), (r.impaired_until, 2.2)],
                RGBColor(255, 230, 200).filled(),
            )))
            .map_err(|e| err(&e))?;
        for (i, s) in r.subscribers.iter().enumerate() {
            let c = colours[i % colours.len()];
            let offset = i as f64 * 0.04;
            layers
                .draw_series(LineSeries::new(
                    s.points
                        .iter()
                        .filter_map(|p| p.received_layer.map(|l| (p.t, f64::from(l) + offset))),
                    c.stroke_width(2),
                ))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyframe_height_names_its_layer() {
        assert_eq!(layer_of_height(120), Some(0));
        assert_eq!(layer_of_height(90), Some(0));
        assert_eq!(layer_of_height(240), Some(1));
        assert_eq!(layer_of_height(360), Some(2));
        assert_eq!(layer_of_height(720), Some(2));
    }
}
