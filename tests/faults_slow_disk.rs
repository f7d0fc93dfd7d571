//! The fault scenarios on a slow disk: every WAL sync of every member takes
//! 4 ms more (`EMBER_FAULT_SYNC_DELAY_MS`), as on an SD card that allows a
//! few hundred write IOs a second. Writes then wait in held batches for the
//! clients the last sync answered (`server/gather.rs`) while the leader is
//! killed or cut off. The checks are `faults::scenario`'s, unchanged: a
//! linearizable history, no acknowledged write lost, the same keyspace and
//! hash on every member, ordered watches, recovery within the bound, no
//! panic. The members' `/metrics` must show that batches were held, so the
//! held path is what ran.
//!
//! Needs `--features fault-injection` (the delay is read only in such a
//! build); `.ci/run` passes it.

mod faults;
mod support;

use faults::leader::{isolate_leader_repeatedly, kill_leader_repeatedly};
use faults::scenario::{Options, Run, run_with};
use support::cluster::scrape_metrics;

const SLOW: Options = Options {
    compact: false,
    snapshot_count: 0,
    serializable_may_regress: false,
    sync_delay_ms: 4,
};

/// `ember_write_batch_holds_total` of member `i`, 0 when it does not answer.
fn holds_of(run: &Run, i: usize) -> u64 {
    let answer = scrape_metrics(&run.cluster.members[i].endpoint()).unwrap_or_default();
    let line = answer.lines().find(|l| l.starts_with("ember_write_batch_holds_total "));
    line.and_then(|l| l.split(' ').nth(1)?.parse().ok()).unwrap_or(0)
}

fn assert_batches_were_held(run: &Run) {
    let holds: u64 = (0..run.cluster.members.len()).map(|i| holds_of(run, i)).sum();
    println!("faults slow disk: {holds} batches held on the live members");
    assert!(holds > 0, "no batch was held: the slow-disk path did not run");
}

#[test]
fn kill_leader_on_a_slow_disk() {
    run_with("slow_disk_kill_leader", 3, SLOW, |run| {
        kill_leader_repeatedly(run);
        assert_batches_were_held(run);
    });
}

#[test]
fn partition_leader_on_a_slow_disk() {
    run_with("slow_disk_partition_leader", 3, SLOW, |run| {
        isolate_leader_repeatedly(run, false);
        assert_batches_were_held(run);
    });
}
