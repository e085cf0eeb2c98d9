//! A synthetic participant: joins through the WebSocket signalling like a browser, answers every
//! offer with its [`SyntheticPeer`], and keeps every other server message for inspection.

use crate::peer::{BoxError, PeerOptions, SyntheticPeer};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use teleconsult::protocol::{ClientMessage, PROTOCOL_VERSION, ServerMessage};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How the server closed the socket (code, reason), once it has.
pub type Closed = Arc<std::sync::Mutex<Option<(u16, String)>>>;

/// How [`Participant::join_with`] joins.
#[derive(Clone, Default)]
pub struct JoinOptions {
    pub peer: PeerOptions,
    /// Admit everyone who appears in the waiting list (for a practitioner).
    pub auto_admit: bool,
    /// The seat secret of an earlier connection of this "tab" (resumes its seat).
    pub seat_secret: Option<String>,
}

pub struct Participant {
    outbox: mpsc::UnboundedSender<ClientMessage>,
    inbox: mpsc::UnboundedReceiver<ServerMessage>,
    /// Every server message so far (including those already taken from the inbox).
    pub history: Arc<std::sync::Mutex<Vec<ServerMessage>>>,
    pub closed: Closed,
    pub peer: Arc<SyntheticPeer>,
    pub id: String,
    /// The seat secret the server gave this connection in `joined`, if any.
    pub seat_secret: Option<String>,
    /// The WebSocket URL that served the join: the one asked, or where a cluster node's
    /// `redirect` pointed.
    pub served_by: String,
    /// The socket's reader and writer tasks (aborted by `drop_connection`).
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Participant {
    /// Connect to `ws_url` (e.g. `ws://127.0.0.1:PORT/ws`) and join with `token`. Returns once
    /// `joined` arrives.
    pub async fn join(ws_url: &str, token: &str) -> Result<Participant, BoxError> {
        Self::join_with(ws_url, token, JoinOptions::default()).await
    }

    /// [`Participant::join`] with a peer built from `options.peer`; with `options.auto_admit`
    /// (a practitioner) every participant appearing in the waiting list is admitted at once.
    /// A `redirect` (cluster mode) is followed, up to three times.
    pub async fn join_with(
        ws_url: &str,
        token: &str,
        options: JoinOptions,
    ) -> Result<Participant, BoxError> {
        let mut url = ws_url.to_string();
        for _ in 0..3 {
            match Self::join_once(&url, token, options.clone()).await {
                Ok(Ok(p)) => return Ok(p),
                Ok(Err(redirect)) => url = redirect,
                Err(e) => return Err(e),
            }
        }
        Err("too many redirects".into())
    }

    /// One connection: the participant, or where a `redirect` pointed.
    async fn join_once(
        ws_url: &str,
        token: &str,
        options: JoinOptions,
    ) -> Result<Result<Participant, String>, BoxError> {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
        let (mut sink, mut stream) = ws.split();
        let peer = Arc::new(SyntheticPeer::with_options(options.peer).await?);
        let auto_admit = options.auto_admit;
        let seat_secret = options.seat_secret.clone();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
        let (in_tx, in_rx) = mpsc::unbounded_channel::<ServerMessage>();
        let history = Arc::new(std::sync::Mutex::new(Vec::new()));
        let closed: Closed = Arc::default();
        out_tx.send(ClientMessage::Join {
            token: token.to_string(),
            protocol: Some(PROTOCOL_VERSION),
            consultation: None,
            seat_secret: seat_secret.clone(),
        })?;
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let text = serde_json::to_string(&m).expect("client messages serialise");
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let reader = {
            let (peer, out_tx, history, closed) = (
                peer.clone(),
                out_tx.clone(),
                history.clone(),
                closed.clone(),
            );
            tokio::spawn(async move {
                let mut admitted = std::collections::HashSet::new();
                while let Some(Ok(msg)) = stream.next().await {
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Close(frame) => {
                            *closed.lock().unwrap() = Some(
                                frame
                                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                                    .unwrap_or((1005, String::new())),
                            );
                            break;
                        }
                        _ => continue,
                    };
                    let Ok(m) = serde_json::from_str::<ServerMessage>(&text) else {
                        continue;
                    };
                    history.lock().unwrap().push(m.clone());
                    if auto_admit && let ServerMessage::WaitingList { participants } = &m {
                        for p in participants {
                            if admitted.insert(p.id.clone()) {
                                let _ = out_tx.send(ClientMessage::Admit {
                                    participant: p.id.clone(),
                                });
                            }
                        }
                    }
                    if let ServerMessage::Offer { sdp } = &m {
                        match peer.answer(sdp.clone()).await {
                            Ok(answer) => {
                                let _ = out_tx.send(ClientMessage::Answer { sdp: answer });
                            }
                            Err(e) => tracing::warn!(error = %e, "could not answer"),
                        }
                    }
                    let _ = in_tx.send(m);
                }
                closed.lock().unwrap().get_or_insert((1006, String::new()));
            })
        };
        let mut p = Participant {
            outbox: out_tx,
            inbox: in_rx,
            history,
            closed,
            peer,
            id: String::new(),
            seat_secret,
            served_by: ws_url.to_string(),
            tasks: vec![writer, reader],
        };
        let joined = p
            .expect(Duration::from_secs(10), |m| {
                matches!(
                    m,
                    ServerMessage::Joined { .. } | ServerMessage::Redirect { .. }
                )
            })
            .await?;
        if let ServerMessage::Redirect { url, .. } = joined {
            p.drop_connection().await;
            return Ok(Err(url));
        }
        if let ServerMessage::Joined {
            you, seat_secret, ..
        } = joined
        {
            p.id = you.id.into_string();
            if seat_secret.is_some() {
                p.seat_secret = seat_secret;
            }
        }
        Ok(Ok(p))
    }

    pub fn send(&self, msg: ClientMessage) {
        let _ = self.outbox.send(msg);
    }

    /// Wait for the next server message matching `pred` (others are skipped).
    pub async fn expect(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&ServerMessage) -> bool,
    ) -> Result<ServerMessage, BoxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(m)) if pred(&m) => return Ok(m),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("connection closed".into()),
                Err(_) => return Err("timed out waiting for a message".into()),
            }
        }
    }

    /// Drop the WebSocket without a close frame, as a phone losing its network does.
    pub async fn drop_connection(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.peer.close().await;
    }

    /// `error` messages the server sent so far, as `code: message`.
    pub fn errors(&self) -> Vec<String> {
        self.history
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Error { code, message } => Some(format!("{code:?}: {message}")),
                _ => None,
            })
            .collect()
    }

    /// Close code once the server has closed the socket.
    pub fn close_code(&self) -> Option<(u16, String)> {
        self.closed.lock().unwrap().clone()
    }
}
