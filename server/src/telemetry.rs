//! Prometheus metrics: one process-wide recorder (installed once, however many servers a test
//! process starts), the metric names, and their descriptions; plus the counters each server
//! keeps itself (signalling errors), rendered into that server's scrape only.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use teleconsult_sfu::quality::{ConsultationQuality, QualitySnapshot};

/// Metric names, each defined once in the crate that records it (`metric_names` of the
/// consultation, signalling and SFU crates).
pub mod names {
    pub use teleconsult_consultation::metric_names::{CONSULTATIONS, PARTICIPANTS};
    /// Label `reason`.
    pub use teleconsult_sfu::metric_names::DATAGRAMS_DROPPED as MEDIA_DATAGRAMS_DROPPED;
    /// Datagrams read by one media worker and passed to the worker owning their participant.
    pub use teleconsult_sfu::metric_names::DATAGRAMS_HANDED_OVER as MEDIA_DATAGRAMS_HANDED_OVER;
    /// Histogram (seconds), and the base names of the loss and jitter gauges aggregated over
    /// consultations (`_max`, `…_above`; never a consultation id as a label): kept by the SFU
    /// (`teleconsult_sfu::quality`), formatted by [`super::render`].
    pub use teleconsult_sfu::metric_names::{
        CONSULTATION_JITTER, CONSULTATION_LOSS, FORWARDING_LATENCY, RTP_BYTES_IN, RTP_BYTES_OUT,
        RTP_PACKETS_IN, RTP_PACKETS_OUT, TRACKS,
    };
    /// Histogram (seconds), label `type`: handling one signalling message, by message type.
    pub use teleconsult_signaling::metric_names::{REDIRECTS, SIGNALING_MESSAGE_DURATION};
    /// `SIGNALING_ERRORS` has the label `kind`; this server renders it from its own counters.
    pub use teleconsult_signaling::metric_names::{SIGNALING_ERRORS, WEBSOCKET_CONNECTIONS};
    /// Counter: WebSocket handshakes refused for their `Origin` (server.allowed_origins).
    pub const WEBSOCKET_ORIGIN_REFUSED: &str = "teleconsult_websocket_origin_refused_total";
    /// Histogram (seconds), labels `route` (the route template, never an id), `method` and
    /// `status` (`2xx` … `5xx`): one HTTP request, handler and middleware included.
    pub const HTTP_REQUEST_DURATION: &str = "teleconsult_http_request_duration_seconds";
    /// Cluster mode (`crate::cluster`).
    pub use crate::cluster::{FENCED, PLACEMENT_SECONDS, PLACEMENTS_CLAIMED};
}

/// Buckets of every latency histogram the recorder keeps (`*_seconds`): 1 ms to 10 s. Real
/// buckets, not client-side quantiles, so that p95 can be computed over nodes and days
/// (`histogram_quantile` over `rate(…_bucket[…])`, deploy/prometheus/latency-report.promql).
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the global Prometheus recorder (first call only), describe every metric and make the
/// unlabelled ones visible at zero. Returns the handle that renders the scrape text.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                &LATENCY_BUCKETS,
            )
            .expect("the latency buckets are not empty");
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                // Another recorder owns the process (e.g. a test harness): /metrics will render
                // an empty page rather than fail.
                tracing::warn!(error = %e, "metrics recorder not installed");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        describe();
        touch();
        handle
    })
}

