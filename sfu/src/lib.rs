//! Teleconsult media plane: a selective forwarding unit on the sans-I/O `rtc` stack.
//!
//! - **One UDP port** carries all media, so a hospital firewall needs one rule. Every worker
//!   thread has its own socket on that port (`SO_REUSEPORT`) and reads it itself, so a datagram is
//!   received, decrypted, forwarded and sent by one thread with no hand-over. A datagram is
//!   matched to its participant by our ICE ufrag (a STUN binding request's `USERNAME` is
//!   `<our ufrag>:<theirs>`), after that by its remote address. The kernel spreads remote
//!   addresses over the sockets; one that lands on another worker's socket is passed to the
//!   owning worker's channel (never with one worker, the benchmark and small-server set-up).
//! - **Each consultation lives on one worker thread** (like a mediasoup Router inside its Worker).
//!   A worker owns the `RTCPeerConnection` of every participant of its consultations, so
//!   forwarding a packet from a publisher to its subscribers is a plain function call: no lock, no
//!   channel, no task hop per packet.
//! - The signalling layer talks to the SFU through [`Sfu`]: commands go down a channel to the
//!   owning worker (and wake it); what a participant's client must be told (offers, published
//!   tracks) comes back up on that participant's [`SfuEvent`] channel.
//!
//!
//! # How it is built
//!
//! - [`core::Core`] (`core/`) is the **sans-I/O media engine** of one worker: consultations,
//!   participants, their tracks and subscriptions, each participant's `RTCPeerConnection`, and
//!   forwarding. It has no socket, no thread and no clock: every input carries `now`.
//! - [`negotiation`] is the offer/answer state machine of one participant's session (never
//!   change the transceivers while an offer is outstanding), as plain values.
//! - **The per-packet path is ours** (issue 10): `rtc` keeps SDP, ICE, DTLS and SCTP; RTP and
//!   RTCP (RFC 7983: first byte 128–191) never enter its pipeline once DTLS is up. [`srtp`]
//!   protects and unprotects in place with the keys `rtc` negotiated (a small patch,
//!   `patches/rtc/PATCH.md`); [`rtp`] reads and writes headers in byte buffers; [`cache`] keeps
//!   each published track's recent packets for every subscriber's NACKs; [`forward`] decides
//!   what one packet becomes for one subscription (payload type, gap-free sequence numbers,
//!   timestamps: pure values); `core/media.rs` and `core/feedback.rs` apply it, RTCP included.
//!   [`keyframe`] throttles keyframe requests (and gives `rtc` clients an interceptor that
//!   delivers them); [`quality`] keeps the
//!   forwarding-latency histogram and per-consultation loss/jitter, read as data by
//!   [`quality::snapshot`]; metric names are defined once, in [`metric_names`].
//! - `driver.rs` is the **thin mio driver** of a worker thread: its socket on the shared port,
//!   routing datagrams by ufrag/address (handing over other workers' datagrams), the command
//!   channel, timers, and the send queue (`sendq.rs`, one `sendmmsg` per batch).
//!
//! The driver's run loop, in short (the simulation tests in `tests/` run the same core on a
//! synthetic clock, with [`core::Core::poll_output`] instead of a socket):
//!
//! ```text
//! loop {
//!     wait for the socket, a command, or core.poll_timeout()
//!     for each command:  core.add_participant / apply_answer / add_remote_candidate /
//!                        remove_participant (now = Instant::now()), reply with its Result
//!     for each datagram: at = Instant::now(); core.handle_datagram(at, participant, from, data)
//!                        (flush the send queue every FLUSH_AT datagrams)
//!     core.handle_timeout(Instant::now())
//!     pass core.poll_event() to each participant's SfuEvent channel; flush the send queue
//! }
//! ```
//!
//! Error policy: every error caused by client input (SDP, candidates, datagrams) is returned or
//! counted, never a panic. A panic means a broken invariant of this crate.

