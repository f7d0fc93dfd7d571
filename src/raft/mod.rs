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

pub mod storage;
pub mod types;

pub use storage::{Storage, StorageError};
pub use types::{ConfState, Entry, EntryKind, HardState, NO_NODE, NodeId, Snapshot, SnapshotMeta};
