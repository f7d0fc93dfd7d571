//! `RawNode`: the interface the server drives. Inputs are `tick`, `step`,
//! `propose`, `propose_conf_change`, `read_index`, `transfer_leader` and the
//! `report_*` calls; the output is one `Ready` at a time, acknowledged with
//! `advance`.

use super::confchange::{CHANGES_PER_GROUP_MAX, ConfChange, ConfChangeError, ConfChangeV2};
use super::config::Config;
use super::error::{RaftError, StepError};
use super::message::Message;
use super::progress::ProgressState;
use super::raft::{Raft, Role};
use super::read_only::ReadState;
use super::storage::Storage;
use super::types::{ConfState, Entry, EntryKind, HardState, NodeId, Snapshot};

/// Bytes of committed entries handed out in one `Ready`, so that a member
/// catching up after a long outage applies in bounded steps (the rest follows
/// in the next `Ready`).
pub const COMMITTED_SIZE_PER_READY_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// What changes often and is never persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub leader_id: NodeId,
    pub role: Role,
}

/// Everything one iteration must do, in this order and nowhere else:
///
/// 1. send `messages` (the leader's appends and heartbeats may leave before
///    its own log is durable, Raft thesis §10.2.1);
/// 2. append `entries` and `hard_state` (and `snapshot`) to storage; fsync
///    when `must_sync`;
/// 3. send `persisted_messages` (votes and responses promise durable state);
/// 4. apply `snapshot`, then `committed_entries`; serve `read_states` once
///    their index is applied; record `conf_state` if present;
/// 5. call `RawNode::advance`.
#[derive(Debug, Default)]
pub struct Ready {
    /// Present when the leader or role changed.
    pub soft_state: Option<SoftState>,
    /// Present when term, vote or commit changed.
    pub hard_state: Option<HardState>,
    pub read_states: Vec<ReadState>,
    /// Entries to append to storage (replacing any conflicting tail).
    pub entries: Vec<Entry>,
    /// A snapshot from the leader to persist and apply.
    pub snapshot: Option<Snapshot>,
    /// Entries committed and durable, to apply in order.
    pub committed_entries: Vec<Entry>,
    /// May be sent before this `Ready` is durable.
    pub messages: Vec<Message>,
    /// Must wait until this `Ready` is durable.
    pub persisted_messages: Vec<Message>,
    /// Entries, a snapshot, or a new term or vote must reach the disk before
    /// `persisted_messages` go out.
    pub must_sync: bool,
    /// The membership after applying this `Ready`'s changes, when it changed.
    pub conf_state: Option<ConfState>,
}

/// What a handed-out `Ready` covered, to be acknowledged by `advance`.
#[derive(Debug, Clone, Copy)]
struct Handed {
    last_entry: Option<(u64, u64)>,
    snapshot_index: Option<u64>,
    last_committed_index: Option<u64>,
}

/// A peer's replication state as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    pub is_learner: bool,
    /// Leader ticks since the peer last answered (`u64::MAX`: not yet).
    pub heard_ago_ticks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub vote: NodeId,
    pub leader_id: NodeId,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    /// Filled on the leader only.
    pub progress: Vec<PeerStatus>,
}

/// One Raft member, driven by the caller. See `Ready` for the loop.
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    previous_soft_state: SoftState,
    previous_hard_state: HardState,
    /// Set between `ready` and `advance`.
    handed: Option<Handed>,
}

impl<S: Storage> RawNode<S> {
    pub fn new(config: &Config, storage: S) -> Result<RawNode<S>, RaftError> {
        let raft = Raft::new(config, storage)?;
        let previous_soft_state = SoftState { leader_id: raft.leader_id, role: raft.role };
        let previous_hard_state = hard_state_of(&raft);
        Ok(RawNode { raft, previous_soft_state, previous_hard_state, handed: None })
    }

    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (tests and operator tools).
    pub fn campaign(&mut self) {
        self.raft.hup();
    }

