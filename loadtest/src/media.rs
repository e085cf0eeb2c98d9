//! Real media for synthetic publishers: Opus audio encoded with libopus (the `opus` crate) from a
//! generated voice-like signal, and VP8 video from a clip in `loadtest/assets/` (see
//! `assets/make-clip.sh`), packetised into RTP (RFC 7741 payload descriptor).
//!
//! Audio is encoded once per run into a few loops (different voices) that publishers replay, so
//! the generator spends its CPU on sending, not encoding. A keyframe request (PLI/FIR) from the
//! SFU makes the video jump to the clip's next keyframe at once.

use crate::measure::{MediaKind, SendLog, TrackLog};
use crate::peer::SyntheticPeer;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use webrtc::media_stream::track_local::TrackLocal;

/// Largest RTP payload we produce (fits a 1500-byte MTU with SRTP and headers).
pub const MAX_PAYLOAD: usize = 1200;
/// Opus payload type (as the synthetic peers negotiate it).
const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;
/// Audio frames: 20 ms at 48 kHz.
const AUDIO_FRAME: usize = 960;
/// Length of each encoded audio loop.
const AUDIO_LOOP_SECS: usize = 6;
/// How many different voices the publishers cycle through.
const VOICES: usize = 4;

/// Why media could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("bad IVF clip: {0}")]
    Ivf(&'static str),
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// Which video clip publishers send.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
pub enum VideoVariant {
    /// 160x120, ~150 kbit/s (the lowest simulcast layer).
    Tiny,
    /// 320x240, ~500 kbit/s.
    Low,
    /// 640x360, ~1.2 Mbit/s.
    High,
}

impl VideoVariant {
    fn ivf(self) -> &'static [u8] {
        match self {
            VideoVariant::Tiny => include_bytes!("../assets/video-150k.ivf"),
            VideoVariant::Low => include_bytes!("../assets/video-500k.ivf"),
            VideoVariant::High => include_bytes!("../assets/video-1200k.ivf"),
        }
    }
}

/// A VP8 clip: frames in decoding order, which of them are keyframes, and the frame rate.
pub struct Clip {
    pub frames: Vec<Bytes>,
    pub keyframes: Vec<bool>,
    pub fps: f64,
}

impl Clip {
    pub fn load(variant: VideoVariant) -> Result<Clip, MediaError> {
        Clip::parse_ivf(variant.ivf())
    }

    /// Parse an IVF file (32-byte header, then 12-byte frame headers: size, pts).
    pub fn parse_ivf(data: &[u8]) -> Result<Clip, MediaError> {
        if data.len() < 32 || &data[..4] != b"DKIF" {
            return Err(MediaError::Ivf("no DKIF signature"));
        }
        if &data[8..12] != b"VP80" {
            return Err(MediaError::Ivf("not VP8"));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let header_len = u16::from_le_bytes([data[6], data[7]]) as usize;
        let (rate, scale) = (u32_at(16), u32_at(20));
        if rate == 0 || scale == 0 {
            return Err(MediaError::Ivf("zero time base"));
        }
        let mut frames = Vec::new();
        let mut keyframes = Vec::new();
        let mut at = header_len.max(32);
        while at + 12 <= data.len() {
            let size = u32_at(at) as usize;
            at += 12;
            if size == 0 || at + size > data.len() {
                return Err(MediaError::Ivf("truncated frame"));
            }
            let frame = &data[at..at + size];
            // VP8 frame tag: bit 0 of the first byte is 0 for a keyframe (RFC 6386 §9.1).
            keyframes.push(frame[0] & 1 == 0);
            frames.push(Bytes::copy_from_slice(frame));
            at += size;
        }
        if frames.is_empty() || !keyframes[0] {
            return Err(MediaError::Ivf("clip must start with a keyframe"));
        }
        Ok(Clip {
            frames,
            keyframes,
            fps: rate as f64 / scale as f64,
        })
    }

    /// Index of the first keyframe after `i` (wrapping to the start of the clip).
    pub fn next_keyframe(&self, i: usize) -> usize {
        (i + 1..self.frames.len())
            .find(|&j| self.keyframes[j])
            .unwrap_or(0)
    }
}

/// Split a VP8 frame into RTP payloads, each with a one-byte VP8 payload descriptor
/// (RFC 7741 §4.2: X=0, N=0, S=1 on the first packet of the frame, partition index 0).
pub fn packetize_vp8(frame: &[u8], max_payload: usize) -> Vec<Bytes> {
    let chunk = max_payload - 1;
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut p = Vec::with_capacity(part.len() + 1);
            p.push(if i == 0 { 0x10 } else { 0x00 });
            p.extend_from_slice(part);
            Bytes::from(p)
        })
        .collect()
}

