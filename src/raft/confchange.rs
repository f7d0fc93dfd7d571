//! Membership changes: one voter at a time, or several at once through a
//! joint configuration.
//!
//! A simple change adds a voter, adds (or demotes to) a learner, or removes
//! a member, and may change at most one voter: any majority of the old
//! voters and any majority of the new voters then share a member, so two
//! leaders can never be elected in one term.
//!
//! A change of several voters at once goes through a joint configuration
//! (Raft thesis §4.3): entering it keeps the old voters as `voters_outgoing`
//! and makes the new set `voters`; while joint, every decision (commit,
//! election, ReadIndex, check-quorum) needs a majority of both sets. Leaving
//! it (an entry with no changes) drops the outgoing set and turns
//! `learners_next` (voters demoted while joint) into learners. With
//! `auto_leave` the leader proposes the leave itself once the joint
//! configuration is applied. No other change is accepted while joint.
//!
//! Liveness, not safety: a member learns that the joint configuration was
//! left only from the leader's commit index. Until it does, it still needs
//! a majority of the outgoing voters to elect a leader, and a removed voter
//! whose log is longer than every candidate's refuses its vote. Callers
//! that want the cluster to keep electing leaders with a member down keep
//! a majority of the old voters among the new ones (a replacement of one
//! voter in three does; one of two does not, and goes one at a time).
//!
//! A change takes effect on a member when the member applies the committed
//! entry that carries it. The leader accepts a new change only once the
//! previous one is applied (the pending-change rule), and a new leader first
//! commits an entry of its own term; together these rule out the known
//! pitfall of single-server changes across leader changes.
//!
//! The entry payload is encoded here by hand (raft never uses the wire
//! codec). A simple change is one kind byte and the node id; a change of
//! several (or an explicit transition) starts with kind 4, then the
//! transition, the count and that many simple changes. The first form
//! predates joint configurations and stays readable.
//!
//! ```text
//!  0      1                    9
//!  ┌──────┬────────────────────┐
//!  │ kind │ node id (u64 LE)   │   kind: 1 add voter, 2 add learner, 3 remove
//!  └──────┴────────────────────┘
//!  0   1            2       3                          3 + 9 × count
//!  ┌───┬────────────┬───────┬──────────────────────────┐
//!  │ 4 │ transition │ count │ count × simple change    │   transition: 0 auto,
//!  └───┴────────────┴───────┴──────────────────────────┘   1 implicit, 2 explicit
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

/// How a group of changes is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChangeTransition {
    /// One change that moves at most one voter is applied directly; anything
    /// else enters a joint configuration that is left automatically.
    Auto,
    /// Always joint, left automatically once applied.
    Implicit,
    /// Always joint; stays joint until an empty change leaves it.
    Explicit,
}

/// A group of changes applied as one. No changes at all means "leave the
/// joint configuration".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChangeV2 {
    pub transition: ConfChangeTransition,
    pub changes: Vec<ConfChange>,
}

/// Bytes of an encoded `ConfChange`.
pub const CONF_CHANGE_SIZE_BYTES: usize = 9;

/// The kind byte that starts a group of changes.
const GROUP_KIND: u8 = 4;

/// Bytes before the changes of an encoded group: kind, transition, count.
const GROUP_HEADER_SIZE_BYTES: usize = 3;

/// Changes in one group: enough to replace every voter and turn as many
/// members into learners at once. It bounds the decoding of a peer's entry.
pub const CHANGES_PER_GROUP_MAX: usize = 2 * VOTERS_MAX;

/// Why a membership change cannot be decoded or applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfChangeError {
    Malformed,
    ZeroNodeId,
    /// Removing or demoting the last voter would leave nobody to decide.
    NoVotersLeft,
    TooManyVoters,
    /// More changes than `CHANGES_PER_GROUP_MAX`.
    TooManyChanges,
    /// A direct change may move at most one voter; more needs a joint
    /// configuration.
    TooManyVoterChanges,
    /// The configuration is joint: only leaving it is accepted.
    AlreadyJoint,
    /// Asked to leave a joint configuration that is not joint.
    NotJoint,
    /// A configuration whose lists contradict each other (from a snapshot).
    Inconsistent,
}

