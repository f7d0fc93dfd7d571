//! Sample values of every protocol message, shared by the proto tests.
//! Each sample sets its fields to distinct, non-default values so that a
//! field lost or swapped in a round trip shows.

#![allow(dead_code)]

use ember::proto::*;

#[path = "../support/rng.rs"]
pub mod rng;

pub fn header(n: i64) -> ResponseHeader {
    ResponseHeader { cluster_id: 0xC1C1, member_id: 0xAB, revision: n, raft_term: 7 }
}

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        create_revision: 3,
        mod_revision: 9,
        version: 4,
        value: value.as_bytes().to_vec(),
        lease: 0x1EA5,
    }
}

pub fn range() -> RangeRequest {
    RangeRequest {
        key: b"/app/".to_vec(),
        range_end: b"/app0".to_vec(),
        limit: 10,
        revision: 42,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        serializable: true,
        keys_only: true,
        count_only: false,
        min_mod_revision: 1,
        max_mod_revision: 40,
        min_create_revision: 2,
        max_create_revision: 30,
    }
}

pub fn put(key: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: vec![0, 1, 2, 255],
        lease: 5,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: false,
    }
}

pub fn delete(key: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        prev_kv: true,
    }
}

pub fn txn() -> TxnRequest {
    let compare =
        |result, target| Compare { result, target, key: b"/lock".to_vec(), range_end: Vec::new() };
    TxnRequest {
        compare: vec![
            compare(CompareResult::Equal, CompareTarget::Version(0)),
            compare(CompareResult::NotEqual, CompareTarget::Value(b"held".to_vec())),
            compare(CompareResult::Greater, CompareTarget::Create(3)),
            compare(CompareResult::Less, CompareTarget::Mod(100)),
            compare(CompareResult::Equal, CompareTarget::Lease(0)),
        ],
        success: vec![
            RequestOp::Put(put("/lock")),
            RequestOp::Range(range()),
            RequestOp::Txn(TxnRequest {
                compare: Vec::new(),
                success: vec![RequestOp::DeleteRange(delete("/tmp/", "/tmp0"))],
                failure: vec![RequestOp::Put(put("/tmp/x"))],
            }),
        ],
        failure: vec![RequestOp::Range(range())],
    }
}

pub fn requests() -> Vec<Request> {
    vec![
        Request::Range(range()),
        Request::Put(put("/a")),
        Request::DeleteRange(delete("/a", "/b")),
        Request::Txn(txn()),
        Request::Compact(CompactionRequest { revision: 77, physical: true }),
        Request::WatchCreate(WatchCreateRequest {
            key: b"/w".to_vec(),
            range_end: vec![0],
            start_revision: 12,
            progress_notify: true,
            no_put: false,
            no_delete: true,
            prev_kv: true,
            watch_id: 3,
        }),
        Request::WatchCancel(WatchCancelRequest { watch_id: 3 }),
        Request::WatchProgress,
        Request::LeaseGrant(LeaseGrantRequest { ttl_secs: 60, id: 0x77 }),
        Request::LeaseRevoke(LeaseRevokeRequest { id: 0x77 }),
        Request::LeaseKeepAlive(LeaseKeepAliveRequest { id: 0x77 }),
        Request::LeaseTimeToLive(LeaseTimeToLiveRequest { id: 0x77, keys: true }),
        Request::LeaseLeases,
        Request::MemberList(MemberListRequest { linearizable: true }),
        Request::Status,
        Request::MemberAdd(MemberAddRequest {
            peer_urls: vec!["http://10.0.0.4:7380".into()],
            is_learner: true,
            name: "pi-4".into(),
        }),
        Request::MemberRemove(MemberRemoveRequest { id: 0xAB }),
        Request::MemberUpdate(MemberUpdateRequest {
            id: 0xAB,
            peer_urls: vec!["http://10.0.0.9:7380".into()],
        }),
        Request::MemberPromote(MemberPromoteRequest { id: 0xCD }),
        Request::HashKv(HashKvRequest { revision: 42 }),
        Request::Authenticate(AuthenticateRequest { name: "alice".into(), password: "pw".into() }),
        Request::UseToken(UseTokenRequest { token: "616c696365.3.1.2.ab".into() }),
        Request::AuthEnable,
        Request::AuthDisable,
        Request::AuthStatus,
        Request::UserAdd(UserAddRequest {
            name: "bob".into(),
            password: "pw2".into(),
            no_password: true,
        }),
        Request::UserGet(UserRequest { name: "bob".into() }),
        Request::UserList,
        Request::UserDelete(UserRequest { name: "carol".into() }),
        Request::UserChangePassword(UserChangePasswordRequest {
            name: "bob".into(),
            password: "pw3".into(),
        }),
        Request::UserGrantRole(UserRoleRequest { user: "bob".into(), role: "ops".into() }),
        Request::UserRevokeRole(UserRoleRequest { user: "bob".into(), role: "dev".into() }),
        Request::RoleAdd(RoleRequest { role: "ops".into() }),
        Request::RoleGet(RoleRequest { role: "dev".into() }),
        Request::RoleList,
        Request::RoleDelete(RoleRequest { role: "old".into() }),
        Request::RoleGrantPermission(RoleGrantPermissionRequest {
            role: "ops".into(),
            perm: permission(),
        }),
        Request::RoleRevokePermission(RoleRevokePermissionRequest {
            role: "ops".into(),
            key: b"/a".to_vec(),
            range_end: vec![0],
        }),
        Request::Alarm(AlarmRequest {
            action: AlarmAction::Deactivate,
            member_id: 0xAB,
            alarm: AlarmType::NoSpace,
        }),
        Request::Snapshot(SnapshotRequest { stream_id: 7 }),
        Request::MoveLeader(MoveLeaderRequest { target_id: 0xAB }),
        Request::Defragment,
    ]
}

