//! The Raft paper's section 5, one scenario per rule, plus the extensions
//! Ember relies on (pre-vote, check-quorum, ReadIndex, leadership transfer,
//! snapshots, learners, membership changes one at a time and through joint
//! configurations, thesis §4.3). Each test drives real `RawNode`s
//! through the full `Ready` cycle over an in-memory network whose links the
//! test cuts and heals.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ember::raft::{
    ConfChange, ConfChangeError, ConfChangeKind, ConfChangeTransition, ConfChangeV2, ConfState,
    Config, ConfigError, Entry, EntryKind, MemStorage, Message, MessageKind, NodeId, PlantedBug,
    RaftError, RawNode, ReadState, Role, Storage,
};

/// The test's state machine: the payloads applied so far, in order.
struct Node {
    raw: RawNode<MemStorage>,
    applied: Vec<Vec<u8>>,
    read_states: Vec<ReadState>,
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    configs: BTreeMap<NodeId, Config>,
    queue: VecDeque<Message>,
    /// Directed links that lose everything sent over them.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Rewrites each message on delivery; None drops it.
    filter: Box<dyn Fn(Message) -> Option<Message>>,
    /// (term, leader) pairs ever seen, to check election safety.
    leaders_by_term: BTreeMap<u64, NodeId>,
}

fn config(id: NodeId) -> Config {
    let mut config = Config::new(id);
    config.pre_vote = false;
    config.check_quorum = false;
    config.seed = 1000 + id;
    config
}

fn encode_state(applied: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in applied {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
    out
}

fn decode_state(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        out.push(bytes[4..4 + len].to_vec());
        bytes = &bytes[4 + len..];
    }
    out
}

impl Cluster {
    fn new(ids: &[NodeId], tweak: impl Fn(&mut Config)) -> Cluster {
        let conf = ConfState { voters: ids.to_vec(), ..ConfState::default() };
        let mut cluster = Cluster::empty();
        for id in ids {
            cluster.add_node(*id, MemStorage::new_with_conf_state(conf.clone()), &tweak);
        }
        cluster
    }

    fn empty() -> Cluster {
        Cluster {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            filter: Box::new(Some),
            leaders_by_term: BTreeMap::new(),
        }
    }

    fn add_node(&mut self, id: NodeId, storage: MemStorage, tweak: &dyn Fn(&mut Config)) {
        let mut cfg = config(id);
        tweak(&mut cfg);
        let raw = RawNode::new(&cfg, storage).unwrap();
        self.configs.insert(id, cfg);
        self.nodes.insert(id, Node { raw, applied: Vec::new(), read_states: Vec::new() });
    }

    /// Crashes `id` and starts it again from what it persisted; the state
    /// machine is rebuilt by applying the log again.
    fn restart(&mut self, id: NodeId) {
        let storage = self.nodes[&id].raw.storage().clone();
        let raw = RawNode::new(&self.configs[&id], storage).unwrap();
        self.nodes.insert(id, Node { raw, applied: Vec::new(), read_states: Vec::new() });
        self.process(id);
    }

    fn node(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        &mut self.nodes.get_mut(&id).unwrap().raw
    }

    fn role(&self, id: NodeId) -> Role {
        self.nodes[&id].raw.status().role
    }

    fn term(&self, id: NodeId) -> u64 {
        self.nodes[&id].raw.status().term
    }

    fn commit(&self, id: NodeId) -> u64 {
        self.nodes[&id].raw.status().commit
    }

    fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<_> =
            self.nodes.keys().copied().filter(|id| self.role(*id) == Role::Leader).collect();
        leaders.iter().copied().max_by_key(|id| self.term(*id))
    }

    /// Handles every pending `Ready` of `id` in the documented order.
    fn process(&mut self, id: NodeId) {
        while self.nodes[&id].raw.has_ready() {
            let node = self.nodes.get_mut(&id).unwrap();
            let ready = node.raw.ready();
            self.queue.extend(ready.messages);
            let storage = node.raw.storage_mut();
            if let Some(snapshot) = &ready.snapshot {
                storage.apply_snapshot(snapshot.clone());
            }
            storage.append(&ready.entries);
            if let Some(hard_state) = ready.hard_state {
                storage.set_hard_state(hard_state);
            }
            self.queue.extend(ready.persisted_messages);
            if let Some(snapshot) = &ready.snapshot {
                node.applied = decode_state(&snapshot.data);
            }
            for entry in ready.committed_entries {
                if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
                    node.applied.push(entry.data);
                }
            }
            node.read_states.extend(ready.read_states);
            node.raw.advance();
            self.note_leaders();
        }
    }

    fn note_leaders(&mut self) {
        for (id, node) in &self.nodes {
            let status = node.raw.status();
            if status.role == Role::Leader {
                let previous = self.leaders_by_term.insert(status.term, *id);
                assert!(
                    previous.is_none() || previous == Some(*id),
                    "two leaders in term {}",
                    status.term
                );
            }
        }
    }

    fn process_all(&mut self) {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.process(id);
        }
    }

    /// Delivers messages until none are left (bounded, so a livelock fails).
    fn stabilize(&mut self) {
        self.process_all();
        for _ in 0..100_000 {
            let Some(m) = self.queue.pop_front() else { return };
            self.deliver(m);
        }
        panic!("the network did not settle");
    }

    fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to) {
            return;
        }
        let Some(m) = (self.filter)(m) else { return };
        let to = m.to;
        let _ = self.node(to).step(m);
        self.process(to);
    }

    fn tick(&mut self, id: NodeId, ticks: usize) {
        for _ in 0..ticks {
            self.node(id).tick();
            self.stabilize();
        }
    }

    fn tick_all(&mut self, ticks: usize) {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for _ in 0..ticks {
            for id in &ids {
                self.node(*id).tick();
            }
            self.stabilize();
        }
    }

    fn campaign(&mut self, id: NodeId) {
        self.node(id).campaign();
        self.stabilize();
    }

    fn isolate(&mut self, id: NodeId) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn propose(&mut self, id: NodeId, data: &[u8]) -> Result<(), RaftError> {
        let result = self.node(id).propose(data.to_vec());
        self.stabilize();
        result
    }

    fn log_terms(&self, id: NodeId) -> Vec<u64> {
        let storage = self.nodes[&id].raw.storage();
        let (first, last) = (storage.first_index().unwrap(), storage.last_index().unwrap());
        (first..=last).map(|i| storage.term(i).unwrap()).collect()
    }
}

fn cluster(ids: &[NodeId]) -> Cluster {
    Cluster::new(ids, |_| {})
}

// ----- §5.2 Leader election -----

#[test]
fn section_5_2_election_safety_at_most_one_leader_per_term() {
    let mut c = cluster(&[1, 2, 3, 4, 5]);
    c.campaign(1);
    assert_eq!(c.leader(), Some(1));
    assert!(c.nodes.keys().all(|id| c.term(*id) == 1));
    // Competing candidates in later terms, some cut off: still one leader a
    // term (note_leaders asserts on every Ready).
    c.isolate(1);
    c.campaign(2);
    c.campaign(3);
    c.heal();
    c.tick_all(60);
    assert!(c.leader().is_some());
    assert!(c.leaders_by_term.len() >= 2);
}

#[test]
fn section_5_2_a_candidate_that_loses_returns_to_follower() {
    let mut c = cluster(&[1, 2, 3]);
    c.isolate(1);
    c.campaign(1);
    assert_eq!(c.role(1), Role::Candidate);
    assert_eq!(c.term(1), 1);
    c.campaign(2);
    assert_eq!(c.leader(), Some(2));
    assert_eq!(c.term(2), 1);
    c.heal();
    c.tick(2, 1);
    assert_eq!(c.role(1), Role::Follower, "a leader of the candidate's term ends its candidacy");
    assert_eq!(c.nodes[&1].raw.status().leader_id, 2);
}

#[test]
fn section_5_2_a_candidate_with_a_stale_log_is_refused() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    c.isolate(3);
    c.propose(1, b"x").unwrap();
    c.heal();
    c.isolate(1);
    c.campaign(3);
    assert_ne!(c.role(3), Role::Leader, "2 holds an entry 3 lacks and refuses it");
    c.campaign(2);
    assert_eq!(c.role(2), Role::Leader);
}

#[test]
fn section_5_2_split_votes_are_resolved_by_randomized_timeouts() {
    for seed in 0..20 {
        let mut c = Cluster::new(&[1, 2, 3, 4], |cfg| cfg.seed = seed * 7 + cfg.id);
        // 1 and 3 campaign at once; 2 hears only 1 and 4 only 3: a 2-2 split.
        c.cut = [(1, 4), (4, 1), (3, 2), (2, 3)].into_iter().collect();
        c.node(1).campaign();
        c.node(3).campaign();
        c.stabilize();
        assert_eq!(c.leader(), None, "seed {seed}: the split vote elects nobody");
        c.heal();
        let mut ticks = 0;
        while c.leader().is_none() {
            c.tick_all(1);
            ticks += 1;
            assert!(ticks < 200, "seed {seed}: no leader after 20 election timeouts");
        }
    }
}

// ----- §5.3 Log replication -----

#[test]
fn section_5_3_log_matching_after_replication() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    for i in 0..10u8 {
        c.propose(1 + u64::from(i % 3), &[i]).unwrap();
    }
    c.tick_all(3);
    let expected = c.log_terms(1);
    assert_eq!(expected.len(), 11);
    for id in [2, 3] {
        assert_eq!(c.log_terms(id), expected);
        assert_eq!(c.nodes[&id].applied, c.nodes[&1].applied);
    }
    assert_eq!(c.nodes[&1].applied.len(), 10, "forwarded proposals commit too");
}

