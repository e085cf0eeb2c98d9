//! ICE on the core's public API (issue 11): the ICE-TCP candidate in offers, and ICE restarts.

use std::net::SocketAddr;
use std::time::Instant;
use teleconsult_sfu::core::Core;
use teleconsult_sfu::{SfuError, SfuEvent};

fn offers(core: &mut Core) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((_, event)) = core.poll_event() {
        if let SfuEvent::Offer(sdp) = event {
            out.push(sdp);
        }
    }
    out
}

#[test]
fn offers_carry_the_passive_tcp_candidate_after_the_udp_one() {
    let udp: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let tcp: SocketAddr = "192.0.2.10:40001".parse().unwrap();
    let mut core = Core::new(udp);
    core.set_tcp_addr(Some(tcp));
    core.add_participant(Instant::now(), 1, "c", "alice")
        .unwrap();
    let sdp = offers(&mut core).pop().expect("an offer");
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    // Bundled: the candidates appear once per section; the first section's are enough.
    let udp_at = candidates
        .iter()
        .position(|c| c.contains(" udp ") && c.contains("192.0.2.10 40000 typ host"))
        .unwrap_or_else(|| panic!("UDP candidate in {sdp}"));
    let tcp_at = candidates
        .iter()
        .position(|c| {
            c.to_lowercase().contains(" tcp ")
                && c.contains("192.0.2.10 40001 typ host")
                && c.contains("tcptype passive")
        })
        .unwrap_or_else(|| panic!("passive TCP candidate in {sdp}"));
    assert!(udp_at < tcp_at, "UDP first: {candidates:?}");

    // Without a TCP address: UDP only.
    let mut core = Core::new(udp);
    core.add_participant(Instant::now(), 1, "c", "alice")
        .unwrap();
    let sdp = offers(&mut core).pop().expect("an offer");
    assert!(!sdp.to_lowercase().contains("tcptype"), "{sdp}");
}

#[test]
fn an_ice_restart_changes_the_ufrag_and_waits_for_the_outstanding_answer() {
    let mut core = Core::new("192.0.2.10:40000".parse().unwrap());
    let now = Instant::now();
    let first = core.add_participant(now, 1, "c", "alice").unwrap();
    let offer = offers(&mut core).pop().expect("first offer");
    assert!(offer.contains(&format!("a=ice-ufrag:{first}")));
    let second = core.restart_ice(now, 1).unwrap();
    assert_ne!(first, second);
    assert_eq!(core.ufrag(1), Some(second.as_str()));
    // The first offer is still outstanding: the restart rides on the offer after its answer.
    assert!(offers(&mut core).is_empty());
    // Twice in a row is fine (the latest credentials win), an unknown participant is refused.
    let third = core.restart_ice(now, 1).unwrap();
    assert_ne!(third, second);
    assert_eq!(core.restart_ice(now, 99), Err(SfuError::UnknownParticipant));
}
