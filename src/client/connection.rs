//! One pipelined protocol connection: `send` requests without waiting,
//! `recv` answers and pushed watch frames in whatever order they come.
//!
//! Call order: `connect`, then any mix of `send` (buffers a frame, returns
//! its request id) and `recv` (returns the next frame; it writes the buffered
//! requests out before it blocks on the socket, so requests sent between two
//! `recv`s leave in one write). `flush` writes without reading. After an
//! error of the connection itself (`ConnectionLost`, `Timeout`, `Protocol`)
//! every later call fails: drop it and dial again.
//!
//! Bounds: at most `max_in_flight` requests unanswered (`WindowFull`
//! beyond), so the send buffer holds at most that many frames, each at most
//! the server's frame limit; the read buffer holds at most one frame of the
//! client's announced limit plus what one read brings.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::endpoint::dial;
use super::error::{ClientError, DialFailure};
use crate::proto::{
    ClientHello, EncodeError, FRAME_HEADER_BYTES, FrameDecoder, Request, SERVER_HELLO_BYTES,
    ServerHello, ServerMessage, decode_server_message, encode_request,
};

/// The largest frame body the client accepts by default: 16 MiB, enough for
/// a range of ten thousand 1 KiB values. Larger answers come back as
/// `ResponseTooLarge`; page with `limit` instead.
pub const DEFAULT_MAX_RESPONSE_BYTES: u32 = 16 * 1024 * 1024;

/// Requests one connection keeps unanswered by default. A server bounds its
/// own per-connection queue; staying below it avoids `TooManyRequests`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Bytes read from the socket at a time, and the read buffer's first size.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How a connection is opened and how long it may wait.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub dial_timeout: Duration,
    /// How long a `recv` without a deadline waits for a byte before it gives
    /// up with `Timeout`; `None` waits for ever.
    pub idle_timeout: Option<Duration>,
    pub max_response_bytes: u32,
    pub max_in_flight: usize,
    /// Refuse a server of another cluster (0: accept any).
    pub expected_cluster_id: u64,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            dial_timeout: Duration::from_secs(2),
            idle_timeout: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            expected_cluster_id: 0,
        }
    }
}

/// A connection after a successful handshake.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    endpoint: String,
    cluster_id: u64,
    member_id: u64,
    /// The largest request body the server accepts (from its hello).
    server_max_frame_bytes: u32,
    max_response_bytes: u32,
    max_in_flight: usize,
    idle_timeout: Option<Duration>,
    /// Invariant: `read_start <= read_end <= read_buffer.len()`; the bytes
    /// in `read_start..read_end` are received and not yet yielded.
    read_buffer: Vec<u8>,
    read_start: usize,
    read_end: usize,
    /// Encoded requests not yet written.
    write_buffer: Vec<u8>,
    /// Request ids start at 1: id 0 is the connection's own in error frames.
    next_request_id: u64,
    /// Invariant: `in_flight <= max_in_flight`.
    in_flight: usize,
    broken: bool,
}

impl Connection {
    /// Dials `endpoint` and runs the handshake within the dial timeout.
    pub fn connect(endpoint: &str, options: &ConnectOptions) -> Result<Connection, ClientError> {
        Self::open(endpoint, options).map_err(|reason| ClientError::Unreachable {
            tried: vec![DialFailure { endpoint: endpoint.to_string(), reason }],
        })
    }

    /// `connect` with the failure as a bare reason, for callers that try a
    /// list of endpoints and report them together.
    pub(crate) fn open(endpoint: &str, options: &ConnectOptions) -> Result<Connection, String> {
        let mut stream = dial(endpoint, options.dial_timeout)?;
        let (cluster_id, member_id, server_max_frame_bytes) = handshake(&mut stream, options)?;
        if options.expected_cluster_id != 0 && cluster_id != options.expected_cluster_id {
            return Err(format!(
                "belongs to cluster {cluster_id:x}, not {:x}",
                options.expected_cluster_id
            ));
        }
        let set = stream.set_read_timeout(options.idle_timeout);
        set.map_err(|error| error.to_string())?;
        Ok(Connection {
            stream,
            endpoint: endpoint.to_string(),
            cluster_id,
            member_id,
            server_max_frame_bytes,
            max_response_bytes: options.max_response_bytes,
            max_in_flight: options.max_in_flight,
            idle_timeout: options.idle_timeout,
            read_buffer: vec![0; READ_CHUNK_BYTES],
            read_start: 0,
            read_end: 0,
            write_buffer: Vec::new(),
            next_request_id: 1,
            in_flight: 0,
            broken: false,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The cluster the server said it belongs to in its hello.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The member that answers on this connection.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Encodes `request` into the send buffer and returns its request id.
    /// Nothing is written to the socket until `flush` or `recv`.
    pub fn send(&mut self, request: &Request) -> Result<u64, ClientError> {
        self.check_usable()?;
        if self.in_flight >= self.max_in_flight {
            return Err(ClientError::WindowFull { max_in_flight: self.max_in_flight });
        }
        let id = self.next_request_id;
        match encode_request(&mut self.write_buffer, id, request, self.server_max_frame_bytes) {
            Ok(_) => {}
            Err(EncodeError::TooLarge { body_len_bytes, max_body_bytes }) => {
                return Err(ClientError::TooLarge { body_len_bytes, max_body_bytes });
            }
            Err(EncodeError::Serialize(detail)) => return Err(self.protocol(detail)),
        }
        self.next_request_id += 1;
        self.in_flight += 1;
        Ok(id)
    }

    /// Writes every buffered request. On failure the requests did not all
    /// reach the server whole, and the connection is unusable.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.check_usable()?;
        if self.write_buffer.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.write_buffer);
        self.write_buffer.clear();
        result.map_err(|error| self.lost(error.to_string()))
    }

    /// The next frame from the server: an answer (its request id is no longer
    /// in flight) or a pushed watch message. Blocks until `deadline`, or
    /// without one until the idle timeout. An error frame with id 0 (the
    /// server closing the connection) comes back as `ConnectionLost`.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<ServerMessage, ClientError> {
        self.check_usable()?;
        loop {
            if let Some(message) = self.next_buffered()? {
                return self.account(message);
            }
            self.flush()?;
            self.fill(deadline)?;
        }
    }

