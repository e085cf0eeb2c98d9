//! Password hashing: Argon2id (RFC 9106) through the `argon2` crate, PHC strings at rest.
//!
//! Parameters: [`MEMORY_KIB`] = 19 MiB, [`ITERATIONS`] = 2, [`PARALLELISM`] = 1 — the first of
//! OWASP's recommended Argon2id configurations. One hash costs a few tens of milliseconds on the
//! project's 2-core machines (`docs/benchmarks.md`), which bounds both a login's latency and
//! what an online guesser can make the server spend. The parameters travel inside each PHC
//! string, so raising them later keeps old hashes verifiable.
//!
//! Verification takes the same path whether or not the account exists: an unknown email is
//! verified against [`dummy_hash`], a hash of a random password with the same parameters.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::OnceLock;

/// Memory cost in KiB.
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;

/// The configured hasher.
fn argon2() -> Argon2<'static> {
    // The constants are valid Argon2 parameters (checked by the unit test below).
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .unwrap_or_else(|_| Params::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// A fresh salted Argon2id hash of `password`, as a PHC string. CPU-bound: call it off the
/// async runtime's threads.
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (the comparison of the outputs is in
/// constant time, inside `argon2`). A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password with the current parameters, made once per process: what an
/// unknown email is verified against, so it costs the same as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        // Hashing a 32-character password with valid parameters does not fail; if it ever did,
        // a PHC string that never verifies still costs a parse, which is the best left.
        hash(&password).unwrap_or_else(|_| "$argon2id$invalid".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_valid_and_recorded_in_the_hash() {
        assert!(Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).is_ok());
        let h = hash("correct horse battery staple").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    }

    #[test]
    fn verify_accepts_only_the_password() {
        let h = hash("correct horse battery staple").expect("hash");
        assert!(verify("correct horse battery staple", &h));
        assert!(!verify("correct horse battery stapl", &h));
        assert!(!verify("", &h));
        assert!(!verify("correct horse battery staple", "not a phc string"));
        // Two hashes of one password differ (fresh salts).
        assert_ne!(h, hash("correct horse battery staple").expect("hash"));
    }

    #[test]
    fn the_dummy_hash_is_a_real_hash_that_matches_nothing_plausible() {
        let d = dummy_hash();
        assert!(d.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{d}");
        assert!(PasswordHash::new(d).is_ok());
        assert!(!verify("", d));
        assert!(!verify("password", d));
        assert_eq!(d, dummy_hash(), "made once");
    }
}
