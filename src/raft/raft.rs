//! The consensus state machine of one member: roles, terms, votes, the
//! replicated log and everything the leader tracks. `RawNode` wraps it with
//! the `Ready` interface; this file holds the rules.
//!
//! Input arrives as `tick`, `step` and the proposal methods; output leaves
//! through `msgs` (collected into the next `Ready`), the log's unstable tail,
//! and `read_states`.

use std::collections::BTreeMap;

use log::{debug, info, warn};

use super::confchange::{self, ConfChangeV2};
use super::config::{Config, PlantedBug};
use super::error::{RaftError, StepError};
use super::log::RaftLog;
use super::message::{Message, MessageKind};
use super::progress::{Progress, ProgressState};
use super::quorum::{self, VoteResult};
use super::read_only::{PENDING_READS_MAX, ReadOnly, ReadState};
use super::rng::Rng;
use super::storage::{Storage, StorageError};
use super::types::{ConfState, Entry, EntryKind, NO_NODE, NodeId, Snapshot};

/// The context a vote request carries when a leadership transfer asked for
/// it; voters then grant it even while they still hear a leader.
pub const TRANSFER_CONTEXT: &[u8] = b"transfer";

/// Messages queued between two `Ready`s. A leader of 4 followers sends a few
/// per proposal batch; 65536 means something is not draining `Ready`, and
/// further messages are dropped (the protocol retries) instead of growing.
pub const QUEUED_MESSAGES_MAX: usize = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Campaign {
    PreElection,
    Election,
    Transfer,
}

pub struct Raft<S: Storage> {
    pub id: NodeId,
    pub term: u64,
    /// Whom this member voted for in `term`, or `NO_NODE`.
    pub vote: NodeId,
    pub role: Role,
    pub leader_id: NodeId,
    pub log: RaftLog<S>,
    /// The membership as applied so far.
    pub conf: ConfState,
    /// One entry per voter and learner of `conf` (including this member).
    pub progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    /// Bounded by `QUEUED_MESSAGES_MAX`.
    pub msgs: Vec<Message>,
    pub read_states: Vec<ReadState>,
    pub read_only: ReadOnly,
    election_elapsed_ticks: usize,
    heartbeat_elapsed_ticks: usize,
    /// Drawn from `[election_tick, 2 * election_tick)` at every role change.
    randomized_election_timeout_ticks: usize,
    election_tick: usize,
    heartbeat_tick: usize,
    max_size_per_msg_bytes: u64,
    max_inflight_msgs: usize,
    max_uncommitted_entries_bytes: u64,
    pre_vote: bool,
    check_quorum: bool,
    /// The index of the newest membership change in the log (leader only):
    /// another may be proposed once `applied` reaches it, and a joint
    /// configuration with `auto_leave` is left once it is applied.
    pending_conf_index: u64,
    /// Bytes of entries appended by this leader and not yet handed out for
    /// applying.
    pub uncommitted_size_bytes: u64,
    /// The member leadership is being handed to, or `NO_NODE`.
    pub lead_transferee: NodeId,
    /// Proposals were appended and not yet broadcast (they go out as one
    /// batch per `Ready`).
    pub append_pending: bool,
    /// The membership changed since the last `Ready`.
    pub conf_changed: bool,
    rng: Rng,
    #[cfg(feature = "planted-bugs")]
    planted_bug: PlantedBug,
}

