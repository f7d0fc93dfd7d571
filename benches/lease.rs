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

// The counting allocator is the one unsafe part: it wraps the system one.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ember::lease::{LeaseTable, REVOKE_RATE_PER_SEC};

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the counter
// only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ROUNDS: usize = 20;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// (id, ttl) pairs: positive ids, TTLs from 10 s to an hour.
fn leases(count: usize) -> Vec<(i64, i64)> {
    let mut state = 42;
    (0..count)
        .map(|_| {
            let id = (splitmix64(&mut state) >> 1).max(1) as i64;
            (id, 10 + (splitmix64(&mut state) % 3590) as i64)
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

    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let table = LeaseTable::from_records(records.iter().copied(), 0);
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    println!("lease_table_bytes_per_lease={:.1}", bytes as f64 / table.len() as f64);

    let grant_ns = best_ns(|| {
        let mut t = LeaseTable::new();
        let started = Instant::now();
        for (id, ttl) in &records {
            let _ = t.grant(*id, *ttl, 0);
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
