//! A worker's outgoing datagrams: queued while one batch of input is handled, then sent with one
//! `sendmmsg(2)` call per batch instead of one `sendto(2)` per datagram.
//!
//! On loopback and in VMs most of a send's cost is the kernel's, and much of that is waking the
//! receiving socket's reader; a batch wakes each receiver once. The queue is flushed at the end of
//! every batch (at most `READ_BUDGET` datagrams in, see `driver.rs`) and whenever it holds
//! [`FLUSH_AT`] datagrams, so queueing adds at most one batch's processing time to a packet.

use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Instant;

/// Flush as soon as this many datagrams wait.
pub const FLUSH_AT: usize = 64;

/// Room of a pooled buffer: a full-size datagram and then some.
pub const BUFFER_SIZE: usize = 1600;
/// Sent buffers kept for reuse.
const POOL: usize = 1024;

/// Filled by the core, flushed by the driver (or drained through `Core::poll_output` when there
/// is no socket, as in the simulation tests).
#[derive(Default)]
pub struct SendQueue {
    items: Vec<(SocketAddr, BytesMut)>,
    /// Forwarded media in the queue: (when its datagram was received, packets), for the
    /// forwarding-latency histogram, recorded when they are actually sent.
    forwarded: Vec<(Instant, u64)>,
    /// Buffers whose datagram was sent, for the next ones (no allocation per packet).
    free: Vec<BytesMut>,
}

impl SendQueue {
    pub fn push(&mut self, to: SocketAddr, data: BytesMut) {
        self.items.push((to, data));
    }

    /// An empty buffer of at least [`BUFFER_SIZE`] bytes' capacity: a sent one when there is
    /// one, so once warm the forwarding path allocates nothing.
    pub fn buffer(&mut self) -> BytesMut {
        self.free
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(BUFFER_SIZE))
    }

    /// Give back a buffer that was not queued after all.
    pub fn recycle(&mut self, mut data: BytesMut) {
        data.clear();
        if data.capacity() >= BUFFER_SIZE && self.free.len() < POOL {
            self.free.push(data);
        }
    }

    /// Take every queued datagram, in order (no socket: the caller delivers them). What leaves
    /// this way is not counted in the forwarding-latency histogram.
    pub fn drain(&mut self) -> impl Iterator<Item = (SocketAddr, BytesMut)> + '_ {
        self.forwarded.clear();
        self.items.drain(..)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// `n` media packets received at `received` are in the queue.
    pub fn forwarded(&mut self, received: Instant, n: u64) {
        self.forwarded.push((received, n));
    }

    /// Send everything queued. Send errors (ICMP unreachable echoed back, a full send buffer)
    /// drop that datagram, as the network would; the rest still go.
    pub fn flush(&mut self, socket: &mio::net::UdpSocket) {
        if !self.items.is_empty() {
            send_all(socket, &self.items);
            let mut items = std::mem::take(&mut self.items);
            for (_, data) in items.drain(..) {
                self.recycle(data);
            }
            self.items = items;
        }
        if !self.forwarded.is_empty() {
            let now = Instant::now();
            for (received, n) in self.forwarded.drain(..) {
                crate::quality::FORWARDING.record(now.saturating_duration_since(received), n);
            }
        }
    }
}

impl SendQueue {
    /// [`SendQueue::flush`], but each datagram is first offered to `divert` (the ICE-TCP
    /// streams: it returns whether it took the datagram); the rest go to the UDP socket.
    pub fn flush_diverting(
        &mut self,
        socket: &mio::net::UdpSocket,
        mut divert: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) {
        if !self.items.is_empty() {
            let mut items = std::mem::take(&mut self.items);
            let mut kept = 0;
            for i in 0..items.len() {
                let (to, ref data) = items[i];
                if divert(to, data) {
                    continue;
                }
                items.swap(kept, i);
                kept += 1;
            }
            // Order among UDP datagrams is kept: `swap` only moves taken ones backwards.
            if kept > 0 {
                send_all(socket, &items[..kept]);
            }
            for (_, data) in items.drain(..) {
                self.recycle(data);
            }
            self.items = items;
        }
        self.flush(socket);
    }
}

#[cfg(target_os = "linux")]
fn send_all(socket: &mio::net::UdpSocket, items: &[(SocketAddr, BytesMut)]) {
    use std::os::fd::AsRawFd;
    let addrs: Vec<socket2::SockAddr> = items
        .iter()
        .map(|(to, _)| socket2::SockAddr::from(*to))
        .collect();
    let mut iovs: Vec<libc::iovec> = items
        .iter()
        .map(|(_, data)| libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(items.len());
    for (addr, iov) in addrs.iter().zip(iovs.iter_mut()) {
        // SAFETY: an all-zero `mmsghdr` is a valid value (null pointers, zero lengths); the
        // fields set below point into `addrs` and `iovs`, which outlive every `sendmmsg` call.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        h.msg_hdr.msg_namelen = addr.len();
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        hdrs.push(h);
    }
    let fd = socket.as_raw_fd();
    let mut start = 0;
    while start < hdrs.len() {
        let rest = &mut hdrs[start..];
        let n = rest.len().min(1024) as libc::c_uint;
        // SAFETY: `rest` is a valid array of `n` initialised headers whose buffers and
        // addresses are alive; the kernel only writes `msg_len`.
        let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), n, libc::MSG_DONTWAIT) };
        if sent > 0 {
            start += sent as usize;
        } else {
            // The datagram at `start` failed (or the call was interrupted): drop it, go on.
            start += 1;
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send_all(socket: &mio::net::UdpSocket, items: &[(SocketAddr, BytesMut)]) {
    for (to, data) in items {
        let _ = socket.send_to(data, *to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_arrives_whole_and_in_order_and_a_bad_destination_does_not_stop_it() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let tx = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rx.local_addr().unwrap();
        // Port 9 on an IPv6 address cannot be reached from an IPv4 socket: that send fails.
        let unreachable: SocketAddr = "[::1]:9".parse().unwrap();
        let mut q = SendQueue::default();
        for i in 0..100u8 {
            if i == 50 {
                q.push(unreachable, BytesMut::from(&b"lost"[..]));
            }
            let mut b = q.buffer();
            b.extend_from_slice(&[i; 40]);
            q.push(to, b);
        }
        assert_eq!(q.len(), 101);
        q.flush(&tx);
        assert_eq!(q.len(), 0);
        // The pooled buffers come back for reuse (not the small one pushed from elsewhere).
        assert_eq!(q.free.len(), 100);
        let pooled = q.buffer();
        assert!(pooled.is_empty() && pooled.capacity() >= BUFFER_SIZE);
        let mut buf = [0u8; 64];
        for i in 0..100u8 {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 40][..], "datagram {i}");
        }
    }
}
