//! WebSocket signalling at `/ws` (protocol: `docs/signaling.md`).
//!
//! The edge authenticates and parses; the consultation service decides. The session logic is
//! generic over the socket's `Sink`/`Stream` halves so it does not care where frames come from.

use crate::config::SignalingConfig;
use crate::metric_names::WEBSOCKET_CONNECTIONS;
use crate::protocol::{
    ClientMessage, ErrorCode, IceCandidate, IceServer, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
    ServerMessage, close,
};
use crate::wire;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use teleconsult_consultation::invitation::now_millis;
use teleconsult_consultation::{
    ActionError, Authenticator, ChatKind, ConsultationId, ConsultationService, Joined, Outbound,
    ParticipantId, Refusal,
};
use teleconsult_sfu::{Candidate, Sfu, SfuError, SfuEvent};
use tracing::Instrument;

/// What a signalling session needs: the consultation service, the media plane (for answers and
/// candidates), the authenticator of join credentials and the limits.
pub struct Signaling {
    pub consultations: ConsultationService,
    pub sfu: Sfu,
    /// Turns the token of a `join` into a credential (invitation links, the pre-accounts
    /// practitioner token).
    pub authenticator: Arc<Authenticator>,
    pub config: SignalingConfig,
    /// Signalling errors sent to this server's clients, by kind (rendered into its `/metrics`
    /// as `teleconsult_signaling_errors_total`; per server, not in the process-wide recorder).
    pub errors: ErrorCounters,
    /// The ICE servers (TURN, with credentials minted for this participant) sent in its
    /// `joined`.
    pub ice_servers: IceServerSource,
    /// Open sockets per source address and in all ([`upgrade_from`]).
    pub limits: Arc<crate::limits::ConnectionLimits>,
    /// In a cluster: who serves which consultation, asked once a join is authenticated. `None`
    /// on a single server (everything is served here).
    pub router: Option<Arc<dyn ConsultationRouter>>,
}

/// Where a consultation is served, as a [`ConsultationRouter`] decides at join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Here: go on with the join.
    Here,
    /// On another node: send `redirect` with this WebSocket URL (`ws://…/ws/{consultation}`),
    /// then close with [`close::REDIRECT`].
    Elsewhere(String),
    /// Nowhere right now (no live node, the cluster store unreachable): close with 1012
    /// (reason `unavailable`), after which clients retry through the load balancer.
    Unavailable,
}

/// Decides, per authenticated join, whether this node serves the consultation (cluster mode:
/// the placement in the shared store is the authority).
pub trait ConsultationRouter: Send + Sync {
    fn route<'a>(
        &'a self,
        consultation: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Route> + Send + 'a>>;

    /// A join ticket for `me` (a practitioner whose session this node authenticated) to join
    /// `consultation` on the node a `redirect` names: short-lived, single-use, bound to the
    /// consultation. `None`: none (the client falls back to its own credential).
    fn mint_ticket(&self, _me: &SignedIn, _consultation: &str) -> Option<String> {
        None
    }

    /// Whether `token` is a join ticket (rather than a link token).
    fn is_ticket(&self, _token: &str) -> bool {
        false
    }

    /// Redeem a join ticket: the practitioner and consultation it was minted for, once; `None`
    /// when forged, expired, already used, or the store cannot say.
    fn redeem_ticket<'a>(&'a self, _ticket: &'a str) -> Redemption<'a> {
        Box::pin(async { None })
    }
}

/// What [`ConsultationRouter::redeem_ticket`] resolves to: the practitioner and the
/// consultation the ticket was minted for.
pub type Redemption<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<(SignedIn, String)>> + Send + 'a>>;

/// Mints a participant's `ice_servers` (see the server's `turn` module); none by default.
pub type IceServerSource = Arc<dyn Fn(&ParticipantId) -> Vec<IceServer> + Send + Sync>;

/// Why a signalling request was refused: the `kind` label of
/// `teleconsult_signaling_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    TooBig,
    Binary,
    BadMessage,
    JoinTimeout,
    WrongConsultation,
    BadToken,
    NotJoined,
    JoinRefused,
    Forbidden,
    NotAdmitted,
    UnknownParticipant,
    BadSdp,
    BadCandidate,
    Media,
    AlreadyJoined,
    /// A chat message or notice refused (empty, too long, rate-limited, not allowed).
    Chat,
    /// A text frame that is not UTF-8 (closed with 1007).
    BadUtf8,
    /// More messages than the per-connection rate allows (closed with 1008).
    Flood,
    /// A handshake past `signaling.max_connections_per_ip` or `max_connections` (429 / 503).
    TooManyConnections,
    /// A recording request or consent answer refused.
    Recording,
    /// A connection whose client did not read: its outbox overflowed (closed with 4008).
    SlowConsumer,
}

