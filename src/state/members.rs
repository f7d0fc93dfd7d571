//! The member table's rules: the changes a `MemberOp` makes, when they are
//! refused, and the one Raft configuration change that brings Raft's
//! voters and learners closer to the table.
//!
//! The table is ascending by id. It is filled at bootstrap from
//! `--initial-cluster` and changed only by applying a `MemberOp` carried in
//! an ordinary command entry, so every member holds the same table at the
//! same index, and every snapshot carries it. A change is checked when it is
//! applied, against the table at that index (`apply_change` looks at
//! nothing else): two members never disagree on whether it was accepted.
//!
//! Raft's voters and learners follow the table: the leader compares the two
//! every tick and proposes the one `ConfChange` that brings Raft closer
//! (Raft takes one pending change at a time). Keeping the table the source
//! of truth means a change can never be half applied: a leader that dies
//! between the table entry and the `ConfChange` leaves the next leader the
//! same difference to resolve. A member is "started" once it has published
//! its client URLs.

use serde::{Deserialize, Serialize};

use super::image::MemberRecord;
use super::version::Version;
use crate::proto::{self, ErrorCode};
use crate::raft::{ConfChange, ConfChangeKind};

/// The most members a cluster may have: nine, one more than the
/// transport's peer slots (a member needs no slot for itself). Raft
/// clusters beyond seven voters only get slower; the two above leave room
/// for learners while a member is replaced.
pub const MEMBERS_MAX: usize = 9;

/// Removed member ids the table remembers, so that every member, even one
/// that joined after a removal, can tell a removed member that comes back
/// that it was removed. The oldest is forgotten first: a member removed
/// more than this many removals ago is refused as a stranger, without the
/// reason. Sixty-four removals are years of replacing boards in a
/// cluster of nine, and cost half a kilobyte in every snapshot.
pub const REMOVED_MEMBERS_MAX: usize = 64;

/// A change of the member table, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    Add(MemberRecord),
    Remove(u64),
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
    Promote(u64),
    /// A member's own name and client URLs.
    Publish {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    /// A member added at runtime, whose id the cluster chooses when the
    /// entry is applied (`fresh_id`). `Add` carries an id chosen by the
    /// proposer; it stays for the entries written before.
    Join {
        name: String,
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    /// A member's own name, client URLs and version: what `Publish` says,
    /// and the version the cluster version is decided from
    /// (`state::version`). `Publish` stays for the entries written before.
    PublishVersion {
        id: u64,
        name: String,
        client_urls: Vec<String>,
        version: Version,
    },
    /// A learner added at runtime, as `Join`, carrying the most learners
    /// the proposer's `--max-learners` allows. The limit travels in the
    /// entry so the refusal is decided at apply, against the table at that
    /// index, and alike on every member whatever its own flag says: a
    /// check made before proposing would let two adds at two members both
    /// pass, and a limit read from each member's flags at apply could
    /// accept the entry on one member and refuse it on another.
    JoinLearner {
        name: String,
        peer_urls: Vec<String>,
        learners_max: u32,
    },
}

/// The id of a member added by the entry at `index`: FNV-1a 64 of the
/// cluster id, the entry's index and the peer URLs. Every member computes
/// the same from the same entry, and the index makes it new each time, so
/// a name and URL added again after a removal get an id no removed member
/// had. Never 0 (0 names no member in a peer hello).
pub fn fresh_id(cluster_id: u64, index: u64, peer_urls: &[String]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(PRIME);
        }
    };
    feed(b"ember member\0");
    feed(&cluster_id.to_le_bytes());
    feed(&index.to_le_bytes());
    for url in peer_urls {
        feed(url.as_bytes());
        feed(&[0]);
    }
    hash.max(1)
}

/// A `Join` as the `Add` it becomes at `index`; any other change as it is.
/// A chosen id that a removed member had is refused (`MemberExists`): its
/// old log must never be mistaken for the new member's.
pub fn resolve_join(
    op: MemberOp,
    cluster_id: u64,
    index: u64,
    removed: &[u64],
) -> Result<MemberOp, ErrorCode> {
    let MemberOp::Join { name, peer_urls, is_learner } = op else { return Ok(op) };
    let id = fresh_id(cluster_id, index, &peer_urls);
    if removed.contains(&id) {
        return Err(ErrorCode::MemberExists);
    }
    let client_urls = Vec::new();
    Ok(MemberOp::Add(MemberRecord { id, name, peer_urls, client_urls, is_learner }))
}

fn voters(members: &[MemberRecord]) -> impl Iterator<Item = &MemberRecord> {
    members.iter().filter(|m| !m.is_learner)
}

fn is_started(member: &MemberRecord) -> bool {
    !member.client_urls.is_empty()
}

