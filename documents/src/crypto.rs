//! Encryption at rest of shared documents (scheme `AES-256-GCM-chunked-v2`; documents stored
//! under `-v1` still open).
//!
//! - Each document gets its own random 256-bit **data key** and a random 8-byte **nonce
//!   prefix**. Both are wrapped together by the **master key** (AES-256-GCM, random 96-bit nonce,
//!   the master key id, consultation id and document id as associated data), and the wrapped
//!   blob is stored in the document's metadata (`EncryptionInfo.wrapped_key`, base64 of nonce ‖
//!   ciphertext ‖ tag).
//! - The plaintext is cut into chunks of `chunk_size` bytes (64 KiB); chunk `i` is sealed with
//!   the data key under nonce `prefix ‖ i` (32-bit big-endian counter, `i < 2³² − 1`) and
//!   associated data `"tcdoc2" ‖ consultation id ‖ document id ‖ final flag`. The stored bytes
//!   are the sealed chunks back to back, each `len + 16` bytes. Every document has at least one
//!   chunk (an empty one for an empty file), and exactly its last chunk carries the final flag:
//!   reordering, truncation, appending, or moving chunks (or a whole document row) between
//!   documents or consultations all fail authentication.
//! - The metadata a database reader could misuse (file name, uploader, plaintext SHA-256) is
//!   sealed with the same data key under the one nonce no chunk uses, `prefix ‖ 0xFFFFFFFF`,
//!   with associated data `"tcmeta2" ‖ consultation id ‖ document id`
//!   (`EncryptionInfo.sealed_meta`). The store keeps in the clear only what it needs to serve
//!   and account: ids, size, detected type, uploader role, upload time.
//! - Scheme `-v1` (before consultations were bound and metadata sealed) differs only in its
//!   associated data (`"tckey1"`/`"tcdoc1"`, no consultation) and has no sealed metadata.
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

/// The scheme of new documents.
pub const SCHEME: &str = "AES-256-GCM-chunked-v2";
/// The first scheme: opened, never written.
pub const SCHEME_V1: &str = "AES-256-GCM-chunked-v1";
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
    #[error("the document's sealed metadata failed authentication")]
    Metadata,
}

/// What every seal of one document is bound to: its scheme, consultation and id. Key, chunks and
/// metadata sealed for one binding open under no other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    v1: bool,
    consultation: String,
    document: String,
}

impl Binding {
    /// A new document (the current scheme).
    pub fn new(consultation: &str, document: &str) -> Binding {
        Binding {
            v1: false,
            consultation: consultation.to_string(),
            document: document.to_string(),
        }
    }

    /// A stored document, by the scheme its metadata names.
    pub fn stored(
        scheme: &str,
        consultation: &str,
        document: &str,
    ) -> Result<Binding, CryptoError> {
        let v1 = match scheme {
            SCHEME => false,
            SCHEME_V1 => true,
            _ => return Err(CryptoError::Unsupported),
        };
        Ok(Binding {
            v1,
            consultation: consultation.to_string(),
            document: document.to_string(),
        })
    }

    /// Whether this scheme seals metadata.
    pub fn seals_metadata(&self) -> bool {
        !self.v1
    }

    fn aad(&self, label: &[u8], master_key: Option<&str>, tail: Option<u8>) -> Vec<u8> {
        let mut aad = label.to_vec();
        aad.push(0);
        if let Some(id) = master_key {
            aad.extend_from_slice(id.as_bytes());
            aad.push(0);
        }
        if !self.v1 {
            aad.extend_from_slice(self.consultation.as_bytes());
            aad.push(0);
        }
        aad.extend_from_slice(self.document.as_bytes());
        if let Some(byte) = tail {
            aad.push(0);
            aad.push(byte);
        }
        aad
    }

    fn wrap_aad(&self, master_key: &str) -> Vec<u8> {
        let label: &[u8] = if self.v1 { b"tckey1" } else { b"tckey2" };
        self.aad(label, Some(master_key), None)
    }

    fn chunk_aad(&self, last: bool) -> Vec<u8> {
        let label: &[u8] = if self.v1 { b"tcdoc1" } else { b"tcdoc2" };
        self.aad(label, None, Some(u8::from(last)))
    }

    fn meta_aad(&self) -> Vec<u8> {
        self.aad(b"tcmeta2", None, None)
    }
}

