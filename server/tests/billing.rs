//! Billing through the real server (in-process, embedded store): the clock follows who is
//! connected, every stretch is stored exactly once, summaries add up, and the export endpoints
//! serve the right rows to the right callers only.

mod common;

use common::{
    T, TestServer, admit, eventually, http_get, poll, summary_when, wait_admitted, wall_clock_past,
};
use std::time::{Duration, Instant};
use teleconsult::config::Config;
use teleconsult::config::ExposeSecret;
use teleconsult::protocol::{ClientMessage, ServerMessage};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::Participant;
use teleconsult_store::{BillingInterval, ConsultationSummary, Store};

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789abcdef";

fn config() -> Config {
    let mut c = Config::for_tests();
    c.billing.checkpoint_secs = 1;
    c.admin.api_key = ADMIN_KEY.into();
    c
}

fn closed_sum(intervals: &[BillingInterval]) -> i64 {
    intervals
        .iter()
        .map(|b| b.end.expect("closed") - b.start)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_pauses_on_disconnect_resumes_on_rejoin_and_stops_at_end() {
    let server = TestServer::start_with(config()).await;
    let billing = server.server.state.billing.clone();
    let store = server.server.state.store.clone();
    let c = "c-bill-1";
    let wall_start = teleconsult::billing::now_ms();
    let mut doctor = server.join(c, "Dr Billing", Role::Practitioner).await;
    assert!(
        !billing.is_running(c),
        "a practitioner alone is not billable"
    );
    let patient_token = server.token(c, "Jane Secretname", Role::Patient).await;
    let mut patient = Participant::join(&server.ws_url(), &patient_token)
        .await
        .expect("join");
    assert!(!billing.is_running(c), "a waiting patient is not billable");
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    assert!(eventually(T, || billing.is_running(c)).await);
    // Past a checkpoint: the running interval is in the store with a checkpoint after its start.
    let open = poll(T, "a checkpoint of the running interval", || async {
        let open: Vec<_> = store
            .open_billing_intervals()
            .await
            .expect("open intervals")
            .into_iter()
            .filter(|b| b.consultation == c)
            .collect();
        open.iter().any(|b| b.checkpoint > b.start).then_some(open)
    })
    .await;
    assert_eq!(open.len(), 1, "one running interval: {open:?}");
    assert!(
        open[0].checkpoint > open[0].start,
        "checkpointed: {:?}",
        open[0]
    );

    // The patient's network drops: paused.
    patient.drop_connection().await;
    assert!(eventually(T, || !billing.is_running(c)).await);
    let paused = billing.live_billable_ms(c).expect("live");
    // A running clock would count this time: let it pass, then check nothing was counted.
    wall_clock_past(Instant::now() + Duration::from_millis(700)).await;
    assert_eq!(
        billing.live_billable_ms(c),
        Some(paused),
        "no billable time while the patient is reconnecting"
    );

    // Back with the same token: resumes without a new admission.
    let mut patient = common::rejoin(&server.ws_url(), &patient_token, &patient).await;
    assert!(eventually(T, || billing.is_running(c)).await);
    // The second stretch counts a second or more before the end.
    assert!(
        eventually(T, || billing
            .live_billable_ms(c)
            .is_some_and(|ms| ms >= paused + 1000))
        .await,
        "the resumed clock counts"
    );
    doctor.send(ClientMessage::EndConsultation);
    patient
        .expect(T, |m| matches!(m, ServerMessage::ConsultationEnded))
        .await
        .expect("ended");
    let wall_end = teleconsult::billing::now_ms();

    let summary = summary_when(&*store, c, |s| s.end.is_some()).await;
    let mut intervals = store.billing_intervals(c).await.expect("intervals");
    intervals.sort_by_key(|b| b.start);
    assert_eq!(intervals.len(), 2, "paused once: {intervals:?}");
    assert!(intervals.iter().all(|b| b.end.is_some() && !b.recovered));
    assert_eq!(summary.billable_ms, closed_sum(&intervals), "exact sum");
    assert!(summary.billable_ms > 0);
    assert!(summary.billable_ms <= wall_end - wall_start);
    // The gap between the two intervals is the pause.
    assert!(intervals[0].end.expect("closed") < intervals[1].start);
    assert_eq!(summary.practitioner, "Dr Billing");
    assert_eq!(summary.participants, 2);
    assert!(!summary.recovered);
    assert_eq!(
        summary.patient_pseudonym,
        teleconsult::billing::patient_pseudonym(
            server
                .config
                .billing
                .pseudonym_key
                .expose_secret()
                .as_bytes(),
            c,
            // The seat (invitation id), never the label the practitioner chose.
            &common::jti_of(&patient_token)
        )
    );
    // Keyed by the pseudonym key, not by the key that signs join links.
    assert_ne!(
        summary.patient_pseudonym,
        teleconsult::billing::patient_pseudonym(
            server.config.auth.signing_secret.expose_secret().as_bytes(),
            c,
            &common::jti_of(&patient_token)
        )
    );
    // Presence: the doctor once, the patient twice (before and after the drop).
    let presence = store.presence_intervals(c).await.expect("presence");
    assert_eq!(presence.len(), 3, "{presence:?}");
    assert!(presence.iter().all(|p| p.end.is_some()));
    assert!(billing.live_billable_ms(c).is_none(), "clock finished");

    // The audit log has the admission.
    let (status, body) = http_get(
        server.http_addr,
        "/api/audit/export?from=2000-01-01&to=2100-01-01",
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let admit_line = body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .find(|v| v["action"] == "participant.admit" && v["consultation"] == c)
        .expect("admission audited");
    assert_eq!(admit_line["target"], patient.id.as_str());
    assert_eq!(admit_line["actor"], doctor.id.as_str());
    assert!(
        !body.contains("Secretname"),
        "no patient names in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_do_not_start_the_clock_and_everyone_leaving_stops_it() {
    let server = TestServer::start_with(config()).await;
    let billing = server.server.state.billing.clone();
    let store = server.server.state.store.clone();
    let c = "c-bill-guest";
    let mut doctor = server.join(c, "Dr Guest", Role::Practitioner).await;
    let mut guest = server.join(c, "Interpreter", Role::Guest).await;
    admit(&mut doctor, &guest.id).await;
    wait_admitted(&mut guest).await;
    // The doctor's session handles the admission to the end (the service tells billing before it
    // returns) before it reads the next message: a ping answered proves billing was told.
    doctor.send(ClientMessage::Ping);
    doctor
        .expect(T, |m| *m == ServerMessage::Pong)
        .await
        .expect("pong");
    assert!(!billing.is_running(c), "a guest is not a patient");
    let mut patient = server.join(c, "Pat", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    assert!(eventually(T, || billing.is_running(c)).await);
    // The practitioner removes the patient: paused; the removal is audited.
    doctor.send(ClientMessage::Remove {
        participant: patient.id.clone().into(),
    });
    assert!(eventually(T, || !billing.is_running(c)).await);
    // Everyone leaves: the consultation's summary gets its end.
    guest.send(ClientMessage::Leave);
    doctor.send(ClientMessage::Leave);
    let summary = summary_when(&*store, c, |s| s.end.is_some()).await;
    let intervals = store.billing_intervals(c).await.expect("intervals");
    assert_eq!(intervals.len(), 1);
    assert_eq!(summary.billable_ms, closed_sum(&intervals));
    assert_eq!(summary.participants, 3);
    let (status, body) = http_get(
        server.http_addr,
        "/api/audit/export?from=2000-01-01&to=2100-01-01&format=csv",
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("id,at,actor,action,consultation,target\n"));
    assert!(
        body.lines()
            .any(|l| l.contains(",participant.remove,c-bill-guest,") && l.ends_with(&patient.id)),
        "{body}"
    );
}

/// Seed summaries straight into the store, then export them through the API.
async fn seed(store: &dyn Store) {
    let day = 86_400_000;
    let base = teleconsult::billing::time::parse("2026-03-01").expect("date");
    for (i, (consultation, practitioner, ms)) in [
        ("c-a1", "Dr A", 61_500),
        ("c-a2", "Dr A", 30_000),
        ("c-b1", "Dr B, \"MD\"", 120_000),
    ]
    .into_iter()
    .enumerate()
    {
        store
            .upsert_consultation_summary(&ConsultationSummary {
                consultation: consultation.into(),
                practitioner: practitioner.into(),
                patient_pseudonym: format!("pt-00000000000{i}"),
                start: base + i as i64 * day,
                end: Some(base + i as i64 * day + ms),
                billable_ms: ms,
                participants: 2,
                recovered: i == 2,
            })
            .await
            .expect("seed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_authorised_filtered_and_rounded() {
    let mut cfg = config();
    cfg.billing.rounding = teleconsult::config::Rounding::PerStartedMinute;
    let server = TestServer::start_with(cfg).await;
    let store = server.server.state.store.clone();
    seed(&*store).await;
    let addr = server.http_addr;
    let q = "/api/billing/export?from=2026-03-01T00:00:00Z&to=2026-04-01";

    // Admin: everything, CSV by default, rounding per started minute.
    let (status, body) = http_get(addr, q, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        "consultation,practitioner,patient_pseudonym,start,end,billable_seconds,billable_units,unit,participants,recovered"
    );
    assert_eq!(lines.len(), 4, "{body}");
    assert_eq!(
        lines[1],
        "c-a1,Dr A,pt-000000000000,2026-03-01T00:00:00Z,2026-03-01T00:01:01.500Z,61.500,2,minute,2,false"
    );
    assert!(
        lines[3].starts_with("c-b1,\"Dr B, \"\"MD\"\"\","),
        "{}",
        lines[3]
    );
    assert!(lines[3].ends_with(",120.000,2,minute,2,true"));

    // Admin with a practitioner filter, as JSON.
    let (status, body) = http_get(
        addr,
        &format!("{q}&practitioner=Dr%20A&format=json"),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).expect("JSON array");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["consultation"], "c-a2");
    assert_eq!(rows[1]["billable_units"], 1);
    assert_eq!(rows[1]["billable_seconds"], 30.0);

    // A practitioner's own token: their consultations only, whatever they ask.
    let dr_a = server
        .token("any-consultation", "Dr A", Role::Practitioner)
        .await;
    let (status, body) = http_get(addr, q, Some(&dr_a)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.lines().count(), 3, "{body}");
    assert!(!body.contains("c-b1"));
    let (status, body) = http_get(addr, &format!("{q}&practitioner=Dr%20B"), Some(&dr_a)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"code\":\"forbidden\""));

    // Everyone else: 403.
    let patient = server.token("c-a1", "Pat", Role::Patient).await;
    let guest = server.token("c-a1", "G", Role::Guest).await;
    let mut forged = dr_a.clone();
    forged.pop();
    forged.push(if dr_a.ends_with('A') { 'B' } else { 'A' });
    for bearer in [
        Some(patient.as_str()),
        Some(guest.as_str()),
        Some(forged.as_str()),
        Some("not-a-token"),
        Some(""),
        None,
    ] {
        let (status, body) = http_get(addr, q, bearer).await;
        assert_eq!(status, 403, "{bearer:?}: {body}");
        assert!(body.contains("\"code\":\"forbidden\""));
        let (status, _) = http_get(
            addr,
            "/api/audit/export?from=2000-01-01&to=2100-01-01",
            bearer,
        )
        .await;
        assert_eq!(status, 403);
    }
    // The audit log is for the admin key only.
    let (status, _) = http_get(
        addr,
        "/api/audit/export?from=2000-01-01&to=2100-01-01",
        Some(&dr_a),
    )
    .await;
    assert_eq!(status, 403);

    // Bad input: clear errors with stable codes.
    for (path, code) in [
        (
            "/api/billing/export?from=yesterday&to=2026-04-01",
            "bad_time",
        ),
        ("/api/billing/export?to=2026-04-01", "bad_time"),
        (
            "/api/billing/export?from=2026-04-01&to=2026-03-01",
            "bad_range",
        ),
        (
            "/api/billing/export?from=2026-03-01&to=2026-04-01&format=xml",
            "bad_format",
        ),
        (
            "/api/billing/export?from=2026-03-01&to=2026-04-01&token=abc",
            "credentials_in_query",
        ),
    ] {
        let (status, body) = http_get(addr, path, Some(ADMIN_KEY)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.contains(&format!("\"code\":\"{code}\"")),
            "{path}: {body}"
        );
    }

    // Every export is audited (asynchronously, through the billing writer), practitioners by
    // pseudonym.
    let pr = teleconsult::billing::practitioner_pseudonym(
        server
            .config
            .billing
            .pseudonym_key
            .expose_secret()
            .as_bytes(),
        "Dr A",
    );
    poll(T, "both exports audited", || async {
        let (status, body) = http_get(
            addr,
            "/api/audit/export?from=2000-01-01&to=2100-01-01",
            Some(ADMIN_KEY),
        )
        .await;
        assert_eq!(status, 200);
        assert!(!body.contains("Dr A"), "no names in the audit log");
        let exports: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .filter(|v: &serde_json::Value| v["action"] == "billing.export")
            .collect();
        let admin = exports.iter().any(|v| v["actor"] == "admin");
        let practitioner = exports
            .iter()
            .any(|v| v["actor"] == format!("practitioner:{pr}").as_str());
        (admin && practitioner).then_some(())
    })
    .await;
}
