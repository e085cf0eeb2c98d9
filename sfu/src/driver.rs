//! A media worker's driver: one thread, one socket on the shared media port (read by this
//! thread itself), a mio poll loop, and a [`Core`] that holds the consultations. The driver does
//! the I/O and nothing else: it reads datagrams (taking the one `Instant::now()` per datagram),
//! routes them by ICE ufrag or remote address (passing those of other workers' participants to
//! their channel), feeds commands and timers to the core, sends what the core queued with one
//! `sendmmsg` per batch, and forwards the core's events to each participant's channel.

use crate::core::Core;
use crate::metrics::ReadCounters;
use crate::sendq::FLUSH_AT;
use crate::tcp::{FrameDecoder, Identified, Slot, TcpOut};
use crate::unknown::{UnknownSourceLimits, UnknownSources, Verdict};
use crate::{Candidate, ParticipantKey, Routes, SfuError, SfuEvent};
use bytes::BytesMut;
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender as EventSender;
use tokio::sync::oneshot;

/// Longest a worker sleeps when nothing is scheduled.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// Largest datagram we read; anything longer is truncated and rejected by the stack.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per wake-up before commands and timers get a turn.
const READ_BUDGET: usize = 64;
/// Channel inputs handled per wake-up.
const COMMAND_BUDGET: usize = 256;
const SOCKET: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);
/// ICE-TCP streams get tokens from here on.
const FIRST_TCP: usize = 2;
/// Bytes read from one ICE-TCP stream per wake-up before the others get a turn.
const TCP_READ_BUDGET: usize = 64 * 1024;

/// Datagrams another worker may have queued for this one, at most. The network sets their
/// rate, so they are bounded and dropped (counted, reason `handover_full`) when the owner falls
/// that far behind (about 6 MiB of pooled buffers at most); the reading worker never waits.
pub const HANDOVER_QUEUE: usize = 4096;

/// The way into a worker from other threads: its command channel, the bounded queue of
/// datagrams handed over by the other workers, and the waker of its poll loop.
///
/// Commands stay on an unbounded channel, bounded by construction: each comes from a signalling
/// message (rate-limited per connection, `signaling.messages_per_second`, connections limited)
/// and every one that replies is awaited by its caller before the next, or from the ICE-TCP
/// acceptor (bounded by `media.tcp_max_per_ip` and its cap of unidentified streams).
pub struct Handle {
    tx: mpsc::Sender<Command>,
    datagrams: mpsc::SyncSender<Command>,
    waker: mio::Waker,
    closed: AtomicBool,
}

/// What a worker reads from its [`Handle`].
pub struct Inbox {
    commands: mpsc::Receiver<Command>,
    datagrams: mpsc::Receiver<Command>,
}

impl Handle {
    pub fn new(poll: &mio::Poll, handover: usize) -> std::io::Result<(Handle, Inbox)> {
        let (tx, commands) = mpsc::channel();
        let (datagrams, datagrams_rx) = mpsc::sync_channel(handover);
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        Ok((
            Handle {
                tx,
                datagrams,
                waker,
                closed: AtomicBool::new(false),
            },
            Inbox {
                commands,
                datagrams: datagrams_rx,
            },
        ))
    }

    /// Queue a datagram read by another worker, without waiting: `false` when the queue is full
    /// (or the worker gone) and it was dropped.
    fn hand_over(&self, datagram: Command) -> bool {
        self.datagrams.try_send(datagram).is_ok()
    }

    /// Queue `command` and wake the worker.
    pub fn send(&self, command: Command) -> Result<(), SfuError> {
        self.queue(command)?;
        let _ = self.waker.wake();
        Ok(())
    }

    /// Queue without waking (the caller wakes once for a batch).
    fn queue(&self, command: Command) -> Result<(), SfuError> {
        self.tx.send(command).map_err(|_| SfuError::Stopped)
    }

