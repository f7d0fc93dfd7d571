//! Typed frames: a request, a response, an error or a watch message, encoded
//! into a caller's buffer and decoded from a `Frame` the decoder yielded.
//!
//! Decoding a body is all-or-nothing: the body must decode as the type its
//! frame kind announces and be used up exactly, else it is `BodyError`. A
//! malformed body leaves the framing intact (the header said how long it
//! was), so the server answers `MalformedRequest` for that request id and
//! carries on; only framing errors (`FrameError`) close a connection.

use serde::de::DeserializeOwned;

use super::error::{ErrorBody, ErrorCode};
use super::frame::{EncodeError, Frame, FrameKind, encode_frame};
use super::handshake::MIN_FRAME_BYTES;
use super::types::{Request, Response, WatchMessage};

/// Why a frame's body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The frame is of a kind this side does not accept (a server receiving
    /// a `Response`, a client receiving a `Request`).
    UnexpectedKind(FrameKind),
    /// The bytes are not a valid encoding of the announced type.
    Malformed(String),
    /// The body decoded but left this many bytes unread.
    TrailingBytes(usize),
}

impl BodyError {
    /// The code to answer the request with; the connection goes on.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::MalformedRequest
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::UnexpectedKind(kind) => write!(f, "unexpected frame kind {kind:?}"),
            BodyError::Malformed(why) => write!(f, "malformed frame body: {why}"),
            BodyError::TrailingBytes(n) => write!(f, "{n} bytes left after the frame body"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A frame as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    Response {
        request_id: u64,
        response: Response,
    },
    /// `request_id` 0: the connection as a whole failed and will close.
    Error {
        request_id: u64,
        error: ErrorBody,
    },
    Watch {
        watch_id: u64,
        message: WatchMessage,
    },
}

/// Decodes a body that must be exactly one `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(BodyError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// The server's view: the request a `Request` frame carries.
pub fn decode_request(frame: &Frame<'_>) -> Result<Request, BodyError> {
    if frame.header.kind != FrameKind::Request {
        return Err(BodyError::UnexpectedKind(frame.header.kind));
    }
    decode_body(frame.body)
}

/// The client's view: what a `Response`, `Error` or `Watch` frame carries.
pub fn decode_server_message(frame: &Frame<'_>) -> Result<ServerMessage, BodyError> {
    let id = frame.header.id;
    match frame.header.kind {
        FrameKind::Request => Err(BodyError::UnexpectedKind(FrameKind::Request)),
        FrameKind::Response => {
            Ok(ServerMessage::Response { request_id: id, response: decode_body(frame.body)? })
        }
        FrameKind::Error => {
            Ok(ServerMessage::Error { request_id: id, error: decode_body(frame.body)? })
        }
        FrameKind::Watch => {
            Ok(ServerMessage::Watch { watch_id: id, message: decode_body(frame.body)? })
        }
    }
}

/// Appends a `Request` frame; `max_body_bytes` is the server's limit.
pub fn encode_request(
    out: &mut Vec<u8>,
    request_id: u64,
    request: &Request,
    max_body_bytes: u32,
) -> Result<usize, EncodeError> {
    encode_frame(out, FrameKind::Request, request_id, request, max_body_bytes)
}

/// Appends a `Response` frame; `max_body_bytes` is the client's limit. On
/// `TooLarge` nothing was appended: answer `ResponseTooLarge` instead.
pub fn encode_response(
    out: &mut Vec<u8>,
    request_id: u64,
    response: &Response,
    max_body_bytes: u32,
) -> Result<usize, EncodeError> {
    encode_frame(out, FrameKind::Response, request_id, response, max_body_bytes)
}

/// Appends a `Watch` frame for `watch_id`; `max_body_bytes` is the client's limit.
pub fn encode_watch(
    out: &mut Vec<u8>,
    watch_id: u64,
    message: &WatchMessage,
    max_body_bytes: u32,
) -> Result<usize, EncodeError> {
    encode_frame(out, FrameKind::Watch, watch_id, message, max_body_bytes)
}

/// Appends an `Error` frame. It always fits: the message is cut (on a char
/// boundary) to what the client's limit leaves room for, and that limit is
/// at least `MIN_FRAME_BYTES` after a handshake. Returns the frame's bytes.
pub fn encode_error(
    out: &mut Vec<u8>,
    request_id: u64,
    error: &ErrorBody,
    max_body_bytes: u32,
) -> usize {
    let max_body_bytes = max_body_bytes.max(MIN_FRAME_BYTES);
    // Code (at most 3 bytes) plus the message length varint (at most 5).
    let room_bytes = max_body_bytes as usize - 8;
    let mut cut = error.message.len().min(room_bytes);
    while !error.message.is_char_boundary(cut) {
        cut -= 1;
    }
    let body = (error.code_number, &error.message[..cut]);
    match encode_frame(out, FrameKind::Error, request_id, &body, max_body_bytes) {
        Ok(bytes) => bytes,
        Err(error) => unreachable!("an error frame cut to fit did not fit: {error}"),
    }
}
