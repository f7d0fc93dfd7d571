//! One client connection: its socket, read and write buffers, the phase of
//! the protocol it is in, and its watches.
//!
//! Bounds: the read buffer never holds more than one largest frame plus one
//! read (`read_limit_bytes`); requests stop being read while
//! `IN_FLIGHT_PER_CONN_MAX` of them wait for an answer or while the write
//! buffer holds more than `WRITE_HIGH_WATER_BYTES` (the client is not reading
//! its answers). Reading resumes when both fall back; the socket's own buffer
//! and TCP flow control then hold the client back.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use super::watch::Watcher;
use crate::auth::Claims;
use crate::proto::{self, Opening, ServerParams, Session};
use crate::tls::Stream;

/// Requests of one connection waiting for an answer (pipelining depth).
pub const IN_FLIGHT_PER_CONN_MAX: usize = 1024;
/// Unsent answer bytes past which a connection's requests stop being read.
pub const WRITE_HIGH_WATER_BYTES: usize = 4 << 20;
/// Unsent bytes past which watches of the connection stop being fed; they
/// keep their place in the store's history and resume when it drains.
pub const WATCH_FEED_LIMIT_BYTES: usize = 1 << 20;
/// Bytes asked of the socket per read call: the size of the scratch buffer
/// the connections share.
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// Watches one connection may hold.
pub const WATCHES_PER_CONN_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the hello or an HTTP request head.
    Opening,
    Open(Session),
    /// Write what is buffered, then close.
    Closing,
}

/// What a read pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The socket has nothing more for now.
    Drained,
    /// The buffer is full; reading stopped early.
    Full,
    /// The peer closed its side, or the socket failed.
    Closed,
}

pub struct Conn {
    /// Plain TCP, or TLS on a port that serves it.
    pub stream: Stream,
    /// Distinguishes this connection from later ones in the same slot, so a
    /// late answer never reaches a stranger.
    pub serial: u64,
    pub phase: Phase,
    pub read_buf: Vec<u8>,
    /// Invariant: `written_bytes <= write_buf.len()`.
    pub write_buf: Vec<u8>,
    pub written_bytes: usize,
    /// Requests read and not yet answered. Invariant: at most
    /// `IN_FLIGHT_PER_CONN_MAX`.
    pub in_flight: usize,
    pub watchers: BTreeMap<u64, Watcher>,
    /// Next id for a watch whose creator let the server choose.
    pub next_watch_id: u64,
    /// Reading stopped on a bound; the loop resumes it once the bound clears.
    pub paused: bool,
    /// The token this connection logged in with or presented, verified
    /// then; each request checks it is still valid (`server/auth.rs`).
    pub claims: Option<Claims>,
}

/// What the first bytes read from `stream` call for (`proto::open`); a
/// plaintext client on a TLS port is told in its own protocol that TLS is
/// required.
pub fn open<'a>(stream: &Stream, read_buf: &'a [u8], params: &ServerParams) -> Opening<'a> {
    if stream.plaintext_on_tls_port() {
        return proto::open_plaintext_on_tls_port(read_buf, params);
    }
    proto::open(read_buf, params)
}

impl Conn {
    pub fn new(stream: Stream, serial: u64) -> Conn {
        Conn {
            stream,
            serial,
            phase: Phase::Opening,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
            written_bytes: 0,
            in_flight: 0,
            watchers: BTreeMap::new(),
            next_watch_id: 1,
            paused: false,
            claims: None,
        }
    }

    /// Unsent bytes.
    pub fn pending_write_bytes(&self) -> usize {
        self.write_buf.len() - self.written_bytes
    }

    /// Whether bytes wait to be written: answers, or TLS records.
    pub fn has_output(&self) -> bool {
        self.pending_write_bytes() > 0 || self.stream.wants_write()
    }

    /// Whether new requests may be read now.
    pub fn accepts_requests(&self) -> bool {
        self.in_flight < IN_FLIGHT_PER_CONN_MAX
            && self.pending_write_bytes() <= WRITE_HIGH_WATER_BYTES
    }

    /// Reads until the socket is drained or the buffer holds `limit_bytes`.
    /// The socket reads into `scratch`, a buffer every connection shares,
    /// and only the bytes that came are copied: growing the read buffer by
    /// a zeroed chunk before each read cost a 64 KiB memset per call, more
    /// than half of all the node's instructions under load.
    pub fn fill(&mut self, limit_bytes: usize, scratch: &mut [u8]) -> ReadOutcome {
        loop {
            let room = limit_bytes.saturating_sub(self.read_buf.len());
            if room == 0 {
                return ReadOutcome::Full;
            }
            let want = room.min(scratch.len());
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => self.read_buf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Writes buffered bytes until the socket refuses more. `Err` when the
    /// connection failed.
    pub fn flush(&mut self) -> io::Result<()> {
        // Records rustls holds from the last write go first.
        self.stream.flush_tls()?;
        while self.written_bytes < self.write_buf.len() {
            match self.stream.write(&self.write_buf[self.written_bytes..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written_bytes += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written_bytes == self.write_buf.len() {
            self.write_buf.clear();
            self.written_bytes = 0;
            // A burst's buffer is not kept for an idle connection.
            if self.write_buf.capacity() > WRITE_HIGH_WATER_BYTES {
                self.write_buf.shrink_to(READ_CHUNK_BYTES);
            }
        } else if self.written_bytes > WRITE_HIGH_WATER_BYTES {
            self.write_buf.drain(..self.written_bytes);
            self.written_bytes = 0;
        }
        Ok(())
    }

    /// Whether a closing connection has written everything.
    pub fn done_closing(&self) -> bool {
        self.phase == Phase::Closing && !self.has_output()
    }
}
