//! Any text as a client's SDP answer to a real-looking offer of ours: `sfu::answer::check`
//! refuses or accepts, never panics (it runs on `rtc`'s SDP parser). The input's first byte
//! picks whether it is the answer (even) or the offer (odd; the answer is then the seed).
#![no_main]
use libfuzzer_sys::fuzz_target;

const OFFER: &str = include_str!("../seeds/offer.sdp");
const ANSWER: &str = include_str!("../seeds/answer.sdp");

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if pick % 2 == 0 {
        let _ = teleconsult_sfu::answer::check(OFFER, text);
    } else {
        let _ = teleconsult_sfu::answer::check(text, ANSWER);
    }
});
