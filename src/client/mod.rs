//! A blocking Rust client for applications and for the `ember` command.
//!
//! Owns: endpoints and failover, pipelining, watch streams, typed errors.
//!
//! Must not touch: anything inside `server`, `raft` or `wal`; it speaks only the
//! protocol in `proto`.
//!
//! Layout:
//! - `Client` (this file): one connection at a time to the first reachable
//!   of several endpoints; typed calls (`put`, `get`, `range`, `delete`,
//!   `txn`, `compact`, `status`, `member_list`, leases, `watch`) and
//!   `pipeline` for many requests in flight at once.
//! - `connection`: `Connection`, the pipelined socket under both: `send`
//!   returns a request id, `recv` the next answer or pushed watch frame.
//!   `ember bench` drives it directly.
//! - `watch`: `WatchStream`, a watch on its own connection that resumes on
//!   another endpoint when its connection dies.
//! - `endpoint`: address parsing and dialing; `error`: `ClientError`.
//!
//! Failover: any member serves every request, so when a connection dies the
//! client dials the next endpoint in the list and goes on. A read whose
//! answer was lost is sent again there (reads are safe to repeat); a write
//! whose answer was lost is not: it comes back as
//! `ClientError::OutcomeUnknown`, because it may have been applied. A member
//! that answers "unavailable" (no leader, stopping) is left for the next one
//! too, for reads and for writes the code says were not applied. Each call
//! tries every endpoint at most once, waits for an answer at most the
//! command timeout, and starts no new attempt once that has passed (a dial
//! in progress may add up to the dial timeout).
//!
//! ```no_run
//! use ember::client::{Client, ClientError, Config};
//!
//! let endpoints = vec!["10.0.0.1:7379".to_string(), "10.0.0.2:7379".to_string()];
//! let mut client = Client::connect(Config::new(endpoints))?;
//! match client.put(b"/config/mode", b"eco") {
//!     Ok(_) => {}
//!     // Applied or not: re-read before deciding what to do.
//!     Err(error) if error.outcome_unknown() => {
//!         let now = client.get(b"/config/mode")?;
//!         println!("after an unknown outcome the key holds {now:?}");
//!     }
//!     Err(error) => return Err(error),
//! }
//! for message in client.watch(ember::proto::WatchCreateRequest {
//!     key: b"/config/".to_vec(),
//!     range_end: ember::proto::prefix_range_end(b"/config/"),
//!     ..Default::default()
//! })? {
//!     println!("{:?}", message?);
//! }
//! # Ok::<(), ClientError>(())
//! ```

mod auth;
mod connection;
mod endpoint;
mod error;
mod watch;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use auth::{Credentials, log_in};
pub use connection::{
    ConnectOptions, Connection, IN_FLIGHT_MAX_DEFAULT, RESPONSE_BYTES_MAX_DEFAULT,
};
pub use endpoint::{any_https, parse_endpoint, parse_endpoints};
pub use error::{ClientError, DialFailure};
pub use watch::WatchStream;

use crate::proto::*;

/// etcdctl's defaults: 2 s to dial and greet, 5 s for a whole call.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What a `Client` connects to and how long it waits.
#[derive(Clone, Debug)]
pub struct Config {
    /// `host:port` entries, tried in order; see `parse_endpoints`.
    /// Invariant: not empty.
    pub endpoints: Vec<String>,
    pub dial_timeout: Duration,
    /// The most one call (with its failovers) may take.
    pub command_timeout: Duration,
    pub max_response_bytes: u32,
    pub max_in_flight: usize,
    /// Log in as this user on every connection; `None` for no user.
    pub credentials: Option<Credentials>,
    /// Speak TLS with this configuration (see `tls::ClientFiles`); `None`
    /// speaks plain TCP.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Config {
    pub fn new(endpoints: Vec<String>) -> Config {
        assert!(!endpoints.is_empty(), "a client needs at least one endpoint");
        Config {
            endpoints,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            max_response_bytes: RESPONSE_BYTES_MAX_DEFAULT,
            max_in_flight: IN_FLIGHT_MAX_DEFAULT,
            credentials: None,
            tls: None,
        }
    }

