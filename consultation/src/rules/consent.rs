//! Recording with consent (issue 13): the consultation's policy decides whether a recording
//! may be asked for at all; a practitioner asks; every participant in the call accepts or
//! declines, and may withdraw later; someone admitted while a recording runs is asked on
//! arrival. Nothing of a participant is recorded unless their consent stands: the rules say so
//! through [`RecordingEffect`]s, which the service passes to its [`Recorder`](crate::Recorder)
//! (the recorder then lets that participant's taps pass, or stops them).
//!
//! The consent text is versioned and lives here, in every language the join page offers; a
//! participant's answer names the language they were shown, and the SHA-256 of exactly that
//! text is what their consent record carries.

use super::{Consultation, Effect};
use crate::event::ConsultationEvent;
use crate::ids::ParticipantId;
use crate::model::Role;
use sha2::{Digest, Sha256};
use teleconsult_store::Policy;

/// The version of the consent text (changes whenever any of its translations does).
pub const CONSENT_TEXT_VERSION: &str = "2026-12-01";

/// The consent text of [`CONSENT_TEXT_VERSION`] by language (the join page's languages).
pub const CONSENT_TEXTS: [(&str, &str); 3] = [
    (
        "en",
        "The practitioner asks to record this consultation (your camera and microphone). \
         The recording is kept encrypted by the practice, is only accessible to the \
         practitioner and the practice's administrators, and is deleted at the end of the \
         practice's retention period. You may decline without any consequence for your \
         care, and you may withdraw your consent at any time during the call: nothing more \
         of you is recorded from that moment on.",
    ),
    (
        "fr",
        "Le praticien demande à enregistrer cette consultation (votre caméra et votre \
         microphone). L'enregistrement est conservé chiffré par le cabinet, accessible \
         seulement au praticien et aux administrateurs du cabinet, et supprimé au terme de \
         la durée de conservation du cabinet. Vous pouvez refuser sans aucune conséquence \
         pour vos soins, et retirer votre consentement à tout moment pendant l'appel : plus \
         rien de vous n'est enregistré à partir de ce moment.",
    ),
    (
        "de",
        "Die behandelnde Person bittet darum, diese Sprechstunde aufzuzeichnen (Ihre Kamera \
         und Ihr Mikrofon). Die Aufzeichnung wird von der Praxis verschlüsselt aufbewahrt, \
         ist nur der behandelnden Person und den Administratoren der Praxis zugänglich und \
         wird nach Ablauf der Aufbewahrungsfrist der Praxis gelöscht. Sie können ohne \
         Nachteile für Ihre Behandlung ablehnen und Ihre Einwilligung während des Gesprächs \
         jederzeit widerrufen: Ab diesem Moment wird nichts mehr von Ihnen aufgezeichnet.",
    ),
];

/// The consent text in `language` (English when it is not one of ours) and its language.
pub fn consent_text(language: &str) -> (&'static str, &'static str) {
    CONSENT_TEXTS
        .iter()
        .find(|(l, _)| *l == language)
        .copied()
        .unwrap_or(CONSENT_TEXTS[0])
}

/// Hex SHA-256 of a consent text.
pub fn text_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a recording request or a consent answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum RecordingError {
    #[error("only a practitioner in the call may start or stop a recording")]
    Forbidden,
    #[error("this consultation's policy does not allow recording")]
    NotAllowed,
    #[error("a recording is already running")]
    AlreadyRecording,
    #[error("no recording is running")]
    NotRecording,
    #[error("you are not in the call")]
    NotInCall,
    #[error("the consent text version is not the current one")]
    StaleText,
}

impl RecordingError {
    /// A stable code for clients.
    pub fn code(self) -> &'static str {
        match self {
            RecordingError::Forbidden => "forbidden",
            RecordingError::NotAllowed => "recording_not_allowed",
            RecordingError::AlreadyRecording => "recording_already_running",
            RecordingError::NotRecording => "not_recording",
            RecordingError::NotInCall => "not_admitted",
            RecordingError::StaleText => "consent_text_outdated",
        }
    }
}

/// What a participant said about the running recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consent {
    /// Asked, no answer yet: not recorded.
    Asked,
    Given,
    Declined,
}

/// The recording of a consultation while it runs.
#[derive(Debug)]
pub(super) struct ActiveRecording {
    id: String,
    consents: Vec<(ParticipantId, Consent)>,
}

