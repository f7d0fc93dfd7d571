//! Seeded fuzzing of everything that reads bytes from a peer: the sniffer,
//! the hellos, the HTTP head parser, the frame decoder, the body decoders and
//! validation. The property is "a typed answer, never a panic", plus a few
//! invariants of the answers (the decoder never claims bytes it was not given,
//! a decoded request re-encodes to the same value).
//!
//! Inputs are random bytes and mutations (flips, cuts, splices) of valid
//! streams, which reach far deeper into the decoders than noise does. Every
//! case is derived from a seed; a failure prints the seed and the input so it
//! replays exactly. `EMBER_FUZZ_CASES` scales the number of cases per target
//! (default 20,000: well under a second in release).

mod proto_samples;

use std::panic::{AssertUnwindSafe, catch_unwind};

use ember::proto::http::{parse_request_head, sniff};
use ember::proto::*;
use proto_samples::rng::Rng;
use proto_samples::*;

fn cases() -> u64 {
    std::env::var("EMBER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// Runs `target` on `input`, turning a panic into a failure that names the
/// target, the seed and the bytes.
fn run(name: &str, seed: u64, input: &[u8], target: impl FnOnce(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        panic!("{name} panicked on seed {seed} with input {input:02x?}");
    }
}

/// Random bytes, biased towards short inputs and towards the magic and small
/// integers, which is where the parsers branch.
fn noise(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.index(4) {
        0 => rng.index(8),
        1 => rng.index(40),
        _ => rng.index(300),
    };
    let mut bytes = rng.bytes(len);
    if rng.index(3) == 0 && bytes.len() >= 4 {
        bytes[..4].copy_from_slice(&MAGIC);
    }
    for byte in bytes.iter_mut() {
        if rng.index(3) == 0 {
            *byte %= 8;
        }
    }
    bytes
}

/// A valid stream with a few random edits.
fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..1 + rng.index(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.index(bytes.len());
        match rng.index(5) {
            0 => bytes[at] ^= 1 << rng.index(8),
            1 => bytes[at] = rng.next_u64() as u8,
            2 => bytes.truncate(at),
            3 => {
                let end = (at + 1 + rng.index(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => {
                let len = 1 + rng.index(8);
                let insert = rng.bytes(len);
                bytes.splice(at..at, insert);
            }
        }
    }
    bytes
}

fn request_stream() -> Vec<u8> {
    let mut stream = Vec::new();
    for (id, request) in requests().iter().enumerate() {
        encode_request(&mut stream, id as u64, request, REQUEST_BYTES_MAX_DEFAULT).unwrap();
    }
    stream
}

fn server_stream() -> Vec<u8> {
    let mut stream = Vec::new();
    for message in &server_messages() {
        encode_server_message(&mut stream, message, REQUEST_BYTES_MAX_DEFAULT);
    }
    stream
}

/// The server's read path over one buffer: frame, decode, validate, and for
/// each request that passes, check it re-encodes to itself.
fn server_reads(buffer: &[u8], cap: u32) {
    let mut decoder = FrameDecoder::new(buffer, cap);
    for frame in decoder.by_ref() {
        let Ok(frame) = frame else { break };
        assert_eq!(frame.body.len(), frame.header.body_len_bytes as usize);
        let Ok(request) = decode_request(&frame) else { continue };
        let mut again = Vec::new();
        if encode_request(&mut again, 1, &request, u32::MAX).is_ok() {
            let reframed = FrameDecoder::new(&again, u32::MAX).next().unwrap().unwrap();
            assert_eq!(decode_request(&reframed).as_ref(), Ok(&request));
        }
        let _ = validate(request, &Limits::default());
    }
    assert!(decoder.consumed_bytes() <= buffer.len());
    if let Some(needed) = decoder.needed_bytes() {
        assert!(needed <= FRAME_HEADER_BYTES + cap as usize);
    }
}

/// The client's read path over one buffer.
fn client_reads(buffer: &[u8], cap: u32) {
    for frame in FrameDecoder::new(buffer, cap) {
        let Ok(frame) = frame else { break };
        if let Ok(ServerMessage::Error { error, .. }) = decode_server_message(&frame) {
            let _ = (error.code(), error.grpc());
        }
    }
}

/// Every parser that looks at the first bytes of a connection.
fn connection_start(bytes: &[u8]) {
    let server = ServerParams {
        min_version: 1,
        max_version: 2,
        max_frame_bytes: REQUEST_BYTES_MAX_DEFAULT,
        cluster_id: 1,
        member_id: 2,
    };
    let _ = sniff(bytes);
    let _ = parse_request_head(bytes);
    if let Opening::Hello { session: Some(session), .. } = open(bytes, &server) {
        assert!(session.client_max_frame_bytes >= MIN_FRAME_BYTES);
    }
    if let Ok(Some(hello)) = ClientHello::parse(bytes) {
        assert!(hello.min_version <= hello.max_version);
        let answer = negotiate(&hello, &server);
        let parsed = ServerHello::parse(&answer.encode(&server), &hello);
        assert_eq!(parsed, Ok(Some(answer)));
    }
    let _ = ServerHello::parse(bytes, &ClientHello::new(MIN_FRAME_BYTES));
}

/// Raw bodies straight into each body decoder.
fn bodies(bytes: &[u8]) {
    let _ = decode_body::<Request>(bytes).map(|r| validate(r, &Limits::default()));
    let _ = decode_body::<Response>(bytes);
    let _ = decode_body::<WatchMessage>(bytes);
    let _ = decode_body::<ErrorBody>(bytes);
}

#[test]
fn connection_start_parsers_never_panic() {
    for seed in 0..cases() {
        let mut rng = Rng::new(seed);
        let input = noise(&mut rng);
        run("connection start", seed, &input, connection_start);
    }
}

#[test]
fn body_decoders_never_panic_on_noise() {
    for seed in 0..cases() {
        let mut rng = Rng::new(seed ^ 0xB0D1);
        let input = noise(&mut rng);
        run("body decoders", seed, &input, bodies);
    }
}

#[test]
fn body_decoders_never_panic_on_mutated_bodies() {
    let samples: Vec<Vec<u8>> = requests()
        .iter()
        .map(|r| postcard::to_stdvec(r).unwrap())
        .chain(responses().iter().map(|r| postcard::to_stdvec(r).unwrap()))
        .chain(watch_messages().iter().map(|m| postcard::to_stdvec(m).unwrap()))
        .collect();
    for seed in 0..cases() {
        let mut rng = Rng::new(seed ^ 0x5A3D);
        let sample = &samples[rng.index(samples.len())];
        let input = mutate(&mut rng, sample);
        run("body decoders", seed, &input, bodies);
    }
}

#[test]
fn frame_decoding_never_panics_on_noise_or_mutated_streams() {
    let valid = [request_stream(), server_stream()];
    for seed in 0..cases() {
        let mut rng = Rng::new(seed ^ 0xF7A3);
        let input = match rng.index(3) {
            0 => noise(&mut rng),
            _ => {
                let which = rng.index(2);
                mutate(&mut rng, &valid[which])
            }
        };
        let cap = [0, 1, 64, MIN_FRAME_BYTES, REQUEST_BYTES_MAX_DEFAULT, u32::MAX][rng.index(6)];
        run("server read path", seed, &input, |bytes| server_reads(bytes, cap));
        run("client read path", seed, &input, |bytes| client_reads(bytes, cap));
    }
}
