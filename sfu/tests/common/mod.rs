//! A deterministic simulation of a consultation: the SFU's sans-I/O [`Core`] and several client
//! peers (the `rtc` crate's own sans-I/O `RTCPeerConnection`: full ICE, DTLS client, sending
//! synthetic Opus and VP8 RTP), advanced together on one synthetic clock. Datagrams travel in
//! memory with a fixed one-way latency; offers and answers are handed over directly (the test
//! plays the signalling layer). No sockets, no threads, no sleeps: a simulated second costs a
//! few milliseconds of CPU, and every run takes the same steps in simulated time.
//!
//! (What stays random is what the stacks draw themselves — ICE credentials, SSRCs, DTLS keys —
//! none of which changes which step happens when.)

#![allow(dead_code)] // each test binary uses a part of the harness

use bytes::BytesMut;
use rtc::interceptor::ReceiverReportBuilder;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_simulcast_extension_headers, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCPeerConnectionState, RTCSignalingState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use teleconsult_sfu::core::{Core, Input, Output};
use teleconsult_sfu::keyframe::{DeliverKeyframeRequests, is_keyframe_request};
use teleconsult_sfu::{Kind, SfuEvent};

/// The SFU's media port in the simulation (a documentation address: nothing leaves memory).
pub const SFU_ADDR: &str = "192.0.2.1:3478";
/// One-way latency of every simulated link.
pub const LATENCY: Duration = Duration::from_millis(2);
/// Audio every 20 ms; video every second audio tick (25 frames/s, one packet each).
pub const MEDIA_TICK: Duration = Duration::from_millis(20);
/// The consultation a [`Sim::new`] runs.
pub const CONSULTATION: &str = "consultation-1";

fn sfu_addr() -> SocketAddr {
    SFU_ADDR.parse().expect("a valid address")
}

/// A synthetic payload naming its sender: `<participant>/<generation>/<a|v>/<seq>`; video
/// starts with a VP8 payload descriptor and frame tag (RFC 7741: S bit, partition 0; the frame
/// tag's P bit 0 for a keyframe), which is all the SFU reads of it.
fn payload(name: &str, generation: u32, kind: Kind, seq: u16, keyframe: bool) -> Vec<u8> {
    let k = if kind == Kind::Audio { 'a' } else { 'v' };
    let mut p = match kind {
        Kind::Video => vec![0x10, if keyframe { 0x00 } else { 0x01 }],
        Kind::Audio => Vec::new(),
    };
    p.extend_from_slice(format!("{name}/{generation}/{k}/{seq}/").as_bytes());
    // Filler up to a typical Opus frame; the SFU never looks inside.
    p.resize(120, 0x5A);
    p
}

/// Tag a video payload with the simulcast layer it belongs to (after its sequence number).
fn tag_layer(p: &mut [u8], rid: &str) {
    if let Some(at) = p.iter().position(|&b| b == 0x5A) {
        let tag = format!("{rid}/");
        if at + tag.len() <= p.len() {
            p[at..at + tag.len()].copy_from_slice(tag.as_bytes());
        }
    }
}

/// The layer tag of a payload, if [`tag_layer`] put one there.
fn layer_tag(p: &[u8]) -> Option<String> {
    let p = p.get(2..)?;
    let text = std::str::from_utf8(p.split(|&b| b == 0x5A).next()?).ok()?;
    let tag = text.split('/').nth(4)?;
    (!tag.is_empty()).then(|| tag.to_string())
}

/// Whether a payload built by [`payload`] is a VP8 keyframe.
fn is_keyframe_payload(p: &[u8]) -> bool {
    p.len() >= 2 && p[0] == 0x10 && p[1] & 0x01 == 0
}

/// (participant, generation, kind, sequence number) of a payload built by [`payload`].
fn parse_payload(p: &[u8]) -> Option<(String, u32, Kind, u16)> {
    let p = if p.first() == Some(&0x10) {
        p.get(2..)?
    } else {
        p
    };
    let text = std::str::from_utf8(p.split(|&b| b == 0x5A).next()?).ok()?;
    let mut parts = text.split('/');
    let name = parts.next()?.to_string();
    let generation = parts.next()?.parse().ok()?;
    let kind = match parts.next()? {
        "a" => Kind::Audio,
        "v" => Kind::Video,
        _ => return None,
    };
    let seq = parts.next()?.parse().ok()?;
    Some((name, generation, kind, seq))
}

/// xorshift: the simulated losses' random numbers (a fixed seed: the same losses every run).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Whether a datagram is RTP, not RTCP (RFC 7983 first byte 128–191; RFC 5761 packet types).
pub fn is_rtp(data: &[u8]) -> bool {
    data.len() >= 12 && (128..=191).contains(&data[0]) && !(192..=223).contains(&data[1])
}

/// Whether a datagram is STUN (first byte 0–3, RFC 7983).
pub fn is_stun(data: &[u8]) -> bool {
    data.first().is_some_and(|&b| b <= 3)
}

/// A track the client receives (announced by the SFU's offer, opened by its first packet).
#[derive(Debug, Clone)]
pub struct RemoteTrack {
    /// The SFU's stream id: the publisher's participant id.
    pub stream: String,
    pub receiver_id: RTCRtpReceiverId,
    /// The SSRC the SFU sends it on (where keyframe requests go).
    pub ssrc: u32,
    pub packets: u64,
}

struct Sender {
    id: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
    /// RTP sequence number (media and padding packets).
    seq: u16,
    /// Media packets sent (what payloads count).
    frame: u16,
    clock_rate: u32,
    packets: u32,
    octets: u32,
}

