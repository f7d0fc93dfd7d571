//! The `ember` client commands against real `ember serve` processes, through
//! the built binary: exact output in each format, exit codes, a txn with
//! each compare kind, watch with a command and Ctrl-C, compaction errors
//! naming the compact revision, a request over the size limit, and a
//! three-member cluster seen through `member list` and `endpoint --cluster`.
//! Nodes run on free 127.0.0.1 ports in a scratch directory and are killed
//! on drop (also when a test fails); every wait is bounded.

mod support;

use std::time::Duration;

use support::cli::node::{ember, ember_with_stdin, ok, single};
use support::cli::{Running, stderr, stdout};
use support::cluster::Cluster;

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// The `"cluster_id":..,"member_id":..` part every JSON header of this
/// node starts with, and its raft term.
fn header_prefix(cluster: &Cluster) -> (String, u64) {
    let status = cluster.status(0).expect("status");
    let prefix = format!(
        "\"cluster_id\":{},\"member_id\":{}",
        status.header.cluster_id, status.header.member_id
    );
    (prefix, status.raft_term)
}

#[test]
fn put_get_del_on_a_real_node_in_every_format() {
    let (cluster, e) = single("cli-kv");
    let (ids, term) = header_prefix(&cluster);
    assert_eq!(ok(&e, &["put", "greeting", "hello"]), "OK\n");
    let revision: i64 = {
        let json = ok(&e, &["put", "greeting", "hi", "-w", "json", "--prev-kv"]);
        let after = json.split("\"revision\":").nth(1).expect("a revision");
        after.split(',').next().unwrap().parse().unwrap()
    };
    let header = format!("{{{ids},\"revision\":{revision},\"raft_term\":{term}}}");
    let created = revision - 1;
    let kv = format!(
        "{{\"key\":\"Z3JlZXRpbmc=\",\"create_revision\":{created},\"mod_revision\":{revision},\"version\":2,\"value\":\"aGk=\"}}"
    );
    assert_eq!(ok(&e, &["get", "greeting"]), "greeting\nhi\n");
    assert_eq!(
        ok(&e, &["get", "greeting", "-w", "json"]),
        format!("{{\"header\":{header},\"kvs\":[{kv}],\"count\":1}}\n")
    );
    let fields = ok(&e, &["get", "greeting", "-w", "fields"]);
    assert!(fields.contains(&format!(
        "\"Key\" : \"greeting\"\n\"CreateRevision\" : {created}\n\"ModRevision\" : {revision}\n\"Version\" : 2\n\"Value\" : \"hi\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n"
    )), "{fields}");
    ok(&e, &["put", "greeting2", "x"]);
    assert_eq!(
        ok(&e, &["get", "greeting", "--prefix", "--keys-only"]),
        "greeting\n\ngreeting2\n\n"
    );
    assert_eq!(
        ok(
            &e,
            &[
                "get",
                "greeting",
                "--prefix",
                "--sort-by",
                "value",
                "--order",
                "descend",
                "--print-value-only"
            ]
        ),
        "x\nhi\n"
    );
    assert_eq!(ok(&e, &["get", "greeting", "--prefix", "--count-only"]), "2\n");
    assert_eq!(
        ok(&e, &["get", "greeting", "--rev", &created.to_string(), "--consistency", "s"]),
        "greeting\nhello\n"
    );
    assert_eq!(ok(&e, &["get", "missing"]), "", "a missing key prints nothing, as etcdctl");
    assert_eq!(
        ok(&e, &["del", "greeting", "--prefix", "--prev-kv"]),
        "2\ngreeting\nhi\ngreeting2\nx\n"
    );
    assert_eq!(ok(&e, &["del", "greeting"]), "0\n");
    assert_eq!(ember(&e, &["get", "k", "-w", "table"]).status.code(), Some(2));
}

