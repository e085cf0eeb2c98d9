//! The one place where the consultation's domain events become protocol messages and close codes.

use crate::protocol::{ErrorCode, PROTOCOL_VERSION, ServerMessage, close};
use teleconsult_consultation::{
    ChatError, ConsultationEvent, Disconnect, E2eeError, JoinError, MediaFailure, RecordingError,
    Refusal,
};

/// The message a participant's client is sent for `event`.
pub fn message(event: ConsultationEvent) -> ServerMessage {
    use ConsultationEvent as E;
    match event {
        E::Joined {
            consultation,
            you,
            seat_secret,
            participants,
            policy,
        } => ServerMessage::Joined {
            protocol: PROTOCOL_VERSION,
            consultation,
            you,
            seat_secret: seat_secret.map(|s| s.expose().to_string()),
            participants,
            // Filled in per participant by the session (`Signaling::ice_servers`).
            ice_servers: Vec::new(),
            policy,
        },
        E::Admitted { participants } => ServerMessage::Admitted { participants },
        E::WaitingList { participants } => ServerMessage::WaitingList { participants },
        E::ParticipantJoined { participant } => ServerMessage::ParticipantJoined { participant },
        E::ParticipantState { participant, state } => {
            ServerMessage::ParticipantState { participant, state }
        }
        E::ParticipantLeft {
            participant,
            reason,
        } => ServerMessage::ParticipantLeft {
            participant,
            reason,
        },
        E::TrackPublished { participant, track } => {
            ServerMessage::TrackPublished { participant, track }
        }
        E::TrackUnpublished { participant, track } => {
            ServerMessage::TrackUnpublished { participant, track }
        }
        E::Mute {
            participant,
            kind,
            muted,
        } => ServerMessage::Mute {
            participant,
            kind,
            muted,
        },
        E::DocumentAdded { document } => ServerMessage::DocumentAdded { document },
        E::DocumentDeleted { document } => ServerMessage::DocumentDeleted { document },
        E::Chat { message } => ServerMessage::Chat { message },
        E::ScreenShare {
            participant,
            active,
        } => ServerMessage::ScreenShare {
            participant,
            active,
        },
        E::Notice { message } => ServerMessage::Notice { message },
        E::ChatHistory { messages } => ServerMessage::ChatHistory { messages },
        E::RecordingRequested {
            recording,
            text_version,
            texts,
        } => ServerMessage::RecordingRequested {
            recording,
            text_version,
            texts: texts.into_iter().collect(),
        },
        E::RecordingState {
            recording,
            recorded,
        } => ServerMessage::RecordingState {
            recording,
            recorded,
        },
        E::E2eePublicKey { participant, key } => ServerMessage::E2eePublicKey { participant, key },
        E::E2eeKey { from, epoch, key } => ServerMessage::E2eeKey { from, epoch, key },
        E::Rejected => ServerMessage::Rejected,
        E::Removed => ServerMessage::Removed,
        E::Ended => ServerMessage::ConsultationEnded,
        E::MediaOffer { sdp } => ServerMessage::Offer { sdp },
        E::MediaFailed(MediaFailure::Setup) => ServerMessage::error(
            ErrorCode::MediaFailed,
            "the media session could not be created",
        ),
        E::MediaFailed(MediaFailure::Connection) => ServerMessage::error(
            ErrorCode::MediaFailed,
            "the media connection failed; rejoin to retry",
        ),
    }
}

/// The error sent for a refused chat message or notice.
pub fn chat_refused(e: ChatError) -> ServerMessage {
    let code = match e {
        ChatError::Empty => ErrorCode::ChatEmpty,
        ChatError::TooLong => ErrorCode::ChatTooLong,
        ChatError::RateLimited => ErrorCode::ChatRateLimited,
        ChatError::NotAdmitted => ErrorCode::NotAdmitted,
        ChatError::Forbidden => ErrorCode::Forbidden,
    };
    ServerMessage::error(code, e.to_string())
}

