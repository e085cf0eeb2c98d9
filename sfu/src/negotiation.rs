//! The offer/answer state machine of one participant's session, as plain values.
//!
//! The SFU always offers; the client always answers. The rule it keeps: **the transceivers never
//! change in `have-local-offer`**, so an answer always matches the offer it answers.
//!
//! ```text
//!            offer made                    answer applied
//!   Stable ─────────────▶ OfferOutstanding ──────────────▶ Stable
//!     ▲  changes applied     │ changes deferred (in order),   │ deferred changes applied,
//!     └──── at once          │ `renegotiate` set              │ then one new offer if any
//!                            ▼                                ▼ came in meanwhile
//! ```
//!
//! A change (subscribe, unsubscribe) asks [`Negotiation::change`]: in `Stable` it comes straight
//! back to be applied; with an offer outstanding it is kept, and [`Negotiation::answered`] hands
//! every kept change back, in order, once the answer is in, together with whether one more offer
//! is due. `C` is whatever a change is to the caller; this module never looks inside.
//!
//! Offers are numbered ([`Generation`]): a change applied now goes into
//! [`Negotiation::next_offer`], and the client knows of it once that offer's answer is applied
//! ([`Negotiation::knows`]). Nothing is forwarded on a subscription before then: a client given
//! packets of an SSRC no offer has declared yet may attach them to another receiver.

/// Where the session's offer/answer exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No offer outstanding: transceivers may change, an offer may be made.
    Stable,
    /// Our offer waits for the client's answer.
    OfferOutstanding,
}

/// The client answered while no offer was outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no offer is waiting for an answer")]
pub struct NoPendingOffer;

/// The number of an offer in one session, from 1; 0 stands for "none yet".
pub type Generation = u64;

/// One participant's negotiation state.
#[derive(Debug)]
pub struct Negotiation<C> {
    state: State,
    /// The latest offer made.
    offered: Generation,
    /// The latest offer whose answer was applied.
    answered: Generation,
    /// An offer was wanted while one was outstanding.
    renegotiate: bool,
    /// Changes that arrived while an offer was outstanding, in arrival order.
    deferred: Vec<C>,
}

impl<C> Default for Negotiation<C> {
    fn default() -> Self {
        Negotiation {
            state: State::Stable,
            offered: 0,
            answered: 0,
            renegotiate: false,
            deferred: Vec::new(),
        }
    }
}

/// What applying an answer leaves to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Answered<C> {
    /// Changes held back during the exchange: apply them now, in this order.
    pub deferred: Vec<C>,
    /// Make one new offer once they are applied.
    pub offer_again: bool,
}

impl<C> Negotiation<C> {
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether an offer waits for its answer.
    pub fn offer_outstanding(&self) -> bool {
        self.state == State::OfferOutstanding
    }

    /// The offer a change applied now is part of (changes are applied only in `Stable`, or
    /// right after an answer: always before the next offer).
    pub fn next_offer(&self) -> Generation {
        self.offered + 1
    }

    /// The latest offer whose answer was applied (0: none yet).
    pub fn answered_offer(&self) -> Generation {
        self.answered
    }

    /// Whether the client has answered the offer `declared_in` (or a later one), i.e. knows
    /// what that offer declared.
    pub fn knows(&self, declared_in: Generation) -> bool {
        declared_in <= self.answered
    }

    /// Whether an offer was asked for while one was outstanding.
    pub fn renegotiate(&self) -> bool {
        self.renegotiate
    }

    /// A change to the transceivers: `Some(change)` to apply now, or `None` when it was kept for
    /// after the answer (and a new offer is then due).
    #[must_use]
    pub fn change(&mut self, change: C) -> Option<C> {
        match self.state {
            State::Stable => Some(change),
            State::OfferOutstanding => {
                self.deferred.push(change);
                self.renegotiate = true;
                None
            }
        }
    }

    /// The caller wants to offer: `true` if it may now (then it creates the offer and calls
    /// [`Negotiation::offered`]); `false` if an offer is outstanding, in which case one more
    /// offer follows the answer.
    #[must_use]
    pub fn want_offer(&mut self) -> bool {
        match self.state {
            State::Stable => true,
            State::OfferOutstanding => {
                self.renegotiate = true;
                false
            }
        }
    }

    /// An offer was made and sent: wait for its answer.
    pub fn offered(&mut self) {
        self.state = State::OfferOutstanding;
        self.offered += 1;
        self.renegotiate = false;
    }

    /// Check that an answer is expected, before applying it. A failed application leaves the
    /// offer outstanding (the client may answer again).
    pub fn expect_answer(&self) -> Result<(), NoPendingOffer> {
        match self.state {
            State::OfferOutstanding => Ok(()),
            State::Stable => Err(NoPendingOffer),
        }
    }

