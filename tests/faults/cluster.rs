//! A cluster of real `ember serve` processes for the fault scenarios.
//!
//! Layout: member `i` is named `n{i+1}` and listens for clients and peers on
//! free 127.0.0.1 ports. Its peer port sits behind a `Proxy`, and the proxy's
//! address is what the member advertises and what every `--initial-cluster`
//! lists, so all peer traffic into member `i` crosses proxy `i`, where the
//! test can break it per directed link.
//!
//! Data directories live under Cargo's target tmp dir (a real file system:
//! fsync means something there, unlike tmpfs). Every process is killed and
//! every directory removed on drop, also when the test panics; the members'
//! logs are printed first in that case, since they are the evidence.
//!
//! Faults on processes: `kill` (SIGKILL), `stop`/`resume` (SIGSTOP/SIGCONT),
//! `start` again on the same data, and `copy_data_dir`/`restore_data_dir` for
//! power-loss style rollbacks of a stopped member's files.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, Config};
use ember::proto::StatusResponse;
use ember::server::config::{HostPort, member_id};

use super::bounds::Pids;
use super::proxy::{LinkFaults, Proxy};

/// Election timeout of the members (heartbeat a tenth of it). Short, so a
/// scenario of a few seconds sees several elections.
pub const ELECTION_TIMEOUT_MS: u64 = 1000;
pub const HEARTBEAT_MS: u64 = 100;
const TOKEN: &str = "ember-faults";
/// `src/wal/sync_log.rs`'s variable; the binary ignores it without the feature.
const SYNC_LOG_ENV: &str = "EMBER_FAULT_SYNC_LOG";

static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

pub struct Member {
    pub name: String,
    pub id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    pub proxy: Proxy,
    /// Invariant: `Some` while the process may be running.
    child: Option<Child>,
    stopped: bool,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
    /// Flags added to every `ember serve`.
    pub extra_args: Vec<String>,
    /// Invariant: entry `i` is the pid of member `i`'s child while it has one.
    pub pids: Pids,
}

use super::test_ports::free_port;

