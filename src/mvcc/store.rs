//! The store: applies writes, answers reads, compacts, feeds watches.

use std::collections::BTreeSet;

use super::block::{Block, Version};
use super::bound::AnswerBudget;
use super::chunked::ChunkedVec;
use super::log::RevLog;
use super::tree::{KeySource, LEAF_CAP, Tree};
use super::types::*;

/// The first revision a change can carry: the empty store is at revision 1,
/// as in etcd.
const FIRST_CHANGE_REVISION: u64 = 2;

/// Key ids per chunk of the key table: 1,024 × 16-byte block handles.
const KEY_CHUNK: usize = 1024;

/// What one key-value costs in an encoded answer beyond its key and value:
/// five varints of at most ten bytes and two length prefixes, rounded up.
pub const RANGE_KV_OVERHEAD_BYTES: usize = 64;

/// Key id → block. A free slot holds an empty block and is listed in `free`.
#[derive(Default)]
pub(crate) struct KeyTable {
    blocks: ChunkedVec<Block, KEY_CHUNK>,
    free: Vec<u32>,
}

impl KeySource for KeyTable {
    fn key_of(&self, id: u32) -> &[u8] {
        self.blocks.get(id as usize).key()
    }
}

impl KeyTable {
    pub(crate) fn get(&self, id: u32) -> &Block {
        self.blocks.get(id as usize)
    }

    fn get_mut(&mut self, id: u32) -> &mut Block {
        self.blocks.get_mut(id as usize)
    }

    pub(crate) fn alloc(&mut self, block: Block) -> u32 {
        match self.free.pop() {
            Some(id) => {
                *self.get_mut(id) = block;
                id
            }
            None => self.blocks.push(block) as u32,
        }
    }

    /// Fault injection only: puts `block` in place of `id`'s.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn replace(&mut self, id: u32, block: Block) {
        *self.get_mut(id) = block;
    }

    pub(crate) fn release(&mut self, id: u32) {
        *self.get_mut(id) = Block::default();
        self.free.push(id);
    }

    fn heap_bytes(&self) -> usize {
        let mut bytes = self.blocks.heap_bytes() + self.free.capacity() * 4;
        for id in 0..self.blocks.len() {
            bytes += self.blocks.get(id).heap_bytes();
        }
        bytes
    }
}

/// A physical compaction in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Compaction {
    /// The last key already compacted; `None` before the first step.
    resume_after: Option<Vec<u8>>,
}

/// The changes one write request makes: they share a main revision.
pub(super) struct Writer {
    pub(super) rev: u64,
    pub(super) next_sub: u32,
    pub(super) events: Vec<Event>,
}

/// The multi-version key-value store.
///
/// Call order: the apply thread calls `apply_put`, `apply_delete_range`,
/// `apply_txn`, `compact` for committed entries, in log order; between them it
/// may call `compact_step` to make a pending compaction progress and any read
/// (`range`, `events_since`, `hash_kv`, `image`). Every method is
/// deterministic.
pub struct Store {
    pub(super) config: StoreConfig,
    pub(crate) keys: KeyTable,
    pub(crate) tree: Tree,
    pub(super) log: RevLog,
    /// (lease, key id) for every live key attached to a lease.
    leases: BTreeSet<(i64, u32)>,
    /// Invariant: ≥ 1; equal to the revision of the newest change, or 1.
    pub(super) current_revision: u64,
    /// Invariant: ≤ current_revision. Reads below it fail.
    pub(super) compact_revision: u64,
    compaction: Option<Compaction>,
    /// The compact revision of the open live image (`image.rs`), if any.
    /// Invariant: ≤ compact_revision. While it is below, `compact_step`
    /// waits: it would drop versions the image still has to write.
    pub(super) image_pin: Option<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(StoreConfig::default())
    }
}

