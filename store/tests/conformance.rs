//! One conformance suite, run against both backends: the embedded SQLite store, and MongoDB
//! (FerretDB in CI; `TELECONSULT_TEST_MONGODB_URI`, set by scripts/test). Each case is a
//! function over `&dyn Store`; the `conformance!` macro makes one test per backend.

mod common;

use common::*;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use teleconsult_store::{
    AuditEvent, BillingInterval, ConsultationSummary, ExportQuery, PresenceInterval, Store,
    StoreError,
};

/// What a case may check beyond the trait: the backend's own count of stored chunks.
#[async_trait::async_trait]
trait Backend {
    fn store(&self) -> &dyn Store;
    /// Stored chunks (documents' bytes), including any orphans.
    async fn chunk_count(&self) -> u64;
    /// GridFS files documents (MongoDB), or document rows (SQLite).
    async fn file_count(&self) -> u64;
}

struct Sqlite(teleconsult_store::SqliteStore);
struct Mongo(teleconsult_store::MongoStore);

#[async_trait::async_trait]
impl Backend for Sqlite {
    fn store(&self) -> &dyn Store {
        &self.0
    }
    async fn chunk_count(&self) -> u64 {
        self.0.chunk_count().await.expect("count chunks")
    }
    async fn file_count(&self) -> u64 {
        self.0.document_count().await.expect("count documents")
    }
}

#[async_trait::async_trait]
impl Backend for Mongo {
    fn store(&self) -> &dyn Store {
        &self.0
    }
    async fn chunk_count(&self) -> u64 {
        let db = self.0.database();
        db.collection::<::mongodb::bson::Document>("documents.chunks")
            .count_documents(::mongodb::bson::doc! {})
            .await
            .expect("count chunks")
    }
    async fn file_count(&self) -> u64 {
        let db = self.0.database();
        db.collection::<::mongodb::bson::Document>("documents.files")
            .count_documents(::mongodb::bson::doc! {})
            .await
            .expect("count files")
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, dir) = crate::common::sqlite(stringify!($case)).await;
                    super::$case(&super::Sqlite(store)).await;
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
                    let backend = super::Mongo(store);
                    super::$case(&backend).await;
                    crate::common::drop_mongo(&backend.0).await;
                }
            )*
        }
    };
}

conformance!(
    ping,
    billing_upsert_is_idempotent,
    presence_intervals_and_open_ones,
    summaries_upsert_and_lookup,
    export_orders_filters_and_streams,
    documents_round_trip,
    aborted_upload_leaves_nothing,
    duplicate_document_id_is_refused,
    delete_document,
    audit_is_idempotent_and_exported_in_order,
);

fn billing(id: &str, consultation: &str, start: i64, end: Option<i64>) -> BillingInterval {
    BillingInterval {
        id: id.to_string(),
        consultation: consultation.to_string(),
        practitioner: "dr-a".to_string(),
        start,
        end,
        checkpoint: start + 5000,
        recovered: false,
    }
}

fn presence(id: &str, consultation: &str, start: i64, end: Option<i64>) -> PresenceInterval {
    PresenceInterval {
        id: id.to_string(),
        consultation: consultation.to_string(),
        participant: format!("part-{id}"),
        role: "patient".to_string(),
        start,
        end,
        checkpoint: start + 5000,
        recovered: false,
    }
}

fn summary(consultation: &str, practitioner: &str, start: i64) -> ConsultationSummary {
    ConsultationSummary {
        consultation: consultation.to_string(),
        practitioner: practitioner.to_string(),
        patient_pseudonym: format!("pseud-{consultation}"),
        start,
        end: Some(start + 60_000),
        billable_ms: 59_999,
        participants: 3,
        recovered: false,
    }
}

async fn ping(b: &dyn Backend) {
    b.store().ping().await.expect("ping");
}

