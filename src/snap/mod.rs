//! Snapshot files under `<data-dir>/snap/`.
//!
//! Owns: writing a snapshot atomically (temp file, fsync, rename, directory
//! fsync), whole or streamed in chunks (`stream.rs`), including a snapshot
//! received from the leader until it is adopted; reading a payload back a
//! chunk at a time with its CRC checked (`read.rs`); keeping only the newest
//! few.
//!
//! Must not touch: when to snapshot (the server decides) or what the payload
//! means (the state machine image is opaque bytes here).
//!
//! # File layout
//!
//! One file per snapshot, named `{term:016x}-{index:016x}.snap`:
//!
//! ```text
//!  0         8         12         16            24
//!  | magic   | version | meta_len | payload_len | meta (postcard SnapshotMeta)
//!  | payload ...                               | crc32 of all bytes before |
//! ```
//!
//! All integers little-endian. The CRC covers the whole file but its last four
//! bytes. A file only ever appears under its final name complete and synced,
//! so a damaged one is disk rot, not a crash. The node reads only the file
//! its WAL's marker names, and a damaged one stops it with the file and
//! offset named; `load_newest`, which skips damaged files for the next older
//! valid one, serves tools and tests.
//!
//! Backup files (`backup.rs`), the payload of a snapshot with a SHA-256
//! that an operator keeps outside the data directory, are described there
//! and in docs/FORMAT.md.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::raft::{Snapshot, SnapshotMeta};

pub mod backup;
mod read;
mod stream;

pub use backup::{BackupError, BackupFile, BackupHeader};
pub use read::PayloadReader;
pub use stream::SnapWriter;

/// First bytes of every snapshot file.
pub const SNAP_MAGIC: [u8; 8] = *b"EMBERSNP";
/// Version of the layout above.
pub const SNAP_FORMAT_VERSION: u32 = 1;
/// Fixed part of the header, before the encoded meta.
const HEADER_BYTES: usize = 24;
const CRC_BYTES: usize = 4;
/// Where the header holds the payload length, which a streamed file writes
/// last.
const PAYLOAD_LEN_OFFSET: usize = 16;
/// An encoded `SnapshotMeta` longer than this is damage: even a 1,000-member
/// configuration encodes in a few kilobytes.
pub const META_MAX_BYTES: usize = 64 << 10;
/// Snapshots kept by default: the newest and two fall-backs should the
/// newest rot.
pub const RETAIN_COUNT_DEFAULT: usize = 3;
const SUFFIX: &str = ".snap";
/// A snapshot received from the leader, complete and synced, that Raft has
/// not accepted yet (`SnapDir::receive`, `SnapDir::adopt`).
const RECEIVED_SUFFIX: &str = ".snap.recv";

/// What went wrong with a snapshot file.
#[derive(Debug)]
pub enum SnapError {
    Io {
        file: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// fsync failed: fatal, as for the WAL.
    SyncFailed {
        file: PathBuf,
        source: io::Error,
    },
    /// The file is not a valid snapshot; `offset` is where the check failed.
    Corrupt {
        file: PathBuf,
        offset: u64,
        why: &'static str,
    },
    /// No valid file holds the snapshot asked for.
    Missing {
        index: u64,
        term: u64,
    },
}

impl std::fmt::Display for SnapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapError::Io { file, op, source } => write!(f, "{op} {}: {source}", file.display()),
            SnapError::SyncFailed { file, source } => {
                write!(f, "fatal: sync of {} failed: {source}", file.display())
            }
            SnapError::Corrupt { file, offset, why } => {
                write!(f, "{} at offset {offset}: {why}", file.display())
            }
            SnapError::Missing { index, term } => {
                write!(f, "no valid snapshot file for index {index} term {term}")
            }
        }
    }
}

impl std::error::Error for SnapError {}

fn io_error<'a>(file: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SnapError + 'a {
    move |source| SnapError::Io { file: file.to_path_buf(), op, source }
}

/// `{term:016x}-{index:016x}.snap`: sorting names sorts by term, then index.
pub fn snap_file_name(index: u64, term: u64) -> String {
    format!("{term:016x}-{index:016x}{SUFFIX}")
}

fn parse_snap_name(name: &str) -> Option<(u64, u64)> {
    let (term, index) = name.strip_suffix(SUFFIX)?.split_once('-')?;
    if term.len() != 16 || index.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(index, 16).ok()?, u64::from_str_radix(term, 16).ok()?))
}

/// The header and meta of a file whose payload is `payload_bytes` long.
fn encode_header(meta: &SnapshotMeta, payload_bytes: u64) -> Vec<u8> {
    let meta = postcard::to_stdvec(meta).expect("snapshot meta always encodes");
    let mut out = Vec::with_capacity(HEADER_BYTES + meta.len());
    out.extend_from_slice(&SNAP_MAGIC);
    out.extend_from_slice(&SNAP_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload_bytes.to_le_bytes());
    out.extend_from_slice(&meta);
    out
}

