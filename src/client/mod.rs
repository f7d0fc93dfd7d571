//! A blocking Rust client for applications and for the `ember` command.
//!
//! Owns: endpoints and failover, following leader changes, pipelining, watch
//! streams, typed errors.
//!
//! Must not touch: anything inside `server`, `raft` or `wal`; it speaks only the
//! protocol in `proto`.
