//! The REST API v1 never reaches the logs with a credential or health data: no API key (or its
//! secret), patient or guest label, join link token, or key name, at the most verbose level,
//! through key creation, a booking, a read, a listing, an invitation, a revocation, a refused
//! body and a cancel.

mod common;

use common::{TestServer, bearer, request};
use std::io::Write;
use std::sync::{Arc, Mutex};
use teleconsult::accounts::{NewAccount, StaffRole, now_millis};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PASSWORD: &str = "Sup3r-secret-passphrase";
const PATIENT: &str = "Erika Mustermann-Privat";
const GUEST: &str = "Dolmetscherin Geheimname";
const KEY_NAME: &str = "Buchungssystem Hinterhof";

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_labels_or_links_in_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(teleconsult::telemetry::log_filter("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = TestServer::start().await;
    let addr = server.http_addr;
    let svc = &server.server.state.accounts;
    let org = svc
        .create_organisation("Praxis", now_millis())
        .await
        .expect("organisation");
    let mut ids = Vec::new();
    for (email, role) in [
        ("admin@pii.test", StaffRole::Admin),
        ("doctor@pii.test", StaffRole::Practitioner),
    ] {
        let a = svc
            .create_account(
                &org.id,
                NewAccount {
                    email: email.into(),
                    display_name: "Staff".into(),
                    roles: vec![role],
                    password: PASSWORD.into(),
                },
                now_millis(),
            )
            .await
            .expect("account");
        ids.push(a.id);
    }
    let json = ("Content-Type", "application/json".to_string());
    let body = |v: serde_json::Value| serde_json::to_vec(&v).expect("json");
    let login = request(
        addr,
        "POST",
        "/api/auth/login",
        std::slice::from_ref(&json),
        body(serde_json::json!({"email": "admin@pii.test", "password": PASSWORD})),
    )
    .await;
    assert_eq!(login.status, 200);
    let cookie = login
        .header("set-cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    let csrf = login.json()["csrf_token"]
        .as_str()
        .expect("csrf")
        .to_string();
    let staff = vec![("Cookie", cookie), ("X-CSRF-Token", csrf), json.clone()];
    let created = request(
        addr,
        "POST",
        "/api/admin/api-keys",
        &staff,
        body(serde_json::json!({"name": KEY_NAME, "scopes": ["consultations:write", "consultations:read"]})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let key = created.json()["key"].as_str().expect("key").to_string();
    let key_id = created.json()["id"].as_str().expect("id").to_string();
    let secret = key.rsplit('_').next().expect("secret").to_string();
    let api = vec![bearer(&key), json.clone()];

    let booked = request(
        addr,
        "POST",
        "/api/v1/consultations",
        &api,
        body(serde_json::json!({
            "practitioner": ids[1],
            "scheduled_at": time(now_millis() + 60_000),
            "patient": {"label": PATIENT},
            "guests": [{"label": GUEST}],
        })),
    )
    .await;
    assert_eq!(booked.status, 201, "{}", booked.text());
    let c = booked.json();
    let id = c["id"].as_str().expect("id").to_string();
    let tokens: Vec<String> = c["invitations"]
        .as_array()
        .expect("invitations")
        .iter()
        .map(|i| {
            let link = i["link"].as_str().expect("link");
            link.split_once("#token=").expect("token").1.to_string()
        })
        .collect();
    let read = request(
        addr,
        "GET",
        &format!("/api/v1/consultations/{id}"),
        &api,
        vec![],
    )
    .await;
    assert_eq!(read.status, 200);
    let list = request(
        addr,
        "GET",
        &format!(
            "/api/v1/consultations?from={}&to={}",
            time(0),
            time(now_millis() + 3_600_000)
        ),
        &api,
        vec![],
    )
    .await;
    assert_eq!(list.status, 200);
    let invited = request(
        addr,
        "POST",
        &format!("/api/v1/consultations/{id}/invitations"),
        &api,
        body(serde_json::json!({"role": "guest", "label": GUEST})),
    )
    .await;
    assert_eq!(invited.status, 201);
    let jti = invited.json()["jti"].as_str().expect("jti").to_string();
    let revoked = request(
        addr,
        "DELETE",
        &format!("/api/v1/consultations/{id}/invitations/{jti}"),
        &api,
        vec![],
    )
    .await;
    assert_eq!(revoked.status, 204);
    // A refused body whose refusal message quotes the client's text is not logged either.
    let refused = request(
        addr,
        "POST",
        "/api/v1/consultations",
        &api,
        body(serde_json::json!({"patient": {"label": PATIENT}, "diagnosis": PATIENT})),
    )
    .await;
    assert_eq!(refused.status, 400);
    let wrong = format!("tc_{key_id}_{}", "0".repeat(64));
    let unauthorized = request(
        addr,
        "GET",
        "/api/v1/consultations/x",
        &[bearer(&wrong)],
        vec![],
    )
    .await;
    assert_eq!(unauthorized.status, 401);
    let cancelled = request(
        addr,
        "DELETE",
        &format!("/api/v1/consultations/{id}"),
        &api,
        vec![],
    )
    .await;
    assert_eq!(cancelled.status, 204);
    server.shutdown().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    assert!(
        logs.contains("consultation created through the API") && logs.contains(&id),
        "the flow was logged, with ids:\n{logs}"
    );
    assert!(logs.contains(&key_id), "the key id is logged");
    let mut needles = vec![
        ("API key", key.clone()),
        ("API key secret", secret),
        ("patient label", "Mustermann".to_string()),
        ("guest label", "Geheimname".to_string()),
        ("key name", "Hinterhof".to_string()),
    ];
    for t in &tokens {
        needles.push(("link token", t.clone()));
        needles.push((
            "link token signature",
            t.rsplit('.').next().expect("sig").to_string(),
        ));
    }
    for (what, needle) in needles {
        assert!(!logs.contains(&needle), "{what} in the logs:\n{logs}");
    }
}
