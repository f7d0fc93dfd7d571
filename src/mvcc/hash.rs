//! The keyspace hash (etcd's HashKV), computed whole or a slice at a time
//! while writes go on.
//!
//! The hash at revision `R` is a CRC32 of the compact revision, then of
//! every retained version with mod revision ≤ `R`, in key then revision
//! order. A [`LiveHash`] walks the keys in order and remembers the last key
//! it visited by its bytes, so a slice can end anywhere and the next one
//! resume after it. Between slices the store may change:
//!
//! * a write adds versions above `R` (skipped) or keys whose versions are
//!   all above `R` (contributing nothing), so the bytes hashed are those
//!   of the store as it was at `R`;
//! * a physical compaction step drops only versions that the compact
//!   revision already hides (see `retained`), so the bytes do not change;
//! * a new compaction changes the compact revision, and with it the bytes
//!   a hash at `R` stands for: the walk stops and says [`HashStep::Aborted`]
//!   rather than mix two states into one wrong hash.
//!
//! The same walk run to its end in one call is [`Store::hash_kv`], so the
//! sliced hash and the whole one are the same value by construction.

#[cfg(feature = "fault-injection")]
use super::block::{Version, encode_block};
use super::store::{Store, retained};
use super::tree::Cursor;
use super::types::{Error, KvHash};

/// What a key visit costs against a slice's budget beside the bytes it
/// hashes: the tree walk and the version list, about as much work as
/// hashing this many bytes.
pub const HASH_KEY_COST_BYTES: usize = 64;

/// A hash of the store at one revision, taken a slice at a time.
#[derive(Debug, Clone)]
pub struct LiveHash {
    /// The revision hashed; newer versions are skipped.
    revision: u64,
    /// The compact revision when the hash began. Invariant: ≤ `revision`,
    /// and equal to the store's for as long as the walk goes on.
    compact_revision: u64,
    /// The last key visited; `None` before the first.
    resume_after: Option<Vec<u8>>,
    hasher: crc32fast::Hasher,
    keys_visited: u64,
}

/// Where a slice left the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashStep {
    /// More keys remain: call `step` again.
    Pending,
    /// The walk is complete: the hash.
    Done(KvHash),
    /// The store was compacted (or replaced) since the hash began: the
    /// bytes already hashed describe a state that is gone. Ask again.
    Aborted,
}

impl LiveHash {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    /// Keys visited so far.
    pub fn keys_visited(&self) -> u64 {
        self.keys_visited
    }

    /// Hashes keys until about `budget_bytes` of work is done or the walk
    /// ends. `store` must be the store the hash began on, or a later state
    /// of it.
    pub fn step(&mut self, store: &Store, budget_bytes: usize) -> HashStep {
        if store.compact_revision() != self.compact_revision
            || store.current_revision() < self.revision
        {
            return HashStep::Aborted;
        }
        let mut cursor = self.resume_cursor(store);
        let mut spent_bytes = 0;
        let mut visited = None;
        while spent_bytes < budget_bytes.max(1) {
            let Some(id) = store.tree.at(cursor) else {
                return HashStep::Done(self.finish());
            };
            cursor = store.tree.advance(cursor);
            visited = Some(id);
            spent_bytes += HASH_KEY_COST_BYTES + self.hash_key(store, id);
            self.keys_visited += 1;
        }
        if let Some(id) = visited {
            self.resume_after = Some(store.keys.get(id).key().to_vec());
        }
        match store.tree.at(cursor) {
            Some(_) => HashStep::Pending,
            None => HashStep::Done(self.finish()),
        }
    }

    fn finish(&self) -> KvHash {
        KvHash {
            hash: self.hasher.clone().finalize(),
            hash_revision: self.revision,
            compact_revision: self.compact_revision,
        }
    }

    /// Hashes one key's versions as of the hash; returns the bytes hashed.
    fn hash_key(&mut self, store: &Store, id: u32) -> usize {
        let block = store.keys.get(id);
        let h = &mut self.hasher;
        let mut bytes = 0;
        for v in
            retained(block, self.compact_revision).into_iter().filter(|v| v.main <= self.revision)
        {
            h.update(&(block.key().len() as u64).to_le_bytes());
            h.update(block.key());
            for n in [
                v.main,
                u64::from(v.sub),
                u64::from(v.tombstone),
                v.create,
                v.version,
                v.lease as u64,
            ] {
                h.update(&n.to_le_bytes());
            }
            h.update(&(v.value.len() as u64).to_le_bytes());
            h.update(v.value);
            bytes += block.key().len() + v.value.len() + 64;
        }
        bytes
    }

    /// Where the walk goes on: the first key after the last one visited.
    fn resume_cursor(&self, store: &Store) -> Cursor {
        let Some(after) = &self.resume_after else { return store.tree.first() };
        let cursor = store.tree.seek(&store.keys, after);
        match store.tree.at(cursor) {
            Some(id) if store.keys.get(id).key() == after.as_slice() => store.tree.advance(cursor),
            _ => cursor,
        }
    }
}

impl Store {
    /// Begins a hash at `rev` (0 = current) that later slices carry on
    /// (`LiveHash::step`) while the store changes.
    pub fn begin_hash(&self, rev: u64) -> Result<LiveHash, Error> {
        let revision = self.read_revision(rev)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.compact_revision.to_le_bytes());
        Ok(LiveHash {
            revision,
            compact_revision: self.compact_revision,
            resume_after: None,
            hasher,
            keys_visited: 0,
        })
    }

    /// etcd's HashKV: a CRC32 of every retained version with mod revision
    /// ≤ `rev` (0 = current), in key then revision order, and of the compact
    /// revision. Two stores that applied the same writes agree on it whether
    /// or not their compactions have finished. The whole walk at once: for
    /// tests and small stores; the node takes it a slice at a time.
    pub fn hash_kv(&self, rev: u64) -> Result<KvHash, Error> {
        let mut hash = self.begin_hash(rev)?;
        loop {
            match hash.step(self, usize::MAX) {
                HashStep::Done(done) => return Ok(done),
                HashStep::Pending => {}
                HashStep::Aborted => unreachable!("the store cannot change during one call"),
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
impl Store {
    /// Fault injection only: flips the lowest bit of the first byte of
    /// `key`'s newest value, as a bit flip in memory or on the card would,
    /// without a revision, an event or any trace in the log. False when the
    /// key has no live value to flip.
    pub fn fault_flip_value(&mut self, key: &[u8]) -> bool {
        let Some(id) = self.tree.get(&self.keys, key) else { return false };
        let block = self.keys.get(id);
        let mut versions = block.oldest_first();
        let Some(newest) = versions.last().copied() else { return false };
        if newest.tombstone || newest.value.is_empty() {
            return false;
        }
        let mut value = newest.value.to_vec();
        value[0] ^= 1;
        *versions.last_mut().expect("a newest version") = Version { value: &value, ..newest };
        let flipped = encode_block(key, &versions);
        self.keys.replace(id, flipped);
        true
    }
}
