//! The store's size as the quota counts it, and the quota itself.
//!
//! The size must be the same on every member at the same applied index, so
//! it is computed from what entries did, never from memory or files (those
//! differ with allocation, with how far each member's physical compaction
//! has gone, with snapshots). It is:
//!
//! ```text
//! size = live bytes + history bytes written after the compact revision
//! live bytes    = Σ over the keys alive at the newest revision of
//!                 key + value + VERSION_OVERHEAD_BYTES
//! history bytes = Σ over versions a later put or delete superseded, and
//!                 over tombstones, of their key + value + VERSION_OVERHEAD_BYTES,
//!                 counted at the revision that superseded them
//! ```
//!
//! That is what the store keeps (the newest version of each live key, and
//! the history a compaction has not dropped yet), counted the way the
//! store's image writes it. A compaction at revision R drops exactly the
//! history counted at revisions up to R: a version superseded at or before
//! R is not the newest at R. Each lease counts `LEASE_OVERHEAD_BYTES`.
//!
//! History is counted per revision in `marks` (revision, history bytes up
//! to it), one mark per revision that wrote history. At most `MARKS_MAX`
//! are kept; past that every other one is dropped, which can only make a
//! later compaction count more history than it dropped (the size errs
//! high, never low), and the thinning is itself a function of the entries,
//! so every member thins alike.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::StateMachine;
use super::alarms::{AlarmKind, AlarmOp};
use crate::mvcc::{Event, EventKind};
use crate::proto::{self, ErrorBody, ErrorCode, Response};

/// What a version costs beyond its key and value: its revisions, version,
/// lease and the lengths, as the store's image writes them (five varints
/// of at most ten bytes, two length prefixes), rounded up.
pub const VERSION_OVERHEAD_BYTES: u64 = 64;
/// What a lease costs: its id and TTL, and its place in the table.
pub const LEASE_OVERHEAD_BYTES: u64 = 64;
/// The quota when `--quota-backend-bytes` is not given: 128 MiB. The whole
/// store lives in memory on boards of 256 MiB to 1 GiB, beside a snapshot
/// image of about its size being written out and the WAL's mapped
/// segments; 128 MiB of data leaves room for all of that on a 512 MiB
/// board. etcd's 2 GiB default is sized for servers.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 128 << 20;
/// A `NoSpace` raised by the quota clears itself once a compaction brings
/// the size to this share of the quota or below: far enough under it that
/// the next few writes do not raise it again at once.
pub const QUOTA_LOW_WATER_PERCENT: u64 = 90;
/// The most history marks kept: 16 bytes each, 64 KiB in all.
pub const MARKS_MAX: usize = 4096;

/// The size counters, replicated in the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    live_bytes: u64,
    /// History bytes ever counted.
    history_bytes: u64,
    /// History bytes counted at or below the compact revision.
    history_dropped_bytes: u64,
    lease_bytes: u64,
    /// (revision, `history_bytes` after it). Invariant: ascending in both,
    /// at most `MARKS_MAX`, all above the compact revision.
    marks: VecDeque<(u64, u64)>,
    /// The quota of the cluster, proposed by a leader from its own
    /// `--quota-backend-bytes`; 0 until one did: the default then.
    quota_bytes: u64,
    /// True while a `NoSpace` alarm the quota raised is up.
    quota_alarmed: bool,
    /// True when the counters were rebuilt from an image older than them
    /// (format 2): its history is unknown, and members restored from
    /// images of different indexes would count different histories. The
    /// quota is not enforced until the next compaction, which forgets all
    /// history counted so far on every member alike.
    seeded: bool,
}

fn version_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + VERSION_OVERHEAD_BYTES
}

impl Usage {
    /// The store's size as defined above.
    pub fn size_bytes(&self) -> u64 {
        let history = self.history_bytes.saturating_sub(self.history_dropped_bytes);
        self.live_bytes.saturating_add(history).saturating_add(self.lease_bytes)
    }

    /// The quota in force.
    pub fn quota_bytes(&self) -> u64 {
        match self.quota_bytes {
            0 => QUOTA_BACKEND_BYTES_DEFAULT,
            set => set,
        }
    }

    /// The quota as replicated: 0 while no leader has proposed one.
    pub fn quota_bytes_set(&self) -> u64 {
        self.quota_bytes
    }

    pub(super) fn set_quota(&mut self, quota_bytes: u64) {
        self.quota_bytes = quota_bytes;
    }

    pub fn quota_alarmed(&self) -> bool {
        self.quota_alarmed
    }

    pub(super) fn set_quota_alarmed(&mut self, alarmed: bool) {
        self.quota_alarmed = alarmed;
    }

    /// True when adding `cost_bytes` would take the size past the quota.
    /// Never while the counters are seeded (see `seeded`).
    pub fn would_exceed(&self, cost_bytes: u64) -> bool {
        !self.seeded && self.size_bytes().saturating_add(cost_bytes) > self.quota_bytes()
    }

