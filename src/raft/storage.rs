//! The read side of the stable log, as raft sees it.
//!
//! Raft only reads through this trait; writing is the caller's job, done in
//! the order the `Ready` contract gives. The WAL implements it for a real
//! node; tests use an in-memory implementation.

use super::types::{ConfState, Entry, HardState, Snapshot};

/// Why a read of the stable log did not return what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The index is at or below the first index: a snapshot replaced it.
    Compacted,
    /// The index is past the last index.
    Unavailable,
    /// A snapshot is being made; ask again later.
    SnapshotTemporarilyUnavailable,
    /// The storage itself failed; the message says where.
    Io(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Compacted => f.write_str("log index compacted"),
            StorageError::Unavailable => f.write_str("log index unavailable"),
            StorageError::SnapshotTemporarilyUnavailable => {
                f.write_str("snapshot temporarily unavailable")
            }
            StorageError::Io(message) => write!(f, "storage: {message}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// Read access to the durable log.
///
/// Invariant: `first_index() - 1` is the index of the latest snapshot (or 0),
/// `term(first_index() - 1)` is its term, and every index in
/// `[first_index(), last_index()]` has an entry.
pub trait Storage {
    /// The hard state and membership the log was left with. The membership
    /// may be the one of the newest snapshot (or of the bootstrap): raft
    /// replays the membership changes in the log up to `Config::applied`
    /// itself, and every change fixes one member's role outright, so a newer
    /// membership replays to the same result.
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError>;
    /// Entries in `[low, high)`, stopping early once their total
    /// `Entry::size_bytes` would pass `max_size_bytes` (at least one entry is
    /// always returned when the range is not empty).
    fn entries(&self, low: u64, high: u64, max_size_bytes: u64)
    -> Result<Vec<Entry>, StorageError>;
    /// The term of the entry at `index`; also answers for `first_index() - 1`.
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    fn first_index(&self) -> Result<u64, StorageError>;
    fn last_index(&self) -> Result<u64, StorageError>;
    /// The newest snapshot, at or after `request_index` where possible.
    fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError>;
}
