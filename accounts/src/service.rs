//! [`AccountService`]: the rules over the [`AccountStore`].

use crate::config::AccountsConfig;
use crate::secrets::{self, Sealer};
use crate::{
    AccountError, LoginError, Millis, SessionError, Staff, StaffRole, clean_name, normalise_email,
    password, roles_of,
};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use teleconsult_store::StoreError;
use teleconsult_store::accounts::{Account, AccountStore, Organisation, SessionRecord, TotpRecord};
use totp_rs::{Algorithm, TOTP};

/// Longest password accepted, in bytes (hashing cost is bounded anyway; this bounds bodies).
const MAX_PASSWORD_BYTES: usize = 1024;
/// Failed logins are forgotten after a day without another one.
const FAILURE_MEMORY_MS: i64 = 24 * 3600 * 1000;
/// TOTP time step (RFC 6238 default, what every authenticator app uses).
const TOTP_STEP_SECS: i64 = 30;
/// Bytes of a TOTP secret (160 bits, RFC 4226's recommendation).
const TOTP_SECRET_BYTES: usize = 20;

/// The demo organisation and practitioner of `serve --dev` ([`AccountService::ensure_demo`]).
pub const DEMO_ORGANISATION_ID: &str = "org_demo";
pub const DEMO_ACCOUNT_ID: &str = "acc_demo_practitioner";
pub const DEMO_EMAIL: &str = "practitioner@demo.teleconsult.test";
/// Public like the development signing secret: dev mode only.
pub const DEMO_PASSWORD: &str = "demo-practitioner-password";

/// What creating an account needs.
#[derive(Clone)]
pub struct NewAccount {
    pub email: String,
    pub display_name: String,
    pub roles: Vec<StaffRole>,
    pub password: String,
}

/// A session just created by a login. `secret` goes into the cookie and nowhere else.
pub struct NewSession {
    pub secret: String,
    pub staff: Staff,
}

/// A TOTP enrolment in progress: shown once to the person enrolling.
pub struct TotpEnrolment {
    /// Base32 secret, for typing into an authenticator app.
    pub secret_base32: String,
    /// `otpauth://totp/...` URI, for a QR code or a link.
    pub otpauth_uri: String,
}

/// The demo credentials `serve --dev` prints.
pub struct DemoAccount {
    pub organisation: Organisation,
    pub account: Account,
    pub password: &'static str,
}

fn store_err(e: StoreError) -> AccountError {
    match e {
        StoreError::NotFound => AccountError::NotFound,
        StoreError::Unavailable(reason) => {
            tracing::warn!(%reason, "account store unavailable");
            AccountError::Unavailable
        }
        other => {
            tracing::error!(error = %other, "account store failed");
            AccountError::Internal
        }
    }
}

fn login_store_err(e: StoreError) -> LoginError {
    match store_err(e) {
        AccountError::Unavailable => LoginError::Unavailable,
        _ => LoginError::Internal,
    }
}

fn session_store_err(e: StoreError) -> SessionError {
    match store_err(e) {
        AccountError::Unavailable => SessionError::Unavailable,
        _ => SessionError::Internal,
    }
}

/// Organisation and account rules. Cheap to clone.
#[derive(Clone)]
pub struct AccountService {
    store: Arc<dyn AccountStore>,
    config: Arc<AccountsConfig>,
    sealer: Option<Sealer>,
    /// Permits for concurrent Argon2id computations (twice the CPU cores).
    hashing: Arc<tokio::sync::Semaphore>,
    /// Requests per API key (GCRA, `governor`): a runaway booking system slows itself down,
    /// not the clinic's server.
    api_keys: Arc<governor::DefaultKeyedRateLimiter<String>>,
}

fn api_key_quota(config: &AccountsConfig) -> governor::Quota {
    let per_minute = std::num::NonZeroU32::new(config.api_key_requests_per_minute)
        .unwrap_or(std::num::NonZeroU32::MIN);
    let burst =
        std::num::NonZeroU32::new(config.api_key_burst).unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::per_minute(per_minute).allow_burst(burst)
}

