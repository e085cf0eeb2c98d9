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

use crate::peer::{PeerOptions, SyntheticPeer};
use crate::target::{JoinSpec, Session, Target, TargetError};
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
/// subscriber handle, each with its own synthetic peer, as Janus's own JavaScript client does
/// (VideoRoom cannot publish and subscribe on one PeerConnection).
pub struct JanusParticipant {
    pub session: JanusSession,
    publisher: Option<JanusHandle>,
    /// Our feed id in the room (what others subscribe to), once publishing.
    pub feed: Option<u64>,
    /// Publishes our audio and video (when publishing).
    pub publisher_peer: Option<Arc<SyntheticPeer>>,
    subscriber: Option<JanusHandle>,
    /// Receives every feed we subscribed to. Janus labels each received track with the stream
    /// id of its feed id, renumbers sequence numbers from 1 and timestamps from 0.
    pub subscriber_peer: Arc<SyntheticPeer>,
}

fn peer_error(e: crate::peer::BoxError) -> JanusError {
    JanusError::Peer(e.to_string())
}

fn sdp_of(jsep: Option<Value>, what: &str, data: &Value) -> Result<String, JanusError> {
    jsep.and_then(|j| j["sdp"].as_str().map(str::to_owned))
        .ok_or_else(|| JanusError::Protocol(format!("{what} without SDP: {data}")))
}

impl JanusParticipant {
    /// Connect to Janus (a new session); `subscriber_peer` will receive what we subscribe to.
    pub async fn connect(
        url: &str,
        subscriber_peer: Arc<SyntheticPeer>,
    ) -> Result<Self, JanusError> {
        Ok(JanusParticipant {
            session: JanusSession::connect(url).await?,
            publisher: None,
            feed: None,
            publisher_peer: None,
            subscriber: None,
            subscriber_peer,
        })
    }

    /// Join `room` as a publisher and publish `peer`'s audio and video; returns after Janus's
    /// `webrtcup` (only then may others subscribe to [`JanusParticipant::feed`]).
    pub async fn publish(
        &mut self,
        room: u64,
        display: &str,
        peer: Arc<SyntheticPeer>,
    ) -> Result<u64, JanusError> {
        let handle = self.session.attach().await?;
        let (data, _) = self
            .session
            .message(
                &handle,
                json!({"request": "join", "ptype": "publisher", "room": room, "display": display}),
                None,
            )
            .await?;
        let feed = data["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Protocol(format!("join: {data}")))?;
        let offer = peer.offer().await.map_err(peer_error)?;
        let (data, jsep) = self
            .session
            .message(
                &handle,
                json!({"request": "publish", "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": offer})),
            )
            .await?;
        peer.apply_answer(sdp_of(jsep, "publish", &data)?)
            .await
            .map_err(peer_error)?;
        // Our candidates were in the offer.
        self.session
            .exchange(
                json!({"janus": "trickle", "handle_id": handle.id,
                       "candidate": {"completed": true}}),
                true,
            )
            .await?;
        handle.wait_for("webrtcup", Duration::from_secs(15)).await?;
        self.publisher = Some(handle);
        self.feed = Some(feed);
        self.publisher_peer = Some(peer);
        Ok(feed)
    }

    /// Subscribe to `feeds` (publishers' feed ids) on our one multistream subscriber handle: the
    /// first call joins as a subscriber, later ones add streams (Janus re-offers each time).
    pub async fn subscribe(&mut self, room: u64, feeds: &[u64]) -> Result<(), JanusError> {
        if feeds.is_empty() {
            return Ok(());
        }
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let first = self.subscriber.is_none();
        if first {
            self.subscriber = Some(self.session.attach().await?);
        }
        let Some(handle) = &self.subscriber else {
            return Err(JanusError::Protocol("no subscriber handle".into()));
        };
        // `use_msid`: each received track carries its feed id as stream id.
        let body = if first {
            json!({"request": "join", "ptype": "subscriber", "room": room,
                   "streams": streams, "use_msid": true})
        } else {
            json!({"request": "update", "subscribe": streams})
        };
        let (data, jsep) = self.session.message(handle, body, None).await?;
        let offer = sdp_of(jsep, "subscribe", &data)?;
        let answer = self
            .subscriber_peer
            .answer(offer)
            .await
            .map_err(peer_error)?;
        let (data, _) = self
            .session
            .message(
                handle,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer})),
            )
            .await?;
        if data["started"] != "ok" {
            return Err(JanusError::Protocol(format!("start: {data}")));
        }
        if first {
            handle.wait_for("webrtcup", Duration::from_secs(15)).await?;
        }
        Ok(())
    }

    /// Packets received on the subscriber peer, summed over every track: (audio, video, corrupt)
    /// (synthetic-payload mode).
    pub fn received_totals(&self) -> (u64, u64, u64) {
        self.subscriber_peer
            .received()
            .values()
            .fold((0, 0, 0), |(a, v, c), r| {
                (a + r.audio_packets, v + r.video_packets, c + r.corrupt)
            })
    }

    /// Leave: destroy the session and close both peers.
    pub async fn leave(&self) {
        let _ = self.session.destroy().await;
        if let Some(p) = &self.publisher_peer {
            p.close().await;
        }
        self.subscriber_peer.close().await;
    }
}

