//! The node: its parts, start-up, and the poll loop that ties them.
//!
//! One iteration (DESIGN.md, "The shape"): poll with a timeout no longer than
//! the time to the next tick → handle every event (accept, read and decode
//! client frames, peer I/O) → step peer messages, tick when due → propose
//! this iteration's writes as one batch and ask for one ReadIndex covering
//! this iteration's linearizable reads → handle the `Ready`s (one fsync for
//! each that brings new entries or a new term or vote; see `iteration`) →
//! serve reads whose index is
//! applied, feed watches, expire requests, snapshot when due → write answers
//! and peer messages.
//!
//! The parts, each owning its state: `raft` (with the WAL and snapshot
//! files as its storage), the replicated `state` machine, `proposals`
//! (sequence numbers, pending writes, read rounds), `clients` (connections
//! and watches), `peers` (the transport, following the member table),
//! `snapshots` (taking them) and `inbox` (receiving them), and the lease
//! clock. The Ready order is written once, in `ready.rs`.
//!
//! Tokens: client listeners from `LISTENER_TOKEN_BASE`, the snapshot
//! writer's waker after them, the transport's range from
//! `TRANSPORT_TOKEN_BASE`, the metrics ports' listeners and connections
//! from `METRICS_LISTENER_TOKEN_BASE` and `METRICS_CONN_TOKEN_BASE`,
//! client connections from `CONN_TOKEN_BASE` (slot `i` is token
//! `CONN_TOKEN_BASE + i`).

use std::collections::VecDeque;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::backups::Backups;
use super::clients::{self, CLIENT_LISTENERS_MAX, ClientLimits, Clients, Intake};
use super::config::{ClusterState, Config};
use super::dir_lock::DirLock;
use super::hashes::{CheckClock, Hashes, STARTUP_CHECK_WAIT_ELECTIONS, StartupGate};
use super::leader_moves::LeaderMoves;
use super::lease_clock::LeaseClock;
use super::logins::Logins;
use super::metrics::LoopMetrics;
use super::notify::{Notifier, WatchdogTimer, watchdog_interval};
use super::peers::Peers;
use super::proposals::{Proposals, ReadWait, random_u64};
use super::repair::Repair;
use super::snapshots::{SnapshotInbox, Snapshots, restore_from_file};
use super::{ServeError, signal};
use crate::flags::process_env;
use crate::mvcc::StoreConfig;
use crate::proto::{self, CancelReason, ResponseHeader, ServerParams};
use crate::raft::{self, ConfState, HardState, Message, RawNode, SnapshotMeta};
use crate::snap::{RETAIN_COUNT_DEFAULT, SnapDir};
use crate::state::{Identity, MemberRecord, Restorer, StateMachine};
use crate::storage::DiskStorage;
use crate::transport::{self, Transport};
use crate::wal::{Wal, WalConfig};

pub const LISTENER_TOKEN_BASE: usize = 0;
pub const TRANSPORT_TOKEN_BASE: usize = 16;
/// Accepted peer connections: twice the peer slots plus strangers.
pub const TRANSPORT_INBOUND_SLOTS: usize = 3 * transport::PEER_SLOTS;
pub const CONN_TOKEN_BASE: usize = 1024;
/// `--listen-metrics-urls` listeners: past the transport's range.
pub const METRICS_LISTENER_TOKEN_BASE: usize = 512;
/// Connections of the metrics ports, below the clients' range.
pub const METRICS_CONN_TOKEN_BASE: usize = METRICS_LISTENER_TOKEN_BASE + CLIENT_LISTENERS_MAX;
/// Connections a metrics port holds at once: a Prometheus server or two
/// and the probes of a supervisor need a handful; the longest-idle one
/// makes room past it.
pub const METRICS_CONNS_MAX: usize = 32;
/// The memory budget of the metrics ports' connections: a few answers of
/// at most `metrics::SCRAPE_BYTES_MAX` each.
pub const METRICS_MEMORY_BYTES_MAX: usize = 4 << 20;
/// Events taken from one poll.
const EVENTS_CAPACITY: usize = 1024;
/// Keys a pending compaction drops per iteration, so it never stalls the loop.
pub const COMPACT_STEP_KEYS: usize = 1024;
/// How often a watch that asked for progress notifications gets one while
/// idle (etcd's default).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// The token of the waker the snapshot writer thread uses to bring the loop
/// back when its queue has room: the free token after the client listeners.
pub const SNAPSHOT_WAKER_TOKEN: usize = LISTENER_TOKEN_BASE + CLIENT_LISTENERS_MAX;

