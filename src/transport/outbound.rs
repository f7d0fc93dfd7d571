//! The sending side: one outbound connection per peer, its queue, its
//! handshake and its reconnection schedule.
//!
//! A peer's link goes `Down` → `Dialing` → `Up` and back to `Down` on any
//! failure. While `Dialing`, messages queue (up to the bounds) so that the
//! first ones after a reconnect are not lost; while `Down`, they are dropped
//! at once and the peer reported unreachable, since Raft resends what matters
//! and a backlog of stale heartbeats helps nobody.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::stream::{OutStream, StreamFailure, StreamOutcome};
use super::wire::{self, HELLO_BYTES, Hello, MAC_BYTES, MacRole, NONCE_BYTES};
use super::{Config, SendError};
use crate::tls::{self, Stream};

/// Frames handed to one `write_vectored` call. Linux accepts up to 1024; 128
/// turns a Ready's burst of appends and heartbeats into one system call
/// while the slice array stays small enough for the stack (2 KiB).
const WRITE_SLICES_MAX: usize = 128;

/// The delay before dial attempt `failures + 1`: `min`, doubling with every
/// failure in a row, capped at `max`. Pure, so it is tested directly.
pub fn backoff_delay(failures: u32, min: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    min.saturating_mul(1u32 << doublings).min(max)
}

/// What a queued frame is, for accounting when it has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    /// The start or a chunk of the current stream.
    StreamFrame,
    StreamEnd,
    /// The abort of a stream that is already gone; nothing to account.
    StreamAbort,
}

/// Encoded frames waiting for the socket.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    frames: VecDeque<(Vec<u8>, Kind)>,
    /// Invariant: less than the length of the front frame (0 when empty).
    head_written_bytes: usize,
    /// Invariant: `message_count <= Config::queue_messages_max` and
    /// `message_bytes <= Config::queue_bytes_max`; stream frames are counted
    /// apart (at most one is queued, see `OutStream::frame_queued`).
    message_count: usize,
    message_bytes: usize,
}

/// Which stream frames a write completed.
#[derive(Debug, Default)]
struct Written {
    bytes: usize,
    stream_frame: bool,
    stream_end: bool,
    blocked: bool,
}

impl OutQueue {
    pub fn message_count(&self) -> usize {
        self.message_count
    }

