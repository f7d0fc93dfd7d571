//! Hostile load on the client port: real `ember serve` processes, raw
//! sockets on 127.0.0.1, small stores and low budgets set by flags so each
//! attack is cheap. For every attack a legitimate client keeps working, the
//! member's RSS stays under its memory budget plus `RSS_SLACK_BYTES` above
//! what it held before the attack, the raft term does not change, and the
//! writes acknowledged during the attack are all there afterwards.
//!
//! Every loop is bounded in count and in time. Latency is not asserted
//! here: figures come from `ember bench` and scripts, never from tests.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use ember::client::Client;
use ember::proto::{
    self, CancelReason, ClientHello, DeleteRangeRequest, ErrorCode, FrameDecoder, PutRequest,
    RangeRequest, Refusal, Request, Response, SERVER_HELLO_BYTES, ServerHello, ServerMessage,
    TxnRequest, WatchCreateRequest, WatchMessage,
};
use support::cluster::Cluster;

/// The client memory budget of the members under attack.
const BUDGET_BYTES: u64 = 8 << 20;
/// Their largest answer and request.
const RESPONSE_MAX_BYTES: u32 = 1 << 20;
const REQUEST_MAX_BYTES: u32 = 256 << 10;
/// What RSS may gain under an attack beyond the budget: the allocator's
/// slack over freed buffers, socket bookkeeping, and a read of
/// `READ_OVER_BUDGET_BYTES` per connection.
const RSS_SLACK_BYTES: u64 = 24 << 20;
/// Longest wait for any one expected event.
const WAIT: Duration = Duration::from_secs(20);

fn start(test: &str, extra: &[&str]) -> Cluster {
    let mut args = vec![
        "--max-client-memory-bytes".to_string(),
        BUDGET_BYTES.to_string(),
        "--max-response-bytes".to_string(),
        RESPONSE_MAX_BYTES.to_string(),
        "--max-request-bytes".to_string(),
        REQUEST_MAX_BYTES.to_string(),
    ];
    args.extend(extra.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Cluster::start(test, 1, &args);
    node.wait_leader(WAIT);
    node
}

fn rss_bytes(node: &Cluster) -> u64 {
    let pid = node.members[0].pid().expect("the member runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn term(node: &Cluster) -> u64 {
    node.status(0).expect("status").raft_term
}

/// The term, asked until the member has a connection slot free again.
fn term_once_admitted(node: &Cluster) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = node.status(0) {
            return status.raft_term;
        }
        assert!(Instant::now() < deadline, "no status within {WAIT:?}");
        sleep(Duration::from_millis(50));
    }
}

fn put(key: &str, value: &[u8]) -> Request {
    Request::Put(PutRequest { key: key.into(), value: value.to_vec(), ..Default::default() })
}

fn range(prefix: &str) -> RangeRequest {
    RangeRequest {
        key: prefix.into(),
        range_end: proto::prefix_range_end(prefix.as_bytes()),
        ..Default::default()
    }
}

/// `count` keys `prefix{i}` of `value_bytes` each.
fn fill(client: &mut Client, prefix: &str, count: usize, value_bytes: usize) {
    let value = vec![b'v'; value_bytes];
    let requests: Vec<Request> =
        (0..count).map(|i| put(&format!("{prefix}{i:06}"), &value)).collect();
    for chunk in requests.chunks(500) {
        for result in client.pipeline(chunk) {
            assert!(matches!(result, Ok(Response::Put(_))), "{result:?}");
        }
    }
}

/// What a legitimate client sees during an attack: its writes are
/// acknowledged and read back. Returns the keys it wrote.
struct Legit {
    client: Client,
    written: Vec<String>,
}

impl Legit {
    fn new(node: &Cluster) -> Legit {
        Legit::on(node, 0)
    }

    /// A legitimate client of member `i` alone.
    fn on(node: &Cluster, i: usize) -> Legit {
        let mut config = node.client_config(i);
        config.command_timeout = Duration::from_secs(5);
        config.dial_timeout = Duration::from_secs(2);
        Legit {
            client: Client::connect(config).expect("a legitimate client connects"),
            written: Vec::new(),
        }
    }

