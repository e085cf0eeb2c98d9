//! Invitations: join links bound to one seat (issue 9).
//!
//! A link is `base64url(claims JSON) "." base64url(HMAC-SHA256(key[kid], first part))` with
//! claims `{v: 2, kid, jti, consultation, role, nbf, exp}`: no name travels in it. The `jti`
//! names an [`Invitation`] record (role + the pseudonym the practitioner chose, validity,
//! revocation) in the store; the record, not the link, is the authority: a link whose record is
//! revoked, or whose consultation is cancelled or ended, is refused even though its signature is
//! good.
//!
//! Keys rotate: a [`Keyring`] holds several keys by id; the current one signs, every one still
//! verifies (so unexpired links survive a rotation until the old key is dropped).
//!
//! What a verified link (or, later, a practitioner's login session) grants is a [`Credential`];
//! the signalling session and the documents API both get theirs from
//! [`Authenticator::authenticate`]. Refusals are [`Refusal`]s with a stable code and a sentence
//! for people.
//!
//! Nothing here logs or prints a token, a seat secret or a pseudonym: [`Label`], [`SeatSecret`],
//! [`Keyring`] and [`Credential`] have redacting `Debug` impls and no `Display`.

use crate::config::ConsultationConfig;
use crate::ids::ConsultationId;
use crate::model::Role;
use crate::token;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use teleconsult_store::{
    ConsultationStatus, Invitation, InvitationStore, Policy, Pseudonym, ScheduledConsultation,
    StoreError,
};

type HmacSha256 = Hmac<Sha256>;

/// The link format version this module signs.
pub const LINK_VERSION: u8 = 2;
/// Longest label (pseudonym) accepted, in bytes.
pub const MAX_LABEL_LEN: usize = 200;
const MAX_ID_LEN: usize = 128;
/// Accepted invitations remembered for storage outages before expired ones are swept.
const MAX_SEEN: usize = 10_000;

/// A display label: an invitation's pseudonym, or a practitioner's name. Health data: shown to
/// the participants of the call, never logged (redacting `Debug`, no `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    pub fn new(s: impl Into<String>) -> Label {
        Label(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Label(<redacted>)")
    }
}

/// Why a link (or a join) was refused. `code()` is machine-readable and stable (the close
/// reason of 4401); `sentence()` is what the join page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("expired")]
    Expired,
    #[error("revoked")]
    Revoked,
    #[error("not_yet_valid")]
    NotYetValid,
    #[error("bad_signature")]
    BadSignature,
    #[error("malformed")]
    Malformed,
    #[error("cancelled")]
    Cancelled,
    /// The consultation has ended (closed with 4410, like a join refused for that reason).
    #[error("ended")]
    Ended,
    /// The store could not be asked (the link is not accepted unchecked): try again later.
    #[error("unavailable")]
    Unavailable,
    /// A join through a login session without a (live) session.
    #[error("not_signed_in")]
    NotSignedIn,
    /// A signed-in practitioner asked for a consultation that is not theirs (or does not
    /// exist): the two are not told apart.
    #[error("not_found")]
    NotFound,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::BadSignature => "bad_signature",
            Refusal::Malformed => "malformed",
            Refusal::Cancelled => "cancelled",
            Refusal::Ended => "ended",
            Refusal::Unavailable => "unavailable",
            Refusal::NotSignedIn => "not_signed_in",
            Refusal::NotFound => "not_found",
        }
    }

    /// A sentence for the person holding the link.
    pub fn sentence(self) -> &'static str {
        match self {
            Refusal::Expired => "This link has expired. Ask your practitioner for a new one.",
            Refusal::Revoked => {
                "This link is no longer valid. Ask your practitioner for a new one."
            }
            Refusal::NotYetValid => {
                "This consultation has not opened yet. Please come back shortly before your appointment."
            }
            Refusal::BadSignature | Refusal::Malformed => {
                "This link is not valid. Check that you copied all of it, or ask your practitioner for a new one."
            }
            Refusal::Cancelled => "This consultation was cancelled by your practitioner.",
            Refusal::Ended => "This consultation has ended.",
            Refusal::Unavailable => {
                "The service cannot check your link right now. Please try again in a minute."
            }
            Refusal::NotSignedIn => "Please sign in again to start this consultation.",
            Refusal::NotFound => "There is no such consultation among yours.",
        }
    }
}

