//! WAL throughput and write volume against the disk's raw fdatasync rate.
//!
//! `cargo bench --bench wal` prints `name=value` lines:
//! - `fdatasync_per_s`: a plain loop of one 300-byte pwrite appended to a file
//!   and one fdatasync, on the same file system: the ceiling for batch-of-1.
//! - `fdatasync_per_s_fallocated`, `fdatasync_per_s_zeroed`: the same write
//!   one page further on each time inside a preallocated file, whose blocks
//!   came from `posix_fallocate` (unwritten extents, what segments use) or
//!   from writing zeros once. The gap between them is what converting an
//!   unwritten extent costs each sync (a journal commit on ext4).
//! - `wal_records_per_s_batchN`, `wal_bytes_written_per_record_batchN` for
//!   batches of 1 and 64 entries of 300 bytes per sync, each sync also
//!   carrying a changed hard state as a Raft Ready does. Written bytes come
//!   from `/proc/self/io` `write_bytes` (what this process sent to the block
//!   layer; file-system journal blocks are not counted there).
//!
//! `EMBER_BENCH_DIR` picks the directory (default: the temp directory; tmpfs
//! is refused since it would measure memory), `EMBER_BENCH_SECONDS` the time
//! per round pair (default 3; six rounds).

#![allow(unsafe_code)] // posix_fallocate, as the segments themselves use it

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ember::raft::{Entry, EntryKind, HardState};
use ember::wal::{Wal, WalConfig};

const RECORD_PAYLOAD_BYTES: usize = 300;

fn write_bytes() -> u64 {
    let text = fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    text.lines()
        .find_map(|line| line.strip_prefix("write_bytes: "))
        .and_then(|value| value.trim().parse().ok())
        .expect("write_bytes line")
}

