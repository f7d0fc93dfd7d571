//! Permissions as key intervals, and the question every request asks:
//! does the union of what a user's roles grant cover all of what the
//! request touches?
//!
//! A key range in the client protocol is `[key, range_end)` with two
//! special ends: empty (the single key `key`) and `[0]` (every key from
//! `key` on). Here both become a `Span`, a half-open interval whose end
//! may be unbounded, so the single key, a range, a prefix and a from-key
//! grant are one shape and coverage is one sweep.

use serde::{Deserialize, Serialize};

/// What a permission allows. The numbers are etcd's (`authpb.Permission`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PermKind {
    Read = 0,
    Write = 1,
    ReadWrite = 2,
}

impl PermKind {
    /// Whether a grant of this kind gives `right`.
    pub fn gives(self, right: Right) -> bool {
        matches!(
            (self, right),
            (PermKind::ReadWrite, _)
                | (PermKind::Read, Right::Read)
                | (PermKind::Write, Right::Write)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            PermKind::Read => "READ",
            PermKind::Write => "WRITE",
            PermKind::ReadWrite => "READWRITE",
        }
    }
}

/// One right a request needs on a span of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Right {
    Read,
    Write,
}

/// A permission of a role: `kind` on `[key, range_end)`, with the
/// protocol's meaning of an empty `range_end` (one key) and `[0]` (from
/// `key` on).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl Permission {
    pub fn span(&self) -> Span {
        Span::of(&self.key, &self.range_end)
    }
}

/// A half-open interval of keys; `end: None` means no upper bound.
/// Invariant (for a non-empty span): `start < end` when `end` is `Some`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl Span {
    /// The keys a protocol range selects.
    pub fn of(key: &[u8], range_end: &[u8]) -> Span {
        match range_end {
            [] => {
                // The single key `key` is `[key, key ++ 0x00)`: nothing sorts
                // between a key and itself followed by a zero byte.
                let mut end = key.to_vec();
                end.push(0);
                Span { start: key.to_vec(), end: Some(end) }
            }
            [0] => Span { start: key.to_vec(), end: None },
            end => Span { start: key.to_vec(), end: Some(end.to_vec()) },
        }
    }

    /// True for a range that selects no key (`range_end <= key`).
    pub fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }
}

/// Whether `grant` alone covers every key of `need`, without allocating.
pub fn covers_alone(grant: &Permission, need: &Span) -> bool {
    if need.is_empty() {
        return true;
    }
    if need.start.as_slice() < grant.key.as_slice() {
        return false;
    }
    match (grant.range_end.as_slice(), &need.end) {
        ([0], _) => true,
        (_, None) => false,
        // A single-key grant covers exactly `[key, key ++ 0x00)`.
        ([], Some(end)) => {
            need.start == grant.key
                && end.len() == grant.key.len() + 1
                && end.starts_with(&grant.key)
                && end.last() == Some(&0)
        }
        (grant_end, Some(end)) => end.as_slice() <= grant_end,
    }
}

/// Whether the union of `grants` covers every key of `need`. An empty need
/// selects nothing and is covered by anything.
pub fn covers(grants: impl IntoIterator<Item = Span>, need: &Span) -> bool {
    if need.is_empty() {
        return true;
    }
    let mut spans: Vec<Span> = grants.into_iter().filter(|s| !s.is_empty()).collect();
    spans.sort_by(|a, b| a.start.cmp(&b.start));
    // `reached`: every key in [need.start, reached) is covered; None = all.
    let mut reached: Option<Vec<u8>> = Some(need.start.clone());
    for span in spans {
        let Some(at) = reached.as_ref() else { break };
        if span.start > *at {
            break;
        }
        reached = match (&span.end, at) {
            (None, _) => None,
            (Some(end), at) if end > at => Some(end.clone()),
            _ => reached,
        };
        if done(&reached, need) {
            return true;
        }
    }
    done(&reached, need)
}

fn done(reached: &Option<Vec<u8>>, need: &Span) -> bool {
    match (reached, &need.end) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(at), Some(end)) => at >= end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(key: &str, end: &str) -> Span {
        Span::of(key.as_bytes(), end.as_bytes())
    }

    #[test]
    fn single_keys_ranges_and_tails() {
        let grant = [span("a", "c")];
        assert!(covers(grant.clone(), &span("a", "")));
        assert!(covers(grant.clone(), &span("b", "c")));
        assert!(covers(grant.clone(), &span("bzzz", "")));
        assert!(!covers(grant.clone(), &span("c", "")));
        assert!(!covers(grant.clone(), &span("a", "d")));
        assert!(!covers(grant.clone(), &Span::of(b"a", &[0])));
        let tail = [Span::of(b"m", &[0])];
        assert!(covers(tail.clone(), &Span::of(b"m", &[0])));
        assert!(covers(tail.clone(), &span("z", "")));
        assert!(!covers(tail, &Span::of(b"l", &[0])));
    }

    #[test]
    fn a_range_is_covered_only_by_the_union_of_grants_without_gaps() {
        let grants = [span("a", "c"), span("c", "e")];
        assert!(covers(grants.clone(), &span("b", "d")));
        let gap = [span("a", "c"), span("c\0", "e")];
        assert!(!covers(gap.clone(), &span("b", "d")), "key c itself is not granted");
        let with_key = [span("a", "c"), span("c", ""), span("c\0", "e")];
        assert!(covers(with_key, &span("b", "d")));
        let overlapping = [span("a", "z"), span("b", "c")];
        assert!(covers(overlapping, &span("a", "y")));
    }

    #[test]
    fn an_empty_need_is_covered_and_an_empty_grant_gives_nothing() {
        assert!(covers([], &span("b", "a")));
        assert!(!covers([span("b", "a")], &span("a", "")));
        assert!(!covers([], &span("a", "")));
    }

    #[test]
    fn one_grant_alone_agrees_with_the_union_of_one() {
        let needs =
            [span("a", ""), span("b", "c"), span("a", "d"), Span::of(b"a", &[0]), span("c", "")];
        let grants = [
            Permission { kind: PermKind::Read, key: b"a".to_vec(), range_end: Vec::new() },
            Permission { kind: PermKind::Read, key: b"a".to_vec(), range_end: b"c".to_vec() },
            Permission { kind: PermKind::Read, key: b"b".to_vec(), range_end: vec![0] },
        ];
        for grant in &grants {
            for need in &needs {
                assert_eq!(
                    covers_alone(grant, need),
                    covers([grant.span()], need),
                    "{grant:?} {need:?}"
                );
            }
        }
    }

    #[test]
    fn kinds_give_their_rights() {
        assert!(PermKind::Read.gives(Right::Read));
        assert!(!PermKind::Read.gives(Right::Write));
        assert!(PermKind::Write.gives(Right::Write));
        assert!(!PermKind::Write.gives(Right::Read));
        assert!(PermKind::ReadWrite.gives(Right::Read) && PermKind::ReadWrite.gives(Right::Write));
    }
}