/// Why a keyring could not be built.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("key id {0:?} appears twice")]
    DuplicateId(String),
    #[error("key id must be 1 to 32 letters, digits, '-' or '_'")]
    BadId,
    #[error("key {0:?} is shorter than 32 bytes")]
    ShortKey(String),
}

/// HMAC keys of join links by key id: the current key signs, all verify.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: Vec<(String, Vec<u8>)>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<_> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &ids)
            .finish()
    }
}

fn valid_kid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Keyring {
    /// `current` signs; `previous` only verify. Keys are at least 32 bytes; ids are unique.
    pub fn new(
        current: (&str, &[u8]),
        previous: &[(&str, &[u8])],
    ) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for (id, key) in std::iter::once(&current).chain(previous.iter()) {
            if !valid_kid(id) {
                return Err(KeyringError::BadId);
            }
            if key.len() < 32 {
                return Err(KeyringError::ShortKey(id.to_string()));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(KeyringError::DuplicateId(id.to_string()));
            }
            keys.push((id.to_string(), key.to_vec()));
        }
        Ok(Keyring {
            current: current.0.to_string(),
            keys,
        })
    }

    pub fn current_id(&self) -> &str {
        &self.current
    }

    fn key(&self, kid: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(id, _)| id == kid)
            .map(|(_, k)| k.as_slice())
    }

    fn mac(key: &[u8], body: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
        mac.update(body.as_bytes());
        mac
    }
}

/// What a join link says (version 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkClaims {
    pub v: u8,
    pub kid: String,
    pub jti: String,
    pub consultation: String,
    pub role: Role,
    /// Not before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Just enough of a link body to tell the version and key id before checking the signature.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    v: Option<u8>,
    #[serde(default)]
    kid: Option<String>,
}

