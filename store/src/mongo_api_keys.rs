//! [`ApiKeyStore`] for MongoDB: collection `api_keys` (`_id` = key id), and the organisation's
//! consultations by scheduled time (`scheduled_consultations`, index
//! `organisation_scheduled_at_id`).

use super::invitations::ConsultationDoc;
use super::{MongoStore, from_doc, map_err, to_doc};
use crate::api_keys::{ApiKey, ApiKeyStore, ConsultationCursor};
use crate::invitations::ScheduledConsultation;
use crate::{Millis, Result, StoreError};
use futures_util::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::{Bson, doc};
use mongodb::options::IndexOptions;
use serde::{Deserialize, Serialize};

const API_KEYS: &str = "api_keys";
const CONSULTATIONS: &str = "scheduled_consultations";

#[derive(Serialize, Deserialize)]
struct ApiKeyDoc {
    #[serde(rename = "_id")]
    id: String,
    organisation: String,
    name: String,
    scopes: Vec<String>,
    secret_hash: String,
    created_by: String,
    created_at: i64,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl From<ApiKeyDoc> for ApiKey {
    fn from(d: ApiKeyDoc) -> Self {
        ApiKey {
            id: d.id,
            organisation: d.organisation,
            name: d.name,
            scopes: d.scopes,
            secret_hash: d.secret_hash,
            created_by: d.created_by,
            created_at: d.created_at,
            revoked_at: d.revoked_at,
            last_used_at: d.last_used_at,
        }
    }
}

impl MongoStore {
    /// The indexes of API keys and of consultations by organisation and time (idempotent).
    pub(super) async fn prepare_api_keys(&self) -> Result<()> {
        let idx = |keys, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_string()).build())
                .build()
        };
        self.coll(API_KEYS)
            .create_index(idx(
                doc! {"organisation": 1, "created_at": 1, "_id": 1},
                "organisation_created_at_id",
            ))
            .await
            .map_err(map_err)?;
        self.coll(CONSULTATIONS)
            .create_index(idx(
                doc! {"organisation": 1, "scheduled_at": 1, "_id": 1},
                "organisation_scheduled_at_id",
            ))
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ApiKeyStore for MongoStore {
    async fn insert_api_key(&self, k: &ApiKey) -> Result<()> {
        let d = to_doc(&ApiKeyDoc {
            id: k.id.clone(),
            organisation: k.organisation.clone(),
            name: k.name.clone(),
            scopes: k.scopes.clone(),
            secret_hash: k.secret_hash.clone(),
            created_by: k.created_by.clone(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        })?;
        self.upsert(API_KEYS, Bson::String(k.id.clone()), d).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let found = self
            .coll(API_KEYS)
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        found
            .map(|d| from_doc::<ApiKeyDoc>(d).map(ApiKey::from))
            .transpose()
    }

    async fn api_keys(&self, organisation: &str) -> Result<Vec<ApiKey>> {
        let docs: Vec<ApiKeyDoc> = self
            .find_all(
                API_KEYS,
                doc! {"organisation": organisation},
                doc! {"created_at": 1, "_id": 1},
            )
            .await?;
        Ok(docs.into_iter().map(ApiKey::from).collect())
    }

    async fn revoke_api_key(&self, organisation: &str, id: &str, at: Millis) -> Result<()> {
        let r = self
            .coll(API_KEYS)
            .update_one(
                doc! {"_id": id, "organisation": organisation, "revoked_at": Bson::Null},
                doc! {"$set": {"revoked_at": at}},
            )
            .await
            .map_err(map_err)?;
        if r.matched_count == 0 {
            // Already revoked (kept as it was), or absent / of another organisation.
            match self.api_key(id).await? {
                Some(k) if k.organisation == organisation => return Ok(()),
                _ => return Err(StoreError::NotFound),
            }
        }
        Ok(())
    }

    async fn touch_api_key(&self, id: &str, at: Millis) -> Result<()> {
        self.coll(API_KEYS)
            .update_one(doc! {"_id": id}, doc! {"$set": {"last_used_at": at}})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn consultations_scheduled_between(
        &self,
        organisation: &str,
        from: Millis,
        to: Millis,
        after: Option<ConsultationCursor>,
        limit: u32,
    ) -> Result<Vec<ScheduledConsultation>> {
        let mut filter = doc! {
            "organisation": organisation,
            "scheduled_at": {"$gte": from, "$lt": to},
        };
        if let Some((at, id)) = after {
            filter.insert(
                "$or",
                vec![
                    doc! {"scheduled_at": {"$gt": at}},
                    doc! {"scheduled_at": at, "_id": {"$gt": id}},
                ],
            );
        }
        let cursor = self
            .coll(CONSULTATIONS)
            .find(filter)
            .sort(doc! {"scheduled_at": 1, "_id": 1})
            .limit(i64::from(limit))
            .await
            .map_err(map_err)?;
        cursor
            .map_err(map_err)
            .and_then(|d| async move {
                from_doc::<ConsultationDoc>(d).and_then(ScheduledConsultation::try_from)
            })
            .try_collect()
            .await
    }
}
