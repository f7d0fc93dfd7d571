//! The corruption check, decided by the log: a check entry names a
//! revision, every member hashes its store there and proposes a report,
//! and the state machine, once a majority of the voters agree on a hash,
//! raises `Corrupt` for each member that reported another. Every member
//! applies the same reports in the same order, so every member raises (and
//! clears) the same alarms at the same index.
//!
//! * `Check { revision }` opens a check at `revision` (0: the store's
//!   revision when the entry applies, the same on every member), replacing
//!   any check still open: its reports are no longer awaited.
//! * `Report { check_index, member_id, hash }` is one member's hash for the
//!   check opened at `check_index`; a report for another check, from a
//!   learner, from a member not in the table, or a second one from the same
//!   member changes nothing.
//! * Decided: some hash is held by a majority of the voters. Each member
//!   that reported another hash gets `Corrupt`; each that reported it and
//!   carries `Corrupt` is cleared (its state was repaired). Later reports
//!   of the same check are judged against that hash at once.
//! * No majority possible (the hashes reported leave no hash able to reach
//!   one): every member that reported gets `Corrupt`, and the check is
//!   marked as having no majority, so no member is ever repaired from it.
//!
//! Bounded: one open check, at most one report per member of the table.

use serde::{Deserialize, Serialize};

use super::StateMachine;
use super::alarms::{AlarmKind, AlarmRecord};
use crate::mvcc;
use crate::proto::{self, ErrorBody, ErrorCode, Response};

/// A check entry or a report, as replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CorruptOp {
    /// Opens a check at `revision`; 0 means the store's revision when
    /// the entry applies.
    Check { revision: u64 },
    /// A member's hash of its store for the check opened at `check_index`.
    Report { check_index: u64, member_id: u64, hash: u32 },
}

/// The check open now. Invariant: `reports` ascending by member, one per
/// member, each a voter when it was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenCheck {
    /// The index of the entry that opened it: the check's name in reports.
    pub index: u64,
    pub revision: u64,
    /// The store's compact revision when it opened: every member hashes
    /// with this one, or its hash aborts.
    pub compact_revision: u64,
    /// (member, hash), ascending by member.
    pub reports: Vec<(u64, u32)>,
    /// The hash a majority of the voters reported, once known.
    pub majority_hash: Option<u32>,
    /// Set when the reports leave no hash able to reach a majority.
    pub no_majority: bool,
}

/// What the node must do after a check entry applies on this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashWanted {
    pub check_index: u64,
    pub revision: u64,
}

impl OpenCheck {
    /// Sound as restored from a snapshot: reports ascending, unique.
    pub fn is_sound(&self) -> bool {
        self.reports.windows(2).all(|w| w[0].0 < w[1].0)
            && self.compact_revision <= self.revision
            && !(self.no_majority && self.majority_hash.is_some())
    }
}

impl OpenCheck {
    /// The members whose hash a majority of `voters` share, when this
    /// check decided so and `member_id` is not among them: the members a
    /// repair of `member_id` may trust. Empty otherwise (pending, no
    /// majority, or `member_id` agrees), so nothing is repaired on a check
    /// that did not single it out.
    pub fn sound_members(&self, member_id: u64, voters: &[u64]) -> Vec<u64> {
        let Some(majority) = self.majority_hash else { return Vec::new() };
        let agreeing: Vec<u64> = self
            .reports
            .iter()
            .filter(|r| r.1 == majority && voters.contains(&r.0))
            .map(|r| r.0)
            .collect();
        let quorum = voters.len() / 2 + 1;
        if agreeing.contains(&member_id) || agreeing.len() < quorum {
            return Vec::new();
        }
        agreeing
    }

    /// Whether this check, opened after `after_index`, has judged
    /// `member_id`: decided with its report counted (a voter's), or decided
    /// at all (a learner, which does not report), or found no majority.
    pub fn has_judged(&self, member_id: u64, is_voter: bool, after_index: u64) -> bool {
        if self.index <= after_index {
            return false;
        }
        let reported = self.reports.iter().any(|r| r.0 == member_id);
        self.no_majority || (self.majority_hash.is_some() && (reported || !is_voter))
    }
}

impl StateMachine {
    /// The check open now, if any.
    pub fn open_check(&self) -> Option<&OpenCheck> {
        self.check.as_ref()
    }

