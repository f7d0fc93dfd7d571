//! The frame codec end to end: round trips of every message, streams cut at
//! every split point, oversized frames refused before their body, the error
//! frame that always fits, and the wire bytes pinned where they are contract.

mod proto_samples;

use ember::proto::*;
use proto_samples::rng::Rng;
use proto_samples::*;

const CAP: u32 = REQUEST_BYTES_MAX_DEFAULT;

fn request_stream() -> (Vec<u8>, Vec<(u64, Request)>) {
    let mut stream = Vec::new();
    let mut sent = Vec::new();
    for (index, request) in requests().into_iter().enumerate() {
        let id = 1 + index as u64 * 3;
        encode_request(&mut stream, id, &request, CAP).unwrap();
        sent.push((id, request));
    }
    (stream, sent)
}

/// Decodes every complete frame of `buffer` as requests, returning them and
/// the bytes they used.
fn take_requests(buffer: &[u8]) -> (Vec<(u64, Request)>, usize) {
    let mut decoder = FrameDecoder::new(buffer, CAP);
    let mut got = Vec::new();
    for frame in decoder.by_ref() {
        let frame = frame.expect("a well-formed stream never fails to frame");
        got.push((frame.header.id, decode_request(&frame).unwrap()));
    }
    (got, decoder.consumed_bytes())
}

#[test]
fn every_request_round_trips() {
    let (stream, sent) = request_stream();
    let (got, consumed) = take_requests(&stream);
    assert_eq!(got, sent);
    assert_eq!(consumed, stream.len());
}

#[test]
fn every_server_message_round_trips() {
    let mut stream = Vec::new();
    let sent = server_messages();
    for message in &sent {
        encode_server_message(&mut stream, message, CAP);
    }
    let got: Vec<ServerMessage> = FrameDecoder::new(&stream, CAP)
        .map(|frame| decode_server_message(&frame.unwrap()).unwrap())
        .collect();
    assert_eq!(got, sent);
}

#[test]
fn a_request_stream_cut_at_every_point_yields_the_same_frames() {
    let (stream, sent) = request_stream();
    for cut in 0..=stream.len() {
        // First read: the bytes up to the cut; the rest arrives later.
        let mut buffer = stream[..cut].to_vec();
        let (mut got, consumed) = take_requests(&buffer);
        buffer.drain(..consumed);
        buffer.extend_from_slice(&stream[cut..]);
        let (rest, consumed) = take_requests(&buffer);
        got.extend(rest);
        assert_eq!(consumed, buffer.len(), "cut at {cut}");
        assert_eq!(got, sent, "cut at {cut}");
    }
}

#[test]
fn a_server_stream_fed_in_random_chunks_yields_the_same_frames() {
    let sent = server_messages();
    let mut stream = Vec::new();
    for message in &sent {
        encode_server_message(&mut stream, message, CAP);
    }
    for seed in 0..64 {
        let mut rng = Rng::new(seed);
        let (mut buffer, mut got, mut at) = (Vec::new(), Vec::new(), 0);
        while at < stream.len() {
            let chunk = 1 + rng.index(64);
            let end = (at + chunk).min(stream.len());
            buffer.extend_from_slice(&stream[at..end]);
            at = end;
            let mut decoder = FrameDecoder::new(&buffer, CAP);
            for frame in decoder.by_ref() {
                got.push(decode_server_message(&frame.unwrap()).unwrap());
            }
            let consumed = decoder.consumed_bytes();
            if let Some(needed) = decoder.needed_bytes() {
                assert!(needed > buffer.len() - consumed, "seed {seed}: a frame was left behind");
            }
            buffer.drain(..consumed);
        }
        assert!(buffer.is_empty(), "seed {seed}");
        assert_eq!(got, sent, "seed {seed}");
    }
}

