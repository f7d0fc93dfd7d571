//! The cluster version in the loop: the leader proposing it when the
//! table calls for it, the stop of a member that applied one above its own
//! release, and the gate future layouts ask.
//!
//! The rules are pure and replicated (`state::version`); the start-up
//! refusal and this member's own version are in `version.rs`.

use std::time::Instant;

use super::ServeError;
use super::members::PUBLISH_RETRY;
use super::node::Node;
use super::version::refuse_if_too_old;
use crate::state::Op;
use crate::state::version::{self, Feature};

impl Node {
    /// True when every member can read what `feature` writes: the code
    /// that would write a new entry layout or peer message asks first.
    pub fn supports(&self, feature: Feature) -> bool {
        version::supports(self.state.cluster_version(), feature)
    }

    /// Leader only: proposes the cluster version once every member has
    /// published a version and their lowest release is above the current
    /// one; retried every `PUBLISH_RETRY` until applied.
    pub(super) fn maybe_propose_cluster_version(&mut self, now: Instant) {
        let is_leader = self.leader_id == self.config.member_id;
        if !is_leader || now < self.next_cluster_version_proposal {
            return;
        }
        // Asked on every loop turn of the leader: the ids are read in
        // place, nothing is allocated.
        let ids = self.state.members().iter().map(|m| m.id);
        let current = self.state.cluster_version();
        let published = self.state.member_versions();
        let Some(next) = version::next_cluster_version(current, ids, published) else { return };
        self.next_cluster_version_proposal = now + PUBLISH_RETRY;
        let op = Op::ClusterVersion(next);
        if let Err(e) = self.proposals.propose_unwaited(&mut self.raft, vec![op]) {
            log::debug!("proposing cluster version {}: {e:?}", next.release_text());
        }
    }

    /// Stops a member whose applied state now holds a cluster version
    /// above its own release (a snapshot from the leader, or the entry
    /// itself): it cannot read what the cluster may write from now on.
    /// Otherwise writes from now on the layouts that version allows.
    pub(super) fn follow_cluster_version(&mut self) -> Result<(), ServeError> {
        refuse_if_too_old(self.version, self.state.cluster_version())?;
        let sequence_only = self.supports(Feature::SequenceOnlyCommand);
        self.proposals.use_sequence_only(sequence_only);
        Ok(())
    }
}