/// The error sent for a refused recording request or consent answer.
pub fn recording_refused(e: RecordingError) -> ServerMessage {
    let code = match e {
        RecordingError::Forbidden => ErrorCode::Forbidden,
        RecordingError::NotAllowed => ErrorCode::RecordingNotAllowed,
        RecordingError::AlreadyRecording => ErrorCode::RecordingAlreadyRunning,
        RecordingError::NotRecording => ErrorCode::NotRecording,
        RecordingError::NotInCall => ErrorCode::NotAdmitted,
        RecordingError::StaleText => ErrorCode::ConsentTextOutdated,
    };
    ServerMessage::error(code, e.to_string())
}

/// The error sent for a refused key-exchange message (end_to_end).
pub fn e2ee_refused(e: E2eeError) -> ServerMessage {
    let code = match e {
        E2eeError::NotEndToEnd => ErrorCode::E2eeNotEnabled,
        E2eeError::NotAdmitted => ErrorCode::NotAdmitted,
        E2eeError::Forbidden => ErrorCode::Forbidden,
        E2eeError::UnknownParticipant => ErrorCode::UnknownParticipant,
        E2eeError::BadKey => ErrorCode::BadMessage,
    };
    ServerMessage::error(code, e.to_string())
}

/// The close code and reason for a connection the consultation closes.
pub fn close_frame(why: Disconnect) -> (u16, &'static str) {
    match why {
        Disconnect::Replaced => (close::REPLACED, "replaced by a newer connection"),
        Disconnect::MovedToAnotherDevice => (close::REPLACED, "moved_to_another_device"),
        Disconnect::Rejected => (close::FORBIDDEN, "not admitted by the practitioner"),
        Disconnect::Removed => (close::FORBIDDEN, "removed by the practitioner"),
        Disconnect::Ended => (close::ENDED, "consultation ended"),
        Disconnect::Moved => (close::MOVED, "moved"),
    }
}

/// The close code and reason for a refused join.
pub fn join_refused(e: JoinError) -> (u16, &'static str) {
    match e {
        JoinError::Full => (close::FULL, "consultation is full"),
        JoinError::Ended => (close::ENDED, "consultation has ended"),
        // The seat's link was spent when its holder was removed.
        JoinError::Removed => (close::UNAUTHORIZED, Refusal::Revoked.code()),
    }
}

/// The close code and machine-readable reason for a refused credential: 4401 with the
/// refusal's code (the join page shows a sentence for it), 4410 for an ended consultation,
/// 1013 when it cannot be checked now.
pub fn refused(r: Refusal) -> (u16, &'static str) {
    match r {
        Refusal::Ended => (close::ENDED, r.code()),
        Refusal::Unavailable => (close::TRY_AGAIN_LATER, r.code()),
        Refusal::NotFound => (close::FORBIDDEN, r.code()),
        _ => (close::UNAUTHORIZED, r.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_disconnect_has_a_protocol_close_code() {
        for (why, code) in [
            (Disconnect::Replaced, 4000),
            (Disconnect::Rejected, 4403),
            (Disconnect::Removed, 4403),
            (Disconnect::Ended, 4410),
            (Disconnect::Moved, 1012),
        ] {
            assert_eq!(close_frame(why).0, code, "{why:?}");
        }
        assert_eq!(close_frame(Disconnect::MovedToAnotherDevice).0, 4000);
        assert_eq!(join_refused(JoinError::Full).0, 4409);
        assert_eq!(join_refused(JoinError::Ended).0, 4410);
        assert_eq!(join_refused(JoinError::Removed), (4401, "revoked"));
        for (r, code) in [
            (Refusal::Expired, (4401, "expired")),
            (Refusal::Revoked, (4401, "revoked")),
            (Refusal::NotYetValid, (4401, "not_yet_valid")),
            (Refusal::BadSignature, (4401, "bad_signature")),
            (Refusal::Malformed, (4401, "malformed")),
            (Refusal::Cancelled, (4401, "cancelled")),
            (Refusal::Ended, (4410, "ended")),
            (Refusal::Unavailable, (1013, "unavailable")),
            (Refusal::NotSignedIn, (4401, "not_signed_in")),
            (Refusal::NotFound, (4403, "not_found")),
        ] {
            assert_eq!(refused(r), code, "{r:?}");
        }
    }

    #[test]
    fn ended_is_consultation_ended_on_the_wire() {
        let s = serde_json::to_string(&message(ConsultationEvent::Ended)).unwrap();
        assert_eq!(s, r#"{"type":"consultation_ended"}"#);
    }
}
