//! The Rust client against a scripted fake server: handshake, pipelining
//! with answers out of order, failover, unknown outcomes, error codes,
//! timeouts and watch streams.

mod client_fake;

use std::net::TcpListener;
use std::time::Duration;

use client_fake::*;
use ember::client::{Client, ClientError, Config, ConnectOptions, Connection};
use ember::proto::*;

fn config(endpoints: &[&str]) -> Config {
    let mut config = Config::new(endpoints.iter().map(|e| e.to_string()).collect());
    config.dial_timeout = Duration::from_millis(500);
    config.command_timeout = Duration::from_secs(3);
    config
}

fn put_response(member_id: u64, revision: i64) -> Response {
    Response::Put(PutResponse { header: header(member_id, revision), prev_kv: None })
}

fn range_response(member_id: u64, key: &[u8], value: &[u8]) -> Response {
    let kv = KeyValue { key: key.to_vec(), value: value.to_vec(), ..KeyValue::default() };
    Response::Range(RangeResponse {
        header: header(member_id, 5),
        kvs: vec![kv],
        more: false,
        count: 1,
    })
}

#[test]
fn the_handshake_announces_the_limit_and_learns_the_member() {
    let (address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 0xA1);
        assert_eq!(peer.hello, ClientHello::new(ember::client::RESPONSE_BYTES_MAX_DEFAULT));
        let (id, request) = peer.read_request().unwrap();
        assert_eq!(id, 1, "request ids start at 1");
        assert_eq!(request, Request::Status);
        peer.respond(
            id,
            &Response::Status(StatusResponse {
                header: header(0xA1, 9),
                leader_id: 0xA1,
                ..StatusResponse::default()
            }),
        );
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    assert_eq!(client.member_id(), Some(0xA1));
    let status = client.status().unwrap();
    assert_eq!((status.header.revision, status.leader_id), (9, 0xA1));
    server.join().unwrap();
}

#[test]
fn a_refused_handshake_moves_on_to_the_next_endpoint() {
    let (refusing, first) = scripted(|listener| {
        let (mut stream, _) = listener.accept().unwrap();
        let mut hello = [0u8; CLIENT_HELLO_BYTES];
        std::io::Read::read_exact(&mut stream, &mut hello).unwrap();
        let refusal = ServerHello::Refused {
            reason: Refusal::TooManyConnections,
            server_min_version: 1,
            server_max_version: 1,
        };
        std::io::Write::write_all(&mut stream, &refusal.encode(&server_params(1))).unwrap();
    });
    let store = FakeStore::default();
    let second = store.serve(2);
    let client = Client::connect(config(&[&refusing, &second])).unwrap();
    assert_eq!(client.endpoint(), Some(second.as_str()));
    first.join().unwrap();
}