pub struct Node {
    /// Held for the life of the process: no other process opens the data
    /// directory meanwhile.
    pub(super) _dir_lock: DirLock,
    pub(super) config: Config,
    pub(super) poll: Poll,
    pub(super) raft: RawNode<DiskStorage>,
    /// The replicated state, at its applied index.
    pub(super) state: StateMachine,
    pub(super) proposals: Proposals,
    /// The worker that checks and hashes passwords off the loop.
    pub(super) logins: Logins,
    pub(super) clients: Clients,
    /// `--listen-metrics-urls`: connections that get HTTP answers only.
    pub(super) metrics_port: Option<Clients>,
    /// Requests read from clients and not yet handled; empty between events.
    pub(super) intake: Intake,
    /// Ranges ready to serve whose connections have no room for an answer
    /// yet. Invariant: each is one of its connection's requests in flight,
    /// so their number is bounded as those are.
    pub(super) deferred_reads: VecDeque<ReadWait>,
    /// The range being built, one step per iteration (`requests.rs`).
    pub(super) range_building: Option<(ReadWait, crate::mvcc::RangeBuild)>,
    /// Key-value bytes the ranges served since the last iteration ended
    /// have built (`requests::RANGE_BYTES_PER_ITERATION`).
    pub(super) range_bytes_this_iteration: usize,
    pub(super) peers: Peers,
    pub(super) snapshots: Snapshots,
    pub(super) inbox: SnapshotInbox,
    /// Backups and defragmentations waiting for a snapshot; backup streams.
    pub(super) backups: Backups,
    pub(super) leader_moves: LeaderMoves,
    /// Keyspace hashes taken a slice per iteration (`hashes.rs`).
    pub(super) hashes: Hashes,
    /// When this member next proposes a corruption check (`corrupt.rs`).
    pub(super) check_clock: CheckClock,
    /// This member's side of repairs after a check outvoted it (`repair.rs`).
    pub(super) repair: Repair,
    /// Closed on a restarted member until its start-up check judged it
    /// (`corrupt.rs`).
    pub(super) startup_gate: StartupGate,
    /// Fault injection only: the key whose value this member flips once
    /// it holds one (`corrupt.rs`).
    #[cfg(feature = "fault-injection")]
    pub(super) fault_flip_key: Option<Vec<u8>>,
    /// Fault injection only: added to every WAL sync, as a slow disk
    /// would (`ready.rs`).
    #[cfg(feature = "fault-injection")]
    pub(super) fault_sync_delay: Duration,
    pub(super) lease_clock: LeaseClock,
    /// Outcomes of snapshots to followers, reported to Raft after `advance`.
    pub(super) snapshot_reports: Vec<(u64, bool)>,
    pub(super) term: u64,
    pub(super) leader_id: u64,
    /// False from start-up until this member has applied up to a read
    /// index confirmed by a leader. Before that its applied index may be
    /// behind what it served before a crash (a commit index is written but
    /// not synced on its own), so serializable reads take the linearizable
    /// path meanwhile: a client never sees a member's revision go back.
    pub(super) caught_up_since_start: bool,
    pub(super) tick_interval: Duration,
    pub(super) next_tick: Instant,
    pub(super) next_progress_notify: Instant,
    /// When this member may next propose its name and client URLs.
    pub(super) next_publish: Instant,
    /// When this member, as leader, may next propose its quota.
    pub(super) next_quota_proposal: Instant,
    /// The version this member runs and publishes (`version.rs`).
    pub(super) version: crate::state::Version,
    /// When this leader may next propose the cluster version.
    pub(super) next_cluster_version_proposal: Instant,
    /// When the data directory's free space is next read, and whether a
    /// `NoSpace` of this member is the disk's to clear (`disk.rs`).
    pub(super) disk: super::disk_alarm::DiskWatch,
    /// Holds the next batch of writes for the clients a slow sync answered.
    pub(super) gather: super::gather::Gather,
    pub(super) notifier: Notifier,
    pub(super) watchdog: Option<WatchdogTimer>,
    /// Work is left that the next iteration should do without sleeping.
    pub(super) busy: bool,
    pub(super) loop_time: LoopTime,
    /// What the loop counts for `/metrics`.
    pub(super) metrics: LoopMetrics,
    pub(super) stopping: bool,
    /// This member has been in the applied member table (so its absence
    /// later means it was removed).
    pub(super) seen_in_table: bool,
    /// When this member first applied a table without itself while Raft
    /// still counted it (see `removed_from_cluster`).
    pub(super) removed_from_table_at: Option<Instant>,
    /// When the TLS files were last looked at, and what they were then.
    pub(super) tls_files: crate::tls::ReloadCheck,
}

/// Fault injection only: milliseconds added to every WAL sync.
#[cfg(feature = "fault-injection")]
pub const FAULT_SYNC_DELAY_ENV: &str = "EMBER_FAULT_SYNC_DELAY_MS";

fn fingerprint(config: &Config) -> Vec<Option<std::time::SystemTime>> {
    let client = config.client_tls.iter().flat_map(|files| files.fingerprint());
    let peer = config.peer_tls.iter().flat_map(|files| files.server.fingerprint());
    client.chain(peer).collect()
}