/// NTP time (RFC 3550: seconds since 1900 in the upper 32 bits) of the simulated clock's
/// `epoch`: any fixed value does.
const NTP_EPOCH_SECS: u64 = 3_900_000_000;

/// One participant's client: a real `rtc` peer connection that answers the SFU's offers.
pub struct Client {
    pub name: String,
    /// Its key in the SFU core.
    pub key: u64,
    pub addr: SocketAddr,
    pub pc: RTCPeerConnection,
    /// Payloads say which session of this participant sent them (a rejoin counts up).
    pub generation: u32,
    audio: Option<Sender>,
    video: Option<Sender>,
    /// Answer offers this long after they arrive (a slow client).
    pub answer_delay: Duration,
    pending_offers: VecDeque<(Instant, String)>,
    pub offers: usize,
    pub answers: usize,
    pub last_offer: Option<String>,
    pub signaling_state: RTCSignalingState,
    pub connected: bool,
    pub failed: bool,
    /// By the client stack's track id.
    pub tracks: HashMap<String, RemoteTrack>,
    /// Intact packets received, by (publisher participant, its generation, kind).
    pub received: HashMap<(String, u32, Kind), u64>,
    /// The publisher's sequence numbers (from the payload) of those packets, same keys.
    pub received_seqs: HashMap<(String, u32, Kind), BTreeSet<u16>>,
    /// Packets whose payload did not parse, or whose stream was not their publisher.
    pub corrupt: u64,
    /// Simulated instants at which keyframe requests for our own video arrived.
    pub keyframe_requests: Vec<Instant>,
    /// Whether we send a keyframe as the next video frame when asked (a PLI or FIR).
    pub answers_keyframe_requests: bool,
    /// A keyframe was asked for and not sent yet.
    keyframe_wanted: bool,
    /// Also a keyframe every this many video frames (the first frame always is one).
    pub keyframe_interval: Option<u16>,
    /// Video keyframes sent: our frame numbers.
    pub keyframes_sent: Vec<u16>,
    /// RTP sequence numbers of the keyframes received, by the same keys as `received`.
    pub received_keyframes: HashMap<(String, u32, Kind), BTreeSet<u16>>,
    /// Each offer of the SFU this client applied (`set_remote_description`): when, and its SDP.
    pub offers_applied: Vec<(Instant, String)>,
    /// RTP datagrams that reached this client, by SSRC (read from the clear SRTP header, before
    /// the stack sees them, so packets it would drop count too): arrival instants.
    pub rtp_arrivals: HashMap<u32, Vec<Instant>>,
    /// Left the consultation: takes no more input.
    pub gone: bool,
    /// Stops sending media (the connection stays up).
    pub paused: bool,
    /// Padding-only packets sent after each video packet (a publisher probing bandwidth).
    pub padding_per_frame: usize,
    /// Padding-only packets the stack took for sending.
    pub padding_sent: u64,
    /// The media clock: the tick and instant of our first media packet. RTP timestamps count
    /// from it; our sender reports map it to NTP time, the same for audio and video.
    media_epoch: Option<(u64, Instant)>,
    next_sender_report: Option<Instant>,
    /// Sender reports received: (SSRC, NTP time, RTP time).
    pub sender_reports: Vec<(u32, u64, u32)>,
    /// RTP sequence numbers of intact packets received, by the same keys as `received`.
    pub received_rtp_seqs: HashMap<(String, u32, Kind), BTreeSet<u16>>,
    /// Negotiates RTX (RFC 4588) for video.
    pub rtx: bool,
    /// Transport-wide congestion control feedback received, with its arrival.
    pub twcc_feedback: Vec<(Instant, TransportLayerCc)>,
    /// The RTX SSRC of our video, if we publish with RTX.
    pub rtx_ssrc: Option<u32>,
    /// Simulcast: our video's lower layers beside the top one (`video`): (rid, SSRC, next
    /// sequence number); every layer carries the same frames, tagged with its rid in the payload.
    pub layers: Vec<(String, u32, u16)>,
    /// Video timestamps received, in arrival order, with the rid tag of the layer they came from
    /// (simulcast publishers only): (publisher, rid, RTP sequence number, RTP timestamp).
    pub received_layers: Vec<(String, String, u16, u32)>,
}

fn codecs() -> (RTCRtpCodecParameters, RTCRtpCodecParameters) {
    let audio = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    };
    let video = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: String::new(),
                },
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: "pli".into(),
                },
            ],
        },
        payload_type: 96,
    };
    (audio, video)
}

