//! Feeds `step` arbitrary messages, from a seeded generator, in every role a
//! member can be in, and requires that it never panics and that the member's
//! own invariants survive (commit within the log, applied within commit).
//!
//! `EMBER_FUZZ_ITERATIONS` scales the run (default keeps `cargo test` quick).

use ember::raft::{
    ConfState, Config, Entry, EntryKind, MemStorage, Message, MessageKind, RawNode, Rng, Snapshot,
    SnapshotMeta,
};

const DEFAULT_ITERATIONS: u64 = 20_000;

const KINDS: [MessageKind; 13] = [
    MessageKind::Append,
    MessageKind::AppendResponse,
    MessageKind::Heartbeat,
    MessageKind::HeartbeatResponse,
    MessageKind::RequestVote,
    MessageKind::RequestVoteResponse,
    MessageKind::RequestPreVote,
    MessageKind::RequestPreVoteResponse,
    MessageKind::Snapshot,
    MessageKind::Propose,
    MessageKind::ReadIndex,
    MessageKind::ReadIndexResponse,
    MessageKind::TimeoutNow,
];

/// Small numbers most of the time (so messages hit the interesting cases),
/// extremes sometimes (so overflow paths are exercised).
fn number(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0 => u64::MAX - rng.below(3),
        1 => rng.next_u64(),
        2 => 0,
        _ => rng.below(12),
    }
}

fn entries(rng: &mut Rng, index: u64) -> Vec<Entry> {
    let count = rng.below(4);
    let contiguous = rng.chance(3, 4);
    (0..count)
        .map(|i| Entry {
            term: number(rng),
            index: if contiguous { index.wrapping_add(1 + i) } else { number(rng) },
            kind: if rng.chance(1, 4) { EntryKind::ConfChange } else { EntryKind::Normal },
            data: (0..rng.below(12)).map(|_| rng.below(256) as u8).collect(),
        })
        .collect()
}

fn snapshot(rng: &mut Rng) -> Option<Snapshot> {
    if rng.chance(1, 5) {
        return None;
    }
    let ids = |rng: &mut Rng| (0..rng.below(4)).map(|_| rng.below(6)).collect::<Vec<_>>();
    let conf_state = ConfState { voters: ids(rng), learners: ids(rng), ..ConfState::default() };
    let meta = SnapshotMeta { index: number(rng), term: number(rng), conf_state };
    Some(Snapshot { meta, data: vec![1, 2, 3] })
}

fn message(rng: &mut Rng) -> Message {
    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
    let mut m = Message::new(kind, if rng.chance(9, 10) { 1 } else { rng.below(6) });
    m.from = rng.below(6);
    m.term = number(rng);
    m.index = number(rng);
    m.log_term = number(rng);
    m.commit = number(rng);
    m.entries = entries(rng, m.index);
    m.reject = rng.chance(1, 3);
    m.reject_hint = number(rng);
    m.read_round = number(rng);
    m.context = if rng.chance(1, 10) { b"transfer".to_vec() } else { Vec::new() };
    if kind == MessageKind::Snapshot {
        m.snapshot = snapshot(rng);
    }
    m
}

/// Drains every Ready the way the server does, checking the member's own
/// invariants each time.
fn drain(node: &mut RawNode<MemStorage>) {
    for _ in 0..8 {
        if !node.has_ready() {
            return;
        }
        let ready = node.ready();
        let storage = node.storage_mut();
        if let Some(snapshot) = ready.snapshot {
            storage.apply_snapshot(snapshot);
        }
        storage.append(&ready.entries);
        if let Some(hard_state) = ready.hard_state {
            storage.set_hard_state(hard_state);
        }
        node.advance();
        let status = node.status();
        assert!(status.commit <= status.last_index, "commit past the log: {status:?}");
        assert!(status.applied <= status.commit, "applied past commit: {status:?}");
    }
}

#[test]
fn step_survives_arbitrary_messages_in_every_role() {
    let iterations: u64 = std::env::var("EMBER_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let mut rng = Rng::new(0xF022);
    let mut node = None;
    for iteration in 0..iterations {
        // A fresh member every so often, sometimes a leader, sometimes not.
        if iteration % 200 == 0 {
            let conf =
                ConfState { voters: vec![1, 2, 3], learners: vec![4], ..ConfState::default() };
            let mut config = Config::new(1);
            config.pre_vote = rng.chance(1, 2);
            config.check_quorum = rng.chance(1, 2);
            let mut fresh = RawNode::new(&config, MemStorage::new_with_conf_state(conf)).unwrap();
            if rng.chance(1, 2) {
                fresh.campaign();
            }
            node = Some(fresh);
        }
        let node = node.as_mut().unwrap();
        match rng.below(20) {
            0 => node.tick(),
            1 => {
                let _ = node.propose(vec![rng.below(256) as u8]);
            }
            2 => {
                let _ = node.read_index(vec![1]);
            }
            _ => {
                let _ = node.step(message(&mut rng));
            }
        }
        drain(node);
    }
}

#[test]
fn a_leader_survives_arbitrary_responses() {
    let mut rng = Rng::new(7);
    for _ in 0..200 {
        let conf = ConfState { voters: vec![1, 2, 3], ..ConfState::default() };
        let mut node =
            RawNode::new(&Config::new(1), MemStorage::new_with_conf_state(conf)).unwrap();
        node.campaign();
        drain(&mut node);
        for from in [2, 3] {
            let mut vote = Message::new(MessageKind::RequestPreVoteResponse, 1);
            vote.from = from;
            vote.term = 1;
            let _ = node.step(vote);
            drain(&mut node);
            let mut vote = Message::new(MessageKind::RequestVoteResponse, 1);
            vote.from = from;
            vote.term = 1;
            let _ = node.step(vote);
            drain(&mut node);
        }
        assert_eq!(node.status().role, ember::raft::Role::Leader);
        for _ in 0..100 {
            let mut m = message(&mut rng);
            m.to = 1;
            m.from = 2 + rng.below(2);
            m.term = node.status().term;
            let _ = node.step(m);
            let _ = node.propose(vec![1]);
            drain(&mut node);
        }
    }
}

/// Messages cross the network as postcard bytes: they round-trip, and
/// arbitrary bytes either fail to decode or decode into a message `step`
/// survives.
#[test]
fn messages_round_trip_through_postcard_and_garbage_is_harmless() {
    let mut rng = Rng::new(99);
    let conf = ConfState { voters: vec![1, 2, 3], ..ConfState::default() };
    let mut node = RawNode::new(&Config::new(1), MemStorage::new_with_conf_state(conf)).unwrap();
    for _ in 0..2000 {
        let m = message(&mut rng);
        let bytes = postcard::to_stdvec(&m).unwrap();
        let back: Message = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        let mut garbage = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(garbage.len() as u64) as usize;
            garbage[at] = rng.below(256) as u8;
        }
        if let Ok(decoded) = postcard::from_bytes::<Message>(&garbage) {
            let _ = node.step(decoded);
            drain(&mut node);
        }
    }
}
