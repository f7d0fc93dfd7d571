//! Access control through the gateway: etcdctl 3.4 against the gateway and
//! against a real etcd 3.4 beside it, the same commands from fresh stores,
//! must print the same; then etcd's Rust client logging in, and etcd's JSON
//! API with its `Authorization` header.
//!
//! Needs `etcdctl` and `etcd` on the PATH (Debian's `etcd-client` and
//! `etcd-server`; `.ci/run` installs them). Without them the test fails.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, free_port, grpc_status, on_path, start_etcd};

/// etcdctl's arguments, one invocation each, in order.
const STEPS: &[&[&str]] = &[
    &["user", "add", "root", "--new-user-password=pw"],
    &["role", "add", "root"],
    &["user", "grant-role", "root", "root"],
    &["role", "add", "reader"],
    &["role", "grant-permission", "reader", "read", "/ok/", "--prefix"],
    &["role", "grant-permission", "reader", "readwrite", "/rw"],
    &["user", "add", "alice", "--new-user-password=apw"],
    &["user", "grant-role", "alice", "reader"],
    &["put", "/ok/a", "v"],
    &["put", "/secret", "s"],
    &["auth", "enable"],
    &["get", "/ok/a", "--user", "alice:apw"],
    &["get", "/secret", "--user", "alice:apw"],
    &["put", "/rw", "x", "--user", "alice:apw"],
    &["put", "/ok/b", "x", "--user", "alice:apw"],
    &["get", "/ok/a"],
    &["get", "/ok/a", "--user", "alice:wrong"],
    &["user", "list", "--user", "alice:apw"],
    &["user", "list", "--user", "root:pw"],
    &["role", "list", "--user", "root:pw"],
    &["role", "get", "reader", "--user", "root:pw"],
    &["user", "get", "alice", "--detail", "--user", "root:pw"],
    &["get", "/secret", "--user", "root:pw"],
    &["role", "revoke-permission", "reader", "/rw", "--user", "root:pw"],
    &["put", "/rw", "y", "--user", "alice:apw"],
    &["user", "delete", "root", "--user", "root:pw"],
    &["role", "add", "reader", "--user", "root:pw"],
    &["user", "grant-role", "alice", "nobody", "--user", "root:pw"],
    &["watch", "/secret"],
    &["watch", "/secret", "--user", "alice:apw"],
    &["auth", "disable", "--user", "root:pw"],
    &["get", "/secret"],
];

#[test]
fn etcdctl_manages_access_control_as_against_etcd() {
    for tool in ["etcdctl", "etcd"] {
        assert!(on_path(tool), "`{tool}` is not on the PATH: install Debian's etcd packages");
    }
    let ember = Cluster::start("etcdctl-auth", 1);
    let etcd_endpoint = format!("127.0.0.1:{}", free_port());
    let _etcd = start_etcd(&ember.dir.join("etcd"), &etcd_endpoint);
    wait_ready(&etcd_endpoint);
    wait_ready(&ember.gateway_endpoint());

    let theirs = transcript(&etcd_endpoint);
    let ours = transcript(&ember.gateway_endpoint());
    let mut differences = Vec::new();
    for ((step, want), got) in STEPS.iter().zip(&theirs).zip(&ours) {
        if want != got {
            differences.push(format!("etcdctl {}\netcd:\n{want}\nember:\n{got}", step.join(" ")));
        }
    }
    assert!(differences.is_empty(), "outputs differ:\n\n{}", differences.join("\n\n"));
    // The transcript shows a denial and an allowed read, not only errors.
    assert!(theirs[12].contains("permission denied"), "{}", theirs[12]);
    assert!(theirs[11].contains("/ok/a\nv"), "{}", theirs[11]);
    assert!(theirs[15].contains("user name is empty"), "{}", theirs[15]);
    let watched = STEPS.iter().position(|step| step[0] == "watch").unwrap();
    assert!(theirs[watched].contains("user name is empty"), "{}", theirs[watched]);
}

