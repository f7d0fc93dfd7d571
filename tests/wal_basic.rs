//! The WAL as its caller meets it: append, conflicts, hard state, snapshot
//! markers, release, reopening, the Storage view, and its typed errors.

#![allow(unsafe_code)] // statvfs of /dev/shm

mod wal_support;

use std::path::{Path, PathBuf};

use ember::raft::{ConfState, HardState, Snapshot, SnapshotMeta, Storage, StorageError};
use ember::snap::SnapDir;
use ember::storage::DiskStorage;
use ember::wal::{Wal, WalConfig, WalError};
use wal_support::{durable_dir, entry, read_log, segment_paths, small_config};

#[test]
fn appended_entries_survive_a_reopen_across_segments() {
    let Some(dir) = durable_dir("basic-reopen") else { return };
    let written: Vec<_> = (1..=200).map(|i| entry(i, 1 + i / 50, 500)).collect();
    {
        let mut wal = Wal::open(&dir, small_config()).unwrap();
        for batch in written.chunks(7) {
            wal.append(batch).unwrap();
            wal.set_hard_state(&HardState { term: 3, vote: 1, commit: batch[0].index }).unwrap();
            wal.sync().unwrap();
        }
        assert!(wal.segment_count() > 2, "the test should span segments");
        assert_eq!(read_log(&wal), written);
    }
    let wal = Wal::open(&dir, small_config()).unwrap();
    assert!(wal.repaired_tail().is_none());
    assert_eq!(read_log(&wal), written);
    assert_eq!(wal.hard_state(), HardState { term: 3, vote: 1, commit: 197 });
    assert!(wal.index_heap_bytes() < 200 * 8 + 1024, "index costs a few bytes per entry");
}

#[test]
fn a_conflicting_append_replaces_the_tail_and_recovery_agrees() {
    let Some(dir) = durable_dir("basic-conflict") else { return };
    let mut wal = Wal::open(&dir, small_config()).unwrap();
    let first: Vec<_> = (1..=120).map(|i| entry(i, 1, 600)).collect();
    wal.append(&first).unwrap();
    wal.sync().unwrap();
    // A new leader of term 2 overwrote everything after 30, even entries in
    // earlier segments.
    let second: Vec<_> = (31..=40).map(|i| entry(i, 2, 100)).collect();
    wal.append(&second).unwrap();
    wal.sync().unwrap();
    let mut expected = first[..30].to_vec();
    expected.extend(second);
    assert_eq!(read_log(&wal), expected);
    drop(wal);
    let wal = Wal::open(&dir, small_config()).unwrap();
    assert_eq!(read_log(&wal), expected);
    assert_eq!(wal.term_of(35), Ok(2));
    assert_eq!(wal.term_of(41), Err(StorageError::Unavailable));
}

#[test]
fn bad_appends_are_typed_errors_and_write_nothing() {
    let Some(dir) = durable_dir("basic-errors") else { return };
    let mut wal = Wal::open(&dir, small_config()).unwrap();
    wal.append(&[entry(1, 1, 10), entry(2, 1, 10)]).unwrap();
    let gap = wal.append(&[entry(4, 1, 10)]).unwrap_err();
    assert!(matches!(gap, WalError::Gap { index: 4, last_index: 2 }), "{gap}");
    let holes = wal.append(&[entry(3, 1, 10), entry(5, 1, 10)]).unwrap_err();
    assert!(matches!(holes, WalError::NotContiguous { expected: 4, found: 5 }), "{holes}");
    let huge = wal.append(&[entry(3, 1, 70 << 10)]).unwrap_err();
    assert!(matches!(huge, WalError::RecordTooLarge { .. }), "{huge}");
    assert_eq!(wal.last_index(), 2);
    wal.save_snapshot_marker(&SnapshotMeta { index: 2, term: 1, conf_state: ConfState::default() })
        .unwrap();
    let below = wal.append(&[entry(2, 1, 10)]).unwrap_err();
    assert!(matches!(below, WalError::BelowSnapshot { index: 2, snapshot_index: 2 }), "{below}");
}

fn conf() -> ConfState {
    ConfState { voters: vec![1, 2, 3], learners: vec![4], ..ConfState::default() }
}

