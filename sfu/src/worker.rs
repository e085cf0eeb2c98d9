//! A media worker: one thread owning the peer connections of its consultations and one socket on
//! the shared media port, which it reads itself.

use crate::forward::{self, PayloadMap};
use crate::keyframe::is_keyframe_request;
use crate::sendq::{FLUSH_AT, SendQueue};
use crate::{Candidate, Kind, PeerKey, Routes, SfuError, SfuEvent, peer};
use bytes::BytesMut;
use metrics::{Counter, Gauge};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

/// Names of the metrics this crate records (the binary installs the exporter).
pub mod metric_names {
    pub const RTP_PACKETS_IN: &str = "teleconsult_rtp_packets_in_total";
    pub const RTP_BYTES_IN: &str = "teleconsult_rtp_bytes_in_total";
    pub const RTP_PACKETS_OUT: &str = "teleconsult_rtp_packets_out_total";
    pub const RTP_BYTES_OUT: &str = "teleconsult_rtp_bytes_out_total";
    pub const DATAGRAMS_DROPPED: &str = "teleconsult_media_datagrams_dropped_total";
    /// Read by one worker, passed to the worker owning the participant.
    pub const DATAGRAMS_HANDED_OVER: &str = "teleconsult_media_datagrams_handed_over_total";
    pub const TRACKS: &str = "teleconsult_tracks";
    pub const KEYFRAME_REQUESTS: &str = "teleconsult_keyframe_requests_total";
    /// Histogram: datagram taken off the socket → packet sent to a subscriber.
    pub const FORWARDING_LATENCY: &str = "teleconsult_forwarding_latency_seconds";
    /// Gauge, label `consultation`: worst fraction lost in subscribers' latest receiver reports.
    pub const CONSULTATION_LOSS: &str = "teleconsult_consultation_loss_ratio";
    /// Gauge, label `consultation`: worst interarrival jitter in subscribers' latest reports.
    pub const CONSULTATION_JITTER: &str = "teleconsult_consultation_jitter_seconds";
}

/// Quality metrics kept outside the `metrics` recorder and rendered at scrape time: the
/// forwarding-latency histogram (fixed buckets, relaxed atomics: no allocation and no lock per
/// packet) and per-consultation loss and jitter from RTCP receiver reports (updated at report
/// rate, removed when the consultation ends — the `metrics` facade cannot remove a series).
pub mod quality {
    use super::metric_names::{CONSULTATION_JITTER, CONSULTATION_LOSS, FORWARDING_LATENCY};
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Bucket upper bounds, microseconds.
    const BOUNDS_US: [u64; 14] = [
        25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000,
        1_000_000,
    ];

    pub struct LatencyHistogram {
        buckets: [AtomicU64; BOUNDS_US.len() + 1],
        sum_ns: AtomicU64,
        count: AtomicU64,
    }

    #[allow(clippy::declare_interior_mutable_const)]
    const ZERO: AtomicU64 = AtomicU64::new(0);

    /// The process-wide forwarding-latency histogram.
    pub static FORWARDING: LatencyHistogram = LatencyHistogram {
        buckets: [ZERO; BOUNDS_US.len() + 1],
        sum_ns: AtomicU64::new(0),
        count: AtomicU64::new(0),
    };

    impl LatencyHistogram {
        /// Record `n` packets that each took `d`.
        #[inline]
        pub fn record(&self, d: Duration, n: u64) {
            let us = d.as_micros() as u64;
            let i = BOUNDS_US.partition_point(|&b| b < us);
            self.buckets[i].fetch_add(n, Ordering::Relaxed);
            self.sum_ns
                .fetch_add(d.as_nanos() as u64 * n, Ordering::Relaxed);
            self.count.fetch_add(n, Ordering::Relaxed);
        }

        /// Prometheus text (cumulative buckets, `le` in seconds).
        pub fn render(&self, name: &str, out: &mut String) {
            let _ = writeln!(
                out,
                "# HELP {name} Forwarding latency: datagram taken off the media socket to packet sent to a subscriber"
            );
            let _ = writeln!(out, "# TYPE {name} histogram");
            let mut total = 0;
            for (i, b) in self.buckets.iter().enumerate() {
                total += b.load(Ordering::Relaxed);
                match BOUNDS_US.get(i) {
                    Some(us) => {
                        let _ =
                            writeln!(out, "{name}_bucket{{le=\"{}\"}} {total}", *us as f64 / 1e6);
                    }
                    None => {
                        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
                    }
                }
            }
            let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum {sum}");
            let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
        }
    }

    /// Per consultation id: (loss ratio, jitter seconds).
    static CONSULTATIONS: Mutex<BTreeMap<String, (f64, f64)>> = Mutex::new(BTreeMap::new());

    pub(crate) fn set_consultation(id: &str, loss: f64, jitter: f64) {
        if let Ok(mut m) = CONSULTATIONS.lock() {
            match m.get_mut(id) {
                Some(v) => *v = (loss, jitter),
                None => {
                    m.insert(id.to_string(), (loss, jitter));
                }
            }
        }
    }

