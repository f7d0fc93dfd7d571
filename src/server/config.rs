//! The configuration of `ember serve`, with etcd's flag names.
//!
//! Every flag may also come from `EMBER_<FLAG>` (`--data-dir` from
//! `EMBER_DATA_DIR`); the command line wins. With no flags at all the node is
//! a single-member cluster named `default`, data in `./default.ember`,
//! clients on 127.0.0.1:7379 and peers on 127.0.0.1:7380.
//!
//! Values:
//! - URLs are `http://host:port`, `https://host:port` or `host:port`,
//!   several separated by commas; IPv6 hosts are bracketed (`[::1]:7380`).
//!   `https://` needs the port's certificate (`--cert-file` for clients,
//!   `--peer-cert-file` for peers), and with a certificate `http://` is
//!   refused: a URL never says plaintext where the port speaks TLS, or back.
//! - Peer authentication: peer TLS (certificate, key and peer CA; every
//!   member's certificate is checked against the peer CA and the member's
//!   host), or `--peer-secret-file`, or both. A peer listener that is not
//!   on a loopback address needs one of them, or `--peer-insecure`.
//! - Durations are whole milliseconds, sizes whole bytes.
//! - `--initial-cluster` is `name=url[,name=url...]`; a member with several
//!   peer URLs repeats its name, as in etcd. Joining an existing cluster,
//!   a member not started yet may be unnamed (`=url`), as `member add`
//!   prints it.
//!
//! Ids: every member must compute the same member ids and cluster id from the
//! same `--initial-cluster` and `--initial-cluster-token`, without talking to
//! the others. They are FNV-1a 64-bit hashes (a fixed function, unlike the
//! standard library's randomly seeded hasher) of the member's name, its sorted
//! peer URLs and the token; the cluster id hashes the sorted member ids and
//! the token. 0 means "none" in Raft, so a hash of 0 is replaced by 1.
//!
//! Parsing is pure: the environment arrives as a function, so tests never set
//! process-wide variables.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::flags::{Flag, Parsed};
pub use crate::limits::{
    LEASES_MAX_DEFAULT, REQUEST_BYTES_MAX_CONFIGURABLE, REQUEST_BYTES_MAX_DEFAULT,
    TXN_OPS_MAX_DEFAULT,
};
use crate::tls::{self, ClientFiles, ServerFiles, TlsError};
use crate::transport::{self as transport_mod, PeerAddr};

/// Default member name, as etcd's.
pub const DEFAULT_NAME: &str = "default";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "default.ember";
/// Default client address: loopback only, so a node started without flags is
/// not reachable from the network by surprise.
pub const DEFAULT_CLIENT_ADDR: &str = "127.0.0.1:7379";
/// Default peer address.
pub const DEFAULT_PEER_ADDR: &str = "127.0.0.1:7380";
/// Default cluster token; distinct clusters on one network need distinct ones.
pub const DEFAULT_CLUSTER_TOKEN: &str = "ember-cluster";
/// etcd's default heartbeat: one Raft tick.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// etcd's default election timeout: ten heartbeats.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// Applied entries between two snapshots (etcd 3.4's default). Each snapshot
/// writes the whole store, so at 10000 a store of 100k keys spent more time
/// on images than on puts (9k puts/s against 32k-43k). The log kept behind a
/// snapshot costs little memory: 4 bytes of index per entry, and the WAL
/// drops sealed segments' pages from the RSS.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// The largest `--max-leases`: a million leases take about 40 MB of table
/// (`benches/lease.rs`) and 12 MB of snapshot sections, which stays under
/// `image::SECTIONS_MAX_BYTES` and is the most a board should give them.
pub const LEASES_MAX_CONFIGURABLE: u32 = 1_000_000;
/// The longest token life: a day. A stolen token is good until it expires
/// (or its user's password changes), so longer lives are refused.
pub const AUTH_TOKEN_TTL_SECS_MAX: u64 = 86_400;
/// The most logins that may wait for the worker: each holds a password and
/// a connection's request slot.
pub const AUTH_LOGINS_MAX_CONFIGURABLE: u32 = 4096;
/// An election timeout must span at least this many heartbeats (etcd's rule:
/// with fewer, one delayed heartbeat starts an election).
pub const ELECTION_HEARTBEATS_MIN: u64 = 5;
/// etcd's upper bound on the election timeout: beyond it a dead leader goes
/// unnoticed for most of a minute.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 50_000;
/// How long a client connection may stay silent with nothing to answer
/// and no watch before it is closed: long enough that a client pausing
/// between bursts keeps its connection, short enough that abandoned and
/// half-open sockets give their slots back within minutes.
pub const CLIENT_IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// The longest `--client-idle-timeout`: a day.
pub const CLIENT_IDLE_TIMEOUT_MS_MAX: u64 = 86_400_000;
/// How long a new client connection may take to send its hello (or its
/// HTTP request head): a client sends it at once, so two seconds is slack
/// for a loaded board, not for a socket held open on purpose.
pub const CLIENT_HELLO_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// The longest `--client-hello-timeout`: a minute, past which a flood of
/// silent sockets holds the connection slots at no cost to its sender.
pub const CLIENT_HELLO_TIMEOUT_MS_MAX: u64 = 60_000;
/// How long a client's frame may take to arrive whole once its first byte
/// is in: a largest request at 100 KB/s.
pub const CLIENT_FRAME_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// The longest `--client-frame-timeout`: ten minutes, a largest request at
/// 5 KB/s; truncated frames are held no longer than that.
pub const CLIENT_FRAME_TIMEOUT_MS_MAX: u64 = 600_000;
/// How long a connection with watch events waiting may take no byte
/// before its watches are cancelled as a slow reader: a client that takes
/// nothing for this long is not catching up, and its resume costs one
/// read of the history from where it stopped.
pub const WATCH_SLOW_READER_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// The longest `--watch-slow-reader-timeout`: ten minutes.
pub const WATCH_SLOW_READER_TIMEOUT_MS_MAX: u64 = 600_000;
/// The shortest of the three timeouts above: below 100 ms a loaded board's
/// own scheduling delays would close healthy connections.
pub const CLIENT_TIMEOUT_MS_MIN: u64 = 100;
/// Client connections a member keeps open by default.
pub const CLIENT_CONNS_MAX_DEFAULT: u32 = 4096;
/// The most `--max-client-connections`: the poll's token space after
/// `CONN_TOKEN_BASE`, and far past what a board's memory serves.
pub const CLIENT_CONNS_MAX_CONFIGURABLE: u32 = 65_536;
/// The memory all client connections may hold together: read buffers,
/// partial frames, requests waiting, answers and watch events not yet
/// written. A quarter of a 512 MiB board, leaving the rest to the store,
/// the WAL's maps and the snapshot images.
pub const CLIENT_MEMORY_BYTES_MAX_DEFAULT: u64 = 128 << 20;
/// The largest answer the server builds by default, whatever a client
/// announces: the Rust client's default frame limit, a range of some ten
/// thousand 1 KiB values. Larger answers are refused; clients page with
/// `limit`.
pub const RESPONSE_BYTES_MAX_DEFAULT: u32 = 16 << 20;
/// The largest `--max-response-bytes`.
pub const RESPONSE_BYTES_MAX_CONFIGURABLE: u32 = 256 << 20;
/// Bytes of one read from a socket (see `conn::READ_CHUNK_BYTES`), counted
/// into a connection's share.
const READ_CHUNK_SHARE_BYTES: u64 = 64 << 10;
/// The most members an initial cluster may list; Raft clusters beyond seven
/// voters only get slower, and the bound keeps id checks trivially cheap.
pub const INITIAL_MEMBERS_MAX: usize = 15;

