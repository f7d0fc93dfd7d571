//! The node's state and its poll loop.
//!
//! One iteration (DESIGN.md, "The shape"): poll with a timeout no longer than
//! the time to the next tick → handle every event (accept, read and decode
//! client frames, peer I/O) → step peer messages, tick when due → propose
//! this iteration's writes as one batch and ask for one ReadIndex covering
//! this iteration's linearizable reads → handle the `Ready`s (at most one
//! fsync in steady state; see `iteration`) → serve reads whose index is
//! applied, feed watches, expire requests, snapshot when due → write answers
//! and peer messages.
//!
//! Tokens: client listeners from `LISTENER_TOKEN_BASE`, the transport's range
//! from `TRANSPORT_TOKEN_BASE`, client connections from `CONN_TOKEN_BASE`
//! (slot `i` is token `CONN_TOKEN_BASE + i`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::command::Op;
use super::config::{ClusterState, Config};
use super::conn::Conn;
use super::image::{self, MemberRecord, Sections};
use super::notify::{Notifier, WatchdogTimer, watchdog_interval};
use super::{ServeError, signal};
use crate::cli::args::process_env;
use crate::mvcc::{ImageReader, Store, StoreConfig};
use crate::proto::{self, ResponseHeader, ServerParams};
use crate::raft::{self, ConfState, HardState, Message, RawNode, Snapshot, SnapshotMeta};
use crate::snap::{RETAIN_COUNT_DEFAULT, SnapDir};
use crate::transport::{self, Transport};
use crate::wal::{DiskStorage, Wal, WalConfig};

pub const LISTENER_TOKEN_BASE: usize = 0;
/// Client listen addresses one node may have.
pub const MAX_CLIENT_LISTENERS: usize = 8;
pub const TRANSPORT_TOKEN_BASE: usize = 16;
/// Accepted peer connections: twice the peer slots plus strangers.
pub const TRANSPORT_INBOUND_SLOTS: usize = 3 * transport::PEER_SLOTS;
pub const CONN_TOKEN_BASE: usize = 1024;
/// Client connections at once; more are closed as they are accepted.
pub const MAX_CLIENT_CONNS: usize = 4096;
/// Events taken from one poll.
const EVENTS_CAPACITY: usize = 1024;
/// The largest snapshot a follower accepts from its leader: a board keeps
/// the whole store in memory, so a bigger one could not be restored anyway.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;
/// Keys a pending compaction drops per iteration, so it never stalls the loop.
pub const COMPACT_STEP_KEYS: usize = 1024;
/// How often a watch that asked for progress notifications gets one while
/// idle (etcd's default).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// Bytes per chunk when a snapshot image is written.
pub const IMAGE_CHUNK_BYTES: usize = 1 << 20;
/// The token of the waker the snapshot writer thread uses to bring the loop
/// back when its queue has room: the free token after the client listeners.
pub const SNAPSHOT_WAKER_TOKEN: usize = LISTENER_TOKEN_BASE + MAX_CLIENT_LISTENERS;

/// Who waits for an answer: a request on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub slot: usize,
    pub serial: u64,
    pub request_id: u64,
}

/// A write proposed by this member, waiting to be applied.
#[derive(Debug)]
pub struct PendingWrite {
    pub waiter: Waiter,
    pub deadline: Instant,
}

/// A linearizable read waiting for its read index.
#[derive(Debug)]
pub struct ReadWait {
    pub waiter: Waiter,
    pub request: proto::RangeRequest,
}

/// A ReadIndex round asked of Raft: its reads and when they give up.
#[derive(Debug)]
pub struct ReadRound {
    pub reads: Vec<ReadWait>,
    pub deadline: Instant,
}