/// The master key that wraps every document's data key. Its `Debug` shows only its id.
pub struct MasterKey {
    id: String,
    pub(crate) cipher: Aes256Gcm,
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
#[derive(Clone)]
pub struct DataKey {
    cipher: Aes256Gcm,
    prefix: [u8; NONCE_PREFIX_LEN],
}

impl DataKey {
    /// A fresh random key and nonce prefix, returned with their wrapped form (base64) for the
    /// metadata of the document `binding` names.
    pub fn generate(master: &MasterKey, binding: &Binding) -> (DataKey, String) {
        let key: [u8; 32] = rand::random();
        let prefix: [u8; NONCE_PREFIX_LEN] = rand::random();
        let wrap_nonce: [u8; WRAP_NONCE_LEN] = rand::random();
        let mut buf = key.to_vec();
        buf.extend_from_slice(&prefix);
        master
            .cipher
            .encrypt_in_place(
                Nonce::from_slice(&wrap_nonce),
                &binding.wrap_aad(&master.id),
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

    /// Unwrap the data key stored with the document `binding` names.
    pub fn unwrap(
        master: &MasterKey,
        binding: &Binding,
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
                &binding.wrap_aad(&master.id),
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

    /// The nonce of chunk `index`; the last counter value is the metadata's.
    fn nonce(&self, index: u64) -> Result<[u8; 12], CryptoError> {
        let counter = u32::try_from(index)
            .ok()
            .filter(|&c| c != META_COUNTER)
            .ok_or(CryptoError::TooLarge)?;
        Ok(self.nonce_for(counter))
    }

    fn nonce_for(&self, counter: u32) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.prefix);
        n[NONCE_PREFIX_LEN..].copy_from_slice(&counter.to_be_bytes());
        n
    }

    /// Seal the document's metadata `plain` (base64 of ciphertext ‖ tag). Once per document:
    /// its nonce is fixed.
    pub fn seal_metadata(&self, binding: &Binding, plain: &[u8]) -> String {
        let mut buf = plain.to_vec();
        self.cipher
            .encrypt_in_place(
                Nonce::from_slice(&self.nonce_for(META_COUNTER)),
                &binding.meta_aad(),
                &mut buf,
            )
            // Only fails for messages over 64 GiB; metadata is a few hundred bytes.
            .expect("AES-GCM seals the metadata");
        STANDARD.encode(buf)
    }

    /// Open what [`DataKey::seal_metadata`] sealed for the same binding.
    pub fn open_metadata(&self, binding: &Binding, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let mut buf = STANDARD.decode(sealed).map_err(|_| CryptoError::Metadata)?;
        self.cipher
            .decrypt_in_place(
                Nonce::from_slice(&self.nonce_for(META_COUNTER)),
                &binding.meta_aad(),
                &mut buf,
            )
            .map_err(|_| CryptoError::Metadata)?;
        Ok(buf)
    }
}

/// The nonce counter reserved for the sealed metadata (no chunk ever gets it).
const META_COUNTER: u32 = u32::MAX;

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
    binding: Binding,
    chunk_size: usize,
    index: u64,
    pending: Vec<u8>,
}

impl Encryptor {
    pub fn new(key: DataKey, binding: &Binding) -> Encryptor {
        Encryptor {
            key,
            binding: binding.clone(),
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
                &self.binding.chunk_aad(last),
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
    binding: Binding,
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
        binding: &Binding,
        chunk_size: u32,
        size: u64,
        first: u64,
    ) -> Result<Decryptor, CryptoError> {
        if chunk_size == 0 {
            return Err(CryptoError::Unsupported);
        }
        Ok(Decryptor {
            key,
            binding: binding.clone(),
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
                        &self.binding.chunk_aad(last),
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

    /// Document `doc` of consultation `c1`.
    fn b(doc: &str) -> Binding {
        Binding::new("c1", doc)
    }

    fn seal(doc: &str, plain: &[u8], pieces: usize) -> (String, Vec<u8>) {
        seal_bound(&b(doc), plain, pieces)
    }

    fn seal_bound(binding: &Binding, plain: &[u8], pieces: usize) -> (String, Vec<u8>) {
        let m = master();
        let (dk, wrapped) = DataKey::generate(&m, binding);
        let mut enc = Encryptor::new(dk, binding);
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
        open_bound(&b(doc), wrapped, size, sealed)
    }

    fn open_bound(
        binding: &Binding,
        wrapped: &str,
        size: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let dk = DataKey::unwrap(&master(), binding, wrapped)?;
        let mut dec = Decryptor::new(dk, binding, CHUNK_SIZE, size, 0)?;
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
        assert!(DataKey::unwrap(&other, &b("d1"), &wrapped).is_err());
    }

    #[test]
    fn a_document_moved_to_another_consultation_does_not_open() {
        let cs = CHUNK_SIZE as usize;
        let plain = vec![9u8; cs + 10];
        let size = plain.len() as u64;
        let (wrapped, sealed) = seal("d1", &plain, cs);
        let elsewhere = Binding::new("c2", "d1");
        // The key is bound to the consultation...
        assert_eq!(
            DataKey::unwrap(&master(), &elsewhere, &wrapped).err(),
            Some(CryptoError::Unwrap)
        );
        // ...and so is every chunk, even with the right key in hand.
        let dk = DataKey::unwrap(&master(), &b("d1"), &wrapped).expect("unwrap");
        let mut dec = Decryptor::new(dk, &elsewhere, CHUNK_SIZE, size, 0).expect("dec");
        assert_eq!(dec.update(&sealed).err(), Some(CryptoError::Chunk(0)));
        assert_eq!(
            open("d1", &wrapped, size, &sealed).expect("in place"),
            plain
        );
    }

    #[test]
    fn metadata_opens_only_with_its_key_and_binding() {
        let (dk, wrapped) = DataKey::generate(&master(), &b("d1"));
        let sealed = dk.seal_metadata(&b("d1"), br#"{"filename":"scan.pdf"}"#);
        assert!(!sealed.contains("scan"));
        let again = DataKey::unwrap(&master(), &b("d1"), &wrapped).expect("unwrap");
        assert_eq!(
            again.open_metadata(&b("d1"), &sealed).expect("open"),
            br#"{"filename":"scan.pdf"}"#
        );
        for binding in [b("d2"), Binding::new("c2", "d1")] {
            assert_eq!(
                again.open_metadata(&binding, &sealed).err(),
                Some(CryptoError::Metadata)
            );
        }
        let mut raw = STANDARD.decode(&sealed).expect("b64");
        raw[0] ^= 1;
        assert_eq!(
            again.open_metadata(&b("d1"), &STANDARD.encode(raw)).err(),
            Some(CryptoError::Metadata)
        );
        assert_eq!(
            again.open_metadata(&b("d1"), "not base64!").err(),
            Some(CryptoError::Metadata)
        );
        let (other, _) = DataKey::generate(&master(), &b("d1"));
        assert!(other.open_metadata(&b("d1"), &sealed).is_err());
        // The metadata's nonce is never a chunk's.
        assert_eq!(
            dk.nonce(u64::from(META_COUNTER)),
            Err(CryptoError::TooLarge)
        );
        assert!(dk.nonce(u64::from(META_COUNTER) - 1).is_ok());
    }

    #[test]
    fn documents_sealed_under_v1_still_open() {
        // v1's associated data, byte for byte as it was written before v2 existed.
        let v1 = Binding::stored(SCHEME_V1, "c1", "d1").expect("v1");
        assert_eq!(v1.wrap_aad("k1"), b"tckey1\0k1\0d1");
        assert_eq!(v1.chunk_aad(true), b"tcdoc1\0d1\0\x01");
        assert!(!v1.seals_metadata());
        let v2 = Binding::stored(SCHEME, "c1", "d1").expect("v2");
        assert_eq!(v2, b("d1"));
        assert_eq!(v2.wrap_aad("k1"), b"tckey2\0k1\0c1\0d1");
        assert_eq!(v2.chunk_aad(false), b"tcdoc2\0c1\0d1\0\x00");
        let plain = b"an old scan".to_vec();
        let (wrapped, sealed) = seal_bound(&v1, &plain, 4);
        assert_eq!(
            open_bound(&v1, &wrapped, plain.len() as u64, &sealed).expect("v1 opens"),
            plain
        );
        // Not interchangeable: v1 material does not open as v2.
        assert!(open_bound(&v2, &wrapped, plain.len() as u64, &sealed).is_err());
        assert_eq!(
            Binding::stored("ROT13-v0", "c1", "d1").err(),
            Some(CryptoError::Unsupported)
        );
    }

    #[test]
    fn opens_from_a_middle_chunk() {
        let cs = CHUNK_SIZE as usize;
        let plain: Vec<u8> = (0..3 * cs + 5).map(|i| (i % 253) as u8).collect();
        let (wrapped, sealed) = seal("d1", &plain, 4096);
        let dk = DataKey::unwrap(&master(), &b("d1"), &wrapped).expect("unwrap");
        let mut dec = Decryptor::new(dk, &b("d1"), CHUNK_SIZE, plain.len() as u64, 2).expect("dec");
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
        let (_, wrapped) = DataKey::generate(&key("k1", 1), &b("d1"));
        let k1 = ring.get("k1").expect("k1 configured");
        assert_eq!(k1.id(), "k1");
        assert!(DataKey::unwrap(k1, &b("d1"), &wrapped).is_ok());
        assert!(DataKey::unwrap(ring.get("k0").expect("k0"), &b("d1"), &wrapped).is_err());
        assert!(DataKey::unwrap(ring.current(), &b("d1"), &wrapped).is_err());
        assert_eq!(ring.get("k2").expect("current").id(), "k2");
        // New documents go to the current key.
        let (_, fresh) = DataKey::generate(ring.current(), &b("d2"));
        assert!(DataKey::unwrap(&key("k2", 2), &b("d2"), &fresh).is_ok());
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
