//! A synthetic media peer: a real webrtc-rs `PeerConnection` that answers the server's offers,
//! publishes an Opus and a VP8 track with verifiable payloads, and counts what it receives.
//!
//! Payload format (so a receiver can check a packet arrived intact and who sent it):
//! `"TC" kind(0 audio, 1 video) tag(u16) seq(u16) filler...`, where `filler[i] = tag + seq + i`.

use crate::measure::{MediaKind, Receptions, SendLog, TrackReport, TrackStats};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teleconsult_sfu::keyframe::{DeliverKeyframeRequests, is_keyframe_request};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionState,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const AUDIO: u8 = 0;
const VIDEO: u8 = 1;
const PAYLOAD_LEN: usize = 160;

/// Build a verifiable payload.
pub fn payload(kind: u8, tag: u16, seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_LEN);
    p.extend_from_slice(b"TC");
    p.push(kind);
    p.extend_from_slice(&tag.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    let base = tag.wrapping_add(seq) as u8;
    for i in 0..(PAYLOAD_LEN - p.len()) {
        p.push(base.wrapping_add(i as u8));
    }
    p
}

/// Parse and check a payload: `Some((kind, tag, seq))` if intact.
pub fn check_payload(p: &[u8]) -> Option<(u8, u16, u16)> {
    if p.len() != PAYLOAD_LEN || &p[..2] != b"TC" {
        return None;
    }
    let kind = p[2];
    let tag = u16::from_be_bytes([p[3], p[4]]);
    let seq = u16::from_be_bytes([p[5], p[6]]);
    (p == payload(kind, tag, seq).as_slice()).then_some((kind, tag, seq))
}

/// What one peer received from one publisher (stream id = publisher's participant id).
#[derive(Clone, Debug, Default)]
pub struct Received {
    pub audio_packets: u64,
    pub video_packets: u64,
    pub corrupt: u64,
    /// Publisher tags seen in payloads.
    pub tags: HashSet<u16>,
    audio_seqs: HashSet<u16>,
    video_seqs: HashSet<u16>,
}

impl Received {
    pub fn distinct_audio(&self) -> usize {
        self.audio_seqs.len()
    }
    pub fn distinct_video(&self) -> usize {
        self.video_seqs.len()
    }
}

#[derive(Default)]
pub struct PeerStats {
    pub received: Mutex<HashMap<String, Received>>,
    pub keyframe_requests: AtomicU64,
    pub connected: AtomicBool,
    pub failed: AtomicBool,
    pub sent_audio: AtomicU64,
    pub sent_video: AtomicU64,
}

struct Handler {
    stats: Arc<PeerStats>,
    /// Observe what arrives (bytes, keyframe sizes, sequence gaps) without a send log.
    observe: Option<Arc<Observer>>,
    /// Real-media mode: measure received tracks against the send log.
    measure: Option<(Arc<SendLog>, Receptions)>,
}

/// How a [`SyntheticPeer`] is built.
#[derive(Clone)]
pub struct PeerOptions {
    /// Attach an audio and a video track to publish (a subscriber-only peer attaches none).
    pub publish: bool,
    /// Measure received tracks (packets, loss, jitter, bitrate, latency against this send log)
    /// instead of checking the synthetic payloads of [`SyntheticPeer::start_publishing`].
    pub measure: Option<Arc<SendLog>>,
    /// Put what this peer receives through an impaired link (`crate::netem`).
    pub link: Option<Arc<crate::netem::Link>>,
    /// Publish video in three simulcast layers (rids `q`, `h`, `f`).
    pub simulcast: bool,
    /// Observe received tracks ([`Observer`]) instead of measuring or checking them.
    pub observe: Option<Arc<Observer>>,
    /// Negotiate RTX for video (what arrives on it is unwrapped by the stack).
    pub rtx: bool,
}

/// What one received track brought so far (the impaired-link scenario reads it each second).
#[derive(Debug, Default)]
pub struct Seen {
    pub video: bool,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Highest extended sequence number seen, and the first: their difference + 1 − packets is
    /// what never arrived.
    first_last: Mutex<Option<(u64, u64)>>,
    /// Width and height of the last VP8 keyframe: which simulcast layer is arriving.
    pub keyframe_size: Mutex<Option<(u16, u16)>>,
    pub keyframes: AtomicU64,
}