pub mod answer;
pub mod bwe;
pub mod cache;
pub mod core;
mod driver;
pub mod forward;
pub mod inspect;
pub mod keyframe;
mod metrics;
pub mod negotiation;
pub mod quality;
pub mod rtp;
mod sendq;
mod session;
pub mod simulcast;
pub mod srtp;
pub mod stun;
pub mod tcp;
pub mod twcc;
pub mod unknown;

use dashmap::DashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc::Sender as EventSender;

/// Room to leave in a media session's event channel (`Sfu::add_participant`): a few
/// negotiations' worth (an offer and a handful of track changes each). The worker never waits:
/// a session whose channel is full is closed and counted
/// (`teleconsult_media_event_overflows_total`).
pub const EVENT_QUEUE: usize = 64;
use tokio::sync::oneshot;

pub use core::recording::{Offered, RecordingSink, TrackTap};
pub use metrics::metric_names;

/// Media plane settings.
#[derive(Clone, Debug)]
pub struct SfuConfig {
    /// Address of the media UDP port (port 0 picks a free one).
    pub bind: SocketAddr,
    /// Address announced in our ICE candidate; default: the bound address (which must then not be
    /// unspecified).
    pub announce_ip: Option<IpAddr>,
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
    /// ICE-TCP on one TCP port beside the UDP one (`None`: UDP only).
    pub tcp: Option<tcp::TcpSettings>,
    /// When a source address that is no participant's is ignored for a while.
    pub unknown_sources: unknown::UnknownSourceLimits,
}

/// Kind of a track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

/// What a published track carries, from the section of our offer it arrived on: the first
/// three sections of every participant's first offer are its own `recvonly` sections, for its
/// microphone, its camera and its screen share, in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

/// The suffix of the MediaStream id under which a participant's screen share reaches the others
/// (`{participant}~screen`; its camera and microphone are in the stream `{participant}`), so a
/// client can tell the two videos of one person apart before any signalling message arrives.
pub const SCREEN_STREAM_SUFFIX: &str = "~screen";

/// An ICE candidate as it travels in signalling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub candidate: String,
    pub sdp_mid: Option<String>,
    pub sdp_mline_index: Option<u16>,
}

/// What the SFU tells the signalling layer about one participant's media session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SfuEvent {
    /// Send this offer to the participant's client; its answer goes to [`Sfu::apply_answer`].
    Offer(String),
    /// The participant now publishes a track (announce it to the others).
    TrackPublished {
        track_id: String,
        kind: Kind,
        source: Source,
    },
    /// The participant stopped publishing a track.
    TrackUnpublished { track_id: String },
    /// ICE and DTLS are up (once per session: not again after a spell of `disconnected`).
    Connected,
    /// The media connection failed or closed (ICE timeout, DTLS failure).
    Failed,
}

/// Errors of the SFU's operations. The `Display` text is safe to show to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SfuError {
    #[error("unknown participant")]
    UnknownParticipant,
    #[error("participant already has a media session")]
    AlreadyExists,
    #[error("no offer is waiting for an answer")]
    NoPendingOffer,
    #[error("invalid SDP: {0}")]
    BadSdp(String),
    #[error("invalid ICE candidate: {0}")]
    BadCandidate(String),
    #[error("could not create the media session: {0}")]
    Setup(String),
    #[error("media plane stopped")]
    Stopped,
}

/// Routing key of a participant: which worker owns it, and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ParticipantKey {
    worker: usize,
    id: u64,
}

/// The demultiplexing tables shared by the workers (any worker's socket may receive any
/// participant's datagrams).
#[derive(Default)]
pub(crate) struct Routes {
    /// Our ICE ufrag → participant.
    by_ufrag: DashMap<String, ParticipantKey>,
    /// Remote address → participant, learnt from STUN binding requests.
    by_addr: DashMap<SocketAddr, ParticipantKey>,
}

