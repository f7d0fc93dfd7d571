//! Peer connections between members over mio.
//!
//! Owns: one outbound TCP connection per peer, the peer handshake, framing,
//! batched writes, bounded per-peer queues, reconnection with capped exponential
//! backoff, and streaming of snapshots in chunks.
//!
//! Must not touch: what a message means. It moves framed messages and reports
//! unreachable peers; Raft decides everything else.
//!
//! ## Shape
//!
//! Each member dials every other member once and only sends on that
//! connection; it receives on the connections the others dialed to it. So
//! between two members there are two connections, one per direction, and
//! neither side has to decide who dials whom. Wire format: see [`wire`].
//!
//! [`Transport`] is owned by the server's poll loop and never blocks, never
//! reads the clock (time is an argument) and never spawns a thread. Its
//! methods, in the order the loop calls them:
//!
//! - `new`, then `register` once: registers the listener, starts dialing.
//! - `handle_event(registry, token, now)` for every event whose token is in
//!   the range given to `new` (`owns(token)` tells). Readiness flags are not
//!   needed: mio allows spurious events, so every event means "make all the
//!   progress the socket allows".
//! - `drain_received()` → `(from, message)`; `drain_stream_events()`.
//! - `send(to, &message)` / `start_stream(to, &header, source)`: encode and
//!   enqueue, no I/O. A full queue or a peer that is down drops the message
//!   and the peer shows up in `unreachable()`, which Raft is told about.
//! - `flush(registry, now)`: writes every queue until `WouldBlock`, many
//!   frames per system call. The loop calls it after sending Raft's messages.
//! - `tick(registry, now)`: dials peers whose backoff has expired, drops
//!   handshakes that took too long and connections whose peer stopped
//!   reading (`write_stall_timeout`), resumes reading connections that
//!   paused on a full inbox. `next_timeout(now)` says when it is next needed.
//! - `unreachable()`, `drain_stream_outcomes()`.
//! - `add_peer` / `remove_peer` when a membership change is applied.
//!
//! The `from` of a received message is the member that completed the
//! handshake on that connection; it is the one to trust, not any sender
//! field inside the message.
//!
//! Slots for accepted connections should number at least twice the peers
//! (a restarted peer's new connection may arrive before its old one is seen
//! to close) plus a few for strangers, who hold a slot for at most
//! `handshake_timeout`.
//!
//! ## Tokens
//!
//! `new` is given a range of mio tokens: the first is the listener, the next
//! `peer_slots` are for the outbound connections (one per peer, reused as
//! peers are added and removed), the rest are slots for accepted connections. The range length therefore bounds the number of
//! accepted connections, including strangers that have not said hello yet.
//!
//! ## Memory
//!
//! Per peer: at most `queue_messages_max` messages and `queue_bytes_max`
//! bytes queued, plus one stream chunk. Per accepted connection: one frame
//! (`frame_bytes_max`) being decoded. Shared: the inbox, at most
//! `received_messages_max` messages and `received_stream_bytes_max` bytes of
//! chunks plus the one chunk that crossed the bound.

mod ask;
mod inbound;
mod outbound;
pub mod stream;
pub mod wire;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::tls;
pub use ask::{AskError, ask_members};
use inbound::{Close, Inbound, Inbox};
pub use outbound::backoff_delay;
use outbound::{Failure, Link, Peer};
pub use stream::{AbortReason, StreamEvent, StreamFailure, StreamId, StreamOutcome};
use wire::{EncodeError, Hello};

