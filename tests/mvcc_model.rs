//! Model-based tests of the MVCC store.
//!
//! A naive reference model keeps a plain list of every change ever made and
//! answers each question by walking it. Random sequences of puts, deletes,
//! transactions (nested, with failing compares and duplicate keys),
//! compactions (finished in random steps), lease revokes, reads at random
//! revisions, watch feeds read in random batch sizes, hashes and image
//! round trips run against both, and every answer must match.
//!
//! `EMBER_MVCC_CASES` scales the number of cases (default 1,500); a failing
//! case prints its seed, and `EMBER_MVCC_SEED` replays one.

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};

use ember::mvcc::*;

#[path = "support/rng.rs"]
mod rng;

use rng::Rng;

const KEYS: &[&[u8]] = &[
    b"\x00",
    b"a",
    b"a/1",
    b"a/2",
    b"a/2/x",
    b"ab",
    b"b",
    b"b\xff",
    b"c/x/1",
    b"c/x/2",
    b"z",
    b"\xff",
    b"\xff\xff",
];

type KeySet = BTreeSet<Vec<u8>>;

/// The seeded generator with the keys of the case, so that drawn keys
/// collide.
struct KeyedRng {
    rng: Rng,
    /// Invariant: not empty.
    keys: Vec<Vec<u8>>,
}

impl KeyedRng {
    fn key(&mut self) -> Vec<u8> {
        let i = self.rng.index(self.keys.len());
        self.keys[i].clone()
    }
}

impl Deref for KeyedRng {
    type Target = Rng;

    fn deref(&self) -> &Rng {
        &self.rng
    }
}

