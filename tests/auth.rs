//! Access control with real `ember serve` processes: the permission matrix
//! request by request, each hole etcd's advisories found as its own test,
//! tokens across a leader's death, a full restart and a password change,
//! a login refused in the same words for an unknown user as for a wrong
//! password,
//! the auth state alike on every member and carried by snapshots, and the
//! command line as a user types it.
//!
//! Members run with `--auth-pbkdf2-iterations 1000` so that the many logins
//! of these tests stay cheap; the cost of the default is a benchmark's
//! figure (see README), not a test's.

mod support;

use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, ClientError, Credentials};
use ember::proto::{
    self, Compare, CompareResult, CompareTarget, DeleteRangeRequest, ErrorCode, Permission,
    PermissionType, PutRequest, RangeRequest, Request, RequestOp, Response, TxnRequest,
    WatchCreateRequest, WatchMessage,
};
use support::cli::{node, stderr, stdout};
use support::cluster::Cluster;

const LEADER_WAIT: Duration = Duration::from_secs(15);
const FAST_HASH: &[&str] = &["--auth-pbkdf2-iterations", "1000"];
const ROOT_PASSWORD: &str = "root-pw";

fn start(test: &str, size: usize, extra: &[&str]) -> Cluster {
    let args: Vec<&str> = FAST_HASH.iter().chain(extra).copied().collect();
    let cluster = Cluster::start(test, size, &args);
    cluster.wait_leader(LEADER_WAIT);
    cluster
}

/// A client of every member, logged in as `user`.
fn login(cluster: &Cluster, user: &str, password: &str) -> Result<Client, ClientError> {
    let mut config = cluster.client(0).config().clone();
    config.endpoints = cluster.endpoints();
    config.credentials =
        Some(Credentials { user: user.into(), password: Some(password.into()), token: None });
    Client::connect(config)
}

fn request(client: &mut Client, request: Request) -> Result<Response, ErrorCode> {
    client.request(&request).map_err(|e| e.code().unwrap_or_else(|| panic!("{e}")))
}

fn perm(perm_type: PermissionType, key: &str, range_end: &[u8]) -> Permission {
    Permission { perm_type, key: key.as_bytes().to_vec(), range_end: range_end.to_vec() }
}

/// Root with the root role, then `users`: each with its own role holding
/// one permission; auth on. Returns a root client.
fn set_up(cluster: &Cluster, users: &[(&str, Permission)]) -> Client {
    let mut admin = cluster.client(0);
    let mut run = |r: Request| request(&mut admin, r).unwrap_or_else(|e| panic!("{e:?}"));
    let add = |name: &str| {
        Request::UserAdd(proto::UserAddRequest {
            name: name.into(),
            password: format!("{name}-pw"),
            no_password: false,
        })
    };
    run(Request::UserAdd(proto::UserAddRequest {
        name: "root".into(),
        password: ROOT_PASSWORD.into(),
        no_password: false,
    }));
    run(Request::UserGrantRole(proto::UserRoleRequest {
        user: "root".into(),
        role: "root".into(),
    }));
    for (name, permission) in users {
        let role = format!("{name}-role");
        run(add(name));
        run(Request::RoleAdd(proto::RoleRequest { role: role.clone() }));
        run(Request::RoleGrantPermission(proto::RoleGrantPermissionRequest {
            role: role.clone(),
            perm: permission.clone(),
        }));
        run(Request::UserGrantRole(proto::UserRoleRequest { user: name.to_string(), role }));
    }
    run(Request::AuthEnable);
    login(cluster, "root", ROOT_PASSWORD).unwrap()
}

fn as_user(cluster: &Cluster, name: &str) -> Client {
    login(cluster, name, &format!("{name}-pw")).unwrap()
}

fn get(key: &str, end: &[u8]) -> Request {
    Request::Range(RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.to_vec(),
        ..Default::default()
    })
}