impl Seen {
    fn on_packet(&self, packet: &rtc::rtp::Packet) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(packet.payload.len() as u64 + 12, Ordering::Relaxed);
        {
            let mut fl = self.first_last.lock().unwrap();
            let seq = packet.header.sequence_number;
            *fl = Some(match *fl {
                None => (u64::from(seq), u64::from(seq)),
                Some((first, last)) => {
                    let ext = teleconsult_sfu::forward::extend_seq(last, seq);
                    (first, last.max(ext))
                }
            });
        }
        if self.video
            && let Some(size) = teleconsult_sfu::simulcast::vp8_keyframe_size(&packet.payload)
        {
            *self.keyframe_size.lock().unwrap() = Some(size);
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Packets that never arrived (by sequence number; a layer switch keeps numbering
    /// continuous at the SFU, so it is no gap).
    pub fn lost(&self) -> u64 {
        let received = self.packets.load(Ordering::Relaxed);
        self.first_last.lock().unwrap().map_or(0, |(first, last)| {
            (last - first + 1).saturating_sub(received)
        })
    }
}

/// Every track a peer receives, by (stream id, video).
#[derive(Debug, Default)]
pub struct Observer {
    tracks: Mutex<Vec<(String, Arc<Seen>)>>,
}

impl Observer {
    fn track(&self, stream: &str, video: bool) -> Arc<Seen> {
        let seen = Arc::new(Seen {
            video,
            ..Seen::default()
        });
        self.tracks
            .lock()
            .unwrap()
            .push((stream.to_string(), seen.clone()));
        seen
    }

    /// (stream id, what arrived) for every track so far.
    pub fn tracks(&self) -> Vec<(String, Arc<Seen>)> {
        self.tracks.lock().unwrap().clone()
    }
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            publish: true,
            measure: None,
            link: None,
            simulcast: false,
            observe: None,
            rtx: false,
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => self.stats.connected.store(true, Ordering::SeqCst),
            RTCPeerConnectionState::Failed => self.stats.failed.store(true, Ordering::SeqCst),
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(observer) = &self.observe {
            let observer = observer.clone();
            tokio::spawn(async move {
                let kind = track.kind().await;
                let stream = track.stream_id().await;
                let seen = observer.track(&stream, kind == RtpCodecKind::Video);
                while let Some(evt) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(packet) = evt {
                        seen.on_packet(&packet);
                    }
                }
            });
            return;
        }
        if let Some((log, receptions)) = &self.measure {
            let (log, receptions) = (log.clone(), receptions.clone());
            tokio::spawn(async move {
                let stream = track.stream_id().await;
                let kind = match track.kind().await {
                    RtpCodecKind::Audio => MediaKind::Audio,
                    _ => MediaKind::Video,
                };
                let stats = Arc::new(Mutex::new(TrackStats::new(String::new(), stream, kind)));
                receptions.lock().unwrap().push(stats.clone());
                while let Some(evt) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(packet) = evt {
                        let at = std::time::Instant::now();
                        let at_us = log.us_of(at);
                        let size = packet.payload.len() + 12;
                        stats.lock().unwrap().on_packet(
                            &log,
                            packet.header.sequence_number,
                            packet.header.timestamp,
                            size,
                            crate::measure::fingerprint(&packet.payload),
                            at,
                            at_us,
                        );
                    }
                }
            });
            return;
        }
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let stream = track.stream_id().await;
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = evt {
                    let mut all = stats.received.lock().unwrap();
                    let r = all.entry(stream.clone()).or_default();
                    match check_payload(&packet.payload) {
                        Some((kind, tag, seq)) => {
                            r.tags.insert(tag);
                            if kind == AUDIO {
                                r.audio_packets += 1;
                                r.audio_seqs.insert(seq);
                            } else {
                                r.video_packets += 1;
                                r.video_seqs.insert(seq);
                            }
                        }
                        None => r.corrupt += 1,
                    }
                }
            }
        });
    }
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
            rtcp_feedback: vec![],
        },
        payload_type: 96,
    };
    (audio, video)
}

fn local_track(kind: RtpCodecKind, codec: &RTCRtpCodec, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let name = format!("synthetic-{kind}");
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "synthetic".to_string(),
        name.clone(),
        name,
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.clone(),
            ..Default::default()
        }],
    )))
}

