//! Three `ember serve` processes: writes and reads at every member, leader
//! failure, catch-up by log and by snapshot, a full-cluster crash, watches
//! across a leader change, garbage on the peer port.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember::client::{Client, Config};
use ember::proto::{
    self, PutRequest, RangeRequest, Request, Response, WatchCreateRequest, WatchMessage,
};
use support::cluster::{Cluster, ELECTION_TIMEOUT_MS};

const LEADER_WAIT: Duration = Duration::from_secs(15);

fn count_prefix(client: &mut Client, prefix: &[u8], serializable: bool) -> i64 {
    let request = RangeRequest {
        key: prefix.to_vec(),
        range_end: proto::prefix_range_end(prefix),
        count_only: true,
        serializable,
        ..Default::default()
    };
    client.range(request).unwrap().count
}

fn put_batch(client: &mut Client, prefix: &str, range: std::ops::Range<usize>) {
    let requests: Vec<Request> = range
        .map(|i| {
            Request::Put(PutRequest {
                key: format!("{prefix}{i:06}").into_bytes(),
                value: vec![b'x'; 100],
                ..Default::default()
            })
        })
        .collect();
    for result in client.pipeline(&requests) {
        assert!(matches!(result, Ok(Response::Put(_))), "{result:?}");
    }
}

#[test]
fn every_member_takes_writes_and_reads_are_linearizable_everywhere() {
    let cluster = Cluster::start("rw", 3, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let mut clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    for round in 0..20 {
        for writer in 0..3 {
            let key = format!("k{round}-{writer}");
            clients[writer].put(key.as_bytes(), b"v").unwrap();
            let reader = (writer + 1 + round % 2) % 3;
            let found = clients[reader].get(key.as_bytes()).unwrap();
            assert!(found.is_some(), "{key} written at {writer} not seen at {reader}");
        }
    }
    for client in &mut clients {
        assert_eq!(count_prefix(client, b"k", false), 60);
    }
}

#[test]
fn a_killed_leader_is_replaced_and_catches_up_by_log_and_by_snapshot() {
    let mut cluster = Cluster::start("failover", 3, &["--snapshot-count", "200"]);
    let leader = cluster.wait_leader(LEADER_WAIT);
    let survivor = (leader + 1) % 3;
    let mut client = cluster.client(survivor);
    put_batch(&mut client, "a/", 0..100);

    cluster.kill(leader);
    let killed_at = Instant::now();
    // A write forwarded to the dead leader is never answered: the survivor
    // waits for its entry until the deadline rather than call it failed.
    // This client gives up on each try after half an election timeout and
    // tries again, so the loop measures when the cluster takes writes.
    let mut config = Config::new(vec![cluster.members[survivor].endpoint()]);
    config.command_timeout = Duration::from_millis(ELECTION_TIMEOUT_MS / 2);
    let mut retrying = Client::connect(config).unwrap();
    loop {
        match retrying.put(b"after", b"1") {
            Ok(_) => break,
            Err(_) => {
                assert!(
                    killed_at.elapsed() < Duration::from_millis(3 * ELECTION_TIMEOUT_MS),
                    "no write succeeded within 3 election timeouts"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // Far enough ahead (several snapshots) that the old leader needs one.
    put_batch(&mut client, "b/", 0..2000);
    let target = cluster.status(survivor).unwrap().raft_applied_index;
    cluster.spawn(leader);
    cluster.wait_applied(leader, target, Duration::from_secs(20));
    let mut rejoined = cluster.client(leader);
    assert_eq!(count_prefix(&mut rejoined, b"a/", true), 100);
    assert_eq!(count_prefix(&mut rejoined, b"b/", true), 2000);
    assert!(rejoined.get(b"after").unwrap().is_some());
}

#[test]
fn no_acknowledged_write_is_lost_when_every_member_dies() {
    let mut cluster = Cluster::start("crash", 3, &["--snapshot-count", "500"]);
    cluster.wait_leader(LEADER_WAIT);
    let mut client = Client::connect(Config::new(cluster.endpoints())).unwrap();
    put_batch(&mut client, "c/", 0..1500);
    drop(client);
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_leader(LEADER_WAIT);
    for i in 0..3 {
        let mut client = cluster.client(i);
        assert_eq!(count_prefix(&mut client, b"c/", false), 1500, "member {i}");
    }
}

#[test]
fn a_watch_sees_every_event_in_order_across_a_leader_change() {
    let mut cluster = Cluster::start("watch", 3, &[]);
    let leader = cluster.wait_leader(LEADER_WAIT);
    let watcher_member = (leader + 1) % 3;
    let writer_member = (leader + 2) % 3;
    let mut watcher = cluster.client(watcher_member);
    let request = WatchCreateRequest {
        key: b"w/".to_vec(),
        range_end: proto::prefix_range_end(b"w/"),
        ..Default::default()
    };
    let watch = watcher.watch(request).unwrap();
    let (sender, events) = mpsc::channel();
    std::thread::spawn(move || {
        for message in watch {
            let Ok(WatchMessage::Events { events, .. }) = message else { return };
            for event in events {
                if sender.send((event.kv.key, event.kv.mod_revision)).is_err() {
                    return;
                }
            }
        }
    });
    let mut client = cluster.client(writer_member);
    let mut acknowledged = Vec::new();
    for i in 0..60 {
        if i == 20 {
            cluster.kill(leader);
        }
        let key = format!("w/{i:03}").into_bytes();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match client.put(&key, b"v") {
                Ok(response) => {
                    acknowledged.push((key, response.header.revision));
                    break;
                }
                // A write of unknown outcome is retried with the same key;
                // the watch may then see the key twice at two revisions.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("write {i} failed: {e}"),
            }
        }
    }
    let mut seen: Vec<(Vec<u8>, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < acknowledged.len() || !acknowledged.iter().all(|a| seen.contains(a)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) => seen.push(event),
            Err(_) => panic!("watch saw {} of {} writes", seen.len(), acknowledged.len()),
        }
    }
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "revisions out of order or repeated");
}

#[test]
fn garbage_on_the_peer_port_is_ignored() {
    let cluster = Cluster::start("peer-garbage", 3, &[]);
    cluster.wait_leader(LEADER_WAIT);
    for member in &cluster.members {
        let mut socket = TcpStream::connect(("127.0.0.1", member.peer_port)).unwrap();
        let _ = socket.write_all(&[0x5a; 4096]);
    }
    let mut client = cluster.client(0);
    client.put(b"still", b"fine").unwrap();
    assert!(cluster.client(2).get(b"still").unwrap().is_some());
}
