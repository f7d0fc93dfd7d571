//! The ordered index: a B+tree of key ids.
//!
//! Leaves hold 4-byte key ids; the key bytes live once, in the key's block
//! (see `block.rs`), and the tree reads them through [`KeySource`]. Reading a
//! key is a cache miss into the key table and another into the block, so a
//! leaf also keeps, per id, a 4-byte *hint*: the key's four bytes after the
//! prefix all keys of the leaf share, which the leaf stores inline (up to 52
//! bytes). A search compares the key with the prefix once, then binary
//! searches the hints and reads key bytes only where two hints tie. For
//! `/registry/pods/namespace-N/pod-M` keys a leaf usually holds one or two
//! namespaces, and a lookup reads one or two keys instead of six.
//!
//! ```text
//! leaf (512 bytes, 8 cache lines)
//!   0..12    len:u16 prefix_len:u16 prev:u32 next:u32
//!   12..64   prefix bytes
//!   64..288  hints: 56 × u32
//!   288..512 ids:   56 × u32
//! ```
//!
//! At the 70% fill random inserts give, that is 13 bytes per key; keys
//! written in order fill leaves completely (9 bytes per key). Leaves are
//! doubly linked, so ordered scans walk the chain without climbing the tree.
//!
//! Inner nodes hold up to [`INNER_CAP`] children and the separators between
//! them as truncated copies of keys packed in one byte buffer: the separator
//! between two leaves is the shortest prefix of the right leaf's first key
//! that is still greater than the left leaf's last key, which for
//! Kubernetes-style keys is usually a few bytes past the shared prefix.
//! Separators are bounds, not keys, so deleting a key never touches them.
//! Like leaves, inner nodes keep a 4-byte hint per separator after the
//! separators' shared prefix, so the binary search reads separator bytes
//! only on ties. Inner nodes are few (about one per 2,000 keys), so their
//! separate allocations cost well under a byte per key.
//!
//! Nodes live in chunked arenas addressed by `u32` and are recycled through
//! free lists. Appending past the last key fills leaves completely (the split
//! leaves the full node alone); other splits halve the node. A node that
//! drops below a quarter full is merged into a neighbour when both fit.

use super::chunked::ChunkedVec;

/// Ids per leaf. A leaf is 512 bytes, eight cache lines: the first holds
/// the header and the shared prefix, the next three and a half the hints,
/// the rest the ids.
pub(crate) const LEAF_CAP: usize = 56;
/// Bytes of shared prefix a leaf keeps inline: 64 − 12 header bytes. Keys
/// sharing a longer prefix still work; their hints just start at byte 52.
const PREFIX_CAP: usize = 52;
/// Children per inner node. A search reads the node's hints (4 cache lines
/// at most, binary searched) and one child id; 100,000 keys need about
/// 2,500 leaves under two inner levels. With 32 children a third level
/// appeared and gets were measurably slower (benches/mvcc.rs).
pub(crate) const INNER_CAP: usize = 64;
const NIL: u32 = u32::MAX;

/// Where the tree finds the bytes of a key id.
pub(crate) trait KeySource {
    fn key_of(&self, id: u32) -> &[u8];
}

/// The four key bytes after `prefix_len`, big-endian and zero-padded, so
/// that a < b implies hint(a) ≤ hint(b) for keys sharing the prefix.
fn hint(key: &[u8], prefix_len: usize) -> u32 {
    let mut bytes = [0u8; 4];
    let tail = key.get(prefix_len..).unwrap_or(&[]);
    let n = tail.len().min(4);
    bytes[..n].copy_from_slice(&tail[..n]);
    u32::from_be_bytes(bytes)
}

const _: () = assert!(size_of::<Leaf>() == 512);

#[derive(Clone)]
struct Leaf {
    /// Invariant: ids[..len] are in strictly ascending key order.
    len: u16,
    /// Invariant: every key of the leaf starts with prefix[..prefix_len],
    /// and hints[i] == hint(key of ids[i], prefix_len).
    prefix_len: u16,
    prev: u32,
    next: u32,
    prefix: [u8; PREFIX_CAP],
    hints: [u32; LEAF_CAP],
    ids: [u32; LEAF_CAP],
}