/// The rids of a simulcast publisher's layers, lowest first (as the SFU offers them).
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// Our video as three simulcast encodings, each its own SSRC and rid.
fn simulcast_track(codec: &RTCRtpCodec, layers: &[(String, u32)]) -> Arc<TrackLocalStaticRTP> {
    let name = "synthetic-video".to_string();
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "synthetic".to_string(),
        name.clone(),
        name,
        RtpCodecKind::Video,
        layers
            .iter()
            .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: rid.clone(),
                    ssrc: Some(*ssrc),
                    ..Default::default()
                },
                codec: codec.clone(),
                ..Default::default()
            })
            .collect(),
    )))
}

/// A synthetic participant's media side.
pub struct SyntheticPeer {
    pc: Box<dyn PeerConnection>,
    pub stats: Arc<PeerStats>,
    pub(crate) audio: Arc<TrackLocalStaticRTP>,
    pub(crate) video: Arc<TrackLocalStaticRTP>,
    pub(crate) audio_ssrc: u32,
    pub(crate) video_ssrc: u32,
    /// Simulcast publishers: (rid, SSRC) of each layer, lowest first (empty otherwise).
    pub(crate) video_layers: Vec<(String, u32)>,
    receptions: Receptions,
}

impl SyntheticPeer {
    /// A publishing peer with synthetic, verifiable payloads.
    pub async fn new() -> Result<SyntheticPeer, BoxError> {
        Self::with_options(PeerOptions::default()).await
    }

