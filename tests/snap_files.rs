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
