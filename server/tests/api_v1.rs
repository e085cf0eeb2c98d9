//! The REST API v1 (`/api/v1`) end to end through the real server, on both storage backends
//! (embedded SQLite, and MongoDB: FerretDB in CI through `TELECONSULT_TEST_MONGODB_URI`): API
//! keys created by an admin, a booking creating a consultation whose patient link joins over the
//! real signalling, cancel and revoke refusing links with 4401, revoked keys, scopes, isolation
//! between organisations (404 on every route), bad bodies naming the field, and paging.
//!
//! Every response these tests get goes through [`Api::call`], which checks it against the
//! OpenAPI document the server serves (the schema documented for its path, method and status).

mod common;

use common::{T, TestServer, admit, request, sign_token, wait_admitted};
use futures_util::{SinkExt, StreamExt};
use teleconsult::accounts::{NewAccount, StaffRole, now_millis};
use teleconsult::config::{Config, ExposeSecret};
use teleconsult::routes::api_v1;
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "correct horse battery staple";

async fn server(mongo: bool) -> Option<TestServer> {
    let mut config = Config::for_tests();
    if mongo {
        config.storage.mongodb_uri = common::mongo_uri()?.into();
        config.storage.database = format!("api_{:08x}", rand::random::<u32>());
    }
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
    created_links_join_and_cancel_refuses_them_4401_cancelled,
    one_revoked_invitation_refuses_its_link_only,
    admin_manages_keys_shown_once_revoked_key_is_401,
    a_key_without_the_scope_is_403,
    another_organisations_key_gets_404_on_every_route,
    bad_bodies_and_queries_name_the_problem,
    listing_is_by_range_and_paged,
);

/// One organisation: its admin's email and its practitioner's account id.
struct Org {
    admin_email: String,
    practitioner: String,
}

async fn organisation(s: &TestServer, tag: &str) -> Org {
    let svc = &s.server.state.accounts;
    let org = svc
        .create_organisation(&format!("Clinic {tag}"), now_millis())
        .await
        .expect("organisation");
    let mut ids = Vec::new();
    for (email, role) in [
        (format!("admin@{tag}.test"), StaffRole::Admin),
        (format!("doctor@{tag}.test"), StaffRole::Practitioner),
    ] {
        let a = svc
            .create_account(
                &org.id,
                NewAccount {
                    email,
                    display_name: format!("Staff of {tag}"),
                    roles: vec![role],
                    password: PASSWORD.into(),
                },
                now_millis(),
            )
            .await
            .expect("account");
        ids.push(a.id);
    }
    let _ = org;
    Org {
        admin_email: format!("admin@{tag}.test"),
        practitioner: ids[1].clone(),
    }
}

/// A signed-in staff member: cookie and CSRF token.
struct Staff {
    cookie: String,
    csrf: String,
}

