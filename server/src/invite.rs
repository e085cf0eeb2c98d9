//! Issuing invitations from the command line and in `serve --dev` (the workspace page and the
//! API will call the same [`teleconsult_consultation::invitation::issue`]).

use crate::config::Config;
use teleconsult_consultation::Role;
use teleconsult_consultation::invitation::{self, IssueError};
use teleconsult_store::{
    ConsultationStatus, Invitation, InvitationStore, Policy, ScheduledConsultation, StoreError,
};

/// Organisation and practitioner account of consultations created in `--dev` (placeholders
/// until accounts exist).
pub const DEV_ORGANISATION: &str = "dev-organisation";
pub const DEV_PRACTITIONER: &str = "dev-practitioner";

/// Why an invitation could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("--consultation: 1 to 128 letters, digits, '-' or '_'")]
    BadConsultation,
    #[error(
        "consultation {0} does not exist yet: give --organisation and --practitioner to create it"
    )]
    NeedsOwner(String),
    #[error("{0}")]
    Issue(#[from] IssueError),
    #[error("the link signing keys: {0}")]
    Keyring(#[from] invitation::KeyringError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// What to create.
pub struct InviteRequest<'a> {
    pub consultation: &'a str,
    pub role: Role,
    pub label: &'a str,
    /// Used only when the consultation is created now.
    pub scheduled_at: Option<i64>,
    pub organisation: Option<&'a str>,
    pub practitioner: Option<&'a str>,
    /// The policy of a consultation created now (`standard` by default).
    pub policy: Option<Policy>,
}

fn valid_consultation(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Create (if needed) the scheduled consultation and one invitation of it; returns the
/// invitation and its link token.
pub async fn invite(
    store: &dyn InvitationStore,
    config: &Config,
    req: InviteRequest<'_>,
    now_ms: i64,
) -> Result<(Invitation, String), InviteError> {
    if !valid_consultation(req.consultation) {
        return Err(InviteError::BadConsultation);
    }
    let consultation = match store.scheduled_consultation(req.consultation).await? {
        Some(c) => c,
        None => {
            let (Some(organisation), Some(practitioner)) = (req.organisation, req.practitioner)
            else {
                return Err(InviteError::NeedsOwner(req.consultation.to_string()));
            };
            let c = ScheduledConsultation {
                id: req.consultation.to_string(),
                organisation: organisation.to_string(),
                practitioner: practitioner.to_string(),
                scheduled_at: req.scheduled_at,
                status: ConsultationStatus::Scheduled,
                created_at: now_ms,
                policy: req.policy.unwrap_or_default(),
            };
            store.upsert_scheduled_consultation(&c).await?;
            c
        }
    };
    let keyring = config.keyring()?;
    Ok(invitation::issue(
        store,
        &keyring,
        &config.consultation,
        &consultation,
        req.role,
        req.label,
        now_ms,
    )
    .await?)
}

/// `serve --dev`: the demo consultation of `organisation`, owned by the demo practitioner
/// account `practitioner`, (re)scheduled now, and a patient invitation for it.
pub async fn dev_demo(
    store: &dyn InvitationStore,
    config: &Config,
    consultation: &str,
    organisation: &str,
    practitioner: &str,
    now_ms: i64,
) -> Result<String, InviteError> {
    store
        .upsert_scheduled_consultation(&ScheduledConsultation {
            id: consultation.to_string(),
            organisation: organisation.to_string(),
            practitioner: practitioner.to_string(),
            scheduled_at: None,
            status: ConsultationStatus::Scheduled,
            created_at: now_ms,
            // A new user can try recording at once (with everyone's consent).
            policy: Policy::Recordable,
        })
        .await?;
    let (_, link) = invite(
        store,
        config,
        InviteRequest {
            consultation,
            role: Role::Patient,
            label: "Patient",
            scheduled_at: None,
            organisation: None,
            practitioner: None,
            policy: None,
        },
        now_ms,
    )
    .await?;
    Ok(link)
}
