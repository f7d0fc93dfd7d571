//! The member table: changes, their safety rules, and how Raft's
//! configuration and the peer connections follow it.
//!
//! `Node::sections.members` is the table at the applied index, ascending by
//! id. It is filled at bootstrap from `--initial-cluster` and changed only
//! by applying a `MemberOp` carried in an ordinary command entry, so every
//! member holds the same table at the same index, and every snapshot
//! carries it.
//!
//! A change is checked when it is applied, against the table at that index
//! (`apply_change`, a pure function): two members never disagree on whether
//! it was accepted. Only the catch-up check of a promote needs the leader's
//! view of the logs; it is made before proposing, on the leader.
//!
//! Raft's voters and learners follow the table: the leader compares the two
//! every tick and proposes the one `ConfChange` that brings Raft closer
//! (Raft takes one pending change at a time). Keeping the table the source
//! of truth means a change can never be half applied: a leader that dies
//! between the table entry and the `ConfChange` leaves the next leader the
//! same difference to resolve.
//!
//! Numbers: at most `MAX_MEMBERS` members, one more than the transport's
//! peer slots; a member is "started" once it has published its client URLs.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::command::{Command, Op};
use super::config::{self, HostPort};
use super::image::MemberRecord;
use super::node::{Node, Waiter};
use crate::proto::{self, ErrorBody, ErrorCode, Request, Response};
use crate::raft::{ConfChange, ConfChangeKind, Role};
use crate::transport::{self, PeerAddr};

/// The most members a cluster may have: this member and a peer per slot.
pub const MAX_MEMBERS: usize = transport::PEER_SLOTS + 1;
/// A learner is promotable once its log holds this share (percent) of the
/// leader's, as etcd requires.
pub const PROMOTE_READY_PERCENT: u64 = 90;
/// How often a member whose published attributes disagree with its flags
/// proposes them again while the table has not caught up.
pub const PUBLISH_RETRY: Duration = Duration::from_secs(1);

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
}

/// `host:port` as the table writes peer and client URLs.
pub fn url_of(addr: &HostPort) -> String {
    format!("http://{addr}")
}

