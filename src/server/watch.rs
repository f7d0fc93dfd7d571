//! Watches: each one is a position in the store's change log plus a filter.
//!
//! A watch holds no events of its own. After every apply (and when its
//! connection's write buffer drains) the loop pulls the changes since the
//! watch's position from the store (`Store::events_since`) and encodes them
//! straight into the connection's write buffer. History from a past start
//! revision and live changes take the same path, so events arrive in
//! revision order, never twice and never with a gap.
//!
//! A slow reader costs no memory: once its connection holds
//! `WATCH_FEED_LIMIT_BYTES` unsent, its watches stop being pulled and keep
//! their position; the store's history is what holds the backlog. If a
//! compaction overtakes that position the watch is cancelled with the
//! compact revision, as for a start revision that is already compacted.
//!
//! A long history is sent over many loop iterations: every pass of every
//! watch draws on one `FeedBudget` per iteration (events, bytes and the
//! log entries and versions looked at), and a pass that spends it stops at
//! the next revision boundary. Whatever is left waits at the watch's
//! position, so writes that land meanwhile are met in order when the watch
//! gets there, neither lost nor sent twice. The budget is passed by at most
//! one `events_since` call and the rest of one revision.
//!
//! Frames: a pull stops only on a revision boundary, and frames are cut only
//! between revisions, so one revision's events always share one frame. A
//! revision whose events do not fit the client's frame limit cancels the
//! watch (`EventsTooLarge`).

use crate::mvcc::{self, Revision, Store};
use crate::proto::{self, CancelReason, EventKind, ResponseHeader, WatchMessage, encode_watch};

use crate::state::command;

/// Events pulled for one watch per pass; the pass stops at the next
/// revision boundary after it, so other watches get their turn in the same
/// iteration.
pub const PULL_EVENTS_MAX: usize = 1024;
/// Bytes of events (as `estimate_bytes` counts them) after which a pass
/// stops at the next revision boundary: what one pass adds to a
/// connection's write buffer stays near this whatever the values' sizes,
/// and a quarter of the iteration's budget leaves room for other watches.
pub const PULL_BYTES_MAX: usize = 256 << 10;
/// Events asked of the store at a time within a pass, so the byte bound is
/// checked every few events: a pass passes `PULL_BYTES_MAX` by at most
/// this many events.
const PULL_BATCH_EVENTS: usize = 8;
/// Events all watches together may pull in one loop iteration: the range
/// step's key count (`RANGE_STEP_KEYS_MAX`), since building an event costs
/// about what building a range's key-value does.
pub const FEED_ITERATION_EVENTS_MAX: usize = 4096;
/// Bytes of events all watches together may pull in one loop iteration:
/// the range step's byte bound.
pub const FEED_ITERATION_BYTES_MAX: usize = 1 << 20;
/// Log entries and key versions all watches together may look at in one
/// loop iteration: two of the store's own scan bounds per call, so a watch
/// matching few of many changes still moves on every iteration while the
/// loop is not held by the scan.
pub const FEED_ITERATION_SCANNED_MAX: usize = 2 * mvcc::WATCH_SCAN_CHANGES_MAX;

/// What the watches may still pull in this loop iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedBudget {
    events: usize,
    bytes: usize,
    scanned: usize,
}

impl FeedBudget {
    /// A whole iteration's budget.
    pub fn per_iteration() -> FeedBudget {
        FeedBudget {
            events: FEED_ITERATION_EVENTS_MAX,
            bytes: FEED_ITERATION_BYTES_MAX,
            scanned: FEED_ITERATION_SCANNED_MAX,
        }
    }

    /// True once any of the three is used up: no new pass starts, and one
    /// under way stops at its next revision boundary.
    pub fn spent(&self) -> bool {
        self.events == 0 || self.bytes == 0 || self.scanned == 0
    }

    fn charge(&mut self, events: usize, bytes: usize, scanned: usize) {
        self.events = self.events.saturating_sub(events);
        self.bytes = self.bytes.saturating_sub(bytes);
        self.scanned = self.scanned.saturating_sub(scanned);
    }
}

