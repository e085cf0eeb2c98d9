//! The server's recorder (issue 13): carries out what the consultation's consent rules decide
//! (`RecordingEffect`s) with the `recording` crate's journal and the SFU's taps.
//!
//! - **Start**: a new journal `storage.data_dir/recordings/<id>.journal` (sealed in chunks with a
//!   per-recording key wrapped by the documents' master key, `fsync`ed every
//!   `recording.sync_interval_ms`), and the SFU told to tap the consultation's tracks.
//! - **Consent**: the participant's taps pass from now on, or no longer (an atomic flag read per
//!   packet: a withdrawal takes effect with the next packet).
//! - **Stop**: the SFU's taps go, the writer drains its queue, writes the drop counts and a
//!   `stopped` event and closes the journal (on a blocking thread: never under the
//!   consultation's lock).
//!
//! A crash leaves the journal readable up to its last complete chunk: `teleconsult recording
//! export` reads it as it is (the manifest says what was recovered).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use teleconsult_consultation::{ConsultationId, ParticipantId, Recorder, RecordingEffect};
use teleconsult_recording::journal::{self, Header, Kind as JournalKind, TrackInfo};
use teleconsult_recording::{MasterKey, Offer, RecorderConfig, Recording, RecordingKey, Tap};
use teleconsult_sfu::{Kind, Offered, RecordingSink, Sfu, TrackTap};

/// Where a server keeps its recordings' journals.
pub fn journal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("recordings")
}

/// The journal of recording `id` (ids are ours: `rec_` and hex).
pub fn journal_path(data_dir: &Path, id: &str) -> Option<PathBuf> {
    let ok = id.len() > 4
        && id.len() <= 64
        && id.starts_with("rec_")
        && id[4..].bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| journal_dir(data_dir).join(format!("{id}.journal")))
}

/// The master keys that open recordings: the documents' (`documents.master_key`, and the
/// previous ones for recordings made before a rotation).
pub fn master_keys(
    config: &teleconsult_documents::config::DocumentsConfig,
) -> anyhow::Result<Vec<MasterKey>> {
    use base64::Engine as _;
    use crate::config::ExposeSecret as _;
    let decode = |id: &str, b64: &str| -> anyhow::Result<MasterKey> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| anyhow::anyhow!("master key {id}: not base64"))?;
        let key: [u8; 32] = raw
            .try_into()
            .map_err(|_| anyhow::anyhow!("master key {id}: not 32 bytes"))?;
        Ok(MasterKey::new(id, key))
    };
    let mut keys = vec![decode(
        &config.master_key_id,
        config.master_key.expose_secret(),
    )?];
    for k in &config.previous_master_keys {
        keys.push(decode(&k.id, k.key.expose_secret())?);
    }
    Ok(keys)
}

/// One recording in progress.
struct Active {
    id: String,
    recording: Arc<Recording>,
    /// Participant id → the name shown in the call (the manifest's pseudonym).
    labels: Arc<Mutex<HashMap<String, String>>>,
}

/// The recorder the consultation service drives (see the module docs).
pub struct Recordings {
    data_dir: PathBuf,
    master: MasterKey,
    sfu: Sfu,
    config: RecorderConfig,
    /// By consultation id.
    active: Mutex<HashMap<String, Active>>,
}

