//! The peer transport over real loopback sockets, each member driven by its
//! own small mio loop as the server will drive it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use ember::transport::wire::{self, HELLO_BYTES, Hello};
use ember::transport::{
    AbortReason, Config, PeerAddr, STRANGER_SLOTS, Secret, SendError, StreamEvent, StreamFailure,
    Transport,
};
use mio::net::TcpListener;
use mio::{Events, Poll};
use serde::{Deserialize, Serialize};

const CLUSTER: u64 = 0xc1;
const TOKENS: std::ops::Range<usize> = 100..120;
/// Every wait in these tests gives up after this long; on an idle machine
/// each one completes in milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Msg {
    seq: u64,
    body: Vec<u8>,
}

fn msg(seq: u64) -> Msg {
    Msg { seq, body: vec![seq as u8; (seq % 200) as usize] }
}

// --- captured log lines ----------------------------------------------------

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES.lock().unwrap().push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn logged(words: &[&str]) -> bool {
    LINES.lock().unwrap().iter().any(|line| words.iter().all(|w| line.contains(w)))
}

// --- a member with its own poll loop ----------------------------------------

struct Node {
    id: u64,
    poll: Poll,
    events: Events,
    transport: Transport<Msg>,
    received: Vec<(u64, Msg)>,
    stream_events: Vec<StreamEvent<Msg>>,
    /// When set, stream events stay in the transport (a slow consumer).
    hold_streams: bool,
}

fn bind(addr: &str) -> TcpListener {
    TcpListener::bind(addr.parse().unwrap()).unwrap()
}

fn test_config(cluster: u64, id: u64, peers: &[(u64, SocketAddr)]) -> Config {
    let peers = peers
        .iter()
        .map(|&(id, addr)| PeerAddr { id, name: "127.0.0.1".into(), addrs: vec![addr] })
        .collect();
    let mut config = Config::new(cluster, id, peers);
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(80);
    config.handshake_timeout = Duration::from_millis(500);
    config
}

impl Node {
    fn start(config: Config, listener: TcpListener) -> Node {
        capture_logs();
        let poll = Poll::new().unwrap();
        let id = config.local_id;
        let now = Instant::now();
        let mut transport = Transport::new(config, listener, TOKENS, now).unwrap();
        transport.register(poll.registry(), now).unwrap();
        Node {
            id,
            poll,
            events: Events::with_capacity(64),
            transport,
            received: Vec::new(),
            stream_events: Vec::new(),
            hold_streams: false,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.transport.local_addr().unwrap()
    }

    /// One loop iteration: poll, handle events, tick, flush, drain.
    fn turn(&mut self) {
        let now = Instant::now();
        let wait = Duration::from_millis(2);
        let timeout = self.transport.next_timeout(now).map_or(wait, |t| t.min(wait));
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        let now = Instant::now();
        for event in self.events.iter() {
            assert!(self.transport.owns(event.token()));
            self.transport.handle_event(self.poll.registry(), event.token(), now);
        }
        self.transport.tick(self.poll.registry(), now);
        self.transport.flush(self.poll.registry(), now);
        self.received.extend(self.transport.drain_received());
        if !self.hold_streams {
            self.stream_events.extend(self.transport.drain_stream_events());
        }
    }

    fn connected_to(&self, peer: u64) -> bool {
        self.transport.peer_status(peer).unwrap().connected
    }

    fn from(&self, peer: u64) -> Vec<u64> {
        self.received.iter().filter(|(from, _)| *from == peer).map(|(_, m)| m.seq).collect()
    }
}

/// Turns every node until `done` holds; panics after `PATIENCE`.
fn run_until(nodes: &mut [&mut Node], what: &str, mut done: impl FnMut(&mut [&mut Node]) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done(nodes) {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        for node in nodes.iter_mut() {
            node.turn();
        }
    }
}

/// Turns every node for `span` of wall time.
fn run_for(nodes: &mut [&mut Node], span: Duration) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        for node in nodes.iter_mut() {
            node.turn();
        }
    }
}

fn free_addr() -> SocketAddr {
    bind("127.0.0.1:0").local_addr().unwrap()
}

/// Listeners first, so every member knows every address before starting.
fn cluster_of(n: u64) -> Vec<Node> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| bind("127.0.0.1:0")).collect();
    let addrs: Vec<(u64, SocketAddr)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap()))
        .collect();
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let id = i as u64 + 1;
            let peers: Vec<_> = addrs.iter().copied().filter(|(p, _)| *p != id).collect();
            Node::start(test_config(CLUSTER, id, &peers), listener)
        })
        .collect()
}

