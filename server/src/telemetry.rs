//! Prometheus metrics: one process-wide recorder (installed once, however many servers a test
//! process starts), the metric names, and their descriptions; plus the counters each server
//! keeps itself (signalling errors), rendered into that server's scrape only.

use metrics::{Unit, describe_counter, describe_gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Metric names, shared by the signalling edge and the SFU.
pub mod names {
    pub const CONSULTATIONS: &str = "teleconsult_consultations";
    pub const PARTICIPANTS: &str = "teleconsult_participants";
    pub const TRACKS: &str = "teleconsult_tracks";
    pub const RTP_PACKETS_IN: &str = "teleconsult_rtp_packets_in_total";
    pub const RTP_BYTES_IN: &str = "teleconsult_rtp_bytes_in_total";
    pub const RTP_PACKETS_OUT: &str = "teleconsult_rtp_packets_out_total";
    pub const RTP_BYTES_OUT: &str = "teleconsult_rtp_bytes_out_total";
    /// Label `reason`.
    pub const MEDIA_DATAGRAMS_DROPPED: &str = "teleconsult_media_datagrams_dropped_total";
    /// Datagrams read by one media worker and passed to the worker owning their participant.
    pub const MEDIA_DATAGRAMS_HANDED_OVER: &str = "teleconsult_media_datagrams_handed_over_total";
    pub const WEBSOCKET_CONNECTIONS: &str = "teleconsult_websocket_connections";
    /// Label `kind`.
    pub const SIGNALING_ERRORS: &str = "teleconsult_signaling_errors_total";
    /// Histogram (seconds): media datagram taken off the SFU's socket → packet sent to a
    /// subscriber. Rendered by the SFU (`teleconsult_sfu::quality`), not the recorder.
    pub const FORWARDING_LATENCY: &str = "teleconsult_forwarding_latency_seconds";
    /// Gauge, label `consultation` (id only): worst fraction lost on any subscription of the
    /// consultation in subscribers' latest RTCP receiver reports; gone when it ends.
    pub const CONSULTATION_LOSS: &str = "teleconsult_consultation_loss_ratio";
    /// Gauge, label `consultation` (id only): worst interarrival jitter, seconds, likewise.
    pub const CONSULTATION_JITTER: &str = "teleconsult_consultation_jitter_seconds";
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the global Prometheus recorder (first call only), describe every metric and make the
/// unlabelled ones visible at zero. Returns the handle that renders the scrape text.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = match PrometheusBuilder::new().install_recorder() {
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
/// quality metrics (forwarding latency histogram, per-consultation loss and jitter), which it
/// keeps itself so the per-packet cost stays a few relaxed atomic adds and ended consultations'
/// series can be removed, then this server's own signalling error counters.
pub fn render(state: &crate::AppState) -> String {
    let mut text = install().render();
    teleconsult_sfu::quality::render(&mut text);
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
}
