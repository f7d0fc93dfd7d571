//! Throughput of the raft core alone: a 3-member cluster in memory, no I/O,
//! each member handling one `Ready` per loop iteration exactly as the server
//! does (send, persist to `MemStorage`, send after persist, apply, advance).
//! The leader proposes `batch` entries per iteration; an entry counts once it
//! is committed and applied on all three members.
//!
//! Prints `raft_entries_per_s=<n> batch=<b> entry_bytes=<p>` for batches of 1
//! and 64. Run with `cargo bench --bench raft`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ember::raft::{ConfState, Config, MemStorage, Message, RawNode, Role};

const MEMBERS: u64 = 3;
/// A small key-value write, about what a typical etcd put carries.
const ENTRY_PAYLOAD_BYTES: usize = 64;
/// Compact the log every this many applied entries to keep memory flat.
const COMPACT_EVERY_ENTRIES: u64 = 50_000;
const MEASURE_FOR: Duration = Duration::from_secs(2);

struct Member {
    node: RawNode<MemStorage>,
    inbox: VecDeque<Message>,
    applied_entries: u64,
    snapshot_index: u64,
}

fn cluster() -> Vec<Member> {
    let voters: Vec<u64> = (1..=MEMBERS).collect();
    let mut members: Vec<Member> = voters
        .iter()
        .map(|id| {
            let mut config = Config::new(*id);
            config.max_inflight_msgs = 256;
            let storage = MemStorage::new_with_conf_state(ConfState {
                voters: voters.clone(),
                ..ConfState::default()
            });
            let node = RawNode::new(&config, storage).unwrap();
            Member { node, inbox: VecDeque::new(), applied_entries: 0, snapshot_index: 0 }
        })
        .collect();
    members[0].node.campaign();
    while members[0].node.status().role != Role::Leader {
        iterate(&mut members);
    }
    for _ in 0..10 {
        iterate(&mut members);
    }
    members
}

/// One loop iteration on every member: take in mail, handle one Ready.
fn iterate(members: &mut [Member]) {
    let mut outgoing = Vec::new();
    for member in members.iter_mut() {
        while let Some(m) = member.inbox.pop_front() {
            let _ = member.node.step(m);
        }
        if !member.node.has_ready() {
            continue;
        }
        let mut ready = member.node.ready();
        outgoing.append(&mut ready.messages);
        let storage = member.node.storage_mut();
        if let Some(snapshot) = ready.snapshot.take() {
            storage.apply_snapshot(snapshot);
        }
        storage.append(&ready.entries);
        if let Some(hard_state) = ready.hard_state {
            storage.set_hard_state(hard_state);
        }
        outgoing.append(&mut ready.persisted_messages);
        member.applied_entries +=
            ready.committed_entries.iter().filter(|e| !e.data.is_empty()).count() as u64;
        let last_applied = ready.committed_entries.last().map(|e| e.index);
        member.node.advance();
        if let Some(applied) = last_applied {
            maybe_compact(member, applied);
        }
    }
    for m in outgoing {
        members[(m.to - 1) as usize].inbox.push_back(m);
    }
}

fn maybe_compact(member: &mut Member, applied: u64) {
    if applied < member.snapshot_index + COMPACT_EVERY_ENTRIES {
        return;
    }
    let conf = member.node.conf_state().clone();
    let storage = member.node.storage_mut();
    storage.create_snapshot(applied, conf, Vec::new()).unwrap();
    storage.compact(applied);
    member.snapshot_index = applied;
}

fn applied_everywhere(members: &[Member]) -> u64 {
    members.iter().map(|m| m.applied_entries).min().unwrap()
}

fn measure(batch: usize) -> f64 {
    let mut members = cluster();
    let payload = vec![7u8; ENTRY_PAYLOAD_BYTES];
    let start_applied = applied_everywhere(&members);
    let start = Instant::now();
    let mut iterations = 0u64;
    loop {
        let proposals = vec![payload.clone(); batch];
        members[0].node.propose_batch(proposals).expect("the leader takes proposals");
        iterate(&mut members);
        iterations += 1;
        if iterations.is_multiple_of(64) && start.elapsed() >= MEASURE_FOR {
            break;
        }
    }
    // Let everything in flight land so each counted entry is applied on all.
    for _ in 0..16 {
        iterate(&mut members);
    }
    let elapsed = start.elapsed().as_secs_f64();
    (applied_everywhere(&members) - start_applied) as f64 / elapsed
}

fn main() {
    for batch in [1, 64] {
        let rate = measure(batch);
        println!("raft_entries_per_s={rate:.0} batch={batch} entry_bytes={ENTRY_PAYLOAD_BYTES}");
    }
}
