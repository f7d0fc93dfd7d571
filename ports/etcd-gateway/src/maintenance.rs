//! etcd's Maintenance service: Status and HashKV from the node; what Ember
//! does not have yet answers UNIMPLEMENTED, saying what is missing, rather
//! than an answer that would only look right (an empty alarm list from a
//! store that cannot raise alarms, a defragment that did nothing).

use std::pin::Pin;

use ember::proto::{HashKvRequest, Request};
use tokio_stream::Stream;
use tonic::{Request as Grpc, Response, Status};

use crate::caller::Caller;
use crate::convert;
use crate::gateway::{Gateway, call_as};
use crate::pb::etcdserverpb as pb;
use crate::status::unimplemented;

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Gateway {
    async fn alarm(
        &self,
        _: Grpc<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Err(unimplemented("Alarm (the alarm table)"))
    }

    async fn status(
        &self,
        request: Grpc<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let answer = self.member_status().await?;
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
        _: Grpc<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(unimplemented("Defragment"))
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
        _: Grpc<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Snapshot"))
    }

    async fn move_leader(
        &self,
        _: Grpc<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(unimplemented("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _: Grpc<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
