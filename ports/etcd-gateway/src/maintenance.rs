//! etcd's Maintenance service: Alarm, Status, HashKV, Snapshot, MoveLeader
//! and Defragment from the nodes; what Ember does not have yet (downgrade)
//! answers UNIMPLEMENTED, saying what is missing, rather than an answer
//! that would only look right.
//!
//! Snapshot streams a member's backup file as the member sends it, piece
//! by piece on one link (the stream lives on the connection that opened
//! it), with the file's own SHA-256 as its last bytes, as etcd ends its
//! stream with the database's: `etcdctl snapshot save` writes a file
//! `ember snapshot restore` takes. MoveLeader goes to whichever member
//! leads, as the caller (root is needed with auth on); Status answers from
//! the leader when one is reachable, so that `etcdctl move-leader`, which
//! looks for the endpoint whose Status names itself leader, finds this
//! gateway whatever member its shared links reach. Defragment goes to one
//! member, as etcd's does. Snapshot and Defragment act as their caller
//! too: with auth on, only root may take a backup or defragment.

use std::pin::Pin;
use std::time::Duration;

use ember::proto::{
    AlarmAction, AlarmRequest, AlarmType, ErrorCode, HashKvRequest, MoveLeaderRequest, Request,
    SnapshotRequest,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as Grpc, Response, Status};

use crate::caller::Caller;
use crate::convert;
use crate::gateway::{Gateway, call_as, mismatch, refusal};
use crate::link::{Link, LinkError};
use crate::pb::etcdserverpb as pb;
use crate::status::{from_link, unimplemented};

