//! Billing: the billing clock, its durability (checkpoints, crash recovery, an on-disk queue for
//! storage outages) and the export formats. Rules and columns: `docs/billing.md`.
//!
//! The clock ([`BillingClock`]) is a pure state machine with time passed in: the consultation
//! service tells it who is present after every change ([`BillingClock::observe`]) and a timer
//! asks it to checkpoint ([`BillingClock::checkpoint`]); it answers with [`Op`]s to persist. It
//! never reads a clock, never does I/O, and is unit-tested on synthetic times.
//!
//! [`Billing`] owns one clock per live consultation and a writer task that applies the ops to the
//! [`Store`] in order. When the store is unavailable, ops go to an append-only, fsync'd JSON-lines
//! file in `storage.data_dir` ([`OutageQueue`]) and are replayed in order when it is back. Every
//! op is an upsert by an id we chose, so a replay (after an outage, after a crash) never counts
//! twice.

pub mod config;

use crate::config::{BillingConfig, Rounding};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use teleconsult_consultation::Presence;
use teleconsult_consultation::{ConsultationId, Observer, Role};
use teleconsult_store::{
    AuditEvent, BillingInterval, ConsultationSummary, Millis, PresenceInterval, Store, StoreError,
};
use tokio::sync::mpsc;

/// Metric: events waiting in the on-disk outage queue.
pub const QUEUE_GAUGE: &str = "teleconsult_billing_queue_events";
/// Metric: events that could not be written to the outage queue (the disk full, an I/O
/// error); the queue stays readable and takes events again once the disk does.
pub const QUEUE_WRITE_ERRORS: &str = "teleconsult_billing_queue_write_errors_total";
/// Metric: events dropped because the outage queue was full.
pub const QUEUE_DROPPED: &str = "teleconsult_billing_queue_dropped_total";
/// Metric: events dropped because the in-memory channel to the writer was full
/// ([`WRITER_CHANNEL`]: the writer stalled on the store for that long; counted apart from
/// [`QUEUE_DROPPED`]).
pub const CHANNEL_DROPPED: &str = "teleconsult_billing_channel_dropped_total";
/// Events that may wait in memory for the writer. The writer waits on the store at most one
/// store timeout before it spills to the on-disk queue, so this only fills if thousands of
/// billing changes arrive within that time; the consultation (which holds its lock while
/// calling in) never waits: past it, an event is dropped, logged and counted, as the on-disk
/// queue does past `billing.outage_queue_max_events`.
pub const WRITER_CHANNEL: usize = 10_000;
/// Metric: store writes by result (`ok`, `queued`, `failed`).
pub const WRITES: &str = "teleconsult_billing_writes_total";

/// How long one store call may take before the store counts as unavailable.
const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a non-empty outage queue is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch, now — on a monotonic clock: the wall clock is read once
/// per process and the time since then taken from the monotonic clock. Billing measures
/// durations as differences of these, so the system clock stepped forward or back (by an
/// operator, or NTP correcting a bad start) changes no billed duration; the price is that
/// the times written are off by such a step until the next start (a step of the wall clock is
/// logged by the host, and the durations are what is billed).
pub fn now_ms() -> Millis {
    static ANCHOR: std::sync::OnceLock<(Millis, std::time::Instant)> = std::sync::OnceLock::new();
    let (wall, at) = ANCHOR.get_or_init(|| (wall_ms(), std::time::Instant::now()));
    anchored(*wall, *at, std::time::Instant::now())
}

/// The wall clock, milliseconds since the Unix epoch.
fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// `wall` (the wall clock read at `at`) advanced by the monotonic time from `at` to `now`.
fn anchored(wall: Millis, at: std::time::Instant, now: std::time::Instant) -> Millis {
    wall.saturating_add(now.saturating_duration_since(at).as_millis() as Millis)
}

/// The stable pseudonym of a patient in a consultation: `pt-` and 12 hex digits of
/// HMAC-SHA256(secret, consultation ‖ 0 ‖ identity). The same person in the same consultation
/// always gets the same pseudonym; it reveals nothing about the name without the secret.
pub fn patient_pseudonym(secret: &[u8], consultation: &str, identity: &str) -> String {
    keyed_hash(
        secret,
        "pt-",
        &[
            b"teleconsult-patient-pseudonym",
            consultation.as_bytes(),
            identity.as_bytes(),
        ],
    )
}

/// A practitioner's pseudonym in the audit log (`pr-` and 12 hex digits, keyed like
/// [`patient_pseudonym`]): the audit log carries no names.
pub fn practitioner_pseudonym(secret: &[u8], identity: &str) -> String {
    keyed_hash(
        secret,
        "pr-",
        &[b"teleconsult-practitioner-pseudonym", identity.as_bytes()],
    )
}

fn keyed_hash(secret: &[u8], prefix: &str, parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part);
    }
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(15);
    out.push_str(prefix);
    for b in &digest[..6] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// One thing to persist, in order. Serialised as one JSON line in the outage queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Billing {
        interval: BillingInterval,
    },
    Presence {
        interval: PresenceInterval,
    },
    /// The clock's view of the summary; the writer merges it with what the store already holds
    /// for the consultation (see [`merge_summary`]) and upserts the result.
    Summary {
        summary: ConsultationSummary,
    },
    Audit {
        event: AuditEvent,
    },
    /// Close every interval left open by an earlier process (started before `boot`) at its last
    /// checkpoint, marked recovered, and recompute the summaries concerned.
    Recover {
        boot: Millis,
    },
}

impl Op {
    /// Ops with the same key replace each other (upserts by id): the queue keeps the last.
    fn key(&self) -> String {
        match self {
            Op::Billing { interval } => format!("b:{}", interval.id),
            Op::Presence { interval } => format!("p:{}", interval.id),
            Op::Summary { summary } => format!("s:{}", summary.consultation),
            Op::Audit { event } => format!("a:{}", event.id),
            Op::Recover { boot } => format!("r:{boot}"),
        }
    }
}

/// The billing clock of one consultation (pure; time passed in).
///
/// Billable time runs while at least one practitioner and at least one admitted patient (role
/// `patient`, not `guest`) are present; each running stretch is one [`BillingInterval`]. Each
/// participant's presence stretches are [`PresenceInterval`]s. The clock finishes when the
/// consultation is ended or everyone has left.
pub struct BillingClock {
    consultation: String,
    secret: Vec<u8>,
    id_prefix: String,
    next_id: u64,
    practitioner: Option<String>,
    pseudonym: Option<String>,
    billing: Option<BillingInterval>,
    presence: BTreeMap<String, PresenceInterval>,
    ever_present: BTreeSet<String>,
    closed_ms: i64,
    start: Option<Millis>,
    end: Option<Millis>,
    finished: bool,
}

impl BillingClock {
    /// A clock for `consultation`. `nonce` makes the interval ids unique across clocks and
    /// processes (random in the server, fixed in tests); `secret` keys patient pseudonyms.
    pub fn new(consultation: &str, secret: &[u8], nonce: u64) -> BillingClock {
        BillingClock {
            consultation: consultation.to_string(),
            secret: secret.to_vec(),
            id_prefix: format!("{nonce:016x}"),
            next_id: 0,
            practitioner: None,
            pseudonym: None,
            billing: None,
            presence: BTreeMap::new(),
            ever_present: BTreeSet::new(),
            closed_ms: 0,
            start: None,
            end: None,
            finished: false,
        }
    }

