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
    AlarmAction, AlarmMember, AlarmType, CompareResult, CompareTarget, DeleteRangeRequest,
    ErrorCode, GrpcCode, PutRequest, RequestOp, TxnRequest,
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
    // The member has room, but an operator's alarm is not its disk's to
    // clear: it stays past two disk checks (one a second).
    sleep(Duration::from_millis(2_200));
    for endpoint in &endpoints {
        assert_eq!(ok(endpoint, &["alarm", "list"]), line);
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

/// The `quota:` log line each member writes when an entry raises NOSPACE:
/// the same index and revision on every member.
fn quota_line(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("quota:") && l.contains("NOSPACE raised"))?;
    Some(line[line.find("at index")?..].to_string())
}

/// Puts 4 KB values under `prefix` until one is refused; the number put.
fn fill(client: &mut Client, prefix: &str) -> usize {
    let value = vec![b'x'; 4000];
    for i in 0..200 {
        match client.put(format!("{prefix}{i}").as_bytes(), &value) {
            Ok(_) => {}
            Err(error) => {
                assert_eq!(error.code(), Some(ErrorCode::NoSpace), "{error}");
                assert!(error.to_string().contains("database space exceeded"), "{error}");
                return i;
            }
        }
    }
    panic!("200 puts of 4 KB passed a quota of {QUOTA_BYTES} bytes");
}

const QUOTA_BYTES: u64 = 64 * 1024;

#[test]
fn a_quota_filled_by_puts_raises_nospace_everywhere_and_compaction_clears_it() {
    let quota = QUOTA_BYTES.to_string();
    let cluster = Cluster::start("alarms-quota", 3, &["--quota-backend-bytes", &quota]);
    cluster.wait_leader(WAIT);
    let endpoints = cluster.endpoints();
    let mut client = cluster.client(0);
    let put = fill(&mut client, "fill/");
    assert!((10..=16).contains(&put), "{put} puts of 4 KB fit in {QUOTA_BYTES} bytes");

    // Every member raised NOSPACE for every member, at the same entry.
    let ids: Vec<u64> = (0..3).map(|i| cluster.status(i).unwrap().header.member_id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    let all: String = sorted.iter().map(|id| format!("memberID:{id} alarm:NOSPACE \n")).collect();
    for endpoint in &endpoints {
        wait_list(endpoint, &all);
    }
    let lines: Vec<Option<String>> = (0..3).map(|i| quota_line(&cluster.log_of(i))).collect();
    assert!(lines[0].is_some() && lines.iter().all(|l| *l == lines[0]), "{lines:?}");
    let status = ok(&endpoints[1], &["endpoint", "status", "-w", "json"]);
    let size: u64 = status
        .split("\"dbSize\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{status}"));
    assert!(size > QUOTA_BYTES - 8000 && size <= QUOTA_BYTES, "dbSize {size}: {status}");

    // Reads, deletes and compaction still work; puts do not.
    assert_eq!(client.get(b"fill/0").unwrap().unwrap().value.len(), 4000);
    assert_eq!(client.put(b"small", b"v").unwrap_err().code(), Some(ErrorCode::NoSpace));
    let all_filled =
        DeleteRangeRequest { key: b"fill/".to_vec(), range_end: b"fill0".to_vec(), prev_kv: false };
    assert_eq!(client.delete_range(all_filled).unwrap().deleted as usize, put);
    // Deleting alone frees nothing until the history is compacted.
    assert_eq!(client.put(b"small", b"v").unwrap_err().code(), Some(ErrorCode::NoSpace));
    let revision = client.status().unwrap().header.revision;
    client.compact(revision, false).unwrap();
    for endpoint in &endpoints {
        wait_list(endpoint, "");
    }
    client.put(b"small", b"v").unwrap();

    // Filled again, disarm clears it at once, and the next put that would
    // pass the quota raises it again.
    fill(&mut client, "again/");
    for endpoint in &endpoints {
        wait_list(endpoint, &all);
    }
    assert_eq!(ok(&endpoints[2], &["alarm", "disarm"]), all);
    for endpoint in &endpoints {
        wait_list(endpoint, "");
    }
    assert!(health(&endpoints[0]).starts_with("HTTP/1.1 200"));
    fill(&mut client, "third/");
    wait_list(&endpoints[0], &all);
}
