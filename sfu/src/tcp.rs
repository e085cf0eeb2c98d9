//! ICE-TCP on one TCP port (RFC 6544 passive candidates, RFC 4571 framing), for networks that
//! drop UDP.
//!
//! - One listener beside the UDP port, on its own thread (`sfu-tcp-accept`). A new connection
//!   must send, within [`TcpSettings::first_message_timeout`], one framed STUN binding request
//!   whose `USERNAME` names one of our participants by our ufrag (the same key as on UDP); then
//!   the stream is handed to the worker owning that participant, and everything on it belongs
//!   to that participant from then on (no routing per frame). Anything else — garbage, a frame
//!   longer than a datagram, an unknown ufrag, silence — closes the connection.
//! - At most [`TcpSettings::max_per_ip`] connections (pending or handed over) per source address,
//!   and [`MAX_PENDING`] pending in all, so one client cannot exhaust our descriptors.
//! - On the worker: `TCP_NODELAY`; frames in go through the same core path as datagrams (our RTP
//!   path demultiplexes RTP/RTCP by first byte, RFC 7983, whatever carried it); frames out are
//!   queued per stream ([`TcpOut`]), bounded: when the queue is full, media (RTP/RTCP) is dropped,
//!   as a congested UDP path would, but STUN and DTLS never are (up to a hard limit, past which
//!   the stream is closed: the client is not reading).
//!
//! The framing is a 2-byte length prefix; it is written here (not with
//! `rtc::shared::tcp_framing`) because we need a bound on frame and buffer size for hostile
//! input, and framing into the stream's queue without a `Vec` per frame.

use crate::{ParticipantKey, Routes};
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest frame accepted: a datagram's worth (what the UDP path reads), so TCP carries nothing
/// UDP would not. A longer declared length closes the connection.
pub const MAX_FRAME: usize = 2048;
/// Pending (not yet identified) connections in all.
pub const MAX_PENDING: usize = 1024;
/// Queued bytes per stream beyond which media is dropped.
pub const MEDIA_QUEUE_BYTES: usize = 256 * 1024;
/// Queued bytes per stream beyond which the stream is closed (STUN/DTLS the client never reads).
pub const HARD_QUEUE_BYTES: usize = 1024 * 1024;

/// ICE-TCP settings (`media.tcp_*`).
#[derive(Clone, Debug)]
pub struct TcpSettings {
    /// TCP port (on the media bind address); 0 picks a free one.
    pub port: u16,
    /// Connections per source IP address, pending or established.
    pub max_per_ip: usize,
    /// Time a new connection has to send its first (identifying) STUN binding request.
    pub first_message_timeout: Duration,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            port: 0,
            max_per_ip: 16,
            first_message_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a stream was closed on its framing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is longer than the limit")]
    TooLong(usize),
    #[error("empty frame")]
    Empty,
}

/// RFC 4571 deframer over untrusted bytes: bounded (never holds more than one maximal frame plus
/// what one read brought), never panics.
#[derive(Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::with_capacity(4096),
        }
    }

    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not a complete frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame (without its length prefix), `None` until one is complete, or why
    /// the stream must be closed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        // The frame stays in place until `consume` (the caller borrows it, no copy).
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        Ok(Some(&self.buf[2..2 + len]))
    }

    /// Consume the frame [`FrameDecoder::next_frame`] returned.
    pub fn consume(&mut self) {
        if self.buf.len() >= 2 {
            let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
            self.buf.advance((2 + len).min(self.buf.len()));
        }
    }
}

/// Whether a datagram is media (RTP/RTCP, RFC 7983: first byte 128–191): what a full queue drops.
fn is_media(data: &[u8]) -> bool {
    data.first().is_some_and(|b| (128..=191).contains(b))
}

/// One stream's outgoing bytes (framed), bounded as the module documentation says.
#[derive(Default)]
pub struct TcpOut {
    buf: BytesMut,
    /// Media frames dropped because the queue was full.
    pub dropped: u64,
    /// The client does not read even STUN/DTLS: close the stream.
    pub overflowed: bool,
}