impl std::fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            ConfChangeError::Malformed => "malformed membership change",
            ConfChangeError::ZeroNodeId => "membership change names node 0",
            ConfChangeError::NoVotersLeft => "membership change would leave no voter",
            ConfChangeError::TooManyVoters => "membership change would exceed the voter limit",
            ConfChangeError::TooManyChanges => "too many changes in one membership change",
            ConfChangeError::TooManyVoterChanges => {
                "more than one voter changed without a joint configuration"
            }
            ConfChangeError::AlreadyJoint => "the joint configuration must be left first",
            ConfChangeError::NotJoint => "no joint configuration to leave",
            ConfChangeError::Inconsistent => "membership lists contradict each other",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ConfChangeError {}

impl ConfChange {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CONF_CHANGE_SIZE_BYTES);
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let kind = match self.kind {
            ConfChangeKind::AddVoter => 1u8,
            ConfChangeKind::AddLearner => 2,
            ConfChangeKind::RemoveNode => 3,
        };
        out.push(kind);
        out.extend_from_slice(&self.node_id.to_le_bytes());
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

impl ConfChangeV2 {
    /// The change that leaves a joint configuration.
    pub fn leave_joint() -> ConfChangeV2 {
        ConfChangeV2 { transition: ConfChangeTransition::Auto, changes: Vec::new() }
    }

    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether applying this enters a joint configuration, and if so
    /// whether it is left automatically.
    pub fn enters_joint(&self) -> Option<bool> {
        let joint = self.transition != ConfChangeTransition::Auto || self.changes.len() > 1;
        if !joint || self.is_leave_joint() {
            return None;
        }
        Some(self.transition != ConfChangeTransition::Explicit)
    }

    /// One simple change is written in the older, shorter form.
    pub fn encode(&self) -> Vec<u8> {
        if let ([change], ConfChangeTransition::Auto) = (self.changes.as_slice(), self.transition) {
            return change.encode();
        }
        let transition = match self.transition {
            ConfChangeTransition::Auto => 0u8,
            ConfChangeTransition::Implicit => 1,
            ConfChangeTransition::Explicit => 2,
        };
        let count = self.changes.len().min(CHANGES_PER_GROUP_MAX);
        let mut out = Vec::with_capacity(GROUP_HEADER_SIZE_BYTES + count * CONF_CHANGE_SIZE_BYTES);
        out.extend_from_slice(&[GROUP_KIND, transition, count as u8]);
        for change in &self.changes[..count] {
            change.encode_into(&mut out);
        }
        out
    }

    /// Decodes either form; the length must match the count exactly.
    pub fn decode(bytes: &[u8]) -> Result<ConfChangeV2, ConfChangeError> {
        if bytes.first() != Some(&GROUP_KIND) {
            let change = ConfChange::decode(bytes)?;
            return Ok(ConfChangeV2 {
                transition: ConfChangeTransition::Auto,
                changes: vec![change],
            });
        }
        let [_, transition, count] =
            *bytes.get(..GROUP_HEADER_SIZE_BYTES).ok_or(ConfChangeError::Malformed)?
        else {
            return Err(ConfChangeError::Malformed);
        };
        let transition = match transition {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::Implicit,
            2 => ConfChangeTransition::Explicit,
            _ => return Err(ConfChangeError::Malformed),
        };
        let count = usize::from(count);
        if count > CHANGES_PER_GROUP_MAX {
            return Err(ConfChangeError::TooManyChanges);
        }
        let body = &bytes[GROUP_HEADER_SIZE_BYTES..];
        if body.len() != count * CONF_CHANGE_SIZE_BYTES {
            return Err(ConfChangeError::Malformed);
        }
        let changes = body
            .chunks_exact(CONF_CHANGE_SIZE_BYTES)
            .map(ConfChange::decode)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConfChangeV2 { transition, changes })
    }
}

