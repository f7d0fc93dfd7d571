//! The receiving side: connections accepted on the listener, their
//! handshake, and the bounded inbox they deliver into.
//!
//! An accepted connection first has to present a valid hello within the
//! handshake timeout; until then it is a stranger and holds one of a bounded
//! number of slots. When they are all taken, the stranger least far in its
//! handshake (the oldest among equals) is closed to make room for the
//! newcomer, so connections that hold slots without proving anything cannot
//! keep a member out. Once accepted it only carries frames towards us. When the
//! inbox is full the connection is simply not read: TCP's window then stops
//! the sender, and reading resumes from `Transport::tick` after the loop has
//! drained the inbox.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::{Registry, Token};
use serde::de::DeserializeOwned;

use super::stream::{AbortReason, InStream, StreamEvent, StreamId};
use super::wire::{
    self, Frame, FrameDecoder, FrameError, HELLO_BYTES, Hello, HelloError, MAC_BYTES, MacRole,
    NONCE_BYTES, TRANSCRIPT_BYTES,
};
use super::{Config, Secret};
use crate::tls::{self, Stream};

/// What arrived and is waiting for the loop.
pub(crate) struct Inbox<M> {
    /// Invariant: `messages.len() <= Config::received_messages_max`.
    pub messages: VecDeque<(u64, M)>,
    pub stream_events: VecDeque<StreamEvent<M>>,
    /// Bytes of chunk data in `stream_events`. Invariant: at most
    /// `Config::received_stream_bytes_max` plus one chunk.
    pub stream_bytes: usize,
}

impl<M> Inbox<M> {
    pub fn new() -> Inbox<M> {
        Inbox { messages: VecDeque::new(), stream_events: VecDeque::new(), stream_bytes: 0 }
    }

    pub fn is_full(&self, config: &Config) -> bool {
        self.messages.len() >= config.received_messages_max
            || self.stream_bytes >= config.received_stream_bytes_max
    }
}

/// Why an accepted connection was closed.
#[derive(Debug)]
pub(crate) enum Close {
    /// The peer closed it (or a stranger hung up before its hello).
    Eof,
    Io(io::Error),
    Refused(HelloError),
    Frame(FrameError),
    /// Frames in an order the protocol does not allow.
    Protocol(&'static str),
    HandshakeTimeout,
    /// Every handshake slot was taken and this stranger, the one least far
    /// in its handshake, made room for a newer connection.
    Crowded,
    /// The same member connected again; its old connection is dead.
    Replaced,
    /// The member was removed from the cluster.
    Removed,
    /// A joining member asked for the member table and got it.
    AnsweredMembers,
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Eof => write!(f, "closed by the other side"),
            Close::Io(e) => write!(f, "{e}"),
            Close::Refused(e) => write!(f, "handshake refused: {e}"),
            Close::Frame(e) => write!(f, "bad frame: {e}"),
            Close::Protocol(why) => write!(f, "protocol error: {why}"),
            Close::HandshakeTimeout => write!(f, "no handshake in time"),
            Close::Crowded => write!(f, "made room for a newer connection in its handshake"),
            Close::Replaced => write!(f, "replaced by a newer connection"),
            Close::Removed => write!(f, "member removed from the cluster"),
            Close::AnsweredMembers => write!(f, "a joining member was sent the member table"),
        }
    }
}

/// One accepted connection.
pub(crate) struct Inbound {
    pub conn: Stream,
    pub addr: SocketAddr,
    pub since: Instant,
    /// The dialer's hello, and its nonce when a secret is required.
    hello: [u8; HELLO_BYTES + NONCE_BYTES],
    hello_read_bytes: usize,
    /// With a secret: the member the hello named and the transcript, until
    /// the dialer's MAC proves the secret.
    awaiting_mac: Option<(u64, Box<[u8; TRANSCRIPT_BYTES]>)>,
    mac: [u8; MAC_BYTES],
    mac_read_bytes: usize,
    /// The dialer asks for the member table (its hello named no member).
    asks_members: bool,
    /// The member on the other end, once it proved who it is.
    pub from: Option<u64>,
    /// WRITABLE is registered: TLS bytes wait for the socket.
    writable: bool,
    decoder: FrameDecoder,
    /// Invariant: only set while `from` is.
    stream: Option<InStream>,
    /// Reading stopped because the inbox was full, before `WouldBlock`.
    pub paused: bool,
    /// Frame bytes read since the member proved who it is.
    pub received_bytes: u64,
}