    pub fn message_bytes(&self) -> usize {
        self.message_bytes
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Queues a message frame if both bounds allow it.
    fn push_message(&mut self, frame: Vec<u8>, config: &Config) -> bool {
        let fits = self.message_count < config.queue_messages_max
            && self.message_bytes + frame.len() <= config.queue_bytes_max;
        if fits {
            self.message_count += 1;
            self.message_bytes += frame.len();
            self.frames.push_back((frame, Kind::Message));
        }
        fits
    }

    fn push_stream(&mut self, frame: Vec<u8>, kind: Kind) {
        debug_assert!(kind != Kind::Message, "messages are bounded by push_message");
        self.frames.push_back((frame, kind));
    }

    fn clear(&mut self) {
        *self = OutQueue::default();
    }

    /// Writes frames until the queue is empty or the socket would block,
    /// several frames per system call.
    fn write_to(&mut self, conn: &mut impl Write) -> io::Result<Written> {
        let mut written = Written::default();
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES_MAX];
            let mut count = 0;
            for (slot, (frame, _)) in slices.iter_mut().zip(&self.frames) {
                let skip = if count == 0 { self.head_written_bytes } else { 0 };
                *slot = IoSlice::new(&frame[skip..]);
                count += 1;
            }
            match conn.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written.bytes += n;
                    self.consume(n, &mut written);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    written.blocked = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Drops the `n` bytes just written from the front of the queue.
    fn consume(&mut self, mut n: usize, written: &mut Written) {
        while n > 0 {
            let (frame, kind) = self.frames.front().expect("wrote more than was queued");
            let rest = frame.len() - self.head_written_bytes;
            if n < rest {
                self.head_written_bytes += n;
                return;
            }
            n -= rest;
            let (frame, kind) = (frame.len(), *kind);
            self.frames.pop_front();
            self.head_written_bytes = 0;
            match kind {
                Kind::Message => {
                    self.message_count -= 1;
                    self.message_bytes -= frame;
                }
                Kind::StreamFrame => written.stream_frame = true,
                Kind::StreamEnd => written.stream_end = true,
                Kind::StreamAbort => {}
            }
        }
    }
}

/// A connection whose handshake is not complete.
pub(crate) struct Dialing {
    conn: Stream,
    addr: SocketAddr,
    since: Instant,
    connected: bool,
    /// Our hello and, with a secret, our nonce: the first half of the
    /// transcript.
    hello: [u8; HELLO_BYTES + NONCE_BYTES],
    /// Bytes to send now: the hello (and nonce), later our MAC.
    out: Vec<u8>,
    out_written_bytes: usize,
    /// The acceptor's hello, and with a secret its nonce and MAC.
    reply: [u8; HELLO_BYTES + NONCE_BYTES + MAC_BYTES],
    reply_read_bytes: usize,
    /// The reply was read and checked; what is left is sending `out`.
    replied: bool,
}

/// The state of a peer's outbound connection.
pub(crate) enum Link {
    /// No connection; the next dial is due at `retry_at`.
    Down {
        retry_at: Instant,
    },
    Dialing(Box<Dialing>),
    Up {
        conn: Stream,
        addr: SocketAddr,
        /// Since when frames have waited for a socket that takes nothing.
        /// Invariant: `None` whenever the last flush made progress or
        /// emptied the queue.
        blocked_since: Option<Instant>,
    },
}

/// Why an outbound connection was given up.
#[derive(Debug)]
pub(crate) enum Failure {
    Io(io::Error),
    /// The peer closed the connection during the handshake: it refused us.
    ClosedInHandshake,
    Refused(wire::HelloError),
    /// The peer answered that this member was removed from the cluster.
    Removed,
    /// An accepted connection never carries data back after the handshake.
    UnexpectedBytes,
    Closed,
    HandshakeTimeout,
    /// The socket took no bytes for `write_stall_timeout`: the peer is gone
    /// without a word (power cut) or its loop is stuck.
    WriteStalled,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::ClosedInHandshake => write!(
                f,
                "closed during the handshake: the peer refused us (another cluster, \
                 or this member is not in its member list)"
            ),
            Failure::Refused(e) => write!(f, "refused its answer: {e}"),
            Failure::Removed => write!(f, "the peer says this member was removed from the cluster"),
            Failure::UnexpectedBytes => write!(f, "peer sent bytes on a send-only connection"),
            Failure::Closed => write!(f, "connection closed by the peer"),
            Failure::HandshakeTimeout => write!(f, "handshake timed out"),
            Failure::WriteStalled => write!(f, "peer stopped reading"),
        }
    }
}

/// One peer as seen by the sender.
pub(crate) struct Peer {
    pub id: u64,
    /// The name its TLS certificate must be valid for.
    pub name: String,
    /// Invariant: not empty. Dials rotate through them.
    pub addrs: Vec<SocketAddr>,
    next_addr: usize,
    pub token: Token,
    pub link: Link,
    pub queue: OutQueue,
    /// Failed connections in a row; 0 once a handshake succeeds.
    pub failures: u32,
    pub dials: u64,
    pub stream: Option<OutStream>,
    /// Bytes written to its connections since start.
    pub sent_bytes_total: u64,
    /// Bytes read from its connections to us since start.
    pub received_bytes_total: u64,
}

