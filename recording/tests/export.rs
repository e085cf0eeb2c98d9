//! A journal of real VP8 and Opus, packetised as a browser would send them, exported to WebM and
//! checked with ffprobe/ffmpeg (Debian's, installed by `scripts/install-test-deps`): the files
//! are VP8 + Opus, last as long as what was recorded, decode without a single error, and keep
//! audio and video in sync — a beep and a white frame made at the same instant every 2 s are at
//! most 60 ms apart in the file, although video reaches the server 150 ms later than audio, its
//! packets are reordered by repairs, and some are lost for good.

use std::path::{Path, PathBuf};
use std::process::Command;
use teleconsult_recording::journal::{self, Event, Kind, Record, TrackInfo};
use teleconsult_recording::{
    Header, JournalWriter, MasterKey, RecorderConfig, Recording, RecordingKey, export,
};

/// Seconds of call: 12 in CI; `scripts/bench-recording` sets `TC_RECORDING_SECONDS=120`.
fn seconds() -> u32 {
    std::env::var("TC_RECORDING_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &u32| (4..=3600).contains(&s))
        .unwrap_or(12)
}
const FPS: u32 = 30;
/// The video path is slower than the audio path by this much (arrival at the server).
const VIDEO_EXTRA_DELAY_US: u64 = 150_000;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tc-recording-{name}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .expect("ffmpeg/ffprobe run (scripts/install-test-deps)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Black 320×240 at 30 fps with one white frame at every even second, VP8, a keyframe a second.
fn flash_clip(dir: &Path) -> Vec<Vec<u8>> {
    let ivf = dir.join("flash.ivf");
    let (ok, _, err) = run(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            &format!("color=c=black:s=320x240:r={FPS}:d={}", seconds()),
            "-vf",
            "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(n\\,60)\\,1)'",
            "-c:v",
            "libvpx",
            "-g",
            "30",
            "-b:v",
            "400k",
            "-f",
            "ivf",
            "-y",
        ])
        .arg(&ivf));
    assert!(ok, "ffmpeg makes the clip: {err}");
    let data = std::fs::read(&ivf).unwrap();
    let header = usize::from(u16::from_le_bytes([data[6], data[7]]));
    let mut at = header;
    let mut frames = Vec::new();
    while at + 12 <= data.len() {
        let size = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        at += 12;
        frames.push(data[at..at + size].to_vec());
        at += size;
    }
    assert_eq!(frames.len(), (seconds() * FPS) as usize);
    frames
}

