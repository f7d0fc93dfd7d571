//! What a Raft entry carries, and the translation between the client
//! protocol's types (`proto`, etcd's signed integers) and the store's
//! (`mvcc`, unsigned revisions).
//!
//! An entry's payload is a postcard `Command`: a sequence number unique in
//! the cluster, the member that proposed it (until the cluster version
//! allows leaving it out, see `Command::origin`), and the write itself in
//! the store's types. Every member applies every command; only the
//! proposing member finds the sequence number among its waiting requests
//! and answers the client. An empty payload is a leader's no-op and
//! changes nothing.
//!
//! Requests are validated (`proto::validate`) before they get here, so the
//! conversions below only map domains: a negative revision that validation
//! let through means "the newest" and becomes 0.
//!
//! Decoding is bounded: a payload comes from a peer or from the WAL, so it
//! is held to the same budget as a client's frame (`crate::limits`: txn
//! depth and items) and to its own length, and answers a typed error,
//! never a panic or a stack overflow.

use serde::{Deserialize, Serialize};

use crate::mvcc;
use crate::proto::{self, ErrorBody, ErrorCode, ResponseHeader};

/// A write, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put(mvcc::PutRequest),
    DeleteRange(mvcc::DeleteRangeRequest),
    Txn(mvcc::TxnRequest),
    Compact(u64),
    /// A grant whose id and TTL the proposing member already settled (a
    /// chosen id, the TTL raised to the minimum), so every member applies
    /// the same lease.
    LeaseGrant {
        id: i64,
        ttl_secs: i64,
    },
    /// Revokes a lease and deletes its keys in one revision: asked by a
    /// client, or proposed by the leader when the lease expired.
    LeaseRevoke(i64),
    /// A keep-alive that reached a follower; see `leases.rs`.
    LeaseRenew(i64),
    /// A change of the member table (see `members.rs`).
    Member(super::members::MemberOp),
    /// A change of users, roles or the enabled flag (see `auth.rs`).
    Auth(super::auth::AuthOp),
    /// An alarm raised or cleared (see `alarms.rs`).
    Alarm(super::alarms::AlarmOp),
    /// The cluster's quota in bytes, proposed by a leader from its own
    /// `--quota-backend-bytes` (see `quota.rs`).
    Quota(u64),
    /// A corruption check opened, or a member's hash for it (see
    /// `corrupt.rs`). Fixed-size fields: bounded by the entry's length.
    Corrupt(super::corrupt::CorruptOp),
    /// The cluster version a leader decided (`version.rs`): the lowest
    /// release of all members, applied only while it still is and only
    /// above the current one. Fixed-size fields.
    ClusterVersion(super::version::Version),
}

/// Who asked for a command, for the permission check at apply time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// A client that presented no token.
    Anonymous,
    /// A client whose token named this user, issued in `epoch`.
    User { name: String, epoch: u64 },
}

/// The payload of a normal Raft entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The member whose client asked for it, in the first layout; `None`
    /// in the sequence-only layout (`Feature::SequenceOnlyCommand`), where
    /// `seq` alone tells the proposing member its entry.
    pub origin: Option<u64>,
    /// Unique in the cluster, restarts included: each run of each member
    /// starts at a random point of 2^63 (see `server/proposals.rs`).
    pub seq: u64,
    pub op: Op,
    /// `None` for entries a member proposes on its own (lease expiry,
    /// published attributes), which no permission governs.
    pub caller: Option<Caller>,
    /// The most bytes the answer may take: the proposing client's limit.
    /// A delete with `prev_kv` or a txn whose answer would pass it is
    /// refused whole, on every member alike, before it changes anything
    /// (see `mvcc::bound`). `ANSWER_UNBOUNDED` for entries written before
    /// answers were bounded.
    pub answer_max_bytes: u64,
}

/// The answer bound of commands written before answers were bounded.
pub const ANSWER_UNBOUNDED: u64 = u64::MAX;