    fn account(&mut self, message: ServerMessage) -> Result<ServerMessage, ClientError> {
        match &message {
            ServerMessage::Error { request_id: 0, error } => {
                Err(self.lost(format!("the server closed the connection: {error}")))
            }
            ServerMessage::Response { .. } | ServerMessage::Error { .. } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                Ok(message)
            }
            ServerMessage::Watch { .. } => Ok(message),
        }
    }

    /// Decodes one complete frame from the read buffer, if one is there.
    fn next_buffered(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        let pending = &self.read_buffer[self.read_start..self.read_end];
        let mut decoder = FrameDecoder::new(pending, self.max_response_bytes);
        let decoded = match decoder.next() {
            None => return Ok(None),
            Some(Ok(frame)) => decode_server_message(&frame).map_err(|e| e.to_string()),
            Some(Err(error)) => Err(error.to_string()),
        };
        self.read_start += decoder.consumed_bytes();
        match decoded {
            Ok(message) => Ok(Some(message)),
            Err(detail) => Err(self.protocol(detail)),
        }
    }

    /// Reads at least one more byte, making room for the frame in progress.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<(), ClientError> {
        self.make_room();
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out(Duration::ZERO));
            }
            let set = self.stream.set_read_timeout(Some(left));
            set.map_err(|error| self.lost(error.to_string()))?;
        }
        let result = self.stream.read(&mut self.read_buffer[self.read_end..]);
        if deadline.is_some() {
            // Restore the idle timeout for callers without a deadline.
            let _ = self.stream.set_read_timeout(self.idle_timeout);
        }
        match result {
            Ok(0) => Err(self.lost("the server closed the connection".to_string())),
            Ok(read) => {
                self.read_end += read;
                Ok(())
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let waited = deadline
                    .map_or(self.idle_timeout.unwrap_or_default(), |_| Duration::from_millis(0));
                Err(self.timed_out(waited))
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => Ok(()),
            Err(error) => Err(self.lost(error.to_string())),
        }
    }

    /// Moves unread bytes to the front and grows the buffer to hold the
    /// frame in progress. Bounded: the decoder refuses a header above the
    /// cap, so `needed` is at most the cap plus a header. A buffer grown for
    /// one large answer shrinks back once it is drained.
    fn make_room(&mut self) {
        if self.read_start == self.read_end {
            self.read_start = 0;
            self.read_end = 0;
            if self.read_buffer.len() > 4 * READ_CHUNK_BYTES {
                self.read_buffer = vec![0; READ_CHUNK_BYTES];
            }
        }
        let pending = &self.read_buffer[self.read_start..self.read_end];
        let needed = FrameDecoder::new(pending, self.max_response_bytes)
            .needed_bytes()
            .unwrap_or(FRAME_HEADER_BYTES);
        if self.read_start + needed > self.read_buffer.len()
            || self.read_end == self.read_buffer.len()
        {
            self.read_buffer.copy_within(self.read_start..self.read_end, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
        if self.read_buffer.len() < needed {
            self.read_buffer.resize(needed, 0);
        }
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::ConnectionLost {
                endpoint: self.endpoint.clone(),
                cause: "the connection failed earlier".to_string(),
            });
        }
        Ok(())
    }

    fn lost(&mut self, cause: String) -> ClientError {
        self.broken = true;
        ClientError::ConnectionLost { endpoint: self.endpoint.clone(), cause }
    }

    fn protocol(&mut self, detail: String) -> ClientError {
        self.broken = true;
        ClientError::Protocol { endpoint: self.endpoint.clone(), detail }
    }

    fn timed_out(&mut self, waited: Duration) -> ClientError {
        // An answer may still arrive; the stream cannot be trusted to line
        // up with new requests' bookkeeping, so the connection is done.
        self.broken = true;
        ClientError::Timeout {
            endpoint: self.endpoint.clone(),
            after_ms: waited.as_millis() as u64,
        }
    }
}

/// Sends the client hello and reads the server's, within the dial timeout.
/// Returns the cluster id, member id and the server's frame limit.
fn handshake(stream: &mut TcpStream, options: &ConnectOptions) -> Result<(u64, u64, u32), String> {
    let hello = ClientHello::new(options.max_response_bytes);
    let timeout = Some(options.dial_timeout.max(Duration::from_millis(1)));
    stream.set_read_timeout(timeout).map_err(|error| error.to_string())?;
    stream.set_write_timeout(timeout).map_err(|error| error.to_string())?;
    stream.write_all(&hello.to_bytes()).map_err(|error| format!("handshake: {error}"))?;
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut reply).map_err(|error| format!("handshake: {error}"))?;
    stream.set_write_timeout(None).map_err(|error| error.to_string())?;
    match ServerHello::parse(&reply, &hello) {
        Ok(Some(ServerHello::Accepted { cluster_id, member_id, max_frame_bytes, .. })) => {
            Ok((cluster_id, member_id, max_frame_bytes))
        }
        Ok(Some(ServerHello::Refused { reason, .. })) => {
            Err(format!("handshake refused: {reason:?}"))
        }
        Ok(None) => Err("handshake: short server hello".to_string()),
        Err(error) => Err(format!("handshake: {error}")),
    }
}
