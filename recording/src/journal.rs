//! The recording journal: what a recording appends while the consultation runs, and what the
//! converter reads afterwards.
//!
//! ```text
//! file   = MAGIC (8 bytes) · header length (u32 BE) · header (JSON) · chunk*
//! chunk  = sealed length (u32 BE) · AES-256-GCM(recording key, nonce = 0u32 · index u64 BE,
//!                                               aad = "tc-recording-chunk" · recording id · index)
//!          of a sequence of records
//! record = tag (u8) · body (see [`Record`])
//! ```
//!
//! Chunks are sealed one by one (at most [`JournalWriter::CHUNK_TARGET`] bytes of records, or
//! whenever the recorder flushes) and `fsync`ed on [`JournalWriter::sync`]. A crash can leave a
//! torn last chunk: the reader stops there and reports it ([`Recovery::torn_tail`]), so a journal is
//! recovered up to its last complete chunk. A chunk that fails authentication anywhere else, or
//! one moved to another index or another recording, is an error: never silently skipped.

use crate::crypto::{RecordingKey, WrappedKey};
use aes_gcm::aead::{Aead, Payload};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

/// First bytes of every journal (format version 1).
pub const MAGIC: &[u8; 8] = b"TCRJRNL1";
const CHUNK_AAD: &[u8] = b"tc-recording-chunk";
/// Largest sealed chunk a reader accepts (a writer never produces more than ~1 MiB).
const MAX_SEALED_CHUNK: usize = 8 << 20;
const MAX_HEADER: usize = 64 << 10;

/// What the plaintext header says about the recording (no health data: ids only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub recording: String,
    pub consultation: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub key: WrappedKey,
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Audio,
    Video,
}

/// A published track as the recording saw it (sealed inside the journal: the pseudonym is
/// health data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackInfo {
    /// The seat id of the publisher (invitation `jti` or account id).
    pub participant: String,
    /// The name shown in the call (the practitioner's pseudonym for a patient).
    pub pseudonym: String,
    pub kind: Kind,
    /// `VP8` or `opus`.
    pub codec: String,
    pub clock_rate: u32,
    /// `camera`, `microphone`, `screen`.
    pub label: String,
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Declares track number `track` (before any of its packets).
    Track { track: u16, info: TrackInfo },
    /// One RTP packet as the publisher sent it (after SRTP, before any rewriting), with its
    /// arrival time in microseconds on the recorder's clock.
    Rtp {
        track: u16,
        arrival_us: u64,
        packet: Vec<u8>,
    },
    /// A sender report of the publisher: its NTP time for an RTP timestamp of the track.
    SenderReport {
        track: u16,
        arrival_us: u64,
        ntp: u64,
        rtp_timestamp: u32,
    },
    /// Something the manifest reports: consent given or withdrawn, packets dropped, the end.
    Event { arrival_us: u64, event: Event },
}

/// Events of a recording, in the order they happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The participant's tracks are recorded from here on (consent text version and its hash).
    ConsentGiven {
        participant: String,
        text_version: String,
        text_sha256: String,
    },
    /// Nothing more of the participant is recorded from here on.
    ConsentWithdrawn { participant: String },
    /// The recorder could not keep up and dropped `packets` of `track` (its queue was full).
    Dropped { track: u16, packets: u64 },
    /// The recording stopped normally.
    Stopped,
}

const TAG_TRACK: u8 = 1;
const TAG_RTP: u8 = 2;
const TAG_SR: u8 = 3;
const TAG_EVENT: u8 = 4;

/// Why a journal cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a recording journal (bad magic)")]
    BadMagic,
    #[error("journal header: {0}")]
    BadHeader(String),
    #[error("chunk {0} failed authentication (corrupted, or moved from another journal)")]
    Corrupt(u64),
    #[error("chunk {0}: malformed record")]
    BadRecord(u64),
    #[error("record too large for a journal entry")]
    TooLarge,
    #[error("the recording key: {0}")]
    Key(#[from] crate::crypto::KeyError),
}

fn nonce(index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}

fn aad(recording: &str, index: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(CHUNK_AAD.len() + recording.len() + 8);
    a.extend_from_slice(CHUNK_AAD);
    a.extend_from_slice(recording.as_bytes());
    a.extend_from_slice(&index.to_be_bytes());
    a
}

fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), JournalError> {
    let len16 = |n: usize| u16::try_from(n).map_err(|_| JournalError::TooLarge);
    match record {
        Record::Track { track, info } => {
            let json = serde_json::to_vec(info).map_err(|_| JournalError::TooLarge)?;
            out.push(TAG_TRACK);
            out.extend_from_slice(&track.to_be_bytes());
            out.extend_from_slice(&len16(json.len())?.to_be_bytes());
            out.extend_from_slice(&json);
        }
        Record::Rtp {
            track,
            arrival_us,
            packet,
        } => {
            out.push(TAG_RTP);
            out.extend_from_slice(&track.to_be_bytes());
            out.extend_from_slice(&arrival_us.to_be_bytes());
            out.extend_from_slice(&len16(packet.len())?.to_be_bytes());
            out.extend_from_slice(packet);
        }
        Record::SenderReport {
            track,
            arrival_us,
            ntp,
            rtp_timestamp,
        } => {
            out.push(TAG_SR);
            out.extend_from_slice(&track.to_be_bytes());
            out.extend_from_slice(&arrival_us.to_be_bytes());
            out.extend_from_slice(&ntp.to_be_bytes());
            out.extend_from_slice(&rtp_timestamp.to_be_bytes());
        }
        Record::Event { arrival_us, event } => {
            let json = serde_json::to_vec(event).map_err(|_| JournalError::TooLarge)?;
            out.push(TAG_EVENT);
            out.extend_from_slice(&arrival_us.to_be_bytes());
            out.extend_from_slice(&len16(json.len())?.to_be_bytes());
            out.extend_from_slice(&json);
        }
    }
    Ok(())
}

/// A cursor over one chunk's plaintext.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
}

fn decode(c: &mut Cursor<'_>) -> Option<Record> {
    Some(match c.u8()? {
        TAG_TRACK => {
            let track = c.u16()?;
            let len = usize::from(c.u16()?);
            let info = serde_json::from_slice(c.take(len)?).ok()?;
            Record::Track { track, info }
        }
        TAG_RTP => {
            let track = c.u16()?;
            let arrival_us = c.u64()?;
            let len = usize::from(c.u16()?);
            Record::Rtp {
                track,
                arrival_us,
                packet: c.take(len)?.to_vec(),
            }
        }
        TAG_SR => Record::SenderReport {
            track: c.u16()?,
            arrival_us: c.u64()?,
            ntp: c.u64()?,
            rtp_timestamp: c.u32()?,
        },
        TAG_EVENT => {
            let arrival_us = c.u64()?;
            let len = usize::from(c.u16()?);
            let event = serde_json::from_slice(c.take(len)?).ok()?;
            Record::Event { arrival_us, event }
        }
        _ => return None,
    })
}

/// Appends records to a journal file, sealing them in chunks.
pub struct JournalWriter {
    file: File,
    recording: String,
    key: RecordingKey,
    pending: Vec<u8>,
    next_chunk: u64,
    bytes_written: u64,
}

impl JournalWriter {
    /// Records are sealed into a chunk once this many bytes are pending.
    pub const CHUNK_TARGET: usize = 64 * 1024;

    /// Create the journal at `path` (which must not exist) and write its header, synced.
    pub fn create(path: &Path, header: &Header, key: RecordingKey) -> Result<Self, JournalError> {
        let mut file = File::options().write(true).create_new(true).open(path)?;
        let json =
            serde_json::to_vec(header).map_err(|e| JournalError::BadHeader(e.to_string()))?;
        let mut head = Vec::with_capacity(12 + json.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(json.len() as u32).to_be_bytes());
        head.extend_from_slice(&json);
        file.write_all(&head)?;
        file.sync_all()?;
        Ok(JournalWriter {
            file,
            recording: header.recording.clone(),
            key,
            pending: Vec::with_capacity(Self::CHUNK_TARGET + 2048),
            next_chunk: 0,
            bytes_written: head.len() as u64,
        })
    }