/// The first byte of a sequence-only command. The first layout begins
/// with its origin, a member id, whose varint never begins with 0 (ids
/// are never 0), so the byte tells the layouts apart.
const SEQUENCE_ONLY_MARKER: u8 = 0;

/// Every field of a command after its origin: the first layout is the
/// origin followed by this, the sequence-only layout the marker byte
/// followed by this (postcard writes a nested struct's fields in place).
/// Generic so that encoding borrows the op and caller and decoding owns
/// them.
#[derive(Serialize, Deserialize)]
struct Body<O, C> {
    seq: u64,
    op: O,
    caller: C,
    answer_max_bytes: u64,
}

impl Body<Op, Option<Caller>> {
    fn into_command(self, origin: Option<u64>) -> Command {
        let Body { seq, op, caller, answer_max_bytes } = self;
        Command { origin, seq, op, caller, answer_max_bytes }
    }
}

/// A command as written before answer bounds were recorded.
#[derive(Deserialize)]
struct CommandWithoutBound {
    origin: u64,
    seq: u64,
    op: Op,
    caller: Option<Caller>,
}

/// A command as written before callers were recorded: such an entry was
/// proposed before access control existed, so no permission governs it.
#[derive(Deserialize)]
struct CommandWithoutCaller {
    origin: u64,
    seq: u64,
    op: Op,
}

impl Command {
    /// The layout `origin` calls for: with it when it is `Some`, the
    /// sequence-only layout when it is `None`.
    pub fn encode(&self) -> Vec<u8> {
        let body = Body {
            seq: self.seq,
            op: &self.op,
            caller: &self.caller,
            answer_max_bytes: self.answer_max_bytes,
        };
        let encoded = match self.origin {
            Some(origin) => postcard::to_allocvec(&(origin, body)),
            None => postcard::to_extend(&body, vec![SEQUENCE_ONLY_MARKER]),
        };
        encoded.expect("commands always serialize")
    }

    /// The command in an entry's payload, within the decoding budget; the
    /// whole payload must be one command, of any layout.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        if let Some((&SEQUENCE_ONLY_MARKER, rest)) = bytes.split_first() {
            return match postcard::take_from_bytes::<Body<Op, Option<Caller>>>(rest) {
                Ok((body, [])) => Ok(body.into_command(None)),
                Ok((_, rest)) => Err(DecodeError::TrailingBytes(rest.len())),
                Err(e) => Err(DecodeError::Malformed(e.to_string())),
            };
        }
        match postcard::take_from_bytes::<(u64, Body<Op, Option<Caller>>)>(bytes) {
            Ok(((origin, body), [])) => Ok(body.into_command(Some(origin))),
            Ok((_, rest)) => Err(DecodeError::TrailingBytes(rest.len())),
            Err(e) => Command::decode_without_bound(bytes)
                .or_else(|| Command::decode_without_caller(bytes))
                .ok_or(DecodeError::Malformed(e.to_string())),
        }
    }

    /// An entry of an older layout, which ends where the answer bound would
    /// begin: a newer command always has at least one more byte, so the
    /// two never read the same bytes.
    fn decode_without_bound(bytes: &[u8]) -> Option<Command> {
        match postcard::take_from_bytes::<CommandWithoutBound>(bytes) {
            Ok((old, [])) => Some(Command {
                origin: Some(old.origin),
                seq: old.seq,
                op: old.op,
                caller: old.caller,
                answer_max_bytes: ANSWER_UNBOUNDED,
            }),
            _ => None,
        }
    }

    /// An entry of the oldest layout, which ends where the caller would
    /// begin (one byte before the layout above ends, at least).
    fn decode_without_caller(bytes: &[u8]) -> Option<Command> {
        match postcard::take_from_bytes::<CommandWithoutCaller>(bytes) {
            Ok((old, [])) => Some(Command {
                origin: Some(old.origin),
                seq: old.seq,
                op: old.op,
                caller: None,
                answer_max_bytes: ANSWER_UNBOUNDED,
            }),
            _ => None,
        }
    }
}

