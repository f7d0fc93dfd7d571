//! Validation at the boundary: a decoded `Request` is checked once and becomes
//! a `ValidRequest`; code past this point never re-checks its shape.
//!
//! Checked here (cheap, and true regardless of the store's state):
//! - every key of a range, put, delete, compare or watch is non-empty (a
//!   watch's empty key means "from the smallest key", as in etcd, and is
//!   rewritten to `[0]`) and at most `max_key_bytes`, and so is every
//!   `range_end`;
//! - limits, revisions and revision filters are not negative (`revision` of
//!   a range may be: 0 or less means the newest, as in etcd; a `HashKv`
//!   revision may not);
//! - `ignore_value` comes without a value and `ignore_lease` without a lease;
//! - a txn's compares, success ops and failure ops each number at most
//!   `max_txn_ops` at every level, its whole tree at most
//!   `max_txn_ops * TXN_DEPTH_MAX` ops, and it nests at most `TXN_DEPTH_MAX`
//!   deep (decoding already stopped any txn deeper than that or with more
//!   than `TXN_ITEMS_MAX` compares and ops, so `max_txn_ops` above
//!   `TXN_ITEMS_MAX / TXN_DEPTH_MAX` = 2048 cannot raise the total);
//! - within one branch of a txn (nested txns included) no key is put twice
//!   and no put falls in a deleted range;
//! - a lease TTL is at most `LEASE_TTL_SECS_MAX`;
//! - a member change names a member (id not 0); an add or update carries
//!   1 to `MEMBER_URLS_MAX` peer URLs of at most `MEMBER_URL_BYTES_MAX`
//!   each (whether they parse is the server's check), and an add a name of
//!   at most `MEMBER_NAME_BYTES_MAX` without '=', ',' or outer spaces;
//! - user and role names are non-empty and at most
//!   `auth::USER_NAME_BYTES_MAX`, passwords at most
//!   `auth::PASSWORD_BYTES_MAX`, tokens at most `auth::token::TOKEN_BYTES_MAX`,
//!   and a granted permission's key and range end at most `max_key_bytes`.
//!
//! Not checked here, because the answer depends on state: compacted or
//! future revisions, whether a lease or key exists, leadership, quotas. The
//! frame size was checked by the decoder before the body was read.

use std::collections::BTreeSet;

use super::error::ErrorCode;
use super::types::{
    AlarmAction, AlarmRequest, AlarmType, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    Request, RequestOp, TxnRequest,
};
use crate::auth;
use crate::limits::TXN_DEPTH_MAX;
pub use crate::limits::{LEASE_TTL_SECS_MAX, TXN_OPS_MAX_DEFAULT};

/// Peer URLs one member may have.
pub const MEMBER_URLS_MAX: usize = 8;
/// The longest peer URL accepted.
pub const MEMBER_URL_BYTES_MAX: usize = 256;
/// The longest member name accepted.
pub const MEMBER_NAME_BYTES_MAX: usize = 256;

/// etcd has no key limit apart from the request size. Ember caps keys
/// because they live in the in-memory index and are compared on every
/// lookup; real keys are paths of tens to hundreds of bytes, so 32 KiB
/// refuses only mistakes.
pub const KEY_BYTES_MAX_DEFAULT: usize = 32 * 1024;

/// The limits a request is checked against (from the server's flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `--max-txn-ops`: most compares, and most ops per branch, per txn level.
    pub max_txn_ops: usize,
    pub max_key_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_txn_ops: TXN_OPS_MAX_DEFAULT, max_key_bytes: KEY_BYTES_MAX_DEFAULT }
    }
}

/// A request that passed `validate`. Only `validate` makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidRequest(Request);

impl ValidRequest {
    pub fn request(&self) -> &Request {
        &self.0
    }

    pub fn into_request(self) -> Request {
        self.0
    }
}

