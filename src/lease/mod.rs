//! Leases: the lease table, time-to-live and expiry of the keys attached to a
//! lease.
//!
//! Must not touch: sockets, files or the clock. Time enters as `now_ms`, a
//! millisecond count on the caller's monotonic clock; expiry is driven by
//! the leader's clock through proposals, so applying the log stays
//! deterministic.
//!
//! What is replicated and what is not:
//! - replicated (it changes only when a committed entry is applied, and a
//!   snapshot carries it): which leases exist, the TTL each was granted and
//!   the user who granted it (its owner, who may revoke it);
//! - local: each lease's deadline. Clocks of two boards do not agree, so a
//!   deadline means something only on the member that set it. A member
//!   gives a lease its full TTL when it applies the grant, when it renews
//!   it, and for every lease when it becomes leader (`promote`): a lease
//!   outlives a leader change with its TTL renewed, never cut short.
//!
//! Only the leader asks `take_expired` which leases are past their deadline
//! and proposes their revocation; followers keep deadlines only to answer
//! time-to-live questions.
//!
//! Numbers: the table is capped by configuration (`LEASES_MAX_DEFAULT`, the
//! `--max-leases` flag), not by load; each lease costs about 62 bytes here
//! (`benches/lease.rs`), plus its owner's name when auth was on at the
//! grant (at most `auth::USER_NAME_BYTES_MAX`), and in a snapshot at most
//! 13 bytes (two varints and the owner's tag) plus the name.
//! `take_expired` scans the table: at the default cap that is ten thousand
//! comparisons per tick (about 14 µs on the bench machine), cheaper than
//! keeping a second index ordered by deadline up to date on every renewal.

use std::collections::BTreeMap;

pub use crate::limits::{LEASE_TTL_SECS_MAX, LEASES_MAX_DEFAULT};

/// etcd's default rate of revocations for expired leases: a burst of
/// expiries becomes a steady stream of entries instead of one flood.
pub const REVOKE_RATE_PER_SEC: u64 = 1000;

/// The shortest TTL granted for a given election timeout: ceil(1.5 ×
/// election timeout) in seconds, at least one. A shorter lease could expire
/// during the election that follows a leader's failure, before any member
/// is there to renew it.
pub fn min_ttl_secs(election_timeout_ms: u64) -> i64 {
    let secs = (election_timeout_ms.saturating_mul(3)).div_ceil(2000);
    i64::try_from(secs).unwrap_or(LEASE_TTL_SECS_MAX).clamp(1, LEASE_TTL_SECS_MAX)
}

/// Why a lease operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    /// No lease with that id.
    NotFound,
    /// A grant named an id already in use.
    Exists,
    /// A grant asked for more than `LEASE_TTL_SECS_MAX`.
    TtlTooLarge,
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::NotFound => write!(f, "lease not found"),
            LeaseError::Exists => write!(f, "lease already exists"),
            LeaseError::TtlTooLarge => write!(f, "lease TTL above {LEASE_TTL_SECS_MAX} s"),
        }
    }
}

impl std::error::Error for LeaseError {}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Invariant: in `1..=LEASE_TTL_SECS_MAX`.
    ttl_secs: i64,
    /// On this member's clock; see the module doc for who sets it.
    deadline_ms: u64,
    /// The user the grant was checked as; `None` when auth was off or the
    /// owner has since been deleted. A boxed name: the table holds up to
    /// `--max-leases` of them, mostly `None`.
    owner: Option<Box<str>>,
}

/// The leases a member knows, with their local deadlines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTable {
    /// By id; 0 is never an id (it means "no lease" on a key).
    leases: BTreeMap<i64, Entry>,
}

fn ttl_ms(ttl_secs: i64) -> u64 {
    (ttl_secs.max(0) as u64).saturating_mul(1000)
}

impl LeaseTable {
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

    /// A table holding `leases` (id, granted TTL, owner), each with its
    /// full TTL from `now_ms`: what a member knows after restoring a
    /// snapshot.
    pub fn from_records<'a>(
        leases: impl IntoIterator<Item = (i64, i64, Option<&'a str>)>,
        now_ms: u64,
    ) -> LeaseTable {
        let mut table = LeaseTable::new();
        for (id, ttl_secs, owner) in leases {
            // A snapshot is checked at its boundary; a bad record here is
            // skipped rather than trusted.
            let _ = table.grant(id, ttl_secs, owner, now_ms);
        }
        table
    }