/// Largest frame, 4 MiB: Raft's append messages are capped near 1 MiB of
/// entries, but one entry may hold a whole 1.5 MiB request; 4 MiB leaves room
/// for both plus encoding overhead without letting a peer make us buffer more.
pub const FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Messages queued per peer. A follower's in-flight window (a few hundred
/// appends) plus heartbeats fits many times; etcd uses 4096 on servers, a
/// board has less memory to spare.
pub const QUEUE_MESSAGES_MAX: usize = 1024;
/// Bytes queued per peer: two full frames, so a big append does not stop the
/// next one from queuing behind it.
pub const QUEUE_BYTES_MAX: usize = 2 * FRAME_BYTES_MAX;
/// Received messages waiting for the loop, from all peers together.
pub const RECEIVED_MESSAGES_MAX: usize = 4096;
/// Bytes of received stream chunks waiting for the loop.
pub const RECEIVED_STREAM_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Data per stream chunk: large enough that per-frame costs vanish, small
/// enough that a heartbeat queued behind one chunk waits about 20 ms on a
/// 100 Mbit/s link, a fifth of the default heartbeat interval.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// First reconnection delay; a restarted peer is usually back within it.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnection delay, two default election timeouts: a peer back
/// from a long outage rejoins within about two seconds, while a dead one
/// costs one failed dial every two seconds.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest time from dial (or accept) to a completed handshake. On a LAN it
/// takes a millisecond; a peer that is silently unreachable ties up a queue
/// no longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Outbound slots, the most peers at once: Raft clusters beyond seven voters
/// only get slower, and a membership change briefly adds a learner.
pub const PEER_SLOTS: usize = 8;
/// Accepted connections that have not finished their handshake, at most: a
/// restarting cluster's members reconnect a few at a time, while a flood
/// from elsewhere must leave the other slots to members.
pub const STRANGER_SLOTS: usize = PEER_SLOTS;
/// How often refused peer connections are reported: one line with a count,
/// not one per attempt, so a scan of the port cannot fill the journal.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Longest time queued frames may wait for a socket that accepts nothing.
/// A peer that lost power never resets its connections, and TCP would keep
/// retransmitting for many minutes; reconnecting finds it as soon as it is
/// back. Ten seconds outlasts the worst fsync stalls of SD cards, during
/// which a live peer does not read either.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub id: u64,
    /// The host of its first peer URL, as written: under peer TLS its
    /// certificate must be valid for this name (or for the configured
    /// allowed hostname).
    pub name: String,
    /// Tried in turn, one per dial. Invariant (checked by `Transport::new`):
    /// not empty.
    pub addrs: Vec<SocketAddr>,
}

/// Peer TLS: the acceptor's configuration (which requires a client
/// certificate signed by the peer CA), the dialer's (which presents the
/// same certificate and checks the acceptor's against the peer CA), and the
/// name certificates must be valid for when it is not each member's host.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    pub allowed_hostname: Option<String>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerTls {{ allowed_hostname: {:?} }}", self.allowed_hostname)
    }
}

/// Shortest shared secret: 256 bits, the size of HMAC-SHA256's output, so
/// guessing the secret is never easier than forging a MAC.
pub const SECRET_BYTES_MIN: usize = 32;

/// The shared secret that authenticates hellos when there is no peer TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// At least `SECRET_BYTES_MIN` bytes, or `None`.
    pub fn new(bytes: &[u8]) -> Option<Secret> {
        (bytes.len() >= SECRET_BYTES_MIN).then(|| Secret(bytes.into()))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Configuration of the transport; every bound is here.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster_id: u64,
    pub local_id: u64,
    /// Peer TLS; `None` speaks plain TCP.
    pub tls: Option<PeerTls>,
    /// The shared secret every hello must prove; `None` requires none.
    pub secret: Option<Secret>,
    /// Accepted connections that have not proved themselves yet, at most:
    /// strangers beyond it are closed at once, so they never hold the
    /// slots members need.
    pub stranger_slots: usize,
    /// Invariant (checked by `Transport::new`): ids unique and not `local_id`.
    pub peers: Vec<PeerAddr>,
    /// The most peers at once: the initial ones and those added later.
    pub peer_slots: usize,
    /// Members removed from the cluster: a hello from one that is not a
    /// peer again is answered with `FLAG_REMOVED`. Invariant: bounded by
    /// the member table's own bound on the removed ids it remembers.
    pub removed: Vec<u64>,
    /// The member table as the server encodes it, sent to a joining member
    /// that asks (see `wire`); empty while the table is not known here.
    pub members_answer: Vec<u8>,
    pub frame_bytes_max: usize,
    pub queue_messages_max: usize,
    pub queue_bytes_max: usize,
    pub received_messages_max: usize,
    pub received_stream_bytes_max: usize,
    /// Invariant: a chunk frame fits in `frame_bytes_max`.
    pub chunk_bytes: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub handshake_timeout: Duration,
    pub write_stall_timeout: Duration,
}

