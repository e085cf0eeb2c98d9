//! A recording in progress: taps that the media worker feeds without ever blocking, and a writer
//! thread that journals what they hand over.
//!
//! Each published track being recorded gets a [`Tap`]. The worker calls [`Tap::rtp`] and
//! [`Tap::sender_report`] on its per-packet path: a consent check (one relaxed atomic load) and a
//! `try_send` into a bounded queue; when the queue is full the packet is dropped and counted
//! (the worker never waits for the disk). The writer thread appends to the [`JournalWriter`],
//! seals and `fsync`s every `sync_interval`, and at the end records the drop counts.
//!
//! Consent is enforced at the tap: a participant's taps pass nothing until
//! [`Recording::set_consent`] gives it, and nothing from the moment it is withdrawn.

use crate::crypto::RecordingKey;
use crate::journal::{Event, Header, JournalError, JournalWriter, Record, TrackInfo};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a recording buffers and syncs.
#[derive(Clone, Copy, Debug)]
pub struct RecorderConfig {
    /// Records the taps may queue before they drop.
    pub queue: usize,
    /// Seal and `fsync` at least this often (what a crash can lose).
    pub sync_interval: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            queue: 4096,
            sync_interval: Duration::from_secs(1),
        }
    }
}

/// The writer thread: what it wrote (records, bytes) when it ends.
type Writer = JoinHandle<Result<(u64, u64), JournalError>>;

/// Packet buffers a tap keeps for reuse (returned by the writer once journaled): in steady
/// state a recorded packet is copied into one of them, not into a new allocation.
const POOL: usize = 256;

enum Control {
    Record(Record),
    /// Where the writer returns track `track`'s packet buffers.
    Pool(u16, SyncSender<Vec<u8>>),
    /// Write what the taps queued, then these final records, and close.
    Stop(Vec<Record>),
}

struct TapShared {
    track: u16,
    dropped: AtomicU64,
}

/// What a finished recording wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub dropped: u64,
    pub bytes: u64,
}

/// What a tap did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The publisher has not consented (or withdrew).
    NoConsent,
    /// The queue was full: dropped and counted.
    Dropped,
    /// The recording stopped.
    Stopped,
}

/// Feeds one published track into a recording. Cheap to call on the per-packet path.
pub struct Tap {
    shared: Arc<TapShared>,
    consent: Arc<AtomicBool>,
    tx: SyncSender<Record>,
    /// Buffers the writer gave back, for the next packets.
    pool: Receiver<Vec<u8>>,
    epoch: Instant,
}

impl Tap {
    /// The journal's track number of this tap.
    pub fn track(&self) -> u16 {
        self.shared.track
    }

    fn offer(&self, record: Record) -> Offer {
        match self.tx.try_send(record) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Offer::Dropped
            }
            // The recording stopped: nothing to do.
            Err(TrySendError::Disconnected(_)) => Offer::Stopped,
        }
    }

    fn now_us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// One RTP packet as the publisher sent it (decrypted), received at `at`. Returns whether
    /// it was queued (false: no consent, queue full, or the recording stopped).
    pub fn rtp(&self, at: Instant, packet: &[u8]) -> bool {
        self.offer_rtp(at, packet) == Offer::Queued
    }

    /// [`Tap::rtp`], saying why a packet was not queued.
    pub fn offer_rtp(&self, at: Instant, packet: &[u8]) -> Offer {
        if !self.consent.load(Ordering::Relaxed) {
            return Offer::NoConsent;
        }
        let mut buf = self.pool.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.offer(Record::Rtp {
            track: self.shared.track,
            arrival_us: self.now_us(at),
            packet: buf,
        })
    }

    /// A sender report of the publisher for this track.
    pub fn sender_report(&self, at: Instant, ntp: u64, rtp_timestamp: u32) -> bool {
        if !self.consent.load(Ordering::Relaxed) {
            return false;
        }
        self.offer(Record::SenderReport {
            track: self.shared.track,
            arrival_us: self.now_us(at),
            ntp,
            rtp_timestamp,
        }) == Offer::Queued
    }
}