impl DerefMut for KeyedRng {
    fn deref_mut(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

#[derive(Clone)]
struct Change {
    rev: Revision,
    key: Vec<u8>,
    /// (value, lease) for a put, `None` for a delete.
    put: Option<(Vec<u8>, i64)>,
}

/// The reference: every change in order, and nothing clever.
#[derive(Clone)]
struct Model {
    /// Every key the case may touch.
    universe: Vec<Vec<u8>>,
    changes: Vec<Change>,
    current: u64,
    compact: u64,
    max_ops: usize,
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

impl Model {
    fn new(max_ops: usize, universe: Vec<Vec<u8>>) -> Model {
        Model { universe, changes: Vec::new(), current: 1, compact: 0, max_ops }
    }

    /// Every version of `key` up to `rev`, with create/version computed by
    /// replaying its changes.
    fn versions(&self, key: &[u8], rev: u64) -> Vec<(Revision, Option<KeyValue>)> {
        let mut out: Vec<(Revision, Option<KeyValue>)> = Vec::new();
        let mut live: Option<KeyValue> = None;
        for c in self.changes.iter().filter(|c| c.key == key && c.rev.main <= rev) {
            live = c.put.as_ref().map(|(value, lease)| KeyValue {
                key: key.to_vec(),
                create_revision: live.as_ref().map_or(c.rev.main, |l| l.create_revision),
                mod_revision: c.rev.main,
                version: live.as_ref().map_or(1, |l| l.version + 1),
                value: value.clone(),
                lease: *lease,
            });
            out.push((c.rev, live.clone()));
        }
        out
    }

    fn kv_at(&self, key: &[u8], rev: u64) -> Option<KeyValue> {
        self.versions(key, rev).pop().and_then(|(_, kv)| kv)
    }

    fn all_keys(&self) -> BTreeSet<Vec<u8>> {
        self.changes.iter().map(|c| c.key.clone()).collect()
    }

    fn live_in(&self, start: &[u8], end: &[u8], rev: u64) -> Vec<KeyValue> {
        let keys = self.all_keys();
        keys.iter().filter(|k| in_range(k, start, end)).filter_map(|k| self.kv_at(k, rev)).collect()
    }

    fn check_rev(&self, rev: u64) -> Result<u64, Error> {
        let rev = if rev == 0 { self.current } else { rev };
        if rev < self.compact {
            Err(Error::Compacted { compact_revision: self.compact })
        } else if rev > self.current {
            Err(Error::FutureRevision { current_revision: self.current })
        } else {
            Ok(rev)
        }
    }

    fn range(&self, r: &RangeRequest, rev: u64) -> RangeResponse {
        let all = self.live_in(&r.key, &r.range_end, rev);
        let count = all.len() as u64;
        if r.count_only {
            return RangeResponse { kvs: Vec::new(), more: false, count };
        }
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            .filter(|kv| r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            .filter(|kv| r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
            .filter(|kv| r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            .collect();
        let order = match (r.sort_target, r.sort_order) {
            (SortTarget::Key, o) => o,
            (_, SortOrder::None) => SortOrder::Ascend,
            (_, o) => o,
        };
        let field = |kv: &KeyValue| -> Vec<u8> {
            match r.sort_target {
                SortTarget::Key => kv.key.clone(),
                SortTarget::Version => kv.version.to_be_bytes().to_vec(),
                SortTarget::Create => kv.create_revision.to_be_bytes().to_vec(),
                SortTarget::Mod => kv.mod_revision.to_be_bytes().to_vec(),
                SortTarget::Value => kv.value.clone(),
            }
        };
        match order {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by_key(|kv| field(kv)),
            SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() as u64 > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        RangeResponse { kvs, more, count }
    }

    fn log(&mut self, rev: Revision, key: &[u8], put: Option<(Vec<u8>, i64)>) {
        self.changes.push(Change { rev, key: key.to_vec(), put });
    }

    fn put(&mut self, p: &PutRequest, rev: u64, sub: &mut u32) -> PutResponse {
        let prev = self.kv_at(&p.key, rev);
        let value =
            if p.ignore_value { prev.as_ref().unwrap().value.clone() } else { p.value.clone() };
        let lease = if p.ignore_lease { prev.as_ref().unwrap().lease } else { p.lease };
        self.log(Revision { main: rev, sub: *sub }, &p.key, Some((value, lease)));
        *sub += 1;
        PutResponse { prev_kv: if p.prev_kv { prev } else { None } }
    }

    fn delete(&mut self, d: &DeleteRangeRequest, rev: u64, sub: &mut u32) -> DeleteRangeResponse {
        let doomed = self.live_in(&d.key, &d.range_end, rev);
        for kv in &doomed {
            self.log(Revision { main: rev, sub: *sub }, &kv.key, None);
            *sub += 1;
        }
        DeleteRangeResponse {
            deleted: doomed.len() as u64,
            prev_kvs: if d.prev_kv { doomed } else { Vec::new() },
        }
    }

    fn write<R>(&mut self, f: impl FnOnce(&mut Model, u64, &mut u32) -> R) -> (R, u64) {
        let rev = self.current + 1;
        let mut sub = 0;
        let r = f(self, rev, &mut sub);
        if sub > 0 {
            self.current = rev;
        }
        (r, self.current)
    }

    fn check_put(&self, p: &PutRequest) -> Result<(), Error> {
        if p.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if p.ignore_value && !p.value.is_empty() {
            return Err(Error::ValueProvided);
        }
        if p.ignore_lease && p.lease != 0 {
            return Err(Error::LeaseProvided);
        }
        Ok(())
    }

    fn exists(&self, key: &[u8]) -> bool {
        self.kv_at(key, self.current).is_some()
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs = self.live_in(&c.key, &c.range_end, self.current);
        let one = |kv: &KeyValue| {
            let ord = match &c.target {
                CompareTarget::Version(x) => kv.version.cmp(x),
                CompareTarget::Create(x) => kv.create_revision.cmp(x),
                CompareTarget::Mod(x) => kv.mod_revision.cmp(x),
                CompareTarget::Lease(x) => kv.lease.cmp(x),
                CompareTarget::Value(x) => kv.value.cmp(x),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if kvs.is_empty() {
            return !matches!(c.target, CompareTarget::Value(_)) && one(&KeyValue::default());
        }
        kvs.iter().all(one)
    }

    /// The duplicate-key rule over the finite key universe: (keys put, keys
    /// deleted) by a branch, or an error.
    fn touched(&self, ops: &[RequestOp]) -> Result<(KeySet, KeySet), Error> {
        let mut puts = BTreeSet::new();
        let mut dels = BTreeSet::new();
        for op in ops {
            if let RequestOp::DeleteRange(d) = op {
                dels.extend(
                    self.universe.iter().filter(|k| in_range(k, &d.key, &d.range_end)).cloned(),
                );
            }
        }
        for op in ops {
            let RequestOp::Txn(t) = op else { continue };
            let (tp, td) = self.touched(&t.success)?;
            let (fp, fd) = self.touched(&t.failure)?;
            for k in tp.union(&fp) {
                if puts.contains(k) || dels.contains(k) {
                    return Err(Error::DuplicateKeyInTxn);
                }
            }
            puts.extend(tp.into_iter().chain(fp));
            dels.extend(td.into_iter().chain(fd));
            if puts.intersection(&dels).next().is_some() {
                return Err(Error::DuplicateKeyInTxn);
            }
        }
        for op in ops {
            if let RequestOp::Put(p) = op
                && (dels.contains(&p.key) || !puts.insert(p.key.clone()))
            {
                return Err(Error::DuplicateKeyInTxn);
            }
        }
        Ok((puts, dels))
    }

    fn check_shape(&self, t: &TxnRequest, depth: usize) -> Result<(), Error> {
        if depth > TXN_DEPTH_MAX {
            return Err(Error::TxnTooDeep);
        }
        let max = self.max_ops;
        if t.compare.len() > max || t.success.len() > max || t.failure.len() > max {
            return Err(Error::TooManyOps { max_ops: max });
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) if r.key.is_empty() => return Err(Error::EmptyKey),
                RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(Error::EmptyKey),
                RequestOp::Put(p) => self.check_put(p)?,
                RequestOp::Txn(n) => self.check_shape(n, depth + 1)?,
                _ => {}
            }
        }
        self.touched(&t.success)?;
        self.touched(&t.failure)?;
        Ok(())
    }

    /// Checks the chosen path against the state before the txn.
    fn check_path(&self, t: &TxnRequest) -> Result<(), Error> {
        let ops = if t.compare.iter().all(|c| self.compare(c)) { &t.success } else { &t.failure };
        for op in ops {
            match op {
                RequestOp::Range(r) => self.check_rev(r.revision).map(|_| ())?,
                RequestOp::Put(p) if (p.ignore_value || p.ignore_lease) && !self.exists(&p.key) => {
                    return Err(Error::KeyNotFound);
                }
                RequestOp::Txn(n) => self.check_path(n)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.compare(c));
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(n) = op {
                self.txn_path(n, path);
            }
        }
    }

    fn exec(
        &mut self,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        rev: u64,
        sub: &mut u32,
    ) -> TxnResponse {
        let succeeded = path[*at];
        *at += 1;
        let mut responses = Vec::new();
        for op in if succeeded { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Range(r) => {
                    ResponseOp::Range(self.range(r, if r.revision == 0 { rev } else { r.revision }))
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(p, rev, sub)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d, rev, sub)),
                RequestOp::Txn(n) => ResponseOp::Txn(self.exec(n, path, at, rev, sub)),
            });
        }
        TxnResponse { succeeded, responses }
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<(TxnResponse, u64), Error> {
        self.check_shape(t, 1)?;
        self.check_path(t)?;
        let mut path = Vec::new();
        self.txn_path(t, &mut path);
        Ok(self.write(|m, rev, sub| m.exec(t, &path, &mut 0, rev, sub)))
    }

    /// Every event from `from` on in `[key, end)`.
    fn events(&self, from: Revision, key: &[u8], end: &[u8], prev_kv: bool) -> Vec<Event> {
        let mut out = Vec::new();
        for c in self.changes.iter().filter(|c| c.rev >= from && in_range(&c.key, key, end)) {
            let prev = self.kv_at(&c.key, c.rev.main - 1).filter(|_| prev_kv);
            let (kind, kv) = match c.put {
                Some(_) => (EventKind::Put, self.kv_at(&c.key, c.rev.main).unwrap()),
                None => (
                    EventKind::Delete,
                    KeyValue {
                        key: c.key.clone(),
                        mod_revision: c.rev.main,
                        ..KeyValue::default()
                    },
                ),
            };
            out.push(Event { kind, kv, prev_kv: prev, sub_revision: c.rev.sub });
        }
        out
    }

    fn hash(&self, rev: u64) -> Result<KvHash, Error> {
        let rev = self.check_rev(rev)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&self.compact.to_le_bytes());
        for key in self.all_keys() {
            let versions = self.versions(&key, self.current);
            let below = versions.iter().rposition(|(r, _)| r.main < self.compact);
            for (i, (r, kv)) in versions.iter().enumerate() {
                let kept = r.main >= self.compact || (Some(i) == below && kv.is_some());
                if !kept || r.main > rev {
                    continue;
                }
                h.update(&(key.len() as u64).to_le_bytes());
                h.update(&key);
                let d = KeyValue::default();
                let kv = kv.as_ref().unwrap_or(&d);
                let tomb = u64::from(kv.mod_revision == 0);
                for n in [
                    r.main,
                    u64::from(r.sub),
                    tomb,
                    kv.create_revision,
                    kv.version,
                    kv.lease as u64,
                ] {
                    h.update(&n.to_le_bytes());
                }
                h.update(&(kv.value.len() as u64).to_le_bytes());
                h.update(&kv.value);
            }
        }
        Ok(KvHash { hash: h.finalize(), hash_revision: rev, compact_revision: self.compact })
    }

    fn lease_keys(&self, lease: i64) -> Vec<Vec<u8>> {
        self.live_in(b"\x00", b"\x00", self.current)
            .into_iter()
            .filter(|kv| kv.lease == lease)
            .map(|kv| kv.key)
            .collect()
    }
}

fn gen_range_spec(rng: &mut KeyedRng) -> (Vec<u8>, Vec<u8>) {
    let key = rng.key();
    match rng.below(6) {
        0 | 1 => (key, Vec::new()),
        2 => {
            let end = prefix_range_end(&key);
            (key, end)
        }
        3 => (key, vec![0]),
        4 => (vec![0], vec![0]),
        _ => {
            let end = rng.key();
            (key, end)
        }
    }
}

fn gen_value(rng: &mut KeyedRng) -> Vec<u8> {
    // Now and then a large value, so a few keys' blocks pass the size where
    // they start growing with slack.
    if rng.chance(4) {
        let fill = b"abc"[rng.below(3) as usize];
        return vec![fill; 2000 + rng.below(4000) as usize];
    }
    let len = rng.below(6) as usize;
    (0..len).map(|_| b"abc\x00\xff"[rng.below(5) as usize]).collect()
}

fn gen_put(rng: &mut KeyedRng) -> PutRequest {
    let mut p = PutRequest {
        key: rng.key(),
        value: gen_value(rng),
        lease: [0, 0, 0, 7, 9][rng.below(5) as usize],
        prev_kv: rng.chance(50),
        ..PutRequest::default()
    };
    if rng.chance(12) {
        p.ignore_value = true;
        if rng.chance(80) {
            p.value.clear();
        }
    }
    if rng.chance(12) {
        p.ignore_lease = true;
        if rng.chance(80) {
            p.lease = 0;
        }
    }
    if rng.chance(1) {
        p.key.clear();
    }
    p
}

fn gen_delete(rng: &mut KeyedRng) -> DeleteRangeRequest {
    let (key, range_end) = gen_range_spec(rng);
    DeleteRangeRequest { key, range_end, prev_kv: rng.chance(50) }
}

fn gen_read_rev(rng: &mut KeyedRng, m: &Model) -> u64 {
    if rng.chance(40) {
        return 0;
    }
    let lo = m.compact.saturating_sub(2);
    lo + rng.below(m.current + 3 - lo)
}

fn gen_range(rng: &mut KeyedRng, m: &Model) -> RangeRequest {
    let (key, range_end) = gen_range_spec(rng);
    let pick = |rng: &mut KeyedRng| if rng.chance(80) { 0 } else { 1 + rng.below(m.current + 1) };
    RangeRequest {
        key,
        range_end,
        limit: if rng.chance(50) { 0 } else { 1 + rng.below(4) },
        revision: gen_read_rev(rng, m),
        sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][rng.below(3) as usize],
        sort_target: [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ][rng.below(5) as usize],
        keys_only: rng.chance(15),
        count_only: rng.chance(10),
        min_mod_revision: pick(rng),
        max_mod_revision: pick(rng),
        min_create_revision: pick(rng),
        max_create_revision: pick(rng),
    }
}

fn gen_compare(rng: &mut KeyedRng, m: &Model) -> Compare {
    let (key, range_end) =
        if rng.chance(70) { (rng.key(), Vec::new()) } else { gen_range_spec(rng) };
    let n = rng.below(m.current + 2);
    let target = match rng.below(5) {
        0 => CompareTarget::Version(rng.below(4)),
        1 => CompareTarget::Create(n),
        2 => CompareTarget::Mod(n),
        3 => CompareTarget::Lease([0, 7, 9][rng.below(3) as usize]),
        _ => CompareTarget::Value(gen_value(rng)),
    };
    let result = [
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ][rng.below(4) as usize];
    Compare { key, range_end, result, target }
}

fn gen_ops(rng: &mut KeyedRng, m: &Model, depth: usize) -> Vec<RequestOp> {
    let n = rng.below(5);
    (0..n)
        .map(|_| match rng.below(10) {
            0..=3 => RequestOp::Put(gen_put(rng)),
            4 | 5 => RequestOp::DeleteRange(gen_delete(rng)),
            6 | 7 => RequestOp::Range(gen_range(rng, m)),
            _ if depth < 3 => RequestOp::Txn(gen_txn(rng, m, depth + 1)),
            _ => RequestOp::Put(gen_put(rng)),
        })
        .collect()
}

fn gen_txn(rng: &mut KeyedRng, m: &Model, depth: usize) -> TxnRequest {
    let compare = (0..rng.below(4)).map(|_| gen_compare(rng, m)).collect();
    TxnRequest { compare, success: gen_ops(rng, m, depth), failure: gen_ops(rng, m, depth) }
}

/// Reads the whole feed from `from` in random batch sizes.
fn read_feed(
    store: &Store,
    rng: &mut KeyedRng,
    from: Revision,
    key: &[u8],
    end: &[u8],
    prev: bool,
) -> Vec<Event> {
    let mut out = Vec::new();
    let mut next = from;
    for _ in 0..10_000 {
        let max = 1 + rng.below(4) as usize;
        let batch =
            store.events_since(next, key, end, max, prev).expect("feed at a valid revision");
        assert!(batch.events.len() <= max, "batch over its bound");
        out.extend(batch.events);
        if batch.caught_up {
            assert_eq!(batch.next.main, (store.current_revision() + 1).max(from.main));
            return out;
        }
        assert!(batch.next > next || !out.is_empty(), "the feed must make progress");
        next = batch.next;
    }
    panic!("the feed never caught up");
}

fn image_round_trip(store: &Store, rng: &mut KeyedRng) -> Store {
    let mut writer = store.image();
    let mut reader = ImageReader::new(store.config());
    let chunk = 1 + rng.below(64) as usize;
    while let Some(bytes) = writer.next_chunk(chunk) {
        assert!(bytes.len() <= chunk);
        reader.feed(&bytes).expect("a store's own image reads back");
    }
    let restored = reader.finish().expect("a complete image");
    restored.check_invariants();
    assert_eq!(restored.hash_kv(0), store.hash_kv(0));
    assert_eq!(restored.current_revision(), store.current_revision());
    assert_eq!(restored.compact_revision(), store.compact_revision());
    restored
}

fn step(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    match rng.below(100) {
        0..=29 => step_put(store, m, rng),
        30..=41 => step_delete(store, m, rng),
        42..=56 => step_txn(store, m, rng),
        57..=71 => step_range(store, m, rng),
        72..=76 => step_compact(store, m, rng),
        77..=81 => step_compact_step(store, m, rng),
        82..=88 => step_watch(store, m, rng),
        89..=92 => step_hash(store, m, rng),
        93..=95 => step_lease(store, m, rng),
        96 | 97 => step_bulk(store, m, rng),
        _ => step_image(store, m, rng),
    }
}

fn step_put(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    let p = gen_put(rng);
    let want = m.check_put(&p).and_then(|_| {
        if (p.ignore_value || p.ignore_lease) && !m.exists(&p.key) {
            Err(Error::KeyNotFound)
        } else {
            Ok(())
        }
    });
    let got = store.apply_put(&p);
    match want {
        Err(e) => assert_eq!(got.unwrap_err(), e),
        Ok(()) => {
            let before = m.current;
            let (resp, rev) = m.write(|m, r, s| m.put(&p, r, s));
            let got = got.unwrap();
            assert_eq!((got.response, got.revision), (resp, rev));
            assert_eq!(
                got.events,
                m.events(Revision { main: before + 1, sub: 0 }, b"\x00", b"\x00", true)
            );
        }
    }
}

fn step_delete(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    let d = gen_delete(rng);
    let before = m.current;
    let got = store.apply_delete_range(&d).unwrap();
    let (resp, rev) = m.write(|m, r, s| m.delete(&d, r, s));
    assert_eq!((got.response, got.revision), (resp, rev));
    assert_eq!(got.events, m.events(Revision { main: before + 1, sub: 0 }, b"\x00", b"\x00", true));
}

fn step_txn(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    let t = gen_txn(rng, m, 1);
    let before = m.current;
    let got = store.apply_txn(&t);
    match m.txn(&t) {
        Err(e) => assert_eq!(got.unwrap_err(), e, "txn {t:?}"),
        Ok((resp, rev)) => {
            let got = got.unwrap_or_else(|e| panic!("txn failed with {e:?}: {t:?}"));
            assert_eq!((&got.response, got.revision), (&resp, rev), "txn {t:?}");
            assert_eq!(
                got.events,
                m.events(Revision { main: before + 1, sub: 0 }, b"\x00", b"\x00", true)
            );
        }
    }
}

fn step_range(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    let r = gen_range(rng, m);
    let want = if r.key.is_empty() {
        Err(Error::EmptyKey)
    } else {
        m.check_rev(r.revision).map(|rev| m.range(&r, rev))
    };
    assert_eq!(store.range(&r), want, "range {r:?}");
}

fn step_compact(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    let rev = m.compact.saturating_sub(1) + rng.below(m.current + 3 - m.compact.saturating_sub(1));
    let want = if rev <= m.compact {
        Err(Error::Compacted { compact_revision: m.compact })
    } else if rev > m.current {
        Err(Error::FutureRevision { current_revision: m.current })
    } else {
        m.compact = rev;
        Ok(())
    };
    assert_eq!(store.compact(rev), want);
}

fn step_compact_step(store: &mut Store, _m: &mut Model, rng: &mut KeyedRng) {
    store.compact_step(1 + rng.below(3) as usize);
}

fn step_watch(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    let from = Revision { main: gen_read_rev(rng, m).max(1), sub: rng.below(2) as u32 };
    let (key, end) = gen_range_spec(rng);
    let prev = rng.chance(50);
    if from.main < m.compact {
        let got = store.events_since(from, &key, &end, 4, prev);
        assert_eq!(got.unwrap_err(), Error::Compacted { compact_revision: m.compact });
    } else {
        assert_eq!(read_feed(store, rng, from, &key, &end, prev), m.events(from, &key, &end, prev));
    }
}

fn step_hash(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    let rev = gen_read_rev(rng, m);
    assert_eq!(store.hash_kv(rev), m.hash(rev));
}

fn step_lease(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    let lease = [7, 9][rng.below(2) as usize];
    assert_eq!(store.lease_keys(lease), m.lease_keys(lease));
    if rng.chance(50) {
        let doomed = m.lease_keys(lease);
        let before = m.current;
        let got = store.apply_revoke_lease(lease);
        let (_, rev) = m.write(|m, r, s| {
            for k in doomed {
                m.log(Revision { main: r, sub: *s }, &k, None);
                *s += 1;
            }
        });
        assert_eq!(got.revision, rev);
        assert_eq!(
            got.events,
            m.events(Revision { main: before + 1, sub: 0 }, b"\x00", b"\x00", true)
        );
    }
}

fn step_bulk(store: &mut Store, m: &mut Model, rng: &mut KeyedRng) {
    // A bulk write of distinct keys, to grow the tree quickly.
    let keys: BTreeSet<Vec<u8>> = (0..1 + rng.below(100)).map(|_| rng.key()).collect();
    let puts =
        keys.into_iter().map(|key| RequestOp::Put(PutRequest { key, ..PutRequest::default() }));
    let t = TxnRequest { compare: Vec::new(), success: puts.collect(), failure: Vec::new() };
    let got = store.apply_txn(&t);
    match m.txn(&t) {
        Err(e) => assert_eq!(got.unwrap_err(), e),
        Ok((resp, rev)) => {
            assert_eq!(got.map(|a| (a.response, a.revision)), Ok((resp, rev)))
        }
    }
}

fn step_image(store: &mut Store, _m: &mut Model, rng: &mut KeyedRng) {
    *store = image_round_trip(store, rng);
}

/// Every key at every readable revision, through full-range reads.
fn check_history(store: &Store, m: &Model) {
    for rev in m.compact.max(1)..=m.current {
        let r = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..RangeRequest::default()
        };
        assert_eq!(store.range(&r).unwrap(), m.range(&r, rev), "history at {rev}");
    }
}

/// The keys of a case: a handful of edge cases (so operations collide), or
/// a few hundred more so the tree splits, merges and loses keys to
/// compaction.
fn universe(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = KEYS.iter().map(|k| k.to_vec()).collect();
    if rng.chance(15) {
        let n = 100 + rng.below(400);
        keys.extend((0..n).map(|i| format!("a/{}/{i}", i % 7).into_bytes()));
    }
    keys
}

fn run_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let keys = universe(&mut rng);
    let mut rng = KeyedRng { rng, keys };
    let max_ops = if rng.chance(20) { 2 } else { TXN_OPS_MAX_DEFAULT };
    let mut store = Store::new(StoreConfig { max_txn_ops: max_ops });
    let mut m = Model::new(max_ops, rng.keys.clone());
    let steps = if rng.keys.len() > KEYS.len() { 100 + rng.below(200) } else { 20 + rng.below(80) };
    for i in 0..steps {
        step(&mut store, &mut m, &mut rng);
        if i % 16 == 0 {
            store.check_invariants();
        }
    }
    store.check_invariants();
    check_history(&store, &m);
    store.compact_all();
    assert!(!store.compaction_pending());
    store.check_invariants();
    check_history(&store, &m);
    assert_eq!(store.hash_kv(0), m.hash(0));
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn store_matches_the_reference_model() {
    if let Some(seed) = env_u64("EMBER_MVCC_SEED") {
        run_case(seed);
        return;
    }
    let cases = env_u64("EMBER_MVCC_CASES").unwrap_or(1500);
    for case in 0..cases {
        let seed = 0x5eed_0000 + case;
        let outcome = std::panic::catch_unwind(|| run_case(seed));
        if let Err(e) = outcome {
            eprintln!("failing case: EMBER_MVCC_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
