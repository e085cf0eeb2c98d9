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
use teleconsult_store::{RecordingRecord, Store};

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
    use crate::config::ExposeSecret as _;
    use base64::Engine as _;
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
    /// Where finished journals go.
    store: Arc<dyn Store>,
    /// By consultation id.
    active: Mutex<HashMap<String, Active>>,
}

impl Recordings {
    pub fn new(
        data_dir: &Path,
        master: MasterKey,
        sfu: Sfu,
        config: RecorderConfig,
        store: Arc<dyn Store>,
    ) -> Self {
        Recordings {
            data_dir: data_dir.to_path_buf(),
            master,
            sfu,
            config,
            store,
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
            self.finish(old);
        }
        metrics::gauge!(RECORDINGS_ACTIVE).increment(1.0);
        tracing::info!(%consultation, recording = id, "recording started");
        Ok(())
    }
}

/// Gauge: recordings in progress on this server.
pub const RECORDINGS_ACTIVE: &str = "teleconsult_recordings_active";

impl Recordings {
    /// Close a recording's journal off the caller's thread (the writer drains its queue
    /// first), then move it into the store.
    fn finish(&self, active: Active) {
        let Active { id, recording, .. } = active;
        let (store, data_dir) = (self.store.clone(), self.data_dir.clone());
        let keys = vec![self.master.clone()];
        let rid = id.clone();
        let stop = move || match recording.stop(Instant::now()) {
            Ok(s) => tracing::info!(
                recording = %rid,
                records = s.records,
                dropped = s.dropped,
                bytes = s.bytes,
                "recording stopped"
            ),
            Err(e) => {
                tracing::error!(recording = %rid, error = %e, "recording could not be closed")
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    // Stored even if it could not be closed cleanly: what it holds is kept.
                    let _ = tokio::task::spawn_blocking(stop).await;
                    if let Some(path) = journal_path(&data_dir, &id) {
                        match store_journal(&*store, &path, &keys).await {
                            Ok(r) => {
                                tracing::info!(recording = %r.id, bytes = r.bytes, "recording stored")
                            }
                            Err(e) => tracing::error!(recording = %id, error = %e,
                                "recording not stored yet (kept on disk; stored at the next start)"),
                        }
                    }
                });
            }
            Err(_) => {
                stop();
            }
        }
    }
}

/// Pieces the journal is streamed to the store in.
const UPLOAD_PIECE: usize = 64 << 10;

/// Move the journal at `path` into the store (its record from its plaintext header and how it
/// ends), then remove the local file. The bytes stored are the sealed journal as written.
pub async fn store_journal(
    store: &dyn Store,
    path: &Path,
    keys: &[MasterKey],
) -> anyhow::Result<RecordingRecord> {
    let (p, k) = (path.to_path_buf(), keys.to_vec());
    let (header, (interrupted, duration_ms), bytes) = tokio::task::spawn_blocking(move || {
        let header = journal::read_header(&p)?;
        let bytes = std::fs::metadata(&p)?.len();
        Ok::<_, anyhow::Error>((header, summarise(&p, &k)?, bytes))
    })
    .await??;
    let record = RecordingRecord {
        id: header.recording.clone(),
        consultation: header.consultation.clone(),
        created_at: header.created_ms,
        stored_at: teleconsult_consultation::invitation::now_millis(),
        bytes,
        duration_ms,
        interrupted,
    };
    let file = tokio::fs::File::open(path).await?;
    let body = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; UPLOAD_PIECE];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e.to_string()), f)),
        }
    });
    store
        .put_recording(&record, futures_util::StreamExt::boxed(body))
        .await?;
    tokio::fs::remove_file(path).await?;
    Ok(record)
}

/// At start-up: move every journal left in `data_dir` (a crash while recording, or a store that
/// was unreachable when one ended) into the store. Returns how many were stored.
pub async fn recover(store: &dyn Store, data_dir: &Path, keys: &[MasterKey]) -> usize {
    let dir = journal_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut stored = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "journal") {
            continue;
        }
        match store_journal(store, &path, keys).await {
            Ok(r) => {
                stored += 1;
                tracing::info!(recording = %r.id, interrupted = r.interrupted, bytes = r.bytes, "recording recovered and stored");
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "a recording left on disk could not be stored (kept)")
            }
        }
    }
    stored
}

/// The retention period (days; 0: kept) of a recording of a consultation of `organisation`.
pub fn retention_days(config: &crate::config::RecordingConfig, organisation: Option<&str>) -> u64 {
    organisation
        .and_then(|o| config.retention_days_by_organisation.get(o).copied())
        .unwrap_or(config.retention_days)
}

