//! The consultation service: every live consultation, each behind its own mutex (never held
//! across an `.await`: every method here is synchronous), applying [`crate::rules`] and carrying
//! out their effects — media sessions through a [`MediaPlane`], presence and audit through an
//! [`Observer`] (billing), reconnect deadlines through tokio timers.

use crate::ConsultationEvent;
use crate::chat::{ChatError, ChatKind, ChatMessage, ChatRecorder};
use crate::config::ConsultationConfig;
use crate::event::{MediaFailure, Outbox};
use crate::ids::{ConsultationId, ParticipantId, TrackId};
use crate::invitation::{Credential, SeatKey};
use crate::model::{MediaKind, ParticipantState, Presence, TrackInfo, TrackSource};
use crate::rules::{
    ActionError, Admissions, Consultation, Effect, JoinError, JoinRequest, Joined, Limits,
    RecordingEffect, RecordingError,
};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use teleconsult_store::{ConsultationStatus, InvitationStore, StoreError};

/// Who is told about presence changes and audited actions (billing implements it).
pub trait Observer: Send + Sync {
    /// The participants of `consultation` after a change of presence.
    fn presence(
        &self,
        consultation: &ConsultationId,
        participants: &mut dyn Iterator<Item = Presence<'_>>,
        ended: bool,
    );
    /// `actor` (a participant id) did `action` (to `target`).
    fn audit(&self, action: &str, actor: &str, consultation: &ConsultationId, target: Option<&str>);
    /// This server stopped serving `consultation` without it ending (cluster fencing): forget
    /// it, write nothing more for it (its new owner does).
    fn evicted(&self, _consultation: &ConsultationId) {}
}

/// The media plane as the consultation sees it: sessions are started for admitted participants
/// and stopped when they go. What a session reports comes back through its [`MediaSession`].
pub trait MediaPlane: Send + Sync {
    /// Create the participant's media session (asynchronously).
    fn start(&self, session: MediaSession);
    /// Close the participant's media session, if any.
    fn stop(&self, participant: &ParticipantId);
}

/// One participant's media session, as handed to the [`MediaPlane`]: the way its offers,
/// tracks and failures reach the consultation. Reports of a superseded session are ignored.
#[derive(Clone)]
pub struct MediaSession {
    pub consultation: ConsultationId,
    pub participant: ParticipantId,
    generation: u64,
    service: ConsultationService,
}

impl MediaSession {
    fn with<T>(&self, f: impl FnOnce(&mut Consultation) -> T) -> Option<T> {
        let entry = self.service.entry(self.consultation.as_str())?;
        let mut c = lock(&entry);
        Some(f(&mut c))
    }

    /// Whether this is still the participant's current connection (a session started for a
    /// connection that has since closed must be stopped by the media plane).
    pub fn is_current(&self) -> bool {
        self.with(|c| c.is_current(self.participant.as_str(), self.generation))
            .unwrap_or(false)
    }

    /// An offer for the participant's client.
    pub fn offer(&self, sdp: String) {
        self.with(|c| c.media_offer(self.participant.as_str(), self.generation, sdp));
    }

    /// The participant now publishes `track`: the others in the call are told.
    pub fn track_published(&self, track: TrackId, kind: MediaKind, source: TrackSource) {
        self.with(|c| {
            c.track_published(
                self.participant.as_str(),
                self.generation,
                TrackInfo {
                    id: track,
                    kind,
                    source,
                },
            )
        });
    }

    pub fn track_unpublished(&self, track: &TrackId) {
        self.with(|c| c.track_unpublished(self.participant.as_str(), self.generation, track));
    }

    pub fn failed(&self, failure: MediaFailure) {
        self.with(|c| c.media_failed(self.participant.as_str(), self.generation, failure));
    }
}

/// Where a consultation's admissions are kept for another server to take over (cluster mode):
/// told after every change of presence, while the consultation's lock is held (so it must not
/// block: queue the write, and skip it when nothing changed).
pub trait AdmissionRecorder: Send + Sync {
    fn admissions(&self, consultation: &ConsultationId, admissions: Admissions);
}

/// Who records (the server's recording service): started, let through and stopped by the
/// rules' [`RecordingEffect`]s, while the consultation's lock is held (so it must not block:
/// queue the work).
pub trait Recorder: Send + Sync {
    fn apply(&self, consultation: &ConsultationId, effect: RecordingEffect);
}