fn put(key: &str) -> Request {
    Request::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn del(key: &str, end: &[u8]) -> Request {
    Request::DeleteRange(DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.to_vec(),
        prev_kv: false,
    })
}

fn allowed(result: Result<Response, ErrorCode>) -> bool {
    match result {
        Ok(_) => true,
        Err(ErrorCode::PermissionDenied) => false,
        Err(other) => panic!("neither allowed nor denied: {other:?}"),
    }
}

#[test]
fn the_permission_matrix_request_by_request() {
    let cluster = start("auth_matrix", 1, &[]);
    let mut root = set_up(
        &cluster,
        &[
            ("reader", perm(PermissionType::Read, "k", b"")),
            ("writer", perm(PermissionType::Write, "a", b"c")),
            ("both", perm(PermissionType::ReadWrite, "p/", b"p0")),
        ],
    );
    for key in ["k", "b", "p/x", "z"] {
        request(&mut root, put(key)).unwrap();
    }
    // (user, request, allowed?)
    let cases: Vec<(&str, Request, bool)> = vec![
        ("reader", get("k", b""), true),
        ("reader", get("k", b"l"), false),
        ("reader", get("z", b""), false),
        ("reader", put("k"), false),
        ("reader", del("k", b""), false),
        ("writer", put("a"), true),
        ("writer", put("bzz"), true),
        ("writer", put("c"), false),
        ("writer", del("a", b"c"), true),
        ("writer", del("a", b"d"), false),
        ("writer", get("b", b""), false),
        ("both", get("p/", b"p0"), true),
        ("both", get("p/x", b""), true),
        ("both", put("p/y"), true),
        ("both", del("p/", b"p0"), true),
        ("both", get("p", b"p0"), false),
        ("both", put("q"), false),
        ("both", get("p/", &[0]), false),
        ("root", get("a", &[0]), true),
    ];
    let mut clients: std::collections::BTreeMap<&str, Client> = ["reader", "writer", "both"]
        .into_iter()
        .map(|name| (name, as_user(&cluster, name)))
        .collect();
    clients.insert("root", root);
    for (user, req, expected) in cases {
        let client = clients.get_mut(user).unwrap();
        let got = allowed(request(client, req.clone()));
        assert_eq!(got, expected, "{user}: {req:?}");
    }
}

#[test]
fn without_a_token_nothing_but_status_and_health_pass() {
    let cluster = start("auth_anonymous", 1, &[]);
    set_up(&cluster, &[]);
    let mut anonymous = cluster.client(0);
    assert!(matches!(request(&mut anonymous, Request::Status), Ok(Response::Status(_))));
    assert!(matches!(request(&mut anonymous, Request::AuthStatus), Ok(Response::AuthStatus(_))));
    for refused in [
        get("k", b""),
        put("k"),
        Request::MemberList(proto::MemberListRequest { linearizable: false }),
        Request::LeaseLeases,
        Request::LeaseGrant(proto::LeaseGrantRequest { ttl_secs: 60, id: 0 }),
        Request::UserList,
    ] {
        assert_eq!(
            request(&mut anonymous, refused.clone()),
            Err(ErrorCode::InvalidAuthToken),
            "{refused:?}"
        );
    }
    let health = node::ember(&cluster.endpoints()[0], &["endpoint", "health"]);
    assert_eq!(health.status.code(), Some(0), "{}", stderr(&health));
    let wrong = login(&cluster, "root", "nope").unwrap_err();
    assert_eq!(wrong.code(), Some(ErrorCode::AuthFailed));
}

/// A login as `user` with a wrong password, over the Rust client and over
/// `ember`: the error's code and words, and the command's exit status and
/// output.
fn refused_login(cluster: &Cluster, user: &str) -> (Option<ErrorCode>, String, String) {
    let error = login(cluster, user, "guess").unwrap_err();
    let at = &cluster.endpoints()[0];
    let cli = node::ember(at, &["--user", &format!("{user}:guess"), "get", "k"]);
    let said = format!("{:?} {:?} {}", cli.status.code(), stdout(&cli), stderr(&cli));
    (error.code(), error.to_string(), said)
}