    /// Append one record; a full chunk is sealed and written (not yet synced).
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        encode(record, &mut self.pending)?;
        if self.pending.len() >= Self::CHUNK_TARGET {
            self.seal()?;
        }
        Ok(())
    }

    /// Seal what is pending into a chunk and write it.
    pub fn seal(&mut self) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let index = self.next_chunk;
        let aad = aad(&self.recording, index);
        let sealed = self
            .key
            .cipher()
            .encrypt(
                (&nonce(index)).into(),
                Payload {
                    msg: &self.pending,
                    aad: &aad,
                },
            )
            .map_err(|_| JournalError::TooLarge)?;
        let mut out = Vec::with_capacity(4 + sealed.len());
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);
        self.file.write_all(&out)?;
        self.bytes_written += out.len() as u64;
        self.pending.clear();
        self.next_chunk += 1;
        Ok(())
    }

    /// Seal what is pending and `fsync`: everything appended so far survives a crash.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.seal()?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Bytes on disk so far (header and sealed chunks).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Seal, sync and close.
    pub fn finish(mut self) -> Result<u64, JournalError> {
        self.sync()?;
        Ok(self.bytes_written)
    }
}

/// How much of a journal could be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Complete chunks read.
    pub chunks: u64,
    /// The file ended inside a chunk (a crash while writing it): what it held is lost, and only
    /// what the last complete chunk held was recovered.
    pub torn_tail: bool,
}

/// A journal read back: its header, every record of its complete chunks, and how it ended.
#[derive(Debug)]
pub struct Journal {
    pub header: Header,
    pub records: Vec<Record>,
    pub recovery: Recovery,
}

/// Read only the plaintext header (ids, the wrapped key), e.g. for listing.
pub fn read_header(path: &Path) -> Result<Header, JournalError> {
    let mut r = BufReader::new(File::open(path)?);
    header_from(&mut r)
}

fn header_from(r: &mut impl Read) -> Result<Header, JournalError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| JournalError::BadMagic)?;
    if &magic != MAGIC {
        return Err(JournalError::BadMagic);
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(JournalError::BadHeader("too large".into()));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json)?;
    serde_json::from_slice(&json).map_err(|e| JournalError::BadHeader(e.to_string()))
}