/// A media plane that does nothing (consultations without media: unit tests, tools).
pub struct NoMedia;

impl MediaPlane for NoMedia {
    fn start(&self, _: MediaSession) {}
    fn stop(&self, _: &ParticipantId) {}
}

struct Inner {
    limits: Limits,
    /// How long an ended consultation is remembered (so late joins are told it ended).
    keep_ended: Duration,
    media: Arc<dyn MediaPlane>,
    observer: OnceLock<Arc<dyn Observer>>,
    /// Where chat is recorded at rest.
    chat_recorder: OnceLock<Arc<dyn ChatRecorder>>,
    /// Where revoked seats and ended consultations are recorded.
    invitations: OnceLock<Arc<dyn InvitationStore>>,
    /// Who records consultations (none: a recording request is refused).
    recorder: OnceLock<Arc<dyn Recorder>>,
    consultations: DashMap<ConsultationId, Arc<Mutex<Consultation>>>,
    /// Where admissions are kept across nodes (cluster mode only).
    admission_recorder: OnceLock<Arc<dyn AdmissionRecorder>>,
    /// Admissions read from the store at a takeover, for the consultation's first join here.
    restored: DashMap<ConsultationId, Admissions>,
    next_generation: AtomicU64,
}

/// The consultation service. Cheap to clone.
#[derive(Clone)]
pub struct ConsultationService {
    inner: Arc<Inner>,
}

