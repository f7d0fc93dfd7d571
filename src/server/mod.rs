//! The node: one mio poll loop on one thread, driving Raft and the
//! replicated state machine (`crate::state`).
//!
//! Owns: the loop and its timers, configuration, the order in which a Raft
//! `Ready` is handled (send, persist, send after persist, apply, advance),
//! handing committed entries to the state machine and carrying out its
//! answers and effects, client sessions, watch fan-out, peers and systemd
//! notification.
//!
//! Must not touch: consensus rules (they live in `raft`), what an entry does
//! (`state`), or file formats (`wal` and `snap`).
//!
//! Layout. Parts, each owning its state behind its own type, none of which
//! knows `Node`:
//! - `proposals.rs`: sequence numbers, the write batch, read rounds, who
//!   waits for what.
//! - `clients.rs`: client connections (bytes in, requests out; answers in,
//!   bytes out) and their watches; `conn.rs` one connection, `watch.rs` one
//!   watch.
//! - `peers.rs`: the transport, following the member table; names resolved
//!   off the loop.
//! - `snapshots.rs`: taking snapshots (a slice per iteration, a writer
//!   thread) and gathering those a leader streams here.
//! - `lease_clock.rs`: the lease deadlines' clock, limits, fresh ids.
//! - `metrics.rs`: what the loop counts for Prometheus, and the text a
//!   scrape gets.
//! - `backups.rs`: requests that wait for a snapshot taken now (backups
//!   streamed to clients, defragmentation) and the backup streams;
//!   `leader_moves.rs`: move-leader requests waiting for their target.
//! - `config.rs`, `dir_lock.rs`, `identity.rs`, `notify.rs`, `signal.rs`:
//!   flags, the one process that may use the data directory, its member,
//!   sd_notify, stop signals.
//!
//! The node, which ties them (`impl Node` only in these files, each of
//! which imports `node.rs` and none of which `node.rs` imports):
//! - `node.rs`: the parts, start-up (recovery, bootstrap), the loop.
//! - `ready.rs`: peer input, the `Ready` cycle, apply and its effects.
//! - `alarms.rs`: alarm requests, the leader's quota proposal, and the
//!   alarms in status and health; `disk.rs`: the data directory's free
//!   space, which raises and clears this member's `NoSpace`.
//! - `requests.rs`: where each client request goes, and the maintenance
//!   requests (snapshot, move-leader, defragment).
//! - `http.rs`: the answers to the probes and to `/metrics`.
//! - `leases.rs`, `members.rs`: lease and member requests, expiry, the
//!   leader reconciling Raft's configuration, publishing this member.
//! - `conf_plan.rs` (pure): which configuration change the leader proposes
//!   next: a learner first, a joint replacement, or one at a time.
//!
//! `restore.rs` builds a new member's data directory from a backup file
//! (`ember snapshot restore`), offline, with the same bootstrap as a new
//! cluster's.
//!
//! Start-up: lock the data directory (`dir_lock.rs`), check its identity
//! (`identity.rs`), open the WAL (recovering a torn tail), open the
//! snapshot directory; a fresh directory of a new cluster is bootstrapped
//! with a snapshot at index 1 holding the initial membership (Raft's voters
//! and the member table); a fresh directory started with
//! `--initial-cluster-state existing` is not bootstrapped and waits for the
//! leader's snapshot once `member add` has made it a member; the state
//! machine is restored from the snapshot the WAL names; Raft starts with
//! that snapshot's index as its applied index and hands out the committed
//! entries after it, which the loop applies like any others.
//!
//! Threads: the loop is the only thread that touches sockets, Raft, the WAL
//! and the state machine. A snapshot's file is written by a short-lived
//! thread (see `snapshots.rs`), at most one at a time; peer names are
//! looked up by another (`peers.rs`), started on the first name.
//!
//! Failure: a failed fsync (or any WAL or snapshot write error) ends the
//! loop with an error; the command logs it and exits non-zero. Nothing
//! retries a sync whose pages may be gone.

mod alarms;
mod auth;
mod backups;
mod clients;
mod cluster_version;
mod conf_plan;
pub mod config;
mod conn;
mod dir_lock;
mod disk;
mod disk_alarm;
mod gather;
mod http;
mod identity;
mod join;
mod leader_moves;
mod lease_clock;
mod leases;
mod logins;
mod members;
mod metrics;
mod node;
pub mod notify;
mod peers;
mod proposals;
mod ready;
mod requests;
pub mod restore;
mod signal;
mod snapshots;
pub mod version;
mod watch;

mod corrupt;
mod hashes;
mod repair;
mod repair_loop;

use std::fmt;

pub use config::Config;
pub use node::Node;
pub use snapshots::SNAPSHOT_TRANSFER_BYTES_MAX;

use crate::raft::RaftError;
use crate::snap::SnapError;
use crate::wal::WalError;

/// Why the node stopped or could not start.
#[derive(Debug)]
pub enum ServeError {
    Config(String),
    Io {
        what: String,
        source: std::io::Error,
    },
    Wal(WalError),
    Snap(SnapError),
    Raft(RaftError),
    Notify(notify::NotifyError),
    /// Stored state that cannot be used (a snapshot that does not decode).
    Corrupt(String),
    /// Another process holds the data directory's lock.
    Locked {
        dir: std::path::PathBuf,
        holder_pid: Option<u32>,
    },
    /// This member was removed from the cluster: it stopped, or its data
    /// directory says so and it did not start.
    Removed(String),
    /// `cause` came from the file system of the data directory being full
    /// (`disk::name_full_disk`).
    DiskFull(disk::FullDisk, Box<ServeError>),
    /// This member's release is below the cluster version: it cannot read
    /// what the cluster may write (`version.rs`).
    TooOld(String),
}

impl ServeError {
    fn io(what: &str, source: std::io::Error) -> ServeError {
        ServeError::Io { what: what.to_string(), source }
    }
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Config(text) => write!(f, "configuration: {text}"),
            ServeError::Io { what, source } => write!(f, "{what}: {source}"),
            ServeError::Wal(e) => write!(f, "wal: {e}"),
            ServeError::Snap(e) => write!(f, "snapshot: {e}"),
            ServeError::Raft(e) => write!(f, "raft: {e}"),
            ServeError::Notify(e) => write!(f, "{e}"),
            ServeError::Corrupt(text) => write!(f, "corrupt state: {text}"),
            ServeError::Locked { dir, holder_pid } => {
                write!(f, "{}", dir_lock::locked_message(dir, *holder_pid))
            }
            ServeError::Removed(text) => write!(f, "{text}"),
            ServeError::DiskFull(disk, cause) => write!(f, "{disk}: {cause}"),
            ServeError::TooOld(text) => write!(f, "{text}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Runs a node until SIGTERM or SIGINT.
pub fn serve(config: Config) -> Result<(), ServeError> {
    signal::install();
    let data_dir = config.data_dir.clone();
    Node::new(config).and_then(Node::run).map_err(|e| disk::name_full_disk(e, &data_dir))
}
