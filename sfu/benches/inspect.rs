//! The cost of the SFU's view of a VP8 frame (`teleconsult_sfu::inspect::vp8_view`), paid once
//! per video frame (the first packet of each): a frame start whose bytes past the clear header
//! are random (what an end-to-end encrypted frame looks like), and a packet that does not start
//! a frame (what most packets are: returned at once).
//!
//! Run: `cargo bench -p teleconsult-sfu --bench inspect`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use teleconsult_sfu::inspect::vp8_view;

fn random(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // Descriptor (X=1, I=1, 15-bit picture id), then a frame tag and ciphertext.
    let mut key = vec![
        0x90, 0x80, 0x81, 0x02, 0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
    ];
    key.extend(random(1100, 0x9e37_79b9_7f4a_7c15));
    let mut delta = vec![0x90, 0x80, 0x81, 0x03, 0x51, 0x02, 0x00];
    delta.extend(random(1100, 0x2545_f491_4f6c_dd1d));
    let mut continuation = delta.clone();
    continuation[0] = 0x80;
    c.bench_function("vp8_view keyframe start (ciphertext)", |b| {
        b.iter(|| vp8_view(black_box(&key)))
    });
    c.bench_function("vp8_view delta frame start (ciphertext)", |b| {
        b.iter(|| vp8_view(black_box(&delta)))
    });
    c.bench_function("vp8_view continuation packet", |b| {
        b.iter(|| vp8_view(black_box(&continuation)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
