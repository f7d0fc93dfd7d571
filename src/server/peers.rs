//! Peers: the transport to the other members, kept in step with the
//! replicated member table and Raft's configuration.
//!
//! The table is the source of truth (`state::members`): after every
//! membership effect of the state machine, `follow` connects to members
//! that are new and drops those that left. A removed member stays a peer
//! until Raft drops it too: the leader's next append carries the commit
//! that tells it it was removed. An empty table (a joining member before its
//! first snapshot) keeps the peers of `--initial-cluster`.
//!
//! Name resolution never runs on the loop: a peer URL that is an IP literal
//! is parsed at once; a DNS name goes to a resolver thread (started on the
//! first name, at most one, fed through a bounded queue) and the peer is
//! added when its addresses come back, at the latest one tick later. Only
//! start-up (`--initial-cluster`) resolves names in the loop's thread, before
//! the loop runs.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::Instant;

use mio::{Registry, Token};

use super::config;
use crate::raft::{ConfState, Message};
use crate::state::MemberRecord;
use crate::transport::{self, PeerAddr, Transport};

/// Lookups queued for the resolver thread: one per member at most.
const RESOLVE_QUEUE_LOOKUPS: usize = transport::PEER_SLOTS;

pub struct Peers {
    transport: Transport<Message>,
    own_id: u64,
    resolver: Option<Resolver>,
    /// Members whose addresses are being looked up.
    resolving: Vec<u64>,
}

/// The thread that looks names up, and the queues to and from it.
struct Resolver {
    requests: SyncSender<(u64, Vec<String>)>,
    answers: Receiver<(u64, String, Vec<SocketAddr>)>,
}

impl Peers {
    pub fn new(transport: Transport<Message>, own_id: u64) -> Peers {
        Peers { transport, own_id, resolver: None, resolving: Vec::new() }
    }

    pub fn transport(&self) -> &Transport<Message> {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut Transport<Message> {
        &mut self.transport
    }

    pub fn owns(&self, token: Token) -> bool {
        self.transport.owns(token)
    }

    /// Connections to every other member of the table or of Raft's
    /// configuration, and to no one else. `moved` names a member whose
    /// peer URLs changed: its connection goes, and it is dialed again.
    pub fn follow(
        &mut self,
        members: &[MemberRecord],
        conf: &ConfState,
        moved: Option<u64>,
        registry: &Registry,
        now: Instant,
    ) {
        if let Some(id) = moved {
            self.transport.remove_peer(registry, id, now);
        }
        if members.is_empty() {
            return;
        }
        for id in self.transport.peer_ids() {
            if !is_member(members, conf, id) || id == self.own_id {
                self.transport.remove_peer(registry, id, now);
            }
        }
        let known = self.transport.peer_ids();
        for member in members {
            let id = member.id;
            if id == self.own_id || known.contains(&id) || self.resolving.contains(&id) {
                continue;
            }
            match literal_addrs(&member.peer_urls) {
                Some(addrs) => self.add(id, peer_host(&member.peer_urls), addrs, now),
                None => self.resolve(id, member.peer_urls.clone()),
            }
        }
    }

    /// Adds the peers whose names the resolver has looked up.
    pub fn poll_resolved(&mut self, now: Instant) {
        loop {
            let Some(resolver) = &self.resolver else { return };
            match resolver.answers.try_recv() {
                Ok((id, name, addrs)) => {
                    self.resolving.retain(|r| *r != id);
                    self.add(id, name, addrs, now);
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    log::warn!("the peer name resolver stopped; it starts again when needed");
                    self.resolver = None;
                    self.resolving.clear();
                    return;
                }
            }
        }
    }

    fn add(&mut self, id: u64, name: String, addrs: Vec<SocketAddr>, now: Instant) {
        if addrs.is_empty() {
            log::warn!("member {id:016x} has no peer address that resolves");
            return;
        }
        if let Err(e) = self.transport.add_peer(PeerAddr { id, name, addrs: addrs.clone() }, now) {
            log::warn!("cannot reach member {id:016x} at {addrs:?}: {e:?}");
        }
    }

    fn resolve(&mut self, id: u64, urls: Vec<String>) {
        let resolver = self.resolver.get_or_insert_with(Resolver::start);
        match resolver.requests.try_send((id, urls)) {
            Ok(()) => self.resolving.push(id),
            // Asked again at the next membership change or tick.
            Err(TrySendError::Full(_)) => log::debug!("resolver busy; {id:016x} waits"),
            Err(TrySendError::Disconnected(_)) => self.resolver = None,
        }
    }
}

impl Resolver {
    fn start() -> Resolver {
        let (requests, inbox) = mpsc::sync_channel::<(u64, Vec<String>)>(RESOLVE_QUEUE_LOOKUPS);
        let (outbox, answers) = mpsc::sync_channel(RESOLVE_QUEUE_LOOKUPS);
        let spawned = std::thread::Builder::new().name("ember-resolve".into()).spawn(move || {
            for (id, urls) in inbox {
                if outbox.send((id, peer_host(&urls), resolve_urls(&urls))).is_err() {
                    return;
                }
            }
        });
        if let Err(e) = spawned {
            // The queues' other ends are gone with the closure: the next
            // `poll_resolved` sees the disconnection and logs it.
            log::warn!("starting the peer name resolver: {e}");
        }
        Resolver { requests, answers }
    }
}

/// Whether a message from `from` may be stepped: once the table is
/// known, only its members (and those Raft has not yet dropped) speak.
pub fn is_member(members: &[MemberRecord], conf: &ConfState, from: u64) -> bool {
    members.is_empty() || members.iter().any(|m| m.id == from) || conf.is_member(from)
}

/// The host of a member's first peer URL: the name its certificate must be
/// valid for under peer TLS.
fn peer_host(urls: &[String]) -> String {
    urls.first().and_then(|url| config::parse_addr(url).ok()).map(|a| a.host).unwrap_or_default()
}

/// The addresses of peer URLs that are all IP literals; `None` if any
/// names a host, which only the resolver may look up.
fn literal_addrs(urls: &[String]) -> Option<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(urls.len());
    for url in urls {
        let Ok(addr) = config::parse_addr(url) else {
            log::warn!("peer URL {url} does not parse");
            continue;
        };
        let host = addr.host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = host.parse().ok()?;
        addrs.push(SocketAddr::new(ip, addr.port));
    }
    Some(addrs)
}

/// The socket addresses of peer URLs; a URL that does not resolve is
/// skipped (logged), the others are dialed. Runs on the resolver thread.
fn resolve_urls(urls: &[String]) -> Vec<SocketAddr> {
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

    #[test]
    fn ip_literals_need_no_resolver_and_names_do() {
        let urls = vec!["http://10.0.0.1:7380".to_string(), "[::1]:7381".into()];
        let addrs = literal_addrs(&urls).unwrap();
        assert_eq!(addrs, ["10.0.0.1:7380".parse().unwrap(), "[::1]:7381".parse().unwrap()]);
        assert_eq!(literal_addrs(&["http://board-2.local:7380".to_string()]), None);
    }

    #[test]
    fn anyone_speaks_until_the_table_is_known() {
        let conf = ConfState { voters: vec![1, 2], ..ConfState::default() };
        assert!(is_member(&[], &conf, 9));
        let table = [MemberRecord { id: 3, ..MemberRecord::default() }];
        assert!(is_member(&table, &conf, 3));
        assert!(is_member(&table, &conf, 2));
        assert!(!is_member(&table, &conf, 9));
    }
}