/// Delete the stored recordings past their organisation's retention period
/// (`recording.retention_days_by_organisation`, else `recording.retention_days`), each audited
/// as `recording.delete` by `system`. Returns how many were deleted.
pub async fn apply_retention(
    store: &dyn Store,
    config: &crate::config::RecordingConfig,
    now_ms: i64,
) -> anyhow::Result<usize> {
    if config.retention_days == 0
        && config
            .retention_days_by_organisation
            .values()
            .all(|d| *d == 0)
    {
        return Ok(0);
    }
    let mut deleted = 0;
    let mut organisations: HashMap<String, Option<String>> = HashMap::new();
    for r in store.recordings(None).await? {
        let organisation = match organisations.get(&r.consultation) {
            Some(o) => o.clone(),
            None => {
                let o = store
                    .scheduled_consultation(&r.consultation)
                    .await?
                    .map(|c| c.organisation);
                organisations.insert(r.consultation.clone(), o.clone());
                o
            }
        };
        let days = retention_days(config, organisation.as_deref());
        if days == 0 {
            continue;
        }
        let keep_ms = i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        if r.created_at >= now_ms.saturating_sub(keep_ms) {
            continue;
        }
        match store.delete_recording(&r.id).await {
            Ok(()) | Err(teleconsult_store::StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        store
            .record_audit(&teleconsult_store::AuditEvent {
                id: format!("a{:032x}", rand::random::<u128>()),
                at: now_ms,
                actor: "system".into(),
                action: "recording.delete".into(),
                consultation: Some(r.consultation.clone()),
                target: Some(r.id.clone()),
            })
            .await?;
        tracing::info!(recording = %r.id, "recording deleted: past its retention period");
        deleted += 1;
    }
    Ok(deleted)
}

/// Apply the retention periods now and then hourly, for as long as the server runs.
pub fn start_retention(store: Arc<dyn Store>, config: crate::config::RecordingConfig) {
    if config.retention_days == 0
        && config
            .retention_days_by_organisation
            .values()
            .all(|d| *d == 0)
    {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let now = teleconsult_consultation::invitation::now_millis();
            if let Err(e) = apply_retention(&*store, &config, now).await {
                tracing::warn!(error = %e, "recording retention: will retry in an hour");
            }
        }
    });
}

/// How a journal ends: whether without a `stopped` event (the server stopped while
/// recording), and its span (first to last record), milliseconds.
fn summarise(path: &Path, keys: &[MasterKey]) -> anyhow::Result<(bool, i64)> {
    let j = journal::read(path, |w, id| {
        teleconsult_recording::crypto::unwrap_with(keys, w, id)
    })?;
    let times = j.records.iter().filter_map(|r| match r {
        journal::Record::Rtp { arrival_us, .. }
        | journal::Record::SenderReport { arrival_us, .. }
        | journal::Record::Event { arrival_us, .. } => Some(*arrival_us),
        journal::Record::Track { .. } => None,
    });
    let (lo, hi) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let span_ms = if hi >= lo {
        ((hi - lo) / 1000) as i64
    } else {
        0
    };
    let interrupted = !j.records.iter().any(|r| {
        matches!(
            r,
            journal::Record::Event {
                event: journal::Event::Stopped,
                ..
            }
        )
    });
    Ok((interrupted, span_ms))
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
                let Some(a) = active
                    .get(consultation.as_str())
                    .filter(|a| a.id == recording)
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
                    self.finish(a);
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

/// One recording as `teleconsult recording list` shows it.
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
    /// In the store (else still on this node's disk: being recorded, or not stored yet).
    pub stored: bool,
}

/// Every recording: those in the store, then journals still on disk in `data_dir` (newest
/// first within each).
pub async fn list(
    store: &dyn Store,
    data_dir: &Path,
    keys: &[MasterKey],
) -> anyhow::Result<Vec<Listed>> {
    let mut out: Vec<Listed> = store
        .recordings(None)
        .await?
        .into_iter()
        .rev()
        .map(|r| Listed {
            id: r.id,
            consultation: r.consultation,
            created_ms: r.created_at,
            duration_secs: r.duration_ms as f64 / 1000.0,
            interrupted: r.interrupted,
            bytes: r.bytes,
            stored: true,
        })
        .collect();
    let dir = journal_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e.flatten().map(|e| e.path()).collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut local = Vec::new();
    for path in entries {
        if path.extension().is_none_or(|e| e != "journal") {
            continue;
        }
        let header = journal::read_header(&path)?;
        if out.iter().any(|l| l.id == header.recording) {
            continue; // stored; the local copy was about to go
        }
        let (interrupted, duration_ms) = summarise(&path, keys)?;
        local.push(Listed {
            id: header.recording,
            consultation: header.consultation,
            created_ms: header.created_ms,
            duration_secs: duration_ms as f64 / 1000.0,
            interrupted,
            bytes: std::fs::metadata(&path)?.len(),
            stored: false,
        });
    }
    local.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
    out.extend(local);
    Ok(out)
}

