//! Snapshots built while writes go on, with real `ember serve` processes:
//! several snapshots under full-speed writes and a restart from them, a
//! follower brought back by a snapshot built this way, and kill -9 while a
//! snapshot job runs; and a follower that receives a snapshot several times
//! larger than what a transfer may hold in memory. `EMBER_TEST_SNAPSHOT_WRITES`
//! scales the writes of the first test (default 6,000).

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::Client;
use ember::proto::{self, PutRequest, RangeRequest, Request, Response};
use ember::server::SNAPSHOT_TRANSFER_BYTES_MAX;
use ember::snap::SnapDir;
use support::cluster::Cluster;

const LEADER_WAIT: Duration = Duration::from_secs(15);

fn key(prefix: &str, i: usize) -> Vec<u8> {
    format!("{prefix}{i:08}").into_bytes()
}

fn value(i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{i}:").into_bytes();
    v.resize(len, b'v');
    v
}

/// Puts `count` keys from `first` in pipelined batches; returns the ones
/// acknowledged. Stops early when `stop` is set or a put fails.
fn put_keys(
    client: &mut Client,
    prefix: &str,
    first: usize,
    count: usize,
    value_len: usize,
    stop: &AtomicBool,
) -> Vec<usize> {
    let mut acked = Vec::new();
    for batch in (first..first + count).step_by(200) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let ids: Vec<usize> = (batch..(batch + 200).min(first + count)).collect();
        let requests: Vec<Request> = ids
            .iter()
            .map(|&i| {
                let (key, value) = (key(prefix, i), value(i, value_len));
                Request::Put(PutRequest { key, value, ..Default::default() })
            })
            .collect();
        let results = client.pipeline(&requests);
        let failed = results.iter().any(|r| !matches!(r, Ok(Response::Put(_))));
        acked.extend(ids.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(i, _)| *i));
        if failed {
            break;
        }
    }
    acked
}

/// Every key under `prefix` with its value, read in pages that fit a frame.
fn read_all(client: &mut Client, prefix: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let range_end = proto::prefix_range_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut all = Vec::new();
    loop {
        let request = RangeRequest {
            key: from,
            range_end: range_end.clone(),
            limit: 200,
            ..Default::default()
        };
        let page = client.range(request).unwrap();
        let Some(last) = page.kvs.last() else { return all };
        from = [last.key.as_slice(), &[0]].concat();
        all.extend(page.kvs.into_iter().map(|kv| (kv.key, kv.value)));
        if !page.more {
            return all;
        }
    }
}

fn assert_all_present(client: &mut Client, prefix: &str, acked: &[usize], value_len: usize) {
    let found: BTreeSet<(Vec<u8>, Vec<u8>)> = read_all(client, prefix).into_iter().collect();
    for &i in acked {
        let pair = (key(prefix, i), value(i, value_len));
        assert!(found.contains(&pair), "acknowledged write {i} lost");
    }
}

fn member_log(cluster: &Cluster, i: usize) -> String {
    fs::read_to_string(cluster.dir.join(format!("{}.log", cluster.members[i].name)))
        .unwrap_or_default()
}