    fn round(&mut self, tag: &str) {
        let key = format!("legit/{tag}/{}", self.written.len());
        self.client.put(key.as_bytes(), b"ok").unwrap_or_else(|e| panic!("put {key}: {e}"));
        let got = self.client.get(key.as_bytes()).unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(got.map(|kv| kv.value), Some(b"ok".to_vec()));
        self.written.push(key);
    }

    fn check_all_there(&mut self) {
        for key in &self.written {
            let got = self.client.get(key.as_bytes()).unwrap();
            assert_eq!(got.map(|kv| kv.value), Some(b"ok".to_vec()), "{key} was acknowledged");
        }
    }
}

/// A raw connection that completed its hello, announcing `max_frame_bytes`.
fn raw(node: &Cluster, max_frame_bytes: u32) -> TcpStream {
    raw_to(node, 0, max_frame_bytes)
}

/// `raw` to member `i`.
fn raw_to(node: &Cluster, i: usize, max_frame_bytes: u32) -> TcpStream {
    let mut stream = TcpStream::connect(node.members[i].endpoint()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&ClientHello::new(max_frame_bytes).to_bytes()).unwrap();
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut reply).unwrap();
    let hello = ServerHello::parse(&reply, &ClientHello::new(max_frame_bytes)).unwrap();
    assert!(matches!(hello, Some(ServerHello::Accepted { .. })), "{hello:?}");
    stream
}

fn frames(requests: impl Iterator<Item = (u64, Request)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, request) in requests {
        proto::encode_request(&mut out, id, &request, u32::MAX).unwrap();
    }
    out
}

/// Reads server messages until `want` of them arrived or `WAIT` passed.
fn read_messages(stream: &mut TcpStream, want: usize) -> Vec<ServerMessage> {
    let deadline = Instant::now() + WAIT;
    let mut buffer = Vec::new();
    let mut messages = Vec::new();
    let mut chunk = vec![0u8; 256 << 10];
    while messages.len() < want && Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("read: {e}"),
        }
        let mut decoder = FrameDecoder::new(&buffer, u32::MAX);
        for frame in decoder.by_ref() {
            messages.push(proto::decode_server_message(&frame.unwrap()).unwrap());
        }
        let consumed = decoder.consumed_bytes();
        buffer.drain(..consumed);
    }
    messages
}

fn error_code(message: &ServerMessage) -> Option<ErrorCode> {
    match message {
        ServerMessage::Error { error, .. } => error.code(),
        _ => None,
    }
}