impl ErrorKind {
    /// Every kind, in the order they are rendered.
    pub const ALL: [ErrorKind; 21] = [
        ErrorKind::TooBig,
        ErrorKind::Binary,
        ErrorKind::BadMessage,
        ErrorKind::JoinTimeout,
        ErrorKind::WrongConsultation,
        ErrorKind::BadToken,
        ErrorKind::NotJoined,
        ErrorKind::JoinRefused,
        ErrorKind::Forbidden,
        ErrorKind::NotAdmitted,
        ErrorKind::UnknownParticipant,
        ErrorKind::BadSdp,
        ErrorKind::BadCandidate,
        ErrorKind::Media,
        ErrorKind::AlreadyJoined,
        ErrorKind::Chat,
        ErrorKind::BadUtf8,
        ErrorKind::Flood,
        ErrorKind::TooManyConnections,
        ErrorKind::Recording,
        ErrorKind::SlowConsumer,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::TooBig => "too_big",
            ErrorKind::Binary => "binary",
            ErrorKind::BadMessage => "bad_message",
            ErrorKind::JoinTimeout => "join_timeout",
            ErrorKind::WrongConsultation => "wrong_consultation",
            ErrorKind::BadToken => "bad_token",
            ErrorKind::NotJoined => "not_joined",
            ErrorKind::JoinRefused => "join_refused",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotAdmitted => "not_admitted",
            ErrorKind::UnknownParticipant => "unknown_participant",
            ErrorKind::BadSdp => "bad_sdp",
            ErrorKind::BadCandidate => "bad_candidate",
            ErrorKind::Media => "media",
            ErrorKind::AlreadyJoined => "already_joined",
            ErrorKind::Chat => "chat",
            ErrorKind::BadUtf8 => "bad_utf8",
            ErrorKind::Flood => "flood",
            ErrorKind::TooManyConnections => "too_many_connections",
            ErrorKind::Recording => "recording",
            ErrorKind::SlowConsumer => "slow_consumer",
        }
    }
}

/// One counter per [`ErrorKind`], owned by one server's [`Signaling`].
#[derive(Debug, Default)]
pub struct ErrorCounters {
    counts: [AtomicU64; ErrorKind::ALL.len()],
}

impl ErrorCounters {
    fn increment(&self, kind: ErrorKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many errors of `kind` were sent so far.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// Every kind with its count (zeros included), in [`ErrorKind::ALL`] order.
    pub fn snapshot(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }
}

impl Signaling {
    /// Count one error sent to a client.
    fn count_error(&self, kind: ErrorKind) {
        self.errors.increment(kind);
    }
}

/// A practitioner signed in through the login session of the WebSocket handshake (verified by
/// the HTTP edge: the session cookie, and an `Origin` equal to the server's own). Ids only, and
/// the name shown to the others in the call.
#[derive(Clone)]
pub struct SignedIn {
    pub account: String,
    pub organisation: String,
    pub display_name: String,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("account", &self.account)
            .field("organisation", &self.organisation)
            .finish_non_exhaustive()
    }
}

/// The `/ws` route (join links only).
pub async fn handler(ws: WebSocketUpgrade, State(state): State<Arc<Signaling>>) -> Response {
    upgrade(ws, state, None, None)
}

/// The `/ws` (`path_consultation` `None`) or `/ws/{consultation}` route for an edge that has
/// already checked the handshake's login session: `signed_in` may then join its own
/// consultations with an empty token. A join on `/ws/{consultation}` must be for that
/// consultation (the path is what a load balancer hashes on).
pub fn upgrade(
    ws: WebSocketUpgrade,
    state: Arc<Signaling>,
    signed_in: Option<SignedIn>,
    path_consultation: Option<String>,
) -> Response {
    upgrade_holding(ws, state, signed_in, path_consultation, None)
}