impl<S: Storage> Raft<S> {
    /// Whether the simulator switched on `bug`. Without the `planted-bugs`
    /// feature it is always false and the branches it guards compile away:
    /// a release build carries none of them.
    #[cfg(feature = "planted-bugs")]
    fn planted(&self, bug: PlantedBug) -> bool {
        self.planted_bug == bug
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn planted(&self, _bug: PlantedBug) -> bool {
        false
    }

    pub fn new(config: &Config, storage: S) -> Result<Raft<S>, RaftError> {
        config.validate().map_err(RaftError::Config)?;
        let (hard_state, conf_state) = storage.initial_state()?;
        let mut log = RaftLog::new(storage)?;
        if hard_state.commit > log.last_index() {
            return Err(RaftError::CorruptState("commit index past the last entry"));
        }
        let applied = config.applied.max(log.first_index() - 1);
        if applied > hard_state.commit.max(log.first_index() - 1) {
            return Err(RaftError::CorruptState("applied index past the commit index"));
        }
        log.committed = hard_state.commit.max(log.first_index() - 1);
        log.applied = applied;
        let mut raft = Raft {
            id: config.id,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader_id: NO_NODE,
            log,
            conf: conf_state,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            msgs: Vec::new(),
            read_states: Vec::new(),
            read_only: ReadOnly::default(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: config.election_tick,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            max_size_per_msg_bytes: config.max_size_per_msg_bytes,
            max_inflight_msgs: config.max_inflight_msgs,
            max_uncommitted_entries_bytes: config.max_uncommitted_entries_bytes,
            pre_vote: config.pre_vote,
            check_quorum: config.check_quorum,
            pending_conf_index: 0,
            uncommitted_size_bytes: 0,
            lead_transferee: NO_NODE,
            append_pending: false,
            conf_changed: false,
            rng: Rng::new(config.seed ^ config.id.rotate_left(32)),
            #[cfg(feature = "planted-bugs")]
            planted_bug: config.planted_bug,
        };
        raft.replay_applied_conf_changes()?;
        raft.sync_progress();
        let term = raft.term;
        raft.become_follower(term, NO_NODE);
        Ok(raft)
    }

    /// Storage gives the membership as of its snapshot (or later); changes in
    /// entries the state machine applied before a restart are not handed out
    /// again, so they are replayed here.
    fn replay_applied_conf_changes(&mut self) -> Result<(), RaftError> {
        let low = self.log.first_index();
        let high = self.log.applied + 1;
        if low >= high {
            return Ok(());
        }
        for entry in self.log.entries(low, high, u64::MAX)? {
            if entry.kind == EntryKind::ConfChange {
                self.apply_conf_change_entry(&entry);
            }
        }
        self.conf_changed = false;
        Ok(())
    }

    // ----- roles -----

    /// A voter of either set may campaign: while joint, an outgoing voter's
    /// vote still decides.
    pub fn promotable(&self) -> bool {
        self.conf.is_voter(self.id)
    }

    fn is_single_voter(&self) -> bool {
        !self.conf.is_joint() && self.conf.voters == [self.id]
    }

    /// Makes `progress` hold exactly the members of `conf`.
    fn sync_progress(&mut self) {
        let next_index = self.log.last_index() + 1;
        let inflight = self.max_inflight_msgs;
        self.progress.retain(|id, _| self.conf.is_member(*id));
        for (id, is_learner) in member_roles(&self.conf) {
            let progress = self
                .progress
                .entry(id)
                .or_insert_with(|| Progress::new(next_index, inflight, is_learner));
            progress.is_learner = is_learner;
        }
    }

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader_id = NO_NODE;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.randomized_election_timeout_ticks =
            self.election_tick + self.rng.below(self.election_tick as u64) as usize;
        self.lead_transferee = NO_NODE;
        self.votes.clear();
        self.pending_conf_index = 0;
        self.uncommitted_size_bytes = 0;
        self.append_pending = false;
        self.read_only.reset();
        let next_index = self.log.last_index() + 1;
        let inflight = self.max_inflight_msgs;
        let persisted = self.log.persisted_index();
        for (id, progress) in self.progress.iter_mut() {
            *progress = Progress::new(next_index, inflight, progress.is_learner);
            if *id == self.id {
                progress.match_index = persisted;
                progress.heard();
            }
        }
    }

    pub fn become_follower(&mut self, term: u64, leader_id: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader_id;
        debug!("raft {:016x}: follower in term {term}, leader {leader_id:016x}", self.id);
    }

    fn become_pre_candidate(&mut self) {
        // Term and vote stay: a pre-election promises nothing.
        self.votes.clear();
        self.leader_id = NO_NODE;
        self.role = Role::PreCandidate;
        self.election_elapsed_ticks = 0;
        self.randomized_election_timeout_ticks =
            self.election_tick + self.rng.below(self.election_tick as u64) as usize;
        debug!("raft {:016x}: pre-candidate in term {}", self.id, self.term);
    }

    fn become_candidate(&mut self) {
        assert!(self.role != Role::Leader, "a leader cannot become a candidate");
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.role = Role::Candidate;
        debug!("raft {:016x}: candidate in term {term}", self.id);
    }

    fn become_leader(&mut self) {
        assert!(self.role != Role::Follower, "a follower cannot become leader directly");
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader_id = self.id;
        let persisted = self.log.persisted_index();
        if let Some(own) = self.progress.get_mut(&self.id) {
            own.match_index = persisted;
            own.become_replicate();
        }
        // No membership change may be proposed before the entries of earlier
        // terms, which may hold one, are applied.
        self.pending_conf_index = self.log.last_index();
        let noop = Entry {
            term,
            index: self.log.last_index() + 1,
            kind: EntryKind::Normal,
            data: Vec::new(),
        };
        self.log.append(&[noop]);
        info!("raft {:016x}: leader in term {term}", self.id);
    }

    // ----- time -----

    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_heartbeat();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.promotable()
            && self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
        {
            self.election_elapsed_ticks = 0;
            self.hup();
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        let own_id = self.id;
        for (id, progress) in self.progress.iter_mut() {
            if *id != own_id {
                progress.heard_ago_ticks = progress.heard_ago_ticks.saturating_add(1);
            }
        }
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.election_tick {
            self.election_elapsed_ticks = 0;
            if self.check_quorum && !self.quorum_recently_active() {
                warn!(
                    "raft {:016x}: lost contact with a quorum, stepping down in term {}",
                    self.id, self.term
                );
                let term = self.term;
                self.become_follower(term, NO_NODE);
                return;
            }
            if self.lead_transferee != NO_NODE {
                info!(
                    "raft {:016x}: leadership transfer to {:016x} timed out",
                    self.id, self.lead_transferee
                );
                self.lead_transferee = NO_NODE;
            }
        }
        if self.heartbeat_elapsed_ticks >= self.heartbeat_tick {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum was heard from since the last check; starts the next
    /// check period.
    fn quorum_recently_active(&mut self) -> bool {
        let own_id = self.id;
        let progress = &self.progress;
        let active = self.conf_majority_value(|id| {
            u64::from(id == own_id || progress.get(&id).is_some_and(|p| p.recent_active))
        });
        for (id, progress) in self.progress.iter_mut() {
            progress.recent_active = *id == own_id;
        }
        active == 1
    }

    /// Starts an election, if this member may and no membership change is
    /// committed but not yet applied (the vote would count the wrong voters).
    pub fn hup(&mut self) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_change() {
            warn!("raft {:016x}: not campaigning with an unapplied membership change", self.id);
            return;
        }
        self.campaign(if self.pre_vote { Campaign::PreElection } else { Campaign::Election });
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let low = self.log.applied + 1;
        let high = self.log.committed + 1;
        let entries = self.log.entries(low, high, u64::MAX).unwrap_or_default();
        entries.iter().any(|e| e.kind == EntryKind::ConfChange)
    }

    fn campaign(&mut self, campaign: Campaign) {
        let (vote_term, kind) = if campaign == Campaign::PreElection {
            self.become_pre_candidate();
            (self.term + 1, MessageKind::RequestPreVote)
        } else {
            self.become_candidate();
            (self.term, MessageKind::RequestVote)
        };
        let own_id = self.id;
        if self.poll(own_id, true) == VoteResult::Won {
            return;
        }
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        for id in self.conf.all_voters() {
            if id == own_id {
                continue;
            }
            let mut m = Message::new(kind, id);
            m.term = vote_term;
            m.index = last_index;
            m.log_term = last_term;
            if campaign == Campaign::Transfer {
                m.context = TRANSFER_CONTEXT.to_vec();
            }
            self.send(m);
        }
    }

    /// Records a vote and acts on the result.
    fn poll(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.votes.entry(from).or_insert(granted);
        let result =
            quorum::joint_vote_result(&self.conf.voters, &self.conf.voters_outgoing, &self.votes);
        match result {
            VoteResult::Won if self.role == Role::PreCandidate => self.campaign(Campaign::Election),
            VoteResult::Won => {
                self.become_leader();
                self.broadcast_append();
            }
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, NO_NODE);
            }
            VoteResult::Pending => {}
        }
        result
    }

