//! etcd's Cluster service through the gateway, as etcd answers it: etcdctl
//! 3.4's member commands against the gateway and against a real etcd 3.4
//! print the same (ids, addresses and the first member's name masked); the
//! member `etcdctl member add` printed then starts as Ember with those
//! settings, shows in `member list` started under its name, and serves a
//! key written before it joined; a learner added by etcdctl is promoted
//! once it has started, and a second learner is refused as etcd refuses
//! it; the Cluster service's header carries the fields etcd's does; a
//! member started with a printed `ETCD_INITIAL_CLUSTER` that lists an
//! unstarted, unnamed member joins; etcd's Rust client adds, lists and
//! removes.
//!
//! Needs `etcdctl` and `etcd` on the PATH (Debian's `etcd-client` and
//! `etcd-server`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Cluster, ember_binary, free_port, grpc_status, on_path, start_etcd};

/// One server as the steps see it: its endpoint, the first member's id,
/// name and peer URL, and the peer ports the steps add members at.
struct Server {
    endpoint: String,
    own_id: String,
    own_name: String,
    own_peer: String,
    new_peer_port: u16,
    learner_peer_port: u16,
}

/// The member commands, each with its placeholders: `{self}` and `{peer}`
/// the first member's id and peer URL, `{new-peer}` and `{learner-peer}`
/// the peer URLs of the members added, `{learner}` the learner's id.
const STEPS: &[&[&str]] = &[
    &["member", "remove", "1234abcd"],
    &["member", "update", "1234abcd", "--peer-urls=http://127.0.0.1:1"],
    &["member", "promote", "{self}"],
    &["member", "add", "dup", "--peer-urls={peer}"],
    &["member", "add", "learner", "--learner", "--peer-urls={learner-peer}"],
    &["member", "add", "learner2", "--learner", "--peer-urls=http://127.0.0.1:3"],
    &["member", "list"],
    &["member", "promote", "{learner}"],
    &["member", "remove", "{learner}"],
    &["put", "before-join", "v"],
    &["member", "add", "joiner", "--peer-urls={new-peer}"],
    &["member", "list"],
    &["member", "add", "third", "--peer-urls=http://127.0.0.1:2"],
    &["member", "remove", "{self}"],
];

