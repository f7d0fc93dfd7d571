//! The limits more than one layer enforces, each defined once with the
//! reason for its number, and the decoding budget that bounds every txn
//! decoded from outside: client frames, Raft entries (from a peer or
//! replayed from the WAL) and snapshot payloads alike.
//!
//! Names put the quantity first and the qualifier last
//! (`TXN_DEPTH_MAX`, `REQUEST_BYTES_MAX_DEFAULT`). Limits that only one
//! module knows about stay beside the code they bound.
//!
//! The budget is serde glue: a txn's `Deserialize` enters a `DepthGuard`
//! for each level and decodes its lists through `txn_list`, which counts
//! every compare and op of the whole tree. A nested txn of any depth, from
//! any source, is refused after `TXN_DEPTH_MAX` stack frames instead of
//! overflowing the stack.

use std::cell::Cell;

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The deepest nesting of txns inside txns that decodes. Each level costs a
/// few bytes on the wire but a chain of stack frames when decoding,
/// checking and applying, so without a bound a 1.5 MiB request (or a Raft
/// entry forged by a peer) could nest deep enough to overflow the stack of
/// every member. etcd has no fixed depth; eight is far beyond what
/// applications write.
pub const TXN_DEPTH_MAX: usize = 8;

/// The most compares and ops one txn may hold, all levels together, before
/// decoding stops. A delete op is 4 bytes on the wire but 104 in memory, so
/// without a count a 1.5 MiB body would grow to some 80 MiB (with the
/// vectors' doubling) before validation could refuse it. 16384 items cost at
/// most about 3.5 MiB; validation's configurable limit
/// (`--max-txn-ops` × `TXN_DEPTH_MAX`) sits below it for `--max-txn-ops`
/// up to 2048.
pub const TXN_ITEMS_MAX: usize = 16 * 1024;

/// etcd's `--max-txn-ops` default: compares, and ops per branch, per level.
pub const TXN_OPS_MAX_DEFAULT: usize = 128;

/// etcd's default `--max-request-bytes`: 1.5 MiB. The frame cap a server
/// announces by default, and so the largest request body it buffers.
pub const REQUEST_BYTES_MAX_DEFAULT: u32 = 1536 * 1024;

/// The largest `--max-request-bytes` accepted: a request must fit in a Raft
/// entry, and an entry in one WAL segment (8 MiB by default) with room to
/// spare for the command around it; and in a board's memory several times
/// over. Proposals are checked against the WAL's bound as well.
pub const REQUEST_BYTES_MAX_CONFIGURABLE: u32 = 4 * 1024 * 1024;

/// etcd's `MaxLeaseTTL`: 9,000,000,000 seconds, about 285 years.
pub const LEASE_TTL_SECS_MAX: i64 = 9_000_000_000;

/// Leases a cluster keeps by default; `--max-leases` changes it.
pub const LEASES_MAX_DEFAULT: u32 = 10_000;

/// What the txn being decoded on this thread has used so far.
#[derive(Clone, Copy)]
struct TxnBudget {
    /// Txn levels open; 0 when no txn is being decoded.
    depth: usize,
    /// Compares and ops decoded since the outermost txn opened; decoding
    /// fails as soon as it passes `TXN_ITEMS_MAX`.
    items: usize,
}

thread_local! {
    /// Decoding is synchronous, so a per-thread count is exact; the guard
    /// restores the depth on every exit, errors included.
    static TXN_BUDGET: Cell<TxnBudget> = const { Cell::new(TxnBudget { depth: 0, items: 0 }) };
}

/// Held while one txn level decodes; refuses to open a level past the bound.
pub(crate) struct DepthGuard(());

impl DepthGuard {
    pub(crate) fn enter<E: Error>() -> Result<DepthGuard, E> {
        let mut budget = TXN_BUDGET.with(Cell::get);
        if budget.depth >= TXN_DEPTH_MAX {
            return Err(E::custom("txn nested deeper than TXN_DEPTH_MAX"));
        }
        if budget.depth == 0 {
            budget.items = 0;
        }
        budget.depth += 1;
        TXN_BUDGET.with(|b| b.set(budget));
        Ok(DepthGuard(()))
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        TXN_BUDGET.with(|b| {
            let budget = b.get();
            b.set(TxnBudget { depth: budget.depth - 1, ..budget });
        });
    }
}

/// A txn level's compares, success ops and failure ops.
pub(crate) type TxnLists<C, O> = (Vec<C>, Vec<O>, Vec<O>);

/// One txn level as the wire carries it: compares, success ops, failure
/// ops, each list counted against the budget.
#[derive(Deserialize)]
#[serde(bound = "C: Deserialize<'de>, O: Deserialize<'de>")]
struct TxnWire<C, O> {
    #[serde(deserialize_with = "txn_list")]
    compare: Vec<C>,
    #[serde(deserialize_with = "txn_list")]
    success: Vec<O>,
    #[serde(deserialize_with = "txn_list")]
    failure: Vec<O>,
}

/// For a txn type's `Deserialize`: decodes one level (compares, success
/// ops, failure ops) inside the budget, refusing a level past
/// `TXN_DEPTH_MAX`.
pub(crate) fn txn_level<'de, D, C, O>(deserializer: D) -> Result<TxnLists<C, O>, D::Error>
where
    D: Deserializer<'de>,
    C: Deserialize<'de>,
    O: Deserialize<'de>,
{
    let _level = DepthGuard::enter::<D::Error>()?;
    let wire = TxnWire::<C, O>::deserialize(deserializer)?;
    Ok((wire.compare, wire.success, wire.failure))
}

/// For `#[serde(deserialize_with = ...)]` on a txn's lists: decodes a list,
/// counting each item against `TXN_ITEMS_MAX`.
fn txn_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    deserializer.deserialize_seq(TxnListVisitor(std::marker::PhantomData))
}

struct TxnListVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for TxnListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of txn compares or ops")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // The length on the wire is only a claim; grow as items really arrive.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(item) = seq.next_element()? {
            let used = TXN_BUDGET.with(|b| {
                let budget = TxnBudget { items: b.get().items + 1, ..b.get() };
                b.set(budget);
                budget.items
            });
            if used > TXN_ITEMS_MAX {
                return Err(A::Error::custom("txn holds more than TXN_ITEMS_MAX compares and ops"));
            }
            items.push(item);
        }
        Ok(items)
    }
}
