//! Stable numeric error codes, their messages, and the gRPC status each maps to.
//!
//! A code's number is its identity on the wire and never changes meaning; new
//! codes take new numbers. The gRPC mapping is the status etcd's gRPC API
//! returns for the same condition, so a gateway that speaks etcd's API can
//! translate an Ember error without knowing what it means. Where etcd's
//! clients recognise an error by its exact message text, the message is
//! etcd's string, since that text is part of the contract; Ember's own codes
//! have messages of their own.
//!
//! Ranges: 1..=99 request shape, 100..=199 revisions and storage,
//! 200..=299 leases, 300..=399 cluster and consensus, 400..=499 watches,
//! 500..=599 members, 600..=699 auth, 700..=749 alarms, 750..=799
//! maintenance (snapshot, move-leader, defrag; 790..=799 keyspace
//! hashes), 900..=999 the connection itself.

use serde::{Deserialize, Serialize};

/// gRPC status codes (the numbers are gRPC's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Declares `ErrorCode` with its number, gRPC status and message in one table,
/// so the three can never drift apart.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $number:literal, $grpc:ident, $message:literal; )*) => {
        /// Why a request failed. The number is the stable wire value.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name = $number, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The stable wire number.
            pub fn number(self) -> u16 {
                self as u16
            }

            /// The code for a wire number, or `None` for a number this build
            /// does not know (a newer server may send one).
            pub fn from_number(number: u16) -> Option<ErrorCode> {
                match number {
                    $( $number => Some(ErrorCode::$name), )*
                    _ => None,
                }
            }

            /// The gRPC status etcd returns for the same condition.
            pub fn grpc(self) -> GrpcCode {
                match self {
                    $( ErrorCode::$name => GrpcCode::$grpc, )*
                }
            }

            /// The default human-readable message.
            pub fn message(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $message, )*
                }
            }
        }
    };
}