#[test]
fn an_oversized_frame_is_refused_from_its_header_alone() {
    let cap = 64 * 1024;
    let mut stream = Vec::new();
    encode_request(&mut stream, 1, &Request::Status, cap).unwrap();
    let good_bytes = stream.len();
    let huge = FrameHeader { body_len_bytes: cap + 1, kind: FrameKind::Request, id: 2 };
    stream.extend_from_slice(&huge.to_bytes());
    let mut decoder = FrameDecoder::new(&stream, cap);
    assert!(decoder.next().unwrap().is_ok());
    // Nothing of the body is present, and none is asked for.
    assert_eq!(decoder.needed_bytes(), None);
    let error = decoder.next().unwrap().unwrap_err();
    assert_eq!(
        error,
        FrameError::TooLarge {
            kind: FrameKind::Request,
            id: 2,
            body_len_bytes: cap + 1,
            max_body_bytes: cap
        }
    );
    assert_eq!(decoder.next(), None, "the decoder stops after a framing error");
    assert_eq!(decoder.consumed_bytes(), good_bytes);
    assert_eq!(error.code(), ErrorCode::RequestTooLarge);

    // The server answers that request id and closes; the client reads it.
    let mut answer = Vec::new();
    encode_error(&mut answer, error.id(), &ErrorBody::new(error.code()), MIN_FRAME_BYTES);
    let frame = FrameDecoder::new(&answer, MIN_FRAME_BYTES).next().unwrap().unwrap();
    let ServerMessage::Error { request_id: 2, error } = decode_server_message(&frame).unwrap()
    else {
        panic!("expected an error frame for request 2");
    };
    assert_eq!(error.code(), Some(ErrorCode::RequestTooLarge));
    assert_eq!(error.grpc(), GrpcCode::ResourceExhausted);
}

#[test]
fn a_frame_exactly_at_the_cap_passes() {
    let put =
        Request::Put(PutRequest { key: b"k".to_vec(), value: vec![7; 1000], ..Default::default() });
    let mut stream = Vec::new();
    let frame_bytes = encode_request(&mut stream, 5, &put, CAP).unwrap();
    let body_bytes = (frame_bytes - FRAME_HEADER_BYTES) as u32;
    assert_eq!(take_requests(&stream).0, vec![(5, put.clone())]);
    let frame = FrameDecoder::new(&stream, body_bytes).next().unwrap();
    assert!(frame.is_ok());
    let frame = FrameDecoder::new(&stream, body_bytes - 1).next().unwrap();
    assert!(matches!(frame, Err(FrameError::TooLarge { .. })));
    let mut out = Vec::new();
    assert!(matches!(
        encode_request(&mut out, 5, &put, body_bytes - 1),
        Err(EncodeError::TooLarge { .. })
    ));
    assert!(out.is_empty(), "a refused encode leaves the buffer as it was");
}

#[test]
fn an_error_frame_always_fits_the_smallest_limit() {
    let long = "é".repeat(10_000);
    let mut out = Vec::new();
    let written = encode_error(
        &mut out,
        9,
        &ErrorBody::with_message(ErrorCode::Internal, long),
        MIN_FRAME_BYTES,
    );
    assert!(written <= FRAME_HEADER_BYTES + MIN_FRAME_BYTES as usize);
    let frame = FrameDecoder::new(&out, MIN_FRAME_BYTES).next().unwrap().unwrap();
    let ServerMessage::Error { error, .. } = decode_server_message(&frame).unwrap() else {
        panic!("expected an error frame");
    };
    assert_eq!(error.code(), Some(ErrorCode::Internal));
    assert!(error.message.len() > 4000 && error.message.chars().all(|c| c == 'é'));
}

#[test]
fn a_response_too_large_for_the_client_is_replaced_by_an_error() {
    let big = Response::Range(RangeResponse {
        kvs: vec![kv("/k", &"v".repeat(5000))],
        ..Default::default()
    });
    let mut out = b"earlier frames".to_vec();
    let error = encode_response(&mut out, 3, &big, MIN_FRAME_BYTES).unwrap_err();
    assert!(matches!(error, EncodeError::TooLarge { max_body_bytes: MIN_FRAME_BYTES, .. }));
    assert_eq!(out, b"earlier frames");
}

