//! The multi-version key-value store every member applies committed entries to.
//!
//! Owns: the B+tree, revisions and sub-revisions, key versions and tombstones,
//! ranges, transaction compares, compaction, the event feed that watches read,
//! the keyspace hash, and the store's own image for snapshots.
//!
//! Must not touch: raft, sockets, files, the clock. It is deterministic: two
//! members that apply the same entries hold byte-identical state, so no
//! randomly seeded hashing and no iteration over unordered collections.
