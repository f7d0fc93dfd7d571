//! A linearizability checker for single-key histories, in the manner of
//! Wing & Gong as improved by Lowe and used by Porcupine.
//!
//! A history is a list of operations, each with an invocation and (unless its
//! outcome is unknown) a completion instant from one monotonic clock. The
//! search walks a linked list of call and return events in time order; at a
//! call it tries to linearize that operation now (the model must accept its
//! recorded output), at a return it backtracks, because the operation whose
//! return this is was not linearized before it. Pairs of (set of linearized
//! operations, model state) already explored are remembered and never
//! explored twice (Lowe's memoisation), which turns the worst case from
//! factorial into "number of distinct states".
//!
//! The model is etcd's, restricted to one key, since every operation here
//! touches a single key and keys are independent: `check_history` splits a
//! history by key and checks each part alone. State is the key's value,
//! version and the revision that last changed it. Revisions in answers are
//! checked: a write must land at a revision above the key's last change, and
//! a read's header revision can never be below the revision of the value it
//! saw.
//!
//! An operation with an unknown outcome (its answer was lost, or it timed out)
//! has its return at +infinity and a nondeterministic step: it either took
//! effect (at a revision we never learned, only bounded below) or not at all.
//! A later read that sees its value pins the revision down.
//!
//! Search is bounded by a deadline; running out yields `Verdict::Unknown`,
//! never a guess.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// Values written by the recorder are unique numbers, so a read names exactly
/// one write. `NEVER_WRITTEN` stands for bytes that no writer produced.
pub type Value = u64;
pub const NEVER_WRITTEN: Value = u64::MAX;

/// What a client asked, on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Put {
        value: Value,
    },
    Get,
    Delete,
    /// Txn: if the compare holds, put `value`; otherwise do nothing.
    Cas {
        compare: Compare,
        value: Value,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's version equals this (0: the key is absent).
    Version(i64),
    /// The key holds this value (false when absent).
    Value(Value),
}

/// A key as a read returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Observed {
    pub value: Value,
    pub mod_revision: i64,
    pub version: i64,
}

/// What the server answered. `Unknown` is a write whose answer never came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Put { revision: i64 },
    Get { kv: Option<Observed>, header_revision: i64 },
    Delete { deleted: bool, revision: i64 },
    Cas { succeeded: bool, revision: i64 },
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub key: u32,
    /// Nanoseconds since the history's start.
    pub call_ns: u64,
    /// `None` when the outcome is unknown: the return is at +infinity.
    pub return_ns: Option<u64>,
    pub input: Input,
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history; carries the key that failed.
    Illegal {
        key: u32,
    },
    /// The search ran out of time on this key.
    Unknown {
        key: u32,
    },
}

/// The revision that last changed the key: known, or known only to be above
/// a bound (an unknown-outcome write took effect at a revision nobody saw).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Revision {
    Exactly(i64),
    Above(i64),
}

impl Revision {
    /// The smallest revision a later change may take, minus one.
    fn floor(self) -> i64 {
        match self {
            Revision::Exactly(r) | Revision::Above(r) => r,
        }
    }

    /// Whether an observed revision `r` may be this one.
    fn admits(self, r: i64) -> bool {
        match self {
            Revision::Exactly(x) => x == r,
            Revision::Above(x) => r > x,
        }
    }
}

/// The model state of one key. Invariant: `version == 0` iff `value` is None.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct KeyState {
    value: Option<Value>,
    version: i64,
    last_change: Revision,
}

const EMPTY: KeyState = KeyState { value: None, version: 0, last_change: Revision::Exactly(0) };

/// Every state the model may be in after `op`, given its recorded output.
fn step(state: KeyState, op: &Operation) -> Vec<KeyState> {
    if op.output == Output::Unknown {
        let mut out = vec![state];
        out.extend(apply_unknown(state, &op.input));
        return out;
    }
    step_known(state, &op.input, &op.output).into_iter().collect()
}

fn step_known(state: KeyState, input: &Input, output: &Output) -> Option<KeyState> {
    let floor = state.last_change.floor();
    match (input, output) {
        (Input::Put { value }, Output::Put { revision }) => {
            (*revision > floor).then(|| written(state, *value, Revision::Exactly(*revision)))
        }
        (Input::Get, Output::Get { kv, header_revision }) => {
            read_matches(state, *kv, *header_revision).then_some(state)
        }
        (Input::Delete, Output::Delete { deleted, revision }) => {
            delete_step(state, *deleted, *revision)
        }
        (Input::Cas { compare, value }, Output::Cas { succeeded, revision }) => {
            if compare_holds(state, *compare) != *succeeded {
                return None;
            }
            if *succeeded {
                (*revision > floor).then(|| written(state, *value, Revision::Exactly(*revision)))
            } else {
                (*revision >= floor).then_some(state)
            }
        }
        _ => None,
    }
}

