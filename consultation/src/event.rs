//! What the consultation tells one participant's connection: domain events, never wire messages.
//! The signalling crate maps each to a protocol message or a close code, in one place.

use crate::chat::ChatMessage;
use crate::ids::{ConsultationId, ParticipantId, TrackId};
use crate::invitation::SeatSecret;
use crate::model::{
    DocumentInfo, LeftReason, MediaKind, ParticipantInfo, ParticipantState, TrackInfo,
};
use teleconsult_store::Policy;

/// An event for one participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsultationEvent {
    /// You joined: who you are, and (if admitted) who else is in the call.
    Joined {
        consultation: ConsultationId,
        you: ParticipantInfo,
        /// A fresh secret for this tab's seat (to present when it comes back), if one was issued.
        seat_secret: Option<SeatSecret>,
        participants: Vec<ParticipantInfo>,
        /// What may happen to the consultation's media (shown before entering the call).
        policy: Policy,
    },
    /// You were admitted from the waiting room.
    Admitted {
        participants: Vec<ParticipantInfo>,
    },
    /// Practitioners only: who is waiting.
    WaitingList {
        participants: Vec<ParticipantInfo>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantState {
        participant: ParticipantId,
        state: ParticipantState,
    },
    ParticipantLeft {
        participant: ParticipantId,
        reason: LeftReason,
    },
    TrackPublished {
        participant: ParticipantId,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant: ParticipantId,
        track: TrackId,
    },
    Mute {
        participant: ParticipantId,
        kind: MediaKind,
        muted: bool,
    },
    DocumentAdded {
        document: DocumentInfo,
    },
    DocumentDeleted {
        document: DocumentInfo,
    },
    /// `participant` started or stopped sharing their screen (in-call participants only).
    ScreenShare {
        participant: ParticipantId,
        active: bool,
    },
    /// A chat message in the call (in-call participants only).
    Chat {
        message: ChatMessage,
    },
    /// A practitioner's notice to the waiting room.
    Notice {
        message: ChatMessage,
    },
    /// The chat so far (on entering the call), or the notices so far (on entering the waiting
    /// room).
    ChatHistory {
        messages: Vec<ChatMessage>,
    },
    /// A practitioner asks to record: accept or decline (the consent text of `text_version`,
    /// by language).
    RecordingRequested {
        recording: String,
        text_version: String,
        texts: Vec<(String, String)>,
    },
    /// What is being recorded now: the running recording (if any) and whose media it takes
    /// (everyone whose consent stands). Sent to everyone in the call at every change.
    RecordingState {
        recording: Option<String>,
        recorded: Vec<ParticipantId>,
    },
    /// (end_to_end) `participant`, in the call, published its ECDH public key.
    E2eePublicKey {
        participant: ParticipantId,
        key: String,
    },
    /// (end_to_end) A practitioner sent you the consultation's media key of `epoch`, wrapped
    /// for your public key (the server cannot unwrap it).
    E2eeKey {
        from: ParticipantId,
        epoch: u32,
        key: String,
    },
    /// The practitioner refused you (followed by [`Disconnect::Rejected`]).
    Rejected,
    /// The practitioner removed you (followed by [`Disconnect::Removed`]).
    Removed,
    /// The practitioner ended the consultation (followed by [`Disconnect::Ended`]).
    Ended,
    /// The media plane's offer for your session; your answer goes back to the media plane.
    MediaOffer {
        sdp: String,
    },
    /// Your media session failed.
    MediaFailed(MediaFailure),
}

/// How a media session failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaFailure {
    /// It could not be created.
    Setup,
    /// It was created, then failed (ICE timeout, DTLS failure).
    Connection,
}

/// Why the consultation closes a participant's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The same tab (or the same practitioner account) joined again from another connection.
    Replaced,
    /// The practitioner admitted a second device for this seat.
    MovedToAnotherDevice,
    Rejected,
    Removed,
    Ended,
    /// This server no longer serves the consultation (in a cluster, another node took it over,
    /// or this one could not renew its lease): reconnect through the load balancer.
    Moved,
}

/// What is delivered, in order, to a participant's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    Event(ConsultationEvent),
    /// Close the connection (after the events before it); the service already recorded why.
    Close(Disconnect),
}

/// A connection's inbox of [`Outbound`]s, given to the service at join.
pub type Outbox = tokio::sync::mpsc::UnboundedSender<Outbound>;
