//! Replacing a member of a three-member cluster while a member is down,
//! with real `ember serve` processes. The leader stages a new voter as a
//! learner while adding it as a voter would leave too few members
//! answering, and replaces a member that is down through a joint
//! configuration: in both cases the cluster keeps its quorum and writes go
//! on before the new member even runs. A leader killed while such a
//! replacement is in flight finishes it once restarted.

mod support;

use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::Client;
use ember::proto::RangeRequest;
use support::cli::{env_lines, run};
use support::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(15);

/// Writes `key` through member `i` with the harness's short timeouts,
/// retrying until `WAIT` runs out; whether it was acknowledged.
fn put_eventually(c: &Cluster, i: usize, key: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let acked = Client::connect(c.client_config(i))
            .and_then(|mut client| client.put(key.as_bytes(), b"v"))
            .is_ok();
        if acked {
            return true;
        }
        sleep(Duration::from_millis(100));
    }
    false
}

/// Waits until member `i` serves `key` (a serializable read of its own
/// state, so it shows what the member has applied).
fn wait_key(c: &Cluster, i: usize, key: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let request =
            RangeRequest { key: key.into(), serializable: true, ..RangeRequest::default() };
        let found = Client::connect(c.client_config(i))
            .and_then(|mut client| client.range(request))
            .is_ok_and(|r| !r.kvs.is_empty());
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "member {i} never applied {key}");
        sleep(Duration::from_millis(50));
    }
}

/// Waits until every member of a fresh cluster has published itself, as
/// the table's removal check counts published members.
fn wait_started(c: &Cluster, leader: usize, count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let members = c.client(leader).member_list(false).map(|r| r.members).unwrap_or_default();
        if members.len() == count && members.iter().all(|m| !m.client_urls.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "members never all started: {members:?}");
        sleep(Duration::from_millis(50));
    }
}

/// `ember member add NAME` through member `via`; the new member's harness
/// index and the settings it must start with.
fn member_add(c: &mut Cluster, via: usize, name: &str) -> (usize, Vec<(String, String)>) {
    let added = c.push_member(name);
    let peer_url = format!("http://127.0.0.1:{}", c.members[added].peer_port);
    let endpoint = c.members[via].endpoint();
    let out = run(&["member", "add", name, "--peer-urls", &peer_url, "--endpoints", &endpoint]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let env = env_lines(&text);
    (added, env)
}

fn member_id(c: &Cluster, i: usize) -> u64 {
    c.status(i).expect("member answers").header.member_id
}

#[test]
fn replacing_a_member_while_another_is_down_keeps_writes_going() {
    let mut c = Cluster::start("joint-other-down", 3, &[]);
    let leader = c.wait_leader(WAIT);
    wait_started(&c, leader, 3);
    let mut followers = (0..3).filter(|i| *i != leader);
    let (down, replaced) = (followers.next().unwrap(), followers.next().unwrap());
    let replaced_id = member_id(&c, replaced);
    c.stop(down);
    let (added, env) = member_add(&mut c, leader, "n4");
    // As a fourth voter, n4 would be needed for a quorum before it runs.
    assert!(put_eventually(&c, leader, "after-add"), "writes stalled once n4 was added");
    c.spawn_with_env(added, &env);
    wait_key(&c, added, "after-add");
    c.client(leader).member_remove(replaced_id).expect("remove the replaced member");
    let stopped = c.wait_exit(replaced, WAIT);
    assert_eq!(stopped.code(), Some(4), "the replaced member stops as removed");
    assert!(put_eventually(&c, leader, "after-remove"), "writes stalled after the removal");
    wait_key(&c, added, "after-remove");
    // The voters are now the leader, n4 and the member still down.
    c.resume(down);
    wait_key(&c, down, "after-remove");
    assert!(c.panics().is_empty(), "{:?}", c.panics());
}

#[test]
fn replacing_a_member_that_is_down_goes_through_a_joint_configuration() {
    let mut c = Cluster::start("joint-replaced-down", 3, &[]);
    let leader = c.wait_leader(WAIT);
    wait_started(&c, leader, 3);
    let mut followers = (0..3).filter(|i| *i != leader);
    let (down, other) = (followers.next().unwrap(), followers.next().unwrap());
    let down_id = member_id(&c, down);
    c.stop(down);
    let (added, env) = member_add(&mut c, leader, "n4");
    assert!(put_eventually(&c, leader, "after-add"), "writes stalled once n4 was added");
    c.client(leader).member_remove(down_id).expect("remove the member that is down");
    // One at a time, n4 would have to vote before the down member could go;
    // the joint configuration needs only the two members kept.
    let deadline = Instant::now() + WAIT;
    while !c.log_of(leader).contains("leaving the joint configuration") {
        assert!(Instant::now() < deadline, "no joint replacement:\n{}", c.log_of(leader));
        sleep(Duration::from_millis(50));
    }
    assert!(put_eventually(&c, leader, "replaced"), "writes stalled during the replacement");
    c.kill(down);
    c.spawn_with_env(added, &env);
    wait_key(&c, added, "replaced");
    // The voters are the leader, `other` and n4: without `other`, the
    // leader and n4 are a quorum, which they were not beside the old member.
    c.stop(other);
    assert!(put_eventually(&c, leader, "without-other"), "n4 does not vote");
    wait_key(&c, added, "without-other");
    c.resume(other);
    assert!(c.panics().is_empty(), "{:?}", c.panics());
}

#[test]
fn a_leader_killed_during_a_joint_replacement_completes_it_after_a_restart() {
    let mut c = Cluster::start("joint-leader-restart", 3, &[]);
    let leader = c.wait_leader(WAIT);
    wait_started(&c, leader, 3);
    let mut followers = (0..3).filter(|i| *i != leader);
    let (down, other) = (followers.next().unwrap(), followers.next().unwrap());
    let down_id = member_id(&c, down);
    c.stop(down);
    let (added, env) = member_add(&mut c, leader, "n4");
    assert!(put_eventually(&c, leader, "after-add"), "writes stalled once n4 was added");
    let proposed_before = c.log_of(leader).matches("RemoveNode").count();
    c.client(leader).member_remove(down_id).expect("remove the member that is down");
    // The leader proposes the joint replacement (a voter in, a voter out)
    // and dies with it in flight: entered or not, left or not.
    let deadline = Instant::now() + WAIT;
    while c.log_of(leader).matches("RemoveNode").count() == proposed_before {
        assert!(Instant::now() < deadline, "no replacement proposed:\n{}", c.log_of(leader));
        sleep(Duration::from_millis(5));
    }
    c.kill(leader);
    let before_restart = c.log_of(leader).len();
    c.spawn(leader);
    assert!(put_eventually(&c, leader, "restarted"), "writes stalled after the restart");
    c.kill(down);
    c.spawn_with_env(added, &env);
    wait_key(&c, added, "restarted");
    // The change completed: the voters are the restarted member, `other`
    // and n4, so without `other` the other two are a quorum. Had the
    // configuration stayed joint, the old half would need the removed
    // member.
    c.stop(other);
    assert!(put_eventually(&c, leader, "without-other"), "the joint configuration was not left");
    wait_key(&c, added, "without-other");
    c.resume(other);
    let after = &c.log_of(leader)[before_restart..];
    assert!(!after.contains("panicked"), "{after}");
    assert!(c.panics().is_empty(), "{:?}", c.panics());
}
