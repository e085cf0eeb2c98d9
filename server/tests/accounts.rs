//! Staff accounts through HTTP, on both storage backends: sign-in answers, lockout, the session
//! cookie, CSRF, idle and absolute expiry, logout everywhere, TOTP, the admin API's role and
//! organisation rules, billing exports by session, and the `admin` CLI creating a first admin
//! who can sign in.

mod common;

use common::{BinaryServer, Reply, TestServer, request};
use std::net::SocketAddr;
use teleconsult::accounts::{NewAccount, StaffRole, now_millis, secrets};
use teleconsult::config::Config;
use teleconsult_store::SessionRecord;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Mongo,
}

fn backends() -> Vec<Backend> {
    match common::mongo_uri() {
        Some(_) => vec![Backend::Sqlite, Backend::Mongo],
        None => vec![Backend::Sqlite],
    }
}

async fn server(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::for_tests();
    if let Backend::Mongo = backend {
        config.storage.mongodb_uri = common::mongo_uri().expect("checked").into();
        config.storage.database = format!("tc_accounts_{:08x}", rand::random::<u32>());
    }
    tweak(&mut config);
    config.validate(true).expect("valid test configuration");
    TestServer::start_with(config).await
}

/// An organisation with one account per `(email, roles)`; returns the organisation id and the
/// account ids.
async fn organisation(
    s: &TestServer,
    name: &str,
    accounts: &[(&str, &[StaffRole])],
) -> (String, Vec<String>) {
    let svc = &s.server.state.accounts;
    let org = svc
        .create_organisation(name, now_millis())
        .await
        .expect("organisation");
    let mut ids = Vec::new();
    for (email, roles) in accounts {
        let a = svc
            .create_account(
                &org.id,
                NewAccount {
                    email: email.to_string(),
                    display_name: format!("Staff {email}"),
                    roles: roles.to_vec(),
                    password: PASSWORD.into(),
                },
                now_millis(),
            )
            .await
            .expect("account");
        ids.push(a.id);
    }
    (org.id, ids)
}

fn json_post(body: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&body).expect("json")
}

/// A signed-in browser: its cookie and CSRF token.
struct Browser {
    addr: SocketAddr,
    cookie: String,
    csrf: String,
}

impl Browser {
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

    async fn post(&self, path: &str, body: Option<serde_json::Value>) -> Reply {
        let mut headers = vec![
            ("Cookie", self.cookie.clone()),
            ("X-CSRF-Token", self.csrf.clone()),
        ];
        if body.is_some() {
            headers.push(("Content-Type", "application/json".to_string()));
        }
        request(
            self.addr,
            "POST",
            path,
            &headers,
            body.map(json_post).unwrap_or_default(),
        )
        .await
    }
}

async fn login_reply(addr: SocketAddr, email: &str, password: &str, code: Option<&str>) -> Reply {
    let mut body = serde_json::json!({ "email": email, "password": password });
    if let Some(code) = code {
        body["code"] = code.into();
    }
    request(
        addr,
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json".to_string())],
        json_post(body),
    )
    .await
}

async fn login(addr: SocketAddr, email: &str) -> Browser {
    let r = login_reply(addr, email, PASSWORD, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").to_string();
    let cookie = set.split(';').next().expect("cookie pair").to_string();
    Browser {
        addr,
        cookie,
        csrf: r.json()["csrf_token"].as_str().expect("csrf").to_string(),
    }
}

#[tokio::test]
async fn sign_in_errors_say_nothing_about_which_part_was_wrong() {
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        organisation(&s, "A", &[("dr@a.example", &[StaffRole::Practitioner])]).await;
        let addr = s.http_addr;

        let ok = login_reply(addr, "DR@a.example", PASSWORD, None).await;
        assert_eq!(ok.status, 200, "{backend:?}: {}", ok.text());
        let cookie = ok.header("set-cookie");
        for part in [
            "teleconsult_session=",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
        ] {
            assert!(cookie.contains(part), "{part} in {cookie}");
        }
        let v = ok.json();
        assert_eq!(v["roles"], serde_json::json!(["practitioner"]));
        assert_eq!(v["idle_timeout_secs"], 900);
        assert!(!ok.text().contains(PASSWORD));

        let wrong = login_reply(addr, "dr@a.example", "not the password", None).await;
        let unknown = login_reply(addr, "nobody@a.example", PASSWORD, None).await;
        assert_eq!(wrong.status, 401, "{backend:?}");
        assert_eq!(
            (unknown.status, unknown.body.clone()),
            (wrong.status, wrong.body.clone())
        );
        assert_eq!(wrong.code(), "invalid_credentials");
        assert!(wrong.header("set-cookie").is_empty());

        // Malformed bodies are 400 with a reason; a foreign Origin is refused.
        let r = request(
            addr,
            "POST",
            "/api/auth/login",
            &[("Content-Type", "application/json".to_string())],
            b"{\"email\": 1}".to_vec(),
        )
        .await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
        let r = request(
            addr,
            "POST",
            "/api/auth/login",
            &[
                ("Content-Type", "application/json".to_string()),
                ("Origin", "https://evil.example".to_string()),
            ],
            json_post(serde_json::json!({"email": "dr@a.example", "password": PASSWORD})),
        )
        .await;
        assert_eq!(r.status, 403, "{}", r.text());
        s.shutdown().await;
    }
}

