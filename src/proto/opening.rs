//! The start of a client connection in one pure step: sniff the first bytes,
//! then read either the hello or an HTTP request head.
//!
//! The server calls `open` on its read buffer each time bytes arrive until
//! the answer is something other than `NeedMore`, then acts on it once. A
//! hello and the first frames often arrive in the same read; `Hello` says how
//! many bytes the hello took, and the rest of the buffer is frames.

use super::handshake::{
    CLIENT_HELLO_BYTES, ClientHello, SERVER_HELLO_BYTES, ServerHello, ServerParams, negotiate,
};
use super::http::{HttpError, HttpRequest, Sniff, parse_request_head, sniff};

/// What the first bytes of a connection call for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening<'a> {
    /// Not enough bytes to decide; read more.
    NeedMore,
    /// A protocol client: send `reply`, drop the first `CLIENT_HELLO_BYTES`
    /// of the buffer. If `session` is `None` the hello was refused: close
    /// once the reply is written.
    Hello { reply: [u8; SERVER_HELLO_BYTES], session: Option<Session> },
    /// An HTTP request head; route it (`http::Ask::of`), answer, close.
    Http(HttpRequest<'a>),
    /// An HTTP request the parser refused; answer `http::write_http_error`
    /// and close.
    HttpError(HttpError),
    /// Neither protocol, or a hello that is not one (wrong reserved bytes,
    /// an empty version range): close without an answer.
    Garbage,
}

/// What an accepted handshake fixed for the rest of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub version: u16,
    /// Cap for frames the server sends: the client's `max_frame_bytes`.
    pub client_max_frame_bytes: u32,
    /// Cap for frames the server reads: its own `max_frame_bytes`.
    pub server_max_frame_bytes: u32,
}

/// Bytes of the buffer the hello takes, for the caller to drop after `Hello`.
pub const HELLO_BYTES: usize = CLIENT_HELLO_BYTES;

/// Decides what to do with a new connection from the bytes read so far.
pub fn open<'a>(buffer: &'a [u8], server: &ServerParams) -> Opening<'a> {
    match sniff(buffer) {
        Sniff::NeedMore => Opening::NeedMore,
        Sniff::Garbage => Opening::Garbage,
        Sniff::Http => match parse_request_head(buffer) {
            Ok(None) => Opening::NeedMore,
            Ok(Some(head)) => Opening::Http(head),
            Err(error) => Opening::HttpError(error),
        },
        Sniff::Handshake => match ClientHello::parse(buffer) {
            Ok(None) => Opening::NeedMore,
            Ok(Some(hello)) => answer_hello(&hello, server),
            Err(_) => Opening::Garbage,
        },
    }
}

/// What to answer a client that speaks plaintext to a port that speaks
/// only TLS: a refusal in its own protocol (`Refusal::TlsRequired` to a
/// hello, a 400 to HTTP) rather than a silence it would wait on.
pub fn open_plaintext_on_tls_port<'a>(buffer: &'a [u8], server: &ServerParams) -> Opening<'a> {
    match sniff(buffer) {
        Sniff::NeedMore => Opening::NeedMore,
        Sniff::Garbage => Opening::Garbage,
        Sniff::Http => Opening::HttpError(HttpError::TlsRequired),
        Sniff::Handshake => match ClientHello::parse(buffer) {
            Ok(None) => Opening::NeedMore,
            Ok(Some(_)) => {
                let refusal = ServerHello::Refused {
                    reason: super::handshake::Refusal::TlsRequired,
                    server_min_version: server.min_version,
                    server_max_version: server.max_version,
                };
                Opening::Hello { reply: refusal.encode(server), session: None }
            }
            Err(_) => Opening::Garbage,
        },
    }
}

fn answer_hello<'a>(hello: &ClientHello, server: &ServerParams) -> Opening<'a> {
    let answer = negotiate(hello, server);
    let session = match answer {
        ServerHello::Accepted { version, max_frame_bytes, .. } => Some(Session {
            version,
            client_max_frame_bytes: hello.max_frame_bytes,
            server_max_frame_bytes: max_frame_bytes,
        }),
        ServerHello::Refused { .. } => None,
    };
    Opening::Hello { reply: answer.encode(server), session }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{FrameDecoder, Request, decode_request, encode_request};

    const SERVER: ServerParams = ServerParams {
        min_version: 1,
        max_version: 1,
        max_frame_bytes: 1 << 20,
        cluster_id: 5,
        member_id: 6,
    };

    #[test]
    fn a_hello_and_a_frame_in_one_read() {
        let hello = ClientHello::new(8192);
        let mut bytes = hello.to_bytes().to_vec();
        encode_request(&mut bytes, 1, &Request::Status, SERVER.max_frame_bytes).unwrap();
        for cut in 0..HELLO_BYTES {
            assert_eq!(open(&bytes[..cut], &SERVER), Opening::NeedMore, "cut at {cut}");
        }
        let Opening::Hello { reply, session: Some(session) } = open(&bytes, &SERVER) else {
            panic!("the hello was not accepted");
        };
        assert_eq!(session.client_max_frame_bytes, 8192);
        assert_eq!(ServerHello::parse(&reply, &hello).unwrap(), Some(negotiate(&hello, &SERVER)));
        let frame = FrameDecoder::new(&bytes[HELLO_BYTES..], session.server_max_frame_bytes).next();
        assert_eq!(decode_request(&frame.unwrap().unwrap()), Ok(Request::Status));
    }

    #[test]
    fn a_refused_hello_still_gets_a_reply() {
        let hello = ClientHello { min_version: 2, max_version: 3, max_frame_bytes: 8192 };
        let Opening::Hello { reply, session: None } = open(&hello.to_bytes(), &SERVER) else {
            panic!("expected a refusal");
        };
        assert!(matches!(
            ServerHello::parse(&reply, &hello),
            Ok(Some(ServerHello::Refused { .. }))
        ));
    }

    #[test]
    fn http_and_garbage() {
        let probe = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(open(&probe[..10], &SERVER), Opening::NeedMore);
        assert!(matches!(open(probe, &SERVER), Opening::Http(head) if head.path == "/health"));
        assert_eq!(
            open(b"GET nope HTTP/1.1\r\n\r\n", &SERVER),
            Opening::HttpError(HttpError::BadRequestLine)
        );
        assert_eq!(open(b"\x16\x03\x01\x02\x00", &SERVER), Opening::Garbage);
        let mut bad_hello = ClientHello::new(8192).to_bytes();
        bad_hello[15] = 1;
        assert_eq!(open(&bad_hello, &SERVER), Opening::Garbage);
    }
}
