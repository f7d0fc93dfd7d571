//! The client's one error type, `ClientError`, and what each case tells the
//! caller to do next.

use std::fmt;

use crate::proto::{ErrorBody, ErrorCode};

/// One endpoint that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialFailure {
    pub endpoint: String,
    pub reason: String,
}

/// Everything a client call can fail with.
///
/// What to do with each:
/// - `Unreachable`, `ConnectionLost`, `Timeout` of a read: retry later or
///   elsewhere; nothing changed on the cluster.
/// - `Server`: the server answered with an error code; act on `code()`.
///   Some codes (`ErrorCode::outcome_unknown`) mean a write's fate is open,
///   see `outcome_unknown()`.
/// - `OutcomeUnknown`: see the variant.
/// - `Protocol`, `TooLarge`, `WindowFull`, `BadEndpoint`: a bug or a
///   misconfiguration; retrying the same call does not help.
#[derive(Clone, Debug)]
pub enum ClientError {
    /// No endpoint took a connection (dial, handshake or cluster id failed);
    /// one entry per address tried, in order.
    Unreachable { tried: Vec<DialFailure> },
    /// The server answered the request with an error frame.
    Server { endpoint: String, error: ErrorBody },
    /// A write was sent in full, then the connection died (or the command
    /// timeout passed) before its answer came.
    ///
    /// The write may or may not have been applied, and may still be applied
    /// later: it can sit in the log of a majority already. Do not report it
    /// as failed and do not retry it blindly. Re-read the key to find out,
    /// or make the write conditional (a `Txn` comparing the key's mod
    /// revision) so that repeating it is safe. See docs/PROTOCOL.md,
    /// "Unknown outcome".
    OutcomeUnknown { endpoint: String, cause: String },
    /// The connection died before a read's answer came, and no other
    /// endpoint could serve it; or it died under a `Connection` user, who
    /// decides what to retry.
    ConnectionLost { endpoint: String, cause: String },
    /// A read got no answer within the command timeout.
    Timeout { endpoint: String, after_ms: u64 },
    /// The server broke the protocol: a bad hello, a malformed frame, an
    /// answer of the wrong type. The connection was dropped.
    Protocol { endpoint: String, detail: String },
    /// The request encodes to more bytes than the server accepts.
    TooLarge { body_len_bytes: usize, max_body_bytes: u32 },
    /// A `Connection` has its most requests in flight, or its most bytes
    /// waiting to be written; `recv` answers to make room.
    WindowFull { in_flight: usize, unwritten_bytes: usize },
    /// An endpoint address that cannot be used (`https://`, no port, ...).
    BadEndpoint(String),
}

impl ClientError {
    /// The server's error code, when the server answered with one this build
    /// knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { error, .. } => error.code(),
            _ => None,
        }
    }

    /// True when a write that failed this way may have been applied: the
    /// answer was lost (`OutcomeUnknown`), or the server said so with a code
    /// like `LeaderChanged` or `Timeout`.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::OutcomeUnknown { .. } => true,
            ClientError::Server { .. } => self.code().is_some_and(ErrorCode::outcome_unknown),
            _ => false,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { tried } => {
                write!(f, "no endpoint reachable (tried ")?;
                for (index, failure) in tried.iter().enumerate() {
                    let sep = if index == 0 { "" } else { ", " };
                    write!(f, "{sep}{}: {}", failure.endpoint, failure.reason)?;
                }
                write!(f, ")")
            }
            ClientError::Server { endpoint, error } => write!(f, "{endpoint}: {error}"),
            ClientError::OutcomeUnknown { endpoint, cause } => write!(
                f,
                "{endpoint}: outcome unknown, the write may or may not have been applied ({cause})"
            ),
            ClientError::ConnectionLost { endpoint, cause } => {
                write!(f, "{endpoint}: connection lost ({cause})")
            }
            ClientError::Timeout { endpoint, after_ms } => {
                write!(f, "{endpoint}: no answer within {after_ms} ms")
            }
            ClientError::Protocol { endpoint, detail } => {
                write!(f, "{endpoint}: protocol error: {detail}")
            }
            ClientError::TooLarge { body_len_bytes, max_body_bytes } => write!(
                f,
                "request of {body_len_bytes} bytes exceeds the server's limit of \
                 {max_body_bytes} (its --max-request-bytes)"
            ),
            ClientError::WindowFull { in_flight, unwritten_bytes } => write!(
                f,
                "connection window full: {in_flight} requests in flight, \
                 {unwritten_bytes} bytes not yet written"
            ),
            ClientError::BadEndpoint(why) => write!(f, "bad endpoint: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}