impl Client {
    #[allow(clippy::too_many_arguments)]
    fn new(
        now: Instant,
        name: &str,
        key: u64,
        addr: SocketAddr,
        publish: bool,
        consent_interval: Option<Duration>,
        rtx: bool,
        simulcast: bool,
    ) -> Client {
        let (audio_codec, video_codec) = codecs();
        let mut media_engine = MediaEngine::default();
        media_engine
            .register_codec(audio_codec.clone(), RtpCodecKind::Audio)
            .expect("opus registers");
        media_engine
            .register_codec(video_codec.clone(), RtpCodecKind::Video)
            .expect("vp8 registers");
        if rtx {
            // RFC 4588 for VP8: our NACK responder resends on an RTX stream of our own, and
            // the stack unwraps what arrives on the SFU's RTX streams.
            media_engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: "video/rtx".to_owned(),
                            clock_rate: 90000,
                            channels: 0,
                            sdp_fmtp_line: "apt=96".to_owned(),
                            rtcp_feedback: vec![],
                        },
                        payload_type: 97,
                    },
                    RtpCodecKind::Video,
                )
                .expect("rtx registers");
        }
        // Keyframe requests for what we publish, and sender reports for what we receive, reach
        // us through `poll_read`. `rtc`'s default interceptors, except that sender reports are
        // ours (`write_media`): its sender-report interceptor takes the wall clock at each
        // packet, which does not follow the simulated one.
        let registry = Registry::new().with(Slot::from(14_000), DeliverKeyframeRequests::default());
        let registry = configure_nack(registry, &mut media_engine);
        configure_simulcast_extension_headers(&mut media_engine).expect("extensions");
        // TWCC both ways: what we publish carries transport-wide sequence numbers (the SFU's
        // feedback comes back, see `twcc_feedback`).
        let registry = configure_twcc(registry, &mut media_engine).expect("twcc");
        let registry = registry.with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
        let mut settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_answering_dtls_role(RTCDtlsRole::Client);
        if let Some(interval) = consent_interval {
            // Consent checks (STUN binding requests) on the selected pair only this often, as
            // aiortc does (4–6 s). The client's own timeouts are raised so that only the
            // server's view of the pair is under test.
            settings = settings.with_ice_timeouts(
                Some(Duration::from_secs(60)),
                Some(Duration::from_secs(60)),
                Some(interval),
            );
        }
        let settings = settings.build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .expect("client peer connection");
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .expect("host candidate");
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().expect("json"))
            .expect("local candidate");
        let mut client = Client {
            name: name.to_string(),
            key,
            addr,
            pc,
            generation: 0,
            audio: None,
            video: None,
            answer_delay: Duration::ZERO,
            pending_offers: VecDeque::new(),
            offers: 0,
            answers: 0,
            last_offer: None,
            signaling_state: RTCSignalingState::Stable,
            connected: false,
            failed: false,
            tracks: HashMap::new(),
            received: HashMap::new(),
            received_seqs: HashMap::new(),
            corrupt: 0,
            keyframe_requests: Vec::new(),
            answers_keyframe_requests: true,
            keyframe_wanted: false,
            keyframe_interval: None,
            keyframes_sent: Vec::new(),
            received_keyframes: HashMap::new(),
            offers_applied: Vec::new(),
            rtp_arrivals: HashMap::new(),
            gone: false,
            paused: false,
            padding_per_frame: 0,
            padding_sent: 0,
            media_epoch: None,
            next_sender_report: None,
            sender_reports: Vec::new(),
            received_rtp_seqs: HashMap::new(),
            rtx: false,
            rtx_ssrc: None,
            twcc_feedback: Vec::new(),
            layers: Vec::new(),
            received_layers: Vec::new(),
        };
        client.rtx = rtx;
        if publish {
            client.audio = Some(client.add_track(RtpCodecKind::Audio, &audio_codec, false));
            client.video = Some(if simulcast {
                client.add_simulcast_track(&video_codec)
            } else {
                client.add_track(RtpCodecKind::Video, &video_codec, rtx)
            });
        }
        client
    }

    /// Our video in three layers, rids `q`, `h`, `f` (as a browser answers the SFU's offer):
    /// the returned sender is the top layer, the others are in `layers`.
    fn add_simulcast_track(&mut self, codec: &RTCRtpCodecParameters) -> Sender {
        let rids = ["q", "h", "f"];
        let ssrcs: Vec<u32> = rids.iter().map(|_| rand::random::<u32>()).collect();
        let id = format!("{}-video", self.name);
        let encodings = rids
            .iter()
            .zip(&ssrcs)
            .map(|(rid, &ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: (*rid).to_string(),
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            })
            .collect();
        let track = MediaStreamTrack::new(
            self.name.clone(),
            id.clone(),
            id,
            RtpCodecKind::Video,
            encodings,
        );
        let id = self.pc.add_track(track).expect("add simulcast track");
        self.layers = vec![("q".into(), ssrcs[0], 0), ("h".into(), ssrcs[1], 0)];
        Sender {
            id,
            ssrc: ssrcs[2],
            payload_type: codec.payload_type,
            seq: 0,
            frame: 0,
            clock_rate: codec.rtp_codec.clock_rate,
            packets: 0,
            octets: 0,
        }
    }

    /// The mid and rid header extensions for a packet of our layer `rid` (ids as negotiated).
    fn layer_extensions(
        &mut self,
        sender: RTCRtpSenderId,
        rid: &str,
    ) -> Vec<rtc::rtp::header::Extension> {
        let Some(mut s) = self.pc.rtp_sender(sender) else {
            return Vec::new();
        };
        let exts = s.get_parameters().rtp_parameters.header_extensions.clone();
        let id_of = |uri: &str| exts.iter().find(|h| h.uri == uri).map(|h| h.id as u8);
        let transceivers: Vec<_> = self.pc.get_transceivers().collect();
        let mid = transceivers.into_iter().find_map(|t| {
            let t = self.pc.rtp_transceiver(t)?;
            if t.sender() == Some(sender) {
                t.mid().clone()
            } else {
                None
            }
        });
        let mut out = Vec::new();
        if let (Some(id), Some(mid)) = (id_of(rtc::sdp::extmap::SDES_MID_URI), mid) {
            out.push(rtc::rtp::header::Extension {
                id,
                payload: mid.into_bytes().into(),
            });
        }
        if let Some(id) = id_of(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI) {
            out.push(rtc::rtp::header::Extension {
                id,
                payload: rid.as_bytes().to_vec().into(),
            });
        }
        out
    }

    fn add_track(
        &mut self,
        kind: RtpCodecKind,
        codec: &RTCRtpCodecParameters,
        rtx: bool,
    ) -> Sender {
        let ssrc = rand::random::<u32>();
        let rtx = rtx.then(|| rtc::rtp_transceiver::rtp_sender::RTCRtpRtxParameters {
            ssrc: rand::random::<u32>(),
        });
        self.rtx_ssrc = self.rtx_ssrc.or(rtx.as_ref().map(|r| r.ssrc));
        let id = format!("{}-{kind}", self.name);
        let track = MediaStreamTrack::new(
            self.name.clone(),
            id.clone(),
            id,
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    rtx,
                    ..Default::default()
                },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            }],
        );
        let id = self.pc.add_track(track).expect("add track");
        Sender {
            id,
            ssrc,
            payload_type: codec.payload_type,
            seq: 0,
            frame: 0,
            clock_rate: codec.rtp_codec.clock_rate,
            packets: 0,
            octets: 0,
        }
    }

    /// Our own video SSRC (what the SFU's keyframe requests name).
    pub fn video_ssrc(&self) -> Option<u32> {
        self.video.as_ref().map(|s| s.ssrc)
    }

    fn write_media(&mut self, now: Instant, tick: u64) {
        if !self.connected || self.gone || self.paused {
            return;
        }
        let (first_tick, epoch) = *self.media_epoch.get_or_insert((tick, now));
        let mut kinds = vec![Kind::Audio];
        if tick.is_multiple_of(2) {
            kinds.push(Kind::Video);
        }
        let ticks = (tick - first_tick) as u32;
        for kind in kinds {
            let padding = if kind == Kind::Video {
                self.padding_per_frame
            } else {
                0
            };
            let sender = match kind {
                Kind::Audio => self.audio.as_mut(),
                Kind::Video => self.video.as_mut(),
            };
            let Some(sender) = sender else {
                continue;
            };
            // The media clock: MEDIA_TICK per tick since the first.
            let timestamp = ticks.wrapping_mul(sender.clock_rate / 50);
            let frame = sender.frame;
            sender.frame = sender.frame.wrapping_add(1);
            let keyframe = kind == Kind::Video
                && (frame == 0
                    || self.keyframe_wanted
                    || self
                        .keyframe_interval
                        .is_some_and(|n| frame.is_multiple_of(n)));
            if keyframe {
                self.keyframe_wanted = false;
                self.keyframes_sent.push(frame);
            }
            let mut body = payload(&self.name, self.generation, kind, frame, keyframe);
            if kind == Kind::Video && !self.layers.is_empty() {
                // Tag the top layer; the lower ones follow below with the same frame.
                tag_layer(&mut body, "f");
            }
            let mut packets = vec![rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: sender.payload_type,
                    sequence_number: 0,
                    timestamp,
                    ssrc: sender.ssrc,
                    marker: kind == Kind::Video,
                    ..Default::default()
                },
                payload: body.into(),
            }];
            for _ in 0..padding {
                packets.push(rtc::rtp::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        padding: true,
                        payload_type: sender.payload_type,
                        sequence_number: 0,
                        timestamp,
                        ssrc: sender.ssrc,
                        ..Default::default()
                    },
                    payload: Default::default(),
                });
            }
            let id = sender.id;
            if kind == Kind::Video && !self.layers.is_empty() {
                let top = self.layer_extensions(id, "f");
                packets[0].header.extension = !top.is_empty();
                packets[0].header.extension_profile = 0xBEDE;
                packets[0].header.extensions = top;
                let layers = std::mem::take(&mut self.layers);
                let mut next = Vec::with_capacity(layers.len());
                for (rid, ssrc, seq) in layers {
                    let mut body = payload(&self.name, self.generation, kind, frame, keyframe);
                    tag_layer(&mut body, &rid);
                    let extensions = self.layer_extensions(id, &rid);
                    let packet = rtc::rtp::Packet {
                        header: rtc::rtp::header::Header {
                            version: 2,
                            payload_type: 96,
                            sequence_number: seq,
                            // Each layer its own RTP clock, as browsers do.
                            timestamp: timestamp.wrapping_add(ssrc),
                            ssrc,
                            marker: true,
                            extension: !extensions.is_empty(),
                            extension_profile: 0xBEDE,
                            extensions,
                            ..Default::default()
                        },
                        payload: body.into(),
                    };
                    if let Some(mut s) = self.pc.rtp_sender(id) {
                        let _ = s.write_rtp(now, packet);
                    }
                    next.push((rid, ssrc, seq.wrapping_add(1)));
                }
                self.layers = next;
            }
            let Some(sender) = (match kind {
                Kind::Audio => self.audio.as_mut(),
                Kind::Video => self.video.as_mut(),
            }) else {
                continue;
            };
            for mut packet in packets {
                packet.header.sequence_number = sender.seq;
                sender.seq = sender.seq.wrapping_add(1);
                sender.packets += 1;
                sender.octets += packet.payload.len() as u32;
                let is_padding = packet.header.padding;
                if let Some(mut s) = self.pc.rtp_sender(id)
                    && s.write_rtp(now, packet).is_ok()
                    && is_padding
                {
                    self.padding_sent += 1;
                }
            }
        }
        // Sender reports, once a second: the same NTP↔media-clock mapping for audio and video.
        if self.next_sender_report.is_none_or(|t| t <= now) {
            self.next_sender_report = Some(now + Duration::from_secs(1));
            let since = now.saturating_duration_since(epoch);
            let ntp = ((NTP_EPOCH_SECS + since.as_secs()) << 32)
                | ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000);
            for sender in [self.audio.as_ref(), self.video.as_ref()]
                .into_iter()
                .flatten()
            {
                let sr = SenderReport {
                    ssrc: sender.ssrc,
                    ntp_time: ntp,
                    rtp_time: (since.as_secs_f64() * f64::from(sender.clock_rate)) as u32,
                    packet_count: sender.packets,
                    octet_count: sender.octets,
                    ..Default::default()
                };
                if let Some(mut s) = self.pc.rtp_sender(sender.id) {
                    let _ = s.write_rtcp(now, vec![Box::new(sr)]);
                }
            }
        }
    }

    /// The NTP time (seconds) each sender report received from `publisher` maps RTP time 0 of
    /// its `kind` stream to, if any arrived.
    pub fn sender_report_origins(&mut self, publisher: &str, kind: Kind) -> Vec<f64> {
        let ssrcs: Vec<(u32, RTCRtpReceiverId)> = self
            .tracks
            .values()
            .filter(|t| t.stream == publisher)
            .map(|t| (t.ssrc, t.receiver_id))
            .collect();
        let rate = if kind == Kind::Audio {
            48_000.0
        } else {
            90_000.0
        };
        let want = if kind == Kind::Audio {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let mut origins = Vec::new();
        for (ssrc, receiver_id) in ssrcs {
            let is_kind = self
                .pc
                .rtp_receiver(receiver_id)
                .is_some_and(|r| r.track().kind() == want);
            if !is_kind {
                continue;
            }
            for &(s, ntp, rtp) in &self.sender_reports {
                if s == ssrc {
                    let secs = (ntp >> 32) as f64 + (ntp & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
                    origins.push(secs - f64::from(rtp) / rate);
                }
            }
        }
        origins
    }

    /// Ask for a keyframe of every video track we receive.
    pub fn request_keyframes(&mut self, now: Instant) {
        let wanted: Vec<(RTCRtpReceiverId, u32)> = self
            .tracks
            .values()
            .filter(|t| t.packets > 0)
            .map(|t| (t.receiver_id, t.ssrc))
            .collect();
        for (receiver_id, ssrc) in wanted {
            let is_video = self
                .pc
                .rtp_receiver(receiver_id)
                .is_some_and(|r| r.track().kind() == RtpCodecKind::Video);
            if !is_video {
                continue;
            }
            if let Some(mut r) = self.pc.rtp_receiver(receiver_id) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                };
                let _ = r.write_rtcp(now, vec![Box::new(pli)]);
            }
        }
    }

    fn on_offer(&mut self, now: Instant, sdp: String) {
        self.offers += 1;
        self.last_offer = Some(sdp.clone());
        self.pending_offers
            .push_back((now + self.answer_delay, sdp));
    }

    /// Answer the offers that are due. Returns the answers for the SFU.
    fn due_answers(&mut self, now: Instant) -> Vec<String> {
        let mut answers = Vec::new();
        while self.pending_offers.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, sdp)) = self.pending_offers.pop_front() else {
                break;
            };
            self.offers_applied.push((now, sdp.clone()));
            let offer = RTCSessionDescription::offer(sdp).expect("the SFU's offer parses");
            self.pc
                .set_remote_description(now, offer)
                .expect("the SFU's offer applies");
            let answer = self.pc.create_answer(None).expect("an answer");
            self.pc
                .set_local_description(now, answer.clone())
                .expect("our answer applies");
            self.answers += 1;
            answers.push(answer.sdp);
        }
        answers
    }

    /// Drain the connection: datagrams out (returned), events and media in.
    fn drain(&mut self, now: Instant, out: &mut Vec<(SocketAddr, BytesMut)>) {
        while let Some(w) = self.pc.poll_write() {
            out.push((w.transport.peer_addr, w.message));
        }
        while let Some(e) = self.pc.poll_event() {
            match e {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected => self.connected = true,
                    RTCPeerConnectionState::Failed => self.failed = true,
                    _ => {}
                },
                RTCPeerConnectionEvent::OnSignalingStateChangeEvent(state) => {
                    self.signaling_state = state;
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    self.tracks.insert(
                        init.track_id.clone(),
                        RemoteTrack {
                            stream: init.stream_ids.first().cloned().unwrap_or_default(),
                            receiver_id: init.receiver_id,
                            ssrc: init.ssrc,
                            packets: 0,
                        },
                    );
                }
                _ => {}
            }
        }
        let video_ssrc = self.video_ssrc();
        while let Some(m) = self.pc.poll_read() {
            match m.message {
                RTCMessage::RtpPacket(track, packet) => {
                    let stream = self.tracks.get_mut(&track).map(|t| {
                        t.packets += 1;
                        t.stream.clone()
                    });
                    match parse_payload(&packet.payload) {
                        Some((from, generation, kind, seq)) if stream.as_deref() == Some(&from) => {
                            let key = (from, generation, kind);
                            if is_keyframe_payload(&packet.payload) {
                                self.received_keyframes
                                    .entry(key.clone())
                                    .or_default()
                                    .insert(packet.header.sequence_number);
                            }
                            self.received_rtp_seqs
                                .entry(key.clone())
                                .or_default()
                                .insert(packet.header.sequence_number);
                            if let Some(rid) = layer_tag(&packet.payload) {
                                self.received_layers.push((
                                    key.0.clone(),
                                    rid,
                                    packet.header.sequence_number,
                                    packet.header.timestamp,
                                ));
                            }
                            self.received_seqs
                                .entry(key.clone())
                                .or_default()
                                .insert(seq);
                            *self.received.entry(key).or_default() += 1;
                        }
                        _ => self.corrupt += 1,
                    }
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for p in &packets {
                        if let Some(fb) = p.as_any().downcast_ref::<TransportLayerCc>() {
                            self.twcc_feedback.push((now, fb.clone()));
                        }
                        if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                            self.sender_reports
                                .push((sr.ssrc, sr.ntp_time, sr.rtp_time));
                        }
                        if is_keyframe_request(p.as_ref())
                            && video_ssrc.is_some_and(|v| p.destination_ssrc().contains(&v))
                        {
                            self.keyframe_requests.push(now);
                            self.keyframe_wanted |= self.answers_keyframe_requests;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Intact packets received from `publisher`'s session `generation`, of `kind`.
    pub fn received_from(&self, publisher: &str, generation: u32, kind: Kind) -> u64 {
        self.received
            .get(&(publisher.to_string(), generation, kind))
            .copied()
            .unwrap_or(0)
    }

    /// The highest sequence number received from `publisher`'s session `generation`, of `kind`
    /// (the simulations never run long enough to wrap).
    pub fn last_seq_from(&self, publisher: &str, generation: u32, kind: Kind) -> Option<u16> {
        self.received_seqs
            .get(&(publisher.to_string(), generation, kind))
            .and_then(|s| s.last().copied())
    }

    /// Sequence numbers after `after` and up to the highest received that never arrived.
    pub fn missing_from(
        &self,
        publisher: &str,
        generation: u32,
        kind: Kind,
        after: u16,
    ) -> Vec<u16> {
        let Some(seqs) = self
            .received_seqs
            .get(&(publisher.to_string(), generation, kind))
        else {
            return Vec::new();
        };
        let last = seqs.last().copied().unwrap_or(after);
        (after.saturating_add(1)..=last)
            .filter(|s| !seqs.contains(s))
            .collect()
    }

    /// When this client applied the first offer declaring `ssrc` (an `a=ssrc:` line), if any.
    pub fn ssrc_declared_at(&self, ssrc: u32) -> Option<Instant> {
        let line = format!("a=ssrc:{ssrc} ");
        self.offers_applied
            .iter()
            .find(|(_, sdp)| sdp.contains(&line))
            .map(|(at, _)| *at)
    }

    /// Record an RTP datagram (RFC 7983: first byte 128–191; RFC 5761: RTCP packet types
    /// 192–223 in the second byte) by its SSRC.
    fn note_rtp(&mut self, at: Instant, data: &[u8]) {
        if data.len() < 12 || !(128..=191).contains(&data[0]) || (192..=223).contains(&data[1]) {
            return;
        }
        let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        self.rtp_arrivals.entry(ssrc).or_default().push(at);
    }

    /// Track ids the latest offer asks us to receive (`a=msid` of its sending sections).
    pub fn offered_tracks(&self) -> Vec<(String, String)> {
        let Some(sdp) = &self.last_offer else {
            return Vec::new();
        };
        sdp.split("\nm=")
            .skip(1)
            .filter(|m| m.contains("a=sendonly") || m.contains("a=sendrecv"))
            .filter_map(|m| {
                let msid = m.lines().find_map(|l| l.trim().strip_prefix("a=msid:"))?;
                let (stream, track) = msid.split_once(' ')?;
                Some((stream.to_string(), track.to_string()))
            })
            .collect()
    }
}

/// An event the SFU emitted, with its simulated time.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub at: Duration,
    pub participant: u64,
    pub event: SfuEvent,
}

/// A datagram in flight.
struct InFlight {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    data: BytesMut,
}

/// The SFU core and its clients on one synthetic clock.
pub struct Sim {
    /// The consultation every client joins.
    pub consultation: String,
    pub start: Instant,
    pub now: Instant,
    pub sfu: Core,
    pub clients: Vec<Client>,
    pub events: Vec<Emitted>,
    /// (simulated time, publisher key, offers then outstanding per client index) at each
    /// `TrackPublished`: lets a test prove a publication met an outstanding offer.
    pub publications: Vec<(Duration, u64, Vec<bool>)>,
    net: VecDeque<InFlight>,
    next_key: u64,
    next_port: u16,
    next_tick: Instant,
    tick: u64,
    sfu_timeout: Option<Instant>,
    /// Subscribers that ask for keyframes on every media tick (a PLI storm).
    pub pli_storm: Vec<usize>,
    /// Clients whose outgoing STUN the network drops (their media and DTLS still flow): a
    /// client that has stopped sending consent checks.
    pub drop_stun_from: Vec<usize>,
    /// Clients everything from which the network drops (a path that went silent one way).
    pub drop_all_from: Vec<usize>,
    /// Random loss on the SFU's SRTP/SRTCP to a client: (client index, percent).
    pub downlink_loss: Vec<(usize, u64)>,
    /// Random loss on a client's RTP to the SFU (not its RTCP): (client index, percent).
    pub uplink_loss: Vec<(usize, u64)>,
    /// Clients that first send hostile variants of each answer (`hostile_answers`), each of
    /// which the SFU must refuse, before the genuine one.
    pub hostile_first: Vec<usize>,
    /// Hostile answers the SFU refused.
    pub refused_answers: u64,
    /// Datagrams that loss dropped.
    pub lost: u64,
    /// The loss's random numbers (xorshift, fixed seed: the same losses every run).
    rng: u64,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Sim {
    pub fn new() -> Sim {
        Sim::in_consultation(CONSULTATION)
    }

    /// A simulation of consultation `id` (the SFU's quality metrics are process-wide, by
    /// consultation id: a test reading them uses an id of its own).
    pub fn in_consultation(id: &str) -> Sim {
        let start = Instant::now();
        Sim {
            consultation: id.to_string(),
            start,
            now: start,
            sfu: Core::new(sfu_addr()),
            clients: Vec::new(),
            events: Vec::new(),
            publications: Vec::new(),
            net: VecDeque::new(),
            next_key: 1,
            next_port: 5000,
            next_tick: start,
            tick: 0,
            sfu_timeout: None,
            pli_storm: Vec::new(),
            drop_stun_from: Vec::new(),
            drop_all_from: Vec::new(),
            downlink_loss: Vec::new(),
            uplink_loss: Vec::new(),
            hostile_first: Vec::new(),
            refused_answers: 0,
            lost: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A participant's client joins the consultation (publishing audio and video if
    /// `publish`). Returns its index in [`Sim::clients`].
    pub fn join(&mut self, name: &str, publish: bool) -> usize {
        self.join_with(name, publish, None)
    }

    /// [`Sim::join`], for a client that sends STUN consent checks on its selected pair only
    /// every `interval` (the `rtc` default is 2 s).
    pub fn join_with_consent_interval(
        &mut self,
        name: &str,
        publish: bool,
        interval: Duration,
    ) -> usize {
        self.join_with(name, publish, Some(interval))
    }

    /// [`Sim::join`], for a client that negotiates RTX for video.
    pub fn join_with_rtx(&mut self, name: &str, publish: bool) -> usize {
        self.join_with_options(name, publish, None, true, false)
    }

    /// [`Sim::join`], for a publisher whose video goes out in three simulcast layers.
    pub fn join_simulcast(&mut self, name: &str) -> usize {
        self.join_with_options(name, true, None, false, true)
    }

    fn join_with(&mut self, name: &str, publish: bool, consent: Option<Duration>) -> usize {
        self.join_with_options(name, publish, consent, false, false)
    }

    fn join_with_options(
        &mut self,
        name: &str,
        publish: bool,
        consent: Option<Duration>,
        rtx: bool,
        simulcast: bool,
    ) -> usize {
        let key = self.next_key;
        self.next_key += 1;
        let addr = SocketAddr::from(([198, 51, 100, 1], self.next_port));
        self.next_port += 1;
        let mut client = Client::new(self.now, name, key, addr, publish, consent, rtx, simulcast);
        // A rejoin is a new session of the same participant.
        client.generation = self
            .clients
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.generation + 1)
            .max()
            .unwrap_or(0);
        self.clients.push(client);
        self.sfu
            .add_participant(self.now, key, &self.consultation, name)
            .expect("the SFU accepts a participant");
        self.clients.len() - 1
    }

    /// The participant's session ends (its client goes away, the SFU removes it).
    pub fn leave(&mut self, index: usize) {
        let key = self.clients[index].key;
        self.clients[index].gone = true;
        self.sfu.remove_participant(self.now, key);
    }

    fn client_by_addr(&mut self, addr: SocketAddr) -> Option<&mut Client> {
        self.clients.iter_mut().find(|c| c.addr == addr && !c.gone)
    }

    /// Everything due at `now`, until nothing more is.
    fn settle(&mut self) {
        let sfu = sfu_addr();
        let mut out = Vec::new();
        for _round in 0..10_000 {
            let mut progress = false;
            // The SFU's output.
            loop {
                match self.sfu.poll_output() {
                    Output::Transmit { to, data } => {
                        if self.loses(to, &data) {
                            self.lost += 1;
                            continue;
                        }
                        self.net.push_back(InFlight {
                            at: self.now + LATENCY,
                            from: sfu,
                            to,
                            data,
                        })
                    }
                    Output::Event { participant, event } => {
                        self.on_sfu_event(participant, event);
                        progress = true;
                    }
                    Output::Timeout(t) => {
                        self.sfu_timeout = t;
                        break;
                    }
                }
            }
            // The clients' output, and their answers that are due.
            for i in 0..self.clients.len() {
                let now = self.now;
                let c = &mut self.clients[i];
                if c.gone {
                    continue;
                }
                if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = c.pc.handle_timeout(now);
                }
                c.drain(now, &mut out);
                let from = c.addr;
                let drop_stun = self.drop_stun_from.contains(&i);
                let drop_all = self.drop_all_from.contains(&i);
                let uplink_loss = self.uplink_loss.iter().find(|(c, _)| *c == i).map(|l| l.1);
                for (to, data) in out.drain(..) {
                    if drop_all || (drop_stun && is_stun(&data)) {
                        continue;
                    }
                    if let Some(percent) = uplink_loss
                        && is_rtp(&data)
                        && next_random(&mut self.rng) % 100 < percent
                    {
                        self.lost += 1;
                        continue;
                    }
                    self.net.push_back(InFlight {
                        at: now + LATENCY,
                        from,
                        to,
                        data,
                    });
                }
                let key = c.key;
                let hostile = self.hostile_first.contains(&i);
                for answer in c.due_answers(now) {
                    if hostile {
                        for bad in hostile_answers(&answer) {
                            assert!(
                                self.sfu.apply_answer(now, key, bad.clone()).is_err(),
                                "the SFU refuses a hostile answer: {bad}"
                            );
                            self.refused_answers += 1;
                        }
                    }
                    self.sfu
                        .apply_answer(now, key, answer)
                        .expect("the SFU accepts the answer to its offer");
                    progress = true;
                }
            }
            // Datagrams that have arrived.
            while self.net.front().is_some_and(|d| d.at <= self.now) {
                let Some(d) = self.net.pop_front() else {
                    break;
                };
                progress = true;
                if d.to == sfu {
                    if let Some(key) = self
                        .clients
                        .iter()
                        .find(|c| c.addr == d.from && !c.gone)
                        .map(|c| c.key)
                    {
                        let input = Input::Datagram {
                            key,
                            from: d.from,
                            data: d.data,
                        };
                        let _ = self.sfu.handle_input(d.at, input);
                    }
                } else if let Some(c) = self.client_by_addr(d.to) {
                    c.note_rtp(d.at, &d.data);
                    let msg = TaggedBytesMut {
                        now: d.at,
                        transport: TransportContext {
                            local_addr: d.to,
                            peer_addr: d.from,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: d.data,
                    };
                    let _ = c.pc.handle_read(msg);
                }
            }
            if self.sfu_timeout.is_some_and(|t| t <= self.now) {
                let _ = self.sfu.handle_input(self.now, Input::Timeout);
                self.sfu_timeout = None;
                progress = true;
            }
            if !progress {
                return;
            }
        }
        panic!("the simulation does not settle at {:?}", self.elapsed());
    }

    /// Whether the network loses this datagram from the SFU (see `downlink_loss`).
    fn loses(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if !data.first().is_some_and(|b| (128..=191).contains(b)) {
            return false;
        }
        let Some(&(_, percent)) = self
            .downlink_loss
            .iter()
            .find(|(i, _)| self.clients.get(*i).is_some_and(|c| c.addr == to))
        else {
            return false;
        };
        next_random(&mut self.rng) % 100 < percent
    }

    fn on_sfu_event(&mut self, participant: u64, event: SfuEvent) {
        let at = self.elapsed();
        if let SfuEvent::TrackPublished { .. } = event {
            let outstanding = self
                .clients
                .iter()
                .map(|c| !c.gone && c.offers > c.answers)
                .collect();
            self.publications.push((at, participant, outstanding));
        }
        let now = self.now;
        if let SfuEvent::Offer(sdp) = &event
            && let Some(c) = self
                .clients
                .iter_mut()
                .find(|c| c.key == participant && !c.gone)
        {
            c.on_offer(now, sdp.clone());
        }
        self.events.push(Emitted {
            at,
            participant,
            event,
        });
    }

    /// The next instant anything is due.
    fn next_due(&mut self) -> Instant {
        let mut next = self.next_tick;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t
                && t < next
            {
                next = t;
            }
        };
        consider(self.net.front().map(|d| d.at));
        consider(self.sfu_timeout);
        for c in self.clients.iter_mut().filter(|c| !c.gone) {
            consider(c.pc.poll_timeout());
            consider(c.pending_offers.front().map(|(t, _)| *t));
        }
        next
    }

    /// Advance the simulation by `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until_at(end, |_| false);
    }

    /// Advance until `done` holds (checked after each step) or `limit` of simulated time has
    /// passed. Returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        self.run_until_at(end, done)
    }

    fn run_until_at(&mut self, end: Instant, done: impl Fn(&Sim) -> bool) -> bool {
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            // Never stand still (a stack may report a timer at `now` once more), never jump
            // past the end.
            let next = self
                .next_due()
                .max(self.now + Duration::from_micros(100))
                .min(end);
            self.now = next;
            if self.now >= self.next_tick {
                self.tick += 1;
                self.next_tick += MEDIA_TICK;
                let (now, tick) = (self.now, self.tick);
                for i in 0..self.clients.len() {
                    self.clients[i].write_media(now, tick);
                    if self.pli_storm.contains(&i) && !self.clients[i].gone {
                        self.clients[i].request_keyframes(now);
                    }
                }
            }
        }
    }

    /// Whether every client still in the consultation is connected, and in `stable` with every
    /// offer answered.
    pub fn all_settled(&self) -> bool {
        self.clients.iter().filter(|c| !c.gone).all(|c| {
            c.connected
                && c.offers == c.answers
                && c.pending_offers.is_empty()
                && c.signaling_state == RTCSignalingState::Stable
        })
    }
}

