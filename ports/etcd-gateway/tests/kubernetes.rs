//! The requests Kubernetes' apiserver sends, through etcd's own Rust
//! client, against real Ember members behind a real gateway.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchResponse,
};
use support::{Cluster, grpc_status};
use tonic::Code;

#[tokio::test]
async fn ranges_list_page_count_and_read_at_a_revision() {
    let cluster = Cluster::start("ranges", 1);
    let mut client = cluster.client().await;
    for name in ["a", "b", "c", "d", "e"] {
        client.put(format!("/registry/pods/{name}"), name, None).await.unwrap();
    }
    let first = client.get("/registry/pods/a", None).await.unwrap();
    let created_at = first.kvs()[0].mod_revision();
    client.put("/registry/pods/a", "a2", None).await.unwrap();

    let page = GetOptions::new().with_prefix().with_limit(2);
    let listed = client.get("/registry/pods/", Some(page)).await.unwrap();
    assert_eq!((listed.kvs().len(), listed.more(), listed.count()), (2, true, 5));
    let counted = client
        .get("/registry/pods/", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!((counted.count(), counted.kvs().len()), (5, 0));
    let keys = client
        .get("/registry/pods/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .unwrap();
    assert!(keys.kvs().iter().all(|kv| kv.value().is_empty()));
    assert_eq!(keys.kvs()[4].key(), b"/registry/pods/e");
    let old = client
        .get("/registry/pods/a", Some(GetOptions::new().with_revision(created_at)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"a");
    let header = old.header().unwrap();
    assert!(header.cluster_id() != 0 && header.member_id() != 0 && header.raft_term() != 0);
    assert_eq!(header.revision(), created_at + 5);
}

/// The apiserver's optimistic writes: create if absent, update or delete
/// if unchanged, and read the current value when the compare fails.
#[tokio::test]
async fn the_apiservers_three_txn_shapes() {
    let cluster = Cluster::start("txn", 1);
    let mut client = cluster.client().await;
    let key = "/registry/configmaps/default/x";
    let lease = client.lease_grant(60, None).await.unwrap().id();
    let create = || {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, "v1", Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)])
    };
    let created = client.txn(create()).await.unwrap();
    assert!(created.succeeded());
    let revision = created.header().unwrap().revision();
    let again = client.txn(create()).await.unwrap();
    assert!(!again.succeeded());
    let TxnOpResponse::Get(current) = &again.op_responses()[0] else { panic!("a range answer") };
    assert_eq!((current.kvs()[0].value(), current.kvs()[0].lease()), (&b"v1"[..], lease));

    let update = |at: i64| {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, at)])
            .and_then([TxnOp::put(key, "v2", None)])
            .or_else([TxnOp::get(key, None)])
    };
    assert!(!client.txn(update(revision - 1)).await.unwrap().succeeded());
    let updated = client.txn(update(revision)).await.unwrap();
    assert!(updated.succeeded());
    let revision = updated.header().unwrap().revision();

    let delete = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
        .and_then([TxnOp::delete(key, None)])
        .or_else([TxnOp::get(key, None)]);
    let deleted = client.txn(delete).await.unwrap();
    let TxnOpResponse::Delete(gone) = &deleted.op_responses()[0] else { panic!("a delete") };
    assert_eq!(gone.deleted(), 1);
    assert!(client.get(key, None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn errors_carry_etcds_codes_and_text() {
    let cluster = Cluster::start("errors", 1);
    let mut client = cluster.client().await;
    for i in 0..4 {
        client.put("k", format!("v{i}"), None).await.unwrap();
    }
    client.compact(3, None).await.unwrap();
    let expect = |result: Result<(), etcd_client::Error>, code: Code, text: &str| {
        let status = grpc_status(result.unwrap_err());
        assert_eq!((status.code(), status.message()), (code, text));
    };
    let at = |revision| Some(GetOptions::new().with_revision(revision));
    let compacted = client.get("k", at(2)).await.map(drop);
    expect(compacted, Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted");
    let future = client.get("k", at(100)).await.map(drop);
    expect(future, Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision");
    let empty = client.put("", "v", None).await.map(drop);
    expect(empty, Code::InvalidArgument, "etcdserver: key is not provided");
    let puts: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("k{i}"), "v", None)).collect();
    let too_many = client.txn(Txn::new().and_then(puts)).await.map(drop);
    expect(too_many, Code::InvalidArgument, "etcdserver: too many operations in txn request");
    let twice = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    let duplicate = client.txn(twice).await.map(drop);
    expect(duplicate, Code::InvalidArgument, "etcdserver: duplicate key given in txn request");
    let large = client.put("big", vec![b'x'; 1600 * 1024], None).await.map(drop);
    expect(large, Code::InvalidArgument, "etcdserver: request is too large");
    let missing = client.lease_revoke(12345).await.map(drop);
    expect(missing, Code::NotFound, "etcdserver: requested lease not found");
    let alarm = client.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None);
    assert!(alarm.await.unwrap().alarms().is_empty(), "a healthy cluster raises no alarm");
}

/// Writes go on while a watcher asks for progress again and again: every
/// event arrives once and in order, and a progress notification at R never
/// comes before an event at or below R (kine#731 is this race).
#[tokio::test]
async fn progress_never_overtakes_events_under_writes() {
    let cluster = Cluster::start("progress", 3);
    let mut client = cluster.client().await;
    let start = client.put("/w/start", "0", None).await.unwrap().header().unwrap().revision();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start + 1)
        .with_prev_key()
        .with_progress_notify();
    let mut watch = client.watch("/w/", Some(options)).await.unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    const WRITES: i64 = 300;
    let mut writer = cluster.client().await;
    let writes = tokio::spawn(async move {
        for i in 0..WRITES {
            writer.put(format!("/w/{}", i % 7), i.to_string(), None).await.unwrap();
        }
    });
    let mut next_event = start + 1;
    let mut progress_seen = 0;
    while next_event <= start + WRITES {
        watch.request_progress().await.unwrap();
        let answer = next_message(&mut watch).await;
        if answer.events().is_empty() {
            let revision = answer.header().unwrap().revision();
            assert!(revision < next_event, "progress at {revision} before event {next_event}");
            progress_seen += 1;
        }
        for event in answer.events() {
            let kv = event.kv().unwrap();
            assert_eq!(kv.mod_revision(), next_event, "events skipped or repeated");
            assert_eq!(event.event_type(), EventType::Put);
            if kv.version() > 1 {
                assert!(event.prev_kv().is_some(), "prev_kv asked for");
            }
            next_event += 1;
        }
    }
    writes.await.unwrap();
    assert!(progress_seen > 0, "no progress notification came");
}

