//! Ember: a small etcd for edge clusters.
//!
//! A replicated, revisioned key-value store that runs as one single-threaded
//! process per board. See `ARCHITECTURE.md` for the map of the modules and the
//! rules that hold between them.

pub mod auth;
pub mod cli;
pub mod client;
pub mod flags;
pub mod lease;
pub mod limits;
pub mod logger;
pub mod mvcc;
pub mod proto;
pub mod raft;
pub mod server;
pub mod snap;
pub mod state;
pub mod storage;
#[cfg(feature = "fault-injection")]
pub mod sync_log;
pub mod tls;
pub mod transport;
pub mod wal;