/// Writes `bytes` from a thread, as a client that never reads would: the
/// server stops reading it, so the write may wait; it gives up after `WAIT`.
fn write_in_background(stream: &TcpStream, bytes: Vec<u8>) -> thread::JoinHandle<usize> {
    let mut writer = stream.try_clone().unwrap();
    writer.set_write_timeout(Some(WAIT)).unwrap();
    thread::spawn(move || {
        let mut sent = 0;
        while sent < bytes.len() {
            match writer.write(&bytes[sent..]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    })
}

fn assert_rss_within(node: &Cluster, before: u64, what: &str) {
    let rss = rss_bytes(node);
    let bound = before + BUDGET_BYTES + RSS_SLACK_BYTES;
    assert!(rss <= bound, "{what}: RSS {rss} bytes, over {bound} ({before} before the attack)");
}

#[test]
fn pipelined_reads_never_taken_wait_within_the_budget_and_are_all_answered() {
    let node = start("pipelined_reads", &[]);
    let mut legit = Legit::new(&node);
    // 2,000 keys of 1 KiB; each read asks for 500 of them, ~0.55 MB.
    fill(&mut legit.client, "data/", 2000, 1024);
    let term_before = term(&node);
    let rss_before = rss_bytes(&node);
    // A client that announces the largest frame limit there is, then asks
    // for 1,500 answers (past the 1,024 in flight a connection may have)
    // and reads none of them for a while: ~800 MB if each were built.
    let mut attacker = raw(&node, u32::MAX);
    let read = Request::Range(RangeRequest { limit: 500, ..range("data/") });
    let count = 1500u64;
    let writer = write_in_background(&attacker, frames((1..=count).map(|id| (id, read.clone()))));
    for round in 0..20 {
        legit.round("pipelined");
        if round % 5 == 0 {
            assert_rss_within(&node, rss_before, "answers not taken");
        }
        sleep(Duration::from_millis(50));
    }
    assert_rss_within(&node, rss_before, "answers not taken");
    // Now it reads: every request is answered, none stranded.
    let messages = read_messages(&mut attacker, count as usize);
    let sent = writer.join().unwrap();
    assert_eq!(sent, frames((1..=count).map(|id| (id, read.clone()))).len());
    assert_eq!(messages.len(), count as usize, "every pipelined request is answered");
    for message in &messages {
        match message {
            ServerMessage::Response { response: Response::Range(r), .. } => {
                assert_eq!(r.kvs.len(), 500);
                assert!(r.more);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(term(&node), term_before, "no election");
    legit.check_all_there();
}

#[test]
fn answers_past_the_server_limit_are_refused_whatever_the_client_announced() {
    let node = start("too_large", &[]);
    let mut legit = Legit::new(&node);
    fill(&mut legit.client, "data/", 2000, 1024);
    let term_before = term(&node);
    let rss_before = rss_bytes(&node);
    // A 2 MB full range against a 1 MiB server limit, from a client that
    // takes 4 GiB frames and from one that takes 4 KiB: both refused.
    for announced in [u32::MAX, proto::MIN_FRAME_BYTES] {
        let mut attacker = raw(&node, announced);
        let count = 200u64;
        let read = Request::Range(range("data/"));
        attacker.write_all(&frames((1..=count).map(|id| (id, read.clone())))).unwrap();
        legit.round("too_large");
        let messages = read_messages(&mut attacker, count as usize);
        assert_eq!(messages.len(), count as usize);
        for message in &messages {
            assert_eq!(error_code(message), Some(ErrorCode::ResponseTooLarge), "{message:?}");
        }
        assert_rss_within(&node, rss_before, "oversized answers");
    }
    // Paging with a limit gets the same keys, a page at a time.
    let page = legit.client.range(RangeRequest { limit: 100, ..range("data/") }).unwrap();
    assert_eq!((page.kvs.len(), page.more, page.count), (100, true, 2000));
    assert_eq!(term(&node), term_before, "no election");
    legit.check_all_there();
}

#[test]
fn txn_reads_and_deletes_past_the_limit_are_refused_before_they_change_anything() {
    let node = start("txn_reads", &[]);
    let mut legit = Legit::new(&node);
    fill(&mut legit.client, "data/", 2000, 1024);
    let term_before = term(&node);
    let rss_before = rss_bytes(&node);
    // A txn of a put and 127 full ranges of 2 MB each: 254 MB if built,
    // against a 1 MiB server limit; and a delete of the same 2 MB with
    // `prev_kv`.
    let mut success = vec![proto::RequestOp::Put(PutRequest {
        key: b"marker".to_vec(),
        value: b"x".to_vec(),
        ..Default::default()
    })];
    success.extend((0..127).map(|_| proto::RequestOp::Range(range("data/"))));
    let txn = Request::Txn(TxnRequest { success, ..Default::default() });
    let all = range("data/");
    let delete = DeleteRangeRequest { key: all.key, range_end: all.range_end, prev_kv: true };
    let delete = Request::DeleteRange(delete);
    for announced in [u32::MAX, proto::MIN_FRAME_BYTES] {
        let mut attacker = raw(&node, announced);
        let count = 40u64;
        let request = |id: u64| if id.is_multiple_of(2) { txn.clone() } else { delete.clone() };
        attacker.write_all(&frames((1..=count).map(|id| (id, request(id))))).unwrap();
        legit.round("txn_reads");
        let messages = read_messages(&mut attacker, count as usize);
        assert_eq!(messages.len(), count as usize);
        for message in &messages {
            assert_eq!(error_code(message), Some(ErrorCode::ResponseTooLarge), "{message:?}");
        }
        assert_rss_within(&node, rss_before, "oversized txn and delete answers");
    }
    // Refused whole: the put inside did not happen, nothing was deleted.
    assert_eq!(legit.client.get(b"marker").unwrap(), None);
    let counted = legit.client.range(RangeRequest { count_only: true, ..range("data/") });
    assert_eq!(counted.unwrap().count, 2000);
    // A txn whose reads fit is answered, its put applied.
    let paged = proto::RequestOp::Range(RangeRequest { limit: 100, ..range("data/") });
    let put = proto::RequestOp::Put(PutRequest {
        key: b"marker".to_vec(),
        value: b"y".to_vec(),
        ..Default::default()
    });
    let fits = Request::Txn(TxnRequest { success: vec![put, paged], ..Default::default() });
    let answer = legit.client.pipeline(&[fits]).pop().unwrap().unwrap();
    let Response::Txn(answer) = answer else { panic!("{answer:?}") };
    assert!(matches!(&answer.responses[1], proto::ResponseOp::Range(r) if r.kvs.len() == 100));
    assert_eq!(legit.client.get(b"marker").unwrap().map(|kv| kv.value), Some(b"y".to_vec()));
    assert_eq!(term(&node), term_before, "no election");
    legit.check_all_there();
}

#[test]
fn idle_sockets_cannot_lock_out_a_client_and_a_full_port_refuses_in_words() {
    let node = start("idle_sockets", &["--max-client-connections", "32"]);
    let mut legit = Legit::new(&node);
    legit.round("before");
    let term_before = term(&node);
    let rss_before = rss_bytes(&node);
    // 32 idle sockets after their hello take every slot ...
    let idle: Vec<TcpStream> = (0..32).map(|_| raw(&node, 1 << 20)).collect();
    // ... yet a new client gets in: the longest-idle one makes room.
    let mut late = Legit::new(&node);
    late.round("late");
    legit.round("during");
    drop(idle);
    // Connections that each hold a watch are not idle: at the cap the
    // newcomer is told `TooManyConnections` in a hello, not dropped.
    let mut watching = Vec::new();
    let deadline = Instant::now() + WAIT;
    while watching.len() < 40 && Instant::now() < deadline {
        let Some(stream) = try_watching(&node) else { break };
        watching.push(stream);
    }
    assert!(watching.len() >= 28, "only {} watchers got in", watching.len());
    for _ in 0..20 {
        assert_eq!(hello_status(&node), Some(Refusal::TooManyConnections));
    }
    let refusal_lines = node
        .log_of(0)
        .lines()
        .filter(|l| l.contains("refused") && l.contains("client connections"))
        .count();
    assert!(
        (1..=2).contains(&refusal_lines),
        "refusals are logged once per interval: {refusal_lines} lines"
    );
    drop(watching);
    assert_rss_within(&node, rss_before, "idle sockets");
    // The 40 closed watchers leave the cap once the member has read their
    // ends; until then a new connection is refused, as it should be.
    assert_eq!(term_once_admitted(&node), term_before, "no election");
    legit.check_all_there();
}

/// Waits for the server to close `stream`, at most `within`.
fn assert_closed_within(mut stream: TcpStream, within: Duration) {
    stream.set_read_timeout(Some(within)).unwrap();
    let started = Instant::now();
    let outcome = stream.read(&mut [0u8; 1]);
    assert!(matches!(outcome, Ok(0)) || outcome.is_err(), "{outcome:?}");
    assert!(started.elapsed() < within, "closed after {:?}", started.elapsed());
}

/// A connection that opened a watch, or `None` once the server refuses.
fn try_watching(node: &Cluster) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(node.members[0].endpoint()).ok()?;
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&ClientHello::new(1 << 20).to_bytes()).ok()?;
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut reply).ok()?;
    match ServerHello::parse(&reply, &ClientHello::new(1 << 20)).ok()?? {
        ServerHello::Accepted { .. } => {}
        ServerHello::Refused { .. } => return None,
    }
    let watch =
        Request::WatchCreate(WatchCreateRequest { key: b"w".to_vec(), ..Default::default() });
    stream.write_all(&frames([(1, watch)].into_iter())).ok()?;
    let created = read_messages(&mut stream, 1);
    matches!(created[..], [ServerMessage::Response { .. }]).then_some(stream)
}

/// The status of the server's hello to a new connection.
fn hello_status(node: &Cluster) -> Option<Refusal> {
    let mut stream = TcpStream::connect(node.members[0].endpoint()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&ClientHello::new(1 << 20).to_bytes()).unwrap();
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut reply).unwrap();
    match ServerHello::parse(&reply, &ClientHello::new(1 << 20)).unwrap().unwrap() {
        ServerHello::Refused { reason, .. } => Some(reason),
        ServerHello::Accepted { .. } => None,
    }
}

#[test]
fn silent_sockets_are_closed_and_an_idle_client_reconnects_unnoticed() {
    let flags = ["--client-idle-timeout", "1000", "--client-hello-timeout", "300"];
    let node = start("timeouts", &flags);
    let mut legit = Legit::new(&node);
    legit.round("before");
    // No hello within 300 ms: closed, well before the default 2 s.
    let mute = TcpStream::connect(node.members[0].endpoint()).unwrap();
    assert_closed_within(mute, Duration::from_millis(1700));
    // A hello, then silence past the idle timeout: closed.
    assert_closed_within(raw(&node, 1 << 20), Duration::from_secs(6));
    // The Rust client's connection was closed too while it idled; its next
    // call dials again without an error.
    sleep(Duration::from_millis(2500));
    legit.round("after idling");
    // A connection with a watch is never idle.
    let mut watching = try_watching(&node).expect("a watch");
    sleep(Duration::from_millis(2500));
    legit.client.put(b"w", b"event").unwrap();
    let events = read_messages(&mut watching, 1);
    assert!(matches!(events[..], [ServerMessage::Watch { .. }]), "{events:?}");
    legit.check_all_there();
}

#[test]
fn truncated_frames_hold_at_most_the_budget() {
    let node = start("truncated", &[]);
    let mut legit = Legit::new(&node);
    legit.round("before");
    let term_before = term(&node);
    let rss_before = rss_bytes(&node);
    // 60 connections each send a largest request but its last byte: 15 MB
    // if each were held whole, against an 8 MiB budget.
    let value = vec![b'x'; REQUEST_MAX_BYTES as usize - 64];
    let whole = frames([(1, put("big", &value))].into_iter());
    let mut partial = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..60 {
        let stream = raw(&node, 1 << 20);
        writers.push(write_in_background(&stream, whole[..whole.len() - 1].to_vec()));
        partial.push(stream);
    }
    sleep(Duration::from_millis(500));
    for _ in 0..10 {
        legit.round("during");
    }
    assert_rss_within(&node, rss_before, "truncated frames");
    // A finished frame is served once room is made.
    drop(partial.split_off(1));
    partial[0].write_all(&whole[whole.len() - 1..]).unwrap();
    let answer = read_messages(&mut partial[0], 1);
    assert!(
        matches!(answer[..], [ServerMessage::Response { response: Response::Put(_), .. }]),
        "{answer:?}"
    );
    for writer in writers {
        let _ = writer.join();
    }
    assert_eq!(term(&node), term_before, "no election");
    legit.check_all_there();
}

/// Caps the kernel's receive buffer of a socket that will not read, so the
/// server's side fills after a few hundred KiB rather than tens of MiB.
fn small_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let bytes: libc::c_int = 64 << 10;
    // SAFETY: the descriptor is open for the life of `stream`, and the
    // option value is a c_int whose size is passed along with it.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "setsockopt SO_RCVBUF");
}

