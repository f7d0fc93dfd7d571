//! Proposals: the one place that assigns sequence numbers, proposes this
//! iteration's writes as one batch, asks one ReadIndex round for its
//! linearizable reads, and keeps who waits for what until the state machine
//! answers, Raft confirms, a leader change fails a read or its deadline
//! passes.
//!
//! A write travels as a `state::Command` tagged with its sequence number,
//! and with this member's id until the whole cluster reads the
//! sequence-only layout (`Feature::SequenceOnlyCommand`); when any member
//! applies it, only the member waiting on that number answers its client.
//! Entries no client waits for (lease revocations of the leader, a member
//! publishing its attributes) take their numbers from the same counter, so
//! two entries of one run never share one.
//!
//! Every function answers by returning the waiters to answer; it holds no
//! connection and writes no byte.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::proto::{self, ErrorBody, ErrorCode};
use crate::raft::{RaftError, RawNode, Storage};
use crate::state::command::ANSWER_UNBOUNDED;
use crate::state::{Answer, Caller, Command, Op};

/// Who waits for an answer: a request on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub slot: usize,
    /// The connection's serial: a late answer never reaches a later
    /// connection in the same slot.
    pub serial: u64,
    pub request_id: u64,
    /// What the request holds against the client memory budget until it
    /// is answered.
    pub cost_bytes: u32,
}

/// A linearizable read waiting for its read index.
#[derive(Debug)]
pub struct ReadWait {
    pub waiter: Waiter,
    pub request: proto::RangeRequest,
}

/// A write proposed by this member, waiting to be applied.
#[derive(Debug)]
struct PendingWrite {
    waiter: Waiter,
    deadline: Instant,
}

/// A ReadIndex round asked of Raft: its reads and when they give up.
#[derive(Debug)]
struct ReadRound {
    reads: Vec<ReadWait>,
    deadline: Instant,
}

/// A client's write read this iteration, not yet proposed.
pub struct QueuedWrite {
    pub waiter: Waiter,
    pub op: Op,
    pub caller: Caller,
    /// The client's answer limit, carried in the entry (see `Command`).
    pub answer_max_bytes: u64,
}

/// An answer to give: the waiter and its result.
pub type Reply = (Waiter, Result<proto::Response, ErrorBody>);

pub struct Proposals {
    /// This member: the origin of every command proposed here.
    origin: u64,
    /// Whether commands leave `origin` out (the sequence-only layout):
    /// only once the cluster version supports it.
    sequence_only: bool,
    /// Invariant: never handed out twice in a run; runs start at random
    /// points (`first_sequence_number`).
    next_seq: u64,
    /// Writes read this iteration, proposed together at its end.
    unproposed: Vec<QueuedWrite>,
    /// By sequence number; deadlines grow with it.
    pending_writes: BTreeMap<u64, PendingWrite>,
    /// Reads of this iteration, confirmed together by one round.
    unread: Vec<ReadWait>,
    next_read_context: u64,
    read_rounds: BTreeMap<u64, ReadRound>,
    /// Rounds Raft confirmed: (index to reach, reads).
    reads_ready: Vec<(u64, Vec<ReadWait>)>,
    /// etcd's rule: five seconds plus two election timeouts.
    request_timeout: Duration,
}

impl Proposals {
    pub fn new(origin: u64, election_timeout: Duration) -> Proposals {
        Proposals {
            origin,
            sequence_only: false,
            next_seq: first_sequence_number(),
            unproposed: Vec::new(),
            pending_writes: BTreeMap::new(),
            unread: Vec::new(),
            next_read_context: 1,
            read_rounds: BTreeMap::new(),
            reads_ready: Vec::new(),
            request_timeout: Duration::from_secs(5) + 2 * election_timeout,
        }
    }

    /// Writes and linearizable reads waiting for Raft: proposed and not
    /// applied, or in a read round not yet confirmed or served.
    pub fn pending_count(&self) -> usize {
        let rounds: usize = self.read_rounds.values().map(|r| r.reads.len()).sum();
        let ready: usize = self.reads_ready.iter().map(|(_, reads)| reads.len()).sum();
        self.pending_writes.len() + self.unproposed.len() + self.unread.len() + rounds + ready
    }

    /// A write for this iteration's batch, recorded as `caller`'s, whose
    /// answer is not bounded in the entry (members, leases, auth: small).
    pub fn queue_write(&mut self, waiter: Waiter, op: Op, caller: Caller) {
        let answer_max_bytes = ANSWER_UNBOUNDED;
        self.unproposed.push(QueuedWrite { waiter, op, caller, answer_max_bytes });
    }

    /// A write whose answer may take at most `answer_max_bytes`.
    pub fn queue_write_within(&mut self, write: QueuedWrite) {
        self.unproposed.push(write);
    }

    /// A linearizable read for this iteration's round.
    pub fn queue_read(&mut self, read: ReadWait) {
        self.unread.push(read);
    }

    /// Whether the commands proposed from now on leave their origin out:
    /// told after every Ready, true once every member reads that layout.
    pub fn use_sequence_only(&mut self, sequence_only: bool) {
        self.sequence_only = sequence_only;
    }

