//! Chat in a consultation: the rules for one message (text only, length, rate), the message as
//! the participants see it, and who receives what ([`crate::rules`] delivers it):
//!
//! - **chat**: from an admitted participant, to everyone in the call (the sender included, so
//!   their client shows it with its id and time); never to the waiting room.
//! - **notice**: from a practitioner in the call, one way to the waiting room ("running 10
//!   minutes late"); echoed to the practitioners in the call.
//!
//! Both are recorded ([`ChatRecorder`]: the documents crate's archive seals them at rest) and
//! kept in memory for the live call, so someone admitted later (or a reloaded tab) is sent the
//! chat so far. Texts are health data: never logged (`Debug` shows ids only).

use crate::ids::{ConsultationId, ParticipantId};
use crate::model::Role;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Chat or notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    Chat,
    Notice,
}

impl ChatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Chat => "chat",
            ChatKind::Notice => "notice",
        }
    }
}

/// One message, as delivered and recorded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Random, unique.
    pub id: String,
    /// Order within this live consultation.
    pub seq: u64,
    pub kind: ChatKind,
    /// Participant id of the sender.
    pub from: ParticipantId,
    pub role: Role,
    /// Health data: shown, never logged.
    pub display_name: String,
    /// Milliseconds since the Unix epoch (UTC).
    pub at: i64,
    /// Health data: plain text (clients render it as text, never as HTML).
    pub text: String,
}

impl std::fmt::Debug for ChatMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatMessage")
            .field("id", &self.id)
            .field("seq", &self.seq)
            .field("kind", &self.kind)
            .field("from", &self.from)
            .field("chars", &self.text.chars().count())
            .finish_non_exhaustive()
    }
}

/// Why a message was refused (the connection stays).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ChatError {
    #[error("the message is empty")]
    Empty,
    #[error("the message is too long")]
    TooLong,
    #[error("too many messages: wait a moment")]
    RateLimited,
    #[error("you have not been admitted yet")]
    NotAdmitted,
    #[error("only a practitioner in the call may send notices")]
    Forbidden,
}

impl ChatError {
    /// Stable code (the client translates it).
    pub fn code(self) -> &'static str {
        match self {
            ChatError::Empty => "chat_empty",
            ChatError::TooLong => "chat_too_long",
            ChatError::RateLimited => "chat_rate_limited",
            ChatError::NotAdmitted => "not_admitted",
            ChatError::Forbidden => "forbidden",
        }
    }
}

/// Chat limits (from `[consultation]`).
#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    /// Longest message, in characters (Unicode scalar values), after trimming.
    pub max_chars: usize,
    /// Messages a participant may send at once.
    pub burst: u32,
    /// ... refilled at one per this interval.
    pub refill: Duration,
    /// Messages kept in memory for the live call (sent to those admitted later).
    pub history: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            max_chars: 2000,
            burst: 5,
            refill: Duration::from_secs(2),
            history: 500,
        }
    }
}

/// Checks and normalises a message: trimmed; control characters other than line feed and tab
/// removed (carriage returns become nothing, so CRLF is LF); not empty; at most `max_chars`.
pub fn clean_text(text: &str, max_chars: usize) -> Result<String, ChatError> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect();
    if cleaned.is_empty() {
        return Err(ChatError::Empty);
    }
    if cleaned.chars().count() > max_chars {
        return Err(ChatError::TooLong);
    }
    Ok(cleaned)
}

/// A token bucket per participant, on time passed in.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    tokens: u32,
    last: Option<Instant>,
}

impl RateLimiter {
    pub fn new(burst: u32) -> RateLimiter {
        RateLimiter {
            tokens: burst,
            last: None,
        }
    }

    /// Take one token at `now`, if there is one.
    pub fn take(&mut self, limits: &ChatLimits, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last);
            let refill = limits.refill.max(Duration::from_millis(1));
            let earned = (elapsed.as_millis() / refill.as_millis()) as u32;
            if earned > 0 {
                self.tokens = self.tokens.saturating_add(earned).min(limits.burst);
                // Keep the remainder: the next token is earned on schedule.
                self.last = Some(last + refill * earned);
            }
        } else {
            self.last = Some(now);
        }
        if self.tokens >= limits.burst {
            // A full bucket does not bank time.
            self.last = Some(now);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Who records chat at rest (the documents crate's archive implements it). Called with the
/// consultation locked: implementations queue and return at once.
pub trait ChatRecorder: Send + Sync {
    fn record(&self, consultation: &ConsultationId, message: &ChatMessage);
}

/// A fresh random message id.
pub fn new_message_id() -> String {
    let bytes: [u8; 12] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_stripped_of_controls_and_limited() {
        assert_eq!(
            clean_text("  hello\r\nthere\t!  ", 100).unwrap(),
            "hello\nthere\t!"
        );
        assert_eq!(clean_text("a\u{0}b\u{1b}[31mc", 100).unwrap(), "ab[31mc");
        assert_eq!(clean_text("   \n\t ", 100), Err(ChatError::Empty));
        assert_eq!(clean_text("\u{7}", 100), Err(ChatError::Empty));
        // Characters, not bytes: five two-byte letters fit in five.
        assert_eq!(clean_text("ééééé", 5).unwrap(), "ééééé");
        assert_eq!(clean_text("éééééé", 5), Err(ChatError::TooLong));
        // Markup is text like any other: kept as typed, the client never renders it.
        assert_eq!(
            clean_text("<img src=x onerror=alert(1)>", 100).unwrap(),
            "<img src=x onerror=alert(1)>"
        );
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_interval() {
        let limits = ChatLimits {
            burst: 3,
            refill: Duration::from_secs(2),
            ..ChatLimits::default()
        };
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limits.burst);
        assert!(r.take(&limits, t0));
        assert!(r.take(&limits, t0));
        assert!(r.take(&limits, t0));
        assert!(!r.take(&limits, t0), "burst spent");
        assert!(!r.take(&limits, t0 + Duration::from_millis(1999)));
        assert!(r.take(&limits, t0 + Duration::from_millis(2000)));
        assert!(!r.take(&limits, t0 + Duration::from_millis(2500)));
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(r.take(&limits, later));
        }
        assert!(!r.take(&limits, later));
    }

    #[test]
    fn debug_never_shows_the_text_or_the_name() {
        let m = ChatMessage {
            id: "msg_1".into(),
            seq: 1,
            kind: ChatKind::Chat,
            from: "p1".into(),
            role: Role::Patient,
            display_name: "Erika Mustermann".into(),
            at: 0,
            text: "my blood pressure is 180".into(),
        };
        let d = format!("{m:?}");
        assert!(!d.contains("Erika") && !d.contains("blood"), "{d}");
    }
}