impl Store {
    pub fn new(config: StoreConfig) -> Store {
        Store {
            config,
            keys: KeyTable::default(),
            tree: Tree::default(),
            log: RevLog::new(FIRST_CHANGE_REVISION),
            leases: BTreeSet::new(),
            current_revision: 1,
            compact_revision: 0,
            compaction: None,
            image_pin: None,
        }
    }

    pub fn current_revision(&self) -> u64 {
        self.current_revision
    }

    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// Keys held, including deleted keys whose history is still retained.
    pub fn key_count(&self) -> usize {
        self.tree.len()
    }

    /// Heap bytes held by the store's own tables (an estimate for metrics;
    /// `benches/mvcc.rs` measures the real figure with a counting allocator).
    pub fn heap_bytes(&self) -> usize {
        self.keys.heap_bytes()
            + self.tree.heap_bytes()
            + self.log.heap_bytes()
            + self.leases.len() * 24
    }

    /// Checks the store's internal invariants and panics on a breach: the
    /// tree's order and links, that every key in it holds a version, the
    /// free list, and the lease index. For tests; it walks everything.
    pub fn check_invariants(&self) {
        self.tree.check(&self.keys);
        let mut live_ids = BTreeSet::new();
        for id in self.tree.iter_from(self.tree.first()) {
            let block = self.keys.get(id);
            assert!(block.latest().is_some(), "a key without versions");
            assert!(
                block.latest().is_some_and(|v| v.main <= self.current_revision),
                "a version from the future"
            );
            live_ids.insert(id);
        }
        for id in &self.keys.free {
            assert!(self.keys.get(*id).is_free() && !live_ids.contains(id), "free list");
        }
        assert_eq!(
            live_ids.len() + self.keys.free.len(),
            self.keys.blocks.len(),
            "key table accounting"
        );
        for (lease, id) in &self.leases {
            let v = self.keys.get(*id).latest().expect("leased key has versions");
            assert!(!v.tombstone && v.lease == *lease, "lease index");
        }
        let leased = live_ids.iter().filter(|id| {
            self.keys.get(**id).latest().is_some_and(|v| !v.tombstone && v.lease != 0)
        });
        assert_eq!(leased.count(), self.leases.len(), "lease index size");
    }

    pub(super) fn lookup(&self, key: &[u8]) -> Option<u32> {
        self.tree.get(&self.keys, key)
    }

    /// The revision a read at `requested` (0 = current) sees.
    pub(super) fn read_revision(&self, requested: u64) -> Result<u64, Error> {
        let rev = if requested == 0 { self.current_revision } else { requested };
        if rev < self.compact_revision {
            return Err(Error::Compacted { compact_revision: self.compact_revision });
        }
        if rev > self.current_revision {
            return Err(Error::FutureRevision { current_revision: self.current_revision });
        }
        Ok(rev)
    }