async fn billing_upsert_is_idempotent(b: &dyn Backend) {
    let s = b.store();
    let mut i = billing("b1", "c1", 1_000, None);
    s.upsert_billing_interval(&i).await.expect("insert");
    s.upsert_billing_interval(&i).await.expect("same again");
    assert_eq!(
        s.billing_intervals("c1").await.expect("list"),
        vec![i.clone()]
    );
    assert_eq!(
        s.open_billing_intervals().await.expect("open"),
        vec![i.clone()]
    );

    // A checkpoint, then the close: replaced in place, never duplicated.
    i.checkpoint = 9_000;
    s.upsert_billing_interval(&i).await.expect("checkpoint");
    i.end = Some(10_000);
    i.recovered = true;
    s.upsert_billing_interval(&i).await.expect("close");
    s.upsert_billing_interval(&i).await.expect("close replayed");
    assert_eq!(
        s.billing_intervals("c1").await.expect("list"),
        vec![i.clone()]
    );
    assert!(s.open_billing_intervals().await.expect("open").is_empty());

    let j = billing("b0", "c1", 500, Some(700));
    let k = billing("b2", "c2", 100, None);
    s.upsert_billing_interval(&j).await.expect("j");
    s.upsert_billing_interval(&k).await.expect("k");
    // Ordered by start; other consultations excluded.
    assert_eq!(s.billing_intervals("c1").await.expect("list"), vec![j, i]);
    assert_eq!(s.open_billing_intervals().await.expect("open"), vec![k]);
    assert!(s.billing_intervals("nope").await.expect("none").is_empty());

    // Concurrent upserts of one new id: one row.
    let n = billing("race", "c3", 1, None);
    let writes = (0..8).map(|_| s.upsert_billing_interval(&n));
    for r in futures_util::future::join_all(writes).await {
        r.expect("concurrent upsert");
    }
    assert_eq!(s.billing_intervals("c3").await.expect("list"), vec![n]);
}

async fn presence_intervals_and_open_ones(b: &dyn Backend) {
    let s = b.store();
    let a = presence("p1", "c1", 2_000, Some(3_000));
    let o = presence("p2", "c1", 1_000, None);
    let x = presence("p3", "c2", 1_000, None);
    for p in [&a, &o, &x, &a] {
        s.upsert_presence_interval(p).await.expect("upsert");
    }
    assert_eq!(
        s.presence_intervals("c1").await.expect("list"),
        vec![o.clone(), a.clone()]
    );
    assert_eq!(
        s.open_presence_intervals().await.expect("open"),
        vec![o.clone(), x.clone()]
    );
    let mut closed = o.clone();
    closed.end = Some(closed.checkpoint);
    closed.recovered = true;
    s.upsert_presence_interval(&closed).await.expect("close");
    assert_eq!(s.open_presence_intervals().await.expect("open"), vec![x]);
    assert_eq!(
        s.presence_intervals("c1").await.expect("list"),
        vec![closed, a]
    );
}

async fn summaries_upsert_and_lookup(b: &dyn Backend) {
    let s = b.store();
    assert_eq!(s.consultation_summary("c1").await.expect("none"), None);
    let mut c = summary("c1", "dr-a", 1_000);
    c.end = None;
    s.upsert_consultation_summary(&c).await.expect("insert");
    c.end = Some(99_000);
    c.billable_ms = 98_000;
    c.recovered = true;
    c.participants = u32::MAX;
    s.upsert_consultation_summary(&c).await.expect("replace");
    assert_eq!(s.consultation_summary("c1").await.expect("get"), Some(c));
}

async fn collect<T>(mut st: BoxStream<'_, Result<T, StoreError>>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(item) = st.next().await {
        out.push(item.expect("stream item"));
    }
    out
}

