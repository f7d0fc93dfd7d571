//! The node's stable storage as Raft reads it: the WAL for entries and the
//! hard state, the snapshot directory for the image the WAL's marker names.
//!
//! It sits above both `wal` and `snap`, which know nothing of each other:
//! `snapshot()` must hand out exactly the file the WAL's marker points at,
//! and only this join can check that.

use crate::raft::{ConfState, Entry, HardState, Snapshot, Storage, StorageError};
use crate::snap::SnapDir;
use crate::wal::Wal;

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

    /// The snapshot the WAL's marker names, without its payload (an empty
    /// snapshot when there is none). A payload is never held whole in
    /// memory: whoever needs it reads the file a chunk at a time
    /// (`SnapDir::open_payload`), as the node does to send it to a follower
    /// or to restore from it. The file is opened and its header checked
    /// here, so a missing or mislabelled file is an error now. The index
    /// asked for is only a hint.
    fn snapshot(&self, _request_index: u64) -> Result<Snapshot, StorageError> {
        let meta = self.wal.snapshot_meta();
        if meta.index == 0 {
            return Ok(Snapshot::default());
        }
        let payload = self
            .snaps
            .open_payload(meta.index, meta.term)
            .map_err(|error| StorageError::Io(error.to_string()))?;
        if payload.meta() != meta {
            return Err(StorageError::Io(format!(
                "snapshot file at index {} disagrees with the wal marker",
                meta.index
            )));
        }
        Ok(Snapshot { meta: meta.clone(), data: Vec::new() })
    }
}
