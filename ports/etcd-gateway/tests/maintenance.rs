//! etcd's Maintenance Snapshot, MoveLeader and Defragment through the
//! gateway: `etcdctl snapshot save` writes a file `ember snapshot restore`
//! takes and `ember snapshot status` reads at the revision written;
//! `etcdctl defrag` succeeds; MoveLeader from etcd's own client hands the
//! leadership to each member in turn, whichever member the gateway asks;
//! with auth on, `etcdctl move-leader`, `snapshot save` and `defrag` are
//! refused anonymously and to a user who is not root, and work as root.
//! Status, polled through a gateway whose shared link reaches a follower,
//! opens no member connection per call, and answers from the leader again
//! after every member restarted.
//!
//! Needs `etcdctl` on the PATH (Debian's `etcd-client`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Cluster, ember_binary, on_path};

fn etcdctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "30s"])
        .args(args)
        .output()
        .expect("etcdctl runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

fn ember(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(ember_binary()).args(args).output().expect("ember runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

#[tokio::test]
async fn etcdctl_saves_a_snapshot_ember_restores_and_defrags_and_moves_the_leader() {
    assert!(on_path("etcdctl"), "`etcdctl` is not on the PATH: install Debian's etcd-client");
    let cluster = Cluster::start("maintenance", 3);
    let mut client = cluster.client().await;
    let gateway = cluster.gateway_endpoint();
    for n in 0..100 {
        client.put(format!("k{n:03}"), "v", None).await.unwrap();
    }
    let revision = client.status().await.unwrap().header().unwrap().revision();

    let file = cluster.dir.join("through-gateway.db");
    let file_arg = file.to_str().unwrap();
    let (code, stdout, stderr) = etcdctl(&gateway, &["snapshot", "save", file_arg]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("Snapshot saved at {file_arg}")), "{stdout}");
    let (code, status, stderr) = ember(&["snapshot", "status", file_arg, "-w", "json"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(status.contains(&format!("\"revision\":{revision},")), "{status} at {revision}");
    assert!(status.contains("\"totalKey\":100,"), "{status}");
    let data_dir = cluster.dir.join("restored");
    let (code, _, stderr) = ember(&[
        "snapshot",
        "restore",
        file_arg,
        "--name",
        "r1",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--initial-cluster",
        "r1=http://127.0.0.1:2380",
        "--initial-cluster-token",
        "restored",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
    ]);
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = etcdctl(&gateway, &["defrag"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("Finished defragmenting etcd member["), "{stdout}");

    let members = client.member_list().await.unwrap();
    let ids: Vec<u64> = members.members().iter().map(|m| m.id()).collect();
    for id in ids {
        client.move_leader(id).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.status().await.unwrap().leader() != id {
            assert!(Instant::now() < deadline, "{id:x} did not lead");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let error = client.move_leader(0x1234).await.unwrap_err();
    assert!(error.to_string().contains("etcdserver: bad leader transferee"), "{error}");

    // With auth on, `etcdctl move-leader` acts as its caller: refused to
    // an anonymous one as etcd refuses it, done for root, three times in a
    // row, whatever member the gateway's shared link reaches.
    let steps: [&[&str]; 4] = [
        &["user", "add", "root", "--new-user-password=pw"],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ];
    for step in steps {
        let (code, stdout, stderr) = etcdctl(&gateway, step);
        assert_eq!(code, 0, "etcdctl {step:?}: {stdout}{stderr}");
    }
    let ids: Vec<u64> = members.members().iter().map(|m| m.id()).collect();
    let leader = client.status().await.unwrap().leader();
    let target = format!("{:x}", ids.iter().find(|&&id| id != leader).unwrap());
    let (code, _, stderr) = etcdctl(&gateway, &["move-leader", &target]);
    assert_ne!(code, 0);
    assert!(stderr.contains("etcdserver: user name is empty"), "{stderr}");
    for _ in 0..3 {
        let leader = client.status().await.unwrap().leader();
        let next = *ids.iter().find(|&&id| id != leader).unwrap();
        let args = ["--user", "root:pw", "move-leader", &format!("{next:x}")];
        let (code, stdout, stderr) = etcdctl(&gateway, &args);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let said = format!("Leadership transferred from {leader:x} to {next:x}");
        assert!(stdout.contains(&said), "{stdout}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.status().await.unwrap().leader() != next {
            assert!(Instant::now() < deadline, "{next:x} did not lead");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A backup and a defragmentation act as their caller too: root's are
    // done, another user's refused as etcd refuses them, an anonymous
    // caller's refused for want of a user name.
    let add = ["--user", "root:pw", "user", "add", "alice", "--new-user-password=apw"];
    let (code, stdout, stderr) = etcdctl(&gateway, &add);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let file = cluster.dir.join("as-root.db");
    let save = ["snapshot", "save", file.to_str().unwrap()];
    let (code, stdout, stderr) = etcdctl(&gateway, &[&["--user", "root:pw"][..], &save].concat());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Snapshot saved at"), "{stdout}");
    let (code, stdout, stderr) = ember(&["snapshot", "status", file.to_str().unwrap()]);
    assert_eq!(code, 0, "the backup root took reads back: {stdout}{stderr}");
    let (code, stdout, stderr) = etcdctl(&gateway, &["--user", "root:pw", "defrag"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("Finished defragmenting etcd member["), "{stdout}");
    for (user, refusal) in [
        (&["--user", "alice:apw"][..], "etcdserver: permission denied"),
        (&[][..], "etcdserver: user name is empty"),
    ] {
        let refused = cluster.dir.join("refused.db");
        let save = ["snapshot", "save", refused.to_str().unwrap()];
        let (code, _, stderr) = etcdctl(&gateway, &[user, &save].concat());
        assert_ne!(code, 0);
        assert!(stderr.contains(refusal), "snapshot save as {user:?}: {stderr}");
        assert!(!refused.exists(), "a refused backup left a file");
        let (code, _, stderr) = etcdctl(&gateway, &[user, &["defrag"]].concat());
        assert_ne!(code, 0);
        assert!(stderr.contains(refusal), "defrag as {user:?}: {stderr}");
    }
}

/// TCP sockets of this machine with an end on 127.0.0.1:`port`, listeners
/// aside: both ends of each open connection to it, and for a minute after
/// it closed the end that closed first (TIME_WAIT). A connection opened to
/// the port shows in this count until well after the test.
fn sockets_at(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let end = format!("0100007F:{port:04X}");
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() > 3 && fields[3] != LISTEN)
        .filter(|fields| fields[1] == end || fields[2] == end)
        .count()
}

fn sockets_at_members(cluster: &Cluster) -> usize {
    cluster.members.iter().map(|m| sockets_at(m.client_port)).sum()
}

/// `count` Status calls through the gateway, each answered by the leader.
async fn statuses(client: &mut etcd_client::Client, count: usize) {
    for _ in 0..count {
        let status = client.status().await.unwrap();
        let header = status.header().unwrap();
        assert_eq!(status.leader(), header.member_id(), "Status answers from the leader");
    }
}

#[tokio::test]
async fn status_keeps_its_links_to_the_members_and_finds_them_again_after_a_restart() {
    let mut cluster = Cluster::start("status-links", 3);
    let mut client = cluster.client().await;
    // The gateway's one shared link reaches n1 (its first endpoint); make
    // sure n1 follows, so each Status asks the members in turn for the
    // leader's answer.
    let members = client.member_list().await.unwrap();
    let id_of = |name: &str| members.members().iter().find(|m| m.name() == name).unwrap().id();
    if client.status().await.unwrap().leader() == id_of("n1") {
        client.move_leader(id_of("n2")).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(client.status().await.unwrap().leader(), l if l != 0 && l != id_of("n1")) {
        assert!(Instant::now() < deadline, "n1 still leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    statuses(&mut client, 5).await;
    let before = sockets_at_members(&cluster);
    statuses(&mut client, 20).await;
    assert_eq!(sockets_at_members(&cluster), before, "20 Status calls opened connections");

    // Every member restarts: the kept links break, and the next calls
    // dial again, once.
    for i in 0..3 {
        cluster.kill_member(i);
    }
    for i in 0..3 {
        cluster.spawn_member(i);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.status().await {
            Ok(status) if status.leader() != 0 => break,
            Ok(_) if Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            other => panic!("no leader after the restart: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    statuses(&mut client, 5).await;
    let before = sockets_at_members(&cluster);
    statuses(&mut client, 20).await;
    assert_eq!(sockets_at_members(&cluster), before, "the new links are kept too");
}
