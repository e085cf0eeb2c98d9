//! Conformance of [`InvitationStore`] (scheduled consultations and invitations), run against
//! both backends: embedded SQLite, and MongoDB (FerretDB in CI; `TELECONSULT_TEST_MONGODB_URI`).

mod common;

use teleconsult_store::{
    ConsultationStatus, Invitation, InvitationStore, Pseudonym, ScheduledConsultation, StoreError,
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
    scheduled_consultation_round_trip_and_status,
    invitations_round_trip_in_order,
    revoking_one_link_keeps_the_first_time,
    cancel_revokes_all_links_of_it,
    listed_per_organisation_and_owner,
);

async fn listed_per_organisation_and_owner(store: &dyn InvitationStore) {
    let mut a = consultation("list-a");
    a.created_at = 2;
    let mut b = consultation("list-b");
    b.created_at = 1;
    b.practitioner = "acct-8".to_string();
    let mut c = consultation("list-c");
    c.organisation = "org-2".to_string();
    for x in [&a, &b, &c] {
        store
            .upsert_scheduled_consultation(x)
            .await
            .expect("upsert");
    }
    let all = store
        .scheduled_consultations("org-1", None)
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["list-b", "list-a"],
        "org-1 only, by created_at"
    );
    let mine = store
        .scheduled_consultations("org-1", Some("acct-7"))
        .await
        .expect("list");
    assert_eq!(mine, vec![a]);
    let other = store
        .scheduled_consultations("org-2", None)
        .await
        .expect("list");
    assert_eq!(other, vec![c]);
    assert!(
        store
            .scheduled_consultations("org-3", None)
            .await
            .expect("list")
            .is_empty()
    );
}

fn consultation(id: &str) -> ScheduledConsultation {
    ScheduledConsultation {
        id: id.to_string(),
        organisation: "org-1".to_string(),
        practitioner: "acct-7".to_string(),
        scheduled_at: Some(1_700_000_900_000),
        status: ConsultationStatus::Scheduled,
        created_at: 1_700_000_000_000,
        // Not the default: the round trip through each backend must keep it.
        policy: teleconsult_store::Policy::Recordable,
    }
}

fn invitation(jti: &str, consultation: &str, created_at: i64) -> Invitation {
    Invitation {
        jti: jti.to_string(),
        consultation: consultation.to_string(),
        role: "patient".to_string(),
        pseudonym: Pseudonym::new(format!("Label of {jti}")),
        not_before: 1_700_000_000_000,
        expires: 1_700_014_400_000,
        revoked_at: None,
        created_at,
    }
}

async fn scheduled_consultation_round_trip_and_status(s: &dyn InvitationStore) {
    assert_eq!(s.scheduled_consultation("c-1").await.unwrap(), None);
    let mut c = consultation("c-1");
    s.upsert_scheduled_consultation(&c).await.unwrap();
    assert_eq!(
        s.scheduled_consultation("c-1").await.unwrap(),
        Some(c.clone())
    );
    // Unscheduled (no time) round-trips too, replacing by id.
    c.scheduled_at = None;
    s.upsert_scheduled_consultation(&c).await.unwrap();
    assert_eq!(
        s.scheduled_consultation("c-1").await.unwrap(),
        Some(c.clone())
    );
    s.set_consultation_status("c-1", ConsultationStatus::Ended)
        .await
        .unwrap();
    assert_eq!(
        s.scheduled_consultation("c-1")
            .await
            .unwrap()
            .unwrap()
            .status,
        ConsultationStatus::Ended
    );
    assert!(matches!(
        s.set_consultation_status("c-none", ConsultationStatus::Ended)
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn invitations_round_trip_in_order(s: &dyn InvitationStore) {
    s.upsert_scheduled_consultation(&consultation("c-1"))
        .await
        .unwrap();
    let b = invitation("jti-b", "c-1", 20);
    let a = invitation("jti-a", "c-1", 10);
    let mut guest = invitation("jti-c", "c-1", 20);
    guest.role = "guest".to_string();
    for i in [&b, &a, &guest] {
        s.upsert_invitation(i).await.unwrap();
    }
    s.upsert_invitation(&invitation("jti-x", "c-other", 1))
        .await
        .unwrap();
    assert_eq!(s.invitation("jti-a").await.unwrap(), Some(a.clone()));
    assert_eq!(
        s.invitation("jti-a")
            .await
            .unwrap()
            .unwrap()
            .pseudonym
            .expose(),
        "Label of jti-a"
    );
    assert_eq!(s.invitation("nope").await.unwrap(), None);
    assert_eq!(
        s.invitations("c-1").await.unwrap(),
        vec![a.clone(), b.clone(), guest.clone()],
        "by created_at, then jti; only this consultation's"
    );
    // Idempotent upsert by jti.
    s.upsert_invitation(&a).await.unwrap();
    assert_eq!(s.invitations("c-1").await.unwrap().len(), 3);
    // The pseudonym never shows in Debug output.
    assert!(!format!("{a:?}").contains("Label of"), "{a:?}");
}

async fn revoking_one_link_keeps_the_first_time(s: &dyn InvitationStore) {
    s.upsert_invitation(&invitation("jti-a", "c-1", 1))
        .await
        .unwrap();
    s.upsert_invitation(&invitation("jti-b", "c-1", 2))
        .await
        .unwrap();
    s.revoke_invitation("jti-a", 500).await.unwrap();
    s.revoke_invitation("jti-a", 900).await.unwrap();
    assert_eq!(
        s.invitation("jti-a").await.unwrap().unwrap().revoked_at,
        Some(500)
    );
    assert_eq!(
        s.invitation("jti-b").await.unwrap().unwrap().revoked_at,
        None,
        "only that link"
    );
    assert!(matches!(
        s.revoke_invitation("jti-none", 1).await,
        Err(StoreError::NotFound)
    ));
}

async fn cancel_revokes_all_links_of_it(s: &dyn InvitationStore) {
    s.upsert_scheduled_consultation(&consultation("c-1"))
        .await
        .unwrap();
    s.upsert_scheduled_consultation(&consultation("c-2"))
        .await
        .unwrap();
    s.upsert_invitation(&invitation("a", "c-1", 1))
        .await
        .unwrap();
    s.upsert_invitation(&invitation("b", "c-1", 2))
        .await
        .unwrap();
    s.upsert_invitation(&invitation("x", "c-2", 3))
        .await
        .unwrap();
    s.revoke_invitation("a", 100).await.unwrap();
    assert_eq!(s.cancel_consultation("c-1", 700).await.unwrap(), 1);
    let c1 = s.scheduled_consultation("c-1").await.unwrap().unwrap();
    assert_eq!(c1.status, ConsultationStatus::Cancelled);
    let revoked: Vec<_> = s
        .invitations("c-1")
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.jti, i.revoked_at))
        .collect();
    assert_eq!(
        revoked,
        vec![("a".to_string(), Some(100)), ("b".to_string(), Some(700))]
    );
    assert_eq!(s.invitation("x").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(
        s.scheduled_consultation("c-2")
            .await
            .unwrap()
            .unwrap()
            .status,
        ConsultationStatus::Scheduled
    );
    assert!(matches!(
        s.cancel_consultation("c-none", 1).await,
        Err(StoreError::NotFound)
    ));
}
