//! Memory and speed of the lease table.
//!
//! `cargo bench --bench lease` grants `EMBER_BENCH_LEASES` leases (default
//! 10,000, the default `--max-leases`) with seeded random ids and TTLs, and
//! prints `name=value` lines:
//!
//! * `lease_table_bytes_per_lease`: heap bytes per lease (counting allocator);
//! * `lease_grant_ns`, `lease_renew_ns`: mean time of one grant, one renewal;
//! * `lease_scan_none_expired_us`: one `take_expired` over the full table
//!   when nothing is due, the cost the leader pays on every tick;
//! * `lease_promote_us`: one `promote` of the full table.
//!
//! Timings are the best of 20 rounds.

mod counting_alloc;

use std::hint::black_box;
use std::time::Instant;

use counting_alloc::live_bytes;
use ember::lease::{LeaseTable, REVOKE_RATE_PER_SEC};
use ember::raft::Rng;

const ROUNDS: usize = 20;

/// (id, ttl) pairs: positive ids, TTLs from 10 s to an hour.
fn leases(count: usize) -> Vec<(i64, i64)> {
    let mut rng = Rng::new(42);
    (0..count)
        .map(|_| {
            let id = (rng.next_u64() >> 1).max(1) as i64;
            (id, 10 + rng.below(3590) as i64)
        })
        .collect()
}

fn best_ns(mut round: impl FnMut() -> u64) -> u64 {
    (0..ROUNDS).map(|_| round()).min().unwrap_or(0)
}

fn main() {
    let count: usize =
        std::env::var("EMBER_BENCH_LEASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let records = leases(count);

    let before = live_bytes();
    let table = LeaseTable::from_records(records.iter().map(|(id, ttl)| (*id, *ttl, None)), 0);
    let bytes = live_bytes() - before;
    println!("lease_table_bytes_per_lease={:.1}", bytes as f64 / table.len() as f64);

    let grant_ns = best_ns(|| {
        let mut t = LeaseTable::new();
        let started = Instant::now();
        for (id, ttl) in &records {
            let _ = t.grant(*id, *ttl, None, 0);
        }
        started.elapsed().as_nanos() as u64 / count as u64
    });
    println!("lease_grant_ns={grant_ns}");

    let mut t = table.clone();
    let renew_ns = best_ns(|| {
        let started = Instant::now();
        for (id, _) in &records {
            let _ = black_box(t.renew(*id, 1_000));
        }
        started.elapsed().as_nanos() as u64 / count as u64
    });
    println!("lease_renew_ns={renew_ns}");

    let per_tick = (REVOKE_RATE_PER_SEC / 10) as usize;
    let scan_ns = best_ns(|| {
        let started = Instant::now();
        let expired = t.take_expired(5_000, per_tick, 2_000);
        assert!(expired.is_empty(), "nothing is due at 5 s");
        started.elapsed().as_nanos() as u64
    });
    println!("lease_scan_none_expired_us={:.1}", scan_ns as f64 / 1000.0);

    let promote_ns = best_ns(|| {
        let started = Instant::now();
        t.promote(black_box(9_000));
        started.elapsed().as_nanos() as u64
    });
    println!("lease_promote_us={:.1}", promote_ns as f64 / 1000.0);
}
