//! End-to-end encryption's key exchange (issue 13, policy `end_to_end`): the rules only relay.
//! Each participant in the call publishes an ECDH public key; the practitioner's browser sends
//! each of them the consultation's media key wrapped for that participant. The server sees
//! public keys and wrapped blobs, never a key it could use (`docs/compliance.md`).
//!
//! - Only in an `end_to_end` consultation ([`E2eeError::NotEndToEnd`] otherwise).
//! - Only between participants in the call: the waiting room neither sends nor receives any
//!   of it; someone admitted later is sent the public keys published so far.
//! - Only a practitioner sends wrapped keys, and to one participant in the call at a time.
//! - Both are short base64url strings ([`MAX_PUBLIC_KEY_CHARS`], [`MAX_WRAPPED_KEY_CHARS`]).

use super::Consultation;
use crate::event::ConsultationEvent;
use crate::ids::ParticipantId;
use crate::model::{ParticipantState, Role};
use teleconsult_store::Policy;

/// The longest public key accepted (a P-256 point, 65 bytes, is 87 base64url characters).
pub const MAX_PUBLIC_KEY_CHARS: usize = 128;
/// The longest wrapped key accepted (IV, 32-byte key and tag: 60 bytes, 80 characters).
pub const MAX_WRAPPED_KEY_CHARS: usize = 256;

/// Why a key-exchange message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum E2eeError {
    #[error("this consultation is not end-to-end encrypted")]
    NotEndToEnd,
    #[error("you have not been admitted yet")]
    NotAdmitted,
    #[error("only a practitioner may send the consultation key")]
    Forbidden,
    #[error("no such participant in the call")]
    UnknownParticipant,
    #[error("the key must be 1 to the limit's base64url characters")]
    BadKey,
}

