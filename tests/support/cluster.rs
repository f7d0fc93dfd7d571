//! A cluster (or a single node) of real `ember serve` processes.
//!
//! Layout: member `i` is named `n{i+1}` and listens for clients and peers on
//! free 127.0.0.1 ports. `Cluster::start` runs the members as an operator
//! would; `Cluster::start_behind_proxies` puts each member's peer port
//! behind a `Proxy` whose address is what the member advertises and what
//! every `--initial-cluster` lists, so all peer traffic into member `i`
//! crosses proxy `i`, where the test can break it per directed link;
//! `Cluster::start_behind_proxies_with_peer_tls` does the same with peer TLS
//! on (certificates made by openssl), its proxies telling links apart by
//! the dialing process instead of the hello they can no longer read.
//!
//! Data directories and logs (`<name>.log`, the member's stderr) live under
//! Cargo's target tmp dir, a real file system: fsync means something there,
//! unlike on tmpfs. Every process is killed on drop, also when the test
//! panics; the directory is removed unless the test failed, and on a failure
//! the tail of each member's log is printed first, since it is the evidence.
//!
//! Faults on processes: `kill` (SIGKILL), `terminate` (SIGTERM), `stop` and
//! `resume` (SIGSTOP, SIGCONT), `spawn` again on the same data, and
//! `copy_data_dir`/`restore_data_dir` for power-loss style rollbacks.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, Config};
use ember::proto::StatusResponse;
use ember::server::config::{DEFAULT_CLUSTER_TOKEN, HostPort, member_id};

use super::certs::Certs;
use super::ports::free_port;
use super::process::{signal, wait_exit};
use super::proxy::{LinkFaults, Proxy};

/// Election timeout of the members (heartbeat a tenth of it). Short, so a
/// test of a few seconds sees several elections.
pub const ELECTION_TIMEOUT_MS: u64 = 1000;
pub const HEARTBEAT_MS: u64 = 100;
/// The token of clusters behind proxies, so their ids differ from a default
/// cluster's.
const PROXIED_TOKEN: &str = "ember-faults";
/// `src/sync_log.rs`'s variable; the binary ignores it without the feature.
const SYNC_LOG_ENV: &str = "EMBER_FAULT_SYNC_LOG";
/// How often a wait polls the members.
const POLL_MS: u64 = 50;
/// Lines of each member's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

/// The process ids of the members, `None` while one is not running; kept by
/// the cluster, read by whoever samples the members (`faults/bounds.rs`).
pub type Pids = Arc<Mutex<Vec<Option<u32>>>>;

pub struct Member {
    pub name: String,
    /// Invariant: `member_id(name, [advertised peer address], token)`, the
    /// id the member computes for itself.
    pub id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    /// The proxy in front of `peer_port`, in a cluster behind proxies.
    proxy: Option<Proxy>,
    /// Invariant: `Some` while the process may be running.
    child: Option<Child>,
    stopped: bool,
}

