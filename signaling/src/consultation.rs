//! The consultation service: who is in which consultation, in which state, and who may see and
//! do what. It decides; the WebSocket edge parses and delivers; the SFU moves packets.
//!
//! Each consultation is guarded by its own mutex, never held across an `.await`: every method
//! here is synchronous and delivers messages through each participant's unbounded outbox.

use crate::config::Config;
use crate::protocol::{
    LeftReason, MediaKind, ParticipantInfo, ParticipantState, ServerMessage, TrackInfo, close,
};
use crate::token::{Claims, Role};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teleconsult_sfu::{Sfu, SfuEvent};
use tokio::sync::mpsc::UnboundedSender;

/// What the edge delivers to one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Message(ServerMessage),
    /// Close the socket with this code and reason, after the messages before it.
    Close(u16, String),
}

/// A live connection's handles, given to the service at join.
#[derive(Clone)]
pub struct Connection {
    pub outbox: UnboundedSender<Outbound>,
    pub media_events: UnboundedSender<SfuEvent>,
}

/// Why a join was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("consultation is full")]
    Full,
    #[error("consultation has ended")]
    Ended,
}

impl JoinError {
    pub fn close_code(&self) -> u16 {
        match self {
            JoinError::Full => close::FULL,
            JoinError::Ended => close::ENDED,
        }
    }
}

/// Why a request was refused (sent back as an `error` message; the connection stays).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    #[error("only a practitioner may do this")]
    Forbidden,
    #[error("no such participant in this consultation")]
    UnknownParticipant,
    #[error("that participant is not in the waiting room")]
    NotWaiting,
    #[error("you have not been admitted yet")]
    NotAdmitted,
    #[error("you cannot remove yourself; use leave")]
    SelfRemoval,
}

/// A successful join.
#[derive(Debug)]
pub struct Joined {
    pub participant: String,
    /// Connection generation: a later join of the same person supersedes this one.
    pub generation: u64,
    pub admitted: bool,
}

struct Participant {
    id: String,
    identity: String,
    role: Role,
    state: ParticipantState,
    /// State to return to after reconnecting.
    resume: ParticipantState,
    audio_muted: bool,
    video_muted: bool,
    generation: u64,
    conn: Option<Connection>,
    tracks: Vec<TrackInfo>,
}

impl Participant {
    fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id.clone(),
            role: self.role,
            display_name: self.identity.clone(),
            state: self.state,
            audio_muted: self.audio_muted,
            video_muted: self.video_muted,
        }
    }

    fn send(&self, msg: ServerMessage) {
        if let Some(c) = &self.conn {
            let _ = c.outbox.send(Outbound::Message(msg));
        }
    }

    fn close(&self, code: u16, reason: &str) {
        if let Some(c) = &self.conn {
            let _ = c.outbox.send(Outbound::Close(code, reason.to_string()));
        }
    }

    /// Sees the others and their media: admitted, or admitted-and-reconnecting.
    fn in_call(&self) -> bool {
        matches!(
            self.state,
            ParticipantState::Admitted | ParticipantState::Reconnecting
        ) && !(self.state == ParticipantState::Reconnecting
            && self.resume == ParticipantState::Waiting)
    }
}

#[derive(Default)]
struct Consultation {
    participants: Vec<Participant>,
    ended: bool,
}

impl Consultation {
    fn get(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }
    fn get_mut(&mut self, id: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }
    fn present(&self) -> usize {
        self.participants
            .iter()
            .filter(|p| p.state != ParticipantState::Left)
            .count()
    }
    /// The others an in-call participant sees.
    fn roster(&self, except: &str) -> Vec<ParticipantInfo> {
        self.participants
            .iter()
            .filter(|p| p.id != except && p.in_call())
            .map(Participant::info)
            .collect()
    }
    fn broadcast_in_call(&self, except: &str, msg: &ServerMessage) {
        for p in self
            .participants
            .iter()
            .filter(|p| p.id != except && p.in_call())
        {
            p.send(msg.clone());
        }
    }
    fn waiting_list(&self) -> Vec<ParticipantInfo> {
        self.participants
            .iter()
            .filter(|p| {
                p.state == ParticipantState::Waiting
                    || (p.state == ParticipantState::Reconnecting
                        && p.resume == ParticipantState::Waiting)
            })
            .map(Participant::info)
            .collect()
    }
    fn send_waiting_list(&self) {
        let list = self.waiting_list();
        for p in self
            .participants
            .iter()
            .filter(|p| p.role == Role::Practitioner && p.in_call())
        {
            p.send(ServerMessage::WaitingList {
                participants: list.clone(),
            });
        }
    }
}