#[test]
fn pipelined_answers_out_of_order_are_matched_by_id() {
    let (address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        let requests: Vec<(u64, Request)> = (0..3).map(|_| peer.read_request().unwrap()).collect();
        // Answer last first: the ids, not the order, tie answers to requests.
        for (id, request) in requests.iter().rev() {
            match request {
                Request::Put(_) => peer.respond(*id, &put_response(1, 7)),
                Request::Range(range) => peer.respond(*id, &range_response(1, &range.key, b"v")),
                Request::Status => peer.fail(*id, ErrorCode::NoLeader),
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    let put = Request::Put(PutRequest { key: b"a".to_vec(), ..PutRequest::default() });
    let get = Request::Range(RangeRequest { key: b"b".to_vec(), ..RangeRequest::default() });
    let results = client.pipeline(&[put, get, Request::Status]);
    assert!(matches!(&results[0], Ok(Response::Put(p)) if p.header.revision == 7));
    assert!(matches!(&results[1], Ok(Response::Range(r)) if r.kvs[0].key == b"b"));
    assert_eq!(results[2].as_ref().unwrap_err().code(), Some(ErrorCode::NoLeader));
    server.join().unwrap();
}

#[test]
fn a_connection_keeps_many_requests_in_flight_within_its_window() {
    let (address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        let ids: Vec<u64> = (0..4).map(|_| peer.read_request().unwrap().0).collect();
        for id in [ids[2], ids[0], ids[3], ids[1]] {
            peer.respond(id, &put_response(1, id as i64));
        }
    });
    let options = ConnectOptions { max_in_flight: 4, ..ConnectOptions::default() };
    let mut connection = Connection::connect(&address, &options).unwrap();
    let put = Request::Put(PutRequest { key: b"k".to_vec(), ..PutRequest::default() });
    let sent: Vec<u64> = (0..4).map(|_| connection.send(&put).unwrap()).collect();
    let full = connection.send(&put);
    assert!(matches!(full, Err(ClientError::WindowFull { in_flight: 4, .. })), "{full:?}");
    let mut answered = Vec::new();
    while connection.in_flight() > 0 {
        match connection.recv(None).unwrap() {
            ServerMessage::Response { request_id, .. } => answered.push(request_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered, [sent[2], sent[0], sent[3], sent[1]]);
    server.join().unwrap();
}

#[test]
fn a_down_endpoint_is_skipped() {
    let store = FakeStore::default();
    let live = store.serve(2);
    let dead = dead_endpoint();
    let mut client = Client::connect(config(&[&dead, &live])).unwrap();
    client.put(b"k", b"v").unwrap();
    assert_eq!(client.endpoint(), Some(live.as_str()));
    assert_eq!(client.get(b"k").unwrap().unwrap().value, b"v");
}

#[test]
fn no_reachable_endpoint_names_every_address_tried() {
    let (first, second) = (dead_endpoint(), dead_endpoint());
    let error = Client::connect(config(&[&first, &second])).unwrap_err();
    let ClientError::Unreachable { tried } = &error else { panic!("{error:?}") };
    assert_eq!(tried.len(), 2);
    let text = error.to_string();
    assert!(text.contains(&first) && text.contains(&second), "{text}");
}

#[test]
fn a_read_is_retried_on_the_next_endpoint_when_its_connection_dies() {
    let (first, dying) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        assert!(matches!(peer.read_request(), Some((_, Request::Range(_)))));
        // Close without answering.
    });
    let store = FakeStore::default();
    store.data.lock().unwrap().insert(b"k".to_vec(), b"from-second".to_vec());
    let second = store.serve(2);
    let mut client = Client::connect(config(&[&first, &second])).unwrap();
    let kv = client.get(b"k").unwrap().unwrap();
    assert_eq!(kv.value, b"from-second");
    assert_eq!(client.endpoint(), Some(second.as_str()));
    dying.join().unwrap();
}

#[test]
fn a_write_whose_answer_is_lost_has_an_unknown_outcome_and_is_not_resent() {
    let (first, dying) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        assert!(matches!(peer.read_request(), Some((_, Request::Put(_)))));
    });
    let store = FakeStore::default();
    let second = store.serve(2);
    let mut client = Client::connect(config(&[&first, &second])).unwrap();
    let error = client.put(b"k", b"v").unwrap_err();
    assert!(matches!(error, ClientError::OutcomeUnknown { .. }), "{error:?}");
    assert!(error.outcome_unknown());
    assert!(error.to_string().contains("may or may not"), "{error}");
    dying.join().unwrap();
    assert!(store.requests.lock().unwrap().is_empty(), "the write was sent again");
    // The client carries on with the next endpoint.
    client.put(b"k", b"v2").unwrap();
    assert_eq!(client.endpoint(), Some(second.as_str()));
}

#[test]
fn server_error_codes_are_surfaced() {
    let (address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        for code in [ErrorCode::NoLeader, ErrorCode::LeaderChanged, ErrorCode::Compacted] {
            let (id, _) = peer.read_request().unwrap();
            peer.fail(id, code);
        }
        let (id, _) = peer.read_request().unwrap();
        peer.write(&unknown_code_frame(id));
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    let error = client.put(b"k", b"v").unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NoLeader));
    assert!(!error.outcome_unknown());
    let error = client.put(b"k", b"v").unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::LeaderChanged));
    assert!(error.outcome_unknown(), "LeaderChanged leaves a write's outcome open");
    let error = client.get(b"k").unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Compacted));
    let error = client.get(b"k").unwrap_err();
    let ClientError::Server { error: body, .. } = &error else { panic!("{error:?}") };
    assert_eq!((body.code_number, body.code()), (4242, None));
    server.join().unwrap();
}