impl Leaf {
    fn empty() -> Leaf {
        Leaf {
            len: 0,
            prefix_len: 0,
            prev: NIL,
            next: NIL,
            prefix: [0; PREFIX_CAP],
            hints: [0; LEAF_CAP],
            ids: [0; LEAF_CAP],
        }
    }

    fn ids(&self) -> &[u32] {
        &self.ids[..self.len as usize]
    }

    fn prefix(&self) -> &[u8] {
        &self.prefix[..self.prefix_len as usize]
    }

    /// Binary search on the hints; key bytes are read only when two hints
    /// tie, so a lookup usually touches one key: the one it finds.
    fn search(&self, keys: &impl KeySource, key: &[u8]) -> Result<usize, usize> {
        if !key.starts_with(self.prefix()) {
            // Every key here starts with the prefix, so all are on one side.
            return Err(if key < self.prefix() { 0 } else { self.len as usize });
        }
        let h = hint(key, self.prefix_len as usize);
        let (mut lo, mut hi) = (0, self.len as usize);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let ord = match self.hints[mid].cmp(&h) {
                std::cmp::Ordering::Equal => keys.key_of(self.ids[mid]).cmp(key),
                other => other,
            };
            match ord {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    fn insert(&mut self, keys: &impl KeySource, pos: usize, key: &[u8], id: u32) {
        let len = self.len as usize;
        self.ids.copy_within(pos..len, pos + 1);
        self.hints.copy_within(pos..len, pos + 1);
        self.ids[pos] = id;
        self.len += 1;
        if key.starts_with(self.prefix()) && len > 0 {
            self.hints[pos] = hint(key, self.prefix_len as usize);
        } else {
            self.rebuild_hints(keys);
        }
    }

    fn remove(&mut self, pos: usize) -> u32 {
        let len = self.len as usize;
        let id = self.ids[pos];
        self.ids.copy_within(pos + 1..len, pos);
        self.hints.copy_within(pos + 1..len, pos);
        self.len -= 1;
        id
    }

    /// Sets the prefix to what the first and last keys share (so all do)
    /// and recomputes every hint.
    fn rebuild_hints(&mut self, keys: &impl KeySource) {
        let len = self.len as usize;
        if len == 0 {
            self.prefix_len = 0;
            return;
        }
        let first = keys.key_of(self.ids[0]);
        let last = keys.key_of(self.ids[len - 1]);
        let shared = first.iter().zip(last).take_while(|(a, b)| a == b).count().min(PREFIX_CAP);
        self.prefix[..shared].copy_from_slice(&first[..shared]);
        self.prefix_len = shared as u16;
        for i in 0..len {
            self.hints[i] = hint(keys.key_of(self.ids[i]), shared);
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Invariant: 1 ≤ children.len() ≤ INNER_CAP (transiently INNER_CAP + 1
    /// before a split), and ends.len() == children.len() - 1.
    children: Vec<u32>,
    /// ends[i] is where separator i ends in `seps`. Every key under
    /// children[i] is ≥ separator i-1 and < separator i.
    ends: Vec<u32>,
    seps: Vec<u8>,
    /// Invariant: every separator starts with the first prefix_len bytes of
    /// separator 0, and hints[i] == hint(separator i, prefix_len); as in the
    /// leaves, a search reads separator bytes only where hints tie.
    prefix_len: u32,
    hints: Vec<u32>,
}

impl Inner {
    fn sep(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.seps[start..self.ends[i] as usize]
    }

    /// Index of the child whose key range holds `key`: the number of
    /// separators ≤ key.
    fn child_for(&self, key: &[u8]) -> usize {
        let n = self.ends.len();
        if n == 0 {
            return 0;
        }
        let prefix = &self.seps[..self.prefix_len as usize];
        if !key.starts_with(prefix) {
            return if key < prefix { 0 } else { n };
        }
        let h = hint(key, prefix.len());
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let below_or_equal = match self.hints[mid].cmp(&h) {
                std::cmp::Ordering::Equal => self.sep(mid) <= key,
                other => other == std::cmp::Ordering::Less,
            };
            if below_or_equal { lo = mid + 1 } else { hi = mid }
        }
        lo
    }

    /// Recomputes the prefix and hints after a change of separators. Inner
    /// nodes change once per split or merge below them, so this is rare.
    fn reindex(&mut self) {
        let n = self.ends.len();
        self.hints.clear();
        if n == 0 {
            self.prefix_len = 0;
            return;
        }
        let (first, last) = (self.sep(0), self.sep(n - 1));
        let shared = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        self.prefix_len = shared as u32;
        for i in 0..n {
            let h = hint(self.sep(i), shared);
            self.hints.push(h);
        }
    }

    fn insert_sep(&mut self, i: usize, sep: &[u8]) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.seps.splice(start..start, sep.iter().copied());
        self.ends.insert(i, (start + sep.len()) as u32);
        for end in &mut self.ends[i + 1..] {
            *end += sep.len() as u32;
        }
        self.reindex();
    }

    fn remove_sep(&mut self, i: usize) -> Vec<u8> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.remove(i) as usize;
        let sep: Vec<u8> = self.seps.drain(start..end).collect();
        for e in &mut self.ends[i..] {
            *e -= sep.len() as u32;
        }
        self.reindex();
        sep
    }

    /// Splits an overfull node; returns the separator that moves up and the
    /// right half.
    fn split(&mut self) -> (Vec<u8>, Inner) {
        let mid = self.children.len() / 2;
        let mut right = Inner { children: self.children.split_off(mid), ..Inner::default() };
        for i in mid..self.ends.len() {
            right.insert_sep(i - mid, self.sep(i));
        }
        let cut = self.ends[mid - 1] as usize;
        let up_start = if mid >= 2 { self.ends[mid - 2] as usize } else { 0 };
        let up = self.seps[up_start..cut].to_vec();
        self.ends.truncate(mid - 1);
        self.seps.truncate(up_start);
        self.reindex();
        (up, right)
    }
}

/// A position in the leaf chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    leaf: u32,
    pos: u32,
}

enum Grow {
    Done,
    Exists(u32),
    Split(Vec<u8>, u32),
}

pub(crate) struct Tree {
    leaves: ChunkedVec<Leaf, 64>,
    free_leaves: Vec<u32>,
    inners: ChunkedVec<Inner, 16>,
    free_inners: Vec<u32>,
    root: u32,
    /// 0 when the root is a leaf; children of nodes at height 1 are leaves.
    height: u32,
    len: usize,
}

impl Default for Tree {
    fn default() -> Self {
        let mut leaves = ChunkedVec::default();
        let root = leaves.push(Leaf::empty()) as u32;
        let inners = ChunkedVec::default();
        Tree {
            leaves,
            free_leaves: Vec::new(),
            inners,
            free_inners: Vec::new(),
            root,
            height: 0,
            len: 0,
        }
    }
}

impl Tree {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn leaf(&self, i: u32) -> &Leaf {
        self.leaves.get(i as usize)
    }

