//! Synthetic Teleconsult participants: real WebRTC peers (webrtc-rs) that join through the
//! signalling service like a browser does. Used by the integration tests and the load generator.

pub mod impaired;
pub mod janus;
pub mod measure;
pub mod media;
pub mod netem;
pub mod participant;
pub mod peer;
pub mod report;
pub mod scenario;
pub mod server_stats;
pub mod target;
