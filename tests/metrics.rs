//! `/metrics` and the health probes of real members: on the client port
//! and on `--listen-metrics-urls`, what they say with and without a
//! leader, and that the counters move with the load.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::proto::{AlarmAction, AlarmMember, AlarmType, ErrorCode};
use support::cluster::Cluster;
use support::ports::free_port;

/// An HTTP answer: status, head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends one request and reads the answer to the end (the server closes).
fn http(addr: &str, request_line: &str) -> Answer {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.write_all(format!("{request_line}\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut bytes = Vec::new();
    socket.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().unwrap();
    Answer { status, head: head.to_string(), body: body.to_string() }
}

fn get(addr: &str, path: &str) -> Answer {
    http(addr, &format!("GET {path} HTTP/1.1"))
}

/// The value of an unlabelled sample, or of the first sample whose name
/// and labels start with `series`.
fn sample(exposition: &str, series: &str) -> f64 {
    let line = exposition
        .lines()
        .find(|l| {
            !l.starts_with('#')
                && l.starts_with(series)
                && l[series.len()..].starts_with([' ', '{', ','])
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{exposition}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[test]
fn the_client_port_serves_metrics_that_follow_the_load() {
    let node = Cluster::start("metrics1", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let addr = node.members[0].endpoint();
    let before = get(&addr, "/metrics");
    assert_eq!(before.status, 200, "{}", before.body);
    assert!(before.head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    let text = &before.body;
    for family in [
        "etcd_server_has_leader gauge",
        "etcd_server_leader_changes_seen_total counter",
        "etcd_disk_wal_fsync_duration_seconds histogram",
        "etcd_mvcc_put_total counter",
        "etcd_network_peer_sent_bytes_total counter",
        "ember_loop_iteration_duration_seconds histogram",
        "process_resident_memory_bytes gauge",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "no {family} in:\n{text}");
    }
    assert_eq!(sample(text, "etcd_server_has_leader"), 1.0);
    assert_eq!(sample(text, "etcd_server_is_leader"), 1.0);
    assert!(sample(text, "etcd_server_leader_changes_seen_total") >= 1.0);
    let id = format!("etcd_server_id{{server_id=\"{:x}\"}} 1\n", node.members[0].id);
    assert!(text.contains(&id), "{text}");
    assert!(sample(text, "process_resident_memory_bytes") > 1e6);
    assert!(sample(text, "process_open_fds") > 3.0);

    let mut client = node.client(0);
    for i in 0..20 {
        client.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    client.delete(b"k0").unwrap();
    client.get(b"k1").unwrap();
    let after = get(&addr, "/metrics").body;
    let grew = |series: &str| sample(&after, series) - sample(text, series);
    assert_eq!(grew("etcd_mvcc_put_total"), 20.0);
    assert_eq!(grew("etcd_mvcc_delete_total"), 1.0);
    assert!(grew("etcd_mvcc_range_total") >= 1.0);
    // Keys the store holds: a deleted key stays until compaction drops it.
    assert_eq!(sample(&after, "etcd_debugging_mvcc_keys_total"), 20.0);
    assert!(grew("etcd_disk_wal_fsync_duration_seconds_count") >= 1.0);
    assert!(grew("etcd_disk_wal_write_bytes_total") > 0.0);
    assert!(grew("ember_wal_payload_bytes_total") > 0.0);
    assert!(sample(&after, "ember_wal_write_bytes_per_payload_byte") >= 1.0);
    assert!(sample(&after, "etcd_server_proposals_applied_total") >= 21.0);
    assert!(sample(&after, "ember_client_connections") >= 1.0);
}

#[test]
fn probes_answer_as_etcd_and_kubernetes_expect() {
    let node = Cluster::start("probes", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let addr = node.members[0].endpoint();
    let health = get(&addr, "/health?serializable=true");
    assert_eq!((health.status, health.body.as_str()), (200, "{\"health\":\"true\"}"));
    let livez = get(&addr, "/livez");
    assert_eq!((livez.status, livez.body.as_str()), (200, "ok\n"));
    let livez = get(&addr, "/livez?verbose");
    assert_eq!(livez.body, "[+]serializable_read ok\nok\n");
    let readyz = get(&addr, "/readyz?verbose");
    let verbose = "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n\
                   [+]non_learner ok\nok\n";
    assert_eq!((readyz.status, readyz.body.as_str()), (200, verbose));
    let one = get(&addr, "/readyz/linearizable_read?verbose");
    assert_eq!((one.status, one.body.as_str()), (200, "[+]linearizable_read ok\nok\n"));
    assert_eq!(get(&addr, "/readyz/no_such_check").status, 404);
    let head = http(&addr, "HEAD /metrics HTTP/1.1");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(http(&addr, "POST /metrics HTTP/1.1").status, 405);
    assert_eq!(get(&addr, "/debug").status, 404);
}

#[test]
fn a_member_that_lost_its_quorum_is_live_but_not_ready() {
    let mut cluster = Cluster::start("noquorum", 3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    // The leader times each heartbeat's round trip to each follower.
    let deadline = Instant::now() + Duration::from_secs(10);
    for follower in (0..3).filter(|&i| i != leader) {
        let id = cluster.members[follower].id;
        let count = format!("etcd_network_peer_round_trip_time_seconds_count{{To=\"{id:x}\"}}");
        loop {
            let metrics = get(&cluster.members[leader].endpoint(), "/metrics").body;
            let timed = metrics.lines().find_map(|l| l.strip_prefix(&format!("{count} ")));
            if timed.is_some_and(|n| n.parse::<f64>().unwrap() >= 3.0) {
                let sum = format!("etcd_network_peer_round_trip_time_seconds_sum{{To=\"{id:x}\"}}");
                assert!(sample(&metrics, &sum) < 1.0, "{metrics}");
                let bucket = format!("{{To=\"{id:x}\",le=\"3.2768\"}}");
                assert!(metrics.contains(&bucket), "{metrics}");
                break;
            }
            assert!(Instant::now() < deadline, "no round trips to {id:x} timed:\n{metrics}");
            sleep(Duration::from_millis(100));
        }
    }
    let kept = (leader + 1) % 3;
    for i in (0..3).filter(|&i| i != kept) {
        cluster.kill(i);
    }
    let addr = cluster.members[kept].endpoint();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&addr, "/health").status != 503 {
        assert!(Instant::now() < deadline, "the member kept its leader");
        sleep(Duration::from_millis(100));
    }
    let health = get(&addr, "/health");
    assert_eq!(health.body, "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}");
    assert_eq!(get(&addr, "/health?serializable=true").status, 200);
    assert_eq!(get(&addr, "/livez").status, 200);
    let readyz = get(&addr, "/readyz");
    let failed = "[+]data_corruption ok\n[+]serializable_read ok\n\
                  [-]linearizable_read failed: etcdserver: no leader\n[+]non_learner ok\n\n";
    assert_eq!((readyz.status, readyz.body.as_str()), (503, failed));
    let local = get(&addr, "/readyz?exclude=linearizable_read");
    assert_eq!((local.status, local.body.as_str()), (200, "ok\n"));
    let metrics = get(&addr, "/metrics").body;
    assert_eq!(sample(&metrics, "etcd_server_has_leader"), 0.0);
    assert_eq!(sample(&metrics, "etcd_server_is_leader"), 0.0);
    // It exchanged bytes with the leader while it lived (followers send
    // each other nothing while a leader holds).
    let id = cluster.members[leader].id;
    let sent = format!("etcd_network_peer_sent_bytes_total{{To=\"{id:x}\"}}");
    let received = format!("etcd_network_peer_received_bytes_total{{From=\"{id:x}\"}}");
    assert!(sample(&metrics, &sent) > 0.0, "{metrics}");
    assert!(sample(&metrics, &received) > 0.0, "{metrics}");
}

#[test]
fn the_metrics_port_serves_http_and_turns_protocol_clients_away() {
    let mut node = Cluster::prepare("metricsport", 1, &[]);
    let port = free_port();
    node.member_args =
        vec![vec!["--listen-metrics-urls".into(), format!("http://127.0.0.1:{port}")]];
    node.spawn(0);
    node.wait_leader(Duration::from_secs(10));
    let addr = format!("127.0.0.1:{port}");
    let metrics = get(&addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(sample(&metrics.body, "etcd_server_has_leader"), 1.0);
    assert_eq!(get(&addr, "/health").status, 200);
    assert_eq!(get(&addr, "/readyz").body, "ok\n");
    let mut config = ember::client::Config::new(vec![addr.clone()]);
    config.dial_timeout = Duration::from_millis(500);
    config.command_timeout = Duration::from_millis(1000);
    let refused = ember::client::Client::connect(config).and_then(|mut c| c.status());
    assert!(refused.is_err(), "a protocol client was served on the metrics port");
}

#[test]
fn https_metrics_urls_need_the_client_certificate() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["serve", "--listen-metrics-urls", "https://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("https:// needs --cert-file and --key-file"), "{stderr}");
}

/// Puts of 4 KB until the quota refuses one; how many were taken.
fn fill_quota(client: &mut ember::client::Client) -> usize {
    let value = vec![b'x'; 4000];
    for i in 0..1000 {
        match client.put(format!("fill/{i}").as_bytes(), &value) {
            Ok(_) => continue,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::NoSpace), "{e}");
                return i;
            }
        }
    }
    panic!("1000 puts of 4 KB fit in the quota");
}

#[test]
fn alarms_show_in_the_metrics_and_only_corrupt_fails_readyz() {
    let quota_bytes = 64 * 1024;
    let node = Cluster::start("metrics-alarms", 1, &["--quota-backend-bytes", "65536"]);
    node.wait_leader(Duration::from_secs(10));
    let addr = node.members[0].endpoint();
    let mut client = node.client(0);
    let me = client.status().unwrap().header.member_id;
    let empty = get(&addr, "/metrics").body;
    assert_eq!(sample(&empty, "etcd_server_quota_backend_bytes"), quota_bytes as f64);
    assert!(empty.contains("# TYPE ember_server_alarm_active gauge\n"), "{empty}");
    assert!(!empty.contains("ember_server_alarm_active{"), "{empty}");

    let taken = fill_quota(&mut client);
    let text = get(&addr, "/metrics").body;
    let in_use = sample(&text, "etcd_mvcc_db_total_size_in_use_in_bytes");
    assert!(in_use > (taken * 4000) as f64 && in_use <= quota_bytes as f64, "{in_use}");
    let nospace =
        format!("ember_server_alarm_active{{member_id=\"{me:x}\",alarm=\"NOSPACE\"}} 1\n");
    assert!(text.contains(&nospace), "{text}");
    // NOSPACE refuses writes, not reads: the member stays ready, as etcd's.
    let readyz = get(&addr, "/readyz");
    assert_eq!((readyz.status, readyz.body.as_str()), (200, "ok\n"));

    let corrupt = AlarmMember { member_id: me, alarm: AlarmType::Corrupt };
    client.alarm_change(AlarmAction::Activate, corrupt).unwrap();
    let readyz = get(&addr, "/readyz");
    let failed = "[-]data_corruption failed: alarm activated: CORRUPT\n[+]serializable_read ok\n\
                  [+]linearizable_read ok\n[+]non_learner ok\n\n";
    assert_eq!((readyz.status, readyz.body.as_str()), (503, failed));
    assert_eq!(get(&addr, "/readyz/data_corruption").status, 503);
    assert_eq!(get(&addr, "/readyz?exclude=data_corruption").status, 200);
    assert_eq!(get(&addr, "/livez").status, 200);
    let text = get(&addr, "/metrics").body;
    let corrupt_line =
        format!("ember_server_alarm_active{{member_id=\"{me:x}\",alarm=\"CORRUPT\"}} 1\n");
    assert!(text.contains(&corrupt_line) && text.contains(&nospace), "{text}");

    client.alarm_disarm().unwrap();
    assert_eq!(get(&addr, "/readyz").status, 200);
    assert!(!get(&addr, "/metrics").body.contains("ember_server_alarm_active{"));
}