/// etcd's Rust client logs in with a name and password, reads what its
/// role allows, is refused the rest, and an anonymous client beside it is
/// refused everything: the gateway never lends it the logged-in user.
#[tokio::test(flavor = "current_thread")]
async fn the_rust_client_logs_in_and_acts_as_its_user_only() {
    let ember = Cluster::start("client-auth", 1);
    let mut admin = ember.client().await;
    admin.user_add("root", "pw", None).await.unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("reader").await.unwrap();
    let read = etcd_client::Permission::read("/ok/").with_prefix();
    admin.role_grant_permission("reader", read).await.unwrap();
    admin.user_add("alice", "apw", None).await.unwrap();
    admin.user_grant_role("alice", "reader").await.unwrap();
    admin.put("/ok/a", "v", None).await.unwrap();
    admin.put("/secret", "s", None).await.unwrap();
    admin.auth_enable().await.unwrap();

    let options = etcd_client::ConnectOptions::new().with_user("alice", "apw");
    let mut alice = etcd_client::Client::connect([ember.gateway_endpoint()], Some(options))
        .await
        .expect("alice logs in through the gateway");
    let got = alice.get("/ok/a", None).await.expect("alice may read /ok/");
    assert_eq!(got.kvs()[0].value(), b"v");
    let denied = grpc_status(alice.get("/secret", None).await.unwrap_err());
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(denied.message(), "etcdserver: permission denied");
    let denied = grpc_status(alice.put("/ok/a", "w", None).await.unwrap_err());
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let anonymous = grpc_status(admin.get("/ok/a", None).await.unwrap_err());
    assert_eq!(anonymous.code(), tonic::Code::InvalidArgument);
    assert_eq!(anonymous.message(), "etcdserver: user name is empty");

    let options = etcd_client::ConnectOptions::new().with_user("alice", "nope");
    let refused = etcd_client::Client::connect([ember.gateway_endpoint()], Some(options)).await;
    let refused = grpc_status(refused.err().expect("a wrong password is refused"));
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(refused.message(), "etcdserver: authentication failed, invalid user ID or password");

    let options = etcd_client::ConnectOptions::new().with_user("root", "pw");
    let mut root = etcd_client::Client::connect([ember.gateway_endpoint()], Some(options))
        .await
        .expect("root logs in");
    let users = root.user_list().await.unwrap();
    assert_eq!(users.users(), ["alice", "root"]);
    let role = root.role_get("reader").await.unwrap();
    assert_eq!(role.permissions()[0].key(), b"/ok/");
    assert_eq!(role.permissions()[0].range_end(), b"/ok0");
    root.auth_disable().await.unwrap();
    let got = admin.get("/secret", None).await.expect("auth is off: anyone reads");
    assert_eq!(got.kvs()[0].value(), b"s");
}

/// etcd's JSON API: `/v3/auth/authenticate` answers a token, which the
/// `Authorization` header carries on later requests.
#[test]
fn the_json_api_takes_the_token_in_the_authorization_header() {
    let ember = Cluster::start("json-auth", 1);
    let endpoint = ember.gateway_endpoint();
    wait_ready(&endpoint);
    for step in &STEPS[..11] {
        let (code, _, stderr) = etcdctl(&endpoint, step);
        assert_eq!(code, 0, "etcdctl {}: {stderr}", step.join(" "));
    }
    let login = r#"{"name":"alice","password":"apw"}"#;
    let (status, body) = post(&endpoint, "/v3/auth/authenticate", login, None);
    assert_eq!(status, 200, "{body}");
    let token = body.split("\"token\":\"").nth(1).and_then(|rest| rest.split('"').next());
    let token = token.expect("a token in the answer").to_string();

    let allowed = r#"{"key":"L29rL2E="}"#; // "/ok/a"
    let denied = r#"{"key":"L3NlY3JldA=="}"#; // "/secret"
    let (status, body) = post(&endpoint, "/v3/kv/range", allowed, Some(&token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"value\":\"dg==\""), "{body}");
    let (status, body) = post(&endpoint, "/v3/kv/range", denied, Some(&token));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("etcdserver: permission denied"), "{body}");
    let (status, body) = post(&endpoint, "/v3/kv/range", allowed, None);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("etcdserver: user name is empty"), "{body}");
    let (status, body) = post(&endpoint, "/v3/kv/range", allowed, Some("forged.1.2.3.ab"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("etcdserver: invalid auth token"), "{body}");
}

/// Waits until `endpoint` answers a read.
fn wait_ready(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcdctl(endpoint, &["get", "ready"]).0 != 0 {
        assert!(Instant::now() < deadline, "{endpoint} never answered etcdctl");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every step's exit status, output and error lines.
fn transcript(endpoint: &str) -> Vec<String> {
    STEPS
        .iter()
        .map(|step| {
            let (code, stdout, stderr) = etcdctl(endpoint, step);
            // etcdctl's JSON log lines carry timestamps and connection ids.
            let errors: String = stderr
                .lines()
                .filter(|line| !line.starts_with('{'))
                .map(|line| format!("{line}\n"))
                .collect();
            format!("exit {code}\n{stdout}{errors}")
        })
        .collect()
}

fn etcdctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "5s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("etcdctl runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// One HTTP/1.1 POST; the status and the body.
fn post(endpoint: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(endpoint).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let authorization = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         {authorization}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}