async fn sign_in(s: &TestServer, email: &str) -> Staff {
    let r = request(
        s.http_addr,
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json".to_string())],
        serde_json::to_vec(&serde_json::json!({"email": email, "password": PASSWORD})).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    Staff {
        cookie,
        csrf: r.json()["csrf_token"].as_str().expect("csrf").to_string(),
    }
}

async fn staff_call(
    s: &TestServer,
    staff: &Staff,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> common::Reply {
    let mut headers = vec![
        ("Cookie", staff.cookie.clone()),
        ("X-CSRF-Token", staff.csrf.clone()),
    ];
    if body.is_some() {
        headers.push(("Content-Type", "application/json".to_string()));
    }
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    request(s.http_addr, method, path, &headers, body).await
}

/// An API key of `org` with `scopes`, created by its admin through the admin API.
async fn api_key(s: &TestServer, org: &Org, scopes: &[&str]) -> String {
    let admin = sign_in(s, &org.admin_email).await;
    let r = staff_call(
        s,
        &admin,
        "POST",
        "/api/admin/api-keys",
        Some(serde_json::json!({"name": "Booking system", "scopes": scopes})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key"]
        .as_str()
        .expect("the key, shown once")
        .to_string()
}

/// The API as a client sees it; every answer is checked against the served OpenAPI document.
struct Api {
    addr: std::net::SocketAddr,
    doc: serde_json::Value,
}

impl Api {
    async fn new(s: &TestServer) -> Api {
        let r = request(s.http_addr, "GET", "/api/v1/openapi.json", &[], vec![]).await;
        assert_eq!(r.status, 200);
        let doc = r.json();
        assert_eq!(doc["openapi"], "3.1.0");
        Api {
            addr: s.http_addr,
            doc,
        }
    }

    /// `method path` (route `template`) with `key` and a raw `body`; checks the answer matches
    /// the documented response for its status.
    async fn raw(
        &self,
        key: Option<&str>,
        method: &str,
        template: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> common::Reply {
        let mut headers = Vec::new();
        if let Some(k) = key {
            headers.push(common::bearer(k));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json".to_string()));
        }
        let r = request(self.addr, method, path, &headers, body.unwrap_or_default()).await;
        conforms(&self.doc, method, template, &r);
        r
    }

    async fn call(
        &self,
        key: &str,
        method: &str,
        template: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> common::Reply {
        self.raw(
            Some(key),
            method,
            template,
            path,
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
        .await
    }
}

/// Whether reply `r` to `method template` is a response the document describes: its status is
/// documented, and its body matches that status's schema (or is empty when none is given).
fn conforms(doc: &serde_json::Value, method: &str, template: &str, r: &common::Reply) {
    let op = &doc["paths"][template][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {template} is not documented");
    let resp = &op["responses"][r.status.to_string()];
    assert!(
        resp.is_object(),
        "{method} {template}: status {} is not documented ({})",
        r.status,
        r.text()
    );
    match resp["content"]["application/json"]["schema"].as_object() {
        Some(schema) => {
            let mut root = serde_json::Value::Object(schema.clone());
            root["components"] = doc["components"].clone();
            let validator = jsonschema::validator_for(&root).expect("a valid schema");
            let body = r.json();
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {template} {}: the body does not match its schema: {errors:?}\n{body}",
                r.status
            );
        }
        None if resp["content"].is_object() => {}
        None => assert!(
            r.body.is_empty(),
            "{method} {template} {}: undocumented body {}",
            r.status,
            r.text()
        ),
    }
}

/// In five minutes, RFC 3339 (its links are valid at once: from 15 minutes before).
fn soon() -> String {
    at(now_millis() + 5 * 60_000)
}

fn at(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn token_of(link: &str) -> String {
    link.split_once("#token=")
        .expect("a fragment token")
        .1
        .to_string()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `join` with `token` on a fresh socket: the first message's type, or the close (code, reason).
async fn try_join(s: &TestServer, token: &str) -> Result<String, (u16, String)> {
    let (mut ws, _): (Ws, _) = tokio_tungstenite::connect_async(s.ws_url())
        .await
        .expect("connects");
    let join = serde_json::json!({"type": "join", "token": token, "protocol": 1});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .expect("sends");
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("answer") {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                return Ok(v["type"].as_str().unwrap_or_default().to_string());
            }
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

const C: &str = "/api/v1/consultations";
const ONE: &str = "/api/v1/consultations/{id}";
const INVS: &str = "/api/v1/consultations/{id}/invitations";
const INV: &str = "/api/v1/consultations/{id}/invitations/{jti}";

async fn create(api: &Api, key: &str, org: &Org, guests: &[&str]) -> serde_json::Value {
    let guests: Vec<_> = guests
        .iter()
        .map(|g| serde_json::json!({"label": g}))
        .collect();
    let r = api
        .call(
            key,
            "POST",
            C,
            C,
            Some(serde_json::json!({
                "practitioner": org.practitioner,
                "scheduled_at": soon(),
                "patient": {"label": "Booking 4711"},
                "guests": guests,
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

async fn created_links_join_and_cancel_refuses_them_4401_cancelled(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let org = organisation(&s, "north").await;
    let key = api_key(&s, &org, &["consultations:write", "consultations:read"]).await;
    let api = Api::new(&s).await;
    // The booking system finds whom it can book for: the practitioner, not the admin.
    let r = api
        .call(
            &key,
            "GET",
            "/api/v1/practitioners",
            "/api/v1/practitioners",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<_> = r.json()["practitioners"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, vec![org.practitioner.as_str()]);
    let c = create(&api, &key, &org, &["Interpreter"]).await;
    let id = c["id"].as_str().expect("id").to_string();
    assert_eq!(c["status"], "scheduled");
    assert_eq!(c["policy"], "standard", "the default policy");
    assert_eq!(c["practitioner"], org.practitioner.as_str());
    let invs = c["invitations"].as_array().expect("invitations");
    assert_eq!(invs.len(), 2);
    assert_eq!(
        (invs[0]["role"].as_str(), invs[1]["role"].as_str()),
        (Some("patient"), Some("guest"))
    );
    assert_eq!(invs[0]["label"], "Booking 4711");
    let patient_link = invs[0]["link"].as_str().expect("patient link");
    let guest_link = invs[1]["link"].as_str().expect("guest link");
    assert!(
        patient_link.starts_with(&s.config.base_url()),
        "{patient_link}"
    );

    // The patient joins with the link over the real signalling; the practitioner admits.
    let mut patient = Participant::join(&s.ws_url(), &token_of(patient_link))
        .await
        .expect("the patient's link joins");
    let doctor_token = sign_token(
        s.config.auth.signing_secret.expose_secret().as_bytes(),
        &id,
        &org.practitioner,
        Role::Practitioner,
    );
    let mut doctor = Participant::join(&s.ws_url(), &doctor_token)
        .await
        .expect("practitioner joins");
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;

    // A read shows the seats without links (links are shown once, to their creator).
    let r = api.call(&key, "GET", ONE, &format!("{C}/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let read = r.json();
    assert_eq!(read["invitations"].as_array().map(Vec::len), Some(2));
    assert!(read["invitations"][0].get("link").is_none(), "{read}");

    // Cancel: the call ends, and every link is refused with 4401 `cancelled`.
    let r = api
        .call(&key, "DELETE", ONE, &format!("{C}/{id}"), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    patient
        .expect(T, |m| {
            matches!(m, teleconsult::protocol::ServerMessage::ConsultationEnded)
        })
        .await
        .expect("the patient is told it ended");
    for link in [patient_link, guest_link] {
        assert_eq!(
            try_join(&s, &token_of(link)).await,
            Err((4401, "cancelled".to_string()))
        );
    }
    let r = api.call(&key, "GET", ONE, &format!("{C}/{id}"), None).await;
    assert_eq!(r.json()["status"], "cancelled");
    assert!(r.json()["invitations"][0]["revoked_at"].is_string());
    // Cancelling again is not an error; no new link for a cancelled consultation.
    let r = api
        .call(&key, "DELETE", ONE, &format!("{C}/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = api
        .call(
            &key,
            "POST",
            INVS,
            &format!("{C}/{id}/invitations"),
            Some(serde_json::json!({"role": "guest", "label": "Late"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "not_scheduled".to_string()));
    // Audited under the key (the audit writer is asynchronous).
    let store = &*s.server.state.store;
    for (action, n) in [
        ("consultation.create", 1),
        ("consultation.cancel", 2),
        ("api_key.create", 1),
    ] {
        common::poll(T, action, || async move {
            (common::audit_count(store, action).await == n).then_some(())
        })
        .await;
    }
    drop(doctor);
    s.shutdown().await;
}

async fn one_revoked_invitation_refuses_its_link_only(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let org = organisation(&s, "east").await;
    let key = api_key(&s, &org, &["consultations:write"]).await;
    let api = Api::new(&s).await;
    let c = create(&api, &key, &org, &[]).await;
    let id = c["id"].as_str().unwrap();
    let r = api
        .call(
            &key,
            "POST",
            INVS,
            &format!("{C}/{id}/invitations"),
            Some(serde_json::json!({"role": "guest", "label": "Daughter"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let guest = r.json();
    assert_eq!(guest["role"], "guest");
    let jti = guest["jti"].as_str().unwrap();
    // The guest is already there (waiting) when the link is revoked: they are removed at once.
    let (mut held, _): (Ws, _) = tokio_tungstenite::connect_async(s.ws_url())
        .await
        .expect("connects");
    let join = serde_json::json!({"type": "join", "protocol": 1,
        "token": token_of(guest["link"].as_str().unwrap())});
    held.send(Message::Text(join.to_string().into()))
        .await
        .expect("sends");
    let first = tokio::time::timeout(T, held.next()).await.expect("joined");
    assert!(
        matches!(&first, Some(Ok(Message::Text(t))) if t.contains("\"joined\"")),
        "{first:?}"
    );
    let r = api
        .call(
            &key,
            "DELETE",
            INV,
            &format!("{C}/{id}/invitations/{jti}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let (mut told_removed, mut closed) = (false, None);
    while closed.is_none() {
        match tokio::time::timeout(T, held.next())
            .await
            .expect("the revoked guest is disconnected")
        {
            Some(Ok(Message::Text(t))) => told_removed |= t.contains("\"removed\""),
            Some(Ok(Message::Close(f))) => closed = Some(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(told_removed, "the guest is told why");
    assert_eq!(closed, Some(Some(4403)));
    assert_eq!(
        try_join(&s, &token_of(guest["link"].as_str().unwrap())).await,
        Err((4401, "revoked".to_string()))
    );
    // The patient's link still works (the patient waits for the practitioner).
    assert!(
        try_join(&s, &token_of(c["invitations"][0]["link"].as_str().unwrap()))
            .await
            .is_ok()
    );
    // An invitation of another consultation is not found through this one.
    let other = create(&api, &key, &org, &[]).await;
    let other_jti = other["invitations"][0]["jti"].as_str().unwrap();
    let r = api
        .call(
            &key,
            "DELETE",
            INV,
            &format!("{C}/{id}/invitations/{other_jti}"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found".to_string()));
    s.shutdown().await;
}

async fn admin_manages_keys_shown_once_revoked_key_is_401(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let org = organisation(&s, "west").await;
    let other = organisation(&s, "south").await;
    let api = Api::new(&s).await;
    let admin = sign_in(&s, &org.admin_email).await;
    let r = staff_call(
        &s,
        &admin,
        "POST",
        "/api/admin/api-keys",
        Some(serde_json::json!({"name": "Practice software", "scopes": ["consultations:read"]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("tc_{key_id}_")), "{key}");
    // Stored hashed: the record holds no part of the secret.
    let stored = s
        .server
        .state
        .store
        .api_key(&key_id)
        .await
        .unwrap()
        .expect("stored");
    assert!(!key.contains(&stored.secret_hash) && !stored.secret_hash.contains(&key[28..]));
    assert_eq!(stored.last_used_at, None);

    // Listed without the key itself.
    let r = staff_call(&s, &admin, "GET", "/api/admin/api-keys", None).await;
    assert_eq!(r.status, 200);
    assert!(
        !r.text().contains(&key[28..]),
        "the secret is shown once only"
    );
    assert_eq!(r.json()["api_keys"][0]["id"], key_id.as_str());

    // Used: the last use is kept.
    let r = api
        .call(
            &key,
            "GET",
            C,
            &format!("{C}?from={}&to={}", at(0), soon()),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let used = s
        .server
        .state
        .store
        .api_key(&key_id)
        .await
        .unwrap()
        .unwrap();
    assert!(used.last_used_at.is_some());

    // Another organisation's admin cannot see or revoke it; a practitioner cannot manage keys.
    let other_admin = sign_in(&s, &other.admin_email).await;
    let r = staff_call(
        &s,
        &other_admin,
        "POST",
        &format!("/api/admin/api-keys/{key_id}/revoke"),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found".to_string()));
    let r = staff_call(&s, &other_admin, "GET", "/api/admin/api-keys", None).await;
    assert_eq!(r.json()["api_keys"], serde_json::json!([]));
    let doctor = sign_in(&s, "doctor@west.test").await;
    let r = staff_call(&s, &doctor, "GET", "/api/admin/api-keys", None).await;
    assert_eq!(r.status, 403);
    // Bad key requests name the field.
    let r = staff_call(
        &s,
        &admin,
        "POST",
        "/api/admin/api-keys",
        Some(serde_json::json!({"name": "x", "scopes": ["everything"]})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap().contains("scopes"),
        "{}",
        r.text()
    );

    // Revoked: 401 from then on.
    let r = staff_call(
        &s,
        &admin,
        "POST",
        &format!("/api/admin/api-keys/{key_id}/revoke"),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = api
        .call(
            &key,
            "GET",
            C,
            &format!("{C}?from={}&to={}", at(0), soon()),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid_api_key".to_string()));
    // No key, a malformed key, and a right id with a wrong secret: 401 too.
    let r = api
        .raw(
            None,
            "GET",
            C,
            &format!("{C}?from={}&to={}", at(0), soon()),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized".to_string()));
    let forged = format!("tc_{key_id}_{}", "0".repeat(64));
    for bad in ["tc_nonsense", forged.as_str()] {
        let r = api
            .call(bad, "GET", ONE, &format!("{C}/anything"), None)
            .await;
        assert_eq!((r.status, r.code()), (401, "invalid_api_key".to_string()));
    }
    s.shutdown().await;
}

async fn a_key_without_the_scope_is_403(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let org = organisation(&s, "ro").await;
    let writer = api_key(&s, &org, &["consultations:write"]).await;
    let reader = api_key(&s, &org, &["consultations:read"]).await;
    let api = Api::new(&s).await;
    let c = create(&api, &writer, &org, &[]).await;
    let id = c["id"].as_str().unwrap();
    let jti = c["invitations"][0]["jti"].as_str().unwrap();
    let forbidden = (403, "insufficient_scope".to_string());
    let body = serde_json::json!({"practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": "P"}});
    let r = api.call(&reader, "POST", C, C, Some(body)).await;
    assert_eq!((r.status, r.code()), forbidden);
    let r = api
        .call(&reader, "DELETE", ONE, &format!("{C}/{id}"), None)
        .await;
    assert_eq!((r.status, r.code()), forbidden);
    let r = api
        .call(
            &reader,
            "POST",
            INVS,
            &format!("{C}/{id}/invitations"),
            Some(serde_json::json!({"role": "guest", "label": "G"})),
        )
        .await;
    assert_eq!((r.status, r.code()), forbidden);
    let r = api
        .call(
            &reader,
            "DELETE",
            INV,
            &format!("{C}/{id}/invitations/{jti}"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), forbidden);
    let r = api
        .call(&writer, "GET", ONE, &format!("{C}/{id}"), None)
        .await;
    assert_eq!((r.status, r.code()), forbidden);
    let r = api
        .call(
            &writer,
            "GET",
            C,
            &format!("{C}?from={}&to={}", at(0), soon()),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), forbidden);
    let r = api
        .call(
            &writer,
            "GET",
            "/api/v1/practitioners",
            "/api/v1/practitioners",
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), forbidden);
    // Nothing was changed by the refused calls.
    let r = api
        .call(&reader, "GET", ONE, &format!("{C}/{id}"), None)
        .await;
    assert_eq!(r.json()["status"], "scheduled");
    assert!(r.json()["invitations"][0].get("revoked_at").is_none());
    s.shutdown().await;
}

async fn another_organisations_key_gets_404_on_every_route(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let a = organisation(&s, "alpha").await;
    let b = organisation(&s, "beta").await;
    let key_a = api_key(&s, &a, &["consultations:write", "consultations:read"]).await;
    let key_b = api_key(&s, &b, &["consultations:write", "consultations:read"]).await;
    let api = Api::new(&s).await;
    let c = create(&api, &key_a, &a, &[]).await;
    let id = c["id"].as_str().unwrap();
    let jti = c["invitations"][0]["jti"].as_str().unwrap();
    let not_found = (404, "not_found".to_string());
    let r = api
        .call(&key_b, "GET", ONE, &format!("{C}/{id}"), None)
        .await;
    assert_eq!((r.status, r.code()), not_found);
    let r = api
        .call(&key_b, "DELETE", ONE, &format!("{C}/{id}"), None)
        .await;
    assert_eq!((r.status, r.code()), not_found);
    let r = api
        .call(
            &key_b,
            "POST",
            INVS,
            &format!("{C}/{id}/invitations"),
            Some(serde_json::json!({"role": "guest", "label": "Intruder"})),
        )
        .await;
    assert_eq!((r.status, r.code()), not_found);
    let r = api
        .call(
            &key_b,
            "DELETE",
            INV,
            &format!("{C}/{id}/invitations/{jti}"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), not_found);
    let r = api
        .call(
            &key_b,
            "GET",
            "/api/v1/practitioners",
            "/api/v1/practitioners",
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(&a.practitioner), "{}", r.text());
    // B's listing does not contain A's consultation; B cannot book for A's practitioner.
    let r = api
        .call(
            &key_b,
            "GET",
            C,
            &format!("{C}?from={}&to={}", at(0), at(now_millis() + 86_400_000)),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["consultations"], serde_json::json!([]));
    let r = api
        .call(
            &key_b,
            "POST",
            C,
            C,
            Some(serde_json::json!({
        "practitioner": a.practitioner, "scheduled_at": soon(), "patient": {"label": "P"}})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("practitioner:"),
        "{}",
        r.text()
    );
    // A's consultation is untouched.
    let r = api
        .call(&key_a, "GET", ONE, &format!("{C}/{id}"), None)
        .await;
    assert_eq!(r.json()["status"], "scheduled");
    assert_eq!(r.json()["invitations"].as_array().map(Vec::len), Some(1));
    assert!(r.json()["invitations"][0].get("revoked_at").is_none());
    s.shutdown().await;
}

async fn bad_bodies_and_queries_name_the_problem(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let org = organisation(&s, "bad").await;
    let key = api_key(&s, &org, &["consultations:write", "consultations:read"]).await;
    let api = Api::new(&s).await;
    let names = |r: &common::Reply, code: &str, field: &str| {
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.code(), code, "{}", r.text());
        let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(field), "{msg:?} does not name {field}");
    };
    let r = api
        .raw(
            Some(&key),
            "POST",
            C,
            C,
            Some(b"{\"practitioner\": ".to_vec()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "malformed_json".to_string()));
    let r = api
        .call(
            &key,
            "POST",
            C,
            C,
            Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon()})),
        )
        .await;
    names(&r, "invalid_field", "patient");
    let r = api.call(&key, "POST", C, C, Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": "P"}, "diagnosis": "x"}))).await;
    names(&r, "invalid_field", "diagnosis");
    let r = api.call(&key, "POST", C, C, Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": "P", "dob": "1970"}}))).await;
    names(&r, "invalid_field", "dob");
    let r = api.call(&key, "POST", C, C, Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": "next tuesday", "patient": {"label": "P"}}))).await;
    names(&r, "invalid_field", "scheduled_at");
    let r = api
        .call(
            &key,
            "POST",
            C,
            C,
            Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": "  "}})),
        )
        .await;
    names(&r, "invalid_field", "patient.label");
    let r = api
        .call(
            &key,
            "POST",
            C,
            C,
            Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": "P"},
        "guests": [{"label": "ok"}, {"label": "x".repeat(201)}]})),
        )
        .await;
    names(&r, "invalid_field", "guests[1].label");
    // A policy: recordable and end_to_end are kept; anything else is not a policy.
    let r = api
        .call(
            &key,
            "POST",
            C,
            C,
            Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": "P"},
        "policy": "end_to_end"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["policy"], "end_to_end");
    let r = api
        .call(
            &key,
            "POST",
            C,
            C,
            Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": "P"},
        "policy": "secret"})),
        )
        .await;
    names(&r, "invalid_field", "policy");
    let r = api
        .call(
            &key,
            "POST",
            C,
            C,
            Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": "P"},
        "policy": "recordable"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["policy"], "recordable");
    let r = api
        .call(
            &key,
            "POST",
            C,
            C,
            Some(serde_json::json!({
        "practitioner": org.practitioner, "scheduled_at": soon(), "patient": {"label": 7}})),
        )
        .await;
    names(&r, "invalid_field", "label");
    // Oversized: refused before it is parsed.
    let big = serde_json::json!({"practitioner": org.practitioner, "scheduled_at": soon(),
        "patient": {"label": "x".repeat(api_v1::MAX_BODY_BYTES)}});
    let r = api.call(&key, "POST", C, C, Some(big)).await;
    assert_eq!((r.status, r.code()), (413, "too_large".to_string()));
    // Not JSON at all.
    let r = request(
        s.http_addr,
        "POST",
        C,
        &[common::bearer(&key)],
        b"label=P".to_vec(),
    )
    .await;
    conforms(&api.doc, "POST", C, &r);
    assert_eq!(
        (r.status, r.code()),
        (415, "unsupported_media_type".to_string())
    );
    // Invitation bodies.
    let c = create(&api, &key, &org, &[]).await;
    let invs = format!("{C}/{}/invitations", c["id"].as_str().unwrap());
    let r = api
        .call(
            &key,
            "POST",
            INVS,
            &invs,
            Some(serde_json::json!({"role": "practitioner", "label": "X"})),
        )
        .await;
    names(&r, "invalid_field", "practitioner");
    let r = api
        .call(
            &key,
            "POST",
            INVS,
            &invs,
            Some(serde_json::json!({"label": "X"})),
        )
        .await;
    names(&r, "invalid_field", "role");
    // Queries.
    let r = api
        .call(&key, "GET", C, &format!("{C}?to={}", soon()), None)
        .await;
    names(&r, "invalid_field", "from");
    let r = api
        .call(
            &key,
            "GET",
            C,
            &format!("{C}?from={}&to={}&limit=1000", at(0), soon()),
            None,
        )
        .await;
    names(&r, "invalid_field", "limit");
    let r = api
        .call(
            &key,
            "GET",
            C,
            &format!("{C}?from={}&to={}&cursor=zz", at(0), soon()),
            None,
        )
        .await;
    names(&r, "invalid_field", "cursor");
    let r = api
        .call(
            &key,
            "GET",
            C,
            &format!("{C}?from={}&to={}&page=2", at(0), soon()),
            None,
        )
        .await;
    names(&r, "invalid_field", "page");
    // An unknown consultation is 404 (and an id of any shape is just unknown).
    let r = api
        .call(&key, "GET", ONE, &format!("{C}/..%2F..%2Fetc"), None)
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found".to_string()));
    s.shutdown().await;
}

async fn listing_is_by_range_and_paged(mongo: bool) {
    let Some(s) = server(mongo).await else { return };
    let org = organisation(&s, "list").await;
    let key = api_key(&s, &org, &["consultations:write", "consultations:read"]).await;
    let api = Api::new(&s).await;
    let base = now_millis() + 3_600_000;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = api
            .call(
                &key,
                "POST",
                C,
                C,
                Some(serde_json::json!({
            "practitioner": org.practitioner,
            "scheduled_at": at(base + i * 60_000),
            "patient": {"label": format!("Slot {i}")}})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    // [base + 1 min, base + 4 min): slots 1, 2, 3, two per page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let mut path = format!(
            "{C}?from={}&to={}&limit=2",
            at(base + 60_000),
            at(base + 240_000)
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = api.call(&key, "GET", C, &path, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        for c in page["consultations"].as_array().unwrap() {
            assert!(
                c["invitations"][0].get("link").is_none(),
                "no links in a listing"
            );
            seen.push(c["id"].as_str().unwrap().to_string());
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids[1..4].to_vec());
    s.shutdown().await;
}

#[test]
fn every_api_route_is_documented_and_every_documented_path_is_routed() {
    let doc = serde_json::to_value(<api_v1::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    let routes = api_v1::route_list();
    for (path, method) in &routes {
        assert!(
            doc["paths"][*path][method.as_str().to_ascii_lowercase()].is_object(),
            "{method} {path} is routed but not in the OpenAPI document"
        );
    }
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routes
                    .iter()
                    .any(|(p, m)| p == path && m.as_str().eq_ignore_ascii_case(method)),
                "{method} {path} is documented but not routed"
            );
        }
    }
    assert!(routes.iter().all(|(p, _)| p.starts_with("/api/v1/")));
}

/// Every route of the table answers on the live server (401 without a key, documented), so the
/// table the document is checked against is the router's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routed_path_answers_unauthenticated_as_documented() {
    let s = TestServer::start().await;
    let api = Api::new(&s).await;
    for (template, method) in api_v1::route_list() {
        let path = template.replace("{id}", "c1").replace("{jti}", "j1");
        let r = api.raw(None, method.as_str(), template, &path, None).await;
        if template.ends_with("openapi.json") {
            assert_eq!(r.status, 200);
        } else {
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthorized".to_string()),
                "{method} {template}"
            );
        }
    }
    s.shutdown().await;
}

/// The conformance check itself refuses what the document does not describe.
#[test]
fn the_conformance_check_refuses_undocumented_answers() {
    let doc = serde_json::to_value(<api_v1::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    let reply = |status: u16, body: &str| common::Reply {
        status,
        headers: Default::default(),
        body: body.as_bytes().to_vec(),
    };
    let good = r#"{"id":"c1","practitioner":"acc_1","status":"scheduled","created_at":"2026-12-01T14:30:00.000Z","invitations":[],"policy":"standard"}"#;
    conforms(&doc, "GET", ONE, &reply(200, good));
    for (status, body) in [
        (200, r#"{"id":5}"#),
        (200, &good.replace("scheduled\"", "postponed\"")),
        (418, r#"{"code":"x","message":"y"}"#),
        (404, r#"{"code":"not_found"}"#),
    ] {
        let r = reply(status, body);
        let refused = std::panic::catch_unwind(|| conforms(&doc, "GET", ONE, &r));
        assert!(refused.is_err(), "{status} {body} was accepted");
    }
}

/// A key over its rate is refused with 429 `rate_limited` and `Retry-After` (documented), and
/// only that key: another key of the same organisation is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_and_other_keys_do_not() {
    let mut config = Config::for_tests();
    config.accounts.api_key_requests_per_minute = 1;
    config.accounts.api_key_burst = 3;
    let s = TestServer::start_with(config).await;
    let org = organisation(&s, "busy").await;
    let noisy = api_key(&s, &org, &["consultations:read"]).await;
    let calm = api_key(&s, &org, &["consultations:read"]).await;
    let api = Api::new(&s).await;
    let missing = format!("{C}/no-such-consultation");
    for _ in 0..3 {
        let r = api.call(&noisy, "GET", ONE, &missing, None).await;
        assert_eq!(r.status, 404, "{}", r.text());
    }
    let r = api.call(&noisy, "GET", ONE, &missing, None).await;
    assert_eq!((r.status, r.code()), (429, "rate_limited".to_string()));
    let retry: u64 = r
        .header("retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let r = api.call(&calm, "GET", ONE, &missing, None).await;
    assert_eq!(r.status, 404, "another key is not limited: {}", r.text());
    s.shutdown().await;
}