    pub(super) fn apply_corrupt(
        &mut self,
        op: CorruptOp,
        raft_term: u64,
    ) -> (Result<Response, ErrorBody>, Option<HashWanted>) {
        let index = self.applied_index;
        match op {
            CorruptOp::Check { revision } => match self.open_check_at(revision, index) {
                Ok(wanted) => (Ok(self.alarm_answer(Vec::new(), raft_term)), Some(wanted)),
                Err(refused) => (Err(refused), None),
            },
            CorruptOp::Report { check_index, member_id, hash } => {
                let result = self.apply_report(check_index, member_id, hash);
                (result.map(|changed| self.alarm_answer(changed, raft_term)), None)
            }
        }
    }

    fn open_check_at(&mut self, revision: u64, index: u64) -> Result<HashWanted, ErrorBody> {
        let store = &self.store;
        let revision = if revision == 0 { store.current_revision() } else { revision };
        if revision < store.compact_revision() {
            return Err(super::command::store_error(mvcc::Error::Compacted {
                compact_revision: store.compact_revision(),
            }));
        }
        if revision > store.current_revision() {
            return Err(super::command::store_error(mvcc::Error::FutureRevision {
                current_revision: store.current_revision(),
            }));
        }
        let compact_revision = store.compact_revision();
        self.check = Some(OpenCheck { index, revision, compact_revision, ..OpenCheck::default() });
        log::debug!("corruption check {index} opened at revision {revision}");
        Ok(HashWanted { check_index: index, revision })
    }

    /// Records a report and decides; the alarms it raised or cleared.
    fn apply_report(
        &mut self,
        check_index: u64,
        member_id: u64,
        hash: u32,
    ) -> Result<Vec<(AlarmRecord, bool)>, ErrorBody> {
        let voters: Vec<u64> =
            self.members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect();
        if !voters.contains(&member_id) {
            return Err(ErrorBody::new(ErrorCode::MemberNotFound));
        }
        let Some(check) = self.check.as_mut().filter(|c| c.index == check_index) else {
            // A report for a check that another replaced: nobody awaits it.
            return Ok(Vec::new());
        };
        let Err(at) = check.reports.binary_search_by_key(&member_id, |r| r.0) else {
            return Ok(Vec::new());
        };
        check.reports.insert(at, (member_id, hash));
        let check = check.clone();
        Ok(self.judge(&check, &voters))
    }

    /// Raises and clears `Corrupt` as the check's reports call for.
    fn judge(&mut self, check: &OpenCheck, voters: &[u64]) -> Vec<(AlarmRecord, bool)> {
        // A member that left the table since it reported counts no more,
        // and may carry no alarm (the alarms' invariant).
        let reports: Vec<(u64, u32)> =
            check.reports.iter().copied().filter(|r| voters.contains(&r.0)).collect();
        let verdict = verdict(&reports, voters.len());
        let mut changed = Vec::new();
        for &(member_id, hash) in &reports {
            let record = AlarmRecord { member_id, kind: AlarmKind::Corrupt };
            let corrupt = match verdict {
                Verdict::Pending => continue,
                Verdict::Majority(majority) => hash != majority,
                Verdict::NoMajority => true,
            };
            let raised = self.alarms.is_raised_for(member_id, AlarmKind::Corrupt);
            if corrupt && !raised {
                log_raise(check, member_id, hash, verdict, self.applied_index);
                self.alarms.raise(record);
                changed.push((record, true));
            } else if !corrupt && raised {
                log::warn!(
                    "member {member_id:016x} hashes {hash:08x} at revision {} like a majority \
                     again: CORRUPT cleared",
                    check.revision
                );
                self.alarms.clear(record);
                changed.push((record, false));
            }
        }
        if let Some(open) = self.check.as_mut() {
            open.majority_hash = match verdict {
                Verdict::Majority(hash) => Some(hash),
                _ => None,
            };
            open.no_majority = verdict == Verdict::NoMajority;
        }
        changed
    }

