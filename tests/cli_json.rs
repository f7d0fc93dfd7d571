//! `ember -w json` beside `etcdctl -w json` (3.4): the same commands, in
//! the same order, each tool against its own fresh server (an Ember node,
//! a real etcd 3.4), must print the same JSON once what differs by nature
//! is masked: ids, terms, raft indexes, sizes, hashes, addresses, names,
//! timings, versions and remaining TTLs. Revisions are not masked: they
//! line up. Scripts written for etcdctl's JSON read ours.
//!
//! Needs `etcd` and `etcdctl` on the PATH (Debian's `etcd-server` and
//! `etcd-client`; `.ci/run` installs them).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cli::node::single;
use support::ports::free_port;
use support::process::Reaped;

/// One command; `{lease}` and `{member}` stand for the hex ids granted
/// and added earlier, `{peer}` for a free peer URL.
struct Step {
    args: &'static str,
    stdin: &'static str,
}

const fn run(args: &'static str) -> Step {
    Step { args, stdin: "" }
}

// The get follows the put: a read before a txn's first write is answered
// by etcd with the revision before the txn and by Ember with the one after.
const TXN_SUCCEEDS: &str =
    "value(\"foo\") = \"baz\"\n\nput foo qux\nget foo\ndel nothing\n\nget foo\n\n";
const TXN_FAILS: &str = "value(\"foo\") = \"nope\"\n\nput foo never\n\nget foo\n\n";

const STEPS: &[Step] = &[
    run("put foo bar"),
    run("put foo baz --prev-kv"),
    run("put foo2 x"),
    run("get foo"),
    run("get foo --prefix"),
    run("get foo --prefix --keys-only --limit 1"),
    run("get nope"),
    run("del nothing"),
    run("del foo2 --prev-kv"),
    Step { args: "txn", stdin: TXN_SUCCEEDS },
    Step { args: "txn", stdin: TXN_FAILS },
    run("compaction 3"),
    run("get foo --rev 2"),
    run("lease grant 100"),
    run("lease list"),
    run("put leased v --lease={lease}"),
    run("lease timetolive {lease}"),
    run("lease timetolive {lease} --keys"),
    run("lease keep-alive --once {lease}"),
    run("lease revoke {lease}"),
    run("lease timetolive {lease}"),
    run("lease list"),
    run("member list"),
    run("member add added --peer-urls={peer} --learner"),
    run("member update {member} --peer-urls={peer2}"),
    run("member remove {member}"),
    run("endpoint status"),
    run("endpoint health"),
    run("endpoint hashkv"),
    run("alarm list"),
    run("alarm disarm"),
    run("user add root --new-user-password=pw"),
    run("role add root"),
    run("user grant-role root root"),
    run("role add reader"),
    run("role grant-permission reader read /ok/ --prefix"),
    run("role grant-permission reader readwrite k1 k3"),
    run("role get reader"),
    run("role list"),
    // Go escapes <, > and & in JSON strings; so must Ember.
    run("user add a<b>&c --new-user-password=pw"),
    run("user list"),
    run("user get root"),
    run("user get root --detail"),
    run("role get nobody"),
    run("auth enable"),
    run("user list --user root:pw"),
    run("role revoke-permission reader k1 k3 --user root:pw"),
    run("auth disable --user root:pw"),
    run("user revoke-role root root"),
    run("role delete reader"),
    run("user delete root"),
    run("user delete a<b>&c"),
];

#[test]
fn ember_prints_etcdctls_json() {
    for tool in ["etcdctl", "etcd"] {
        assert!(
            on_path(tool),
            "`{tool}` is not on the PATH: install Debian's etcd-client and etcd-server"
        );
    }
    let (cluster, ember_endpoint) = single("cli-json");
    let etcd_endpoint = format!("127.0.0.1:{}", free_port());
    let _etcd = start_etcd(&cluster.dir.join("etcd"), &etcd_endpoint);
    wait_etcd(&etcd_endpoint);

    let theirs = transcript(Tool::Etcdctl, &etcd_endpoint);
    let ours = transcript(Tool::Ember, &ember_endpoint);
    let mut differences = Vec::new();
    for ((step, want), got) in STEPS.iter().zip(&theirs).zip(&ours) {
        if want != got {
            differences.push(format!("{}\netcdctl: {want}\nember:   {got}", step.args));
        }
    }
    // The history of foo since the compaction, then a watch from the
    // compacted revision, which the server cancels.
    for args in ["watch foo --prefix --rev 4 --prev-kv", "watch foo --rev 2"] {
        let watched =
            (watch(Tool::Etcdctl, &etcd_endpoint, args), watch(Tool::Ember, &ember_endpoint, args));
        if watched.0 != watched.1 {
            differences.push(format!("{args}\netcdctl: {}\nember:   {}", watched.0, watched.1));
        }
        assert!(watched.0.contains("\"Header\""), "etcdctl's watch printed nothing: {}", watched.0);
    }
    assert!(theirs[0].starts_with("exit 0 {\"header\""), "etcdctl printed: {}", theirs[0]);
    assert!(differences.is_empty(), "outputs differ:\n\n{}", differences.join("\n\n"));
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Etcdctl,
    Ember,
}

fn command(tool: Tool, endpoint: &str) -> Command {
    let mut command = match tool {
        Tool::Etcdctl => {
            let mut command = Command::new("etcdctl");
            command.env("ETCDCTL_API", "3");
            command
        }
        Tool::Ember => {
            let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
            command.env_remove("EMBER_ENDPOINTS").env_remove("EMBER_W");
            command
        }
    };
    command.args(["--endpoints", endpoint, "--command-timeout", "5s", "-w", "json"]);
    command
}