    fn new_id(&mut self, kind: char) -> String {
        self.next_id += 1;
        format!("{kind}-{}-{}", self.id_prefix, self.next_id)
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether billable time is running.
    pub fn is_running(&self) -> bool {
        self.billing.is_some()
    }

    /// Billable milliseconds as of `now` (closed intervals plus the running one).
    pub fn billable_ms(&self, now: Millis) -> i64 {
        self.closed_ms + self.billing.as_ref().map_or(0, |b| (now - b.start).max(0))
    }

    /// The clock's summary: closed intervals only (the running one counts once it closes).
    pub fn summary(&self) -> ConsultationSummary {
        ConsultationSummary {
            consultation: self.consultation.clone(),
            practitioner: self.practitioner.clone().unwrap_or_default(),
            patient_pseudonym: self.pseudonym.clone().unwrap_or_default(),
            start: self.start.unwrap_or(0),
            end: self.end,
            billable_ms: self.closed_ms,
            participants: self.ever_present.len() as u32,
            recovered: false,
        }
    }

    /// The participants after a change (all of them, in any state), and whether the practitioner
    /// ended the consultation. Returns what to persist.
    pub fn observe<'a>(
        &mut self,
        now: Millis,
        participants: impl IntoIterator<Item = Presence<'a>>,
        ended: bool,
    ) -> Vec<Op> {
        if self.finished {
            return Vec::new();
        }
        let mut ops = Vec::new();
        let mut present: BTreeMap<&str, Presence<'a>> = BTreeMap::new();
        let mut all_left = true;
        let mut any = false;
        for p in participants {
            any = true;
            all_left &= p.left;
            if p.present && !p.left && !ended {
                present.insert(p.id, p);
            }
        }
        let finishing = ended || (any && all_left);
        // Billing first: it depends on who is present now.
        let practitioner_present = present.values().any(|p| p.role == Role::Practitioner);
        let patient_present = present.values().any(|p| p.role == Role::Patient);
        let running = practitioner_present && patient_present;
        // Who arrived.
        let mut changed = false;
        for p in present.values() {
            if self.presence.contains_key(p.id) {
                continue;
            }
            changed = true;
            self.start.get_or_insert(now);
            self.ever_present.insert(p.id.to_string());
            match p.role {
                Role::Practitioner if self.practitioner.is_none() => {
                    self.practitioner = Some(p.seat.to_string());
                }
                Role::Patient if self.pseudonym.is_none() => {
                    self.pseudonym =
                        Some(patient_pseudonym(&self.secret, &self.consultation, p.seat));
                }
                _ => {}
            }
            let interval = PresenceInterval {
                id: self.new_id('p'),
                consultation: self.consultation.clone(),
                participant: p.id.to_string(),
                role: p.role.as_str().to_string(),
                start: now,
                end: None,
                checkpoint: now,
                recovered: false,
            };
            self.presence.insert(p.id.to_string(), interval.clone());
            ops.push(Op::Presence { interval });
        }
        // Who went.
        let gone: Vec<String> = self
            .presence
            .keys()
            .filter(|id| !present.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(mut interval) = self.presence.remove(&id) {
                changed = true;
                interval.end = Some(now);
                interval.checkpoint = now;
                ops.push(Op::Presence { interval });
            }
        }
        match (self.billing.take(), running) {
            (Some(mut b), false) => {
                changed = true;
                b.end = Some(now);
                b.checkpoint = now;
                self.closed_ms += now - b.start;
                ops.push(Op::Billing { interval: b });
            }
            (Some(b), true) => self.billing = Some(b),
            (None, true) => {
                changed = true;
                let interval = BillingInterval {
                    id: self.new_id('b'),
                    consultation: self.consultation.clone(),
                    practitioner: self.practitioner.clone().unwrap_or_default(),
                    start: now,
                    end: None,
                    checkpoint: now,
                    recovered: false,
                };
                self.billing = Some(interval.clone());
                ops.push(Op::Billing { interval });
            }
            (None, false) => {}
        }
        if finishing {
            changed = true;
            self.finished = true;
            if self.start.is_some() {
                self.end = Some(now);
            }
        }
        if changed && self.start.is_some() {
            ops.push(Op::Summary {
                summary: self.summary(),
            });
        }
        ops
    }

    /// Record that every open interval was still running at `now`.
    pub fn checkpoint(&mut self, now: Millis) -> Vec<Op> {
        let mut ops = Vec::new();
        if let Some(b) = &mut self.billing {
            b.checkpoint = now;
            ops.push(Op::Billing {
                interval: b.clone(),
            });
        }
        for p in self.presence.values_mut() {
            p.checkpoint = now;
            ops.push(Op::Presence {
                interval: p.clone(),
            });
        }
        ops
    }
}

/// Merge the clock's view of a summary (`hint`) with the consultation's stored intervals and
/// summary: billable time is the exact sum of the stored closed billing intervals, participants
/// the distinct participants with a presence interval. A consultation id used again after
/// everyone had left keeps the time of its earlier stretches.
pub fn merge_summary(
    consultation: &str,
    billing: &[BillingInterval],
    presence: &[PresenceInterval],
    existing: Option<&ConsultationSummary>,
    hint: Option<&ConsultationSummary>,
) -> Option<ConsultationSummary> {
    if billing.is_empty() && presence.is_empty() && hint.is_none() {
        return existing.cloned();
    }
    let starts = billing
        .iter()
        .map(|b| b.start)
        .chain(presence.iter().map(|p| p.start))
        .chain(hint.map(|h| h.start));
    let start = starts.min().unwrap_or(0);
    let open = billing.iter().any(|b| b.end.is_none())
        || presence.iter().any(|p| p.end.is_none())
        || hint.is_some_and(|h| h.end.is_none());
    let end = if open {
        None
    } else {
        billing
            .iter()
            .filter_map(|b| b.end)
            .chain(presence.iter().filter_map(|p| p.end))
            .chain(hint.and_then(|h| h.end))
            .max()
    };
    let billable_ms = billing
        .iter()
        .filter_map(|b| b.end.map(|e| (e - b.start).max(0)))
        .sum();
    let distinct: BTreeSet<&str> = presence.iter().map(|p| p.participant.as_str()).collect();
    let participants = (distinct.len() as u32).max(hint.map_or(0, |h| h.participants));
    let recovered = billing.iter().any(|b| b.recovered)
        || presence.iter().any(|p| p.recovered)
        || hint.is_some_and(|h| h.recovered);
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let practitioner = hint
        .and_then(|h| nonempty(&h.practitioner))
        .or_else(|| existing.and_then(|e| nonempty(&e.practitioner)))
        .or_else(|| billing.iter().find_map(|b| nonempty(&b.practitioner)))
        .unwrap_or_default();
    let patient_pseudonym = existing
        .and_then(|e| nonempty(&e.patient_pseudonym))
        .or_else(|| hint.and_then(|h| nonempty(&h.patient_pseudonym)))
        .unwrap_or_default();
    Some(ConsultationSummary {
        consultation: consultation.to_string(),
        practitioner,
        patient_pseudonym,
        start,
        end,
        billable_ms,
        participants,
        recovered,
    })
}

/// Apply one op to the store.
pub async fn apply(store: &dyn Store, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::Billing { interval } => store.upsert_billing_interval(interval).await,
        Op::Presence { interval } => store.upsert_presence_interval(interval).await,
        Op::Audit { event } => store.record_audit(event).await,
        Op::Summary { summary } => {
            recompute_summary(store, &summary.consultation, Some(summary)).await
        }
        Op::Recover { boot } => recover(store, *boot).await.map(|_| ()),
    }
}

