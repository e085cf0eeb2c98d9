//! One consultation's rules, as a state machine with time passed in: who is in which state, who
//! may see and do what, and what each change tells whom. No locks, no tasks, no clock: the
//! [`ConsultationService`](crate::ConsultationService) serialises calls and carries out the
//! [`Effect`]s; the tests below drive it on a synthetic clock.
//!
//! Events go straight into each participant's [`Outbox`] (a bounded queue: sending never
//! blocks; a connection whose queue is full is marked overflowed and closed by its session),
//! in the order the rules produce them.

use crate::chat::{
    ChatError, ChatKind, ChatLimits, ChatMessage, RateLimiter, clean_text, new_message_id,
};
use crate::event::{ConsultationEvent, Disconnect, MediaFailure, Outbound, Outbox};
use crate::ids::{ConsultationId, ParticipantId, TrackId};
use crate::invitation::{Label, SeatKey, SeatSecret, secret_hash};
use crate::model::{
    LeftReason, MediaKind, ParticipantInfo, ParticipantState, Presence, Role, TrackInfo,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use teleconsult_store::Policy;

mod consent;
mod e2ee;
pub use consent::{
    CONSENT_TEXT_VERSION, CONSENT_TEXTS, RecordingEffect, RecordingError, consent_text, text_sha256,
};
pub use e2ee::{E2eeError, MAX_PUBLIC_KEY_CHARS, MAX_WRAPPED_KEY_CHARS};

/// Why a join was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum JoinError {
    #[error("consultation is full")]
    Full,
    #[error("consultation has ended")]
    Ended,
    /// The seat's holder was removed by the practitioner: the link no longer admits anyone.
    #[error("removed from this consultation")]
    Removed,
}

/// Why a request was refused (the connection stays).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
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
    #[error("someone else is sharing their screen")]
    ScreenShareBusy,
}

/// A successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub participant: ParticipantId,
    /// Connection generation: a later join of the same person supersedes this one.
    pub generation: u64,
    pub admitted: bool,
    /// A fresh per-tab secret for this seat, to give the client (first join of this tab).
    pub seat_secret: Option<SeatSecret>,
    /// The seat was live elsewhere: this connection waits as a second device.
    pub second_device: bool,
}

/// Who is joining: the seat their credential names, and the secret their tab presents.
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    pub seat: &'a SeatKey,
    pub role: Role,
    /// Shown to the others (health data: never logged).
    pub label: &'a Label,
    /// The secret this tab was given at its first join, if any.
    pub secret: Option<&'a str>,
}

/// What the service must do after a change, besides the events already delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Create the participant's media session (its events carry `generation`).
    StartMedia {
        participant: ParticipantId,
        generation: u64,
    },
    /// Close the participant's media session.
    StopMedia { participant: ParticipantId },
    /// Who is present changed: tell billing.
    PresenceChanged,
    /// The seat's link no longer admits anyone (its holder was removed): persist that.
    RevokeSeat { seat: SeatKey },
    /// Record that `actor` did `action` (to `target`).
    Audit {
        action: &'static str,
        actor: ParticipantId,
        target: Option<ParticipantId>,
    },
    /// Call [`Consultation::expire`] at this instant (a reconnect grace ends).
    WakeAt(Instant),
    /// Record a chat message or notice at rest.
    RecordChat(ChatMessage),
    /// Start, stop or let through a recording (`consent.rs`).
    Recording(RecordingEffect),
}

/// The limits a consultation runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_participants: usize,
    pub reconnect_grace: Duration,
    pub chat: ChatLimits,
}

struct Participant {
    id: ParticipantId,
    /// The seat (invitation or account) this connection holds or asks for.
    seat: SeatKey,
    /// Display label (health data: never logged).
    label: Label,
    /// SHA-256 of the secret given to this participant's tab.
    secret_hash: [u8; 32],
    /// A second device waiting for the seat held by this participant (admitting it
    /// disconnects them).
    replaces: Option<ParticipantId>,
    role: Role,
    state: ParticipantState,
    /// State to return to after reconnecting.
    resume: ParticipantState,
    /// While reconnecting: when the grace ends.
    reconnect_deadline: Option<Instant>,
    audio_muted: bool,
    video_muted: bool,
    generation: u64,
    outbox: Option<Outbox>,
    tracks: Vec<TrackInfo>,
    /// Chat messages and notices this participant may still send.
    chat_rate: RateLimiter,
    /// (end_to_end) The ECDH public key this connection published (`e2ee.rs`).
    e2ee_public_key: Option<String>,
}

impl Participant {
    fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id.clone(),
            role: self.role,
            display_name: self.label.expose().to_string(),
            state: self.state,
            audio_muted: self.audio_muted,
            video_muted: self.video_muted,
            second_device: false,
        }
    }

    fn send(&self, event: ConsultationEvent) {
        if let Some(o) = &self.outbox {
            let _ = o.send(Outbound::Event(event));
        }
    }

    fn close(&self, why: Disconnect) {
        if let Some(o) = &self.outbox {
            let _ = o.send(Outbound::Close(why));
        }
    }

    /// Sees the others and their media: admitted, or admitted-and-reconnecting.
    fn in_call(&self) -> bool {
        match self.state {
            ParticipantState::Admitted => true,
            ParticipantState::Reconnecting => self.resume == ParticipantState::Admitted,
            _ => false,
        }
    }

    /// In the waiting room (or reconnecting to it).
    fn waiting(&self) -> bool {
        self.state == ParticipantState::Waiting
            || (self.state == ParticipantState::Reconnecting
                && self.resume == ParticipantState::Waiting)
    }
}

/// One consultation's participants and state.
pub struct Consultation {
    id: ConsultationId,
    limits: Limits,
    participants: Vec<Participant>,
    /// Seats whose holder was removed: refused from then on.
    banned: Vec<SeatKey>,
    ended: bool,
    /// The chat and notices of this live call, oldest first (at most `limits.chat.history`).
    chat: VecDeque<ChatMessage>,
    next_chat_seq: u64,
    /// Who shares their screen (one at a time), if anyone.
    screen_sharer: Option<ParticipantId>,
    /// What may happen to its media (fixed at creation).
    policy: Policy,
    /// The recording running now, if any, with everyone's answers.
    recording: Option<consent::ActiveRecording>,
    /// Seats admitted before this server took the consultation over (from the store, cluster
    /// mode): their first join here is admitted at once, as a reconnect would be.
    restored: Vec<SeatKey>,
}

/// What a consultation's admissions are, as the store keeps them across nodes (cluster mode):
/// the seats admitted now (in the call or reconnecting) and the seats removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admissions {
    pub admitted: Vec<SeatKey>,
    pub removed: Vec<SeatKey>,
}

impl Consultation {
    pub fn new(id: ConsultationId, limits: Limits) -> Consultation {
        Consultation {
            id,
            limits,
            participants: Vec::new(),
            banned: Vec::new(),
            ended: false,
            chat: VecDeque::new(),
            next_chat_seq: 1,
            screen_sharer: None,
            policy: Policy::Standard,
            recording: None,
            restored: Vec::new(),
        }
    }

    /// The consultation as another server left it (cluster takeover): `admissions.admitted`
    /// come back admitted at their first join, `admissions.removed` stay out.
    pub fn with_admissions(mut self, admissions: Admissions) -> Consultation {
        self.restored = admissions.admitted;
        for seat in admissions.removed {
            if !self.banned.contains(&seat) {
                self.banned.push(seat);
            }
        }
        self
    }

    /// The admissions to keep in the store: every seat admitted and not gone (in the call or
    /// reconnecting; restored seats not yet back count too), and every seat removed. Empty once
    /// the consultation ended.
    pub fn admissions(&self) -> Admissions {
        if self.ended {
            return Admissions::default();
        }
        if self.everyone_left() {
            // Over until someone comes back: the next visit waits, as on one server.
            return Admissions {
                admitted: Vec::new(),
                removed: self.banned.clone(),
            };
        }
        let mut admitted: Vec<SeatKey> = self
            .participants
            .iter()
            .filter(|p| {
                p.state != ParticipantState::Left
                    && (p.state == ParticipantState::Admitted
                        || (p.state == ParticipantState::Reconnecting
                            && p.resume == ParticipantState::Admitted))
            })
            .map(|p| p.seat.clone())
            .chain(self.restored.iter().cloned())
            .collect();
        let mut seen = Vec::new();
        admitted.retain(|s| {
            let new = !seen.contains(s);
            if new {
                seen.push(s.clone());
            }
            new
        });
        Admissions {
            admitted,
            removed: self.banned.clone(),
        }
    }