#[test]
fn section_5_3_follower_refuses_append_that_does_not_match() {
    let mut c = cluster(&[1, 2]);
    let mut m = Message::new(MessageKind::Append, 2);
    m.from = 1;
    m.term = 1;
    m.index = 5;
    m.log_term = 1;
    m.entries = vec![Entry { term: 1, index: 6, kind: EntryKind::Normal, data: vec![1] }];
    c.node(2).step(m).unwrap();
    let ready = c.node(2).ready();
    let response = &ready.persisted_messages[0];
    assert!(response.reject);
    assert_eq!(response.reject_hint, 0, "the follower's log ends at 0");
    assert!(ready.entries.is_empty());
}

/// Builds a member whose storage holds `terms` as its log.
fn storage_with_log(terms: &[u64], voters: &[NodeId], term: u64) -> MemStorage {
    let mut storage = MemStorage::new_with_conf_state(ConfState {
        voters: voters.to_vec(),
        ..ConfState::default()
    });
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| Entry {
            term: *t,
            index: i as u64 + 1,
            kind: EntryKind::Normal,
            data: vec![i as u8],
        })
        .collect();
    storage.append(&entries);
    let mut hard_state = storage.hard_state();
    hard_state.term = term;
    storage.set_hard_state(hard_state);
    storage
}

#[test]
fn section_5_3_figure_7_followers_converge_on_the_leaders_log() {
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    for (case, follower_log) in followers.iter().enumerate() {
        let voters = [1, 2, 3];
        let mut c = Cluster::empty();
        c.add_node(1, storage_with_log(&leader_log, &voters, 7), &|_| {});
        c.add_node(2, storage_with_log(follower_log, &voters, 7), &|_| {});
        // A third member with the leader's log gives it a majority even
        // when the follower's log is "more up to date" (case d).
        c.add_node(3, storage_with_log(&leader_log, &voters, 7), &|_| {});
        c.campaign(1);
        assert_eq!(c.role(1), Role::Leader, "case {case}");
        c.tick(1, 2);
        let mut expected = leader_log.to_vec();
        expected.push(8);
        assert_eq!(c.log_terms(2), expected, "case {case}: follower log");
        assert_eq!(c.commit(2), 11, "case {case}");
    }
}

// ----- §5.4 Safety -----

/// Campaigns again while an earlier term's votes are spent elsewhere.
fn campaign_until_leader(c: &mut Cluster, id: NodeId) {
    for _ in 0..5 {
        if c.role(id) != Role::Leader {
            c.campaign(id);
        }
    }
}

/// Figure 8: five members; a leader must not commit an entry of an earlier
/// term by counting replicas, or the entry can be overwritten afterwards.
fn figure_8(bug: PlantedBug) -> (u64, Vec<u64>, Vec<u64>) {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], |cfg| {
        cfg.max_size_per_msg_bytes = 1;
        cfg.planted_bug = bug;
    });
    c.campaign(1);
    // (a) 1 leads and replicates index 2 to 2 only.
    for to in [3, 4, 5] {
        c.cut.insert((1, to));
    }
    c.propose(1, b"a").unwrap();
    // (b) 1 fails; 5 wins with 3 and 4 and writes index 2 in its term, alone.
    c.heal();
    c.isolate(1);
    c.filter = Box::new(|m| (m.from != 5 || m.kind != MessageKind::Append).then_some(m));
    c.campaign(5);
    assert_eq!(c.role(5), Role::Leader);
    // (c) 5 fails; 1 returns, wins, and replicates index 2 (not yet 3) to 3.
    c.heal();
    c.isolate(5);
    c.restart(1);
    c.filter = Box::new(|mut m| {
        m.entries.retain(|e| e.index < 3);
        Some(m)
    });
    campaign_until_leader(&mut c, 1);
    assert_eq!(c.role(1), Role::Leader);
    c.tick(1, 3);
    let commit_at_c = c.commit(1);
    // (d) 1 fails; 5 returns and wins with its newer last term.
    c.heal();
    c.filter = Box::new(Some);
    c.isolate(1);
    c.restart(5);
    campaign_until_leader(&mut c, 5);
    assert_eq!(c.role(5), Role::Leader);
    c.tick(5, 3);
    (commit_at_c, c.log_terms(3), c.log_terms(5))
}