    fn leaf_mut(&mut self, i: u32) -> &mut Leaf {
        self.leaves.get_mut(i as usize)
    }

    fn inner(&self, i: u32) -> &Inner {
        self.inners.get(i as usize)
    }

    fn inner_mut(&mut self, i: u32) -> &mut Inner {
        self.inners.get_mut(i as usize)
    }

    fn alloc_leaf(&mut self) -> u32 {
        match self.free_leaves.pop() {
            Some(i) => {
                *self.leaf_mut(i) = Leaf::empty();
                i
            }
            None => self.leaves.push(Leaf::empty()) as u32,
        }
    }

    fn alloc_inner(&mut self, node: Inner) -> u32 {
        match self.free_inners.pop() {
            Some(i) => {
                *self.inner_mut(i) = node;
                i
            }
            None => self.inners.push(node) as u32,
        }
    }

    fn free_inner(&mut self, i: u32) {
        *self.inner_mut(i) = Inner::default();
        self.free_inners.push(i);
    }

    /// The id stored for `key`.
    pub(crate) fn get(&self, keys: &impl KeySource, key: &[u8]) -> Option<u32> {
        let leaf = self.leaf(self.leaf_for(key));
        leaf.search(keys, key).ok().map(|pos| leaf.ids[pos])
    }

    fn leaf_for(&self, key: &[u8]) -> u32 {
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = self.inner(node);
            node = inner.children[inner.child_for(key)];
        }
        node
    }