fn all_connected(nodes: &mut [&mut Node]) -> bool {
    let ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    nodes.iter().all(|n| ids.iter().filter(|&&p| p != n.id).all(|&p| n.connected_to(p)))
}

// --- the tests ----------------------------------------------------------------

#[test]
fn messages_arrive_in_order_between_three_members() {
    let mut nodes = cluster_of(3);
    let [a, b, c] = &mut nodes[..] else { unreachable!() };
    run_until(&mut [a, b, c], "all connected", all_connected);
    const COUNT: u64 = 3000;
    let mut next = 0;
    run_until(&mut [a, b, c], "all messages delivered", |nodes| {
        // Send in bursts between turns, as Raft's Ready would, and never more
        // than the queues hold.
        for _ in 0..200 {
            if next == COUNT {
                break;
            }
            for sender in nodes.iter_mut() {
                for to in (1..=3).filter(|&to| to != sender.id) {
                    sender.transport.send(to, &msg(next)).unwrap();
                }
            }
            next += 1;
        }
        nodes.iter().all(|n| n.received.len() == 2 * COUNT as usize)
    });
    let expected: Vec<u64> = (0..COUNT).collect();
    for node in [&*a, &*b, &*c] {
        for peer in (1..=3).filter(|&p| p != node.id) {
            assert_eq!(node.from(peer), expected, "{} from {peer}", node.id);
        }
        for (_, m) in &node.received {
            assert_eq!(*m, msg(m.seq));
        }
    }
    assert!(a.transport.unreachable().is_empty());
}

#[test]
fn a_restarted_peer_is_reconnected_with_backoff() {
    let mut nodes = cluster_of(2);
    let [a, b] = &mut nodes[..] else { unreachable!() };
    run_until(&mut [a, b], "connected", all_connected);
    a.transport.send(2, &msg(1)).unwrap();
    run_until(&mut [a, b], "first message", |n| n[1].received.len() == 1);

    // Member 2 stops: its listener and connections close.
    let b_addr = b.addr();
    let b_config = test_config(CLUSTER, 2, &[(1, a.addr())]);
    nodes.truncate(1);
    let a = &mut nodes[0];
    run_until(&mut [&mut *a], "the failure noticed", |n| !n[0].connected_to(2));
    assert_eq!(a.transport.unreachable(), vec![2]);
    assert_eq!(a.transport.send(2, &msg(2)), Err(SendError::PeerDown(2)));
    assert_eq!(a.transport.unreachable(), vec![2]);

    // While it is away, dials are spaced by the growing delay (10, 20, 40,
    // 80, 80 ... ms): about seven in 400 ms, not hundreds. The lower bound is
    // loose because a loaded machine may run the loop late.
    let dials_before = a.transport.peer_status(2).unwrap().dials;
    run_for(&mut [&mut *a], Duration::from_millis(400));
    let status = a.transport.peer_status(2).unwrap();
    let dials = status.dials - dials_before;
    assert!((2..=12).contains(&dials), "{dials} dials in 400 ms");
    assert!(status.failures >= 2, "{status:?}");
    if let Some(retry_at) = status.retry_at {
        assert!(retry_at <= Instant::now() + Duration::from_millis(80), "{status:?}");
    }

    // It comes back on the same address and is reconnected.
    let mut b = Node::start(b_config, bind(&b_addr.to_string()));
    run_until(&mut [&mut *a, &mut b], "reconnected", all_connected);
    assert_eq!(a.transport.peer_status(2).unwrap().failures, 0);
    a.transport.send(2, &msg(3)).unwrap();
    b.transport.send(1, &msg(4)).unwrap();
    run_until(&mut [&mut *a, &mut b], "messages after the restart", |n| {
        n[1].from(1) == [3] && n[0].from(2) == [4]
    });
}