#[test]
fn section_5_4_2_figure_8_only_current_term_entries_commit_by_counting() {
    let (commit, log_of_3, _) = figure_8(PlantedBug::None);
    assert_eq!(commit, 1, "index 2 is on a majority but from an old term");
    assert_eq!(log_of_3[1], 2, "index 2 (never committed) was replaced by 5's entry of term 2");
    // With the rule broken, the same history commits index 2 (term 1) and
    // then elects a leader whose log lacks it.
    let (commit, _, log_of_5) = figure_8(PlantedBug::CommitOldTerm);
    assert_eq!(commit, 2);
    assert_ne!(log_of_5[1], 1, "the new leader lacks the committed entry");
}

#[test]
fn section_5_4_leader_completeness_new_leaders_hold_every_committed_entry() {
    let mut c = cluster(&[1, 2, 3, 4, 5]);
    c.campaign(1);
    c.isolate(4);
    c.isolate(5);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    let committed = c.commit(1);
    assert_eq!(committed, 6);
    c.heal();
    c.isolate(1);
    c.cut.insert((2, 4));
    c.cut.insert((2, 5));
    c.cut.insert((3, 4));
    c.cut.insert((3, 5));
    c.campaign(4);
    c.campaign(5);
    assert!(c.role(4) != Role::Leader && c.role(5) != Role::Leader, "no majority without 2 or 3");
    c.heal();
    c.isolate(1);
    c.tick_all(40);
    let leader = c.leader().unwrap();
    assert!([2, 3].contains(&leader));
    assert!(c.log_terms(leader).len() as u64 >= committed);
    c.tick_all(2);
    assert_eq!(c.nodes[&4].applied, c.nodes[&2].applied);
    assert_eq!(c.nodes[&4].applied.len(), 5);
}

// ----- extensions -----

#[test]
fn pre_vote_keeps_a_rejoining_member_from_disrupting_the_leader() {
    for pre_vote in [true, false] {
        let mut c = Cluster::new(&[1, 2, 3], |cfg| {
            cfg.pre_vote = pre_vote;
            cfg.check_quorum = true;
        });
        c.campaign(1);
        let term = c.term(1);
        c.isolate(3);
        c.tick(3, 50);
        c.heal();
        c.tick_all(3);
        if pre_vote {
            assert_eq!(c.leader(), Some(1), "the leader survives");
            assert_eq!(c.term(1), term, "the term did not move");
            assert_eq!(c.term(3), term);
        } else {
            assert!(c.term(3) > term, "without pre-vote the cut-off member raised its term");
        }
    }
}

#[test]
fn check_quorum_steps_down_a_partitioned_leader() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.check_quorum = true);
    c.campaign(1);
    c.isolate(1);
    c.tick(1, 10);
    c.tick(1, 10);
    assert_eq!(c.role(1), Role::Follower);
    assert_eq!(c.propose(1, b"x"), Err(RaftError::ProposalDropped));
}

#[test]
fn read_index_never_serves_a_stale_read_after_a_partition() {
    let mut c = cluster(&[1, 2, 3, 4, 5]);
    c.campaign(1);
    c.isolate(1);
    c.campaign(2);
    assert_eq!(c.role(2), Role::Leader);
    c.propose(2, b"new").unwrap();
    let write_index = c.commit(2);
    // 1 still believes it leads; its read needs a quorum it cannot reach.
    c.node(1).read_index(b"old-leader".to_vec()).unwrap();
    c.tick(1, 5);
    assert!(c.nodes[&1].read_states.is_empty(), "the deposed leader confirmed nothing");
    c.node(3).read_index(b"follower".to_vec()).unwrap();
    c.node(2).read_index(b"leader".to_vec()).unwrap();
    c.stabilize();
    for id in [2, 3] {
        let read = &c.nodes[&id].read_states[0];
        assert!(read.index >= write_index, "node {id} read index {} < {write_index}", read.index);
    }
    c.heal();
    c.tick_all(2);
    assert!(c.nodes[&1].read_states.is_empty());
    assert_eq!(c.role(1), Role::Follower);
}

#[test]
fn read_index_batches_reads_into_one_round() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    for i in 0..10u8 {
        c.node(1).read_index(vec![i]).unwrap();
    }
    let ready = c.node(1).ready();
    let heartbeats = ready.messages.iter().filter(|m| m.kind == MessageKind::Heartbeat).count();
    assert_eq!(heartbeats, 2, "one heartbeat round for ten reads");
    c.queue.extend(ready.messages);
    c.node(1).advance();
    c.stabilize();
    assert_eq!(c.nodes[&1].read_states.len(), 10);
}

#[test]
fn leadership_transfer_hands_over_after_catching_up() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    c.isolate(3);
    c.propose(1, b"x").unwrap();
    c.heal();
    c.node(1).transfer_leader(3).unwrap();
    assert_eq!(c.node(1).propose(b"y".to_vec()), Err(RaftError::ProposalDropped));
    c.stabilize();
    assert_eq!(c.leader(), Some(3));
    assert_eq!(c.role(1), Role::Follower);
}

