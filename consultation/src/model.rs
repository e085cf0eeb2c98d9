//! The consultation's vocabulary: roles, participant states, tracks, and the views of them that
//! participants are shown. Plain data (serde-derivable so the signalling protocol can carry it);
//! who is shown what is decided in [`crate::rules`].

use crate::ids::{ParticipantId, TrackId};
use serde::{Deserialize, Serialize};

/// A participant's role in a consultation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Practitioner,
    Patient,
    Guest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Practitioner => "practitioner",
            Role::Patient => "patient",
            Role::Guest => "guest",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "practitioner" => Ok(Role::Practitioner),
            "patient" => Ok(Role::Patient),
            "guest" => Ok(Role::Guest),
            other => Err(format!(
                "unknown role {other:?}: expected practitioner, patient or guest"
            )),
        }
    }
}

/// Where a participant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantState {
    Waiting,
    Admitted,
    Reconnecting,
    Left,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

/// Why a participant is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeftReason {
    Left,
    Removed,
    Timeout,
    /// Their seat moved to a second device the practitioner admitted.
    Replaced,
}

/// A participant as the others see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub role: Role,
    /// Health data: shown to the other participants, never logged.
    pub display_name: String,
    pub state: ParticipantState,
    pub audio_muted: bool,
    pub video_muted: bool,
    /// (Waiting list) a second device for a seat that is live elsewhere: admitting it
    /// disconnects the first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub second_device: bool,
}

/// A published track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: TrackId,
    pub kind: MediaKind,
    /// (v2) `microphone`, `camera` or `screen`. A client receives a screen share in a
    /// MediaStream of its own, `{participant}~screen` (docs/signaling.md).
    pub source: TrackSource,
}

/// What a published track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
}

/// A document shared in the consultation, as listed and announced (metadata only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub id: String,
    /// Sanitised file name.
    pub filename: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Detected from the file's first bytes.
    pub content_type: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Participant id of the uploader (a practitioner's account id if they were not in the call).
    pub uploader: String,
    pub uploader_role: Role,
    /// Milliseconds since the Unix epoch (UTC).
    pub uploaded_at: i64,
}

/// One participant as the billing clock sees it.
#[derive(Clone, Copy, Debug)]
pub struct Presence<'a> {
    /// Participant id (opaque).
    pub id: &'a str,
    /// The stable seat id: the practitioner's account id, or the invitation id (`jti`) of a
    /// patient or guest. Never a display name.
    pub seat: &'a str,
    pub role: Role,
    /// Admitted and connected (a reconnecting participant is not present).
    pub present: bool,
    /// Gone for good (left, removed, rejected, timed out).
    pub left: bool,
}
