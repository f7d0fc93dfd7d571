//! One Ember protocol connection over tokio: the hello, then pipelined
//! request frames with ids, answers matched back to their callers.
//!
//! A link runs two tasks. The writer takes encoded frames from a bounded
//! queue and writes whatever has queued up in one system call, so the
//! requests of many concurrent etcd clients share a write, and the node
//! reads them in one go (and commits their writes with one fsync). The
//! reader decodes frames and hands each answer to the caller waiting for its
//! id.
//!
//! Two kinds: a *shared* link serves unary calls from any task, answers
//! matched by id; an *ordered* link belongs to one watch session and passes
//! every frame (answers and watch frames alike) into one channel in the
//! order the node sent them, because a watch's "created" answer, its events
//! and a progress answer must reach the etcd client in that order.
//!
//! Bounds: at most `max_in_flight` requests unanswered per shared link (a
//! semaphore); the writer queue holds at most `WRITE_QUEUE_FRAMES`; an
//! ordered link's channel holds at most its configured number of frames,
//! and when it is full the reader stops reading, so the node holds back
//! (or cancels the slow watch) instead of the gateway buffering without end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ember::proto::{
    ClientHello, EncodeError, FrameDecoder, Request, Response, SERVER_HELLO_BYTES, ServerHello,
    ServerMessage, decode_server_message, encode_request,
};
use ember::proto::{ErrorBody, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;

use crate::tls::{self, Socket};

/// How a link reaches its member: plain TCP, or TLS with this
/// configuration (the members' client port speaks TLS).
pub type MemberTls = Option<Arc<ClientConfig>>;

/// The largest frame body the gateway accepts from a node: 16 MiB, as
/// Ember's own client. A larger answer comes back as `ResponseTooLarge`.
pub const RESPONSE_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// Encoded frames waiting for the writer. A caller that finds the queue full
/// waits, so a burst of clients cannot queue more than this per link.
const WRITE_QUEUE_FRAMES: usize = 1024;

/// The most bytes the writer gathers into one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a call did not get an answer from the node.
#[derive(Debug, Clone)]
pub enum LinkError {
    /// The node answered with an error frame.
    Server(ErrorBody),
    /// The request encodes to more than the node accepts; nothing was sent.
    TooLarge,
    /// The connection died; `sent` says whether the request left whole.
    Lost { sent: bool, cause: String },
    /// No answer within the request timeout. The member may be stopped or
    /// cut off, so the link is given up; a write's outcome is unknown.
    TimedOut,
}

/// What the node said about itself in its hello.
#[derive(Clone, Copy, Debug)]
pub struct Hello {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The largest request body the node accepts.
    pub max_request_bytes: u32,
}

type Waiters = HashMap<u64, oneshot::Sender<Result<Response, ErrorBody>>>;

/// A connection to one node.
pub struct Link {
    pub endpoint: String,
    pub hello: Hello,
    frames: mpsc::Sender<Vec<u8>>,
    /// Shared links only: answers are handed to the caller waiting on the id.
    waiters: Arc<Mutex<Waiters>>,
    window: Arc<Semaphore>,
    next_request_id: AtomicU64,
    broken: Arc<AtomicBool>,
    /// The writer and the reader; ended with the link, so a member that
    /// stopped answering does not keep a task and a socket alive.
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Where the reader puts what it decodes.
enum Sink {
    Shared(Arc<Mutex<Waiters>>),
    Ordered(mpsc::Sender<ServerMessage>),
}

impl Link {
    /// A link for unary calls from any task.
    pub async fn shared(
        endpoint: &str,
        member_tls: &MemberTls,
        dial_timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Link, String> {
        let (stream, hello) = dial(endpoint, member_tls, dial_timeout).await?;
        let waiters = Arc::new(Mutex::new(HashMap::new()));
        Ok(Link::start(
            endpoint,
            stream,
            hello,
            max_in_flight,
            Sink::Shared(waiters.clone()),
            waiters,
        ))
    }

    /// A link whose every incoming frame goes, in order, to the returned
    /// receiver, which holds at most `buffer_frames`.
    pub async fn ordered(
        endpoint: &str,
        member_tls: &MemberTls,
        dial_timeout: Duration,
        buffer_frames: usize,
    ) -> Result<(Link, mpsc::Receiver<ServerMessage>), String> {
        let (stream, hello) = dial(endpoint, member_tls, dial_timeout).await?;
        let (sender, receiver) = mpsc::channel(buffer_frames);
        let unused = Arc::new(Mutex::new(HashMap::new()));
        Ok((
            Link::start(endpoint, stream, hello, buffer_frames, Sink::Ordered(sender), unused),
            receiver,
        ))
    }

    fn start(
        endpoint: &str,
        stream: Box<dyn Socket>,
        hello: Hello,
        max_in_flight: usize,
        sink: Sink,
        waiters: Arc<Mutex<Waiters>>,
    ) -> Link {
        let (read, write) = tokio::io::split(stream);
        let (frames, queue) = mpsc::channel(WRITE_QUEUE_FRAMES);
        let broken = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_loop(write, queue, broken.clone()));
        let reader = tokio::spawn(read_loop(read, sink, broken.clone()));
        Link {
            endpoint: endpoint.to_string(),
            hello,
            frames,
            waiters,
            window: Arc::new(Semaphore::new(max_in_flight)),
            next_request_id: AtomicU64::new(1),
            broken,
            tasks: [writer, reader],
        }
    }

    /// True once the connection has failed; the link is of no further use.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Sends `request` on a shared link and waits at most `timeout` for its
    /// answer; past it the link counts as broken.
    pub async fn call(&self, request: &Request, timeout: Duration) -> Result<Response, LinkError> {
        match tokio::time::timeout(timeout, self.call_unbounded(request)).await {
            Ok(answer) => answer,
            Err(_) => {
                self.broken.store(true, Ordering::Relaxed);
                Err(LinkError::TimedOut)
            }
        }
    }

    async fn call_unbounded(&self, request: &Request) -> Result<Response, LinkError> {
        let permit = self.window.clone().acquire_owned().await.map_err(|_| self.lost(false))?;
        let (id, frame) = self.encode(request)?;
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().expect("waiters lock").insert(id, sender);
        if self.frames.send(frame).await.is_err() {
            self.waiters.lock().expect("waiters lock").remove(&id);
            return Err(self.lost(false));
        }
        let answer = receiver.await;
        drop::<OwnedSemaphorePermit>(permit);
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(LinkError::Server(error)),
            Err(_) => Err(self.lost(true)),
        }
    }

    /// Sends `request` on an ordered link; its answer comes through the
    /// link's receiver with the returned request id.
    pub async fn send(&self, request: &Request) -> Result<u64, LinkError> {
        let (id, frame) = self.encode(request)?;
        self.frames.send(frame).await.map_err(|_| self.lost(false))?;
        Ok(id)
    }

    fn encode(&self, request: &Request) -> Result<(u64, Vec<u8>), LinkError> {
        if self.is_broken() {
            return Err(self.lost(false));
        }
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        match encode_request(&mut frame, id, request, self.hello.max_request_bytes) {
            Ok(_) => Ok((id, frame)),
            Err(EncodeError::TooLarge { .. }) => Err(LinkError::TooLarge),
            Err(EncodeError::Serialize(why)) => {
                Err(LinkError::Server(ErrorBody::with_message(ErrorCode::Internal, why)))
            }
        }
    }

    fn lost(&self, sent: bool) -> LinkError {
        LinkError::Lost { sent, cause: format!("connection to {} lost", self.endpoint) }
    }
}

/// Connects (with TLS when `member_tls` says so) and runs the hello within
/// `dial_timeout`.
async fn dial(
    endpoint: &str,
    member_tls: &MemberTls,
    dial_timeout: Duration,
) -> Result<(Box<dyn Socket>, Hello), String> {
    let attempt = async {
        let tcp = TcpStream::connect(endpoint).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut stream: Box<dyn Socket> = match member_tls {
            Some(config) => tls::connect(config, endpoint, tcp).await?,
            None => Box::new(tcp),
        };
        let hello = greet(&mut stream).await?;
        Ok::<_, String>((stream, hello))
    };
    match tokio::time::timeout(dial_timeout, attempt).await {
        Ok(result) => result.map_err(|why| format!("{endpoint}: {why}")),
        Err(_) => Err(format!("{endpoint}: no answer within {} ms", dial_timeout.as_millis())),
    }
}

async fn greet(stream: &mut Box<dyn Socket>) -> Result<Hello, String> {
    let ours = ClientHello::new(RESPONSE_BYTES_MAX);
    stream.write_all(&ours.to_bytes()).await.map_err(|e| e.to_string())?;
    let mut reply = [0u8; SERVER_HELLO_BYTES];
    stream.read_exact(&mut reply).await.map_err(|e| e.to_string())?;
    match ServerHello::parse(&reply, &ours).map_err(|e| e.to_string())? {
        Some(ServerHello::Accepted { max_frame_bytes, cluster_id, member_id, .. }) => {
            Ok(Hello { cluster_id, member_id, max_request_bytes: max_frame_bytes })
        }
        Some(ServerHello::Refused { reason, .. }) => Err(format!("refused the hello: {reason:?}")),
        None => Err("short hello".to_string()),
    }
}

/// Writes queued frames, as many at once as have queued, until the queue
/// closes (the link was dropped) or the socket fails.
async fn write_loop(
    mut socket: WriteHalf<Box<dyn Socket>>,
    mut queue: mpsc::Receiver<Vec<u8>>,
    broken: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
    while let Some(frame) = queue.recv().await {
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if socket.write_all(&batch).await.is_err() {
            break;
        }
        batch.clear();
    }
    broken.store(true, Ordering::Relaxed);
    let _ = socket.shutdown().await;
}

/// Reads and dispatches frames until the socket fails or closes; then
/// every caller still waiting learns that its answer is lost.
async fn read_loop(mut socket: ReadHalf<Box<dyn Socket>>, sink: Sink, broken: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        match socket.read(&mut buffer[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(read) => filled += read,
        }
        let Ok(consumed) = dispatch(&buffer[..filled], &sink).await else { break };
        buffer.copy_within(consumed..filled, 0);
        filled -= consumed;
        if filled == 0 && buffer.len() > READ_CHUNK_BYTES {
            buffer = vec![0u8; READ_CHUNK_BYTES];
        }
    }
    broken.store(true, Ordering::Relaxed);
    if let Sink::Shared(waiters) = sink {
        // Dropping the senders tells each waiting caller its answer is lost.
        waiters.lock().expect("waiters lock").clear();
    }
}

/// Hands every complete frame in `bytes` on; the bytes it used, or `Err`
/// when the stream broke the protocol or nobody listens any more.
async fn dispatch(bytes: &[u8], sink: &Sink) -> Result<usize, ()> {
    let mut decoder = FrameDecoder::new(bytes, RESPONSE_BYTES_MAX);
    let mut messages = Vec::new();
    for frame in decoder.by_ref() {
        let frame = frame.map_err(|_| ())?;
        messages.push(decode_server_message(&frame).map_err(|_| ())?);
    }
    let consumed = decoder.consumed_bytes();
    for message in messages {
        deliver(message, sink).await?;
    }
    Ok(consumed)
}

async fn deliver(message: ServerMessage, sink: &Sink) -> Result<(), ()> {
    match sink {
        Sink::Ordered(sender) => sender.send(message).await.map_err(|_| ()),
        Sink::Shared(waiters) => {
            let (id, answer) = match message {
                ServerMessage::Response { request_id, response } => (request_id, Ok(response)),
                ServerMessage::Error { request_id: 0, .. } => return Err(()),
                ServerMessage::Error { request_id, error } => (request_id, Err(error)),
                // No watch is ever opened on a shared link.
                ServerMessage::Watch { .. } => return Ok(()),
            };
            let waiter = waiters.lock().expect("waiters lock").remove(&id);
            if let Some(waiter) = waiter {
                let _ = waiter.send(answer);
            }
            Ok(())
        }
    }
}
