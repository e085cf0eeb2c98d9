//! What a client's answer must say before the media stack sees it.
//!
//! `rtc` accepts answers that can never work (one section for a three-section offer, a
//! fingerprint that is not one, an unknown hash algorithm): media then never starts and nobody
//! is told. And an answer it does refuse may already have changed its state, leaving the session
//! unable to take the genuine answer. So every answer is checked here first, against the offer
//! it answers, on `rtc`'s own parse of both: a refused answer never reaches the stack, and the
//! session stays as it was (the client may send a corrected answer).

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::sdp::description::common::Attribute;
use rtc::sdp::description::session::SessionDescription;

/// Why an answer was refused: a sentence for the client (no echo of its content).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer is not valid SDP")]
    Unparsable,
    #[error("the answer has {got} media sections; the offer has {want}")]
    SectionCount { got: usize, want: usize },
    #[error("media section {index} of the answer is not the offer's (kind or mid differ)")]
    SectionMismatch { index: usize },
    #[error("the answer has no DTLS fingerprint")]
    NoFingerprint,
    #[error("the answer's DTLS fingerprint is not a valid sha-1/224/256/384/512 digest")]
    BadFingerprint,
    #[error("the answer lacks valid ICE credentials (ice-ufrag 4-256, ice-pwd 22-256 characters)")]
    BadIceCredentials,
    #[error("the answer's DTLS role (a=setup) must be active or passive")]
    BadSetup,
}

/// Check `answer` against `offer` (both SDP text). `Ok` means the stack may be given it.
pub fn check(offer: &str, answer: &str) -> Result<(), AnswerError> {
    let offer = parse(offer, true)?;
    let answer = parse(answer, false)?;
    let (want, got) = (
        offer.media_descriptions.len(),
        answer.media_descriptions.len(),
    );
    if want != got {
        return Err(AnswerError::SectionCount { got, want });
    }
    for (index, (o, a)) in offer
        .media_descriptions
        .iter()
        .zip(&answer.media_descriptions)
        .enumerate()
    {
        let mid = |m: &[Attribute]| value(m, "mid").map(str::to_owned);
        if o.media_name.media != a.media_name.media || mid(&o.attributes) != mid(&a.attributes) {
            return Err(AnswerError::SectionMismatch { index });
        }
        // A rejected section (port 0) carries nothing, so it needs no keys of its own.
        if a.media_name.port.value == 0 {
            continue;
        }
        let fingerprint =
            value(&a.attributes, "fingerprint").or(value(&answer.attributes, "fingerprint"));
        fingerprint_ok(fingerprint.ok_or(AnswerError::NoFingerprint)?)?;
        let ufrag = value(&a.attributes, "ice-ufrag").or(value(&answer.attributes, "ice-ufrag"));
        let pwd = value(&a.attributes, "ice-pwd").or(value(&answer.attributes, "ice-pwd"));
        if !ice_ok(ufrag, 4) || !ice_ok(pwd, 22) {
            return Err(AnswerError::BadIceCredentials);
        }
        let setup = value(&a.attributes, "setup").or(value(&answer.attributes, "setup"));
        if setup.is_some_and(|s| !matches!(s, "active" | "passive")) {
            return Err(AnswerError::BadSetup);
        }
    }
    Ok(())
}

fn parse(sdp: &str, offer: bool) -> Result<SessionDescription, AnswerError> {
    let description = if offer {
        RTCSessionDescription::offer(sdp.to_owned())
    } else {
        RTCSessionDescription::answer(sdp.to_owned())
    };
    description
        .and_then(|d| d.unmarshal())
        .map_err(|_| AnswerError::Unparsable)
}

fn value<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_deref())
}

/// `<hash> <HH:HH:…>` with a known hash and as many octets as its digest has (RFC 8122).
fn fingerprint_ok(fingerprint: &str) -> Result<(), AnswerError> {
    let (hash, digest) = fingerprint
        .split_once(' ')
        .ok_or(AnswerError::BadFingerprint)?;
    let octets = match hash.to_ascii_lowercase().as_str() {
        "sha-1" => 20,
        "sha-224" => 28,
        "sha-256" => 32,
        "sha-384" => 48,
        "sha-512" => 64,
        _ => return Err(AnswerError::BadFingerprint),
    };
    let parts: Vec<&str> = digest.trim().split(':').collect();
    let hex = |p: &&str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit());
    if parts.len() == octets && parts.iter().all(hex) {
        Ok(())
    } else {
        Err(AnswerError::BadFingerprint)
    }
}

