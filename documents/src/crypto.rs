//! Encryption at rest of shared documents (scheme `AES-256-GCM-chunked-v1`).
//!
//! - Each document gets its own random 256-bit **data key** and a random 8-byte **nonce
//!   prefix**. Both are wrapped together by the **master key** (AES-256-GCM, random 96-bit nonce,
//!   the document id and master key id as associated data), and the wrapped blob is stored in
//!   the document's metadata (`EncryptionInfo.wrapped_key`, base64 of nonce ‖ ciphertext ‖ tag).
//! - The plaintext is cut into chunks of `chunk_size` bytes (64 KiB); chunk `i` is sealed with
//!   the data key under nonce `prefix ‖ i` (32-bit big-endian counter) and associated data
//!   `"tcdoc1" ‖ document id ‖ final flag`. The stored bytes are the sealed chunks back to back,
//!   each `len + 16` bytes. Every document has at least one chunk (an empty one for an empty
//!   file), and exactly its last chunk carries the final flag: reordering, truncation, appending
//!   or moving chunks between documents all fail authentication.
//! - Several master keys may be configured ([`KeyRing`]): the current one wraps new documents'
//!   keys, and each document is opened with the key its stored `master_key_id` names, so a
//!   rotated-out key keeps opening the documents it wrapped.
//! - Memory stays flat: one chunk at a time in each direction. A byte range is served by
//!   skipping whole sealed chunks (their size is fixed) and opening only the chunks it covers.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

pub const SCHEME: &str = "AES-256-GCM-chunked-v1";
/// Plaintext bytes per sealed chunk.
pub const CHUNK_SIZE: u32 = 64 * 1024;
/// AES-GCM authentication tag length.
pub const TAG_LEN: u64 = 16;
const NONCE_PREFIX_LEN: usize = 8;
const WRAP_NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("master key must be base64 of exactly 32 bytes")]
    BadMasterKey,
    #[error("the document's key cannot be unwrapped (wrong master key or altered metadata)")]
    Unwrap,
    #[error("unsupported encryption scheme or layout")]
    Unsupported,
    #[error("document chunk {0} failed authentication")]
    Chunk(u64),
    #[error("stored document is truncated")]
    Truncated,
    #[error("stored document has trailing bytes")]
    Trailing,
    #[error("document too large to encrypt")]
    TooLarge,
    #[error("master key id {0:?} is configured more than once")]
    DuplicateKeyId(String),
    #[error("master key id {0:?} is not configured")]
    UnknownKeyId(String),
}

/// The master key that wraps every document's data key. Its `Debug` shows only its id.
pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// From `documents.master_key` (base64 of 32 bytes) and `documents.master_key_id`.
    pub fn from_base64(id: &str, b64: &str) -> Result<MasterKey, CryptoError> {
        let raw = STANDARD
            .decode(b64.trim())
            .map_err(|_| CryptoError::BadMasterKey)?;
        if raw.len() != 32 {
            return Err(CryptoError::BadMasterKey);
        }
        Ok(MasterKey {
            id: id.to_string(),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&raw)),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn wrap_aad(&self, document: &str) -> Vec<u8> {
        let mut aad = b"tckey1\0".to_vec();
        aad.extend_from_slice(self.id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(document.as_bytes());
        aad
    }
}

/// The configured master keys: the current one wraps new documents' data keys, and any of them
/// unwraps the documents whose stored `master_key_id` names it. `Debug` shows ids only.
#[derive(Debug)]
pub struct KeyRing {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl KeyRing {
    /// `current` for new documents, `previous` only for reading. Ids must be distinct: a
    /// repeated id could not tell which key wrapped a document.
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Result<KeyRing, CryptoError> {
        let mut seen = std::collections::HashSet::new();
        for key in std::iter::once(&current).chain(&previous) {
            if !seen.insert(key.id.as_str()) {
                return Err(CryptoError::DuplicateKeyId(key.id.clone()));
            }
        }
        Ok(KeyRing { current, previous })
    }

    /// The key new documents are wrapped with.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The key with id `id`, current or previous.
    pub fn get(&self, id: &str) -> Result<&MasterKey, CryptoError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKeyId(id.to_string()))
    }
}

/// One document's data key and nonce prefix.
pub struct DataKey {
    cipher: Aes256Gcm,
    prefix: [u8; NONCE_PREFIX_LEN],
}

