//! The disk alarm on a real file system that fills up: a member whose data
//! directory's file system drops under `--disk-free-min-bytes` raises
//! NOSPACE for itself before any write fails, refuses the writes that take
//! room meanwhile, and clears the alarm once space is freed past the
//! hysteresis; nothing acknowledged is lost.
//!
//! The file system is a tmpfs of 64 MiB mounted over the member's data
//! directory, so the test needs root (to mount). The alarm is what is
//! tested here, not durability: the WAL's crash tests stay off tmpfs.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

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
