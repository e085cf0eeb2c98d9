//! Backend-specific behaviour beyond the shared trait: the embedded store's files and crash
//! clean-up, MongoDB's indexes, orphan sweep and outage errors.

mod common;

use common::*;
use futures_util::StreamExt;
use mongodb::bson::{Document, doc, oid::ObjectId};
use teleconsult_store::{
    BillingInterval, ExportQuery, MongoStore, SqliteStore, Store, StoreError, sqlite::DB_FILE,
};

fn interval(id: &str) -> BillingInterval {
    BillingInterval {
        id: id.to_string(),
        consultation: "c1".to_string(),
        practitioner: "dr-a".to_string(),
        start: 1,
        end: None,
        checkpoint: 2,
        recovered: false,
    }
}

#[tokio::test]
async fn embedded_store_is_private_durable_and_sweeps_unfinished_uploads() {
    let dir = temp_dir("embedded").join("nested/data");
    let store = SqliteStore::open(&dir)
        .await
        .expect("open creates the directory");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "data directory is private");
    }
    store
        .upsert_billing_interval(&interval("b1"))
        .await
        .expect("write");
    drop(store);

    // What a crash in the middle of an upload leaves: chunks no document points at.
    {
        let conn = rusqlite::Connection::open(dir.join(DB_FILE)).expect("open file");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("journal mode");
        assert_eq!(mode.to_ascii_lowercase(), "wal");
        conn.execute(
            "INSERT INTO document_chunks (blob, n, data) VALUES ('crashed.1', 0, x'00')",
            [],
        )
        .expect("orphan chunk");
    }
    let store = SqliteStore::open(&dir).await.expect("reopen");
    assert_eq!(
        store.chunk_count().await.expect("count"),
        0,
        "orphans swept"
    );
    assert_eq!(
        store.open_billing_intervals().await.expect("read"),
        vec![interval("b1")],
        "committed data survives a reopen"
    );
    // A file where the directory should be: a clear error, not a panic.
    let file = temp_dir("notadir");
    std::fs::write(&file, b"x").expect("file");
    let err = SqliteStore::open(&file).await.err().expect("refused");
    assert!(err.to_string().contains("not a directory"), "{err}");
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn unreachable_mongodb_is_unavailable_not_a_hang() {
    // Port 1 on loopback: refused at once; the store still opens (the server must start).
    let store = MongoStore::open("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300", "x")
        .await
        .expect("opens lazily");
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.upsert_billing_interval(&interval("b1")).await,
        Err(StoreError::Unavailable(_))
    ));
    let mut export = store.export_summaries(ExportQuery {
        from: 0,
        to: 10,
        practitioner: None,
    });
    assert!(matches!(
        export.next().await,
        Some(Err(StoreError::Unavailable(_)))
    ));
    assert!(
        export.next().await.is_none(),
        "the stream ends after the error"
    );
    // A malformed URI is a configuration error, not an outage.
    assert!(matches!(
        MongoStore::open("mongodb://host:notaport/", "x").await,
        Err(StoreError::Other(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_indexes_are_created_idempotently_and_old_orphan_chunks_swept() {
    let Some(store) = mongo("indexes").await else {
        return;
    };
    let db_name = store.database().name().to_string();
    let uri = mongo_uri().expect("uri");
    let expected = [
        (
            "billing_intervals",
            vec!["consultation_start", "end", "practitioner_start"],
        ),
        ("presence_intervals", vec!["consultation_start", "end"]),
        ("consultations", vec!["start_id", "practitioner_start_id"]),
        ("audit", vec!["at_id"]),
        (
            "documents.files",
            vec!["filename_1_uploadDate_1", "metadata_consultation"],
        ),
        ("documents.chunks", vec!["files_id_1_n_1"]),
    ];
    let chunks = store.database().collection::<Document>("documents.chunks");
    // An orphan chunk from two hours ago (a crashed upload) and a fresh one (an upload still
    // running, perhaps on another server).
    let two_hours_ago = ObjectId::from_bytes({
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            - 7200;
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&(secs as u32).to_be_bytes());
        b[11] = 1;
        b
    });
    let data = mongodb::bson::Binary {
        subtype: mongodb::bson::spec::BinarySubtype::Generic,
        bytes: vec![1, 2, 3],
    };
    chunks
        .insert_one(
            doc! {"_id": two_hours_ago, "files_id": "crashed", "n": 0, "data": data.clone()},
        )
        .await
        .expect("old orphan");
    chunks
        .insert_one(doc! {"_id": ObjectId::new(), "files_id": "running", "n": 0, "data": data})
        .await
        .expect("fresh chunk");

    // Opening again: same indexes (no error, no duplicates), old orphan gone, fresh one kept.
    let again = MongoStore::open(&uri, &db_name).await.expect("reopen");
    for (coll, names) in expected {
        let have = again
            .database()
            .collection::<Document>(coll)
            .list_index_names()
            .await
            .expect("indexes");
        for n in names {
            assert!(
                have.iter().any(|h| h == n),
                "{coll}: {n} missing in {have:?}"
            );
        }
    }
    assert_eq!(
        chunks
            .count_documents(doc! {"files_id": "crashed"})
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        chunks
            .count_documents(doc! {"files_id": "running"})
            .await
            .expect("count"),
        1
    );
    drop_mongo(&again).await;
}
