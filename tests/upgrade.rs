//! Rolling upgrades on real processes: members claim other versions with
//! `EMBER_FAULT_VERSION` (a fault-injection build only), so one build
//! plays a cluster in the middle of an upgrade.
//!
//! Three members at one version decide it: `endpoint status` and
//! `/metrics` (`etcd_cluster_version`) show it on every member. A member
//! still at an older release holds the cluster version at that release
//! until it is restarted at the newer one; then it rises. A member
//! restarted older than the decided cluster version refuses to start with
//! a line naming both versions, and leaves its data directory as it was;
//! started at the right version again, it rejoins. The decision survives
//! in the snapshot: a member whose snapshot lies past the entry that
//! decided it still refuses an older start, and a board joining with an
//! older package stops once it applies the cluster's state. Entries a
//! 0.1 member could not read (commands without their origin) are written
//! only once the cluster version is 0.2: the WAL shows which layout each
//! put took.
//!
//! Needs `--features fault-injection`; `.ci/run` passes it.

mod support;

#[cfg(feature = "fault-injection")]
mod versions {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;
    use std::thread::sleep;
    use std::time::{Duration, Instant};

    use ember::state::{Command, Op};
    use ember::wal::parse_segment_name;
    use ember::wal::record::RecordKind;
    use ember::wal::recover::{SegmentFile, SegmentView, recover};

    use crate::support::cli::{env_lines, run, stdout};
    use crate::support::cluster::{Cluster, scrape_metrics};

    const VERSION_ENV: &str = "EMBER_FAULT_VERSION";
    const WAIT: Duration = Duration::from_secs(15);

    fn spawn_at(cluster: &mut Cluster, i: usize, version: &str) {
        cluster.spawn_with(i, &[(VERSION_ENV, version)]);
    }

