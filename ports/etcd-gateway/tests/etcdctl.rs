//! etcdctl 3.4 against the gateway and against a real etcd 3.4 started
//! beside it: the same commands, in the same order, from fresh stores, must
//! print the same thing. Only what differs by nature is masked: ids, ports,
//! names, sizes, timings and the version string.
//!
//! Needs `etcdctl` and `etcd` on the PATH (Debian's `etcd-client` and
//! `etcd-server`; `.ci/run` installs them). Without them the test fails.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, free_port, on_path, start_etcd};

/// One etcdctl invocation; `{lease}` stands for the lease granted earlier.
struct Step {
    args: &'static [&'static str],
    stdin: &'static str,
    /// Mask every number: raft indexes and remaining TTLs differ between
    /// two honest servers.
    loose: bool,
}

const fn run(args: &'static [&'static str]) -> Step {
    Step { args, stdin: "", loose: false }
}

const fn loose(args: &'static [&'static str]) -> Step {
    Step { args, stdin: "", loose: true }
}

const TXN_SUCCEEDS: &str = "mod(\"foo\") > \"0\"\n\nput foo from-txn\n\nget foo2\n\n";
const TXN_FAILS: &str = "value(\"foo\") = \"nope\"\n\nput foo never\n\nget foo\n\n";
const TXN_WRITES: &str = "\nput foo3 x\ndel foo2\n\n\n";

const STEPS: &[Step] = &[
    run(&["put", "foo", "bar"]),
    run(&["put", "foo2", "baz"]),
    run(&["get", "foo"]),
    run(&["get", "foo", "--prefix"]),
    run(&["get", "foo", "-w", "json"]),
    run(&["put", "foo", "bar2", "--prev-kv"]),
    run(&["get", "foo", "--rev=2"]),
    run(&["get", "foo", "--prefix", "--keys-only"]),
    run(&["get", "foo", "--prefix", "--count-only", "-w", "json"]),
    run(&["get", "foo", "--prefix", "--limit", "1", "--sort-by", "VALUE", "--order", "DESCEND"]),
    run(&["get", "", "--from-key"]),
    run(&["put", "foo", "--ignore-value"]),
    Step { args: &["txn"], stdin: TXN_SUCCEEDS, loose: false },
    Step { args: &["txn", "-w", "json"], stdin: TXN_FAILS, loose: false },
    Step { args: &["txn", "-w", "json"], stdin: TXN_WRITES, loose: false },
    run(&["del", "foo2"]),
    run(&["del", "nothing"]),
    run(&["del", "foo", "--prev-kv"]),
    run(&["lease", "grant", "100"]),
    run(&["put", "leased", "v", "--lease={lease}"]),
    run(&["lease", "list"]),
    run(&["lease", "list", "-w", "json"]),
    loose(&["lease", "timetolive", "{lease}", "--keys"]),
    loose(&["lease", "timetolive", "{lease}", "--keys", "-w", "json"]),
    run(&["lease", "keep-alive", "--once", "{lease}", "-w", "json"]),
    run(&["lease", "revoke", "{lease}"]),
    run(&["lease", "timetolive", "{lease}"]),
    run(&["lease", "keep-alive", "--once", "{lease}"]),
    run(&["get", "leased"]),
    run(&["compact", "5"]),
    run(&["get", "foo", "--rev=3"]),
    run(&["get", "foo", "--rev=100"]),
    run(&["put", "", "v"]),
    run(&["member", "list"]),
    run(&["member", "list", "-w", "json"]),
    loose(&["endpoint", "status"]),
    loose(&["endpoint", "status", "-w", "json"]),
    run(&["endpoint", "health"]),
    loose(&["endpoint", "hashkv", "-w", "json"]),
];

#[test]
fn etcdctl_prints_the_same_against_ember_and_etcd() {
    for tool in ["etcdctl", "etcd"] {
        assert!(
            on_path(tool),
            "`{tool}` is not on the PATH: install Debian's etcd-client and etcd-server \
             (.ci/run does)"
        );
    }
    let ember = Cluster::start("etcdctl", 1);
    let etcd_dir = ember.dir.join("etcd");
    let etcd_endpoint = format!("127.0.0.1:{}", free_port());
    let _etcd = start_etcd(&etcd_dir, &etcd_endpoint);
    wait_ready(&etcd_endpoint);
    wait_ready(&ember.gateway_endpoint());

    let theirs = transcript(&etcd_endpoint);
    let ours = transcript(&ember.gateway_endpoint());
    let mut differences = Vec::new();
    for ((step, want), got) in STEPS.iter().zip(&theirs).zip(&ours) {
        if want != got {
            differences
                .push(format!("etcdctl {}\netcd:\n{want}\nember:\n{got}", step.args.join(" ")));
        }
    }
    let watched = (watch_history(&etcd_endpoint), watch_history(&ember.gateway_endpoint()));
    if watched.0 != watched.1 {
        differences.push(format!("etcdctl watch\netcd:\n{}\nember:\n{}", watched.0, watched.1));
    }
    assert!(watched.0.contains("DELETE\nfoo2"), "the watch saw nothing: {}", watched.0);
    assert!(differences.is_empty(), "outputs differ:\n\n{}", differences.join("\n\n"));
}

