//! Where each valid client request goes: writes to this iteration's
//! proposal batch, linearizable reads to its ReadIndex round, watches to
//! their connection, member and lease requests to their drivers, and what
//! this member answers from its own state (serializable reads, status,
//! member list, hash) at once.

use std::time::Instant;

use super::node::Node;
use super::proposals::{QueuedWrite, ReadWait, Waiter};
use crate::mvcc::{RANGE_KV_OVERHEAD_BYTES, RangeBuild, RangeStep};
use crate::proto::http::{Health, UnhealthyReason};
use crate::proto::{self, ErrorBody, ErrorCode, Request, Response};
use crate::state::command::{self, op_of};

/// Bytes of key-values the ranges of one loop iteration may build
/// together: one range of 16 MiB takes some 10-20 ms to build on a board,
/// so a burst of them is spread over iterations instead of holding one.
pub const RANGE_BYTES_PER_ITERATION: usize = 8 << 20;

/// Keys one step of a range walks, and about the bytes it holds, before
/// the range waits for the next loop iteration: a sixteenth of the 16 MiB
/// that took 10-20 ms to build in one go, so no range, however large,
/// holds the loop for more than about a millisecond of building.
pub const RANGE_STEP_KEYS_MAX: usize = 4096;
pub const RANGE_STEP_BYTES_MAX: usize = 1 << 20;

/// The key-values an answer holds, each counted as a range counts it:
/// what building it cost, for the per-iteration budget.
pub(super) fn answer_kv_bytes(response: &Response) -> usize {
    match response {
        Response::Range(r) => kvs_bytes(&r.kvs),
        Response::Put(r) => kvs_bytes(r.prev_kv.as_slice()),
        Response::DeleteRange(r) => kvs_bytes(&r.prev_kvs),
        Response::Txn(r) => txn_kv_bytes(r),
        _ => 0,
    }
}

/// Depth is bounded: a transaction was decoded within the txn budget.
fn txn_kv_bytes(txn: &proto::TxnResponse) -> usize {
    let op_bytes = |op: &proto::ResponseOp| match op {
        proto::ResponseOp::Range(r) => kvs_bytes(&r.kvs),
        proto::ResponseOp::Put(r) => kvs_bytes(r.prev_kv.as_slice()),
        proto::ResponseOp::DeleteRange(r) => kvs_bytes(&r.prev_kvs),
        proto::ResponseOp::Txn(nested) => txn_kv_bytes(nested),
    };
    txn.responses.iter().map(op_bytes).sum()
}

fn kvs_bytes(kvs: &[proto::KeyValue]) -> usize {
    kvs.iter().map(|kv| kv.key.len() + kv.value.len() + RANGE_KV_OVERHEAD_BYTES).sum()
}

/// What a range answer holds besides its key-values: the response header's
/// four varints, `more`, `count` and the list's length, rounded up.
const RANGE_ENVELOPE_BYTES: usize = 128;