fn member() -> Member {
    Member {
        id: 0xAB,
        name: "pi-1".into(),
        peer_urls: vec!["http://10.0.0.1:7380".into()],
        client_urls: vec!["http://10.0.0.1:7379".into()],
        is_learner: false,
    }
}

pub fn responses() -> Vec<Response> {
    let range_response = RangeResponse {
        header: header(10),
        kvs: vec![kv("/a", "1"), kv("/b", "")],
        more: true,
        count: 5,
    };
    let put_response = PutResponse { header: header(11), prev_kv: Some(kv("/a", "0")) };
    let delete_response =
        DeleteRangeResponse { header: header(12), deleted: 2, prev_kvs: vec![kv("/x", "y")] };
    vec![
        Response::Range(range_response.clone()),
        Response::Put(put_response.clone()),
        Response::DeleteRange(delete_response.clone()),
        Response::Txn(TxnResponse {
            header: header(13),
            succeeded: true,
            responses: vec![
                ResponseOp::Put(put_response),
                ResponseOp::Range(range_response),
                ResponseOp::Txn(TxnResponse {
                    header: header(13),
                    succeeded: false,
                    responses: vec![ResponseOp::DeleteRange(delete_response)],
                }),
            ],
        }),
        Response::Compact(CompactionResponse { header: header(14) }),
        Response::WatchCreate(WatchCreateResponse { header: header(15), watch_id: 9 }),
        Response::WatchCancel(WatchCancelResponse { header: header(16), watch_id: 9 }),
        Response::WatchProgress(header(17)),
        Response::LeaseGrant(LeaseGrantResponse { header: header(18), id: 0x77, ttl_secs: 60 }),
        Response::LeaseRevoke(LeaseRevokeResponse { header: header(19) }),
        Response::LeaseKeepAlive(LeaseKeepAliveResponse {
            header: header(20),
            id: 0x77,
            ttl_secs: 59,
        }),
        Response::LeaseTimeToLive(LeaseTimeToLiveResponse {
            header: header(21),
            id: 0x77,
            ttl_secs: 58,
            granted_ttl_secs: 60,
            keys: vec![b"/a".to_vec(), b"/b".to_vec()],
        }),
        Response::LeaseLeases(LeaseLeasesResponse { header: header(22), leases: vec![1, 2, 0x77] }),
        Response::MemberList(MemberListResponse { header: header(23), members: vec![member()] }),
        Response::Status(StatusResponse {
            header: header(24),
            version: "0.1.0".into(),
            data_size_bytes: 1 << 20,
            leader_id: 0xAB,
            raft_term: 7,
            raft_commit_index: 500,
            raft_applied_index: 499,
            compact_revision: 8,
            is_learner: false,
            errors: vec!["NOSPACE".into()],
            cluster_version: "0.1".into(),
        }),
        Response::MemberAdd(MemberAddResponse {
            header: header(25),
            member: member(),
            members: vec![member()],
        }),
        Response::MemberRemove(MemberChangeResponse { header: header(26), members: vec![] }),
        Response::MemberUpdate(MemberChangeResponse {
            header: header(27),
            members: vec![member()],
        }),
        Response::MemberPromote(MemberChangeResponse {
            header: header(28),
            members: vec![member()],
        }),
        Response::HashKv(HashKvResponse {
            header: header(29),
            hash: 0xDEAD_BEEF,
            compact_revision: 7,
            hash_revision: 42,
        }),
        Response::Authenticate(AuthenticateResponse {
            header: header(40),
            token: "616c696365.3.1.2.ab".into(),
        }),
        Response::UseToken(AuthResponse { header: header(41) }),
        Response::AuthEnable(AuthResponse { header: header(42) }),
        Response::AuthDisable(AuthResponse { header: header(43) }),
        Response::AuthStatus(AuthStatusResponse {
            header: header(44),
            enabled: true,
            auth_revision: 9,
        }),
        Response::UserAdd(AuthResponse { header: header(45) }),
        Response::UserGet(UserGetResponse { header: header(46), roles: vec!["ops".into()] }),
        Response::UserList(UserListResponse { header: header(47), users: vec!["bob".into()] }),
        Response::UserDelete(AuthResponse { header: header(48) }),
        Response::UserChangePassword(AuthResponse { header: header(49) }),
        Response::UserGrantRole(AuthResponse { header: header(50) }),
        Response::UserRevokeRole(AuthResponse { header: header(51) }),
        Response::RoleAdd(AuthResponse { header: header(52) }),
        Response::RoleGet(RoleGetResponse { header: header(53), perm: vec![permission()] }),
        Response::RoleList(RoleListResponse { header: header(54), roles: vec!["ops".into()] }),
        Response::RoleDelete(AuthResponse { header: header(55) }),
        Response::RoleGrantPermission(AuthResponse { header: header(56) }),
        Response::RoleRevokePermission(AuthResponse { header: header(57) }),
        Response::Alarm(AlarmResponse {
            header: header(58),
            alarms: vec![AlarmMember { member_id: 0xAB, alarm: AlarmType::Corrupt }],
        }),
        Response::Snapshot(SnapshotResponse {
            header: header(59),
            stream_id: 7,
            remaining_bytes: 4,
            blob: b"EMBR".to_vec(),
        }),
        Response::MoveLeader(header(60)),
        Response::Defragment(header(61)),
    ]
}

