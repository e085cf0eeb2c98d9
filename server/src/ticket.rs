//! Join tickets (cluster mode): how a practitioner's *session* join survives a `redirect`.
//!
//! The session cookie is bound to the host that set it, so the owner's node, on another host,
//! does not see it. The node that checked the session mints a ticket and sends it in the
//! `redirect` message (never in the URL); the client presents it as `join.token` on the owner.
//! A ticket names the account, its organisation, the display name and the consultation, expires
//! [`TICKET_TTL_MS`] after minting, and is redeemed once (its id inserted into the store:
//! exactly one redemption wins). The owner still checks that the account owns the consultation
//! (`Authenticator::practitioner`), exactly as for a session join.
//!
//! Format: `tkt1.{base64url(json)}.{base64url(HMAC-SHA256)}`, keyed with a key derived from
//! `auth.signing_secret` (shared by every node) for this purpose only.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The prefix that tells a ticket from a link token.
pub const PREFIX: &str = "tkt1.";

/// How long a ticket is valid: a redirect is followed at once.
pub const TICKET_TTL_MS: i64 = 30_000;

/// What a ticket says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    pub jti: String,
    pub account: String,
    pub organisation: String,
    pub display_name: String,
    pub consultation: String,
    /// Milliseconds since the Unix epoch.
    pub exp: i64,
}

/// Why a ticket was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("not a join ticket")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
}

/// The ticket key: HMAC-SHA256(signing secret, purpose label) — one key, one purpose.
pub fn key(signing_secret: &[u8]) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_secret).expect("HMAC takes any key length");
    mac.update(b"teleconsult join ticket v1");
    mac.finalize().into_bytes().into()
}

fn mac(key: &[u8; 32], body: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(PREFIX.as_bytes());
    mac.update(body.as_bytes());
    mac
}

/// Mint a ticket (`exp` set by the caller).
pub fn mint(key: &[u8; 32], ticket: &Ticket) -> String {
    let json = serde_json::to_vec(ticket).expect("a ticket serialises");
    let body = URL_SAFE_NO_PAD.encode(json);
    let sig = URL_SAFE_NO_PAD.encode(mac(key, &body).finalize().into_bytes());
    format!("{PREFIX}{body}.{sig}")
}

/// Verify a ticket's signature and expiry at `now` (ms). Its single use is the store's part.
pub fn verify(key: &[u8; 32], token: &str, now: i64) -> Result<Ticket, TicketError> {
    let rest = token.strip_prefix(PREFIX).ok_or(TicketError::Malformed)?;
    if rest.len() > 4096 {
        return Err(TicketError::Malformed);
    }
    let (body, sig) = rest.split_once('.').ok_or(TicketError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TicketError::Malformed)?;
    mac(key, body)
        .verify_slice(&sig)
        .map_err(|_| TicketError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TicketError::Malformed)?;
    let ticket: Ticket = serde_json::from_slice(&json).map_err(|_| TicketError::Malformed)?;
    if ticket.exp <= now {
        return Err(TicketError::Expired);
    }
    Ok(ticket)
}

/// A fresh random ticket id.
pub fn new_jti() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(exp: i64) -> Ticket {
        Ticket {
            jti: new_jti(),
            account: "acct_1".into(),
            organisation: "org_1".into(),
            display_name: "Dr One".into(),
            consultation: "c-1".into(),
            exp,
        }
    }

    #[test]
    fn a_ticket_verifies_until_it_expires_and_not_with_another_key_or_edited() {
        let k = key(b"the cluster's signing secret, 32 bytes or more");
        let t = ticket(10_000);
        let s = mint(&k, &t);
        assert!(s.starts_with(PREFIX));
        assert_eq!(verify(&k, &s, 9_999), Ok(t.clone()));
        assert_eq!(verify(&k, &s, 10_000), Err(TicketError::Expired));
        let other = key(b"another deployment's signing secret, 32 bytes");
        assert_eq!(verify(&other, &s, 0), Err(TicketError::BadSignature));
        // The ticket key is derived, not the signing secret itself.
        let secret = b"the cluster's signing secret, 32 bytes or more";
        assert_ne!(k[..], secret[..32]);
        // Another consultation in the body: the signature no longer matches.
        let (body, sig) = s[PREFIX.len()..].split_once('.').unwrap();
        let mut forged = t.clone();
        forged.consultation = "c-2".into();
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_ne!(forged_body, body);
        assert_eq!(
            verify(&k, &format!("{PREFIX}{forged_body}.{sig}"), 0),
            Err(TicketError::BadSignature)
        );
        for bad in [
            "",
            "tkt1.",
            "tkt1.x",
            "tkt1.a.b.c",
            "eyJ.x.y",
            &"tkt1.".repeat(2000),
        ] {
            assert!(verify(&k, bad, 0).is_err(), "{bad}");
        }
    }
}
