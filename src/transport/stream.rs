//! Streaming a large payload (a snapshot) to one peer in chunks.
//!
//! The sender hands over a header message and a `Read` source. The payload
//! travels over the peer's ordinary connection, one chunk frame at a time,
//! interleaved with messages: a chunk is read from the source only when the
//! previous one has left for the socket, so the sender holds at most one
//! chunk in memory and heartbeats are never stuck behind megabytes of
//! snapshot. A final frame carries the length and CRC32 of the whole payload.
//!
//! The receiver gets `StreamEvent`s: `Started` with the header, `Chunk`s in
//! order with their offsets, then `Finished` once length and checksum match,
//! or `Aborted`. Received chunks wait in a queue bounded in bytes; while it is
//! full the connection is not read, so TCP's window pushes back on the
//! sender. Memory is bounded on both sides by configuration, not by the size
//! of the payload.
//!
//! One stream per peer at a time: Raft sends one snapshot to a follower and
//! waits for the outcome before it tries again.
//!
//! Stream events and messages are drained from two queues, so their order
//! relative to each other is not kept (within each queue it is). Raft does
//! not need it: a leader sends nothing that depends on a snapshot until the
//! follower has answered it.

use std::fmt;
use std::io::{self, Read};

/// Identifies a stream among those of one sender; assigned by the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// What the receiving side sees of a stream, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent<M> {
    Started {
        from: u64,
        stream: StreamId,
        header: M,
    },
    /// `data` is at `offset_bytes` in the payload; chunks arrive in order.
    Chunk {
        from: u64,
        stream: StreamId,
        offset_bytes: u64,
        data: Vec<u8>,
    },
    /// All chunks arrived and their length and CRC32 match the sender's.
    Finished {
        from: u64,
        stream: StreamId,
        total_bytes: u64,
    },
    /// The payload is incomplete or wrong; everything received must be
    /// thrown away.
    Aborted {
        from: u64,
        stream: StreamId,
        reason: AbortReason,
    },
}

/// Why a received stream was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The sender gave up (its source failed).
    SenderAborted,
    /// The connection closed before the end.
    ConnectionLost,
    /// Length or CRC32 differ from what the sender computed.
    Corrupt,
}

/// What became of a stream on the sending side.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamOutcome {
    pub to: u64,
    pub stream: StreamId,
    pub result: Result<u64, StreamFailure>,
}

/// Why a sent stream failed. `Ok(total_bytes)` in an outcome means every
/// byte was handed to the kernel; the receiver's answer comes through Raft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFailure {
    /// The connection failed before the last frame was written.
    ConnectionLost,
    /// Reading the source failed.
    Source(io::ErrorKind),
}

impl fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamFailure::ConnectionLost => write!(f, "connection lost"),
            StreamFailure::Source(kind) => write!(f, "reading the payload failed: {kind}"),
        }
    }
}

/// A stream being sent.
pub(crate) struct OutStream {
    pub id: StreamId,
    pub source: Box<dyn Read + Send>,
    pub sent_bytes: u64,
    pub crc: crc32fast::Hasher,
    /// Invariant: at most one frame of this stream is in the peer's queue;
    /// this says whether there is one.
    pub frame_queued: bool,
    /// The end frame has been queued; nothing more is read.
    pub end_queued: bool,
}

impl OutStream {
    pub fn new(id: StreamId, source: Box<dyn Read + Send>) -> OutStream {
        OutStream {
            id,
            source,
            sent_bytes: 0,
            crc: crc32fast::Hasher::new(),
            frame_queued: true, // The start frame.
            end_queued: false,
        }
    }
}

/// A stream being received on one connection.
#[derive(Debug)]
pub(crate) struct InStream {
    pub id: StreamId,
    pub received_bytes: u64,
    pub crc: crc32fast::Hasher,
}

impl InStream {
    pub fn new(id: StreamId) -> InStream {
        InStream { id, received_bytes: 0, crc: crc32fast::Hasher::new() }
    }

    /// Whether the sender's length and checksum match what arrived.
    pub fn verify(self, total_bytes: u64, crc32: u32) -> bool {
        self.received_bytes == total_bytes && self.crc.finalize() == crc32
    }
}