impl Node {
    /// Opens the data directory, recovers, binds the sockets.
    pub fn new(mut config: Config) -> Result<Node, ServeError> {
        let now = Instant::now();
        // Before anything in the directory is read: another process's
        // writes would change it under us.
        let dir_lock = DirLock::take(&config.data_dir)?;
        let joining = config.initial_cluster_state == ClusterState::Existing;
        let first_start = !super::identity::exists(&config.data_dir);
        if joining && first_start {
            let ask = peer_transport_config(&config)?;
            super::join::learn_ids(&mut config, &ask)?;
        }
        super::identity::check(&mut config)?;
        let lease_clock = LeaseClock::new(&config, now);
        let (storage, state) = open_state(&config, lease_clock.now_ms(now))?;
        let version = super::version::own_version()?;
        super::version::check_at_start(version, &storage, &state)?;
        if joining && !first_start && state.members().is_empty() {
            let ask = peer_transport_config(&config)?;
            super::join::relearn_ids(&mut config, &ask)?;
        }
        // A new cluster's first start holds the bootstrap snapshot at 1 and
        // nothing after it: nothing to check before serving.
        let last_index = storage.wal.last_index();
        let restarted = last_index.max(storage.wal.snapshot_meta().index) > 1;
        let check_wait = Duration::from_millis(config.election_timeout_ms)
            .saturating_mul(STARTUP_CHECK_WAIT_ELECTIONS);
        let mut raft = RawNode::new(&raft_config(&config, state.applied_index()), storage)
            .map_err(ServeError::Raft)?;
        // The only voter need not wait an election timeout to lead.
        if raft.conf_state().voters == [config.member_id] {
            raft.campaign();
        }
        let poll = Poll::new().map_err(|e| ServeError::io("poll", e))?;
        let waker = Waker::new(poll.registry(), Token(SNAPSHOT_WAKER_TOKEN))
            .map_err(|e| ServeError::io("create the snapshot waker", e))?;
        let clients = start_clients(&config, &poll)?;
        let metrics_port = start_metrics_port(&config, &poll)?;
        let peers = Peers::new(start_transport(&config, &poll, now)?, config.member_id);
        let (notifier, watchdog) = start_notifier(now)?;
        let status = raft.status();
        log::info!(
            "member {:016x} of cluster {:016x} starting at applied index {}, term {}",
            config.member_id,
            config.cluster_id,
            state.applied_index(),
            status.term
        );
        // One waker serves both helper threads: mio allows one per poll.
        let waker = Arc::new(waker);
        let logins = Logins::start(
            Arc::clone(&waker),
            config.auth_logins_max as usize,
            config.auth_pbkdf2_iterations,
        );
        let mut node = Node {
            _dir_lock: dir_lock,
            snapshots: Snapshots::new(state.applied_index(), waker, config.snapshot_count),
            logins,
            proposals: Proposals::new(
                config.member_id,
                Duration::from_millis(config.election_timeout_ms),
            ),
            inbox: SnapshotInbox::default(),
            backups: Backups::default(),
            leader_moves: LeaderMoves::default(),
            hashes: Hashes::default(),
            #[cfg(feature = "fault-injection")]
            fault_flip_key: process_env(super::hashes::FAULT_FLIP_VALUE_ENV)
                .map(String::into_bytes),
            #[cfg(feature = "fault-injection")]
            fault_sync_delay: process_env(FAULT_SYNC_DELAY_ENV)
                .and_then(|ms| ms.parse().ok())
                .map_or(Duration::ZERO, Duration::from_millis),
            check_clock: CheckClock::new(
                config.corrupt_check_time_ms,
                state.store().compact_revision(),
                now,
            ),
            repair: Repair::new(config.corrupt_repair, now),
            startup_gate: StartupGate::new(restarted, last_index, check_wait, now),
            intake: Intake::new(),
            deferred_reads: VecDeque::new(),
            range_building: None,
            range_bytes_this_iteration: 0,
            snapshot_reports: Vec::new(),
            term: status.term,
            leader_id: status.leader_id,
            caught_up_since_start: false,
            tick_interval: config.tick_interval(),
            next_tick: now + config.tick_interval(),
            next_progress_notify: now + PROGRESS_NOTIFY_INTERVAL,
            next_publish: now,
            next_quota_proposal: now,
            version,
            next_cluster_version_proposal: now,
            disk: super::disk_alarm::DiskWatch::new(restarted, now),
            gather: super::gather::Gather::default(),
            busy: false,
            loop_time: LoopTime::new(now),
            // A leader known at start (a lone voter elects itself in
            // `new`) is the first one seen, as etcd counts it.
            metrics: LoopMetrics {
                leader_changes_seen_total: u64::from(status.leader_id != 0),
                ..LoopMetrics::default()
            },
            stopping: false,
            seen_in_table: false,
            removed_from_table_at: None,
            tls_files: crate::tls::ReloadCheck::new(fingerprint(&config), now),
            config,
            poll,
            raft,
            state,
            clients,
            metrics_port,
            peers,
            lease_clock,
            notifier,
            watchdog,
        };
        node.follow_members(None);
        node.follow_cluster_version()?;
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
        if !self.config.listen_metrics_addrs.is_empty() {
            let metrics: Vec<String> =
                self.config.listen_metrics_addrs.iter().map(ToString::to_string).collect();
            log::info!("serving /metrics and health probes on {}", metrics.join(", "));
        }
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
                return self.shutdown("stop signal received");
            }
            self.maybe_reload_tls(now);
            if let Some(how) = self.removal(now) {
                return self.stop_removed(&how);
            }
            self.iteration(now)?;
            let took = now.elapsed();
            self.loop_time.record(took, now);
            self.metrics.loop_iteration.observe(took);
        }
    }

    fn dispatch(&mut self, token: Token, now: Instant) {
        let registry = self.poll.registry();
        let mut intake = std::mem::take(&mut self.intake);
        if let Some(listener) = self.clients.listener_of(token) {
            self.clients.accept(listener, registry, now, &mut intake);
        } else if self.peers.owns(token) {
            self.peers.transport_mut().handle_event(registry, token, now);
        } else if let Some(slot) = self.clients.slot_of(token) {
            self.clients.service(slot, registry, &mut intake);
            self.handle_intake(intake);
            self.clients.flush(slot, self.poll.registry());
            return;
        } else if let Some(port) = self.metrics_port.as_mut() {
            // HTTP only: nothing reaches the intake, the asks are answered
            // by `handle_intake` below.
            if let Some(listener) = port.listener_of(token) {
                port.accept(listener, registry, now, &mut intake);
            } else if let Some(slot) = port.slot_of(token) {
                port.service(slot, registry, &mut intake);
            }
        }
        self.handle_intake(intake);
        if let Some(port) = self.metrics_port.as_mut() {
            port.flush_all(self.poll.registry());
        }
    }

    /// Handles the requests read, then keeps the emptied buffer for the
    /// next read: one allocation for the node's life, not one per event.
    /// HTTP requests are answered here too, before anything is flushed
    /// (the invariant of `Clients::take_http_asks`).
    fn handle_intake(&mut self, mut intake: Intake) {
        for (waiter, request) in intake.drain(..) {
            self.gather.request_arrived();
            self.handle_request(waiter, request);
        }
        self.intake = intake;
        self.answer_http_asks();
    }

    fn iteration(&mut self, now: Instant) -> Result<(), ServeError> {
        self.peers.transport_mut().tick(self.poll.registry(), now);
        self.peers.poll_resolved(now);
        self.step_peers();
        self.report_peers();
        if now >= self.next_tick {
            self.tick(now);
        }
        let mut intake = std::mem::take(&mut self.intake);
        self.clients.resume_paused(self.poll.registry(), &mut intake);
        self.handle_intake(intake);
        self.finish_logins();
        self.maybe_publish(now);
        self.maybe_propose_quota(now);
        self.maybe_propose_cluster_version(now);
        self.maybe_propose_checks(now);
        #[cfg(feature = "fault-injection")]
        self.maybe_flip_value();
        self.check_disk(now);
        // What peers and ticks produced first: writes the followers' acks
        // committed are applied and answered before this iteration's fsync,
        // not after it. On a leader, writes forwarded by followers were
        // appended when stepped, so this Ready syncs them and the next one
        // this member's own batch: two fsyncs in such an iteration.
        self.handle_ready()?;
        self.clients.flush_all(self.poll.registry());
        self.propose(now);
        self.handle_ready()?;
        // A lone voter commits its batch as the fsync above completes:
        // applying it now answers in one fsync instead of two. This Ready
        // holds no new entries (nothing was proposed since), so no fsync.
        self.handle_ready()?;
        if let Err(too_old) = self.follow_cluster_version() {
            self.shutdown("this member is older than the cluster version")?;
            return Err(too_old);
        }
        // Before any read is served or event fed: a member found corrupt
        // by this iteration's entries serves nothing more from its store.
        self.follow_corruption(now)?;
        self.serve_deferred_reads();
        self.serve_ready_reads();
        let watches_behind = self.clients.feed_watches(self.state.store(), self.header(), now);
        if now >= self.next_progress_notify {
            self.next_progress_notify = now + PROGRESS_NOTIFY_INTERVAL;
            self.clients.notify_progress(self.state.store(), self.header());
        }
        let expired = self.proposals.expire(now);
        self.metrics.proposals_failed_total += expired.len() as u64;
        self.clients.answer_all(expired);
        let compacting = self.compact_step();
        self.step_hashes();
        if let Some(index) = self.backups.wanted_index() {
            self.snapshots.want(index);
        }
        let conf = self.raft.conf_state().clone();
        self.snapshots.step(&mut self.state, self.raft.storage_mut(), &conf)?;
        self.poll_maintenance(now)?;
        // Answers a hold will wait on go out after the next read of the
        // sockets, so what it reads is not taken for replies to them.
        let defer_answers = self.gather.defer_flush();
        if !defer_answers {
            self.clients.flush_all(self.poll.registry());
        }
        self.peers.transport_mut().flush(self.poll.registry(), now);
        self.ping_watchdog(now);
        self.range_bytes_this_iteration = 0;
        self.busy = watches_behind || compacting || self.clients.any_resumable();
        self.busy |= !self.hashes.is_empty();
        // Held ranges wait for their sockets to drain, which wakes the
        // poll; only one that has room now needs another pass at once.
        self.busy |= self.deferred_reads.iter().any(|r| self.clients.has_room(r.waiter));
        self.busy |= self.raft.has_ready() || self.snapshots.wants_iteration();
        self.busy |= self.range_building.is_some() || defer_answers;
        Ok(())
    }

    /// What the transport learned about peers, for Raft.
    fn report_peers(&mut self) {
        let transport = self.peers.transport_mut();
        let unreachable = transport.unreachable();
        let outcomes = transport.drain_stream_outcomes();
        for id in unreachable {
            self.raft.report_unreachable(id);
        }
        for outcome in outcomes {
            self.raft.report_snapshot(outcome.to, outcome.result.is_ok());
        }
    }

    fn tick(&mut self, now: Instant) {
        self.reconcile_conf();
        self.raft.tick();
        self.next_tick = (self.next_tick + self.tick_interval).max(now);
        self.tick_leases(now);
        self.clients.expire(now, self.poll.registry());
        if let Some(port) = self.metrics_port.as_mut() {
            port.expire(now, self.poll.registry());
        }
        // Peers whose names the resolver could not take yet are asked again.
        self.follow_members(None);
    }

    /// Answers the requests waiting for a snapshot that is now durable
    /// (releasing the WAL's spare segments for a defragmentation) and the
    /// move-leader requests whose target leads or whose time ran out.
    fn poll_maintenance(&mut self, now: Instant) -> Result<(), ServeError> {
        let header = self.header();
        let storage = self.raft.storage();
        let marker = storage.wal.snapshot_meta().clone();
        let identity = self.state.identity();
        let replies = self.backups.poll(&marker, &storage.snaps, identity, header, now);
        if replies.iter().any(|(_, r)| matches!(r, Ok(proto::Response::Defragment(_)))) {
            let before = data_size_bytes(&self.config.data_dir);
            let spares = self.raft.storage_mut().wal.discard_spares().map_err(ServeError::Wal)?;
            let after = data_size_bytes(&self.config.data_dir);
            log::info!(
                "defragmented: snapshot at index {}, {spares} spare WAL segments removed, \
                 data {before} -> {after} bytes",
                marker.index
            );
        }
        self.clients.answer_all(replies);
        let moved = self.leader_moves.poll(self.leader_id, header, now);
        self.clients.answer_all(moved);
        Ok(())
    }

    /// This iteration's writes as one batch, its reads as one round.
    fn propose(&mut self, now: Instant) {
        if self.gather.release(now) {
            let payload_max_bytes = self.raft.storage().wal.payload_max_bytes();
            let refused = self.proposals.propose_writes(&mut self.raft, payload_max_bytes, now);
            self.metrics.proposals_failed_total += refused.len() as u64;
            self.clients.answer_all(refused);
        }
        let refused = self.proposals.ask_read_index(&mut self.raft, now);
        self.metrics.proposals_failed_total += refused.len() as u64;
        self.clients.answer_all(refused);
    }

    /// One bounded step of a pending compaction; true while more remain.
    /// A compaction paused by a snapshot image waits for the image to end.
    fn compact_step(&mut self) -> bool {
        let store = self.state.store_mut();
        !store.compact_step(COMPACT_STEP_KEYS) && !store.compaction_paused()
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if self.busy {
            return Duration::ZERO;
        }
        let mut timeout = self.next_tick.saturating_duration_since(now);
        if let Some(t) = self.peers.transport().next_timeout(now) {
            timeout = timeout.min(t);
        }
        if let Some(w) = &self.watchdog {
            timeout = timeout.min(w.next_timeout(now));
        }
        if let Some(until) = self.gather.until() {
            timeout = timeout.min(until.saturating_duration_since(now));
        }
        timeout
    }

    /// Loads the TLS files again on SIGHUP, or when they changed. A
    /// configuration that fails to load is logged and the old one kept;
    /// connections already open keep the one they started with.
    fn maybe_reload_tls(&mut self, now: Instant) {
        let signalled = signal::take_reload_request();
        let config = &self.config;
        let Some(why) = self.tls_files.maybe_due(signalled, now, || fingerprint(config)) else {
            return;
        };
        if let Some(files) = &self.config.client_tls {
            match files.load() {
                Ok(tls) => {
                    self.clients.set_tls(tls);
                    log::info!("client TLS certificates reloaded ({why})");
                }
                Err(e) => log::warn!("client TLS not reloaded, the old certificates stay: {e}"),
            }
        }
        if let Some(files) = &self.config.peer_tls {
            match files.load() {
                Ok(tls) => {
                    self.peers.transport_mut().set_tls(tls);
                    log::info!("peer TLS certificates reloaded ({why})");
                }
                Err(e) => log::warn!("peer TLS not reloaded, the old certificates stay: {e}"),
            }
        }
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
        self.state.header(self.term)
    }

    /// Answers or fails everything pending, syncs the WAL, and returns.
    /// How this member learned it was removed from the cluster, once it has.
    fn removal(&mut self, now: Instant) -> Option<String> {
        if let Some(by) = self.peers.transport().removed_by() {
            return Some(format!("member {by:016x} refused it as removed"));
        }
        self.removed_from_cluster(now).then(|| "it applied its own removal".to_string())
    }

    /// Stops for good: the WAL synced, the removal recorded in the data
    /// directory so no later start tries again.
    fn stop_removed(&mut self, how: &str) -> Result<(), ServeError> {
        let message =
            super::identity::removed_message(self.config.member_id, &self.config.data_dir);
        log::warn!("{message} ({how})");
        self.shutdown("removed from the cluster")?;
        super::identity::record_removed(&self.config)?;
        Err(ServeError::Removed(message))
    }

    /// Answers what waits, syncs the WAL and says why it stops (`why`).
    fn shutdown(&mut self, why: &str) -> Result<(), ServeError> {
        log::info!("{why}: stopping");
        self.stopping = true;
        if let Err(e) = self.notifier.stopping() {
            log::warn!("{e}");
        }
        let failed = self.proposals.fail_everything(proto::ErrorCode::Stopped);
        self.clients.answer_all(failed);
        for (waiter, _) in std::mem::take(&mut self.startup_gate.held) {
            let stopped = proto::ErrorBody::new(proto::ErrorCode::Stopped);
            self.clients.answer(waiter, Err(stopped));
        }
        let building = self.range_building.take().map(|(read, _)| read);
        for read in building.into_iter().chain(std::mem::take(&mut self.deferred_reads)) {
            let stopped = proto::ErrorBody::new(proto::ErrorCode::Stopped);
            self.clients.answer(read.waiter, Err(stopped));
        }
        self.clients.cancel_all_watches(self.header(), CancelReason::ServerStopping);
        self.clients.flush_all(self.poll.registry());
        self.finish_snapshot(true)?;
        self.raft.storage_mut().wal.sync().map_err(ServeError::Wal)?;
        log::info!(
            "stopped; the WAL is synced; the longest loop iteration took {} us",
            self.loop_time.longest_ever.as_micros()
        );
        Ok(())
    }
}

