//! CI smoke run of the load generator (about 20 s): 3 one-to-one consultations and one group of
//! 4, all publishing real Opus and VP8, against an in-process server. Asserts every subscriber
//! received every publisher's audio and video with under 1 % loss, latency was matched for the
//! packets, no participant saw an error, and the server's quality metrics (forwarding-latency
//! histogram, per-consultation loss and jitter) appear in /metrics and are removed when the
//! consultations end. No timing is asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use teleconsult::config::Config;
use teleconsult_loadtest::media::VideoVariant;
use teleconsult_loadtest::scenario::{self, RunOptions, RunReport, Scenario};
use teleconsult_loadtest::server_stats::{histogram_buckets, http_get, metric_sum};
use teleconsult_loadtest::target::{Target, Teleconsult};

fn options(scenario: Scenario, consultations: usize, metrics_url: &str) -> RunOptions {
    RunOptions {
        scenario,
        consultations,
        duration: Duration::from_secs(8),
        ramp_rate: 4.0,
        settle: Duration::from_secs(3),
        video: VideoVariant::Low,
        ramp: None,
        server_pid: Some(std::process::id()),
        metrics_url: Some(metrics_url.to_string()),
        progress: false,
    }
}

fn check(report: &RunReport, expected_tracks: usize) {
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
    assert_eq!(report.steps.len(), 1);
    let step = &report.steps[0];
    assert!(step.missing.is_empty(), "missing: {:#?}", step.missing);
    assert_eq!(step.tracks.len(), expected_tracks);
    for t in &step.tracks {
        let what = format!("{} <- {} {:?}", t.subscriber, t.publisher, t.kind);
        assert!(t.packets > 0, "{what}: nothing received");
        assert!(t.loss_ratio < 0.01, "{what}: loss {:.3}", t.loss_ratio);
        assert!(
            t.latency.count * 10 >= t.packets * 9,
            "{what}: latency matched for only {} of {} packets",
            t.latency.count,
            t.packets
        );
        assert!(t.bitrate_kbps > 0.0, "{what}: no bitrate");
    }
    assert!(step.held);
    assert!(step.server.cpu_percent.is_some(), "server CPU sampled");
    assert!(
        step.server.packets_forwarded.unwrap_or(0.0) > 0.0,
        "forwarded packets scraped from /metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_one_to_one_and_a_group_of_four() {
    let config = Config::for_tests();
    let server = teleconsult::server::start(config.clone())
        .await
        .expect("server starts");
    let base = format!("http://{}", server.http_addr);
    let _ = base;
    let metrics_url = format!("http://{}/metrics", server.metrics_addr);
    let target: Arc<dyn Target> = Arc::new(Teleconsult::new(
        format!("ws://{}/ws", server.http_addr),
        config,
        server.state.store.clone(),
    ));

    // Watch /metrics while the runs go: the consultations' quality reports must be counted,
    // and no scrape may name a consultation.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, url) = (done.clone(), metrics_url.clone());
        tokio::spawn(async move {
            let (mut reporting, mut named) = (0.0f64, None);
            while !done.load(Ordering::SeqCst) {
                if let Ok(page) = http_get(&url).await {
                    reporting = reporting.max(metric_sum(
                        &page,
                        "teleconsult_consultations_reporting_quality",
                    ));
                    if page.contains("consultation=\"") {
                        named = Some(page);
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (reporting, named)
        })
    };

    let (one_to_one, group) = tokio::join!(
        scenario::run(target.clone(), options(Scenario::OneToOne, 3, &metrics_url)),
        scenario::run(
            target.clone(),
            options(Scenario::Group { size: 4 }, 1, &metrics_url)
        ),
    );
    done.store(true, Ordering::SeqCst);
    let (one_to_one, group) = (one_to_one.expect("run"), group.expect("run"));
    // 3 consultations × 2 subscribers × 1 other publisher × 2 kinds.
    check(&one_to_one, 12);
    // 4 subscribers × 3 other publishers × 2 kinds.
    check(&group, 24);

    let (reporting, named) = watcher.await.expect("watcher");
    assert!(
        reporting >= 1.0,
        "consultations with quality reports counted in /metrics"
    );
    assert_eq!(named, None, "a scrape named a consultation");

    let page = http_get(&metrics_url).await.expect("metrics");
    let buckets = histogram_buckets(&page, "teleconsult_forwarding_latency_seconds");
    assert!(
        buckets
            .last()
            .is_some_and(|b| b.0.is_infinite() && b.1 > 0.0),
        "forwarding latency histogram has samples: {buckets:?}"
    );
    assert_eq!(
        metric_sum(&page, "teleconsult_forwarding_latency_seconds_count"),
        buckets.last().map_or(0.0, |b| b.1)
    );
    // Everyone left: the consultations' quality reports are forgotten.
    let mut gone = false;
    for _ in 0..100 {
        let page = http_get(&metrics_url).await.expect("metrics");
        if metric_sum(&page, "teleconsult_consultations_reporting_quality") == 0.0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "ended consultations' quality reports forgotten");
    server.shutdown().await.expect("clean shutdown");
}