impl Inbound {
    pub fn new(conn: Stream, addr: SocketAddr, now: Instant, config: &Config) -> Inbound {
        Inbound {
            conn,
            addr,
            since: now,
            hello: [0; HELLO_BYTES + NONCE_BYTES],
            hello_read_bytes: 0,
            awaiting_mac: None,
            mac: [0; MAC_BYTES],
            mac_read_bytes: 0,
            asks_members: false,
            from: None,
            writable: false,
            decoder: FrameDecoder::new(config.frame_bytes_max),
            stream: None,
            paused: false,
            received_bytes: 0,
        }
    }

    /// Reads the hello if it is not complete yet; answers it once it is;
    /// with a secret, reads and checks the dialer's MAC. `Ok(Some(from))`
    /// the moment a member has proved who it is. `peer_name` gives the host
    /// a known member's certificate must be valid for.
    pub fn drive_handshake<'a>(
        &mut self,
        config: &Config,
        peer_name: impl Fn(u64) -> Option<&'a str>,
    ) -> Result<Option<u64>, Close> {
        if self.from.is_some() {
            return Ok(None);
        }
        if self.awaiting_mac.is_none() && !self.read_hello(config, peer_name)? {
            return Ok(None);
        }
        let Some((from, transcript)) = &self.awaiting_mac else {
            return Ok(self.from);
        };
        if !read_some(&mut self.conn, &mut self.mac, &mut self.mac_read_bytes)? {
            return Ok(None);
        }
        let secret = config.secret.as_ref().expect("a MAC is awaited only with a secret");
        wire::verify_hello_mac(secret.bytes(), MacRole::Dialer, transcript, &self.mac)
            .map_err(Close::Refused)?;
        if self.asks_members {
            let mac = |answer: &[u8]| wire::members_mac(secret.bytes(), transcript, answer);
            let answer = members_answer(&config.members_answer, Some(mac))?;
            return Err(self.send_members(&answer));
        }
        self.from = Some(*from);
        self.awaiting_mac = None;
        Ok(self.from)
    }

    /// Reads and checks the hello and answers it. True once answered.
    fn read_hello<'a>(
        &mut self,
        config: &Config,
        peer_name: impl Fn(u64) -> Option<&'a str>,
    ) -> Result<bool, Close> {
        // The hello alone first: its flag must be checked before waiting
        // for a nonce a dialer without the secret never sends.
        if !read_some(&mut self.conn, &mut self.hello[..HELLO_BYTES], &mut self.hello_read_bytes)? {
            return Ok(false);
        }
        let head: &[u8; HELLO_BYTES] = self.hello.first_chunk().expect("hello fits");
        if wire::asks_members(head) {
            return self.read_members_query(config);
        }
        let is_peer = |id| peer_name(id).is_some();
        let is_removed = |id| !is_peer(id) && config.removed.contains(&id);
        let hello = Hello::check(head, config.cluster_id, config.local_id, |id| {
            is_peer(id) || is_removed(id)
        })
        .map_err(Close::Refused)?;
        wire::check_secret_flag(head, config.secret.is_some()).map_err(Close::Refused)?;
        if is_removed(hello.from) {
            return self.answer_removed(config, hello);
        }
        self.check_certificate(config, hello.from, peer_name(hello.from).unwrap_or_default())?;
        let reply = Hello { cluster_id: config.cluster_id, from: config.local_id, to: hello.from };
        let Some(secret) = &config.secret else {
            self.send_reply(&reply.encode())?;
            self.from = Some(hello.from);
            return Ok(true);
        };
        if !read_some(&mut self.conn, &mut self.hello, &mut self.hello_read_bytes)? {
            return Ok(false);
        }
        let transcript = self.send_signed_reply(secret, reply.encode_flagged(true))?;
        self.awaiting_mac = Some((hello.from, transcript));
        Ok(true)
    }

    /// A joining member asks for the member table: answered like any hello
    /// (so a secret is proved both ways first), then the table is sent and
    /// the connection closed.
    fn read_members_query(&mut self, config: &Config) -> Result<bool, Close> {
        let head: &[u8; HELLO_BYTES] = self.hello.first_chunk().expect("hello fits");
        wire::check_members_query(head, config.cluster_id).map_err(Close::Refused)?;
        wire::check_secret_flag(head, config.secret.is_some()).map_err(Close::Refused)?;
        if config.members_answer.is_empty() {
            return Err(Close::Protocol("asked for the member table before it is known here"));
        }
        let reply = Hello { cluster_id: config.cluster_id, from: config.local_id, to: 0 };
        let Some(secret) = &config.secret else {
            self.send_reply(&reply.encode_flags(wire::FLAG_MEMBERS))?;
            let answer = members_answer(&config.members_answer, None::<fn(&[u8]) -> [u8; 32]>)?;
            return Err(self.send_members(&answer));
        };
        if !read_some(&mut self.conn, &mut self.hello, &mut self.hello_read_bytes)? {
            return Ok(false);
        }
        let flags = wire::FLAG_SECRET | wire::FLAG_MEMBERS;
        let transcript = self.send_signed_reply(secret, reply.encode_flags(flags))?;
        self.asks_members = true;
        self.awaiting_mac = Some((0, transcript));
        Ok(true)
    }

    /// Sends `head` with a fresh nonce and the acceptor's MAC over both
    /// hellos; the transcript, which the dialer's MAC must cover next.
    fn send_signed_reply(
        &mut self,
        secret: &Secret,
        head: [u8; HELLO_BYTES],
    ) -> Result<Box<[u8; TRANSCRIPT_BYTES]>, Close> {
        let mut answer = [0u8; HELLO_BYTES + NONCE_BYTES + MAC_BYTES];
        answer[..HELLO_BYTES].copy_from_slice(&head);
        fill_random(&mut answer[HELLO_BYTES..HELLO_BYTES + NONCE_BYTES])?;
        let acceptor = answer[..HELLO_BYTES + NONCE_BYTES].try_into().expect("sized");
        let transcript = Box::new(wire::transcript(&self.hello, acceptor));
        let mac = wire::hello_mac(secret.bytes(), MacRole::Acceptor, &transcript);
        answer[HELLO_BYTES + NONCE_BYTES..].copy_from_slice(&mac);
        self.send_reply(&answer)?;
        Ok(transcript)
    }

    /// Sends the member table answer and flushes it; the reason to close.
    fn send_members(&mut self, answer: &[u8]) -> Close {
        match self.send_reply(answer).and_then(|()| self.conn.flush_tls().map_err(Close::Io)) {
            Ok(()) => Close::AnsweredMembers,
            Err(close) => close,
        }
    }

    /// Tells a removed member that it was removed, with a nonce and MAC
    /// when a secret is required (so the answer proves the secret like any
    /// other), then closes. Nothing but the fact is revealed, so no
    /// certificate check is needed first.
    fn answer_removed(&mut self, config: &Config, hello: Hello) -> Result<bool, Close> {
        let reply = Hello { cluster_id: config.cluster_id, from: config.local_id, to: hello.from };
        let removed = Close::Refused(HelloError::RemovedMember(hello.from));
        let Some(secret) = &config.secret else {
            self.send_reply(&reply.encode_flags(wire::FLAG_REMOVED))?;
            self.conn.flush_tls().map_err(Close::Io)?;
            return Err(removed);
        };
        if !read_some(&mut self.conn, &mut self.hello, &mut self.hello_read_bytes)? {
            return Ok(false);
        }
        let flags = wire::FLAG_SECRET | wire::FLAG_REMOVED;
        self.send_signed_reply(secret, reply.encode_flags(flags))?;
        self.conn.flush_tls().map_err(Close::Io)?;
        Err(removed)
    }

    /// Under peer TLS, the certificate the dialer presented (its chain was
    /// checked against the peer CA in the handshake) must be valid for the
    /// member the hello names.
    fn check_certificate(&self, config: &Config, from: u64, host: &str) -> Result<(), Close> {
        let Some(peer_tls) = &config.tls else { return Ok(()) };
        let name = peer_tls.allowed_hostname.as_deref().unwrap_or(host);
        let leaf = self.conn.peer_certificates().and_then(|chain| chain.first());
        match leaf {
            Some(cert) if tls::certificate_names(cert, name) => Ok(()),
            _ => Err(Close::Refused(HelloError::CertificateMismatch {
                member: from,
                name: name.to_string(),
            })),
        }
    }

    /// At most 96 bytes into the empty send buffer of a new connection (or
    /// into rustls' buffer): anything short of all of them means the
    /// connection is already broken.
    fn send_reply(&mut self, reply: &[u8]) -> Result<(), Close> {
        match self.conn.write(reply) {
            Ok(n) if n == reply.len() => Ok(()),
            Ok(_) => Err(Close::Protocol("could not send the handshake answer")),
            Err(e) => Err(Close::Io(e)),
        }
    }

    /// Asks for WRITABLE events exactly while TLS bytes wait for the socket.
    pub fn sync_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let want = self.conn.wants_write();
        if want != self.writable {
            let interest = self.conn.interest(false);
            registry.reregister(&mut self.conn, token, interest)?;
            self.writable = want;
        }
        Ok(())
    }

    /// Writes TLS bytes that wait (a handshake flight, an alert).
    pub fn flush_tls(&mut self) -> Result<(), Close> {
        self.conn.flush_tls().map_err(Close::Io)
    }

    /// Reads and delivers frames until the socket would block or the inbox
    /// is full. `Err` closes the connection.
    pub fn read_frames<M: DeserializeOwned>(
        &mut self,
        inbox: &mut Inbox<M>,
        config: &Config,
    ) -> Result<(), Close> {
        let Some(from) = self.from else { return Ok(()) };
        loop {
            // Checked before every frame, also the first: an event for a
            // paused connection must not deliver beyond the bound.
            if inbox.is_full(config) {
                self.paused = true;
                return Ok(());
            }
            if let Some(frame) = self.decoder.next_frame().map_err(Close::Frame)? {
                self.deliver(from, frame, inbox)?;
                continue;
            }
            match self.decoder.fill(&mut self.conn) {
                Ok(0) => return Err(Close::Eof),
                Ok(read) => self.received_bytes += read as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.paused = false;
                    return Ok(());
                }
                Err(e) => return Err(Close::Io(e)),
            }
        }
    }

    fn deliver<M>(
        &mut self,
        from: u64,
        frame: Frame<M>,
        inbox: &mut Inbox<M>,
    ) -> Result<(), Close> {
        match frame {
            Frame::Message(message) => inbox.messages.push_back((from, message)),
            Frame::StreamStart { stream, header } => {
                if self.stream.is_some() {
                    return Err(Close::Protocol("a stream started inside another"));
                }
                self.stream = Some(InStream::new(StreamId(stream)));
                let event = StreamEvent::Started { from, stream: StreamId(stream), header };
                inbox.stream_events.push_back(event);
            }
            Frame::StreamChunk { stream, data } => {
                let open = self.open_stream(stream)?;
                let offset_bytes = open.received_bytes;
                open.received_bytes += data.len() as u64;
                open.crc.update(&data);
                inbox.stream_bytes += data.len();
                let stream = StreamId(stream);
                inbox.stream_events.push_back(StreamEvent::Chunk {
                    from,
                    stream,
                    offset_bytes,
                    data,
                });
            }
            Frame::StreamEnd { stream, total_bytes, crc32 } => {
                self.open_stream(stream)?;
                let open = self.stream.take().expect("checked by open_stream");
                let stream = StreamId(stream);
                let event = if open.verify(total_bytes, crc32) {
                    StreamEvent::Finished { from, stream, total_bytes }
                } else {
                    log::warn!("stream {} from peer {from:016x} failed its checksum", stream.0);
                    StreamEvent::Aborted { from, stream, reason: AbortReason::Corrupt }
                };
                inbox.stream_events.push_back(event);
            }
            Frame::StreamAbort { stream } => {
                self.open_stream(stream)?;
                self.stream = None;
                let reason = AbortReason::SenderAborted;
                inbox.stream_events.push_back(StreamEvent::Aborted {
                    from,
                    stream: StreamId(stream),
                    reason,
                });
            }
        }
        Ok(())
    }

    fn open_stream(&mut self, stream: u64) -> Result<&mut InStream, Close> {
        match self.stream.as_mut() {
            Some(open) if open.id.0 == stream => Ok(open),
            _ => Err(Close::Protocol("a stream frame for a stream that is not open")),
        }
    }

    /// Whether the connection has proved nothing yet.
    pub fn is_stranger(&self) -> bool {
        self.from.is_none()
    }

    /// How far a stranger got in its handshake, for choosing which one
    /// makes room when all their slots are taken: a member's dialer sends
    /// its whole hello (and nonce) at once, so the connections that sent
    /// less are the first to go, the oldest first among equals.
    pub fn handshake_progress_bytes(&self) -> usize {
        let answered = usize::from(self.awaiting_mac.is_some()) * (HELLO_BYTES + NONCE_BYTES);
        self.hello_read_bytes + answered + self.mac_read_bytes
    }

    /// Tells the inbox about a stream cut short by the end of this connection
    /// and reports a partial frame that is being discarded.
    pub fn closing<M>(&mut self, inbox: &mut Inbox<M>) {
        if let (Some(from), Some(open)) = (self.from, self.stream.take()) {
            let reason = AbortReason::ConnectionLost;
            inbox.stream_events.push_back(StreamEvent::Aborted { from, stream: open.id, reason });
        }
        if self.decoder.pending_bytes() > 0 {
            log::debug!(
                "discarded {} bytes of a partial frame from {}",
                self.decoder.pending_bytes(),
                self.addr
            );
        }
    }
}