/// How often the longest loop iteration of the last interval is logged.
pub const LOOP_TIME_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// An iteration longer than this is logged as a warning: a tenth of the
/// default election timeout, past which heartbeats start to come late.
pub const LOOP_ITERATION_WARN: Duration = Duration::from_millis(100);

/// The time loop iterations take, from the end of the poll to the end of
/// the iteration: what no single request may hold for long.
pub(super) struct LoopTime {
    longest_in_window: Duration,
    pub(super) longest_ever: Duration,
    window_start: Instant,
}

impl LoopTime {
    fn new(now: Instant) -> LoopTime {
        LoopTime {
            longest_in_window: Duration::ZERO,
            longest_ever: Duration::ZERO,
            window_start: now,
        }
    }

    /// Notes one iteration; once per interval, logs the longest (a warning
    /// when it passed `LOOP_ITERATION_WARN`).
    fn record(&mut self, took: Duration, now: Instant) {
        self.longest_in_window = self.longest_in_window.max(took);
        self.longest_ever = self.longest_ever.max(took);
        if now.saturating_duration_since(self.window_start) < LOOP_TIME_LOG_INTERVAL {
            return;
        }
        let longest_us = self.longest_in_window.as_micros();
        let seconds = LOOP_TIME_LOG_INTERVAL.as_secs();
        if self.longest_in_window > LOOP_ITERATION_WARN {
            log::warn!("the longest loop iteration of the last {seconds} s took {longest_us} us");
        } else {
            log::debug!("the longest loop iteration of the last {seconds} s took {longest_us} us");
        }
        self.longest_in_window = Duration::ZERO;
        self.window_start = now;
    }
}