    /// Calls `f` for every key in `[key, range_end)` that is live at `rev`.
    pub(super) fn for_each_live<'s>(
        &'s self,
        key: &[u8],
        range_end: &[u8],
        rev: u64,
        mut f: impl FnMut(&'s [u8], Version<'s>),
    ) {
        self.for_each_live_while(key, range_end, rev, |key, v| {
            f(key, v);
            true
        });
    }

    /// `for_each_live` that stops as soon as `f` returns false.
    pub(super) fn for_each_live_while<'s>(
        &'s self,
        key: &[u8],
        range_end: &[u8],
        rev: u64,
        mut f: impl FnMut(&'s [u8], Version<'s>) -> bool,
    ) {
        let end = RangeEnd::from_request(range_end);
        if end == RangeEnd::Single {
            if let Some(id) = self.lookup(key) {
                let block = self.keys.get(id);
                if let Some(v) = block.live_at(rev) {
                    f(block.key(), v);
                }
            }
            return;
        }
        let mut cursor = self.tree.seek(&self.keys, key);
        loop {
            let (ids, next) = self.tree.run_at(cursor);
            if ids.is_empty() {
                return;
            }
            // Resolve and touch a leaf's blocks before decoding any: the
            // loads are independent, so their cache misses overlap instead
            // of coming one after another.
            let mut blocks: [Option<&Block>; LEAF_CAP] = [None; LEAF_CAP];
            let mut warm = 0usize;
            for (slot, id) in blocks.iter_mut().zip(ids) {
                let block = self.keys.get(*id);
                warm = warm.wrapping_add(block.warm());
                *slot = Some(block);
            }
            std::hint::black_box(warm);
            for block in blocks.iter().flatten() {
                if !end.admits(key, block.key()) {
                    return;
                }
                if let Some(v) = block.live_at(rev)
                    && !f(block.key(), v)
                {
                    return;
                }
            }
            cursor = next;
        }
    }

    /// Reads a range (see [`RangeRequest`]).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        self.range_within(req, usize::MAX)
            .map(|found| found.expect("an unbounded range always fits"))
    }

    /// The range, or `Ok(None)` once its keys and values would pass
    /// `max_bytes` (each counted at `RANGE_KV_OVERHEAD_BYTES` more, so the
    /// estimate is not below the encoded size): the answer stops growing at
    /// the bound, and the walk stops there, instead of being built whole
    /// and refused after. An answer that fits is counted to the end of the
    /// range without copying. Sorting and the
    /// revision filters need every match held first, so for them every
    /// match counts, before filtering.
    pub fn range_within(
        &self,
        req: &RangeRequest,
        max_bytes: usize,
    ) -> Result<Option<RangeResponse>, Error> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let rev = self.read_revision(req.revision)?;
        Ok(self.range_at_within(req, rev, max_bytes))
    }

    pub(super) fn range_at(&self, req: &RangeRequest, rev: u64) -> RangeResponse {
        self.range_at_within(req, rev, usize::MAX).expect("an unbounded range always fits")
    }

    fn range_at_within(
        &self,
        req: &RangeRequest,
        rev: u64,
        max_bytes: usize,
    ) -> Option<RangeResponse> {
        let mut build = RangeBuild::new(req.clone(), rev, max_bytes);
        match self.range_step(&mut build, usize::MAX, usize::MAX) {
            Ok(RangeStep::Done(found)) => Some(found),
            Ok(RangeStep::TooLarge) => None,
            Ok(RangeStep::More) | Err(_) => unreachable!("one unbounded step at a held revision"),
        }
    }

    /// Starts a range read built in steps (see [`RangeBuild`]), at the
    /// revision it asks for as the store stands now.
    pub fn range_start(&self, req: &RangeRequest, max_bytes: usize) -> Result<RangeBuild, Error> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let rev = self.read_revision(req.revision)?;
        Ok(RangeBuild::new(req.clone(), rev, max_bytes))
    }

    /// Walks at most `keys_max` more keys of `build`, or holds at most
    /// about `bytes_max` more (at least one key either way). Fails with
    /// `Compacted` once a compaction has passed its revision between steps.
    pub fn range_step(
        &self,
        build: &mut RangeBuild,
        keys_max: usize,
        bytes_max: usize,
    ) -> Result<RangeStep, Error> {
        if build.rev < self.compact_revision {
            return Err(Error::Compacted { compact_revision: self.compact_revision });
        }
        let sliced = !build.req.range_end.is_empty();
        let from = std::mem::take(&mut build.next_key);
        let range_end = std::mem::take(&mut build.req.range_end);
        let mut walked = 0usize;
        let bytes_before = build.built_bytes;
        let mut paused_after: Option<&[u8]> = None;
        let mut too_large = false;
        let rev = build.rev;
        self.for_each_live_while(&from, &range_end, rev, |key, v| {
            too_large = !build.take(key, v);
            walked += 1;
            let step_done = walked >= keys_max || build.built_bytes - bytes_before >= bytes_max;
            if !too_large && sliced && step_done {
                paused_after = Some(key);
            }
            !too_large && paused_after.is_none()
        });
        build.req.range_end = range_end;
        if too_large {
            return Ok(RangeStep::TooLarge);
        }
        if let Some(key) = paused_after {
            // The smallest key after `key`: the next step starts there.
            build.next_key = [key, &[0]].concat();
            return Ok(RangeStep::More);
        }
        Ok(RangeStep::Done(build.finish()))
    }

    /// Writes one key.
    pub fn apply_put(&mut self, req: &PutRequest) -> Result<Applied<PutResponse>, Error> {
        check_put(req)?;
        self.check_put_target(req)?;
        let mut w = self.writer();
        let response = self.put(&mut w, req);
        Ok(self.finish(w, response))
    }

    /// Deletes every live key of a range (with tombstones).
    pub fn apply_delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Applied<DeleteRangeResponse>, Error> {
        self.apply_delete_range_within(req, usize::MAX)
    }

    /// `apply_delete_range` whose answer may take at most `answer_max_bytes`
    /// (see `bound.rs`): past it the delete is refused and nothing changes.
    pub fn apply_delete_range_within(
        &mut self,
        req: &DeleteRangeRequest,
        answer_max_bytes: usize,
    ) -> Result<Applied<DeleteRangeResponse>, Error> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if answer_max_bytes != usize::MAX {
            let fits = AnswerBudget::new(answer_max_bytes)
                .is_some_and(|mut budget| self.delete_answer_fits(req, &mut budget));
            if !fits {
                return Err(Error::AnswerTooLarge { max_bytes: answer_max_bytes });
            }
        }
        let mut w = self.writer();
        let response = self.delete_range(&mut w, req);
        Ok(self.finish(w, response))
    }

    pub(super) fn writer(&self) -> Writer {
        Writer { rev: self.current_revision + 1, next_sub: 0, events: Vec::new() }
    }

    /// Ends a write: the revision moves on only if something changed.
    pub(super) fn finish<R>(&mut self, w: Writer, response: R) -> Applied<R> {
        if w.next_sub > 0 {
            self.current_revision = w.rev;
        }
        Applied { response, revision: self.current_revision, events: w.events }
    }

    /// `ignore_value` and `ignore_lease` need a live key.
    pub(super) fn check_put_target(&self, req: &PutRequest) -> Result<(), Error> {
        if (req.ignore_value || req.ignore_lease) && self.latest_live(&req.key).is_none() {
            return Err(Error::KeyNotFound);
        }
        Ok(())
    }

    pub(super) fn latest_live(&self, key: &[u8]) -> Option<Version<'_>> {
        let id = self.lookup(key)?;
        self.keys.get(id).latest().filter(|v| !v.tombstone)
    }

    pub(super) fn put(&mut self, w: &mut Writer, req: &PutRequest) -> PutResponse {
        let id = match self.lookup(&req.key) {
            Some(id) => id,
            None => {
                let id = self.keys.alloc(Block::new(&req.key));
                self.tree.insert(&self.keys, &req.key, id).expect("the key was just looked up");
                id
            }
        };
        let block = self.keys.get(id);
        let prev = block.latest().filter(|v| !v.tombstone).map(|v| v.to_kv(&req.key));
        let (create, version) =
            prev.as_ref().map_or((w.rev, 1), |p| (p.create_revision, p.version.saturating_add(1)));
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.as_slice(),
            _ => req.value.as_slice(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let sub = w.next_sub;
        w.next_sub += 1;
        let v = Version { main: w.rev, sub, tombstone: false, create, version, lease, value };
        let kv = v.to_kv(&req.key);
        self.keys.get_mut(id).push(&v);
        if let Some(p) = prev.as_ref().filter(|p| p.lease != 0) {
            self.leases.remove(&(p.lease, id));
        }
        if lease != 0 {
            self.leases.insert((lease, id));
        }
        self.log.push(Revision { main: w.rev, sub }, id);
        let response = PutResponse { prev_kv: if req.prev_kv { prev.clone() } else { None } };
        w.events.push(Event { kind: EventKind::Put, kv, prev_kv: prev, sub_revision: sub });
        response
    }

    pub(super) fn delete_range(
        &mut self,
        w: &mut Writer,
        req: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let mut ids = Vec::new();
        let rev = self.current_revision.max(w.rev);
        self.for_each_live(&req.key, &req.range_end, rev, |key, _| ids.push(key.to_vec()));
        let mut response = DeleteRangeResponse { deleted: ids.len() as u64, prev_kvs: Vec::new() };
        for key in ids {
            let id = self.lookup(&key).expect("a live key is in the tree");
            let prev = self.delete_key(w, id);
            if req.prev_kv {
                response.prev_kvs.push(prev);
            }
        }
        response
    }

    /// Writes a tombstone for a live key; returns the version it ended.
    fn delete_key(&mut self, w: &mut Writer, id: u32) -> KeyValue {
        let block = self.keys.get(id);
        let prev = block.latest().filter(|v| !v.tombstone).expect("deleting a live key");
        let prev = prev.to_kv(block.key());
        let sub = w.next_sub;
        w.next_sub += 1;
        let v = Version {
            main: w.rev,
            sub,
            tombstone: true,
            create: 0,
            version: 0,
            lease: 0,
            value: &[],
        };
        self.keys.get_mut(id).push(&v);
        if prev.lease != 0 {
            self.leases.remove(&(prev.lease, id));
        }
        self.log.push(Revision { main: w.rev, sub }, id);
        let kv = KeyValue { key: prev.key.clone(), mod_revision: w.rev, ..KeyValue::default() };
        w.events.push(Event {
            kind: EventKind::Delete,
            kv,
            prev_kv: Some(prev.clone()),
            sub_revision: sub,
        });
        prev
    }

    /// Live keys attached to `lease`, in key order.
    pub fn lease_keys(&self, lease: i64) -> Vec<Vec<u8>> {
        let ids = self.leases.range((lease, 0)..=(lease, u32::MAX));
        let mut keys: Vec<Vec<u8>> = ids.map(|(_, id)| self.keys.get(*id).key().to_vec()).collect();
        keys.sort_unstable();
        keys
    }

    /// Deletes every key attached to `lease` in one revision (a revoke).
    pub fn apply_revoke_lease(&mut self, lease: i64) -> Applied<DeleteRangeResponse> {
        let mut w = self.writer();
        let mut response = DeleteRangeResponse::default();
        for key in self.lease_keys(lease) {
            let id = self.lookup(&key).expect("leased keys are in the tree");
            response.prev_kvs.push(self.delete_key(&mut w, id));
            response.deleted += 1;
        }
        self.finish(w, response)
    }

    /// Starts a compaction at `rev`: reads below it fail from now on. The
    /// old versions are dropped by later `compact_step` calls.
    pub fn compact(&mut self, rev: u64) -> Result<(), Error> {
        if rev <= self.compact_revision {
            return Err(Error::Compacted { compact_revision: self.compact_revision });
        }
        if rev > self.current_revision {
            return Err(Error::FutureRevision { current_revision: self.current_revision });
        }
        self.compact_revision = rev;
        self.compaction = Some(Compaction { resume_after: None });
        self.log.trim_below(rev);
        Ok(())
    }

    /// Whether a compaction still has old versions to drop.
    pub fn compaction_pending(&self) -> bool {
        self.compaction.is_some()
    }

    /// Whether a pending compaction waits for an open image to end.
    pub fn compaction_paused(&self) -> bool {
        self.compaction.is_some() && self.image_pin.is_some_and(|at| at < self.compact_revision)
    }

    /// Compacts up to `max_keys` keys of a pending compaction; returns true
    /// when none is left pending. Does nothing while the compaction is
    /// paused (see [`Store::compaction_paused`]).
    pub fn compact_step(&mut self, max_keys: usize) -> bool {
        if self.compaction_paused() {
            return false;
        }
        let Some(job) = &self.compaction else { return true };
        let mut cursor = match &job.resume_after {
            None => self.tree.first(),
            Some(after) => self.tree.seek(&self.keys, after),
        };
        if let (Some(after), Some(id)) = (&job.resume_after, self.tree.at(cursor))
            && self.keys.get(id).key() == after.as_slice()
        {
            cursor = self.tree.advance(cursor);
        }
        let ids: Vec<u32> = self.tree.iter_from(cursor).take(max_keys.max(1)).collect();
        let done = ids.len() < max_keys.max(1);
        let last_key = ids.last().map(|id| self.keys.get(*id).key().to_vec());
        for id in ids {
            self.compact_key(id);
        }
        self.compaction = if done { None } else { Some(Compaction { resume_after: last_key }) };
        done
    }

    /// Runs a pending compaction to its end. Not while it is paused.
    pub fn compact_all(&mut self) {
        assert!(!self.compaction_paused(), "compaction is paused by an open image");
        while !self.compact_step(usize::MAX) {}
    }

    fn compact_key(&mut self, id: u32) {
        let at = self.compact_revision;
        let block = self.keys.get(id);
        // Newest first: the first version below `at` is the newest one there.
        let below = block.newest_first().position(|v| v.main < at);
        let Some(below) = below else { return };
        let total = block.newest_first().count();
        let newest_below = total - 1 - below;
        let keep_newest = block.newest_first().nth(below).is_some_and(|v| !v.tombstone);
        if newest_below == 0 && keep_newest {
            return;
        }
        if below == 0 && !keep_newest {
            let key = block.key().to_vec();
            self.tree.remove(&self.keys, &key).expect("a compacted key is in the tree");
            self.keys.release(id);
            return;
        }
        self.keys.get_mut(id).retain(|i, v| v.main >= at || (i == newest_below && keep_newest));
    }

    /// Builds a store from restored parts (see `image.rs`). `changes` holds
    /// the (revision, key id) of every version at or after the compact
    /// revision, in any order; they must cover every revision from there to
    /// `current_revision` densely, as a live store's log does.
    pub(crate) fn restore(
        config: StoreConfig,
        keys: KeyTable,
        tree: Tree,
        current_revision: u64,
        compact_revision: u64,
        mut changes: Vec<(Revision, u32)>,
    ) -> Option<Store> {
        changes.sort_unstable();
        let first = compact_revision.max(FIRST_CHANGE_REVISION);
        let mut log = RevLog::new(first);
        let (mut next_main, mut last) = (first, Revision::default());
        for (rev, id) in changes {
            let fits = if rev.sub == 0 {
                rev.main == next_main
            } else {
                rev == Revision { main: last.main, sub: last.sub + 1 } && last.main != 0
            };
            if !fits {
                return None;
            }
            if rev.sub == 0 {
                next_main += 1;
            }
            log.push(rev, id);
            last = rev;
        }
        if next_main != current_revision + 1 {
            return None;
        }
        let mut leases = BTreeSet::new();
        for id in tree.iter_from(tree.first()) {
            if let Some(v) = keys.get(id).latest().filter(|v| !v.tombstone && v.lease != 0) {
                leases.insert((v.lease, id));
            }
        }
        Some(Store {
            config,
            keys,
            tree,
            log,
            leases,
            current_revision,
            compact_revision,
            compaction: None,
            image_pin: None,
        })
    }
}

