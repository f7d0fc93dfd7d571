//! Real processes for the gateway's tests: `ember serve` members on free
//! 127.0.0.1 ports in a scratch directory, and an `ember-etcd` in front of
//! them, all killed on drop (also when a test panics).
//!
//! The `ember` binary is the one cargo builds beside `ember-etcd` in the
//! same target directory: the workspace's `cargo test --release` builds
//! both. Run alone (`cargo test --release -p ember-etcd`), the tests need a
//! `cargo build --release -p ember` first, and say so when it is missing.

#![allow(dead_code)]

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../../tests/support/ports.rs"]
mod test_ports;
pub use test_ports::free_port;

#[path = "../../../../tests/support/certs.rs"]
pub mod certs;

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_ember-etcd");

/// The `ember` binary beside the gateway's.
pub fn ember_binary() -> PathBuf {
    let path = Path::new(GATEWAY).with_file_name("ember");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p ember` \
         (the workspace's `cargo test --release` does)",
        path.display()
    );
    path
}

/// A process killed on drop.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub process: Option<Reaped>,
}

/// Ember members and one gateway in front of all of them.
pub struct Cluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
    pub gateway_port: u16,
    pub gateway: Option<Reaped>,
}

impl Cluster {
    /// Starts `size` members and the gateway, and waits for a leader.
    pub fn start(test: &str, size: usize) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ember-etcd-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let members = (1..=size)
            .map(|i| Member {
                name: format!("n{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
            })
            .collect();
        let mut cluster = Cluster { dir, members, gateway_port: free_port(), gateway: None };
        for i in 0..size {
            cluster.spawn_member(i);
        }
        cluster.spawn_gateway(&[]);
        cluster
    }

    /// Starts member `i` (again), on its ports and data directory.
    pub fn spawn_member(&mut self, i: usize) {
        let initial_cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let log = fs::File::create(self.dir.join(format!("{}.log", m.name))).unwrap();
        let child = Command::new(ember_binary())
            .arg("serve")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &format!("127.0.0.1:{}", m.client_port)])
            .args(["--listen-peer-urls", &format!("127.0.0.1:{}", m.peer_port)])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ember serve starts");
        self.members[i].process = Some(Reaped(child));
    }

    /// Starts one more member, `name` on `peer_port`, joining the running
    /// cluster with the `--initial-cluster` a `member add` printed; its
    /// index among the members.
    pub fn spawn_joiner(&mut self, name: &str, peer_port: u16, initial_cluster: &str) -> usize {
        let client_port = free_port();
        let log = fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(ember_binary())
            .arg("serve")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(self.dir.join(name))
            .args(["--listen-client-urls", &format!("127.0.0.1:{client_port}")])
            .args(["--listen-peer-urls", &format!("127.0.0.1:{peer_port}")])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", "existing"])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ember serve starts");
        let process = Some(Reaped(child));
        self.members.push(Member { name: name.to_string(), client_port, peer_port, process });
        self.members.len() - 1
    }

    /// Starts the gateway (again) with `extra` flags and waits until it
    /// takes connections.
    pub fn spawn_gateway(&mut self, extra: &[&str]) {
        self.gateway = None;
        let endpoints: Vec<String> =
            self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect();
        let log = fs::File::create(self.dir.join("gateway.log")).unwrap();
        let child = Command::new(GATEWAY)
            .args(["--listen-client-urls", &self.gateway_endpoint()])
            .args(["--endpoints", &endpoints.join(",")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ember-etcd starts");
        self.gateway = Some(Reaped(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.gateway_endpoint()).is_err() {
            assert!(Instant::now() < deadline, "the gateway did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn gateway_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.gateway_port)
    }

    /// An etcd client of the gateway, once the cluster behind it has a
    /// leader.
    pub async fn client(&self) -> etcd_client::Client {
        let mut client = etcd_client::Client::connect([self.gateway_endpoint()], None)
            .await
            .expect("etcd-client connects to the gateway");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match client.status().await {
                Ok(status) if status.leader() != 0 => return client,
                _ if Instant::now() > deadline => panic!("no leader behind the gateway in 15 s"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Stops member `i` (SIGSTOP) or lets it go on (SIGCONT): a member that
    /// is alive but answers nothing.
    pub fn signal_member(&self, i: usize, signal: &str) {
        let pid = self.members[i].process.as_ref().expect("member runs").0.id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].process = None;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.gateway = None;
        for member in &mut self.members {
            member.process = None;
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// True when `tool` is on the PATH.
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A single-member etcd with its data in `dir`, serving clients on
/// `client` (`host:port`); its log goes beside `dir`.
pub fn start_etcd(dir: &Path, client: &str) -> Reaped {
    let peer = format!("127.0.0.1:{}", free_port());
    let log = fs::File::create(dir.with_extension("log")).unwrap();
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

/// The gRPC status of a failed etcd-client call.
pub fn grpc_status(error: etcd_client::Error) -> tonic::Status {
    match error {
        etcd_client::Error::GRpcStatus(status) => status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}