#[test]
fn a_login_answers_alike_for_a_wrong_password_an_unknown_user_and_one_without_a_password() {
    let cluster = start("auth_unknown_user", 1, &[]);
    let at = cluster.endpoints()[0].clone();
    node::ok(&at, &["user", "add", "root", "--new-user-password", "pw"]);
    node::ok(&at, &["user", "grant-role", "root", "root"]);
    node::ok(&at, &["user", "add", "certonly", "--no-password"]);
    node::ok(&at, &["auth", "enable"]);

    let wrong = refused_login(&cluster, "root");
    assert_eq!(wrong.0, Some(ErrorCode::AuthFailed));
    let words = "etcdserver: authentication failed, invalid user ID or password";
    assert!(wrong.1.contains(words) && wrong.2.contains(words), "{wrong:?}");
    assert_eq!(refused_login(&cluster, "ghost"), wrong);
    assert_eq!(refused_login(&cluster, "certonly"), wrong);
}

#[test]
fn member_list_needs_a_user_and_member_changes_hashkv_and_compaction_need_root() {
    let cluster = start("auth_root_only", 1, &[]);
    let mut root = set_up(&cluster, &[("u", perm(PermissionType::ReadWrite, "", &[0]))]);
    let mut user = as_user(&cluster, "u");
    let members = Request::MemberList(proto::MemberListRequest { linearizable: false });
    assert!(request(&mut user, members).is_ok());
    for root_only in [
        Request::HashKv(proto::HashKvRequest { revision: 0 }),
        Request::Compact(proto::CompactionRequest { revision: 1, physical: false }),
        Request::MemberRemove(proto::MemberRemoveRequest { id: 42 }),
        Request::UserList,
        Request::RoleGet(proto::RoleRequest { role: "root".into() }),
        Request::RoleAdd(proto::RoleRequest { role: "x".into() }),
        Request::AuthDisable,
    ] {
        assert_eq!(
            request(&mut user, root_only.clone()),
            Err(ErrorCode::PermissionDenied),
            "{root_only:?}"
        );
    }
    assert!(request(&mut root, Request::HashKv(proto::HashKvRequest { revision: 0 })).is_ok());
    let own = Request::RoleGet(proto::RoleRequest { role: "u-role".into() });
    assert!(request(&mut user, own).is_ok(), "a user sees the roles it holds");
    let me = Request::UserGet(proto::UserRequest { name: "u".into() });
    assert!(request(&mut user, me).is_ok(), "a user sees itself");
}

fn compare_value(key: &str) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Value(b"never".to_vec()),
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
    }
}

#[test]
fn a_nested_txn_is_checked_whole_before_anything_applies() {
    let cluster = start("auth_nested_txn", 1, &[]);
    let mut root = set_up(&cluster, &[("u", perm(PermissionType::ReadWrite, "mine/", b"mine0"))]);
    request(&mut root, put("theirs")).unwrap();
    let mut user = as_user(&cluster, "u");
    // The compare fails, so only the failure branch would run; its nested
    // txn deletes a key outside the grant. The whole txn is refused.
    let inner = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"theirs".to_vec(),
            ..Default::default()
        })],
        failure: vec![],
    };
    let txn = TxnRequest {
        compare: vec![compare_value("mine/a")],
        success: vec![],
        failure: vec![
            RequestOp::Put(PutRequest { key: b"mine/a".to_vec(), ..Default::default() }),
            RequestOp::Txn(inner),
        ],
    };
    assert_eq!(request(&mut user, Request::Txn(txn)), Err(ErrorCode::PermissionDenied));
    assert!(
        matches!(request(&mut root, get("theirs", b"")), Ok(Response::Range(r)) if r.count == 1)
    );
    assert!(
        matches!(request(&mut root, get("mine/a", b"")), Ok(Response::Range(r)) if r.count == 0)
    );
    // A compare reads: comparing a key outside the grant is refused too.
    let peek =
        TxnRequest { compare: vec![compare_value("theirs")], success: vec![], failure: vec![] };
    assert_eq!(request(&mut user, Request::Txn(peek)), Err(ErrorCode::PermissionDenied));
}

