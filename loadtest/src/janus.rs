//! A client of Janus's VideoRoom plugin over its WebSocket transport (subprotocol
//! `janus-protocol`), so the load generator can run the same scenario against Janus beside our
//! server. Benchmark only: nothing in CI talks to Janus.
//!
//! Janus API in brief: `create` a session, `attach` the VideoRoom plugin to get a handle, then send
//! plugin `message`s on that handle. Synchronous plugin requests (`create` a room) answer with
//! `success`; asynchronous ones (`join`, `publish`, `start`) answer `ack` and later an `event` with
//! the same transaction. Events without a transaction (`webrtcup`, `media`, `hangup`) name their
//! handle in `sender`. A session dies after 60 s of silence, so a keepalive is sent every 15 s.
//!
//! Media: a publisher offers (our [`SyntheticPeer::offer`]) and Janus answers; a subscriber is
//! offered every feed it asks for in one multistream handle, and answers with
//! [`SyntheticPeer::answer`]. Janus refuses subscribers ("No such feed") until the publisher's
//! `webrtcup`, so [`JanusParticipant::publish`] returns only after it.

use crate::peer::SyntheticPeer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// How long one Janus request may take before we give up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Keepalive period (Janus's default session timeout is 60 s).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Errors talking to Janus.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("janus error {code}: {reason}")]
    Janus { code: i64, reason: String },
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("unexpected reply from janus: {0}")]
    Protocol(String),
    #[error("media peer: {0}")]
    Peer(String),
    #[error("connection to janus closed")]
    Closed,
}

/// Waiters by transaction: their reply channel, and whether an `ack` is the whole answer
/// (`trickle`, `keepalive`) rather than a promise of an event.
type Pending = Arc<Mutex<HashMap<String, (oneshot::Sender<Value>, bool)>>>;
type Handles = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>;

