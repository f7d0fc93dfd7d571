//! Serde glue for byte strings (keys, values), and the decoding budget that
//! bounds how deep a txn nests and how many items it holds.
//!
//! Postcard writes a `Vec<u8>` the same way whether it goes through serde's
//! sequence path or its bytes path (a varint length, then the raw bytes), so
//! the wire format is unchanged; the bytes path copies the field with one
//! `memcpy` instead of visiting each byte.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::cell::Cell;

/// For `#[serde(with = "crate::proto::bytes")]` on `Vec<u8>` fields.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// For `#[serde(with = "crate::proto::bytes")]` on `Vec<u8>` fields.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(ByteBufVisitor)
}

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Only self-describing formats get here; the hint is capped so a lying
        // length cannot reserve memory the input does not back.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

/// The deepest nesting of txns inside txns that decodes. Each level costs a
/// few bytes on the wire but a chain of stack frames when decoding, so
/// without a bound a 1.5 MiB request could nest deep enough to overflow the
/// stack. etcd has no fixed depth; eight is far beyond what applications
/// write.
pub const MAX_TXN_DEPTH: u32 = 8;

/// The most compares and ops one txn may hold, all levels together, before
/// decoding stops. A delete op is 4 bytes on the wire but 104 in memory, so
/// without a count a 1.5 MiB body would grow to some 80 MiB (with the
/// vectors' doubling) before validation could refuse it. 16384 items cost at
/// most about 3.5 MiB; validation's configurable limit
/// (`--max-txn-ops` × `MAX_TXN_DEPTH`) sits below it for `--max-txn-ops`
/// up to 2048.
pub const MAX_TXN_ITEMS: usize = 16 * 1024;

/// What the txn being decoded on this thread has used so far.
#[derive(Clone, Copy)]
struct TxnBudget {
    /// Txn levels open; 0 when no txn is being decoded.
    depth: u32,
    /// Compares and ops decoded since the outermost txn opened; decoding
    /// fails as soon as it passes `MAX_TXN_ITEMS`.
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
        if budget.depth >= MAX_TXN_DEPTH {
            return Err(E::custom("txn nested deeper than MAX_TXN_DEPTH"));
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

/// For `#[serde(deserialize_with = ...)]` on a txn's lists: decodes a list,
/// counting each item against `MAX_TXN_ITEMS`.
pub(crate) fn txn_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
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
            if used > MAX_TXN_ITEMS {
                return Err(A::Error::custom("txn holds more than MAX_TXN_ITEMS compares and ops"));
            }
            items.push(item);
        }
        Ok(items)
    }
}
