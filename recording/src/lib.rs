//! Recording of consultations (issue 13): what is captured, how it is kept, how it becomes
//! playable.
//!
//! - [`journal`]: the append-only journal a recording writes while the consultation runs —
//!   RTP packets per track as publishers sent them, their sender reports, consent events —
//!   sealed in AES-256-GCM chunks under a per-recording key ([`crypto`]), `fsync`ed as it goes,
//!   and recovered up to its last complete chunk after a crash.
//! - [`export`]: from a journal to one WebM file per participant (VP8 + Opus, muxed by libwebm
//!   through the `webm` crate) with audio and video placed by the publishers' sender reports, and
//!   a `manifest.json` (participants by pseudonym, tracks, offsets on one timeline, gaps,
//!   consent events).
//!
//! Nothing here knows about sockets, WebRTC or storage: the SFU feeds records in, the server
//! stores the journal through its `Store` and serves the exports.

pub mod crypto;
pub mod export;
pub mod journal;
pub mod recorder;

pub use crypto::{KeyError, MasterKey, RecordingKey, WrappedKey};
pub use export::{ExportError, Manifest, export};
pub use journal::{
    Event, Header, Journal, JournalError, JournalWriter, Kind, Record, Recovery, TrackInfo,
};
pub use recorder::{Offer, RecorderConfig, Recording, Summary, Tap};
