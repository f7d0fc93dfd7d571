//! The disk alarm on a real file system that fills up: a member whose data
//! directory's file system drops under `--disk-free-min-bytes` raises
//! NOSPACE for itself before any write fails, refuses the writes that take
//! room meanwhile, and clears the alarm once space is freed past the
//! hysteresis; nothing acknowledged is lost.
//!
//! And a disk that really fills (the alarm's mark set to 0, as if another
//! process took the room): the member whose WAL cannot allocate its next
//! segment stops with a message naming the file system, never a SIGBUS;
//! the other members keep serving; once space is freed it starts again,
//! catches up and agrees with them on `HashKv`, every acknowledged write
//! in place.
//!
//! The file systems are tmpfs mounted over a member's data directory, so
//! the tests need root (to mount). The alarm and the stop are what is
//! tested here, not durability: the WAL's crash tests stay off tmpfs.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::Client;
use ember::proto::ErrorCode;
use support::cli::node::ok;
use support::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;

/// A tmpfs mounted at a directory, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path, size_bytes: u64) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}")])
            .arg("tmpfs")
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs at {} needs root", dir.display());
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn wait_list(endpoint: &str, expected: &str) -> Duration {
    let started = Instant::now();
    loop {
        let listed = ok(endpoint, &["alarm", "list"]);
        if listed == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < WAIT, "{endpoint} lists {listed:?}, not {expected:?}");
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_filling_disk_raises_nospace_before_a_write_fails_and_freeing_it_clears() {
    let min = (20 * MIB).to_string();
    let mut cluster = Cluster::prepare("alarms-disk", 1, &["--disk-free-min-bytes", &min]);
    let data_dir = cluster.data_dir(0);
    let _mounted = Mounted::tmpfs(&data_dir, 64 * MIB);
    cluster.spawn(0);
    cluster.wait_leader(WAIT);
    let endpoint = cluster.endpoints()[0].clone();
    let mut client = cluster.client(0);
    for i in 0..100 {
        client.put(format!("before/{i}").as_bytes(), b"acknowledged").unwrap();
    }
    assert_eq!(ok(&endpoint, &["alarm", "list"]), "");

    // Another file takes the room: the member raises NOSPACE for itself.
    let member = client.status().unwrap().header.member_id;
    let filler = data_dir.join("filler");
    fs::write(&filler, vec![1u8; (40 * MIB) as usize]).unwrap();
    let line = format!("memberID:{member} alarm:NOSPACE \n");
    let took = wait_list(&endpoint, &line);
    eprintln!("disk alarm raised {} ms after the disk filled", took.as_millis());
    let refused = client.put(b"during", b"v").unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NoSpace), "{refused}");
    assert_eq!(client.delete(b"before/0").unwrap(), 1);
    assert!(cluster.log_of(0).contains("under --disk-free-min-bytes"));

    // A restart (a power cut) while short: the alarm it finds for itself
    // is the disk's, so room clears it as before.
    cluster.kill(0);
    cluster.spawn(0);
    cluster.wait_leader(WAIT);
    wait_list(&endpoint, &line);
    let mut client = cluster.client(0);

    // Room again, past the hysteresis: the alarm clears by itself.
    fs::remove_file(&filler).unwrap();
    let took = wait_list(&endpoint, "");
    eprintln!("disk alarm cleared {} ms after the room came back", took.as_millis());
    client.put(b"after", b"v").unwrap();
    for i in 1..100 {
        let kv = client.get(format!("before/{i}").as_bytes()).unwrap().unwrap();
        assert_eq!(kv.value, b"acknowledged");
    }
}

/// Bytes an unprivileged process may still write under `dir`, as `df`
/// counts them.
fn available_bytes(dir: &Path) -> u64 {
    let output = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("{text}"))
}

/// A put through `client`, retried over a leader change; `false` when it
/// was not acknowledged within `WAIT`.
fn put_acknowledged(client: &mut Client, key: &str, value: &[u8]) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if client.put(key.as_bytes(), value).is_ok() {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_member_whose_disk_really_fills_stops_naming_it_and_catches_up_once_freed() {
    let mut cluster = Cluster::prepare("disk-full", 3, &[]);
    // Member 0's mark is one byte: its alarm never comes before the disk
    // is full, so the disk fills under its WAL.
    cluster.member_args = vec![vec!["--disk-free-min-bytes".into(), "1".into()]];
    let data_dir = cluster.data_dir(0);
    let _mounted = Mounted::tmpfs(&data_dir, 40 * MIB);
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_leader(WAIT);
    let mut client = cluster.client(1);
    let value = vec![b'v'; 64 << 10];
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let key = format!("before/{i}");
        assert!(put_acknowledged(&mut client, &key, &value));
        acknowledged.push(key);
    }

    // Another file takes all the room but 2 MiB, less than a WAL segment
    // (8 MiB): writes go on until member 0 needs its next segment.
    let filler = data_dir.join("filler");
    let room = available_bytes(&data_dir) - 2 * MIB;
    fs::write(&filler, vec![1u8; room as usize]).unwrap();
    let started = Instant::now();
    let mut n = 0;
    let status = loop {
        if let Some(status) = cluster.exited(0) {
            break status;
        }
        assert!(n < 400, "member 0 still runs after {n} puts of 64 KiB");
        let key = format!("filling/{n}");
        assert!(put_acknowledged(&mut client, &key, &value), "the other members stopped serving");
        acknowledged.push(key);
        n += 1;
    };
    eprintln!("member 0 stopped {} ms and {n} puts of 64 KiB after its disk filled", {
        started.elapsed().as_millis()
    });
    use std::os::unix::process::ExitStatusExt;
    assert_eq!((status.code(), status.signal()), (Some(1), None), "{status:?}");
    let log = cluster.log_of(0);
    let named = format!("the disk is full: the file system of {}", data_dir.display());
    assert!(log.contains(&named), "{log}");
    assert!(log.contains("(tmpfs mounted at "), "{log}");
    assert!(log.contains("wal: no space for segment "), "{log}");
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());

    // The other two serve on.
    cluster.kill(0); // reaps the exited process
    cluster.wait_leader(WAIT);
    for i in 0..20 {
        let key = format!("while-down/{i}");
        assert!(put_acknowledged(&mut client, &key, &value));
        acknowledged.push(key);
    }

    // Room again: it starts, catches up, and agrees on every byte.
    fs::remove_file(&filler).unwrap();
    let restarted = Instant::now();
    cluster.spawn(0);
    let last = client.put(b"last", b"v").unwrap().header.revision;
    let deadline = Instant::now() + WAIT;
    let hashes = loop {
        let hash = |i: usize| cluster.client(i).hash_kv(last).ok().map(|h| h.hash);
        let hashes: Vec<Option<u32>> = (0..3).map(hash).collect();
        if hashes.iter().all(|h| h.is_some() && *h == hashes[0]) {
            break hashes;
        }
        assert!(Instant::now() < deadline, "HashKv at {last} disagrees: {hashes:?}");
        sleep(Duration::from_millis(100));
    };
    eprintln!("member 0 caught up {} ms after its restart", restarted.elapsed().as_millis());
    assert!(hashes[0].is_some());
    let mut rejoined = cluster.client(0);
    for key in &acknowledged {
        let kv = rejoined.get(key.as_bytes()).unwrap().unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(kv.value, value, "{key}");
    }
}
