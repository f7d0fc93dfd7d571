//! The cluster version in the loop: this member's own version, the
//! leader proposing the cluster version when the table calls for it, and
//! the refusals of a member too old for the cluster (at start, from its
//! snapshot and the committed entries of its log; at runtime, once it
//! applies a cluster version above its own release).
//!
//! The decisions themselves are pure and replicated (`state::version`);
//! only the timing lives here.

use std::time::Instant;

use super::ServeError;
use super::members::PUBLISH_RETRY;
use super::node::Node;
use crate::raft::Storage;
use crate::state::version::{self, Feature};
use crate::state::{Op, StateMachine, Version};
use crate::storage::DiskStorage;

/// Fault injection only: the version this member claims instead of its
/// own (`major.minor.patch`), so tests can run members of other versions
/// from one build.
#[cfg(feature = "fault-injection")]
pub const FAULT_VERSION_ENV: &str = "EMBER_FAULT_VERSION";

/// Bytes of committed entries read at a time by the check at start: the
/// log after the snapshot is read in pieces this size, never whole.
pub const START_CHECK_BATCH_BYTES: u64 = 4 << 20;

/// This build's version, from Cargo.
pub fn build_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is major.minor.patch")
}

/// The version this member runs and publishes: the build's, or under
/// fault injection the one `EMBER_FAULT_VERSION` names.
pub fn own_version() -> Result<Version, ServeError> {
    #[cfg(feature = "fault-injection")]
    if let Some(text) = crate::flags::process_env(FAULT_VERSION_ENV) {
        return Version::parse(&text).ok_or_else(|| {
            ServeError::Config(format!("{FAULT_VERSION_ENV}={text:?} is not major.minor.patch"))
        });
    }
    Ok(build_version())
}

/// Refuses to start a member older than the cluster version its snapshot
/// holds, or that the committed entries after it lead to. Reads only:
/// a refused member leaves its data directory as it found it.
pub fn check_at_start(
    own: Version,
    storage: &DiskStorage,
    state: &StateMachine,
) -> Result<(), ServeError> {
    let mut replay = state.version_replay();
    let commit = storage.wal.hard_state().commit.min(storage.wal.last_index());
    let mut next = state.applied_index() + 1;
    while next <= commit {
        let entries = storage
            .entries(next, commit + 1, START_CHECK_BATCH_BYTES)
            .map_err(|e| ServeError::Corrupt(format!("reading entries from {next}: {e:?}")))?;
        let Some(last) = entries.last() else { break };
        next = last.index + 1;
        entries.iter().for_each(|entry| replay.feed(entry));
    }
    refuse_if_too_old(own, replay.cluster_version())
}

/// `ServeError::TooOld` when `own` is below the cluster version.
fn refuse_if_too_old(own: Version, cluster: Option<Version>) -> Result<(), ServeError> {
    match cluster {
        Some(cluster) if !version::can_run(own, Some(cluster)) => {
            let message = version::too_old_message(own, cluster);
            log::error!("{message}");
            Err(ServeError::TooOld(message))
        }
        _ => Ok(()),
    }
}

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
        let ids: Vec<u64> = self.state.members().iter().map(|m| m.id).collect();
        let current = self.state.cluster_version();
        let published = self.state.member_versions();
        let Some(next) = version::next_cluster_version(current, &ids, published) else { return };
        self.next_cluster_version_proposal = now + PUBLISH_RETRY;
        let op = Op::ClusterVersion(next);
        if let Err(e) = self.proposals.propose_unwaited(&mut self.raft, vec![op]) {
            log::debug!("proposing cluster version {}: {e:?}", next.release_text());
        }
    }

    /// Stops a member whose applied state now holds a cluster version
    /// above its own release (a snapshot from the leader, or the entry
    /// itself): it cannot read what the cluster may write from now on.
    pub(super) fn check_cluster_version(&self) -> Result<(), ServeError> {
        refuse_if_too_old(self.version, self.state.cluster_version())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_version_parses_and_the_refusal_names_both_versions() {
        let own = build_version();
        assert_eq!(own.to_string(), env!("CARGO_PKG_VERSION"));
        assert!(refuse_if_too_old(own, None).is_ok());
        assert!(refuse_if_too_old(own, Some(own.release())).is_ok());
        let above = Version::new(own.major, own.minor + 1, 0);
        let Err(ServeError::TooOld(message)) = refuse_if_too_old(own, Some(above)) else {
            panic!("a newer cluster version must refuse");
        };
        assert!(message.contains(&own.to_string()), "{message}");
        assert!(message.contains(&above.release_text()), "{message}");
    }
}