impl Recordings {
    pub fn new(data_dir: &Path, master: MasterKey, sfu: Sfu, config: RecorderConfig) -> Self {
        Recordings {
            data_dir: data_dir.to_path_buf(),
            master,
            sfu,
            config,
            active: Mutex::new(HashMap::new()),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(
        &self,
        consultation: &ConsultationId,
        id: &str,
        participants: Vec<(ParticipantId, String)>,
    ) -> anyhow::Result<()> {
        let path = journal_path(&self.data_dir, id)
            .ok_or_else(|| anyhow::anyhow!("malformed recording id"))?;
        std::fs::create_dir_all(journal_dir(&self.data_dir))?;
        let key = RecordingKey::generate();
        let header = Header {
            recording: id.to_string(),
            consultation: consultation.to_string(),
            created_ms: teleconsult_consultation::invitation::now_millis(),
            key: self.master.wrap(&key, id),
        };
        let recording = Arc::new(Recording::start(
            &path,
            &header,
            key,
            self.config,
            Instant::now(),
        )?);
        let labels: HashMap<String, String> = participants
            .into_iter()
            .map(|(p, l)| (p.to_string(), l))
            .collect();
        let labels = Arc::new(Mutex::new(labels));
        let sink = Arc::new(Sink {
            recording: recording.clone(),
            labels: labels.clone(),
        });
        self.sfu.start_recording(consultation.as_str(), sink)?;
        if let Some(old) = self.active().insert(
            consultation.to_string(),
            Active {
                id: id.to_string(),
                recording,
                labels,
            },
        ) {
            // (The rules allow one at a time; never the case.)
            finish(old);
        }
        metrics::gauge!(RECORDINGS_ACTIVE).increment(1.0);
        tracing::info!(%consultation, recording = id, "recording started");
        Ok(())
    }
}

/// Gauge: recordings in progress on this server.
pub const RECORDINGS_ACTIVE: &str = "teleconsult_recordings_active";

/// Close a recording's journal off the caller's thread (the writer drains its queue first).
fn finish(active: Active) {
    let Active { id, recording, .. } = active;
    let stop = move || match recording.stop(Instant::now()) {
        Ok(s) => tracing::info!(
            recording = %id,
            records = s.records,
            dropped = s.dropped,
            bytes = s.bytes,
            "recording stopped"
        ),
        Err(e) => tracing::error!(recording = %id, error = %e, "recording could not be closed"),
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(stop);
        }
        Err(_) => stop(),
    }
}

impl Recorder for Recordings {
    fn apply(&self, consultation: &ConsultationId, effect: RecordingEffect) {
        match effect {
            RecordingEffect::Start {
                recording,
                participants,
            } => {
                if let Err(e) = self.start(consultation, &recording, participants) {
                    tracing::error!(%consultation, %recording, error = %e, "cannot start a recording");
                }
            }
            RecordingEffect::Participant {
                recording,
                participant,
                label,
            } => {
                if let Some(a) = self.active().get(consultation.as_str())
                    && a.id == recording
                {
                    a.labels
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(participant.to_string(), label);
                }
            }
            RecordingEffect::Consent {
                recording,
                participant,
                given,
                text_version,
                text_sha256,
            } => {
                let active = self.active();
                let Some(a) = active.get(consultation.as_str()).filter(|a| a.id == recording)
                else {
                    return;
                };
                if given {
                    a.recording.give_consent(
                        Instant::now(),
                        participant.as_str(),
                        &text_version,
                        &text_sha256,
                    );
                } else {
                    a.recording
                        .withdraw_consent(Instant::now(), participant.as_str());
                }
            }
            RecordingEffect::Stop { recording } => {
                let mut active = self.active();
                if active
                    .get(consultation.as_str())
                    .is_some_and(|a| a.id == recording)
                {
                    let a = active.remove(consultation.as_str()).expect("checked above");
                    drop(active);
                    let _ = self.sfu.stop_recording(consultation.as_str());
                    metrics::gauge!(RECORDINGS_ACTIVE).decrement(1.0);
                    finish(a);
                }
            }
        }
    }
}

/// A recording as the SFU sees it.
struct Sink {
    recording: Arc<Recording>,
    labels: Arc<Mutex<HashMap<String, String>>>,
}

impl RecordingSink for Sink {
    fn track(
        &self,
        participant: &str,
        kind: Kind,
        codec: &'static str,
        clock_rate: u32,
    ) -> Box<dyn TrackTap> {
        let pseudonym = self
            .labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(participant)
            .cloned()
            .unwrap_or_default();
        let (kind, label) = match kind {
            Kind::Audio => (JournalKind::Audio, "microphone"),
            Kind::Video => (JournalKind::Video, "camera"),
        };
        Box::new(TapOf(self.recording.add_track(TrackInfo {
            participant: participant.to_string(),
            pseudonym,
            kind,
            codec: codec.to_string(),
            clock_rate,
            label: label.to_string(),
        })))
    }
}

struct TapOf(Tap);

impl TrackTap for TapOf {
    fn rtp(&self, at: Instant, packet: &[u8]) -> Offered {
        match self.0.offer_rtp(at, packet) {
            Offer::Queued => Offered::Queued,
            Offer::Dropped => Offered::Dropped,
            Offer::NoConsent | Offer::Stopped => Offered::Refused,
        }
    }

    fn sender_report(&self, at: Instant, ntp: u64, rtp_timestamp: u32) {
        self.0.sender_report(at, ntp, rtp_timestamp);
    }
}

/// One journal as `teleconsult recording list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listed {
    pub id: String,
    pub consultation: String,
    pub created_ms: i64,
    /// From the first to the last record, seconds.
    pub duration_secs: f64,
    /// The journal ends without a `stopped` event (the server stopped while recording).
    pub interrupted: bool,
    pub bytes: u64,
}

/// Every journal in `data_dir` (newest first), read with `keys`.
pub fn list(data_dir: &Path, keys: &[MasterKey]) -> anyhow::Result<Vec<Listed>> {
    let dir = journal_dir(data_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "journal") {
            continue;
        }
        let bytes = std::fs::metadata(&path)?.len();
        let j = journal::read(&path, |w, id| {
            teleconsult_recording::crypto::unwrap_with(keys, w, id)
        })?;
        let times = j.records.iter().filter_map(|r| match r {
            journal::Record::Rtp { arrival_us, .. }
            | journal::Record::SenderReport { arrival_us, .. }
            | journal::Record::Event { arrival_us, .. } => Some(*arrival_us),
            journal::Record::Track { .. } => None,
        });
        let (lo, hi) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let interrupted = !j.records.iter().any(|r| {
            matches!(
                r,
                journal::Record::Event {
                    event: journal::Event::Stopped,
                    ..
                }
            )
        });
        out.push(Listed {
            id: j.header.recording.clone(),
            consultation: j.header.consultation.clone(),
            created_ms: j.header.created_ms,
            duration_secs: if hi >= lo {
                (hi - lo) as f64 / 1e6
            } else {
                0.0
            },
            interrupted,
            bytes,
        });
    }
    out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Export recording `id` of `data_dir` into `output` (one WebM per participant and
/// `manifest.json`).
pub fn export(
    data_dir: &Path,
    keys: &[MasterKey],
    id: &str,
    output: &Path,
) -> anyhow::Result<teleconsult_recording::Manifest> {
    let path = journal_path(data_dir, id)
        .filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("no recording {id} in {}", data_dir.display()))?;
    let j = journal::read(&path, |w, rid| {
        teleconsult_recording::crypto::unwrap_with(keys, w, rid)
    })?;
    Ok(teleconsult_recording::export(&j, output)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_recording_ids_name_a_journal() {
        let d = Path::new("/d");
        assert_eq!(
            journal_path(d, "rec_00ff"),
            Some(PathBuf::from("/d/recordings/rec_00ff.journal"))
        );
        for bad in ["", "rec_", "../etc", "rec_../../x", "rec_zz", "abc"] {
            assert_eq!(journal_path(d, bad), None, "{bad}");
        }
    }
}
