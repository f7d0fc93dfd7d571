//! Raft in the loop: peer messages and snapshot streams in, the `Ready`
//! cycle in its fixed order, and the committed entries handed to the state
//! machine, whose answers and effects this file carries out.
//!
//! The order of `handle_ready` is the contract of `raft::Ready`, written
//! here and nowhere else: send `messages`; persist the snapshot, entries
//! and hard state and fsync once when `must_sync`; send
//! `persisted_messages`; apply the snapshot and the committed entries;
//! `advance`. Raft hands out only entries that are committed and durable
//! here, so apply never runs ahead of the local log.
//!
//! A snapshot for a follower travels on the transport's stream (chunks,
//! CRC-checked), read from its file as the connection takes it, never
//! inside a message. A received one is written to a file and decoded into
//! a state machine as it arrives (`snapshots::SnapshotInbox`), before Raft
//! sees it: a bad image is dropped there instead of failing when the
//! `Ready` applies it.

use std::time::Instant;

use super::ServeError;
use super::metrics::SLOW_APPLY;
use super::node::Node;
use super::peers::is_member;
use super::snapshots::{Received, restore_from_file};
use crate::proto::{ErrorCode, Response, ResponseOp};
use crate::raft::{Entry, Message, MessageKind, Ready, SnapshotMeta};
use crate::state::{Effect, Restorer};
use crate::transport::StreamEvent;

