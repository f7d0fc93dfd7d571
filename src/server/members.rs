//! Member requests in the loop: a client's add, remove, update or promote
//! checked and queued for proposal; the leader keeping Raft's
//! configuration in step with the table; this member publishing its name
//! and client URLs; and noticing that it was removed.
//!
//! The table and the rules of each change are replicated state
//! (`state::members`). Only the catch-up check of a promote needs the
//! leader's view of the logs; it is made here, before proposing, on the
//! leader.

use std::time::{Duration, Instant};

use super::conf_plan::plan_conf_change;
use super::config::{self, HostPort};
use super::node::Node;
use super::proposals::Waiter;
use crate::proto::{self, ErrorBody, ErrorCode, Request};
use crate::raft::{PeerStatus, Role};
use crate::state::members::member_of;
use crate::state::{MemberOp, Op};
use crate::transport;

// Every other member needs a peer slot of the transport.
const _: () = assert!(crate::state::members::MEMBERS_MAX <= transport::PEER_SLOTS + 1);
/// A learner is promotable once its log holds this share (percent) of the
/// leader's, as etcd requires.
pub const PROMOTE_READY_PERCENT: u64 = 90;
/// Election timeouts a removed follower keeps voting while Raft still
/// counts it: enough for the leader to commit the removal and tell it.
pub const REMOVED_VOTER_GRACE_ELECTIONS: u64 = 3;
/// How often a member whose published attributes disagree with its flags
/// proposes them again while the table has not caught up.
pub const PUBLISH_RETRY: Duration = Duration::from_secs(1);

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

impl Node {
    /// A member request from a client: checked, turned into a change and
    /// queued for this iteration's proposal batch.
    pub(super) fn member_request(&mut self, waiter: Waiter, request: Request) {
        match self.member_op(request) {
            Ok(op) => {
                let caller = self.caller_of(waiter);
                self.proposals.queue_write(waiter, Op::Member(op), caller)
            }
            Err(code) => self.clients.answer(waiter, Err(ErrorBody::new(code))),
        }
    }