/// A range read built in steps (`Store::range_step`), each walking a
/// bounded number of keys, all at the revision it started at: whatever is
/// written between steps, it sees the same keys, so a large range need not
/// hold the loop in one go. It holds what it found so far, at most its
/// `max_bytes` (as `Store::range_within` counts them).
pub struct RangeBuild {
    req: RangeRequest,
    rev: u64,
    max_bytes: usize,
    /// Where the next step's walk begins.
    next_key: Vec<u8>,
    /// Matches held in `kvs`: every one when sorting, filtering or without
    /// a limit; otherwise one past the limit, which only says there is more.
    wanted: usize,
    /// Values are copied only when returned or sorted on.
    drop_values: bool,
    count: u64,
    kvs: Vec<KeyValue>,
    /// Invariant: ≤ max_bytes while the build goes on.
    built_bytes: usize,
}

impl RangeBuild {
    fn new(req: RangeRequest, rev: u64, max_bytes: usize) -> RangeBuild {
        let order = effective_order(&req);
        let wanted = if order != SortOrder::None || filtered(&req) || req.limit == 0 {
            usize::MAX
        } else {
            req.limit.saturating_add(1).try_into().unwrap_or(usize::MAX)
        };
        let sorts_on_value = order != SortOrder::None && req.sort_target == SortTarget::Value;
        let drop_values = req.keys_only && !sorts_on_value;
        let next_key = req.key.clone();
        RangeBuild {
            req,
            rev,
            max_bytes,
            next_key,
            wanted,
            drop_values,
            count: 0,
            kvs: Vec::new(),
            built_bytes: 0,
        }
    }