    // ----- sending -----

    fn send(&mut self, mut m: Message) {
        if self.msgs.len() >= QUEUED_MESSAGES_MAX {
            warn!(
                "raft {:016x}: message queue full, dropping {:?} to {:016x}",
                self.id, m.kind, m.to
            );
            return;
        }
        m.from = self.id;
        let carries_own_term = !matches!(
            m.kind,
            MessageKind::Propose
                | MessageKind::ReadIndex
                | MessageKind::RequestPreVote
                | MessageKind::RequestPreVoteResponse
        );
        if carries_own_term {
            m.term = self.term;
        }
        self.msgs.push(m);
    }

    /// Sends the next append (or a snapshot) to `to` unless it is paused;
    /// false when nothing was sent.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else { return false };
        if progress.is_paused() {
            return false;
        }
        let next_index = progress.next_index;
        let last_index = self.log.last_index();
        let prev_term = self.log.term(next_index - 1);
        let entries = self.log.entries(next_index, last_index + 1, self.max_size_per_msg_bytes);
        let (Ok(prev_term), Ok(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let sent_last_index = entries.last().map_or(next_index - 1, |e| e.index);
        let entry_count = entries.len();
        let mut m = Message::new(MessageKind::Append, to);
        m.index = next_index - 1;
        m.log_term = prev_term;
        m.entries = entries;
        m.commit = self.log.committed;
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.sent_append(entry_count, sent_last_index);
        }
        self.send(m);
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let request_index = self.progress.get(&to).map_or(0, |p| p.next_index - 1);
        let snapshot = match self.log.snapshot(request_index) {
            Ok(snapshot) => snapshot,
            Err(StorageError::SnapshotTemporarilyUnavailable) => {
                debug!("raft {:016x}: snapshot for {to:016x} not ready yet", self.id);
                return false;
            }
            Err(e) => {
                warn!("raft {:016x}: cannot read a snapshot for {to:016x}: {e}", self.id);
                return false;
            }
        };
        if snapshot.is_empty() {
            warn!(
                "raft {:016x}: entries for {to:016x} are compacted but storage has no snapshot",
                self.id
            );
            return false;
        }
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(snapshot.meta.index);
        }
        debug!("raft {:016x}: sending snapshot at {} to {to:016x}", self.id, snapshot.meta.index);
        let mut m = Message::new(MessageKind::Snapshot, to);
        m.snapshot = Some(snapshot);
        self.send(m);
        true
    }

    pub fn broadcast_append(&mut self) {
        self.append_pending = false;
        let peers: Vec<NodeId> =
            self.progress.keys().copied().filter(|id| *id != self.id).collect();
        for id in peers {
            self.send_append(id, true);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let round = self.read_only.round;
        let peers: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (*id, p.match_index))
            .collect();
        for (id, match_index) in peers {
            let mut m = Message::new(MessageKind::Heartbeat, id);
            m.commit = match_index.min(self.log.committed);
            m.read_round = round;
            self.send(m);
        }
    }

    /// Sends what batching held back: appended proposals and a ReadIndex
    /// round for the reads queued since the last one. Called once per `Ready`.
    pub fn flush(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.append_pending {
            self.broadcast_append();
        }
        if self.read_only.has_unassigned() {
            let round = self.read_only.start_round();
            if self.is_single_voter() || self.planted(PlantedBug::ReadWithoutQuorum) {
                self.release_reads(round);
            } else {
                self.broadcast_heartbeat();
            }
        }
    }

    pub fn needs_flush(&self) -> bool {
        self.role == Role::Leader && (self.append_pending || self.read_only.has_unassigned())
    }

    // ----- commit -----

    /// Advances the commit index to what a majority of voters hold, counting
    /// only an entry of the current term (§5.4.2). Returns whether it moved.
    pub fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let quorum_index =
            self.conf_majority_value(|id| progress.get(&id).map_or(0, |p| p.match_index));
        let term_required = if self.planted(PlantedBug::CommitOldTerm) { 0 } else { self.term };
        let quorum_index = quorum_index.min(self.log.last_index());
        if !self.log.maybe_commit(quorum_index, term_required) {
            return false;
        }
        if self.log.term_or_zero(self.log.committed) == self.term {
            for (from, context) in self.read_only.take_waiting() {
                self.queue_read(from, context);
            }
        }
        true
    }

    /// Notes that this leader's log is durable up to `index` (thesis §10.2.1:
    /// the leader counts its own disk like a follower's).
    pub fn own_entries_persisted(&mut self, index: u64) {
        if self.role != Role::Leader {
            return;
        }
        let updated = self.progress.get_mut(&self.id).is_some_and(|p| p.maybe_update(index));
        if updated && self.maybe_commit() {
            self.broadcast_append();
        }
    }

    // ----- local requests -----

    pub fn propose(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        match self.role {
            Role::Leader => self.append_proposal(entries),
            Role::Follower if self.leader_id != NO_NODE => {
                let mut m = Message::new(MessageKind::Propose, self.leader_id);
                m.entries = entries;
                self.send(m);
                Ok(())
            }
            _ => Err(RaftError::ProposalDropped),
        }
    }

    fn append_proposal(&mut self, mut entries: Vec<Entry>) -> Result<(), RaftError> {
        if self.lead_transferee != NO_NODE || !self.progress.contains_key(&self.id) {
            return Err(RaftError::ProposalDropped);
        }
        let conf_index = self.check_conf_change_proposal(&entries)?;
        let size_bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        if self.uncommitted_size_bytes > 0
            && self.uncommitted_size_bytes + size_bytes > self.max_uncommitted_entries_bytes
        {
            return Err(RaftError::UncommittedCapExceeded);
        }
        let first_index = self.log.last_index() + 1;
        for (offset, entry) in entries.iter_mut().enumerate() {
            entry.term = self.term;
            entry.index = first_index + offset as u64;
        }
        if let Some(offset) = conf_index {
            self.pending_conf_index = first_index + offset as u64;
        }
        self.uncommitted_size_bytes += size_bytes;
        self.log.append(&entries);
        self.append_pending = true;
        if self.is_single_voter() {
            // Nobody to send to; commit waits for this member's own disk.
            self.append_pending = false;
        }
        Ok(())
    }

    /// Checks the membership change among `entries` (at most one) and
    /// returns its position.
    fn check_conf_change_proposal(&self, entries: &[Entry]) -> Result<Option<usize>, RaftError> {
        let mut found = None;
        for (position, entry) in entries.iter().enumerate() {
            if entry.kind != EntryKind::ConfChange {
                continue;
            }
            if found.is_some() || self.pending_conf_index > self.log.applied {
                return Err(RaftError::ConfChangePending);
            }
            // Checked against the applied membership, which the pending rule
            // makes the latest: a change while joint, other than leaving,
            // is refused here.
            let cc = ConfChangeV2::decode(&entry.data).map_err(RaftError::ConfChange)?;
            confchange::apply_v2(&self.conf, &cc).map_err(RaftError::ConfChange)?;
            found = Some(position);
        }
        Ok(found)
    }

    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), RaftError> {
        match self.role {
            Role::Leader => {
                let own_id = self.id;
                self.handle_read_index(own_id, context)
            }
            Role::Follower if self.leader_id != NO_NODE => {
                let mut m = Message::new(MessageKind::ReadIndex, self.leader_id);
                m.context = context;
                self.send(m);
                Ok(())
            }
            _ => Err(RaftError::ProposalDropped),
        }
    }

    fn handle_read_index(&mut self, from: NodeId, context: Vec<u8>) -> Result<(), RaftError> {
        if self.read_only.len() >= PENDING_READS_MAX {
            return Err(RaftError::ReadQueueFull);
        }
        if self.log.term_or_zero(self.log.committed) != self.term {
            self.read_only.push_waiting(from, context);
            return Ok(());
        }
        self.queue_read(from, context);
        Ok(())
    }

    fn queue_read(&mut self, from: NodeId, context: Vec<u8>) {
        let index = self.log.committed;
        self.read_only.push(from, context, index);
    }

    fn release_reads(&mut self, confirmed_round: u64) {
        for request in self.read_only.release(confirmed_round) {
            if request.from == self.id {
                self.read_states.push(ReadState { index: request.index, context: request.context });
            } else {
                let mut m = Message::new(MessageKind::ReadIndexResponse, request.from);
                m.index = request.index;
                m.context = request.context;
                self.send(m);
            }
        }
    }

    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader);
        }
        if !self.conf.is_voter(target) {
            return Err(RaftError::NotAVoter(target));
        }
        if target == self.id || target == self.lead_transferee {
            return Ok(());
        }
        info!("raft {:016x}: transferring leadership to {target:016x}", self.id);
        self.lead_transferee = target;
        self.election_elapsed_ticks = 0;
        let caught_up =
            self.progress.get(&target).is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(Message::new(MessageKind::TimeoutNow, target));
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    pub fn report_snapshot(&mut self, id: NodeId, success: bool) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&id) else { return };
        if progress.state != ProgressState::Snapshot {
            return;
        }
        if !success {
            progress.pending_snapshot = 0;
        }
        progress.become_probe();
        // Wait for the next heartbeat response before probing again.
        progress.probe_sent = true;
    }

    pub fn report_unreachable(&mut self, id: NodeId) {
        let Some(progress) = self.progress.get_mut(&id) else { return };
        if progress.state == ProgressState::Replicate {
            progress.become_probe();
        }
    }

    // ----- membership -----

    /// Applies a committed membership entry. An entry that does not decode
    /// or apply was refused by no leader check (a peer's bytes): it is
    /// skipped alike on every member, since each applies the same entries
    /// to the same membership.
    pub fn apply_conf_change_entry(&mut self, entry: &Entry) {
        let applied = ConfChangeV2::decode(&entry.data)
            .and_then(|cc| confchange::apply_v2(&self.conf, &cc).map(|conf| (cc, conf)));
        let (cc, conf) = match applied {
            Ok(applied) => applied,
            Err(e) => {
                warn!("raft {:016x}: skipping membership entry {}: {e}", self.id, entry.index);
                return;
            }
        };
        info!(
            "raft {:016x}: membership {:?} {:?} -> voters {:?} outgoing {:?} learners {:?}",
            self.id, cc.transition, cc.changes, conf.voters, conf.voters_outgoing, conf.learners
        );
        self.conf = conf;
        self.conf_changed = true;
        self.sync_progress();
        self.after_conf_change();
    }

    fn after_conf_change(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if !self.promotable() {
            info!("raft {:016x}: no longer a voter, stepping down", self.id);
            let term = self.term;
            self.become_follower(term, NO_NODE);
            return;
        }
        if self.lead_transferee != NO_NODE && !self.conf.is_voter(self.lead_transferee) {
            self.lead_transferee = NO_NODE;
        }
        if self.maybe_commit() {
            self.broadcast_append();
        } else {
            self.append_pending = true;
        }
    }

    /// Leader only: proposes leaving a joint configuration marked
    /// `auto_leave` once the change that entered it is applied. A refused
    /// proposal (a transfer under way, the uncommitted cap) is retried at
    /// the next call.
    pub fn maybe_auto_leave(&mut self) {
        let due = self.role == Role::Leader
            && self.conf.auto_leave
            && self.pending_conf_index <= self.log.applied;
        if !due {
            return;
        }
        let data = ConfChangeV2::leave_joint().encode();
        let entry = Entry { term: 0, index: 0, kind: EntryKind::ConfChange, data };
        match self.append_proposal(vec![entry]) {
            Ok(()) => info!("raft {:016x}: leaving the joint configuration", self.id),
            Err(e) => debug!("raft {:016x}: leaving the joint configuration later: {e}", self.id),
        }
    }

    /// The largest value a majority of every voter set has reached.
    fn conf_majority_value(&self, value_of: impl Fn(NodeId) -> u64) -> u64 {
        quorum::joint_majority_value(&self.conf.voters, &self.conf.voters_outgoing, value_of)
    }

    // ----- stepping -----

    /// Handles one message from a peer. Anything that does not fit is logged
    /// and dropped; the error says why.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        let result = self.step_checked(m);
        if let Err(e) = &result {
            match e {
                StepError::StaleTerm | StepError::Unexpected(_) => {
                    debug!("raft {:016x}: dropped: {e}", self.id)
                }
                _ => warn!("raft {:016x}: dropped: {e}", self.id),
            }
        }
        result
    }

    fn step_checked(&mut self, m: Message) -> Result<(), StepError> {
        self.validate(&m)?;
        if !self.step_term(&m)? {
            return Ok(());
        }
        match m.kind {
            MessageKind::RequestVote | MessageKind::RequestPreVote => {
                self.handle_vote_request(&m);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn is_member(&self, id: NodeId) -> bool {
        self.progress.contains_key(&id)
    }

    /// Checks what can be checked without state: addressing, term presence,
    /// the shape of entries and snapshots.
    fn validate(&self, m: &Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::WrongRecipient(m.to));
        }
        if m.from == NO_NODE || m.from == self.id {
            return Err(StepError::Malformed("sender id"));
        }
        if !m.numbers_in_range() {
            return Err(StepError::Malformed("index or term out of range"));
        }
        let termless = matches!(m.kind, MessageKind::Propose | MessageKind::ReadIndex);
        if !termless && m.term == 0 {
            return Err(StepError::Malformed("term 0"));
        }
        // Answers and proposals only count from members. Leader traffic and
        // vote requests may come from a member added by a change this one has
        // not applied yet; refusing them could leave the cluster without a
        // leader (the newer members need this one's vote to catch it up).
        let needs_member = m.kind.is_response() || m.kind == MessageKind::Propose;
        if needs_member && !self.is_member(m.from) {
            return Err(StepError::UnknownSender(m.from));
        }
        match m.kind {
            MessageKind::Append => validate_entries(m),
            MessageKind::Snapshot => validate_snapshot(m),
            MessageKind::Propose if m.entries.is_empty() => {
                Err(StepError::Malformed("empty proposal"))
            }
            _ => Ok(()),
        }
    }

    /// Applies the term rules (§5.1). Ok(false): handled, stop here.
    fn step_term(&mut self, m: &Message) -> Result<bool, StepError> {
        if m.term == 0 || m.term == self.term {
            return Ok(true);
        }
        if m.term > self.term {
            return Ok(self.step_higher_term(m));
        }
        if matches!(m.kind, MessageKind::Append | MessageKind::Heartbeat) {
            // Tell a leader of an older term about ours. Pre-vote and
            // check-quorum may keep it from learning otherwise, and a member
            // that does not yet know it is a voter never campaigns: without
            // this answer such a leader would wait for it forever. Leaders
            // send only to members, so removed members cause no disruption.
            self.send(Message::new(MessageKind::AppendResponse, m.from));
        } else if matches!(m.kind, MessageKind::RequestVote | MessageKind::RequestPreVote) {
            // Refuse with our term (§5.1), so the candidate catches up. A
            // candidate that voters do not count as a member would otherwise
            // never hear of newer terms and keep campaigning in stale ones.
            let kind = if m.kind == MessageKind::RequestVote {
                MessageKind::RequestVoteResponse
            } else {
                MessageKind::RequestPreVoteResponse
            };
            let mut response = Message::new(kind, m.from);
            response.term = self.term;
            response.reject = true;
            self.send(response);
        }
        Err(StepError::StaleTerm)
    }

    fn step_higher_term(&mut self, m: &Message) -> bool {
        let is_vote = matches!(m.kind, MessageKind::RequestVote | MessageKind::RequestPreVote);
        if is_vote {
            // Thesis §4.2.3: while a leader is heard, a vote request can only
            // come from a member that was cut off or removed; granting it (or
            // even adopting its term) would depose a working leader. Only with
            // check-quorum: without it a cut-off member rejoins only by
            // raising the term, and a leader may be heard that cannot lead.
            let forced = m.context == TRANSFER_CONTEXT;
            let in_lease = self.check_quorum
                && self.leader_id != NO_NODE
                && self.election_elapsed_ticks < self.election_tick;
            if in_lease && !forced {
                debug!(
                    "raft {:016x}: ignoring vote from {:016x} while a leader is heard",
                    self.id, m.from
                );
                return false;
            }
        }
        match m.kind {
            MessageKind::RequestPreVote => {}
            MessageKind::RequestPreVoteResponse if !m.reject => {}
            MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                self.become_follower(m.term, m.from)
            }
            _ => self.become_follower(m.term, NO_NODE),
        }
        true
    }

    fn handle_vote_request(&mut self, m: &Message) {
        let pre = m.kind == MessageKind::RequestPreVote;
        let mut can_vote = self.vote == m.from
            || (self.vote == NO_NODE && self.leader_id == NO_NODE)
            || (pre && m.term > self.term);
        if self.planted(PlantedBug::VoteTwice) && !pre && self.leader_id == NO_NODE {
            can_vote = true;
        }
        let up_to_date = self.log.is_up_to_date(m.index, m.log_term)
            || self.planted(PlantedBug::IgnoreLogUpToDate);
        let kind = if pre {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        let mut response = Message::new(kind, m.from);
        if can_vote && up_to_date {
            response.term = if pre { m.term } else { self.term };
            if !pre {
                self.election_elapsed_ticks = 0;
                self.vote = m.from;
            }
        } else {
            response.term = self.term;
            response.reject = true;
        }
        self.send(response);
    }

    fn step_leader(&mut self, m: Message) -> Result<(), StepError> {
        match m.kind {
            MessageKind::Propose => self
                .append_proposal(m.entries)
                .map_err(|_| StepError::Unexpected("forwarded proposal refused")),
            MessageKind::ReadIndex => self
                .handle_read_index(m.from, m.context)
                .map_err(|_| StepError::Unexpected("forwarded read refused")),
            MessageKind::AppendResponse => self.handle_append_response(&m),
            MessageKind::HeartbeatResponse => self.handle_heartbeat_response(&m),
            MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                Err(StepError::Unexpected("leader traffic from another leader of this term"))
            }
            _ => Err(StepError::Unexpected("not for a leader")),
        }
    }

    fn handle_append_response(&mut self, m: &Message) -> Result<(), StepError> {
        let last_index = self.log.last_index();
        if !m.reject && m.index > last_index {
            return Err(StepError::Malformed("acknowledges entries never sent"));
        }
        let hint = if m.reject && m.log_term > 0 {
            self.log.find_conflict_by_term(m.reject_hint, m.log_term).0
        } else {
            m.reject_hint
        };
        let first_index = self.log.first_index();
        let Some(progress) = self.progress.get_mut(&m.from) else { return Ok(()) };
        progress.heard();
        if m.reject {
            if progress.maybe_decrease_to(m.index, hint) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.send_append(m.from, false);
            }
            return Ok(());
        }
        if !progress.maybe_update(m.index) {
            return Ok(());
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot if progress.match_index + 1 >= first_index => {
                progress.become_probe();
                progress.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => progress.inflights.free_to(m.index),
        }
        let caught_up = progress.match_index == last_index;
        if self.maybe_commit() {
            self.broadcast_append();
        } else {
            while self.send_append(m.from, false) {}
        }
        if m.from == self.lead_transferee && caught_up {
            info!("raft {:016x}: {:016x} caught up, asking it to campaign", self.id, m.from);
            self.send(Message::new(MessageKind::TimeoutNow, m.from));
        }
        Ok(())
    }

    fn handle_heartbeat_response(&mut self, m: &Message) -> Result<(), StepError> {
        if m.read_round > self.read_only.round {
            return Err(StepError::Malformed("confirms a read round never started"));
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&m.from) else { return Ok(()) };
        progress.heard();
        progress.probe_sent = false;
        progress.read_round_acked = progress.read_round_acked.max(m.read_round);
        if progress.state == ProgressState::Replicate && progress.inflights.full() {
            progress.inflights.free_first();
        }
        if progress.match_index < last_index {
            // Even an empty append helps: if the optimistic sends were lost,
            // the follower's rejection resets `next_index`.
            self.send_append(m.from, true);
        }
        let own_id = self.id;
        let own_round = self.read_only.round;
        let progress = &self.progress;
        let confirmed = self.conf_majority_value(|id| {
            if id == own_id {
                own_round
            } else {
                progress.get(&id).map_or(0, |p| p.read_round_acked)
            }
        });
        self.release_reads(confirmed);
        Ok(())
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), StepError> {
        let wanted = if self.role == Role::PreCandidate {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        match m.kind {
            MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                self.become_follower(m.term, m.from);
                self.step_follower(m)
            }
            kind if kind == wanted => {
                self.poll(m.from, !m.reject);
                Ok(())
            }
            _ => Err(StepError::Unexpected("not for a candidate")),
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), StepError> {
        match m.kind {
            MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                self.election_elapsed_ticks = 0;
                self.leader_id = m.from;
                match m.kind {
                    MessageKind::Append => self.handle_append(&m),
                    MessageKind::Heartbeat => self.handle_heartbeat(&m),
                    _ => self.handle_snapshot(m),
                }
            }
            MessageKind::Propose if self.leader_id != NO_NODE => {
                let mut forward = Message::new(MessageKind::Propose, self.leader_id);
                forward.entries = m.entries;
                self.send(forward);
                Ok(())
            }
            MessageKind::TimeoutNow if self.promotable() => {
                info!("raft {:016x}: campaigning at the leader's request", self.id);
                self.campaign(Campaign::Transfer);
                Ok(())
            }
            MessageKind::ReadIndexResponse => {
                self.read_states.push(ReadState { index: m.index, context: m.context });
                Ok(())
            }
            _ => Err(StepError::Unexpected("not for a follower")),
        }
    }

    fn respond_append(&mut self, to: NodeId, index: u64) {
        let mut response = Message::new(MessageKind::AppendResponse, to);
        response.index = index;
        self.send(response);
    }

    fn handle_append(&mut self, m: &Message) -> Result<(), StepError> {
        if m.index < self.log.committed {
            let committed = self.log.committed;
            self.respond_append(m.from, committed);
            return Ok(());
        }
        match self.log.maybe_append(m.index, m.log_term, &m.entries) {
            Some(Ok(last_new_index)) => {
                self.log.commit_to(m.commit.min(last_new_index));
                self.respond_append(m.from, last_new_index);
                Ok(())
            }
            Some(Err(conflict)) => Err(StepError::CommittedConflict(conflict)),
            None => {
                let probe_index = m.index.min(self.log.last_index());
                let (hint_index, hint_term) =
                    self.log.find_conflict_by_term(probe_index, m.log_term);
                let mut response = Message::new(MessageKind::AppendResponse, m.from);
                response.index = m.index;
                response.reject = true;
                response.reject_hint = hint_index;
                response.log_term = hint_term;
                self.send(response);
                Ok(())
            }
        }
    }

    fn handle_heartbeat(&mut self, m: &Message) -> Result<(), StepError> {
        if m.commit > self.log.last_index() {
            return Err(StepError::Malformed("heartbeat commit past the log"));
        }
        self.log.commit_to(m.commit);
        let mut response = Message::new(MessageKind::HeartbeatResponse, m.from);
        response.read_round = m.read_round;
        self.send(response);
        Ok(())
    }

    fn handle_snapshot(&mut self, m: Message) -> Result<(), StepError> {
        let from = m.from;
        let Some(snapshot) = m.snapshot else { return Err(StepError::Malformed("no snapshot")) };
        let index = snapshot.meta.index;
        if self.restore(snapshot) {
            info!("raft {:016x}: restored snapshot at {index} from {from:016x}", self.id);
            let last_index = self.log.last_index();
            self.respond_append(from, last_index);
        } else {
            let committed = self.log.committed;
            self.respond_append(from, committed);
        }
        Ok(())
    }

    /// Replaces the log with `snapshot` unless the log already holds what it
    /// covers. True when restored.
    fn restore(&mut self, snapshot: Snapshot) -> bool {
        let meta = &snapshot.meta;
        if meta.index <= self.log.committed {
            return false;
        }
        if self.log.match_term(meta.index, meta.term) {
            // The log already has the snapshot's last entry: just commit.
            self.log.commit_to(meta.index);
            return false;
        }
        self.conf = meta.conf_state.clone();
        self.conf_changed = true;
        self.log.restore(snapshot);
        self.sync_progress();
        true
    }
}

