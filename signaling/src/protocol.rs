//! The signalling protocol, version 2 (`docs/signaling.md`): serde-tagged messages. Version 2
//! adds chat and notices to version 1; version-1 clients are still served (they are sent
//! nothing of version 2).

use serde::{Deserialize, Serialize};
pub use teleconsult_consultation::{
    ChatKind, ChatMessage, ConsultationId, DocumentInfo, LeftReason, MediaKind, ParticipantId,
    ParticipantInfo, ParticipantState, Policy, Role, TrackId, TrackInfo,
};

/// The newest protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest version still served (a `join` without `protocol` means this one).
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// WebSocket close codes (besides 1000 and 1009).
pub mod close {
    /// The same tab joined again from another connection, or the seat moved to a second
    /// device the practitioner admitted (the reason says which).
    pub const REPLACED: u16 = 4000;
    /// The credential cannot be checked right now (storage unavailable): retry later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Policy violation (RFC 6455): more messages than `signaling.messages_per_second` allows.
    pub const TOO_MANY_MESSAGES: u16 = 1008;
    pub const BAD_JOIN: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const JOIN_TIMEOUT: u16 = 4408;
    pub const FULL: u16 = 4409;
    pub const ENDED: u16 = 4410;
    /// Sent after a `redirect` message: this node does not own the consultation; connect to the
    /// URL the message named (cluster mode).
    pub const REDIRECT: u16 = 4302;
    /// This node stopped serving the consultation (another node owns it now, or this one lost
    /// its lease): reconnect through the load balancer (the standard "service restart" code).
    pub const MOVED: u16 = 1012;
    /// The client did not read what the server sent: more than `signaling.outbox_messages`
    /// queued for it (reason `slow_consumer`). The client may reconnect.
    pub const SLOW_CONSUMER: u16 = 4008;
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
    /// (v2) A chat message to everyone in the call (admitted participants only).
    Chat {
        text: String,
    },
    /// (v2) A practitioner's one-way notice to the waiting room.
    Notice {
        text: String,
    },
    /// (v2) I start (`active`) or stop sharing my screen (admitted; one at a time).
    ScreenShare {
        active: bool,
    },
    /// (v2) Start a pre-call connection test: a media session of its own with the SFU (nobody
    /// sees it), for at most 20 s; its offer comes as `precall_offer`. One at a time: a new
    /// one replaces the last.
    PrecallStart,
    /// (v2) The answer to `precall_offer`.
    PrecallAnswer {
        sdp: String,
    },
    /// (v2) End the pre-call test now.
    PrecallStop,
    /// (v2, practitioner) Ask everyone in the call to consent to a recording; my own consent
    /// is given with it, to the consent text in `language`.
    RecordingRequest {
        #[serde(default)]
        language: Option<String>,
    },
    /// (v2) My answer to the running recording (again later to change it: `accept: false`
    /// after accepting withdraws my consent).
    RecordingConsent {
        recording: String,
        accept: bool,
        /// The version of the text I was shown (from `recording_requested`).
        text_version: String,
        /// The language of the text I was shown (`en`, `fr`, `de`).
        language: String,
    },
    /// (v2, practitioner) Stop the running recording.
    RecordingStop,
    /// (v2) I show the video I receive as `track` (its `a=msid` track id) in a tile `width` ×
    /// `height` device pixels (0 × 0: not shown): simulcast sends me the smallest layer that
    /// fills it.
    VideoSize {
        track: String,
        width: u32,
        height: u32,
    },
    /// (v2, end_to_end, in the call) My ECDH P-256 public key (raw point, base64url, at most
    /// 128 characters), for the others in the call.
    E2eePublicKey {
        key: String,
    },
    /// (v2, end_to_end, practitioner) The consultation's media key of `epoch`, wrapped for
    /// `participant`'s public key (base64url, at most 256 characters; see docs/signaling.md).
    E2eeKey {
        participant: ParticipantId,
        epoch: u32,
        key: String,
    },
}

