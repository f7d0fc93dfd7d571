//! Segment files: creation with full preallocation, memory maps, durable
//! syncs, directory syncs.
//!
//! A segment is created under a temporary name, allocated to its full size
//! with `posix_fallocate` (so a full disk is an error here, not a SIGBUS on a
//! later store into the map), given its header, synced, renamed into place and
//! the directory synced. Only then is it mapped.
//!
//! A released segment may instead be kept as a spare (`*.spare`) and
//! recycled: given the next segment's header, synced, renamed into place and
//! the directory synced, the same steps without the allocation. Its blocks
//! were written in its earlier life, so later syncs into it write data only:
//! a first write into an allocated but never written block also changes the
//! file system's extent map, which costs a journal commit per sync.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use super::error::WalError;
use super::record::{SegmentHeader, encode_segment_header};

/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created; left over only by a crash, and removed
/// on open.
pub const TEMP_SUFFIX: &str = ".wal.tmp";
/// Suffix of a released segment kept for recycling. Not a segment: recovery
/// ignores its contents, and its name keeps the stem it had as a segment, so
/// names stay unique.
pub const SPARE_SUFFIX: &str = ".spare";

/// Steps of the writer that a crash may fall between. Tests stop the world at
/// each one and copy the directory as a power cut would leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A temp segment file is allocated and holds its header, not yet synced.
    SegmentAllocated,
    /// The temp segment is synced, not yet renamed.
    SegmentSynced,
    /// The segment has its final name; the directory is not yet synced.
    SegmentRenamed,
    /// The directory entry of a created, renamed or removed file is durable.
    DirectorySynced,
    /// Records were stored into the map; nothing of them is synced yet.
    RecordsWritten,
    /// A sync completed: everything written so far is durable.
    Synced,
    /// A segment file was unlinked; the directory is not yet synced.
    SegmentRemoved,
    /// A released segment was renamed to a spare; the directory is not yet
    /// synced.
    SegmentSpared,
}

/// The spare name of the segment at `path`: its stem with `SPARE_SUFFIX`.
pub fn spare_path(path: &Path) -> PathBuf {
    path.with_extension(&SPARE_SUFFIX[1..])
}

/// `{seq:016x}-{first_index:016x}.wal`: sorting names sorts by sequence.
pub fn segment_file_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}{SEGMENT_SUFFIX}")
}

/// `(seq, first_index)` from a segment file name, `None` if it is not one.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (seq, first_index) = stem.split_once('-')?;
    if seq.len() != 16 || first_index.len() != 16 {
        return None;
    }
    let seq = u64::from_str_radix(seq, 16).ok()?;
    let first_index = u64::from_str_radix(first_index, 16).ok()?;
    Some((seq, first_index))
}

/// Largest page size batches are aligned to; a larger page (rare) is treated
/// as this size, which costs only rewrites, never correctness.
pub const PAGE_BYTES_MAX: usize = 64 << 10;

/// The memory page size, the unit in which the kernel dirties and writes
/// mapped file pages back: 4 KiB on most boards, 16 KiB on some arm64 kernels.
pub fn page_bytes() -> usize {
    // SAFETY: sysconf reads a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).clamp(4096, PAGE_BYTES_MAX)
}

/// An open, mapped segment.
pub struct Segment {
    pub seq: u64,
    pub first_index: u64,
    pub path: PathBuf,
    file: File,
    /// Invariant: maps the whole file, whose length never changes while it is
    /// open (segments are preallocated and never resized).
    map: MmapMut,
}

fn io_error(path: &Path, op: &'static str, source: io::Error) -> WalError {
    WalError::Io { file: path.to_path_buf(), op, source }
}

/// Makes the directory entries of `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let handle = File::open(dir).map_err(|e| io_error(dir, "open directory", e))?;
    handle.sync_all().map_err(|source| WalError::SyncFailed { file: dir.to_path_buf(), source })?;
    #[cfg(feature = "fault-injection")]
    crate::sync_log::note_dir_synced(dir);
    Ok(())
}

/// Allocates `size_bytes` of real blocks for `file`.
fn allocate(file: &File, path: &Path, size_bytes: u64) -> Result<(), WalError> {
    let length = libc::off_t::try_from(size_bytes)
        .map_err(|_| WalError::Config("segment size does not fit in off_t"))?;
    // SAFETY: the descriptor is valid for the lifetime of `file`; the call
    // only allocates blocks and touches no memory of ours.
    let result = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, length) };
    match result {
        0 => Ok(()),
        libc::ENOSPC => Err(WalError::NoSpace { file: path.to_path_buf(), size_bytes }),
        code => Err(io_error(path, "allocate", io::Error::from_raw_os_error(code))),
    }
}

impl Segment {
    /// Creates segment `header.seq` in `dir`, crash-safely, and maps it.
    pub fn create(
        dir: &Path,
        header: &SegmentHeader,
        step: &mut dyn FnMut(Step, &Path, Option<&Path>),
    ) -> Result<Segment, WalError> {
        let name = segment_file_name(header.seq, header.first_index);
        let temp = dir.join(format!("{}{TEMP_SUFFIX}", &name[..name.len() - SEGMENT_SUFFIX.len()]));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| io_error(&temp, "create", e))?;
        if let Err(error) = allocate(&file, &temp, header.segment_size_bytes) {
            drop(file);
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        Segment::install(dir, file, &temp, header, step)
    }