async fn recompute_summary(
    store: &dyn Store,
    consultation: &str,
    hint: Option<&ConsultationSummary>,
) -> Result<(), StoreError> {
    let billing = store.billing_intervals(consultation).await?;
    let presence = store.presence_intervals(consultation).await?;
    let existing = store.consultation_summary(consultation).await?;
    if let Some(summary) = merge_summary(consultation, &billing, &presence, existing.as_ref(), hint)
        && Some(&summary) != existing.as_ref()
    {
        store.upsert_consultation_summary(&summary).await?;
    }
    Ok(())
}

/// What crash recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub billing_intervals: usize,
    pub presence_intervals: usize,
    pub consultations: usize,
}

/// Close every interval an earlier process left open (started before `boot`) at its last
/// checkpoint, with `recovered` set, and recompute the summaries of their consultations.
/// Idempotent.
pub async fn recover(store: &dyn Store, boot: Millis) -> Result<Recovered, StoreError> {
    let mut done = Recovered::default();
    let mut consultations = BTreeSet::new();
    for mut b in store.open_billing_intervals().await? {
        if b.start >= boot {
            continue;
        }
        b.end = Some(b.checkpoint);
        b.recovered = true;
        store.upsert_billing_interval(&b).await?;
        consultations.insert(b.consultation.clone());
        done.billing_intervals += 1;
    }
    for mut p in store.open_presence_intervals().await? {
        if p.start >= boot {
            continue;
        }
        p.end = Some(p.checkpoint);
        p.recovered = true;
        store.upsert_presence_interval(&p).await?;
        consultations.insert(p.consultation.clone());
        done.presence_intervals += 1;
    }
    for c in &consultations {
        recompute_summary(store, c, None).await?;
    }
    done.consultations = consultations.len();
    if done.billing_intervals + done.presence_intervals > 0 {
        tracing::warn!(
            billing_intervals = done.billing_intervals,
            presence_intervals = done.presence_intervals,
            consultations = done.consultations,
            "closed intervals left open by an earlier process at their last checkpoint"
        );
    }
    Ok(done)
}

/// Why the outage queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("billing queue {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("billing queue is full ({0} events)")]
    Full(usize),
}

/// The bounded, append-only, fsync'd on-disk queue of ops kept while the store is unavailable.
/// One JSON object per line. When full, it is compacted (ops replaced by a later op with the same
/// id are dropped); if still full, the new op is refused.
pub struct OutageQueue {
    path: PathBuf,
    file: std::fs::File,
    len: usize,
    max: usize,
}

impl OutageQueue {
    /// File name inside `storage.data_dir`.
    pub const FILE: &'static str = "billing-queue.jsonl";

    /// Open (or create) the queue in `dir`, counting what an earlier process left in it.
    pub fn open(dir: &Path, max: usize) -> Result<OutageQueue, QueueError> {
        let path = dir.join(Self::FILE);
        let io = |source| QueueError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io)?;
        // A crash mid-write can leave a torn last line: end it, so the next op starts afresh.
        let bytes = std::fs::read(&path).map_err(io)?;
        if bytes.last().is_some_and(|&b| b != b'\n') {
            let mut f = &file;
            f.write_all(b"\n").and_then(|_| f.sync_data()).map_err(io)?;
        }
        let mut q = OutageQueue {
            path,
            file,
            len: 0,
            max,
        };
        q.len = q.read_all()?.len();
        Ok(q)
    }

    fn io(&self, source: std::io::Error) -> QueueError {
        QueueError::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every queued op, in order. A line that does not parse (torn by a crash mid-write) is
    /// skipped.
    pub fn read_all(&self) -> Result<Vec<Op>, QueueError> {
        let file = std::fs::File::open(&self.path).map_err(|e| self.io(e))?;
        let mut ops = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| self.io(e))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Op>(&line) {
                Ok(op) => ops.push(op),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable billing queue line"),
            }
        }
        Ok(ops)
    }

    /// Append one op durably (written and fsync'd before returning).
    pub fn push(&mut self, op: &Op) -> Result<(), QueueError> {
        if self.len >= self.max {
            self.compact()?;
            if self.len >= self.max {
                metrics::counter!(QUEUE_DROPPED).increment(1);
                return Err(QueueError::Full(self.len));
            }
        }
        // Serialising our own types cannot fail.
        let mut line = serde_json::to_string(op).expect("ops serialise");
        line.push('\n');
        let before = self.file.metadata().map_err(|e| self.io(e))?.len();
        if let Err(e) = self
            .file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
        {
            // A line half-written (the disk full: ENOSPC) would swallow the next one: cut it
            // off, so the file stays whole lines and what was queued before stays readable.
            let _ = self
                .file
                .set_len(before)
                .and_then(|_| self.file.sync_data());
            metrics::counter!(QUEUE_WRITE_ERRORS).increment(1);
            return Err(self.io(e));
        }
        self.len += 1;
        metrics::gauge!(QUEUE_GAUGE).set(self.len as f64);
        Ok(())
    }

    /// Keep only the last op of each id, in order, rewriting the file atomically.
    pub fn compact(&mut self) -> Result<(), QueueError> {
        let ops = self.read_all()?;
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            last.insert(op.key(), i);
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut out =
                std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| self.io(e))?);
            for (i, op) in ops.iter().enumerate() {
                if last.get(&op.key()) == Some(&i) {
                    let line = serde_json::to_string(op).expect("ops serialise");
                    writeln!(out, "{line}").map_err(|e| self.io(e))?;
                }
            }
            let file = out.into_inner().map_err(|e| self.io(e.into_error()))?;
            file.sync_all().map_err(|e| self.io(e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.file = std::fs::OpenOptions::new()
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.len = last.len();
        metrics::gauge!(QUEUE_GAUGE).set(self.len as f64);
        Ok(())
    }

    /// Empty the queue (after a successful replay).
    pub fn clear(&mut self) -> Result<(), QueueError> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| self.io(e))?;
        self.len = 0;
        metrics::gauge!(QUEUE_GAUGE).set(0.0);
        Ok(())
    }
}

async fn apply_timed(store: &dyn Store, op: &Op) -> Result<(), StoreError> {
    match tokio::time::timeout(STORE_CALL_TIMEOUT, apply(store, op)).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable("store call timed out".into())),
    }
}

/// Replay the queue in order. Stops at the first op the store cannot take because it is
/// unavailable (the queue is kept whole; replaying is idempotent); an op refused for any other
/// reason is logged and skipped. Returns whether the queue is now empty.
async fn flush(store: &dyn Store, queue: &mut OutageQueue) -> Result<bool, QueueError> {
    if queue.is_empty() {
        return Ok(true);
    }
    let ops = queue.read_all()?;
    for op in &ops {
        match apply_timed(store, op).await {
            Ok(()) => {}
            Err(StoreError::Unavailable(e)) => {
                tracing::debug!(error = %e, "store still unavailable; billing queue kept");
                return Ok(false);
            }
            Err(e) => {
                metrics::counter!(WRITES, "result" => "failed").increment(1);
                tracing::error!(error = %e, "a queued billing event was refused by the store; skipped");
            }
        }
    }
    queue.clear()?;
    tracing::info!(events = ops.len(), "billing queue flushed to the store");
    Ok(true)
}

/// Start-up failures of the billing service.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// Whether this server may still write billing for a consultation at a time (cluster mode: it
/// holds the consultation's lease). See [`Billing::attach_gate`].
pub type WriteGate = Arc<dyn Fn(&str, Millis) -> bool + Send + Sync>;