/// Why a payload is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// It does not decode, or breaks the decoding budget (a txn nested
    /// deeper than `limits::TXN_DEPTH_MAX`, or with too many items).
    Malformed(String),
    /// A command followed by bytes that belong to nothing.
    TrailingBytes(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(why) => write!(f, "malformed command: {why}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the command"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The write a client request asks for, or `None` for a request that is not
/// replicated.
pub fn op_of(request: &proto::Request) -> Option<Op> {
    match request {
        proto::Request::Put(r) => Some(Op::Put(put_request(r))),
        proto::Request::DeleteRange(r) => Some(Op::DeleteRange(delete_request(r))),
        proto::Request::Txn(r) => Some(Op::Txn(txn_request(r))),
        proto::Request::Compact(r) => Some(Op::Compact(r.revision.max(0) as u64)),
        _ => None,
    }
}

fn unsigned(value: i64) -> u64 {
    value.max(0) as u64
}

pub fn range_request(r: &proto::RangeRequest) -> mvcc::RangeRequest {
    mvcc::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: unsigned(r.limit),
        revision: unsigned(r.revision),
        sort_order: match r.sort_order {
            proto::SortOrder::None => mvcc::SortOrder::None,
            proto::SortOrder::Ascend => mvcc::SortOrder::Ascend,
            proto::SortOrder::Descend => mvcc::SortOrder::Descend,
        },
        sort_target: match r.sort_target {
            proto::SortTarget::Key => mvcc::SortTarget::Key,
            proto::SortTarget::Version => mvcc::SortTarget::Version,
            proto::SortTarget::Create => mvcc::SortTarget::Create,
            proto::SortTarget::Mod => mvcc::SortTarget::Mod,
            proto::SortTarget::Value => mvcc::SortTarget::Value,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: unsigned(r.min_mod_revision),
        max_mod_revision: unsigned(r.max_mod_revision),
        min_create_revision: unsigned(r.min_create_revision),
        max_create_revision: unsigned(r.max_create_revision),
    }
}

fn put_request(r: &proto::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: r.key.clone(),
        value: r.value.clone(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

fn delete_request(r: &proto::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        prev_kv: r.prev_kv,
    }
}

fn compare(c: &proto::Compare) -> mvcc::Compare {
    mvcc::Compare {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        result: match c.result {
            proto::CompareResult::Equal => mvcc::CompareResult::Equal,
            proto::CompareResult::NotEqual => mvcc::CompareResult::NotEqual,
            proto::CompareResult::Greater => mvcc::CompareResult::Greater,
            proto::CompareResult::Less => mvcc::CompareResult::Less,
        },
        target: match &c.target {
            proto::CompareTarget::Version(v) => mvcc::CompareTarget::Version(unsigned(*v)),
            proto::CompareTarget::Create(v) => mvcc::CompareTarget::Create(unsigned(*v)),
            proto::CompareTarget::Mod(v) => mvcc::CompareTarget::Mod(unsigned(*v)),
            proto::CompareTarget::Value(v) => mvcc::CompareTarget::Value(v.clone()),
            proto::CompareTarget::Lease(v) => mvcc::CompareTarget::Lease(*v),
        },
    }
}

fn request_op(op: &proto::RequestOp) -> mvcc::RequestOp {
    match op {
        proto::RequestOp::Range(r) => mvcc::RequestOp::Range(range_request(r)),
        proto::RequestOp::Put(r) => mvcc::RequestOp::Put(put_request(r)),
        proto::RequestOp::DeleteRange(r) => mvcc::RequestOp::DeleteRange(delete_request(r)),
        proto::RequestOp::Txn(r) => mvcc::RequestOp::Txn(txn_request(r)),
    }
}

fn txn_request(r: &proto::TxnRequest) -> mvcc::TxnRequest {
    mvcc::TxnRequest {
        compare: r.compare.iter().map(compare).collect(),
        success: r.success.iter().map(request_op).collect(),
        failure: r.failure.iter().map(request_op).collect(),
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub fn key_value(kv: mvcc::KeyValue) -> proto::KeyValue {
    proto::KeyValue {
        key: kv.key,
        create_revision: signed(kv.create_revision),
        mod_revision: signed(kv.mod_revision),
        version: signed(kv.version),
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_response(r: mvcc::RangeResponse, header: ResponseHeader) -> proto::RangeResponse {
    proto::RangeResponse {
        header,
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: signed(r.count),
    }
}

pub fn put_response(r: mvcc::PutResponse, header: ResponseHeader) -> proto::PutResponse {
    proto::PutResponse { header, prev_kv: r.prev_kv.map(key_value) }
}

pub fn delete_response(
    r: mvcc::DeleteRangeResponse,
    header: ResponseHeader,
) -> proto::DeleteRangeResponse {
    proto::DeleteRangeResponse {
        header,
        deleted: signed(r.deleted),
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

pub fn txn_response(r: mvcc::TxnResponse, header: ResponseHeader) -> proto::TxnResponse {
    let responses = r
        .responses
        .into_iter()
        .map(|op| match op {
            mvcc::ResponseOp::Range(r) => proto::ResponseOp::Range(range_response(r, header)),
            mvcc::ResponseOp::Put(r) => proto::ResponseOp::Put(put_response(r, header)),
            mvcc::ResponseOp::DeleteRange(r) => {
                proto::ResponseOp::DeleteRange(delete_response(r, header))
            }
            mvcc::ResponseOp::Txn(r) => proto::ResponseOp::Txn(txn_response(r, header)),
        })
        .collect();
    proto::TxnResponse { header, succeeded: r.succeeded, responses }
}

pub fn event(e: mvcc::Event) -> proto::Event {
    proto::Event {
        kind: match e.kind {
            mvcc::EventKind::Put => proto::EventKind::Put,
            mvcc::EventKind::Delete => proto::EventKind::Delete,
        },
        kv: key_value(e.kv),
        prev_kv: e.prev_kv.map(key_value),
    }
}

/// The protocol error for a store error.
pub fn store_error(error: mvcc::Error) -> ErrorBody {
    let code = match error {
        mvcc::Error::Compacted { .. } => ErrorCode::Compacted,
        mvcc::Error::FutureRevision { .. } => ErrorCode::FutureRevision,
        mvcc::Error::DuplicateKeyInTxn => ErrorCode::DuplicateKey,
        mvcc::Error::TooManyOps { .. } | mvcc::Error::TxnTooDeep => ErrorCode::TooManyOps,
        mvcc::Error::KeyNotFound => ErrorCode::KeyNotFound,
        mvcc::Error::EmptyKey => ErrorCode::EmptyKey,
        mvcc::Error::ValueProvided => ErrorCode::ValueProvided,
        mvcc::Error::LeaseProvided => ErrorCode::LeaseProvided,
        mvcc::Error::AnswerTooLarge { .. } => ErrorCode::ResponseTooLarge,
    };
    ErrorBody::new(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        let put = proto::Request::Put(proto::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        let caller = Some(Caller::User { name: "u".into(), epoch: 3 });
        let op = op_of(&put).unwrap();
        let command = Command { origin: Some(7), seq: 9, op, caller, answer_max_bytes: 4096 };
        assert_eq!(Command::decode(&command.encode()), Ok(command.clone()));
        assert!(Command::decode(&[0xff, 0xff, 0xff]).is_err());
        let mut longer = command.encode();
        longer.push(0);
        assert_eq!(Command::decode(&longer), Err(DecodeError::TrailingBytes(1)));
        assert!(op_of(&proto::Request::Status).is_none());
    }

    #[test]
    fn a_sequence_only_command_round_trips_and_is_shorter_by_the_origin() {
        let op = Op::Put(mvcc::PutRequest {
            key: b"k".repeat(8),
            value: vec![7; 256],
            lease: 0,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        });
        let member_id = 0x9e37_79b9_7f4a_7c15;
        let named = Command {
            origin: Some(member_id),
            seq: u64::MAX >> 1,
            op,
            caller: Some(Caller::Anonymous),
            answer_max_bytes: 4 << 20,
        };
        let bare = Command { origin: None, ..named.clone() };
        let (named_bytes, bare_bytes) = (named.encode(), bare.encode());
        assert_eq!(bare_bytes[0], SEQUENCE_ONLY_MARKER);
        assert_ne!(named_bytes[0], SEQUENCE_ONLY_MARKER);
        assert_eq!(Command::decode(&bare_bytes), Ok(bare));
        assert_eq!(Command::decode(&named_bytes), Ok(named));
        // The origin's ten varint bytes, less the marker.
        assert_eq!(named_bytes.len() - bare_bytes.len(), 9);
        let mut longer = bare_bytes.clone();
        longer.push(0);
        assert_eq!(Command::decode(&longer), Err(DecodeError::TrailingBytes(1)));
        for cut in [1, 2, bare_bytes.len() - 1] {
            let decoded = Command::decode(&bare_bytes[..cut]);
            assert!(matches!(decoded, Err(DecodeError::Malformed(_))), "{cut}: {decoded:?}");
        }
    }

    #[test]
    fn an_entry_written_before_callers_decodes_without_one() {
        let op = Op::Compact(5);
        let old = postcard::to_allocvec(&(7u64, 9u64, op.clone())).unwrap();
        let decoded = Command::decode(&old).unwrap();
        let expected = Command {
            origin: Some(7),
            seq: 9,
            op,
            caller: None,
            answer_max_bytes: ANSWER_UNBOUNDED,
        };
        assert_eq!(decoded, expected);
        let mut longer = old;
        longer.extend_from_slice(&[1, 5]);
        assert!(Command::decode(&longer).is_err(), "a caller tag with no caller is malformed");
    }

    #[test]
    fn an_entry_written_before_answer_bounds_decodes_unbounded() {
        let caller = Some(Caller::User { name: "u".into(), epoch: 3 });
        let op = Op::Compact(5);
        let old = postcard::to_allocvec(&(7u64, 9u64, op.clone(), caller.clone())).unwrap();
        let expected =
            Command { origin: Some(7), seq: 9, op, caller, answer_max_bytes: ANSWER_UNBOUNDED };
        assert_eq!(Command::decode(&old), Ok(expected));
    }

    #[test]
    fn negative_revisions_mean_the_newest() {
        let r = proto::RangeRequest { key: b"a".to_vec(), revision: -3, ..Default::default() };
        assert_eq!(range_request(&r).revision, 0);
        assert_eq!(signed(u64::MAX), i64::MAX);
    }

    /// A command whose op is a txn nested `levels` deep, in postcard's
    /// bytes: origin 1, seq 1, `Op::Txn` (variant 2); each level but the
    /// last holds no compares, one success op `RequestOp::Txn` (variant 3)
    /// and no failure ops.
    fn nested_txn_command(levels: usize) -> Vec<u8> {
        let mut bytes = vec![1, 1, 2];
        for _ in 1..levels {
            bytes.extend_from_slice(&[0, 1, 3]);
        }
        bytes.extend_from_slice(&[0, 0, 0]);
        bytes.resize(bytes.len() + levels - 1, 0);
        // No caller.
        bytes.push(0);
        bytes
    }

    #[test]
    fn a_nested_entry_of_any_depth_is_refused_without_overflowing_the_stack() {
        let at_bound = Command::decode(&nested_txn_command(crate::limits::TXN_DEPTH_MAX));
        assert!(matches!(at_bound, Ok(Command { op: Op::Txn(_), .. })), "{at_bound:?}");
        for levels in [crate::limits::TXN_DEPTH_MAX + 1, 1_000, 1_000_000] {
            let decoded = Command::decode(&nested_txn_command(levels));
            assert!(matches!(decoded, Err(DecodeError::Malformed(_))), "{levels} levels");
        }
    }
}