impl ActiveRecording {
    fn consent(&self, who: &ParticipantId) -> Option<Consent> {
        self.consents.iter().find(|(p, _)| p == who).map(|c| c.1)
    }

    fn set(&mut self, who: &ParticipantId, consent: Consent) {
        match self.consents.iter_mut().find(|(p, _)| p == who) {
            Some(c) => c.1 = consent,
            None => self.consents.push((who.clone(), consent)),
        }
    }

    fn recorded(&self) -> Vec<ParticipantId> {
        self.consents
            .iter()
            .filter(|c| c.1 == Consent::Given)
            .map(|c| c.0.clone())
            .collect()
    }
}

/// What the recorder must do (carried out by the service through its `Recorder`). `Debug`
/// never shows the labels (health data).
#[derive(Clone, PartialEq, Eq)]
pub enum RecordingEffect {
    /// Start recording `recording`: nothing passes until someone's consent does.
    /// `participants`: the ids and shown names of everyone in the call now.
    Start {
        recording: String,
        participants: Vec<(ParticipantId, String)>,
    },
    /// Someone admitted while `recording` runs (their shown name, for the manifest).
    Participant {
        recording: String,
        participant: ParticipantId,
        label: String,
    },
    /// `participant`'s media passes from now on (`given`), or no longer.
    Consent {
        recording: String,
        participant: ParticipantId,
        given: bool,
        text_version: String,
        text_sha256: String,
    },
    /// Stop and keep `recording`.
    Stop { recording: String },
}

impl std::fmt::Debug for RecordingEffect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordingEffect::Start {
                recording,
                participants,
            } => f
                .debug_struct("Start")
                .field("recording", recording)
                .field(
                    "participants",
                    &participants.iter().map(|(p, _)| p).collect::<Vec<_>>(),
                )
                .finish_non_exhaustive(),
            RecordingEffect::Participant {
                recording,
                participant,
                ..
            } => f
                .debug_struct("Participant")
                .field("recording", recording)
                .field("participant", participant)
                .finish_non_exhaustive(),
            RecordingEffect::Consent {
                recording,
                participant,
                given,
                text_version,
                ..
            } => f
                .debug_struct("Consent")
                .field("recording", recording)
                .field("participant", participant)
                .field("given", given)
                .field("text_version", text_version)
                .finish_non_exhaustive(),
            RecordingEffect::Stop { recording } => f
                .debug_struct("Stop")
                .field("recording", recording)
                .finish(),
        }
    }
}

fn audit(action: &'static str, actor: &ParticipantId, target: Option<&ParticipantId>) -> Effect {
    Effect::Audit {
        action,
        actor: actor.clone(),
        target: target.cloned(),
    }
}

impl Consultation {
    /// The policy this consultation was created with.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The id of the running recording, if any.
    pub fn recording(&self) -> Option<&str> {
        self.recording.as_ref().map(|r| r.id.as_str())
    }

    fn request_event(&self, id: &str) -> ConsultationEvent {
        ConsultationEvent::RecordingRequested {
            recording: id.to_string(),
            text_version: CONSENT_TEXT_VERSION.to_string(),
            texts: CONSENT_TEXTS
                .iter()
                .map(|(l, t)| (l.to_string(), t.to_string()))
                .collect(),
        }
    }

    /// Tell everyone in the call what is being recorded now (the indicator).
    fn broadcast_recording_state(&self) {
        let event = self.recording_state();
        self.broadcast_in_call(&event);
    }

    fn recording_state(&self) -> ConsultationEvent {
        match &self.recording {
            Some(r) => ConsultationEvent::RecordingState {
                recording: Some(r.id.clone()),
                recorded: r.recorded(),
            },
            None => ConsultationEvent::RecordingState {
                recording: None,
                recorded: Vec::new(),
            },
        }
    }