/// Runs every step; per step the exit code and the normalised stdout.
fn transcript(tool: Tool, endpoint: &str) -> Vec<String> {
    let peers =
        [format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port())];
    let (mut lease, mut member) = (String::new(), String::new());
    let mut outputs = Vec::new();
    for step in STEPS {
        let args = step
            .args
            .replace("{lease}", &lease)
            .replace("{member}", &member)
            .replace("{peer}", &peers[0])
            .replace("{peer2}", &peers[1]);
        let (code, stdout) = run_tool(tool, endpoint, &args, step.stdin);
        if step.args.starts_with("lease grant") {
            lease = hex_after(&stdout, "\"ID\":");
        }
        if step.args.starts_with("member add") {
            member = hex_after(&stdout, "\"member\":{\"ID\":");
        }
        // Ember knows a member's name from the moment it is added (its id
        // derives from it); etcd learns it when the member starts.
        let stdout = stdout.replace("\"name\":\"added\",", "");
        let mut stdout = normalise(&stdout, step.args.contains("timetolive"));
        if step.args.starts_with("member update") {
            // etcd 3.4 drops a learner's flag when its peer URLs change;
            // Ember keeps it.
            stdout = stdout.replace(",\"isLearner\":true", "");
        }
        if step.args.starts_with("endpoint status") {
            // etcd reports the space its data uses inside its file; Ember
            // has no such figure and leaves the field out.
            stdout = drop_member(&stdout, "dbSizeInUse");
        }
        outputs.push(format!("exit {code} {stdout}"));
    }
    outputs
}

fn run_tool(tool: Tool, endpoint: &str, args: &str, stdin: &str) -> (i32, String) {
    let mut child = command(tool, endpoint)
        .args(args.split(' '))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the client runs");
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let output = child.wait_with_output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The decimal number after `marker`, in hex, as both tools take ids.
fn hex_after(text: &str, marker: &str) -> String {
    let at = text.find(marker).map(|at| at + marker.len()).unwrap_or(text.len());
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    format!("{:x}", digits.parse::<u64>().unwrap_or(0))
}

/// A watch's lines until a second passes without one (or five in all).
fn watch(tool: Tool, endpoint: &str, args: &str) -> String {
    let mut child = command(tool, endpoint)
        .args(args.split(' '))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the watch runs");
    let stdout = child.stdout.take().unwrap();
    let (lines, arriving) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while let Ok(line) = arriving.recv_timeout(Duration::from_secs(1)) {
        // The server names no revision in a cancel for compaction; Ember's
        // member names its own.
        let line = if line.contains("\"CompactRevision\":3") {
            drop_member(&line, "revision")
        } else {
            line
        };
        seen.push(normalise(&line, false));
        if Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen.join("\n")
}

/// Members whose values differ between two honest servers.
const MASKED: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "ID",
    "id",
    "leader",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "dbSize",
    "hash",
    "took",
    "name",
];

fn normalise(text: &str, ttl_loose: bool) -> String {
    let mut text = mask_addresses(text.trim_end());
    for member in MASKED {
        text = mask_member(&text, member, false);
    }
    // A status's version string; a key's version is a number and stays.
    text = mask_member(&text, "version", true);
    if ttl_loose {
        text = mask_member(&text, "ttl", false);
    }
    sort_members(&text)
}

/// Replaces the value of every `"name":` with `X` (only string values
/// when `strings_only`).
fn mask_member(text: &str, name: &str, strings_only: bool) -> String {
    let key = format!("\"{name}\":");
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(&key) {
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        let end = match rest.strip_prefix('"') {
            Some(inner) => inner.find('"').map_or(rest.len(), |end| end + 2),
            None if strings_only => continue,
            None => rest.find([',', '}', ']']).unwrap_or(rest.len()),
        };
        out.push('X');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `text` without the member `"name":value` (and its comma).
fn drop_member(text: &str, name: &str) -> String {
    let key = format!(",\"{name}\":");
    let Some(at) = text.find(&key) else { return text.to_string() };
    let rest = &text[at + key.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    format!("{}{}", &text[..at], &rest[end..])
}

/// A member list in a stable order: with the ids masked, the order the
/// servers chose (by id) says nothing.
fn sort_members(text: &str) -> String {
    let Some(start) = text.find("\"members\":[{").map(|at| at + "\"members\":[".len()) else {
        return text.to_string();
    };
    let Some(end) = text.rfind("}]") else { return text.to_string() };
    let inner = &text[start + 1..end];
    let mut members: Vec<&str> = inner.split("},{").collect();
    members.sort();
    format!("{}{{{}}}{}", &text[..start], members.join("},{"), &text[end + 1..])
}

/// `127.0.0.1:PORT` (with or without `http://`) as `ADDR`.
fn mask_addresses(text: &str) -> String {
    let text = text.replace("http://127.0.0.1:", "127.0.0.1:");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..at]);
        out.push_str("ADDR");
        rest = rest[at + "127.0.0.1:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn start_etcd(dir: &Path, client: &str) -> Reaped {
    let peer = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let child = Command::new("etcd")
        .args(["--name", "e1"])
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen-client-urls", &format!("http://{client}")])
        .args(["--advertise-client-urls", &format!("http://{client}")])
        .args(["--listen-peer-urls", &format!("http://{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
        .args(["--initial-cluster", &format!("e1=http://{peer}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd starts");
    Reaped(child)
}

/// Waits until etcd answers a read (a write would move the revisions).
fn wait_etcd(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while run_tool(Tool::Etcdctl, endpoint, "get ready", "").0 != 0 {
        assert!(Instant::now() < deadline, "etcd at {endpoint} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}
