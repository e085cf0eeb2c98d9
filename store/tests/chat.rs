//! Conformance of [`ChatStore`] (a consultation's wrapped chat key, its sealed messages), run
//! against both backends: embedded SQLite, and MongoDB (FerretDB in CI;
//! `TELECONSULT_TEST_MONGODB_URI`).

mod common;

use teleconsult_store::{ChatKeyRecord, ChatStore, StoredChatMessage};

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
    the_first_chat_key_of_a_consultation_wins,
    messages_are_listed_per_consultation_in_order,
);

fn key(consultation: &str, wrapped: &str) -> ChatKeyRecord {
    ChatKeyRecord {
        consultation: consultation.into(),
        scheme: "AES-256-GCM-chat-v1".into(),
        wrapped_key: wrapped.into(),
        master_key_id: "k1".into(),
        created_at: 1,
    }
}

fn message(id: &str, consultation: &str, at: i64, seq: i64) -> StoredChatMessage {
    StoredChatMessage {
        id: id.into(),
        consultation: consultation.into(),
        seq,
        at,
        kind: "chat".into(),
        sender_role: "patient".into(),
        sealed: format!("sealed-{id}"),
    }
}

async fn the_first_chat_key_of_a_consultation_wins<S: ChatStore>(store: &S) {
    assert_eq!(store.chat_key("c1").await.unwrap(), None);
    let first = store.insert_chat_key(&key("c1", "AAAA")).await.unwrap();
    assert_eq!(first, key("c1", "AAAA"));
    // A second writer (a race, a restart) gets the stored key back, not its own.
    let second = store.insert_chat_key(&key("c1", "BBBB")).await.unwrap();
    assert_eq!(second.wrapped_key, "AAAA");
    assert_eq!(store.chat_key("c1").await.unwrap(), Some(key("c1", "AAAA")));
    assert_eq!(store.chat_key("c2").await.unwrap(), None);
}

async fn messages_are_listed_per_consultation_in_order<S: ChatStore>(store: &S) {
    store
        .upsert_chat_message(&message("m3", "c1", 20, 0))
        .await
        .unwrap();
    store
        .upsert_chat_message(&message("m2", "c1", 10, 2))
        .await
        .unwrap();
    store
        .upsert_chat_message(&message("m1", "c1", 10, 1))
        .await
        .unwrap();
    store
        .upsert_chat_message(&message("x1", "c2", 5, 0))
        .await
        .unwrap();
    // Replaying a write (a retry) does not duplicate it.
    store
        .upsert_chat_message(&message("m1", "c1", 10, 1))
        .await
        .unwrap();
    let ids: Vec<String> = store
        .chat_messages("c1")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    let c2 = store.chat_messages("c2").await.unwrap();
    assert_eq!(c2, vec![message("x1", "c2", 5, 0)]);
    assert!(store.chat_messages("c3").await.unwrap().is_empty());
}
