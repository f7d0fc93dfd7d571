//! Serde glue for byte strings (keys, values). The decoding budget that
//! bounds how deep a txn nests and how many items it holds is
//! `crate::limits`, shared with the replicated entries.
//!
//! Postcard writes a `Vec<u8>` the same way whether it goes through serde's
//! sequence path or its bytes path (a varint length, then the raw bytes), so
//! the wire format is unchanged; the bytes path copies the field with one
//! `memcpy` instead of visiting each byte.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

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
