//! Leases in the loop: client requests, apply of the lease entries, expiry
//! on the leader's ticks, and the lease part of the snapshot sections.
//!
//! What goes through Raft and what does not:
//! - Grant and revoke are entries (`Op::LeaseGrant`, `Op::LeaseRevoke`).
//!   The member that takes the grant settles its id (a random nonzero id
//!   when the client sent 0) and its TTL (raised to the minimum) before
//!   proposing, so apply is the same on every member. Apply checks what
//!   must be checked alike everywhere: a grant of an existing id fails with
//!   `LeaseExists`, a put or txn naming a lease that does not exist fails
//!   with `LeaseNotFound`.
//! - Expiry: only the leader compares deadlines with its clock, on ticks,
//!   and proposes a revoke for each expired lease, at most
//!   `REVOKE_RATE_PER_SEC`. A member that becomes leader first gives every
//!   lease its full TTL (`promote`): it cannot know when the last renewal
//!   reached the old leader. Followers never expire anything.
//! - Keep-alive at the leader renews its deadline in memory and answers at
//!   once: a renewal is not replicated state, and an entry per keep-alive
//!   would cost an fsync on every member. At a follower the renewal must
//!   still reach the leader. The follower proposes an `Op::LeaseRenew`
//!   entry, and every member renews the lease when it applies it. That
//!   costs one entry per follower keep-alive, but reuses the one path a
//!   follower already has to the leader (proposal forwarding), survives a
//!   leader change like any write, and answers only once the renewal is
//!   committed, which is when a later leader is sure to know the lease.
//! - Time-to-live and the lease list are answered from this member's table;
//!   as in etcd, a lease that does not exist has a time-to-live of -1.
//!   A follower's deadlines move only on grants, `LeaseRenew` entries and
//!   its own promotion, so its remaining TTL is a lower bound of the
//!   leader's (0 once its local deadline passed, never -1 while the lease
//!   exists); ask the leader for the exact figure.
//!
//! The cap (`--max-leases`) is checked where a grant is asked for, against
//! the leases applied there: two members taking grants at the same moment
//! may overshoot it by the grants in flight, which the uncommitted-log
//! bound of Raft limits. Checking at apply instead would make the outcome
//! depend on each member's flag.

use std::time::Instant;

use super::command::{Command, Op};
use super::config::Config;
use super::image::{LeaseRecord, Sections};
use super::node::{Node, Waiter};
use crate::lease::{self, LeaseError, LeaseTable};
use crate::mvcc;
use crate::proto::{self, ErrorBody, ErrorCode, Request, Response};

/// Random ids tried before a grant gives up: with 63-bit ids and at most a
/// million leases, a second collision in a row is already unheard of.
const FRESH_ID_ATTEMPTS: usize = 8;

/// The lease table with the node's clock and limits.
pub struct NodeLeases {
    pub(super) table: LeaseTable,
    /// The zero of the table's millisecond clock.
    epoch: Instant,
    min_ttl_secs: i64,
    /// Invariant: ≥ 1.
    max_leases: usize,
    /// Invariant: ≥ 1; `REVOKE_RATE_PER_SEC` spread over the ticks of a second.
    revokes_per_tick: usize,
    /// How long an expired lease waits before its revoke is proposed again.
    revoke_retry_ms: u64,
    /// splitmix64 state for ids chosen here.
    rng: u64,
}

impl NodeLeases {
    pub(super) fn new(config: &Config, sections: &Sections, now: Instant) -> NodeLeases {
        let ticks_per_sec = (1000 / config.heartbeat_interval_ms.max(1)).max(1);
        let since_epoch =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut leases = NodeLeases {
            table: LeaseTable::new(),
            epoch: now,
            min_ttl_secs: lease::min_ttl_secs(config.election_timeout_ms),
            max_leases: (config.max_leases as usize).max(1),
            revokes_per_tick: (lease::REVOKE_RATE_PER_SEC / ticks_per_sec).max(1) as usize,
            revoke_retry_ms: 2 * config.election_timeout_ms,
            rng: config.member_id ^ since_epoch.as_nanos() as u64,
        };
        leases.restore(sections, now);
        leases
    }

    pub(super) fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The table of a snapshot's sections, every lease with its full TTL.
    pub(super) fn restore(&mut self, sections: &Sections, now: Instant) {
        let records = sections.leases.iter().map(|r| (r.id, r.ttl_secs));
        self.table = LeaseTable::from_records(records, self.now_ms(now));
    }

