//! Any text as a join token or an invitation link token: verification refuses or accepts,
//! never panics; nothing but a token signed with the key verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use teleconsult_consultation::invitation::{Keyring, verify_link};
use teleconsult_consultation::token;

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-0123456789";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = token::verify(SECRET, text, 1_800_000_000);
    let ring = Keyring::new(("k1", SECRET), &[]).expect("a valid keyring");
    let _ = verify_link(&ring, text, 1_800_000_000);
});
