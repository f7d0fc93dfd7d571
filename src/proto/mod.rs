//! The client wire protocol: handshake, frame codec, request and response
//! types, stable error codes, size caps, and validation at the boundary.
//!
//! Bytes from a client are checked once here and become typed values; past
//! this module nothing trusts or re-parses them.
//!
//! Must not touch: connections, sockets, or any node state. It turns bytes into
//! values and back, nothing more.
