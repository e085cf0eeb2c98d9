//! [`InvitationStore`] for MongoDB: collections `scheduled_consultations` (`_id` = consultation
//! id) and `invitations` (`_id` = `jti`). Single-document writes only (FerretDB has no
//! multi-document transactions): cancelling sets the consultation's status first, which alone
//! refuses every link of it, then marks its invitations revoked.

use super::{MongoStore, from_doc, map_err, other, to_doc};
use crate::invitations::{
    ConsultationStatus, Invitation, InvitationStore, Policy, Pseudonym, ScheduledConsultation,
};
use crate::{Millis, Result, StoreError};
use mongodb::bson::{Bson, doc};
use serde::{Deserialize, Serialize};

const CONSULTATIONS: &str = "scheduled_consultations";
const INVITATIONS: &str = "invitations";

#[derive(Serialize, Deserialize)]
pub(super) struct ConsultationDoc {
    #[serde(rename = "_id")]
    id: String,
    organisation: String,
    practitioner: String,
    scheduled_at: Option<i64>,
    status: String,
    created_at: i64,
    /// Absent in records written before policies existed: `standard`.
    #[serde(default)]
    policy: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct InvitationDoc {
    #[serde(rename = "_id")]
    jti: String,
    consultation: String,
    role: String,
    pseudonym: String,
    not_before: i64,
    expires: i64,
    revoked_at: Option<i64>,
    created_at: i64,
}

impl TryFrom<ConsultationDoc> for ScheduledConsultation {
    type Error = StoreError;
    fn try_from(d: ConsultationDoc) -> Result<Self> {
        Ok(ScheduledConsultation {
            status: ConsultationStatus::parse(&d.status)
                .ok_or_else(|| other(format!("unknown consultation status {:?}", d.status)))?,
            id: d.id,
            organisation: d.organisation,
            practitioner: d.practitioner,
            scheduled_at: d.scheduled_at,
            created_at: d.created_at,
            policy: match d.policy.as_deref() {
                None => Policy::Standard,
                Some(p) => Policy::parse(p)
                    .ok_or_else(|| other(format!("unknown consultation policy {p:?}")))?,
            },
        })
    }
}

impl From<InvitationDoc> for Invitation {
    fn from(d: InvitationDoc) -> Self {
        Invitation {
            jti: d.jti,
            consultation: d.consultation,
            role: d.role,
            pseudonym: Pseudonym::new(d.pseudonym),
            not_before: d.not_before,
            expires: d.expires,
            revoked_at: d.revoked_at,
            created_at: d.created_at,
        }
    }
}

#[async_trait::async_trait]
impl InvitationStore for MongoStore {
    async fn upsert_scheduled_consultation(&self, c: &ScheduledConsultation) -> Result<()> {
        let d = to_doc(&ConsultationDoc {
            id: c.id.clone(),
            organisation: c.organisation.clone(),
            practitioner: c.practitioner.clone(),
            scheduled_at: c.scheduled_at,
            status: c.status.as_str().to_string(),
            created_at: c.created_at,
            policy: Some(c.policy.as_str().to_string()),
        })?;
        self.upsert(CONSULTATIONS, Bson::String(c.id.clone()), d)
            .await
    }

    async fn scheduled_consultation(&self, id: &str) -> Result<Option<ScheduledConsultation>> {
        let found = self
            .coll(CONSULTATIONS)
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        found
            .map(|d| from_doc::<ConsultationDoc>(d).and_then(ScheduledConsultation::try_from))
            .transpose()
    }

    async fn scheduled_consultations(
        &self,
        organisation: &str,
        practitioner: Option<&str>,
    ) -> Result<Vec<ScheduledConsultation>> {
        let mut filter = doc! {"organisation": organisation};
        if let Some(p) = practitioner {
            filter.insert("practitioner", p);
        }
        let docs: Vec<ConsultationDoc> = self
            .find_all(CONSULTATIONS, filter, doc! {"created_at": 1, "_id": 1})
            .await?;
        docs.into_iter()
            .map(ScheduledConsultation::try_from)
            .collect()
    }

    async fn set_consultation_status(&self, id: &str, status: ConsultationStatus) -> Result<()> {
        let r = self
            .coll(CONSULTATIONS)
            .update_one(doc! {"_id": id}, doc! {"$set": {"status": status.as_str()}})
            .await
            .map_err(map_err)?;
        if r.matched_count == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn cancel_consultation(&self, id: &str, at: Millis) -> Result<u64> {
        self.set_consultation_status(id, ConsultationStatus::Cancelled)
            .await?;
        let r = self
            .coll(INVITATIONS)
            .update_many(
                doc! {"consultation": id, "revoked_at": Bson::Null},
                doc! {"$set": {"revoked_at": at}},
            )
            .await
            .map_err(map_err)?;
        Ok(r.modified_count)
    }

    async fn upsert_invitation(&self, i: &Invitation) -> Result<()> {
        let d = to_doc(&InvitationDoc {
            jti: i.jti.clone(),
            consultation: i.consultation.clone(),
            role: i.role.clone(),
            pseudonym: i.pseudonym.expose().to_string(),
            not_before: i.not_before,
            expires: i.expires,
            revoked_at: i.revoked_at,
            created_at: i.created_at,
        })?;
        self.upsert(INVITATIONS, Bson::String(i.jti.clone()), d)
            .await
    }

    async fn invitation(&self, jti: &str) -> Result<Option<Invitation>> {
        let found = self
            .coll(INVITATIONS)
            .find_one(doc! {"_id": jti})
            .await
            .map_err(map_err)?;
        found
            .map(|d| from_doc::<InvitationDoc>(d).map(Invitation::from))
            .transpose()
    }

    async fn invitations(&self, consultation: &str) -> Result<Vec<Invitation>> {
        let docs: Vec<InvitationDoc> = self
            .find_all(
                INVITATIONS,
                doc! {"consultation": consultation},
                doc! {"created_at": 1, "_id": 1},
            )
            .await?;
        Ok(docs.into_iter().map(Invitation::from).collect())
    }

    async fn revoke_invitation(&self, jti: &str, at: Millis) -> Result<()> {
        let r = self
            .coll(INVITATIONS)
            .update_one(
                doc! {"_id": jti, "revoked_at": Bson::Null},
                doc! {"$set": {"revoked_at": at}},
            )
            .await
            .map_err(map_err)?;
        if r.matched_count == 0 && self.invitation(jti).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
