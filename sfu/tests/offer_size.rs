//! How big the SFU's offer to one participant of a 12-party consultation gets (issue 15: the
//! signalling message limit `signaling.max_message_bytes` must hold it, and the client's
//! answer, which has the same media sections). Built for real: eleven publishers (microphone,
//! camera in three simulcast layers) and the twelfth participant joined on the simulated
//! network, the offer the twelfth finally gets read from its client.

mod common;

use common::Sim;
use std::time::Duration;

/// The media sections of an SDP (each from its `m=` line to the next).
fn sections(sdp: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = sdp.match_indices("\r\nm=").map(|(i, _)| i + 2).collect();
    starts.push(sdp.len());
    starts.windows(2).map(|w| &sdp[w[0]..w[1]]).collect()
}

/// Bytes of `sdp` once in a `media_offer` message: JSON escapes each CR and LF as two bytes.
fn as_message(sdp: &str) -> usize {
    serde_json_len(sdp) + r#"{"type":"media_offer","sdp":""}"#.len()
}

fn serde_json_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '\r' | '\n' | '"' | '\\' | '\t' => 2,
            c => c.len_utf8(),
        })
        .sum()
}

#[test]
fn the_offer_of_a_twelve_party_call_fits_the_message_limit_with_room() {
    let mut sim = Sim::in_consultation("twelve-party-offer");
    for i in 0..11 {
        sim.join_simulcast(&format!("publisher-{i:02}"));
        sim.run_for(Duration::from_millis(50));
    }
    let last = sim.join("participant-12", true);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| s.all_settled()
            && s.clients[last].offered_tracks().len() >= 22),
        "the twelfth is offered every other's microphone and camera: {:?}",
        sim.clients[last].offered_tracks()
    );
    let offer = sim.clients[last].last_offer.clone().expect("an offer");
    let parts = sections(&offer);
    let head = offer.len() - parts.iter().map(|s| s.len()).sum::<usize>();
    // Its own three receiving sections (audio, camera with simulcast, screen), then one
    // sending section per subscribed track.
    let video: Vec<usize> = parts
        .iter()
        .skip(3)
        .filter(|s| s.starts_with("m=video"))
        .map(|s| s.len())
        .collect();
    let audio: Vec<usize> = parts
        .iter()
        .skip(3)
        .filter(|s| s.starts_with("m=audio"))
        .map(|s| s.len())
        .collect();
    assert_eq!((audio.len(), video.len()), (11, 11), "{offer}");
    let max_video = *video.iter().max().unwrap();
    // Screen shares are not simulated: each is one more sending video section, the same shape
    // as a camera's (one forwarded layer, the same codecs and extensions), so count the
    // largest camera section once more per publisher.
    let with_screens = offer.len() + 11 * max_video;
    let max_video_json = parts
        .iter()
        .skip(3)
        .filter(|s| s.starts_with("m=video"))
        .map(|s| serde_json_len(s))
        .max()
        .unwrap();
    let message = as_message(&offer) + 11 * max_video_json;
    let limit = 64 * 1024;
    println!(
        "12-party offer: {} bytes ({} sections; session part {head}, own receiving sections {}, \
         sending audio sections up to {}, video up to {max_video}); with 11 screen shares: \
         {with_screens} bytes; as a message (JSON-escaped CRLFs) about {message} bytes; limit {limit}",
        offer.len(),
        parts.len(),
        parts[..3].iter().map(|s| s.len()).sum::<usize>(),
        audio.iter().max().unwrap(),
    );
    // Room for a client whose answer is a third larger than our offer (more attributes per
    // section), and for longer ids.
    assert!(
        message * 4 / 3 < limit,
        "a 12-party offer ({message} bytes as a message) leaves too little room under {limit}"
    );
}