async fn next_message(watch: &mut etcd_client::WatchStream) -> WatchResponse {
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
    next.expect("a watch message within 10 s").unwrap().expect("the stream is open")
}

/// One stream, several watches: ids counted from 0 as etcd does, filters,
/// a cancel answered with `canceled`, and a cancel sent before the watch's
/// "created" came back still ends it.
#[tokio::test]
async fn watches_share_a_stream_and_cancel() {
    let cluster = Cluster::start("cancel", 1);
    let mut client = cluster.client().await;
    let mut watch = client.watch("a", None).await.unwrap();
    let first = next_message(&mut watch).await;
    assert_eq!((first.created(), first.watch_id()), (true, 0));
    let no_put = WatchOptions::new().with_filters([etcd_client::WatchFilterType::NoPut]);
    watch.watch("a", Some(no_put)).await.unwrap();
    assert_eq!(next_message(&mut watch).await.watch_id(), 1);
    watch.watch("a", Some(WatchOptions::new().with_watch_id(7))).await.unwrap();
    watch.cancel(7).await.unwrap();
    let created = next_message(&mut watch).await;
    assert_eq!((created.created(), created.watch_id()), (true, 7));
    let cancelled = next_message(&mut watch).await;
    assert_eq!((cancelled.canceled(), cancelled.watch_id()), (true, 7));

    client.put("a", "1", None).await.unwrap();
    client.delete("a", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let answer = next_message(&mut watch).await;
        for event in answer.events() {
            seen.push((answer.watch_id(), event.event_type()));
        }
    }
    seen.sort_by_key(|(id, _)| *id);
    let expected = [(0, EventType::Put), (0, EventType::Delete), (1, EventType::Delete)];
    assert_eq!(seen, expected);
    watch.cancel(0).await.unwrap();
    let cancelled = next_message(&mut watch).await;
    assert_eq!((cancelled.canceled(), cancelled.watch_id()), (true, 0));
}