/// Read a journal whose key `unwrap` opens (given the header's wrapped key).
pub fn read(
    path: &Path,
    unwrap: impl FnOnce(&WrappedKey, &str) -> Result<RecordingKey, crate::crypto::KeyError>,
) -> Result<Journal, JournalError> {
    let mut r = BufReader::new(File::open(path)?);
    let header = header_from(&mut r)?;
    let key = unwrap(&header.key, &header.recording)?;
    let cipher = key.cipher();
    let mut records = Vec::new();
    let mut recovery = Recovery::default();
    loop {
        let mut len = [0u8; 4];
        match read_full(&mut r, &mut len)? {
            0 => break,
            4 => {}
            _ => {
                recovery.torn_tail = true;
                break;
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_SEALED_CHUNK {
            return Err(JournalError::Corrupt(recovery.chunks));
        }
        let mut sealed = vec![0u8; len];
        if read_full(&mut r, &mut sealed)? < len {
            recovery.torn_tail = true;
            break;
        }
        let index = recovery.chunks;
        let plain = cipher
            .decrypt(
                (&nonce(index)).into(),
                Payload {
                    msg: &sealed,
                    aad: &aad(&header.recording, index),
                },
            )
            .map_err(|_| JournalError::Corrupt(index))?;
        let mut c = Cursor(&plain);
        while !c.0.is_empty() {
            records.push(decode(&mut c).ok_or(JournalError::BadRecord(index))?);
        }
        recovery.chunks += 1;
    }
    Ok(Journal {
        header,
        records,
        recovery,
    })
}

/// Read as much of `buf` as the file still has; the count read (short only at the end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, std::io::Error> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tc-journal-{name}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("journal")
    }

    fn master() -> MasterKey {
        MasterKey::new("k1", [7u8; 32])
    }

    fn header(master: &MasterKey) -> (Header, RecordingKey) {
        let key = RecordingKey::generate();
        let wrapped = master.wrap(&key, "rec-1");
        (
            Header {
                recording: "rec-1".into(),
                consultation: "c-1".into(),
                created_ms: 1,
                key: wrapped,
            },
            key,
        )
    }

    fn rtp(i: u16) -> Record {
        Record::Rtp {
            track: 1,
            arrival_us: u64::from(i) * 20_000,
            packet: vec![
                0x80,
                111,
                (i >> 8) as u8,
                i as u8,
                1,
                2,
                3,
                4,
                9,
                9,
                9,
                9,
                0xab,
            ],
        }
    }

    #[test]
    fn records_round_trip_and_nothing_is_plaintext() {
        let m = master();
        let (h, key) = header(&m);
        let path = temp("rt");
        let mut w = JournalWriter::create(&path, &h, key).unwrap();
        let info = TrackInfo {
            participant: "jti-1".into(),
            pseudonym: "Mrs Secret".into(),
            kind: Kind::Audio,
            codec: "opus".into(),
            clock_rate: 48_000,
            label: "microphone".into(),
        };
        let mut written = vec![Record::Track { track: 1, info }];
        written.extend((0..5000).map(rtp));
        written.push(Record::SenderReport {
            track: 1,
            arrival_us: 5,
            ntp: 0xdead_beef_0000_0001,
            rtp_timestamp: 77,
        });
        written.push(Record::Event {
            arrival_us: 6,
            event: Event::Stopped,
        });
        for r in &written {
            w.append(r).unwrap();
        }
        w.finish().unwrap();
        let raw = std::fs::read(&path).unwrap();
        assert!(
            !raw.windows(10).any(|w| w == b"Mrs Secret"),
            "the pseudonym is sealed"
        );
        let j = read(&path, |k, id| m.unwrap(k, id)).unwrap();
        assert_eq!(j.records, written);
        assert!(!j.recovery.torn_tail);
        assert!(
            j.recovery.chunks > 1,
            "several chunks: {}",
            j.recovery.chunks
        );
    }

    #[test]
    fn a_torn_last_chunk_is_recovered_up_to_the_last_complete_one() {
        let m = master();
        let (h, key) = header(&m);
        let path = temp("torn");
        let mut w = JournalWriter::create(&path, &h, key).unwrap();
        for i in 0..100 {
            w.append(&rtp(i)).unwrap();
        }
        w.sync().unwrap();
        let synced = w.bytes_written();
        for i in 100..200 {
            w.append(&rtp(i)).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        // Cut the file in the middle of the second chunk: as if the machine died writing it.
        let f = File::options().write(true).open(&path).unwrap();
        f.set_len(synced + 40).unwrap();
        let j = read(&path, |k, id| m.unwrap(k, id)).unwrap();
        assert!(j.recovery.torn_tail);
        assert_eq!(j.recovery.chunks, 1);
        assert_eq!(j.records, (0..100).map(rtp).collect::<Vec<_>>());
        // A cut inside the length prefix too.
        f.set_len(synced + 2).unwrap();
        let j = read(&path, |k, id| m.unwrap(k, id)).unwrap();
        assert!(j.recovery.torn_tail);
        assert_eq!(j.records.len(), 100);
    }

    #[test]
    fn a_flipped_byte_or_a_foreign_key_is_an_error_never_silently_skipped() {
        let m = master();
        let (h, key) = header(&m);
        let path = temp("flip");
        let mut w = JournalWriter::create(&path, &h, key).unwrap();
        for i in 0..10 {
            w.append(&rtp(i)).unwrap();
        }
        w.sync().unwrap();
        for i in 10..20 {
            w.append(&rtp(i)).unwrap();
        }
        w.finish().unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        let header_len = 12 + u32::from_be_bytes(raw[8..12].try_into().unwrap()) as usize;
        raw[header_len + 10] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(
            read(&path, |k, id| m.unwrap(k, id)),
            Err(JournalError::Corrupt(0))
        ));
        raw[header_len + 10] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        let other = MasterKey::new("k1", [8u8; 32]);
        assert!(matches!(
            read(&path, |k, id| other.unwrap(k, id)),
            Err(JournalError::Key(_))
        ));
        // The wrapped key names its recording: a header moved onto another journal fails.
        assert!(m.unwrap(&h.key, "rec-2").is_err());
        std::fs::write(&path, b"not a journal at all").unwrap();
        assert!(matches!(
            read(&path, |k, id| m.unwrap(k, id)),
            Err(JournalError::BadMagic)
        ));
    }
}
