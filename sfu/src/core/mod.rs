//! The sans-I/O core of a media worker: consultations, participants, their tracks and
//! subscriptions, the negotiation of each participant's session, and forwarding.
//!
//! The core owns every participant's `RTCPeerConnection` but no socket, no thread, no channel
//! and no clock: time is always passed in (`now`), datagrams come in as values and go out into a
//! queue the caller drains. The same core runs inside a media worker thread (the mio driver in
//! `driver.rs`) and inside the deterministic simulation tests (`tests/simulation.rs`), which
//! advance it on a synthetic clock.
//!
//! A participant is named by a `u64` the caller chooses (unique per core); its signalling id
//! (the `participant` string) only travels in announced track ids.
//!
//! ```no_run
//! # use teleconsult_sfu::core::{Core, Output};
//! # use std::time::Instant;
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # fn tell(_: u64, _: teleconsult_sfu::SfuEvent) {}
//! let mut core = Core::new("192.0.2.1:3478".parse().unwrap());
//! let _ufrag = core.add_participant(Instant::now(), 1, "consultation-a", "alice").unwrap();
//! loop {
//!     match core.poll_output() {
//!         Output::Transmit { to, data } => send(to, &data),
//!         Output::Event { participant, event } => tell(participant, event),
//!         Output::Timeout(_when) => break, // wait for a datagram or `when`, then feed it in
//!     }
//! }
//! ```
//!
//! Inside: this file holds the model (participants, tracks, subscriptions), the commands and
//! the per-connection plumbing (draining each connection after input, timers); `subscriptions.rs`
//! publishing, subscribing and negotiating; `media.rs` the per-packet path (our SRTP, the packet
//! cache, the munger; RTP/RTCP never enter `rtc`'s pipeline once DTLS is up); `feedback.rs`
//! RTCP (reports, NACKs, keyframe requests); `codec.rs` codec and kind mapping.
//!
//! Error policy: client input (SDP, candidates, datagrams) never panics the core. Commands
//! return [`SfuError`]; a bad datagram is counted and dropped; a panic inside the `rtc` stack on
//! client input is caught and fails that participant's session only.

mod allocate;
mod codec;
mod feedback;
mod media;
pub mod recording;
mod subscriptions;

use crate::cache::PacketCache;
use crate::forward::{Munger, PayloadMap};
use crate::keyframe::KeyframeThrottle;
use crate::metrics::Recorded;
use crate::negotiation::{Generation, Negotiation};
use crate::quality;
use crate::sendq::SendQueue;
use crate::{Candidate, Kind, SfuError, SfuEvent, session};
use bytes::BytesMut;
use codec::Codec;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::TaggedRTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// How often authenticated media counts as ICE liveness (far below the disconnected timeout).
const LIVENESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// An input to the core, for callers that prefer one entry point ([`Core::handle_input`]) to the
/// methods it dispatches to.
#[derive(Debug)]
pub enum Input {
    /// [`Core::add_participant`].
    AddParticipant {
        key: u64,
        consultation: String,
        participant: String,
    },
    /// [`Core::apply_answer`].
    Answer { key: u64, sdp: String },
    /// [`Core::add_remote_candidate`].
    Candidate {
        key: u64,
        candidate: Option<Candidate>,
    },
    /// [`Core::remove_participant`].
    RemoveParticipant { key: u64 },
    /// [`Core::handle_datagram`]: `now` is when it was taken off the socket.
    Datagram {
        key: u64,
        from: SocketAddr,
        data: BytesMut,
    },
    /// [`Core::handle_timeout`].
    Timeout,
}

/// What the core wants done, from [`Core::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send `data` to `to` from the media port.
    Transmit { to: SocketAddr, data: BytesMut },
    /// Tell the signalling layer about participant `participant`.
    Event { participant: u64, event: SfuEvent },
    /// Nothing more to do until this instant (call [`Core::handle_timeout`] then) or the next
    /// input; `None`: nothing is scheduled.
    Timeout(Option<Instant>),
}