#[test]
fn prev_kv_needs_read_as_well_as_write() {
    let cluster = start("auth_prev_kv", 1, &[]);
    set_up(&cluster, &[("w", perm(PermissionType::Write, "k", b""))]);
    let mut writer = as_user(&cluster, "w");
    assert!(request(&mut writer, put("k")).is_ok());
    let with_prev = PutRequest { key: b"k".to_vec(), prev_kv: true, ..Default::default() };
    assert_eq!(request(&mut writer, Request::Put(with_prev)), Err(ErrorCode::PermissionDenied));
    let delete = DeleteRangeRequest { key: b"k".to_vec(), range_end: vec![], prev_kv: true };
    assert_eq!(
        request(&mut writer, Request::DeleteRange(delete)),
        Err(ErrorCode::PermissionDenied)
    );
}

fn watch_request(key: &str, end: &[u8]) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.to_vec(),
        ..Default::default()
    }
}

#[test]
fn a_from_key_watch_needs_the_whole_tail() {
    let cluster = start("auth_from_key_watch", 1, &[]);
    set_up(&cluster, &[("u", perm(PermissionType::Read, "m", b"n"))]);
    let mut user = as_user(&cluster, "u");
    let refused = user.watch(watch_request("m", &[0])).unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::PermissionDenied));
    assert!(user.watch(watch_request("m", b"n")).is_ok());
}

#[test]
fn a_watch_ends_with_a_reason_when_its_right_is_taken_away() {
    let cluster = start("auth_watch_revoked", 1, &[]);
    let mut root = set_up(&cluster, &[("u", perm(PermissionType::Read, "w/", b"w0"))]);
    let user = as_user(&cluster, "u");
    let mut other = login(&cluster, "root", ROOT_PASSWORD).unwrap();
    let mut user = user;
    let mut stream = user.watch(watch_request("w/", b"w0")).unwrap();
    request(&mut other, put("w/1")).unwrap();
    let first = stream.next().unwrap().unwrap();
    assert!(matches!(first, WatchMessage::Events { .. }), "{first:?}");
    let revoke = proto::RoleRevokePermissionRequest {
        role: "u-role".into(),
        key: b"w/".to_vec(),
        range_end: b"w0".to_vec(),
    };
    request(&mut root, Request::RoleRevokePermission(revoke)).unwrap();
    let ended = stream.next().unwrap().unwrap();
    assert!(
        matches!(
            ended,
            WatchMessage::Cancelled { reason: proto::CancelReason::PermissionRevoked, .. }
        ),
        "{ended:?}"
    );
}