    pub async fn with_options(options: PeerOptions) -> Result<SyntheticPeer, BoxError> {
        let (audio_codec, video_codec) = codecs();
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(audio_codec.clone(), RtpCodecKind::Audio)?;
        media_engine.register_codec(video_codec.clone(), RtpCodecKind::Video)?;
        if options.rtx {
            // RFC 4588 for VP8, as browsers negotiate it: the SFU then repairs losses and sends
            // its bandwidth probes on an RTX stream of ours.
            media_engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: "video/rtx".to_owned(),
                        clock_rate: 90000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={}", video_codec.payload_type),
                        rtcp_feedback: vec![],
                    },
                    payload_type: video_codec.payload_type + 1,
                },
                RtpCodecKind::Video,
            )?;
        }
        let registry = Registry::new().with(
            Slot::from(14_000),
            DeliverKeyframeRequests::keyframes_only(),
        );
        let registry = register_default_interceptors(registry, &mut media_engine)?;
        let stats = Arc::new(PeerStats::default());
        let receptions = Receptions::default();
        let mut builder = PeerConnectionBuilder::new();
        if let Some(link) = &options.link {
            let runtime = crate::netem::ImpairedRuntime::new(link.clone())
                .ok_or("no async runtime for the impaired link")?;
            builder = builder.with_runtime(runtime);
        }
        let pc = builder
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                stats: stats.clone(),
                observe: options.observe.clone(),
                measure: options.measure.map(|log| (log, receptions.clone())),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await?;
        let audio_ssrc = rand::random::<u32>();
        let video_ssrc = rand::random::<u32>();
        let audio = local_track(RtpCodecKind::Audio, &audio_codec.rtp_codec, audio_ssrc);
        let video_layers: Vec<(String, u32)> = if options.simulcast {
            SIMULCAST_RIDS
                .iter()
                .map(|rid| (rid.to_string(), rand::random::<u32>()))
                .collect()
        } else {
            Vec::new()
        };
        let video = if options.simulcast {
            simulcast_track(&video_codec.rtp_codec, &video_layers)
        } else {
            local_track(RtpCodecKind::Video, &video_codec.rtp_codec, video_ssrc)
        };
        if options.publish {
            pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await?;
            pc.add_track(video.clone() as Arc<dyn TrackLocal>).await?;
        }
        // Count keyframe requests the SFU sends us about our video.
        {
            let video = video.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                while let Some(evt) = video.poll().await {
                    let TrackLocalEvent::OnRtcpPacket(packets) = evt else {
                        continue;
                    };
                    let n = packets
                        .iter()
                        .filter(|p| is_keyframe_request(p.as_ref()))
                        .count();
                    stats
                        .keyframe_requests
                        .fetch_add(n as u64, Ordering::SeqCst);
                }
            });
        }
        Ok(SyntheticPeer {
            pc: Box::new(pc),
            stats,
            audio,
            video,
            audio_ssrc,
            video_ssrc,
            video_layers,
            receptions,
        })
    }

    /// The `a=mid` of our simulcast video section in the answer we gave (the mid header
    /// extension each layer's packets carry), once we have answered.
    pub async fn simulcast_mid(&self) -> Option<String> {
        let sdp = self.pc.local_description().await?.sdp;
        sdp.split("\nm=")
            .skip(1)
            .find(|section| section.starts_with("video") && section.contains("a=simulcast:send"))
            .and_then(|section| {
                section
                    .lines()
                    .find_map(|l| l.trim_end().strip_prefix("a=mid:").map(str::to_string))
            })
    }

    /// What this peer measured on each received track so far (real-media mode), labelled with
    /// `subscriber` (this participant's stream id).
    pub fn track_reports(&self, subscriber: &str) -> Vec<TrackReport> {
        let all = self.receptions.lock().unwrap().clone();
        all.iter()
            .map(|t| {
                let mut r = t.lock().unwrap().report();
                r.subscriber = subscriber.to_string();
                r
            })
            .collect()
    }

    /// Apply the server's offer; returns our answer SDP.
    pub async fn answer(&self, offer_sdp: String) -> Result<String, BoxError> {
        let offer = RTCSessionDescription::offer(offer_sdp)?;
        self.pc.set_remote_description(offer).await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer.clone()).await?;
        Ok(answer.sdp)
    }

    /// Offer to publish our audio and video (for servers where the client offers, such as Janus's
    /// VideoRoom). Returns the offer SDP with our host candidates in it (no trickle needed).
    pub async fn offer(&self) -> Result<String, BoxError> {
        let offer = self.pc.create_offer(None).await?;
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await?;
        // Host candidates come from sockets already bound: they appear in the local description
        // almost at once.
        for _ in 0..100 {
            if let Some(local) = self.pc.local_description().await
                && local.sdp.contains("a=candidate:")
            {
                return Ok(local.sdp);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(sdp)
    }

    /// Apply the server's answer to our [`SyntheticPeer::offer`].
    pub async fn apply_answer(&self, answer_sdp: String) -> Result<(), BoxError> {
        let answer = RTCSessionDescription::answer(answer_sdp)?;
        self.pc.set_remote_description(answer).await?;
        Ok(())
    }

    /// Publish audio (every 20 ms) and video (every 33 ms) packets tagged with `tag` until the
    /// returned handle is aborted.
    pub fn start_publishing(&self, tag: u16) -> tokio::task::JoinHandle<()> {
        let (audio, video) = (self.audio.clone(), self.video.clone());
        let (audio_ssrc, video_ssrc) = (self.audio_ssrc, self.video_ssrc);
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n: u32 = 0;
            let (mut aseq, mut vseq) = (0u16, 0u16);
            loop {
                tick.tick().await;
                n += 1;
                if n.is_multiple_of(2) {
                    let p = packet(
                        111,
                        audio_ssrc,
                        aseq,
                        aseq as u32 * 960,
                        payload(AUDIO, tag, aseq),
                    );
                    if audio.write_rtp(p).await.is_ok() {
                        stats.sent_audio.fetch_add(1, Ordering::Relaxed);
                    }
                    aseq = aseq.wrapping_add(1);
                }
                if n.is_multiple_of(3) {
                    let p = packet(
                        96,
                        video_ssrc,
                        vseq,
                        vseq as u32 * 3000,
                        payload(VIDEO, tag, vseq),
                    );
                    if video.write_rtp(p).await.is_ok() {
                        stats.sent_video.fetch_add(1, Ordering::Relaxed);
                    }
                    vseq = vseq.wrapping_add(1);
                }
            }
        })
    }

    pub fn received(&self) -> HashMap<String, Received> {
        self.stats.received.lock().unwrap().clone()
    }

    pub fn keyframe_requests(&self) -> u64 {
        self.stats.keyframe_requests.load(Ordering::SeqCst)
    }

    pub fn is_connected(&self) -> bool {
        self.stats.connected.load(Ordering::SeqCst)
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

fn packet(pt: u8, ssrc: u32, seq: u16, ts: u32, payload: Vec<u8>) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            marker: true,
            ..Default::default()
        },
        payload: payload.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_detect_corruption() {
        let p = payload(VIDEO, 7, 65535);
        assert_eq!(check_payload(&p), Some((VIDEO, 7, 65535)));
        let mut q = p.clone();
        q[100] ^= 1;
        assert_eq!(check_payload(&q), None);
        assert_eq!(check_payload(&p[..50]), None);
    }
}
