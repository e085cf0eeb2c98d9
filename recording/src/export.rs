//! From a journal to playable files: one WebM per participant (VP8 + Opus) and `manifest.json`.
//!
//! **Frames.** Opus: one RTP packet is one frame. VP8 (RFC 7741): a frame is the packets from
//! one with S=1 and partition 0 up to the one with the marker bit, all of one timestamp and with
//! consecutive sequence numbers. A frame with a hole is not written; after one, video resumes
//! only at the next keyframe (a decoder fed a frame whose reference is missing shows garbage),
//! and the hole is reported as a gap. Retransmitted duplicates are dropped by sequence number.
//!
//! **Time.** Within a participant, audio and video are placed by the publisher's sender reports
//! (NTP↔RTP pairs): the lip sync the browser intended. Across participants (different machines,
//! different clocks), each participant's NTP clock is mapped onto the server's arrival clock by
//! the smallest `arrival − NTP` seen in its sender reports (the least-delayed report). A track
//! without sender reports falls back to arrival time for the whole participant. Every file
//! starts at 0; the manifest gives each one's offset on the recording's common timeline.

use crate::journal::{Event, Journal, Kind, Record, TrackInfo};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use webm::mux::{AudioCodecId, SegmentBuilder, SegmentMode, VideoCodecId, Writer};