#[test]
fn a_member_of_another_cluster_is_refused() {
    let b_listener = bind("127.0.0.1:0");
    let a_listener = bind("127.0.0.1:0");
    let (a_addr, b_addr) = (a_listener.local_addr().unwrap(), b_listener.local_addr().unwrap());
    let mut b = Node::start(test_config(CLUSTER, 2, &[(1, a_addr)]), b_listener);
    let mut stranger = Node::start(test_config(0xbad, 1, &[(2, b_addr)]), a_listener);
    // Both sides say why in the log.
    run_until(&mut [&mut b, &mut stranger], "refusals logged", |_| {
        logged(&["cluster 0000000000000bad", "cluster 00000000000000c1"])
            && logged(&["peer 0000000000000002", "refused us"])
    });
    run_for(&mut [&mut b, &mut stranger], Duration::from_millis(50));
    assert!(!stranger.connected_to(2));
    assert!(!b.connected_to(1));
    assert!(!b.transport.peer_status(1).unwrap().inbound);
    assert!(stranger.transport.peer_status(2).unwrap().failures >= 1);
    assert!(stranger.received.is_empty() && b.received.is_empty());
}

#[test]
fn an_unknown_member_is_refused() {
    let mut b = Node::start(test_config(CLUSTER, 2, &[(1, free_addr())]), bind("127.0.0.1:0"));
    let stranger_config = test_config(CLUSTER, 9, &[(2, b.addr())]);
    let mut stranger = Node::start(stranger_config, bind("127.0.0.1:0"));
    run_until(&mut [&mut b, &mut stranger], "refusal logged", |_| {
        logged(&["member 0000000000000009 is not a known peer"])
    });
    assert!(!stranger.connected_to(2));
    assert!(stranger.transport.peer_status(2).unwrap().dials >= 1);
}

/// A raw client that says hello as member `from` and checks the answer.
fn raw_peer(to: &Node, from: u64) -> StdStream {
    let mut raw = StdStream::connect(to.addr()).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    raw.write_all(&Hello { cluster_id: CLUSTER, from, to: to.id }.encode()).unwrap();
    raw
}

fn read_answer(raw: &mut StdStream, node: &mut Node, from: u64) {
    let mut reply = [0u8; HELLO_BYTES];
    let mut got = 0;
    raw.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while got < HELLO_BYTES {
        assert!(Instant::now() < deadline, "no handshake answer");
        node.turn();
        match raw.read(&mut reply[got..]) {
            Ok(0) => panic!("closed before answering"),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    raw.set_nonblocking(false).unwrap();
    assert!(Hello::check(&reply, CLUSTER, from, |id| id == node.id).is_ok());
}

/// Turns `node` until `raw` sees the connection closed.
fn wait_closed(raw: &mut StdStream, node: &mut Node) {
    raw.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 64];
    loop {
        assert!(Instant::now() < deadline, "connection was not closed");
        node.turn();
        match raw.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return, // reset: closed as well
        }
    }
}

#[test]
fn garbage_closes_only_that_connection() {
    let listeners = [bind("127.0.0.1:0"), bind("127.0.0.1:0")];
    let addrs = [listeners[0].local_addr().unwrap(), listeners[1].local_addr().unwrap()];
    let [la, lb] = listeners;
    let mut a = Node::start(test_config(CLUSTER, 1, &[(2, addrs[1])]), la);
    // Member 3 exists in b's configuration but is played by raw sockets.
    let mut b = Node::start(test_config(CLUSTER, 2, &[(1, addrs[0]), (3, free_addr())]), lb);
    run_until(&mut [&mut a, &mut b], "connected", |n| n[0].connected_to(2));

    // Not a hello at all.
    let mut http = StdStream::connect(b.addr()).unwrap();
    http.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    wait_closed(&mut http, &mut b);
    assert!(logged(&["not an ember peer"]));

    // A valid hello, then a length beyond the frame cap.
    let mut raw = raw_peer(&b, 3);
    read_answer(&mut raw, &mut b, 3);
    raw.write_all(&(64 * 1024 * 1024u32).to_le_bytes()).unwrap();
    wait_closed(&mut raw, &mut b);
    assert!(logged(&["frame length 67108864"]));

    // A valid hello, then a message that does not decode.
    let mut raw = raw_peer(&b, 3);
    read_answer(&mut raw, &mut b, 3);
    raw.write_all(&[3, 0, 0, 0, 1, 0xff, 0xff]).unwrap();
    wait_closed(&mut raw, &mut b);
    assert!(logged(&["undecodable message"]));

    // Member 1's connection was never disturbed.
    for seq in 0..100 {
        a.transport.send(2, &msg(seq)).unwrap();
    }
    run_until(&mut [&mut a, &mut b], "messages after the garbage", |n| n[1].received.len() == 100);
    assert_eq!(b.from(1), (0..100).collect::<Vec<_>>());
    assert!(b.transport.peer_status(1).unwrap().inbound);
    assert_eq!(a.transport.peer_status(2).unwrap().failures, 0);
}