impl DataKey {
    /// A fresh random key and nonce prefix, returned with their wrapped form (base64) for the
    /// metadata of `document`.
    pub fn generate(master: &MasterKey, document: &str) -> (DataKey, String) {
        let key: [u8; 32] = rand::random();
        let prefix: [u8; NONCE_PREFIX_LEN] = rand::random();
        let wrap_nonce: [u8; WRAP_NONCE_LEN] = rand::random();
        let mut buf = key.to_vec();
        buf.extend_from_slice(&prefix);
        master
            .cipher
            .encrypt_in_place(
                Nonce::from_slice(&wrap_nonce),
                &master.wrap_aad(document),
                &mut buf,
            )
            // Only fails for messages over 64 GiB; this one is 40 bytes.
            .expect("AES-GCM seals 40 bytes");
        let mut wrapped = wrap_nonce.to_vec();
        wrapped.extend_from_slice(&buf);
        let dk = DataKey {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
            prefix,
        };
        (dk, STANDARD.encode(wrapped))
    }

    /// Unwrap the data key stored with `document`.
    pub fn unwrap(
        master: &MasterKey,
        document: &str,
        wrapped: &str,
    ) -> Result<DataKey, CryptoError> {
        let raw = STANDARD.decode(wrapped).map_err(|_| CryptoError::Unwrap)?;
        if raw.len() != WRAP_NONCE_LEN + 32 + NONCE_PREFIX_LEN + TAG_LEN as usize {
            return Err(CryptoError::Unwrap);
        }
        let (nonce, sealed) = raw.split_at(WRAP_NONCE_LEN);
        let mut buf = sealed.to_vec();
        master
            .cipher
            .decrypt_in_place(
                Nonce::from_slice(nonce),
                &master.wrap_aad(document),
                &mut buf,
            )
            .map_err(|_| CryptoError::Unwrap)?;
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        prefix.copy_from_slice(&buf[32..]);
        Ok(DataKey {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&buf[..32])),
            prefix,
        })
    }

    fn nonce(&self, index: u64) -> Result<[u8; 12], CryptoError> {
        let counter = u32::try_from(index).map_err(|_| CryptoError::TooLarge)?;
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.prefix);
        n[NONCE_PREFIX_LEN..].copy_from_slice(&counter.to_be_bytes());
        Ok(n)
    }
}

fn chunk_aad(document: &str, last: bool) -> Vec<u8> {
    let mut aad = b"tcdoc1\0".to_vec();
    aad.extend_from_slice(document.as_bytes());
    aad.push(0);
    aad.push(u8::from(last));
    aad
}

/// Number of sealed chunks of a `size`-byte plaintext (at least one).
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size)).max(1)
}

/// Stored (ciphertext) size of a `size`-byte plaintext.
pub fn sealed_size(size: u64, chunk_size: u32) -> u64 {
    size + chunk_count(size, chunk_size) * TAG_LEN
}

/// Seals a plaintext stream chunk by chunk.
pub struct Encryptor {
    key: DataKey,
    document: String,
    chunk_size: usize,
    index: u64,
    pending: Vec<u8>,
}

impl Encryptor {
    pub fn new(key: DataKey, document: &str) -> Encryptor {
        Encryptor {
            key,
            document: document.to_string(),
            chunk_size: CHUNK_SIZE as usize,
            index: 0,
            pending: Vec::with_capacity(CHUNK_SIZE as usize),
        }
    }

    fn seal(&mut self, mut chunk: Vec<u8>, last: bool) -> Result<Bytes, CryptoError> {
        let nonce = self.key.nonce(self.index)?;
        self.key
            .cipher
            .encrypt_in_place(
                Nonce::from_slice(&nonce),
                &chunk_aad(&self.document, last),
                &mut chunk,
            )
            .map_err(|_| CryptoError::TooLarge)?;
        self.index += 1;
        Ok(Bytes::from(chunk))
    }

