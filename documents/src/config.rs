//! Document settings (`[documents]`), defaults documented in `config/default.toml`.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Largest document accepted, in bytes (413 beyond, while streaming).
    pub max_bytes: u64,
    /// Types accepted, detected from the file's magic bytes: any of `pdf`, `png`, `jpeg`,
    /// `webp`, `text`, `dicom`.
    pub allowed_types: Vec<String>,
    /// Master key wrapping each document's own key: base64 of 32 random bytes. Required outside
    /// `--dev` (where a public development key is used). `Debug` shows `[REDACTED]`.
    #[serde(serialize_with = "redacted")]
    pub master_key: SecretString,
    /// Label stored with each wrapped key, for rotation: documents uploaded from now on are
    /// wrapped by `master_key` and carry this id.
    pub master_key_id: String,
    /// Earlier master keys, kept only to open the documents they wrapped (looked up by the
    /// `master_key_id` stored with each document); never used for new documents.
    pub previous_master_keys: Vec<PreviousMasterKey>,
    /// Uploads of one consultation that may stream at once; one more gets 429
    /// `too_many_uploads`.
    pub max_concurrent_uploads: usize,
}

/// One retired master key (`documents.previous_master_keys`). `Debug` shows `[REDACTED]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousMasterKey {
    /// The `master_key_id` it had when it was current.
    pub id: String,
    /// Base64 of its 32 bytes.
    #[serde(serialize_with = "redacted")]
    pub key: SecretString,
}

/// Serialise a secret as `""` when unset and `"<redacted>"` otherwise: a configuration written
/// out (diagnostics, tests comparing settings) never carries a secret.
pub fn redacted<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "<redacted>"
    })
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        DocumentsConfig {
            max_bytes: 50 * 1024 * 1024,
            allowed_types: ["pdf", "png", "jpeg", "webp", "text", "dicom"]
                .into_iter()
                .map(String::from)
                .collect(),
            master_key: SecretString::default(),
            master_key_id: "k1".to_string(),
            previous_master_keys: Vec::new(),
            max_concurrent_uploads: 3,
        }
    }
}

/// The master keys `config` names (current and previous), for documents and chat alike.
pub fn keyring(
    config: &DocumentsConfig,
) -> Result<crate::crypto::KeyRing, crate::crypto::CryptoError> {
    use crate::crypto::{KeyRing, MasterKey};
    let current = MasterKey::from_base64(&config.master_key_id, config.master_key.expose_secret())?;
    let previous = config
        .previous_master_keys
        .iter()
        .map(|k| MasterKey::from_base64(&k.id, k.key.expose_secret()))
        .collect::<Result<Vec<_>, _>>()?;
    KeyRing::new(current, previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_key_is_never_shown() {
        let c = DocumentsConfig {
            master_key: "c2VjcmV0LWtleS1tYXRlcmlhbA==".into(),
            previous_master_keys: vec![PreviousMasterKey {
                id: "k0".into(),
                key: "b2xkLXNlY3JldC1rZXktbWF0ZXJpYWw=".into(),
            }],
            ..DocumentsConfig::default()
        };
        assert!(!format!("{c:?}").contains("c2VjcmV0"), "{c:?}");
        assert!(!format!("{c:?}").contains("b2xk"), "{c:?}");
        let json = serde_json::to_value(&c).expect("serialises");
        assert_eq!(json["master_key"], "<redacted>");
        assert_eq!(json["previous_master_keys"][0]["key"], "<redacted>");
        assert_eq!(json["previous_master_keys"][0]["id"], "k0");
        let json = serde_json::to_value(DocumentsConfig::default()).expect("serialises");
        assert_eq!(json["master_key"], "");
    }
}