/// Metric: billing writes dropped because this server no longer owned the consultation.
pub const FENCED_WRITES: &str = "teleconsult_billing_fenced_writes_total";

struct Inner {
    secret: Vec<u8>,
    gate: std::sync::OnceLock<WriteGate>,
    clocks: Mutex<HashMap<String, BillingClock>>,
    tx: mpsc::Sender<Op>,
    queue_depth: Arc<AtomicUsize>,
    /// The last write to the on-disk queue failed (the disk full): `/healthz` says degraded.
    queue_failing: Arc<std::sync::atomic::AtomicBool>,
}

/// The billing service: clocks of live consultations, checkpoints, the writer. Cheap to clone.
#[derive(Clone)]
pub struct Billing {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every mutation under this lock completes without panicking code in between.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Billing {
    /// Open the outage queue in `data_dir` (`storage.data_dir`), replay what an earlier process left in it,
    /// recover intervals it left open, then start the writer and checkpoint tasks. If the store is
    /// unavailable, recovery is queued (it runs as soon as the store is back) and the server
    /// starts degraded.
    pub async fn start(
        config: &BillingConfig,
        data_dir: &Path,
        secret: &[u8],
        store: Arc<dyn Store>,
    ) -> Result<Billing, BillingError> {
        Self::start_with(config, data_dir, secret, store, true).await
    }

    /// [`Billing::start`] for a node of a cluster: no crash recovery at start-up (every open
    /// interval in the shared store may belong to a live node); the intervals a dead node left
    /// open are closed by the node that takes its consultations over (the cluster's fencing).
    pub async fn start_in_cluster(
        config: &BillingConfig,
        data_dir: &Path,
        secret: &[u8],
        store: Arc<dyn Store>,
    ) -> Result<Billing, BillingError> {
        Self::start_with(config, data_dir, secret, store, false).await
    }

    async fn start_with(
        config: &BillingConfig,
        data_dir: &Path,
        secret: &[u8],
        store: Arc<dyn Store>,
        recover_at_boot: bool,
    ) -> Result<Billing, BillingError> {
        let boot = now_ms();
        let mut queue = OutageQueue::open(data_dir, config.outage_queue_max_events)?;
        let recover_op = Op::Recover { boot };
        let flushed = flush(&*store, &mut queue).await?;
        let recovered =
            !recover_at_boot || (flushed && apply_timed(&*store, &recover_op).await.is_ok());
        if !recovered {
            tracing::warn!("storage unavailable at start-up: crash recovery queued");
            queue.push(&recover_op)?;
        }
        let queue_depth = Arc::new(AtomicUsize::new(queue.len()));
        let queue_failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        metrics::gauge!(QUEUE_GAUGE).set(queue.len() as f64);
        let (tx, rx) = mpsc::channel(WRITER_CHANNEL);
        let billing = Billing {
            inner: Arc::new(Inner {
                secret: secret.to_vec(),
                gate: std::sync::OnceLock::new(),
                clocks: Mutex::new(HashMap::new()),
                tx,
                queue_depth: queue_depth.clone(),
                queue_failing: queue_failing.clone(),
            }),
        };
        tokio::spawn(writer(store, queue, rx, queue_depth, queue_failing));
        let period = Duration::from_secs(config.checkpoint_secs.max(1));
        let weak = Arc::downgrade(&billing.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                (Billing { inner }).checkpoint_all(now_ms());
            }
        });
        Ok(billing)
    }

    /// Attach the write gate, once, at start-up (cluster mode): from then on the ops of a
    /// consultation the gate refuses (this node lost its lease: it was stopped, or cut off from
    /// the store, for longer than a lease) are dropped, not written, so that a fenced node never
    /// extends or reopens what the consultation's new owner closed.
    pub fn attach_gate(&self, gate: WriteGate) {
        let _ = self.inner.gate.set(gate);
    }

    fn send(&self, mut ops: Vec<Op>) {
        if let Some(gate) = self.inner.gate.get() {
            let now = now_ms();
            let before = ops.len();
            ops.retain(|op| match op {
                Op::Billing { interval } => gate(&interval.consultation, now),
                Op::Presence { interval } => gate(&interval.consultation, now),
                Op::Summary { summary } => gate(&summary.consultation, now),
                Op::Audit { .. } | Op::Recover { .. } => true,
            });
            if ops.len() < before {
                metrics::counter!(FENCED_WRITES).increment((before - ops.len()) as u64);
            }
        }
        for op in ops {
            enqueue(&self.inner.tx, op);
        }
    }

    /// The consultation service's hook: the participants of `consultation` after a change.
    pub fn observe<'a>(
        &self,
        consultation: &str,
        participants: impl IntoIterator<Item = Presence<'a>>,
        ended: bool,
    ) {
        let now = now_ms();
        let mut clocks = lock(&self.inner.clocks);
        let clock = clocks
            .entry(consultation.to_string())
            .or_insert_with(|| BillingClock::new(consultation, &self.inner.secret, rand::random()));
        let ops = clock.observe(now, participants, ended);
        if clock.is_finished() {
            clocks.remove(consultation);
        }
        drop(clocks);
        self.send(ops);
    }

    /// Checkpoint every open interval (called by the timer every `billing.checkpoint_secs`).
    pub fn checkpoint_all(&self, now: Millis) {
        let ops: Vec<Op> = lock(&self.inner.clocks)
            .values_mut()
            .flat_map(|c| c.checkpoint(now))
            .collect();
        self.send(ops);
    }

    /// Record an audit event (through the same durable path as billing).
    pub fn audit(
        &self,
        action: &str,
        actor: &str,
        consultation: Option<&str>,
        target: Option<&str>,
    ) {
        self.send(vec![Op::Audit {
            event: AuditEvent {
                id: format!("a-{:032x}", rand::random::<u128>()),
                at: now_ms(),
                actor: actor.to_string(),
                action: action.to_string(),
                consultation: consultation.map(str::to_string),
                target: target.map(str::to_string),
            },
        }]);
    }

    /// Billing events waiting in the on-disk queue for the store to come back.
    pub fn queue_depth(&self) -> usize {
        self.inner.queue_depth.load(Ordering::Relaxed)
    }

    /// Whether the on-disk queue took the last event it was given (false while the disk is
    /// full: events are being lost, and counted).
    pub fn queue_writable(&self) -> bool {
        !self.inner.queue_failing.load(Ordering::Relaxed)
    }

    /// Billable milliseconds of a live consultation so far (diagnostics, tests).
    pub fn live_billable_ms(&self, consultation: &str) -> Option<i64> {
        lock(&self.inner.clocks)
            .get(consultation)
            .map(|c| c.billable_ms(now_ms()))
    }

    /// Whether a live consultation's billing clock is running.
    pub fn is_running(&self, consultation: &str) -> bool {
        lock(&self.inner.clocks)
            .get(consultation)
            .is_some_and(BillingClock::is_running)
    }
}

/// The consultation service reports presence and audit events through this.
impl Observer for Billing {
    fn presence(
        &self,
        consultation: &ConsultationId,
        participants: &mut dyn Iterator<Item = Presence<'_>>,
        ended: bool,
    ) {
        self.observe(consultation.as_str(), participants, ended);
    }

    fn audit(
        &self,
        action: &str,
        actor: &str,
        consultation: &ConsultationId,
        target: Option<&str>,
    ) {
        Billing::audit(self, action, actor, Some(consultation.as_str()), target);
    }

