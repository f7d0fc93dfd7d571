//! The nodes behind the gateway: a small pool of shared links for unary
//! calls, one kept link per endpoint for the calls that must reach each
//! member in turn (the leader's Status, which `etcdctl endpoint status`
//! and monitoring poll), and a fresh ordered link for each watch session.
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

use ember::proto::{
    AuthenticateRequest, AuthenticateResponse, ErrorBody, ErrorCode, Request, Response,
    ServerMessage, UseTokenRequest,
};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::caller::{Binding, Caller, TOKEN_BYTES_MAX, TokenLinks};
use crate::link::{Link, LinkError};

/// Links being dialed for a token or a login at once; more wait their
/// turn, so a burst of logins cannot open connections without end.
const TOKEN_DIALS_MAX: usize = 16;

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
    /// Links bound to users' tokens (see `caller`).
    pub max_token_links: usize,
    /// TLS to the members, when their client port speaks it.
    pub member_tls: crate::link::MemberTls,
}

pub struct Backend {
    config: BackendConfig,
    /// Invariant: `slots.len() == config.links`.
    slots: Vec<Mutex<Option<Arc<Link>>>>,
    next_slot: AtomicUsize,
    /// Anonymous links kept to each endpoint for `call_each_as`, so a
    /// polled Status costs no connection (and no TLS handshake) per call;
    /// replaced when broken. Invariant: one per `config.endpoints`, in
    /// its order.
    endpoint_links: Vec<Mutex<Option<Arc<Link>>>>,
    /// Where the next dial starts in the endpoint list.
    next_endpoint: AtomicUsize,
    token_links: std::sync::Mutex<TokenLinks>,
    token_dials: Semaphore,
}

impl Backend {
    pub fn new(config: BackendConfig) -> Backend {
        assert!(!config.endpoints.is_empty(), "the gateway needs an endpoint");
        let slots = (0..config.links.max(1)).map(|_| Mutex::new(None)).collect();
        let endpoint_links = config.endpoints.iter().map(|_| Mutex::new(None)).collect();
        let token_links = std::sync::Mutex::new(TokenLinks::new(config.max_token_links));
        Backend {
            config,
            slots,
            next_slot: AtomicUsize::new(0),
            endpoint_links,
            next_endpoint: AtomicUsize::new(0),
            token_links,
            token_dials: Semaphore::new(TOKEN_DIALS_MAX),
        }
    }

    /// Sends `request` as `caller`: on a link bound to its token, or on a
    /// shared (anonymous) link when it has none or auth is off.
    pub async fn call_as(&self, caller: &Caller, request: &Request) -> Result<Response, LinkError> {
        let Caller::Token(token) = caller else { return self.call(request).await };
        let Binding::Bound(link) = self.token_link(token).await? else {
            return self.call(request).await;
        };
        let timeout = self.config.request_timeout;
        match link.call(request, timeout).await {
            Err(error) if worth_another_try(&error, request) => {
                match self.token_link(token).await? {
                    Binding::Bound(link) => link.call(request, timeout).await,
                    Binding::AuthOff => self.call(request).await,
                }
            }
            other => other,
        }
    }

    /// Logs in on a link of its own; on success that link, now bound to the
    /// token, serves the calls that carry it.
    pub async fn authenticate(
        &self,
        request: AuthenticateRequest,
    ) -> Result<AuthenticateResponse, LinkError> {
        let _turn = self.token_dials.acquire().await.map_err(|_| closed())?;
        let link = self.dial_shared().await?;
        let login = Request::Authenticate(request);
        match link.call(&login, self.config.request_timeout).await? {
            Response::Authenticate(answer) => {
                let binding = Binding::Bound(Arc::new(link));
                self.token_links.lock().expect("token links").insert(answer.token.clone(), binding);
                Ok(answer)
            }
            other => Err(LinkError::Server(ErrorBody::with_message(
                ErrorCode::Internal,
                format!("an Authenticate request was answered with {other:?}"),
            ))),
        }
    }