impl From<ConfChange> for ConfChangeV2 {
    fn from(change: ConfChange) -> ConfChangeV2 {
        ConfChangeV2 { transition: ConfChangeTransition::Auto, changes: vec![change] }
    }
}

/// The membership after one simple change (the older, single-change entry
/// form). Every such change sets one node's role outright, so replaying a
/// sequence of them over a later membership gives the same result as over
/// an earlier one.
pub fn apply(conf: &ConfState, change: ConfChange) -> Result<ConfState, ConfChangeError> {
    apply_v2(conf, &ConfChangeV2::from(change))
}

/// The membership after `cc`: a direct change, entering a joint
/// configuration, or leaving one.
pub fn apply_v2(conf: &ConfState, cc: &ConfChangeV2) -> Result<ConfState, ConfChangeError> {
    if cc.changes.len() > CHANGES_PER_GROUP_MAX {
        return Err(ConfChangeError::TooManyChanges);
    }
    if cc.is_leave_joint() {
        return leave_joint(conf);
    }
    if conf.is_joint() {
        return Err(ConfChangeError::AlreadyJoint);
    }
    let mut next = conf.clone();
    match cc.enters_joint() {
        Some(auto_leave) => {
            next.voters_outgoing = conf.voters.clone();
            next.auto_leave = auto_leave;
            apply_changes(&mut next, &cc.changes)?;
        }
        None => {
            apply_changes(&mut next, &cc.changes)?;
            if symmetric_difference(&conf.voters, &next.voters) > 1 {
                return Err(ConfChangeError::TooManyVoterChanges);
            }
        }
    }
    check(&next)?;
    Ok(next)
}

/// Drops the outgoing voters and turns the voters demoted while joint into
/// learners.
fn leave_joint(conf: &ConfState) -> Result<ConfState, ConfChangeError> {
    if !conf.is_joint() {
        return Err(ConfChangeError::NotJoint);
    }
    let mut next = conf.clone();
    next.learners.append(&mut next.learners_next);
    next.learners.sort_unstable();
    next.voters_outgoing.clear();
    next.auto_leave = false;
    check(&next)?;
    Ok(next)
}

fn apply_changes(conf: &mut ConfState, changes: &[ConfChange]) -> Result<(), ConfChangeError> {
    for change in changes {
        let id = change.node_id;
        if id == NO_NODE {
            return Err(ConfChangeError::ZeroNodeId);
        }
        conf.voters.retain(|v| *v != id);
        conf.learners.retain(|l| *l != id);
        conf.learners_next.retain(|l| *l != id);
        match change.kind {
            ConfChangeKind::AddVoter => conf.voters.push(id),
            // A voter of the outgoing set keeps voting there until the joint
            // configuration is left; only then does it become a learner.
            ConfChangeKind::AddLearner if conf.voters_outgoing.contains(&id) => {
                conf.learners_next.push(id)
            }
            ConfChangeKind::AddLearner => conf.learners.push(id),
            ConfChangeKind::RemoveNode => {}
        }
    }
    conf.voters.sort_unstable();
    conf.learners.sort_unstable();
    conf.learners_next.sort_unstable();
    Ok(())
}

fn symmetric_difference(a: &[NodeId], b: &[NodeId]) -> usize {
    a.iter().filter(|id| !b.contains(id)).count() + b.iter().filter(|id| !a.contains(id)).count()
}

