//! Creating and managing scheduled consultations with their invitations: the one place the
//! workspace page (`routes/workspace.rs`) and the REST API v1 both call.
//!
//! Every function here takes the caller's organisation and answers [`SchedulingError::NotFound`]
//! for a consultation of another organisation (or of another practitioner, where one is given):
//! callers map it to 404, never 403, so ids of other organisations cannot be probed.

use crate::config::Config;
use teleconsult_consultation::Role;
use teleconsult_consultation::invitation::{self, IssueError, MAX_LABEL_LEN, random_id};
use teleconsult_store::{
    ConsultationStatus, Invitation, InvitationStore, Policy, ScheduledConsultation, StoreError,
};

/// Most guests one consultation may be created with (an interpreter, family members).
pub const MAX_GUESTS: usize = 8;

/// Why a consultation or an invitation could not be created, changed or shown.
#[derive(Debug, thiserror::Error)]
pub enum SchedulingError {
    /// No such consultation or invitation in the caller's organisation.
    #[error("no such consultation")]
    NotFound,
    #[error("the patient label must be 1 to {MAX_LABEL_LEN} bytes and not blank")]
    BadPatientLabel,
    #[error("guest {0}: the label must be 1 to {MAX_LABEL_LEN} bytes and not blank")]
    BadGuestLabel(usize),
    #[error("at most {MAX_GUESTS} guests")]
    TooManyGuests,
    #[error("scheduled_at must be milliseconds since the Unix epoch, between 2020 and 2100")]
    BadScheduledAt,
    #[error("policy must be standard, recordable or end_to_end")]
    BadPolicy,
    #[error("the consultation is {0}")]
    NotScheduled(&'static str),
    #[error("the link signing keys: {0}")]
    Keyring(#[from] invitation::KeyringError),
    #[error("storage: {0}")]
    Store(StoreError),
}

impl SchedulingError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            SchedulingError::NotFound => "not_found",
            SchedulingError::BadPatientLabel => "bad_patient_label",
            SchedulingError::BadGuestLabel(_) => "bad_guest_label",
            SchedulingError::TooManyGuests => "too_many_guests",
            SchedulingError::BadScheduledAt => "bad_scheduled_at",
            SchedulingError::BadPolicy => "bad_policy",
            SchedulingError::NotScheduled(_) => "not_scheduled",
            SchedulingError::Keyring(_) => "internal",
            SchedulingError::Store(StoreError::Unavailable(_)) => "storage_unavailable",
            SchedulingError::Store(_) => "internal",
        }
    }
}

impl From<StoreError> for SchedulingError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => SchedulingError::NotFound,
            e => SchedulingError::Store(e),
        }
    }
}

impl From<IssueError> for SchedulingError {
    fn from(e: IssueError) -> Self {
        match e {
            // Labels are validated before anything is stored; these cannot reach here.
            IssueError::BadLabel | IssueError::PractitionerSeat => SchedulingError::BadPatientLabel,
            IssueError::NotScheduled(s) => SchedulingError::NotScheduled(s),
            IssueError::Store(e) => e.into(),
        }
    }
}

/// What to create: who owns it, when (optional), the patient's pseudonym and the guests'.
#[derive(Clone, Debug)]
pub struct NewConsultation<'a> {
    pub organisation: &'a str,
    /// The practitioner's account id.
    pub practitioner: &'a str,
    /// Milliseconds since the Unix epoch.
    pub scheduled_at: Option<i64>,
    /// Health data: never logged.
    pub patient_label: &'a str,
    /// Health data: never logged.
    pub guest_labels: &'a [String],
    /// What may happen to its media (fixed now).
    pub policy: Policy,
}

/// Whose consultations a caller may manage: one organisation's, and (for a practitioner
/// rather than an administrator or an API key) only their own.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub organisation: &'a str,
    pub practitioner: Option<&'a str>,
}

/// One invitation with its link token (the token is a secret: show it to its owner only).
#[derive(Clone, Debug)]
pub struct IssuedInvitation {
    pub invitation: Invitation,
    pub token: String,
}

/// A consultation created with its invitations (the patient's first, then the guests' in order).
#[derive(Clone, Debug)]
pub struct CreatedConsultation {
    pub consultation: ScheduledConsultation,
    pub invitations: Vec<IssuedInvitation>,
}

fn valid_label(label: &str) -> bool {
    !label.trim().is_empty() && label.len() <= MAX_LABEL_LEN
}

/// Earliest accepted schedule: 2020-01-01; latest: 2100-01-01 (anything else is a unit mistake).
const MIN_SCHEDULED_AT: i64 = 1_577_836_800_000;
const MAX_SCHEDULED_AT: i64 = 4_102_444_800_000;