    /// Ask the worker to close every session and end.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

/// What other threads ask of a worker.
pub enum Command {
    /// A datagram another worker read for one of our participants.
    Datagram {
        key: ParticipantKey,
        from: SocketAddr,
        at: Instant,
        data: BytesMut,
    },
    Add {
        key: ParticipantKey,
        consultation: String,
        participant: String,
        events: EventSender<SfuEvent>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Answer {
        key: ParticipantKey,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Candidate {
        key: ParticipantKey,
        candidate: Option<Candidate>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Remove {
        key: ParticipantKey,
    },
    /// Restart ICE (new credentials, a new offer).
    IceRestart {
        key: ParticipantKey,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    /// An ICE-TCP stream whose first binding request named one of our participants.
    Tcp(Identified),
    /// Record the consultation's tracks into `sink` (`core/recording.rs`).
    StartRecording {
        consultation: String,
        sink: Arc<dyn crate::core::recording::RecordingSink>,
    },
    StopRecording {
        consultation: String,
    },
    /// Tests only: make the worker panic (a stand-in for a bug), never in a production build.
    #[cfg(test)]
    Panic,
    /// The tile size a subscriber shows one of its videos at.
    VideoSize {
        key: ParticipantKey,
        track_id: String,
        height: u32,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
}

/// One ICE-TCP stream owned by this worker (see `tcp.rs`).
struct TcpConn {
    participant: u64,
    stream: mio::net::TcpStream,
    token: mio::Token,
    decoder: FrameDecoder,
    out: TcpOut,
    /// Registered for writable (the kernel buffer was full).
    waiting_writable: bool,
    _slot: Slot,
}

/// What the driver keeps per participant: its routing key and where its events go.
struct Link {
    ufrag: String,
    events: EventSender<SfuEvent>,
}

impl Link {
    /// Whether an event other than the last (`Failed`) still fits: one slot is kept for it.
    fn accepts_more(&self) -> bool {
        self.events.capacity() > 1 || self.events.is_closed()
    }
}

pub struct Worker {
    index: usize,
    socket: mio::net::UdpSocket,
    routes: Arc<Routes>,
    /// Every worker's handle (ours included), to pass on datagrams of their participants.
    workers: Arc<[Handle]>,
    /// Workers that were passed datagrams in this read batch and must be woken.
    to_wake: Vec<bool>,
    core: Core,
    links: HashMap<u64, Link>,
    /// ICE-TCP streams by remote address (where the core sends), and their tokens.
    tcp: HashMap<SocketAddr, TcpConn>,
    tcp_tokens: HashMap<mio::Token, SocketAddr>,
    next_tcp_token: usize,
    /// Streams with bytes queued since the last write.
    tcp_dirty: Vec<SocketAddr>,
    registry: Option<mio::Registry>,
    /// Sources that are no participant's, and which of them are ignored for a while.
    unknown: UnknownSources,
}

impl Worker {
    pub fn new(
        index: usize,
        socket: mio::net::UdpSocket,
        local_addr: SocketAddr,
        tcp_addr: Option<SocketAddr>,
        routes: Arc<Routes>,
        workers: Arc<[Handle]>,
        unknown: UnknownSourceLimits,
    ) -> Worker {
        let to_wake = vec![false; workers.len()];
        let mut core = Core::new(local_addr);
        core.set_tcp_addr(tcp_addr);
        Worker {
            index,
            socket,
            routes,
            workers,
            to_wake,
            core,
            links: HashMap::new(),
            tcp: HashMap::new(),
            tcp_tokens: HashMap::new(),
            next_tcp_token: FIRST_TCP,
            tcp_dirty: Vec::new(),
            registry: None,
            unknown: UnknownSources::new(unknown),
        }
    }

    pub fn run(mut self, mut poll: mio::Poll, inbox: Inbox) {
        let _span = tracing::info_span!("sfu_worker", index = self.index).entered();
        if let Err(e) = poll
            .registry()
            .register(&mut self.socket, SOCKET, mio::Interest::READABLE)
        {
            tracing::error!(error = %e, "cannot watch the media socket; worker not started");
            return;
        }
        self.registry = poll.registry().try_clone().ok();
        // A panic here is a bug (errors from input are values, never panics); should one happen
        // anyway, only this worker's sessions go: each is told `Failed` (its client hears
        // `media_failed`), it is counted, and the worker ends (commands to it then fail with
        // `Stopped`). The state a panic left half-changed is not touched again.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.serve(&mut poll, &inbox);
        }));
        if served.is_err() {
            crate::metrics::worker_panicked();
            tracing::error!("media worker panicked: its media sessions are failed");
            for (id, link) in self.links.drain() {
                let _ = link.events.try_send(SfuEvent::Failed);
                let key = ParticipantKey {
                    worker: self.index,
                    id,
                };
                self.routes.forget(key, &link.ufrag);
            }
            return;
        }
        self.core.close(Instant::now());
        self.dispatch_events();
        self.flush();
        for (id, link) in self.links.drain() {
            let key = ParticipantKey {
                worker: self.index,
                id,
            };
            self.routes.forget(key, &link.ufrag);
        }
    }

    /// The worker's loop, until it is told to close.
    fn serve(&mut self, poll: &mut mio::Poll, inbox: &Inbox) {
        let counters = ReadCounters::new();
        let mut events = mio::Events::with_capacity(16);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Readiness is edge-triggered: once readable, read until the socket says `WouldBlock`.
        // Also set when channel inputs are left over: either way the next poll does not sleep.
        let mut readable = true;
        loop {
            let deadline = self.core.poll_timeout();
            let now = Instant::now();
            let wait = if readable {
                Duration::ZERO
            } else {
                deadline
                    .map_or(IDLE_WAIT, |t| t.saturating_duration_since(now))
                    .min(IDLE_WAIT)
            };
            if let Err(e) = poll.poll(&mut events, Some(wait))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "media worker poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            for e in events.iter() {
                match e.token() {
                    SOCKET => readable = true,
                    WAKE => {}
                    token => self.tcp_ready(token, e.is_readable(), e.is_writable()),
                }
            }
            if self.workers[self.index].closed.load(Ordering::Acquire) {
                break;
            }
            // Commands (and datagrams handed over by other workers) first, a bounded number so
            // our own socket still gets its turn: an answer must not wait behind media.
            let mut queued = false;
            for rx in [&inbox.commands, &inbox.datagrams] {
                let mut left = true;
                for _ in 0..COMMAND_BUDGET {
                    match rx.try_recv() {
                        Ok(command) => self.handle(command),
                        Err(_) => {
                            left = false;
                            break;
                        }
                    }
                }
                queued |= left;
            }
            if readable {
                readable = self.read_datagrams(&mut buf, &counters);
            }
            // Anything left over is handled on the next turn without sleeping.
            readable |= queued;
            // Fires only what is due (a scan at timer granularity, not per datagram).
            self.core.handle_timeout(Instant::now());
            self.dispatch_events();
            self.flush();
        }
    }

    /// Pass the core's events to each participant's channel (bounded: [`crate::EVENT_QUEUE`]).
    /// The worker never waits for a reader: when only one slot is left in a participant's
    /// channel, [`SfuEvent::Failed`] takes it and the media session is closed and counted, as
    /// if its connection had failed (the reader reports that as usual); nobody else is affected.
    fn dispatch_events(&mut self) {
        let mut overflowed = Vec::new();
        loop {
            while let Some((key, event)) = self.core.poll_event() {
                if let Some(link) = self.links.get(&key) {
                    if !link.accepts_more() {
                        let _ = link.events.try_send(SfuEvent::Failed);
                        overflowed.push(key);
                    } else {
                        let _ = link.events.try_send(event);
                    }
                }
            }
            if overflowed.is_empty() {
                return;
            }
            for id in overflowed.drain(..) {
                // Unlinked first: nothing more is queued for it.
                let Some(link) = self.links.remove(&id) else {
                    continue;
                };
                crate::metrics::event_overflow();
                tracing::warn!(
                    participant_key = id,
                    "media session events not read: closed"
                );
                let key = ParticipantKey {
                    worker: self.index,
                    id,
                };
                self.routes.forget(key, &link.ufrag);
                self.core.remove_participant(Instant::now(), id);
                self.close_tcp_of(id);
            }
        }
    }

    /// Close every ICE-TCP stream of participant `id`.
    fn close_tcp_of(&mut self, id: u64) {
        let gone: Vec<SocketAddr> = self
            .tcp
            .iter()
            .filter(|(_, c)| c.participant == id)
            .map(|(a, _)| *a)
            .collect();
        for addr in gone {
            self.close_tcp(addr);
        }
    }

    /// Read up to [`READ_BUDGET`] datagrams and handle each on the spot, or pass it to the worker
    /// owning its participant. Returns whether the socket may still hold more.
    ///
    /// One `recvfrom` per datagram: `recvmmsg` was tried (fewer system calls, by a third) and
    /// measured no cheaper per packet here (`docs/benchmarks.md`), so the simpler call stays.
    fn read_datagrams(&mut self, buf: &mut [u8], counters: &ReadCounters) -> bool {
        let mut more = true;
        for _ in 0..READ_BUDGET {
            let (n, from) = match self.socket.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                // ICMP errors echoed back (port unreachable) and signals: the next read goes on.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "media socket read failed");
                    more = false;
                    break;
                }
            };
            let at = Instant::now();
            if self.unknown.is_ignored(from, at) {
                counters.ignored.increment(1);
                continue;
            }
            let data = &buf[..n];
            let Some(key) = self.routes.lookup(data, from) else {
                counters.unknown.increment(1);
                if self.unknown.record(from, at) == Verdict::NowIgnored {
                    counters.sources_ignored.increment(1);
                }
                continue;
            };
            // A pooled buffer: the core gives it back once the packet is forwarded.
            let mut packet = self.core.transmits().buffer();
            packet.extend_from_slice(data);
            if key.worker == self.index {
                self.core.handle_datagram(at, key.id, from, packet);
                if self.core.transmits().len() >= FLUSH_AT {
                    self.flush();
                }
            } else if self.workers[key.worker].hand_over(Command::Datagram {
                key,
                from,
                at,
                data: packet,
            }) {
                self.to_wake[key.worker] = true;
                counters.handed_over.increment(1);
            } else {
                counters.handover_full.increment(1);
            }
        }
        self.flush();
        self.dispatch_events();
        for (w, wake) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                let _ = self.workers[w].waker.wake();
            }
        }
        more
    }

    fn handle(&mut self, command: Command) {
        match command {
            #[cfg(test)]
            Command::Panic => panic!("a media worker panic injected by a test"),
            Command::Datagram {
                key,
                from,
                at,
                data,
            } => self.core.handle_datagram(at, key.id, from, data),
            Command::Add {
                key,
                consultation,
                participant,
                events,
                reply,
            } => {
                let result =
                    self.core
                        .add_participant(Instant::now(), key.id, &consultation, &participant);
                let result = result.map(|ufrag| {
                    self.routes.by_ufrag.insert(ufrag.clone(), key);
                    self.links.insert(key.id, Link { ufrag, events });
                });
                // The offer reaches the participant's channel before the reply.
                self.dispatch_events();
                let _ = reply.send(result);
            }
            Command::Answer { key, sdp, reply } => {
                let result = self.core.apply_answer(Instant::now(), key.id, sdp);
                self.dispatch_events();
                let _ = reply.send(result);
            }
            Command::Candidate {
                key,
                candidate,
                reply,
            } => {
                let result = self
                    .core
                    .add_remote_candidate(Instant::now(), key.id, candidate);
                self.dispatch_events();
                let _ = reply.send(result);
            }
            Command::Remove { key } => {
                self.core.remove_participant(Instant::now(), key.id);
                self.dispatch_events();
                if let Some(link) = self.links.remove(&key.id) {
                    self.routes.forget(key, &link.ufrag);
                }
                self.close_tcp_of(key.id);
            }
            Command::Tcp(identified) => self.adopt_tcp(identified),
            Command::VideoSize {
                key,
                track_id,
                height,
                reply,
            } => {
                self.core
                    .set_video_size(Instant::now(), key.id, &track_id, height);
                let _ = reply.send(Ok(()));
            }
            Command::IceRestart { key, reply } => {
                let result = self.core.restart_ice(Instant::now(), key.id).map(|ufrag| {
                    self.routes.by_ufrag.insert(ufrag, key);
                });
                self.dispatch_events();
                let _ = reply.send(result);
            }
            Command::StartRecording { consultation, sink } => {
                self.core
                    .start_recording(Instant::now(), &consultation, sink);
            }
            Command::StopRecording { consultation } => {
                self.core.stop_recording(&consultation);
            }
        }
    }

    /// Send what the core queued: datagrams on the UDP socket, frames to ICE-TCP streams (by
    /// remote address), then write the streams that got bytes.
    fn flush(&mut self) {
        let tcp = &mut self.tcp;
        let dirty = &mut self.tcp_dirty;
        if tcp.is_empty() {
            self.core.transmits().flush(&self.socket);
        } else {
            self.core
                .transmits()
                .flush_diverting(&self.socket, |to, data| match tcp.get_mut(&to) {
                    Some(conn) => {
                        let was_empty = conn.out.is_empty();
                        conn.out.push(data);
                        if was_empty {
                            dirty.push(to);
                        }
                        true
                    }
                    None => false,
                });
        }
        let mut dirty = std::mem::take(&mut self.tcp_dirty);
        for addr in dirty.drain(..) {
            self.write_tcp(addr);
        }
        self.tcp_dirty = dirty;
    }

    fn adopt_tcp(&mut self, identified: Identified) {
        let Identified {
            key,
            mut stream,
            from,
            decoder,
            slot,
        } = identified;
        if !self.core.has_participant(key.id) || self.tcp.contains_key(&from) {
            return;
        }
        let Some(registry) = &self.registry else {
            return;
        };
        let token = mio::Token(self.next_tcp_token);
        self.next_tcp_token = self.next_tcp_token.wrapping_add(1).max(FIRST_TCP);
        if registry
            .register(&mut stream, token, mio::Interest::READABLE)
            .is_err()
        {
            return;
        }
        let _ = stream.set_nodelay(true);
        self.tcp_tokens.insert(token, from);
        self.tcp.insert(
            from,
            TcpConn {
                participant: key.id,
                stream,
                token,
                decoder,
                out: TcpOut::default(),
                waiting_writable: false,
                _slot: slot,
            },
        );
        // The identifying request (and whatever followed it) is already in the decoder.
        self.read_tcp(from, Instant::now(), false);
        self.flush();
        self.dispatch_events();
    }

    fn tcp_ready(&mut self, token: mio::Token, readable: bool, writable: bool) {
        let Some(&addr) = self.tcp_tokens.get(&token) else {
            return;
        };
        if writable {
            self.write_tcp(addr);
        }
        if readable {
            self.read_tcp(addr, Instant::now(), true);
            self.flush();
            self.dispatch_events();
        }
    }

    /// Read what the stream has (up to a budget: edge-triggered, so a stream with more left
    /// is read again at once on the next turn via a re-registration), and hand each frame to
    /// the core.
    fn read_tcp(&mut self, addr: SocketAddr, at: Instant, from_socket: bool) {
        let mut buf = [0u8; 4096];
        let mut read = 0;
        let mut close = false;
        loop {
            if self.core.transmits().len() >= FLUSH_AT {
                self.flush();
            }
            let Some(conn) = self.tcp.get_mut(&addr) else {
                return;
            };
            loop {
                match conn.decoder.next_frame() {
                    Ok(Some(frame)) => {
                        let mut packet = self.core.transmits().buffer();
                        packet.extend_from_slice(frame);
                        conn.decoder.consume();
                        let participant = conn.participant;
                        self.core.handle_tcp_frame(at, participant, addr, packet);
                        break;
                    }
                    Ok(None) => {
                        if !from_socket || read >= TCP_READ_BUDGET {
                            if read >= TCP_READ_BUDGET {
                                // Readiness is edge-triggered: ask again so the rest is read.
                                if let Some(r) = &self.registry {
                                    let interest = if conn.waiting_writable {
                                        mio::Interest::READABLE | mio::Interest::WRITABLE
                                    } else {
                                        mio::Interest::READABLE
                                    };
                                    let _ = r.reregister(&mut conn.stream, conn.token, interest);
                                }
                            }
                            return;
                        }
                        match conn.stream.read(&mut buf) {
                            Ok(0) => close = true,
                            Ok(n) => {
                                read += n;
                                conn.decoder.extend(&buf[..n]);
                                continue;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(_) => close = true,
                        }
                        break;
                    }
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            if close {
                self.close_tcp(addr);
                return;
            }
        }
    }

    fn write_tcp(&mut self, addr: SocketAddr) {
        let Some(conn) = self.tcp.get_mut(&addr) else {
            return;
        };
        if conn.out.overflowed {
            self.close_tcp(addr);
            return;
        }
        match conn.out.write_to(&mut conn.stream) {
            Ok(done) => {
                if done == conn.waiting_writable {
                    conn.waiting_writable = !done;
                    let interest = if done {
                        mio::Interest::READABLE
                    } else {
                        mio::Interest::READABLE | mio::Interest::WRITABLE
                    };
                    if let Some(r) = &self.registry {
                        let _ = r.reregister(&mut conn.stream, conn.token, interest);
                    }
                }
            }
            Err(_) => self.close_tcp(addr),
        }
    }

    fn close_tcp(&mut self, addr: SocketAddr) {
        if let Some(mut conn) = self.tcp.remove(&addr) {
            self.tcp_tokens.remove(&conn.token);
            if let Some(r) = &self.registry {
                let _ = r.deregister(&mut conn.stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue of datagrams handed over to a worker is bounded: when it is full, the reading
    /// worker drops (and counts) instead of waiting or growing it; commands still get through.
    #[test]
    fn a_full_handover_queue_drops_datagrams_and_commands_still_pass() {
        let poll = mio::Poll::new().unwrap();
        let (handle, inbox) = Handle::new(&poll, 2).unwrap();
        let datagram = || Command::Datagram {
            key: ParticipantKey { worker: 0, id: 1 },
            from: "127.0.0.1:9".parse().unwrap(),
            at: Instant::now(),
            data: BytesMut::from(&[0x80u8; 12][..]),
        };
        assert!(handle.hand_over(datagram()));
        assert!(handle.hand_over(datagram()));
        assert!(!handle.hand_over(datagram()), "a third does not fit");
        handle
            .send(Command::Remove {
                key: ParticipantKey { worker: 0, id: 1 },
            })
            .expect("commands have their own channel");
        assert!(matches!(
            inbox.commands.try_recv(),
            Ok(Command::Remove { .. })
        ));
        assert_eq!(inbox.datagrams.try_iter().count(), 2);
        // Room again once the worker read them.
        assert!(handle.hand_over(datagram()));
    }
}