    /// Counters for an image that has none: its history unknown.
    pub fn unknown() -> Usage {
        Usage { seeded: true, ..Usage::default() }
    }

    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    /// Fills seeded counters from the restored store and lease table.
    pub(super) fn seed(&mut self, live_bytes: u64, leases: usize) {
        self.live_bytes = live_bytes;
        self.lease_bytes = leases as u64 * LEASE_OVERHEAD_BYTES;
    }

    /// True when the size is at or under the low-water mark.
    pub fn below_low_water(&self) -> bool {
        let low = self.quota_bytes() / 100 * QUOTA_LOW_WATER_PERCENT;
        self.size_bytes() <= low
    }

    /// Counts what one write did, at `revision`.
    pub(super) fn record(&mut self, revision: u64, events: &[Event]) {
        let before = self.history_bytes;
        for event in events {
            let old = event.prev_kv.as_ref().map_or(0, |p| version_bytes(&p.key, &p.value));
            self.live_bytes = self.live_bytes.saturating_sub(old);
            self.history_bytes += old;
            match event.kind {
                EventKind::Put => {
                    self.live_bytes += version_bytes(&event.kv.key, &event.kv.value);
                }
                EventKind::Delete => self.history_bytes += version_bytes(&event.kv.key, &[]),
            }
        }
        if self.history_bytes > before {
            self.mark(revision);
        }
    }

    fn mark(&mut self, revision: u64) {
        match self.marks.back_mut() {
            Some(last) if last.0 == revision => last.1 = self.history_bytes,
            _ => self.marks.push_back((revision, self.history_bytes)),
        }
        if self.marks.len() > MARKS_MAX {
            // Keep every other mark, the newest among them.
            let kept: VecDeque<(u64, u64)> =
                self.marks.iter().rev().step_by(2).rev().copied().collect();
            self.marks = kept;
        }
    }

    /// A compaction at `revision` drops the history counted up to it (all
    /// of it while seeded: see `seeded`).
    pub(super) fn compact(&mut self, revision: u64) {
        if self.seeded {
            self.history_dropped_bytes = self.history_bytes;
            self.marks.clear();
            self.seeded = false;
            return;
        }
        while let Some(&(at, bytes)) = self.marks.front() {
            if at > revision {
                break;
            }
            self.history_dropped_bytes = bytes;
            self.marks.pop_front();
        }
    }

    pub(super) fn lease_granted(&mut self) {
        self.lease_bytes += LEASE_OVERHEAD_BYTES;
    }

    pub(super) fn lease_gone(&mut self) {
        self.lease_bytes = self.lease_bytes.saturating_sub(LEASE_OVERHEAD_BYTES);
    }

    /// True when the counters keep their invariants; for a snapshot read
    /// from a peer or a file.
    pub fn is_sound(&self) -> bool {
        let ascending = self.marks.iter().zip(self.marks.iter().skip(1));
        self.marks.len() <= MARKS_MAX
            && ascending.clone().all(|(a, b)| a.0 < b.0 && a.1 <= b.1)
            && self.history_dropped_bytes <= self.history_bytes
            && self.marks.back().is_none_or(|m| m.1 <= self.history_bytes)
    }
}

impl StateMachine {
    /// Refuses a write that would take the store past the quota, and
    /// raises `NoSpace` for every member: all of them apply this entry and
    /// decide alike, so every member enters the alarm at this index.
    pub(super) fn check_quota(&mut self, op: &super::Op, index: u64) -> Result<(), ErrorBody> {
        let cost_bytes = cost_bytes(op);
        if cost_bytes == 0 || !self.usage.would_exceed(cost_bytes) {
            return Ok(());
        }
        log::warn!(
            "quota: the store's {} bytes and {cost_bytes} more would pass the quota of {} \
             bytes at index {index} (revision {}): NOSPACE raised",
            self.usage.size_bytes(),
            self.usage.quota_bytes(),
            self.store.current_revision()
        );
        let members: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        for member_id in members {
            let op = AlarmOp { member_id, kind: AlarmKind::NoSpace, raise: true };
            let _ = self.apply_alarm(op, 0);
        }
        self.usage.set_quota_alarmed(true);
        Err(ErrorBody::new(ErrorCode::NoSpace))
    }

    /// A compaction; once it brings the store to the low-water mark, the
    /// `NoSpace` alarms the quota raised clear themselves.
    pub(super) fn apply_compact(
        &mut self,
        revision: u64,
        raft_term: u64,
    ) -> Result<Response, ErrorBody> {
        self.store.compact(revision).map_err(super::command::store_error)?;
        self.usage.compact(revision);
        if self.usage.quota_alarmed() && self.usage.below_low_water() {
            log::info!(
                "quota: the store's {} bytes are under the low-water mark ({}% of {}): \
                 NOSPACE cleared",
                self.usage.size_bytes(),
                QUOTA_LOW_WATER_PERCENT,
                self.usage.quota_bytes()
            );
            self.clear_space_alarms();
        }
        Ok(Response::Compact(proto::CompactionResponse { header: self.header(raft_term) }))
    }