impl Routes {
    /// The participant a datagram from `from` belongs to: named by the ufrag of a STUN binding
    /// request (which also teaches us its address), else by its address.
    pub(crate) fn lookup(&self, data: &[u8], from: SocketAddr) -> Option<ParticipantKey> {
        match stun::binding_request_local_ufrag(data) {
            Some(ufrag) => {
                let k = *self.by_ufrag.get(ufrag)?;
                if self.by_addr.get(&from).map(|e| *e) != Some(k) {
                    self.by_addr.insert(from, k);
                }
                Some(k)
            }
            None => self.by_addr.get(&from).map(|k| *k),
        }
    }

    pub(crate) fn forget(&self, key: ParticipantKey, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
        // Ufrags of earlier ICE generations (restarts) too.
        self.by_ufrag.retain(|_, k| *k != key);
        self.by_addr.retain(|_, k| *k != key);
    }
}

struct Inner {
    local_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    /// Tells the ICE-TCP acceptor thread to end.
    tcp_stop: Arc<std::sync::atomic::AtomicBool>,
    workers: Arc<[driver::Handle]>,
    participants: DashMap<String, ParticipantKey>,
    next_id: AtomicU64,
}

impl Drop for Inner {
    /// The last handle is gone: wake the workers so they see their closed channels, close every
    /// session and end.
    fn drop(&mut self) {
        self.tcp_stop.store(true, Ordering::Release);
        for w in self.workers.iter() {
            w.close();
        }
    }
}

/// Socket buffer we ask the kernel for: bursts of video (a keyframe is dozens of packets) from
/// many participants must not overflow the default ~200 KiB.
const SOCKET_BUFFER: usize = 4 << 20;

/// One worker's non-blocking socket on the shared media port. `SO_REUSEPORT` lets every worker
/// bind the same port; Linux only lets sockets of the same user join the group.
fn bind_media_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // The kernel caps these at net.core.{r,w}mem_max; a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Handle on the running media plane. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

