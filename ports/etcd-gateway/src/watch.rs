//! etcd's Watch service: one bidirectional stream carries any number of
//! watches. Each stream gets its own ordered link to a node, and the
//! stream's watches are that link's watches.
//!
//! Why a link per stream: the node promises, per connection, that a watch's
//! "created" answer comes before its events, that no frame of a watch
//! follows its cancel answer, and that a progress answer for revision R
//! comes after every event up to R. An ordered link hands its frames on in
//! the node's order and this session forwards them in that order, so those
//! promises hold for the etcd client too; in particular a progress
//! notification can never overtake an event it should follow.
//!
//! Watch ids: etcd's are per stream, chosen by the client or counted from 0
//! by the server; the node's are its own. The session maps one to the
//! other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::time::Duration;

use ember::proto::{
    CancelReason, ErrorBody, ErrorCode, Request, ResponseHeader, ServerMessage, WatchCancelRequest,
    WatchCreateRequest, WatchMessage,
};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request as Grpc, Response, Status, Streaming};

use crate::caller::Caller;
use crate::convert;
use crate::gateway::{Gateway, refusal};
use crate::link::{Link, LinkError};
use crate::pb::etcdserverpb as pb;
use crate::status;

/// The watch id etcd uses in answers that belong to no one watch: a
/// progress answer for the whole stream, a create that failed.
const NO_WATCH_ID: i64 = -1;

/// etcd's text for a create naming a watch id already in use.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the stream";

/// How often a stream that asked for a leader (`hasleader`) checks that its
/// member still has one, and how many checks in a row may find none before
/// the stream ends with "no leader", as etcd does, so the client can move
/// to a member that has one. Three checks a second apart span three of
/// Ember's default election timeouts.
const LEADER_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const LEADERLESS_CHECKS_MAX: u32 = 3;

/// Answers waiting for a slow client. When full, the session stops taking
/// frames from its link, the link stops reading, and the node holds the
/// watch's events (or cancels it as a slow reader).
const RESPONSE_BUFFER: usize = 64;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// A client's watch requests, from gRPC or from etcd's JSON API.
pub type WatchRequests = Pin<Box<dyn Stream<Item = Result<pb::WatchRequest, Status>> + Send>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for Gateway {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Grpc<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (metadata, _, requests) = request.into_parts();
        self.open_watch(&metadata, Box::pin(requests)).await.map(Response::new)
    }
}

impl Gateway {
    /// Starts a watch session serving `requests`. It lasts until the client
    /// stops reading the answers or the member's connection fails; a client
    /// that stops sending requests keeps its watches, as with etcd.
    pub async fn open_watch(
        &self,
        metadata: &MetadataMap,
        requests: WatchRequests,
    ) -> Result<WatchStream, Status> {
        let require_leader = self.check_leader(metadata).await?;
        let Ok(permit) = self.watch_streams.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "ember: too many watch streams on this gateway",
            ));
        };
        let caller = Caller::of(metadata);
        let opened = self.backend.ordered_link_as(&caller).await;
        let (link, frames) = opened.map_err(status::from_link)?;
        let (answers, receiver) = mpsc::channel(RESPONSE_BUFFER);
        let mut session = Session::new(link, answers);
        session.require_leader = require_leader;
        session.caller = caller;
        tokio::spawn(session.run(requests, frames, permit));
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

/// A pending request on the link, by request id.
enum Pending {
    Create { etcd_id: i64, fragment: bool },
    Cancel { etcd_id: i64 },
    Progress,
    LeaderCheck,
}

/// The client went away or the link failed: the session ends.
struct Ended;

struct Session {
    link: Link,
    answers: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    pending: HashMap<u64, Pending>,
    /// Node watch id to etcd watch id, for every created watch.
    by_node_id: HashMap<u64, i64>,
    /// etcd watch id to node watch id; 0 while the create is in flight.
    by_etcd_id: BTreeMap<i64, u64>,
    /// Where the search for the next server-chosen etcd id starts.
    next_etcd_id: i64,
    /// Watches the client cancelled while their create was in flight;
    /// cancelled as soon as the node names them.
    cancel_when_created: HashSet<i64>,
    /// Watches created with `fragment`: a large answer goes out in parts.
    fragmenting: HashSet<i64>,
    /// The client sent `hasleader`: end the stream when the member has had
    /// no leader for `LEADERLESS_CHECKS_MAX` checks in a row.
    require_leader: bool,
    leaderless_checks: u32,
    /// A check is on its way; one still unanswered at the next tick counts
    /// as a check without a leader (a stopped member answers nothing).
    leader_check_pending: bool,
    /// Who the stream acts as: a refusal for want of a token is etcd's
    /// "user name is empty" when it carries none.
    caller: Caller,
}