#[test]
fn leadership_transfer_times_out_when_the_target_is_gone() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    c.isolate(3);
    c.node(1).transfer_leader(3).unwrap();
    c.stabilize();
    assert_eq!(c.propose(1, b"y"), Err(RaftError::ProposalDropped));
    c.tick(1, 10);
    assert_eq!(c.role(1), Role::Leader);
    assert_eq!(c.propose(1, b"y"), Ok(()));
    assert_eq!(c.node(2).transfer_leader(1), Err(RaftError::NotLeader));
}

#[test]
fn a_lagging_follower_is_caught_up_by_snapshot() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    c.isolate(3);
    for i in 0..20u8 {
        c.propose(1, &[i]).unwrap();
    }
    for id in [1, 2] {
        let node = c.nodes.get_mut(&id).unwrap();
        let applied = node.raw.status().applied;
        let conf = node.raw.conf_state().clone();
        let data = encode_state(&node.applied);
        let storage = node.raw.storage_mut();
        storage.create_snapshot(applied, conf, data).unwrap();
        storage.compact(applied);
    }
    c.heal();
    c.tick_all(3);
    assert_eq!(c.nodes[&3].applied, c.nodes[&1].applied);
    assert_eq!(c.nodes[&3].applied.len(), 20);
    c.propose(1, b"after").unwrap();
    c.tick_all(2);
    assert_eq!(c.nodes[&3].applied.last().unwrap(), b"after");
}

/// Starts member `id` with the membership the cluster has now, as an
/// operator joining a running cluster does.
fn join(c: &mut Cluster, id: NodeId) {
    let conf = c.nodes[&1].raw.conf_state().clone();
    c.add_node(id, MemStorage::new_with_conf_state(conf), &|_| {});
}

fn change(
    c: &mut Cluster,
    leader: NodeId,
    kind: ConfChangeKind,
    node_id: NodeId,
) -> Result<(), RaftError> {
    let result = c.node(leader).propose_conf_change(ConfChange { kind, node_id });
    c.stabilize();
    result
}

/// Voters 1, 2 and 3 under leader 1, learner 4 joined, and entry `x`
/// committed and applied everywhere.
fn three_and_a_learner_holding_x() -> Cluster {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    join(&mut c, 4);
    change(&mut c, 1, ConfChangeKind::AddLearner, 4).unwrap();
    c.propose(1, b"x").unwrap();
    c.tick_all(2);
    c
}

#[test]
fn learners_replicate_without_voting_and_can_be_promoted() {
    let mut c = three_and_a_learner_holding_x();
    assert_eq!(c.nodes[&4].applied, vec![b"x".to_vec()]);
    // A learner never campaigns and does not count for a quorum.
    c.tick(4, 50);
    assert_eq!(c.role(4), Role::Follower);
    c.isolate(2);
    c.isolate(3);
    let commit = c.commit(1);
    c.propose(1, b"y").unwrap();
    assert_eq!(c.commit(1), commit, "leader plus learner are not a quorum");
    c.heal();
    c.tick_all(2);
    change(&mut c, 1, ConfChangeKind::AddVoter, 4).unwrap();
    c.tick_all(2);
    assert_eq!(c.nodes[&4].raw.conf_state().voters, vec![1, 2, 3, 4]);
    c.isolate(1);
    c.campaign(4);
    assert_eq!(c.role(4), Role::Leader, "the promoted member can lead");
}

#[test]
fn membership_changes_one_at_a_time_and_a_removed_leader_steps_down() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    join(&mut c, 4);
    c.node(1)
        .propose_conf_change(ConfChange { kind: ConfChangeKind::AddVoter, node_id: 4 })
        .unwrap();
    let second =
        c.node(1).propose_conf_change(ConfChange { kind: ConfChangeKind::RemoveNode, node_id: 2 });
    assert_eq!(second, Err(RaftError::ConfChangePending));
    c.stabilize();
    c.tick_all(2);
    assert!(c.nodes.values().all(|n| n.raw.conf_state().voters == vec![1, 2, 3, 4]));
    change(&mut c, 1, ConfChangeKind::RemoveNode, 1).unwrap();
    c.tick_all(2);
    assert_ne!(c.role(1), Role::Leader);
    c.isolate(1);
    c.tick_all(40);
    let leader = c.leader().unwrap();
    assert_ne!(leader, 1);
    c.propose(leader, b"z").unwrap();
    assert_eq!(c.nodes[&4].applied.last().unwrap(), b"z");
    let remove_all = ConfChange { kind: ConfChangeKind::RemoveNode, node_id: 99 };
    assert!(
        c.node(leader).propose_conf_change(remove_all).is_ok(),
        "removing a stranger is harmless"
    );
}

