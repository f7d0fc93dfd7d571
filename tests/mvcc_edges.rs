//! Edge cases of the MVCC store, one behaviour per test.

use ember::mvcc::*;

fn put(store: &mut Store, key: &[u8], value: &[u8]) -> u64 {
    let req = PutRequest { key: key.to_vec(), value: value.to_vec(), ..PutRequest::default() };
    store.apply_put(&req).unwrap().revision
}

fn range(store: &Store, key: &[u8], end: &[u8]) -> RangeResponse {
    store
        .range(&RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..RangeRequest::default()
        })
        .unwrap()
}

fn keys_of(resp: &RangeResponse) -> Vec<Vec<u8>> {
    resp.kvs.iter().map(|kv| kv.key.clone()).collect()
}

fn filled() -> Store {
    let mut s = Store::default();
    for k in [&b"a"[..], b"a/1", b"a/2", b"b", b"\xff", b"\xff\xff", b"\xff\xff\x01"] {
        put(&mut s, k, b"v");
    }
    s
}

#[test]
fn revisions_versions_and_tombstones_follow_etcd() {
    let mut s = Store::default();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(put(&mut s, b"k", b"1"), 2);
    assert_eq!(put(&mut s, b"k", b"2"), 3);
    let kv = &range(&s, b"k", b"").kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let del = s.apply_delete_range(&DeleteRangeRequest {
        key: b"k".to_vec(),
        prev_kv: true,
        ..Default::default()
    });
    let del = del.unwrap();
    assert_eq!((del.revision, del.response.deleted), (4, 1));
    assert_eq!(del.response.prev_kvs[0].value, b"2");
    // Deleting nothing takes no revision.
    let again = s
        .apply_delete_range(&DeleteRangeRequest { key: b"k".to_vec(), ..Default::default() })
        .unwrap();
    assert_eq!((again.revision, again.response.deleted, again.events.len()), (4, 0, 0));
    assert_eq!(put(&mut s, b"k", b"3"), 5);
    let kv = &range(&s, b"k", b"").kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    let old =
        s.range(&RangeRequest { key: b"k".to_vec(), revision: 3, ..Default::default() }).unwrap();
    assert_eq!(old.kvs[0].value, b"2");
    let gone =
        s.range(&RangeRequest { key: b"k".to_vec(), revision: 4, ..Default::default() }).unwrap();
    assert!(gone.kvs.is_empty());
}

#[test]
fn range_ends_zero_byte_and_prefixes_of_ff() {
    let s = filled();
    assert_eq!(range(&s, b"b", b"\x00").count, 4);
    assert_eq!(range(&s, b"\x00", b"\x00").count, 7);
    assert_eq!(
        keys_of(&range(&s, b"a/", &prefix_range_end(b"a/"))),
        vec![b"a/1".to_vec(), b"a/2".to_vec()]
    );
    // A prefix of 0xff bytes has no successor: its range is every key ≥ it.
    assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
    assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
    let ff = range(&s, b"\xff\xff", &prefix_range_end(b"\xff\xff"));
    assert_eq!(keys_of(&ff), vec![b"\xff\xff".to_vec(), b"\xff\xff\x01".to_vec()]);
    // Empty results: a missing key, an empty interval, an inverted one.
    assert_eq!(range(&s, b"zz", b"").count, 0);
    assert_eq!(range(&s, b"a/3", b"a/9").count, 0);
    assert_eq!(range(&s, b"b", b"a").count, 0);
}

#[test]
fn limit_one_reports_more_and_the_full_count() {
    let s = filled();
    let req = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"c".to_vec(),
        limit: 1,
        ..Default::default()
    };
    let resp = s.range(&req).unwrap();
    assert_eq!((keys_of(&resp), resp.more, resp.count), (vec![b"a".to_vec()], true, 4));
    let desc = RangeRequest { sort_order: SortOrder::Descend, ..req.clone() };
    assert_eq!(keys_of(&s.range(&desc).unwrap()), vec![b"b".to_vec()]);
    let all = RangeRequest { limit: 4, ..req.clone() };
    assert!(!s.range(&all).unwrap().more);
    let count = RangeRequest { count_only: true, ..req };
    let resp = s.range(&count).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (0, false, 4));
}

