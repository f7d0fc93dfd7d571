//! Writing a snapshot file a chunk at a time, for payloads built while the
//! node keeps serving.
//!
//! The file is the one `encode` gives (see the layout in `mod.rs`), written
//! in this order:
//!
//! 1. create `<name>.tmp` and write the header with a payload length of 0,
//!    then the meta;
//! 2. append each payload chunk as it comes, keeping a running CRC of the
//!    payload alone;
//! 3. write the real payload length into the header (offset 16), then the
//!    file's CRC: the CRC of the final header and meta, combined with the
//!    payload's running CRC, so no byte is read back;
//! 4. fsync the file, rename it to `<name>`, fsync the directory, prune.
//!
//! Until the rename the file is only a temp file, which `SnapDir::open`
//! deletes: a crash at any step before it leaves the previous snapshot in
//! charge, exactly as for `SnapDir::save`. An abandoned writer (aborted or
//! dropped) deletes its temp file.
//!
//! A snapshot received from the leader (`SnapDir::receive`) is written the
//! same way, but finishes under `<name>.recv`, outside the names that count
//! as snapshots and that pruning sees: until Raft accepts it, it must not
//! push out the file the WAL's marker names. `SnapDir::adopt` renames it to
//! its final name once accepted; `SnapDir::open` deletes one that never was.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::{
    CRC_BYTES, PAYLOAD_LEN_OFFSET, RECEIVED_SUFFIX, SUFFIX, SnapDir, SnapError, encode_header,
    io_error, snap_file_name, sync_dir,
};
use crate::raft::SnapshotMeta;

/// A snapshot file being written. Call order: [`SnapDir::create`], any
/// number of [`SnapWriter::write`], then [`SnapWriter::finish`] or
/// [`SnapWriter::abort`].
#[derive(Debug)]
pub struct SnapWriter {
    snaps: SnapDir,
    meta: SnapshotMeta,
    temp: PathBuf,
    path: PathBuf,
    /// `None` once finished or aborted; a writer still holding its file
    /// when dropped deletes it.
    file: Option<File>,
    payload_crc: crc32fast::Hasher,
    payload_bytes: u64,
    /// Whether finishing drops old files (not for a received file, which is
    /// not a snapshot of this member's yet).
    prune: bool,
}

impl SnapDir {
    /// Starts a snapshot file for `meta`: the payload follows through
    /// [`SnapWriter::write`]. A temp file of the same name a crash left
    /// behind is replaced.
    pub fn create(&self, meta: &SnapshotMeta) -> Result<SnapWriter, SnapError> {
        let name = snap_file_name(meta.index, meta.term);
        self.start_file(meta, self.dir.join(&name), true)
    }

    /// Starts the file of a snapshot received from the leader; it finishes
    /// under `<name>.recv` until [`SnapDir::adopt`].
    pub fn receive(&self, meta: &SnapshotMeta) -> Result<SnapWriter, SnapError> {
        self.start_file(meta, self.received_path(meta), false)
    }

    fn received_path(&self, meta: &SnapshotMeta) -> PathBuf {
        let name = snap_file_name(meta.index, meta.term);
        self.dir.join(format!("{}{}", name.strip_suffix(SUFFIX).unwrap_or(&name), RECEIVED_SUFFIX))
    }

    /// Makes a received snapshot this member's: renames it to its final
    /// name, syncs the directory and drops all but the newest files.
    pub fn adopt(&self, meta: &SnapshotMeta) -> Result<PathBuf, SnapError> {
        let received = self.received_path(meta);
        if !received.exists() {
            return Err(SnapError::Missing { index: meta.index, term: meta.term });
        }
        let path = self.dir.join(snap_file_name(meta.index, meta.term));
        fs::rename(&received, &path).map_err(io_error(&path, "rename"))?;
        sync_dir(&self.dir)?;
        self.prune()?;
        Ok(path)
    }

    fn start_file(
        &self,
        meta: &SnapshotMeta,
        path: PathBuf,
        prune: bool,
    ) -> Result<SnapWriter, SnapError> {
        let temp = PathBuf::from(format!("{}.tmp", path.display()));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_error(&temp, "create"))?;
        let mut writer = SnapWriter {
            snaps: self.clone(),
            meta: meta.clone(),
            temp,
            path,
            file: None,
            payload_crc: crc32fast::Hasher::new(),
            payload_bytes: 0,
            prune,
        };
        file.write_all(&encode_header(meta, 0)).map_err(io_error(&writer.temp, "write"))?;
        writer.file = Some(file);
        Ok(writer)
    }
}