    /// Someone was here and everyone has left (a consultation nobody joined yet is not).
    fn everyone_left(&self) -> bool {
        !self.participants.is_empty()
            && self
                .participants
                .iter()
                .all(|p| p.state == ParticipantState::Left)
    }

    /// The consultation under `policy` (from its record).
    pub fn with_policy(mut self, policy: Policy) -> Consultation {
        self.policy = policy;
        self
    }

    pub fn id(&self) -> &ConsultationId {
        &self.id
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Everyone has left and the consultation was not ended: it can be forgotten.
    pub fn is_abandoned(&self) -> bool {
        !self.ended
            && self
                .participants
                .iter()
                .all(|p| p.state == ParticipantState::Left)
    }

    fn get(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.id == id)
    }

    /// Participants not gone for good.
    pub fn present(&self) -> usize {
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

    fn broadcast_except(&self, except: &str, event: &ConsultationEvent) {
        for p in self
            .participants
            .iter()
            .filter(|p| p.id != except && p.in_call())
        {
            p.send(event.clone());
        }
    }

    /// Send `event` to every participant in the call.
    pub fn broadcast_in_call(&self, event: &ConsultationEvent) {
        self.broadcast_except("", event);
    }

    fn waiting_list(&self) -> Vec<ParticipantInfo> {
        self.participants
            .iter()
            .filter(|p| p.waiting())
            .map(|p| {
                let mut info = p.info();
                info.second_device = self.live_holder(p).is_some();
                info
            })
            .collect()
    }

    /// For a waiting second device: the participant still holding its seat.
    fn live_holder(&self, p: &Participant) -> Option<&Participant> {
        let holder = p.replaces.as_ref()?;
        self.get(holder.as_str())
            .filter(|h| h.state != ParticipantState::Left)
    }

    fn send_waiting_list(&self) {
        let list = self.waiting_list();
        for p in self
            .participants
            .iter()
            .filter(|p| p.role == Role::Practitioner && p.in_call())
        {
            p.send(ConsultationEvent::WaitingList {
                participants: list.clone(),
            });
        }
    }

    /// Tell `to` about every track the others in the call publish.
    fn send_tracks_of_others(&self, to: &Participant) {
        for other in self
            .participants
            .iter()
            .filter(|o| o.id != to.id && o.in_call())
        {
            for t in &other.tracks {
                to.send(ConsultationEvent::TrackPublished {
                    participant: other.id.clone(),
                    track: t.clone(),
                });
            }
        }
    }

    /// The participant sharing their screen, while they are in the call.
    fn screen_sharer(&self) -> Option<&Participant> {
        let id = self.screen_sharer.as_ref()?;
        self.get(id.as_str()).filter(|p| p.in_call())
    }

    /// Tell `to` who shares their screen now, if anyone (but themselves).
    fn send_screen_share(&self, to: &Participant) {
        if let Some(s) = self.screen_sharer().filter(|s| s.id != to.id) {
            to.send(ConsultationEvent::ScreenShare {
                participant: s.id.clone(),
                active: true,
            });
        }
    }

    /// `participant` starts (`active`) or stops sharing their screen. One at a time per
    /// consultation: while someone else in the call shares, a second share is refused
    /// ([`ActionError::ScreenShareBusy`]); the first must stop (or leave) first. Everyone in the
    /// call is told, the sharer included.
    pub fn set_screen_share(&mut self, participant: &str, active: bool) -> Result<(), ActionError> {
        self.require_admitted(participant)?;
        let current = self.screen_sharer().map(|p| p.id.clone());
        let me: ParticipantId = participant.into();
        match (active, current) {
            (true, Some(other)) if other != me => return Err(ActionError::ScreenShareBusy),
            (true, Some(_)) => return Ok(()),
            (true, None) => self.screen_sharer = Some(me.clone()),
            (false, Some(other)) if other == me => self.screen_sharer = None,
            // Not sharing: nothing to stop.
            (false, _) => return Ok(()),
        }
        self.broadcast_in_call(&ConsultationEvent::ScreenShare {
            participant: me,
            active,
        });
        Ok(())
    }

    /// Send `to` the messages of `kind` so far (nothing if there are none).
    fn send_chat_history(&self, to: &Participant, kind: ChatKind) {
        let messages: Vec<ChatMessage> = self
            .chat
            .iter()
            .filter(|m| m.kind == kind)
            .cloned()
            .collect();
        if !messages.is_empty() {
            to.send(ConsultationEvent::ChatHistory { messages });
        }
    }

    /// `sender` sends `text`: a chat message to everyone in the call (`ChatKind::Chat`, any
    /// admitted participant), or a notice to the waiting room (`ChatKind::Notice`, a
    /// practitioner in the call; echoed to the practitioners in the call). `now` paces the rate
    /// limit; `at` (Unix milliseconds) is the message's time.
    pub fn send_chat(
        &mut self,
        sender: &str,
        kind: ChatKind,
        text: &str,
        now: Instant,
        at: i64,
    ) -> Result<(ChatMessage, Vec<Effect>), ChatError> {
        let limits = self.limits.chat;
        let seq = self.next_chat_seq;
        let p = self.get_mut(sender).ok_or(ChatError::NotAdmitted)?;
        if p.state != ParticipantState::Admitted {
            return Err(ChatError::NotAdmitted);
        }
        if kind == ChatKind::Notice && p.role != Role::Practitioner {
            return Err(ChatError::Forbidden);
        }
        let text = clean_text(text, limits.max_chars)?;
        if !p.chat_rate.take(&limits, now) {
            return Err(ChatError::RateLimited);
        }
        let message = ChatMessage {
            id: new_message_id(),
            seq,
            kind,
            from: p.id.clone(),
            role: p.role,
            display_name: p.label.expose().to_string(),
            at,
            text,
        };
        self.next_chat_seq += 1;
        match kind {
            ChatKind::Chat => {
                let event = ConsultationEvent::Chat {
                    message: message.clone(),
                };
                self.broadcast_in_call(&event);
            }
            ChatKind::Notice => {
                let event = ConsultationEvent::Notice {
                    message: message.clone(),
                };
                for p in self
                    .participants
                    .iter()
                    .filter(|p| p.waiting() || (p.role == Role::Practitioner && p.in_call()))
                {
                    p.send(event.clone());
                }
            }
        }
        self.chat.push_back(message.clone());
        while self.chat.len() > limits.history.max(1) {
            self.chat.pop_front();
        }
        Ok((message.clone(), vec![Effect::RecordChat(message)]))
    }

    /// The participants as the billing clock sees them.
    pub fn presence(&self) -> impl Iterator<Item = Presence<'_>> {
        self.participants.iter().map(|p| Presence {
            id: p.id.as_str(),
            seat: p.seat.id(),
            role: p.role,
            present: p.state == ParticipantState::Admitted && p.outbox.is_some(),
            left: p.state == ParticipantState::Left,
        })
    }

