//! Alarms on a real three-member cluster: a raise is replicated to every
//! member; while `NOSPACE` is raised the writes that take room are refused
//! with etcd's error and code and everything else is served; endpoint
//! status and `/health` name the alarm; `alarm list` and `alarm disarm`
//! print what etcdctl prints; an alarm survives a restart; with access
//! control on only root may raise or clear one.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, Credentials};
use ember::proto::{
    AlarmAction, AlarmMember, AlarmType, CompareResult, CompareTarget, ErrorCode, GrpcCode,
    PutRequest, RequestOp, TxnRequest,
};
use support::cli::node::{ember, ok};
use support::cli::{stderr, stdout};
use support::cluster::Cluster;

const WAIT: Duration = Duration::from_secs(10);

fn health(endpoint: &str) -> String {
    let mut socket = TcpStream::connect(endpoint).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    socket.read_to_end(&mut bytes).unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Waits until `ember alarm list` at `endpoint` prints `expected` (a
/// member that restarts answers once it listens again).
fn wait_list(endpoint: &str, expected: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let output = ember(endpoint, &["alarm", "list"]);
        let listed = stdout(&output) + &stderr(&output);
        if output.status.success() && listed == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{endpoint} lists {listed:?}, not {expected:?}");
        sleep(Duration::from_millis(50));
    }
}

fn nested_put() -> TxnRequest {
    let put = PutRequest { key: b"deep".to_vec(), value: b"v".to_vec(), ..Default::default() };
    let inner = TxnRequest { failure: vec![RequestOp::Put(put)], ..Default::default() };
    TxnRequest {
        compare: vec![ember::proto::Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: b"absent".to_vec(),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp::Txn(TxnRequest {
            success: vec![RequestOp::Txn(inner)],
            ..Default::default()
        })],
        failure: Vec::new(),
    }
}

#[test]
fn a_nospace_alarm_refuses_writes_that_take_room_until_disarmed() {
    let mut cluster = Cluster::start("alarms-nospace", 3, &[]);
    let leader = cluster.wait_leader(WAIT);
    let endpoints = cluster.endpoints();
    let mut client = cluster.client(0);
    client.put(b"kept", b"v").unwrap();
    client.put(b"gone", b"v").unwrap();
    let member = cluster.status(1).unwrap().header.member_id;
    let raised = AlarmMember { member_id: member, alarm: AlarmType::NoSpace };
    let answer = client.alarm_change(AlarmAction::Activate, raised).unwrap();
    assert_eq!(answer.alarms, vec![raised]);

    // Every member applied it and lists it alike.
    let line = format!("memberID:{member} alarm:NOSPACE \n");
    for endpoint in &endpoints {
        wait_list(endpoint, &line);
    }
    let json = ok(&endpoints[2], &["alarm", "list", "-w", "json"]);
    assert_eq!(json, format!("{{\"alarms\":[{{\"memberID\":{member},\"alarm\":1}}]}}\n"));
    let fields = ok(&endpoints[2], &["alarm", "list", "-w", "fields"]);
    assert_eq!(fields, format!("\"MemberID\" : {member}\n\"AlarmType\" : NOSPACE\n"));
    let table = ember(&endpoints[2], &["alarm", "list", "-w", "table"]);
    assert_eq!(table.status.code(), Some(2), "{}", stderr(&table));

    // Writes that take room are refused at every member, with etcd's text.
    let put = client.put(b"new", b"v").unwrap_err();
    assert_eq!(put.code(), Some(ErrorCode::NoSpace), "{put}");
    assert_eq!(ErrorCode::NoSpace.grpc(), GrpcCode::ResourceExhausted);
    let refused = ember(&endpoints[leader], &["put", "new", "v"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("etcdserver: mvcc: database space exceeded"),
        "{}",
        stderr(&refused)
    );
    let txn = client.txn(nested_put()).unwrap_err();
    assert_eq!(txn.code(), Some(ErrorCode::NoSpace), "{txn}");
    let grant = client.lease_grant(60, 0).unwrap_err();
    assert_eq!(grant.code(), Some(ErrorCode::NoSpace), "{grant}");

    // Reads, deletes and compaction are served.
    assert_eq!(client.get(b"kept").unwrap().unwrap().value, b"v");
    assert_eq!(client.delete(b"gone").unwrap(), 1);
    let revision = client.status().unwrap().header.revision;
    client.compact(revision, false).unwrap();
    assert_eq!(client.get(b"new").unwrap(), None);

    // Status lists it as its errors, health names it.
    let status = ok(&endpoints[0], &["endpoint", "status", "-w", "json"]);
    assert!(
        status.contains(&format!("\"errors\":[\"memberID:{member} alarm:NOSPACE \"]")),
        "{status}"
    );
    for endpoint in &endpoints {
        let answer = health(endpoint);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.ends_with("\"reason\":\"ALARM NOSPACE\"}"), "{answer}");
    }

    // The alarm is in the log: a member that restarts still has it.
    cluster.kill(2);
    cluster.spawn(2);
    wait_list(&endpoints[2], &line);
    // A write proposed while no leader is known waits until it times out.
    cluster.wait_leader(WAIT);

    // Disarm prints what it cleared; then writes pass again.
    assert_eq!(ok(&endpoints[0], &["alarm", "disarm"]), line);
    for endpoint in &endpoints {
        wait_list(endpoint, "");
    }
    assert_eq!(ok(&endpoints[0], &["alarm", "disarm", "-w", "json"]), "{}\n");
    client.put(b"new", b"v").unwrap();
    client.txn(nested_put()).unwrap();
    assert!(health(&endpoints[0]).starts_with("HTTP/1.1 200"));
    let status = ok(&endpoints[0], &["endpoint", "status", "-w", "json"]);
    assert!(!status.contains("errors"), "{status}");
}

#[test]
fn alarms_name_a_member_and_a_kind_and_only_root_changes_them() {
    let cluster = Cluster::start("alarms-auth", 1, &[]);
    cluster.wait_leader(WAIT);
    let endpoint = cluster.endpoints()[0].clone();
    let mut client = cluster.client(0);
    let me = client.status().unwrap().header.member_id;
    let stranger = AlarmMember { member_id: me ^ 1, alarm: AlarmType::Corrupt };
    let error = client.alarm_change(AlarmAction::Activate, stranger).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::MemberNotFound), "{error}");
    let none = AlarmMember { member_id: me, alarm: AlarmType::None };
    let error = client.alarm_change(AlarmAction::Activate, none).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AlarmNotGiven), "{error}");
    // Clearing what is not raised answers no alarm, as etcd.
    let corrupt = AlarmMember { member_id: me, alarm: AlarmType::Corrupt };
    assert!(client.alarm_change(AlarmAction::Deactivate, corrupt).unwrap().alarms.is_empty());

    // A corrupt alarm for this member makes it unhealthy, by name.
    client.alarm_change(AlarmAction::Activate, corrupt).unwrap();
    let answer = health(&endpoint);
    assert!(answer.ends_with("\"reason\":\"ALARM CORRUPT\"}"), "{answer}");
    client.alarm_change(AlarmAction::Deactivate, corrupt).unwrap();

    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "bob:bobpw"],
        &["auth", "enable"],
    ] {
        ok(&endpoint, args);
    }
    ok(&endpoint, &["--user", "root:rootpw", "alarm", "list"]);
    let raised = AlarmMember { member_id: me, alarm: AlarmType::NoSpace };
    let mut config = cluster.client_config(0);
    config.credentials =
        Some(Credentials { user: "root".into(), password: Some("rootpw".into()), token: None });
    let mut root = Client::connect(config).unwrap();
    root.alarm_change(AlarmAction::Activate, raised).unwrap();
    // Bob may look but not clear.
    let listed = ok(&endpoint, &["--user", "bob:bobpw", "alarm", "list"]);
    assert_eq!(listed, format!("memberID:{me} alarm:NOSPACE \n"));
    let refused = ember(&endpoint, &["--user", "bob:bobpw", "alarm", "disarm"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(stderr(&refused).contains("permission denied"), "{}", stderr(&refused));
    // A put by a user without the right is refused for the right, not the
    // space: the permission check never lapses.
    let put = ember(&endpoint, &["--user", "bob:bobpw", "put", "k", "v"]);
    assert!(stderr(&put).contains("permission denied"), "{}", stderr(&put));
    let cleared = ok(&endpoint, &["--user", "root:rootpw", "alarm", "disarm"]);
    assert_eq!(cleared, listed);
}
