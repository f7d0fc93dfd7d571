//! Hostile load against a real `ember serve`: the attacks of
//! `tests/hostile_load.rs` at full size, with the figures the tests do not
//! assert: a legitimate client's put and get latency (p50, p99, max) before
//! and during each attack, the member's peak RSS, and the longest loop
//! iteration under each attack (from the lines the member logs every 10 s
//! at debug level, the first window, its start-up, left out; a build
//! without them prints `unknown`).
//!
//! Each attack runs against a fresh process on the same data: 50,000 keys
//! of 1 KiB (the store of the attacks as first reported). The member runs
//! with its default flags. `EMBER_BIN` names the binary (default
//! `target/release/ember`), so the same program measures an older build;
//! `EMBER_BENCH_ATTACKS` picks attacks by name (comma separated), and
//! `range_step` the time of one step of a large range in the store alone.
//! Prints `name=value` lines.

mod lone_member;

use lone_member::{Figures, LoneMember, figures};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use ember::client::{Client, Config};
use ember::mvcc::{self, RangeStep, Store};
use ember::proto::{
    self, ClientHello, PutRequest, RangeRequest, Request, SERVER_HELLO_BYTES, WatchCreateRequest,
};

/// An attack: runs until the flag is set.
type Attack = fn(&str, &Arc<AtomicBool>);

const KEYS: usize = 50_000;
const VALUE_BYTES: usize = 1024;
/// The member's loop-time log interval (`LOOP_TIME_LOG_INTERVAL`).
/// Legitimate operations per latency sample.
const SAMPLE_OPS: usize = 300;

