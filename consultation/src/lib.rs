//! Teleconsult consultations: who is in which consultation, in which state, and who may see and
//! do what — the rules, free of any wire protocol, socket or HTTP type.
//!
//! - [`ids`]: typed ids ([`ConsultationId`], [`ParticipantId`], [`TrackId`]).
//! - [`model`]: [`Role`], [`ParticipantState`], tracks, the views participants are shown.
//! - [`rules`]: one [`Consultation`] as a state machine with time passed in (waiting room,
//!   admit/reject/remove/end, reconnect grace, capacity); unit-tested on a synthetic clock.
//! - [`event`]: the [`ConsultationEvent`]s it delivers to each participant's [`Outbox`], and
//!   why a connection is closed ([`Disconnect`]); the signalling crate maps them to messages.
//! - [`service`]: the [`ConsultationService`] holding every live consultation, driving the media
//!   plane through [`MediaPlane`] and billing through [`Observer`].
//! - [`invitation`]: join links bound to one seat (an invitation record), the signing keyring,
//!   the [`Credential`] a connection presents, seat secrets.
//! - [`token`]: version-1 tokens (consultation, identity, role, expiry), kept only for the
//!   pre-accounts practitioner.
//!
//! Data flows one way: the edge (signalling, HTTP) authenticates and parses, this crate decides
//! and emits events; it never reaches back up.

pub mod chat;
pub mod config;
pub mod event;
pub mod ids;
pub mod invitation;
pub mod model;
pub mod rules;
pub mod service;
pub mod token;

pub use chat::{ChatError, ChatKind, ChatLimits, ChatMessage, ChatRecorder};
pub use config::ConsultationConfig;
pub use event::{
    ConsultationEvent, Disconnect, MediaFailure, Outbound, Outbox, OutboxReceiver, outbox,
};
pub use ids::{ConsultationId, ParticipantId, TrackId};
pub use invitation::{Authenticator, Credential, Keyring, Label, Refusal, SeatKey, SeatSecret};
pub use model::{
    DocumentInfo, LeftReason, MediaKind, ParticipantInfo, ParticipantState, Presence, Role,
    TrackInfo, TrackSource,
};
pub use rules::{
    ActionError, Admissions, CONSENT_TEXT_VERSION, CONSENT_TEXTS, Consultation, E2eeError, Effect,
    JoinError, Joined, Limits, MAX_PUBLIC_KEY_CHARS, MAX_WRAPPED_KEY_CHARS, RecordingEffect,
    RecordingError, consent_text, text_sha256,
};
pub use service::{
    AdmissionRecorder, ConsultationService, MediaPlane, MediaSession, NoMedia, Observer, Recorder,
};
pub use teleconsult_store::Policy;

/// Names of the metrics this crate records.
pub mod metric_names {
    /// Gauge: live consultations.
    pub const CONSULTATIONS: &str = "teleconsult_consultations";
    /// Gauge: participants not gone for good.
    pub const PARTICIPANTS: &str = "teleconsult_participants";
}
