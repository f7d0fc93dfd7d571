//! One pipelined protocol connection: `send` requests without waiting,
//! `recv` answers and pushed watch frames in whatever order they come.
//!
//! Call order: `connect`, then any mix of `send` (buffers a frame, returns
//! its request id) and `recv` (returns the next frame; it writes the buffered
//! requests out as it goes, so requests sent between two `recv`s leave in
//! one write). `flush` writes everything before returning. After an
//! error of the connection itself (`ConnectionLost`, `Timeout`, `Protocol`)
//! every later call fails: drop it and dial again.
//!
//! Bounds: at most `max_in_flight` requests unanswered and at most
//! `UNWRITTEN_BYTES_MAX` waiting to be written (plus the one request that
//! crossed it): beyond either, `send` says `WindowFull` and the caller
//! `recv`s. The read buffer holds at most one frame of the client's
//! announced limit plus one read's worth.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::endpoint::{dial, io_cause, is_timeout, timed_out};
use super::error::{ClientError, DialFailure};
use crate::proto::{
    ClientHello, EncodeError, FRAME_HEADER_BYTES, FrameDecoder, Refusal, Request,
    SERVER_HELLO_BYTES, ServerHello, ServerMessage, decode_server_message, encode_request,
};

/// The largest frame body the client accepts by default: 16 MiB, enough for
/// a range of ten thousand 1 KiB values. Larger answers come back as
/// `ResponseTooLarge`; page with `limit` instead.
pub const RESPONSE_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;

/// Requests one connection keeps unanswered by default. A server bounds its
/// own per-connection queue, and staying below it avoids `TooManyRequests`;
/// 128 is far past the point where more in flight stops helping (a node
/// batches a loop iteration's writes into one fsync anyway).
pub const IN_FLIGHT_MAX_DEFAULT: usize = 128;

/// The longest one write blocks before the connection looks for answers.
/// A server may stop reading a connection until its answers are taken; a
/// client stuck in a write would never take them. Short, because it is also
/// how long a stalled writer waits between two looks.
const WRITE_STALL: Duration = Duration::from_millis(2);

/// Encoded requests waiting to be written before `send` says `WindowFull`:
/// a few socket buffers' worth, so the writer never idles for want of
/// bytes, while a pipeline of large requests holds memory to this.
const UNWRITTEN_BYTES_MAX: usize = 4 * 1024 * 1024;

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
    /// Speak TLS with this configuration; `None` speaks plain TCP.
    pub tls: Option<Arc<ClientConfig>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            dial_timeout: Duration::from_secs(2),
            idle_timeout: None,
            max_response_bytes: RESPONSE_BYTES_MAX_DEFAULT,
            max_in_flight: IN_FLIGHT_MAX_DEFAULT,
            expected_cluster_id: 0,
            tls: None,
        }
    }
}

/// The socket under a connection: plain TCP, or TLS over it. Timeouts and
/// peeks act on the TCP socket; reads and writes go through TLS.
#[derive(Debug)]
enum Socket {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Socket {
    /// Wraps a dialed socket in TLS for `endpoint`'s host when asked to.
    fn new(
        tcp: TcpStream,
        endpoint: &str,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Socket, String> {
        let Some(config) = tls else { return Ok(Socket::Plain(tcp)) };
        let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
        let name = crate::tls::server_name(host).map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(config.clone(), name)
            .map_err(|e| format!("TLS to {endpoint}: {e}"))?;
        Ok(Socket::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(tcp) => tcp,
            Socket::Tls(tls) => tls.get_ref(),
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self, Socket::Tls(_))
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.read(buf),
            Socket::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.write(buf),
            Socket::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Socket::Plain(tcp) => tcp.flush(),
            Socket::Tls(tls) => tls.flush(),
        }
    }
}

/// A connection after a successful handshake.
#[derive(Debug)]
pub struct Connection {
    stream: Socket,
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
    /// Encoded requests; `write_start..` is not yet written.
    /// Invariant: `write_start <= write_buffer.len()`.
    write_buffer: Vec<u8>,
    write_start: usize,
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
        let tcp = dial(endpoint, options.dial_timeout)?;
        let mut stream = Socket::new(tcp, endpoint, options.tls.as_ref())?;
        let (cluster_id, member_id, server_max_frame_bytes) =
            handshake(&mut stream, endpoint, options)?;
        if options.expected_cluster_id != 0 && cluster_id != options.expected_cluster_id {
            return Err(format!(
                "belongs to cluster {cluster_id:x}, not {:x}",
                options.expected_cluster_id
            ));
        }
        let set = stream.tcp().set_read_timeout(options.idle_timeout);
        set.map_err(|error| io_cause(&error))?;
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
            write_start: 0,
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
        let unwritten_bytes = self.write_buffer.len() - self.write_start;
        // A request always fits in an empty buffer, however large.
        if self.in_flight >= self.max_in_flight || unwritten_bytes >= UNWRITTEN_BYTES_MAX {
            return Err(ClientError::WindowFull { in_flight: self.in_flight, unwritten_bytes });
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

    /// Writes every buffered request, reading what the server sends while
    /// it takes no more bytes (see `recv`). On failure not every request
    /// reached the server whole, and the connection is unusable.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.check_usable()?;
        let mut progress_at = Instant::now();
        while self.write_pending() {
            if self.write_some()? {
                progress_at = Instant::now();
                continue;
            }
            self.check_idle(progress_at)?;
            // Answers wait in the read buffer, within its bound; beyond it
            // the write just waits for the server to read on its own.
            if self.read_end - self.read_start < self.read_buffer_max_bytes() {
                self.read_while_stalled()?;
            }
        }
        Ok(())
    }

