//! The faults around the leader that several scenarios share: kill -9 of
//! the leader, and the leader cut off from the others, each repeated until
//! the run's time is up.

use std::thread::sleep;
use std::time::Duration;

use super::scenario::Run;
use crate::support::cluster::ELECTION_TIMEOUT_MS;

/// How long a fault lasts before it is undone: long enough for an election.
pub const FAULT_MS: u64 = 2 * ELECTION_TIMEOUT_MS;
/// Healthy time between faults.
pub const CALM_MS: u64 = 500;

/// Kills the leader, lets the others elect, restarts it; until time is up
/// (at least once).
pub fn kill_leader_repeatedly(run: &mut Run) {
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

pub fn isolate_leader_repeatedly(run: &mut Run, one_way: bool) {
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