#[test]
fn release_drops_covered_segments_and_keeps_the_margin() {
    let Some(dir) = durable_dir("basic-release") else { return };
    let config = WalConfig { catch_up_margin_entries: 40, ..small_config() };
    let mut wal = Wal::open(&dir, config).unwrap();
    let written: Vec<_> = (1..=300).map(|i| entry(i, 1, 700)).collect();
    for batch in written.chunks(10) {
        wal.append(batch).unwrap();
        wal.set_hard_state(&HardState { term: 1, vote: 1, commit: batch[9].index }).unwrap();
        wal.sync().unwrap();
    }
    let before = wal.segment_count();
    let meta = SnapshotMeta { index: 250, term: 1, conf_state: conf() };
    wal.save_snapshot_marker(&meta).unwrap();
    let removed = wal.release_to(250).unwrap();
    assert!(removed > 0 && removed < before, "removed {removed} of {before}");
    assert_eq!(segment_paths(&dir).len(), before - removed);
    // Every entry above the snapshot is still served; the margin's segments
    // are still on disk (the oldest kept one starts at or below 210).
    assert_eq!((wal.first_index(), wal.last_index()), (251, 300));
    assert_eq!(read_log(&wal), written[250..].to_vec());
    let oldest = segment_paths(&dir)[0].clone();
    let (_, first_index) =
        ember::wal::parse_segment_name(oldest.file_name().unwrap().to_str().unwrap()).unwrap();
    assert!(first_index <= 211, "margin kept: oldest segment starts at {first_index}");
    drop(wal);
    let wal = Wal::open(&dir, config).unwrap();
    assert_eq!(wal.snapshot_meta(), &meta);
    assert_eq!(read_log(&wal), written[250..].to_vec());
    assert_eq!(wal.hard_state().commit, 300);
    assert_eq!(wal.term_of(250), Ok(1));
    assert_eq!(wal.entry(250), Err(StorageError::Compacted));
}

fn spare_paths(data_dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "spare"))
        .collect();
    paths.sort();
    paths
}

/// Inode of a file, to tell a recycled file from a fresh one.
fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

#[test]
fn released_segments_are_recycled_as_the_next_ones_up_to_the_spare_limit() {
    let Some(dir) = durable_dir("basic-recycle") else { return };
    let config = WalConfig { spare_segments_max: 2, ..small_config() };
    let mut wal = Wal::open(&dir, config).unwrap();
    let written: Vec<_> = (1..=400).map(|i| entry(i, 1, 700)).collect();
    for batch in written[..300].chunks(10) {
        wal.append(batch).unwrap();
        wal.set_hard_state(&HardState { term: 1, vote: 1, commit: batch[9].index }).unwrap();
        wal.sync().unwrap();
    }
    let meta = SnapshotMeta { index: 290, term: 1, conf_state: conf() };
    wal.save_snapshot_marker(&meta).unwrap();
    let removed = wal.release_to(290).unwrap();
    assert!(removed > 2, "released {removed} segments");
    let spares = spare_paths(&dir);
    assert_eq!((spares.len(), wal.spare_count()), (2, 2), "spares beyond the limit are unlinked");
    let spare_inodes: Vec<u64> = spares.iter().map(|p| inode(p)).collect();
    let live_before: Vec<PathBuf> = segment_paths(&dir);
    for batch in written[300..].chunks(10) {
        wal.append(batch).unwrap();
        wal.set_hard_state(&HardState { term: 1, vote: 1, commit: batch[9].index }).unwrap();
        wal.sync().unwrap();
    }
    let new_segments: Vec<PathBuf> =
        segment_paths(&dir).into_iter().filter(|p| !live_before.contains(p)).collect();
    assert!(new_segments.len() >= 2, "the appends rotated {} times", new_segments.len());
    // The first new segments are the spares' files, oldest spare first.
    let new_inodes: Vec<u64> = new_segments.iter().take(2).map(|p| inode(p)).collect();
    assert_eq!(new_inodes, spare_inodes);
    assert_eq!(spare_paths(&dir).len(), 0);
    drop(wal);
    let wal = Wal::open(&dir, config).unwrap();
    assert!(wal.repaired_tail().is_none(), "a recycled tail is a clean end, not a torn one");
    assert_eq!(read_log(&wal), written[290..].to_vec());
}

