//! What every service shares: the backend, the settings, and the helpers
//! that send one Ember request and unwrap its answer.

use std::sync::Arc;

use ember::proto::{ErrorBody, ErrorCode, Request, Response, StatusResponse};
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::backend::Backend;
use crate::caller::Caller;
use crate::link::LinkError;
use crate::status;

/// The gateway's shared state; cheap to clone into each service.
#[derive(Clone)]
pub struct Gateway {
    pub backend: Arc<Backend>,
    /// The etcd version `Status` and `GET /version` report. Kubernetes turns
    /// features on by it, so it is a setting rather than Ember's version.
    pub etcd_version: Arc<str>,
    /// The URLs etcd clients reach the members at: this gateway's.
    pub advertise_client_urls: Arc<[String]>,
    /// One permit per Watch stream, each holding a connection to a node.
    pub watch_streams: Arc<Semaphore>,
}

impl Gateway {
    /// Sends one request as `caller` and turns a failure into etcd's
    /// status.
    pub async fn call(&self, caller: &Caller, request: Request) -> Result<Response, Status> {
        self.backend.call_as(caller, &request).await.map_err(|error| refusal(caller, error))
    }

    /// The member's status; open to anyone, so asked anonymously.
    pub async fn member_status(&self) -> Result<StatusResponse, Status> {
        match self.call(&Caller::Anonymous, Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(mismatch("Status", &other)),
        }
    }

    /// The leader's status, asked anonymously: the shared link's member
    /// when it leads (or no leader is known), else each member on a link
    /// of its own until the leader answers; a follower's when none does.
    pub async fn leader_status(&self) -> Result<StatusResponse, Status> {
        let status = self.member_status().await?;
        if status.leader_id == 0 || status.header.member_id == status.leader_id {
            return Ok(status);
        }
        let leads = |answer: &Result<Response, LinkError>| matches!(answer, Ok(Response::Status(s)) if s.header.member_id == s.leader_id);
        let answer = self.backend.call_each_as(&Caller::Anonymous, &Request::Status, leads).await;
        match answer {
            Ok(Response::Status(leader)) if leader.header.member_id == leader.leader_id => {
                Ok(leader)
            }
            _ => Ok(status),
        }
    }

    /// etcd's `hasleader` metadata: a client that sets it wants an error
    /// rather than an answer from a member without a leader. True when the
    /// client asked (and a leader is known).
    pub async fn check_leader(&self, metadata: &MetadataMap) -> Result<bool, Status> {
        let wanted = metadata.get("hasleader").is_some_and(|value| value == "true");
        if wanted && self.member_status().await?.leader_id == 0 {
            return Err(Status::unavailable(ember::proto::ErrorCode::NoLeader.message()));
        }
        Ok(wanted)
    }
}

/// A failed call as etcd's status. etcd refuses a call without a token,
/// while auth is on, as one without a user name; the node says the token
/// is missing.
pub fn refusal(caller: &Caller, error: LinkError) -> Status {
    match error {
        LinkError::Server(body)
            if *caller == Caller::Anonymous && body.code() == Some(ErrorCode::InvalidAuthToken) =>
        {
            status::from_body(&ErrorBody::new(ErrorCode::UserEmpty))
        }
        error => status::from_link(error),
    }
}

/// A node answered with another variant than the request's: a bug on one
/// side, reported as etcd reports its own internal errors.
pub fn mismatch(asked: &str, answer: &Response) -> Status {
    Status::internal(format!("ember: a {asked} request was answered with {answer:?}"))
}

/// Sends `$request` through `$gateway` as `$caller` and unwraps the
/// `$variant` answer.
macro_rules! call_as {
    ($gateway:expr, $caller:expr, $request:expr, $variant:ident) => {
        match $gateway.call($caller, $request).await? {
            ember::proto::Response::$variant(answer) => answer,
            other => return Err($crate::gateway::mismatch(stringify!($variant), &other)),
        }
    };
}
pub(crate) use call_as;
