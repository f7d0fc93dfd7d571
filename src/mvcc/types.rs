//! Requests, responses, events and errors of the store, in etcd's shape.
//!
//! They derive serde because the server carries requests inside Raft entries
//! (postcard) and answers clients with the responses.

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::limits::{TXN_DEPTH_MAX, TXN_OPS_MAX_DEFAULT};

/// A point in the history: the main revision counts keyspace changes (one per
/// write request), the sub revision orders the changes inside one transaction.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Revision {
    pub main: u64,
    pub sub: u32,
}

/// One version of a key as clients see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Main revision of the put that created this generation of the key.
    pub create_revision: u64,
    /// Main revision of the change that wrote this version.
    pub mod_revision: u64,
    /// 1 on creation, +1 per put; a delete ends the generation.
    pub version: u64,
    pub value: Vec<u8>,
    /// 0 when the key is attached to no lease.
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of `[key, range_end)`. An empty `range_end` reads the single key;
/// `range_end == "\0"` reads every key ≥ `key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// 0 means no limit.
    pub limit: u64,
    /// 0 means the current revision.
    pub revision: u64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    /// Filters; 0 means unset.
    pub min_mod_revision: u64,
    pub max_mod_revision: u64,
    pub min_create_revision: u64,
    pub max_create_revision: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the answer short.
    pub more: bool,
    /// Keys in the range at the revision read, before limit and filters.
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub deleted: u64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// What a compare looks at, with the operand to compare against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(u64),
    Create(u64),
    Mod(u64),
    Value(Vec<u8>),
    Lease(i64),
}

/// `key <result> target` for the single key, or for every key of
/// `[key, range_end)`. A missing key compares as version, revisions and lease
/// 0, and fails every value compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub result: CompareResult,
    pub target: CompareTarget,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// Decoding (a Raft entry from a peer or the WAL) is bounded like a
/// client's request: at most `TXN_DEPTH_MAX` levels and
/// `limits::TXN_ITEMS_MAX` compares and ops in the whole tree, so no entry
/// can overflow a member's stack, however deep its bytes nest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

impl<'de> Deserialize<'de> for TxnRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (compare, success, failure) = crate::limits::txn_level(deserializer)?;
        Ok(TxnRequest { compare, success, failure })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of the keyspace. A delete's `kv` holds only the key and the
/// mod revision, as in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The version this change replaced, when asked for and when there was one.
    pub prev_kv: Option<KeyValue>,
    /// Position inside the main revision `kv.mod_revision`.
    pub sub_revision: u32,
}

/// What a write request did to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<R> {
    pub response: R,
    /// The store's revision after the write (unchanged when nothing changed).
    pub revision: u64,
    /// The changes in revision order, each with its previous key-value.
    pub events: Vec<Event>,
}

/// The keyspace hash at a revision (etcd's HashKV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvHash {
    pub hash: u32,
    pub hash_revision: u64,
    pub compact_revision: u64,
}

/// A slice of the watch feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    /// Where the next call continues; every change before it was considered.
    pub next: Revision,
    /// True when `next` is past the current revision (the feed is drained).
    pub caught_up: bool,
    /// Log entries and key versions looked at to build it: the work done,
    /// matching or not.
    pub scanned: usize,
}

/// Errors a request can meet. They are answers to clients, not failures of
/// the store: the store is unchanged after any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// "required revision has been compacted"
    Compacted {
        compact_revision: u64,
    },
    /// "required revision is a future revision"
    FutureRevision {
        current_revision: u64,
    },
    /// A transaction branch changes the same key twice.
    DuplicateKeyInTxn,
    /// A compare list or branch holds more than `max_ops` entries.
    TooManyOps {
        max_ops: usize,
    },
    /// Transactions nest deeper than [`TXN_DEPTH_MAX`].
    TxnTooDeep,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    KeyNotFound,
    EmptyKey,
    /// `ignore_value` together with a value.
    ValueProvided,
    /// `ignore_lease` together with a lease.
    LeaseProvided,
    /// A write's answer would take more than `max_bytes` (see `bound.rs`);
    /// the write was not applied.
    AnswerTooLarge {
        max_bytes: usize,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Compacted { .. } => write!(f, "required revision has been compacted"),
            Error::FutureRevision { .. } => write!(f, "required revision is a future revision"),
            Error::DuplicateKeyInTxn => write!(f, "duplicate key given in txn request"),
            Error::TooManyOps { .. } => write!(f, "too many operations in txn request"),
            Error::TxnTooDeep => write!(f, "txn requests nested too deeply"),
            Error::KeyNotFound => write!(f, "key not found"),
            Error::EmptyKey => write!(f, "key is not provided"),
            Error::ValueProvided => write!(f, "value is provided"),
            Error::LeaseProvided => write!(f, "lease is provided"),
            Error::AnswerTooLarge { max_bytes } => {
                write!(f, "the answer would take more than {max_bytes} bytes")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Settings of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    pub max_txn_ops: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { max_txn_ops: TXN_OPS_MAX_DEFAULT }
    }
}

/// The end of a key range in the store's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeEnd {
    Single,
    Unbounded,
    Before(Vec<u8>),
}

impl RangeEnd {
    /// Reads etcd's encoding: empty is the single key, "\0" is unbounded.
    pub(crate) fn from_request(range_end: &[u8]) -> RangeEnd {
        match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            end => RangeEnd::Before(end.to_vec()),
        }
    }

    /// Whether `k` (≥ the range's start key) still lies inside the range.
    pub(crate) fn admits(&self, start: &[u8], k: &[u8]) -> bool {
        match self {
            RangeEnd::Single => k == start,
            RangeEnd::Unbounded => true,
            RangeEnd::Before(end) => k < end.as_slice(),
        }
    }
}

/// The key range `[start, end)` given in etcd's encoding, e.g. for prefixes:
/// the end is the prefix with its last byte below 0xff incremented, or "\0"
/// (every key ≥ start) when the prefix is all 0xff bytes or empty.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