struct Inner {
    config: Arc<Config>,
    sfu: Sfu,
    consultations: DashMap<String, Arc<Mutex<Consultation>>>,
    next_generation: AtomicU64,
    billing: std::sync::OnceLock<crate::billing::Billing>,
}

/// The consultation service. Cheap to clone.
#[derive(Clone)]
pub struct ConsultationService {
    inner: Arc<Inner>,
}

fn new_participant_id() -> String {
    format!("p{:016x}", rand::random::<u64>())
}

fn lock(c: &Mutex<Consultation>) -> std::sync::MutexGuard<'_, Consultation> {
    // A poisoned lock means a panic elsewhere while holding it; the data is still consistent
    // enough to serve (every mutation here is a single assignment or push).
    c.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConsultationService {
    pub fn new(config: Arc<Config>, sfu: Sfu) -> Self {
        ConsultationService {
            inner: Arc::new(Inner {
                config,
                sfu,
                consultations: DashMap::new(),
                next_generation: AtomicU64::new(1),
                billing: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn sfu(&self) -> &Sfu {
        &self.inner.sfu
    }

    /// Attach the billing service (once, at start-up): from then on every change of presence
    /// reaches its billing clock, and admissions and removals are audited.
    pub fn attach_billing(&self, billing: crate::billing::Billing) {
        let _ = self.inner.billing.set(billing);
    }

    pub fn billing(&self) -> Option<&crate::billing::Billing> {
        self.inner.billing.get()
    }

    /// Billing hook: who is present now (call with the consultation locked, after a change).
    fn bill(&self, consultation: &str, c: &Consultation) {
        if let Some(b) = self.inner.billing.get() {
            let view = c.participants.iter().map(|p| crate::billing::Presence {
                id: &p.id,
                identity: &p.identity,
                role: p.role,
                present: p.state == ParticipantState::Admitted && p.conn.is_some(),
                left: p.state == ParticipantState::Left,
            });
            b.observe(consultation, view, c.ended);
        }
    }

    /// Audit hook: `actor` (a participant id) did `action` to `target`.
    fn audit(&self, action: &str, consultation: &str, actor: &str, target: Option<&str>) {
        if let Some(b) = self.inner.billing.get() {
            b.audit(action, actor, Some(consultation), target);
        }
    }

    fn consultation(&self, id: &str) -> Option<Arc<Mutex<Consultation>>> {
        self.inner.consultations.get(id).map(|c| c.clone())
    }

    fn update_gauges(&self) {
        let consultations = self.inner.consultations.len();
        let participants: usize = self
            .inner
            .consultations
            .iter()
            .map(|c| lock(c.value()).present())
            .sum();
        metrics::gauge!("teleconsult_consultations").set(consultations as f64);
        metrics::gauge!("teleconsult_participants").set(participants as f64);
    }

    /// Join (or rejoin) the consultation named by a verified token.
    pub fn join(&self, claims: &Claims, conn: Connection) -> Result<Joined, JoinError> {
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let entry = self
            .inner
            .consultations
            .entry(claims.consultation.clone())
            .or_default()
            .clone();
        let mut c = lock(&entry);
        if c.ended {
            return Err(JoinError::Ended);
        }
        let existing = c.participants.iter().position(|p| {
            p.identity == claims.identity
                && p.role == claims.role
                && p.state != ParticipantState::Left
        });
        let (id, admitted) = match existing {
            Some(i) => {
                // The same person again: a reconnection, or a second tab taking over.
                let p = &mut c.participants[i];
                if p.conn.is_some() {
                    p.close(4000, "replaced by a newer connection");
                    self.inner.sfu.remove_participant(&p.id);
                }
                if p.state == ParticipantState::Reconnecting {
                    p.state = p.resume;
                }
                p.generation = generation;
                p.conn = Some(conn);
                p.tracks.clear();
                (p.id.clone(), p.state == ParticipantState::Admitted)
            }
            None => {
                if c.present() >= self.inner.config.consultation.max_participants {
                    return Err(JoinError::Full);
                }
                let admitted = claims.role == Role::Practitioner;
                let state = if admitted {
                    ParticipantState::Admitted
                } else {
                    ParticipantState::Waiting
                };
                let id = new_participant_id();
                c.participants.push(Participant {
                    id: id.clone(),
                    identity: claims.identity.clone(),
                    role: claims.role,
                    state,
                    resume: state,
                    audio_muted: false,
                    video_muted: false,
                    generation,
                    conn: Some(conn),
                    tracks: Vec::new(),
                });
                (id, admitted)
            }
        };
        let me = c.get(&id).expect("participant was just inserted or found");
        let you = me.info();
        let participants = if admitted { c.roster(&id) } else { Vec::new() };
        me.send(ServerMessage::Joined {
            protocol: crate::protocol::PROTOCOL_VERSION,
            consultation: claims.consultation.clone(),
            you: you.clone(),
            participants,
        });
        if admitted {
            if existing.is_some() {
                c.broadcast_in_call(
                    &id,
                    &ServerMessage::ParticipantState {
                        participant: id.clone(),
                        state: ParticipantState::Admitted,
                    },
                );
            } else {
                c.broadcast_in_call(&id, &ServerMessage::ParticipantJoined { participant: you });
            }
            // The tracks others already publish.
            for p in c.participants.iter().filter(|p| p.id != id && p.in_call()) {
                for t in &p.tracks {
                    me.send(ServerMessage::TrackPublished {
                        participant: p.id.clone(),
                        track: t.clone(),
                    });
                }
            }
            if claims.role == Role::Practitioner {
                me.send(ServerMessage::WaitingList {
                    participants: c.waiting_list(),
                });
            }
        } else {
            c.send_waiting_list();
        }
        self.bill(&claims.consultation, &c);
        drop(c);
        if admitted {
            self.start_media(&claims.consultation, &id);
        }
        tracing::info!(consultation = %claims.consultation, participant = %id, role = claims.role.as_str(), admitted, "joined");
        self.update_gauges();
        Ok(Joined {
            participant: id,
            generation,
            admitted,
        })
    }

    /// Create the participant's media session in the SFU (asynchronously; the offer arrives on
    /// its media events channel).
    fn start_media(&self, consultation: &str, participant: &str) {
        let Some(entry) = self.consultation(consultation) else {
            return;
        };
        let events = {
            let c = lock(&entry);
            match c.get(participant).and_then(|p| p.conn.clone()) {
                Some(conn) => conn.media_events,
                None => return,
            }
        };
        let sfu = self.inner.sfu.clone();
        let (consultation, participant) = (consultation.to_string(), participant.to_string());
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = sfu
                .add_participant(&consultation, &participant, events)
                .await
            {
                tracing::warn!(%consultation, %participant, error = %e, "could not start media");
                if let Some(entry) = this.consultation(&consultation) {
                    let c = lock(&entry);
                    if let Some(p) = c.get(&participant) {
                        p.send(ServerMessage::error(
                            crate::protocol::ErrorCode::MediaFailed,
                            "the media session could not be created",
                        ));
                    }
                }
            }
        });
    }

    fn practitioner_action<T>(
        &self,
        consultation: &str,
        actor: &str,
        f: impl FnOnce(&mut Consultation) -> Result<T, ActionError>,
    ) -> Result<T, ActionError> {
        let entry = self
            .consultation(consultation)
            .ok_or(ActionError::UnknownParticipant)?;
        let mut c = lock(&entry);
        let me = c.get(actor).ok_or(ActionError::UnknownParticipant)?;
        if me.role != Role::Practitioner || !me.in_call() {
            return Err(ActionError::Forbidden);
        }
        f(&mut c)
    }

    /// A practitioner admits a waiting participant.
    pub fn admit(&self, consultation: &str, actor: &str, target: &str) -> Result<(), ActionError> {
        self.practitioner_action(consultation, actor, |c| {
            let p = c.get_mut(target).ok_or(ActionError::UnknownParticipant)?;
            if p.state != ParticipantState::Waiting {
                return Err(ActionError::NotWaiting);
            }
            p.state = ParticipantState::Admitted;
            p.resume = ParticipantState::Admitted;
            let info = p.info();
            let roster = c.roster(target);
            let p = c.get(target).expect("found above");
            p.send(ServerMessage::Admitted {
                participants: roster,
            });
            for other in c
                .participants
                .iter()
                .filter(|o| o.id != target && o.in_call())
            {
                for t in &other.tracks {
                    p.send(ServerMessage::TrackPublished {
                        participant: other.id.clone(),
                        track: t.clone(),
                    });
                }
            }
            c.broadcast_in_call(
                target,
                &ServerMessage::ParticipantJoined { participant: info },
            );
            c.send_waiting_list();
            self.bill(consultation, c);
            Ok(())
        })?;
        self.audit("participant.admit", consultation, actor, Some(target));
        tracing::info!(%consultation, participant = %target, by = %actor, "admitted");
        self.start_media(consultation, target);
        Ok(())
    }

    /// A practitioner refuses a waiting participant.
    pub fn reject(&self, consultation: &str, actor: &str, target: &str) -> Result<(), ActionError> {
        self.practitioner_action(consultation, actor, |c| {
            let p = c.get_mut(target).ok_or(ActionError::UnknownParticipant)?;
            if p.state != ParticipantState::Waiting {
                return Err(ActionError::NotWaiting);
            }
            p.state = ParticipantState::Left;
            p.send(ServerMessage::Rejected);
            p.close(close::FORBIDDEN, "not admitted by the practitioner");
            p.conn = None;
            c.send_waiting_list();
            self.bill(consultation, c);
            Ok(())
        })?;
        self.audit("participant.reject", consultation, actor, Some(target));
        tracing::info!(%consultation, participant = %target, by = %actor, "rejected");
        self.update_gauges();
        Ok(())
    }

    /// A practitioner removes a participant (waiting or in the call).
    pub fn remove(&self, consultation: &str, actor: &str, target: &str) -> Result<(), ActionError> {
        if actor == target {
            return Err(ActionError::SelfRemoval);
        }
        self.practitioner_action(consultation, actor, |c| {
            let p = c.get_mut(target).ok_or(ActionError::UnknownParticipant)?;
            if p.state == ParticipantState::Left {
                return Err(ActionError::UnknownParticipant);
            }
            let was_in_call = p.in_call();
            p.state = ParticipantState::Left;
            p.send(ServerMessage::Removed);
            p.close(close::FORBIDDEN, "removed by the practitioner");
            p.conn = None;
            p.tracks.clear();
            if was_in_call {
                c.broadcast_in_call(
                    target,
                    &ServerMessage::ParticipantLeft {
                        participant: target.to_string(),
                        reason: LeftReason::Removed,
                    },
                );
            }
            c.send_waiting_list();
            self.bill(consultation, c);
            Ok(())
        })?;
        self.audit("participant.remove", consultation, actor, Some(target));
        self.inner.sfu.remove_participant(target);
        tracing::info!(%consultation, participant = %target, by = %actor, "removed");
        self.update_gauges();
        Ok(())
    }

    /// A practitioner ends the consultation for everyone.
    pub fn end(&self, consultation: &str, actor: &str) -> Result<(), ActionError> {
        let ids = self.practitioner_action(consultation, actor, |c| {
            c.ended = true;
            let mut ids = Vec::new();
            for p in c.participants.iter_mut() {
                if p.state != ParticipantState::Left {
                    p.send(ServerMessage::ConsultationEnded);
                    p.close(close::ENDED, "consultation ended");
                    p.state = ParticipantState::Left;
                    p.conn = None;
                    ids.push(p.id.clone());
                }
            }
            self.bill(consultation, c);
            Ok(ids)
        })?;
        self.audit("consultation.end", consultation, actor, None);
        for id in ids {
            self.inner.sfu.remove_participant(&id);
        }
        tracing::info!(%consultation, by = %actor, "consultation ended");
        self.update_gauges();
        // Keep the ended consultation (so late joins get "ended", not a fresh consultation) only
        // as long as a token for it is likely to still be valid (at least a day).
        let this = self.clone();
        let consultation = consultation.to_string();
        let keep = Duration::from_secs(self.inner.config.auth.token_ttl_secs.max(24 * 3600));
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            this.inner
                .consultations
                .remove_if(&consultation, |_, c| lock(c).ended);
        });
        Ok(())
    }

    /// Check that `participant` is admitted (for media signalling).
    pub fn require_admitted(
        &self,
        consultation: &str,
        participant: &str,
    ) -> Result<(), ActionError> {
        let entry = self
            .consultation(consultation)
            .ok_or(ActionError::UnknownParticipant)?;
        let c = lock(&entry);
        match c.get(participant) {
            Some(p) if p.state == ParticipantState::Admitted => Ok(()),
            Some(_) => Err(ActionError::NotAdmitted),
            None => Err(ActionError::UnknownParticipant),
        }
    }

    pub fn set_mute(
        &self,
        consultation: &str,
        participant: &str,
        kind: MediaKind,
        muted: bool,
    ) -> Result<(), ActionError> {
        let entry = self
            .consultation(consultation)
            .ok_or(ActionError::UnknownParticipant)?;
        let mut c = lock(&entry);
        let p = c
            .get_mut(participant)
            .ok_or(ActionError::UnknownParticipant)?;
        if p.state != ParticipantState::Admitted {
            return Err(ActionError::NotAdmitted);
        }
        match kind {
            MediaKind::Audio => p.audio_muted = muted,
            MediaKind::Video => p.video_muted = muted,
        }
        c.broadcast_in_call(
            participant,
            &ServerMessage::Mute {
                participant: participant.to_string(),
                kind,
                muted,
            },
        );
        Ok(())
    }

    /// The SFU reports a track this participant now publishes.
    pub fn track_published(&self, consultation: &str, participant: &str, track: TrackInfo) {
        let Some(entry) = self.consultation(consultation) else {
            return;
        };
        let mut c = lock(&entry);
        let Some(p) = c.get_mut(participant) else {
            return;
        };
        p.tracks.push(track.clone());
        c.broadcast_in_call(
            participant,
            &ServerMessage::TrackPublished {
                participant: participant.to_string(),
                track,
            },
        );
    }

    pub fn track_unpublished(&self, consultation: &str, participant: &str, track: &str) {
        let Some(entry) = self.consultation(consultation) else {
            return;
        };
        let mut c = lock(&entry);
        let Some(p) = c.get_mut(participant) else {
            return;
        };
        p.tracks.retain(|t| t.id != track);
        c.broadcast_in_call(
            participant,
            &ServerMessage::TrackUnpublished {
                participant: participant.to_string(),
                track: track.to_string(),
            },
        );
    }

    /// The participant leaves for good.
    pub fn leave(&self, consultation: &str, participant: &str, generation: u64) {
        self.gone(consultation, participant, generation, true);
    }

    /// The participant's connection dropped without `leave`: they may come back.
    pub fn disconnected(&self, consultation: &str, participant: &str, generation: u64) {
        if self.gone(consultation, participant, generation, false) {
            let this = self.clone();
            let (consultation, participant) = (consultation.to_string(), participant.to_string());
            let grace = Duration::from_secs(self.inner.config.consultation.reconnect_grace_secs);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                this.reconnect_expired(&consultation, &participant, generation);
            });
        }
    }

    /// Returns whether the participant is now reconnecting.
    fn gone(&self, consultation: &str, participant: &str, generation: u64, for_good: bool) -> bool {
        let Some(entry) = self.consultation(consultation) else {
            return false;
        };
        let mut c = lock(&entry);
        let Some(p) = c.get_mut(participant) else {
            return false;
        };
        // A superseded connection closing says nothing about the person.
        if p.generation != generation || p.state == ParticipantState::Left {
            return false;
        }
        let was_in_call = p.in_call();
        let was_waiting = !was_in_call;
        p.conn = None;
        p.tracks.clear();
        let reconnecting = !for_good;
        if for_good {
            p.state = ParticipantState::Left;
        } else {
            p.resume = p.state;
            p.state = ParticipantState::Reconnecting;
        }
        let msg = if for_good {
            ServerMessage::ParticipantLeft {
                participant: participant.to_string(),
                reason: LeftReason::Left,
            }
        } else {
            ServerMessage::ParticipantState {
                participant: participant.to_string(),
                state: ParticipantState::Reconnecting,
            }
        };
        if was_in_call {
            c.broadcast_in_call(participant, &msg);
        }
        if was_waiting {
            c.send_waiting_list();
        }
        self.bill(consultation, &c);
        drop(c);
        self.inner.sfu.remove_participant(participant);
        self.forget_if_everyone_left(consultation);
        tracing::info!(%consultation, %participant, for_good, "connection closed");
        self.update_gauges();
        reconnecting
    }

    fn reconnect_expired(&self, consultation: &str, participant: &str, generation: u64) {
        let Some(entry) = self.consultation(consultation) else {
            return;
        };
        let mut c = lock(&entry);
        let Some(p) = c.get_mut(participant) else {
            return;
        };
        if p.generation != generation || p.state != ParticipantState::Reconnecting {
            return;
        }
        let was_in_call = p.in_call();
        p.state = ParticipantState::Left;
        if was_in_call {
            c.broadcast_in_call(
                participant,
                &ServerMessage::ParticipantLeft {
                    participant: participant.to_string(),
                    reason: LeftReason::Timeout,
                },
            );
        } else {
            c.send_waiting_list();
        }
        self.bill(consultation, &c);
        drop(c);
        self.forget_if_everyone_left(consultation);
        self.update_gauges();
    }

    /// Drop a consultation everyone has left (not an ended one: that stays, so late joins are
    /// told it ended). Checked again under the map's lock, so a join that slipped in between
    /// keeps its consultation.
    fn forget_if_everyone_left(&self, consultation: &str) {
        self.inner.consultations.remove_if(consultation, |_, c| {
            let c = lock(c);
            !c.ended
                && c.participants
                    .iter()
                    .all(|p| p.state == ParticipantState::Left)
        });
    }

    /// The id of the participant `identity` with `role` in `consultation`, if they are in the
    /// call: admitted, or reconnecting after having been admitted (documents access).
    pub fn in_call_participant(
        &self,
        consultation: &str,
        identity: &str,
        role: Role,
    ) -> Option<String> {
        let entry = self.consultation(consultation)?;
        let c = lock(&entry);
        c.participants
            .iter()
            .find(|p| p.identity == identity && p.role == role && p.in_call())
            .map(|p| p.id.clone())
    }

    /// Send `msg` to every participant in the call (admitted, or admitted and reconnecting).
    pub fn broadcast_in_call(&self, consultation: &str, msg: &ServerMessage) {
        if let Some(entry) = self.consultation(consultation) {
            lock(&entry).broadcast_in_call("", msg);
        }
    }

    /// Participant ids of a consultation (tests, diagnostics).
    pub fn participant_ids(&self, consultation: &str) -> Vec<String> {
        self.consultation(consultation)
            .map(|e| lock(&e).participants.iter().map(|p| p.id.clone()).collect())
            .unwrap_or_default()
    }

    /// Current state of a participant, if known.
    pub fn participant_state(
        &self,
        consultation: &str,
        participant: &str,
    ) -> Option<ParticipantState> {
        self.consultation(consultation)
            .and_then(|e| lock(&e).get(participant).map(|p| p.state))
    }
}
