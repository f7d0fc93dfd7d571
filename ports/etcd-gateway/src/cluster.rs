//! etcd's Cluster service over Ember's member table.
//!
//! A member's client URLs are where it serves Ember's protocol, which etcd
//! clients cannot speak; they reach every member through the gateway. So
//! the answers list the gateway's advertised URLs for each started member
//! (an unstarted one has none, as in etcd), and clients that learn
//! endpoints from the member list come back here.

use ember::proto::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, Request,
};
use tonic::{Request as Grpc, Response, Status};

use crate::caller::Caller;
use crate::convert;
use crate::gateway::{Gateway, call_as};
use crate::pb::etcdserverpb as pb;

impl Gateway {
    fn member(&self, mut member: ember::proto::Member) -> pb::Member {
        if !member.client_urls.is_empty() {
            member.client_urls = self.advertise_client_urls.to_vec();
        }
        convert::member(member)
    }

    fn members(&self, members: Vec<ember::proto::Member>) -> Vec<pb::Member> {
        members.into_iter().map(|member| self.member(member)).collect()
    }
}

/// etcd's Cluster service answers from the member table, not the store:
/// its headers name the cluster, the member and the term, but no revision.
fn cluster_header(header: ember::proto::ResponseHeader) -> Option<pb::ResponseHeader> {
    convert::header(ember::proto::ResponseHeader { revision: 0, ..header })
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Gateway {
    /// etcd's request names no member: the member is added nameless, under
    /// the id the cluster chooses, and takes the name it publishes when it
    /// first starts (until then the list shows it unstarted, as etcd's).
    async fn member_add(
        &self,
        request: Grpc<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let pb::MemberAddRequest { peer_ur_ls, is_learner } = request.into_inner();
        let asked = MemberAddRequest { peer_urls: peer_ur_ls, is_learner, name: String::new() };
        let answer = call_as!(self, &caller, Request::MemberAdd(asked), MemberAdd);
        Ok(Response::new(pb::MemberAddResponse {
            header: cluster_header(answer.header),
            member: Some(self.member(answer.member)),
            members: self.members(answer.members),
        }))
    }

    async fn member_remove(
        &self,
        request: Grpc<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let id = request.into_inner().id;
        let answer = call_as!(
            self,
            &caller,
            Request::MemberRemove(MemberRemoveRequest { id }),
            MemberRemove
        );
        Ok(Response::new(pb::MemberRemoveResponse {
            header: cluster_header(answer.header),
            members: self.members(answer.members),
        }))
    }

    async fn member_update(
        &self,
        request: Grpc<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let pb::MemberUpdateRequest { id, peer_ur_ls } = request.into_inner();
        let asked = MemberUpdateRequest { id, peer_urls: peer_ur_ls };
        let answer = call_as!(self, &caller, Request::MemberUpdate(asked), MemberUpdate);
        Ok(Response::new(pb::MemberUpdateResponse {
            header: cluster_header(answer.header),
            members: self.members(answer.members),
        }))
    }

    async fn member_list(
        &self,
        request: Grpc<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let linearizable = request.into_inner().linearizable;
        let answer = call_as!(
            self,
            &caller,
            Request::MemberList(MemberListRequest { linearizable }),
            MemberList
        );
        Ok(Response::new(pb::MemberListResponse {
            header: cluster_header(answer.header),
            members: self.members(answer.members),
        }))
    }

    async fn member_promote(
        &self,
        request: Grpc<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.check_leader(request.metadata()).await?;
        let caller = Caller::of(request.metadata());
        let id = request.into_inner().id;
        let answer = call_as!(
            self,
            &caller,
            Request::MemberPromote(MemberPromoteRequest { id }),
            MemberPromote
        );
        Ok(Response::new(pb::MemberPromoteResponse {
            header: cluster_header(answer.header),
            members: self.members(answer.members),
        }))
    }
}