    /// Bytes of key-values held so far, as the bound counts them.
    pub fn built_bytes(&self) -> usize {
        self.built_bytes
    }

    /// Counts a live key and holds it if wanted; false once it would pass
    /// `max_bytes` (refused whatever follows: the walk ends there).
    fn take(&mut self, key: &[u8], v: Version<'_>) -> bool {
        self.count += 1;
        if self.req.count_only || self.kvs.len() >= self.wanted {
            return true;
        }
        let value = if self.drop_values { &[][..] } else { v.value };
        // The one past the limit only says there is more; it is never sent.
        let sent = self.wanted == usize::MAX || self.kvs.len() + 1 < self.wanted;
        if sent {
            self.built_bytes += key.len() + value.len() + RANGE_KV_OVERHEAD_BYTES;
            if self.built_bytes > self.max_bytes {
                return false;
            }
        }
        self.kvs.push(Version { value, ..v }.to_kv(key));
        true
    }

    fn finish(&mut self) -> RangeResponse {
        let req = &self.req;
        let mut kvs = std::mem::take(&mut self.kvs);
        if filtered(req) {
            kvs.retain(|kv| passes_filters(req, kv));
        }
        sort_kvs(&mut kvs, req.sort_target, effective_order(req));
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value = Vec::new());
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as u64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        RangeResponse { kvs, more, count: self.count }
    }
}

