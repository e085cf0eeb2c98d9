//! Shared test harness: an in-process server on loopback with free ports, token minting, and
//! synthetic participants.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use teleconsult::config::Config;
use teleconsult::protocol::ServerMessage;
use teleconsult::token::{self, Claims, Role};
use teleconsult_loadtest::participant::Participant;

pub struct TestServer {
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
    pub config: Config,
    pub server: teleconsult::server::RunningServer,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Config::for_tests()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let server = teleconsult::server::start(config.clone())
            .await
            .expect("server starts");
        TestServer {
            http_addr: server.http_addr,
            media_addr: server.media_addr,
            config,
            server,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http_addr)
    }

    pub fn token(&self, consultation: &str, identity: &str, role: Role) -> String {
        token::sign(
            self.config.auth.signing_secret.as_bytes(),
            &Claims {
                consultation: consultation.into(),
                identity: identity.into(),
                role,
                exp: token::unix_now() + 3600,
            },
        )
    }

    pub async fn join(&self, consultation: &str, identity: &str, role: Role) -> Participant {
        Participant::join(&self.ws_url(), &self.token(consultation, identity, role))
            .await
            .expect("join succeeds")
    }
}

pub const T: Duration = Duration::from_secs(10);

/// Practitioner admits `patient` (waits for the waiting list entry first).
pub async fn admit(practitioner: &mut Participant, patient_id: &str) {
    let id = patient_id.to_string();
    practitioner
        .expect(T, |m| matches!(m, ServerMessage::WaitingList { participants } if participants.iter().any(|p| p.id == id)))
        .await
        .expect("patient appears in the waiting list");
    practitioner.send(teleconsult::protocol::ClientMessage::Admit {
        participant: patient_id.to_string(),
    });
}

/// Poll `cond` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}