/// Export recording `id` (from the store, or from `data_dir` while not stored yet) into
/// `output`: one WebM file per participant and `manifest.json`.
pub async fn export(
    store: &dyn Store,
    data_dir: &Path,
    keys: &[MasterKey],
    id: &str,
    output: &Path,
) -> anyhow::Result<teleconsult_recording::Manifest> {
    let local =
        journal_path(data_dir, id).ok_or_else(|| anyhow::anyhow!("not a recording id: {id}"))?;
    std::fs::create_dir_all(output)?;
    let (path, temporary) = if store.recording(id).await?.is_some() {
        let tmp = output.join(format!(".{id}.journal"));
        let mut f = tokio::fs::File::create(&tmp).await?;
        let mut body = store.recording_body(id);
        while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
            tokio::io::AsyncWriteExt::write_all(&mut f, &chunk?).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut f).await?;
        (tmp, true)
    } else if local.exists() {
        (local, false)
    } else {
        anyhow::bail!("no recording {id}");
    };
    let (k, out, p) = (keys.to_vec(), output.to_path_buf(), path.clone());
    let result = tokio::task::spawn_blocking(move || {
        let j = journal::read(&p, |w, rid| {
            teleconsult_recording::crypto::unwrap_with(&k, w, rid)
        })?;
        Ok::<_, anyhow::Error>(teleconsult_recording::export(&j, &out)?)
    })
    .await?;
    if temporary {
        let _ = std::fs::remove_file(&path);
    }
    result
}

/// The composite of an export in `dir` (issue 13, optional): every participant's video side by
/// side (each scaled to 360 px high, black before it starts and after it ends) and every
/// participant's audio mixed, each placed at its start offset on the manifest's one timeline,
/// rendered by ffmpeg (Debian's package) into `dir/composite.webm` (VP8 + Opus). Returns its
/// path. ffmpeg reads only the exported files; nothing leaves `dir`.
pub async fn composite(
    dir: &Path,
    manifest: &teleconsult_recording::Manifest,
) -> anyhow::Result<PathBuf> {
    use std::fmt::Write as _;
    use teleconsult_recording::journal::Kind;
    let has = |p: &teleconsult_recording::export::ParticipantManifest, k: Kind| {
        p.tracks.iter().any(|t| t.kind == k && t.packets > 0)
    };
    let parts: Vec<_> = manifest
        .participants
        .iter()
        .filter(|p| has(p, Kind::Video) || has(p, Kind::Audio))
        .collect();
    anyhow::ensure!(!parts.is_empty(), "nothing recorded: no composite");
    let end_ms = parts
        .iter()
        .map(|p| p.start_offset_ms + p.duration_ms)
        .fold(0.0f64, f64::max);
    let mut args: Vec<String> = vec!["-v".into(), "error".into(), "-y".into()];
    for p in &parts {
        args.push("-i".into());
        args.push(dir.join(&p.file).to_string_lossy().into_owned());
    }
    let (mut filter, mut videos, mut audios) = (String::new(), Vec::new(), Vec::new());
    for (i, p) in parts.iter().enumerate() {
        let start = p.start_offset_ms.max(0.0) / 1000.0;
        let after = (end_ms - p.start_offset_ms - p.duration_ms).max(0.0) / 1000.0;
        if has(p, Kind::Video) {
            let _ = write!(
                filter,
                "[{i}:v]scale=-2:360,setsar=1,fps=30,tpad=start_duration={start:.3}:stop_duration={after:.3}:color=black[v{i}];"
            );
            videos.push(format!("[v{i}]"));
        }
        if has(p, Kind::Audio) {
            let delay = (p.start_offset_ms.max(0.0)).round() as u64;
            let _ = write!(filter, "[{i}:a]adelay={delay}:all=1[a{i}];");
            audios.push(format!("[a{i}]"));
        }
    }
    match videos.len() {
        0 => {}
        1 => {
            let _ = write!(filter, "{}null[v];", videos[0]);
        }
        n => {
            let _ = write!(filter, "{}hstack=inputs={n}[v];", videos.concat());
        }
    }
    match audios.len() {
        0 => {}
        1 => {
            let _ = write!(filter, "{}anull[a];", audios[0]);
        }
        n => {
            let _ = write!(
                filter,
                "{}amix=inputs={n}:duration=longest:normalize=0[a];",
                audios.concat()
            );
        }
    }
    args.push("-filter_complex".into());
    args.push(filter.trim_end_matches(';').to_string());
    if !videos.is_empty() {
        args.extend(
            [
                "-map",
                "[v]",
                "-c:v",
                "libvpx",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
            ]
            .map(String::from),
        );
        args.extend(["-b:v", "1500k"].map(String::from));
    }
    if !audios.is_empty() {
        args.extend(["-map", "[a]", "-c:a", "libopus", "-b:a", "64k"].map(String::from));
    }
    let out = dir.join("composite.webm");
    args.push("-t".into());
    args.push(format!("{:.3}", end_ms / 1000.0));
    args.push(out.to_string_lossy().into_owned());
    let result = tokio::process::Command::new("ffmpeg")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("the composite needs ffmpeg (apt-get install ffmpeg): {e}"))?;
    anyhow::ensure!(
        result.status.success(),
        "ffmpeg could not render the composite: {}",
        String::from_utf8_lossy(&result.stderr).trim()
    );
    Ok(out)
}