impl SnapWriter {
    /// Appends the next payload bytes.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SnapError> {
        let file = self.file.as_mut().expect("a writer is used until it finishes");
        file.write_all(chunk).map_err(io_error(&self.temp, "write"))?;
        self.payload_crc.update(chunk);
        self.payload_bytes += chunk.len() as u64;
        Ok(())
    }

    /// Payload bytes written so far.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Completes the file, makes it durable under its final name, drops
    /// all but the newest retained files and returns its path.
    pub fn finish(mut self) -> Result<PathBuf, SnapError> {
        let mut file = self.file.take().expect("a writer finishes once");
        let header = encode_header(&self.meta, self.payload_bytes);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.combine(&self.payload_crc);
        let crc = crc.finalize().to_le_bytes();
        let length = &header[PAYLOAD_LEN_OFFSET..PAYLOAD_LEN_OFFSET + 8];
        let patched = file
            .seek(SeekFrom::Start(PAYLOAD_LEN_OFFSET as u64))
            .and_then(|_| file.write_all(length))
            .and_then(|_| file.seek(SeekFrom::End(0)))
            .and_then(|_| file.write_all(&crc[..CRC_BYTES]));
        if let Err(e) = patched {
            self.file = Some(file);
            return Err(io_error(&self.temp, "write")(e));
        }
        if let Err(source) = file.sync_all() {
            self.file = Some(file);
            return Err(SnapError::SyncFailed { file: self.temp.clone(), source });
        }
        drop(file);
        fs::rename(&self.temp, &self.path).map_err(io_error(&self.path, "rename"))?;
        sync_dir(&self.snaps.dir)?;
        if self.prune {
            self.snaps.prune()?;
        }
        Ok(self.path.clone())
    }

    /// Abandons the file: the temp file is deleted, the directory is as
    /// it was.
    pub fn abort(mut self) -> Result<(), SnapError> {
        self.file = None;
        fs::remove_file(&self.temp).map_err(io_error(&self.temp, "remove"))
    }
}

impl Drop for SnapWriter {
    fn drop(&mut self) {
        // Unfinished and not aborted (an error on the way): the temp file
        // is useless. A failure to delete it is harmless, `SnapDir::open`
        // deletes it on the next start.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfState, Snapshot};

    #[test]
    fn a_received_file_counts_only_once_adopted_and_is_gone_after_a_restart() {
        let data_dir = std::env::temp_dir().join(format!("ember-snap-recv-{}", std::process::id()));
        let _ = fs::remove_dir_all(&data_dir);
        let snaps = SnapDir::open(&data_dir, 1).unwrap();
        let conf_state = ConfState { voters: vec![1], ..ConfState::default() };
        let own = SnapshotMeta { index: 5, term: 1, conf_state: conf_state.clone() };
        snaps.save(&Snapshot { meta: own.clone(), data: b"own".to_vec() }).unwrap();
        let received = SnapshotMeta { index: 9, term: 2, conf_state };
        let mut file = snaps.receive(&received).unwrap();
        file.write(b"from the leader").unwrap();
        file.finish().unwrap();
        // Not a snapshot of this member's yet: retention keeps the own one.
        assert_eq!(snaps.list().unwrap().iter().map(|f| f.0).collect::<Vec<_>>(), [5]);
        assert!(snaps.load(5, 1).is_ok());
        snaps.adopt(&received).unwrap();
        assert_eq!(snaps.list().unwrap().iter().map(|f| f.0).collect::<Vec<_>>(), [9]);
        assert_eq!(snaps.load(9, 2).unwrap().data, b"from the leader");
        // One never adopted is deleted when the directory is opened again.
        let later = SnapshotMeta { index: 12, ..received };
        let mut file = snaps.receive(&later).unwrap();
        file.write(b"x").unwrap();
        file.finish().unwrap();
        let snaps = SnapDir::open(&data_dir, 1).unwrap();
        assert!(matches!(snaps.adopt(&later), Err(SnapError::Missing { .. })));
        let _ = fs::remove_dir_all(&data_dir);
    }
}