/// Each member of `conf` with whether it is a learner. A voter demoted
/// while joint (`learners_next`) still votes in the outgoing set.
fn member_roles(conf: &ConfState) -> Vec<(NodeId, bool)> {
    let voters = conf.all_voters().into_iter().map(|id| (id, false));
    voters.chain(conf.learners.iter().map(|id| (*id, true))).collect()
}

fn validate_entries(m: &Message) -> Result<(), StepError> {
    if m.log_term > m.term {
        return Err(StepError::Malformed("previous term after the message term"));
    }
    let mut previous_term = m.log_term;
    for (position, entry) in m.entries.iter().enumerate() {
        let expected = m
            .index
            .checked_add(1 + position as u64)
            .ok_or(StepError::Malformed("index overflow"))?;
        if entry.index != expected {
            return Err(StepError::Malformed("entries not contiguous"));
        }
        if entry.term < previous_term || entry.term > m.term {
            return Err(StepError::Malformed("entry terms out of order"));
        }
        previous_term = entry.term;
    }
    Ok(())
}

fn validate_snapshot(m: &Message) -> Result<(), StepError> {
    let Some(snapshot) = &m.snapshot else { return Err(StepError::Malformed("no snapshot")) };
    let meta = &snapshot.meta;
    if meta.index == 0 || meta.term == 0 || meta.term > m.term {
        return Err(StepError::Malformed("snapshot index or term"));
    }
    confchange::check(&meta.conf_state).map_err(|_| StepError::Malformed("snapshot membership"))
}