    /// A practitioner in the call asks to record (in `language`: their own consent is given
    /// with the request, to the text in that language). Everyone else in the call is asked.
    pub fn request_recording(
        &mut self,
        actor: &ParticipantId,
        language: &str,
        recording_id: String,
    ) -> Result<Vec<Effect>, RecordingError> {
        let me = self.get(actor.as_str()).ok_or(RecordingError::NotInCall)?;
        if me.role != Role::Practitioner || !me.in_call() {
            return Err(RecordingError::Forbidden);
        }
        if self.policy != Policy::Recordable {
            return Err(RecordingError::NotAllowed);
        }
        if self.recording.is_some() {
            return Err(RecordingError::AlreadyRecording);
        }
        let participants: Vec<(ParticipantId, String)> = self
            .participants
            .iter()
            .filter(|p| p.in_call())
            .map(|p| (p.id.clone(), p.label.expose().to_string()))
            .collect();
        let mut rec = ActiveRecording {
            id: recording_id.clone(),
            consents: Vec::new(),
        };
        let (_, text) = consent_text(language);
        rec.set(actor, Consent::Given);
        let event = self.request_event(&recording_id);
        for p in self
            .participants
            .iter()
            .filter(|p| p.in_call() && p.id != *actor)
        {
            rec.set(&p.id, Consent::Asked);
            p.send(event.clone());
        }
        self.recording = Some(rec);
        self.broadcast_recording_state();
        Ok(vec![
            audit("recording.request", actor, None),
            Effect::Recording(RecordingEffect::Start {
                recording: recording_id.clone(),
                participants,
            }),
            audit("recording.start", actor, None),
            Effect::Recording(RecordingEffect::Consent {
                recording: recording_id,
                participant: actor.clone(),
                given: true,
                text_version: CONSENT_TEXT_VERSION.to_string(),
                text_sha256: text_sha256(text),
            }),
            audit("recording.consent", actor, None),
        ])
    }

    /// `participant` answers the request of `recording` (or changes their answer): `accept`
    /// gives consent to the text of `text_version` in `language`; not accepting declines, or
    /// withdraws a consent given before.
    pub fn answer_recording(
        &mut self,
        participant: &ParticipantId,
        recording: &str,
        accept: bool,
        text_version: &str,
        language: &str,
    ) -> Result<Vec<Effect>, RecordingError> {
        let p = self
            .get(participant.as_str())
            .ok_or(RecordingError::NotInCall)?;
        if !p.in_call() {
            return Err(RecordingError::NotInCall);
        }
        let rec = match &mut self.recording {
            Some(r) if r.id == recording => r,
            _ => return Err(RecordingError::NotRecording),
        };
        let before = rec.consent(participant);
        let mut effects = Vec::new();
        if accept {
            if text_version != CONSENT_TEXT_VERSION {
                return Err(RecordingError::StaleText);
            }
            if before == Some(Consent::Given) {
                return Ok(effects);
            }
            rec.set(participant, Consent::Given);
            let (_, text) = consent_text(language);
            effects.push(Effect::Recording(RecordingEffect::Consent {
                recording: recording.to_string(),
                participant: participant.clone(),
                given: true,
                text_version: CONSENT_TEXT_VERSION.to_string(),
                text_sha256: text_sha256(text),
            }));
            effects.push(audit("recording.consent", participant, None));
        } else {
            rec.set(participant, Consent::Declined);
            if before == Some(Consent::Given) {
                effects.push(Effect::Recording(RecordingEffect::Consent {
                    recording: recording.to_string(),
                    participant: participant.clone(),
                    given: false,
                    text_version: String::new(),
                    text_sha256: String::new(),
                }));
                effects.push(audit("recording.withdraw", participant, None));
            } else if before != Some(Consent::Declined) {
                effects.push(audit("recording.refuse", participant, None));
            }
        }
        self.broadcast_recording_state();
        Ok(effects)
    }

    /// A practitioner in the call stops the running recording.
    pub fn stop_recording(&mut self, actor: &ParticipantId) -> Result<Vec<Effect>, RecordingError> {
        let me = self.get(actor.as_str()).ok_or(RecordingError::NotInCall)?;
        if me.role != Role::Practitioner || !me.in_call() {
            return Err(RecordingError::Forbidden);
        }
        let Some(rec) = self.recording.take() else {
            return Err(RecordingError::NotRecording);
        };
        self.broadcast_recording_state();
        Ok(vec![
            Effect::Recording(RecordingEffect::Stop { recording: rec.id }),
            audit("recording.stop", actor, None),
        ])
    }

    /// The recording ends with the consultation (no actor: it ended or was cancelled).
    pub(super) fn recording_ends(&mut self) -> Option<Effect> {
        let rec = self.recording.take()?;
        Some(Effect::Recording(RecordingEffect::Stop {
            recording: rec.id,
        }))
    }

