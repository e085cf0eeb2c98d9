//! Time-limited TURN credentials, minted per participant for coturn's `use-auth-secret` (the
//! "TURN REST API" scheme of draft-uberti-behave-turn-rest, which coturn implements): username
//! `<expiry unix seconds>:<participant id>`, password `base64(HMAC-SHA1(secret, username))`.
//! coturn recomputes the password from the shared secret and refuses an expired username, so the
//! server never stores credentials and a leaked one dies on its own.
//!
//! The credential is a secret: it travels only in the participant's own `joined` message and is
//! never logged (`IceServer`'s `Debug` hides it).

use crate::config::{ExposeSecret, TurnConfig};
use base64::Engine;
use hmac::{Hmac, Mac};
use std::sync::Arc;
use teleconsult_signaling::protocol::{IceServer, ParticipantId};
use teleconsult_signaling::session::IceServerSource;

/// The username and password for `participant`, valid until `now_unix + ttl_secs`.
pub fn credential(
    secret: &[u8],
    participant: &str,
    now_unix: u64,
    ttl_secs: u64,
) -> (String, String) {
    let username = format!("{}:{participant}", now_unix.saturating_add(ttl_secs));
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// What the signalling sessions call for each participant's `joined`: one `IceServer` with the
/// configured URLs and a fresh credential, or nothing when no TURN server is configured.
pub fn source(config: &TurnConfig) -> IceServerSource {
    if config.urls.is_empty() {
        return Arc::new(|_: &ParticipantId| Vec::new());
    }
    let urls = config.urls.clone();
    let secret = config.secret.clone();
    let ttl = config.ttl_secs;
    Arc::new(move |participant: &ParticipantId| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (username, password) = credential(
            secret.expose_secret().as_bytes(),
            participant.as_str(),
            now,
            ttl,
        );
        vec![IceServer {
            urls: urls.clone(),
            username: Some(username),
            credential: Some(password),
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked against an independent HMAC-SHA1 computation (Python's `hmac`, below).
    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let (u, p) = credential(b"north", "p_alice", 1_700_000_000, 3600);
        assert_eq!(u, "1700003600:p_alice");
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"north",
        //   b"1700003600:p_alice",hashlib.sha1).digest()).decode())'
        assert_eq!(p, "+6P5RDoJDPHPOTcWoUhfih8/CsA=");
        // Another participant, another secret or another expiry: another password.
        assert_ne!(credential(b"north", "p_bob", 1_700_000_000, 3600).1, p);
        assert_ne!(credential(b"south", "p_alice", 1_700_000_000, 3600).1, p);
        assert_ne!(credential(b"north", "p_alice", 1_700_000_001, 3600).1, p);
    }

    #[test]
    fn no_urls_no_servers_and_debug_hides_the_credential() {
        let none = source(&TurnConfig::default());
        assert!(none(&ParticipantId::from("p_x")).is_empty());
        let config = TurnConfig {
            urls: vec!["turns:turn.example.org:443?transport=tcp".into()],
            secret: "s".repeat(40).into(),
            ttl_secs: 600,
        };
        let servers = source(&config)(&ParticipantId::from("p_x"));
        assert_eq!(servers.len(), 1);
        let s = &servers[0];
        let user = s.username.as_deref().unwrap();
        let (expiry, who) = user.split_once(':').unwrap();
        assert_eq!(who, "p_x");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expiry: u64 = expiry.parse().unwrap();
        assert!((now + 590..=now + 610).contains(&expiry));
        let password = s.credential.clone().unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains(&password), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}
