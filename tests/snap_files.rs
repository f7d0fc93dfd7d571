//! Snapshot files: atomic save, newest-valid load with CRC checks, retention,
//! and what a crash at each step of a save leaves behind.

mod wal_support;

use std::fs;

use ember::raft::{ConfState, Snapshot, SnapshotMeta};
use ember::snap::{self, SnapDir, SnapError};
use wal_support::durable_dir;

fn snapshot(index: u64, term: u64) -> Snapshot {
    let conf_state = ConfState { voters: vec![1, 2, 3], ..ConfState::default() };
    let data = (0..2000u32).map(|i| (i as u64 * index) as u8).collect();
    Snapshot { meta: SnapshotMeta { index, term, conf_state }, data }
}

#[test]
fn saved_snapshots_load_newest_first_and_only_the_newest_few_stay() {
    let Some(dir) = durable_dir("snap-retain") else { return };
    let snaps = SnapDir::open(&dir, 3).unwrap();
    assert_eq!(snaps.load_newest().unwrap(), None);
    for index in [10, 20, 30, 40, 50] {
        snaps.save(&snapshot(index, 2)).unwrap();
    }
    let kept: Vec<u64> = snaps.list().unwrap().iter().map(|(index, _, _)| *index).collect();
    assert_eq!(kept, vec![50, 40, 30]);
    assert_eq!(snaps.load_newest().unwrap(), Some(snapshot(50, 2)));
    assert_eq!(snaps.load(40, 2).unwrap(), snapshot(40, 2));
    assert!(matches!(snaps.load(20, 2), Err(SnapError::Missing { index: 20, term: 2 })));
}

#[test]
fn a_damaged_newest_snapshot_is_skipped_for_the_next_valid_one() {
    let Some(dir) = durable_dir("snap-damaged") else { return };
    let snaps = SnapDir::open(&dir, 3).unwrap();
    snaps.save(&snapshot(10, 1)).unwrap();
    let newest = snaps.save(&snapshot(20, 1)).unwrap();
    wal_support::flip_bit(&newest, 700, 5);
    assert_eq!(snaps.load_newest().unwrap(), Some(snapshot(10, 1)));
    match snaps.load(20, 1) {
        Err(SnapError::Corrupt { file, why, .. }) => {
            assert_eq!(file, newest);
            assert_eq!(why, "crc mismatch");
        }
        other => panic!("expected a corrupt verdict, got {other:?}"),
    }
    // Cut short, or filed under another name: refused as well.
    let bytes = fs::read(&newest).unwrap();
    fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(snaps.load(20, 1), Err(SnapError::Corrupt { .. })));
    let misnamed = dir.join("snap").join(snap::snap_file_name(30, 1));
    fs::write(&misnamed, snap::encode(&snapshot(10, 1))).unwrap();
    assert!(matches!(snaps.load(30, 1), Err(SnapError::Corrupt { .. })));
    assert_eq!(snaps.load_newest().unwrap(), Some(snapshot(10, 1)));
}

/// A file a crash left in the snapshot directory: name and bytes.
type LeftFile = (String, Vec<u8>);

