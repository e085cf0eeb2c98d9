//! Keys of a recording: a random AES-256-GCM key per recording, kept only wrapped by the
//! server's master key (the construction documents use: `docs/storage.md`), with the wrapping
//! bound to the recording id so a wrapped key cannot be moved onto another recording.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

const WRAP_AAD: &[u8] = b"tc-recording-key";

/// Why a recording key cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the recording key was wrapped by master key {0}, which is not configured")]
    UnknownMasterKey(String),
    #[error(
        "the recording key does not open with the master key (wrong key, or another recording's)"
    )]
    Unwrap,
    #[error("the wrapped recording key is malformed")]
    Malformed,
}

/// The server's master key (`documents.master_key`), by id.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, <redacted>)", self.id)
    }
}

/// One recording's data key.
pub struct RecordingKey([u8; 32]);

/// A recording key sealed under a master key, as stored in the journal's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    pub master_key_id: String,
    /// base64: 12-byte nonce followed by the sealed key.
    pub sealed: String,
}

impl RecordingKey {
    pub fn generate() -> RecordingKey {
        RecordingKey(rand::random())
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }
}

impl MasterKey {
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> MasterKey {
        MasterKey { id: id.into(), key }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(&self, recording: &str) -> Vec<u8> {
        [WRAP_AAD, self.id.as_bytes(), b"\0", recording.as_bytes()].concat()
    }

    /// Seal `key` for `recording`.
    pub fn wrap(&self, key: &RecordingKey, recording: &str) -> WrappedKey {
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.key));
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &key.0,
                    aad: &self.aad(recording),
                },
            )
            // AES-GCM encryption of 32 bytes cannot fail.
            .expect("sealing a 32-byte key");
        WrappedKey {
            master_key_id: self.id.clone(),
            sealed: B64.encode([&nonce[..], &sealed].concat()),
        }
    }

    /// Open a key wrapped for `recording` by this master key.
    pub fn unwrap(&self, wrapped: &WrappedKey, recording: &str) -> Result<RecordingKey, KeyError> {
        if wrapped.master_key_id != self.id {
            return Err(KeyError::UnknownMasterKey(wrapped.master_key_id.clone()));
        }
        let raw = B64
            .decode(&wrapped.sealed)
            .map_err(|_| KeyError::Malformed)?;
        if raw.len() != 12 + 32 + 16 {
            return Err(KeyError::Malformed);
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.key));
        let plain = cipher
            .decrypt(
                raw[..12].into(),
                Payload {
                    msg: &raw[12..],
                    aad: &self.aad(recording),
                },
            )
            .map_err(|_| KeyError::Unwrap)?;
        let key: [u8; 32] = plain.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(RecordingKey(key))
    }
}

/// The master keys a reader may need (the current one and those rotated out).
pub fn unwrap_with<'a>(
    keys: impl IntoIterator<Item = &'a MasterKey>,
    wrapped: &WrappedKey,
    recording: &str,
) -> Result<RecordingKey, KeyError> {
    keys.into_iter()
        .find(|k| k.id == wrapped.master_key_id)
        .ok_or_else(|| KeyError::UnknownMasterKey(wrapped.master_key_id.clone()))?
        .unwrap(wrapped, recording)
}