/// The flags of `ember serve`.
pub const SERVE_FLAGS: &[Flag] = &[
    flag("name", "member name, unique in the cluster (default \"default\")"),
    flag("data-dir", "directory for the WAL and snapshots (default \"default.ember\")"),
    flag("listen-client-urls", "addresses to serve clients on (default 127.0.0.1:7379)"),
    flag("advertise-client-urls", "client addresses told to others (default: listen urls)"),
    flag("listen-peer-urls", "addresses to accept peers on (default 127.0.0.1:7380)"),
    flag("initial-advertise-peer-urls", "this member's peer addresses (default: listen urls)"),
    flag("initial-cluster", "name=url,... of the first members (default: this member alone)"),
    flag("initial-cluster-state", "new or existing (default new)"),
    flag("initial-cluster-token", "unique token of this cluster (default \"ember-cluster\")"),
    flag("heartbeat-interval", "milliseconds between heartbeats (default 100)"),
    flag("election-timeout", "milliseconds before a follower stands (default 1000)"),
    flag(
        "snapshot-count",
        "applied entries between snapshots (default 100000; sooner once the log holds 64 MiB)",
    ),
    flag("max-request-bytes", "largest client request in bytes (default 1572864, at most 4194304)"),
    flag("max-txn-ops", "most operations in one transaction (default 128)"),
    flag("max-leases", "most leases the cluster keeps (default 10000)"),
    flag(
        "quota-backend-bytes",
        "bytes the store may hold before writes are refused with NOSPACE \
         (default 134217728: 128 MiB; the leader's value is the cluster's)",
    ),
    flag(
        "disk-free-min-bytes",
        "free bytes on the data directory's file system below which this member raises \
         NOSPACE (default: the quota plus two WAL segments, room for a snapshot)",
    ),
    flag("auth-token-ttl", "seconds an auth token stays valid (default 300)"),
    flag(
        "auth-pbkdf2-iterations",
        "PBKDF2 rounds for new passwords (default 100000; stored hashes keep theirs)",
    ),
    flag("auth-logins-max", "logins and password hashes waiting at once (default 16)"),
    flag("cert-file", "client port: certificate (PEM); with it the port speaks only TLS"),
    flag("key-file", "client port: private key of --cert-file (PEM)"),
    flag("trusted-ca-file", "client port: CA bundle that client certificates must chain to"),
    switch("client-cert-auth", "client port: refuse clients without a certificate of the CA"),
    flag("peer-cert-file", "peer port: certificate, valid for this member's peer host (PEM)"),
    flag("peer-key-file", "peer port: private key of --peer-cert-file (PEM)"),
    flag("peer-trusted-ca-file", "peer port: CA bundle every member's certificate chains to"),
    switch("peer-client-cert-auth", "peer port: check peers' certificates (always on with TLS)"),
    flag(
        "peer-cert-allowed-hostname",
        "peer port: the one name every member's certificate must be valid for",
    ),
    flag(
        "tls-min-version",
        "TLS1.2 or TLS1.3 (default TLS1.3): the oldest TLS the client and peer ports take",
    ),
    flag("tls-max-version", "TLS1.2 or TLS1.3 (default TLS1.3): the newest TLS they speak"),
    flag(
        "peer-secret-file",
        "peer port without TLS: file of at least 32 random bytes shared by all members",
    ),
    switch(
        "peer-insecure",
        "let a peer port on a network address run with neither peer TLS nor a secret",
    ),
    flag("max-response-bytes", "largest answer the server builds (default 16777216)"),
    flag(
        "max-client-memory-bytes",
        "memory all client connections may hold together (default 134217728)",
    ),
    flag("max-client-connections", "client connections open at once (default 4096)"),
    flag(
        "client-idle-timeout",
        "milliseconds before a silent connection with nothing pending is closed (default 300000)",
    ),
    flag(
        "client-hello-timeout",
        "milliseconds a new client connection has to send its hello (default 2000, 100..60000)",
    ),
    flag(
        "client-frame-timeout",
        "milliseconds a client frame begun has to arrive whole (default 30000, 100..600000)",
    ),
    flag(
        "watch-slow-reader-timeout",
        "milliseconds a connection with watch events waiting may read nothing before its \
         watches are cancelled as a slow reader (default 5000, 100..600000)",
    ),
    flag(
        "listen-metrics-urls",
        "extra addresses serving only /metrics and the health probes (https:// uses --cert-file)",
    ),
    flag(
        "corrupt-check-time",
        "how often the leader has every member hash its store and compare (default 5m; \
         300s, 1500ms or milliseconds; 0 turns the periodic check off)",
    ),
    flag("experimental-corrupt-check-time", "etcd's name for --corrupt-check-time"),
    switch(
        "corrupt-repair",
        "a member a majority's hash finds corrupt replaces its store with the leader's \
         image by itself (default true; =false leaves it to the operator)",
    ),
    flag(
        "max-learners",
        "most learners the cluster may hold; a learner add past it is refused \
         (default 1, as etcd; the member taking the add decides by its own value)",
    ),
    flag("experimental-max-learners", "etcd 3.5's name for --max-learners"),
];

const fn flag(name: &'static str, help: &'static str) -> Flag {
    Flag { name, takes_value: true, help }
}

const fn switch(name: &'static str, help: &'static str) -> Flag {
    Flag { name, takes_value: false, help }
}