/// Answers that can never work, made from a genuine one: sections missing, a fingerprint with
/// an unknown hash or a digest that is not one, a DTLS role an answer may not take, no ICE
/// password, garbage.
pub fn hostile_answers(genuine: &str) -> Vec<String> {
    let first_section_only = match genuine.match_indices("\r\nm=").nth(1) {
        Some((at, _)) => format!("{}\r\n", &genuine[..at]),
        None => String::new(),
    };
    let mut out = vec![first_section_only];
    let rewrite = |f: &dyn Fn(&str) -> String| -> String {
        genuine
            .split("\r\n")
            .map(|line| {
                if line.is_empty() {
                    String::new()
                } else {
                    f(line)
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    out.push(rewrite(&|l| match l.strip_prefix("a=fingerprint:") {
        Some(v) => format!(
            "a=fingerprint:md5 {}",
            v.split_once(' ').map_or("", |p| p.1)
        ),
        None => l.to_owned(),
    }));
    out.push(rewrite(&|l| {
        if l.starts_with("a=fingerprint:") {
            "a=fingerprint:sha-256 zz:zz".to_owned()
        } else {
            l.to_owned()
        }
    }));
    out.push(rewrite(&|l| {
        if l.starts_with("a=setup:") {
            "a=setup:actpass".to_owned()
        } else {
            l.to_owned()
        }
    }));
    out.push(rewrite(&|l| {
        if l.starts_with("a=ice-pwd:") {
            "a=x-removed".to_owned()
        } else {
            l.to_owned()
        }
    }));
    out.push("\u{feff}v=0\r\n<script>".to_owned());
    out
}