    /// The TTL a grant asking for `requested_secs` gets: raised to
    /// `min_secs`, refused above `LEASE_TTL_SECS_MAX`.
    pub fn effective_ttl_secs(requested_secs: i64, min_secs: i64) -> Result<i64, LeaseError> {
        if requested_secs > LEASE_TTL_SECS_MAX {
            return Err(LeaseError::TtlTooLarge);
        }
        Ok(requested_secs.max(min_secs).clamp(1, LEASE_TTL_SECS_MAX))
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Ids in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.keys().copied()
    }

    /// (id, granted TTL, owner) in ascending id order: the replicated part.
    pub fn records(&self) -> impl Iterator<Item = (i64, i64, Option<&str>)> + '_ {
        self.leases.iter().map(|(id, e)| (*id, e.ttl_secs, e.owner.as_deref()))
    }

    /// Adds a lease that lives `ttl_secs` from `now_ms`, granted by `owner`.
    pub fn grant(
        &mut self,
        id: i64,
        ttl_secs: i64,
        owner: Option<&str>,
        now_ms: u64,
    ) -> Result<(), LeaseError> {
        if id == 0 {
            return Err(LeaseError::NotFound);
        }
        if ttl_secs > LEASE_TTL_SECS_MAX {
            return Err(LeaseError::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let ttl_secs = ttl_secs.max(1);
        let deadline_ms = now_ms.saturating_add(ttl_ms(ttl_secs));
        let owner = owner.map(Box::from);
        self.leases.insert(id, Entry { ttl_secs, deadline_ms, owner });
        Ok(())
    }

    /// The user who granted the lease, if it is known.
    pub fn owner(&self, id: i64) -> Option<&str> {
        self.leases.get(&id)?.owner.as_deref()
    }

    /// Forgets `user` as the owner of every lease it granted: the user was
    /// deleted, and a user added later under the same name is someone else.
    pub fn disown(&mut self, user: &str) {
        for entry in self.leases.values_mut() {
            if entry.owner.as_deref() == Some(user) {
                entry.owner = None;
            }
        }
    }

    /// Removes the lease; the caller deletes its keys.
    pub fn revoke(&mut self, id: i64) -> Result<(), LeaseError> {
        self.leases.remove(&id).map(|_| ()).ok_or(LeaseError::NotFound)
    }

    /// Gives the lease its full TTL again from `now_ms`; returns the TTL.
    pub fn renew(&mut self, id: i64, now_ms: u64) -> Result<i64, LeaseError> {
        let entry = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        entry.deadline_ms = now_ms.saturating_add(ttl_ms(entry.ttl_secs));
        Ok(entry.ttl_secs)
    }

    /// The granted TTL.
    pub fn ttl_secs(&self, id: i64) -> Option<i64> {
        self.leases.get(&id).map(|e| e.ttl_secs)
    }

    /// Whole seconds left, rounded up; -1 once the deadline has passed (the
    /// lease is expired but its revocation has not been applied yet).
    pub fn remaining_secs(&self, id: i64, now_ms: u64) -> Option<i64> {
        let entry = self.leases.get(&id)?;
        if entry.deadline_ms <= now_ms {
            return Some(-1);
        }
        Some((entry.deadline_ms - now_ms).div_ceil(1000) as i64)
    }

    /// Gives every lease its full TTL from `now_ms`: the member has just
    /// become leader and cannot know when the previous one last renewed.
    pub fn promote(&mut self, now_ms: u64) {
        for entry in self.leases.values_mut() {
            entry.deadline_ms = now_ms.saturating_add(ttl_ms(entry.ttl_secs));
        }
    }

    /// Up to `max` leases past their deadline, earliest first. Each one
    /// returned gets `retry_ms` of grace, so the revocation the caller
    /// proposes is not proposed again every tick while it commits (and is
    /// proposed again if it got lost).
    pub fn take_expired(&mut self, now_ms: u64, max: usize, retry_ms: u64) -> Vec<i64> {
        let mut expired: Vec<(u64, i64)> = self
            .leases
            .iter()
            .filter(|(_, e)| e.deadline_ms <= now_ms)
            .map(|(id, e)| (e.deadline_ms, *id))
            .collect();
        expired.sort_unstable();
        expired.truncate(max);
        for (_, id) in &expired {
            let entry = self.leases.get_mut(id).expect("found above");
            entry.deadline_ms = now_ms.saturating_add(retry_ms);
        }
        expired.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl_secs(1000), 2);
        assert_eq!(min_ttl_secs(100), 1);
        assert_eq!(min_ttl_secs(0), 1);
        assert_eq!(min_ttl_secs(2000), 3);
        assert_eq!(min_ttl_secs(2001), 4);
        assert_eq!(min_ttl_secs(u64::MAX), LEASE_TTL_SECS_MAX);
    }

    #[test]
    fn effective_ttl_raises_short_and_refuses_huge() {
        assert_eq!(LeaseTable::effective_ttl_secs(1, 2), Ok(2));
        assert_eq!(LeaseTable::effective_ttl_secs(-5, 2), Ok(2));
        assert_eq!(LeaseTable::effective_ttl_secs(60, 2), Ok(60));
        assert_eq!(LeaseTable::effective_ttl_secs(LEASE_TTL_SECS_MAX, 2), Ok(LEASE_TTL_SECS_MAX));
        let too_big = LeaseTable::effective_ttl_secs(LEASE_TTL_SECS_MAX + 1, 2);
        assert_eq!(too_big, Err(LeaseError::TtlTooLarge));
    }

    #[test]
    fn grant_revoke_and_duplicates() {
        let mut t = LeaseTable::new();
        assert_eq!(t.grant(7, 10, None, 0), Ok(()));
        assert_eq!(t.grant(7, 20, None, 0), Err(LeaseError::Exists));
        assert_eq!(t.grant(0, 20, None, 0), Err(LeaseError::NotFound));
        assert_eq!(t.grant(8, LEASE_TTL_SECS_MAX + 1, None, 0), Err(LeaseError::TtlTooLarge));
        assert_eq!(t.ttl_secs(7), Some(10));
        assert_eq!(t.len(), 1);
        assert_eq!(t.revoke(7), Ok(()));
        assert_eq!(t.revoke(7), Err(LeaseError::NotFound));
        assert!(t.is_empty());
    }

    #[test]
    fn remaining_counts_down_and_renew_restores_it() {
        let mut t = LeaseTable::new();
        t.grant(1, 10, None, 1_000).unwrap();
        assert_eq!(t.remaining_secs(1, 1_000), Some(10));
        assert_eq!(t.remaining_secs(1, 4_500), Some(7));
        assert_eq!(t.remaining_secs(1, 11_000), Some(-1));
        assert_eq!(t.renew(1, 11_000), Ok(10));
        assert_eq!(t.remaining_secs(1, 11_000), Some(10));
        assert_eq!(t.renew(2, 0), Err(LeaseError::NotFound));
        assert_eq!(t.remaining_secs(2, 0), None);
    }

    #[test]
    fn take_expired_is_ordered_bounded_and_gives_grace() {
        let mut t = LeaseTable::new();
        t.grant(1, 5, None, 0).unwrap();
        t.grant(2, 3, None, 0).unwrap();
        t.grant(3, 100, None, 0).unwrap();
        assert!(t.take_expired(2_999, 10, 1_000).is_empty());
        assert_eq!(t.take_expired(6_000, 1, 1_000), vec![2]);
        assert_eq!(t.take_expired(6_000, 10, 1_000), vec![1]);
        // Both were handed out; they come back only after the grace.
        assert!(t.take_expired(6_500, 10, 1_000).is_empty());
        assert_eq!(t.take_expired(7_000, 10, 1_000), vec![1, 2]);
    }

    #[test]
    fn promote_gives_every_lease_its_full_ttl() {
        let mut t = LeaseTable::new();
        t.grant(1, 5, None, 0).unwrap();
        t.grant(2, 60, None, 0).unwrap();
        t.promote(50_000);
        assert_eq!(t.remaining_secs(1, 50_000), Some(5));
        assert_eq!(t.remaining_secs(2, 50_000), Some(60));
        assert!(t.take_expired(54_999, 10, 0).is_empty());
        assert_eq!(t.take_expired(55_000, 10, 0), vec![1]);
    }

    #[test]
    fn records_round_trip_and_bad_records_are_skipped() {
        let mut t = LeaseTable::new();
        t.grant(3, 30, Some("alice"), 0).unwrap();
        t.grant(1, 10, None, 0).unwrap();
        let records: Vec<(i64, i64, Option<&str>)> = t.records().collect();
        assert_eq!(records, vec![(1, 10, None), (3, 30, Some("alice"))]);
        let back = LeaseTable::from_records(records.iter().copied().chain([(0, 5, None)]), 0);
        assert_eq!(back, t);
        assert_eq!(back.ids().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn a_deleted_owner_is_forgotten_and_nobody_else() {
        let mut t = LeaseTable::new();
        t.grant(1, 10, Some("alice"), 0).unwrap();
        t.grant(2, 10, Some("bob"), 0).unwrap();
        t.grant(3, 10, Some("alice"), 0).unwrap();
        assert_eq!(t.owner(1), Some("alice"));
        t.disown("alice");
        assert_eq!((t.owner(1), t.owner(2), t.owner(3)), (None, Some("bob"), None));
        assert_eq!(t.owner(9), None);
    }
}