/// A value that does not fit its flag. The command exits 2 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag without dashes: `election-timeout`.
    pub flag: &'static str,
    /// The value as given (or as derived, for consistency checks).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value {:?} for --{}: {}", self.value, self.flag, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn error(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { flag, value: value.to_string(), reason: reason.into() }
}

/// A `host:port` address. The host is kept as written (a name or a literal
/// address) and resolved when the socket is opened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// A DNS name or an IP literal; IPv6 keeps its brackets: `[::1]`.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl HostPort {
    /// Whether the host is a wildcard (listen on all interfaces), which peers
    /// and clients cannot be told to connect to.
    pub fn is_unspecified(&self) -> bool {
        matches!(self.host.as_str(), "0.0.0.0" | "[::]" | "[0:0:0:0:0:0:0:0]")
    }

    /// The socket addresses of this host and port. A name is looked up in
    /// the system resolver, which may block; the node does it at start-up.
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok(self.to_string().to_socket_addrs()?.collect())
    }
}

/// `host:port` as the member table writes peer and client URLs of a port
/// without TLS.
pub fn url_of(addr: &HostPort) -> String {
    url_with(addr, false)
}

/// `host:port` as a URL, `https://` when the port speaks TLS.
pub fn url_with(addr: &HostPort, tls: bool) -> String {
    if tls { format!("https://{addr}") } else { format!("http://{addr}") }
}

/// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`.
fn parse_client_tls(
    get: impl Fn(&str) -> Option<String>,
    switch: impl Fn(&'static str) -> Result<bool, ConfigError>,
    versions: tls::TlsVersions,
) -> Result<Option<ServerFiles>, ConfigError> {
    let ca = get("trusted-ca-file").map(PathBuf::from);
    let auth = switch("client-cert-auth")?;
    let Some((cert, key)) = cert_and_key(get("cert-file"), get("key-file"), "")? else {
        if ca.is_some() || auth {
            let reason = "--trusted-ca-file and --client-cert-auth need --cert-file and --key-file";
            return Err(error("cert-file", "", reason));
        }
        return Ok(None);
    };
    if auth && ca.is_none() {
        return Err(error("client-cert-auth", "true", "needs --trusted-ca-file"));
    }
    Ok(Some(ServerFiles { cert, key, trusted_ca: ca, client_cert_auth: auth, versions }))
}

/// The peer TLS flags: certificate, key and CA together or none of them.
fn parse_peer_tls(
    get: impl Fn(&str) -> Option<String>,
    switch: impl Fn(&'static str) -> Result<bool, ConfigError>,
    versions: tls::TlsVersions,
) -> Result<Option<PeerTlsFiles>, ConfigError> {
    let ca = get("peer-trusted-ca-file").map(PathBuf::from);
    let allowed_hostname = get("peer-cert-allowed-hostname");
    if get("peer-client-cert-auth").is_some() && !switch("peer-client-cert-auth")? {
        let reason = "peer certificates are always checked under peer TLS";
        return Err(error("peer-client-cert-auth", "false", reason));
    }
    let Some((cert, key)) = cert_and_key(get("peer-cert-file"), get("peer-key-file"), "peer-")?
    else {
        if ca.is_some() || allowed_hostname.is_some() {
            let reason =
                "peer TLS needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file";
            return Err(error("peer-cert-file", "", reason));
        }
        return Ok(None);
    };
    let Some(ca) = ca else {
        let reason = "peer TLS checks every member's certificate: give --peer-trusted-ca-file";
        return Err(error("peer-trusted-ca-file", "", reason));
    };
    if let Some(name) = &allowed_hostname {
        tls::server_name(name)
            .map_err(|e| error("peer-cert-allowed-hostname", name, e.to_string()))?;
    }
    let server = ServerFiles { cert, key, trusted_ca: Some(ca), client_cert_auth: true, versions };
    Ok(Some(PeerTlsFiles { server, allowed_hostname }))
}

/// A certificate and its key, both or neither.
fn cert_and_key(
    cert: Option<String>,
    key: Option<String>,
    prefix: &'static str,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    let (cert_flag, key_flag) = if prefix.is_empty() {
        ("cert-file", "key-file")
    } else {
        ("peer-cert-file", "peer-key-file")
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((PathBuf::from(cert), PathBuf::from(key)))),
        (None, None) => Ok(None),
        (Some(cert), None) => Err(error(cert_flag, &cert, format!("needs --{key_flag}"))),
        (None, Some(key)) => Err(error(key_flag, &key, format!("needs --{cert_flag}"))),
    }
}

/// etcd's `--tls-min-version` and `--tls-max-version`. Both default to
/// TLS 1.3 (etcd's minimum is TLS 1.2: here TLS 1.2 is taken only when
/// asked for); versions before 1.2 are refused outright.
pub fn parse_tls_versions(
    min: Option<String>,
    max: Option<String>,
) -> Result<tls::TlsVersions, ConfigError> {
    let version = |flag: &'static str, value: Option<String>| match value {
        None => Ok(tls::TlsVersion::Tls13),
        Some(text) => {
            tls::TlsVersion::parse(&text).ok_or_else(|| error(flag, &text, "TLS1.2 or TLS1.3"))
        }
    };
    let (min, max) = (version("tls-min-version", min)?, version("tls-max-version", max)?);
    tls::TlsVersions::new(min, max).ok_or_else(|| {
        error("tls-min-version", &min.to_string(), format!("is above --tls-max-version {max}"))
    })
}

/// `https://` exactly where the port speaks TLS; bare `host:port` fits both.
fn check_schemes(
    get: impl Fn(&str) -> Option<String>,
    client_tls: bool,
    peer_tls: bool,
) -> Result<(), ConfigError> {
    let flags: [(&'static str, bool, &str); 5] = [
        ("listen-client-urls", client_tls, "--cert-file and --key-file"),
        ("advertise-client-urls", client_tls, "--cert-file and --key-file"),
        ("listen-peer-urls", peer_tls, "peer TLS flags"),
        ("initial-advertise-peer-urls", peer_tls, "peer TLS flags"),
        ("initial-cluster", peer_tls, "peer TLS flags"),
    ];
    for (flag, tls, needs) in flags {
        let Some(text) = get(flag) else { continue };
        for item in text.split(',').map(str::trim) {
            let url = item.split_once('=').map_or(item, |(_, url)| url);
            if url.starts_with("https://") && !tls {
                return Err(error(flag, item, format!("https:// needs {needs}")));
            }
            if url.starts_with("http://") && tls {
                return Err(error(flag, item, "the port speaks TLS: write https://"));
            }
        }
    }
    Ok(())
}

/// Whether the metrics URLs speak TLS: all `https://` (with the client
/// port's certificate, as etcd does) or none, since they share one
/// listener set.
fn parse_metrics_scheme(
    get: impl Fn(&str) -> Option<String>,
    client_tls: bool,
) -> Result<bool, ConfigError> {
    const FLAG: &str = "listen-metrics-urls";
    let Some(text) = get(FLAG) else { return Ok(false) };
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    let https = items.iter().filter(|url| url.starts_with("https://")).count();
    if https != 0 && https != items.len() {
        return Err(error(FLAG, &text, "write every URL https:// or none"));
    }
    if https != 0 && !client_tls {
        return Err(error(FLAG, &text, "https:// needs --cert-file and --key-file"));
    }
    Ok(https != 0)
}

/// Whether `--initial-cluster*` describes a new cluster or one to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    /// Invariant: sorted and without duplicates, so the id does not depend on
    /// the order the URLs were written in.
    pub peer_addrs: Vec<HostPort>,
    /// Invariant: `member_id(name, peer_addrs, token)`, never 0.
    pub id: u64,
}