    pub(crate) fn forget_consultation(id: &str) {
        if let Ok(mut m) = CONSULTATIONS.lock() {
            m.remove(id);
        }
    }

    fn label(id: &str) -> String {
        id.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    /// Append every quality metric in Prometheus text format.
    pub fn render(out: &mut String) {
        FORWARDING.render(FORWARDING_LATENCY, out);
        let Ok(m) = CONSULTATIONS.lock() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP {CONSULTATION_LOSS} Worst fraction of packets lost on any subscription of the consultation, from subscribers' latest RTCP receiver reports"
        );
        let _ = writeln!(out, "# TYPE {CONSULTATION_LOSS} gauge");
        for (id, (loss, _)) in m.iter() {
            let _ = writeln!(
                out,
                "{CONSULTATION_LOSS}{{consultation=\"{}\"}} {loss}",
                label(id)
            );
        }
        let _ = writeln!(
            out,
            "# HELP {CONSULTATION_JITTER} Worst interarrival jitter on any subscription of the consultation, from subscribers' latest RTCP receiver reports"
        );
        let _ = writeln!(out, "# TYPE {CONSULTATION_JITTER} gauge");
        for (id, (_, jitter)) in m.iter() {
            let _ = writeln!(
                out,
                "{CONSULTATION_JITTER}{{consultation=\"{}\"}} {jitter}",
                label(id)
            );
        }
    }
}

/// Minimum spacing of keyframe requests sent to one published track.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// Longest a worker sleeps when nothing is scheduled.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// Largest datagram we read; anything longer is truncated and rejected by the stack.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per wake-up before commands and timers get a turn.
const READ_BUDGET: usize = 64;
/// Channel inputs handled per wake-up.
const COMMAND_BUDGET: usize = 256;
const SOCKET: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

/// What the read loop counts.
struct ReadCounters {
    unknown: Counter,
    handed_over: Counter,
}

/// The way into a worker from other threads: its command channel and the waker of its poll loop.
pub struct Handle {
    tx: mpsc::Sender<Input>,
    waker: mio::Waker,
    closed: AtomicBool,
}

impl Handle {
    pub fn new(poll: &mio::Poll) -> std::io::Result<(Handle, mpsc::Receiver<Input>)> {
        let (tx, rx) = mpsc::channel();
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        Ok((
            Handle {
                tx,
                waker,
                closed: AtomicBool::new(false),
            },
            rx,
        ))
    }

    /// Queue `input` and wake the worker.
    pub fn send(&self, input: Input) -> Result<(), SfuError> {
        self.queue(input)?;
        let _ = self.waker.wake();
        Ok(())
    }

    /// Queue without waking (the caller wakes once for a batch).
    fn queue(&self, input: Input) -> Result<(), SfuError> {
        self.tx.send(input).map_err(|_| SfuError::Stopped)
    }