/// Janus's VideoRoom as a load-test [`Target`]: one room per consultation (created by its first
/// participant), every participant subscribes to every other publisher's feed.
pub struct Janus {
    url: String,
    rooms: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Room>>>>,
}

#[derive(Default)]
struct Room {
    id: u64,
    members: Vec<Arc<tokio::sync::Mutex<JanusParticipant>>>,
    feeds: Vec<u64>,
}

impl Janus {
    /// Janus's WebSocket URL, e.g. `ws://127.0.0.1:8188`.
    pub fn new(url: impl Into<String>) -> Janus {
        Janus {
            url: url.into(),
            rooms: Mutex::default(),
        }
    }

    async fn join_room(
        &self,
        spec: &JoinSpec,
        options: PeerOptions,
    ) -> Result<JanusMember, JanusError> {
        let room = self
            .rooms
            .lock()
            .unwrap()
            .entry(spec.consultation.clone())
            .or_default()
            .clone();
        // One join at a time per room: each new feed is added to every earlier subscriber.
        let mut room = room.lock().await;
        let receiver = Arc::new(
            SyntheticPeer::with_options(PeerOptions {
                publish: false,
                measure: options.measure.clone(),
                ..PeerOptions::default()
            })
            .await
            .map_err(peer_error)?,
        );
        let mut me = JanusParticipant::connect(&self.url, receiver.clone()).await?;
        if room.id == 0 {
            let handle = me.session.attach().await?;
            let id = u64::from(rand::random::<u32>() | 1);
            create_room(&me.session, &handle, id, spec.capacity.max(2) as u32).await?;
            room.id = id;
        }
        let room_id = room.id;
        let (publisher, stream_id) = if spec.publish {
            let peer = Arc::new(
                SyntheticPeer::with_options(PeerOptions {
                    publish: true,
                    ..options
                })
                .await
                .map_err(peer_error)?,
            );
            let display = format!("p{}", spec.index);
            let feed = me.publish(room_id, &display, peer.clone()).await?;
            (Some(peer), feed.to_string())
        } else {
            (None, format!("subscriber-{}", me.session.id()))
        };
        let existing = room.feeds.clone();
        me.subscribe(room_id, &existing).await?;
        if let Some(feed) = me.feed {
            for other in &room.members {
                other.lock().await.subscribe(room_id, &[feed]).await?;
            }
            room.feeds.push(feed);
        }
        let me = Arc::new(tokio::sync::Mutex::new(me));
        room.members.push(me.clone());
        Ok(JanusMember {
            participant: me,
            stream_id,
            peer: publisher.unwrap_or_else(|| receiver.clone()),
            receiver,
        })
    }
}

/// One participant joined to Janus.
struct JanusMember {
    participant: Arc<tokio::sync::Mutex<JanusParticipant>>,
    stream_id: String,
    peer: Arc<SyntheticPeer>,
    receiver: Arc<SyntheticPeer>,
}

#[async_trait::async_trait]
impl Target for Janus {
    fn name(&self) -> &str {
        "janus"
    }

    async fn join(
        &self,
        spec: &JoinSpec,
        peer: PeerOptions,
    ) -> Result<Box<dyn Session>, TargetError> {
        match self.join_room(spec, peer).await {
            Ok(member) => Ok(Box::new(member)),
            Err(e) => Err(TargetError::Join(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl Session for JanusMember {
    fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn peer(&self) -> &Arc<SyntheticPeer> {
        &self.peer
    }

    fn receiver(&self) -> &Arc<SyntheticPeer> {
        &self.receiver
    }

    fn errors(&self) -> Vec<String> {
        Vec::new()
    }

    async fn leave(self: Box<Self>) {
        self.participant.lock().await.leave().await;
    }
}
