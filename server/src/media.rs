//! The SFU as the consultation service's [`MediaPlane`]: starting a participant's session, and
//! a small task per session carrying what the SFU reports (offers, published tracks, failures)
//! straight into the consultation — not through the participant's socket task, so a slow client
//! never delays what the others are told.

use teleconsult_consultation::{
    MediaFailure, MediaKind, MediaPlane, MediaSession, ParticipantId, TrackId, TrackSource,
};
use teleconsult_sfu::{Kind, Sfu, SfuEvent, Source};

pub struct SfuMedia {
    sfu: Sfu,
}

impl SfuMedia {
    pub fn new(sfu: Sfu) -> SfuMedia {
        SfuMedia { sfu }
    }
}

fn source(s: Source) -> TrackSource {
    match s {
        Source::Microphone => TrackSource::Microphone,
        Source::Camera => TrackSource::Camera,
        Source::Screen => TrackSource::Screen,
    }
}

fn kind(k: Kind) -> MediaKind {
    match k {
        Kind::Audio => MediaKind::Audio,
        Kind::Video => MediaKind::Video,
    }
}

impl MediaPlane for SfuMedia {
    fn start(&self, session: MediaSession) {
        let sfu = self.sfu.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(teleconsult_sfu::EVENT_QUEUE);
            if let Err(e) = sfu
                .add_participant(
                    session.consultation.as_str(),
                    session.participant.as_str(),
                    tx,
                )
                .await
            {
                tracing::warn!(consultation = %session.consultation, participant = %session.participant, error = %e, "could not start media");
                session.failed(MediaFailure::Setup);
                return;
            }
            // The connection may have closed while the session was being created: its stop
            // came before there was anything to stop.
            if !session.is_current() {
                sfu.remove_participant(session.participant.as_str());
                return;
            }
            // Ends when the SFU closes the session (its sender is dropped).
            while let Some(event) = rx.recv().await {
                match event {
                    SfuEvent::Offer(sdp) => session.offer(sdp),
                    SfuEvent::TrackPublished {
                        track_id,
                        kind: k,
                        source: s,
                    } => session.track_published(TrackId::from(track_id), kind(k), source(s)),
                    SfuEvent::TrackUnpublished { track_id } => {
                        session.track_unpublished(&TrackId::from(track_id))
                    }
                    SfuEvent::Connected => {
                        tracing::debug!(participant = %session.participant, "media connected")
                    }
                    SfuEvent::Failed => session.failed(MediaFailure::Connection),
                }
            }
        });
    }

    fn stop(&self, participant: &ParticipantId) {
        self.sfu.remove_participant(participant.as_str());
    }
}
