//! Export benchmark of the store alone: seed N consultation summaries, then stream them all
//! through `Store::export_summaries`, reporting wall time and the process's peak RSS.
//!
//!   cargo run --release -p teleconsult-store --example export_bench -- seed DIR N
//!   cargo run --release -p teleconsult-store --example export_bench -- export DIR
//!   cargo run --release -p teleconsult-store --example export_bench -- seed-mongo URI DB N
//!   cargo run --release -p teleconsult-store --example export_bench -- export-mongo URI DB
//!
//! Seeding and exporting are separate processes, so the export's peak RSS is its own.
//! Embedded seeding writes rows straight into the database file in one transaction (through the
//! trait, a million `synchronous=FULL` upserts would take hours of fsyncs); MongoDB seeding
//! uses the trait's upserts, 32 at a time.

use futures_util::StreamExt;
use std::path::Path;
use std::time::Instant;
use teleconsult_store::{ConsultationSummary, ExportQuery, SqliteStore, Store};

fn summary(k: u64) -> ConsultationSummary {
    ConsultationSummary {
        consultation: format!("consultation-{k:08}"),
        practitioner: format!("dr-{:03}", k % 200),
        patient_pseudonym: format!("pseudonym-{:016x}", k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        start: 1_700_000_000_000 + (k as i64) * 30_000,
        end: Some(1_700_000_000_000 + (k as i64) * 30_000 + 1_200_000),
        billable_ms: 1_150_000 + (k % 50_000) as i64,
        participants: 2 + (k % 3) as u32,
        recovered: k.is_multiple_of(1000),
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn export(store: &dyn Store) {
    let t = Instant::now();
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut st = store.export_summaries(ExportQuery {
        from: 0,
        to: i64::MAX,
        practitioner: None,
    });
    while let Some(row) = st.next().await {
        let row = row.expect("row");
        // Roughly what a CSV line costs, so the loop is not optimised away.
        bytes += (row.consultation.len() + row.patient_pseudonym.len() + 60) as u64;
        rows += 1;
    }
    println!(
        "exported {rows} rows (~{} MiB as CSV) in {:.2} s; peak RSS {:.1} MiB",
        bytes / (1 << 20),
        t.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["seed", dir, n] => {
            let n: u64 = n.parse().expect("N");
            let store = SqliteStore::open(Path::new(dir)).await.expect("open");
            let path = store.path().to_path_buf();
            drop(store);
            let t = Instant::now();
            let mut conn = rusqlite::Connection::open(path).expect("db file");
            let tx = conn.transaction().expect("tx");
            {
                let mut st = tx
                    .prepare(
                        "INSERT OR REPLACE INTO consultations (consultation, practitioner, \
                         patient_pseudonym, start, \"end\", billable_ms, participants, recovered) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .expect("prepare");
                for k in 0..n {
                    let s = summary(k);
                    st.execute(rusqlite::params![
                        s.consultation,
                        s.practitioner,
                        s.patient_pseudonym,
                        s.start,
                        s.end,
                        s.billable_ms,
                        s.participants,
                        s.recovered
                    ])
                    .expect("insert");
                }
            }
            tx.commit().expect("commit");
            println!("seeded {n} rows in {:.1} s", t.elapsed().as_secs_f64());
        }
        ["export", dir] => {
            let store = SqliteStore::open(Path::new(dir)).await.expect("open");
            export(&store).await;
        }
        ["seed-mongo", uri, db, n] => {
            let n: u64 = n.parse().expect("N");
            let store = teleconsult_store::MongoStore::open(uri, db)
                .await
                .expect("open");
            let t = Instant::now();
            let results = futures_util::stream::iter(0..n)
                .map(|k| {
                    let store = &store;
                    async move { store.upsert_consultation_summary(&summary(k)).await }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await;
            assert!(results.iter().all(Result::is_ok), "seeding failed");
            println!("seeded {n} rows in {:.1} s", t.elapsed().as_secs_f64());
        }
        ["export-mongo", uri, db] => {
            let store = teleconsult_store::MongoStore::open(uri, db)
                .await
                .expect("open");
            export(&store).await;
        }
        _ => {
            eprintln!(
                "usage: export_bench seed DIR N | export DIR | seed-mongo URI DB N | export-mongo URI DB"
            );
            std::process::exit(2);
        }
    }
}
