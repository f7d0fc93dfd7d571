//! How long a snapshot image holds the loop: the whole image built at once
//! (what a node did before snapshot jobs were sliced) against the longest
//! slice of a live image built 256 KiB at a time (`SNAPSHOT_SLICE_BYTES` in
//! `src/server/ready.rs`) while puts go on between slices.
//!
//! `cargo bench --bench snapshot` builds stores of 12,500 to 100,000 keys
//! with 256-byte values (images of about 3.5 to 28 MB) and prints, per size,
//! one line:
//!
//! * `one_shot_ms`: the whole image, best of 3;
//! * `slice_p50_us`, `slice_max_us`: the median and the longest slice of a
//!   live image, with 100 puts applied between slices (on a busy machine
//!   the longest also holds preemptions: compare with the median);
//! * `slices`: how many slices the image took.
//!
//! `EMBER_BENCH_SNAPSHOT_KEYS` replaces the sizes by one key count.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ember::mvcc::{PutRequest, Store};

const SLICE_BYTES: usize = 256 << 10;
const VALUE_BYTES: usize = 256;
const PUTS_BETWEEN_SLICES: usize = 100;

fn put(store: &mut Store, i: u64, keys: u64) {
    // A multiplicative hash spreads the writes over the keyspace.
    let k = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % keys;
    let request = PutRequest {
        key: format!("/registry/pods/ns-{:04}/pod-{k:08}", k % 1000).into_bytes(),
        value: vec![(i % 251) as u8; VALUE_BYTES],
        ..Default::default()
    };
    store.apply_put(&request).unwrap();
}

fn filled(keys: u64) -> Store {
    let mut store = Store::default();
    for i in 0..keys {
        let request = PutRequest {
            key: format!("/registry/pods/ns-{:04}/pod-{i:08}", i % 1000).into_bytes(),
            value: vec![(i % 251) as u8; VALUE_BYTES],
            ..Default::default()
        };
        store.apply_put(&request).unwrap();
    }
    store
}

fn one_shot(store: &Store) -> (Duration, usize) {
    let started = Instant::now();
    let mut writer = store.image();
    let mut image = Vec::new();
    while let Some(chunk) = writer.next_chunk(1 << 20) {
        image.extend_from_slice(&chunk);
    }
    (started.elapsed(), black_box(image).len())
}

/// Slice times, ascending, and the bytes written.
fn sliced(store: &mut Store, keys: u64) -> (Vec<Duration>, usize) {
    let mut image = store.begin_image();
    let (mut times, mut bytes) = (Vec::new(), 0);
    let mut i = keys;
    loop {
        let started = Instant::now();
        let chunk = image.next_chunk(store, SLICE_BYTES);
        let elapsed = started.elapsed();
        let Some(chunk) = chunk else { break };
        times.push(elapsed);
        bytes += black_box(chunk).len();
        for _ in 0..PUTS_BETWEEN_SLICES {
            put(store, i, keys);
            i += 1;
        }
    }
    store.end_image(image);
    times.sort_unstable();
    (times, bytes)
}

fn main() {
    let sizes: Vec<u64> = match std::env::var("EMBER_BENCH_SNAPSHOT_KEYS") {
        Ok(keys) => vec![keys.parse().expect("a key count")],
        Err(_) => vec![12_500, 25_000, 50_000, 100_000],
    };
    for keys in sizes {
        let mut store = filled(keys);
        let (one_shot_time, image_bytes) =
            (0..3).map(|_| one_shot(&store)).min().expect("three runs");
        let (times, sliced_bytes) = sliced(&mut store, keys);
        assert_eq!(sliced_bytes, image_bytes, "the live image describes the start");
        println!(
            "keys={keys} image_bytes={image_bytes} one_shot_ms={:.1} slice_p50_us={} \
             slice_max_us={} slices={}",
            one_shot_time.as_secs_f64() * 1e3,
            times[times.len() / 2].as_micros(),
            times[times.len() - 1].as_micros(),
            times.len()
        );
    }
}