    fn connect_options(&self, expected_cluster_id: u64) -> ConnectOptions {
        ConnectOptions {
            dial_timeout: self.dial_timeout,
            idle_timeout: Some(self.command_timeout),
            max_response_bytes: self.max_response_bytes,
            max_in_flight: self.max_in_flight,
            expected_cluster_id,
            tls: self.tls.clone(),
        }
    }
}

/// A blocking client. Not shared between threads: give each thread its own,
/// or use `pipeline` to keep many requests in flight from one.
#[derive(Debug)]
pub struct Client {
    config: Config,
    connection: Option<Connection>,
    /// Index into `config.endpoints` of the next endpoint to dial.
    /// Invariant: `< config.endpoints.len()`.
    next_endpoint: usize,
    /// The cluster of the first server met; later endpoints must match, so a
    /// wrong endpoint list cannot mix two clusters. 0 until known.
    cluster_id: u64,
}

impl Client {
    /// Connects to the first reachable endpoint.
    pub fn connect(config: Config) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::BadEndpoint("the endpoint list is empty".to_string()));
        }
        let mut client = Client { config, connection: None, next_endpoint: 0, cluster_id: 0 };
        client.connection()?;
        Ok(client)
    }

    /// The endpoint of the current connection, if there is one.
    pub fn endpoint(&self) -> Option<&str> {
        self.connection.as_ref().map(Connection::endpoint)
    }

    /// The member answering on the current connection (from its hello).
    pub fn member_id(&self) -> Option<u64> {
        self.connection.as_ref().map(Connection::member_id)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current connection, dialing endpoints in turn (from the one after
    /// the last failure) when there is none.
    fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        if self.connection.as_mut().is_some_and(Connection::closed_by_server) {
            // The member went away while the client was idle (a restart,
            // say); its endpoint may be back, so dial it first again.
            self.connection = None;
        }
        if self.connection.is_none() {
            let options = self.config.connect_options(self.cluster_id);
            let (mut connection, at) =
                dial_first(&self.config.endpoints, self.next_endpoint, &options)?;
            if let Some(credentials) = self.config.credentials.as_mut() {
                let deadline = Instant::now() + self.config.command_timeout;
                auth::log_in(&mut connection, credentials, deadline)?;
            }
            self.next_endpoint = at;
            self.cluster_id = connection.cluster_id();
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("a connection was just made"))
    }

    /// Forgets the current connection; the next call dials the endpoint
    /// after it.
    fn drop_connection(&mut self) {
        self.connection = None;
        self.next_endpoint = (self.next_endpoint + 1) % self.config.endpoints.len();
    }

    /// Sends one request and waits for its answer, failing over as the
    /// module doc describes.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.config.command_timeout;
        let mut last_error = None;
        let mut logged_in_again = false;
        let mut attempt = 0;
        while attempt < self.config.endpoints.len() {
            if attempt > 0 && Instant::now() >= deadline {
                break;
            }
            attempt += 1;
            // When every other endpoint is down too, the error names them all.
            let connection = self.connection()?;
            match call(connection, request, deadline) {
                Ok(response) => return Ok(response),
                Err(Failure::Answered(error)) if !logged_in_again && self.token_refused(&error) => {
                    // Refused before anything applied: log in, send again.
                    logged_in_again = true;
                    attempt -= 1;
                    self.log_in_again(deadline)?;
                }
                Err(Failure::Answered(error))
                    if self.config.endpoints.len() > 1 && retry_elsewhere(&error, request) =>
                {
                    self.drop_connection();
                    last_error = Some(error);
                }
                Err(Failure::Answered(error)) => return Err(error),
                Err(Failure::NotSent(error)) => {
                    self.drop_connection();
                    last_error = Some(error);
                }
                Err(Failure::Lost(error)) => {
                    self.drop_connection();
                    if request.is_write() {
                        return Err(self.outcome_unknown(error));
                    }
                    last_error = Some(error);
                }
                Err(Failure::Fatal(error)) => {
                    self.drop_connection();
                    return Err(self.fatal(error, request));
                }
            }
        }
        Err(last_error.expect("at least one endpoint was tried"))
    }

    /// Whether `error` says the token is no longer good and this client
    /// can get a new one.
    fn token_refused(&self, error: &ClientError) -> bool {
        let password = self.config.credentials.as_ref().is_some_and(|c| c.password.is_some());
        password && error.code() == Some(ErrorCode::InvalidAuthToken)
    }

    fn log_in_again(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let Some(credentials) = self.config.credentials.as_mut() else { return Ok(()) };
        credentials.token = None;
        let Some(connection) = self.connection.as_mut() else { return Ok(()) };
        auth::log_in(connection, credentials, deadline)
    }

    fn outcome_unknown(&self, error: ClientError) -> ClientError {
        match error {
            ClientError::ConnectionLost { endpoint, cause } => {
                ClientError::OutcomeUnknown { endpoint, cause }
            }
            other => other,
        }
    }

    /// A timeout ends the call: for a write the outcome is unknown.
    fn fatal(&self, error: ClientError, request: &Request) -> ClientError {
        match error {
            ClientError::Timeout { endpoint, .. } => {
                let after_ms = self.config.command_timeout.as_millis() as u64;
                if request.is_write() {
                    let cause = format!("no answer within {after_ms} ms");
                    ClientError::OutcomeUnknown { endpoint, cause }
                } else {
                    ClientError::Timeout { endpoint, after_ms }
                }
            }
            other => other,
        }
    }

    /// Sends every request at once on one connection (up to the in-flight
    /// window at a time) and returns their answers in the order of
    /// `requests`, matched by request id whatever order they arrive in.
    ///
    /// No failover inside a pipeline: if the connection dies, each write
    /// still unanswered gets `OutcomeUnknown` and each read `ConnectionLost`,
    /// and the next call dials the next endpoint.
    pub fn pipeline(&mut self, requests: &[Request]) -> Vec<Result<Response, ClientError>> {
        let deadline = Instant::now() + self.config.command_timeout;
        let outcome = match self.connection() {
            Ok(connection) => run_pipeline(connection, requests, deadline),
            Err(error) => return requests.iter().map(|_| Err(error.clone())).collect(),
        };
        let (mut results, broken) = outcome;
        if let Some(error) = broken {
            self.drop_connection();
            for (request, slot) in requests.iter().zip(results.iter_mut()) {
                if slot.is_none() {
                    let error = self.fatal(error.clone(), request);
                    let error =
                        if request.is_write() { self.outcome_unknown(error) } else { error };
                    *slot = Some(Err(error));
                }
            }
        }
        results.into_iter().map(|slot| slot.expect("every request has an outcome")).collect()
    }

    /// Opens a watch on its own connection; see `WatchStream`.
    pub fn watch(&mut self, request: WatchCreateRequest) -> Result<WatchStream, ClientError> {
        let options = self.config.connect_options(self.cluster_id);
        WatchStream::open(self.config.clone(), options, self.next_endpoint, request)
    }
}

