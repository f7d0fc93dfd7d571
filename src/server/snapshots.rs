//! Snapshots of this member's state: when one is due, building its image a
//! slice per loop iteration, the writer thread that writes and syncs the
//! file, recording it in the WAL; and the snapshots a leader streams to
//! this member, gathered until they are whole.
//!
//! Snapshots are taken every `--snapshot-count` applied entries, or sooner
//! once the WAL holds `SNAPSHOT_WAL_SEGMENTS` segments. The image
//! records the state machine at the applied index, which is the snapshot's
//! index: that is the only place the applied index is persisted. Building
//! the image is memory work done in the loop, but a slice of at most
//! `SNAPSHOT_SLICE_BYTES` per iteration while newer writes apply (the
//! store's live image keeps describing the revision it began at), so a
//! large store never pauses clients and heartbeats. Each slice goes through
//! a queue of `SNAPSHOT_QUEUE_SLICES` to a short-lived helper thread that
//! writes and syncs the file (tens of megabytes on a card that syncs at a
//! few MB/s) and touches nothing else. Only when the file is durable does
//! the loop write the WAL's snapshot marker and release segments, so a
//! crash in between leaves the previous snapshot in charge. A snapshot from
//! the leader, a restore and shutdown first settle a running job (finish a
//! complete one, abandon one still building): one writer in `snap/` at a
//! time, and never an image of a store that was replaced.
//!
//! A snapshot is never held whole in memory: sending reads the file a
//! chunk at a time into the transport's stream, receiving writes each chunk
//! to a file and feeds it to the decoder at once, and a restart restores
//! from the file the same way (`SNAPSHOT_TRANSFER_BYTES_MAX`).

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use mio::Waker;

use super::ServeError;
use super::metrics::{Histogram, LOOP_BUCKETS_SECONDS};
use crate::mvcc::{IMAGE_MAX_FIELD_BYTES, LiveImage, Store};
use crate::raft::{ConfState, Message, MessageKind, SnapshotMeta};
use crate::snap::{SnapDir, SnapError, SnapWriter};
use crate::state::{Restorer, StateMachine};
use crate::storage::DiskStorage;
use crate::transport::{self, StreamEvent};
use crate::wal::CATCH_UP_MARGIN_ENTRIES_DEFAULT;

/// The largest snapshot a follower accepts from its leader: a board keeps
/// the whole store in memory, so a bigger one could not be restored anyway.
/// It bounds the file written, not the memory the transfer takes.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;

/// This member's snapshots: the newest taken and the one being written.
pub struct Snapshots {
    /// The index of the newest snapshot taken (its file may still be
    /// being written by `job`).
    index: u64,
    job: Option<SnapshotJob>,
    /// Wakes the loop from the writer thread.
    waker: Arc<Waker>,
    /// `--snapshot-count`.
    count: u64,
    /// How long building each slice of an image held the loop.
    slice_time: Histogram,
    /// A snapshot covering this index was asked for (a backup, a
    /// defragmentation): one starts as soon as none running covers it.
    wanted_index: u64,
    /// The store was replaced by a repair: the newest snapshot no longer
    /// describes it, and one of the store in memory starts at once.
    stale: bool,
}

impl Snapshots {
    pub fn new(index: u64, waker: Arc<Waker>, count: u64) -> Snapshots {
        let slice_time = Histogram::new(&LOOP_BUCKETS_SECONDS);
        Snapshots { index, job: None, waker, count, slice_time, wanted_index: 0, stale: false }
    }

    /// The time each slice of an image took to build, for `/metrics`.
    pub fn slice_time(&self) -> &Histogram {
        &self.slice_time
    }

    /// Asks for a snapshot covering `index` (at most the applied index)
    /// now, whatever `--snapshot-count` says.
    pub fn want(&mut self, index: u64) {
        self.wanted_index = self.wanted_index.max(index);
    }

    /// A repair replaced the store (`repair.rs`): a snapshot of it starts
    /// at once, so a restart never loads the store it replaced. One at the
    /// same index as the newest replaces that file.
    pub fn store_replaced(&mut self) {
        // `finish(true)` settled any job: no image of the replaced store.
        assert!(self.job.is_none(), "a snapshot job across a repair");
        self.stale = true;
    }

    /// A snapshot from the leader was applied at `index`.
    pub fn restored(&mut self, index: u64) {
        // `persist` settled any job: no image of the store being replaced.
        assert!(self.job.is_none(), "a snapshot job across a restore");
        self.index = index;
    }