#[tokio::test]
async fn repeated_failures_lock_known_and_unknown_emails_alike() {
    for backend in backends() {
        let s = server(backend, |c| {
            c.accounts.lockout_threshold = 3;
            c.accounts.lockout_base_secs = 600;
            c.accounts.lockout_max_secs = 3600;
        })
        .await;
        organisation(&s, "A", &[("dr@a.example", &[StaffRole::Practitioner])]).await;
        for email in ["dr@a.example", "ghost@a.example"] {
            for _ in 0..2 {
                let r = login_reply(s.http_addr, email, "not the password", None).await;
                assert_eq!(r.code(), "invalid_credentials", "{backend:?} {email}");
            }
            let r = login_reply(s.http_addr, email, "not the password", None).await;
            assert_eq!((r.status, r.code().as_str()), (429, "locked"), "{email}");
            assert_eq!(r.header("retry-after"), "600");
            // The right password is refused while locked, with the same answer.
            let r = login_reply(s.http_addr, email, PASSWORD, None).await;
            assert_eq!((r.status, r.code().as_str()), (429, "locked"), "{email}");
            let after: u64 = r.header("retry-after").parse().expect("seconds");
            assert!((590..=600).contains(&after), "{after}");
        }
        s.shutdown().await;
    }
}

#[tokio::test]
async fn state_changes_need_the_sessions_csrf_token() {
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        organisation(
            &s,
            "A",
            &[
                ("one@a.example", &[StaffRole::Practitioner]),
                ("two@a.example", &[StaffRole::Practitioner]),
            ],
        )
        .await;
        let one = login(s.http_addr, "one@a.example").await;
        let two = login(s.http_addr, "two@a.example").await;
        let logout = |csrf: Option<String>| {
            let mut headers = vec![("Cookie", one.cookie.clone())];
            if let Some(c) = csrf {
                headers.push(("X-CSRF-Token", c));
            }
            let addr = s.http_addr;
            async move { request(addr, "POST", "/api/auth/logout", &headers, vec![]).await }
        };
        let r = logout(None).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "csrf_missing"),
            "{backend:?}"
        );
        let r = logout(Some(two.csrf.clone())).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "csrf_invalid"),
            "{backend:?}"
        );
        let r = logout(Some("x".into())).await;
        assert_eq!((r.status, r.code().as_str()), (403, "csrf_invalid"));
        // Refused requests changed nothing: still signed in.
        assert_eq!(one.get("/api/auth/session").await.status, 200);
        // A GET needs no token; the session answer carries it.
        assert_eq!(
            one.get("/api/auth/session").await.json()["csrf_token"],
            one.csrf.as_str()
        );

        let r = logout(Some(one.csrf.clone())).await;
        assert_eq!(r.status, 204, "{}", r.text());
        assert!(r.header("set-cookie").contains("Max-Age=0"));
        let r = one.get("/api/auth/session").await;
        assert_eq!((r.status, r.code().as_str()), (401, "not_signed_in"));
        assert_eq!(
            two.get("/api/auth/session").await.status,
            200,
            "the other session lives"
        );
        s.shutdown().await;
    }
}