    fn member_op(&self, request: Request) -> Result<MemberOp, ErrorCode> {
        match request {
            Request::MemberAdd(r) => {
                let addrs = parse_peer_urls(&r.peer_urls)?;
                let peer_urls = addrs.iter().map(|a| self.config.peer_url(a)).collect();
                if r.is_learner {
                    // The limit goes into the entry: see `MemberOp::JoinLearner`.
                    let learners_max = self.config.max_learners;
                    return Ok(MemberOp::JoinLearner { name: r.name, peer_urls, learners_max });
                }
                Ok(MemberOp::Join { name: r.name, peer_urls, is_learner: false })
            }
            Request::MemberRemove(r) => Ok(MemberOp::Remove(r.id)),
            Request::MemberUpdate(r) => {
                let addrs = parse_peer_urls(&r.peer_urls)?;
                let peer_urls = addrs.iter().map(|a| self.config.peer_url(a)).collect();
                Ok(MemberOp::Update { id: r.id, peer_urls })
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
        let Some(record) = self.state.members().iter().find(|m| m.id == id) else {
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

    /// The member table; before it is known (a joining member), the
    /// initial members, with client URLs only for this member.
    pub(super) fn member_list(&self) -> Vec<proto::Member> {
        if !self.state.members().is_empty() {
            return self.state.members().iter().map(member_of).collect();
        }
        let own = self.config.member_id;
        let own_client_urls: Vec<String> =
            self.config.advertise_client_addrs.iter().map(|a| self.config.client_url(a)).collect();
        let initial = self.config.initial_cluster.iter().map(|m| proto::Member {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_addrs.iter().map(|a| self.config.peer_url(a)).collect(),
            client_urls: if m.id == own { own_client_urls.clone() } else { Vec::new() },
            is_learner: false,
        });
        initial.collect()
    }

    /// Leader only: proposes the Raft change the table calls for, by a path
    /// that keeps a quorum of reachable voters (`conf_plan`).
    pub(super) fn reconcile_conf(&mut self) {
        let members = self.state.members();
        if self.leader_id != self.config.member_id || members.is_empty() {
            return;
        }
        let ready = self.members_ready();
        let Some(cc) = plan_conf_change(members, self.raft.conf_state(), &ready) else {
            return;
        };
        let text = format!("{:?} {:?}", cc.transition, cc.changes);
        match self.raft.propose_conf_change_v2(cc) {
            Ok(()) => log::info!("proposed membership change {text}"),
            Err(e) => log::debug!("membership change {text} not proposed yet: {e:?}"),
        }
    }

    /// This leader and the members it heard from within an election
    /// timeout whose logs hold `PROMOTE_READY_PERCENT` of its own.
    fn members_ready(&self) -> Vec<u64> {
        let status = self.raft.status();
        let heard_within_ticks = self.config.election_ticks();
        let caught_up = |p: &PeerStatus| {
            p.heard_ago_ticks < heard_within_ticks
                && p.match_index * 100 >= status.last_index * PROMOTE_READY_PERCENT
        };
        let peers = status.progress.iter().filter(|p| p.id != status.id && caught_up(p));
        std::iter::once(status.id).chain(peers.map(|p| p.id)).collect()
    }

    /// Proposes this member's name, client URLs and version when the table
    /// has others; retried every `PUBLISH_RETRY` until the table agrees.
    pub(super) fn maybe_publish(&mut self, now: Instant) {
        if self.leader_id == 0 || now < self.next_publish {
            return;
        }
        let id = self.config.member_id;
        let Some(own) = self.state.members().iter().find(|m| m.id == id) else { return };
        let name = self.config.name.clone();
        let client_urls: Vec<String> =
            self.config.advertise_client_addrs.iter().map(|a| self.config.client_url(a)).collect();
        let version = self.version;
        let published = self.state.member_versions().contains(&(id, version));
        if own.name == name && own.client_urls == client_urls && published {
            return;
        }
        self.next_publish = now + PUBLISH_RETRY;
        let op = Op::Member(MemberOp::PublishVersion { id, name, client_urls, version });
        if let Err(e) = self.proposals.propose_unwaited(&mut self.raft, vec![op]) {
            log::debug!("publishing this member's attributes: {e:?}");
        }
    }

    /// True once this member has applied its own removal and may stop. A
    /// joining member's first snapshot may predate its addition, so only a
    /// member that has seen itself in the table can find itself removed. A
    /// leader waits until Raft has applied the removal too, so the others
    /// are not left to time it out. A follower waits for it as well, up to
    /// `REMOVED_VOTER_GRACE_ELECTIONS` election timeouts: until Raft drops
    /// it, its vote may be the one that commits its removal (with another
    /// member down, it is), but a leader stops talking to a member it has
    /// dropped, so the commit may never reach it.
    pub(super) fn removed_from_cluster(&mut self, now: Instant) -> bool {
        let id = self.config.member_id;
        if self.state.members().iter().any(|m| m.id == id) {
            self.seen_in_table = true;
            return false;
        }
        if !self.seen_in_table {
            return false;
        }
        if !self.raft.conf_state().is_member(id) {
            return true;
        }
        if self.leader_id == id {
            return false;
        }
        let grace =
            Duration::from_millis(self.config.election_timeout_ms * REMOVED_VOTER_GRACE_ELECTIONS);
        let since = *self.removed_from_table_at.get_or_insert(now);
        now >= since + grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_parsed_sorted_and_checked() {
        let urls = vec!["http://b:2".to_string(), "a:1".into(), "http://a:1/".into()];
        let addrs = parse_peer_urls(&urls).unwrap();
        assert_eq!(
            addrs.iter().map(config::url_of).collect::<Vec<_>>(),
            ["http://a:1", "http://b:2"]
        );
        for bad in ["nope", "http://0.0.0.0:1", "h:0", "unix:///h"] {
            assert_eq!(parse_peer_urls(&[bad.to_string()]), Err(ErrorCode::MemberBadUrls), "{bad}");
        }
    }
}