    /// Join (or rejoin) the seat `req` names, delivering to `outbox` from now on.
    ///
    /// - The tab that holds a participant of this seat proves it with its secret and takes
    ///   its place back (a reload, a dropped network; a reconnecting participant comes back
    ///   in the state they had).
    /// - A practitioner's account seat: a new connection replaces the old one (their
    ///   credential is their own, not a forwardable link).
    /// - Any other connection to a seat that is live waits as a *second device*: the
    ///   practitioner sees it and may admit it, which disconnects the first. Never a silent
    ///   takeover.
    /// - A seat whose holder was removed is refused.
    pub fn join(
        &mut self,
        req: JoinRequest<'_>,
        generation: u64,
        outbox: Outbox,
    ) -> Result<(Joined, Vec<Effect>), JoinError> {
        if self.ended {
            return Err(JoinError::Ended);
        }
        if self.banned.contains(req.seat) {
            return Err(JoinError::Removed);
        }
        if self.everyone_left() {
            // Admissions restored from a previous owner end with the visit they belonged to.
            self.restored.clear();
        }
        let mut effects = Vec::new();
        let presented = req.secret.map(secret_hash);
        let live = |p: &Participant| p.seat == *req.seat && p.state != ParticipantState::Left;
        let same_tab = presented.and_then(|h| {
            self.participants
                .iter()
                .position(|p| live(p) && p.secret_hash == h)
        });
        let holder = self
            .participants
            .iter()
            .position(|p| live(p) && p.replaces.is_none());
        let mut seat_secret = None;
        let existing = match (same_tab, holder) {
            (Some(i), _) => Some(i),
            (None, Some(i)) if matches!(req.seat, SeatKey::Account(_)) => {
                // A practitioner's new connection: a new secret for the new tab.
                let secret = SeatSecret::generate();
                self.participants[i].secret_hash = secret_hash(secret.expose());
                seat_secret = Some(secret);
                Some(i)
            }
            _ => None,
        };
        let mut second_device = false;
        let (id, admitted) = match existing {
            Some(i) => {
                let p = &mut self.participants[i];
                if p.outbox.is_some() {
                    p.close(Disconnect::Replaced);
                    effects.push(Effect::StopMedia {
                        participant: p.id.clone(),
                    });
                }
                if p.state == ParticipantState::Reconnecting {
                    p.state = p.resume;
                    p.reconnect_deadline = None;
                }
                p.generation = generation;
                p.outbox = Some(outbox);
                p.tracks.clear();
                let id = p.id.clone();
                if self.screen_sharer.as_ref() == Some(&id) {
                    // A new connection starts without a share.
                    self.screen_sharer = None;
                    self.broadcast_except(
                        id.as_str(),
                        &ConsultationEvent::ScreenShare {
                            participant: id.clone(),
                            active: false,
                        },
                    );
                }
                let p = self.get_mut(id.as_str()).expect("found above");
                (p.id.clone(), p.state == ParticipantState::Admitted)
            }
            None => {
                if self.present() >= self.limits.max_participants {
                    return Err(JoinError::Full);
                }
                let replaces = holder.map(|i| self.participants[i].id.clone());
                second_device = replaces.is_some();
                // Admitted on another server before a takeover: back in at once.
                let restored = !second_device
                    && match self.restored.iter().position(|r| r == req.seat) {
                        Some(i) => {
                            self.restored.swap_remove(i);
                            true
                        }
                        None => false,
                    };
                let admitted = (req.role == Role::Practitioner && !second_device) || restored;
                let state = if admitted {
                    ParticipantState::Admitted
                } else {
                    ParticipantState::Waiting
                };
                let id = ParticipantId::generate();
                let secret = SeatSecret::generate();
                self.participants.push(Participant {
                    id: id.clone(),
                    seat: req.seat.clone(),
                    label: req.label.clone(),
                    secret_hash: secret_hash(secret.expose()),
                    replaces,
                    role: req.role,
                    state,
                    resume: state,
                    reconnect_deadline: None,
                    audio_muted: false,
                    video_muted: false,
                    generation,
                    outbox: Some(outbox),
                    tracks: Vec::new(),
                    chat_rate: RateLimiter::new(self.limits.chat.burst),
                    e2ee_public_key: None,
                });
                seat_secret = Some(secret);
                (id, admitted)
            }
        };
        let role = req.role;
        let me = self
            .get(id.as_str())
            .expect("participant was just inserted or found");
        let you = me.info();
        me.send(ConsultationEvent::Joined {
            consultation: self.id.clone(),
            you: you.clone(),
            seat_secret: seat_secret.clone(),
            participants: if admitted {
                self.roster(id.as_str())
            } else {
                Vec::new()
            },
            policy: self.policy,
        });
        if admitted {
            let news = if existing.is_some() {
                ConsultationEvent::ParticipantState {
                    participant: id.clone(),
                    state: ParticipantState::Admitted,
                }
            } else {
                ConsultationEvent::ParticipantJoined { participant: you }
            };
            self.broadcast_except(id.as_str(), &news);
            self.send_tracks_of_others(me);
            self.send_chat_history(me, ChatKind::Chat);
            self.send_screen_share(me);
            if role == Role::Practitioner {
                me.send(ConsultationEvent::WaitingList {
                    participants: self.waiting_list(),
                });
            }
        } else {
            self.send_chat_history(me, ChatKind::Notice);
            self.send_waiting_list();
        }
        effects.push(Effect::PresenceChanged);
        if admitted {
            self.send_e2ee_keys_of_others(&id);
            effects.extend(self.recording_on_arrival(&id));
            effects.push(Effect::StartMedia {
                participant: id.clone(),
                generation,
            });
        }
        Ok((
            Joined {
                participant: id,
                generation,
                admitted,
                seat_secret,
                second_device,
            },
            effects,
        ))
    }

    /// `actor` must be a practitioner in the call.
    fn check_practitioner(&self, actor: &str) -> Result<(), ActionError> {
        let me = self.get(actor).ok_or(ActionError::UnknownParticipant)?;
        if me.role != Role::Practitioner || !me.in_call() {
            return Err(ActionError::Forbidden);
        }
        Ok(())
    }

    /// The waiting participant a practitioner `actor` acts on.
    fn waiting_target(
        &mut self,
        actor: &ParticipantId,
        target: &str,
    ) -> Result<&mut Participant, ActionError> {
        self.check_practitioner(actor.as_str())?;
        let p = self
            .get_mut(target)
            .ok_or(ActionError::UnknownParticipant)?;
        if p.state != ParticipantState::Waiting {
            return Err(ActionError::NotWaiting);
        }
        Ok(p)
    }

    fn audit(action: &'static str, actor: &ParticipantId, target: Option<&str>) -> Effect {
        Effect::Audit {
            action,
            actor: actor.clone(),
            target: target.map(ParticipantId::from),
        }
    }

    /// A practitioner admits a waiting participant.
    pub fn admit(
        &mut self,
        actor: &ParticipantId,
        target: &str,
    ) -> Result<Vec<Effect>, ActionError> {
        let replaces = self.waiting_target(actor, target)?.replaces.take();
        // A second device admitted: the connection holding the seat goes first.
        let mut effects = match replaces {
            Some(holder) => {
                let mut e = self.displace(holder.as_str());
                if !e.is_empty() {
                    e.push(Self::audit(
                        "participant.replace_device",
                        actor,
                        Some(holder.as_str()),
                    ));
                }
                e
            }
            None => Vec::new(),
        };
        let p = self.get_mut(target).expect("checked by waiting_target");
        p.state = ParticipantState::Admitted;
        p.resume = ParticipantState::Admitted;
        let generation = p.generation;
        let info = p.info();
        let p = self.get(target).expect("found above");
        p.send(ConsultationEvent::Admitted {
            participants: self.roster(target),
        });
        self.send_tracks_of_others(p);
        self.send_chat_history(p, ChatKind::Chat);
        self.send_screen_share(p);
        self.broadcast_except(
            target,
            &ConsultationEvent::ParticipantJoined { participant: info },
        );
        self.send_waiting_list();
        self.send_e2ee_keys_of_others(&ParticipantId::from(target));
        effects.extend(self.recording_on_arrival(&ParticipantId::from(target)));
        effects.extend([
            Effect::PresenceChanged,
            Self::audit("participant.admit", actor, Some(target)),
            Effect::StartMedia {
                participant: target.into(),
                generation,
            },
        ]);
        Ok(effects)
    }

