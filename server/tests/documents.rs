//! Shared documents through the real HTTP API of an in-process server, with real synthetic
//! participants joined over signalling. Every case runs against the embedded store and, when
//! `TELECONSULT_TEST_MONGODB_URI` is set (always in CI: scripts/test starts FerretDB), against
//! MongoDB/GridFS too.

mod common;

use common::{Reply, T, TestServer, admit, audit_count, bearer, poll, request, wait_admitted};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use teleconsult::config::Config;
use teleconsult::config::ExposeSecret;
use teleconsult::protocol::{DocumentInfo, ServerMessage};
use teleconsult::token::Role;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Embedded,
    Mongo,
}

/// The backends to run: the embedded store always, MongoDB when configured. In CI an unset
/// variable fails: the MongoDB half never skips silently there.
fn backends() -> Vec<Backend> {
    match common::mongo_uri() {
        Some(_) => vec![Backend::Embedded, Backend::Mongo],
        None => vec![Backend::Embedded],
    }
}

async fn server(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::for_tests();
    if backend == Backend::Mongo {
        config.storage.mongodb_uri = common::mongo_uri().expect("checked").into();
        config.storage.database = format!("tc_docs_{:08x}", rand::random::<u32>());
    }
    tweak(&mut config);
    TestServer::start_with(config).await
}

/// Stored chunks that belong to no document (an aborted upload's leftovers).
async fn orphan_chunks(s: &TestServer) -> u64 {
    let uri = s.config.storage.mongodb_uri.expose_secret();
    let mongodb = (!uri.is_empty()).then_some((uri, s.config.storage.database.as_str()));
    common::orphan_chunks(&s.config.storage.data_dir, mongodb).await
}

/// The GridFS `filename` of document `id` read from MongoDB itself (`None` on the embedded
/// store, which has no such field).
async fn stored_gridfs_name(s: &TestServer, id: &str) -> Option<String> {
    if s.config.storage.mongodb_uri.expose_secret().is_empty() {
        return None;
    }
    use mongodb::bson::{Document, doc};
    let client = mongodb::Client::with_uri_str(s.config.storage.mongodb_uri.expose_secret())
        .await
        .expect("connect");
    let file = client
        .database(&s.config.storage.database)
        .collection::<Document>(&format!("{}.files", teleconsult_store::mongo::BUCKET))
        .find_one(doc! { "_id": id })
        .await
        .expect("find")
        .expect("the document's GridFS file");
    Some(file.get_str("filename").expect("filename").to_string())
}

async fn drop_database(s: &TestServer) {
    if !s.config.storage.mongodb_uri.expose_secret().is_empty()
        && let Ok(client) =
            mongodb::Client::with_uri_str(s.config.storage.mongodb_uri.expose_secret()).await
    {
        let _ = client.database(&s.config.storage.database).drop().await;
    }
}

const BOUNDARY: &str = "----teleconsult-test-boundary-7d1f";

fn multipart_head(filename: &str, content_type: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes()
}

