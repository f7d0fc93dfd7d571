//! Raft in the loop: peer messages in, this iteration's proposals and read
//! requests, the `Ready` cycle in its fixed order, apply, snapshots.
//!
//! The order of `handle_ready` is the contract of `raft::Ready`: send
//! `messages`; persist the snapshot, entries and hard state and fsync once
//! when `must_sync`; send `persisted_messages`; apply the snapshot and the
//! committed entries; `advance`. Raft hands out only entries that are
//! committed and durable here, so apply never runs ahead of the local log.
//!
//! Snapshots are taken every `--snapshot-count` applied entries, or sooner
//! once the WAL holds `SNAPSHOT_WAL_SEGMENTS` segments. The image
//! records the store at the applied index, which is the snapshot's index:
//! that is the only place the applied index is persisted. Building the image
//! is memory work done in the loop, but a slice of at most
//! `SNAPSHOT_SLICE_BYTES` per iteration while newer writes apply (the
//! store's live image keeps describing the revision it began at), so a
//! large store never pauses clients and heartbeats. Each slice goes through
//! a queue of `SNAPSHOT_QUEUE_SLICES` to a short-lived helper thread that
//! writes and syncs the file (tens of megabytes on a card that syncs at a
//! few MB/s) and touches nothing else. Only when the file is durable does the
//! loop write the WAL's snapshot marker and release segments, so a crash in
//! between leaves the previous snapshot in charge. A snapshot from the
//! leader, a restore and shutdown first settle a running job (finish a
//! complete one, abandon one still building): one writer in `snap/` at a
//! time, and never an image of a store that was replaced. A snapshot for a
//! follower travels on the transport's stream (chunks, CRC-checked), not
//! inside a message, and is decoded into a store before Raft sees it.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use mio::Waker;

use super::ServeError;
use super::command::{self, Command, Op};
use super::image;
use super::node::{MAX_SNAPSHOT_BYTES, Node, PendingWrite, ReadRound, restore_store};
use crate::mvcc::{LiveImage, Store};
use crate::proto::{self, ErrorBody, ErrorCode, Response};
use crate::raft::{EntryKind, Message, MessageKind, RaftError, Ready, SnapshotMeta};
use crate::snap::{SnapError, SnapWriter};
use crate::transport::StreamEvent;
use crate::wal::CATCH_UP_MARGIN_ENTRIES_DEFAULT;

impl Node {
    /// Steps messages and finished snapshot streams from peers.
    pub(super) fn step_peers(&mut self) {
        let received: Vec<(u64, Message)> = self.transport.drain_received().collect();
        for (from, message) in received {
            self.step_from(from, message);
        }
        let events: Vec<StreamEvent<Message>> = self.transport.drain_stream_events().collect();
        for event in events {
            self.stream_event(event);
        }
    }

    fn step_from(&mut self, from: u64, message: Message) {
        // The handshake proved who is on the other end; a message that
        // claims another sender is dropped.
        if message.from != from {
            log::warn!(
                "dropping a message from {from:016x} that claims to be from {:016x}",
                message.from
            );
            return;
        }
        if !self.is_member(from) {
            log::debug!("dropping a message from {from:016x}, not a member");
            return;
        }
        if let Err(e) = self.raft.step(message) {
            log::debug!("dropped a message from {from:016x}: {e:?}");
        }
    }

    fn stream_event(&mut self, event: StreamEvent<Message>) {
        match event {
            StreamEvent::Started { from, stream, header } => {
                if header.kind == MessageKind::Snapshot && header.snapshot.is_some() {
                    self.incoming.insert((from, stream.0), (header, Vec::new()));
                }
            }
            StreamEvent::Chunk { from, stream, data, .. } => {
                let Some((_, bytes)) = self.incoming.get_mut(&(from, stream.0)) else { return };
                if bytes.len() + data.len() > MAX_SNAPSHOT_BYTES {
                    log::warn!(
                        "snapshot from {from:016x} exceeds {MAX_SNAPSHOT_BYTES} bytes: dropped"
                    );
                    self.incoming.remove(&(from, stream.0));
                } else {
                    bytes.extend_from_slice(&data);
                }
            }
            StreamEvent::Finished { from, stream, .. } => {
                let Some((header, bytes)) = self.incoming.remove(&(from, stream.0)) else { return };
                self.receive_snapshot(from, header, bytes);
            }
            StreamEvent::Aborted { from, stream, reason } => {
                log::warn!("snapshot stream from {from:016x} aborted: {reason:?}");
                self.incoming.remove(&(from, stream.0));
            }
        }
    }

