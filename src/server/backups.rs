//! Requests that wait for a snapshot taken now: backups streamed to a
//! client (`ember snapshot save`) and defragmentation (`ember defrag`).
//!
//! Both ask `Snapshots` for a snapshot at least as new as the state when
//! they arrived (`wanted_index`); the snapshot is built a slice per
//! iteration like any other, so the member keeps serving. Once the WAL's
//! marker names a snapshot that new, a defragmentation is answered (the
//! segments it covers were released when it was recorded), and a backup
//! opens a stream over that file.
//!
//! A stream is pulled by its client one piece at a time, each at most
//! `BACKUP_CHUNK_BYTES`, read from the file when asked: the member holds
//! one piece per stream, never the snapshot, and a slow client only makes
//! its own stream slow. The bytes are a backup file (`snap::backup`): the
//! head, the payload as the snapshot file holds it (its CRC checked as the
//! last byte is read), then the SHA-256 of everything before. At most
//! `BACKUP_STREAMS_MAX` streams and waiting requests exist at once; a
//! stream left idle for `BACKUP_STREAM_IDLE` is closed, so a client that
//! went away holds no file open for long.

use std::io::Read;
use std::time::{Duration, Instant};

use super::proposals::{Reply, Waiter};
use crate::proto::{ErrorBody, ErrorCode, Response, ResponseHeader, SnapshotResponse};
use crate::raft::SnapshotMeta;
use crate::snap::backup::{BackupHeader, encode_head, file_bytes};
use crate::snap::{PayloadReader, SnapDir};
use crate::state::Identity;

/// Bytes of one piece of a backup stream: well under the smallest answer
/// bound a client may set (`proto::MIN_FRAME_BYTES` is larger), and large
/// enough that a 100 MB store streams in 400 round trips.
pub const BACKUP_CHUNK_BYTES: usize = 256 << 10;
/// Streams and waiting requests at once. A backup is an operator's act;
/// four at once is plenty, and bounds the files held open and the memory
/// (one piece each) whatever clients do.
pub const BACKUP_STREAMS_MAX: usize = 4;
/// A stream whose client asks nothing for this long is closed.
pub const BACKUP_STREAM_IDLE: Duration = Duration::from_secs(30);
/// How long a request waits for its snapshot to be written: a snapshot of
/// a large store on a slow card takes seconds, not minutes.
pub const BACKUP_SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// What a request waits for a snapshot to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Stream,
    Defragment,
}

struct Waiting {
    waiter: Waiter,
    purpose: Purpose,
    /// The applied index when the request came: the snapshot must cover it.
    index: u64,
    deadline: Instant,
}

struct Stream {
    id: u64,
    /// The connection that opened it (slot and serial).
    owner: (usize, u64),
    /// The backup file's head, until sent.
    head: Vec<u8>,
    payload: PayloadReader,
    sha256: ring::digest::Context,
    /// Bytes of the whole stream not yet sent.
    remaining_bytes: u64,
    idle_deadline: Instant,
}

/// Requests waiting for a snapshot, and open backup streams.
#[derive(Default)]
pub struct Backups {
    /// Invariant: `waiting.len() + streams.len() <= BACKUP_STREAMS_MAX`.
    waiting: Vec<Waiting>,
    streams: Vec<Stream>,
    next_id: u64,
}

impl Backups {
    /// A request that wants a snapshot covering `applied_index`.
    pub fn wait(
        &mut self,
        waiter: Waiter,
        defragment: bool,
        applied_index: u64,
        now: Instant,
    ) -> Result<(), ErrorBody> {
        if self.waiting.len() + self.streams.len() >= BACKUP_STREAMS_MAX {
            return Err(ErrorBody::new(ErrorCode::TooManySnapshotStreams));
        }
        let purpose = if defragment { Purpose::Defragment } else { Purpose::Stream };
        let deadline = now + BACKUP_SNAPSHOT_WAIT;
        self.waiting.push(Waiting { waiter, purpose, index: applied_index, deadline });
        Ok(())
    }

    /// The newest index a waiting request needs a snapshot of, if any.
    pub fn wanted_index(&self) -> Option<u64> {
        self.waiting.iter().map(|w| w.index).max()
    }