async fn export_orders_filters_and_streams(b: &dyn Backend) {
    let s = b.store();
    // 2,100 consultations (more than two export pages of 1,000), inserted out of order, with ties on
    // `start` (ordered by id then), two practitioners.
    let n = 2_100;
    let mut all: Vec<ConsultationSummary> = (0..n)
        .map(|k| {
            let start = 1_000_000 + (k / 3) as i64 * 1000;
            let dr = if k % 4 == 0 { "dr-b" } else { "dr-a" };
            summary(&format!("c{k:05}"), dr, start)
        })
        .collect();
    let mut shuffled = all.clone();
    shuffled.reverse();
    shuffled.swap(0, 1000);
    let writes = stream::iter(shuffled.iter().map(|c| s.upsert_consultation_summary(c)))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(writes.iter().all(Result::is_ok), "writes");
    all.sort_by(|a, b| (a.start, &a.consultation).cmp(&(b.start, &b.consultation)));

    let everything = collect(s.export_summaries(ExportQuery {
        from: 0,
        to: i64::MAX,
        practitioner: None,
    }))
    .await;
    assert_eq!(everything.len(), n);
    assert!(everything == all, "all rows, ordered by (start, id)");

    // [from, to): `from` included, `to` excluded.
    let from = 1_100_000;
    let to = 1_200_000;
    let want: Vec<_> = all
        .iter()
        .filter(|c| c.start >= from && c.start < to)
        .cloned()
        .collect();
    let got = collect(s.export_summaries(ExportQuery {
        from,
        to,
        practitioner: None,
    }))
    .await;
    assert_eq!(got, want);
    assert_eq!(got.first().map(|c| c.start), Some(from));
    assert!(got.iter().all(|c| c.start < to));

    let want_b: Vec<_> = all
        .iter()
        .filter(|c| c.practitioner == "dr-b")
        .cloned()
        .collect();
    let got_b = collect(s.export_summaries(ExportQuery {
        from: 0,
        to: i64::MAX,
        practitioner: Some("dr-b".into()),
    }))
    .await;
    assert_eq!(got_b.len(), n.div_ceil(4));
    assert!(got_b == want_b, "practitioner filter");

    assert!(
        collect(s.export_summaries(ExportQuery {
            from: 0,
            to: i64::MAX,
            practitioner: Some("nobody".into()),
        }))
        .await
        .is_empty()
    );

    // Streamed: the first rows arrive and the stream can be dropped half-way.
    let mut st = s.export_summaries(ExportQuery {
        from: 0,
        to: i64::MAX,
        practitioner: None,
    });
    let first = st.next().await.expect("a row").expect("ok");
    assert_eq!(first, all[0]);
    drop(st);
}

