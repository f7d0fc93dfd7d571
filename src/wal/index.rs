//! The compact offset index: where each live entry sits on disk.
//!
//! Entries are never copied into memory. For each live entry the index keeps
//! one `u32`: its byte offset in its segment divided by 8 (records are 8-byte
//! aligned, so segments up to 32 GiB fit). Consecutive entries that live in the
//! same segment form a run, so the whole log costs about 4 bytes of RAM per
//! entry plus a few words per segment. Terms are read from the record headers
//! in the map when asked.
//!
//! The same rules serve recovery (replaying records in file order) and the
//! writer (appending), so the log after a restart is the log the writes
//! defined: an entry at or below the last index replaces the tail from there.

use super::record::RECORD_ALIGN_BYTES;

/// A stretch of consecutive entries stored one after the other in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    seq: u64,
    first_index: u64,
    /// Offsets divided by `RECORD_ALIGN_BYTES`. Invariant: non-empty.
    offsets_div8: Vec<u32>,
}

impl Run {
    fn last_index(&self) -> u64 {
        self.first_index + self.offsets_div8.len() as u64 - 1
    }
}

/// Why an entry cannot go into the log at the place it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexError {
    /// The entry's index leaves a hole after the last index.
    Gap { index: u64, last_index: u64 },
    /// The entry's index is covered by the snapshot.
    BelowSnapshot { index: u64, snapshot_index: u64 },
}

/// The live log: `(snapshot_index, last_index]` mapped to record positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogIndex {
    snapshot_index: u64,
    snapshot_term: u64,
    /// Invariant: runs are contiguous: each starts at the previous one's
    /// last index + 1, and the first starts at `snapshot_index + 1`.
    runs: Vec<Run>,
}

impl LogIndex {
    pub fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.runs.last().map_or(self.snapshot_index, Run::last_index)
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> u64 {
        self.snapshot_term
    }

    /// Checks that an entry with `index` may be appended now.
    pub fn check(&self, index: u64) -> Result<(), IndexError> {
        if index <= self.snapshot_index {
            return Err(IndexError::BelowSnapshot { index, snapshot_index: self.snapshot_index });
        }
        let last_index = self.last_index();
        if index > last_index + 1 {
            return Err(IndexError::Gap { index, last_index });
        }
        Ok(())
    }

    /// Records that the entry `index` now lives at `offset` of segment `seq`,
    /// dropping any entries at or after `index` it replaces.
    pub fn push(&mut self, index: u64, seq: u64, offset: usize) -> Result<(), IndexError> {
        self.check(index)?;
        self.truncate_after(index - 1);
        let offset_div8 = u32::try_from(offset / RECORD_ALIGN_BYTES)
            .expect("segment size is capped so offsets fit");
        match self.runs.last_mut() {
            Some(run) if run.seq == seq => run.offsets_div8.push(offset_div8),
            _ => self.runs.push(Run { seq, first_index: index, offsets_div8: vec![offset_div8] }),
        }
        Ok(())
    }

    /// Drops every entry after `index`.
    pub fn truncate_after(&mut self, index: u64) {
        while let Some(run) = self.runs.last_mut() {
            if run.first_index > index {
                self.runs.pop();
                continue;
            }
            let keep = (index - run.first_index + 1) as usize;
            run.offsets_div8.truncate(keep);
            break;
        }
    }

    /// Where entry `index` lives: `(segment seq, byte offset)`.
    pub fn locate(&self, index: u64) -> Option<(u64, usize)> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        let at = self.runs.partition_point(|run| run.last_index() < index);
        let run = self.runs.get(at)?;
        let slot = (index - run.first_index) as usize;
        Some((run.seq, run.offsets_div8[slot] as usize * RECORD_ALIGN_BYTES))
    }

    /// Moves the log's start to just after a snapshot at `index`/`term`.
    /// Entries after it survive only if the log holds `index` with the same
    /// term (`term_at` reads it); otherwise the snapshot replaces the log.
    pub fn apply_snapshot(&mut self, index: u64, term: u64, term_at: impl Fn(u64) -> Option<u64>) {
        if index < self.snapshot_index {
            return;
        }
        if index == self.snapshot_index {
            // Recovery may have placed the log's start here before meeting
            // the marker (segments before it were released); the marker
            // brings the term.
            self.snapshot_term = term;
            return;
        }
        let keeps_tail = index < self.last_index() && term_at(index) == Some(term);
        if !keeps_tail {
            self.runs.clear();
        } else {
            self.drop_through(index);
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    fn drop_through(&mut self, index: u64) {
        let gone = self.runs.partition_point(|run| run.last_index() <= index);
        self.runs.drain(..gone);
        if let Some(run) = self.runs.first_mut()
            && run.first_index <= index
        {
            let cut = (index - run.first_index + 1) as usize;
            run.offsets_div8.drain(..cut);
            run.first_index = index + 1;
        }
    }

    /// The oldest segment that still holds a live entry.
    pub fn oldest_live_seq(&self) -> Option<u64> {
        self.runs.iter().map(|run| run.seq).min()
    }

    /// Bytes of heap the index holds (for the RAM-per-entry claim).
    pub fn heap_bytes(&self) -> usize {
        self.runs.iter().map(|run| run.offsets_div8.capacity() * 4).sum::<usize>()
            + self.runs.capacity() * std::mem::size_of::<Run>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_locate_and_a_conflict_replaces_the_tail() {
        let mut index = LogIndex::default();
        for i in 1..=5 {
            index.push(i, 1, 64 + i as usize * 8).unwrap();
        }
        index.push(3, 2, 800).unwrap();
        assert_eq!(index.last_index(), 3);
        assert_eq!(index.locate(2), Some((1, 80)));
        assert_eq!(index.locate(3), Some((2, 800)));
        assert_eq!(index.locate(4), None);
        assert_eq!(index.push(6, 2, 808), Err(IndexError::Gap { index: 6, last_index: 3 }));
    }

    #[test]
    fn a_snapshot_keeps_a_matching_tail_and_drops_a_foreign_one() {
        let mut index = LogIndex::default();
        for i in 1..=10 {
            index.push(i, 1 + i / 4, i as usize * 8).unwrap();
        }
        index.apply_snapshot(6, 1, |_| Some(1));
        assert_eq!((index.first_index(), index.last_index()), (7, 10));
        assert_eq!(index.locate(7), Some((2, 56)));
        assert_eq!(index.locate(6), None);
        index.apply_snapshot(20, 4, |_| None);
        assert_eq!((index.first_index(), index.last_index()), (21, 20));
        assert_eq!(
            index.push(20, 9, 0),
            Err(IndexError::BelowSnapshot { index: 20, snapshot_index: 20 })
        );
        index.push(21, 9, 64).unwrap();
        assert_eq!(index.oldest_live_seq(), Some(9));
        index.apply_snapshot(20, 5, |_| None);
        assert_eq!((index.snapshot_term(), index.last_index()), (5, 21));
    }
}
