//! Validation at the boundary: each rule of `proto::validate`, one test each,
//! with the error code and gRPC status a client sees.

mod proto_samples;

use ember::proto::validate::{KEY_BYTES_MAX_DEFAULT, LEASE_TTL_SECS_MAX};
use ember::proto::*;
use proto_samples::*;

fn check(request: Request) -> Result<Request, ErrorCode> {
    validate(request, &Limits::default()).map(ValidRequest::into_request)
}

fn txn_of(success: Vec<RequestOp>) -> Request {
    Request::Txn(TxnRequest { compare: Vec::new(), success, failure: Vec::new() })
}

fn put_op(key: &str) -> RequestOp {
    RequestOp::Put(put(key))
}

fn delete_op(key: &str, end: &str) -> RequestOp {
    RequestOp::DeleteRange(delete(key, end))
}

#[test]
fn every_sample_request_is_valid_and_unchanged() {
    for request in requests() {
        assert_eq!(check(request.clone()), Ok(request));
    }
}

#[test]
fn empty_keys_are_refused_as_invalid_argument() {
    let empty_range = Request::Range(RangeRequest::default());
    assert_eq!(check(empty_range), Err(ErrorCode::EmptyKey));
    assert_eq!(check(Request::Put(put(""))), Err(ErrorCode::EmptyKey));
    assert_eq!(check(Request::DeleteRange(delete("", ""))), Err(ErrorCode::EmptyKey));
    assert_eq!(check(txn_of(vec![put_op("")])), Err(ErrorCode::EmptyKey));
    let mut txn = txn();
    txn.compare[0].key.clear();
    assert_eq!(check(Request::Txn(txn)), Err(ErrorCode::EmptyKey));
    assert_eq!(ErrorCode::EmptyKey.grpc(), GrpcCode::InvalidArgument);
}

#[test]
fn a_watch_with_an_empty_key_starts_at_the_smallest_key() {
    let watch = WatchCreateRequest { range_end: vec![0], ..Default::default() };
    let Ok(Request::WatchCreate(checked)) = check(Request::WatchCreate(watch)) else {
        panic!("an empty watch key is allowed");
    };
    assert_eq!(checked.key, vec![0]);
}

#[test]
fn keys_over_the_limit_are_refused() {
    let long = "k".repeat(KEY_BYTES_MAX_DEFAULT + 1);
    assert_eq!(check(Request::Put(put(&long))), Err(ErrorCode::KeyTooLong));
    assert_eq!(check(Request::DeleteRange(delete("a", &long))), Err(ErrorCode::KeyTooLong));
    let tight = Limits { max_key_bytes: 2, ..Limits::default() };
    assert_eq!(validate(Request::Put(put("abc")), &tight), Err(ErrorCode::KeyTooLong));
    assert!(validate(Request::Put(put("ab")), &tight).is_ok());
}

#[test]
fn negative_limits_and_revision_filters_are_refused() {
    let negative_limit = RangeRequest { limit: -1, ..range() };
    assert_eq!(check(Request::Range(negative_limit)), Err(ErrorCode::InvalidField));
    let negative_filter = RangeRequest { min_create_revision: -5, ..range() };
    assert_eq!(check(Request::Range(negative_filter)), Err(ErrorCode::InvalidField));
    // As in etcd, a range revision of 0 or less means "the newest".
    assert!(check(Request::Range(RangeRequest { revision: -1, ..range() })).is_ok());
    let compact = CompactionRequest { revision: -3, physical: false };
    assert_eq!(check(Request::Compact(compact)), Err(ErrorCode::InvalidField));
    let watch = WatchCreateRequest { key: b"k".to_vec(), start_revision: -1, ..Default::default() };
    assert_eq!(check(Request::WatchCreate(watch)), Err(ErrorCode::InvalidField));
}

#[test]
fn ignore_flags_refuse_the_field_they_ignore() {
    let with_value = PutRequest { ignore_value: true, ..put("/a") };
    assert_eq!(check(Request::Put(with_value)), Err(ErrorCode::ValueProvided));
    let with_lease = PutRequest { ignore_lease: true, ..put("/a") };
    assert_eq!(check(Request::Put(with_lease)), Err(ErrorCode::LeaseProvided));
    let both_ignored = PutRequest {
        ignore_value: true,
        ignore_lease: true,
        value: Vec::new(),
        lease: 0,
        ..put("/a")
    };
    assert!(check(Request::Put(both_ignored)).is_ok());
}

