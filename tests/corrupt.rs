//! The corruption check on a real three-member cluster: one member's store
//! has a value flipped behind the log's back (`EMBER_FAULT_FLIP_VALUE`, a
//! fault-injection build only); the check, decided through the log, raises
//! `CORRUPT` for exactly that member at the same index on every member.
//! `alarm list` shows it everywhere, `/health` on it answers 503 and its
//! keyspace requests are refused with etcd's `corrupt cluster`, while the
//! other members go on serving every acknowledged write. Caught by the
//! periodic check, and by the start-up check of a member restarted with
//! flipped data; with `--corrupt-repair=false` the member stays so.
//!
//! Repaired (the default): the member found corrupt, a follower or the
//! leader (which hands its leadership on first), has its watches cancelled
//! at once, replaces its store with one built from the leader's image and
//! its own log, and serves again once a check agrees: `alarm list` is empty
//! everywhere, `HashKv` agrees on all three, and every write acknowledged
//! meanwhile is there. A reader polling the flipped key on that member the
//! whole time never sees the bad value after its first refusal.
//!
//! Needs `--features fault-injection`; `.ci/run` passes it.

mod support;

#[cfg(feature = "fault-injection")]
mod flipped {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle, sleep};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use ember::client::Client;
    use ember::proto::{CancelReason, ErrorCode, GrpcCode, WatchCreateRequest, WatchMessage};

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
        let args = ["--corrupt-check-time", "1s", "--corrupt-repair=false"];
        let mut cluster = Cluster::prepare("corrupt-periodic", 3, &args);
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
        // Left to the operator: three check periods later it is still
        // corrupt, asked nobody for an image, and refuses new watches.
        sleep(Duration::from_secs(3));
        wait_corrupt_listed(&cluster, member, Instant::now());
        assert!(!cluster.log_of(2).contains("repair: asked"), "{}", cluster.log_of(2));
        let refused = cluster.client(2).watch(watch_request("key/")).map(|_| ()).unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::Corrupt), "{refused}");
        assert!(cluster.panics().is_empty(), "{}", cluster.logs());
    }

    #[test]
    fn a_member_restarted_with_flipped_data_is_caught_at_start_up() {
        // No periodic check: only the start-up check can catch it.
        let args = ["--corrupt-check-time", "0", "--corrupt-repair=false"];
        let mut cluster = Cluster::start("corrupt-start-up", 3, &args);
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
        // The restarted member waited for its check; the fresh ones did not.
        let judged = wait_logged(&cluster, 2, "start-up check ");
        assert!(judged.contains("this member is found corrupt"), "{judged}");
        for fresh in 0..2 {
            assert!(!cluster.log_of(fresh).contains("start-up check"), "{}", cluster.log_of(fresh));
        }
        assert!(cluster.panics().is_empty(), "{}", cluster.logs());
    }

    #[test]
    fn a_member_restarted_without_a_majority_serves_after_a_bounded_wait() {
        let mut cluster =
            Cluster::start("corrupt-start-up-alone", 3, &["--corrupt-check-time", "0"]);
        cluster.wait_leader(WAIT);
        cluster.client(0).put(b"k", b"v").unwrap();
        for i in 0..3 {
            cluster.terminate(i);
        }
        cluster.spawn(0);
        // Five election timeouts with nobody to answer its check.
        let line = wait_logged(&cluster, 0, "start-up check not decided within");
        assert!(line.contains("serving unchecked"), "{line}");
        // Its peers back, it leads or follows, and serves what it holds.
        cluster.spawn(1);
        cluster.spawn(2);
        cluster.wait_leader(WAIT);
        assert_eq!(cluster.client(0).get(b"k").unwrap().unwrap().value, b"v");
        assert!(cluster.panics().is_empty(), "{}", cluster.logs());
    }

    fn watch_request(prefix: &str) -> WatchCreateRequest {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        WatchCreateRequest { key: prefix.as_bytes().to_vec(), range_end: end, ..Default::default() }
    }

    /// What a reader of the flipped key on one member got.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Right,
        Bad(Vec<u8>),
        Refused,
        /// Not written yet, or an error other than the refusal.
        Other(String),
    }

    /// Polls the flipped key on member `i` alone until `stop`; what each
    /// read got, with the time it was sent.
    fn spawn_reader(
        cluster: &Cluster,
        i: usize,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<Vec<(SystemTime, Seen)>> {
        let config = cluster.client_config(i);
        thread::spawn(move || {
            let mut seen = Vec::new();
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = Client::connect(config.clone()).ok();
                }
                let sent = SystemTime::now();
                let got = match client.as_mut() {
                    Some(client) => client.get(FLIP.1.as_bytes()),
                    None => Ok(None),
                };
                seen.push((
                    sent,
                    match got {
                        Ok(Some(kv)) if kv.value == b"value 7" => Seen::Right,
                        Ok(Some(kv)) => Seen::Bad(kv.value),
                        Ok(None) => Seen::Other("absent".into()),
                        Err(e) if e.code() == Some(ErrorCode::Corrupt) => Seen::Refused,
                        Err(e) => {
                            client = None;
                            Seen::Other(e.to_string())
                        }
                    },
                ));
                sleep(Duration::from_millis(10));
            }
            seen
        })
    }

    /// Writes `live/N` through member 0 until `stop`; the keys acknowledged.
    fn spawn_writer(cluster: &Cluster, stop: Arc<AtomicBool>) -> JoinHandle<Vec<String>> {
        let config = cluster.client_config(0);
        thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut client = Client::connect(config).unwrap();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("live/{n:05}");
                if client.put(key.as_bytes(), b"v").is_ok() {
                    acknowledged.push(key);
                }
                sleep(Duration::from_millis(5));
            }
            acknowledged
        })
    }

    /// The watch's messages on member `i`, from a thread.
    fn spawn_watch(cluster: &Cluster, i: usize) -> mpsc::Receiver<WatchMessage> {
        let mut stream = cluster.client(i).watch(watch_request("key/")).unwrap();
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            while let Some(Ok(message)) = stream.next() {
                let last = matches!(message, WatchMessage::Cancelled { .. });
                if sender.send(message).is_err() || last {
                    break;
                }
            }
        });
        receiver
    }

    /// Waits until no member lists an alarm; how long since `started`.
    fn wait_no_alarm(cluster: &Cluster, started: Instant) -> Duration {
        for endpoint in cluster.endpoints() {
            loop {
                let listed = ember(&endpoint, &["alarm", "list"]);
                if listed.status.success() && listed.stdout.is_empty() {
                    break;
                }
                let text = String::from_utf8_lossy(&listed.stdout).into_owned();
                assert!(started.elapsed() < WAIT, "{endpoint} lists {text:?}\n{}", cluster.logs());
                sleep(Duration::from_millis(50));
            }
        }
        started.elapsed()
    }

    /// The first line of member `i`'s log holding `needle`, once there.
    fn wait_logged(cluster: &Cluster, i: usize, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let log = cluster.log_of(i);
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(started.elapsed() < WAIT, "member {i} logged no {needle:?}:\n{log}");
            sleep(Duration::from_millis(50));
        }
    }

    /// When a log line was written: its stamp (`2026-12-03T22:26:33.579Z`).
    fn logged_at(line: &str) -> SystemTime {
        let stamp = line.split(' ').next().unwrap().trim_end_matches('Z');
        let (date, time) = stamp.split_once('T').unwrap();
        let ymd: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
        let (hms, ms) = time.split_once('.').unwrap();
        let hms: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
        let days = days_from_civil(ymd[0], ymd[1], ymd[2]) as u64;
        let seconds = days * 86_400 + hms[0] * 3_600 + hms[1] * 60 + hms[2];
        UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(ms.parse().unwrap())
    }

    /// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// Makes member `i` lead, or any other member when `lead` is false.
    fn place_leader(cluster: &Cluster, i: usize, lead: bool) {
        let target = if lead { i } else { (i + 1) % 3 };
        cluster.wait_leader(WAIT);
        let target_id = cluster.status(target).expect("a member that answers").header.member_id;
        let started = Instant::now();
        loop {
            let leader = cluster.wait_leader(WAIT);
            if (leader == i) == lead {
                return;
            }
            let _ = cluster.client(leader).move_leader(target_id);
            assert!(started.elapsed() < WAIT, "leadership not placed\n{}", cluster.logs());
            sleep(Duration::from_millis(100));
        }
    }

    /// Every member hashes the store alike at one revision.
    fn hashes_agree(cluster: &Cluster) {
        let status = cluster.status(0).unwrap();
        let revision = status.header.revision;
        for i in 0..3 {
            cluster.wait_applied(i, status.raft_applied_index, WAIT);
        }
        let hashes: Vec<u32> =
            (0..3).map(|i| cluster.client(i).hash_kv(revision).unwrap().hash).collect();
        assert!(hashes.iter().all(|h| *h == hashes[0]), "at {revision}: {hashes:08x?}");
    }

    /// Flips `key/007` on member 2 (the leader when `on_leader`) and checks
    /// it is found, its watch cancelled, repaired, and that no reader of it
    /// saw the bad value after its first refusal.
    fn flip_and_repair(test: &str, on_leader: bool) {
        let mut cluster = Cluster::prepare(test, 3, &["--corrupt-check-time", "1s"]);
        cluster.spawn(0);
        cluster.spawn(1);
        cluster.spawn_with(2, &[FLIP]);
        place_leader(&cluster, 2, on_leader);
        let member = cluster.status(2).unwrap().header.member_id;
        let watch = spawn_watch(&cluster, 2);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = spawn_reader(&cluster, 2, Arc::clone(&stop));
        let writer = spawn_writer(&cluster, Arc::clone(&stop));
        let written = write_keys(&cluster);
        // Times from member 2's own log: a repair can take milliseconds,
        // less than one `alarm list` poll.
        let raised = wait_logged(&cluster, 2, "CORRUPT raised for this member");
        let cancelled = loop {
            match watch.recv_timeout(WAIT).expect("the watch on member 2 ended") {
                WatchMessage::Cancelled { reason, .. } => break reason,
                _ => continue,
            }
        };
        assert_eq!(cancelled, CancelReason::Corrupt);
        let cleared = wait_logged(&cluster, 2, "CORRUPT cleared for this member");
        wait_no_alarm(&cluster, Instant::now());
        raised_at_one_index(&cluster, member);
        // A little more of the reader on the repaired member.
        sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let seen = reader.join().unwrap();
        let acknowledged = writer.join().unwrap();
        let flipped = logged_at(&wait_logged(&cluster, 2, "fault injection: flipped"));
        let (raised, cleared) = (logged_at(&raised), logged_at(&cleared));
        let ms = |from: SystemTime, to: SystemTime| to.duration_since(from).unwrap().as_millis();
        let refusals = seen.iter().filter(|s| s.1 == Seen::Refused).count();
        let bad = seen.iter().filter(|s| matches!(s.1, Seen::Bad(_))).count();
        // The stamp is cut to the millisecond: a read sent within the
        // millisecond of the raise may have come just before it.
        let detected = raised + Duration::from_millis(1);
        let bad_after: Vec<_> =
            seen.iter().filter(|s| s.0 >= detected && matches!(s.1, Seen::Bad(_))).collect();
        assert!(bad_after.is_empty(), "bad values read after detection: {bad_after:?}");
        println!(
            "{test}: CORRUPT raised on the member {} ms after the flip, cleared {} ms after \
             that; its reader got {} answers, {bad} of them the bad value (all before the \
             raise), {refusals} refusals; {} writes acknowledged meanwhile",
            ms(flipped, raised),
            ms(raised, cleared),
            seen.len(),
            acknowledged.len()
        );
        assert_eq!(seen.last().map(|s| &s.1), Some(&Seen::Right), "{seen:?}");
        let log = cluster.log_of(2);
        assert!(log.contains("repair: store replaced by the image"), "{log}");
        if on_leader {
            assert!(log.contains("handing the leadership"), "{log}");
            let leader = cluster.status(0).unwrap().leader_id;
            assert_ne!(leader, member, "the corrupt leader still leads");
        }
        hashes_agree(&cluster);
        for i in 0..3 {
            let mut client = cluster.client(i);
            for (key, value) in &written {
                let kv = client.get(key.as_bytes()).unwrap().expect("an acknowledged key");
                assert_eq!(kv.value, value.as_bytes(), "{key} on member {i}");
            }
            for key in &acknowledged {
                assert!(client.get(key.as_bytes()).unwrap().is_some(), "{key} on member {i}");
            }
        }
        assert!(cluster.panics().is_empty(), "{}", cluster.logs());
    }

    #[test]
    fn a_follower_with_a_flipped_value_is_repaired_from_the_leader() {
        flip_and_repair("corrupt-repair-follower", false);
    }

    #[test]
    fn a_leader_with_a_flipped_value_hands_off_leadership_and_is_repaired() {
        flip_and_repair("corrupt-repair-leader", true);
    }
}