/// What one step of a `RangeBuild` came to.
#[derive(Debug)]
pub enum RangeStep {
    /// Keys are left to walk: step again.
    More,
    Done(RangeResponse),
    /// The key-values passed `max_bytes`: refused, and nothing more built.
    TooLarge,
}

fn filtered(req: &RangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

/// The versions a compaction at `at` keeps: every version at or after it,
/// and the newest one before it unless that one is a tombstone.
pub(crate) fn retained(block: &Block, at: u64) -> Vec<Version<'_>> {
    let all = block.oldest_first();
    let below = all.iter().rposition(|v| v.main < at);
    let keep = |i: usize, v: &Version<'_>| v.main >= at || (Some(i) == below && !v.tombstone);
    all.iter().enumerate().filter(|(i, v)| keep(*i, v)).map(|(_, v)| *v).collect()
}

/// etcd sorts ascending when a target other than the key is named without an
/// order, and never re-sorts an ascending key order (the natural one).
pub(super) fn effective_order(req: &RangeRequest) -> SortOrder {
    match (req.sort_target, req.sort_order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (SortTarget::Key, order) => order,
        (_, SortOrder::None) => SortOrder::Ascend,
        (_, order) => order,
    }
}

/// Stable sort of key-ordered results, so ties stay in ascending key order.
fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    let cmp = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(cmp),
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
}

pub(super) fn check_put(req: &PutRequest) -> Result<(), Error> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}