    /// Adds `id` under `key` (whose bytes `keys` must already resolve);
    /// returns the id already stored under that key instead, if any.
    pub(crate) fn insert(&mut self, keys: &impl KeySource, key: &[u8], id: u32) -> Result<(), u32> {
        match self.insert_in(keys, self.root, self.height, key, id) {
            Grow::Exists(old) => return Err(old),
            Grow::Done => {}
            Grow::Split(sep, right) => {
                let mut root = Inner { children: vec![self.root, right], ..Inner::default() };
                root.insert_sep(0, &sep);
                self.root = self.alloc_inner(root);
                self.height += 1;
            }
        }
        self.len += 1;
        Ok(())
    }

    fn insert_in(
        &mut self,
        keys: &impl KeySource,
        node: u32,
        height: u32,
        key: &[u8],
        id: u32,
    ) -> Grow {
        if height == 0 {
            return self.insert_leaf(keys, node, key, id);
        }
        let idx = self.inner(node).child_for(key);
        let child = self.inner(node).children[idx];
        let grow = self.insert_in(keys, child, height - 1, key, id);
        let Grow::Split(sep, right) = grow else { return grow };
        let inner = self.inner_mut(node);
        inner.insert_sep(idx, &sep);
        inner.children.insert(idx + 1, right);
        if inner.children.len() <= INNER_CAP {
            return Grow::Done;
        }
        let (up, right) = inner.split();
        Grow::Split(up, self.alloc_inner(right))
    }

    fn insert_leaf(&mut self, keys: &impl KeySource, node: u32, key: &[u8], id: u32) -> Grow {
        let leaf = self.leaf(node);
        let pos = match leaf.search(keys, key) {
            Ok(pos) => return Grow::Exists(leaf.ids[pos]),
            Err(pos) => pos,
        };
        let len = leaf.len as usize;
        if len < LEAF_CAP {
            self.leaf_mut(node).insert(keys, pos, key, id);
            return Grow::Done;
        }
        // Appending at the very end keeps the full leaf as it is, so keys
        // written in order fill leaves completely.
        let appending = pos == len && leaf.next == NIL;
        let mid = if appending { len } else { len / 2 };
        let right = self.alloc_leaf();
        let mut moved = Leaf::empty();
        let left = self.leaf_mut(node);
        moved.ids[..len - mid].copy_from_slice(&left.ids[mid..len]);
        moved.len = (len - mid) as u16;
        left.len = mid as u16;
        (moved.prev, moved.next) = (node, left.next);
        left.next = right;
        if moved.next != NIL {
            self.leaf_mut(moved.next).prev = right;
        }
        moved.rebuild_hints(keys);
        *self.leaf_mut(right) = moved;
        self.leaf_mut(node).rebuild_hints(keys);
        if pos <= mid && !appending {
            self.leaf_mut(node).insert(keys, pos, key, id);
        } else {
            self.leaf_mut(right).insert(keys, pos - mid, key, id);
        }
        let left_last = *self.leaf(node).ids().last().expect("left half is not empty");
        let right_first = self.leaf(right).ids[0];
        let sep = shortest_separator(keys.key_of(left_last), keys.key_of(right_first));
        Grow::Split(sep, right)
    }

    /// Removes `key`; returns the id it held.
    pub(crate) fn remove(&mut self, keys: &impl KeySource, key: &[u8]) -> Option<u32> {
        let id = self.remove_in(keys, self.root, self.height, key)?;
        self.len -= 1;
        while self.height > 0 && self.inner(self.root).children.len() == 1 {
            let old = self.root;
            self.root = self.inner(old).children[0];
            self.free_inner(old);
            self.height -= 1;
        }
        Some(id)
    }

    fn remove_in(
        &mut self,
        keys: &impl KeySource,
        node: u32,
        height: u32,
        key: &[u8],
    ) -> Option<u32> {
        if height == 0 {
            let pos = self.leaf(node).search(keys, key).ok()?;
            return Some(self.leaf_mut(node).remove(pos));
        }
        let idx = self.inner(node).child_for(key);
        let child = self.inner(node).children[idx];
        let id = self.remove_in(keys, child, height - 1, key)?;
        self.maybe_shrink_child(keys, node, idx, height - 1);
        Some(id)
    }

    fn node_size(&self, node: u32, height: u32) -> usize {
        if height == 0 { self.leaf(node).len as usize } else { self.inner(node).children.len() }
    }

