//! Records of organisations, staff accounts, login throttles and staff sessions, and the
//! [`AccountStore`] trait both backends implement (`sqlite_accounts.rs`, `mongo_accounts.rs`).
//! The rules (hashing, lockout, lifetimes) live in the `teleconsult-accounts` crate; the store
//! only keeps what it is given.
//!
//! Every account and session carries its organisation, and every lookup that a client can steer
//! is scoped by it: [`AccountStore::account`] with the wrong organisation finds nothing. Emails
//! are unique across all organisations (the email is the login name, and a login names no
//! organisation).

use crate::{Millis, Result};
use serde::{Deserialize, Serialize};

/// A clinic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    /// Stable opaque id (`org_…`).
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

/// A staff member who logs in with an email and a password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Stable opaque id (`acc_…`); never the display name.
    pub id: String,
    pub organisation: String,
    /// Normalised (trimmed, lower case): the login name, unique across organisations.
    pub email: String,
    pub display_name: String,
    /// Staff roles: `practitioner`, `billing`, `admin` (at least one).
    pub roles: Vec<String>,
    pub disabled: bool,
    /// Argon2id PHC string (`$argon2id$v=19$m=…`).
    pub password_hash: String,
    /// The TOTP second factor, if one was enrolled (confirmed or not yet).
    pub totp: Option<TotpRecord>,
    pub created_at: Millis,
}

/// Debug without the password hash or the sealed TOTP secret.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("organisation", &self.organisation)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("totp", &self.totp.as_ref().map(|t| t.confirmed))
            .finish_non_exhaustive()
    }
}

/// A TOTP secret, sealed (AES-256-GCM, by the accounts crate) before it reaches the store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpRecord {
    /// base64(nonce ‖ ciphertext ‖ tag) of the secret's bytes.
    pub sealed_secret: String,
    /// A code was verified once after enrolment: from then on login requires a code.
    pub confirmed: bool,
    /// The last 30-second time step a code was accepted for (no code is accepted twice).
    pub last_step: i64,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("confirmed", &self.confirmed)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// Consecutive failed logins for one login name (existing or not: an unknown email locks the
/// same way, so a lockout reveals nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginThrottle {
    /// A hash of the normalised email (never the email itself).
    pub key: String,
    pub failures: u32,
    /// No login is tried before this time.
    pub locked_until: Millis,
    pub last_failure: Millis,
}

/// A staff session. The session's secret travels only in the cookie; the store keeps its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Hex SHA-256 of the session secret.
    pub id_hash: String,
    pub organisation: String,
    pub account: String,
    pub created_at: Millis,
    /// Last authenticated request (idle logoff).
    pub last_seen: Millis,
    /// Absolute end of the session, whatever the activity.
    pub expires_at: Millis,
}

/// Storage of organisations, accounts, login throttles and sessions.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync {
    /// Insert or replace by `id`.
    async fn upsert_organisation(&self, org: &Organisation) -> Result<()>;
    async fn organisation(&self, id: &str) -> Result<Option<Organisation>>;

    /// Insert a new account. `Ok(false)` (nothing written) when its email is already taken.
    async fn insert_account(&self, account: &Account) -> Result<bool>;
    /// Replace an existing account by `id` within its organisation (the email does not
    /// change). `NotFound` if there is no such account in that organisation.
    async fn update_account(&self, account: &Account) -> Result<()>;
    /// The account `id` of `organisation`; `None` if absent or of another organisation.
    async fn account(&self, organisation: &str, id: &str) -> Result<Option<Account>>;
    /// The account whose (normalised) email is `email`, in any organisation (login).
    async fn account_by_email(&self, email: &str) -> Result<Option<Account>>;
    /// Every account of `organisation`, by email.
    async fn accounts(&self, organisation: &str) -> Result<Vec<Account>>;

    async fn login_throttle(&self, key: &str) -> Result<Option<LoginThrottle>>;
    /// Count one more failure for `key`; returns the count including it. No concurrent failure
    /// is lost (concurrent callers may see the same count).
    async fn record_login_failure(&self, key: &str, now: Millis) -> Result<u32>;
    /// Refuse logins for `key` until `until`.
    async fn lock_login(&self, key: &str, until: Millis) -> Result<()>;
    /// Forget `key`'s failures (after a successful login).
    async fn clear_login_throttle(&self, key: &str) -> Result<()>;

    async fn insert_session(&self, session: &SessionRecord) -> Result<()>;
    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>>;
    /// Set `last_seen`. `NotFound` if the session is gone (logged out meanwhile).
    async fn touch_session(&self, id_hash: &str, last_seen: Millis) -> Result<()>;
    /// Remove one session (absent is not an error).
    async fn delete_session(&self, id_hash: &str) -> Result<()>;
    /// Remove every session of `account` in `organisation`; returns how many there were.
    async fn delete_account_sessions(&self, organisation: &str, account: &str) -> Result<u64>;
}
