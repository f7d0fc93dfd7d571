//! The whole log as raft sees it: the durable part read through `Storage`,
//! followed by the `Unstable` tail, plus the commit and apply positions.
//!
//! ```text
//!  snapshot │ storage entries      │ unstable entries
//!  ─────────┼──────────────────────┼──────────────────
//!  ≤ first-1  first ..= offset-1     offset ..= last
//!  applied ≤ committed ≤ last; only ≤ min(committed, offset-1) is applied
//! ```

use super::storage::{Storage, StorageError};
use super::types::{Entry, Snapshot};
use super::unstable::Unstable;

pub struct RaftLog<S: Storage> {
    pub storage: S,
    pub unstable: Unstable,
    /// The highest index known to be committed. Invariant: `committed ≤ last_index()`.
    pub committed: u64,
    /// The highest index handed to the caller for applying.
    /// Invariant: `applied ≤ committed`.
    pub applied: u64,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S) -> Result<RaftLog<S>, StorageError> {
        let first_index = storage.first_index()?;
        let last_index = storage.last_index()?;
        Ok(RaftLog {
            storage,
            unstable: Unstable::new(last_index + 1),
            committed: first_index - 1,
            applied: first_index - 1,
        })
    }

    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(index) => index,
            None => self.storage.first_index().unwrap_or(1),
        }
    }

    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(index) => index,
            None => self.storage.last_index().unwrap_or(0),
        }
    }

    /// The index up to which the log is durable.
    pub fn persisted_index(&self) -> u64 {
        if self.unstable.snapshot.is_some() {
            return 0;
        }
        self.unstable.offset - 1
    }

    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        let dummy_index = self.first_index() - 1;
        if index < dummy_index {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if let Some(term) = self.unstable.maybe_term(index) {
            return Ok(term);
        }
        self.storage.term(index)
    }

    /// The term at `index`, or 0 where it is unknown (compacted or past the end).
    pub fn term_or_zero(&self, index: u64) -> u64 {
        self.term(index).unwrap_or(0)
    }

    pub fn last_term(&self) -> u64 {
        self.term_or_zero(self.last_index())
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up
    /// to date as ours (§5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// Entries in `[low, high)`, at most `max_size_bytes` of them (at least one).
    pub fn entries(
        &self,
        low: u64,
        high: u64,
        max_size_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = Vec::new();
        let offset = self.unstable.offset;
        if low < offset {
            out = self.storage.entries(low, high.min(offset), max_size_bytes)?;
            if (out.len() as u64) < high.min(offset) - low || high <= offset {
                return Ok(out);
            }
        }
        let mut size_bytes: u64 = out.iter().map(Entry::size_bytes).sum();
        for entry in self.unstable.slice(low.max(offset), high) {
            size_bytes += entry.size_bytes();
            if !out.is_empty() && size_bytes > max_size_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    /// Finds where an append after (`index`, `log_term`) fits; returns the new
    /// last index, or None when the entry at `index` does not have `log_term`.
    /// Errors when the append would rewrite a committed entry.
    pub fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        entries: &[Entry],
    ) -> Option<Result<u64, u64>> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new_index = index + entries.len() as u64;
        let conflict = self.find_conflict(entries);
        if conflict != 0 {
            if conflict <= self.committed {
                return Some(Err(conflict));
            }
            let start = (conflict - (index + 1)) as usize;
            self.unstable.truncate_and_append(&entries[start..]);
        }
        Some(Ok(last_new_index))
    }

    /// The index of the first entry whose term differs from ours, or of the
    /// first entry past our log; 0 when all of `entries` are already there.
    fn find_conflict(&self, entries: &[Entry]) -> u64 {
        for entry in entries {
            if !self.match_term(entry.index, entry.term) {
                return entry.index;
            }
        }
        0
    }

    /// The largest index ≤ `index` whose term is ≤ `term`, with that term:
    /// where a log ending in `term` may agree with ours (fast backtracking).
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Ok(t) if t > term => index -= 1,
                Ok(t) => return (index, t),
                Err(_) => return (index, 0),
            }
        }
    }

    pub fn append(&mut self, entries: &[Entry]) -> u64 {
        self.unstable.truncate_and_append(entries);
        self.last_index()
    }

    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} past the last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Commits `index` if it has `term` (the leader's current-term rule is the
    /// caller's; this only checks that the entry is the one voted on).
    pub fn maybe_commit(&mut self, index: u64, term: u64) -> bool {
        if index > self.committed && (term == 0 || self.term_or_zero(index) == term) {
            self.commit_to(index);
            return true;
        }
        false
    }

    /// Committed, durable entries not yet handed out, up to `max_size_bytes`.
    pub fn next_committed_entries(&self, max_size_bytes: u64) -> Vec<Entry> {
        let high = self.committed.min(self.persisted_index()) + 1;
        let low = self.applied + 1;
        if low >= high {
            return Vec::new();
        }
        self.entries(low, high, max_size_bytes).unwrap_or_default()
    }

    pub fn has_next_committed_entries(&self) -> bool {
        self.committed.min(self.persisted_index()) > self.applied
    }

    pub fn applied_to(&mut self, index: u64) {
        if index > self.applied {
            assert!(index <= self.committed, "applied {index} past commit {}", self.committed);
            self.applied = index;
        }
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        self.committed = snapshot.meta.index;
        self.unstable.restore(snapshot);
    }

    pub fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        if let Some(snapshot) = &self.unstable.snapshot {
            return Ok(snapshot.clone());
        }
        self.storage.snapshot(request_index)
    }
}