fn start_notifier(now: Instant) -> Result<(Notifier, Option<WatchdogTimer>), ServeError> {
    let notifier = Notifier::from_env(process_env).map_err(ServeError::Notify)?;
    let watchdog = watchdog_interval(process_env, std::process::id())
        .map_err(ServeError::Notify)?
        .map(|interval| WatchdogTimer::new(interval, now));
    Ok((notifier, watchdog))
}

fn start_clients(config: &Config, poll: &Poll) -> Result<Clients, ServeError> {
    let max_frame_bytes = config.max_request_bytes.max(proto::MIN_FRAME_BYTES);
    let params = ServerParams {
        min_version: proto::PROTOCOL_VERSION,
        max_version: proto::PROTOCOL_VERSION,
        max_frame_bytes,
        cluster_id: config.cluster_id,
        member_id: config.member_id,
    };
    let limits =
        proto::Limits { max_txn_ops: config.max_txn_ops as usize, ..proto::Limits::default() };
    let tokens = clients::Tokens { listener_base: LISTENER_TOKEN_BASE, conn_base: CONN_TOKEN_BASE };
    let bounds = ClientLimits {
        conns_max: config.max_client_connections as usize,
        idle_timeout: Duration::from_millis(config.client_idle_timeout_ms),
        hello_timeout: Duration::from_millis(config.client_hello_timeout_ms),
        frame_timeout: Duration::from_millis(config.client_frame_timeout_ms),
        slow_watcher_timeout: Duration::from_millis(config.watch_slow_reader_timeout_ms),
        memory_max_bytes: usize::try_from(config.max_client_memory_bytes).unwrap_or(usize::MAX),
        share_bytes: usize::try_from(config.client_share_bytes()).unwrap_or(usize::MAX),
        response_max_bytes: config.max_response_bytes.max(proto::MIN_FRAME_BYTES),
    };
    let listeners = bind_clients(&config.listen_client_addrs, LISTENER_TOKEN_BASE, poll)?;
    let mut clients = Clients::new(tokens, listeners, params, limits, bounds);
    if let Some(files) = &config.client_tls {
        clients.set_tls(files.load().map_err(|e| ServeError::Config(e.to_string()))?);
    }
    Ok(clients)
}