error_codes! {
    // Request shape: refused at the boundary, never reached the log.
    /// A key (or a compare's key) is empty.
    EmptyKey = 1, InvalidArgument, "etcdserver: key is not provided";
    /// A txn branch or compare list has more entries than `--max-txn-ops`.
    TooManyOps = 2, InvalidArgument, "etcdserver: too many operations in txn request";
    /// A txn branch writes the same key twice, or puts a key it also deletes.
    DuplicateKey = 3, InvalidArgument, "etcdserver: duplicate key given in txn request";
    /// `ignore_value` is set but a value was sent too.
    ValueProvided = 4, InvalidArgument, "etcdserver: value is provided";
    /// `ignore_lease` is set but a lease was sent too.
    LeaseProvided = 5, InvalidArgument, "etcdserver: lease is provided";
    /// A key is longer than the server's key limit.
    KeyTooLong = 6, InvalidArgument, "etcdserver: key is too long";
    /// A numeric field is out of its domain (a negative limit or revision).
    InvalidField = 7, InvalidArgument, "etcdserver: invalid field value in request";
    /// `ignore_value` was set on a put whose key does not exist.
    KeyNotFound = 8, InvalidArgument, "etcdserver: key not found";
    /// A frame's body did not decode as the request its kind announced.
    MalformedRequest = 9, InvalidArgument, "ember: request body could not be decoded";
    /// A request variant this server does not implement.
    Unsupported = 10, Unimplemented, "ember: request kind not supported by this server";
    /// A frame longer than the server's `--max-request-bytes`; the
    /// connection closes after this answer because the body was never read.
    RequestTooLarge = 11, ResourceExhausted, "etcdserver: request is too large";
    /// The connection already has the most requests in flight it may have.
    TooManyRequests = 12, ResourceExhausted, "etcdserver: too many requests";
    /// The answer would exceed the largest frame the client accepts.
    ResponseTooLarge = 13, ResourceExhausted, "ember: response exceeds the client's frame limit";

    // Revisions and storage.
    /// The revision asked for is below the compacted revision.
    Compacted = 100, OutOfRange, "mvcc: required revision has been compacted";
    /// The revision asked for is above the current revision.
    FutureRevision = 101, OutOfRange, "mvcc: required revision is a future revision";
    /// The storage quota is spent; only reads, deletes and compaction pass.
    NoSpace = 102, ResourceExhausted, "etcdserver: mvcc: database space exceeded";
    /// Replicas disagree about their data; the cluster refuses to go on.
    Corrupt = 103, DataLoss, "etcdserver: corrupt cluster";

    // Leases.
    /// No lease with that id exists (never granted, revoked or expired).
    LeaseNotFound = 200, NotFound, "etcdserver: requested lease not found";
    /// A grant asked for an id that is already in use.
    LeaseExists = 201, FailedPrecondition, "etcdserver: lease already exists";
    /// A grant asked for a TTL above the maximum.
    LeaseTtlTooLarge = 202, OutOfRange, "etcdserver: too large lease TTL";

    // Cluster and consensus: usually worth retrying elsewhere or later.
    /// No leader is known, so no write or linearizable read can complete.
    NoLeader = 300, Unavailable, "etcdserver: no leader";
    /// The operation must run on the leader and this member is not it.
    NotLeader = 301, FailedPrecondition, "etcdserver: not leader";
    /// Leadership moved while the request was in flight; the outcome of a
    /// write is unknown.
    LeaderChanged = 302, Unavailable, "etcdserver: leader changed";
    /// The request did not complete in time; the outcome of a write is unknown.
    Timeout = 303, Unavailable, "etcdserver: request timed out";
    /// Timed out because the leader failed; the outcome of a write is unknown.
    TimeoutDueToLeaderFail = 304, Unavailable,
        "etcdserver: request timed out, possibly due to previous leader failure";
    /// Timed out because the link to the leader dropped; outcome unknown.
    TimeoutDueToConnectionLost = 305, Unavailable,
        "etcdserver: request timed out, possibly due to connection lost";
    /// The member is shutting down; requests in flight have unknown outcome.
    Stopped = 306, Unavailable, "etcdserver: server stopped";
    /// Too few members are healthy for the operation to be safe.
    Unhealthy = 307, Unavailable, "etcdserver: unhealthy cluster";
    /// Too many proposals are waiting for commit; retry after a short pause.
    TooManyProposals = 308, ResourceExhausted, "etcdserver: too many requests";
    /// The cluster runs a version that cannot do this yet.
    NotCapable = 309, Unavailable, "etcdserver: not capable";

    // Watches.
    /// The connection has the most watches it may have.
    TooManyWatches = 400, ResourceExhausted, "ember: too many watches on this connection";
    /// A watch create named a watch id already in use on this connection.
    WatchIdExists = 401, FailedPrecondition, "mvcc: duplicate watch ID provided on the stream";
    /// A cancel named a watch id this connection does not have.
    WatchNotFound = 402, NotFound, "mvcc: watcher does not exist";

    // Members.
    /// No member with that id.
    MemberNotFound = 500, NotFound, "etcdserver: member not found";
    /// A member with that id or those peer URLs already exists.
    MemberExists = 501, FailedPrecondition, "etcdserver: member ID already exist";
    /// A peer URL could not be parsed.
    MemberBadUrls = 502, InvalidArgument, "etcdserver: given member URLs are invalid";
    /// Another member already has one of those peer URLs.
    PeerUrlExists = 503, FailedPrecondition, "etcdserver: Peer URLs already exists";
    /// A promote named a member that is already a voter.
    MemberNotLearner = 504, FailedPrecondition, "etcdserver: can only promote a learner member";
    /// A promote named a learner whose log is not yet close to the leader's.
    LearnerNotReady = 505, FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader";
    /// A remove would leave fewer started voters than a quorum.
    NotEnoughStartedMembers = 506, FailedPrecondition,
        "etcdserver: re-configuration failed due to not enough started members";
    /// The cluster already has the most members (or voters) it may have.
    TooManyMembers = 507, FailedPrecondition, "ember: the cluster has the most members it may have";
    /// A learner add while the cluster has the most learners the entry's
    /// `--max-learners` allows.
    TooManyLearners = 508, FailedPrecondition, "etcdserver: too many learner members in cluster";

    // Auth.
    /// The request lacks the permission it needs.
    PermissionDenied = 600, PermissionDenied, "etcdserver: permission denied";
    /// The auth token is missing, expired or wrong.
    InvalidAuthToken = 601, Unauthenticated, "etcdserver: invalid auth token";
    /// Name or password is wrong.
    AuthFailed = 602, InvalidArgument, "etcdserver: authentication failed, invalid user ID or password";
    /// An auth operation was asked for while auth is off.
    AuthNotEnabled = 603, FailedPrecondition, "etcdserver: authentication is not enabled";
    /// `auth enable` without a user named root.
    RootUserNotExist = 604, FailedPrecondition, "etcdserver: root user does not exist";
    /// `auth enable` while user root lacks role root.
    RootRoleNotExist = 605, FailedPrecondition, "etcdserver: root user does not have root role";
    /// A user add named a user that exists.
    UserAlreadyExist = 606, FailedPrecondition, "etcdserver: user name already exists";
    /// A user operation without a name.
    UserEmpty = 607, InvalidArgument, "etcdserver: user name is empty";
    /// No user with that name.
    UserNotFound = 608, FailedPrecondition, "etcdserver: user name not found";
    /// A role add named a role that exists.
    RoleAlreadyExist = 609, FailedPrecondition, "etcdserver: role name already exists";
    /// No role with that name.
    RoleNotFound = 610, FailedPrecondition, "etcdserver: role name not found";
    /// A role operation without a name.
    RoleEmpty = 611, InvalidArgument, "etcdserver: role name is empty";
    /// A revoke named a role the user does not hold.
    RoleNotGranted = 612, FailedPrecondition, "etcdserver: role is not granted to the user";
    /// A revoke named a permission the role does not hold.
    PermissionNotGranted = 613, FailedPrecondition,
        "etcdserver: permission is not granted to the role";
    /// Deleting root or taking its role away while auth is on.
    InvalidAuthMgmt = 614, InvalidArgument, "etcdserver: invalid auth management";
    /// A permission grant without a permission.
    PermissionNotGiven = 615, InvalidArgument, "etcdserver: permission not given";
    /// The cluster holds the most users, roles or permissions it may.
    TooManyAuthEntries = 616, ResourceExhausted,
        "ember: the most users, roles or permissions the cluster may hold";
    /// Logins for this user failed recently; the next try must wait.
    LoginBackoff = 617, Unavailable, "ember: too many failed logins for this user, retry later";

    // Alarms.
    /// A raise or a clear that names no alarm kind (`AlarmType::None`).
    AlarmNotGiven = 700, InvalidArgument, "ember: name the alarm to raise or clear";
    // Maintenance: snapshots, leadership transfer, defragmentation.
    /// A move-leader named a member that is not a voter of the cluster.
    BadLeaderTransferee = 750, FailedPrecondition, "etcdserver: bad leader transferee";
    /// The named member did not take the leadership in time.
    LeaderTransferTimeout = 751, Unavailable,
        "etcdserver: request timed out, leader transfer took too long";
    /// A snapshot request named a stream this connection does not have
    /// (finished, idle too long, or opened on another connection).
    SnapshotStreamNotFound = 752, NotFound, "ember: no such snapshot stream on this connection";
    /// The member streams the most snapshots it may at once.
    TooManySnapshotStreams = 753, ResourceExhausted, "ember: too many snapshot streams at once";
    /// The member's snapshot file could not be read whole and intact.
    SnapshotUnreadable = 754, DataLoss, "ember: the member's snapshot file could not be read";

    // The connection.
    /// A frame broke the framing rules (unknown kind, reserved bits set); the
    /// connection closes after this answer.
    MalformedFrame = 900, InvalidArgument, "ember: malformed frame";
    /// A bug on our side; the message may say more.
    Internal = 999, Internal, "ember: internal error";

    // Leases, continued.
    /// A grant would take the cluster past `--max-leases`.
    TooManyLeases = 203, ResourceExhausted, "ember: too many leases";

    // Keyspace hashes, at the end of the maintenance range.
    /// The member computes the most `HashKv` answers it may at once.
    TooManyHashes = 790, ResourceExhausted, "ember: too many hashes in flight, retry later";
    /// A compaction or a restored snapshot changed the store while its
    /// hash was being taken: no hash is given rather than a wrong one.
    HashAborted = 791, Unavailable, "ember: the store changed during the hash, retry";
}

