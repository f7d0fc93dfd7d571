//! Group commit on a slow disk: the next batch of writes waits, briefly,
//! for the clients whose writes were just answered.
//!
//! The loop proposes the writes it read as one batch and syncs them
//! together. While a sync blocks the loop, the clients it does not cover
//! send their next writes; those make the next batch, proposed as soon as
//! the sync's answers are out, before the answered clients could reply.
//! On a disk whose sync takes milliseconds (an SD card: two device writes
//! at a few hundred a second) the clients so split into two groups that
//! wait on each other's syncs for good: each sync carries half of them,
//! and each write waits two syncs. Holding the next batch until the
//! answered clients are heard from again (a round trip, tens of
//! microseconds to a few milliseconds) joins the groups: one sync carries
//! all of them, the syncs per second stay what the disk allows, so the
//! writes per second double and the page padded at the end of each sync
//! is spread over twice as many writes.
//!
//! The hold is bounded: it ends when as many client requests (of any
//! kind: a client may read before it writes again) arrived as writes were
//! answered, or after a quarter of a sync's recent average, at most
//! `HOLD_MAX`. It starts only while syncs average `SLOW_SYNC` or more, so
//! a fast disk never waits; a lone client, whose request is the one awaited,
//! is proposed the moment it arrives.
//!
//! For the count to mean anything, requests read before the answers went
//! out must not be taken for replies to them: the loop reads the sockets
//! before it sends answers the hold will wait on (`defer_flush`), and the
//! hold begins at the next proposal, after that read.

use std::time::{Duration, Instant};

/// Syncs averaging at least this long make the next batch wait for the
/// clients they answered. A round trip on a local network is well under this.
pub const SLOW_SYNC: Duration = Duration::from_millis(2);
/// The longest a batch waits, whatever the sync took.
pub const HOLD_MAX: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy)]
struct Hold {
    /// Requests still expected from the clients answered before it began.
    awaited: usize,
    until: Instant,
}

#[derive(Debug, Default)]
pub struct Gather {
    /// Recent syncs' duration, the newest weighing an eighth.
    sync_average: Duration,
    /// Writes answered since the last hold began or the last batch went.
    answered: usize,
    hold: Option<Hold>,
    /// Holds begun since start, for `/metrics`.
    holds_total: u64,
}

impl Gather {
    /// The WAL synced, taking `took`: a moving average, so one slow sync
    /// on a fast disk does not start holds.
    pub fn synced(&mut self, took: Duration) {
        self.sync_average = (self.sync_average * 7 + took) / 8;
    }

    /// A client's write was answered.
    pub fn answered_write(&mut self) {
        self.answered += 1;
    }

    /// A client request was read.
    pub fn request_arrived(&mut self) {
        if let Some(hold) = &mut self.hold {
            hold.awaited = hold.awaited.saturating_sub(1);
        }
    }

    fn slow(&self) -> bool {
        self.sync_average >= SLOW_SYNC
    }

    /// Whether the answers just made should wait for the client sockets to
    /// be read first: only when a hold will count replies to them.
    pub fn defer_flush(&self) -> bool {
        self.answered > 0 && self.slow()
    }

    /// Whether the writes queued now go to Raft, or wait for more.
    pub fn release(&mut self, now: Instant) -> bool {
        let answered = std::mem::take(&mut self.answered);
        if self.hold.is_none() && (answered == 0 || !self.slow()) {
            return true;
        }
        let hold = match self.hold.as_mut() {
            Some(hold) => hold,
            None => {
                self.holds_total += 1;
                let window = (self.sync_average / 4).min(HOLD_MAX);
                self.hold.insert(Hold { awaited: 0, until: now + window })
            }
        };
        hold.awaited += answered;
        if hold.awaited == 0 || now >= hold.until {
            self.hold = None;
            return true;
        }
        false
    }

    pub fn holds_total(&self) -> u64 {
        self.holds_total
    }

    /// When a hold ends by itself: the loop must wake by then.
    pub fn until(&self) -> Option<Instant> {
        self.hold.map(|hold| hold.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD_SYNC: Duration = Duration::from_millis(10);

    /// A gather whose syncs have taken `took` for a while.
    fn after_syncs_of(took: Duration) -> Gather {
        let mut gather = Gather::default();
        for _ in 0..64 {
            gather.synced(took);
        }
        gather
    }

    #[test]
    fn a_fast_disk_never_holds() {
        let now = Instant::now();
        let mut gather = after_syncs_of(Duration::from_micros(500));
        gather.answered_write();
        assert!(!gather.defer_flush());
        assert!(gather.release(now));
        assert_eq!(gather.until(), None);
        // Nor does one slow sync among fast ones.
        gather.synced(SD_SYNC);
        gather.answered_write();
        assert!(gather.release(now));
    }

    #[test]
    fn a_lone_client_is_proposed_the_moment_it_is_back() {
        let now = Instant::now();
        let mut gather = after_syncs_of(SD_SYNC);
        gather.answered_write();
        assert!(gather.defer_flush());
        // The turn after the answer: nothing read yet, the hold begins.
        assert!(!gather.release(now));
        assert_eq!(gather.until(), Some(now + Duration::from_millis(2)));
        gather.request_arrived();
        assert!(gather.release(now + Duration::from_micros(50)));
        assert_eq!(gather.until(), None);
        assert_eq!(gather.holds_total(), 1);
        // With nothing answered since, the next write goes at once.
        assert!(gather.release(now + Duration::from_micros(60)));
    }

    #[test]
    fn the_batch_waits_for_every_answered_client_or_the_window() {
        let now = Instant::now();
        let mut gather = after_syncs_of(SD_SYNC);
        for _ in 0..32 {
            gather.answered_write();
        }
        // The other 32 were read before the answers went out: not counted.
        assert!(!gather.release(now));
        for _ in 0..31 {
            gather.request_arrived();
        }
        assert!(!gather.release(now + Duration::from_micros(100)));
        gather.request_arrived();
        assert!(gather.release(now + Duration::from_micros(120)));

        // Clients that never come back hold it only for the window.
        for _ in 0..32 {
            gather.answered_write();
        }
        assert!(!gather.release(now));
        assert!(!gather.release(now + Duration::from_micros(1_999)));
        assert!(gather.release(now + HOLD_MAX));
    }

    #[test]
    fn the_window_is_a_quarter_of_the_sync_and_answers_during_a_hold_are_awaited_too() {
        let now = Instant::now();
        let mut gather = after_syncs_of(Duration::from_millis(4));
        gather.answered_write();
        assert!(!gather.release(now));
        let window = gather.until().unwrap() - now;
        assert!(window > Duration::from_micros(990) && window <= Duration::from_millis(1));
        // A follower's ack commits more while the batch waits.
        gather.answered_write();
        gather.request_arrived();
        assert!(!gather.release(now));
        gather.request_arrived();
        assert!(gather.release(now));
    }
}