fn unknown_code_frame(id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let body = ErrorBody { code_number: 4242, message: "from the future".to_string() };
    encode_error(&mut out, id, &body, 1 << 20);
    out
}

#[test]
fn no_answer_within_the_command_timeout() {
    let (address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        assert!(peer.read_request().is_some());
        let mut peer = Peer::accept(&listener, 1);
        assert!(peer.read_request().is_some());
        // Hold both connections open until the client gives up on them.
        assert!(peer.read_request().is_none());
    });
    let mut config = config(&[&address]);
    config.command_timeout = Duration::from_millis(200);
    let mut client = Client::connect(config).unwrap();
    let error = client.get(b"k").unwrap_err();
    assert!(matches!(error, ClientError::Timeout { after_ms: 200, .. }), "{error:?}");
    let error = client.put(b"k", b"v").unwrap_err();
    assert!(matches!(error, ClientError::OutcomeUnknown { .. }), "{error:?}");
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_wrong_answer_type_is_a_protocol_error() {
    let (address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        let (id, _) = peer.read_request().unwrap();
        peer.respond(id, &put_response(1, 3));
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    let error = client.status().unwrap_err();
    assert!(matches!(error, ClientError::Protocol { .. }), "{error:?}");
    server.join().unwrap();
}

#[test]
fn an_answer_larger_than_the_read_buffer_arrives_whole() {
    let big = vec![b'x'; 300 * 1024];
    let value = big.clone();
    let (address, server) = scripted(move |listener| {
        let mut peer = Peer::accept(&listener, 1);
        let (id, _) = peer.read_request().unwrap();
        peer.respond(id, &range_response(1, b"big", &value));
        let (id, _) = peer.read_request().unwrap();
        peer.respond(id, &range_response(1, b"small", b"s"));
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    assert_eq!(client.get(b"big").unwrap().unwrap().value, big);
    assert_eq!(client.get(b"small").unwrap().unwrap().value, b"s");
    server.join().unwrap();
}

#[test]
fn a_request_over_the_server_limit_is_refused_before_sending() {
    let store = FakeStore::default();
    let address = store.serve(1);
    let mut client = Client::connect(config(&[&address])).unwrap();
    let huge = vec![0u8; REQUEST_BYTES_MAX_DEFAULT as usize + 1];
    let error = client.put(b"k", &huge).unwrap_err();
    assert!(matches!(error, ClientError::TooLarge { .. }), "{error:?}");
    client.put(b"k", b"small").unwrap();
    assert_eq!(store.requests.lock().unwrap().len(), 1);
}

fn event(revision: i64) -> Event {
    let kv = KeyValue {
        key: b"w".to_vec(),
        value: revision.to_string().into_bytes(),
        mod_revision: revision,
        ..KeyValue::default()
    };
    Event { kind: EventKind::Put, kv, prev_kv: None }
}

/// Member 1's side of a watch that starts: the client's own connection,
/// then the watch's, whose create request is answered as watch `watch_id`
/// at `revision`, followed by the event of the next revision.
fn watch_started(listener: &TcpListener, watch_id: u64, revision: i64) -> (Peer, Peer) {
    let client = Peer::accept(listener, 1);
    let mut peer = Peer::accept(listener, 1);
    let (id, _) = peer.read_request().unwrap();
    let created = WatchCreateResponse { header: header(1, revision), watch_id };
    peer.respond(id, &Response::WatchCreate(created));
    let events = vec![event(revision + 1)];
    peer.push(watch_id, &WatchMessage::Events { header: header(1, revision + 1), events });
    (client, peer)
}

/// Member 2's side of a watch that resumes there: the create request must
/// start at `revision`, is answered as watch 1 with the event of that
/// revision, and nothing follows.
fn watch_resumed(listener: &TcpListener, revision: i64) {
    let mut peer = Peer::accept(listener, 2);
    let (id, request) = peer.read_request().unwrap();
    let Request::WatchCreate(create) = request else { panic!("{request:?}") };
    assert_eq!(create.start_revision, revision, "resumes after the last event delivered");
    let created = WatchCreateResponse { header: header(2, revision), watch_id: 1 };
    peer.respond(id, &Response::WatchCreate(created));
    peer.push(
        1,
        &WatchMessage::Events { header: header(2, revision), events: vec![event(revision)] },
    );
    assert!(peer.read_request().is_none());
}

#[test]
fn a_watch_stream_yields_events_progress_and_its_end() {
    let (address, server) = scripted(|listener| {
        // The client's own connection; the watch opens a second one.
        let _client = Peer::accept(&listener, 1);
        let mut peer = Peer::accept(&listener, 1);
        let (id, request) = peer.read_request().unwrap();
        let Request::WatchCreate(create) = request else { panic!("{request:?}") };
        assert_eq!((create.key.as_slice(), create.start_revision), (&b"w"[..], 11));
        peer.respond(
            id,
            &Response::WatchCreate(WatchCreateResponse { header: header(1, 10), watch_id: 7 }),
        );
        peer.push(
            7,
            &WatchMessage::Events { header: header(1, 12), events: vec![event(11), event(12)] },
        );
        peer.push(99, &WatchMessage::Progress { header: header(1, 12) });
        let (id, request) = peer.read_request().unwrap();
        assert_eq!(request, Request::WatchProgress);
        peer.respond(id, &Response::WatchProgress(header(1, 12)));
        peer.push(
            7,
            &WatchMessage::Cancelled {
                header: header(1, 12),
                reason: CancelReason::Compacted,
                compact_revision: 12,
            },
        );
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    let request =
        WatchCreateRequest { key: b"w".to_vec(), start_revision: 11, ..Default::default() };
    let mut watch = client.watch(request).unwrap();
    assert_eq!(watch.watch_id(), 7);
    let Some(Ok(WatchMessage::Events { events, .. })) = watch.next() else { panic!() };
    assert_eq!(events.len(), 2);
    watch.request_progress().unwrap();
    let progress = watch.next().unwrap().unwrap();
    assert_eq!(progress, WatchMessage::Progress { header: header(1, 12) });
    let cancelled = watch.next().unwrap().unwrap();
    assert!(matches!(cancelled, WatchMessage::Cancelled { compact_revision: 12, .. }));
    assert!(watch.next().is_none(), "nothing follows a cancel");
    server.join().unwrap();
}

#[test]
fn a_watch_resumes_on_the_next_endpoint_after_the_last_revision_seen() {
    // The first member goes away right after the event.
    let (first, dying) = scripted(|listener| drop(watch_started(&listener, 3, 10)));
    let (second, resumed) = scripted(|listener| watch_resumed(&listener, 12));
    let mut client = Client::connect(config(&[&first, &second])).unwrap();
    let request = WatchCreateRequest { key: b"w".to_vec(), ..Default::default() };
    let mut watch = client.watch(request).unwrap();
    let revisions: Vec<i64> = watch
        .by_ref()
        .take(2)
        .map(|message| match message.unwrap() {
            WatchMessage::Events { events, .. } => events[0].kv.mod_revision,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(revisions, [11, 12]);
    assert_eq!(watch.endpoint(), second);
    dying.join().unwrap();
    drop(watch);
    resumed.join().unwrap();
}

#[test]
fn a_pipeline_goes_on_when_the_server_stops_reading_until_its_answers_are_taken() {
    const REQUESTS: usize = 40;
    const BYTES: usize = 1024 * 1024;
    let (address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        let big = KeyValue { key: b"k".to_vec(), value: vec![b'a'; BYTES], ..KeyValue::default() };
        for _ in 0..REQUESTS {
            let (id, _) = peer.read_request().unwrap();
            // A blocking write of each answer before the next read: once the
            // client stops taking answers, this server stops reading.
            let answer = PutResponse { header: header(1, id as i64), prev_kv: Some(big.clone()) };
            peer.respond(id, &Response::Put(answer));
        }
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    let put = Request::Put(PutRequest {
        key: b"k".to_vec(),
        value: vec![b'b'; BYTES],
        prev_kv: true,
        ..PutRequest::default()
    });
    let results = client.pipeline(&vec![put; REQUESTS]);
    for (index, result) in results.iter().enumerate() {
        let Ok(Response::Put(answer)) = result else { panic!("{index}: {result:?}") };
        assert_eq!(answer.prev_kv.as_ref().unwrap().value.len(), BYTES);
    }
    server.join().unwrap();
}

#[test]
fn failover_refuses_a_member_of_another_cluster() {
    let (first, dying) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        assert!(peer.read_request().is_some());
    });
    let (other, stranger) = scripted(|listener| {
        let (stream, _) = listener.accept().unwrap();
        let params = ServerParams { cluster_id: 0xBAD, ..server_params(9) };
        let mut peer = Peer::greet_as(stream, params);
        assert!(peer.read_request().is_none(), "the client must not send it anything");
    });
    let mut client = Client::connect(config(&[&first, &other])).unwrap();
    let error = client.get(b"k").unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ClientError::Unreachable { .. }), "{error:?}");
    assert!(text.contains("belongs to cluster bad, not c1"), "{text}");
    dying.join().unwrap();
    stranger.join().unwrap();
}

#[test]
fn typed_calls_send_their_request_and_unwrap_their_answer() {
    let (address, server) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        let h = header(1, 3);
        while let Some((id, request)) = peer.read_request() {
            let answer = match request {
                Request::Txn(txn) => {
                    assert_eq!(txn.compare.len(), 1);
                    Response::Txn(TxnResponse { header: h, succeeded: true, responses: vec![] })
                }
                Request::Compact(c) => {
                    assert_eq!((c.revision, c.physical), (3, true));
                    Response::Compact(CompactionResponse { header: h })
                }
                Request::LeaseGrant(g) => Response::LeaseGrant(LeaseGrantResponse {
                    header: h,
                    id: 77,
                    ttl_secs: g.ttl_secs,
                }),
                Request::LeaseKeepAlive(k) => Response::LeaseKeepAlive(LeaseKeepAliveResponse {
                    header: h,
                    id: k.id,
                    ttl_secs: 10,
                }),
                Request::LeaseTimeToLive(t) => {
                    assert!(t.keys);
                    Response::LeaseTimeToLive(LeaseTimeToLiveResponse {
                        header: h,
                        id: t.id,
                        ttl_secs: 9,
                        granted_ttl_secs: 10,
                        keys: vec![b"k".to_vec()],
                    })
                }
                Request::LeaseRevoke(_) => Response::LeaseRevoke(LeaseRevokeResponse { header: h }),
                Request::LeaseLeases => {
                    Response::LeaseLeases(LeaseLeasesResponse { header: h, leases: vec![77] })
                }
                Request::MemberList(m) => {
                    assert!(m.linearizable);
                    let member = Member { id: 1, name: "n1".into(), ..Member::default() };
                    Response::MemberList(MemberListResponse { header: h, members: vec![member] })
                }
                Request::DeleteRange(d) => {
                    assert!(d.range_end.is_empty());
                    Response::DeleteRange(DeleteRangeResponse {
                        header: h,
                        deleted: 1,
                        prev_kvs: vec![],
                    })
                }
                other => panic!("unexpected {other:?}"),
            };
            peer.respond(id, &answer);
        }
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    let compare = Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Version(0),
        key: b"k".to_vec(),
        range_end: vec![],
    };
    let txn = TxnRequest { compare: vec![compare], ..TxnRequest::default() };
    assert!(client.txn(txn).unwrap().succeeded);
    client.compact(3, true).unwrap();
    let lease = client.lease_grant(10, 0).unwrap();
    assert_eq!((lease.id, lease.ttl_secs), (77, 10));
    assert_eq!(client.lease_keep_alive(77).unwrap().ttl_secs, 10);
    assert_eq!(client.lease_time_to_live(77, true).unwrap().keys, vec![b"k".to_vec()]);
    client.lease_revoke(77).unwrap();
    assert_eq!(client.lease_leases().unwrap().leases, vec![77]);
    assert_eq!(client.member_list(true).unwrap().members[0].name, "n1");
    assert_eq!(client.delete(b"k").unwrap(), 1);
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_cancelled_watch_waits_for_the_servers_word() {
    let (address, server) = scripted(|listener| {
        let (_client, mut peer) = watch_started(&listener, 2, 4);
        let (id, request) = peer.read_request().unwrap();
        assert_eq!(request, Request::WatchCancel(WatchCancelRequest { watch_id: 2 }));
        peer.respond(
            id,
            &Response::WatchCancel(WatchCancelResponse { header: header(1, 5), watch_id: 2 }),
        );
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    let watch = client.watch(WatchCreateRequest { key: b"w".to_vec(), ..Default::default() });
    watch.unwrap().cancel().unwrap();
    server.join().unwrap();
}

#[test]
fn a_connection_the_server_closed_while_idle_is_redialed_before_a_write() {
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let (address, server) = scripted(move |listener| {
        drop(Peer::accept(&listener, 1));
        closed_tx.send(()).unwrap();
        let mut peer = Peer::accept(&listener, 1);
        let (id, request) = peer.read_request().unwrap();
        assert!(matches!(request, Request::Put(_)));
        peer.respond(id, &put_response(1, 2));
    });
    let mut client = Client::connect(config(&[&address])).unwrap();
    closed_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let put = client.put(b"k", b"v");
    assert!(put.is_ok(), "{put:?}");
    server.join().unwrap();
}

#[test]
fn an_unavailable_member_is_left_for_the_next_unless_a_write_may_have_been_applied() {
    let (first, refusing) = scripted(|listener| {
        let mut peer = Peer::accept(&listener, 1);
        let (id, _) = peer.read_request().unwrap();
        peer.fail(id, ErrorCode::NoLeader);
        let mut peer = Peer::accept(&listener, 1);
        let (id, _) = peer.read_request().unwrap();
        peer.fail(id, ErrorCode::Stopped);
    });
    let store = FakeStore::default();
    let second = store.serve(2);
    let mut client = Client::connect(config(&[&first, &second])).unwrap();
    // NoLeader: a write that was not applied goes to the next member.
    client.put(b"k", b"v").unwrap();
    assert_eq!(client.endpoint(), Some(second.as_str()));
    // Back on the first member (the second "dies"): Stopped leaves a write
    // open, so it is not sent again.
    let mut client = Client::connect(config(&[&first, &second])).unwrap();
    let error = client.put(b"k", b"v2").unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Stopped));
    assert!(error.outcome_unknown());
    assert_eq!(store.requests.lock().unwrap().len(), 1, "only the NoLeader write was resent");
    refusing.join().unwrap();
}

#[test]
fn a_connection_bounds_the_bytes_waiting_to_be_written() {
    let store = FakeStore::default();
    let address = store.serve(1);
    let mut connection = Connection::connect(&address, &ConnectOptions::default()).unwrap();
    let put = Request::Put(PutRequest {
        key: b"k".to_vec(),
        value: vec![0; 1024 * 1024],
        ..PutRequest::default()
    });
    let mut sent = 0;
    let full = loop {
        match connection.send(&put) {
            Ok(_) => sent += 1,
            Err(error) => break error,
        }
    };
    // Nothing is written before `recv`, so four 1 MiB requests fill 4 MiB.
    let ClientError::WindowFull { in_flight, unwritten_bytes } = full else { panic!("{full:?}") };
    assert_eq!((sent, in_flight), (4, 4));
    assert!(unwritten_bytes >= 4 * 1024 * 1024);
    while connection.in_flight() > 0 {
        assert!(matches!(connection.recv(None).unwrap(), ServerMessage::Response { .. }));
    }
    connection.send(&put).unwrap();
}

#[test]
fn a_watch_whose_member_stops_resumes_on_the_next_endpoint() {
    let (first, stopping) = scripted(|listener| {
        let (_client, mut peer) = watch_started(&listener, 3, 10);
        let cancelled = WatchMessage::Cancelled {
            header: header(1, 11),
            reason: CancelReason::ServerStopping,
            compact_revision: 0,
        };
        peer.push(3, &cancelled);
        assert!(peer.read_request().is_none());
    });
    let (second, resumed) = scripted(|listener| watch_resumed(&listener, 12));
    let mut client = Client::connect(config(&[&first, &second])).unwrap();
    let request = WatchCreateRequest { key: b"w".to_vec(), ..Default::default() };
    let mut watch = client.watch(request).unwrap();
    let kinds: Vec<String> = watch
        .by_ref()
        .take(2)
        .map(|message| match message.unwrap() {
            WatchMessage::Events { events, .. } => format!("events@{}", events[0].kv.mod_revision),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["events@11", "events@12"], "the stop is not passed on");
    drop(watch);
    drop(client);
    stopping.join().unwrap();
    resumed.join().unwrap();
}
