//! Document settings (`[documents]`), defaults documented in `config/default.toml`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Largest document accepted, in bytes (413 beyond, while streaming).
    pub max_bytes: u64,
    /// Types accepted, detected from the file's magic bytes: any of `pdf`, `png`, `jpeg`,
    /// `webp`, `text`, `dicom`.
    pub allowed_types: Vec<String>,
    /// Master key wrapping each document's own key: base64 of 32 random bytes. Required outside
    /// `--dev` (where a public development key is used).
    pub master_key: String,
    /// Label stored with each wrapped key, for rotation.
    pub master_key_id: String,
}

impl std::fmt::Debug for DocumentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentsConfig")
            .field("max_bytes", &self.max_bytes)
            .field("allowed_types", &self.allowed_types)
            .field("master_key", &"<redacted>")
            .field("master_key_id", &self.master_key_id)
            .finish()
    }
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        DocumentsConfig {
            max_bytes: 50 * 1024 * 1024,
            allowed_types: ["pdf", "png", "jpeg", "webp", "text", "dicom"]
                .into_iter()
                .map(String::from)
                .collect(),
            master_key: String::new(),
            master_key_id: "k1".to_string(),
        }
    }
}
