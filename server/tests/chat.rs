//! Chat over the signalling WebSocket (protocol version 2), end to end on a real server: both
//! ways between practitioner and patient, never to the waiting room, notices to the waiting
//! room only, length and rate limits, version-1 clients not sent what they do not know, and the
//! record sealed in the store (read from the database itself, on both backends) yet readable
//! by the practitioner afterwards.

mod common;

use common::{T, TestServer, admit, poll, wait_admitted};
use futures_util::{SinkExt, StreamExt};
use teleconsult::config::{Config, ExposeSecret};
use teleconsult::protocol::{ClientMessage, ErrorCode, ServerMessage};
use teleconsult::token::Role;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Backend {
    Embedded,
    Mongo,
}

fn backends() -> Vec<Backend> {
    match common::mongo_uri() {
        Some(_) => vec![Backend::Embedded, Backend::Mongo],
        None => vec![Backend::Embedded],
    }
}

const SECRET_TEXT: &str = "my blood pressure was 180 over 110 this morning";
const REPLY_TEXT: &str = "thank you, <b>please</b> send the readings";
const NOTICE_TEXT: &str = "Running 10 minutes late";

fn is_chat(m: &ServerMessage, text: &str) -> bool {
    matches!(m, ServerMessage::Chat { message } if message.text == text)
}

