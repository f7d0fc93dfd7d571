//! The fault scenarios with peer TLS on: kill -9 of the leader, and the
//! leader cut off from the others, repeatedly, on three members whose peer
//! links are TLS with certificates made by openssl. The proxies in front of
//! the peer ports cannot read TLS; they tell the links apart by the member
//! process that dialed each connection (`support/proxy.rs`). The checks
//! are `faults::scenario`'s, unchanged: a linearizable history, no
//! acknowledged write lost, the same keyspace and hash on every member,
//! ordered watches, recovery within the bound, no panic.

mod faults;
mod support;

use faults::leader::{isolate_leader_repeatedly, kill_leader_repeatedly};
use faults::scenario::{Options, run_with_peer_tls};

#[test]
fn kill_leader_under_peer_tls() {
    run_with_peer_tls("tls_kill_leader", 3, Options::default(), kill_leader_repeatedly);
}

#[test]
fn partition_leader_under_peer_tls() {
    run_with_peer_tls("tls_partition_leader", 3, Options::default(), |run| {
        isolate_leader_repeatedly(run, false)
    });
}

#[test]
fn partition_leader_one_way_under_peer_tls() {
    run_with_peer_tls("tls_partition_leader_one_way", 3, Options::default(), |run| {
        isolate_leader_repeatedly(run, true)
    });
}
