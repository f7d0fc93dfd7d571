//! Request, response and watch message types, in the shape of etcd's v3 API.
//!
//! Field names, meanings and integer widths follow etcd's `etcdserverpb`, so a
//! gateway can translate field by field: revisions, versions, lease ids and
//! limits are `i64` as there, member ids and raft terms `u64`. Where etcd has
//! an enum plus a union (compare targets) the Rust enum carries the value.
//! TTLs are in seconds and say so in their names.
//!
//! Wire contract: bodies are postcard, which writes struct fields in
//! declaration order and enum variants by their index. Reordering fields or
//! variants changes the protocol; new ones go at the end, behind a new
//! protocol version.

use serde::{Deserialize, Deserializer, Serialize};

use crate::limits::DepthGuard;

/// Carried by every response: who answered, and at which state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHeader {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The store's revision when the request was served.
    pub revision: i64,
    pub raft_term: u64,
}

/// One version of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "super::bytes")]
    pub key: Vec<u8>,
    /// Revision of the put that created the key (since its last delete).
    pub create_revision: i64,
    /// Revision of the last change to the key.
    pub mod_revision: i64,
    /// Changes since creation; a delete resets it to zero.
    pub version: i64,
    #[serde(with = "super::bytes")]
    pub value: Vec<u8>,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// Reads `[key, range_end)`; `range_end` empty means the single key `key`,
/// `range_end == [0]` means every key `>= key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    #[serde(with = "super::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "super::bytes")]
    pub range_end: Vec<u8>,
    /// Most keys returned; 0 for no limit.
    pub limit: i64,
    /// Read at this revision; 0 or less for the newest.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Served from this member's state without a ReadIndex round.
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    /// Filters on each key's revisions; 0 means no bound.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub header: ResponseHeader,
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the answer short.
    pub more: bool,
    /// Keys in the range, before `limit`.
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    #[serde(with = "super::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "super::bytes")]
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none.
    pub lease: i64,
    /// Return the key's previous version.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub header: ResponseHeader,
    pub prev_kv: Option<KeyValue>,
}

/// Deletes `[key, range_end)`, with the same range rules as `RangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    #[serde(with = "super::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "super::bytes")]
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub header: ResponseHeader,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, with the value it compares against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(#[serde(with = "super::bytes")] Vec<u8>),
    Lease(i64),
}

/// A txn guard over one key, or every key in `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    #[serde(with = "super::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "super::bytes")]
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// If every compare holds, run `success`, else `failure`; atomically, at one
/// revision. Decoding bounds the nesting (`TXN_DEPTH_MAX`) and the compares
/// and ops of the whole tree (`TXN_ITEMS_MAX`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TxnResponse {
    pub header: ResponseHeader,
    /// Whether the compares held (so `success` ran).
    pub succeeded: bool,
    /// One answer per op of the branch that ran, in order.
    pub responses: Vec<ResponseOp>,
}

#[derive(Deserialize)]
struct TxnResponseWire {
    header: ResponseHeader,
    succeeded: bool,
    responses: Vec<ResponseOp>,
}

impl<'de> Deserialize<'de> for TxnResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _level = DepthGuard::enter::<D::Error>()?;
        let wire = TxnResponseWire::deserialize(deserializer)?;
        Ok(TxnResponse {
            header: wire.header,
            succeeded: wire.succeeded,
            responses: wire.responses,
        })
    }
}

/// Drops versions older than `revision` that are not the newest at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionRequest {
    pub revision: i64,
    /// Answer only once the space is reclaimed on this member.
    pub physical: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionResponse {
    pub header: ResponseHeader,
}

/// Starts a watch on `[key, range_end)` on this connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCreateRequest {
    #[serde(with = "super::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "super::bytes")]
    pub range_end: Vec<u8>,
    /// First revision to report; 0 for "after the current one".
    pub start_revision: i64,
    /// Send a `Progress` message when the watch has been idle a while.
    pub progress_notify: bool,
    /// Leave out put events.
    pub no_put: bool,
    /// Leave out delete events.
    pub no_delete: bool,
    /// Attach each key's previous version to its events.
    pub prev_kv: bool,
    /// The id to use; 0 lets the server choose (server ids start at 1).
    pub watch_id: u64,
}

/// The answer to `WatchCreate`, sent before any pushed frame of the watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCreateResponse {
    pub header: ResponseHeader,
    pub watch_id: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCancelRequest {
    pub watch_id: u64,
}

