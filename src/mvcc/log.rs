//! The change log: which key each change touched, in revision order. It is
//! what makes the watch feed cost proportional to the changes read rather
//! than to the number of keys.
//!
//! Each change is one `u32`: the key id, with [`SAME_REVISION`] set when the
//! change shares its main revision with the one before (later changes of a
//! transaction). The sub revision of a change is its position inside its main
//! revision. Every main revision in `[first_rev, last_rev]` has at least one
//! change (a write that changes nothing takes no revision), so counting the
//! changes without the flag counts revisions. To find a revision without a
//! scan from the start, `marks` holds the position of every
//! [`MARK_STRIDE`]-th revision's first change: at most 16 revisions are
//! skipped by counting.
//!
//! Cost: 4 bytes per change plus 4 bytes per 16 revisions, stored in chunks
//! of [`LOG_CHUNK`] entries so growth never copies and trimming after a
//! compaction frees whole chunks.

use std::collections::VecDeque;

use super::types::Revision;

pub(crate) const SAME_REVISION: u32 = 1 << 31;
/// Revisions between two marks.
pub(crate) const MARK_STRIDE: u64 = 16;
/// Entries per chunk: 16 KiB chunks.
pub(crate) const LOG_CHUNK: usize = 4096;

pub(crate) struct RevLog {
    /// Invariant: every chunk but the last is full, each of capacity LOG_CHUNK.
    chunks: VecDeque<Vec<u32>>,
    /// Sequence number (count of all changes ever logged) of chunks[0][0].
    base_seq: u64,
    /// Sequence number of the next change to be logged.
    end_seq: u64,
    /// Main revision of marks[0]; advances in steps of MARK_STRIDE.
    first_rev: u64,
    /// Newest revision logged; first_rev - 1 when nothing is.
    last_rev: u64,
    /// marks[i] is the sequence number of the first change of revision
    /// first_rev + i × MARK_STRIDE.
    marks: VecDeque<u64>,
}

impl RevLog {
    /// An empty log whose first change will carry revision `first_rev`.
    pub(crate) fn new(first_rev: u64) -> RevLog {
        RevLog {
            chunks: VecDeque::new(),
            base_seq: 0,
            end_seq: 0,
            first_rev,
            last_rev: first_rev - 1,
            marks: VecDeque::new(),
        }
    }

    /// Logs a change; `rev.sub == 0` starts a new main revision, which must
    /// follow the last one.
    pub(crate) fn push(&mut self, rev: Revision, id: u32) {
        assert!(id < SAME_REVISION, "key id space exhausted");
        let mut entry = id;
        if rev.sub == 0 {
            assert_eq!(rev.main, self.last_rev + 1, "log revisions must be consecutive");
            if (rev.main - self.first_rev).is_multiple_of(MARK_STRIDE) {
                self.marks.push_back(self.end_seq);
            }
            self.last_rev = rev.main;
        } else {
            assert_eq!(rev.main, self.last_rev, "a sub revision continues the last revision");
            entry |= SAME_REVISION;
        }
        if self.chunks.back().is_none_or(|c| c.len() == LOG_CHUNK) {
            self.chunks.push_back(Vec::with_capacity(LOG_CHUNK));
        }
        self.chunks.back_mut().expect("chunk ensured").push(entry);
        self.end_seq += 1;
    }

    fn entry(&self, seq: u64) -> u32 {
        let local = (seq - self.base_seq) as usize;
        self.chunks[local / LOG_CHUNK][local % LOG_CHUNK]
    }

    /// The first change at or after `from` (clamped to the log's start).
    pub(crate) fn seek(&self, from: Revision) -> LogCursor {
        if from.main > self.last_rev || self.marks.is_empty() {
            return LogCursor {
                seq: self.end_seq,
                rev: Revision { main: self.last_rev + 1, sub: 0 },
            };
        }
        let main = from.main.max(self.first_rev);
        let mark = ((main - self.first_rev) / MARK_STRIDE) as usize;
        let mut cur = LogCursor {
            seq: self.marks[mark],
            rev: Revision { main: self.first_rev + mark as u64 * MARK_STRIDE, sub: 0 },
        };
        let target = if main == from.main { from } else { Revision { main, sub: 0 } };
        while cur.seq < self.end_seq && cur.rev < target {
            self.step(&mut cur);
        }
        cur
    }

    /// The change at the cursor: (revision, key id); `None` at the end.
    pub(crate) fn at(&self, cur: &LogCursor) -> Option<(Revision, u32)> {
        (cur.seq < self.end_seq).then(|| (cur.rev, self.entry(cur.seq) & !SAME_REVISION))
    }

    /// Moves past the change at the cursor.
    pub(crate) fn step(&self, cur: &mut LogCursor) {
        cur.seq += 1;
        if cur.seq < self.end_seq && self.entry(cur.seq) & SAME_REVISION != 0 {
            cur.rev.sub += 1;
        } else {
            cur.rev = Revision { main: cur.rev.main + 1, sub: 0 };
        }
    }

    /// Forgets revisions below `rev` (whole mark strides and whole chunks
    /// only, so a few older changes may stay; readers never ask for them).
    pub(crate) fn trim_below(&mut self, rev: u64) {
        while self.marks.len() > 1 && self.first_rev + MARK_STRIDE <= rev {
            self.marks.pop_front();
            self.first_rev += MARK_STRIDE;
        }
        let keep_from = self.marks.front().copied().unwrap_or(self.end_seq);
        while self.chunks.len() > 1 && self.base_seq + LOG_CHUNK as u64 <= keep_from {
            self.chunks.pop_front();
            self.base_seq += LOG_CHUNK as u64;
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Vec<u32>>()
            + self.chunks.len() * LOG_CHUNK * 4
            + self.marks.capacity() * 8
    }
}

/// A position in the log and the revision of the change there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogCursor {
    seq: u64,
    pub(crate) rev: Revision,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: u64, sub: u32) -> Revision {
        Revision { main, sub }
    }

    fn filled() -> RevLog {
        let mut log = RevLog::new(2);
        for main in 2..200u64 {
            for sub in 0..(main % 3) as u32 + 1 {
                log.push(rev(main, sub), (main * 10 + u64::from(sub)) as u32);
            }
        }
        log
    }

    #[test]
    fn seek_finds_every_change() {
        let log = filled();
        for main in 2..200u64 {
            for sub in 0..(main % 3) as u32 + 1 {
                let cur = log.seek(rev(main, sub));
                assert_eq!(
                    log.at(&cur),
                    Some((rev(main, sub), (main * 10 + u64::from(sub)) as u32))
                );
            }
            let past = log.seek(rev(main, 5));
            assert_eq!(log.at(&past).map(|(r, _)| r), (main < 199).then_some(rev(main + 1, 0)));
        }
        assert_eq!(log.at(&log.seek(rev(200, 0))), None);
    }

    #[test]
    fn trimming_keeps_what_is_asked_for() {
        let mut log = filled();
        log.trim_below(150);
        let mut cur = log.seek(rev(150, 0));
        let mut seen = 0;
        while let Some((r, id)) = log.at(&cur) {
            assert_eq!(id, (r.main * 10 + u64::from(r.sub)) as u32);
            seen += 1;
            log.step(&mut cur);
        }
        assert_eq!(seen, (150..200u64).map(|m| m % 3 + 1).sum::<u64>());
    }
}