    /// Drops an empty child, or merges a child below a quarter full into a
    /// neighbour when both fit in one node.
    fn maybe_shrink_child(&mut self, keys: &impl KeySource, parent: u32, idx: usize, height: u32) {
        let child = self.inner(parent).children[idx];
        let size = self.node_size(child, height);
        let cap = if height == 0 { LEAF_CAP } else { INNER_CAP };
        if size == 0 {
            self.drop_child(parent, idx, height);
            return;
        }
        if size >= cap / 4 {
            return;
        }
        let siblings = self.inner(parent).children.len();
        for (a, b) in [(idx, idx + 1), (idx.wrapping_sub(1), idx)] {
            if b >= siblings || a == usize::MAX {
                continue;
            }
            let (na, nb) = (self.inner(parent).children[a], self.inner(parent).children[b]);
            if self.node_size(na, height) + self.node_size(nb, height) <= cap {
                self.merge_children(keys, parent, a, height);
                return;
            }
        }
    }

    /// Removes an empty child and one separator next to it.
    fn drop_child(&mut self, parent: u32, idx: usize, height: u32) {
        let child = self.inner_mut(parent).children.remove(idx);
        let p = self.inner_mut(parent);
        if !p.ends.is_empty() {
            p.remove_sep(idx.saturating_sub(1));
        }
        if height == 0 {
            self.unlink_leaf(child);
        } else {
            self.free_inner(child);
        }
    }

    /// Moves everything of child a+1 into child a and removes child a+1.
    fn merge_children(&mut self, keys: &impl KeySource, parent: u32, a: usize, height: u32) {
        let p = self.inner_mut(parent);
        let right = p.children.remove(a + 1);
        let sep = p.remove_sep(a);
        let left = p.children[a];
        if height == 0 {
            let moved = self.leaf(right).clone();
            let l = self.leaf_mut(left);
            let len = l.len as usize;
            l.ids[len..len + moved.len as usize].copy_from_slice(moved.ids());
            l.len += moved.len;
            l.rebuild_hints(keys);
            self.unlink_leaf(right);
            return;
        }
        let moved = std::mem::take(self.inner_mut(right));
        let l = self.inner_mut(left);
        let base = l.ends.len();
        l.insert_sep(base, &sep);
        for i in 0..moved.ends.len() {
            l.insert_sep(base + 1 + i, moved.sep(i));
        }
        l.children.extend_from_slice(&moved.children);
        self.free_inner(right);
    }

    fn unlink_leaf(&mut self, i: u32) {
        let (prev, next) = (self.leaf(i).prev, self.leaf(i).next);
        if prev != NIL {
            self.leaf_mut(prev).next = next;
        }
        if next != NIL {
            self.leaf_mut(next).prev = prev;
        }
        self.free_leaves.push(i);
    }

    /// The first position whose key is ≥ `key`.
    pub(crate) fn seek(&self, keys: &impl KeySource, key: &[u8]) -> Cursor {
        let leaf = self.leaf_for(key);
        let pos = self.leaf(leaf).search(keys, key).unwrap_or_else(|p| p);
        self.normalize(Cursor { leaf, pos: pos as u32 })
    }

    /// The first position of the tree.
    pub(crate) fn first(&self) -> Cursor {
        let mut node = self.root;
        for _ in 0..self.height {
            node = self.inner(node).children[0];
        }
        self.normalize(Cursor { leaf: node, pos: 0 })
    }

    /// Moves a cursor that sits past its leaf's end to the next leaf.
    fn normalize(&self, mut c: Cursor) -> Cursor {
        loop {
            let leaf = self.leaf(c.leaf);
            if c.pos < u32::from(leaf.len) || leaf.next == NIL {
                return c;
            }
            c = Cursor { leaf: leaf.next, pos: 0 };
        }
    }

    /// The id at the cursor; `None` past the last key.
    pub(crate) fn at(&self, c: Cursor) -> Option<u32> {
        self.leaf(c.leaf).ids().get(c.pos as usize).copied()
    }

    pub(crate) fn advance(&self, c: Cursor) -> Cursor {
        self.normalize(Cursor { leaf: c.leaf, pos: c.pos + 1 })
    }

