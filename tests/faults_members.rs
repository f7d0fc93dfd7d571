//! Fault scenarios on followers, minorities (two of five), frozen leaders
//! (of three and of five) and flaky links, under the recorder's load and the
//! checks of `faults::scenario`.

mod faults;
mod support;

use std::thread::sleep;
use std::time::Duration;

use faults::scenario::{Run, run};
use support::cluster::{Cluster, ELECTION_TIMEOUT_MS};
use support::proxy::LinkFaults;

const FAULT_MS: u64 = 2 * ELECTION_TIMEOUT_MS;
const CALM_MS: u64 = 500;

/// Runs `step` until the scenario's time is up, at least once.
fn repeat(run: &mut Run, mut step: impl FnMut(&mut Run)) {
    loop {
        step(run);
        sleep(Duration::from_millis(CALM_MS));
        if !run.time_left() {
            break;
        }
    }
}

fn followers(run: &Run, leader: usize) -> Vec<usize> {
    run.cluster.live().into_iter().filter(|&i| i != leader).collect()
}

/// Scenario `name` on `size` members, over and over: `victims` picks
/// members, `fault` hits each of them, and `FAULT_MS` later `recover`
/// brings each back.
fn process_faults(
    name: &str,
    size: usize,
    mut victims: impl FnMut(&mut Run) -> Vec<usize>,
    fault: fn(&mut Cluster, usize),
    recover: fn(&mut Cluster, usize),
) {
    run(name, size, |run| {
        repeat(run, |run| {
            let victims = victims(run);
            run.fault_now();
            for &i in &victims {
                fault(run.cluster, i);
            }
            sleep(Duration::from_millis(FAULT_MS));
            for &i in &victims {
                recover(run.cluster, i);
            }
        })
    });
}

fn leader(run: &mut Run) -> Vec<usize> {
    vec![run.leader()]
}

#[test]
fn kill_follower() {
    let follower = |run: &mut Run| {
        let leader = run.leader();
        vec![followers(run, leader)[run.rng.index(2)]]
    };
    process_faults("kill_follower", 3, follower, Cluster::kill, Cluster::spawn);
}

#[test]
fn kill_minority_of_five() {
    // Two of five, the leader among them half of the time.
    let minority = |run: &mut Run| {
        let leader = run.leader();
        let mut victims = followers(run, leader);
        let first = victims.remove(run.rng.index(4));
        let second = if run.rng.chance(50) { leader } else { victims[0] };
        vec![first, second]
    };
    process_faults("kill_minority_of_five", 5, minority, Cluster::kill, Cluster::spawn);
}

#[test]
fn stop_leader_longer_than_election_timeout() {
    process_faults("sigstop_leader", 3, leader, Cluster::stop, Cluster::resume);
}

#[test]
fn follower_isolated_then_rejoined_does_not_disrupt() {
    run("isolate_follower", 3, |run| {
        repeat(run, |run| {
            let leader = run.leader();
            let follower = followers(run, leader)[0];
            let term = run.cluster.status(leader).map(|s| s.raft_term);
            run.cluster.isolate(&[follower], false);
            sleep(Duration::from_millis(FAULT_MS));
            run.cluster.heal();
            sleep(Duration::from_millis(ELECTION_TIMEOUT_MS));
            // Pre-vote: the returning follower cannot win votes from members
            // that hear a leader, so the leader and its term stay.
            let after = run.cluster.status(leader).map(|s| s.raft_term);
            assert_eq!(after, term, "the rejoining follower disrupted the leader");
        })
    });
}

#[test]
fn lossy_and_slow_links() {
    run("lossy_slow_links", 3, |run| {
        let members = run.cluster.members.len();
        for from in 0..members {
            for to in (0..members).filter(|&to| to != from) {
                let faults = LinkFaults {
                    blackhole: false,
                    drop_per_million: run.rng.below(200_000) as u32,
                    delay_ms: run.rng.below(50),
                };
                run.cluster.link(from, to, faults);
            }
        }
        while run.time_left() {
            sleep(Duration::from_millis(100));
        }
    });
}

#[test]
fn links_cut_and_healed_in_random_order() {
    run("random_cuts", 3, |run| {
        let members = run.cluster.members.len();
        let hole = LinkFaults { blackhole: true, ..LinkFaults::default() };
        while run.time_left() {
            let from = run.rng.index(members);
            let to = (from + 1 + run.rng.index(members - 1)) % members;
            if run.rng.chance(60) {
                run.cluster.link(from, to, hole);
            } else {
                run.cluster.link(from, to, LinkFaults::default());
                run.cluster.proxy(to).cut(from);
            }
            sleep(Duration::from_millis(run.rng.below(400)));
        }
    });
}

#[test]
fn stop_leader_of_five_longer_than_election_timeout() {
    process_faults("sigstop_leader_of_five", 5, leader, Cluster::stop, Cluster::resume);
}