/// True when another member may well serve `request` after this answer: the
/// member said it cannot serve now (gRPC Unavailable: no leader, stopping,
/// unhealthy), and sending the request again cannot apply it twice (a read,
/// or a write the error says was not applied). A member found corrupt
/// refuses keyspace requests as they arrive, before any is proposed, while
/// the members that agree keep serving: that refusal is retried elsewhere too.
fn retry_elsewhere(error: &ClientError, request: &Request) -> bool {
    let Some(code) = error.code() else { return false };
    if code == ErrorCode::Corrupt {
        return true;
    }
    code.grpc() == GrpcCode::Unavailable && (!request.is_write() || !code.outcome_unknown())
}

/// How one call on one connection ended badly.
pub(crate) enum Failure {
    /// The server answered with an error: the connection is fine.
    Answered(ClientError),
    /// The request never reached the server whole: safe to send elsewhere.
    NotSent(ClientError),
    /// The request was sent, then the connection died.
    Lost(ClientError),
    /// A timeout or protocol breach: stop trying.
    Fatal(ClientError),
}

impl Failure {
    pub(crate) fn into_error(self) -> ClientError {
        match self {
            Failure::Answered(e) | Failure::NotSent(e) | Failure::Lost(e) | Failure::Fatal(e) => e,
        }
    }
}

