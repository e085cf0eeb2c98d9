//! What one Argon2id hash (and one verification) costs on this machine with the parameters in
//! `password.rs`: `cargo run -p teleconsult-accounts --example hash_cost` (the dev profile builds
//! `argon2` and `blake2` at opt-level 3, as release does). Prints the median of 11 runs each.

use std::time::Instant;
use teleconsult_accounts::password;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut hashes = Vec::new();
    let mut phc = String::new();
    for _ in 0..11 {
        let t = Instant::now();
        phc = password::hash("correct horse battery staple").expect("hash");
        hashes.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut verifies = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        assert!(password::verify("correct horse battery staple", &phc));
        verifies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "argon2id m={} KiB t={} p={}: hash median {:.1} ms, verify median {:.1} ms",
        password::MEMORY_KIB,
        password::ITERATIONS,
        password::PARALLELISM,
        median(hashes),
        median(verifies)
    );
}