/// The validated configuration of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_addrs: Vec<HostPort>,
    pub advertise_client_addrs: Vec<HostPort>,
    pub listen_peer_addrs: Vec<HostPort>,
    pub initial_advertise_peer_addrs: Vec<HostPort>,
    /// Invariant: sorted by id, names and ids unique, contains `name`.
    /// Names may be empty (unnamed, several of them) only with
    /// `initial_cluster_state` `Existing`, until `join::learn_ids` has
    /// matched them to the cluster's table.
    pub initial_cluster: Vec<InitialMember>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub heartbeat_interval_ms: u64,
    /// Invariant: `>= ELECTION_HEARTBEATS_MIN * heartbeat_interval_ms`.
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    pub max_request_bytes: u32,
    pub max_txn_ops: u32,
    /// Most leases; a grant past it is refused. Give every member the same
    /// value: the cap is checked where the grant is asked for.
    pub max_leases: u32,
    /// The store's quota; the leader proposes its own as the cluster's
    /// (`state::quota`), so give every member the same value.
    pub quota_backend_bytes: u64,
    /// Free bytes on the data directory's file system below which this
    /// member raises `NoSpace` for itself (`server/disk.rs`).
    pub disk_free_min_bytes: u64,
    /// How long a token this member issues stays valid.
    pub auth_token_ttl_secs: u64,
    /// The PBKDF2 cost of passwords hashed here.
    pub auth_pbkdf2_iterations: u32,
    /// Logins and hashes waiting for the worker at once.
    pub auth_logins_max: u32,
    /// The largest answer the server builds; a client's smaller limit wins.
    pub max_response_bytes: u32,
    /// Invariant: at least twice `client_share_bytes()`.
    pub max_client_memory_bytes: u64,
    pub max_client_connections: u32,
    pub client_idle_timeout_ms: u64,
    pub client_hello_timeout_ms: u64,
    pub client_frame_timeout_ms: u64,
    pub watch_slow_reader_timeout_ms: u64,
    /// This member's id: the id of `name` in `initial_cluster`, or the id
    /// its data directory recorded (`identity.rs`), which wins.
    pub member_id: u64,
    /// Invariant: `cluster_id(no ids, token)` (the token alone), never 0.
    pub cluster_id: u64,
    /// TLS on the client port. Invariant: set exactly when the client URLs
    /// may be `https://`.
    pub client_tls: Option<ServerFiles>,
    /// TLS on the peer port. Invariant: set exactly when peer URLs may be
    /// `https://`.
    pub peer_tls: Option<PeerTlsFiles>,
    /// The shared secret of peer hellos, read when the node starts.
    pub peer_secret_file: Option<PathBuf>,
    /// The operator accepts a peer port on the network without
    /// authentication.
    pub peer_insecure: bool,
    /// `--listen-metrics-urls`: ports that answer HTTP only (`/metrics`
    /// and the probes); empty without the flag.
    pub listen_metrics_addrs: Vec<HostPort>,
    /// The metrics ports speak TLS with the client port's certificate.
    /// Invariant: only with `client_tls`.
    pub metrics_tls: bool,
    /// How often the leader opens a corruption check (`server/corrupt.rs`);
    /// 0: only at start-up and after compactions.
    pub corrupt_check_time_ms: u64,
    /// `--corrupt-repair`: a member found corrupt against a majority
    /// repairs its state machine from the leader (`server/repair.rs`).
    pub corrupt_repair: bool,
    /// `--max-learners`: the most learners a learner add taken here lets
    /// the cluster hold; carried in the add's entry (`MemberOp::JoinLearner`).
    /// Invariant: `1..=LEARNERS_MAX_CONFIGURABLE`.
    pub max_learners: u32,
}

/// The files of peer TLS: this member's certificate and key, presented to
/// members it dials and to those that dial it, and the peer CA that every
/// member's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsFiles {
    /// Invariant: `trusted_ca` set and `client_cert_auth` true: a member
    /// that dials in proves itself like one that is dialed.
    pub server: ServerFiles,
    /// When set, every member's certificate must be valid for this name
    /// instead of its own peer host.
    pub allowed_hostname: Option<String>,
}

impl PeerTlsFiles {
    /// Reads the files and builds both sides' configurations.
    pub fn load(&self) -> Result<transport_mod::PeerTls, TlsError> {
        let client = ClientFiles {
            ca: self.server.trusted_ca.clone(),
            cert: Some(self.server.cert.clone()),
            key: Some(self.server.key.clone()),
            insecure_skip_verify: false,
        };
        Ok(transport_mod::PeerTls {
            server: self.server.load()?,
            // The versions this member's own peer port speaks: members of
            // one cluster are started alike.
            client: client.load_for(self.server.versions)?,
            allowed_hostname: self.allowed_hostname.clone(),
        })
    }
}