/// [`upgrade`] for a client at `peer`, within `signaling.max_connections_per_ip` (else 429
/// with `Retry-After`) and `signaling.max_connections` (else 503); its slot is held for as long
/// as its session lasts.
pub fn upgrade_from(
    ws: WebSocketUpgrade,
    state: Arc<Signaling>,
    signed_in: Option<SignedIn>,
    path_consultation: Option<String>,
    peer: std::net::IpAddr,
) -> Response {
    use crate::limits::Refused;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let (per_ip, total) = (
        state.config.max_connections_per_ip,
        state.config.max_connections,
    );
    match state.limits.take(peer, per_ip, total) {
        Ok(slot) => upgrade_holding(ws, state, signed_in, path_consultation, Some(slot)),
        Err(why) => {
            state.count_error(ErrorKind::TooManyConnections);
            let (status, code) = match why {
                Refused::TooManyFromAddress => {
                    (StatusCode::TOO_MANY_REQUESTS, "too_many_connections")
                }
                Refused::TooMany => (StatusCode::SERVICE_UNAVAILABLE, "server_full"),
            };
            let body = serde_json::json!({
                "code": code,
                "message": "too many signalling connections; try again shortly",
            });
            (status, [(header::RETRY_AFTER, "5")], axum::Json(body)).into_response()
        }
    }
}

fn upgrade_holding(
    ws: WebSocketUpgrade,
    state: Arc<Signaling>,
    signed_in: Option<SignedIn>,
    path_consultation: Option<String>,
    slot: Option<crate::limits::Slot>,
) -> Response {
    let limit = state.config.max_message_bytes;
    // The transport accepts up to twice the limit so that an oversized message can be answered
    // with a proper 1009 close rather than a torn connection.
    ws.max_message_size(limit.saturating_mul(2))
        .max_frame_size(limit.saturating_mul(2))
        .on_upgrade(move |socket| async move {
            session(socket, state, signed_in, path_consultation).await;
            drop(slot);
        })
}

