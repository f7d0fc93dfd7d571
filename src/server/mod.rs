//! The node: one mio poll loop on one thread.
//!
//! Owns: the loop and its timers, configuration, the order in which a Raft
//! `Ready` is handled (send, persist, send after persist, apply, advance),
//! applying committed entries to the store, client sessions, watch fan-out and
//! systemd notification.
//!
//! Must not touch: consensus rules (they live in `raft`) or file formats (they
//! live in `wal` and `snap`).

pub mod config;
pub mod notify;
