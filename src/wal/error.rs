//! The WAL's error type. Every variant that concerns a file names it.

use std::io;
use std::path::PathBuf;

use super::recover::Corruption;

/// What went wrong in the WAL.
///
/// `SyncFailed` is special: after a failed fsync the kernel may have dropped
/// the dirty pages and cleared the error, so a retry could "succeed" without
/// the data being on disk. The caller must treat it as fatal: log it and exit
/// the process. The WAL refuses every further call with `Poisoned`.
#[derive(Debug)]
pub enum WalError {
    /// An I/O call failed. `op` says which.
    Io { file: PathBuf, op: &'static str, source: io::Error },
    /// The disk has no room for a new segment of `size_bytes`.
    NoSpace { file: PathBuf, size_bytes: u64 },
    /// fsync/msync failed: FATAL, the process must exit.
    SyncFailed { file: PathBuf, source: io::Error },
    /// The log on disk is damaged in a way that is not a torn tail; the node
    /// must not start. Names the file and byte offset.
    Corrupt { dir: PathBuf, corruption: Corruption },
    /// A file in the WAL directory looks like a segment but its name does not
    /// parse.
    StrayFile { file: PathBuf },
    /// A previous sync failed; nothing more may be written or read.
    Poisoned,
    /// The configuration cannot work; says why.
    Config(&'static str),
    /// `append` was given entries whose indexes are not consecutive.
    NotContiguous { expected: u64, found: u64 },
    /// `append` would leave a hole after the last index.
    Gap { index: u64, last_index: u64 },
    /// `append` targets an index the snapshot already covers.
    BelowSnapshot { index: u64, snapshot_index: u64 },
    /// A record is larger than a segment can ever hold.
    RecordTooLarge { payload_bytes: usize, max_bytes: usize },
    /// A snapshot marker or release names an index the log cannot honour.
    BadSnapshot { index: u64, last_index: u64 },
}

impl WalError {
    /// Whether the process must stop (a failed sync, or a WAL already
    /// poisoned by one).
    pub fn is_fatal(&self) -> bool {
        matches!(self, WalError::SyncFailed { .. } | WalError::Poisoned)
    }
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Io { file, op, source } => write!(f, "{op} {}: {source}", file.display()),
            WalError::NoSpace { file, size_bytes } => {
                write!(f, "no space for segment {} of {size_bytes} bytes", file.display())
            }
            WalError::SyncFailed { file, source } => {
                write!(f, "fatal: sync of {} failed: {source}", file.display())
            }
            WalError::Corrupt { dir, corruption } => {
                write!(f, "wal corrupt, refusing to start: {}/{corruption}", dir.display())
            }
            WalError::StrayFile { file } => {
                write!(f, "unexpected file in wal directory: {}", file.display())
            }
            WalError::Poisoned => f.write_str("wal unusable after a failed sync"),
            WalError::Config(why) => write!(f, "wal configuration: {why}"),
            WalError::NotContiguous { expected, found } => {
                write!(f, "entries not contiguous: expected index {expected}, got {found}")
            }
            WalError::Gap { index, last_index } => {
                write!(f, "entry {index} would leave a gap after last index {last_index}")
            }
            WalError::BelowSnapshot { index, snapshot_index } => {
                write!(f, "entry {index} is covered by the snapshot at {snapshot_index}")
            }
            WalError::RecordTooLarge { payload_bytes, max_bytes } => {
                write!(f, "record of {payload_bytes} bytes exceeds the limit of {max_bytes}")
            }
            WalError::BadSnapshot { index, last_index } => {
                write!(f, "snapshot index {index} is invalid (log last index {last_index})")
            }
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } | WalError::SyncFailed { source, .. } => Some(source),
            _ => None,
        }
    }
}