impl TcpOut {
    /// Queue one datagram, framed. Returns whether it was queued.
    pub fn push(&mut self, data: &[u8]) -> bool {
        if data.is_empty() || data.len() > u16::MAX as usize {
            return false;
        }
        let after = self.buf.len() + 2 + data.len();
        if is_media(data) && after > MEDIA_QUEUE_BYTES {
            self.dropped += 1;
            return false;
        }
        if after > HARD_QUEUE_BYTES {
            self.overflowed = true;
            return false;
        }
        self.buf
            .extend_from_slice(&(data.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(data);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Write as much as the stream takes. `Ok(true)`: all written; `Ok(false)`: the stream is
    /// full (wait for writable); `Err`: the stream is gone.
    pub fn write_to(&mut self, w: &mut impl Write) -> std::io::Result<bool> {
        while !self.buf.is_empty() {
            match w.write(&self.buf) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.buf.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Connections per source address, shared by the acceptor and the workers; a [`Slot`] gives its
/// place back when dropped (with its stream).
#[derive(Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// A place for one more connection from `ip`, if it has fewer than `max`.
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            owner: self.clone(),
        })
    }

    pub fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection's place in [`PerIp`].
pub struct Slot {
    ip: IpAddr,
    owner: Arc<PerIp>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A stream identified by its first binding request, on its way to the owning worker.
pub(crate) struct Identified {
    pub key: ParticipantKey,
    pub stream: mio::net::TcpStream,
    pub from: SocketAddr,
    /// Holds the first frame (not consumed) and whatever followed it.
    pub decoder: FrameDecoder,
    pub slot: Slot,
}

/// What a pending connection's first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstMessage<'a> {
    /// Not complete yet.
    Incomplete,
    /// A binding request naming this (our) ufrag.
    Ufrag(&'a str),
    /// Close the connection.
    Refused,
}

/// Judge the first frame of a pending connection (pure, over untrusted bytes).
pub fn first_message(decoder: &mut FrameDecoder) -> FirstMessage<'_> {
    match decoder.next_frame() {
        Ok(None) => FirstMessage::Incomplete,
        Err(_) => FirstMessage::Refused,
        Ok(Some(frame)) => match crate::stun::binding_request_local_ufrag(frame) {
            Some(u) => FirstMessage::Ufrag(u),
            None => FirstMessage::Refused,
        },
    }
}

struct Pending {
    stream: mio::net::TcpStream,
    from: SocketAddr,
    decoder: FrameDecoder,
    deadline: Instant,
    slot: Slot,
}

const LISTENER: mio::Token = mio::Token(0);

/// The acceptor thread: accepts, waits for each connection's first message, hands it over with
/// `hand_over` (which passes it to the owning worker and wakes it).
pub(crate) fn run_acceptor(
    mut listener: mio::net::TcpListener,
    poll: mio::Poll,
    settings: TcpSettings,
    routes: Arc<Routes>,
    per_ip: Arc<PerIp>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    hand_over: impl Fn(Identified),
) {
    let mut poll = poll;
    if let Err(e) = poll
        .registry()
        .register(&mut listener, LISTENER, mio::Interest::READABLE)
    {
        tracing::error!(error = %e, "cannot watch the ICE-TCP listener; ICE-TCP disabled");
        return;
    }
    let mut events = mio::Events::with_capacity(64);
    let mut pending: HashMap<usize, Pending> = HashMap::new();
    let mut next_token = 1usize;
    let mut buf = vec![0u8; 4096];
    loop {
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let wait = pending
            .values()
            .map(|p| p.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500));
        if let Err(e) = poll.poll(&mut events, Some(wait))
            && e.kind() != ErrorKind::Interrupted
        {
            tracing::error!(error = %e, "ICE-TCP acceptor poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, from)) => {
                            if pending.len() >= MAX_PENDING {
                                continue;
                            }
                            let Some(slot) = per_ip.take(from.ip(), settings.max_per_ip) else {
                                tracing::debug!(
                                    "ICE-TCP connection refused: too many from one address"
                                );
                                continue;
                            };
                            let token = next_token;
                            next_token = next_token.wrapping_add(1).max(1);
                            if poll
                                .registry()
                                .register(&mut stream, mio::Token(token), mio::Interest::READABLE)
                                .is_err()
                            {
                                continue;
                            }
                            let _ = stream.set_nodelay(true);
                            pending.insert(
                                token,
                                Pending {
                                    stream,
                                    from,
                                    decoder: FrameDecoder::new(),
                                    deadline: Instant::now() + settings.first_message_timeout,
                                    slot,
                                },
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // EMFILE and the like: try again on the next wake-up.
                            tracing::warn!(error = %e, "ICE-TCP accept failed");
                            break;
                        }
                    }
                }
                continue;
            }
            let token = event.token().0;
            let Some(p) = pending.get_mut(&token) else {
                continue;
            };
            let verdict = read_first(p, &mut buf, &routes);
            match verdict {
                Verdict::Wait => {}
                Verdict::Close => {
                    if let Some(mut p) = pending.remove(&token) {
                        let _ = poll.registry().deregister(&mut p.stream);
                    }
                }
                Verdict::Owner(key) => {
                    if let Some(mut p) = pending.remove(&token) {
                        let _ = poll.registry().deregister(&mut p.stream);
                        hand_over(Identified {
                            key,
                            stream: p.stream,
                            from: p.from,
                            decoder: p.decoder,
                            slot: p.slot,
                        });
                    }
                }
            }
        }
        // First-message timeout.
        let now = Instant::now();
        pending.retain(|_, p| {
            let keep = p.deadline > now;
            if !keep {
                let _ = poll.registry().deregister(&mut p.stream);
            }
            keep
        });
    }
}