#[test]
fn txn_with_each_compare_kind_on_a_real_node() {
    let (_cluster, e) = single("cli-txn");
    let json = ok(&e, &["put", "k", "v", "-w", "json"]);
    let revision = json.split("\"revision\":").nth(1).unwrap().split(',').next().unwrap();
    let compares = format!(
        "value(\"k\") = \"v\"\nversion(\"k\") = \"1\"\ncreate(\"k\") = \"{revision}\"\n\
         mod(\"k\") < \"{}\"\nlease(\"k\") = \"0\"\n",
        revision.parse::<i64>().unwrap() + 1
    );
    let script = format!("{compares}\nput k w\nget k\n\nget k\n");
    let output = ember_with_stdin(&e, &["txn"], script.as_bytes());
    assert_eq!(stdout(&output), "SUCCESS\n\nOK\n\nk\nw\n", "{}", stderr(&output));
    // Now every compare is false: the value, version and mod revision moved.
    let output = ember_with_stdin(&e, &["txn"], script.as_bytes());
    assert_eq!(stdout(&output), "FAILURE\n\nk\nw\n", "{}", stderr(&output));
    let script = "version(\"k\") != \"2\"\n\nput k never\n\ndel k\n";
    let output = ember_with_stdin(&e, &["txn", "-w", "json"], script.as_bytes());
    let text = stdout(&output);
    assert!(text.contains("\"responses\":[{\"Response\":{\"ResponseDeleteRange\":"), "{text}");
    assert!(text.contains("\"deleted\":1"), "{text}");
    assert!(!text.contains("\"succeeded\""), "false is left out: {text}");
    assert_eq!(ok(&e, &["get", "k"]), "");
    let output = ember_with_stdin(&e, &["txn"], b"mod(\"k\") > \"x\"\n");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn watch_runs_a_command_per_event_and_ctrl_c_ends_it_with_exit_0() {
    let (_cluster, e) = single("cli-watch");
    let json = ok(&e, &["put", "w/1", "one", "-w", "json"]);
    let revision = json.split("\"revision\":").nth(1).unwrap().split(',').next().unwrap();
    let hook = "echo \"hook $EMBER_WATCH_EVENT_TYPE $EMBER_WATCH_KEY=$EMBER_WATCH_VALUE\"";
    let mut watch =
        Running::start(&e, &["watch", "w/", "--prefix", "--rev", revision, "--", "sh", "-c", hook]);
    let next = || watch.lines.recv_timeout(WAIT).expect("a line within the wait");
    assert_eq!([next(), next(), next(), next()], ["PUT", "w/1", "one", "hook PUT w/1=one"]);
    ok(&e, &["del", "w/1"]);
    assert_eq!([next(), next(), next(), next()], ["DELETE", "w/1", "", "hook DELETE w/1="]);
    let status = watch.interrupt(WAIT).expect("watch still running after Ctrl-C");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn compacted_revisions_are_named_with_the_compact_revision() {
    let (_cluster, e) = single("cli-compact");
    ok(&e, &["put", "c", "1"]);
    ok(&e, &["put", "c", "2"]);
    let json = ok(&e, &["put", "c", "3", "-w", "json"]);
    let revision: i64 =
        json.split("\"revision\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    let compact = (revision - 1).to_string();
    assert_eq!(ok(&e, &["compaction", &compact]), format!("compacted revision {compact}\n"));
    let output = ember(&e, &["get", "c", "--rev", "2"]);
    assert_eq!(output.status.code(), Some(1));
    let line = format!(
        "required revision has been compacted (code 100): the oldest revision kept is {revision} (compact revision {compact})\n"
    );
    assert!(stderr(&output).ends_with(&line), "{}", stderr(&output));
    let output = ember(&e, &["compaction", "2"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).ends_with(&line), "{}", stderr(&output));
    let output = ember(&e, &["watch", "c", "--rev", "2"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "ember: watch was cancelled: required revision has been compacted (compact revision {compact})\n"
        )
    );
}

#[test]
fn too_large_requests_and_unreachable_endpoints_are_one_line_errors() {
    let (_cluster, e) = single("cli-limits");
    let value = vec![b'x'; 2 << 20];
    let output = ember_with_stdin(&e, &["put", "big"], &value);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("exceeds the server's limit of"), "{text}");
    assert!(text.contains("--max-request-bytes"), "the flag that sets the limit: {text}");
    let dead = format!("127.0.0.1:{}", support::ports::free_port());
    let output = ember(&dead, &["get", "k"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with(&format!("ember: no endpoint reachable (tried {dead}: ")));
    assert_eq!(ok(&format!("{dead},{e}"), &["put", "k", "v"]), "OK\n", "failover to the live one");
}

/// A port that takes the connection but never answers, and a member's peer
/// port, each named with what went wrong in words, not an OS error number.
#[test]
fn a_silent_port_and_a_peer_port_say_what_went_wrong() {
    let (cluster, _e) = single("cli-wrong-port");
    // Never accepted: the kernel completes the TCP handshake for the
    // backlog, so the connection is up and nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let output = ember(&silent, &["get", "k"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("timed out after 1s connecting to {silent}")), "{text}");
    assert!(!text.contains("os error"), "{text}");
    let peer = format!("127.0.0.1:{}", cluster.members[0].peer_port);
    let output = ember(&peer, &["get", "k"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("not an Ember client port: {peer}")), "{text}");
}

#[test]
fn a_three_member_cluster_through_member_list_and_endpoint_cluster() {
    let mut cluster = Cluster::start("cli-three", 3, &[]);
    let leader = cluster.wait_leader(WAIT);
    let endpoints = cluster.endpoints();
    let first = &endpoints[0];
    // Members publish their client URLs through the log once a leader is
    // known; until then they are listed as unstarted.
    let deadline = std::time::Instant::now() + WAIT;
    let list = loop {
        let list = ok(first, &["member", "list"]);
        if !list.contains("unstarted") || std::time::Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(list.lines().count(), 3, "{list}");
    for line in list.lines() {
        assert!(line.contains(", started, n"), "{line}");
    }
    assert!(list.contains(&format!(", http://{first}, false\n")), "{list}");
    let table = ok(first, &["member", "list", "-w", "table"]);
    assert!(table.contains("| IS LEARNER |"), "{table}");
    let all = endpoints.join(",");
    let health = ok(&all, &["endpoint", "health", "--cluster"]);
    assert_eq!(
        health.matches("is healthy: successfully committed proposal").count(),
        3,
        "{health}"
    );
    let status = ok(&all, &["endpoint", "status", "--cluster", "-w", "json"]);
    assert_eq!(status.matches("\"Endpoint\":").count(), 3, "{status}");
    // Every member's client URLs are in the member list: one endpoint is
    // enough to reach them all.
    let output = ember(first, &["endpoint", "health", "--cluster"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).matches("is healthy").count(), 3);
    for e in &endpoints {
        assert!(stdout(&output).contains(&format!("{e} is healthy")), "{}", stdout(&output));
    }
    let output = ember(&all, &["endpoint", "status", "--cluster"]);
    assert_eq!((output.status.code(), stderr(&output)), (Some(0), String::new()));
    let survivor = (leader + 1) % 3;
    cluster.kill(leader);
    cluster.wait_leader(WAIT);
    let output = ember(&all, &["endpoint", "health", "--cluster"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output).matches("is healthy").count(), 2, "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("{} is unhealthy", endpoints[leader])));
    assert_eq!(ok(&all, &["put", "after", "kill"]), "OK\n");
    assert_eq!(ok(&endpoints[survivor], &["get", "after"]), "after\nkill\n");
}

/// Only the global flags read the environment, as etcdctl's `ETCDCTL_*`:
/// `EMBER_PREFIX=1` left in a shell does not turn `del /config` into a
/// delete of every key under it, while `EMBER_W` still picks the format.
#[test]
fn only_global_flags_come_from_the_environment() {
    let (_cluster, e) = single("cli-env");
    for key in ["/config", "/config/a", "/configs"] {
        ok(&e, &["put", key, "v"]);
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["--endpoints", &e, "del", "/config"])
        .env("EMBER_PREFIX", "1")
        .env("EMBER_FROM_KEY", "1")
        .env("EMBER_PREV_KV", "1")
        .env("EMBER_W", "json")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = stdout(&output);
    assert!(json.contains("\"deleted\":1"), "{json}");
    assert!(!json.contains("prev_kvs"), "{json}");
    assert_eq!(ok(&e, &["get", "/config", "--prefix", "--keys-only"]), "/config/a\n\n/configs\n\n");
}
