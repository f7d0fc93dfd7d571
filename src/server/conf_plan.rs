//! Which Raft configuration change the leader proposes next so that Raft's
//! voters and learners follow the member table without losing a quorum
//! of reachable voters on the way.
//!
//! The table may ask for a voter Raft does not have yet. Adding it straight
//! away as a voter grows the quorum by a member that may not be running or
//! caught up: with one voter already down, a three-member cluster that
//! becomes four needs the newcomer before it can commit again. So:
//! - a new voter that would leave no reachable quorum joins as a learner
//!   first, and is promoted once it answers and has caught up;
//! - a replacement (one voter in, one out) whose one-at-a-time path would
//!   pass through a configuration without a reachable quorum goes through
//!   a joint configuration instead, when both of its halves have one (the
//!   replaced member may be the one that is down: the members kept carry
//!   both halves), and Raft leaves it on its own once it is applied;
//! - everything else is the table's one-at-a-time change
//!   (`state::members::next_conf_change`).
//!
//! Pure: reachability comes in as the ids of voters the leader heard from
//! lately and whose logs are caught up (the leader itself included).

use crate::raft::{ConfChange, ConfChangeKind, ConfChangeTransition, ConfChangeV2, ConfState};
use crate::state::MemberRecord;
use crate::state::members::next_conf_change;

/// The change to propose now, if any. `ready` lists the members the leader
/// heard from within an election timeout whose logs are caught up.
pub fn plan_conf_change(
    members: &[MemberRecord],
    conf: &ConfState,
    ready: &[u64],
) -> Option<ConfChangeV2> {
    if conf.is_joint() {
        // Raft leaves an automatic joint configuration by itself.
        return (!conf.auto_leave).then(ConfChangeV2::leave_joint);
    }
    if let Some(joint) = joint_replacement(members, conf, ready) {
        return Some(joint);
    }
    let change = next_conf_change(members, &conf.voters, &conf.learners)?;
    if change.kind != ConfChangeKind::AddVoter || has_quorum(&grown(conf, change.node_id), ready) {
        return Some(change.into());
    }
    if conf.learners.contains(&change.node_id) {
        // A learner that is not caught up yet: wait for it.
        return None;
    }
    Some(ConfChange { kind: ConfChangeKind::AddLearner, node_id: change.node_id }.into())
}

/// A joint change that puts voter `incoming` in the place of voter
/// `outgoing`, when the table asks for both and going one at a time would
/// lose the reachable quorum that the joint configuration keeps.
fn joint_replacement(
    members: &[MemberRecord],
    conf: &ConfState,
    ready: &[u64],
) -> Option<ConfChangeV2> {
    let is_table_voter = |id: &u64| members.iter().any(|m| m.id == *id && !m.is_learner);
    let incoming = members.iter().find(|m| !m.is_learner && !conf.voters.contains(&m.id))?.id;
    let outgoing = *conf.voters.iter().find(|id| !is_table_voter(id))?;
    // The members kept must be a majority of the old voters (see
    // `raft::confchange` on liveness): one replaced out of three or more.
    if conf.voters.len() < 3 || has_quorum(&grown(conf, incoming), ready) {
        return None;
    }
    let mut after: Vec<u64> = conf.voters.iter().copied().filter(|id| *id != outgoing).collect();
    after.push(incoming);
    if !(has_quorum(&conf.voters, ready) && has_quorum(&after, ready)) {
        return None;
    }
    let demoted = members.iter().any(|m| m.id == outgoing && m.is_learner);
    let out_kind = if demoted { ConfChangeKind::AddLearner } else { ConfChangeKind::RemoveNode };
    Some(ConfChangeV2 {
        transition: ConfChangeTransition::Auto,
        changes: vec![
            ConfChange { kind: ConfChangeKind::AddVoter, node_id: incoming },
            ConfChange { kind: out_kind, node_id: outgoing },
        ],
    })
}

/// The voters with `id` added.
fn grown(conf: &ConfState, id: u64) -> Vec<u64> {
    let mut voters = conf.voters.clone();
    voters.push(id);
    voters
}