impl Node {
    /// Steps messages and finished snapshot streams from peers.
    pub(super) fn step_peers(&mut self) {
        let transport = self.peers.transport_mut();
        let received: Vec<(u64, Message)> = transport.drain_received().collect();
        let events: Vec<StreamEvent<Message>> = transport.drain_stream_events().collect();
        for (from, message) in received {
            self.step_from(from, message);
        }
        for event in events {
            let restorer = self.restorer();
            let snaps = &self.raft.storage().snaps;
            if let Some(received) = self.inbox.event(event, snaps, restorer) {
                self.receive_snapshot(received);
            }
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
        if !is_member(self.state.members(), self.raft.conf_state(), from) {
            log::debug!("dropping a message from {from:016x}, not a member");
            return;
        }
        match message.kind {
            MessageKind::RepairAsk => return self.answer_repair_ask(from, &message),
            // Only ever the header of a stream (`receive_snapshot`).
            MessageKind::RepairImage => return,
            _ => {}
        }
        if message.kind == MessageKind::HeartbeatResponse {
            let trips = &mut self.metrics.peer_round_trips;
            trips.heartbeat_answered(from, message.read_round, Instant::now());
        }
        if let Err(e) = self.raft.step(message) {
            log::debug!("dropped a message from {from:016x}: {e:?}");
        }
    }

    /// A received snapshot, decoded and durable under its received name,
    /// goes to Raft; the decoded state waits for the `Ready` that applies it.
    fn receive_snapshot(&mut self, received: Received) {
        if received.header.kind == MessageKind::RepairImage {
            return self.receive_repair_image(received);
        }
        let Some(index) = received.header.snapshot.as_ref().map(|s| s.meta.index) else { return };
        self.inbox.stage(index, received.state);
        self.step_from(received.from, received.header);
    }

    /// Starts the decoding of a snapshot payload at (index, term).
    fn restorer(&self) -> impl FnOnce((u64, u64)) -> Restorer + use<> {
        let identity = self.state.identity();
        let store_config = self.state.store().config();
        let now_ms = self.lease_clock.now_ms(Instant::now());
        move |at| Restorer::new(identity, store_config, at, now_ms)
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
        self.peers.transport_mut().flush(self.poll.registry(), Instant::now());
        self.persist(&ready)?;
        self.send(std::mem::take(&mut ready.persisted_messages));
        if let Some(snapshot) = ready.snapshot.take() {
            self.apply_snapshot(snapshot.meta)?;
        }
        for entry in std::mem::take(&mut ready.committed_entries) {
            self.apply_entry(&entry);
        }
        for state in std::mem::take(&mut ready.read_states) {
            self.proposals.read_confirmed(&state.context, state.index);
        }
        self.raft.advance();
        for (to, success) in std::mem::take(&mut self.snapshot_reports) {
            self.raft.report_snapshot(to, success);
        }
        Ok(())
    }

    /// A new leader: reads waiting on a round of the old one fail now (the
    /// round is gone). Writes wait on: the entry tagged with their origin
    /// and sequence number may still be applied (see
    /// `Proposals::fail_reads`).
    fn note_leader(&mut self, ready: &Ready) {
        let Some(soft) = ready.soft_state else { return };
        if soft.leader_id == self.leader_id {
            return;
        }
        log::info!("leader is now {:016x} (term {})", soft.leader_id, self.term);
        self.metrics.leader_changes_seen_total += u64::from(soft.leader_id != 0);
        let had_leader = self.leader_id != 0;
        self.leader_id = soft.leader_id;
        if self.leader_id == self.config.member_id {
            self.promote_leases();
        }
        if had_leader {
            let failed = self.proposals.fail_reads(ErrorCode::LeaderChanged);
            self.metrics.proposals_failed_total += failed.len() as u64;
            self.clients.answer_all(failed);
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            if message.kind == MessageKind::Snapshot {
                self.send_snapshot(message);
            } else if let Err(e) = self.peers.transport_mut().send(to, &message) {
                log::trace!("message to {to:016x} dropped: {e:?}");
                let heartbeat = message.kind == MessageKind::Heartbeat;
                self.metrics.heartbeat_send_failures_total += u64::from(heartbeat);
            } else if message.kind == MessageKind::Heartbeat {
                let trips = &mut self.metrics.peer_round_trips;
                trips.heartbeat_sent(to, message.read_round, Instant::now());
            }
        }
    }

    /// Streams a snapshot's file to a follower, a chunk at a time as the
    /// connection takes them; the message itself carries no payload.
    fn send_snapshot(&mut self, message: Message) {
        let to = message.to;
        let Some(meta) = message.snapshot.as_ref().map(|s| &s.meta) else { return };
        let payload = self.raft.storage().snaps.open_payload(meta.index, meta.term);
        let started = payload.map_err(|e| e.to_string()).and_then(|payload| {
            let source = Box::new(payload);
            let transport = self.peers.transport_mut();
            transport.start_stream(to, &message, source).map_err(|e| format!("{e:?}"))
        });
        if let Err(e) = started {
            log::debug!("snapshot to {to:016x} not started: {e}");
            self.snapshot_reports.push((to, false));
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
            // The file was written and synced as it arrived; accepting it
            // is a rename.
            storage.snaps.adopt(&snapshot.meta).map_err(ServeError::Snap)?;
            storage.wal.save_snapshot_marker(&snapshot.meta).map_err(ServeError::Wal)?;
        }
        storage.wal.append(&ready.entries).map_err(ServeError::Wal)?;
        let payload_bytes: usize = ready.entries.iter().map(|e| e.data.len()).sum();
        self.metrics.wal_payload_bytes_total += payload_bytes as u64;
        if let Some(hard_state) = &ready.hard_state {
            storage.wal.set_hard_state(hard_state).map_err(ServeError::Wal)?;
        }
        if ready.must_sync {
            let started = Instant::now();
            storage.wal.sync().map_err(ServeError::Wal)?;
            #[cfg(feature = "fault-injection")]
            std::thread::sleep(self.fault_sync_delay);
            let took = started.elapsed();
            self.metrics.wal_fsync.observe(took);
            self.gather.synced(took);
        }
        Ok(())
    }

    /// Settles the snapshot job (see `Snapshots::finish`).
    pub(super) fn finish_snapshot(&mut self, wait: bool) -> Result<(), ServeError> {
        let storage = self.raft.storage_mut();
        self.snapshots.finish(wait, self.state.store_mut(), storage)
    }

    fn apply_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), ServeError> {
        let state = match self.inbox.take_staged(meta.index) {
            Some(state) => state,
            None => {
                let restorer = self.restorer()((meta.index, meta.term));
                restore_from_file(&self.raft.storage().snaps, &meta, restorer)
                    .map_err(|e| ServeError::Corrupt(format!("snapshot {}: {e}", meta.index)))?
            }
        };
        log::info!("restored the store from the snapshot at index {}", meta.index);
        self.state = state;
        self.abort_hashes();
        self.snapshots.restored(meta.index);
        if self.leader_id == self.config.member_id {
            self.promote_leases();
        }
        self.follow_members(None);
        Ok(())
    }