pub struct Node {
    pub(super) config: Config,
    pub(super) poll: Poll,
    pub(super) raft: RawNode<DiskStorage>,
    pub(super) store: Store,
    /// Replicated state outside the keyspace, at `applied_index` like the
    /// store; a snapshot carries both.
    pub(super) sections: Sections,
    /// The lease table (its replicated part mirrors `sections.leases`).
    pub(super) leases: super::leases::NodeLeases,
    /// Invariant: ≤ the durable commit index; every entry up to it applied.
    pub(super) applied_index: u64,
    pub(super) applied_term: u64,
    /// The index of the newest snapshot taken (its file may still be
    /// being written by `snapshot_job`).
    pub(super) snapshot_index: u64,
    pub(super) snapshot_job: Option<super::ready::SnapshotJob>,
    /// Wakes the loop from the snapshot writer thread.
    pub(super) snapshot_waker: Arc<Waker>,
    pub(super) term: u64,
    pub(super) leader_id: u64,
    pub(super) transport: Transport<Message>,
    pub(super) listeners: Vec<TcpListener>,
    /// Invariant: at most `MAX_CLIENT_CONNS` slots.
    pub(super) conns: Vec<Option<Conn>>,
    pub(super) next_serial: u64,
    pub(super) server_params: ServerParams,
    pub(super) limits: proto::Limits,
    /// The read buffer bound of a connection: one largest frame plus a read.
    pub(super) read_limit_bytes: usize,
    /// Writes read this iteration, proposed together at its end.
    pub(super) unproposed: Vec<(Waiter, Op)>,
    pub(super) next_seq: u64,
    /// By sequence number; deadlines grow with it.
    pub(super) pending_writes: BTreeMap<u64, PendingWrite>,
    pub(super) unread: Vec<ReadWait>,
    pub(super) next_read_context: u64,
    pub(super) read_rounds: BTreeMap<u64, ReadRound>,
    /// Rounds Raft confirmed: (index to reach, reads).
    pub(super) reads_ready: Vec<(u64, Vec<ReadWait>)>,
    /// False from start-up until this member has applied up to a read
    /// index confirmed by a leader. Before that its applied index may be
    /// behind what it served before a crash (a commit index is written but
    /// not synced on its own), so serializable reads take the linearizable
    /// path meanwhile: a client never sees a member's revision go back.
    pub(super) caught_up_since_start: bool,
    /// Snapshots being received: (from, stream) → (header, bytes so far).
    pub(super) incoming: BTreeMap<(u64, u64), (Message, Vec<u8>)>,
    /// A received snapshot already decoded, for the `Ready` that applies it.
    pub(super) staged_store: Option<(u64, Sections, Store)>,
    pub(super) snapshot_reports: Vec<(u64, bool)>,
    pub(super) tick_interval: Duration,
    pub(super) next_tick: Instant,
    pub(super) next_progress_notify: Instant,
    pub(super) request_timeout: Duration,
    pub(super) notifier: Notifier,
    pub(super) watchdog: Option<WatchdogTimer>,
    /// Work is left that the next iteration should do without sleeping.
    pub(super) busy: bool,
    pub(super) stopping: bool,
    /// When this member may next propose its name and client URLs.
    pub(super) next_publish: Instant,
    /// This member has been in the applied member table (so its absence
    /// later means it was removed).
    pub(super) seen_in_table: bool,
}