    /// The next frame from the server: an answer (its request id is no longer
    /// in flight) or a pushed watch message. Blocks until `deadline`, or
    /// without one until the idle timeout passes without progress. An error
    /// frame with id 0 (the server closing the connection) comes back as
    /// `ConnectionLost`.
    ///
    /// Buffered requests are written on the way, as far as the socket takes
    /// them: a server may stop reading a connection until its answers are
    /// taken, so an answer that arrives is returned even while requests
    /// still wait to be written. They go out on the next calls.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<ServerMessage, ClientError> {
        self.check_usable()?;
        let started = Instant::now();
        let mut progress_at = started;
        loop {
            if let Some(message) = self.next_buffered()? {
                return self.account(message);
            }
            if self.write_pending() && self.write_some()? {
                progress_at = Instant::now();
                continue;
            }
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    return Err(self.timed_out(started));
                }
            } else {
                self.check_idle(progress_at)?;
            }
            if self.write_pending() {
                self.read_while_stalled()?;
            } else {
                self.fill(deadline, started)?;
            }
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

    /// True when the server has already closed the connection (a FIN or
    /// reset is waiting), found without blocking. A request written into
    /// such a socket would be lost and, for a write, leave its outcome
    /// unknown for no reason; callers check this first and dial again.
    pub fn closed_by_server(&mut self) -> bool {
        if self.broken {
            return true;
        }
        if self.stream.tcp().set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let closed = match self.stream.tcp().peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !is_timeout(&error) && error.kind() != ErrorKind::Interrupted,
        };
        closed || self.stream.tcp().set_nonblocking(false).is_err()
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

    fn write_pending(&self) -> bool {
        self.write_start < self.write_buffer.len()
    }

    /// One write call; it blocks at most `WRITE_STALL`. True when some bytes
    /// went out.
    fn write_some(&mut self) -> Result<bool, ClientError> {
        match self.stream.write(&self.write_buffer[self.write_start..]) {
            Ok(0) => Err(self.lost("the socket took no more bytes".to_string())),
            Ok(written) => {
                self.write_start += written;
                if self.write_start == self.write_buffer.len() {
                    self.write_buffer.clear();
                    self.write_start = 0;
                } else if self.write_start >= UNWRITTEN_BYTES_MAX {
                    // Keep the written prefix from piling up under a stream
                    // of new requests.
                    self.write_buffer.drain(..self.write_start);
                    self.write_start = 0;
                }
                Ok(true)
            }
            Err(error) if is_timeout(&error) || error.kind() == ErrorKind::Interrupted => Ok(false),
            Err(error) => Err(self.lost(io_cause(&error))),
        }
    }

    fn check_idle(&mut self, progress_at: Instant) -> Result<(), ClientError> {
        match self.idle_timeout {
            Some(idle) if progress_at.elapsed() >= idle => Err(self.timed_out(progress_at)),
            _ => Ok(()),
        }
    }

    /// Reads what the server sent, waiting at most `WRITE_STALL`.
    fn read_while_stalled(&mut self) -> Result<(), ClientError> {
        self.make_room();
        let set = self.stream.tcp().set_read_timeout(Some(WRITE_STALL));
        set.map_err(|error| self.lost(io_cause(&error)))?;
        let result = self.stream.read(&mut self.read_buffer[self.read_end..]);
        let _ = self.stream.tcp().set_read_timeout(self.idle_timeout);
        match result {
            Ok(0) => Err(self.lost("the server closed the connection".to_string())),
            Ok(read) => {
                self.read_end += read;
                Ok(())
            }
            Err(error) if is_timeout(&error) || error.kind() == ErrorKind::Interrupted => Ok(()),
            Err(error) => Err(self.lost(io_cause(&error))),
        }
    }