impl Config {
    /// The configuration from flags, falling back to `EMBER_<FLAG>` through
    /// `env`, then to the defaults.
    pub fn from_parsed(
        parsed: &Parsed,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let get = |flag: &str| parsed.value(flag, &env);
        let switch = |flag: &'static str| {
            parsed.switch(flag, &env).map_err(|e| error(flag, "", e.to_string()))
        };
        let versions = parse_tls_versions(get("tls-min-version"), get("tls-max-version"))?;
        let client_tls = parse_client_tls(get, switch, versions)?;
        let peer_tls = parse_peer_tls(get, switch, versions)?;
        check_schemes(get, client_tls.is_some(), peer_tls.is_some())?;
        let metrics_tls = parse_metrics_scheme(get, client_tls.is_some())?;
        let name = parse_name(get("name").unwrap_or_else(|| DEFAULT_NAME.to_string()))?;
        let data_dir = parse_data_dir(get("data-dir"))?;
        let listen_client_addrs = addrs_or("listen-client-urls", get, DEFAULT_CLIENT_ADDR, true)?;
        let listen_peer_addrs = addrs_or("listen-peer-urls", get, DEFAULT_PEER_ADDR, true)?;
        let advertise_client_addrs =
            advertised("advertise-client-urls", get, &listen_client_addrs)?;
        let initial_advertise_peer_addrs =
            advertised("initial-advertise-peer-urls", get, &listen_peer_addrs)?;
        let token = parse_token(get("initial-cluster-token"))?;
        let initial_cluster_state = parse_state(get("initial-cluster-state"))?;
        let initial_cluster = match get("initial-cluster") {
            Some(text) => {
                let members = parse_initial_cluster(&text, &token)?;
                check_unnamed(&members, initial_cluster_state, &text)?;
                members
            }
            None => vec![initial_member(&name, initial_advertise_peer_addrs.clone(), &token)],
        };
        let member_id = own_member_id(&initial_cluster, &name, &initial_advertise_peer_addrs)?;
        let (heartbeat_interval_ms, election_timeout_ms) = parse_timing(get)?;
        let quota_backend_bytes = number_or(
            "quota-backend-bytes",
            get,
            crate::state::quota::QUOTA_BACKEND_BYTES_DEFAULT,
            u64::MAX,
        )?;
        // From the token alone: a member joining later knows the token but
        // not the members the cluster started with (docs/PROTOCOL.md).
        let cluster_id = cluster_id(std::iter::empty(), &token);
        Config {
            name,
            data_dir,
            listen_client_addrs,
            advertise_client_addrs,
            listen_peer_addrs,
            initial_advertise_peer_addrs,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token: token,
            heartbeat_interval_ms,
            election_timeout_ms,
            snapshot_count: number_or("snapshot-count", get, DEFAULT_SNAPSHOT_COUNT, u64::MAX)?,
            max_request_bytes: number_or(
                "max-request-bytes",
                get,
                REQUEST_BYTES_MAX_DEFAULT,
                REQUEST_BYTES_MAX_CONFIGURABLE,
            )?,
            max_txn_ops: number_or("max-txn-ops", get, TXN_OPS_MAX_DEFAULT as u32, u32::MAX)?,
            max_leases: number_or("max-leases", get, LEASES_MAX_DEFAULT, LEASES_MAX_CONFIGURABLE)?,
            quota_backend_bytes,
            disk_free_min_bytes: number_or(
                "disk-free-min-bytes",
                get,
                disk_free_min_bytes_default(quota_backend_bytes),
                u64::MAX,
            )?,
            auth_token_ttl_secs: number_or(
                "auth-token-ttl",
                get,
                crate::auth::token::TOKEN_TTL_SECS_DEFAULT,
                AUTH_TOKEN_TTL_SECS_MAX,
            )?,
            auth_pbkdf2_iterations: number_or(
                "auth-pbkdf2-iterations",
                get,
                crate::auth::password::ITERATIONS_DEFAULT,
                crate::auth::password::ITERATIONS_MAX,
            )?,
            auth_logins_max: number_or(
                "auth-logins-max",
                get,
                super::logins::LOGINS_IN_FLIGHT_MAX_DEFAULT as u32,
                AUTH_LOGINS_MAX_CONFIGURABLE,
            )?,
            max_response_bytes: number_or(
                "max-response-bytes",
                get,
                RESPONSE_BYTES_MAX_DEFAULT,
                RESPONSE_BYTES_MAX_CONFIGURABLE,
            )?,
            max_client_memory_bytes: number_or(
                "max-client-memory-bytes",
                get,
                CLIENT_MEMORY_BYTES_MAX_DEFAULT,
                u64::MAX,
            )?,
            max_client_connections: number_or(
                "max-client-connections",
                get,
                CLIENT_CONNS_MAX_DEFAULT,
                CLIENT_CONNS_MAX_CONFIGURABLE,
            )?,
            client_idle_timeout_ms: number_or(
                "client-idle-timeout",
                get,
                CLIENT_IDLE_TIMEOUT_MS_DEFAULT,
                CLIENT_IDLE_TIMEOUT_MS_MAX,
            )?,
            client_hello_timeout_ms: timeout_ms(
                "client-hello-timeout",
                get,
                CLIENT_HELLO_TIMEOUT_MS_DEFAULT,
                CLIENT_HELLO_TIMEOUT_MS_MAX,
            )?,
            client_frame_timeout_ms: timeout_ms(
                "client-frame-timeout",
                get,
                CLIENT_FRAME_TIMEOUT_MS_DEFAULT,
                CLIENT_FRAME_TIMEOUT_MS_MAX,
            )?,
            watch_slow_reader_timeout_ms: timeout_ms(
                "watch-slow-reader-timeout",
                get,
                WATCH_SLOW_READER_TIMEOUT_MS_DEFAULT,
                WATCH_SLOW_READER_TIMEOUT_MS_MAX,
            )?,
            member_id,
            cluster_id,
            client_tls,
            peer_tls,
            peer_secret_file: get("peer-secret-file").map(PathBuf::from),
            peer_insecure: switch("peer-insecure")?,
            listen_metrics_addrs: match get("listen-metrics-urls") {
                Some(text) => parse_addr_list("listen-metrics-urls", &text, true)?,
                None => Vec::new(),
            },
            metrics_tls,
            corrupt_check_time_ms: parse_corrupt_check_time(get)?,
            // On unless turned off: an edge cluster has nobody on call.
            corrupt_repair: get("corrupt-repair").is_none() || switch("corrupt-repair")?,
            max_learners: parse_max_learners(get)?,
        }
        .checked()
    }

    /// The budget must hold two connections at their share, or one client
    /// could spend all of it.
    fn checked(self) -> Result<Config, ConfigError> {
        let least = 2 * self.client_share_bytes();
        if self.max_client_memory_bytes < least {
            let value = self.max_client_memory_bytes.to_string();
            let reason = format!(
                "at least {least}: twice a connection's share, which is one largest request \
                 (--max-request-bytes) and one largest answer (--max-response-bytes) and a read"
            );
            return Err(error("max-client-memory-bytes", &value, reason));
        }
        Ok(self)
    }

    /// The most one connection holds before it stops being read: one
    /// largest request being read plus a read, and one largest answer
    /// unsent. Half of it for each, so the share is twice the larger.
    pub fn client_share_bytes(&self) -> u64 {
        let frame_max = u64::from(self.max_request_bytes.max(self.max_response_bytes));
        2 * (frame_max + READ_CHUNK_SHARE_BYTES)
    }

    /// A peer URL as the member table writes it: `https://` under peer TLS.
    pub fn peer_url(&self, addr: &HostPort) -> String {
        url_with(addr, self.peer_tls.is_some())
    }

    /// A client URL as the member table writes it: `https://` under client TLS.
    pub fn client_url(&self, addr: &HostPort) -> String {
        url_with(addr, self.client_tls.is_some())
    }

    /// Refuses a peer listener on `addr` that anyone on the network could
    /// speak to as a member: not loopback, and neither peer TLS nor a
    /// secret, unless `--peer-insecure`.
    pub fn check_peer_exposure(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        let authenticated = self.peer_tls.is_some() || self.peer_secret_file.is_some();
        if addr.ip().is_loopback() || authenticated || self.peer_insecure {
            return Ok(());
        }
        let reason = "a peer port on a network address needs peer TLS (--peer-cert-file, \
                      --peer-key-file, --peer-trusted-ca-file) or --peer-secret-file; \
                      --peer-insecure runs it without authentication";
        Err(error("listen-peer-urls", &addr.to_string(), reason))
    }

    /// The other members of the initial cluster: (id, peer addresses).
    pub fn initial_peers(&self) -> impl Iterator<Item = (u64, &[HostPort])> {
        let own = self.member_id;
        self.initial_cluster.iter().filter(move |m| m.id != own).map(|m| (m.id, &m.peer_addrs[..]))
    }

    /// The other members with their peer addresses resolved, as the
    /// transport dials them. A name that does not resolve is an error naming
    /// `--initial-cluster`.
    pub fn transport_peers(&self) -> Result<Vec<PeerAddr>, ConfigError> {
        let mut peers = Vec::new();
        for (id, addrs) in self.initial_peers() {
            let mut resolved = Vec::new();
            for addr in addrs {
                let found = addr.resolve().map_err(|e| {
                    error("initial-cluster", &addr.to_string(), format!("cannot resolve: {e}"))
                })?;
                resolved.extend(found);
            }
            let name = addrs.first().map(|a| a.host.clone()).unwrap_or_default();
            peers.push(PeerAddr { id, name, addrs: resolved });
        }
        Ok(peers)
    }

    /// The Raft tick: one heartbeat interval, as in etcd.
    pub fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The election timeout in ticks (at least `ELECTION_HEARTBEATS_MIN`,
    /// rounded down as etcd does).
    pub fn election_ticks(&self) -> u64 {
        self.election_timeout_ms / self.heartbeat_interval_ms
    }
}

