//! The write-ahead log: the Raft log and hard state on disk, under
//! `<data-dir>/wal/`.
//!
//! Owns: fixed-size segment files, their preallocation and memory maps, record
//! framing with CRC32, group commit (`sync`), rotation, recovery of a torn tail,
//! truncation on conflict, and release of segments covered by a snapshot.
//!
//! Must not touch: what an entry means (it stores opaque payloads), the key-value
//! store, sockets. A failed fsync is fatal here: the caller is told and the
//! process stops; nothing retries.
//!
//! # Layout
//!
//! `wal/` holds segments named `{seq:016x}-{first_index:016x}.wal`, each
//! exactly `segment_size_bytes` long. The default, 8 MiB, weighs three costs:
//! - Footprint: a fresh data directory is one preallocated segment plus a few
//!   small files, 8.2 MB; at 16 MiB it was 16.4 MB, over the 16 MB budget.
//! - Rotation: sealing a segment and creating the next costs about four
//!   syncs (seal, header, rename, directory). 8 MiB still holds ~25k small
//!   entries, 2k single-entry syncs or ~350 syncs of 64-entry batches, so
//!   rotation adds under 1% to the syncs at any batch size.
//! - Largest entry: one record must fit in a segment, so an entry can carry
//!   up to 8 MiB less a few pages, five times the default 1.5 MiB request.
//!
//! Write wear does not change with the size: `posix_fallocate` reserves
//! blocks without writing them. Release frees space in 8 MiB steps, and
//! keeps released segments as spares (up to `spare_segments_max`) that the
//! next rotations recycle: a sync into blocks written before costs the
//! device its data and a cache flush, while the first write into a
//! reserved, never written block also commits the file system's journal
//! (3.0 write IOs per lone put instead of 2.28, measured by
//! `benches/sdcard.sh`). A fresh segment is still only reserved, not
//! zero-filled: filling 8 MiB would stall the loop at rotation for as long
//! as the card takes to write it, and at 64 clients it cost more bytes per
//! put than the journal commits it saved; recycling reaches written blocks
//! without either cost once the log has been released once. Zeroing a
//! fresh segment a few pages ahead of a lone writer instead (128 KiB direct
//! writes after each one-page sync) was measured too and is not done: 2.76
//! to 2.90 write IOs per lone put instead of 3.00, for 11.1 to 11.7 KB
//! instead of 8.2 KB, and 535 to 560 B per put at 64 clients instead of
//! 473 to 500 (docs/FORMAT.md, "What a sync costs the device").
//! A 64-byte header opens each segment; records follow, 8-byte aligned,
//! always appended within a segment's life, never overwritten.
//! `docs/FORMAT.md` draws the bytes and walks through a power cut at every
//! step.
//!
//! # Use
//!
//! The server owns one `Wal`. For each Raft `Ready` it calls
//! [`Wal::save_snapshot_marker`] (if the Ready has a snapshot, after the
//! snapshot file is saved), [`Wal::append`] with the Ready's entries,
//! [`Wal::set_hard_state`], then [`Wal::sync`] once: that one sync makes the
//! whole Ready durable (group commit). After a snapshot it calls
//! [`Wal::release_to`]. Raft reads the stable log through the `raft::Storage`
//! implementation in `crate::storage`, served straight from the maps
//! (`storage.rs` here reads entries and terms).
//!
//! A [`WalError::SyncFailed`] (or `Poisoned`) is fatal: log it and exit. The
//! kernel may already have dropped the pages that failed to write, so a retry
//! could report success for data that is not on disk.

#![allow(unsafe_code)] // memory maps and posix_fallocate, in segment.rs

mod error;
mod index;
pub mod record;
pub mod recover;
mod segment;
mod storage;

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use crate::raft::{Entry, HardState, SnapshotMeta};

pub use error::WalError;
use index::IndexError;
pub use index::LogIndex;
use record::{
    NewRecord, PAYLOAD_MAX_BYTES, Parsed, RecordKind, SegmentHeader, align_up, encode_hard_state,
    encode_record, parse_record, record_size_bytes,
};
pub use recover::{Corruption, Problem, TornTail};
use segment::{PAGE_BYTES_MAX, SPARE_SUFFIX, Segment, TEMP_SUFFIX, spare_path, sync_dir};
pub use segment::{Step, parse_segment_name, segment_file_name};