    /// Turns the spare at `spare` into segment `header.seq` in `dir`,
    /// crash-safely, and maps it. The caller checked that the spare has the
    /// segment's length, so every block behind the map exists.
    pub fn recycle(
        dir: &Path,
        spare: &Path,
        header: &SegmentHeader,
        step: &mut dyn FnMut(Step, &Path, Option<&Path>),
    ) -> Result<Segment, WalError> {
        assert!(header.is_recycled(), "a recycled segment names its previous sequence");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(spare)
            .map_err(|e| io_error(spare, "open spare", e))?;
        Segment::install(dir, file, spare, header, step)
    }

    /// Writes the header into `file` (named `from`), syncs it, renames it to
    /// its segment name and syncs the directory: until that rename is
    /// durable, a crash leaves a temp file or a spare, never a segment whose
    /// header is not on disk.
    fn install(
        dir: &Path,
        file: File,
        from: &Path,
        header: &SegmentHeader,
        step: &mut dyn FnMut(Step, &Path, Option<&Path>),
    ) -> Result<Segment, WalError> {
        let path = dir.join(segment_file_name(header.seq, header.first_index));
        file.write_all_at(&encode_segment_header(header), 0)
            .map_err(|e| io_error(from, "write header", e))?;
        step(Step::SegmentAllocated, from, None);
        file.sync_data()
            .map_err(|source| WalError::SyncFailed { file: from.to_path_buf(), source })?;
        step(Step::SegmentSynced, from, None);
        fs::rename(from, &path).map_err(|e| io_error(&path, "rename", e))?;
        step(Step::SegmentRenamed, &path, Some(from));
        sync_dir(dir)?;
        step(Step::DirectorySynced, &path, None);
        let segment = Segment::map(file, path, header.seq, header.first_index)?;
        segment.prepare_for_appends(0)?;
        Ok(segment)
    }

    /// Opens and maps an existing segment for reading and writing.
    pub fn open(path: PathBuf, seq: u64, first_index: u64) -> Result<Segment, WalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, "open", e))?;
        Segment::map(file, path, seq, first_index)
    }

    fn map(file: File, path: PathBuf, seq: u64, first_index: u64) -> Result<Segment, WalError> {
        // SAFETY: the file is ours, fully allocated, and no other process is
        // meant to resize it while it is mapped (the data directory belongs to
        // one node). A concurrent truncation by someone else could raise
        // SIGBUS; that is outside what a node can defend against.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| io_error(&path, "mmap", e))?;
        Ok(Segment { seq, first_index, path, file, map })
    }

    /// Readies the segment for appends from `from_offset` on. Without
    /// readahead the kernel caches single pages rather than large folios;
    /// a large folio is dirtied and written back whole, so a sync would
    /// rewrite pages of earlier, already durable batches. Pages recovery read
    /// ahead past the end are dropped for the same reason. Segments that are
    /// only read keep readahead, which makes recovery fast.
    pub fn prepare_for_appends(&self, from_offset: usize) -> Result<(), WalError> {
        let from = from_offset.next_multiple_of(page_bytes()).min(self.map.len());
        let length = libc::off_t::try_from(self.map.len() - from).unwrap_or(0);
        // SAFETY: advice on our own descriptor; it touches no memory of ours.
        let result = unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                from as libc::off_t,
                length,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        if result != 0 {
            let source = io::Error::from_raw_os_error(result);
            return Err(io_error(&self.path, "fadvise", source));
        }
        self.map.advise(memmap2::Advice::Random).map_err(|e| io_error(&self.path, "madvise", e))
    }

    /// Unmaps the resident pages of a segment no longer written to, so the
    /// process's RSS holds the tail segment only, not the whole log: the
    /// pages stay in the page cache (they are clean once synced) and a later
    /// read of an entry faults them back in. Best effort: a refusal only
    /// leaves the memory counted.
    pub fn drop_resident_pages(&self) {
        // SAFETY: the map is a shared mapping of a file, not anonymous
        // memory: MADV_DONTNEED drops page table entries only, and the next
        // access maps the same file bytes again, so no view of the contents
        // changes under a borrow.
        let result = unsafe { self.map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        if let Err(e) = result {
            log::debug!("wal: madvise(DONTNEED) on {}: {e}", self.path.display());
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    pub fn len_bytes(&self) -> usize {
        self.map.len()
    }

    /// Makes `[start, end)` durable: one msync, which Linux turns into an
    /// fdatasync of that range. A failure is `SyncFailed`, which is fatal.
    pub fn sync_range(&self, start: usize, end: usize) -> Result<(), WalError> {
        if end <= start {
            return Ok(());
        }
        self.map
            .flush_range(start, end - start)
            .map_err(|source| WalError::SyncFailed { file: self.path.clone(), source })?;
        #[cfg(feature = "fault-injection")]
        crate::sync_log::note_synced(&self.path, end);
        Ok(())
    }
}