/// A voice-like test signal: a harmonic-rich glottal tone whose pitch glides between ~100 and
/// ~220 Hz, shaped into ~4 syllables a second with pauses, plus a little breath noise.
pub fn voice(seed: u64, samples: usize) -> Vec<i16> {
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut noise = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 33) as f64 / (1u64 << 31) as f64) - 1.0
    };
    let base = 110.0 + (seed % 5) as f64 * 20.0;
    let mut phase = 0.0f64;
    (0..samples)
        .map(|n| {
            let t = n as f64 / 48_000.0;
            let f0 = base * (1.0 + 0.35 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
            phase += f0 / 48_000.0;
            let syllable = (2.0 * std::f64::consts::PI * 4.0 * t).sin().max(0.0);
            let phrase = if (t % 3.0) < 2.3 { 1.0 } else { 0.0 };
            let mut v = 0.0;
            for h in 1..=12 {
                v += (2.0 * std::f64::consts::PI * phase * h as f64).sin() / h as f64;
            }
            let s = 0.25 * v * syllable * phrase + 0.01 * noise();
            (s.clamp(-1.0, 1.0) * 32_000.0) as i16
        })
        .collect()
}

/// Opus packets of one voice, 20 ms each, looped by publishers.
pub struct AudioLoop {
    pub packets: Vec<Bytes>,
}

impl AudioLoop {
    /// Encode `voice(seed)` with libopus: 48 kHz mono, VoIP application, ~32 kbit/s.
    pub fn encode(seed: u64) -> Result<AudioLoop, MediaError> {
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
        enc.set_bitrate(opus::Bitrate::Bits(32_000))?;
        enc.set_inband_fec(true)?;
        let pcm = voice(seed, AUDIO_LOOP_SECS * 48_000);
        let mut out = [0u8; 1500];
        let mut packets = Vec::with_capacity(pcm.len() / AUDIO_FRAME);
        for frame in pcm.chunks_exact(AUDIO_FRAME) {
            let n = enc.encode(frame, &mut out)?;
            packets.push(Bytes::copy_from_slice(&out[..n]));
        }
        Ok(AudioLoop { packets })
    }
}

/// Everything publishers send, prepared once per run.
pub struct MediaSource {
    pub clip: Clip,
    pub voices: Vec<AudioLoop>,
}

impl MediaSource {
    pub fn new(variant: VideoVariant) -> Result<MediaSource, MediaError> {
        Ok(MediaSource {
            clip: Clip::load(variant)?,
            voices: (0..VOICES as u64)
                .map(AudioLoop::encode)
                .collect::<Result<_, _>>()?,
        })
    }
}

fn rtp(pt: u8, ssrc: u32, seq: u16, ts: u32, marker: bool, payload: Bytes) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            marker,
            ..Default::default()
        },
        payload,
    }
}