/// The effect of a write whose answer was lost, if it took effect.
fn apply_unknown(state: KeyState, input: &Input) -> Option<KeyState> {
    let above = Revision::Above(state.last_change.floor());
    match input {
        Input::Put { value } => Some(written(state, *value, above)),
        Input::Delete if state.value.is_some() => {
            Some(KeyState { value: None, version: 0, last_change: above })
        }
        Input::Cas { compare, value } if compare_holds(state, *compare) => {
            Some(written(state, *value, above))
        }
        Input::Get | Input::Delete | Input::Cas { .. } => None,
    }
}

fn written(state: KeyState, value: Value, at: Revision) -> KeyState {
    KeyState { value: Some(value), version: state.version + 1, last_change: at }
}

fn delete_step(state: KeyState, deleted: bool, revision: i64) -> Option<KeyState> {
    let floor = state.last_change.floor();
    match (state.value.is_some(), deleted) {
        (true, true) if revision > floor => {
            Some(KeyState { value: None, version: 0, last_change: Revision::Exactly(revision) })
        }
        (false, false) if revision >= floor => Some(state),
        _ => None,
    }
}

fn compare_holds(state: KeyState, compare: Compare) -> bool {
    match compare {
        Compare::Version(v) => state.version == v,
        Compare::Value(v) => state.value == Some(v),
    }
}

/// A read matches when it saw exactly the model's key, and its header
/// revision is not older than the key's last change. Seeing the value of an
/// unknown-outcome write pins the revision it took, but the state stays as it
/// is: `step` is re-run on the pinned state by `pin`.
fn read_matches(state: KeyState, kv: Option<Observed>, header_revision: i64) -> bool {
    let fresh = header_revision >= state.last_change.floor();
    match (state.value, kv) {
        (None, None) => fresh,
        (Some(value), Some(seen)) => {
            seen.value == value
                && seen.version == state.version
                && state.last_change.admits(seen.mod_revision)
                && header_revision >= seen.mod_revision
        }
        _ => false,
    }
}

/// After a read saw the key, its revision is known exactly.
fn pin(state: KeyState, op: &Operation) -> KeyState {
    match op.output {
        Output::Get { kv: Some(seen), .. } => {
            KeyState { last_change: Revision::Exactly(seen.mod_revision), ..state }
        }
        _ => state,
    }
}

/// Checks a whole history: split by key, each key alone, within `budget` in
/// total. The first key that fails decides the verdict.
pub fn check_history(ops: &[Operation], budget: Duration) -> Verdict {
    let deadline = Instant::now() + budget;
    let mut by_key: BTreeMap<u32, Vec<Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key).or_default().push(op.clone());
    }
    let mut verdict = Verdict::Linearizable;
    for (key, ops) in by_key {
        match check_key(&ops, deadline) {
            Search::Found => {}
            Search::Impossible => return Verdict::Illegal { key },
            Search::OutOfTime => verdict = Verdict::Unknown { key },
        }
    }
    verdict
}

enum Search {
    Found,
    Impossible,
    OutOfTime,
}

/// One event of the linked list: the call or the return of `op`.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// The doubly linked event list of Lowe's algorithm. Slot 0 is the head
/// sentinel; `NIL` ends the list. A lifted call and its return keep their own
/// links, so unlifting in reverse order restores them exactly.
struct Events {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each operation, the slot of its call and of its return.
    call_slot: Vec<usize>,
    return_slot: Vec<usize>,
}

const NIL: usize = usize::MAX;

impl Events {
    fn new(ops: &[Operation]) -> Events {
        // (time, calls before returns at equal times, op); unknown returns last.
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call_ns, 0, i));
            order.push((op.return_ns.unwrap_or(u64::MAX), 1, i));
        }
        order.sort_unstable();
        let slots = order.len() + 1;
        let mut list = Events {
            events: vec![Event { op: NIL, is_call: false }; slots],
            next: (1..=slots).map(|n| if n == slots { NIL } else { n }).collect(),
            prev: (0..slots).map(|n| n.wrapping_sub(1)).collect(),
            call_slot: vec![0; ops.len()],
            return_slot: vec![0; ops.len()],
        };
        for (i, (_, kind, op)) in order.into_iter().enumerate() {
            let slot = i + 1;
            list.events[slot] = Event { op, is_call: kind == 0 };
            if kind == 0 {
                list.call_slot[op] = slot;
            } else {
                list.return_slot[op] = slot;
            }
        }
        list
    }

    fn unlink(&mut self, slot: usize) {
        let (p, n) = (self.prev[slot], self.next[slot]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, slot: usize) {
        let (p, n) = (self.prev[slot], self.next[slot]);
        self.next[p] = slot;
        if n != NIL {
            self.prev[n] = slot;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_slot[op]);
        self.unlink(self.return_slot[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.return_slot[op]);
        self.relink(self.call_slot[op]);
    }
}

/// A choice made during the search: `op` linearized from `before`, using the
/// `choice`-th of its possible next states.
struct Frame {
    op: usize,
    before: KeyState,
    choice: usize,
}

fn check_key(ops: &[Operation], deadline: Instant) -> Search {
    let mut list = Events::new(ops);
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, KeyState)> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = EMPTY;
    let mut slot = list.next[0];
    let mut first_choice = 0;
    let mut steps: u64 = 0;
    while slot != NIL {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > deadline {
            return Search::OutOfTime;
        }
        let event = list.events[slot];
        if event.is_call {
            if let Some((next, choice)) =
                try_linearize(ops, event.op, state, first_choice, &linearized, &mut seen)
            {
                set_bit(&mut linearized, event.op, true);
                stack.push(Frame { op: event.op, before: state, choice });
                list.lift(event.op);
                state = next;
                slot = list.next[0];
            } else {
                slot = list.next[slot];
            }
            first_choice = 0;
            continue;
        }
        // A return before its call was linearized: undo the last choice and
        // try its next alternative.
        let Some(frame) = stack.pop() else { return Search::Impossible };
        list.unlift(frame.op);
        set_bit(&mut linearized, frame.op, false);
        state = frame.before;
        slot = list.call_slot[frame.op];
        first_choice = frame.choice + 1;
    }
    Search::Found
}

