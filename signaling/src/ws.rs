//! WebSocket signalling at `/ws` (protocol: `docs/signaling.md`).
//!
//! The edge authenticates and parses; the consultation service decides. The session logic is
//! generic over the socket's `Sink`/`Stream` halves so it does not care where frames come from.

use crate::AppState;
use crate::consultation::{ActionError, Connection, Joined, Outbound};
use crate::protocol::{
    ClientMessage, ErrorCode, IceCandidate, MediaKind, PROTOCOL_VERSION, ServerMessage, TrackInfo,
    close,
};
use crate::token::{self, Claims};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use teleconsult_sfu::{Candidate, Kind, SfuError, SfuEvent};
use tokio::sync::mpsc;
use tracing::Instrument;

const SIGNALING_ERRORS: &str = "teleconsult_signaling_errors_total";

pub async fn handler(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    let limit = state.config.signaling.max_message_bytes;
    // The transport accepts up to twice the limit so that an oversized message can be answered
    // with a proper 1009 close rather than a torn connection.
    ws.max_message_size(limit.saturating_mul(2))
        .max_frame_size(limit.saturating_mul(2))
        .on_upgrade(move |socket| session(socket, state))
}

fn count_error(kind: &'static str) {
    metrics::counter!(SIGNALING_ERRORS, "kind" => kind).increment(1);
}

struct ConnGauge;
impl ConnGauge {
    fn new() -> ConnGauge {
        metrics::gauge!("teleconsult_websocket_connections").increment(1.0);
        ConnGauge
    }
}
impl Drop for ConnGauge {
    fn drop(&mut self) {
        metrics::gauge!("teleconsult_websocket_connections").decrement(1.0);
    }
}

fn text(msg: &ServerMessage) -> Message {
    // Serialising our own message types cannot fail.
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(msg).expect("server messages serialise"),
    ))
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_string()),
    }))
}

