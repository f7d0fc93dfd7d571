//! etcd's JSON API (`POST /v3/kv/range` and the rest) against the gateway
//! and against a real etcd 3.4 started beside it: the same requests, in the
//! same order, from fresh stores, must get the same HTTP status and the
//! same body, byte for byte, once what differs by nature is masked (ids,
//! terms, raft indexes, sizes, addresses, names, the version).
//!
//! The client is a few lines of HTTP/1.1 over a `TcpStream`, as an
//! HTTP-only client (Patroni, a shell script with curl) talks to etcd.
//! Needs `etcd` on the PATH (Debian's `etcd-server`; `.ci/run` installs it).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Cluster, free_port, on_path, start_etcd};

/// One request of the script.
struct Step {
    path: &'static str,
    body: &'static str,
    /// Compare the status and etcd's error code only: the texts of JSON
    /// syntax errors are Go's own.
    code_only: bool,
    /// Mask the `TTL` values too: a lease's remaining time depends on when
    /// the second turns.
    ttl_loose: bool,
}

const fn post(path: &'static str, body: &'static str) -> Step {
    Step { path, body, code_only: false, ttl_loose: false }
}

const fn code_only(path: &'static str, body: &'static str) -> Step {
    Step { path, body, code_only: true, ttl_loose: false }
}