impl AccountService {
    pub fn new(config: &AccountsConfig, store: Arc<dyn AccountStore>) -> AccountService {
        AccountService {
            store,
            sealer: config.totp_key_bytes().map(|k| Sealer::new(&k)),
            hashing: Arc::new(tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            api_keys: Arc::new(governor::RateLimiter::keyed(api_key_quota(config))),
            config: Arc::new(config.clone()),
        }
    }

    /// Count one request of API key `key_id`: `Err(wait)` when it is over its rate (answer 429
    /// with `Retry-After`).
    pub fn api_key_request(&self, key_id: &str) -> Result<(), std::time::Duration> {
        use governor::clock::Clock as _;
        let key = key_id.to_string();
        match self.api_keys.check_key(&key) {
            Ok(()) => Ok(()),
            // One state per existing key (only authenticated keys get here): bounded.
            Err(not_until) => {
                Err(not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
            }
        }
    }

    pub fn config(&self) -> &AccountsConfig {
        &self.config
    }

    fn check_password(&self, password: &str) -> Result<(), AccountError> {
        if password.chars().count() < self.config.min_password_length
            || password.len() > MAX_PASSWORD_BYTES
        {
            return Err(AccountError::WeakPassword(self.config.min_password_length));
        }
        Ok(())
    }

    /// Run one Argon2id computation on the blocking pool, at most [`Self::hashing`] at a time:
    /// each takes 19 MiB, so a flood of logins queues here instead of exhausting memory.
    async fn argon2<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let _permit = self.hashing.acquire().await.ok()?;
        tokio::task::spawn_blocking(f).await.ok()
    }

    async fn hash(&self, password: String) -> Result<String, AccountError> {
        self.argon2(move || password::hash(&password))
            .await
            .ok_or(AccountError::Internal)?
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing failed");
                AccountError::Internal
            })
    }

    /// A new organisation named `name`.
    pub async fn create_organisation(
        &self,
        name: &str,
        now: Millis,
    ) -> Result<Organisation, AccountError> {
        let name = clean_name(name, 200).ok_or(AccountError::InvalidOrganisationName)?;
        let org = Organisation {
            id: secrets::new_id("org"),
            name,
            created_at: now,
        };
        self.store
            .upsert_organisation(&org)
            .await
            .map_err(store_err)?;
        tracing::info!(organisation = %org.id, "organisation created");
        Ok(org)
    }

    pub async fn organisation(&self, id: &str) -> Result<Organisation, AccountError> {
        self.store
            .organisation(id)
            .await
            .map_err(store_err)?
            .ok_or(AccountError::NotFound)
    }

    /// A new account in `organisation` (which must exist).
    pub async fn create_account(
        &self,
        organisation: &str,
        new: NewAccount,
        now: Millis,
    ) -> Result<Account, AccountError> {
        let email = normalise_email(&new.email).ok_or(AccountError::InvalidEmail)?;
        let display_name =
            clean_name(&new.display_name, 100).ok_or(AccountError::InvalidDisplayName)?;
        let mut roles = new.roles.clone();
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(AccountError::NoRole);
        }
        self.check_password(&new.password)?;
        self.organisation(organisation).await?;
        let account = Account {
            id: secrets::new_id("acc"),
            organisation: organisation.to_string(),
            email,
            display_name,
            roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
            disabled: false,
            password_hash: self.hash(new.password).await?,
            totp: None,
            created_at: now,
        };
        if !self
            .store
            .insert_account(&account)
            .await
            .map_err(store_err)?
        {
            return Err(AccountError::EmailTaken);
        }
        tracing::info!(organisation, account = %account.id, "account created");
        Ok(account)
    }

    /// The account `id` of `organisation`; another organisation's is [`AccountError::NotFound`].
    pub async fn account(&self, organisation: &str, id: &str) -> Result<Account, AccountError> {
        self.store
            .account(organisation, id)
            .await
            .map_err(store_err)?
            .ok_or(AccountError::NotFound)
    }

    pub async fn accounts(&self, organisation: &str) -> Result<Vec<Account>, AccountError> {
        self.store.accounts(organisation).await.map_err(store_err)
    }

    /// Disable (all its sessions end at once) or enable an account of `organisation`.
    pub async fn set_disabled(
        &self,
        organisation: &str,
        id: &str,
        disabled: bool,
    ) -> Result<Account, AccountError> {
        let mut account = self.account(organisation, id).await?;
        account.disabled = disabled;
        self.store
            .update_account(&account)
            .await
            .map_err(store_err)?;
        if disabled {
            self.store
                .delete_account_sessions(organisation, id)
                .await
                .map_err(store_err)?;
        }
        tracing::info!(organisation, account = id, disabled, "account updated");
        Ok(account)
    }

    /// Set a new password on an account of `organisation`; its sessions end.
    pub async fn set_password(
        &self,
        organisation: &str,
        id: &str,
        new_password: &str,
    ) -> Result<(), AccountError> {
        self.check_password(new_password)?;
        let mut account = self.account(organisation, id).await?;
        account.password_hash = self.hash(new_password.to_string()).await?;
        self.store
            .update_account(&account)
            .await
            .map_err(store_err)?;
        self.store
            .delete_account_sessions(organisation, id)
            .await
            .map_err(store_err)?;
        tracing::info!(organisation, account = id, "password reset");
        Ok(())
    }

    /// How long a lock lasts after `failures` consecutive failures (`None` below the threshold).
    fn lock_duration_ms(&self, failures: u32) -> Option<i64> {
        let c = &self.config;
        if failures < c.lockout_threshold {
            return None;
        }
        let doublings = (failures - c.lockout_threshold).min(30);
        let secs = c
            .lockout_base_secs
            .saturating_mul(1u64 << doublings)
            .min(c.lockout_max_secs);
        Some(secs as i64 * 1000)
    }

    /// Count a failure for `key`; lock when the threshold is reached.
    async fn fail(&self, key: &str, now: Millis) -> LoginError {
        let failures = match self.store.record_login_failure(key, now).await {
            Ok(n) => n,
            Err(e) => return login_store_err(e),
        };
        match self.lock_duration_ms(failures) {
            Some(ms) => match self.store.lock_login(key, now + ms).await {
                Ok(()) => {
                    tracing::warn!(failures, "login locked after repeated failures");
                    LoginError::Locked {
                        retry_after_secs: (ms as u64).div_ceil(1000),
                    }
                }
                Err(e) => login_store_err(e),
            },
            None => LoginError::InvalidCredentials,
        }
    }

    /// Check email, password and (if enrolled) the TOTP code; on success open a session.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        totp_code: Option<&str>,
        now: Millis,
    ) -> Result<NewSession, LoginError> {
        // Anything that is not an email still takes the full path (and locks the same way).
        let email = normalise_email(email).unwrap_or_else(|| email.trim().to_lowercase());
        let key = secrets::throttle_key(&email);
        if let Some(t) = self
            .store
            .login_throttle(&key)
            .await
            .map_err(login_store_err)?
        {
            if t.locked_until > now {
                let retry_after_secs = ((t.locked_until - now) as u64).div_ceil(1000);
                return Err(LoginError::Locked { retry_after_secs });
            }
            // Failures long past are forgotten.
            if now - t.last_failure > FAILURE_MEMORY_MS {
                self.store
                    .clear_login_throttle(&key)
                    .await
                    .map_err(login_store_err)?;
            }
        }
        let account = self
            .store
            .account_by_email(&email)
            .await
            .map_err(login_store_err)?;
        let phc = account.as_ref().map(|a| a.password_hash.clone());
        // A huge password is verified as an empty one (it never matches): it costs no more
        // than a guess.
        let candidate = if password.len() > MAX_PASSWORD_BYTES {
            None
        } else {
            Some(password.to_string())
        };
        let matches = self
            .argon2(move || {
                let dummy = password::dummy_hash();
                let phc: &str = match &phc {
                    Some(p) => p,
                    None => dummy,
                };
                let ok = password::verify(candidate.as_deref().unwrap_or(""), phc);
                ok && candidate.is_some()
            })
            .await
            .ok_or(LoginError::Internal)?;
        let account = match account {
            Some(a) if matches && !a.disabled => a,
            _ => return Err(self.fail(&key, now).await),
        };
        let mut account = account;
        if let Some(totp) = account.totp.clone().filter(|t| t.confirmed) {
            let Some(code) = totp_code.map(str::trim).filter(|c| !c.is_empty()) else {
                return Err(LoginError::TotpRequired);
            };
            match self.check_code(&account, &totp, code, now) {
                Some(step) => {
                    account.totp = Some(TotpRecord {
                        last_step: step,
                        ..totp
                    });
                    self.store
                        .update_account(&account)
                        .await
                        .map_err(login_store_err)?;
                }
                None => return Err(self.fail(&key, now).await),
            }
        }
        self.store
            .clear_login_throttle(&key)
            .await
            .map_err(login_store_err)?;
        let secret = secrets::new_session_secret();
        let record = SessionRecord {
            id_hash: secrets::session_hash(&secret),
            organisation: account.organisation.clone(),
            account: account.id.clone(),
            created_at: now,
            last_seen: now,
            expires_at: now + self.config.session_lifetime_secs as i64 * 1000,
        };
        self.store
            .insert_session(&record)
            .await
            .map_err(login_store_err)?;
        tracing::info!(organisation = %account.organisation, account = %account.id, "signed in");
        Ok(NewSession {
            staff: staff(&account, record.id_hash),
            secret,
        })
    }

    /// The staff member behind a session secret, if the session is live; counts as activity
    /// (the idle clock restarts). An idle or expired session is removed.
    pub async fn authenticate(&self, secret: &str, now: Millis) -> Result<Staff, SessionError> {
        if !secrets::is_session_secret(secret) {
            return Err(SessionError::Invalid);
        }
        let hash = secrets::session_hash(secret);
        let session = self
            .store
            .session(&hash)
            .await
            .map_err(session_store_err)?
            .ok_or(SessionError::Invalid)?;
        let idle_ms = self.config.idle_timeout_secs as i64 * 1000;
        if now >= session.expires_at || now - session.last_seen > idle_ms {
            self.store
                .delete_session(&hash)
                .await
                .map_err(session_store_err)?;
            return Err(SessionError::Expired);
        }
        let account = self
            .store
            .account(&session.organisation, &session.account)
            .await
            .map_err(session_store_err)?;
        let Some(account) = account.filter(|a| !a.disabled) else {
            self.store
                .delete_session(&hash)
                .await
                .map_err(session_store_err)?;
            return Err(SessionError::Invalid);
        };
        match self.store.touch_session(&hash, now).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Err(SessionError::Invalid),
            Err(e) => return Err(session_store_err(e)),
        }
        Ok(staff(&account, hash))
    }

    /// End one session.
    pub async fn logout(&self, staff: &Staff) -> Result<(), AccountError> {
        self.store
            .delete_session(&staff.session_hash)
            .await
            .map_err(store_err)
    }

    /// End every session of the account (on every device); returns how many ended.
    pub async fn logout_everywhere(&self, staff: &Staff) -> Result<u64, AccountError> {
        let n = self
            .store
            .delete_account_sessions(&staff.organisation, &staff.account)
            .await
            .map_err(store_err)?;
        tracing::info!(organisation = %staff.organisation, account = %staff.account, sessions = n, "signed out everywhere");
        Ok(n)
    }

    fn totp(&self, account: &Account, secret: Vec<u8>) -> Result<TOTP, AccountError> {
        // The account name is the opaque id: the authenticator app shows no email or name
        // unless the person types one.
        TOTP::new(
            Algorithm::SHA1,
            6,
            1,
            TOTP_STEP_SECS as u64,
            secret,
            Some(self.config.totp_issuer.clone()),
            account.id.clone(),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "TOTP parameters refused");
            AccountError::Internal
        })
    }

    /// The time step `code` is valid for (this step or one either side), later than the last
    /// step used; `None` if it is not valid or was used already.
    fn check_code(
        &self,
        account: &Account,
        record: &TotpRecord,
        code: &str,
        now: Millis,
    ) -> Option<i64> {
        let sealer = self.sealer.as_ref()?;
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secret = sealer.open(&account.id, &record.sealed_secret).ok()?;
        let totp = self.totp(account, secret).ok()?;
        let step = now.div_euclid(1000) / TOTP_STEP_SECS;
        let mut found = None;
        for s in [step - 1, step, step + 1] {
            if s <= record.last_step || s < 0 {
                continue;
            }
            let expected = totp.generate((s * TOTP_STEP_SECS) as u64);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                found = Some(s);
            }
        }
        found
    }

    /// Start (or restart, if not yet confirmed) TOTP enrolment for the caller's own account.
    pub async fn begin_totp(&self, staff: &Staff) -> Result<TotpEnrolment, AccountError> {
        let sealer = self.sealer.as_ref().ok_or(AccountError::TotpUnavailable)?;
        let mut account = self.account(&staff.organisation, &staff.account).await?;
        if account.totp.as_ref().is_some_and(|t| t.confirmed) {
            return Err(AccountError::TotpAlreadyEnabled);
        }
        let secret: [u8; TOTP_SECRET_BYTES] = rand::random();
        let totp = self.totp(&account, secret.to_vec())?;
        account.totp = Some(TotpRecord {
            sealed_secret: sealer.seal(&account.id, &secret),
            confirmed: false,
            last_step: 0,
        });
        self.store
            .update_account(&account)
            .await
            .map_err(store_err)?;
        Ok(TotpEnrolment {
            secret_base32: totp.get_secret_base32(),
            otpauth_uri: totp.get_url(),
        })
    }

    /// Confirm enrolment with a code from the app: from then on login asks for a code.
    pub async fn confirm_totp(
        &self,
        staff: &Staff,
        code: &str,
        now: Millis,
    ) -> Result<(), AccountError> {
        if self.sealer.is_none() {
            return Err(AccountError::TotpUnavailable);
        }
        let mut account = self.account(&staff.organisation, &staff.account).await?;
        let record = match account.totp.clone() {
            Some(t) if t.confirmed => return Err(AccountError::TotpAlreadyEnabled),
            Some(t) => t,
            None => return Err(AccountError::TotpNotEnrolled),
        };
        let step = self
            .check_code(&account, &record, code.trim(), now)
            .ok_or(AccountError::InvalidCode)?;
        account.totp = Some(TotpRecord {
            confirmed: true,
            last_step: step,
            ..record
        });
        self.store
            .update_account(&account)
            .await
            .map_err(store_err)?;
        tracing::info!(organisation = %staff.organisation, account = %staff.account, "two-factor authentication enabled");
        Ok(())
    }

    /// `serve --dev`: the demo organisation and its practitioner, created if missing and reset
    /// to the public demo password (so the printed credentials always work). Idempotent.
    pub async fn ensure_demo(&self, now: Millis) -> Result<DemoAccount, AccountError> {
        let organisation = match self
            .store
            .organisation(DEMO_ORGANISATION_ID)
            .await
            .map_err(store_err)?
        {
            Some(o) => o,
            None => {
                let o = Organisation {
                    id: DEMO_ORGANISATION_ID.to_string(),
                    name: "Demo clinic".to_string(),
                    created_at: now,
                };
                self.store
                    .upsert_organisation(&o)
                    .await
                    .map_err(store_err)?;
                o
            }
        };
        let hash = self.hash(DEMO_PASSWORD.to_string()).await?;
        let account = match self
            .store
            .account(DEMO_ORGANISATION_ID, DEMO_ACCOUNT_ID)
            .await
            .map_err(store_err)?
        {
            Some(mut a) => {
                a.password_hash = hash;
                a.disabled = false;
                if !a.roles.iter().any(|r| r == "practitioner") {
                    a.roles.push("practitioner".to_string());
                }
                self.store.update_account(&a).await.map_err(store_err)?;
                a
            }
            None => {
                let a = Account {
                    id: DEMO_ACCOUNT_ID.to_string(),
                    organisation: DEMO_ORGANISATION_ID.to_string(),
                    email: DEMO_EMAIL.to_string(),
                    display_name: "Demo Practitioner".to_string(),
                    roles: vec!["practitioner".to_string()],
                    disabled: false,
                    password_hash: hash,
                    totp: None,
                    created_at: now,
                };
                if !self.store.insert_account(&a).await.map_err(store_err)? {
                    // The demo email belongs to another account (made by hand): leave it.
                    return Err(AccountError::EmailTaken);
                }
                a
            }
        };
        Ok(DemoAccount {
            organisation,
            account,
            password: DEMO_PASSWORD,
        })
    }
}

fn staff(account: &Account, session_hash: String) -> Staff {
    Staff {
        organisation: account.organisation.clone(),
        account: account.id.clone(),
        display_name: account.display_name.clone(),
        email: account.email.clone(),
        roles: roles_of(account),
        totp: account.totp.as_ref().is_some_and(|t| t.confirmed),
        session_hash,
    }
}