impl Peer {
    pub fn new(id: u64, name: String, addrs: Vec<SocketAddr>, token: Token, now: Instant) -> Peer {
        Peer {
            id,
            name,
            addrs,
            next_addr: 0,
            token,
            link: Link::Down { retry_at: now },
            queue: OutQueue::default(),
            failures: 0,
            dials: 0,
            stream: None,
            sent_bytes_total: 0,
            received_bytes_total: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Queues a message frame; `Err` when the link is down or the queue full.
    pub fn enqueue(&mut self, frame: Vec<u8>, config: &Config) -> Result<(), SendError> {
        if matches!(self.link, Link::Down { .. }) {
            return Err(SendError::PeerDown(self.id));
        }
        if !self.queue.push_message(frame, config) {
            return Err(SendError::QueueFull(self.id));
        }
        Ok(())
    }

    /// Queues a stream's start frame; the chunks follow as the queue drains.
    pub fn start_stream(&mut self, stream: OutStream, start_frame: Vec<u8>) {
        assert!(self.stream.is_none(), "one stream per peer");
        self.queue.push_stream(start_frame, Kind::StreamFrame);
        self.stream = Some(stream);
    }

    /// When this peer next needs `tick`: a due dial, a handshake deadline,
    /// or the moment a blocked socket counts as stalled.
    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        match &self.link {
            Link::Down { retry_at } => Some(*retry_at),
            Link::Dialing(d) => Some(d.since + config.handshake_timeout),
            Link::Up { blocked_since, .. } => {
                blocked_since.map(|since| since + config.write_stall_timeout)
            }
        }
    }

    /// Starts a connection to the next address. A failure here (no route,
    /// no file descriptors) counts like any other and backs off.
    pub fn dial(
        &mut self,
        registry: &Registry,
        now: Instant,
        hello: Hello,
        config: &Config,
    ) -> Result<(), Failure> {
        let addr = self.addrs[self.next_addr % self.addrs.len()];
        self.next_addr = self.next_addr.wrapping_add(1);
        self.dials += 1;
        let sock = TcpStream::connect(addr).map_err(Failure::Io)?;
        let mut conn = match &config.tls {
            Some(peer_tls) => {
                let name = peer_tls.allowed_hostname.as_deref().unwrap_or(&self.name);
                let name = tls::server_name(name).map_err(|e| Failure::Io(io::Error::other(e)))?;
                Stream::dialed(sock, peer_tls.client.clone(), name)
                    .map_err(|e| Failure::Io(io::Error::other(e)))?
            }
            None => Stream::plain(sock),
        };
        registry
            .register(&mut conn, self.token, Interest::READABLE | Interest::WRITABLE)
            .map_err(Failure::Io)?;
        let secret = config.secret.is_some();
        let mut first = [0u8; HELLO_BYTES + NONCE_BYTES];
        first[..HELLO_BYTES].copy_from_slice(&hello.encode_flagged(secret));
        let first_len = if secret {
            super::inbound::fill_random(&mut first[HELLO_BYTES..])
                .map_err(|_| Failure::Io(io::Error::other("no random bytes for a nonce")))?;
            HELLO_BYTES + NONCE_BYTES
        } else {
            HELLO_BYTES
        };
        let dialing = Dialing {
            conn,
            addr,
            since: now,
            connected: false,
            hello: first,
            out: first[..first_len].to_vec(),
            out_written_bytes: 0,
            reply: [0; HELLO_BYTES + NONCE_BYTES + MAC_BYTES],
            reply_read_bytes: 0,
            replied: false,
        };
        self.link = Link::Dialing(Box::new(dialing));
        Ok(())
    }

    /// Makes what progress the socket allows: connect, handshake, then
    /// writing queued frames. Any error is returned for `fail`. `on_event`
    /// says whether the socket reported readiness; only then can the peer
    /// have closed it, which costs a read to find out.
    pub fn drive(
        &mut self,
        config: &Config,
        outcomes: &mut Vec<StreamOutcome>,
        on_event: bool,
        now: Instant,
    ) -> Result<(), Failure> {
        if let Link::Dialing(dialing) = &mut self.link {
            if !drive_handshake(dialing, config, self.id)? {
                return Ok(());
            }
            let since = dialing.since;
            let Link::Dialing(dialing) =
                std::mem::replace(&mut self.link, Link::Down { retry_at: since })
            else {
                unreachable!("matched above")
            };
            log::info!("connected to peer {:016x} at {}", self.id, dialing.addr);
            self.failures = 0;
            // Nagle's algorithm would hold a heartbeat back while an append
            // is unacknowledged; frames are already batched by writev.
            if let Err(e) = dialing.conn.socket().set_nodelay(true) {
                log::debug!("TCP_NODELAY to peer {:016x}: {e}", self.id);
            }
            self.link = Link::Up { conn: dialing.conn, addr: dialing.addr, blocked_since: None };
        }
        let Link::Up { conn, blocked_since, .. } = &mut self.link else { return Ok(()) };
        if on_event {
            check_silent(conn)?;
        }
        // Records rustls holds from the last write go before new ones.
        conn.flush_tls().map_err(Failure::Io)?;
        let queue = &mut self.queue;
        let mut flushed = flush_queue(conn, queue, &mut self.stream, self.id, config, outcomes)?;
        self.sent_bytes_total += flushed.bytes;
        flushed.blocked |= conn.wants_write();
        // The stall clock restarts with every write that moved bytes.
        *blocked_since = match (flushed.blocked, flushed.wrote_any, *blocked_since) {
            (false, _, _) => None,
            (true, true, _) | (true, false, None) => Some(now),
            (true, false, since) => since,
        };
        Ok(())
    }

    /// Gives up the connection: frames in flight are lost (the receiver drops
    /// a partial frame), the stream fails, and the next dial is scheduled.
    pub fn fail(
        &mut self,
        registry: &Registry,
        now: Instant,
        failure: &Failure,
        config: &Config,
        outcomes: &mut Vec<StreamOutcome>,
    ) {
        let addr = self.close(registry, now, outcomes);
        self.failures = self.failures.saturating_add(1);
        let delay = backoff_delay(self.failures, config.backoff_min, config.backoff_max);
        self.link = Link::Down { retry_at: now + delay };
        let addr = addr.map_or_else(|| "?".to_string(), |a| a.to_string());
        let message = format!("peer {:016x} at {addr}: {failure}; retrying in {delay:?}", self.id);
        // The first failure in a row is news; the retries of a long outage are not,
        // except refusals, which point at a configuration mistake.
        if self.failures == 1 || matches!(failure, Failure::Refused(_) | Failure::ClosedInHandshake)
        {
            log::warn!("{message}");
        } else {
            log::debug!("{message}");
        }
    }

    /// Closes the connection, drops the queue and fails the stream; the link
    /// is left `Down`, due at `now`. Returns the address it was using.
    pub fn close(
        &mut self,
        registry: &Registry,
        now: Instant,
        outcomes: &mut Vec<StreamOutcome>,
    ) -> Option<SocketAddr> {
        let addr = match std::mem::replace(&mut self.link, Link::Down { retry_at: now }) {
            Link::Down { .. } => None,
            Link::Dialing(mut d) => {
                let _ = registry.deregister(&mut d.conn);
                Some(d.addr)
            }
            Link::Up { mut conn, addr, .. } => {
                let _ = registry.deregister(&mut conn);
                Some(addr)
            }
        };
        self.queue.clear();
        if let Some(stream) = self.stream.take() {
            let result = Err(StreamFailure::ConnectionLost);
            outcomes.push(StreamOutcome { to: self.id, stream: stream.id, result });
        }
        addr
    }
}

/// Connect, send our hello, read and check the answer (with a secret: its
/// MAC, then send ours). `Ok(true)` once the handshake is complete,
/// `Ok(false)` while the socket would block.
fn drive_handshake(d: &mut Dialing, config: &Config, peer: u64) -> Result<bool, Failure> {
    if !d.connected {
        // mio's rule for a non-blocking connect: an error or no peer address
        // yet means the connection is not (yet) established.
        if let Some(e) = d.conn.socket().take_error().map_err(Failure::Io)? {
            return Err(Failure::Io(e));
        }
        match d.conn.socket().peer_addr() {
            Ok(_) => d.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
    if !write_out(d)? {
        return Ok(false);
    }
    if !d.replied {
        let secret = config.secret.as_ref();
        let want = if secret.is_some() { d.reply.len() } else { HELLO_BYTES };
        while d.reply_read_bytes < want {
            match d.conn.read(&mut d.reply[d.reply_read_bytes..want]) {
                Ok(0) => return Err(Failure::ClosedInHandshake),
                Ok(n) => d.reply_read_bytes += n,
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        let head: &[u8; HELLO_BYTES] = d.reply.first_chunk().expect("hello fits");
        Hello::check(head, config.cluster_id, config.local_id, |id| id == peer)
            .map_err(Failure::Refused)?;
        wire::check_secret_flag(head, secret.is_some()).map_err(Failure::Refused)?;
        let removed = wire::says_removed(head);
        d.replied = true;
        if let Some(secret) = secret {
            let acceptor = d.reply[..HELLO_BYTES + NONCE_BYTES].try_into().expect("sized");
            let transcript = wire::transcript(&d.hello, acceptor);
            let mac = &d.reply[HELLO_BYTES + NONCE_BYTES..];
            wire::verify_hello_mac(secret.bytes(), MacRole::Acceptor, &transcript, mac)
                .map_err(Failure::Refused)?;
            if removed {
                return Err(Failure::Removed);
            }
            d.out = wire::hello_mac(secret.bytes(), MacRole::Dialer, &transcript).to_vec();
            d.out_written_bytes = 0;
            return write_out(d);
        }
        if removed {
            return Err(Failure::Removed);
        }
    }
    Ok(true)
}

/// Writes what `out` holds; true once all of it is written.
fn write_out(d: &mut Dialing) -> Result<bool, Failure> {
    while d.out_written_bytes < d.out.len() {
        match d.conn.write(&d.out[d.out_written_bytes..]) {
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => d.out_written_bytes += n,
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
    // Under TLS the bytes may still sit in rustls' buffer; they leave
    // before any frame, and `drive` flushes them on every call.
    d.conn.flush_tls().map_err(Failure::Io)?;
    Ok(true)
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// The accepting side never writes after its hello, so anything readable on
/// an outbound connection is its end (or a broken peer).
fn check_silent(conn: &mut Stream) -> Result<(), Failure> {
    let mut probe = [0u8; 64];
    loop {
        match conn.read(&mut probe) {
            Ok(0) => return Err(Failure::Closed),
            Ok(_) => return Err(Failure::UnexpectedBytes),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}

/// What one `flush_queue` achieved.
struct Flushed {
    wrote_any: bool,
    bytes: u64,
    /// Frames are left and the socket would block.
    blocked: bool,
}

/// Writes the queue, pulling the stream's next chunk in whenever its previous
/// frame has left, until the socket would block or nothing is left.
fn flush_queue(
    conn: &mut Stream,
    queue: &mut OutQueue,
    stream: &mut Option<OutStream>,
    peer: u64,
    config: &Config,
    outcomes: &mut Vec<StreamOutcome>,
) -> Result<Flushed, Failure> {
    let mut wrote_any = false;
    let mut bytes = 0;
    loop {
        top_up_stream(queue, stream, peer, config.chunk_bytes, outcomes);
        if queue.is_empty() {
            return Ok(Flushed { wrote_any, bytes, blocked: false });
        }
        let written = queue.write_to(conn).map_err(Failure::Io)?;
        wrote_any |= written.bytes > 0;
        bytes += written.bytes as u64;
        if let Some(s) = stream.as_mut()
            && written.stream_frame
        {
            s.frame_queued = false;
        }
        if written.stream_end {
            let s = stream.take().expect("an end frame belongs to a stream");
            outcomes.push(StreamOutcome { to: peer, stream: s.id, result: Ok(s.sent_bytes) });
        }
        if written.blocked {
            return Ok(Flushed { wrote_any, bytes, blocked: true });
        }
    }
}

/// Queues the stream's next frame if none of it is queued: a chunk, the end
/// frame once the source is exhausted, or an abort frame if it failed.
fn top_up_stream(
    queue: &mut OutQueue,
    stream: &mut Option<OutStream>,
    peer: u64,
    chunk_bytes: usize,
    outcomes: &mut Vec<StreamOutcome>,
) {
    let Some(s) = stream.as_mut() else { return };
    if s.frame_queued || s.end_queued {
        return;
    }
    match wire::read_stream_chunk(s.id.0, &mut s.source, chunk_bytes) {
        Ok(Some(frame)) => {
            let data = wire::chunk_data(&frame);
            s.crc.update(data);
            s.sent_bytes += data.len() as u64;
            queue.push_stream(frame, Kind::StreamFrame);
            s.frame_queued = true;
        }
        Ok(None) => {
            let crc = s.crc.clone().finalize();
            queue.push_stream(wire::encode_stream_end(s.id.0, s.sent_bytes, crc), Kind::StreamEnd);
            s.frame_queued = true;
            s.end_queued = true;
        }
        Err(e) => {
            log::warn!("stream {} to peer {peer:016x}: reading the payload failed: {e}", s.id.0);
            queue.push_stream(wire::encode_stream_abort(s.id.0), Kind::StreamAbort);
            let s = stream.take().expect("checked above");
            outcomes.push(StreamOutcome {
                to: peer,
                stream: s.id,
                result: Err(StreamFailure::Source(e.kind())),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_min_to_max() {
        let (min, max) = (Duration::from_millis(50), Duration::from_millis(1000));
        let delays: Vec<u128> = (1..=7).map(|f| backoff_delay(f, min, max).as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_delay(0, min, max), min);
        assert_eq!(backoff_delay(u32::MAX, min, max), max);
    }

    /// A writer that accepts a fixed number of bytes per call, then blocks.
    struct Trickle {
        per_call: usize,
        calls_left: usize,
        out: Vec<u8>,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = buf.len().min(self.per_call);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        /// Takes bytes across frame boundaries, as a socket's writev does.
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.write(&joined)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let config = Config::new(1, 2, Vec::new());
        let mut queue = OutQueue::default();
        let mut expected = Vec::new();
        for n in 0u8..10 {
            let frame = vec![n; 7];
            expected.extend_from_slice(&frame);
            assert!(queue.push_message(frame, &config));
        }
        let mut sink = Trickle { per_call: 5, calls_left: 3, out: Vec::new() };
        let written = queue.write_to(&mut sink).unwrap();
        assert!(written.blocked);
        assert_eq!(queue.message_count(), 10 - 2); // 15 bytes: two whole frames.
        sink.calls_left = usize::MAX;
        queue.write_to(&mut sink).unwrap();
        assert_eq!(sink.out, expected);
        assert_eq!((queue.message_count(), queue.message_bytes()), (0, 0));
    }

    #[test]
    fn the_queue_refuses_beyond_either_bound() {
        let mut config = Config::new(1, 2, Vec::new());
        config.queue_messages_max = 3;
        config.queue_bytes_max = 25;
        let mut queue = OutQueue::default();
        assert!(queue.push_message(vec![0; 10], &config));
        assert!(queue.push_message(vec![0; 10], &config));
        assert!(!queue.push_message(vec![0; 10], &config)); // 30 bytes > 25
        assert!(queue.push_message(vec![0; 5], &config));
        assert!(!queue.push_message(vec![0; 1], &config)); // 4 messages > 3
    }
}
