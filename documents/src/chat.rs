//! Chat at rest (scheme `AES-256-GCM-chat-v1`): every consultation's chat and notices, sealed.
//!
//! - Each consultation gets its own random 256-bit **chat key**, wrapped by the documents
//!   **master key** (AES-256-GCM, random 96-bit nonce; associated data `"tcchatkey1"`, the
//!   master key id and the consultation id) and stored once per consultation
//!   ([`ChatKeyRecord`]); key rotation works as for documents (the stored `master_key_id`
//!   names the key that opens it).
//! - Each message's sender id, sender name and text are sealed together with the chat key under
//!   a random 96-bit nonce (nonce ‖ ciphertext ‖ tag, base64), with associated data
//!   `"tcchat1"`, the consultation id and every field kept in the clear (message id, sequence,
//!   time, kind, sender role): a row moved to another consultation, or with its clear fields
//!   altered, fails to open. Random nonces are safe here: a consultation's chat is far below
//!   the 2³² messages per key that bound their collision risk.
//! - [`ChatArchive`] implements the consultation's [`ChatRecorder`]: messages are queued (the
//!   consultation is locked while it records) and written in order by one task, each retried
//!   for a while if the store is unavailable; what still fails is logged by id and lost (the
//!   live call is not held up by storage). [`ChatArchive::read`] opens a consultation's record
//!   for its practitioner.

use crate::crypto::{CryptoError, KeyRing, MasterKey};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use teleconsult_consultation::{ChatMessage, ChatRecorder, ConsultationId, Role};
use teleconsult_store::{ChatKeyRecord, ChatStore, StoreError, StoredChatMessage};
use tokio::sync::mpsc;

/// The scheme of chat keys and messages.
pub const CHAT_SCHEME: &str = "AES-256-GCM-chat-v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// One consultation's chat key.
#[derive(Clone)]
pub struct ChatKey {
    cipher: Aes256Gcm,
}

fn key_aad(master_key: &str, consultation: &str) -> Vec<u8> {
    let mut aad = b"tcchatkey1\0".to_vec();
    aad.extend_from_slice(master_key.as_bytes());
    aad.push(0);
    aad.extend_from_slice(consultation.as_bytes());
    aad
}

fn message_aad(m: &StoredChatMessage) -> Vec<u8> {
    format!(
        "tcchat1\0{}\0{}\0{}\0{}\0{}\0{}",
        m.consultation, m.id, m.seq, m.at, m.kind, m.sender_role
    )
    .into_bytes()
}

/// The sealed part of a message.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    from: String,
    display_name: String,
    text: String,
}

impl ChatKey {
    /// A fresh key for `consultation`, with its wrapped form (base64).
    pub fn generate(master: &MasterKey, consultation: &str) -> (ChatKey, String) {
        let key: [u8; 32] = rand::random();
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut buf = key.to_vec();
        master
            .cipher
            .encrypt_in_place(
                Nonce::from_slice(&nonce),
                &key_aad(master.id(), consultation),
                &mut buf,
            )
            // Only fails for messages over 64 GiB; this one is 32 bytes.
            .expect("AES-GCM seals 32 bytes");
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&buf);
        (
            ChatKey {
                cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
            },
            STANDARD.encode(wrapped),
        )
    }

    /// Unwrap `consultation`'s stored key.
    pub fn unwrap(
        master: &MasterKey,
        consultation: &str,
        wrapped: &str,
    ) -> Result<ChatKey, CryptoError> {
        let raw = STANDARD.decode(wrapped).map_err(|_| CryptoError::Unwrap)?;
        if raw.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(CryptoError::Unwrap);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let mut buf = sealed.to_vec();
        master
            .cipher
            .decrypt_in_place(
                Nonce::from_slice(nonce),
                &key_aad(master.id(), consultation),
                &mut buf,
            )
            .map_err(|_| CryptoError::Unwrap)?;
        Ok(ChatKey {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&buf)),
        })
    }

    /// The stored form of `message` of `consultation`.
    pub fn seal(&self, consultation: &str, message: &ChatMessage) -> StoredChatMessage {
        let mut stored = StoredChatMessage {
            id: message.id.clone(),
            consultation: consultation.to_string(),
            seq: i64::try_from(message.seq).unwrap_or(i64::MAX),
            at: message.at,
            kind: message.kind.as_str().to_string(),
            sender_role: message.role.as_str().to_string(),
            sealed: String::new(),
        };
        let mut buf = serde_json::to_vec(&Sealed {
            from: message.from.as_str().to_string(),
            display_name: message.display_name.clone(),
            text: message.text.clone(),
        })
        .expect("plain strings serialise");
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.cipher
            .encrypt_in_place(Nonce::from_slice(&nonce), &message_aad(&stored), &mut buf)
            // Only fails for messages over 64 GiB; chat messages are a few KiB at most.
            .expect("AES-GCM seals a chat message");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        stored.sealed = STANDARD.encode(out);
        stored
    }

    /// Open a stored message.
    pub fn open(&self, stored: &StoredChatMessage) -> Result<ChatRecord, CryptoError> {
        let raw = STANDARD
            .decode(&stored.sealed)
            .map_err(|_| CryptoError::Metadata)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Metadata);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let mut buf = sealed.to_vec();
        self.cipher
            .decrypt_in_place(Nonce::from_slice(nonce), &message_aad(stored), &mut buf)
            .map_err(|_| CryptoError::Metadata)?;
        let inner: Sealed = serde_json::from_slice(&buf).map_err(|_| CryptoError::Metadata)?;
        Ok(ChatRecord {
            id: stored.id.clone(),
            at: stored.at,
            seq: stored.seq,
            kind: stored.kind.clone(),
            role: stored.sender_role.parse().unwrap_or(Role::Guest),
            from: inner.from,
            display_name: inner.display_name,
            text: inner.text,
        })
    }
}