/// Everything the database holds about chat, as text, read from the database itself (not
/// through the store): every column of the SQLite tables, or the MongoDB collections'
/// documents.
async fn raw_chat_storage(s: &TestServer) -> String {
    if s.config.storage.mongodb_uri.expose_secret().is_empty() {
        let path = s
            .config
            .storage
            .data_dir
            .join(teleconsult_store::sqlite::DB_FILE);
        let conn = rusqlite::Connection::open(path).expect("open the embedded database");
        let mut out = String::new();
        for sql in [
            "SELECT id, consultation, seq, at, kind, sender_role, sealed FROM chat_messages",
            "SELECT consultation, scheme, wrapped_key, master_key_id, created_at FROM chat_keys",
        ] {
            let mut stmt = conn.prepare(sql).expect("prepare");
            let n = stmt.column_count();
            let mut rows = stmt.query([]).expect("query");
            while let Some(row) = rows.next().expect("row") {
                for i in 0..n {
                    let v: rusqlite::types::Value = row.get(i).expect("column");
                    out.push_str(&format!("{v:?}|"));
                }
                out.push('\n');
            }
        }
        out
    } else {
        use mongodb::bson::{Document, doc};
        let client = mongodb::Client::with_uri_str(s.config.storage.mongodb_uri.expose_secret())
            .await
            .expect("connect");
        let db = client.database(&s.config.storage.database);
        let mut out = String::new();
        for coll in ["chat_messages", "chat_keys"] {
            let mut cursor = db
                .collection::<Document>(coll)
                .find(doc! {})
                .await
                .expect("find");
            while let Some(d) = cursor.next().await {
                out.push_str(&d.expect("document").to_string());
                out.push('\n');
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_the_call_notices_to_the_waiting_room_sealed_at_rest() {
    for backend in backends() {
        let mut config = Config::for_tests();
        if backend == Backend::Mongo {
            config.storage.mongodb_uri = common::mongo_uri().expect("checked").into();
            config.storage.database = format!("tc_chat_{:08x}", rand::random::<u32>());
        }
        let server = TestServer::start_with(config).await;
        run(&server, backend).await;
        server.shutdown().await;
    }
}

async fn run(server: &TestServer, backend: Backend) {
    let c = "c-chat";
    let mut doc = server.join(c, "dr-chat", Role::Practitioner).await;
    let mut pat = server.join(c, "Erika Mustermann", Role::Patient).await;
    admit(&mut doc, &pat.id).await;
    wait_admitted(&mut pat).await;
    let mut waiting = server.join(c, "Late Patient", Role::Patient).await;

    // A version-1 client in the call (the pre-accounts practitioner path).
    let (mut v1, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("connects");
    let token = server.token(c, "dr-v1", Role::Practitioner).await;
    v1.send(Message::Text(
        serde_json::json!({"type":"join","token":token,"protocol":1})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();

    // Both ways, echoed to the sender.
    doc.send(ClientMessage::Chat {
        text: format!("  {SECRET_TEXT}  "),
    });
    pat.expect(T, |m| is_chat(m, SECRET_TEXT))
        .await
        .expect("patient gets the chat");
    doc.expect(T, |m| is_chat(m, SECRET_TEXT))
        .await
        .expect("echo");
    pat.send(ClientMessage::Chat {
        text: REPLY_TEXT.into(),
    });
    let got = doc
        .expect(T, |m| is_chat(m, REPLY_TEXT))
        .await
        .expect("practitioner gets the reply");
    let ServerMessage::Chat { message } = got else {
        unreachable!()
    };
    assert_eq!(message.display_name, "Erika Mustermann");
    assert_eq!(message.from.as_str(), pat.id);

    // A notice reaches the waiting room (and the practitioner's echo), not the patient in the
    // call.
    doc.send(ClientMessage::Notice {
        text: NOTICE_TEXT.into(),
    });
    waiting
        .expect(
            T,
            |m| matches!(m, ServerMessage::Notice { message } if message.text == NOTICE_TEXT),
        )
        .await
        .expect("the waiting patient gets the notice");
    doc.expect(T, |m| matches!(m, ServerMessage::Notice { .. }))
        .await
        .expect("notice echo");
    // The waiting patient may not chat.
    waiting.send(ClientMessage::Chat {
        text: "let me in".into(),
    });
    waiting
        .expect(T, |m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::NotAdmitted,
                    ..
                }
            )
        })
        .await
        .expect("refused in the waiting room");
    // Nor may a patient send notices.
    pat.send(ClientMessage::Notice { text: "x".into() });
    pat.expect(T, |m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        )
    })
    .await
    .expect("patients send no notices");
    // Too long; then too many.
    pat.send(ClientMessage::Chat {
        text: "x".repeat(2001),
    });
    pat.expect(T, |m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::ChatTooLong,
                ..
            }
        )
    })
    .await
    .expect("too long");
    for i in 0..8 {
        pat.send(ClientMessage::Chat {
            text: format!("burst {i}"),
        });
    }
    pat.expect(T, |m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::ChatRateLimited,
                ..
            }
        )
    })
    .await
    .expect("rate-limited");

    // Everything the waiting patient was sent: the notice, never a chat message.
    {
        let seen = waiting.history.lock().unwrap();
        assert!(
            !seen.iter().any(|m| matches!(
                m,
                ServerMessage::Chat { .. } | ServerMessage::ChatHistory { .. }
            )),
            "the waiting room saw chat"
        );
    }

    // The version-1 client: everything before its pong (queued before the ping was read) is
    // version 1; it saw no chat, and was told it speaks version 1.
    v1.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let m = tokio::time::timeout(T, v1.next())
            .await
            .expect("v1 answered")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "pong" {
                break;
            }
            seen.push(v);
        }
    }
    assert_eq!(seen[0]["type"], "joined");
    assert_eq!(seen[0]["protocol"], 1);
    assert!(
        seen.iter().all(
            |v| !["chat", "notice", "chat_history"].contains(&v["type"].as_str().unwrap_or(""))
        ),
        "a version-1 client was sent version-2 messages: {seen:?}"
    );

    // A patient admitted now is sent the chat so far.
    // (The waiting list naming them was read past above: admit directly.)
    doc.send(ClientMessage::Admit {
        participant: waiting.id.clone().into(),
    });
    let history = waiting
        .expect(T, |m| matches!(m, ServerMessage::ChatHistory { messages } if messages.iter().any(|x| x.kind == teleconsult_consultation::ChatKind::Chat)))
        .await
        .expect("history on admission");
    let ServerMessage::ChatHistory { messages } = history else {
        unreachable!()
    };
    assert_eq!(messages[0].text, SECRET_TEXT);
    assert_eq!(messages[1].text, REPLY_TEXT);

    // At rest: every message and the notice are stored, sealed.
    let state = &server.server.state;
    let stored = poll(T, "chat stored", || async {
        let m = state.store.chat_messages(c).await.ok()?;
        // 2 chats + 1 notice + the 5 burst messages within the allowance of the patient,
        // who had spent one on the reply: 4 of the burst.
        (m.len() >= 7).then_some(m)
    })
    .await;
    assert!(stored.iter().any(|m| m.kind == "notice"));
    let raw = raw_chat_storage(server).await;
    assert!(
        raw.contains("AES-256-GCM-chat-v1"),
        "{backend:?}: the key record is there"
    );
    for secret in [SECRET_TEXT, "180 over 110", "please", NOTICE_TEXT, "Erika"] {
        assert!(
            !raw.contains(secret),
            "{backend:?}: {secret:?} stored in plaintext"
        );
    }
    // ... and the practitioner reads it back, in order.
    let records = state.chat.read(c).await.expect("opens");
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(&texts[..3], [SECRET_TEXT, REPLY_TEXT, NOTICE_TEXT]);
    assert_eq!(records[1].display_name, "Erika Mustermann");
    assert_eq!(records[2].kind, "notice");
}