    /// Feed plaintext; returns the chunks sealed so far. A full chunk is held back until more
    /// data shows it is not the last one.
    pub fn update(&mut self, mut data: &[u8]) -> Result<Vec<Bytes>, CryptoError> {
        let mut out = Vec::new();
        while !data.is_empty() {
            if self.pending.len() == self.chunk_size {
                let full =
                    std::mem::replace(&mut self.pending, Vec::with_capacity(self.chunk_size));
                out.push(self.seal(full, false)?);
            }
            let take = (self.chunk_size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(out)
    }

    /// Seal the last chunk (possibly empty).
    pub fn finish(mut self) -> Result<Bytes, CryptoError> {
        let last = std::mem::take(&mut self.pending);
        self.seal(last, true)
    }
}

/// Opens sealed chunks of one document, from chunk `first` on, given the ciphertext starting at
/// that chunk's first byte.
pub struct Decryptor {
    key: DataKey,
    document: String,
    chunk_size: u64,
    size: u64,
    chunks: u64,
    index: u64,
    buf: Vec<u8>,
}

impl Decryptor {
    /// `size` is the plaintext size from the metadata. Sealed chunks before `first` are not
    /// given to this decryptor: skip [`Decryptor::offset_of`]`(first)` ciphertext bytes.
    pub fn new(
        key: DataKey,
        document: &str,
        chunk_size: u32,
        size: u64,
        first: u64,
    ) -> Result<Decryptor, CryptoError> {
        if chunk_size == 0 {
            return Err(CryptoError::Unsupported);
        }
        Ok(Decryptor {
            key,
            document: document.to_string(),
            chunk_size: u64::from(chunk_size),
            size,
            chunks: chunk_count(size, chunk_size),
            index: first,
            buf: Vec::new(),
        })
    }

    /// Ciphertext offset of sealed chunk `index`.
    pub fn offset_of(chunk_size: u32, index: u64) -> u64 {
        index * (u64::from(chunk_size) + TAG_LEN)
    }

    /// Sealed length of the chunk at `self.index`.
    fn current_len(&self) -> u64 {
        let plain = if self.index + 1 < self.chunks {
            self.chunk_size
        } else {
            self.size - (self.chunks - 1) * self.chunk_size
        };
        plain + TAG_LEN
    }

    /// Whether every chunk has been opened.
    pub fn done(&self) -> bool {
        self.index >= self.chunks
    }

    /// Index of the next chunk to open.
    pub fn next_chunk(&self) -> u64 {
        self.index
    }

    /// Feed ciphertext; returns the plaintext of every chunk completed by it, with its index.
    pub fn update(&mut self, mut data: &[u8]) -> Result<Vec<(u64, Bytes)>, CryptoError> {
        let mut out = Vec::new();
        while !data.is_empty() {
            if self.done() {
                return Err(CryptoError::Trailing);
            }
            let want = self.current_len() as usize;
            let take = (want - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == want {
                let mut chunk = std::mem::take(&mut self.buf);
                let last = self.index + 1 == self.chunks;
                let nonce = self.key.nonce(self.index)?;
                self.key
                    .cipher
                    .decrypt_in_place(
                        Nonce::from_slice(&nonce),
                        &chunk_aad(&self.document, last),
                        &mut chunk,
                    )
                    .map_err(|_| CryptoError::Chunk(self.index))?;
                out.push((self.index, Bytes::from(chunk)));
                self.index += 1;
            }
        }
        Ok(out)
    }

    /// The ciphertext ended: an error unless every chunk was opened.
    pub fn finish(&self) -> Result<(), CryptoError> {
        if self.done() {
            Ok(())
        } else {
            Err(CryptoError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_base64("k1", &STANDARD.encode([7u8; 32])).expect("key")
    }

    fn seal(doc: &str, plain: &[u8], pieces: usize) -> (String, Vec<u8>) {
        let m = master();
        let (dk, wrapped) = DataKey::generate(&m, doc);
        let mut enc = Encryptor::new(dk, doc);
        let mut out = Vec::new();
        for piece in plain.chunks(pieces.max(1)) {
            for c in enc.update(piece).expect("seal") {
                out.extend_from_slice(&c);
            }
        }
        out.extend_from_slice(&enc.finish().expect("seal"));
        (wrapped, out)
    }

    fn open(doc: &str, wrapped: &str, size: u64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let dk = DataKey::unwrap(&master(), doc, wrapped)?;
        let mut dec = Decryptor::new(dk, doc, CHUNK_SIZE, size, 0)?;
        let mut out = Vec::new();
        for piece in sealed.chunks(10_000) {
            for (_, c) in dec.update(piece)? {
                out.extend_from_slice(&c);
            }
        }
        dec.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_boundary() {
        let cs = CHUNK_SIZE as usize;
        for len in [0, 1, cs - 1, cs, cs + 1, 2 * cs, 3 * cs + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for pieces in [1000, cs, 7 * cs] {
                let (wrapped, sealed) = seal("d1", &plain, pieces);
                assert_eq!(sealed.len() as u64, sealed_size(len as u64, CHUNK_SIZE));
                // Ciphertext equals plaintext by chance with probability 2^-(8·len): only compare
                // where that cannot happen (a 1-byte document collided once in CI).
                if len >= 16 {
                    assert_ne!(&sealed[..len], &plain[..]);
                }
                assert_eq!(
                    open("d1", &wrapped, len as u64, &sealed).expect("open"),
                    plain
                );
            }
        }
    }

    #[test]
    fn tampering_is_detected() {
        let cs = CHUNK_SIZE as usize;
        let plain = vec![42u8; 2 * cs + 100];
        let size = plain.len() as u64;
        let (wrapped, sealed) = seal("d1", &plain, cs);
        let chunk = cs + TAG_LEN as usize;
        // A flipped bit.
        let mut bad = sealed.clone();
        bad[cs + 40] ^= 1;
        assert_eq!(open("d1", &wrapped, size, &bad), Err(CryptoError::Chunk(1)));
        // Truncated at a chunk boundary (the metadata still says the full size).
        assert_eq!(
            open("d1", &wrapped, size, &sealed[..2 * chunk]),
            Err(CryptoError::Truncated)
        );
        // Truncated, with the metadata's size lowered to match: the last chunk it now expects
        // was not sealed as the final one.
        assert_eq!(
            open("d1", &wrapped, 2 * cs as u64, &sealed[..2 * chunk]),
            Err(CryptoError::Chunk(1))
        );
        // Reordered chunks.
        let mut swapped = sealed[chunk..2 * chunk].to_vec();
        swapped.extend_from_slice(&sealed[..chunk]);
        swapped.extend_from_slice(&sealed[2 * chunk..]);
        assert_eq!(
            open("d1", &wrapped, size, &swapped),
            Err(CryptoError::Chunk(0))
        );
        // Trailing garbage.
        let mut long = sealed.clone();
        long.push(0);
        assert_eq!(
            open("d1", &wrapped, size, &long),
            Err(CryptoError::Trailing)
        );
        // Another document's id: the key does not unwrap.
        assert!(matches!(
            open("d2", &wrapped, size, &sealed),
            Err(CryptoError::Unwrap)
        ));
        // Another master key.
        let other = MasterKey::from_base64("k1", &STANDARD.encode([8u8; 32])).expect("key");
        assert!(DataKey::unwrap(&other, "d1", &wrapped).is_err());
    }

    #[test]
    fn opens_from_a_middle_chunk() {
        let cs = CHUNK_SIZE as usize;
        let plain: Vec<u8> = (0..3 * cs + 5).map(|i| (i % 253) as u8).collect();
        let (wrapped, sealed) = seal("d1", &plain, 4096);
        let dk = DataKey::unwrap(&master(), "d1", &wrapped).expect("unwrap");
        let mut dec = Decryptor::new(dk, "d1", CHUNK_SIZE, plain.len() as u64, 2).expect("dec");
        let skip = Decryptor::offset_of(CHUNK_SIZE, 2) as usize;
        let out = dec.update(&sealed[skip..]).expect("open");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, 2);
        assert_eq!(&out[0].1[..], &plain[2 * cs..3 * cs]);
        assert_eq!(&out[1].1[..], &plain[3 * cs..]);
        dec.finish().expect("complete");
    }

    fn key(id: &str, byte: u8) -> MasterKey {
        MasterKey::from_base64(id, &STANDARD.encode([byte; 32])).expect("key")
    }

    #[test]
    fn key_ring_finds_each_key_by_id() {
        let ring = KeyRing::new(key("k2", 2), vec![key("k0", 0), key("k1", 1)]).expect("ring");
        assert_eq!(ring.current().id(), "k2");
        // A document wrapped by a retired key opens with the ring, and only with that key.
        let (_, wrapped) = DataKey::generate(&key("k1", 1), "d1");
        let k1 = ring.get("k1").expect("k1 configured");
        assert_eq!(k1.id(), "k1");
        assert!(DataKey::unwrap(k1, "d1", &wrapped).is_ok());
        assert!(DataKey::unwrap(ring.get("k0").expect("k0"), "d1", &wrapped).is_err());
        assert!(DataKey::unwrap(ring.current(), "d1", &wrapped).is_err());
        assert_eq!(ring.get("k2").expect("current").id(), "k2");
        // New documents go to the current key.
        let (_, fresh) = DataKey::generate(ring.current(), "d2");
        assert!(DataKey::unwrap(&key("k2", 2), "d2", &fresh).is_ok());
        let shown = format!("{ring:?}");
        assert!(shown.contains("k0") && shown.contains("k2"), "{shown}");
    }

    #[test]
    fn key_ring_refuses_unknown_and_duplicate_ids() {
        let ring = KeyRing::new(key("k2", 2), vec![key("k1", 1)]).expect("ring");
        assert_eq!(
            ring.get("k9").err(),
            Some(CryptoError::UnknownKeyId("k9".into()))
        );
        assert_eq!(
            ring.get("").err(),
            Some(CryptoError::UnknownKeyId("".into()))
        );
        assert_eq!(
            KeyRing::new(key("k1", 2), vec![key("k1", 1)]).err(),
            Some(CryptoError::DuplicateKeyId("k1".into()))
        );
        assert_eq!(
            KeyRing::new(key("k2", 2), vec![key("k0", 0), key("k0", 1)]).err(),
            Some(CryptoError::DuplicateKeyId("k0".into()))
        );
        assert!(KeyRing::new(key("k1", 1), Vec::new()).is_ok());
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert_eq!(
            MasterKey::from_base64("k", "c2hvcnQ=").err(),
            Some(CryptoError::BadMasterKey)
        );
        assert_eq!(
            MasterKey::from_base64("k", "not base64!").err(),
            Some(CryptoError::BadMasterKey)
        );
        let m = master();
        assert!(!format!("{m:?}").contains("7"), "{m:?}");
    }
}
