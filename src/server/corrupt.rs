//! Keyspace hashes at the node, and this member's part in the corruption
//! check (`state::corrupt` decides it).
//!
//! * A client's `HashKv` is answered once its sliced hash is done
//!   (`hashes.rs`).
//! * Checks are opened through the log: by every member once after it
//!   starts and has a leader (the entry applies after everything the member
//!   missed, so it hashes a caught-up store), by the leader every
//!   `--corrupt-check-time`, and by the leader after each compaction, at
//!   the compacted revision.
//! * When a check entry applies, this member hashes its store at the
//!   check's revision, a slice per iteration, and proposes its report. A
//!   hash a compaction stopped reports nothing: the next check asks again.
//! * While a `Corrupt` alarm is raised for this member, it refuses the
//!   requests that read or change the keyspace with etcd's `corrupt
//!   cluster`; the others go on serving.
//! * A restarted member refuses them too, with `Unhealthy` (retryable),
//!   until its start-up check has judged it or, when no majority answers,
//!   `STARTUP_CHECK_WAIT_ELECTIONS` election timeouts passed: as etcd,
//!   it checks before it serves. A fresh member has nothing to check.

use std::time::{Duration, Instant};

use super::hashes::{Finished, HashFor};
use super::members::PUBLISH_RETRY;
use super::node::Node;
use super::proposals::Waiter;
use crate::mvcc::KvHash;
use crate::proto::{self, ErrorBody, ErrorCode, Request, Response};
use crate::state::{AlarmKind, CorruptOp, HashWanted, Op, command};

impl Node {
    /// Begins the hash a client asked for; it is answered when done.
    pub(super) fn hash_kv_request(&mut self, waiter: Waiter, revision: i64) {
        let begun = self.state.store().begin_hash(revision.max(0) as u64);
        let started = begun
            .map_err(command::store_error)
            .and_then(|hash| self.hashes.start_client(waiter, hash));
        if let Err(refused) = started {
            self.clients.answer(waiter, Err(refused));
        }
    }

    /// One slice of the hashes in flight; answers or reports one that ended.
    pub(super) fn step_hashes(&mut self) {
        if let Some(finished) = self.hashes.step(self.state.store()) {
            self.hash_finished(finished);
        }
    }

    /// The store was replaced: every hash in flight stops.
    pub(super) fn abort_hashes(&mut self) {
        for finished in self.hashes.abort_all() {
            self.hash_finished(finished);
        }
    }

    /// A check entry applied: hash the store at its revision.
    pub(super) fn begin_check_hash(&mut self, wanted: HashWanted) {
        match self.state.store().begin_hash(wanted.revision) {
            Ok(hash) => self.hashes.start_check(wanted.check_index, hash),
            // The entry was checked against this very store when applied.
            Err(e) => log::warn!("corruption check {}: no hash: {e:?}", wanted.check_index),
        }
    }

    /// Proposes the checks that are due: the start-up check, and on the
    /// leader the periodic one and the one after a compaction.
    pub(super) fn maybe_propose_checks(&mut self, now: Instant) {
        let clock = &mut self.check_clock;
        let mut revisions = Vec::new();
        if !clock.startup_proposed && self.leader_id != 0 && now >= clock.next_try {
            clock.startup_proposed = true;
            revisions.push(0);
        }
        if self.leader_id == self.config.member_id {
            if clock.next_periodic.is_some_and(|next| now >= next) {
                // From now, not from when it was due: a loop that was held
                // up proposes one check, not a burst of them.
                let period = Duration::from_millis(self.config.corrupt_check_time_ms);
                clock.next_periodic = Some(now + period);
                revisions.push(0);
            }
            let compacted = self.state.store().compact_revision();
            if compacted > clock.compact_checked {
                clock.compact_checked = compacted;
                revisions.push(compacted);
            }
        }
        if revisions.is_empty() {
            return;
        }
        let ops = revisions.iter().map(|&revision| Op::Corrupt(CorruptOp::Check { revision }));
        if let Err(e) = self.proposals.propose_unwaited(&mut self.raft, ops.collect()) {
            log::debug!("proposing a corruption check: {e:?}");
            self.check_clock.startup_proposed &= !revisions.contains(&0);
            self.check_clock.next_try = now + PUBLISH_RETRY;
        }
    }

    /// `corrupt cluster` while a `Corrupt` alarm is raised for this member
    /// and `request` reads or changes the keyspace or its leases.
    pub(super) fn refuse_if_corrupt(&self, request: &Request) -> Result<(), ErrorBody> {
        match is_keyspace(request) {
            true => self.refuse_corrupt_read(),
            false => Ok(()),
        }
    }

