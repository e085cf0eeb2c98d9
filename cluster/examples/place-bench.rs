//! Placement decision time against a real store (docs/benchmarks.md, issue 14):
//!
//!     cargo run --release -p teleconsult-cluster --example place-bench -- MONGODB_URI [N]
//!
//! Three live nodes' heartbeats, then N fresh consultations placed (each: read the placement,
//! read the live nodes, two random choices, claim by unique insert) and the same N looked up
//! again while their leases run (two reads). Prints p50/p95/max per kind as a markdown table.
//! Uses its own database (dropped at the end).

use std::time::{Duration, Instant};
use teleconsult_store::{ClusterStore, MongoStore, NodeRecord, NodeState};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        v.len(),
        ms(pct(0.50)),
        ms(pct(0.95)),
        ms(*v.last().unwrap())
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let uri = args.next().ok_or("usage: place-bench MONGODB_URI [N]")?;
    let n: usize = args.next().map_or(Ok(500), |s| s.parse())?;
    let database = format!("place_bench_{:08x}", rand::random::<u32>());
    let store = MongoStore::open(&uri, &database).await?;
    for (i, cpu) in [0.2, 0.5, 0.8].into_iter().enumerate() {
        let now = now_ms();
        store
            .heartbeat(&NodeRecord {
                id: format!("bench-{i}"),
                public_url: format!("http://127.0.0.1:{}", 8081 + i),
                media_addr: "127.0.0.1:40000".into(),
                region: None,
                state: NodeState::Serving,
                cpu,
                participants: 0,
                consultations: 0,
                heartbeat_at: now,
                lease_until: now + 600_000,
            })
            .await?;
    }
    let mut rng = rand::rngs::StdRng::from_entropy();
    let (mut claims, mut lookups) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let started = Instant::now();
        let owner = teleconsult_cluster::place(
            &store,
            &format!("c-{i}"),
            None,
            now_ms(),
            600_000,
            &mut rng,
        )
        .await?;
        claims.push(started.elapsed());
        assert!(owner.claimed);
    }
    for i in 0..n {
        let started = Instant::now();
        let owner = teleconsult_cluster::place(
            &store,
            &format!("c-{i}"),
            None,
            now_ms(),
            600_000,
            &mut rng,
        )
        .await?;
        lookups.push(started.elapsed());
        assert!(!owner.claimed);
    }
    println!("| decision | n | p50 | p95 | max |\n| --- | --- | --- | --- | --- |");
    summary("new consultation (2 reads + claim)", claims);
    summary("held placement (2 reads)", lookups);
    store.database().drop().await?;
    Ok(())
}

use rand::SeedableRng;