    /// Applies one committed entry: the state machine changes, the client
    /// that waits here (if any) is answered, and its effect carried out.
    fn apply_entry(&mut self, entry: &Entry) {
        let started = Instant::now();
        let now_ms = self.lease_clock.now_ms(started);
        let applied = self.state.apply(entry, now_ms, self.term);
        self.metrics.slow_applies_total += u64::from(started.elapsed() > SLOW_APPLY);
        if let Some(Ok(response)) = applied.answer.as_ref().map(|a| &a.result) {
            self.count_applied(response);
            // Every member built this answer: the reads of this iteration
            // get that much less room.
            self.range_bytes_this_iteration += super::requests::answer_kv_bytes(response);
        }
        if let Some(reply) = applied.answer.and_then(|a| self.proposals.complete(a)) {
            self.gather.answered_write();
            self.clients.answer(reply.0, reply.1);
        }
        match applied.effect {
            None => {}
            Some(Effect::MembersChanged { moved }) => self.follow_members(moved),
            Some(Effect::ConfChanged) => self.follow_members(None),
            Some(Effect::AuthChanged) => self.recheck_watches(),
            Some(Effect::HashCheck(wanted)) => self.begin_check_hash(wanted),
        }
    }

    /// Counts what an applied answer did, as etcd's mvcc counters do:
    /// every put, delete and range, inside transactions too.
    fn count_applied(&mut self, response: &Response) {
        let metrics = &mut self.metrics;
        match response {
            Response::Put(_) => metrics.puts_total += 1,
            Response::DeleteRange(_) => metrics.deletes_total += 1,
            Response::Txn(txn) => {
                metrics.txns_total += 1;
                count_ops(&txn.responses, metrics);
            }
            _ => {}
        }
    }

    /// Peer connections follow the member table and Raft's configuration.
    pub(super) fn follow_members(&mut self, moved: Option<u64>) {
        let registry = self.poll.registry();
        let conf = self.raft.conf_state();
        self.peers.transport_mut().set_removed(self.state.removed_members());
        if !self.state.members().is_empty() {
            let table = postcard::to_allocvec(self.state.members()).expect("records serialize");
            self.peers.transport_mut().set_members_answer(table);
        }
        self.peers.follow(self.state.members(), conf, moved, registry, Instant::now());
    }

    /// Serves the reads whose read index has been applied.
    pub(super) fn serve_ready_reads(&mut self) {
        let due = self.proposals.take_due_reads(self.state.applied_index());
        self.caught_up_since_start |= !due.is_empty();
        for read in due {
            self.serve_range(read);
        }
    }
}

/// Adds the operations of a transaction's branch (and its nested ones).
/// Depth is bounded: a transaction was decoded within the txn budget.
fn count_ops(ops: &[ResponseOp], metrics: &mut super::metrics::LoopMetrics) {
    for op in ops {
        match op {
            ResponseOp::Range(_) => metrics.ranges_total += 1,
            ResponseOp::Put(_) => metrics.puts_total += 1,
            ResponseOp::DeleteRange(_) => metrics.deletes_total += 1,
            ResponseOp::Txn(nested) => count_ops(&nested.responses, metrics),
        }
    }
}
