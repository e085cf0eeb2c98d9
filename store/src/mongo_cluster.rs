//! [`ClusterStore`] for MongoDB: collection `nodes` (`_id` = node id) and `placements`
//! (`_id` = `{consultation}#{epoch}`, index `consultation_epoch`).

use super::{MongoStore, from_doc, is_duplicate_key, map_err, to_doc};
use crate::cluster::{ClusterStore, NodeRecord, NodeState, Placement, Renewal, StoredAdmissions};
use crate::{Millis, Result};
use futures_util::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::doc;
use mongodb::options::IndexOptions;
use serde::{Deserialize, Serialize};

const NODES: &str = "nodes";
const PLACEMENTS: &str = "placements";
/// Join tickets already used (`_id` = the ticket's id), until they expire.
const TICKETS: &str = "join_tickets";
/// One document per consultation (`_id` = consultation id): its owner's admissions.
const ADMISSIONS: &str = "admissions";

#[derive(Serialize, Deserialize)]
struct AdmissionsDoc {
    #[serde(rename = "_id")]
    id: String,
    epoch: i64,
    admitted: Vec<String>,
    removed: Vec<String>,
    updated_at: i64,
}

#[derive(Serialize, Deserialize)]
struct NodeDoc {
    #[serde(rename = "_id")]
    id: String,
    public_url: String,
    media_addr: String,
    region: Option<String>,
    state: NodeState,
    cpu: f64,
    participants: u32,
    consultations: u32,
    heartbeat_at: i64,
    lease_until: i64,
}

#[derive(Serialize, Deserialize)]
struct PlacementDoc {
    #[serde(rename = "_id")]
    id: String,
    consultation: String,
    // i64: BSON has no unsigned integers.
    epoch: i64,
    node: String,
    claimed_at: i64,
    lease_until: i64,
}

fn placement_id(consultation: &str, epoch: u64) -> String {
    format!("{consultation}#{epoch}")
}

impl From<PlacementDoc> for Placement {
    fn from(d: PlacementDoc) -> Self {
        Placement {
            consultation: d.consultation,
            epoch: u64::try_from(d.epoch).unwrap_or(0),
            node: d.node,
            claimed_at: d.claimed_at,
            lease_until: d.lease_until,
        }
    }
}