/// A watch opened with `hasleader` (as the apiserver's are) ends with
/// etcd's "no leader" once its member has lost the leader, so the client
/// can go to a member that has one instead of waiting on a silent stream.
#[tokio::test]
async fn a_watch_that_requires_a_leader_ends_when_the_member_loses_it() {
    let mut cluster = Cluster::start("hasleader", 3);
    let only_first = format!("127.0.0.1:{}", cluster.members[0].client_port);
    cluster.spawn_gateway(&["--endpoints", &only_first]);
    cluster.client().await;
    let options = etcd_client::ConnectOptions::new().with_require_leader(true);
    let endpoint = [cluster.gateway_endpoint()];
    let mut client = etcd_client::Client::connect(endpoint, Some(options)).await.unwrap();
    let mut watch = client.watch("k", None).await.unwrap();
    assert!(next_message(&mut watch).await.created());
    cluster.kill_member(1);
    cluster.kill_member(2);
    let ended = tokio::time::timeout(Duration::from_secs(20), watch.message()).await;
    let status = grpc_status(ended.expect("the stream ends within 20 s").unwrap_err());
    assert_eq!((status.code(), status.message()), (Code::Unavailable, "etcdserver: no leader"));
}

/// A member that stops answering (SIGSTOP) costs a read one request
/// timeout; the read is then served by the next member, and so are the
/// requests after it. The stopped member is a follower, so no election
/// interferes.
#[tokio::test]
async fn reads_move_on_from_a_member_that_stopped_answering() {
    let mut cluster = Cluster::start("stopped", 3);
    let leader = cluster.client().await.status().await.unwrap().leader();
    let mut client = cluster.client().await;
    let members = client.member_list().await.unwrap();
    let follower = members.members().iter().find(|m| m.id() != leader).unwrap();
    let index = cluster.members.iter().position(|m| m.name == follower.name()).unwrap();
    let (follower_id, first) =
        (follower.id(), format!("127.0.0.1:{}", cluster.members[index].client_port));
    let all: Vec<String> =
        cluster.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect();
    let endpoints = format!("{first},{}", all.join(","));
    cluster.spawn_gateway(&["--endpoints", &endpoints, "--request-timeout-ms", "1000"]);
    let mut client = cluster.client().await;
    client.put("k", "v", None).await.unwrap();
    // A read is answered by the member the gateway's shared link reaches
    // (Status answers from the leader, so it cannot tell).
    let read = client.get("k", None).await.unwrap();
    assert_eq!(read.header().unwrap().member_id(), follower_id);

    cluster.signal_member(index, "-STOP");
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), client.get("k", None)).await;
    cluster.signal_member(index, "-CONT");
    let got = got.expect("an answer within 10 s").unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
    assert_ne!(got.header().unwrap().member_id(), follower_id);
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
}