/// An ICE ufrag or password: `min`..=256 ice-chars (RFC 8839: ALPHA / DIGIT / "+" / "/").
fn ice_ok(v: Option<&str>, min: usize) -> bool {
    v.is_some_and(|v| {
        (min..=256).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    #[test]
    fn the_fuzzing_seeds_are_an_offer_and_an_answer_that_pass() {
        // fuzz/seeds: what the `sdp_answer` target mutates; they must be accepted as they are,
        // or the fuzzer would spend its time on the first refusal.
        let offer = include_str!("../../fuzz/seeds/offer.sdp");
        let answer = include_str!("../../fuzz/seeds/answer.sdp");
        assert_eq!(check(offer, answer), Ok(()));
        let one_section_short = answer.rsplit_once("m=video").unwrap().0;
        assert!(matches!(
            check(offer, one_section_short),
            Err(AnswerError::SectionCount { got: 2, want: 3 })
        ));
    }

    fn section(kind: &str, mid: &str, extra: &str) -> String {
        format!(
            "m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=rtpmap:96 {}\r\n{extra}",
            if kind == "audio" {
                "opus/48000/2"
            } else {
                "VP8/90000"
            }
        )
    }

    fn sdp(sections: &[String]) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{}",
            sections.concat()
        )
    }

    fn keys(fp: &str, ufrag: &str, pwd: &str, setup: &str) -> String {
        format!(
            "a=fingerprint:{fp}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=setup:{setup}\r\n"
        )
    }

    fn offer() -> String {
        let k = keys(FP, "ABCD", "abcdefghijklmnopqrstuvwx", "actpass");
        sdp(&[
            section("audio", "0", &k),
            section("video", "1", &k),
            section("video", "2", &k),
        ])
    }

    fn answer_with(k: &str) -> String {
        sdp(&[
            section("audio", "0", k),
            section("video", "1", k),
            section("video", "2", k),
        ])
    }

    fn good() -> String {
        keys(FP, "wxyz", "0123456789abcdefghij+/", "active")
    }

    #[test]
    fn an_answer_matching_its_offer_passes() {
        assert_eq!(check(&offer(), &answer_with(&good())), Ok(()));
        // Session-level keys count for every section.
        let at_session = format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{}{}",
            good(),
            [
                section("audio", "0", ""),
                section("video", "1", ""),
                section("video", "2", "")
            ]
            .concat()
        );
        assert_eq!(check(&offer(), &at_session), Ok(()));
    }

    #[test]
    fn answers_that_can_never_work_are_refused_with_the_reason() {
        let k = good();
        let one = sdp(&[section("audio", "0", &k)]);
        assert_eq!(
            check(&offer(), &one),
            Err(AnswerError::SectionCount { got: 1, want: 3 })
        );
        let swapped = sdp(&[
            section("video", "0", &k),
            section("audio", "1", &k),
            section("video", "2", &k),
        ]);
        assert_eq!(
            check(&offer(), &swapped),
            Err(AnswerError::SectionMismatch { index: 0 })
        );
        let other_mid = sdp(&[
            section("audio", "0", &k),
            section("video", "7", &k),
            section("video", "2", &k),
        ]);
        assert_eq!(
            check(&offer(), &other_mid),
            Err(AnswerError::SectionMismatch { index: 1 })
        );
        let no_fp = answer_with("a=ice-ufrag:wxyz\r\na=ice-pwd:0123456789abcdefghij+/\r\n");
        assert_eq!(check(&offer(), &no_fp), Err(AnswerError::NoFingerprint));
        for fp in [
            "sha-256 zz",
            "md5 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89",
            "sha-256 AB:CD",
            "sha-256",
            "sha-1 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:0G",
        ] {
            let bad = answer_with(&keys(fp, "wxyz", "0123456789abcdefghij+/", "active"));
            assert_eq!(
                check(&offer(), &bad),
                Err(AnswerError::BadFingerprint),
                "{fp}"
            );
        }
        for (ufrag, pwd) in [("abc", "0123456789abcdefghij+/"), ("wxyz", "short")] {
            let bad = answer_with(&keys(FP, ufrag, pwd, "active"));
            assert_eq!(check(&offer(), &bad), Err(AnswerError::BadIceCredentials));
        }
        let actpass = answer_with(&keys(FP, "wxyz", "0123456789abcdefghij+/", "actpass"));
        assert_eq!(check(&offer(), &actpass), Err(AnswerError::BadSetup));
        assert_eq!(
            check(&offer(), "\u{feff}<script>"),
            Err(AnswerError::Unparsable)
        );
    }

    #[test]
    fn a_rejected_section_needs_no_keys() {
        let k = good();
        let rejected = sdp(&[
            section("audio", "0", &k),
            section("video", "1", &k),
            "m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n".to_owned(),
        ]);
        assert_eq!(check(&offer(), &rejected), Ok(()));
    }
}
