//! Helpers shared by the WAL and snapshot tests: scratch directories on a real
//! file system, entries with recognisable payloads, reading the whole log.

#![allow(dead_code)] // each test file uses a different subset
#![allow(unsafe_code)] // statfs, to refuse tmpfs

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ember::raft::{Entry, EntryKind};
use ember::wal::{Wal, WalConfig};

/// `f_type` of tmpfs, from linux/magic.h.
const TMPFS_MAGIC: i64 = 0x0102_1994;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// Whether `path` lies on tmpfs, where fsync proves nothing.
pub fn is_tmpfs(path: &Path) -> bool {
    let text = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `text` is a NUL-terminated path and `stats` a valid out-buffer.
    let result = unsafe { libc::statfs(text.as_ptr(), &mut stats) };
    assert_eq!(result, 0, "statfs {}", path.display());
    stats.f_type as i64 == TMPFS_MAGIC
}

/// A scratch directory, removed when dropped.
pub struct TestDir(PathBuf);

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty directory on a real file system, or `None` (after saying
/// so loudly) when the temp directory is tmpfs.
pub fn durable_dir(name: &str) -> Option<TestDir> {
    let base =
        std::env::var_os("EMBER_TEST_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let serial = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("ember-{name}-{}-{serial}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if is_tmpfs(&dir) {
        eprintln!(
            "SKIPPED {name}: {} is on tmpfs, where durability cannot be tested; set EMBER_TEST_DIR to a disk",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        return None;
    }
    Some(TestDir(dir))
}

/// The smallest segments, so a few dozen entries span several of them.
pub fn small_config() -> WalConfig {
    WalConfig { segment_size_bytes: 64 << 10, catch_up_margin_entries: 0, spare_segments_max: 2 }
}

/// An entry whose payload tells its index and term apart from any other.
pub fn entry(index: u64, term: u64, len: usize) -> Entry {
    let data = (0..len).map(|i| (index as usize * 31 + term as usize * 7 + i) as u8).collect();
    Entry { term, index, kind: EntryKind::Normal, data }
}

/// Every entry the WAL serves, first to last.
pub fn read_log(wal: &Wal) -> Vec<Entry> {
    (wal.first_index()..=wal.last_index()).map(|i| wal.entry(i).unwrap()).collect()
}

/// Paths of the segment files, in sequence order.
pub fn segment_paths(data_dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    paths.sort();
    paths
}

pub fn flip_bit(path: &Path, offset: usize, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}