struct ConnGauge;
impl ConnGauge {
    fn new() -> ConnGauge {
        metrics::gauge!(WEBSOCKET_CONNECTIONS).increment(1.0);
        ConnGauge
    }
}
impl Drop for ConnGauge {
    fn drop(&mut self) {
        metrics::gauge!(WEBSOCKET_CONNECTIONS).decrement(1.0);
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

fn classify(state: &Signaling, msg: Option<Result<Message, axum::Error>>) -> Incoming {
    let limit = state.config.max_message_bytes;
    match msg {
        None | Some(Ok(Message::Close(_))) => Incoming::Gone,
        // The transport's own refusals still get a close code: a frame or message past what
        // it accepts (twice our limit) is 1009, a text frame that is not UTF-8 is 1007 (RFC
        // 6455 §7.4.1); anything else means the connection broke.
        Some(Err(e)) => match transport_refusal(e) {
            Some(TransportRefusal::TooBig) => {
                state.count_error(ErrorKind::TooBig);
                Incoming::Close(1009, "message too big")
            }
            Some(TransportRefusal::NotUtf8) => {
                state.count_error(ErrorKind::BadUtf8);
                Incoming::Close(1007, "text frame is not UTF-8")
            }
            None => Incoming::Gone,
        },
        Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => Incoming::Nothing,
        Some(Ok(Message::Binary(b))) => {
            if b.len() > limit {
                state.count_error(ErrorKind::TooBig);
                Incoming::Close(1009, "message too big")
            } else {
                state.count_error(ErrorKind::Binary);
                Incoming::Refuse(
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not part of the protocol".into(),
                )
            }
        }
        Some(Ok(Message::Text(t))) => {
            if t.len() > limit {
                state.count_error(ErrorKind::TooBig);
                return Incoming::Close(1009, "message too big");
            }
            match serde_json::from_str::<ClientMessage>(t.as_str()) {
                Ok(m) => Incoming::Message(m),
                Err(e) => {
                    state.count_error(ErrorKind::BadMessage);
                    // serde's message names the field or variant, never echoes values at length.
                    let detail = e.to_string();
                    let detail: String = detail.chars().take(200).collect();
                    Incoming::Refuse(ErrorCode::BadMessage, format!("invalid message: {detail}"))
                }
            }
        }
    }
}

/// One connection's message budget: `messages_per_second` on average, `message_burst` at once
/// (a token bucket, from `governor`). Every frame counts, pings and refused messages included.
struct Budget(governor::DefaultDirectRateLimiter);

impl Budget {
    fn new(config: &crate::SignalingConfig) -> Budget {
        let rate = std::num::NonZeroU32::new(config.messages_per_second)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let burst =
            std::num::NonZeroU32::new(config.message_burst).unwrap_or(std::num::NonZeroU32::MIN);
        Budget(governor::RateLimiter::direct(
            governor::Quota::per_second(rate).allow_burst(burst),
        ))
    }

    /// Spend one message; false when the connection is over its budget.
    fn spend(&self) -> bool {
        self.0.check().is_ok()
    }
}

/// A frame from the socket, after the budget: a connection past it is closed with 1008.
fn classify_within(
    state: &Signaling,
    budget: &Budget,
    msg: Option<Result<Message, axum::Error>>,
) -> Incoming {
    if matches!(msg, Some(Ok(_))) && !budget.spend() {
        state.count_error(ErrorKind::Flood);
        return Incoming::Close(close::TOO_MANY_MESSAGES, "too many messages");
    }
    classify(state, msg)
}

enum TransportRefusal {
    TooBig,
    NotUtf8,
}

/// What the WebSocket transport (tungstenite, under axum) refused, if that is why `e` came.
fn transport_refusal(e: axum::Error) -> Option<TransportRefusal> {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some(TransportRefusal::TooBig),
        tungstenite::Error::Utf8(_) => Some(TransportRefusal::NotUtf8),
        _ => None,
    }
}

async fn session(
    socket: WebSocket,
    state: Arc<Signaling>,
    signed_in: Option<SignedIn>,
    path_consultation: Option<String>,
) {
    let _gauge = ConnGauge::new();
    let (mut sink, mut stream) = socket.split();
    let join_timeout = Duration::from_secs(state.config.join_timeout_secs);

    // 1. The first message must be `join` with a valid token, within `join_timeout` of the
    // connection: one deadline, not renewed by pings or refused messages before the join.
    let join_deadline = tokio::time::Instant::now() + join_timeout;
    let budget = Budget::new(&state.config);
    let (credential, seat_secret, version, join_at) = loop {
        let next = tokio::time::timeout_at(join_deadline, stream.next()).await;
        let Ok(next) = next else {
            state.count_error(ErrorKind::JoinTimeout);
            let _ = sink
                .send(close_frame(close::JOIN_TIMEOUT, "no join in time"))
                .await;
            return;
        };
        match classify_within(&state, &budget, next) {
            Incoming::Gone => return,
            Incoming::Nothing => continue,
            Incoming::Close(code, reason) => {
                let _ = sink.send(close_frame(code, reason)).await;
                // Read on until the client's close (or a short while): a socket dropped with
                // its messages unread resets, and the client never sees the code (1006).
                await_close_reply(&mut stream).await;
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
                seat_secret,
            }) => {
                let join_at = std::time::Instant::now();
                let version = protocol.unwrap_or(OLDEST_PROTOCOL_VERSION);
                if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
                    let _ = sink
                        .send(close_frame(
                            close::BAD_JOIN,
                            "unsupported protocol version: this server speaks 1 and 2",
                        ))
                        .await;
                    return;
                }
                // The practitioner's session behind this join (cookie or join ticket), if any: a
                // redirect hands them a ticket for the owner's node.
                let mut session: Option<SignedIn> = None;
                let ticket = state
                    .router
                    .as_ref()
                    .filter(|r| !token.is_empty() && r.is_ticket(&token));
                let authenticated = if let Some(router) = ticket {
                    // A practitioner redirected here from the node that checked their session.
                    match router.redeem_ticket(&token).await {
                        Some((me, c)) => {
                            let r = state
                                .authenticator
                                .practitioner(&me.account, &me.organisation, &me.display_name, &c)
                                .await;
                            session = Some(me);
                            r
                        }
                        None => Err(Refusal::Expired),
                    }
                } else if token.is_empty() {
                    // A practitioner's own session (no link): only their own consultations.
                    session = signed_in.clone();
                    match (&signed_in, &consultation) {
                        (Some(me), Some(c)) => {
                            state
                                .authenticator
                                .practitioner(
                                    &me.account,
                                    &me.organisation,
                                    &me.display_name,
                                    c.as_str(),
                                )
                                .await
                        }
                        (Some(_), None) => Err(Refusal::NotFound),
                        (None, _) => Err(Refusal::NotSignedIn),
                    }
                } else {
                    state.authenticator.authenticate(&token, now_millis()).await
                };
                match authenticated {
                    Ok(credential) => {
                        let in_path = path_consultation
                            .as_deref()
                            .is_some_and(|p| p != credential.consultation().as_str());
                        if in_path || consultation.is_some_and(|c| c != *credential.consultation())
                        {
                            state.count_error(ErrorKind::WrongConsultation);
                            let _ = sink
                                .send(close_frame(
                                    close::FORBIDDEN,
                                    "token is for another consultation",
                                ))
                                .await;
                            return;
                        }
                        // In a cluster, only the consultation's owner serves it.
                        if let Some(router) = &state.router {
                            match router.route(credential.consultation().as_str()).await {
                                Route::Here => {}
                                Route::Elsewhere(url) => {
                                    metrics::counter!(crate::metric_names::REDIRECTS).increment(1);
                                    let ticket = session.as_ref().and_then(|me| {
                                        router.mint_ticket(me, credential.consultation().as_str())
                                    });
                                    let _ = sink
                                        .send(text(&ServerMessage::Redirect { url, ticket }))
                                        .await;
                                    let _ =
                                        sink.send(close_frame(close::REDIRECT, "redirect")).await;
                                    await_close_reply(&mut stream).await;
                                    return;
                                }
                                Route::Unavailable => {
                                    // Transient (an owner just lost, the cluster store
                                    // slow): the client retries through the load balancer.
                                    let _ =
                                        sink.send(close_frame(close::MOVED, "unavailable")).await;
                                    return;
                                }
                            }
                        }
                        break (credential, seat_secret, version, join_at);
                    }
                    Err(refusal) => {
                        state.count_error(ErrorKind::BadToken);
                        let (code, reason) = wire::refused(refusal);
                        let _ = sink.send(close_frame(code, reason)).await;
                        await_close_reply(&mut stream).await;
                        return;
                    }
                }
            }
            Incoming::Message(_) => {
                state.count_error(ErrorKind::NotJoined);
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

    // 2. Joined: register with the consultation service. Everything it says to this
    // participant (events, the media plane's offers) arrives in order on `out_rx`.
    let consultation = credential.consultation().clone();
    let (out_tx, mut out_rx) = teleconsult_consultation::outbox(state.config.outbox_messages);
    let overflow = out_rx.overflow();
    let joined = state
        .consultations
        .join(&credential, seat_secret.as_deref(), out_tx);
    drop(seat_secret);
    let Joined {
        participant,
        generation,
        ..
    } = match joined {
        Ok(j) => {
            metrics::histogram!(crate::metric_names::SIGNALING_MESSAGE_DURATION, "type" => "join")
                .record(join_at.elapsed().as_secs_f64());
            j
        }
        Err(e) => {
            state.count_error(ErrorKind::JoinRefused);
            let (code, reason) = wire::join_refused(e);
            let _ = sink.send(close_frame(code, reason)).await;
            return;
        }
    };
    let me = Me {
        consultation,
        participant,
    };
    // Everything from here on is logged inside the participant's span (ids only).
    let span = tracing::info_span!("participant", consultation = %me.consultation, participant = %me.participant);
    async {
    let idle = Duration::from_secs(state.config.idle_timeout_secs.max(1));
    let mut ping = tokio::time::interval(idle / 3);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let mut left_for_good = false;
    // The pre-call connection test's media session, while one runs (`crate::precall`).
    let mut probe: Option<crate::precall::Probe> = None;

    // The loop below may wait on a socket the client does not read (a send blocks once the
    // TCP buffers are full); meanwhile the consultation keeps queueing into the bounded outbox.
    // When that overflows, the loop is abandoned wherever it waits and the connection closed.
    let session = async { loop {
        tokio::select! {
            // What the consultation says first: it is queued in order (`joined` and the roster
            // before the offer that follows them), and a busy client must not starve it.
            biased;
            out = out_rx.recv() => {
                match out {
                    Some(Outbound::Event(e)) => {
                        let mut m = wire::message(e);
                        // A client of an older version is not sent what it does not know, and
                        // is told the version it speaks.
                        if m.since() > version { continue; }
                        if let ServerMessage::Joined { protocol, ice_servers, .. } = &mut m {
                            *protocol = version;
                            *ice_servers = (state.ice_servers)(&me.participant);
                        }
                        if sink.send(text(&m)).await.is_err() { break; }
                    }
                    Some(Outbound::Close(why)) => {
                        let (code, reason) = wire::close_frame(why);
                        let _ = sink.send(close_frame(code, reason)).await;
                        // The client must read the code (e.g. `moved_to_another_device`, after
                        // which it must not reconnect): finish the close handshake.
                        await_close_reply(&mut stream).await;
                        // The service already recorded why; this connection is finished.
                        left_for_good = true;
                        break;
                    }
                    None => break,
                }
            }
            incoming = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match classify_within(&state, &budget, incoming) {
                    Incoming::Gone => break,
                    Incoming::Nothing => {}
                    Incoming::Close(code, reason) => {
                        let _ = sink.send(close_frame(code, reason)).await;
                        await_close_reply(&mut stream).await;
                        break;
                    }
                    Incoming::Refuse(code, message) => {
                        if sink.send(text(&ServerMessage::error(code, message))).await.is_err() { break; }
                    }
                    Incoming::Message(ClientMessage::Leave) => {
                        state.consultations.leave(&me.consultation, &me.participant, generation);
                        left_for_good = true;
                        let _ = sink.send(close_frame(1000, "left")).await;
                        break;
                    }
                    Incoming::Message(ClientMessage::PrecallStart) => {
                        if let Some(p) = probe.take() { p.stop(&state.sfu); }
                        match crate::precall::Probe::start(&state.sfu, &me.participant).await {
                            Ok(p) => probe = Some(p),
                            Err(e) => {
                                if sink.send(text(&sfu_refused(&state, e))).await.is_err() { break; }
                            }
                        }
                    }
                    Incoming::Message(ClientMessage::PrecallAnswer { sdp }) => {
                        let result = match &probe {
                            Some(p) => state.sfu.apply_answer(p.id(), sdp).await,
                            None => Err(SfuError::NoPendingOffer),
                        };
                        if let Err(e) = result
                            && sink.send(text(&sfu_refused(&state, e))).await.is_err()
                        {
                            break;
                        }
                    }
                    Incoming::Message(ClientMessage::PrecallStop) => {
                        if let Some(p) = probe.take() {
                            p.stop(&state.sfu);
                            if sink.send(text(&ServerMessage::PrecallEnded)).await.is_err() { break; }
                        }
                    }
                    Incoming::Message(m) => {
                        let started = std::time::Instant::now();
                        let kind = message_type(&m);
                        let reply = on_message(&state, &me, m).await;
                        metrics::histogram!(crate::metric_names::SIGNALING_MESSAGE_DURATION, "type" => kind)
                            .record(started.elapsed().as_secs_f64());
                        if let Some(reply) = reply
                            && sink.send(text(&reply)).await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
            event = crate::precall::next_event(&mut probe) => {
                let reply = match event {
                    Some(SfuEvent::Offer(sdp)) => Some(ServerMessage::PrecallOffer { sdp }),
                    // The media plane closed it (failed, or its time is up): say so once.
                    Some(SfuEvent::Failed) | None => {
                        if let Some(p) = probe.take() { p.stop(&state.sfu); }
                        Some(ServerMessage::PrecallEnded)
                    }
                    Some(_) => None,
                };
                if let Some(reply) = reply && sink.send(text(&reply)).await.is_err() { break; }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > idle {
                    let _ = sink.send(close_frame(1001, "idle timeout")).await;
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() { break; }
            }
        }
    } };
    let overflowed = tokio::select! {
        biased;
        () = overflow.wait() => true,
        () = session => false,
    };
    if overflowed {
        state.count_error(ErrorKind::SlowConsumer);
        tracing::info!("client did not read its messages: closing (slow_consumer)");
        // The client is not reading: the close frame may never leave either; do not wait long.
        let _ = tokio::time::timeout(
            SLOW_CONSUMER_CLOSE_TIMEOUT,
            sink.send(close_frame(close::SLOW_CONSUMER, "slow_consumer")),
        )
        .await;
    }
    if let Some(p) = probe.take() {
        p.stop(&state.sfu);
    }
    if !left_for_good {
        state
            .consultations
            .disconnected(&me.consultation, &me.participant, generation);
    }
    }
    .instrument(span)
    .await
}

/// After sending a close frame: wait (at most [`CLOSE_REPLY_TIMEOUT`]) for the client's close
/// frame, discarding what it sends meanwhile. Dropping the socket at once, with the client's
/// messages still unread, resets the TCP connection, and the client may then lose the close
/// frame and its code (seen as 1006).
async fn await_close_reply<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// How long a session whose client does not read tries to send it the close frame.
const SLOW_CONSUMER_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a closing session waits for the client's close frame.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The joined participant a session speaks for.
struct Me {
    consultation: ConsultationId,
    participant: ParticipantId,
}

fn refused(state: &Signaling, e: ActionError) -> ServerMessage {
    let code = match e {
        ActionError::Forbidden | ActionError::SelfRemoval => ErrorCode::Forbidden,
        ActionError::UnknownParticipant | ActionError::NotWaiting => ErrorCode::UnknownParticipant,
        ActionError::NotAdmitted => ErrorCode::NotAdmitted,
        ActionError::ScreenShareBusy => ErrorCode::ScreenShareBusy,
    };
    state.count_error(match code {
        ErrorCode::Forbidden | ErrorCode::ScreenShareBusy => ErrorKind::Forbidden,
        ErrorCode::NotAdmitted => ErrorKind::NotAdmitted,
        _ => ErrorKind::UnknownParticipant,
    });
    ServerMessage::error(code, e.to_string())
}

fn sfu_refused(state: &Signaling, e: SfuError) -> ServerMessage {
    let code = match e {
        SfuError::BadSdp(_) | SfuError::NoPendingOffer => ErrorCode::BadSdp,
        SfuError::BadCandidate(_) => ErrorCode::BadCandidate,
        SfuError::UnknownParticipant => ErrorCode::NotAdmitted,
        _ => ErrorCode::MediaFailed,
    };
    state.count_error(match code {
        ErrorCode::BadSdp => ErrorKind::BadSdp,
        ErrorCode::BadCandidate => ErrorKind::BadCandidate,
        _ => ErrorKind::Media,
    });
    let message: String = e.to_string().chars().take(200).collect();
    ServerMessage::error(code, message)
}

/// A refused key-exchange message, counted with the other refusals.
fn e2ee_refused(state: &Signaling, e: teleconsult_consultation::E2eeError) -> ServerMessage {
    state.count_error(match e {
        teleconsult_consultation::E2eeError::BadKey => ErrorKind::BadMessage,
        teleconsult_consultation::E2eeError::NotAdmitted => ErrorKind::NotAdmitted,
        teleconsult_consultation::E2eeError::UnknownParticipant => ErrorKind::UnknownParticipant,
        teleconsult_consultation::E2eeError::NotEndToEnd
        | teleconsult_consultation::E2eeError::Forbidden => ErrorKind::Forbidden,
    });
    wire::e2ee_refused(e)
}

/// A chat message or notice: delivered (echoed to the sender too) through the consultation;
/// only a refusal is answered here. The text is never logged.
fn chat(state: &Signaling, me: &Me, kind: ChatKind, text: &str) -> Option<ServerMessage> {
    state
        .consultations
        .send_chat(&me.consultation, &me.participant, kind, text)
        .err()
        .map(|e| {
            state.count_error(ErrorKind::Chat);
            wire::chat_refused(e)
        })
}

/// The `type` of a client message (the label of its latency histogram: a fixed set).
fn message_type(m: &ClientMessage) -> &'static str {
    match m {
        ClientMessage::Join { .. } => "join",
        ClientMessage::Answer { .. } => "answer",
        ClientMessage::IceCandidate { .. } => "ice_candidate",
        ClientMessage::Admit { .. } => "admit",
        ClientMessage::Reject { .. } => "reject",
        ClientMessage::Remove { .. } => "remove",
        ClientMessage::EndConsultation => "end_consultation",
        ClientMessage::Mute { .. } => "mute",
        ClientMessage::Leave => "leave",
        ClientMessage::Ping => "ping",
        ClientMessage::IceRestart => "ice_restart",
        ClientMessage::Chat { .. } => "chat",
        ClientMessage::Notice { .. } => "notice",
        ClientMessage::ScreenShare { .. } => "screen_share",
        ClientMessage::PrecallStart => "precall_start",
        ClientMessage::PrecallAnswer { .. } => "precall_answer",
        ClientMessage::PrecallStop => "precall_stop",
        ClientMessage::RecordingRequest { .. } => "recording_request",
        ClientMessage::RecordingConsent { .. } => "recording_consent",
        ClientMessage::RecordingStop => "recording_stop",
        ClientMessage::VideoSize { .. } => "video_size",
        ClientMessage::E2eePublicKey { .. } => "e2ee_public_key",
        ClientMessage::E2eeKey { .. } => "e2ee_key",
    }
}

/// A recording request or answer: its effects reach everyone through the consultation; only a
/// refusal is answered here.
fn recording(
    state: &Signaling,
    result: Result<(), teleconsult_consultation::RecordingError>,
) -> Option<ServerMessage> {
    result.err().map(|e| {
        state.count_error(ErrorKind::Recording);
        wire::recording_refused(e)
    })
}

/// Handle one request of a joined participant; returns the direct reply, if any.
async fn on_message(state: &Signaling, me: &Me, msg: ClientMessage) -> Option<ServerMessage> {
    let svc = &state.consultations;
    let (consultation, participant) = (&me.consultation, &me.participant);
    let result = match msg {
        ClientMessage::Ping => return Some(ServerMessage::Pong),
        ClientMessage::Join { .. } => {
            state.count_error(ErrorKind::AlreadyJoined);
            return Some(ServerMessage::error(
                ErrorCode::AlreadyJoined,
                "already joined",
            ));
        }
        ClientMessage::Leave => unreachable!("handled by the session loop"),
        // Handled by the session loop, which owns the test's media session.
        ClientMessage::PrecallStart
        | ClientMessage::PrecallAnswer { .. }
        | ClientMessage::PrecallStop => return None,
        ClientMessage::Admit { participant: t } => svc.admit(consultation, participant, t.as_str()),
        ClientMessage::Reject { participant: t } => {
            svc.reject(consultation, participant, t.as_str())
        }
        ClientMessage::Remove { participant: t } => {
            svc.remove(consultation, participant, t.as_str())
        }
        ClientMessage::EndConsultation => svc.end(consultation, participant),
        ClientMessage::Mute { kind, muted } => svc.set_mute(consultation, participant, kind, muted),
        ClientMessage::Chat { text } => return chat(state, me, ChatKind::Chat, &text),
        ClientMessage::Notice { text } => return chat(state, me, ChatKind::Notice, &text),
        ClientMessage::ScreenShare { active } => {
            svc.set_screen_share(consultation, participant, active)
        }
        ClientMessage::RecordingRequest { language } => {
            let language = language.as_deref().unwrap_or("en");
            return recording(
                state,
                svc.request_recording(consultation, participant, language),
            );
        }
        ClientMessage::RecordingConsent {
            recording: id,
            accept,
            text_version,
            language,
        } => {
            return recording(
                state,
                svc.answer_recording(
                    consultation,
                    participant,
                    &id,
                    accept,
                    &text_version,
                    &language,
                ),
            );
        }
        ClientMessage::RecordingStop => {
            return recording(state, svc.stop_recording(consultation, participant));
        }
        // Key exchange (end_to_end): relayed between participants in the call; the keys are
        // never logged (they are public or wrapped, but there is nothing to learn from them).
        ClientMessage::E2eePublicKey { key } => {
            return svc
                .publish_e2ee_key(consultation, participant, &key)
                .err()
                .map(|e| e2ee_refused(state, e));
        }
        ClientMessage::E2eeKey {
            participant: to,
            epoch,
            key,
        } => {
            return svc
                .send_e2ee_key(consultation, participant, to.as_str(), epoch, &key)
                .err()
                .map(|e| e2ee_refused(state, e));
        }
        ClientMessage::Answer { sdp } => {
            if let Err(e) = svc.require_admitted(consultation, participant) {
                return Some(refused(state, e));
            }
            return state
                .sfu
                .apply_answer(participant.as_str(), sdp)
                .await
                .err()
                .map(|e| sfu_refused(state, e));
        }
        ClientMessage::VideoSize {
            track,
            width: _,
            height,
        } => {
            if let Err(e) = svc.require_admitted(consultation, participant) {
                return Some(refused(state, e));
            }
            if track.is_empty() || track.len() > crate::protocol::MAX_TRACK_ID_LEN {
                state.count_error(ErrorKind::BadMessage);
                return Some(ServerMessage::error(
                    ErrorCode::BadMessage,
                    "video_size: track must be 1 to 128 characters",
                ));
            }
            return state
                .sfu
                .set_video_size(participant.as_str(), track, height)
                .await
                .err()
                .map(|e| sfu_refused(state, e));
        }
        ClientMessage::IceRestart => {
            if let Err(e) = svc.require_admitted(consultation, participant) {
                return Some(refused(state, e));
            }
            return state
                .sfu
                .restart_ice(participant.as_str())
                .await
                .err()
                .map(|e| sfu_refused(state, e));
        }
        ClientMessage::IceCandidate { candidate } => {
            if let Err(e) = svc.require_admitted(consultation, participant) {
                return Some(refused(state, e));
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
            return state
                .sfu
                .add_remote_candidate(participant.as_str(), candidate)
                .await
                .err()
                .map(|e| sfu_refused(state, e));
        }
    };
    result.err().map(|e| refused(state, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_index_their_own_counter() {
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
        }
        let counters = ErrorCounters::default();
        counters.increment(ErrorKind::BadToken);
        counters.increment(ErrorKind::BadToken);
        counters.increment(ErrorKind::AlreadyJoined);
        let snapshot: Vec<_> = counters.snapshot().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            snapshot,
            vec![(ErrorKind::BadToken, 2), (ErrorKind::AlreadyJoined, 1)]
        );
        let mut names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            ErrorKind::ALL.len(),
            "label values are distinct"
        );
    }
}
