//! Leases on real `ember serve` processes: grant, attach, revoke (seen by a
//! watch), expiry without keep-alive, keep-alive at the leader and through a
//! follower, a leader killed with -9, a restart from a snapshot, unknown
//! leases and the lease cap.
//!
//! Time bounds: the harness runs with a 1 s election timeout, so the
//! minimum TTL is 2 s; an expired lease must be gone within its TTL plus
//! `EXPIRY_SLACK` (a few election timeouts: ticks, the revoke's commit, and
//! an election when a leader died).

mod support;

use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, ClientError};
use ember::proto::{self, ErrorCode, PutRequest, WatchCreateRequest, WatchMessage};
use support::cluster::{Cluster, ELECTION_TIMEOUT_MS};

const LEADER_WAIT: Duration = Duration::from_secs(15);
const EXPIRY_SLACK: Duration = Duration::from_millis(4 * ELECTION_TIMEOUT_MS);

fn put_leased(client: &mut Client, key: &[u8], lease: i64) -> Result<(), ClientError> {
    let request =
        PutRequest { key: key.to_vec(), value: b"v".to_vec(), lease, ..Default::default() };
    client.put_with(request).map(|_| ())
}

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> Option<ErrorCode> {
    result.expect_err("an error").code()
}

/// Waits until `key` is gone (true) or `within` passes (false).
fn gone_within(client: &mut Client, key: &[u8], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if client.get(key).unwrap().is_none() {
            return true;
        }
        sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn grant_attach_revoke_and_a_watch_sees_the_deletes() {
    let cluster = Cluster::start("lease-revoke", 1, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let mut client = cluster.client(0);
    let granted = client.lease_grant(60, 0).unwrap();
    assert!(granted.id > 0, "the server picks a positive id: {granted:?}");
    assert_eq!(granted.ttl_secs, 60);
    put_leased(&mut client, b"lk/a", granted.id).unwrap();
    put_leased(&mut client, b"lk/b", granted.id).unwrap();
    let ttl = client.lease_time_to_live(granted.id, true).unwrap();
    assert_eq!(ttl.granted_ttl_secs, 60);
    assert!((55..=60).contains(&ttl.ttl_secs), "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"lk/a".to_vec(), b"lk/b".to_vec()]);
    assert_eq!(client.lease_leases().unwrap().leases, vec![granted.id]);
    assert_eq!(client.get(b"lk/a").unwrap().unwrap().lease, granted.id);

    let watch = WatchCreateRequest {
        key: b"lk/".to_vec(),
        range_end: proto::prefix_range_end(b"lk/"),
        ..Default::default()
    };
    let mut stream = client.watch(watch).unwrap();
    client.lease_revoke(granted.id).unwrap();
    let Some(Ok(WatchMessage::Events { events, .. })) = stream.next() else {
        panic!("no events after the revoke")
    };
    assert_eq!(events.len(), 2, "both deletes in one revision: {events:?}");
    assert!(events.iter().all(|e| e.kind == proto::EventKind::Delete));
    assert_eq!(events[0].kv.mod_revision, events[1].kv.mod_revision);
    assert!(client.get(b"lk/a").unwrap().is_none());
    assert_eq!(client.lease_time_to_live(granted.id, false).unwrap().ttl_secs, -1);
    assert_eq!(code(client.lease_revoke(granted.id)), Some(ErrorCode::LeaseNotFound));
    assert_eq!(code(client.lease_keep_alive(granted.id)), Some(ErrorCode::LeaseNotFound));
}

#[test]
fn unknown_leases_duplicates_short_ttls_and_the_cap_are_refused() {
    let cluster = Cluster::start("lease-errors", 1, &["--max-leases", "3"]);
    cluster.wait_leader(LEADER_WAIT);
    let mut client = cluster.client(0);
    assert_eq!(code(put_leased(&mut client, b"k", 0x5eed)), Some(ErrorCode::LeaseNotFound));
    assert!(client.get(b"k").unwrap().is_none(), "the refused put changed nothing");
    let txn = proto::TxnRequest {
        success: vec![proto::RequestOp::Put(PutRequest {
            key: b"t".to_vec(),
            lease: 0x5eed,
            ..Default::default()
        })],
        ..Default::default()
    };
    assert_eq!(code(client.txn(txn)), Some(ErrorCode::LeaseNotFound));

    // The minimum TTL is ceil(1.5 × 1 s) = 2 s.
    assert_eq!(client.lease_grant(1, 0x10).unwrap().ttl_secs, 2);
    assert_eq!(code(client.lease_grant(30, 0x10)), Some(ErrorCode::LeaseExists));
    let huge = client.lease_grant(9_000_000_001, 0x11);
    assert_eq!(code(huge), Some(ErrorCode::LeaseTtlTooLarge));
    client.lease_grant(30, 0x11).unwrap();
    client.lease_grant(30, 0x12).unwrap();
    assert_eq!(code(client.lease_grant(30, 0x13)), Some(ErrorCode::TooManyLeases));
    client.lease_revoke(0x12).unwrap();
    client.lease_grant(30, 0x13).unwrap();
    let mut leases = client.lease_leases().unwrap().leases;
    leases.sort_unstable();
    assert!(leases.ends_with(&[0x11, 0x13]) && leases.len() == 3, "{leases:?}");
}

#[test]
fn a_lease_expires_without_keep_alive_and_lives_with_it() {
    let cluster = Cluster::start("lease-expiry", 1, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let mut client = cluster.client(0);
    let dying = client.lease_grant(2, 0).unwrap().id;
    let kept = client.lease_grant(2, 0).unwrap().id;
    put_leased(&mut client, b"dying", dying).unwrap();
    put_leased(&mut client, b"kept", kept).unwrap();
    let granted_at = Instant::now();
    let mut kept_alive_until = granted_at;
    while granted_at.elapsed() < Duration::from_secs(2) + EXPIRY_SLACK {
        assert_eq!(client.lease_keep_alive(kept).unwrap().ttl_secs, 2);
        kept_alive_until = Instant::now();
        if client.get(b"dying").unwrap().is_none() {
            break;
        }
        sleep(Duration::from_millis(300));
    }
    assert!(client.get(b"dying").unwrap().is_none(), "lease without keep-alive still there");
    assert!(granted_at.elapsed() >= Duration::from_millis(1900), "expired before its TTL");
    // Keep the other alive a while longer, past two TTLs.
    while kept_alive_until.duration_since(granted_at) < Duration::from_secs(5) {
        client.lease_keep_alive(kept).unwrap();
        kept_alive_until = Instant::now();
        sleep(Duration::from_millis(300));
    }
    assert!(client.get(b"kept").unwrap().is_some(), "kept-alive lease expired");
    assert!(gone_within(&mut client, b"kept", Duration::from_secs(2) + EXPIRY_SLACK));
    assert!(client.lease_leases().unwrap().leases.is_empty());
}

#[test]
fn leases_survive_a_restart_from_a_snapshot() {
    let mut cluster = Cluster::start("lease-snap", 1, &["--snapshot-count", "5"]);
    cluster.wait_leader(LEADER_WAIT);
    let mut client = cluster.client(0);
    client.lease_grant(600, 0x77).unwrap();
    put_leased(&mut client, b"snap/k", 0x77).unwrap();
    for i in 0..20 {
        client.put(format!("filler{i}").as_bytes(), b"x").unwrap();
    }
    let applied = cluster.status(0).unwrap().raft_applied_index;
    cluster.wait_applied(0, applied, LEADER_WAIT);
    // Let the snapshot file land, then cut the node off without warning.
    sleep(Duration::from_millis(500));
    drop(client);
    cluster.kill(0);
    let snaps = std::fs::read_dir(cluster.dir.join("n1").join("snap")).unwrap().count();
    assert!(snaps > 1, "a snapshot beyond the bootstrap one was written");
    cluster.spawn(0);
    cluster.wait_leader(LEADER_WAIT);
    let mut client = cluster.client(0);
    let ttl = client.lease_time_to_live(0x77, true).unwrap();
    assert_eq!(ttl.granted_ttl_secs, 600);
    assert!(ttl.ttl_secs > 590, "the restarted leader renewed it: {ttl:?}");
    assert_eq!(ttl.keys, vec![b"snap/k".to_vec()]);
    assert_eq!(client.lease_leases().unwrap().leases, vec![0x77]);
    assert_eq!(code(client.lease_grant(5, 0x77)), Some(ErrorCode::LeaseExists));
}

#[test]
fn keep_alive_through_a_follower_and_a_leader_killed_with_sigkill() {
    let mut cluster = Cluster::start("lease-failover", 3, &[]);
    let leader = cluster.wait_leader(LEADER_WAIT);
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut at_follower = cluster.client(follower);
    let id = at_follower.lease_grant(3, 0).unwrap().id;
    put_leased(&mut at_follower, b"fo/k", id).unwrap();
    // Twice the TTL of keep-alives sent to a follower only.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        assert_eq!(at_follower.lease_keep_alive(id).unwrap().ttl_secs, 3);
        sleep(Duration::from_millis(500));
    }
    assert!(at_follower.get(b"fo/k").unwrap().is_some(), "keep-alive via a follower failed");

    // Then past the TTL at the leader only: those renewals stay in the
    // leader's memory, so the followers' deadlines are long past when it dies.
    let mut at_old_leader = cluster.client(leader);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        assert_eq!(at_old_leader.lease_keep_alive(id).unwrap().ttl_secs, 3);
        sleep(Duration::from_millis(500));
    }
    drop(at_old_leader);
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new_leader = cluster.wait_leader(LEADER_WAIT);
    let mut at_leader = cluster.client(new_leader);
    let ttl = at_leader.lease_time_to_live(id, false).unwrap();
    let since_kill = killed_at.elapsed().as_secs() as i64;
    assert!(ttl.ttl_secs >= 3 - since_kill, "TTL renewed on the new leader: {ttl:?}");
    assert_eq!(ttl.granted_ttl_secs, 3);
    assert!(at_leader.get(b"fo/k").unwrap().is_some(), "lease lost with the old leader");
    // Without keep-alives it still expires, on the new leader's clock.
    assert!(gone_within(&mut at_leader, b"fo/k", Duration::from_secs(3) + EXPIRY_SLACK));
    let mut at_other = cluster.client(if new_leader == other { follower } else { other });
    assert!(gone_within(&mut at_other, b"fo/k", EXPIRY_SLACK));
    assert_eq!(at_other.lease_time_to_live(id, false).unwrap().ttl_secs, -1);
}
