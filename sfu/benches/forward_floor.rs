//! The physical floor of forwarding: the irreducible per-packet work of relaying one SRTP packet
//! from a publisher to one subscriber — SRTP unprotect with the publisher's keys, rewrite SSRC and
//! payload type, SRTP protect with the subscriber's keys, one UDP `send_to` on loopback — using
//! `rtc`'s SRTP contexts directly with fixed test keys. `scripts/bench` puts our server's measured
//! CPU time per forwarded packet beside this figure (see docs/benchmarks.md).
//!
//! Run: `cargo bench -p teleconsult-sfu --bench forward_floor`
//!
//! Each step is also measured alone, so the floor can be read as a sum. Sizes: 160-byte payloads
//! (an Opus frame at ~32 kbit/s plus headroom) and 1100-byte payloads (a full VP8 packet).
//! Profiles: AEAD-AES-128-GCM (what `rtc` negotiates with webrtc-rs and Chromium) and
//! AES-128-CM-HMAC-SHA1-80 (the mandatory one).
//!
//! `ours_*` measure the same steps with the server's own path since issue 10 (`srtp.rs` in place,
//! the header writer of `rtp.rs`, a buffer reused across packets): the floor the server runs now.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::option::srtp_replay_protection;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use teleconsult_sfu::rtp::{OutHeader, RtpView};
use teleconsult_sfu::srtp;

const PUBLISHER_SSRC: u32 = 0x1234_5678;
const SUBSCRIBER_SSRC: u32 = 0x0BAD_CAFE;

fn context(profile: ProtectionProfile, seed: u8) -> Context {
    let provider = rtc::crypto::default_provider().expect("ring is rtc's default crypto provider");
    let key: Vec<u8> = (0..profile.key_len() as u8).map(|i| i ^ seed).collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8)
        .map(|i| i.wrapping_mul(7) ^ seed)
        .collect();
    // Replay protection on both sides, as the real stack has it (window of 64 packets).
    Context::new(
        &key,
        &salt,
        profile,
        Some(srtp_replay_protection(64)),
        None,
        provider.crypto(),
    )
    .expect("fixed test keys have the profile's lengths")
}

/// A plain RTP packet (12-byte header, no extensions) with `len` payload bytes.
fn rtp(seq: u16, len: usize) -> Vec<u8> {
    let packet = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: u32::from(seq).wrapping_mul(3000),
            ssrc: PUBLISHER_SSRC,
            marker: true,
            ..Default::default()
        },
        payload: vec![0xA5; len].into(),
    };
    packet.marshal().expect("a valid packet marshals").to_vec()
}

/// The publisher side: produces the next SRTP packet (not measured).
struct Publisher {
    ctx: Context,
    seq: u16,
    len: usize,
}

impl Publisher {
    fn next(&mut self) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let plain = rtp(self.seq, self.len);
        self.ctx.encrypt_rtp(&plain).expect("encrypt").to_vec()
    }
}

/// Rewrite SSRC and payload type in place: the forwarder's whole header change.
fn rewrite(plain: &mut [u8], ssrc: u32, payload_type: u8) {
    plain[1] = (plain[1] & 0x80) | (payload_type & 0x7f);
    plain[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// A loopback UDP pair; a thread drains the receiving side so the kernel never drops early.
struct Wire {
    tx: UdpSocket,
    stop: Arc<AtomicBool>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Wire {
    fn new() -> Wire {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        rx.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .expect("timeout");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        tx.connect(rx.local_addr().expect("addr")).expect("connect");
        let stop = Arc::new(AtomicBool::new(false));
        let drain = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let _ = rx.recv(&mut buf);
                }
            })
        };
        Wire {
            tx,
            stop,
            drain: Some(drain),
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
    }
}

fn ours(profile: ProtectionProfile, seed: u8) -> srtp::Context {
    let p = srtp::Profile::from_rtc(profile).expect("a profile we implement");
    let key: Vec<u8> = (0..p.key_len() as u8).map(|i| i ^ seed).collect();
    let salt: Vec<u8> = (0..p.salt_len() as u8)
        .map(|i| i.wrapping_mul(7) ^ seed)
        .collect();
    srtp::Context::new(p, &key, &salt).expect("fixed test keys have the profile's lengths")
}