fn parse_name(name: String) -> Result<String, ConfigError> {
    // '=' and ',' would break `--initial-cluster`'s syntax.
    if name.is_empty() || name.contains(['=', ',']) || name.trim() != name {
        return Err(error("name", &name, "a non-empty name without '=', ',' or outer spaces"));
    }
    Ok(name)
}

fn parse_data_dir(value: Option<String>) -> Result<PathBuf, ConfigError> {
    match value {
        None => Ok(PathBuf::from(DEFAULT_DATA_DIR)),
        Some(dir) if dir.is_empty() => Err(error("data-dir", &dir, "a directory path")),
        Some(dir) => Ok(PathBuf::from(dir)),
    }
}

fn parse_token(value: Option<String>) -> Result<String, ConfigError> {
    let token = value.unwrap_or_else(|| DEFAULT_CLUSTER_TOKEN.to_string());
    if token.is_empty() {
        return Err(error("initial-cluster-token", &token, "a non-empty token"));
    }
    Ok(token)
}

fn parse_state(value: Option<String>) -> Result<ClusterState, ConfigError> {
    match value.as_deref() {
        None | Some("new") => Ok(ClusterState::New),
        Some("existing") => Ok(ClusterState::Existing),
        Some(other) => Err(error("initial-cluster-state", other, "new or existing")),
    }
}

/// Heartbeat and election timeout, checked against each other.
fn parse_timing(get: impl Fn(&str) -> Option<String>) -> Result<(u64, u64), ConfigError> {
    let heartbeat_ms =
        number_or("heartbeat-interval", &get, DEFAULT_HEARTBEAT_INTERVAL_MS, 10_000)?;
    let election_ms =
        number_or("election-timeout", &get, DEFAULT_ELECTION_TIMEOUT_MS, ELECTION_TIMEOUT_MS_MAX)?;
    if election_ms < ELECTION_HEARTBEATS_MIN * heartbeat_ms {
        let reason = format!(
            "must be at least {ELECTION_HEARTBEATS_MIN} times --heartbeat-interval ({heartbeat_ms} ms)"
        );
        return Err(error("election-timeout", &election_ms.to_string(), reason));
    }
    Ok((heartbeat_ms, election_ms))
}

/// A whole number in `1..=max`, or `default` when the flag is absent.
/// Room for a snapshot (an image is about the store's size, at most the
/// quota) and two WAL segments, so the member raises `NoSpace` while the
/// WAL can still allocate its next segment and a snapshot can still be
/// written.
pub fn disk_free_min_bytes_default(quota_backend_bytes: u64) -> u64 {
    quota_backend_bytes.saturating_add(2 * crate::wal::SEGMENT_SIZE_BYTES_DEFAULT)
}

/// How often the leader opens a corruption check by default. A check reads
/// the whole store on every member, a slice per loop iteration: on a board
/// with a store of tens of MB that is well under a second of work spread
/// over a few hundred iterations. Every five minutes catches a flipped bit
/// long before anyone would, and costs a board nothing it would notice.
pub const CORRUPT_CHECK_TIME_MS_DEFAULT: u64 = 300_000;
/// The longest `--corrupt-check-time`: a week.
pub const CORRUPT_CHECK_TIME_MS_MAX: u64 = 7 * 86_400_000;

/// `--corrupt-check-time` (or etcd's `--experimental-corrupt-check-time`):
/// a duration as etcd writes it (`5m`, `300s`, `1m30s`, `1500ms`) or a bare
/// number of milliseconds, as Ember's other time flags take.
fn parse_corrupt_check_time(get: impl Fn(&str) -> Option<String>) -> Result<u64, ConfigError> {
    let (flag, text) = match get("corrupt-check-time") {
        Some(text) => ("corrupt-check-time", text),
        None => match get("experimental-corrupt-check-time") {
            Some(text) => ("experimental-corrupt-check-time", text),
            None => return Ok(CORRUPT_CHECK_TIME_MS_DEFAULT),
        },
    };
    let expected = || "a duration such as 5m, 300s or 1500ms, at most a week (0: off)".to_string();
    match duration_ms(text.trim()) {
        Some(ms) if ms <= CORRUPT_CHECK_TIME_MS_MAX => Ok(ms),
        _ => Err(error(flag, &text, expected())),
    }
}

