//! Backup files: a member's snapshot payload as one file an operator keeps,
//! with the cluster it came from and a SHA-256 of all of it.
//!
//! ```text
//!  0         8         12           16
//!  | magic   | version | header_len | header (postcard BackupHeader)
//!  | zero padding | payload (header.payload_bytes) | sha256 of all bytes before |
//! ```
//!
//! `header_len` counts the header and the zeros after it, which make head
//! and payload end on a multiple of 512 bytes (see `ALIGN_BYTES`).
//!
//! Integers little-endian; the payload is the snapshot payload the member's
//! own snapshot file holds (opaque here: `state::image` describes it), and
//! the hash covers every byte before it. A member produces the bytes in
//! order while it streams them (`BackupHead` first, the payload as it reads
//! it, the digest last), so neither side holds the file in memory.
//!
//! Reading one back (`BackupFile`) checks everything before any byte of the
//! payload is trusted: the magic (a file of another program), the version,
//! the lengths against the file's size (a truncated file), then the hash
//! over the whole file (a flipped bit), and only then hands out the payload.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// First bytes of every backup file.
pub const BACKUP_MAGIC: [u8; 8] = *b"EMBRBKUP";
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// Magic, version, header length.
const PREAMBLE_BYTES: usize = 16;
/// SHA-256.
pub const BACKUP_HASH_BYTES: usize = 32;
/// Head and payload end on a multiple of this, so the whole file is 32
/// bytes past one, as etcd's (a bbolt file of 512-byte multiples, then its
/// SHA-256): etcdctl's `snapshot save` takes a stream of another length
/// for one without a hash, and refuses it.
const ALIGN_BYTES: u64 = 512;
/// A header is five integers and at most `ALIGN_BYTES` of padding; more
/// than this is damage.
const HEADER_MAX_BYTES: usize = 1 << 10;
/// Bytes read per step while hashing or handing out the payload.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// What the file says about where its payload came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub cluster_id: u64,
    /// The member that streamed it.
    pub member_id: u64,
    /// The Raft index and term of the snapshot the payload is.
    pub index: u64,
    pub term: u64,
    pub payload_bytes: u64,
}

/// Why a file is not a backup this build can use. Each names the problem
/// so an operator can tell a wrong file from a damaged one.
#[derive(Debug)]
pub enum BackupError {
    Io {
        file: PathBuf,
        source: io::Error,
    },
    /// The first bytes are not ours: a file of another program.
    NotABackup {
        file: PathBuf,
    },
    UnsupportedVersion {
        file: PathBuf,
        version: u32,
    },
    /// The file is shorter (or longer) than its header says.
    Truncated {
        file: PathBuf,
        file_bytes: u64,
        expected_bytes: u64,
    },
    /// The stored hash disagrees with the content: a damaged file.
    HashMismatch {
        file: PathBuf,
    },
    Malformed {
        file: PathBuf,
        why: &'static str,
    },
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Io { file, source } => write!(f, "read {}: {source}", file.display()),
            BackupError::NotABackup { file } => {
                write!(f, "{}: not an Ember snapshot file (unknown magic)", file.display())
            }
            BackupError::UnsupportedVersion { file, version } => {
                write!(f, "{}: snapshot file version {version} is not supported", file.display())
            }
            BackupError::Truncated { file, file_bytes, expected_bytes } => write!(
                f,
                "{}: the file is truncated or padded: {file_bytes} bytes where its header \
                 says {expected_bytes}",
                file.display()
            ),
            BackupError::HashMismatch { file } => write!(
                f,
                "{}: sha256 mismatch: the file is damaged (a changed or flipped byte)",
                file.display()
            ),
            BackupError::Malformed { file, why } => write!(f, "{}: {why}", file.display()),
        }
    }
}

impl std::error::Error for BackupError {}