pub fn permission() -> Permission {
    Permission {
        perm_type: PermissionType::ReadWrite,
        key: b"/a".to_vec(),
        range_end: b"/b".to_vec(),
    }
}

pub fn watch_messages() -> Vec<WatchMessage> {
    vec![
        WatchMessage::Events {
            header: header(30),
            events: vec![
                Event { kind: EventKind::Put, kv: kv("/w/1", "a"), prev_kv: Some(kv("/w/1", "z")) },
                Event { kind: EventKind::Delete, kv: kv("/w/2", ""), prev_kv: None },
            ],
        },
        WatchMessage::Progress { header: header(31) },
        WatchMessage::Cancelled {
            header: header(32),
            reason: CancelReason::Compacted,
            compact_revision: 25,
        },
        WatchMessage::Cancelled {
            header: header(33),
            reason: CancelReason::SlowReader,
            compact_revision: 0,
        },
    ]
}

pub fn errors() -> Vec<ErrorBody> {
    let mut errors: Vec<ErrorBody> =
        ErrorCode::ALL.iter().map(|&code| ErrorBody::new(code)).collect();
    errors.push(ErrorBody::with_message(ErrorCode::Compacted, "compacted at 25; asked for 12 ✓"));
    errors.push(ErrorBody { code_number: 4242, message: "a code from a newer server".into() });
    errors
}

/// Every server-to-client message, as the client decodes it.
pub fn server_messages() -> Vec<ServerMessage> {
    let mut messages = Vec::new();
    for (id, response) in responses().into_iter().enumerate() {
        messages.push(ServerMessage::Response { request_id: 1000 + id as u64, response });
    }
    for (id, error) in errors().into_iter().enumerate() {
        messages.push(ServerMessage::Error { request_id: 2000 + id as u64, error });
    }
    for (id, message) in watch_messages().into_iter().enumerate() {
        messages.push(ServerMessage::Watch { watch_id: 1 + id as u64, message });
    }
    messages
}

/// Appends the frame for a server message.
pub fn encode_server_message(out: &mut Vec<u8>, message: &ServerMessage, max_body_bytes: u32) {
    match message {
        ServerMessage::Response { request_id, response } => {
            encode_response(out, *request_id, response, max_body_bytes).unwrap();
        }
        ServerMessage::Error { request_id, error } => {
            encode_error(out, *request_id, error, max_body_bytes);
        }
        ServerMessage::Watch { watch_id, message } => {
            encode_watch(out, *watch_id, message, max_body_bytes).unwrap();
        }
    }
}