    /// The seat holder `holder` makes way for its admitted second device: disconnected (with a
    /// reason), gone for good; the others in the call see it leave (`replaced`).
    fn displace(&mut self, holder: &str) -> Vec<Effect> {
        let Some(h) = self.get_mut(holder) else {
            return Vec::new();
        };
        if h.state == ParticipantState::Left {
            return Vec::new();
        }
        let was_in_call = h.in_call();
        h.state = ParticipantState::Left;
        h.reconnect_deadline = None;
        h.close(Disconnect::MovedToAnotherDevice);
        h.outbox = None;
        h.tracks.clear();
        if was_in_call {
            self.broadcast_except(
                holder,
                &ConsultationEvent::ParticipantLeft {
                    participant: holder.into(),
                    reason: LeftReason::Replaced,
                },
            );
        }
        let mut effects = self.recording_on_departure(&ParticipantId::from(holder));
        effects.push(Effect::StopMedia {
            participant: holder.into(),
        });
        effects
    }

    /// A practitioner refuses a waiting participant.
    pub fn reject(
        &mut self,
        actor: &ParticipantId,
        target: &str,
    ) -> Result<Vec<Effect>, ActionError> {
        let p = self.waiting_target(actor, target)?;
        p.state = ParticipantState::Left;
        p.send(ConsultationEvent::Rejected);
        p.close(Disconnect::Rejected);
        p.outbox = None;
        self.send_waiting_list();
        Ok(vec![
            Effect::PresenceChanged,
            Self::audit("participant.reject", actor, Some(target)),
        ])
    }

    /// A practitioner removes a participant (waiting or in the call).
    pub fn remove(
        &mut self,
        actor: &ParticipantId,
        target: &str,
    ) -> Result<Vec<Effect>, ActionError> {
        if actor == target {
            return Err(ActionError::SelfRemoval);
        }
        self.check_practitioner(actor.as_str())?;
        let seat = match self.get(target) {
            Some(p) if p.state != ParticipantState::Left => p.seat.clone(),
            _ => return Err(ActionError::UnknownParticipant),
        };
        let mut effects = self.evict_seat(&seat);
        effects.push(Self::audit("participant.remove", actor, Some(target)));
        Ok(effects)
    }

    /// The seat's link was revoked (in the workspace or through the API): whoever holds it, in
    /// the call or waiting, on any device, is removed now, and the seat is spent. The caller
    /// records the audit event (it knows who revoked).
    pub fn revoke_seat(&mut self, seat: &SeatKey) -> Vec<Effect> {
        if !self
            .participants
            .iter()
            .any(|p| p.seat == *seat && p.state != ParticipantState::Left)
        {
            // Nobody holds it; a join racing the revocation is refused all the same.
            if !self.banned.contains(seat) {
                self.banned.push(seat.clone());
            }
            return Vec::new();
        }
        self.evict_seat(seat)
    }

    /// Remove every connection holding `seat` (other devices waiting for it too) and spend the
    /// link: nobody joins this seat again.
    fn evict_seat(&mut self, seat: &SeatKey) -> Vec<Effect> {
        let mut effects = vec![Effect::RevokeSeat { seat: seat.clone() }];
        if !self.banned.contains(seat) {
            self.banned.push(seat.clone());
        }
        let mut left_the_call = Vec::new();
        for p in self
            .participants
            .iter_mut()
            .filter(|p| p.seat == *seat && p.state != ParticipantState::Left)
        {
            if p.in_call() {
                left_the_call.push(p.id.clone());
            }
            p.state = ParticipantState::Left;
            p.reconnect_deadline = None;
            p.send(ConsultationEvent::Removed);
            p.close(Disconnect::Removed);
            p.outbox = None;
            p.tracks.clear();
            effects.push(Effect::StopMedia {
                participant: p.id.clone(),
            });
        }
        for id in &left_the_call {
            self.broadcast_except(
                id.as_str(),
                &ConsultationEvent::ParticipantLeft {
                    participant: id.clone(),
                    reason: LeftReason::Removed,
                },
            );
            effects.extend(self.recording_on_departure(id));
        }
        self.send_waiting_list();
        effects.push(Effect::PresenceChanged);
        effects
    }

    /// A practitioner ends the consultation for everyone.
    pub fn end(&mut self, actor: &ParticipantId) -> Result<Vec<Effect>, ActionError> {
        self.check_practitioner(actor.as_str())?;
        let mut effects = self.end_by_system();
        effects.push(Self::audit("consultation.end", actor, None));
        Ok(effects)
    }

    /// End the consultation for everyone without an actor (it was cancelled).
    pub fn end_by_system(&mut self) -> Vec<Effect> {
        self.ended = true;
        let mut effects = vec![Effect::PresenceChanged];
        effects.extend(self.recording_ends());
        for p in self.participants.iter_mut() {
            if p.state != ParticipantState::Left {
                p.send(ConsultationEvent::Ended);
                p.close(Disconnect::Ended);
                p.state = ParticipantState::Left;
                p.reconnect_deadline = None;
                p.outbox = None;
                effects.push(Effect::StopMedia {
                    participant: p.id.clone(),
                });
            }
        }
        effects
    }

    /// This server stops serving the consultation (cluster fencing): every open connection is
    /// closed with [`Disconnect::Moved`] and its media stopped. Nobody is marked as left and
    /// nothing is recorded: the consultation carries on on its new owner.
    pub fn evict(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for p in self.participants.iter_mut() {
            if p.state != ParticipantState::Left {
                p.close(Disconnect::Moved);
                p.outbox = None;
                p.reconnect_deadline = None;
                effects.push(Effect::StopMedia {
                    participant: p.id.clone(),
                });
            }
        }
        effects
    }

    /// `participant` must be admitted (media signalling).
    pub fn require_admitted(&self, participant: &str) -> Result<(), ActionError> {
        match self.get(participant) {
            Some(p) if p.state == ParticipantState::Admitted => Ok(()),
            Some(_) => Err(ActionError::NotAdmitted),
            None => Err(ActionError::UnknownParticipant),
        }
    }

    pub fn set_mute(
        &mut self,
        participant: &str,
        kind: MediaKind,
        muted: bool,
    ) -> Result<(), ActionError> {
        let p = self
            .get_mut(participant)
            .ok_or(ActionError::UnknownParticipant)?;
        if p.state != ParticipantState::Admitted {
            return Err(ActionError::NotAdmitted);
        }
        match kind {
            MediaKind::Audio => p.audio_muted = muted,
            MediaKind::Video => p.video_muted = muted,
        }
        let id = p.id.clone();
        self.broadcast_except(
            participant,
            &ConsultationEvent::Mute {
                participant: id,
                kind,
                muted,
            },
        );
        Ok(())
    }

    /// The participant's connection of `generation`, if it is still the current one.
    fn current(&mut self, participant: &str, generation: u64) -> Option<&mut Participant> {
        self.get_mut(participant)
            .filter(|p| p.generation == generation && p.outbox.is_some())
    }

    /// Whether `generation` is the participant's live connection.
    pub fn is_current(&mut self, participant: &str, generation: u64) -> bool {
        self.current(participant, generation).is_some()
    }

    /// The media plane reports a track the participant now publishes: the others are told.
    pub fn track_published(&mut self, participant: &str, generation: u64, track: TrackInfo) {
        let Some(p) = self.current(participant, generation) else {
            return;
        };
        p.tracks.push(track.clone());
        let id = p.id.clone();
        self.broadcast_except(
            participant,
            &ConsultationEvent::TrackPublished {
                participant: id,
                track,
            },
        );
    }

    pub fn track_unpublished(&mut self, participant: &str, generation: u64, track: &TrackId) {
        let Some(p) = self.current(participant, generation) else {
            return;
        };
        p.tracks.retain(|t| t.id != *track);
        let id = p.id.clone();
        self.broadcast_except(
            participant,
            &ConsultationEvent::TrackUnpublished {
                participant: id,
                track: track.clone(),
            },
        );
    }

    /// The media plane's offer for the participant's session of `generation`.
    pub fn media_offer(&mut self, participant: &str, generation: u64, sdp: String) {
        if let Some(p) = self.current(participant, generation) {
            p.send(ConsultationEvent::MediaOffer { sdp });
        }
    }

