//! Scheduled consultations and their invitations (issue 9): the records behind a join link.
//!
//! A [`ScheduledConsultation`] belongs to one organisation and one practitioner account (opaque
//! ids, given by the accounts module). An [`Invitation`] is one seat of it: a role (`patient`
//! or `guest`) and the pseudonym the practitioner chose, valid in `[not_before, expires)`,
//! revocable. The join link names the invitation by its random `jti` and carries no name.
//!
//! The pseudonym is health data: [`Pseudonym`] has a redacting `Debug` and no `Display`, so a
//! record printed by `{:?}` (in a log line or a failed assertion) never shows it.

use crate::{Millis, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a scheduled consultation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsultationStatus {
    Scheduled,
    Cancelled,
    Ended,
}

impl ConsultationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsultationStatus::Scheduled => "scheduled",
            ConsultationStatus::Cancelled => "cancelled",
            ConsultationStatus::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<ConsultationStatus> {
        match s {
            "scheduled" => Some(ConsultationStatus::Scheduled),
            "cancelled" => Some(ConsultationStatus::Cancelled),
            "ended" => Some(ConsultationStatus::Ended),
            _ => None,
        }
    }
}

/// What may happen to a consultation's media (issue 13), fixed when it is created.
///
/// - `standard`: relayed by the SFU, never recorded.
/// - `recordable`: may be recorded, each participant's media only with their consent.
/// - `end_to_end`: media encrypted between the browsers; recording refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    Standard,
    Recordable,
    EndToEnd,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Standard, Policy::Recordable, Policy::EndToEnd];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Standard => "standard",
            Policy::Recordable => "recordable",
            Policy::EndToEnd => "end_to_end",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A consultation planned by a practitioner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledConsultation {
    pub id: String,
    /// Organisation id (opaque).
    pub organisation: String,
    /// The practitioner's account id (opaque), never a display name.
    pub practitioner: String,
    /// When it is planned, if it is.
    pub scheduled_at: Option<Millis>,
    pub status: ConsultationStatus,
    pub created_at: Millis,
    /// Fixed at creation (records written before policies existed read as `standard`).
    #[serde(default)]
    pub policy: Policy,
}

/// The label a practitioner chose for a seat (health data: never logged, never in `Debug`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pseudonym(String);

impl Pseudonym {
    pub fn new(label: impl Into<String>) -> Pseudonym {
        Pseudonym(label.into())
    }

    /// The label itself, to show to the participants of the call.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonym(<redacted>)")
    }
}

/// One seat of a consultation, as named by a join link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Random id, the link's `jti`.
    pub jti: String,
    pub consultation: String,
    /// `patient` or `guest`.
    pub role: String,
    pub pseudonym: Pseudonym,
    /// Valid from (inclusive).
    pub not_before: Millis,
    /// Valid until (exclusive).
    pub expires: Millis,
    /// When it was revoked (one link, the consultation cancelled, or its holder removed).
    pub revoked_at: Option<Millis>,
    pub created_at: Millis,
}

/// Scheduled consultations and invitations. Both backends implement it; the conformance tests
/// in `store/tests/invitations.rs` run against each.
#[async_trait::async_trait]
pub trait InvitationStore: Send + Sync {
    /// Insert or replace by `id`.
    async fn upsert_scheduled_consultation(&self, c: &ScheduledConsultation) -> Result<()>;
    async fn scheduled_consultation(&self, id: &str) -> Result<Option<ScheduledConsultation>>;
    /// The consultations of `organisation` (of one practitioner account when `practitioner` is
    /// given), ordered by `created_at` then `id`.
    async fn scheduled_consultations(
        &self,
        organisation: &str,
        practitioner: Option<&str>,
    ) -> Result<Vec<ScheduledConsultation>>;
    /// Set the status of consultation `id`; `NotFound` if absent.
    async fn set_consultation_status(&self, id: &str, status: ConsultationStatus) -> Result<()>;
    /// Cancel consultation `id` at `at` and revoke every invitation of it not yet revoked
    /// (their earlier `revoked_at` is kept). Returns how many were revoked now; `NotFound` if
    /// the consultation is absent.
    async fn cancel_consultation(&self, id: &str, at: Millis) -> Result<u64>;

    /// Insert or replace by `jti`.
    async fn upsert_invitation(&self, invitation: &Invitation) -> Result<()>;
    async fn invitation(&self, jti: &str) -> Result<Option<Invitation>>;
    /// The invitations of one consultation, ordered by `created_at` then `jti`.
    async fn invitations(&self, consultation: &str) -> Result<Vec<Invitation>>;
    /// Revoke one invitation at `at` (idempotent: an earlier revocation time is kept);
    /// `NotFound` if absent.
    async fn revoke_invitation(&self, jti: &str, at: Millis) -> Result<()>;
}
