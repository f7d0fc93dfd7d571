//! Majority arithmetic over a set of voters, and over the two sets of a
//! joint configuration (a decision there needs a majority of each; see
//! `confchange.rs`).

use std::collections::BTreeMap;

use super::types::NodeId;

/// The outcome of an election so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// The largest value that a majority of `voters` have reached, where
/// `value_of` gives each voter's value (its match index, its acked read
/// round). An empty voter set yields `u64::MAX` so that it never holds back
/// a joint decision; callers never commit with no voters.
pub fn majority_value(voters: &[NodeId], value_of: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    // Voter sets are tiny (3-5 boards); a stack buffer avoids an allocation on
    // the hot commit path. `VOTERS_MAX` bounds it.
    let mut values = [0u64; VOTERS_MAX];
    let count = voters.len().min(VOTERS_MAX);
    for (slot, id) in values.iter_mut().zip(voters.iter()) {
        *slot = value_of(*id);
    }
    let values = &mut values[..count];
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[count / 2]
}

/// The most voters a cluster may have. Consensus latency grows with the
/// voter count and edge clusters have 3-5; 64 leaves ample room.
pub const VOTERS_MAX: usize = 64;

/// Tallies `votes` (granted or not) against a majority of `voters`; votes of
/// non-voters do not count.
pub fn vote_result(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let majority = voters.len() / 2 + 1;
    let mut granted = 0;
    let mut missing = 0;
    for id in voters {
        match votes.get(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    if granted >= majority {
        VoteResult::Won
    } else if granted + missing >= majority {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The largest value a majority of `incoming` and a majority of `outgoing`
/// have both reached. An empty `outgoing` (not joint) leaves `incoming`
/// alone to decide.
pub fn joint_majority_value(
    incoming: &[NodeId],
    outgoing: &[NodeId],
    value_of: impl Fn(NodeId) -> u64,
) -> u64 {
    majority_value(incoming, &value_of).min(majority_value(outgoing, &value_of))
}

/// Tallies `votes` in a joint configuration: won when both sets are won,
/// lost when either is lost. An empty `outgoing` counts as won.
pub fn joint_vote_result(
    incoming: &[NodeId],
    outgoing: &[NodeId],
    votes: &BTreeMap<NodeId, bool>,
) -> VoteResult {
    let first = vote_result(incoming, votes);
    let second = if outgoing.is_empty() { VoteResult::Won } else { vote_result(outgoing, votes) };
    match (first, second) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_value_is_the_median_from_the_top() {
        let matches = [(1, 5), (2, 9), (3, 7)];
        let of = |id| matches.iter().find(|(i, _)| *i == id).unwrap().1;
        assert_eq!(majority_value(&[1, 2, 3], of), 7);
        assert_eq!(majority_value(&[1], of), 5);
        assert_eq!(majority_value(&[1, 2], of), 5);
    }

    #[test]
    fn votes_tally() {
        let mut votes = BTreeMap::new();
        votes.insert(1, true);
        assert_eq!(vote_result(&[1, 2, 3], &votes), VoteResult::Pending);
        votes.insert(2, false);
        votes.insert(3, false);
        assert_eq!(vote_result(&[1, 2, 3], &votes), VoteResult::Lost);
        votes.insert(3, true);
        assert_eq!(vote_result(&[1, 2, 3], &votes), VoteResult::Won);
        votes.insert(9, true);
        assert_eq!(vote_result(&[1, 2, 3, 4, 5], &votes), VoteResult::Pending);
    }

    #[test]
    fn joint_decisions_need_both_majorities() {
        let matches = [(1, 9), (2, 8), (3, 2), (4, 1)];
        let of = |id| matches.iter().find(|(i, _)| *i == id).unwrap().1;
        // {1,2,3} alone would commit 8; {1,2,4} too; {3,4,1} only 2.
        assert_eq!(joint_majority_value(&[1, 2, 3], &[], of), 8);
        assert_eq!(joint_majority_value(&[1, 2, 4], &[1, 2, 3], of), 8);
        assert_eq!(joint_majority_value(&[1, 2, 3], &[1, 3, 4], of), 2);
        let mut votes = BTreeMap::new();
        votes.insert(1, true);
        votes.insert(2, true);
        assert_eq!(joint_vote_result(&[1, 2, 3], &[], &votes), VoteResult::Won);
        assert_eq!(joint_vote_result(&[1, 2, 3], &[1, 4, 5], &votes), VoteResult::Pending);
        votes.insert(4, false);
        votes.insert(5, false);
        assert_eq!(joint_vote_result(&[1, 2, 3], &[1, 4, 5], &votes), VoteResult::Lost);
        votes.remove(&4);
        votes.insert(5, true);
        assert_eq!(joint_vote_result(&[1, 2, 3], &[1, 4, 5], &votes), VoteResult::Won);
    }
}
