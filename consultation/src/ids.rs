//! Typed ids: a consultation, a participant and a track are never confused for one another (or
//! for a display name) at compile time. Ids are opaque and safe to log; names are not.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

id_type!(
    /// A consultation (a room), as named in join tokens and the `/ws/{consultation}` path.
    ConsultationId
);
id_type!(
    /// One person's place in a consultation; survives reconnections of the same person.
    ParticipantId
);
id_type!(
    /// One published media stream (audio, camera video), named by the SFU.
    TrackId
);

impl ParticipantId {
    /// A fresh random participant id (`p` + 16 hex digits).
    pub fn generate() -> ParticipantId {
        ParticipantId(format!("p{:016x}", rand::random::<u64>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialise_as_plain_strings_and_compare_with_str() {
        let id = ParticipantId::from("p1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"p1\"");
        assert_eq!(id, "p1");
        assert_eq!(format!("{id}"), "p1");
        let back: ParticipantId = serde_json::from_str("\"p1\"").unwrap();
        assert_eq!(back, id);
        let g = ParticipantId::generate();
        assert_eq!(g.as_str().len(), 17);
        assert_ne!(g, ParticipantId::generate());
    }
}