/// The member table answer: length, table, and the MAC with a secret.
fn members_answer(
    table: &[u8],
    mac: Option<impl Fn(&[u8]) -> [u8; MAC_BYTES]>,
) -> Result<Vec<u8>, Close> {
    if table.len() > wire::MEMBERS_ANSWER_BYTES_MAX {
        return Err(Close::Protocol("the member table is too large to answer"));
    }
    let mut answer = Vec::with_capacity(4 + table.len() + MAC_BYTES);
    answer.extend_from_slice(&(table.len() as u32).to_le_bytes());
    answer.extend_from_slice(table);
    if let Some(mac) = mac {
        let tag = mac(&answer);
        answer.extend_from_slice(&tag);
    }
    Ok(answer)
}

/// Reads into `buf[*filled..]` until it is full. `Ok(false)` while the
/// socket would block.
fn read_some(conn: &mut Stream, buf: &mut [u8], filled: &mut usize) -> Result<bool, Close> {
    while *filled < buf.len() {
        match conn.read(&mut buf[*filled..]) {
            Ok(0) => return Err(Close::Eof),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(Close::Io(e)),
        }
    }
    Ok(true)
}

/// Random bytes from the operating system, for a nonce.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), Close> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| Close::Protocol("the system gave no random bytes for a nonce"))
}