#[test]
fn empty_keys_and_bad_revisions_are_typed_errors() {
    let mut s = filled();
    assert_eq!(s.range(&RangeRequest::default()), Err(Error::EmptyKey));
    assert_eq!(s.apply_put(&PutRequest::default()), Err(Error::EmptyKey));
    let future = RangeRequest { key: b"a".to_vec(), revision: 99, ..Default::default() };
    assert_eq!(s.range(&future), Err(Error::FutureRevision { current_revision: 8 }));
    let missing = PutRequest { key: b"nope".to_vec(), ignore_value: true, ..Default::default() };
    assert_eq!(s.apply_put(&missing), Err(Error::KeyNotFound));
    let lease = PutRequest { key: b"nope".to_vec(), ignore_lease: true, ..Default::default() };
    assert_eq!(s.apply_put(&lease), Err(Error::KeyNotFound));
    let both = PutRequest {
        key: b"a".to_vec(),
        value: b"x".to_vec(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(s.apply_put(&both), Err(Error::ValueProvided));
    assert_eq!(s.current_revision(), 8, "errors change nothing");
}

#[test]
fn ignore_value_and_ignore_lease_keep_the_current_ones() {
    let mut s = Store::default();
    let req =
        PutRequest { key: b"k".to_vec(), value: b"v1".to_vec(), lease: 5, ..Default::default() };
    s.apply_put(&req).unwrap();
    let keep_value =
        PutRequest { key: b"k".to_vec(), ignore_value: true, lease: 6, ..Default::default() };
    s.apply_put(&keep_value).unwrap();
    let kv = range(&s, b"k", b"").kvs[0].clone();
    assert_eq!((kv.value.as_slice(), kv.lease, kv.version), (&b"v1"[..], 6, 2));
    let keep_lease = PutRequest {
        key: b"k".to_vec(),
        value: b"v2".to_vec(),
        ignore_lease: true,
        ..Default::default()
    };
    s.apply_put(&keep_lease).unwrap();
    let kv = range(&s, b"k", b"").kvs[0].clone();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"v2"[..], 6));
    assert_eq!(s.lease_keys(6), vec![b"k".to_vec()]);
    assert!(s.lease_keys(5).is_empty());
}

#[test]
fn compaction_at_the_current_revision() {
    let mut s = Store::default();
    put(&mut s, b"k", b"1");
    put(&mut s, b"k", b"2");
    put(&mut s, b"gone", b"x");
    s.apply_delete_range(&DeleteRangeRequest { key: b"gone".to_vec(), ..Default::default() })
        .unwrap();
    let rev = s.current_revision();
    let before = s.hash_kv(0).unwrap();
    s.compact(rev).unwrap();
    // The hash describes what compaction keeps, before and after the steps.
    let logical = s.hash_kv(0).unwrap();
    assert_ne!(before.hash, logical.hash);
    assert_eq!(s.key_count(), 2);
    s.compact_all();
    assert_eq!(s.key_count(), 2, "a tombstone at the compact revision is kept");
    assert_eq!(s.hash_kv(0).unwrap(), logical);
    assert_eq!(range(&s, b"k", b"").kvs[0].value, b"2");
    let old = RangeRequest { key: b"k".to_vec(), revision: rev - 1, ..Default::default() };
    assert_eq!(s.range(&old), Err(Error::Compacted { compact_revision: rev }));
    assert_eq!(s.compact(rev), Err(Error::Compacted { compact_revision: rev }));
    assert_eq!(s.compact(rev + 1), Err(Error::FutureRevision { current_revision: rev }));
    let feed = s.events_since(Revision { main: rev - 1, sub: 0 }, b"k", b"", 10, false);
    assert_eq!(feed, Err(Error::Compacted { compact_revision: rev }));
    let feed = s.events_since(Revision { main: rev, sub: 0 }, b"\x00", b"\x00", 10, false).unwrap();
    assert_eq!(feed.events.len(), 1, "the delete at the compact revision is still in the feed");
    put(&mut s, b"k", b"3");
    s.compact(rev + 1).unwrap();
    s.compact_all();
    assert_eq!(s.key_count(), 1, "a tombstone below the compact revision goes, with its key");
    s.check_invariants();
}

