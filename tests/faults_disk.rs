//! Disk fault scenarios on a killed member, under load: a torn WAL tail
//! (a record half written when the power went, after the last valid one),
//! which restart must cut away; and a flipped bit in a record mid-log, which
//! must make the member refuse to start and name the damage while the
//! cluster carries on without it.

mod faults;
mod support;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use ember::wal::parse_segment_name;
use ember::wal::record::{Parsed, RecordKind, decode_segment_header, parse_record};
use faults::scenario::{Run, run};
use support::cluster::ELECTION_TIMEOUT_MS;

/// How long a restarted member must stay up to count as started.
const STAY_UP: Duration = Duration::from_millis(1500);
/// How long a member with a damaged log may take to refuse.
const REFUSE_WITHIN: Duration = Duration::from_secs(10);

/// The newest segment of a member's WAL, with its sequence number.
fn newest_segment(data_dir: &Path) -> (PathBuf, u64) {
    let wal = data_dir.join("wal");
    fs::read_dir(&wal)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let (seq, _) = parse_segment_name(&e.file_name().to_string_lossy())?;
            Some((e.path(), seq))
        })
        .max_by_key(|(_, seq)| *seq)
        .expect("a member has a WAL segment")
}

/// (offset, kind, size) of every valid record, and where written data ends.
fn records(bytes: &[u8], seq: u64) -> (Vec<(usize, RecordKind, usize)>, usize) {
    let mut found = Vec::new();
    let header = decode_segment_header(bytes).expect("the segment header is intact");
    let mut offset = header.records_offset as usize;
    while let Parsed::Record(record) = parse_record(bytes, seq, offset) {
        found.push((offset, record.kind, record.size_bytes));
        offset += record.size_bytes;
    }
    (found, offset)
}

fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset as u64)).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

/// Garbage where the next record would start: what a record whose write
/// was cut by the power looks like. Nothing valid follows it.
fn tear_tail(data_dir: &Path) {
    let (path, seq) = newest_segment(data_dir);
    let bytes = fs::read(&path).unwrap();
    let (found, end) = records(&bytes, seq);
    assert!(!found.is_empty(), "the member wrote records");
    let room = bytes.len() - end;
    write_at(&path, end, &vec![0xa5; room.min(40)]);
}

/// Flips one bit inside an entry that recovery must replay: the middle one
/// of the entries after the last snapshot marker.
fn flip_bit_mid_log(data_dir: &Path) {
    let (path, seq) = newest_segment(data_dir);
    let bytes = fs::read(&path).unwrap();
    let (found, _) = records(&bytes, seq);
    let after_marker =
        found.iter().rposition(|r| r.1 == RecordKind::SnapshotMarker).map_or(0, |i| i + 1);
    let entries: Vec<_> =
        found[after_marker..].iter().filter(|r| r.1 == RecordKind::Normal).collect();
    assert!(entries.len() >= 3, "too few entries to damage one in the middle");
    let (offset, _, size) = *entries[entries.len() / 2];
    let at = offset + size / 2;
    write_at(&path, at, &[bytes[at] ^ 0x10]);
}

/// How far a file's modification time may lag `SystemTime::now()`.
const MTIME_SLACK: Duration = Duration::from_millis(100);

/// The side files where recovery keeps the bytes of each torn tail it cut,
/// written at `since` or later. A member that appended nothing between two
/// tears (a follower still waiting for a snapshot) has its tail torn at the
/// same offset twice, and recovery rewrites the same side file: count by
/// time, not by name.
fn torn_side_files_since(data_dir: &Path, since: SystemTime) -> usize {
    let names = fs::read_dir(data_dir.join("wal")).unwrap();
    names
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
        .filter(|e| e.metadata().unwrap().modified().unwrap() >= since)
        .count()
}

fn stays_up(run: &mut Run, i: usize) {
    let until = Instant::now() + STAY_UP;
    while Instant::now() < until {
        assert!(run.cluster.exited(i).is_none(), "member {i} exited after a torn tail");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn torn_wal_tail_is_cut_at_restart() {
    run("torn_wal_tail", 3, |run| {
        loop {
            let victim = run.rng.index(3);
            run.fault_now();
            run.cluster.kill(victim);
            tear_tail(&run.cluster.data_dir(victim));
            // File times come from the kernel's coarse clock, a few ms
            // behind this one; the previous side file is STAY_UP older.
            let restarted_at = SystemTime::now() - MTIME_SLACK;
            run.cluster.spawn(victim);
            stays_up(run, victim);
            let cut = torn_side_files_since(&run.cluster.data_dir(victim), restarted_at);
            assert_eq!(cut, 1, "the restart kept the torn bytes aside once");
            if !run.time_left() {
                break;
            }
        }
    });
}

#[test]
fn flipped_bit_mid_log_is_refused_and_named() {
    run("wal_bitflip", 3, |run| {
        sleep(Duration::from_millis(ELECTION_TIMEOUT_MS));
        let leader = run.leader();
        let victim = (leader + 1) % 3;
        run.cluster.kill(victim);
        let good = run.cluster.copy_data_dir(victim, "before-damage");
        flip_bit_mid_log(&run.cluster.data_dir(victim));
        run.cluster.spawn(victim);
        let deadline = Instant::now() + REFUSE_WITHIN;
        let status = loop {
            if let Some(status) = run.cluster.exited(victim) {
                break status;
            }
            assert!(Instant::now() < deadline, "a member with a damaged log kept running");
            sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "refusal exits with an error");
        let log = fs::read_to_string(run.cluster.dir.join(format!("n{}.log", victim + 1))).unwrap();
        let named = log.lines().rev().take(5).any(|l| l.contains("wal") || l.contains("WAL"));
        assert!(named, "the refusal names the WAL damage:\n{log}");
        // The others carry on; then the member returns on its good copy.
        while run.time_left() {
            sleep(Duration::from_millis(100));
        }
        run.cluster.kill(victim);
        run.cluster.restore_data_dir(victim, &good);
        run.cluster.spawn(victim);
        stays_up(run, victim);
    });
}
