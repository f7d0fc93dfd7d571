//! `ember debug wal`: what an operator sees on a clean, a torn and a corrupt
//! log, and the exit codes scripts rely on.

mod support;
mod wal_support;

use std::process::Output;

use ember::raft::{ConfState, HardState, SnapshotMeta};
use ember::wal::Wal;
use support::cli::run as ember;
use wal_support::{durable_dir, entry, segment_paths, small_config};

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn write_log(dir: &std::path::Path) {
    let mut wal = Wal::open(dir, small_config()).unwrap();
    for start in (1..=300).step_by(10) {
        wal.append(&(start..start + 10).map(|i| entry(i, 2, 300)).collect::<Vec<_>>()).unwrap();
        wal.set_hard_state(&HardState { term: 2, vote: 1, commit: start - 1 }).unwrap();
        wal.sync().unwrap();
    }
}

#[test]
fn a_clean_log_lists_every_record_and_says_clean() {
    let Some(dir) = durable_dir("debug-clean") else { return };
    write_log(&dir);
    let output = ember(&["debug", "wal", dir.to_str().unwrap()]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert_eq!(shown.lines().filter(|l| l.contains(" entry ")).count(), 300, "{shown}");
    assert!(shown.contains("hardstate") && shown.contains("seal") && shown.contains("pad"));
    assert!(shown.contains("entries 1..=300"), "{shown}");
    assert!(shown.contains("verdict: CLEAN"), "{shown}");
}

#[test]
fn spares_and_foreign_files_are_named_as_what_a_start_does_with_them() {
    let Some(dir) = durable_dir("debug-spares") else { return };
    let mut wal = Wal::open(&dir, small_config()).unwrap();
    for start in (1..=300).step_by(10) {
        wal.append(&(start..start + 10).map(|i| entry(i, 2, 700)).collect::<Vec<_>>()).unwrap();
        wal.set_hard_state(&HardState { term: 2, vote: 1, commit: start + 9 }).unwrap();
        wal.sync().unwrap();
    }
    let conf_state = ConfState { voters: vec![1], ..ConfState::default() };
    wal.save_snapshot_marker(&SnapshotMeta { index: 290, term: 2, conf_state }).unwrap();
    assert!(wal.release_to(290).unwrap() > 0);
    assert!(wal.spare_count() > 0);
    drop(wal);
    std::fs::write(dir.join("wal").join("notes.txt"), b"an operator's").unwrap();
    let output = ember(&["debug", "wal", dir.to_str().unwrap()]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    let others: Vec<&str> = shown.lines().filter(|l| l.starts_with("other file:")).collect();
    let spares = others.iter().filter(|l| l.contains(".spare (a released segment kept")).count();
    assert_eq!(spares, small_config().spare_segments_max, "{shown}");
    assert!(others.iter().any(|l| l.contains("notes.txt (not the WAL's")), "{shown}");
    assert!(shown.contains("verdict: CLEAN"), "{shown}");
}

#[test]
fn a_torn_tail_is_shown_and_nothing_is_repaired() {
    let Some(dir) = durable_dir("debug-torn") else { return };
    write_log(&dir);
    let last = segment_paths(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end - 40..=end].fill(0xee);
    std::fs::write(&last, &bytes).unwrap();
    let output = ember(&["debug", "wal", dir.to_str().unwrap()]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(shown.contains("verdict: TORN TAIL"), "{shown}");
    assert!(shown.contains("BAD"), "{shown}");
    assert_eq!(std::fs::read(&last).unwrap(), bytes, "debug must not repair");
}

#[test]
fn corruption_names_file_and_offset_and_exits_1() {
    let Some(dir) = durable_dir("debug-corrupt") else { return };
    write_log(&dir);
    let first = segment_paths(&dir).remove(0);
    wal_support::flip_bit(&first, 4096 + 200, 0);
    let output = ember(&["debug", "wal", dir.to_str().unwrap()]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    let name = first.file_name().unwrap().to_str().unwrap();
    let verdict = shown.lines().find(|l| l.starts_with("verdict: REFUSE")).expect(&shown);
    assert!(verdict.contains(name) && verdict.contains("offset"), "{verdict}");
    assert!(shown.contains("after damage"), "{shown}");
    assert!(shown.contains("not replayed"), "later segments are still listed: {shown}");
}

#[test]
fn a_missing_directory_fails_and_a_bad_command_line_is_usage() {
    let output = ember(&["debug", "wal", "/nonexistent/ember"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(ember(&["debug", "snapshots"]).status.code(), Some(2));
    assert_eq!(ember(&["debug"]).status.code(), Some(2));
}
