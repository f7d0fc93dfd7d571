//! Fault scenarios around the leader: kill -9 of the leader, repeatedly, and
//! the leader cut off from the majority, both ways and one way; on three
//! members and on five (there also with a follower cut off beside the
//! leader). Each runs under the recorder's load and the checks of
//! `faults::scenario`. One more, without load: a write whose leader died
//! after replicating it is answered success.

mod faults;
mod support;

use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use ember::client::Client;
use ember::proto::RangeRequest;
use faults::leader::{CALM_MS, FAULT_MS, isolate_leader_repeatedly, kill_leader_repeatedly};
use faults::scenario::run;
use support::cluster::Cluster;
use support::proxy::LinkFaults;

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

/// A write taken by a follower, replicated by the leader to the other
/// follower, and then the leader dies before the taker hears of it: the
/// new leader holds the entry and commits it, and the taker, which kept
/// waiting through the change of leader, answers success. Told "failed",
/// its client would believe a write undone that took effect.
#[test]
fn a_write_that_outlives_its_leader_is_answered_success() {
    let mut cluster = Cluster::start_behind_proxies("write_outlives_leader", 3, 19, Vec::new());
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let taker = (leader + 1) % 3;
    let witness = (leader + 2) % 3;
    // Nothing from the leader reaches the taker: it never sees the entry
    // nor that it committed, so its client still waits when the leader
    // dies. The taker's own messages (the forwarded write) get through.
    cluster.link(leader, taker, LinkFaults { blackhole: true, ..LinkFaults::default() });
    let mut config = cluster.client_config(taker);
    config.command_timeout = Duration::from_secs(30);
    let writer = thread::spawn(move || Client::connect(config)?.put(b"outlives", b"1"));
    wait_applied_at(&cluster, witness, b"outlives", Duration::from_secs(10));
    assert!(!writer.is_finished(), "the taker answered before the leader died");
    cluster.kill(leader);
    cluster.heal();
    let result = writer.join().unwrap();
    assert!(result.is_ok(), "the write applied but its client was told {result:?}");
    let mut taker_client = cluster.client(taker);
    assert_eq!(taker_client.get(b"outlives").unwrap().unwrap().value, b"1");
}

/// Waits until member `i` has applied a write of `key`, read locally.
fn wait_applied_at(cluster: &Cluster, i: usize, key: &[u8], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut client = cluster.client(i);
    let request = RangeRequest { key: key.to_vec(), serializable: true, ..Default::default() };
    while client.range(request.clone()).map_or(true, |r| r.kvs.is_empty()) {
        assert!(Instant::now() < deadline, "member {i} never applied {key:?}");
        sleep(Duration::from_millis(20));
    }
}
