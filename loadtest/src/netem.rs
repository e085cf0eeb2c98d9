//! An impaired link in userspace, for the impaired-link scenario: what reaches one synthetic
//! peer's UDP socket goes through a rate cap with a drop-tail queue (a home router's buffer, as
//! `tc htb` + `pfifo` does), a fixed delay and random loss, all changeable while the call runs.
//! The peer's own sends are not touched (the downlink is what the server's estimate adapts).
//!
//! It sits between webrtc-rs and the OS socket as a [`Runtime`] whose `wrap_udp_socket` wraps
//! the real socket: no root, no network namespace, one link per peer. The browser tests shape
//! real links with `tc` and `nft` in namespaces; this is the load generator's counterpart, so a
//! run can put many impaired subscribers on one machine (str0m's `netem` crate does the same for
//! its simulations).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use webrtc::runtime::{
    AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime, Transmit,
};

/// What the link does now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairment {
    /// Bits per second the link delivers; `None`: unlimited.
    pub rate_bps: Option<u64>,
    /// Added to every packet (after the queue).
    pub delay: Duration,
    /// Fraction of packets lost at random (0..1).
    pub loss: f64,
    /// Packets the queue in front of the rate cap holds before it drops (tail drop).
    pub queue_packets: usize,
}

impl Impairment {
    /// A clear link.
    pub const NONE: Impairment = Impairment {
        rate_bps: None,
        delay: Duration::ZERO,
        loss: 0.0,
        queue_packets: 100,
    };
}

/// One peer's downlink: its settings (change them with [`Link::set`]) and counters.
#[derive(Debug)]
pub struct Link {
    settings: Mutex<Impairment>,
    pub delivered: AtomicU64,
    pub dropped_queue: AtomicU64,
    pub dropped_loss: AtomicU64,
}

impl Link {
    pub fn new(initial: Impairment) -> Arc<Link> {
        Arc::new(Link {
            settings: Mutex::new(initial),
            delivered: AtomicU64::new(0),
            dropped_queue: AtomicU64::new(0),
            dropped_loss: AtomicU64::new(0),
        })
    }

    pub fn set(&self, impairment: Impairment) {
        *self.settings.lock().unwrap() = impairment;
    }

    pub fn get(&self) -> Impairment {
        *self.settings.lock().unwrap()
    }
}

/// webrtc-rs's runtime with this peer's sockets behind `link`.
pub struct ImpairedRuntime {
    inner: Arc<dyn Runtime>,
    link: Arc<Link>,
}

impl fmt::Debug for ImpairedRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpairedRuntime")
            .field("link", &self.link)
            .finish()
    }
}

impl ImpairedRuntime {
    /// The default (tokio) runtime, its UDP sockets behind `link`.
    pub fn new(link: Arc<Link>) -> Option<Arc<ImpairedRuntime>> {
        Some(Arc::new(ImpairedRuntime {
            inner: webrtc::runtime::default_runtime()?,
            link,
        }))
    }
}

impl Runtime for ImpairedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(ImpairedSocket {
            inner: self.inner.wrap_udp_socket(socket)?,
            link: self.link.clone(),
            state: Mutex::new(Queue::default()),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn webrtc::runtime::AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn name(&self) -> &'static str {
        "impaired"
    }
}

/// A datagram on its way through the link.
struct Held {
    /// When it leaves the rate cap (the queue holds it until then).
    departs: Instant,
    /// When it reaches the peer (departure + delay).
    arrives: Instant,
    data: Vec<u8>,
    meta: RecvMeta,
}

#[derive(Default)]
struct Queue {
    held: VecDeque<Held>,
    /// When the rate cap is free again.
    busy_until: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    rng: u64,
    scratch: Vec<u8>,
}