/// A track a participant publishes.
struct Track {
    /// Core-unique number of this track: what subscriptions match on per packet.
    number: u64,
    /// The id announced to the others (ours, not the client's).
    public_id: String,
    kind: Kind,
    ssrc: u32,
    codec: RTCRtpCodec,
    /// The publisher's negotiated payload types.
    codecs: Vec<(u8, Codec)>,
    /// The publisher's RTX stream (RFC 4588), if it negotiated one: its SSRC (from the
    /// `a=ssrc-group:FID` of its answer).
    rtx_ssrc: Option<u32>,
    /// Its RTX payload types: (RTX payload type, the media payload type it repairs).
    rtx_payload_types: Vec<(u8, u8)>,
    /// The negotiated id of the transport-wide sequence number header extension, if any.
    twcc_id: Option<u8>,
    keyframes: KeyframeThrottle,
    clock_rate: u32,
    /// The recent packets, for every subscriber's NACKs.
    cache: PacketCache,
    /// What we received, for our receiver reports and NACKs to the publisher.
    recv: media::ReceiveStats,
    /// The publisher's latest sender report: its NTP time, and when it arrived.
    sender_report: Option<(u64, Instant)>,
    /// Microphone, camera or screen: the section it arrived on.
    source: crate::Source,
    /// Its tap, while its consultation is being recorded (`recording.rs`).
    recording: Option<recording::TrackRecording>,
    /// Simulcast (`crate::simulcast`): every layer is a `Track` of its own (its SSRC, cache,
    /// statistics); `group` is the `number` of the announced one (its own number without
    /// simulcast), which subscriptions follow.
    group: u64,
    /// The layer (0 = lowest) when the track is one layer of a simulcast publication.
    layer: Option<u8>,
    /// The layer's rid, as sent (to recognise its repairs by `repaired-rid`).
    rid: Option<Vec<u8>>,
    /// The negotiated id of the `repaired-rid` header extension (simulcast RTX).
    rrid_id: Option<u8>,
    /// When its last packet arrived (which layers arrive, for the allocation).
    last_arrival: Option<Instant>,
    /// The frame height of its latest VP8 keyframe (0: none seen).
    height: u16,
    /// The clock mapping of its latest sender report: (NTP, RTP).
    clock: Option<crate::simulcast::ClockMapping>,
    /// Bytes received (headers included), and the rate they came at, measured by the allocation.
    bytes: u64,
    bitrate: crate::simulcast::LayerRate,
}

/// One track forwarded to one participant.
struct Subscription {
    publisher: u64,
    /// The publisher's stack track id (key of `Participant::tracks`).
    source: String,
    /// `Track::number` of that track.
    source_number: u64,
    sender_id: RTCRtpSenderId,
    ssrc: u32,
    kind: Kind,
    payload: PayloadMap,
    /// The offer that declares this subscription to the subscriber: nothing is forwarded on it
    /// (and no keyframe asked for it) before that offer's answer is applied.
    declared_in: Generation,
    /// Ask the publisher for a keyframe once this subscriber can receive.
    needs_keyframe: bool,
    /// Its start was handled (`start_subscription`: the cache replayed, or a keyframe asked
    /// for), once, even if nothing could be sent (a codec the subscriber lacks).
    started: bool,
    /// RTP clock rate, to turn reported jitter into seconds.
    clock_rate: u32,
    /// From the subscriber's latest receiver report: fraction lost, jitter (seconds).
    reported: Option<(f64, f64)>,
    /// Sequence numbers and timestamps as the subscriber sees them.
    munger: Munger,
    /// The MID header extension as negotiated with the subscriber: (id, mid).
    mid: Option<(u8, Vec<u8>)>,
    /// `mid` and `rtx` were looked up (at the first packet forwarded).
    resolved: bool,
    /// The RTX SSRC declared for this subscription in our offer (video only).
    rtx_ssrc: Option<u32>,
    /// What the subscriber's answer negotiated for RTX: (its media payload type, its RTX
    /// payload type) pairs. Empty: retransmissions go on the media SSRC.
    rtx: Vec<(u8, u8)>,
    /// The RTX stream's own sequence numbers.
    rtx_seq: u16,
    /// Packets and payload octets sent, for sender reports.
    packets: u32,
    octets: u32,
    /// The track id the subscriber sees (its `a=msid`): what `video_size` names.
    track_id: String,
    /// The publication is simulcast: `layers` picks what is forwarded.
    simulcast: bool,
    layers: crate::simulcast::LayerSelector,
    /// VP8 picture ids and TL0PICIDX as this subscriber sees them (simulcast only).
    vp8: crate::simulcast::Vp8Munger,
    /// When the last packet forwarded arrived (simulcast: the timestamp step at a switch).
    last_sent_arrival: Option<Instant>,
    /// The height of the subscriber's tile for this video, in device pixels (`video_size`).
    tile_height: Option<u32>,
    /// The negotiated id of the transport-wide sequence number on this subscription's sender.
    twcc_id: Option<u8>,
    /// (outgoing sequence number, transport-wide number) of recent packets, so a repair on the
    /// media SSRC repeats the bytes first sent (video only; empty for audio).
    twcc_sent: Vec<(u16, u16)>,
    /// Allocation ticks in a row that found room for a higher layer (hysteresis).
    upgrade_ticks: u8,
}

