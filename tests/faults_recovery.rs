//! Fault scenarios about getting state back: every member killed at once,
//! compaction running through kills and partitions with watches open, and
//! a follower cut off until it needs a snapshot, then killed while the
//! snapshot arrives.

mod faults;
mod support;

use std::fs;
use std::thread::sleep;
use std::time::Duration;

use faults::scenario::{Options, Run, run, run_with};
use support::cluster::ELECTION_TIMEOUT_MS;

const FAULT_MS: u64 = 2 * ELECTION_TIMEOUT_MS;
const CALM_MS: u64 = 500;
/// Rounds of the snapshot scenario before it must have sent one.
const ROUNDS_MAX: u32 = 4;

#[test]
fn kill_every_member_at_once() {
    run("kill_all", 3, |run| {
        loop {
            run.fault_now();
            for i in 0..3 {
                run.cluster.kill(i);
            }
            sleep(Duration::from_millis(200));
            for i in 0..3 {
                run.cluster.spawn(i);
            }
            sleep(Duration::from_millis(FAULT_MS));
            if !run.time_left() {
                break;
            }
        }
    });
}

/// Kills the leader and partitions the next one in turn, while the
/// recorder's compactor keeps compacting and its watchers stay open.
#[test]
fn compaction_during_kills_and_partitions() {
    let options = Options { compact: true, ..Options::default() };
    run_with("compaction_faults", 3, options, |run| {
        let mut kill = true;
        loop {
            let leader = run.leader();
            run.fault_now();
            if kill {
                run.cluster.kill(leader);
            } else {
                run.cluster.isolate(&[leader], false);
            }
            sleep(Duration::from_millis(FAULT_MS));
            run.cluster.heal();
            if kill {
                run.cluster.spawn(leader);
            }
            kill = !kill;
            sleep(Duration::from_millis(CALM_MS));
            if !run.time_left() {
                break;
            }
        }
    });
}

/// Snapshots every few hundred entries, so a follower cut off for a couple
/// of seconds falls behind the leader's log and is sent a snapshot; it is
/// killed shortly after the link heals, mid-transfer or mid-apply, and must
/// come back whole.
#[test]
fn follower_needs_a_snapshot_and_is_killed_during_it() {
    let options = Options { snapshot_count: 200, ..Options::default() };
    run_with("snapshot_kill", 3, options, |run| {
        let restored = "restored the store from the snapshot";
        // One round on a loaded machine once ended with no snapshot
        // restored anywhere (the cause is not known: its logs were not
        // kept whole), so rounds go on past the time until one was, a few
        // at most; a failure prints what every member logged about
        // leaders, starts and snapshot transfers.
        let mut rounds = 0;
        loop {
            let leader = run.leader();
            let follower = (leader + 1 + run.rng.index(2)) % 3;
            run.cluster.isolate(&[follower], false);
            sleep(Duration::from_millis(FAULT_MS));
            run.cluster.heal();
            sleep(Duration::from_millis(run.rng.below(150)));
            run.cluster.kill(follower);
            run.cluster.spawn(follower);
            sleep(Duration::from_millis(FAULT_MS));
            rounds += 1;
            let sent = member_logs(run).contains(restored);
            if !run.time_left() && (sent || rounds >= ROUNDS_MAX) {
                break;
            }
        }
        let logs = member_logs(run);
        let story = snapshot_story(&logs);
        assert!(
            logs.contains(restored),
            "no follower was sent a snapshot in {rounds} rounds:\n{story}"
        );
    });
}

fn member_logs(run: &Run) -> String {
    (1..=3)
        .map(|n| fs::read_to_string(run.cluster.dir.join(format!("n{n}.log"))).unwrap())
        .collect()
}

/// The lines of `logs` that tell how snapshots travelled: short enough to
/// survive a truncated CI log, unlike the whole logs.
fn snapshot_story(logs: &str) -> String {
    let marks = [
        "starting at applied",
        "leader is now",
        "received a snapshot",
        "snapshot stream",
        "receive the snapshot",
        "snapshot from",
        "snapshot at",
        "restored",
    ];
    logs.lines()
        .filter(|line| marks.iter().any(|m| line.contains(m)))
        .filter(|line| !line.contains("WAL segments released"))
        .collect::<Vec<_>>()
        .join("\n")
}