    /// The ids from the cursor to the end of its leaf (empty at the end of
    /// the tree), and the cursor just after them.
    pub(crate) fn run_at(&self, c: Cursor) -> (&[u32], Cursor) {
        let leaf = self.leaf(c.leaf);
        let ids = leaf.ids().get(c.pos as usize..).unwrap_or(&[]);
        (ids, self.normalize(Cursor { leaf: c.leaf, pos: u32::from(leaf.len) }))
    }

    /// Ids from `c` onwards in key order.
    pub(crate) fn iter_from(&self, c: Cursor) -> impl Iterator<Item = u32> + '_ {
        let mut cur = c;
        std::iter::from_fn(move || {
            let id = self.at(cur)?;
            cur = self.advance(cur);
            Some(id)
        })
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let mut bytes = self.leaves.heap_bytes() + self.inners.heap_bytes();
        bytes += (self.free_leaves.capacity() + self.free_inners.capacity()) * 4;
        for i in 0..self.inners.len() {
            let n = self.inner(i as u32);
            bytes += (n.children.capacity() + n.ends.capacity() + n.hints.capacity()) * 4
                + n.seps.capacity();
        }
        bytes
    }

    /// Checks ordering, separators, links and the count; panics on a breach.
    /// For tests.
    pub(crate) fn check(&self, keys: &impl KeySource) {
        let mut count = 0;
        self.check_node(keys, self.root, self.height, None, None, &mut count);
        assert_eq!(count, self.len, "tree length");
        let in_order: Vec<u32> = self.iter_from(self.first()).collect();
        assert_eq!(in_order.len(), self.len, "leaf chain length");
        for pair in in_order.windows(2) {
            assert!(keys.key_of(pair[0]) < keys.key_of(pair[1]), "leaf chain order");
        }
    }

    fn check_node(
        &self,
        keys: &impl KeySource,
        node: u32,
        height: u32,
        low: Option<&[u8]>,
        high: Option<&[u8]>,
        count: &mut usize,
    ) {
        if height == 0 {
            let leaf = self.leaf(node);
            for (i, id) in leaf.ids().iter().enumerate() {
                let k = keys.key_of(*id);
                assert!(k.starts_with(leaf.prefix()), "leaf prefix");
                assert_eq!(leaf.hints[i], hint(k, leaf.prefix_len as usize), "leaf hint");
                assert!(
                    low.is_none_or(|l| l <= k) && high.is_none_or(|h| k < h),
                    "key outside bounds"
                );
                *count += 1;
            }
            return;
        }
        let inner = self.inner(node);
        assert!(!inner.children.is_empty() && inner.children.len() <= INNER_CAP, "inner size");
        assert_eq!(inner.ends.len() + 1, inner.children.len(), "separator count");
        for i in 0..inner.ends.len() {
            let sep = inner.sep(i);
            assert!(sep.starts_with(&inner.seps[..inner.prefix_len as usize]), "inner prefix");
            assert_eq!(inner.hints[i], hint(sep, inner.prefix_len as usize), "inner hint");
            assert!(i == 0 || inner.sep(i - 1) < sep, "separator order");
        }
        for (i, child) in inner.children.iter().enumerate() {
            let lo = if i == 0 { low } else { Some(inner.sep(i - 1)) };
            let hi = if i == inner.ends.len() { high } else { Some(inner.sep(i)) };
            self.check_node(keys, *child, height - 1, lo, hi, count);
        }
    }
}