fn quorum(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// etcd's rule: after adding a voter, the started voters must still make a
/// quorum; adding a second member to a single one is allowed (it is how a
/// cluster grows from one board).
fn ready_to_add_voter(members: &[MemberRecord]) -> bool {
    let count = voters(members).count() + 1;
    let started = voters(members).filter(|m| is_started(m)).count();
    (started == 1 && count == 2) || started >= quorum(count)
}

/// After removing voter `id`, the started voters left must make a quorum
/// of the voters left (and some voter must be left).
fn ready_to_remove_voter(members: &[MemberRecord], id: u64) -> bool {
    let rest: Vec<&MemberRecord> = voters(members).filter(|m| m.id != id).collect();
    let started = rest.iter().filter(|m| is_started(m)).count();
    !rest.is_empty() && started >= quorum(rest.len())
}

fn shares_url(members: &[MemberRecord], except: u64, urls: &[String]) -> bool {
    members.iter().any(|m| m.id != except && m.peer_urls.iter().any(|u| urls.contains(u)))
}

/// Applies `op` to the table; the id it concerns, or why it is refused.
/// Deterministic: it looks at nothing but the table and the change.
pub fn apply_change(members: &mut Vec<MemberRecord>, op: &MemberOp) -> Result<u64, ErrorCode> {
    let position = |id: u64| members.iter().position(|m| m.id == id);
    match op {
        MemberOp::Add(record) => {
            if position(record.id).is_some() {
                return Err(ErrorCode::MemberExists);
            }
            if shares_url(members, record.id, &record.peer_urls) {
                return Err(ErrorCode::PeerUrlExists);
            }
            if members.len() >= MEMBERS_MAX {
                return Err(ErrorCode::TooManyMembers);
            }
            if !record.is_learner && !ready_to_add_voter(members) {
                return Err(ErrorCode::NotEnoughStartedMembers);
            }
            let at = members.partition_point(|m| m.id < record.id);
            members.insert(at, record.clone());
            Ok(record.id)
        }
        MemberOp::Remove(id) => {
            let at = position(*id).ok_or(ErrorCode::MemberNotFound)?;
            if !members[at].is_learner && !ready_to_remove_voter(members, *id) {
                return Err(ErrorCode::NotEnoughStartedMembers);
            }
            members.remove(at);
            Ok(*id)
        }
        MemberOp::Update { id, peer_urls } => {
            let at = position(*id).ok_or(ErrorCode::MemberNotFound)?;
            if shares_url(members, *id, peer_urls) {
                return Err(ErrorCode::PeerUrlExists);
            }
            members[at].peer_urls = peer_urls.clone();
            Ok(*id)
        }
        MemberOp::Promote(id) => {
            let at = position(*id).ok_or(ErrorCode::MemberNotFound)?;
            if !members[at].is_learner {
                return Err(ErrorCode::MemberNotLearner);
            }
            members[at].is_learner = false;
            Ok(*id)
        }
        MemberOp::Publish { id, name, client_urls }
        | MemberOp::PublishVersion { id, name, client_urls, .. } => {
            let at = position(*id).ok_or(ErrorCode::MemberNotFound)?;
            members[at].name = name.clone();
            members[at].client_urls = client_urls.clone();
            Ok(*id)
        }
        // `resolve_join` turns a join into an addition first; one that
        // reaches here was not, and changes nothing.
        MemberOp::Join { .. } | MemberOp::JoinLearner { .. } => Err(ErrorCode::Internal),
    }
}

/// Records a removal in `removed` (oldest first, bounded by
/// `REMOVED_MEMBERS_MAX`) or, for an addition, forgets the id: a member
/// added again under a removed id is a member again.
pub fn remember_removal(removed: &mut Vec<u64>, op: &MemberOp) {
    match op {
        MemberOp::Remove(id) => {
            removed.retain(|r| r != id);
            if removed.len() == REMOVED_MEMBERS_MAX {
                removed.remove(0);
            }
            removed.push(*id);
        }
        MemberOp::Add(record) => removed.retain(|r| *r != record.id),
        _ => {}
    }
}

/// The one Raft change that brings `voters`/`learners` closer to the
/// table, or `None` when they agree. Additions come before removals, so a
/// replacement never passes through a smaller cluster than needed.
pub fn next_conf_change(
    members: &[MemberRecord],
    voters: &[u64],
    learners: &[u64],
) -> Option<ConfChange> {
    for m in members {
        let kind = if m.is_learner { ConfChangeKind::AddLearner } else { ConfChangeKind::AddVoter };
        let in_place = if m.is_learner { learners.contains(&m.id) } else { voters.contains(&m.id) };
        if !in_place {
            return Some(ConfChange { kind, node_id: m.id });
        }
    }
    let stray = voters.iter().chain(learners).find(|id| !members.iter().any(|m| m.id == **id));
    stray.map(|&node_id| ConfChange { kind: ConfChangeKind::RemoveNode, node_id })
}

pub fn member_of(record: &MemberRecord) -> proto::Member {
    proto::Member {
        id: record.id,
        name: record.name.clone(),
        peer_urls: record.peer_urls.clone(),
        client_urls: record.client_urls.clone(),
        is_learner: record.is_learner,
    }
}

/// What a change is called in the log.
pub fn op_name(op: &MemberOp) -> &'static str {
    match op {
        MemberOp::Add(_) => "the addition",
        MemberOp::Remove(_) => "the removal",
        MemberOp::Update { .. } => "the peer URL update",
        MemberOp::Promote(_) => "the promotion",
        MemberOp::Publish { .. } | MemberOp::PublishVersion { .. } => "the published attributes",
        MemberOp::Join { .. } | MemberOp::JoinLearner { .. } => "the addition",
    }
}