fn etcdctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "10s"])
        .args(args)
        .output()
        .expect("etcdctl runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

fn wait_ready(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcdctl(endpoint, &["get", "ready"]).0 != 0 {
        assert!(Instant::now() < deadline, "{endpoint} never answered etcdctl");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ID, started, NAME, PEER, CLIENT, false` lines of `member list`.
fn member_rows(endpoint: &str) -> Vec<Vec<String>> {
    let (code, stdout, stderr) = etcdctl(endpoint, &["member", "list"]);
    assert_eq!(code, 0, "member list: {stderr}");
    stdout.lines().map(|line| line.split(", ").map(str::to_string).collect()).collect()
}

fn server(endpoint: String) -> Server {
    let rows = member_rows(&endpoint);
    assert_eq!(rows.len(), 1, "{rows:?}");
    Server {
        own_id: rows[0][0].clone(),
        own_name: rows[0][2].clone(),
        own_peer: rows[0][3].clone(),
        endpoint,
        new_peer_port: free_port(),
        learner_peer_port: free_port(),
    }
}

/// Runs the steps; each one's exit code, stdout and error lines, raw.
fn transcript(server: &Server) -> Vec<String> {
    let mut learner = String::new();
    let mut outputs = Vec::new();
    for step in STEPS {
        let args: Vec<String> = step
            .iter()
            .map(|arg| {
                arg.replace("{self}", &server.own_id)
                    .replace("{peer}", &server.own_peer)
                    .replace("{learner}", &learner)
                    .replace("{new-peer}", &format!("http://127.0.0.1:{}", server.new_peer_port))
                    .replace(
                        "{learner-peer}",
                        &format!("http://127.0.0.1:{}", server.learner_peer_port),
                    )
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = etcdctl(&server.endpoint, &args);
        if args.contains(&"--learner") && code == 0 {
            learner = stdout.split_whitespace().nth(1).unwrap_or_default().to_string();
        }
        let errors: String =
            stderr.lines().filter(|l| !l.starts_with('{')).map(|l| format!("{l}\n")).collect();
        outputs.push(format!("exit {code}\n{stdout}{errors}"));
    }
    outputs
}

/// Masks what differs between two honest servers (ids, addresses, the
/// first member's name) and sorts what is ordered by id.
fn normalise(text: &str, own_name: &str) -> String {
    let text = text.replace(&format!("{own_name}=http"), "NAME=http");
    let text = text.replace(&format!(", {own_name}, "), ", NAME, ");
    let mut lines: Vec<String> = text.lines().map(mask_line).collect();
    for line in &mut lines {
        if let Some(list) =
            line.strip_prefix("ETCD_INITIAL_CLUSTER=\"").and_then(|l| l.strip_suffix('"'))
        {
            let mut members: Vec<&str> = list.split(',').collect();
            members.sort();
            *line = format!("ETCD_INITIAL_CLUSTER=\"{}\"", members.join(","));
        }
    }
    let (head, rows): (Vec<String>, Vec<String>) =
        lines.into_iter().partition(|line| !line.starts_with("ID, "));
    let mut rows = rows;
    rows.sort();
    head.into_iter().chain(rows).collect::<Vec<_>>().join("\n")
}

/// Hex ids of 12 digits or more as `ID`, `127.0.0.1:PORT` as `ADDR`.
/// etcdctl prints some ids with `%16x`, so an id with leading zero digits
/// comes after extra spaces: those go with it.
fn mask_line(line: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let is_id = word.len() >= 12 && word.chars().all(|c| c.is_ascii_hexdigit());
        if is_id {
            while out.ends_with("  ") {
                out.pop();
            }
        }
        out.push_str(if is_id { "ID" } else { word });
        word.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    let mut masked = String::new();
    let mut rest = out.as_str();
    while let Some(at) = rest.find("127.0.0.1:") {
        masked.push_str(&rest[..at]);
        masked.push_str("ADDR");
        rest = rest[at + "127.0.0.1:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    masked.push_str(rest);
    masked
}

/// The value of `KEY="value"` in a `member add` output.
fn setting(output: &str, key: &str) -> String {
    let prefix = format!("{key}=\"");
    let line = output.lines().find_map(|l| l.strip_prefix(&prefix));
    line.and_then(|l| l.strip_suffix('"')).unwrap_or_else(|| panic!("{key} in {output}")).into()
}

/// Waits until the gateway lists a started member called `name`; its row.
fn wait_started(endpoint: &str, name: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = member_rows(endpoint).into_iter().find(|r| r[2] == name);
        if let Some(row) = row.filter(|r| r[1] == "started") {
            return row;
        }
        assert!(Instant::now() < deadline, "{name} did not start: {:?}", member_rows(endpoint));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn etcdctl_member_commands_answer_as_etcd_and_the_added_member_joins() {
    for tool in ["etcdctl", "etcd"] {
        assert!(on_path(tool), "`{tool}` is not on the PATH: install Debian's etcd packages");
    }
    let mut ember = Cluster::start("members-etcdctl", 1);
    let etcd_dir = ember.dir.join("etcd");
    let etcd_endpoint = format!("127.0.0.1:{}", free_port());
    let _etcd = start_etcd(&etcd_dir, &etcd_endpoint);
    wait_ready(&etcd_endpoint);
    wait_ready(&ember.gateway_endpoint());
    let theirs_server = server(etcd_endpoint);
    let ours_server = server(ember.gateway_endpoint());

    let theirs = transcript(&theirs_server);
    let ours = transcript(&ours_server);
    let mut differences = Vec::new();
    for ((step, want), got) in STEPS.iter().zip(&theirs).zip(&ours) {
        let want = normalise(want, &theirs_server.own_name);
        let got = normalise(got, &ours_server.own_name);
        if want != got {
            differences.push(format!("etcdctl {}\netcd:\n{want}\nember:\n{got}", step.join(" ")));
        }
    }
    assert!(differences.is_empty(), "outputs differ:\n\n{}", differences.join("\n\n"));
    let added = &ours[STEPS.iter().position(|s| s.contains(&"joiner")).unwrap()];
    assert!(added.starts_with("exit 0\nMember "), "{added}");

    // The member etcdctl added starts with the settings it printed.
    assert_eq!(setting(added, "ETCD_NAME"), "joiner");
    assert_eq!(setting(added, "ETCD_INITIAL_CLUSTER_STATE"), "existing");
    let initial_cluster = setting(added, "ETCD_INITIAL_CLUSTER");
    let joiner = ember.spawn_joiner("joiner", ours_server.new_peer_port, &initial_cluster);
    let gateway = ember.gateway_endpoint();
    let row = wait_started(&gateway, "joiner");
    let added_id = added.split_whitespace().nth(3).unwrap();
    assert_eq!(row[0], added_id, "the joiner runs under the id member add printed");
    let client = format!("127.0.0.1:{}", ember.members[joiner].client_port);
    let output = Command::new(ember_binary())
        .args(["--endpoints", &client, "get", "before-join", "--consistency", "s"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "before-join\nv\n", "{output:?}");
    let (code, stdout, stderr) = etcdctl(&gateway, &["put", "after-join", "w"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    check_cluster_header(&theirs_server, &ours_server);
}

#[test]
fn a_member_joins_with_a_printed_cluster_naming_an_unstarted_member_by_url_alone() {
    assert!(on_path("etcdctl"), "`etcdctl` is not on the PATH: install Debian's etcd-client");
    let mut ember = Cluster::start("members-unnamed", 1);
    let gateway = ember.gateway_endpoint();
    wait_ready(&gateway);
    let (code, stdout, stderr) = etcdctl(&gateway, &["put", "before-join", "v"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Two peer URLs: the unnamed member comes as two `=URL` entries.
    let (first, second) = (free_port(), free_port());
    let urls = format!("--peer-urls=http://127.0.0.1:{first},http://127.0.0.1:{second}");
    let (code, stdout, stderr) = etcdctl(&gateway, &["member", "add", "a", "--learner", &urls]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let peer_port = free_port();
    let peer = format!("--peer-urls=http://127.0.0.1:{peer_port}");
    let (code, added, stderr) = etcdctl(&gateway, &["member", "add", "b", &peer]);
    assert_eq!(code, 0, "{added}{stderr}");
    let initial_cluster = setting(&added, "ETCD_INITIAL_CLUSTER");
    for port in [first, second] {
        let unnamed = format!("=http://127.0.0.1:{port}");
        assert!(initial_cluster.split(',').any(|m| m == unnamed), "{initial_cluster}");
    }
    let b = ember.spawn_joiner("b", peer_port, &initial_cluster);
    let row = wait_started(&gateway, "b");
    assert_eq!(row[5], "false", "b is a voter: {row:?}");
    let client = format!("127.0.0.1:{}", ember.members[b].client_port);
    let output = Command::new(ember_binary())
        .args(["--endpoints", &client, "get", "before-join", "--consistency", "s"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "before-join\nv\n", "{output:?}");
    let output = Command::new(ember_binary())
        .args(["--endpoints", &client, "put", "through-b", "w"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\n", "{output:?}");
    let rows = member_rows(&gateway);
    let a = rows.iter().find(|r| r[2].is_empty()).unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!((a[1].as_str(), a[5].as_str()), ("unstarted", "true"), "{rows:?}");
}

/// The `"header":{...}` fields of an etcdctl `-w json` answer, as
/// (name, value) in the order printed.
fn header_fields(json: &str) -> Vec<(String, String)> {
    let start = json.find("\"header\":{").unwrap_or_else(|| panic!("no header in {json}"));
    let rest = &json[start + "\"header\":{".len()..];
    let body = &rest[..rest.find('}').expect("the header closes")];
    let field = |pair: &str| {
        let (name, value) = pair.split_once(':').expect("name:value");
        (name.trim_matches('"').to_string(), value.to_string())
    };
    body.split(',').filter(|p| !p.is_empty()).map(field).collect()
}

/// etcd's Cluster answers name the cluster, the member that answered and
/// the Raft term, and no revision (it answers from the member table, not
/// the store): the gateway's carry the same fields, with its member's
/// values.
fn check_cluster_header(theirs: &Server, ours: &Server) {
    let names = |server: &Server| {
        let (code, json, stderr) = etcdctl(&server.endpoint, &["member", "list", "-w", "json"]);
        assert_eq!(code, 0, "{stderr}");
        header_fields(&json)
    };
    let field_names = |fields: &[(String, String)]| -> Vec<String> {
        fields.iter().map(|(name, _)| name.clone()).collect()
    };
    let ours_fields = names(ours);
    assert_eq!(field_names(&names(theirs)), field_names(&ours_fields));
    assert_eq!(field_names(&ours_fields), ["cluster_id", "member_id", "raft_term"]);
    let value = |name: &str| -> u64 {
        let found = ours_fields.iter().find(|(n, _)| n == name).unwrap();
        found.1.parse().unwrap()
    };
    assert_eq!(value("member_id"), u64::from_str_radix(&ours.own_id, 16).unwrap());
    let (_, status, _) = etcdctl(&ours.endpoint, &["endpoint", "status", "-w", "json"]);
    let status_header = header_fields(&status);
    let term = status_header.iter().find(|(n, _)| n == "raft_term").expect("a term");
    assert_eq!(value("raft_term").to_string(), term.1, "{status}");
    let cluster = status_header.iter().find(|(n, _)| n == "cluster_id").expect("a cluster");
    assert_eq!(value("cluster_id").to_string(), cluster.1, "{status}");
    let (_, added, _) = etcdctl(
        &ours.endpoint,
        &["member", "add", "header", "--learner", "--peer-urls=http://127.0.0.1:4", "-w", "json"],
    );
    let added_fields = header_fields(&added);
    assert_eq!(field_names(&added_fields), ["cluster_id", "member_id", "raft_term"], "{added}");
    assert_eq!(added_fields[0].1, value("cluster_id").to_string());
}

#[test]
fn a_learner_added_through_etcdctl_starts_and_is_promoted() {
    assert!(on_path("etcdctl"), "`etcdctl` is not on the PATH: install Debian's etcd-client");
    let mut ember = Cluster::start("members-learner", 1);
    let gateway = ember.gateway_endpoint();
    wait_ready(&gateway);
    let peer_port = free_port();
    let peer_url = format!("--peer-urls=http://127.0.0.1:{peer_port}");
    let (code, added, stderr) = etcdctl(&gateway, &["member", "add", "l1", "--learner", &peer_url]);
    assert_eq!(code, 0, "{added}{stderr}");
    let id = added.split_whitespace().nth(1).unwrap().to_string();
    let (_, refused, stderr) = etcdctl(&gateway, &["member", "promote", &id]);
    assert!(
        stderr
            .contains("etcdserver: can only promote a learner member which is in sync with leader"),
        "{refused}{stderr}"
    );
    ember.spawn_joiner("l1", peer_port, &setting(&added, "ETCD_INITIAL_CLUSTER"));
    let row = wait_started(&gateway, "l1");
    assert_eq!((row[0].as_str(), row[5].as_str()), (id.as_str(), "true"), "{row:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, stdout, stderr) = etcdctl(&gateway, &["member", "promote", &id]);
        if code == 0 {
            assert!(stdout.contains(&format!("{id} promoted in cluster")), "{stdout}");
            break;
        }
        assert!(stderr.contains("in sync with leader"), "{stderr}");
        assert!(Instant::now() < deadline, "the learner never caught up: {stderr}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let row = wait_started(&gateway, "l1");
    assert_eq!(row[5], "false", "promoted: {row:?}");
}

#[tokio::test]
async fn etcds_client_adds_lists_and_removes_members() {
    let ember = Cluster::start("members-client", 1);
    let mut client = ember.client().await;
    let url = format!("http://127.0.0.1:{}", free_port());
    let options = etcd_client::MemberAddOptions::new().with_is_learner();
    let added = client.member_add([url.clone()], Some(options)).await.unwrap();
    let member = added.member().expect("the member added");
    assert!(member.id() != 0 && member.is_learner(), "{member:?}");
    assert_eq!((member.name(), member.peer_urls()), ("", &[url.clone()][..]));
    assert!(member.client_urls().is_empty(), "an unstarted member has no client URLs");
    assert_eq!(added.member_list().len(), 2);
    let header = added.header().expect("a header");
    assert!(header.cluster_id() != 0 && header.member_id() != 0 && header.raft_term() != 0);
    assert_eq!(header.revision(), 0, "etcd's Cluster answers carry no revision");

    let listed = client.member_list().await.unwrap();
    let found = listed.members().iter().find(|m| m.id() == member.id()).expect("listed");
    assert_eq!((found.name(), found.is_learner()), ("", true));

    let again = client.member_add([url.clone()], None).await.unwrap_err();
    let status = grpc_status(again);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), "etcdserver: Peer URLs already exists");

    let removed = client.member_remove(member.id()).await.unwrap();
    assert_eq!(removed.members().len(), 1);
    assert!(removed.members().iter().all(|m| m.id() != member.id()));
    let status = grpc_status(client.member_remove(member.id()).await.unwrap_err());
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::NotFound, "etcdserver: member not found")
    );
    // etcd takes a URL no one can dial; Ember refuses it, with etcd's error.
    let unreachable = client.member_add(["http://127.0.0.1:0".to_string()], None);
    let status = grpc_status(unreachable.await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "etcdserver: given member URLs are invalid");
    let voter = client.member_list().await.unwrap().members()[0].id();
    let status = grpc_status(client.member_remove(voter).await.unwrap_err());
    assert_eq!(
        status.message(),
        "etcdserver: re-configuration failed due to not enough started members"
    );
}