/// One message of a consultation's record, opened (for its practitioner). Health data.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ChatRecord {
    pub id: String,
    /// Milliseconds since the Unix epoch (UTC).
    pub at: i64,
    pub seq: i64,
    /// `chat` or `notice`.
    pub kind: String,
    pub role: Role,
    /// Participant id of the sender.
    pub from: String,
    pub display_name: String,
    pub text: String,
}

impl std::fmt::Debug for ChatRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored chat cannot be opened: {0}")]
    Crypto(#[from] CryptoError),
}

struct Job {
    consultation: ConsultationId,
    message: ChatMessage,
}

/// Records chat at rest and reads it back. Cheap to clone.
#[derive(Clone)]
pub struct ChatArchive {
    store: Arc<dyn ChatStore>,
    keys: Arc<KeyRing>,
    queue: mpsc::Sender<Job>,
}

/// Chat messages that may wait in memory for the archive's writer (while the store is
/// unavailable it retries each for up to ~26 s; chat is rate-limited per participant, so a
/// long outage of a busy server is what fills it). Full: the message (already delivered live)
/// is not archived, and is counted in `teleconsult_chat_messages_lost_total`; the
/// consultation never waits. At most about 4096 × 8 KB (2000 characters of 4 bytes) = 32 MiB.
pub const ARCHIVE_QUEUE: usize = 4096;

/// How often, and after which pauses, a write is retried while the store is unavailable.
const RETRIES: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(20),
];

impl ChatArchive {
    /// The archive over `store`, sealing with `keys`; starts its writer task (needs a tokio
    /// runtime).
    pub fn start(store: Arc<dyn ChatStore>, keys: Arc<KeyRing>) -> ChatArchive {
        let (queue, rx) = mpsc::channel(ARCHIVE_QUEUE);
        tokio::spawn(writer(store.clone(), keys.clone(), rx));
        ChatArchive { store, keys, queue }
    }

    /// `consultation`'s chat and notices, oldest first, opened.
    pub async fn read(&self, consultation: &str) -> Result<Vec<ChatRecord>, ChatArchiveError> {
        let stored = self.store.chat_messages(consultation).await?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let Some(record) = self.store.chat_key(consultation).await? else {
            return Err(CryptoError::Unwrap.into());
        };
        let key = open_key(&self.keys, &record)?;
        stored
            .iter()
            .map(|m| key.open(m).map_err(ChatArchiveError::from))
            .collect()
    }
}

fn open_key(keys: &KeyRing, record: &ChatKeyRecord) -> Result<ChatKey, CryptoError> {
    if record.scheme != CHAT_SCHEME {
        return Err(CryptoError::Unsupported);
    }
    ChatKey::unwrap(
        keys.get(&record.master_key_id)?,
        &record.consultation,
        &record.wrapped_key,
    )
}

impl ChatRecorder for ChatArchive {
    fn record(&self, consultation: &ConsultationId, message: &ChatMessage) {
        enqueue(
            &self.queue,
            Job {
                consultation: consultation.clone(),
                message: message.clone(),
            },
        );
    }
}

