//! Any bytes on an ICE-TCP connection, cut into pieces as TCP may deliver them: the RFC 4571
//! decoder and the first-message check never panic, and every frame it yields fits what it
//! was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use teleconsult_sfu::tcp::{FrameDecoder, first_message};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let mut first = FrameDecoder::new();
    first.extend(rest);
    let _ = first_message(&mut first);
    let mut d = FrameDecoder::new();
    let mut given = 0usize;
    for piece in rest.chunks(step) {
        d.extend(piece);
        given += piece.len();
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= given);
                    d.consume();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