fn bench_dir() -> PathBuf {
    let base =
        std::env::var_os("EMBER_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("ember-bench-wal-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

fn is_tmpfs(path: &Path) -> bool {
    let output = std::process::Command::new("stat").args(["-f", "-c", "%T"]).arg(path).output();
    output.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "tmpfs")
}

fn seconds() -> Duration {
    let secs =
        std::env::var("EMBER_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Counts operations and the time and bytes they took, over several rounds.
#[derive(Default)]
struct Tally {
    operations: u64,
    records: u64,
    seconds: f64,
    written_bytes: u64,
}

impl Tally {
    fn per_s(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    fn bytes_per_record(&self) -> f64 {
        self.written_bytes as f64 / self.records as f64
    }
}

/// Runs `operation` (which returns the records it wrote) for `limit`.
fn measure(tally: &mut Tally, limit: Duration, mut operation: impl FnMut() -> u64) {
    let (before, start) = (write_bytes(), Instant::now());
    while start.elapsed() < limit {
        tally.records += operation();
        tally.operations += 1;
    }
    tally.seconds += start.elapsed().as_secs_f64();
    tally.written_bytes += write_bytes() - before;
}

/// `path` created or truncated, open for reading and writing.
fn create_empty(path: &Path) -> std::fs::File {
    OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path).unwrap()
}

/// A plain loop: one 300-byte pwrite appended to a file, one fdatasync.
struct RawLoop {
    file: std::fs::File,
    offset_bytes: u64,
    record: Vec<u8>,
}

impl RawLoop {
    fn new(path: &Path) -> RawLoop {
        let file = create_empty(path);
        RawLoop { file, offset_bytes: 0, record: vec![0x5a; RECORD_PAYLOAD_BYTES] }
    }

    fn step(&mut self) -> u64 {
        self.file.write_all_at(&self.record, self.offset_bytes).unwrap();
        self.file.sync_data().unwrap();
        self.offset_bytes += RECORD_PAYLOAD_BYTES as u64;
        1
    }
}

/// Size of the preallocated files of the in-place loops: far more than a
/// round writes at one page per sync, so neither ever grows its file.
const PREALLOCATED_BYTES: u64 = 256 << 20;
/// The WAL pads every sync to a page, so each sync starts a fresh page.
const SYNC_STRIDE_BYTES: u64 = 4096;

/// How an in-place loop's file got its blocks.
#[derive(Clone, Copy)]
enum Prealloc {
    /// `posix_fallocate`: on ext4 and xfs the blocks are reserved as
    /// unwritten extents; the first write to each one changes the extent
    /// tree, so the fdatasync after it must commit file-system metadata.
    Fallocate,
    /// Zeros written and synced once: later syncs find written extents and
    /// flush only data, at the cost of writing every byte twice.
    Zeroes,
}

/// One 300-byte pwrite into a preallocated file, one page further on each
/// time, and one fdatasync: the WAL's pattern with a batch of one.
struct InPlaceLoop {
    file: std::fs::File,
    offset_bytes: u64,
    record: Vec<u8>,
}

impl InPlaceLoop {
    fn new(path: &Path, how: Prealloc) -> InPlaceLoop {
        let file = create_empty(path);
        match how {
            Prealloc::Fallocate => {
                let length = libc::off_t::try_from(PREALLOCATED_BYTES).unwrap();
                // SAFETY: a valid descriptor; the call touches no memory of ours.
                let result = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, length) };
                assert_eq!(result, 0, "posix_fallocate");
            }
            Prealloc::Zeroes => {
                let zeros = vec![0u8; 1 << 20];
                for at in (0..PREALLOCATED_BYTES).step_by(zeros.len()) {
                    file.write_all_at(&zeros, at).unwrap();
                }
            }
        }
        file.sync_all().unwrap();
        // Drop the cached pages, as segments do before appends: zeros
        // written through the page cache sit in large folios, and a 300-byte
        // store into one would dirty and rewrite the whole folio.
        // SAFETY: advice on a valid descriptor; it touches no memory of ours.
        let result =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(result, 0, "posix_fadvise");
        InPlaceLoop { file, offset_bytes: 0, record: vec![0x5a; RECORD_PAYLOAD_BYTES] }
    }

    fn step(&mut self) -> u64 {
        self.file.write_all_at(&self.record, self.offset_bytes).unwrap();
        self.file.sync_data().unwrap();
        self.offset_bytes = (self.offset_bytes + SYNC_STRIDE_BYTES) % PREALLOCATED_BYTES;
        1
    }
}

/// The server's pattern: a batch of entries and a changed hard state, then
/// one sync.
struct WalLoop {
    wal: Wal,
    next_index: u64,
    batch: u64,
    payload: Vec<u8>,
}

impl WalLoop {
    fn new(data_dir: &Path, batch: u64) -> WalLoop {
        let wal = Wal::open(data_dir, WalConfig::default()).unwrap();
        let payload = (0..RECORD_PAYLOAD_BYTES).map(|i| i as u8).collect();
        WalLoop { wal, next_index: 1, batch, payload }
    }

    fn step(&mut self) -> u64 {
        let entries: Vec<Entry> = (self.next_index..self.next_index + self.batch)
            .map(|index| Entry {
                term: 1,
                index,
                kind: EntryKind::Normal,
                data: self.payload.clone(),
            })
            .collect();
        self.wal.append(&entries).unwrap();
        let commit = self.next_index - 1;
        self.wal.set_hard_state(&HardState { term: 1, vote: 1, commit }).unwrap();
        self.wal.sync().unwrap();
        self.next_index += self.batch;
        self.batch
    }
}

fn main() {
    let dir = bench_dir();
    if is_tmpfs(&dir) {
        eprintln!(
            "refusing to benchmark on tmpfs ({}): set EMBER_BENCH_DIR to a disk",
            dir.display()
        );
        std::process::exit(1);
    }
    println!("bench_dir={}", dir.display());
    // The disk's fsync rate drifts with whatever else the machine does, so
    // the raw loop and the WAL take turns in short rounds and are compared
    // over the same stretch of time.
    let rounds = 6;
    let round = seconds() / 2;
    let (mut raw, mut single, mut batched) = (Tally::default(), Tally::default(), Tally::default());
    let mut raw_loop = RawLoop::new(&dir.join("raw.bin"));
    let mut single_loop = WalLoop::new(&dir.join("batch1"), 1);
    let mut batched_loop = WalLoop::new(&dir.join("batch64"), 64);
    let (mut fallocated, mut zeroed) = (Tally::default(), Tally::default());
    let mut fallocated_loop = InPlaceLoop::new(&dir.join("fallocated.bin"), Prealloc::Fallocate);
    let mut zeroed_loop = InPlaceLoop::new(&dir.join("zeroed.bin"), Prealloc::Zeroes);
    let mut round_ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        measure(&mut fallocated, round / 2, || fallocated_loop.step());
        measure(&mut zeroed, round / 2, || zeroed_loop.step());
        let (raw_before, single_before) =
            ((raw.records, raw.seconds), (single.records, single.seconds));
        measure(&mut raw, round, || raw_loop.step());
        measure(&mut single, round, || single_loop.step());
        measure(&mut batched, round / 3, || batched_loop.step());
        let raw_rate = (raw.records - raw_before.0) as f64 / (raw.seconds - raw_before.1);
        let single_rate =
            (single.records - single_before.0) as f64 / (single.seconds - single_before.1);
        round_ratios.push(single_rate / raw_rate);
    }
    round_ratios.sort_by(f64::total_cmp);
    println!("fdatasync_per_s={:.0}", raw.per_s());
    println!("fdatasync_bytes_written_per_op={:.0}", raw.bytes_per_record());
    for (name, tally) in [("fallocated", &fallocated), ("zeroed", &zeroed)] {
        println!("fdatasync_per_s_{name}={:.0}", tally.per_s());
        println!("fdatasync_bytes_written_per_op_{name}={:.0}", tally.bytes_per_record());
    }
    for (batch, tally) in [(1, &single), (64, &batched)] {
        println!("wal_records_per_s_batch{batch}={:.0}", tally.per_s());
        println!("wal_syncs_per_s_batch{batch}={:.0}", tally.operations as f64 / tally.seconds);
        println!("wal_bytes_written_per_record_batch{batch}={:.0}", tally.bytes_per_record());
    }
    println!("wal_batch1_vs_fdatasync={:.2}", single.per_s() / raw.per_s());
    // Adjacent rounds share the disk's mood; the median of their ratios is
    // the steadier figure on a disk shared with other work.
    println!("wal_batch1_vs_fdatasync_median_round={:.2}", round_ratios[rounds / 2]);
    let ratio = batched.bytes_per_record() / RECORD_PAYLOAD_BYTES as f64;
    println!("wal_written_per_payload_byte_batch64={ratio:.2}");
    drop((raw_loop, single_loop, batched_loop, fallocated_loop, zeroed_loop));
    let _ = fs::remove_dir_all(&dir);
}
