//! The errors of the raft API: what a caller did that cannot be done now, and
//! why a peer's message was dropped.

use super::confchange::ConfChangeError;
use super::config::ConfigError;
use super::storage::StorageError;
use super::types::NodeId;

/// Why a call on `RawNode` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftError {
    /// No leader is known, a leadership transfer is under way, or this
    /// member is not in the cluster: the proposal was not queued.
    ProposalDropped,
    /// The leader's uncommitted entries already reach
    /// `max_uncommitted_entries_bytes`.
    UncommittedCapExceeded,
    /// A membership change is still waiting to be applied.
    ConfChangePending,
    ConfChange(ConfChangeError),
    /// `PENDING_READS_MAX` reads are already queued.
    ReadQueueFull,
    /// Only the leader can do this.
    NotLeader,
    /// The id is not a voter of the cluster.
    NotAVoter(NodeId),
    Config(ConfigError),
    Storage(StorageError),
    /// The stored state contradicts itself (for example a commit index past
    /// the last entry, or `applied` past the commit index).
    CorruptState(&'static str),
}

impl std::fmt::Display for RaftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaftError::ProposalDropped => f.write_str("proposal dropped: no leader to take it"),
            RaftError::UncommittedCapExceeded => f.write_str("too many uncommitted bytes"),
            RaftError::ConfChangePending => f.write_str("a membership change is pending"),
            RaftError::ConfChange(e) => write!(f, "{e}"),
            RaftError::ReadQueueFull => f.write_str("too many pending reads"),
            RaftError::NotLeader => f.write_str("not the leader"),
            RaftError::NotAVoter(id) => write!(f, "member {id} is not a voter"),
            RaftError::Config(e) => write!(f, "config: {e}"),
            RaftError::Storage(e) => write!(f, "{e}"),
            RaftError::CorruptState(what) => write!(f, "corrupt raft state: {what}"),
        }
    }
}

impl std::error::Error for RaftError {}

impl From<StorageError> for RaftError {
    fn from(e: StorageError) -> RaftError {
        RaftError::Storage(e)
    }
}

/// Why `step` dropped a message. Every case is logged; none is fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Addressed to another member.
    WrongRecipient(NodeId),
    /// From a member this one does not know, for a kind that needs one.
    UnknownSender(NodeId),
    /// From an older term.
    StaleTerm,
    /// Fields that no correct member sends.
    Malformed(&'static str),
    /// Asks to overwrite a committed entry, which no correct leader does.
    CommittedConflict(u64),
    /// Well formed but meaningless in this member's role.
    Unexpected(&'static str),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::WrongRecipient(id) => write!(f, "message for member {id}"),
            StepError::UnknownSender(id) => write!(f, "message from unknown member {id}"),
            StepError::StaleTerm => f.write_str("message from an older term"),
            StepError::Malformed(what) => write!(f, "malformed message: {what}"),
            StepError::CommittedConflict(index) => {
                write!(f, "append conflicts with committed entry {index}")
            }
            StepError::Unexpected(what) => write!(f, "unexpected message: {what}"),
        }
    }
}

impl std::error::Error for StepError {}