impl Node {
    /// Opens the data directory, recovers, binds the sockets.
    pub fn new(mut config: Config) -> Result<Node, ServeError> {
        let now = Instant::now();
        super::identity::check(&mut config)?;
        let OpenState { storage, sections, store, snapshot_meta } = open_state(&config)?;
        let raft_config = raft_config(&config, snapshot_meta.index);
        let mut raft = RawNode::new(&raft_config, storage).map_err(ServeError::Raft)?;
        // The only voter need not wait an election timeout to lead.
        if raft.conf_state().voters == [config.member_id] {
            raft.campaign();
        }
        let status = raft.status();
        let poll = Poll::new().map_err(|e| ServeError::io("poll", e))?;
        let snapshot_waker = Waker::new(poll.registry(), Token(SNAPSHOT_WAKER_TOKEN))
            .map_err(|e| ServeError::io("create the snapshot waker", e))?;
        let snapshot_waker = Arc::new(snapshot_waker);
        let listeners = bind_clients(&config, &poll)?;
        let transport = start_transport(&config, &poll, now)?;
        let max_frame = config.max_request_bytes.max(proto::MIN_FRAME_BYTES);
        let election = Duration::from_millis(config.election_timeout_ms);
        let notifier = Notifier::from_env(process_env).map_err(ServeError::Notify)?;
        let watchdog = watchdog_interval(process_env, std::process::id())
            .map_err(ServeError::Notify)?
            .map(|interval| WatchdogTimer::new(interval, now));
        log::info!(
            "member {:016x} of cluster {:016x} starting at applied index {}, term {}",
            config.member_id,
            config.cluster_id,
            snapshot_meta.index,
            status.term
        );
        let mut node = Node {
            server_params: ServerParams {
                min_version: proto::PROTOCOL_VERSION,
                max_version: proto::PROTOCOL_VERSION,
                max_frame_bytes: max_frame,
                cluster_id: config.cluster_id,
                member_id: config.member_id,
            },
            limits: proto::Limits {
                max_txn_ops: config.max_txn_ops as usize,
                ..proto::Limits::default()
            },
            read_limit_bytes: max_frame as usize + proto::FRAME_HEADER_BYTES + (64 << 10),
            poll,
            raft,
            store,
            leases: super::leases::NodeLeases::new(&config, &sections, now),
            sections,
            applied_index: snapshot_meta.index,
            applied_term: snapshot_meta.term,
            snapshot_index: snapshot_meta.index,
            snapshot_job: None,
            snapshot_waker,
            term: status.term,
            leader_id: status.leader_id,
            transport,
            listeners,
            conns: Vec::new(),
            next_serial: 1,
            unproposed: Vec::new(),
            next_seq: first_sequence_number(),
            pending_writes: BTreeMap::new(),
            unread: Vec::new(),
            next_read_context: 1,
            read_rounds: BTreeMap::new(),
            reads_ready: Vec::new(),
            caught_up_since_start: false,
            incoming: BTreeMap::new(),
            staged_store: None,
            snapshot_reports: Vec::new(),
            tick_interval: config.tick_interval(),
            next_tick: now + config.tick_interval(),
            next_progress_notify: now + PROGRESS_NOTIFY_INTERVAL,
            // etcd's rule: five seconds plus two election timeouts.
            request_timeout: Duration::from_secs(5) + 2 * election,
            notifier,
            watchdog,
            busy: false,
            stopping: false,
            next_publish: now,
            seen_in_table: false,
            config,
        };
        node.sync_peers();
        Ok(node)
    }

