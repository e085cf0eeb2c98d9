//! Conformance of [`RecordingStore`] (finished recordings' journals), run against both backends:
//! embedded SQLite, and MongoDB (FerretDB in CI; `TELECONSULT_TEST_MONGODB_URI`): bytes come back
//! identical across chunk boundaries, a second store of the same id is a no-op, a failing upload
//! leaves nothing (and a retry then works), delete removes record and bytes.

mod common;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use teleconsult_store::{CHUNK_SIZE, RecordingRecord, RecordingStore, StoreError};

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

conformance!(journal_round_trips, failed_upload_leaves_nothing,);

fn record(id: &str, consultation: &str, created_at: i64, bytes: u64) -> RecordingRecord {
    RecordingRecord {
        id: id.into(),
        consultation: consultation.into(),
        created_at,
        stored_at: created_at + 10,
        bytes,
        duration_ms: created_at * 1000,
        interrupted: id.ends_with('1'),
    }
}

/// `len` bytes of a recognisable pattern, in pieces of `piece` bytes.
fn body(len: usize, piece: usize) -> (Vec<u8>, BoxStream<'static, Result<Bytes, String>>) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let pieces: Vec<Result<Bytes, String>> = data
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (data, stream::iter(pieces).boxed())
}

async fn read_all(store: &dyn RecordingStore, id: &str) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    let mut s = store.recording_body(id);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn journal_round_trips(store: &dyn RecordingStore) {
    let len = 2 * CHUNK_SIZE + 1234;
    let (data, b) = body(len, 10_000);
    let r1 = record("rec_a1", "c-1", 5, len as u64);
    store.put_recording(&r1, b).await.expect("stored");
    let (small, b) = body(100, 7);
    let r2 = record("rec_b2", "c-1", 3, 100);
    store.put_recording(&r2, b).await.expect("stored");
    let r3 = record("rec_c3", "c-2", 1, 100);
    store
        .put_recording(&r3, body(100, 100).1)
        .await
        .expect("stored");

    assert_eq!(read_all(store, "rec_a1").await.expect("read"), data);
    assert_eq!(read_all(store, "rec_b2").await.expect("read"), small);
    assert_eq!(
        store.recording("rec_a1").await.expect("get"),
        Some(r1.clone())
    );
    assert_eq!(
        store.recordings(Some("c-1")).await.expect("list"),
        vec![r2.clone(), r1.clone()],
        "by created_at"
    );
    assert_eq!(store.recordings(None).await.expect("all").len(), 3);
    // Stored again (a retry after a crash): nothing changes.
    store
        .put_recording(&r1, body(10, 10).1)
        .await
        .expect("a no-op");
    assert_eq!(read_all(store, "rec_a1").await.expect("read"), data);

    store.delete_recording("rec_a1").await.expect("deleted");
    assert_eq!(store.recording("rec_a1").await.expect("get"), None);
    assert!(matches!(
        read_all(store, "rec_a1").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_recording("rec_a1").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        read_all(store, "rec_none").await,
        Err(StoreError::NotFound)
    ));
}

async fn failed_upload_leaves_nothing(store: &dyn RecordingStore) {
    let r = record("rec_d4", "c-3", 1, (CHUNK_SIZE + 10) as u64);
    let (data, _) = body(CHUNK_SIZE + 10, CHUNK_SIZE + 10);
    let failing: BoxStream<'static, Result<Bytes, String>> = stream::iter(vec![
        Ok(Bytes::copy_from_slice(&data[..CHUNK_SIZE])),
        Ok(Bytes::copy_from_slice(&data[CHUNK_SIZE..CHUNK_SIZE + 5])),
        Err("the journal could not be read".to_string()),
    ])
    .boxed();
    assert!(matches!(
        store.put_recording(&r, failing).await,
        Err(StoreError::Aborted(_))
    ));
    assert_eq!(store.recording("rec_d4").await.expect("get"), None);
    assert!(
        store
            .recordings(Some("c-3"))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(matches!(
        read_all(store, "rec_d4").await,
        Err(StoreError::NotFound)
    ));
    let (data, b) = body(CHUNK_SIZE + 10, 4096);
    store.put_recording(&r, b).await.expect("retried");
    assert_eq!(read_all(store, "rec_d4").await.expect("read"), data);
}