enum Verdict {
    Wait,
    Close,
    Owner(ParticipantKey),
}

fn read_first(p: &mut Pending, buf: &mut [u8], routes: &Routes) -> Verdict {
    loop {
        match p.stream.read(buf) {
            Ok(0) => return Verdict::Close,
            Ok(n) => {
                p.decoder.extend(&buf[..n]);
                match first_message(&mut p.decoder) {
                    FirstMessage::Incomplete => {
                        if p.decoder.buffered() > MAX_FRAME + 2 {
                            return Verdict::Close;
                        }
                    }
                    FirstMessage::Refused => return Verdict::Close,
                    FirstMessage::Ufrag(u) => {
                        return match routes.by_ufrag.get(u) {
                            Some(k) => Verdict::Owner(*k),
                            None => Verdict::Close,
                        };
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Verdict::Wait,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Verdict::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    /// A STUN binding request whose USERNAME is `<ours>:<theirs>`.
    pub(crate) fn binding_request(ours: &str) -> Vec<u8> {
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
    fn frames_come_out_whole_whatever_the_reads_cut() {
        let frames: Vec<Vec<u8>> = (1..40u8).map(|i| vec![i; i as usize * 37]).collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
        for chunk in [1, 2, 3, 7, 100, 1500, stream.len()] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.extend(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f.to_vec());
                    d.consume();
                }
            }
            assert_eq!(got, frames, "reads of {chunk} bytes");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversized_and_empty_frames_close_the_stream() {
        let mut d = FrameDecoder::new();
        d.extend(&[0xff, 0xff, 1, 2, 3]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(65535)));
        let mut d = FrameDecoder::new();
        d.extend(&((MAX_FRAME + 1) as u16).to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(MAX_FRAME + 1)));
        let mut d = FrameDecoder::new();
        d.extend(&[0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        // A partial header or a partial frame is just not complete yet.
        let mut d = FrameDecoder::new();
        d.extend(&[0]);
        assert_eq!(d.next_frame(), Ok(None));
        d.extend(&[10, 1, 2, 3]);
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn the_first_frame_must_be_a_binding_request_naming_a_ufrag() {
        let mut d = FrameDecoder::new();
        d.extend(&framed(&binding_request("serverufrag")));
        assert_eq!(first_message(&mut d), FirstMessage::Ufrag("serverufrag"));
        // DTLS, RTP or plain garbage first: refused.
        for junk in [
            &[22u8, 254, 253, 0, 0][..],
            &[0x80; 40][..],
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            let mut d = FrameDecoder::new();
            d.extend(&framed(junk));
            assert_eq!(first_message(&mut d), FirstMessage::Refused, "{junk:?}");
        }
        // An HTTP request read as a length prefix: "GE" = 0x4745, far too long.
        let mut d = FrameDecoder::new();
        d.extend(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(first_message(&mut d), FirstMessage::Refused);
        // Half a request: wait.
        let m = framed(&binding_request("u1"));
        let mut d = FrameDecoder::new();
        d.extend(&m[..m.len() - 1]);
        assert_eq!(first_message(&mut d), FirstMessage::Incomplete);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let mut state = 0x9e37_79b9_u32;
        for round in 0..500 {
            let mut d = FrameDecoder::new();
            for _ in 0..8 {
                let len = (round * 7) % 300;
                let mut piece = vec![0u8; len];
                for b in piece.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    *b = state as u8;
                }
                d.extend(&piece);
                match d.next_frame() {
                    Ok(Some(_)) => d.consume(),
                    Ok(None) => {}
                    Err(_) => break,
                }
                let _ = first_message(&mut d);
            }
        }
    }

    #[test]
    fn a_full_queue_drops_media_but_never_stun_or_dtls() {
        let mut q = TcpOut::default();
        let rtp = [0x80u8; 1200];
        let mut queued = 0;
        while q.push(&rtp) {
            queued += 1;
        }
        assert_eq!(queued, MEDIA_QUEUE_BYTES / 1202);
        assert_eq!(q.dropped, 1);
        assert!(!q.overflowed);
        // STUN (first byte 0–3) and DTLS (20–63) still go in.
        assert!(q.push(&binding_request("x")));
        assert!(q.push(&[22u8; 300]));
        // ... up to the hard limit, past which the stream is to be closed.
        while q.push(&[22u8; 1000]) {}
        assert!(q.overflowed);
        assert!(q.len() <= HARD_QUEUE_BYTES);
        // What was queued comes out framed, in order, over a writer that takes little at a time.
        struct Trickle(Vec<u8>, usize);
        impl Write for Trickle {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.1 += 1;
                if self.1.is_multiple_of(3) {
                    return Err(ErrorKind::WouldBlock.into());
                }
                let n = b.len().min(700);
                self.0.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = Trickle(Vec::new(), 0);
        let total = q.len();
        while !q.write_to(&mut w).unwrap() {}
        assert_eq!(w.0.len(), total);
        let mut d = FrameDecoder::new();
        d.extend(&w.0);
        let mut n = 0;
        while let Some(f) = d.next_frame().unwrap() {
            if n < queued {
                assert_eq!(f, &rtp[..]);
            }
            n += 1;
            d.consume();
        }
        assert!(n > queued + 2);
    }

    /// The acceptor, for real on loopback: garbage, oversized lengths, unknown ufrags and a slow
    /// first message are closed; a binding request naming a participant is handed over, with
    /// its first frame still in the decoder.
    #[test]
    fn the_acceptor_hands_over_only_identified_streams() {
        use std::io::Read as _;
        let routes = Arc::new(Routes::default());
        let alice = ParticipantKey { worker: 0, id: 42 };
        routes.by_ufrag.insert("aliceufrag".into(), alice);
        let listener =
            mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).expect("listener");
        let addr = listener.local_addr().unwrap();
        let settings = TcpSettings {
            port: addr.port(),
            max_per_ip: 3,
            first_message_timeout: Duration::from_millis(300),
        };
        let per_ip = Arc::new(PerIp::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Identified>();
        let poll = mio::Poll::new().unwrap();
        let acceptor = {
            let (routes, per_ip, stop) = (routes.clone(), per_ip.clone(), stop.clone());
            std::thread::spawn(move || {
                run_acceptor(listener, poll, settings, routes, per_ip, stop, move |i| {
                    let _ = tx.send(i);
                })
            })
        };
        let closed = |mut s: std::net::TcpStream, what: &str| {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 16];
            // The server never answers before identifying: a read ends with EOF or a reset.
            match s.read(&mut b) {
                Ok(0) | Err(_) => {}
                Ok(n) => panic!("{what}: got {n} bytes instead of a close"),
            }
        };
        let connect = || std::net::TcpStream::connect(addr).unwrap();
        let mut s = connect();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        closed(s, "garbage");
        let mut s = connect();
        s.write_all(&[0x7f, 0xff]).unwrap();
        closed(s, "oversized length");
        let mut s = connect();
        s.write_all(&framed(&binding_request("nobody"))).unwrap();
        closed(s, "unknown ufrag");
        // Slow: half a request, then nothing; closed at the first-message timeout.
        let started = Instant::now();
        let mut s = connect();
        let m = framed(&binding_request("aliceufrag"));
        s.write_all(&m[..10]).unwrap();
        closed(s, "slow first message");
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(rx.try_recv().is_err(), "nothing was handed over");
        // Identified, even when the request arrives in pieces and media follows it.
        let mut s = connect();
        s.write_all(&m[..5]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut rest = m[5..].to_vec();
        rest.extend_from_slice(&framed(&[0x80; 100]));
        s.write_all(&rest).unwrap();
        let mut got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("handed over");
        assert_eq!(got.key, alice);
        assert_eq!(got.from, s.local_addr().unwrap());
        assert_eq!(
            first_message(&mut got.decoder),
            FirstMessage::Ufrag("aliceufrag")
        );
        // Caps per address: the handed-over stream still holds its place.
        assert_eq!(per_ip.count(got.from.ip()), 1);
        let held: Vec<_> = (0..3).map(|_| connect()).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while per_ip.count(got.from.ip()) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            per_ip.count(got.from.ip()),
            3,
            "two more pending, then full"
        );
        drop(held);
        stop.store(true, std::sync::atomic::Ordering::Release);
        acceptor.join().unwrap();
        drop(got);
        assert_eq!(per_ip.count("127.0.0.1".parse().unwrap()), 0);
    }

    #[test]
    fn per_address_caps_give_places_back() {
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        let a = per_ip.take(ip, 2).unwrap();
        let _b = per_ip.take(ip, 2).unwrap();
        assert!(per_ip.take(ip, 2).is_none());
        assert!(per_ip.take(other, 2).is_some());
        drop(a);
        assert_eq!(per_ip.count(ip), 1);
        assert!(per_ip.take(ip, 2).is_some());
    }
}