    /// `who` is now in the call (admitted, or back on a new connection): told what is being
    /// recorded, and asked if they have not answered (a late joiner).
    pub(super) fn recording_on_arrival(&mut self, who: &ParticipantId) -> Vec<Effect> {
        let Some(p) = self.get(who.as_str()) else {
            return Vec::new();
        };
        let label = p.label.expose().to_string();
        let state = self.recording_state();
        p.send(state);
        let Some(rec) = &self.recording else {
            return Vec::new();
        };
        let id = rec.id.clone();
        match rec.consent(who) {
            Some(Consent::Given) | Some(Consent::Declined) => Vec::new(),
            Some(Consent::Asked) => {
                p.send(self.request_event(&id));
                Vec::new()
            }
            None => {
                p.send(self.request_event(&id));
                if let Some(rec) = &mut self.recording {
                    rec.set(who, Consent::Asked);
                }
                vec![Effect::Recording(RecordingEffect::Participant {
                    recording: id,
                    participant: who.clone(),
                    label,
                })]
            }
        }
    }

    /// `who` left the call for good: a consent they gave lapses (and is recorded as withdrawn).
    /// When no practitioner is left in the call (not even reconnecting), the recording stops:
    /// nobody could stop it any more.
    pub(super) fn recording_on_departure(&mut self, who: &ParticipantId) -> Vec<Effect> {
        let Some(rec) = &mut self.recording else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        if rec.consent(who) == Some(Consent::Given) {
            rec.set(who, Consent::Declined);
            effects.push(Effect::Recording(RecordingEffect::Consent {
                recording: rec.id.clone(),
                participant: who.clone(),
                given: false,
                text_version: String::new(),
                text_sha256: String::new(),
            }));
        }
        let practitioner_left = !self
            .participants
            .iter()
            .any(|p| p.role == Role::Practitioner && p.in_call());
        if practitioner_left && let Some(stop) = self.recording_ends() {
            effects.push(stop);
        }
        if !effects.is_empty() {
            self.broadcast_recording_state();
        }
        effects
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::chat::ChatLimits;
    use crate::event::Outbound;
    use crate::event::{OutboxReceiver, outbox};
    use crate::invitation::{Label, SeatKey};
    use crate::rules::{JoinRequest, Limits};
    use std::time::{Duration, Instant};

    /// A consultation of `policy` (also for the other rules' tests).
    pub(in crate::rules) fn consultation(policy: Policy) -> Consultation {
        Consultation::new(
            "c1".into(),
            Limits {
                max_participants: 8,
                reconnect_grace: Duration::from_secs(60),
                chat: ChatLimits::default(),
            },
        )
        .with_policy(policy)
    }

    /// `who` joins as `role` from a new tab (also for the other rules' tests).
    pub(in crate::rules) fn join(
        c: &mut Consultation,
        who: &str,
        role: Role,
        generation: u64,
    ) -> (ParticipantId, OutboxReceiver) {
        let (tx, rx) = outbox(1024);
        let seat = match role {
            Role::Practitioner => SeatKey::Account(format!("acct-{who}")),
            _ => SeatKey::Invitation(format!("jti-{who}")),
        };
        let label = Label::new(who);
        let (j, _) = c
            .join(
                JoinRequest {
                    seat: &seat,
                    role,
                    label: &label,
                    secret: None,
                },
                generation,
                tx,
            )
            .unwrap();
        (j.participant, rx)
    }

    fn events(rx: &mut OutboxReceiver) -> Vec<ConsultationEvent> {
        let mut v = Vec::new();
        while let Some(Outbound::Event(e)) = rx.try_recv() {
            v.push(e);
        }
        v
    }

    fn asked(events: &[ConsultationEvent]) -> Option<String> {
        events.iter().find_map(|e| match e {
            ConsultationEvent::RecordingRequested { recording, .. } => Some(recording.clone()),
            _ => None,
        })
    }

    fn last_recorded(events: &[ConsultationEvent]) -> Option<Vec<ParticipantId>> {
        events.iter().rev().find_map(|e| match e {
            ConsultationEvent::RecordingState { recorded, .. } => Some(recorded.clone()),
            _ => None,
        })
    }

    fn consents(effects: &[Effect]) -> Vec<(ParticipantId, bool)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Recording(RecordingEffect::Consent {
                    participant, given, ..
                }) => Some((participant.clone(), *given)),
                _ => None,
            })
            .collect()
    }

    fn audits(effects: &[Effect]) -> Vec<&'static str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Audit { action, .. } => Some(*action),
                _ => None,
            })
            .collect()
    }

    /// A participant's id and inbox.
    type Conn = (ParticipantId, OutboxReceiver);

    /// A practitioner and an admitted patient in a consultation of `policy`.
    fn call(policy: Policy) -> (Consultation, Conn, Conn) {
        let mut c = consultation(policy);
        let (doc, mut doc_rx) = join(&mut c, "Dr A", Role::Practitioner, 1);
        let (pat, mut pat_rx) = join(&mut c, "Pat", Role::Patient, 2);
        c.admit(&doc, pat.as_str()).unwrap();
        events(&mut doc_rx);
        events(&mut pat_rx);
        (c, (doc, doc_rx), (pat, pat_rx))
    }

    #[test]
    fn only_a_recordable_consultation_and_only_a_practitioner_can_start_a_recording() {
        for policy in [Policy::Standard, Policy::EndToEnd] {
            let (mut c, (doc, _), _) = call(policy);
            assert_eq!(
                c.request_recording(&doc, "en", "r1".into()),
                Err(RecordingError::NotAllowed),
                "{policy:?}"
            );
            assert_eq!(c.recording(), None);
        }
        let (mut c, (doc, _), (pat, _)) = call(Policy::Recordable);
        assert_eq!(
            c.request_recording(&pat, "en", "r1".into()),
            Err(RecordingError::Forbidden)
        );
        assert_eq!(c.stop_recording(&doc), Err(RecordingError::NotRecording));
        c.request_recording(&doc, "en", "r1".into()).unwrap();
        assert_eq!(
            c.request_recording(&doc, "en", "r2".into()),
            Err(RecordingError::AlreadyRecording)
        );
        assert_eq!(c.stop_recording(&pat), Err(RecordingError::Forbidden));
    }

    #[test]
    fn nobody_is_recorded_without_their_consent_and_withdrawal_stops_it() {
        let (mut c, (doc, mut doc_rx), (pat, mut pat_rx)) = call(Policy::Recordable);
        let effects = c.request_recording(&doc, "fr", "r1".into()).unwrap();
        // The practitioner's request is their consent (to the French text); the patient is
        // asked, and not recorded yet.
        assert_eq!(consents(&effects), vec![(doc.clone(), true)]);
        assert!(effects.iter().any(|e| matches!(e,
            Effect::Recording(RecordingEffect::Consent { text_sha256, .. })
                if *text_sha256 == text_sha256_of("fr"))));
        assert_eq!(
            audits(&effects),
            vec!["recording.request", "recording.start", "recording.consent"]
        );
        let pat_events = events(&mut pat_rx);
        assert_eq!(asked(&pat_events).as_deref(), Some("r1"));
        assert_eq!(last_recorded(&pat_events), Some(vec![doc.clone()]));
        assert_eq!(last_recorded(&events(&mut doc_rx)), Some(vec![doc.clone()]));

        // An outdated text or another recording's id is refused.
        assert_eq!(
            c.answer_recording(&pat, "r1", true, "1999-01-01", "en"),
            Err(RecordingError::StaleText)
        );
        assert_eq!(
            c.answer_recording(&pat, "r0", true, CONSENT_TEXT_VERSION, "en"),
            Err(RecordingError::NotRecording)
        );
        let effects = c
            .answer_recording(&pat, "r1", true, CONSENT_TEXT_VERSION, "de")
            .unwrap();
        assert_eq!(consents(&effects), vec![(pat.clone(), true)]);
        assert_eq!(audits(&effects), vec!["recording.consent"]);
        assert_eq!(
            last_recorded(&events(&mut doc_rx)),
            Some(vec![doc.clone(), pat.clone()])
        );
        // Accepting twice changes nothing.
        assert!(
            c.answer_recording(&pat, "r1", true, CONSENT_TEXT_VERSION, "de")
                .unwrap()
                .is_empty()
        );
        // Withdrawn: the recorder is told at once.
        let effects = c
            .answer_recording(&pat, "r1", false, CONSENT_TEXT_VERSION, "de")
            .unwrap();
        assert_eq!(consents(&effects), vec![(pat.clone(), false)]);
        assert_eq!(audits(&effects), vec!["recording.withdraw"]);
        assert_eq!(last_recorded(&events(&mut pat_rx)), Some(vec![doc.clone()]));
        // Stopped: everyone's indicator goes off.
        let effects = c.stop_recording(&doc).unwrap();
        assert_eq!(
            effects[0],
            Effect::Recording(RecordingEffect::Stop {
                recording: "r1".into()
            })
        );
        assert_eq!(last_recorded(&events(&mut pat_rx)), Some(vec![]));
    }

    fn text_sha256_of(language: &str) -> String {
        text_sha256(consent_text(language).1)
    }

    #[test]
    fn a_refusal_is_audited_and_records_nothing() {
        let (mut c, (doc, _), (pat, _)) = call(Policy::Recordable);
        c.request_recording(&doc, "en", "r1".into()).unwrap();
        let effects = c
            .answer_recording(&pat, "r1", false, CONSENT_TEXT_VERSION, "en")
            .unwrap();
        assert!(consents(&effects).is_empty());
        assert_eq!(audits(&effects), vec!["recording.refuse"]);
    }

    #[test]
    fn a_late_joiner_is_asked_on_arrival_and_a_leaver_s_consent_lapses() {
        let (mut c, (doc, _), (pat, _)) = call(Policy::Recordable);
        c.request_recording(&doc, "en", "r1".into()).unwrap();
        c.answer_recording(&pat, "r1", true, CONSENT_TEXT_VERSION, "en")
            .unwrap();
        let (late, mut late_rx) = join(&mut c, "Interpreter", Role::Guest, 3);
        assert_eq!(asked(&events(&mut late_rx)), None, "not while waiting");
        let effects = c.admit(&doc, late.as_str()).unwrap();
        assert!(effects.iter().any(|e| matches!(e,
            Effect::Recording(RecordingEffect::Participant { participant, label, .. })
                if *participant == late && label == "Interpreter")));
        let late_events = events(&mut late_rx);
        assert_eq!(asked(&late_events).as_deref(), Some("r1"));
        assert_eq!(
            last_recorded(&late_events),
            Some(vec![doc.clone(), pat.clone()])
        );
        // The patient leaves for good: their consent lapses.
        let effects = c.gone(pat.as_str(), 2, true, Instant::now());
        assert_eq!(consents(&effects), vec![(pat.clone(), false)]);
        // The end of the consultation stops the recording.
        let effects = c.end(&doc).unwrap();
        assert!(effects.iter().any(|e| matches!(e,
            Effect::Recording(RecordingEffect::Stop { recording }) if recording == "r1")));
        assert_eq!(c.recording(), None);
    }

    #[test]
    fn the_recording_stops_when_no_practitioner_is_left() {
        let (mut c, (doc, _), (pat, mut pat_rx)) = call(Policy::Recordable);
        c.request_recording(&doc, "en", "r1".into()).unwrap();
        c.answer_recording(&pat, "r1", true, CONSENT_TEXT_VERSION, "en")
            .unwrap();
        // A dropped connection (reconnecting) keeps it running.
        let t0 = Instant::now();
        assert!(
            !c.gone(doc.as_str(), 1, false, t0)
                .iter()
                .any(|e| matches!(e, Effect::Recording(RecordingEffect::Stop { .. })))
        );
        assert_eq!(c.recording(), Some("r1"));
        // The grace ends: the practitioner has left; the recording stops, everyone is told.
        let effects = c.expire(t0 + Duration::from_secs(61));
        assert!(effects.iter().any(|e| matches!(e,
            Effect::Recording(RecordingEffect::Stop { recording }) if recording == "r1")));
        assert_eq!(c.recording(), None);
        assert_eq!(last_recorded(&events(&mut pat_rx)), Some(vec![]));
    }

    #[test]
    fn effects_never_show_a_label_in_debug() {
        let (mut c, (doc, _), _) = call(Policy::Recordable);
        let effects = c.request_recording(&doc, "en", "r1".into()).unwrap();
        let (late, _) = join(&mut c, "Ms Secretname", Role::Guest, 3);
        let mut all = effects;
        all.extend(c.admit(&doc, late.as_str()).unwrap());
        let shown = format!("{all:?}");
        assert!(
            shown.contains("r1") && shown.contains(late.as_str()),
            "{shown}"
        );
        assert!(
            !shown.contains("Secretname") && !shown.contains("Pat"),
            "{shown}"
        );
    }

    #[test]
    fn every_consent_text_is_distinct_and_english_is_the_fallback() {
        let hashes: std::collections::HashSet<String> =
            CONSENT_TEXTS.iter().map(|(_, t)| text_sha256(t)).collect();
        assert_eq!(hashes.len(), CONSENT_TEXTS.len());
        assert_eq!(consent_text("xx").0, "en");
        assert_eq!(consent_text("de").0, "de");
        assert_eq!(text_sha256("abc").len(), 64);
    }
}