/// A subscription change, applied at once or held back while an offer is outstanding.
#[derive(Debug)]
enum Change {
    Subscribe { publisher: u64, source: String },
    Unsubscribe(Unsubscribe),
}

/// Which subscriptions to remove.
#[derive(Clone, Debug)]
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

/// Where a participant's media session stands, as far as forwarding is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Not yet connected (ICE and DTLS under way): nothing can be sent.
    New,
    /// Connected: forward.
    Connected,
    /// Was connected, and no STUN consent check was heard for
    /// [`ICE_DISCONNECTED_TIMEOUT`](crate::session::ICE_DISCONNECTED_TIMEOUT). Often a client
    /// whose checks are merely sparse, or a path that recovers: keep forwarding (and feeding
    /// the retransmission history), so nothing is lost for good if it comes back.
    Disconnected,
    /// Failed or closed: stop.
    Closed,
}

impl Link {
    /// Whether media is sent to this participant.
    fn forwards(self) -> bool {
        matches!(self, Link::Connected | Link::Disconnected)
    }
}

struct Participant {
    /// The signalling layer's id.
    id: String,
    consultation: String,
    /// Our ICE ufrag: the demultiplexing key of its datagrams on the shared port.
    ufrag: String,
    pc: RTCPeerConnection,
    /// Our SRTP contexts, once DTLS is up.
    media: Option<Box<media::MediaKeys>>,
    /// Where our media goes: the destination of `rtc`'s own datagrams (the selected pair).
    remote: Option<SocketAddr>,
    /// The sender SSRC of the RTCP we send this participant (NACK, PLI, receiver reports).
    rtcp_ssrc: u32,
    negotiation: Negotiation<Change>,
    link: Link,
    failed: bool,
    /// Arrivals of its transport-wide sequence numbers, for its TWCC feedback.
    twcc: crate::twcc::Recorder,
    /// The estimate of what we can send it (its TWCC feedback about what we sent).
    bwe: crate::bwe::SubscriberBwe,
    /// When authenticated media from it last counted as ICE liveness (see `Core::heard`).
    heard: Option<Instant>,
    /// By the stack's track id; at most one per `recvonly` section we offer (microphone,
    /// camera, screen), so the cheap hasher is safe from client-chosen keys.
    tracks: HashMap<String, Track, IdHash>,
    subscriptions: Vec<Subscription>,
    timeout: Option<Instant>,
    /// Input was handled since `timeout` was last asked for (it is in `Core::stale`).
    timeout_stale: bool,
}

/// The sans-I/O SFU: see the module documentation.
pub struct Core {
    local_addr: SocketAddr,
    /// Our ICE-TCP candidate, when the TCP port is on.
    tcp_addr: Option<SocketAddr>,
    participants: HashMap<u64, Participant, IdHash>,
    /// Consultation id → its participants, in arrival order.
    consultations: HashMap<String, Vec<u64>>,
    /// Datagrams to send.
    out: SendQueue,
    /// Datagrams being handed out by `poll_output` (only used without a driver).
    draining: VecDeque<(SocketAddr, BytesMut)>,
    events: VecDeque<(u64, SfuEvent)>,
    scratch: Vec<TaggedRTCMessage>,
    scratch_events: Vec<RTCPeerConnectionEvent>,
    metrics: Recorded,
    next_track: u64,
    /// Earliest connection timer (may be early, never late).
    next_deadline: Option<Instant>,
    /// Scratch list of connections whose timers are due.
    due: Vec<u64>,
    /// Connections whose next timer must be asked for again, once per batch rather than once
    /// per datagram.
    stale: Vec<u64>,
    /// When receiver reports go to the publishers next (`None` until a session has keys).
    next_reports: Option<Instant>,
    /// When TWCC feedback goes to the publishers next (`None` until a session has keys).
    next_twcc: Option<Instant>,
    /// Scratch list of video subscriptions (subscriber, SSRC) whose first packet is due: each
    /// is replayed from its track's cache (`media.rs`).
    starting: Vec<(u64, u32)>,
    /// Scratch list of publishers whose TWCC feedback is due.
    due_twcc: Vec<u64>,
    /// Consultations being recorded, and where to.
    recordings: HashMap<String, std::sync::Arc<dyn recording::RecordingSink>>,
    /// When simulcast subscriptions are allocated their layers next.
    next_allocation: Option<Instant>,
}

/// Hashing for the core's own `u64` keys (sequential ids): one multiply instead of SipHash per
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