/// Waits until `endpoint` answers a read (a write would move the revision
/// the script starts from).
fn wait_ready(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, _) = etcdctl(endpoint, &["get", "ready"], "");
        if code == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{endpoint} never answered etcdctl");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs every step and returns its normalised output, one per step.
fn transcript(endpoint: &str) -> Vec<String> {
    let mut lease = String::new();
    let mut outputs = Vec::new();
    for step in STEPS {
        let args: Vec<String> = step.args.iter().map(|a| a.replace("{lease}", &lease)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = etcdctl(endpoint, &args, step.stdin);
        if step.args.starts_with(&["lease", "grant"]) {
            lease = stdout.split_whitespace().nth(1).unwrap_or_default().to_string();
        }
        let output = format!("exit {code}\n{stdout}{}", errors_only(&stderr));
        outputs.push(normalise(&output, step.loose));
    }
    outputs
}

/// etcdctl's stderr without its JSON log lines (they carry timestamps and
/// connection ids).
fn errors_only(stderr: &str) -> String {
    stderr.lines().filter(|line| !line.starts_with('{')).map(|line| format!("{line}\n")).collect()
}

fn etcdctl(endpoint: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "5s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// The history of `foo` from revision 6 (after the compacted one), as
/// `etcdctl watch` prints it, read until both deletes that follow are in
/// (or 10 s pass, on a loaded machine) and the output rests, then stopped.
fn watch_history(endpoint: &str) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "watch", "foo", "--prefix", "--rev=6", "--prev-kv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch runs");
    let stdout = child.stdout.take().unwrap();
    let (lines, arriving) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let both_deletes = seen.iter().filter(|line| *line == "DELETE").count() >= 2;
        // After the last event, wait only for the rest of its lines.
        let wait = if both_deletes {
            Duration::from_millis(500)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match arriving.recv_timeout(wait) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    normalise(&seen.join("\n"), false)
}

/// Masks what differs between two honest servers: hex ids, ports, member
/// names, sizes, timings, versions, raft numbers.
fn normalise(text: &str, loose: bool) -> String {
    let text = mask_addresses(text);
    text.lines().map(|line| normalise_line(line, loose)).collect::<Vec<_>>().join("\n")
}

/// `http://127.0.0.1:PORT` and `127.0.0.1:PORT` as `ADDR`.
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

fn normalise_line(line: &str, loose: bool) -> String {
    let mut words = Vec::new();
    for word in line.split_inclusive([' ', ',', '"', ':', '(', ')', '[', ']', '{', '}']) {
        let (body, tail) = split_tail(word);
        let masked = if loose && body.contains(|c: char| c.is_ascii_digit()) {
            "N".to_string()
        } else {
            mask(body)
        };
        words.push(format!("{masked}{tail}"));
    }
    let line = words.concat();
    // A member's name sits between its id and its peer URL.
    let line = line.replace(" n1,", " NAME,").replace(" e1,", " NAME,");
    line.replace("\"name\":\"n1\"", "\"name\":NAME").replace("\"name\":\"e1\"", "\"name\":NAME")
}

fn split_tail(word: &str) -> (&str, &str) {
    match word.char_indices().last() {
        Some((at, c)) if " ,\":()[]{}".contains(c) => (&word[..at], &word[at..]),
        _ => (word, ""),
    }
}

fn mask(word: &str) -> String {
    let is_hex_id = word.len() >= 12 && word.chars().all(|c| c.is_ascii_hexdigit());
    let is_big_number = word.len() >= 6 && word.chars().all(|c| c.is_ascii_digit());
    if is_hex_id || is_big_number {
        return "ID".to_string();
    }
    if word.starts_with("http") || word.starts_with("127.0.0.1") || word.starts_with("//127.0.0.1")
    {
        return "ADDR".to_string();
    }
    if word.starts_with("3.") && word.matches('.').count() == 2 {
        return "VERSION".to_string();
    }
    if word.ends_with("ms") || word.ends_with("µs") || word.ends_with('s') && word.contains('.') {
        return "TIME".to_string();
    }
    if ["kB", "MB", "B"].contains(&word) {
        return "UNIT".to_string();
    }
    word.to_string()
}