/// Checks `request` against `limits` (see the module doc for the list).
pub fn validate(request: Request, limits: &Limits) -> Result<ValidRequest, ErrorCode> {
    let checker = Checker { limits };
    let request = match request {
        Request::WatchCreate(mut watch) => {
            if watch.key.is_empty() {
                watch.key = vec![0];
            }
            checker.key_range(&watch.key, &watch.range_end)?;
            non_negative(&[watch.start_revision])?;
            Request::WatchCreate(watch)
        }
        other => {
            checker.request(&other)?;
            other
        }
    };
    Ok(ValidRequest(request))
}

struct Checker<'a> {
    limits: &'a Limits,
}

impl Checker<'_> {
    fn request(&self, request: &Request) -> Result<(), ErrorCode> {
        match request {
            Request::Range(range) => self.range(range),
            Request::Put(put) => self.put(put),
            Request::DeleteRange(delete) => self.delete(delete),
            Request::Txn(txn) => {
                let mut total_ops = 0;
                self.txn(txn, 1, &mut total_ops)?;
                branch_writes(&txn.success)?;
                branch_writes(&txn.failure).map(drop)
            }
            Request::Compact(compact) => non_negative(&[compact.revision]),
            Request::HashKv(hash) => non_negative(&[hash.revision]),
            Request::LeaseGrant(grant) if grant.ttl_secs > LEASE_TTL_SECS_MAX => {
                Err(ErrorCode::LeaseTtlTooLarge)
            }
            Request::MemberAdd(add) => {
                member_urls(&add.peer_urls)?;
                // A nameless member takes the name it publishes when it
                // first starts, as etcd's request carries none.
                if add.name.is_empty() { Ok(()) } else { member_name(&add.name) }
            }
            Request::MemberUpdate(update) => {
                member_id(update.id)?;
                member_urls(&update.peer_urls)
            }
            Request::MemberRemove(r) => member_id(r.id),
            Request::MemberPromote(r) => member_id(r.id),
            Request::Alarm(r) => alarm(r),
            Request::RoleGrantPermission(r) => {
                let max = self.limits.max_key_bytes;
                if r.perm.key.len() > max || r.perm.range_end.len() > max {
                    return Err(ErrorCode::KeyTooLong);
                }
                auth_fields(request)
            }
            request => auth_fields(request),
        }
    }

    fn key_range(&self, key: &[u8], range_end: &[u8]) -> Result<(), ErrorCode> {
        if key.is_empty() {
            return Err(ErrorCode::EmptyKey);
        }
        if key.len() > self.limits.max_key_bytes || range_end.len() > self.limits.max_key_bytes {
            return Err(ErrorCode::KeyTooLong);
        }
        Ok(())
    }

    fn range(&self, range: &RangeRequest) -> Result<(), ErrorCode> {
        self.key_range(&range.key, &range.range_end)?;
        non_negative(&[
            range.limit,
            range.min_mod_revision,
            range.max_mod_revision,
            range.min_create_revision,
            range.max_create_revision,
        ])
    }

    fn put(&self, put: &PutRequest) -> Result<(), ErrorCode> {
        self.key_range(&put.key, &[])?;
        if put.ignore_value && !put.value.is_empty() {
            return Err(ErrorCode::ValueProvided);
        }
        if put.ignore_lease && put.lease != 0 {
            return Err(ErrorCode::LeaseProvided);
        }
        Ok(())
    }

    fn delete(&self, delete: &DeleteRangeRequest) -> Result<(), ErrorCode> {
        self.key_range(&delete.key, &delete.range_end)
    }

    fn compare(&self, compare: &Compare) -> Result<(), ErrorCode> {
        self.key_range(&compare.key, &compare.range_end)
    }

    /// Checks one txn level and recurses; `total_ops` counts the whole tree.
    fn txn(&self, txn: &TxnRequest, depth: usize, total_ops: &mut usize) -> Result<(), ErrorCode> {
        if depth > TXN_DEPTH_MAX {
            return Err(ErrorCode::InvalidField);
        }
        let max = self.limits.max_txn_ops;
        if txn.compare.len() > max || txn.success.len() > max || txn.failure.len() > max {
            return Err(ErrorCode::TooManyOps);
        }
        *total_ops += txn.success.len() + txn.failure.len();
        if *total_ops > max.saturating_mul(TXN_DEPTH_MAX) {
            return Err(ErrorCode::TooManyOps);
        }
        txn.compare.iter().try_for_each(|compare| self.compare(compare))?;
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(range) => self.range(range)?,
                RequestOp::Put(put) => self.put(put)?,
                RequestOp::DeleteRange(delete) => self.delete(delete)?,
                RequestOp::Txn(inner) => self.txn(inner, depth + 1, total_ops)?,
            }
        }
        Ok(())
    }
}