    /// Reads at least one more byte, waiting until `deadline` or the idle
    /// timeout.
    fn fill(&mut self, deadline: Option<Instant>, started: Instant) -> Result<(), ClientError> {
        self.make_room();
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let set = self.stream.tcp().set_read_timeout(Some(left.max(Duration::from_micros(1))));
            set.map_err(|error| self.lost(io_cause(&error)))?;
        }
        let result = self.stream.read(&mut self.read_buffer[self.read_end..]);
        if deadline.is_some() {
            // Back to the idle timeout for callers without a deadline.
            let _ = self.stream.tcp().set_read_timeout(self.idle_timeout);
        }
        match result {
            Ok(0) => Err(self.lost("the server closed the connection".to_string())),
            Ok(read) => {
                self.read_end += read;
                Ok(())
            }
            Err(error) if is_timeout(&error) => Err(self.timed_out(started)),
            Err(error) if error.kind() == ErrorKind::Interrupted => Ok(()),
            Err(error) => Err(self.lost(io_cause(&error))),
        }
    }

    /// The most bytes the read buffer holds: one frame at the client's cap
    /// plus one read's worth.
    fn read_buffer_max_bytes(&self) -> usize {
        self.max_response_bytes as usize + FRAME_HEADER_BYTES + READ_CHUNK_BYTES
    }

    /// Moves unread bytes to the front and grows the buffer to hold the
    /// frame in progress, with room for at least one more byte. Bounded: the
    /// decoder refuses a header above the cap, so `needed` is at most the cap
    /// plus a header, and stalled reads stop at `read_buffer_max_bytes`. A
    /// buffer grown for large answers shrinks back once it is drained.
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
        if self.read_end == self.read_buffer.len() {
            self.read_buffer.resize(self.read_end + READ_CHUNK_BYTES, 0);
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

    fn timed_out(&mut self, since: Instant) -> ClientError {
        // Answers may still arrive for requests the caller has given up on;
        // the connection is done rather than left with stale answers.
        self.broken = true;
        let after_ms = since.elapsed().as_millis() as u64;
        ClientError::Timeout { endpoint: self.endpoint.clone(), after_ms }
    }
}

/// Sends the client hello and reads the server's, within the dial timeout.
/// Returns the cluster id, member id and the server's frame limit.
fn handshake(
    stream: &mut Socket,
    endpoint: &str,
    options: &ConnectOptions,
) -> Result<(u64, u64, u32), String> {
    let hello = ClientHello::new(options.max_response_bytes);
    let timeout = Some(options.dial_timeout.max(Duration::from_millis(1)));
    let tls = stream.is_tls();
    let failed =
        |error: std::io::Error| handshake_failure(&error, endpoint, options.dial_timeout, tls);
    stream.tcp().set_read_timeout(timeout).map_err(failed)?;
    stream.tcp().set_write_timeout(timeout).map_err(failed)?;
    stream.write_all(&hello.to_bytes()).map_err(failed)?;
    stream.flush().map_err(failed)?;
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut reply).map_err(failed)?;
    stream.tcp().set_write_timeout(Some(WRITE_STALL)).map_err(failed)?;
    match ServerHello::parse(&reply, &hello) {
        Ok(Some(ServerHello::Accepted { cluster_id, member_id, max_frame_bytes, .. })) => {
            Ok((cluster_id, member_id, max_frame_bytes))
        }
        Ok(Some(ServerHello::Refused { reason: Refusal::TlsRequired, .. })) => Err(format!(
            "{endpoint} speaks TLS only: connect with https:// (and --cacert for its CA)"
        )),
        Ok(Some(ServerHello::Refused { reason, .. })) => {
            Err(format!("{endpoint} refused the handshake: {reason:?}"))
        }
        Ok(None) | Err(_) => Err(format!(
            "not an Ember client port: {endpoint} answered the handshake with other bytes"
        )),
    }
}

/// A handshake that broke off, in words: no answer in time, or the other
/// side hung up on our hello, which an Ember client port never does (it
/// answers even a refusal), but a peer port or another service does.
fn handshake_failure(
    error: &std::io::Error,
    endpoint: &str,
    timeout: Duration,
    tls: bool,
) -> String {
    if is_timeout(error) {
        return format!("{} (no answer to the handshake)", timed_out(endpoint, timeout));
    }
    if tls && error.kind() == ErrorKind::InvalidData {
        return format!("TLS handshake with {endpoint} failed: {error}");
    }
    if tls && matches!(error.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) {
        return format!(
            "TLS handshake with {endpoint} failed: the server closed the connection \
             (it may not speak TLS, or it refused our certificate)"
        );
    }
    match error.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            format!("not an Ember client port: {endpoint} closed the connection on the handshake")
        }
        _ => format!("handshake with {endpoint}: {}", io_cause(error)),
    }
}