    /// The answer was applied: back to stable, with the changes held back meanwhile.
    pub fn answered(&mut self) -> Result<Answered<C>, NoPendingOffer> {
        self.expect_answer()?;
        self.state = State::Stable;
        self.answered = self.offered;
        Ok(Answered {
            deferred: std::mem::take(&mut self.deferred),
            offer_again: std::mem::take(&mut self.renegotiate),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_stable_changes_apply_at_once_and_an_offer_may_be_made() {
        let mut n = Negotiation::default();
        assert_eq!(n.state(), State::Stable);
        assert_eq!(n.change("subscribe a"), Some("subscribe a"));
        assert!(n.want_offer());
        assert!(!n.renegotiate());
        n.offered();
        assert!(n.offer_outstanding());
    }

    #[test]
    fn changes_while_an_offer_is_outstanding_wait_for_the_answer_in_order() {
        let mut n = Negotiation::default();
        assert!(n.want_offer());
        n.offered();
        assert_eq!(n.change(1), None);
        assert_eq!(n.change(2), None);
        assert_eq!(n.change(3), None);
        assert!(n.renegotiate());
        assert_eq!(
            n.answered(),
            Ok(Answered {
                deferred: vec![1, 2, 3],
                offer_again: true
            })
        );
        assert_eq!(n.state(), State::Stable);
        // Nothing is handed back twice.
        assert!(n.want_offer());
        n.offered();
        assert_eq!(
            n.answered(),
            Ok(Answered {
                deferred: vec![],
                offer_again: false
            })
        );
    }

    #[test]
    fn an_answer_without_changes_needs_no_new_offer() {
        let mut n: Negotiation<u8> = Negotiation::default();
        assert!(n.want_offer());
        n.offered();
        let a = n.answered().unwrap();
        assert!(a.deferred.is_empty());
        assert!(!a.offer_again);
    }

    #[test]
    fn an_offer_wanted_while_one_is_outstanding_follows_the_answer_once() {
        let mut n: Negotiation<u8> = Negotiation::default();
        assert!(n.want_offer());
        n.offered();
        assert!(!n.want_offer());
        assert!(!n.want_offer());
        let a = n.answered().unwrap();
        assert!(a.offer_again);
        assert!(n.want_offer());
        n.offered();
        assert!(!n.renegotiate(), "making the offer consumes the request");
    }

    #[test]
    fn an_answer_with_no_offer_outstanding_is_refused_and_changes_nothing() {
        let mut n: Negotiation<u8> = Negotiation::default();
        assert_eq!(n.expect_answer(), Err(NoPendingOffer));
        assert_eq!(n.answered(), Err(NoPendingOffer));
        assert_eq!(n.state(), State::Stable);
        // A second answer to one offer is refused too.
        assert!(n.want_offer());
        n.offered();
        assert!(n.answered().is_ok());
        assert_eq!(n.answered(), Err(NoPendingOffer));
    }

    #[test]
    fn a_failed_answer_leaves_the_offer_outstanding_and_the_changes_kept() {
        let mut n = Negotiation::default();
        assert!(n.want_offer());
        n.offered();
        assert_eq!(n.change('x'), None);
        // The caller checks, fails to apply the SDP, and does not call `answered`.
        assert_eq!(n.expect_answer(), Ok(()));
        assert!(n.offer_outstanding());
        assert_eq!(n.change('y'), None);
        assert_eq!(
            n.answered(),
            Ok(Answered {
                deferred: vec!['x', 'y'],
                offer_again: true
            })
        );
    }

    #[test]
    fn a_change_is_known_only_once_the_answer_to_the_offer_carrying_it_is_applied() {
        let mut n = Negotiation::default();
        assert_eq!(n.answered_offer(), 0);
        // Applied in stable: goes into offer 1.
        assert_eq!(n.change("a"), Some("a"));
        let a = n.next_offer();
        assert_eq!(a, 1);
        assert!(!n.knows(a));
        assert!(n.want_offer());
        n.offered();
        assert!(!n.knows(a), "offered is not answered");
        // A failed answer (checked, never applied) teaches the client nothing.
        assert_eq!(n.expect_answer(), Ok(()));
        assert!(!n.knows(a));
        // A change held back meanwhile is applied after the answer: it goes into offer 2.
        assert_eq!(n.change("b"), None);
        let answered = n.answered().unwrap();
        assert!(n.knows(a));
        assert_eq!(n.answered_offer(), 1);
        assert_eq!(answered.deferred, vec!["b"]);
        let b = n.next_offer();
        assert_eq!(b, 2);
        assert!(
            !n.knows(b),
            "the answer to offer 1 does not declare offer 2's changes"
        );
        assert!(n.want_offer());
        n.offered();
        assert!(!n.knows(b));
        n.answered().unwrap();
        assert!(n.knows(a) && n.knows(b));
        // Nothing is known of an offer not yet made.
        assert!(!n.knows(n.next_offer()));
    }

    /// The scenario of the old flaky browser test, with plain values: three participants are in
    /// stable; a fourth arrives while participant 3's first offer is outstanding. Participant 3
    /// must end up subscribed to the fourth's tracks after exactly one more offer.
    #[test]
    fn a_newcomer_during_an_outstanding_offer_is_subscribed_after_one_more_offer() {
        let mut p3: Negotiation<&str> = Negotiation::default();
        let mut subscribed = vec![];
        let mut offers = 0;
        // Participant 3 joins: subscribed to 1 and 2, one offer.
        for c in ["p1 audio", "p1 video", "p2 audio", "p2 video"] {
            subscribed.extend(p3.change(c));
        }
        if p3.want_offer() {
            p3.offered();
            offers += 1;
        }
        // Participant 4 publishes before participant 3 answered.
        for c in ["p4 audio", "p4 video"] {
            subscribed.extend(p3.change(c));
            if p3.want_offer() {
                p3.offered();
                offers += 1;
            }
        }
        assert_eq!(offers, 1, "no offer while one is outstanding");
        assert_eq!(subscribed.len(), 4);
        let mut answers = 0;
        while p3.offer_outstanding() {
            answers += 1;
            let a = p3.answered().unwrap();
            subscribed.extend(a.deferred);
            if a.offer_again && p3.want_offer() {
                p3.offered();
                offers += 1;
            }
        }
        assert_eq!(offers, 2);
        assert_eq!(answers, offers);
        assert_eq!(p3.state(), State::Stable);
        assert_eq!(subscribed[4..], ["p4 audio", "p4 video"]);
    }
}
