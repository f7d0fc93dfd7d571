//! The client commands (`put`, `get`, `del`, `endpoint`, `bench`, usage errors) as an
//! operator meets them: output formats and exit codes, against the
//! in-process fake server of `client_fake`.

mod client_fake;
mod support;

use std::process::Command;

use client_fake::*;
use ember::proto::{ErrorCode, Request};
use support::cli::fake::ember;
use support::cli::{stderr, stdout};

#[test]
fn put_get_and_del_print_like_etcdctl() {
    let store = FakeStore::default();
    let address = store.serve(1);
    let output = ember(&address, &["put", "/app/a", "one"]);
    assert_eq!((output.status.code(), stdout(&output).as_str()), (Some(0), "OK\n"));
    ember(&address, &["put", "/app/b", "two"]);
    ember(&address, &["put", "/other", "three"]);
    let output = ember(&address, &["get", "/app/a"]);
    assert_eq!(stdout(&output), "/app/a\none\n");
    let output = ember(&address, &["get", "/absent"]);
    assert_eq!((output.status.code(), stdout(&output).as_str()), (Some(0), ""));
    let output = ember(&address, &["get", "--prefix", "/app/"]);
    assert_eq!(stdout(&output), "/app/a\none\n/app/b\ntwo\n");
    let output = ember(&address, &["get", "/app/a", "/other", "--limit", "1"]);
    assert_eq!(stdout(&output), "/app/a\none\n");
    let output = ember(&address, &["del", "--prefix", "/app/"]);
    assert_eq!((output.status.code(), stdout(&output).as_str()), (Some(0), "2\n"));
    let output = ember(&address, &["del", "/app/a"]);
    assert_eq!(stdout(&output), "0\n");
}

#[test]
fn get_flags_reach_the_request() {
    let store = FakeStore::default();
    let address = store.serve(1);
    let output = ember(&address, &["get", "k", "--rev", "7", "--serializable"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let requests = store.requests.lock().unwrap();
    let Request::Range(range) = &requests[0] else { panic!("{requests:?}") };
    assert_eq!((range.revision, range.serializable, range.limit), (7, true, 0));
    assert!(range.range_end.is_empty());
}

#[test]
fn endpoints_come_from_the_environment_too() {
    let store = FakeStore::default();
    let address = store.serve(1);
    let output = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["put", "k", "v"])
        .env("EMBER_ENDPOINTS", format!("http://{address}"))
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "OK\n", "{}", stderr(&output));
}

#[test]
fn failover_skips_a_down_endpoint() {
    let store = FakeStore::default();
    let live = store.serve(1);
    let list = format!("{},{live}", dead_endpoint());
    let output = ember(&list, &["put", "k", "v"]);
    assert_eq!(stdout(&output), "OK\n", "{}", stderr(&output));
}