#[test]
fn a_partial_frame_at_disconnect_is_discarded() {
    let mut b = Node::start(test_config(CLUSTER, 2, &[(3, free_addr())]), bind("127.0.0.1:0"));
    let mut raw = raw_peer(&b, 3);
    read_answer(&mut raw, &mut b, 3);
    let whole = wire::encode_message(&msg(7), 1 << 20).unwrap();
    let cut = wire::encode_message(&msg(8), 1 << 20).unwrap();
    raw.write_all(&whole).unwrap();
    raw.write_all(&cut[..cut.len() - 3]).unwrap();
    drop(raw);
    run_until(&mut [&mut b], "the whole frame", |n| !n[0].received.is_empty());
    run_for(&mut [&mut b], Duration::from_millis(50));
    assert_eq!(b.received, vec![(3, msg(7))]);
    assert!(!b.transport.peer_status(3).unwrap().inbound);
}

#[test]
fn a_full_queue_drops_and_reports_unreachable() {
    // A listener that never accepts: the connection completes in the kernel's
    // backlog, the hello is never answered, so nothing leaves the queue.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(CLUSTER, 1, &[(2, silent.local_addr().unwrap())]);
    config.queue_messages_max = 8;
    config.handshake_timeout = Duration::from_millis(300);
    let mut a = Node::start(config, bind("127.0.0.1:0"));
    a.turn();
    for seq in 0..8 {
        assert_eq!(a.transport.send(2, &msg(seq)), Ok(()), "message {seq}");
    }
    assert!(a.transport.unreachable().is_empty());
    assert_eq!(a.transport.send(2, &msg(8)), Err(SendError::QueueFull(2)));
    assert_eq!(a.transport.send(2, &msg(9)), Err(SendError::QueueFull(2)));
    assert_eq!(a.transport.unreachable(), vec![2]);
    assert_eq!(a.transport.peer_status(2).unwrap().queued_messages, 8);

    // The handshake times out: the queue is dropped with the connection.
    run_until(&mut [&mut a], "handshake timeout", |n| {
        n[0].transport.peer_status(2).unwrap().failures > 0
    });
    assert_eq!(a.transport.peer_status(2).unwrap().queued_messages, 0);
    assert_eq!(a.transport.unreachable(), vec![2]);
    assert!(logged(&["handshake timed out"]));
}

#[test]
fn the_byte_bound_limits_the_queue_too() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(CLUSTER, 1, &[(2, silent.local_addr().unwrap())]);
    config.queue_bytes_max = 4096;
    let mut a = Node::start(config, bind("127.0.0.1:0"));
    a.turn();
    let big = Msg { seq: 0, body: vec![1; 1500] };
    assert!(a.transport.send(2, &big).is_ok());
    assert!(a.transport.send(2, &big).is_ok());
    assert_eq!(a.transport.send(2, &big), Err(SendError::QueueFull(2)));
    assert!(a.transport.peer_status(2).unwrap().queued_bytes <= 4096);
}

#[test]
fn a_message_over_the_frame_cap_is_refused_at_send() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(CLUSTER, 1, &[(2, silent.local_addr().unwrap())]);
    config.frame_bytes_max = 1024;
    config.chunk_bytes = 512;
    let mut a = Node::start(config, bind("127.0.0.1:0"));
    let big = Msg { seq: 0, body: vec![1; 2000] };
    assert!(matches!(a.transport.send(2, &big), Err(SendError::Encode(_))));
    assert!(a.transport.unreachable().is_empty());
}

// --- streams -------------------------------------------------------------------

/// Deterministic bytes that no chunking mistake could reproduce by accident.
fn payload(len_bytes: usize) -> Vec<u8> {
    let mut rng = ember::raft::Rng::new(0x9e37_79b9_7f4a_7c15);
    (0..len_bytes).map(|_| rng.next_u64() as u8).collect()
}