fn main() {
    let bin = std::env::var("EMBER_BIN").unwrap_or_else(|_| "target/release/ember".into());
    let only = std::env::var("EMBER_BENCH_ATTACKS").ok();
    if only.as_ref().is_none_or(|o| o.split(',').any(|n| n == "range_step")) {
        range_step_figures();
    }
    let dir = std::env::temp_dir().join(format!("ember-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = 17_000 + (std::process::id() % 1000) as u16 * 2;
    let endpoint = format!("127.0.0.1:{port}");
    let mut node = LoneMember::spawn(&bin, &dir, port, "fill");
    fill(&endpoint);
    node.wait_window_end();
    node.stop(1);
    let attacks: [(&str, Attack); 8] = [
        ("pipelined_full_ranges_unread", pipelined_full_ranges_unread),
        ("too_large_flood", too_large_flood),
        ("idle_sockets", idle_sockets),
        ("truncated_frames", truncated_frames),
        ("slow_watchers", slow_watchers),
        ("pipelined_past_1024", pipelined_past_1024),
        ("watch_catch_up", watch_catch_up),
        ("peer_flood", peer_flood),
    ];
    for (name, attack) in attacks {
        if only.as_ref().is_some_and(|o| !o.split(',').any(|n| n == name)) {
            continue;
        }
        let mut node = LoneMember::spawn(&bin, &dir, port, name);
        node.past_first_window();
        let before = sample(&endpoint, "before");
        let rss_before = node.rss_bytes();
        let stop = Arc::new(AtomicBool::new(false));
        let attacker = {
            let (endpoint, stop) = (endpoint.clone(), stop.clone());
            thread::spawn(move || attack(&endpoint, &stop))
        };
        sleep(Duration::from_millis(1500));
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = node.watch_rss(peak.clone(), stop.clone());
        let during = sample(&endpoint, "during");
        stop.store(true, Ordering::Relaxed);
        let _ = attacker.join();
        let _ = sampler.join();
        node.wait_window_end();
        let longest_us = node.stop(1);
        println!("hostile_{name}_rss_before_bytes={rss_before}");
        println!("hostile_{name}_rss_peak_bytes={}", peak.load(Ordering::Relaxed));
        for (when, figures) in [("before", before), ("during", during)] {
            for (op, f) in [("put", figures.0), ("get", figures.1)] {
                println!(
                    "hostile_{name}_{when}_{op}_us p50={} p99={} max={} failed={}",
                    f.p50_us, f.p99_us, f.max_us, f.failed
                );
            }
        }
        match longest_us {
            Some(us) => println!("hostile_{name}_loop_longest_us={us}"),
            None => println!("hostile_{name}_loop_longest_us=unknown"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the attacks read of the member besides its loop time.
trait Rss {
    fn rss_bytes(&self) -> u64;
    fn watch_rss(&self, peak: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()>;
}

impl Rss for LoneMember {
    fn rss_bytes(&self) -> u64 {
        rss_of(self.child.id())
    }

    fn watch_rss(&self, peak: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
        let pid = self.child.id();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_of(pid), Ordering::Relaxed);
                sleep(Duration::from_millis(20));
            }
        })
    }
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

fn fill(endpoint: &str) {
    let mut client = Client::connect(Config::new(vec![endpoint.to_string()])).unwrap();
    let value = vec![b'v'; VALUE_BYTES];
    for batch in 0..KEYS / 500 {
        let requests: Vec<Request> = (batch * 500..(batch + 1) * 500)
            .map(|i| {
                let key = format!("data/{i:06}").into_bytes();
                Request::Put(PutRequest { key, value: value.clone(), ..Default::default() })
            })
            .collect();
        for result in client.pipeline(&requests) {
            result.expect("fill");
        }
    }
}

/// A fresh client's puts and gets, one at a time.
fn sample(endpoint: &str, tag: &str) -> (Figures, Figures) {
    let mut config = Config::new(vec![endpoint.to_string()]);
    config.command_timeout = Duration::from_secs(5);
    let Ok(mut client) = Client::connect(config) else {
        let failed = Figures { failed: SAMPLE_OPS, ..Figures::default() };
        return (failed, failed);
    };
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    let mut failed = (0, 0);
    for i in 0..SAMPLE_OPS {
        let key = format!("legit/{tag}/{i}");
        let started = Instant::now();
        match client.put(key.as_bytes(), b"ok") {
            Ok(_) => puts.push(started.elapsed()),
            Err(_) => failed.0 += 1,
        }
        let started = Instant::now();
        match client.get(key.as_bytes()) {
            Ok(Some(_)) => gets.push(started.elapsed()),
            _ => failed.1 += 1,
        }
    }
    (figures(puts, failed.0), figures(gets, failed.1))
}

fn hello(endpoint: &str, max_frame_bytes: u32) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(endpoint).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(&ClientHello::new(max_frame_bytes).to_bytes()).ok()?;
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut reply).ok()?;
    (reply[4] == 0).then_some(stream)
}

fn frames(requests: impl Iterator<Item = (u64, Request)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, request) in requests {
        proto::encode_request(&mut out, id, &request, u32::MAX).unwrap();
    }
    out
}

fn full_range() -> Request {
    Request::Range(RangeRequest {
        key: b"data/".to_vec(),
        range_end: proto::prefix_range_end(b"data/"),
        ..Default::default()
    })
}

fn until_stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        sleep(Duration::from_millis(20));
    }
}

/// One connection announces a 4 GiB frame limit and pipelines 16 full
/// ranges (55 MB each), then never reads.
fn pipelined_full_ranges_unread(endpoint: &str, stop: &Arc<AtomicBool>) {
    let Some(mut stream) = hello(endpoint, u32::MAX) else { return };
    let _ = stream.write_all(&frames((1..=16).map(|id| (id, full_range()))));
    until_stopped(stop);
}

/// Connections with a 4 KiB limit send full ranges in rounds of 40, reading
/// the refusals.
fn too_large_flood(endpoint: &str, stop: &Arc<AtomicBool>) {
    let mut streams: Vec<TcpStream> =
        (0..4).filter_map(|_| hello(endpoint, proto::MIN_FRAME_BYTES)).collect();
    let mut id = 0;
    let mut sink = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        for stream in &mut streams {
            let batch = frames((0..10).map(|_| {
                id += 1;
                (id, full_range())
            }));
            let _ = stream.write_all(&batch);
            let _ = stream.read(&mut sink);
        }
    }
}