/// The shortest byte string `s` with `left < s <= right`.
fn shortest_separator(left: &[u8], right: &[u8]) -> Vec<u8> {
    debug_assert!(left < right);
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    right[..common + 1].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys(Vec<Vec<u8>>);

    impl KeySource for Keys {
        fn key_of(&self, id: u32) -> &[u8] {
            &self.0[id as usize]
        }
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    #[allow(clippy::map_entry)]
    fn random_inserts_and_removes_match_a_sorted_set() {
        let mut keys = Keys(Vec::new());
        let mut tree = Tree::default();
        let mut model = std::collections::BTreeMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20_000 {
            let k = format!(
                "/registry/pods/ns-{}/pod-{}",
                xorshift(&mut seed) % 7,
                xorshift(&mut seed) % 500
            );
            let k = k.into_bytes();
            let remove = round > 6000 && xorshift(&mut seed).is_multiple_of(3);
            if remove {
                assert_eq!(tree.remove(&keys, &k), model.remove(&k));
            } else if !model.contains_key(&k) {
                let id = keys.0.len() as u32;
                keys.0.push(k.clone());
                assert_eq!(tree.insert(&keys, &k, id), Ok(()));
                model.insert(k, id);
            } else {
                assert_eq!(tree.insert(&keys, &k, 999_999), Err(model[&k]));
            }
            if round % 1000 == 0 {
                tree.check(&keys);
            }
        }
        tree.check(&keys);
        let got: Vec<u32> = tree.iter_from(tree.first()).collect();
        assert_eq!(got, model.values().copied().collect::<Vec<_>>());
        let probe = b"/registry/pods/ns-3/".to_vec();
        let from: Vec<u32> = tree.iter_from(tree.seek(&keys, &probe)).collect();
        assert_eq!(from, model.range(probe..).map(|(_, v)| *v).collect::<Vec<_>>());
        for k in model.keys().cloned().collect::<Vec<_>>() {
            assert!(tree.remove(&keys, &k).is_some());
        }
        tree.check(&keys);
        assert_eq!(tree.len(), 0);
        assert_eq!(tree.height, 0);
    }

    #[test]
    fn keys_that_are_prefixes_and_zero_bytes_keep_their_order() {
        let mut keys = Keys(Vec::new());
        let mut tree = Tree::default();
        let mut model = std::collections::BTreeMap::new();
        let mut seed = 0x0123_4567_89ab_cdefu64;
        for round in 0..30_000 {
            let len = 1 + xorshift(&mut seed) % 7;
            let k: Vec<u8> =
                (0..len).map(|_| [0u8, 1, 0xff][(xorshift(&mut seed) % 3) as usize]).collect();
            if round % 3 == 2 {
                assert_eq!(tree.remove(&keys, &k), model.remove(&k));
            } else if let std::collections::btree_map::Entry::Vacant(e) = model.entry(k.clone()) {
                let id = keys.0.len() as u32;
                keys.0.push(k.clone());
                assert_eq!(tree.insert(&keys, &k, id), Ok(()));
                e.insert(id);
            }
            assert_eq!(tree.get(&keys, &k), model.get(&k).copied());
        }
        tree.check(&keys);
        let got: Vec<u32> = tree.iter_from(tree.first()).collect();
        assert_eq!(got, model.values().copied().collect::<Vec<_>>());
    }

    #[test]
    fn a_deep_tree_shrinks_back_to_one_leaf() {
        let mut keys = Keys(Vec::new());
        let mut tree = Tree::default();
        let mut seed = 0xdead_beef_cafe_f00du64;
        let mut order: Vec<u32> = (0..150_000).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (xorshift(&mut seed) % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let k = format!("/registry/pods/namespace-{}/pod-{}", i / 100, i % 100).into_bytes();
            keys.0.push(k.clone());
            tree.insert(&keys, &k, keys.0.len() as u32 - 1).unwrap();
        }
        assert!(tree.height >= 3, "height {}", tree.height);
        tree.check(&keys);
        for (n, id) in order.iter().enumerate() {
            let k = keys.0[n].clone();
            assert_eq!(tree.remove(&keys, &k), Some(n as u32), "key {id}");
            if n % 30_000 == 0 {
                tree.check(&keys);
            }
        }
        tree.check(&keys);
        assert_eq!((tree.len(), tree.height), (0, 0));
    }

    #[test]
    fn appending_in_order_fills_leaves() {
        let mut keys = Keys(Vec::new());
        let mut tree = Tree::default();
        for i in 0..(LEAF_CAP * 10) as u32 {
            let k = format!("key-{i:06}").into_bytes();
            keys.0.push(k.clone());
            tree.insert(&keys, &k, i).unwrap();
        }
        tree.check(&keys);
        assert_eq!(tree.leaves.len(), 10);
    }

    #[test]
    fn separators_are_short() {
        assert_eq!(shortest_separator(b"/a/pod-19", b"/a/pod-2"), b"/a/pod-2".to_vec());
        assert_eq!(shortest_separator(b"ab", b"abc"), b"abc".to_vec());
        assert_eq!(shortest_separator(b"abx", b"b"), b"b".to_vec());
    }
}