/// etcd's default for the most learners: one at a time.
pub const LEARNERS_MAX_DEFAULT: u32 = 1;
/// The largest `--max-learners`: every member but one voter.
pub const LEARNERS_MAX_CONFIGURABLE: u32 = crate::state::members::MEMBERS_MAX as u32 - 1;

/// `--max-learners`, or etcd 3.5's `--experimental-max-learners`.
fn parse_max_learners(get: impl Fn(&str) -> Option<String>) -> Result<u32, ConfigError> {
    let flag = match get("max-learners") {
        Some(_) => "max-learners",
        None => "experimental-max-learners",
    };
    number_or(flag, get, LEARNERS_MAX_DEFAULT, LEARNERS_MAX_CONFIGURABLE)
}

/// Milliseconds in a Go-style duration (`1h`, `1m30s`, `250ms`) or a bare
/// number of milliseconds; `None` when it is neither.
fn duration_ms(text: &str) -> Option<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Some(ms);
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ms = total_ms.checked_add(number.checked_mul(unit_ms)?)?;
    }
    (!text.is_empty()).then_some(total_ms)
}

fn number_or<T>(
    flag: &'static str,
    get: impl Fn(&str) -> Option<String>,
    default: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + From<u8> + fmt::Display + Copy,
{
    let Some(text) = get(flag) else { return Ok(default) };
    let expected = || format!("a whole number from 1 to {max}");
    let value: T = text.trim().parse().map_err(|_| error(flag, &text, expected()))?;
    if value < T::from(1) || value > max {
        return Err(error(flag, &text, expected()));
    }
    Ok(value)
}

/// A client timeout in milliseconds, from `CLIENT_TIMEOUT_MS_MIN` to `max`.
fn timeout_ms(
    flag: &'static str,
    get: impl Fn(&str) -> Option<String>,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let value = number_or(flag, &get, default, max)?;
    if value < CLIENT_TIMEOUT_MS_MIN {
        let expected = format!("milliseconds from {CLIENT_TIMEOUT_MS_MIN} to {max}");
        return Err(error(flag, &value.to_string(), expected));
    }
    Ok(value)
}

/// The flag's addresses, or `default` when absent.
fn addrs_or(
    flag: &'static str,
    get: impl Fn(&str) -> Option<String>,
    default: &str,
    allow_port_zero: bool,
) -> Result<Vec<HostPort>, ConfigError> {
    let text = get(flag).unwrap_or_else(|| default.to_string());
    parse_addr_list(flag, &text, allow_port_zero)
}

/// Advertised addresses default to the listen addresses, unless those are
/// wildcards or ephemeral ports that nobody could connect to.
fn advertised(
    flag: &'static str,
    get: impl Fn(&str) -> Option<String>,
    listen: &[HostPort],
) -> Result<Vec<HostPort>, ConfigError> {
    if let Some(text) = get(flag) {
        return parse_addr_list(flag, &text, false);
    }
    if let Some(bad) = listen.iter().find(|a| a.is_unspecified() || a.port == 0) {
        let reason = "must be given when the listen address is a wildcard or port 0";
        return Err(error(flag, &bad.to_string(), reason));
    }
    Ok(listen.to_vec())
}

/// `a:1,http://b:2` → sorted, deduplicated addresses; at least one.
pub fn parse_addr_list(
    flag: &'static str,
    text: &str,
    allow_port_zero: bool,
) -> Result<Vec<HostPort>, ConfigError> {
    let mut addrs = Vec::new();
    for item in text.split(',').map(str::trim) {
        let addr = parse_addr(item).map_err(|reason| error(flag, item, reason))?;
        if addr.port == 0 && !allow_port_zero {
            return Err(error(flag, item, "port 0 cannot be connected to"));
        }
        addrs.push(addr);
    }
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// One URL: `http://host:port`, `host:port` or `[v6]:port`, with an optional
/// trailing `/`.
pub fn parse_addr(text: &str) -> Result<HostPort, &'static str> {
    const EXPECTED: &str = "host:port, http://host:port or https://host:port";
    if text.starts_with("unix") {
        return Err("only http://, https:// or plain host:port is supported (no unix sockets)");
    }
    let rest =
        text.strip_prefix("http://").or_else(|| text.strip_prefix("https://")).unwrap_or(text);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':').ok_or(EXPECTED)?;
    let port: u16 = port.parse().map_err(|_| EXPECTED)?;
    if !valid_host(host) {
        return Err(EXPECTED);
    }
    Ok(HostPort { host: host.to_string(), port })
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        return inner.strip_suffix(']').is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    !host.is_empty() && host.chars().all(allowed)
}

/// `a=http://h1:7380,b=h2:7380,b=h3:7380` → members sorted by id.
///
/// An unnamed entry (`=http://h4:7380`) is a member that `member add`
/// listed before it first started and published its name (etcd prints
/// the same). Each such URL stays an entry of its own: nothing in the text
/// says which unnamed URLs belong to one member, so a joining member finds
/// each in the cluster's table by its URL (`join.rs`). Only a member that
/// joins with `--initial-cluster-state existing` may be given one
/// (`check_unnamed`).
fn parse_initial_cluster(text: &str, token: &str) -> Result<Vec<InitialMember>, ConfigError> {
    const FLAG: &str = "initial-cluster";
    let mut by_name: Vec<(String, Vec<HostPort>)> = Vec::new();
    for item in text.split(',').map(str::trim) {
        let (name, url) = item.split_once('=').ok_or_else(|| error(FLAG, item, "name=url"))?;
        let name = match name {
            "" => String::new(),
            _ => parse_name(name.to_string()).map_err(|e| error(FLAG, item, e.reason))?,
        };
        let addr = parse_addr(url).map_err(|reason| error(FLAG, item, reason))?;
        if addr.port == 0 || addr.is_unspecified() {
            return Err(error(FLAG, item, "a peer address others can connect to"));
        }
        match by_name.iter_mut().find(|(n, _)| !n.is_empty() && *n == name) {
            Some((_, addrs)) => addrs.push(addr),
            None => by_name.push((name, vec![addr])),
        }
    }
    if by_name.len() > INITIAL_MEMBERS_MAX {
        return Err(error(FLAG, text, format!("at most {INITIAL_MEMBERS_MAX} members")));
    }
    let members: Vec<InitialMember> =
        by_name.into_iter().map(|(name, addrs)| initial_member(&name, addrs, token)).collect();
    check_members_distinct(text, members)
}