/// How long the gateway waits for a member to take the snapshot a backup
/// or a defragmentation starts with (the member's own bound is 60 s).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(65);
/// How long one piece of a backup stream may take.
const SNAPSHOT_PIECE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pieces waiting for the client: one in hand while the next is fetched.
const SNAPSHOT_BUFFER_PIECES: usize = 1;

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Gateway {
    async fn alarm(
        &self,
        request: Grpc<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let caller = Caller::of(request.metadata());
        let asked = request.into_inner();
        let action = match asked.action {
            0 => AlarmAction::Get,
            1 => AlarmAction::Activate,
            2 => AlarmAction::Deactivate,
            other => return Err(Status::invalid_argument(format!("unknown alarm action {other}"))),
        };
        let alarm = alarm_type(asked.alarm)
            .ok_or_else(|| Status::invalid_argument(format!("unknown alarm {}", asked.alarm)))?;
        let request = AlarmRequest { action, member_id: asked.member_id, alarm };
        let answer = call_as!(self, &caller, Request::Alarm(request), Alarm);
        let alarms = answer
            .alarms
            .iter()
            .map(|a| pb::AlarmMember { member_id: a.member_id, alarm: alarm_number(a.alarm) })
            .collect();
        // etcd 3.4 answers alarms without a header.
        Ok(Response::new(pb::AlarmResponse { header: None, alarms }))
    }

    async fn status(
        &self,
        request: Grpc<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let answer = self.leader_status().await?;
        let db_size = i64::try_from(answer.data_size_bytes).unwrap_or(i64::MAX);
        Ok(Response::new(pb::StatusResponse {
            header: convert::header(answer.header),
            version: self.etcd_version.to_string(),
            db_size,
            leader: answer.leader_id,
            raft_index: answer.raft_commit_index,
            raft_term: answer.raft_term,
            raft_applied_index: answer.raft_applied_index,
            errors: answer.errors,
            db_size_in_use: db_size,
            is_learner: answer.is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        request: Grpc<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let caller = Caller::of(request.metadata());
        let refused = |error| refusal(&caller, error);
        let link = self.backend.link_as(&caller).await.map_err(refused)?;
        match link.call(&Request::Defragment, SNAPSHOT_WAIT).await.map_err(refused)? {
            ember::proto::Response::Defragment(header) => {
                Ok(Response::new(pb::DefragmentResponse { header: convert::header(header) }))
            }
            other => Err(mismatch("Defragment", &other)),
        }
    }

    async fn hash(&self, _: Grpc<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        Err(unimplemented("Hash of the whole backend (use HashKV)"))
    }

    async fn hash_kv(
        &self,
        request: Grpc<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let revision = request.into_inner().revision;
        let answer = call_as!(self, &caller, Request::HashKv(HashKvRequest { revision }), HashKv);
        Ok(Response::new(pb::HashKvResponse {
            header: convert::header(answer.header),
            hash: answer.hash,
            compact_revision: answer.compact_revision,
            hash_revision: answer.hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Grpc<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let caller = Caller::of(request.metadata());
        let link = self.backend.link_as(&caller).await.map_err(|error| refusal(&caller, error))?;
        let first = snapshot_piece(&link, 0, SNAPSHOT_WAIT).await.map_err(|error| match error {
            PieceError::Link(error) => refusal(&caller, error),
            PieceError::Status(status) => status,
        })?;
        let (sender, receiver) = mpsc::channel(SNAPSHOT_BUFFER_PIECES);
        tokio::spawn(stream_snapshot(link, first, sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn move_leader(
        &self,
        request: Grpc<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let caller = Caller::of(request.metadata());
        let target_id = request.into_inner().target_id;
        let request = Request::MoveLeader(MoveLeaderRequest { target_id });
        let answer = self.backend.call_each_as(&caller, &request, |answer| {
            !matches!(answer, Err(LinkError::Server(body)) if body.code() == Some(ErrorCode::NotLeader))
        });
        match answer.await.map_err(|error| refusal(&caller, error))? {
            ember::proto::Response::MoveLeader(header) => {
                Ok(Response::new(pb::MoveLeaderResponse { header: convert::header(header) }))
            }
            other => Err(mismatch("MoveLeader", &other)),
        }
    }

    async fn downgrade(
        &self,
        _: Grpc<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}

/// The alarm kind etcd's number names; `None` for a number etcd has not.
fn alarm_type(number: i32) -> Option<AlarmType> {
    match number {
        0 => Some(AlarmType::None),
        1 => Some(AlarmType::NoSpace),
        2 => Some(AlarmType::Corrupt),
        _ => None,
    }
}

/// etcd's number of an alarm kind.
fn alarm_number(alarm: AlarmType) -> i32 {
    match alarm {
        AlarmType::None => 0,
        AlarmType::NoSpace => 1,
        AlarmType::Corrupt => 2,
    }
}

/// Why a piece of a backup stream did not come: the link's failure (the
/// caller decides how it reads) or an answer of the wrong kind.
enum PieceError {
    Link(LinkError),
    Status(Status),
}

impl From<PieceError> for Status {
    fn from(error: PieceError) -> Status {
        match error {
            PieceError::Link(error) => from_link(error),
            PieceError::Status(status) => status,
        }
    }
}

/// One piece of a backup stream (`stream_id` 0 opens one).
async fn snapshot_piece(
    link: &Link,
    stream_id: u64,
    timeout: Duration,
) -> Result<ember::proto::SnapshotResponse, PieceError> {
    let request = Request::Snapshot(SnapshotRequest { stream_id });
    match link.call(&request, timeout).await.map_err(PieceError::Link)? {
        ember::proto::Response::Snapshot(piece) => Ok(piece),
        other => Err(PieceError::Status(mismatch("Snapshot", &other))),
    }
}

/// Hands each piece to the client and fetches the next, until the last
/// or until either side fails; the client's pace sets the fetching's.
async fn stream_snapshot(
    link: std::sync::Arc<Link>,
    mut piece: ember::proto::SnapshotResponse,
    sender: mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) {
    loop {
        let (stream_id, last) = (piece.stream_id, piece.remaining_bytes == 0);
        let message = pb::SnapshotResponse {
            header: convert::header(piece.header),
            remaining_bytes: piece.remaining_bytes,
            blob: piece.blob,
            version: String::new(),
        };
        if sender.send(Ok(message)).await.is_err() || last {
            return;
        }
        piece = match snapshot_piece(&link, stream_id, SNAPSHOT_PIECE_TIMEOUT).await {
            Ok(next) => next,
            Err(error) => {
                let _ = sender.send(Err(error.into())).await;
                return;
            }
        };
    }
}
