//! TLS on the client and peer ports, and peer authentication, with real
//! `ember serve` processes and certificates made by openssl.
//!
//! - a cluster of three with client and peer TLS serves every command,
//!   over the Rust client and over `ember`, through a leader's death and a
//!   certificate rotation by SIGHUP;
//! - clients without a certificate, or with one from another CA, and
//!   plaintext clients are refused, the last in words;
//! - peers that cannot prove they are the member their hello names are
//!   refused: a certificate of another CA, one valid for another host, a
//!   hello from a non-member, and without TLS a hello that lacks the secret;
//! - a peer port on the network needs authentication or `--peer-insecure`;
//! - with auth on, a client certificate's CN is the user of a request that
//!   carries no token, and a token wins over it;
//! - TLS 1.2 (ECDHE with AEAD suites only) is taken on the client, peer and
//!   metrics ports with `--tls-min-version TLS1.2`, spoken between members
//!   capped at it by `--tls-max-version`, and refused by default; checked
//!   with `curl` and `openssl s_client`;
//! - our own clients (`ember` and the Rust client) reach a member capped at
//!   TLS 1.2, and get TLS 1.3 from a member that speaks both.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, Config, Credentials};
use ember::proto::{
    self, ErrorCode, Permission, PermissionType, PutRequest, RangeRequest, Request, Response,
    WatchCreateRequest, WatchMessage,
};
use ember::server::config::{DEFAULT_CLUSTER_TOKEN, cluster_id};
use ember::tls::{ClientFiles, TlsVersion, TlsVersions};
use ember::transport::wire::{HELLO_BYTES, Hello};
use support::certs::Certs;
use support::cluster::Cluster;
use support::ports::free_port;

const LEADER_WAIT: Duration = Duration::from_secs(15);

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The flags of member `name` with client TLS (client certificates
/// required) and peer TLS, all from CA `ca`.
fn tls_args(certs: &Certs, ca: &str, name: &str) -> Vec<String> {
    let (cert, key) = (path(&certs.pem(name)), path(&certs.key(name)));
    let ca = path(&certs.pem(ca));
    let args = [
        "--cert-file",
        &cert,
        "--key-file",
        &key,
        "--trusted-ca-file",
        &ca,
        "--client-cert-auth",
        "--peer-cert-file",
        &cert,
        "--peer-key-file",
        &key,
        "--peer-trusted-ca-file",
        &ca,
    ];
    args.iter().map(|s| s.to_string()).collect()
}

fn client_tls(certs: &Certs, ca: &str, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    let files = ClientFiles {
        ca: Some(certs.pem(ca)),
        cert: cert.map(|c| certs.pem(c)),
        key: cert.map(|c| certs.key(c)),
        insecure_skip_verify: false,
    };
    files.load().unwrap()
}

/// A cluster of three with client and peer TLS; clients of the test carry
/// the certificate `client`.
fn tls_cluster(test: &str) -> (Cluster, Certs) {
    let mut cluster = Cluster::prepare(test, 3, &[]);
    let certs = Certs::new(&cluster.dir.join("certs"));
    certs.ca("ca");
    certs.ca("other-ca");
    for name in ["n1", "n2", "n3", "client"] {
        certs.leaf("ca", name, "IP:127.0.0.1,DNS:localhost");
    }
    cluster.peer_scheme = "https";
    cluster.member_args = ["n1", "n2", "n3"].iter().map(|n| tls_args(&certs, "ca", n)).collect();
    // Member n1 also serves a metrics port, TLS with its client certificate.
    let metrics_url = format!("https://127.0.0.1:{}", free_port());
    cluster.member_args[0].extend(["--listen-metrics-urls".to_string(), metrics_url]);
    cluster.client_tls = Some(client_tls(&certs, "ca", Some("client")));
    for i in 0..3 {
        cluster.spawn(i);
    }
    (cluster, certs)
}

/// Runs `ember` against member `i` with the given TLS flags.
fn ember(cluster: &Cluster, i: usize, tls: &[String], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["--endpoints", &format!("https://{}", cluster.members[i].endpoint())])
        .args(tls)
        .args(args)
        .output()
        .unwrap()
}