fn has_quorum(voters: &[u64], ready: &[u64]) -> bool {
    voters.iter().filter(|id| ready.contains(id)).count() > voters.len() / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ConfChangeKind::{AddLearner, AddVoter, RemoveNode};

    fn record(id: u64, is_learner: bool) -> MemberRecord {
        MemberRecord {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:7380")],
            client_urls: vec![format!("http://10.0.0.{id}:7379")],
            is_learner,
        }
    }

    fn table(voters: &[u64], learners: &[u64]) -> Vec<MemberRecord> {
        let mut all: Vec<MemberRecord> = voters.iter().map(|id| record(*id, false)).collect();
        all.extend(learners.iter().map(|id| record(*id, true)));
        all.sort_by_key(|m| m.id);
        all
    }

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState { voters: voters.to_vec(), learners: learners.to_vec(), ..ConfState::default() }
    }

    fn changes(plan: Option<ConfChangeV2>) -> Vec<(ConfChangeKind, u64)> {
        plan.unwrap().changes.iter().map(|c| (c.kind, c.node_id)).collect()
    }

    #[test]
    fn replacing_a_down_member_goes_joint() {
        let plan = plan_conf_change(&table(&[1, 2, 4], &[]), &conf(&[1, 2, 3], &[]), &[1, 2]);
        assert_eq!(changes(plan.clone()), [(AddVoter, 4), (RemoveNode, 3)]);
        assert_eq!(plan.unwrap().enters_joint(), Some(true));
    }

    #[test]
    fn a_replacement_with_everyone_reachable_goes_one_at_a_time() {
        let plan =
            plan_conf_change(&table(&[1, 2, 4], &[]), &conf(&[1, 2, 3], &[4]), &[1, 2, 3, 4]);
        assert_eq!(changes(plan), [(AddVoter, 4)]);
    }

    #[test]
    fn a_replacement_without_a_reachable_quorum_either_way_waits_as_a_learner() {
        // 2 and 3 down: no joint quorum; the newcomer is staged as a learner.
        let plan = plan_conf_change(&table(&[1, 2, 4], &[]), &conf(&[1, 2, 3], &[]), &[1]);
        assert_eq!(changes(plan), [(AddLearner, 4)]);
        // Staged, not caught up: nothing to do yet.
        assert_eq!(plan_conf_change(&table(&[1, 2, 4], &[]), &conf(&[1, 2, 3], &[4]), &[1]), None);
    }

    #[test]
    fn a_new_voter_that_would_lose_the_quorum_is_a_learner_first() {
        // Growing from one board: the second joins as a learner, then votes.
        let plan = plan_conf_change(&table(&[1, 2], &[]), &conf(&[1], &[]), &[1]);
        assert_eq!(changes(plan), [(AddLearner, 2)]);
        assert_eq!(plan_conf_change(&table(&[1, 2], &[]), &conf(&[1], &[2]), &[1]), None);
        let plan = plan_conf_change(&table(&[1, 2], &[]), &conf(&[1], &[2]), &[1, 2]);
        assert_eq!(changes(plan), [(AddVoter, 2)]);
        // Three reachable of three: a fourth voter keeps a quorum.
        let plan = plan_conf_change(&table(&[1, 2, 3, 4], &[]), &conf(&[1, 2, 3], &[]), &[1, 2, 3]);
        assert_eq!(changes(plan), [(AddVoter, 4)]);
    }

    #[test]
    fn two_members_never_go_joint() {
        // {1,2} → {1,3} jointly would need 2 and 3 alike; through {1,2,3}
        // only two of three.
        let plan = plan_conf_change(&table(&[1, 3], &[]), &conf(&[1, 2], &[]), &[1, 2]);
        assert_eq!(changes(plan), [(AddVoter, 3)]);
        let plan = plan_conf_change(&table(&[1, 3], &[]), &conf(&[1, 2], &[]), &[1]);
        assert_eq!(changes(plan), [(AddLearner, 3)]);
    }

    #[test]
    fn a_joint_configuration_is_left_unless_raft_leaves_it() {
        let mut joint = conf(&[1, 2, 4], &[]);
        joint.voters_outgoing = vec![1, 2, 3];
        assert_eq!(
            plan_conf_change(&table(&[1, 2, 4], &[]), &joint, &[1, 2]),
            Some(ConfChangeV2::leave_joint())
        );
        joint.auto_leave = true;
        assert_eq!(plan_conf_change(&table(&[1, 2, 4], &[]), &joint, &[1, 2]), None);
    }

    #[test]
    fn removals_and_learners_pass_through() {
        let plan = plan_conf_change(&table(&[1, 2], &[]), &conf(&[1, 2, 3], &[]), &[1, 2]);
        assert_eq!(changes(plan), [(RemoveNode, 3)]);
        let plan = plan_conf_change(&table(&[1, 2, 3], &[5]), &conf(&[1, 2, 3], &[]), &[1]);
        assert_eq!(changes(plan), [(AddLearner, 5)]);
        assert_eq!(plan_conf_change(&table(&[1, 2, 3], &[]), &conf(&[1, 2, 3], &[]), &[1]), None);
    }
}