impl Config {
    /// The defaults above for this member and its peers.
    pub fn new(cluster_id: u64, local_id: u64, peers: Vec<PeerAddr>) -> Config {
        Config {
            cluster_id,
            local_id,
            tls: None,
            secret: None,
            stranger_slots: STRANGER_SLOTS,
            peers,
            peer_slots: PEER_SLOTS,
            removed: Vec::new(),
            members_answer: Vec::new(),
            frame_bytes_max: FRAME_BYTES_MAX,
            queue_messages_max: QUEUE_MESSAGES_MAX,
            queue_bytes_max: QUEUE_BYTES_MAX,
            received_messages_max: RECEIVED_MESSAGES_MAX,
            received_stream_bytes_max: RECEIVED_STREAM_BYTES_MAX,
            chunk_bytes: CHUNK_BYTES,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
        }
    }

    fn check(&self, tokens: &Range<usize>) -> Result<(), ConfigError> {
        if self.peers.len() > self.peer_slots {
            return Err(ConfigError::NoPeerSlot);
        }
        let need = self.peer_slots + 2;
        if tokens.len() < need {
            return Err(ConfigError::TooFewTokens { need, have: tokens.len() });
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.id == self.local_id || self.peers[..i].iter().any(|p| p.id == peer.id) {
                return Err(ConfigError::BadPeerId(peer.id));
            }
            if peer.addrs.is_empty() {
                return Err(ConfigError::NoAddress(peer.id));
            }
        }
        if self.frame_bytes_max > u32::MAX as usize
            || self.chunk_bytes == 0
            || self.chunk_bytes + wire::CHUNK_OVERHEAD_BYTES > self.frame_bytes_max
        {
            return Err(ConfigError::ChunkDoesNotFit);
        }
        let bounds = [self.queue_messages_max, self.queue_bytes_max, self.received_messages_max];
        if bounds.contains(&0) || self.received_stream_bytes_max == 0 {
            return Err(ConfigError::ZeroBound);
        }
        Ok(())
    }
}