async fn documents_round_trip(b: &dyn Backend) {
    let s = b.store();
    // Empty, under one chunk, exactly one chunk, several chunks plus a remainder.
    let sizes = [0usize, 1000, 255 * 1024, 3 * 255 * 1024 + 12_345];
    for (k, size) in sizes.iter().enumerate() {
        let data = bytes(*size, k as u64 + 7);
        let id = format!("doc{k}");
        let m = meta("c1", &id);
        let digest = sha256_hex(&data);
        let len = data.len() as u64;
        s.put_document(
            &m,
            body(&data),
            Box::new(move |m| {
                m.size = len;
                m.sha256 = digest;
            }),
        )
        .await
        .expect("put");
        let got = read_body(s, &id).await.expect("body");
        assert_eq!(got.len(), data.len(), "size {size}");
        assert_eq!(sha256_hex(&got), sha256_hex(&data), "size {size}");
        let stored = s.document("c1", &id).await.expect("meta").expect("exists");
        assert_eq!(stored.size, len);
        assert_eq!(stored.sha256, sha256_hex(&data));
        assert_eq!(stored.encryption, m.encryption);
        assert_eq!(stored.filename, m.filename);
    }
    // Streamed chunk by chunk, not as one piece.
    let chunks: Vec<_> = collect(s.document_body("doc3")).await;
    assert_eq!(chunks.len(), 4);
    assert!(chunks[..3].iter().all(|c| c.len() == 255 * 1024));

    let listed = s.list_documents("c1").await.expect("list");
    assert_eq!(
        listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        vec!["doc0", "doc1", "doc2", "doc3"]
    );
    assert!(s.list_documents("c2").await.expect("other").is_empty());
    // Another consultation cannot see it.
    assert_eq!(s.document("c2", "doc1").await.expect("lookup"), None);
    assert!(matches!(
        read_body(s, "missing").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(b.file_count().await, 4);
}

async fn aborted_upload_leaves_nothing(b: &dyn Backend) {
    let s = b.store();
    let before = b.chunk_count().await;
    let data = bytes(3 * 255 * 1024, 99);
    // Three full chunks reach the store, then the client goes away.
    let failing = stream::iter(vec![
        Ok(bytes::Bytes::from(data[..2 * 255 * 1024].to_vec())),
        Ok(bytes::Bytes::from(data[2 * 255 * 1024..].to_vec())),
        Err("client disconnected".to_string()),
    ])
    .boxed();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = finished.clone();
    let r = s
        .put_document(
            &meta("c1", "aborted"),
            failing,
            Box::new(move |_| f.store(true, std::sync::atomic::Ordering::SeqCst)),
        )
        .await;
    assert!(
        matches!(r, Err(StoreError::Aborted(ref m)) if m == "client disconnected"),
        "{r:?}"
    );
    assert!(
        !finished.load(std::sync::atomic::Ordering::SeqCst),
        "finish not called"
    );
    assert_eq!(s.document("c1", "aborted").await.expect("lookup"), None);
    assert!(s.list_documents("c1").await.expect("list").is_empty());
    assert!(matches!(
        read_body(s, "aborted").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(b.chunk_count().await, before, "no orphan chunks");
    assert_eq!(b.file_count().await, 0, "no files");

    // The same id can be uploaded afterwards.
    s.put_document(&meta("c1", "aborted"), body(&data), Box::new(|_| {}))
        .await
        .expect("retry");
    assert_eq!(read_body(s, "aborted").await.expect("body"), data);
}

async fn duplicate_document_id_is_refused(b: &dyn Backend) {
    let s = b.store();
    let first = bytes(300_000, 1);
    s.put_document(&meta("c1", "dup"), body(&first), Box::new(|_| {}))
        .await
        .expect("first");
    let chunks = b.chunk_count().await;
    let r = s
        .put_document(&meta("c1", "dup"), body(&bytes(10, 2)), Box::new(|_| {}))
        .await;
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
    assert_eq!(read_body(s, "dup").await.expect("body"), first, "unchanged");
    assert_eq!(b.chunk_count().await, chunks);
}

async fn delete_document(b: &dyn Backend) {
    let s = b.store();
    let data = bytes(600_000, 3);
    s.put_document(&meta("c1", "d1"), body(&data), Box::new(|_| {}))
        .await
        .expect("put");
    s.put_document(&meta("c1", "d2"), body(&data), Box::new(|_| {}))
        .await
        .expect("put");
    // Wrong consultation: not found, nothing deleted.
    assert!(matches!(
        s.delete_document("c2", "d1").await,
        Err(StoreError::NotFound)
    ));
    s.delete_document("c1", "d1").await.expect("delete");
    assert!(matches!(
        s.delete_document("c1", "d1").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.document("c1", "d1").await.expect("lookup"), None);
    assert!(matches!(
        read_body(s, "d1").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(read_body(s, "d2").await.expect("other intact"), data);
    assert_eq!(b.chunk_count().await, 3, "only d2's chunks remain");
    assert_eq!(b.file_count().await, 1);
}

async fn audit_is_idempotent_and_exported_in_order(b: &dyn Backend) {
    let s = b.store();
    let ev = |id: &str, at: i64| AuditEvent {
        id: id.to_string(),
        at,
        actor: "p-1".to_string(),
        action: "document.download".to_string(),
        consultation: Some("c1".to_string()),
        target: if at % 2 == 0 {
            Some("doc".to_string())
        } else {
            None
        },
    };
    let mut all: Vec<AuditEvent> = (0..1_100)
        .map(|k| ev(&format!("e{k:04}"), 10_000 + (k / 2) as i64))
        .collect();
    let writes = stream::iter(all.iter().rev().map(|e| s.record_audit(e)))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(writes.iter().all(Result::is_ok), "writes");
    // Replayed (even with different content): recorded once, first version kept.
    let mut replay = all[10].clone();
    s.record_audit(&replay).await.expect("replay");
    replay.action = "changed".to_string();
    s.record_audit(&replay).await.expect("replay changed");
    all.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));

    let got = collect(s.export_audit(0, i64::MAX)).await;
    assert_eq!(got.len(), all.len());
    assert!(got == all, "ordered by time, each once");
    let got = collect(s.export_audit(10_100, 10_200)).await;
    assert_eq!(got.len(), 200);
    assert!(got.iter().all(|e| e.at >= 10_100 && e.at < 10_200));
    assert!(collect(s.export_audit(0, 10_000)).await.is_empty());
}
