//! The one place where the consultation's domain events become protocol messages and close codes.

use crate::protocol::{ErrorCode, PROTOCOL_VERSION, ServerMessage, close};
use teleconsult_consultation::{ConsultationEvent, Disconnect, JoinError, MediaFailure};

/// The message a participant's client is sent for `event`.
pub fn message(event: ConsultationEvent) -> ServerMessage {
    use ConsultationEvent as E;
    match event {
        E::Joined {
            consultation,
            you,
            participants,
        } => ServerMessage::Joined {
            protocol: PROTOCOL_VERSION,
            consultation,
            you,
            participants,
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

/// The close code and reason for a connection the consultation closes.
pub fn close_frame(why: Disconnect) -> (u16, &'static str) {
    match why {
        Disconnect::Replaced => (close::REPLACED, "replaced by a newer connection"),
        Disconnect::Rejected => (close::FORBIDDEN, "not admitted by the practitioner"),
        Disconnect::Removed => (close::FORBIDDEN, "removed by the practitioner"),
        Disconnect::Ended => (close::ENDED, "consultation ended"),
    }
}

/// The close code for a refused join.
pub fn join_refused(e: JoinError) -> u16 {
    match e {
        JoinError::Full => close::FULL,
        JoinError::Ended => close::ENDED,
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
        ] {
            assert_eq!(close_frame(why).0, code, "{why:?}");
        }
        assert_eq!(join_refused(JoinError::Full), 4409);
        assert_eq!(join_refused(JoinError::Ended), 4410);
    }

    #[test]
    fn ended_is_consultation_ended_on_the_wire() {
        let s = serde_json::to_string(&message(ConsultationEvent::Ended)).unwrap();
        assert_eq!(s, r#"{"type":"consultation_ended"}"#);
    }
}
