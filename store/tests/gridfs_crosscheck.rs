//! Our GridFS against pymongo's own GridFS implementation (scripts/gridfs-crosscheck.py): a file
//! stored by Rust is read by Python with the same sha256, and a file stored by Python is listed
//! and served by Rust with the same sha256. Two implementations agreeing is the proof that the
//! bucket is standard GridFS. Runs against `TELECONSULT_TEST_MONGODB_URI` (FerretDB in CI).

mod common;

use common::*;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use teleconsult_store::{CHUNK_SIZE, Store};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The Python with pymongo: `TELECONSULT_TEST_PYTHON`, else the venv install-test-deps makes.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TELECONSULT_TEST_PYTHON") {
        return p.into();
    }
    let venv = root().join("target/test-venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run scripts/install-test-deps (it installs pymongo there)",
        venv.display()
    );
    venv
}

fn crosscheck(uri: &str, db: &str, args: &[&str], stdin: &str) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(root().join("scripts/gridfs-crosscheck.py"))
        .args([uri, db])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/gridfs-crosscheck.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("crosscheck output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gridfs-crosscheck.py {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymongo_gridfs_reads_ours_and_we_read_pymongos() {
    let Some(uri) = mongo_uri() else { return };
    let db = format!("tc_crosscheck_{:08x}", rand::random::<u32>());
    let store = teleconsult_store::MongoStore::open(&uri, &db)
        .await
        .expect("open MongoDB store");

    // Stored by Rust, read by pymongo.
    let ours = bytes(2 * CHUNK_SIZE + 4321, 5);
    let ours_sha = sha256_hex(&ours);
    store
        .put_document(&meta("c1", "rust-doc"), body(&ours), Box::new(|_| {}))
        .await
        .expect("store");
    let r = crosscheck(&uri, &db, &["read", "rust-doc", &ours_sha], "");
    assert_eq!(r["sha256"], ours_sha.as_str());
    assert_eq!(r["length"], ours.len() as u64);
    assert_eq!(r["chunk_size"], CHUNK_SIZE as u64);
    assert_eq!(r["chunks"], 3);
    assert_eq!(r["filename"], "rust-doc.pdf");

    // Stored by pymongo (with our metadata layout), listed and served by Rust.
    let mut m = meta("c1", "py-doc");
    let size = 600_000usize;
    let theirs = bytes(size, 11);
    m.size = size as u64;
    m.sha256 = sha256_hex(&theirs);
    let metadata = serde_json::to_string(&m).expect("json");
    let w = crosscheck(
        &uri,
        &db,
        &["write", "py-doc", "py-doc.pdf", &size.to_string(), "11"],
        &metadata,
    );
    assert_eq!(
        w["sha256"],
        m.sha256.as_str(),
        "same generator on both sides"
    );
    let got = store
        .document("c1", "py-doc")
        .await
        .expect("lookup")
        .expect("pymongo's file is visible");
    assert_eq!(got, m);
    let served = read_body(&store, "py-doc").await.expect("body");
    assert_eq!(served.len(), size);
    assert_eq!(sha256_hex(&served), m.sha256);
    let listed: Vec<String> = store
        .list_documents("c1")
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&"py-doc".to_string()) && listed.contains(&"rust-doc".to_string()));

    // Our delete removes pymongo's file and its chunks.
    store.delete_document("c1", "py-doc").await.expect("delete");
    let chunks = store
        .database()
        .collection::<mongodb::bson::Document>("documents.chunks")
        .count_documents(mongodb::bson::doc! {"files_id": "py-doc"})
        .await
        .expect("count");
    assert_eq!(chunks, 0);
    let _ = store.database().drop().await;
}
