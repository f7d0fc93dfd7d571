//! etcd's Lease service. Keep-alives arrive on a bidirectional stream; each
//! one is one Ember `LeaseKeepAlive`, answered in the order it came.

use std::pin::Pin;

use ember::proto::{
    ErrorCode, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, Request,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request as Grpc, Response, Status, Streaming};

use crate::caller::Caller;
use crate::convert;
use crate::gateway::{Gateway, call_as};
use crate::link::LinkError;
use crate::pb::etcdserverpb as pb;

/// Keep-alive answers waiting for a slow client before the stream stops
/// reading its requests.
const KEEP_ALIVE_BUFFER: usize = 16;

pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

/// A client's keep-alive requests, from gRPC or from etcd's JSON API.
pub type KeepAliveRequests =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveRequest, Status>> + Send>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for Gateway {
    async fn lease_grant(
        &self,
        request: Grpc<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let pb::LeaseGrantRequest { ttl, id } = request.into_inner();
        let answer = call_as!(
            self,
            &caller,
            Request::LeaseGrant(LeaseGrantRequest { ttl_secs: ttl, id }),
            LeaseGrant
        );
        Ok(Response::new(pb::LeaseGrantResponse {
            header: convert::header(answer.header),
            id: answer.id,
            ttl: answer.ttl_secs,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Grpc<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let id = request.into_inner().id;
        let answer =
            call_as!(self, &caller, Request::LeaseRevoke(LeaseRevokeRequest { id }), LeaseRevoke);
        Ok(Response::new(pb::LeaseRevokeResponse { header: convert::header(answer.header) }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Grpc<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let (metadata, _, requests) = request.into_parts();
        self.open_keep_alive(&metadata, Box::pin(requests)).await.map(Response::new)
    }

    async fn lease_time_to_live(
        &self,
        request: Grpc<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let pb::LeaseTimeToLiveRequest { id, keys } = request.into_inner();
        let asked = Request::LeaseTimeToLive(LeaseTimeToLiveRequest { id, keys });
        match self.backend.call_as(&caller, &asked).await {
            Ok(ember::proto::Response::LeaseTimeToLive(answer)) => {
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: convert::header(answer.header),
                    id: answer.id,
                    ttl: answer.ttl_secs,
                    granted_ttl: answer.granted_ttl_secs,
                    keys: answer.keys,
                }))
            }
            // etcd answers a lease it does not know with TTL -1, not an
            // error; etcdctl prints "already expired" from it.
            Err(LinkError::Server(body)) if body.code() == Some(ErrorCode::LeaseNotFound) => {
                let header = self.member_status().await?.header;
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: convert::header(header),
                    id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                }))
            }
            Ok(other) => Err(crate::gateway::mismatch("LeaseTimeToLive", &other)),
            Err(error) => Err(crate::gateway::refusal(&caller, error)),
        }
    }

    async fn lease_leases(
        &self,
        request: Grpc<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let answer = call_as!(self, &caller, Request::LeaseLeases, LeaseLeases);
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: convert::header(answer.header),
            leases: answer.leases.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

impl Gateway {
    /// Starts renewing the leases `requests` name, one answer each, until
    /// the client stops sending or stops reading.
    pub async fn open_keep_alive(
        &self,
        metadata: &MetadataMap,
        requests: KeepAliveRequests,
    ) -> Result<KeepAliveStream, Status> {
        self.check_leader(metadata).await?;
        let caller = Caller::of(metadata);
        let (sender, receiver) = mpsc::channel(KEEP_ALIVE_BUFFER);
        tokio::spawn(keep_alive_loop(self.clone(), caller, requests, sender));
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

/// Renews each lease the client names until either side goes away.
async fn keep_alive_loop(
    gateway: Gateway,
    caller: Caller,
    mut requests: KeepAliveRequests,
    answers: mpsc::Sender<Result<pb::LeaseKeepAliveResponse, Status>>,
) {
    while let Some(Ok(request)) = requests.next().await {
        let answer = keep_alive(&gateway, &caller, request.id).await;
        if answers.send(answer).await.is_err() {
            return;
        }
    }
}

async fn keep_alive(
    gateway: &Gateway,
    caller: &Caller,
    id: i64,
) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let asked = Request::LeaseKeepAlive(LeaseKeepAliveRequest { id });
    match gateway.backend.call_as(caller, &asked).await {
        Ok(ember::proto::Response::LeaseKeepAlive(answer)) => Ok(pb::LeaseKeepAliveResponse {
            header: convert::header(answer.header),
            id: answer.id,
            ttl: answer.ttl_secs,
        }),
        // etcd tells a client renewing a lease that is gone with TTL 0.
        Err(LinkError::Server(body)) if body.code() == Some(ErrorCode::LeaseNotFound) => {
            let header = gateway.member_status().await?.header;
            Ok(pb::LeaseKeepAliveResponse { header: convert::header(header), id, ttl: 0 })
        }
        Ok(other) => Err(crate::gateway::mismatch("LeaseKeepAlive", &other)),
        Err(error) => Err(crate::gateway::refusal(caller, error)),
    }
}