/// Handles of a publisher's media tasks (aborted on drop).
pub struct Publishing {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Publishing {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The publisher's Opus: one voice of `source`, 20 ms packets, logged under `stream_id`.
fn audio_task(
    peer: &SyntheticPeer,
    source: Arc<MediaSource>,
    log: Arc<SendLog>,
    stream_id: &str,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    let audio_log = log.track(stream_id, MediaKind::Audio);
    let (track, ssrc, stats) = (peer.audio.clone(), peer.audio_ssrc, peer.stats.clone());
    tokio::spawn(async move {
        let voice = &source.voices[n % source.voices.len()];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
        let mut i = n * 7;
        loop {
            tick.tick().await;
            let payload = voice.packets[i % voice.packets.len()].clone();
            i += 1;
            if send(
                &*track,
                &log,
                &audio_log,
                rtp(OPUS_PT, ssrc, seq, ts, false, payload),
            )
            .await
            {
                stats.sent_audio.fetch_add(1, Ordering::Relaxed);
            }
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(AUDIO_FRAME as u32);
        }
    })
}

/// Start sending `source`'s media on `peer`'s tracks, recording each packet's send time in
/// `log` under `stream_id` (the stream id subscribers will see). `n` picks the voice and the
/// starting point in the clip, so publishers do not send in lockstep.
pub fn publish(
    peer: &SyntheticPeer,
    source: Arc<MediaSource>,
    log: Arc<SendLog>,
    stream_id: &str,
    n: usize,
) -> Publishing {
    let video_log = log.track(stream_id, MediaKind::Video);
    let audio = audio_task(peer, source.clone(), log.clone(), stream_id, n);
    let video = {
        let (track, ssrc, stats) = (peer.video.clone(), peer.video_ssrc, peer.stats.clone());
        tokio::spawn(async move {
            let clip = &source.clip;
            let period = Duration::from_secs_f64(1.0 / clip.fps);
            let ts_step = (90_000.0 / clip.fps).round() as u32;
            let mut tick = tokio::time::interval(period);
            let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
            // Start on a keyframe, at a publisher-dependent one.
            let mut i = 0;
            for _ in 0..n % 3 {
                i = clip.next_keyframe(i);
            }
            let mut answered = stats.keyframe_requests.load(Ordering::Relaxed);
            loop {
                tick.tick().await;
                let requests = stats.keyframe_requests.load(Ordering::Relaxed);
                if requests != answered {
                    answered = requests;
                    if !clip.keyframes[i] {
                        i = clip.next_keyframe(i);
                    }
                }
                let parts = packetize_vp8(&clip.frames[i], MAX_PAYLOAD);
                let last = parts.len() - 1;
                for (k, payload) in parts.into_iter().enumerate() {
                    let p = rtp(VP8_PT, ssrc, seq, ts, k == last, payload);
                    if send(&*track, &log, &video_log, p).await {
                        stats.sent_video.fetch_add(1, Ordering::Relaxed);
                    }
                    seq = seq.wrapping_add(1);
                }
                ts = ts.wrapping_add(ts_step);
                i = (i + 1) % clip.frames.len();
            }
        })
    };
    Publishing {
        tasks: vec![audio, video],
    }
}

async fn send(
    track: &dyn TrackLocal,
    log: &SendLog,
    track_log: &TrackLog,
    packet: rtc::rtp::Packet,
) -> bool {
    track_log.record(
        packet.header.sequence_number,
        log.now_us(),
        crate::measure::fingerprint(&packet.payload),
    );
    track.write_rtp(packet).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_parse_with_keyframes_every_few_seconds() {
        for v in [VideoVariant::Tiny, VideoVariant::Low, VideoVariant::High] {
            let clip = Clip::load(v).expect("clip parses");
            assert!((clip.fps - 30.0).abs() < 0.01);
            let keys: Vec<usize> = (0..clip.frames.len())
                .filter(|&i| clip.keyframes[i])
                .collect();
            assert!(keys.len() >= 2, "{v:?}: keyframes at {keys:?}");
            for w in keys.windows(2) {
                let secs = (w[1] - w[0]) as f64 / clip.fps;
                assert!(
                    (2.0..=3.0).contains(&secs),
                    "{v:?}: keyframes {secs} s apart"
                );
            }
            assert_eq!(clip.next_keyframe(1), keys[1]);
            assert_eq!(clip.next_keyframe(*keys.last().unwrap()), 0);
        }
    }

    #[test]
    fn vp8_packets_carry_the_descriptor_and_the_whole_frame() {
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let parts = packetize_vp8(&frame, MAX_PAYLOAD);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0][0], 0x10, "S bit on the first packet");
        assert!(parts[1..].iter().all(|p| p[0] == 0));
        assert!(parts.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let joined: Vec<u8> = parts.iter().flat_map(|p| p[1..].to_vec()).collect();
        assert_eq!(joined, frame);
    }