/// Target size of one events frame: small enough to interleave with other
/// answers on the connection, large enough to amortise the header.
pub const EVENTS_FRAME_BYTES_TARGET: usize = 256 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// The first change not yet considered.
    pub next: Revision,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub progress_notify: bool,
}

/// What a pass left the watch in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome {
    /// Every change up to the current revision has been sent.
    CaughtUp,
    /// More changes wait; pull again soon.
    Behind,
    /// The watch ended; its `Cancelled` frame has been written.
    Cancelled,
}

/// Pulls the watch's next changes, charging them to `budget`, and appends
/// their frames to `out`.
pub fn pass(
    store: &Store,
    watch_id: u64,
    watcher: &mut Watcher,
    header: ResponseHeader,
    client_max_frame_bytes: u32,
    budget: &mut FeedBudget,
    out: &mut Vec<u8>,
) -> PassOutcome {
    let (events, caught_up) = match pull(store, watcher, budget) {
        Ok(pulled) => pulled,
        Err(compact_revision) => {
            let reason = CancelReason::Compacted;
            cancel(watch_id, header, reason, compact_revision, client_max_frame_bytes, out);
            return PassOutcome::Cancelled;
        }
    };
    let events: Vec<proto::Event> = events
        .into_iter()
        .map(command::event)
        .filter(|e| match e.kind {
            EventKind::Put => !watcher.no_put,
            EventKind::Delete => !watcher.no_delete,
        })
        .collect();
    if !write_events(watch_id, events, header, client_max_frame_bytes, out) {
        let reason = CancelReason::EventsTooLarge;
        cancel(watch_id, header, reason, 0, client_max_frame_bytes, out);
        return PassOutcome::Cancelled;
    }
    if caught_up { PassOutcome::CaughtUp } else { PassOutcome::Behind }
}

/// Changes from the watch's position, ending on a revision boundary; `Err`
/// with the compact revision when the position was compacted away.
fn pull(
    store: &Store,
    w: &mut Watcher,
    budget: &mut FeedBudget,
) -> Result<(Vec<mvcc::Event>, bool), u64> {
    let mut events = Vec::new();
    let mut pulled_bytes = 0;
    loop {
        let batch = store
            .events_since(w.next, &w.key, &w.range_end, PULL_BATCH_EVENTS, w.prev_kv)
            .map_err(|e| match e {
                mvcc::Error::Compacted { compact_revision } => compact_revision,
                _ => store.compact_revision(),
            })?;
        let batch_bytes = batch.events.iter().map(store_event_bytes).sum::<usize>();
        budget.charge(batch.events.len(), batch_bytes, batch.scanned);
        pulled_bytes += batch_bytes;
        events.extend(batch.events);
        w.next = batch.next;
        if batch.caught_up {
            return Ok((events, true));
        }
        // Inside a revision: keep going, its events must not be split.
        let full =
            events.len() >= PULL_EVENTS_MAX || pulled_bytes >= PULL_BYTES_MAX || budget.spent();
        if w.next.sub == 0 && full {
            return Ok((events, false));
        }
    }
}

fn store_event_bytes(event: &mvcc::Event) -> usize {
    let prev = event.prev_kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len() + 40);
    event.kv.key.len() + event.kv.value.len() + 40 + prev
}

/// Appends the events in frames cut between revisions; false when one
/// revision alone does not fit the client's limit (nothing of it written).
fn write_events(
    watch_id: u64,
    events: Vec<proto::Event>,
    header: ResponseHeader,
    client_max_frame_bytes: u32,
    out: &mut Vec<u8>,
) -> bool {
    let target = EVENTS_FRAME_BYTES_TARGET.min(client_max_frame_bytes as usize / 2);
    let mut frame: Vec<proto::Event> = Vec::new();
    let mut frame_bytes = 0;
    let mut iter = events.into_iter().peekable();
    while let Some(event) = iter.next() {
        frame_bytes += estimate_bytes(&event);
        let revision = event.kv.mod_revision;
        frame.push(event);
        let boundary = iter.peek().is_none_or(|next| next.kv.mod_revision != revision);
        if boundary && (frame_bytes >= target || iter.peek().is_none()) {
            let message = WatchMessage::Events { header, events: std::mem::take(&mut frame) };
            if encode_watch(out, watch_id, &message, client_max_frame_bytes).is_err() {
                return false;
            }
            frame_bytes = 0;
        }
    }
    true
}