/// The ports of `--listen-metrics-urls`, if any: HTTP only, with the
/// client port's certificate when they are `https://`.
fn start_metrics_port(config: &Config, poll: &Poll) -> Result<Option<Clients>, ServeError> {
    if config.listen_metrics_addrs.is_empty() {
        return Ok(None);
    }
    let params = ServerParams {
        min_version: proto::PROTOCOL_VERSION,
        max_version: proto::PROTOCOL_VERSION,
        max_frame_bytes: proto::MIN_FRAME_BYTES,
        cluster_id: config.cluster_id,
        member_id: config.member_id,
    };
    let tokens = clients::Tokens {
        listener_base: METRICS_LISTENER_TOKEN_BASE,
        conn_base: METRICS_CONN_TOKEN_BASE,
    };
    let bounds = ClientLimits {
        conns_max: METRICS_CONNS_MAX,
        idle_timeout: Duration::from_millis(config.client_idle_timeout_ms),
        hello_timeout: Duration::from_millis(config.client_hello_timeout_ms),
        frame_timeout: Duration::from_millis(config.client_frame_timeout_ms),
        slow_watcher_timeout: Duration::from_millis(config.watch_slow_reader_timeout_ms),
        memory_max_bytes: METRICS_MEMORY_BYTES_MAX,
        share_bytes: METRICS_MEMORY_BYTES_MAX / 2,
        response_max_bytes: proto::MIN_FRAME_BYTES,
    };
    let listeners = bind_clients(&config.listen_metrics_addrs, METRICS_LISTENER_TOKEN_BASE, poll)?;
    let mut port = Clients::new(tokens, listeners, params, proto::Limits::default(), bounds);
    port.serve_http_only();
    if config.metrics_tls
        && let Some(files) = &config.client_tls
    {
        port.set_tls(files.load().map_err(|e| ServeError::Config(e.to_string()))?);
    }
    Ok(Some(port))
}

