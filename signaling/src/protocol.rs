//! The signalling protocol, version 1 (`docs/signaling.md`): serde-tagged messages.

use serde::{Deserialize, Serialize};
pub use teleconsult_consultation::{
    ConsultationId, DocumentInfo, LeftReason, MediaKind, ParticipantId, ParticipantInfo,
    ParticipantState, Role, TrackId, TrackInfo,
};

pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket close codes (besides 1000 and 1009).
pub mod close {
    /// The same tab joined again from another connection, or the seat moved to a second
    /// device the practitioner admitted (the reason says which).
    pub const REPLACED: u16 = 4000;
    /// The credential cannot be checked right now (storage unavailable): retry later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const BAD_JOIN: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const JOIN_TIMEOUT: u16 = 4408;
    pub const FULL: u16 = 4409;
    pub const ENDED: u16 = 4410;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default)]
    pub sdp_mline_index: Option<u16>,
}

/// A STUN/TURN server for the client's `RTCPeerConnection` (`iceServers`), with the
/// participant's own time-limited TURN credential. `Debug` never shows the credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

/// Client → server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Join {
        /// A join link's token; empty for a practitioner joining through their login session
        /// (the cookie sent with the WebSocket handshake).
        #[serde(default)]
        token: String,
        #[serde(default)]
        protocol: Option<u32>,
        #[serde(default)]
        consultation: Option<ConsultationId>,
        /// The secret this tab was given in its first `joined` (resumes its own seat).
        #[serde(default)]
        seat_secret: Option<String>,
    },
    Answer {
        sdp: String,
    },
    IceCandidate {
        candidate: Option<IceCandidate>,
    },
    Admit {
        participant: ParticipantId,
    },
    Reject {
        participant: ParticipantId,
    },
    Remove {
        participant: ParticipantId,
    },
    EndConsultation,
    Mute {
        kind: MediaKind,
        muted: bool,
    },
    Leave,
    Ping,
    /// The client's ICE failed or its network changed: the server re-offers with new ICE
    /// credentials on the same media session (same subscriptions), no new WebSocket.
    IceRestart,
}

/// Server → client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        protocol: u32,
        consultation: ConsultationId,
        you: ParticipantInfo,
        /// A fresh secret for this tab's seat: keep it (sessionStorage) and present it in
        /// `join` when coming back. Sent only when newly issued.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seat_secret: Option<String>,
        participants: Vec<ParticipantInfo>,
        /// TURN servers with this participant's own credentials (empty: none configured).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    Admitted {
        participants: Vec<ParticipantInfo>,
    },
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
    Offer {
        sdp: String,
    },
    IceCandidate {
        candidate: Option<IceCandidate>,
    },
    DocumentAdded {
        document: DocumentInfo,
    },
    DocumentDeleted {
        document: DocumentInfo,
    },
    Rejected,
    Removed,
    ConsultationEnded,
    Error {
        code: ErrorCode,
        message: String,
    },
    Pong,
}

/// Stable error codes a client can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    BinaryNotSupported,
    NotJoined,
    AlreadyJoined,
    Forbidden,
    NotAdmitted,
    UnknownParticipant,
    BadSdp,
    BadCandidate,
    MediaFailed,
    Internal,
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tagged_messages() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"join","token":"abc","protocol":1}"#).unwrap();
        assert!(matches!(m, ClientMessage::Join { ref token, .. } if token == "abc"));
        let m: ClientMessage = serde_json::from_str(r#"{"type":"end_consultation"}"#).unwrap();
        assert_eq!(m, ClientMessage::EndConsultation);
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"launch_missiles"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"answer"}"#).is_err());
        let s = serde_json::to_string(&ServerMessage::error(ErrorCode::Forbidden, "no")).unwrap();
        assert_eq!(s, r#"{"type":"error","code":"forbidden","message":"no"}"#);
    }
}