/// Reads server messages until one satisfies `stop`, or `WAIT` passed.
fn read_until(stream: &mut TcpStream, stop: impl Fn(&ServerMessage) -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 256 << 10];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(_) => return false,
        }
        let mut decoder = FrameDecoder::new(&buffer, u32::MAX);
        for frame in decoder.by_ref() {
            if stop(&proto::decode_server_message(&frame.unwrap()).unwrap()) {
                return true;
            }
        }
        let consumed = decoder.consumed_bytes();
        buffer.drain(..consumed);
    }
    false
}

#[test]
fn slow_watchers_are_cut_off_and_the_rust_client_resumes_where_it_was() {
    let node = start("slow_watchers", &["--watch-slow-reader-timeout", "2000"]);
    let mut legit = Legit::new(&node);
    legit.round("before");
    let term_before = term(&node);
    let rss_before = rss_bytes(&node);
    let watch = WatchCreateRequest {
        key: b"feed/".to_vec(),
        range_end: proto::prefix_range_end(b"feed/"),
        ..Default::default()
    };
    let mut stream = Client::connect(node.client_config(0)).unwrap().watch(watch.clone()).unwrap();
    let mut raw_watchers: Vec<TcpStream> = Vec::new();
    for _ in 0..8 {
        let mut stream = raw(&node, 1 << 20);
        small_receive_buffer(&stream);
        stream.write_all(&frames([(1, Request::WatchCreate(watch.clone()))].into_iter())).unwrap();
        raw_watchers.push(stream);
    }
    // 52 MB of events for each watcher, none of which reads: more than the
    // kernel buffers of the Rust client's socket hold.
    let value = vec![b'e'; 128 << 10];
    let puts: i64 = 400;
    // The writes themselves stay in RSS twice: in the store, and in the
    // WAL's mapped pages until their segment is sealed.
    let written_bytes = 2 * puts as u64 * value.len() as u64;
    let first = legit.client.put(b"feed/start", b"").unwrap().header.revision;
    for i in 0..puts {
        legit.client.put(format!("feed/{i:04}").as_bytes(), &value).unwrap();
        if i % 100 == 0 {
            assert_rss_within(&node, rss_before + written_bytes, "slow watchers");
        }
    }
    // Past the 2 s slow-reader timeout (5 s by default).
    sleep(Duration::from_secs(4));
    legit.client.put(b"feed/end", b"").unwrap();
    legit.round("during");
    // The store holds what was written; the watchers add at most the budget.
    assert_rss_within(&node, rss_before + written_bytes, "slow watchers");
    // The raw watchers were told they read too slowly.
    let mut watcher = raw_watchers.swap_remove(0);
    let cancelled = read_until(&mut watcher, |m| {
        matches!(
            m,
            ServerMessage::Watch {
                message: WatchMessage::Cancelled { reason: CancelReason::SlowReader, .. },
                ..
            }
        )
    });
    assert!(cancelled, "a slow watcher is cancelled with SlowReader");
    // The Rust client's watch reads now and gets every event, in order,
    // none twice, across its resume.
    let mut next = first;
    let last = first + puts + 1;
    let deadline = Instant::now() + WAIT;
    while next <= last && Instant::now() < deadline {
        match stream.next().expect("the watch goes on").unwrap() {
            WatchMessage::Events { events, .. } => {
                for event in events {
                    assert_eq!(event.kv.mod_revision, next, "no gap, no repeat");
                    next += 1;
                }
            }
            WatchMessage::Progress { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(next, last + 1, "every event arrived");
    assert_eq!(term(&node), term_before, "no election");
    legit.check_all_there();
}

#[test]
fn a_leader_under_range_floods_keeps_its_term_and_every_acknowledged_write() {
    let args = [
        "--max-client-memory-bytes".to_string(),
        BUDGET_BYTES.to_string(),
        "--max-response-bytes".to_string(),
        RESPONSE_MAX_BYTES.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Cluster::start("three_under_attack", 3, &args);
    let leader = node.wait_leader(WAIT);
    let mut legit = Legit::on(&node, leader);
    // 5,000 keys of 1 KiB: a full range is 5.4 MB, past the 1 MiB limit.
    fill(&mut legit.client, "data/", 5000, 1024);
    let terms_before: Vec<u64> = (0..3).map(|i| node.status(i).unwrap().raft_term).collect();
    // Pipelined ranges of ~0.97 MB each that are never read ...
    let unread = raw_to(&node, leader, u32::MAX);
    let paged = Request::Range(RangeRequest { limit: 900, ..range("data/") });
    let unread_writer =
        write_in_background(&unread, frames((1..=400).map(|id| (id, paged.clone()))));
    // ... and full ranges from a 4 KiB client, each refused, without pause.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let endpoint = node.members[leader].endpoint();
    let flood = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut refused = 0usize;
            let full = Request::Range(range("data/"));
            let burst = frames((1..=100).map(|id| (id, full.clone())));
            let deadline = Instant::now() + 4 * WAIT;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let mut attacker = flood_connection(&endpoint);
                attacker.write_all(&burst).unwrap();
                let answers = read_messages(&mut attacker, 100);
                refused += answers
                    .iter()
                    .filter(|m| error_code(m) == Some(ErrorCode::ResponseTooLarge))
                    .count();
            }
            refused
        })
    };
    for _ in 0..40 {
        legit.round("three");
        sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = flood.join().unwrap();
    assert!(refused >= 100, "the flood ran: {refused} ranges refused");
    let terms_after: Vec<u64> = (0..3).map(|i| node.status(i).unwrap().raft_term).collect();
    assert_eq!(terms_after, terms_before, "no election on any member");
    assert_eq!(node.wait_leader(WAIT), leader);
    let _ = unread.shutdown(std::net::Shutdown::Both);
    let _ = unread_writer.join();
    // Every acknowledged write is on every member.
    for i in 0..3 {
        let mut reader = Legit::on(&node, i);
        reader.written = legit.written.clone();
        reader.check_all_there();
    }
}

/// A connection that announces a 4 KiB frame limit, to `endpoint`.
fn flood_connection(endpoint: &str) -> TcpStream {
    let mut stream = TcpStream::connect(endpoint).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let hello = ClientHello::new(proto::MIN_FRAME_BYTES);
    stream.write_all(&hello.to_bytes()).unwrap();
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut reply).unwrap();
    stream
}