/// What came in on the socket, classified.
enum Incoming {
    Message(ClientMessage),
    /// A reply to send, the connection stays.
    Refuse(ErrorCode, String),
    /// Close with this code.
    Close(u16, &'static str),
    /// Nothing to do (pings, pongs).
    Nothing,
    /// The peer closed or the transport broke.
    Gone,
}

fn classify(msg: Option<Result<Message, axum::Error>>, limit: usize) -> Incoming {
    match msg {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Incoming::Gone,
        Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => Incoming::Nothing,
        Some(Ok(Message::Binary(b))) => {
            if b.len() > limit {
                count_error("too_big");
                Incoming::Close(1009, "message too big")
            } else {
                count_error("binary");
                Incoming::Refuse(
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not part of the protocol".into(),
                )
            }
        }
        Some(Ok(Message::Text(t))) => {
            if t.len() > limit {
                count_error("too_big");
                return Incoming::Close(1009, "message too big");
            }
            match serde_json::from_str::<ClientMessage>(t.as_str()) {
                Ok(m) => Incoming::Message(m),
                Err(e) => {
                    count_error("bad_message");
                    // serde's message names the field or variant, never echoes values at length.
                    let detail = e.to_string();
                    let detail: String = detail.chars().take(200).collect();
                    Incoming::Refuse(ErrorCode::BadMessage, format!("invalid message: {detail}"))
                }
            }
        }
    }
}

async fn session(socket: WebSocket, state: AppState) {
    let _gauge = ConnGauge::new();
    let (mut sink, mut stream) = socket.split();
    let limit = state.config.signaling.max_message_bytes;
    let join_timeout = Duration::from_secs(state.config.signaling.join_timeout_secs);

    // 1. The first message must be `join` with a valid token.
    let claims = loop {
        let next = tokio::time::timeout(join_timeout, stream.next()).await;
        let Ok(next) = next else {
            count_error("join_timeout");
            let _ = sink
                .send(close_frame(close::JOIN_TIMEOUT, "no join in time"))
                .await;
            return;
        };
        match classify(next, limit) {
            Incoming::Gone => return,
            Incoming::Nothing => continue,
            Incoming::Close(code, reason) => {
                let _ = sink.send(close_frame(code, reason)).await;
                return;
            }
            Incoming::Refuse(code, message) => {
                let _ = sink.send(text(&ServerMessage::error(code, message))).await;
                let _ = sink
                    .send(close_frame(close::BAD_JOIN, "first message must be join"))
                    .await;
                return;
            }
            Incoming::Message(ClientMessage::Ping) => {
                let _ = sink.send(text(&ServerMessage::Pong)).await;
                continue;
            }
            Incoming::Message(ClientMessage::Join {
                token,
                protocol,
                consultation,
            }) => {
                if protocol.is_some_and(|p| p != PROTOCOL_VERSION) {
                    let _ = sink
                        .send(close_frame(close::BAD_JOIN, "unsupported protocol version"))
                        .await;
                    return;
                }
                let secret = state.config.auth.signing_secret.as_bytes();
                match token::verify(secret, &token, token::unix_now()) {
                    Ok(claims) => {
                        if consultation.is_some_and(|c| c != claims.consultation) {
                            count_error("wrong_consultation");
                            let _ = sink
                                .send(close_frame(
                                    close::FORBIDDEN,
                                    "token is for another consultation",
                                ))
                                .await;
                            return;
                        }
                        break claims;
                    }
                    Err(e) => {
                        count_error("bad_token");
                        let _ = sink
                            .send(close_frame(close::UNAUTHORIZED, &e.to_string()))
                            .await;
                        return;
                    }
                }
            }
            Incoming::Message(_) => {
                count_error("not_joined");
                let _ = sink
                    .send(text(&ServerMessage::error(
                        ErrorCode::NotJoined,
                        "send join first",
                    )))
                    .await;
                let _ = sink
                    .send(close_frame(close::BAD_JOIN, "first message must be join"))
                    .await;
                return;
            }
        }
    };

    // 2. Joined: register with the consultation service.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outbound>();
    let (media_tx, mut media_rx) = mpsc::unbounded_channel::<SfuEvent>();
    let joined = state.consultations.join(
        &claims,
        Connection {
            outbox: out_tx,
            media_events: media_tx,
        },
    );
    let Joined {
        participant,
        generation,
        ..
    } = match joined {
        Ok(j) => j,
        Err(e) => {
            count_error("join_refused");
            let _ = sink.send(close_frame(e.close_code(), &e.to_string())).await;
            return;
        }
    };
    // Everything from here on is logged inside the participant's span (ids only).
    let span = tracing::info_span!("participant", consultation = %claims.consultation, participant = %participant);
    async {
    let idle = Duration::from_secs(state.config.signaling.idle_timeout_secs.max(1));
    let mut ping = tokio::time::interval(idle / 3);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let mut left_for_good = false;

    loop {
        tokio::select! {
            // In this order when several are ready: the service's messages (`joined`, the roster,
            // `track_published`) were queued before the media session they describe existed, so
            // they must reach the client before its offer. An unbiased select sent the offer
            // first once the SFU answered fast enough (seen in `bad_input`).
            biased;
            out = out_rx.recv() => {
                match out {
                    Some(Outbound::Message(m)) => {
                        if sink.send(text(&m)).await.is_err() { break; }
                    }
                    Some(Outbound::Close(code, reason)) => {
                        let _ = sink.send(close_frame(code, &reason)).await;
                        // The service already recorded why; this connection is finished.
                        left_for_good = true;
                        break;
                    }
                    None => break,
                }
            }
            event = media_rx.recv() => {
                let Some(event) = event else { continue };
                if let Some(m) = on_media_event(&state, &claims, &participant, event)
                    && sink.send(text(&m)).await.is_err()
                {
                    break;
                }
            }
            incoming = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match classify(incoming, limit) {
                    Incoming::Gone => break,
                    Incoming::Nothing => {}
                    Incoming::Close(code, reason) => {
                        let _ = sink.send(close_frame(code, reason)).await;
                        break;
                    }
                    Incoming::Refuse(code, message) => {
                        if sink.send(text(&ServerMessage::error(code, message))).await.is_err() { break; }
                    }
                    Incoming::Message(ClientMessage::Leave) => {
                        state.consultations.leave(&claims.consultation, &participant, generation);
                        left_for_good = true;
                        let _ = sink.send(close_frame(1000, "left")).await;
                        break;
                    }
                    Incoming::Message(m) => {
                        if let Some(reply) = on_message(&state, &claims, &participant, m).await
                            && sink.send(text(&reply)).await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > idle {
                    let _ = sink.send(close_frame(1001, "idle timeout")).await;
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() { break; }
            }
        }
    }
    if !left_for_good {
        state
            .consultations
            .disconnected(&claims.consultation, &participant, generation);
    }
    }
    .instrument(span)
    .await
}

fn kind(k: Kind) -> MediaKind {
    match k {
        Kind::Audio => MediaKind::Audio,
        Kind::Video => MediaKind::Video,
    }
}

/// Translate what the SFU says about this participant into what its client is told.
fn on_media_event(
    state: &AppState,
    claims: &Claims,
    participant: &str,
    event: SfuEvent,
) -> Option<ServerMessage> {
    match event {
        SfuEvent::Offer(sdp) => Some(ServerMessage::Offer { sdp }),
        SfuEvent::TrackPublished { track_id, kind: k } => {
            state.consultations.track_published(
                &claims.consultation,
                participant,
                TrackInfo {
                    id: track_id,
                    kind: kind(k),
                },
            );
            None
        }
        SfuEvent::TrackUnpublished { track_id } => {
            state
                .consultations
                .track_unpublished(&claims.consultation, participant, &track_id);
            None
        }
        SfuEvent::Connected => {
            tracing::debug!(participant, "media connected");
            None
        }
        SfuEvent::Failed => Some(ServerMessage::error(
            ErrorCode::MediaFailed,
            "the media connection failed; rejoin to retry",
        )),
    }
}

fn refused(e: ActionError) -> ServerMessage {
    let code = match e {
        ActionError::Forbidden | ActionError::SelfRemoval => ErrorCode::Forbidden,
        ActionError::UnknownParticipant | ActionError::NotWaiting => ErrorCode::UnknownParticipant,
        ActionError::NotAdmitted => ErrorCode::NotAdmitted,
    };
    count_error(match code {
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::NotAdmitted => "not_admitted",
        _ => "unknown_participant",
    });
    ServerMessage::error(code, e.to_string())
}

fn sfu_refused(e: SfuError) -> ServerMessage {
    let code = match e {
        SfuError::BadSdp(_) | SfuError::NoPendingOffer => ErrorCode::BadSdp,
        SfuError::BadCandidate(_) => ErrorCode::BadCandidate,
        SfuError::UnknownParticipant => ErrorCode::NotAdmitted,
        _ => ErrorCode::MediaFailed,
    };
    count_error(match code {
        ErrorCode::BadSdp => "bad_sdp",
        ErrorCode::BadCandidate => "bad_candidate",
        _ => "media",
    });
    let message: String = e.to_string().chars().take(200).collect();
    ServerMessage::error(code, message)
}

/// Handle one request of a joined participant; returns the direct reply, if any.
async fn on_message(
    state: &AppState,
    claims: &Claims,
    participant: &str,
    msg: ClientMessage,
) -> Option<ServerMessage> {
    let svc = &state.consultations;
    let consultation = claims.consultation.as_str();
    let result = match msg {
        ClientMessage::Ping => return Some(ServerMessage::Pong),
        ClientMessage::Join { .. } => {
            count_error("already_joined");
            return Some(ServerMessage::error(
                ErrorCode::AlreadyJoined,
                "already joined",
            ));
        }
        ClientMessage::Leave => unreachable!("handled by the session loop"),
        ClientMessage::Admit { participant: t } => svc.admit(consultation, participant, &t),
        ClientMessage::Reject { participant: t } => svc.reject(consultation, participant, &t),
        ClientMessage::Remove { participant: t } => svc.remove(consultation, participant, &t),
        ClientMessage::EndConsultation => svc.end(consultation, participant),
        ClientMessage::Mute { kind, muted } => svc.set_mute(consultation, participant, kind, muted),
        ClientMessage::Answer { sdp } => {
            if let Err(e) = svc.require_admitted(consultation, participant) {
                return Some(refused(e));
            }
            return svc
                .sfu()
                .apply_answer(participant, sdp)
                .await
                .err()
                .map(sfu_refused);
        }
        ClientMessage::IceCandidate { candidate } => {
            if let Err(e) = svc.require_admitted(consultation, participant) {
                return Some(refused(e));
            }
            let candidate = candidate.map(
                |IceCandidate {
                     candidate,
                     sdp_mid,
                     sdp_mline_index,
                 }| Candidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                },
            );
            return svc
                .sfu()
                .add_remote_candidate(participant, candidate)
                .await
                .err()
                .map(sfu_refused);
        }
    };
    result.err().map(refused)
}
