//! [`AccountStore`] on MongoDB: collections `organisations`, `accounts` (`_id` = account id,
//! unique index on `email`), `login_throttles` (`_id` = the hashed login name) and
//! `staff_sessions` (`_id` = the hashed session secret). Failed logins are one document each in
//! `login_failures` (key, time) and counted; `login_throttles` keeps only the lock's end.

use super::{MongoStore, from_doc, is_duplicate_key, map_err, to_doc};
use crate::accounts::{
    Account, AccountStore, LoginThrottle, Organisation, SessionRecord, TotpRecord,
};
use crate::{Millis, Result, StoreError};
use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::IndexOptions;
use serde::{Deserialize, Serialize};

const ORGANISATIONS: &str = "organisations";
const ACCOUNTS: &str = "accounts";
const THROTTLES: &str = "login_throttles";
const FAILURES: &str = "login_failures";
const SESSIONS: &str = "staff_sessions";

#[derive(Serialize, Deserialize)]
struct OrganisationDoc {
    #[serde(rename = "_id")]
    id: String,
    name: String,
    created_at: i64,
}

#[derive(Serialize, Deserialize)]
struct AccountDoc {
    #[serde(rename = "_id")]
    id: String,
    organisation: String,
    email: String,
    display_name: String,
    roles: Vec<String>,
    disabled: bool,
    password_hash: String,
    totp: Option<TotpRecord>,
    created_at: i64,
}

impl From<&Account> for AccountDoc {
    fn from(a: &Account) -> Self {
        AccountDoc {
            id: a.id.clone(),
            organisation: a.organisation.clone(),
            email: a.email.clone(),
            display_name: a.display_name.clone(),
            roles: a.roles.clone(),
            disabled: a.disabled,
            password_hash: a.password_hash.clone(),
            totp: a.totp.clone(),
            created_at: a.created_at,
        }
    }
}

impl From<AccountDoc> for Account {
    fn from(d: AccountDoc) -> Self {
        Account {
            id: d.id,
            organisation: d.organisation,
            email: d.email,
            display_name: d.display_name,
            roles: d.roles,
            disabled: d.disabled,
            password_hash: d.password_hash,
            totp: d.totp,
            created_at: d.created_at,
        }
    }
}

/// A lock on a login name (`login_throttles`); its failures are `login_failures` documents.
#[derive(Serialize, Deserialize)]
struct ThrottleDoc {
    #[serde(rename = "_id")]
    key: String,
    locked_until: i64,
}

#[derive(Serialize, Deserialize)]
struct SessionDoc {
    #[serde(rename = "_id")]
    id_hash: String,
    organisation: String,
    account: String,
    created_at: i64,
    last_seen: i64,
    expires_at: i64,
}

impl From<&SessionRecord> for SessionDoc {
    fn from(s: &SessionRecord) -> Self {
        SessionDoc {
            id_hash: s.id_hash.clone(),
            organisation: s.organisation.clone(),
            account: s.account.clone(),
            created_at: s.created_at,
            last_seen: s.last_seen,
            expires_at: s.expires_at,
        }
    }
}

impl From<SessionDoc> for SessionRecord {
    fn from(d: SessionDoc) -> Self {
        SessionRecord {
            id_hash: d.id_hash,
            organisation: d.organisation,
            account: d.account,
            created_at: d.created_at,
            last_seen: d.last_seen,
            expires_at: d.expires_at,
        }
    }
}

impl MongoStore {
    /// The accounts collections' indexes (idempotent; one per command, see `prepare`).
    pub(super) async fn prepare_accounts(&self) -> Result<()> {
        let idx = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_string())
                        .unique(unique.then_some(true))
                        .build(),
                )
                .build()
        };
        for (coll, model) in [
            (ACCOUNTS, idx(doc! {"email": 1}, "email", true)),
            (FAILURES, idx(doc! {"key": 1, "at": 1}, "key_at", false)),
            (
                ACCOUNTS,
                idx(
                    doc! {"organisation": 1, "email": 1},
                    "organisation_email",
                    false,
                ),
            ),
            (
                SESSIONS,
                idx(
                    doc! {"organisation": 1, "account": 1},
                    "organisation_account",
                    false,
                ),
            ),
        ] {
            self.coll(coll).create_index(model).await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn find_one_as<T: serde::de::DeserializeOwned>(
        &self,
        coll: &str,
        filter: Document,
    ) -> Result<Option<T>> {
        match self.coll(coll).find_one(filter).await.map_err(map_err)? {
            Some(d) => Ok(Some(from_doc(d)?)),
            None => Ok(None),
        }
    }
}

#[async_trait::async_trait]
impl AccountStore for MongoStore {
    async fn upsert_organisation(&self, org: &Organisation) -> Result<()> {
        let d = to_doc(&OrganisationDoc {
            id: org.id.clone(),
            name: org.name.clone(),
            created_at: org.created_at,
        })?;
        self.upsert(ORGANISATIONS, Bson::String(org.id.clone()), d)
            .await
    }