#[tokio::test]
async fn idle_and_expired_sessions_are_refused_and_logout_everywhere_ends_all() {
    for backend in backends() {
        let s = server(backend, |c| c.accounts.idle_timeout_secs = 60).await;
        let (org, ids) = organisation(&s, "A", &[("dr@a.example", &[StaffRole::Billing])]).await;
        let store = &s.server.state.store;
        let now = now_millis();
        // Sessions as they would be after a minute and a half of silence, and past their lifetime.
        for (last_seen, expires_at) in [(now - 90_000, now + 3_600_000), (now, now - 1)] {
            let secret = secrets::new_session_secret();
            store
                .insert_session(&SessionRecord {
                    id_hash: secrets::session_hash(&secret),
                    organisation: org.clone(),
                    account: ids[0].clone(),
                    created_at: now - 100_000,
                    last_seen,
                    expires_at,
                })
                .await
                .expect("session");
            let r = request(
                s.http_addr,
                "GET",
                "/api/auth/session",
                &[("Cookie", format!("teleconsult_session={secret}"))],
                vec![],
            )
            .await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (401, "session_expired"),
                "{backend:?}"
            );
            assert_eq!(
                store
                    .session(&secrets::session_hash(&secret))
                    .await
                    .expect("lookup"),
                None,
                "an expired session is removed"
            );
        }

        let a = login(s.http_addr, "dr@a.example").await;
        let b = login(s.http_addr, "dr@a.example").await;
        let r = a.post("/api/auth/logout-everywhere", None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["sessions_ended"], 2);
        for browser in [&a, &b] {
            assert_eq!(browser.get("/api/auth/session").await.status, 401);
        }
        s.shutdown().await;
    }
}

#[tokio::test]
async fn a_second_factor_is_required_once_enrolled() {
    use totp_rs::{Algorithm, Secret, TOTP};
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        organisation(&s, "A", &[("dr@a.example", &[StaffRole::Practitioner])]).await;
        let b = login(s.http_addr, "dr@a.example").await;
        let r = b.post("/api/auth/totp", None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let secret = r.json()["secret"].as_str().expect("secret").to_string();
        let app = TOTP::new(
            Algorithm::SHA1,
            6,
            1,
            30,
            Secret::Encoded(secret).to_bytes().expect("base32"),
            None,
            "x".into(),
        )
        .expect("totp");
        let r = b
            .post(
                "/api/auth/totp/confirm",
                Some(serde_json::json!({"code": "abc"})),
            )
            .await;
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_code"));
        let code = app.generate_current().expect("code");
        let r = b
            .post(
                "/api/auth/totp/confirm",
                Some(serde_json::json!({"code": code})),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());

        let r = login_reply(s.http_addr, "dr@a.example", PASSWORD, None).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "totp_required"),
            "{backend:?}"
        );
        assert!(r.header("set-cookie").is_empty());
        // The code used for confirmation cannot be used again; the next one can.
        let r = login_reply(s.http_addr, "dr@a.example", PASSWORD, Some(&code)).await;
        assert_eq!(r.code(), "invalid_credentials");
        let next = app.generate(now_millis() as u64 / 1000 + 30);
        let r = login_reply(s.http_addr, "dr@a.example", PASSWORD, Some(&next)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["totp"], true);
        s.shutdown().await;
    }
}