    /// `corrupt cluster` while a `Corrupt` alarm is raised for this member.
    pub(super) fn refuse_corrupt_read(&self) -> Result<(), ErrorBody> {
        match self.is_corrupt() {
            true => Err(ErrorBody::new(ErrorCode::Corrupt)),
            false => Ok(()),
        }
    }

    /// Holds a keyspace request while the start-up check has yet to judge
    /// this restarted member (`None`: held, or refused when too many wait);
    /// any other request comes back to be handled now.
    pub(super) fn hold_until_checked(
        &mut self,
        waiter: Waiter,
        request: Request,
    ) -> Option<(Waiter, Request)> {
        if self.startup_gate.closed.is_none() || !is_keyspace(&request) {
            return Some((waiter, request));
        }
        if !self.startup_gate.hold(waiter, request) {
            let refused = ErrorBody::with_message(
                ErrorCode::Unhealthy,
                "ember: this member restarted and is still checking its store against its \
                 peers; retry shortly or at another member",
            );
            self.clients.answer(waiter, Err(refused));
        }
        None
    }

    /// Opens the start-up gate once a check opened after the start judged
    /// this member, or once its wait ran out; logs which.
    pub(super) fn follow_startup_gate(&mut self, now: Instant) {
        let Some(closed) = &self.startup_gate.closed else { return };
        let member_id = self.config.member_id;
        let is_voter = self.raft.conf_state().is_voter(member_id);
        let check = self.state.open_check();
        let judged = check.filter(|c| c.has_judged(member_id, is_voter, closed.after_index));
        let waited_ms = now.saturating_duration_since(closed.since).as_millis();
        if let Some(check) = judged {
            let verdict = if self.is_corrupt() { "found corrupt" } else { "sound" };
            log::info!(
                "start-up check {}: this member is {verdict}; serving its store after {waited_ms} ms",
                check.index
            );
        } else if now >= closed.deadline {
            log::warn!(
                "start-up check not decided within {waited_ms} ms (no majority answered): \
                 serving unchecked; the next check will judge this member"
            );
        } else {
            return;
        }
        self.startup_gate.closed = None;
        // Handled now as if just read: refused if it was found corrupt.
        for (waiter, request) in std::mem::take(&mut self.startup_gate.held) {
            self.handle_request(waiter, request);
        }
    }

    pub(super) fn is_corrupt(&self) -> bool {
        self.state.alarms().is_raised_for(self.config.member_id, AlarmKind::Corrupt)
    }

    fn hash_finished(&mut self, finished: Finished) {
        match finished.purpose {
            HashFor::Client(waiter) => {
                let answer = match finished.hash {
                    Some(hash) => Ok(self.hash_response(hash)),
                    None => Err(ErrorBody::new(ErrorCode::HashAborted)),
                };
                self.clients.answer(waiter, answer);
            }
            HashFor::Check { check_index } => self.report_check(check_index, finished.hash),
        }
    }

    fn hash_response(&self, hash: KvHash) -> Response {
        Response::HashKv(proto::HashKvResponse {
            header: self.header(),
            hash: hash.hash,
            compact_revision: i64::try_from(hash.compact_revision).unwrap_or(i64::MAX),
            hash_revision: i64::try_from(hash.hash_revision).unwrap_or(i64::MAX),
        })
    }

    fn report_check(&mut self, check_index: u64, hash: Option<KvHash>) {
        let Some(hash) = hash else {
            log::info!("corruption check {check_index}: the store changed during the hash");
            return;
        };
        // One line per check and member: every five minutes by default.
        log::info!(
            "corruption check {check_index}: hash {:08x} at revision {} (compact revision {})",
            hash.hash,
            hash.hash_revision,
            hash.compact_revision
        );
        let member_id = self.config.member_id;
        let report = CorruptOp::Report { check_index, member_id, hash: hash.hash };
        if let Err(e) = self.proposals.propose_unwaited(&mut self.raft, vec![Op::Corrupt(report)]) {
            log::info!("corruption check {check_index}: report not proposed: {e:?}");
        }
    }
}

/// Whether `request` reads or changes the keyspace or its leases.
fn is_keyspace(request: &Request) -> bool {
    matches!(
        request,
        Request::Range(_)
            | Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Txn(_)
            | Request::Compact(_)
            | Request::WatchCreate(_)
            | Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
    )
}

#[cfg(feature = "fault-injection")]
impl Node {
    /// Flips the value `EMBER_FAULT_FLIP_VALUE` names, once it exists.
    pub(super) fn maybe_flip_value(&mut self) {
        let Some(key) = &self.fault_flip_key else { return };
        if self.state.store_mut().fault_flip_value(key) {
            log::warn!("fault injection: flipped a bit of {}", String::from_utf8_lossy(key));
            self.fault_flip_key = None;
        }
    }
}