/// The bytes before the payload: the header, then zeros up to where the
/// payload ends on a multiple of `ALIGN_BYTES`.
pub fn encode_head(header: &BackupHeader) -> Vec<u8> {
    let mut body = postcard::to_stdvec(header).expect("a backup header always encodes");
    let unpadded = (PREAMBLE_BYTES + body.len()) as u64 + header.payload_bytes;
    let pad = (ALIGN_BYTES - unpadded % ALIGN_BYTES) % ALIGN_BYTES;
    body.resize(body.len() + pad as usize, 0);
    let mut out = Vec::with_capacity(PREAMBLE_BYTES + body.len());
    out.extend_from_slice(&BACKUP_MAGIC);
    out.extend_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The whole file's length for a head of `head_bytes`.
pub fn file_bytes(head_bytes: usize, header: &BackupHeader) -> u64 {
    (head_bytes + BACKUP_HASH_BYTES) as u64 + header.payload_bytes
}

/// A backup file whose hash was checked; hands out its payload.
#[derive(Debug)]
pub struct BackupFile {
    path: PathBuf,
    header: BackupHeader,
    /// Where the payload starts.
    payload_at: u64,
    file_bytes: u64,
    sha256_hex: String,
}

impl BackupFile {
    /// Opens `path` and checks it whole (magic, version, lengths, hash);
    /// reads the file once, a buffer at a time.
    pub fn open(path: &Path) -> Result<BackupFile, BackupError> {
        let io = |source| BackupError::Io { file: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io)?;
        let file_bytes = file.metadata().map_err(io)?.len();
        let (header, head_bytes) = read_head(&mut file, path, file_bytes)?;
        let expected_bytes = file_bytes_checked(head_bytes, &header)
            .ok_or(BackupError::Malformed { file: path.to_path_buf(), why: "lengths overflow" })?;
        if expected_bytes != file_bytes {
            return Err(BackupError::Truncated {
                file: path.to_path_buf(),
                file_bytes,
                expected_bytes,
            });
        }
        let digest = check_hash(&mut file, path, file_bytes)?;
        Ok(BackupFile {
            path: path.to_path_buf(),
            header,
            payload_at: head_bytes as u64,
            file_bytes,
            sha256_hex: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The SHA-256 the file carries (and matched), in hex.
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }

    /// The payload, read a buffer at a time. The hash was checked when the
    /// file was opened; a file changed since then shows as a short read.
    pub fn payload(&self) -> Result<impl Read, BackupError> {
        let io = |source| BackupError::Io { file: self.path.clone(), source };
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.payload_at)).map_err(io)?;
        Ok(BufReader::with_capacity(READ_BUFFER_BYTES, file).take(self.header.payload_bytes))
    }
}

fn file_bytes_checked(head_bytes: usize, header: &BackupHeader) -> Option<u64> {
    ((head_bytes + BACKUP_HASH_BYTES) as u64).checked_add(header.payload_bytes)
}

/// The header and the length of everything before the payload.
fn read_head(
    file: &mut File,
    path: &Path,
    file_bytes: u64,
) -> Result<(BackupHeader, usize), BackupError> {
    let io = |source| BackupError::Io { file: path.to_path_buf(), source };
    let mut preamble = [0u8; PREAMBLE_BYTES];
    let have = read_up_to(file, &mut preamble).map_err(io)?;
    if have < BACKUP_MAGIC.len() || preamble[..8] != BACKUP_MAGIC {
        return Err(BackupError::NotABackup { file: path.to_path_buf() });
    }
    if have < PREAMBLE_BYTES {
        let expected_bytes = (PREAMBLE_BYTES + BACKUP_HASH_BYTES) as u64;
        return Err(BackupError::Truncated {
            file: path.to_path_buf(),
            file_bytes,
            expected_bytes,
        });
    }
    let word = |at: usize| u32::from_le_bytes(preamble[at..at + 4].try_into().expect("4 bytes"));
    if word(8) != BACKUP_FORMAT_VERSION {
        return Err(BackupError::UnsupportedVersion { file: path.to_path_buf(), version: word(8) });
    }
    let header_bytes = word(12) as usize;
    let malformed = |why| BackupError::Malformed { file: path.to_path_buf(), why };
    if header_bytes > HEADER_MAX_BYTES {
        return Err(malformed("the header length is out of bounds"));
    }
    let mut body = vec![0u8; header_bytes];
    if read_up_to(file, &mut body).map_err(io)? < header_bytes {
        let expected_bytes = (PREAMBLE_BYTES + header_bytes + BACKUP_HASH_BYTES) as u64;
        return Err(BackupError::Truncated {
            file: path.to_path_buf(),
            file_bytes,
            expected_bytes,
        });
    }
    let header =
        postcard::from_bytes(&body).map_err(|_| malformed("the header does not decode"))?;
    Ok((header, PREAMBLE_BYTES + header_bytes))
}

/// Fills `buf` as far as the file allows; the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Hashes everything before the stored digest and compares the two.
fn check_hash(file: &mut File, path: &Path, file_bytes: u64) -> Result<Vec<u8>, BackupError> {
    let io = |source| BackupError::Io { file: path.to_path_buf(), source };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = file_bytes - BACKUP_HASH_BYTES as u64;
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    while left > 0 {
        let want = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        file.read_exact(&mut buffer[..want]).map_err(io)?;
        context.update(&buffer[..want]);
        left -= want as u64;
    }
    let mut stored = [0u8; BACKUP_HASH_BYTES];
    file.read_exact(&mut stored).map_err(io)?;
    let digest = context.finish();
    if digest.as_ref() != stored {
        return Err(BackupError::HashMismatch { file: path.to_path_buf() });
    }
    Ok(stored.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_file(dir: &Path, payload: &[u8]) -> PathBuf {
        let header = BackupHeader {
            cluster_id: 1,
            member_id: 2,
            index: 9,
            term: 3,
            payload_bytes: payload.len() as u64,
        };
        let mut bytes = encode_head(&header);
        bytes.extend_from_slice(payload);
        assert_eq!(bytes.len() % ALIGN_BYTES as usize, 0);
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        bytes.extend_from_slice(digest.as_ref());
        assert_eq!(bytes.len() as u64, file_bytes(encode_head(&header).len(), &header));
        let path = dir.join("backup.db");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-backup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_whole_file_opens_and_hands_out_its_payload() {
        let dir = scratch("whole");
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 13) as u8).collect();
        let backup = BackupFile::open(&sample_file(&dir, &payload)).unwrap();
        assert_eq!(backup.header().index, 9);
        let mut read = Vec::new();
        backup.payload().unwrap().read_to_end(&mut read).unwrap();
        assert_eq!(read, payload);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_truncation_every_flipped_byte_and_a_foreign_file_are_refused() {
        let dir = scratch("damage");
        let path = sample_file(&dir, b"payload of a few bytes");
        let bytes = std::fs::read(&path).unwrap();
        for len in 0..bytes.len() {
            std::fs::write(&path, &bytes[..len]).unwrap();
            assert!(BackupFile::open(&path).is_err(), "a prefix of {len} bytes was accepted");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(BackupFile::open(&path).is_err(), "a flip at {at} was accepted");
        }
        std::fs::write(&path, b"SQLite format 3\0 and the rest of a database").unwrap();
        assert!(matches!(BackupFile::open(&path), Err(BackupError::NotABackup { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
