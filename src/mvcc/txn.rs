//! Transactions: shape checks (sizes, depth, duplicate keys), compares, and
//! running one branch atomically under a single main revision.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::block::Version;
use super::bound::AnswerBudget;
use super::store::{Store, Writer, check_put};
use super::types::*;

impl Store {
    /// Runs a transaction: compares, then one branch, atomically. On error
    /// nothing changed.
    pub fn apply_txn(&mut self, req: &TxnRequest) -> Result<Applied<TxnResponse>, Error> {
        self.apply_txn_within(req, usize::MAX)
    }

    /// `apply_txn` whose answer may take at most `answer_max_bytes` (see
    /// `bound.rs`): past it the transaction is refused and nothing changes.
    pub fn apply_txn_within(
        &mut self,
        req: &TxnRequest,
        answer_max_bytes: usize,
    ) -> Result<Applied<TxnResponse>, Error> {
        check_txn(req, self.config.max_txn_ops, 1)?;
        // As etcd, every compare on the chosen path (nested ones too) sees
        // the store as it was before the transaction.
        let mut path = Vec::new();
        self.txn_path(req, &mut path);
        self.check_txn_path(req, &path, &mut 0)?;
        if answer_max_bytes != usize::MAX {
            let fits = AnswerBudget::new(answer_max_bytes)
                .is_some_and(|mut budget| self.txn_answer_fits(req, &path, &mut budget));
            if !fits {
                return Err(Error::AnswerTooLarge { max_bytes: answer_max_bytes });
            }
        }
        let mut w = self.writer();
        let response = self.exec_txn(&mut w, req, &path, &mut 0);
        Ok(self.finish(w, response))
    }

    /// The leases named by the puts on the path this transaction would take
    /// now (nested ones too): the leases that must exist for it to apply.
    /// Puts on the branches not taken need nothing, as in etcd.
    pub fn txn_leases_on_path(&self, req: &TxnRequest) -> Vec<i64> {
        let mut path = Vec::new();
        self.txn_path(req, &mut path);
        let mut leases = Vec::new();
        path_leases(req, &path, &mut 0, &mut leases);
        leases.retain(|id| *id != 0);
        leases
    }

    fn txn_path(&self, req: &TxnRequest, path: &mut Vec<bool>) {
        let succeeded = req.compare.iter().all(|c| self.compare_holds(c));
        path.push(succeeded);
        for op in if succeeded { &req.success } else { &req.failure } {
            if let RequestOp::Txn(nested) = op {
                self.txn_path(nested, path);
            }
        }
    }

