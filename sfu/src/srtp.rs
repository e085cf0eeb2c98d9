//! SRTP and SRTCP (RFC 3711), with the AEAD AES-GCM profiles (RFC 7714): protect and unprotect
//! **in place** in the caller's buffer, with keys derived once per context and no allocation per
//! packet.
//!
//! One [`Context`] serves one direction of one connection: the remote master key and salt
//! unprotect what a participant sends us, the local ones protect what we send it. Each context
//! keeps, per SSRC, the rollover counter (estimated on receipt as in RFC 3711 §3.3.1 and
//! Appendix A, tracked on sending) and, on receipt, a 64-packet replay window (§3.3.2). A packet
//! that fails authentication or is a replay is an `Err` and changes no state.
//!
//! Why ours rather than `rtc`'s `srtp` module: that one allocates a `BytesMut` per packet and
//! parses the RTP header into an owned `rtp::Header` (a `Vec` of extensions) to find the payload;
//! on the forwarding path we protect once per packet per subscriber. The ciphers are RustCrypto's
//! (`aes-gcm`, `aes` + `ctr`, `hmac` + `sha1`); the tests check byte-for-byte agreement with
//! `rtc`'s implementation in both directions for every profile.

use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha1::Sha1;

type CtrCore128 = ctr::CtrCore<aes::Aes128, ctr::flavors::Ctr128BE>;
type HmacSha1 = Hmac<Sha1>;

