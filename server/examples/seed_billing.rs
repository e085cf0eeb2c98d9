//! Benchmark helper: seed N consultation summaries into the embedded store, fast.
//!
//! `teleconsult billing seed` writes through the `Store` trait, one durable (fsync'd) upsert per
//! summary: right for production, far too slow to seed a million rows. This example lets the
//! store create its schema (`teleconsult_store::open`), then inserts the rows itself in one SQLite
//! transaction. It therefore knows the embedded store's `consultations` table: if that table
//! changes, change the INSERT below (the benchmark in docs/benchmarks.md says how to run it).
//!
//! ```sh
//! cargo run --release -p teleconsult --example seed_billing -- DATA_DIR 1000000
//! ```

use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: seed_billing DATA_DIR COUNT");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let count: u64 = count.parse()?;
    // Creates the database and its schema.
    drop(teleconsult_store::open("", "teleconsult", &dir).await?);
    let secret = teleconsult::config::DEV_SIGNING_SECRET.as_bytes();
    let start = teleconsult::billing::time::parse("2026-01-01")?;
    let mut conn = rusqlite::Connection::open(dir.join("teleconsult.sqlite3"))?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT OR REPLACE INTO consultations (consultation, practitioner, patient_pseudonym, \
             start, \"end\", billable_ms, participants, recovered) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for i in 0..count {
            let consultation = format!("seed-{i:09}");
            let billable_ms = ((i * 7919) % 3_600_000) as i64;
            let begin = start + i as i64 * 60_000;
            insert.execute(rusqlite::params![
                consultation,
                format!("Dr Seed {}", i % 50),
                teleconsult::billing::patient_pseudonym(secret, &consultation, "seed patient"),
                begin,
                begin + billable_ms + 30_000,
                billable_ms,
                2 + (i % 3) as i64,
                i % 1000 == 0,
            ])?;
        }
    }
    tx.commit()?;
    eprintln!("seeded {count} consultation summaries in {}", dir.display());
    Ok(())
}