/// One Janus session on its own WebSocket (as one browser tab has).
pub struct JanusSession {
    outbox: mpsc::UnboundedSender<Value>,
    pending: Pending,
    handles: Handles,
    next: AtomicU64,
    id: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Janus reports plugin errors inside `plugindata.data` (`error_code`, `error`) and core errors
/// as `{"janus":"error","error":{code,reason}}`.
fn check(reply: &Value) -> Result<(), JanusError> {
    if reply["janus"] == "error" {
        return Err(JanusError::Janus {
            code: reply["error"]["code"].as_i64().unwrap_or(0),
            reason: reply["error"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        });
    }
    let data = &reply["plugindata"]["data"];
    if let Some(code) = data["error_code"].as_i64() {
        return Err(JanusError::Janus {
            code,
            reason: data["error"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(())
}

impl JanusSession {
    /// Connect to Janus's WebSocket transport (e.g. `ws://127.0.0.1:8188`) and create a session.
    pub async fn connect(url: &str) -> Result<JanusSession, JanusError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| JanusError::WebSocket(e.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| JanusError::WebSocket(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
        let pending: Pending = Arc::default();
        let handles: Handles = Arc::default();
        let writer = tokio::spawn(async move {
            while let Some(v) = out_rx.recv().await {
                if sink
                    .send(Message::Text(v.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let reader = {
            let (pending, handles) = (pending.clone(), handles.clone());
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    // An `ack` only says an asynchronous request was queued: wait for its event
                    // (unless the request expects nothing more).
                    if let Some(t) = v["transaction"].as_str() {
                        let mut pending = pending.lock().unwrap();
                        let done = match pending.get(t) {
                            Some((_, ack_is_answer)) => *ack_is_answer || v["janus"] != "ack",
                            None => false,
                        };
                        if done && let Some((tx, _)) = pending.remove(t) {
                            let _ = tx.send(v);
                            continue;
                        }
                    }
                    if let Some(sender) = v["sender"].as_u64()
                        && let Some(h) = handles.lock().unwrap().get(&sender)
                    {
                        let _ = h.send(v);
                    }
                }
                // Wake every waiter: their oneshot senders drop here.
                pending.lock().unwrap().clear();
                handles.lock().unwrap().clear();
            })
        };
        let mut session = JanusSession {
            outbox: out_tx,
            pending,
            handles,
            next: AtomicU64::new(1),
            id: 0,
            tasks: vec![writer, reader],
        };
        let reply = session.request(json!({"janus": "create"})).await?;
        session.id = reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Protocol(format!("create: {reply}")))?;
        let keepalive = {
            let (outbox, id) = (session.outbox.clone(), session.id);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(KEEPALIVE);
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    n += 1;
                    let msg = json!({"janus": "keepalive", "session_id": id,
                                     "transaction": format!("ka{n}")});
                    if outbox.send(msg).is_err() {
                        break;
                    }
                }
            })
        };
        session.tasks.push(keepalive);
        Ok(session)
    }

    /// The Janus session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Send `msg` with a fresh transaction; return the first reply to it that is not an `ack`.
    async fn request(&self, msg: Value) -> Result<Value, JanusError> {
        self.exchange(msg, false).await
    }

    /// Send `msg` with a fresh transaction; return its first reply (`ack_is_answer`: an `ack`
    /// counts).
    async fn exchange(&self, mut msg: Value, ack_is_answer: bool) -> Result<Value, JanusError> {
        let transaction = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        msg["transaction"] = json!(transaction);
        if self.id != 0 {
            msg["session_id"] = json!(self.id);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap()
            .insert(transaction.clone(), (tx, ack_is_answer));
        self.outbox.send(msg).map_err(|_| JanusError::Closed)?;
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => return Err(JanusError::Closed),
            Err(_) => {
                self.pending.lock().unwrap().remove(&transaction);
                return Err(JanusError::Timeout("a janus reply"));
            }
        };
        check(&reply)?;
        Ok(reply)
    }

    /// Attach the VideoRoom plugin: a new handle (one per PeerConnection in Janus).
    pub async fn attach(&self) -> Result<JanusHandle, JanusError> {
        let reply = self
            .request(json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}))
            .await?;
        let id = reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Protocol(format!("attach: {reply}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.handles.lock().unwrap().insert(id, tx);
        Ok(JanusHandle {
            id,
            events: tokio::sync::Mutex::new(rx),
        })
    }

    /// Send a plugin message on `handle`; returns the plugin's data and the JSEP, if any.
    pub async fn message(
        &self,
        handle: &JanusHandle,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>), JanusError> {
        let mut msg = json!({"janus": "message", "handle_id": handle.id, "body": body});
        if let Some(jsep) = jsep {
            msg["jsep"] = jsep;
        }
        let reply = self.request(msg).await?;
        let data = reply["plugindata"]["data"].clone();
        let jsep = reply.get("jsep").cloned();
        Ok((data, jsep))
    }

    /// Destroy the session (Janus tears down its handles and PeerConnections).
    pub async fn destroy(&self) -> Result<(), JanusError> {
        self.request(json!({"janus": "destroy"})).await.map(|_| ())
    }
}

/// One attached VideoRoom handle.
pub struct JanusHandle {
    pub id: u64,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
}

impl JanusHandle {
    /// Wait for an event on this handle (without transaction) whose `janus` field is `kind`.
    pub async fn wait_for(
        &self,
        kind: &'static str,
        timeout: Duration,
    ) -> Result<Value, JanusError> {
        let mut events = self.events.lock().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(v)) if v["janus"] == kind => return Ok(v),
                Ok(Some(v)) if v["janus"] == "hangup" => {
                    return Err(JanusError::Protocol(format!("hangup: {}", v["reason"])));
                }
                Ok(Some(_)) => continue,
                Ok(None) => return Err(JanusError::Closed),
                Err(_) => return Err(JanusError::Timeout(kind)),
            }
        }
    }
}

/// Create a VideoRoom room (not permanent, no recording) able to hold `publishers` publishers.
pub async fn create_room(
    session: &JanusSession,
    handle: &JanusHandle,
    room: u64,
    publishers: u32,
) -> Result<(), JanusError> {
    let (data, _) = session
        .message(
            handle,
            json!({
                "request": "create",
                "room": room,
                "permanent": false,
                "is_private": true,
                "publishers": publishers,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "bitrate": 0,
                "record": false,
                "notify_joining": false,
            }),
            None,
        )
        .await?;
    if data["videoroom"] != "created" {
        return Err(JanusError::Protocol(format!("create room: {data}")));
    }
    Ok(())
}

/// A participant in a Janus room: one session, a publisher handle and (once subscribed) a
/// subscriber handle, each with its own synthetic peer, as Janus's own JavaScript client does.
pub struct JanusParticipant {
    pub session: JanusSession,
    publisher: JanusHandle,
    /// Our feed id in the room (what others subscribe to).
    pub feed: u64,
    /// Publishes our audio and video.
    pub publisher_peer: Arc<SyntheticPeer>,
    subscriber: Option<JanusHandle>,
    /// Receives every feed we subscribed to.
    pub subscriber_peer: Option<Arc<SyntheticPeer>>,
}

impl JanusParticipant {
    /// Connect, join `room` as a publisher, publish audio and video, and wait for Janus's
    /// `webrtcup` (after which others may subscribe to [`JanusParticipant::feed`]).
    pub async fn publish(url: &str, room: u64, display: &str) -> Result<Self, JanusError> {
        let session = JanusSession::connect(url).await?;
        let publisher = session.attach().await?;
        let (data, _) = session
            .message(
                &publisher,
                json!({"request": "join", "ptype": "publisher", "room": room, "display": display}),
                None,
            )
            .await?;
        let feed = data["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Protocol(format!("join: {data}")))?;
        let peer = Arc::new(
            SyntheticPeer::new()
                .await
                .map_err(|e| JanusError::Peer(e.to_string()))?,
        );
        let offer = peer
            .offer()
            .await
            .map_err(|e| JanusError::Peer(e.to_string()))?;
        let (data, jsep) = session
            .message(
                &publisher,
                json!({"request": "publish", "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": offer})),
            )
            .await?;
        let answer = jsep
            .and_then(|j| j["sdp"].as_str().map(str::to_owned))
            .ok_or_else(|| JanusError::Protocol(format!("publish without answer: {data}")))?;
        peer.apply_answer(answer)
            .await
            .map_err(|e| JanusError::Peer(e.to_string()))?;
        // Our candidates were in the offer.
        session
            .exchange(
                json!({"janus": "trickle", "handle_id": publisher.id,
                       "candidate": {"completed": true}}),
                true,
            )
            .await?;
        publisher
            .wait_for("webrtcup", Duration::from_secs(15))
            .await?;
        Ok(JanusParticipant {
            session,
            publisher,
            feed,
            publisher_peer: peer,
            subscriber: None,
            subscriber_peer: None,
        })
    }

    /// Subscribe to `feeds` (publishers' feed ids) in one multistream subscriber handle; returns
    /// once Janus has started sending and our peer is connected.
    pub async fn subscribe(&mut self, room: u64, feeds: &[u64]) -> Result<(), JanusError> {
        let handle = self.session.attach().await?;
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let (data, jsep) = self
            .session
            .message(
                &handle,
                json!({"request": "join", "ptype": "subscriber", "room": room,
                       "streams": streams, "use_msid": false}),
                None,
            )
            .await?;
        let offer = jsep
            .and_then(|j| j["sdp"].as_str().map(str::to_owned))
            .ok_or_else(|| JanusError::Protocol(format!("subscribe without offer: {data}")))?;
        let peer = Arc::new(
            SyntheticPeer::new()
                .await
                .map_err(|e| JanusError::Peer(e.to_string()))?,
        );
        let answer = peer
            .answer(offer)
            .await
            .map_err(|e| JanusError::Peer(e.to_string()))?;
        let (data, _) = self
            .session
            .message(
                &handle,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer})),
            )
            .await?;
        if data["started"] != "ok" {
            return Err(JanusError::Protocol(format!("start: {data}")));
        }
        handle.wait_for("webrtcup", Duration::from_secs(15)).await?;
        self.subscriber = Some(handle);
        self.subscriber_peer = Some(peer);
        Ok(())
    }

    /// Packets received on the subscriber peer, summed over every track: (audio, video, corrupt).
    pub fn received_totals(&self) -> (u64, u64, u64) {
        let Some(peer) = &self.subscriber_peer else {
            return (0, 0, 0);
        };
        peer.received().values().fold((0, 0, 0), |(a, v, c), r| {
            (a + r.audio_packets, v + r.video_packets, c + r.corrupt)
        })
    }

    /// Leave: destroy the session and close both peers.
    pub async fn leave(&self) {
        let _ = self.session.destroy().await;
        self.publisher_peer.close().await;
        if let Some(p) = &self.subscriber_peer {
            p.close().await;
        }
        let _ = &self.publisher;
    }
}
