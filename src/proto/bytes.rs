//! Serde glue for byte strings (keys, values) and the nesting guard for txns.
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
/// few bytes on the wire but a stack frame chain when decoding, so without a
/// bound a 1.5 MiB request could nest deep enough to overflow the stack.
/// etcd has no fixed depth; eight is far beyond what applications write.
pub const MAX_TXN_DEPTH: u32 = 8;

thread_local! {
    /// Txn levels open in the decoder running on this thread. Decoding is
    /// synchronous, so the count is exact; the guard restores it on every exit.
    static TXN_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Held while one txn level decodes; refuses to open a level past the bound.
pub(crate) struct DepthGuard(());

impl DepthGuard {
    pub(crate) fn enter<E: Error>() -> Result<DepthGuard, E> {
        let depth = TXN_DEPTH.with(Cell::get);
        if depth >= MAX_TXN_DEPTH {
            return Err(E::custom("txn nested deeper than MAX_TXN_DEPTH"));
        }
        TXN_DEPTH.with(|d| d.set(depth + 1));
        Ok(DepthGuard(()))
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        TXN_DEPTH.with(|d| d.set(d.get() - 1));
    }
}