/// 48 kHz mono: a 1 kHz beep of 60 ms at every even second, silence otherwise; Opus, 20 ms.
fn beeps() -> Vec<Vec<u8>> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let samples = 48_000 * seconds() as usize;
    let pcm: Vec<i16> = (0..samples)
        .map(|i| {
            let in_second = i % 96_000;
            if in_second < 2_880 {
                ((i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 48_000.0).sin() * 12_000.0)
                    as i16
            } else {
                0
            }
        })
        .collect();
    pcm.chunks(960)
        .map(|c| {
            let mut out = vec![0u8; 1500];
            let n = enc.encode(c, &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A simple deterministic generator (the test must not depend on luck).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn percent(&mut self) -> u64 {
        self.next() % 100
    }
}

/// NTP timestamp of `secs` seconds after an arbitrary instant of the publisher's clock.
fn ntp(base_secs: u64, micros: u64) -> u64 {
    let secs = base_secs + micros / 1_000_000;
    let frac = ((micros % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// Write the journal of one participant's call: audio and video made at the same instants,
/// with the arrival pattern described at the top. `lossy`: 5 % of packets arrive late (repaired),
/// 0.5 % never.
fn journal_of_a_call(dir: &Path, master: &MasterKey, lossy: bool) -> PathBuf {
    let frames = flash_clip(dir);
    let audio = beeps();
    let key = RecordingKey::generate();
    let header = Header {
        recording: "rec-sync".into(),
        consultation: "c-sync".into(),
        created_ms: 1_700_000_000_000,
        key: master.wrap(&key, "rec-sync"),
    };
    let path = dir.join("journal");
    let mut w = JournalWriter::create(&path, &header, key).unwrap();
    let info = |kind, codec: &str, clock, label: &str| TrackInfo {
        participant: "jti-patient".into(),
        pseudonym: "Patient 4711".into(),
        kind,
        codec: codec.into(),
        clock_rate: clock,
        label: label.into(),
    };
    w.append(&Record::Track {
        track: 1,
        info: info(Kind::Audio, "opus", 48_000, "microphone"),
    })
    .unwrap();
    w.append(&Record::Track {
        track: 2,
        info: info(Kind::Video, "VP8", 90_000, "camera"),
    })
    .unwrap();
    w.append(&Record::Event {
        arrival_us: 0,
        event: Event::ConsentGiven {
            participant: "jti-patient".into(),
            text_version: "2026-12".into(),
            text_sha256: "00".repeat(32),
        },
    })
    .unwrap();
    // Publisher clock: NTP base and random-looking RTP bases near the wrap, so timestamps wrap.
    let (ntp_base, a_base, v_base) = (3_900_000_000u64, u32::MAX - 100_000, u32::MAX - 400_000);
    // Server clock: the call starts at 5 s on it; the publisher's NTP clock is unrelated.
    let server0 = 5_000_000u64;
    let mut rng = Lcg(42);
    // (arrival, record) in arrival order, built for both tracks then sorted.
    let mut out: Vec<(u64, Record)> = Vec::new();
    let mut sent = 0u64;
    let mut send = |rng: &mut Lcg, arrival: u64, track: u16, packet: Vec<u8>| {
        sent += 1;
        let roll = if lossy { rng.percent() } else { 99 };
        let fate = if lossy && sent % 150 == 75 {
            // Lost for good (the repair never came).
            None
        } else if roll < 5 {
            // Lost, then repaired 120 ms later (out of order).
            Some(arrival + 120_000)
        } else {
            Some(arrival)
        };
        if let Some(arrival_us) = fate {
            out.push((
                arrival_us,
                Record::Rtp {
                    track,
                    arrival_us,
                    packet,
                },
            ));
        }
    };
    for (i, f) in audio.iter().enumerate() {
        let t_us = i as u64 * 20_000;
        let ts = a_base.wrapping_add(i as u32 * 960);
        let jitter = rng.next() % 15_000;
        send(
            &mut rng,
            server0 + t_us + 20_000 + jitter,
            1,
            rtp(111, (i as u16).wrapping_add(65_000), ts, 0xa, false, f),
        );
    }
    let mut seq = 65_500u16;
    for (i, f) in frames.iter().enumerate() {
        let t_us = i as u64 * 1_000_000 / u64::from(FPS);
        let ts = v_base.wrapping_add(i as u32 * 3000);
        let jitter = rng.next() % 15_000;
        let arrival = server0 + t_us + 20_000 + VIDEO_EXTRA_DELAY_US + jitter;
        let chunks: Vec<&[u8]> = f.chunks(1100).collect();
        for (k, c) in chunks.iter().enumerate() {
            let mut payload = vec![if k == 0 { 0x10 } else { 0x00 }];
            payload.extend_from_slice(c);
            send(
                &mut rng,
                arrival + k as u64 * 100,
                2,
                rtp(96, seq, ts, 0xb, k + 1 == chunks.len(), &payload),
            );
            seq = seq.wrapping_add(1);
        }
    }
    // Sender reports every second from both tracks, from the publisher's one clock; audio's
    // reach us 20 ms after sending, video's 20 ms + the extra delay.
    for s in 0..seconds() as u64 {
        let t_us = s * 1_000_000 + 500_000;
        out.push((
            server0 + t_us + 20_000,
            Record::SenderReport {
                track: 1,
                arrival_us: server0 + t_us + 20_000,
                ntp: ntp(ntp_base, t_us),
                rtp_timestamp: a_base.wrapping_add((t_us * 48_000 / 1_000_000) as u32),
            },
        ));
        out.push((
            server0 + t_us + 20_000 + VIDEO_EXTRA_DELAY_US,
            Record::SenderReport {
                track: 2,
                arrival_us: server0 + t_us + 20_000 + VIDEO_EXTRA_DELAY_US,
                ntp: ntp(ntp_base, t_us),
                rtp_timestamp: v_base.wrapping_add((t_us * 90_000 / 1_000_000) as u32),
            },
        ));
    }
    out.sort_by_key(|(a, _)| *a);
    for (_, r) in &out {
        w.append(r).unwrap();
    }
    w.append(&Record::Event {
        arrival_us: server0 + u64::from(seconds()) * 1_000_000,
        event: Event::Stopped,
    })
    .unwrap();
    w.finish().unwrap();
    path
}

fn probe(file: &Path) -> serde_json::Value {
    let (ok, out, err) = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(file));
    assert!(ok, "ffprobe reads {}: {err}", file.display());
    serde_json::from_str(&out).unwrap()
}

/// Times (s) of the white frames in the file's video.
fn flashes(file: &Path) -> Vec<f64> {
    let (ok, out, err) = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args([
            "-map",
            "0:v",
            "-vf",
            "signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-",
            "-f",
            "null",
            "-",
        ]));
    assert!(ok, "{err}");
    let mut t = None;
    let mut found = Vec::new();
    for line in out.lines() {
        if let Some(p) = line.split("pts_time:").nth(1) {
            t = p
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok());
        } else if let Some(y) = line.strip_prefix("lavfi.signalstats.YAVG=")
            && y.parse::<f64>().unwrap_or(0.0) > 128.0
            && let Some(t) = t
        {
            found.push(t);
        }
    }
    found
}

/// Times (s) where a beep starts in the file's audio (silence before, loud now).
fn beep_onsets(file: &Path) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args([
            "-map",
            "0:a",
            "-af",
            "aresample=async=1:first_pts=0",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-f",
            "s16le",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pcm: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut onsets = Vec::new();
    // The last loud sample: a beep starts after at least half a second of quiet.
    let mut last_loud: Option<usize> = None;
    for (i, s) in pcm.iter().enumerate() {
        if s.unsigned_abs() > 3000 {
            if last_loud.is_none_or(|l| i - l > 24_000) {
                onsets.push(i as f64 / 48_000.0);
            }
            last_loud = Some(i);
        }
    }
    onsets
}

fn check_call(lossy: bool) {
    let dir = temp(if lossy { "lossy" } else { "clean" });
    let master = MasterKey::new("m1", [3u8; 32]);
    let path = journal_of_a_call(&dir, &master, lossy);
    let j = journal::read(&path, |k, id| master.unwrap(k, id)).unwrap();
    let (packets, cpu_us) = journal_again(&dir, &master, &j);
    let out = dir.join("export");
    let exporting = std::time::Instant::now();
    let manifest = export(&j, &out).unwrap();
    let export_secs = exporting.elapsed().as_secs_f64();
    assert_eq!(manifest.participants.len(), 1);
    let p = &manifest.participants[0];
    assert_eq!(p.sync, "sender_reports");
    assert_eq!(p.pseudonym, "Patient 4711");
    assert!(!p.file.contains("4711"), "no pseudonym in file names");
    let file = out.join(&p.file);

    let info = probe(&file);
    let codecs: Vec<&str> = info["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert!(
        codecs.contains(&"vp8") && codecs.contains(&"opus"),
        "{codecs:?}"
    );
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = f64::from(seconds());
    assert!(
        (duration - expected).abs() / expected < 0.05,
        "duration {duration} s for {expected} s recorded"
    );
    let (ok, _, err) = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"]));
    assert!(ok && err.trim().is_empty(), "decodes without errors: {err}");

    let flashes = flashes(&file);
    let beeps = beep_onsets(&file);
    assert!(flashes.len() >= 4, "white frames seen: {flashes:?}");
    assert!(beeps.len() >= 5, "beeps heard: {beeps:?}");
    let mut worst = 0f64;
    for f in &flashes {
        let nearest = beeps
            .iter()
            .map(|b| (b - f).abs())
            .fold(f64::INFINITY, f64::min);
        worst = worst.max(nearest);
    }
    assert!(
        worst < 0.060,
        "audio/video offset up to {:.0} ms (flashes {flashes:?}, beeps {beeps:?})",
        worst * 1000.0
    );
    // Figures for docs/benchmarks.md (`scripts/bench-recording`), never asserted.
    eprintln!(
        "recording bench ({}): {} s of call, {packets} packets journaled at {:.2} µs CPU each \
         (tap + writer: copy, queue, seal, fsync), export {:.1} s of media per second, \
         worst A/V offset {:.1} ms",
        if lossy {
            "5 % late, 0.5 % lost"
        } else {
            "clean"
        },
        seconds(),
        cpu_us / packets as f64,
        f64::from(seconds()) / export_secs,
        worst * 1000.0
    );
    if lossy {
        let video = p.tracks.iter().find(|t| t.kind == Kind::Video).unwrap();
        assert!(video.lost_packets > 0, "some packets were never repaired");
        assert!(!video.gaps.is_empty(), "and the manifest says where");
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(written["participants"][0]["file"], p.file.as_str());
    assert_eq!(written["events"][0]["type"], "consent_given");
    let _ = std::fs::remove_dir_all(&dir);
}

/// This process's CPU time so far, microseconds (both threads of a recording: the tap's caller
/// and its writer).
fn process_cpu_us() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0);
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// Feed the journal's packets and reports through the real recorder (taps with consent, the
/// writer thread sealing and syncing) into a second journal: how many packets, and the CPU
/// time it took. The second journal must hold the same media.
fn journal_again(dir: &Path, master: &MasterKey, j: &journal::Journal) -> (u64, f64) {
    let key = RecordingKey::generate();
    let header = Header {
        recording: "rec-again".into(),
        consultation: "c-sync".into(),
        created_ms: 1_700_000_000_000,
        key: master.wrap(&key, "rec-again"),
    };
    let path = dir.join("journal-again");
    let epoch = std::time::Instant::now();
    let rec = Recording::start(
        &path,
        &header,
        key,
        RecorderConfig {
            queue: j.records.len() + 16,
            sync_interval: std::time::Duration::from_secs(1),
        },
        epoch,
    )
    .unwrap();
    let at = |us: u64| epoch + std::time::Duration::from_micros(us);
    let mut taps = std::collections::HashMap::new();
    for r in &j.records {
        if let Record::Track { track, info } = r {
            taps.insert(*track, rec.add_track(info.clone()));
            rec.give_consent(epoch, &info.participant, "v", "h");
        }
    }
    let start = process_cpu_us();
    let mut packets = 0u64;
    for r in &j.records {
        match r {
            Record::Rtp {
                track,
                arrival_us,
                packet,
            } => {
                assert!(taps[track].rtp(at(*arrival_us), packet), "queued");
                packets += 1;
            }
            Record::SenderReport {
                track,
                arrival_us,
                ntp,
                rtp_timestamp,
            } => {
                taps[track].sender_report(at(*arrival_us), *ntp, *rtp_timestamp);
            }
            _ => {}
        }
    }
    let summary = rec.stop(at(u64::MAX / 4)).unwrap();
    let cpu = process_cpu_us() - start;
    assert_eq!(summary.dropped, 0);
    let again = journal::read(&path, |k, id| master.unwrap(k, id)).unwrap();
    let rtp = |j: &journal::Journal| {
        j.records
            .iter()
            .filter(|r| matches!(r, Record::Rtp { .. }))
            .count() as u64
    };
    assert_eq!(rtp(&again), packets, "every packet journaled");
    (packets, cpu)
}

#[test]
fn a_clean_call_exports_to_webm_in_sync() {
    check_call(false);
}

#[test]
fn a_lossy_reordered_call_still_decodes_without_errors_and_stays_in_sync() {
    check_call(true);
}