/// The encoded file for `snapshot`.
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = encode_header(&snapshot.meta, snapshot.data.len() as u64);
    out.reserve(snapshot.data.len() + CRC_BYTES);
    out.extend_from_slice(&snapshot.data);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and verifies a snapshot file's bytes. `Err((offset, why))`.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, (u64, &'static str)> {
    if bytes.len() < HEADER_BYTES + CRC_BYTES {
        return Err((0, "file shorter than a snapshot header"));
    }
    if bytes[0..8] != SNAP_MAGIC {
        return Err((0, "bad magic"));
    }
    let body_end = bytes.len() - CRC_BYTES;
    let stored = u32::from_le_bytes(bytes[body_end..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..body_end]) != stored {
        return Err((body_end as u64, "crc mismatch"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != SNAP_FORMAT_VERSION {
        return Err((8, "unsupported format version"));
    }
    let meta_bytes = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let payload_bytes = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let expected_len = (HEADER_BYTES + CRC_BYTES) as u64 + meta_bytes as u64 + payload_bytes;
    if meta_bytes > META_MAX_BYTES || expected_len != bytes.len() as u64 {
        return Err((12, "lengths disagree with the file size"));
    }
    let meta_end = HEADER_BYTES + meta_bytes;
    let meta: SnapshotMeta = postcard::from_bytes(&bytes[HEADER_BYTES..meta_end])
        .map_err(|_| (HEADER_BYTES as u64, "meta does not decode"))?;
    Ok(Snapshot { meta, data: bytes[meta_end..body_end].to_vec() })
}

/// The snapshot directory of one node.
#[derive(Debug, Clone)]
pub struct SnapDir {
    dir: PathBuf,
    /// Invariant: at least 1.
    retain_count: usize,
}

impl SnapDir {
    /// Opens (or creates) `<data_dir>/snap/`, removing temp files a crash
    /// left behind.
    pub fn open(data_dir: &Path, retain_count: usize) -> Result<SnapDir, SnapError> {
        let dir = data_dir.join("snap");
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_error(&dir, "create directory"))?;
            sync_dir(data_dir)?;
        }
        let snaps = SnapDir { dir, retain_count: retain_count.max(1) };
        snaps.remove_temp_files()?;
        Ok(snaps)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn remove_temp_files(&self) -> Result<(), SnapError> {
        let mut removed = false;
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir, "list"))? {
            let path = entry.map_err(io_error(&self.dir, "list"))?.path();
            let name = path.to_string_lossy();
            // Temp files of either kind (`.snap.tmp`, `.snap.recv.tmp`) and
            // received files Raft never accepted.
            if name.ends_with(".tmp") || name.ends_with(RECEIVED_SUFFIX) {
                fs::remove_file(&path).map_err(io_error(&path, "remove"))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes `snapshot` durably and atomically, then drops all but the
    /// newest `retain_count` files. Returns the new file's path.
    pub fn save(&self, snapshot: &Snapshot) -> Result<PathBuf, SnapError> {
        let mut writer = self.create(&snapshot.meta)?;
        writer.write(&snapshot.data)?;
        writer.finish()
    }

    /// Snapshot files by name, newest (highest index, then term) first.
    pub fn list(&self) -> Result<Vec<(u64, u64, PathBuf)>, SnapError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir, "list"))? {
            let entry = entry.map_err(io_error(&self.dir, "list"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((index, term)) = parse_snap_name(&name) {
                found.push((index, term, entry.path()));
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse((f.0, f.1)));
        Ok(found)
    }

    fn prune(&self) -> Result<(), SnapError> {
        let files = self.list()?;
        if files.len() <= self.retain_count {
            return Ok(());
        }
        for (_, _, path) in &files[self.retain_count..] {
            fs::remove_file(path).map_err(io_error(path, "remove"))?;
        }
        sync_dir(&self.dir)
    }

    /// Reads and verifies one file; its name must agree with its meta.
    pub fn read_file(path: &Path) -> Result<Snapshot, SnapError> {
        let bytes = fs::read(path).map_err(io_error(path, "read"))?;
        let corrupt = |(offset, why)| SnapError::Corrupt { file: path.to_path_buf(), offset, why };
        let snapshot = decode(&bytes).map_err(corrupt)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if parse_snap_name(&name) != Some((snapshot.meta.index, snapshot.meta.term)) {
            return Err(corrupt((0, "file name disagrees with the snapshot's index and term")));
        }
        Ok(snapshot)
    }

    /// The newest snapshot that verifies; damaged files are skipped with a
    /// warning. `None` when there is no valid one.
    pub fn load_newest(&self) -> Result<Option<Snapshot>, SnapError> {
        for (_, _, path) in self.list()? {
            match SnapDir::read_file(&path) {
                Ok(snapshot) => return Ok(Some(snapshot)),
                Err(error @ SnapError::Corrupt { .. }) => {
                    log::warn!("snap: skipping damaged snapshot: {error}");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// The snapshot at exactly `index` and `term`.
    pub fn load(&self, index: u64, term: u64) -> Result<Snapshot, SnapError> {
        let path = self.dir.join(snap_file_name(index, term));
        if !path.exists() {
            return Err(SnapError::Missing { index, term });
        }
        SnapDir::read_file(&path)
    }
}

fn sync_dir(dir: &Path) -> Result<(), SnapError> {
    let handle = File::open(dir).map_err(io_error(dir, "open directory"))?;
    handle
        .sync_all()
        .map_err(|source| SnapError::SyncFailed { file: dir.to_path_buf(), source })?;
    #[cfg(feature = "fault-injection")]
    crate::sync_log::note_dir_synced(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ConfState;

    fn sample(index: u64) -> Snapshot {
        let conf_state = ConfState { voters: vec![1, 2, 3], ..ConfState::default() };
        Snapshot { meta: SnapshotMeta { index, term: 2, conf_state }, data: vec![index as u8; 100] }
    }

    #[test]
    fn encode_decode_round_trip() {
        assert_eq!(decode(&encode(&sample(7))), Ok(sample(7)));
    }

    #[test]
    fn every_bit_flip_and_every_truncation_is_refused() {
        let bytes = encode(&sample(7));
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&damaged).is_err(), "bit {bit}");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "length {len}");
        }
    }
}
