//! etcd's KV service: Range, Put, DeleteRange, Txn and Compact, each one
//! Ember request.

use ember::proto::{CompactionRequest, Request};
use tonic::{Request as Grpc, Response, Status};

use crate::caller::Caller;
use crate::convert;
use crate::gateway::{Gateway, call_as};
use crate::pb::etcdserverpb as pb;

#[tonic::async_trait]
impl pb::kv_server::Kv for Gateway {
    async fn range(
        &self,
        request: Grpc<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let asked = convert::range_request(request.into_inner())?;
        let answer = call_as!(self, &caller, Request::Range(asked), Range);
        Ok(Response::new(convert::range_response(answer)))
    }

    async fn put(
        &self,
        request: Grpc<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let asked = convert::put_request(request.into_inner());
        let answer = call_as!(self, &caller, Request::Put(asked), Put);
        Ok(Response::new(convert::put_response(answer)))
    }

    async fn delete_range(
        &self,
        request: Grpc<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let asked = convert::delete_request(request.into_inner());
        let answer = call_as!(self, &caller, Request::DeleteRange(asked), DeleteRange);
        Ok(Response::new(convert::delete_response(answer)))
    }

    async fn txn(
        &self,
        request: Grpc<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let asked = convert::txn_request(request.into_inner())?;
        let answer = call_as!(self, &caller, Request::Txn(asked), Txn);
        Ok(Response::new(convert::txn_response(answer)))
    }

    async fn compact(
        &self,
        request: Grpc<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let pb::CompactionRequest { revision, physical } = request.into_inner();
        let asked = CompactionRequest { revision, physical };
        let answer = call_as!(self, &caller, Request::Compact(asked), Compact);
        Ok(Response::new(pb::CompactionResponse { header: convert::header(answer.header) }))
    }
}
