//! The node: one mio poll loop on one thread.
//!
//! Owns: the loop and its timers, configuration, the order in which a Raft
//! `Ready` is handled (send, persist, send after persist, apply, advance),
//! applying committed entries to the store, client sessions, watch fan-out and
//! systemd notification.
//!
//! Must not touch: consensus rules (they live in `raft`) or file formats (they
//! live in `wal` and `snap`).
//!
//! Layout:
//! - `node.rs`: the state, start-up (recovery, bootstrap), the loop.
//! - `ready.rs`: peer input, proposals, ReadIndex, the `Ready` cycle, apply,
//!   snapshots.
//! - `clients.rs`: client connections, requests, answers, watch feeding.
//! - `conn.rs`: one connection's buffers and bounds. `watch.rs`: one watch.
//! - `command.rs`: the entry payload and proto ↔ mvcc translation.
//! - `image.rs`: the snapshot payload (member table, leases, store image).
//! - `leases.rs`: lease requests, apply of lease entries, expiry on ticks.
//! - `members.rs`: member table changes; Raft's configuration and the peer
//!   connections follow the table. `identity.rs`: the data directory's owner.
//! - `config.rs`, `notify.rs`, `signal.rs`: flags, sd_notify, stop signals.
//!
//! Start-up: check the data directory's identity (`identity.rs`), open the
//! WAL (recovering a torn tail), open the snapshot
//! directory; a fresh directory of a new cluster is bootstrapped with a
//! snapshot at index 1 holding the initial membership (Raft's voters and
//! the member table); a fresh directory started with
//! `--initial-cluster-state existing` is not bootstrapped and waits for the
//! leader's snapshot once `member add` has made it a member; the store is restored
//! from the snapshot the WAL names; Raft starts with that snapshot's index as
//! its applied index and hands out the committed entries after it, which the
//! loop applies like any others.
//!
//! Threads: the loop is the only thread that touches sockets, Raft, the WAL
//! and the store. A snapshot's file is written by a short-lived helper
//! thread (see `ready.rs`), at most one at a time.
//!
//! Failure: a failed fsync (or any WAL or snapshot write error) ends the
//! loop with an error; the command logs it and exits non-zero. Nothing
//! retries a sync whose pages may be gone.

mod clients;
mod command;
pub mod config;
mod conn;
mod identity;
mod image;
mod leases;
mod members;
mod node;
pub mod notify;
mod ready;
mod signal;
mod watch;

use std::fmt;

pub use config::Config;
pub use node::Node;

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
        }
    }
}

impl std::error::Error for ServeError {}

/// Runs a node until SIGTERM or SIGINT.
pub fn serve(config: Config) -> Result<(), ServeError> {
    signal::install();
    Node::new(config)?.run()
}