fn base64url(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Consultation {
    fn e2ee_sender(&self, who: &str) -> Result<(), E2eeError> {
        if self.policy != Policy::EndToEnd {
            return Err(E2eeError::NotEndToEnd);
        }
        match self.get(who) {
            Some(p) if p.state == ParticipantState::Admitted => Ok(()),
            _ => Err(E2eeError::NotAdmitted),
        }
    }

    /// `who` (in the call) publishes its ECDH public key: kept (a newer one replaces it) and
    /// sent to everyone else in the call.
    pub fn publish_e2ee_key(&mut self, who: &str, key: &str) -> Result<(), E2eeError> {
        self.e2ee_sender(who)?;
        if !base64url(key, MAX_PUBLIC_KEY_CHARS) {
            return Err(E2eeError::BadKey);
        }
        let p = self.get_mut(who).ok_or(E2eeError::NotAdmitted)?;
        p.e2ee_public_key = Some(key.to_string());
        let event = ConsultationEvent::E2eePublicKey {
            participant: p.id.clone(),
            key: key.to_string(),
        };
        for other in self.participants.iter().filter(|o| o.in_call()) {
            if other.id.as_str() != who {
                other.send(event.clone());
            }
        }
        Ok(())
    }

    /// A practitioner in the call sends `to` (in the call, not themselves) the consultation key
    /// of `epoch`, wrapped for `to`'s public key.
    pub fn send_e2ee_key(
        &mut self,
        actor: &str,
        to: &str,
        epoch: u32,
        wrapped: &str,
    ) -> Result<(), E2eeError> {
        self.e2ee_sender(actor)?;
        let sender = self.get(actor).ok_or(E2eeError::NotAdmitted)?;
        if sender.role != Role::Practitioner {
            return Err(E2eeError::Forbidden);
        }
        if !base64url(wrapped, MAX_WRAPPED_KEY_CHARS) {
            return Err(E2eeError::BadKey);
        }
        let target = self
            .get(to)
            .filter(|t| t.in_call() && t.id.as_str() != actor)
            .ok_or(E2eeError::UnknownParticipant)?;
        target.send(ConsultationEvent::E2eeKey {
            from: sender.id.clone(),
            epoch,
            key: wrapped.to_string(),
        });
        Ok(())
    }

    /// `who` just entered the call: the public keys of the others in it (end_to_end only).
    pub(super) fn send_e2ee_keys_of_others(&self, who: &ParticipantId) {
        if self.policy != Policy::EndToEnd {
            return;
        }
        let Some(me) = self.get(who.as_str()) else {
            return;
        };
        for p in self
            .participants
            .iter()
            .filter(|p| p.in_call() && p.id != *who)
        {
            if let Some(key) = &p.e2ee_public_key {
                me.send(ConsultationEvent::E2eePublicKey {
                    participant: p.id.clone(),
                    key: key.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::consent::tests::consultation;
    use super::*;
    use crate::event::{Outbound, OutboxReceiver};
    use std::time::{Duration, Instant};

    const PUB_A: &str = "BPractitionerPublicKey_-0123456789";
    const PUB_B: &str = "BPatientPublicKey";

    type Conn = OutboxReceiver;

    fn join(c: &mut Consultation, who: &str, role: Role) -> (ParticipantId, Conn) {
        super::super::consent::tests::join(c, who, role, 1)
    }

    fn e2ee_events(conn: &mut Conn) -> Vec<ConsultationEvent> {
        let mut v = Vec::new();
        while let Some(o) = conn.try_recv() {
            if let Outbound::Event(
                e @ (ConsultationEvent::E2eePublicKey { .. } | ConsultationEvent::E2eeKey { .. }),
            ) = o
            {
                v.push(e);
            }
        }
        v
    }

    #[test]
    fn keys_travel_between_participants_in_the_call_only() {
        let now = Instant::now();
        let mut c = consultation(Policy::EndToEnd);
        let (doc, mut doc_conn) = join(&mut c, "doc", Role::Practitioner);
        let (pat, mut pat_conn) = join(&mut c, "pat", Role::Patient);
        let (late, mut late_conn) = join(&mut c, "late", Role::Guest);
        // The waiting room can neither publish nor be sent anything.
        assert_eq!(
            c.publish_e2ee_key(pat.as_str(), PUB_B),
            Err(E2eeError::NotAdmitted)
        );
        c.publish_e2ee_key(doc.as_str(), PUB_A).unwrap();
        assert_eq!(
            c.send_e2ee_key(doc.as_str(), pat.as_str(), 1, "wrapped"),
            Err(E2eeError::UnknownParticipant),
            "a key for the waiting room is refused"
        );
        assert!(e2ee_events(&mut pat_conn).is_empty());
        assert!(e2ee_events(&mut late_conn).is_empty());

        // Admitted: the patient is sent the practitioner's key, and publishes its own.
        c.admit(&doc, pat.as_str()).unwrap();
        assert_eq!(
            e2ee_events(&mut pat_conn),
            vec![ConsultationEvent::E2eePublicKey {
                participant: doc.clone(),
                key: PUB_A.into()
            }]
        );
        c.publish_e2ee_key(pat.as_str(), PUB_B).unwrap();
        assert_eq!(
            e2ee_events(&mut doc_conn),
            vec![ConsultationEvent::E2eePublicKey {
                participant: pat.clone(),
                key: PUB_B.into()
            }]
        );
        c.send_e2ee_key(doc.as_str(), pat.as_str(), 7, "wrapped-key_1")
            .unwrap();
        assert_eq!(
            e2ee_events(&mut pat_conn),
            vec![ConsultationEvent::E2eeKey {
                from: doc.clone(),
                epoch: 7,
                key: "wrapped-key_1".into()
            }]
        );
        // Only the practitioner sends keys; nobody sends one to themselves.
        assert_eq!(
            c.send_e2ee_key(pat.as_str(), doc.as_str(), 8, "x"),
            Err(E2eeError::Forbidden)
        );
        assert_eq!(
            c.send_e2ee_key(doc.as_str(), doc.as_str(), 8, "x"),
            Err(E2eeError::UnknownParticipant)
        );
        // The one still waiting heard nothing of it all.
        assert!(e2ee_events(&mut late_conn).is_empty());
        // Admitted later: the keys published so far.
        c.admit(&doc, late.as_str()).unwrap();
        let got = e2ee_events(&mut late_conn);
        assert_eq!(got.len(), 2, "{got:?}");

        // Someone who left no longer has a key on record, nor receives any.
        c.gone(pat.as_str(), 1, true, now + Duration::from_secs(1));
        assert_eq!(
            c.send_e2ee_key(doc.as_str(), pat.as_str(), 9, "x"),
            Err(E2eeError::UnknownParticipant)
        );
    }

    #[test]
    fn other_policies_refuse_and_sizes_are_bounded() {
        for policy in [Policy::Standard, Policy::Recordable] {
            let mut c = consultation(policy);
            let (doc, _conn) = join(&mut c, "doc", Role::Practitioner);
            assert_eq!(
                c.publish_e2ee_key(doc.as_str(), PUB_A),
                Err(E2eeError::NotEndToEnd)
            );
        }
        let mut c = consultation(Policy::EndToEnd);
        let (doc, _conn) = join(&mut c, "doc", Role::Practitioner);
        let long = "A".repeat(MAX_PUBLIC_KEY_CHARS + 1);
        for bad in ["", "has space", "plus+slash/", "pad==", long.as_str()] {
            assert_eq!(
                c.publish_e2ee_key(doc.as_str(), bad),
                Err(E2eeError::BadKey),
                "{bad}"
            );
        }
        assert!(
            c.publish_e2ee_key(doc.as_str(), &"A".repeat(MAX_PUBLIC_KEY_CHARS))
                .is_ok()
        );
    }
}