#[test]
fn lease_revoke_and_time_to_live_keys_follow_the_rights_on_the_keys() {
    let cluster = start("auth_leases", 1, &[]);
    let mut root = set_up(&cluster, &[("u", perm(PermissionType::ReadWrite, "mine", b""))]);
    let mut user = as_user(&cluster, "u");
    // Root's lease: its owner is not the user, so only the keys count.
    let granted = grant_lease(&mut root);
    for key in ["mine", "secret"] {
        let attach =
            PutRequest { key: key.as_bytes().to_vec(), lease: granted, ..Default::default() };
        request(&mut root, Request::Put(attach)).unwrap();
    }
    let ttl = Request::LeaseTimeToLive(proto::LeaseTimeToLiveRequest { id: granted, keys: true });
    match request(&mut user, ttl.clone()) {
        Ok(Response::LeaseTimeToLive(r)) => assert_eq!(r.keys, vec![b"mine".to_vec()]),
        other => panic!("{other:?}"),
    }
    match request(&mut root, ttl) {
        Ok(Response::LeaseTimeToLive(r)) => assert_eq!(r.keys.len(), 2),
        other => panic!("{other:?}"),
    }
    let revoke = Request::LeaseRevoke(proto::LeaseRevokeRequest { id: granted });
    assert_eq!(request(&mut user, revoke.clone()), Err(ErrorCode::PermissionDenied));
    assert!(
        matches!(request(&mut root, get("secret", b"")), Ok(Response::Range(r)) if r.count == 1)
    );
    // A put that attaches the lease needs WRITE on the keys already on it.
    let attach = PutRequest { key: b"mine".to_vec(), lease: granted, ..Default::default() };
    assert_eq!(request(&mut user, Request::Put(attach)), Err(ErrorCode::PermissionDenied));
    assert!(request(&mut root, revoke).is_ok());
}

fn grant_lease(client: &mut Client) -> i64 {
    match request(client, Request::LeaseGrant(proto::LeaseGrantRequest { ttl_secs: 600, id: 0 })) {
        Ok(Response::LeaseGrant(r)) => r.id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_owner_of_a_lease_may_revoke_it_after_losing_write_and_across_a_snapshot() {
    let mut cluster = start("auth_lease_owner", 1, &["--snapshot-count", "5"]);
    let mut root = set_up(
        &cluster,
        &[
            ("alice", perm(PermissionType::ReadWrite, "alice/k", b"")),
            ("bob", perm(PermissionType::Read, "bob/", b"bob0")),
        ],
    );
    let mut alice = as_user(&cluster, "alice");
    let lease = grant_lease(&mut alice);
    let attach = PutRequest { key: b"alice/k".to_vec(), lease, ..Default::default() };
    request(&mut alice, Request::Put(attach)).unwrap();
    let revoke = Request::LeaseRevoke(proto::LeaseRevokeRequest { id: lease });
    let mut bob = as_user(&cluster, "bob");
    assert_eq!(request(&mut bob, revoke.clone()), Err(ErrorCode::PermissionDenied));

    let take_write = proto::RoleRevokePermissionRequest {
        role: "alice-role".into(),
        key: b"alice/k".to_vec(),
        range_end: Vec::new(),
    };
    request(&mut root, Request::RoleRevokePermission(take_write)).unwrap();
    assert_eq!(request(&mut alice, put("alice/k")), Err(ErrorCode::PermissionDenied));
    // Enough entries after the grant that a snapshot holds it, then a
    // restart: the owner comes back from the snapshot, not from the log.
    for i in 0..12 {
        request(&mut root, put(&format!("fill{i}"))).unwrap();
    }
    cluster.kill(0);
    let snaps = std::fs::read_dir(cluster.data_dir(0).join("snap")).map_or(0, |d| d.count());
    assert!(snaps > 0, "no snapshot taken");
    cluster.spawn(0);
    cluster.wait_leader(LEADER_WAIT);

    let mut bob = as_user(&cluster, "bob");
    assert_eq!(request(&mut bob, revoke.clone()), Err(ErrorCode::PermissionDenied));
    let mut alice = as_user(&cluster, "alice");
    request(&mut alice, revoke).unwrap();
    let mut root = login(&cluster, "root", ROOT_PASSWORD).unwrap();
    assert!(
        matches!(request(&mut root, get("alice/k", b"")), Ok(Response::Range(r)) if r.count == 0),
        "the lease's key went with it"
    );
}

/// The user's token, got by a login of its own.
fn token_of(cluster: &Cluster, user: &str, password: &str) -> String {
    let client = login(cluster, user, password).unwrap();
    client.config().credentials.as_ref().unwrap().token.clone().expect("logged in")
}

/// A client of member `i` that presents `token` and has no password.
fn with_token(cluster: &Cluster, i: usize, token: &str) -> Result<Client, ClientError> {
    let mut config = cluster.client_config(i);
    config.command_timeout = Duration::from_secs(5);
    config.credentials =
        Some(Credentials { user: String::new(), password: None, token: Some(token.into()) });
    Client::connect(config)
}

fn wait_token_accepted(cluster: &Cluster, i: usize, token: &str) -> Client {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let outcome = with_token(cluster, i, token).and_then(|mut client| {
            client.get(b"k")?;
            Ok(client)
        });
        match outcome {
            Ok(client) => return client,
            Err(_) if Instant::now() < deadline => sleep(Duration::from_millis(100)),
            Err(e) => panic!("member {i}: {e}"),
        }
    }
}

#[test]
fn a_token_outlives_its_leader_and_a_full_restart_but_not_a_password_change() {
    let mut cluster = start("auth_tokens", 3, &[]);
    set_up(&cluster, &[("u", perm(PermissionType::ReadWrite, "k", b""))]);
    let token = token_of(&cluster, "u", "u-pw");
    for i in 0..3 {
        wait_token_accepted(&cluster, i, &token);
    }
    let leader = cluster.wait_leader(LEADER_WAIT);
    cluster.kill(leader);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    cluster.find_new_leader(&others, leader, LEADER_WAIT).expect("a new leader");
    let mut client = wait_token_accepted(&cluster, others[0], &token);
    client.put(b"k", b"after the leader died").unwrap();
    for i in others {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_leader(LEADER_WAIT);
    for i in 0..3 {
        wait_token_accepted(&cluster, i, &token);
    }
    let mut root = login(&cluster, "root", ROOT_PASSWORD).unwrap();
    let passwd = proto::UserChangePasswordRequest { name: "u".into(), password: "new-pw".into() };
    request(&mut root, Request::UserChangePassword(passwd)).unwrap();
    let refused = with_token(&cluster, 0, &token).unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidAuthToken), "{refused}");
    assert!(login(&cluster, "u", "new-pw").is_ok());
}