/// Checks that a configuration is one this module could have built: some
/// voter, no more than `VOTERS_MAX` in either set, no node 0, no node
/// listed twice, learners apart from every voter, and `learners_next`
/// only while joint, made of outgoing voters. Used on configurations from
/// peers and files.
pub fn check(conf: &ConfState) -> Result<(), ConfChangeError> {
    if conf.voters.is_empty() {
        return Err(ConfChangeError::NoVotersLeft);
    }
    if conf.voters.len() > VOTERS_MAX || conf.voters_outgoing.len() > VOTERS_MAX {
        return Err(ConfChangeError::TooManyVoters);
    }
    let lists = [&conf.voters, &conf.voters_outgoing, &conf.learners, &conf.learners_next];
    if lists.iter().any(|list| list.contains(&NO_NODE)) {
        return Err(ConfChangeError::ZeroNodeId);
    }
    if lists.iter().any(|list| has_duplicates(list)) {
        return Err(ConfChangeError::Inconsistent);
    }
    let voter = |id: &NodeId| conf.voters.contains(id) || conf.voters_outgoing.contains(id);
    let learners_apart = !conf.learners.iter().any(voter);
    let next_apart = conf.learners_next.iter().all(|id| {
        conf.voters_outgoing.contains(id)
            && !conf.voters.contains(id)
            && !conf.learners.contains(id)
    });
    let joint_only = conf.is_joint() || (conf.learners_next.is_empty() && !conf.auto_leave);
    if !(learners_apart && next_apart && joint_only) {
        return Err(ConfChangeError::Inconsistent);
    }
    Ok(())
}