fn lock(c: &Mutex<Consultation>) -> std::sync::MutexGuard<'_, Consultation> {
    // A poisoned lock means a panic elsewhere while holding it; the data is still consistent
    // enough to serve (every mutation in the rules is a single assignment or push).
    c.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConsultationService {
    /// `keep_ended`: how long an ended consultation is remembered (at least a token's lifetime).
    pub fn new(
        config: &ConsultationConfig,
        keep_ended: Duration,
        media: Arc<dyn MediaPlane>,
    ) -> Self {
        ConsultationService {
            inner: Arc::new(Inner {
                limits: Limits {
                    max_participants: config.max_participants,
                    reconnect_grace: Duration::from_secs(config.reconnect_grace_secs),
                    chat: crate::chat::ChatLimits {
                        max_chars: config.chat_max_chars,
                        burst: config.chat_burst,
                        refill: Duration::from_millis(config.chat_refill_ms),
                        history: config.chat_history,
                    },
                },
                keep_ended,
                media,
                observer: OnceLock::new(),
                chat_recorder: OnceLock::new(),
                invitations: OnceLock::new(),
                recorder: OnceLock::new(),
                consultations: DashMap::new(),
                admission_recorder: OnceLock::new(),
                restored: DashMap::new(),
                next_generation: AtomicU64::new(1),
            }),
        }
    }

    /// Attach the observer (billing), once, at start-up: from then on every change of presence
    /// reaches it, and admissions and removals are audited.
    pub fn attach_observer(&self, observer: Arc<dyn Observer>) {
        let _ = self.inner.observer.set(observer);
    }

    /// Attach the chat recorder (the documents crate's archive), once, at start-up: from then
    /// on every chat message and notice is recorded at rest.
    pub fn attach_chat_recorder(&self, recorder: Arc<dyn ChatRecorder>) {
        let _ = self.inner.chat_recorder.set(recorder);
    }

    /// Attach the invitation store, once, at start-up: from then on a removed participant's
    /// invitation is revoked there, and an ended consultation is marked ended.
    pub fn attach_invitations(&self, store: Arc<dyn InvitationStore>) {
        let _ = self.inner.invitations.set(store);
    }

    /// Attach the recorder, once, at start-up: from then on recordings can be requested (in
    /// consultations whose policy allows them).
    pub fn attach_recorder(&self, recorder: Arc<dyn Recorder>) {
        let _ = self.inner.recorder.set(recorder);
    }

    /// Attach where admissions are kept across nodes (cluster mode), once, at start-up.
    pub fn attach_admission_recorder(&self, recorder: Arc<dyn AdmissionRecorder>) {
        let _ = self.inner.admission_recorder.set(recorder);
    }

    /// This server takes `consultation` over from another (cluster mode): `admissions` (as the
    /// store keeps them) apply when it is next created here — its admitted seats come back in
    /// at their first join, its removed seats stay out. Ignored if it is live here already; an
    /// abandoned copy here (everyone left) is forgotten first.
    pub fn restore_admissions(&self, consultation: &ConsultationId, admissions: Admissions) {
        self.inner
            .consultations
            .remove_if(consultation, |_, c| lock(c).is_abandoned());
        if self.inner.consultations.contains_key(consultation) {
            return;
        }
        self.inner.restored.insert(consultation.clone(), admissions);
    }

    /// Record in the invitation store (in the background; failures are logged, ids only).
    fn record(&self, consultation: &ConsultationId, what: Recorded) {
        let Some(store) = self.inner.invitations.get().cloned() else {
            return;
        };
        let consultation = consultation.clone();
        tokio::spawn(async move {
            let result = match &what {
                Recorded::Revoked(jti) => {
                    store
                        .revoke_invitation(jti, crate::invitation::now_millis())
                        .await
                }
                Recorded::Ended => {
                    store
                        .set_consultation_status(consultation.as_str(), ConsultationStatus::Ended)
                        .await
                }
            };
            match result {
                // A consultation or seat without a record (the pre-accounts practitioner path).
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => {
                    tracing::error!(%consultation, error = %e, "cannot record a revoked seat or an ended consultation")
                }
            }
        });
    }

    fn entry(&self, id: &str) -> Option<Arc<Mutex<Consultation>>> {
        self.inner.consultations.get(id).map(|c| c.clone())
    }

    /// Consultations held in memory and participants present in them (a node's load).
    pub fn load(&self) -> (usize, usize) {
        let consultations = self.inner.consultations.len();
        let participants: usize = self
            .inner
            .consultations
            .iter()
            .map(|c| lock(c.value()).present())
            .sum();
        (consultations, participants)
    }

    fn update_gauges(&self) {
        let (consultations, participants) = self.load();
        metrics::gauge!(crate::metric_names::CONSULTATIONS).set(consultations as f64);
        metrics::gauge!(crate::metric_names::PARTICIPANTS).set(participants as f64);
    }

    /// Carry out what a change asked for. `c` is still locked: presence is read from it, and
    /// media sessions start only after the events announcing them were queued.
    fn apply(&self, c: &Consultation, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::PresenceChanged => {
                    if let Some(o) = self.inner.observer.get() {
                        o.presence(c.id(), &mut c.presence(), c.is_ended());
                    }
                    if let Some(r) = self.inner.admission_recorder.get() {
                        r.admissions(c.id(), c.admissions());
                    }
                }
                Effect::Audit {
                    action,
                    actor,
                    target,
                } => {
                    if let Some(o) = self.inner.observer.get() {
                        o.audit(
                            action,
                            actor.as_str(),
                            c.id(),
                            target.as_ref().map(|t| t.as_str()),
                        );
                    }
                    tracing::info!(consultation = %c.id(), by = %actor, target = ?target.as_ref().map(|t| t.as_str()), action, "practitioner action");
                }
                Effect::StartMedia {
                    participant,
                    generation,
                } => self.inner.media.start(MediaSession {
                    consultation: c.id().clone(),
                    participant,
                    generation,
                    service: self.clone(),
                }),
                Effect::StopMedia { participant } => self.inner.media.stop(&participant),
                Effect::RevokeSeat { seat } => {
                    if let SeatKey::Invitation(jti) = seat {
                        self.record(c.id(), Recorded::Revoked(jti));
                    }
                }
                Effect::Recording(effect) => {
                    if let Some(r) = self.inner.recorder.get() {
                        r.apply(c.id(), effect);
                    }
                }
                Effect::RecordChat(message) => {
                    if let Some(r) = self.inner.chat_recorder.get() {
                        r.record(c.id(), &message);
                    }
                }
                Effect::WakeAt(deadline) => {
                    let this = self.clone();
                    let id = c.id().clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
                        this.expire(&id, Instant::now());
                    });
                }
            }
        }
    }

    /// Join (or rejoin) the consultation and seat `credential` names (verified by the edge);
    /// `secret` is what the tab presents to resume its own seat.
    pub fn join(
        &self,
        credential: &Credential,
        secret: Option<&str>,
        outbox: Outbox,
    ) -> Result<Joined, JoinError> {
        let consultation = credential.consultation();
        let role = credential.role();
        let seat = credential.seat();
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let entry = self
            .inner
            .consultations
            .entry(consultation.clone())
            .or_insert_with(|| {
                let restored = self
                    .inner
                    .restored
                    .remove(consultation)
                    .map(|(_, a)| a)
                    .unwrap_or_default();
                Arc::new(Mutex::new(
                    Consultation::new(consultation.clone(), self.inner.limits)
                        .with_policy(credential.policy())
                        .with_admissions(restored),
                ))
            })
            .clone();
        let mut c = lock(&entry);
        let request = JoinRequest {
            seat: &seat,
            role,
            label: credential.label(),
            secret,
        };
        let (joined, effects) = c.join(request, generation, outbox)?;
        self.apply(&c, effects);
        drop(c);
        tracing::info!(%consultation, participant = %joined.participant, role = role.as_str(), admitted = joined.admitted, second_device = joined.second_device, "joined");
        self.update_gauges();
        Ok(joined)
    }

    fn act(
        &self,
        consultation: &ConsultationId,
        f: impl FnOnce(&mut Consultation) -> Result<Vec<Effect>, ActionError>,
    ) -> Result<(), ActionError> {
        let entry = self
            .entry(consultation.as_str())
            .ok_or(ActionError::UnknownParticipant)?;
        let mut c = lock(&entry);
        let effects = f(&mut c)?;
        self.apply(&c, effects);
        drop(c);
        self.update_gauges();
        Ok(())
    }

    /// A practitioner admits a waiting participant.
    pub fn admit(
        &self,
        consultation: &ConsultationId,
        actor: &ParticipantId,
        target: &str,
    ) -> Result<(), ActionError> {
        self.act(consultation, |c| c.admit(actor, target))
    }

    /// A practitioner refuses a waiting participant.
    pub fn reject(
        &self,
        consultation: &ConsultationId,
        actor: &ParticipantId,
        target: &str,
    ) -> Result<(), ActionError> {
        self.act(consultation, |c| c.reject(actor, target))
    }

    /// A practitioner removes a participant (waiting or in the call).
    pub fn remove(
        &self,
        consultation: &ConsultationId,
        actor: &ParticipantId,
        target: &str,
    ) -> Result<(), ActionError> {
        self.act(consultation, |c| c.remove(actor, target))
    }

    /// The seat's link was revoked: whoever holds it is removed from `consultation` now (in
    /// the call or waiting). Returns whether anyone was.
    pub fn revoke_seat(&self, consultation: &ConsultationId, seat: &SeatKey) -> bool {
        let Some(entry) = self.entry(consultation.as_str()) else {
            return false;
        };
        let mut c = lock(&entry);
        let effects = c.revoke_seat(seat);
        let removed = !effects.is_empty();
        self.apply(&c, effects);
        drop(c);
        self.update_gauges();
        removed
    }

    /// A practitioner ends the consultation for everyone.
    pub fn end(
        &self,
        consultation: &ConsultationId,
        actor: &ParticipantId,
    ) -> Result<(), ActionError> {
        self.act(consultation, |c| c.end(actor))?;
        self.record(consultation, Recorded::Ended);
        self.forget_ended_later(consultation);
        Ok(())
    }

    /// Keep an ended consultation (so late joins get "ended", not a fresh consultation) for as
    /// long as a token for it is likely to be valid, then forget it.
    fn forget_ended_later(&self, consultation: &ConsultationId) {
        let this = self.clone();
        let consultation = consultation.clone();
        let keep = self.inner.keep_ended;
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            this.inner
                .consultations
                .remove_if(&consultation, |_, c| lock(c).is_ended());
            this.update_gauges();
        });
    }

    /// Check that `participant` is admitted (for media signalling).
    pub fn require_admitted(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
    ) -> Result<(), ActionError> {
        let entry = self
            .entry(consultation.as_str())
            .ok_or(ActionError::UnknownParticipant)?;
        let c = lock(&entry);
        c.require_admitted(participant.as_str())
    }

    pub fn set_mute(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
        kind: MediaKind,
        muted: bool,
    ) -> Result<(), ActionError> {
        let entry = self
            .entry(consultation.as_str())
            .ok_or(ActionError::UnknownParticipant)?;
        let mut c = lock(&entry);
        c.set_mute(participant.as_str(), kind, muted)
    }

    /// `participant` sends a chat message (`ChatKind::Chat`) or a notice to the waiting room
    /// (`ChatKind::Notice`): checked, delivered, recorded. Contents are never logged.
    pub fn send_chat(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
        kind: ChatKind,
        text: &str,
    ) -> Result<ChatMessage, ChatError> {
        let entry = self
            .entry(consultation.as_str())
            .ok_or(ChatError::NotAdmitted)?;
        let mut c = lock(&entry);
        let (message, effects) = c.send_chat(
            participant.as_str(),
            kind,
            text,
            Instant::now(),
            crate::invitation::now_millis(),
        )?;
        self.apply(&c, effects);
        Ok(message)
    }

    /// `participant` starts or stops sharing their screen (one at a time per consultation).
    pub fn set_screen_share(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
        active: bool,
    ) -> Result<(), ActionError> {
        let entry = self
            .entry(consultation.as_str())
            .ok_or(ActionError::UnknownParticipant)?;
        let mut c = lock(&entry);
        c.set_screen_share(participant.as_str(), active)
    }

    fn recording_act(
        &self,
        consultation: &ConsultationId,
        f: impl FnOnce(&mut Consultation) -> Result<Vec<Effect>, RecordingError>,
    ) -> Result<(), RecordingError> {
        let entry = self
            .entry(consultation.as_str())
            .ok_or(RecordingError::NotInCall)?;
        let mut c = lock(&entry);
        let effects = f(&mut c)?;
        self.apply(&c, effects);
        Ok(())
    }

    /// A practitioner asks to record (their consent given to the text in `language`).
    pub fn request_recording(
        &self,
        consultation: &ConsultationId,
        actor: &ParticipantId,
        language: &str,
    ) -> Result<(), RecordingError> {
        if self.inner.recorder.get().is_none() {
            return Err(RecordingError::NotAllowed);
        }
        let id = format!("rec_{}", crate::invitation::random_id());
        self.recording_act(consultation, |c| c.request_recording(actor, language, id))
    }

    /// A participant accepts or declines (or withdraws from) the running recording.
    pub fn answer_recording(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
        recording: &str,
        accept: bool,
        text_version: &str,
        language: &str,
    ) -> Result<(), RecordingError> {
        self.recording_act(consultation, |c| {
            c.answer_recording(participant, recording, accept, text_version, language)
        })
    }

    /// A practitioner stops the running recording.
    pub fn stop_recording(
        &self,
        consultation: &ConsultationId,
        actor: &ParticipantId,
    ) -> Result<(), RecordingError> {
        self.recording_act(consultation, |c| c.stop_recording(actor))
    }

    /// (end_to_end) `participant` publishes its ECDH public key to the others in the call.
    pub fn publish_e2ee_key(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
        key: &str,
    ) -> Result<(), crate::rules::E2eeError> {
        let entry = self
            .entry(consultation.as_str())
            .ok_or(crate::rules::E2eeError::NotAdmitted)?;
        let mut c = lock(&entry);
        c.publish_e2ee_key(participant.as_str(), key)
    }

    /// (end_to_end) A practitioner sends `to` the media key of `epoch`, wrapped for `to`.
    pub fn send_e2ee_key(
        &self,
        consultation: &ConsultationId,
        actor: &ParticipantId,
        to: &str,
        epoch: u32,
        wrapped: &str,
    ) -> Result<(), crate::rules::E2eeError> {
        let entry = self
            .entry(consultation.as_str())
            .ok_or(crate::rules::E2eeError::NotAdmitted)?;
        let mut c = lock(&entry);
        c.send_e2ee_key(actor.as_str(), to, epoch, wrapped)
    }

    /// The policy of a live consultation.
    pub fn policy(&self, consultation: &str) -> Option<teleconsult_store::Policy> {
        self.entry(consultation).map(|e| lock(&e).policy())
    }

    /// The participant leaves for good.
    pub fn leave(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
        generation: u64,
    ) {
        self.gone(consultation, participant, generation, true);
    }

    /// The participant's connection dropped without `leave`: they may come back within the
    /// reconnect grace.
    pub fn disconnected(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
        generation: u64,
    ) {
        self.gone(consultation, participant, generation, false);
    }

    fn gone(
        &self,
        consultation: &ConsultationId,
        participant: &ParticipantId,
        generation: u64,
        for_good: bool,
    ) {
        let Some(entry) = self.entry(consultation.as_str()) else {
            return;
        };
        let mut c = lock(&entry);
        let effects = c.gone(participant.as_str(), generation, for_good, Instant::now());
        if effects.is_empty() {
            return;
        }
        self.apply(&c, effects);
        drop(c);
        self.forget_if_abandoned(consultation);
        tracing::info!(%consultation, %participant, for_good, "connection closed");
        self.update_gauges();
    }

    fn expire(&self, consultation: &ConsultationId, now: Instant) {
        let Some(entry) = self.entry(consultation.as_str()) else {
            return;
        };
        let mut c = lock(&entry);
        let effects = c.expire(now);
        if effects.is_empty() {
            return;
        }
        self.apply(&c, effects);
        drop(c);
        self.forget_if_abandoned(consultation);
        self.update_gauges();
    }

    /// Drop a consultation everyone has left (not an ended one). Checked again under the map's
    /// lock, so a join that slipped in between keeps its consultation.
    fn forget_if_abandoned(&self, consultation: &ConsultationId) {
        self.inner
            .consultations
            .remove_if(consultation, |_, c| lock(c).is_abandoned());
    }

    /// The id of the participant holding `seat` in `consultation`, if they are in the call:
    /// admitted, or reconnecting after having been admitted (documents access).
    pub fn in_call_participant(&self, consultation: &str, seat: &SeatKey) -> Option<ParticipantId> {
        let entry = self.entry(consultation)?;
        let c = lock(&entry);
        c.in_call_participant(seat)
    }

    /// End `consultation` for everyone, whoever asks (it was cancelled): everyone is told it
    /// ended and disconnected. Returns whether it was live.
    pub fn cancel(&self, consultation: &ConsultationId) -> bool {
        let Some(entry) = self.entry(consultation.as_str()) else {
            return false;
        };
        let mut c = lock(&entry);
        let effects = c.end_by_system();
        self.apply(&c, effects);
        drop(c);
        self.forget_ended_later(consultation);
        self.update_gauges();
        true
    }

    /// This server no longer owns `consultation` (cluster fencing: a newer epoch exists, or its
    /// lease could not be renewed): close every connection to it with [`Disconnect::Moved`],
    /// stop their media, tell the observer, and forget it here, without recording it ended or
    /// anyone as left. Returns whether it was live here.
    pub fn evict(&self, consultation: &ConsultationId) -> bool {
        self.inner.restored.remove(consultation);
        let Some((_, entry)) = self.inner.consultations.remove(consultation) else {
            return false;
        };
        let mut c = lock(&entry);
        let effects = c.evict();
        for effect in effects {
            if let Effect::StopMedia { participant } = effect {
                self.inner.media.stop(&participant);
            }
        }
        drop(c);
        if let Some(o) = self.inner.observer.get() {
            o.evicted(consultation);
        }
        tracing::warn!(%consultation, "consultation evicted: this server no longer owns it");
        self.update_gauges();
        true
    }

    /// Whether `consultation` is held here with anyone present (connected, or within their
    /// reconnect grace).
    pub fn is_live(&self, consultation: &str) -> bool {
        self.entry(consultation).is_some_and(|e| {
            let c = lock(&e);
            !c.is_ended() && !c.is_abandoned()
        })
    }

    /// Ids of the consultations held here.
    pub fn consultation_ids(&self) -> Vec<ConsultationId> {
        self.inner
            .consultations
            .iter()
            .map(|e| e.key().clone())
            .collect()
    }

    /// Send `event` to every participant in the call (admitted, or admitted and reconnecting).
    pub fn broadcast_in_call(&self, consultation: &str, event: &ConsultationEvent) {
        if let Some(entry) = self.entry(consultation) {
            lock(&entry).broadcast_in_call(event);
        }
    }

    /// Participant ids of a consultation (tests, diagnostics).
    pub fn participant_ids(&self, consultation: &str) -> Vec<ParticipantId> {
        self.entry(consultation)
            .map(|e| lock(&e).participant_ids())
            .unwrap_or_default()
    }

    /// Current state of a participant, if known.
    pub fn participant_state(
        &self,
        consultation: &str,
        participant: &str,
    ) -> Option<ParticipantState> {
        self.entry(consultation)
            .and_then(|e| lock(&e).participant_state(participant))
    }
}

/// What [`ConsultationService::record`] writes to the invitation store.
enum Recorded {
    Revoked(String),
    Ended,
}