/// Default size of a segment file.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 8 << 20;
/// Smallest segment: a handful of pages beyond the reserve at its end.
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 64 << 10;
/// Largest segment: the offset index stores offsets / 8 in a `u32`.
pub const SEGMENT_SIZE_BYTES_MAX: u64 = (u32::MAX as u64) * 8;
/// Entries kept below a snapshot when releasing segments, as etcd keeps
/// 5,000 so a follower slightly behind can catch up from the log.
pub const CATCH_UP_MARGIN_ENTRIES_DEFAULT: u64 = 5_000;
/// Released segments kept for recycling. The node snapshots once the log
/// holds 8 segments (`SNAPSHOT_WAL_SEGMENTS` in the server), so a release
/// frees at most about 8 at a time; keeping them all lets the log refill
/// from recycled files only, and the directory then never holds more than
/// it held just before the release. Fewer would send some rotations back
/// to fresh files, whose first write to each block also commits the file
/// system's journal.
pub const SPARE_SEGMENTS_MAX_DEFAULT: usize = 8;
/// Zeros a pad record's payload is made of.
static ZERO_PAGE: [u8; PAGE_BYTES_MAX] = [0; PAGE_BYTES_MAX];

/// How the WAL is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalConfig {
    /// Size of each new segment. Invariant (checked by `open`): a multiple of
    /// `PAGE_BYTES` within `[SEGMENT_SIZE_BYTES_MIN, SEGMENT_SIZE_BYTES_MAX]`.
    pub segment_size_bytes: u64,
    /// Entries below the snapshot index whose segments `release_to` keeps.
    pub catch_up_margin_entries: u64,
    /// Released segments kept as spares for the next rotations instead of
    /// being deleted; 0 deletes every released segment.
    pub spare_segments_max: usize,
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        let config = WalConfig {
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            catch_up_margin_entries: CATCH_UP_MARGIN_ENTRIES_DEFAULT,
            spare_segments_max: SPARE_SEGMENTS_MAX_DEFAULT,
        };
        #[cfg(feature = "fault-injection")]
        let config = config.shrunk_for_faults();
        config
    }
}

/// Fault injection only: names the segment size a member uses instead of
/// the default, so a power-loss test of a few seconds rotates, releases and
/// recycles segments.
#[cfg(feature = "fault-injection")]
pub const FAULT_SEGMENT_BYTES_ENV: &str = "EMBER_FAULT_WAL_SEGMENT_BYTES";
/// Fault injection only: the catch-up margin to use instead of the default.
#[cfg(feature = "fault-injection")]
pub const FAULT_CATCH_UP_MARGIN_ENV: &str = "EMBER_FAULT_WAL_CATCH_UP_MARGIN";

#[cfg(feature = "fault-injection")]
impl WalConfig {
    fn shrunk_for_faults(mut self) -> WalConfig {
        let number = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(bytes) = number(FAULT_SEGMENT_BYTES_ENV) {
            self.segment_size_bytes = bytes;
        }
        if let Some(entries) = number(FAULT_CATCH_UP_MARGIN_ENV) {
            self.catch_up_margin_entries = entries;
        }
        self
    }
}

impl WalConfig {
    fn check(&self, page_bytes: usize) -> Result<(), WalError> {
        let size = self.segment_size_bytes;
        if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&size) {
            return Err(WalError::Config("segment size out of range"));
        }
        if usize::try_from(size).is_err() {
            return Err(WalError::Config("segment size exceeds the address space"));
        }
        if !size.is_multiple_of(page_bytes as u64) {
            return Err(WalError::Config("segment size is not a multiple of the page size"));
        }
        if size < 4 * tail_reserve_bytes(page_bytes) as u64 {
            return Err(WalError::Config("segment size too small for this page size"));
        }
        Ok(())
    }
}

/// Space kept free at the end of every segment for the pad that closes a
/// sync (up to a page) and the seal that closes the segment.
fn tail_reserve_bytes(page_bytes: usize) -> usize {
    2 * page_bytes
}

/// What a test hook is told at each step.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo<'a> {
    pub step: Step,
    /// The file the step concerns.
    pub file: &'a Path,
    /// For a rename (`SegmentRenamed`, `SegmentSpared`): the name `file` had
    /// before it.
    pub renamed_from: Option<&'a Path>,
    /// The segment records are written to, with its synced and written
    /// offsets: bytes in `[synced, written)` are not durable yet.
    pub tail: (&'a Path, usize, usize),
}