/// The answer to `WatchCancel`; no frame of the watch follows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCancelResponse {
    pub header: ResponseHeader,
    pub watch_id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete: the key with `mod_revision` the delete's revision.
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// Why the server ended a watch on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CancelReason {
    /// The start revision (or the watch's position) fell below the compacted
    /// revision; `compact_revision` says where history now begins.
    Compacted,
    /// The client read too slowly and the watch's buffer filled up.
    SlowReader,
    /// One revision's events do not fit in a frame the client accepts.
    EventsTooLarge,
    /// The member is shutting down.
    ServerStopping,
    /// The member lost its place in the cluster (removed, or data reset).
    MemberRemoved,
    /// The watch's user lost the right to read its range, or its token
    /// stopped being valid.
    PermissionRevoked,
    /// A majority's hash found this member's store corrupt: its watches
    /// end, and the client carries them on at another member.
    Corrupt,
}

/// A frame pushed for a watch; the frame header's id is the watch id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchMessage {
    /// Events in revision order; all events of one revision are in the same
    /// message, and a revision's events never repeat.
    Events { header: ResponseHeader, events: Vec<Event> },
    /// Every event up to `header.revision` has been sent.
    Progress { header: ResponseHeader },
    /// The watch is over; nothing more comes for this id.
    Cancelled { header: ResponseHeader, reason: CancelReason, compact_revision: i64 },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantRequest {
    pub ttl_secs: i64,
    /// The id to use; 0 lets the server choose.
    pub id: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    pub header: ResponseHeader,
    pub id: i64,
    pub ttl_secs: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeRequest {
    pub id: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeResponse {
    pub header: ResponseHeader,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveRequest {
    pub id: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveResponse {
    pub header: ResponseHeader,
    pub id: i64,
    /// The renewed TTL.
    pub ttl_secs: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimeToLiveRequest {
    pub id: i64,
    /// Also list the keys attached to the lease.
    pub keys: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimeToLiveResponse {
    pub header: ResponseHeader,
    pub id: i64,
    /// Seconds left; -1 when the lease has expired.
    pub ttl_secs: i64,
    pub granted_ttl_secs: i64,
    pub keys: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLeasesResponse {
    pub header: ResponseHeader,
    pub leases: Vec<i64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberListRequest {
    /// Answer from committed membership (a ReadIndex round) rather than this
    /// member's current view.
    pub linearizable: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started once.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberListResponse {
    pub header: ResponseHeader,
    pub members: Vec<Member>,
}

/// Adds a member. The cluster chooses its id when it applies the addition
/// (see docs/PROTOCOL.md, "Members"); the member that joins finds it by its
/// peer URLs. `name` may be empty: the member publishes its own when it
/// first starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddRequest {
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddResponse {
    pub header: ResponseHeader,
    /// The member added.
    pub member: Member,
    /// Every member once the change is applied.
    pub members: Vec<Member>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoveRequest {
    pub id: u64,
}

/// The answer to a remove, an update and a promote: the members once the
/// change is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChangeResponse {
    pub header: ResponseHeader,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdateRequest {
    pub id: u64,
    pub peer_urls: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPromoteRequest {
    pub id: u64,
}

/// The answering member's view of itself; `header.member_id` says which
/// member, `header.revision` the store's revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub header: ResponseHeader,
    /// The version this member runs (`ember --version`, unless a test
    /// build claims another) and publishes.
    pub version: String,
    /// The store's size as the quota counts it (etcd's `dbSize`): live
    /// keys and the history not yet compacted, in the same bytes on every
    /// member at the same index (docs/PROTOCOL.md, "Quota").
    pub data_size_bytes: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub raft_term: u64,
    pub raft_commit_index: u64,
    pub raft_applied_index: u64,
    pub compact_revision: i64,
    pub is_learner: bool,
    /// Alarms and other conditions that stop the member serving writes.
    pub errors: Vec<String>,
    /// The cluster version (major.minor) once decided; empty before.
    pub cluster_version: String,
}

/// etcd's HashKV: a CRC32 over this member's keyspace up to `revision`
/// (0: the newest), so members can be compared. Served locally by any member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashKvRequest {
    pub revision: i64,
}

/// Two members that applied the same writes answer the same `hash` for the
/// same `hash_revision`, whether or not their compactions have finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashKvResponse {
    pub header: ResponseHeader,
    pub hash: u32,
    /// The member's compact revision when it hashed.
    pub compact_revision: i64,
    /// The revision the hash covers (the newest when 0 was asked).
    pub hash_revision: i64,
}

/// Logs in: on success the answer carries a token and the connection is
/// bound to it (see docs/PROTOCOL.md, "Access control").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    pub name: String,
    pub password: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateResponse {
    pub header: ResponseHeader,
    pub token: String,
}

/// Binds the connection to a token got from any member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseTokenRequest {
    pub token: String,
}

/// The answer to requests that change access control and return nothing
/// else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthResponse {
    pub header: ResponseHeader,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatusResponse {
    pub header: ResponseHeader,
    pub enabled: bool,
    /// Counts changes to users, roles and the enabled flag.
    pub auth_revision: u64,
}

/// Adds a user: with a password, or with none (`no_password`: such a user
/// cannot log in with a password).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAddRequest {
    pub name: String,
    pub password: String,
    pub no_password: bool,
}

/// Names one user (get, delete).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRequest {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChangePasswordRequest {
    pub name: String,
    pub password: String,
}

/// Grants or revokes `role` to or from user `user`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRoleRequest {
    pub user: String,
    pub role: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserGetResponse {
    pub header: ResponseHeader,
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserListResponse {
    pub header: ResponseHeader,
    pub users: Vec<String>,
}

/// Names one role (add, get, delete).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRequest {
    pub role: String,
}

/// etcd's `authpb.Permission.Type`, with its numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PermissionType {
    #[default]
    Read,
    Write,
    ReadWrite,
}

/// A right on `[key, range_end)`, with the range rules of `RangeRequest`
/// (an empty end: the key alone; `[0]`: every key from `key` on).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub perm_type: PermissionType,
    #[serde(with = "super::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "super::bytes")]
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGetResponse {
    pub header: ResponseHeader,
    pub perm: Vec<Permission>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleListResponse {
    pub header: ResponseHeader,
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGrantPermissionRequest {
    pub role: String,
    pub perm: Permission,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRevokePermissionRequest {
    pub role: String,
    #[serde(with = "super::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "super::bytes")]
    pub range_end: Vec<u8>,
}

/// etcd's `AlarmRequest.AlarmAction`, with its numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlarmAction {
    /// Every alarm raised in the cluster, from the answering member's state.
    #[default]
    Get,
    Activate,
    Deactivate,
}

/// etcd's `AlarmType`, with its numbers: what needs a person.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum AlarmType {
    /// No alarm; only meaningful in a `Get`.
    #[default]
    None,
    /// The store passed its quota, or the data directory's disk is short of
    /// room: writes that take space are refused.
    NoSpace,
    /// The member's keyspace disagrees with the majority's: it serves no
    /// reads until repaired.
    Corrupt,
}

/// Lists, raises or clears an alarm. `member_id` and `alarm` name the one
/// to raise or clear; a `Get` ignores them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRequest {
    pub action: AlarmAction,
    pub member_id: u64,
    pub alarm: AlarmType,
}

/// One raised alarm: which member, which kind.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct AlarmMember {
    pub member_id: u64,
    pub alarm: AlarmType,
}

/// `Get`: every alarm raised, ascending by member then kind. `Activate`:
/// the alarm raised. `Deactivate`: the alarm cleared, or none when it was
/// not raised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmResponse {
    pub header: ResponseHeader,
    pub alarms: Vec<AlarmMember>,
}

/// Asks for the next piece of a backup of the member's state. `stream_id`
/// 0 opens a new stream: the member takes a snapshot of its state now and
/// answers with the stream's id and its first bytes; each later request
/// names that id and gets the next bytes, on the same connection, until
/// `remaining_bytes` is 0. The bytes are a snapshot file as
/// docs/FORMAT.md describes ("Backup files").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub stream_id: u64,
}

/// One piece of a backup stream, as etcd's `SnapshotResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResponse {
    pub header: ResponseHeader,
    pub stream_id: u64,
    /// Bytes of the stream after this piece.
    pub remaining_bytes: u64,
    #[serde(with = "super::bytes")]
    pub blob: Vec<u8>,
}

