//! Reading a snapshot's payload a chunk at a time, for restoring a store
//! or streaming it to a follower without holding the file in memory.
//!
//! `SnapDir::open_payload` reads and checks the header and meta, checks the
//! lengths against the file's size, and reads the stored CRC; the reader
//! then hands out the payload and keeps a running CRC of everything before
//! the stored one. Reaching the end with a mismatch is an `InvalidData`
//! error from `read`, so a consumer that reads to the end (a restore, the
//! transport's stream, which aborts on a failed read) never takes a damaged
//! payload for a good one.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{
    CRC_BYTES, HEADER_BYTES, META_MAX_BYTES, SNAP_FORMAT_VERSION, SNAP_MAGIC, SnapDir, SnapError,
    io_error, snap_file_name,
};
use crate::raft::SnapshotMeta;

/// Bytes asked of the file per read: the reader's only buffer.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// The payload of one snapshot file, checked as it is read.
pub struct PayloadReader {
    path: PathBuf,
    meta: SnapshotMeta,
    file: BufReader<File>,
    /// Payload bytes not yet read.
    remaining_bytes: u64,
    crc: crc32fast::Hasher,
    stored_crc: u32,
}

impl SnapDir {
    /// The payload of the snapshot at exactly `index` and `term`.
    pub fn open_payload(&self, index: u64, term: u64) -> Result<PayloadReader, SnapError> {
        let path = self.dir.join(snap_file_name(index, term));
        if !path.exists() {
            return Err(SnapError::Missing { index, term });
        }
        let reader = PayloadReader::open(&path)?;
        if (reader.meta.index, reader.meta.term) != (index, term) {
            let why = "file name disagrees with the snapshot's index and term";
            return Err(SnapError::Corrupt { file: path, offset: 0, why });
        }
        Ok(reader)
    }
}

impl PayloadReader {
    fn open(path: &Path) -> Result<PayloadReader, SnapError> {
        let corrupt = |offset, why| SnapError::Corrupt { file: path.to_path_buf(), offset, why };
        let mut file = File::open(path).map_err(io_error(path, "open"))?;
        let file_bytes = file.metadata().map_err(io_error(path, "stat"))?.len();
        let mut header = [0u8; HEADER_BYTES];
        if file_bytes < (HEADER_BYTES + CRC_BYTES) as u64 {
            return Err(corrupt(0, "file shorter than a snapshot header"));
        }
        file.read_exact(&mut header).map_err(io_error(path, "read"))?;
        if header[0..8] != SNAP_MAGIC {
            return Err(corrupt(0, "bad magic"));
        }
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        if word(8) != SNAP_FORMAT_VERSION {
            return Err(corrupt(8, "unsupported format version"));
        }
        let meta_bytes = word(12) as usize;
        let payload_bytes = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let expected = (HEADER_BYTES + CRC_BYTES + meta_bytes) as u64;
        if meta_bytes > META_MAX_BYTES || expected.checked_add(payload_bytes) != Some(file_bytes) {
            return Err(corrupt(12, "lengths disagree with the file size"));
        }
        let mut meta = vec![0u8; meta_bytes];
        file.read_exact(&mut meta).map_err(io_error(path, "read"))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(&meta);
        let meta: SnapshotMeta = postcard::from_bytes(&meta)
            .map_err(|_| corrupt(HEADER_BYTES as u64, "meta does not decode"))?;
        let stored_crc = read_stored_crc(&mut file, path, file_bytes)?;
        Ok(PayloadReader {
            path: path.to_path_buf(),
            meta,
            file: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            remaining_bytes: payload_bytes,
            crc,
            stored_crc,
        })
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Payload bytes not yet read.
    pub fn remaining_bytes(&self) -> u64 {
        self.remaining_bytes
    }
}

/// The file's last four bytes; the file is left where the payload starts.
fn read_stored_crc(file: &mut File, path: &Path, file_bytes: u64) -> Result<u32, SnapError> {
    let payload_at = file.stream_position().map_err(io_error(path, "seek"))?;
    let mut stored = [0u8; CRC_BYTES];
    file.seek(SeekFrom::Start(file_bytes - CRC_BYTES as u64))
        .and_then(|_| file.read_exact(&mut stored))
        .and_then(|_| file.seek(SeekFrom::Start(payload_at)))
        .map_err(io_error(path, "read"))?;
    Ok(u32::from_le_bytes(stored))
}

impl Read for PayloadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining_bytes == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining_bytes).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "snapshot file is truncated"));
        }
        self.crc.update(&buf[..n]);
        self.remaining_bytes -= n as u64;
        if self.remaining_bytes == 0 && self.crc.clone().finalize() != self.stored_crc {
            let message = format!("{}: crc mismatch", self.path.display());
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfState, Snapshot};

    fn saved(dir: &Path, data: Vec<u8>) -> (SnapDir, Snapshot) {
        let snaps = SnapDir::open(dir, 3).unwrap();
        let conf_state = ConfState { voters: vec![1], ..ConfState::default() };
        let snapshot = Snapshot { meta: SnapshotMeta { index: 9, term: 2, conf_state }, data };
        snaps.save(&snapshot).unwrap();
        (snaps, snapshot)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ember-snap-read-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_payload_reads_back_in_small_pieces() {
        let dir = scratch("pieces");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let (snaps, snapshot) = saved(&dir, data.clone());
        let mut reader = snaps.open_payload(9, 2).unwrap();
        assert_eq!(reader.meta(), &snapshot.meta);
        let mut read = Vec::new();
        let mut piece = [0u8; 1000];
        loop {
            let n = reader.read(&mut piece).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&piece[..n]);
        }
        assert_eq!(read, data);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flipped_payload_bit_fails_the_last_read() {
        let dir = scratch("flip");
        let (snaps, _) = saved(&dir, vec![5; 10_000]);
        let path = dir.join("snap").join(snap_file_name(9, 2));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let mut sink = Vec::new();
        let error = snaps.open_payload(9, 2).unwrap().read_to_end(&mut sink).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_truncated_file_is_refused_at_open() {
        let dir = scratch("short");
        let (snaps, _) = saved(&dir, vec![5; 10_000]);
        let path = dir.join("snap").join(snap_file_name(9, 2));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(snaps.open_payload(9, 2), Err(SnapError::Corrupt { .. })));
        assert!(matches!(snaps.open_payload(10, 2), Err(SnapError::Missing { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