#[test]
fn the_uncommitted_cap_refuses_instead_of_queueing() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.max_uncommitted_entries_bytes = 1000);
    c.campaign(1);
    c.isolate(1);
    let mut accepted = 0;
    let refused = loop {
        match c.propose(1, &[0; 100]) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100);
    };
    assert_eq!(refused, RaftError::UncommittedCapExceeded);
    assert!((7..=9).contains(&accepted), "accepted {accepted} of 124 bytes each");
    c.heal();
    c.tick_all(2);
    assert_eq!(c.propose(1, &[0; 100]), Ok(()), "committing frees the budget");
}

#[test]
fn config_is_validated() {
    let mut cfg = Config::new(1);
    cfg.election_tick = 1;
    assert_eq!(
        RawNode::new(&cfg, MemStorage::new()).err(),
        Some(RaftError::Config(ConfigError::ElectionTickNotAboveHeartbeat))
    );
    assert_eq!(Config::new(0).validate(), Err(ConfigError::ZeroId));
    let mut cfg = Config::new(1);
    cfg.max_inflight_msgs = 1_000_000;
    assert_eq!(cfg.validate(), Err(ConfigError::MaxInflightOutOfRange));
}

#[test]
#[should_panic(expected = "ready() called twice")]
fn ready_twice_without_advance_is_a_bug() {
    let mut c = cluster(&[1]);
    c.node(1).campaign();
    let _first = c.node(1).ready();
    let _second = c.node(1).ready();
}

#[test]
fn a_single_member_commits_through_its_own_disk() {
    let mut c = cluster(&[1]);
    c.campaign(1);
    assert_eq!(c.role(1), Role::Leader);
    c.propose(1, b"solo").unwrap();
    assert_eq!(c.nodes[&1].applied, vec![b"solo".to_vec()]);
    c.node(1).read_index(b"r".to_vec()).unwrap();
    c.stabilize();
    assert_eq!(c.nodes[&1].read_states[0].index, 2);
}

#[test]
fn restart_keeps_term_vote_log_and_membership() {
    let c = three_and_a_learner_holding_x();
    let storage = c.nodes[&2].raw.storage().clone();
    let status = c.nodes[&2].raw.status();
    let mut cfg = config(2);
    cfg.applied = status.applied;
    let restarted = RawNode::new(&cfg, storage).unwrap();
    let again = restarted.status();
    assert_eq!(
        (again.term, again.commit, again.last_index),
        (status.term, status.commit, status.last_index)
    );
    assert_eq!(restarted.conf_state().learners, vec![4], "applied membership changes are replayed");
}

#[test]
fn read_index_waits_for_the_new_leaders_first_commit() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    c.propose(1, b"old").unwrap();
    // 2 takes over, but its no-op cannot reach anyone yet.
    c.filter = Box::new(|m| (m.from != 2 || m.kind != MessageKind::Append).then_some(m));
    c.isolate(1);
    c.campaign(2);
    assert_eq!(c.role(2), Role::Leader);
    c.node(2).read_index(b"early".to_vec()).unwrap();
    c.tick(2, 3);
    assert!(c.nodes[&2].read_states.is_empty(), "the commit index of a new term is not known yet");
    c.filter = Box::new(Some);
    c.tick(2, 2);
    let read = &c.nodes[&2].read_states[0];
    assert_eq!(read.context, b"early".to_vec());
    assert_eq!(read.index, 3, "served at the no-op of term 2, which covers the old write");
}

// ----- Joint consensus (Raft thesis §4.3) -----

fn joint(
    c: &mut Cluster,
    leader: NodeId,
    transition: ConfChangeTransition,
    changes: &[(ConfChangeKind, NodeId)],
) -> Result<(), RaftError> {
    let changes = changes.iter().map(|&(kind, node_id)| ConfChange { kind, node_id }).collect();
    let result = c.node(leader).propose_conf_change_v2(ConfChangeV2 { transition, changes });
    c.stabilize();
    result
}

fn conf_of(c: &Cluster, id: NodeId) -> ConfState {
    c.nodes[&id].raw.conf_state().clone()
}

const ADD: ConfChangeKind = ConfChangeKind::AddVoter;
const REMOVE: ConfChangeKind = ConfChangeKind::RemoveNode;
const LEARNER: ConfChangeKind = ConfChangeKind::AddLearner;

