//! The receiving side: connections accepted on the listener, their
//! handshake, and the bounded inbox they deliver into.
//!
//! An accepted connection first has to present a valid hello within the
//! handshake timeout; until then it is a stranger and holds one of a bounded
//! number of slots. Once accepted it only carries frames towards us. When the
//! inbox is full the connection is simply not read: TCP's window then stops
//! the sender, and reading resumes from `Transport::tick` after the loop has
//! drained the inbox.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use serde::de::DeserializeOwned;

use super::Config;
use super::stream::{AbortReason, InStream, StreamEvent, StreamId};
use super::wire::{Frame, FrameDecoder, FrameError, HELLO_BYTES, Hello, HelloError};

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
    /// The same member connected again; its old connection is dead.
    Replaced,
    /// The member was removed from the cluster.
    Removed,
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
            Close::Replaced => write!(f, "replaced by a newer connection"),
            Close::Removed => write!(f, "member removed from the cluster"),
        }
    }
}

/// One accepted connection.
pub(crate) struct Inbound {
    pub conn: TcpStream,
    pub addr: SocketAddr,
    pub since: Instant,
    hello: [u8; HELLO_BYTES],
    hello_read_bytes: usize,
    /// The member on the other end, once its hello was accepted.
    pub from: Option<u64>,
    decoder: FrameDecoder,
    /// Invariant: only set while `from` is.
    stream: Option<InStream>,
    /// Reading stopped because the inbox was full, before `WouldBlock`.
    pub paused: bool,
}

impl Inbound {
    pub fn new(conn: TcpStream, addr: SocketAddr, now: Instant, config: &Config) -> Inbound {
        Inbound {
            conn,
            addr,
            since: now,
            hello: [0; HELLO_BYTES],
            hello_read_bytes: 0,
            from: None,
            decoder: FrameDecoder::new(config.frame_bytes_max),
            stream: None,
            paused: false,
        }
    }

    /// Reads the hello if it is not complete yet; answers it once it is.
    /// `Ok(Some(from))` the moment a member is accepted.
    pub fn drive_handshake(
        &mut self,
        config: &Config,
        is_peer: impl Fn(u64) -> bool,
    ) -> Result<Option<u64>, Close> {
        if self.from.is_some() {
            return Ok(None);
        }
        while self.hello_read_bytes < HELLO_BYTES {
            match self.conn.read(&mut self.hello[self.hello_read_bytes..]) {
                Ok(0) => return Err(Close::Eof),
                Ok(n) => self.hello_read_bytes += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(Close::Io(e)),
            }
        }
        let hello = Hello::check(&self.hello, config.cluster_id, config.local_id, is_peer)
            .map_err(Close::Refused)?;
        let reply = Hello { cluster_id: config.cluster_id, from: config.local_id, to: hello.from };
        // 32 bytes into the empty send buffer of a new connection: anything
        // short of all of them means the connection is already broken.
        match self.conn.write(&reply.encode()) {
            Ok(HELLO_BYTES) => {}
            Ok(_) => return Err(Close::Protocol("could not send the handshake answer")),
            Err(e) => return Err(Close::Io(e)),
        }
        self.from = Some(hello.from);
        Ok(Some(hello.from))
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
                Ok(_) => {}
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