/// 4,096 sockets that send their hello and then nothing.
fn idle_sockets(endpoint: &str, stop: &Arc<AtomicBool>) {
    let _held: Vec<TcpStream> = (0..4096).filter_map(|_| hello(endpoint, 1 << 20)).collect();
    until_stopped(stop);
}

/// 200 connections each send a 1.5 MiB frame but its last byte.
fn truncated_frames(endpoint: &str, stop: &Arc<AtomicBool>) {
    let value = vec![b'x'; 1536 * 1024 - 64];
    let put = Request::Put(PutRequest { key: b"big".to_vec(), value, ..Default::default() });
    let whole = frames([(1, put)].into_iter());
    let mut held = Vec::new();
    for _ in 0..200 {
        let Some(mut stream) = hello(endpoint, 1 << 20) else { continue };
        let _ = stream.set_nonblocking(true);
        let _ = stream.write(&whole[..whole.len() - 1]);
        held.push(stream);
    }
    until_stopped(stop);
}

/// 100 connections watch every key and never read, while a writer puts
/// 64 KiB values.
fn slow_watchers(endpoint: &str, stop: &Arc<AtomicBool>) {
    let watch = Request::WatchCreate(WatchCreateRequest {
        key: b"\0".to_vec(),
        range_end: vec![0],
        ..Default::default()
    });
    let _held: Vec<TcpStream> = (0..100)
        .filter_map(|_| {
            let mut stream = hello(endpoint, 1 << 20)?;
            stream.write_all(&frames([(1, watch.clone())].into_iter())).ok()?;
            Some(stream)
        })
        .collect();
    let mut writer = Client::connect(Config::new(vec![endpoint.to_string()])).unwrap();
    let value = vec![b'w'; 64 << 10];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let _ = writer.put(format!("stream/{}", i % 64).as_bytes(), &value);
        i += 1;
    }
}

/// Bursts of 1,500 gets of one key in one write, each burst read whole.
fn pipelined_past_1024(endpoint: &str, stop: &Arc<AtomicBool>) {
    let get = Request::Range(RangeRequest { key: b"data/000001".to_vec(), ..Default::default() });
    let burst = frames((1..=1500).map(|id| (id, get.clone())));
    while !stop.load(Ordering::Relaxed) {
        let Some(mut stream) = hello(endpoint, 1 << 20) else { return };
        let _ = stream.write_all(&burst);
        let mut decoder_bytes = Vec::new();
        let mut answered = 0;
        let mut chunk = vec![0u8; 64 << 10];
        let deadline = Instant::now() + Duration::from_secs(5);
        while answered < 1500 && Instant::now() < deadline {
            let Ok(n) = stream.read(&mut chunk) else { break };
            if n == 0 {
                break;
            }
            decoder_bytes.extend_from_slice(&chunk[..n]);
            let mut decoder = proto::FrameDecoder::new(&decoder_bytes, u32::MAX);
            answered += decoder.by_ref().count();
            let consumed = decoder.consumed_bytes();
            decoder_bytes.drain(..consumed);
        }
        if answered < 1500 {
            println!("hostile_pipelined_past_1024_stranded={}", 1500 - answered);
            until_stopped(stop);
            return;
        }
    }
}

/// 50 connections each watch every key from revision 1 and read as fast as
/// they can: 55 MB of history each, built and sent over and over (a watch
/// that has caught up is opened again).
fn watch_catch_up(endpoint: &str, stop: &Arc<AtomicBool>) {
    let readers: Vec<_> = (0..50)
        .map(|_| {
            let (endpoint, stop) = (endpoint.to_string(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    read_history(&endpoint, &stop);
                }
            })
        })
        .collect();
    for reader in readers {
        let _ = reader.join();
    }
}

