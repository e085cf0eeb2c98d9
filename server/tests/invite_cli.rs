//! The `invite`, `revoke` and `cancel` commands of the real binary, against an embedded store of
//! the test's own (read back with the store's own API), and the refusals of `invite` and `token`.

mod common;

use std::path::Path;
use std::process::Command;
use teleconsult_store::{ConsultationStatus, InvitationStore, SqliteStore};

fn teleconsult(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_teleconsult"))
        .args(args)
        .env("TELECONSULT_STORAGE__DATA_DIR", data_dir)
        .output()
        .expect("teleconsult runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn invite_revoke_and_cancel_write_the_configured_store() {
    let dir = common::temp_dir("invite-cli");
    let (ok, stdout, stderr) = teleconsult(
        &dir,
        &[
            "invite",
            "--dev",
            "--consultation",
            "c-cli",
            "--role",
            "patient",
            "--label",
            "Ms Example",
            "--at",
            "2030-01-01T10:00:00Z",
        ],
    );
    assert!(ok, "{stderr}");
    let jti = stdout
        .lines()
        .find_map(|l| l.strip_prefix("invitation "))
        .expect("the invitation id is printed")
        .to_string();
    assert!(stdout.contains("/join#token="), "{stdout}");
    assert!(
        !stdout.contains("Ms Example"),
        "the link carries no name: {stdout}"
    );

    let store = SqliteStore::open(&dir).await.expect("the same store");
    let inv = store.invitation(&jti).await.unwrap().expect("stored");
    assert_eq!(inv.pseudonym.expose(), "Ms Example");
    assert_eq!(inv.role, "patient");
    // Scheduled 2030-01-01T10:00Z: valid from 15 minutes before to 4 hours after.
    assert_eq!(inv.not_before, 1_893_492_000_000 - 900_000);
    assert_eq!(inv.expires, 1_893_492_000_000 + 14_400_000);
    let c = store
        .scheduled_consultation("c-cli")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.scheduled_at, Some(1_893_492_000_000));
    assert_eq!(c.status, ConsultationStatus::Scheduled);

    let (ok, _, stderr) = teleconsult(&dir, &["revoke", "--dev", "--invitation", &jti]);
    assert!(ok, "{stderr}");
    assert!(
        store
            .invitation(&jti)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    let (ok, _, stderr) = teleconsult(&dir, &["revoke", "--dev", "--invitation", "nope"]);
    assert!(!ok && stderr.contains("not found"), "{stderr}");

    let (ok, stdout, stderr) = teleconsult(&dir, &["cancel", "--dev", "--consultation", "c-cli"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("cancelled"), "{stdout}");
    assert_eq!(
        store
            .scheduled_consultation("c-cli")
            .await
            .unwrap()
            .unwrap()
            .status,
        ConsultationStatus::Cancelled
    );
    // Nothing more can be issued for it.
    let (ok, _, stderr) = teleconsult(
        &dir,
        &[
            "invite",
            "--dev",
            "--consultation",
            "c-cli",
            "--role",
            "guest",
            "--label",
            "Late",
        ],
    );
    assert!(!ok && stderr.contains("cancelled"), "{stderr}");

    // A practitioner is never invited; a token is never minted for a patient.
    let (ok, _, stderr) = teleconsult(
        &dir,
        &[
            "invite",
            "--dev",
            "--consultation",
            "c-2",
            "--role",
            "practitioner",
            "--label",
            "Dr",
        ],
    );
    assert!(!ok && stderr.contains("own credential"), "{stderr}");
    let (ok, _, stderr) = teleconsult(
        &dir,
        &[
            "token",
            "--dev",
            "--consultation",
            "c-2",
            "--identity",
            "P",
            "--role",
            "patient",
        ],
    );
    assert!(!ok && stderr.contains("practitioners only"), "{stderr}");
    // Outside --dev a new consultation needs its owner (organisation, practitioner account).
    let out = Command::new(env!("CARGO_BIN_EXE_teleconsult"))
        .args([
            "invite",
            "--consultation",
            "c-3",
            "--role",
            "guest",
            "--label",
            "G",
        ])
        .env("TELECONSULT_STORAGE__DATA_DIR", &dir)
        .env(
            "TELECONSULT_AUTH__SIGNING_SECRET",
            "a-production-like-secret-of-enough-length-0123",
        )
        .output()
        .expect("teleconsult runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--organisation and --practitioner"),
        "{stderr}"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

/// `teleconsult token … | head -1`: the reader goes away before the second line is written.
/// The command must end quietly (exit 0, nothing on stderr), never panic on the broken pipe.
#[test]
fn a_closed_pipe_on_stdout_ends_the_command_quietly() {
    use std::process::Stdio;
    let dir = common::temp_dir("token-epipe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_teleconsult"))
        .args([
            "token",
            "--dev",
            "--consultation",
            "c-pipe",
            "--identity",
            "dr-pipe",
            "--role",
            "practitioner",
        ])
        .env("TELECONSULT_STORAGE__DATA_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("teleconsult runs");
    // Close the read end before the command writes anything: every write then fails with EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("teleconsult ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "status {:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