impl ErrorCode {
    /// True when a write that got this error may still have been applied, so
    /// the client must treat its outcome as unknown (see docs/PROTOCOL.md).
    pub fn outcome_unknown(self) -> bool {
        matches!(
            self,
            ErrorCode::LeaderChanged
                | ErrorCode::Timeout
                | ErrorCode::TimeoutDueToLeaderFail
                | ErrorCode::TimeoutDueToConnectionLost
                | ErrorCode::Stopped
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message(), self.number())
    }
}

impl std::error::Error for ErrorCode {}

/// The body of an `Error` frame: a code number and a message.
///
/// The code travels as its raw number so that a client can carry a code it
/// does not know yet; `code()` names it when it can.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code_number: u16,
    /// Human-readable; for display only, never parsed. Bounded by the frame.
    pub message: String,
}

impl ErrorBody {
    /// An error with the code's default message.
    pub fn new(code: ErrorCode) -> ErrorBody {
        ErrorBody { code_number: code.number(), message: code.message().to_string() }
    }

    /// An error with a more specific message.
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { code_number: code.number(), message: message.into() }
    }

    /// The named code, if this build knows the number.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_number(self.code_number)
    }

    /// The gRPC status; `Unknown` for a code this build does not know.
    pub fn grpc(&self) -> GrpcCode {
        self.code().map_or(GrpcCode::Unknown, ErrorCode::grpc)
    }
}