fn stream_pair(chunk_bytes: usize, inbox_bytes: usize) -> (Node, Node) {
    let (la, lb) = (bind("127.0.0.1:0"), bind("127.0.0.1:0"));
    let (a_addr, b_addr) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let mut a_config = test_config(CLUSTER, 1, &[(2, b_addr)]);
    a_config.chunk_bytes = chunk_bytes;
    let mut b_config = test_config(CLUSTER, 2, &[(1, a_addr)]);
    b_config.received_stream_bytes_max = inbox_bytes;
    let mut a = Node::start(a_config, la);
    let mut b = Node::start(b_config, lb);
    run_until(&mut [&mut a, &mut b], "connected", all_connected);
    (a, b)
}

#[test]
fn a_big_chunked_payload_arrives_intact_with_bounded_memory() {
    const CHUNK: usize = 64 * 1024;
    const INBOX: usize = 256 * 1024;
    let (mut a, mut b) = stream_pair(CHUNK, INBOX);
    let data = payload(8 * 1024 * 1024 + 12345);
    let header = Msg { seq: 77, body: b"snapshot at index 77".to_vec() };
    let source = Box::new(io::Cursor::new(data.clone()));
    let id = a.transport.start_stream(2, &header, source).unwrap();
    assert_eq!(
        a.transport.start_stream(2, &header, Box::new(io::empty())),
        Err(SendError::StreamBusy(2))
    );

    // The receiver consumes slowly: it drains only every fourth turn, and
    // its undrained chunks never exceed the configured bound plus one chunk.
    b.hold_streams = true;
    let mut turns = 0u64;
    let mut heartbeats = 0;
    run_until(&mut [&mut a, &mut b], "the whole stream", |n| {
        turns += 1;
        assert!(n[1].transport.received_stream_bytes() <= INBOX + CHUNK);
        if turns.is_multiple_of(4) {
            let events: Vec<_> = n[1].transport.drain_stream_events().collect();
            n[1].stream_events.extend(events);
        }
        // Messages keep flowing beside the stream.
        if turns.is_multiple_of(16) && n[0].transport.send(2, &msg(heartbeats)).is_ok() {
            heartbeats += 1;
        }
        matches!(n[1].stream_events.last(), Some(StreamEvent::Finished { .. }))
    });

    let mut received = Vec::new();
    let mut events = b.stream_events.iter();
    match events.next() {
        Some(StreamEvent::Started { from: 1, stream, header: h }) => {
            assert_eq!((*stream, h), (id, &header));
        }
        other => panic!("expected the start, got {other:?}"),
    }
    for event in events {
        match event {
            StreamEvent::Chunk { from: 1, stream, offset_bytes, data: chunk } => {
                assert_eq!(*stream, id);
                assert_eq!(*offset_bytes, received.len() as u64);
                assert!(chunk.len() <= CHUNK);
                received.extend_from_slice(chunk);
            }
            StreamEvent::Finished { from: 1, stream, total_bytes } => {
                assert_eq!((*stream, *total_bytes), (id, data.len() as u64));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(received == data, "payload differs");
    run_until(&mut [&mut a, &mut b], "sender outcome", |n| {
        let outcomes = n[0].transport.drain_stream_outcomes();
        assert!(outcomes.iter().all(|o| o.stream == id && o.result == Ok(data.len() as u64)));
        !outcomes.is_empty()
    });
    assert!(heartbeats > 0);
    run_until(&mut [&mut a, &mut b], "messages beside the stream", |n| {
        n[1].from(1) == (0..heartbeats).collect::<Vec<_>>()
    });
    // A second stream may follow the first.
    let id2 = a.transport.start_stream(2, &header, Box::new(io::Cursor::new(vec![5; 10]))).unwrap();
    assert_ne!(id, id2);
}

/// A source that fails after some bytes, like a snapshot file on a dying card.
struct FailingSource {
    left_bytes: usize,
}

impl Read for FailingSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left_bytes == 0 {
            return Err(io::Error::other("bad sector"));
        }
        let n = buf.len().min(self.left_bytes);
        buf[..n].fill(1);
        self.left_bytes -= n;
        Ok(n)
    }
}

#[test]
fn a_failing_source_aborts_the_stream_on_both_sides() {
    let (mut a, mut b) = stream_pair(4096, 1 << 20);
    let header = msg(1);
    let id = a.transport.start_stream(2, &header, Box::new(FailingSource { left_bytes: 10_000 }));
    let id = id.unwrap();
    run_until(&mut [&mut a, &mut b], "abort", |n| {
        matches!(n[1].stream_events.last(), Some(StreamEvent::Aborted { .. }))
    });
    let last = b.stream_events.last().unwrap();
    assert_eq!(
        *last,
        StreamEvent::Aborted { from: 1, stream: id, reason: AbortReason::SenderAborted }
    );
    let outcomes = a.transport.drain_stream_outcomes();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].result, Err(StreamFailure::Source(io::ErrorKind::Other)));
    // The connection itself survives, and so does the next stream.
    a.transport.send(2, &msg(5)).unwrap();
    run_until(&mut [&mut a, &mut b], "message after abort", |n| n[1].from(1) == [5]);
    let data = payload(100_000);
    let source = Box::new(io::Cursor::new(data.clone()));
    let id2 = a.transport.start_stream(2, &header, source).unwrap();
    b.stream_events.clear();
    run_until(&mut [&mut a, &mut b], "second stream", |n| {
        matches!(n[1].stream_events.last(), Some(StreamEvent::Finished { .. }))
    });
    let mut received = Vec::new();
    for event in &b.stream_events {
        if let StreamEvent::Chunk { stream, data, .. } = event {
            assert_eq!(*stream, id2);
            received.extend_from_slice(data);
        }
    }
    assert!(received == data);
}