    /// Waits until every running member reports `cluster_version` in its
    /// status (empty: not decided).
    fn wait_cluster_version(cluster: &Cluster, cluster_version: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen: Vec<Option<String>> = cluster
                .live()
                .into_iter()
                .map(|i| cluster.status(i).map(|s| s.cluster_version))
                .collect();
            if seen.iter().all(|s| s.as_deref() == Some(cluster_version)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster version never {cluster_version:?}: {seen:?}\n{}",
                cluster.logs()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn cluster_version_series(endpoint: &str) -> Vec<String> {
        let scrape = scrape_metrics(endpoint).unwrap();
        let lines = scrape.lines().filter(|l| l.starts_with("etcd_cluster_version{"));
        lines.map(String::from).collect()
    }

    /// Every file under `dir` and its bytes, but the lock file: any start
    /// takes the lock and writes its pid there, the hint for an operator
    /// of who holds the directory (`server/dir_lock.rs`).
    fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            for entry in fs::read_dir(&at).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let name = path.strip_prefix(dir).unwrap().display().to_string();
                    if name != "lock" {
                        out.insert(name, fs::read(&path).unwrap());
                    }
                }
            }
        }
        out
    }

    /// The index of the newest snapshot file in member `i`'s data dir.
    fn newest_snapshot_index(cluster: &Cluster, i: usize) -> u64 {
        let names = fs::read_dir(cluster.data_dir(i).join("snap")).unwrap();
        let indexes = names.filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".snap")?;
            u64::from_str_radix(stem.split_once('-')?.1, 16).ok()
        });
        indexes.max().unwrap_or(0)
    }

    /// This build's release, as the cluster version names it ("0.2").
    fn own_release() -> String {
        let version = env!("CARGO_PKG_VERSION");
        version.rsplit_once('.').expect("major.minor.patch").0.to_string()
    }

    /// The origin each put in the WAL of stopped member `i` names, by key:
    /// `Some` in the first command layout, `None` in the sequence-only one.
    fn put_origins(cluster: &Cluster, i: usize) -> BTreeMap<String, Option<u64>> {
        let mut segments = Vec::new();
        for entry in fs::read_dir(cluster.data_dir(i).join("wal")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some((seq, first_index)) = parse_segment_name(&name) {
                let bytes = fs::read(&path).unwrap();
                segments.push(SegmentFile { name, seq, first_index, bytes });
            }
        }
        segments.sort_by_key(|segment| segment.seq);
        let views: Vec<SegmentView> = segments.iter().map(SegmentFile::view).collect();
        let mut origins = BTreeMap::new();
        let recovered = recover(&views, &mut |seen| {
            if seen.record.kind != RecordKind::Normal {
                return;
            }
            if let Ok(Command { origin, op: Op::Put(put), .. }) =
                Command::decode(seen.record.payload)
            {
                origins.insert(String::from_utf8_lossy(&put.key).into_owned(), origin);
            }
        });
        assert!(recovered.is_ok(), "{recovered:?}");
        origins
    }

    /// The cells of the column headed `name` in a `-w table` output.
    fn table_column(table: &str, name: &str) -> Vec<String> {
        let cells =
            |line: &str| -> Vec<String> { line.split('|').map(|c| c.trim().to_string()).collect() };
        let mut rows = table.lines().filter(|l| l.starts_with('|')).map(cells);
        let header = rows.next().expect("a header row");
        let at = header.iter().position(|h| h == name).expect("the column");
        rows.map(|row| row[at].clone()).collect()
    }

    /// Member `i` claiming `version` exits by itself, saying why.
    fn refused_start(cluster: &mut Cluster, i: usize, version: &str) -> String {
        let before = files_of(&cluster.data_dir(i));
        spawn_at(cluster, i, version);
        let status = cluster.wait_exit(i, WAIT);
        assert!(!status.success(), "a member older than the cluster started: {status:?}");
        let after = files_of(&cluster.data_dir(i));
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>(),
            "the refused start changed the data directory's files"
        );
        for (name, bytes) in &before {
            assert!(after[name] == *bytes, "the refused start changed {name}");
        }
        cluster.log_of(i)
    }

    #[test]
    fn an_older_member_holds_the_cluster_version_until_upgraded_and_no_member_downgrades() {
        let mut cluster = Cluster::prepare("upgrade-rolling", 3, &[]);
        spawn_at(&mut cluster, 0, "0.2.1");
        spawn_at(&mut cluster, 1, "0.2.0");
        spawn_at(&mut cluster, 2, "0.1.7");
        cluster.wait_leader(WAIT);
        wait_cluster_version(&cluster, "0.1");
        let versions: Vec<String> = (0..3).map(|i| cluster.status(i).unwrap().version).collect();
        assert_eq!(versions, ["0.2.1", "0.2.0", "0.1.7"]);
        for m in &cluster.members {
            let series = cluster_version_series(&m.endpoint());
            assert_eq!(series, [r#"etcd_cluster_version{cluster_version="0.1"} 1"#], "{}", m.name);
        }
        // Written so that a 0.1 member reads it: the command names its
        // origin, even from a newer member.
        cluster.client(0).put(b"written-at-0.1", b"v").unwrap();

        // The last board is upgraded: the cluster version rises.
        assert!(cluster.terminate(2).success());
        spawn_at(&mut cluster, 2, "0.2.3");
        wait_cluster_version(&cluster, "0.2");
        let series = cluster_version_series(&cluster.members[2].endpoint());
        assert_eq!(series, [r#"etcd_cluster_version{cluster_version="0.2"} 1"#]);
        let table = stdout(&run(&[
            "endpoint",
            "status",
            "--endpoints",
            &cluster.endpoints().join(","),
            "-w",
            "table",
        ]));
        assert_eq!(table_column(&table, "CLUSTER VERSION"), ["0.2", "0.2", "0.2"], "{table}");
        assert_eq!(table_column(&table, "VERSION"), ["0.2.1", "0.2.0", "0.2.3"], "{table}");
        // From 0.2 on, commands leave their origin out, and each member
        // still answers its own clients' writes (the leader's, and a
        // follower's forwarded to it).
        for i in 0..3 {
            cluster.client(i).put(format!("written-at-0.2-via-{i}").as_bytes(), b"v").unwrap();
        }

        // A board downgraded onto its data refuses, and changes nothing.
        assert!(cluster.terminate(2).success());
        let origins = put_origins(&cluster, 2);
        assert!(matches!(origins.get("written-at-0.1"), Some(Some(_))), "{origins:?}");
        for i in 0..3 {
            let key = format!("written-at-0.2-via-{i}");
            assert_eq!(origins.get(&key), Some(&None), "{origins:?}");
        }
        let log = refused_start(&mut cluster, 2, "0.1.9");
        let line = "cluster cannot be downgraded: this member runs 0.1.9 and the cluster version \
                    is 0.2; start a binary of at least 0.2.0";
        assert!(log.contains(line), "{log}");
        // At the right version again, it serves.
        spawn_at(&mut cluster, 2, "0.2.3");
        wait_cluster_version(&cluster, "0.2");
        assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
    }

    #[test]
    fn three_members_decide_their_version_and_the_snapshot_keeps_it() {
        let mut cluster = Cluster::start("upgrade-snapshot", 3, &["--snapshot-count", "20"]);
        let leader = cluster.wait_leader(WAIT);
        let release = own_release();
        wait_cluster_version(&cluster, &release);
        let decided_at = cluster.status(leader).unwrap().raft_applied_index;
        // Enough writes that every member snapshots past the decision.
        let mut client = cluster.client(leader);
        let mut n = 0;
        while (0..3).any(|i| newest_snapshot_index(&cluster, i) <= decided_at) {
            for _ in 0..20 {
                client.put(format!("k{n}").as_bytes(), b"v").unwrap();
                n += 1;
            }
            assert!(n < 2_000, "no snapshot past index {decided_at}");
        }
        assert!(cluster.terminate(1).success());
        assert!(newest_snapshot_index(&cluster, 1) > decided_at);
        // The entry that decided is behind the snapshot: only the snapshot
        // can tell the restarted member the cluster version.
        let log = refused_start(&mut cluster, 1, "0.0.4");
        let refusal = format!("this member runs 0.0.4 and the cluster version is {release}");
        assert!(log.contains(&refusal), "{log}");
        cluster.spawn(1);
        wait_cluster_version(&cluster, &release);
        assert_eq!(cluster.status(1).unwrap().version, env!("CARGO_PKG_VERSION"));

        // A new board joining with an old package stops as it applies the
        // cluster's state, in the same words.
        let leader = cluster.wait_leader(WAIT);
        let added = cluster.push_member("n4");
        let peer_url = format!("http://127.0.0.1:{}", cluster.members[added].peer_port);
        let endpoint = cluster.members[leader].endpoint();
        let out = run(&["member", "add", "n4", "--peer-urls", &peer_url, "--endpoints", &endpoint]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut env = env_lines(&stdout(&out));
        env.push((VERSION_ENV.to_string(), "0.0.2".to_string()));
        cluster.spawn_with_env(added, &env);
        assert!(!cluster.wait_exit(added, WAIT).success(), "an old joiner kept running");
        let log = cluster.log_of(added);
        let line = format!(
            "cluster cannot be downgraded: this member runs 0.0.2 and the cluster version \
             is {release}; start a binary of at least {release}.0"
        );
        assert!(log.contains(&line), "{log}");
        // Three of four voters still make a quorum.
        cluster.client(leader).put(b"after-the-joiner", b"v").unwrap();
    }
}
