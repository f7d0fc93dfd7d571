//! Applying lease entries: grant, revoke (with the lease's keys, in one
//! revision), renew, and the refusal of a put or txn that names a lease
//! that does not exist.
//!
//! The member that takes a grant settles its id and TTL before proposing
//! (`server/leases.rs`), so apply only checks what must be checked alike
//! everywhere: a grant of an existing id fails with `LeaseExists`, a write
//! naming a missing lease with `LeaseNotFound`. The deadline a grant or a
//! renewal sets is local (see the module doc of `state`).
//!
//! A grant records its owner: the user the entry's caller was authorized
//! as, while auth is on. The owner may revoke the lease whatever its
//! rights on the lease's keys (`auth.rs`); a deleted user owns nothing.

use super::StateMachine;
use super::command::{Caller, Op};
use crate::lease::LeaseError;
use crate::mvcc;
use crate::proto::{self, ErrorBody, ErrorCode, Response};

/// The protocol error for a lease error.
pub fn lease_error(error: LeaseError) -> ErrorBody {
    ErrorBody::new(match error {
        LeaseError::NotFound => ErrorCode::LeaseNotFound,
        LeaseError::Exists => ErrorCode::LeaseExists,
        LeaseError::TtlTooLarge => ErrorCode::LeaseTtlTooLarge,
    })
}

impl StateMachine {
    /// The owner a grant by `caller` records: the user it was authorized
    /// as while auth is on; nobody while auth is off, when a name proves
    /// nothing, or for a member's own entries.
    pub(super) fn lease_owner<'a>(&self, caller: Option<&'a Caller>) -> Option<&'a str> {
        match caller {
            Some(Caller::User { name, .. }) if self.auth.enabled => Some(name),
            _ => None,
        }
    }

    /// Applies a lease entry, or refuses a put or txn that names a lease
    /// that does not exist; `None` for an op with nothing to do here.
    /// `owner` is the user a grant records.
    pub(super) fn apply_lease_op(
        &mut self,
        op: &Op,
        owner: Option<&str>,
        now_ms: u64,
        raft_term: u64,
    ) -> Option<Result<Response, ErrorBody>> {
        let result = match *op {
            Op::LeaseGrant { id, ttl_secs } => {
                self.apply_grant(id, ttl_secs, owner, now_ms, raft_term)
            }
            Op::LeaseRevoke(id) => self.apply_revoke(id, raft_term),
            Op::LeaseRenew(id) => self.leases.renew(id, now_ms).map(|ttl_secs| {
                let header = self.header(raft_term);
                Response::LeaseKeepAlive(proto::LeaseKeepAliveResponse { header, id, ttl_secs })
            }),
            Op::Put(_) | Op::Txn(_) => {
                let missing =
                    op_leases(&self.store, op).into_iter().any(|id| !self.leases.contains(id));
                return missing.then(|| Err(lease_error(LeaseError::NotFound)));
            }
            Op::DeleteRange(_)
            | Op::Compact(_)
            | Op::Corrupt(_)
            | Op::Member(_)
            | Op::Auth(_)
            | Op::Alarm(_)
            | Op::Quota(_)
            | Op::ClusterVersion(_) => {
                return None;
            }
        };
        Some(result.map_err(lease_error))
    }

    fn apply_grant(
        &mut self,
        id: i64,
        ttl_secs: i64,
        owner: Option<&str>,
        now_ms: u64,
        raft_term: u64,
    ) -> Result<Response, LeaseError> {
        self.leases.grant(id, ttl_secs, owner, now_ms)?;
        self.usage.lease_granted();
        // The table's TTL, so the answer says what the snapshot records.
        let ttl_secs = self.leases.ttl_secs(id).expect("granted above");
        let header = self.header(raft_term);
        Ok(Response::LeaseGrant(proto::LeaseGrantResponse { header, id, ttl_secs }))
    }

    /// Removes the lease and deletes its keys in one revision.
    fn apply_revoke(&mut self, id: i64, raft_term: u64) -> Result<Response, LeaseError> {
        self.leases.revoke(id)?;
        let applied = self.store.apply_revoke_lease(id);
        self.usage.record(applied.revision, &applied.events);
        self.usage.lease_gone();
        let deleted = applied.response.deleted;
        log::debug!("lease {id:016x} revoked; {deleted} keys deleted");
        let header = self.header(raft_term);
        Ok(Response::LeaseRevoke(proto::LeaseRevokeResponse { header }))
    }
}

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
}