pub(crate) fn call(
    connection: &mut Connection,
    request: &Request,
    deadline: Instant,
) -> Result<Response, Failure> {
    let id = connection.send(request).map_err(Failure::Answered)?;
    connection.flush().map_err(Failure::NotSent)?;
    loop {
        let message = connection.recv(Some(deadline)).map_err(|error| match error {
            ClientError::ConnectionLost { .. } => Failure::Lost(error),
            other => Failure::Fatal(other),
        })?;
        match message {
            ServerMessage::Response { request_id, response } if request_id == id => {
                return check_variant(connection, request, response).map_err(Failure::Fatal);
            }
            ServerMessage::Error { request_id, error } if request_id == id => {
                let endpoint = connection.endpoint().to_string();
                return Err(Failure::Answered(ClientError::Server { endpoint, error }));
            }
            // Answers to other ids cannot occur on a connection used one call
            // at a time; watch frames belong to `WatchStream`s. Skip both.
            _ => {}
        }
    }
}

/// The answer's variant must match the request's (same wire tag).
fn check_variant(
    connection: &Connection,
    request: &Request,
    response: Response,
) -> Result<Response, ClientError> {
    if answers(request, &response) {
        return Ok(response);
    }
    Err(ClientError::Protocol {
        endpoint: connection.endpoint().to_string(),
        detail: format!("a {} request was answered with {response:?}", request.name()),
    })
}

/// True when `response` is the variant that answers `request`.
fn answers(request: &Request, response: &Response) -> bool {
    use Request as Q;
    use Response as A;
    matches!(
        (request, response),
        (Q::Range(_), A::Range(_))
            | (Q::Put(_), A::Put(_))
            | (Q::DeleteRange(_), A::DeleteRange(_))
            | (Q::Txn(_), A::Txn(_))
            | (Q::Compact(_), A::Compact(_))
            | (Q::WatchCreate(_), A::WatchCreate(_))
            | (Q::WatchCancel(_), A::WatchCancel(_))
            | (Q::WatchProgress, A::WatchProgress(_))
            | (Q::LeaseGrant(_), A::LeaseGrant(_))
            | (Q::LeaseRevoke(_), A::LeaseRevoke(_))
            | (Q::LeaseKeepAlive(_), A::LeaseKeepAlive(_))
            | (Q::LeaseTimeToLive(_), A::LeaseTimeToLive(_))
            | (Q::LeaseLeases, A::LeaseLeases(_))
            | (Q::MemberList(_), A::MemberList(_))
            | (Q::Status, A::Status(_))
            | (Q::MemberAdd(_), A::MemberAdd(_))
            | (Q::MemberRemove(_), A::MemberRemove(_))
            | (Q::MemberUpdate(_), A::MemberUpdate(_))
            | (Q::MemberPromote(_), A::MemberPromote(_))
            | (Q::HashKv(_), A::HashKv(_))
            | (Q::Authenticate(_), A::Authenticate(_))
            | (Q::UseToken(_), A::UseToken(_))
            | (Q::AuthEnable, A::AuthEnable(_))
            | (Q::AuthDisable, A::AuthDisable(_))
            | (Q::AuthStatus, A::AuthStatus(_))
            | (Q::UserAdd(_), A::UserAdd(_))
            | (Q::UserGet(_), A::UserGet(_))
            | (Q::UserList, A::UserList(_))
            | (Q::UserDelete(_), A::UserDelete(_))
            | (Q::UserChangePassword(_), A::UserChangePassword(_))
            | (Q::UserGrantRole(_), A::UserGrantRole(_))
            | (Q::UserRevokeRole(_), A::UserRevokeRole(_))
            | (Q::RoleAdd(_), A::RoleAdd(_))
            | (Q::RoleGet(_), A::RoleGet(_))
            | (Q::RoleList, A::RoleList(_))
            | (Q::RoleDelete(_), A::RoleDelete(_))
            | (Q::RoleGrantPermission(_), A::RoleGrantPermission(_))
            | (Q::RoleRevokePermission(_), A::RoleRevokePermission(_))
            | (Q::Alarm(_), A::Alarm(_))
            | (Q::Snapshot(_), A::Snapshot(_))
            | (Q::MoveLeader(_), A::MoveLeader(_))
            | (Q::Defragment, A::Defragment(_))
    )
}

