//! The pre-call connection test (issue 12): a media session of the SFU's own for one waiting
//! (or admitted) participant, in a consultation of its own so nobody subscribes to it and it
//! subscribes to nobody. The browser connects to it exactly as it will for the call — the same
//! UDP and TCP ports, ICE, DTLS — and reads from its own statistics what matters: which
//! transports reach the media port, the round trip, and (from the transport-wide feedback the
//! SFU sends every publisher) an estimate of its upstream. It lasts at most [`LIMIT`]; one per
//! connection at a time.

use std::time::Duration;
use teleconsult_consultation::ParticipantId;
use teleconsult_sfu::{Sfu, SfuError, SfuEvent};
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

/// How long a test's media session may live.
pub const LIMIT: Duration = Duration::from_secs(20);

pub struct Probe {
    /// The SFU's participant id of the test session (never the call's own).
    id: String,
    events: Receiver<SfuEvent>,
    until: Instant,
}

impl Probe {
    /// A test session for `participant`; its offer follows on [`next_event`].
    pub async fn start(sfu: &Sfu, participant: &ParticipantId) -> Result<Probe, SfuError> {
        // `~` is in no id we issue, so these never meet a real participant or consultation.
        let id = format!("{participant}~precall");
        let (tx, events) = tokio::sync::mpsc::channel(teleconsult_sfu::EVENT_QUEUE);
        sfu.add_participant(&format!("precall~{participant}"), &id, tx)
            .await?;
        Ok(Probe {
            id,
            events,
            until: Instant::now() + LIMIT,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn stop(self, sfu: &Sfu) {
        sfu.remove_participant(&self.id);
    }
}

/// The next event of the running test session; `None` when it closed or its time is up. Never
/// completes without a test (for `select!`).
pub async fn next_event(probe: &mut Option<Probe>) -> Option<SfuEvent> {
    let Some(p) = probe.as_mut() else {
        return std::future::pending().await;
    };
    tokio::select! {
        e = p.events.recv() => e,
        _ = tokio::time::sleep_until(p.until) => None,
    }
}