    /// Runs until SIGTERM or SIGINT (`Ok`) or a fatal error.
    pub fn run(mut self) -> Result<(), ServeError> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        if let Err(e) = self.notifier.ready() {
            log::warn!("{e}");
        }
        let addrs: Vec<String> =
            self.config.listen_client_addrs.iter().map(ToString::to_string).collect();
        log::info!("serving clients on {}", addrs.join(", "));
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(ServeError::io("poll", e));
            }
            let now = Instant::now();
            for event in events.iter() {
                self.dispatch(event.token(), now);
            }
            if signal::stop_requested() {
                return self.shutdown();
            }
            if self.removed_from_cluster() {
                log::warn!(
                    "member {:016x} was removed from the cluster: stopping",
                    self.config.member_id
                );
                return self.shutdown();
            }
            self.iteration(now)?;
        }
    }

    fn dispatch(&mut self, token: Token, now: Instant) {
        let at = token.0;
        if (LISTENER_TOKEN_BASE..LISTENER_TOKEN_BASE + self.listeners.len()).contains(&at) {
            self.accept(at - LISTENER_TOKEN_BASE);
        } else if self.transport.owns(token) {
            self.transport.handle_event(self.poll.registry(), token, now);
        } else if at >= CONN_TOKEN_BASE {
            let slot = at - CONN_TOKEN_BASE;
            self.service_conn(slot);
            self.flush_conn(slot);
        }
    }

    fn iteration(&mut self, now: Instant) -> Result<(), ServeError> {
        self.transport.tick(self.poll.registry(), now);
        self.step_peers();
        for id in self.transport.unreachable() {
            self.raft.report_unreachable(id);
        }
        for outcome in self.transport.drain_stream_outcomes() {
            self.raft.report_snapshot(outcome.to, outcome.result.is_ok());
        }
        if now >= self.next_tick {
            self.reconcile_conf();
            self.raft.tick();
            self.next_tick = (self.next_tick + self.tick_interval).max(now);
            self.tick_leases(now);
        }
        self.resume_paused();
        self.maybe_publish(now);
        // What peers and ticks produced first: writes the followers' acks
        // committed are applied and answered before this iteration's fsync,
        // not after it.
        self.handle_ready()?;
        self.flush_conns();
        self.propose_writes(now);
        self.ask_read_index(now);
        self.handle_ready()?;
        // A lone voter commits its batch as the fsync above completes:
        // applying it now answers in one fsync instead of two. This Ready
        // holds no new entries (nothing was proposed since), so no fsync.
        self.handle_ready()?;
        self.serve_ready_reads();
        let watches_behind = self.feed_watches();
        if now >= self.next_progress_notify {
            self.next_progress_notify = now + PROGRESS_NOTIFY_INTERVAL;
            self.notify_progress();
        }
        self.expire(now);
        // A compaction paused by a snapshot image waits for the image to end.
        let compacting =
            !self.store.compact_step(COMPACT_STEP_KEYS) && !self.store.compaction_paused();
        self.maybe_snapshot()?;
        self.flush_conns();
        self.transport.flush(self.poll.registry(), now);
        self.ping_watchdog(now);
        let resumable = self.conns.iter().flatten().any(|c| c.paused && c.accepts_requests());
        self.busy = watches_behind || compacting || resumable || self.raft.has_ready();
        self.busy |= self.snapshot_wants_iteration();
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if self.busy {
            return Duration::ZERO;
        }
        let mut timeout = self.next_tick.saturating_duration_since(now);
        if let Some(t) = self.transport.next_timeout(now) {
            timeout = timeout.min(t);
        }
        if let Some(w) = &self.watchdog {
            timeout = timeout.min(w.next_timeout(now));
        }
        timeout
    }

    fn ping_watchdog(&mut self, now: Instant) {
        if self.watchdog.as_mut().is_some_and(|w| w.poll(now))
            && let Err(e) = self.notifier.watchdog()
        {
            log::warn!("{e}");
        }
    }

    /// The header of an answer given now.
    pub(super) fn header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.config.cluster_id,
            member_id: self.config.member_id,
            revision: i64::try_from(self.store.current_revision()).unwrap_or(i64::MAX),
            raft_term: self.term,
        }
    }

    /// Answers or fails everything pending, syncs the WAL, and returns.
    fn shutdown(&mut self) -> Result<(), ServeError> {
        log::info!("stop signal received: stopping");
        self.stopping = true;
        if let Err(e) = self.notifier.stopping() {
            log::warn!("{e}");
        }
        self.fail_everything(proto::ErrorCode::Stopped);
        self.flush_conns();
        self.finish_snapshot(true)?;
        self.raft.storage_mut().wal.sync().map_err(ServeError::Wal)?;
        log::info!("stopped; the WAL is synced");
        Ok(())
    }
}