/// A configuration `Transport::new` cannot work with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    TooFewTokens {
        need: usize,
        have: usize,
    },
    /// A peer id that is repeated or is our own.
    BadPeerId(u64),
    /// More peers than `peer_slots`.
    NoPeerSlot,
    NoAddress(u64),
    ChunkDoesNotFit,
    ZeroBound,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::TooFewTokens { need, have } => {
                write!(f, "transport needs at least {need} tokens, got {have}")
            }
            ConfigError::NoPeerSlot => write!(f, "more peers than peer slots"),
            ConfigError::BadPeerId(id) => write!(f, "peer id {id:016x} repeated or our own"),
            ConfigError::NoAddress(id) => write!(f, "peer {id:016x} has no address"),
            ConfigError::ChunkDoesNotFit => write!(f, "stream chunks must fit in a frame"),
            ConfigError::ZeroBound => write!(f, "queue bounds must be positive"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a message or stream was not queued. In every case but `Encode` and
/// `UnknownPeer` the peer is also reported by `unreachable()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    UnknownPeer(u64),
    /// The peer is between connections (backing off).
    PeerDown(u64),
    QueueFull(u64),
    /// A stream to this peer is still going.
    StreamBusy(u64),
    Encode(EncodeError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownPeer(id) => write!(f, "no peer {id:016x}"),
            SendError::PeerDown(id) => write!(f, "peer {id:016x} is not connected"),
            SendError::QueueFull(id) => write!(f, "queue to peer {id:016x} is full"),
            SendError::StreamBusy(id) => write!(f, "a stream to peer {id:016x} is in progress"),
            SendError::Encode(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// What the transport knows about one peer, for status output and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The outbound connection has completed its handshake.
    pub connected: bool,
    /// Failed connections in a row.
    pub failures: u32,
    /// Dial attempts since start.
    pub dials: u64,
    /// When the next dial is due, while down.
    pub retry_at: Option<Instant>,
    pub queued_messages: usize,
    pub queued_bytes: usize,
    /// An accepted connection from this peer has completed its handshake.
    pub inbound: bool,
    /// Bytes written to this peer, and read from it, since start.
    pub sent_bytes_total: u64,
    pub received_bytes_total: u64,
}

/// Peer connections for one member, generic over the message type.
pub struct Transport<M> {
    config: Config,
    listener: TcpListener,
    listener_token: Token,
    /// Slot `i` uses token `listener_token + 1 + i`. Invariant: length
    /// `config.peer_slots`; ids unique, never `config.local_id`.
    peers: Vec<Option<Peer>>,
    /// Slot `j` uses token `listener_token + 1 + peer_slots + j`.
    inbound: Vec<Option<Inbound>>,
    inbox: Inbox<M>,
    unreachable: BTreeSet<u64>,
    outcomes: Vec<StreamOutcome>,
    next_stream_id: u64,
    refusals: Refusals,
    /// The peer that answered that this member was removed, if one did.
    removed_by: Option<u64>,
}

/// Accepted connections closed before they proved who they are. The first
/// of an interval is logged at once; the rest are counted and reported in
/// one line when the interval ends, so a scan or a flood costs the journal
/// two lines per `REFUSAL_LOG_INTERVAL`.
struct Refusals {
    /// Refusals since the first of the interval.
    more: u64,
    last: String,
    /// When the current interval began; `None` while nothing was refused.
    since: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, why: String, now: Instant) {
        if self.since.is_none() {
            log::warn!("refused peer connection from {why}");
            self.since = Some(now);
        } else {
            self.more += 1;
            self.last = why;
        }
    }

    /// Ends the interval once it is over, logging what it counted.
    fn report(&mut self, now: Instant) {
        let Some(since) = self.since else { return };
        if now < since + REFUSAL_LOG_INTERVAL {
            return;
        }
        if self.more > 0 {
            log::warn!(
                "refused {} more peer connection(s) in {}s; the last from {}",
                self.more,
                now.duration_since(since).as_secs(),
                self.last
            );
        }
        *self = Refusals { more: 0, last: String::new(), since: None };
    }
}

impl<M: Serialize + DeserializeOwned> Transport<M> {
    /// A transport accepting on `listener`, using the mio tokens `tokens`.
    pub fn new(
        config: Config,
        listener: TcpListener,
        tokens: Range<usize>,
        now: Instant,
    ) -> Result<Transport<M>, ConfigError> {
        config.check(&tokens)?;
        let listener_token = Token(tokens.start);
        let mut peers: Vec<Option<Peer>> = (0..config.peer_slots).map(|_| None).collect();
        for (slot, p) in config.peers.iter().enumerate() {
            let token = Token(listener_token.0 + 1 + slot);
            peers[slot] = Some(Peer::new(p.id, p.name.clone(), p.addrs.clone(), token, now));
        }
        let inbound_slots = tokens.len() - 1 - config.peer_slots;
        Ok(Transport {
            listener_token,
            inbound: (0..inbound_slots).map(|_| None).collect(),
            peers,
            listener,
            config,
            inbox: Inbox::new(),
            unreachable: BTreeSet::new(),
            outcomes: Vec::new(),
            next_stream_id: 1,
            refusals: Refusals { more: 0, last: String::new(), since: None },
            removed_by: None,
        })
    }

    /// Registers the listener and dials every peer.
    pub fn register(&mut self, registry: &Registry, now: Instant) -> io::Result<()> {
        registry.register(&mut self.listener, self.listener_token, Interest::READABLE)?;
        self.tick(registry, now);
        Ok(())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether `token` belongs to this transport.
    pub fn owns(&self, token: Token) -> bool {
        let first = self.listener_token.0;
        (first..first + 1 + self.peers.len() + self.inbound.len()).contains(&token.0)
    }

    /// Handles one event for a token this transport owns (others are ignored).
    pub fn handle_event(&mut self, registry: &Registry, token: Token, now: Instant) {
        let Some(offset) = token.0.checked_sub(self.listener_token.0) else { return };
        if offset == 0 {
            self.accept_all(registry, now);
        } else if offset <= self.peers.len() {
            self.drive_peer(registry, offset - 1, now, true);
        } else if offset - 1 - self.peers.len() < self.inbound.len() {
            self.drive_inbound(registry, offset - 1 - self.peers.len(), now);
        }
    }

    /// Starts sending to a member added to the cluster; it is dialed at the
    /// next `tick`.
    pub fn add_peer(&mut self, peer: PeerAddr, now: Instant) -> Result<(), ConfigError> {
        if peer.id == self.config.local_id || self.peer_slot(peer.id).is_ok() {
            return Err(ConfigError::BadPeerId(peer.id));
        }
        if peer.addrs.is_empty() {
            return Err(ConfigError::NoAddress(peer.id));
        }
        let slot = self.peers.iter().position(Option::is_none).ok_or(ConfigError::NoPeerSlot)?;
        let token = Token(self.listener_token.0 + 1 + slot);
        self.peers[slot] = Some(Peer::new(peer.id, peer.name, peer.addrs, token, now));
        Ok(())
    }

    /// Forgets a member removed from the cluster: its queue and stream are
    /// dropped and its connections in both directions closed. `false` if
    /// it was not a peer.
    pub fn remove_peer(&mut self, registry: &Registry, id: u64, now: Instant) -> bool {
        let Ok(slot) = self.peer_slot(id) else { return false };
        let mut peer = self.peers[slot].take().expect("found by peer_slot");
        peer.close(registry, now, &mut self.outcomes);
        for other in 0..self.inbound.len() {
            if self.inbound[other].as_ref().is_some_and(|c| c.from == Some(id)) {
                self.close_inbound(registry, other, &Close::Removed, now);
            }
        }
        log::info!("removed peer {id:016x}");
        true
    }

    /// Encodes `message` and queues it for `to`. No I/O: `flush` writes.
    pub fn send(&mut self, to: u64, message: &M) -> Result<(), SendError> {
        let slot = self.peer_slot(to)?;
        let peer = self.peers[slot].as_mut().expect("found by peer_slot");
        if matches!(peer.link, Link::Down { .. }) {
            // Checked before encoding: a dead peer costs no serialization.
            self.unreachable.insert(to);
            return Err(SendError::PeerDown(to));
        }
        let frame = wire::encode_message(message, self.config.frame_bytes_max)
            .map_err(SendError::Encode)?;
        let result = peer.enqueue(frame, &self.config);
        if result.is_err() {
            self.unreachable.insert(to);
        }
        result
    }

    /// Starts streaming the bytes of `source` to `to`, announced by `header`.
    /// The outcome arrives through `drain_stream_outcomes`.
    pub fn start_stream(
        &mut self,
        to: u64,
        header: &M,
        source: Box<dyn Read + Send>,
    ) -> Result<StreamId, SendError> {
        let slot = self.peer_slot(to)?;
        let peer = self.peers[slot].as_mut().expect("found by peer_slot");
        if peer.stream.is_some() {
            return Err(SendError::StreamBusy(to));
        }
        if matches!(peer.link, Link::Down { .. }) {
            self.unreachable.insert(to);
            return Err(SendError::PeerDown(to));
        }
        let id = StreamId(self.next_stream_id);
        let start = wire::encode_stream_start(id.0, header, self.config.frame_bytes_max)
            .map_err(SendError::Encode)?;
        self.next_stream_id += 1;
        peer.start_stream(stream::OutStream::new(id, source), start);
        Ok(id)
    }

    /// Writes queued frames to every connected peer until `WouldBlock`.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        for slot in 0..self.peers.len() {
            if self.peers[slot].as_ref().is_some_and(Peer::is_up) {
                self.drive_peer(registry, slot, now, false);
            }
        }
    }

    /// Dials peers whose backoff expired, fails handshakes past their
    /// deadline, and resumes reading connections paused on a full inbox.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        for slot in 0..self.peers.len() {
            self.tick_peer(registry, slot, now);
        }
        for slot in 0..self.inbound.len() {
            let Some(conn) = &self.inbound[slot] else { continue };
            if conn.from.is_none() && now >= conn.since + self.config.handshake_timeout {
                self.close_inbound(registry, slot, &Close::HandshakeTimeout, now);
            } else if conn.paused && !self.inbox.is_full(&self.config) {
                self.drive_inbound(registry, slot, now);
            }
        }
        self.refusals.report(now);
    }

    /// The members removed from the cluster, to be told so when they dial.
    pub fn set_removed(&mut self, removed: &[u64]) {
        self.config.removed.clear();
        self.config.removed.extend_from_slice(removed);
    }

    /// The member table a joining member is sent when it asks.
    pub fn set_members_answer(&mut self, table: Vec<u8>) {
        self.config.members_answer = table;
    }

    /// The peer that answered that this member was removed from the
    /// cluster: once set, this member has nothing left to do but stop.
    pub fn removed_by(&self) -> Option<u64> {
        self.removed_by
    }

    /// New peer TLS configurations (reloaded certificates): connections
    /// made from now on use them, open ones keep theirs.
    pub fn set_tls(&mut self, tls: PeerTls) {
        self.config.tls = Some(tls);
    }

    fn tick_peer(&mut self, registry: &Registry, slot: usize, now: Instant) {
        let Some(peer) = self.peers[slot].as_mut() else { return };
        let due = peer.deadline(&self.config).is_some_and(|at| now >= at);
        match (&peer.link, due) {
            (Link::Down { .. }, true) => {
                let hello = Hello {
                    cluster_id: self.config.cluster_id,
                    from: self.config.local_id,
                    to: peer.id,
                };
                match peer.dial(registry, now, hello, &self.config) {
                    Err(failure) => self.fail_peer(registry, slot, now, &failure),
                    // A connect to a local address may complete at once.
                    Ok(()) => self.drive_peer(registry, slot, now, true),
                }
            }
            (Link::Dialing(_), true) => {
                self.fail_peer(registry, slot, now, &Failure::HandshakeTimeout)
            }
            (Link::Up { .. }, true) => self.fail_peer(registry, slot, now, &Failure::WriteStalled),
            _ => {}
        }
    }

    /// How long the loop may sleep before `tick` is needed again; `None`
    /// when nothing is scheduled.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        let resume_now =
            !self.inbox.is_full(&self.config) && self.inbound.iter().flatten().any(|c| c.paused);
        if resume_now {
            return Some(Duration::ZERO);
        }
        let peers = self.peers.iter().flatten().filter_map(|p| p.deadline(&self.config));
        let strangers = self
            .inbound
            .iter()
            .flatten()
            .filter(|c| c.from.is_none())
            .map(|c| c.since + self.config.handshake_timeout);
        peers.chain(strangers).min().map(|at| at.saturating_duration_since(now))
    }

    /// Messages received since the last call, in arrival order per peer.
    pub fn drain_received(&mut self) -> impl Iterator<Item = (u64, M)> + '_ {
        self.inbox.messages.drain(..)
    }

    /// Stream events received since the last call, in order per stream.
    pub fn drain_stream_events(&mut self) -> impl Iterator<Item = StreamEvent<M>> + '_ {
        self.inbox.stream_bytes = 0;
        self.inbox.stream_events.drain(..)
    }

    /// Bytes of stream chunks received and not yet drained.
    pub fn received_stream_bytes(&self) -> usize {
        self.inbox.stream_bytes
    }

    /// Peers a message could not be queued for, or whose connection failed,
    /// since the last call: to be reported to Raft as unreachable.
    pub fn unreachable(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.unreachable).into_iter().collect()
    }

    /// Outcomes of streams sent since the last call.
    pub fn drain_stream_outcomes(&mut self) -> Vec<StreamOutcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// The state of one peer, `None` for an unknown id.
    pub fn peer_status(&self, id: u64) -> Option<PeerStatus> {
        let peer = self.peers[self.peer_slot(id).ok()?].as_ref()?;
        let inbound = self.inbound.iter().flatten().any(|c| c.from == Some(id));
        Some(PeerStatus {
            connected: peer.is_up(),
            failures: peer.failures,
            dials: peer.dials,
            retry_at: match peer.link {
                Link::Down { retry_at } => Some(retry_at),
                _ => None,
            },
            queued_messages: peer.queue.message_count(),
            queued_bytes: peer.queue.message_bytes(),
            inbound,
            sent_bytes_total: peer.sent_bytes_total,
            received_bytes_total: peer.received_bytes_total,
        })
    }

    /// The ids of the current peers.
    pub fn peer_ids(&self) -> Vec<u64> {
        self.peers.iter().flatten().map(|p| p.id).collect()
    }

    fn peer_slot(&self, id: u64) -> Result<usize, SendError> {
        let found = self.peers.iter().position(|p| p.as_ref().is_some_and(|p| p.id == id));
        found.ok_or(SendError::UnknownPeer(id))
    }

    fn drive_peer(&mut self, registry: &Registry, slot: usize, now: Instant, on_event: bool) {
        let Some(peer) = self.peers[slot].as_mut() else { return };
        if let Err(failure) = peer.drive(&self.config, &mut self.outcomes, on_event, now) {
            self.fail_peer(registry, slot, now, &failure);
        }
    }

    fn fail_peer(&mut self, registry: &Registry, slot: usize, now: Instant, failure: &Failure) {
        let Some(peer) = self.peers[slot].as_mut() else { return };
        if matches!(failure, Failure::Removed) {
            self.removed_by.get_or_insert(peer.id);
        }
        peer.fail(registry, now, failure, &self.config, &mut self.outcomes);
        self.unreachable.insert(peer.id);
    }

    /// Accepts until `WouldBlock`; connections beyond the free slots are
    /// closed at once.
    fn accept_all(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (conn, addr) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, typically; the next event retries.
                    log::warn!("accepting a peer connection failed: {e}");
                    return;
                }
            };
            self.admit(registry, conn, addr, now);
        }
    }

    fn admit(
        &mut self,
        registry: &Registry,
        conn: mio::net::TcpStream,
        addr: SocketAddr,
        now: Instant,
    ) {
        let strangers = self.inbound.iter().flatten().filter(|c| c.is_stranger()).count();
        if strangers >= self.config.stranger_slots {
            // Refusing the newcomer would let whoever holds the slots keep
            // a restarted member out; the stranger least far in its
            // handshake goes instead, and a member's dialer, which sends
            // its hello at once, outlasts idle and half-sent connections.
            self.close_least_advanced_stranger(registry, now);
        }
        let Some(slot) = self.inbound.iter().position(Option::is_none) else {
            let why = format!("{addr}: all {} slots in use", self.inbound.len());
            self.refusals.note(why, now);
            return;
        };
        let token = Token(self.listener_token.0 + 1 + self.peers.len() + slot);
        let server = self.config.tls.as_ref().map(|t| t.server.clone());
        let mut conn = tls::Stream::accepted(conn, server);
        if let Err(e) = registry.register(&mut conn, token, Interest::READABLE) {
            log::warn!("refused peer connection from {addr}: {e}");
            return;
        }
        self.inbound[slot] = Some(Inbound::new(conn, addr, now, &self.config));
        // The hello may already be here; edge-triggered events would not repeat it.
        self.drive_inbound(registry, slot, now);
    }

    /// Closes the stranger with the least handshake progress, the oldest
    /// among equals.
    fn close_least_advanced_stranger(&mut self, registry: &Registry, now: Instant) {
        let victim = (0..self.inbound.len())
            .filter_map(|slot| {
                let conn = self.inbound[slot].as_ref().filter(|c| c.is_stranger())?;
                Some((conn.handshake_progress_bytes(), conn.since, slot))
            })
            .min();
        if let Some((_, _, slot)) = victim {
            self.close_inbound(registry, slot, &Close::Crowded, now);
        }
    }

    fn drive_inbound(&mut self, registry: &Registry, slot: usize, now: Instant) {
        let token = Token(self.listener_token.0 + 1 + self.peers.len() + slot);
        let Some(conn) = self.inbound[slot].as_mut() else { return };
        let peers = &self.peers;
        let peer_name =
            |id: u64| peers.iter().flatten().find(|p| p.id == id).map(|p| p.name.as_str());
        let result =
            match conn.flush_tls().and_then(|()| conn.drive_handshake(&self.config, peer_name)) {
                Ok(Some(from)) => {
                    log::info!("accepted peer {from:016x} from {}", conn.addr);
                    self.replace_older(registry, slot, from, now);
                    self.read_inbound(slot)
                }
                Ok(None) => self.read_inbound(slot),
                Err(close) => Err(close),
            };
        let result = result.and_then(|()| {
            let conn = self.inbound[slot].as_mut().expect("slot in use");
            conn.sync_interest(registry, token).map_err(Close::Io)
        });
        if let Err(close) = result {
            self.close_inbound(registry, slot, &close, now);
        }
    }

    fn read_inbound(&mut self, slot: usize) -> Result<(), Close> {
        let conn = self.inbound[slot].as_mut().expect("slot in use");
        let before = conn.received_bytes;
        let result = conn.read_frames(&mut self.inbox, &self.config);
        let read = conn.received_bytes - before;
        if let Some(from) = conn.from
            && let Ok(at) = self.peer_slot(from)
            && let Some(peer) = self.peers[at].as_mut()
        {
            peer.received_bytes_total += read;
        }
        result
    }

    /// A member has one outbound connection; a new one from it means the old
    /// one is dead even if no FIN has reached us (the peer restarted).
    fn replace_older(&mut self, registry: &Registry, slot: usize, from: u64, now: Instant) {
        for other in 0..self.inbound.len() {
            let same = self.inbound[other].as_ref().is_some_and(|c| c.from == Some(from));
            if other != slot && same {
                self.close_inbound(registry, other, &Close::Replaced, now);
            }
        }
    }

    fn close_inbound(&mut self, registry: &Registry, slot: usize, close: &Close, now: Instant) {
        let Some(mut conn) = self.inbound[slot].take() else { return };
        conn.closing(&mut self.inbox);
        let _ = registry.deregister(&mut conn.conn);
        if matches!(close, Close::AnsweredMembers) {
            log::info!("sent the member table to a joining member at {}", conn.addr);
            return;
        }
        let Some(id) = conn.from else {
            // A stranger: counted, and reported once per interval.
            self.refusals.note(format!("{}: {close}", conn.addr), now);
            return;
        };
        match close {
            Close::Eof | Close::Replaced | Close::Removed => {
                log::info!("connection from peer {id:016x} at {} closed: {close}", conn.addr)
            }
            _ => log::warn!("closed connection from peer {id:016x} at {}: {close}", conn.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64) -> PeerAddr {
        PeerAddr { id, name: "127.0.0.1".into(), addrs: vec!["127.0.0.1:1".parse().unwrap()] }
    }

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let tokens = 0..20;
        assert_eq!(Config::new(1, 1, vec![peer(2), peer(3)]).check(&tokens), Ok(()));
        let own = Config::new(1, 1, vec![peer(1)]);
        assert_eq!(own.check(&tokens), Err(ConfigError::BadPeerId(1)));
        let twice = Config::new(1, 1, vec![peer(2), peer(2)]);
        assert_eq!(twice.check(&tokens), Err(ConfigError::BadPeerId(2)));
        let nowhere = Config::new(1, 1, vec![PeerAddr { id: 2, name: "h".into(), addrs: vec![] }]);
        assert_eq!(nowhere.check(&tokens), Err(ConfigError::NoAddress(2)));
        let few = Config::new(1, 1, vec![]);
        assert_eq!(few.check(&(0..9)), Err(ConfigError::TooFewTokens { need: 10, have: 9 }));
        let mut crowded = Config::new(1, 1, (2..=10).map(peer).collect());
        assert_eq!(crowded.check(&tokens), Err(ConfigError::NoPeerSlot));
        crowded.peer_slots = 9;
        assert_eq!(crowded.check(&tokens), Ok(()));
        let mut big_chunks = Config::new(1, 1, vec![]);
        big_chunks.chunk_bytes = big_chunks.frame_bytes_max;
        assert_eq!(big_chunks.check(&tokens), Err(ConfigError::ChunkDoesNotFit));
        let mut zero = Config::new(1, 1, vec![]);
        zero.queue_messages_max = 0;
        assert_eq!(zero.check(&tokens), Err(ConfigError::ZeroBound));
    }
}
