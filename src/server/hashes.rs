//! Keyspace hashes in flight: a client's `HashKv` and this member's part of
//! a corruption check, each taken a slice per loop iteration
//! (`mvcc::LiveHash`), so hashing a large store never holds the loop for
//! longer than one slice.
//!
//! Bounded: at most `HASHES_CLIENT_MAX` client hashes at once (more are
//! refused with `TooManyHashes`, not queued) and one check hash (a newer
//! check replaces the older one, whose result nobody needs any more).
//! A job holds its walk's position and a CRC state: a key's bytes, no more.
//!
//! `CheckClock` says when this member next proposes a corruption check.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::proposals::Waiter;
use crate::mvcc::{HashStep, KvHash, LiveHash, Store};
use crate::proto::{ErrorBody, ErrorCode, Request};

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

/// Fault injection only: names a key whose newest value this member flips
/// a bit of, once, as soon as it holds the key: a bit gone bad in memory or
/// on the card, which no entry explains.
#[cfg(feature = "fault-injection")]
pub const FAULT_FLIP_VALUE_ENV: &str = "EMBER_FAULT_FLIP_VALUE";

/// When this member next proposes a check.
pub(super) struct CheckClock {
    /// The check this member proposes once after it starts.
    pub(super) startup_proposed: bool,
    pub(super) next_try: Instant,
    /// The leader's next periodic check; `None` when they are off.
    pub(super) next_periodic: Option<Instant>,
    /// The compact revision the last compaction check was proposed for.
    pub(super) compact_checked: u64,
}

impl CheckClock {
    pub fn new(period_ms: u64, compact_revision: u64, now: Instant) -> CheckClock {
        CheckClock {
            startup_proposed: false,
            next_try: now,
            next_periodic: (period_ms > 0).then(|| now + Duration::from_millis(period_ms)),
            compact_checked: compact_revision,
        }
    }
}

/// How long a restarted member waits for its start-up check before it
/// serves anyway, in election timeouts: enough for a leader to be elected,
/// the check to commit and every member to hash a board's store (a second
/// or so), short enough that a member whose peers cannot answer (no
/// majority reachable) is not kept from serving the reads it may serve.
pub const STARTUP_CHECK_WAIT_ELECTIONS: u32 = 5;

/// Keyspace requests a restarted member holds while its start-up check
/// runs; more are refused (`Unhealthy`). Each already counts against the
/// client memory budget (`Waiter::cost_bytes`); this bounds their number
/// for the one pass that releases them, about what a few hundred pipelining
/// clients send in the fraction of a second a check takes.
pub const STARTUP_HELD_REQUESTS_MAX: usize = 1024;

/// Whether a restarted member may serve its store yet: not until its
/// start-up check judged it, or `STARTUP_CHECK_WAIT_ELECTIONS` passed.
/// Keyspace requests wait meanwhile, as they would for a ReadIndex round.
/// A member that starts with a fresh data directory has nothing to check
/// and is open from the start.
pub(super) struct StartupGate {
    /// `None` once open. Invariant: `Some` only on a restarted member.
    pub(super) closed: Option<GateClosed>,
    /// Invariant: at most `STARTUP_HELD_REQUESTS_MAX`, and empty once open.
    pub(super) held: VecDeque<(Waiter, Request)>,
}

pub(super) struct GateClosed {
    /// The last index in the log at start: only a check opened after it
    /// hashes what this member holds now.
    pub(super) after_index: u64,
    pub(super) since: Instant,
    pub(super) deadline: Instant,
}

impl StartupGate {
    pub fn new(restarted: bool, last_index: u64, wait: Duration, now: Instant) -> StartupGate {
        let closed = restarted.then(|| GateClosed {
            after_index: last_index,
            since: now,
            deadline: now + wait,
        });
        StartupGate { closed, held: VecDeque::new() }
    }

    /// Holds `request` until the gate opens; false (and dropped) when
    /// there is no room, for the caller to refuse.
    pub fn hold(&mut self, waiter: Waiter, request: Request) -> bool {
        if self.held.len() >= STARTUP_HELD_REQUESTS_MAX {
            return false;
        }
        self.held.push_back((waiter, request));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::PutRequest;

    fn waiter(request_id: u64) -> Waiter {
        Waiter { slot: 0, serial: 1, request_id, cost_bytes: 0 }
    }

    #[test]
    fn client_hashes_are_bounded_and_a_newer_check_replaces_the_older() {
        let mut store = Store::default();
        for i in 0..100u32 {
            let key = format!("k{i:03}").into_bytes();
            store.apply_put(&PutRequest { key, value: vec![1; 10], ..Default::default() }).unwrap();
        }
        let mut hashes = Hashes::default();
        for id in 0..HASHES_CLIENT_MAX as u64 {
            hashes.start_client(waiter(id), store.begin_hash(0).unwrap()).unwrap();
        }
        let refused = hashes.start_client(waiter(9), store.begin_hash(0).unwrap()).unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::TooManyHashes));
        hashes.start_check(5, store.begin_hash(0).unwrap());
        hashes.start_check(6, store.begin_hash(0).unwrap());
        let mut finished = Vec::new();
        while !hashes.is_empty() {
            finished.extend(hashes.step(&store));
        }
        let expected = store.hash_kv(0).unwrap();
        assert_eq!(finished.len(), HASHES_CLIENT_MAX + 1);
        assert!(finished.iter().all(|f| f.hash == Some(expected)));
        let checks: Vec<HashFor> = finished
            .iter()
            .map(|f| f.purpose)
            .filter(|p| matches!(p, HashFor::Check { .. }))
            .collect();
        assert_eq!(checks, [HashFor::Check { check_index: 6 }]);
    }

    #[test]
    fn a_compaction_or_a_replaced_store_aborts_every_hash() {
        let mut store = Store::default();
        for value in [b"a", b"b"] {
            let put =
                PutRequest { key: b"k".to_vec(), value: value.to_vec(), ..Default::default() };
            store.apply_put(&put).unwrap();
        }
        let mut hashes = Hashes::default();
        hashes.start_client(waiter(1), store.begin_hash(0).unwrap()).unwrap();
        store.compact(2).unwrap();
        assert_eq!(hashes.step(&store).map(|f| f.hash), Some(None));
        hashes.start_check(3, store.begin_hash(0).unwrap());
        let aborted = hashes.abort_all();
        assert_eq!(aborted, [Finished { purpose: HashFor::Check { check_index: 3 }, hash: None }]);
        assert!(hashes.is_empty());
    }
}
