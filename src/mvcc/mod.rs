//! The multi-version key-value store every member applies committed entries to.
//!
//! Owns: the B+tree, revisions and sub-revisions, key versions and tombstones,
//! ranges, transaction compares, compaction, the event feed that watches read,
//! the keyspace hash, and the store's own image for snapshots.
//!
//! Must not touch: raft, sockets, files, the clock. It is deterministic: two
//! members that apply the same entries hold byte-identical state, so no
//! randomly seeded hashing and no iteration over unordered collections.
//!
//! # Layout
//!
//! Memory is the constraint on a 256 MiB board, so the store keeps three
//! compact structures instead of etcd's index plus storage engine:
//!
//! ```text
//!   tree (tree.rs)           key table (store.rs)        blocks (block.rs)
//!   B+tree of u32 key ids ─▶ id → 16-byte Box<[u8]> ──▶ key bytes + every
//!   256-byte leaves,         in 1,024-slot chunks        retained version,
//!   packed separators                                    varint-packed
//!                    log (log.rs): u32 key id per change, in revision order
//! ```
//!
//! * Each key's bytes are stored once, in its block; leaves hold 4-byte ids
//!   and compare through the key table. Inner nodes keep short separators
//!   (the distinguishing prefix), a few bytes per leaf.
//! * A block holds all versions of its key in one allocation: a put adds
//!   about 6 bytes (flags, revision delta, sub revision, value length) to its
//!   value, because create revision and version are implied by the version
//!   before. No version needs an allocation of its own.
//! * The log names the key of every change in revision order (4 bytes each)
//!   so a watch reads `[rev, now)` at a cost proportional to the changes since
//!   `rev`, whatever the number of keys.
//!
//! Per key with one version and a 35-byte key this comes to about 31 bytes
//! beyond key and value: 16 for the table slot, 4 to 6 for the leaf slot
//! (65–100% fill), 4 for the log entry and 7 for the block's header and
//! version fields. Each further version adds about 10 (4 in the log, 6 in
//! the block). `benches/mvcc.rs` measures the real figures against
//! `BTreeMap`.
//!
//! # Compaction
//!
//! `compact(rev)` takes effect at once for readers (reads below `rev` fail)
//! and trims the log; the old versions themselves go in `compact_step` calls
//! of a bounded number of keys each, so a large keyspace never stalls the
//! apply loop. Hashes and images describe what the compaction keeps, so they
//! do not depend on how far the physical compaction has got.

mod block;
mod chunked;
mod image;
mod log;
mod store;
mod tree;
mod types;

pub use image::{IMAGE_MAX_FIELD_BYTES, ImageError, ImageReader, ImageWriter};
pub use store::{MAX_WATCH_SCAN_CHANGES, Store};
pub use types::*;