fn raft_config(config: &Config, applied: u64) -> raft::Config {
    let mut raft_config = raft::Config::new(config.member_id);
    raft_config.election_tick = config.election_ticks() as usize;
    raft_config.heartbeat_tick = 1;
    raft_config.applied = applied;
    raft_config.seed = config.member_id ^ random_u64();
    raft_config
}

/// Opens WAL and snapshots, bootstraps a fresh data directory, and restores
/// the state machine from the snapshot the WAL names. Raft replays the rest.
fn open_state(config: &Config, now_ms: u64) -> Result<(DiskStorage, StateMachine), ServeError> {
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
    let identity = identity_of(config);
    let meta = storage.wal.snapshot_meta().clone();
    let state = if meta.index == 0 {
        StateMachine::empty(identity, store_config(config))
    } else {
        let restorer =
            Restorer::new(identity, store_config(config), (meta.index, meta.term), now_ms);
        restore_from_file(&storage.snaps, &meta, restorer)
            .map_err(|e| ServeError::Corrupt(format!("snapshot {}: {e}", meta.index)))?
    };
    Ok((storage, state))
}

pub(super) fn identity_of(config: &Config) -> Identity {
    Identity { cluster_id: config.cluster_id, member_id: config.member_id }
}

pub(super) fn store_config(config: &Config) -> StoreConfig {
    StoreConfig { max_txn_ops: config.max_txn_ops as usize }
}

/// Every member of a new cluster starts from the same snapshot at index 1,
/// term 1, holding the initial membership and an empty store: their logs
/// agree from the first entry without any member talking first.
fn bootstrap(storage: &mut DiskStorage, config: &Config) -> Result<(), ServeError> {
    let state =
        StateMachine::bootstrap(identity_of(config), store_config(config), initial_members(config));
    install_first_snapshot(storage, config, &state)?;
    log::info!("bootstrapped a new cluster of {} members", config.initial_cluster.len());
    Ok(())
}