    /// The link bound to `token`, dialing and binding one if none is known.
    async fn token_link(&self, token: &str) -> Result<Binding, LinkError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(LinkError::Server(ErrorBody::new(ErrorCode::InvalidAuthToken)));
        }
        if let Some(binding) = self.token_links.lock().expect("token links").get(token) {
            return Ok(binding);
        }
        let _turn = self.token_dials.acquire().await.map_err(|_| closed())?;
        // Another call may have bound the token while this one waited.
        if let Some(binding) = self.token_links.lock().expect("token links").get(token) {
            return Ok(binding);
        }
        let link = self.dial_shared().await?;
        let bind = Request::UseToken(UseTokenRequest { token: token.to_string() });
        let binding = match link.call(&bind, self.config.request_timeout).await {
            Ok(_) => Binding::Bound(Arc::new(link)),
            Err(LinkError::Server(body)) if body.code() == Some(ErrorCode::AuthNotEnabled) => {
                Binding::AuthOff
            }
            Err(error) => return Err(error),
        };
        self.token_links.lock().expect("token links").insert(token.to_string(), binding.clone());
        Ok(binding)
    }

    /// A link that acts as `caller`, for calls that must stay on one
    /// connection (a backup stream lives on the connection that opened
    /// it): the link bound to its token, or a shared link for an anonymous
    /// caller or while auth is off.
    pub async fn link_as(&self, caller: &Caller) -> Result<Arc<Link>, LinkError> {
        let Caller::Token(token) = caller else { return self.shared_link().await };
        match self.token_link(token).await? {
            Binding::Bound(link) => Ok(link),
            Binding::AuthOff => self.shared_link().await,
        }
    }

    /// An ordered link (see `ordered_link`) bound to `caller`'s token.
    pub async fn ordered_link_as(
        &self,
        caller: &Caller,
    ) -> Result<(Link, mpsc::Receiver<ServerMessage>), LinkError> {
        let (link, mut frames) = self.ordered_link().await?;
        let Caller::Token(token) = caller else { return Ok((link, frames)) };
        if token.len() > TOKEN_BYTES_MAX {
            return Err(LinkError::Server(ErrorBody::new(ErrorCode::InvalidAuthToken)));
        }
        let bind = Request::UseToken(UseTokenRequest { token: token.clone() });
        let id = link.send(&bind).await?;
        // Nothing else was sent on this link yet: the next frame answers.
        let answer = tokio::time::timeout(self.config.request_timeout, frames.recv()).await;
        match answer {
            Ok(Some(ServerMessage::Response { request_id, .. })) if request_id == id => {}
            Ok(Some(ServerMessage::Error { error, .. }))
                if error.code() == Some(ErrorCode::AuthNotEnabled) => {}
            Ok(Some(ServerMessage::Error { error, .. })) => return Err(LinkError::Server(error)),
            Ok(_) => return Err(link_lost(&link)),
            Err(_) => return Err(LinkError::TimedOut),
        }
        Ok((link, frames))
    }

    /// Sends `request` on one of the shared links and waits for the answer;
    /// a read that lost its connection is tried once more.
    pub async fn call(&self, request: &Request) -> Result<Response, LinkError> {
        let timeout = self.config.request_timeout;
        let link = self.shared_link().await?;
        match link.call(request, timeout).await {
            Err(error) if worth_another_try(&error, request) => {
                self.shared_link().await?.call(request, timeout).await
            }
            other => other,
        }
    }

    /// Sends `request` as `caller` to each member in turn until one
    /// answers as the leader does (`from_leader`); the last answer when
    /// none does. For what only the leader serves (MoveLeader) and for the
    /// Status etcd's clients look for the leader by (`etcdctl move-leader`
    /// sends MoveLeader to the endpoint whose Status names itself as
    /// leader). An anonymous caller uses the endpoint's kept link; a user's
    /// call gets a link of its own, bound to its token.
    pub async fn call_each_as(
        &self,
        caller: &Caller,
        request: &Request,
        from_leader: impl Fn(&Result<Response, LinkError>) -> bool,
    ) -> Result<Response, LinkError> {
        let mut last = None;
        for at in self.endpoint_indexes() {
            let answer = self.call_at(at, caller, request).await;
            if from_leader(&answer) {
                return answer;
            }
            last = Some(answer);
        }
        last.unwrap_or_else(|| Err(unreachable(Vec::new())))
    }

    /// Sends `request` as `caller` to endpoint `at`. On the kept link, a
    /// read that lost its connection (a member restarted since) is sent
    /// once more on a fresh one, as on the shared links.
    async fn call_at(
        &self,
        at: usize,
        caller: &Caller,
        request: &Request,
    ) -> Result<Response, LinkError> {
        let timeout = self.config.request_timeout;
        if *caller != Caller::Anonymous {
            let link = self.dial_as(&self.config.endpoints[at], caller).await?;
            return link.call(request, timeout).await;
        }
        match self.endpoint_link(at).await?.call(request, timeout).await {
            Err(error) if worth_another_try(&error, request) => {
                self.endpoint_link(at).await?.call(request, timeout).await
            }
            other => other,
        }
    }

    /// The kept anonymous link to endpoint `at`, dialed when there is none
    /// or it broke.
    async fn endpoint_link(&self, at: usize) -> Result<Arc<Link>, LinkError> {
        let mut slot = self.endpoint_links[at].lock().await;
        if let Some(link) = slot.as_ref().filter(|link| !link.is_broken()) {
            return Ok(link.clone());
        }
        let config = &self.config;
        let endpoint = &config.endpoints[at];
        let dial =
            Link::shared(endpoint, &config.member_tls, config.dial_timeout, config.max_in_flight);
        let link = Arc::new(dial.await.map_err(|why| unreachable(vec![why]))?);
        *slot = Some(link.clone());
        Ok(link)
    }

    /// A link of its own to `endpoint`, bound to `caller`'s token (anonymous
    /// without one, or while auth is off).
    async fn dial_as(&self, endpoint: &str, caller: &Caller) -> Result<Link, LinkError> {
        let config = &self.config;
        let link = Link::shared(endpoint, &config.member_tls, config.dial_timeout, 1)
            .await
            .map_err(|why| unreachable(vec![why]))?;
        let Caller::Token(token) = caller else { return Ok(link) };
        if token.len() > TOKEN_BYTES_MAX {
            return Err(LinkError::Server(ErrorBody::new(ErrorCode::InvalidAuthToken)));
        }
        let bind = Request::UseToken(UseTokenRequest { token: token.clone() });
        match link.call(&bind, config.request_timeout).await {
            Ok(_) => Ok(link),
            Err(LinkError::Server(body)) if body.code() == Some(ErrorCode::AuthNotEnabled) => {
                Ok(link)
            }
            Err(error) => Err(error),
        }
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
            let config = &self.config;
            let opened = Link::ordered(
                endpoint,
                &config.member_tls,
                config.dial_timeout,
                config.watch_buffer_frames,
            );
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
            let config = &self.config;
            let dial = Link::shared(
                endpoint,
                &config.member_tls,
                config.dial_timeout,
                config.max_in_flight,
            );
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
        self.endpoint_indexes().map(|at| &self.config.endpoints[at])
    }

    /// The positions of `endpoint_order` in `config.endpoints`.
    fn endpoint_indexes(&self) -> impl Iterator<Item = usize> {
        let count = self.config.endpoints.len();
        let first = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        (0..count).map(move |offset| (first + offset) % count)
    }
}

/// A read whose connection died or timed out, or a write that never left,
/// may go once more on a fresh link; a write that left may have been
/// applied.
fn worth_another_try(error: &LinkError, request: &Request) -> bool {
    match error {
        LinkError::Lost { sent, .. } => !sent || !request.is_write(),
        LinkError::TimedOut => !request.is_write(),
        _ => false,
    }
}

fn closed() -> LinkError {
    LinkError::Lost { sent: false, cause: "the gateway is stopping".to_string() }
}

fn link_lost(link: &Link) -> LinkError {
    LinkError::Lost { sent: true, cause: format!("connection to {} lost", link.endpoint) }
}

fn unreachable(failures: Vec<String>) -> LinkError {
    LinkError::Lost { sent: false, cause: format!("no member reachable: {}", failures.join("; ")) }
}