fn multipart(filename: &str, content_type: &str, content: &[u8]) -> Vec<u8> {
    let mut body = multipart_head(filename, content_type);
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn form_header() -> (&'static str, String) {
    (
        "Content-Type",
        format!("multipart/form-data; boundary={BOUNDARY}"),
    )
}

async fn upload(
    s: &TestServer,
    consultation: &str,
    token: &str,
    filename: &str,
    content: &[u8],
) -> Reply {
    request(
        s.http_addr,
        "POST",
        &format!("/api/consultations/{consultation}/documents"),
        &[bearer(token), form_header()],
        multipart(filename, "application/pdf", content),
    )
    .await
}

async fn get(s: &TestServer, path: &str, token: &str, extra: &[(&str, String)]) -> Reply {
    let mut headers = vec![bearer(token)];
    headers.extend(extra.iter().cloned());
    request(s.http_addr, "GET", path, &headers, Vec::new()).await
}

const MARKER: &[u8] = b"PLAINTEXT-MARKER-blood-glucose-6.1-mmol";

/// A PDF-looking document of `len` bytes with the marker all through it.
fn pdf(len: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n".to_vec();
    let mut i = 0u32;
    while v.len() < len {
        v.extend_from_slice(MARKER);
        v.extend_from_slice(&i.to_le_bytes());
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12345);
    }
    v.truncate(len);
    v
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A practitioner and an admitted patient in `consultation`.
async fn call(
    s: &TestServer,
    consultation: &str,
) -> (
    teleconsult_loadtest::participant::Participant,
    teleconsult_loadtest::participant::Participant,
) {
    let mut doctor = s.join(consultation, "Dr Test", Role::Practitioner).await;
    let mut patient = s.join(consultation, "Pat Test", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    (doctor, patient)
}

#[tokio::test]
async fn upload_list_download_range_and_encryption_at_rest() {
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        let c = "c-docs-roundtrip";
        let (mut doctor, patient) = call(&s, c).await;
        let pt = s.token(c, "Pat Test", Role::Patient).await;
        let dt = s.token(c, "Dr Test", Role::Practitioner).await;
        let content = pdf(200_000);

        let r = upload(&s, c, &pt, "Blood results.pdf", &content).await;
        assert_eq!(
            r.status,
            201,
            "{backend:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let doc: DocumentInfo = serde_json::from_slice(&r.body).expect("document json");
        assert_eq!(doc.filename, "Blood results.pdf");
        assert_eq!(doc.size, content.len() as u64);
        assert_eq!(doc.sha256, sha_hex(&content));
        assert_eq!(doc.content_type, "application/pdf");
        assert_eq!(doc.uploader, patient.id);

        // The practitioner is told, with metadata only.
        let id = doc.id.clone();
        let m = doctor
            .expect(
                T,
                |m| matches!(m, ServerMessage::DocumentAdded { document } if document.id == id),
            )
            .await
            .expect("document_added");
        assert_eq!(
            m,
            ServerMessage::DocumentAdded {
                document: doc.clone()
            }
        );

        let base = format!("/api/consultations/{c}/documents");
        let r = get(&s, &base, &dt, &[]).await;
        assert_eq!(r.status, 200);
        let list: Vec<DocumentInfo> = serde_json::from_slice(&r.body).expect("list json");
        assert_eq!(list, vec![doc.clone()]);

        let path = format!("{base}/{}", doc.id);
        let r = get(&s, &path, &dt, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(sha_hex(&r.body), doc.sha256);
        assert!(r.body == content, "downloaded bytes differ");
        assert_eq!(r.headers["content-type"], "application/pdf");
        assert_eq!(r.headers["accept-ranges"], "bytes");
        assert_eq!(r.headers["content-length"], content.len().to_string());
        assert_eq!(
            r.headers["content-disposition"],
            "attachment; filename=\"Blood results.pdf\"; filename*=UTF-8''Blood%20results.pdf"
        );
        assert_eq!(r.headers["x-content-type-options"], "nosniff");

        // Single ranges, across chunk boundaries.
        for (range, from, to) in [
            ("bytes=70000-140000", 70_000usize, 140_000usize),
            ("bytes=0-0", 0, 0),
            ("bytes=65530-65541", 65_530, 65_541),
            ("bytes=-10", content.len() - 10, content.len() - 1),
            ("bytes=199990-", 199_990, content.len() - 1),
        ] {
            let r = get(&s, &path, &pt, &[("Range", range.to_string())]).await;
            assert_eq!(r.status, 206, "{range}");
            assert!(r.body == content[from..=to], "{range}: wrong bytes");
            assert_eq!(
                r.headers["content-range"],
                format!("bytes {from}-{to}/{}", content.len()),
                "{range}"
            );
            assert_eq!(r.headers["content-length"], (to - from + 1).to_string());
        }
        let r = get(&s, &path, &pt, &[("Range", "bytes=200000-".to_string())]).await;
        assert_eq!(r.status, 416);
        assert_eq!(r.headers["content-range"], "bytes */200000");
        assert_eq!(r.code(), "range_not_satisfiable");

        // What the store holds is ciphertext: right size, no plaintext in it.
        let mut stored = Vec::new();
        let mut body = s.server.state.store.document_body(&doc.id);
        while let Some(piece) = body.next().await {
            stored.extend_from_slice(&piece.expect("stored bytes"));
        }
        drop(body);
        assert_eq!(stored.len(), content.len() + 4 * 16, "four sealed chunks");
        assert!(
            !stored.windows(MARKER.len()).any(|w| w == MARKER),
            "plaintext marker found in the stored bytes"
        );
        assert!(!stored.starts_with(b"%PDF"));
        let meta = s
            .server
            .state
            .store
            .document(c, &doc.id)
            .await
            .expect("meta")
            .expect("present");
        assert_eq!(meta.encryption.scheme, "AES-256-GCM-chunked-v2");
        assert_eq!(meta.encryption.master_key_id, "k1");
        assert!(!meta.encryption.wrapped_key.is_empty());
        // The name, uploader and checksum are sealed too: the stored record carries none of them.
        assert!(meta.encryption.sealed_meta.is_some(), "{backend:?}");
        assert_eq!(
            (
                meta.filename.as_str(),
                meta.uploader.as_str(),
                meta.sha256.as_str()
            ),
            ("", "", "")
        );
        let raw = format!("{meta:?}");
        for secret in ["Blood", &doc.sha256, &doc.uploader] {
            assert!(!raw.contains(secret), "{secret} stored in the clear: {raw}");
        }
        let gridfs_name = stored_gridfs_name(&s, &doc.id).await;
        match backend {
            Backend::Mongo => assert_eq!(gridfs_name, Some(doc.id.clone()), "named by its id"),
            Backend::Embedded => assert_eq!(gridfs_name, None),
        }

        // Every access is in the audit log.
        let mut actions = Vec::new();
        let mut audit = s.server.state.store.export_audit(0, i64::MAX);
        while let Some(e) = audit.next().await {
            let e = e.expect("audit event");
            if e.target.as_deref() == Some(doc.id.as_str()) {
                assert_eq!(e.consultation.as_deref(), Some(c));
                actions.push(e.action);
            }
        }
        drop(audit);
        assert!(
            actions.iter().any(|a| a == "document.upload"),
            "{actions:?}"
        );
        assert_eq!(
            actions.iter().filter(|a| *a == "document.download").count(),
            6, // one whole download, five ranges; the refused 416 is no access
            "{actions:?}"
        );
        drop_database(&s).await;
    }
}

#[tokio::test]
async fn limits_types_and_filenames() {
    for backend in backends() {
        let s = server(backend, |c| c.documents.max_bytes = 256 * 1024).await;
        let c = "c-docs-limits";
        let (_doctor, _patient) = call(&s, c).await;
        let pt = s.token(c, "Pat Test", Role::Patient).await;
        let base = format!("/api/consultations/{c}/documents");

        // Over the limit: refused while streaming, nothing kept.
        let r = upload(&s, c, &pt, "scan.pdf", &pdf(4 * 1024 * 1024)).await;
        assert_eq!(r.status, 413, "{backend:?}");
        assert_eq!(r.code(), "too_large");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap_or("")
                .contains("262144")
        );
        // Exactly at the limit is fine.
        let r = upload(&s, c, &pt, "max.pdf", &pdf(256 * 1024)).await;
        assert_eq!(r.status, 201);
        let at_limit: DocumentInfo = serde_json::from_slice(&r.body).expect("json");

        // An executable called report.pdf and sent as application/pdf.
        let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
        exe.extend_from_slice(&[0u8; 2000]);
        exe.extend_from_slice(b"This program cannot be run in DOS mode.");
        let r = upload(&s, c, &pt, "report.pdf", &exe).await;
        assert_eq!(r.status, 415);
        assert_eq!(r.code(), "unsupported_type");

        // Hostile names are cut down to something safe.
        let text = b"Temperature 37.2\nPulse 64\n".to_vec();
        for (raw, expected) in [
            ("../../etc/passwd", "passwd"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("notes\t\u{202E}txt.exe", "notestxt.exe"),
            ("...", "document"),
        ] {
            let r = upload(&s, c, &pt, raw, &text).await;
            assert_eq!(
                r.status,
                201,
                "{raw:?}: {}",
                String::from_utf8_lossy(&r.body)
            );
            let d: DocumentInfo = serde_json::from_slice(&r.body).expect("json");
            assert_eq!(d.filename, expected, "{raw:?}");
            assert_eq!(d.content_type, "text/plain; charset=utf-8");
        }
        let long = format!("{}.pdf", "a".repeat(400));
        let r = upload(&s, c, &pt, &long, &pdf(100)).await;
        let d: DocumentInfo = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(d.filename.len(), 150);
        assert!(d.filename.ends_with("a.pdf"));

        // Not a form, or a form without a file.
        let r = request(
            s.http_addr,
            "POST",
            &base,
            &[bearer(&pt), ("Content-Type", "application/pdf".into())],
            pdf(100),
        )
        .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.code(), "bad_request");

        let r = get(&s, &base, &pt, &[]).await;
        let list: Vec<DocumentInfo> = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(list.len(), 6, "{list:?}");
        assert!(list.iter().any(|d| d.id == at_limit.id));
        assert!(
            !list
                .iter()
                .any(|d| d.filename == "scan.pdf" || d.filename == "report.pdf")
        );
        assert_eq!(orphan_chunks(&s).await, 0);
        drop_database(&s).await;
    }
}

#[tokio::test]
async fn access_rules() {
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        let c = "c-docs-access";
        let (mut doctor, mut patient) = call(&s, c).await;
        let dt = s.token(c, "Dr Test", Role::Practitioner).await;
        let pt = s.token(c, "Pat Test", Role::Patient).await;
        let base = format!("/api/consultations/{c}/documents");

        let r = upload(&s, c, &pt, "a.pdf", &pdf(1000)).await;
        assert_eq!(r.status, 201);
        let doc: DocumentInfo = serde_json::from_slice(&r.body).expect("json");
        let path = format!("{base}/{}", doc.id);

        // No token, a malformed one, a forged one: 401.
        let r = request(s.http_addr, "GET", &base, &[], Vec::new()).await;
        assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        let r = get(&s, &base, "not-a-token", &[]).await;
        assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
        let forged = format!("{}x", &pt[..pt.len() - 1]);
        let r = get(&s, &path, &forged, &[]).await;
        assert_eq!(r.status, 401);

        // A valid token for another consultation: this one does not exist for them.
        let other = s
            .token("c-someone-else", "Dr Test", Role::Practitioner)
            .await;
        for p in [&base, &path] {
            let r = get(&s, p, &other, &[]).await;
            assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{p}");
        }
        let r = upload(&s, c, &other, "x.pdf", &pdf(100)).await;
        assert_eq!(r.status, 404);

        // A patient still in the waiting room, and one who never joined: 403.
        let _waiting = s.join(c, "Waiting Wanda", Role::Patient).await;
        let wt = s.token(c, "Waiting Wanda", Role::Patient).await;
        for p in [&base, &path] {
            let r = get(&s, p, &wt, &[]).await;
            assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{p}");
        }
        let r = upload(&s, c, &wt, "w.pdf", &pdf(100)).await;
        assert_eq!(r.status, 403);
        let nt = s.token(c, "Never Joined", Role::Guest).await;
        assert_eq!(get(&s, &base, &nt, &[]).await.status, 403);
        // An unknown document id.
        let r = get(&s, &format!("{base}/d0000"), &pt, &[]).await;
        assert_eq!((r.status, r.code().as_str()), (404, "document_not_found"));

        // A second admitted patient may read but not delete the first one's document.
        let mut second = s.join(c, "Second Sam", Role::Patient).await;
        admit(&mut doctor, &second.id).await;
        wait_admitted(&mut second).await;
        let st = s.token(c, "Second Sam", Role::Patient).await;
        assert_eq!(get(&s, &path, &st, &[]).await.status, 200);
        let r = request(s.http_addr, "DELETE", &path, &[bearer(&st)], Vec::new()).await;
        assert_eq!((r.status, r.code().as_str()), (403, "not_uploader"));

        // The practitioner may delete it; everyone in the call hears of it.
        let r = request(s.http_addr, "DELETE", &path, &[bearer(&dt)], Vec::new()).await;
        assert_eq!(r.status, 204);
        let id = doc.id.clone();
        patient
            .expect(
                T,
                |m| matches!(m, ServerMessage::DocumentDeleted { document } if document.id == id),
            )
            .await
            .expect("document_deleted");
        assert_eq!(get(&s, &path, &dt, &[]).await.status, 404);
        let r = request(s.http_addr, "DELETE", &path, &[bearer(&dt)], Vec::new()).await;
        assert_eq!(r.status, 404);

        // The uploader may delete their own.
        let r = upload(&s, c, &st, "mine.pdf", &pdf(1000)).await;
        let mine: DocumentInfo = serde_json::from_slice(&r.body).expect("json");
        let r = request(
            s.http_addr,
            "DELETE",
            &format!("{base}/{}", mine.id),
            &[bearer(&st)],
            Vec::new(),
        )
        .await;
        assert_eq!(r.status, 204);
        let r = get(&s, &base, &dt, &[]).await;
        assert_eq!(r.json(), serde_json::json!([]));

        assert_eq!(
            audit_count(&*s.server.state.store, "document.delete").await,
            2
        );
        drop_database(&s).await;
    }
}

#[tokio::test]
async fn cancelled_upload_leaves_nothing() {
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        let c = "c-docs-cancel";
        let (_doctor, _patient) = call(&s, c).await;
        let pt = s.token(c, "Pat Test", Role::Patient).await;

        // Announce 8 MiB, send 2 MiB, then vanish: a torn request on a raw socket, which is what
        // an HTTP client library exists to prevent.
        let total = 8 * 1024 * 1024;
        let mut head = multipart_head("big.pdf", "application/pdf");
        let body_len = head.len() + total + format!("\r\n--{BOUNDARY}--\r\n").len();
        let mut stream = tokio::net::TcpStream::connect(s.http_addr)
            .await
            .expect("connect");
        let req = format!(
            "POST /api/consultations/{c}/documents HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {pt}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
             Content-Length: {body_len}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write");
        head.extend_from_slice(&pdf(2 * 1024 * 1024));
        stream.write_all(&head).await.expect("write");
        // The store is really being written to...
        poll(T, "a chunk written while uploading", || async {
            (orphan_chunks(&s).await > 0).then_some(())
        })
        .await;
        // ...when the client goes away.
        drop(stream);
        poll(T, "the cancelled upload's chunks removed", || async {
            (orphan_chunks(&s).await == 0).then_some(())
        })
        .await;
        let r = get(&s, &format!("/api/consultations/{c}/documents"), &pt, &[]).await;
        assert_eq!(r.json(), serde_json::json!([]));
        drop_database(&s).await;
    }
}

/// The stored `master_key_id` of document `id`.
async fn stored_key_id(s: &TestServer, consultation: &str, id: &str) -> String {
    s.server
        .state
        .store
        .document(consultation, id)
        .await
        .expect("meta")
        .expect("present")
        .encryption
        .master_key_id
}

/// Rotation: a document sealed under k1 stays readable once k2 is current and k1 is kept as a
/// previous key; new documents go to k2; with k1 gone the old document is refused (500
/// `internal`, no panic) while the new one still opens.
#[tokio::test]
async fn master_key_rotation_keeps_old_documents_readable() {
    use teleconsult_documents::config::PreviousMasterKey;
    // 32 bytes of 0x02: a test key, not the development key.
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    for backend in backends() {
        let c = "c-docs-rotation";
        let old = pdf(150_000);
        let new = pdf(70_000);

        // Before: k1 (the dev key) is current.
        let first = server(backend, |_| {}).await;
        let (doctor, patient) = call(&first, c).await;
        let pt = first.token(c, "Pat Test", Role::Patient).await;
        let r = upload(&first, c, &pt, "old.pdf", &old).await;
        assert_eq!(r.status, 201, "{backend:?}: {}", r.text());
        let old_doc: DocumentInfo = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(stored_key_id(&first, c, &old_doc.id).await, "k1");
        let mut config = first.config.clone();
        drop((doctor, patient));
        first.shutdown().await;

        // Rotated: k2 current, k1 previous; same data.
        let k1 = config.documents.master_key.clone();
        config.documents.master_key = K2.into();
        config.documents.master_key_id = "k2".into();
        config.documents.previous_master_keys = vec![PreviousMasterKey {
            id: "k1".into(),
            key: k1,
        }];
        config
            .validate(true)
            .expect("rotated configuration is valid");
        let second = TestServer::start_with(config.clone()).await;
        let (doctor, patient) = call(&second, c).await;
        let pt = second.token(c, "Pat Test", Role::Patient).await;
        let dt = second.token(c, "Dr Test", Role::Practitioner).await;
        let base = format!("/api/consultations/{c}/documents");
        let r = get(&second, &format!("{base}/{}", old_doc.id), &dt, &[]).await;
        assert_eq!(r.status, 200, "{backend:?}: {}", r.text());
        assert!(
            r.body == old,
            "{backend:?}: old document differs after rotation"
        );
        let r = get(
            &second,
            &format!("{base}/{}", old_doc.id),
            &dt,
            &[("Range", "bytes=65530-140000".to_string())],
        )
        .await;
        assert_eq!(r.status, 206);
        assert!(
            r.body == old[65_530..=140_000],
            "{backend:?}: range differs"
        );
        let r = upload(&second, c, &pt, "new.pdf", &new).await;
        assert_eq!(r.status, 201, "{backend:?}: {}", r.text());
        let new_doc: DocumentInfo = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(stored_key_id(&second, c, &new_doc.id).await, "k2");
        assert_eq!(stored_key_id(&second, c, &old_doc.id).await, "k1");
        let r = get(&second, &format!("{base}/{}", new_doc.id), &dt, &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.body == new, "{backend:?}: new document differs");
        drop((doctor, patient));
        second.shutdown().await;

        // k1 dropped from the configuration: the old document is refused, the new one opens.
        config.documents.previous_master_keys.clear();
        let third = TestServer::start_with(config).await;
        let (doctor, patient) = call(&third, c).await;
        let dt = third.token(c, "Dr Test", Role::Practitioner).await;
        let r = get(&third, &format!("{base}/{}", old_doc.id), &dt, &[]).await;
        assert_eq!(r.status, 500, "{backend:?}: {}", r.text());
        assert_eq!(r.code(), "internal");
        assert!(!r.body.windows(MARKER.len()).any(|w| w == MARKER));
        let r = get(&third, &format!("{base}/{}", new_doc.id), &dt, &[]).await;
        assert_eq!(r.status, 200);
        assert!(
            r.body == new,
            "{backend:?}: new document differs without k1"
        );
        drop((doctor, patient));
        drop_database(&third).await;
        third.shutdown().await;
    }
}

/// A database writer who moves a document's row (metadata and bytes) to another consultation
/// gains nothing: its key, metadata and chunks are bound to the consultation it was uploaded in.
#[tokio::test]
async fn a_document_moved_to_another_consultation_does_not_open() {
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        let (from, to) = ("c-docs-moved-from", "c-docs-moved-to");
        let (doctor_a, patient_a) = call(&s, from).await;
        let (doctor_b, patient_b) = call(&s, to).await;
        let pt = s.token(from, "Pat Test", Role::Patient).await;
        let content = pdf(100_000);
        let r = upload(&s, from, &pt, "moved.pdf", &content).await;
        assert_eq!(r.status, 201, "{backend:?}: {}", r.text());
        let doc: DocumentInfo = serde_json::from_slice(&r.body).expect("json");

        // Move the row through the store itself, bytes and all.
        let store = s.server.state.store.clone();
        let mut meta = store
            .document(from, &doc.id)
            .await
            .expect("meta")
            .expect("present");
        let mut sealed = Vec::new();
        let mut body = store.document_body(&doc.id);
        while let Some(piece) = body.next().await {
            sealed.push(piece.expect("stored bytes"));
        }
        drop(body);
        store.delete_document(from, &doc.id).await.expect("delete");
        meta.consultation = to.to_string();
        let pieces = futures_util::stream::iter(sealed.into_iter().map(Ok)).boxed();
        store
            .put_document(&meta, pieces, Box::new(|_| {}))
            .await
            .expect("re-inserted under the other consultation");

        let dt = s.token(to, "Dr Test", Role::Practitioner).await;
        let base = format!("/api/consultations/{to}/documents");
        let r = get(&s, &base, &dt, &[]).await;
        assert_eq!(r.status, 200, "{backend:?}: {}", r.text());
        let listed: Vec<DocumentInfo> = serde_json::from_slice(&r.body).expect("json");
        assert!(listed.is_empty(), "{backend:?}: {listed:?}");
        let r = get(&s, &format!("{base}/{}", doc.id), &dt, &[]).await;
        assert_eq!(r.status, 500, "{backend:?}: {}", r.text());
        assert_eq!(r.code(), "internal");
        assert!(!r.body.windows(MARKER.len()).any(|w| w == MARKER));
        drop((doctor_a, patient_a, doctor_b, patient_b));
        drop_database(&s).await;
        s.shutdown().await;
    }
}
