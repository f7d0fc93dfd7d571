//! How long a keyspace hash holds the loop: the whole hash at once (what a
//! node did before hashes were sliced) against the longest slice of a
//! sliced hash of 256 KiB of work (`HASH_SLICE_BYTES` in
//! `src/server/hashes.rs`), with puts applied between slices as a busy
//! node would.
//!
//! `cargo bench --bench hash` builds a store of 50,000 keys with 1 KiB
//! values (about 52 MB of keys and values) and prints one line:
//!
//! * `whole_ms`: the whole hash in one call, best of 3;
//! * `slice_p50_us`, `slice_max_us`: the median and the longest slice (on a
//!   busy machine the longest also holds preemptions: compare with the
//!   median);
//! * `slices`: how many slices the hash took.
//!
//! `EMBER_BENCH_HASH_KEYS` and `EMBER_BENCH_HASH_VALUE_BYTES` change the
//! store's shape.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ember::mvcc::{HashStep, PutRequest, Store};

const SLICE_BYTES: usize = 256 << 10;
const PUTS_BETWEEN_SLICES: u64 = 10;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn put(store: &mut Store, k: u64, value_bytes: usize) {
    let request = PutRequest {
        key: format!("/registry/pods/ns-{:04}/pod-{k:08}", k % 1000).into_bytes(),
        value: vec![(k % 251) as u8; value_bytes],
        ..Default::default()
    };
    store.apply_put(&request).unwrap();
}

fn main() {
    let keys = env_or("EMBER_BENCH_HASH_KEYS", 50_000);
    let value_bytes = env_or("EMBER_BENCH_HASH_VALUE_BYTES", 1024) as usize;
    let mut store = Store::default();
    for k in 0..keys {
        put(&mut store, k, value_bytes);
    }
    let mut whole = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        black_box(store.hash_kv(0).unwrap());
        whole = whole.min(started.elapsed());
    }
    let expected = store.hash_kv(0).unwrap();
    let mut hash = store.begin_hash(0).unwrap();
    let mut slices = Vec::new();
    let mut next = 0;
    let got = loop {
        let started = Instant::now();
        let step = hash.step(&store, SLICE_BYTES);
        slices.push(started.elapsed());
        match step {
            HashStep::Done(got) => break got,
            HashStep::Aborted => panic!("no compaction ran"),
            HashStep::Pending => {}
        }
        for _ in 0..PUTS_BETWEEN_SLICES {
            put(&mut store, next % keys, value_bytes);
            next += 7919;
        }
    };
    assert_eq!(got, expected, "the sliced hash differs from the whole one");
    slices.sort();
    println!(
        "hash keys={keys} value_bytes={value_bytes} whole_ms={:.1} slice_p50_us={} \
         slice_max_us={} slices={}",
        whole.as_secs_f64() * 1000.0,
        slices[slices.len() / 2].as_micros(),
        slices[slices.len() - 1].as_micros(),
        slices.len()
    );
}
