//! The live image: written a chunk at a time while writes, deletes, new keys,
//! compactions and compaction steps go on between chunks, it must give the
//! very bytes the one-shot image of the store at its start gives.
//!
//! `EMBER_IMAGE_LIVE_CASES` scales the number of random cases (default 300);
//! a failing case prints its seed, and `EMBER_IMAGE_LIVE_SEED` replays one.

use ember::mvcc::*;

#[path = "support/rng.rs"]
mod rng;

use rng::Rng;

/// Keys from a small space, so they collide, are deleted and come back.
fn random_key(rng: &mut Rng, space: u64) -> Vec<u8> {
    format!("k/{:03}", rng.below(space)).into_bytes()
}

fn one_shot(store: &Store, chunk_bytes: usize) -> Vec<u8> {
    let mut writer = store.image();
    let mut out = Vec::new();
    while let Some(chunk) = writer.next_chunk(chunk_bytes) {
        out.extend(chunk);
    }
    out
}

fn restore(bytes: &[u8]) -> Store {
    let mut reader = ImageReader::new(StoreConfig::default());
    reader.feed(bytes).expect("the image reads back");
    reader.finish().expect("the image is complete")
}

/// One random change: a put (sometimes with a lease and a large value), a
/// single or range delete, a lease revoke, a compaction, or compaction steps.
fn random_change(store: &mut Store, rng: &mut Rng, space: u64) {
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
        75..=84 => {
            let (low, high) = (store.compact_revision() + 1, store.current_revision());
            if low <= high {
                store.compact(low + rng.below(high - low + 1)).unwrap();
            }
        }
        _ => {
            store.compact_step(1 + rng.below(20) as usize);
        }
    }
}

fn run_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let space = 5 + rng.below(200);
    let mut store = Store::default();
    for _ in 0..rng.below(600) {
        random_change(&mut store, &mut rng, space);
    }
    let expected = one_shot(&store, 1 + rng.below(4096) as usize);
    let expected_hash = store.hash_kv(0).unwrap();
    let mut image = store.begin_image();
    assert_eq!(image.revision(), store.current_revision());
    let mut got = Vec::new();
    loop {
        for _ in 0..rng.below(30) {
            random_change(&mut store, &mut rng, space);
        }
        let limit = if rng.chance(50) { 64 } else { 8192 };
        let max_bytes = 1 + rng.below(limit) as usize;
        let Some(chunk) = image.next_chunk(&store, max_bytes) else { break };
        assert!(!chunk.is_empty() && chunk.len() <= max_bytes, "chunk of {}", chunk.len());
        got.extend(chunk);
    }
    assert!(image.is_done());
    assert_eq!(got, expected, "the live image differs from the one-shot image at its start");
    store.end_image(image);
    store.compact_all();
    store.check_invariants();
    let restored = restore(&got);
    restored.check_invariants();
    assert_eq!(restored.hash_kv(0).unwrap(), expected_hash);
}

#[test]
fn a_live_image_equals_the_one_shot_image_at_its_start() {
    let cases: u64 =
        std::env::var("EMBER_IMAGE_LIVE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let seeds: Vec<u64> = match std::env::var("EMBER_IMAGE_LIVE_SEED") {
        Ok(seed) => vec![seed.parse().expect("a seed is a number")],
        Err(_) => (0..cases).map(|i| i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x1ee7).collect(),
    };
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| run_case(seed));
        assert!(outcome.is_ok(), "case failed: EMBER_IMAGE_LIVE_SEED={seed}");
    }
}

fn put(store: &mut Store, key: &str, value: &str) {
    let request = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
    store.apply_put(&request).unwrap();
}

fn delete(store: &mut Store, key: &str) {
    let request = DeleteRangeRequest { key: key.into(), ..Default::default() };
    store.apply_delete_range(&request).unwrap();
}

/// A compaction started after the image began waits for it: the versions
/// between the two compact revisions are still written, then the
/// compaction goes on once the image ends.
#[test]
fn a_later_compaction_waits_for_the_open_image() {
    let mut store = Store::default();
    for v in ["1", "2", "3", "4"] {
        put(&mut store, "a", v);
        put(&mut store, "b", v);
    }
    let expected = one_shot(&store, 10);
    let mut image = store.begin_image();
    store.compact(store.current_revision()).unwrap();
    assert!(store.compaction_paused());
    assert!(!store.compact_step(1000), "paused: nothing may be dropped yet");
    let mut got = Vec::new();
    while let Some(chunk) = image.next_chunk(&store, 16) {
        got.extend(chunk);
        assert!(!store.compact_step(1000));
    }
    assert_eq!(got, expected);
    store.end_image(image);
    assert!(!store.compaction_paused());
    assert!(store.compact_step(1000));
    assert!(!store.compaction_pending());
    store.check_invariants();
}

/// Keys removed by the image's own compaction free their ids; new keys that
/// reuse them while the image is open are not mistaken for the old ones.
#[test]
fn key_ids_reused_during_an_image_do_not_confuse_it() {
    let mut store = Store::default();
    for i in 0..50 {
        put(&mut store, &format!("old/{i:02}"), "x");
    }
    for i in 0..50 {
        delete(&mut store, &format!("old/{i:02}"));
    }
    put(&mut store, "stay", "y");
    store.compact(store.current_revision()).unwrap();
    let expected = one_shot(&store, 100);
    let mut image = store.begin_image();
    let mut got = image.next_chunk(&store, 20).unwrap();
    assert!(!store.compaction_paused(), "the image's own compaction goes on");
    assert!(store.compact_step(10_000));
    for i in 0..50 {
        put(&mut store, &format!("new/{i:02}"), "z");
        put(&mut store, &format!("a/{i:02}"), "z");
    }
    while let Some(chunk) = image.next_chunk(&store, 7) {
        got.extend(chunk);
    }
    assert_eq!(got, expected);
    store.end_image(image);
    store.check_invariants();
}
