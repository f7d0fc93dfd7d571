//! The corruption check on a real three-member cluster: one member's store
//! has a value flipped behind the log's back (`EMBER_FAULT_FLIP_VALUE`, a
//! fault-injection build only); the check, decided through the log, raises
//! `CORRUPT` for exactly that member at the same index on every member.
//! `alarm list` shows it everywhere, `/health` on it answers 503 and its
//! keyspace requests are refused with etcd's `corrupt cluster`, while the
//! other members go on serving every acknowledged write. Caught by the
//! periodic check, and by the start-up check of a member restarted with
//! flipped data.
//!
//! Needs `--features fault-injection`; `.ci/run` passes it.

mod support;

#[cfg(feature = "fault-injection")]
mod flipped {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::thread::sleep;
    use std::time::{Duration, Instant};

    use ember::proto::{ErrorCode, GrpcCode};

    use super::support::cli::node::{ember, ok};
    use super::support::cli::stderr;
    use super::support::cluster::Cluster;

    const WAIT: Duration = Duration::from_secs(20);
    const FLIP: (&str, &str) = ("EMBER_FAULT_FLIP_VALUE", "key/007");
    const KEYS: usize = 50;

    fn health(endpoint: &str) -> String {
        let mut socket = TcpStream::connect(endpoint).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut bytes = Vec::new();
        socket.read_to_end(&mut bytes).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// Writes the keys through member 0; every one is acknowledged.
    fn write_keys(cluster: &Cluster) -> Vec<(String, String)> {
        let mut client = cluster.client(0);
        let written: Vec<(String, String)> =
            (0..KEYS).map(|i| (format!("key/{i:03}"), format!("value {i}"))).collect();
        for (key, value) in &written {
            client.put(key.as_bytes(), value.as_bytes()).unwrap();
        }
        written
    }

    /// Waits until every running member lists `CORRUPT` for `member` and
    /// nothing else; how long that took.
    fn wait_corrupt_listed(cluster: &Cluster, member: u64, started: Instant) -> Duration {
        let line = format!("memberID:{member} alarm:CORRUPT \n");
        for endpoint in cluster.endpoints() {
            loop {
                let listed = ember(&endpoint, &["alarm", "list"]);
                let text = String::from_utf8_lossy(&listed.stdout).into_owned();
                if listed.status.success() && text == line {
                    break;
                }
                assert!(started.elapsed() < WAIT, "{endpoint} lists {text:?}\n{}", cluster.logs());
                sleep(Duration::from_millis(100));
            }
        }
        started.elapsed()
    }

    /// The index each member logged the raise at: the same on all.
    fn raised_at_one_index(cluster: &Cluster, member: u64) {
        let needle = format!("member {member:016x} hashes");
        let indexes: Vec<String> = (0..3)
            .map(|i| {
                let log = cluster.log_of(i);
                let line =
                    log.lines().find(|l| l.contains(&needle) && l.contains("CORRUPT raised"));
                let line = line.unwrap_or_else(|| panic!("member {i} logged no raise:\n{log}"));
                line.rsplit("at index ").next().unwrap().to_string()
            })
            .collect();
        assert!(indexes.iter().all(|i| *i == indexes[0]), "raised at {indexes:?}");
    }

    /// The corrupt member refuses reads and writes; the others serve every
    /// acknowledged write, and take new ones.
    fn only_the_corrupt_member_stops_serving(
        cluster: &Cluster,
        corrupt: usize,
        written: &[(String, String)],
    ) {
        let endpoints = cluster.endpoints();
        let answer = health(&endpoints[corrupt]);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.ends_with("\"reason\":\"ALARM CORRUPT\"}"), "{answer}");
        let mut client = cluster.client(corrupt);
        let refused = client.get(FLIP.1.as_bytes()).unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::Corrupt), "{refused}");
        assert_eq!(ErrorCode::Corrupt.grpc(), GrpcCode::DataLoss);
        let refused = client.put(b"new", b"v").unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::Corrupt), "{refused}");
        let cli = ember(&endpoints[corrupt], &["get", FLIP.1]);
        assert!(stderr(&cli).contains("etcdserver: corrupt cluster"), "{}", stderr(&cli));
        for healthy in (0..3).filter(|&i| i != corrupt) {
            let answer = health(&endpoints[healthy]);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let mut client = cluster.client(healthy);
            for (key, value) in written {
                let kv = client.get(key.as_bytes()).unwrap().expect("an acknowledged key");
                assert_eq!(kv.value, value.as_bytes(), "{key} on member {healthy}");
            }
            client.put(format!("after/{healthy}").as_bytes(), b"v").unwrap();
        }
        let status = ok(&endpoints[0], &["endpoint", "status", "--cluster"]);
        assert!(status.contains("alarm:CORRUPT"), "{status}");
    }

    /// A compaction has every member hash the compacted revision; sound
    /// members hash alike, and nothing is raised.
    fn compaction_is_checked_and_sound_members_agree(cluster: &Cluster) {
        let endpoints = cluster.endpoints();
        let rev = cluster.status(0).unwrap().header.revision;
        ok(&endpoints[0], &["compaction", &rev.to_string()]);
        let needle = format!("at revision {rev} (compact revision {rev})");
        let started = Instant::now();
        let hashes: Vec<String> = (0..3)
            .map(|i| {
                loop {
                    let log = cluster.log_of(i);
                    if let Some(line) = log.lines().find(|l| l.contains(&needle)) {
                        let hash = line.split(": hash ").nth(1).unwrap_or_default();
                        break hash.split(' ').next().unwrap_or_default().to_string();
                    }
                    assert!(started.elapsed() < WAIT, "member {i} hashed no compaction:\n{log}");
                    sleep(Duration::from_millis(100));
                }
            })
            .collect();
        assert!(hashes.iter().all(|h| *h == hashes[0] && h.len() == 8), "{hashes:?}");
        for endpoint in &endpoints {
            let listed = ember(endpoint, &["alarm", "list"]);
            assert!(listed.status.success() && listed.stdout.is_empty(), "{listed:?}");
        }
    }

    #[test]
    fn the_periodic_check_raises_corrupt_for_the_member_with_a_flipped_value() {
        let mut cluster = Cluster::prepare("corrupt-periodic", 3, &["--corrupt-check-time", "1s"]);
        cluster.spawn(0);
        cluster.spawn(1);
        // Member 2 flips the key's value as soon as it applies the put:
        // long after its start-up check passed.
        cluster.spawn_with(2, &[FLIP]);
        cluster.wait_leader(WAIT);
        let member = cluster.status(2).unwrap().header.member_id;
        let written = write_keys(&cluster);
        let flipped = Instant::now();
        let took = wait_corrupt_listed(&cluster, member, flipped);
        println!(
            "periodic check (1 s): CORRUPT listed everywhere {} ms after the flip",
            took.as_millis()
        );
        raised_at_one_index(&cluster, member);
        only_the_corrupt_member_stops_serving(&cluster, 2, &written);
        assert!(cluster.panics().is_empty(), "{}", cluster.logs());
    }

    #[test]
    fn a_member_restarted_with_flipped_data_is_caught_at_start_up() {
        // No periodic check: only the start-up check can catch it.
        let mut cluster = Cluster::start("corrupt-start-up", 3, &["--corrupt-check-time", "0"]);
        cluster.wait_leader(WAIT);
        let member = cluster.status(2).unwrap().header.member_id;
        let written = write_keys(&cluster);
        compaction_is_checked_and_sound_members_agree(&cluster);
        // Every member holds every key before member 2 stops.
        let index = cluster.status(0).unwrap().raft_applied_index;
        cluster.wait_applied(2, index, WAIT);
        cluster.terminate(2);
        let restarted = Instant::now();
        cluster.spawn_with(2, &[FLIP]);
        let took = wait_corrupt_listed(&cluster, member, restarted);
        println!(
            "start-up check: CORRUPT listed everywhere {} ms after the restart",
            took.as_millis()
        );
        raised_at_one_index(&cluster, member);
        only_the_corrupt_member_stops_serving(&cluster, 2, &written);
        assert!(cluster.panics().is_empty(), "{}", cluster.logs());
    }
}