fn describe() {
    use names::*;
    describe_gauge!(CONSULTATIONS, "Consultations in progress");
    describe_gauge!(
        PARTICIPANTS,
        "Participants connected (waiting, admitted or reconnecting)"
    );
    describe_gauge!(TRACKS, "Published tracks");
    describe_counter!(RTP_PACKETS_IN, "RTP packets received from publishers");
    describe_counter!(
        RTP_BYTES_IN,
        Unit::Bytes,
        "RTP bytes received from publishers"
    );
    describe_counter!(RTP_PACKETS_OUT, "RTP packets forwarded to subscribers");
    describe_counter!(
        RTP_BYTES_OUT,
        Unit::Bytes,
        "RTP bytes forwarded to subscribers"
    );
    describe_counter!(
        MEDIA_DATAGRAMS_DROPPED,
        "Media UDP datagrams dropped, by reason"
    );
    describe_counter!(
        MEDIA_DATAGRAMS_HANDED_OVER,
        "Media UDP datagrams read by one worker thread and passed to the worker owning their participant (zero with media.workers = 1)"
    );
    describe_gauge!(WEBSOCKET_CONNECTIONS, "Open signalling WebSockets");
    describe_counter!(
        WEBSOCKET_ORIGIN_REFUSED,
        "Signalling WebSocket handshakes refused for a foreign Origin"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request latency by route template, method and status class"
    );
    describe_histogram!(
        SIGNALING_MESSAGE_DURATION,
        Unit::Seconds,
        "Time to handle one signalling message, by message type"
    );
    describe_histogram!(
        PLACEMENT_SECONDS,
        Unit::Seconds,
        "Cluster: time to decide where a joining consultation is served (store reads and claim)"
    );
    describe_counter!(
        PLACEMENTS_CLAIMED,
        "Cluster: placements claimed (a consultation placed, or moved after its owner was lost)"
    );
    describe_counter!(
        FENCED,
        "Cluster: consultations this node stopped serving because it lost their lease"
    );
    describe_counter!(
        REDIRECTS,
        "Cluster: joins redirected to the node owning their consultation"
    );
    describe_counter!(
        teleconsult_sfu::metric_names::VP8_FRAMES_INSPECTED,
        "VP8 frames whose header beyond the clear bytes reads as plaintext (view=plausible) or not (view=opaque, e.g. end-to-end encrypted)"
    );

    // Stop 11 limits (docs/security.md, "Stop 11").
    for (name, help) in [
        (
            teleconsult_sfu::metric_names::EVENT_OVERFLOWS,
            "Media sessions closed because their event channel was full",
        ),
        (
            teleconsult_sfu::metric_names::SOURCES_IGNORED,
            "Source addresses ignored for a while for flooding the media port",
        ),
        (
            teleconsult_sfu::metric_names::WORKER_PANICS,
            "Media worker threads that panicked (their sessions failed, the others went on)",
        ),
        (
            teleconsult_billing::CHANNEL_DROPPED,
            "Billing events dropped because the writer's channel was full",
        ),
        (
            teleconsult_billing::QUEUE_WRITE_ERRORS,
            "Billing events that could not be written to the on-disk queue (disk full)",
        ),
        (
            "teleconsult_documents_refused_total",
            "Document uploads refused, by reason (too_many_uploads)",
        ),
        (
            "teleconsult_http_timeouts_total",
            "HTTP requests answered 503 because their handler took longer than server.request_timeout_secs",
        ),
    ] {
        describe_counter!(name, help);
    }
}

/// Metrics only appear in the scrape once touched: register the unlabelled ones at zero.
/// (Labelled ones appear with their first label value.)
fn touch() {
    use names::*;
    for gauge in [CONSULTATIONS, PARTICIPANTS, TRACKS, WEBSOCKET_CONNECTIONS] {
        metrics::gauge!(gauge).increment(0.0);
    }
    for counter in [
        RTP_PACKETS_IN,
        RTP_BYTES_IN,
        RTP_PACKETS_OUT,
        RTP_BYTES_OUT,
        MEDIA_DATAGRAMS_HANDED_OVER,
    ] {
        metrics::counter!(counter).increment(0);
    }
}

