//! Membership changes, one member at a time.
//!
//! Each change adds a voter, adds (or demotes to) a learner, or removes a
//! member, so any majority of the old voters and any majority of the new
//! voters share at least one member and two leaders can never be elected in
//! one term. A change takes effect on a member when the member applies the
//! committed entry that carries it. The leader accepts a new change only once
//! the previous one is applied (the pending-change rule), and a new leader
//! first commits an entry of its own term; together these rule out the known
//! pitfall of single-server changes across leader changes.
//!
//! The entry payload is encoded here by hand (raft never uses the wire
//! codec): one kind byte, then the node id as 8 little-endian bytes.
//!
//! ```text
//!  0      1                    9
//!  ┌──────┬────────────────────┐
//!  │ kind │ node id (u64 LE)   │   kind: 1 add voter, 2 add learner, 3 remove
//!  └──────┴────────────────────┘
//! ```

use serde::{Deserialize, Serialize};

use super::quorum::VOTERS_MAX;
use super::types::{ConfState, NO_NODE, NodeId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChangeKind {
    /// Adds a voter, or promotes a learner.
    AddVoter,
    /// Adds a learner, or demotes a voter.
    AddLearner,
    RemoveNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub node_id: NodeId,
}

/// Bytes of an encoded `ConfChange`.
pub const CONF_CHANGE_SIZE_BYTES: usize = 9;

/// Why a membership change cannot be decoded or applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfChangeError {
    Malformed,
    ZeroNodeId,
    /// Removing or demoting the last voter would leave nobody to decide.
    NoVotersLeft,
    TooManyVoters,
}

impl std::fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            ConfChangeError::Malformed => "malformed membership change",
            ConfChangeError::ZeroNodeId => "membership change names node 0",
            ConfChangeError::NoVotersLeft => "membership change would leave no voter",
            ConfChangeError::TooManyVoters => "membership change would exceed the voter limit",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ConfChangeError {}

impl ConfChange {
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self.kind {
            ConfChangeKind::AddVoter => 1u8,
            ConfChangeKind::AddLearner => 2,
            ConfChangeKind::RemoveNode => 3,
        };
        let mut out = Vec::with_capacity(CONF_CHANGE_SIZE_BYTES);
        out.push(kind);
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ConfChange, ConfChangeError> {
        if bytes.len() != CONF_CHANGE_SIZE_BYTES {
            return Err(ConfChangeError::Malformed);
        }
        let kind = match bytes[0] {
            1 => ConfChangeKind::AddVoter,
            2 => ConfChangeKind::AddLearner,
            3 => ConfChangeKind::RemoveNode,
            _ => return Err(ConfChangeError::Malformed),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[1..]);
        let node_id = u64::from_le_bytes(id);
        if node_id == NO_NODE {
            return Err(ConfChangeError::ZeroNodeId);
        }
        Ok(ConfChange { kind, node_id })
    }
}

/// The membership after `change`. Every change sets one node's role outright,
/// so replaying a sequence of changes over a later membership gives the same
/// result as over an earlier one (restart relies on this).
pub fn apply(conf: &ConfState, change: ConfChange) -> Result<ConfState, ConfChangeError> {
    if change.node_id == NO_NODE {
        return Err(ConfChangeError::ZeroNodeId);
    }
    let mut next = conf.clone();
    let id = change.node_id;
    next.voters.retain(|v| *v != id);
    next.learners.retain(|l| *l != id);
    match change.kind {
        ConfChangeKind::AddVoter => next.voters.push(id),
        ConfChangeKind::AddLearner => next.learners.push(id),
        ConfChangeKind::RemoveNode => {}
    }
    next.voters.sort_unstable();
    next.learners.sort_unstable();
    if next.voters.is_empty() {
        return Err(ConfChangeError::NoVotersLeft);
    }
    if next.voters.len() > VOTERS_MAX {
        return Err(ConfChangeError::TooManyVoters);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_bytes() {
        for kind in
            [ConfChangeKind::AddVoter, ConfChangeKind::AddLearner, ConfChangeKind::RemoveNode]
        {
            let change = ConfChange { kind, node_id: 42 };
            assert_eq!(ConfChange::decode(&change.encode()), Ok(change));
        }
        assert_eq!(ConfChange::decode(&[1, 2]), Err(ConfChangeError::Malformed));
        assert_eq!(ConfChange::decode(&[9; 9]), Err(ConfChangeError::Malformed));
        assert_eq!(
            ConfChange::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(ConfChangeError::ZeroNodeId)
        );
    }

    #[test]
    fn apply_sets_one_role_and_keeps_a_voter() {
        let conf = ConfState { voters: vec![1, 2], learners: vec![3], ..ConfState::default() };
        let promoted =
            apply(&conf, ConfChange { kind: ConfChangeKind::AddVoter, node_id: 3 }).unwrap();
        assert_eq!(promoted.voters, vec![1, 2, 3]);
        assert!(promoted.learners.is_empty());
        let demoted =
            apply(&promoted, ConfChange { kind: ConfChangeKind::AddLearner, node_id: 1 }).unwrap();
        assert_eq!(demoted.voters, vec![2, 3]);
        assert_eq!(demoted.learners, vec![1]);
        let single = ConfState { voters: vec![1], ..ConfState::default() };
        let remove = ConfChange { kind: ConfChangeKind::RemoveNode, node_id: 1 };
        assert_eq!(apply(&single, remove), Err(ConfChangeError::NoVotersLeft));
    }
}
