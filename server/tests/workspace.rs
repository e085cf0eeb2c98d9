//! The practitioner's workspace through HTTP and the WebSocket, on both storage backends
//! (embedded SQLite, and MongoDB: FerretDB in CI through `TELECONSULT_TEST_MONGODB_URI`):
//! creating a consultation with guests, listing it, cancelling it (every link then closes 4401
//! `cancelled`), revoking one link, another organisation's or practitioner's consultation being
//! 404, CSRF, the role rule, and the practitioner joining through their session cookie (only
//! with the server's own `Origin`, only their own consultation).

mod common;

use common::{Reply, T, TestServer, request};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use teleconsult::accounts::{NewAccount, StaffRole, now_millis};
use teleconsult::config::Config;
use teleconsult::consultation::SeatKey;
use teleconsult::protocol::ServerMessage;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PASSWORD: &str = "correct horse battery staple";

async fn server(mongo: bool) -> Option<TestServer> {
    let mut config = Config::for_tests();
    if mongo {
        config.storage.mongodb_uri = common::mongo_uri()?.into();
        config.storage.database = format!("ws_{:08x}", rand::random::<u32>());
    }
    config.validate(true).expect("valid test configuration");
    Some(TestServer::start_with(config).await)
}

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(false).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(true).await;
                }
            )*
        }
    };
}

both_backends!(
    create_with_guests_then_list_shows_links_and_labels,
    cancel_revokes_every_link_and_revoke_one_link,
    another_organisation_or_practitioner_gets_404,
    csrf_and_role_are_enforced,
    practitioner_joins_through_the_session_cookie_only_from_our_origin,
    documents_through_the_session_are_counted_in_the_workspace,
    recordings_are_listed_and_deleted_by_their_practitioner_only,
    recordings_play_back_with_range_for_practitioner_and_admin_only,
);

/// An organisation with one account per `(email, roles)`; returns the account ids.
async fn organisation(s: &TestServer, accounts: &[(&str, &[StaffRole])]) -> Vec<String> {
    let svc = &s.server.state.accounts;
    let org = svc
        .create_organisation("Clinic", now_millis())
        .await
        .expect("organisation");
    let mut ids = Vec::new();
    for (email, roles) in accounts {
        let a = svc
            .create_account(
                &org.id,
                NewAccount {
                    email: email.to_string(),
                    display_name: format!("Dr {email}"),
                    roles: roles.to_vec(),
                    password: PASSWORD.into(),
                },
                now_millis(),
            )
            .await
            .expect("account");
        ids.push(a.id);
    }
    ids
}

