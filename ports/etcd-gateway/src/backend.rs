//! The nodes behind the gateway: a small pool of shared links for unary
//! calls, and a fresh ordered link for each watch session.
//!
//! Any member serves any request (followers forward writes and confirm
//! linearizable reads with the leader), so the pool spreads its links over
//! the endpoints and replaces a broken link with one to the next endpoint.
//! A read whose connection died, or whose member did not answer in time, is
//! sent once more on a fresh link (to the next endpoint); a write is not,
//! since it may have been applied: its caller gets etcd's "outcome
//! unknown" error instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ember::proto::{ErrorCode, Request, Response, ServerMessage};
use tokio::sync::{Mutex, mpsc};

use crate::link::{Link, LinkError};

/// How the gateway reaches the nodes.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// `host:port` of Ember members' client ports. Invariant: not empty.
    pub endpoints: Vec<String>,
    /// Shared links for unary calls.
    pub links: usize,
    /// Requests unanswered per shared link; below the node's own bound.
    pub max_in_flight: usize,
    pub dial_timeout: Duration,
    /// How long a unary call waits for its answer before the link is given
    /// up (etcd's clients put their own deadlines on top).
    pub request_timeout: Duration,
    /// Frames a watch session may have waiting before its link stops reading.
    pub watch_buffer_frames: usize,
}

pub struct Backend {
    config: BackendConfig,
    /// Invariant: `slots.len() == config.links`.
    slots: Vec<Mutex<Option<Arc<Link>>>>,
    next_slot: AtomicUsize,
    /// Where the next dial starts in the endpoint list.
    next_endpoint: AtomicUsize,
}

impl Backend {
    pub fn new(config: BackendConfig) -> Backend {
        assert!(!config.endpoints.is_empty(), "the gateway needs an endpoint");
        let slots = (0..config.links.max(1)).map(|_| Mutex::new(None)).collect();
        Backend {
            config,
            slots,
            next_slot: AtomicUsize::new(0),
            next_endpoint: AtomicUsize::new(0),
        }
    }

    /// Sends `request` on one of the shared links and waits for the answer;
    /// a read that lost its connection is tried once more.
    pub async fn call(&self, request: &Request) -> Result<Response, LinkError> {
        let timeout = self.config.request_timeout;
        let link = self.shared_link().await?;
        match link.call(request, timeout).await {
            Err(LinkError::Lost { sent, .. }) if !sent || !request.is_write() => {
                self.shared_link().await?.call(request, timeout).await
            }
            Err(LinkError::TimedOut) if !request.is_write() => {
                self.shared_link().await?.call(request, timeout).await
            }
            other => other,
        }
    }

    /// Sends `request` to each member in turn, on a link of its own, until
    /// one that is not refusing it as a follower (`NotLeader`) answers:
    /// for the requests only the leader serves (move-leader).
    pub async fn call_on_leader(&self, request: &Request) -> Result<Response, LinkError> {
        let mut last = None;
        for endpoint in self.endpoint_order() {
            let link = match Link::shared(endpoint, self.config.dial_timeout, 1).await {
                Ok(link) => link,
                Err(why) => {
                    last = Some(unreachable(vec![why]));
                    continue;
                }
            };
            match link.call(request, self.config.request_timeout).await {
                Err(LinkError::Server(body)) if body.code() == Some(ErrorCode::NotLeader) => {
                    last = Some(LinkError::Server(body));
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| unreachable(Vec::new())))
    }

    /// A shared link that is not known to be broken, dialing if need be.
    pub async fn shared_link(&self) -> Result<Arc<Link>, LinkError> {
        let at = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[at].lock().await;
        if let Some(link) = slot.as_ref().filter(|link| !link.is_broken()) {
            return Ok(link.clone());
        }
        let link = Arc::new(self.dial_shared().await?);
        *slot = Some(link.clone());
        Ok(link)
    }

    /// An ordered link for one watch session, to the first endpoint that
    /// answers.
    pub async fn ordered_link(&self) -> Result<(Link, mpsc::Receiver<ServerMessage>), LinkError> {
        let mut failures = Vec::new();
        for endpoint in self.endpoint_order() {
            let opened =
                Link::ordered(endpoint, self.config.dial_timeout, self.config.watch_buffer_frames);
            match opened.await {
                Ok(opened) => return Ok(opened),
                Err(why) => failures.push(why),
            }
        }
        Err(unreachable(failures))
    }

    async fn dial_shared(&self) -> Result<Link, LinkError> {
        let mut failures = Vec::new();
        for endpoint in self.endpoint_order() {
            let dial = Link::shared(endpoint, self.config.dial_timeout, self.config.max_in_flight);
            match dial.await {
                Ok(link) => return Ok(link),
                Err(why) => failures.push(why),
            }
        }
        Err(unreachable(failures))
    }

    /// Every endpoint once, starting one further along at each call, so
    /// links spread over the members.
    fn endpoint_order(&self) -> impl Iterator<Item = &String> {
        let endpoints = &self.config.endpoints;
        let first = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        (0..endpoints.len()).map(move |offset| &endpoints[(first + offset) % endpoints.len()])
    }
}

fn unreachable(failures: Vec<String>) -> LinkError {
    LinkError::Lost { sent: false, cause: format!("no member reachable: {}", failures.join("; ")) }
}
