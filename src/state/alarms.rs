//! Alarms: the conditions that need a person, raised and cleared through
//! the log so that every member enters and leaves them at the same index.
//!
//! An alarm is one member and one kind (`NoSpace`, `Corrupt`). While any
//! `NoSpace` alarm is raised, the writes that take room (a put, a lease
//! grant, a txn holding a put at any depth) are refused with etcd's
//! `database space exceeded`; reads, deletes, compaction, revokes and every
//! other request still pass, so an operator can make room. The check runs
//! after the permission check: an alarm never lets a refused caller pass.
//!
//! Bounded: only a member of the member table may carry an alarm, and a
//! member leaving the table takes its alarms with it, so the table holds
//! at most `MEMBERS_MAX` × 2 records.

use serde::{Deserialize, Serialize};

use super::StateMachine;
use super::command::Op;
use crate::mvcc;
use crate::proto::{self, ErrorBody, ErrorCode, Response};

/// What an alarm says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlarmKind {
    NoSpace,
    Corrupt,
}

/// One raised alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlarmRecord {
    pub member_id: u64,
    pub kind: AlarmKind,
}

/// A raise or a clear, as replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmOp {
    pub member_id: u64,
    pub kind: AlarmKind,
    pub raise: bool,
}

impl AlarmKind {
    /// The protocol's name for the kind.
    pub fn proto(self) -> proto::AlarmType {
        match self {
            AlarmKind::NoSpace => proto::AlarmType::NoSpace,
            AlarmKind::Corrupt => proto::AlarmType::Corrupt,
        }
    }

    /// The kind a protocol alarm names; `None` for `AlarmType::None`.
    pub fn of(alarm: proto::AlarmType) -> Option<AlarmKind> {
        match alarm {
            proto::AlarmType::None => None,
            proto::AlarmType::NoSpace => Some(AlarmKind::NoSpace),
            proto::AlarmType::Corrupt => Some(AlarmKind::Corrupt),
        }
    }

    /// etcd's name, as `alarm list` and endpoint status print it.
    pub fn name(self) -> &'static str {
        match self {
            AlarmKind::NoSpace => "NOSPACE",
            AlarmKind::Corrupt => "CORRUPT",
        }
    }
}

impl AlarmRecord {
    pub fn proto(self) -> proto::AlarmMember {
        proto::AlarmMember { member_id: self.member_id, alarm: self.kind.proto() }
    }
}

/// The raised alarms. Invariant: ascending, no duplicates, every member in
/// the member table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarms {
    raised: Vec<AlarmRecord>,
}

impl Alarms {
    /// From a snapshot's records; `None` when they break the invariant.
    pub fn from_records(raised: Vec<AlarmRecord>) -> Option<Alarms> {
        raised.windows(2).all(|w| w[0] < w[1]).then_some(Alarms { raised })
    }

    pub fn records(&self) -> &[AlarmRecord] {
        &self.raised
    }

    pub fn is_raised(&self, kind: AlarmKind) -> bool {
        self.raised.iter().any(|a| a.kind == kind)
    }

    pub fn is_raised_for(&self, member_id: u64, kind: AlarmKind) -> bool {
        self.raised.binary_search(&AlarmRecord { member_id, kind }).is_ok()
    }

    /// Raises the alarm; true when it was not raised before.
    pub(super) fn raise(&mut self, record: AlarmRecord) -> bool {
        match self.raised.binary_search(&record) {
            Ok(_) => false,
            Err(at) => {
                self.raised.insert(at, record);
                true
            }
        }
    }