/// The longest track id a `video_size` may name (ours are far shorter).
pub const MAX_TRACK_ID_LEN: usize = 128;

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
        /// (v2) What may happen to the consultation's media: `standard`, `recordable`,
        /// `end_to_end` (shown before entering the call).
        #[serde(default)]
        policy: Policy,
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
    /// (cluster mode) Another node owns this consultation: close follows with
    /// [`close::REDIRECT`]; join again at `url` (`ws://…/ws/{consultation}`). Sent before
    /// `joined`, to clients of any version.
    Redirect {
        url: String,
        /// (cluster mode, a practitioner's session join) A short-lived, single-use,
        /// consultation-bound join ticket: send it as `join.token` at `url` (the session cookie
        /// of this host does not reach the owner's host). Absent for link joins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<String>,
    },
    /// (v2) `participant` started or stopped sharing their screen (the sharer is told too).
    ScreenShare {
        participant: ParticipantId,
        active: bool,
    },
    /// (v2) The pre-call test's offer (answer with `precall_answer`).
    PrecallOffer {
        sdp: String,
    },
    /// (v2) The pre-call test's media session ended (its time is up, it failed, or it was
    /// stopped).
    PrecallEnded,
    /// (v2) A chat message in the call (also echoed to its sender).
    Chat {
        message: ChatMessage,
    },
    /// (v2) A practitioner's notice to the waiting room (echoed to the practitioners).
    Notice {
        message: ChatMessage,
    },
    /// (v2) The chat so far, on entering the call; the notices so far, on entering the
    /// waiting room.
    ChatHistory {
        messages: Vec<ChatMessage>,
    },
    /// (v2) A practitioner asks to record: show the consent text (by language, of
    /// `text_version`) and answer with `recording_consent`.
    RecordingRequested {
        recording: String,
        text_version: String,
        texts: std::collections::BTreeMap<String, String>,
    },
    /// (v2) What is recorded now (the indicator): the running recording, if any, and whose
    /// media it takes. Sent on entering the call and at every change.
    RecordingState {
        recording: Option<String>,
        recorded: Vec<ParticipantId>,
    },
    /// (v2, end_to_end) `participant`, in the call, published its ECDH public key.
    E2eePublicKey {
        participant: ParticipantId,
        key: String,
    },
    /// (v2, end_to_end) The practitioner `from` sent me the media key of `epoch`, wrapped for
    /// my public key.
    E2eeKey {
        from: ParticipantId,
        epoch: u32,
        key: String,
    },
}

impl ServerMessage {
    /// The protocol version that introduced this message: a client that joined with an older
    /// one is not sent it.
    pub fn since(&self) -> u32 {
        match self {
            ServerMessage::Chat { .. }
            | ServerMessage::Notice { .. }
            | ServerMessage::ChatHistory { .. }
            | ServerMessage::ScreenShare { .. }
            | ServerMessage::PrecallOffer { .. }
            | ServerMessage::PrecallEnded
            | ServerMessage::RecordingRequested { .. }
            | ServerMessage::RecordingState { .. }
            | ServerMessage::E2eePublicKey { .. }
            | ServerMessage::E2eeKey { .. } => 2,
            _ => 1,
        }
    }
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
    /// (v2) The chat message is empty after trimming.
    ChatEmpty,
    /// (v2) The chat message is longer than `consultation.chat_max_chars`.
    ChatTooLong,
    /// (v2) Too many chat messages: wait a moment.
    ChatRateLimited,
    /// (v2) Someone else is sharing their screen: one at a time.
    ScreenShareBusy,
    /// (v2) This consultation's policy does not allow recording (or this server records
    /// nothing).
    RecordingNotAllowed,
    /// (v2) A recording is already running.
    RecordingAlreadyRunning,
    /// (v2) No recording is running (or it is not the one named).
    NotRecording,
    /// (v2) The consent text shown is not the current version: answer the new request.
    ConsentTextOutdated,
    /// (v2) Key exchange in a consultation that is not `end_to_end`.
    E2eeNotEnabled,
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

