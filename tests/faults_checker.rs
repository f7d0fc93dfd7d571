//! The linearizability checker on small hand-written histories, each with a
//! known answer: linearizable ones must pass and broken ones must fail.

mod faults;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use faults::checker::{
    Compare, Input, Observed, Operation, Output, Verdict, acked_lost, check_history,
    check_serializable,
};

const BUDGET: Duration = Duration::from_secs(5);

fn op(
    client: usize,
    call_ns: u64,
    return_ns: Option<u64>,
    input: Input,
    output: Output,
) -> Operation {
    Operation { client, key: 1, call_ns, return_ns, input, output }
}

fn put(client: usize, span: (u64, u64), value: u64, revision: i64) -> Operation {
    op(client, span.0, Some(span.1), Input::Put { value }, Output::Put { revision })
}

fn put_lost(client: usize, call_ns: u64, value: u64) -> Operation {
    op(client, call_ns, None, Input::Put { value }, Output::Unknown)
}

fn get(client: usize, span: (u64, u64), seen: Option<(u64, i64, i64)>, header: i64) -> Operation {
    let kv = seen.map(|(value, mod_revision, version)| Observed { value, mod_revision, version });
    op(client, span.0, Some(span.1), Input::Get, Output::Get { kv, header_revision: header })
}

fn cas(
    client: usize,
    span: (u64, u64),
    compare: Compare,
    value: u64,
    ok: bool,
    rev: i64,
) -> Operation {
    let output = Output::Cas { succeeded: ok, revision: rev };
    op(client, span.0, Some(span.1), Input::Cas { compare, value }, output)
}

fn delete(client: usize, span: (u64, u64), deleted: bool, revision: i64) -> Operation {
    op(client, span.0, Some(span.1), Input::Delete, Output::Delete { deleted, revision })
}

fn verdict(ops: &[Operation]) -> Verdict {
    check_history(ops, BUDGET)
}

#[test]
fn sequential_puts_and_reads_are_linearizable() {
    let ops = [
        put(0, (0, 10), 1, 2),
        get(1, (20, 30), Some((1, 2, 1)), 2),
        put(0, (40, 50), 2, 3),
        get(1, (60, 70), Some((2, 3, 2)), 3),
    ];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
}

#[test]
fn a_stale_read_after_a_completed_write_is_not() {
    let ops = [put(0, (0, 10), 1, 2), put(0, (20, 30), 2, 3), get(1, (40, 50), Some((1, 2, 1)), 3)];
    assert_eq!(verdict(&ops), Verdict::Illegal { key: 1 });
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    let old = [put(0, (0, 10), 1, 2), put(0, (20, 60), 2, 3), get(1, (30, 40), Some((1, 2, 1)), 2)];
    let new = [put(0, (0, 10), 1, 2), put(0, (20, 60), 2, 3), get(1, (30, 40), Some((2, 3, 2)), 3)];
    assert_eq!(verdict(&old), Verdict::Linearizable);
    assert_eq!(verdict(&new), Verdict::Linearizable);
}

#[test]
fn a_lost_acknowledged_write_is_not() {
    // The put was acknowledged, yet a later read finds the key absent.
    let ops = [put(0, (0, 10), 1, 2), get(1, (20, 30), None, 2)];
    assert_eq!(verdict(&ops), Verdict::Illegal { key: 1 });
}

#[test]
fn two_reads_may_not_see_writes_in_opposite_orders() {
    // Both puts are concurrent, but once one reader saw 2 then 1 in real
    // time order, another may not see 1 before 2... here, one reader sees the
    // new value and a later read sees the older one.
    let ops = [
        put(0, (0, 100), 1, 2),
        put(1, (0, 100), 2, 3),
        get(2, (10, 20), Some((2, 3, 2)), 3),
        get(3, (30, 40), Some((1, 2, 1)), 3),
    ];
    assert_eq!(verdict(&ops), Verdict::Illegal { key: 1 });
}

#[test]
fn revisions_in_answers_are_checked() {
    // The value is right but the revision is older than the write's.
    let wrong_revision = [put(0, (0, 10), 1, 5), get(1, (20, 30), Some((1, 4, 1)), 5)];
    assert_eq!(verdict(&wrong_revision), Verdict::Illegal { key: 1 });
    // A second write acknowledged at a lower revision than the first.
    let backwards = [put(0, (0, 10), 1, 5), put(0, (20, 30), 2, 4)];
    assert_eq!(verdict(&backwards), Verdict::Illegal { key: 1 });
    // A header older than the value it carries.
    let header = [put(0, (0, 10), 1, 5), get(1, (20, 30), Some((1, 5, 1)), 4)];
    assert_eq!(verdict(&header), Verdict::Illegal { key: 1 });
}

#[test]
fn compare_and_swap_on_version_and_value() {
    let ops = [
        put(0, (0, 10), 1, 2),
        cas(0, (20, 30), Compare::Version(1), 2, true, 3),
        cas(1, (40, 50), Compare::Version(1), 3, false, 3),
        cas(1, (60, 70), Compare::Value(2), 4, true, 4),
        get(2, (80, 90), Some((4, 4, 3)), 4),
    ];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
}

