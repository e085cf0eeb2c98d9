//! What the consultation tells one participant's connection: domain events, never wire messages.
//! The signalling crate maps each to a protocol message or a close code, in one place.

use crate::chat::ChatMessage;
use crate::ids::{ConsultationId, ParticipantId, TrackId};
use crate::invitation::SeatSecret;
use crate::model::{
    DocumentInfo, LeftReason, MediaKind, ParticipantInfo, ParticipantState, TrackInfo,
};
use teleconsult_store::Policy;

/// An event for one participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsultationEvent {
    /// You joined: who you are, and (if admitted) who else is in the call.
    Joined {
        consultation: ConsultationId,
        you: ParticipantInfo,
        /// A fresh secret for this tab's seat (to present when it comes back), if one was issued.
        seat_secret: Option<SeatSecret>,
        participants: Vec<ParticipantInfo>,
        /// What may happen to the consultation's media (shown before entering the call).
        policy: Policy,
    },
    /// You were admitted from the waiting room.
    Admitted {
        participants: Vec<ParticipantInfo>,
    },
    /// Practitioners only: who is waiting.
    WaitingList {
        participants: Vec<ParticipantInfo>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantState {
        participant: ParticipantId,
        state: ParticipantState,
    },
    ParticipantLeft {
        participant: ParticipantId,
        reason: LeftReason,
    },
    TrackPublished {
        participant: ParticipantId,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant: ParticipantId,
        track: TrackId,
    },
    Mute {
        participant: ParticipantId,
        kind: MediaKind,
        muted: bool,
    },
    DocumentAdded {
        document: DocumentInfo,
    },
    DocumentDeleted {
        document: DocumentInfo,
    },
    /// `participant` started or stopped sharing their screen (in-call participants only).
    ScreenShare {
        participant: ParticipantId,
        active: bool,
    },
    /// A chat message in the call (in-call participants only).
    Chat {
        message: ChatMessage,
    },
    /// A practitioner's notice to the waiting room.
    Notice {
        message: ChatMessage,
    },
    /// The chat so far (on entering the call), or the notices so far (on entering the waiting
    /// room).
    ChatHistory {
        messages: Vec<ChatMessage>,
    },
    /// A practitioner asks to record: accept or decline (the consent text of `text_version`,
    /// by language).
    RecordingRequested {
        recording: String,
        text_version: String,
        texts: Vec<(String, String)>,
    },
    /// What is being recorded now: the running recording (if any) and whose media it takes
    /// (everyone whose consent stands). Sent to everyone in the call at every change.
    RecordingState {
        recording: Option<String>,
        recorded: Vec<ParticipantId>,
    },
    /// (end_to_end) `participant`, in the call, published its ECDH public key.
    E2eePublicKey {
        participant: ParticipantId,
        key: String,
    },
    /// (end_to_end) A practitioner sent you the consultation's media key of `epoch`, wrapped
    /// for your public key (the server cannot unwrap it).
    E2eeKey {
        from: ParticipantId,
        epoch: u32,
        key: String,
    },
    /// The practitioner refused you (followed by [`Disconnect::Rejected`]).
    Rejected,
    /// The practitioner removed you (followed by [`Disconnect::Removed`]).
    Removed,
    /// The practitioner ended the consultation (followed by [`Disconnect::Ended`]).
    Ended,
    /// The media plane's offer for your session; your answer goes back to the media plane.
    MediaOffer {
        sdp: String,
    },
    /// Your media session failed.
    MediaFailed(MediaFailure),
}

/// How a media session failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaFailure {
    /// It could not be created.
    Setup,
    /// It was created, then failed (ICE timeout, DTLS failure).
    Connection,
}

/// Why the consultation closes a participant's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The same tab (or the same practitioner account) joined again from another connection.
    Replaced,
    /// The practitioner admitted a second device for this seat.
    MovedToAnotherDevice,
    Rejected,
    Removed,
    Ended,
    /// This server no longer serves the consultation (in a cluster, another node took it over,
    /// or this one could not renew its lease): reconnect through the load balancer.
    Moved,
}

/// What is delivered, in order, to a participant's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    Event(ConsultationEvent),
    /// Close the connection (after the events before it); the service already recorded why.
    Close(Disconnect),
}

/// A connection's inbox of [`Outbound`]s, given to the service at join: a bounded queue
/// (`signaling.outbox_messages`). Sending never blocks nor waits: when the queue is full (the
/// client does not read its socket), the message is refused and the connection is marked
/// overflowed; its session then closes it (`slow_consumer`), and the consultation carries on
/// as for any dropped connection. Nothing is ever buffered without limit for a slow client.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: tokio::sync::mpsc::Sender<Outbound>,
    overflow: std::sync::Arc<Overflow>,
}

/// The receiving end of an [`Outbox`] (the connection's session).
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: tokio::sync::mpsc::Receiver<Outbound>,
    overflow: std::sync::Arc<Overflow>,
}

/// Set once, when an [`Outbox`] refused a message because its queue was full.
#[derive(Debug, Default)]
pub struct Overflow {
    happened: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Overflow {
    /// Whether the outbox overflowed.
    pub fn happened(&self) -> bool {
        self.happened.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves when (or at once if) the outbox overflowed. One waiter (the session).
    pub async fn wait(&self) {
        while !self.happened() {
            self.notify.notified().await;
        }
    }
}

/// A new outbox holding at most `capacity` (at least 1) undelivered messages.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let overflow = std::sync::Arc::new(Overflow::default());
    (
        Outbox {
            tx,
            overflow: overflow.clone(),
        },
        OutboxReceiver { rx, overflow },
    )
}

/// Why [`Outbox::send`] did not queue a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue is full: the connection is marked overflowed and will be closed.
    #[error("outbox full")]
    Full,
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
}

impl Outbox {
    /// Queue `message` without waiting; on a full queue, mark the connection overflowed.
    pub fn send(&self, message: Outbound) -> Result<(), SendError> {
        use tokio::sync::mpsc::error::TrySendError;
        match self.tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.overflow
                    .happened
                    .store(true, std::sync::atomic::Ordering::Release);
                // A stored permit: the session wakes even if it is not waiting yet.
                self.overflow.notify.notify_one();
                Err(SendError::Full)
            }
            Err(TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }
}

impl OutboxReceiver {
    /// The next message, in order; `None` once every [`Outbox`] is dropped and the queue is
    /// empty.
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.rx.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.rx.try_recv().ok()
    }

    /// The overflow mark of this outbox (to wait on while receiving).
    pub fn overflow(&self) -> std::sync::Arc<Overflow> {
        self.overflow.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_outbox_refuses_marks_and_wakes_the_session() {
        let (tx, mut rx) = outbox(2);
        let overflow = rx.overflow();
        let ev = || Outbound::Event(ConsultationEvent::Rejected);
        assert_eq!(tx.send(ev()), Ok(()));
        assert_eq!(tx.send(ev()), Ok(()));
        assert!(!overflow.happened());
        // The third does not wait: it is refused, and the mark is set.
        assert_eq!(tx.send(ev()), Err(SendError::Full));
        assert!(overflow.happened());
        // The waiter wakes (the permit was stored before it waited).
        tokio::time::timeout(std::time::Duration::from_secs(5), overflow.wait())
            .await
            .expect("overflow seen");
        // What was queued before is still delivered, in order; nothing more.
        assert_eq!(rx.try_recv(), Some(ev()));
        assert_eq!(rx.try_recv(), Some(ev()));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.send(ev()), Err(SendError::Closed));
    }
}