impl MongoStore {
    /// The placements index (idempotent).
    pub(super) async fn prepare_cluster(&self) -> Result<()> {
        self.coll(PLACEMENTS)
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"consultation": 1, "epoch": -1})
                    .options(
                        IndexOptions::builder()
                            .name("consultation_epoch".to_string())
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
impl ClusterStore for MongoStore {
    async fn heartbeat(&self, n: &NodeRecord) -> Result<()> {
        let d = to_doc(&NodeDoc {
            id: n.id.clone(),
            public_url: n.public_url.clone(),
            media_addr: n.media_addr.clone(),
            region: n.region.clone(),
            state: n.state,
            cpu: n.cpu,
            participants: n.participants,
            consultations: n.consultations,
            heartbeat_at: n.heartbeat_at,
            lease_until: n.lease_until,
        })?;
        self.coll(NODES)
            .replace_one(doc! {"_id": &n.id}, d)
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn live_nodes(&self, now: Millis) -> Result<Vec<NodeRecord>> {
        let docs: Vec<_> = self
            .coll(NODES)
            .find(doc! {"lease_until": {"$gt": now}})
            .sort(doc! {"_id": 1})
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        docs.into_iter()
            .map(|d| {
                let n: NodeDoc = from_doc(d)?;
                Ok(NodeRecord {
                    id: n.id,
                    public_url: n.public_url,
                    media_addr: n.media_addr,
                    region: n.region,
                    state: n.state,
                    cpu: n.cpu,
                    participants: n.participants,
                    consultations: n.consultations,
                    heartbeat_at: n.heartbeat_at,
                    lease_until: n.lease_until,
                })
            })
            .collect()
    }

    async fn sweep_nodes(&self, now: Millis, grace: Millis) -> Result<u64> {
        let r = self
            .coll(NODES)
            .delete_many(doc! {"lease_until": {"$lt": now.saturating_sub(grace)}})
            .await
            .map_err(map_err)?;
        Ok(r.deleted_count)
    }

    async fn remove_node(&self, id: &str) -> Result<()> {
        self.coll(NODES)
            .delete_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn placement(&self, consultation: &str) -> Result<Option<Placement>> {
        let found = self
            .coll(PLACEMENTS)
            .find_one(doc! {"consultation": consultation})
            .sort(doc! {"epoch": -1})
            .await
            .map_err(map_err)?;
        found
            .map(|d| from_doc::<PlacementDoc>(d).map(Placement::from))
            .transpose()
    }

    async fn claim_placement(&self, p: &Placement) -> Result<bool> {
        let d = to_doc(&PlacementDoc {
            id: placement_id(&p.consultation, p.epoch),
            consultation: p.consultation.clone(),
            epoch: i64::try_from(p.epoch).map_err(|_| crate::StoreError::Other("epoch".into()))?,
            node: p.node.clone(),
            claimed_at: p.claimed_at,
            lease_until: p.lease_until,
        })?;
        match self.coll(PLACEMENTS).insert_one(d).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn renew_placement(
        &self,
        consultation: &str,
        epoch: u64,
        node: &str,
        lease_until: Millis,
    ) -> Result<Renewal> {
        // A newer epoch first: once someone else holds it, this node must stop, whatever its
        // own document says.
        let newer = self
            .coll(PLACEMENTS)
            .find_one(doc! {"_id": placement_id(consultation, epoch + 1)})
            .await
            .map_err(map_err)?;
        if newer.is_some() {
            return Ok(Renewal::Fenced);
        }
        let r = self
            .coll(PLACEMENTS)
            .update_one(
                doc! {"_id": placement_id(consultation, epoch), "node": node},
                doc! {"$set": {"lease_until": lease_until}},
            )
            .await
            .map_err(map_err)?;
        Ok(if r.matched_count == 1 {
            Renewal::Renewed
        } else {
            Renewal::Fenced
        })
    }

    async fn admissions(&self, consultation: &str) -> Result<Option<StoredAdmissions>> {
        let found = self
            .coll(ADMISSIONS)
            .find_one(doc! {"_id": consultation})
            .await
            .map_err(map_err)?;
        found
            .map(|d| {
                from_doc::<AdmissionsDoc>(d).map(|d| StoredAdmissions {
                    consultation: d.id,
                    epoch: u64::try_from(d.epoch).unwrap_or(0),
                    admitted: d.admitted,
                    removed: d.removed,
                    updated_at: d.updated_at,
                })
            })
            .transpose()
    }

    async fn save_admissions(&self, a: &StoredAdmissions) -> Result<bool> {
        let epoch = i64::try_from(a.epoch).map_err(|_| crate::StoreError::Other("epoch".into()))?;
        // A newer owner exists: this write comes from a fenced node (it may not have noticed
        // yet). Checked first as renewals do; the epoch filter below holds even without it,
        // once the newer owner has written.
        let newer = self
            .coll(PLACEMENTS)
            .find_one(doc! {"_id": placement_id(&a.consultation, a.epoch + 1)})
            .await
            .map_err(map_err)?;
        if newer.is_some() {
            return Ok(false);
        }
        let d = to_doc(&AdmissionsDoc {
            id: a.consultation.clone(),
            epoch,
            admitted: a.admitted.clone(),
            removed: a.removed.clone(),
            updated_at: a.updated_at,
        })?;
        // Replace only a document of this epoch or an older one; if a newer epoch's document
        // exists the filter matches nothing and the upsert's insert collides with its `_id`.
        match self
            .coll(ADMISSIONS)
            .replace_one(doc! {"_id": &a.consultation, "epoch": {"$lte": epoch}}, d)
            .upsert(true)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn redeem_join_ticket(&self, jti: &str, expires_at: Millis) -> Result<bool> {
        match self
            .coll(TICKETS)
            .insert_one(doc! {"_id": jti, "expires_at": expires_at})
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn sweep_join_tickets(&self, now: Millis) -> Result<u64> {
        let r = self
            .coll(TICKETS)
            .delete_many(doc! {"expires_at": {"$lt": now}})
            .await
            .map_err(map_err)?;
        Ok(r.deleted_count)
    }

    async fn release_placement(
        &self,
        consultation: &str,
        epoch: u64,
        node: &str,
        now: Millis,
    ) -> Result<()> {
        self.coll(PLACEMENTS)
            .update_one(
                doc! {"_id": placement_id(consultation, epoch), "node": node},
                doc! {"$set": {"lease_until": now}},
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn fence_intervals(&self, consultation: &str) -> Result<u64> {
        let mut closed = 0;
        for coll in ["billing_intervals", "presence_intervals"] {
            let c = self.coll(coll);
            let open: Vec<mongodb::bson::Document> = c
                .find(doc! {"consultation": consultation, "end": mongodb::bson::Bson::Null})
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            for d in open {
                let (Some(id), Ok(checkpoint)) = (d.get("_id").cloned(), d.get_i64("checkpoint"))
                else {
                    continue;
                };
                let r = c
                    .update_one(
                        doc! {"_id": id, "end": mongodb::bson::Bson::Null},
                        doc! {"$set": {"end": checkpoint, "recovered": true, "fenced": true}},
                    )
                    .await
                    .map_err(map_err)?;
                closed += r.modified_count;
            }
        }
        Ok(closed)
    }

    async fn open_consultations(&self) -> Result<Vec<String>> {
        let mut all = std::collections::BTreeSet::new();
        for coll in ["billing_intervals", "presence_intervals"] {
            let docs: Vec<mongodb::bson::Document> = self
                .coll(coll)
                .find(doc! {"end": mongodb::bson::Bson::Null})
                .projection(doc! {"consultation": 1})
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            all.extend(
                docs.iter()
                    .filter_map(|d| d.get_str("consultation").ok().map(str::to_string)),
            );
        }
        Ok(all.into_iter().collect())
    }
}