/// Hands the leadership to the voter `target_id`; answered by the leader
/// once `target_id` leads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveLeaderRequest {
    pub target_id: u64,
}

/// Everything a client may ask. The variant index is the wire tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    WatchCreate(WatchCreateRequest),
    WatchCancel(WatchCancelRequest),
    /// Ask for a progress message on every watch of this connection.
    WatchProgress,
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseKeepAlive(LeaseKeepAliveRequest),
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    LeaseLeases,
    MemberList(MemberListRequest),
    Status,
    MemberAdd(MemberAddRequest),
    MemberRemove(MemberRemoveRequest),
    MemberUpdate(MemberUpdateRequest),
    MemberPromote(MemberPromoteRequest),
    HashKv(HashKvRequest),
    Authenticate(AuthenticateRequest),
    UseToken(UseTokenRequest),
    AuthEnable,
    AuthDisable,
    AuthStatus,
    UserAdd(UserAddRequest),
    UserGet(UserRequest),
    UserList,
    UserDelete(UserRequest),
    UserChangePassword(UserChangePasswordRequest),
    UserGrantRole(UserRoleRequest),
    UserRevokeRole(UserRoleRequest),
    RoleAdd(RoleRequest),
    RoleGet(RoleRequest),
    RoleList,
    RoleDelete(RoleRequest),
    RoleGrantPermission(RoleGrantPermissionRequest),
    RoleRevokePermission(RoleRevokePermissionRequest),
    Alarm(AlarmRequest),
    Snapshot(SnapshotRequest),
    MoveLeader(MoveLeaderRequest),
    Defragment,
}

