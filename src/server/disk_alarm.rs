//! The pure half of the disk alarm (`disk.rs` reads the disk and
//! proposes): what the free space calls for, with hysteresis, and which
//! `NoSpace` of its own a member may clear.
//!
//! A member clears only a `NoSpace` that is its disk's to clear: one its
//! own check raised in this run, or one it finds raised for itself at its
//! first check after a restart (who raised it is not in the log; a disk
//! that filled before a power cut is the likely cause, and a board should
//! not need an operator to come back). A `NoSpace` an operator raised for
//! a running member, and one the quota raised, stay until `alarm disarm`
//! (or, for the quota's, a compaction).

use std::time::{Duration, Instant};

/// The alarm clears only once the free space is this much above the mark,
/// so a disk hovering at the mark does not raise and clear it by turns:
/// two default WAL segments.
pub const DISK_FREE_HYSTERESIS_BYTES: u64 = 2 * crate::wal::SEGMENT_SIZE_BYTES_DEFAULT;

/// What the free space asks for, with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskVerdict {
    Short,
    Roomy,
    /// Between the mark and the mark plus the hysteresis: no change.
    Hold,
}

pub fn verdict(free_bytes: u64, min_bytes: u64) -> DiskVerdict {
    if free_bytes < min_bytes {
        DiskVerdict::Short
    } else if free_bytes >= min_bytes.saturating_add(DISK_FREE_HYSTERESIS_BYTES) {
        DiskVerdict::Roomy
    } else {
        DiskVerdict::Hold
    }
}

/// What the disk check remembers between reads.
#[derive(Debug)]
pub struct DiskWatch {
    next_check: Instant,
    /// This member's `NoSpace`, while raised, is the disk check's to clear.
    own: bool,
    /// Until the first check of a restarted member: a `NoSpace` of its own
    /// found then is the disk's; a fresh member has none from before.
    restarted: bool,
}

impl DiskWatch {
    pub fn new(restarted: bool, now: Instant) -> DiskWatch {
        DiskWatch { next_check: now, own: false, restarted }
    }

    /// Whether a check is due at `now`; if so, the next one is `interval`
    /// later.
    pub fn due(&mut self, now: Instant, interval: Duration) -> bool {
        if now < self.next_check {
            return false;
        }
        self.next_check = now + interval;
        true
    }

    /// Whether to raise (`Some(true)`) or clear (`Some(false)`) this
    /// member's `NoSpace`, given the free space's verdict, whether it is
    /// raised, and whether the quota holds it; remembers what it decided.
    pub fn decide(
        &mut self,
        verdict: DiskVerdict,
        raised: bool,
        quota_alarmed: bool,
    ) -> Option<bool> {
        let found_at_restart = std::mem::take(&mut self.restarted);
        self.own = raised && (self.own || found_at_restart);
        match verdict {
            DiskVerdict::Short if !raised => {
                self.own = true;
                Some(true)
            }
            DiskVerdict::Roomy if raised && self.own && !quota_alarmed => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_holds_between_the_marks() {
        let min = 100 << 20;
        assert_eq!(verdict(min - 1, min), DiskVerdict::Short);
        assert_eq!(verdict(min, min), DiskVerdict::Hold);
        assert_eq!(verdict(min + DISK_FREE_HYSTERESIS_BYTES - 1, min), DiskVerdict::Hold);
        assert_eq!(verdict(min + DISK_FREE_HYSTERESIS_BYTES, min), DiskVerdict::Roomy);
    }

    #[test]
    fn the_check_clears_only_a_nospace_that_is_the_disks() {
        use DiskVerdict::{Hold, Roomy, Short};
        let now = Instant::now();
        // A fresh member: an operator's raise stays, its own raise clears.
        let mut fresh = DiskWatch::new(false, now);
        assert_eq!(fresh.decide(Roomy, true, false), None);
        assert_eq!(fresh.decide(Roomy, true, false), None);
        assert_eq!(fresh.decide(Short, false, false), Some(true));
        assert_eq!(fresh.decide(Hold, true, false), None);
        assert_eq!(fresh.decide(Roomy, true, true), None, "the quota holds it");
        assert_eq!(fresh.decide(Roomy, true, false), Some(false));
        // Disarmed by an operator, then raised by one again: not its own.
        assert_eq!(fresh.decide(Roomy, false, false), None);
        assert_eq!(fresh.decide(Roomy, true, false), None);

        // A restarted member: one found at the first check is the disk's.
        let mut restarted = DiskWatch::new(true, now);
        assert_eq!(restarted.decide(Hold, true, false), None);
        assert_eq!(restarted.decide(Roomy, true, false), Some(false));
        // Only at the first check.
        let mut later = DiskWatch::new(true, now);
        assert_eq!(later.decide(Roomy, false, false), None);
        assert_eq!(later.decide(Roomy, true, false), None);
    }
}