/// No address shared by two members, no two members with one id.
fn check_members_distinct(
    text: &str,
    mut members: Vec<InitialMember>,
) -> Result<Vec<InitialMember>, ConfigError> {
    for (i, a) in members.iter().enumerate() {
        for b in &members[i + 1..] {
            if let Some(shared) = a.peer_addrs.iter().find(|x| b.peer_addrs.contains(x)) {
                let (a, b) = (display_name(&a.name), display_name(&b.name));
                let reason = format!("{shared} is given to both {a} and {b}");
                return Err(error("initial-cluster", text, reason));
            }
            if a.id == b.id {
                let reason = format!("{} and {} hash to the same id", a.name, b.name);
                return Err(error("initial-cluster", text, reason));
            }
        }
    }
    members.sort_by_key(|m| m.id);
    Ok(members)
}

fn display_name(name: &str) -> &str {
    if name.is_empty() { "an unnamed member" } else { name }
}

/// A new cluster's members take their ids and names from the flag alone,
/// so every one must be named; joining, the cluster's table names them.
fn check_unnamed(
    members: &[InitialMember],
    state: ClusterState,
    text: &str,
) -> Result<(), ConfigError> {
    if state == ClusterState::Existing || members.iter().all(|m| !m.name.is_empty()) {
        return Ok(());
    }
    let reason = "an unnamed member (=URL, as `member add` prints one not started yet) is \
                  taken only with --initial-cluster-state existing: a new cluster needs \
                  every member's name";
    Err(error("initial-cluster", text, reason))
}

fn initial_member(name: &str, mut peer_addrs: Vec<HostPort>, token: &str) -> InitialMember {
    peer_addrs.sort();
    peer_addrs.dedup();
    let id = member_id(name, &peer_addrs, token);
    InitialMember { name: name.to_string(), peer_addrs, id }
}

/// Our own id; our name must be listed with exactly our advertised addresses,
/// or the others would dial somewhere we do not listen.
fn own_member_id(
    members: &[InitialMember],
    name: &str,
    advertised: &[HostPort],
) -> Result<u64, ConfigError> {
    let Some(own) = members.iter().find(|m| m.name == name) else {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let reason = format!("this member's --name {name:?} is not listed");
        return Err(error("initial-cluster", &names.join(","), reason));
    };
    if own.peer_addrs != advertised {
        let given: Vec<String> = advertised.iter().map(|a| a.to_string()).collect();
        let reason = format!(
            "--initial-cluster lists {name} at {}",
            own.peer_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
        );
        return Err(error("initial-advertise-peer-urls", &given.join(","), reason));
    }
    Ok(own.id)
}

/// FNV-1a, 64 bits: a fixed, portable hash (same value on every board and
/// every build), which is all deterministic ids need.
pub fn fnv1a_64(bytes: &[u8], mut hash: u64) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// FNV-1a's standard starting value.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// A member's id from its name, sorted peer addresses and the cluster token.
/// Fields are separated by a 0 byte, which none of them may contain, so
/// different inputs never concatenate to the same bytes.
pub fn member_id(name: &str, sorted_peer_addrs: &[HostPort], token: &str) -> u64 {
    let mut hash = fnv1a_64(name.as_bytes(), FNV_OFFSET_BASIS);
    for addr in sorted_peer_addrs {
        hash = fnv1a_64(&[0], hash);
        hash = fnv1a_64(addr.to_string().as_bytes(), hash);
    }
    hash = fnv1a_64(&[0, 0], hash);
    nonzero(fnv1a_64(token.as_bytes(), hash))
}

/// The cluster id from the member ids (in any order) and the token.
pub fn cluster_id(member_ids: impl Iterator<Item = u64>, token: &str) -> u64 {
    let mut ids: Vec<u64> = member_ids.collect();
    ids.sort_unstable();
    let mut hash = FNV_OFFSET_BASIS;
    for id in ids {
        hash = fnv1a_64(&id.to_le_bytes(), hash);
    }
    hash = fnv1a_64(&[0], hash);
    nonzero(fnv1a_64(token.as_bytes(), hash))
}

fn nonzero(hash: u64) -> u64 {
    if hash == 0 { 1 } else { hash }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_every_spelling() {
        let want = HostPort { host: "10.0.0.1".into(), port: 7380 };
        for text in ["10.0.0.1:7380", "http://10.0.0.1:7380", "https://10.0.0.1:7380/"] {
            assert_eq!(parse_addr(text), Ok(want.clone()), "{text}");
        }
        assert_eq!(parse_addr("[::1]:1").unwrap().to_string(), "[::1]:1");
        assert_eq!(parse_addr("node-1.lan:7380").unwrap().host, "node-1.lan");
    }

    #[test]
    fn bad_addresses_are_refused() {
        for text in ["", "host", "host:", ":7380", "host:70000", "unix:///x", "[zz]:1", "a b:1"] {
            assert!(parse_addr(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // Published test vectors of FNV-1a 64.
        assert_eq!(fnv1a_64(b"", FNV_OFFSET_BASIS), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a", FNV_OFFSET_BASIS), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar", FNV_OFFSET_BASIS), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn ids_depend_on_name_addresses_and_token() {
        let addrs = [parse_addr("h:1").unwrap()];
        let base = member_id("a", &addrs, "t");
        assert_ne!(base, member_id("b", &addrs, "t"));
        assert_ne!(base, member_id("a", &[parse_addr("h:2").unwrap()], "t"));
        assert_ne!(base, member_id("a", &addrs, "u"));
        assert_eq!(cluster_id([1, 2].into_iter(), "t"), cluster_id([2, 1].into_iter(), "t"));
        assert_ne!(cluster_id([1, 2].into_iter(), "t"), cluster_id([1, 2].into_iter(), "u"));
    }

    #[test]
    fn corrupt_check_time_reads_etcd_durations_and_milliseconds() {
        assert_eq!(duration_ms("5m"), Some(300_000));
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("1500ms"), Some(1_500));
        assert_eq!(duration_ms("2h"), Some(7_200_000));
        assert_eq!(duration_ms("700"), Some(700));
        assert_eq!(duration_ms("0"), Some(0));
        for bad in ["", "m", "5x", "1m30", "-1s", "1.5s"] {
            assert!(duration_ms(bad).is_none(), "{bad:?} accepted");
        }
    }
}
