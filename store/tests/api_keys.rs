//! Conformance of [`ApiKeyStore`] (API keys, consultations by scheduled time), run against both
//! backends: embedded SQLite, and MongoDB (FerretDB in CI; `TELECONSULT_TEST_MONGODB_URI`).

mod common;

use teleconsult_store::{
    ApiKey, ApiKeyStore, ConsultationStatus, InvitationStore, ScheduledConsultation, StoreError,
};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, dir) = crate::common::sqlite(stringify!($case)).await;
                    super::$case(&store).await;
                    let _ = std::fs::remove_dir_all(dir);
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(store) = crate::common::mongo(stringify!($case)).await else {
                        return;
                    };
                    super::$case(&store).await;
                    crate::common::drop_mongo(&store).await;
                }
            )*
        }
    };
}

conformance!(
    api_keys_round_trip_per_organisation,
    revoke_key_only_in_its_organisation,
    consultations_between_are_paged_by_time_then_id,
);

fn key(id: &str, organisation: &str, created_at: i64) -> ApiKey {
    ApiKey {
        id: id.to_string(),
        organisation: organisation.to_string(),
        name: format!("key {id}"),
        scopes: vec!["consultations:read".into(), "consultations:write".into()],
        secret_hash: format!("{id:0>64}"),
        created_by: "acc-admin".into(),
        created_at,
        revoked_at: None,
        last_used_at: None,
    }
}

async fn api_keys_round_trip_per_organisation<S: ApiKeyStore>(store: &S) {
    let a = key("aa01", "org-a", 2);
    let b = key("aa02", "org-a", 1);
    let c = key("bb01", "org-b", 1);
    for k in [&a, &b, &c] {
        store.insert_api_key(k).await.expect("insert");
    }
    assert_eq!(store.api_key("aa01").await.expect("read"), Some(a.clone()));
    assert_eq!(store.api_key("missing").await.expect("read"), None);
    assert_eq!(
        store.api_keys("org-a").await.expect("list"),
        vec![b.clone(), a.clone()],
        "by creation time"
    );
    assert_eq!(store.api_keys("org-b").await.expect("list"), vec![c]);
    store.touch_api_key("aa01", 99).await.expect("touch");
    let touched = store.api_key("aa01").await.expect("read").expect("present");
    assert_eq!(touched.last_used_at, Some(99));
}

async fn revoke_key_only_in_its_organisation<S: ApiKeyStore>(store: &S) {
    store
        .insert_api_key(&key("cc01", "org-a", 1))
        .await
        .expect("insert");
    assert!(matches!(
        store.revoke_api_key("org-b", "cc01", 5).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .api_key("cc01")
            .await
            .expect("read")
            .expect("present")
            .revoked_at,
        None,
        "another organisation cannot revoke it"
    );
    store
        .revoke_api_key("org-a", "cc01", 5)
        .await
        .expect("revoke");
    store
        .revoke_api_key("org-a", "cc01", 9)
        .await
        .expect("again");
    assert_eq!(
        store
            .api_key("cc01")
            .await
            .expect("read")
            .expect("present")
            .revoked_at,
        Some(5)
    );
    assert!(matches!(
        store.revoke_api_key("org-a", "nope", 5).await,
        Err(StoreError::NotFound)
    ));
}

async fn consultations_between_are_paged_by_time_then_id<S: ApiKeyStore + InvitationStore>(
    store: &S,
) {
    let c = |id: &str, org: &str, at: Option<i64>| ScheduledConsultation {
        id: id.into(),
        organisation: org.into(),
        practitioner: "acc-1".into(),
        scheduled_at: at,
        status: ConsultationStatus::Scheduled,
        created_at: 0,
        policy: Default::default(),
    };
    for sc in [
        c("c3", "org-a", Some(200)),
        c("c1", "org-a", Some(100)),
        c("c2", "org-a", Some(100)),
        c("c4", "org-a", Some(300)),
        c("c0", "org-a", Some(50)),
        c("cu", "org-a", None),
        c("cb", "org-b", Some(150)),
    ] {
        store
            .upsert_scheduled_consultation(&sc)
            .await
            .expect("upsert");
    }
    let ids = |v: Vec<ScheduledConsultation>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let first = store
        .consultations_scheduled_between("org-a", 100, 300, None, 2)
        .await
        .expect("page 1");
    assert_eq!(ids(first), ["c1", "c2"]);
    let second = store
        .consultations_scheduled_between("org-a", 100, 300, Some((100, "c2".into())), 2)
        .await
        .expect("page 2");
    assert_eq!(ids(second), ["c3"]);
    let mid = store
        .consultations_scheduled_between("org-a", 100, 300, Some((100, "c1".into())), 5)
        .await
        .expect("from the middle of a time");
    assert_eq!(ids(mid), ["c2", "c3"]);
    let other = store
        .consultations_scheduled_between("org-b", 0, 1000, None, 10)
        .await
        .expect("org-b");
    assert_eq!(ids(other), ["cb"]);
}