/// A test hook called between the writer's steps.
pub type StepHook = Box<dyn FnMut(&StepInfo)>;

/// The write-ahead log of one node.
pub struct Wal {
    dir: PathBuf,
    config: WalConfig,
    /// The memory page size: each sync's batch ends on a page boundary.
    page_bytes: usize,
    /// Invariant: non-empty, consecutive sequence numbers; records are
    /// written to the last one only.
    segments: VecDeque<Segment>,
    /// Released segments to recycle, oldest first. Invariant: at most
    /// `config.spare_segments_max`, each exactly `segment_size_bytes` long,
    /// each an earlier segment with a sequence below every live one.
    spares: VecDeque<PathBuf>,
    index: LogIndex,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Segments holding the newest hard-state and snapshot-marker records;
    /// release never removes them without writing a fresh copy first.
    hard_state_seq: u64,
    marker_seq: u64,
    /// Invariant: `records_offset <= synced_offset <= write_offset`, both in
    /// the last segment; nothing before `synced_offset` changes again, and
    /// once open has run, `synced_offset` sits on a page boundary unless the
    /// segment is sealed.
    write_offset: usize,
    synced_offset: usize,
    /// The last segment ends with a seal; the next record opens a new one.
    sealed: bool,
    /// A sync failed; every later call fails with `Poisoned`.
    poisoned: bool,
    /// Test hook: the next sync fails as if fdatasync had returned EIO.
    fail_next_sync: bool,
    repaired: Option<TornTail>,
    hook: Option<StepHook>,
    /// Bytes of records (entries, hard states, markers, seals, pads)
    /// written since open: what the disk was asked to take.
    written_bytes_total: u64,
}

impl Wal {
    /// Opens (or creates) the WAL under `<data_dir>/wal/` and recovers it.
    pub fn open(data_dir: &Path, config: WalConfig) -> Result<Wal, WalError> {
        let page_bytes = segment::page_bytes();
        config.check(page_bytes)?;
        let dir = data_dir.join("wal");
        create_dir(data_dir, &dir)?;
        let (names, spares) = list_segments(&dir)?;
        let oldest_seq = names.first().map(|(_, seq, _)| *seq);
        let spares = keep_spares(&dir, spares, oldest_seq, &config)?;
        let mut segments = VecDeque::with_capacity(names.len());
        for (name, seq, first_index) in &names {
            segments.push_back(Segment::open(dir.join(name), *seq, *first_index)?);
        }
        let views: Vec<recover::SegmentView> = names
            .iter()
            .zip(&segments)
            .map(|((name, seq, first_index), segment)| recover::SegmentView {
                file_name: name,
                name_seq: *seq,
                name_first_index: *first_index,
                bytes: segment.bytes(),
            })
            .collect();
        let recovered = recover::recover(&views, &mut |_| {})
            .map_err(|corruption| WalError::Corrupt { dir: dir.clone(), corruption })?;
        drop(views);
        let mut wal = Wal::from_recovered(dir, config, page_bytes, segments, recovered);
        wal.spares = spares;
        wal.repair_tail()?;
        // Recovery read every segment through its map; only the tail is
        // written again.
        let sealed_count = wal.segments.len().saturating_sub(1);
        wal.segments.iter().take(sealed_count).for_each(Segment::drop_resident_pages);
        match wal.segments.back() {
            Some(tail) => tail.prepare_for_appends(wal.write_offset)?,
            None => wal.open_first_segment()?,
        }
        wal.close_partial_page()?;
        Ok(wal)
    }

    fn from_recovered(
        dir: PathBuf,
        config: WalConfig,
        page_bytes: usize,
        segments: VecDeque<Segment>,
        recovered: recover::Recovered,
    ) -> Wal {
        Wal {
            dir,
            config,
            page_bytes,
            segments,
            spares: VecDeque::new(),
            index: recovered.index,
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            // Where exactly the newest copies live is not tracked through
            // recovery; the oldest segment is the safe assumption, so the
            // first release rewrites them.
            hard_state_seq: 0,
            marker_seq: 0,
            write_offset: recovered.end_offset,
            synced_offset: recovered.end_offset,
            sealed: recovered.last_sealed,
            poisoned: false,
            fail_next_sync: false,
            repaired: recovered.torn,
            hook: None,
            written_bytes_total: 0,
        }
    }