#[test]
fn compaction_proceeds_in_bounded_steps() {
    let mut s = Store::default();
    for i in 0..500 {
        put(&mut s, format!("k{i:03}").as_bytes(), b"1");
    }
    s.apply_delete_range(&DeleteRangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        ..Default::default()
    })
    .unwrap();
    put(&mut s, b"other", b"1");
    s.compact(s.current_revision()).unwrap();
    let mut steps = 0;
    while !s.compact_step(64) {
        steps += 1;
        assert!(s.compaction_pending());
        s.check_invariants();
    }
    assert_eq!(steps, 501 / 64);
    assert_eq!(s.key_count(), 1);
    s.check_invariants();
}

fn cmp(key: &[u8], result: CompareResult, target: CompareTarget) -> Compare {
    Compare { key: key.to_vec(), range_end: Vec::new(), result, target }
}

fn put_op(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp::Put(PutRequest { key: key.to_vec(), value: value.to_vec(), ..Default::default() })
}

#[test]
fn a_failing_compare_runs_the_failure_branch() {
    let mut s = filled();
    let t = TxnRequest {
        compare: vec![cmp(b"a", CompareResult::Equal, CompareTarget::Value(b"other".to_vec()))],
        success: vec![put_op(b"s", b"1")],
        failure: vec![
            put_op(b"f", b"1"),
            RequestOp::Range(RangeRequest { key: b"f".to_vec(), ..Default::default() }),
        ],
    };
    let got = s.apply_txn(&t).unwrap();
    assert!(!got.response.succeeded);
    let ResponseOp::Range(r) = &got.response.responses[1] else { panic!("a range response") };
    assert_eq!(r.kvs[0].mod_revision, got.revision, "reads in a txn see its writes");
    assert_eq!(range(&s, b"s", b"").count, 0);
    // A missing key compares as version 0 and fails value compares.
    let missing = TxnRequest {
        compare: vec![
            cmp(b"zz", CompareResult::Equal, CompareTarget::Version(0)),
            cmp(b"zz", CompareResult::NotEqual, CompareTarget::Value(Vec::new())),
        ],
        ..Default::default()
    };
    assert!(!s.apply_txn(&missing).unwrap().response.succeeded);
    let range_cmp = Compare {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        result: CompareResult::Greater,
        target: CompareTarget::Mod(1),
    };
    let t = TxnRequest { compare: vec![range_cmp], ..Default::default() };
    let got = s.apply_txn(&t).unwrap();
    assert!(got.response.succeeded);
    assert!(got.events.is_empty());
}

#[test]
fn nested_txns_compare_before_any_write() {
    let mut s = Store::default();
    put(&mut s, b"k", b"old");
    let inner = TxnRequest {
        compare: vec![cmp(b"k", CompareResult::Equal, CompareTarget::Value(b"old".to_vec()))],
        success: vec![put_op(b"inner-saw-old", b"1")],
        failure: vec![put_op(b"inner-saw-new", b"1")],
    };
    let outer = TxnRequest {
        success: vec![put_op(b"k", b"new"), RequestOp::Txn(inner)],
        ..Default::default()
    };
    let got = s.apply_txn(&outer).unwrap();
    assert_eq!(range(&s, b"inner-saw-old", b"").count, 1);
    let subs: Vec<u32> = got.events.iter().map(|e| e.sub_revision).collect();
    assert_eq!(subs, vec![0, 1]);
    assert!(got.events.iter().all(|e| e.kv.mod_revision == 3));
}

