//! One client connection: its socket, read and write buffers, the phase of
//! the protocol it is in, and its watches.
//!
//! Bounds: the read buffer never holds more than one largest frame plus one
//! read (`read_limit_bytes`), and less while the client memory budget is
//! spent; requests stop being read while `IN_FLIGHT_PER_CONN_MAX` of them
//! wait for an answer or while the connection's unsent answers and waiting
//! requests pass half its share of the budget (the client is not reading
//! its answers). Reading resumes when both fall back; the socket's own
//! buffer and TCP flow control then hold the client back.
//!
//! Buffers grow with use and shrink back: once drained, a buffer larger than
//! `BUFFER_KEEP_BYTES` is released, so an idle connection costs its socket
//! and this struct, a few hundred bytes, not a burst's worth of buffers.
//!
//! The socket is read in `fill` and written in `flush` only, so a stream
//! type of another transport can take `TcpStream`'s place there.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::time::Instant;

use super::watch::Watcher;
use crate::auth::Claims;
use crate::proto::{self, FRAME_HEADER_BYTES, Opening, ServerParams, Session};
use crate::tls::Stream;

/// Requests of one connection waiting for an answer (pipelining depth).
pub const IN_FLIGHT_PER_CONN_MAX: usize = 1024;
/// Capacity a drained read or write buffer keeps: enough for the small
/// requests and answers of a steady client without reallocating, little
/// enough that thousands of idle connections cost a few MiB.
pub const BUFFER_KEEP_BYTES: usize = 4 << 10;
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
    /// While the connection is open: where in `write_buf` the first frame
    /// not yet begun on the socket starts (frames are appended whole, so
    /// from here on the buffer is whole frames). Invariant:
    /// `unsent_frame_at >= written_bytes` after every `flush`.
    unsent_frame_at: usize,
    /// Requests read and not yet answered. Invariant: at most
    /// `IN_FLIGHT_PER_CONN_MAX`.
    pub in_flight: usize,
    /// Estimated memory of the requests in flight (their frames, decoded),
    /// counted against the client memory budget until each is answered.
    pub in_flight_bytes: usize,
    pub watchers: BTreeMap<u64, Watcher>,
    /// Next id for a watch whose creator let the server choose.
    pub next_watch_id: u64,
    /// Reading stopped on a bound; the loop resumes it once the bound clears.
    pub paused: bool,
    pub opened_at: Instant,
    /// When bytes last moved either way: the clock of the idle timeout.
    pub active_at: Instant,
    /// When the partial frame at the front of the read buffer began to
    /// arrive; `None` while the buffer holds no partial frame.
    pub partial_since: Option<Instant>,
    /// When the socket last took bytes (or the connection opened): how
    /// long a client has not been reading.
    pub written_at: Instant,
    /// What the connection holds against the client memory budget, as last
    /// settled by `Clients`: (reading side, answering side). Invariant: the
    /// budget's totals are the sums of these over the open connections.
    pub charged_bytes: (usize, usize),
    /// The token this connection logged in with or presented, verified
    /// then; each request checks it is still valid (`server/auth.rs`).
    pub claims: Option<Claims>,
    /// The user the client's verified certificate names (its subject CN),
    /// read once when the hello opens the session. A request acts as this
    /// user when the connection holds no token (`server/auth.rs`).
    pub cert_user: Option<String>,
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
    pub fn new(stream: Stream, serial: u64, now: Instant) -> Conn {
        Conn {
            stream,
            serial,
            phase: Phase::Opening,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
            written_bytes: 0,
            unsent_frame_at: 0,
            in_flight: 0,
            in_flight_bytes: 0,
            watchers: BTreeMap::new(),
            next_watch_id: 1,
            paused: false,
            claims: None,
            cert_user: None,
            opened_at: now,
            active_at: now,
            partial_since: None,
            written_at: now,
            charged_bytes: (0, 0),
        }
    }

    /// What the connection holds now on its reading side: the read buffer.
    pub fn read_charge_bytes(&self) -> usize {
        self.read_buf.capacity()
    }

    /// What it holds on its answering side: the requests it read that wait
    /// for an answer, and the write buffer.
    pub fn answer_charge_bytes(&self) -> usize {
        self.write_buf.capacity() + self.in_flight_bytes
    }

    /// Nothing to answer and nothing to feed: the idle timeout may close
    /// it, and at the connection cap it may make room for a new one.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.watchers.is_empty()
    }

    /// Unsent bytes.
    pub fn pending_write_bytes(&self) -> usize {
        self.write_buf.len() - self.written_bytes
    }

    /// Whether bytes wait to be written: answers, or TLS records.
    pub fn has_output(&self) -> bool {
        self.pending_write_bytes() > 0 || self.stream.wants_write()
    }

    /// Whether new requests may be read now: half the connection's share
    /// is for what it asked and has not taken yet, the other half for the
    /// frame being read.
    pub fn accepts_requests(&self, share_bytes: usize) -> bool {
        self.in_flight < IN_FLIGHT_PER_CONN_MAX && self.output_bytes() < share_bytes / 2
    }

    /// Unsent answers plus the requests waiting for one.
    pub fn output_bytes(&self) -> usize {
        self.pending_write_bytes() + self.in_flight_bytes
    }

    /// Frames start here: called when the hello has been answered, so the
    /// reply before it is never read as one.
    pub fn frames_start(&mut self) {
        self.unsent_frame_at = self.write_buf.len();
    }

    /// Moves the mark past the frames the socket has begun to take.
    fn advance_frame_mark(&mut self) {
        if !matches!(self.phase, Phase::Open(_)) {
            return;
        }
        while self.unsent_frame_at < self.written_bytes {
            let at = self.unsent_frame_at;
            let Some(len) = self.write_buf.get(at..at + 4) else { return };
            let body_bytes = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            self.unsent_frame_at = at + FRAME_HEADER_BYTES + body_bytes;
        }
    }

    /// Drops the frames the socket has not begun to take, and their room:
    /// for a connection that is being given up on, whose unsent frames
    /// would otherwise hold memory until it reads or times out.
    pub fn drop_unsent_frames(&mut self) {
        self.advance_frame_mark();
        self.write_buf.truncate(self.unsent_frame_at.max(self.written_bytes));
        self.write_buf.shrink_to(self.write_buf.len().max(BUFFER_KEEP_BYTES));
    }

    /// Releases the read buffer's room once it is drained.
    pub fn shrink_read_buf(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > BUFFER_KEEP_BYTES {
            self.read_buf = Vec::new();
        }
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
                // A client that hung up while its connection was held must
                // still give its memory back.
                let mut byte = [0u8; 1];
                return match self.stream.socket().peek(&mut byte) {
                    Ok(0) => ReadOutcome::Closed,
                    Err(e)
                        if !matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        ReadOutcome::Closed
                    }
                    _ => ReadOutcome::Full,
                };
            }
            let want = room.min(scratch.len());
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    self.read_buf.extend_from_slice(&scratch[..n]);
                    self.active_at = Instant::now();
                }
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
                Ok(n) => {
                    self.written_bytes += n;
                    self.active_at = Instant::now();
                    self.written_at = self.active_at;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.advance_frame_mark();
        if self.written_bytes == self.write_buf.len() {
            self.write_buf.clear();
            self.written_bytes = 0;
            self.unsent_frame_at = 0;
            // A burst's buffer is not kept for an idle connection.
            if self.write_buf.capacity() > BUFFER_KEEP_BYTES {
                self.write_buf = Vec::new();
            }
        } else if self.written_bytes > 0 {
            // The written prefix goes at once, and room the unsent rest no
            // longer needs is given back: the buffer is charged by its
            // capacity, and the kernel may take megabytes between two
            // passes. The copy is of unsent bytes, which the share bounds.
            self.write_buf.drain(..self.written_bytes);
            self.unsent_frame_at = self.unsent_frame_at.saturating_sub(self.written_bytes);
            self.written_bytes = 0;
            let keep_bytes = 2 * self.write_buf.len().max(BUFFER_KEEP_BYTES);
            if self.write_buf.capacity() > 2 * keep_bytes {
                self.write_buf.shrink_to(keep_bytes);
            }
        }
        Ok(())
    }

    /// Whether a closing connection has written everything.
    pub fn done_closing(&self) -> bool {
        self.phase == Phase::Closing && !self.has_output()
    }
}