/// The publisher side with our SRTP: the next SRTP packet in a fresh buffer (not measured).
struct OurPublisher {
    ctx: srtp::Context,
    seq: u16,
    len: usize,
}

impl OurPublisher {
    fn next(&mut self) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let mut buf = rtp(self.seq, self.len);
        let n = buf.len();
        buf.resize(n + self.ctx.profile().rtp_overhead(), 0);
        let n = self.ctx.protect_rtp(&mut buf, n).expect("protect");
        buf.truncate(n);
        buf
    }
}

fn floor(c: &mut Criterion) {
    let profiles = [
        ("gcm", ProtectionProfile::AeadAes128Gcm),
        ("cm-sha1-80", ProtectionProfile::Aes128CmHmacSha1_80),
    ];
    let wire = Wire::new();
    for (name, profile) in profiles {
        for len in [160usize, 1100] {
            let mut group = c.benchmark_group(format!("floor/{name}/{len}B"));
            group.throughput(Throughput::Elements(1));

            let mut publisher = Publisher {
                ctx: context(profile, 1),
                seq: 0,
                len,
            };
            let mut inbound = context(profile, 1);
            group.bench_function("unprotect", |b| {
                b.iter_batched(
                    || publisher.next(),
                    |srtp| black_box(inbound.decrypt_rtp(&srtp).expect("decrypt")),
                    BatchSize::SmallInput,
                )
            });

            let mut outbound = context(profile, 2);
            let mut seq = 0u16;
            group.bench_function("protect", |b| {
                b.iter_batched(
                    || {
                        seq = seq.wrapping_add(1);
                        rtp(seq, len)
                    },
                    |plain| black_box(outbound.encrypt_rtp(&plain).expect("encrypt")),
                    BatchSize::SmallInput,
                )
            });

            let datagram = vec![0x5Au8; len + 12 + 16];
            group.bench_function("udp_send", |b| {
                b.iter(|| black_box(wire.tx.send(&datagram).expect("send")))
            });

            // The whole floor: unprotect, rewrite, protect, send.
            let mut publisher = Publisher {
                ctx: context(profile, 3),
                seq: 0,
                len,
            };
            let mut inbound = context(profile, 3);
            let mut outbound = context(profile, 4);
            group.bench_function("forward_one", |b| {
                b.iter_batched(
                    || publisher.next(),
                    |srtp| {
                        let mut plain = inbound.decrypt_rtp(&srtp).expect("decrypt");
                        rewrite(&mut plain, SUBSCRIBER_SSRC, 100);
                        let out = outbound.encrypt_rtp(&plain).expect("encrypt");
                        wire.tx.send(&out).expect("send")
                    },
                    BatchSize::SmallInput,
                )
            });

            // The same with our path: unprotect in place, our header (with MID) and the payload
            // into a reused buffer, protect in place, send.
            let mut publisher = OurPublisher {
                ctx: ours(profile, 5),
                seq: 0,
                len,
            };
            let mut inbound = ours(profile, 5);
            group.bench_function("ours_unprotect", |b| {
                b.iter_batched(
                    || publisher.next(),
                    |mut srtp| black_box(inbound.unprotect_rtp(&mut srtp).expect("unprotect")),
                    BatchSize::SmallInput,
                )
            });
            let mut outbound = ours(profile, 6);
            let mut seq = 0u16;
            let mut out = vec![0u8; 1600];
            group.bench_function("ours_protect", |b| {
                b.iter_batched(
                    || {
                        seq = seq.wrapping_add(1);
                        rtp(seq, len)
                    },
                    |plain| {
                        out[..plain.len()].copy_from_slice(&plain);
                        black_box(
                            outbound
                                .protect_rtp(&mut out, plain.len())
                                .expect("protect"),
                        )
                    },
                    BatchSize::SmallInput,
                )
            });
            let mut publisher = OurPublisher {
                ctx: ours(profile, 7),
                seq: 0,
                len,
            };
            let mut inbound = ours(profile, 7);
            let mut outbound = ours(profile, 8);
            let mut out = vec![0u8; 1600];
            group.bench_function("ours_forward_one", |b| {
                b.iter_batched(
                    || publisher.next(),
                    |mut srtp| {
                        let n = inbound.unprotect_rtp(&mut srtp).expect("unprotect");
                        let view = RtpView::parse(&srtp[..n]).expect("parse");
                        let header = OutHeader {
                            marker: view.marker,
                            payload_type: 100,
                            seq: view.seq,
                            timestamp: view.timestamp,
                            ssrc: SUBSCRIBER_SSRC,
                            mid: Some((4, b"1")),
                            // Every packet to a subscriber carries a transport-wide number now.
                            twcc: Some((5, view.seq)),
                        };
                        let head = header.write(&mut out);
                        let payload = view.payload(&srtp[..n]);
                        out[head..head + payload.len()].copy_from_slice(payload);
                        let m = outbound
                            .protect_rtp(&mut out, head + payload.len())
                            .expect("protect");
                        wire.tx.send(&out[..m]).expect("send")
                    },
                    BatchSize::SmallInput,
                )
            });
            group.finish();
        }
    }
}