/// Sequence numbers must never repeat across restarts, or an entry proposed
/// before a crash and applied after it would be matched to a new request.
/// They start at a random point of a 2^63 space: the wall clock cannot be
/// trusted for this on boards without a battery-backed clock, which boot
/// with an older time after a power cut. Two runs' ranges overlap with a
/// chance of about (writes per run) / 2^63.
fn first_sequence_number() -> u64 {
    let mut bytes = [0u8; 8];
    let random = fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    });
    let seed = match random {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(e) => {
            log::warn!("/dev/urandom unreadable ({e}); sequence numbers start from the clock");
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            since_epoch.as_micros() as u64 ^ u64::from(std::process::id()) << 40
        }
    };
    seed >> 1
}

fn raft_config(config: &Config, applied: u64) -> raft::Config {
    let mut raft_config = raft::Config::new(config.member_id);
    raft_config.election_tick = config.election_ticks() as usize;
    raft_config.heartbeat_tick = 1;
    raft_config.applied = applied;
    raft_config.seed = config.member_id ^ first_sequence_number();
    raft_config
}

/// What start-up recovered from disk.
struct OpenState {
    storage: DiskStorage,
    sections: Sections,
    store: Store,
    snapshot_meta: SnapshotMeta,
}

/// Opens WAL and snapshots, bootstraps a fresh data directory, and restores
/// the store from the snapshot the WAL names. Raft replays the rest.
fn open_state(config: &Config) -> Result<OpenState, ServeError> {
    let dir = &config.data_dir;
    fs::create_dir_all(dir).map_err(|e| ServeError::io("create the data directory", e))?;
    let wal = Wal::open(dir, WalConfig::default()).map_err(ServeError::Wal)?;
    let snaps = SnapDir::open(dir, RETAIN_COUNT_DEFAULT).map_err(ServeError::Snap)?;
    let mut storage = DiskStorage { wal, snaps };
    let fresh = storage.wal.hard_state().is_empty()
        && storage.wal.last_index() == 0
        && storage.wal.snapshot_meta().index == 0;
    if fresh && config.initial_cluster_state == ClusterState::New {
        bootstrap(&mut storage, config)?;
    }
    let snapshot = raft::Storage::snapshot(&storage, 0)
        .map_err(|e| ServeError::Corrupt(format!("loading the newest snapshot: {e}")))?;
    let (sections, store) = if snapshot.is_empty() {
        (Sections::default(), Store::new(store_config(config)))
    } else {
        restore_store(config, &snapshot.data)
            .map_err(|e| ServeError::Corrupt(format!("snapshot {}: {e}", snapshot.meta.index)))?
    };
    Ok(OpenState { storage, sections, store, snapshot_meta: snapshot.meta })
}

pub(super) fn store_config(config: &Config) -> StoreConfig {
    StoreConfig { max_txn_ops: config.max_txn_ops as usize }
}

/// The replicated state a snapshot payload holds (see `image.rs`).
pub(super) fn restore_store(config: &Config, payload: &[u8]) -> Result<(Sections, Store), String> {
    let (sections, image) = image::split(payload).map_err(|e| e.to_string())?;
    let mut reader = ImageReader::new(store_config(config));
    reader.feed(image).map_err(|e| e.to_string())?;
    let store = reader.finish().map_err(|e| e.to_string())?;
    Ok((sections, store))
}

/// Every member of a new cluster starts from the same snapshot at index 1,
/// term 1, holding the initial membership and an empty store: their logs
/// agree from the first entry without any member talking first.
fn bootstrap(storage: &mut DiskStorage, config: &Config) -> Result<(), ServeError> {
    let mut voters: Vec<u64> = config.initial_cluster.iter().map(|m| m.id).collect();
    voters.sort_unstable();
    voters.dedup();
    let conf_state = ConfState { voters, ..ConfState::default() };
    let meta = SnapshotMeta { index: 1, term: 1, conf_state };
    let store = Store::new(store_config(config));
    let sections = Sections { members: initial_members(config), ..Sections::default() };
    let snapshot = Snapshot { meta: meta.clone(), data: image_of(&sections, &store) };
    storage.snaps.save(&snapshot).map_err(ServeError::Snap)?;
    storage.wal.save_snapshot_marker(&meta).map_err(ServeError::Wal)?;
    storage
        .wal
        .set_hard_state(&HardState { term: 1, vote: 0, commit: 1 })
        .map_err(ServeError::Wal)?;
    storage.wal.sync().map_err(ServeError::Wal)?;
    log::info!("bootstrapped a new cluster of {} members", snapshot.meta.conf_state.voters.len());
    Ok(())
}

