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
    /// Label stored with each wrapped key, for rotation.
    pub master_key_id: String,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_key_is_never_shown() {
        let c = DocumentsConfig {
            master_key: "c2VjcmV0LWtleS1tYXRlcmlhbA==".into(),
            ..DocumentsConfig::default()
        };
        assert!(!format!("{c:?}").contains("c2VjcmV0"), "{c:?}");
        let json = serde_json::to_value(&c).expect("serialises");
        assert_eq!(json["master_key"], "<redacted>");
        let json = serde_json::to_value(DocumentsConfig::default()).expect("serialises");
        assert_eq!(json["master_key"], "");
    }
}
