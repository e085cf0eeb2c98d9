//! Any datagram on the media port: telling STUN from the rest and peeking a binding request's
//! local ufrag (what routes a datagram from an unknown address) never panics, and a ufrag found
//! lies inside the datagram.
#![no_main]
use libfuzzer_sys::fuzz_target;
use teleconsult_sfu::stun;

fuzz_target!(|data: &[u8]| {
    let _ = stun::is_stun(data);
    if let Some(ufrag) = stun::binding_request_local_ufrag(data) {
        assert!(ufrag.len() <= data.len());
    }
});
