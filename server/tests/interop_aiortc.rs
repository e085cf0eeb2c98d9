//! Interop with a second, independent WebRTC implementation: aiortc (Python). A practitioner,
//! a patient and a guest, each an aiortc peer publishing VP8 and Opus through the server, hold a
//! consultation for a minute. Every peer must decode both others' video for the whole call with
//! no gap over a second between decoded frames, and every received track must carry one
//! publisher's frames only (each peer's video has its own red level: a track that showed another
//! participant's frames, as a subscription answered before its offer once did, fails).
//!
//! The peers are `scripts/interop/aiortc_peer.py`, run with the venv `scripts/install-test-deps`
//! makes (`target/test-venv`, or `TELECONSULT_TEST_PYTHON`).

mod common;

use common::{TestServer, python, root};
use std::path::PathBuf;
use std::time::Duration;
use teleconsult::token::Role;

/// How long the call is held, from each peer's first decoded frame.
const CALL_SECS: u64 = 60;
/// Longest allowed gap between two decoded frames of one track.
const MAX_GAP_SECS: f64 = 1.0;

struct Peer {
    role: Role,
    signature: u8,
    out: PathBuf,
    child: tokio::process::Child,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_aiortc_peers_hold_a_one_minute_call() {
    let s = TestServer::start().await;
    let c = "c-interop-aiortc";
    let dir = std::env::temp_dir().join(format!("teleconsult-aiortc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = root().join("scripts/interop/aiortc_peer.py");
    let mut peers = Vec::new();
    for (role, name, signature) in [
        (Role::Practitioner, "Dr Interop", 40u8),
        (Role::Patient, "Pat Interop", 128),
        (Role::Guest, "Interpreter", 216),
    ] {
        let out = dir.join(format!("{}.json", role.as_str()));
        let _ = std::fs::remove_file(&out);
        let child = tokio::process::Command::new(python())
            .arg(&script)
            .args(["--ws", &s.ws_url()])
            .args(["--seconds", &CALL_SECS.to_string()])
            .args(["--deadline", &(CALL_SECS + 60).to_string()])
            .args(["--signature", &signature.to_string()])
            .arg("--out")
            .arg(&out)
            .env("TELECONSULT_TOKEN", s.token(c, name, role).await)
            .kill_on_drop(true)
            .spawn()
            .expect("aiortc peer starts");
        peers.push(Peer {
            role,
            signature,
            out,
            child,
        });
    }
    let signatures: Vec<u8> = peers.iter().map(|p| p.signature).collect();
    for peer in &mut peers {
        let status = tokio::time::timeout(Duration::from_secs(CALL_SECS + 90), peer.child.wait())
            .await
            .expect("aiortc peer finishes")
            .expect("wait");
        assert!(
            status.success(),
            "{:?} peer exited with {status}",
            peer.role
        );
    }
    for peer in &peers {
        let text = std::fs::read_to_string(&peer.out).expect("peer report");
        let report: serde_json::Value = serde_json::from_str(&text).expect("report json");
        let who = peer.role.as_str();
        assert_eq!(report["role"], who, "{text}");
        assert_eq!(report["errors"], serde_json::json!([]), "{who}: {text}");
        let tracks = report["tracks"].as_object().expect("tracks");
        assert_eq!(tracks.len(), 2, "{who} receives both others' video: {text}");
        let mut seen_from = Vec::new();
        for (key, t) in tracks {
            let gap = t["max_gap_s"].as_f64().expect("gap");
            let seconds = t["seconds"].as_f64().expect("seconds");
            let frames = t["frames"].as_u64().expect("frames");
            assert!(
                gap <= MAX_GAP_SECS,
                "{who} {key}: a {gap} s gap between decoded frames: {text}"
            );
            // Peers stop a second or two apart (each counts from its own first frame).
            assert!(
                seconds >= (CALL_SECS - 5) as f64,
                "{who} {key}: decoded for {seconds} s only: {text}"
            );
            // 30 frames/s are sent; even a loaded machine decodes far more than 10.
            assert!(
                frames >= CALL_SECS * 10,
                "{who} {key}: {frames} frames: {text}"
            );
            assert_eq!(
                (t["width"].as_u64(), t["height"].as_u64()),
                (Some(320), Some(240))
            );
            // Whose frames: every sampled frame's red level is one publisher's.
            let sampled = t["signatures"].as_object().expect("signatures");
            let mut owner = None;
            for (level, count) in sampled {
                let level: i32 = level.parse().expect("level");
                let nearest = *signatures
                    .iter()
                    .min_by_key(|s| (i32::from(**s) - level).abs())
                    .expect("signatures");
                assert!(
                    (i32::from(nearest) - level).abs() <= 12,
                    "{who} {key}: a frame of red level {level} belongs to nobody: {text}"
                );
                assert!(count.as_u64().unwrap_or(0) > 0);
                match owner {
                    None => owner = Some(nearest),
                    Some(o) => assert_eq!(
                        o, nearest,
                        "{who} {key}: one track showed two participants' video: {text}"
                    ),
                }
            }
            let owner = owner.expect("sampled frames");
            assert_ne!(owner, peer.signature, "{who} {key}: received its own video");
            seen_from.push(owner);
        }
        seen_from.sort_unstable();
        seen_from.dedup();
        assert_eq!(seen_from.len(), 2, "{who}: both others, once each: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    s.shutdown().await;
}