/// Reads one watch's events from `stream` until the revision in `last` (0
/// while unknown) has arrived or `4 × WAIT` passed; returns the revision
/// of every event, in arrival order.
fn watched_revisions(mut stream: TcpStream, last: &std::sync::atomic::AtomicU64) -> Vec<i64> {
    let deadline = Instant::now() + 4 * WAIT;
    let mut buffer = Vec::new();
    let mut revisions = Vec::new();
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        let want = last.load(std::sync::atomic::Ordering::Relaxed) as i64;
        let reached = revisions.last().copied().unwrap_or(0);
        if (want > 0 && reached >= want) || Instant::now() > deadline {
            return revisions;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return revisions,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => panic!("read: {e}"),
        }
        let mut decoder = FrameDecoder::new(&buffer, u32::MAX);
        for frame in decoder.by_ref() {
            match proto::decode_server_message(&frame.unwrap()).unwrap() {
                ServerMessage::Watch { message: WatchMessage::Events { events, .. }, .. } => {
                    revisions.extend(events.iter().map(|e| e.kv.mod_revision));
                }
                ServerMessage::Watch { message: WatchMessage::Progress { .. }, .. } => {}
                ServerMessage::Response { response: Response::WatchCreate(_), .. } => {}
                other => panic!("{other:?}"),
            }
        }
        let consumed = decoder.consumed_bytes();
        buffer.drain(..consumed);
    }
}