/// A protection profile we implement (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80`.
    Aes128CmHmacSha1_80,
    /// `SRTP_AES128_CM_HMAC_SHA1_32` (RTCP keeps the 80-bit tag, RFC 5764 §4.1.2).
    Aes128CmHmacSha1_32,
    /// `SRTP_AEAD_AES_128_GCM`.
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM`.
    AeadAes256Gcm,
}

impl Profile {
    /// Ours for `rtc`'s profile, if we implement it.
    pub fn from_rtc(p: rtc::srtp::protection_profile::ProtectionProfile) -> Option<Profile> {
        use rtc::srtp::protection_profile::ProtectionProfile as P;
        match p {
            P::Aes128CmHmacSha1_80 => Some(Profile::Aes128CmHmacSha1_80),
            P::Aes128CmHmacSha1_32 => Some(Profile::Aes128CmHmacSha1_32),
            P::AeadAes128Gcm => Some(Profile::AeadAes128Gcm),
            P::AeadAes256Gcm => Some(Profile::AeadAes256Gcm),
            _ => None,
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Profile::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 12,
            _ => 14,
        }
    }

    /// Bytes an SRTP packet grows by when protected (the tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 10,
            Profile::Aes128CmHmacSha1_32 => 4,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 16,
        }
    }

    /// Bytes an SRTCP packet grows by when protected (the E flag and index, and the tag).
    pub fn rtcp_overhead(self) -> usize {
        4 + match self {
            Profile::Aes128CmHmacSha1_80 | Profile::Aes128CmHmacSha1_32 => 10,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 16,
        }
    }
}

/// Why a packet could not be protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("master key or salt of the wrong length for the profile")]
    KeyLength,
    #[error("packet too short or malformed")]
    Malformed,
    #[error("authentication failed")]
    Authentication,
    #[error("replayed or too old")]
    Replayed,
    #[error("no room in the buffer for the authentication tag")]
    NoRoom,
    #[error("too many streams in one context")]
    TooManyStreams,
}

/// Streams (SSRCs) one context keeps state for. A participant has a handful (audio, video,
/// perhaps RTX); what we send a subscriber, one per subscription. State is only created for
/// packets that authenticate, so only a keyed peer can fill it.
pub const MAX_STREAMS: usize = 512;

/// RFC 3711 §4.3.1 key derivation (key derivation rate 0) with the AES-CM PRF of the master key:
/// fill `out` with the keystream for `label`.
fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut x = [0u8; 16];
    x[..master_salt.len()].copy_from_slice(master_salt);
    x[7] ^= label;
    let encrypt = |block: &mut [u8; 16]| {
        let b = aes::Block::from_mut_slice(block);
        if master_key.len() == 32 {
            aes::Aes256::new_from_slice(master_key)
                .expect("length checked by Context::new")
                .encrypt_block(b)
        } else {
            aes::Aes128::new_from_slice(master_key)
                .expect("length checked by Context::new")
                .encrypt_block(b)
        }
    };
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        encrypt(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;

/// AES-CM + HMAC-SHA1 session keys of one of SRTP or SRTCP.
#[derive(Clone)]
struct CmKeys {
    aes: aes::Aes128,
    salt: [u8; 14],
    mac: HmacSha1,
}

impl CmKeys {
    fn new(master_key: &[u8], master_salt: &[u8], labels: [u8; 3]) -> CmKeys {
        let mut key = [0u8; 16];
        let mut auth = [0u8; 20];
        let mut salt = [0u8; 14];
        derive(master_key, master_salt, labels[0], &mut key);
        derive(master_key, master_salt, labels[1], &mut auth);
        derive(master_key, master_salt, labels[2], &mut salt);
        CmKeys {
            aes: aes::Aes128::new(&key.into()),
            salt,
            mac: <HmacSha1 as Mac>::new_from_slice(&auth).expect("HMAC takes any key length"),
        }
    }

    /// XOR the keystream for (ssrc, index) into `data` (RFC 3711 §4.1.1).
    fn apply(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..8]) {
            *b ^= s;
        }
        // The key schedule is computed once per context; each packet clones it (no allocation).
        let core = CtrCore128::inner_iv_init(self.aes.clone(), &iv.into());
        StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
    }

    /// The full 20-byte HMAC-SHA1 over `parts`.
    fn tag(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

enum Gcm {
    A128(Box<Aes128Gcm>),
    A256(Box<Aes256Gcm>),
}

impl Gcm {
    fn new(key: &[u8]) -> Gcm {
        if key.len() == 32 {
            Gcm::A256(Box::new(Aes256Gcm::new_from_slice(key).expect("32 bytes")))
        } else {
            Gcm::A128(Box::new(Aes128Gcm::new_from_slice(key).expect("16 bytes")))
        }
    }
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let nonce = Nonce::from_slice(nonce);
        let tag = match self {
            Gcm::A128(c) => c.encrypt_in_place_detached(nonce, aad, data),
            Gcm::A256(c) => c.encrypt_in_place_detached(nonce, aad, data),
        };
        // Only fails for plaintexts over 64 GiB.
        tag.map(Into::into).unwrap_or([0; 16])
    }
    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
        let nonce = Nonce::from_slice(nonce);
        let tag = Tag::from_slice(tag);
        match self {
            Gcm::A128(c) => c.decrypt_in_place_detached(nonce, aad, data, tag).is_ok(),
            Gcm::A256(c) => c.decrypt_in_place_detached(nonce, aad, data, tag).is_ok(),
        }
    }
}

struct GcmKeys {
    aead: Gcm,
    salt: [u8; 12],
}

impl GcmKeys {
    fn new(master_key: &[u8], master_salt: &[u8], key_label: u8, salt_label: u8) -> GcmKeys {
        let mut key = [0u8; 32];
        let key = &mut key[..master_key.len()];
        derive(master_key, master_salt, key_label, key);
        let mut salt = [0u8; 12];
        derive(master_key, master_salt, salt_label, &mut salt);
        GcmKeys {
            aead: Gcm::new(key),
            salt,
        }
    }

    /// RFC 7714 §8.1 / §9.1: `00 00 | ssrc | a (4) | b (2)` XOR salt.
    fn nonce(&self, ssrc: u32, high: u32, low: u16) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&high.to_be_bytes());
        iv[10..12].copy_from_slice(&low.to_be_bytes());
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        iv
    }
}

// One per context, never moved on the per-packet path: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    Cm {
        rtp: CmKeys,
        rtcp: CmKeys,
        rtp_tag: usize,
    },
    Gcm {
        rtp: GcmKeys,
        rtcp: GcmKeys,
    },
}

/// A 64-packet sliding replay window over a stream's packet index (RFC 3711 §3.3.2).
#[derive(Clone, Copy, Debug, Default)]
struct ReplayWindow {
    /// Highest index accepted.
    top: u64,
    /// Bit `i`: `top - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.top {
            return Ok(());
        }
        let back = self.top - index;
        if back >= 64 || self.seen & (1 << back) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }
    fn accept(&mut self, index: u64) {
        if index > self.top {
            let shift = index - self.top;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = index;
        } else {
            self.seen |= 1 << (self.top - index);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct RtpStream {
    ssrc: u32,
    /// Highest packet index seen (`ROC << 16 | seq`).
    highest: u64,
    replay: ReplayWindow,
}

#[derive(Clone, Copy, Debug)]
struct RtcpStream {
    ssrc: u32,
    /// Sending: the last index used. Receiving: unused (see `replay`).
    index: u32,
    replay: ReplayWindow,
}

/// The packet index of sequence number `seq` given the highest index seen so far (RFC 3711
/// Appendix A): the rollover counter guessed as ROC-1, ROC or ROC+1, whichever puts `seq`
/// nearest to the highest. `None` for a packet from before index 0.
pub fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = (highest >> 16) as i64;
    let s_l = (highest & 0xFFFF) as i64;
    let seq_i = seq as i64;
    let v = if s_l < 32768 {
        if seq_i - s_l > 32768 { roc - 1 } else { roc }
    } else if s_l - 32768 > seq_i {
        roc + 1
    } else {
        roc
    };
    if v < 0 || v > u32::MAX as i64 {
        return None;
    }
    Some(((v as u64) << 16) | seq as u64)
}

/// Length of an RTP header (fixed part, CSRCs, extension) at the start of `packet`.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut len = 12 + 4 * (packet[0] & 0x0F) as usize;
    if packet[0] & 0x10 != 0 {
        if packet.len() < len + 4 {
            return Err(SrtpError::Malformed);
        }
        let words = u16::from_be_bytes([packet[len + 2], packet[len + 3]]) as usize;
        len += 4 + 4 * words;
    }
    if packet.len() < len {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SRTP/SRTCP state of one direction of one connection: see the module documentation.
pub struct Context {
    profile: Profile,
    cipher: Cipher,
    rtp: Vec<RtpStream>,
    rtcp: Vec<RtcpStream>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("srtp::Context")
            .field("profile", &self.profile)
            .field("streams", &self.rtp.len())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `profile` with this master key and salt (the session keys are derived
    /// here, once).
    pub fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        if master_key.len() != profile.key_len() || master_salt.len() != profile.salt_len() {
            return Err(SrtpError::KeyLength);
        }
        let cipher = match profile {
            Profile::Aes128CmHmacSha1_80 | Profile::Aes128CmHmacSha1_32 => Cipher::Cm {
                rtp: CmKeys::new(
                    master_key,
                    master_salt,
                    [LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT],
                ),
                rtcp: CmKeys::new(
                    master_key,
                    master_salt,
                    [LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT],
                ),
                rtp_tag: profile.rtp_overhead(),
            },
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => Cipher::Gcm {
                rtp: GcmKeys::new(master_key, master_salt, LABEL_RTP_KEY, LABEL_RTP_SALT),
                rtcp: GcmKeys::new(master_key, master_salt, LABEL_RTCP_KEY, LABEL_RTCP_SALT),
            },
        };
        Ok(Context {
            profile,
            cipher,
            rtp: Vec::new(),
            rtcp: Vec::new(),
        })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    fn rtp_stream(&mut self, ssrc: u32) -> Option<usize> {
        self.rtp.iter().position(|s| s.ssrc == ssrc)
    }

    /// Protect the RTP packet in `buf[..len]`, in place; the tag is written after it, so `buf`
    /// must have [`Profile::rtp_overhead`] bytes to spare. Returns the protected length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_overhead();
        if buf.len() < len + tag_len {
            return Err(SrtpError::NoRoom);
        }
        let header = rtp_header_len(&buf[..len])?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = be32(&buf[8..12]);
        let (slot, index) = match self.rtp_stream(ssrc) {
            Some(i) => {
                let s = &mut self.rtp[i];
                // A retransmission of an older packet keeps its own rollover counter.
                let index = estimate_index(s.highest, seq).ok_or(SrtpError::Replayed)?;
                (Some(i), index)
            }
            None => {
                if self.rtp.len() >= MAX_STREAMS {
                    return Err(SrtpError::TooManyStreams);
                }
                (None, seq as u64)
            }
        };
        let roc = (index >> 16) as u32;
        match &self.cipher {
            Cipher::Cm { rtp, rtp_tag, .. } => {
                rtp.apply(ssrc, index, &mut buf[header..len]);
                let tag = rtp.tag(&[&buf[..len], &roc.to_be_bytes()]);
                buf[len..len + rtp_tag].copy_from_slice(&tag[..*rtp_tag]);
            }
            Cipher::Gcm { rtp, .. } => {
                let nonce = rtp.nonce(ssrc, roc, seq);
                let (aad, rest) = buf.split_at_mut(header);
                let tag = rtp.aead.seal(&nonce, aad, &mut rest[..len - header]);
                buf[len..len + 16].copy_from_slice(&tag);
            }
        }
        match slot {
            Some(i) => {
                let s = &mut self.rtp[i];
                s.highest = s.highest.max(index);
            }
            None => self.rtp.push(RtpStream {
                ssrc,
                highest: index,
                replay: ReplayWindow::default(),
            }),
        }
        Ok(len + tag_len)
    }

    /// Unprotect the SRTP packet `buf` in place: on success the plain RTP packet is
    /// `buf[..returned length]`. Authentication failures and replays are errors and change no
    /// state (the bytes of `buf` may have been decrypted in place, never to be used).
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_overhead();
        if buf.len() < 12 + tag_len {
            return Err(SrtpError::Malformed);
        }
        let len = buf.len() - tag_len;
        let header = rtp_header_len(&buf[..len])?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = be32(&buf[8..12]);
        let slot = self.rtp_stream(ssrc);
        let index = match slot {
            Some(i) => {
                let s = &self.rtp[i];
                let index = estimate_index(s.highest, seq).ok_or(SrtpError::Replayed)?;
                s.replay.check(index)?;
                index
            }
            None => {
                if self.rtp.len() >= MAX_STREAMS {
                    return Err(SrtpError::TooManyStreams);
                }
                seq as u64
            }
        };
        let roc = (index >> 16) as u32;
        match &self.cipher {
            Cipher::Cm { rtp, rtp_tag, .. } => {
                let expected = rtp.tag(&[&buf[..len], &roc.to_be_bytes()]);
                let mut mac_ok = subtle::Choice::from(1u8);
                for (a, b) in buf[len..len + rtp_tag].iter().zip(&expected[..*rtp_tag]) {
                    mac_ok &= subtle::ConstantTimeEq::ct_eq(a, b);
                }
                if !bool::from(mac_ok) {
                    return Err(SrtpError::Authentication);
                }
                rtp.apply(ssrc, index, &mut buf[header..len]);
            }
            Cipher::Gcm { rtp, .. } => {
                let nonce = rtp.nonce(ssrc, roc, seq);
                let (head, rest) = buf.split_at_mut(header);
                let (data, tag) = rest.split_at_mut(len - header);
                if !rtp.aead.open(&nonce, head, data, tag) {
                    return Err(SrtpError::Authentication);
                }
            }
        }
        match slot {
            Some(i) => {
                let s = &mut self.rtp[i];
                s.highest = s.highest.max(index);
                s.replay.accept(index);
            }
            None => {
                let mut replay = ReplayWindow::default();
                replay.accept(index);
                self.rtp.push(RtpStream {
                    ssrc,
                    highest: index,
                    replay,
                });
            }
        }
        Ok(len)
    }

    /// Protect the (compound) RTCP packet in `buf[..len]` in place; `buf` must have
    /// [`Profile::rtcp_overhead`] bytes to spare. Returns the protected length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        if buf.len() < len + overhead {
            return Err(SrtpError::NoRoom);
        }
        if len < 8 || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(&buf[4..8]);
        let slot = match self.rtcp.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                if self.rtcp.len() >= MAX_STREAMS {
                    return Err(SrtpError::TooManyStreams);
                }
                self.rtcp.push(RtcpStream {
                    ssrc,
                    index: 0,
                    replay: ReplayWindow::default(),
                });
                self.rtcp.len() - 1
            }
        };
        // As `rtc`: the first index sent is 1; 31 bits, then back to 0.
        let s = &mut self.rtcp[slot];
        s.index = if s.index >= 0x7FFF_FFFF {
            0
        } else {
            s.index + 1
        };
        let index = s.index;
        let e_index = (index | 0x8000_0000).to_be_bytes();
        match &self.cipher {
            Cipher::Cm { rtcp, .. } => {
                rtcp.apply(ssrc, index as u64, &mut buf[8..len]);
                buf[len..len + 4].copy_from_slice(&e_index);
                let tag = rtcp.tag(&[&buf[..len + 4]]);
                buf[len + 4..len + 14].copy_from_slice(&tag[..10]);
            }
            Cipher::Gcm { rtcp, .. } => {
                let nonce = rtcp.nonce(ssrc, index >> 16, index as u16);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_index);
                let tag = rtcp.aead.seal(&nonce, &aad, &mut buf[8..len]);
                buf[len..len + 16].copy_from_slice(&tag);
                buf[len + 16..len + 20].copy_from_slice(&e_index);
            }
        }
        Ok(len + overhead)
    }

    /// Unprotect the SRTCP packet `buf` in place: on success the plain (compound) RTCP packet
    /// is `buf[..returned length]`. Only encrypted SRTCP (E flag set) is accepted, which is all
    /// WebRTC sends.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        if buf.len() < 8 + overhead || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(&buf[4..8]);
        let (len, e_index) = match &self.cipher {
            Cipher::Cm { .. } => {
                let at = buf.len() - 14;
                (at, be32(&buf[at..at + 4]))
            }
            Cipher::Gcm { .. } => {
                let at = buf.len() - 4;
                (buf.len() - overhead, be32(&buf[at..]))
            }
        };
        if e_index & 0x8000_0000 == 0 {
            return Err(SrtpError::Malformed);
        }
        let index = e_index & 0x7FFF_FFFF;
        let slot = self.rtcp.iter().position(|s| s.ssrc == ssrc);
        if let Some(i) = slot {
            self.rtcp[i].replay.check(index as u64)?;
        } else if self.rtcp.len() >= MAX_STREAMS {
            return Err(SrtpError::TooManyStreams);
        }
        match &self.cipher {
            Cipher::Cm { rtcp, .. } => {
                let expected = rtcp.tag(&[&buf[..len + 4]]);
                let mut mac_ok = subtle::Choice::from(1u8);
                for (a, b) in buf[len + 4..len + 14].iter().zip(&expected[..10]) {
                    mac_ok &= subtle::ConstantTimeEq::ct_eq(a, b);
                }
                if !bool::from(mac_ok) {
                    return Err(SrtpError::Authentication);
                }
                rtcp.apply(ssrc, index as u64, &mut buf[8..len]);
            }
            Cipher::Gcm { rtcp, .. } => {
                let nonce = rtcp.nonce(ssrc, index >> 16, index as u16);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_index.to_be_bytes());
                let (data, tail) = buf[8..].split_at_mut(len - 8);
                if !rtcp.aead.open(&nonce, &aad, data, &tail[..16]) {
                    return Err(SrtpError::Authentication);
                }
            }
        }
        match slot {
            Some(i) => self.rtcp[i].replay.accept(index as u64),
            None => {
                let mut replay = ReplayWindow::default();
                replay.accept(index as u64);
                self.rtcp.push(RtcpStream {
                    ssrc,
                    index: 0,
                    replay,
                });
            }
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::srtp::protection_profile::ProtectionProfile as RtcProfile;

    const PROFILES: [(Profile, RtcProfile); 4] = [
        (Profile::AeadAes128Gcm, RtcProfile::AeadAes128Gcm),
        (Profile::AeadAes256Gcm, RtcProfile::AeadAes256Gcm),
        (
            Profile::Aes128CmHmacSha1_80,
            RtcProfile::Aes128CmHmacSha1_80,
        ),
        (
            Profile::Aes128CmHmacSha1_32,
            RtcProfile::Aes128CmHmacSha1_32,
        ),
    ];

    fn keys(p: Profile) -> (Vec<u8>, Vec<u8>) {
        let key = (0..p.key_len() as u8)
            .map(|i| i.wrapping_mul(7) ^ 0x5A)
            .collect();
        let salt = (0..p.salt_len() as u8)
            .map(|i| i.wrapping_mul(13) ^ 0xC3)
            .collect();
        (key, salt)
    }

    fn ours(p: Profile) -> Context {
        let (k, s) = keys(p);
        Context::new(p, &k, &s).unwrap()
    }

    fn theirs(p: Profile, rp: RtcProfile) -> rtc::srtp::context::Context {
        let (k, s) = keys(p);
        let provider = rtc::crypto::default_provider().unwrap();
        rtc::srtp::context::Context::new(
            &k,
            &s,
            rp,
            None,
            Some(rtc::srtp::option::srtcp_replay_protection(64)),
            provider.crypto(),
        )
        .unwrap()
    }

    /// An RTP packet: marker, PT 96, a one-byte extension, a CSRC, `payload_len` bytes.
    fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x91, 0xE0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, b'a', 0, 0]); // MID "a"
        p.extend((0..payload_len).map(|i| (i as u8).wrapping_add(seq as u8)));
        p
    }

    /// A receiver report from `ssrc` with one block.
    fn rtcp(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x81, 201, 0, 7];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&0xAABB_CCDDu32.to_be_bytes());
        p.extend_from_slice(&[
            1, 0, 0, 2, 0, 0, 0x12, 0x34, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        p
    }

    fn protect(c: &mut Context, packet: &[u8]) -> Vec<u8> {
        let mut buf = packet.to_vec();
        buf.resize(packet.len() + c.profile().rtp_overhead(), 0);
        let n = c.protect_rtp(&mut buf, packet.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn protect_rtcp(c: &mut Context, packet: &[u8]) -> Vec<u8> {
        let mut buf = packet.to_vec();
        buf.resize(packet.len() + c.profile().rtcp_overhead(), 0);
        let n = c.protect_rtcp(&mut buf, packet.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn unprotect(c: &mut Context, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = packet.to_vec();
        let n = c.unprotect_rtp(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn rtp_agrees_with_rtc_byte_for_byte_both_ways_for_every_profile() {
        for (p, rp) in PROFILES {
            let (mut tx, mut rx) = (ours(p), ours(p));
            let (mut rtc_tx, mut rtc_rx) = (theirs(p, rp), theirs(p, rp));
            // Across a sequence wrap: the rollover counter must agree too.
            for (i, seq) in (65_500u16..=65_535).chain(0..40).enumerate() {
                let plain = rtp(seq, 0x1234_5678, 20 + i * 7);
                let mine = protect(&mut tx, &plain);
                let reference = rtc_tx.encrypt_rtp(&plain).unwrap();
                assert_eq!(&mine[..], &reference[..], "{p:?} seq {seq}");
                assert_eq!(mine.len(), plain.len() + p.rtp_overhead());
                assert_eq!(unprotect(&mut rx, &reference).unwrap(), plain, "{p:?}");
                assert_eq!(&rtc_rx.decrypt_rtp(&mine).unwrap()[..], &plain[..], "{p:?}");
            }
        }
    }

    #[test]
    fn rtcp_agrees_with_rtc_byte_for_byte_both_ways_for_every_profile() {
        for (p, rp) in PROFILES {
            let (mut tx, mut rx) = (ours(p), ours(p));
            let (mut rtc_tx, mut rtc_rx) = (theirs(p, rp), theirs(p, rp));
            for i in 0..5u32 {
                let plain = rtcp(0x0BAD_F00D + (i % 2));
                let mine = protect_rtcp(&mut tx, &plain);
                let reference = rtc_tx.encrypt_rtcp(&plain).unwrap();
                assert_eq!(&mine[..], &reference[..], "{p:?} #{i}");
                let mut buf = reference.to_vec();
                let n = rx.unprotect_rtcp(&mut buf).unwrap();
                assert_eq!(&buf[..n], &plain[..], "{p:?}");
                assert_eq!(
                    &rtc_rx.decrypt_rtcp(&mine).unwrap()[..],
                    &plain[..],
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn tampering_fails_authentication_and_changes_nothing() {
        for (p, _) in PROFILES {
            let (mut tx, mut rx) = (ours(p), ours(p));
            let good = protect(&mut tx, &rtp(10, 1, 50));
            for at in [0usize, 5, 20, good.len() - 1] {
                let mut bad = good.clone();
                bad[at] ^= 0x01;
                assert!(unprotect(&mut rx, &bad).is_err(), "{p:?} byte {at}");
            }
            // Nothing was learnt from the forgeries: the genuine packet still passes, once.
            assert_eq!(unprotect(&mut rx, &good).unwrap(), rtp(10, 1, 50));
            assert_eq!(unprotect(&mut rx, &good), Err(SrtpError::Replayed));
            // A wrong key never authenticates.
            let mut other = Context::new(p, &vec![9; p.key_len()], &vec![9; p.salt_len()]).unwrap();
            assert_eq!(unprotect(&mut other, &good), Err(SrtpError::Authentication));
            let r = protect_rtcp(&mut tx, &rtcp(5));
            let mut bad = r.clone();
            bad[10] ^= 0x80;
            assert_eq!(rx.unprotect_rtcp(&mut bad), Err(SrtpError::Authentication));
        }
    }

    #[test]
    fn replays_are_rejected_and_reordering_within_the_window_is_not() {
        let p = Profile::AeadAes128Gcm;
        let (mut tx, mut rx) = (ours(p), ours(p));
        let packets: Vec<Vec<u8>> = (0..100u16)
            .map(|s| protect(&mut tx, &rtp(s, 7, 30)))
            .collect();
        assert!(unprotect(&mut rx, &packets[50]).is_ok());
        assert!(unprotect(&mut rx, &packets[52]).is_ok());
        assert!(
            unprotect(&mut rx, &packets[51]).is_ok(),
            "late but in the window"
        );
        assert_eq!(unprotect(&mut rx, &packets[51]), Err(SrtpError::Replayed));
        assert_eq!(unprotect(&mut rx, &packets[52]), Err(SrtpError::Replayed));
        assert!(unprotect(&mut rx, &packets[99]).is_ok());
        assert!(
            unprotect(&mut rx, &packets[40]).is_ok(),
            "59 back: in the window"
        );
        assert_eq!(
            unprotect(&mut rx, &packets[30]),
            Err(SrtpError::Replayed),
            "69 back: too old"
        );
        // SRTCP too.
        let r = protect_rtcp(&mut tx, &rtcp(3));
        let mut once = r.clone();
        assert!(rx.unprotect_rtcp(&mut once).is_ok());
        let mut twice = r.clone();
        assert_eq!(rx.unprotect_rtcp(&mut twice), Err(SrtpError::Replayed));
    }

    #[test]
    fn rollover_counter_follows_wraps_and_late_packets_from_before_them() {
        assert_eq!(estimate_index(65_535, 0), Some(1 << 16));
        assert_eq!(estimate_index((1 << 16) | 2, 65_534), Some(65_534));
        assert_eq!(
            estimate_index((3 << 16) | 40_000, 39_000),
            Some((3 << 16) | 39_000)
        );
        assert_eq!(
            estimate_index((3 << 16) | 60_000, 100),
            Some((4 << 16) | 100)
        );
        assert_eq!(estimate_index(10, 65_000), None, "before the stream began");
        // Through the contexts: three wraps, with a packet from before the last wrap arriving
        // after it.
        let p = Profile::Aes128CmHmacSha1_80;
        let (mut tx, mut rx) = (ours(p), ours(p));
        let mut late = None;
        for i in 0..(3 * 65_536 + 10u32) {
            let seq = (i % 65_536) as u16;
            let packet = protect(&mut tx, &rtp(seq, 9, 4));
            if i == 3 * 65_536 - 2 {
                late = Some(packet);
                continue;
            }
            if i % 997 == 0 || i > 3 * 65_536 - 5 {
                unprotect(&mut rx, &packet).unwrap_or_else(|e| panic!("packet {i}: {e}"));
            }
        }
        assert_eq!(
            unprotect(&mut rx, &late.unwrap()).unwrap(),
            rtp(65_534, 9, 4)
        );
    }

    #[test]
    fn short_and_garbage_input_is_an_error_not_a_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        use rand::{Rng, SeedableRng};
        for (p, _) in PROFILES {
            let mut rx = ours(p);
            for len in 0..200 {
                let mut buf: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
                if len > 0 {
                    buf[0] = 0x80 | (buf[0] & 0x3F);
                }
                assert!(rx.unprotect_rtp(&mut buf.clone()).is_err());
                assert!(rx.unprotect_rtcp(&mut buf).is_err());
            }
            let mut tx = ours(p);
            let mut small = rtp(1, 1, 10);
            let len = small.len();
            assert_eq!(tx.protect_rtp(&mut small, len), Err(SrtpError::NoRoom));
        }
        assert_eq!(
            Context::new(Profile::AeadAes128Gcm, &[0; 32], &[0; 12]).err(),
            Some(SrtpError::KeyLength)
        );
    }
}