#[test]
fn txn_limits_and_duplicate_keys() {
    let mut s = Store::new(StoreConfig { max_txn_ops: 3 });
    let ops =
        |n: usize| (0..n).map(|i| put_op(format!("k{i}").as_bytes(), b"v")).collect::<Vec<_>>();
    let ok = TxnRequest { success: ops(3), ..Default::default() };
    assert!(s.apply_txn(&ok).is_ok());
    let big = TxnRequest { failure: ops(4), ..Default::default() };
    assert_eq!(s.apply_txn(&big), Err(Error::TooManyOps { max_ops: 3 }));
    let twice =
        TxnRequest { success: vec![put_op(b"a", b"1"), put_op(b"a", b"2")], ..Default::default() };
    assert_eq!(s.apply_txn(&twice), Err(Error::DuplicateKeyInTxn));
    let del = RequestOp::DeleteRange(DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        prev_kv: false,
    });
    let put_in_del =
        TxnRequest { success: vec![del.clone(), put_op(b"a/x", b"1")], ..Default::default() };
    assert_eq!(s.apply_txn(&put_in_del), Err(Error::DuplicateKeyInTxn));
    let both_deletes = TxnRequest { success: vec![del.clone(), del], ..Default::default() };
    assert!(s.apply_txn(&both_deletes).is_ok(), "overlapping deletes are fine");
    let branches = TxnRequest {
        success: vec![put_op(b"a", b"1")],
        failure: vec![put_op(b"a", b"2")],
        ..Default::default()
    };
    let nested_branches =
        TxnRequest { success: vec![RequestOp::Txn(branches)], ..Default::default() };
    assert!(s.apply_txn(&nested_branches).is_ok(), "then and else may put the same key");
    let mut deep = TxnRequest::default();
    for _ in 0..TXN_DEPTH_MAX {
        deep = TxnRequest { success: vec![RequestOp::Txn(deep)], ..Default::default() };
    }
    assert_eq!(s.apply_txn(&deep), Err(Error::TxnTooDeep));
}

#[test]
fn the_watch_feed_pages_inside_a_revision() {
    let mut s = Store::default();
    put(&mut s, b"w/a", b"0");
    let t = TxnRequest {
        success: vec![put_op(b"w/a", b"1"), put_op(b"w/b", b"1"), put_op(b"x", b"1")],
        ..Default::default()
    };
    s.apply_txn(&t).unwrap();
    let from = Revision { main: 3, sub: 0 };
    let first = s.events_since(from, b"w/", &prefix_range_end(b"w/"), 1, true).unwrap();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].prev_kv.as_ref().unwrap().value, b"0");
    assert_eq!(first.next, Revision { main: 3, sub: 1 });
    let rest = s.events_since(first.next, b"w/", &prefix_range_end(b"w/"), 10, false).unwrap();
    assert_eq!(rest.events.len(), 1);
    assert_eq!(rest.events[0].kv.key, b"w/b");
    assert!(rest.caught_up);
    assert_eq!(rest.next, Revision { main: 4, sub: 0 });
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let mut s = Store::default();
    for (k, lease) in [(&b"a"[..], 7), (b"b", 8), (b"c", 7)] {
        s.apply_put(&PutRequest { key: k.to_vec(), lease, ..Default::default() }).unwrap();
    }
    assert_eq!(s.lease_keys(7), vec![b"a".to_vec(), b"c".to_vec()]);
    let got = s.apply_revoke_lease(7);
    assert_eq!((got.revision, got.response.deleted, got.events.len()), (5, 2, 2));
    assert!(s.lease_keys(7).is_empty());
    assert_eq!(range(&s, b"\x00", b"\x00").count, 1);
    s.check_invariants();
}

fn image_of(s: &Store, chunk: usize) -> Vec<u8> {
    let mut w = s.image();
    let mut out = Vec::new();
    while let Some(c) = w.next_chunk(chunk) {
        assert!(c.len() <= chunk);
        out.extend(c);
    }
    out
}

