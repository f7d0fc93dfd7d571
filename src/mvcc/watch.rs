//! The watch feed: events of a key range from a revision on, in revision
//! order, in bounded batches.

use super::block::{Block, Version};
use super::store::Store;
use super::types::*;

/// Changes one `events_since` call may look at. It bounds the work of one
/// call when a watch covers few of many changing keys; 16,384 four-byte log
/// entries is 64 KiB of sequential reads. A batch reports what it looked at
/// (`WatchBatch::scanned`: log entries and key versions decoded), so its
/// caller can spread a long history over several loop iterations.
pub const WATCH_SCAN_CHANGES_MAX: usize = 16_384;

impl Store {
    /// Events for keys in `[key, range_end)` from revision `from` on, at most
    /// `max_events` of them, in revision order. `from` below the compact
    /// revision fails with [`Error::Compacted`], which a watch answers by
    /// cancelling itself.
    pub fn events_since(
        &self,
        from: Revision,
        key: &[u8],
        range_end: &[u8],
        max_events: usize,
        prev_kv: bool,
    ) -> Result<WatchBatch, Error> {
        if from.main < self.compact_revision {
            return Err(Error::Compacted { compact_revision: self.compact_revision });
        }
        let end = RangeEnd::from_request(range_end);
        if end == RangeEnd::Single {
            return Ok(self.key_events_since(from, key, max_events, prev_kv));
        }
        let mut cur = self.log.seek(from);
        let mut events = Vec::new();
        // At least one event per call, so every call makes progress.
        let max_events = max_events.max(1);
        let mut changes = 0;
        let mut scanned = 0;
        while let Some((rev, id)) = self.log.at(&cur) {
            if events.len() >= max_events || changes >= WATCH_SCAN_CHANGES_MAX {
                return Ok(WatchBatch { events, next: rev, caught_up: false, scanned });
            }
            changes += 1;
            scanned += 1;
            let block = self.keys.get(id);
            if block.key() >= key && end.admits(key, block.key()) {
                let (event, versions) = event_of(block, rev, prev_kv);
                events.push(event);
                scanned += versions;
            }
            self.log.step(&mut cur);
        }
        let next = Revision { main: self.current_revision + 1, sub: 0 };
        Ok(WatchBatch { events, next: next.max(from), caught_up: true, scanned })
    }

    /// The feed of a single key comes from its own block: the cost is that
    /// key's versions from `from` on (newest first, as the block is laid
    /// out), whatever else changes in the store.
    fn key_events_since(
        &self,
        from: Revision,
        key: &[u8],
        max_events: usize,
        prev_kv: bool,
    ) -> WatchBatch {
        let mut events = Vec::new();
        let mut scanned = 0;
        let mut newer = Vec::new();
        // The newest version older than `from`: the previous key-value of
        // the first event.
        let mut before = None;
        if let Some(id) = self.lookup(key) {
            let block = self.keys.get(id);
            for v in block.newest_first() {
                scanned += 1;
                if (Revision { main: v.main, sub: v.sub }) < from {
                    before = Some(v);
                    break;
                }
                newer.push(v);
            }
            newer.reverse();
            for (i, v) in newer.iter().enumerate() {
                if events.len() >= max_events {
                    let next = Revision { main: v.main, sub: v.sub };
                    return WatchBatch { events, next, caught_up: false, scanned };
                }
                let prev = match i {
                    0 => before,
                    _ => Some(newer[i - 1]),
                };
                let prev = prev.filter(|p| prev_kv && !p.tombstone);
                events.push(event_from(block.key(), v, prev.as_ref()));
            }
        }
        let next = Revision { main: self.current_revision + 1, sub: 0 }.max(from);
        WatchBatch { events, next, caught_up: true, scanned }
    }
}

/// The event that wrote `rev` to the block, and how many of the block's
/// versions were decoded to find it (those newer than it): the cost the
/// caller's budget counts.
fn event_of(block: &Block, rev: Revision, with_prev: bool) -> (Event, usize) {
    let mut newer = 0;
    let mut versions = block.newest_first().skip_while(|v| {
        let found = (v.main, v.sub) == (rev.main, rev.sub);
        newer += usize::from(!found);
        !found
    });
    let v = versions.next().expect("the log names a version its key holds");
    let prev = versions.next().filter(|p| with_prev && !p.tombstone);
    (event_from(block.key(), &v, prev.as_ref()), newer)
}

/// The event that wrote `v`, with `prev` as its previous key-value.
fn event_from(key: &[u8], v: &Version<'_>, prev: Option<&Version<'_>>) -> Event {
    let (kind, kv) = if v.tombstone {
        (
            EventKind::Delete,
            KeyValue { key: key.to_vec(), mod_revision: v.main, ..KeyValue::default() },
        )
    } else {
        (EventKind::Put, v.to_kv(key))
    };
    Event { kind, kv, prev_kv: prev.map(|p| p.to_kv(key)), sub_revision: v.sub }
}