    /// The command for `op`, with the next sequence number.
    fn command(&mut self, op: Op, caller: Option<Caller>, answer_max_bytes: u64) -> Command {
        let seq = self.next_seq;
        self.next_seq += 1;
        let origin = (!self.sequence_only).then_some(self.origin);
        Command { origin, seq, op, caller, answer_max_bytes }
    }

    /// Proposes entries no client waits for (expiry, published attributes).
    pub fn propose_unwaited<S: Storage>(
        &mut self,
        raft: &mut RawNode<S>,
        ops: Vec<Op>,
    ) -> Result<(), RaftError> {
        let payloads =
            ops.into_iter().map(|op| self.command(op, None, ANSWER_UNBOUNDED).encode()).collect();
        raft.propose_batch(payloads)
    }

    /// Proposes every write read this iteration as one batch; the replies
    /// for those refused. An entry larger than `payload_max_bytes` (what
    /// the WAL can hold) would stop every member that appends it: it is
    /// refused here, before Raft has it.
    pub fn propose_writes<S: Storage>(
        &mut self,
        raft: &mut RawNode<S>,
        payload_max_bytes: usize,
        now: Instant,
    ) -> Vec<Reply> {
        let mut refused = Vec::new();
        if self.unproposed.is_empty() {
            return refused;
        }
        let batch = std::mem::take(&mut self.unproposed);
        let mut payloads = Vec::with_capacity(batch.len());
        let mut seqs = Vec::with_capacity(batch.len());
        let deadline = now + self.request_timeout;
        for QueuedWrite { waiter, op, caller, answer_max_bytes } in batch {
            let command = self.command(op, Some(caller), answer_max_bytes);
            let payload = command.encode();
            if payload.len() > payload_max_bytes {
                refused.push((waiter, Err(ErrorBody::new(ErrorCode::RequestTooLarge))));
                continue;
            }
            payloads.push(payload);
            self.pending_writes.insert(command.seq, PendingWrite { waiter, deadline });
            seqs.push(command.seq);
        }
        if let Err(e) = raft.propose_batch(payloads) {
            let code = proposal_error(&e);
            for seq in seqs {
                if let Some(pending) = self.pending_writes.remove(&seq) {
                    refused.push((pending.waiter, Err(ErrorBody::new(code))));
                }
            }
        }
        refused
    }

    /// Asks one ReadIndex round for every linearizable read of this
    /// iteration; the replies for reads Raft refused.
    pub fn ask_read_index<S: Storage>(
        &mut self,
        raft: &mut RawNode<S>,
        now: Instant,
    ) -> Vec<Reply> {
        if self.unread.is_empty() {
            return Vec::new();
        }
        let reads = std::mem::take(&mut self.unread);
        let context = self.next_read_context;
        self.next_read_context += 1;
        match raft.read_index(context.to_le_bytes().to_vec()) {
            Ok(()) => {
                let deadline = now + self.request_timeout;
                self.read_rounds.insert(context, ReadRound { reads, deadline });
                Vec::new()
            }
            Err(e) => {
                let code = proposal_error(&e);
                reads.into_iter().map(|r| (r.waiter, Err(ErrorBody::new(code)))).collect()
            }
        }
    }

    /// Raft confirmed the round `context` at read index `index`.
    pub fn read_confirmed(&mut self, context: &[u8], index: u64) {
        let Ok(bytes) = <[u8; 8]>::try_from(context) else { return };
        if let Some(round) = self.read_rounds.remove(&u64::from_le_bytes(bytes)) {
            self.reads_ready.push((index, round.reads));
        }
    }

    /// The reads whose read index has been applied, to serve now.
    pub fn take_due_reads(&mut self, applied_index: u64) -> Vec<ReadWait> {
        if self.reads_ready.is_empty() {
            return Vec::new();
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(index, _)| *index <= applied_index);
        self.reads_ready = waiting;
        due.into_iter().flat_map(|(_, reads)| reads).collect()
    }

    /// The waiter of an applied command, when this member proposed it and
    /// its client still waits. A command without origin is matched by its
    /// sequence number alone (see `first_sequence_number`).
    pub fn complete(&mut self, answer: Answer) -> Option<Reply> {
        if answer.origin.is_some_and(|origin| origin != self.origin) {
            return None;
        }
        let pending = self.pending_writes.remove(&answer.seq)?;
        Some((pending.waiter, answer.result))
    }

    /// Reads already handed to Raft, failed with `code`: a new leader
    /// answers no round the old one was asked.
    ///
    /// Writes are not failed here. Each carries its sequence number in
    /// the log: if the old leader's entry survives the change, it is
    /// applied and `complete` answers success; if the new leader overwrote
    /// it, or it died with a leader that never replicated it, it never
    /// applies and the deadline answers `Timeout`. Only that is an unknown
    /// outcome; failing the write now would tell some clients "failed"
    /// about writes that take effect.
    pub fn fail_reads(&mut self, code: ErrorCode) -> Vec<Reply> {
        let rounds = std::mem::take(&mut self.read_rounds).into_values().map(|r| r.reads);
        let ready = std::mem::take(&mut self.reads_ready).into_iter().map(|(_, reads)| reads);
        rounds.chain(ready).flatten().map(|r| (r.waiter, Err(ErrorBody::new(code)))).collect()
    }

