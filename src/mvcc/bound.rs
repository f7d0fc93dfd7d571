//! How large a write's answer will be, known before the write changes
//! anything: a delete with `prev_kv` or a transaction whose answer would
//! pass its bound is refused whole (`Error::AnswerTooLarge`) instead of
//! applied and then refused, and nothing is built past the bound.
//!
//! A delete's `prev_kvs` and a put's `prev_kv` are the keys as they stand
//! before the write: no transaction changes a key twice (`txn.rs`), so the
//! store before the write gives them exactly. A read inside a transaction
//! at revision 0 sees the transaction's own earlier writes, which are not
//! there yet: it is counted as the store stands plus every key the
//! transaction puts inside its range, and without its `limit` when the
//! transaction also deletes (a delete pulls later keys under the limit).
//! The count is therefore never below what is built. The walk stops as soon
//! as it passes the bound, so finding out costs at most the bound's worth
//! of keys, never the whole range.

use super::store::{RANGE_KV_OVERHEAD_BYTES, Store, effective_order};
use super::types::*;

/// What a whole answer holds besides its parts: the response's tag, its
/// header's four varints, `succeeded` or `deleted`, list lengths, rounded up.
pub const ANSWER_ENVELOPE_BYTES: usize = 128;

/// What each answer inside a transaction holds besides its key-values: its
/// tag, a header of four varints, `more`, `count` and a list length (57
/// bytes at most), rounded up.
pub const ANSWER_OP_OVERHEAD_BYTES: usize = 64;

/// Bytes an answer may still take.
pub(super) struct AnswerBudget {
    left_bytes: usize,
}

impl AnswerBudget {
    /// A budget of `max_bytes` for a whole answer, its envelope taken.
    pub(super) fn new(max_bytes: usize) -> Option<AnswerBudget> {
        let left_bytes = max_bytes.checked_sub(ANSWER_ENVELOPE_BYTES)?;
        Some(AnswerBudget { left_bytes })
    }

    /// Takes `bytes`; takes nothing and fails once they would pass the bound.
    fn take(&mut self, bytes: usize) -> bool {
        match self.left_bytes.checked_sub(bytes) {
            Some(left_bytes) => {
                self.left_bytes = left_bytes;
                true
            }
            None => false,
        }
    }
}

/// What a transaction writes along the path it takes, as far as its reads
/// at revision 0 can see it.
#[derive(Default)]
struct PathWrites {
    /// Each put's key and the bytes its value will have.
    puts: Vec<(Vec<u8>, usize)>,
    deletes: bool,
}

impl Store {
    /// Whether a delete's answer fits `budget`: its live keys, whole, when
    /// it asks for `prev_kv`.
    pub(super) fn delete_answer_fits(
        &self,
        req: &DeleteRangeRequest,
        budget: &mut AnswerBudget,
    ) -> bool {
        !req.prev_kv || self.live_bytes_fit(&req.key, &req.range_end, usize::MAX, true, budget)
    }

    /// Whether the answer of a transaction taking `path` (see `txn_path`)
    /// fits `budget`.
    pub(super) fn txn_answer_fits(
        &self,
        req: &TxnRequest,
        path: &[bool],
        budget: &mut AnswerBudget,
    ) -> bool {
        let mut writes = PathWrites::default();
        self.path_writes(req, path, &mut 0, &mut writes);
        self.branch_answer_fits(req, path, &mut 0, &writes, budget)
    }

    fn branch_answer_fits(
        &self,
        req: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        writes: &PathWrites,
        budget: &mut AnswerBudget,
    ) -> bool {
        let succeeded = path[*at];
        *at += 1;
        for op in if succeeded { &req.success } else { &req.failure } {
            let fits = budget.take(ANSWER_OP_OVERHEAD_BYTES)
                && match op {
                    RequestOp::Range(r) => self.txn_range_fits(r, writes, budget),
                    RequestOp::Put(p) => {
                        !p.prev_kv || self.live_bytes_fit(&p.key, &[], 1, true, budget)
                    }
                    RequestOp::DeleteRange(d) => self.delete_answer_fits(d, budget),
                    RequestOp::Txn(nested) => {
                        self.branch_answer_fits(nested, path, at, writes, budget)
                    }
                };
            if !fits {
                return false;
            }
        }
        true
    }