    /// Ask the worker to close every session and end.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

pub enum Input {
    Datagram {
        key: PeerKey,
        from: SocketAddr,
        at: Instant,
        data: BytesMut,
    },
    Add {
        key: PeerKey,
        consultation: String,
        participant: String,
        events: UnboundedSender<SfuEvent>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Answer {
        key: PeerKey,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Candidate {
        key: PeerKey,
        candidate: Option<Candidate>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Remove {
        key: PeerKey,
    },
}

struct Metrics {
    packets_in: Counter,
    bytes_in: Counter,
    packets_out: Counter,
    bytes_out: Counter,
    rejected: Counter,
    tracks: Gauge,
    keyframe_requests: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        use metric_names::*;
        Metrics {
            packets_in: metrics::counter!(RTP_PACKETS_IN),
            bytes_in: metrics::counter!(RTP_BYTES_IN),
            packets_out: metrics::counter!(RTP_PACKETS_OUT),
            bytes_out: metrics::counter!(RTP_BYTES_OUT),
            rejected: metrics::counter!(DATAGRAMS_DROPPED, "reason" => "rejected"),
            tracks: metrics::gauge!(TRACKS),
            keyframe_requests: metrics::counter!(KEYFRAME_REQUESTS),
        }
    }
}

/// A track a participant publishes.
struct Published {
    /// Worker-unique number of this track: what subscriptions match on per packet.
    number: u64,
    /// The id announced to the others (ours, not the client's).
    public_id: String,
    kind: Kind,
    receiver_id: RTCRtpReceiverId,
    ssrc: u32,
    codec: RTCRtpCodec,
    /// The publisher's negotiated payload types.
    codecs: Vec<(u8, Codec)>,
    last_keyframe_request: Option<Instant>,
}

/// One publisher track forwarded to this participant.
struct Subscription {
    publisher: u64,
    /// The publisher's stack track id (key of `Peer::published`).
    source: String,
    /// `Published::number` of that track.
    source_number: u64,
    sender_id: RTCRtpSenderId,
    ssrc: u32,
    kind: Kind,
    payload: PayloadMap,
    /// Ask the publisher for a keyframe once this subscriber can receive.
    needs_keyframe: bool,
    /// RTP clock rate, to turn reported jitter into seconds.
    clock_rate: u32,
    /// From the subscriber's latest receiver report: fraction lost, jitter (seconds).
    reported: Option<(f64, f64)>,
}

struct Peer {
    key: PeerKey,
    participant: String,
    consultation: String,
    ufrag: String,
    pc: RTCPeerConnection,
    events: UnboundedSender<SfuEvent>,
    awaiting_answer: bool,
    renegotiate: bool,
    connected: bool,
    failed: bool,
    /// By the stack's track id; at most one audio and one video (we offer two `recvonly`
    /// sections), so the cheap hasher is safe from client-chosen keys.
    published: HashMap<String, Published, IdHash>,
    subscriptions: Vec<Subscription>,
    /// Subscription changes that arrived while an offer was waiting for its answer: the
    /// transceivers are never changed in `have-local-offer`, so the answer always matches the
    /// offer it answers. Applied, in order, once the answer is in; then one new offer.
    deferred: Vec<Deferred>,
    timeout: Option<Instant>,
    /// Input was handled since `timeout` was last asked for (it is in `Worker::stale`).
    timeout_stale: bool,
}

pub struct Worker {
    index: usize,
    socket: mio::net::UdpSocket,
    local_addr: SocketAddr,
    routes: Arc<Routes>,
    /// Every worker's handle (ours included), to pass on datagrams of their participants.
    workers: Arc<[Handle]>,
    /// Workers that were passed datagrams in this read batch and must be woken.
    to_wake: Vec<bool>,
    /// Datagrams to send at the end of the batch.
    out: SendQueue,
    peers: HashMap<u64, Peer, IdHash>,
    rooms: HashMap<String, Vec<u64>>,
    scratch: Vec<TaggedRTCMessage>,
    events: Vec<RTCPeerConnectionEvent>,
    metrics: Option<Metrics>,
    next_track: u64,
    /// Earliest connection timer (may be early, never late).
    next_deadline: Option<Instant>,
    /// Scratch list of connections whose timers are due.
    due: Vec<u64>,
    /// Connections whose next timer must be asked for again, once per batch rather than once
    /// per datagram.
    stale: Vec<u64>,
}

/// Which subscriptions to remove.
#[derive(Clone)]
enum Unsubscribe {
    /// Everything from this publisher (it left).
    Publisher(u64),
    /// One track of a publisher (it stopped publishing it).
    Track(u64, String),
}

impl Unsubscribe {
    fn matches(&self, sub: &Subscription) -> bool {
        match self {
            Unsubscribe::Publisher(p) => sub.publisher == *p,
            Unsubscribe::Track(p, t) => sub.publisher == *p && sub.source == *t,
        }
    }
}

/// A subscription change held back while an offer is outstanding.
enum Deferred {
    Subscribe { publisher: u64, source: String },
    Unsubscribe(Unsubscribe),
}

/// Hashing for the worker's own `u64` keys (sequential ids): one multiply instead of SipHash per
/// lookup on the per-packet path. Not for keys an attacker chooses.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// The codecs we forward, as a copyable key (no string compare per packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Opus,
    Vp8,
    H264,
    Other,
}

impl Codec {
    fn of(mime: &str) -> Codec {
        if mime.eq_ignore_ascii_case("audio/opus") {
            Codec::Opus
        } else if mime.eq_ignore_ascii_case("video/VP8") {
            Codec::Vp8
        } else if mime.eq_ignore_ascii_case("video/H264") {
            Codec::H264
        } else {
            Codec::Other
        }
    }
}

fn kind_of(kind: RtpCodecKind) -> Kind {
    match kind {
        RtpCodecKind::Audio => Kind::Audio,
        _ => Kind::Video,
    }
}

fn rtc_kind(kind: Kind) -> RtpCodecKind {
    match kind {
        Kind::Audio => RtpCodecKind::Audio,
        Kind::Video => RtpCodecKind::Video,
    }
}

impl Worker {
    pub fn new(
        index: usize,
        socket: mio::net::UdpSocket,
        local_addr: SocketAddr,
        routes: Arc<Routes>,
        workers: Arc<[Handle]>,
    ) -> Worker {
        let to_wake = vec![false; workers.len()];
        Worker {
            index,
            socket,
            local_addr,
            routes,
            workers,
            to_wake,
            out: SendQueue::default(),
            peers: HashMap::default(),
            rooms: HashMap::new(),
            scratch: Vec::with_capacity(64),
            events: Vec::with_capacity(16),
            metrics: None,
            next_track: 1,
            next_deadline: None,
            due: Vec::new(),
            stale: Vec::new(),
        }
    }

    fn metrics(&mut self) -> &Metrics {
        // Taken on first use, so the exporter installed by the binary is the one recorded into.
        self.metrics.get_or_insert_with(Metrics::new)
    }

