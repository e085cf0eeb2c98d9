//! Staff sign-in never reaches the logs: no email, display name, password (typed or generated),
//! session secret, CSRF token or TOTP secret, at the most verbose level, through failed and
//! successful logins, a refused CSRF check, TOTP enrolment, the admin API and logout.

mod common;

use common::{TestServer, request};
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

const EMAIL: &str = "gregory.housename@clinic.example";
const NAME: &str = "Dr Gregory Housename";
const PASSWORD: &str = "Sup3r-secret-passphrase";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_or_names_in_logs() {
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
        .create_organisation("Praxis Privatname", now_millis())
        .await
        .expect("organisation");
    svc.create_account(
        &org.id,
        NewAccount {
            email: EMAIL.into(),
            display_name: NAME.into(),
            roles: vec![StaffRole::Admin],
            password: PASSWORD.into(),
        },
        now_millis(),
    )
    .await
    .expect("account");
    let json = ("Content-Type", "application/json".to_string());
    let login = |password: &'static str| {
        let body = serde_json::to_vec(&serde_json::json!({"email": EMAIL, "password": password}))
            .expect("json");
        let json = json.clone();
        async move { request(addr, "POST", "/api/auth/login", &[json], body).await }
    };
    assert_eq!(login("wrong-password-attempt").await.status, 401);
    let ok = login(PASSWORD).await;
    assert_eq!(ok.status, 200);
    let cookie = ok
        .header("set-cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    let secret = cookie.split_once('=').expect("pair").1.to_string();
    let csrf = ok.json()["csrf_token"].as_str().expect("csrf").to_string();
    let auth = vec![("Cookie", cookie.clone()), ("X-CSRF-Token", csrf.clone())];

    let r = request(
        addr,
        "POST",
        "/api/auth/logout",
        &[
            ("Cookie", cookie.clone()),
            ("X-CSRF-Token", "forged".into()),
        ],
        vec![],
    )
    .await;
    assert_eq!(r.status, 403);
    let totp = request(addr, "POST", "/api/auth/totp", &auth, vec![]).await;
    let totp_secret = totp.json()["secret"].as_str().expect("secret").to_string();
    let mut with_json = auth.clone();
    with_json.push(json.clone());
    let created = request(
        addr,
        "POST",
        "/api/admin/accounts",
        &with_json,
        serde_json::to_vec(&serde_json::json!({
            "email": "patricia.colleague@clinic.example",
            "display_name": "Patricia Colleaguename",
            "roles": ["billing"],
        }))
        .expect("json"),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let generated = created["password"].as_str().expect("password").to_string();
    let id = created["account"]["id"].as_str().expect("id").to_string();
    let reset = request(
        addr,
        "POST",
        &format!("/api/admin/accounts/{id}/reset-password"),
        &auth,
        vec![],
    )
    .await;
    let reset = reset.json()["password"]
        .as_str()
        .expect("password")
        .to_string();
    assert_eq!(
        request(addr, "POST", "/api/auth/logout", &auth, vec![])
            .await
            .status,
        204
    );
    server.shutdown().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    assert!(
        logs.contains("signed in"),
        "the flow was logged at all:\n{logs}"
    );
    assert!(logs.contains(&org.id), "ids are logged");
    for (what, needle) in [
        ("email", EMAIL),
        ("email", "clinic.example"),
        ("display name", "Housename"),
        ("display name", "Colleaguename"),
        ("organisation name", "Privatname"),
        ("password", PASSWORD),
        ("typed password", "wrong-password-attempt"),
        ("generated password", generated.as_str()),
        ("reset password", reset.as_str()),
        ("session secret", secret.as_str()),
        ("CSRF token", csrf.as_str()),
        ("TOTP secret", totp_secret.as_str()),
    ] {
        assert!(!logs.contains(needle), "{what} in the logs:\n{logs}");
    }
}