    #[test]
    fn opus_encodes_about_32_kbit_per_second() {
        let a = AudioLoop::encode(1).expect("libopus encodes");
        assert_eq!(a.packets.len(), AUDIO_LOOP_SECS * 50);
        let bytes: usize = a.packets.iter().map(|p| p.len()).sum();
        let kbps = bytes as f64 * 8.0 / AUDIO_LOOP_SECS as f64 / 1000.0;
        assert!((16.0..=40.0).contains(&kbps), "{kbps} kbit/s");
        // Opus TOC byte of a 20 ms frame (config bits give the frame size).
        assert!(a.packets.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn bad_ivf_is_an_error_not_a_panic() {
        assert!(Clip::parse_ivf(b"nope").is_err());
        let mut data = VideoVariant::Low.ivf()[..100].to_vec();
        assert!(Clip::parse_ivf(&data).is_err());
        data[8..12].copy_from_slice(b"VP90");
        assert!(Clip::parse_ivf(&data).is_err());
    }
}

/// The three clips of a simulcast publisher, lowest layer first (rids `q`, `h`, `f`).
pub struct SimulcastClips {
    pub layers: [Clip; 3],
}

impl SimulcastClips {
    pub fn load() -> Result<SimulcastClips, MediaError> {
        Ok(SimulcastClips {
            layers: [
                Clip::load(VideoVariant::Tiny)?,
                Clip::load(VideoVariant::Low)?,
                Clip::load(VideoVariant::High)?,
            ],
        })
    }
}

/// A header extension's raw value (the mid and rid strings).
#[derive(Debug)]
struct RawExtension(Vec<u8>);

impl rtc::shared::marshal::MarshalSize for RawExtension {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl rtc::shared::marshal::Marshal for RawExtension {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        if buf.len() < self.0.len() {
            return Err(rtc::shared::error::Error::ErrBufferShort);
        }
        buf[..self.0.len()].copy_from_slice(&self.0);
        Ok(self.0.len())
    }
}

/// Publish like [`publish`], but the video as three simulcast layers from `clips`, each packet
/// carrying the mid and rid header extensions as a browser's do (the SFU tells the layers
/// apart by rid: simulcast SSRCs are not signalled). A keyframe request sends every layer to
/// its next keyframe. The layers' packets are not in `log` (the impaired-link scenario
/// observes what arrives instead of matching it).
pub fn publish_simulcast(
    peer: &Arc<SyntheticPeer>,
    source: Arc<MediaSource>,
    clips: Arc<SimulcastClips>,
    log: Arc<SendLog>,
    stream_id: &str,
    n: usize,
) -> Publishing {
    let mut tasks = vec![audio_task(peer, source, log, stream_id, n)];
    for (layer, (rid, ssrc)) in peer.video_layers.clone().into_iter().enumerate() {
        let (track, stats, clips) = (peer.video.clone(), peer.stats.clone(), clips.clone());
        let mid = peer.clone();
        tasks.push(tokio::spawn(async move {
            let clip = &clips.layers[layer.min(2)];
            let period = Duration::from_secs_f64(1.0 / clip.fps);
            let ts_step = (90_000.0 / clip.fps).round() as u32;
            let mut tick = tokio::time::interval(period);
            let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
            let mut i = 0;
            let mut answered = stats.keyframe_requests.load(Ordering::Relaxed);
            let mut mid_value: Option<String> = None;
            loop {
                tick.tick().await;
                if mid_value.is_none() {
                    mid_value = mid.simulcast_mid().await;
                    if mid_value.is_none() {
                        continue; // not answered yet
                    }
                }
                let requests = stats.keyframe_requests.load(Ordering::Relaxed);
                if requests != answered {
                    answered = requests;
                    if !clip.keyframes[i] {
                        i = clip.next_keyframe(i);
                    }
                }
                let extensions = |m: &str| {
                    [
                        rtc::rtp::extension::HeaderExtension::Custom {
                            uri: rtc::sdp::extmap::SDES_MID_URI.into(),
                            extension: Box::new(RawExtension(m.as_bytes().to_vec())),
                        },
                        rtc::rtp::extension::HeaderExtension::Custom {
                            uri: rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI.into(),
                            extension: Box::new(RawExtension(rid.as_bytes().to_vec())),
                        },
                    ]
                };
                let parts = packetize_vp8(&clip.frames[i], MAX_PAYLOAD);
                let last = parts.len() - 1;
                for (k, payload) in parts.into_iter().enumerate() {
                    let p = rtp(VP8_PT, ssrc, seq, ts, k == last, payload);
                    let m = mid_value.as_deref().unwrap_or_default();
                    if track
                        .write_rtp_with_extensions(p, &extensions(m))
                        .await
                        .is_ok()
                    {
                        stats.sent_video.fetch_add(1, Ordering::Relaxed);
                    }
                    seq = seq.wrapping_add(1);
                }
                ts = ts.wrapping_add(ts_step);
                i = (i + 1) % clip.frames.len();
            }
        }));
    }
    Publishing { tasks }
}