impl From<ErrorCode> for ErrorBody {
    fn from(code: ErrorCode) -> ErrorBody {
        ErrorBody::new(code)
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code_number)
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.number()), "{code:?} reuses a number");
            assert_eq!(ErrorCode::from_number(code.number()), Some(code));
            assert!(!code.message().is_empty());
        }
        assert_eq!(ErrorCode::from_number(0), None);
        assert_eq!(ErrorCode::from_number(65535), None);
    }

    #[test]
    fn the_mapping_matches_what_etcd_returns() {
        assert_eq!(ErrorCode::EmptyKey.grpc(), GrpcCode::InvalidArgument);
        assert_eq!(ErrorCode::TooManyOps.grpc(), GrpcCode::InvalidArgument);
        assert_eq!(ErrorCode::DuplicateKey.grpc(), GrpcCode::InvalidArgument);
        assert_eq!(ErrorCode::Compacted.grpc(), GrpcCode::OutOfRange);
        assert_eq!(ErrorCode::FutureRevision.grpc(), GrpcCode::OutOfRange);
        assert_eq!(ErrorCode::RequestTooLarge.grpc(), GrpcCode::ResourceExhausted);
        assert_eq!(ErrorCode::LeaseNotFound.grpc(), GrpcCode::NotFound);
        assert_eq!(ErrorCode::NoLeader.grpc(), GrpcCode::Unavailable);
        assert_eq!(ErrorCode::Timeout.grpc(), GrpcCode::Unavailable);
        assert_eq!(ErrorCode::NotLeader.grpc(), GrpcCode::FailedPrecondition);
        assert_eq!(GrpcCode::Unavailable as u8, 14);
    }

    #[test]
    fn unknown_numbers_map_to_unknown() {
        let body = ErrorBody { code_number: 4242, message: "from the future".into() };
        assert_eq!(body.code(), None);
        assert_eq!(body.grpc(), GrpcCode::Unknown);
    }
}