#[test]
fn joint_replace_keeps_quorum_while_the_replaced_member_and_its_successor_are_away() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    join(&mut c, 4);
    // 3 has failed and 4 is not running yet. One at a time, adding 4 first
    // would need three of {1,2,3,4}; removing 3 first, then adding 4, works
    // but passes through two voters. The joint change needs only 1 and 2.
    c.isolate(3);
    c.isolate(4);
    joint(&mut c, 1, ConfChangeTransition::Auto, &[(ADD, 4), (REMOVE, 3)]).unwrap();
    let conf = conf_of(&c, 2);
    assert_eq!((conf.voters, conf.voters_outgoing), (vec![1, 2, 4], vec![]), "left automatically");
    c.propose(1, b"during").unwrap();
    assert_eq!(c.nodes[&2].applied.last().unwrap(), b"during");
    c.heal();
    c.isolate(3);
    c.tick_all(3);
    assert_eq!(c.nodes[&4].applied, c.nodes[&1].applied, "the successor catches up");
    assert_eq!(conf_of(&c, 4).voters, vec![1, 2, 4]);
}

#[test]
fn joint_commit_needs_a_majority_of_both_sets() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    join(&mut c, 4);
    join(&mut c, 5);
    let to_new = [(ADD, 4), (ADD, 5), (REMOVE, 2), (REMOVE, 3)];
    joint(&mut c, 1, ConfChangeTransition::Explicit, &to_new).unwrap();
    let conf = conf_of(&c, 1);
    assert_eq!((conf.voters.clone(), conf.voters_outgoing.clone()), (vec![1, 4, 5], vec![1, 2, 3]));
    assert!(!conf.auto_leave);
    // The old majority alone does not commit.
    c.isolate(4);
    c.isolate(5);
    let commit = c.commit(1);
    c.propose(1, b"old-only").unwrap();
    assert_eq!(c.commit(1), commit);
    // 2 and 3 hold it; once 4 and 5 do too, both majorities have it.
    c.heal();
    c.isolate(2);
    c.isolate(3);
    c.tick_all(2);
    assert_eq!(c.commit(1), commit + 1);
    // The new majority alone does not commit either.
    let commit = c.commit(1);
    c.propose(1, b"new-only").unwrap();
    assert_eq!(c.commit(1), commit);
    c.heal();
    c.tick_all(2);
    assert_eq!(c.nodes[&3].applied.last().unwrap(), b"new-only");
    // Explicit: joint until asked to leave.
    c.tick_all(5);
    assert!(conf_of(&c, 1).is_joint());
    joint(&mut c, 1, ConfChangeTransition::Auto, &[]).unwrap();
    assert!(c.nodes.values().all(|n| n.raw.conf_state().voters_outgoing.is_empty()));
    assert_eq!(conf_of(&c, 2).voters, vec![1, 4, 5]);
}

#[test]
fn joint_elections_need_a_majority_of_both_sets() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    for id in [4, 5] {
        join(&mut c, id);
    }
    joint(
        &mut c,
        1,
        ConfChangeTransition::Explicit,
        &[(ADD, 4), (ADD, 5), (REMOVE, 1), (REMOVE, 2)],
    )
    .unwrap();
    assert_eq!(conf_of(&c, 2).voters, vec![3, 4, 5]);
    c.isolate(1);
    c.isolate(4);
    c.isolate(5);
    // 2 and 3 are a majority of {1,2,3} but not of {3,4,5}.
    c.campaign(2);
    assert_ne!(c.role(2), Role::Leader);
    c.heal();
    c.isolate(1);
    c.isolate(2);
    // 4 and 5 and 3 are a majority of {3,4,5} but 3 alone is not of {1,2,3}.
    c.campaign(4);
    assert_ne!(c.role(4), Role::Leader);
    c.heal();
    c.isolate(1);
    c.campaign(3);
    assert_eq!(c.role(3), Role::Leader, "2 and 3 of the old, 3, 4 and 5 of the new");
}

#[test]
fn changes_while_joint_and_leaving_when_not_joint_are_refused() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    join(&mut c, 4);
    let leave = joint(&mut c, 1, ConfChangeTransition::Auto, &[]);
    assert_eq!(leave, Err(RaftError::ConfChange(ConfChangeError::NotJoint)));
    let two_voters = ConfChangeV2 {
        transition: ConfChangeTransition::Auto,
        changes: vec![ConfChange { kind: ADD, node_id: 4 }],
    };
    c.node(1).propose_conf_change_v2(two_voters).unwrap();
    c.stabilize();
    joint(&mut c, 1, ConfChangeTransition::Explicit, &[(REMOVE, 4)]).unwrap();
    assert!(conf_of(&c, 1).is_joint());
    let again = change(&mut c, 1, REMOVE, 2);
    assert_eq!(again, Err(RaftError::ConfChange(ConfChangeError::AlreadyJoint)));
    let again = joint(&mut c, 1, ConfChangeTransition::Explicit, &[(ADD, 4)]);
    assert_eq!(again, Err(RaftError::ConfChange(ConfChangeError::AlreadyJoint)));
    joint(&mut c, 1, ConfChangeTransition::Auto, &[]).unwrap();
    assert_eq!(conf_of(&c, 4).voters, vec![1, 2, 3]);
}