/// Sign a link for invitation `jti` with the keyring's current key (`kid` is set here).
pub fn sign_link(
    keyring: &Keyring,
    jti: &str,
    consultation: &str,
    role: Role,
    nbf: u64,
    exp: u64,
) -> String {
    let claims = LinkClaims {
        v: LINK_VERSION,
        kid: keyring.current.clone(),
        jti: jti.to_string(),
        consultation: consultation.to_string(),
        role,
        nbf,
        exp,
    };
    // Serialising a plain struct of strings and integers cannot fail.
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
    let key = keyring
        .key(&keyring.current)
        .expect("the current key is in the ring");
    let sig = URL_SAFE_NO_PAD.encode(Keyring::mac(key, &body).finalize().into_bytes());
    format!("{body}.{sig}")
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What kind of token this is, from its (unverified) body.
enum Kind {
    Link(String),
    Legacy,
}

fn kind(token: &str) -> Result<Kind, Refusal> {
    if token.is_empty() || token.len() > token::MAX_TOKEN_LEN {
        return Err(Refusal::Malformed);
    }
    let (body, _) = token.split_once('.').ok_or(Refusal::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| Refusal::Malformed)?;
    let header: Header = serde_json::from_slice(&json).map_err(|_| Refusal::Malformed)?;
    match (header.v, header.kid) {
        (Some(LINK_VERSION), Some(kid)) => Ok(Kind::Link(kid)),
        (None, None) => Ok(Kind::Legacy),
        _ => Err(Refusal::Malformed),
    }
}

/// Check a version-2 link's signature (by its `kid`) and its own validity window at `now`
/// (seconds). The invitation record is checked afterwards ([`check_invitation`]).
pub fn verify_link(keyring: &Keyring, token: &str, now: u64) -> Result<LinkClaims, Refusal> {
    let Kind::Link(kid) = kind(token)? else {
        return Err(Refusal::Malformed);
    };
    let (body, sig) = token.split_once('.').ok_or(Refusal::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| Refusal::Malformed)?;
    // An unknown key id is a signature we cannot check: refused as such.
    let key = keyring.key(&kid).ok_or(Refusal::BadSignature)?;
    // Constant-time comparison.
    Keyring::mac(key, body)
        .verify_slice(&sig)
        .map_err(|_| Refusal::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| Refusal::Malformed)?;
    let claims: LinkClaims = serde_json::from_slice(&json).map_err(|_| Refusal::Malformed)?;
    if !valid_id(&claims.jti) || !valid_id(&claims.consultation) || claims.nbf >= claims.exp {
        return Err(Refusal::Malformed);
    }
    if claims.role == Role::Practitioner {
        // Practitioners join with their own credential, never an invitation.
        return Err(Refusal::Malformed);
    }
    if now < claims.nbf {
        return Err(Refusal::NotYetValid);
    }
    if now >= claims.exp {
        return Err(Refusal::Expired);
    }
    Ok(claims)
}

/// The invitation record decides (pure; `now` in milliseconds): it must exist, match the link,
/// not be revoked, be within its own validity, and its consultation must be neither cancelled
/// nor ended.
pub fn check_invitation(
    claims: &LinkClaims,
    invitation: Option<&Invitation>,
    consultation: Option<&ScheduledConsultation>,
    now: i64,
) -> Result<(), Refusal> {
    // A well-signed link whose record is gone was withdrawn.
    let inv = invitation.ok_or(Refusal::Revoked)?;
    if inv.consultation != claims.consultation || inv.role != claims.role.as_str() {
        return Err(Refusal::Malformed);
    }
    match consultation.map(|c| c.status) {
        None => return Err(Refusal::Revoked),
        Some(ConsultationStatus::Cancelled) => return Err(Refusal::Cancelled),
        Some(ConsultationStatus::Ended) => return Err(Refusal::Ended),
        Some(ConsultationStatus::Scheduled) => {}
    }
    if inv.revoked_at.is_some() {
        return Err(Refusal::Revoked);
    }
    if now < inv.not_before {
        return Err(Refusal::NotYetValid);
    }
    if now >= inv.expires {
        return Err(Refusal::Expired);
    }
    Ok(())
}

/// Which seat a connection claims: one invitation, or one practitioner account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SeatKey {
    Invitation(String),
    Account(String),
}

impl SeatKey {
    /// The stable id billing, documents and audit record: the invitation's `jti` or the
    /// account id. Never a display name.
    pub fn id(&self) -> &str {
        match self {
            SeatKey::Invitation(jti) => jti,
            SeatKey::Account(a) => a,
        }
    }
}

/// What an authenticated connection (or API request) may claim.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A patient or guest with a verified, unrevoked invitation.
    Invitation {
        jti: String,
        consultation: ConsultationId,
        role: Role,
        label: Label,
        /// The consultation's policy, from its record.
        policy: Policy,
    },
    /// A practitioner: from their login session ([`Authenticator::practitioner`]: account and
    /// organisation ids), or from the pre-accounts practitioner token (`account` is the token's
    /// identity, `organisation` empty; kept for the tests and tools that still mint one).
    Practitioner {
        account: String,
        organisation: String,
        consultation: ConsultationId,
        display_name: Label,
        /// The consultation's policy, from its record (`standard` without one).
        policy: Policy,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Invitation {
                jti,
                consultation,
                role,
                ..
            } => f
                .debug_struct("Invitation")
                .field("jti", jti)
                .field("consultation", consultation)
                .field("role", role)
                .finish_non_exhaustive(),
            Credential::Practitioner {
                account,
                organisation,
                consultation,
                ..
            } => f
                .debug_struct("Practitioner")
                .field("account", account)
                .field("organisation", organisation)
                .field("consultation", consultation)
                .finish_non_exhaustive(),
        }
    }
}

impl Credential {
    pub fn consultation(&self) -> &ConsultationId {
        match self {
            Credential::Invitation { consultation, .. }
            | Credential::Practitioner { consultation, .. } => consultation,
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Credential::Invitation { role, .. } => *role,
            Credential::Practitioner { .. } => Role::Practitioner,
        }
    }