    /// Decodes a received snapshot before Raft sees it: a bad image is
    /// dropped here instead of failing when the `Ready` applies it.
    fn receive_snapshot(&mut self, from: u64, mut header: Message, bytes: Vec<u8>) {
        let Some(snapshot) = header.snapshot.as_mut() else { return };
        let index = snapshot.meta.index;
        match restore_store(&self.config, &bytes) {
            Ok((sections, store)) => {
                log::info!(
                    "received a snapshot at index {index} ({} bytes) from {from:016x}",
                    bytes.len()
                );
                snapshot.data = bytes;
                self.staged_store = Some((index, sections, store));
                self.step_from(from, header);
            }
            Err(e) => log::warn!("snapshot at {index} from {from:016x} does not decode: {e}"),
        }
    }

    /// Proposes every write read this iteration as one batch.
    pub(super) fn propose_writes(&mut self, now: Instant) {
        if self.unproposed.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unproposed);
        let mut payloads = Vec::with_capacity(batch.len());
        let mut seqs = Vec::with_capacity(batch.len());
        let deadline = now + self.request_timeout;
        // An entry the WAL cannot hold would stop every member that appends
        // it: refuse it here, before Raft has it.
        let payload_max_bytes = self.raft.storage().wal.payload_max_bytes();
        for (waiter, op) in batch {
            let seq = self.next_seq;
            self.next_seq += 1;
            let payload = Command { origin: self.config.member_id, seq, op }.encode();
            if payload.len() > payload_max_bytes {
                self.answer(waiter, Err(ErrorBody::new(ErrorCode::RequestTooLarge)));
                continue;
            }
            payloads.push(payload);
            self.pending_writes.insert(seq, PendingWrite { waiter, deadline });
            seqs.push(seq);
        }
        if let Err(e) = self.raft.propose_batch(payloads) {
            let code = proposal_error(&e);
            for seq in seqs {
                if let Some(pending) = self.pending_writes.remove(&seq) {
                    self.answer(pending.waiter, Err(ErrorBody::new(code)));
                }
            }
        }
    }

    /// Asks one ReadIndex round for every linearizable read of this iteration.
    pub(super) fn ask_read_index(&mut self, now: Instant) {
        if self.unread.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.unread);
        let context = self.next_read_context;
        self.next_read_context += 1;
        match self.raft.read_index(context.to_le_bytes().to_vec()) {
            Ok(()) => {
                let deadline = now + self.request_timeout;
                self.read_rounds.insert(context, ReadRound { reads, deadline });
            }
            Err(e) => {
                let code = proposal_error(&e);
                for read in reads {
                    self.answer(read.waiter, Err(ErrorBody::new(code)));
                }
            }
        }
    }

    /// One `Ready`, handled in the order of its contract.
    pub(super) fn handle_ready(&mut self) -> Result<(), ServeError> {
        if !self.raft.has_ready() {
            return Ok(());
        }
        let mut ready = self.raft.ready();
        if let Some(hard_state) = ready.hard_state {
            self.term = hard_state.term;
        }
        self.note_leader(&ready);
        self.send(std::mem::take(&mut ready.messages));
        // Out before the fsync: followers write their copy while the leader
        // writes its own (thesis §10.2.1) instead of after it.
        self.transport.flush(self.poll.registry(), Instant::now());
        self.persist(&ready)?;
        self.send(std::mem::take(&mut ready.persisted_messages));
        if let Some(snapshot) = ready.snapshot.take() {
            self.apply_snapshot(snapshot.meta)?;
        }
        for entry in std::mem::take(&mut ready.committed_entries) {
            self.apply_entry(entry);
        }
        for state in std::mem::take(&mut ready.read_states) {
            let Ok(bytes) = <[u8; 8]>::try_from(state.context.as_slice()) else { continue };
            if let Some(round) = self.read_rounds.remove(&u64::from_le_bytes(bytes)) {
                self.reads_ready.push((state.index, round.reads));
            }
        }
        self.raft.advance();
        for (to, success) in std::mem::take(&mut self.snapshot_reports) {
            self.raft.report_snapshot(to, success);
        }
        Ok(())
    }

    /// A new leader: writes and reads this member handed to the old one may
    /// or may not complete, so their clients are told (outcome unknown for
    /// writes) instead of waiting for the timeout.
    fn note_leader(&mut self, ready: &Ready) {
        let Some(soft) = ready.soft_state else { return };
        if soft.leader_id == self.leader_id {
            return;
        }
        log::info!("leader is now {:016x} (term {})", soft.leader_id, self.term);
        let had_leader = self.leader_id != 0;
        self.leader_id = soft.leader_id;
        if self.leader_id == self.config.member_id {
            self.promote_leases();
        }
        if had_leader {
            self.fail_pending(ErrorCode::LeaderChanged);
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for mut message in messages {
            let to = message.to;
            if message.kind == MessageKind::Snapshot {
                let data = message.snapshot.as_mut().map(|s| std::mem::take(&mut s.data));
                let source = Box::new(Cursor::new(data.unwrap_or_default()));
                if let Err(e) = self.transport.start_stream(to, &message, source) {
                    log::debug!("snapshot to {to:016x} not started: {e:?}");
                    self.snapshot_reports.push((to, false));
                }
            } else if let Err(e) = self.transport.send(to, &message) {
                log::trace!("message to {to:016x} dropped: {e:?}");
            }
        }
    }

    /// Step 2: snapshot file and marker, entries, hard state, one fsync.
    fn persist(&mut self, ready: &Ready) -> Result<(), ServeError> {
        if ready.snapshot.is_some() {
            // One writer in the snapshot directory at a time.
            self.finish_snapshot(true)?;
        }
        let storage = self.raft.storage_mut();
        if let Some(snapshot) = &ready.snapshot {
            storage.snaps.save(snapshot).map_err(ServeError::Snap)?;
            storage.wal.save_snapshot_marker(&snapshot.meta).map_err(ServeError::Wal)?;
        }
        storage.wal.append(&ready.entries).map_err(ServeError::Wal)?;
        if let Some(hard_state) = &ready.hard_state {
            storage.wal.set_hard_state(hard_state).map_err(ServeError::Wal)?;
        }
        if ready.must_sync {
            storage.wal.sync().map_err(ServeError::Wal)?;
        }
        Ok(())
    }

    fn apply_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), ServeError> {
        // `persist` settled any job: no image of the store being replaced.
        assert!(self.snapshot_job.is_none(), "a snapshot job across a restore");
        let (sections, store) = match self.staged_store.take() {
            Some((index, sections, store)) if index == meta.index => (sections, store),
            _ => {
                let snapshot = self.raft.storage().snaps.load(meta.index, meta.term);
                let snapshot = snapshot.map_err(ServeError::Snap)?;
                restore_store(&self.config, &snapshot.data)
                    .map_err(|e| ServeError::Corrupt(format!("snapshot {}: {e}", meta.index)))?
            }
        };
        log::info!("restored the store from the snapshot at index {}", meta.index);
        self.store = store;
        self.sections = sections;
        self.restore_leases();
        self.sync_peers();
        self.applied_index = meta.index;
        self.applied_term = meta.term;
        self.snapshot_index = meta.index;
        Ok(())
    }

    fn apply_entry(&mut self, entry: crate::raft::Entry) {
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        // Membership changes took effect inside Raft; the peer connections
        // follow (members.rs). No-ops change nothing.
        if entry.kind == EntryKind::ConfChange {
            self.sync_peers();
        }
        if entry.kind != EntryKind::Normal || entry.data.is_empty() {
            return;
        }
        let Some(command) = Command::decode(&entry.data) else {
            log::error!("entry {} is not a command; skipped on every member alike", entry.index);
            return;
        };
        let result = self.apply_op(command.op);
        if command.origin == self.config.member_id
            && let Some(pending) = self.pending_writes.remove(&command.seq)
        {
            self.answer(pending.waiter, result);
        }
    }

    fn apply_op(&mut self, op: Op) -> Result<Response, ErrorBody> {
        if let Some(result) = self.apply_lease_op(&op) {
            return result;
        }
        let store = &mut self.store;
        let outcome = match op {
            Op::Put(r) => store.apply_put(&r).map(|a| Applied::Put(a.response)),
            Op::DeleteRange(r) => store.apply_delete_range(&r).map(|a| Applied::Delete(a.response)),
            Op::Txn(r) => store.apply_txn(&r).map(|a| Applied::Txn(a.response)),
            Op::Compact(revision) => store.compact(revision).map(|()| Applied::Compact),
            Op::LeaseGrant { .. } | Op::LeaseRevoke(_) | Op::LeaseRenew(_) => {
                unreachable!("lease entries are applied by apply_lease_op")
            }
            Op::Member(change) => return self.apply_member(change),
        };
        let header = self.header();
        match outcome.map_err(command::store_error)? {
            Applied::Put(r) => Ok(Response::Put(command::put_response(r, header))),
            Applied::Delete(r) => Ok(Response::DeleteRange(command::delete_response(r, header))),
            Applied::Txn(r) => Ok(Response::Txn(command::txn_response(r, header))),
            Applied::Compact => Ok(Response::Compact(proto::CompactionResponse { header })),
        }
    }

    /// Serves the reads whose read index has been applied.
    pub(super) fn serve_ready_reads(&mut self) {
        if self.reads_ready.is_empty() {
            return;
        }
        let applied = self.applied_index;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_ready = waiting;
        self.caught_up_since_start |= !due.is_empty();
        for read in due.into_iter().flat_map(|(_, reads)| reads) {
            let result = self.range_now(&read.request);
            self.answer(read.waiter, result);
        }
    }

    /// Starts a snapshot once one is due (`snapshot_due`), and while one
    /// runs builds its next slice. The image is
    /// that of the store at the applied index when the job starts; it is
    /// built a slice per iteration while newer writes apply (see
    /// `mvcc::LiveImage`), and a helper thread writes and syncs the file.
    /// `finish_snapshot` records it in the WAL and releases the segments it
    /// covers once the file is durable.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), ServeError> {
        self.finish_snapshot(false)?;
        if self.snapshot_job.is_some() {
            self.snapshot_slice();
            return Ok(());
        }
        let since_snapshot = self.applied_index.saturating_sub(self.snapshot_index);
        let wal_segments = self.raft.storage().wal.segment_count();
        if !snapshot_due(since_snapshot, self.config.snapshot_count, wal_segments) {
            return Ok(());
        }
        self.start_snapshot()
    }

    /// Captures the meta and the sections at the applied index, opens the
    /// store's image and the temp file, and starts the writer thread.
    fn start_snapshot(&mut self) -> Result<(), ServeError> {
        let meta = SnapshotMeta {
            index: self.applied_index,
            term: self.applied_term,
            conf_state: self.raft.conf_state().clone(),
        };
        let file = self.raft.storage().snaps.create(&meta).map_err(ServeError::Snap)?;
        let (sender, slices) = mpsc::sync_channel(SNAPSHOT_QUEUE_SLICES);
        let (done, receiver) = mpsc::channel();
        let waker = Arc::clone(&self.snapshot_waker);
        std::thread::Builder::new()
            .name("ember-snapshot".into())
            .spawn(move || {
                let outcome = write_snapshot_file(file, &slices, &waker);
                let _ = done.send(outcome);
                let _ = waker.wake();
            })
            .map_err(|e| ServeError::Io { what: "start the snapshot writer".into(), source: e })?;
        let prefix = image::encode_prefix(&self.sections);
        let bytes = prefix.len() as u64;
        // The queue is empty: the prefix goes in at once, and the next
        // iteration builds the first slice of the image.
        let held = sender.try_send(Slice::Data(prefix)).err().map(|e| match e {
            TrySendError::Full(slice) | TrySendError::Disconnected(slice) => slice,
        });
        self.snapshot_job = Some(SnapshotJob {
            previous_index: self.snapshot_index,
            meta,
            started: Instant::now(),
            bytes,
            image: Some(self.store.begin_image()),
            held,
            sender,
            receiver,
            slices: 0,
            slice_max: Duration::ZERO,
        });
        self.snapshot_index = self.applied_index;
        Ok(())
    }

    /// Hands the writer thread the slice the full queue refused last time,
    /// then builds at most one new slice of the image (or its end) and
    /// queues it. A full queue holds the loop back from building more: the
    /// writer's wake-up brings it back.
    fn snapshot_slice(&mut self) {
        let Some(job) = self.snapshot_job.as_mut() else { return };
        if let Some(slice) = job.held.take() {
            match job.sender.try_send(slice) {
                Ok(()) => {}
                Err(TrySendError::Full(slice)) => {
                    job.held = Some(slice);
                    return;
                }
                // The writer stopped on an error; `finish_snapshot` reports it.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        let Some(live) = job.image.as_mut() else { return };
        let started = Instant::now();
        let slice = match live.next_chunk(&self.store, SNAPSHOT_SLICE_BYTES) {
            Some(bytes) => Slice::Data(bytes),
            None => {
                let live = job.image.take().expect("checked above");
                self.store.end_image(live);
                Slice::End
            }
        };
        let elapsed = started.elapsed();
        let bytes = if let Slice::Data(bytes) = &slice { bytes.len() } else { 0 };
        log::debug!("snapshot slice: {bytes} bytes in {} us", elapsed.as_micros());
        (job.slices, job.bytes) = (job.slices + 1, job.bytes + bytes as u64);
        job.slice_max = job.slice_max.max(elapsed);
        if let Err(TrySendError::Full(slice)) = job.sender.try_send(slice) {
            job.held = Some(slice);
        }
    }

    /// Whether the snapshot job has a slice to build next iteration (the
    /// loop should not sleep).
    pub(super) fn snapshot_wants_iteration(&self) -> bool {
        self.snapshot_job.as_ref().is_some_and(|job| job.image.is_some() && job.held.is_none())
    }

    /// Records a snapshot whose file is durable in the WAL and releases the
    /// segments behind it. With `wait` (before another snapshot is saved,
    /// and at shutdown) it settles the job: one whose image is complete is
    /// waited for and recorded, one still building is abandoned (its temp
    /// file deleted, the previous snapshot stays in charge). Either way no
    /// writer is left in the snapshot directory.
    pub(super) fn finish_snapshot(&mut self, wait: bool) -> Result<(), ServeError> {
        let Some(job) = self.snapshot_job.as_mut() else { return Ok(()) };
        if wait {
            job.settle(&mut self.store);
        }
        let outcome = if wait {
            job.receiver.recv().map_err(|_| TryRecvError::Disconnected)
        } else {
            job.receiver.try_recv()
        };
        let outcome = match outcome {
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => {
                return Err(ServeError::Corrupt("the snapshot writer died".into()));
            }
            Ok(outcome) => outcome,
        };
        let mut job = self.snapshot_job.take().expect("checked above");
        if let Some(live) = job.image.take() {
            self.store.end_image(live);
        }
        match outcome.map_err(ServeError::Snap)? {
            WriteOutcome::Saved => self.record_snapshot(&job),
            WriteOutcome::Abandoned => {
                log::info!("snapshot at index {} abandoned", job.meta.index);
                self.snapshot_index = job.previous_index;
                Ok(())
            }
        }
    }

    /// The file is durable: the WAL's marker names it, then the segments it
    /// covers go.
    fn record_snapshot(&mut self, job: &SnapshotJob) -> Result<(), ServeError> {
        let storage = self.raft.storage_mut();
        storage.wal.save_snapshot_marker(&job.meta).map_err(ServeError::Wal)?;
        storage.wal.sync().map_err(ServeError::Wal)?;
        let released = storage.wal.release_to(job.meta.index).map_err(ServeError::Wal)?;
        log::info!(
            "snapshot at index {} ({} bytes) in {} ms: {} slices, the longest {} us; \
             {released} WAL segments released",
            job.meta.index,
            job.bytes,
            job.started.elapsed().as_millis(),
            job.slices,
            job.slice_max.as_micros()
        );
        Ok(())
    }
}

/// Payload bytes the loop builds per iteration while a snapshot job runs.
/// Building 256 KiB of image takes well under a millisecond on a board
/// (`benches/snapshot.rs`), so a client or a heartbeat never waits on a
/// snapshot for longer than that, and a 14 MB store still takes only about
/// 60 iterations.
pub const SNAPSHOT_SLICE_BYTES: usize = 256 << 10;
/// Slices queued for the writer thread. With the one slice the loop holds
/// back and the one being written, a job holds at most 6 × 256 KiB of
/// payload, whatever the store's size; 4 let the card write while the loop
/// builds the next ones.
pub const SNAPSHOT_QUEUE_SLICES: usize = 4;

/// What the loop hands the writer thread.
enum Slice {
    Data(Vec<u8>),
    /// The payload is complete: finish the file.
    End,
}

/// How a writer thread ended, when not on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOutcome {
    /// The file is durable under its final name.
    Saved,
    /// The loop dropped its end of the queue: the temp file is deleted.
    Abandoned,
}