    /// A read inside a transaction, counted as the module doc says.
    fn txn_range_fits(
        &self,
        r: &RangeRequest,
        writes: &PathWrites,
        budget: &mut AnswerBudget,
    ) -> bool {
        if r.count_only {
            return true;
        }
        let sees_writes = r.revision == 0;
        let order = effective_order(r);
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        // Sorting and filtering hold every match; so does a read that a
        // delete before it may have moved later keys under its limit.
        let holds_all =
            order != SortOrder::None || filtered || r.limit == 0 || (sees_writes && writes.deletes);
        let keys_max =
            if holds_all { usize::MAX } else { usize::try_from(r.limit).unwrap_or(usize::MAX) };
        let with_values =
            !r.keys_only || (order != SortOrder::None && r.sort_target == SortTarget::Value);
        let rev = if sees_writes { self.current_revision } else { r.revision };
        if !self.live_bytes_fit_at(&r.key, &r.range_end, rev, keys_max, with_values, budget) {
            return false;
        }
        if !sees_writes {
            return true;
        }
        let end = RangeEnd::from_request(&r.range_end);
        let inside = |key: &[u8]| key >= r.key.as_slice() && end.admits(&r.key, key);
        writes.puts.iter().filter(|(key, _)| inside(key)).all(|(key, value_bytes)| {
            let value_bytes = if with_values { *value_bytes } else { 0 };
            budget.take(key.len() + value_bytes + RANGE_KV_OVERHEAD_BYTES)
        })
    }

    /// The puts and whether there are deletes along `path`.
    fn path_writes(&self, req: &TxnRequest, path: &[bool], at: &mut usize, out: &mut PathWrites) {
        let succeeded = path[*at];
        *at += 1;
        for op in if succeeded { &req.success } else { &req.failure } {
            match op {
                RequestOp::Put(p) => {
                    let kept = self.latest_live(&p.key).map_or(0, |v| v.value.len());
                    let value_bytes = if p.ignore_value { kept } else { p.value.len() };
                    out.puts.push((p.key.clone(), value_bytes));
                }
                RequestOp::DeleteRange(_) => out.deletes = true,
                RequestOp::Txn(nested) => self.path_writes(nested, path, at, out),
                RequestOp::Range(_) => {}
            }
        }
    }

    /// Whether the first `keys_max` keys of `[key, range_end)` live now fit.
    fn live_bytes_fit(
        &self,
        key: &[u8],
        range_end: &[u8],
        keys_max: usize,
        with_values: bool,
        budget: &mut AnswerBudget,
    ) -> bool {
        let rev = self.current_revision;
        self.live_bytes_fit_at(key, range_end, rev, keys_max, with_values, budget)
    }

    /// Whether the first `keys_max` keys of `[key, range_end)` live at `rev`
    /// fit, each counted as a range counts it; stops at the first that
    /// does not.
    fn live_bytes_fit_at(
        &self,
        key: &[u8],
        range_end: &[u8],
        rev: u64,
        keys_max: usize,
        with_values: bool,
        budget: &mut AnswerBudget,
    ) -> bool {
        let mut fits = true;
        let mut seen = 0usize;
        self.for_each_live_while(key, range_end, rev, |key, v| {
            let value_bytes = if with_values { v.value.len() } else { 0 };
            fits = budget.take(key.len() + value_bytes + RANGE_KV_OVERHEAD_BYTES);
            seen += 1;
            fits && seen < keys_max
        });
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value_bytes: usize) -> PutRequest {
        PutRequest { key: key.into(), value: vec![b'v'; value_bytes], ..Default::default() }
    }

    /// 100 keys `k000`..`k099` of 1,000 bytes each.
    fn store() -> Store {
        let mut store = Store::default();
        for i in 0..100 {
            store.apply_put(&put(&format!("k{i:03}"), 1000)).unwrap();
        }
        store
    }

    fn all(prefix: &str) -> (Vec<u8>, Vec<u8>) {
        (prefix.into(), prefix_range_end(prefix.as_bytes()))
    }

    fn read_all() -> RequestOp {
        let (key, range_end) = all("k");
        RequestOp::Range(RangeRequest { key, range_end, ..Default::default() })
    }

    /// What the built answer holds, counted as the bound counts it.
    fn txn_bytes(r: &TxnResponse) -> usize {
        let kvs = |kvs: &[KeyValue]| -> usize {
            kvs.iter().map(|kv| kv.key.len() + kv.value.len() + RANGE_KV_OVERHEAD_BYTES).sum()
        };
        let op = |op: &ResponseOp| {
            ANSWER_OP_OVERHEAD_BYTES
                + match op {
                    ResponseOp::Range(r) => kvs(&r.kvs),
                    ResponseOp::Put(p) => kvs(p.prev_kv.as_slice()),
                    ResponseOp::DeleteRange(d) => kvs(&d.prev_kvs),
                    ResponseOp::Txn(nested) => txn_bytes(nested),
                }
        };
        r.responses.iter().map(op).sum()
    }