    async fn organisation(&self, id: &str) -> Result<Option<Organisation>> {
        let d: Option<OrganisationDoc> = self.find_one_as(ORGANISATIONS, doc! {"_id": id}).await?;
        Ok(d.map(|d| Organisation {
            id: d.id,
            name: d.name,
            created_at: d.created_at,
        }))
    }

    async fn insert_account(&self, account: &Account) -> Result<bool> {
        let d = to_doc(&AccountDoc::from(account))?;
        match self.coll(ACCOUNTS).insert_one(d).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn update_account(&self, a: &Account) -> Result<()> {
        let totp = match &a.totp {
            Some(t) => mongodb::bson::to_bson(t).map_err(|e| StoreError::Other(e.to_string()))?,
            None => Bson::Null,
        };
        let r = self
            .coll(ACCOUNTS)
            .update_one(
                doc! {"_id": &a.id, "organisation": &a.organisation},
                doc! {"$set": {
                    "display_name": &a.display_name,
                    "roles": &a.roles,
                    "disabled": a.disabled,
                    "password_hash": &a.password_hash,
                    "totp": totp,
                }},
            )
            .await
            .map_err(map_err)?;
        if r.matched_count == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn account(&self, organisation: &str, id: &str) -> Result<Option<Account>> {
        let d: Option<AccountDoc> = self
            .find_one_as(ACCOUNTS, doc! {"_id": id, "organisation": organisation})
            .await?;
        Ok(d.map(Into::into))
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        let d: Option<AccountDoc> = self.find_one_as(ACCOUNTS, doc! {"email": email}).await?;
        Ok(d.map(Into::into))
    }

    async fn accounts(&self, organisation: &str) -> Result<Vec<Account>> {
        let docs: Vec<AccountDoc> = self
            .find_all(
                ACCOUNTS,
                doc! {"organisation": organisation},
                doc! {"email": 1},
            )
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }

    async fn login_throttle(&self, key: &str) -> Result<Option<LoginThrottle>> {
        let lock: Option<ThrottleDoc> = self.find_one_as(THROTTLES, doc! {"_id": key}).await?;
        let failures = self
            .coll(FAILURES)
            .count_documents(doc! {"key": key})
            .await
            .map_err(map_err)?;
        if lock.is_none() && failures == 0 {
            return Ok(None);
        }
        let last_failure = self
            .coll(FAILURES)
            .find_one(doc! {"key": key})
            .sort(doc! {"at": -1})
            .await
            .map_err(map_err)?
            .and_then(|d| d.get_i64("at").ok())
            .unwrap_or(0);
        Ok(Some(LoginThrottle {
            key: key.to_string(),
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            locked_until: lock.map_or(0, |l| l.locked_until),
            last_failure,
        }))
    }

    async fn record_login_failure(&self, key: &str, now: Millis) -> Result<u32> {
        // One document per failure, then a count: inserts never lose each other, where a
        // read-modify-write counter can (FerretDB 1.24 applies `$inc` in findAndModify without
        // isolation: ten concurrent increments were seen to yield five). Concurrent callers may
        // see the same count; none is lost.
        self.coll(FAILURES)
            .insert_one(doc! {"key": key, "at": now})
            .await
            .map_err(map_err)?;
        let n = self
            .coll(FAILURES)
            .count_documents(doc! {"key": key})
            .await
            .map_err(map_err)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn lock_login(&self, key: &str, until: Millis) -> Result<()> {
        let d = to_doc(&ThrottleDoc {
            key: key.to_string(),
            locked_until: until,
        })?;
        self.upsert(THROTTLES, Bson::String(key.to_string()), d)
            .await
    }

    async fn clear_login_throttle(&self, key: &str) -> Result<()> {
        self.coll(FAILURES)
            .delete_many(doc! {"key": key})
            .await
            .map_err(map_err)?;
        self.coll(THROTTLES)
            .delete_one(doc! {"_id": key})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<()> {
        let d = to_doc(&SessionDoc::from(session))?;
        self.coll(SESSIONS).insert_one(d).await.map_err(map_err)?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        let d: Option<SessionDoc> = self.find_one_as(SESSIONS, doc! {"_id": id_hash}).await?;
        Ok(d.map(Into::into))
    }

    async fn touch_session(&self, id_hash: &str, last_seen: Millis) -> Result<()> {
        let r = self
            .coll(SESSIONS)
            .update_one(
                doc! {"_id": id_hash},
                doc! {"$max": {"last_seen": last_seen}},
            )
            .await
            .map_err(map_err)?;
        if r.matched_count == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        self.coll(SESSIONS)
            .delete_one(doc! {"_id": id_hash})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_account_sessions(&self, organisation: &str, account: &str) -> Result<u64> {
        let r = self
            .coll(SESSIONS)
            .delete_many(doc! {"organisation": organisation, "account": account})
            .await
            .map_err(map_err)?;
        Ok(r.deleted_count)
    }
}