#[test]
fn watches_from_revision_one_catch_up_in_slices_while_writes_flow() {
    let node = start("watch_catch_up", &[]);
    let mut legit = Legit::new(&node);
    // 12,000 revisions over 3,000 keys of 256 bytes: each watch below has
    // ~3.5 MB of history to send, 50 of them ~170 MB.
    for round in 0..4 {
        fill(&mut legit.client, &format!("data/{round}/"), 3000, 256);
    }
    let term_before = term(&node);
    let rss_before = rss_bytes(&node);
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watch = Request::WatchCreate(WatchCreateRequest {
        key: b"\0".to_vec(),
        range_end: vec![0],
        start_revision: 1,
        ..Default::default()
    });
    let watchers: Vec<_> = (0..50)
        .map(|_| {
            let mut stream = raw(&node, 1 << 20);
            stream.write_all(&frames([(1, watch.clone())].into_iter())).unwrap();
            let last = last.clone();
            thread::spawn(move || watched_revisions(stream, &last))
        })
        .collect();
    // Writes go on while the watches catch up: the legitimate client's
    // puts are acknowledged, and every watch sees them after the history.
    for round in 0..30 {
        legit.round("catch_up");
        if round % 10 == 0 {
            assert_rss_within(&node, rss_before, "watches catching up");
        }
        sleep(Duration::from_millis(30));
    }
    let final_revision = node.status(0).unwrap().header.revision;
    last.store(final_revision as u64, std::sync::atomic::Ordering::Relaxed);
    // Every put is one revision: each watch gets 2..=final once, in order.
    let expected: Vec<i64> = (2..=final_revision).collect();
    for watcher in watchers {
        let revisions = watcher.join().unwrap();
        assert_eq!(revisions.len(), expected.len(), "one event per revision, none lost or twice");
        assert!(revisions == expected, "events in revision order");
    }
    assert_rss_within(&node, rss_before, "watches caught up");
    assert_eq!(term(&node), term_before, "no election");
    legit.check_all_there();
}