/// The names, passwords and tokens of auth requests: user and role names
/// non-empty and at most `USER_NAME_BYTES_MAX`, a password at most
/// `PASSWORD_BYTES_MAX` (it is hashed on a worker), a token at most
/// `TOKEN_BYTES_MAX`.
fn auth_fields(request: &Request) -> Result<(), ErrorCode> {
    let user = |name: &str| bounded_name(name, ErrorCode::UserEmpty);
    let role = |name: &str| bounded_name(name, ErrorCode::RoleEmpty);
    let password = |p: &str| match p.len() > auth::PASSWORD_BYTES_MAX {
        true => Err(ErrorCode::TooManyAuthEntries),
        false => Ok(()),
    };
    match request {
        Request::Authenticate(r) => user(&r.name).and_then(|()| password(&r.password)),
        Request::UseToken(r) if r.token.len() > auth::token::TOKEN_BYTES_MAX => {
            Err(ErrorCode::InvalidAuthToken)
        }
        Request::UserAdd(r) => user(&r.name).and_then(|()| password(&r.password)),
        Request::UserChangePassword(r) => user(&r.name).and_then(|()| password(&r.password)),
        Request::UserGet(r) | Request::UserDelete(r) => user(&r.name),
        Request::UserGrantRole(r) | Request::UserRevokeRole(r) => {
            user(&r.user).and_then(|()| role(&r.role))
        }
        Request::RoleAdd(r) | Request::RoleGet(r) | Request::RoleDelete(r) => role(&r.role),
        Request::RoleGrantPermission(r) => role(&r.role),
        Request::RoleRevokePermission(r) => role(&r.role),
        _ => Ok(()),
    }
}

fn bounded_name(name: &str, empty: ErrorCode) -> Result<(), ErrorCode> {
    if name.is_empty() {
        return Err(empty);
    }
    if name.len() > auth::USER_NAME_BYTES_MAX {
        return Err(ErrorCode::TooManyAuthEntries);
    }
    Ok(())
}

fn non_negative(values: &[i64]) -> Result<(), ErrorCode> {
    if values.iter().any(|&v| v < 0) { Err(ErrorCode::InvalidField) } else { Ok(()) }
}

/// The keys one branch may write: puts by key, deletes by range.
#[derive(Default)]
struct Writes<'a> {
    puts: BTreeSet<&'a [u8]>,
    deletes: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Writes<'a> {
    fn deleted(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|&(start, end)| in_range(key, start, end))
    }

    /// Adds a put unless it repeats a put or falls in a deleted range; `also_ok`
    /// lists keys it may repeat (the other branch of the same nested txn).
    fn add_put(&mut self, key: &'a [u8], also_ok: &BTreeSet<&[u8]>) -> Result<(), ErrorCode> {
        let repeated = self.puts.contains(key) && !also_ok.contains(key);
        if repeated || self.deleted(key) {
            return Err(ErrorCode::DuplicateKey);
        }
        self.puts.insert(key);
        Ok(())
    }
}