    /// Clears the alarm; true when it was raised.
    pub(super) fn clear(&mut self, record: AlarmRecord) -> bool {
        match self.raised.binary_search(&record) {
            Ok(at) => {
                self.raised.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Drops the alarms of members no longer in the table.
    pub(super) fn retain_members(&mut self, is_member: impl Fn(u64) -> bool) {
        self.raised.retain(|a| is_member(a.member_id));
    }
}

/// True when `op` needs room the store may not have: refused while a
/// `NoSpace` alarm is raised.
pub fn takes_space(op: &Op) -> bool {
    match op {
        Op::Put(_) | Op::LeaseGrant { .. } => true,
        Op::Txn(txn) => txn_puts(txn),
        _ => false,
    }
}

/// True when either branch of `txn`, at any depth, holds a put.
fn txn_puts(txn: &mvcc::TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        mvcc::RequestOp::Put(_) => true,
        mvcc::RequestOp::Txn(inner) => txn_puts(inner),
        mvcc::RequestOp::Range(_) | mvcc::RequestOp::DeleteRange(_) => false,
    })
}

impl StateMachine {
    /// Refuses what takes room while a `NoSpace` alarm is raised.
    pub(super) fn check_space(&self, op: &Op) -> Result<(), ErrorBody> {
        if self.alarms.is_raised(AlarmKind::NoSpace) && takes_space(op) {
            return Err(ErrorBody::new(ErrorCode::NoSpace));
        }
        Ok(())
    }

    pub(super) fn apply_alarm(
        &mut self,
        op: AlarmOp,
        raft_term: u64,
    ) -> Result<Response, ErrorBody> {
        let record = AlarmRecord { member_id: op.member_id, kind: op.kind };
        let alarms = match op.raise {
            true => {
                if !self.members.iter().any(|m| m.id == op.member_id) {
                    return Err(ErrorBody::new(ErrorCode::MemberNotFound));
                }
                if self.alarms.raise(record) {
                    log::warn!("alarm raised: {} for member {:016x}", op.kind.name(), op.member_id);
                }
                vec![record.proto()]
            }
            false => match self.alarms.clear(record) {
                true => {
                    if !self.alarms.is_raised(AlarmKind::NoSpace) {
                        self.usage.set_quota_alarmed(false);
                    }
                    log::info!(
                        "alarm cleared: {} for member {:016x}",
                        op.kind.name(),
                        op.member_id
                    );
                    vec![record.proto()]
                }
                false => Vec::new(),
            },
        };
        Ok(Response::Alarm(proto::AlarmResponse { header: self.header(raft_term), alarms }))
    }

    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put() -> mvcc::RequestOp {
        mvcc::RequestOp::Put(mvcc::PutRequest { key: b"k".to_vec(), ..Default::default() })
    }

    fn delete() -> mvcc::RequestOp {
        mvcc::RequestOp::DeleteRange(mvcc::DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn a_put_at_any_depth_takes_space_and_a_delete_does_not() {
        let inner = mvcc::TxnRequest { failure: vec![put()], ..Default::default() };
        let mut nested = mvcc::TxnRequest::default();
        for _ in 0..3 {
            nested = mvcc::TxnRequest {
                success: vec![mvcc::RequestOp::Txn(nested)],
                ..Default::default()
            };
        }
        let deep = mvcc::TxnRequest {
            success: vec![
                delete(),
                mvcc::RequestOp::Txn(mvcc::TxnRequest {
                    success: vec![mvcc::RequestOp::Txn(inner)],
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        assert!(takes_space(&Op::Txn(deep)));
        assert!(!takes_space(&Op::Txn(nested)));
        let deletes_only = mvcc::TxnRequest { success: vec![delete()], ..Default::default() };
        assert!(!takes_space(&Op::Txn(deletes_only)));
        assert!(takes_space(&Op::LeaseGrant { id: 1, ttl_secs: 5 }));
        assert!(!takes_space(&Op::Compact(3)));
        assert!(!takes_space(&Op::LeaseRevoke(1)));
    }

    #[test]
    fn raising_twice_keeps_one_record_and_order() {
        let mut alarms = Alarms::default();
        let b = AlarmRecord { member_id: 2, kind: AlarmKind::NoSpace };
        let a = AlarmRecord { member_id: 1, kind: AlarmKind::Corrupt };
        assert!(alarms.raise(b));
        assert!(alarms.raise(a));
        assert!(!alarms.raise(b));
        assert_eq!(alarms.records(), &[a, b]);
        assert!(alarms.clear(a));
        assert!(!alarms.clear(a));
        assert_eq!(Alarms::from_records(vec![b, a]), None);
        alarms.retain_members(|id| id != 2);
        assert!(alarms.records().is_empty());
    }
}