fn has_duplicates(list: &[NodeId]) -> bool {
    list.iter().enumerate().any(|(at, id)| list[..at].contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ConfChangeKind, node_id: NodeId) -> ConfChange {
        ConfChange { kind, node_id }
    }

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
    fn groups_round_trip_and_single_changes_keep_the_old_form() {
        let single = ConfChangeV2::from(change(ConfChangeKind::AddVoter, 7));
        assert_eq!(single.encode(), change(ConfChangeKind::AddVoter, 7).encode());
        assert_eq!(ConfChangeV2::decode(&single.encode()), Ok(single));
        let group = ConfChangeV2 {
            transition: ConfChangeTransition::Explicit,
            changes: vec![
                change(ConfChangeKind::AddVoter, 4),
                change(ConfChangeKind::RemoveNode, 3),
            ],
        };
        let bytes = group.encode();
        assert_eq!(bytes.len(), 3 + 2 * CONF_CHANGE_SIZE_BYTES);
        assert_eq!(ConfChangeV2::decode(&bytes), Ok(group));
        let leave = ConfChangeV2::leave_joint();
        assert_eq!(leave.encode(), [4, 0, 0]);
        assert_eq!(ConfChangeV2::decode(&leave.encode()), Ok(leave));
    }

    #[test]
    fn group_decoding_is_bounded_and_exact() {
        assert_eq!(ConfChangeV2::decode(&[4, 0]), Err(ConfChangeError::Malformed));
        assert_eq!(ConfChangeV2::decode(&[4, 3, 0]), Err(ConfChangeError::Malformed));
        assert_eq!(ConfChangeV2::decode(&[4, 0, 1]), Err(ConfChangeError::Malformed));
        assert_eq!(ConfChangeV2::decode(&[4, 0, 255]), Err(ConfChangeError::TooManyChanges));
        let mut trailing = ConfChangeV2::leave_joint().encode();
        trailing.push(0);
        assert_eq!(ConfChangeV2::decode(&trailing), Err(ConfChangeError::Malformed));
        assert_eq!(ConfChangeV2::decode(&[]), Err(ConfChangeError::Malformed));
    }

    #[test]
    fn apply_sets_one_role_and_keeps_a_voter() {
        let conf = ConfState { voters: vec![1, 2], learners: vec![3], ..ConfState::default() };
        let promoted = apply(&conf, change(ConfChangeKind::AddVoter, 3)).unwrap();
        assert_eq!(promoted.voters, vec![1, 2, 3]);
        assert!(promoted.learners.is_empty());
        let demoted = apply(&promoted, change(ConfChangeKind::AddLearner, 1)).unwrap();
        assert_eq!(demoted.voters, vec![2, 3]);
        assert_eq!(demoted.learners, vec![1]);
        let single = ConfState { voters: vec![1], ..ConfState::default() };
        let remove = change(ConfChangeKind::RemoveNode, 1);
        assert_eq!(apply(&single, remove), Err(ConfChangeError::NoVotersLeft));
    }

    #[test]
    fn a_direct_change_moves_at_most_one_voter() {
        let conf = ConfState { voters: vec![1, 2, 3], ..ConfState::default() };
        let replace = ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![
                change(ConfChangeKind::AddVoter, 4),
                change(ConfChangeKind::RemoveNode, 3),
            ],
        };
        // Auto with two changes goes joint; forcing it through `apply_changes`
        // without the joint step is what the voter count check refuses.
        let joint = apply_v2(&conf, &replace).unwrap();
        assert!(joint.is_joint() && joint.auto_leave);
        let mut direct = conf.clone();
        apply_changes(&mut direct, &replace.changes).unwrap();
        assert_eq!(symmetric_difference(&conf.voters, &direct.voters), 2);
    }

    #[test]
    fn enter_and_leave_a_joint_configuration() {
        let conf = ConfState { voters: vec![1, 2, 3], learners: vec![5], ..ConfState::default() };
        let cc = ConfChangeV2 {
            transition: ConfChangeTransition::Explicit,
            changes: vec![
                change(ConfChangeKind::AddVoter, 4),
                change(ConfChangeKind::AddLearner, 3),
                change(ConfChangeKind::AddVoter, 5),
            ],
        };
        let joint = apply_v2(&conf, &cc).unwrap();
        assert_eq!(joint.voters, vec![1, 2, 4, 5]);
        assert_eq!(joint.voters_outgoing, vec![1, 2, 3]);
        assert_eq!(joint.learners_next, vec![3]);
        assert!(joint.learners.is_empty());
        assert!(!joint.auto_leave);
        check(&joint).unwrap();
        let again = ConfChangeV2::from(change(ConfChangeKind::RemoveNode, 1));
        assert_eq!(apply_v2(&joint, &again), Err(ConfChangeError::AlreadyJoint));
        let left = apply_v2(&joint, &ConfChangeV2::leave_joint()).unwrap();
        assert_eq!(left.voters, vec![1, 2, 4, 5]);
        assert_eq!(left.learners, vec![3]);
        assert!(!left.is_joint() && left.learners_next.is_empty());
        assert_eq!(apply_v2(&left, &ConfChangeV2::leave_joint()), Err(ConfChangeError::NotJoint));
    }

    #[test]
    fn removing_every_incoming_voter_is_refused() {
        let conf = ConfState { voters: vec![1, 2], ..ConfState::default() };
        let cc = ConfChangeV2 {
            transition: ConfChangeTransition::Implicit,
            changes: vec![
                change(ConfChangeKind::RemoveNode, 1),
                change(ConfChangeKind::RemoveNode, 2),
            ],
        };
        assert_eq!(apply_v2(&conf, &cc), Err(ConfChangeError::NoVotersLeft));
    }

    #[test]
    fn check_refuses_contradicting_lists() {
        let ok =
            ConfState { voters: vec![1, 2], voters_outgoing: vec![1, 3], ..Default::default() };
        check(&ok).unwrap();
        let bad = [
            ConfState { voters: vec![1, 1], ..Default::default() },
            ConfState { voters: vec![1], learners: vec![1], ..Default::default() },
            ConfState { voters: vec![1], learners_next: vec![2], ..Default::default() },
            ConfState { voters: vec![1], auto_leave: true, ..Default::default() },
            ConfState {
                voters: vec![1],
                voters_outgoing: vec![2],
                learners_next: vec![1],
                ..Default::default()
            },
        ];
        for conf in bad {
            assert_eq!(check(&conf), Err(ConfChangeError::Inconsistent), "{conf:?}");
        }
        assert_eq!(check(&ConfState::default()), Err(ConfChangeError::NoVotersLeft));
    }
}