    /// Answers the requests the durable snapshot `marker` covers, opening
    /// their streams, and those that waited too long; closes idle streams.
    pub fn poll(
        &mut self,
        marker: &SnapshotMeta,
        snaps: &SnapDir,
        identity: Identity,
        header: ResponseHeader,
        now: Instant,
    ) -> Vec<Reply> {
        self.streams.retain(|s| s.idle_deadline > now);
        let mut replies = Vec::new();
        for waiting in std::mem::take(&mut self.waiting) {
            if waiting.index <= marker.index {
                let result = match waiting.purpose {
                    Purpose::Defragment => Ok(Response::Defragment(header)),
                    Purpose::Stream => {
                        self.open(waiting.waiter, marker, snaps, identity, header, now)
                    }
                };
                replies.push((waiting.waiter, result));
            } else if now >= waiting.deadline {
                replies.push((waiting.waiter, Err(ErrorBody::new(ErrorCode::Timeout))));
            } else {
                self.waiting.push(waiting);
            }
        }
        replies
    }

    /// Opens a stream over the snapshot file `marker` names and answers
    /// with its first piece.
    fn open(
        &mut self,
        waiter: Waiter,
        marker: &SnapshotMeta,
        snaps: &SnapDir,
        identity: Identity,
        header: ResponseHeader,
        now: Instant,
    ) -> Result<Response, ErrorBody> {
        let payload = snaps.open_payload(marker.index, marker.term).map_err(|e| {
            log::warn!("backup: cannot open the snapshot at {}: {e}", marker.index);
            ErrorBody::with_message(ErrorCode::SnapshotUnreadable, e.to_string())
        })?;
        let backup = BackupHeader {
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
            index: marker.index,
            term: marker.term,
            payload_bytes: payload.remaining_bytes(),
        };
        let head = encode_head(&backup);
        self.next_id += 1;
        let stream = Stream {
            id: self.next_id,
            owner: (waiter.slot, waiter.serial),
            remaining_bytes: file_bytes(head.len(), &backup),
            head,
            payload,
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            idle_deadline: now + BACKUP_STREAM_IDLE,
        };
        log::info!(
            "backup stream {} opened: snapshot at index {}, {} bytes",
            stream.id,
            marker.index,
            stream.remaining_bytes
        );
        self.streams.push(stream);
        self.next(waiter, self.next_id, header, now)
    }

    /// The next piece of stream `id`, for the connection that opened it.
    pub fn next(
        &mut self,
        waiter: Waiter,
        id: u64,
        header: ResponseHeader,
        now: Instant,
    ) -> Result<Response, ErrorBody> {
        let owner = (waiter.slot, waiter.serial);
        let Some(at) = self.streams.iter().position(|s| s.id == id && s.owner == owner) else {
            return Err(ErrorBody::new(ErrorCode::SnapshotStreamNotFound));
        };
        let stream = &mut self.streams[at];
        stream.idle_deadline = now + BACKUP_STREAM_IDLE;
        let blob = match stream.piece() {
            Ok(blob) => blob,
            Err(e) => {
                log::warn!("backup stream {id} failed: {e}");
                self.streams.swap_remove(at);
                return Err(ErrorBody::with_message(ErrorCode::SnapshotUnreadable, e));
            }
        };
        let remaining_bytes = stream.remaining_bytes;
        if remaining_bytes == 0 {
            log::info!("backup stream {id} sent whole");
            self.streams.swap_remove(at);
        }
        Ok(Response::Snapshot(SnapshotResponse { header, stream_id: id, remaining_bytes, blob }))
    }
}

impl Stream {
    /// Up to `BACKUP_CHUNK_BYTES` of the stream: head, payload, digest.
    fn piece(&mut self) -> Result<Vec<u8>, String> {
        let mut blob = std::mem::take(&mut self.head);
        let room = BACKUP_CHUNK_BYTES.saturating_sub(blob.len());
        let start = blob.len();
        let want = room.min(usize::try_from(self.payload.remaining_bytes()).unwrap_or(room));
        blob.resize(start + want, 0);
        self.payload.read_exact(&mut blob[start..]).map_err(|e| e.to_string())?;
        self.sha256.update(&blob);
        if self.payload.remaining_bytes() == 0 {
            let context = std::mem::replace(
                &mut self.sha256,
                ring::digest::Context::new(&ring::digest::SHA256),
            );
            blob.extend_from_slice(context.finish().as_ref());
        }
        assert!(blob.len() as u64 <= self.remaining_bytes, "a backup stream longer than announced");
        self.remaining_bytes -= blob.len() as u64;
        Ok(blob)
    }
}