#[test]
fn no_reachable_endpoint_is_one_line_naming_them_and_exit_1() {
    let (first, second) = (dead_endpoint(), dead_endpoint());
    let output = ember(&format!("{first},{second}"), &["get", "k"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("no endpoint reachable"), "{text}");
    assert!(text.contains(&first) && text.contains(&second), "{text}");
}

#[test]
fn a_server_error_exits_1_with_its_message() {
    let (listener_address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        let (id, _) = peer.read_request().unwrap();
        peer.fail(id, ErrorCode::NoLeader);
    });
    let output = ember(&listener_address, &["put", "k", "v"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no leader"), "{}", stderr(&output));
    server.join().unwrap();
}

/// A write the server could not settle in time, or whose answer never
/// came, may have been applied: it is not reported as failed (exit 1) but
/// as unknown, in words, with exit 3. A read that times out is a failure.
#[test]
fn a_write_of_unknown_outcome_says_so_and_exits_3() {
    let (address, server) = scripted(|listener| {
        // The server's deadline passed, for a put and then for a get.
        for _ in 0..2 {
            let mut peer = Peer::accept(&listener, 1);
            let (id, _) = peer.read_request().unwrap();
            peer.fail(id, ErrorCode::Timeout);
        }
        let mut peer = Peer::accept(&listener, 1);
        assert!(peer.read_request().is_some());
        // No answer: the connection closes with the write in flight.
    });
    for args in [&["put", "k", "v"][..], &["get", "k"][..], &["del", "k"][..]] {
        let output = ember(&address, args);
        let text = stderr(&output);
        let unknown = args[0] != "get";
        assert_eq!(output.status.code(), Some(if unknown { 3 } else { 1 }), "{args:?}: {text}");
        assert_eq!(text.contains("the write may or may not have been applied"), unknown, "{text}");
        assert!(text.contains(&address), "{text}");
    }
    server.join().unwrap();
    let help = stdout(&ember(&address, &["--help"]));
    assert!(help.contains("3  the write may or may not have been applied"), "{help}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["put"][..],
        &["put", "k", "v", "--ignore-value"][..],
        &["get"][..],
        &["get", "k", "-w", "table"][..],
        &["get", "k", "--prefix", "--from-key"][..],
        &["get", "k", "--sort-by", "size"][..],
        &["get", "k", "--consistency", "x"][..],
        &["txn", "extra"][..],
        &["watch", "k", "--"][..],
        &["compaction", "zero"][..],
        &["member", "add"][..],
        &["completion", "fish"][..],
        &["get", "a", "b", "--prefix"][..],
        &["get", "k", "--limit", "many"][..],
        &["endpoint", "nonsense"][..],
        &["endpoint", "status", "-w", "yaml"][..],
        &["bench", "scan"][..],
        &["bench", "put", "--clients", "2", "--conns", "3"][..],
        &["bench", "put", "--keyspace", "1000000000", "--key-size", "8"][..],
    ] {
        let output = ember("127.0.0.1:1", args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
    }
    let output = ember("https://secure:2379", &["get", "k"]);
    assert_eq!(output.status.code(), Some(2));
    let output = ember("127.0.0.1:1", &["--command-timeout", "soon", "get", "k"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn endpoint_status_as_lines_json_and_table() {
    let store = FakeStore::default();
    let leader = store.serve(1);
    let follower = store.serve(2);
    let list = format!("{leader},{follower}");
    let output = ember(&list, &["endpoint", "status"]);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0],
        format!("{leader}, 1, 0.1.0, 0.1, 4.1 kB, true, false, 2, 40, 40, 0, 1, ")
    );
    assert!(lines[1].starts_with(&format!("{follower}, 2, 0.1.0, 0.1, 4.1 kB, false,")), "{text}");

    let output = ember(&list, &["endpoint", "status", "-w", "json"]);
    let expected = format!(
        "[{{\"Endpoint\":\"{leader}\",\"Status\":{{\"header\":{{\"cluster_id\":193,\"member_id\":1,\
         \"raft_term\":2}},\"version\":\"0.1.0\",\"dbSize\":4096,\"leader\":1,\"raftIndex\":40,\
         \"raftTerm\":2,\"raftAppliedIndex\":40}}}},"
    );
    assert!(stdout(&output).starts_with(&expected), "{}", stdout(&output));
    assert!(stdout(&output).contains(
        "\"member_id\":2,\"raft_term\":2},\"version\":\"0.1.0\",\"dbSize\":4096,\"leader\":1,"
    ));
    assert_eq!(stdout(&output).lines().count(), 1);

    let output = ember(&leader, &["endpoint", "status", "-w", "fields"]);
    assert_eq!(
        stdout(&output),
        "\"ClusterID\" : 193\n\"MemberID\" : 1\n\"Revision\" : 0\n\"RaftTerm\" : 2\n\
         \"Version\" : \"0.1.0\"\n\"DBSize\" : 4096\n\"Leader\" : 1\n\"IsLearner\" : false\n\
         \"RaftIndex\" : 40\n\"RaftTerm\" : 2\n\"RaftAppliedIndex\" : 40\n\"Errors\" : []\n\
         \"Endpoint\" : \"{leader}\"\n\n"
            .replace("{leader}", &leader)
    );

    let output = ember(&list, &["endpoint", "status", "-w", "table"]);
    let text = stdout(&output);
    assert!(text.contains("| IS LEADER |") && text.contains("|   true    |"), "{text}");
}

#[test]
fn endpoint_status_names_an_endpoint_that_failed_and_exits_1() {
    let store = FakeStore::default();
    let live = store.serve(1);
    let dead = dead_endpoint();
    let output = ember(&format!("{live},{dead}"), &["endpoint", "status", "-w", "json"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains(&live));
    assert!(stderr(&output).contains(&dead), "{}", stderr(&output));
}

#[test]
fn endpoint_health_like_etcdctl() {
    let store = FakeStore::default();
    let live = store.serve(1);
    let output = ember(&live, &["endpoint", "health"]);
    assert!(output.status.success());
    let line = stdout(&output);
    assert!(
        line.starts_with(&format!("{live} is healthy: successfully committed proposal: took = ")),
        "{line}"
    );
    let dead = dead_endpoint();
    let output = ember(&format!("{live},{dead}"), &["endpoint", "health", "-w", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let json = stdout(&output);
    assert!(json.contains(&format!("{{\"endpoint\":\"{live}\",\"health\":true,")), "{json}");
    assert!(json.contains(&format!("{{\"endpoint\":\"{dead}\",\"health\":false,")), "{json}");
    assert!(stderr(&output).contains("unhealthy"), "{}", stderr(&output));
}

/// Parses `name=value` pairs of the bench's last line.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn bench_put_prints_one_line_and_sends_exactly_total_requests() {
    let store = FakeStore::default();
    let address = store.serve(1);
    let args = [
        "bench",
        "put",
        "--clients",
        "6",
        "--conns",
        "4",
        "--total",
        "501",
        "--key-size",
        "8",
        "--val-size",
        "32",
        "--keyspace",
        "50",
    ];
    let output = ember(&address, &args);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let names: Vec<String> = fields(text.trim_end()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["op", "clients", "conns", "total", "secs", "ops_per_s", "p50_us", "p99_us"]);
    assert!(text.starts_with("op=put clients=6 conns=4 total=501 secs="), "{text}");
    let requests = store.requests.lock().unwrap();
    assert_eq!(requests.len(), 501);
    for request in requests.iter() {
        let Request::Put(put) = request else { panic!("{request:?}") };
        assert_eq!(put.key.len(), 8);
        let index: u64 = std::str::from_utf8(&put.key).unwrap().parse().unwrap();
        assert!(index < 50);
        assert_eq!(put.value, vec![b'v'; 32]);
    }
    assert!(store.data.lock().unwrap().len() > 40, "keys spread over the keyspace");
}

#[test]
fn bench_get_does_not_preload_and_can_be_serializable() {
    let store = FakeStore::default();
    let address = store.serve(1);
    let args =
        ["bench", "get", "--serializable", "--clients", "3", "--conns", "1", "--total", "30"];
    let output = ember(&address, &args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("op=get clients=3 conns=1 total=30 "));
    let requests = store.requests.lock().unwrap();
    assert_eq!(requests.len(), 30);
    assert!(requests.iter().all(|r| matches!(r, Request::Range(range) if range.serializable)));
}

#[test]
fn bench_fails_with_exit_1_when_the_server_refuses_requests() {
    let (scripted_address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        let (id, _) = peer.read_request().unwrap();
        peer.fail(id, ErrorCode::NoSpace);
    });
    let output = ember(&scripted_address, &["bench", "put", "--total", "10"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("(code 102)"), "{}", stderr(&output));
    server.join().unwrap();
}

#[test]
fn put_and_del_with_prev_kv_and_a_lease() {
    let store = FakeStore::default();
    let address = store.serve(1);
    let output = ember(&address, &["put", "k", "one", "--lease", "1f"]);
    assert_eq!(stdout(&output), "OK\n", "{}", stderr(&output));
    let output = ember(&address, &["put", "k", "two", "--prev-kv"]);
    assert_eq!(stdout(&output), "OK\nk\none\n");
    let output = ember(&address, &["del", "k", "--prev-kv"]);
    assert_eq!(stdout(&output), "1\nk\ntwo\n");
    let requests = store.requests.lock().unwrap();
    let Request::Put(first) = &requests[0] else { panic!("{requests:?}") };
    assert_eq!((first.lease, first.prev_kv), (0x1f, false));
    let output = ember(&address, &["put", "k", "v", "--lease", "xyz"]);
    assert_eq!(output.status.code(), Some(2));
}