/// Peer URLs from a client: parsed, sorted and deduplicated, the form ids
/// are derived from; `MemberBadUrls` if any does not parse or cannot be
/// dialed.
pub fn parse_peer_urls(urls: &[String]) -> Result<Vec<HostPort>, ErrorCode> {
    let mut addrs = Vec::with_capacity(urls.len());
    for url in urls {
        let addr = config::parse_addr(url.trim()).map_err(|_| ErrorCode::MemberBadUrls)?;
        if addr.port == 0 || addr.is_unspecified() {
            return Err(ErrorCode::MemberBadUrls);
        }
        addrs.push(addr);
    }
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
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
            if members.len() >= MAX_MEMBERS {
                return Err(ErrorCode::TooManyMembers);
            }
            if !record.is_learner && !ready_to_add_voter(members) {
                return Err(ErrorCode::Unhealthy);
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
        MemberOp::Publish { id, name, client_urls } => {
            let at = position(*id).ok_or(ErrorCode::MemberNotFound)?;
            members[at].name = name.clone();
            members[at].client_urls = client_urls.clone();
            Ok(*id)
        }
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

impl Node {
    /// A member request from a client: checked, turned into a change and
    /// queued for this iteration's proposal batch.
    pub(super) fn member_request(&mut self, waiter: Waiter, request: Request) {
        match self.member_op(request) {
            Ok(op) => self.unproposed.push((waiter, Op::Member(op))),
            Err(code) => self.answer(waiter, Err(ErrorBody::new(code))),
        }
    }

    fn member_op(&self, request: Request) -> Result<MemberOp, ErrorCode> {
        match request {
            Request::MemberAdd(r) => {
                let addrs = parse_peer_urls(&r.peer_urls)?;
                let token = &self.config.initial_cluster_token;
                Ok(MemberOp::Add(MemberRecord {
                    id: config::member_id(&r.name, &addrs, token),
                    name: r.name,
                    peer_urls: addrs.iter().map(url_of).collect(),
                    client_urls: Vec::new(),
                    is_learner: r.is_learner,
                }))
            }
            Request::MemberRemove(r) => Ok(MemberOp::Remove(r.id)),
            Request::MemberUpdate(r) => {
                let addrs = parse_peer_urls(&r.peer_urls)?;
                Ok(MemberOp::Update { id: r.id, peer_urls: addrs.iter().map(url_of).collect() })
            }
            Request::MemberPromote(r) => {
                self.check_promotable(r.id)?;
                Ok(MemberOp::Promote(r.id))
            }
            _ => Err(ErrorCode::Unsupported),
        }
    }

    /// Only the leader knows how far a learner's log is: a follower
    /// refuses with `NotLeader` rather than guess.
    fn check_promotable(&self, id: u64) -> Result<(), ErrorCode> {
        let status = self.raft.status();
        if status.role != Role::Leader {
            return Err(ErrorCode::NotLeader);
        }
        let Some(record) = self.sections.members.iter().find(|m| m.id == id) else {
            return Err(ErrorCode::MemberNotFound);
        };
        if !record.is_learner {
            return Err(ErrorCode::MemberNotLearner);
        }
        let matched = status.progress.iter().find(|p| p.id == id).map_or(0, |p| p.match_index);
        if matched * 100 < status.last_index * PROMOTE_READY_PERCENT {
            return Err(ErrorCode::LearnerNotReady);
        }
        Ok(())
    }

    /// Applies a committed change to the table and brings the peer
    /// connections along; the answer for the member that proposed it.
    pub(super) fn apply_member(&mut self, op: MemberOp) -> Result<Response, ErrorBody> {
        let id = apply_change(&mut self.sections.members, &op).map_err(ErrorBody::new)?;
        log::info!("member table: applied {} of {id:016x}", op_name(&op));
        if let MemberOp::Update { .. } = op {
            // New addresses: the old connection goes, the next sync dials.
            self.transport.remove_peer(self.poll.registry(), id, Instant::now());
        }
        self.sync_peers();
        let header = self.header();
        let members: Vec<proto::Member> = self.sections.members.iter().map(member_of).collect();
        let changed = proto::MemberChangeResponse { header, members: members.clone() };
        Ok(match op {
            MemberOp::Add(record) => Response::MemberAdd(proto::MemberAddResponse {
                header,
                member: member_of(&record),
                members,
            }),
            MemberOp::Remove(_) => Response::MemberRemove(changed),
            MemberOp::Update { .. } => Response::MemberUpdate(changed),
            MemberOp::Promote(_) | MemberOp::Publish { .. } => Response::MemberPromote(changed),
        })
    }

    /// Peer connections to every other member of the table or of Raft's
    /// configuration, and to no one else. A removed member stays a peer
    /// until Raft drops it too: the leader's next append carries the commit
    /// that tells it it was removed. An empty table (a joining member
    /// before its first snapshot) keeps the peers of `--initial-cluster`.
    pub(super) fn sync_peers(&mut self) {
        if self.sections.members.is_empty() {
            return;
        }
        let own = self.config.member_id;
        let now = Instant::now();
        for id in self.transport.peer_ids() {
            if !self.is_member(id) || id == own {
                self.transport.remove_peer(self.poll.registry(), id, now);
            }
        }
        let known = self.transport.peer_ids();
        let missing: Vec<MemberRecord> = self
            .sections
            .members
            .iter()
            .filter(|m| m.id != own && !known.contains(&m.id))
            .cloned()
            .collect();
        for member in missing {
            let addrs = resolve_urls(&member.peer_urls);
            if let Err(e) = self.transport.add_peer(PeerAddr { id: member.id, addrs }, now) {
                log::warn!(
                    "cannot reach member {:016x} at {:?}: {e:?}",
                    member.id,
                    member.peer_urls
                );
            }
        }
    }

    /// Whether a message from `from` may be stepped: once the table is
    /// known, only its members (and those Raft has not yet dropped) speak.
    pub(super) fn is_member(&self, from: u64) -> bool {
        let conf = self.raft.conf_state();
        self.sections.members.is_empty()
            || self.sections.members.iter().any(|m| m.id == from)
            || conf.voters.contains(&from)
            || conf.learners.contains(&from)
    }

    /// Leader only: proposes the Raft change the table calls for.
    pub(super) fn reconcile_conf(&mut self) {
        if self.leader_id != self.config.member_id || self.sections.members.is_empty() {
            return;
        }
        let conf = self.raft.conf_state();
        let Some(change) = next_conf_change(&self.sections.members, &conf.voters, &conf.learners)
        else {
            return;
        };
        match self.raft.propose_conf_change(change) {
            Ok(()) => log::info!("proposed {:?} of {:016x}", change.kind, change.node_id),
            Err(e) => log::debug!("membership change {change:?} not proposed yet: {e:?}"),
        }
    }

    /// Proposes this member's name and client URLs when the table has
    /// others; retried every `PUBLISH_RETRY` until the table agrees.
    pub(super) fn maybe_publish(&mut self, now: Instant) {
        if self.leader_id == 0 || now < self.next_publish {
            return;
        }
        let id = self.config.member_id;
        let Some(own) = self.sections.members.iter().find(|m| m.id == id) else { return };
        let name = self.config.name.clone();
        let client_urls: Vec<String> =
            self.config.advertise_client_addrs.iter().map(url_of).collect();
        if own.name == name && own.client_urls == client_urls {
            return;
        }
        self.next_publish = now + PUBLISH_RETRY;
        let seq = self.next_seq;
        self.next_seq += 1;
        let op = Op::Member(MemberOp::Publish { id, name, client_urls });
        if let Err(e) = self.raft.propose(Command { origin: id, seq, op }.encode()) {
            log::debug!("publishing this member's attributes: {e:?}");
        }
    }

    /// True once this member has applied its own removal and may stop. A
    /// joining member's first snapshot may predate its addition, so only a
    /// member that has seen itself in the table can find itself removed. A
    /// leader waits until Raft has applied the removal too, so the others
    /// are not left to time it out.
    pub(super) fn removed_from_cluster(&mut self) -> bool {
        let id = self.config.member_id;
        if self.sections.members.iter().any(|m| m.id == id) {
            self.seen_in_table = true;
            return false;
        }
        if !self.seen_in_table {
            return false;
        }
        let conf = self.raft.conf_state();
        let in_raft = conf.voters.contains(&id) || conf.learners.contains(&id);
        !(in_raft && self.leader_id == id)
    }
}

fn op_name(op: &MemberOp) -> &'static str {
    match op {
        MemberOp::Add(_) => "the addition",
        MemberOp::Remove(_) => "the removal",
        MemberOp::Update { .. } => "the peer URL update",
        MemberOp::Promote(_) => "the promotion",
        MemberOp::Publish { .. } => "the published attributes",
    }
}

/// The socket addresses of peer URLs; a URL that does not resolve now is
/// skipped (logged), the others are dialed.
fn resolve_urls(urls: &[String]) -> Vec<std::net::SocketAddr> {
    let mut addrs = Vec::new();
    for url in urls {
        match config::parse_addr(url).map(|a| a.resolve()) {
            Ok(Ok(found)) => addrs.extend(found),
            _ => log::warn!("peer URL {url} does not resolve"),
        }
    }
    addrs
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
        assert_eq!(apply_change(&mut table, &op), Err(ErrorCode::Unhealthy));
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
        assert_eq!(apply_change(&mut table, &op), Err(ErrorCode::Unhealthy));
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
    fn peer_urls_are_parsed_sorted_and_checked() {
        let urls = vec!["http://b:2".to_string(), "a:1".into(), "http://a:1/".into()];
        let addrs = parse_peer_urls(&urls).unwrap();
        assert_eq!(addrs.iter().map(url_of).collect::<Vec<_>>(), ["http://a:1", "http://b:2"]);
        for bad in ["nope", "http://0.0.0.0:1", "h:0", "https://h:1"] {
            assert_eq!(parse_peer_urls(&[bad.to_string()]), Err(ErrorCode::MemberBadUrls), "{bad}");
        }
    }
}