#[test]
fn a_lost_connection_aborts_the_stream_on_both_sides() {
    let (mut a, mut b) = stream_pair(16 * 1024, 64 * 1024);
    let source = Box::new(io::Cursor::new(payload(4 * 1024 * 1024)));
    let id = a.transport.start_stream(2, &msg(1), source).unwrap();
    run_until(&mut [&mut a, &mut b], "some chunks", |n| {
        n[1].stream_events.iter().any(|e| matches!(e, StreamEvent::Chunk { .. }))
    });
    // The receiver restarts: the sender's connection breaks mid-stream.
    let b_addr = b.addr();
    let b_config = test_config(CLUSTER, 2, &[(1, a.addr())]);
    drop(b);
    run_until(&mut [&mut a], "sender notices", |n| !n[0].connected_to(2));
    let outcomes = a.transport.drain_stream_outcomes();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        (outcomes[0].stream, &outcomes[0].result),
        (id, &Err(StreamFailure::ConnectionLost))
    );

    // And a receiver that loses the sender mid-stream discards it.
    let mut b = Node::start(b_config, bind(&b_addr.to_string()));
    run_until(&mut [&mut a, &mut b], "reconnected", all_connected);
    let source = Box::new(io::Cursor::new(payload(4 * 1024 * 1024)));
    let id = a.transport.start_stream(2, &msg(2), source).unwrap();
    run_until(&mut [&mut a, &mut b], "some chunks again", |n| {
        n[1].stream_events.iter().any(|e| matches!(e, StreamEvent::Chunk { .. }))
    });
    drop(a);
    run_until(&mut [&mut b], "receiver notices", |n| {
        matches!(n[0].stream_events.last(), Some(StreamEvent::Aborted { .. }))
    });
    let last = b.stream_events.last().unwrap();
    assert_eq!(
        *last,
        StreamEvent::Aborted { from: 1, stream: id, reason: AbortReason::ConnectionLost }
    );
}

#[test]
fn a_peer_that_stops_reading_is_reconnected() {
    // A peer that answers the handshake, then never reads again (its board
    // lost power with the connection open, as far as we can tell).
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let (mut conn, _) = mute.accept().unwrap();
        let mut hello = [0u8; HELLO_BYTES];
        conn.read_exact(&mut hello).unwrap();
        conn.write_all(&Hello { cluster_id: CLUSTER, from: 2, to: 1 }.encode()).unwrap();
        let _ = held.recv_timeout(PATIENCE);
    });
    let mut config = test_config(CLUSTER, 1, &[(2, mute_addr)]);
    config.write_stall_timeout = Duration::from_millis(200);
    let mut a = Node::start(config, bind("127.0.0.1:0"));
    run_until(&mut [&mut a], "connected", |n| n[0].connected_to(2));
    let big = Msg { seq: 1, body: vec![3; 256 * 1024] };
    run_until(&mut [&mut a], "stall detected", |n| {
        // Fill the kernel's buffers; a full queue is expected on the way.
        let _ = n[0].transport.send(2, &big);
        n[0].transport.peer_status(2).unwrap().failures > 0
    });
    assert!(logged(&["peer 0000000000000002", "stopped reading"]));
    assert!(a.transport.unreachable().contains(&2));
    release.send(()).unwrap();
    holder.join().unwrap();
}

