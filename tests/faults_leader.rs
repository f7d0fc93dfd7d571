//! Fault scenarios around the leader: kill -9 of the leader, repeatedly, and
//! the leader cut off from the majority, both ways and one way. Each runs
//! under the recorder's load and the checks of `faults::scenario`.

mod faults;

use std::thread::sleep;
use std::time::Duration;

use faults::cluster::ELECTION_TIMEOUT_MS;
use faults::scenario::{Run, run};

/// How long a fault lasts before it is undone: long enough for an election.
const FAULT_MS: u64 = 2 * ELECTION_TIMEOUT_MS;
/// Healthy time between faults.
const CALM_MS: u64 = 500;

/// Kills the leader, lets the others elect, restarts it; until time is up
/// (at least once).
fn kill_leader_repeatedly(run: &mut Run) {
    loop {
        let leader = run.leader();
        run.fault_now();
        run.cluster.kill(leader);
        sleep(Duration::from_millis(FAULT_MS));
        run.cluster.spawn(leader);
        sleep(Duration::from_millis(CALM_MS));
        if !run.time_left() {
            break;
        }
    }
}

fn isolate_leader_repeatedly(run: &mut Run, one_way: bool) {
    loop {
        let leader = run.leader();
        run.fault_now();
        run.cluster.isolate(&[leader], one_way);
        sleep(Duration::from_millis(FAULT_MS));
        run.cluster.heal();
        sleep(Duration::from_millis(CALM_MS));
        if !run.time_left() {
            break;
        }
    }
}

#[test]
fn kill_leader() {
    run("kill_leader", 3, kill_leader_repeatedly);
}

#[test]
fn partition_leader() {
    run("partition_leader", 3, |run| isolate_leader_repeatedly(run, false));
}

#[test]
fn partition_leader_one_way() {
    run("partition_leader_one_way", 3, |run| isolate_leader_repeatedly(run, true));
}
