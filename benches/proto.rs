//! Client protocol codec throughput: what one request or answer costs to
//! frame, encode, decode and validate on this machine.
//!
//! Prints `name=value` lines. The workload matches `ember bench put|get`
//! with `--key-size 8 --val-size 256`: a put request and a one-key range
//! answer, in batches of 1024 frames, the way a busy connection's read and
//! write buffers hold many frames at once.

use std::hint::black_box;
use std::time::Instant;

use ember::proto::*;

const FRAMES_PER_BATCH: usize = 1024;
const BATCHES: usize = 200;

fn put_request(i: usize) -> Request {
    Request::Put(PutRequest {
        key: format!("{:08}", i % 100_000).into_bytes(),
        value: vec![b'x'; 256],
        ..PutRequest::default()
    })
}

fn range_response(i: usize) -> Response {
    Response::Range(RangeResponse {
        header: ResponseHeader { cluster_id: 1, member_id: 2, revision: i as i64, raft_term: 3 },
        kvs: vec![KeyValue {
            key: format!("{:08}", i % 100_000).into_bytes(),
            create_revision: 10,
            mod_revision: i as i64,
            version: 4,
            value: vec![b'x'; 256],
            lease: 0,
        }],
        more: false,
        count: 1,
    })
}

/// Runs `batch` BATCHES times and prints its cost per frame.
fn measure(name: &str, mut batch: impl FnMut() -> usize) {
    batch(); // warm the caches and the allocator
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..BATCHES {
        bytes += batch();
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let frames = (FRAMES_PER_BATCH * BATCHES) as f64;
    println!("{name}_ns_per_frame={:.0}", elapsed_secs * 1e9 / frames);
    println!("{name}_mib_per_s={:.0}", bytes as f64 / elapsed_secs / (1024.0 * 1024.0));
}

fn main() {
    let requests: Vec<Request> = (0..FRAMES_PER_BATCH).map(put_request).collect();
    let responses: Vec<Response> = (0..FRAMES_PER_BATCH).map(range_response).collect();
    let cap = REQUEST_BYTES_MAX_DEFAULT;

    let mut out = Vec::with_capacity(FRAMES_PER_BATCH * 300);
    measure("put_request_encode", || {
        out.clear();
        for (id, request) in requests.iter().enumerate() {
            encode_request(&mut out, id as u64, request, cap).unwrap();
        }
        black_box(&out);
        out.len()
    });

    let stream = out.clone();
    measure("put_request_decode_validate", || {
        let limits = Limits::default();
        for frame in FrameDecoder::new(&stream, cap) {
            let request = decode_request(&frame.unwrap()).unwrap();
            black_box(validate(request, &limits).unwrap());
        }
        stream.len()
    });

    measure("range_response_encode", || {
        out.clear();
        for (id, response) in responses.iter().enumerate() {
            encode_response(&mut out, id as u64, response, cap).unwrap();
        }
        black_box(&out);
        out.len()
    });

    let stream = out.clone();
    measure("range_response_decode", || {
        for frame in FrameDecoder::new(&stream, cap) {
            black_box(decode_server_message(&frame.unwrap()).unwrap());
        }
        stream.len()
    });

    measure("framing_only", || {
        let frames =
            FrameDecoder::new(&stream, cap).map(|frame| frame.unwrap().body.len()).sum::<usize>();
        black_box(frames);
        stream.len()
    });
}