/// The first possible next state, from `first_choice` on, that leads to an
/// unexplored (linearized set, state) pair; the pair is then remembered.
fn try_linearize(
    ops: &[Operation],
    index: usize,
    state: KeyState,
    first_choice: usize,
    linearized: &[u64],
    seen: &mut HashSet<(Vec<u64>, KeyState)>,
) -> Option<(KeyState, usize)> {
    let op = &ops[index];
    for (choice, next) in step(state, op).into_iter().enumerate().skip(first_choice) {
        let next = pin(next, op);
        let mut bits = linearized.to_vec();
        set_bit(&mut bits, index, true);
        if seen.insert((bits, next)) {
            return Some((next, choice));
        }
    }
    None
}

fn set_bit(bits: &mut [u64], index: usize, on: bool) {
    let mask = 1u64 << (index % 64);
    if on {
        bits[index / 64] |= mask;
    } else {
        bits[index / 64] &= !mask;
    }
}

/// The weaker rule for serializable reads, which a member answers from its
/// own state and so may be stale: per client, header revisions never go
/// backwards; every value seen was written by an operation invoked before the
/// read returned; and a key is never newer than the header that carries it.
pub fn check_serializable(writes: &[Operation], reads: &[Operation]) -> Result<(), String> {
    let mut last_header: BTreeMap<usize, i64> = BTreeMap::new();
    let mut ordered: Vec<&Operation> = reads.iter().collect();
    ordered.sort_by_key(|op| op.call_ns);
    for read in ordered {
        let Output::Get { kv, header_revision } = read.output else { continue };
        let last = last_header.entry(read.client).or_insert(0);
        if header_revision < *last {
            return Err(format!(
                "client {} read revision {header_revision} after {last}",
                read.client
            ));
        }
        *last = header_revision;
        let Some(seen) = kv else { continue };
        if seen.mod_revision > header_revision {
            return Err(format!(
                "key {} at {} under header {header_revision}",
                read.key, seen.mod_revision
            ));
        }
        if !was_written(writes, read, seen.value) {
            return Err(format!("key {} holds {:#x}, never written before", read.key, seen.value));
        }
    }
    Ok(())
}

fn was_written(writes: &[Operation], read: &Operation, value: Value) -> bool {
    let returned = read.return_ns.unwrap_or(u64::MAX);
    writes.iter().any(|w| {
        let wrote = match w.input {
            Input::Put { value: v } | Input::Cas { value: v, .. } => v == value,
            Input::Get | Input::Delete => false,
        };
        wrote && w.key == read.key && w.call_ns <= returned
    })
}

/// Acknowledged writes missing from the final state: for each key, the final
/// read (`final_kvs`, taken after all faults healed) must be at least as new
/// as every write the cluster acknowledged on that key.
pub fn acked_lost(ops: &[Operation], final_kvs: &BTreeMap<u32, Option<Observed>>) -> usize {
    let mut lost = 0;
    for (key, kv) in final_kvs {
        let newest_ack = ops
            .iter()
            .filter(|op| op.key == *key)
            .filter_map(|op| acked_write_revision(&op.output))
            .max()
            .unwrap_or(0);
        let final_revision = match kv {
            Some(seen) => seen.mod_revision,
            // Absent: the newest change must have been a delete, which the
            // read cannot show; count a loss only if no delete could explain it.
            None if deletes_after(ops, *key, newest_ack) => newest_ack,
            None => 0,
        };
        lost += ops
            .iter()
            .filter(|op| op.key == *key)
            .filter(|op| acked_write_revision(&op.output).is_some_and(|r| r > final_revision))
            .count();
    }
    lost
}

fn acked_write_revision(output: &Output) -> Option<i64> {
    match *output {
        Output::Put { revision } => Some(revision),
        Output::Delete { deleted: true, revision } => Some(revision),
        Output::Cas { succeeded: true, revision } => Some(revision),
        _ => None,
    }
}

/// Whether a delete on `key` took effect, or may have, at or after `revision`.
fn deletes_after(ops: &[Operation], key: u32, revision: i64) -> bool {
    ops.iter().filter(|op| op.key == key && op.input == Input::Delete).any(|op| match op.output {
        Output::Delete { deleted: true, revision: r } => r >= revision,
        Output::Unknown => true,
        _ => false,
    })
}
