//! Version-1 join tokens: `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`.
//!
//! A token names one consultation, one identity and one role, and expires. Since invitations
//! ([`crate::invitation`]) they are accepted for practitioners only, as the pre-accounts path
//! (`docs/security.md`); the identity serves as the practitioner's account id. It travels in the
//! join link's URL fragment and in the first WebSocket message, never in a query string, and is
//! never logged: [`Token`] has no `Display` and a redacting `Debug`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

pub use crate::model::Role;

type HmacSha256 = Hmac<Sha256>;

/// Longest token we even try to parse; anything longer is malformed.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a token says.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Consultation id.
    pub consultation: String,
    /// Display name of the person (health data: never logged).
    pub identity: String,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("consultation", &self.consultation)
            .field("identity", &"<redacted>")
            .field("role", &self.role)
            .field("exp", &self.exp)
            .finish()
    }
}

/// Why a token was refused. The `Display` text is safe to send to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token missing")]
    Missing,
    #[error("token malformed")]
    Malformed,
    #[error("token signature invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// Longest consultation id and identity accepted in a token.
const MAX_ID_LEN: usize = 128;
const MAX_IDENTITY_LEN: usize = 200;

/// Sign `claims` with `secret`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    // Serialising a plain struct of strings and integers cannot fail.
    let json = serde_json::to_vec(claims).expect("claims serialise");
    let body = URL_SAFE_NO_PAD.encode(json);
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{body}.{sig}")
}

/// Check `token`'s signature and expiry against `now` (seconds since the epoch).
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.consultation.is_empty()
        || claims.consultation.len() > MAX_ID_LEN
        || !claims
            .consultation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || claims.identity.trim().is_empty()
        || claims.identity.len() > MAX_IDENTITY_LEN
    {
        return Err(TokenError::Malformed);
    }
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            consultation: "c-1".into(),
            identity: "Dr Who".into(),
            role: Role::Practitioner,
            exp,
        }
    }

    #[test]
    fn round_trip() {
        let t = sign(b"secret-secret-secret-secret-1234", &claims(100));
        assert_eq!(
            verify(b"secret-secret-secret-secret-1234", &t, 99),
            Ok(claims(100))
        );
    }

    #[test]
    fn refuses_expired_forged_and_garbage() {
        let key = b"secret-secret-secret-secret-1234";
        let t = sign(key, &claims(100));
        assert_eq!(verify(key, &t, 100), Err(TokenError::Expired));
        assert_eq!(
            verify(b"another-secret-another-secret-00", &t, 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verify(key, "", 1), Err(TokenError::Missing));
        assert_eq!(verify(key, "nodot", 1), Err(TokenError::Malformed));
        assert_eq!(verify(key, "a.b.c", 1), Err(TokenError::Malformed));
        // A body re-signed with the right key but carrying junk is malformed, not accepted.
        let body = URL_SAFE_NO_PAD.encode(b"{\"consultation\":\"../x\"}");
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(body.as_bytes());
        let forged = format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(verify(key, &forged, 1), Err(TokenError::Malformed));
        // Tampering with the body breaks the signature.
        let (b, s) = t.split_once('.').unwrap();
        let tampered = format!("{}A.{s}", &b[..b.len() - 1]);
        assert!(verify(key, &tampered, 1).is_err());
    }

    #[test]
    fn debug_redacts_identity() {
        let s = format!("{:?}", claims(1));
        assert!(!s.contains("Dr Who"), "{s}");
    }
}
