//! Backups and maintenance through the built binary against real members:
//! `snapshot save` from a follower while writes go on, `snapshot status`,
//! `snapshot restore` into three new members that start as a new cluster
//! with every key, revision and lease; files that are truncated, damaged or
//! not ours refused with nothing written; `move-leader` to each member in
//! turn; `defrag` shrinking the data directory while writes go on.

mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use ember::client::{Client, Config};
use ember::proto::{ErrorCode, PutRequest};
use support::cli::node::{ember, ok};
use support::cli::{run, stderr};
use support::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(15);
const LEASE_TTL_SECS: i64 = 600;

/// A field of a one-line JSON object, as a number.
fn json_number(json: &str, field: &str) -> u64 {
    let at = json.find(&format!("\"{field}\":")).unwrap_or_else(|| panic!("{field} in {json}"));
    let rest = &json[at + field.len() + 3..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

/// Puts `load/<n>` on `endpoint` until `stop`; the count written.
fn write_load(endpoint: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut client = Client::connect(Config::new(vec![endpoint])).unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if client.put(format!("load/{n:06}").as_bytes(), b"v").is_ok() {
                n += 1;
            }
        }
        n
    })
}

/// Every running member of `cluster` names the same leader; its id.
fn agreed_leader_id(cluster: &Cluster) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let ids: Vec<u64> = (0..cluster.members.len())
            .filter_map(|i| cluster.status(i))
            .map(|s| s.leader_id)
            .collect();
        if ids.len() == cluster.members.len() && ids[0] != 0 && ids.iter().all(|id| *id == ids[0]) {
            return ids[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader: {ids:x?}");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_backup_from_a_follower_under_load_restores_into_three_new_members() {
    let cluster = Cluster::start("backup-save", 3, &[]);
    let leader = cluster.wait_leader(WAIT);
    let follower = (leader + 1) % 3;
    let mut client = cluster.client(leader);
    let lease = client.lease_grant(LEASE_TTL_SECS, 0).unwrap().id;
    for n in 0..500 {
        let key = format!("base/{n:04}").into_bytes();
        let lease = if n % 10 == 0 { lease } else { 0 };
        client
            .put_with(PutRequest { key, value: vec![b'x'; 100], lease, ..Default::default() })
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_load(cluster.members[leader].endpoint(), Arc::clone(&stop));
    sleep(Duration::from_millis(300));
    let file = cluster.dir.join("backup.db");
    let file_arg = file.to_str().unwrap();
    let saved = ok(&cluster.members[follower].endpoint(), &["snapshot", "save", file_arg]);
    assert_eq!(saved, format!("Snapshot saved at {file_arg}\n"));
    sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(!Path::new(&format!("{file_arg}.part")).exists());

    let status = ok("127.0.0.1:1", &["snapshot", "status", file_arg, "-w", "json"]);
    let revision = json_number(&status, "revision");
    let hash = json_number(&status, "hash");
    assert!(revision > 501, "{status}");
    assert_eq!(json_number(&status, "totalSize"), fs::metadata(&file).unwrap().len());
    // The backup is the whole state at one revision: the hash the original
    // members give at that revision.
    let at_revision = ok(
        &cluster.members[leader].endpoint(),
        &["endpoint", "hashkv", "-w", "json", "--rev", &revision.to_string()],
    );
    assert_eq!(json_number(&at_revision, "hash"), hash, "{at_revision} vs {status}");
    for format in ["simple", "table", "fields"] {
        let text = ok("127.0.0.1:1", &["snapshot", "status", file_arg, "-w", format]);
        assert!(text.contains(&revision.to_string()), "{format}: {text}");
    }

    let mut restored =
        Cluster::prepare("backup-restored", 3, &["--initial-cluster-token", "restored"]);
    let initial: Vec<String> = restored
        .members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
        .collect();
    for i in 0..3 {
        let m = &restored.members[i];
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let data_dir = restored.data_dir(i);
        let output = run(&[
            "snapshot",
            "restore",
            file_arg,
            "--name",
            &m.name,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-token",
            "restored",
            "--initial-advertise-peer-urls",
            &peer_url,
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    for i in 0..3 {
        restored.spawn(i);
    }
    let leader_id = agreed_leader_id(&restored);
    let endpoints = restored.endpoints().join(",");
    let hashes = ok(&endpoints, &["endpoint", "hashkv", "-w", "json"]);
    assert_eq!(hashes.matches(&format!("\"hash\":{hash}}}")).count(), 3, "{hashes}");
    let mut client = restored.client(0);
    let status = client.status().unwrap();
    assert_ne!(status.header.cluster_id, cluster.status(0).unwrap().header.cluster_id);
    assert_eq!(status.header.revision as u64, revision);
    let base = client.range(ember::proto::RangeRequest {
        key: b"base/".to_vec(),
        range_end: ember::proto::prefix_range_end(b"base/"),
        ..Default::default()
    });
    assert_eq!(base.unwrap().kvs.len(), 500);
    let load = client.range(ember::proto::RangeRequest {
        key: b"load/".to_vec(),
        range_end: ember::proto::prefix_range_end(b"load/"),
        count_only: true,
        ..Default::default()
    });
    let load = load.unwrap().count as u64;
    assert!(load > 0 && load <= written, "{load} of {written} writes in the backup");
    let ttl = client.lease_time_to_live(lease, true).unwrap();
    assert_eq!(ttl.granted_ttl_secs, LEASE_TTL_SECS);
    assert!(ttl.ttl_secs > 0 && ttl.ttl_secs <= LEASE_TTL_SECS);
    assert_eq!(ttl.keys.len(), 50);
    // The new cluster takes writes.
    client.put(b"after", b"restore").unwrap();
    assert!(restored.members.iter().any(|m| m.id == leader_id) || leader_id != 0);
}

#[test]
fn truncated_damaged_and_foreign_files_are_refused_and_nothing_is_written() {
    let (cluster, endpoint) = support::cli::node::single("backup-refused");
    ok(&endpoint, &["put", "k", "v"]);
    let good = cluster.dir.join("good.db");
    ok(&endpoint, &["snapshot", "save", good.to_str().unwrap()]);
    let bytes = fs::read(&good).unwrap();
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("truncated", bytes[..bytes.len() - 100].to_vec(), "truncated"),
        ("flipped", flipped, "sha256 mismatch"),
        ("foreign", b"SQLite format 3\0 not a snapshot at all".to_vec(), "not an Ember snapshot"),
    ];
    for (name, content, said) in cases {
        let path = cluster.dir.join(format!("{name}.db"));
        fs::write(&path, content).unwrap();
        let data_dir = cluster.dir.join(format!("{name}.ember"));
        let output = restore_lone_member(&path, &data_dir);
        assert_eq!(output.status.code(), Some(1), "{name}");
        assert!(stderr(&output).contains(said), "{name}: {}", stderr(&output));
        assert!(!data_dir.exists(), "{name}: restore wrote {}", data_dir.display());
        let output = run(&["snapshot", "status", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{name}");
        assert!(stderr(&output).contains(said), "{name}: {}", stderr(&output));
    }
    // A directory that holds anything is not a new member's.
    let busy = cluster.dir.join("busy.ember");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("notes"), b"mine").unwrap();
    let output = restore_lone_member(&good, &busy);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("not empty"), "{}", stderr(&output));
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);
}

#[test]
fn move_leader_hands_the_leadership_to_each_member_in_turn() {
    let cluster = Cluster::start("backup-move", 3, &[]);
    let first = cluster.wait_leader(WAIT);
    let endpoints = cluster.endpoints().join(",");
    for step in 1..=3 {
        let target = (first + step) % 3;
        let id = format!("{:x}", cluster.members[target].id);
        let said = ok(&endpoints, &["move-leader", &id]);
        assert!(said.ends_with(&format!("to {id}\n")), "{said}");
        assert_eq!(cluster.find_leader(&[0, 1, 2], WAIT), Some(target));
    }
    let leader = cluster.wait_leader(WAIT);
    let output = ember(&endpoints, &["move-leader", "1234"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("etcdserver: bad leader transferee"), "{}", stderr(&output));
    // A follower asked directly says it is not the leader.
    let follower = (leader + 1) % 3;
    let mut client = cluster.client(follower);
    let error = client.move_leader(cluster.members[leader].id).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotLeader));
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { dir_bytes(&entry.path()) } else { meta.len() };
    }
    total
}

#[test]
fn defrag_releases_the_log_while_writes_go_on() {
    let (cluster, endpoint) = support::cli::node::single("backup-defrag");
    // 12,000 entries of 4 KiB: several WAL segments past the catch-up margin.
    ok(
        &endpoint,
        &[
            "bench",
            "put",
            "--clients",
            "16",
            "--conns",
            "4",
            "--total",
            "12000",
            "--val-size",
            "4096",
            "--keyspace",
            "100",
        ],
    );
    // The history goes first, as with etcd: defrag returns what the log
    // and the snapshot no longer need.
    let mut client = cluster.client(0);
    let revision = client.status().unwrap().header.revision;
    client.compact(revision, true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_load(endpoint.clone(), Arc::clone(&stop));
    sleep(Duration::from_millis(200));
    let before = dir_bytes(&cluster.data_dir(0));
    let said = ok(&endpoint, &["defrag"]);
    assert_eq!(said, format!("Finished defragmenting etcd member[{endpoint}]\n"));
    let after = dir_bytes(&cluster.data_dir(0));
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    eprintln!("defrag: data directory {before} bytes before, {after} after");
    assert!(after < before / 4 * 3, "{before} -> {after}");
    let said = ok(&endpoint, &["defrag", "--cluster"]);
    assert!(said.starts_with("Finished defragmenting"), "{said}");
}

#[test]
fn with_auth_on_only_root_saves_moves_the_leader_or_defragments() {
    let (cluster, endpoint) = support::cli::node::single("backup-auth");
    ok(&endpoint, &["user", "add", "root", "--new-user-password", "pw"]);
    ok(&endpoint, &["user", "grant-role", "root", "root"]);
    ok(&endpoint, &["user", "add", "alice:apw"]);
    ok(&endpoint, &["auth", "enable"]);
    let file = cluster.dir.join("alice.db");
    let file_arg = file.to_str().unwrap();
    for args in [
        vec!["--user", "alice:apw", "snapshot", "save", file_arg],
        vec!["--user", "alice:apw", "defrag"],
        vec!["--user", "alice:apw", "move-leader", "1234"],
    ] {
        let output = ember(&endpoint, &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let said = stderr(&output);
        assert!(said.contains("etcdserver: permission denied"), "{args:?}: {said}");
        assert!(!file.exists() && !Path::new(&format!("{file_arg}.part")).exists());
    }
    ok(&endpoint, &["--user", "root:pw", "snapshot", "save", file_arg]);
    let status = ok("127.0.0.1:1", &["snapshot", "status", file_arg, "-w", "json"]);
    assert!(status.starts_with("{\"hash\":"), "{status}");
}

/// `ember snapshot restore FILE` into `data_dir` as the one member `a` of a
/// new cluster: the refusals above must hold whatever the flags.
fn restore_lone_member(file: &Path, data_dir: &Path) -> std::process::Output {
    run(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--name",
        "a",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--initial-cluster",
        "a=http://127.0.0.1:2380",
        "--initial-cluster-token",
        "t",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
    ])
}