    /// Starts a snapshot once one is due (`snapshot_due`), and while one
    /// runs builds its next slice. `finish` records it in the WAL and
    /// releases the segments it covers once the file is durable.
    pub fn step(
        &mut self,
        state: &mut StateMachine,
        storage: &mut DiskStorage,
        conf_state: &ConfState,
    ) -> Result<(), ServeError> {
        self.finish(false, state.store_mut(), storage)?;
        if self.job.is_some() {
            self.slice(state.store_mut());
            return Ok(());
        }
        let since_snapshot = state.applied_index().saturating_sub(self.index);
        let wanted = self.wanted_index > self.index;
        let due = snapshot_due(since_snapshot, self.count, storage.wal.segment_count());
        if !wanted && !self.stale && !due {
            return Ok(());
        }
        self.start(state, storage, conf_state)
    }

    /// Captures the meta and the sections at the applied index, opens the
    /// store's image and the temp file, and starts the writer thread.
    fn start(
        &mut self,
        state: &mut StateMachine,
        storage: &DiskStorage,
        conf_state: &ConfState,
    ) -> Result<(), ServeError> {
        let meta = SnapshotMeta {
            index: state.applied_index(),
            term: state.applied_term(),
            conf_state: conf_state.clone(),
        };
        let file = storage.snaps.create(&meta).map_err(ServeError::Snap)?;
        self.stale = false;
        let (sender, slices) = mpsc::sync_channel(SNAPSHOT_QUEUE_SLICES);
        let (done, receiver) = mpsc::channel();
        let waker = Arc::clone(&self.waker);
        std::thread::Builder::new()
            .name("ember-snapshot".into())
            .spawn(move || {
                let outcome = write_snapshot_file(file, &slices, &waker);
                let _ = done.send(outcome);
                let _ = waker.wake();
            })
            .map_err(|e| ServeError::Io { what: "start the snapshot writer".into(), source: e })?;
        let (prefix, image) = state.begin_image();
        let bytes = prefix.len() as u64;
        // The queue is empty: the prefix goes in at once, and the next
        // iteration builds the first slice of the image.
        let held = sender.try_send(Slice::Data(prefix)).err().map(|e| match e {
            TrySendError::Full(slice) | TrySendError::Disconnected(slice) => slice,
        });
        self.job = Some(SnapshotJob {
            previous_index: self.index,
            meta,
            started: Instant::now(),
            bytes,
            image: Some(image),
            held,
            sender,
            receiver,
            slices: 0,
            slice_max: Duration::ZERO,
        });
        self.index = state.applied_index();
        Ok(())
    }

