//! Leases in the loop: client requests, time-to-live answers, and expiry
//! on the leader's ticks. Applying lease entries is the state machine's
//! (`state/leases.rs`).
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

use super::node::Node;
use super::proposals::Waiter;
use crate::lease::{LeaseError, LeaseTable};
use crate::proto::{self, ErrorBody, ErrorCode, Request, Response};
use crate::state::Op;
use crate::state::leases::lease_error;

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
                let caller = self.caller_of(waiter);
                self.proposals.queue_write(waiter, Op::LeaseRevoke(r.id), caller);
                Ok(())
            }
            Request::LeaseKeepAlive(r) => self.keep_alive_request(waiter, r.id, now),
            Request::LeaseTimeToLive(r) => {
                let response = self.time_to_live(waiter, r, now);
                return self.clients.answer(waiter, Ok(response));
            }
            Request::LeaseLeases => {
                let leases = self.state.leases().ids().collect();
                let response = proto::LeaseLeasesResponse { header: self.header(), leases };
                return self.clients.answer(waiter, Ok(Response::LeaseLeases(response)));
            }
            other => unreachable!("{} is not a lease request", other.name()),
        };
        if let Err(body) = result {
            self.clients.answer(waiter, Err(body));
        }
    }

    /// Settles id and TTL and queues the grant for proposal.
    fn grant_request(
        &mut self,
        waiter: Waiter,
        r: proto::LeaseGrantRequest,
    ) -> Result<(), ErrorBody> {
        let clock = &mut self.lease_clock;
        let table = self.state.leases();
        let ttl_secs =
            LeaseTable::effective_ttl_secs(r.ttl_secs, clock.min_ttl_secs).map_err(lease_error)?;
        if table.len() >= clock.max_leases {
            let message = format!("ember: too many leases (--max-leases {})", clock.max_leases);
            return Err(ErrorBody::with_message(ErrorCode::TooManyLeases, message));
        }
        let id = match r.id {
            0 => clock.fresh_id(table).ok_or_else(|| ErrorBody::new(ErrorCode::LeaseExists))?,
            id if table.contains(id) => return Err(lease_error(LeaseError::Exists)),
            id => id,
        };
        let caller = self.caller_of(waiter);
        self.proposals.queue_write(waiter, Op::LeaseGrant { id, ttl_secs }, caller);
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
            let caller = self.caller_of(waiter);
            self.proposals.queue_write(waiter, Op::LeaseRenew(id), caller);
            return Ok(());
        }
        let now_ms = self.lease_clock.now_ms(now);
        let ttl_secs = self.state.renew_lease(id, now_ms).map_err(lease_error)?;
        let header = self.header();
        let response = proto::LeaseKeepAliveResponse { header, id, ttl_secs };
        self.clients.answer(waiter, Ok(Response::LeaseKeepAlive(response)));
        Ok(())
    }

    fn time_to_live(
        &self,
        waiter: Waiter,
        r: proto::LeaseTimeToLiveRequest,
        now: Instant,
    ) -> Response {
        let table = self.state.leases();
        let now_ms = self.lease_clock.now_ms(now);
        // As etcd: an unknown (expired, revoked) lease answers a TTL of -1.
        // A follower never decides expiry, so a lease it still has is alive
        // as far as it knows, even past its local deadline: 0, not -1.
        let ttl_secs = match table.remaining_secs(r.id, now_ms) {
            None => -1,
            Some(left) if self.is_leader() => left,
            Some(left) => left.max(0),
        };
        let granted_ttl_secs = table.ttl_secs(r.id).unwrap_or_default();
        // Only the keys the caller may read: the list must not show what
        // a range read would refuse.
        let keys = match r.keys {
            true => self.readable_keys(waiter, self.state.store().lease_keys(r.id)),
            false => Vec::new(),
        };
        let header = self.header();
        Response::LeaseTimeToLive(proto::LeaseTimeToLiveResponse {
            header,
            id: r.id,
            ttl_secs,
            granted_ttl_secs,
            keys,
        })
    }

    /// On the leader: proposes the revocation of expired leases, at most
    /// the per-tick share of the revoke rate.
    pub(super) fn tick_leases(&mut self, now: Instant) {
        if !self.is_leader() {
            return;
        }
        let clock = &self.lease_clock;
        let now_ms = clock.now_ms(now);
        let (max, retry_ms) = (clock.revokes_per_tick, clock.revoke_retry_ms);
        let expired = self.state.take_expired_leases(now_ms, max, retry_ms);
        if expired.is_empty() {
            return;
        }
        log::info!("proposing the revocation of {} expired leases", expired.len());
        let ops = expired.into_iter().map(Op::LeaseRevoke).collect();
        if let Err(e) = self.proposals.propose_unwaited(&mut self.raft, ops) {
            // They are proposed again after `revoke_retry_ms`.
            log::warn!("revocation of expired leases not proposed: {e:?}");
        }
    }

    /// This member just became leader (or restored a snapshot as leader):
    /// every lease gets its full TTL.
    pub(super) fn promote_leases(&mut self) {
        let now_ms = self.lease_clock.now_ms(Instant::now());
        self.state.promote_leases(now_ms);
        log::info!("leader now: {} leases renewed to their full TTL", self.state.leases().len());
    }
}