/// Queue `job` for the writer without waiting; a full queue drops it (counted, logged with ids
/// only). Returns whether it was queued.
fn enqueue(queue: &mpsc::Sender<Job>, job: Job) -> bool {
    match queue.try_send(job) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(job)) => {
            metrics::counter!(metric_names::CHAT_MESSAGES_LOST).increment(1);
            tracing::error!(consultation = %job.consultation, message = %job.message.id, "a chat message could not be stored: the archive's queue is full");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// The consultation's key: cached, else stored, else created (the stored one wins a race).
async fn key_for(
    store: &dyn ChatStore,
    keys: &KeyRing,
    cache: &mut HashMap<String, ChatKey>,
    consultation: &str,
) -> Result<ChatKey, ChatArchiveError> {
    if let Some(k) = cache.get(consultation) {
        return Ok(k.clone());
    }
    let record = match store.chat_key(consultation).await? {
        Some(r) => r,
        None => {
            let (_, wrapped) = ChatKey::generate(keys.current(), consultation);
            store
                .insert_chat_key(&ChatKeyRecord {
                    consultation: consultation.to_string(),
                    scheme: CHAT_SCHEME.to_string(),
                    wrapped_key: wrapped,
                    master_key_id: keys.current().id().to_string(),
                    created_at: message_time_now(),
                })
                .await?
        }
    };
    let key = open_key(keys, &record)?;
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(consultation.to_string(), key.clone());
    Ok(key)
}

fn message_time_now() -> i64 {
    teleconsult_consultation::invitation::now_millis()
}

async fn writer(store: Arc<dyn ChatStore>, keys: Arc<KeyRing>, mut rx: mpsc::Receiver<Job>) {
    let mut cache = HashMap::new();
    while let Some(job) = rx.recv().await {
        let consultation = job.consultation.as_str();
        let mut attempt = 0;
        loop {
            let result = async {
                let key = key_for(&*store, &keys, &mut cache, consultation).await?;
                store
                    .upsert_chat_message(&key.seal(consultation, &job.message))
                    .await?;
                Ok::<(), ChatArchiveError>(())
            }
            .await;
            match result {
                Ok(()) => {
                    metrics::counter!(metric_names::CHAT_MESSAGES_STORED).increment(1);
                    break;
                }
                Err(ChatArchiveError::Store(StoreError::Unavailable(_)))
                    if attempt < RETRIES.len() =>
                {
                    tokio::time::sleep(RETRIES[attempt]).await;
                    attempt += 1;
                }
                Err(e) => {
                    metrics::counter!(metric_names::CHAT_MESSAGES_LOST).increment(1);
                    // Ids only: never the text or the sender's name.
                    tracing::error!(consultation = %job.consultation, message = %job.message.id, error = %e, "a chat message could not be stored");
                    break;
                }
            }
        }
    }
}

/// Names of the metrics the archive records.
pub mod metric_names {
    /// Counter: chat messages and notices stored (sealed).
    pub const CHAT_MESSAGES_STORED: &str = "teleconsult_chat_messages_stored_total";
    /// Counter: chat messages and notices that could not be stored.
    pub const CHAT_MESSAGES_LOST: &str = "teleconsult_chat_messages_lost_total";
}

#[cfg(test)]
mod tests {
    use super::*;
    use teleconsult_consultation::ChatKind;

    fn master(id: &str, byte: u8) -> MasterKey {
        MasterKey::from_base64(id, &STANDARD.encode([byte; 32])).unwrap()
    }

    fn message(text: &str) -> ChatMessage {
        ChatMessage {
            id: "msg_1".into(),
            seq: 1,
            kind: ChatKind::Chat,
            from: "p1".into(),
            role: Role::Patient,
            display_name: "Erika Mustermann".into(),
            at: 1_700_000_000_000,
            text: text.into(),
        }
    }

    /// The archive's queue is bounded: full, a message is dropped (not archived; it was
    /// delivered live) without the caller waiting; what was queued stays, in order.
    #[test]
    fn a_full_archive_queue_drops_without_waiting() {
        let (tx, mut rx) = mpsc::channel(2);
        let job = |id: &str| Job {
            consultation: "c1".into(),
            message: ChatMessage {
                id: id.into(),
                ..message("hello")
            },
        };
        assert!(enqueue(&tx, job("m1")));
        assert!(enqueue(&tx, job("m2")));
        assert!(!enqueue(&tx, job("m3")), "the third does not fit");
        assert_eq!(rx.try_recv().unwrap().message.id, "m1");
        assert_eq!(rx.try_recv().unwrap().message.id, "m2");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_sealed_message_opens_only_under_its_key_consultation_and_fields() {
        let m1 = master("k1", 1);
        let (key, wrapped) = ChatKey::generate(&m1, "c1");
        let stored = key.seal("c1", &message("my blood pressure is 180/110"));
        for secret in ["blood", "Erika", "p1\""] {
            assert!(!stored.sealed.contains(secret));
            assert!(!serde_json::to_string(&stored).unwrap().contains(secret));
        }
        let key2 = ChatKey::unwrap(&m1, "c1", &wrapped).unwrap();
        let opened = key2.open(&stored).unwrap();
        assert_eq!(opened.text, "my blood pressure is 180/110");
        assert_eq!(opened.display_name, "Erika Mustermann");
        assert_eq!(opened.from, "p1");
        // The wrapped key opens only for its consultation and master key.
        assert!(ChatKey::unwrap(&m1, "c2", &wrapped).is_err());
        assert!(ChatKey::unwrap(&master("k1", 2), "c1", &wrapped).is_err());
        // A row moved to another consultation, or with a clear field altered, fails.
        let mut moved = stored.clone();
        moved.consultation = "c2".into();
        assert!(key2.open(&moved).is_err());
        let mut altered = stored.clone();
        altered.sender_role = "practitioner".into();
        assert!(key2.open(&altered).is_err());
        let mut altered = stored;
        altered.at += 1;
        assert!(key2.open(&altered).is_err());
    }
}