    /// Keeps the torn tail's bytes in a side file, zeroes them, and syncs.
    fn repair_tail(&mut self) -> Result<(), WalError> {
        let Some(torn) = self.repaired.clone() else { return Ok(()) };
        let segment = self.segments.back_mut().expect("a torn tail lies in a segment");
        let side = self.dir.join(format!("{}.torn-{:016x}", torn.file_name, torn.offset));
        fs::write(&side, &segment.bytes()[torn.offset..torn.end])
            .map_err(|source| WalError::Io { file: side.clone(), op: "write", source })?;
        let file = fs::File::open(&side).map_err(|source| WalError::Io {
            file: side.clone(),
            op: "open",
            source,
        })?;
        file.sync_all().map_err(|source| WalError::SyncFailed { file: side.clone(), source })?;
        sync_dir(&self.dir)?;
        segment.bytes_mut()[torn.offset..torn.end].fill(0);
        segment.sync_range(torn.offset, torn.end)?;
        log::warn!(
            "wal: torn tail in {} at offset {} ({}): {} bytes kept in {} and cut off",
            torn.file_name,
            torn.offset,
            torn.why,
            torn.end - torn.offset,
            side.display()
        );
        Ok(())
    }

    /// When the log ends inside a page (a repaired tail, or a batch whose
    /// pad was lost), pads to the page boundary and syncs, so later batches
    /// never rewrite the page that holds these durable records.
    fn close_partial_page(&mut self) -> Result<(), WalError> {
        if self.sealed || self.write_offset.is_multiple_of(self.page_bytes) {
            return Ok(());
        }
        self.write_pad();
        self.sync_tail()
    }

    fn open_first_segment(&mut self) -> Result<(), WalError> {
        let first_index = self.index.last_index() + 1;
        self.create_segment(1, first_index)
    }

    /// Installs a hook that is called between steps (crash tests).
    pub fn set_step_hook(&mut self, hook: StepHook) {
        self.hook = Some(hook);
    }

    /// The torn tail cut off when this WAL was opened, if any.
    pub fn repaired_tail(&self) -> Option<&TornTail> {
        self.repaired.as_ref()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    pub fn first_index(&self) -> u64 {
        self.index.first_index()
    }

    pub fn last_index(&self) -> u64 {
        self.index.last_index()
    }

    /// Number of segment files the WAL holds.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Heap bytes of the offset index (about 4 per live entry).
    pub fn index_heap_bytes(&self) -> usize {
        self.index.heap_bytes()
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned { Err(WalError::Poisoned) } else { Ok(()) }
    }

    fn tail(&self) -> &Segment {
        self.segments.back().expect("invariant: at least one segment")
    }

    /// Calls the test hook, if any; `file` defaults to the segment being
    /// written.
    fn step(&mut self, step: Step, file: Option<&Path>) {
        self.step_renamed(step, file, None);
    }

    fn step_renamed(&mut self, step: Step, file: Option<&Path>, renamed_from: Option<&Path>) {
        let Some(mut hook) = self.hook.take() else { return };
        let tail = self.tail();
        let file = file.unwrap_or(&tail.path);
        let tail = (tail.path.as_path(), self.synced_offset, self.write_offset);
        hook(&StepInfo { step, file, renamed_from, tail });
        self.hook = Some(hook);
    }

    /// Largest payload one record may carry in this configuration.
    pub fn payload_max_bytes(&self) -> usize {
        let usable = self.config.segment_size_bytes as usize
            - self.page_bytes
            - tail_reserve_bytes(self.page_bytes)
            - record::RECORD_HEADER_BYTES;
        usable.min(PAYLOAD_MAX_BYTES) & !(record::RECORD_ALIGN_BYTES - 1)
    }

    /// Appends `entries` (consecutive indexes). An entry at or below the last
    /// index replaces the log from there on: a new leader overwrote the tail.
    /// Not durable until `sync`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.check_usable()?;
        let Some(first) = entries.first() else { return Ok(()) };
        self.index.check(first.index).map_err(index_error)?;
        let max_bytes = self.payload_max_bytes();
        for (position, entry) in entries.iter().enumerate() {
            let expected = first.index + position as u64;
            if entry.index != expected {
                return Err(WalError::NotContiguous { expected, found: entry.index });
            }
            if entry.data.len() > max_bytes {
                let payload_bytes = entry.data.len();
                return Err(WalError::RecordTooLarge { payload_bytes, max_bytes });
            }
        }
        for entry in entries {
            let kind = RecordKind::of_entry(entry.kind);
            let new =
                NewRecord { kind, index: entry.index, term: entry.term, payload: &entry.data };
            let (seq, offset) = self.write_record(&new)?;
            self.index.push(entry.index, seq, offset).map_err(index_error)?;
        }
        self.step(Step::RecordsWritten, None);
        Ok(())
    }