#[tokio::test]
async fn the_admin_api_is_for_admins_of_the_same_organisation() {
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        let (_, a_ids) = organisation(
            &s,
            "A",
            &[
                ("admin@a.example", &[StaffRole::Admin]),
                ("dr@a.example", &[StaffRole::Practitioner]),
            ],
        )
        .await;
        let (_, b_ids) =
            organisation(&s, "B", &[("dr@b.example", &[StaffRole::Practitioner])]).await;
        let admin = login(s.http_addr, "admin@a.example").await;
        let doctor = login(s.http_addr, "dr@a.example").await;

        // Not an admin: 403 on the page and the API.
        assert_eq!(doctor.get("/admin").await.status, 403, "{backend:?}");
        let r = doctor.get("/api/admin/accounts").await;
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
        let r = doctor
            .post(&format!("/api/admin/accounts/{}/disable", a_ids[0]), None)
            .await;
        assert_eq!(r.status, 403);
        // Not signed in: the page sends to the sign-in page, the API answers 401.
        // (The test client follows the 303 to /login, the sign-in page.)
        let r = request(s.http_addr, "GET", "/admin", &[], vec![]).await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("/login.js"), "{}", r.text());
        assert_eq!(
            request(s.http_addr, "GET", "/api/admin/accounts", &[], vec![])
                .await
                .status,
            401
        );

        // The admin: the page, and only its own organisation's accounts.
        let r = admin.get("/admin").await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("admin.js"));
        let list = admin.get("/api/admin/accounts").await.json();
        let listed: Vec<&str> = list["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .map(|a| a["email"].as_str().expect("email"))
            .collect();
        assert_eq!(listed, vec!["admin@a.example", "dr@a.example"]);
        assert!(!list.to_string().contains("argon2"), "no hashes: {list}");

        // Another organisation's account: 404 for every action, and nothing changes.
        for action in ["disable", "enable", "reset-password"] {
            let r = admin
                .post(&format!("/api/admin/accounts/{}/{action}", b_ids[0]), None)
                .await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (404, "not_found"),
                "{action}"
            );
        }
        login(s.http_addr, "dr@b.example").await;

        // Create, disable (ends the sessions), enable, reset.
        let r = admin
            .post(
                "/api/admin/accounts",
                Some(serde_json::json!({
                    "email": "Billing@A.example", "display_name": "Bea Billing", "roles": ["billing"]
                })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let created = r.json();
        let new_id = created["account"]["id"].as_str().expect("id").to_string();
        let initial = created["password"].as_str().expect("password").to_string();
        assert_eq!(created["account"]["email"], "billing@a.example");
        let r = login_reply(s.http_addr, "billing@a.example", &initial, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = admin
            .post(
                "/api/admin/accounts",
                Some(serde_json::json!({"email": "x@a.example", "display_name": "X", "roles": ["root"]})),
            )
            .await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_role"));
        let r = admin
            .post(
                "/api/admin/accounts",
                Some(serde_json::json!({"email": "dr@b.example", "display_name": "X", "roles": ["billing"]})),
            )
            .await;
        assert_eq!((r.status, r.code().as_str()), (409, "email_taken"));

        let r = admin
            .post(&format!("/api/admin/accounts/{}/disable", a_ids[1]), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["disabled"], true);
        assert_eq!(
            doctor.get("/api/auth/session").await.status,
            401,
            "disabled: signed out"
        );
        assert_eq!(
            login_reply(s.http_addr, "dr@a.example", PASSWORD, None)
                .await
                .code(),
            "invalid_credentials"
        );
        let r = admin
            .post(&format!("/api/admin/accounts/{}/disable", a_ids[0]), None)
            .await;
        assert_eq!(r.code(), "cannot_disable_self");
        admin
            .post(&format!("/api/admin/accounts/{}/enable", a_ids[1]), None)
            .await;
        let r = admin
            .post(
                &format!("/api/admin/accounts/{new_id}/reset-password"),
                None,
            )
            .await;
        let reset = r.json()["password"].as_str().expect("password").to_string();
        assert_ne!(reset, initial);
        assert_eq!(
            login_reply(s.http_addr, "billing@a.example", &initial, None)
                .await
                .status,
            401
        );
        assert_eq!(
            login_reply(s.http_addr, "billing@a.example", &reset, None)
                .await
                .status,
            200
        );
        login(s.http_addr, "dr@a.example").await;
        s.shutdown().await;
    }
}

#[tokio::test]
async fn billing_exports_by_session_stay_inside_the_organisation() {
    for backend in backends() {
        let s = server(backend, |_| {}).await;
        let (_, a) = organisation(
            &s,
            "A",
            &[
                ("billing@a.example", &[StaffRole::Billing]),
                ("dr1@a.example", &[StaffRole::Practitioner]),
                ("dr2@a.example", &[StaffRole::Practitioner]),
            ],
        )
        .await;
        let (_, b) = organisation(&s, "B", &[("dr@b.example", &[StaffRole::Practitioner])]).await;
        let t0 = 1_800_000_000_000i64;
        for (i, practitioner) in [&a[1], &a[2], &b[0], &"Dr Token".to_string()]
            .into_iter()
            .enumerate()
        {
            s.server
                .state
                .store
                .upsert_consultation_summary(&teleconsult_store::ConsultationSummary {
                    consultation: format!("c{i}"),
                    practitioner: practitioner.clone(),
                    patient_pseudonym: "p".into(),
                    start: t0 + i as i64 * 1000,
                    end: Some(t0 + i as i64 * 1000 + 500),
                    billable_ms: 500,
                    participants: 2,
                    recovered: false,
                })
                .await
                .expect("summary");
        }
        let consultations = |r: &Reply| -> Vec<String> {
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
                .as_array()
                .expect("rows")
                .iter()
                .map(|row| row["consultation"].as_str().expect("id").to_string())
                .collect()
        };
        let path = "/api/billing/export?from=2027-01-01&to=2027-02-01&format=json";
        let billing = login(s.http_addr, "billing@a.example").await;
        assert_eq!(
            consultations(&billing.get(path).await),
            vec!["c0", "c1"],
            "{backend:?}"
        );
        let r = billing.get(&format!("{path}&practitioner={}", b[0])).await;
        assert_eq!(r.status, 404, "another organisation's practitioner");
        let dr1 = login(s.http_addr, "dr1@a.example").await;
        assert_eq!(consultations(&dr1.get(path).await), vec!["c0"]);
        assert_eq!(
            dr1.get(&format!("{path}&practitioner={}", a[2]))
                .await
                .status,
            403
        );
        let drb = login(s.http_addr, "dr@b.example").await;
        assert_eq!(consultations(&drb.get(path).await), vec!["c2"]);
        // The token path still works beside the session.
        let token = s
            .token("c3", "Dr Token", teleconsult::token::Role::Practitioner)
            .await;
        let r = request(s.http_addr, "GET", path, &[common::bearer(&token)], vec![]).await;
        assert_eq!(consultations(&r), vec!["c3"]);
        let both = [common::bearer(&token), ("Cookie", dr1.cookie.clone())];
        let r = request(s.http_addr, "GET", path, &both, vec![]).await;
        assert_eq!(
            consultations(&r),
            vec!["c3"],
            "an explicit bearer wins over the cookie"
        );
        s.shutdown().await;
    }
}

/// `teleconsult admin create-organisation` and `create-account` (password on standard input),
/// then the real server on the same data: the admin signs in and reaches `/admin`.
#[tokio::test]
async fn the_cli_creates_an_organisation_and_an_admin_who_can_sign_in() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = common::temp_dir("accounts-cli");
    let data = dir.join("data");
    let toml = format!("[storage]\ndata_dir = \"{}\"\n", data.display());
    let config = dir.join("cli.toml");
    std::fs::write(&config, &toml).expect("config");
    let bin = env!("CARGO_BIN_EXE_teleconsult");

    let out = Command::new(bin)
        .args([
            "admin",
            "create-organisation",
            "--name",
            "Praxis Nord",
            "--dev",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let org = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(org.starts_with("org_"), "{org}");

    let create = |password: &str, organisation: &str| {
        let mut child = Command::new(bin)
            .args([
                "admin",
                "create-account",
                "--organisation",
                organisation,
                "--email",
                "Chief@Praxis.example",
                "--display-name",
                "Dr Chief",
                "--role",
                "admin",
                "--role",
                "practitioner",
                "--dev",
                "--config",
            ])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        writeln!(child.stdin.take().expect("stdin"), "{password}").expect("password");
        child.wait_with_output().expect("ends")
    };
    let out = create("short", &org);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));
    let out = create(PASSWORD, "org_nonexistent");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--organisation"));
    let out = create(PASSWORD, &org);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let account = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(account.starts_with("acc_"), "{account}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));

    let server = BinaryServer::start(&dir, &toml, &[], "serve.log").await;
    let admin = login(server.http_addr, "chief@praxis.example").await;
    let me = admin.get("/api/auth/session").await.json();
    assert_eq!(me["organisation"], org.as_str());
    assert_eq!(me["account"], account.as_str());
    assert_eq!(me["roles"], serde_json::json!(["practitioner", "admin"]));
    assert_eq!(admin.get("/admin").await.status, 200);
    // The dev seeding made its demo practitioner beside it, in its own organisation.
    let demo = login_reply(
        server.http_addr,
        "practitioner@demo.teleconsult.test",
        "demo-practitioner-password",
        None,
    )
    .await;
    assert_eq!(demo.status, 200, "{}", demo.text());
    let names: Vec<String> = admin.get("/api/admin/accounts").await.json()["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["email"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, vec!["chief@praxis.example"]);
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
    assert!(!log.contains(PASSWORD) && !log.contains("chief@"), "{log}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