    /// Everything waiting anywhere, failed with `code`.
    pub fn fail_everything(&mut self, code: ErrorCode) -> Vec<Reply> {
        let mut replies = self.fail_reads(code);
        let writes = std::mem::take(&mut self.pending_writes).into_values().map(|p| p.waiter);
        replies.extend(writes.map(|w| (w, Err(ErrorBody::new(code)))));
        let unproposed = std::mem::take(&mut self.unproposed).into_iter().map(|q| q.waiter);
        let unread = std::mem::take(&mut self.unread).into_iter().map(|r| r.waiter);
        replies.extend(unproposed.chain(unread).map(|w| (w, Err(ErrorBody::new(code)))));
        replies
    }

    /// Requests past their deadline, failed with `Timeout`.
    pub fn expire(&mut self, now: Instant) -> Vec<Reply> {
        let timeout = || Err(ErrorBody::new(ErrorCode::Timeout));
        let mut replies = Vec::new();
        while let Some(entry) = self.pending_writes.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            replies.push((entry.remove().waiter, timeout()));
        }
        while let Some(entry) = self.read_rounds.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            replies.extend(entry.remove().reads.into_iter().map(|r| (r.waiter, timeout())));
        }
        replies
    }
}

/// The client's error for a proposal or read Raft refused.
fn proposal_error(error: &RaftError) -> ErrorCode {
    match error {
        RaftError::ProposalDropped | RaftError::NotLeader => ErrorCode::NoLeader,
        RaftError::UncommittedCapExceeded | RaftError::ReadQueueFull => ErrorCode::TooManyProposals,
        _ => ErrorCode::Internal,
    }
}

/// Sequence numbers must never repeat across restarts, or an entry proposed
/// before a crash and applied after it would be matched to a new request;
/// nor across members, once commands no longer name their origin, or one
/// member's entry would answer another's client. They start at a random
/// point of a 2^63 space: the wall clock cannot be trusted for this on
/// boards without a battery-backed clock, which boot with an older time
/// after a power cut. Two runs' ranges, of one member or of two, overlap
/// with a chance of about (writes in both runs) / 2^63: below one in a
/// billion for runs of ten billion writes.
pub fn first_sequence_number() -> u64 {
    random_u64() >> 1
}

/// 64 random bits from the kernel; from the clock and the pid if
/// `/dev/urandom` cannot be read.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    });
    match random {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(e) => {
            log::warn!("/dev/urandom unreadable ({e}); falling back to the clock");
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            since_epoch.as_micros() as u64 ^ u64::from(std::process::id()) << 40
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfState, Config, MemStorage};

    fn lone_leader() -> RawNode<MemStorage> {
        let voters = ConfState { voters: vec![1], ..ConfState::default() };
        let mut raft = RawNode::new(&Config::new(1), MemStorage::new_with_conf_state(voters))
            .expect("a valid configuration");
        raft.campaign();
        raft
    }

    fn waiter(request_id: u64) -> Waiter {
        Waiter { slot: 0, serial: 1, request_id, cost_bytes: 0 }
    }

    fn answer(origin: Option<u64>, seq: u64) -> Answer {
        Answer { origin, seq, result: Err(ErrorBody::new(ErrorCode::Internal)) }
    }

    #[test]
    fn commands_drop_their_origin_once_told_and_still_find_their_waiter() {
        let mut raft = lone_leader();
        let mut proposals = Proposals::new(1, Duration::from_secs(1));
        let now = Instant::now();
        proposals.queue_write(waiter(1), Op::Compact(1), Caller::Anonymous);
        assert!(proposals.propose_writes(&mut raft, 1 << 20, now).is_empty());
        proposals.use_sequence_only(true);
        proposals.queue_write(waiter(2), Op::Compact(2), Caller::Anonymous);
        assert!(proposals.propose_writes(&mut raft, 1 << 20, now).is_empty());

        let commands: Vec<Command> = (raft.ready().entries.iter())
            .filter(|entry| !entry.data.is_empty())
            .map(|entry| Command::decode(&entry.data).expect("a command"))
            .collect();
        let origins: Vec<Option<u64>> = commands.iter().map(|c| c.origin).collect();
        assert_eq!(origins, [Some(1), None]);
        let (named, bare) = (commands[0].seq, commands[1].seq);
        assert_eq!(bare, named + 1);

        assert!(proposals.complete(answer(Some(2), named)).is_none(), "another member's");
        let (first, _) = proposals.complete(answer(Some(1), named)).expect("its waiter");
        assert_eq!(first.request_id, 1);
        let (second, _) = proposals.complete(answer(None, bare)).expect("its waiter");
        assert_eq!(second.request_id, 2);
        assert!(proposals.complete(answer(None, bare)).is_none(), "answered once");
        assert_eq!(proposals.pending_count(), 0);
    }
}
