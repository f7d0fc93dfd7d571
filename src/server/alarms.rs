//! Alarm requests at the node, and what the raised alarms change in its
//! answers: endpoint status lists them as its errors, and `/health` names
//! the first that concerns this member.
//!
//! `Get` is answered from this member's applied state, like a
//! serializable read: alarms are replicated, so every member that applied
//! the same entries lists the same ones. A raise or a clear is a write,
//! proposed like any other and checked for root when applied.

use std::time::Instant;

use super::members::PUBLISH_RETRY;
use super::node::Node;
use super::proposals::Waiter;
use crate::proto::http::UnhealthyReason;
use crate::proto::{self, AlarmAction, ErrorBody, ErrorCode, Response};
use crate::state::{AlarmKind, AlarmOp, Op};

impl Node {
    pub(super) fn alarm_request(&mut self, waiter: Waiter, r: proto::AlarmRequest) {
        let raise = match r.action {
            AlarmAction::Get => {
                let alarms = self.state.alarms().records().iter().map(|a| a.proto()).collect();
                let response = proto::AlarmResponse { header: self.header(), alarms };
                return self.clients.answer(waiter, Ok(Response::Alarm(response)));
            }
            AlarmAction::Activate => true,
            AlarmAction::Deactivate => false,
        };
        let Some(kind) = AlarmKind::of(r.alarm) else {
            // Validation refuses it before it gets here.
            return self.clients.answer(waiter, Err(ErrorBody::new(ErrorCode::AlarmNotGiven)));
        };
        let caller = self.caller_of(waiter);
        let op = Op::Alarm(AlarmOp { member_id: r.member_id, kind, raise });
        self.proposals.queue_write(waiter, op, caller);
    }

    /// A leader proposes its `--quota-backend-bytes` as the cluster's quota
    /// until the applied state holds it: every member must decide the
    /// quota alike, so it is replicated, never read from each one's flags.
    pub(super) fn maybe_propose_quota(&mut self, now: Instant) {
        let quota_bytes = self.config.quota_backend_bytes;
        let is_leader = self.leader_id == self.config.member_id;
        if !is_leader || now < self.next_quota_proposal {
            return;
        }
        if self.state.usage().quota_bytes_set() == quota_bytes {
            return;
        }
        self.next_quota_proposal = now + PUBLISH_RETRY;
        if let Err(e) =
            self.proposals.propose_unwaited(&mut self.raft, vec![Op::Quota(quota_bytes)])
        {
            log::debug!("proposing the quota: {e:?}");
        }
    }

    /// Every raised alarm as etcd's status errors print it.
    pub(super) fn alarm_errors(&self) -> Vec<String> {
        let alarms = self.state.alarms().records().iter();
        alarms.map(|a| format!("memberID:{} alarm:{} ", a.member_id, a.kind.name())).collect()
    }

    /// Why `/health` answers unhealthy because of an alarm: any `NoSpace`
    /// (writes are refused cluster-wide), or a `Corrupt` raised for this
    /// member (it serves no reads). Another member's `Corrupt` leaves this
    /// one healthy: it still serves.
    pub(super) fn alarm_health(&self) -> Option<UnhealthyReason> {
        let alarms = self.state.alarms();
        if alarms.is_raised_for(self.config.member_id, AlarmKind::Corrupt) {
            return Some(UnhealthyReason::Corrupt);
        }
        alarms.is_raised(AlarmKind::NoSpace).then_some(UnhealthyReason::NoSpace)
    }
}
