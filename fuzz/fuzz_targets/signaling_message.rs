//! Any bytes as a signalling message: the strict parser must refuse or accept, never panic;
//! what it accepts serialises and parses back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use teleconsult_signaling::protocol::ClientMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<ClientMessage>(data) {
        let again = serde_json::to_string(&m).expect("an accepted message serialises");
        serde_json::from_str::<ClientMessage>(&again).expect("and parses back");
    }
});