/// A signed-in browser: its cookie and CSRF token.
struct Browser {
    addr: SocketAddr,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn login(addr: SocketAddr, email: &str) -> Browser {
        let body = serde_json::json!({ "email": email, "password": PASSWORD });
        let r = request(
            addr,
            "POST",
            "/api/auth/login",
            &[("Content-Type", "application/json".to_string())],
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let cookie = r
            .header("set-cookie")
            .split(';')
            .next()
            .expect("cookie")
            .to_string();
        let csrf = r.json()["csrf_token"].as_str().expect("csrf").to_string();
        Browser { addr, cookie, csrf }
    }

    async fn get(&self, path: &str) -> Reply {
        request(
            self.addr,
            "GET",
            path,
            &[("Cookie", self.cookie.clone())],
            vec![],
        )
        .await
    }

    async fn post_with(&self, path: &str, body: serde_json::Value, csrf: Option<&str>) -> Reply {
        let mut headers = vec![
            ("Cookie", self.cookie.clone()),
            ("Content-Type", "application/json".to_string()),
        ];
        if let Some(c) = csrf {
            headers.push(("X-CSRF-Token", c.to_string()));
        }
        request(
            self.addr,
            "POST",
            path,
            &headers,
            serde_json::to_vec(&body).expect("json"),
        )
        .await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Reply {
        let csrf = self.csrf.clone();
        self.post_with(path, body, Some(&csrf)).await
    }

    async fn create(&self, patient: &str, guests: &[&str]) -> serde_json::Value {
        let guests: Vec<_> = guests
            .iter()
            .map(|g| serde_json::json!({ "label": g }))
            .collect();
        let r = self
            .post(
                "/api/workspace/consultations",
                serde_json::json!({ "patient_label": patient, "guests": guests }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open `/ws` with these handshake headers, send `join` (`token`, `consultation`): the first
/// message, or the close (code, reason).
async fn try_join(
    s: &TestServer,
    headers: &[(&'static str, String)],
    token: &str,
    consultation: Option<&str>,
) -> Result<ServerMessage, (u16, String)> {
    let mut req = s.ws_url().into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().expect("header"));
    }
    let (mut ws, _): (Ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connects");
    let mut join = serde_json::json!({"type": "join", "token": token, "protocol": 1});
    if let Some(c) = consultation {
        join["consultation"] = c.into();
    }
    ws.send(Message::Text(join.to_string().into()))
        .await
        .expect("sends");
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("answer") {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("protocol")),
            Some(Ok(Message::Close(f))) => {
                return Err(f
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new())));
            }
            Some(Ok(_)) => continue,
            other => return Err((1006, format!("{other:?}"))),
        }
    }
}

fn tokens(c: &serde_json::Value) -> Vec<String> {
    c["invitations"]
        .as_array()
        .expect("invitations")
        .iter()
        .filter_map(|i| i["token"].as_str().map(str::to_string))
        .collect()
}

async fn create_with_guests_then_list_shows_links_and_labels(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let ids = organisation(&s, &[("dr@a.example", &[StaffRole::Practitioner])]).await;
    let dr = Browser::login(s.http_addr, "dr@a.example").await;
    let c = dr.create("Ms Example", &["Interpreter", "Daughter"]).await;
    let id = c["id"].as_str().expect("id").to_string();
    assert_eq!(c["status"], "scheduled");
    let seats: Vec<(String, String)> = c["invitations"]
        .as_array()
        .expect("invitations")
        .iter()
        .map(|i| {
            (
                i["role"].as_str().unwrap().to_string(),
                i["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seats,
        [
            ("patient".to_string(), "Ms Example".to_string()),
            ("guest".to_string(), "Interpreter".to_string()),
            ("guest".to_string(), "Daughter".to_string()),
        ]
    );
    let links = tokens(&c);
    assert_eq!(links.len(), 3, "a link per seat");
    // The record is the practitioner's own, by account id (never a display name).
    let record = s
        .server
        .state
        .store
        .scheduled_consultation(&id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(record.practitioner, ids[0]);
    // Each link works: the patient's joins as the patient with the chosen label.
    match try_join(&s, &[], &links[0], None).await {
        Ok(ServerMessage::Joined { you, .. }) => {
            assert_eq!(you.display_name, "Ms Example");
            assert_eq!(you.role.as_str(), "patient");
        }
        other => panic!("the patient's link joins: {other:?}"),
    }
    match try_join(&s, &[], &links[1], None).await {
        Ok(ServerMessage::Joined { you, .. }) => assert_eq!(you.role.as_str(), "guest"),
        other => panic!("the interpreter's link joins: {other:?}"),
    }
    // Listed, newest first, with the same links.
    let second = dr.create("Mr Second", &[]).await;
    let list = dr.get("/api/workspace/consultations").await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.header("cache-control"), "no-store");
    let all = list.json()["consultations"].as_array().unwrap().clone();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["id"], second["id"]);
    assert_eq!(all[1]["id"], c["id"]);
    assert_eq!(tokens(&all[1]).len(), 3);
    assert_eq!(all[1]["documents"], 0);
    // Bad input: a blank label, too many guests, unknown fields.
    for body in [
        serde_json::json!({ "patient_label": "  " }),
        serde_json::json!({ "patient_label": "P", "guests": [{ "label": "" }] }),
        serde_json::json!({ "patient_label": "P", "guests": vec![serde_json::json!({"label": "g"}); 9] }),
        serde_json::json!({ "patient_label": "P", "name": "x" }),
        serde_json::json!({ "patient_label": "P", "scheduled_at": 12 }),
    ] {
        let r = dr.post("/api/workspace/consultations", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    s.shutdown().await;
}

async fn cancel_revokes_every_link_and_revoke_one_link(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    organisation(&s, &[("dr@a.example", &[StaffRole::Practitioner])]).await;
    let dr = Browser::login(s.http_addr, "dr@a.example").await;

    // Revoke one link: that one is refused, the other still works.
    let c = dr.create("Patient One", &["Interpreter"]).await;
    let id = c["id"].as_str().unwrap();
    let links = tokens(&c);
    let guest_jti = c["invitations"][1]["id"].as_str().unwrap();
    let r = dr
        .post(
            &format!("/api/workspace/consultations/{id}/invitations/{guest_jti}/revoke"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        try_join(&s, &[], &links[1], None).await,
        Err((4401, "revoked".to_string()))
    );
    assert!(matches!(
        try_join(&s, &[], &links[0], None).await,
        Ok(ServerMessage::Joined { .. })
    ));
    // A QR code of a live link; none for the revoked one.
    let patient_jti = c["invitations"][0]["id"].as_str().unwrap();
    let qr = dr
        .get(&format!(
            "/api/workspace/consultations/{id}/invitations/{patient_jti}/qr.svg"
        ))
        .await;
    assert_eq!(qr.status, 200, "{}", qr.text());
    assert_eq!(qr.header("content-type"), "image/svg+xml");
    assert!(qr.text().contains("<svg"), "an SVG");
    let qr = dr
        .get(&format!(
            "/api/workspace/consultations/{id}/invitations/{guest_jti}/qr.svg"
        ))
        .await;
    assert_eq!(qr.status, 404);
    let shown = dr
        .get(&format!("/api/workspace/consultations/{id}"))
        .await
        .json();
    assert_eq!(shown["invitations"][1]["revoked"], true);
    assert!(
        shown["invitations"][1]["token"].is_null(),
        "no link shown for a revoked seat"
    );

    // Cancel: every link closes 4401 `cancelled`, and none is shown any more.
    let c = dr.create("Patient Two", &["Family"]).await;
    let id = c["id"].as_str().unwrap();
    let links = tokens(&c);
    let r = dr
        .post(
            &format!("/api/workspace/consultations/{id}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked"], 2);
    for link in &links {
        assert_eq!(
            try_join(&s, &[], link, None).await,
            Err((4401, "cancelled".to_string()))
        );
    }
    let shown = dr
        .get(&format!("/api/workspace/consultations/{id}"))
        .await
        .json();
    assert_eq!(shown["status"], "cancelled");
    assert!(tokens(&shown).is_empty());
    s.shutdown().await;
}

async fn another_organisation_or_practitioner_gets_404(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    organisation(&s, &[("a@a.example", &[StaffRole::Practitioner])]).await;
    organisation(&s, &[("b@b.example", &[StaffRole::Practitioner])]).await;
    let a = Browser::login(s.http_addr, "a@a.example").await;
    let b = Browser::login(s.http_addr, "b@b.example").await;
    let c = a.create("Their patient", &["Guest"]).await;
    let id = c["id"].as_str().unwrap();
    let jti = c["invitations"][0]["id"].as_str().unwrap();
    let r = b.get(&format!("/api/workspace/consultations/{id}")).await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = b
        .post(
            &format!("/api/workspace/consultations/{id}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = b
        .post(
            &format!("/api/workspace/consultations/{id}/invitations/{jti}/revoke"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, 404);
    // The same answer as for an id that does not exist at all.
    let r = b
        .get(&format!(
            "/api/workspace/consultations/{id}/invitations/{jti}/qr.svg"
        ))
        .await;
    assert_eq!(r.status, 404);
    let r = b.get("/api/workspace/consultations/no-such-id").await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let listed = b.get("/api/workspace/consultations").await.json();
    assert_eq!(listed["consultations"], serde_json::json!([]));
    // Nothing was changed by B.
    let shown = a
        .get(&format!("/api/workspace/consultations/{id}"))
        .await
        .json();
    assert_eq!(shown["status"], "scheduled");
    assert_eq!(tokens(&shown).len(), 2);

    // A colleague in the same organisation does not see or manage it either.
    let s2 = &s;
    let org_a = s2
        .server
        .state
        .store
        .scheduled_consultation(id)
        .await
        .unwrap()
        .unwrap()
        .organisation;
    s2.server
        .state
        .accounts
        .create_account(
            &org_a,
            NewAccount {
                email: "colleague@a.example".into(),
                display_name: "Dr Colleague".into(),
                roles: vec![StaffRole::Practitioner],
                password: PASSWORD.into(),
            },
            now_millis(),
        )
        .await
        .expect("colleague");
    let colleague = Browser::login(s.http_addr, "colleague@a.example").await;
    let r = colleague
        .get(&format!("/api/workspace/consultations/{id}"))
        .await;
    assert_eq!(r.status, 404);
    s.shutdown().await;
}

async fn csrf_and_role_are_enforced(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    organisation(
        &s,
        &[
            ("dr@a.example", &[StaffRole::Practitioner]),
            ("billing@a.example", &[StaffRole::Billing]),
        ],
    )
    .await;
    let dr = Browser::login(s.http_addr, "dr@a.example").await;
    let body = serde_json::json!({ "patient_label": "P" });
    let r = dr
        .post_with("/api/workspace/consultations", body.clone(), None)
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "csrf_missing"));
    let r = dr
        .post_with("/api/workspace/consultations", body.clone(), Some("forged"))
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "csrf_invalid"));
    let listed = dr.get("/api/workspace/consultations").await.json();
    assert_eq!(
        listed["consultations"],
        serde_json::json!([]),
        "nothing created"
    );
    let c = dr.create("P", &[]).await;
    let id = c["id"].as_str().unwrap();
    let r = dr
        .post_with(
            &format!("/api/workspace/consultations/{id}/cancel"),
            serde_json::json!({}),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let shown = dr
        .get(&format!("/api/workspace/consultations/{id}"))
        .await
        .json();
    assert_eq!(shown["status"], "scheduled", "not cancelled without CSRF");

    // A billing account cannot create, list or open the page.
    let billing = Browser::login(s.http_addr, "billing@a.example").await;
    let r = billing
        .post("/api/workspace/consultations", body.clone())
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    assert_eq!(
        billing.get("/api/workspace/consultations").await.status,
        403
    );
    assert_eq!(billing.get("/workspace").await.status, 403);
    // Without a session: 401, and the page redirects to the sign-in page (fragment, no query).
    let r = request(
        s.http_addr,
        "GET",
        "/api/workspace/consultations",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 401);
    // (The client follows the 303 to `/login#next=/workspace`: the sign-in page.)
    let r = request(s.http_addr, "GET", "/workspace", &[], vec![]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("login.js"), "{}", r.text());
    s.shutdown().await;
}

async fn practitioner_joins_through_the_session_cookie_only_from_our_origin(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let ids = organisation(
        &s,
        &[
            ("dr@a.example", &[StaffRole::Practitioner]),
            ("other@a.example", &[StaffRole::Practitioner]),
        ],
    )
    .await;
    let dr = Browser::login(s.http_addr, "dr@a.example").await;
    let other = Browser::login(s.http_addr, "other@a.example").await;
    let c = dr.create("P", &[]).await;
    let id = c["id"].as_str().unwrap().to_string();
    let origin = format!("http://{}", s.http_addr);
    let ours = |b: &Browser| vec![("Cookie", b.cookie.clone()), ("Origin", origin.clone())];

    // No session: 4401 not_signed_in. A foreign Origin: the handshake itself is refused (403
    // `origin_not_allowed`), so the cookie never counts.
    assert_eq!(
        try_join(&s, &[], "", Some(&id)).await,
        Err((4401, "not_signed_in".to_string()))
    );
    let mut foreign = s.ws_url().into_client_request().expect("request");
    foreign
        .headers_mut()
        .insert("Cookie", dr.cookie.parse().expect("header"));
    foreign
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().expect("header"));
    match tokio_tungstenite::connect_async(foreign).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("a foreign origin is refused: {:?}", other.map(|_| ())),
    }
    let no_origin = vec![("Cookie", dr.cookie.clone())];
    assert_eq!(
        try_join(&s, &no_origin, "", Some(&id)).await,
        Err((4401, "not_signed_in".to_string()))
    );
    // Another practitioner, or an unknown consultation: 4403 not_found.
    assert_eq!(
        try_join(&s, &ours(&other), "", Some(&id)).await,
        Err((4403, "not_found".to_string()))
    );
    assert_eq!(
        try_join(&s, &ours(&dr), "", Some("no-such")).await,
        Err((4403, "not_found".to_string()))
    );

    // Their own: joined as the practitioner, the seat is their account id.
    match try_join(&s, &ours(&dr), "", Some(&id)).await {
        Ok(ServerMessage::Joined { you, .. }) => {
            assert_eq!(you.role.as_str(), "practitioner");
            assert_eq!(you.display_name, "Dr dr@a.example");
        }
        other => panic!("joins: {other:?}"),
    }
    // Billing, documents and audit take the seat's id: the account id, never a name.
    assert!(
        s.server
            .state
            .consultations
            .in_call_participant(&id, &SeatKey::Account(ids[0].clone()))
            .is_some(),
        "the practitioner's seat is their account id"
    );

    // Cancelled: refused like the links.
    let r = dr
        .post(
            &format!("/api/workspace/consultations/{id}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        try_join(&s, &ours(&dr), "", Some(&id)).await,
        Err((4401, "cancelled".to_string()))
    );
    s.shutdown().await;
}

const BOUNDARY: &str = "----teleconsult-workspace-boundary";

fn pdf_form() -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.pdf\"\r\n\
         Content-Type: application/pdf\r\n\r\n%PDF-1.4\n% a test document\n%%EOF\n\r\n--{BOUNDARY}--\r\n"
    )
    .into_bytes()
}

async fn documents_through_the_session_are_counted_in_the_workspace(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    organisation(
        &s,
        &[
            ("dr@a.example", &[StaffRole::Practitioner]),
            ("other@a.example", &[StaffRole::Practitioner]),
        ],
    )
    .await;
    let dr = Browser::login(s.http_addr, "dr@a.example").await;
    let other = Browser::login(s.http_addr, "other@a.example").await;
    let c = dr.create("P", &[]).await;
    let id = c["id"].as_str().unwrap().to_string();
    let path = format!("/api/consultations/{id}/documents");
    let form = (
        "Content-Type",
        format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    // Without the CSRF token: refused, nothing stored.
    let r = request(
        s.http_addr,
        "POST",
        &path,
        &[("Cookie", dr.cookie.clone()), form.clone()],
        pdf_form(),
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (403, "csrf_missing"));
    // With it: stored, listed, and counted in the workspace.
    let r = request(
        s.http_addr,
        "POST",
        &path,
        &[
            ("Cookie", dr.cookie.clone()),
            ("X-CSRF-Token", dr.csrf.clone()),
            form.clone(),
        ],
        pdf_form(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let listed = dr.get(&path).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1));
    let shown = dr
        .get(&format!("/api/workspace/consultations/{id}"))
        .await
        .json();
    assert_eq!(shown["documents"], 1);
    // A colleague's session, and no credential at all.
    let r = other.get(&path).await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = request(s.http_addr, "GET", &path, &[], vec![]).await;
    assert_eq!(r.status, 401);
    s.shutdown().await;
}

/// The recordings of a consultation: its practitioner lists and deletes them (audited); another
/// organisation's practitioner gets 404, and a recording named under another consultation is
/// 404 too.
async fn recordings_are_listed_and_deleted_by_their_practitioner_only(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    organisation(&s, &[("rec@a.example", &[StaffRole::Practitioner])]).await;
    organisation(&s, &[("other@b.example", &[StaffRole::Practitioner])]).await;
    let a = Browser::login(s.http_addr, "rec@a.example").await;
    let b = Browser::login(s.http_addr, "other@b.example").await;
    let mine = a.create("Recorded patient", &[]).await;
    let theirs = b.create("Their patient", &[]).await;
    let (id, other_id) = (
        mine["id"].as_str().unwrap().to_string(),
        theirs["id"].as_str().unwrap().to_string(),
    );
    let store = s.server.state.store.clone();
    for (rid, c) in [("rec_aa", &id), ("rec_bb", &other_id)] {
        let record = teleconsult_store::RecordingRecord {
            id: rid.into(),
            consultation: c.clone(),
            created_at: now_millis(),
            stored_at: now_millis(),
            bytes: 3,
            duration_ms: 1000,
            interrupted: false,
        };
        let body = futures_util::stream::iter(vec![Ok(bytes::Bytes::from_static(b"abc"))]).boxed();
        store.put_recording(&record, body).await.expect("stored");
    }
    let list = |id: &str| format!("/api/workspace/consultations/{id}/recordings");
    let delete =
        |id: &str, rid: &str| format!("/api/workspace/consultations/{id}/recordings/{rid}/delete");
    let r = a.get(&list(&id)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = r.json()["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["rec_aa"]);
    // Someone else's consultation, or another consultation's recording: 404, nothing deleted.
    assert_eq!(b.get(&list(&id)).await.status, 404);
    assert_eq!(
        b.post(&delete(&id, "rec_aa"), serde_json::json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        a.post(&delete(&id, "rec_bb"), serde_json::json!({}))
            .await
            .status,
        404
    );
    assert_eq!(a.get(&list(&other_id)).await.status, 404);
    assert!(store.recording("rec_aa").await.unwrap().is_some());
    assert!(store.recording("rec_bb").await.unwrap().is_some());
    // The practitioner deletes it: gone, audited under the account.
    let r = a.post(&delete(&id, "rec_aa"), serde_json::json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(store.recording("rec_aa").await.unwrap().is_none());
    assert_eq!(
        a.post(&delete(&id, "rec_aa"), serde_json::json!({}))
            .await
            .status,
        404
    );
    assert_eq!(common::audit_count(&*store, "recording.delete").await, 1);
    s.shutdown().await;
}

/// A real sealed journal of a consultation: 4 s of the load generator's VP8 clip from one
/// participant, stored as `rid` the way a finished recording is.
async fn stored_recording(s: &TestServer, consultation: &str, rid: &str) {
    use teleconsult_recording::journal::{Event, Header, JournalWriter, Kind, Record, TrackInfo};
    let keys = teleconsult::recording::master_keys(&s.config.documents).expect("keys");
    let key = teleconsult_recording::RecordingKey::generate();
    let header = Header {
        recording: rid.into(),
        consultation: consultation.into(),
        created_ms: now_millis(),
        key: keys[0].wrap(&key, rid),
    };
    let path = teleconsult::recording::journal_path(&s.config.storage.data_dir, rid).expect("id");
    std::fs::create_dir_all(path.parent().unwrap()).expect("dir");
    let mut w = JournalWriter::create(&path, &header, key).expect("journal");
    w.append(&Record::Track {
        track: 1,
        info: TrackInfo {
            participant: "jti-patient".into(),
            pseudonym: "Patient 1".into(),
            kind: Kind::Video,
            codec: "VP8".into(),
            clock_rate: 90_000,
            label: "camera".into(),
        },
    })
    .expect("track");
    // IVF: a 32-byte file header, then per frame 12 bytes (size, pts) and the frame.
    let ivf = std::fs::read(common::root().join("loadtest/assets/video-500k.ivf")).expect("clip");
    let (mut at, mut seq, mut frame) = (32usize, 1u16, 0u32);
    while at + 12 <= ivf.len() && frame < 120 {
        let size = u32::from_le_bytes(ivf[at..at + 4].try_into().unwrap()) as usize;
        let data = &ivf[at + 12..at + 12 + size];
        at += 12 + size;
        let chunks: Vec<&[u8]> = data.chunks(1100).collect();
        for (k, c) in chunks.iter().enumerate() {
            let mut p = vec![0x80, 96 | if k + 1 == chunks.len() { 0x80 } else { 0 }];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(frame * 3000).to_be_bytes());
            p.extend_from_slice(&0x1234u32.to_be_bytes());
            p.push(if k == 0 { 0x10 } else { 0x00 });
            p.extend_from_slice(c);
            w.append(&Record::Rtp {
                track: 1,
                arrival_us: u64::from(frame) * 33_333 + k as u64 * 50,
                packet: p,
            })
            .expect("rtp");
            seq = seq.wrapping_add(1);
        }
        frame += 1;
    }
    w.append(&Record::Event {
        arrival_us: u64::from(frame) * 33_333,
        event: Event::Stopped,
    })
    .expect("stop");
    w.finish().expect("closed");
    teleconsult::recording::store_journal(&*s.server.state.store, &path, &keys)
        .await
        .expect("stored");
}

/// Playback and download on the practitioner's page: the recording exported in memory, each
/// file whole (the same bytes as the CLI's export) or by a single byte range (206, 416 past the
/// end), audited once per playback; the organisation's admin may too; a colleague, another
/// organisation, the billing role, a patient's link and no session may not.
async fn recordings_play_back_with_range_for_practitioner_and_admin_only(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    organisation(
        &s,
        &[
            ("play@a.example", &[StaffRole::Practitioner]),
            ("admin@a.example", &[StaffRole::Admin]),
            ("colleague@a.example", &[StaffRole::Practitioner]),
            ("billing@a.example", &[StaffRole::Billing]),
        ],
    )
    .await;
    organisation(
        &s,
        &[(
            "else@b.example",
            &[StaffRole::Practitioner, StaffRole::Admin],
        )],
    )
    .await;
    let doctor = Browser::login(s.http_addr, "play@a.example").await;
    let created = doctor.create("Played patient", &[]).await;
    let id = created["id"].as_str().unwrap().to_string();
    let rid = format!("rec_{:016x}", rand::random::<u64>());
    stored_recording(&s, &id, &rid).await;

    let files_path = format!("/api/workspace/consultations/{id}/recordings/{rid}/files");
    let r = doctor.get(&files_path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let files = r.json()["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0]["pseudonym"], "Patient 1");
    assert_eq!(files[1]["name"], "manifest.json");
    let name = files[0]["name"].as_str().unwrap().to_string();
    assert!(name.ends_with(".webm"), "{name}");
    let file_path = format!("{files_path}/{name}");

    // Whole: the same bytes as `teleconsult recording export` writes.
    let keys = teleconsult::recording::master_keys(&s.config.documents).expect("keys");
    let out = common::temp_dir("playback-export");
    teleconsult::recording::export(
        &*s.server.state.store,
        &s.config.storage.data_dir,
        &keys,
        &rid,
        &out,
    )
    .await
    .expect("exports");
    let expected = std::fs::read(out.join(&name)).expect("exported file");
    let whole = doctor.get(&file_path).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), "video/webm");
    assert_eq!(whole.header("accept-ranges"), "bytes");
    // The same file as the CLI's export, but for libwebm's random TrackUID (8 bytes at most).
    let differing: Vec<usize> = (0..expected.len().min(whole.body.len()))
        .filter(|&i| whole.body[i] != expected[i])
        .collect();
    assert_eq!(whole.body.len(), expected.len());
    assert!(
        differing
            .last()
            .zip(differing.first())
            .is_none_or(|(l, f)| l - f < 8),
        "the played file is the exported one, but for the track UID: differs at {differing:?}"
    );
    let again = doctor.get(&file_path).await;
    assert!(
        again.body == whole.body,
        "played from the one export in memory"
    );
    let expected = whole.body.clone();
    assert_eq!(
        &whole.body[..4],
        &[0x1a, 0x45, 0xdf, 0xa3],
        "an EBML (WebM) file"
    );
    assert_eq!(files[0]["bytes"], expected.len());
    // A range, as a `<video>` seeking asks for; past the end: 416.
    let ranged = |range: String| {
        let (addr, cookie, path) = (s.http_addr, doctor.cookie.clone(), file_path.clone());
        async move {
            request(
                addr,
                "GET",
                &path,
                &[("Cookie", cookie), ("Range", range)],
                vec![],
            )
            .await
        }
    };
    let part = ranged("bytes=100-199".into()).await;
    assert_eq!(part.status, 206);
    assert!(part.body == expected[100..200], "the range's bytes");
    assert_eq!(
        part.header("content-range"),
        format!("bytes 100-199/{}", expected.len())
    );
    let tail = ranged(format!("bytes={}-", expected.len() - 10)).await;
    assert_eq!((tail.status, tail.body.len()), (206, 10));
    assert_eq!(
        ranged(format!("bytes={}-", expected.len())).await.status,
        416
    );
    // Not a file of this export.
    assert_eq!(
        doctor
            .get(&format!("{files_path}/..%2Fmanifest.json"))
            .await
            .status,
        404
    );
    assert_eq!(
        doctor.get(&format!("{files_path}/other.webm")).await.status,
        404
    );
    // Audited: one export, two downloads (the requests from byte 0), not the later ranges.
    let store = &*s.server.state.store;
    assert_eq!(common::audit_count(store, "recording.export").await, 1);
    assert_eq!(common::audit_count(store, "recording.download").await, 2);

    // The organisation's admin plays it back too; nobody else does.
    let admin = Browser::login(s.http_addr, "admin@a.example").await;
    assert!(
        admin.get(&file_path).await.body == expected,
        "the admin's copy"
    );
    assert_eq!(common::audit_count(store, "recording.download").await, 3);
    for email in ["colleague@a.example", "else@b.example"] {
        let other = Browser::login(s.http_addr, email).await;
        assert_eq!(other.get(&files_path).await.status, 404, "{email}");
        assert_eq!(other.get(&file_path).await.status, 404, "{email}");
    }
    let billing = Browser::login(s.http_addr, "billing@a.example").await;
    assert_eq!(billing.get(&file_path).await.status, 403);
    let patient_token = created["invitations"][0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = request(
        s.http_addr,
        "GET",
        &file_path,
        &[("Authorization", format!("Bearer {patient_token}"))],
        vec![],
    )
    .await;
    assert_eq!(r.status, 401, "a patient's link is no staff session");
    assert_eq!(
        request(s.http_addr, "GET", &file_path, &[], vec![])
            .await
            .status,
        401
    );
    // Deleted: gone from playback at once, not served from memory.
    let r = doctor
        .post(
            &format!("/api/workspace/consultations/{id}/recordings/{rid}/delete"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(doctor.get(&file_path).await.status, 404);
    s.shutdown().await;
}