fn cli_tls(certs: &Certs, cert: &str) -> Vec<String> {
    let pem = path(&certs.pem(cert));
    let key = path(&certs.key(cert));
    vec!["--cacert".into(), path(&certs.pem("ca")), "--cert".into(), pem, "--key".into(), key]
}

fn connect_with(cluster: &Cluster, i: usize, tls: Arc<rustls::ClientConfig>) -> String {
    let mut config = Config::new(vec![cluster.members[i].endpoint()]);
    config.tls = Some(tls);
    config.dial_timeout = Duration::from_secs(2);
    match Client::connect(config) {
        Ok(_) => "connected".to_string(),
        Err(e) => e.to_string(),
    }
}

/// Dials member `i`'s peer port over TLS with certificate `cert` and sends
/// a hello from member `from`. True when the member answered the hello
/// (accepted it), false when it closed the connection.
fn peer_hello_answered(cluster: &Cluster, certs: &Certs, i: usize, cert: &str, from: u64) -> bool {
    let tcp = TcpStream::connect(("127.0.0.1", cluster.members[i].peer_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let config = client_tls(certs, "ca", Some(cert));
    let name = ember::tls::server_name("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let cluster_id = cluster_id(std::iter::empty(), DEFAULT_CLUSTER_TOKEN);
    let hello = Hello { cluster_id, from, to: cluster.members[i].id };
    if stream.write_all(&hello.encode()).and_then(|()| stream.flush()).is_err() {
        return false;
    }
    let mut reply = [0u8; HELLO_BYTES];
    stream.read_exact(&mut reply).is_ok()
}

/// An HTTP GET over TLS to `addr`, with the client's certificate; the
/// whole answer.
fn https_get(addr: &str, certs: &Certs, path: &str) -> String {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let config = client_tls(certs, "ca", Some("client"));
    let name = ember::tls::server_name("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    // The server closes after its answer, without a TLS close_notify.
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8(answer).unwrap()
}

fn wait_logged(cluster: &Cluster, i: usize, words: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cluster.log_of(i).lines().any(|l| words.iter().all(|w| l.contains(w))) {
        assert!(Instant::now() < deadline, "member {i} never logged {words:?}");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tls_cluster_serves_every_command_and_refuses_whoever_cannot_prove_itself() {
    let (mut cluster, certs) = tls_cluster("tls-cluster");
    let leader = cluster.wait_leader(LEADER_WAIT);

    // The Rust client: put, get at another member, watch.
    let mut writer = cluster.client(leader);
    let mut reader = cluster.client((leader + 1) % 3);
    let mut watcher = cluster.client((leader + 2) % 3);
    let watch = WatchCreateRequest { key: b"k".to_vec(), ..Default::default() };
    let mut events = watcher.watch(watch).unwrap();
    writer.put(b"k", b"v1").unwrap();
    assert_eq!(reader.get(b"k").unwrap().unwrap().value, b"v1");
    let mut seen = false;
    for message in events.by_ref().take(3) {
        if let WatchMessage::Events { events, .. } = message.unwrap() {
            seen = events.iter().any(|e| e.kv.value == b"v1");
            break;
        }
    }
    assert!(seen, "the watch saw the put");

    // `ember` with --cacert, --cert and --key: member list names https URLs.
    let tls = cli_tls(&certs, "client");
    let out = ember(&cluster, 0, &tls, &["member", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listed.matches("https://127.0.0.1").count(), 6, "{listed}");
    let out = ember(&cluster, 1, &tls, &["get", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k\nv1\n");

    // The metrics and the probes over the TLS client port.
    let scrape = https_get(&cluster.members[leader].endpoint(), &certs, "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert!(scrape.contains("\netcd_server_is_leader 1\n"), "{scrape}");
    assert!(https_get(&cluster.members[0].endpoint(), &certs, "/readyz").ends_with("\r\n\r\nok\n"));
    // n1's metrics port: the same answers, TLS with the client port's files.
    let metrics_url = cluster.member_args[0].last().unwrap().clone();
    let metrics_addr = metrics_url.trim_start_matches("https://");
    let scrape = https_get(metrics_addr, &certs, "/metrics");
    assert!(scrape.contains("\netcd_server_has_leader 1\n"), "{scrape}");

    // Clients that cannot prove themselves, and a plaintext one.
    let refused = connect_with(&cluster, 0, client_tls(&certs, "ca", None));
    assert!(refused.contains("CertificateRequired"), "{refused}");
    certs.leaf("other-ca", "stranger", "IP:127.0.0.1");
    let stranger = ClientFiles {
        ca: Some(certs.pem("ca")),
        cert: Some(certs.pem("stranger")),
        key: Some(certs.key("stranger")),
        insecure_skip_verify: false,
    };
    let refused = connect_with(&cluster, 0, stranger.load().unwrap());
    assert!(refused.contains("TLS handshake"), "{refused}");
    let plain = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["--endpoints", &cluster.members[0].endpoint(), "get", "k"])
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(1));
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(said.contains("speaks TLS only"), "{said}");

    // Peers: the right CA and a member's id, but a certificate for another
    // host; a certificate of another CA; a good certificate and a
    // non-member's id. The control: a member's certificate and id.
    certs.leaf("ca", "elsewhere", "IP:127.0.0.2");
    let n2 = cluster.members[1].id;
    assert!(!peer_hello_answered(&cluster, &certs, 0, "elsewhere", n2));
    wait_logged(&cluster, 0, &["refused peer connection", "not valid for 127.0.0.1"]);
    assert!(!peer_hello_answered(&cluster, &certs, 1, "stranger", cluster.members[0].id));
    wait_logged(&cluster, 1, &["refused peer connection"]);
    assert!(!peer_hello_answered(&cluster, &certs, 2, "n1", 0x5eed));
    wait_logged(&cluster, 2, &["refused peer connection", "not a known peer"]);
    assert!(peer_hello_answered(&cluster, &certs, 0, "n2", n2));

    // Certificate rotation: new certificates from the same CA, SIGHUP, and
    // clients old and new keep working.
    for name in ["n1", "n2", "n3"] {
        certs.leaf("ca", name, "IP:127.0.0.1,DNS:localhost");
    }
    for member in &cluster.members {
        let pid = member.pid().unwrap().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    }
    for i in 0..3 {
        wait_logged(&cluster, i, &["client TLS certificates reloaded (SIGHUP)"]);
        wait_logged(&cluster, i, &["peer TLS certificates reloaded (SIGHUP)"]);
    }
    writer.put(b"k", b"v2").unwrap();
    let mut fresh = cluster.client((leader + 1) % 3);
    assert_eq!(fresh.get(b"k").unwrap().unwrap().value, b"v2");

    // A fault over TLS links: the leader dies, the others elect a new one
    // and go on; the old leader comes back and catches up over TLS.
    cluster.kill(leader);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = cluster.find_new_leader(&others, leader, LEADER_WAIT).expect("a new leader");
    let mut client = cluster.client(new_leader);
    client.put(b"after", b"kill").unwrap();
    cluster.spawn(leader);
    let mut back = cluster.client(leader);
    let deadline = Instant::now() + LEADER_WAIT;
    while back.get(b"after").ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the restarted member never caught up");
        sleep(Duration::from_millis(100));
    }
    // A pause (SIGSTOP) cuts a member off like a partition; it rejoins.
    let paused = others[0];
    cluster.stop(paused);
    let mut client = cluster.client(others[1]);
    let deadline = Instant::now() + LEADER_WAIT;
    while client.put(b"during", b"pause").is_err() {
        assert!(Instant::now() < deadline, "no write while one member was paused");
        client = cluster.client(others[1]);
    }
    cluster.resume(paused);
    let mut rejoined = cluster.client(paused);
    let deadline = Instant::now() + LEADER_WAIT;
    while rejoined.get(b"during").ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the paused member never caught up");
        sleep(Duration::from_millis(100));
    }
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

#[test]
fn a_shared_secret_authenticates_peers_without_tls() {
    let mut cluster = Cluster::prepare("tls-secret", 3, &[]);
    let secret = cluster.dir.join("peer.secret");
    std::fs::write(&secret, [7u8; 32]).unwrap();
    cluster.extra_args = vec!["--peer-secret-file".into(), path(&secret)];
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_leader(LEADER_WAIT);
    cluster.client(leader).put(b"k", b"v").unwrap();
    assert_eq!(cluster.client((leader + 1) % 3).get(b"k").unwrap().unwrap().value, b"v");

    // A member's id and the right cluster, but no secret: closed unanswered.
    let target = (leader + 1) % 3;
    let mut raw = TcpStream::connect(("127.0.0.1", cluster.members[target].peer_port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cluster_id = cluster_id(std::iter::empty(), DEFAULT_CLUSTER_TOKEN);
    let hello =
        Hello { cluster_id, from: cluster.members[leader].id, to: cluster.members[target].id };
    raw.write_all(&hello.encode()).unwrap();
    let mut reply = [0u8; HELLO_BYTES];
    assert!(raw.read_exact(&mut reply).is_err(), "a hello without the secret was answered");
    wait_logged(&cluster, target, &["requires the peer secret"]);

    // With the secret's flag and a nonce, the answer comes, but a made-up
    // MAC closes the connection before any frame is read.
    let other = (leader + 2) % 3;
    let mut raw = TcpStream::connect(("127.0.0.1", cluster.members[other].peer_port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let hello =
        Hello { cluster_id, from: cluster.members[leader].id, to: cluster.members[other].id };
    raw.write_all(&hello.encode_flagged(true)).unwrap();
    raw.write_all(&[1u8; 32]).unwrap();
    let mut answer = [0u8; 96];
    raw.read_exact(&mut answer).unwrap();
    raw.write_all(&[0u8; 32]).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(raw.read(&mut byte), Ok(0) | Err(_)), "a wrong MAC kept the connection");
    wait_logged(&cluster, other, &["does not prove the peer secret"]);

    // A member given another secret cannot join its peers.
    cluster.kill(other);
    std::fs::write(cluster.dir.join("wrong.secret"), [9u8; 32]).unwrap();
    cluster.member_args = vec![Vec::new(); 3];
    cluster.member_args[other] =
        vec!["--peer-secret-file".into(), path(&cluster.dir.join("wrong.secret"))];
    cluster.extra_args.clear();
    for i in 0..3 {
        if i != other {
            cluster.member_args[i] = vec!["--peer-secret-file".into(), path(&secret)];
        }
    }
    cluster.spawn(other);
    wait_logged(&cluster, other, &["refused its answer: the hello does not prove the peer secret"]);
}

#[test]
fn a_peer_port_on_the_network_needs_authentication_or_consent() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-exposed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let peer_port = free_port();
    let serve = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["serve", "--data-dir", &path(&dir.join("data"))])
            .args(["--listen-client-urls", &format!("127.0.0.1:{}", free_port())])
            .args(["--listen-peer-urls", &format!("0.0.0.0:{peer_port}")])
            .args(["--initial-advertise-peer-urls", &format!("127.0.0.1:{peer_port}")])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut refused = serve(&[]);
    let status = support::process::wait_exit(&mut refused, Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(1));
    let mut said = String::new();
    refused.stderr.take().unwrap().read_to_string(&mut said).unwrap();
    assert!(said.contains("--peer-insecure") && said.contains("--peer-secret-file"), "{said}");
    let mut consented = serve(&["--peer-insecure"]);
    sleep(Duration::from_millis(1500));
    assert!(consented.try_wait().unwrap().is_none(), "--peer-insecure let it run");
    consented.kill().unwrap();
    consented.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The answer to `request` from a client of member 0 with certificate
/// `cert` and, when given, a login.
fn as_cert(
    cluster: &Cluster,
    certs: &Certs,
    cert: &str,
    login: Option<(&str, &str)>,
    request: &Request,
) -> Result<Response, ErrorCode> {
    let mut config = Config::new(vec![cluster.members[0].endpoint()]);
    config.tls = Some(client_tls(certs, "ca", Some(cert)));
    config.credentials = login.map(|(user, password)| Credentials {
        user: user.into(),
        password: Some(password.into()),
        token: None,
    });
    let mut client = Client::connect(config).unwrap();
    client.request(request).map_err(|e| e.code().unwrap_or_else(|| panic!("{e}")))
}

fn range(key: &str) -> Request {
    Request::Range(RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() })
}

fn put(key: &str) -> Request {
    Request::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

#[test]
fn with_auth_on_a_client_certificate_names_the_user() {
    let mut cluster = Cluster::prepare("tls-cert-users", 1, &["--auth-pbkdf2-iterations", "1000"]);
    let certs = Certs::new(&cluster.dir.join("certs"));
    certs.ca("ca");
    for name in ["n1", "root", "alice", "mallory"] {
        certs.leaf("ca", name, "IP:127.0.0.1");
    }
    certs.leaf_with_subject("ca", "nameless", "/O=shop floor", "IP:127.0.0.1");
    cluster.peer_scheme = "https";
    cluster.member_args = vec![tls_args(&certs, "ca", "n1")];
    cluster.client_tls = Some(client_tls(&certs, "ca", Some("root")));
    cluster.spawn(0);
    cluster.wait_leader(LEADER_WAIT);

    // Root and alice (who may read `a/`), set up with auth off.
    let mut admin = cluster.client(0);
    let mut run = |r: Request| admin.request(&r).unwrap_or_else(|e| panic!("{e}"));
    for (user, password) in [("root", "root-pw"), ("alice", "alice-pw")] {
        let (name, password) = (user.to_string(), password.to_string());
        run(Request::UserAdd(proto::UserAddRequest { name, password, no_password: false }));
    }
    let grant = |user: &str, role: &str| {
        Request::UserGrantRole(proto::UserRoleRequest { user: user.into(), role: role.into() })
    };
    run(grant("root", "root"));
    run(Request::RoleAdd(proto::RoleRequest { role: "reader".into() }));
    run(Request::RoleGrantPermission(proto::RoleGrantPermissionRequest {
        role: "reader".into(),
        perm: Permission {
            perm_type: PermissionType::Read,
            key: b"a/".to_vec(),
            range_end: b"a0".to_vec(),
        },
    }));
    run(grant("alice", "reader"));
    run(put("a/1"));
    run(put("b/1"));
    run(Request::AuthEnable);

    // Alice's certificate alone: what alice may read, nothing else.
    assert!(as_cert(&cluster, &certs, "alice", None, &range("a/1")).is_ok());
    let denied = Err(ErrorCode::PermissionDenied);
    assert_eq!(as_cert(&cluster, &certs, "alice", None, &range("b/1")), denied);
    assert_eq!(as_cert(&cluster, &certs, "alice", None, &put("a/2")), denied);
    // A token wins over the certificate: alice's certificate, root's login.
    let root_login = Some(("root", "root-pw"));
    assert!(as_cert(&cluster, &certs, "alice", root_login, &range("b/1")).is_ok());
    // A CN naming no user is that user, with no rights.
    assert_eq!(as_cert(&cluster, &certs, "mallory", None, &range("a/1")), denied);
    assert_eq!(as_cert(&cluster, &certs, "mallory", None, &put("m")), denied);
    // A certificate naming nobody, and no token: anonymous, refused.
    let anonymous = Err(ErrorCode::InvalidAuthToken);
    assert_eq!(as_cert(&cluster, &certs, "nameless", None, &range("a/1")), anonymous);

    // `ember` with root's certificate and no --user turns auth off.
    let out = ember(&cluster, 0, &cli_tls(&certs, "alice"), &["auth", "disable"]);
    assert!(!out.status.success(), "alice may not turn auth off");
    let out = ember(&cluster, 0, &cli_tls(&certs, "root"), &["auth", "disable"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(as_cert(&cluster, &certs, "nameless", None, &put("b/2")).is_ok());
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

/// The output of `curl` fetching `path` from `addr` over TLS 1.2 only,
/// with the client's certificate: the body, or curl's complaint.
fn curl_tls12(certs: &Certs, addr: &str, path_: &str) -> (bool, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "5", "--tlsv1.2", "--tls-max", "1.2"])
        .args(["--cacert", &path(&certs.pem("ca"))])
        .args(["--cert", &path(&certs.pem("client")), "--key", &path(&certs.key("client"))])
        .arg(format!("https://{addr}{path_}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.to_string())
}

/// A TLS handshake by `openssl s_client` with the client's certificate and
/// `args` (`-tls1_2`, `-cipher ...`): whether it succeeded, and what
/// openssl said about the session.
fn s_client(certs: &Certs, addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args(["-CAfile", &path(&certs.pem("ca")), "-verify_return_error"])
        .args(["-cert", &path(&certs.pem("client")), "-key", &path(&certs.key("client"))])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success() && text.contains("Verify return code: 0 (ok)"), text.to_string())
}

/// The TLS version and cipher suite a handshake with `config` gets from
/// `addr`.
fn negotiated(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> (rustls::ProtocolVersion, rustls::CipherSuite) {
    let name = ember::tls::server_name("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    let suite = conn.negotiated_cipher_suite().unwrap().suite();
    (conn.protocol_version().unwrap(), suite)
}

/// TLS 1.2 and 1.3, what `--tls-min-version TLS1.2` alone means.
fn both_versions() -> TlsVersions {
    TlsVersions::new(TlsVersion::Tls12, TlsVersion::Tls13).unwrap()
}

#[test]
fn tls_1_2_is_taken_only_when_asked_and_with_ecdhe_aead_suites_only() {
    let mut cluster = Cluster::prepare("tls-1-2", 3, &[]);
    let certs = Certs::new(&cluster.dir.join("certs"));
    certs.ca("ca");
    for name in ["n1", "n2", "n3", "client"] {
        certs.leaf("ca", name, "IP:127.0.0.1,DNS:localhost");
    }
    cluster.peer_scheme = "https";
    cluster.member_args = ["n1", "n2", "n3"].iter().map(|n| tls_args(&certs, "ca", n)).collect();
    for args in &mut cluster.member_args {
        args.extend(["--tls-min-version".to_string(), "TLS1.2".to_string()]);
    }
    // n1 speaks only TLS 1.2, so every link to and from it is TLS 1.2; n2
    // also serves a metrics port.
    cluster.member_args[0].extend(["--tls-max-version".to_string(), "TLS1.2".to_string()]);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let metrics_url = format!("https://{metrics_addr}");
    cluster.member_args[1].extend(["--listen-metrics-urls".to_string(), metrics_url]);
    let files = ClientFiles {
        ca: Some(certs.pem("ca")),
        cert: Some(certs.pem("client")),
        key: Some(certs.key("client")),
        insecure_skip_verify: false,
    };
    // The configuration `ember` and the Rust client's users build.
    let offer = files.load().unwrap();
    cluster.client_tls = Some(offer.clone());
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_leader(LEADER_WAIT);

    // Entries reach n1 over its TLS 1.2 peer links, and the Rust client.
    cluster.client(1).put(b"k", b"v").unwrap();
    let index = cluster.status(1).unwrap().raft_applied_index;
    cluster.wait_applied(0, index, LEADER_WAIT);
    let mut tls12_client = cluster.client(0);
    assert_eq!(tls12_client.get(b"k").unwrap().unwrap().value, b"v");
    let (_, said) = s_client(&certs, &cluster.members[0].endpoint(), &["-tls1_3"]);
    assert!(!said.contains("New, TLSv1.3"), "n1 is capped at TLS 1.2: {said}");

    // What our clients' offer gets: TLS 1.2 with ECDHE and ChaCha20 from
    // n1, TLS 1.3 from n2, which speaks both.
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS13_CHACHA20_POLY1305_SHA256,
    };
    use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
    let got = negotiated(&cluster.members[0].endpoint(), offer.clone());
    assert_eq!(got, (TLSv1_2, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256));
    let got = negotiated(&cluster.members[1].endpoint(), offer);
    assert_eq!(got, (TLSv1_3, TLS13_CHACHA20_POLY1305_SHA256));

    // `ember` writes and reads on n1 over TLS 1.2, and reads on n2.
    let out = ember(&cluster, 0, &cli_tls(&certs, "client"), &["put", "k12", "v12"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ember(&cluster, 0, &cli_tls(&certs, "client"), &["get", "k12"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k12\nv12\n");
    let out = ember(&cluster, 1, &cli_tls(&certs, "client"), &["get", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k\nv\n");

    // /health on the client port and /metrics on the metrics port, by curl
    // over TLS 1.2.
    let (ok, body) = curl_tls12(&certs, &cluster.members[1].endpoint(), "/health");
    assert!(ok && body.contains("\"health\":\"true\""), "{body}");
    let (ok, body) = curl_tls12(&certs, &metrics_addr, "/metrics");
    assert!(ok && body.contains("ember_"), "{body}");

    // The peer port: TLS 1.2 with an ECDHE AEAD suite, ChaCha20 when the
    // client asks for it; CBC refused.
    let peer = format!("127.0.0.1:{}", cluster.members[1].peer_port);
    let (ok, said) = s_client(&certs, &peer, &["-tls1_2"]);
    assert!(ok && said.contains("New, TLSv1.2, Cipher is ECDHE-ECDSA-"), "{said}");
    let chacha = ["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"];
    let (ok, said) = s_client(&certs, &peer, &chacha);
    assert!(ok && said.contains("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"), "{said}");
    let cbc = ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"];
    let (ok, said) = s_client(&certs, &peer, &cbc);
    assert!(!ok, "a CBC suite was taken: {said}");
    // A client that lists AES first still gets ChaCha20: the member's
    // order wins, in both versions.
    let aes_first =
        ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"];
    let (ok, said) = s_client(&certs, &peer, &aes_first);
    assert!(ok && said.contains("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"), "{said}");
    let aes_first_13 =
        ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"];
    let (ok, said) = s_client(&certs, &cluster.members[1].endpoint(), &aes_first_13);
    assert!(ok && said.contains("Cipher is TLS_CHACHA20_POLY1305_SHA256"), "{said}");
}

#[test]
fn tls_1_2_is_refused_by_default_on_the_client_and_peer_ports() {
    let mut cluster = Cluster::prepare("tls-1-3-only", 1, &[]);
    let certs = Certs::new(&cluster.dir.join("certs"));
    certs.ca("ca");
    for name in ["n1", "client"] {
        certs.leaf("ca", name, "IP:127.0.0.1,DNS:localhost");
    }
    cluster.peer_scheme = "https";
    cluster.member_args = vec![tls_args(&certs, "ca", "n1")];
    cluster.client_tls = Some(client_tls(&certs, "ca", Some("client")));
    cluster.spawn(0);
    cluster.wait_leader(LEADER_WAIT);

    let client_port = cluster.members[0].endpoint();
    let (ok, said) = curl_tls12(&certs, &client_port, "/health");
    assert!(!ok, "TLS 1.2 was taken by default: {said}");
    let peer = format!("127.0.0.1:{}", cluster.members[0].peer_port);
    let (ok, said) = s_client(&certs, &peer, &["-tls1_2"]);
    assert!(!ok && !said.contains("New, TLSv1.2"), "{said}");
    // The same tools over TLS 1.3 get in: the refusals above are the
    // version's, not the certificates'.
    let (ok, said) = s_client(&certs, &client_port, &["-tls1_3"]);
    assert!(ok && said.contains("New, TLSv1.3"), "{said}");
    let out = ember(&cluster, 0, &cli_tls(&certs, "client"), &["put", "k", "v"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn tls_versions_follow_etcd_names_and_the_minimum_stays_below_the_maximum() {
    let parse = |min: Option<&str>, max: Option<&str>| {
        ember::server::config::parse_tls_versions(min.map(String::from), max.map(String::from))
    };
    assert_eq!(parse(None, None).unwrap(), TlsVersions::default());
    assert_eq!(parse(Some("TLS1.2"), None).unwrap(), both_versions());
    let capped = parse(Some("TLS1.2"), Some("TLS1.2")).unwrap();
    assert_eq!((capped.min(), capped.max()), (TlsVersion::Tls12, TlsVersion::Tls12));
    assert_eq!(parse(Some("TLS1.1"), None).unwrap_err().flag, "tls-min-version");
    assert_eq!(parse(None, Some("TLS1.4")).unwrap_err().flag, "tls-max-version");
    assert_eq!(parse(None, Some("TLS1.2")).unwrap_err().flag, "tls-min-version");
}