    fn clear_space_alarms(&mut self) {
        let members: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        for member_id in members {
            let op = AlarmOp { member_id, kind: AlarmKind::NoSpace, raise: false };
            let _ = self.apply_alarm(op, 0);
        }
    }

    /// A leader's quota becomes the cluster's.
    pub(super) fn apply_quota(&mut self, quota_bytes: u64, raft_term: u64) -> Response {
        if quota_bytes != self.usage.quota_bytes_set() {
            log::info!("quota: the cluster's quota is now {quota_bytes} bytes");
        }
        self.usage.set_quota(quota_bytes);
        Response::Alarm(proto::AlarmResponse { header: self.header(raft_term), alarms: Vec::new() })
    }

    /// The store's size and the quota, for status and metrics.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// Rebuilds seeded counters from the store (see `Usage::seeded`).
    pub(super) fn seed_usage(&mut self) {
        if !self.usage.is_seeded() {
            return;
        }
        let all = crate::mvcc::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..crate::mvcc::RangeRequest::default()
        };
        let live: u64 = match self.store.range(&all) {
            Ok(found) => found.kvs.iter().map(|kv| version_bytes(&kv.key, &kv.value)).sum(),
            Err(_) => 0,
        };
        let leases = self.leases.records().count();
        self.usage.seed(live, leases);
    }
}

/// What a write would add to the size at most: every put of a txn, in
/// both branches at every depth, is counted whole.
pub fn cost_bytes(op: &super::Op) -> u64 {
    use super::Op;
    use crate::mvcc::{RequestOp, TxnRequest};
    fn txn(t: &TxnRequest) -> u64 {
        t.success
            .iter()
            .chain(&t.failure)
            .map(|op| match op {
                RequestOp::Put(p) => version_bytes(&p.key, &p.value),
                RequestOp::Txn(inner) => txn(inner),
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => 0,
            })
            .sum()
    }
    match op {
        Op::Put(p) => version_bytes(&p.key, &p.value),
        Op::Txn(t) => txn(t),
        Op::LeaseGrant { .. } => LEASE_OVERHEAD_BYTES,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::KeyValue;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: value.into(), ..KeyValue::default() }
    }

    fn put(key: &str, value: &str, prev: Option<&str>) -> Event {
        Event {
            kind: EventKind::Put,
            kv: kv(key, value),
            prev_kv: prev.map(|p| kv(key, p)),
            sub_revision: 0,
        }
    }

    #[test]
    fn overwrites_count_history_until_compacted() {
        let mut usage = Usage::default();
        usage.record(2, &[put("k", "aaaa", None)]);
        assert_eq!(usage.size_bytes(), 1 + 4 + VERSION_OVERHEAD_BYTES);
        usage.record(3, &[put("k", "bb", Some("aaaa"))]);
        assert_eq!(usage.size_bytes(), (1 + 2) + (1 + 4) + 2 * VERSION_OVERHEAD_BYTES);
        let delete = Event {
            kind: EventKind::Delete,
            kv: kv("k", ""),
            prev_kv: Some(kv("k", "bb")),
            sub_revision: 0,
        };
        usage.record(4, &[delete]);
        assert_eq!(usage.live_bytes, 0);
        usage.compact(3);
        assert_eq!(usage.size_bytes(), (1 + 2) + 1 + 2 * VERSION_OVERHEAD_BYTES);
        usage.compact(4);
        assert_eq!(usage.size_bytes(), 0);
        assert!(usage.is_sound());
    }

    #[test]
    fn thinning_keeps_the_marks_bounded_and_the_size_high() {
        let mut usage = Usage::default();
        usage.record(1, &[put("k", "v", None)]);
        for revision in 2..(MARKS_MAX as u64 * 3) {
            usage.record(revision, &[put("k", "v", Some("v"))]);
        }
        assert!(usage.marks.len() <= MARKS_MAX);
        assert!(usage.is_sound());
        let exact = usage.clone();
        usage.compact(MARKS_MAX as u64);
        // One version of history per revision above the compaction, or more.
        let per = version_bytes(b"k", b"v");
        let above = MARKS_MAX as u64 * 3 - 1 - MARKS_MAX as u64;
        assert!(usage.size_bytes() >= per + above * per, "{}", usage.size_bytes());
        assert!(usage.size_bytes() <= exact.size_bytes());
    }

    #[test]
    fn the_quota_defaults_and_the_low_water_mark_is_below_it() {
        let mut usage = Usage::default();
        assert_eq!(usage.quota_bytes(), QUOTA_BACKEND_BYTES_DEFAULT);
        usage.set_quota(1000);
        assert!(usage.would_exceed(1001));
        assert!(!usage.would_exceed(1000));
        usage.record(2, &[put("k", &"v".repeat(900), None)]);
        assert!(!usage.below_low_water());
    }
}