impl Cluster {
    /// Starts `size` members, each behind its own proxy.
    pub fn start(test: &str, size: usize, seed: u64, extra_args: Vec<String>) -> Cluster {
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("faults-{test}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut members: Vec<Member> = (0..size)
            .map(|i| {
                let peer_port = free_port();
                let target = SocketAddr::from(([127, 0, 0, 1], peer_port));
                let proxy = Proxy::start(target, size, seed.wrapping_add(i as u64));
                let name = format!("n{}", i + 1);
                let advertised =
                    HostPort { host: "127.0.0.1".into(), port: proxy.listen_addr.port() };
                let id = member_id(&name, &[advertised], TOKEN);
                Member {
                    name,
                    id,
                    client_port: free_port(),
                    peer_port,
                    proxy,
                    child: None,
                    stopped: false,
                }
            })
            .collect();
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        for m in &mut members {
            m.proxy.set_member_ids(ids.clone());
        }
        let pids = Pids::new(std::sync::Mutex::new(vec![None; size]));
        let mut cluster = Cluster { dir, members, extra_args, pids };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        let urls: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.proxy.listen_addr))
            .collect();
        urls.join(",")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.members[i].name)
    }

    /// Where member `i` notes what is durable (only a build with the
    /// `fault-injection` feature writes it; see `power.rs`).
    pub fn sync_log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.synclog", self.members[i].name))
    }

    /// Starts member `i` (again, on the same data) with the same flags.
    pub fn spawn(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is already running");
        let initial_cluster = self.initial_cluster();
        let m = &self.members[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ember"))
            .arg("serve")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &m.endpoint()])
            .args(["--listen-peer-urls", &format!("127.0.0.1:{}", m.peer_port)])
            .args(["--initial-advertise-peer-urls", &m.proxy.listen_addr.to_string()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", TOKEN])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_TIMEOUT_MS.to_string()])
            .args(&self.extra_args)
            .env(SYNC_LOG_ENV, self.sync_log(i))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ember serve starts");
        self.pids.lock().unwrap()[i] = Some(child.id());
        self.members[i].child = Some(child);
        self.members[i].stopped = false;
    }

    /// kill -9, and reaps the process.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            self.pids.lock().unwrap()[i] = None;
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].stopped = false;
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn stop(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.members[i].stopped = true;
    }

    /// SIGCONT after `stop`.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.members[i].stopped = false;
    }

    fn signal(&self, i: usize, signal: &str) {
        let child = self.members[i].child.as_ref().expect("member is running");
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Whether member `i` exited by itself (a crash or a refusal to start),
    /// with its exit status.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.members[i].child.as_mut()?.try_wait().ok().flatten()
    }

    /// Copies member `i`'s data directory to `name` beside it. Take it while
    /// the member is stopped or dead, so the files are not mid-write.
    pub fn copy_data_dir(&self, i: usize, name: &str) -> PathBuf {
        let to = self.dir.join(name);
        let _ = fs::remove_dir_all(&to);
        copy_tree(&self.data_dir(i), &to);
        to
    }

    /// Replaces member `i`'s data directory by a copy. The member must be dead.
    pub fn restore_data_dir(&self, i: usize, from: &Path) {
        assert!(self.members[i].child.is_none(), "restore under a running member");
        let _ = fs::remove_dir_all(self.data_dir(i));
        copy_tree(from, &self.data_dir(i));
    }

    /// Sets the faults on the link `from` → `to`.
    pub fn link(&self, from: usize, to: usize, faults: LinkFaults) {
        self.members[to].proxy.set(from, faults);
    }

    /// Blackholes every link between `group` and the other members, both ways
    /// (`one_way`: only from `group` to the others).
    pub fn isolate(&self, group: &[usize], one_way: bool) {
        let hole = LinkFaults { blackhole: true, ..LinkFaults::default() };
        for a in group.iter().copied() {
            for b in (0..self.members.len()).filter(|b| !group.contains(b)) {
                self.link(a, b, hole);
                if !one_way {
                    self.link(b, a, hole);
                }
            }
        }
    }

    /// Heals every link and closes the connections that were broken, so both
    /// sides start clean.
    pub fn heal(&self) {
        for to in &self.members {
            for from in 0..self.members.len() {
                if to.proxy.faults(from) != LinkFaults::default() {
                    to.proxy.cut(from);
                }
            }
            to.proxy.heal_all();
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// A client that talks to member `i` only, with short timeouts so that
    /// a fault shows as an error, not as a hang.
    pub fn client_config(&self, i: usize) -> Config {
        let mut config = Config::new(vec![self.members[i].endpoint()]);
        config.dial_timeout = Duration::from_millis(300);
        config.command_timeout = Duration::from_millis(2 * ELECTION_TIMEOUT_MS);
        config
    }

    pub fn status(&self, i: usize) -> Option<StatusResponse> {
        if !self.members[i].is_running() || self.members[i].stopped {
            return None;
        }
        let mut config = Config::new(vec![self.members[i].endpoint()]);
        config.dial_timeout = Duration::from_millis(300);
        config.command_timeout = Duration::from_millis(500);
        Client::connect(config).ok()?.status().ok()
    }

    /// The index of the member that every live member (or `among`) names as
    /// leader, waiting up to `timeout`.
    pub fn wait_leader(&self, among: &[usize], timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(i) = self.agreed_leader(among) {
                return Some(i);
            }
            sleep(Duration::from_millis(50));
        }
        None
    }

    /// Like `wait_leader`, for a leader other than `old`.
    pub fn wait_new_leader(&self, among: &[usize], old: usize, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.agreed_leader(among) {
                Some(i) if i != old => return Some(i),
                _ => sleep(Duration::from_millis(50)),
            }
        }
        None
    }

    fn agreed_leader(&self, among: &[usize]) -> Option<usize> {
        let mut leader = None;
        for &i in among {
            let id = self.status(i)?.leader_id;
            if id == 0 || leader.is_some_and(|l| l != id) {
                return None;
            }
            leader = Some(id);
        }
        let leader = leader?;
        self.members.iter().position(|m| m.id == leader)
    }

    /// Indices of members with a live, running process.
    pub fn live(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&i| self.members[i].is_running()).collect()
    }

    /// The members' logs, for a failure report.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text =
                fs::read_to_string(self.dir.join(format!("{}.log", m.name))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out += &format!("--- {} (last {} lines)\n{}\n", m.name, tail.len(), tail.join("\n"));
        }
        out
    }

    /// Lines of the members' logs that show a panic.
    pub fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        for m in &self.members {
            let text =
                fs::read_to_string(self.dir.join(format!("{}.log", m.name))).unwrap_or_default();
            found.extend(
                text.lines().filter(|l| l.contains("panicked")).map(|l| format!("{}: {l}", m.name)),
            );
        }
        found
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.members.len() {
            self.kill(i); // SIGKILL ends a stopped process too
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
