//! The cluster harness on its own: real members whose peer traffic crosses
//! the proxies, process faults, and data-directory copies.

mod faults;
mod support;

use std::time::Duration;

use ember::client::Client;
use support::cli::run;
use support::cluster::Cluster;

const LEADER_WAIT: Duration = Duration::from_secs(10);

fn put(cluster: &Cluster, i: usize, key: &str, value: &str) -> i64 {
    let mut client = Client::connect(cluster.client_config(i)).unwrap();
    client.put(key.as_bytes(), value.as_bytes()).unwrap().header.revision
}

#[test]
fn members_talk_through_the_proxies_and_an_isolated_leader_is_replaced() {
    let mut cluster = Cluster::start_behind_proxies("harness-isolate", 3, 1, Vec::new());
    let all = cluster.live();
    let leader = cluster.find_leader(&all, LEADER_WAIT).expect("a leader");
    put(&cluster, leader, "a", "1");
    cluster.isolate(&[leader], false);
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let new_leader =
        cluster.find_new_leader(&rest, leader, LEADER_WAIT).expect("the majority elects");
    put(&cluster, new_leader, "a", "2");
    cluster.heal();
    let agreed = cluster.find_leader(&all, LEADER_WAIT).expect("one leader after healing");
    assert!(rest.contains(&agreed) || agreed == leader);
    // The old leader catches up: a linearizable read there sees the write.
    let mut client = Client::connect(cluster.client_config(leader)).unwrap();
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    loop {
        match client.get(b"a") {
            Ok(Some(kv)) if kv.value == b"2" => break,
            other => assert!(std::time::Instant::now() < deadline, "old leader reads {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_stop_restart(&mut cluster);
    hashes_agree_through_the_cli(&cluster);
}

/// `ember endpoint hashkv` at one revision every member holds: one hash.
fn hashes_agree_through_the_cli(cluster: &Cluster) {
    let all = cluster.live();
    let leader = cluster.find_leader(&all, LEADER_WAIT).unwrap();
    let revision = put(cluster, leader, "c", "1");
    let endpoints = cluster.endpoints().join(",");
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    let rev = revision.to_string();
    let args = ["--endpoints", &endpoints, "endpoint", "hashkv", "--rev", &rev];
    let lines = loop {
        let output = run(&args);
        // A member still applying `revision` answers FutureRevision; retry.
        if output.status.success() {
            break String::from_utf8(output.stdout).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "hashkv failed: {output:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rows: Vec<Vec<&str>> = lines.lines().map(|l| l.split(", ").collect()).collect();
    assert_eq!(rows.len(), 3, "{lines}");
    assert!(rows.iter().all(|r| r[1] == rows[0][1] && r[2] == rev), "{lines}");
    let future = (revision + 1000).to_string();
    let output = run(&["--endpoints", &endpoints, "endpoint", "hashkv", "--rev", &future]);
    assert_eq!(output.status.code(), Some(1), "a future revision fails: {output:?}");
}

fn kill_stop_restart(cluster: &mut Cluster) {
    let all = cluster.live();
    let leader = cluster.find_leader(&all, LEADER_WAIT).unwrap();
    let follower = (leader + 1) % 3;
    cluster.stop(follower);
    assert!(cluster.status(follower).is_none(), "a stopped member does not answer");
    put(cluster, leader, "b", "1");
    cluster.resume(follower);
    cluster.kill(follower);
    let copy = cluster.copy_data_dir(follower, "copy");
    assert!(copy.read_dir().unwrap().next().is_some(), "the copy holds the member's files");
    cluster.restore_data_dir(follower, &copy);
    cluster.spawn(follower);
    let leader = cluster.find_leader(&all, LEADER_WAIT).expect("all three agree again");
    put(cluster, leader, "b", "2");
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}