    pub fn media_failed(&mut self, participant: &str, generation: u64, failure: MediaFailure) {
        if let Some(p) = self.current(participant, generation) {
            p.send(ConsultationEvent::MediaFailed(failure));
        }
    }

    /// The participant's connection of `generation` closed: for good (`leave`), or dropped (they
    /// may come back within the reconnect grace). A superseded connection closing says nothing
    /// about the person and changes nothing.
    pub fn gone(
        &mut self,
        participant: &str,
        generation: u64,
        for_good: bool,
        now: Instant,
    ) -> Vec<Effect> {
        let grace = self.limits.reconnect_grace;
        let Some(p) = self.get_mut(participant) else {
            return Vec::new();
        };
        if p.generation != generation || p.state == ParticipantState::Left {
            return Vec::new();
        }
        let was_in_call = p.in_call();
        p.outbox = None;
        p.tracks.clear();
        // Its page publishes a key again when it comes back.
        p.e2ee_public_key = None;
        let mut effects = vec![
            Effect::PresenceChanged,
            Effect::StopMedia {
                participant: p.id.clone(),
            },
        ];
        let id = p.id.clone();
        let news = if for_good {
            p.state = ParticipantState::Left;
            ConsultationEvent::ParticipantLeft {
                participant: id,
                reason: LeftReason::Left,
            }
        } else {
            p.resume = p.state;
            p.state = ParticipantState::Reconnecting;
            let deadline = now + grace;
            p.reconnect_deadline = Some(deadline);
            effects.push(Effect::WakeAt(deadline));
            ConsultationEvent::ParticipantState {
                participant: id,
                state: ParticipantState::Reconnecting,
            }
        };
        if was_in_call {
            self.broadcast_except(participant, &news);
        } else {
            self.send_waiting_list();
        }
        if for_good {
            effects.extend(self.recording_on_departure(&ParticipantId::from(participant)));
        }
        effects
    }

    /// Whoever is still reconnecting once their grace is over at `now` has left (timeout).
    pub fn expire(&mut self, now: Instant) -> Vec<Effect> {
        let mut expired = Vec::new();
        for p in self.participants.iter_mut() {
            if p.state == ParticipantState::Reconnecting
                && p.reconnect_deadline.is_some_and(|d| d <= now)
            {
                p.state = ParticipantState::Left;
                p.reconnect_deadline = None;
                expired.push((p.id.clone(), p.resume == ParticipantState::Admitted));
            }
        }
        if expired.is_empty() {
            return Vec::new();
        }
        for (id, was_in_call) in &expired {
            if *was_in_call {
                self.broadcast_except(
                    id.as_str(),
                    &ConsultationEvent::ParticipantLeft {
                        participant: id.clone(),
                        reason: LeftReason::Timeout,
                    },
                );
            }
        }
        if expired.iter().any(|(_, in_call)| !in_call) {
            self.send_waiting_list();
        }
        let mut effects = vec![Effect::PresenceChanged];
        for (id, _) in &expired {
            effects.extend(self.recording_on_departure(id));
        }
        effects
    }

    /// The id of the participant holding `seat`, if they are in the call (admitted, or
    /// reconnecting after having been admitted).
    pub fn in_call_participant(&self, seat: &SeatKey) -> Option<ParticipantId> {
        self.participants
            .iter()
            .find(|p| p.seat == *seat && p.in_call())
            .map(|p| p.id.clone())
    }

    pub fn participant_ids(&self) -> Vec<ParticipantId> {
        self.participants.iter().map(|p| p.id.clone()).collect()
    }