/// How one peer-port attacker behaves, per connection.
#[derive(Clone, Copy, Debug)]
enum PeerAttack {
    /// Connects and sends nothing.
    Idle,
    /// Sends 32 bytes that are no hello.
    Garbage,
    /// A hello with the right cluster, a member's id and the secret's flag,
    /// then the nonce, and never the MAC that would prove it.
    NoProof,
    /// Part of a hello, then nothing.
    Truncated,
}

/// Opens connections to `port` as `how` says, holding at most `held` of
/// them (the oldest dropped first), until `stop` or four times `WAIT`;
/// returns how many were opened.
fn attack_peer_port(
    port: u16,
    hello: ember::transport::wire::Hello,
    how: PeerAttack,
    held: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    let deadline = Instant::now() + 4 * WAIT;
    let mut open = std::collections::VecDeque::new();
    let mut opened = 0;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ port as u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            sleep(Duration::from_millis(10));
            continue;
        };
        opened += 1;
        let bytes: Vec<u8> = match how {
            PeerAttack::Idle => Vec::new(),
            PeerAttack::Garbage => (0..32)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect(),
            PeerAttack::NoProof => [&hello.encode_flagged(true)[..], &[9u8; 32]].concat(),
            PeerAttack::Truncated => hello.encode_flagged(true)[..20].to_vec(),
        };
        let _ = stream.write_all(&bytes);
        open.push_back(stream);
        if open.len() > held {
            open.pop_front();
        }
        sleep(Duration::from_millis(5));
    }
    opened
}