#[test]
fn bodies_must_match_their_kind_and_be_used_up() {
    let mut out = Vec::new();
    encode_response(&mut out, 1, &Response::WatchProgress(header(1)), CAP).unwrap();
    let frame = FrameDecoder::new(&out, CAP).next().unwrap().unwrap();
    let wrong_kind = decode_request(&frame).unwrap_err();
    assert_eq!(wrong_kind, BodyError::UnexpectedKind(FrameKind::Response));
    assert_eq!(wrong_kind.code(), ErrorCode::MalformedRequest);

    let mut body = postcard::to_stdvec(&Request::Status).unwrap();
    body.push(0);
    let header = FrameHeader { body_len_bytes: body.len() as u32, kind: FrameKind::Request, id: 1 };
    let mut stream = header.to_bytes().to_vec();
    stream.extend_from_slice(&body);
    let frame = FrameDecoder::new(&stream, CAP).next().unwrap().unwrap();
    assert_eq!(decode_request(&frame), Err(BodyError::TrailingBytes(1)));
}

/// Bytes of `Request::Txn` nested `depth` levels deep, written by hand so the
/// test can go far past what the encoder would be asked to write.
fn nested_txn_bytes(depth: usize) -> Vec<u8> {
    const TXN_TAG: u8 = 3; // Request::Txn and RequestOp::Txn share index 3.
    let mut bytes = vec![TXN_TAG];
    for _ in 1..depth {
        bytes.extend_from_slice(&[0, 1, TXN_TAG]); // no compares, one op: a txn
    }
    bytes.extend_from_slice(&[0, 0, 0]); // the innermost txn is empty
    bytes.extend(std::iter::repeat_n(0, depth - 1)); // each level's empty failure
    bytes
}

#[test]
fn txn_nesting_is_bounded_when_decoding() {
    let ok: Request = decode_body(&nested_txn_bytes(TXN_DEPTH_MAX)).unwrap();
    assert!(matches!(ok, Request::Txn(_)));
    let too_deep = decode_body::<Request>(&nested_txn_bytes(TXN_DEPTH_MAX + 1));
    assert!(matches!(too_deep, Err(BodyError::Malformed(_))));
    // Deep enough to overflow the stack without the bound.
    let hostile = decode_body::<Request>(&nested_txn_bytes(500_000));
    assert!(matches!(hostile, Err(BodyError::Malformed(_))));
    // The bound resets after a failure: the next decode starts at depth 0.
    assert!(decode_body::<Request>(&nested_txn_bytes(TXN_DEPTH_MAX)).is_ok());
}

/// The byte layouts that docs/PROTOCOL.md promises.
#[test]
fn wire_bytes_are_pinned() {
    let mut out = Vec::new();
    let put =
        Request::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() });
    encode_request(&mut out, 0x0102, &put, CAP).unwrap();
    #[rustfmt::skip]
    let expected = [
        9, 0, 0, 0,   1,   0,   0, 0,   0x02, 0x01, 0, 0, 0, 0, 0, 0,
        1,            // Request::Put
        1, b'k',      // key
        1, b'v',      // value
        0,            // lease
        0, 0, 0,      // prev_kv, ignore_value, ignore_lease
    ];
    assert_eq!(out, expected);

    let tags: Vec<u8> = requests().iter().map(|r| postcard::to_stdvec(r).unwrap()[0]).collect();
    assert_eq!(tags, (0..42).collect::<Vec<u8>>(), "request tags follow the documented table");
    let tags: Vec<u8> = responses().iter().map(|r| postcard::to_stdvec(r).unwrap()[0]).collect();
    assert_eq!(tags, (0..42).collect::<Vec<u8>>(), "response tags mirror request tags");

    let hello = ClientHello { min_version: 1, max_version: 1, max_frame_bytes: 0x0001_0000 };
    assert_eq!(hello.to_bytes(), *b"EMBR\x01\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00");
}