/// A recording in progress (see the module docs). Dropping it without [`Recording::stop`]
/// stops the writer too (the journal ends without a `stopped` event, like after a crash).
pub struct Recording {
    control: Sender<Control>,
    data: SyncSender<Record>,
    epoch: Instant,
    taps: Mutex<Vec<Arc<TapShared>>>,
    consents: Mutex<HashMap<String, Arc<AtomicBool>>>,
    next_track: Mutex<u16>,
    writer: Mutex<Option<Writer>>,
}

impl Recording {
    /// Create the journal at `path` and start its writer thread. `epoch` is the instant arrival
    /// times count from.
    pub fn start(
        path: &Path,
        header: &Header,
        key: RecordingKey,
        config: RecorderConfig,
        epoch: Instant,
    ) -> Result<Recording, JournalError> {
        let journal = JournalWriter::create(path, header, key)?;
        let (data, data_rx) = mpsc::sync_channel(config.queue.max(1));
        let (control, control_rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("recording-writer".into())
            .spawn(move || write_loop(journal, data_rx, control_rx, config.sync_interval))?;
        Ok(Recording {
            control,
            data,
            epoch,
            taps: Mutex::new(Vec::new()),
            consents: Mutex::new(HashMap::new()),
            next_track: Mutex::new(1),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn consent_flag(&self, participant: &str) -> Arc<AtomicBool> {
        let mut c = self.consents.lock().unwrap_or_else(|p| p.into_inner());
        c.entry(participant.to_string())
            .or_insert_with(|| Arc::new(AtomicBool::new(false)))
            .clone()
    }

    /// Declare a track and get its tap (which passes nothing until its publisher consents).
    pub fn add_track(&self, info: TrackInfo) -> Tap {
        let track = {
            let mut n = self.next_track.lock().unwrap_or_else(|p| p.into_inner());
            let t = *n;
            *n = n.wrapping_add(1).max(1);
            t
        };
        let consent = self.consent_flag(&info.participant);
        // Declared on the control channel before the tap exists: the writer drains control
        // before every data record, so the declaration always precedes the track's packets.
        let _ = self
            .control
            .send(Control::Record(Record::Track { track, info }));
        let (pool_tx, pool) = mpsc::sync_channel(POOL);
        let _ = self.control.send(Control::Pool(track, pool_tx));
        let shared = Arc::new(TapShared {
            track,
            dropped: AtomicU64::new(0),
        });
        self.taps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shared.clone());
        Tap {
            shared,
            consent,
            tx: self.data.clone(),
            pool,
            epoch: self.epoch,
        }
    }

    fn event(&self, at: Instant, event: Event) {
        let arrival_us =
            u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(0);
        let _ = self
            .control
            .send(Control::Record(Record::Event { arrival_us, event }));
    }

    /// A participant gave consent (to the text of `text_version`, whose SHA-256 is given):
    /// their taps pass from now on.
    pub fn give_consent(
        &self,
        at: Instant,
        participant: &str,
        text_version: &str,
        text_sha256: &str,
    ) {
        self.event(
            at,
            Event::ConsentGiven {
                participant: participant.to_string(),
                text_version: text_version.to_string(),
                text_sha256: text_sha256.to_string(),
            },
        );
        self.consent_flag(participant)
            .store(true, Ordering::Relaxed);
    }

    /// A participant withdrew consent (or left): nothing more of them passes.
    pub fn withdraw_consent(&self, at: Instant, participant: &str) {
        self.consent_flag(participant)
            .store(false, Ordering::Relaxed);
        self.event(
            at,
            Event::ConsentWithdrawn {
                participant: participant.to_string(),
            },
        );
    }

    /// Whether `participant`'s media is being recorded now.
    pub fn is_recording(&self, participant: &str) -> bool {
        self.consents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(participant)
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Stop: every tap passes nothing more; what was queued is written, then the drop counts
    /// and a `stopped` event; the journal is synced and closed. Waits for the writer (call it
    /// off any thread that must not block). A second call finds nothing to stop.
    pub fn stop(&self, at: Instant) -> Result<Summary, JournalError> {
        for c in self
            .consents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            c.store(false, Ordering::Relaxed);
        }
        let arrival_us =
            u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(0);
        let mut dropped = 0;
        let mut last = Vec::new();
        for t in self.taps.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let n = t.dropped.load(Ordering::Relaxed);
            dropped += n;
            if n > 0 {
                last.push(Record::Event {
                    arrival_us,
                    event: Event::Dropped {
                        track: t.track,
                        packets: n,
                    },
                });
            }
        }
        last.push(Record::Event {
            arrival_us,
            event: Event::Stopped,
        });
        let _ = self.control.send(Control::Stop(last));
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (records, bytes) = match writer {
            Some(w) => w
                .join()
                .map_err(|_| JournalError::Io(std::io::Error::other("the writer panicked")))??,
            None => (0, 0),
        };
        Ok(Summary {
            records,
            dropped,
            bytes,
        })
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop(Vec::new()));
    }
}

fn write_loop(
    mut journal: JournalWriter,
    data: Receiver<Record>,
    control: Receiver<Control>,
    sync_interval: Duration,
) -> Result<(u64, u64), JournalError> {
    let mut records = 0u64;
    let mut last_sync = Instant::now();
    let mut stopping: Option<Vec<Record>> = None;
    let mut pools: HashMap<u16, SyncSender<Vec<u8>>> = HashMap::new();
    // A journaled packet's buffer goes back to its tap (dropped when the pool is full).
    let recycle = |pools: &HashMap<u16, SyncSender<Vec<u8>>>, r: Record| {
        if let Record::Rtp { track, packet, .. } = r
            && let Some(tx) = pools.get(&track)
        {
            let _ = tx.try_send(packet);
        }
    };
    loop {
        let wait = sync_interval.saturating_sub(last_sync.elapsed());
        let next = match data.recv_timeout(wait.min(Duration::from_millis(100))) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                stopping.get_or_insert_with(Vec::new);
                None
            }
        };
        // Control first: a track's declaration precedes its packets.
        while let Ok(c) = control.try_recv() {
            match c {
                Control::Record(r) => {
                    journal.append(&r)?;
                    records += 1;
                }
                Control::Pool(track, tx) => {
                    pools.insert(track, tx);
                }
                Control::Stop(last) => stopping = Some(last),
            }
        }
        if let Some(r) = next {
            journal.append(&r)?;
            records += 1;
            recycle(&pools, r);
        }
        if let Some(last) = stopping {
            // What the taps queued before the stop, then the end.
            while let Ok(r) = data.try_recv() {
                journal.append(&r)?;
                records += 1;
            }
            for r in &last {
                journal.append(r)?;
                records += 1;
            }
            let bytes = journal.finish()?;
            return Ok((records, bytes));
        }
        if last_sync.elapsed() >= sync_interval {
            journal.sync()?;
            last_sync = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::journal::{self, Kind};

    fn setup(queue: usize) -> (std::path::PathBuf, MasterKey, Recording, Instant) {
        let dir = std::env::temp_dir().join(format!(
            "tc-recorder-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal");
        let master = MasterKey::new("m", [1u8; 32]);
        let key = RecordingKey::generate();
        let header = Header {
            recording: "r".into(),
            consultation: "c".into(),
            created_ms: 0,
            key: master.wrap(&key, "r"),
        };
        let epoch = Instant::now();
        let rec = Recording::start(
            &path,
            &header,
            key,
            RecorderConfig {
                queue,
                sync_interval: Duration::from_millis(50),
            },
            epoch,
        )
        .unwrap();
        (path, master, rec, epoch)
    }

    fn info(who: &str) -> TrackInfo {
        TrackInfo {
            participant: who.into(),
            pseudonym: format!("{who} label"),
            kind: Kind::Audio,
            codec: "opus".into(),
            clock_rate: 48_000,
            label: "microphone".into(),
        }
    }

    fn packet(i: u16) -> Vec<u8> {
        let mut p = vec![0x80, 111];
        p.extend_from_slice(&i.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.push(1);
        p
    }

    fn rtp_count(j: &journal::Journal, track: u16) -> usize {
        j.records
            .iter()
            .filter(|r| matches!(r, Record::Rtp { track: t, .. } if *t == track))
            .count()
    }

    #[test]
    fn nothing_passes_before_consent_or_after_withdrawal() {
        let (path, master, rec, epoch) = setup(1024);
        let doc = rec.add_track(info("doc"));
        let pat = rec.add_track(info("pat"));
        let t = |ms| epoch + Duration::from_millis(ms);
        assert!(!doc.rtp(t(1), &packet(0)), "no consent yet");
        rec.give_consent(t(2), "doc", "v1", "aa");
        rec.give_consent(t(2), "pat", "v1", "aa");
        for i in 1..=10 {
            assert!(doc.rtp(t(10 + u64::from(i)), &packet(i)));
            assert!(pat.rtp(t(10 + u64::from(i)), &packet(i)));
        }
        rec.withdraw_consent(t(30), "pat");
        assert!(!rec.is_recording("pat") && rec.is_recording("doc"));
        for i in 11..=20 {
            assert!(doc.rtp(t(30 + u64::from(i)), &packet(i)));
            assert!(!pat.rtp(t(30 + u64::from(i)), &packet(i)));
        }
        let summary = rec.stop(t(100)).unwrap();
        assert_eq!(summary.dropped, 0);
        // A tap of a stopped recording passes nothing and does not panic.
        assert!(!doc.rtp(t(101), &packet(99)));
        let j = journal::read(&path, |k, id| master.unwrap(k, id)).unwrap();
        assert_eq!(rtp_count(&j, doc.track()), 20);
        assert_eq!(rtp_count(&j, pat.track()), 10);
        // Declarations come before packets; the end is recorded.
        let first_rtp = j
            .records
            .iter()
            .position(|r| matches!(r, Record::Rtp { .. }))
            .unwrap();
        let declared = j
            .records
            .iter()
            .filter(|r| matches!(r, Record::Track { .. }))
            .count();
        assert_eq!(declared, 2);
        assert!(
            j.records[..first_rtp]
                .iter()
                .filter(|r| matches!(r, Record::Track { .. }))
                .count()
                >= 1
        );
        assert!(matches!(
            j.records.last(),
            Some(Record::Event {
                event: Event::Stopped,
                ..
            })
        ));
    }

    #[test]
    fn journaled_packets_give_their_buffers_back_to_the_tap() {
        let (_path, _master, rec, epoch) = setup(1024);
        let tap = rec.add_track(info("doc"));
        rec.give_consent(epoch, "doc", "v1", "aa");
        for i in 0..20 {
            assert!(tap.rtp(epoch, &packet(i)));
        }
        // The writer journals them and returns the buffers: the next packets reuse them.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut back = Vec::new();
        while back.len() < 20 && Instant::now() < deadline {
            match tap.pool.recv_timeout(Duration::from_millis(100)) {
                Ok(b) => back.push(b),
                Err(_) => continue,
            }
        }
        assert_eq!(back.len(), 20, "every buffer came back");
        assert!(back.iter().all(|b| b.capacity() >= packet(0).len()));
        rec.stop(epoch + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_never_blocks() {
        let (path, master, rec, epoch) = setup(4);
        let tap = rec.add_track(info("doc"));
        rec.give_consent(epoch, "doc", "v1", "aa");
        let offered = 20_000u16;
        let queued = (0..offered).filter(|i| tap.rtp(epoch, &packet(*i))).count();
        let summary = rec.stop(epoch + Duration::from_secs(1)).unwrap();
        assert_eq!(queued as u64 + summary.dropped, u64::from(offered));
        let j = journal::read(&path, |k, id| master.unwrap(k, id)).unwrap();
        assert_eq!(rtp_count(&j, tap.track()), queued);
        assert!(
            summary.dropped > 0,
            "4 slots cannot hold 20 000 packets offered at once"
        );
        {
            assert!(j.records.iter().any(|r| matches!(r,
                Record::Event { event: Event::Dropped { packets, .. }, .. } if *packets == summary.dropped)));
        }
    }
}