/// A successful answer; the variant matches the request's. A failure is an
/// `Error` frame instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    WatchCreate(WatchCreateResponse),
    WatchCancel(WatchCancelResponse),
    /// Every watch of this connection has been sent all events up to
    /// `revision`.
    WatchProgress(ResponseHeader),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    LeaseLeases(LeaseLeasesResponse),
    MemberList(MemberListResponse),
    Status(StatusResponse),
    MemberAdd(MemberAddResponse),
    MemberRemove(MemberChangeResponse),
    MemberUpdate(MemberChangeResponse),
    MemberPromote(MemberChangeResponse),
    HashKv(HashKvResponse),
    Authenticate(AuthenticateResponse),
    UseToken(AuthResponse),
    AuthEnable(AuthResponse),
    AuthDisable(AuthResponse),
    AuthStatus(AuthStatusResponse),
    UserAdd(AuthResponse),
    UserGet(UserGetResponse),
    UserList(UserListResponse),
    UserDelete(AuthResponse),
    UserChangePassword(AuthResponse),
    UserGrantRole(AuthResponse),
    UserRevokeRole(AuthResponse),
    RoleAdd(AuthResponse),
    RoleGet(RoleGetResponse),
    RoleList(RoleListResponse),
    RoleDelete(AuthResponse),
    RoleGrantPermission(AuthResponse),
    RoleRevokePermission(AuthResponse),
    Alarm(AlarmResponse),
    Snapshot(SnapshotResponse),
    MoveLeader(ResponseHeader),
    Defragment(ResponseHeader),
}

impl Request {
    /// The variant's name, as in docs/PROTOCOL.md; for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Range(_) => "Range",
            Request::Put(_) => "Put",
            Request::DeleteRange(_) => "DeleteRange",
            Request::Txn(_) => "Txn",
            Request::Compact(_) => "Compact",
            Request::WatchCreate(_) => "WatchCreate",
            Request::WatchCancel(_) => "WatchCancel",
            Request::WatchProgress => "WatchProgress",
            Request::LeaseGrant(_) => "LeaseGrant",
            Request::LeaseRevoke(_) => "LeaseRevoke",
            Request::LeaseKeepAlive(_) => "LeaseKeepAlive",
            Request::LeaseTimeToLive(_) => "LeaseTimeToLive",
            Request::LeaseLeases => "LeaseLeases",
            Request::MemberList(_) => "MemberList",
            Request::Status => "Status",
            Request::MemberAdd(_) => "MemberAdd",
            Request::MemberRemove(_) => "MemberRemove",
            Request::MemberUpdate(_) => "MemberUpdate",
            Request::MemberPromote(_) => "MemberPromote",
            Request::HashKv(_) => "HashKv",
            Request::Authenticate(_) => "Authenticate",
            Request::UseToken(_) => "UseToken",
            Request::AuthEnable => "AuthEnable",
            Request::AuthDisable => "AuthDisable",
            Request::AuthStatus => "AuthStatus",
            Request::UserAdd(_) => "UserAdd",
            Request::UserGet(_) => "UserGet",
            Request::UserList => "UserList",
            Request::UserDelete(_) => "UserDelete",
            Request::UserChangePassword(_) => "UserChangePassword",
            Request::UserGrantRole(_) => "UserGrantRole",
            Request::UserRevokeRole(_) => "UserRevokeRole",
            Request::RoleAdd(_) => "RoleAdd",
            Request::RoleGet(_) => "RoleGet",
            Request::RoleList => "RoleList",
            Request::RoleDelete(_) => "RoleDelete",
            Request::RoleGrantPermission(_) => "RoleGrantPermission",
            Request::RoleRevokePermission(_) => "RoleRevokePermission",
            Request::Alarm(_) => "Alarm",
            Request::Snapshot(_) => "Snapshot",
            Request::MoveLeader(_) => "MoveLeader",
            Request::Defragment => "Defragment",
        }
    }

    /// True when the request may change the cluster's state: a lost answer
    /// leaves its outcome unknown, and a blind retry may apply it twice.
    /// (A keep-alive renews a lease; applying it twice does no harm.)
    pub fn is_write(&self) -> bool {
        match self {
            Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Compact(_)
            | Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
            | Request::MemberAdd(_)
            | Request::MemberRemove(_)
            | Request::MemberUpdate(_)
            | Request::MemberPromote(_)
            | Request::AuthEnable
            | Request::AuthDisable
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleDelete(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_) => true,
            Request::Txn(txn) => txn.is_write(),
            Request::Alarm(r) => r.action != AlarmAction::Get,
            _ => false,
        }
    }
}