/// The current scrape text of the server with `state`: the recorder's metrics, then the SFU's
/// quality metrics (forwarding latency histogram, loss and jitter over consultations), which it
/// keeps itself so the per-packet cost stays a few relaxed atomic adds and ended consultations'
/// series can be removed, then this server's own signalling error counters.
pub fn render(state: &crate::AppState) -> String {
    let mut text = install().render();
    render_quality(&teleconsult_sfu::quality::snapshot(), &mut text);
    render_signaling_errors(&state.signaling.errors, &mut text);
    text
}

/// `teleconsult_signaling_errors_total{kind="…"}`, every kind (zeros included) so that rates
/// start from the server's start.
fn render_signaling_errors(errors: &teleconsult_signaling::ErrorCounters, out: &mut String) {
    use std::fmt::Write as _;
    let name = names::SIGNALING_ERRORS;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {name} Signalling errors sent to clients, by kind\n# TYPE {name} counter"
    );
    for (kind, n) in errors.snapshot() {
        let _ = writeln!(out, "{name}{{kind=\"{}\"}} {n}", kind.as_str());
    }
}

/// Append the SFU's quality metrics in Prometheus text format.
fn render_quality(q: &QualitySnapshot, out: &mut String) {
    use names::{CONSULTATION_JITTER, CONSULTATION_LOSS, FORWARDING_LATENCY};
    use std::fmt::Write as _;
    let name = FORWARDING_LATENCY;
    let h = &q.forwarding_latency;
    let _ = writeln!(
        out,
        "# HELP {name} Forwarding latency: datagram taken off the media socket to packet sent to a subscriber"
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, total) in &h.buckets {
        match bound {
            Some(le) => {
                let le = le.as_micros() as f64 / 1e6;
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
            }
        }
    }
    let sum = h.sum.as_nanos() as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {}", h.count);
    // Loss and jitter summarised over consultations: a scrape names no consultation (ids
    // are the key to everything else about a patient's call, and series per consultation
    // grow without bound).
    let reporting = QUALITY_REPORTING;
    let _ = writeln!(
        out,
        "# HELP {reporting} Consultations with at least one subscriber's RTCP receiver report\n# TYPE {reporting} gauge\n{reporting} {}",
        q.consultations.len()
    );
    let summary = |out: &mut String,
                   name: &str,
                   what: &str,
                   label: &str,
                   thresholds: &[f64],
                   value: fn(&ConsultationQuality) -> f64| {
        let max = q
            .consultations
            .iter()
            .map(|(_, c)| value(c))
            .fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "# HELP {name}_max Worst {what} on any subscription of any consultation, from subscribers' latest RTCP receiver reports\n# TYPE {name}_max gauge\n{name}_max {max}"
        );
        let above = format!("{name}_above");
        let _ = writeln!(
            out,
            "# HELP {above} Consultations whose worst {what} is above the threshold\n# TYPE {above} gauge"
        );
        for t in thresholds {
            let n = q
                .consultations
                .iter()
                .filter(|(_, c)| value(c) > *t)
                .count();
            let _ = writeln!(out, "{above}{{{label}=\"{t}\"}} {n}");
        }
    };
    summary(
        out,
        CONSULTATION_LOSS,
        "fraction of packets lost",
        "ratio",
        &[0.02, 0.05, 0.1],
        |c| c.loss,
    );
    summary(
        out,
        CONSULTATION_JITTER,
        "interarrival jitter",
        "seconds",
        &[0.03, 0.05, 0.1],
        |c| c.jitter,
    );
}

/// Consultations with quality reports (a gauge).
const QUALITY_REPORTING: &str = "teleconsult_consultations_reporting_quality";

/// Libraries whose most verbose levels print message contents (the WebSocket library logs every
/// frame, join tokens included, at TRACE). Capped whatever the operator asks for.
const CAPPED_TARGETS: &[&str] = &["tungstenite", "tokio_tungstenite", "axum::extract::ws"];