#[test]
fn txn_op_counts_are_checked_per_list_and_per_level() {
    let limits = Limits { max_txn_ops: 3, ..Limits::default() };
    let ops = |n: usize| (0..n).map(|i| put_op(&format!("/k{i}"))).collect::<Vec<_>>();
    assert!(validate(txn_of(ops(3)), &limits).is_ok());
    assert_eq!(validate(txn_of(ops(4)), &limits), Err(ErrorCode::TooManyOps));
    let compares =
        TxnRequest { compare: vec![txn().compare[0].clone(); 4], ..TxnRequest::default() };
    assert_eq!(validate(Request::Txn(compares), &limits), Err(ErrorCode::TooManyOps));
    let inner = RequestOp::Txn(TxnRequest { failure: ops(4), ..TxnRequest::default() });
    assert_eq!(validate(txn_of(vec![inner]), &limits), Err(ErrorCode::TooManyOps));
}

#[test]
fn a_txn_tree_is_bounded_in_total() {
    // Every level within the per-list limit, but the tree as a whole is not:
    // 3 levels of 3 txns each, each leaf with 3 puts, is 39 ops > 3 * 8.
    let limits = Limits { max_txn_ops: 3, ..Limits::default() };
    let mut level = TxnRequest::default();
    for depth in 0..3 {
        let mut next = TxnRequest::default();
        for i in 0..3 {
            next.success.push(if depth == 0 {
                put_op(&format!("/d{depth}/{i}"))
            } else {
                RequestOp::Txn(level.clone())
            });
        }
        level = next;
    }
    assert_eq!(validate(Request::Txn(level), &limits), Err(ErrorCode::TooManyOps));
}

#[test]
fn duplicate_writes_in_one_branch_are_refused() {
    assert_eq!(check(txn_of(vec![put_op("/a"), put_op("/a")])), Err(ErrorCode::DuplicateKey));
    assert_eq!(
        check(txn_of(vec![put_op("/a/1"), delete_op("/a/", "/a0")])),
        Err(ErrorCode::DuplicateKey)
    );
    assert_eq!(
        check(txn_of(vec![delete_op("/a", ""), put_op("/a")])),
        Err(ErrorCode::DuplicateKey)
    );
    assert_eq!(
        check(txn_of(vec![delete_op("/a", "\0"), put_op("/z")])),
        Err(ErrorCode::DuplicateKey)
    );
    // Deletes may overlap each other, and reads collide with nothing.
    assert!(check(txn_of(vec![delete_op("/a", "/c"), delete_op("/b", ""), put_op("/c")])).is_ok());
    // The two branches never both run.
    let both = TxnRequest { success: vec![put_op("/a")], failure: vec![put_op("/a")], ..txn() };
    assert!(check(Request::Txn(both)).is_ok());
    assert_eq!(ErrorCode::DuplicateKey.grpc(), GrpcCode::InvalidArgument);
}

#[test]
fn nested_txns_collide_with_their_enclosing_branch() {
    let nested =
        |success, failure| RequestOp::Txn(TxnRequest { compare: Vec::new(), success, failure });
    // Either branch of the inner txn may run alongside the outer put.
    let inner = nested(vec![put_op("/b")], vec![put_op("/a")]);
    assert_eq!(check(txn_of(vec![put_op("/a"), inner])), Err(ErrorCode::DuplicateKey));
    // The inner branches exclude each other, so they may share a key.
    let inner = nested(vec![put_op("/a")], vec![put_op("/a")]);
    assert!(check(txn_of(vec![put_op("/b"), inner])).is_ok());
    // A duplicate inside one inner branch is found too.
    let inner = nested(vec![put_op("/c"), put_op("/c")], Vec::new());
    assert_eq!(check(txn_of(vec![inner])), Err(ErrorCode::DuplicateKey));
}

#[test]
fn lease_ttl_is_capped() {
    let grant = |ttl_secs| Request::LeaseGrant(LeaseGrantRequest { ttl_secs, id: 0 });
    assert!(check(grant(LEASE_TTL_SECS_MAX)).is_ok());
    assert_eq!(check(grant(LEASE_TTL_SECS_MAX + 1)), Err(ErrorCode::LeaseTtlTooLarge));
    assert_eq!(ErrorCode::LeaseTtlTooLarge.grpc(), GrpcCode::OutOfRange);
}

#[test]
fn write_classification_follows_the_ops_inside_a_txn() {
    let read_only = txn_of(vec![RequestOp::Range(range())]);
    assert!(!read_only.is_write());
    let nested_write = txn_of(vec![RequestOp::Txn(TxnRequest {
        failure: vec![delete_op("/x", "")],
        ..TxnRequest::default()
    })]);
    assert!(nested_write.is_write());
    assert!(Request::Put(put("/a")).is_write());
    assert!(!Request::Status.is_write());
}

#[test]
fn prefix_range_ends_follow_etcd() {
    assert_eq!(prefix_range_end(b"/app/"), b"/app0");
    assert_eq!(prefix_range_end(b"a\xff"), b"b");
    assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
    assert_eq!(prefix_range_end(b""), vec![0]);
    let end = prefix_range_end(b"/app/");
    assert!(ember::proto::validate::in_range(b"/app/x", b"/app/", &end));
    assert!(!ember::proto::validate::in_range(b"/app0", b"/app/", &end));
}