    pub fn run(mut self, mut poll: mio::Poll, rx: mpsc::Receiver<Input>) {
        let _span = tracing::info_span!("sfu_worker", index = self.index).entered();
        if let Err(e) = poll
            .registry()
            .register(&mut self.socket, SOCKET, mio::Interest::READABLE)
        {
            tracing::error!(error = %e, "cannot watch the media socket; worker not started");
            return;
        }
        let counters = ReadCounters {
            unknown: metrics::counter!(metric_names::DATAGRAMS_DROPPED, "reason" => "unknown_source"),
            handed_over: metrics::counter!(metric_names::DATAGRAMS_HANDED_OVER),
        };
        let mut events = mio::Events::with_capacity(16);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Readiness is edge-triggered: once readable, read until the socket says `WouldBlock`.
        // Also set when channel inputs are left over: either way the next poll does not sleep.
        let mut readable = true;
        loop {
            self.refresh_timeouts();
            let now = Instant::now();
            let wait = if readable {
                Duration::ZERO
            } else {
                self.next_deadline
                    .map_or(IDLE_WAIT, |t| t.saturating_duration_since(now))
                    .min(IDLE_WAIT)
            };
            if let Err(e) = poll.poll(&mut events, Some(wait))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "media worker poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            if events.iter().any(|e| e.token() == SOCKET) {
                readable = true;
            }
            if self.workers[self.index].closed.load(Ordering::Acquire) {
                break;
            }
            // Commands (and datagrams handed over by other workers) first, a bounded number so
            // our own socket still gets its turn: an answer must not wait behind media.
            let mut queued = true;
            for _ in 0..COMMAND_BUDGET {
                match rx.try_recv() {
                    Ok(input) => self.handle(input),
                    Err(_) => {
                        queued = false;
                        break;
                    }
                }
            }
            if readable {
                readable = self.read_datagrams(&mut buf, &counters);
            }
            // Anything left over is handled on the next turn without sleeping.
            readable |= queued;
            self.refresh_timeouts();
            let now = Instant::now();
            if self.next_deadline.is_some_and(|t| t <= now) {
                self.run_timers(now);
            }
            self.out.flush(&self.socket);
        }
        for id in self.peers.keys().copied().collect::<Vec<_>>() {
            self.remove(id, Instant::now());
        }
        self.out.flush(&self.socket);
    }