/// Each request's outcome (`None` while unanswered), and the error that
/// broke the connection, if one did.
type PipelineOutcome = (Vec<Option<Result<Response, ClientError>>>, Option<ClientError>);

/// Keeps up to the window of `requests` in flight and files each answer
/// under its request's index.
fn run_pipeline(
    connection: &mut Connection,
    requests: &[Request],
    deadline: Instant,
) -> PipelineOutcome {
    let mut results: Vec<Option<Result<Response, ClientError>>> = vec![None; requests.len()];
    let mut index_of_id: HashMap<u64, usize> = HashMap::with_capacity(requests.len());
    let mut next = 0;
    while next < requests.len() || !index_of_id.is_empty() {
        while next < requests.len() {
            match connection.send(&requests[next]) {
                Ok(id) => {
                    index_of_id.insert(id, next);
                }
                Err(ClientError::WindowFull { .. }) => break,
                Err(error @ ClientError::TooLarge { .. }) => results[next] = Some(Err(error)),
                Err(error) => return (results, Some(error)),
            }
            next += 1;
        }
        let message = match connection.recv(Some(deadline)) {
            Ok(message) => message,
            Err(error) => return (results, Some(error)),
        };
        let endpoint = connection.endpoint().to_string();
        let (id, result) = match message {
            ServerMessage::Response { request_id, response } => (request_id, Ok(response)),
            ServerMessage::Error { request_id, error } => {
                (request_id, Err(ClientError::Server { endpoint, error }))
            }
            ServerMessage::Watch { .. } => continue,
        };
        if let Some(index) = index_of_id.remove(&id) {
            let result = result.and_then(|r| check_variant(connection, &requests[index], r));
            results[index] = Some(result);
        }
    }
    (results, None)
}

/// Dials the endpoints in turn, starting at `first`, and returns the first
/// connection made with its endpoint's index.
pub(crate) fn dial_first(
    endpoints: &[String],
    first: usize,
    options: &ConnectOptions,
) -> Result<(Connection, usize), ClientError> {
    let mut tried = Vec::new();
    for offset in 0..endpoints.len() {
        let at = (first + offset) % endpoints.len();
        match Connection::open(&endpoints[at], options) {
            Ok(connection) => return Ok((connection, at)),
            Err(reason) => tried.push(DialFailure { endpoint: endpoints[at].clone(), reason }),
        }
    }
    Err(ClientError::Unreachable { tried })
}

/// Unwraps the response variant a typed call expects; `check_variant` has
/// already made sure it is the right one.
macro_rules! typed_call {
    ($client:expr, $request:expr, $variant:path) => {
        match $client.request(&$request)? {
            $variant(answer) => Ok(answer),
            other => unreachable!("check_variant let {other:?} through"),
        }
    };
}

impl Client {
    /// Reads `[key, range_end)` with every option of `RangeRequest`.
    pub fn range(&mut self, request: RangeRequest) -> Result<RangeResponse, ClientError> {
        typed_call!(self, Request::Range(request), Response::Range)
    }

    /// The newest version of one key, linearizable; `None` when absent.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, ClientError> {
        let request = RangeRequest { key: key.to_vec(), ..RangeRequest::default() };
        Ok(self.range(request)?.kvs.into_iter().next())
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<PutResponse, ClientError> {
        let request = PutRequest { key: key.to_vec(), value: value.to_vec(), ..Default::default() };
        self.put_with(request)
    }

    /// A put with every option of `PutRequest` (lease, prev_kv, ...).
    pub fn put_with(&mut self, request: PutRequest) -> Result<PutResponse, ClientError> {
        typed_call!(self, Request::Put(request), Response::Put)
    }

    /// Deletes one key; returns how many keys were deleted (0 or 1).
    pub fn delete(&mut self, key: &[u8]) -> Result<i64, ClientError> {
        let request = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
        Ok(self.delete_range(request)?.deleted)
    }

