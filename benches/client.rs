//! What `ember bench` can generate: the load generator and the client
//! connection against a server that does nothing but answer (an in-process
//! responder thread per connection that decodes a batch of frames and
//! writes every answer in one go).
//!
//! If the generator and a do-nothing server together reach several times
//! what a real node does, the generator is not what a `compare-etcd.sh` run
//! measures. Prints `name=value` lines; the CPU figure is the whole
//! process, the responder included, so it is an upper bound for the
//! generator's own cost. `EMBER_BENCH_TOTAL` sets the requests per run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use ember::cli::bench::{Op, Spec, run};
use ember::client::ConnectOptions;
use ember::proto::*;

fn main() {
    let total: u64 =
        std::env::var("EMBER_BENCH_TOTAL").ok().and_then(|t| t.parse().ok()).unwrap_or(200_000);
    let endpoint = responder();
    let shapes = [(64, 8, Op::Put), (64, 8, Op::Get { serializable: false }), (1, 1, Op::Put)];
    for (clients, conns, op) in shapes {
        let spec =
            Spec { op, clients, conns, total, key_size: 8, val_size: 256, keyspace: 100_000 };
        let options = ConnectOptions {
            idle_timeout: Some(Duration::from_secs(10)),
            max_in_flight: clients.div_ceil(conns) as usize,
            ..ConnectOptions::default()
        };
        let cpu_before_ms = process_cpu_ms();
        let report =
            run(&spec, std::slice::from_ref(&endpoint), &options, None).expect("bench run");
        let cpu_ms = process_cpu_ms() - cpu_before_ms;
        let name = format!(
            "client_bench_{}_c{clients}_k{conns}",
            match op {
                Op::Put => "put",
                Op::Get { .. } => "get",
            }
        );
        let secs = report.elapsed.as_secs_f64();
        println!("{name}_ops_per_s={:.0}", report.latencies_us.len() as f64 / secs);
        println!("{name}_p50_us={}", report.percentile_us(0.5));
        println!("{name}_p99_us={}", report.percentile_us(0.99));
        println!("{name}_process_cpu_us_per_op={:.2}", cpu_ms as f64 * 1000.0 / total as f64);
    }
}

/// CPU time of this process (all threads) from /proc, in ms.
fn process_cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 =
        fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    ticks * 10 // USER_HZ is 100 on Linux.
}

/// A server that answers every Put and Range at once, one thread per
/// connection.
fn responder() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_all(stream));
        }
    });
    address
}

fn answer_all(mut stream: TcpStream) {
    stream.set_nodelay(true).unwrap();
    let params = ServerParams {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        max_frame_bytes: REQUEST_BYTES_MAX_DEFAULT,
        cluster_id: 1,
        member_id: 1,
    };
    let mut hello = [0u8; HELLO_BYTES];
    if stream.read_exact(&mut hello).is_err() {
        return;
    }
    let Opening::Hello { reply, session: Some(session) } = open(&hello, &params) else { return };
    stream.write_all(&reply).unwrap();
    let header = ResponseHeader { cluster_id: 1, member_id: 1, revision: 1, raft_term: 1 };
    let put = Response::Put(PutResponse { header, prev_kv: None });
    let kv = KeyValue { key: b"00000000".to_vec(), value: vec![b'v'; 256], ..KeyValue::default() };
    let range = Response::Range(RangeResponse { header, kvs: vec![kv], more: false, count: 1 });
    let (mut input, mut output) = (Vec::new(), Vec::new());
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let read = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        input.extend_from_slice(&chunk[..read]);
        let mut decoder = FrameDecoder::new(&input, session.server_max_frame_bytes);
        for frame in decoder.by_ref() {
            let frame = frame.unwrap();
            let answer = match decode_request(&frame).unwrap() {
                Request::Put(_) => &put,
                _ => &range,
            };
            encode_response(&mut output, frame.header.id, answer, session.client_max_frame_bytes)
                .unwrap();
        }
        let used = decoder.consumed_bytes();
        input.drain(..used);
        if stream.write_all(&output).is_err() {
            return;
        }
        output.clear();
    }
}