impl Core {
    /// A core whose participants reach it at `local_addr` (the announced address of the media
    /// port: our ICE candidate).
    pub fn new(local_addr: SocketAddr) -> Core {
        Core {
            local_addr,
            tcp_addr: None,
            participants: HashMap::default(),
            consultations: HashMap::new(),
            out: SendQueue::default(),
            draining: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::with_capacity(64),
            scratch_events: Vec::with_capacity(16),
            metrics: Recorded::default(),
            next_track: 1,
            next_deadline: None,
            due: Vec::new(),
            stale: Vec::new(),
            next_reports: None,
            next_twcc: None,
            starting: Vec::new(),
            due_twcc: Vec::new(),
            recordings: HashMap::new(),
            next_allocation: None,
        }
    }

    /// Handle one input (see [`Input`]); errors as the method it dispatches to.
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), SfuError> {
        match input {
            Input::AddParticipant {
                key,
                consultation,
                participant,
            } => self
                .add_participant(now, key, &consultation, &participant)
                .map(|_ufrag| ()),
            Input::Answer { key, sdp } => self.apply_answer(now, key, sdp),
            Input::Candidate { key, candidate } => self.add_remote_candidate(now, key, candidate),
            Input::RemoveParticipant { key } => {
                self.remove_participant(now, key);
                Ok(())
            }
            Input::Datagram { key, from, data } => {
                self.handle_datagram(now, key, from, data);
                Ok(())
            }
            Input::Timeout => {
                self.handle_timeout(now);
                Ok(())
            }
        }
    }

    /// The next thing to do: datagrams to send first, then events, then when to call
    /// [`Core::handle_timeout`]. (The media driver sends straight from the send queue
    /// instead, and takes events with [`Core::poll_event`].)
    pub fn poll_output(&mut self) -> Output {
        if self.draining.is_empty() {
            self.draining.extend(self.out.drain());
        }
        if let Some((to, data)) = self.draining.pop_front() {
            return Output::Transmit { to, data };
        }
        if let Some((participant, event)) = self.events.pop_front() {
            return Output::Event { participant, event };
        }
        Output::Timeout(self.poll_timeout())
    }

    /// The datagrams waiting to be sent, for the driver to flush straight to its socket (no
    /// copy, no hand-over per datagram).
    pub(crate) fn transmits(&mut self) -> &mut SendQueue {
        &mut self.out
    }

    /// The next event for the signalling layer.
    pub fn poll_event(&mut self) -> Option<(u64, SfuEvent)> {
        self.events.pop_front()
    }

    /// When [`Core::handle_timeout`] must be called next (`None`: nothing scheduled). May be
    /// early, never late.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.refresh_timeouts();
        self.next_deadline
    }

    /// Our ICE ufrag for participant `key`: a STUN binding request naming it belongs to them.
    pub fn ufrag(&self, key: u64) -> Option<&str> {
        self.participants.get(&key).map(|p| p.ufrag.as_str())
    }

    /// Whether participant `key` has a session here.
    pub fn has_participant(&self, key: u64) -> bool {
        self.participants.contains_key(&key)
    }

    /// Participants with a session here.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Create the session of a participant of `consultation`: it is offered to receive the
    /// participant's audio and video and subscribed to every track already published there. Its
    /// first [`SfuEvent::Offer`] is in the output. Returns our ICE ufrag for it: a STUN binding
    /// request naming it belongs to this participant (the driver's routing key).
    pub fn add_participant(
        &mut self,
        now: Instant,
        key: u64,
        consultation: &str,
        participant: &str,
    ) -> Result<String, SfuError> {
        if self.participants.contains_key(&key) {
            return Err(SfuError::AlreadyExists);
        }
        let (ufrag, pwd) = session::ice_credentials();
        let pc = session::build(now, self.local_addr, self.tcp_addr, &ufrag, &pwd)
            .map_err(|e| SfuError::Setup(e.to_string()))?;
        let members = self
            .consultations
            .entry(consultation.to_string())
            .or_default();
        let existing: Vec<u64> = members.clone();
        members.push(key);
        self.participants.insert(
            key,
            Participant {
                id: participant.to_string(),
                consultation: consultation.to_string(),
                ufrag: ufrag.clone(),
                pc,
                media: None,
                remote: None,
                rtcp_ssrc: rand::random(),
                negotiation: Negotiation::default(),
                link: Link::New,
                failed: false,
                twcc: Default::default(),
                bwe: Default::default(),
                heard: None,
                tracks: HashMap::default(),
                subscriptions: Vec::new(),
                timeout: None,
                timeout_stale: false,
            },
        );
        // Subscribe the newcomer to everything already published: one subscription per
        // announced track (a simulcast camera's other layers are not tracks of their own to a
        // subscriber: its subscription moves between them).
        for publisher in existing {
            let tracks: Vec<String> = self
                .participants
                .get(&publisher)
                .map(|p| {
                    p.tracks
                        .iter()
                        .filter(|(_, t)| t.number == t.group)
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            for source in tracks {
                self.change(key, Change::Subscribe { publisher, source });
            }
        }
        self.negotiate(key, now);
        self.process(key, now);
        Ok(ufrag)
    }

    /// Apply the client's answer to our outstanding offer; then the changes held back meanwhile,
    /// and one new offer if any were.
    pub fn apply_answer(&mut self, now: Instant, key: u64, sdp: String) -> Result<(), SfuError> {
        let p = self
            .participants
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        p.negotiation
            .expect_answer()
            .map_err(|_| SfuError::NoPendingOffer)?;
        // Checked against the offer it answers before the stack sees it (`crate::answer`): a
        // refused answer leaves the session as it was, waiting for a corrected one.
        if let Some(offer) = p.pc.pending_local_description() {
            crate::answer::check(&offer.sdp, &sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        }
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        match catch_unwind(AssertUnwindSafe(|| {
            p.pc.set_remote_description(now, answer)
        })) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Refused by the stack after our checks. If it has dropped the offer meanwhile
                // (no answer can apply now), the session would wait for ever: make a new offer
                // instead, carrying whatever changed meanwhile.
                if p.pc.pending_local_description().is_none()
                    && let Ok(answered) = p.negotiation.answered()
                {
                    for change in answered.deferred {
                        self.apply(key, change);
                    }
                    self.negotiate(key, now);
                    self.process(key, now);
                }
                return Err(SfuError::BadSdp(e.to_string()));
            }
            Err(_) => {
                tracing::error!("media stack panicked on an answer; closing that session");
                self.fail(key);
                return Err(SfuError::BadSdp("unusable".into()));
            }
        }
        let answered = p
            .negotiation
            .answered()
            .map_err(|_| SfuError::NoPendingOffer)?;
        for change in answered.deferred {
            self.apply(key, change);
        }
        if answered.offer_again {
            self.negotiate(key, now);
        }
        self.request_pending_keyframes(key, now);
        self.process(key, now);
        Ok(())
    }

    /// Restart ICE on participant `key`'s session (its network changed, or ICE failed): new
    /// local credentials, carried by the next offer (now, or after the outstanding offer's
    /// answer). DTLS, tracks and subscriptions stay. Returns the new ufrag (the driver routes
    /// STUN naming it to this participant; the old one keeps working until the answer).
    pub fn restart_ice(&mut self, now: Instant, key: u64) -> Result<String, SfuError> {
        let p = self
            .participants
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        if p.failed {
            return Err(SfuError::UnknownParticipant);
        }
        let (ufrag, pwd) = session::ice_credentials();
        p.pc.restart_ice_with_credentials(ufrag.clone(), pwd);
        p.ufrag = ufrag.clone();
        // Back to `Connected` after the restart repairs what was lost on the old path (see
        // `on_event`); meanwhile forwarding goes on as in any spell of `Disconnected`.
        if p.link == Link::Connected {
            p.link = Link::Disconnected;
        }
        self.negotiate(key, now);
        self.process(key, now);
        Ok(ufrag)
    }

    /// Add a trickled remote candidate (`None`: end of candidates). We are ICE-lite: remote
    /// candidates are optional (checks arrive from the client), but a malformed one is reported.
    pub fn add_remote_candidate(
        &mut self,
        now: Instant,
        key: u64,
        candidate: Option<Candidate>,
    ) -> Result<(), SfuError> {
        let p = self
            .participants
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        let init = match candidate {
            Some(c) => RTCIceCandidateInit {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
                ..Default::default()
            },
            None => RTCIceCandidateInit::default(),
        };
        let result = if init.candidate.is_empty() {
            Ok(())
        } else {
            match catch_unwind(AssertUnwindSafe(|| p.pc.add_remote_candidate(init))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SfuError::BadCandidate(e.to_string())),
                Err(_) => Err(SfuError::BadCandidate("unparsable".into())),
            }
        };
        self.process(key, now);
        result
    }

    /// Close a participant's session; its tracks are withdrawn from the others (whose
    /// subscriptions go, renegotiated). Unknown keys are ignored.
    pub fn remove_participant(&mut self, now: Instant, key: u64) {
        let Some(mut p) = self.participants.remove(&key) else {
            return;
        };
        let _ = catch_unwind(AssertUnwindSafe(|| p.pc.close()));
        quality::forget_subscriber(&p.id);
        let published = p.tracks.len() as f64;
        self.metrics.get().tracks.decrement(published);
        let members = match self.consultations.get_mut(&p.consultation) {
            Some(m) => {
                m.retain(|&m| m != key);
                m.clone()
            }
            None => Vec::new(),
        };
        if members.is_empty() {
            self.consultations.remove(&p.consultation);
            quality::forget_consultation(&p.consultation);
        }
        for other in members {
            self.unsubscribe(other, Unsubscribe::Publisher(key), now);
        }
    }

    /// Close every session (the worker is stopping).
    pub fn close(&mut self, now: Instant) {
        let keys: Vec<u64> = self.participants.keys().copied().collect();
        for key in keys {
            self.remove_participant(now, key);
        }
        self.metrics.flush();
    }

    /// One datagram from participant `key`, taken off the socket at `now`, from `from`: through
    /// its connection, then forward what came out. Datagrams of unknown participants are
    /// ignored; ones the stack rejects are counted.
    pub fn handle_datagram(&mut self, now: Instant, key: u64, from: SocketAddr, data: BytesMut) {
        self.receive(now, key, from, data, TransportProtocol::UDP);
    }

    /// One frame from participant `key`'s ICE-TCP stream from `from` (`tcp.rs`): the same path
    /// as a datagram, for the ICE agent on our TCP candidate.
    pub fn handle_tcp_frame(&mut self, now: Instant, key: u64, from: SocketAddr, data: BytesMut) {
        self.receive(now, key, from, data, TransportProtocol::TCP);
    }

    /// Our ICE-TCP candidate's address (announce IP, TCP port), offered after the UDP one in
    /// every session created from now on.
    pub fn set_tcp_addr(&mut self, addr: Option<SocketAddr>) {
        self.tcp_addr = addr;
    }

    fn receive(
        &mut self,
        now: Instant,
        key: u64,
        from: SocketAddr,
        data: BytesMut,
        protocol: TransportProtocol,
    ) {
        let local_addr = match (protocol, self.tcp_addr) {
            (TransportProtocol::TCP, Some(tcp)) => tcp,
            _ => self.local_addr,
        };
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        // RFC 7983: 128–191 is RTP or RTCP (RFC 5761: RTCP packet types 192–223 in the second
        // byte), ours once DTLS has given us the keys. Before that nothing can authenticate it:
        // dropped and counted. (The first packet of a publisher's stream still goes to `rtc`,
        // which opens its track.)
        if data.first().is_some_and(|b| (128..=191).contains(b)) {
            if p.link == Link::Closed {
                return;
            }
            if p.media.is_none() {
                self.metrics.get().before_keys.increment(1);
                return;
            }
            if data.get(1).is_some_and(|b| (192..=223).contains(b)) {
                self.on_rtcp(key, from, data, now);
                return;
            }
            if self.is_known_stream(key, &data) {
                self.on_rtp(key, from, data, now);
                return;
            }
        }
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: protocol,
            },
            message: data,
        };
        let stun = msg.message.first().is_some_and(|&b| b <= 3);
        let result = catch_unwind(AssertUnwindSafe(|| p.pc.handle_read(msg)));
        // A consent check may have moved the selected pair (a nomination): our media follows.
        if stun
            && p.media.is_some()
            && let Some(to) = media::selected_remote(&mut p.pc)
        {
            p.remote = Some(to);
        }
        match result {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.metrics.get().rejected.increment(1),
            Err(_) => {
                tracing::error!("media stack panicked on a datagram; closing that session");
                self.metrics.get().rejected.increment(1);
                self.fail(key);
                return;
            }
        }
        self.process(key, now);
    }

    /// Fire every connection timer due at `now`. Per-packet work only ever lowers the deadline
    /// (see `process`); the full scan happens here, at timer granularity, not per datagram.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.refresh_timeouts();
        // The per-packet tallies reach the process-wide counters with the TWCC timer: every
        // 100 ms, not per datagram (the driver calls this once per batch).
        if self.next_twcc.is_some_and(|t| t <= now) {
            self.metrics.flush();
        }
        self.send_reports(now);
        self.send_twcc_feedback(now);
        if self.next_allocation.is_some_and(|t| t <= now) {
            self.next_allocation = Some(now + crate::simulcast::ALLOCATION_INTERVAL);
            self.allocate(None, now);
        }
        if self.next_deadline.is_none_or(|t| t > now) {
            return;
        }
        let mut due = std::mem::take(&mut self.due);
        due.extend(
            self.participants
                .iter()
                .filter(|(_, p)| p.timeout.is_some_and(|t| t <= now))
                .map(|(&key, _)| key),
        );
        for &key in &due {
            if let Some(p) = self.participants.get_mut(&key) {
                let result = catch_unwind(AssertUnwindSafe(|| p.pc.handle_timeout(now)));
                if !matches!(result, Ok(Ok(()))) {
                    tracing::debug!(participant = %p.id, "timeout handling failed");
                }
            }
            self.process(key, now);
        }
        due.clear();
        self.due = due;
        self.refresh_timeouts();
        self.next_deadline = self
            .participants
            .values()
            .filter_map(|p| p.timeout)
            .chain(self.next_reports)
            .chain(self.next_twcc)
            .chain(self.next_allocation)
            .min();
    }

    /// Ask every connection that handled input since for its next timer; per-packet work only
    /// ever lowers `next_deadline` here.
    fn refresh_timeouts(&mut self) {
        let mut stale = std::mem::take(&mut self.stale);
        for key in &stale {
            if let Some(p) = self.participants.get_mut(key) {
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
        for t in [self.next_reports, self.next_twcc, self.next_allocation]
            .into_iter()
            .flatten()
        {
            if self.next_deadline.is_none_or(|d| t < d) {
                self.next_deadline = Some(t);
            }
        }
    }

    fn emit(&mut self, key: u64, event: SfuEvent) {
        self.events.push_back((key, event));
    }

    /// Queue everything the connection has to send; learn from it where our media goes.
    fn send_datagrams(
        queue: &mut SendQueue,
        pc: &mut RTCPeerConnection,
        remote: &mut Option<SocketAddr>,
    ) {
        while let Some(out) = pc.poll_write() {
            if let Some(to) = media::media_destination(&out.message, out.transport.peer_addr) {
                *remote = Some(to);
            }
            queue.push(out.transport.peer_addr, out.message);
        }
    }

    /// Drain everything a participant's connection produced: datagrams out, events, media in
    /// (forwarded to subscribers on the spot).
    fn process(&mut self, key: u64, now: Instant) {
        let mut reads = std::mem::take(&mut self.scratch);
        let mut events = std::mem::take(&mut self.scratch_events);
        while let Some(p) = self.participants.get_mut(&key) {
            Self::send_datagrams(&mut self.out, &mut p.pc, &mut p.remote);
            while let Some(e) = p.pc.poll_event() {
                events.push(e);
            }
            // What `rtc` still reads is only the first packet of each stream (it opens the
            // track): not forwarded, our path takes the stream from the next packet on.
            while let Some(m) = p.pc.poll_read() {
                reads.push(m);
            }
            reads.clear();
            if p.media.is_none()
                && let Some(keys) = media::MediaKeys::of(&p.pc)
            {
                p.media = Some(Box::new(keys));
                if self.next_reports.is_none() {
                    self.next_reports = Some(now + media::REPORT_INTERVAL);
                }
                if self.next_twcc.is_none() {
                    self.next_twcc = Some(now + crate::twcc::FEEDBACK_INTERVAL);
                }
                if self.next_allocation.is_none() {
                    self.next_allocation = Some(now + crate::simulcast::ALLOCATION_INTERVAL);
                }
            }
            if !p.timeout_stale {
                p.timeout_stale = true;
                self.stale.push(key);
            }
            // Events may touch this connection: drain it again after them.
            if events.is_empty() {
                break;
            }
            for e in events.drain(..) {
                self.on_event(key, e, now);
            }
        }
        self.scratch = reads;
        self.scratch_events = events;
    }

    fn on_event(&mut self, key: u64, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(p) = self.participants.get_mut(&key) else {
                    return;
                };
                tracing::debug!(participant = %p.id, %state, "media connection state");
                match (p.link, state) {
                    (Link::Closed, _) => {}
                    (Link::Disconnected, RTCPeerConnectionState::Connected) => {
                        // Back from a silence: whatever the subscriber lost meanwhile (and
                        // could not recover by NACK) is repaired by a keyframe of each video
                        // track it receives.
                        p.link = Link::Connected;
                        for sub in &mut p.subscriptions {
                            if sub.kind == Kind::Video {
                                sub.needs_keyframe = true;
                            }
                        }
                        self.request_pending_keyframes(key, now);
                        // And what its subscribers lost of its own video meanwhile (after an
                        // ICE restart onto a new path, nothing of it was received).
                        let own: Vec<String> =
                            self.participants.get(&key).map_or_else(Vec::new, |p| {
                                p.tracks
                                    .iter()
                                    .filter(|(_, t)| t.kind == Kind::Video)
                                    .map(|(id, _)| id.clone())
                                    .collect()
                            });
                        for source in own {
                            self.request_keyframe(key, &source, None, now);
                        }
                    }
                    (_, RTCPeerConnectionState::Connected) => {
                        p.link = Link::Connected;
                        self.emit(key, SfuEvent::Connected);
                        self.request_pending_keyframes(key, now);
                    }
                    (_, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) => {
                        p.link = Link::Closed;
                        self.fail(key);
                    }
                    (Link::Connected, RTCPeerConnectionState::Disconnected) => {
                        p.link = Link::Disconnected;
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.publish(
                    key,
                    init.track_id,
                    init.receiver_id,
                    init.ssrc,
                    init.rid,
                    now,
                );
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track)) => {
                self.unpublish(key, &track, now);
            }
            _ => {}
        }
    }

    /// Authenticated SRTP/SRTCP from participant `key` at `from`: count it as traffic heard on
    /// its ICE pair (in `rtc` 0.21.1 only STUN refreshed it, since media no longer passes through
    /// `handle_read`), at most once per [`LIVENESS_INTERVAL`] so the agent is not touched per
    /// packet.
    pub(super) fn heard(&mut self, key: u64, from: SocketAddr, now: Instant) {
        let local_addr = self.local_addr;
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.heard
            .is_some_and(|t| now.saturating_duration_since(t) < LIVENESS_INTERVAL)
        {
            return;
        }
        p.heard = Some(now);
        let transport = TransportContext {
            local_addr,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        };
        let _ = catch_unwind(AssertUnwindSafe(|| {
            p.pc.note_authenticated_traffic(now, transport)
        }));
    }

    /// A session the stack can no longer be trusted with: tell signalling, stop using it.
    fn fail(&mut self, key: u64) {
        if let Some(p) = self.participants.get_mut(&key)
            && !p.failed
        {
            p.failed = true;
            p.link = Link::Closed;
            self.emit(key, SfuEvent::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn core() -> Core {
        Core::new("127.0.0.1:3478".parse().unwrap())
    }

    fn offers(core: &mut Core) -> Vec<(u64, String)> {
        let mut offers = Vec::new();
        while let Some((key, event)) = core.poll_event() {
            if let SfuEvent::Offer(sdp) = event {
                offers.push((key, sdp));
            }
        }
        offers
    }

    #[test]
    fn a_participant_gets_an_offer_with_three_recvonly_sections_and_a_timer() {
        let mut core = core();
        let now = Instant::now();
        let ufrag = core.add_participant(now, 7, "c", "alice").unwrap();
        assert_eq!(core.ufrag(7), Some(ufrag.as_str()));
        let offers = offers(&mut core);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].0, 7);
        let sdp = &offers[0].1;
        // Microphone, camera, screen.
        assert_eq!(sdp.matches("a=recvonly").count(), 3, "{sdp}");
        assert_eq!(sdp.matches("m=video").count(), 2, "{sdp}");
        assert!(sdp.contains("a=ice-lite"), "{sdp}");
        assert!(sdp.contains(&format!("a=ice-ufrag:{ufrag}")), "{sdp}");
        assert_eq!(
            core.add_participant(now, 7, "c", "again"),
            Err(SfuError::AlreadyExists)
        );
    }

    #[test]
    fn commands_on_unknown_participants_and_answers_without_offers_are_refused() {
        let mut core = core();
        let now = Instant::now();
        assert_eq!(
            core.apply_answer(now, 1, "v=0".into()),
            Err(SfuError::UnknownParticipant)
        );
        assert_eq!(
            core.add_remote_candidate(now, 1, None),
            Err(SfuError::UnknownParticipant)
        );
        core.add_participant(now, 1, "c", "alice").unwrap();
        // Garbage as an answer: refused, and the offer stays outstanding for a real answer.
        assert!(matches!(
            core.apply_answer(now, 1, "not sdp".into()),
            Err(SfuError::BadSdp(_))
        ));
        assert!(matches!(
            core.add_remote_candidate(
                now,
                1,
                Some(Candidate {
                    candidate: "candidate:garbage".into(),
                    sdp_mid: None,
                    sdp_mline_index: None
                })
            ),
            Err(SfuError::BadCandidate(_))
        ));
        // Removing twice, or an unknown key, is harmless.
        core.remove_participant(now, 1);
        core.remove_participant(now, 1);
        assert!(!core.has_participant(1));
        assert_eq!(core.participant_count(), 0);
    }

    #[test]
    fn garbage_datagrams_are_dropped_without_harm() {
        let mut core = core();
        let now = Instant::now();
        core.add_participant(now, 1, "c", "alice").unwrap();
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        for (i, bytes) in [
            &[][..],
            &[0u8; 1][..],
            &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..], // RTP header before DTLS
            &[22, 254, 253, 0, 0][..],                       // truncated DTLS record
            &[0, 1, 0, 4, 0x21, 0x12, 0xA4, 0x42][..],       // truncated STUN
        ]
        .into_iter()
        .enumerate()
        {
            core.handle_datagram(
                now + Duration::from_millis(i as u64),
                1,
                from,
                BytesMut::from(bytes),
            );
        }
        core.handle_datagram(now, 99, from, BytesMut::from(&b"unknown"[..]));
        assert!(core.has_participant(1));
    }
}
