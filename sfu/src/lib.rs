//! Teleconsult media plane (selective forwarding unit). See `Sfu`.

use std::net::SocketAddr;
use tokio::sync::mpsc::UnboundedSender;

#[derive(Clone, Debug)]
pub struct SfuConfig {
    pub bind: SocketAddr,
    pub announce_ip: Option<std::net::IpAddr>,
    pub workers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind { Audio, Video }

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate { pub candidate: String, pub sdp_mid: Option<String>, pub sdp_mline_index: Option<u16> }

#[derive(Debug)]
pub enum SfuEvent {
    Offer(String),
    IceCandidate(Option<Candidate>),
    TrackPublished { track_id: String, kind: Kind },
    TrackUnpublished { track_id: String },
    Connected,
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("unknown participant")]
    UnknownParticipant,
    #[error("bad SDP: {0}")]
    BadSdp(String),
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    #[error("media worker unavailable")]
    WorkerGone,
}

#[derive(Clone)]
pub struct Sfu { local_addr: SocketAddr }

impl Sfu {
    pub fn start(config: SfuConfig) -> std::io::Result<Sfu> { Ok(Sfu { local_addr: config.bind }) }
    pub fn local_addr(&self) -> SocketAddr { self.local_addr }
    pub fn add_participant(&self, _consultation: &str, _participant: &str, _events: UnboundedSender<SfuEvent>) -> Result<(), SfuError> { Ok(()) }
    pub async fn apply_answer(&self, _participant: &str, _sdp: String) -> Result<(), SfuError> { Ok(()) }
    pub fn add_remote_candidate(&self, _participant: &str, _candidate: Option<Candidate>) {}
    pub fn remove_participant(&self, _participant: &str) {}
}
