//! What members say to each other. `Message` crosses the network, so it
//! derives serde; the transport encodes it, raft never does.

use serde::{Deserialize, Serialize};

use super::types::{Entry, NO_NODE, NodeId, Snapshot};

/// The largest index or term a peer may name. Anything above is refused at
/// the door, so `index + 1` and `term + 1` can never overflow inside raft. At
/// a million entries (or elections) a second it takes 146,000 years to reach.
pub const INDEX_OR_TERM_MAX: u64 = 1 << 62;

/// The kinds of message. Requests and their responses are listed in pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// Leader → follower: entries after (`index`, `log_term`), and `commit`.
    Append,
    /// Follower → leader: `index` is the follower's last matching index, or
    /// with `reject` the index that did not match plus a hint
    /// (`reject_hint`, `log_term`) of where the logs may agree.
    AppendResponse,
    /// Leader → follower: keeps the leadership alive, carries `commit` and the
    /// ReadIndex `read_round`.
    Heartbeat,
    /// Follower → leader: echoes `read_round`.
    HeartbeatResponse,
    /// Candidate → voter: `term`, last log `index` and `log_term`.
    RequestVote,
    RequestVoteResponse,
    /// A trial round: `term` is the term the candidate would campaign in.
    RequestPreVote,
    RequestPreVoteResponse,
    /// Leader → follower: a snapshot in `snapshot`.
    Snapshot,
    /// Follower → leader: a forwarded proposal (term 0).
    Propose,
    /// Follower → leader: a forwarded read request; `context` identifies it.
    ReadIndex,
    /// Leader → follower: the read may be served once `index` is applied.
    ReadIndexResponse,
    /// Leader → transfer target: campaign now, ignoring the election timeout.
    TimeoutNow,
    /// Follower → leader, handled by the server and never stepped: a
    /// member whose store a majority outvoted asks for a state-machine
    /// image at an index in [`commit`, `index`] (`index`: its applied
    /// index; `commit`: the index before the first entry its log holds).
    RepairAsk,
    /// Leader → follower, the header of a stream carrying that image; its
    /// `snapshot` names the image's index and term.
    RepairImage,
}

impl MessageKind {
    /// Whether the message may leave before the `Ready` that produced it is
    /// durable. Votes, vote requests and every response promise something
    /// about the sender's persisted state, so they must wait.
    pub fn may_send_before_persist(self) -> bool {
        matches!(
            self,
            MessageKind::Append
                | MessageKind::Heartbeat
                | MessageKind::Snapshot
                | MessageKind::Propose
                | MessageKind::ReadIndex
                | MessageKind::ReadIndexResponse
                | MessageKind::TimeoutNow
        )
    }

    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageKind::AppendResponse
                | MessageKind::HeartbeatResponse
                | MessageKind::RequestVoteResponse
                | MessageKind::RequestPreVoteResponse
                | MessageKind::ReadIndexResponse
        )
    }
}

/// One message between members. Fields a kind does not use stay at their
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub kind: MessageKind,
    pub to: NodeId,
    pub from: NodeId,
    /// The sender's term; 0 for `Propose` and `ReadIndex`, which carry none.
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<Entry>,
    pub commit: u64,
    pub snapshot: Option<Snapshot>,
    pub reject: bool,
    pub reject_hint: u64,
    /// The ReadIndex round a heartbeat confirms (see `read_only.rs`).
    pub read_round: u64,
    /// Opaque to raft: the id of a read request, or the transfer marker on
    /// vote requests.
    pub context: Vec<u8>,
}

impl Message {
    /// Whether every index and term the message names is within
    /// `INDEX_OR_TERM_MAX`.
    pub fn numbers_in_range(&self) -> bool {
        let fields = [self.term, self.log_term, self.index, self.commit, self.reject_hint];
        let entries = self.entries.iter().flat_map(|e| [e.index, e.term]);
        let snapshot = self.snapshot.iter().flat_map(|s| [s.meta.index, s.meta.term]);
        fields.into_iter().chain(entries).chain(snapshot).all(|n| n <= INDEX_OR_TERM_MAX)
    }

    pub fn new(kind: MessageKind, to: NodeId) -> Message {
        Message {
            kind,
            to,
            from: NO_NODE,
            term: 0,
            log_term: 0,
            index: 0,
            entries: Vec::new(),
            commit: 0,
            snapshot: None,
            reject: false,
            reject_hint: 0,
            read_round: 0,
            context: Vec::new(),
        }
    }
}