/// A revision whose events outgrow etcd's 1.5 MiB cut (a prefix delete
/// with prev_kv) reaches a watch created with `fragment` in parts, no
/// event lost.
#[tokio::test]
async fn large_answers_come_in_fragments() {
    let cluster = Cluster::start("fragment", 1);
    let mut client = cluster.client().await;
    for i in 0..4 {
        client.put(format!("big/{i}"), vec![b'x'; 1 << 20], None).await.unwrap();
    }
    let options = WatchOptions::new().with_prefix().with_prev_key().with_fragment();
    let mut watch = client.watch("big/", Some(options)).await.unwrap();
    assert!(next_message(&mut watch).await.created());
    client.delete("big/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
    // The node keeps a revision's events in one message; only fragmenting
    // spreads them over several (and without it the 4 MiB answer would
    // exceed the client's default 4 MiB limit). etcd-client shows no
    // fragment flag, so the parts are counted.
    let mut events = 0;
    let mut parts = 0;
    while events < 4 {
        events += next_message(&mut watch).await.events().len();
        parts += 1;
    }
    assert_eq!(events, 4);
    assert!(parts >= 3, "{parts} parts");
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let cluster = Cluster::start("compacted", 3);
    let mut client = cluster.client().await;
    for i in 0..5 {
        client.put("c", i.to_string(), None).await.unwrap();
    }
    client.compact(4, None).await.unwrap();
    let options = WatchOptions::new().with_start_revision(2);
    let mut watch = client.watch("c", Some(options)).await.unwrap();
    let mut answer = next_message(&mut watch).await;
    if answer.created() && !answer.canceled() {
        answer = next_message(&mut watch).await;
    }
    assert!(answer.canceled());
    assert_eq!(answer.compact_revision(), 4);
}

/// A lease the apiserver granted (and never renews) expires: its keys go,
/// and watchers see DELETE events.
#[tokio::test]
async fn an_expired_lease_deletes_its_keys_with_delete_events() {
    let cluster = Cluster::start("lease", 3);
    let mut client = cluster.client().await;
    let lease = client.lease_grant(2, None).await.unwrap().id();
    let put = PutOptions::new().with_lease(lease);
    client.put("/events/e1", "x", Some(put.clone())).await.unwrap();
    client.put("/events/e2", "y", Some(put)).await.unwrap();
    let live = client
        .lease_time_to_live(lease, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
        .await;
    assert_eq!(live.unwrap().keys().len(), 2);
    let mut watch =
        client.watch("/events/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    assert!(next_message(&mut watch).await.created());

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        assert!(Instant::now() < deadline, "the lease did not expire");
        for event in next_message(&mut watch).await.events() {
            assert_eq!(event.event_type(), EventType::Delete);
            deleted.push(event.kv().unwrap().key().to_vec());
        }
    }
    deleted.sort();
    assert_eq!(deleted, [b"/events/e1".to_vec(), b"/events/e2".to_vec()]);
    let left = client.get("/events/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert!(left.kvs().is_empty());
    assert_eq!(client.lease_time_to_live(lease, None).await.unwrap().ttl(), -1);
}

#[tokio::test]
async fn keep_alives_renew_a_lease_over_the_stream() {
    let cluster = Cluster::start("keepalive", 1);
    let mut client = cluster.client().await;
    let lease = client.lease_grant(3, None).await.unwrap().id();
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await.unwrap();
    for _ in 0..3 {
        keeper.keep_alive().await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!((answer.id(), answer.ttl()), (lease, 3));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let leases = client.leases().await.unwrap();
    assert_eq!(leases.leases().iter().map(|l| l.id()).collect::<Vec<_>>(), [lease]);
    client.lease_revoke(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(answers.message().await.unwrap().unwrap().ttl(), 0);
}

#[tokio::test]
async fn status_members_and_hash_describe_the_cluster() {
    let mut cluster = Cluster::start("status", 3);
    cluster.spawn_gateway(&["--etcd-version", "3.5.21"]);
    let mut client = cluster.client().await;
    // dbSize is the store's size as the quota counts it: one key makes it
    // nonzero.
    client.put("/registry/status", "up", None).await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.version(), "3.5.21");
    assert!(status.raft_index() > 0 && status.db_size() > 0);
    let members = client.member_list().await.unwrap();
    let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    names.sort();
    assert_eq!(names, ["n1", "n2", "n3"]);
    // etcd clients reach every member through the gateway, so that is the
    // client URL the list gives them.
    let gateway_url = format!("http://{}", cluster.gateway_endpoint());
    for member in members.members() {
        assert_eq!(member.client_urls(), std::slice::from_ref(&gateway_url), "{}", member.name());
    }
    let revision = client.put("h", "1", None).await.unwrap().header().unwrap().revision();
    let hash = client.hash_kv(revision).await.unwrap();
    assert_eq!(hash.hash_revision(), revision);
    let auth = grpc_status(client.auth_enable().await.unwrap_err());
    assert_eq!(auth.code(), Code::FailedPrecondition);
    assert_eq!(auth.message(), "etcdserver: root user does not exist");
}

/// Plain HTTP/1.1 on the gRPC port, as kubeadm and load balancers probe it.
#[test]
fn version_and_health_answer_plain_http() {
    let cluster = Cluster::start("http", 1);
    // Not decided until the member has published its version and the
    // cluster version is applied: moments after it starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let version = http_get(&cluster.gateway_endpoint(), "/version");
        assert!(version.starts_with("HTTP/1.1 200"), "{version}");
        if version.ends_with(r#"{"etcdserver":"3.5.13","etcdcluster":"3.5.0"}"#) {
            break;
        }
        let undecided = r#"{"etcdserver":"3.5.13","etcdcluster":"not_decided"}"#;
        assert!(version.ends_with(undecided), "{version}");
        assert!(Instant::now() < deadline, "never decided: {version}");
        std::thread::sleep(Duration::from_millis(100));
    }
    loop {
        let health = http_get(&cluster.gateway_endpoint(), "/health");
        if health.ends_with(r#"{"health":"true","reason":""}"#) {
            assert!(health.starts_with("HTTP/1.1 200"), "{health}");
            break;
        }
        assert!(Instant::now() < deadline, "never healthy: {health}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(endpoint: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(endpoint).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}
