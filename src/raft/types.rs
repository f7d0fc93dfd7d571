//! The values Raft persists and exchanges: entries, hard state, membership and
//! snapshot metadata. They derive serde so the WAL, snapshot files and the
//! peer transport can encode them; raft itself never encodes anything.

use serde::{Deserialize, Serialize};

/// A member's id. Zero is never a member: it means "none" (no vote, no leader).
pub type NodeId = u64;

/// The id that stands for "nobody".
pub const NO_NODE: NodeId = 0;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// An application command (empty for the leader's no-op of its term).
    Normal,
    /// A membership change, applied to the configuration on commit.
    ConfChange,
}

/// One slot of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: u64,
    /// Invariant: index ≥ 1; consecutive entries in a log have consecutive indexes.
    pub index: u64,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

impl Entry {
    /// Bytes this entry counts for against size caps (payload plus a fixed
    /// allowance for index, term and kind).
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The state a member must persist before it answers a message: its term, its
/// vote in that term, and how far it knows the log to be committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: u64,
    pub vote: NodeId,
    pub commit: u64,
}

impl HardState {
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// The membership of the cluster. During a joint change `voters_outgoing` is
/// non-empty and decisions need a majority of both voter sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub voters_outgoing: Vec<NodeId>,
    /// Learners that become voters when the joint configuration is left.
    pub learners_next: Vec<NodeId>,
    /// Leave the joint configuration automatically once it is committed.
    pub auto_leave: bool,
}

impl ConfState {
    /// A joint configuration: decisions need a majority of `voters` and one
    /// of `voters_outgoing`.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// A voter of either set.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Every voter of either set, ascending, once each.
    pub fn all_voters(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> =
            self.voters.iter().chain(&self.voters_outgoing).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Whether `id` is a voter or learner of either set.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }
}

/// Where a snapshot sits in the log and which membership it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
}

/// A state machine image covering the log up to `meta.index`. The payload is
/// opaque to raft.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.meta.index == 0
    }
}
