//! Shared helpers for the store's integration tests: the two backends, fresh for each test.
#![allow(dead_code)]

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use std::path::PathBuf;
use std::sync::Arc;
use teleconsult_store::{DocumentMeta, EncryptionInfo, MongoStore, SqliteStore, Store, StoreError};

pub const MONGO_ENV: &str = "TELECONSULT_TEST_MONGODB_URI";

/// A fresh, private directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "teleconsult-store-test-{}-{name}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub async fn sqlite(name: &str) -> (SqliteStore, PathBuf) {
    let dir = temp_dir(name);
    let store = SqliteStore::open(&dir).await.expect("open embedded store");
    (store, dir)
}

/// The MongoDB URI of the test server, or `None` (with a note) outside CI when unset. In CI
/// (`CI` set) an unset variable fails the test: the MongoDB half never skips silently there.
pub fn mongo_uri() -> Option<String> {
    match std::env::var(MONGO_ENV) {
        Ok(uri) if !uri.is_empty() => Some(uri),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("{MONGO_ENV} is not set in CI: scripts/test starts FerretDB and sets it");
            }
            eprintln!(
                "NOTE: {MONGO_ENV} is not set: the MongoDB half of this test did NOT run \
                 (scripts/test starts FerretDB and sets it)"
            );
            None
        }
    }
}

/// A MongoDB store on a database of its own (`tc_<name>_<random>`).
pub async fn mongo(name: &str) -> Option<MongoStore> {
    let uri = mongo_uri()?;
    let db = format!("tc_{name}_{:08x}", rand::random::<u32>());
    Some(
        MongoStore::open(&uri, &db)
            .await
            .expect("open MongoDB store"),
    )
}

pub async fn drop_mongo(store: &MongoStore) {
    let _ = store.database().drop().await;
}

pub fn meta(consultation: &str, id: &str) -> DocumentMeta {
    DocumentMeta {
        id: id.to_string(),
        consultation: consultation.to_string(),
        filename: format!("{id}.pdf"),
        content_type: "application/pdf".to_string(),
        size: 0,
        sha256: String::new(),
        uploader: "p-1".to_string(),
        uploader_role: "practitioner".to_string(),
        uploaded_at: 1_700_000_000_000,
        encryption: EncryptionInfo {
            scheme: "AES-256-GCM-chunked-v1".to_string(),
            wrapped_key: "d3JhcHBlZA==".to_string(),
            chunk_size: 65536,
            master_key_id: "k1".to_string(),
            // Both backends must keep it (the conformance tests compare whole records).
            sealed_meta: Some("c2VhbGVkIG1ldGFkYXRh".to_string()),
        },
    }
}

/// Deterministic pseudo-random bytes (xorshift), so contents are not trivially compressible.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `data` as a body stream of pieces of uneven sizes.
pub fn body(data: &[u8]) -> BoxStream<'static, Result<Bytes, String>> {
    let mut pieces = Vec::new();
    let mut rest = Bytes::copy_from_slice(data);
    let mut k = 1usize;
    while !rest.is_empty() {
        let n = (k * 7919 % 100_000 + 1).min(rest.len());
        pieces.push(Ok(rest.split_to(n)));
        k += 1;
    }
    stream::iter(pieces).boxed()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub async fn read_body(store: &dyn Store, id: &str) -> Result<Vec<u8>, StoreError> {
    let mut s = store.document_body(id);
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

pub fn as_dyn<S: Store>(s: S) -> Arc<dyn Store> {
    Arc::new(s)
}