    /// Hands the writer thread the slice the full queue refused last time,
    /// then builds at most one new slice of the image (or its end) and
    /// queues it. A full queue holds the loop back from building more: the
    /// writer's wake-up brings it back.
    fn slice(&mut self, store: &mut Store) {
        let Some(job) = self.job.as_mut() else { return };
        if let Some(slice) = job.held.take() {
            match job.sender.try_send(slice) {
                Ok(()) => {}
                Err(TrySendError::Full(slice)) => {
                    job.held = Some(slice);
                    return;
                }
                // The writer stopped on an error; `finish` reports it.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        let Some(live) = job.image.as_mut() else { return };
        let started = Instant::now();
        let slice = match live.next_chunk(store, SNAPSHOT_SLICE_BYTES) {
            Some(bytes) => Slice::Data(bytes),
            None => {
                let live = job.image.take().expect("checked above");
                store.end_image(live);
                Slice::End
            }
        };
        let elapsed = started.elapsed();
        self.slice_time.observe(elapsed);
        let bytes = if let Slice::Data(bytes) = &slice { bytes.len() } else { 0 };
        log::debug!("snapshot slice: {bytes} bytes in {} us", elapsed.as_micros());
        (job.slices, job.bytes) = (job.slices + 1, job.bytes + bytes as u64);
        job.slice_max = job.slice_max.max(elapsed);
        if let Err(TrySendError::Full(slice)) = job.sender.try_send(slice) {
            job.held = Some(slice);
        }
    }

    /// Whether the job has a slice to build next iteration (the loop
    /// should not sleep).
    pub fn wants_iteration(&self) -> bool {
        self.job.as_ref().is_some_and(|job| job.image.is_some() && job.held.is_none())
    }

    /// Records a snapshot whose file is durable in the WAL and releases the
    /// segments behind it. With `wait` (before another snapshot is saved,
    /// and at shutdown) it settles the job: one whose image is complete is
    /// waited for and recorded, one still building is abandoned (its temp
    /// file deleted, the previous snapshot stays in charge). Either way no
    /// writer is left in the snapshot directory.
    pub fn finish(
        &mut self,
        wait: bool,
        store: &mut Store,
        storage: &mut DiskStorage,
    ) -> Result<(), ServeError> {
        let Some(job) = self.job.as_mut() else { return Ok(()) };
        if wait {
            job.settle(store);
        }
        let outcome = if wait {
            job.receiver.recv().map_err(|_| TryRecvError::Disconnected)
        } else {
            job.receiver.try_recv()
        };
        let outcome = match outcome {
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => {
                return Err(ServeError::Corrupt("the snapshot writer died".into()));
            }
            Ok(outcome) => outcome,
        };
        let mut job = self.job.take().expect("checked above");
        if let Some(live) = job.image.take() {
            store.end_image(live);
        }
        match outcome.map_err(ServeError::Snap)? {
            WriteOutcome::Saved => record_snapshot(&job, storage),
            WriteOutcome::Abandoned => {
                log::info!("snapshot at index {} abandoned", job.meta.index);
                self.index = job.previous_index;
                Ok(())
            }
        }
    }
}

/// The file is durable: the WAL's marker names it, then the segments it
/// covers go. The marker needs no sync of its own: `release_to` syncs it
/// before releasing anything, and otherwise the next Ready's sync takes it.
fn record_snapshot(job: &SnapshotJob, storage: &mut DiskStorage) -> Result<(), ServeError> {
    storage.wal.save_snapshot_marker(&job.meta).map_err(ServeError::Wal)?;
    let released = storage.wal.release_to(job.meta.index).map_err(ServeError::Wal)?;
    log::info!(
        "snapshot at index {} ({} bytes) in {} ms: {} slices, the longest {} us; \
         {released} WAL segments released",
        job.meta.index,
        job.bytes,
        job.started.elapsed().as_millis(),
        job.slices,
        job.slice_max.as_micros()
    );
    Ok(())
}

/// The snapshot a leader is streaming to this member. It is written to a
/// file and decoded into a state machine as its chunks arrive, so memory
/// holds the state being built and what `SNAPSHOT_TRANSFER_BYTES_MAX`
/// counts, never the payload: a store larger than the board's free memory
/// twice over still catches up.
#[derive(Default)]
pub struct SnapshotInbox {
    /// At most one: a stream that starts while another is open replaces it
    /// (the newer one comes from the newer leader or the later attempt).
    incoming: Option<Incoming>,
    /// A received snapshot already decoded, for the `Ready` that applies it.
    staged: Option<(u64, StateMachine)>,
}

struct Incoming {
    from: u64,
    stream: u64,
    header: Message,
    /// The file, finished under its received name (`SnapDir::receive`);
    /// `None` for a repair image, which is only decoded (the repaired
    /// store is written as a snapshot of its own once swapped in).
    file: Option<SnapWriter>,
    restorer: Restorer,
    /// Invariant: at most `SNAPSHOT_BYTES_MAX`.
    bytes: u64,
}

/// A snapshot received whole: durable under its received name and decoded.
pub struct Received {
    pub from: u64,
    /// The message that announced it; its snapshot carries no payload.
    pub header: Message,
    pub state: StateMachine,
}

impl SnapshotInbox {
    /// Whether a snapshot from the leader is being received or waits to
    /// be applied.
    pub fn in_progress(&self) -> bool {
        self.incoming.is_some() || self.staged.is_some()
    }

    /// Takes one stream event. `restorer` starts the decoding of a new
    /// snapshot at (index, term). A snapshot that is now whole comes back.
    pub fn event(
        &mut self,
        event: StreamEvent<Message>,
        snaps: &SnapDir,
        restorer: impl FnOnce((u64, u64)) -> Restorer,
    ) -> Option<Received> {
        match event {
            StreamEvent::Started { from, stream, header } => {
                self.start(from, stream.0, header, snaps, restorer);
                None
            }
            StreamEvent::Chunk { from, stream, data, .. } => {
                self.chunk(from, stream.0, &data);
                None
            }
            StreamEvent::Finished { from, stream, .. } => self.finish(from, stream.0),
            StreamEvent::Aborted { from, stream, reason } => {
                if self.take(from, stream.0).is_some() {
                    log::warn!("snapshot stream from {from:016x} aborted: {reason:?}");
                }
                None
            }
        }
    }

    fn start(
        &mut self,
        from: u64,
        stream: u64,
        header: Message,
        snaps: &SnapDir,
        restorer: impl FnOnce((u64, u64)) -> Restorer,
    ) {
        let Some(meta) = header.snapshot.as_ref().map(|s| s.meta.clone()) else { return };
        if !matches!(header.kind, MessageKind::Snapshot | MessageKind::RepairImage) {
            return;
        }
        if let Some(old) = self.incoming.take() {
            log::info!("snapshot stream from {:016x} replaced by a newer one", old.from);
        }
        let file = match header.kind {
            MessageKind::RepairImage => None,
            _ => match snaps.receive(&meta) {
                Ok(file) => Some(file),
                Err(e) => return log::warn!("cannot receive the snapshot at {}: {e}", meta.index),
            },
        };
        let restorer = restorer((meta.index, meta.term));
        self.incoming = Some(Incoming { from, stream, header, file, restorer, bytes: 0 });
    }

    fn chunk(&mut self, from: u64, stream: u64, data: &[u8]) {
        let Some(incoming) = self.incoming.as_mut() else { return };
        if (incoming.from, incoming.stream) != (from, stream) {
            return;
        }
        incoming.bytes += data.len() as u64;
        let outcome = if incoming.bytes > SNAPSHOT_BYTES_MAX as u64 {
            Err(format!("exceeds {SNAPSHOT_BYTES_MAX} bytes"))
        } else {
            let written = match incoming.file.as_mut() {
                Some(file) => file.write(data).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            written.and_then(|()| incoming.restorer.feed(data))
        };
        if let Err(e) = outcome {
            log::warn!("snapshot from {from:016x} dropped: {e}");
            // Dropping the writer deletes its temp file.
            self.incoming = None;
        }
    }

    fn finish(&mut self, from: u64, stream: u64) -> Option<Received> {
        let incoming = self.take(from, stream)?;
        let index = incoming.header.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let state = match incoming.restorer.finish() {
            Ok(state) => state,
            Err(e) => {
                log::warn!("snapshot at {index} from {from:016x} does not decode: {e}");
                return None;
            }
        };
        if let Some(Err(e)) = incoming.file.map(SnapWriter::finish) {
            log::warn!("snapshot at {index} from {from:016x} not kept: {e}");
            return None;
        }
        log::info!(
            "received a snapshot at index {index} ({} bytes) from {from:016x}",
            incoming.bytes
        );
        Some(Received { from, header: incoming.header, state })
    }

    fn take(&mut self, from: u64, stream: u64) -> Option<Incoming> {
        let matches = self.incoming.as_ref().is_some_and(|i| (i.from, i.stream) == (from, stream));
        if matches { self.incoming.take() } else { None }
    }

    /// Keeps a decoded snapshot for the `Ready` that applies it.
    pub fn stage(&mut self, index: u64, state: StateMachine) {
        self.staged = Some((index, state));
    }

    /// The decoded snapshot at `index`, if it is the one staged.
    pub fn take_staged(&mut self, index: u64) -> Option<StateMachine> {
        match self.staged.take() {
            Some((at, state)) if at == index => Some(state),
            _ => None,
        }
    }
}

/// The state machine the snapshot file at `meta` holds, read and decoded a
/// chunk at a time; the file's CRC is checked as the last chunk is read.
pub fn restore_from_file(
    snaps: &SnapDir,
    meta: &SnapshotMeta,
    mut restorer: Restorer,
) -> Result<StateMachine, String> {
    let mut payload = snaps.open_payload(meta.index, meta.term).map_err(|e| e.to_string())?;
    if payload.meta() != meta {
        return Err(format!("the file at index {} disagrees with the wal marker", meta.index));
    }
    let mut chunk = vec![0u8; RESTORE_CHUNK_BYTES];
    loop {
        let n = payload.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return restorer.finish();
        }
        restorer.feed(&chunk[..n])?;
    }
}

/// Bytes read from a snapshot file per step of a restore.
const RESTORE_CHUNK_BYTES: usize = 256 << 10;

/// The most memory one snapshot transfer holds beside the state it builds,
/// on either side. Receiving: the chunks the transport holds for the loop
/// (`RECEIVED_STREAM_BYTES_MAX`) and the one partial image record the
/// decoder keeps (a key or value, at most `IMAGE_MAX_FIELD_BYTES`, with its
/// header). Sending: the frames queued for the peer (`QUEUE_BYTES_MAX`) and
/// the file reader's buffer. Neither grows with the store.
pub const SNAPSHOT_TRANSFER_BYTES_MAX: usize =
    transport::RECEIVED_STREAM_BYTES_MAX + 2 * IMAGE_MAX_FIELD_BYTES + transport::QUEUE_BYTES_MAX;

/// Payload bytes the loop builds per iteration while a snapshot job runs.
/// Building 256 KiB of image takes well under a millisecond on a board
/// (`benches/snapshot.rs`), so a client or a heartbeat never waits on a
/// snapshot for longer than that, and a 14 MB store still takes only about
/// 60 iterations.
pub const SNAPSHOT_SLICE_BYTES: usize = 256 << 10;
/// Slices queued for the writer thread. With the one slice the loop holds
/// back and the one being written, a job holds at most 6 × 256 KiB of
/// payload, whatever the store's size; 4 let the card write while the loop
/// builds the next ones.
pub const SNAPSHOT_QUEUE_SLICES: usize = 4;

/// What the loop hands the writer thread.
enum Slice {
    Data(Vec<u8>),
    /// The payload is complete: finish the file.
    End,
}

/// How a writer thread ended, when not on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOutcome {
    /// The file is durable under its final name.
    Saved,
    /// The loop dropped its end of the queue: the temp file is deleted.
    Abandoned,
}

/// The writer thread: writes each slice as it comes, finishes the file on
/// `End`, deletes it when the loop drops the queue. It wakes the loop after
/// each slice, so a loop that found the queue full builds the next one.
fn write_snapshot_file(
    mut file: SnapWriter,
    slices: &Receiver<Slice>,
    waker: &Waker,
) -> Result<WriteOutcome, SnapError> {
    loop {
        match slices.recv() {
            Ok(Slice::Data(bytes)) => file.write(&bytes)?,
            Ok(Slice::End) => {
                file.finish()?;
                return Ok(WriteOutcome::Saved);
            }
            Err(_) => {
                file.abort()?;
                return Ok(WriteOutcome::Abandoned);
            }
        }
        let _ = waker.wake();
    }
}

/// A snapshot being built by the loop and written by a helper thread.
struct SnapshotJob {
    meta: SnapshotMeta,
    /// `Snapshots::index` before this job, for when it is abandoned.
    previous_index: u64,
    started: Instant,
    /// Payload bytes built so far.
    bytes: u64,
    /// The store's image; `None` once its end was built. While `Some`, the
    /// store's physical compaction beyond it waits.
    image: Option<LiveImage>,
    /// A slice the full queue refused, sent before any new one is built.
    /// Invariant: when `image` is `None`, `held` is `None` or `End`.
    held: Option<Slice>,
    /// Bounded by `SNAPSHOT_QUEUE_SLICES`; dropping it abandons the file.
    sender: SyncSender<Slice>,
    receiver: Receiver<Result<WriteOutcome, SnapError>>,
    slices: u64,
    /// The longest time one slice took to build, the figure that matters
    /// to the loop's latency.
    slice_max: Duration,
}

impl SnapshotJob {
    /// Makes the writer thread end soon: a complete payload is finished
    /// (the last queued slices are written), an incomplete one abandoned.
    fn settle(&mut self, store: &mut Store) {
        if let Some(live) = self.image.take() {
            store.end_image(live);
            self.held = None;
            // Replacing the sender drops the writer's queue: it abandons.
            self.sender = mpsc::sync_channel(0).0;
        } else if let Some(end) = self.held.take() {
            // Blocks only while the writer drains the queue.
            let _ = self.sender.send(end);
        }
    }
}

/// WAL segments (8 MiB each by default) that make a snapshot due before
/// `--snapshot-count` entries. At one sync per write every entry takes a
/// page of log, so 100,000 entries could hold 400 MB of log on disk, all of
/// it replayed through the map at restart; this keeps it near 64 MiB.
pub const SNAPSHOT_WAL_SEGMENTS: usize = 8;

/// Whether a snapshot is due: `--snapshot-count` entries applied since the
/// last one, or a log of `SNAPSHOT_WAL_SEGMENTS` segments. The second needs
/// at least the WAL's catch-up margin of new entries, which a snapshot
/// keeps anyway: without it a log of large entries would be snapshotted
/// again and again without releasing a segment.
fn snapshot_due(since_snapshot: u64, snapshot_count: u64, wal_segments: usize) -> bool {
    since_snapshot >= snapshot_count.max(1)
        || (wal_segments >= SNAPSHOT_WAL_SEGMENTS
            && since_snapshot >= CATCH_UP_MARGIN_ENTRIES_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_makes_a_snapshot_due_before_the_count() {
        assert!(!snapshot_due(9_999, 100_000, 1));
        assert!(snapshot_due(100_000, 100_000, 1));
        assert!(snapshot_due(CATCH_UP_MARGIN_ENTRIES_DEFAULT, 100_000, SNAPSHOT_WAL_SEGMENTS));
        // Too few new entries to release anything: not yet.
        assert!(!snapshot_due(CATCH_UP_MARGIN_ENTRIES_DEFAULT - 1, 100_000, 50));
    }
}