fn txn_with_deletes(deletes: usize) -> TxnRequest {
    let delete = RequestOp::DeleteRange(DeleteRangeRequest::default());
    TxnRequest { success: vec![delete; deletes], ..TxnRequest::default() }
}

fn decodes(txn: TxnRequest) -> bool {
    let body = postcard::to_stdvec(&Request::Txn(txn)).unwrap();
    decode_body::<Request>(&body).is_ok()
}

#[test]
fn a_txn_holds_a_bounded_number_of_items_when_decoding() {
    // A delete op is 4 bytes on the wire and 104 in memory: the count stops
    // a 1.5 MiB body from growing twenty-fold before validation sees it.
    assert!(decodes(txn_with_deletes(TXN_ITEMS_MAX)));
    assert!(!decodes(txn_with_deletes(TXN_ITEMS_MAX + 1)));
    // The count covers the whole tree: two nested txns plus their ops.
    let half = (TXN_ITEMS_MAX - 2) / 2;
    let nested = |n| RequestOp::Txn(txn_with_deletes(n));
    let fits = TxnRequest { success: vec![nested(half), nested(half)], ..TxnRequest::default() };
    assert!(decodes(fits));
    let over =
        TxnRequest { success: vec![nested(half), nested(half + 1)], ..TxnRequest::default() };
    assert!(!decodes(over));
    // Each request starts with a fresh count.
    assert!(decodes(txn_with_deletes(TXN_ITEMS_MAX)));
}

#[test]
fn an_oversized_frame_arriving_byte_by_byte_is_refused_after_its_header() {
    // A hostile client trickles a frame that claims 1 GiB. The server's read
    // buffer holds the header and no more before the refusal.
    let cap = REQUEST_BYTES_MAX_DEFAULT;
    let header = FrameHeader { body_len_bytes: 1 << 30, kind: FrameKind::Request, id: 77 };
    let mut incoming = header.to_bytes().to_vec();
    incoming.extend(std::iter::repeat_n(0xAB, 4096));
    let mut buffer = Vec::new();
    for &byte in &incoming {
        buffer.push(byte);
        let mut decoder = FrameDecoder::new(&buffer, cap);
        match decoder.next() {
            None => assert_eq!(decoder.needed_bytes(), Some(FRAME_HEADER_BYTES)),
            Some(Err(error)) => {
                assert_eq!(buffer.len(), FRAME_HEADER_BYTES);
                assert_eq!(error.id(), 77);
                assert_eq!(error.code(), ErrorCode::RequestTooLarge);
                return;
            }
            Some(Ok(frame)) => panic!("an oversized frame was accepted: {frame:?}"),
        }
    }
    panic!("the oversized frame was never refused");
}

#[test]
fn a_malformed_body_fails_its_request_and_not_its_neighbours() {
    let mut stream = Vec::new();
    encode_request(&mut stream, 1, &Request::Status, CAP).unwrap();
    let garbage = [0xFF, 0xFF, 0xFF];
    let header = FrameHeader { body_len_bytes: 3, kind: FrameKind::Request, id: 2 };
    stream.extend_from_slice(&header.to_bytes());
    stream.extend_from_slice(&garbage);
    encode_request(&mut stream, 3, &Request::Put(put("/a")), CAP).unwrap();
    let results: Vec<(u64, Result<Request, BodyError>)> = FrameDecoder::new(&stream, CAP)
        .map(|frame| frame.unwrap())
        .map(|frame| (frame.header.id, decode_request(&frame)))
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], (1, Ok(Request::Status)));
    assert!(matches!(&results[1], (2, Err(BodyError::Malformed(_)))));
    assert_eq!(results[2], (3, Ok(Request::Put(put("/a")))));
}
