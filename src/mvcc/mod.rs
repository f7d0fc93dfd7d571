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
//!   tree (tree.rs)            key table (store.rs)       blocks (block.rs)
//!   B+tree of u32 key ids ──▶ id → 16-byte Box<[u8]> ──▶ key bytes, then every
//!   512-byte leaves with      in 1,024-slot chunks        retained version,
//!   4-byte hints per id                                   newest first
//!
//!   log (log.rs): one u32 (key id) per change, in revision order
//! ```
//!
//! * Each key's bytes are stored once, in its block; leaves hold ids and
//!   4-byte hints, inner nodes short separators (the distinguishing prefix
//!   of a key, a few bytes per leaf).
//! * A block holds all versions of its key in one allocation, newest first.
//!   A version costs about 7 bytes beside its value (flags, revision, sub
//!   revision, value length): create revision and version are implied by
//!   the neighbouring version. No version has an allocation of its own.
//! * The log names the key of every change in revision order, so a range
//!   watch reads `[rev, now)` at a cost proportional to the changes since
//!   `rev` (each call looks at most at [`WATCH_SCAN_CHANGES_MAX`] of them),
//!   whatever the number of keys. A single-key watch reads the key's own
//!   block instead, at a cost proportional to that key's versions.
//!
//! For one version and a 35-byte key that is about 44 bytes beyond key and
//! value: 16 for the table slot, 13 for the leaf slot (70% fill), 4 for the
//! log entry, 8 for the block's key length and version fields, and a few for
//! inner nodes and partly filled chunks. Each further version adds about 14:
//! 4 in the log, 7 in the block, and up to 4 more for the newest version's
//! explicit create revision and version. `benches/mvcc.rs` measures these
//! figures against `BTreeMap` with a counting allocator.
//!
//! # Compaction
//!
//! `compact(rev)` takes effect at once for readers (reads below `rev` fail)
//! and trims the log; the old versions themselves go in `compact_step` calls
//! of a bounded number of keys each, so a large keyspace never stalls the
//! apply loop. Hashes and images describe what the compaction keeps, so they
//! do not depend on how far the physical compaction has got.
//!
//! A snapshot image may be written while writes go on (`LiveImage`): it
//! describes the store at the revision it began at, and while it is open the
//! physical steps of a later compaction wait, so the versions it still has to
//! write stay in place.

mod block;
mod bound;
mod chunked;
mod hash;
mod image;
mod log;
mod store;
mod tree;
mod txn;
mod types;
mod watch;

pub use bound::{ANSWER_ENVELOPE_BYTES, ANSWER_OP_OVERHEAD_BYTES};
pub use hash::{HASH_KEY_COST_BYTES, HashStep, LiveHash};
pub use image::{IMAGE_MAX_FIELD_BYTES, ImageError, ImageReader, ImageWriter, LiveImage};
pub use store::{RANGE_KV_OVERHEAD_BYTES, RangeBuild, RangeStep, Store};
pub use types::*;
pub use watch::WATCH_SCAN_CHANGES_MAX;
