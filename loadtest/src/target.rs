//! The server under test, behind one small trait so a scenario runs unchanged against our server
//! or another SFU (e.g. Janus's VideoRoom).
//!
//! A [`Target`] joins one participant of one consultation and hands back a [`Session`]: the
//! participant's media peer (a [`SyntheticPeer`], already negotiated or negotiating) and the
//! stream id the other participants' peers see on this participant's tracks.
//!
//! What the scenario runner relies on:
//! - Participant `index` 0 of a consultation joins first and is its host (our practitioner, or
//!   whoever creates the room); the runner joins the others only after `join` of the host
//!   returned. A target admits waiting participants itself (ours: the practitioner admits).
//! - `join` returns once the participant is in the consultation with media negotiation under
//!   way. A publisher's peer carries one audio and one video track; the runner starts sending
//!   media on them after `join` returns ([`crate::media`]).
//! - Subscribers receive every other publisher's tracks. Each received track's stream id must
//!   equal the publisher's [`Session::stream_id`] and RTP sequence numbers must pass through
//!   unchanged, or latency cannot be matched (loss, jitter and bitrate are still measured); a
//!   target whose server renumbers can override [`Target::publisher_of`].

use crate::participant::{JoinOptions, Participant};
use crate::peer::{PeerOptions, SyntheticPeer};
use std::sync::Arc;
use std::time::Duration;
use teleconsult::config::{Config, ExposeSecret};
use teleconsult::protocol::ServerMessage;
use teleconsult::token::{self, Claims, Role};
use teleconsult_store::Store;

/// Why a participant could not join.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("could not join: {0}")]
    Join(String),
    #[error("not admitted: {0}")]
    Admission(String),
    #[error("{0}")]
    Other(String),
}

/// One participant to join.
#[derive(Clone, Debug)]
pub struct JoinSpec {
    /// Consultation (room) name, unique per run.
    pub consultation: String,
    /// 0 for the host, who joins first; 1.. for the others, in joining order.
    pub index: usize,
    /// Total participants this consultation will have (room size for targets that need it).
    pub capacity: usize,
    /// Whether this participant publishes audio and video.
    pub publish: bool,
}

/// A server that synthetic participants can join.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// Short name for reports (`teleconsult`, `janus`).
    fn name(&self) -> &str;

    /// Join `spec` with a media peer built from `peer` (whose `publish` the target sets from
    /// `spec.publish`).
    async fn join(
        &self,
        spec: &JoinSpec,
        peer: PeerOptions,
    ) -> Result<Box<dyn Session>, TargetError>;

    /// The publisher's stream id for a track received with `stream_id` (identity by default).
    fn publisher_of(&self, stream_id: &str) -> String {
        stream_id.to_string()
    }
}

/// A joined participant.
#[async_trait::async_trait]
pub trait Session: Send + Sync {
    /// The stream id other peers see on this participant's tracks (ours: the participant id).
    fn stream_id(&self) -> &str;
    /// The participant's media peer.
    fn peer(&self) -> &Arc<SyntheticPeer>;
    /// The peer that receives the others' tracks: the same peer for servers with one
    /// PeerConnection per participant (ours), a separate subscriber peer for Janus's VideoRoom.
    fn receiver(&self) -> &Arc<SyntheticPeer> {
        self.peer()
    }
    /// Errors the server reported to this participant since it joined (empty when all is well).
    fn errors(&self) -> Vec<String>;
    /// Leave the consultation and close the peer.
    async fn leave(self: Box<Self>);
}

/// How to obtain join credentials for our server: the practitioner (participant 0) gets the
/// pre-accounts practitioner token; every patient gets an invitation, created in the server's
/// store (the same `config`'s storage and signing keys as the server's).
#[derive(Clone)]
pub struct Teleconsult {
    /// `ws://HOST:PORT/ws`.
    pub ws_url: String,
    config: Arc<Config>,
    store: Arc<dyn Store>,
    /// How long a patient waits to be admitted.
    pub admit_timeout: Duration,
}

impl Teleconsult {
    pub fn new(ws_url: impl Into<String>, config: Config, store: Arc<dyn Store>) -> Teleconsult {
        Teleconsult {
            ws_url: ws_url.into(),
            config: Arc::new(config),
            store,
            admit_timeout: Duration::from_secs(20),
        }
    }

    async fn token(&self, spec: &JoinSpec) -> Result<String, TargetError> {
        // Synthetic labels: never a person's name.
        let who = format!("{}-p{}", spec.consultation, spec.index);
        if spec.index == 0 {
            return Ok(token::sign(
                self.config.auth.signing_secret.expose_secret().as_bytes(),
                &Claims {
                    consultation: spec.consultation.clone(),
                    identity: who,
                    role: Role::Practitioner,
                    exp: token::unix_now() + 24 * 3600,
                },
            ));
        }
        let (_, link) = teleconsult::invite::invite(
            &*self.store,
            &self.config,
            teleconsult::invite::InviteRequest {
                consultation: &spec.consultation,
                role: Role::Patient,
                label: &who,
                scheduled_at: None,
                organisation: Some("loadtest"),
                practitioner: Some("loadtest-practitioner"),
                policy: None,
            },
            teleconsult::consultation::invitation::now_millis(),
        )
        .await
        .map_err(|e| TargetError::Join(format!("inviting a patient: {e}")))?;
        Ok(link)
    }
}

struct TeleconsultSession {
    participant: Participant,
}

#[async_trait::async_trait]
impl Target for Teleconsult {
    fn name(&self) -> &str {
        "teleconsult"
    }

    async fn join(
        &self,
        spec: &JoinSpec,
        mut peer: PeerOptions,
    ) -> Result<Box<dyn Session>, TargetError> {
        peer.publish = spec.publish;
        let host = spec.index == 0;
        let options = JoinOptions {
            peer,
            auto_admit: host,
            seat_secret: None,
        };
        let token = self.token(spec).await?;
        let mut participant = Participant::join_with(&self.ws_url, &token, options)
            .await
            .map_err(|e| TargetError::Join(e.to_string()))?;
        if !host {
            participant
                .expect(self.admit_timeout, |m| {
                    matches!(m, ServerMessage::Admitted { .. })
                })
                .await
                .map_err(|e| TargetError::Admission(e.to_string()))?;
        }
        Ok(Box::new(TeleconsultSession { participant }))
    }
}

#[async_trait::async_trait]
impl Session for TeleconsultSession {
    fn stream_id(&self) -> &str {
        &self.participant.id
    }

    fn peer(&self) -> &Arc<SyntheticPeer> {
        &self.participant.peer
    }

    fn errors(&self) -> Vec<String> {
        let mut errors = self.participant.errors();
        if let Some((code, reason)) = self.participant.close_code() {
            errors.push(format!("connection closed ({code}) {reason}"));
        }
        errors
    }

    async fn leave(mut self: Box<Self>) {
        self.participant
            .send(teleconsult::protocol::ClientMessage::Leave);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.participant.drop_connection().await;
    }
}