    /// Records the hard state (only if it changed). Not durable until `sync`.
    pub fn set_hard_state(&mut self, state: &HardState) -> Result<(), WalError> {
        self.check_usable()?;
        if *state == self.hard_state {
            return Ok(());
        }
        let payload = encode_hard_state(state);
        let new = NewRecord {
            kind: RecordKind::HardState,
            index: 0,
            term: state.term,
            payload: &payload,
        };
        let (seq, _) = self.write_record(&new)?;
        self.hard_state = *state;
        self.hard_state_seq = seq;
        self.step(Step::RecordsWritten, None);
        Ok(())
    }

    /// Records that a snapshot at `meta` exists (its file must already be
    /// saved). Entries up to `meta.index` stop being served; entries after
    /// it stay if the log agrees with the snapshot's term at its index.
    /// Not durable until `sync`. An older or equal snapshot is ignored.
    pub fn save_snapshot_marker(&mut self, meta: &SnapshotMeta) -> Result<(), WalError> {
        self.check_usable()?;
        if meta.index <= self.snapshot.index {
            return Ok(());
        }
        self.write_marker(meta)?;
        let term_at_index = self.entry_term(meta.index);
        self.index.apply_snapshot(meta.index, meta.term, |_| term_at_index);
        self.snapshot = meta.clone();
        Ok(())
    }

    fn write_marker(&mut self, meta: &SnapshotMeta) -> Result<(), WalError> {
        let payload = postcard::to_stdvec(&meta.conf_state)
            .map_err(|_| WalError::Config("conf state does not encode"))?;
        if payload.len() > self.payload_max_bytes() {
            let (payload_bytes, max_bytes) = (payload.len(), self.payload_max_bytes());
            return Err(WalError::RecordTooLarge { payload_bytes, max_bytes });
        }
        let new = NewRecord {
            kind: RecordKind::SnapshotMarker,
            index: meta.index,
            term: meta.term,
            payload: &payload,
        };
        let (seq, _) = self.write_record(&new)?;
        self.marker_seq = seq;
        self.step(Step::RecordsWritten, None);
        Ok(())
    }

    /// Writes one record at the end of the log, rotating first if it does
    /// not fit. Returns where it went. The caller checked its size.
    fn write_record(&mut self, new: &NewRecord) -> Result<(u64, usize), WalError> {
        let size_bytes = record_size_bytes(new.payload.len());
        let limit = self.tail().len_bytes() - tail_reserve_bytes(self.page_bytes);
        if self.sealed || self.write_offset + size_bytes > limit {
            self.rotate()?;
        }
        let offset = self.write_offset;
        let segment = self.segments.back_mut().expect("invariant: at least one segment");
        let seq = segment.seq;
        encode_record(&mut segment.bytes_mut()[offset..], seq, offset, new);
        self.write_offset += size_bytes;
        self.written_bytes_total += size_bytes as u64;
        Ok((seq, offset))
    }

    /// Seals the full segment, makes it durable, and opens the next one.
    fn rotate(&mut self) -> Result<(), WalError> {
        if !self.sealed {
            let seal = NewRecord {
                kind: RecordKind::Seal,
                index: self.index.last_index() + 1,
                term: 0,
                payload: &[],
            };
            let offset = self.write_offset;
            let segment = self.segments.back_mut().expect("invariant: at least one segment");
            let seq = segment.seq;
            let seal_bytes = encode_record(&mut segment.bytes_mut()[offset..], seq, offset, &seal);
            self.write_offset += seal_bytes;
            self.written_bytes_total += seal_bytes as u64;
            self.sync_tail()?;
            self.sealed = true;
        }
        self.tail().drop_resident_pages();
        let seq = self.tail().seq + 1;
        self.create_segment(seq, self.index.last_index() + 1)
    }