/// One watch from revision 1, read until it reaches the fill's last
/// revision (or the attack stops).
fn read_history(endpoint: &str, stop: &AtomicBool) {
    let watch = Request::WatchCreate(WatchCreateRequest {
        key: b"data/".to_vec(),
        range_end: proto::prefix_range_end(b"data/"),
        start_revision: 1,
        ..Default::default()
    });
    let Some(mut stream) = hello(endpoint, 1 << 20) else {
        sleep(Duration::from_millis(100));
        return;
    };
    if stream.write_all(&frames([(1, watch)].into_iter())).is_err() {
        return;
    }
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 256 << 10];
    let mut reached = 0;
    while reached <= KEYS as i64 && !stop.load(Ordering::Relaxed) {
        let Ok(n) = stream.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut decoder = proto::FrameDecoder::new(&buffer, u32::MAX);
        for frame in decoder.by_ref() {
            let Ok(frame) = frame else { return };
            if let Ok(proto::ServerMessage::Watch {
                message: proto::WatchMessage::Events { events, .. },
                ..
            }) = proto::decode_server_message(&frame)
            {
                reached = events.last().map_or(reached, |e| e.kv.mod_revision);
            }
        }
        let consumed = decoder.consumed_bytes();
        buffer.drain(..consumed);
    }
}

/// The node's range step bounds (`RANGE_STEP_KEYS_MAX`,
/// `RANGE_STEP_BYTES_MAX` in `src/server/requests.rs`).
const RANGE_STEP_KEYS: usize = 4096;
const RANGE_STEP_BYTES: usize = 1 << 20;

/// What one step of a large range costs in the store alone: a full range
/// over 50,000 keys built in the node's steps, for values of 1 KiB (the
/// byte bound ends each step) and of 64 bytes (the key bound does), and a
/// count over the same keys (keys walked, nothing copied).
fn range_step_figures() {
    for (name, value_bytes, count_only) in
        [("1KiB", 1024, false), ("64B", 64, false), ("count", 64, true)]
    {
        let mut store = Store::default();
        let value = vec![b'v'; value_bytes];
        for i in 0..KEYS {
            let key = format!("data/{i:06}").into_bytes();
            let put = mvcc::PutRequest { key, value: value.clone(), ..Default::default() };
            store.apply_put(&put).unwrap();
        }
        let mut steps = Vec::new();
        for _ in 0..5 {
            let req = mvcc::RangeRequest {
                key: b"data/".to_vec(),
                range_end: proto::prefix_range_end(b"data/"),
                count_only,
                ..Default::default()
            };
            let mut build = store.range_start(&req, usize::MAX).unwrap();
            loop {
                let started = Instant::now();
                let step = store.range_step(&mut build, RANGE_STEP_KEYS, RANGE_STEP_BYTES);
                steps.push(started.elapsed());
                match step.unwrap() {
                    RangeStep::More => {}
                    RangeStep::Done(_) | RangeStep::TooLarge => break,
                }
            }
        }
        let f = figures(steps.clone(), 0);
        println!(
            "range_step_{name} steps={} p50_us={} p99_us={} max_us={}",
            steps.len(),
            f.p50_us,
            f.p99_us,
            f.max_us
        );
    }
}

/// The member's peer port (the client port plus one, as `LoneMember`
/// starts it) under connections that never finish a hello: 64 held idle,
/// 64 held after half a hello, and garbage hellos, each kind from its own
/// thread as fast as the port takes them.
fn peer_flood(endpoint: &str, stop: &Arc<AtomicBool>) {
    let (host, port) = endpoint.rsplit_once(':').unwrap();
    let peer = format!("{host}:{}", port.parse::<u16>().unwrap() + 1);
    let partial_hello = ember::transport::wire::MAGIC.to_vec();
    let garbage = vec![0xa5u8; 32];
    let kinds = [(Vec::new(), 64), (partial_hello, 64), (garbage, 1)];
    let floods: Vec<_> = kinds
        .into_iter()
        .map(|(bytes, held)| {
            let (peer, stop) = (peer.clone(), stop.clone());
            thread::spawn(move || {
                let mut open = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(&peer) else { continue };
                    let _ = stream.write_all(&bytes);
                    open.push_back(stream);
                    if open.len() > held {
                        open.pop_front();
                    }
                }
            })
        })
        .collect();
    for flood in floods {
        let _ = flood.join();
    }
}