    pub fn delete_range(
        &mut self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ClientError> {
        typed_call!(self, Request::DeleteRange(request), Response::DeleteRange)
    }

    pub fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, ClientError> {
        typed_call!(self, Request::Txn(request), Response::Txn)
    }

    pub fn compact(
        &mut self,
        revision: i64,
        physical: bool,
    ) -> Result<CompactionResponse, ClientError> {
        let request = CompactionRequest { revision, physical };
        typed_call!(self, Request::Compact(request), Response::Compact)
    }

    /// The status of the member on the current connection.
    pub fn status(&mut self) -> Result<StatusResponse, ClientError> {
        typed_call!(self, Request::Status, Response::Status)
    }

    /// The keyspace hash of the member on the current connection at
    /// `revision` (0: its newest), as etcd's HashKV.
    pub fn hash_kv(&mut self, revision: i64) -> Result<HashKvResponse, ClientError> {
        typed_call!(self, Request::HashKv(HashKvRequest { revision }), Response::HashKv)
    }

    /// Every alarm raised in the cluster, as the answering member applied
    /// them.
    pub fn alarm_list(&mut self) -> Result<AlarmResponse, ClientError> {
        let request = AlarmRequest { action: AlarmAction::Get, ..AlarmRequest::default() };
        typed_call!(self, Request::Alarm(request), Response::Alarm)
    }

    /// Raises (`Activate`) or clears (`Deactivate`) one member's alarm.
    pub fn alarm_change(
        &mut self,
        action: AlarmAction,
        member: AlarmMember,
    ) -> Result<AlarmResponse, ClientError> {
        let request = AlarmRequest { action, member_id: member.member_id, alarm: member.alarm };
        typed_call!(self, Request::Alarm(request), Response::Alarm)
    }

    /// Clears every alarm raised, as etcd's client does: lists them, then
    /// clears each; the answer holds those cleared.
    pub fn alarm_disarm(&mut self) -> Result<AlarmResponse, ClientError> {
        let listed = self.alarm_list()?;
        let mut cleared = AlarmResponse { header: listed.header, alarms: Vec::new() };
        for alarm in listed.alarms {
            let answer = self.alarm_change(AlarmAction::Deactivate, alarm)?;
            cleared.header = answer.header;
            cleared.alarms.extend(answer.alarms);
        }
        Ok(cleared)
    }

    /// Opens a backup stream on the member of the current connection (or
    /// the first that answers): it takes a snapshot now, which may take
    /// up to `wait`, and answers with the stream's first piece. The rest
    /// comes from `snapshot_next` on the same connection.
    pub fn snapshot_open(&mut self, wait: Duration) -> Result<SnapshotResponse, ClientError> {
        let command_timeout = self.config.command_timeout;
        self.config.command_timeout = command_timeout.max(wait);
        let answer = self.request(&Request::Snapshot(SnapshotRequest { stream_id: 0 }));
        self.config.command_timeout = command_timeout;
        match answer? {
            Response::Snapshot(piece) => Ok(piece),
            other => unreachable!("check_variant let {other:?} through"),
        }
    }

    /// The next piece of backup stream `stream_id`. Never fails over: the
    /// stream lives on the connection that opened it, so a lost connection
    /// ends the backup.
    pub fn snapshot_next(&mut self, stream_id: u64) -> Result<SnapshotResponse, ClientError> {
        let deadline = Instant::now() + self.config.command_timeout;
        let request = Request::Snapshot(SnapshotRequest { stream_id });
        let Some(connection) = self.connection.as_mut() else {
            return Err(ClientError::ConnectionLost {
                endpoint: self.config.endpoints[self.next_endpoint].clone(),
                cause: "the backup stream's connection is gone".to_string(),
            });
        };
        match call(connection, &request, deadline) {
            Ok(Response::Snapshot(piece)) => Ok(piece),
            Ok(other) => unreachable!("check_variant let {other:?} through"),
            Err(failure) => {
                self.drop_connection();
                Err(failure.into_error())
            }
        }
    }

    /// Hands the leadership to voter `target_id`; the member asked must
    /// lead (`NotLeader` otherwise).
    pub fn move_leader(&mut self, target_id: u64) -> Result<ResponseHeader, ClientError> {
        typed_call!(
            self,
            Request::MoveLeader(MoveLeaderRequest { target_id }),
            Response::MoveLeader
        )
    }

    /// Takes a snapshot on the member now and releases the WAL it covers.
    pub fn defragment(&mut self, wait: Duration) -> Result<ResponseHeader, ClientError> {
        let command_timeout = self.config.command_timeout;
        self.config.command_timeout = command_timeout.max(wait);
        let answer = self.request(&Request::Defragment);
        self.config.command_timeout = command_timeout;
        match answer? {
            Response::Defragment(header) => Ok(header),
            other => unreachable!("check_variant let {other:?} through"),
        }
    }

    pub fn member_list(&mut self, linearizable: bool) -> Result<MemberListResponse, ClientError> {
        let request = MemberListRequest { linearizable };
        typed_call!(self, Request::MemberList(request), Response::MemberList)
    }

    /// Adds a member named `name` at `peer_urls`, as a learner or a voter.
    /// The name fixes its id: the new member must start with that `--name`.
    pub fn member_add(
        &mut self,
        name: &str,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse, ClientError> {
        let request = MemberAddRequest { peer_urls, is_learner, name: name.to_string() };
        typed_call!(self, Request::MemberAdd(request), Response::MemberAdd)
    }

    pub fn member_remove(&mut self, id: u64) -> Result<MemberChangeResponse, ClientError> {
        let request = MemberRemoveRequest { id };
        typed_call!(self, Request::MemberRemove(request), Response::MemberRemove)
    }

    pub fn member_update(
        &mut self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<MemberChangeResponse, ClientError> {
        let request = MemberUpdateRequest { id, peer_urls };
        typed_call!(self, Request::MemberUpdate(request), Response::MemberUpdate)
    }

    /// Makes a learner a voter; refused until its log is close to the
    /// leader's.
    pub fn member_promote(&mut self, id: u64) -> Result<MemberChangeResponse, ClientError> {
        let request = MemberPromoteRequest { id };
        typed_call!(self, Request::MemberPromote(request), Response::MemberPromote)
    }

    /// Grants a lease of `ttl_secs`; `id` 0 lets the server choose.
    pub fn lease_grant(
        &mut self,
        ttl_secs: i64,
        id: i64,
    ) -> Result<LeaseGrantResponse, ClientError> {
        let request = LeaseGrantRequest { ttl_secs, id };
        typed_call!(self, Request::LeaseGrant(request), Response::LeaseGrant)
    }

    pub fn lease_revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, ClientError> {
        typed_call!(self, Request::LeaseRevoke(LeaseRevokeRequest { id }), Response::LeaseRevoke)
    }

    /// Renews a lease once; call it again well within the TTL.
    pub fn lease_keep_alive(&mut self, id: i64) -> Result<LeaseKeepAliveResponse, ClientError> {
        let request = LeaseKeepAliveRequest { id };
        typed_call!(self, Request::LeaseKeepAlive(request), Response::LeaseKeepAlive)
    }

    pub fn lease_time_to_live(
        &mut self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, ClientError> {
        let request = LeaseTimeToLiveRequest { id, keys };
        typed_call!(self, Request::LeaseTimeToLive(request), Response::LeaseTimeToLive)
    }

    pub fn lease_leases(&mut self) -> Result<LeaseLeasesResponse, ClientError> {
        typed_call!(self, Request::LeaseLeases, Response::LeaseLeases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: ErrorCode) -> ClientError {
        ClientError::Server { endpoint: "m1".to_string(), error: ErrorBody::new(code) }
    }

    #[test]
    fn a_corrupt_member_s_refusal_is_retried_elsewhere_for_reads_and_writes() {
        let read = Request::Range(RangeRequest { key: b"k".to_vec(), ..RangeRequest::default() });
        let write = Request::Put(PutRequest { key: b"k".to_vec(), ..PutRequest::default() });
        assert!(retry_elsewhere(&answered(ErrorCode::Corrupt), &read));
        assert!(retry_elsewhere(&answered(ErrorCode::Corrupt), &write));
    }

    #[test]
    fn a_refusal_that_any_member_would_give_is_not_retried() {
        let write = Request::Put(PutRequest { key: b"k".to_vec(), ..PutRequest::default() });
        assert!(!retry_elsewhere(&answered(ErrorCode::PermissionDenied), &write));
        assert!(!retry_elsewhere(&answered(ErrorCode::NoSpace), &write));
    }
}