fn read_image(bytes: &[u8], chunk: usize) -> Result<Store, ImageError> {
    let mut r = ImageReader::new(StoreConfig::default());
    for c in bytes.chunks(chunk.max(1)) {
        r.feed(c)?;
    }
    r.finish()
}

fn history() -> Store {
    let mut s = Store::default();
    for i in 0..300u32 {
        let key = format!("/registry/pods/ns-{}/pod-{}", i % 5, i % 40);
        s.apply_put(&PutRequest {
            key: key.into_bytes(),
            value: i.to_le_bytes().to_vec(),
            lease: i64::from(i % 3),
            ..Default::default()
        })
        .unwrap();
        if i % 17 == 0 {
            let key = format!("/registry/pods/ns-{}/", i % 5).into_bytes();
            let end = prefix_range_end(&key);
            s.apply_delete_range(&DeleteRangeRequest { key, range_end: end, prev_kv: false })
                .unwrap();
        }
    }
    s.compact(200).unwrap();
    s.compact_step(10);
    s
}

#[test]
fn images_are_deterministic_and_restore_the_same_store() {
    let s = history();
    let mut finished = history();
    finished.compact_all();
    let bytes = image_of(&s, 100);
    assert_eq!(bytes, image_of(&finished, 7), "physical compaction does not change the image");
    let restored = read_image(&bytes, 33).unwrap();
    restored.check_invariants();
    assert_eq!(restored.hash_kv(0), s.hash_kv(0));
    assert_eq!(restored.hash_kv(250), s.hash_kv(250));
    let all =
        RangeRequest { key: vec![0], range_end: vec![0], revision: 210, ..Default::default() };
    assert_eq!(restored.range(&all), s.range(&all));
    let from = Revision { main: 200, sub: 0 };
    let feed = |st: &Store| st.events_since(from, b"\x00", b"\x00", 1000, true).unwrap();
    assert_eq!(feed(&restored), feed(&s));
    assert_eq!(image_of(&restored, 1000), bytes);
}

#[test]
fn bad_images_are_errors_not_panics() {
    let bytes = image_of(&history(), 4096);
    assert_eq!(
        read_image(b"NOTANIMAGE-at-all-but-long-enough", 8).err(),
        Some(ImageError::BadMagic)
    );
    assert_eq!(read_image(&bytes[..bytes.len() - 1], 64).err(), Some(ImageError::Truncated));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(read_image(&trailing, 64), Err(ImageError::Malformed(_))));
    let mut format = bytes.clone();
    format[8] = 9;
    assert_eq!(read_image(&format, 64).err(), Some(ImageError::UnsupportedFormat(9)));
    // Random damage: any outcome but a panic; a store that loads is sound.
    let mut rng = ember::raft::Rng::new(0x1234_5678_9abc_def1);
    for _ in 0..3000 {
        let mut damaged = bytes.clone();
        for _ in 0..1 + rng.below(3) {
            if damaged.is_empty() {
                break; // truncated to nothing: no byte left to damage
            }
            let at = rng.below(damaged.len() as u64) as usize;
            match rng.below(3) {
                0 => damaged[at] ^= 1 << rng.below(8),
                1 => damaged[at] = rng.next_u64() as u8,
                _ => damaged.truncate(at),
            }
        }
        if let Ok(store) = read_image(&damaged, 1 + rng.below(300) as usize) {
            store.check_invariants();
            store.hash_kv(0).unwrap();
        }
    }
}

#[test]
fn identical_histories_give_identical_hashes_and_different_ones_do_not() {
    let a = history();
    let b = history();
    assert_eq!(a.hash_kv(0), b.hash_kv(0));
    let mut c = history();
    put(&mut c, b"/registry/pods/ns-0/pod-0", b"different");
    assert_ne!(c.hash_kv(0).unwrap().hash, a.hash_kv(0).unwrap().hash);
    assert_eq!(
        c.hash_kv(a.current_revision()),
        a.hash_kv(0),
        "a hash at an older revision ignores newer writes"
    );
}

