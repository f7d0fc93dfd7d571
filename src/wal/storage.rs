//! Raft's read side of the log, served straight from the mapped segments.
//!
//! `entries` decodes records from the maps on demand and re-checks each CRC
//! (the page cache can rot too); no entry is kept in memory beyond the
//! offset index. `DiskStorage` pairs the WAL with the snapshot files, since
//! `snapshot()` must hand out the image that the WAL's marker points at.

use super::Wal;
use super::record::RecordKind;
use crate::raft::{ConfState, Entry, HardState, Snapshot, Storage, StorageError};
use crate::snap::SnapDir;

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

/// The node's stable storage as Raft reads it: the WAL for entries and hard
/// state, the snapshot directory for the image the WAL's marker names.
pub struct DiskStorage {
    pub wal: Wal,
    pub snaps: SnapDir,
}

impl Storage for DiskStorage {
    /// The hard state, and the membership of the newest snapshot. Membership
    /// changes in entries after it are Raft's to replay.
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.wal.hard_state(), self.wal.snapshot_meta().conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.wal.entries_in(low, high, max_size_bytes)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        self.wal.term_of(index)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.wal.first_index())
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.wal.last_index())
    }

    /// Loads the snapshot file the WAL's marker names (an empty snapshot
    /// when there is none). The index asked for is only a hint.
    fn snapshot(&self, _request_index: u64) -> Result<Snapshot, StorageError> {
        let meta = self.wal.snapshot_meta();
        if meta.index == 0 {
            return Ok(Snapshot::default());
        }
        let snapshot = self
            .snaps
            .load(meta.index, meta.term)
            .map_err(|error| StorageError::Io(error.to_string()))?;
        if snapshot.meta != *meta {
            return Err(StorageError::Io(format!(
                "snapshot file at index {} disagrees with the wal marker",
                meta.index
            )));
        }
        Ok(snapshot)
    }
}
