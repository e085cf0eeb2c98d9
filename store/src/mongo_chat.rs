//! [`ChatStore`] for MongoDB: collections `chat_keys` (`_id` = consultation id) and
//! `chat_messages` (`_id` = message id, index `consultation_at_seq_id`).

use super::{MongoStore, from_doc, is_duplicate_key, map_err, to_doc};
use crate::chat::{ChatKeyRecord, ChatStore, StoredChatMessage};
use crate::{Result, StoreError};
use mongodb::IndexModel;
use mongodb::bson::{Bson, doc};
use mongodb::options::IndexOptions;
use serde::{Deserialize, Serialize};

const KEYS: &str = "chat_keys";
const MESSAGES: &str = "chat_messages";

#[derive(Serialize, Deserialize)]
struct KeyDoc {
    #[serde(rename = "_id")]
    consultation: String,
    scheme: String,
    wrapped_key: String,
    master_key_id: String,
    created_at: i64,
}

#[derive(Serialize, Deserialize)]
struct MessageDoc {
    #[serde(rename = "_id")]
    id: String,
    consultation: String,
    seq: i64,
    at: i64,
    kind: String,
    sender_role: String,
    sealed: String,
}

impl From<KeyDoc> for ChatKeyRecord {
    fn from(d: KeyDoc) -> Self {
        ChatKeyRecord {
            consultation: d.consultation,
            scheme: d.scheme,
            wrapped_key: d.wrapped_key,
            master_key_id: d.master_key_id,
            created_at: d.created_at,
        }
    }
}

impl From<MessageDoc> for StoredChatMessage {
    fn from(d: MessageDoc) -> Self {
        StoredChatMessage {
            id: d.id,
            consultation: d.consultation,
            seq: d.seq,
            at: d.at,
            kind: d.kind,
            sender_role: d.sender_role,
            sealed: d.sealed,
        }
    }
}

impl MongoStore {
    /// The index of chat messages by consultation and time (idempotent).
    pub(super) async fn prepare_chat(&self) -> Result<()> {
        self.coll(MESSAGES)
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"consultation": 1, "at": 1, "seq": 1, "_id": 1})
                    .options(
                        IndexOptions::builder()
                            .name("consultation_at_seq_id".to_string())
                            .build(),
                    )
                    .build(),
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ChatStore for MongoStore {
    async fn insert_chat_key(&self, key: &ChatKeyRecord) -> Result<ChatKeyRecord> {
        let d = to_doc(&KeyDoc {
            consultation: key.consultation.clone(),
            scheme: key.scheme.clone(),
            wrapped_key: key.wrapped_key.clone(),
            master_key_id: key.master_key_id.clone(),
            created_at: key.created_at,
        })?;
        match self.coll(KEYS).insert_one(d).await {
            Ok(_) => {}
            // Another writer stored the consultation's key first: theirs is the key.
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(map_err(e)),
        }
        self.chat_key(&key.consultation)
            .await?
            .ok_or_else(|| StoreError::Other("chat key vanished after insert".into()))
    }

    async fn chat_key(&self, consultation: &str) -> Result<Option<ChatKeyRecord>> {
        self.coll(KEYS)
            .find_one(doc! {"_id": consultation})
            .await
            .map_err(map_err)?
            .map(|d| from_doc::<KeyDoc>(d).map(ChatKeyRecord::from))
            .transpose()
    }

    async fn upsert_chat_message(&self, m: &StoredChatMessage) -> Result<()> {
        let d = to_doc(&MessageDoc {
            id: m.id.clone(),
            consultation: m.consultation.clone(),
            seq: m.seq,
            at: m.at,
            kind: m.kind.clone(),
            sender_role: m.sender_role.clone(),
            sealed: m.sealed.clone(),
        })?;
        self.upsert(MESSAGES, Bson::String(m.id.clone()), d).await
    }

    async fn chat_messages(&self, consultation: &str) -> Result<Vec<StoredChatMessage>> {
        let docs: Vec<MessageDoc> = self
            .find_all(
                MESSAGES,
                doc! {"consultation": consultation},
                doc! {"at": 1, "seq": 1, "_id": 1},
            )
            .await?;
        Ok(docs.into_iter().map(StoredChatMessage::from).collect())
    }
}
