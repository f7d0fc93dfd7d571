//! The write-ahead log: the Raft log and hard state on disk, under
//! `<data-dir>/wal/`.
//!
//! Owns: fixed-size segment files, their preallocation and memory maps, record
//! framing with CRC32, group commit (`sync`), rotation, recovery of a torn tail,
//! truncation on conflict, and release of segments covered by a snapshot.
//!
//! Must not touch: what an entry means (it stores opaque payloads), the key-value
//! store, sockets. A failed fsync is fatal here: the caller is told and the
//! process stops; nothing retries.