// base64: foo Zm9v, bar YmFy, baz YmF6, qux cXV4, fop Zm9w, nope bm9wZQ==,
// a YQ==, b Yg==, leased bGVhc2Vk.
const STEPS: &[Step] = &[
    post("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
    post("/v3/kv/put", r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#),
    post("/v3/kv/put", r#"{"key":"Zm9vMg==","value":"YmFy","prevKv":false}"#),
    post("/v3/kv/range", r#"{"key":"Zm9v"}"#),
    post("/v3/kv/range", r#"{"key":"bm9wZQ=="}"#),
    post("/v3/kv/range", r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#),
    post("/v3/kv/range", r#"{"key":"Zm9v","rangeEnd":"Zm9w","sortOrder":"DESCEND","limit":1}"#),
    post(
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","keys_only":true,"sort_target":"VALUE"}"#,
    ),
    post("/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#),
    post("/v3/kv/range", r#"{"key":"Zm9v","unknown_member":1}"#),
    post("/v3beta/kv/range", r#"{"key":"Zm9v"}"#),
    post("/v3/kv/range", ""),
    post("/v3/kv/put", "{}"),
    code_only("/v3/kv/range", r#"{"key":"Zm9v!"}"#),
    code_only("/v3/kv/range", "notjson"),
    code_only("/v3/kv/range", r#"{"key":"Zm9v","revision":"abc"}"#),
    post("/v3/kv/range", r#"{"key":"Zm9v","sort_order":"WRONG"}"#),
    post(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],
            "success":[{"request_put":{"key":"Zm9v","value":"cXV4"}},
                       {"request_range":{"key":"Zm9v"}},
                       {"request_delete_range":{"key":"bm9wZQ=="}}]}"#,
    ),
    post(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","target":"CREATE","create_revision":"0"}],
            "success":[{"requestPut":{"key":"Zm9v","value":"cXV4"}}],
            "failure":[{"request_range":{"key":"Zm9v"}}]}"#,
    ),
    post(
        "/v3/kv/txn",
        r#"{"success":[{"request_txn":{"success":[{"request_put":{"key":"YQ==","value":"Yg=="}}]}}]}"#,
    ),
    post("/v3/kv/deleterange", r#"{"key":"YQ==","prev_kv":true}"#),
    post("/v3/kv/deleterange", r#"{"key":"YQ=="}"#),
    post("/v3/kv/compaction", r#"{"revision":"3"}"#),
    post("/v3/kv/compaction", r#"{"revision":3}"#),
    post("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#),
    post("/v3/lease/grant", r#"{"TTL":"100","ID":"4242"}"#),
    post("/v3/kv/put", r#"{"key":"bGVhc2Vk","value":"dg==","lease":4242}"#),
    post("/v3/kv/lease/leases", "{}"),
    post("/v3/lease/leases", ""),
    Step {
        path: "/v3/kv/lease/timetolive",
        body: r#"{"ID":4242,"keys":true}"#,
        code_only: false,
        ttl_loose: true,
    },
    post("/v3/lease/keepalive", r#"{"ID":4242}"#),
    post("/v3/kv/lease/revoke", r#"{"ID":4242}"#),
    post("/v3/lease/revoke", r#"{"ID":"4242"}"#),
    post("/v3/lease/timetolive", r#"{"ID":4242}"#),
    post("/v3/lease/keepalive", r#"{"ID":4242} {"ID":"4243"}"#),
    post("/v3/kv/range", r#"{"key":"bGVhc2Vk"}"#),
    post("/v3/cluster/member/list", "{}"),
    post("/v3/maintenance/status", "{}"),
    post("/v3/maintenance/alarm", "{}"),
    post("/v3/cluster/member/promote", r#"{"ID":1}"#),
    post("/v3/auth/authenticate", r#"{"name":"root","password":"pw"}"#),
    post("/v3/auth/user/add", r#"{"name":"root","password":"pw"}"#),
    post("/v3/auth/user/add", r#"{"name":"root","password":"pw"}"#),
    post("/v3/auth/role/add", r#"{"name":"root"}"#),
    post("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
    post("/v3/auth/role/add", r#"{"name":"reader"}"#),
    post(
        "/v3/auth/role/grant",
        r#"{"name":"reader","perm":{"permType":"READWRITE","key":"YQ==","range_end":"Yg=="}}"#,
    ),
    post("/v3/auth/role/get", r#"{"role":"reader"}"#),
    post("/v3/auth/role/list", "{}"),
    post("/v3/auth/user/list", "{}"),
    post("/v3/auth/user/get", r#"{"name":"root"}"#),
    post("/v3/auth/user/get", r#"{"name":"nobody"}"#),
    post("/v3/auth/role/revoke", r#"{"role":"reader","key":"YQ==","range_end":"Yg=="}"#),
    post("/v3/auth/role/delete", r#"{"role":"reader"}"#),
    code_only("/v3/kv/nothing-here", "{}"),
];

#[test]
fn the_json_api_answers_as_etcd_does() {
    assert!(on_path("etcd"), "`etcd` is not on the PATH: install Debian's etcd-server");
    let ember = Cluster::start("json", 1);
    let etcd_endpoint = format!("127.0.0.1:{}", free_port());
    let _etcd = start_etcd(&ember.dir.join("etcd"), &etcd_endpoint);
    wait_ready(&etcd_endpoint);
    wait_ready(&ember.gateway_endpoint());

    let theirs = transcript(&etcd_endpoint);
    let ours = transcript(&ember.gateway_endpoint());
    let mut differences = Vec::new();
    for ((step, want), got) in STEPS.iter().zip(&theirs).zip(&ours) {
        if want != got {
            differences
                .push(format!("POST {} {}\netcd:  {want}\nember: {got}", step.path, step.body));
        }
    }
    // The history of foo since the compaction, a watch refused for a
    // compacted start, a progress request and a cancel.
    for body in [
        r#"{"create_request":{"key":"Zm9v","range_end":"Zm9w","start_revision":"4","prev_kv":true}}"#,
        r#"{"create_request":{"key":"Zm9v","start_revision":"2"}}"#,
        r#"{"create_request":{"key":"Zm9v","start_revision":"9"}} {"progress_request":{}}"#,
        r#"{"create_request":{"key":"Zm9v","start_revision":"9","watch_id":"5"}}{"cancel_request":{"watch_id":"5"}}"#,
    ] {
        let watched = (watch(&etcd_endpoint, body), watch(&ember.gateway_endpoint(), body));
        if watched.0 != watched.1 {
            differences.push(format!("watch {body}\netcd:  {}\nember: {}", watched.0, watched.1));
        }
        assert!(watched.0.contains("created"), "etcd's watch answered nothing: {}", watched.0);
    }
    assert!(theirs[0].starts_with("200 {\"header\""), "etcd answered: {}", theirs[0]);
    assert!(differences.is_empty(), "answers differ:\n\n{}", differences.join("\n\n"));
}

/// What etcd 3.4 has and Ember does not yet answers UNIMPLEMENTED, in
/// etcd's error body; a member add with a URL no one can dial is refused; GET is not a method of the API; a request from a web
/// page is refused and changes nothing; a watch stays open while the client
/// reads, with events written as they happen.
#[test]
fn the_json_api_says_what_it_cannot_do_and_streams_as_it_goes() {
    let ember = Cluster::start("json-edges", 1);
    let gateway = ember.gateway_endpoint();
    wait_ready(&gateway);
    let (status, body) = request(&gateway, "POST", "/v3/maintenance/hash", "{}");
    assert_eq!(status, 501, "{body}");
    assert!(body.starts_with(r#"{"error":"ember: "#) && body.ends_with(r#","code":12}"#), "{body}");
    let member_add = r#"{"peerURLs":["http://127.0.0.1:0"],"isLearner":true}"#;
    let (status, body) = request(&gateway, "POST", "/v3/cluster/member/add", member_add);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("etcdserver: given member URLs are invalid"), "{body}");
    // etcd 3.4 crashes on a grant without a permission; Ember answers
    // with the error etcd later gave it.
    let (status, body) = request(&gateway, "POST", "/v3/auth/role/add", r#"{"name":"r"}"#);
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(&gateway, "POST", "/v3/auth/role/grant", r#"{"name":"r"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("etcdserver: permission not given"), "{body}");
    let (_, members) = request(&gateway, "POST", "/v3/cluster/member/list", "{}");
    assert_eq!(members.matches("\"ID\"").count(), 1, "the refused add added: {members}");
    assert_eq!(request(&gateway, "GET", "/v3/kv/range", "").0, 405);
    let from_a_page = http_request("POST", "/v3/kv/put", r#"{"key":"cGFnZQ==","value":"eA=="}"#)
        .replace("Host: localhost\r\n", "Host: localhost\r\nOrigin: http://example.com\r\n");
    let (status, body) = send(&gateway, &from_a_page);
    assert_eq!(status, 403, "{body}");
    assert!(body.ends_with(r#","code":7}"#), "{body}");
    let (_, nothing) = request(&gateway, "POST", "/v3/kv/range", r#"{"key":"cGFnZQ=="}"#);
    assert!(!nothing.contains("kvs"), "the refused put wrote: {nothing}");
    assert_eq!(request(&gateway, "GET", "/version", "").0, 200);

    let mut stream = TcpStream::connect(&gateway).unwrap();
    let body = r#"{"create_request":{"key":"bGl2ZQ=="}}"#;
    write!(stream, "{}", http_request("POST", "/v3/watch", body)).unwrap();
    let mut reader = ChunkedLines::new(stream);
    assert!(reader.next_line(Duration::from_secs(5)).unwrap().contains(r#""created":true"#));
    let (status, _) =
        request(&gateway, "POST", "/v3/kv/put", r#"{"key":"bGl2ZQ==","value":"MQ=="}"#);
    assert_eq!(status, 200);
    let event = reader.next_line(Duration::from_secs(5)).expect("the put's event arrives");
    assert!(
        event.contains(r#""kv":{"key":"bGl2ZQ==""#) && event.contains(r#""value":"MQ==""#),
        "{event}"
    );
}

/// Waits until `endpoint` answers a read over JSON.
fn wait_ready(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(endpoint).is_ok() {
            let (status, _) = request(endpoint, "POST", "/v3/kv/range", r#"{"key":"cmVhZHk="}"#);
            if status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{endpoint} never answered a JSON read");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn transcript(endpoint: &str) -> Vec<String> {
    let mut answers = Vec::new();
    for step in STEPS {
        let (status, body) = request(endpoint, "POST", step.path, step.body);
        let body =
            if step.code_only { error_code(&body) } else { normalise(&body, step.ttl_loose) };
        answers.push(format!("{status} {body}"));
    }
    answers
}

/// A watch's answers within a second of its last one, normalised.
fn watch(endpoint: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(endpoint).unwrap();
    write!(stream, "{}", http_request("POST", "/v3/watch", body)).unwrap();
    let mut reader = ChunkedLines::new(stream);
    let mut lines = Vec::new();
    while let Some(line) = reader.next_line(Duration::from_secs(1)) {
        lines.push(normalise(&line, false));
    }
    lines.join("\n")
}

fn http_request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Sends one request and reads the whole answer: the status and the body.
fn request(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    send(endpoint, &http_request(method, path, body))
}

fn send(endpoint: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(endpoint).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest.as_bytes()).0 } else { rest.to_string() };
    (status, body.trim_end_matches('\n').to_string())
}

/// The data of a chunked body as far as it is complete, and whether its
/// last chunk has come.
fn dechunk(mut raw: &[u8]) -> (String, bool) {
    let mut data = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
        else {
            break;
        };
        if size == 0 {
            return (String::from_utf8_lossy(&data).into_owned(), true);
        }
        let start = line_end + 2;
        if raw.len() < start + size + 2 {
            break;
        }
        data.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    (String::from_utf8_lossy(&data).into_owned(), false)
}

/// Reads a streamed answer line by line as it arrives.
struct ChunkedLines {
    stream: TcpStream,
    raw: Vec<u8>,
    lines_taken: usize,
}

impl ChunkedLines {
    fn new(stream: TcpStream) -> ChunkedLines {
        ChunkedLines { stream, raw: Vec::new(), lines_taken: 0 }
    }

    /// The next whole line, or `None` when none comes within `wait`.
    fn next_line(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(body_at) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let (data, _) = dechunk(&self.raw[body_at + 4..]);
                let complete: Vec<&str> =
                    data.split_inclusive('\n').filter(|l| l.ends_with('\n')).collect();
                if let Some(line) = complete.get(self.lines_taken) {
                    self.lines_taken += 1;
                    return Some(line.trim_end().to_string());
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut buffer = [0; 4096];
            match self.stream.read(&mut buffer) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.raw.extend_from_slice(&buffer[..n]),
            }
        }
    }
}

/// `{"error":…,"code":N}` as just its code.
fn error_code(body: &str) -> String {
    match body.rfind("\"code\":") {
        Some(at) => format!("code {}", &body[at + 7..].trim_end_matches('}')),
        None => format!("no error code in {body}"),
    }
}

/// Members whose values differ between two honest servers, masked by name.
const MASKED: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "leader",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "dbSize",
    "dbSizeInUse",
    "version\":\"3.",
    "name",
];

fn normalise(body: &str, ttl_loose: bool) -> String {
    let mut text = mask_addresses(body);
    for member in MASKED {
        text = mask_member(&text, member);
    }
    // A member's id is the only ID in a member list or status.
    if text.contains("\"members\":") {
        text = mask_member(&text, "ID");
    }
    if ttl_loose {
        text = mask_member(&text, "TTL");
    }
    text
}

/// Replaces the value of every `"member":` with `"X"`.
fn mask_member(text: &str, member: &str) -> String {
    let (key, prefix) = match member.split_once("\":\"") {
        Some((key, prefix)) => (format!("\"{key}\":"), format!("\"{prefix}")),
        None => (format!("\"{member}\":"), String::new()),
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(&key) {
        let value_at = at + key.len();
        out.push_str(&rest[..value_at]);
        rest = &rest[value_at..];
        if !rest.starts_with(&prefix) {
            continue;
        }
        let end = if let Some(inner) = rest.strip_prefix('"') {
            inner.find('"').map_or(rest.len(), |e| e + 2)
        } else {
            rest.find([',', '}', ']']).unwrap_or(rest.len())
        };
        out.push_str("\"X\"");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `http://127.0.0.1:PORT` as `ADDR`.
fn mask_addresses(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("http://127.0.0.1:") {
        out.push_str(&rest[..at]);
        out.push_str("ADDR");
        rest =
            rest[at + "http://127.0.0.1:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}
