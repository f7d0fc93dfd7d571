//! What the leader knows about each follower's log, and how it paces
//! replication to it.
//!
//! A follower is in one of three states:
//! - `Probe`: the leader does not know where the logs agree; it sends one
//!   append at a time and waits for the answer (or a heartbeat response)
//!   before the next.
//! - `Replicate`: the logs agree up to `match_index`; the leader streams
//!   appends optimistically, at most `max_inflight_msgs` unacknowledged.
//! - `Snapshot`: the entries the follower needs are compacted away; a snapshot
//!   is on its way and nothing else is sent until it is reported.

use heapless::Deque;

/// The hard upper bound of `Config::max_inflight_msgs`: the in-flight window
/// is a fixed array of this many indexes per follower (4 KiB), enough for
/// 1024 batches in flight on a link that would need that much pipelining.
pub const INFLIGHT_MSGS_CAPACITY_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// The last indexes of appends sent but not yet acknowledged, oldest first.
/// Invariant: strictly increasing; `len() ≤ limit ≤ INFLIGHT_MSGS_CAPACITY_MAX`.
#[derive(Debug, Clone)]
pub struct Inflights {
    last_indexes: Deque<u64, INFLIGHT_MSGS_CAPACITY_MAX>,
    limit: usize,
}

impl Inflights {
    pub fn new(limit: usize) -> Inflights {
        assert!((1..=INFLIGHT_MSGS_CAPACITY_MAX).contains(&limit));
        Inflights { last_indexes: Deque::new(), limit }
    }

    pub fn full(&self) -> bool {
        self.last_indexes.len() >= self.limit
    }

    pub fn count(&self) -> usize {
        self.last_indexes.len()
    }

    /// Records an append whose last entry is `last_index`.
    pub fn add(&mut self, last_index: u64) {
        assert!(!self.full(), "inflight window overflow");
        if let Some(&back) = self.last_indexes.back() {
            assert!(last_index > back, "inflight indexes must increase");
        }
        // Cannot fail: `full()` was checked and `limit` ≤ capacity.
        let _ = self.last_indexes.push_back(last_index);
    }

    /// Forgets every append acknowledged by a match at `index`.
    pub fn free_to(&mut self, index: u64) {
        while self.last_indexes.front().is_some_and(|&front| front <= index) {
            self.last_indexes.pop_front();
        }
    }

    pub fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }

    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

/// The leader's view of one follower (or of itself, whose `match_index` is
/// its durable last index).
#[derive(Debug, Clone)]
pub struct Progress {
    /// Invariant: `match_index < next_index`.
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// In `Snapshot`: the index of the snapshot sent; 0 otherwise.
    pub pending_snapshot: u64,
    /// In `Probe`: an append is out and unanswered, so wait.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Leader ticks since this follower last answered; starts as if never
    /// (`u64::MAX`), so a member is not taken for reachable before it is.
    pub heard_ago_ticks: u64,
    pub inflights: Inflights,
    pub is_learner: bool,
    /// The newest ReadIndex round this follower has confirmed.
    pub read_round_acked: u64,
}

impl Progress {
    pub fn new(next_index: u64, max_inflight_msgs: usize, is_learner: bool) -> Progress {
        Progress {
            match_index: 0,
            next_index: next_index.max(1),
            state: ProgressState::Probe,
            pending_snapshot: 0,
            probe_sent: false,
            recent_active: false,
            heard_ago_ticks: u64::MAX,
            inflights: Inflights::new(max_inflight_msgs),
            is_learner,
            read_round_acked: 0,
        }
    }

    /// Notes an answer from this follower.
    pub fn heard(&mut self) {
        self.recent_active = true;
        self.heard_ago_ticks = 0;
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        // After a snapshot the follower has at least the snapshot's entries.
        let floor = if self.state == ProgressState::Snapshot {
            self.pending_snapshot.max(self.match_index) + 1
        } else {
            self.match_index + 1
        };
        self.reset_state(ProgressState::Probe);
        self.next_index = floor;
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// Records an acknowledgement up to `index`; false when it says nothing new.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = self.match_index < index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// Moves `next_index` back after a rejection of the append that followed
    /// `rejected`; `match_hint` is the leader's best guess of the last index
    /// both logs agree on. False when the rejection is stale.
    pub fn maybe_decrease_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        // A correct follower never rejects at or below an index it confirmed.
        if rejected <= self.match_index {
            return false;
        }
        if self.state == ProgressState::Replicate {
            self.next_index = self.match_index + 1;
            return true;
        }
        if self.next_index.saturating_sub(1) != rejected {
            return false;
        }
        self.next_index = rejected.min(match_hint + 1).max(self.match_index + 1).max(1);
        self.probe_sent = false;
        true
    }

    /// Notes that an append ending at `last_index` (or an empty probe) went out.
    pub fn sent_append(&mut self, entry_count: usize, last_index: u64) {
        match self.state {
            ProgressState::Replicate if entry_count > 0 => {
                self.next_index = last_index + 1;
                self.inflights.add(last_index);
            }
            ProgressState::Replicate => {}
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// Whether the leader should hold further appends to this follower.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_and_free() {
        let mut inflights = Inflights::new(2);
        inflights.add(3);
        inflights.add(5);
        assert!(inflights.full());
        inflights.free_to(4);
        assert_eq!(inflights.count(), 1);
        inflights.free_to(9);
        assert_eq!(inflights.count(), 0);
    }

    #[test]
    fn probe_backs_off_on_rejection_and_ignores_stale_ones() {
        let mut progress = Progress::new(10, 4, false);
        assert!(!progress.maybe_decrease_to(5, 2), "rejection of an old probe is stale");
        assert!(progress.maybe_decrease_to(9, 6));
        assert_eq!(progress.next_index, 7);
        progress.maybe_update(6);
        progress.become_replicate();
        assert_eq!(progress.next_index, 7);
        progress.sent_append(3, 9);
        assert_eq!(progress.next_index, 10);
        assert!(!progress.maybe_decrease_to(6, 0));
        assert!(progress.maybe_decrease_to(8, 0));
        assert_eq!(progress.next_index, 7);
    }
}
