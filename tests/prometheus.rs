//! The metrics as the real tools read them: Debian's `prometheus` package
//! (`promtool` and the server) against real members. `.ci/run` installs
//! it; without it these tests fail and say so.
//!
//! - `promtool check metrics` accepts a scrape of a loaded member;
//! - `promtool check rules` accepts `ports/monitoring/alerts.yml`;
//! - a Prometheus server scrapes a three-member cluster every second while
//!   a client writes, loads the alert rules, and its HTTP API answers:
//!   every member has a leader, puts happen at a nonzero rate, every query
//!   of `ports/monitoring/grafana-dashboard.json` returns data, and of
//!   etcd's own dashboard's queries exactly those the README lists as
//!   served return data.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::cluster::Cluster;
use support::ports::free_port;

/// The queries of etcd's published Grafana dashboard (its `$cluster` job
/// variable set to ours, `$__rate_interval` to a few scrapes), each with
/// whether Ember serves the series it reads.
const ETCD_DASHBOARD_QUERIES: &[(&str, bool)] = &[
    (r#"sum(etcd_server_has_leader{job="ember"})"#, true),
    (r#"etcd_mvcc_db_total_size_in_bytes{job="ember"}"#, true),
    (
        r#"histogram_quantile(0.99, sum(rate(etcd_disk_wal_fsync_duration_seconds_bucket{job="ember"}[5s])) by (instance, le))"#,
        true,
    ),
    (r#"process_resident_memory_bytes{job="ember"}"#, true),
    (r#"sum(rate(etcd_network_peer_received_bytes_total{job="ember"}[5s])) by (instance)"#, true),
    (r#"sum(rate(etcd_network_peer_sent_bytes_total{job="ember"}[5s])) by (instance)"#, true),
    (r#"sum(rate(etcd_server_proposals_failed_total{job="ember"}[5s]))"#, true),
    (r#"sum(etcd_server_proposals_pending{job="ember"})"#, true),
    (r#"sum(rate(etcd_server_proposals_committed_total{job="ember"}[5s]))"#, true),
    (r#"sum(rate(etcd_server_proposals_applied_total{job="ember"}[5s]))"#, true),
    (r#"changes(etcd_server_leader_changes_seen_total{job="ember"}[1d])"#, true),
    // The node speaks its own protocol; gRPC is the gateway's.
    (r#"sum(rate(grpc_server_started_total{job="ember",grpc_type="unary"}[5s]))"#, false),
    (
        r#"sum(rate(grpc_server_handled_total{job="ember",grpc_type="unary",grpc_code=~"Unknown|FailedPrecondition|ResourceExhausted|Internal|Unavailable|DataLoss|DeadlineExceeded"}[5s]))"#,
        false,
    ),
    (
        r#"sum(grpc_server_started_total{job="ember",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}) - sum(grpc_server_handled_total{job="ember",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"})"#,
        false,
    ),
    (r#"rate(etcd_network_client_grpc_received_bytes_total{job="ember"}[5s])"#, false),
    (r#"rate(etcd_network_client_grpc_sent_bytes_total{job="ember"}[5s])"#, false),
    // No bbolt backend: the store lives in memory, the WAL is the commit.
    (
        r#"histogram_quantile(0.99, sum(rate(etcd_disk_backend_commit_duration_seconds_bucket{job="ember"}[5s])) by (instance, le))"#,
        false,
    ),
    // Timed on the leader, heartbeat to response.
    (
        r#"histogram_quantile(0.99, sum by (instance, peer, le) (rate(etcd_network_peer_round_trip_time_seconds_bucket{job="ember"}[5s])))"#,
        true,
    ),
];

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().unwrap();
    assert!(
        found.status.success(),
        "{name} is missing: install Debian's prometheus package (.ci/run does)"
    );
    Command::new(name)
}

/// GET over plain HTTP/1.0; the body of a 200 answer.
fn http_get(addr: &str, target: &str) -> Option<String> {
    let mut socket = TcpStream::connect(addr).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket.write_all(format!("GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut bytes = Vec::new();
    socket.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_ok = head.starts_with("HTTP/1.1 200 ") || head.starts_with("HTTP/1.0 200 ");
    status_ok.then(|| body.to_string())
}

fn url_encoded(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The result of an instant query, as Prometheus' JSON text.
fn query(prometheus: &str, promql: &str) -> String {
    let target = format!("/api/v1/query?query={}", url_encoded(promql));
    let body = http_get(prometheus, &target).unwrap_or_else(|| panic!("query {promql} failed"));
    assert!(body.contains("\"status\":\"success\""), "{promql}: {body}");
    body
}

/// The sample values of a query's result vector.
fn values(result: &str) -> Vec<f64> {
    let mut found = Vec::new();
    let mut rest = result;
    while let Some(at) = rest.find("\"value\":[") {
        rest = &rest[at + 9..];
        let (_, value) = rest.split_once(",\"").unwrap();
        let (number, tail) = value.split_once('"').unwrap();
        found.push(number.parse().unwrap_or(f64::NAN));
        rest = tail;
    }
    found
}

/// The `expr` strings of the dashboard's targets, unescaped.
fn dashboard_queries(json: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find("\"expr\": \"") {
        rest = &rest[at + 9..];
        let mut expr = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => expr.push(chars.next().unwrap().1),
                '"' => {
                    rest = &rest[i..];
                    break;
                }
                c => expr.push(c),
            }
        }
        found.push(expr);
    }
    found
}

/// Kills the Prometheus server when the test ends, also on a panic.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn promtool_accepts_a_scrape_and_the_alert_rules() {
    let node = Cluster::start("promtool", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let mut client = node.client(0);
    for i in 0..50 {
        client.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let scrape = http_get(&node.members[0].endpoint(), "/metrics").unwrap();
    let mut check = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout).to_string()
        + &String::from_utf8_lossy(&checked.stderr);
    // The text parses (exit 1 would say otherwise); what the linter says
    // (exit 3) is about etcd's own names, gauges ending in `_total`, which
    // dashboards need exactly as they are, and nothing else.
    let complaints: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    let etcd_names = [
        "etcd_debugging_mvcc_keys_total",
        "etcd_debugging_mvcc_slow_watcher_total",
        "etcd_debugging_mvcc_watcher_total",
        "etcd_disk_wal_write_bytes_total",
        "etcd_server_proposals_applied_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_snapshot_apply_in_progress_total",
    ];
    let expected: Vec<String> = etcd_names
        .iter()
        .map(|name| format!("{name} non-counter metrics should not have \"_total\" suffix"))
        .collect();
    assert_eq!(checked.status.code(), Some(3), "promtool check metrics: {said}\n{scrape}");
    assert_eq!(complaints, expected, "promtool check metrics: {said}");

    let rules = repo_file("ports/monitoring/alerts.yml");
    let checked = tool("promtool").args(["check", "rules"]).arg(&rules).output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "promtool check rules: {said}");
    assert!(said.contains("SUCCESS: 8 rules found"), "{said}");
}

#[test]
fn prometheus_scrapes_a_cluster_under_load() {
    let cluster = Cluster::start("prometheus", 3, &[]);
    cluster.wait_leader(Duration::from_secs(10));
    let dir = std::env::temp_dir().join(format!("ember-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let targets: Vec<String> = cluster.endpoints().iter().map(|e| format!("'{e}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: ['{}']\n\
         scrape_configs:\n  - job_name: ember\n    static_configs:\n      - targets: [{}]\n",
        repo_file("ports/monitoring/alerts.yml").display(),
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let _server = Server(
        tool("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&addr, "/-/ready").is_none() {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        sleep(Duration::from_millis(200));
    }

    // Writes for the whole scrape window, through every member.
    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let mut client = cluster.client(i);
            let writing = Arc::clone(&writing);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while writing.load(Ordering::Relaxed) {
                    client.put(format!("load/{i}/{}", n % 100).as_bytes(), b"value").unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    let leaders = loop {
        let result = query(&addr, r#"etcd_server_has_leader{job="ember"}"#);
        let rate = query(&addr, r#"sum(rate(etcd_mvcc_put_total{job="ember"}[5s]))"#);
        let has_leader = values(&result);
        let put_rate = values(&rate);
        let all = has_leader.len() == 3 && has_leader.iter().all(|v| *v == 1.0);
        if all && put_rate.first().is_some_and(|r| *r > 0.0) {
            break result;
        }
        assert!(Instant::now() < deadline, "no leader or no puts seen: {result} {rate}");
        sleep(Duration::from_millis(500));
    };
    for endpoint in cluster.endpoints() {
        assert!(leaders.contains(&format!("\"instance\":\"{endpoint}\"")), "{leaders}");
    }

    let dashboard = std::fs::read_to_string(repo_file("ports/monitoring/grafana-dashboard.json"));
    let queries = dashboard_queries(&dashboard.unwrap());
    assert!(queries.len() >= 20, "{queries:?}");
    // Each member is scraped on its own schedule: a rate needs two scrapes
    // of the member that serves the series (the round trips: the leader).
    let deadline = Instant::now() + Duration::from_secs(10);
    for promql in &queries {
        let promql = promql.replace("$job", "ember").replace("$__rate_interval", "5s");
        loop {
            let result = query(&addr, &promql);
            if !values(&result).is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "no data for {promql}: {result}");
            sleep(Duration::from_millis(250));
        }
    }
    for (promql, served) in ETCD_DASHBOARD_QUERIES {
        let result = query(&addr, promql);
        assert_eq!(!values(&result).is_empty(), *served, "{promql}: {result}");
    }
    let rules = http_get(&addr, "/api/v1/rules").unwrap();
    assert!(rules.contains("\"name\":\"ember\""), "{rules}");
    assert!(!rules.contains("\"health\":\"err\""), "{rules}");

    writing.store(false, Ordering::Relaxed);
    let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(written > 0);
    let _ = std::fs::remove_dir_all(&dir);
}