    #[test]
    fn a_delete_whose_prev_kvs_pass_the_bound_changes_nothing() {
        let mut store = store();
        let (key, range_end) = all("k");
        let delete = DeleteRangeRequest { key, range_end, prev_kv: true };
        let refused = store.apply_delete_range_within(&delete, 50_000);
        assert_eq!(refused.unwrap_err(), Error::AnswerTooLarge { max_bytes: 50_000 });
        assert_eq!(store.current_revision(), 101);
        assert_eq!(
            store.range(&RangeRequest { count_only: true, ..range_of(&delete) }).unwrap().count,
            100
        );
        // Without prev_kv the answer is a count: it always fits.
        let plain = DeleteRangeRequest { prev_kv: false, ..delete.clone() };
        assert_eq!(store.apply_delete_range_within(&plain, 1024).unwrap().response.deleted, 100);
        store.check_invariants();
    }

    fn range_of(d: &DeleteRangeRequest) -> RangeRequest {
        RangeRequest { key: d.key.clone(), range_end: d.range_end.clone(), ..Default::default() }
    }

    #[test]
    fn a_delete_that_fits_is_applied_with_every_prev_kv() {
        let mut store = store();
        let (key, range_end) = all("k0");
        let delete = DeleteRangeRequest { key, range_end, prev_kv: true };
        let applied = store.apply_delete_range_within(&delete, 200_000).unwrap();
        assert_eq!(applied.response.prev_kvs.len(), 100);
    }

    #[test]
    fn a_txn_of_many_reads_is_refused_before_its_write() {
        let mut store = store();
        let mut success = vec![RequestOp::Put(put("written", 1))];
        success.extend((0..100).map(|_| read_all()));
        let txn = TxnRequest { compare: Vec::new(), success, failure: Vec::new() };
        let refused = store.apply_txn_within(&txn, 1 << 20);
        assert_eq!(refused.unwrap_err(), Error::AnswerTooLarge { max_bytes: 1 << 20 });
        assert_eq!(store.current_revision(), 101, "the put inside was not applied");
        assert!(store.latest_live(b"written").is_none());
    }

    #[test]
    fn a_read_of_the_txns_own_put_is_counted_before_the_put_exists() {
        let mut store = Store::default();
        // The store is empty, but the read after the put will see 60 KB.
        let success = vec![RequestOp::Put(put("k1", 60_000)), read_all()];
        let txn = TxnRequest { compare: Vec::new(), success, failure: Vec::new() };
        assert!(store.apply_txn_within(&txn, 50_000).is_err());
        assert_eq!(store.current_revision(), 1);
        let applied = store.apply_txn_within(&txn, 70_000).unwrap();
        assert!(txn_bytes(&applied.response) + ANSWER_ENVELOPE_BYTES <= 70_000);
    }

    /// Transactions of puts, deletes, limited and sorted reads, nested: an
    /// accepted one never builds past its bound, and a refused one
    /// changes nothing.
    #[test]
    fn an_accepted_txn_never_builds_past_its_bound() {
        let limited = |limit| {
            let (key, range_end) = all("k");
            RequestOp::Range(RangeRequest { key, range_end, limit, ..Default::default() })
        };
        let sorted = {
            let (key, range_end) = all("k");
            let (sort_order, sort_target) = (SortOrder::Descend, SortTarget::Value);
            RequestOp::Range(RangeRequest {
                key,
                range_end,
                sort_order,
                sort_target,
                keys_only: true,
                ..Default::default()
            })
        };
        let delete = |prefix: &str| {
            let (key, range_end) = all(prefix);
            RequestOp::DeleteRange(DeleteRangeRequest { key, range_end, prev_kv: true })
        };
        let nested = TxnRequest {
            compare: Vec::new(),
            success: vec![limited(3), delete("k05")],
            failure: Vec::new(),
        };
        let shapes: Vec<Vec<RequestOp>> = vec![
            vec![delete("k00"), limited(20)],
            vec![
                RequestOp::Put(PutRequest { prev_kv: true, ..put("k099", 5000) }),
                limited(10),
                sorted.clone(),
            ],
            vec![RequestOp::Txn(nested), read_all()],
            vec![sorted, RequestOp::Put(put("k5", 3000)), delete("k01")],
        ];
        for success in shapes {
            let txn = TxnRequest { compare: Vec::new(), success, failure: Vec::new() };
            for max_bytes in (0..40).map(|i| i * 3_000) {
                let mut store = store();
                match store.apply_txn_within(&txn, max_bytes) {
                    Ok(applied) => {
                        let built = txn_bytes(&applied.response) + ANSWER_ENVELOPE_BYTES;
                        assert!(built <= max_bytes, "{built} bytes built under {max_bytes}");
                    }
                    Err(e) => {
                        assert_eq!(e, Error::AnswerTooLarge { max_bytes });
                        assert_eq!(store.current_revision(), 101);
                    }
                }
            }
        }
    }
}
