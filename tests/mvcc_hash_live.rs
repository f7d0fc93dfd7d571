//! The sliced hash: taken a slice at a time while writes, deletes, new
//! keys and compaction steps go on between slices, it must give the very
//! hash the one-call `hash_kv` gives for the store at its start, at the
//! same revision; a compaction between slices aborts it, never a wrong
//! hash.
//!
//! `EMBER_HASH_LIVE_CASES` scales the number of random cases (default 300);
//! a failing case prints its seed, and `EMBER_HASH_LIVE_SEED` replays one.

use ember::mvcc::*;

#[path = "support/rng.rs"]
mod rng;

use rng::Rng;

fn random_key(rng: &mut Rng, space: u64) -> Vec<u8> {
    format!("k/{:03}", rng.below(space)).into_bytes()
}

/// One random change; a compaction only when `compact` says so. Returns
/// true when it compacted.
fn random_change(store: &mut Store, rng: &mut Rng, space: u64, compact: bool) -> bool {
    match rng.below(100) {
        0..=54 => {
            let len = if rng.chance(5) { 3000 } else { rng.below(40) as usize };
            let value = vec![rng.below(256) as u8; len];
            let lease = if rng.chance(20) { 1 + rng.below(3) as i64 } else { 0 };
            let key = random_key(rng, space);
            store.apply_put(&PutRequest { key, value, lease, ..Default::default() }).unwrap();
        }
        55..=69 => {
            let key = random_key(rng, space);
            let range_end = if rng.chance(30) { random_key(rng, space) } else { Vec::new() };
            let _ =
                store.apply_delete_range(&DeleteRangeRequest { key, range_end, prev_kv: false });
        }
        70..=74 => {
            store.apply_revoke_lease(1 + rng.below(3) as i64);
        }
        75..=84 if compact => {
            let (low, high) = (store.compact_revision() + 1, store.current_revision());
            if low <= high {
                store.compact(low + rng.below(high - low + 1)).unwrap();
                return true;
            }
        }
        _ => {
            store.compact_step(1 + rng.below(20) as usize);
        }
    }
    false
}

fn run_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let space = 5 + rng.below(200);
    let mut store = Store::default();
    for _ in 0..rng.below(600) {
        random_change(&mut store, &mut rng, space, true);
    }
    let (low, high) = (store.compact_revision().max(1), store.current_revision());
    let rev = low + rng.below(high - low + 1);
    let expected = store.hash_kv(rev).unwrap();
    let mut hash = store.begin_hash(rev).unwrap();
    // A quarter of the cases compact between slices, and must abort.
    let may_compact = rng.chance(25);
    let mut compacted = false;
    loop {
        let limit = if rng.chance(50) { 64 } else { 8192 };
        let budget = 1 + rng.below(limit) as usize;
        match hash.step(&store, budget) {
            HashStep::Done(got) => {
                assert!(!compacted, "a hash finished across a compaction");
                assert_eq!(got, expected, "the sliced hash differs from the whole one");
                break;
            }
            HashStep::Aborted => {
                assert!(compacted, "aborted without a compaction");
                break;
            }
            HashStep::Pending => {}
        }
        for _ in 0..rng.below(30) {
            compacted |= random_change(&mut store, &mut rng, space, may_compact);
        }
    }
}

#[test]
fn a_sliced_hash_equals_the_whole_hash_at_its_start() {
    let cases: u64 =
        std::env::var("EMBER_HASH_LIVE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let seeds: Vec<u64> = match std::env::var("EMBER_HASH_LIVE_SEED") {
        Ok(seed) => vec![seed.parse().expect("a seed is a number")],
        Err(_) => (0..cases).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x4a5).collect(),
    };
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| run_case(seed));
        assert!(outcome.is_ok(), "case failed: EMBER_HASH_LIVE_SEED={seed}");
    }
}

#[test]
fn a_slice_stops_near_its_budget() {
    let mut store = Store::default();
    for i in 0..1000 {
        let request = PutRequest {
            key: format!("key/{i:04}").into_bytes(),
            value: vec![7; 100],
            ..Default::default()
        };
        store.apply_put(&request).unwrap();
    }
    let mut hash = store.begin_hash(0).unwrap();
    let mut slices = 0;
    while hash.step(&store, 10 * 1024) == HashStep::Pending {
        slices += 1;
        // A key costs its bytes, 64 of overhead and HASH_KEY_COST_BYTES:
        // about 240 bytes here, so 10 KiB is about 43 keys.
        assert!(hash.keys_visited() <= slices * 44, "a slice overran its budget");
    }
    assert!(slices >= 20, "{slices} slices for 1,000 keys of 10 KiB each");
    assert_eq!(hash.keys_visited(), 1000);
}
