//! Shared harness of the `node_*` tests: real `ember serve` processes on
//! free 127.0.0.1 ports, in a scratch directory, always killed on drop (also
//! when a test panics). Included by the tests with `#[path]`; built on its
//! own it holds no tests.

#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, Config};
use ember::proto::StatusResponse;

/// Election timeout the tests run with (heartbeat a tenth of it).
pub const ELECTION_TIMEOUT_MS: u64 = 1000;
pub const HEARTBEAT_MS: u64 = 100;

#[path = "test_ports/mod.rs"]
mod test_ports;
pub use test_ports::free_port;

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// A cluster (or a single node) of real processes.
pub struct Cluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `size` members; `extra_args` go to every `ember serve`.
    pub fn start(test: &str, size: usize, extra_args: &[&str]) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ember-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let members = (1..=size)
            .map(|i| Member {
                name: format!("n{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        let mut cluster = Cluster { dir, members, extra_args };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        let urls: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        urls.join(",")
    }

    /// Starts member `i` (again) with the same command line.
    pub fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster();
        let mut command = self.serve_command(i);
        command
            .args(["--name", &self.members[i].name])
            .args(["--initial-cluster", &initial_cluster]);
        self.members[i].child = Some(command.spawn().expect("ember serve starts"));
    }

    /// `ember serve` for member `i` with its data dir, ports, timing and the
    /// extra arguments, logging to `<name>.log`.
    fn serve_command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &m.endpoint()])
            .args(["--listen-peer-urls", &format!("127.0.0.1:{}", m.peer_port)])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_TIMEOUT_MS.to_string()])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.members[i].child.take().expect("member is running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "member did not stop on SIGTERM");
            sleep(Duration::from_millis(20));
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// A client of member `i` only.
    pub fn client(&self, i: usize) -> Client {
        let config = Config::new(vec![self.members[i].endpoint()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Client::connect(config.clone()) {
                Ok(client) => return client,
                Err(e) if Instant::now() > deadline => panic!("member {i} unreachable: {e}"),
                Err(_) => sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn status(&self, i: usize) -> Option<StatusResponse> {
        let mut config = Config::new(vec![self.members[i].endpoint()]);
        config.dial_timeout = Duration::from_millis(500);
        config.command_timeout = Duration::from_secs(1);
        Client::connect(config).ok()?.status().ok()
    }

    /// The index of the member every running member names as leader.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.agreed_leader() {
                return i;
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            sleep(Duration::from_millis(50));
        }
    }

    fn agreed_leader(&self) -> Option<usize> {
        let mut leader = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let status = self.status(i)?;
            if status.leader_id == 0 || leader.is_some_and(|l| l != status.leader_id) {
                return None;
            }
            leader = Some(status.leader_id);
        }
        let leader = leader?;
        (0..self.members.len()).find(|&i| {
            self.members[i].child.is_some()
                && self.status(i).is_some_and(|s| s.header.member_id == leader)
        })
    }

    /// Waits until member `i` has applied at least `index`.
    pub fn wait_applied(&self, i: usize, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.status(i).is_some_and(|s| s.raft_applied_index >= index) {
                return;
            }
            assert!(Instant::now() < deadline, "member {i} did not reach index {index}");
            sleep(Duration::from_millis(50));
        }
    }
}

impl Cluster {
    /// Adds a member that is not started yet, on new ports; its index.
    pub fn push_member(&mut self, name: &str) -> usize {
        self.members.push(Member {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        });
        self.members.len() - 1
    }

    /// Starts member `i` with only its data dir, ports and timing on the
    /// command line; `env` (`EMBER_NAME=...` and so on, as `ember member
    /// add` prints them) supplies the rest.
    pub fn spawn_with_env(&mut self, i: usize, env: &[(String, String)]) {
        let mut command = self.serve_command(i);
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.members[i].child = Some(command.spawn().expect("ember serve starts"));
    }

    /// Waits for member `i` to exit on its own; its exit status.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.members[i].child.take().expect("member is running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("member {i} did not exit within {timeout:?}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The log member `i` wrote so far.
    pub fn log_of(&self, i: usize) -> String {
        let path = self.dir.join(format!("{}.log", self.members[i].name));
        fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Lines of a child's stdout as they come, read by a thread.
pub fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("piped stdout");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

/// Kills a child on drop, so a failing test leaves nothing running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