impl Node {
    pub(super) fn handle_request(&mut self, waiter: Waiter, request: Request) {
        if let Err(refused) = self.admit(waiter, &request) {
            return self.clients.answer(waiter, Err(refused));
        }
        if let Err(refused) = self.refuse_if_corrupt(&request) {
            return self.clients.answer(waiter, Err(refused));
        }
        let Some((waiter, request)) = self.hold_until_checked(waiter, request) else { return };
        if let Some(op) = op_of(&request) {
            let caller = self.caller_of(waiter);
            let answer_max_bytes = self.clients.response_max_bytes(waiter) as u64;
            let write = QueuedWrite { waiter, op, caller, answer_max_bytes };
            return self.proposals.queue_write_within(write);
        }
        match request {
            Request::Range(request) if request.serializable && self.caught_up_since_start => {
                self.serve_range(ReadWait { waiter, request });
            }
            Request::Range(request) => self.proposals.queue_read(ReadWait { waiter, request }),
            Request::WatchCreate(r) => {
                let header = self.header();
                self.busy |= self.clients.create_watch(waiter, r, self.state.store(), header);
            }
            Request::WatchCancel(r) => {
                let header = self.header();
                self.clients.cancel_watch(waiter, r.watch_id, header);
            }
            Request::WatchProgress => {
                let header = self.header();
                self.clients.watch_progress(waiter, self.state.store(), header);
            }
            Request::MemberAdd(_)
            | Request::MemberRemove(_)
            | Request::MemberUpdate(_)
            | Request::MemberPromote(_) => self.member_request(waiter, request),
            Request::MemberList(_) => {
                let members = self.member_list();
                let response = proto::MemberListResponse { header: self.header(), members };
                self.clients.answer(waiter, Ok(Response::MemberList(response)));
            }
            Request::Status => {
                let status = self.status();
                self.clients.answer(waiter, Ok(Response::Status(status)));
            }
            lease @ (Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
            | Request::LeaseKeepAlive(_)
            | Request::LeaseTimeToLive(_)
            | Request::LeaseLeases) => self.lease_request(waiter, lease),
            // Local, like a serializable read: comparing members is the point.
            Request::HashKv(r) => self.hash_kv_request(waiter, r.revision),
            Request::Alarm(r) => self.alarm_request(waiter, r),
            Request::Snapshot(r) => self.snapshot_request(waiter, r.stream_id),
            Request::Defragment => {
                let applied = self.state.applied_index();
                if let Err(refused) = self.backups.wait(waiter, true, applied, Instant::now()) {
                    self.clients.answer(waiter, Err(refused));
                }
            }
            Request::MoveLeader(r) => self.move_leader(waiter, r.target_id),
            other => {
                if !self.auth_request(waiter, other) {
                    self.clients.answer(waiter, Err(ErrorBody::new(ErrorCode::Unsupported)));
                }
            }
        }
    }

    /// Starts a range if its connection has room for the answer;
    /// otherwise holds it until that connection's answers drain, so a
    /// client that pipelines reads and does not take the answers makes
    /// them wait instead of making the node's memory grow. Reading later
    /// than asked is still linearizable: the state only moves forward.
    ///
    /// One range is built at a time, one step per iteration
    /// (`RANGE_STEP_KEYS_MAX`, `RANGE_STEP_BYTES_MAX`), at the revision it
    /// started at; the ranges of one iteration build at most
    /// `RANGE_BYTES_PER_ITERATION` together. The rest wait their turn.
    pub(super) fn serve_range(&mut self, read: ReadWait) {
        let over = self.range_bytes_this_iteration >= RANGE_BYTES_PER_ITERATION;
        if over || self.range_building.is_some() || !self.clients.has_room(read.waiter) {
            self.deferred_reads.push_back(read);
            return;
        }
        let max_bytes = self.clients.response_max_bytes(read.waiter);
        // Room for the header, `more` and `count` around the key-values.
        let kvs_max_bytes = max_bytes.saturating_sub(RANGE_ENVELOPE_BYTES);
        let request = command::range_request(&read.request);
        // A read that waited for its round while this member was found
        // corrupt is refused too: no client sees its data after that.
        let started = self
            .check_read(read.waiter, &read.request)
            .and_then(|()| self.refuse_corrupt_read())
            .and_then(|()| {
                self.state
                    .store()
                    .range_start(&request, kvs_max_bytes)
                    .map_err(command::store_error)
            });
        match started {
            Ok(build) => self.step_range(read, build),
            Err(refused) => self.clients.answer(read.waiter, Err(refused)),
        }
    }

