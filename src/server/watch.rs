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
//! Frames: a pull stops only on a revision boundary, and frames are cut only
//! between revisions, so one revision's events always share one frame. A
//! revision whose events do not fit the client's frame limit cancels the
//! watch (`EventsTooLarge`).

use crate::mvcc::{self, Revision, Store};
use crate::proto::{self, CancelReason, EventKind, ResponseHeader, WatchMessage, encode_watch};

use crate::state::command;

/// Events pulled for one watch per pass; the pass stops at the next
/// revision boundary after it, so other connections are not kept waiting.
pub const PULL_EVENTS_MAX: usize = 1024;
/// Bytes of events (as `estimate_bytes` counts them) after which a pass
/// stops at the next revision boundary: what one pass adds to a
/// connection's write buffer stays near this whatever the values' sizes.
pub const PULL_BYTES_MAX: usize = 1 << 20;
/// Events asked of the store at a time within a pass, so the byte bound is
/// checked every few events: a pass passes `PULL_BYTES_MAX` by at most
/// this many events.
const PULL_BATCH_EVENTS: usize = 8;
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

/// Pulls the watch's next changes and appends their frames to `out`.
pub fn pass(
    store: &Store,
    watch_id: u64,
    watcher: &mut Watcher,
    header: ResponseHeader,
    client_max_frame_bytes: u32,
    out: &mut Vec<u8>,
) -> PassOutcome {
    let (events, caught_up) = match pull(store, watcher) {
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
fn pull(store: &Store, w: &mut Watcher) -> Result<(Vec<mvcc::Event>, bool), u64> {
    let mut events = Vec::new();
    let mut pulled_bytes = 0;
    // Each call scans a bounded stretch of history, matching or not, so
    // the calls of one pass are bounded too.
    let mut calls = 0;
    loop {
        calls += 1;
        let batch = store
            .events_since(w.next, &w.key, &w.range_end, PULL_BATCH_EVENTS, w.prev_kv)
            .map_err(|e| match e {
                mvcc::Error::Compacted { compact_revision } => compact_revision,
                _ => store.compact_revision(),
            })?;
        pulled_bytes += batch.events.iter().map(store_event_bytes).sum::<usize>();
        events.extend(batch.events);
        w.next = batch.next;
        if batch.caught_up {
            return Ok((events, true));
        }
        // Inside a revision: keep going, its events must not be split.
        let full = events.len() >= PULL_EVENTS_MAX
            || pulled_bytes >= PULL_BYTES_MAX
            || calls >= PULL_EVENTS_MAX / PULL_BATCH_EVENTS;
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
        assert_eq!(pass(&store, 1, &mut w, header, 1 << 20, &mut out), PassOutcome::CaughtUp);
        put(&mut store, b"c1");
        assert_eq!(pass(&store, 1, &mut w, header, 1 << 20, &mut out), PassOutcome::CaughtUp);
        assert_eq!(pass(&store, 1, &mut w, header, 1 << 20, &mut out), PassOutcome::CaughtUp);
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

    #[test]
    fn a_compacted_position_cancels_with_the_compact_revision() {
        let mut store = Store::default();
        for key in [b"a1", b"a2", b"a3"] {
            put(&mut store, key);
        }
        store.compact(3).unwrap();
        let mut w = watcher(2);
        let mut out = Vec::new();
        let outcome = pass(&store, 4, &mut w, ResponseHeader::default(), 1 << 20, &mut out);
        assert_eq!(outcome, PassOutcome::Cancelled);
        assert!(matches!(
            frames(&out)[..],
            [WatchMessage::Cancelled { reason: CancelReason::Compacted, compact_revision: 3, .. }]
        ));
    }
}