/// etcd's rule: in one branch a key is put at most once and never both put
/// and deleted. The two branches of a nested txn exclude each other, so they
/// may put the same key, and one's deletes do not meet the other's puts.
/// As in etcd, a nested txn's puts are checked against the deletes known
/// when it is reached (this level's, and earlier nested txns'), and this
/// level's puts against all of them.
fn branch_writes(ops: &[RequestOp]) -> Result<Writes<'_>, ErrorCode> {
    let mut writes = Writes::default();
    let none = BTreeSet::new();
    for op in ops {
        if let RequestOp::DeleteRange(delete) = op {
            writes.deletes.push((&delete.key, &delete.range_end));
        }
    }
    for op in ops {
        let RequestOp::Txn(inner) = op else { continue };
        let then = branch_writes(&inner.success)?;
        let otherwise = branch_writes(&inner.failure)?;
        then.puts.iter().try_for_each(|key| writes.add_put(key, &none))?;
        otherwise.puts.iter().try_for_each(|key| writes.add_put(key, &then.puts))?;
        writes.deletes.extend(then.deletes.into_iter().chain(otherwise.deletes));
    }
    for op in ops {
        if let RequestOp::Put(put) = op {
            writes.add_put(&put.key, &none)?;
        }
    }
    Ok(writes)
}

/// etcd's range rule: an empty end is the single key, `[0]` is "to the end".
pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

/// A raise or a clear names one alarm of one member; a `Get` names none.
fn alarm(r: &AlarmRequest) -> Result<(), ErrorCode> {
    if r.action == AlarmAction::Get {
        return Ok(());
    }
    member_id(r.member_id)?;
    match r.alarm {
        AlarmType::None => Err(ErrorCode::AlarmNotGiven),
        AlarmType::NoSpace | AlarmType::Corrupt => Ok(()),
    }
}

fn member_id(id: u64) -> Result<(), ErrorCode> {
    if id == 0 { Err(ErrorCode::MemberNotFound) } else { Ok(()) }
}

fn member_urls(urls: &[String]) -> Result<(), ErrorCode> {
    let bad = |u: &String| u.is_empty() || u.len() > MEMBER_URL_BYTES_MAX;
    if urls.is_empty() || urls.len() > MEMBER_URLS_MAX || urls.iter().any(bad) {
        return Err(ErrorCode::MemberBadUrls);
    }
    Ok(())
}

/// The same rule as `--name`: the name is written into `--initial-cluster`.
fn member_name(name: &str) -> Result<(), ErrorCode> {
    let bad = name.is_empty()
        || name.len() > MEMBER_NAME_BYTES_MAX
        || name.contains(['=', ','])
        || name.trim() != name;
    if bad { Err(ErrorCode::InvalidField) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_names_passwords_and_tokens_are_bounded() {
        let limits = Limits::default();
        let user = |name: &str, password: &str| {
            Request::UserAdd(crate::proto::types::UserAddRequest {
                name: name.into(),
                password: password.into(),
                no_password: false,
            })
        };
        assert!(validate(user("alice", "pw"), &limits).is_ok());
        assert_eq!(validate(user("", "pw"), &limits), Err(ErrorCode::UserEmpty));
        let long_name = "n".repeat(auth::USER_NAME_BYTES_MAX + 1);
        assert_eq!(validate(user(&long_name, "pw"), &limits), Err(ErrorCode::TooManyAuthEntries));
        let long_password = "p".repeat(auth::PASSWORD_BYTES_MAX + 1);
        assert_eq!(
            validate(user("a", &long_password), &limits),
            Err(ErrorCode::TooManyAuthEntries)
        );
        let role = Request::RoleAdd(crate::proto::types::RoleRequest { role: String::new() });
        assert_eq!(validate(role, &limits), Err(ErrorCode::RoleEmpty));
        let token = "t".repeat(auth::token::TOKEN_BYTES_MAX + 1);
        let use_token = Request::UseToken(crate::proto::types::UseTokenRequest { token });
        assert_eq!(validate(use_token, &limits), Err(ErrorCode::InvalidAuthToken));
    }
}