/// Writes `state` as the snapshot at index 1, term 1, with the initial
/// members as Raft's voters, and the WAL's marker and hard state for it: a
/// new cluster's first state, empty (bootstrap) or restored from a backup
/// (`restore.rs`). The image is written a chunk at a time.
pub(super) fn install_first_snapshot(
    storage: &mut DiskStorage,
    config: &Config,
    state: &StateMachine,
) -> Result<(), ServeError> {
    let mut voters: Vec<u64> = config.initial_cluster.iter().map(|m| m.id).collect();
    voters.sort_unstable();
    voters.dedup();
    let conf_state = ConfState { voters, ..ConfState::default() };
    let meta = SnapshotMeta { index: 1, term: 1, conf_state };
    let mut file = storage.snaps.create(&meta).map_err(ServeError::Snap)?;
    file.write(&crate::state::image::encode_prefix(&state.sections())).map_err(ServeError::Snap)?;
    let mut image = state.store().image();
    while let Some(chunk) = image.next_chunk(crate::state::IMAGE_CHUNK_BYTES) {
        file.write(&chunk).map_err(ServeError::Snap)?;
    }
    file.finish().map_err(ServeError::Snap)?;
    storage.wal.save_snapshot_marker(&meta).map_err(ServeError::Wal)?;
    storage
        .wal
        .set_hard_state(&HardState { term: 1, vote: 0, commit: 1 })
        .map_err(ServeError::Wal)?;
    storage.wal.sync().map_err(ServeError::Wal)?;
    Ok(())
}

/// The member table of a new cluster: every initial member with its name
/// and peer URLs; client URLs come when each member publishes them.
pub(super) fn initial_members(config: &Config) -> Vec<MemberRecord> {
    let members = config.initial_cluster.iter().map(|m| MemberRecord {
        id: m.id,
        name: m.name.clone(),
        peer_urls: m.peer_addrs.iter().map(|a| config.peer_url(a)).collect(),
        client_urls: Vec::new(),
        is_learner: false,
    });
    members.collect()
}

fn bind_clients(
    addrs: &[super::config::HostPort],
    token_base: usize,
    poll: &Poll,
) -> Result<Vec<TcpListener>, ServeError> {
    let mut listeners = Vec::new();
    for host_port in addrs {
        let addrs = host_port.resolve().map_err(|e| ServeError::io("resolve a client URL", e))?;
        for addr in addrs {
            if listeners.len() == CLIENT_LISTENERS_MAX {
                return Err(ServeError::Config("too many client listen addresses".into()));
            }
            let mut listener = TcpListener::bind(addr)
                .map_err(|e| ServeError::io(&format!("bind client address {addr}"), e))?;
            let token = Token(token_base + listeners.len());
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
    config.check_peer_exposure(addr).map_err(|e| ServeError::Config(e.to_string()))?;
    let transport_config = transport::Config { peers, ..peer_transport_config(config)? };
    let tokens = TRANSPORT_TOKEN_BASE
        ..TRANSPORT_TOKEN_BASE + 1 + transport::PEER_SLOTS + TRANSPORT_INBOUND_SLOTS;
    let mut transport = Transport::new(transport_config, listener, tokens, now)
        .map_err(|e| ServeError::Config(format!("transport: {e}")))?;
    transport
        .register(poll.registry(), now)
        .map_err(|e| ServeError::io("register the peer listener", e))?;
    Ok(transport)
}

/// The transport's configuration with this member's peer TLS and secret,
/// and no peers yet.
fn peer_transport_config(config: &Config) -> Result<transport::Config, ServeError> {
    let mut transport_config = transport::Config::new(config.cluster_id, config.member_id, vec![]);
    transport_config.tls = match &config.peer_tls {
        Some(files) => Some(files.load().map_err(|e| ServeError::Config(e.to_string()))?),
        None => None,
    };
    transport_config.secret = match &config.peer_secret_file {
        Some(path) => Some(load_peer_secret(path)?),
        None => None,
    };
    Ok(transport_config)
}

/// The shared secret of peer hellos: the file's bytes, at least
/// `SECRET_BYTES_MIN` of them (a trailing newline is part of the secret,
/// the same on every member that got the same file).
fn load_peer_secret(path: &Path) -> Result<transport::Secret, ServeError> {
    let bytes = fs::read(path)
        .map_err(|e| ServeError::io(&format!("read the peer secret file {}", path.display()), e))?;
    transport::Secret::new(&bytes).ok_or_else(|| {
        ServeError::Config(format!(
            "peer secret file {} holds {} bytes; at least {} random bytes are needed \
             (head -c 32 /dev/urandom > FILE)",
            path.display(),
            bytes.len(),
            transport::SECRET_BYTES_MIN
        ))
    })
}

/// Bytes of the WAL and snapshot files: what the member takes on disk.
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