    pub fn participant_state(&self, participant: &str) -> Option<ParticipantState> {
        self.get(participant).map(|p| p.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{OutboxReceiver, outbox};
    use crate::model::TrackSource;

    const GRACE: Duration = Duration::from_secs(60);

    fn consultation(max: usize) -> Consultation {
        Consultation::new(
            "c1".into(),
            Limits {
                max_participants: max,
                reconnect_grace: GRACE,
                chat: ChatLimits::default(),
            },
        )
    }

    struct Conn {
        rx: OutboxReceiver,
    }

    impl Conn {
        fn drain(&mut self) -> Vec<Outbound> {
            let mut v = Vec::new();
            while let Some(m) = self.rx.try_recv() {
                v.push(m);
            }
            v
        }
        fn events(&mut self) -> Vec<ConsultationEvent> {
            self.drain()
                .into_iter()
                .filter_map(|o| match o {
                    Outbound::Event(e) => Some(e),
                    Outbound::Close(_) => None,
                })
                .collect()
        }
    }

    /// The seat of `who`: a practitioner's account, else an invitation named after them.
    fn seat(who: &str, role: Role) -> SeatKey {
        match role {
            Role::Practitioner => SeatKey::Account(format!("acct-{who}")),
            _ => SeatKey::Invitation(format!("jti-{who}")),
        }
    }

    fn try_join(
        c: &mut Consultation,
        who: &str,
        role: Role,
        secret: Option<&SeatSecret>,
        generation: u64,
    ) -> Result<(Joined, Vec<Effect>, Conn), JoinError> {
        let (tx, rx) = outbox(1024);
        let seat = seat(who, role);
        let label = Label::new(who);
        let req = JoinRequest {
            seat: &seat,
            role,
            label: &label,
            secret: secret.map(SeatSecret::expose),
        };
        let (j, e) = c.join(req, generation, tx)?;
        Ok((j, e, Conn { rx }))
    }

    /// A first join from a new tab (no secret).
    fn join(
        c: &mut Consultation,
        who: &str,
        role: Role,
        generation: u64,
    ) -> (Joined, Vec<Effect>, Conn) {
        try_join(c, who, role, None, generation).expect("join")
    }

    fn starts_media(effects: &[Effect], who: &ParticipantId) -> bool {
        effects
            .iter()
            .any(|e| matches!(e, Effect::StartMedia { participant, .. } if participant == who))
    }

    fn chats(events: &[ConsultationEvent]) -> Vec<(&'static str, String)> {
        events
            .iter()
            .flat_map(|e| match e {
                ConsultationEvent::Chat { message } => vec![("chat", message.text.clone())],
                ConsultationEvent::Notice { message } => vec![("notice", message.text.clone())],
                ConsultationEvent::ChatHistory { messages } => messages
                    .iter()
                    .map(|m| ("history", m.text.clone()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn an_evicted_consultation_closes_every_connection_as_moved_and_records_no_one_as_left() {
        let mut c = consultation(12);
        let (doc, _, mut doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        let (waiting, _, mut waiting_conn) = join(&mut c, "Late", Role::Patient, 3);
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        for conn in [&mut doc_conn, &mut pat_conn, &mut waiting_conn] {
            conn.drain();
        }
        let effects = c.evict();
        // Media stops for everyone (the new owner starts it again); no presence change, no
        // audit, nothing recorded: the consultation goes on elsewhere.
        let stopped: Vec<&ParticipantId> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::StopMedia { participant } => Some(participant),
                _ => None,
            })
            .collect();
        assert_eq!(stopped.len(), 3, "{effects:?}");
        assert!(
            effects
                .iter()
                .all(|e| matches!(e, Effect::StopMedia { .. }))
        );
        for conn in [&mut doc_conn, &mut pat_conn, &mut waiting_conn] {
            assert_eq!(conn.drain(), vec![Outbound::Close(Disconnect::Moved)]);
        }
        for p in [&doc, &pat, &waiting] {
            assert_ne!(
                c.participant_state(p.participant.as_str()),
                Some(ParticipantState::Left)
            );
        }
        assert!(!c.is_ended());
    }

    #[test]
    fn chat_reaches_the_call_only_and_notices_reach_the_waiting_room() {
        let t0 = Instant::now();
        let mut c = consultation(12);
        let (doc, _, mut doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        let (late, _, mut late_conn) = join(&mut c, "Late", Role::Patient, 3);
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        doc_conn.events();
        pat_conn.events();
        late_conn.events();

        // Chat from the practitioner and back: both see both; the waiting patient sees none.
        let (m, effects) = c
            .send_chat(doc.participant.as_str(), ChatKind::Chat, " Hello ", t0, 1)
            .unwrap();
        assert_eq!(m.text, "Hello");
        assert_eq!(effects, vec![Effect::RecordChat(m.clone())]);
        c.send_chat(pat.participant.as_str(), ChatKind::Chat, "Hi doctor", t0, 2)
            .unwrap();
        let both = vec![
            ("chat", "Hello".to_string()),
            ("chat", "Hi doctor".to_string()),
        ];
        assert_eq!(chats(&doc_conn.events()), both);
        assert_eq!(chats(&pat_conn.events()), both);
        assert!(
            chats(&late_conn.events()).is_empty(),
            "the waiting room sees no chat"
        );

        // A waiting participant may not chat; a patient may not send notices.
        assert_eq!(
            c.send_chat(
                late.participant.as_str(),
                ChatKind::Chat,
                "let me in",
                t0,
                3
            )
            .map(|_| ()),
            Err(ChatError::NotAdmitted)
        );
        assert_eq!(
            c.send_chat(pat.participant.as_str(), ChatKind::Notice, "late", t0, 3)
                .map(|_| ()),
            Err(ChatError::Forbidden)
        );

        // A notice: the waiting patient and the practitioners see it, the admitted patient not.
        c.send_chat(
            doc.participant.as_str(),
            ChatKind::Notice,
            "Running 10 minutes late",
            t0,
            4,
        )
        .unwrap();
        let notice = vec![("notice", "Running 10 minutes late".to_string())];
        assert_eq!(chats(&late_conn.events()), notice);
        assert_eq!(chats(&doc_conn.events()), notice);
        assert!(chats(&pat_conn.events()).is_empty());

        // Someone joining the waiting room gets the notices so far, never the chat ...
        let (third, _, mut third_conn) = join(&mut c, "Third", Role::Guest, 4);
        assert_eq!(
            chats(&third_conn.events()),
            vec![("history", "Running 10 minutes late".to_string())]
        );
        // ... and once admitted, the chat so far, never the notices.
        c.admit(&doc.participant, late.participant.as_str())
            .unwrap();
        assert_eq!(
            chats(&late_conn.events()),
            vec![
                ("history", "Hello".to_string()),
                ("history", "Hi doctor".to_string())
            ]
        );
        c.admit(&doc.participant, third.participant.as_str())
            .unwrap();
        assert_eq!(chats(&third_conn.events()).len(), 2);
    }

    #[test]
    fn one_screen_share_at_a_time_told_to_the_call_and_to_newcomers() {
        let mut c = consultation(12);
        let (doc, _, mut doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        let (late, _, mut late_conn) = join(&mut c, "Late", Role::Guest, 3);
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        let shares = |events: Vec<ConsultationEvent>| -> Vec<(ParticipantId, bool)> {
            events
                .into_iter()
                .filter_map(|e| match e {
                    ConsultationEvent::ScreenShare {
                        participant,
                        active,
                    } => Some((participant, active)),
                    _ => None,
                })
                .collect()
        };
        doc_conn.events();
        pat_conn.events();
        // A waiting participant cannot share.
        assert_eq!(
            c.set_screen_share(late.participant.as_str(), true),
            Err(ActionError::NotAdmitted)
        );
        c.set_screen_share(pat.participant.as_str(), true).unwrap();
        let on = vec![(pat.participant.clone(), true)];
        assert_eq!(shares(doc_conn.events()), on);
        assert_eq!(shares(pat_conn.events()), on, "the sharer is told too");
        assert!(
            shares(late_conn.events()).is_empty(),
            "not the waiting room"
        );
        // A second share is refused while the first lasts; asking again is harmless.
        assert_eq!(
            c.set_screen_share(doc.participant.as_str(), true),
            Err(ActionError::ScreenShareBusy)
        );
        assert_eq!(c.set_screen_share(pat.participant.as_str(), true), Ok(()));
        assert!(shares(doc_conn.events()).is_empty());
        // Someone admitted now learns of the share.
        c.admit(&doc.participant, late.participant.as_str())
            .unwrap();
        assert_eq!(shares(late_conn.events()), on);
        // Stopping frees it (stopping someone else's share does nothing).
        assert_eq!(c.set_screen_share(doc.participant.as_str(), false), Ok(()));
        assert!(shares(pat_conn.events()).is_empty());
        c.set_screen_share(pat.participant.as_str(), false).unwrap();
        assert_eq!(
            shares(doc_conn.events()),
            vec![(pat.participant.clone(), false)]
        );
        c.set_screen_share(doc.participant.as_str(), true).unwrap();
        assert_eq!(
            shares(pat_conn.events()),
            vec![
                (pat.participant.clone(), false),
                (doc.participant.clone(), true)
            ]
        );
    }

    #[test]
    fn chat_is_length_and_rate_limited_per_participant() {
        let t0 = Instant::now();
        let mut c = consultation(12);
        let (doc, _, _doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, _pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        let long = "x".repeat(ChatLimits::default().max_chars + 1);
        assert_eq!(
            c.send_chat(pat.participant.as_str(), ChatKind::Chat, &long, t0, 0)
                .map(|_| ()),
            Err(ChatError::TooLong)
        );
        assert_eq!(
            c.send_chat(pat.participant.as_str(), ChatKind::Chat, "  ", t0, 0)
                .map(|_| ()),
            Err(ChatError::Empty)
        );
        for i in 0..ChatLimits::default().burst {
            c.send_chat(
                pat.participant.as_str(),
                ChatKind::Chat,
                &format!("m{i}"),
                t0,
                0,
            )
            .unwrap();
        }
        assert_eq!(
            c.send_chat(pat.participant.as_str(), ChatKind::Chat, "one more", t0, 0)
                .map(|_| ()),
            Err(ChatError::RateLimited)
        );
        // The practitioner's allowance is their own.
        assert!(
            c.send_chat(doc.participant.as_str(), ChatKind::Chat, "ok", t0, 0)
                .is_ok()
        );
        // Time refills the patient's.
        let later = t0 + ChatLimits::default().refill;
        let (m, _) = c
            .send_chat(pat.participant.as_str(), ChatKind::Chat, "again", later, 0)
            .unwrap();
        assert_eq!(m.seq, 7, "sequence numbers count every delivered message");
    }

    #[test]
    fn a_patient_waits_until_admitted_and_sees_nothing_of_the_call_before() {
        let mut c = consultation(12);
        let (doc, e, mut doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        assert!(doc.admitted);
        assert!(starts_media(&e, &doc.participant));
        let (pat, e, mut pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        assert!(!pat.admitted);
        assert!(
            !starts_media(&e, &pat.participant),
            "no media in the waiting room"
        );
        let seen = pat_conn.events();
        assert!(
            matches!(&seen[..], [ConsultationEvent::Joined { participants, .. }] if participants.is_empty()),
            "{seen:?}"
        );
        // The practitioner sees the waiting list with the patient.
        let seen = doc_conn.events();
        assert!(seen.iter().any(|e| matches!(e, ConsultationEvent::WaitingList { participants } if participants.iter().any(|p| p.id == pat.participant))));
        // Only a practitioner may admit.
        assert_eq!(
            c.admit(&pat.participant, doc.participant.as_str()),
            Err(ActionError::Forbidden)
        );
        assert_eq!(
            c.require_admitted(pat.participant.as_str()),
            Err(ActionError::NotAdmitted)
        );
        let e = c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        assert!(starts_media(&e, &pat.participant));
        assert!(
            matches!(&pat_conn.events()[0], ConsultationEvent::Admitted { participants } if participants.len() == 1)
        );
        assert_eq!(c.require_admitted(pat.participant.as_str()), Ok(()));
        assert_eq!(
            c.admit(&doc.participant, pat.participant.as_str()),
            Err(ActionError::NotWaiting)
        );
    }

    #[test]
    fn tracks_reach_only_those_in_the_call_and_stale_media_events_are_ignored() {
        let mut c = consultation(12);
        let (doc, _, mut doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        let track = TrackInfo {
            id: "t1".into(),
            kind: MediaKind::Video,
            source: TrackSource::Camera,
        };
        c.track_published(doc.participant.as_str(), 1, track.clone());
        assert!(
            pat_conn
                .events()
                .iter()
                .all(|e| !matches!(e, ConsultationEvent::TrackPublished { .. }))
        );
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        // Admitted: told about the practitioner's track.
        assert!(pat_conn.events().iter().any(
            |e| matches!(e, ConsultationEvent::TrackPublished { track: t, .. } if *t == track)
        ));
        // An event of an older media session (generation 0) changes nothing.
        c.track_published(
            doc.participant.as_str(),
            0,
            TrackInfo {
                id: "old".into(),
                kind: MediaKind::Audio,
                source: TrackSource::Microphone,
            },
        );
        assert!(pat_conn.events().is_empty());
        c.media_offer(pat.participant.as_str(), 2, "v=0".into());
        assert_eq!(
            pat_conn.events(),
            vec![ConsultationEvent::MediaOffer { sdp: "v=0".into() }]
        );
        c.media_offer(pat.participant.as_str(), 1, "stale".into());
        assert!(pat_conn.events().is_empty());
        doc_conn.drain();
    }

    #[test]
    fn a_dropped_participant_is_reconnecting_until_the_grace_ends_on_the_synthetic_clock() {
        let t0 = Instant::now();
        let mut c = consultation(12);
        let (doc, _, mut doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, _pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        doc_conn.drain();
        let e = c.gone(pat.participant.as_str(), 2, false, t0);
        assert!(e.contains(&Effect::WakeAt(t0 + GRACE)));
        assert_eq!(
            c.participant_state(pat.participant.as_str()),
            Some(ParticipantState::Reconnecting)
        );
        assert!(doc_conn.events().iter().any(|e| matches!(
            e,
            ConsultationEvent::ParticipantState {
                state: ParticipantState::Reconnecting,
                ..
            }
        )));
        // A superseded connection closing changes nothing.
        assert!(c.gone(pat.participant.as_str(), 1, true, t0).is_empty());
        // Not yet.
        assert!(c.expire(t0 + GRACE - Duration::from_millis(1)).is_empty());
        assert_eq!(
            c.participant_state(pat.participant.as_str()),
            Some(ParticipantState::Reconnecting)
        );
        // Back in time, the same tab (its secret): admitted again, under the same id.
        let (again, e, _conn) =
            try_join(&mut c, "Pat", Role::Patient, pat.seat_secret.as_ref(), 3).expect("resume");
        assert_eq!(again.seat_secret, None, "the tab keeps its secret");
        assert_eq!(again.participant, pat.participant);
        assert!(again.admitted);
        assert!(starts_media(&e, &pat.participant));
        assert!(
            c.expire(t0 + GRACE).is_empty(),
            "the rejoin cancelled the deadline"
        );
        // Dropped again, and this time the grace runs out.
        let t1 = t0 + Duration::from_secs(100);
        c.gone(pat.participant.as_str(), 3, false, t1);
        doc_conn.drain();
        assert_eq!(c.expire(t1 + GRACE), vec![Effect::PresenceChanged]);
        assert_eq!(
            c.participant_state(pat.participant.as_str()),
            Some(ParticipantState::Left)
        );
        assert!(doc_conn.events().iter().any(|e| matches!(
            e,
            ConsultationEvent::ParticipantLeft {
                reason: LeftReason::Timeout,
                ..
            }
        )));
    }

    #[test]
    fn a_second_connection_of_the_same_practitioner_account_replaces_the_first() {
        let mut c = consultation(12);
        let (doc, _, mut first) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (again, e, _second) = join(&mut c, "Dr A", Role::Practitioner, 2);
        assert_eq!(again.participant, doc.participant);
        assert!(e.contains(&Effect::StopMedia {
            participant: doc.participant.clone()
        }));
        assert!(
            first
                .drain()
                .contains(&Outbound::Close(Disconnect::Replaced))
        );
        // The first connection closing afterwards is ignored.
        assert!(
            c.gone(doc.participant.as_str(), 1, false, Instant::now())
                .is_empty()
        );
        assert_eq!(
            c.participant_state(doc.participant.as_str()),
            Some(ParticipantState::Admitted)
        );
    }

    #[test]
    fn capacity_end_and_removal() {
        let mut c = consultation(2);
        let (doc, _, _d) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        assert_eq!(
            try_join(&mut c, "Guest", Role::Guest, None, 3).err(),
            Some(JoinError::Full)
        );
        assert_eq!(
            c.remove(&doc.participant, doc.participant.as_str()),
            Err(ActionError::SelfRemoval)
        );
        pat_conn.drain();
        let e = c
            .remove(&doc.participant, pat.participant.as_str())
            .unwrap();
        assert!(e.contains(&Effect::StopMedia {
            participant: pat.participant.clone()
        }));
        let got = pat_conn.drain();
        assert_eq!(
            got,
            vec![
                Outbound::Event(ConsultationEvent::Removed),
                Outbound::Close(Disconnect::Removed)
            ]
        );
        assert_eq!(
            c.remove(&doc.participant, pat.participant.as_str()),
            Err(ActionError::UnknownParticipant)
        );
        c.end(&doc.participant).unwrap();
        assert!(c.is_ended());
        assert_eq!(
            try_join(&mut c, "Pat", Role::Patient, None, 4).err(),
            Some(JoinError::Ended)
        );
        assert!(!c.is_abandoned(), "an ended consultation is kept to say so");
    }

    /// Cluster takeover: what one server admitted and removed is what the next one starts
    /// from. An admitted patient's first join there is admitted at once (media starts, the
    /// call is visible); a second visit after leaving waits again, as on one server; a removed
    /// seat is refused; a seat never admitted waits.
    #[test]
    fn admissions_written_by_one_owner_are_rebuilt_by_the_next() {
        let mut first = consultation(12);
        let (doc, _, _d) = join(&mut first, "Dr A", Role::Practitioner, 1);
        let (pat, _, _p) = join(&mut first, "Pat", Role::Patient, 2);
        let (gu, _, _g) = join(&mut first, "Gu", Role::Guest, 3);
        let (_late, _, _l) = join(&mut first, "Late", Role::Patient, 4);
        assert_eq!(
            first.admissions().admitted,
            vec![seat("Dr A", Role::Practitioner)]
        );
        first
            .admit(&doc.participant, pat.participant.as_str())
            .unwrap();
        first
            .admit(&doc.participant, gu.participant.as_str())
            .unwrap();
        first
            .remove(&doc.participant, gu.participant.as_str())
            .unwrap();
        let kept = first.admissions();
        assert_eq!(
            kept,
            Admissions {
                admitted: vec![seat("Dr A", Role::Practitioner), seat("Pat", Role::Patient)],
                removed: vec![seat("Gu", Role::Guest)],
            }
        );

        let mut next = consultation(12).with_admissions(kept.clone());
        // Restored seats not back yet still count (a second takeover keeps them).
        assert_eq!(next.admissions(), kept);
        let (back, effects, mut back_conn) = join(&mut next, "Pat", Role::Patient, 10);
        assert!(
            back.admitted,
            "admitted without the practitioner doing anything"
        );
        assert!(starts_media(&effects, &back.participant));
        assert!(back_conn.events().iter().any(|e| matches!(
            e,
            ConsultationEvent::Joined { you, .. } if you.state == ParticipantState::Admitted
        )));
        assert_eq!(
            try_join(&mut next, "Gu", Role::Guest, None, 11).err(),
            Some(JoinError::Removed)
        );
        let (late, _, _l2) = join(&mut next, "Late", Role::Patient, 12);
        assert!(!late.admitted, "never admitted: waits");
        // Leaving for good forgets the admission: the next visit waits, as on one server.
        next.gone(back.participant.as_str(), 10, true, Instant::now());
        assert!(
            !next
                .admissions()
                .admitted
                .contains(&seat("Pat", Role::Patient))
        );
        let (again, _, _a) = join(&mut next, "Pat", Role::Patient, 13);
        assert!(!again.admitted);
        // Everyone leaves (the restored practitioner never came back): over, nothing admitted
        // is kept, and the practitioner's seat restored earlier no longer counts.
        next.gone(late.participant.as_str(), 12, true, Instant::now());
        next.gone(again.participant.as_str(), 13, true, Instant::now());
        assert_eq!(
            next.admissions(),
            Admissions {
                admitted: vec![],
                removed: vec![seat("Gu", Role::Guest)],
            }
        );
        // Ended: nothing to rebuild.
        let (dr, _, _d2) = join(&mut next, "Dr A", Role::Practitioner, 14);
        next.end(&dr.participant).unwrap();
        assert_eq!(next.admissions(), Admissions::default());
    }

    fn closes(conn: &mut Conn) -> Vec<Disconnect> {
        conn.drain()
            .into_iter()
            .filter_map(|o| match o {
                Outbound::Close(d) => Some(d),
                Outbound::Event(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_same_tab_resumes_its_seat_with_its_secret_even_while_still_connected() {
        let mut c = consultation(12);
        let (doc, _, _d) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut first) = join(&mut c, "Pat", Role::Patient, 2);
        let secret = pat.seat_secret.clone().expect("a first join gets a secret");
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        // A reload before the server noticed the old socket is gone: same seat, same id.
        let (again, e, _second) = try_join(&mut c, "Pat", Role::Patient, Some(&secret), 3).unwrap();
        assert_eq!(again.participant, pat.participant);
        assert!(again.admitted && !again.second_device);
        assert!(starts_media(&e, &pat.participant));
        assert_eq!(closes(&mut first), vec![Disconnect::Replaced]);
    }

    #[test]
    fn a_second_device_waits_and_replaces_the_first_only_when_admitted() {
        let mut c = consultation(12);
        let (doc, _, mut doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut first) = join(&mut c, "Pat", Role::Patient, 2);
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        first.drain();
        doc_conn.drain();
        // Same link, another device (no secret, or a wrong one).
        let wrong = SeatSecret::generate();
        let (second, e, mut second_conn) =
            try_join(&mut c, "Pat", Role::Patient, Some(&wrong), 3).unwrap();
        assert_ne!(second.participant, pat.participant);
        assert!(second.second_device && !second.admitted);
        assert!(!starts_media(&e, &second.participant));
        // The first stays in the call, untouched.
        assert!(first.drain().is_empty());
        assert_eq!(
            c.participant_state(pat.participant.as_str()),
            Some(ParticipantState::Admitted)
        );
        // The practitioner sees a second device for that label.
        let seen = doc_conn.events();
        assert!(
            seen.iter().any(|e| matches!(e, ConsultationEvent::WaitingList { participants }
                if participants.iter().any(|p| p.id == second.participant && p.second_device && p.display_name == "Pat"))),
            "{seen:?}"
        );
        // Admitted: the first is disconnected with a reason, and the others see it replaced.
        let e = c
            .admit(&doc.participant, second.participant.as_str())
            .unwrap();
        assert!(e.contains(&Effect::StopMedia {
            participant: pat.participant.clone()
        }));
        assert!(starts_media(&e, &second.participant));
        assert!(e.contains(&Effect::Audit {
            action: "participant.replace_device",
            actor: doc.participant.clone(),
            target: Some(pat.participant.clone()),
        }));
        assert_eq!(closes(&mut first), vec![Disconnect::MovedToAnotherDevice]);
        assert_eq!(
            c.participant_state(pat.participant.as_str()),
            Some(ParticipantState::Left)
        );
        assert!(doc_conn.events().iter().any(|e| matches!(e,
            ConsultationEvent::ParticipantLeft { participant, reason: LeftReason::Replaced } if *participant == pat.participant)));
        assert!(
            second_conn
                .events()
                .iter()
                .any(|e| matches!(e, ConsultationEvent::Admitted { .. }))
        );
        // The old tab's secret no longer resumes anything: it would wait as a second device.
        let (old, _, _c) =
            try_join(&mut c, "Pat", Role::Patient, pat.seat_secret.as_ref(), 4).unwrap();
        assert!(old.second_device && !old.admitted);
    }

    #[test]
    fn a_rejected_second_device_leaves_the_first_in_the_call() {
        let mut c = consultation(12);
        let (doc, _, _d) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut first) = join(&mut c, "Pat", Role::Patient, 2);
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        first.drain();
        let (second, _, _s) = join(&mut c, "Pat", Role::Patient, 3);
        c.reject(&doc.participant, second.participant.as_str())
            .unwrap();
        assert!(first.drain().is_empty());
        assert_eq!(
            c.participant_state(pat.participant.as_str()),
            Some(ParticipantState::Admitted)
        );
    }

    #[test]
    fn a_removed_participant_cannot_rejoin_with_the_same_link() {
        let mut c = consultation(12);
        let (doc, _, _d) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, _p) = join(&mut c, "Pat", Role::Patient, 2);
        // A second device of the same seat is waiting when the holder is removed.
        let (second, _, mut second_conn) = join(&mut c, "Pat", Role::Patient, 3);
        let e = c
            .remove(&doc.participant, pat.participant.as_str())
            .unwrap();
        assert!(e.contains(&Effect::RevokeSeat {
            seat: seat("Pat", Role::Patient)
        }));
        assert_eq!(closes(&mut second_conn), vec![Disconnect::Removed]);
        assert_eq!(
            c.participant_state(second.participant.as_str()),
            Some(ParticipantState::Left)
        );
        for secret in [pat.seat_secret.as_ref(), None] {
            assert_eq!(
                try_join(&mut c, "Pat", Role::Patient, secret, 4).err(),
                Some(JoinError::Removed)
            );
        }
        // Another seat is unaffected.
        assert!(try_join(&mut c, "Guest", Role::Guest, None, 5).is_ok());
    }

    #[test]
    fn a_revoked_seat_leaves_the_call_at_once_and_cannot_come_back() {
        let mut c = consultation(12);
        let (doc, _, mut doc_conn) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, _, mut pat_conn) = join(&mut c, "Pat", Role::Patient, 2);
        c.admit(&doc.participant, pat.participant.as_str()).unwrap();
        let (guest, _, mut guest_conn) = join(&mut c, "Guest", Role::Guest, 3);
        let _ = doc_conn.events();

        let e = c.revoke_seat(&seat("Pat", Role::Patient));
        assert!(e.contains(&Effect::StopMedia {
            participant: pat.participant.clone()
        }));
        let out = pat_conn.drain();
        assert!(
            out.iter()
                .any(|o| matches!(o, Outbound::Event(ConsultationEvent::Removed)))
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Outbound::Close(Disconnect::Removed)))
        );
        assert_eq!(
            c.participant_state(pat.participant.as_str()),
            Some(ParticipantState::Left)
        );
        // The practitioner is told the patient left the call.
        assert!(doc_conn.events().iter().any(|e| matches!(e,
            ConsultationEvent::ParticipantLeft { participant, reason: LeftReason::Removed }
                if *participant == pat.participant)));
        assert_eq!(
            try_join(&mut c, "Pat", Role::Patient, pat.seat_secret.as_ref(), 4).err(),
            Some(JoinError::Removed)
        );
        // Another seat is untouched; revoking a seat nobody holds only spends it.
        assert!(closes(&mut guest_conn).is_empty());
        assert_eq!(
            c.participant_state(guest.participant.as_str()),
            Some(ParticipantState::Waiting)
        );
        assert!(c.revoke_seat(&seat("Later", Role::Guest)).is_empty());
        assert_eq!(
            try_join(&mut c, "Later", Role::Guest, None, 5).err(),
            Some(JoinError::Removed)
        );
    }

    #[test]
    fn presence_names_the_seat_never_the_label() {
        let mut c = consultation(12);
        let _ = join(&mut c, "Dr A", Role::Practitioner, 1);
        let _ = join(&mut c, "Pat", Role::Patient, 2);
        let seats: Vec<_> = c.presence().map(|p| p.seat.to_string()).collect();
        assert_eq!(seats, vec!["acct-Dr A", "jti-Pat"]);
    }
}