/// What batching the loopback send saves (issue 10): 32 datagrams of 1100 bytes per iteration
/// (a GSO send carries at most 64 KiB), sent as 32 `send`s, as one `sendmmsg(2)` (what the
/// driver does), and as one UDP GSO `sendmsg(2)` with `UDP_SEGMENT` (possible only where the
/// destination repeats). Criterion's per-element time is per datagram; a failed call panics
/// (a batch the kernel refused must not pass for a fast one).
#[cfg(target_os = "linux")]
fn batching(c: &mut Criterion) {
    use std::os::fd::AsRawFd;
    const N: usize = 32;
    const LEN: usize = 1100;
    let wire = Wire::new();
    let fd = wire.tx.as_raw_fd();
    let datagrams: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; LEN]).collect();
    let mut group = c.benchmark_group(format!("send/{LEN}B"));
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("send_each", |b| {
        b.iter(|| {
            for d in &datagrams {
                let _ = black_box(wire.tx.send(d));
            }
        })
    });
    group.bench_function("sendmmsg_32", |b| {
        b.iter(|| {
            let mut iovs: Vec<libc::iovec> = datagrams
                .iter()
                .map(|d| libc::iovec {
                    iov_base: d.as_ptr() as *mut libc::c_void,
                    iov_len: d.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: all-zero is a valid `mmsghdr`; the iovec outlives the call.
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            // SAFETY: `hdrs` holds N initialised headers pointing at live buffers (a connected
            // socket: no address).
            let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), N as u32, 0) };
            assert!(sent > 0, "sendmmsg: {}", std::io::Error::last_os_error());
            black_box(sent)
        })
    });
    let mut gso = Vec::with_capacity(N * LEN);
    for d in &datagrams {
        gso.extend_from_slice(d);
    }
    group.bench_function("gso_32", |b| {
        b.iter(|| {
            let mut iov = libc::iovec {
                iov_base: gso.as_ptr() as *mut libc::c_void,
                iov_len: gso.len(),
            };
            // One control message: UDP_SEGMENT (level SOL_UDP) with the segment size.
            let mut cmsg_buf = [0u8; 64];
            // SAFETY: all-zero is a valid `msghdr`; the fields set point at live buffers, and
            // the control buffer has room for one `u16` control message (CMSG_SPACE(2) ≤ 64).
            let sent = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, LEN as u16);
                libc::sendmsg(fd, &msg, 0)
            };
            assert_eq!(
                sent,
                (N * LEN) as isize,
                "UDP GSO: {}",
                std::io::Error::last_os_error()
            );
            black_box(sent)
        })
    });
    group.finish();
}

#[cfg(not(target_os = "linux"))]
fn batching(_: &mut Criterion) {}

criterion_group!(benches, floor, batching);
criterion_main!(benches);
