//! The Prometheus scrape: its own listener, a bearer token when configured, and no
//! consultation ids (or anything else a participant chose) in it.

mod common;

use common::{TestServer, admit, http_get, wait_admitted};
use teleconsult::config::Config;
use teleconsult::token::Role;

const TOKEN: &str = "metrics-scrape-token-0123456789abcdef";

#[tokio::test]
async fn scrapes_need_the_bearer_token_when_one_is_set() {
    let mut config = Config::for_tests();
    config.metrics.bearer_token = TOKEN.into();
    let s = TestServer::start_with(config).await;
    let addr = s.server.metrics_addr;
    assert_eq!(http_get(addr, "/metrics", None).await.0, 401);
    assert_eq!(http_get(addr, "/metrics", Some("wrong-token")).await.0, 401);
    let almost = &TOKEN[..TOKEN.len() - 1];
    assert_eq!(http_get(addr, "/metrics", Some(almost)).await.0, 401);
    let (status, text) = http_get(addr, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("# TYPE teleconsult_consultations gauge"),
        "{text}"
    );
    // Never on the public listener, token or not.
    assert_eq!(http_get(s.http_addr, "/metrics", Some(TOKEN)).await.0, 404);
    s.shutdown().await;
}

#[tokio::test]
async fn a_consultation_in_progress_leaves_no_id_in_the_scrape() {
    let s = TestServer::start().await;
    let c = "c-metrics-private-7f3a9";
    let mut doctor = s.join(c, "Dr Scrape", Role::Practitioner).await;
    let mut patient = s.join(c, "Pat Scrape", Role::Patient).await;
    admit(&mut doctor, &patient.id).await;
    wait_admitted(&mut patient).await;
    let (status, text) = http_get(s.server.metrics_addr, "/metrics", None).await;
    assert_eq!(status, 200);
    // The call is counted...
    let consultations = text
        .lines()
        .find_map(|l| l.strip_prefix("teleconsult_consultations "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("consultations gauge");
    assert!(consultations >= 1.0, "{text}");
    // ...but nothing names it or its people.
    for private in [
        c,
        "Dr Scrape",
        "Pat Scrape",
        patient.id.as_str(),
        "consultation=\"",
    ] {
        assert!(!text.contains(private), "{private} in the scrape:\n{text}");
    }
    drop((doctor, patient));
    s.shutdown().await;
}

/// Per-endpoint latency: every HTTP route has a histogram labelled by its template (never the
/// id in the path), every signalling message type one of its own; real buckets (so p95 can be
/// computed over nodes and days, deploy/prometheus/latency-report.promql).
#[tokio::test]
async fn latency_histograms_by_route_template_and_message_type_name_no_id() {
    let s = TestServer::start().await;
    let c = "c-latency-private-5d1e2";
    let (status, _) = http_get(
        s.http_addr,
        &format!("/api/workspace/consultations/{c}"),
        None,
    )
    .await;
    assert_eq!(status, 401, "not signed in");
    // A join on /ws/{consultation}, then a ping answered.
    let token = s.token(c, "dr-latency", Role::Practitioner).await;
    let mut doctor = teleconsult_loadtest::participant::Participant::join(
        &format!("ws://{}/ws/{c}", s.http_addr),
        &token,
    )
    .await
    .unwrap();
    doctor.send(teleconsult::protocol::ClientMessage::Ping);
    doctor
        .expect(common::T, |m| {
            matches!(m, teleconsult::protocol::ServerMessage::Pong)
        })
        .await
        .unwrap();
    let (_, text) = http_get(s.server.metrics_addr, "/metrics", None).await;
    let has = |needle: &str| text.lines().any(|l| l.contains(needle));
    assert!(
        has(
            r#"teleconsult_http_request_duration_seconds_bucket{route="/api/workspace/consultations/{id}",method="GET",status="4xx",le="0.005"}"#
        ),
        "{text}"
    );
    assert!(
        has(
            r#"teleconsult_http_request_duration_seconds_count{route="/ws/{consultation}",method="GET""#
        ),
        "{text}"
    );
    assert!(
        has(r#"teleconsult_signaling_message_duration_seconds_bucket{type="join",le="0.1"}"#),
        "{text}"
    );
    assert!(
        has(r#"teleconsult_signaling_message_duration_seconds_count{type="ping"}"#),
        "{text}"
    );
    assert!(!text.contains(c), "the consultation id in the scrape");
    drop(doctor);
    s.shutdown().await;
}