/// The member table of a new cluster: every initial member with its name
/// and peer URLs; client URLs come when each member publishes them.
fn initial_members(config: &Config) -> Vec<MemberRecord> {
    let mut members: Vec<MemberRecord> = config
        .initial_cluster
        .iter()
        .map(|m| MemberRecord {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_addrs.iter().map(super::members::url_of).collect(),
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    members.sort_by_key(|m| m.id);
    members.dedup_by_key(|m| m.id);
    members
}

/// A snapshot payload: the sections, then the store's image.
pub(super) fn image_of(sections: &Sections, store: &Store) -> Vec<u8> {
    let mut writer = store.image();
    let mut image = image::encode_prefix(sections);
    while let Some(chunk) = writer.next_chunk(IMAGE_CHUNK_BYTES) {
        image.extend_from_slice(&chunk);
    }
    image
}

fn bind_clients(config: &Config, poll: &Poll) -> Result<Vec<TcpListener>, ServeError> {
    let mut listeners = Vec::new();
    for host_port in &config.listen_client_addrs {
        let addrs = host_port.resolve().map_err(|e| ServeError::io("resolve a client URL", e))?;
        for addr in addrs {
            if listeners.len() == MAX_CLIENT_LISTENERS {
                return Err(ServeError::Config("too many client listen addresses".into()));
            }
            let mut listener = TcpListener::bind(addr)
                .map_err(|e| ServeError::io(&format!("bind client address {addr}"), e))?;
            let token = Token(LISTENER_TOKEN_BASE + listeners.len());
            poll.registry()
                .register(&mut listener, token, Interest::READABLE)
                .map_err(|e| ServeError::io("register a listener", e))?;
            listeners.push(listener);
        }
    }
    Ok(listeners)
}

fn start_transport(
    config: &Config,
    poll: &Poll,
    now: Instant,
) -> Result<Transport<Message>, ServeError> {
    let peers = config.transport_peers().map_err(|e| ServeError::Config(e.to_string()))?;
    let listen = config
        .listen_peer_addrs
        .first()
        .ok_or_else(|| ServeError::Config("no peer listen address".into()))?;
    let addr = listen
        .resolve()
        .map_err(|e| ServeError::io("resolve the peer URL", e))?
        .into_iter()
        .next()
        .ok_or_else(|| ServeError::Config(format!("peer URL {listen} resolves to nothing")))?;
    let listener = TcpListener::bind(addr)
        .map_err(|e| ServeError::io(&format!("bind peer address {addr}"), e))?;
    let transport_config = transport::Config::new(config.cluster_id, config.member_id, peers);
    let tokens = TRANSPORT_TOKEN_BASE
        ..TRANSPORT_TOKEN_BASE + 1 + transport::PEER_SLOTS + TRANSPORT_INBOUND_SLOTS;
    let mut transport = Transport::new(transport_config, listener, tokens, now)
        .map_err(|e| ServeError::Config(format!("transport: {e}")))?;
    transport
        .register(poll.registry(), now)
        .map_err(|e| ServeError::io("register the peer listener", e))?;
    Ok(transport)
}

/// Bytes of the WAL and snapshot files.
pub(super) fn data_size_bytes(data_dir: &Path) -> u64 {
    let mut total = 0;
    for sub in ["wal", "snap"] {
        if let Ok(entries) = fs::read_dir(data_dir.join(sub)) {
            total +=
                entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum::<u64>();
        }
    }
    total
}