#[test]
fn a_client_holding_a_password_logs_in_again_when_its_token_expires() {
    let cluster = start("auth_relogin", 1, &["--auth-token-ttl", "1"]);
    set_up(&cluster, &[("u", perm(PermissionType::ReadWrite, "k", b""))]);
    let mut user = as_user(&cluster, "u");
    user.put(b"k", b"1").unwrap();
    let first = user.config().credentials.as_ref().unwrap().token.clone();
    sleep(Duration::from_millis(1_500));
    user.put(b"k", b"2").unwrap();
    let second = user.config().credentials.as_ref().unwrap().token.clone();
    assert_ne!(first, second, "a new login gave a new token");
    let expired = with_token(&cluster, 0, first.as_deref().unwrap());
    assert_eq!(expired.unwrap_err().code(), Some(ErrorCode::InvalidAuthToken));
}

fn auth_view(client: &mut Client) -> String {
    let users = request(client, Request::UserList).unwrap();
    let roles = request(client, Request::RoleList).unwrap();
    let role = request(client, Request::RoleGet(proto::RoleRequest { role: "u-role".into() }));
    let status = request(client, Request::AuthStatus).unwrap();
    let strip = |r: Response| {
        format!("{r:?}")
            .split("header")
            .nth(1)
            .map(|s| s.split_once('}').map_or(s.to_string(), |(_, rest)| rest.to_string()))
    };
    format!("{:?} {:?} {:?} {:?}", strip(users), strip(roles), role.map(strip), strip(status))
}

