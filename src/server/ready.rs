//! Raft in the loop: peer messages in, this iteration's proposals and read
//! requests, the `Ready` cycle in its fixed order, apply, snapshots.
//!
//! The order of `handle_ready` is the contract of `raft::Ready`: send
//! `messages`; persist the snapshot, entries and hard state and fsync once
//! when `must_sync`; send `persisted_messages`; apply the snapshot and the
//! committed entries; `advance`. Raft hands out only entries that are
//! committed and durable here, so apply never runs ahead of the local log.
//!
//! Snapshots are taken every `--snapshot-count` applied entries. The image
//! records the store at the applied index, which is the snapshot's index:
//! that is the only place the applied index is persisted. Building the image
//! is memory work done in the loop; writing and syncing its file (tens of
//! megabytes on a card that syncs at a few MB/s) is left to a short-lived
//! helper thread that touches nothing but that file. Only when the file is
//! durable does the loop write the WAL's snapshot marker and release
//! segments, so a crash in between leaves the previous snapshot in charge. A snapshot for a
//! follower travels on the transport's stream (chunks, CRC-checked), not
//! inside a message, and is decoded into a store before Raft sees it.

use std::io::Cursor;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Instant;

use super::ServeError;
use super::command::{self, Command, Op};
use super::node::{MAX_SNAPSHOT_BYTES, Node, PendingWrite, ReadRound, image_of, restore_store};
use crate::proto::{self, ErrorBody, ErrorCode, Response};
use crate::raft::{EntryKind, Message, MessageKind, RaftError, Ready, Snapshot, SnapshotMeta};
use crate::snap::{RETAIN_COUNT_DEFAULT, SnapDir, SnapError};
use crate::transport::StreamEvent;

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
        for (waiter, op) in batch {
            let seq = self.next_seq;
            self.next_seq += 1;
            payloads.push(Command { origin: self.config.member_id, seq, op }.encode());
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
        self.applied_index = meta.index;
        self.applied_term = meta.term;
        self.snapshot_index = meta.index;
        Ok(())
    }

    fn apply_entry(&mut self, entry: crate::raft::Entry) {
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        // Membership changes took effect inside Raft; no-ops change nothing.
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
        let store = &mut self.store;
        let outcome = match op {
            Op::Put(r) => store.apply_put(&r).map(|a| Applied::Put(a.response)),
            Op::DeleteRange(r) => store.apply_delete_range(&r).map(|a| Applied::Delete(a.response)),
            Op::Txn(r) => store.apply_txn(&r).map(|a| Applied::Txn(a.response)),
            Op::Compact(revision) => store.compact(revision).map(|()| Applied::Compact),
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
        for read in due.into_iter().flat_map(|(_, reads)| reads) {
            let result = self.range_now(&read.request);
            self.answer(read.waiter, result);
        }
    }

    /// Starts a snapshot once `--snapshot-count` entries were applied since
    /// the last one. The image is taken here, at the applied index; the
    /// file is written and synced by a helper thread (a slow card must not
    /// stall the loop), and `finish_snapshot` records it in the WAL and
    /// releases the segments it covers once the file is durable.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), ServeError> {
        self.finish_snapshot(false)?;
        let count = self.config.snapshot_count.max(1);
        if self.snapshot_job.is_some() || self.applied_index < self.snapshot_index + count {
            return Ok(());
        }
        let started = Instant::now();
        let meta = SnapshotMeta {
            index: self.applied_index,
            term: self.applied_term,
            conf_state: self.raft.conf_state().clone(),
        };
        let snapshot = Snapshot { meta: meta.clone(), data: image_of(&self.sections, &self.store) };
        let bytes = snapshot.data.len();
        let data_dir = self.config.data_dir.clone();
        let (done, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("ember-snapshot".into())
            .spawn(move || {
                let saved = SnapDir::open(&data_dir, RETAIN_COUNT_DEFAULT)
                    .and_then(|snaps| snaps.save(&snapshot).map(|_| ()));
                let _ = done.send(saved);
            })
            .map_err(|e| ServeError::Io { what: "start the snapshot writer".into(), source: e })?;
        self.snapshot_index = meta.index;
        self.snapshot_job = Some(SnapshotJob { meta, bytes, started, receiver });
        Ok(())
    }

    /// Records a snapshot whose file is durable in the WAL and releases the
    /// segments behind it; with `wait`, waits for the file first.
    pub(super) fn finish_snapshot(&mut self, wait: bool) -> Result<(), ServeError> {
        let Some(job) = &self.snapshot_job else { return Ok(()) };
        let saved = if wait {
            job.receiver.recv().map_err(|_| TryRecvError::Disconnected)
        } else {
            job.receiver.try_recv()
        };
        let saved = match saved {
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => {
                return Err(ServeError::Corrupt("the snapshot writer died".into()));
            }
            Ok(saved) => saved,
        };
        let job = self.snapshot_job.take().expect("checked above");
        saved.map_err(ServeError::Snap)?;
        let storage = self.raft.storage_mut();
        storage.wal.save_snapshot_marker(&job.meta).map_err(ServeError::Wal)?;
        storage.wal.sync().map_err(ServeError::Wal)?;
        let released = storage.wal.release_to(job.meta.index).map_err(ServeError::Wal)?;
        log::info!(
            "snapshot at index {} ({} bytes) in {} ms; {released} WAL segments released",
            job.meta.index,
            job.bytes,
            job.started.elapsed().as_millis()
        );
        Ok(())
    }
}

/// A snapshot whose file a helper thread is writing.
pub(super) struct SnapshotJob {
    meta: SnapshotMeta,
    bytes: usize,
    started: Instant,
    receiver: Receiver<Result<(), SnapError>>,
}

enum Applied {
    Put(crate::mvcc::PutResponse),
    Delete(crate::mvcc::DeleteRangeResponse),
    Txn(crate::mvcc::TxnResponse),
    Compact,
}

/// The client's error for a proposal or read Raft refused.
fn proposal_error(error: &RaftError) -> ErrorCode {
    match error {
        RaftError::ProposalDropped | RaftError::NotLeader => ErrorCode::NoLeader,
        RaftError::UncommittedCapExceeded | RaftError::ReadQueueFull => ErrorCode::TooManyProposals,
        _ => ErrorCode::Internal,
    }
}
