//! Teleconsult documents (health data): envelope encryption at rest ([`crypto`]), file-type
//! detection from magic bytes and file-name sanitising ([`filetype`]), and the settings of the
//! documents service ([`config`]). The HTTP routes that stream uploads and downloads through
//! these live in the server crate; the store only ever sees ciphertext.

pub mod config;
pub mod crypto;
pub mod filetype;