#[test]
fn the_auth_state_is_alike_on_every_member_and_survives_snapshots() {
    let mut cluster = start("auth_snapshots", 3, &["--snapshot-count", "20"]);
    let mut root = set_up(&cluster, &[("u", perm(PermissionType::ReadWrite, "k", b"l"))]);
    // More entries than several snapshots hold, with auth changes among them.
    for i in 0..60 {
        request(&mut root, put(&format!("k{i}"))).unwrap();
        if i % 15 == 0 {
            let role = proto::RoleRequest { role: format!("extra{i}") };
            request(&mut root, Request::RoleAdd(role)).unwrap();
        }
    }
    let index = cluster.status(0).unwrap().raft_applied_index;
    for i in 0..3 {
        cluster.wait_applied(i, index, LEADER_WAIT);
    }
    let token = token_of(&cluster, "root", ROOT_PASSWORD);
    let views: Vec<String> =
        (0..3).map(|i| auth_view(&mut wait_token_accepted(&cluster, i, &token))).collect();
    assert!(views[0].contains("extra45") && views[0].contains("u-role"), "{}", views[0]);
    assert!(views.iter().all(|v| *v == views[0]), "{views:#?}");
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        let snaps =
            std::fs::read_dir(cluster.data_dir(i).join("snap")).map(|d| d.count()).unwrap_or(0);
        assert!(snaps > 0, "member {i} took no snapshot");
        cluster.spawn(i);
    }
    cluster.wait_leader(LEADER_WAIT);
    for i in 0..3 {
        let view = auth_view(&mut wait_token_accepted(&cluster, i, &token));
        assert_eq!(view, views[0], "member {i} after a restart from its snapshot");
    }
}

#[test]
fn the_command_line_as_etcdctl() {
    let cluster = start("auth_cli", 1, &[]);
    let at = cluster.endpoints()[0].clone();
    let ok = |args: &[&str]| node::ok(&at, args);
    assert_eq!(ok(&["user", "add", "root", "--new-user-password", "pw"]), "User root created\n");
    assert_eq!(ok(&["user", "grant-role", "root", "root"]), "Role root is granted to user root\n");
    assert_eq!(ok(&["role", "add", "app"]), "Role app created\n");
    assert_eq!(
        ok(&["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"]),
        "Role app updated\n"
    );
    assert_eq!(ok(&["user", "add", "alice:apw"]), "User alice created\n");
    ok(&["user", "grant-role", "alice", "app"]);
    assert_eq!(ok(&["auth", "enable"]), "Authentication Enabled\n");
    let denied = node::ember(&at, &["put", "/app/x", "1"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(stderr(&denied).contains("etcdserver: invalid auth token"), "{}", stderr(&denied));
    assert_eq!(ok(&["--user", "alice:apw", "put", "/app/x", "1"]), "OK\n");
    let outside = node::ember(&at, &["--user", "alice:apw", "put", "/etc/x", "1"]);
    assert!(stderr(&outside).contains("etcdserver: permission denied"), "{}", stderr(&outside));
    assert_eq!(
        ok(&["--user", "root", "--password", "pw", "role", "get", "app"]),
        "Role app\nKV Read:\n\t[/app/, /app0) (prefix /app/)\nKV Write:\n\t[/app/, /app0) (prefix /app/)\n"
    );
    let json = ok(&["--user", "root:pw", "user", "get", "alice", "-w", "json"]);
    assert!(json.contains("\"roles\":[\"app\"]"), "{json}");
    let listed = ok(&["--user", "root:pw", "user", "list", "-w", "table"]);
    assert!(listed.contains("| alice |"), "{listed}");
    let status = node::ember_with_stdin(&at, &["--user", "root", "auth", "status"], b"pw\n");
    assert_eq!(
        stdout(&status),
        "Authentication Status: true\nAuthRevision: 7\n",
        "{}",
        stderr(&status)
    );
    assert_eq!(ok(&["--user", "root:pw", "auth", "disable"]), "Authentication Disabled\n");
    assert_eq!(ok(&["put", "/etc/x", "1"]), "OK\n");
}