/// Lines of a member's log that report a finished snapshot job.
fn snapshots_taken(cluster: &Cluster, i: usize) -> usize {
    member_log(cluster, i).lines().filter(|l| l.contains("slices, the longest")).count()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn snapshots_taken_under_full_speed_writes_restore_every_acknowledged_write() {
    let writes: usize = std::env::var("EMBER_TEST_SNAPSHOT_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
    let mut node = Cluster::start("snap-live", 1, &["--snapshot-count", "300"]);
    node.wait_leader(LEADER_WAIT);
    let mut client = node.client(0);
    let never = AtomicBool::new(false);
    // A base large enough that each image takes many slices.
    let base = put_keys(&mut client, "base/", 0, 2_000, 1024, &never);
    assert_eq!(base.len(), 2_000);
    let acked = put_keys(&mut client, "live/", 0, writes, 64, &never);
    assert_eq!(acked.len(), writes);
    wait_for("three snapshots", Duration::from_secs(20), || snapshots_taken(&node, 0) >= 3);
    drop(client);
    node.kill(0);
    node.spawn(0);
    node.wait_leader(LEADER_WAIT);
    let log = member_log(&node, 0);
    let restart = log.lines().filter(|l| l.contains("starting at applied index")).nth(1).unwrap();
    assert!(!restart.contains("starting at applied index 1,"), "restarted from no snapshot");
    let mut client = node.client(0);
    assert_all_present(&mut client, "base/", &base, 1024);
    assert_all_present(&mut client, "live/", &acked, 64);
}

#[test]
fn a_follower_far_behind_gets_a_snapshot_built_while_writes_go_on() {
    let mut cluster = Cluster::start("snap-follower", 3, &["--snapshot-count", "1000"]);
    let leader = cluster.wait_leader(LEADER_WAIT);
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let mut client = cluster.client(leader);
    let never = AtomicBool::new(false);
    // Large values fill WAL segments (16 MiB) fast, so the leader releases
    // the entries the follower misses and has to send a snapshot; the
    // compactions keep the image small.
    let mut acked = Vec::new();
    for round in 0..6 {
        acked.extend(put_keys(&mut client, "f/", round * 2_000, 2_000, 4096, &never));
        let revision = client.status().unwrap().header.revision;
        client.compact(revision, false).unwrap();
    }
    assert_eq!(acked.len(), 12_000);
    let target = cluster.status(leader).unwrap().raft_applied_index;
    cluster.spawn(follower);
    // Writes go on while the follower catches up.
    let more = put_keys(&mut client, "g/", 0, 1_000, 64, &never);
    cluster.wait_applied(follower, target, Duration::from_secs(30));
    let received = |c: &Cluster| member_log(c, follower).contains("received a snapshot at index");
    assert!(received(&cluster), "the follower caught up without a snapshot");
    assert!(snapshots_taken(&cluster, leader) >= 1);
    let mut rejoined = cluster.client(follower);
    assert_all_present(&mut rejoined, "f/", &acked, 4096);
    assert_all_present(&mut rejoined, "g/", &more, 64);
}

#[test]
fn kill_9_during_a_snapshot_job_loses_no_acknowledged_write() {
    let mut node = Cluster::start("snap-kill", 1, &["--snapshot-count", "2000"]);
    node.wait_leader(LEADER_WAIT);
    let snap_dir = node.dir.join(&node.members[0].name).join("snap");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut client) = (Arc::clone(&stop), node.client(0));
        std::thread::spawn(move || put_keys(&mut client, "k/", 0, 60_000, 512, &stop))
    };
    // A temp file in snap/ means a job is writing: kill the node then.
    let temp_files = || -> Vec<String> {
        let names = fs::read_dir(&snap_dir).into_iter().flatten().flatten();
        let names = names.map(|e| e.file_name().to_string_lossy().into_owned());
        names.filter(|name| name.ends_with(".tmp")).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut caught = Vec::new();
    while caught.is_empty() && Instant::now() < deadline && !writer.is_finished() {
        caught = temp_files();
        if caught.is_empty() {
            sleep(Duration::from_millis(1));
        }
    }
    node.kill(0);
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(!caught.is_empty(), "no snapshot job was seen running");
    node.spawn(0);
    node.wait_leader(LEADER_WAIT);
    // The restarted node deleted the killed job's temp file on open; by now
    // it may be writing its own (replay can reach the same index), which
    // ends with the temp file renamed. No temp file stays, and every file
    // left is a valid snapshot.
    wait_for("no temp file in snap/", Duration::from_secs(20), || temp_files().is_empty());
    // (Listed by hand: `SnapDir::open` would delete a live temp file.)
    for entry in fs::read_dir(&snap_dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".snap") {
            SnapDir::read_file(&entry.path()).unwrap();
        }
    }
    let mut client = node.client(0);
    assert!(!acked.is_empty());
    assert_all_present(&mut client, "k/", &acked, 512);
}

/// A `/proc/<pid>/status` figure in bytes (`VmHWM`: the peak resident set;
/// `VmRSS`: the resident set now).
fn proc_status_bytes(pid: u32, field: &str) -> usize {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// The payload size the follower logged for the snapshot it received.
fn received_snapshot_bytes(log: &str) -> usize {
    let line = log.lines().rev().find(|l| l.contains("received a snapshot at index")).unwrap();
    let (_, after) = line.split_once(" (").unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_snapshot_many_times_the_transfer_bound_is_received_in_bounded_memory() {
    let mut cluster = Cluster::start("snap-memory", 3, &["--snapshot-count", "5000"]);
    let leader = cluster.wait_leader(LEADER_WAIT);
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let mut client = cluster.client(leader);
    let never = AtomicBool::new(false);
    // Four times the bound in 4 KiB values: past the first snapshots the
    // leader releases the log the follower misses, so it must send one.
    let value_len = 4096;
    let count = 4 * SNAPSHOT_TRANSFER_BYTES_MAX / value_len;
    let acked = put_keys(&mut client, "m/", 0, count, value_len, &never);
    assert_eq!(acked.len(), count);
    let target = cluster.status(leader).unwrap().raft_applied_index;
    cluster.spawn(follower);
    cluster.wait_applied(follower, target, Duration::from_secs(60));
    let log = member_log(&cluster, follower);
    assert!(log.contains("received a snapshot at index"), "caught up without a snapshot");
    let payload_bytes = received_snapshot_bytes(&log);
    assert!(payload_bytes >= 3 * SNAPSHOT_TRANSFER_BYTES_MAX, "payload {payload_bytes}");
    let pid = cluster.members[follower].pid().expect("the follower runs");
    let (peak, settled) = (proc_status_bytes(pid, "VmHWM:"), proc_status_bytes(pid, "VmRSS:"));
    // The store the follower now holds is the same before and after; what
    // the transfer itself took on top of it is bounded, whatever the size
    // of the snapshot. Holding the payload would add all of it.
    let allowed = settled + SNAPSHOT_TRANSFER_BYTES_MAX + (8 << 20);
    println!(
        "snapshot payload {payload_bytes} bytes; follower peak RSS {peak}, settled {settled}, \
         allowed {allowed}"
    );
    assert!(peak <= allowed, "peak RSS {peak} over {allowed} for a {payload_bytes}-byte snapshot");
    let mut rejoined = cluster.client(follower);
    assert_all_present(&mut rejoined, "m/", &acked, value_len);
}
