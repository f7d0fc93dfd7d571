//! The record of one key: its bytes and every retained version, packed into a
//! single heap block.
//!
//! ```text
//! block   = varint(key_len) key version* [END padding]
//! version = flags:u8 varint(main) varint(sub)
//!           [varint(create) varint(version)]   if EXPLICIT
//!           [varint(lease as u64)]             if LEASE
//!           [varint(value_len) value]          unless TOMBSTONE
//! ```
//!
//! Versions are stored newest first, so the common read (the latest
//! version) touches only the cache lines right after the key, whatever the
//! size of the older values. A version's create revision and version are
//! implied by the newer version after it in time: if that one continues the
//! generation (a put with version > 1), this one is (same create, version − 1);
//! otherwise this one is taken to start a generation (create = its own main
//! revision, version 1). Only versions that break the rule (the newest one
//! once a key has been updated, a put followed by a delete, the oldest one
//! left by a compaction) carry EXPLICIT fields. A put therefore costs a flag
//! byte, 1–4 bytes of main revision, 1 byte of sub revision and 1–3 bytes of
//! value length on top of its value, plus up to 4 bytes on the newest.
//!
//! Growth: a new version goes in front of the others. While a block is at
//! most [`GROW_EXACT_BYTES`] it is rebuilt at its exact size, so the common
//! few-version key carries no slack; larger blocks grow by half, with the
//! unused tail starting with an [`END`] byte, and later puts shift the block
//! in place instead of reallocating it.

use super::types::KeyValue;

const TOMBSTONE: u8 = 1;
const LEASE: u8 = 2;
const EXPLICIT: u8 = 4;
/// Marks the unused tail of a block; never a valid flags byte.
const END: u8 = 0xff;

/// Blocks up to this size are kept exact; beyond it they grow by half. 4 KiB
/// is a page: below it the copy is cheaper than the slack would be.
pub(crate) const GROW_EXACT_BYTES: usize = 4096;