/// Each state a power cut during `save(snapshot(20))` can leave, after an
/// earlier `save(snapshot(10))` completed: the older snapshot or the new one
/// loads, never a damaged file, and leftovers are cleaned up on open.
#[test]
fn a_crash_at_every_step_of_a_save_leaves_the_old_or_the_new_snapshot() {
    let Some(dir) = durable_dir("snap-crash") else { return };
    let old = snapshot(10, 1);
    let new = snapshot(20, 1);
    let encoded = snap::encode(&new);
    let final_name = snap::snap_file_name(20, 1);
    let temp_name = format!("{final_name}.tmp");
    let steps: Vec<(&str, Vec<LeftFile>, &Snapshot)> = vec![
        ("temp created, empty", vec![(temp_name.clone(), Vec::new())], &old),
        (
            "temp half written",
            vec![(temp_name.clone(), encoded[..encoded.len() / 2].to_vec())],
            &old,
        ),
        ("temp synced, not renamed", vec![(temp_name.clone(), encoded.clone())], &old),
        ("renamed, directory synced", vec![(final_name.clone(), encoded.clone())], &new),
    ];
    for (what, files, expected) in steps {
        let _ = fs::remove_dir_all(dir.join("snap"));
        let snaps = SnapDir::open(&dir, 3).unwrap();
        snaps.save(&old).unwrap();
        for (name, bytes) in &files {
            fs::write(dir.join("snap").join(name), bytes).unwrap();
        }
        let reopened = SnapDir::open(&dir, 3).unwrap();
        assert_eq!(reopened.load_newest().unwrap().as_ref(), Some(expected), "{what}");
        let leftovers = fs::read_dir(dir.join("snap"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0, "{what}: temp file left behind");
        // Saving again after the crash works and wins.
        reopened.save(&snapshot(30, 2)).unwrap();
        assert_eq!(reopened.load_newest().unwrap(), Some(snapshot(30, 2)), "{what}");
    }
}

#[test]
fn an_interrupted_prune_only_leaves_extra_old_files() {
    let Some(dir) = durable_dir("snap-prune") else { return };
    let snaps = SnapDir::open(&dir, 2).unwrap();
    for index in [10, 20] {
        snaps.save(&snapshot(index, 1)).unwrap();
    }
    // A crash between the rename of 30 and the prune leaves three files.
    fs::write(dir.join("snap").join(snap::snap_file_name(30, 1)), snap::encode(&snapshot(30, 1)))
        .unwrap();
    assert_eq!(snaps.load_newest().unwrap(), Some(snapshot(30, 1)));
    snaps.save(&snapshot(40, 1)).unwrap();
    let kept: Vec<u64> = snaps.list().unwrap().iter().map(|(index, _, _)| *index).collect();
    assert_eq!(kept, vec![40, 30]);
}

/// Streams `snapshot`'s payload into `snaps` in chunks of `chunk_bytes`,
/// without finishing.
fn stream(snaps: &SnapDir, snapshot: &Snapshot, chunk_bytes: usize) -> snap::SnapWriter {
    let mut writer = snaps.create(&snapshot.meta).unwrap();
    for chunk in snapshot.data.chunks(chunk_bytes) {
        writer.write(chunk).unwrap();
    }
    assert_eq!(writer.payload_bytes(), snapshot.data.len() as u64);
    writer
}

fn temp_files(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir.join("snap"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

#[test]
fn a_streamed_snapshot_is_the_same_file_as_a_saved_one() {
    let Some(dir) = durable_dir("snap-stream") else { return };
    let snaps = SnapDir::open(&dir, 3).unwrap();
    for (index, chunk_bytes) in [(10, 1), (20, 7), (30, 2000), (40, 5000)] {
        let path = stream(&snaps, &snapshot(index, 3), chunk_bytes).finish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), snap::encode(&snapshot(index, 3)), "{chunk_bytes}");
        assert_eq!(snaps.load_newest().unwrap(), Some(snapshot(index, 3)));
    }
    // An empty payload, and retention as for saved files.
    let empty = Snapshot { data: Vec::new(), ..snapshot(50, 3) };
    snaps.create(&empty.meta).unwrap().finish().unwrap();
    assert_eq!(snaps.load_newest().unwrap(), Some(empty));
    let kept: Vec<u64> = snaps.list().unwrap().iter().map(|(index, _, _)| *index).collect();
    assert_eq!(kept, vec![50, 40, 30]);
    assert!(temp_files(&dir).is_empty());
}

#[test]
fn an_aborted_or_dropped_stream_leaves_the_previous_snapshot() {
    let Some(dir) = durable_dir("snap-stream-abort") else { return };
    let snaps = SnapDir::open(&dir, 3).unwrap();
    snaps.save(&snapshot(10, 1)).unwrap();
    let writer = stream(&snaps, &snapshot(20, 1), 300);
    assert_eq!(temp_files(&dir).len(), 1);
    writer.abort().unwrap();
    assert!(temp_files(&dir).is_empty());
    drop(stream(&snaps, &snapshot(20, 1), 300));
    assert!(temp_files(&dir).is_empty());
    assert_eq!(snaps.list().unwrap().len(), 1);
    assert_eq!(snaps.load_newest().unwrap(), Some(snapshot(10, 1)));
}

/// A process killed while streaming (or after the last chunk, before the
/// rename) leaves a temp file: the next open deletes it and the previous
/// snapshot is in charge; a new stream of the same snapshot then succeeds.
#[test]
fn a_crash_during_a_stream_leaves_the_previous_snapshot_in_charge() {
    let Some(dir) = durable_dir("snap-stream-crash") else { return };
    let snaps = SnapDir::open(&dir, 3).unwrap();
    snaps.save(&snapshot(10, 1)).unwrap();
    let new = snapshot(20, 1);
    for written in [0, 1, 999, new.data.len()] {
        let mut writer = snaps.create(&new.meta).unwrap();
        writer.write(&new.data[..written]).unwrap();
        // A crash runs no destructor.
        std::mem::forget(writer);
        assert_eq!(temp_files(&dir).len(), 1, "{written}");
        let reopened = SnapDir::open(&dir, 3).unwrap();
        assert!(temp_files(&dir).is_empty(), "{written}");
        assert_eq!(reopened.load_newest().unwrap(), Some(snapshot(10, 1)), "{written}");
    }
    // A temp file of the same name is replaced by the next stream.
    std::mem::forget(stream(&snaps, &new, 64));
    stream(&snaps, &new, 64).finish().unwrap();
    assert_eq!(SnapDir::open(&dir, 3).unwrap().load_newest().unwrap(), Some(new));
}
