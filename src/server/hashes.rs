//! Keyspace hashes in flight: a client's `HashKv` and this member's part of
//! a corruption check, each taken a slice per loop iteration
//! (`mvcc::LiveHash`), so hashing a large store never holds the loop for
//! longer than one slice.
//!
//! Bounded: at most `HASHES_CLIENT_MAX` client hashes at once (more are
//! refused with `TooManyHashes`, not queued) and one check hash (a newer
//! check replaces the older one, whose result nobody needs any more).
//! A job holds its walk's position and a CRC state: a key's bytes, no more.

use std::collections::VecDeque;

use super::proposals::Waiter;
use crate::mvcc::{HashStep, KvHash, LiveHash, Store};
use crate::proto::{ErrorBody, ErrorCode};

/// Client hashes at once. A hash reads the whole store; a handful of
/// operators or monitors comparing members need no more, and each one
/// beyond would slow the others' answers without bound.
pub const HASHES_CLIENT_MAX: usize = 4;

/// Work per slice, in bytes hashed (a key counts `HASH_KEY_COST_BYTES`
/// beside its bytes). 256 KiB took a median 69 us on the development
/// machine (`cargo bench --bench hash`, 50,000 × 1 KiB: 227 slices against
/// 40 ms for the whole hash at once), so well under a millisecond on a
/// board 4-6x slower per core, far below the 100 ms past which heartbeats
/// come late.
pub const HASH_SLICE_BYTES: usize = 256 << 10;

/// Who waits for a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HashFor {
    Client(Waiter),
    /// This member's report for the corruption check opened at this index.
    Check {
        check_index: u64,
    },
}

/// A hash that finished or had to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Finished {
    pub purpose: HashFor,
    /// `None` when a compaction or a restored snapshot stopped it.
    pub hash: Option<KvHash>,
}

struct Job {
    purpose: HashFor,
    hash: LiveHash,
}

/// The hashes in flight. Invariant: at most `HASHES_CLIENT_MAX` client
/// jobs and at most one check job.
#[derive(Default)]
pub(super) struct Hashes {
    jobs: VecDeque<Job>,
}

impl Hashes {
    /// Takes a client's hash, or refuses it when `HASHES_CLIENT_MAX` run.
    pub fn start_client(&mut self, waiter: Waiter, hash: LiveHash) -> Result<(), ErrorBody> {
        let clients = self.jobs.iter().filter(|j| matches!(j.purpose, HashFor::Client(_))).count();
        if clients >= HASHES_CLIENT_MAX {
            return Err(ErrorBody::new(ErrorCode::TooManyHashes));
        }
        self.jobs.push_back(Job { purpose: HashFor::Client(waiter), hash });
        Ok(())
    }

    /// Takes a check's hash, dropping an older check's.
    pub fn start_check(&mut self, check_index: u64, hash: LiveHash) {
        self.jobs.retain(|j| !matches!(j.purpose, HashFor::Check { .. }));
        self.jobs.push_back(Job { purpose: HashFor::Check { check_index }, hash });
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// One slice of the oldest job; it goes to the back unless it ended.
    pub fn step(&mut self, store: &Store) -> Option<Finished> {
        let mut job = self.jobs.pop_front()?;
        let hash = match job.hash.step(store, HASH_SLICE_BYTES) {
            HashStep::Pending => {
                self.jobs.push_back(job);
                return None;
            }
            HashStep::Done(hash) => Some(hash),
            HashStep::Aborted => None,
        };
        Some(Finished { purpose: job.purpose, hash })
    }

    /// Stops every job: the store they walk was replaced.
    pub fn abort_all(&mut self) -> Vec<Finished> {
        self.jobs.drain(..).map(|j| Finished { purpose: j.purpose, hash: None }).collect()
    }
}