#[test]
fn a_range_is_built_only_up_to_its_byte_bound() {
    let mut s = Store::default();
    for i in 0..100u32 {
        put(&mut s, format!("k{i:03}").as_bytes(), &[b'v'; 100]);
    }
    let all =
        RangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), ..RangeRequest::default() };
    // Each key-value counts 4 + 100 + RANGE_KV_OVERHEAD_BYTES.
    let each = 104 + RANGE_KV_OVERHEAD_BYTES;
    assert!(s.range_within(&all, 100 * each - 1).unwrap().is_none());
    let fits = s.range_within(&all, 100 * each).unwrap().expect("fits exactly");
    assert_eq!((fits.kvs.len(), fits.count, fits.more), (100, 100, false));
    // With a limit, only the page counts, not the key that says there is more.
    let page = RangeRequest { limit: 10, ..all.clone() };
    let paged = s.range_within(&page, 10 * each).unwrap().expect("a page fits");
    assert_eq!((paged.kvs.len(), paged.count, paged.more), (10, 100, true));
    // Counting needs no room at all.
    let count = RangeRequest { count_only: true, ..all };
    assert_eq!(s.range_within(&count, 0).unwrap().unwrap().count, 100);
}

#[test]
fn a_range_built_in_steps_matches_one_built_at_once_whatever_is_written_between() {
    let mut store = Store::default();
    for i in 0..300u32 {
        let value = (i * 7919 % 1000).to_string().into_bytes();
        store
            .apply_put(&PutRequest { key: format!("k{i:03}").into(), value, ..Default::default() })
            .unwrap();
    }
    let all = RangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), ..Default::default() };
    let requests = [
        all.clone(),
        RangeRequest { limit: 10, ..all.clone() },
        RangeRequest {
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Value,
            ..all.clone()
        },
        RangeRequest { keys_only: true, ..all.clone() },
        RangeRequest { count_only: true, ..all.clone() },
        RangeRequest { min_mod_revision: 150, ..all.clone() },
        RangeRequest { key: b"k007".to_vec(), range_end: Vec::new(), ..all.clone() },
    ];
    for (n, req) in requests.iter().enumerate() {
        let whole = store.range(req).unwrap();
        let mut build = store.range_start(req, usize::MAX).unwrap();
        let mut steps = 0;
        let stepped = loop {
            steps += 1;
            match store.range_step(&mut build, 7, usize::MAX).unwrap() {
                RangeStep::More => {}
                RangeStep::Done(found) => break found,
                RangeStep::TooLarge => panic!("unbounded"),
            }
            // Writes between steps, inside the range and past it.
            let key = format!("k{:03}x{n}", steps * 3 % 300).into_bytes();
            store
                .apply_put(&PutRequest { key, value: b"new".to_vec(), ..Default::default() })
                .unwrap();
            store
                .apply_delete_range(&DeleteRangeRequest {
                    key: format!("k{:03}", 299 - steps).into(),
                    ..Default::default()
                })
                .unwrap();
        };
        assert_eq!(stepped, whole, "{req:?}");
        assert!(steps > 1 || req.range_end.is_empty(), "{req:?} took {steps} steps");
    }
    // A step bounded in bytes stops early too; a bound on the whole refuses.
    let mut build = store.range_start(&all, usize::MAX).unwrap();
    assert!(matches!(store.range_step(&mut build, usize::MAX, 100), Ok(RangeStep::More)));
    let mut build = store.range_start(&all, 1000).unwrap();
    assert!(matches!(
        store.range_step(&mut build, usize::MAX, usize::MAX),
        Ok(RangeStep::TooLarge)
    ));
    // A compaction past the build's revision between steps fails it.
    let mut build = store.range_start(&all, usize::MAX).unwrap();
    assert!(matches!(store.range_step(&mut build, 5, usize::MAX), Ok(RangeStep::More)));
    store.apply_put(&PutRequest { key: b"z".to_vec(), ..Default::default() }).unwrap();
    store.compact(store.current_revision()).unwrap();
    assert!(matches!(store.range_step(&mut build, 5, usize::MAX), Err(Error::Compacted { .. })));
}
