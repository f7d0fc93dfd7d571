//! `ember member add|promote|update|remove` and `endpoint --cluster`
//! through the built binary against a real three-member cluster: the exact
//! lines `member add` prints, the error a refused change prints with exit
//! code 1, usage errors with exit code 2, the formats, help and completion.

mod support;

use std::thread::sleep;
use std::time::{Duration, Instant};

use support::cli::node::{ember, ok};
use support::cli::stderr;
use support::cluster::Cluster;
use support::ports::free_port;

const WAIT: Duration = Duration::from_secs(10);

/// Waits until every member has published its client URL.
fn wait_published(endpoint: &str) {
    let deadline = Instant::now() + WAIT;
    while ok(endpoint, &["member", "list"]).matches(", http://127.0.0.1:").count() < 6 {
        assert!(Instant::now() < deadline, "members did not publish their client URLs");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn member_commands_print_what_etcdctl_prints() {
    let cluster = Cluster::start("cli-members", 3, &[]);
    let leader = cluster.wait_leader(WAIT);
    let endpoints = cluster.endpoints();
    let at_leader = endpoints[leader].as_str();
    let first = endpoints[0].as_str();
    wait_published(first);
    // Every member lists every client URL: one endpoint reaches all three.
    let status = ok(first, &["endpoint", "status", "--cluster"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    for endpoint in &endpoints {
        assert!(status.contains(endpoint.as_str()), "{status}");
    }
    let health = ok(first, &["endpoint", "health", "--cluster"]);
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");

    let cluster_id = cluster.status(0).unwrap().header.cluster_id;
    let peer = format!("http://127.0.0.1:{}", free_port());
    let added =
        ok(at_leader, &["member", "add", "n4", &format!("--peer-urls={peer}"), "--learner"]);
    let lines: Vec<&str> = added.lines().collect();
    assert_eq!(lines.len(), 6, "{added}");
    let id = lines[0]
        .strip_prefix("Member ")
        .and_then(|rest| rest.strip_suffix(&format!(" added to cluster {cluster_id:x}")))
        .unwrap_or_else(|| panic!("{added}"))
        .to_string();
    assert_eq!(lines[1], "");
    assert_eq!(lines[2], "EMBER_NAME=\"n4\"");
    let mut initial: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
        .collect();
    initial.push(format!("n4={peer}"));
    let listed = lines[3].strip_prefix("EMBER_INITIAL_CLUSTER=\"").unwrap().trim_end_matches('"');
    let mut listed: Vec<&str> = listed.split(',').collect();
    listed.sort_unstable();
    initial.sort_unstable();
    assert_eq!(listed, initial);
    assert_eq!(lines[4], format!("EMBER_INITIAL_ADVERTISE_PEER_URLS=\"{peer}\""));
    assert_eq!(lines[5], "EMBER_INITIAL_CLUSTER_STATE=\"existing\"");

    let table = ok(first, &["member", "list", "-w", "table"]);
    let row = table.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("| n4 ") && row.contains(&peer) && row.contains("| true "), "{table}");

    // Never started, so never caught up.
    let output = ember(at_leader, &["member", "promote", &id]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("in sync with leader"), "{}", stderr(&output));

    let moved = format!("http://127.0.0.1:{}", free_port());
    let updated = ok(at_leader, &["member", "update", &id, "--peer-urls", &moved, "-w", "json"]);
    assert!(updated.starts_with("{\"header\":{\"cluster_id\":"), "{updated}");
    assert!(updated.contains(&format!("\"peerURLs\":[\"{moved}\"]")), "{updated}");
    let output = ember(at_leader, &["member", "add", "n5", "--peer-urls", &moved]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("Peer URLs already exists"), "{}", stderr(&output));

    let removed = ok(at_leader, &["member", "remove", &id]);
    assert_eq!(removed, format!("Member {id} removed from cluster {cluster_id:x}\n"));
    let output = ember(at_leader, &["member", "remove", &id]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("member not found"), "{}", stderr(&output));
}

#[test]
fn bad_member_command_lines_exit_2_and_help_names_every_subcommand() {
    let nobody = "127.0.0.1:1";
    for args in [
        &["member", "remove", "xyz"][..],
        &["member", "remove"],
        &["member", "add", "n5"],
        &["member", "update", "abc"],
        &["member", "frobnicate"],
    ] {
        let output = ember(nobody, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
    }
    let help = ok(nobody, &["member", "--help"]);
    for word in
        ["member add NAME", "--peer-urls", "--learner", "remove ID", "update ID", "promote ID"]
    {
        assert!(help.contains(word), "{word}: {help}");
    }
    let completion = ok(nobody, &["completion", "bash"]);
    assert!(completion.contains("list add remove update promote"), "{completion}");
}

/// Learner ids in `member list` at `endpoint` (its own view), sorted.
fn learners(endpoint: &str) -> Vec<String> {
    let list = ok(endpoint, &["member", "list", "--consistency", "s"]);
    let rows = list.lines().filter(|l| l.ends_with(", true"));
    let mut ids: Vec<String> = rows.map(|l| l.split(", ").next().unwrap().into()).collect();
    ids.sort();
    ids
}

#[test]
fn learners_past_max_learners_are_refused_and_the_limit_travels_with_the_add() {
    // Member 0 allows two learners, the others etcd's one: an add is
    // judged by the limit of the member that took it, alike everywhere.
    let mut cluster = Cluster::prepare("cli-learners", 3, &[]);
    cluster.member_args = vec![vec!["--max-learners".into(), "2".into()]];
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_leader(WAIT);
    let endpoints = cluster.endpoints();
    let (raised, plain) = (endpoints[0].as_str(), endpoints[1].as_str());
    wait_published(plain);
    let add = |at: &str, name: &str| {
        let peer = format!("--peer-urls=http://127.0.0.1:{}", free_port());
        ember(at, &["member", "add", name, &peer, "--learner"])
    };

    let first = add(plain, "l1");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let refused = add(plain, "l2");
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr(&refused),
        format!("ember: {plain}: etcdserver: too many learner members in cluster (code 508)\n")
    );
    // A voter is not a learner: the limit does not stop it (an unstarted
    // voter would, so one added here is removed at once).
    let voter = ok(
        plain,
        &["member", "add", "v4", &format!("--peer-urls=http://127.0.0.1:{}", free_port())],
    );
    let voter_id = voter.split_whitespace().nth(1).unwrap().to_string();
    ok(plain, &["member", "remove", &voter_id]);

    let second = add(raised, "l2");
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let third = add(raised, "l3");
    assert_eq!(third.status.code(), Some(1));
    assert!(stderr(&third).contains("too many learner members in cluster"), "{}", stderr(&third));
    let listed = learners(plain);
    assert_eq!(listed.len(), 2, "two learners, whoever applied the second");
    for endpoint in &endpoints {
        let deadline = Instant::now() + WAIT;
        while learners(endpoint) != listed {
            assert!(Instant::now() < deadline, "{endpoint} lists other learners");
            sleep(Duration::from_millis(50));
        }
    }
}
