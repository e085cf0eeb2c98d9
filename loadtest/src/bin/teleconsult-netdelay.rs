//! A userspace delay step for impaired-link tests: this kernel has no `sch_netem`, so packets an
//! `nft` rule sends to an NFQUEUE (`... queue num N`) are held here for a fixed time and then
//! accepted, in arrival order. Run it inside the network namespace whose rule queues the packets
//! (nfnetlink is per namespace), before the rule is loaded (a queue without a listener drops).
//!
//! `teleconsult-netdelay --queue 7 --delay-ms 100` prints `ready` once bound, then one line per
//! second with what it has delayed. Linux only; needs CAP_NET_ADMIN. Test tooling, not part of the
//! server.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use nfq::{Queue, Verdict};

#[derive(Parser)]
#[command(about = "Delay packets queued by nft (NFQUEUE) by a fixed time, then accept them")]
struct Args {
    /// The NFQUEUE number the nft rule sends to.
    #[arg(long, default_value_t = 0)]
    queue: u16,
    /// How long each packet is held.
    #[arg(long, default_value_t = 100)]
    delay_ms: u64,
    /// Packets held at most (beyond it, the kernel drops: a router's buffer).
    #[arg(long, default_value_t = 4096)]
    max_held: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let delay = Duration::from_millis(args.delay_ms);
    let mut queue = Queue::open()?;
    queue.bind(args.queue)?;
    queue.set_queue_max_len(args.queue, args.max_held)?;
    // Only the verdict is sent back; the payload is not needed here beyond its length.
    queue.set_copy_range(args.queue, 64)?;
    queue.set_nonblocking(true);
    println!("ready");
    std::io::stdout().flush()?;

    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let (mut delayed, mut report) = (0u64, Instant::now());
    loop {
        // Take in everything waiting now.
        loop {
            match queue.recv() {
                Ok(msg) => held.push_back((Instant::now() + delay, msg)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Release what is due, oldest first (every packet waits the same time: order is kept).
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, mut msg) = held.pop_front().expect("front checked");
            msg.set_verdict(Verdict::Accept);
            queue.verdict(msg)?;
            delayed += 1;
        }
        if report.elapsed() >= Duration::from_secs(1) {
            println!("delayed {delayed} held {}", held.len());
            report = Instant::now();
        }
        // No file descriptor to poll on in this crate's API: a short sleep bounds the error of
        // the delay to about a millisecond at a negligible CPU cost.
        let next = held
            .front()
            .map(|(due, _)| due.saturating_duration_since(Instant::now()));
        std::thread::sleep(
            next.unwrap_or(Duration::from_millis(1))
                .min(Duration::from_millis(1)),
        );
    }
}
