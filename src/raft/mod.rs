//! Raft consensus as a pure state machine.
//!
//! Owns: terms, votes, the replicated log (its unstable tail and the stable
//! view read through a `Storage` trait), the progress of each follower, quorum
//! arithmetic, membership changes, ReadIndex, and the `Ready` that tells the
//! caller what to persist, send and apply.
//!
//! Must not touch: sockets, files, the clock, OS randomness, postcard or the
//! key-value store. Time enters only as `tick()`, randomness only as a seeded
//! generator handed in, storage only through the read-side `Storage` trait.
//! That purity is what lets the simulator in `tests/` replay any history from
//! a seed. `tests/tidy.rs` enforces it.
//!
//! Layout (flat, one concern per file):
//! - `raw_node.rs`: `RawNode`, `Ready`, `Status`: the driving interface.
//! - `raft.rs`: roles, elections, replication, commit, ReadIndex, transfer.
//! - `log.rs`, `unstable.rs`: the log as storage plus unstable tail.
//! - `progress.rs`: per-follower replication state and in-flight window.
//! - `quorum.rs`: majority arithmetic, joint included. `confchange.rs`:
//!   membership changes, direct or through a joint configuration. `read_only.rs`: batched ReadIndex rounds.
//! - `message.rs`: what crosses the network. `config.rs`, `error.rs`.
//! - `mem_storage.rs`: the in-memory `Storage` for tests and benchmarks.
//! - `rng.rs`: the seeded generator.

pub mod confchange;
pub mod config;
pub mod error;
pub mod log;
pub mod mem_storage;
pub mod message;
pub mod progress;
pub mod quorum;
#[allow(clippy::module_inception)]
pub mod raft;
pub mod raw_node;
pub mod read_only;
pub mod rng;
pub mod storage;
pub mod types;
pub mod unstable;

pub use confchange::{
    ConfChange, ConfChangeError, ConfChangeKind, ConfChangeTransition, ConfChangeV2,
};
pub use config::{Config, ConfigError, PlantedBug};
pub use error::{RaftError, StepError};
pub use mem_storage::MemStorage;
pub use message::{INDEX_OR_TERM_MAX, Message, MessageKind};
pub use progress::ProgressState;
pub use raft::Role;
pub use raw_node::{PeerStatus, RawNode, Ready, SoftState, Status};
pub use read_only::ReadState;
pub use rng::Rng;
pub use storage::{Storage, StorageError};
pub use types::{ConfState, Entry, EntryKind, HardState, NO_NODE, NodeId, Snapshot, SnapshotMeta};
