//! The account storage contract, on both backends (the embedded store; MongoDB through
//! `TELECONSULT_TEST_MONGODB_URI`, FerretDB in CI): unique emails, organisation-scoped lookups
//! and updates, failure counts that lose nothing under concurrency, sessions by hash.

mod common;

use teleconsult_store::{Account, AccountStore, Organisation, SessionRecord, StoreError};

fn account(id: &str, org: &str, email: &str) -> Account {
    Account {
        id: id.into(),
        organisation: org.into(),
        email: email.into(),
        display_name: format!("Staff {id}"),
        roles: vec!["practitioner".into()],
        disabled: false,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        totp: None,
        created_at: 1,
    }
}

async fn contract(store: &dyn AccountStore) {
    for org in ["org_a", "org_b"] {
        store
            .upsert_organisation(&Organisation {
                id: org.into(),
                name: format!("Clinic {org}"),
                created_at: 1,
            })
            .await
            .expect("organisation");
    }
    assert_eq!(
        store
            .organisation("org_a")
            .await
            .expect("get")
            .expect("some")
            .name,
        "Clinic org_a"
    );
    assert_eq!(store.organisation("org_x").await.expect("get"), None);

    assert!(
        store
            .insert_account(&account("acc_1", "org_a", "a@x.example"))
            .await
            .expect("insert")
    );
    assert!(
        store
            .insert_account(&account("acc_2", "org_a", "b@x.example"))
            .await
            .expect("insert")
    );
    assert!(
        store
            .insert_account(&account("acc_3", "org_b", "c@x.example"))
            .await
            .expect("insert")
    );
    // The same email in another organisation, and the same id again: refused, nothing written.
    assert!(
        !store
            .insert_account(&account("acc_4", "org_b", "a@x.example"))
            .await
            .expect("dup")
    );
    assert!(
        !store
            .insert_account(&account("acc_1", "org_b", "d@x.example"))
            .await
            .expect("dup")
    );
    assert_eq!(
        store.account_by_email("d@x.example").await.expect("get"),
        None
    );

    let listed: Vec<String> = store
        .accounts("org_a")
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, vec!["acc_1", "acc_2"]);
    assert_eq!(
        store.account("org_b", "acc_1").await.expect("get"),
        None,
        "scoped by organisation"
    );
    assert_eq!(
        store
            .account_by_email("a@x.example")
            .await
            .expect("get")
            .map(|a| a.organisation),
        Some("org_a".to_string())
    );

    // Updates change what may change, within the organisation only.
    let mut a = store
        .account("org_a", "acc_1")
        .await
        .expect("get")
        .expect("some");
    a.disabled = true;
    a.roles = vec!["admin".into(), "billing".into()];
    a.totp = Some(teleconsult_store::TotpRecord {
        sealed_secret: "c2VhbGVk".into(),
        confirmed: true,
        last_step: 42,
    });
    store.update_account(&a).await.expect("update");
    assert_eq!(
        store.account("org_a", "acc_1").await.expect("get"),
        Some(a.clone())
    );
    let mut foreign = a.clone();
    foreign.organisation = "org_b".into();
    assert!(matches!(
        store.update_account(&foreign).await,
        Err(StoreError::NotFound)
    ));
    a.totp = None;
    store.update_account(&a).await.expect("update");
    assert_eq!(
        store
            .account("org_a", "acc_1")
            .await
            .expect("get")
            .expect("some")
            .totp,
        None
    );

    // Failure counts: none lost under concurrency; locked; cleared.
    let key = "k".repeat(64);
    let counts =
        futures_util::future::join_all((0..10).map(|i| store.record_login_failure(&key, 100 + i)))
            .await;
    let counts: Vec<u32> = counts.into_iter().map(|c| c.expect("count")).collect();
    // Each caller sees at least its own failure; together they see all ten (none is lost).
    assert!(counts.iter().all(|c| (1..=10).contains(c)), "{counts:?}");
    assert_eq!(counts.iter().max(), Some(&10), "{counts:?}");
    store.lock_login(&key, 5_000).await.expect("lock");
    let t = store
        .login_throttle(&key)
        .await
        .expect("get")
        .expect("some");
    assert_eq!((t.failures, t.locked_until), (10, 5_000));
    store.clear_login_throttle(&key).await.expect("clear");
    assert_eq!(store.login_throttle(&key).await.expect("get"), None);
    assert_eq!(store.record_login_failure(&key, 1).await.expect("count"), 1);

    // Sessions.
    let s = |id: &str, org: &str, acc: &str| SessionRecord {
        id_hash: id.into(),
        organisation: org.into(),
        account: acc.into(),
        created_at: 10,
        last_seen: 10,
        expires_at: 1_000,
    };
    for (id, org, acc) in [
        ("h1", "org_a", "acc_1"),
        ("h2", "org_a", "acc_1"),
        ("h3", "org_a", "acc_2"),
        ("h4", "org_b", "acc_1"),
    ] {
        store
            .insert_session(&s(id, org, acc))
            .await
            .expect("session");
    }
    store.touch_session("h1", 50).await.expect("touch");
    store
        .touch_session("h1", 20)
        .await
        .expect("touch (older: kept)");
    assert_eq!(
        store
            .session("h1")
            .await
            .expect("get")
            .expect("some")
            .last_seen,
        50
    );
    assert!(matches!(
        store.touch_session("nope", 1).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .delete_account_sessions("org_a", "acc_1")
            .await
            .expect("delete"),
        2
    );
    assert_eq!(store.session("h1").await.expect("get"), None);
    assert!(
        store.session("h3").await.expect("get").is_some(),
        "another account's"
    );
    assert!(
        store.session("h4").await.expect("get").is_some(),
        "same id in another organisation"
    );
    store.delete_session("h3").await.expect("delete");
    store.delete_session("h3").await.expect("absent is fine");
    assert_eq!(store.session("h3").await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_account_storage() {
    let (store, dir) = common::sqlite("accounts").await;
    contract(&store).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_account_storage() {
    let Some(store) = common::mongo("accounts").await else {
        return;
    };
    contract(&store).await;
    common::drop_mongo(&store).await;
}