    pub fn seat(&self) -> SeatKey {
        match self {
            Credential::Invitation { jti, .. } => SeatKey::Invitation(jti.clone()),
            Credential::Practitioner { account, .. } => SeatKey::Account(account.clone()),
        }
    }

    /// The consultation's policy, as its record said.
    pub fn policy(&self) -> Policy {
        match self {
            Credential::Invitation { policy, .. } | Credential::Practitioner { policy, .. } => {
                *policy
            }
        }
    }

    /// The name shown to the others in the call.
    pub fn label(&self) -> &Label {
        match self {
            Credential::Invitation { label, .. } => label,
            Credential::Practitioner { display_name, .. } => display_name,
        }
    }
}

/// Turns a presented token into a [`Credential`]: a version-2 link checked against its
/// invitation record, or (the pre-accounts path) a version-1 practitioner token.
///
/// During a storage outage a link this server already accepted is checked against the last
/// record it read (so a dropped participant can come back while the database is down); a link
/// never seen before is refused (`unavailable`): unchecked links are never accepted.
pub struct Authenticator {
    keyring: Keyring,
    /// Key of version-1 tokens (`auth.signing_secret`), accepted for practitioners only.
    legacy_secret: Vec<u8>,
    store: Arc<dyn InvitationStore>,
    /// The last records read for each accepted invitation, by `jti`.
    seen: dashmap::DashMap<String, (Invitation, ScheduledConsultation)>,
}

impl Authenticator {
    pub fn new(
        keyring: Keyring,
        legacy_secret: Vec<u8>,
        store: Arc<dyn InvitationStore>,
    ) -> Authenticator {
        Authenticator {
            keyring,
            legacy_secret,
            store,
            seen: dashmap::DashMap::new(),
        }
    }

    /// The invitation and consultation records of `claims`, from the store or, when it is
    /// unavailable, as last read for an invitation accepted before.
    async fn records(
        &self,
        claims: &LinkClaims,
    ) -> Result<(Option<Invitation>, Option<ScheduledConsultation>), Refusal> {
        let fetched = async {
            let invitation = self.store.invitation(&claims.jti).await?;
            let consultation = self
                .store
                .scheduled_consultation(&claims.consultation)
                .await?;
            Ok::<_, StoreError>((invitation, consultation))
        };
        match fetched.await {
            Ok(records) => Ok(records),
            Err(StoreError::Unavailable(e)) => {
                let Some(seen) = self.seen.get(&claims.jti) else {
                    tracing::warn!(error = %e, "cannot look up an invitation");
                    return Err(Refusal::Unavailable);
                };
                let (invitation, consultation) = seen.value().clone();
                Ok((Some(invitation), Some(consultation)))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot look up an invitation");
                Err(Refusal::Unavailable)
            }
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// A signed-in practitioner (`account` of `organisation`, verified by the edge from the
    /// session cookie) joining `consultation`: only a scheduled consultation of their
    /// organisation that they own ([`Refusal::NotFound`] otherwise, whether it exists or not).
    pub async fn practitioner(
        &self,
        account: &str,
        organisation: &str,
        display_name: &str,
        consultation: &str,
    ) -> Result<Credential, Refusal> {
        if !valid_id(consultation) || account.is_empty() || organisation.is_empty() {
            return Err(Refusal::NotFound);
        }
        let c = match self.store.scheduled_consultation(consultation).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up a consultation");
                return Err(Refusal::Unavailable);
            }
        };
        let c = match c {
            Some(c) if c.organisation == organisation && c.practitioner == account => c,
            _ => return Err(Refusal::NotFound),
        };
        match c.status {
            ConsultationStatus::Cancelled => return Err(Refusal::Cancelled),
            ConsultationStatus::Ended => return Err(Refusal::Ended),
            ConsultationStatus::Scheduled => {}
        }
        Ok(Credential::Practitioner {
            account: account.to_string(),
            organisation: organisation.to_string(),
            consultation: ConsultationId::from(c.id),
            display_name: Label::new(display_name),
            policy: c.policy,
        })
    }

