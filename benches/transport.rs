//! Peer transport throughput over loopback, one thread, one poll loop driving
//! both ends (as two members would each drive theirs).
//!
//! Prints `name=value` lines:
//! - `transport_msgs_per_s`: small Raft-sized messages (128-byte payload)
//!   from one member to another, sent in bursts as a leader's Ready would;
//! - `transport_stream_mib_per_s`: a chunked payload (a snapshot) streamed
//!   through a receiver that drains every iteration.
//!
//! `EMBER_BENCH_MESSAGES` (default 1000000) and `EMBER_BENCH_STREAM_MIB`
//! (default 256) scale the runs.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ember::transport::{Config, PeerAddr, StreamEvent, Transport};
use mio::net::TcpListener;
use mio::{Events, Poll};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Append {
    term: u64,
    index: u64,
    payload: Vec<u8>,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Pair {
    poll: Poll,
    events: Events,
    a: Transport<Append>,
    b: Transport<Append>,
}

impl Pair {
    fn new() -> Pair {
        let la = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let lb = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = |l: &TcpListener| -> Vec<SocketAddr> { vec![l.local_addr().unwrap()] };
        let ca =
            Config::new(9, 1, vec![PeerAddr { id: 2, name: "127.0.0.1".into(), addrs: addr(&lb) }]);
        let cb =
            Config::new(9, 2, vec![PeerAddr { id: 1, name: "127.0.0.1".into(), addrs: addr(&la) }]);
        let now = Instant::now();
        let poll = Poll::new().unwrap();
        let mut a = Transport::new(ca, la, 0..16, now).unwrap();
        let mut b = Transport::new(cb, lb, 16..32, now).unwrap();
        a.register(poll.registry(), now).unwrap();
        b.register(poll.registry(), now).unwrap();
        let mut pair = Pair { poll, events: Events::with_capacity(256), a, b };
        while !pair.a.peer_status(2).unwrap().connected || !pair.b.peer_status(1).unwrap().connected
        {
            pair.turn(Duration::from_millis(1));
        }
        pair
    }

    fn turn(&mut self, timeout: Duration) {
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        let now = Instant::now();
        let registry = self.poll.registry();
        for event in self.events.iter() {
            if self.a.owns(event.token()) {
                self.a.handle_event(registry, event.token(), now);
            } else {
                self.b.handle_event(registry, event.token(), now);
            }
        }
        self.a.tick(registry, now);
        self.b.tick(registry, now);
        self.a.flush(registry, now);
        self.b.flush(registry, now);
    }
}

fn bench_messages(pair: &mut Pair, total: u64) {
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    while received < total {
        // A burst per iteration, as one Ready's messages; a full queue just
        // means the socket is the limit right now.
        for _ in 0..256 {
            if sent == total {
                break;
            }
            let message = Append { term: 3, index: sent, payload: vec![7; 128] };
            if pair.a.send(2, &message).is_err() {
                break;
            }
            sent += 1;
        }
        pair.turn(Duration::ZERO);
        received += pair.b.drain_received().count() as u64;
        pair.a.unreachable();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("transport_msgs={total}");
    println!("transport_msgs_secs={secs:.3}");
    println!("transport_msgs_per_s={:.0}", total as f64 / secs);
}

fn bench_stream(pair: &mut Pair, mib: u64) {
    let total_bytes = mib * 1024 * 1024;
    let header = Append { term: 3, index: 0, payload: Vec::new() };
    let source = Box::new(io::Read::take(io::repeat(0x5a), total_bytes));
    pair.a.start_stream(2, &header, source).unwrap();
    let start = Instant::now();
    let mut done = false;
    let mut received_bytes = 0u64;
    while !done {
        pair.turn(Duration::from_millis(1));
        for event in pair.b.drain_stream_events() {
            match event {
                StreamEvent::Chunk { data, .. } => received_bytes += data.len() as u64,
                StreamEvent::Finished { .. } => done = true,
                StreamEvent::Aborted { reason, .. } => panic!("stream aborted: {reason:?}"),
                StreamEvent::Started { .. } => {}
            }
        }
    }
    assert_eq!(received_bytes, total_bytes);
    let secs = start.elapsed().as_secs_f64();
    println!("transport_stream_mib={mib}");
    println!("transport_stream_secs={secs:.3}");
    println!("transport_stream_mib_per_s={:.0}", mib as f64 / secs);
}

fn main() {
    let mut pair = Pair::new();
    bench_messages(&mut pair, env_number("EMBER_BENCH_MESSAGES", 1_000_000));
    bench_stream(&mut pair, env_number("EMBER_BENCH_STREAM_MIB", 256));
}
