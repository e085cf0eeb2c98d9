//! A media worker's driver: one thread, one socket on the shared media port (read by this
//! thread itself), a mio poll loop, and a [`Core`] that holds the consultations. The driver does
//! the I/O and nothing else: it reads datagrams (taking the one `Instant::now()` per datagram),
//! routes them by ICE ufrag or remote address (passing those of other workers' participants to
//! their channel), feeds commands and timers to the core, sends what the core queued with one
//! `sendmmsg` per batch, and forwards the core's events to each participant's channel.

use crate::core::Core;
use crate::metrics::ReadCounters;
use crate::sendq::FLUSH_AT;
use crate::{Candidate, ParticipantKey, Routes, SfuError, SfuEvent};
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
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

/// The way into a worker from other threads: its command channel and the waker of its poll loop.
pub struct Handle {
    tx: mpsc::Sender<Command>,
    waker: mio::Waker,
    closed: AtomicBool,
}

impl Handle {
    pub fn new(poll: &mio::Poll) -> std::io::Result<(Handle, mpsc::Receiver<Command>)> {
        let (tx, rx) = mpsc::channel();
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        Ok((
            Handle {
                tx,
                waker,
                closed: AtomicBool::new(false),
            },
            rx,
        ))
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
        events: UnboundedSender<SfuEvent>,
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
}

/// What the driver keeps per participant: its routing key and where its events go.
struct Link {
    ufrag: String,
    events: UnboundedSender<SfuEvent>,
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
}

impl Worker {
    pub fn new(
        index: usize,
        socket: mio::net::UdpSocket,
        local_addr: SocketAddr,
        routes: Arc<Routes>,
        workers: Arc<[Handle]>,
    ) -> Worker {
        let to_wake = vec![false; workers.len()];
        Worker {
            index,
            socket,
            routes,
            workers,
            to_wake,
            core: Core::new(local_addr),
            links: HashMap::new(),
        }
    }

    pub fn run(mut self, mut poll: mio::Poll, rx: mpsc::Receiver<Command>) {
        let _span = tracing::info_span!("sfu_worker", index = self.index).entered();
        if let Err(e) = poll
            .registry()
            .register(&mut self.socket, SOCKET, mio::Interest::READABLE)
        {
            tracing::error!(error = %e, "cannot watch the media socket; worker not started");
            return;
        }
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
            if events.iter().any(|e| e.token() == SOCKET) {
                readable = true;
            }
            if self.workers[self.index].closed.load(Ordering::Acquire) {
                break;
            }
            // Commands (and datagrams handed over by other workers) first, a bounded number so
            // our own socket still gets its turn: an answer must not wait behind media.
            let mut queued = true;
            for _ in 0..COMMAND_BUDGET {
                match rx.try_recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => {
                        queued = false;
                        break;
                    }
                }
            }
            if readable {
                readable = self.read_datagrams(&mut buf, &counters);
            }
            // Anything left over is handled on the next turn without sleeping.
            readable |= queued;
            // Fires only what is due (a scan at timer granularity, not per datagram).
            self.core.handle_timeout(Instant::now());
            self.dispatch_events();
            self.core.transmits().flush(&self.socket);
        }
        self.core.close(Instant::now());
        self.dispatch_events();
        self.core.transmits().flush(&self.socket);
        for (id, link) in self.links.drain() {
            let key = ParticipantKey {
                worker: self.index,
                id,
            };
            self.routes.forget(key, &link.ufrag);
        }
    }

    /// Pass the core's events to each participant's channel.
    fn dispatch_events(&mut self) {
        while let Some((key, event)) = self.core.poll_event() {
            if let Some(link) = self.links.get(&key) {
                let _ = link.events.send(event);
            }
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
            let data = &buf[..n];
            let Some(key) = self.routes.lookup(data, from) else {
                counters.unknown.increment(1);
                continue;
            };
            // A pooled buffer: the core gives it back once the packet is forwarded.
            let mut packet = self.core.transmits().buffer();
            packet.extend_from_slice(data);
            if key.worker == self.index {
                self.core.handle_datagram(at, key.id, from, packet);
                let out = self.core.transmits();
                if out.len() >= FLUSH_AT {
                    out.flush(&self.socket);
                }
            } else if self.workers[key.worker]
                .queue(Command::Datagram {
                    key,
                    from,
                    at,
                    data: packet,
                })
                .is_ok()
            {
                self.to_wake[key.worker] = true;
                counters.handed_over.increment(1);
            }
        }
        self.core.transmits().flush(&self.socket);
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
            }
        }
    }
}