impl Sfu {
    /// Bind the media port and start the worker threads.
    pub fn start(config: SfuConfig) -> std::io::Result<Sfu> {
        let n = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.workers
        };
        // `SO_REUSEPORT` would let a second server started on the same port by mistake share it
        // (and half the traffic) silently. A plain bind first fails if the port is taken, by a
        // group like ours too; it also picks the port when 0 was asked for.
        let probe = UdpSocket::bind(config.bind)?;
        let port = probe.local_addr()?.port();
        drop(probe);
        let first = bind_media_socket(SocketAddr::new(config.bind.ip(), port))?;
        let bound = first.local_addr()?;
        let announce_ip = config.announce_ip.unwrap_or(bound.ip());
        if announce_ip.is_unspecified() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "media.announce_ip must be set when media.bind is 0.0.0.0 or ::",
            ));
        }
        let local_addr = SocketAddr::new(announce_ip, bound.port());
        let tcp_listener = match &config.tcp {
            Some(t) => {
                let l = std::net::TcpListener::bind(SocketAddr::new(config.bind.ip(), t.port))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let tcp_addr = match &tcp_listener {
            Some(l) => Some(SocketAddr::new(announce_ip, l.local_addr()?.port())),
            None => None,
        };
        let mut sockets = vec![first];
        for _ in 1..n {
            sockets.push(bind_media_socket(bound)?);
        }
        let routes = Arc::new(Routes::default());
        let mut polls = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = mio::Poll::new()?;
            let (handle, rx) = driver::Handle::new(&poll, driver::HANDOVER_QUEUE)?;
            polls.push(poll);
            handles.push(handle);
            receivers.push(rx);
        }
        let handles: Arc<[driver::Handle]> = handles.into();
        for (index, ((socket, poll), rx)) in
            sockets.into_iter().zip(polls).zip(receivers).enumerate()
        {
            let w = driver::Worker::new(
                index,
                mio::net::UdpSocket::from_std(socket),
                local_addr,
                tcp_addr,
                routes.clone(),
                handles.clone(),
                config.unknown_sources,
            );
            std::thread::Builder::new()
                .name(format!("sfu-worker-{index}"))
                .spawn(move || w.run(poll, rx))?;
        }
        let tcp_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let (Some(listener), Some(settings)) = (tcp_listener, config.tcp.clone()) {
            let poll = mio::Poll::new()?;
            let workers = handles.clone();
            let (routes, stop) = (routes.clone(), tcp_stop.clone());
            let per_ip = Arc::new(tcp::PerIp::default());
            std::thread::Builder::new()
                .name("sfu-tcp-accept".into())
                .spawn(move || {
                    tcp::run_acceptor(
                        mio::net::TcpListener::from_std(listener),
                        poll,
                        settings,
                        routes,
                        per_ip,
                        stop,
                        |identified| {
                            let _ = workers[identified.key.worker]
                                .send(driver::Command::Tcp(identified));
                        },
                    )
                })?;
        }
        tracing::info!(%local_addr, ?tcp_addr, workers = n, "media plane started");
        Ok(Sfu {
            inner: Arc::new(Inner {
                local_addr,
                tcp_addr,
                tcp_stop,
                workers: handles,
                participants: DashMap::new(),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// The address announced in ICE candidates (announce IP, bound port).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address announced in the ICE-TCP candidate (announce IP, TCP port), when on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.tcp_addr
    }

    fn worker_for(&self, consultation: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        consultation.hash(&mut h);
        (h.finish() % self.inner.workers.len() as u64) as usize
    }

    fn send(&self, key: ParticipantKey, command: driver::Command) -> Result<(), SfuError> {
        self.inner.workers[key.worker].send(command)
    }

    fn key(&self, participant: &str) -> Result<ParticipantKey, SfuError> {
        self.inner
            .participants
            .get(participant)
            .map(|k| *k)
            .ok_or(SfuError::UnknownParticipant)
    }

    /// Create the media session of an admitted participant. Its first [`SfuEvent::Offer`] follows
    /// on `events`, offering to receive its audio and video and to send it every track already
    /// published in the consultation.
    pub async fn add_participant(
        &self,
        consultation: &str,
        participant: &str,
        events: EventSender<SfuEvent>,
    ) -> Result<(), SfuError> {
        let key = ParticipantKey {
            worker: self.worker_for(consultation),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        };
        match self.inner.participants.entry(participant.to_string()) {
            dashmap::Entry::Occupied(_) => return Err(SfuError::AlreadyExists),
            dashmap::Entry::Vacant(v) => {
                v.insert(key);
            }
        }
        let (reply, rx) = oneshot::channel();
        let sent = self.send(
            key,
            driver::Command::Add {
                key,
                consultation: consultation.to_string(),
                participant: participant.to_string(),
                events,
                reply,
            },
        );
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Err(SfuError::Stopped)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.inner.participants.remove(participant);
        }
        result
    }

    /// Apply the client's answer to our last offer.
    pub async fn apply_answer(&self, participant: &str, sdp: String) -> Result<(), SfuError> {
        let key = self.key(participant)?;
        let (reply, rx) = oneshot::channel();
        self.send(key, driver::Command::Answer { key, sdp, reply })?;
        rx.await.unwrap_or(Err(SfuError::Stopped))
    }

    /// Add a trickled remote candidate (`None`: end of candidates).
    pub async fn add_remote_candidate(
        &self,
        participant: &str,
        candidate: Option<Candidate>,
    ) -> Result<(), SfuError> {
        let key = self.key(participant)?;
        let (reply, rx) = oneshot::channel();
        self.send(
            key,
            driver::Command::Candidate {
                key,
                candidate,
                reply,
            },
        )?;
        rx.await.unwrap_or(Err(SfuError::Stopped))
    }

    /// Restart ICE on a participant's session (its network changed, or ICE failed): a new
    /// [`SfuEvent::Offer`] with new ICE credentials follows on its channel; DTLS, its tracks and
    /// its subscriptions stay.
    pub async fn restart_ice(&self, participant: &str) -> Result<(), SfuError> {
        let key = self.key(participant)?;
        let (reply, rx) = oneshot::channel();
        self.send(key, driver::Command::IceRestart { key, reply })?;
        rx.await.unwrap_or(Err(SfuError::Stopped))
    }

    /// The participant shows the video it receives as `track_id` in a tile `height` device
    /// pixels high (`video_size` in the signalling protocol): simulcast gives it the smallest
    /// layer that fills the tile. Unknown tracks are ignored. (Answered once applied, like every
    /// command: a client cannot queue more of them than it waits for.)
    pub async fn set_video_size(
        &self,
        participant: &str,
        track_id: String,
        height: u32,
    ) -> Result<(), SfuError> {
        let key = self.key(participant)?;
        let (reply, rx) = oneshot::channel();
        self.send(
            key,
            driver::Command::VideoSize {
                key,
                track_id,
                height,
                reply,
            },
        )?;
        rx.await.unwrap_or(Err(SfuError::Stopped))
    }

    /// Close a participant's media session; its tracks are withdrawn from the others.
    pub fn remove_participant(&self, participant: &str) {
        if let Some((_, key)) = self.inner.participants.remove(participant) {
            let _ = self.send(key, driver::Command::Remove { key });
        }
    }

    /// Record `consultation`'s tracks (VP8 and Opus, each published now or later) into
    /// `sink`, until [`Sfu::stop_recording`]. Taps never block the worker (see
    /// `core/recording.rs`).
    pub fn start_recording(
        &self,
        consultation: &str,
        sink: Arc<dyn RecordingSink>,
    ) -> Result<(), SfuError> {
        self.inner.workers[self.worker_for(consultation)].send(driver::Command::StartRecording {
            consultation: consultation.to_string(),
            sink,
        })
    }

    /// Stop recording `consultation`: its taps go (what they queued stays with the sink).
    pub fn stop_recording(&self, consultation: &str) -> Result<(), SfuError> {
        self.inner.workers[self.worker_for(consultation)].send(driver::Command::StopRecording {
            consultation: consultation.to_string(),
        })
    }

    /// Whether the participant has a media session.
    pub fn has_participant(&self, participant: &str) -> bool {
        self.inner.participants.contains_key(participant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16) -> SfuConfig {
        SfuConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], port)),
            announce_ip: None,
            workers: 2,
            tcp: None,
            unknown_sources: Default::default(),
        }
    }

    #[test]
    fn a_second_server_cannot_share_the_media_port() {
        let first = Sfu::start(config(0)).expect("first media plane");
        let port = first.local_addr().port();
        assert_ne!(port, 0);
        let second = Sfu::start(config(port));
        assert_eq!(
            second.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse),
            "a second media plane on port {port} must fail, not split the traffic"
        );
        drop(first);
    }

    /// A session whose event channel is full: the worker never waits for it. When one slot is
    /// left, `Failed` takes it and the session is closed; another session on the same worker
    /// goes on.
    #[tokio::test]
    async fn a_session_whose_events_are_not_read_fails_and_the_others_go_on() {
        let sfu = Sfu::start(SfuConfig {
            workers: 1,
            ..config(0)
        })
        .expect("media plane");
        // Room for one event only: the offer would leave none for a failure, so `Failed` takes
        // the slot instead and the session is closed at once (a full channel, in short).
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        sfu.add_participant("c", "alice", tx).await.expect("added");
        let (bob_tx, mut bob_rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        sfu.add_participant("c", "bob", bob_tx)
            .await
            .expect("added");
        assert_eq!(rx.try_recv().ok(), Some(SfuEvent::Failed));
        // The session is gone from its worker.
        assert_eq!(
            sfu.restart_ice("alice").await,
            Err(SfuError::UnknownParticipant)
        );
        // Closed: nothing more ever comes (the worker dropped its sender).
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("closed")
                .is_none()
        );
        // Bob's session, on the same worker, is untouched.
        assert!(matches!(bob_rx.recv().await, Some(SfuEvent::Offer(_))));
        sfu.restart_ice("bob")
            .await
            .expect("bob's session is there");
    }

    /// A worker thread that panics (injected: `Command::Panic` exists in test builds only)
    /// fails its own sessions — each told `Failed` — is counted, and the other worker's
    /// sessions go on; new work for the dead worker is refused with `Stopped`, not hung.
    #[tokio::test]
    async fn a_panicking_worker_fails_its_sessions_and_the_other_worker_goes_on() {
        let sfu = Sfu::start(config(0)).expect("media plane");
        // Two consultations on different workers.
        let a = "c-panics".to_string();
        let b = (0..)
            .map(|i| format!("c-survives-{i}"))
            .find(|c| sfu.worker_for(c) != sfu.worker_for(&a))
            .unwrap();
        let (tx, mut doomed) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        sfu.add_participant(&a, "alice", tx).await.expect("added");
        let (tx, mut survivor) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        sfu.add_participant(&b, "bob", tx).await.expect("added");
        assert!(matches!(doomed.recv().await, Some(SfuEvent::Offer(_))));
        assert!(matches!(survivor.recv().await, Some(SfuEvent::Offer(_))));
        let before = metrics::WORKER_PANICS.load(Ordering::Relaxed);

        let dead = sfu.worker_for(&a);
        sfu.inner.workers[dead]
            .send(driver::Command::Panic)
            .expect("queued");
        let told = tokio::time::timeout(std::time::Duration::from_secs(5), doomed.recv())
            .await
            .expect("told in time");
        assert_eq!(told, Some(SfuEvent::Failed));
        assert_eq!(metrics::WORKER_PANICS.load(Ordering::Relaxed), before + 1);
        // Work for the dead worker is refused at once.
        assert_eq!(
            sfu.restart_ice("alice").await,
            Err(SfuError::Stopped),
            "refused, not hung"
        );
        // The other worker goes on: bob's session answers, a new session starts there.
        sfu.restart_ice("bob").await.expect("bob's worker is alive");
        let (tx, mut carol) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        sfu.add_participant(&b, "carol", tx).await.expect("added");
        assert!(matches!(carol.recv().await, Some(SfuEvent::Offer(_))));
    }

    /// A STUN binding request whose USERNAME is `<ours>:<theirs>`.
    fn binding_request(ours: &str) -> Vec<u8> {
        let username = format!("{ours}:client");
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn routes_learn_a_participants_address_from_its_binding_request_and_forget_it() {
        let routes = Routes::default();
        let alice = ParticipantKey { worker: 1, id: 7 };
        let bob = ParticipantKey { worker: 0, id: 8 };
        routes.by_ufrag.insert("aliceufrag".into(), alice);
        routes.by_ufrag.insert("bobufrag".into(), bob);
        let a1: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let a2: SocketAddr = "198.51.100.1:5001".parse().unwrap();
        let media = [0x80u8; 40];
        // Media before any check: nobody's.
        assert_eq!(routes.lookup(&media, a1), None);
        assert_eq!(
            routes.lookup(&binding_request("aliceufrag"), a1),
            Some(alice)
        );
        assert_eq!(routes.lookup(&media, a1), Some(alice));
        // An unknown ufrag teaches nothing.
        assert_eq!(routes.lookup(&binding_request("nobody"), a2), None);
        assert_eq!(routes.lookup(&media, a2), None);
        // A check naming another participant moves the address (a NAT rebinding).
        assert_eq!(routes.lookup(&binding_request("bobufrag"), a1), Some(bob));
        assert_eq!(routes.lookup(&media, a1), Some(bob));
        routes.forget(bob, "bobufrag");
        assert_eq!(routes.lookup(&media, a1), None);
        assert_eq!(routes.lookup(&binding_request("bobufrag"), a1), None);
        assert_eq!(
            routes.lookup(&binding_request("aliceufrag"), a2),
            Some(alice)
        );
    }
}