    /// Authenticate `token` at `now_ms` (milliseconds since the epoch).
    pub async fn authenticate(&self, token: &str, now_ms: i64) -> Result<Credential, Refusal> {
        let now = u64::try_from(now_ms / 1000).unwrap_or(0);
        match kind(token)? {
            Kind::Legacy => {
                let claims =
                    token::verify(&self.legacy_secret, token, now).map_err(|e| match e {
                        token::TokenError::Expired => Refusal::Expired,
                        token::TokenError::BadSignature => Refusal::BadSignature,
                        token::TokenError::Missing | token::TokenError::Malformed => {
                            Refusal::Malformed
                        }
                    })?;
                if claims.role != Role::Practitioner {
                    // Bearer identities for patients and guests are gone: they need an invitation.
                    return Err(Refusal::Revoked);
                }
                // The consultation's record, if it has one, gives its policy.
                let policy = match self
                    .store
                    .scheduled_consultation(&claims.consultation)
                    .await
                {
                    Ok(Some(c)) => c.policy,
                    _ => Policy::Standard,
                };
                Ok(Credential::Practitioner {
                    display_name: Label::new(claims.identity.clone()),
                    account: claims.identity,
                    organisation: String::new(),
                    consultation: ConsultationId::from(claims.consultation),
                    policy,
                })
            }
            Kind::Link(_) => {
                let claims = verify_link(&self.keyring, token, now)?;
                let (invitation, consultation) = self.records(&claims).await?;
                check_invitation(&claims, invitation.as_ref(), consultation.as_ref(), now_ms)?;
                // (check_invitation refuses missing records already.)
                let (Some(invitation), Some(consultation)) = (invitation, consultation) else {
                    return Err(Refusal::Revoked);
                };
                let label = Label::new(invitation.pseudonym.expose());
                let policy = consultation.policy;
                if self.seen.len() >= MAX_SEEN {
                    self.seen.retain(|_, (i, _)| i.expires > now_ms);
                }
                self.seen
                    .insert(claims.jti.clone(), (invitation, consultation));
                Ok(Credential::Invitation {
                    jti: claims.jti,
                    consultation: ConsultationId::from(claims.consultation),
                    role: claims.role,
                    label,
                    policy,
                })
            }
        }
    }
}

/// The validity of a new invitation (milliseconds): from `invitation_before_secs` before the
/// scheduled time to `invitation_after_secs` after it; unscheduled, from `now` for
/// `invitation_after_secs`.
pub fn validity(config: &ConsultationConfig, scheduled_at: Option<i64>, now: i64) -> (i64, i64) {
    let before = i64::try_from(config.invitation_before_secs)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    let after = i64::try_from(config.invitation_after_secs)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    match scheduled_at {
        Some(at) => (at.saturating_sub(before), at.saturating_add(after)),
        None => (now, now.saturating_add(after)),
    }
}

/// Why an invitation could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("a practitioner joins with their own credential, not an invitation")]
    PractitionerSeat,
    #[error("the label must be 1 to {MAX_LABEL_LEN} bytes and not blank")]
    BadLabel,
    #[error("the consultation is {0}")]
    NotScheduled(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new random id (128 bits, lowercase hex: safe on a command line, never starts with `-`).
pub fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Create an invitation (one seat: `role` and `label`) for `consultation` in `store` and return
/// it with its signed link token.
pub async fn issue(
    store: &dyn InvitationStore,
    keyring: &Keyring,
    config: &ConsultationConfig,
    consultation: &ScheduledConsultation,
    role: Role,
    label: &str,
    now_ms: i64,
) -> Result<(Invitation, String), IssueError> {
    if role == Role::Practitioner {
        return Err(IssueError::PractitionerSeat);
    }
    if label.trim().is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(IssueError::BadLabel);
    }
    if consultation.status != ConsultationStatus::Scheduled {
        return Err(IssueError::NotScheduled(consultation.status.as_str()));
    }
    let (not_before, expires) = validity(config, consultation.scheduled_at, now_ms);
    let invitation = Invitation {
        jti: random_id(),
        consultation: consultation.id.clone(),
        role: role.as_str().to_string(),
        pseudonym: Pseudonym::new(label),
        not_before,
        expires,
        revoked_at: None,
        created_at: now_ms,
    };
    store.upsert_invitation(&invitation).await?;
    // Seconds, rounded outwards so the link never refuses what the record allows.
    let nbf = u64::try_from(not_before.div_euclid(1000)).unwrap_or(0);
    let exp = u64::try_from((expires + 999).div_euclid(1000)).unwrap_or(0);
    let link = sign_link(keyring, &invitation.jti, &consultation.id, role, nbf, exp);
    Ok((invitation, link))
}