    fn evicted(&self, consultation: &ConsultationId) {
        // Its new owner keeps its clock; nothing more is written for it here.
        lock(&self.inner.clocks).remove(consultation.as_str());
    }
}

/// Hand `op` to the writer without waiting; on a full channel it is dropped and counted.
/// Returns whether it was queued. (The writer lives as long as any sender does.)
fn enqueue(tx: &mpsc::Sender<Op>, op: Op) -> bool {
    match tx.try_send(op) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!(CHANNEL_DROPPED).increment(1);
            tracing::error!("billing event lost: the writer is {WRITER_CHANNEL} events behind");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// The writer: applies ops in order; while the store is unavailable, queues them on disk and
/// retries every second.
async fn writer(
    store: Arc<dyn Store>,
    mut queue: OutageQueue,
    mut rx: mpsc::Receiver<Op>,
    depth: Arc<AtomicUsize>,
    failing: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            op = rx.recv() => {
                let Some(op) = op else { break };
                if queue.is_empty() {
                    match apply_timed(&*store, &op).await {
                        Ok(()) => {
                            metrics::counter!(WRITES, "result" => "ok").increment(1);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "storage unavailable: billing events go to the on-disk queue");
                        }
                    }
                }
                metrics::counter!(WRITES, "result" => "queued").increment(1);
                match queue.push(&op) {
                    Ok(()) => failing.store(false, Ordering::Relaxed),
                    Err(e) => {
                        failing.store(true, Ordering::Relaxed);
                        tracing::error!(error = %e, "billing event lost: could not queue it");
                    }
                }
                depth.store(queue.len(), Ordering::Relaxed);
            }
            _ = retry.tick(), if !queue.is_empty() => {
                match flush(&*store, &mut queue).await {
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "billing queue replay failed"),
                }
                depth.store(queue.len(), Ordering::Relaxed);
            }
        }
    }
}

/// ISO-8601 / RFC 3339 times in UTC, on the `time` crate.
pub mod time {
    use super::Millis;
    use ::time::format_description::BorrowedFormatItem;
    use ::time::macros::format_description;
    use ::time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

    const DATE: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]");
    const SECONDS: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    const MILLIS: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    /// `HH:MM[:SS[.f…]]` and a UTC designator (`Z`, `z` or `+00:00`; other offsets are refused).
    const TIME_UTC: &[BorrowedFormatItem<'_>] = format_description!(
        version = 2,
        "[hour]:[minute][optional [:[second][optional [.[subsecond]]]]][first [Z] [z] [+00:00]]"
    );

    fn utc(ms: Millis) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }

    /// `2026-01-31T08:15:00.250Z` (milliseconds shown only when not zero). A time outside the
    /// years -9999..=9999 (no real record) is written as its bare millisecond count.
    pub fn format(ms: Millis) -> String {
        let layout = if ms.rem_euclid(1000) == 0 {
            SECONDS
        } else {
            MILLIS
        };
        utc(ms)
            .and_then(|t| t.format(layout).ok())
            .unwrap_or_else(|| ms.to_string())
    }

    /// The date part, `2026-01-31` (see [`format`] for times out of range).
    pub fn format_date(ms: Millis) -> String {
        utc(ms)
            .and_then(|t| t.date().format(DATE).ok())
            .unwrap_or_else(|| ms.to_string())
    }

    /// Parse `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z` or
    /// `+00:00` (UTC only: other offsets are refused, to keep exports unambiguous). Digits
    /// beyond milliseconds are dropped.
    pub fn parse(s: &str) -> Result<Millis, String> {
        let bad = || {
            format!("{s:?} is not an ISO-8601 UTC time (e.g. 2026-01-31 or 2026-01-31T08:00:00Z)")
        };
        let s = s.trim();
        if !s.is_ascii() || s.len() > 40 {
            return Err(bad());
        }
        let (date, time) = match s.split_once(['T', 't', ' ']) {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let date = Date::parse(date, DATE).map_err(|_| bad())?;
        let time = match time {
            Some(t) => Time::parse(t, TIME_UTC).map_err(|_| bad())?,
            None => Time::MIDNIGHT,
        };
        let nanos = PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp_nanos();
        Millis::try_from(nanos.div_euclid(1_000_000)).map_err(|_| bad())
    }
}

/// Export formats of billing summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "json" => Ok(ExportFormat::Json),
            _ => Err(format!("format must be csv or json, not {s:?}")),
        }
    }
}

/// Billable units after rounding (applied at export only).
pub fn rounded_units(billable_ms: i64, rounding: Rounding) -> i64 {
    let ms = billable_ms.max(0);
    match rounding {
        Rounding::PerSecond => ms / 1000,
        Rounding::PerStartedMinute => (ms + 59_999) / 60_000,
    }
}

/// The unit name of a rounding mode, as exported.
pub fn unit_name(rounding: Rounding) -> &'static str {
    match rounding {
        Rounding::PerSecond => "second",
        Rounding::PerStartedMinute => "minute",
    }
}

/// CSV header line (with newline).
pub const CSV_HEADER: &str = "consultation,practitioner,patient_pseudonym,start,end,billable_seconds,billable_units,unit,participants,recovered\n";

/// CSV lines written by the `csv` crate (RFC 4180 quoting when needed: `,`, `"`, CR or LF),
/// with formulas defused: a field starting with `=`, `+`, `-`, `@`, tab or CR gets a leading
/// `'` so spreadsheets do not evaluate it.
pub struct CsvRows {
    builder: csv::WriterBuilder,
}

impl Default for CsvRows {
    fn default() -> Self {
        CsvRows::new()
    }
}

impl CsvRows {
    pub fn new() -> CsvRows {
        let mut builder = csv::WriterBuilder::new();
        builder.flexible(true).buffer_capacity(256);
        CsvRows { builder }
    }

    /// Append one record (and its newline) to `out`.
    pub fn record<'a>(&mut self, out: &mut String, fields: impl IntoIterator<Item = &'a str>) {
        let mut writer = self.builder.from_writer(Vec::with_capacity(256));
        // Writing to memory cannot fail: a `Vec` accepts every write, and a flexible writer
        // accepts records of any length. Should it ever fail, the record is logged and dropped.
        let write = || -> csv::Result<()> {
            for f in fields {
                if f.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                    writer.write_field(format!("'{f}"))?;
                } else {
                    writer.write_field(f)?;
                }
            }
            // An empty record ends the one the fields were written into.
            writer.write_record(std::iter::empty::<&[u8]>())
        };
        match write()
            .map_err(|e| e.to_string())
            .and_then(|()| writer.into_inner().map_err(|e| e.to_string()))
        {
            // Fields are `str` and the writer adds only ASCII, so the bytes are UTF-8.
            Ok(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
            Err(e) => tracing::error!(error = %e, "CSV record not written"),
        }
    }

    /// Append one summary as a CSV line.
    pub fn summary(&mut self, out: &mut String, s: &ConsultationSummary, rounding: Rounding) {
        let start = time::format(s.start);
        let end = s.end.map(time::format).unwrap_or_default();
        let billable = seconds(s.billable_ms.max(0));
        let units = rounded_units(s.billable_ms, rounding).to_string();
        let participants = s.participants.to_string();
        self.record(
            out,
            [
                s.consultation.as_str(),
                &s.practitioner,
                &s.patient_pseudonym,
                &start,
                &end,
                &billable,
                &units,
                unit_name(rounding),
                &participants,
                if s.recovered { "true" } else { "false" },
            ],
        );
    }
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// One summary as an export JSON object (same fields as the CSV columns).
pub fn json_row(s: &ConsultationSummary, rounding: Rounding) -> serde_json::Value {
    serde_json::json!({
        "consultation": s.consultation,
        "practitioner": s.practitioner,
        "patient_pseudonym": s.patient_pseudonym,
        "start": time::format(s.start),
        "end": s.end.map(time::format),
        "billable_ms": s.billable_ms,
        "billable_seconds": s.billable_ms.max(0) as f64 / 1000.0,
        "billable_units": rounded_units(s.billable_ms, rounding),
        "unit": unit_name(rounding),
        "participants": s.participants,
        "recovered": s.recovered,
    })
}