impl Queue {
    fn random(&mut self) -> f64 {
        // xorshift64*: reproducible enough for loss, no dependency in the packet path.
        if self.rng == 0 {
            self.rng = rand::random::<u64>() | 1;
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One datagram arrives at the link now.
    fn admit(&mut self, link: &Link, now: Instant, data: &[u8], meta: RecvMeta) {
        let i = link.get();
        if i.loss > 0.0 && self.random() < i.loss {
            link.dropped_loss.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let departs = match i.rate_bps {
            Some(rate) if rate > 0 => {
                let waiting = self.held.iter().filter(|h| h.departs > now).count();
                if waiting >= i.queue_packets {
                    link.dropped_queue.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let start = self.busy_until.map_or(now, |b| b.max(now));
                // Bits on the wire: the datagram plus IP and UDP headers.
                let bits = (data.len() as u64 + 28) * 8;
                let done = start + Duration::from_nanos(bits * 1_000_000_000 / rate);
                self.busy_until = Some(done);
                done
            }
            _ => now,
        };
        self.held.push_back(Held {
            departs,
            arrives: departs + i.delay,
            data: data.to_vec(),
            meta,
        });
    }
}

struct ImpairedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    link: Arc<Link>,
    state: Mutex<Queue>,
}

impl fmt::Debug for ImpairedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpairedSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncUdpSocket for ImpairedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut q = self.state.lock().unwrap();
        // Take in everything the socket has now (it registers our waker when it has nothing).
        loop {
            if q.scratch.len() < 65_536 {
                q.scratch.resize(65_536, 0);
            }
            let mut scratch = std::mem::take(&mut q.scratch);
            let mut m = [RecvMeta::default()];
            let polled = {
                let mut slices = [IoSliceMut::new(&mut scratch)];
                self.inner.poll_recv(cx, &mut slices, &mut m)
            };
            match polled {
                Poll::Ready(Ok(n)) if n > 0 => {
                    let now = Instant::now();
                    let (len, stride) = (m[0].len, m[0].stride.max(1));
                    // A coalesced read (GRO) holds several datagrams, `stride` bytes apart.
                    for chunk in scratch[..len].chunks(stride) {
                        let mut one = m[0];
                        one.len = chunk.len();
                        one.stride = chunk.len();
                        q.admit(&self.link, now, chunk, one);
                    }
                    q.scratch = scratch;
                }
                Poll::Ready(Ok(_)) => {
                    q.scratch = scratch;
                    break;
                }
                Poll::Ready(Err(e)) => {
                    q.scratch = scratch;
                    if q.held.is_empty() {
                        return Poll::Ready(Err(e));
                    }
                    break;
                }
                Poll::Pending => {
                    q.scratch = scratch;
                    break;
                }
            }
        }
        // Hand over what has arrived, in order.
        let now = Instant::now();
        let mut n = 0;
        while n < bufs.len().min(meta.len()) && q.held.front().is_some_and(|h| h.arrives <= now) {
            let h = q.held.pop_front().expect("front checked");
            let len = h.data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&h.data[..len]);
            meta[n] = h.meta;
            meta[n].len = len;
            meta[n].stride = len;
            self.link.delivered.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        // Nothing due yet: wake when the next one is.
        if let Some(next) = q.held.front().map(|h| h.arrives) {
            let timer = q
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            timer.as_mut().reset(next);
            if timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RecvMeta {
        let mut m = RecvMeta::default();
        m.addr = "127.0.0.1:9".parse().unwrap();
        m
    }

    #[test]
    fn the_rate_cap_spaces_packets_and_its_queue_drops_the_tail() {
        let link = Link::new(Impairment {
            rate_bps: Some(800_000),
            delay: Duration::from_millis(100),
            loss: 0.0,
            queue_packets: 3,
        });
        let mut q = Queue::default();
        let now = Instant::now();
        // 972 + 28 bytes = 8000 bits = 10 ms each at 800 kbit/s.
        for _ in 0..5 {
            q.admit(&link, now, &[0u8; 972], meta());
        }
        assert_eq!(q.held.len(), 3, "three queued, the rest dropped");
        assert_eq!(link.dropped_queue.load(Ordering::Relaxed), 2);
        let gaps: Vec<Duration> = q.held.iter().map(|h| h.arrives - now).collect();
        assert_eq!(
            gaps,
            [110, 120, 130].map(Duration::from_millis),
            "10 ms apart after 100 ms of delay"
        );
    }

    #[test]
    fn loss_drops_about_its_share() {
        let link = Link::new(Impairment {
            loss: 0.05,
            ..Impairment::NONE
        });
        let mut q = Queue::default();
        let now = Instant::now();
        for _ in 0..20_000 {
            q.admit(&link, now, &[0u8; 100], meta());
        }
        let lost = link.dropped_loss.load(Ordering::Relaxed);
        assert!((800..1200).contains(&lost), "{lost} of 20000 lost at 5 %");
        assert_eq!(q.held.len() as u64 + lost, 20_000);
    }
}