    /// Opens segment `seq`: a recycled spare when there is one, else a
    /// fresh, fully allocated file.
    fn create_segment(&mut self, seq: u64, first_index: u64) -> Result<(), WalError> {
        let records_offset = u32::try_from(self.page_bytes).expect("page size is capped");
        let segment_size_bytes = self.config.segment_size_bytes;
        let spare = self.spares.pop_front();
        let previous_seq = spare.as_deref().and_then(spare_seq).unwrap_or(0);
        let header =
            SegmentHeader { seq, first_index, segment_size_bytes, records_offset, previous_seq };
        let mut hook = self.hook.take();
        let tail =
            self.segments.back().map(|s| (s.path.clone(), self.synced_offset, self.write_offset));
        let mut step = |step: Step, file: &Path, renamed_from: Option<&Path>| {
            if let Some(hook) = hook.as_mut() {
                let start = records_offset as usize;
                let (path, synced, written) =
                    tail.clone().unwrap_or((file.to_path_buf(), start, start));
                hook(&StepInfo { step, file, renamed_from, tail: (&path, synced, written) });
            }
        };
        let created = match &spare {
            Some(spare) => Segment::recycle(&self.dir, spare, &header, &mut step),
            None => Segment::create(&self.dir, &header, &mut step),
        };
        self.hook = hook;
        self.segments.push_back(created?);
        self.write_offset = records_offset as usize;
        self.synced_offset = records_offset as usize;
        self.sealed = false;
        Ok(())
    }

