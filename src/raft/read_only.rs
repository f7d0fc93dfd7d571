//! ReadIndex: linearizable reads without writing to the log.
//!
//! A read may be served once the state machine has applied the commit index
//! the leader had when the read arrived, provided the leader was still the
//! leader at that moment. The leader proves the latter with one heartbeat
//! round acknowledged by a quorum. Rounds are numbered; every read queued
//! since the last round joins the next one, so one round confirms a whole
//! batch. A follower that acknowledges a heartbeat carrying round `r` proves
//! that the leader was leader after every read of rounds ≤ `r` arrived.
//!
//! A new leader does not know the commit index of its term until it commits
//! an entry of that term (its no-op), so reads that arrive before then wait in
//! a separate queue.

use std::collections::VecDeque;

use super::types::NodeId;

/// Reads queued at the leader across both queues. A read is tiny (an index, a
/// sender and a context of a few bytes); 4096 of them is more than a board
/// answers in one heartbeat interval, and past it `read_index` refuses.
pub const PENDING_READS_MAX: usize = 4096;

#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Who asked: this member or a follower that forwarded it.
    pub from: NodeId,
    pub context: Vec<u8>,
    /// The leader's commit index when the read arrived.
    pub index: u64,
    /// The round that confirms it; 0 while it waits for the next round.
    pub round: u64,
}

#[derive(Debug, Default)]
pub struct ReadOnly {
    /// Invariant: rounds are non-decreasing from front to back, with the
    /// unassigned (round 0) requests at the back.
    queue: VecDeque<ReadRequest>,
    /// Reads that arrived before the leader committed an entry of its term.
    waiting_for_commit: VecDeque<(NodeId, Vec<u8>)>,
    /// The newest round number handed out.
    pub round: u64,
}

impl ReadOnly {
    pub fn len(&self) -> usize {
        self.queue.len() + self.waiting_for_commit.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, from: NodeId, context: Vec<u8>, index: u64) {
        self.queue.push_back(ReadRequest { from, context, index, round: 0 });
    }

    pub fn push_waiting(&mut self, from: NodeId, context: Vec<u8>) {
        self.waiting_for_commit.push_back((from, context));
    }

    pub fn take_waiting(&mut self) -> VecDeque<(NodeId, Vec<u8>)> {
        std::mem::take(&mut self.waiting_for_commit)
    }

    pub fn has_unassigned(&self) -> bool {
        self.queue.back().is_some_and(|r| r.round == 0)
    }

    /// Opens a new round for every unassigned read and returns its number.
    pub fn start_round(&mut self) -> u64 {
        self.round += 1;
        let round = self.round;
        for request in self.queue.iter_mut().rev().take_while(|r| r.round == 0) {
            request.round = round;
        }
        round
    }

    /// Removes and returns the reads of every round ≤ `confirmed_round`.
    pub fn release(&mut self, confirmed_round: u64) -> Vec<ReadRequest> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|r| r.round != 0 && r.round <= confirmed_round) {
            out.extend(self.queue.pop_front());
        }
        out
    }

    /// Forgets everything, as when leadership is lost.
    pub fn reset(&mut self) {
        self.queue.clear();
        self.waiting_for_commit.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_round_confirms_all_reads_queued_before_it() {
        let mut reads = ReadOnly::default();
        reads.push(1, b"a".to_vec(), 5);
        reads.push(2, b"b".to_vec(), 5);
        let first = reads.start_round();
        reads.push(1, b"c".to_vec(), 6);
        assert!(reads.has_unassigned());
        assert_eq!(reads.release(first).len(), 2);
        assert!(reads.release(first).is_empty(), "c waits for its own round");
        let second = reads.start_round();
        assert_eq!(reads.release(second)[0].context, b"c".to_vec());
    }
}

/// A confirmed read: once the state machine has applied `index`, the read
/// identified by `context` may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    pub index: u64,
    pub context: Vec<u8>,
}
