//! TLS on both sides of the gateway: etcdctl 3.4 with a client
//! certificate through a TLS gateway (etcd's listener flags) to a member
//! whose client port speaks TLS and wants certificates too (the gateway's
//! `--cacert`, `--cert`, `--key`). A client without a certificate, and a
//! plaintext client, are refused.
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
