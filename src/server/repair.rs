//! Repair of a member a corruption check outvoted: its state machine is
//! replaced by one built from the leader's image and its own log; its raft
//! log and hard state are never touched (ARCHITECTURE.md, "Corruption
//! checks", says why that is safe).
//!
//! * When `Corrupt` is raised for this member, its watches are cancelled
//!   with `CancelReason::Corrupt` (clients carry them on elsewhere) and its
//!   keyspace requests are refused (`corrupt.rs`) until it is cleared.
//! * With `--corrupt-repair` (the default), once the open check's majority
//!   is a quorum of the voters without this member (`OpenCheck::
//!   sound_members`) and the leader is one of them, the member asks the
//!   leader for an image (`RepairAsk`) at an index S in [F, A]: A its
//!   applied index, F the index before the first entry its log holds, so
//!   the log holds S+1..=A. A leader that is itself outvoted first hands
//!   the leadership to a sound voter, then repairs as a follower.
//! * The leader streams its newest snapshot when it fits; one older than F
//!   makes it take a fresh one; one newer than A is left for the member to
//!   ask again once it applied past it (`image_fit`).
//! * The image is decoded as it arrives (within the snapshot transfer's
//!   budget), not written to disk. The member re-applies S+1..=A of its own
//!   log to it (answers and effects were given the first time and are not
//!   repeated), swaps it in, writes a snapshot of it (a restart must not
//!   load the bad one) and proposes a check; the check clears `Corrupt`
//!   when its hash agrees with a majority's, or raises it again, and the
//!   member asks again.
//!
//! This file holds the member's repair state and the pure decisions; the
//! steps the loop takes are in `repair_loop.rs`.

use std::time::{Duration, Instant};

use super::snapshots::Received;

/// How long a member waits between asks for an image. A leader whose
/// snapshot is too old takes a fresh one first, a slice per iteration
/// (well under a second for a board's store); asking twice a second costs
/// one small message each.
pub const REPAIR_RETRY: Duration = Duration::from_millis(500);

/// Log bytes read per batch while re-applying this member's own entries
/// to the image: the batch is the only copy of them held at once.
pub const REPAIR_REPLAY_BATCH_BYTES: u64 = 4 << 20;

/// Where the leader's newest snapshot falls against what a member asking
/// for a repair image can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFit {
    /// In [floor, applied]: the member's log holds everything after it.
    Fits,
    /// Below the floor: the member no longer holds the entries after it;
    /// the leader takes a fresh snapshot.
    TooOld,
    /// Past the member's applied index: it asks again once applied past.
    TooNew,
}

/// Whether a snapshot at `snapshot_index` can repair a member that has
/// applied `applied_index` and whose log starts after `floor_index`.
pub fn image_fit(snapshot_index: u64, floor_index: u64, applied_index: u64) -> ImageFit {
    if snapshot_index > applied_index {
        ImageFit::TooNew
    } else if snapshot_index < floor_index || snapshot_index == 0 {
        ImageFit::TooOld
    } else {
        ImageFit::Fits
    }
}

/// This member's side of repairs.
pub(super) struct Repair {
    /// `--corrupt-repair`.
    pub(super) enabled: bool,
    /// When this member may next ask for an image or hand off leadership.
    pub(super) next_try: Instant,
    /// The leader asked last: only its image is taken.
    pub(super) asked: Option<u64>,
    /// Asks sent since `Corrupt` was raised (the first is logged at info).
    pub(super) asks: u64,
    /// The applied index at which a repaired store was swapped in: only a
    /// check opened after it can call for another repair.
    pub(super) swapped_at_index: u64,
    /// A check to propose for the repaired store (retried until proposed).
    pub(super) check_wanted: bool,
    /// An image received whole, installed by the next `follow_corruption`.
    pub(super) staged: Option<Received>,
    /// When `Corrupt` was seen raised for this member.
    pub(super) raised_at: Option<Instant>,
}

impl Repair {
    pub fn new(enabled: bool, now: Instant) -> Repair {
        Repair {
            enabled,
            next_try: now,
            asked: None,
            asks: 0,
            swapped_at_index: 0,
            check_wanted: false,
            staged: None,
            raised_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_fits_between_the_log_floor_and_the_applied_index() {
        assert_eq!(image_fit(10, 5, 20), ImageFit::Fits);
        assert_eq!(image_fit(5, 5, 20), ImageFit::Fits);
        assert_eq!(image_fit(20, 5, 20), ImageFit::Fits);
        assert_eq!(image_fit(4, 5, 20), ImageFit::TooOld);
        assert_eq!(image_fit(21, 5, 20), ImageFit::TooNew);
        assert_eq!(image_fit(0, 0, 20), ImageFit::TooOld, "no snapshot yet");
        // A floor past the applied index (a malformed ask) fits nothing.
        assert_ne!(image_fit(7, 9, 8), ImageFit::Fits);
    }
}
