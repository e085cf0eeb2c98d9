//! A worker's batched receive: up to [`BATCH`] datagrams per `recvmmsg(2)` call into buffers
//! allocated once, instead of one `recvfrom(2)` per datagram plus a last one that says
//! `WouldBlock`. A batch shorter than asked for means the socket is drained, so the common case
//! needs no extra call to find that out.

use std::io;
use std::net::SocketAddr;

/// Datagrams per call.
pub const BATCH: usize = 32;

pub struct RecvBatch {
    /// `BATCH` buffers of `size` bytes, back to back.
    data: Vec<u8>,
    size: usize,
    /// Per received datagram: its length and source (valid up to the last `recv`'s count).
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBatch {
    pub fn new(size: usize) -> RecvBatch {
        RecvBatch {
            data: vec![0; BATCH * size],
            size,
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Datagram `i` of the last [`recv`](Self::recv): its bytes (truncated to the buffer size)
    /// and its source (`None` for an address family we do not speak).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let (len, from) = self.got[i];
        let start = i * self.size;
        (&self.data[start..start + len], from)
    }

    /// Receive what is waiting, without blocking: `Ok(0)` when nothing is.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.got.clear();
        // SAFETY: all-zero `sockaddr_storage`, `iovec` and `mmsghdr` are valid values.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, chunk) in self.data.chunks_exact_mut(self.size).enumerate() {
            iovs[i].iov_base = chunk.as_mut_ptr() as *mut libc::c_void;
            iovs[i].iov_len = chunk.len();
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` holds `BATCH` headers whose buffers (in `self.data`), iovecs and address
        // storage outlive the call; the kernel writes at most `iov_len` bytes and `msg_namelen`
        // bytes into them.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        for (h, storage) in hdrs.iter().zip(addrs.iter()).take(n as usize) {
            // SAFETY: the kernel initialised `msg_namelen` bytes of this storage.
            let from =
                unsafe { socket2::SockAddr::new(*storage, h.msg_hdr.msg_namelen) }.as_socket();
            self.got.push(((h.msg_len as usize).min(self.size), from));
        }
        Ok(n as usize)
    }

    /// Receive what is waiting, without blocking: `Ok(0)` when nothing is.
    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        self.got.clear();
        for i in 0..BATCH {
            let start = i * self.size;
            match socket.recv_from(&mut self.data[start..start + self.size]) {
                Ok((len, from)) => self.got.push((len, Some(from))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if self.got.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(self.got.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_every_waiting_datagram_with_its_source_in_batches() {
        let rx = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rx.local_addr().unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new(64);
        assert_eq!(batch.recv(&rx).unwrap(), 0, "nothing waiting");
        // 70 datagrams from two sources; one longer than the buffer is cut to its size.
        for i in 0..70u8 {
            let from = if i.is_multiple_of(2) { &a } else { &b };
            let len = if i == 5 { 100 } else { 10 + (i % 40) as usize };
            from.send_to(&vec![i; len], to).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..100 {
            let n = batch.recv(&rx).unwrap();
            assert!(n <= BATCH);
            for i in 0..n {
                let (data, from) = batch.get(i);
                seen.push((data.to_vec(), from.unwrap()));
            }
            if seen.len() == 70 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(seen.len(), 70);
        for (i, (data, from)) in seen.iter().enumerate() {
            let i = i as u8;
            let want = if i == 5 { 64 } else { 10 + (i % 40) as usize };
            assert_eq!(data, &vec![i; want], "datagram {i}");
            let src = if i.is_multiple_of(2) { &a } else { &b };
            assert_eq!(*from, src.local_addr().unwrap());
        }
        assert_eq!(batch.recv(&rx).unwrap(), 0, "drained");
    }
}