/// How far into a block a scan warms it: a key and a 256-byte value.
const WARM_BYTES: usize = 320;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*at`; `None` when the bytes end early or it overflows.
pub(crate) fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if shift == 63 && b > 1 {
            return None;
        }
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// One decoded version; `value` borrows from the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version<'a> {
    pub main: u64,
    pub sub: u32,
    pub tombstone: bool,
    /// 0 for tombstones.
    pub create: u64,
    /// 0 for tombstones.
    pub version: u64,
    pub lease: i64,
    pub value: &'a [u8],
}

impl Version<'_> {
    /// The same version without its value, free of the block's lifetime.
    pub(crate) fn meta(&self) -> Version<'static> {
        Version {
            main: self.main,
            sub: self.sub,
            tombstone: self.tombstone,
            create: self.create,
            version: self.version,
            lease: self.lease,
            value: &[],
        }
    }

    pub(crate) fn to_kv(self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create,
            mod_revision: self.main,
            version: self.version,
            value: self.value.to_vec(),
            lease: self.lease,
        }
    }

    /// The (create, version) implied for a put whose next newer version is
    /// `newer`.
    fn implied_before(newer: Option<&Version<'_>>, main: u64) -> (u64, u64) {
        match newer {
            Some(n) if !n.tombstone && n.version > 1 => (n.create, n.version - 1),
            _ => (main, 1),
        }
    }
}

/// A key's block. Empty (no allocation) marks a free slot in the key table.
#[derive(Debug, Default)]
pub(crate) struct Block(Box<[u8]>);

impl Block {
    /// A block with the key and no version yet.
    pub(crate) fn new(key: &[u8]) -> Block {
        let mut out = Vec::with_capacity(key.len() + 3);
        put_varint(&mut out, key.len() as u64);
        out.extend_from_slice(key);
        Block(out.into_boxed_slice())
    }

    pub(crate) fn is_free(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the first byte and the one a cache line past the newest
    /// value's likely end, so a scan can start the block's cache misses
    /// early and overlap them. The sum means nothing.
    pub(crate) fn warm(&self) -> usize {
        let far = self.0.len().min(WARM_BYTES).saturating_sub(1);
        usize::from(self.0.first().copied().unwrap_or(0))
            + usize::from(self.0.get(far).copied().unwrap_or(0))
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.len()
    }

    fn key_end(&self) -> usize {
        let mut at = 0;
        let len = get_varint(&self.0, &mut at).expect("block key length");
        at + len as usize
    }

    pub(crate) fn key(&self) -> &[u8] {
        let mut at = 0;
        let len = get_varint(&self.0, &mut at).expect("block key length") as usize;
        &self.0[at..at + len]
    }

    /// Versions from the newest to the oldest.
    pub(crate) fn newest_first(&self) -> Versions<'_> {
        Versions { bytes: &self.0, at: self.key_end(), newer: None }
    }

    /// Versions from the oldest to the newest.
    pub(crate) fn oldest_first(&self) -> Vec<Version<'_>> {
        let mut all: Vec<Version<'_>> = self.newest_first().collect();
        all.reverse();
        all
    }

    /// The newest version, if any.
    pub(crate) fn latest(&self) -> Option<Version<'_>> {
        self.newest_first().next()
    }

    /// The newest version with main revision ≤ `rev`.
    pub(crate) fn at(&self, rev: u64) -> Option<Version<'_>> {
        self.newest_first().find(|v| v.main <= rev)
    }

    /// The live key-value at `rev` (none if absent or deleted then).
    pub(crate) fn live_at(&self, rev: u64) -> Option<Version<'_>> {
        self.at(rev).filter(|v| !v.tombstone)
    }

    /// Puts a version newer than every version held in front of them.
    pub(crate) fn push(&mut self, v: &Version<'_>) {
        let head_at = self.key_end();
        let mut versions = self.newest_first();
        let old_head = versions.next();
        let rest_at = versions.at;
        let used = self.used_bytes(rest_at);
        debug_assert!(old_head.is_none_or(|h| (h.main, h.sub) < (v.main, v.sub)));
        // The new head, then the old head again: its create and version may
        // now be implied by the new one, so it is re-encoded.
        let mut front = Vec::with_capacity(v.value.len() + 24);
        encode_version(&mut front, None, v);
        if let Some(h) = &old_head {
            encode_version(&mut front, Some(v), h);
        }
        let needed = head_at + front.len() + (used - rest_at);
        if needed > self.0.len() {
            let capacity = if needed <= GROW_EXACT_BYTES { needed } else { needed + needed / 2 };
            let mut grown = Vec::with_capacity(capacity);
            grown.extend_from_slice(&self.0[..head_at]);
            grown.extend_from_slice(&front);
            grown.extend_from_slice(&self.0[rest_at..used]);
            grown.resize(capacity, END);
            self.0 = grown.into_boxed_slice();
            return;
        }
        let shift_to = head_at + front.len();
        self.0.copy_within(rest_at..used, shift_to);
        self.0[head_at..shift_to].copy_from_slice(&front);
        if let Some(b) = self.0.get_mut(needed) {
            *b = END;
        }
    }

    /// Bytes in use, given where the versions after the head start. Blocks
    /// up to GROW_EXACT_BYTES never carry slack, so only large ones scan.
    fn used_bytes(&self, from: usize) -> usize {
        if self.0.len() <= GROW_EXACT_BYTES {
            return self.0.len();
        }
        let mut it = Versions { bytes: &self.0, at: from, newer: None };
        while it.next().is_some() {}
        it.at
    }

    /// Rebuilds the block keeping only the versions `keep` selects (by index
    /// from the oldest); returns false when none is left (the caller frees
    /// the key).
    pub(crate) fn retain(&mut self, keep: impl Fn(usize, &Version<'_>) -> bool) -> bool {
        let key = self.key().to_vec();
        let all = self.oldest_first();
        let kept: Vec<Version<'_>> =
            all.iter().enumerate().filter(|(i, v)| keep(*i, v)).map(|(_, v)| *v).collect();
        if kept.is_empty() {
            self.0 = Box::default();
            return false;
        }
        let new = encode_block(&key, &kept);
        self.0 = new.0;
        true
    }
}

/// A whole block from a key and its versions (oldest first).
pub(crate) fn encode_block(key: &[u8], versions: &[Version<'_>]) -> Block {
    let mut out = Vec::new();
    put_varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    let mut newer: Option<&Version<'_>> = None;
    for v in versions.iter().rev() {
        encode_version(&mut out, newer, v);
        newer = Some(v);
    }
    Block(out.into_boxed_slice())
}

fn encode_version(out: &mut Vec<u8>, newer: Option<&Version<'_>>, v: &Version<'_>) {
    let implied = Version::implied_before(newer, v.main);
    let explicit = !v.tombstone && implied != (v.create, v.version);
    let mut flags = 0;
    if v.tombstone {
        flags |= TOMBSTONE;
    }
    if v.lease != 0 && !v.tombstone {
        flags |= LEASE;
    }
    if explicit {
        flags |= EXPLICIT;
    }
    out.push(flags);
    put_varint(out, v.main);
    put_varint(out, u64::from(v.sub));
    if explicit {
        put_varint(out, v.create);
        put_varint(out, v.version);
    }
    if flags & LEASE != 0 {
        put_varint(out, v.lease as u64);
    }
    if !v.tombstone {
        put_varint(out, v.value.len() as u64);
        out.extend_from_slice(v.value);
    }
}

/// Decodes versions from the newest. Blocks are only ever written by this
/// module, so a decoding failure is a broken invariant and panics.
pub(crate) struct Versions<'a> {
    bytes: &'a [u8],
    at: usize,
    newer: Option<Version<'static>>,
}

impl<'a> Iterator for Versions<'a> {
    type Item = Version<'a>;

    fn next(&mut self) -> Option<Version<'a>> {
        let flags = *self.bytes.get(self.at)?;
        if flags == END {
            return None;
        }
        let bytes = self.bytes;
        let mut at = self.at + 1;
        let mut varint = || get_varint(bytes, &mut at).expect("block varint");
        let main = varint();
        let sub = varint() as u32;
        let tombstone = flags & TOMBSTONE != 0;
        let (mut create, mut version) = Version::implied_before(self.newer.as_ref(), main);
        if flags & EXPLICIT != 0 {
            create = varint();
            version = varint();
        }
        let lease = if flags & LEASE != 0 { varint() as i64 } else { 0 };
        let mut value: &'a [u8] = &[];
        if tombstone {
            (create, version) = (0, 0);
        } else {
            let len = varint() as usize;
            value = &bytes[at..at + len];
            at += len;
        }
        self.at = at;
        let v = Version { main, sub, tombstone, create, version, lease, value };
        self.newer = Some(v.meta());
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: u64, create: u64, version: u64, value: &[u8]) -> Version<'_> {
        Version { main, sub: 0, tombstone: false, create, version, lease: 0, value }
    }

    #[test]
    fn versions_round_trip_with_implied_fields() {
        let mut b = Block::new(b"/a/key");
        b.push(&put(2, 2, 1, b"one"));
        b.push(&Version { lease: 7, sub: 3, ..put(5, 2, 2, b"two") });
        b.push(&Version { tombstone: true, ..put(9, 0, 0, b"") });
        b.push(&put(12, 12, 1, b"again"));
        let got = b.oldest_first();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1], Version { lease: 7, sub: 3, ..put(5, 2, 2, b"two") });
        assert!(got[2].tombstone);
        assert_eq!(got[3], put(12, 12, 1, b"again"));
        assert_eq!(b.key(), b"/a/key");
        assert_eq!(b.at(10).map(|v| v.main), Some(9));
        assert!(b.live_at(10).is_none());
        assert_eq!(b.live_at(8).map(|v| v.value), Some(&b"two"[..]));
    }

    #[test]
    fn retain_makes_the_first_survivor_explicit() {
        let mut b = Block::new(b"k");
        for (i, main) in [3u64, 4, 8].iter().enumerate() {
            b.push(&put(*main, 3, i as u64 + 1, b"v"));
        }
        assert!(b.retain(|i, _| i >= 1));
        let got: Vec<_> = b.oldest_first().iter().map(|v| (v.main, v.create, v.version)).collect();
        assert_eq!(got, vec![(4, 3, 2), (8, 3, 3)]);
        assert!(!b.retain(|_, _| false));
        assert!(b.is_free());
    }

    #[test]
    fn large_blocks_grow_with_slack_and_stay_readable() {
        let mut b = Block::new(b"hot");
        let value = [7u8; 1000];
        for main in 2..40u64 {
            b.push(&put(main, 2, main - 1, &value));
        }
        assert!(b.heap_bytes() > 38 * 1000);
        let versions: Vec<u64> = b.oldest_first().iter().map(|v| v.version).collect();
        assert_eq!(versions, (1..=38).collect::<Vec<u64>>());
        assert!(b.oldest_first().iter().all(|v| v.value == value && v.create == 2));
        assert_eq!(b.oldest_first()[0].version, 1);
        assert_eq!(b.latest().map(|v| v.version), Some(38));
    }

    #[test]
    fn varints_reject_overflow_and_truncation() {
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        let mut at = 0;
        assert_eq!(get_varint(&out, &mut at), Some(u64::MAX));
        let mut at = 0;
        assert_eq!(get_varint(&out[..3], &mut at), None);
        let mut at = 0;
        assert_eq!(get_varint(&[0xff; 11], &mut at), None);
    }
}