/// The secret a tab is given at its first join, to resume its own seat later (reload, dropped
/// network). Only its hash is kept server-side. Redacting `Debug`, no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SeatSecret(String);

impl SeatSecret {
    pub fn generate() -> SeatSecret {
        SeatSecret(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SeatSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeatSecret(<redacted>)")
    }
}

/// SHA-256 of a presented seat secret (what the rules compare).
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &[u8] = b"key-one-key-one-key-one-key-one-";
    const K2: &[u8] = b"key-two-key-two-key-two-key-two-";

    fn ring1() -> Keyring {
        Keyring::new(("k1", K1), &[]).unwrap()
    }

    fn record(consultation: &str) -> (Invitation, ScheduledConsultation) {
        (
            Invitation {
                jti: "j1".into(),
                consultation: consultation.into(),
                role: "patient".into(),
                pseudonym: Pseudonym::new("Ms X"),
                not_before: 1_000_000,
                expires: 2_000_000,
                revoked_at: None,
                created_at: 0,
            },
            ScheduledConsultation {
                id: consultation.into(),
                organisation: "o".into(),
                practitioner: "a".into(),
                scheduled_at: None,
                status: ConsultationStatus::Scheduled,
                created_at: 0,
                policy: Default::default(),
            },
        )
    }

    #[test]
    fn a_link_verifies_under_its_kid_after_rotation_and_an_unknown_kid_is_refused() {
        let t = sign_link(&ring1(), "j1", "c-1", Role::Patient, 100, 200);
        let claims = verify_link(&ring1(), &t, 150).unwrap();
        assert_eq!((claims.kid.as_str(), claims.jti.as_str()), ("k1", "j1"));
        // Rotated: k2 signs, k1 still verifies.
        let rotated = Keyring::new(("k2", K2), &[("k1", K1)]).unwrap();
        assert_eq!(verify_link(&rotated, &t, 150), Ok(claims));
        let t2 = sign_link(&rotated, "j2", "c-1", Role::Guest, 100, 200);
        assert_eq!(verify_link(&rotated, &t2, 150).unwrap().kid, "k2");
        // k1 dropped: its links are refused.
        let only2 = Keyring::new(("k2", K2), &[]).unwrap();
        assert_eq!(verify_link(&only2, &t, 150), Err(Refusal::BadSignature));
        // A link signed by another key under the same kid.
        let impostor = Keyring::new(("k1", K2), &[]).unwrap();
        let forged = sign_link(&impostor, "j1", "c-1", Role::Patient, 100, 200);
        assert_eq!(
            verify_link(&ring1(), &forged, 150),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn the_link_window_and_garbage() {
        let ring = ring1();
        let t = sign_link(&ring, "j1", "c-1", Role::Patient, 100, 200);
        assert_eq!(verify_link(&ring, &t, 99), Err(Refusal::NotYetValid));
        assert_eq!(verify_link(&ring, &t, 200), Err(Refusal::Expired));
        for junk in ["", "nodot", "a.b", "e30.e30", &"x".repeat(5000)] {
            assert_eq!(
                verify_link(&ring, junk, 150),
                Err(Refusal::Malformed),
                "{junk:.20}"
            );
        }
        // Tampered body: the signature no longer matches.
        let (body, sig) = t.split_once('.').unwrap();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        claims["consultation"] = "c-2".into();
        let tampered = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(
            verify_link(&ring, &tampered, 150),
            Err(Refusal::BadSignature)
        );
        // Well signed but a practitioner seat, or a bad id: malformed.
        let p = sign_link(&ring, "j1", "c-1", Role::Practitioner, 100, 200);
        assert_eq!(verify_link(&ring, &p, 150), Err(Refusal::Malformed));
        let bad = sign_link(&ring, "../j", "c-1", Role::Patient, 100, 200);
        assert_eq!(verify_link(&ring, &bad, 150), Err(Refusal::Malformed));
    }

    #[test]
    fn the_record_decides_revoked_cancelled_ended_and_its_own_window() {
        let claims = verify_link(
            &ring1(),
            &sign_link(&ring1(), "j1", "c-1", Role::Patient, 1, 9_999),
            1_500,
        )
        .unwrap();
        let (inv, c) = record("c-1");
        assert_eq!(
            check_invitation(&claims, Some(&inv), Some(&c), 1_500_000),
            Ok(())
        );
        assert_eq!(
            check_invitation(&claims, Some(&inv), Some(&c), 999_999),
            Err(Refusal::NotYetValid)
        );
        assert_eq!(
            check_invitation(&claims, Some(&inv), Some(&c), 2_000_000),
            Err(Refusal::Expired)
        );
        assert_eq!(
            check_invitation(&claims, None, Some(&c), 1_500_000),
            Err(Refusal::Revoked)
        );
        let mut revoked = inv.clone();
        revoked.revoked_at = Some(1);
        assert_eq!(
            check_invitation(&claims, Some(&revoked), Some(&c), 1_500_000),
            Err(Refusal::Revoked)
        );
        let mut cancelled = c.clone();
        cancelled.status = ConsultationStatus::Cancelled;
        // Cancelled wins over revoked: the person is told why.
        assert_eq!(
            check_invitation(&claims, Some(&revoked), Some(&cancelled), 1_500_000),
            Err(Refusal::Cancelled)
        );
        let mut ended = c.clone();
        ended.status = ConsultationStatus::Ended;
        assert_eq!(
            check_invitation(&claims, Some(&inv), Some(&ended), 1_500_000),
            Err(Refusal::Ended)
        );
        let (other, _) = record("c-2");
        assert_eq!(
            check_invitation(&claims, Some(&other), Some(&c), 1_500_000),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn validity_defaults_to_15_minutes_before_and_4_hours_after() {
        let config = ConsultationConfig::default();
        assert_eq!(
            validity(&config, Some(10_000_000), 0),
            (10_000_000 - 900_000, 10_000_000 + 14_400_000)
        );
        assert_eq!(validity(&config, None, 5), (5, 5 + 14_400_000));
    }

    #[test]
    fn keyring_refuses_duplicates_short_keys_and_bad_ids() {
        assert_eq!(
            Keyring::new(("k1", K1), &[("k1", K2)]).err(),
            Some(KeyringError::DuplicateId("k1".into()))
        );
        assert_eq!(
            Keyring::new(("k1", b"short"), &[]).err(),
            Some(KeyringError::ShortKey("k1".into()))
        );
        assert_eq!(
            Keyring::new(("a b", K1), &[]).err(),
            Some(KeyringError::BadId)
        );
        let dbg = format!("{:?}", Keyring::new(("k2", K2), &[("k1", K1)]).unwrap());
        assert!(!dbg.contains("key-"), "{dbg}");
    }

    #[test]
    fn debug_never_shows_labels_or_secrets() {
        let c = Credential::Invitation {
            jti: "j".into(),
            consultation: "c".into(),
            role: Role::Patient,
            label: Label::new("Jane Secretname"),
            policy: Policy::Recordable,
        };
        let s = SeatSecret::generate();
        let all = format!("{c:?} {s:?} {:?}", Label::new("Jane Secretname"));
        assert!(!all.contains("Jane"), "{all}");
        assert!(!all.contains(s.expose()), "{all}");
        assert_eq!(secret_hash(s.expose()), secret_hash(s.expose()));
        assert_ne!(secret_hash(s.expose()), secret_hash("other"));
    }
}
