//! An in-memory `Storage` for tests, the simulator and benchmarks. It is
//! written to exactly as the WAL is: append the `Ready`'s entries (a
//! conflicting tail is truncated), set its hard state, apply its snapshot.
//!
//! Layout: `entries[i]` has index `compacted_index + 1 + i`; the compacted
//! prefix (the empty log's dummy at index 0, or what a snapshot covers) stands
//! in front of them. `create_snapshot` records an image without dropping
//! entries; `compact` then drops the entries the snapshot covers.

use super::storage::{Storage, StorageError};
use super::types::{ConfState, Entry, HardState, Snapshot, SnapshotMeta};

#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// The newest snapshot. Invariant: `snapshot.meta.index ≥ compacted_index`,
    /// so a follower behind `first_index()` can always be sent it.
    snapshot: Snapshot,
    /// The index and term of the last entry dropped (`first_index() - 1`).
    compacted_index: u64,
    compacted_term: u64,
    /// The membership as of the snapshot or of the bootstrap.
    conf_state: ConfState,
    /// Invariant: `entries[i].index == compacted_index + 1 + i`.
    entries: Vec<Entry>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// A fresh log for a cluster that starts with these members.
    pub fn new_with_conf_state(conf_state: ConfState) -> MemStorage {
        let mut storage = MemStorage::default();
        storage.snapshot.meta.conf_state = conf_state.clone();
        storage.conf_state = conf_state;
        storage
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// Appends `entries`, replacing any stored entries from the first new
    /// index on. Entries at or below the snapshot are skipped. Gaps are the
    /// caller's bug and assert.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let compacted_index = self.compacted_index;
        let skip = compacted_index.saturating_sub(first.index - 1).min(entries.len() as u64);
        let entries = &entries[skip as usize..];
        let Some(first) = entries.first() else { return };
        let last_index = compacted_index + self.entries.len() as u64;
        assert!(first.index <= last_index + 1, "append leaves a gap after {last_index}");
        self.entries.truncate((first.index - compacted_index - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Replaces the log with `snapshot` if it is newer than what is stored.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        if snapshot.meta.index <= self.snapshot.meta.index.max(self.compacted_index) {
            return;
        }
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.hard_state.term = self.hard_state.term.max(snapshot.meta.term);
        self.conf_state = snapshot.meta.conf_state.clone();
        self.compacted_index = snapshot.meta.index;
        self.compacted_term = snapshot.meta.term;
        self.snapshot = snapshot;
    }

    /// Records a snapshot of the state machine at `index` (applied, so in the
    /// log). The entries stay until `compact`.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        if index <= self.snapshot.meta.index {
            return Err(StorageError::Compacted);
        }
        let term = self.term(index)?;
        self.conf_state = conf_state.clone();
        self.snapshot = Snapshot { meta: SnapshotMeta { index, term, conf_state }, data };
        Ok(())
    }

    /// Drops entries up to `index`, which the snapshot must cover.
    pub fn compact(&mut self, index: u64) {
        assert!(index <= self.snapshot.meta.index, "compact past the snapshot would lose entries");
        if index <= self.compacted_index {
            return;
        }
        let term = self.term(index).expect("a snapshotted index is in the log");
        self.entries.drain(..(index - self.compacted_index) as usize);
        self.compacted_index = index;
        self.compacted_term = term;
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.hard_state, self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index()? {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index()? + 1 {
            return Err(StorageError::Unavailable);
        }
        let offset = self.compacted_index + 1;
        let slice = &self.entries[(low - offset) as usize..(high - offset) as usize];
        let mut size_bytes = 0;
        let mut out = Vec::with_capacity(slice.len());
        for entry in slice {
            size_bytes += entry.size_bytes();
            if !out.is_empty() && size_bytes > max_size_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let compacted_index = self.compacted_index;
        if index < compacted_index {
            return Err(StorageError::Compacted);
        }
        if index == compacted_index {
            return Ok(self.compacted_term);
        }
        match self.entries.get((index - compacted_index - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(StorageError::Unavailable),
        }
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.compacted_index + 1)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.compacted_index + self.entries.len() as u64)
    }

    fn snapshot(&self, _request_index: u64) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { term, index, kind: EntryKind::Normal, data: vec![index as u8] }
    }

    #[test]
    fn append_truncates_a_conflicting_tail_and_compact_keeps_the_boundary_term() {
        let mut storage = MemStorage::new();
        storage.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        storage.append(&[entry(2, 2)]);
        assert_eq!(storage.last_index(), Ok(2));
        assert_eq!(storage.term(2), Ok(2));
        storage.append(&[entry(3, 2), entry(4, 2)]);
        storage.create_snapshot(3, ConfState::default(), b"image".to_vec()).unwrap();
        storage.compact(3);
        assert_eq!(storage.first_index(), Ok(4));
        assert_eq!(storage.term(3), Ok(2));
        assert_eq!(storage.term(2), Err(StorageError::Compacted));
        assert_eq!(storage.entries(2, 4, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(storage.entries(4, 5, 0).unwrap().len(), 1, "at least one entry");
        assert_eq!(storage.snapshot(0).unwrap().data, b"image".to_vec());
    }
}