#[test]
fn reordered_compare_and_swaps_are_not() {
    // Two sequential CAS on version 0 may not both succeed.
    let both = [
        cas(0, (0, 10), Compare::Version(0), 1, true, 2),
        cas(1, (20, 30), Compare::Version(0), 2, true, 3),
    ];
    assert_eq!(verdict(&both), Verdict::Illegal { key: 1 });
    // The second CAS saw the first one's value before the first was invoked.
    let early = [
        cas(1, (0, 10), Compare::Value(1), 2, true, 3),
        cas(0, (20, 30), Compare::Version(0), 1, true, 2),
    ];
    assert_eq!(verdict(&early), Verdict::Illegal { key: 1 });
}

#[test]
fn a_failed_compare_must_really_fail() {
    let ops = [put(0, (0, 10), 1, 2), cas(1, (20, 30), Compare::Version(1), 2, false, 2)];
    assert_eq!(verdict(&ops), Verdict::Illegal { key: 1 });
}

#[test]
fn deletes_remove_the_key_and_reset_its_version() {
    let ops = [
        put(0, (0, 10), 1, 2),
        delete(0, (20, 30), true, 3),
        delete(1, (40, 50), false, 3),
        get(1, (60, 70), None, 3),
        put(0, (80, 90), 2, 4),
        get(1, (100, 110), Some((2, 4, 1)), 4),
    ];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
    let resurrected =
        [put(0, (0, 10), 1, 2), delete(0, (20, 30), true, 3), get(1, (40, 50), Some((1, 2, 1)), 3)];
    assert_eq!(verdict(&resurrected), Verdict::Illegal { key: 1 });
}

#[test]
fn an_unknown_write_that_took_effect_later() {
    // The answer was lost; a read long after the call still finds the value,
    // at a revision nobody was told.
    let ops = [put_lost(0, 0, 1), get(1, (1_000, 1_010), Some((1, 7, 1)), 7)];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
}

#[test]
fn an_unknown_write_that_never_happened() {
    let ops = [put_lost(0, 0, 1), get(1, (1_000, 1_010), None, 1), put(1, (2_000, 2_010), 2, 2)];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
}

#[test]
fn an_unknown_write_cannot_take_effect_before_its_call() {
    let ops = [get(1, (0, 10), Some((1, 2, 1)), 2), put_lost(0, 20, 1)];
    assert_eq!(verdict(&ops), Verdict::Illegal { key: 1 });
}

#[test]
fn an_unknown_write_cannot_flicker() {
    // Seen, then gone, then seen again with nothing else writing.
    let ops = [put_lost(0, 0, 1), get(1, (10, 20), Some((1, 2, 1)), 2), get(1, (30, 40), None, 2)];
    assert_eq!(verdict(&ops), Verdict::Illegal { key: 1 });
}

#[test]
fn keys_are_checked_apart() {
    let mut other = put(0, (0, 10), 9, 2);
    other.key = 2;
    let mut read_other = get(1, (20, 30), Some((9, 2, 1)), 3);
    read_other.key = 2;
    let ops = [other, put(0, (15, 18), 1, 3), read_other, get(1, (40, 50), Some((1, 3, 1)), 3)];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
}

#[test]
fn a_large_concurrent_history_finishes_and_a_tiny_budget_says_unknown() {
    // 12 writers all concurrent, then a read of the last revision: many
    // orders exist, the memo keeps the search small.
    let mut ops: Vec<Operation> =
        (0..12).map(|i| put(i, (0, 1_000), i as u64 + 1, i as i64 + 2)).collect();
    ops.push(get(99, (2_000, 2_010), Some((12, 13, 12)), 13));
    assert_eq!(verdict(&ops), Verdict::Linearizable);
    let mut lost: Vec<Operation> = (0..14).map(|i| put_lost(i, 0, i as u64 + 1)).collect();
    lost.push(get(99, (2_000, 2_010), None, 1));
    let impossible = check_history(&lost, Duration::ZERO);
    assert!(
        matches!(impossible, Verdict::Unknown { key: 1 } | Verdict::Linearizable),
        "{impossible:?}"
    );
}

#[test]
fn serializable_reads_follow_the_weaker_rule() {
    let writes = [put(0, (0, 10), 1, 2), put(0, (20, 30), 2, 3)];
    let mut stale_ok = get(1, (40, 50), Some((1, 2, 1)), 2);
    stale_ok.client = 1;
    assert!(check_serializable(&writes, &[stale_ok.clone()]).is_ok());
    let backwards = get(1, (60, 70), None, 1);
    assert!(check_serializable(&writes, &[stale_ok.clone(), backwards]).is_err());
    let invented = get(1, (60, 70), Some((77, 3, 2)), 3);
    assert!(check_serializable(&writes, &[invented]).is_err());
}

#[test]
fn acked_lost_counts_acknowledged_writes_missing_at_the_end() {
    let ops = [put(0, (0, 10), 1, 2), put(0, (20, 30), 2, 3)];
    let mut kept = BTreeMap::new();
    kept.insert(1, Some(Observed { value: 2, mod_revision: 3, version: 2 }));
    assert_eq!(acked_lost(&ops, &kept), 0);
    let mut rolled_back = BTreeMap::new();
    rolled_back.insert(1, Some(Observed { value: 1, mod_revision: 2, version: 1 }));
    assert_eq!(acked_lost(&ops, &rolled_back), 1);
    let mut gone = BTreeMap::new();
    gone.insert(1, None);
    assert_eq!(acked_lost(&ops, &gone), 2);
}
