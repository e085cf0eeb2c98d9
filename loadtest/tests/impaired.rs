//! The load generator's impaired-link scenario against an in-process server (about 40 s): a
//! simulcast publisher, one subscriber whose downlink is capped to 300 kbit/s with 100 ms of
//! delay for 15 s (`teleconsult_loadtest::netem`), and a control subscriber on a clear link.
//! Asserts what adaptation must do — the impaired subscriber drops to the lowest layer under the
//! cap, its estimate falls below what the top layer needs and climbs back, it returns to the top
//! layer after the cap is lifted; the control subscriber is never moved to the lowest layer —
//! and that the report and its plot are written. No timing is asserted: the deadlines are the
//! scenario's own windows.

use std::sync::Arc;
use std::time::Duration;
use teleconsult::config::Config;
use teleconsult_loadtest::impaired::{self, ImpairedOptions};
use teleconsult_loadtest::target::{Target, Teleconsult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_subscriber_drops_to_the_lowest_layer_and_climbs_back() {
    let config = Config::for_tests();
    let server = teleconsult::server::start(config.clone())
        .await
        .expect("server starts");
    let target: Arc<dyn Target> = Arc::new(Teleconsult::new(
        format!("ws://{}/ws", server.http_addr),
        config,
        server.state.store.clone(),
    ));
    let options = ImpairedOptions {
        impaired: 1,
        control: true,
        rate_kbps: Some(300),
        delay_ms: 100,
        loss_percent: 0.0,
        queue_packets: 100,
        before: Duration::from_secs(8),
        during: Duration::from_secs(15),
        after: Duration::from_secs(20),
    };
    let report = impaired::run(target, options).await.expect("the run");
    let table = impaired::table(&report);
    assert!(
        report.errors.is_empty(),
        "errors: {:?}\n{table}",
        report.errors
    );
    assert_eq!(report.subscribers.len(), 2);
    let capped = report
        .subscribers
        .iter()
        .find(|s| s.impaired)
        .expect("impaired");
    let control = report
        .subscribers
        .iter()
        .find(|s| !s.impaired)
        .expect("control");
    let (from, until) = (report.impaired_from, report.impaired_until);

    // Before the cap, the impaired subscriber was above the lowest layer like the control.
    assert!(
        capped
            .points
            .iter()
            .any(|p| p.t < from && p.received_layer.is_some_and(|l| l > 0)),
        "above the lowest layer before the cap\n{table}"
    );
    // Under the cap: the lowest layer, and an estimate below what the top layer needs.
    assert!(
        capped.down_after_s.is_some(),
        "the lowest layer under the cap\n{table}"
    );
    assert!(
        capped
            .points
            .iter()
            .filter(|p| p.t > from + 5.0 && p.t <= until)
            .filter_map(|p| p.estimate_kbps)
            .any(|e| e < 600.0),
        "the estimate fell under the cap\n{table}"
    );
    // Lifted: the top layer again, and the estimate above 1 Mbit/s.
    assert!(
        capped.up_after_s.is_some(),
        "the top layer after the cap\n{table}"
    );
    assert!(
        capped
            .points
            .iter()
            .filter(|p| p.t > until)
            .filter_map(|p| p.estimate_kbps)
            .any(|e| e > 1000.0),
        "the estimate climbed back\n{table}"
    );
    // The control subscriber's link stayed clear: never moved to the lowest layer once up.
    let settled: Vec<_> = control.points.iter().filter(|p| p.t > 5.0).collect();
    assert!(
        settled
            .iter()
            .all(|p| p.received_layer.is_some_and(|l| l > 0)),
        "the control subscriber kept a higher layer\n{table}"
    );
    assert_eq!(control.link_dropped, 0);

    // The report: JSON, table and the plot (an SVG with both panels).
    let dir = std::env::temp_dir().join(format!("impaired-report-{}", std::process::id()));
    impaired::write(&report, &dir).expect("written");
    let svg = std::fs::read_to_string(dir.join("impaired.svg")).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("Layer received"),
        "the plot"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("impaired.json")).expect("json"))
            .expect("parses");
    assert_eq!(json["subscribers"].as_array().map(Vec::len), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await.expect("the server stops");
}