/// The log filter for `spec` (an `EnvFilter` directive string such as `info` or
/// `teleconsult=debug`), with the content-logging targets capped at `info`.
pub fn log_filter(spec: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in CAPPED_TARGETS {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use teleconsult_sfu::quality::HistogramSnapshot;

    #[test]
    fn signaling_errors_render_with_every_kind() {
        let errors = teleconsult_signaling::ErrorCounters::default();
        let mut text = String::new();
        render_signaling_errors(&errors, &mut text);
        assert!(text.contains("# TYPE teleconsult_signaling_errors_total counter\n"));
        assert!(text.contains("teleconsult_signaling_errors_total{kind=\"bad_token\"} 0\n"));
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            teleconsult_signaling::ErrorKind::ALL.len()
        );
    }

    #[test]
    fn quality_metrics_render_as_prometheus_text() {
        let q = QualitySnapshot {
            forwarding_latency: HistogramSnapshot {
                buckets: vec![
                    (Some(Duration::from_micros(25)), 1),
                    (Some(Duration::from_micros(2_500)), 3),
                    (None, 4),
                ],
                sum: Duration::from_micros(1_500_250),
                count: 4,
            },
            consultations: vec![
                (
                    "c-secret-1".into(),
                    ConsultationQuality {
                        loss: 0.25,
                        jitter: 0.004,
                    },
                ),
                (
                    "c-secret-2".into(),
                    ConsultationQuality {
                        loss: 0.03,
                        jitter: 0.06,
                    },
                ),
            ],
        };
        let mut text = String::new();
        render_quality(&q, &mut text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "# HELP teleconsult_forwarding_latency_seconds Forwarding latency: datagram taken off the media socket to packet sent to a subscriber",
                "# TYPE teleconsult_forwarding_latency_seconds histogram",
                "teleconsult_forwarding_latency_seconds_bucket{le=\"0.000025\"} 1",
                "teleconsult_forwarding_latency_seconds_bucket{le=\"0.0025\"} 3",
                "teleconsult_forwarding_latency_seconds_bucket{le=\"+Inf\"} 4",
                "teleconsult_forwarding_latency_seconds_sum 1.50025",
                "teleconsult_forwarding_latency_seconds_count 4",
                "# HELP teleconsult_consultations_reporting_quality Consultations with at least one subscriber's RTCP receiver report",
                "# TYPE teleconsult_consultations_reporting_quality gauge",
                "teleconsult_consultations_reporting_quality 2",
                "# HELP teleconsult_consultation_loss_ratio_max Worst fraction of packets lost on any subscription of any consultation, from subscribers' latest RTCP receiver reports",
                "# TYPE teleconsult_consultation_loss_ratio_max gauge",
                "teleconsult_consultation_loss_ratio_max 0.25",
                "# HELP teleconsult_consultation_loss_ratio_above Consultations whose worst fraction of packets lost is above the threshold",
                "# TYPE teleconsult_consultation_loss_ratio_above gauge",
                "teleconsult_consultation_loss_ratio_above{ratio=\"0.02\"} 2",
                "teleconsult_consultation_loss_ratio_above{ratio=\"0.05\"} 1",
                "teleconsult_consultation_loss_ratio_above{ratio=\"0.1\"} 1",
                "# HELP teleconsult_consultation_jitter_seconds_max Worst interarrival jitter on any subscription of any consultation, from subscribers' latest RTCP receiver reports",
                "# TYPE teleconsult_consultation_jitter_seconds_max gauge",
                "teleconsult_consultation_jitter_seconds_max 0.06",
                "# HELP teleconsult_consultation_jitter_seconds_above Consultations whose worst interarrival jitter is above the threshold",
                "# TYPE teleconsult_consultation_jitter_seconds_above gauge",
                "teleconsult_consultation_jitter_seconds_above{seconds=\"0.03\"} 1",
                "teleconsult_consultation_jitter_seconds_above{seconds=\"0.05\"} 1",
                "teleconsult_consultation_jitter_seconds_above{seconds=\"0.1\"} 0",
            ]
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