    fn alarm_answer(&self, changed: Vec<(AlarmRecord, bool)>, raft_term: u64) -> Response {
        let alarms = changed.into_iter().map(|(record, _)| record.proto()).collect();
        Response::Alarm(proto::AlarmResponse { header: self.header(raft_term), alarms })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Some hash could still reach a majority with the reports to come.
    Pending,
    Majority(u32),
    NoMajority,
}

/// What the reports so far say, among `voters` voters.
fn verdict(reports: &[(u64, u32)], voters: usize) -> Verdict {
    let quorum = voters / 2 + 1;
    let mut best = (0, 0);
    for &(_, hash) in reports {
        let count = reports.iter().filter(|r| r.1 == hash).count();
        if count > best.0 {
            best = (count, hash);
        }
    }
    if best.0 >= quorum {
        return Verdict::Majority(best.1);
    }
    let awaited = voters.saturating_sub(reports.len());
    if best.0 + awaited < quorum { Verdict::NoMajority } else { Verdict::Pending }
}

fn log_raise(check: &OpenCheck, member_id: u64, hash: u32, verdict: Verdict, index: u64) {
    match verdict {
        Verdict::Majority(majority) => log::error!(
            "member {member_id:016x} hashes {hash:08x} at revision {} (compact revision {}), \
             a majority {majority:08x}: CORRUPT raised for it at index {index}",
            check.revision,
            check.compact_revision
        ),
        _ => log::error!(
            "member {member_id:016x} hashes {hash:08x} at revision {} (compact revision {}) \
             and no hash has a majority ({:08x?}): CORRUPT raised for it at index {index}",
            check.revision,
            check.compact_revision,
            check.reports.iter().map(|r| r.1).collect::<Vec<_>>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_decides_and_a_split_waits_or_gives_up() {
        assert_eq!(verdict(&[(1, 7)], 3), Verdict::Pending);
        assert_eq!(verdict(&[(1, 7), (2, 7)], 3), Verdict::Majority(7));
        assert_eq!(verdict(&[(1, 7), (2, 8)], 3), Verdict::Pending);
        assert_eq!(verdict(&[(1, 7), (2, 8), (3, 9)], 3), Verdict::NoMajority);
        assert_eq!(verdict(&[(1, 7), (2, 8), (3, 8)], 3), Verdict::Majority(8));
        // Two voters: both must agree; one against one has no majority.
        assert_eq!(verdict(&[(1, 7), (2, 8)], 2), Verdict::NoMajority);
        assert_eq!(verdict(&[(1, 7)], 1), Verdict::Majority(7));
        assert_eq!(verdict(&[(1, 7), (2, 8)], 5), Verdict::Pending);
    }

    #[test]
    fn only_a_member_a_majority_outvoted_has_sound_members_to_repair_from() {
        let voters = [1, 2, 3];
        let decided = OpenCheck {
            index: 9,
            revision: 4,
            reports: vec![(1, 7), (2, 8), (3, 7)],
            majority_hash: Some(7),
            ..OpenCheck::default()
        };
        assert_eq!(decided.sound_members(2, &voters), [1, 3]);
        assert!(decided.sound_members(1, &voters).is_empty(), "a sound member");
        let pending = OpenCheck { majority_hash: None, ..decided.clone() };
        assert!(pending.sound_members(2, &voters).is_empty());
        let split = OpenCheck { majority_hash: None, no_majority: true, ..decided.clone() };
        assert!(split.sound_members(2, &voters).is_empty());
        // A member that left since it reported counts no more: one sound
        // voter of three is no quorum.
        assert!(decided.sound_members(2, &[1, 2, 4]).is_empty());
    }

    #[test]
    fn a_check_judges_a_member_once_decided_with_its_report_and_opened_after_start() {
        let check = OpenCheck {
            index: 20,
            reports: vec![(1, 7), (3, 7)],
            majority_hash: Some(7),
            ..OpenCheck::default()
        };
        assert!(check.has_judged(1, true, 19));
        assert!(!check.has_judged(1, true, 20), "opened before the member started");
        assert!(!check.has_judged(2, true, 19), "its report is still to come");
        assert!(check.has_judged(2, false, 19), "a learner reports nothing");
        let pending = OpenCheck { majority_hash: None, ..check.clone() };
        assert!(!pending.has_judged(1, true, 19));
        let split = OpenCheck { majority_hash: None, no_majority: true, ..check };
        assert!(split.has_judged(2, true, 19));
    }
}
