//! Raft's read side of the log, served straight from the mapped segments.
//!
//! `entries` decodes records from the maps on demand and re-checks each CRC
//! (the page cache can rot too); no entry is kept in memory beyond the
//! offset index. `crate::storage::DiskStorage` pairs the WAL with the
//! snapshot files for Raft.

use super::Wal;
use super::record::RecordKind;
use crate::raft::{Entry, StorageError};

impl Wal {
    /// The entry at `index`, read from its segment and checked.
    pub fn entry(&self, index: u64) -> Result<Entry, StorageError> {
        if index < self.index.first_index() {
            return Err(StorageError::Compacted);
        }
        let (seq, offset) = self.index.locate(index).ok_or(StorageError::Unavailable)?;
        let (kind, term, stored_index, payload) =
            self.read_record(seq, offset).map_err(StorageError::Io)?;
        let entry_kind = kind.entry_kind().filter(|_| stored_index == index).ok_or_else(|| {
            StorageError::Io(format!(
                "segment {seq} offset {offset}: expected entry {index}, found {} {stored_index}",
                kind.name()
            ))
        })?;
        Ok(Entry { term, index, kind: entry_kind, data: payload.to_vec() })
    }

    /// Entries in `[low, high)` up to `max_size_bytes` (at least one).
    pub fn entries_in(
        &self,
        low: u64,
        high: u64,
        max_size_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low < self.index.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > self.index.last_index() + 1 || low > high {
            return Err(StorageError::Unavailable);
        }
        let mut entries = Vec::new();
        let mut total_bytes = 0u64;
        for index in low..high {
            let entry = self.entry(index)?;
            total_bytes += entry.size_bytes();
            if !entries.is_empty() && total_bytes > max_size_bytes {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    /// The term of entry `index`, or of the snapshot at `first_index() - 1`.
    pub fn term_of(&self, index: u64) -> Result<u64, StorageError> {
        let snapshot_index = self.index.snapshot_index();
        if index == snapshot_index {
            return Ok(self.index.snapshot_term());
        }
        if index < snapshot_index {
            return Err(StorageError::Compacted);
        }
        let (seq, offset) = self.index.locate(index).ok_or(StorageError::Unavailable)?;
        let (kind, term, stored_index, _) =
            self.read_record(seq, offset).map_err(StorageError::Io)?;
        if kind.entry_kind().is_none() || stored_index != index {
            let found = RecordKind::name(kind);
            return Err(StorageError::Io(format!(
                "segment {seq} offset {offset}: expected entry {index}, found {found}"
            )));
        }
        Ok(term)
    }
}