impl Session {
    fn new(link: Link, answers: mpsc::Sender<Result<pb::WatchResponse, Status>>) -> Session {
        Session {
            link,
            answers,
            pending: HashMap::new(),
            by_node_id: HashMap::new(),
            by_etcd_id: BTreeMap::new(),
            next_etcd_id: 0,
            cancel_when_created: HashSet::new(),
            fragmenting: HashSet::new(),
            require_leader: false,
            leaderless_checks: 0,
            leader_check_pending: false,
            caller: Caller::Anonymous,
        }
    }

    async fn run(
        mut self,
        mut requests: WatchRequests,
        mut frames: mpsc::Receiver<ServerMessage>,
        _permit: OwnedSemaphorePermit,
    ) {
        let mut leader_checks = tokio::time::interval(LEADER_CHECK_INTERVAL);
        let answers = self.answers.clone();
        let mut requests_open = true;
        loop {
            let step = tokio::select! {
                request = requests.next(), if requests_open => match request {
                    Some(Ok(request)) => self.on_request(request).await,
                    Some(Err(_)) => Err(Ended),
                    None => {
                        requests_open = false;
                        Ok(())
                    }
                },
                frame = frames.recv() => match frame {
                    Some(frame) => self.on_frame(frame).await,
                    None => self.link_lost().await,
                },
                _ = leader_checks.tick(), if self.require_leader => self.check_leader().await,
                () = answers.closed() => Err(Ended),
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn on_request(&mut self, request: pb::WatchRequest) -> Result<(), Ended> {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => {
                self.send(Request::WatchProgress, Pending::Progress).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> Result<(), Ended> {
        let etcd_id = match create.watch_id {
            0 => self.free_etcd_id(),
            asked if self.by_etcd_id.contains_key(&asked) || asked < 0 => {
                return self.refuse_create(DUPLICATE_WATCH_ID).await;
            }
            asked => asked,
        };
        let no_put = create.filters.contains(&(pb::watch_create_request::FilterType::Noput as i32));
        let no_delete =
            create.filters.contains(&(pb::watch_create_request::FilterType::Nodelete as i32));
        let request = Request::WatchCreate(WatchCreateRequest {
            key: create.key,
            range_end: create.range_end,
            start_revision: create.start_revision,
            progress_notify: create.progress_notify,
            no_put,
            no_delete,
            prev_kv: create.prev_kv,
            watch_id: 0,
        });
        self.by_etcd_id.insert(etcd_id, 0);
        let fragment = create.fragment;
        self.send(request, Pending::Create { etcd_id, fragment }).await
    }

    /// The lowest unused id from the counter on, as etcd counts.
    fn free_etcd_id(&mut self) -> i64 {
        while self.by_etcd_id.contains_key(&self.next_etcd_id) {
            self.next_etcd_id += 1;
        }
        let id = self.next_etcd_id;
        self.next_etcd_id += 1;
        id
    }

    async fn cancel(&mut self, etcd_id: i64) -> Result<(), Ended> {
        // etcd ignores a cancel of a watch it does not have.
        let Some(&node_id) = self.by_etcd_id.get(&etcd_id) else { return Ok(()) };
        if node_id == 0 {
            self.cancel_when_created.insert(etcd_id);
            return Ok(());
        }
        let request = Request::WatchCancel(WatchCancelRequest { watch_id: node_id });
        self.send(request, Pending::Cancel { etcd_id }).await
    }

    async fn send(&mut self, request: Request, pending: Pending) -> Result<(), Ended> {
        match self.link.send(&request).await {
            Ok(request_id) => {
                self.pending.insert(request_id, pending);
                Ok(())
            }
            Err(error) => self.fail(status::from_link(error)).await,
        }
    }

    async fn on_frame(&mut self, frame: ServerMessage) -> Result<(), Ended> {
        match frame {
            ServerMessage::Response { request_id, response } => {
                let header = *response.header();
                let answer = match (self.pending.remove(&request_id), response) {
                    (
                        Some(Pending::Create { etcd_id, fragment }),
                        ember::proto::Response::WatchCreate(c),
                    ) => {
                        if fragment {
                            self.fragmenting.insert(etcd_id);
                        }
                        return self.created(etcd_id, c.watch_id, header).await;
                    }
                    (Some(Pending::Cancel { etcd_id }), _) => {
                        self.forget(etcd_id);
                        pb::WatchResponse { watch_id: etcd_id, canceled: true, ..answer(header) }
                    }
                    (Some(Pending::Progress), _) => {
                        pb::WatchResponse { watch_id: NO_WATCH_ID, ..answer(header) }
                    }
                    (Some(Pending::LeaderCheck), ember::proto::Response::Status(status)) => {
                        self.leader_check_pending = false;
                        return self.leader_checked(status.leader_id != 0).await;
                    }
                    _ => return Ok(()),
                };
                self.emit(answer).await
            }
            ServerMessage::Error { request_id, error } => self.on_error(request_id, error).await,
            ServerMessage::Watch { watch_id, message } => self.on_watch(watch_id, message).await,
        }
    }

    async fn created(
        &mut self,
        etcd_id: i64,
        node_id: u64,
        header: ResponseHeader,
    ) -> Result<(), Ended> {
        self.by_etcd_id.insert(etcd_id, node_id);
        self.by_node_id.insert(node_id, etcd_id);
        self.emit(pb::WatchResponse { watch_id: etcd_id, created: true, ..answer(header) }).await?;
        if self.cancel_when_created.remove(&etcd_id) {
            return self.cancel(etcd_id).await;
        }
        Ok(())
    }

    async fn check_leader(&mut self) -> Result<(), Ended> {
        if self.leader_check_pending {
            return self.leader_checked(false).await;
        }
        self.leader_check_pending = true;
        self.send(Request::Status, Pending::LeaderCheck).await
    }

    async fn leader_checked(&mut self, has_leader: bool) -> Result<(), Ended> {
        self.leaderless_checks = if has_leader { 0 } else { self.leaderless_checks + 1 };
        if self.leaderless_checks >= LEADERLESS_CHECKS_MAX {
            let no_leader = ember::proto::ErrorCode::NoLeader.message();
            return self.fail(Status::unavailable(no_leader)).await;
        }
        Ok(())
    }

    async fn on_error(&mut self, request_id: u64, error: ErrorBody) -> Result<(), Ended> {
        match self.pending.remove(&request_id) {
            Some(Pending::Create { etcd_id, .. }) => {
                self.by_etcd_id.remove(&etcd_id);
                self.cancel_when_created.remove(&etcd_id);
                let reason = create_refusal_reason(&self.caller, error);
                self.refuse_create(&reason).await
            }
            Some(Pending::Cancel { etcd_id }) => {
                // The node no longer knows the watch: it is over either way.
                self.forget(etcd_id);
                Ok(())
            }
            Some(Pending::LeaderCheck) => {
                self.leader_check_pending = false;
                Ok(())
            }
            Some(Pending::Progress) | None => self.fail(status::from_body(&error)).await,
        }
    }

    async fn on_watch(&mut self, node_id: u64, message: WatchMessage) -> Result<(), Ended> {
        let Some(&etcd_id) = self.by_node_id.get(&node_id) else { return Ok(()) };
        let answer = match message {
            WatchMessage::Events { header, events } => {
                let whole = pb::WatchResponse {
                    watch_id: etcd_id,
                    events: events.into_iter().map(convert::event).collect(),
                    ..answer(header)
                };
                if !self.fragmenting.contains(&etcd_id) {
                    return self.emit(whole).await;
                }
                for part in fragments(whole) {
                    self.emit(part).await?;
                }
                return Ok(());
            }
            WatchMessage::Progress { header } => {
                pb::WatchResponse { watch_id: etcd_id, ..answer(header) }
            }
            WatchMessage::Cancelled { mut header, reason, compact_revision } => {
                self.forget(etcd_id);
                // etcd's answer to a watch that starts below the compacted
                // revision names no revision of its own: only the
                // compact revision the client should resume after.
                if reason == CancelReason::Compacted {
                    header.revision = 0;
                }
                pb::WatchResponse {
                    watch_id: etcd_id,
                    canceled: true,
                    compact_revision,
                    cancel_reason: cancel_reason(reason).to_string(),
                    ..answer(header)
                }
            }
        };
        self.emit(answer).await
    }

    fn forget(&mut self, etcd_id: i64) {
        self.fragmenting.remove(&etcd_id);
        if let Some(node_id) = self.by_etcd_id.remove(&etcd_id) {
            self.by_node_id.remove(&node_id);
        }
    }

    /// etcd answers a create it cannot serve with a created-and-cancelled
    /// response carrying the reason.
    async fn refuse_create(&mut self, reason: &str) -> Result<(), Ended> {
        let hello = self.link.hello;
        let header = ResponseHeader {
            cluster_id: hello.cluster_id,
            member_id: hello.member_id,
            ..ResponseHeader::default()
        };
        let refusal = pb::WatchResponse {
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..answer(header)
        };
        self.emit(refusal).await
    }

    async fn link_lost(&mut self) -> Result<(), Ended> {
        let cause = format!("ember: lost the connection to member {}", self.link.endpoint);
        self.fail(Status::unavailable(cause)).await
    }

    /// Ends the stream with `status`; the client resumes elsewhere.
    async fn fail(&mut self, status: Status) -> Result<(), Ended> {
        let _ = self.answers.send(Err(status)).await;
        Err(Ended)
    }

    async fn emit(&mut self, answer: pb::WatchResponse) -> Result<(), Ended> {
        self.answers.send(Ok(answer)).await.map_err(|_| Ended)
    }
}

/// The size past which a watch created with `fragment` gets its answer in
/// parts: etcd's default request limit, which etcd uses for the same cut.
const FRAGMENT_BYTES: usize = 1536 * 1024;

/// `whole` cut between events into answers of at most `FRAGMENT_BYTES`
/// (one event may exceed it alone), every part but the last marked
/// `fragment`, as etcd sends them; `whole` itself when it is small or
/// holds one event.
fn fragments(whole: pb::WatchResponse) -> Vec<pb::WatchResponse> {
    if whole.encoded_len() < FRAGMENT_BYTES || whole.events.len() < 2 {
        return vec![whole];
    }
    let shell = pb::WatchResponse { events: Vec::new(), ..whole.clone() };
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut part_bytes = 0;
    for event in whole.events {
        let event_bytes = event.encoded_len();
        if !part.is_empty() && part_bytes + event_bytes > FRAGMENT_BYTES {
            parts.push(std::mem::take(&mut part));
            part_bytes = 0;
        }
        part_bytes += event_bytes;
        part.push(event);
    }
    parts.push(part);
    let last = parts.len() - 1;
    let into_answer =
        |(at, events)| pb::WatchResponse { events, fragment: at != last, ..shell.clone() };
    parts.into_iter().enumerate().map(into_answer).collect()
}

/// A watch response with only its header set.
fn answer(header: ResponseHeader) -> pb::WatchResponse {
    pb::WatchResponse { header: convert::header(header), ..pb::WatchResponse::default() }
}

/// etcd gives no reason when compaction ends a watch (the compact revision
/// says it all); the other reasons are Ember's own.
/// Why a create was refused, in etcd's words. A caller without the right
/// gets the whole gRPC error text as the reason, as etcd 3.4 words it
/// (`rpc error: code = PermissionDenied desc = etcdserver: permission
/// denied`), and etcdctl prints it as it is; other refusals their message.
fn create_refusal_reason(caller: &Caller, error: ErrorBody) -> String {
    let auth = matches!(
        error.code(),
        Some(ErrorCode::PermissionDenied | ErrorCode::InvalidAuthToken | ErrorCode::UserEmpty)
    );
    let status = refusal(caller, LinkError::Server(error));
    match auth {
        true => format!("rpc error: code = {:?} desc = {}", status.code(), status.message()),
        false => status.message().to_string(),
    }
}

fn cancel_reason(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Compacted => "",
        CancelReason::SlowReader => "ember: the watcher read too slowly and its buffer filled",
        CancelReason::EventsTooLarge => "ember: one revision's events exceed the frame limit",
        CancelReason::ServerStopping => "ember: the member is shutting down",
        CancelReason::MemberRemoved => "ember: the member was removed from the cluster",
        CancelReason::PermissionRevoked => "etcdserver: permission denied",
        CancelReason::Corrupt => "etcdserver: corrupt cluster",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb;

    fn response_of(values_bytes: &[usize]) -> pb::WatchResponse {
        let event = |bytes: &usize| mvccpb::Event {
            kv: Some(mvccpb::KeyValue { value: vec![b'v'; *bytes], ..Default::default() }),
            ..Default::default()
        };
        pb::WatchResponse {
            watch_id: 3,
            events: values_bytes.iter().map(event).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn large_answers_split_between_events_with_every_part_but_the_last_marked() {
        let parts = fragments(response_of(&[1 << 20, 1 << 20, 1 << 20, 10]));
        let flags: Vec<bool> = parts.iter().map(|part| part.fragment).collect();
        assert_eq!(flags, [true, true, false]);
        let sizes: Vec<usize> = parts.iter().map(|part| part.events.len()).collect();
        assert_eq!(sizes, [1, 1, 2]);
        assert!(parts.iter().all(|part| part.watch_id == 3));
    }

    #[test]
    fn small_answers_and_single_events_stay_whole() {
        let small = response_of(&[10, 10]);
        assert_eq!(fragments(small.clone()), [small]);
        let one_big = response_of(&[4 << 20]);
        assert_eq!(fragments(one_big.clone()), [one_big]);
    }
}