/// Create a consultation of `req.organisation` owned by `req.practitioner`, with one patient
/// invitation and one guest invitation per guest label. Everything is validated before anything
/// is stored.
pub async fn create_consultation(
    store: &dyn InvitationStore,
    config: &Config,
    req: NewConsultation<'_>,
    now_ms: i64,
) -> Result<CreatedConsultation, SchedulingError> {
    if !valid_label(req.patient_label) {
        return Err(SchedulingError::BadPatientLabel);
    }
    if req.guest_labels.len() > MAX_GUESTS {
        return Err(SchedulingError::TooManyGuests);
    }
    if let Some(i) = req.guest_labels.iter().position(|g| !valid_label(g)) {
        return Err(SchedulingError::BadGuestLabel(i));
    }
    if req
        .scheduled_at
        .is_some_and(|t| !(MIN_SCHEDULED_AT..MAX_SCHEDULED_AT).contains(&t))
    {
        return Err(SchedulingError::BadScheduledAt);
    }
    let keyring = config.keyring()?;
    let consultation = ScheduledConsultation {
        id: random_id(),
        organisation: req.organisation.to_string(),
        practitioner: req.practitioner.to_string(),
        scheduled_at: req.scheduled_at,
        status: ConsultationStatus::Scheduled,
        created_at: now_ms,
        policy: req.policy,
    };
    store.upsert_scheduled_consultation(&consultation).await?;
    let mut invitations = Vec::with_capacity(1 + req.guest_labels.len());
    let seats = std::iter::once((Role::Patient, req.patient_label))
        .chain(req.guest_labels.iter().map(|g| (Role::Guest, g.as_str())));
    for (n, (role, label)) in seats.enumerate() {
        // One millisecond apart: invitations are listed by creation time, patient first.
        let (invitation, token) = invitation::issue(
            store,
            &keyring,
            &config.consultation,
            &consultation,
            role,
            label,
            now_ms.saturating_add(i64::try_from(n).unwrap_or(0)),
        )
        .await?;
        invitations.push(IssuedInvitation { invitation, token });
    }
    Ok(CreatedConsultation {
        consultation,
        invitations,
    })
}

/// Consultation `id` if `owner` may manage it.
pub async fn owned_consultation(
    store: &dyn InvitationStore,
    owner: Owner<'_>,
    id: &str,
) -> Result<ScheduledConsultation, SchedulingError> {
    match store.scheduled_consultation(id).await? {
        Some(c)
            if c.organisation == owner.organisation
                && owner.practitioner.is_none_or(|p| p == c.practitioner) =>
        {
            Ok(c)
        }
        _ => Err(SchedulingError::NotFound),
    }
}

/// Add one invitation (patient or guest) to a scheduled consultation of `organisation`.
pub async fn add_invitation(
    store: &dyn InvitationStore,
    config: &Config,
    owner: Owner<'_>,
    consultation: &str,
    role: Role,
    label: &str,
    now_ms: i64,
) -> Result<IssuedInvitation, SchedulingError> {
    if role == Role::Practitioner || !valid_label(label) {
        return Err(if role == Role::Guest {
            SchedulingError::BadGuestLabel(0)
        } else {
            SchedulingError::BadPatientLabel
        });
    }
    let c = owned_consultation(store, owner, consultation).await?;
    let keyring = config.keyring()?;
    let (invitation, token) = invitation::issue(
        store,
        &keyring,
        &config.consultation,
        &c,
        role,
        label,
        now_ms,
    )
    .await?;
    Ok(IssuedInvitation { invitation, token })
}

/// Cancel a consultation of `organisation`: every link of it stops working. Returns how many
/// invitations were revoked now (0 when it was cancelled already).
pub async fn cancel_consultation(
    store: &dyn InvitationStore,
    owner: Owner<'_>,
    consultation: &str,
    now_ms: i64,
) -> Result<u64, SchedulingError> {
    let c = owned_consultation(store, owner, consultation).await?;
    if c.status == ConsultationStatus::Ended {
        return Err(SchedulingError::NotScheduled(c.status.as_str()));
    }
    Ok(store.cancel_consultation(&c.id, now_ms).await?)
}

/// Revoke one invitation of a consultation of `organisation`.
pub async fn revoke_invitation(
    store: &dyn InvitationStore,
    owner: Owner<'_>,
    consultation: &str,
    jti: &str,
    now_ms: i64,
) -> Result<(), SchedulingError> {
    let c = owned_consultation(store, owner, consultation).await?;
    match store.invitation(jti).await? {
        Some(i) if i.consultation == c.id => {}
        _ => return Err(SchedulingError::NotFound),
    }
    Ok(store.revoke_invitation(jti, now_ms).await?)
}

/// The link token of an existing invitation, signed again with the current key (same `jti`,
/// same validity): links are not stored, only the records they name.
pub fn link_token(config: &Config, invitation: &Invitation) -> Result<String, SchedulingError> {
    let keyring = config.keyring()?;
    let role = match invitation.role.as_str() {
        "guest" => Role::Guest,
        _ => Role::Patient,
    };
    let nbf = u64::try_from(invitation.not_before.div_euclid(1000)).unwrap_or(0);
    let exp = u64::try_from((invitation.expires + 999).div_euclid(1000)).unwrap_or(0);
    Ok(invitation::sign_link(
        &keyring,
        &invitation.jti,
        &invitation.consultation,
        role,
        nbf,
        exp,
    ))
}