#[test]
fn a_leader_removed_by_a_joint_change_leads_until_it_is_left() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    join(&mut c, 4);
    c.propose(1, b"before").unwrap();
    joint(&mut c, 1, ConfChangeTransition::Auto, &[(ADD, 4), (REMOVE, 1)]).unwrap();
    // The leader stayed in the outgoing set, committed the leave itself, and
    // stepped down once it applied it (4 is caught up by the next leader).
    for id in [1, 2, 3] {
        let conf = conf_of(&c, id);
        assert_eq!((conf.voters, conf.voters_outgoing), (vec![2, 3, 4], vec![]));
    }
    assert_ne!(c.role(1), Role::Leader);
    c.isolate(1);
    c.tick_all(40);
    let leader = c.leader().unwrap();
    assert_ne!(leader, 1);
    c.propose(leader, b"after").unwrap();
    assert_eq!(c.nodes[&4].applied, vec![b"before".to_vec(), b"after".to_vec()]);
    assert_eq!(conf_of(&c, 4).voters, vec![2, 3, 4]);
}

#[test]
fn voters_demoted_while_joint_vote_until_the_joint_config_is_left() {
    let mut c = three_and_a_learner_holding_x();
    joint(&mut c, 1, ConfChangeTransition::Explicit, &[(ADD, 4), (LEARNER, 3)]).unwrap();
    let conf = conf_of(&c, 2);
    assert_eq!(conf.voters, vec![1, 2, 4]);
    assert_eq!(conf.learners_next, vec![3]);
    assert!(conf.learners.is_empty());
    // 3 still counts in the outgoing set: without it and 2, nothing commits.
    c.isolate(2);
    c.isolate(3);
    let commit = c.commit(1);
    c.propose(1, b"y").unwrap();
    assert_eq!(c.commit(1), commit);
    c.heal();
    c.tick_all(2);
    joint(&mut c, 1, ConfChangeTransition::Auto, &[]).unwrap();
    let conf = conf_of(&c, 3);
    assert_eq!((conf.voters, conf.learners), (vec![1, 2, 4], vec![3]));
    assert!(conf.learners_next.is_empty());
    c.tick(3, 50);
    assert_eq!(c.role(3), Role::Follower, "a learner never campaigns");
}

#[test]
fn a_new_leader_leaves_the_joint_config_its_predecessor_entered() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    join(&mut c, 4);
    // Lose every leave proposal of leader 1 on its way out.
    let leave = ConfChangeV2::leave_joint().encode();
    c.filter = Box::new(move |m| {
        let carries_leave = m.from == 1 && m.entries.iter().any(|e| e.data == leave);
        (!carries_leave).then_some(m)
    });
    joint(&mut c, 1, ConfChangeTransition::Implicit, &[(ADD, 4)]).unwrap();
    assert!(conf_of(&c, 2).is_joint() && conf_of(&c, 2).auto_leave);
    c.filter = Box::new(Some);
    c.isolate(1);
    c.campaign(2);
    assert_eq!(c.role(2), Role::Leader);
    c.tick_all(2);
    for id in [2, 3, 4] {
        let conf = conf_of(&c, id);
        assert!(!conf.is_joint(), "member {id} still joint: {conf:?}");
        assert_eq!(conf.voters, vec![1, 2, 3, 4]);
    }
}

#[test]
fn a_joint_config_survives_restart_and_travels_in_snapshots() {
    let mut c = cluster(&[1, 2, 3]);
    c.campaign(1);
    join(&mut c, 4);
    c.isolate(3);
    joint(&mut c, 1, ConfChangeTransition::Explicit, &[(ADD, 4), (REMOVE, 2)]).unwrap();
    c.restart(2);
    let conf = conf_of(&c, 2);
    assert_eq!((conf.voters, conf.voters_outgoing), (vec![1, 3, 4], vec![1, 2, 3]));
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    // The leader compacts its log behind a snapshot of the joint config; 3
    // can only catch up from the snapshot.
    let node = c.nodes.get_mut(&1).unwrap();
    let applied = node.raw.status().applied;
    let conf = node.raw.conf_state().clone();
    let data = encode_state(&node.applied);
    node.raw.storage_mut().create_snapshot(applied, conf.clone(), data).unwrap();
    node.raw.storage_mut().compact(applied);
    c.heal();
    c.tick_all(3);
    assert_eq!(conf_of(&c, 3), conf, "restored from the snapshot");
    assert_eq!(c.nodes[&3].applied, c.nodes[&1].applied);
    c.restart(3);
    assert_eq!(conf_of(&c, 3), conf);
    joint(&mut c, 1, ConfChangeTransition::Auto, &[]).unwrap();
    assert_eq!(conf_of(&c, 3).voters, vec![1, 3, 4]);
    assert!(!conf_of(&c, 3).is_joint());
}