#[test]
fn silent_strangers_cannot_hold_the_slots_forever() {
    let (la, lb) = (bind("127.0.0.1:0"), bind("127.0.0.1:0"));
    let (a_addr, b_addr) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let mut b = Node::start(test_config(CLUSTER, 2, &[(1, a_addr)]), lb);
    // Strangers get at most `STRANGER_SLOTS` of the 11 slots for accepted
    // connections (tokens 100..120 less the listener and 8 peer slots).
    let mut strangers: Vec<StdStream> =
        (0..STRANGER_SLOTS).map(|_| StdStream::connect(b_addr).unwrap()).collect();
    run_for(&mut [&mut b], Duration::from_millis(50));
    // One more: the oldest of those that sent nothing makes room for it.
    let extra = StdStream::connect(b_addr).unwrap();
    wait_closed(&mut strangers[0], &mut b);
    assert!(logged(&["made room for a newer connection"]));
    strangers[0] = extra;

    // Member 1 starts now and gets in while the strangers still wait.
    let mut a = Node::start(test_config(CLUSTER, 1, &[(2, b_addr)]), la);
    run_until(&mut [&mut a, &mut b], "member 1 accepted", |n| {
        n[1].transport.peer_status(1).unwrap().inbound
    });
    // And the strangers are closed once their handshake time is over.
    for stranger in &mut strangers {
        wait_closed(stranger, &mut b);
    }
}

impl Node {
    /// Polls and handles events without calling `tick`, so the test decides
    /// when time passes for the transport.
    fn events_only(&mut self) {
        self.poll.poll(&mut self.events, Some(Duration::from_millis(2))).unwrap();
        let now = Instant::now();
        for event in self.events.iter() {
            self.transport.handle_event(self.poll.registry(), event.token(), now);
        }
    }

    fn wait_for_failures(&mut self, peer: u64, failures: u32) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.transport.peer_status(peer).unwrap();
            if status.failures >= failures {
                return status.retry_at.expect("down after a failure");
            }
            assert!(Instant::now() < deadline, "no failure {failures}");
            self.events_only();
        }
    }
}

#[test]
fn dials_wait_for_their_backoff_to_expire() {
    // Nothing listens at the peer's address: every dial is refused.
    let mut a = Node::start(test_config(CLUSTER, 1, &[(2, free_addr())]), bind("127.0.0.1:0"));
    let mut retry_at = a.wait_for_failures(2, 1);
    for (failure, delay_ms) in [(2, 20), (3, 40), (4, 80), (5, 80), (6, 80)] {
        let dials = a.transport.peer_status(2).unwrap().dials;
        let registry = a.poll.registry();
        // Just before the deadline nothing happens; at it, one dial.
        a.transport.tick(registry, retry_at - Duration::from_millis(1));
        assert_eq!(a.transport.peer_status(2).unwrap().dials, dials);
        let wait = a.transport.next_timeout(retry_at - Duration::from_millis(1)).unwrap();
        assert_eq!(wait, Duration::from_millis(1));
        // Real time catches up first, so the refusal, handled inside this
        // tick or by a later event, is never handled before `retry_at`.
        std::thread::sleep(retry_at.saturating_duration_since(Instant::now()));
        a.transport.tick(registry, retry_at);
        assert_eq!(a.transport.peer_status(2).unwrap().dials, dials + 1);
        let next = a.wait_for_failures(2, failure);
        // The next dial is the doubled, capped delay after that failure.
        let delay = Duration::from_millis(delay_ms);
        assert!(next >= retry_at + delay, "failure {failure}");
        assert!(next <= Instant::now() + delay, "failure {failure}");
        retry_at = next;
    }
    assert!(a.transport.unreachable().contains(&2));
}