    /// Makes everything written since the last sync durable with one msync
    /// (an fdatasync of the written range). The batch is closed with a pad
    /// record to the next page, so the next batch never rewrites this one's
    /// last page. A failure is fatal: see [`WalError::SyncFailed`].
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        if self.write_offset == self.synced_offset || self.sealed {
            return Ok(());
        }
        self.write_pad();
        self.sync_tail()
    }

    fn write_pad(&mut self) {
        let offset = self.write_offset;
        let boundary = align_up(offset + record::RECORD_HEADER_BYTES, self.page_bytes);
        let payload_bytes = boundary - offset - record::RECORD_HEADER_BYTES;
        let pad = NewRecord {
            kind: RecordKind::Pad,
            index: 0,
            term: 0,
            payload: &ZERO_PAGE[..payload_bytes],
        };
        let segment = self.segments.back_mut().expect("invariant: at least one segment");
        let seq = segment.seq;
        let pad_bytes = encode_record(&mut segment.bytes_mut()[offset..], seq, offset, &pad);
        self.write_offset += pad_bytes;
        self.written_bytes_total += pad_bytes as u64;
    }

    /// Test hook: makes the next sync fail with EIO, as a dying disk would,
    /// to exercise the fail-stop path.
    pub fn inject_sync_failure(&mut self) {
        self.fail_next_sync = true;
    }

    fn sync_tail(&mut self) -> Result<(), WalError> {
        let result = if std::mem::take(&mut self.fail_next_sync) {
            let source = std::io::Error::from_raw_os_error(libc::EIO);
            Err(WalError::SyncFailed { file: self.tail().path.clone(), source })
        } else {
            self.tail().sync_range(self.synced_offset, self.write_offset)
        };
        if let Err(error) = result {
            self.poisoned = true;
            log::error!("wal: {error}");
            return Err(error);
        }
        self.synced_offset = self.write_offset;
        self.step(Step::Synced, None);
        Ok(())
    }

    /// Removes segments whose entries all lie at or below
    /// `min(index, snapshot index) - catch_up_margin_entries`. Syncs first,
    /// and rewrites the newest hard state and snapshot marker if they live
    /// only in segments about to go. Up to `spare_segments_max` of them are
    /// kept as spares for the next rotations, the rest unlinked. Returns how
    /// many segments were removed.
    pub fn release_to(&mut self, index: u64) -> Result<usize, WalError> {
        self.check_usable()?;
        let limit =
            index.min(self.snapshot.index).saturating_sub(self.config.catch_up_margin_entries);
        let releasable = self.releasable_count(limit);
        if releasable == 0 {
            return Ok(0);
        }
        let keep_from_seq = self.segments[releasable].seq;
        self.keep_copies(keep_from_seq)?;
        self.sync()?;
        for _ in 0..releasable {
            let segment = self.segments.pop_front().expect("counted above");
            let keep = self.spares.len() < self.config.spare_segments_max
                && segment.len_bytes() as u64 == self.config.segment_size_bytes;
            let path = segment.path.clone();
            drop(segment);
            if keep {
                self.keep_spare(&path)?;
            } else {
                fs::remove_file(&path).map_err(|source| WalError::Io {
                    file: path.clone(),
                    op: "remove",
                    source,
                })?;
                self.step(Step::SegmentRemoved, Some(&path));
            }
        }
        sync_dir(&self.dir)?;
        let dir = self.dir.clone();
        self.step(Step::DirectorySynced, Some(&dir));
        assert!(
            self.index.oldest_live_seq().is_none_or(|seq| seq >= keep_from_seq),
            "released a segment that holds live entries"
        );
        Ok(releasable)
    }

    /// Renames the released segment at `path` to a spare. Oldest first, like
    /// the unlinks: a crash before the directory sync leaves a contiguous
    /// run of segments either way.
    fn keep_spare(&mut self, path: &Path) -> Result<(), WalError> {
        let spare = spare_path(path);
        fs::rename(path, &spare).map_err(|source| WalError::Io {
            file: spare.clone(),
            op: "rename",
            source,
        })?;
        self.step_renamed(Step::SegmentSpared, Some(&spare), Some(path));
        self.spares.push_back(spare);
        Ok(())
    }

    /// Unlinks every spare segment and syncs the directory: returns their
    /// disk to the board at the price of the next rotations writing into
    /// fresh blocks. Returns how many were removed.
    pub fn discard_spares(&mut self) -> Result<usize, WalError> {
        self.check_usable()?;
        let count = self.spares.len();
        while let Some(path) = self.spares.pop_front() {
            fs::remove_file(&path).map_err(|source| WalError::Io {
                file: path.clone(),
                op: "remove",
                source,
            })?;
            self.step(Step::SegmentRemoved, Some(&path));
        }
        if count > 0 {
            sync_dir(&self.dir)?;
            let dir = self.dir.clone();
            self.step(Step::DirectorySynced, Some(&dir));
        }
        Ok(count)
    }

    /// Number of spare segments kept for recycling.
    pub fn spare_count(&self) -> usize {
        self.spares.len()
    }

    /// Bytes of records written since open, pads to page boundaries and
    /// segment seals included: set against the payload bytes handed in,
    /// the WAL's write amplification.
    pub fn written_bytes_total(&self) -> u64 {
        self.written_bytes_total
    }

    /// The length of every segment file.
    pub fn segment_size_bytes(&self) -> u64 {
        self.config.segment_size_bytes
    }

    /// Leading segments (never the last) whose entries are all `<= limit`:
    /// a segment's entries end before the next segment's first index.
    fn releasable_count(&self, limit: u64) -> usize {
        let segments = &self.segments;
        (1..segments.len()).take_while(|&next| segments[next].first_index - 1 <= limit).count()
    }

    fn keep_copies(&mut self, keep_from_seq: u64) -> Result<(), WalError> {
        if self.snapshot.index > 0 && self.marker_seq < keep_from_seq {
            let meta = self.snapshot.clone();
            self.write_marker(&meta)?;
        }
        if !self.hard_state.is_empty() && self.hard_state_seq < keep_from_seq {
            let state = self.hard_state;
            self.hard_state = HardState::default();
            self.set_hard_state(&state)?;
        }
        Ok(())
    }

    /// The stored term of entry `index`, if the log holds it.
    fn entry_term(&self, index: u64) -> Option<u64> {
        let (seq, offset) = self.index.locate(index)?;
        match self.read_record(seq, offset) {
            Ok((_, record_term, _, _)) => Some(record_term),
            Err(_) => None,
        }
    }

    /// Reads and re-checks the record at `offset` of segment `seq`:
    /// `(kind, term, index, payload)`.
    fn read_record(
        &self,
        seq: u64,
        offset: usize,
    ) -> Result<(RecordKind, u64, u64, &[u8]), String> {
        let front = self.segments.front().map_or(0, |s| s.seq);
        let segment = usize::try_from(seq.wrapping_sub(front))
            .ok()
            .and_then(|at| self.segments.get(at))
            .ok_or_else(|| format!("segment {seq} is not open"))?;
        match parse_record(segment.bytes(), seq, offset) {
            Parsed::Record(record) => Ok((record.kind, record.term, record.index, record.payload)),
            Parsed::Empty => {
                Err(format!("{} at offset {offset}: record vanished", segment.path.display()))
            }
            Parsed::Invalid(why) => {
                Err(format!("{} at offset {offset}: {why}", segment.path.display()))
            }
        }
    }
}