/// A `JoinLearner` as the learner's `Join`, or `TooManyLearners` when the
/// table already holds the most learners its entry allows (etcd's
/// `ErrTooManyLearners`); any other change as it is. Deterministic: the
/// limit is the entry's, the count the table's at this index.
pub fn admit_learner(members: &[MemberRecord], op: MemberOp) -> Result<MemberOp, ErrorCode> {
    let MemberOp::JoinLearner { name, peer_urls, learners_max } = op else { return Ok(op) };
    let learners = members.iter().filter(|m| m.is_learner).count();
    if learners >= learners_max as usize {
        return Err(ErrorCode::TooManyLearners);
    }
    Ok(MemberOp::Join { name, peer_urls, is_learner: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, started: bool, is_learner: bool) -> MemberRecord {
        MemberRecord {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:7380")],
            client_urls: if started { vec![format!("http://10.0.0.{id}:7379")] } else { vec![] },
            is_learner,
        }
    }

    fn three() -> Vec<MemberRecord> {
        (1..=3).map(|id| record(id, true, false)).collect()
    }

    #[test]
    fn adds_keep_the_table_sorted_and_refuse_duplicates() {
        let mut table = three();
        assert_eq!(apply_change(&mut table, &MemberOp::Add(record(0, false, false))), Ok(0));
        assert_eq!(table.iter().map(|m| m.id).collect::<Vec<_>>(), [0, 1, 2, 3]);
        let same_id = MemberOp::Add(record(2, false, false));
        assert_eq!(apply_change(&mut table, &same_id), Err(ErrorCode::MemberExists));
        let mut same_url = record(9, false, false);
        same_url.peer_urls = table[1].peer_urls.clone();
        let op = MemberOp::Add(same_url);
        assert_eq!(apply_change(&mut table, &op), Err(ErrorCode::PeerUrlExists));
    }

    #[test]
    fn unstarted_voters_stop_adds_and_removes_that_would_lose_quorum() {
        let mut table = three();
        for id in [4, 5] {
            assert_eq!(apply_change(&mut table, &MemberOp::Add(record(id, false, false))), Ok(id));
        }
        // Six voters need four started; three are.
        let op = MemberOp::Add(record(6, false, false));
        assert_eq!(apply_change(&mut table, &op), Err(ErrorCode::NotEnoughStartedMembers));
        // A learner does not count.
        assert_eq!(apply_change(&mut table, &MemberOp::Add(record(6, false, true))), Ok(6));
        let op = MemberOp::Remove(1);
        assert_eq!(apply_change(&mut table, &op), Err(ErrorCode::NotEnoughStartedMembers));
        assert_eq!(apply_change(&mut table, &MemberOp::Remove(5)), Ok(5));
        assert_eq!(apply_change(&mut table, &MemberOp::Remove(1)), Ok(1));
        assert_eq!(apply_change(&mut table, &MemberOp::Remove(1)), Err(ErrorCode::MemberNotFound));
    }

    #[test]
    fn a_single_member_may_add_a_second_voter_but_not_remove_itself() {
        let mut table = vec![record(1, true, false)];
        let op = MemberOp::Remove(1);
        assert_eq!(apply_change(&mut table, &op), Err(ErrorCode::NotEnoughStartedMembers));
        assert_eq!(apply_change(&mut table, &MemberOp::Add(record(2, false, false))), Ok(2));
        let op = MemberOp::Add(record(3, false, false));
        assert_eq!(apply_change(&mut table, &op), Err(ErrorCode::NotEnoughStartedMembers));
    }

    #[test]
    fn promote_and_publish_change_one_record() {
        let mut table = three();
        table.push(record(4, false, true));
        let op = MemberOp::Promote(1);
        assert_eq!(apply_change(&mut table, &op), Err(ErrorCode::MemberNotLearner));
        assert_eq!(apply_change(&mut table, &MemberOp::Promote(4)), Ok(4));
        assert!(!table[3].is_learner);
        let publish =
            MemberOp::Publish { id: 4, name: "d".into(), client_urls: vec!["http://d:1".into()] };
        assert_eq!(apply_change(&mut table, &publish), Ok(4));
        assert_eq!((table[3].name.as_str(), table[3].client_urls.len()), ("d", 1));
    }

    #[test]
    fn removed_ids_are_remembered_up_to_the_bound_and_forgotten_when_added_again() {
        let mut removed = Vec::new();
        for id in 0..REMOVED_MEMBERS_MAX as u64 + 2 {
            remember_removal(&mut removed, &MemberOp::Remove(id));
        }
        assert_eq!(removed.len(), REMOVED_MEMBERS_MAX);
        assert_eq!((removed[0], *removed.last().unwrap()), (2, REMOVED_MEMBERS_MAX as u64 + 1));
        remember_removal(&mut removed, &MemberOp::Remove(5));
        assert_eq!((removed.len(), *removed.last().unwrap()), (REMOVED_MEMBERS_MAX, 5));
        remember_removal(&mut removed, &MemberOp::Add(record(5, false, false)));
        assert!(!removed.contains(&5));
        remember_removal(&mut removed, &MemberOp::Promote(7));
        assert_eq!(removed.len(), REMOVED_MEMBERS_MAX - 1);
    }

    #[test]
    fn a_join_gets_a_new_id_at_every_index_and_never_a_removed_one() {
        let join = |name: &str| MemberOp::Join {
            name: name.into(),
            peer_urls: vec!["http://10.0.0.4:7380".into()],
            is_learner: false,
        };
        let first = resolve_join(join("d"), 7, 40, &[]).unwrap();
        let MemberOp::Add(record) = &first else { panic!("{first:?}") };
        assert_eq!(record.id, fresh_id(7, 40, &record.peer_urls));
        assert_eq!((record.name.as_str(), record.client_urls.len()), ("d", 0));
        let again = resolve_join(join("d"), 7, 41, &[]).unwrap();
        assert_ne!(again, first);
        let removed = [record.id];
        assert_eq!(resolve_join(join("d"), 7, 40, &removed), Err(ErrorCode::MemberExists));
        assert_ne!(fresh_id(8, 40, &record.peer_urls), record.id);
        let publish = MemberOp::Promote(3);
        assert_eq!(resolve_join(publish.clone(), 7, 40, &removed), Ok(publish));
    }

    #[test]
    fn raft_follows_the_table_one_change_at_a_time() {
        let mut table = three();
        table.push(record(4, false, true));
        let add = next_conf_change(&table, &[1, 2, 3], &[]);
        assert_eq!(add, Some(ConfChange { kind: ConfChangeKind::AddLearner, node_id: 4 }));
        let promote = next_conf_change(&table[..3], &[1, 2], &[3]);
        assert_eq!(promote, Some(ConfChange { kind: ConfChangeKind::AddVoter, node_id: 3 }));
        let remove = next_conf_change(&table[..2], &[1, 2, 3], &[]);
        assert_eq!(remove, Some(ConfChange { kind: ConfChangeKind::RemoveNode, node_id: 3 }));
        assert_eq!(next_conf_change(&table, &[1, 2, 3], &[4]), None);
    }

    #[test]
    fn a_learner_is_admitted_only_below_the_limit_its_entry_carries() {
        let join = |learners_max| MemberOp::JoinLearner {
            name: String::new(),
            peer_urls: vec!["http://10.0.0.5:7380".into()],
            learners_max,
        };
        let mut table = three();
        let admitted = admit_learner(&table, join(1)).unwrap();
        let want = MemberOp::Join {
            name: String::new(),
            peer_urls: vec!["http://10.0.0.5:7380".into()],
            is_learner: true,
        };
        assert_eq!(admitted, want);
        table.push(record(4, false, true));
        assert_eq!(admit_learner(&table, join(1)), Err(ErrorCode::TooManyLearners));
        assert!(admit_learner(&table, join(2)).is_ok());
        assert_eq!(admit_learner(&table, join(0)), Err(ErrorCode::TooManyLearners));
        // Voters and other changes pass untouched; a promoted learner
        // frees its place.
        let voter = MemberOp::Join { name: "v".into(), peer_urls: vec![], is_learner: false };
        assert_eq!(admit_learner(&table, voter.clone()), Ok(voter));
        assert_eq!(apply_change(&mut table, &MemberOp::Promote(4)), Ok(4));
        assert!(admit_learner(&table, join(1)).is_ok());
        assert_eq!(apply_change(&mut table, &join(1)), Err(ErrorCode::Internal));
    }
}
