//! Organisations (clinics) and their staff accounts: email logins with Argon2id passwords
//! ([`password`]), an optional TOTP second factor, lockout with exponential back-off, sessions
//! whose secret is kept hashed at rest, CSRF tokens bound to the session ([`secrets`]), idle and
//! absolute session lifetimes. [`AccountService`] holds the rules; the records and their
//! storage are `teleconsult_store::accounts` (both backends).
//!
//! No HTTP here: the server maps [`LoginError`], [`SessionError`] and [`AccountError`] to
//! responses and carries the session secret in a cookie. Time is passed in (`now`, milliseconds
//! since the epoch), so lockout and expiry are tested without waiting.
//!
//! Error policy: every error is about the input or the store; nothing here panics on input.
//! Login failures never say which part was wrong, and an unknown email takes the same path as a
//! wrong password (verified against a dummy hash, counted and locked the same way).

pub mod config;
pub mod password;
pub mod secrets;
mod service;

pub use config::AccountsConfig;
pub use service::{AccountService, DemoAccount, NewAccount, NewSession, TotpEnrolment};
pub use teleconsult_store::accounts::{Account, AccountStore, Organisation};

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// The current time in milliseconds since the epoch.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A staff role. An account has one or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StaffRole {
    /// Holds consultations; sees their own billing.
    Practitioner,
    /// Exports the organisation's billing; nothing else.
    Billing,
    /// Manages the organisation's accounts.
    Admin,
}

impl StaffRole {
    pub const ALL: [StaffRole; 3] = [
        StaffRole::Practitioner,
        StaffRole::Billing,
        StaffRole::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Practitioner => "practitioner",
            StaffRole::Billing => "billing",
            StaffRole::Admin => "admin",
        }
    }
}

impl std::fmt::Display for StaffRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StaffRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StaffRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: practitioner, billing or admin"))
    }
}

/// Who a request is: the one answer a handler needs (organisation, account, roles). Built by
/// [`AccountService::authenticate`] from a live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staff {
    pub organisation: String,
    pub account: String,
    pub display_name: String,
    pub email: String,
    pub roles: Vec<StaffRole>,
    /// A confirmed TOTP second factor.
    pub totp: bool,
    /// The session's id at rest (hash of its secret): what logout removes.
    pub session_hash: String,
}

impl Staff {
    pub fn has(&self, role: StaffRole) -> bool {
        self.roles.contains(&role)
    }
}

/// The roles of a stored account (unknown strings are ignored: they grant nothing).
pub fn roles_of(account: &Account) -> Vec<StaffRole> {
    let mut roles: Vec<StaffRole> = account
        .roles
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Why a login was refused. The messages are what a person may read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong email, wrong password, wrong second-factor code, or a disabled account: never which.
    #[error("the email, password or authentication code is not right")]
    InvalidCredentials,
    /// The password was right and the account has a second factor: ask for the code.
    #[error("an authentication code from your authenticator app is required")]
    TotpRequired,
    /// Too many failures for this email (existing or not): wait.
    #[error("too many failed attempts; try again in {retry_after_secs} seconds")]
    Locked { retry_after_secs: u64 },
    #[error("the account store is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

/// Why a session was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// No such session (never existed, logged out, account disabled).
    #[error("not signed in")]
    Invalid,
    /// It existed but was idle too long or reached its lifetime; it is removed.
    #[error("the session has expired; please sign in again")]
    Expired,
    #[error("the account store is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    /// No such account or organisation *in the caller's organisation*.
    #[error("not found")]
    NotFound,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("invalid email address")]
    InvalidEmail,
    #[error("the display name must be 1 to 100 characters, without control characters")]
    InvalidDisplayName,
    #[error("the organisation name must be 1 to 200 characters, without control characters")]
    InvalidOrganisationName,
    #[error("the password must be at least {0} characters (and at most 1024 bytes)")]
    WeakPassword(usize),
    #[error("at least one role is required (practitioner, billing, admin)")]
    NoRole,
    #[error("two-factor authentication is not configured on this server (accounts.totp_key)")]
    TotpUnavailable,
    #[error("two-factor authentication is already enabled")]
    TotpAlreadyEnabled,
    #[error("no two-factor enrolment is in progress")]
    TotpNotEnrolled,
    #[error("the authentication code is not right")]
    InvalidCode,
    #[error("the account store is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl AccountError {
    /// Stable code for API bodies.
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::NotFound => "not_found",
            AccountError::EmailTaken => "email_taken",
            AccountError::InvalidEmail => "invalid_email",
            AccountError::InvalidDisplayName => "invalid_display_name",
            AccountError::InvalidOrganisationName => "invalid_organisation_name",
            AccountError::WeakPassword(_) => "weak_password",
            AccountError::NoRole => "no_role",
            AccountError::TotpUnavailable => "totp_unavailable",
            AccountError::TotpAlreadyEnabled => "totp_already_enabled",
            AccountError::TotpNotEnrolled => "totp_not_enrolled",
            AccountError::InvalidCode => "invalid_code",
            AccountError::Unavailable => "storage_unavailable",
            AccountError::Internal => "internal",
        }
    }
}

/// The normalised login form of an email: trimmed, lower case, `local@domain` with no spaces
/// or control characters, at most 254 bytes. `None` if it is not an email address.
pub fn normalise_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(e)
}

/// A display or organisation name: trimmed, `1..=max` characters, no control characters.
pub(crate) fn clean_name(name: &str, max: usize) -> Option<String> {
    let n = name.trim();
    let len = n.chars().count();
    (len >= 1 && len <= max && !n.chars().any(char::is_control)).then(|| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_or_refused() {
        assert_eq!(
            normalise_email("  Dr.Who@Example.ORG ").as_deref(),
            Some("dr.who@example.org")
        );
        for bad in [
            "", "x", "@x", "x@", "a@b@c", "a b@c", "a@.c", "a@c.", "a@c\u{7}",
        ] {
            assert_eq!(normalise_email(bad), None, "{bad:?}");
        }
        assert_eq!(normalise_email(&format!("{}@x.org", "a".repeat(250))), None);
    }

    #[test]
    fn roles_parse_and_unknown_ones_grant_nothing() {
        assert_eq!("admin".parse::<StaffRole>(), Ok(StaffRole::Admin));
        assert!("root".parse::<StaffRole>().is_err());
        let a = Account {
            id: "acc_1".into(),
            organisation: "org_1".into(),
            email: "a@b.c".into(),
            display_name: "A".into(),
            roles: vec!["billing".into(), "root".into(), "billing".into()],
            disabled: false,
            password_hash: String::new(),
            totp: None,
            created_at: 0,
        };
        assert_eq!(roles_of(&a), vec![StaffRole::Billing]);
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(clean_name("  Dr A ", 100).as_deref(), Some("Dr A"));
        assert_eq!(clean_name("   ", 100), None);
        assert_eq!(clean_name("a\nb", 100), None);
        assert_eq!(clean_name(&"é".repeat(101), 100), None);
        assert!(clean_name(&"é".repeat(100), 100).is_some());
    }
}