/// The `/metrics` page of the member serving clients at `endpoint`, headers
/// included.
pub fn scrape_metrics(endpoint: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(endpoint)?;
    let ask = format!("GET /metrics HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n");
    stream.write_all(ask.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The process id of the member's running `ember serve`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The address the other members reach this one at.
    fn advertised_peer(&self) -> String {
        match &self.proxy {
            Some(proxy) => proxy.listen_addr.to_string(),
            None => format!("127.0.0.1:{}", self.peer_port),
        }
    }
}

/// What differs between a plain cluster and one behind proxies.
struct Setup {
    /// Seeds the proxies' generators; `None`: no proxies.
    proxy_seed: Option<u64>,
    /// The proxies forward encrypted peer links (`Proxy::start_opaque`).
    opaque_proxies: bool,
    /// `--initial-cluster-token`; `None` leaves ember's default.
    token: Option<&'static str>,
    /// Whether the members note what is durable (`power.rs` reads it).
    sync_log: bool,
    /// Bounds of one status poll. Short ones make a fault show as a missed
    /// poll rather than a hang.
    status_dial_ms: u64,
    status_command_ms: u64,
}

impl Setup {
    /// Members behind proxies seeded from `seed`, noting what is durable,
    /// with short status polls; `opaque` for encrypted peer links.
    fn behind_proxies(seed: u64, opaque: bool) -> Setup {
        Setup {
            proxy_seed: Some(seed),
            opaque_proxies: opaque,
            token: Some(PROXIED_TOKEN),
            sync_log: true,
            status_dial_ms: 300,
            status_command_ms: 500,
        }
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
    /// Flags added to every `ember serve`.
    pub extra_args: Vec<String>,
    /// Invariant: entry `i` is the pid of member `i`'s child while it has one.
    pub pids: Pids,
    /// Flags added to member `i`'s `ember serve` only (its own certificate).
    pub member_args: Vec<Vec<String>>,
    /// Added to every member's environment at every start.
    pub member_env: Vec<(String, String)>,
    /// The scheme of peer URLs: `https` under peer TLS.
    pub peer_scheme: &'static str,
    /// TLS of the test's clients, for members that serve clients over TLS.
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    setup: Setup,
}

impl Cluster {
    /// Starts `size` members; `extra_args` go to every `ember serve`.
    pub fn start(test: &str, size: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(test, size, extra_args);
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster
    }

    /// Like `start`, but no member runs yet: start each with `spawn` or
    /// `spawn_with_env`.
    pub fn prepare(test: &str, size: usize, extra_args: &[&str]) -> Cluster {
        let setup = Setup {
            proxy_seed: None,
            opaque_proxies: false,
            token: None,
            sync_log: false,
            status_dial_ms: 500,
            status_command_ms: 1000,
        };
        Cluster::prepare_with(test, size, setup, extra_args.iter().map(|s| s.to_string()).collect())
    }

    /// Starts `size` members, each behind its own proxy (seeded from `seed`),
    /// noting what is durable for power-loss rollbacks.
    pub fn start_behind_proxies(
        test: &str,
        size: usize,
        seed: u64,
        extra_args: Vec<String>,
    ) -> Cluster {
        Cluster::start_behind_proxies_with_env(test, size, seed, extra_args, Vec::new())
    }

    /// Like `start_behind_proxies`, with `env` in every member's
    /// environment (a fault-injection variable, say).
    pub fn start_behind_proxies_with_env(
        test: &str,
        size: usize,
        seed: u64,
        extra_args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Cluster {
        let setup = Setup::behind_proxies(seed, false);
        let mut cluster = Cluster::prepare_with(test, size, setup, extra_args);
        cluster.member_env = env;
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster
    }

    /// Like `start_behind_proxies`, with peer TLS: a peer CA and a
    /// certificate for each member, valid for 127.0.0.1 where its proxy
    /// listens, made by openssl in the cluster's directory.
    pub fn start_behind_proxies_with_peer_tls(
        test: &str,
        size: usize,
        seed: u64,
        extra_args: Vec<String>,
    ) -> Cluster {
        let setup = Setup::behind_proxies(seed, true);
        let mut cluster = Cluster::prepare_with(test, size, setup, extra_args);
        let certs = Certs::new(&cluster.dir.join("certs"));
        let ca = certs.ca("peer-ca");
        cluster.peer_scheme = "https";
        for i in 0..size {
            let (cert, key) = certs.leaf("peer-ca", &cluster.members[i].name, "IP:127.0.0.1");
            let flags = [("--peer-cert-file", &cert), ("--peer-key-file", &key)];
            let mut args: Vec<String> = Vec::new();
            for (flag, file) in flags.into_iter().chain([("--peer-trusted-ca-file", &ca)]) {
                args.extend([flag.to_string(), file.to_str().unwrap().to_string()]);
            }
            cluster.member_args.push(args);
        }
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster
    }

    fn prepare_with(test: &str, size: usize, setup: Setup, extra_args: Vec<String>) -> Cluster {
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{test}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let pids = Pids::new(Mutex::new(Vec::new()));
        let mut cluster = Cluster {
            dir,
            members: Vec::new(),
            extra_args,
            pids,
            member_args: Vec::new(),
            member_env: Vec::new(),
            peer_scheme: "http",
            client_tls: None,
            setup,
        };
        for i in 0..size {
            cluster.add_member(&format!("n{}", i + 1), size);
        }
        if cluster.setup.proxy_seed.is_some() {
            let ids: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
            for i in 0..size {
                cluster.proxy(i).set_member_ids(ids.clone());
            }
        }
        cluster
    }

    /// Adds a member that is not started yet, on new ports; its index.
    /// Only a cluster without proxies grows: each proxy is made for a size.
    pub fn push_member(&mut self, name: &str) -> usize {
        assert!(self.setup.proxy_seed.is_none(), "a cluster behind proxies keeps its size");
        self.add_member(name, self.members.len() + 1)
    }

    /// Adds member `name` to a cluster of `size`; its index.
    fn add_member(&mut self, name: &str, size: usize) -> usize {
        let i = self.members.len();
        let peer_port = free_port();
        let proxy = self.setup.proxy_seed.map(|seed| {
            let target = SocketAddr::from(([127, 0, 0, 1], peer_port));
            let seed = seed.wrapping_add(i as u64);
            match self.setup.opaque_proxies {
                true => Proxy::start_opaque(target, size, seed, self.pids.clone()),
                false => Proxy::start(target, size, seed),
            }
        });
        let advertised_port = proxy.as_ref().map_or(peer_port, |p| p.listen_addr.port());
        let advertised = HostPort { host: "127.0.0.1".into(), port: advertised_port };
        let token = self.setup.token.unwrap_or(DEFAULT_CLUSTER_TOKEN);
        self.members.push(Member {
            name: name.to_string(),
            id: member_id(name, &[advertised], token),
            client_port: free_port(),
            peer_port,
            proxy,
            child: None,
            stopped: false,
        });
        self.pids.lock().unwrap().push(None);
        i
    }

    fn initial_cluster(&self) -> String {
        let urls: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}://{}", m.name, self.peer_scheme, m.advertised_peer()))
            .collect();
        urls.join(",")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.members[i].name)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.members[i].name))
    }

    /// Where member `i` notes what is durable (only a build with the
    /// `fault-injection` feature writes it; see `faults/power.rs`).
    pub fn sync_log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.synclog", self.members[i].name))
    }

    /// Starts member `i` (again, on the same data) with the same flags.
    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &[]);
    }

    /// Like `spawn`, with `env` added to the member's environment (a
    /// fault-injection variable, say).
    pub fn spawn_with(&mut self, i: usize, env: &[(&str, &str)]) {
        let mut command = self.serve_command(i);
        command.envs(env.iter().copied());
        command
            .args(["--name", &self.members[i].name])
            .args(["--initial-cluster", &self.initial_cluster()]);
        if self.members[i].proxy.is_some() {
            command.args(["--initial-advertise-peer-urls", &self.members[i].advertised_peer()]);
        }
        if let Some(token) = self.setup.token {
            command.args(["--initial-cluster-token", token]);
        }
        self.run(i, command);
    }

    /// Starts member `i` with only its data dir, ports and timing on the
    /// command line; `env` (`EMBER_NAME=...` and so on, as `ember member
    /// add` prints them) supplies the rest.
    pub fn spawn_with_env(&mut self, i: usize, env: &[(String, String)]) {
        let mut command = self.serve_command(i);
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.run(i, command);
    }

    /// `ember serve` for member `i` with its data dir, ports and timing and
    /// the extra arguments, logging to `<name>.log`.
    fn serve_command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &m.endpoint()])
            .args(["--listen-peer-urls", &format!("127.0.0.1:{}", m.peer_port)])
            .args(self.member_args.get(i).into_iter().flatten())
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_TIMEOUT_MS.to_string()])
            .args(&self.extra_args)
            .envs(self.member_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        if self.setup.sync_log {
            command.env(SYNC_LOG_ENV, self.sync_log(i));
        }
        command
    }

    fn run(&mut self, i: usize, mut command: Command) {
        assert!(self.members[i].child.is_none(), "member {i} is already running");
        let child = command.spawn().expect("ember serve starts");
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

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self, i: usize) -> ExitStatus {
        signal(self.members[i].child.as_ref().expect("member is running"), "-TERM");
        self.wait_exit(i, Duration::from_secs(10))
    }

    /// Waits for member `i` to exit; its exit status. Past `timeout` it is
    /// killed and the test fails.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> ExitStatus {
        let child = self.members[i].child.as_mut().expect("member is running");
        let status = wait_exit(child, timeout);
        self.kill(i);
        status.unwrap_or_else(|| panic!("member {i} did not exit within {timeout:?}"))
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn stop(&mut self, i: usize) {
        signal(self.members[i].child.as_ref().expect("member is running"), "-STOP");
        self.members[i].stopped = true;
    }

    /// SIGCONT after `stop`.
    pub fn resume(&mut self, i: usize) {
        signal(self.members[i].child.as_ref().expect("member is running"), "-CONT");
        self.members[i].stopped = false;
    }

    /// Whether member `i` exited by itself (a crash or a refusal to start),
    /// with its exit status.
    pub fn exited(&mut self, i: usize) -> Option<ExitStatus> {
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

    /// The proxy in front of member `i`. Invariant: the cluster has proxies.
    pub fn proxy(&self, i: usize) -> &Proxy {
        self.members[i].proxy.as_ref().expect("a cluster behind proxies")
    }

    /// Sets the faults on the link `from` → `to`.
    pub fn link(&self, from: usize, to: usize, faults: LinkFaults) {
        self.proxy(to).set(from, faults);
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
        for to in 0..self.members.len() {
            let proxy = self.proxy(to);
            for from in 0..self.members.len() {
                if proxy.faults(from) != LinkFaults::default() {
                    proxy.cut(from);
                }
            }
            proxy.heal_all();
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// A client configuration for member `i` alone, with the cluster's TLS.
    fn new_config(&self, i: usize) -> Config {
        let mut config = Config::new(vec![self.members[i].endpoint()]);
        config.tls = self.client_tls.clone();
        config
    }

    /// A client of member `i` only, once it accepts connections.
    pub fn client(&self, i: usize) -> Client {
        let config = self.new_config(i);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Client::connect(config.clone()) {
                Ok(client) => return client,
                Err(e) if Instant::now() > deadline => panic!("member {i} unreachable: {e}"),
                Err(_) => sleep(Duration::from_millis(POLL_MS)),
            }
        }
    }

    /// A client that talks to member `i` only, with short timeouts so that
    /// a fault shows as an error, not as a hang.
    pub fn client_config(&self, i: usize) -> Config {
        let mut config = self.new_config(i);
        config.dial_timeout = Duration::from_millis(300);
        config.command_timeout = Duration::from_millis(2 * ELECTION_TIMEOUT_MS);
        config
    }

    /// Member `i`'s status; `None` if it is down, stopped or does not answer.
    pub fn status(&self, i: usize) -> Option<StatusResponse> {
        if !self.members[i].is_running() || self.members[i].stopped {
            return None;
        }
        let mut config = self.new_config(i);
        config.dial_timeout = Duration::from_millis(self.setup.status_dial_ms);
        config.command_timeout = Duration::from_millis(self.setup.status_command_ms);
        Client::connect(config).ok()?.status().ok()
    }

    /// The index of the running member every running member names as
    /// leader; the test fails after `timeout`.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live();
            if let Some(i) = self.agreed_leader(&live).filter(|i| live.contains(i)) {
                return i;
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// The index of the member that every member of `among` names as
    /// leader, waiting up to `timeout`.
    pub fn find_leader(&self, among: &[usize], timeout: Duration) -> Option<usize> {
        self.poll_until(timeout, || self.agreed_leader(among))
    }

    /// Like `find_leader`, for a leader other than `old`.
    pub fn find_new_leader(&self, among: &[usize], old: usize, timeout: Duration) -> Option<usize> {
        self.poll_until(timeout, || self.agreed_leader(among).filter(|&i| i != old))
    }

    fn poll_until(&self, timeout: Duration, found: impl Fn() -> Option<usize>) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(i) = found() {
                return Some(i);
            }
            sleep(Duration::from_millis(POLL_MS));
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

    /// Waits until member `i` has applied at least `index`.
    pub fn wait_applied(&self, i: usize, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.status(i).is_some_and(|s| s.raft_applied_index >= index) {
                return;
            }
            assert!(Instant::now() < deadline, "member {i} did not reach index {index}");
            sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// Indices of members with a live, running process.
    pub fn live(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&i| self.members[i].is_running()).collect()
    }

    /// The log member `i` wrote so far.
    pub fn log_of(&self, i: usize) -> String {
        fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The end of every member's log, for a failure report.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let text = self.log_of(i);
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            out += &format!("--- {} (last {} lines)\n{}\n", m.name, tail.len(), tail.join("\n"));
        }
        out
    }

    /// Lines of the members' logs that show a panic.
    pub fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            let text = self.log_of(i);
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
        for i in 0..self.members.len() {
            self.kill(i); // SIGKILL ends a stopped process too
        }
        if std::thread::panicking() {
            eprintln!("{}kept for inspection: {}", self.logs(), self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