fn estimate_bytes(event: &proto::Event) -> usize {
    let prev = event.prev_kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len() + 40);
    event.kv.key.len() + event.kv.value.len() + 40 + prev
}

/// Appends the watch's last frame.
pub fn cancel(
    watch_id: u64,
    header: ResponseHeader,
    reason: CancelReason,
    compact_revision: u64,
    client_max_frame_bytes: u32,
    out: &mut Vec<u8>,
) {
    let compact_revision = i64::try_from(compact_revision).unwrap_or(i64::MAX);
    let message = WatchMessage::Cancelled { header, reason, compact_revision };
    encode_watch(out, watch_id, &message, client_max_frame_bytes)
        .expect("a cancel frame is far below the smallest frame limit");
}

/// Appends a progress frame: every event up to `header.revision` was sent.
pub fn progress(
    watch_id: u64,
    header: ResponseHeader,
    client_max_frame_bytes: u32,
    out: &mut Vec<u8>,
) {
    let message = WatchMessage::Progress { header };
    encode_watch(out, watch_id, &message, client_max_frame_bytes)
        .expect("a progress frame is far below the smallest frame limit");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{FrameDecoder, ServerMessage, decode_server_message};

    fn put(store: &mut Store, key: &[u8]) {
        let req =
            mvcc::PutRequest { key: key.to_vec(), value: b"v".to_vec(), ..Default::default() };
        store.apply_put(&req).unwrap();
    }

    fn watcher(from: u64) -> Watcher {
        Watcher {
            key: b"a".to_vec(),
            range_end: vec![0],
            next: Revision { main: from, sub: 0 },
            prev_kv: false,
            no_put: false,
            no_delete: false,
            progress_notify: false,
        }
    }

    fn frames(out: &[u8]) -> Vec<WatchMessage> {
        FrameDecoder::new(out, 1 << 20)
            .map(|f| match decode_server_message(&f.unwrap()).unwrap() {
                ServerMessage::Watch { message, .. } => message,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn history_then_live_changes_in_order_without_repeats() {
        let mut store = Store::default();
        put(&mut store, b"a1");
        put(&mut store, b"b1");
        let mut w = watcher(2);
        let mut out = Vec::new();
        let header = ResponseHeader::default();
        assert_eq!(
            pass(&store, 1, &mut w, header, 1 << 20, &mut FeedBudget::per_iteration(), &mut out),
            PassOutcome::CaughtUp
        );
        put(&mut store, b"c1");
        assert_eq!(
            pass(&store, 1, &mut w, header, 1 << 20, &mut FeedBudget::per_iteration(), &mut out),
            PassOutcome::CaughtUp
        );
        assert_eq!(
            pass(&store, 1, &mut w, header, 1 << 20, &mut FeedBudget::per_iteration(), &mut out),
            PassOutcome::CaughtUp
        );
        let revisions: Vec<i64> = frames(&out)
            .into_iter()
            .flat_map(|m| match m {
                WatchMessage::Events { events, .. } => events,
                _ => Vec::new(),
            })
            .map(|e| e.kv.mod_revision)
            .collect();
        assert_eq!(revisions, vec![2, 3, 4]);
    }

    /// Every change of keys `a*` in the store, in revision order: what a
    /// watch from revision 2 must deliver.
    fn expected(store: &Store) -> Vec<(i64, Vec<u8>)> {
        let from = Revision { main: 2, sub: 0 };
        let all = store.events_since(from, b"a", &[0], usize::MAX, false).unwrap();
        assert!(all.caught_up);
        all.events.into_iter().map(|e| (e.kv.mod_revision as i64, e.kv.key)).collect()
    }

    fn delivered(out: &[u8]) -> Vec<(i64, Vec<u8>)> {
        frames(out)
            .into_iter()
            .flat_map(|m| match m {
                WatchMessage::Events { events, .. } => events,
                other => panic!("{other:?}"),
            })
            .map(|e| (e.kv.mod_revision, e.kv.key))
            .collect()
    }

    #[test]
    fn a_long_history_spreads_over_budgets_and_meets_new_writes_in_order() {
        let mut store = Store::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..12_000 {
            put(&mut store, format!("a{}", i % 3000).as_bytes());
        }
        let mut w = watcher(2);
        let mut out = Vec::new();
        let header = ResponseHeader::default();
        let mut passes = 0;
        loop {
            let mut budget = FeedBudget::per_iteration();
            let outcome = pass(&store, 1, &mut w, header, 1 << 20, &mut budget, &mut out);
            passes += 1;
            // A pass stops at its bound, passing it by at most the rest of
            // a revision (the deletes here take 11 keys at most).
            let spent = FEED_ITERATION_EVENTS_MAX - budget.events;
            assert!(spent <= PULL_EVENTS_MAX + 11 + PULL_BATCH_EVENTS, "{spent} events in a pass");
            if outcome == PassOutcome::CaughtUp && next() % 4 == 0 {
                break;
            }
            // Writes land between iterations: puts on watched and unwatched
            // keys, and a delete of many watched keys in one revision.
            for _ in 0..next() % 5 {
                match next() % 8 {
                    0 => {
                        let req = mvcc::DeleteRangeRequest {
                            key: b"a1000".to_vec(),
                            range_end: b"a1010".to_vec(),
                            prev_kv: false,
                        };
                        store.apply_delete_range(&req).unwrap();
                    }
                    1 => put(&mut store, format!("b{}", next() % 100).as_bytes()),
                    _ => put(&mut store, format!("a{}", next() % 3000).as_bytes()),
                }
            }
        }
        assert!(passes > 12, "12,000 events took {passes} passes");
        assert_eq!(delivered(&out), expected(&store));
    }

    #[test]
    fn a_spent_budget_lets_a_pass_finish_only_its_revision() {
        let mut store = Store::default();
        // 96 keys: the delete's events are 12 whole batches.
        for i in 0..96 {
            put(&mut store, format!("a{i:03}").as_bytes());
        }
        let req = mvcc::DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            prev_kv: false,
        };
        store.apply_delete_range(&req).unwrap();
        put(&mut store, b"a-after");
        // The watch starts at the delete: 96 events of one revision.
        let mut w = watcher(98);
        let mut budget = FeedBudget::per_iteration();
        budget.events = 1;
        let mut out = Vec::new();
        let header = ResponseHeader::default();
        let outcome = pass(&store, 1, &mut w, header, 1 << 20, &mut budget, &mut out);
        assert_eq!(outcome, PassOutcome::Behind);
        assert!(budget.spent());
        assert_eq!(delivered(&out).len(), 96, "the whole revision, and nothing past it");
        assert_eq!(w.next, Revision { main: 99, sub: 0 });
        let mut budget = FeedBudget::per_iteration();
        assert_eq!(
            pass(&store, 1, &mut w, header, 1 << 20, &mut budget, &mut out),
            PassOutcome::CaughtUp
        );
        assert_eq!(delivered(&out).len(), 97);
    }

    #[test]
    fn a_compacted_position_cancels_with_the_compact_revision() {
        let mut store = Store::default();
        for key in [b"a1", b"a2", b"a3"] {
            put(&mut store, key);
        }
        store.compact(3).unwrap();
        let mut w = watcher(2);
        let mut out = Vec::new();
        let mut budget = FeedBudget::per_iteration();
        let outcome =
            pass(&store, 4, &mut w, ResponseHeader::default(), 1 << 20, &mut budget, &mut out);
        assert_eq!(outcome, PassOutcome::Cancelled);
        assert!(matches!(
            frames(&out)[..],
            [WatchMessage::Cancelled { reason: CancelReason::Compacted, compact_revision: 3, .. }]
        ));
    }
}
