//! The tail of the log that is not yet durable: entries (and at most one
//! incoming snapshot) handed to the caller in a `Ready` but not yet confirmed
//! by `advance`.

use super::types::{Entry, Snapshot};

#[derive(Debug, Clone, Default)]
pub struct Unstable {
    /// A snapshot received from the leader and not yet persisted.
    pub snapshot: Option<Snapshot>,
    /// Invariant: `entries[i].index == offset + i`.
    pub entries: Vec<Entry>,
    /// The index of `entries[0]` (or of the next entry when empty). Every
    /// index below it is in storage or in `snapshot`.
    pub offset: u64,
}

impl Unstable {
    pub fn new(offset: u64) -> Unstable {
        Unstable { snapshot: None, entries: Vec::new(), offset }
    }

    pub fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.meta.index + 1)
    }

    pub fn maybe_last_index(&self) -> Option<u64> {
        match self.entries.last() {
            Some(entry) => Some(entry.index),
            None => self.snapshot.as_ref().map(|s| s.meta.index),
        }
    }

    pub fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            return self.snapshot.as_ref().filter(|s| s.meta.index == index).map(|s| s.meta.term);
        }
        let position = usize::try_from(index - self.offset).ok()?;
        self.entries.get(position).map(|e| e.term)
    }

    /// Drops entries up to `index` once they are durable, if they are still
    /// the same entries (`term` matches) that were handed out.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if index < self.offset || self.maybe_term(index) != Some(term) {
            return;
        }
        let count = (index + 1 - self.offset) as usize;
        self.entries.drain(..count);
        self.offset = index + 1;
    }

    pub fn stable_snapshot_to(&mut self, index: u64) {
        if self.snapshot.as_ref().is_some_and(|s| s.meta.index == index) {
            self.snapshot = None;
        }
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot.meta.index + 1;
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    /// Appends `entries`, replacing any unstable entries at or after the first
    /// new index. The caller guarantees `entries` are contiguous.
    pub fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        let end = self.offset + self.entries.len() as u64;
        if after == end {
            self.entries.extend_from_slice(entries);
        } else if after <= self.offset {
            // The new entries replace part of the durable log too; storage
            // truncates its conflicting tail when they are appended to it.
            self.offset = after;
            self.entries.clear();
            self.entries.extend_from_slice(entries);
        } else {
            self.entries.truncate((after - self.offset) as usize);
            self.entries.extend_from_slice(entries);
        }
    }

    /// Unstable entries in `[low, high)`; the caller keeps the range inside.
    pub fn slice(&self, low: u64, high: u64) -> &[Entry] {
        let start = (low - self.offset) as usize;
        let end = (high - self.offset) as usize;
        &self.entries[start..end]
    }
}