#[test]
fn spares_that_do_not_fit_are_removed_on_open() {
    let Some(dir) = durable_dir("basic-spares-open") else { return };
    let mut wal = Wal::open(&dir, small_config()).unwrap();
    wal.append(&[entry(1, 1, 10)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal_dir = dir.join("wal");
    // One of the wrong length, one whose sequence is not below the live
    // segment's (its records could pass as a later segment's own).
    std::fs::write(wal_dir.join("0000000000000000-0000000000000001.spare"), b"short").unwrap();
    let size = small_config().segment_size_bytes as usize;
    std::fs::write(wal_dir.join("0000000000000005-0000000000000001.spare"), vec![1u8; size])
        .unwrap();
    let config = WalConfig { spare_segments_max: 2, ..small_config() };
    let wal = Wal::open(&dir, config).unwrap();
    assert_eq!((wal.spare_count(), spare_paths(&dir).len()), (0, 0));
    assert_eq!(read_log(&wal), vec![entry(1, 1, 10)]);
}

#[test]
fn a_snapshot_past_the_log_empties_it() {
    let Some(dir) = durable_dir("basic-snapshot-ahead") else { return };
    let mut wal = Wal::open(&dir, small_config()).unwrap();
    wal.append(&[entry(1, 1, 10), entry(2, 1, 10)]).unwrap();
    wal.save_snapshot_marker(&SnapshotMeta { index: 50, term: 3, conf_state: conf() }).unwrap();
    wal.append(&[entry(51, 3, 10)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(&dir, small_config()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (51, 51));
    assert_eq!(wal.term_of(50), Ok(3));
}

#[test]
fn disk_storage_serves_raft_from_the_maps_and_the_snapshot_files() {
    let Some(dir) = durable_dir("basic-storage") else { return };
    let snaps = SnapDir::open(&dir, 2).unwrap();
    let mut wal = Wal::open(&dir, small_config()).unwrap();
    wal.append(&(1..=20).map(|i| entry(i, 2, 100)).collect::<Vec<_>>()).unwrap();
    let hard_state = HardState { term: 2, vote: 3, commit: 20 };
    wal.set_hard_state(&hard_state).unwrap();
    let meta = SnapshotMeta { index: 10, term: 2, conf_state: conf() };
    snaps.save(&Snapshot { meta: meta.clone(), data: b"image".to_vec() }).unwrap();
    wal.save_snapshot_marker(&meta).unwrap();
    wal.sync().unwrap();
    let storage = DiskStorage { wal, snaps };
    assert_eq!(storage.initial_state(), Ok((hard_state, conf())));
    assert_eq!(storage.first_index(), Ok(11));
    assert_eq!(storage.last_index(), Ok(20));
    assert_eq!(storage.term(10), Ok(2));
    assert_eq!(storage.term(9), Err(StorageError::Compacted));
    assert_eq!(storage.entries(5, 12, u64::MAX), Err(StorageError::Compacted));
    assert_eq!(storage.entries(11, 22, u64::MAX), Err(StorageError::Unavailable));
    let all = storage.entries(11, 21, u64::MAX).unwrap();
    assert_eq!(all, (11..=20).map(|i| entry(i, 2, 100)).collect::<Vec<_>>());
    // 124 bytes count per entry: the cap stops after two, but never at zero.
    assert_eq!(storage.entries(11, 21, 250).unwrap().len(), 2);
    assert_eq!(storage.entries(11, 21, 1).unwrap().len(), 1);
    // Raft is handed the meta; the payload is read from the file in chunks.
    let snapshot = storage.snapshot(0).unwrap();
    assert_eq!((&snapshot.meta, snapshot.data.len()), (&meta, 0));
    let mut image = Vec::new();
    let mut payload = storage.snaps.open_payload(meta.index, meta.term).unwrap();
    std::io::Read::read_to_end(&mut payload, &mut image).unwrap();
    assert_eq!(image, b"image".to_vec());
}

#[test]
fn writes_after_a_reopen_continue_the_log() {
    let Some(dir) = durable_dir("basic-continue") else { return };
    for round in 0..4u64 {
        let mut wal = Wal::open(&dir, small_config()).unwrap();
        assert_eq!(wal.last_index(), round * 30);
        let batch: Vec<_> = (round * 30 + 1..=round * 30 + 30).map(|i| entry(i, 1, 900)).collect();
        wal.append(&batch).unwrap();
        wal.sync().unwrap();
    }
    let wal = Wal::open(&dir, small_config()).unwrap();
    assert_eq!(read_log(&wal), (1..=120).map(|i| entry(i, 1, 900)).collect::<Vec<_>>());
}

#[test]
fn a_full_disk_at_segment_creation_is_an_error_not_a_signal() {
    // tmpfs refuses an allocation larger than the whole file system at once,
    // without filling it first, so it can stand in for a full disk here (this
    // test proves no durability).
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() || !wal_support::is_tmpfs(shm) {
        eprintln!("SKIPPED full-disk test: no tmpfs at /dev/shm");
        return;
    }
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let path = std::ffi::CString::new("/dev/shm").unwrap();
    // SAFETY: a NUL-terminated path and a valid out-buffer.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stats) }, 0);
    let total_bytes = stats.f_blocks as u64 * stats.f_frsize as u64;
    let segment_size_bytes = (total_bytes + (1 << 30)) / 4096 * 4096;
    if segment_size_bytes > ember::wal::SEGMENT_SIZE_BYTES_MAX {
        eprintln!("SKIPPED full-disk test: /dev/shm is larger than the largest segment");
        return;
    }
    let dir = shm.join(format!("ember-nospace-{}", std::process::id()));
    let config = WalConfig { segment_size_bytes, ..small_config() };
    let result = Wal::open(&dir, config);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Err(WalError::NoSpace { file, size_bytes }) => {
            assert_eq!(size_bytes, segment_size_bytes);
            assert!(file.to_string_lossy().contains(".wal"), "{}", file.display());
        }
        Err(other) => panic!("expected NoSpace, got {other}"),
        Ok(_) => panic!("allocating {segment_size_bytes} bytes on /dev/shm succeeded"),
    }
}

#[test]
fn a_failed_sync_is_fatal_and_poisons_the_wal() {
    let Some(dir) = durable_dir("basic-sync-failure") else { return };
    let mut wal = Wal::open(&dir, small_config()).unwrap();
    wal.append(&[entry(1, 1, 10)]).unwrap();
    wal.sync().unwrap();
    wal.append(&[entry(2, 1, 10)]).unwrap();
    wal.inject_sync_failure();
    let error = wal.sync().unwrap_err();
    assert!(matches!(error, WalError::SyncFailed { .. }) && error.is_fatal(), "{error}");
    assert!(error.to_string().contains("fatal"), "{error}");
    // No retry can pretend the data is safe, and nothing else goes on.
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    assert!(matches!(wal.append(&[entry(3, 1, 10)]), Err(WalError::Poisoned)));
    assert!(matches!(wal.set_hard_state(&HardState::default()), Err(WalError::Poisoned)));
    assert!(matches!(wal.release_to(1), Err(WalError::Poisoned)));
    drop(wal);
    // A restarted node sees at least everything that was synced.
    let wal = Wal::open(&dir, small_config()).unwrap();
    assert!(wal.last_index() >= 1);
    assert_eq!(wal.entry(1).unwrap(), entry(1, 1, 10));
}

#[test]
fn a_snapshot_on_a_segment_boundary_survives_release_and_reopen() {
    let Some(dir) = durable_dir("basic-boundary") else { return };
    let mut wal = Wal::open(&dir, small_config()).unwrap();
    let mut index = 0;
    while wal.segment_count() < 4 {
        index += 1;
        wal.append(&[entry(index, 1 + index / 40, 900)]).unwrap();
        wal.sync().unwrap();
    }
    // The first entry of the newest segment is `index`: snapshot just below.
    let boundary = index - 1;
    let term = wal.term_of(boundary).unwrap();
    wal.save_snapshot_marker(&SnapshotMeta { index: boundary, term, conf_state: conf() }).unwrap();
    let removed = wal.release_to(boundary).unwrap();
    assert_eq!(removed, 3);
    drop(wal);
    let wal = Wal::open(&dir, small_config()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (index, index));
    assert_eq!(wal.term_of(boundary), Ok(term));
    assert_eq!(wal.snapshot_meta().conf_state, conf());
}