/// One recording exported for playback: its files in memory, by name (`manifest.json` among
/// them), and the manifest's participants for the list.
pub struct Exported {
    pub files: Vec<(String, bytes::Bytes)>,
    pub participants: Vec<teleconsult_recording::export::ParticipantManifest>,
}

impl Exported {
    fn weight(&self) -> u32 {
        let total: usize = self.files.iter().map(|(_, b)| b.len()).sum();
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    pub fn file(&self, name: &str) -> Option<&bytes::Bytes> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }
}

/// Exported recordings for the practitioner's page (playback and download with Range): a
/// recording is exported once from its sealed journal and kept **in memory only** (never as
/// plaintext files on disk: the export's scratch directory is removed before anything is
/// served), bounded by `recording.playback_cache_mib` and dropped after
/// `recording.playback_idle_secs` without a request. Concurrent requests for one recording
/// share one export (`moka`'s `try_get_with`).
#[derive(Clone)]
pub struct Playback {
    cache: moka::future::Cache<String, Arc<Exported>>,
    scratch: PathBuf,
}

impl Playback {
    pub fn new(data_dir: &Path, max_bytes: u64, idle: std::time::Duration) -> Playback {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &String, v: &Arc<Exported>| v.weight())
            .time_to_idle(idle)
            .build();
        let scratch = data_dir.join("playback-scratch");
        // Left by a crash in the middle of an export: plaintext media, removed at start.
        let _ = std::fs::remove_dir_all(&scratch);
        Playback { cache, scratch }
    }

    /// Recording `id` exported (from the cache, or now).
    pub async fn get(
        &self,
        store: &dyn Store,
        data_dir: &Path,
        keys: &[MasterKey],
        id: &str,
    ) -> Result<Arc<Exported>, Arc<anyhow::Error>> {
        use std::os::unix::fs::DirBuilderExt as _;
        // Only this process's user may look into the scratch space while an export runs.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.scratch)
            .map_err(|e| Arc::new(anyhow::Error::from(e)))?;
        let scratch = self
            .scratch
            .join(format!("{id}-{:08x}", rand::random::<u32>()));
        self.cache
            .try_get_with(id.to_string(), async {
                let result = export(store, data_dir, keys, id, &scratch).await;
                let read = match result {
                    Ok(manifest) => read_export(&scratch, manifest).await,
                    Err(e) => Err(e),
                };
                let _ = tokio::fs::remove_dir_all(&scratch).await;
                read.map(Arc::new)
            })
            .await
    }

    /// Forget recording `id` (deleted).
    pub async fn forget(&self, id: &str) {
        self.cache.invalidate(id).await;
    }
}

async fn read_export(
    dir: &Path,
    manifest: teleconsult_recording::Manifest,
) -> anyhow::Result<Exported> {
    let mut files = Vec::new();
    for p in &manifest.participants {
        let body = tokio::fs::read(dir.join(&p.file)).await?;
        files.push((p.file.clone(), bytes::Bytes::from(body)));
    }
    let body = tokio::fs::read(dir.join("manifest.json")).await?;
    files.push(("manifest.json".to_string(), bytes::Bytes::from(body)));
    Ok(Exported {
        files,
        participants: manifest.participants,
    })
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
