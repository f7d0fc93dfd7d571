//! etcd's Maintenance service: Alarm, Status and HashKV from the node; what
//! Ember does not have yet answers UNIMPLEMENTED, saying what is missing,
//! rather than an answer that would only look right (a defragment that did
//! nothing).

use std::pin::Pin;

use ember::proto::{AlarmAction, AlarmRequest, AlarmType, HashKvRequest, Request};
use tokio_stream::Stream;
use tonic::{Request as Grpc, Response, Status};

use crate::convert;
use crate::gateway::{Gateway, call_as};
use crate::pb::etcdserverpb as pb;
use crate::status::unimplemented;

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Gateway {
    async fn alarm(
        &self,
        request: Grpc<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
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
        let answer = call_as!(self, Request::Alarm(request), Alarm);
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
        let revision = request.into_inner().revision;
        let answer = call_as!(self, Request::HashKv(HashKvRequest { revision }), HashKv);
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
