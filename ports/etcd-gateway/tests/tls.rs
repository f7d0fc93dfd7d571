//! TLS on both sides of the gateway: etcdctl 3.4 with a client
//! certificate through a TLS gateway (etcd's listener flags) to a member
//! whose client port speaks TLS and wants certificates too (the gateway's
//! `--cacert`, `--cert`, `--key`). A client without a certificate, and a
//! plaintext client, are refused. The gateway's certificate, rotated and
//! signalled with SIGHUP, is served to new connections while etcdctl keeps
//! working.
//!
//! Needs `etcdctl` and `openssl` on the PATH.

mod support;

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::certs::Certs;
use support::{GATEWAY, Reaped, ember_binary, free_port, on_path};

fn text(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

#[test]
fn etcdctl_reaches_a_tls_member_through_a_tls_gateway() {
    assert!(on_path("etcdctl") && on_path("openssl"), "etcdctl and openssl are needed");
    let dir = std::env::temp_dir().join(format!("ember-etcd-tls-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let certs = Certs::new(&dir.join("certs"));
    certs.ca("ca");
    for name in ["member", "gateway", "client"] {
        certs.leaf("ca", name, "IP:127.0.0.1,DNS:localhost");
    }
    let ca = text(&certs.pem("ca"));
    let pem = |name: &str| text(&certs.pem(name));
    let key = |name: &str| text(&certs.key(name));

    let (client_port, peer_port) = (free_port(), free_port());
    let member = Command::new(ember_binary())
        .args(["serve", "--name", "n1", "--data-dir"])
        .arg(dir.join("n1"))
        .args(["--listen-client-urls", &format!("https://127.0.0.1:{client_port}")])
        .args(["--listen-peer-urls", &format!("127.0.0.1:{peer_port}")])
        .args(["--initial-cluster", &format!("n1=http://127.0.0.1:{peer_port}")])
        .args(["--cert-file", &pem("member"), "--key-file", &key("member")])
        .args(["--trusted-ca-file", &ca, "--client-cert-auth"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("n1.log")).unwrap())
        .spawn()
        .expect("ember serve starts");
    let _member = Reaped(member);

    let gateway_addr = format!("127.0.0.1:{}", free_port());
    let gateway = Command::new(GATEWAY)
        .args(["--listen-client-urls", &format!("https://{gateway_addr}")])
        .args(["--cert-file", &pem("gateway"), "--key-file", &key("gateway")])
        .args(["--trusted-ca-file", &ca, "--client-cert-auth"])
        .args(["--endpoints", &format!("https://127.0.0.1:{client_port}")])
        .args(["--cacert", &ca, "--cert", &pem("gateway"), "--key", &key("gateway")])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("gateway.log")).unwrap())
        .spawn()
        .expect("ember-etcd starts");
    let gateway_pid = gateway.id().to_string();
    let _gateway = Reaped(gateway);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&gateway_addr).is_err() {
        assert!(Instant::now() < deadline, "the gateway did not listen within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }

    let https = format!("https://{gateway_addr}");
    let with_cert = ["--cacert", &ca, "--cert", &pem("client"), "--key", &key("client")];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, stderr) = etcdctl(&https, &with_cert, &["put", "k", "v"]);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "etcdctl over TLS never got through: {stderr}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, stdout, stderr) = etcdctl(&https, &with_cert, &["get", "k"]);
    assert_eq!((code, stdout.as_str()), (0, "k\nv\n"), "{stderr}");

    let (code, stdout, _) = etcdctl(&https, &["--cacert", &ca], &["get", "k"]);
    assert_ne!(code, 0, "a client without a certificate got through: {stdout}");
    let plaintext = format!("http://{gateway_addr}");
    let (code, stdout, _) = etcdctl(&plaintext, &[], &["get", "k"]);
    assert_ne!(code, 0, "a plaintext client got through: {stdout}");
    let (code, stdout, _) = etcdctl(&https, &with_cert, &["get", "k"]);
    assert_eq!((code, stdout.as_str()), (0, "k\nv\n"), "the gateway still serves");

    // Rotation: a new certificate for the gateway from the same CA, SIGHUP;
    // new connections get it and etcdctl goes on.
    let before = fingerprint_of_file(&certs.pem("gateway"));
    assert_eq!(served_fingerprint(&gateway_addr, &certs), before);
    certs.leaf("ca", "gateway", "IP:127.0.0.1,DNS:localhost");
    let after = fingerprint_of_file(&certs.pem("gateway"));
    assert_ne!(before, after, "a new certificate was made");
    assert!(Command::new("kill").args(["-HUP", &gateway_pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_fingerprint(&gateway_addr, &certs) != after {
        assert!(Instant::now() < deadline, "the rotated certificate was never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = fs::read_to_string(dir.join("gateway.log")).unwrap();
    assert!(log.contains("listener TLS certificates reloaded (SIGHUP)"), "{log}");
    let (code, _, stderr) = etcdctl(&https, &with_cert, &["put", "k", "v2"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = etcdctl(&https, &with_cert, &["get", "k"]);
    assert_eq!((code, stdout.as_str()), (0, "k\nv2\n"), "{stderr}");
    // A key file that holds no key: the load fails, the current
    // certificate stays.
    fs::write(certs.key("gateway"), "not a key\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &gateway_pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(dir.join("gateway.log")).unwrap().contains("not reloaded") {
        assert!(Instant::now() < deadline, "the failed load was never logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served_fingerprint(&gateway_addr, &certs), after);
    let (code, stdout, stderr) = etcdctl(&https, &with_cert, &["get", "k"]);
    assert_eq!((code, stdout.as_str()), (0, "k\nv2\n"), "{stderr}");
    let _ = fs::remove_dir_all(&dir);
}

fn etcdctl(endpoint: &str, tls: &[&str], args: &[&str]) -> (i32, String, String) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--dial-timeout", "2s", "--command-timeout", "3s"])
        .args(tls)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("etcdctl runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// The SHA-256 fingerprint line `openssl x509` prints for PEM text.
fn fingerprint_of_pem(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), pem).unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn fingerprint_of_file(path: &Path) -> String {
    fingerprint_of_pem(&fs::read(path).unwrap())
}

/// The fingerprint of the certificate a new connection to `addr` is shown.
fn served_fingerprint(addr: &str, certs: &Certs) -> String {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile"])
        .arg(certs.pem("ca"))
        .arg("-cert")
        .arg(certs.pem("client"))
        .arg("-key")
        .arg(certs.key("client"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl s_client runs");
    fingerprint_of_pem(&output.stdout)
}