/// Streaming writer of an export: `begin`, then `row` per summary, then `end`.
pub struct ExportWriter {
    pub format: ExportFormat,
    pub rounding: Rounding,
    rows: u64,
    csv: CsvRows,
}

impl ExportWriter {
    pub fn new(format: ExportFormat, rounding: Rounding) -> ExportWriter {
        ExportWriter {
            format,
            rounding,
            rows: 0,
            csv: CsvRows::new(),
        }
    }

    pub fn begin(&self, out: &mut String) {
        match self.format {
            ExportFormat::Csv => out.push_str(CSV_HEADER),
            ExportFormat::Json => out.push('['),
        }
    }

    pub fn row(&mut self, out: &mut String, s: &ConsultationSummary) {
        match self.format {
            ExportFormat::Csv => self.csv.summary(out, s, self.rounding),
            ExportFormat::Json => {
                out.push_str(if self.rows == 0 { "\n" } else { ",\n" });
                out.push_str(&json_row(s, self.rounding).to_string());
            }
        }
        self.rows += 1;
    }

    pub fn end(&self, out: &mut String) {
        if self.format == ExportFormat::Json {
            out.push_str("\n]\n");
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// The content type of an export format.
pub fn content_type(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Csv => "text/csv; charset=utf-8",
        ExportFormat::Json => "application/json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Billing time follows the monotonic clock from one reading of the wall clock: whatever
    /// the wall clock does afterwards (here: a reading an hour off either way, as after a
    /// step), the time advances exactly by the monotonic time elapsed, so the billed duration
    /// of an interval is the time that passed. (The machine's clock itself is not stepped: it
    /// is shared.)
    #[test]
    fn billing_time_ignores_steps_of_the_wall_clock() {
        let at = std::time::Instant::now();
        let wall = 1_800_000_000_000;
        let later = at + Duration::from_secs(600);
        // Ten minutes later on the monotonic clock: `anchored` takes no wall-clock reading
        // but the anchor, so a step of the wall clock cannot enter.
        assert_eq!(anchored(wall, at, later), wall + 600_000);
        // An earlier instant (never given by `now_ms`, which reads after its anchor) is not
        // before the anchor: time never runs backwards.
        assert_eq!(anchored(wall, later, at), wall);
        // And a real interval: start and end from `now_ms`, never negative.
        let start = now_ms();
        let end = now_ms();
        assert!(end >= start);
        // A clock driven by these times bills the monotonic duration: an interval opened and
        // closed ten minutes apart on this clock lasts ten minutes.
        let mut clock = BillingClock::new("c-steps", SECRET, 7);
        let t0 = anchored(wall, at, at);
        let t1 = anchored(wall, at, later);
        let ps = vec![p("dr", Role::Practitioner), p("pt", Role::Patient)];
        let _ = clock.observe(t0, view(&ps), false);
        assert!(clock.is_running());
        assert_eq!(clock.billable_ms(t1), 600_000);
    }

    /// The disk under the outage queue full (ENOSPC), on a real 64 KiB tmpfs mounted for the
    /// test (tests run as root here): the write fails with a clear error, nothing already
    /// queued is corrupted (a half-written line is cut off), and once there is space again the
    /// queue takes events and reads back whole.
    #[test]
    fn a_full_disk_under_the_queue_corrupts_nothing_and_recovers() {
        let dir = std::env::temp_dir().join(format!(
            "teleconsult-enospc-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mount = |args: &[&str]| {
            let s = std::process::Command::new("mount")
                .args(args)
                .status()
                .expect("mount runs");
            assert!(s.success(), "mount {args:?} (the tests run as root)");
        };
        let d = dir.to_str().unwrap();
        mount(&["-t", "tmpfs", "-o", "size=64k", "tmpfs", d]);
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _unmount = Unmount(dir.clone());

        let mut q = OutageQueue::open(&dir, 1_000_000).unwrap();
        let op = |i: i64| Op::Recover {
            boot: 1_000_000_000_000 + i,
        };
        let mut queued = 0;
        let err = loop {
            match q.push(&op(queued)) {
                Ok(()) => queued += 1,
                Err(e) => break e,
            }
            assert!(queued < 100_000, "a 64 KiB disk never filled");
        };
        let text = err.to_string();
        assert!(
            text.contains("billing queue") && text.to_lowercase().contains("no space"),
            "a clear error: {text}"
        );
        assert!(queued > 100, "{queued} events fitted");
        // Nothing corrupted: every queued event reads back, in order.
        let read: Vec<Op> = q.read_all().unwrap();
        assert_eq!(read.len(), queued as usize);
        assert!(
            matches!(read.last(), Some(Op::Recover { boot }) if *boot == 1_000_000_000_000 + queued - 1)
        );
        // The file is whole lines: a half-written one was cut off.
        assert!(std::fs::read(q.path()).unwrap().ends_with(b"\n"));
        // Still full: refused again, still nothing corrupted.
        assert!(q.push(&op(queued)).is_err());
        assert_eq!(q.read_all().unwrap().len(), queued as usize);

        // Space returns.
        mount(&["-o", "remount,size=1m", d]);
        for i in 0..10 {
            q.push(&op(queued + i)).expect("room again");
        }
        let read = q.read_all().unwrap();
        assert_eq!(read.len(), queued as usize + 10);
        // And a fresh open (a restart) counts the same.
        assert_eq!(
            OutageQueue::open(&dir, 1_000_000).unwrap().len(),
            queued as usize + 10
        );
    }

    /// The channel to the writer is bounded: when it is full the caller (a consultation, under
    /// its lock) does not wait; the event is dropped and counted, and what was queued before
    /// is kept in order.
    #[test]
    fn a_full_writer_channel_drops_and_counts_without_waiting() {
        use ::metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            let (tx, mut rx) = mpsc::channel(2);
            let op = |boot| Op::Recover { boot };
            assert!(enqueue(&tx, op(1)));
            assert!(enqueue(&tx, op(2)));
            assert!(!enqueue(&tx, op(3)), "the third does not fit");
            let dropped: u64 = snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter(|(k, ..)| k.key().name() == CHANNEL_DROPPED)
                .map(|(.., v)| match v {
                    DebugValue::Counter(n) => n,
                    _ => 0,
                })
                .sum();
            assert_eq!(dropped, 1);
            assert!(matches!(rx.try_recv(), Ok(Op::Recover { boot: 1 })));
            assert!(matches!(rx.try_recv(), Ok(Op::Recover { boot: 2 })));
            assert!(rx.try_recv().is_err());
        });
    }

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";
    const S: Millis = 1_000; // one second

    #[derive(Clone)]
    struct P {
        id: &'static str,
        seat: &'static str,
        role: Role,
        present: bool,
        left: bool,
    }

    fn p(id: &'static str, role: Role) -> P {
        P {
            id,
            seat: match role {
                Role::Practitioner => "Dr Who",
                Role::Patient => "Jane Patient",
                Role::Guest => "Interpreter",
            },
            role,
            present: true,
            left: false,
        }
    }

    fn view(ps: &[P]) -> Vec<Presence<'_>> {
        ps.iter()
            .map(|p| Presence {
                id: p.id,
                seat: p.seat,
                role: p.role,
                present: p.present,
                left: p.left,
            })
            .collect()
    }

    fn billing(ops: &[Op]) -> Vec<&BillingInterval> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Billing { interval } => Some(interval),
                _ => None,
            })
            .collect()
    }

    fn presence(ops: &[Op]) -> Vec<&PresenceInterval> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Presence { interval } => Some(interval),
                _ => None,
            })
            .collect()
    }

    fn summary(ops: &[Op]) -> Option<&ConsultationSummary> {
        ops.iter().rev().find_map(|o| match o {
            Op::Summary { summary } => Some(summary),
            _ => None,
        })
    }

    #[test]
    fn runs_only_with_practitioner_and_admitted_patient() {
        let mut clock = BillingClock::new("c1", SECRET, 7);
        let mut ps = vec![p("dr", Role::Practitioner)];
        let ops = clock.observe(0, view(&ps), false);
        assert!(billing(&ops).is_empty());
        assert_eq!(presence(&ops).len(), 1);
        // A guest does not start the clock; a waiting patient neither.
        ps.push(p("g", Role::Guest));
        let mut waiting = p("pt", Role::Patient);
        waiting.present = false;
        ps.push(waiting);
        let ops = clock.observe(5 * S, view(&ps), false);
        assert!(billing(&ops).is_empty());
        assert!(!clock.is_running());
        // Admitted: the clock runs.
        ps[2].present = true;
        let ops = clock.observe(10 * S, view(&ps), false);
        let b = billing(&ops);
        assert_eq!(b.len(), 1);
        assert_eq!(
            (b[0].start, b[0].end, b[0].checkpoint),
            (10 * S, None, 10 * S)
        );
        assert_eq!(b[0].practitioner, "Dr Who");
        assert!(clock.is_running());
        assert_eq!(clock.billable_ms(25 * S), 15 * S);
    }

    #[test]
    fn pauses_on_disconnect_and_resumes_on_reconnect() {
        let mut clock = BillingClock::new("c1", SECRET, 7);
        let mut ps = vec![p("dr", Role::Practitioner), p("pt", Role::Patient)];
        clock.observe(0, view(&ps), false);
        // Patient reconnecting: paused.
        ps[1].present = false;
        let ops = clock.observe(60 * S, view(&ps), false);
        let b = billing(&ops);
        assert_eq!((b[0].start, b[0].end), (0, Some(60 * S)));
        assert_eq!(summary(&ops).map(|s| s.billable_ms), Some(60 * S));
        assert_eq!(clock.billable_ms(90 * S), 60 * S);
        // Back: a new interval.
        ps[1].present = true;
        let ops = clock.observe(90 * S, view(&ps), false);
        let b = billing(&ops);
        assert_eq!((b[0].start, b[0].end), (90 * S, None));
        // Practitioner drops: paused again.
        ps[0].present = false;
        clock.observe(100 * S, view(&ps), false);
        assert!(!clock.is_running());
        ps[0].present = true;
        clock.observe(130 * S, view(&ps), false);
        // The practitioner ends it.
        let ops = clock.observe(150 * S, view(&ps), true);
        let s = summary(&ops).expect("summary");
        assert_eq!(s.billable_ms, 60 * S + 10 * S + 20 * S);
        assert_eq!(s.end, Some(150 * S));
        assert_eq!(s.start, 0);
        assert_eq!(s.participants, 2);
        assert!(clock.is_finished());
        // Everything closed: one presence close per participant.
        assert_eq!(
            presence(&ops)
                .iter()
                .filter(|p| p.end == Some(150 * S))
                .count(),
            2
        );
        // Nothing after the end.
        assert!(clock.observe(200 * S, view(&ps), false).is_empty());
    }

    #[test]
    fn stops_when_everyone_has_left() {
        let mut clock = BillingClock::new("c1", SECRET, 1);
        let mut ps = vec![p("dr", Role::Practitioner), p("pt", Role::Patient)];
        clock.observe(0, view(&ps), false);
        ps[1].present = false;
        ps[1].left = true;
        let ops = clock.observe(30 * S, view(&ps), false);
        assert!(!clock.is_finished());
        assert_eq!(
            summary(&ops).map(|s| (s.billable_ms, s.end)),
            Some((30 * S, None))
        );
        ps[0].present = false;
        ps[0].left = true;
        let ops = clock.observe(40 * S, view(&ps), false);
        assert!(clock.is_finished());
        assert_eq!(
            summary(&ops).map(|s| (s.billable_ms, s.end)),
            Some((30 * S, Some(40 * S)))
        );
    }

    #[test]
    fn second_patient_keeps_it_running_and_counts() {
        let mut clock = BillingClock::new("c1", SECRET, 1);
        let mut ps = vec![
            p("dr", Role::Practitioner),
            p("pt", Role::Patient),
            P {
                seat: "jti-other",
                ..p("pt2", Role::Patient)
            },
        ];
        ps[2].present = false;
        clock.observe(0, view(&ps), false);
        ps[2].present = true;
        let ops = clock.observe(10 * S, view(&ps), false);
        assert!(billing(&ops).is_empty(), "no new interval: already running");
        ps[1].present = false;
        let ops = clock.observe(20 * S, view(&ps), false);
        assert!(billing(&ops).is_empty(), "still one patient present");
        let s = clock.summary();
        assert_eq!(s.participants, 3);
        // The pseudonym is the first patient's, never a name.
        assert_eq!(
            s.patient_pseudonym,
            patient_pseudonym(SECRET, "c1", "Jane Patient")
        );
        assert!(!format!("{s:?}").contains("Jane"));
    }

    #[test]
    fn checkpoints_move_only_open_intervals() {
        let mut clock = BillingClock::new("c1", SECRET, 1);
        let ps = vec![p("dr", Role::Practitioner), p("pt", Role::Patient)];
        assert!(clock.checkpoint(0).is_empty());
        clock.observe(0, view(&ps), false);
        let ops = clock.checkpoint(5 * S);
        assert_eq!(ops.len(), 3);
        assert!(
            billing(&ops)
                .iter()
                .all(|b| b.checkpoint == 5 * S && b.end.is_none())
        );
        assert!(presence(&ops).iter().all(|p| p.checkpoint == 5 * S));
        // Ids are stable across checkpoints (upserts replace).
        let again = clock.checkpoint(10 * S);
        assert_eq!(billing(&ops)[0].id, billing(&again)[0].id);
    }

    #[test]
    fn ids_are_unique() {
        let mut clock = BillingClock::new("c1", SECRET, 1);
        let mut ps = vec![p("dr", Role::Practitioner), p("pt", Role::Patient)];
        let mut ids = BTreeSet::new();
        for i in 0..10 {
            ps[1].present = i % 2 == 0;
            for op in clock.observe(i * S, view(&ps), false) {
                match op {
                    Op::Billing { interval } if interval.end.is_none() => {
                        assert!(ids.insert(interval.id))
                    }
                    Op::Presence { interval } if interval.end.is_none() => {
                        assert!(ids.insert(interval.id))
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(ids.len(), 1 + 5 + 5);
    }

    #[test]
    fn pseudonyms_are_stable_and_keyed() {
        let a = patient_pseudonym(SECRET, "c1", "Jane Patient");
        assert_eq!(a, patient_pseudonym(SECRET, "c1", "Jane Patient"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("pt-"));
        assert_ne!(a, patient_pseudonym(SECRET, "c2", "Jane Patient"));
        assert_ne!(
            a,
            patient_pseudonym(b"another-secret", "c1", "Jane Patient")
        );
    }

    fn interval(id: &str, start: Millis, end: Option<Millis>, recovered: bool) -> BillingInterval {
        BillingInterval {
            id: id.into(),
            consultation: "c".into(),
            practitioner: "Dr".into(),
            start,
            end,
            checkpoint: end.unwrap_or(start),
            recovered,
        }
    }

    #[test]
    fn merged_summary_sums_stored_intervals() {
        let billing = vec![
            interval("1", 0, Some(10 * S), false),
            interval("2", 20 * S, Some(25 * S), true),
        ];
        let s = merge_summary("c", &billing, &[], None, None).expect("summary");
        assert_eq!(s.billable_ms, 15 * S);
        assert!(s.recovered);
        assert_eq!(s.end, Some(25 * S));
        assert_eq!(s.practitioner, "Dr");
        // An open interval: no end yet, and it does not count until closed.
        let billing = vec![
            interval("1", 0, Some(10 * S), false),
            interval("3", 30 * S, None, false),
        ];
        let s = merge_summary("c", &billing, &[], None, None).expect("summary");
        assert_eq!((s.billable_ms, s.end), (10 * S, None));
        // The earlier summary's pseudonym wins (first patient).
        let mut existing = s.clone();
        existing.patient_pseudonym = "pt-000000000001".into();
        let mut hint = s.clone();
        hint.patient_pseudonym = "pt-000000000002".into();
        let s = merge_summary("c", &billing, &[], Some(&existing), Some(&hint)).expect("summary");
        assert_eq!(s.patient_pseudonym, "pt-000000000001");
    }

    #[test]
    fn rounding() {
        assert_eq!(rounded_units(0, Rounding::PerStartedMinute), 0);
        assert_eq!(rounded_units(1, Rounding::PerStartedMinute), 1);
        assert_eq!(rounded_units(60_000, Rounding::PerStartedMinute), 1);
        assert_eq!(rounded_units(60_001, Rounding::PerStartedMinute), 2);
        assert_eq!(rounded_units(1_999, Rounding::PerSecond), 1);
        assert_eq!(rounded_units(-5, Rounding::PerSecond), 0);
    }

    #[test]
    fn times_round_trip() {
        for (text, ms) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T12:34:56.789Z", 951_827_696_789),
            ("2026-12-31T23:59:59Z", 1_798_761_599_000),
        ] {
            assert_eq!(time::parse(text), Ok(ms), "{text}");
            assert_eq!(time::format(ms), text);
        }
        assert_eq!(
            time::parse("2026-01-02"),
            time::parse("2026-01-02T00:00:00Z")
        );
        assert_eq!(
            time::parse("2026-01-02T03:04Z"),
            time::parse("2026-01-02T03:04:00+00:00")
        );
        assert_eq!(
            time::parse("2026-01-02T03:04:05.5Z"),
            Ok(time::parse("2026-01-02T03:04:05Z").unwrap() + 500)
        );
        assert_eq!(time::format_date(951_827_696_789), "2000-02-29");
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05+01:00",
            "2026-01-02T24:00:00Z",
            "2026-1-2",
            "２０２６-01-01",
            "2026-01-02T03:04:05.Z",
            "99999999999999999999-01-01",
        ] {
            assert!(time::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut rows = CsvRows::new();
        let mut out = String::new();
        rows.record(
            &mut out,
            [
                "Dr \"Who\", MD",
                "=HYPERLINK(\"x\")",
                "+1",
                "-2",
                "@SUM(A1)",
                "\tx",
                "\rx",
                "O'Brien",
                "a = b",
                "",
            ],
        );
        assert_eq!(
            out,
            "\"Dr \"\"Who\"\", MD\",\"'=HYPERLINK(\"\"x\"\")\",'+1,'-2,'@SUM(A1),'\tx,\"'\rx\",O'Brien,a = b,\n"
        );
        let s = ConsultationSummary {
            consultation: "c1".into(),
            practitioner: "Dr A".into(),
            patient_pseudonym: "pt-0123456789ab".into(),
            start: 0,
            end: Some(61_500),
            billable_ms: 61_500,
            participants: 2,
            recovered: true,
        };
        let mut out = String::new();
        rows.summary(&mut out, &s, Rounding::PerStartedMinute);
        assert_eq!(
            out,
            "c1,Dr A,pt-0123456789ab,1970-01-01T00:00:00Z,1970-01-01T00:01:01.500Z,61.500,2,minute,2,true\n"
        );
        assert_eq!(CSV_HEADER.split(',').count(), out.split(',').count());
        let mut w = ExportWriter::new(ExportFormat::Csv, Rounding::PerSecond);
        let mut out = String::new();
        w.begin(&mut out);
        w.row(
            &mut out,
            &ConsultationSummary {
                end: None,
                ..s.clone()
            },
        );
        assert_eq!(
            out,
            format!(
                "{CSV_HEADER}c1,Dr A,pt-0123456789ab,1970-01-01T00:00:00Z,,61.500,61,second,2,true\n"
            )
        );
        let mut w = ExportWriter::new(ExportFormat::Json, Rounding::PerSecond);
        let mut out = String::new();
        w.begin(&mut out);
        w.row(&mut out, &s);
        w.row(&mut out, &s);
        w.end(&mut out);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v[1]["billable_units"], 61);
        assert_eq!(v[0]["end"], "1970-01-01T00:01:01.500Z");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "teleconsult-billing-{}-{name}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn queue_is_durable_bounded_and_compacts() {
        let dir = temp_dir("queue");
        let mut q = OutageQueue::open(&dir, 4).expect("open");
        let b = |cp| Op::Billing {
            interval: BillingInterval {
                checkpoint: cp,
                ..interval("b1", 0, None, false)
            },
        };
        for cp in 1..=4 {
            q.push(&b(cp)).expect("push");
        }
        assert_eq!(q.len(), 4);
        // Full: compaction keeps the last checkpoint of b1, so there is room again.
        q.push(&Op::Recover { boot: 9 })
            .expect("push after compaction");
        assert_eq!(
            q.read_all().expect("read"),
            vec![b(4), Op::Recover { boot: 9 }]
        );
        // Reopening counts what is there; a torn last line is skipped.
        drop(q);
        let path = dir.join(OutageQueue::FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"op\":\"billing\",\"interv").expect("write");
        drop(f);
        let mut q = OutageQueue::open(&dir, 4).expect("reopen");
        assert_eq!(q.len(), 2);
        // Distinct ids cannot be compacted away: the queue refuses beyond its bound.
        for i in 0..2 {
            q.push(&Op::Audit {
                event: AuditEvent {
                    id: format!("a{i}"),
                    at: 0,
                    actor: "system".into(),
                    action: "x".into(),
                    consultation: None,
                    target: None,
                },
            })
            .expect("push");
        }
        assert!(matches!(
            q.push(&Op::Recover { boot: 10 }),
            Err(QueueError::Full(4))
        ));
        q.clear().expect("clear");
        assert!(q.is_empty());
        assert!(q.read_all().expect("read").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