/// Why a journal could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the WebM muxer refused {0}")]
    Mux(String),
    #[error("track {0}: codec {1} cannot be exported (VP8 and Opus can)")]
    Codec(u16, String),
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    pub format: u32,
    pub recording: String,
    pub consultation: String,
    /// Unix time (ms) of the common timeline's zero, on the server's clock.
    pub started_unix_ms: i64,
    /// `sender_reports` when every participant was placed by them, else `arrival`.
    pub sync: &'static str,
    pub recovered: Recovered,
    pub participants: Vec<ParticipantManifest>,
    pub events: Vec<EventAt>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Recovered {
    pub chunks: u64,
    /// The journal ended inside a chunk (the server stopped while writing it).
    pub torn_tail: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ParticipantManifest {
    /// The seat id (invitation id or account id).
    pub participant: String,
    pub pseudonym: String,
    /// File name inside the export directory (no name or pseudonym in it).
    pub file: String,
    pub start_offset_ms: f64,
    pub duration_ms: f64,
    pub sync: &'static str,
    pub tracks: Vec<TrackManifest>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrackManifest {
    pub kind: Kind,
    pub codec: String,
    pub label: String,
    pub packets: u64,
    pub lost_packets: u64,
    pub frames: u64,
    pub start_offset_ms: f64,
    pub duration_ms: f64,
    pub gaps: Vec<Gap>,
}

/// Media missing from a track: lost packets, or video waiting for a keyframe after them.
#[derive(Clone, Debug, Serialize)]
pub struct Gap {
    pub at_ms: f64,
    pub duration_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EventAt {
    /// On the server's clock, relative to the common timeline's zero.
    pub at_ms: f64,
    #[serde(flatten)]
    pub event: Event,
}

/// One RTP packet's fields the converter needs.
struct Rtp<'a> {
    marker: bool,
    seq: u16,
    ts: u32,
    payload: &'a [u8],
}

fn parse_rtp(p: &[u8]) -> Option<Rtp<'_>> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(p[0] & 0x0f);
    let mut at = 12 + 4 * cc;
    if p[0] & 0x10 != 0 {
        let ext = p.get(at..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        let pad = usize::from(*p.last()?);
        end = end.checked_sub(pad)?;
    }
    if at > end {
        return None;
    }
    Some(Rtp {
        marker: p[1] & 0x80 != 0,
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        payload: &p[at..end],
    })
}

/// The VP8 payload descriptor (RFC 7741 §4.2): (start of a frame, descriptor length).
fn vp8_descriptor(payload: &[u8]) -> Option<(bool, usize)> {
    let b0 = *payload.first()?;
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            // Picture id: 7 or 15 bits.
            at += if *payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    (at < payload.len()).then_some((start, at))
}

/// Width and height of a VP8 keyframe (RFC 6386 §9.1), if `frame` is one.
fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (w > 0 && h > 0).then_some((u32::from(w), u32::from(h)))
}

/// Unwraps a wrapping counter into 64 bits, relative to the last value seen.
#[derive(Default)]
struct Unwrap {
    last: Option<i64>,
}

impl Unwrap {
    fn next(&mut self, v: u64, bits: u32) -> i64 {
        let modulus = 1i64 << bits;
        let v = v as i64;
        let ext = match self.last {
            None => v,
            Some(last) => {
                let base = last - last.rem_euclid(modulus);
                // The candidate nearest to the last value.
                [base - modulus + v, base + v, base + modulus + v]
                    .into_iter()
                    .min_by_key(|c| (c - last).abs())
                    .expect("three candidates")
            }
        };
        if self.last.is_none_or(|l| ext > l) {
            self.last = Some(ext);
        }
        ext
    }
}

struct Frame {
    /// Extended RTP timestamp.
    ts: i64,
    arrival_us: u64,
    data: Vec<u8>,
    key: bool,
}

struct TrackFrames {
    frames: Vec<Frame>,
    packets: u64,
    lost: u64,
    /// (extended timestamp where media is missing from, extended timestamp where it resumes)
    holes: Vec<(i64, i64)>,
    size: Option<(u32, u32)>,
}

/// A track's packets in sequence order (extended), duplicates dropped.
fn ordered(packets: &[(u64, Vec<u8>)]) -> Vec<(i64, u64, &[u8])> {
    let mut seq = Unwrap::default();
    let mut out: Vec<(i64, u64, &[u8])> = packets
        .iter()
        .filter_map(|(arrival, p)| {
            let r = parse_rtp(p)?;
            Some((seq.next(u64::from(r.seq), 16), *arrival, p.as_slice()))
        })
        .collect();
    out.sort_by_key(|(s, _, _)| *s);
    out.dedup_by_key(|(s, _, _)| *s);
    out
}

/// The most silence put into one audio gap (10 s at 20 ms): beyond, the gap stays a gap.
const MAX_SILENCE_FRAMES: i64 = 500;

/// Lost audio becomes silence in the file: Opus frames that decode to silence (a CELT frame
/// with no coded energy, TOC config 31 for 20 ms, 30 for 10 ms), one per missing frame
/// between the last frame and `next_ts`. Without them a player that decodes audio sample after
/// sample (ignoring timestamps) plays everything after a loss early: 20 ms per lost frame, and
/// audio drifts ahead of video (seen over 2 minutes at 5 % loss: up to 93 ms).
fn fill_with_silence(frames: &mut Vec<Frame>, next_ts: i64) {
    let [.., before, last] = frames.as_slice() else {
        return;
    };
    let duration = last.ts - before.ts;
    let toc = match duration {
        960 => 0xF8,
        480 => 0xF0,
        _ => return,
    };
    let missing = (next_ts - last.ts) / duration - 1;
    if !(1..=MAX_SILENCE_FRAMES).contains(&missing) || (next_ts - last.ts) % duration != 0 {
        return;
    }
    let (ts0, arrival0) = (last.ts, last.arrival_us);
    for k in 1..=missing {
        let ts = ts0 + k * duration;
        frames.push(Frame {
            ts,
            // 48 kHz: 48 ticks per millisecond.
            arrival_us: arrival0 + u64::try_from(k * duration * 1000 / 48).unwrap_or(0),
            data: vec![toc, 0xFF, 0xFE],
            key: true,
        });
    }
}

fn frames_of(kind: Kind, packets: &[(u64, Vec<u8>)]) -> TrackFrames {
    let ordered = ordered(packets);
    let mut t = TrackFrames {
        frames: Vec::new(),
        packets: ordered.len() as u64,
        lost: 0,
        holes: Vec::new(),
        size: None,
    };
    let mut ts = Unwrap::default();
    let mut prev_seq: Option<i64> = None;
    // Video: the frame being assembled (its timestamp, first arrival, bytes, still whole?).
    let mut current: Option<(i64, u64, Vec<u8>, bool)> = None;
    let mut waiting_for_key = true;
    let mut hole_from: Option<i64> = None;
    for (seq, arrival, p) in ordered {
        let Some(r) = parse_rtp(p) else { continue };
        let rts = ts.next(u64::from(r.ts), 32);
        let gap = prev_seq.is_some_and(|s| seq != s + 1);
        if let Some(s) = prev_seq {
            t.lost += u64::try_from(seq - s - 1).unwrap_or(0);
        }
        prev_seq = Some(seq);
        match kind {
            Kind::Audio => {
                if gap {
                    let from = t.frames.last().map_or(rts, |f| f.ts);
                    t.holes.push((from, rts));
                    fill_with_silence(&mut t.frames, rts);
                }
                if !r.payload.is_empty() {
                    t.frames.push(Frame {
                        ts: rts,
                        arrival_us: arrival,
                        data: r.payload.to_vec(),
                        key: true,
                    });
                }
            }
            Kind::Video => {
                let Some((start, skip)) = vp8_descriptor(r.payload) else {
                    continue;
                };
                if gap {
                    // The frame in progress misses a packet; whatever follows needs a keyframe.
                    if let Some(c) = current.as_mut() {
                        c.3 = false;
                    }
                    if !waiting_for_key {
                        hole_from = Some(t.frames.last().map_or(rts, |f| f.ts));
                    }
                    waiting_for_key = true;
                }
                if start {
                    // A new frame; one still in progress lost its last packet (a gap, above).
                    current = Some((rts, arrival, Vec::new(), true));
                }
                let Some(c) = current.as_mut() else { continue };
                if c.0 != rts {
                    c.3 = false;
                }
                c.2.extend_from_slice(&r.payload[skip..]);
                if r.marker {
                    let (fts, farrival, data, whole) = current.take().expect("a frame");
                    if !whole {
                        continue;
                    }
                    let size = vp8_keyframe_size(&data);
                    if waiting_for_key && size.is_none() {
                        continue;
                    }
                    if size.is_some() {
                        if waiting_for_key && let Some(from) = hole_from.take() {
                            t.holes.push((from, fts));
                        }
                        waiting_for_key = false;
                        t.size = t.size.or(size);
                    }
                    t.frames.push(Frame {
                        ts: fts,
                        arrival_us: farrival,
                        data,
                        key: size.is_some(),
                    });
                }
            }
        }
    }
    t
}

/// One participant's placement: NTP (ns) → server clock (ns), or arrival time.
enum Placement {
    SenderReports { ntp_to_server_ns: i128 },
    Arrival,
}

fn ntp_to_ns(ntp: u64) -> i128 {
    let secs = i128::from(ntp >> 32);
    let frac = i128::from(ntp & 0xffff_ffff);
    secs * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
}

/// Sender reports of one track, each with its RTP timestamp extended near the track's frames.
struct Reports {
    /// (arrival_us, ntp ns, extended rtp timestamp)
    list: Vec<(u64, i128, i64)>,
}

impl Reports {
    fn new(srs: &[(u64, u64, u32)], frames: &[Frame]) -> Reports {
        let mut list = Vec::with_capacity(srs.len());
        for &(arrival, ntp, rtp) in srs {
            // Extend the SR's timestamp next to a frame that arrived about when it did (frames
            // are in sequence order, so arrivals are sorted but for repairs: close enough).
            let at = frames
                .partition_point(|f| f.arrival_us <= arrival)
                .min(frames.len().saturating_sub(1));
            let near = frames.get(at).map_or(0, |f| f.ts);
            let base = near - near.rem_euclid(1 << 32);
            let ext = [base - (1 << 32), base, base + (1 << 32)]
                .into_iter()
                .map(|b| b + i64::from(rtp))
                .min_by_key(|c| (c - near).abs())
                .expect("three candidates");
            list.push((arrival, ntp_to_ns(ntp), ext));
        }
        Reports { list }
    }

    /// NTP time (ns) of a frame: from the latest report that arrived before it (the first one
    /// for frames before any report).
    fn ntp_of(&self, frame: &Frame, clock_rate: u32) -> Option<i128> {
        // The list is in arrival order (the journal's).
        let after = self
            .list
            .partition_point(|(a, _, _)| *a <= frame.arrival_us);
        let sr = self.list.get(after.saturating_sub(1))?;
        let dt = i128::from(frame.ts - sr.2) * 1_000_000_000 / i128::from(clock_rate.max(1));
        Some(sr.1 + dt)
    }
}

struct TrackData {
    info: TrackInfo,
    packets: Vec<(u64, Vec<u8>)>,
    srs: Vec<(u64, u64, u32)>,
}

struct Placed {
    track: u16,
    info: TrackInfo,
    frames: TrackFrames,
    /// Server-clock time (ns) of each frame, same order as `frames.frames`.
    at: Vec<i128>,
}

fn opus_head(channels: u8) -> [u8; 19] {
    let mut h = [0u8; 19];
    h[..8].copy_from_slice(b"OpusHead");
    h[8] = 1;
    h[9] = channels;
    // Pre-skip 0: WebRTC streams start mid-stream; input rate 48 kHz; gain 0; mapping family 0.
    h[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    h
}

/// Export `journal` into `dir` (created if missing): one WebM per participant and
/// `manifest.json`. Returns the manifest.
pub fn export(journal: &Journal, dir: &Path) -> Result<Manifest, ExportError> {
    std::fs::create_dir_all(dir)?;
    let mut tracks: BTreeMap<u16, TrackData> = BTreeMap::new();
    let mut events = Vec::new();
    for r in &journal.records {
        match r {
            Record::Track { track, info } => {
                tracks.entry(*track).or_insert_with(|| TrackData {
                    info: info.clone(),
                    packets: Vec::new(),
                    srs: Vec::new(),
                });
            }
            Record::Rtp {
                track,
                arrival_us,
                packet,
            } => {
                if let Some(t) = tracks.get_mut(track) {
                    t.packets.push((*arrival_us, packet.clone()));
                }
            }
            Record::SenderReport {
                track,
                arrival_us,
                ntp,
                rtp_timestamp,
            } => {
                if let Some(t) = tracks.get_mut(track) {
                    t.srs.push((*arrival_us, *ntp, *rtp_timestamp));
                }
            }
            Record::Event { arrival_us, event } => events.push((*arrival_us, event.clone())),
        }
    }
    for (n, t) in &tracks {
        let ok = matches!(
            (t.info.kind, t.info.codec.to_ascii_lowercase().as_str()),
            (Kind::Video, "vp8") | (Kind::Audio, "opus")
        );
        if !ok {
            return Err(ExportError::Codec(*n, t.info.codec.clone()));
        }
    }

    // Frames per track, then placement per participant.
    let mut by_participant: BTreeMap<String, Vec<(u16, TrackData, TrackFrames)>> = BTreeMap::new();
    for (n, t) in tracks {
        let frames = frames_of(t.info.kind, &t.packets);
        by_participant
            .entry(t.info.participant.clone())
            .or_default()
            .push((n, t, frames));
    }
    let mut placed: BTreeMap<String, (Vec<Placed>, &'static str)> = BTreeMap::new();
    let mut all_by_reports = true;
    for (participant, list) in by_participant {
        let reports: Vec<Reports> = list
            .iter()
            .map(|(_, t, f)| Reports::new(&t.srs, &f.frames))
            .collect();
        let every_track_has_reports = list
            .iter()
            .zip(&reports)
            .all(|((_, _, f), r)| f.frames.is_empty() || !r.list.is_empty());
        let placement = if every_track_has_reports {
            let offset = reports
                .iter()
                .flat_map(|r| r.list.iter())
                .map(|(arrival, ntp, _)| i128::from(*arrival) * 1000 - ntp)
                .min();
            match offset {
                Some(o) => Placement::SenderReports {
                    ntp_to_server_ns: o,
                },
                None => Placement::Arrival,
            }
        } else {
            Placement::Arrival
        };
        let sync = match placement {
            Placement::SenderReports { .. } => "sender_reports",
            Placement::Arrival => "arrival",
        };
        all_by_reports &= sync == "sender_reports";
        let mut out = Vec::new();
        for ((n, t, frames), reports) in list.into_iter().zip(reports) {
            let clock = t.info.clock_rate;
            let at = match placement {
                Placement::SenderReports { ntp_to_server_ns } => frames
                    .frames
                    .iter()
                    .map(|f| reports.ntp_of(f, clock).unwrap_or(0) + ntp_to_server_ns)
                    .collect(),
                Placement::Arrival => {
                    let first = frames.frames.first();
                    frames
                        .frames
                        .iter()
                        .map(|f| {
                            let (t0, a0) = first.map_or((0, 0), |f0| (f0.ts, f0.arrival_us));
                            i128::from(a0) * 1000
                                + i128::from(f.ts - t0) * 1_000_000_000 / i128::from(clock.max(1))
                        })
                        .collect()
                }
            };
            out.push(Placed {
                track: n,
                info: t.info,
                frames,
                at,
            });
        }
        placed.insert(participant, (out, sync));
    }

    let origin_ns = placed
        .values()
        .flat_map(|(ts, _)| ts.iter().flat_map(|p| p.at.iter().copied()))
        .chain(events.iter().map(|(a, _)| i128::from(*a) * 1000))
        .min()
        .unwrap_or(0);
    let ms = |ns: i128| (ns as f64) / 1e6;

    let mut participants = Vec::new();
    for (i, (participant, (tracks, sync))) in placed.into_iter().enumerate() {
        let Some(first) = tracks.iter().flat_map(|p| p.at.iter().copied()).min() else {
            continue;
        };
        let last = tracks
            .iter()
            .flat_map(|p| p.at.iter().copied())
            .max()
            .unwrap_or(first);
        let file = format!("participant-{}.webm", i + 1);
        write_webm(&dir.join(&file), &tracks, first)?;
        let pseudonym = tracks
            .first()
            .map(|p| p.info.pseudonym.clone())
            .unwrap_or_default();
        let track_manifests = tracks
            .iter()
            .map(|p| {
                let clock = i128::from(p.info.clock_rate.max(1));
                let start = p.at.first().copied().unwrap_or(first);
                let end = p.at.last().copied().unwrap_or(start);
                let t0 = p.frames.frames.first().map_or(0, |f| f.ts);
                TrackManifest {
                    kind: p.info.kind,
                    codec: p.info.codec.clone(),
                    label: p.info.label.clone(),
                    packets: p.frames.packets,
                    lost_packets: p.frames.lost,
                    frames: p.frames.frames.len() as u64,
                    start_offset_ms: ms(start - origin_ns),
                    duration_ms: ms(end - start),
                    gaps: p
                        .frames
                        .holes
                        .iter()
                        .map(|(from, to)| Gap {
                            at_ms: ms(
                                start - origin_ns + i128::from(from - t0) * 1_000_000_000 / clock
                            ),
                            duration_ms: ms(i128::from(to - from) * 1_000_000_000 / clock),
                        })
                        .collect(),
                }
            })
            .collect();
        participants.push(ParticipantManifest {
            participant,
            pseudonym,
            file,
            start_offset_ms: ms(first - origin_ns),
            duration_ms: ms(last - first),
            sync,
            tracks: track_manifests,
        });
    }

    let manifest = Manifest {
        format: 1,
        recording: journal.header.recording.clone(),
        consultation: journal.header.consultation.clone(),
        started_unix_ms: i64::try_from(origin_ns / 1_000_000).unwrap_or(0),
        sync: if all_by_reports {
            "sender_reports"
        } else {
            "arrival"
        },
        recovered: Recovered {
            chunks: journal.recovery.chunks,
            torn_tail: journal.recovery.torn_tail,
        },
        participants,
        events: events
            .into_iter()
            .map(|(a, event)| EventAt {
                at_ms: ms(i128::from(a) * 1000 - origin_ns),
                event,
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("manifest.json"), json)?;
    Ok(manifest)
}

/// Nanoseconds per millisecond: the files' timestamp resolution (libwebm's default timecode
/// scale).
const MS_NS: u64 = 1_000_000;

/// One participant's tracks into one WebM file, timestamps relative to `first_ns`.
fn write_webm(path: &Path, tracks: &[Placed], first_ns: i128) -> Result<PathBuf, ExportError> {
    let mux = |what: &str| {
        let what = what.to_string();
        move |e: webm::mux::Error| ExportError::Mux(format!("{what}: {e}"))
    };
    let file = BufWriter::new(File::create(path)?);
    let mut builder = SegmentBuilder::new(Writer::new(file))
        .map_err(mux("segment"))?
        .set_mode(SegmentMode::File)
        .map_err(mux("file mode"))?
        .set_writing_app("teleconsult-recording")
        .map_err(mux("writing app"))?;
    // Track numbers in the file, by journal track.
    let mut numbers: BTreeMap<u16, u64> = BTreeMap::new();
    for p in tracks {
        if p.frames.frames.is_empty() {
            continue;
        }
        match p.info.kind {
            Kind::Video => {
                let (w, h) = p.frames.size.unwrap_or((640, 480));
                let (b, t) = builder
                    .add_video_track(w, h, VideoCodecId::VP8, None)
                    .map_err(mux("video track"))?;
                builder = b;
                numbers.insert(p.track, webm::mux::Track::track_number(&t));
            }
            Kind::Audio => {
                let (b, t) = builder
                    .add_audio_track(48_000, 2, AudioCodecId::Opus, None)
                    .map_err(mux("audio track"))?;
                builder = b
                    .set_codec_private(t, &opus_head(2))
                    .map_err(mux("OpusHead"))?;
                numbers.insert(p.track, webm::mux::Track::track_number(&t));
            }
        }
    }
    let mut segment = builder.build();
    // Every track's frames in one time order (the muxer wants timestamps non-decreasing across
    // tracks), never before the file's start, never backwards.
    let mut all: Vec<(u64, u64, &Frame)> = Vec::new();
    for p in tracks {
        let Some(&n) = numbers.get(&p.track) else {
            continue;
        };
        // Strictly increasing per track at the file's 1 ms resolution: two frames placed in
        // the same millisecond (or one placed before its predecessor) would give a player
        // duplicate timestamps ("non monotonically increasing dts").
        let mut next_min = 0u64;
        for (f, at) in p.frames.frames.iter().zip(&p.at) {
            let t = u64::try_from((*at - first_ns).max(0))
                .unwrap_or(0)
                .max(next_min);
            next_min = (t / MS_NS + 1) * MS_NS;
            all.push((t, n, f));
        }
    }
    all.sort_by_key(|(t, n, _)| (*t, *n));
    if all.is_empty() {
        return Err(ExportError::Mux("a participant without frames".into()));
    }
    for (t, n, f) in &all {
        segment
            .add_frame(*n, &f.data, *t, f.key)
            .map_err(mux("frame"))?;
    }
    segment
        .finalize(None)
        .map_err(|_| ExportError::Mux("finalize".into()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_audio_becomes_silence_frames_on_the_timeline() {
        let packet = |seq: u16, ts: u32| {
            let mut p = vec![0x80, 111];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 9, 0x78, 0x01, 0x02]);
            p
        };
        // 0, 1, 2 arrive; 3 and 4 are lost; 5 arrives; a jump of 20 frames (a restart) is
        // not filled beyond the cap… here within it: 6 lost, 7 arrives.
        let packets: Vec<(u64, Vec<u8>)> = [0u16, 1, 2, 5, 7]
            .iter()
            .map(|&i| (u64::from(i) * 20_000, packet(i, u32::from(i) * 960)))
            .collect();
        let t = frames_of(Kind::Audio, &packets);
        let ts: Vec<i64> = t.frames.iter().map(|f| f.ts - t.frames[0].ts).collect();
        assert_eq!(ts, (0..8).map(|i| i * 960).collect::<Vec<_>>());
        let silent: Vec<bool> = t
            .frames
            .iter()
            .map(|f| f.data == [0xF8, 0xFF, 0xFE])
            .collect();
        assert_eq!(
            silent,
            [false, false, false, true, true, false, true, false]
        );
        assert_eq!(t.lost, 3);
        assert_eq!(t.holes.len(), 2, "the gaps are still reported");
        // A gap too long (or not a whole number of frames) is left as it is.
        let packets = vec![
            (0, packet(0, 0)),
            (20_000, packet(1, 960)),
            (9_000_000, packet(900, 960 * 900)),
        ];
        assert_eq!(frames_of(Kind::Audio, &packets).frames.len(), 3);
    }

    #[test]
    fn sequence_and_timestamp_unwrap_across_wrap_around() {
        let mut u = Unwrap::default();
        assert_eq!(u.next(65_534, 16), 65_534);
        assert_eq!(u.next(65_535, 16), 65_535);
        assert_eq!(u.next(0, 16), 65_536);
        assert_eq!(
            u.next(65_535, 16),
            65_535,
            "a late packet from before the wrap"
        );
        assert_eq!(u.next(2, 16), 65_538);
        let mut t = Unwrap::default();
        assert_eq!(
            t.next(u64::from(u32::MAX - 10), 32),
            i64::from(u32::MAX - 10)
        );
        assert_eq!(t.next(5, 32), (1i64 << 32) + 5);
    }

    #[test]
    fn vp8_descriptors_of_every_shape_are_skipped() {
        // S=1, PID=0, no extension.
        assert_eq!(vp8_descriptor(&[0x10, 0xaa]), Some((true, 1)));
        // X, I with a 15-bit picture id, L, T/K.
        assert_eq!(
            vp8_descriptor(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0xaa]),
            Some((true, 6))
        );
        // A continuation packet (S=0).
        assert_eq!(vp8_descriptor(&[0x80, 0x80, 0x12, 0xaa]), Some((false, 3)));
        // Nothing after the descriptor, or truncated: not a packet we can use.
        assert_eq!(vp8_descriptor(&[0x90, 0x80]), None);
        assert_eq!(vp8_descriptor(&[]), None);
    }

    #[test]
    fn hostile_rtp_is_refused_not_panicked_on() {
        for p in [
            &[][..],
            &[0x80; 11][..],
            &[0x9f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[
                0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0xff, 0xff,
            ][..],
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200][..],
        ] {
            assert!(parse_rtp(p).is_none(), "{p:?}");
        }
    }
}
