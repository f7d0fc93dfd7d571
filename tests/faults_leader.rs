//! Fault scenarios around the leader: kill -9 of the leader, repeatedly, and
//! the leader cut off from the majority, both ways and one way; on three
//! members and on five (there also with a follower cut off beside the
//! leader). Each runs under the recorder's load and the checks of
//! `faults::scenario`.

mod faults;
mod support;

use std::thread::sleep;
use std::time::Duration;

use faults::scenario::{Run, run};
use support::cluster::ELECTION_TIMEOUT_MS;

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

#[test]
fn kill_leader_of_five() {
    run("kill_leader_of_five", 5, kill_leader_repeatedly);
}

/// The leader and one follower cut off from the other three (2|3): the
/// three elect, the two must not commit.
#[test]
fn partition_leader_and_one_of_five() {
    run("partition_two_of_five", 5, |run| {
        loop {
            let leader = run.leader();
            let partner = (leader + 1 + run.rng.index(4)) % 5;
            run.fault_now();
            run.cluster.isolate(&[leader, partner], false);
            sleep(Duration::from_millis(FAULT_MS));
            run.cluster.heal();
            sleep(Duration::from_millis(CALM_MS));
            if !run.time_left() {
                break;
            }
        }
    });
}