    /// Builds one more step of a range; answers it once complete, or keeps
    /// it for the next iteration.
    fn step_range(&mut self, read: ReadWait, mut build: RangeBuild) {
        if let Err(refused) = self.refuse_corrupt_read() {
            return self.clients.answer(read.waiter, Err(refused));
        }
        let before_bytes = build.built_bytes();
        let store = self.state.store();
        let step = store.range_step(&mut build, RANGE_STEP_KEYS_MAX, RANGE_STEP_BYTES_MAX);
        self.range_bytes_this_iteration += build.built_bytes().saturating_sub(before_bytes);
        let result = match step {
            Ok(RangeStep::More) => {
                self.range_building = Some((read, build));
                return;
            }
            Ok(RangeStep::Done(found)) => {
                Ok(Response::Range(command::range_response(found, self.header())))
            }
            Ok(RangeStep::TooLarge) => Err(ErrorBody::new(ErrorCode::ResponseTooLarge)),
            Err(e) => Err(command::store_error(e)),
        };
        self.metrics.ranges_total += u64::from(result.is_ok());
        self.clients.answer(read.waiter, result);
    }

    /// The range being built takes its next step, then the ranges held
    /// for room are served where their connection has it now, oldest first.
    pub(super) fn serve_deferred_reads(&mut self) {
        if let Some((read, build)) = self.range_building.take() {
            self.step_range(read, build);
        }
        let held = std::mem::take(&mut self.deferred_reads);
        for read in held {
            self.serve_range(read);
        }
    }

    /// Stream 0 waits for a snapshot covering the state applied now and
    /// opens a stream over it; any other names a stream to continue.
    fn snapshot_request(&mut self, waiter: Waiter, stream_id: u64) {
        let now = Instant::now();
        if stream_id == 0 {
            let applied = self.state.applied_index();
            if let Err(refused) = self.backups.wait(waiter, false, applied, now) {
                self.clients.answer(waiter, Err(refused));
            }
            return;
        }
        let result = self.backups.next(waiter, stream_id, self.header(), now);
        self.clients.answer(waiter, result);
    }

    /// Starts Raft's leadership transfer to `target_id` on the leader; the
    /// answer comes once the target leads (`LeaderMoves`).
    fn move_leader(&mut self, waiter: Waiter, target_id: u64) {
        if self.leader_id != self.config.member_id {
            return self.clients.answer(waiter, Err(ErrorBody::new(ErrorCode::NotLeader)));
        }
        if target_id == 0 || !self.raft.conf_state().voters.contains(&target_id) {
            let refused = ErrorBody::new(ErrorCode::BadLeaderTransferee);
            return self.clients.answer(waiter, Err(refused));
        }
        if target_id == self.config.member_id {
            return self.clients.answer(waiter, Ok(Response::MoveLeader(self.header())));
        }
        if let Err(e) = self.raft.transfer_leader(target_id) {
            log::warn!("move-leader to {target_id:016x} refused by raft: {e}");
            let refused = ErrorBody::new(ErrorCode::NotLeader);
            return self.clients.answer(waiter, Err(refused));
        }
        self.busy = true;
        if let Err(refused) = self.leader_moves.wait(waiter, target_id, Instant::now()) {
            self.clients.answer(waiter, Err(refused));
        }
    }

    pub(super) fn health(&self) -> Health {
        if self.stopping {
            Health::Unhealthy(UnhealthyReason::Stopping)
        } else if self.leader_id == 0 {
            Health::Unhealthy(UnhealthyReason::NoLeader)
        } else if let Some(reason) = self.alarm_health() {
            Health::Unhealthy(reason)
        } else {
            Health::Healthy
        }
    }

    fn status(&self) -> proto::StatusResponse {
        let status = self.raft.status();
        let compact_revision = self.state.store().compact_revision();
        proto::StatusResponse {
            header: self.header(),
            version: self.version.to_string(),
            data_size_bytes: self.state.usage().size_bytes(),
            leader_id: status.leader_id,
            raft_term: status.term,
            raft_commit_index: status.commit,
            raft_applied_index: self.state.applied_index(),
            compact_revision: i64::try_from(compact_revision).unwrap_or(i64::MAX),
            is_learner: self.raft.conf_state().learners.contains(&self.config.member_id),
            errors: self.alarm_errors(),
            cluster_version: self
                .state
                .cluster_version()
                .map(|v| v.release_text())
                .unwrap_or_default(),
        }
    }
}