/// The writer thread: writes each slice as it comes, finishes the file on
/// `End`, deletes it when the loop drops the queue. It wakes the loop after
/// each slice, so a loop that found the queue full builds the next one.
fn write_snapshot_file(
    mut file: SnapWriter,
    slices: &Receiver<Slice>,
    waker: &Waker,
) -> Result<WriteOutcome, SnapError> {
    loop {
        match slices.recv() {
            Ok(Slice::Data(bytes)) => file.write(&bytes)?,
            Ok(Slice::End) => {
                file.finish()?;
                return Ok(WriteOutcome::Saved);
            }
            Err(_) => {
                file.abort()?;
                return Ok(WriteOutcome::Abandoned);
            }
        }
        let _ = waker.wake();
    }
}

/// A snapshot being built by the loop and written by a helper thread.
pub(super) struct SnapshotJob {
    meta: SnapshotMeta,
    /// `Node::snapshot_index` before this job, for when it is abandoned.
    previous_index: u64,
    started: Instant,
    /// Payload bytes built so far.
    bytes: u64,
    /// The store's image; `None` once its end was built. While `Some`, the
    /// store's physical compaction beyond it waits.
    image: Option<LiveImage>,
    /// A slice the full queue refused, sent before any new one is built.
    /// Invariant: when `image` is `None`, `held` is `None` or `End`.
    held: Option<Slice>,
    /// Bounded by `SNAPSHOT_QUEUE_SLICES`; dropping it abandons the file.
    sender: SyncSender<Slice>,
    receiver: Receiver<Result<WriteOutcome, SnapError>>,
    slices: u64,
    /// The longest time one slice took to build, the figure that matters
    /// to the loop's latency.
    slice_max: Duration,
}

