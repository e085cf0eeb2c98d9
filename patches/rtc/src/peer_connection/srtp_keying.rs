//! PATCH(teleconsult): the negotiated SRTP protection profile and master keys, for applications
//! that protect and unprotect RTP/RTCP themselves (see PATCH.md at the crate root).

use crate::peer_connection::RTCPeerConnection;
use srtp::config::SessionKeys;
use srtp::protection_profile::ProtectionProfile;

/// The SRTP profile negotiated in the DTLS handshake (RFC 5764) and the master keys and salts
/// exported from it, from this side's point of view: `local_*` protect what this side sends,
/// `remote_*` unprotect what it receives. `Debug` never prints the keys.
#[derive(Clone)]
pub struct RTCSrtpKeyingMaterial {
    /// The negotiated protection profile.
    pub profile: ProtectionProfile,
    /// Master keys and salts for both directions.
    pub keys: SessionKeys,
}

impl std::fmt::Debug for RTCSrtpKeyingMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RTCSrtpKeyingMaterial")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl RTCPeerConnection {
    /// The SRTP profile and keys, once the DTLS handshake has completed (`None` before).
    pub fn srtp_keying_material(&self) -> Option<&RTCSrtpKeyingMaterial> {
        self.dtls_transport().srtp_keying.as_ref()
    }
}

impl RTCPeerConnection {
    /// PATCH(teleconsult): a non-STUN datagram from `transport.peer_addr` that the application
    /// authenticated itself (SRTP/SRTCP unprotected outside this crate's pipeline) counts as
    /// traffic heard from that remote candidate, exactly as a datagram through `handle_read`
    /// would (`Agent::is_valid_non_stun_traffic`): the selected pair stays alive while media
    /// flows between two consent checks. Returns whether it matched a known candidate.
    pub fn note_authenticated_traffic(
        &mut self,
        now: std::time::Instant,
        transport: shared::TransportContext,
    ) -> bool {
        self.ice_transport_mut()
            .agent
            .is_valid_non_stun_traffic(now, transport)
    }
}