impl TxnRequest {
    /// True when either branch, at any depth, holds a put or a delete.
    pub fn is_write(&self) -> bool {
        self.success.iter().chain(&self.failure).any(|op| match op {
            RequestOp::Range(_) => false,
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
            RequestOp::Txn(txn) => txn.is_write(),
        })
    }
}

impl Response {
    /// The header every answer carries.
    pub fn header(&self) -> &ResponseHeader {
        match self {
            Response::Range(r) => &r.header,
            Response::Put(r) => &r.header,
            Response::DeleteRange(r) => &r.header,
            Response::Txn(r) => &r.header,
            Response::Compact(r) => &r.header,
            Response::WatchCreate(r) => &r.header,
            Response::WatchCancel(r) => &r.header,
            Response::WatchProgress(header) => header,
            Response::LeaseGrant(r) => &r.header,
            Response::LeaseRevoke(r) => &r.header,
            Response::LeaseKeepAlive(r) => &r.header,
            Response::LeaseTimeToLive(r) => &r.header,
            Response::LeaseLeases(r) => &r.header,
            Response::MemberList(r) => &r.header,
            Response::Status(r) => &r.header,
            Response::MemberAdd(r) => &r.header,
            Response::MemberRemove(r) | Response::MemberUpdate(r) | Response::MemberPromote(r) => {
                &r.header
            }
            Response::HashKv(r) => &r.header,
            Response::Authenticate(r) => &r.header,
            Response::UseToken(r)
            | Response::AuthEnable(r)
            | Response::AuthDisable(r)
            | Response::UserAdd(r)
            | Response::UserDelete(r)
            | Response::UserChangePassword(r)
            | Response::UserGrantRole(r)
            | Response::UserRevokeRole(r)
            | Response::RoleAdd(r)
            | Response::RoleDelete(r)
            | Response::RoleGrantPermission(r)
            | Response::RoleRevokePermission(r) => &r.header,
            Response::AuthStatus(r) => &r.header,
            Response::UserGet(r) => &r.header,
            Response::UserList(r) => &r.header,
            Response::RoleGet(r) => &r.header,
            Response::RoleList(r) => &r.header,
            Response::Alarm(r) => &r.header,
            Response::Snapshot(r) => &r.header,
            Response::MoveLeader(header) | Response::Defragment(header) => header,
        }
    }
}

impl WatchMessage {
    pub fn header(&self) -> &ResponseHeader {
        match self {
            WatchMessage::Events { header, .. }
            | WatchMessage::Progress { header }
            | WatchMessage::Cancelled { header, .. } => header,
        }
    }
}

/// The `range_end` that selects every key starting with `prefix`: the prefix
/// with its last byte below 0xff incremented and the rest cut. A prefix of
/// only 0xff bytes (or an empty one) has no such end: `[0]`, "to the last
/// key", is returned, as etcd's clients do.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&byte| byte < 0xff) {
        Some(at) => {
            let mut end = prefix[..=at].to_vec();
            end[at] += 1;
            end
        }
        None => vec![0],
    }
}