impl SnapshotJob {
    /// Makes the writer thread end soon: a complete payload is finished
    /// (the last queued slices are written), an incomplete one abandoned.
    fn settle(&mut self, store: &mut Store) {
        if let Some(live) = self.image.take() {
            store.end_image(live);
            self.held = None;
            // Replacing the sender drops the writer's queue: it abandons.
            self.sender = mpsc::sync_channel(0).0;
        } else if let Some(end) = self.held.take() {
            // Blocks only while the writer drains the queue.
            let _ = self.sender.send(end);
        }
    }
}

enum Applied {
    Put(crate::mvcc::PutResponse),
    Delete(crate::mvcc::DeleteRangeResponse),
    Txn(crate::mvcc::TxnResponse),
    Compact,
}

/// WAL segments (8 MiB each by default) that make a snapshot due before
/// `--snapshot-count` entries. At one sync per write every entry takes a
/// page of log, so 100,000 entries could hold 400 MB of log on disk, all of
/// it replayed through the map at restart; this keeps it near 64 MiB.
pub const SNAPSHOT_WAL_SEGMENTS: usize = 8;

/// Whether a snapshot is due: `--snapshot-count` entries applied since the
/// last one, or a log of `SNAPSHOT_WAL_SEGMENTS` segments. The second needs
/// at least the WAL's catch-up margin of new entries, which a snapshot
/// keeps anyway: without it a log of large entries would be snapshotted
/// again and again without releasing a segment.
fn snapshot_due(since_snapshot: u64, snapshot_count: u64, wal_segments: usize) -> bool {
    since_snapshot >= snapshot_count.max(1)
        || (wal_segments >= SNAPSHOT_WAL_SEGMENTS
            && since_snapshot >= CATCH_UP_MARGIN_ENTRIES_DEFAULT)
}

/// The client's error for a proposal or read Raft refused.
fn proposal_error(error: &RaftError) -> ErrorCode {
    match error {
        RaftError::ProposalDropped | RaftError::NotLeader => ErrorCode::NoLeader,
        RaftError::UncommittedCapExceeded | RaftError::ReadQueueFull => ErrorCode::TooManyProposals,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_makes_a_snapshot_due_before_the_count() {
        assert!(!snapshot_due(9_999, 100_000, 1));
        assert!(snapshot_due(100_000, 100_000, 1));
        assert!(snapshot_due(CATCH_UP_MARGIN_ENTRIES_DEFAULT, 100_000, SNAPSHOT_WAL_SEGMENTS));
        // Too few new entries to release anything: not yet.
        assert!(!snapshot_due(CATCH_UP_MARGIN_ENTRIES_DEFAULT - 1, 100_000, 50));
    }
}
