//! The client wire protocol: handshake, frame codec, request and response
//! types, stable error codes, size caps, and validation at the boundary.
//!
//! Bytes from a client are checked once here and become typed values; past
//! this module nothing trusts or re-parses them.
//!
//! Must not touch: connections, sockets, or any node state. It turns bytes into
//! values and back, nothing more.
//!
//! A connection, as the server drives it with these parts:
//!
//! 1. `open` the first bytes (`http::sniff`, then `ClientHello::parse` and
//!    `negotiate`, or `http::parse_request_head`): send the 32-byte
//!    `ServerHello` it prepared and keep its `Session`; a refusal, HTTP or
//!    garbage closes the connection after the answer, if any.
//! 3. Run a `FrameDecoder` over the read buffer with the server's cap. A
//!    `FrameError` is answered with `encode_error` (its `code()`: a
//!    `TooLarge` frame gets `RequestTooLarge`) and closes the connection.
//! 4. `decode_request` each frame, then `validate` it into a `ValidRequest`;
//!    either failure is an `Error` frame for that request id only (a
//!    `BodyError`'s `code()`, or the `ErrorCode` from `validate`).
//! 5. Answer with `encode_response` / `encode_error`, in any order, and push
//!    `encode_watch` frames for watches, all appended to the send buffer.
//!
//! The byte layouts are in `docs/PROTOCOL.md` and in each file's doc.
//!
//! Layout: `opening` (the first bytes), `handshake` (hellos), `frame` (header and framing), `codec` (typed
//! bodies), `types` (etcd-shaped messages), `error` (codes and gRPC mapping),
//! `validate` (boundary checks), `http` (sniffing and `/health`), `bytes`
//! (serde glue for byte strings; the txn decoding budget is
//! `crate::limits`).

pub mod bytes;
pub mod codec;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod opening;
pub mod types;
pub mod validate;

pub use crate::limits::{REQUEST_BYTES_MAX_DEFAULT, TXN_DEPTH_MAX, TXN_ITEMS_MAX};
pub use codec::{
    BodyError, ServerMessage, decode_body, decode_request, decode_server_message, encode_error,
    encode_request, encode_response, encode_watch,
};
pub use error::{ErrorBody, ErrorCode, GrpcCode};
pub use frame::{
    EncodeError, FRAME_HEADER_BYTES, Frame, FrameDecoder, FrameError, FrameHeader, FrameKind,
    encode_frame,
};
pub use handshake::{
    CLIENT_HELLO_BYTES, ClientHello, HandshakeError, MAGIC, MIN_FRAME_BYTES, PROTOCOL_VERSION,
    Refusal, SERVER_HELLO_BYTES, ServerHello, ServerParams, negotiate,
};
pub use opening::{HELLO_BYTES, Opening, Session, open, open_plaintext_on_tls_port};
pub use types::*;
pub use validate::{Limits, ValidRequest, validate};
