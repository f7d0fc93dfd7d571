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

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::{
    CRC_BYTES, PAYLOAD_LEN_OFFSET, SnapDir, SnapError, encode_header, io_error, snap_file_name,
    sync_dir,
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
}

impl SnapDir {
    /// Starts a snapshot file for `meta`: the payload follows through
    /// [`SnapWriter::write`]. A temp file of the same name a crash left
    /// behind is replaced.
    pub fn create(&self, meta: &SnapshotMeta) -> Result<SnapWriter, SnapError> {
        let name = snap_file_name(meta.index, meta.term);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}.tmp"));
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
        self.snaps.prune()?;
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