    /// Read up to [`READ_BUDGET`] datagrams and handle each on the spot, or pass it to the worker
    /// owning its participant. Returns whether the socket may still hold more.
    ///
    /// One `recvfrom` per datagram: `recvmmsg` was tried (fewer system calls, by a third) and
    /// measured no cheaper per packet here (`docs/benchmarks.md`), so the simpler call stays.
    fn read_datagrams(&mut self, buf: &mut [u8], counters: &ReadCounters) -> bool {
        let mut more = true;
        for _ in 0..READ_BUDGET {
            let (n, from) = match self.socket.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                // ICMP errors echoed back (port unreachable) and signals: the next read goes on.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "media socket read failed");
                    more = false;
                    break;
                }
            };
            let at = Instant::now();
            let data = &buf[..n];
            let Some(key) = self.routes.lookup(data, from) else {
                counters.unknown.increment(1);
                continue;
            };
            if key.worker == self.index {
                self.datagram(key, from, at, BytesMut::from(data));
                if self.out.len() >= FLUSH_AT {
                    self.out.flush(&self.socket);
                }
            } else if self.workers[key.worker]
                .queue(Input::Datagram {
                    key,
                    from,
                    at,
                    data: BytesMut::from(data),
                })
                .is_ok()
            {
                self.to_wake[key.worker] = true;
                counters.handed_over.increment(1);
            }
        }
        self.out.flush(&self.socket);
        for (w, wake) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                let _ = self.workers[w].waker.wake();
            }
        }
        more
    }

    /// Ask every connection that handled input since for its next timer; per-packet work only
    /// ever lowers `next_deadline` here (the full scan is in `run_timers`).
    fn refresh_timeouts(&mut self) {
        let mut stale = std::mem::take(&mut self.stale);
        for id in &stale {
            if let Some(p) = self.peers.get_mut(id) {
                p.timeout_stale = false;
                p.timeout = p.pc.poll_timeout();
                if let Some(t) = p.timeout
                    && self.next_deadline.is_none_or(|d| t < d)
                {
                    self.next_deadline = Some(t);
                }
            }
        }
        stale.clear();
        self.stale = stale;
    }

    /// Fire every due connection timer, then recompute the earliest deadline. Per-packet work
    /// only ever lowers `next_deadline` (see `process`); the full scan happens here, at timer
    /// granularity, not per datagram.
    fn run_timers(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        due.extend(
            self.peers
                .values()
                .filter(|p| p.timeout.is_some_and(|t| t <= now))
                .map(|p| p.key.id),
        );
        for &id in &due {
            if let Some(p) = self.peers.get_mut(&id) {
                let result = catch_unwind(AssertUnwindSafe(|| p.pc.handle_timeout(now)));
                if !matches!(result, Ok(Ok(()))) {
                    tracing::debug!(participant = %p.participant, "timeout handling failed");
                }
            }
            self.process(id, now);
        }
        due.clear();
        self.due = due;
        self.refresh_timeouts();
        self.next_deadline = self.peers.values().filter_map(|p| p.timeout).min();
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Datagram {
                key,
                from,
                at,
                data,
            } => self.datagram(key, from, at, data),
            Input::Add {
                key,
                consultation,
                participant,
                events,
                reply,
            } => {
                let result = self.add(key, consultation, participant, events);
                let _ = reply.send(result);
            }
            Input::Answer { key, sdp, reply } => {
                let result = self.answer(key.id, sdp);
                let _ = reply.send(result);
            }
            Input::Candidate {
                key,
                candidate,
                reply,
            } => {
                let Some(p) = self.peers.get_mut(&key.id) else {
                    let _ = reply.send(Err(SfuError::UnknownParticipant));
                    return;
                };
                let init = match candidate {
                    Some(c) => RTCIceCandidateInit {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_mline_index,
                        ..Default::default()
                    },
                    None => RTCIceCandidateInit::default(),
                };
                // We are ICE-lite: remote candidates are optional (checks arrive from the client),
                // but a malformed one is still reported.
                let result = if init.candidate.is_empty() {
                    Ok(())
                } else {
                    match catch_unwind(AssertUnwindSafe(|| p.pc.add_remote_candidate(init))) {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(SfuError::BadCandidate(e.to_string())),
                        Err(_) => Err(SfuError::BadCandidate("unparsable".into())),
                    }
                };
                let _ = reply.send(result);
                self.process(key.id, Instant::now());
            }
            Input::Remove { key } => self.remove(key.id, Instant::now()),
        }
    }

    /// One datagram from a participant of ours: through its connection, then forward what came
    /// out. `at`: when it was taken off the socket.
    fn datagram(&mut self, key: PeerKey, from: SocketAddr, at: Instant, data: BytesMut) {
        let local_addr = self.local_addr;
        let Some(p) = self.peers.get_mut(&key.id) else {
            return;
        };
        let msg = TaggedBytesMut {
            now: at,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        let result = catch_unwind(AssertUnwindSafe(|| p.pc.handle_read(msg)));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.metrics().rejected.increment(1),
            Err(_) => {
                tracing::error!("media stack panicked on a datagram; closing that session");
                self.metrics().rejected.increment(1);
                self.fail(key.id);
                return;
            }
        }
        self.process(key.id, at);
    }

    fn add(
        &mut self,
        key: PeerKey,
        consultation: String,
        participant: String,
        events: UnboundedSender<SfuEvent>,
    ) -> Result<(), SfuError> {
        let now = Instant::now();
        let (ufrag, pwd) = peer::ice_credentials();
        let pc = peer::build(now, self.local_addr, &ufrag, &pwd)
            .map_err(|e| SfuError::Setup(e.to_string()))?;
        self.routes.by_ufrag.insert(ufrag.clone(), key);
        let members = self.rooms.entry(consultation.clone()).or_default();
        let existing: Vec<u64> = members.clone();
        members.push(key.id);
        self.peers.insert(
            key.id,
            Peer {
                key,
                participant,
                consultation,
                ufrag,
                pc,
                events,
                awaiting_answer: false,
                renegotiate: false,
                connected: false,
                failed: false,
                published: HashMap::default(),
                subscriptions: Vec::new(),
                deferred: Vec::new(),
                timeout: None,
                timeout_stale: false,
            },
        );
        // Subscribe the newcomer to everything already published.
        for publisher in existing {
            let tracks: Vec<String> = self
                .peers
                .get(&publisher)
                .map(|p| p.published.keys().cloned().collect())
                .unwrap_or_default();
            for source in tracks {
                self.subscribe(key.id, publisher, &source);
            }
        }
        self.negotiate(key.id, now);
        self.process(key.id, now);
        Ok(())
    }

    /// Add to `subscriber` a sender forwarding `publisher`'s track `source`. The caller negotiates.
    fn subscribe(&mut self, subscriber: u64, publisher: u64, source: &str) {
        if let Some(s) = self.peers.get_mut(&subscriber)
            && s.awaiting_answer
        {
            s.deferred.push(Deferred::Subscribe {
                publisher,
                source: source.to_string(),
            });
            s.renegotiate = true;
            return;
        }
        let Some(p) = self.peers.get(&publisher) else {
            return;
        };
        let Some(track) = p.published.get(source) else {
            return;
        };
        let (kind, codec, stream_id) = (track.kind, track.codec.clone(), p.participant.clone());
        let source_number = track.number;
        let clock_rate = codec.clock_rate;
        let track_id = format!("{}-{}", stream_id, self.next_track);
        self.next_track += 1;
        let Some(s) = self.peers.get_mut(&subscriber) else {
            return;
        };
        let ssrc = rand::random::<u32>();
        let local = MediaStreamTrack::new(
            stream_id,
            track_id.clone(),
            track_id,
            rtc_kind(kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        match s.pc.add_track(local) {
            Ok(sender_id) => s.subscriptions.push(Subscription {
                publisher,
                source: source.to_string(),
                source_number,
                sender_id,
                ssrc,
                kind,
                payload: PayloadMap::default(),
                needs_keyframe: kind == Kind::Video,
                clock_rate,
                reported: None,
            }),
            Err(e) => tracing::warn!(error = %e, "could not add a subscription"),
        }
    }

    /// Send a new offer, or remember to once the outstanding one is answered.
    fn negotiate(&mut self, id: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.failed {
            return;
        }
        if p.awaiting_answer {
            p.renegotiate = true;
            return;
        }
        p.renegotiate = false;
        let offer = p.pc.create_offer(None).and_then(|offer| {
            p.pc.set_local_description(now, offer.clone())?;
            Ok(offer)
        });
        match offer {
            Ok(offer) => {
                p.awaiting_answer = true;
                let _ = p.events.send(SfuEvent::Offer(offer.sdp));
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not create an offer");
            }
        }
    }

    fn answer(&mut self, id: u64, sdp: String) -> Result<(), SfuError> {
        let now = Instant::now();
        let p = self
            .peers
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant)?;
        if !p.awaiting_answer {
            return Err(SfuError::NoPendingOffer);
        }
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        match catch_unwind(AssertUnwindSafe(|| {
            p.pc.set_remote_description(now, answer)
        })) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SfuError::BadSdp(e.to_string())),
            Err(_) => {
                tracing::error!("media stack panicked on an answer; closing that session");
                self.fail(id);
                return Err(SfuError::BadSdp("unusable".into()));
            }
        }
        p.awaiting_answer = false;
        let deferred = std::mem::take(&mut p.deferred);
        for change in deferred {
            match change {
                Deferred::Subscribe { publisher, source } => self.subscribe(id, publisher, &source),
                Deferred::Unsubscribe(which) => {
                    self.remove_subscriptions(id, which);
                }
            }
        }
        let again = self.peers.get(&id).is_some_and(|p| p.renegotiate);
        if again {
            self.negotiate(id, now);
        }
        self.request_pending_keyframes(id, now);
        self.process(id, now);
        Ok(())
    }

    /// A session the stack can no longer be trusted with: tell signalling, stop using it.
    fn fail(&mut self, id: u64) {
        if let Some(p) = self.peers.get_mut(&id)
            && !p.failed
        {
            p.failed = true;
            let _ = p.events.send(SfuEvent::Failed);
        }
    }

    fn remove(&mut self, id: u64, now: Instant) {
        let Some(mut p) = self.peers.remove(&id) else {
            return;
        };
        self.routes.forget(p.key, &p.ufrag);
        let _ = catch_unwind(AssertUnwindSafe(|| p.pc.close()));
        let published = p.published.len() as f64;
        self.metrics().tracks.decrement(published);
        let members = match self.rooms.get_mut(&p.consultation) {
            Some(m) => {
                m.retain(|&m| m != id);
                m.clone()
            }
            None => Vec::new(),
        };
        if members.is_empty() {
            self.rooms.remove(&p.consultation);
            quality::forget_consultation(&p.consultation);
        }
        for other in members {
            self.unsubscribe(other, Unsubscribe::Publisher(id), now);
        }
    }

    /// Remove `subscriber`'s subscriptions matching `which`, renegotiating if any went.
    fn unsubscribe(&mut self, subscriber: u64, which: Unsubscribe, now: Instant) {
        if self.remove_subscriptions(subscriber, which) {
            self.negotiate(subscriber, now);
            self.process(subscriber, now);
        }
    }

    /// Remove the matching subscriptions now, or defer the removal while an offer is
    /// outstanding. Returns whether a new offer is needed now.
    fn remove_subscriptions(&mut self, subscriber: u64, which: Unsubscribe) -> bool {
        let Some(s) = self.peers.get_mut(&subscriber) else {
            return false;
        };
        if s.awaiting_answer {
            s.deferred.push(Deferred::Unsubscribe(which));
            s.renegotiate = true;
            return false;
        }
        let mut removed = false;
        let mut i = 0;
        while i < s.subscriptions.len() {
            if which.matches(&s.subscriptions[i]) {
                let sub = s.subscriptions.swap_remove(i);
                let _ = s.pc.remove_track(sub.sender_id);
                removed = true;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Queue everything the connection has to send (sent at the end of the batch).
    fn send_datagrams(queue: &mut SendQueue, pc: &mut RTCPeerConnection) {
        while let Some(out) = pc.poll_write() {
            queue.push(out.transport.peer_addr, out.message);
        }
    }

    /// Drain everything a participant's connection produced: datagrams out, events, media in
    /// (forwarded to subscribers on the spot).
    fn process(&mut self, id: u64, now: Instant) {
        let mut reads = std::mem::take(&mut self.scratch);
        let mut events = std::mem::take(&mut self.events);
        while let Some(p) = self.peers.get_mut(&id) {
            Self::send_datagrams(&mut self.out, &mut p.pc);
            while let Some(e) = p.pc.poll_event() {
                events.push(e);
            }
            while let Some(m) = p.pc.poll_read() {
                reads.push(m);
            }
            if !p.timeout_stale {
                p.timeout_stale = true;
                self.stale.push(id);
            }
            if events.is_empty() && reads.is_empty() {
                break;
            }
            // Media and RTCP in only touch other connections (subscribers, publishers); events
            // may touch this one. Without events, one more drain of this connection's output
            // (anything its interceptors produced while reading) is all a second round would do.
            let again = !events.is_empty();
            for e in events.drain(..) {
                self.on_event(id, e, now);
            }
            for m in reads.drain(..) {
                match m.message {
                    RTCMessage::RtpPacket(track, packet) => self.forward(id, &track, packet, now),
                    RTCMessage::RtcpPacket(_, packets) => {
                        self.on_reception_reports(id, &packets);
                        for packet in &packets {
                            if is_keyframe_request(packet.as_ref()) {
                                for ssrc in packet.destination_ssrc() {
                                    self.on_keyframe_request(id, ssrc, now);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            if !again {
                if let Some(p) = self.peers.get_mut(&id) {
                    Self::send_datagrams(&mut self.out, &mut p.pc);
                }
                break;
            }
        }
        self.scratch = reads;
        self.events = events;
    }

    fn on_event(&mut self, id: u64, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(p) = self.peers.get_mut(&id) else {
                    return;
                };
                tracing::debug!(participant = %p.participant, %state, "media connection state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        p.connected = true;
                        let _ = p.events.send(SfuEvent::Connected);
                        self.request_pending_keyframes(id, now);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        p.connected = false;
                        self.fail(id);
                    }
                    RTCPeerConnectionState::Disconnected => p.connected = false,
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.publish(id, init.track_id, init.receiver_id, init.ssrc, now);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track)) => {
                self.unpublish(id, &track, now);
            }
            _ => {}
        }
    }

    fn publish(
        &mut self,
        id: u64,
        track: String,
        receiver_id: RTCRtpReceiverId,
        ssrc: u32,
        now: Instant,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.published.contains_key(&track) {
            return;
        }
        let Some(mut receiver) = p.pc.rtp_receiver(receiver_id) else {
            return;
        };
        let kind = kind_of(receiver.track().kind());
        let params = &receiver.get_parameters().rtp_parameters.codecs;
        let Some(codec) = params.first().map(|c| c.rtp_codec.clone()) else {
            return;
        };
        let codecs = params
            .iter()
            .map(|c| (c.payload_type, Codec::of(&c.rtp_codec.mime_type)))
            .collect();
        let number = self.next_track;
        let public_id = format!("{}-{}", p.participant, number);
        self.next_track += 1;
        let _ = p.events.send(SfuEvent::TrackPublished {
            track_id: public_id.clone(),
            kind,
        });
        p.published.insert(
            track.clone(),
            Published {
                number,
                public_id,
                kind,
                receiver_id,
                ssrc,
                codec,
                codecs,
                last_keyframe_request: None,
            },
        );
        self.metrics().tracks.increment(1.0);
        for s in self.others(id) {
            self.subscribe(s, id, &track);
            self.negotiate(s, now);
            self.process(s, now);
        }
    }

    /// The other members of `id`'s consultation.
    fn others(&self, id: u64) -> Vec<u64> {
        self.peers
            .get(&id)
            .and_then(|p| self.rooms.get(&p.consultation))
            .map(|m| m.iter().copied().filter(|&m| m != id).collect())
            .unwrap_or_default()
    }

    fn unpublish(&mut self, id: u64, track: &str, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(gone) = p.published.remove(track) else {
            return;
        };
        let _ = p.events.send(SfuEvent::TrackUnpublished {
            track_id: gone.public_id,
        });
        self.metrics().tracks.decrement(1.0);
        for s in self.others(id) {
            self.unsubscribe(s, Unsubscribe::Track(id, track.to_string()), now);
        }
    }

    /// Forward one packet from `publisher`'s track `source` to every subscription of it.
    /// `received`: when the datagram was taken off the socket.
    fn forward(
        &mut self,
        publisher: u64,
        source: &str,
        mut packet: rtc::rtp::Packet,
        received: Instant,
    ) {
        let size = (packet.header.marshal_size() + packet.payload.len()) as u64;
        // Every copy drops them anyway (`forward::translate`): drop them once, so a copy per
        // subscriber allocates nothing.
        packet.header.extensions = Vec::new();
        let m = self.metrics.get_or_insert_with(Metrics::new);
        m.packets_in.increment(1);
        m.bytes_in.increment(size);
        let Some(p) = self.peers.get(&publisher) else {
            return;
        };
        let Some(track) = p.published.get(source) else {
            return;
        };
        let number = track.number;
        // The codec of this packet on the publisher's side, to resolve payload types below.
        let codec = track
            .codecs
            .iter()
            .find(|c| c.0 == packet.header.payload_type)
            .map(|c| c.1);
        let Some(members) = self.rooms.get(&p.consultation) else {
            return;
        };
        let mut sent = 0u64;
        let mut sent_bytes = 0u64;
        for &sid in members {
            if sid == publisher {
                continue;
            }
            let Some(s) = self.peers.get_mut(&sid) else {
                continue;
            };
            if !s.connected {
                continue;
            }
            let sent_before = sent;
            for sub in s
                .subscriptions
                .iter_mut()
                .filter(|sub| sub.source_number == number)
            {
                let mut out = packet.clone();
                let mut result = forward::translate(&mut out, sub.ssrc, &sub.payload);
                if result == Err(forward::Drop::Unresolved) {
                    let incoming = out.header.payload_type;
                    let outgoing = codec.and_then(|codec| {
                        let mut sender = s.pc.rtp_sender(sub.sender_id)?;
                        sender
                            .get_parameters()
                            .rtp_parameters
                            .codecs
                            .iter()
                            .find(|c| Codec::of(&c.rtp_codec.mime_type) == codec)
                            .map(|c| c.payload_type)
                    });
                    sub.payload.set(incoming, outgoing);
                    result = forward::translate(&mut out, sub.ssrc, &sub.payload);
                }
                if result.is_err() {
                    continue;
                }
                if let Some(mut sender) = s.pc.rtp_sender(sub.sender_id) {
                    let len = out.payload.len() as u64;
                    if sender.write_rtp(Instant::now(), out).is_ok() {
                        sent += 1;
                        sent_bytes += len + 12;
                    }
                }
            }
            Self::send_datagrams(&mut self.out, &mut s.pc);
            if sent > sent_before {
                self.out.forwarded(received, sent - sent_before);
            }
        }
        let m = self.metrics.get_or_insert_with(Metrics::new);
        m.packets_out.increment(sent);
        m.bytes_out.increment(sent_bytes);
    }

    /// Receiver reports (alone or in a sender report) from a subscriber about what we forward to
    /// it: keep each subscription's latest loss and jitter, and publish the consultation's worst.
    fn on_reception_reports(&mut self, subscriber: u64, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        use rtc::rtcp::receiver_report::ReceiverReport;
        use rtc::rtcp::sender_report::SenderReport;
        let Some(s) = self.peers.get_mut(&subscriber) else {
            return;
        };
        let mut changed = false;
        for packet in packets {
            let any = packet.as_any();
            let reports = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                &rr.reports
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                &sr.reports
            } else {
                continue;
            };
            for r in reports {
                if let Some(sub) = s.subscriptions.iter_mut().find(|sub| sub.ssrc == r.ssrc) {
                    let jitter = r.jitter as f64 / sub.clock_rate.max(1) as f64;
                    sub.reported = Some((r.fraction_lost as f64 / 256.0, jitter));
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
        let consultation = s.consultation.clone();
        let (mut loss, mut jitter) = (0.0f64, 0.0f64);
        for m in self.rooms.get(&consultation).into_iter().flatten() {
            for (l, j) in self
                .peers
                .get(m)
                .into_iter()
                .flat_map(|p| p.subscriptions.iter().filter_map(|s| s.reported))
            {
                loss = loss.max(l);
                jitter = jitter.max(j);
            }
        }
        quality::set_consultation(&consultation, loss, jitter);
    }

    /// A subscriber asked for a keyframe of the track it receives on `ssrc`.
    fn on_keyframe_request(&mut self, subscriber: u64, ssrc: u32, now: Instant) {
        let Some(s) = self.peers.get(&subscriber) else {
            return;
        };
        let Some(sub) = s.subscriptions.iter().find(|sub| sub.ssrc == ssrc) else {
            return;
        };
        let (publisher, source) = (sub.publisher, sub.source.clone());
        self.request_keyframe(publisher, &source, now);
    }

    /// Ask for keyframes on behalf of a subscriber that just became able to receive.
    fn request_pending_keyframes(&mut self, subscriber: u64, now: Instant) {
        let Some(s) = self.peers.get_mut(&subscriber) else {
            return;
        };
        if !s.connected || s.awaiting_answer {
            return;
        }
        let wanted: Vec<(u64, String)> = s
            .subscriptions
            .iter_mut()
            .filter(|sub| sub.needs_keyframe && sub.kind == Kind::Video)
            .map(|sub| {
                sub.needs_keyframe = false;
                (sub.publisher, sub.source.clone())
            })
            .collect();
        for (publisher, source) in wanted {
            self.request_keyframe(publisher, &source, now);
        }
    }

    fn request_keyframe(&mut self, publisher: u64, source: &str, now: Instant) {
        let Some(p) = self.peers.get_mut(&publisher) else {
            return;
        };
        let Some(track) = p.published.get_mut(source) else {
            return;
        };
        if track
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        track.last_keyframe_request = Some(now);
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: track.ssrc,
        };
        let receiver_id = track.receiver_id;
        if let Some(mut receiver) = p.pc.rtp_receiver(receiver_id) {
            let _ = receiver.write_rtcp(now, vec![Box::new(pli)]);
        }
        Self::send_datagrams(&mut self.out, &mut p.pc);
        self.metrics().keyframe_requests.increment(1);
    }
}
