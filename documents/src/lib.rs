//! Teleconsult documents (health data): the documents service ([`service`]: who may do what,
//! sealing uploads, opening downloads, deletion, audit), envelope encryption at rest
//! ([`crypto`]), file-type detection from magic bytes and file-name sanitising ([`filetype`]),
//! and the settings ([`config`]). It knows no HTTP: the server's routes call the service; the
//! store only ever sees ciphertext.

pub mod chat;
pub mod config;
pub mod crypto;
pub mod filetype;
pub mod service;

pub use chat::{ChatArchive, ChatArchiveError, ChatRecord};
pub use service::{Caller, DocumentError, DocumentService, Download, Found};