#[test]
fn members_can_be_added_and_removed() {
    let (la, lb, lc) = (bind("127.0.0.1:0"), bind("127.0.0.1:0"), bind("127.0.0.1:0"));
    let addrs = [&la, &lb, &lc].map(|l| l.local_addr().unwrap());
    let mut a = Node::start(test_config(CLUSTER, 1, &[(2, addrs[1])]), la);
    let mut b = Node::start(test_config(CLUSTER, 2, &[(1, addrs[0])]), lb);
    // Member 3 already knows member 1, which does not know it yet.
    let mut c = Node::start(test_config(CLUSTER, 3, &[(1, addrs[0])]), lc);
    run_until(&mut [&mut a, &mut b, &mut c], "3 refused by 1", |_| {
        logged(&["member 0000000000000003 is not a known peer"])
    });
    assert_eq!(a.transport.send(3, &msg(0)), Err(SendError::UnknownPeer(3)));

    let now = Instant::now();
    a.transport
        .add_peer(PeerAddr { id: 3, name: "127.0.0.1".into(), addrs: vec![addrs[2]] }, now)
        .unwrap();
    let again = a
        .transport
        .add_peer(PeerAddr { id: 3, name: "127.0.0.1".into(), addrs: vec![addrs[2]] }, now);
    assert!(again.is_err());
    run_until(&mut [&mut a, &mut b, &mut c], "1 and 3 connected", |n| {
        n[0].connected_to(3) && n[2].connected_to(1)
    });
    a.transport.send(3, &msg(1)).unwrap();
    c.transport.send(1, &msg(2)).unwrap();
    run_until(&mut [&mut a, &mut b, &mut c], "1 and 3 talk", |n| {
        n[2].from(1) == [1] && n[0].from(3) == [2]
    });

    // Member 2 is removed: its connections close and its dials are refused.
    assert!(a.transport.remove_peer(a.poll.registry(), 2, Instant::now()));
    assert!(!a.transport.remove_peer(a.poll.registry(), 2, Instant::now()));
    assert_eq!(a.transport.peer_ids(), vec![3]);
    assert_eq!(a.transport.send(2, &msg(3)), Err(SendError::UnknownPeer(2)));
    run_until(&mut [&mut a, &mut b, &mut c], "2 cut off", |n| {
        !n[1].connected_to(1) && !n[1].transport.peer_status(1).unwrap().inbound
    });
    run_until(&mut [&mut a, &mut b, &mut c], "2 refused by 1", |_| {
        logged(&["member 0000000000000002 is not a known peer"])
    });
    a.transport.send(3, &msg(4)).unwrap();
    run_until(&mut [&mut a, &mut b, &mut c], "3 still served", |n| n[2].from(1) == [1, 4]);
}

/// Member 2, removed by member 1, dials it: told it was removed (with a
/// secret: only by an acceptor that proves the secret).
fn removed_dialer(secret_a: Option<&[u8]>, secret_b: Option<&[u8]>) -> (Node, Node) {
    let (la, lb) = (bind("127.0.0.1:0"), bind("127.0.0.1:0"));
    let addr_a = la.local_addr().unwrap();
    let mut config_a = test_config(CLUSTER, 1, &[]);
    config_a.removed = vec![7, 2];
    config_a.secret = secret_a.map(|s| Secret::new(s).unwrap());
    let mut config_b = test_config(CLUSTER, 2, &[(1, addr_a)]);
    config_b.secret = secret_b.map(|s| Secret::new(s).unwrap());
    (Node::start(config_a, la), Node::start(config_b, lb))
}

#[test]
fn a_removed_member_is_told_so_when_it_dials() {
    for secret in [None, Some([5u8; 32].as_slice())] {
        let (mut a, mut b) = removed_dialer(secret, secret);
        assert_eq!(b.transport.removed_by(), None);
        run_until(&mut [&mut a, &mut b], "2 told it was removed", |n| {
            n[1].transport.removed_by() == Some(1)
        });
        assert!(logged(&["member 0000000000000002 was removed from the cluster"]));
        assert!(!b.connected_to(1));
        // A member that is a peer again is not refused.
        let (mut a, mut b) = removed_dialer(secret, secret);
        a.transport.set_removed(&[]);
        let b_addr = b.addr();
        a.transport
            .add_peer(
                PeerAddr { id: 2, name: "127.0.0.1".into(), addrs: vec![b_addr] },
                Instant::now(),
            )
            .unwrap();
        run_until(&mut [&mut a, &mut b], "2 connected", |n| n[1].connected_to(1));
        assert_eq!(b.transport.removed_by(), None);
    }
}

#[test]
fn a_removed_answer_without_the_secret_is_not_believed() {
    let (mut a, mut b) = removed_dialer(Some(&[5; 32]), Some(&[6; 32]));
    run_until(&mut [&mut a, &mut b], "the MAC refused", |_| {
        logged(&["the hello does not prove the peer secret"])
    });
    run_for(&mut [&mut a, &mut b], Duration::from_millis(200));
    assert_eq!(b.transport.removed_by(), None);
}