    /// A positive id not in the table.
    fn fresh_id(&mut self) -> Option<i64> {
        for _ in 0..FRESH_ID_ATTEMPTS {
            let id = (splitmix64(&mut self.rng) >> 1) as i64;
            if id != 0 && !self.table.contains(id) {
                return Some(id);
            }
        }
        None
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn lease_error(error: LeaseError) -> ErrorBody {
    ErrorBody::new(match error {
        LeaseError::NotFound => ErrorCode::LeaseNotFound,
        LeaseError::Exists => ErrorCode::LeaseExists,
        LeaseError::TtlTooLarge => ErrorCode::LeaseTtlTooLarge,
    })
}

impl Node {
    fn is_leader(&self) -> bool {
        self.leader_id == self.config.member_id
    }

    /// The five lease requests; anything else is a bug of the caller.
    pub(super) fn lease_request(&mut self, waiter: Waiter, request: Request) {
        let now = Instant::now();
        let result = match request {
            Request::LeaseGrant(r) => self.grant_request(waiter, r),
            Request::LeaseRevoke(r) => {
                self.unproposed.push((waiter, Op::LeaseRevoke(r.id)));
                Ok(())
            }
            Request::LeaseKeepAlive(r) => self.keep_alive_request(waiter, r.id, now),
            Request::LeaseTimeToLive(r) => return self.answer(waiter, self.time_to_live(r, now)),
            Request::LeaseLeases => {
                let leases = self.leases.table.ids().collect();
                let response = proto::LeaseLeasesResponse { header: self.header(), leases };
                return self.answer(waiter, Ok(Response::LeaseLeases(response)));
            }
            other => unreachable!("{} is not a lease request", other.name()),
        };
        if let Err(body) = result {
            self.answer(waiter, Err(body));
        }
    }

    /// Settles id and TTL and queues the grant for proposal.
    fn grant_request(
        &mut self,
        waiter: Waiter,
        r: proto::LeaseGrantRequest,
    ) -> Result<(), ErrorBody> {
        let ttl_secs = LeaseTable::effective_ttl_secs(r.ttl_secs, self.leases.min_ttl_secs)
            .map_err(lease_error)?;
        if self.leases.table.len() >= self.leases.max_leases {
            let message =
                format!("ember: too many leases (--max-leases {})", self.leases.max_leases);
            return Err(ErrorBody::with_message(ErrorCode::TooManyLeases, message));
        }
        let id = match r.id {
            0 => self.leases.fresh_id().ok_or_else(|| ErrorBody::new(ErrorCode::LeaseExists))?,
            id if self.leases.table.contains(id) => return Err(lease_error(LeaseError::Exists)),
            id => id,
        };
        self.unproposed.push((waiter, Op::LeaseGrant { id, ttl_secs }));
        Ok(())
    }

    /// Renews at once on the leader; elsewhere proposes a renew entry.
    fn keep_alive_request(
        &mut self,
        waiter: Waiter,
        id: i64,
        now: Instant,
    ) -> Result<(), ErrorBody> {
        if self.leader_id == 0 {
            return Err(ErrorBody::new(ErrorCode::NoLeader));
        }
        if !self.is_leader() {
            self.unproposed.push((waiter, Op::LeaseRenew(id)));
            return Ok(());
        }
        let now_ms = self.leases.now_ms(now);
        let ttl_secs = self.leases.table.renew(id, now_ms).map_err(lease_error)?;
        let header = self.header();
        let response = proto::LeaseKeepAliveResponse { header, id, ttl_secs };
        self.answer(waiter, Ok(Response::LeaseKeepAlive(response)));
        Ok(())
    }

    fn time_to_live(
        &self,
        r: proto::LeaseTimeToLiveRequest,
        now: Instant,
    ) -> Result<Response, ErrorBody> {
        let table = &self.leases.table;
        let now_ms = self.leases.now_ms(now);
        // As etcd: an unknown (expired, revoked) lease answers a TTL of -1.
        // A follower never decides expiry, so a lease it still has is alive
        // as far as it knows, even past its local deadline: 0, not -1.
        let ttl_secs = match table.remaining_secs(r.id, now_ms) {
            None => -1,
            Some(left) if self.is_leader() => left,
            Some(left) => left.max(0),
        };
        let granted_ttl_secs = table.ttl_secs(r.id).unwrap_or_default();
        let keys = if r.keys { self.store.lease_keys(r.id) } else { Vec::new() };
        let header = self.header();
        let response =
            proto::LeaseTimeToLiveResponse { header, id: r.id, ttl_secs, granted_ttl_secs, keys };
        Ok(Response::LeaseTimeToLive(response))
    }

    /// Applies a lease entry, or refuses a put or txn that names a lease
    /// that does not exist; `None` for an op with nothing to do here.
    pub(super) fn apply_lease_op(&mut self, op: &Op) -> Option<Result<Response, ErrorBody>> {
        let now_ms = self.leases.now_ms(Instant::now());
        let result = match *op {
            Op::LeaseGrant { id, ttl_secs } => self.apply_grant(id, ttl_secs, now_ms),
            Op::LeaseRevoke(id) => self.apply_revoke(id),
            Op::LeaseRenew(id) => self.leases.table.renew(id, now_ms).map(|ttl_secs| {
                let header = self.header();
                Response::LeaseKeepAlive(proto::LeaseKeepAliveResponse { header, id, ttl_secs })
            }),
            Op::Put(_) | Op::Txn(_) => {
                let missing = op_leases(&self.store, op)
                    .into_iter()
                    .any(|id| !self.leases.table.contains(id));
                return missing.then(|| Err(lease_error(LeaseError::NotFound)));
            }
            Op::DeleteRange(_) | Op::Compact(_) | Op::Member(_) => return None,
        };
        Some(result.map_err(lease_error))
    }

    fn apply_grant(&mut self, id: i64, ttl_secs: i64, now_ms: u64) -> Result<Response, LeaseError> {
        self.leases.table.grant(id, ttl_secs, now_ms)?;
        // The table's TTL, so the snapshot records what the table holds.
        let ttl_secs = self.leases.table.ttl_secs(id).expect("granted above");
        let records = &mut self.sections.leases;
        if let Err(at) = records.binary_search_by_key(&id, |r| r.id) {
            records.insert(at, LeaseRecord { id, ttl_secs });
        }
        let header = self.header();
        Ok(Response::LeaseGrant(proto::LeaseGrantResponse { header, id, ttl_secs }))
    }

    /// Removes the lease and deletes its keys in one revision.
    fn apply_revoke(&mut self, id: i64) -> Result<Response, LeaseError> {
        self.leases.table.revoke(id)?;
        let records = &mut self.sections.leases;
        if let Ok(at) = records.binary_search_by_key(&id, |r| r.id) {
            records.remove(at);
        }
        let deleted = self.store.apply_revoke_lease(id).response.deleted;
        log::debug!("lease {id:016x} revoked; {deleted} keys deleted");
        let header = self.header();
        Ok(Response::LeaseRevoke(proto::LeaseRevokeResponse { header }))
    }

    /// On the leader: proposes the revocation of expired leases, at most
    /// the per-tick share of the revoke rate.
    pub(super) fn tick_leases(&mut self, now: Instant) {
        if !self.is_leader() {
            return;
        }
        let now_ms = self.leases.now_ms(now);
        let (max, retry_ms) = (self.leases.revokes_per_tick, self.leases.revoke_retry_ms);
        let expired = self.leases.table.take_expired(now_ms, max, retry_ms);
        if expired.is_empty() {
            return;
        }
        let mut payloads = Vec::with_capacity(expired.len());
        for id in &expired {
            let seq = self.next_seq;
            self.next_seq += 1;
            let op = Op::LeaseRevoke(*id);
            payloads.push(Command { origin: self.config.member_id, seq, op }.encode());
        }
        log::info!("proposing the revocation of {} expired leases", expired.len());
        if let Err(e) = self.raft.propose_batch(payloads) {
            // They are proposed again after `revoke_retry_ms`.
            log::warn!("revocation of expired leases not proposed: {e:?}");
        }
    }

    /// This member just became leader: every lease gets its full TTL.
    pub(super) fn promote_leases(&mut self) {
        let now_ms = self.leases.now_ms(Instant::now());
        self.leases.table.promote(now_ms);
        log::info!("leader now: {} leases renewed to their full TTL", self.leases.table.len());
    }

    /// The table after a snapshot replaced the sections.
    pub(super) fn restore_leases(&mut self) {
        self.leases.restore(&self.sections, Instant::now());
        if self.is_leader() {
            self.promote_leases();
        }
    }
}

/// The leases a put or txn (at any depth, in both branches) attaches keys
/// to. Both branches are checked, not only the one taken: a stricter rule
/// than etcd's that needs no compare evaluated twice.
/// The leases a write needs: a put's, or those of the puts on the path a
/// transaction takes against the store as it is now (branches not taken
/// need nothing, as in etcd).
fn op_leases(store: &mvcc::Store, op: &Op) -> Vec<i64> {
    match op {
        Op::Put(p) if p.lease != 0 => vec![p.lease],
        Op::Txn(t) => store.txn_leases_on_path(t),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(lease: i64) -> mvcc::RequestOp {
        mvcc::RequestOp::Put(mvcc::PutRequest { key: b"k".to_vec(), lease, ..Default::default() })
    }

    #[test]
    fn only_the_leases_on_the_path_taken_are_needed() {
        let store = mvcc::Store::new(mvcc::StoreConfig::default());
        let inner = mvcc::TxnRequest { compare: vec![], success: vec![put(3)], failure: vec![] };
        // "k" is missing, so a value compare fails and the failure branch runs.
        let value_is_x = mvcc::Compare {
            key: b"k".to_vec(),
            range_end: Vec::new(),
            result: mvcc::CompareResult::Equal,
            target: mvcc::CompareTarget::Value(b"x".to_vec()),
        };
        let txn = mvcc::TxnRequest {
            compare: vec![value_is_x],
            success: vec![put(1), put(0)],
            failure: vec![mvcc::RequestOp::Txn(inner), put(0)],
        };
        assert_eq!(op_leases(&store, &Op::Txn(txn.clone())), vec![3]);
        let taken = mvcc::TxnRequest { compare: vec![], ..txn };
        assert_eq!(op_leases(&store, &Op::Txn(taken)), vec![1]);
        assert_eq!(op_leases(&store, &Op::Put(mvcc::PutRequest::default())), Vec::<i64>::new());
        assert!(op_leases(&store, &Op::Compact(3)).is_empty());
    }

    #[test]
    fn splitmix_ids_differ() {
        let mut state = 7;
        let (a, b) = (splitmix64(&mut state), splitmix64(&mut state));
        assert_ne!(a, b);
    }
}
