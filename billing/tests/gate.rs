//! Cluster fencing on the billing side: with a write gate attached, only the consultations the
//! gate admits are written; a fenced consultation's intervals never reach the store (a real
//! store: the embedded SQLite one, through the real writer task).

use std::sync::Arc;
use std::time::Duration;
use teleconsult_billing::{Billing, Presence, config::BillingConfig};
use teleconsult_consultation::Role;

fn call<'a>() -> [Presence<'a>; 2] {
    [
        Presence {
            id: "p-dr",
            seat: "acct-dr",
            role: Role::Practitioner,
            present: true,
            left: false,
        },
        Presence {
            id: "p-pt",
            seat: "jti-pt",
            role: Role::Patient,
            present: true,
            left: false,
        },
    ]
}

#[tokio::test]
async fn a_gated_billing_writes_only_the_consultations_this_node_still_owns() {
    let dir = std::env::temp_dir().join(format!(
        "billing-gate-{}-{}",
        std::process::id(),
        teleconsult_billing::now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = teleconsult_store::open("", "billing_gate", &dir)
        .await
        .unwrap();
    let billing =
        Billing::start_in_cluster(&BillingConfig::default(), &dir, b"secret", store.clone())
            .await
            .unwrap();
    billing.attach_gate(Arc::new(|consultation: &str, _now| {
        consultation == "c-owned"
    }));

    billing.observe("c-fenced", call(), false);
    billing.observe("c-owned", call(), false);
    billing.checkpoint_all(teleconsult_billing::now_ms());

    // The writer applies ops in order: once the owned consultation's interval is stored, the
    // fenced one's (sent before it) would have been too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if !store.billing_intervals("c-owned").await.unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the owned consultation's interval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store
            .billing_intervals("c-fenced")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .presence_intervals("c-fenced")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .consultation_summary("c-fenced")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.presence_intervals("c-owned").await.unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
