//! Session secrets, their hashes at rest, CSRF tokens bound to them, generated passwords, and
//! the sealing of TOTP secrets.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a session secret in characters (32 random bytes, base64url without padding).
pub const SESSION_SECRET_LEN: usize = 43;

/// A new session secret: 256 random bits from the OS, base64url. Only the cookie carries it.
pub fn new_session_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` has the shape of a session secret (checked before any lookup).
pub fn is_session_secret(s: &str) -> bool {
    s.len() == SESSION_SECRET_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the store keeps of a session secret: hex SHA-256. A reader of the database cannot turn
/// it back into a cookie.
pub fn session_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The CSRF token of a session: HMAC-SHA256 keyed by the session secret. Bound to the session
/// (another session's token does not fit), needs no storage, and cannot be computed without
/// the secret, which scripts of other sites cannot read (HttpOnly, SameSite=Strict).
pub fn csrf_token(session_secret: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(session_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(b"teleconsult csrf v1");
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `presented` is the CSRF token of `session_secret` (constant time).
pub fn csrf_matches(session_secret: &str, presented: &str) -> bool {
    let expected = csrf_token(session_secret);
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A random password for a new account or a reset: 120 bits, base64url (20 characters).
pub fn generate_password() -> String {
    let bytes: [u8; 15] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new opaque id `{prefix}_{32 hex digits}` (128 random bits).
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("{prefix}_{}", hex(&bytes))
}

/// The throttle key of a login name: hex SHA-256 of the normalised email under a fixed label
/// (the store never keeps the email of a failed login, which may be a typo of someone's).
pub fn throttle_key(email: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"teleconsult login throttle v1\0");
    h.update(email.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a sealed secret could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the sealed secret is malformed")]
    Malformed,
    #[error("the sealed secret does not open with this key (another key, or another account)")]
    Open,
}

/// AES-256-GCM sealing of small secrets (TOTP), bound to a context (the account id) through the
/// associated data, so a sealed value copied to another account does not open.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    fn aad(context: &str) -> Vec<u8> {
        let mut aad = b"teleconsult totp v1\0".to_vec();
        aad.extend_from_slice(context.as_bytes());
        aad
    }

    /// base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, context: &str, secret: &[u8]) -> String {
        let nonce: [u8; 12] = rand::random();
        let aad = Self::aad(context);
        // Encryption with a 32-byte key and a 12-byte nonce fails only for inputs of gigabytes.
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a small secret");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = STANDARD.decode(sealed).map_err(|_| SealError::Malformed)?;
        if raw.len() < 12 + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = raw.split_at(12);
        let aad = Self::aad(context);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_secrets_are_random_and_well_formed() {
        let a = new_session_secret();
        let b = new_session_secret();
        assert_ne!(a, b);
        assert!(is_session_secret(&a), "{a}");
        assert!(!is_session_secret(&a[1..]));
        assert!(!is_session_secret(&format!("{}!", &a[1..])));
        assert_eq!(session_hash(&a).len(), 64);
        assert_ne!(session_hash(&a), session_hash(&b));
        assert!(!session_hash(&a).contains(&a));
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let a = new_session_secret();
        let b = new_session_secret();
        let ta = csrf_token(&a);
        assert!(csrf_matches(&a, &ta));
        assert!(!csrf_matches(&b, &ta), "another session's token");
        assert!(!csrf_matches(&a, ""));
        assert!(!csrf_matches(&a, &ta[1..]));
        assert_ne!(ta, a, "the token is not the secret");
    }

    #[test]
    fn sealed_secrets_open_only_in_their_context_with_their_key() {
        let s = Sealer::new(&[7u8; 32]);
        let sealed = s.seal("acc_1", b"0123456789abcdefghij");
        assert_eq!(
            s.open("acc_1", &sealed).expect("opens"),
            b"0123456789abcdefghij"
        );
        assert!(matches!(s.open("acc_2", &sealed), Err(SealError::Open)));
        let other = Sealer::new(&[8u8; 32]);
        assert!(matches!(other.open("acc_1", &sealed), Err(SealError::Open)));
        assert!(matches!(s.open("acc_1", "%%%"), Err(SealError::Malformed)));
        assert!(matches!(s.open("acc_1", "AAAA"), Err(SealError::Malformed)));
    }

    #[test]
    fn ids_passwords_and_throttle_keys() {
        let id = new_id("acc");
        assert!(id.starts_with("acc_") && id.len() == 36, "{id}");
        assert_ne!(new_id("acc"), id);
        assert_eq!(generate_password().len(), 20);
        assert_eq!(throttle_key("a@b.c"), throttle_key("a@b.c"));
        assert_ne!(throttle_key("a@b.c"), throttle_key("a@b.d"));
        assert!(!throttle_key("a@b.c").contains('@'));
    }
}