    /// Checks what depends on the store along the chosen path.
    fn check_txn_path(&self, req: &TxnRequest, path: &[bool], at: &mut usize) -> Result<(), Error> {
        let succeeded = path[*at];
        *at += 1;
        for op in if succeeded { &req.success } else { &req.failure } {
            match op {
                RequestOp::Range(r) => self.read_revision(r.revision).map(|_| ())?,
                RequestOp::Put(p) => self.check_put_target(p)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(nested) => self.check_txn_path(nested, path, at)?,
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        w: &mut Writer,
        req: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> TxnResponse {
        let succeeded = path[*at];
        *at += 1;
        let mut responses = Vec::new();
        for op in if succeeded { &req.success } else { &req.failure } {
            let response = match op {
                // A read at revision 0 sees the transaction's own writes.
                RequestOp::Range(r) => {
                    let rev = if r.revision == 0 { w.rev } else { r.revision };
                    ResponseOp::Range(self.range_at(r, rev))
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(w, p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(w, d)),
                RequestOp::Txn(nested) => ResponseOp::Txn(self.exec_txn(w, nested, path, at)),
            };
            responses.push(response);
        }
        TxnResponse { succeeded, responses }
    }

    fn compare_holds(&self, c: &Compare) -> bool {
        let mut any = false;
        let mut all = true;
        self.for_each_live(&c.key, &c.range_end, self.current_revision, |_, v| {
            any = true;
            all = all && compare_version(c, &v);
        });
        if any {
            return all;
        }
        // A missing key compares as zeros and fails every value compare.
        let zero = Version {
            main: 0,
            sub: 0,
            tombstone: false,
            create: 0,
            version: 0,
            lease: 0,
            value: &[],
        };
        !matches!(c.target, CompareTarget::Value(_)) && compare_version(c, &zero)
    }
}

fn path_leases(req: &TxnRequest, path: &[bool], at: &mut usize, out: &mut Vec<i64>) {
    let succeeded = path[*at];
    *at += 1;
    for op in if succeeded { &req.success } else { &req.failure } {
        match op {
            RequestOp::Put(p) => out.push(p.lease),
            RequestOp::Txn(nested) => path_leases(nested, path, at, out),
            RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
        }
    }
}

fn compare_version(c: &Compare, v: &Version<'_>) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(x) => v.version.cmp(x),
        CompareTarget::Create(x) => v.create.cmp(x),
        CompareTarget::Mod(x) => v.main.cmp(x),
        CompareTarget::Lease(x) => v.lease.cmp(x),
        CompareTarget::Value(x) => v.value.cmp(x.as_slice()),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Checks a transaction's shape: sizes, depth, keys, and that no branch
/// changes a key twice.
fn check_txn(req: &TxnRequest, max_ops: usize, depth: usize) -> Result<(), Error> {
    if depth > TXN_DEPTH_MAX {
        return Err(Error::TxnTooDeep);
    }
    if req.compare.len() > max_ops || req.success.len() > max_ops || req.failure.len() > max_ops {
        return Err(Error::TooManyOps { max_ops });
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(Error::EmptyKey),
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(Error::EmptyKey),
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::Txn(nested) => check_txn(nested, max_ops, depth + 1)?,
            _ => {}
        }
    }
    branch_changes(&req.success)?;
    branch_changes(&req.failure)?;
    Ok(())
}

/// The keys a branch puts and the ranges it deletes.
#[derive(Default)]
struct Changes {
    puts: BTreeSet<Vec<u8>>,
    dels: Vec<(Vec<u8>, RangeEnd)>,
}

impl Changes {
    fn deletes(&self, key: &[u8]) -> bool {
        self.dels.iter().any(|(start, end)| start.as_slice() <= key && end.admits(start, key))
    }
}

/// etcd's rule: a key may be put once per branch and not inside a range the
/// branch deletes; overlapping deletes are fine, and the two branches of a
/// nested transaction may put the same key (only one of them runs). Puts and
/// deletes of nested transactions count for the branch that holds them.
fn branch_changes(ops: &[RequestOp]) -> Result<Changes, Error> {
    let mut c = Changes::default();
    for op in ops {
        if let RequestOp::DeleteRange(d) = op {
            c.dels.push((d.key.clone(), RangeEnd::from_request(&d.range_end)));
        }
    }
    for op in ops {
        let RequestOp::Txn(nested) = op else { continue };
        let then = branch_changes(&nested.success)?;
        let other = branch_changes(&nested.failure)?;
        for k in &then.puts {
            if c.puts.contains(k) || c.deletes(k) {
                return Err(Error::DuplicateKeyInTxn);
            }
        }
        for k in &other.puts {
            if (c.puts.contains(k) && !then.puts.contains(k)) || c.deletes(k) {
                return Err(Error::DuplicateKeyInTxn);
            }
        }
        c.puts.extend(then.puts.into_iter().chain(other.puts));
        c.dels.extend(then.dels.into_iter().chain(other.dels));
        // Stricter than etcd: a later nested delete may not cover a key an
        // earlier nested transaction puts either, so no key ever changes
        // twice in one revision.
        if c.puts.iter().any(|k| c.deletes(k)) {
            return Err(Error::DuplicateKeyInTxn);
        }
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if c.deletes(&p.key) || !c.puts.insert(p.key.clone()) {
            return Err(Error::DuplicateKeyInTxn);
        }
    }
    Ok(c)
}