#[test]
fn a_flood_on_the_peer_port_leaves_the_members_links_and_the_leader_alone() {
    let mut node = Cluster::prepare("hostile_peer", 3, &[]);
    let secret = node.dir.join("peer.secret");
    std::fs::write(&secret, [7u8; 32]).unwrap();
    node.extra_args = vec!["--peer-secret-file".into(), secret.to_string_lossy().into_owned()];
    for i in 0..3 {
        node.spawn(i);
    }
    let leader = node.wait_leader(WAIT);
    let follower = (leader + 1) % 3;
    let mut legit = Legit::on(&node, leader);
    legit.round("peer_before");
    let terms_before: Vec<u64> = (0..3).map(|i| node.status(i).unwrap().raft_term).collect();
    let cluster_id = node.status(leader).unwrap().header.cluster_id;
    let pid = node.members[leader].pid().unwrap();
    let rss = move || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    let rss_before = rss();
    // Every kind of stranger at once, against the leader's and a
    // follower's peer port, each impersonating the other member.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for (target, claimed) in [(leader, follower), (follower, leader)] {
        let port = node.members[target].peer_port;
        let hello = ember::transport::wire::Hello {
            cluster_id,
            from: node.members[claimed].id,
            to: node.members[target].id,
        };
        for how in
            [PeerAttack::Idle, PeerAttack::Garbage, PeerAttack::NoProof, PeerAttack::Truncated]
        {
            let stop = stop.clone();
            attackers.push(thread::spawn(move || attack_peer_port(port, hello, how, 64, &stop)));
        }
    }
    sleep(Duration::from_millis(500));
    // The follower restarts under the flood: its new links must get in.
    node.kill(follower);
    for round in 0..20 {
        legit.round("peer_during");
        if round == 5 {
            node.spawn(follower);
        }
        sleep(Duration::from_millis(100));
    }
    let rss_during = rss();
    // The restarted follower serves linearizable reads: it reached the
    // leader through the flood and caught up.
    let mut rejoined = Legit::on(&node, follower);
    rejoined.written = legit.written.clone();
    rejoined.check_all_there();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened: usize = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    assert!(opened >= 400, "the flood ran: {opened} connections");
    let terms_after: Vec<u64> = (0..3).map(|i| node.status(i).unwrap().raft_term).collect();
    assert_eq!(terms_after, terms_before, "no election on any member");
    assert_eq!(node.wait_leader(WAIT), leader);
    assert!(rss_during <= rss_before + RSS_SLACK_BYTES, "RSS {rss_during}, {rss_before} before");
    for i in 0..3 {
        let mut reader = Legit::on(&node, i);
        reader.written = legit.written.clone();
        reader.check_all_there();
    }
}