    /// Handles a message from a peer; a dropped message is logged and the
    /// reason returned.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.raft.step(m)
    }

    /// Proposes `data` for the log; on a follower it is forwarded to the
    /// leader. Success means queued, not committed.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), RaftError> {
        let entry = Entry { term: 0, index: 0, kind: EntryKind::Normal, data };
        self.raft.propose(vec![entry])
    }

    /// Proposes several commands as one batch (one append per follower).
    pub fn propose_batch(&mut self, batch: Vec<Vec<u8>>) -> Result<(), RaftError> {
        let entries = batch.into_iter().map(|data| Entry {
            term: 0,
            index: 0,
            kind: EntryKind::Normal,
            data,
        });
        self.raft.propose(entries.collect())
    }

    /// Proposes a membership change. It takes effect on each member when the
    /// member applies it; only one may be pending at a time.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<(), RaftError> {
        let entry = Entry { term: 0, index: 0, kind: EntryKind::ConfChange, data: change.encode() };
        self.raft.propose(vec![entry])
    }

    /// Proposes a group of membership changes: several at once go through a
    /// joint configuration, and no changes at all leave one. Refused while
    /// another change is pending, and while joint for anything but leaving.
    pub fn propose_conf_change_v2(&mut self, cc: ConfChangeV2) -> Result<(), RaftError> {
        // The encoding holds at most this many; refuse rather than cut.
        if cc.changes.len() > CHANGES_PER_GROUP_MAX {
            return Err(RaftError::ConfChange(ConfChangeError::TooManyChanges));
        }
        let entry = Entry { term: 0, index: 0, kind: EntryKind::ConfChange, data: cc.encode() };
        self.raft.propose(vec![entry])
    }

    /// Asks for a linearizable read point; the answer comes as a `ReadState`
    /// with the same `context` in a later `Ready`.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), RaftError> {
        self.raft.read_index(context)
    }

    /// Hands leadership to `target` (leader only). Proposals are refused until
    /// it succeeds or an election timeout passes.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), RaftError> {
        self.raft.transfer_leader(target)
    }

    /// Tells the leader whether the snapshot sent to `id` arrived.
    pub fn report_snapshot(&mut self, id: NodeId, success: bool) {
        self.raft.report_snapshot(id, success);
    }

    /// Tells the leader that a message to `id` could not be delivered.
    pub fn report_unreachable(&mut self, id: NodeId) {
        self.raft.report_unreachable(id);
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.raft.conf
    }

    pub fn status(&self) -> Status {
        let raft = &self.raft;
        let progress = if raft.role == Role::Leader {
            raft.progress
                .iter()
                .map(|(id, p)| PeerStatus {
                    id: *id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state,
                    is_learner: p.is_learner,
                    heard_ago_ticks: p.heard_ago_ticks,
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: raft.id,
            role: raft.role,
            term: raft.term,
            vote: raft.vote,
            leader_id: raft.leader_id,
            commit: raft.log.committed,
            applied: raft.log.applied,
            last_index: raft.log.last_index(),
            progress,
        }
    }

    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        if self.handed.is_some() {
            return false;
        }
        self.soft_state() != self.previous_soft_state
            || hard_state_of(raft) != self.previous_hard_state
            || !raft.log.unstable.entries.is_empty()
            || raft.log.unstable.snapshot.is_some()
            || !raft.read_states.is_empty()
            || !raft.msgs.is_empty()
            || raft.log.has_next_committed_entries()
            || raft.needs_flush()
            || raft.conf_changed
    }

    fn soft_state(&self) -> SoftState {
        SoftState { leader_id: self.raft.leader_id, role: self.raft.role }
    }

    /// The work of this iteration. Calling it again before `advance` is a bug.
    pub fn ready(&mut self) -> Ready {
        assert!(self.handed.is_none(), "ready() called twice without advance()");
        self.raft.flush();
        let committed_entries =
            self.raft.log.next_committed_entries(COMMITTED_SIZE_PER_READY_BYTES_MAX);
        self.apply_committed(&committed_entries);
        let raft = &mut self.raft;
        let entries = raft.log.unstable.entries.clone();
        let snapshot = raft.log.unstable.snapshot.clone();
        let hard_state = hard_state_of(raft);
        let vote_changed = hard_state.term != self.previous_hard_state.term
            || hard_state.vote != self.previous_hard_state.vote;
        let (messages, persisted_messages) = std::mem::take(&mut raft.msgs)
            .into_iter()
            .partition(|m| m.kind.may_send_before_persist());
        let conf_state = std::mem::take(&mut raft.conf_changed).then(|| raft.conf.clone());
        let soft_state = SoftState { leader_id: raft.leader_id, role: raft.role };
        let ready = Ready {
            soft_state: (soft_state != self.previous_soft_state).then_some(soft_state),
            hard_state: (hard_state != self.previous_hard_state).then_some(hard_state),
            read_states: std::mem::take(&mut raft.read_states),
            must_sync: !entries.is_empty() || snapshot.is_some() || vote_changed,
            entries,
            snapshot,
            committed_entries,
            messages,
            persisted_messages,
            conf_state,
        };
        self.previous_soft_state = soft_state;
        self.previous_hard_state = hard_state;
        self.handed = Some(Handed {
            last_entry: ready.entries.last().map(|e| (e.index, e.term)),
            snapshot_index: ready.snapshot.as_ref().map(|s| s.meta.index),
            last_committed_index: ready.committed_entries.last().map(|e| e.index),
        });
        ready
    }

    /// Membership changes take effect as they are handed out for applying;
    /// the applied bytes leave the leader's uncommitted budget.
    fn apply_committed(&mut self, committed_entries: &[Entry]) {
        let mut size_bytes = 0;
        for entry in committed_entries {
            size_bytes += entry.size_bytes();
            if entry.kind == EntryKind::ConfChange {
                self.raft.apply_conf_change_entry(entry);
            }
        }
        self.raft.uncommitted_size_bytes =
            self.raft.uncommitted_size_bytes.saturating_sub(size_bytes);
    }

    /// Acknowledges the last `Ready`: its entries and snapshot are durable and
    /// its committed entries applied.
    pub fn advance(&mut self) {
        let handed = self.handed.take().expect("advance() called without ready()");
        let log = &mut self.raft.log;
        if let Some(index) = handed.snapshot_index {
            log.unstable.stable_snapshot_to(index);
            log.applied_to(index);
        }
        if let Some((index, term)) = handed.last_entry {
            log.unstable.stable_to(index, term);
        }
        if let Some(index) = handed.last_committed_index {
            log.applied_to(index);
        }
        let persisted = log.persisted_index();
        self.raft.own_entries_persisted(persisted);
        self.raft.maybe_auto_leave();
    }
}

fn hard_state_of<S: Storage>(raft: &Raft<S>) -> HardState {
    HardState { term: raft.term, vote: raft.vote, commit: raft.log.committed }
}
