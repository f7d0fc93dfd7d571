//! One `ember serve` process: restart after many writes, protocol abuse on
//! the client port, health, watches, clean stop. `EMBER_TEST_WRITES` scales
//! the restart test (default 100,000 writes).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use ember::proto::{
    self, ClientHello, FrameDecoder, FrameHeader, FrameKind, PutRequest, RangeRequest, Request,
    Response, SERVER_HELLO_BYTES, ServerMessage, WatchCreateRequest, WatchMessage,
};
use support::cli::run;
use support::cluster::Cluster;
use support::ports::free_port;
use support::process::wait_exit;

fn put(key: String, value: &[u8]) -> Request {
    Request::Put(PutRequest { key: key.into_bytes(), value: value.to_vec(), ..Default::default() })
}

fn count_prefix(client: &mut ember::client::Client, prefix: &[u8]) -> i64 {
    let request = RangeRequest {
        key: prefix.to_vec(),
        range_end: proto::prefix_range_end(prefix),
        count_only: true,
        ..Default::default()
    };
    client.range(request).unwrap().count
}

#[test]
fn a_single_node_restarted_after_many_writes_has_all_of_them() {
    let writes: usize =
        std::env::var("EMBER_TEST_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut node = Cluster::start("restart", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let mut client = node.client(0);
    let value = [7u8; 64];
    for batch in 0..writes.div_ceil(1000) {
        let requests: Vec<Request> = (batch * 1000..((batch + 1) * 1000).min(writes))
            .map(|i| put(format!("key/{i:08}"), &value))
            .collect();
        for result in client.pipeline(&requests) {
            assert!(matches!(result, Ok(Response::Put(_))), "{result:?}");
        }
    }
    drop(client);
    node.kill(0);
    node.spawn(0);
    node.wait_leader(Duration::from_secs(20));
    let mut client = node.client(0);
    assert_eq!(count_prefix(&mut client, b"key/"), writes as i64);
    let last = client.get(format!("key/{:08}", writes - 1).as_bytes()).unwrap().unwrap();
    assert_eq!(last.value, value);
    assert_eq!(last.mod_revision, writes as i64 + 1);
}

/// Sends a hello and returns the socket after the server's hello.
fn handshake(endpoint: &str) -> TcpStream {
    let mut socket = TcpStream::connect(endpoint).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.write_all(&ClientHello::new(1 << 20).to_bytes()).unwrap();
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    socket.read_exact(&mut reply).unwrap();
    socket
}

fn read_to_end(socket: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    socket.read_to_end(&mut bytes).expect("the server closes the connection");
    bytes
}

#[test]
fn abuse_of_the_client_port_closes_only_that_connection() {
    let node = Cluster::start("abuse", 1, &["--max-request-bytes", "65536"]);
    node.wait_leader(Duration::from_secs(10));
    let mut good = node.client(0);
    good.put(b"k", b"v").unwrap();

    // An oversized frame is refused from its header, then the connection closes.
    let mut socket = handshake(&node.members[0].endpoint());
    let header = FrameHeader { body_len_bytes: 65537, kind: FrameKind::Request, id: 9 };
    socket.write_all(&header.to_bytes()).unwrap();
    let bytes = read_to_end(&mut socket);
    let frame = FrameDecoder::new(&bytes, 1 << 20).next().unwrap().unwrap();
    match proto::decode_server_message(&frame).unwrap() {
        ServerMessage::Error { request_id: 9, error } => {
            assert_eq!(error.code(), Some(proto::ErrorCode::RequestTooLarge));
        }
        other => panic!("{other:?}"),
    }

    // Garbage instead of a hello: closed without an answer.
    let mut garbage = TcpStream::connect(node.members[0].endpoint()).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    garbage.write_all(b"\x16\x03\x01 this is not ember at all").unwrap();
    assert!(read_to_end(&mut garbage).is_empty());

    // Garbage after a good hello: an error for the connection, then closed.
    let mut socket = handshake(&node.members[0].endpoint());
    socket.write_all(&[0xff; 64]).unwrap();
    let bytes = read_to_end(&mut socket);
    assert!(!bytes.is_empty());

    // The first connection never noticed.
    assert_eq!(good.get(b"k").unwrap().unwrap().value, b"v");
}

#[test]
fn health_answers_plain_http() {
    let node = Cluster::start("health", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let mut socket = TcpStream::connect(node.members[0].endpoint()).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let text = String::from_utf8(read_to_end(&mut socket)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("{\"health\":\"true\"}"), "{text}");
}

#[test]
fn a_watch_gets_history_then_live_events_in_order() {
    let node = Cluster::start("watch1", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let mut client = node.client(0);
    for i in 0..5 {
        client.put(format!("w/{i}").as_bytes(), b"old").unwrap();
    }
    let request = WatchCreateRequest {
        key: b"w/".to_vec(),
        range_end: proto::prefix_range_end(b"w/"),
        start_revision: 2,
        ..Default::default()
    };
    let mut watch = client.watch(request).unwrap();
    for i in 5..10 {
        client.put(format!("w/{i}").as_bytes(), b"new").unwrap();
    }
    client.delete(b"w/0").unwrap();
    let mut revisions = Vec::new();
    while revisions.len() < 11 {
        match watch.next().unwrap().unwrap() {
            WatchMessage::Events { events, .. } => {
                revisions.extend(events.iter().map(|e| e.kv.mod_revision))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(revisions, (2..=12).collect::<Vec<i64>>());
}

#[test]
fn a_watch_from_a_compacted_revision_is_cancelled_with_it() {
    let node = Cluster::start("watch2", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let mut client = node.client(0);
    for i in 0..5 {
        client.put(format!("c/{i}").as_bytes(), b"v").unwrap();
    }
    client.compact(4, false).unwrap();
    let request =
        WatchCreateRequest { key: b"c/".to_vec(), start_revision: 2, ..Default::default() };
    let mut watch = client.watch(request).unwrap();
    match watch.next().unwrap().unwrap() {
        WatchMessage::Cancelled { compact_revision, reason, .. } => {
            assert_eq!(reason, proto::CancelReason::Compacted);
            assert_eq!(compact_revision, 4);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sigterm_stops_cleanly_and_bad_flags_exit_2() {
    let mut node = Cluster::start("stop", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    node.client(0).put(b"a", b"1").unwrap();
    assert!(node.terminate(0).success());
    node.spawn(0);
    node.wait_leader(Duration::from_secs(10));
    assert_eq!(node.client(0).get(b"a").unwrap().unwrap().value, b"1");

    let status = run(&["serve", "--election-timeout", "soon"]);
    assert_eq!(status.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&status.stderr).contains("election-timeout"));
}

#[test]
fn a_second_serve_on_a_data_directory_in_use_is_refused_and_the_first_loses_nothing() {
    let mut node = Cluster::start("locked", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let mut client = node.client(0);
    for i in 0..100 {
        client.put(format!("k{i:03}").as_bytes(), b"v").unwrap();
    }
    let data_dir = node.data_dir(0);
    let peer = format!("127.0.0.1:{}", free_port());
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--name", "n1", "--initial-cluster", &format!("n1=http://{peer}")])
        .args(["--listen-client-urls", &format!("127.0.0.1:{}", free_port())])
        .args(["--listen-peer-urls", &peer])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut second, Duration::from_secs(5));
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
    }
    let mut stderr = String::new();
    second.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = status.expect("the second serve exits at once");
    assert!(!status.success(), "{stderr}");
    let holder = format!("in use by process {}", node.members[0].pid().unwrap());
    assert!(stderr.contains(&data_dir.display().to_string()), "{stderr}");
    assert!(stderr.contains(&holder), "{stderr}");

    client.put(b"after", b"v").unwrap();
    assert_eq!(count_prefix(&mut client, b"k"), 100);
    drop(client);
    node.kill(0);
    node.spawn(0);
    node.wait_leader(Duration::from_secs(10));
    let mut client = node.client(0);
    assert_eq!(count_prefix(&mut client, b"k"), 100);
    assert_eq!(client.get(b"after").unwrap().unwrap().value, b"v");
}

#[test]
fn a_watcher_that_does_not_read_holds_nobody_up_and_misses_nothing() {
    let node = Cluster::start("slow", 1, &[]);
    node.wait_leader(Duration::from_secs(10));
    let mut slow = handshake(&node.members[0].endpoint());
    let create = Request::WatchCreate(WatchCreateRequest {
        key: b"s/".to_vec(),
        range_end: proto::prefix_range_end(b"s/"),
        ..Default::default()
    });
    let mut frame = Vec::new();
    proto::encode_request(&mut frame, 1, &create, 1 << 20).unwrap();
    slow.write_all(&frame).unwrap();
    // About 16 MB of events, far more than the socket buffers hold.
    let mut client = node.client(0);
    let writes = 4000;
    let value = vec![b'v'; 4096];
    for batch in 0..writes / 500 {
        let requests: Vec<Request> =
            (batch * 500..(batch + 1) * 500).map(|i| put(format!("s/{i:05}"), &value)).collect();
        for result in client.pipeline(&requests) {
            assert!(result.is_ok());
        }
    }
    // Another client is served at once while the watcher lags.
    let mut other = node.client(0);
    other.put(b"other", b"1").unwrap();
    assert!(other.get(b"other").unwrap().is_some());
    // When the watcher reads at last, every event is there, in order.
    let mut buffer = Vec::new();
    let mut next_revision = 2;
    let mut chunk = vec![0u8; 1 << 16];
    while next_revision < writes as i64 + 2 {
        let n = slow.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed at revision {next_revision}");
        buffer.extend_from_slice(&chunk[..n]);
        let mut decoder = FrameDecoder::new(&buffer, 1 << 20);
        for frame in decoder.by_ref() {
            match proto::decode_server_message(&frame.unwrap()).unwrap() {
                ServerMessage::Watch { message: WatchMessage::Events { events, .. }, .. } => {
                    for event in events {
                        assert_eq!(event.kv.mod_revision, next_revision);
                        next_revision += 1;
                    }
                }
                ServerMessage::Response { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        let consumed = decoder.consumed_bytes();
        buffer.drain(..consumed);
    }
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("ember-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut node = Cluster::prepare("notify", 1, &[]);
    let env =
        [("NOTIFY_SOCKET", socket_path.display().to_string()), ("WATCHDOG_USEC", "200000".into())];
    node.spawn_with_env(0, &env.map(|(name, value)| (name.to_string(), value)));
    let mut seen = String::new();
    let mut buffer = [0u8; 512];
    while !(seen.contains("READY=1") && seen.matches("WATCHDOG=1").count() >= 2) {
        let Ok(n) = socket.recv(&mut buffer) else { break };
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        seen.push('\n');
    }
    // The datagrams wait in the socket while the node exits.
    let status = node.terminate(0);
    while !seen.contains("STOPPING=1") {
        let Ok(n) = socket.recv(&mut buffer) else { break };
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(seen.contains("READY=1"), "{seen}");
    assert!(seen.matches("WATCHDOG=1").count() >= 2, "{seen}");
    assert!(seen.contains("STOPPING=1"), "{seen}");
    assert!(status.success());
}