fn index_error(error: IndexError) -> WalError {
    match error {
        IndexError::Gap { index, last_index } => WalError::Gap { index, last_index },
        IndexError::BelowSnapshot { index, snapshot_index } => {
            WalError::BelowSnapshot { index, snapshot_index }
        }
    }
}

/// Creates the WAL directory, making its entry in the data directory durable.
fn create_dir(data_dir: &Path, dir: &Path) -> Result<(), WalError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|source| WalError::Io {
        file: dir.to_path_buf(),
        op: "create directory",
        source,
    })?;
    sync_dir(data_dir)
}

/// A segment and its name's `(seq, first_index)`.
type Listed = (String, u64, u64);

/// The segments in `dir` and the spares, each sorted by sequence, as
/// `(name, seq, first_index)`. Removes temp files a crash left behind; a
/// `.wal` file whose name does not parse is an error (a renamed segment must
/// not be skipped silently).
fn list_segments(dir: &Path) -> Result<(Vec<Listed>, Vec<Listed>), WalError> {
    let read = fs::read_dir(dir).map_err(|source| WalError::Io {
        file: dir.to_path_buf(),
        op: "list",
        source,
    })?;
    let mut segments = Vec::new();
    let mut spares = Vec::new();
    let mut removed_temp = false;
    for entry in read {
        let entry =
            entry.map_err(|source| WalError::Io { file: dir.to_path_buf(), op: "list", source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(TEMP_SUFFIX) {
            fs::remove_file(entry.path()).map_err(|source| WalError::Io {
                file: entry.path(),
                op: "remove",
                source,
            })?;
            removed_temp = true;
        } else if name.ends_with(segment::SEGMENT_SUFFIX) {
            let (seq, first_index) =
                parse_segment_name(&name).ok_or(WalError::StrayFile { file: entry.path() })?;
            segments.push((name, seq, first_index));
        } else if let Some(seq) = spare_seq(Path::new(&name)) {
            spares.push((name, seq, 0));
        }
    }
    if removed_temp {
        sync_dir(dir)?;
    }
    segments.sort_by_key(|(_, seq, _)| *seq);
    spares.sort_by_key(|(_, seq, _)| *seq);
    Ok((segments, spares))
}

/// What a start does with a file of the WAL directory that is not a
/// segment, for `debug wal`: spares and unfinished segments are the WAL's
/// own, anything else is left alone.
pub fn other_file_fate(name: &str) -> &'static str {
    if name.ends_with(TEMP_SUFFIX) {
        "a segment whose creation never finished: removed on start"
    } else if spare_seq(Path::new(name)).is_some() {
        "a released segment kept as a spare: reused for a new segment, or removed on start \
         when no longer wanted"
    } else {
        "not the WAL's: ignored on start"
    }
}

/// The sequence a spare had as a segment, from its name.
fn spare_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(SPARE_SUFFIX)?;
    parse_segment_name(&format!("{stem}{}", segment::SEGMENT_SUFFIX)).map(|(seq, _)| seq)
}

/// The spares to recycle: those of the configured length, up to the
/// configured count, from segments older than `oldest_seq`; the others are
/// removed. A spare's old records must belong to a lower sequence than any
/// segment that may reuse it, or they could pass as that segment's own: so
/// with no segment left (a fresh or emptied directory, where the log
/// restarts at sequence 1) every spare goes.
fn keep_spares(
    dir: &Path,
    spares: Vec<Listed>,
    oldest_seq: Option<u64>,
    config: &WalConfig,
) -> Result<VecDeque<PathBuf>, WalError> {
    let mut kept = VecDeque::new();
    let mut removed = false;
    for (name, seq, _) in spares {
        let path = dir.join(name);
        let length = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let fits = length == config.segment_size_bytes && oldest_seq.is_some_and(|o| seq < o);
        if fits && kept.len() < config.spare_segments_max {
            kept.push_back(path);
            continue;
        }
        fs::remove_file(&path).map_err(|source| WalError::Io {
            file: path.clone(),
            op: "remove",
            source,
        })?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(kept)
}
