//! What a request needs, as a list of rights on key spans, "root" or
//! "any authenticated user", to be checked in one go before anything
//! happens.
//!
//! The rules (and the holes they close):
//! - Range: READ on its range.
//! - Put and DeleteRange: WRITE on the key or range, and READ as well when
//!   `prev_kv` asks for the old values.
//! - Txn: READ on every compare's range, and what every op of both
//!   branches needs, nested txns included, whichever branch would run: the
//!   answer must not depend on the store's contents.
//! - Watch: READ on the whole range; a from-key watch (`range_end` `[0]`)
//!   reads the whole tail, not only its first key.
//! - Member changes, compaction, HashKv and every user, role and auth
//!   change: root. Lease calls and the member list: an authenticated user.
//!   Status and `/health` need nothing.
//!
//! Rights that depend on the store (the keys already attached to a lease)
//! are added by the state machine, which holds the store.

use super::perm::{Right, Span};
use crate::mvcc;

/// One thing a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any user that logged in.
    Authenticated,
    /// A user holding the `root` role.
    Root,
    /// `Right` on every key of the span.
    Key(Right, Span),
}

fn key(right: Right, key: &[u8], range_end: &[u8]) -> Need {
    Need::Key(right, Span::of(key, range_end))
}

pub fn range(r: &mvcc::RangeRequest, out: &mut Vec<Need>) {
    out.push(key(Right::Read, &r.key, &r.range_end));
}

pub fn put(r: &mvcc::PutRequest, out: &mut Vec<Need>) {
    out.push(key(Right::Write, &r.key, &[]));
    if r.prev_kv {
        out.push(key(Right::Read, &r.key, &[]));
    }
}

pub fn delete_range(r: &mvcc::DeleteRangeRequest, out: &mut Vec<Need>) {
    out.push(key(Right::Write, &r.key, &r.range_end));
    if r.prev_kv {
        out.push(key(Right::Read, &r.key, &r.range_end));
    }
}

/// Every compare and every op of both branches, at every depth. Decoding
/// bounds the depth (`limits::TXN_DEPTH_MAX`), so the recursion is bounded.
pub fn txn(r: &mvcc::TxnRequest, out: &mut Vec<Need>) {
    for compare in &r.compare {
        out.push(key(Right::Read, &compare.key, &compare.range_end));
    }
    for op in r.success.iter().chain(&r.failure) {
        match op {
            mvcc::RequestOp::Range(r) => range(r, out),
            mvcc::RequestOp::Put(r) => put(r, out),
            mvcc::RequestOp::DeleteRange(r) => delete_range(r, out),
            mvcc::RequestOp::Txn(r) => txn(r, out),
        }
    }
}

/// A watch reads its whole range for as long as it lives.
pub fn watch(key_: &[u8], range_end: &[u8]) -> Need {
    key(Right::Read, key_, range_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(k: &str, prev_kv: bool) -> mvcc::RequestOp {
        mvcc::RequestOp::Put(mvcc::PutRequest {
            key: k.as_bytes().to_vec(),
            prev_kv,
            ..Default::default()
        })
    }

    #[test]
    fn a_nested_txn_needs_every_branch_at_every_depth() {
        let inner = mvcc::TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![put_op("deep", true)],
        };
        let outer = mvcc::TxnRequest {
            compare: vec![mvcc::Compare {
                key: b"c".to_vec(),
                range_end: vec![0],
                result: mvcc::CompareResult::Equal,
                target: mvcc::CompareTarget::Version(0),
            }],
            success: vec![put_op("s", false)],
            failure: vec![mvcc::RequestOp::Txn(inner)],
        };
        let mut needs = Vec::new();
        txn(&outer, &mut needs);
        assert_eq!(
            needs,
            vec![
                Need::Key(Right::Read, Span::of(b"c", &[0])),
                Need::Key(Right::Write, Span::of(b"s", b"")),
                Need::Key(Right::Write, Span::of(b"deep", b"")),
                Need::Key(Right::Read, Span::of(b"deep", b"")),
            ]
        );
    }

    #[test]
    fn prev_kv_adds_read() {
        let mut needs = Vec::new();
        let r = mvcc::DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            prev_kv: true,
        };
        delete_range(&r, &mut needs);
        assert_eq!(needs.len(), 2);
        assert_eq!(
            watch(b"a", &[0]),
            Need::Key(Right::Read, Span { start: b"a".to_vec(), end: None })
        );
    }
}
