//! API keys: the `tc_<id>_<secret>` format, hashing, and the [`ApiClient`] extractor every
//! `/api/v1` handler takes. The secret is 256 random bits, so one SHA-256 of it is enough at
//! rest (no password-style stretching: nothing to guess; see `docs/decisions.md`).

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use teleconsult_store::ApiKey;

/// The scopes a key can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    ConsultationsRead,
    ConsultationsWrite,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::ConsultationsRead, Scope::ConsultationsWrite];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ConsultationsRead => "consultations:read",
            Scope::ConsultationsWrite => "consultations:write",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A key's use is written at most this often (a write per request would be a write per call).
const TOUCH_EVERY_MS: i64 = 60_000;

/// A new key's public id (96 bits, hex) and its presented form `tc_<id>_<secret>`; the secret
/// (256 bits, hex) is only ever in the returned string.
pub fn generate() -> (String, String, String) {
    let mut id = [0u8; 12];
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut id);
    rand::thread_rng().fill_bytes(&mut secret);
    let id = hex(&id);
    let secret = hex(&secret);
    let hash = secret_hash(&secret);
    (id.clone(), format!("tc_{id}_{secret}"), hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a key's secret, as stored.
pub fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Split `tc_<id>_<secret>` into id and secret (both lowercase hex of the right length).
pub fn parse(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix("tc_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex_of(id, 24) && hex_of(secret, 64)).then_some((id, secret))
}

/// The caller of an `/api/v1` request: a live API key of one organisation.
#[derive(Clone, Debug)]
pub struct ApiClient {
    pub key_id: String,
    pub organisation: String,
    scopes: Vec<String>,
}

impl ApiClient {
    /// The actor of audit events: `api_key:<id>`.
    pub fn actor(&self) -> String {
        format!("api_key:{}", self.key_id)
    }

    /// 403 `insufficient_scope` unless the key holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope.as_str()) {
            Ok(())
        } else {
            Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this API key lacks the scope {}", scope.as_str()),
            ))
        }
    }
}

fn invalid_key() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        "the API key is unknown, revoked or malformed",
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    )
}

/// Whether `key` is live and its hash is that of `secret` (constant time).
fn accepts(key: &ApiKey, secret: &str) -> bool {
    let ok = bool::from(
        secret_hash(secret)
            .as_bytes()
            .ct_eq(key.secret_hash.as_bytes()),
    );
    ok && key.revoked_at.is_none()
}

impl FromRequestParts<AppState> for ApiClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "an API key is required: Authorization: Bearer tc_…",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(invalid_key)?;
        let (id, secret) = parse(presented).ok_or_else(invalid_key)?;
        let key = state
            .store
            .api_key(id)
            .await
            .map_err(super::store_error)?
            .ok_or_else(invalid_key)?;
        if !accepts(&key, secret) {
            return Err(invalid_key());
        }
        if let Err(wait) = state.accounts.api_key_request(&key.id) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this API key; retry after the Retry-After seconds",
            )
            .with_header(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            ));
        }
        let now = teleconsult_accounts::now_millis();
        if key
            .last_used_at
            .is_none_or(|at| now.saturating_sub(at) >= TOUCH_EVERY_MS)
        {
            // A failed bookkeeping write does not refuse the request.
            if let Err(e) = state.store.touch_api_key(&key.id, now).await {
                tracing::warn!(key = %key.id, error = %e, "could not record the API key's use");
            }
        }
        Ok(ApiClient {
            key_id: key.id,
            organisation: key.organisation,
            scopes: key.scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_to_their_record() {
        let (id, presented, hash) = generate();
        let (pid, secret) = parse(&presented).expect("parses");
        assert_eq!(pid, id);
        assert_eq!(secret_hash(secret), hash);
        assert!(!hash.contains(secret));
        let (_, other, _) = generate();
        assert_ne!(presented, other);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let (_, good, _) = generate();
        for bad in [
            "",
            "tc_",
            "tc__",
            &good[1..],
            &good[..good.len() - 1],
            &good.replace("tc_", "tk_"),
            &good.to_uppercase(),
            &format!("{good}0"),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn revoked_or_wrong_secret_is_not_accepted() {
        let (id, presented, hash) = generate();
        let (_, secret) = parse(&presented).expect("parses");
        let mut key = ApiKey {
            id,
            organisation: "org".into(),
            name: "n".into(),
            scopes: vec![],
            secret_hash: hash,
            created_by: "acc".into(),
            created_at: 0,
            revoked_at: None,
            last_used_at: None,
        };
        assert!(accepts(&key, secret));
        assert!(!accepts(&key, &"0".repeat(64)));
        key.revoked_at = Some(1);
        assert!(!accepts(&key, secret));
    }
}