    #[test]
    fn recording_messages_on_the_wire() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"recording_consent","recording":"rec_1","accept":true,"text_version":"v","language":"fr"}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::RecordingConsent {
                recording: "rec_1".into(),
                accept: true,
                text_version: "v".into(),
                language: "fr".into()
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"recording_request"}"#).unwrap();
        assert_eq!(m, ClientMessage::RecordingRequest { language: None });
        assert!(
            serde_json::from_str::<ClientMessage>(
                r#"{"type":"recording_consent","recording":"r","accept":true}"#
            )
            .is_err(),
            "an answer names the text it answers"
        );
        let out = ServerMessage::RecordingState {
            recording: Some("rec_1".into()),
            recorded: vec!["p1".into()],
        };
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({"type":"recording_state","recording":"rec_1","recorded":["p1"]})
        );
        assert_eq!(out.since(), 2);
        let e = serde_json::to_value(ServerMessage::error(ErrorCode::RecordingNotAllowed, "x"))
            .unwrap();
        assert_eq!(e["code"], "recording_not_allowed");
        // `joined` names the policy; a `joined` without one (an older server) reads as standard.
        let j: ServerMessage = serde_json::from_value(serde_json::json!({
            "type":"joined","protocol":2,"consultation":"c",
            "you":{"id":"p","role":"patient","display_name":"P","state":"waiting","audio_muted":false,"video_muted":false,"second_device":false},
            "participants":[]
        }))
        .unwrap();
        assert!(matches!(
            j,
            ServerMessage::Joined {
                policy: Policy::Standard,
                ..
            }
        ));
    }

    #[test]
    fn e2ee_messages_on_the_wire() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"e2ee_public_key","key":"BAbc-_"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::E2eePublicKey {
                key: "BAbc-_".into()
            }
        );
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"e2ee_key","participant":"p2","epoch":3,"key":"wrapped"}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::E2eeKey {
                participant: "p2".into(),
                epoch: 3,
                key: "wrapped".into()
            }
        );
        for bad in [
            r#"{"type":"e2ee_key","participant":"p2","key":"w"}"#,
            r#"{"type":"e2ee_key","participant":"p2","epoch":-1,"key":"w"}"#,
            r#"{"type":"e2ee_key","participant":"p2","epoch":4294967296,"key":"w"}"#,
            r#"{"type":"e2ee_public_key","key":"k","private":"d"}"#,
            r#"{"type":"e2ee_public_key","key":7}"#,
        ] {
            assert!(serde_json::from_str::<ClientMessage>(bad).is_err(), "{bad}");
        }
        let out = ServerMessage::E2eeKey {
            from: "p1".into(),
            epoch: 3,
            key: "w".into(),
        };
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({"type":"e2ee_key","from":"p1","epoch":3,"key":"w"})
        );
        assert_eq!(out.since(), 2);
        let e = serde_json::to_value(ServerMessage::error(ErrorCode::E2eeNotEnabled, "x")).unwrap();
        assert_eq!(e["code"], "e2ee_not_enabled");
    }

    #[test]
    fn video_size_names_a_track_and_a_tile() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"video_size","track":"p1-7","width":320,"height":180}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::VideoSize {
                track: "p1-7".into(),
                width: 320,
                height: 180
            }
        );
        // Every field is required; negative or fractional sizes and unknown fields are refused.
        for bad in [
            r#"{"type":"video_size","track":"p1-7","height":180}"#,
            r#"{"type":"video_size","track":"p1-7","width":-1,"height":180}"#,
            r#"{"type":"video_size","track":"p1-7","width":1.5,"height":180}"#,
            r#"{"type":"video_size","track":"p1-7","width":1,"height":1,"extra":0}"#,
        ] {
            assert!(serde_json::from_str::<ClientMessage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chat_messages_on_the_wire() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"chat","text":"<b>hi</b>"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Chat {
                text: "<b>hi</b>".into()
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"notice","text":"late"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Notice {
                text: "late".into()
            }
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"chat"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"chat","text":"a","html":true}"#)
                .is_err(),
            "unknown fields are refused"
        );
        let out = ServerMessage::Chat {
            message: ChatMessage {
                id: "msg_1".into(),
                seq: 3,
                kind: ChatKind::Chat,
                from: "p1".into(),
                role: Role::Patient,
                display_name: "Pat".into(),
                at: 1700000000000,
                text: "hello".into(),
            },
        };
        let v: serde_json::Value = serde_json::to_value(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"chat","message":{"id":"msg_1","seq":3,"kind":"chat","from":"p1","role":"patient","display_name":"Pat","at":1700000000000i64,"text":"hello"}})
        );
        assert_eq!(out.since(), 2);
        assert_eq!(ServerMessage::Pong.since(), 1);
        let e =
            serde_json::to_value(ServerMessage::error(ErrorCode::ChatRateLimited, "x")).unwrap();
        assert_eq!(e["code"], "chat_rate_limited");
    }
}
