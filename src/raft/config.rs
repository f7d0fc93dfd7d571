//! The settings of one Raft member, checked once before the member starts.

use super::progress::INFLIGHT_MSGS_CAPACITY_MAX;
use super::types::{NO_NODE, NodeId};

/// A rule the core breaks on purpose, so the simulator can show that it
/// notices. Only a build with the `planted-bugs` feature (the tests') acts
/// on it; any other refuses a configuration that names one.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlantedBug {
    #[default]
    None,
    /// Grant a vote even after voting for someone else in the same term.
    VoteTwice,
    /// Commit by counting replicas, whatever the term of the entry.
    CommitOldTerm,
    /// Grant votes without checking that the candidate's log is up to date.
    IgnoreLogUpToDate,
    /// Answer ReadIndex requests without confirming leadership with a quorum.
    ReadWithoutQuorum,
}

/// How one member runs. Ticks are the caller's unit of time (etcd uses 100 ms).
#[derive(Debug, Clone)]
pub struct Config {
    /// This member's id; never `NO_NODE`.
    pub id: NodeId,
    /// Ticks without hearing from a leader before a follower campaigns. The
    /// actual timeout is drawn from `[election_tick, 2 * election_tick)`.
    /// Invariant: `election_tick > heartbeat_tick`.
    pub election_tick: usize,
    /// Ticks between the leader's heartbeats. Invariant: ≥ 1.
    pub heartbeat_tick: usize,
    /// The last index the state machine applied before a restart; committed
    /// entries are handed out from `applied + 1`.
    pub applied: u64,
    /// Cap on the entry bytes of one append message (at least one entry is
    /// always sent).
    pub max_size_per_msg_bytes: u64,
    /// Append messages in flight to one follower in the replicate state.
    /// Invariant: `1 ..= INFLIGHT_MSGS_CAPACITY_MAX`.
    pub max_inflight_msgs: usize,
    /// Bytes of proposed but uncommitted entries past which the leader refuses
    /// new proposals.
    pub max_uncommitted_entries_bytes: u64,
    /// Ask for votes in a trial round first, so a member that was cut off does
    /// not raise the term and depose a healthy leader on its return.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an
    /// election timeout; followers then ignore votes while they still hear a
    /// leader.
    pub check_quorum: bool,
    /// Seed of the election-timeout generator.
    pub seed: u64,
    #[doc(hidden)]
    pub planted_bug: PlantedBug,
}

impl Config {
    /// The defaults of DESIGN.md (heartbeat 1 tick, election 10 ticks) for `id`.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 0,
            max_size_per_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_entries_bytes: 64 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            seed: id,
            planted_bug: PlantedBug::None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NO_NODE {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_tick == 0 {
            return Err(ConfigError::HeartbeatTickZero);
        }
        if !cfg!(feature = "planted-bugs") && self.planted_bug != PlantedBug::None {
            return Err(ConfigError::PlantedBugNotBuilt);
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError::ElectionTickNotAboveHeartbeat);
        }
        if self.max_inflight_msgs == 0 || self.max_inflight_msgs > INFLIGHT_MSGS_CAPACITY_MAX {
            return Err(ConfigError::MaxInflightOutOfRange);
        }
        if self.max_size_per_msg_bytes == 0 {
            return Err(ConfigError::MaxSizePerMsgZero);
        }
        if self.max_uncommitted_entries_bytes == 0 {
            return Err(ConfigError::MaxUncommittedZero);
        }
        Ok(())
    }
}

/// Why a `Config` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    ZeroId,
    HeartbeatTickZero,
    ElectionTickNotAboveHeartbeat,
    MaxInflightOutOfRange,
    MaxSizePerMsgZero,
    MaxUncommittedZero,
    /// A planted bug was asked of a build without the `planted-bugs` feature.
    PlantedBugNotBuilt,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            ConfigError::ZeroId => "id must not be 0",
            ConfigError::HeartbeatTickZero => "heartbeat_tick must be at least 1",
            ConfigError::ElectionTickNotAboveHeartbeat => {
                "election_tick must be greater than heartbeat_tick"
            }
            ConfigError::MaxInflightOutOfRange => "max_inflight_msgs out of range",
            ConfigError::MaxSizePerMsgZero => "max_size_per_msg_bytes must be positive",
            ConfigError::MaxUncommittedZero => "max_uncommitted_entries_bytes must be positive",
            ConfigError::PlantedBugNotBuilt => {
                "planted bugs exist only with the planted-bugs feature"
            }
        };
        f.write_str(text)
    }
}

impl std::error::Error for ConfigError {}
