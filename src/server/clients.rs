//! Client connections in the loop: accept, read, decode, dispatch requests,
//! answer, write, and feed watches.
//!
//! Each connection follows `proto`'s recipe: the first bytes decide between
//! the handshake, an HTTP `GET /health` and garbage; after the handshake the
//! read buffer is cut into frames, each decoded and validated into a request.
//! A request that fails either step gets an error for its id only; a frame
//! that breaks the framing closes the connection after its error. Answers go
//! into the connection's write buffer in whatever order they complete.

use std::time::Instant;

use mio::{Interest, Token};

use super::command::{self, op_of};
use super::conn::{Conn, MAX_WATCHES_PER_CONN, Phase, ReadOutcome, WATCH_FEED_LIMIT_BYTES};
use super::node::{CONN_TOKEN_BASE, MAX_CLIENT_CONNS, Node, ReadWait, Waiter, data_size_bytes};
use super::watch::{self, PassOutcome, Watcher};
use crate::mvcc::Revision;
use crate::proto::http::{self, Health, UnhealthyReason};
use crate::proto::{
    self, CancelReason, ErrorBody, ErrorCode, FrameDecoder, Opening, Request, Response, Session,
    ValidRequest, encode_error, encode_response,
};

type Decoded = (u64, Result<ValidRequest, ErrorCode>);

impl Node {
    pub(super) fn accept(&mut self, listener: usize) {
        loop {
            let (stream, _) = match self.listeners[listener].accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accepting a client connection: {e}");
                    return;
                }
            };
            let slot = match self.conns.iter().position(Option::is_none) {
                Some(slot) => slot,
                None if self.conns.len() < MAX_CLIENT_CONNS => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
                None => {
                    log::warn!("refusing a client: {MAX_CLIENT_CONNS} connections are open");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let mut conn = Conn::new(stream, self.next_serial);
            self.next_serial += 1;
            let token = Token(CONN_TOKEN_BASE + slot);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut conn.stream, token, interest) {
                log::warn!("registering a client connection: {e}");
                continue;
            }
            self.conns[slot] = Some(conn);
            self.service_conn(slot);
        }
    }

    /// Reads and handles what the connection sent, within its bounds.
    pub(super) fn service_conn(&mut self, slot: usize) {
        loop {
            let limit = self.read_limit_bytes;
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
            if conn.phase == Phase::Closing {
                return;
            }
            if !conn.accepts_requests() {
                conn.paused = true;
                return;
            }
            let outcome = conn.fill(limit);
            let progressed = self.process_input(slot);
            match outcome {
                ReadOutcome::Closed => return self.close_conn(slot),
                ReadOutcome::Drained => return,
                ReadOutcome::Full if !progressed => {
                    if let Some(conn) = self.conns[slot].as_mut() {
                        conn.paused = true;
                    }
                    return;
                }
                ReadOutcome::Full => {}
            }
        }
    }

    /// Connections that stopped reading on a bound that has cleared.
    pub(super) fn resume_paused(&mut self) {
        for slot in 0..self.conns.len() {
            let resumable = self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.paused && c.accepts_requests() && c.phase != Phase::Closing);
            if resumable {
                if let Some(conn) = self.conns[slot].as_mut() {
                    conn.paused = false;
                }
                self.service_conn(slot);
            }
        }
    }

    /// Handles the buffered input; true when any of it was consumed.
    fn process_input(&mut self, slot: usize) -> bool {
        let health = self.health();
        let params = self.server_params;
        let Some(conn) = self.conns[slot].as_mut() else { return false };
        match conn.phase {
            Phase::Opening => match proto::open(&conn.read_buf, &params) {
                Opening::NeedMore => false,
                Opening::Hello { reply, session } => {
                    conn.write_buf.extend_from_slice(&reply);
                    conn.read_buf.drain(..proto::HELLO_BYTES);
                    conn.phase = session.map_or(Phase::Closing, Phase::Open);
                    self.process_frames(slot);
                    true
                }
                Opening::Http(head) => {
                    http::respond(&head, health, &mut conn.write_buf);
                    conn.phase = Phase::Closing;
                    true
                }
                Opening::HttpError(error) => {
                    http::write_http_error(error, &mut conn.write_buf);
                    conn.phase = Phase::Closing;
                    true
                }
                Opening::Garbage => {
                    log::debug!("closing a client connection that sent garbage");
                    conn.phase = Phase::Closing;
                    true
                }
            },
            Phase::Open(_) => self.process_frames(slot),
            Phase::Closing => false,
        }
    }

    /// Decodes the complete frames in the read buffer, as many as the
    /// connection's in-flight bound allows, and dispatches them.
    fn process_frames(&mut self, slot: usize) -> bool {
        let limits = self.limits;
        let Some(conn) = self.conns[slot].as_mut() else { return false };
        let Phase::Open(session) = conn.phase else { return false };
        let budget = super::conn::MAX_IN_FLIGHT_PER_CONN - conn.in_flight;
        let mut requests: Vec<Decoded> = Vec::new();
        let mut broken = None;
        let mut decoder = FrameDecoder::new(&conn.read_buf, session.server_max_frame_bytes);
        while requests.len() < budget {
            match decoder.next() {
                None => break,
                Some(Ok(frame)) => {
                    let decoded = proto::decode_request(&frame).map_err(|e| e.code());
                    let valid = decoded.and_then(|r| proto::validate(r, &limits));
                    requests.push((frame.header.id, valid));
                }
                Some(Err(error)) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        let consumed = decoder.consumed_bytes();
        conn.read_buf.drain(..consumed);
        conn.in_flight += requests.len();
        let serial = conn.serial;
        if let Some(error) = broken {
            let body = ErrorBody::new(error.code());
            encode_error(&mut conn.write_buf, error.id(), &body, session.client_max_frame_bytes);
            conn.phase = Phase::Closing;
            conn.read_buf.clear();
        }
        let progressed = consumed > 0 || broken.is_some();
        for (request_id, request) in requests {
            let waiter = Waiter { slot, serial, request_id };
            match request {
                Ok(valid) => self.handle_request(waiter, session, valid.into_request()),
                Err(code) => self.answer(waiter, Err(ErrorBody::new(code))),
            }
        }
        progressed
    }

    fn handle_request(&mut self, waiter: Waiter, session: Session, request: Request) {
        if let Some(op) = op_of(&request) {
            self.unproposed.push((waiter, op));
            return;
        }
        match request {
            Request::Range(r) if r.serializable && self.caught_up_since_start => {
                let result = self.range_now(&r);
                self.answer(waiter, result);
            }
            Request::Range(r) => self.unread.push(ReadWait { waiter, request: r }),
            Request::WatchCreate(r) => self.create_watch(waiter, r),
            Request::WatchCancel(r) => self.cancel_watch(waiter, r.watch_id),
            Request::WatchProgress => self.watch_progress(waiter, session),
            Request::MemberAdd(_)
            | Request::MemberRemove(_)
            | Request::MemberUpdate(_)
            | Request::MemberPromote(_) => self.member_request(waiter, request),
            Request::MemberList(_) => {
                let members = self.members();
                let header = self.header();
                self.answer(
                    waiter,
                    Ok(Response::MemberList(proto::MemberListResponse { header, members })),
                );
            }
            Request::Status => {
                let status = self.status();
                self.answer(waiter, Ok(Response::Status(status)));
            }
            lease @ (Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
            | Request::LeaseKeepAlive(_)
            | Request::LeaseTimeToLive(_)
            | Request::LeaseLeases) => self.lease_request(waiter, lease),
            Request::HashKv(r) => {
                // Local, like a serializable read: comparing members is the point.
                let result = match self.store.hash_kv(r.revision.max(0) as u64) {
                    Ok(h) => Ok(Response::HashKv(proto::HashKvResponse {
                        header: self.header(),
                        hash: h.hash,
                        compact_revision: i64::try_from(h.compact_revision).unwrap_or(i64::MAX),
                        hash_revision: i64::try_from(h.hash_revision).unwrap_or(i64::MAX),
                    })),
                    Err(e) => Err(command::store_error(e)),
                };
                self.answer(waiter, result);
            }
            _ => self.answer(waiter, Err(ErrorBody::new(ErrorCode::Unsupported))),
        }
    }

    /// A range served from this member's state as it is now.
    pub(super) fn range_now(&self, r: &proto::RangeRequest) -> Result<Response, ErrorBody> {
        let header = self.header();
        match self.store.range(&command::range_request(r)) {
            Ok(found) => Ok(Response::Range(command::range_response(found, header))),
            Err(e) => Err(command::store_error(e)),
        }
    }

    /// Sends the answer to its connection if that connection still exists.
    pub(super) fn answer(&mut self, waiter: Waiter, result: Result<Response, ErrorBody>) {
        let Some(conn) = self.conns.get_mut(waiter.slot).and_then(Option::as_mut) else { return };
        if conn.serial != waiter.serial {
            return;
        }
        conn.in_flight -= 1;
        let Phase::Open(session) = conn.phase else { return };
        let max = session.client_max_frame_bytes;
        let out = &mut conn.write_buf;
        match result {
            Ok(response) => {
                if encode_response(out, waiter.request_id, &response, max).is_err() {
                    let body = ErrorBody::new(ErrorCode::ResponseTooLarge);
                    encode_error(out, waiter.request_id, &body, max);
                }
            }
            Err(body) => {
                encode_error(out, waiter.request_id, &body, max);
            }
        }
    }

    pub(super) fn health(&self) -> Health {
        if self.stopping {
            Health::Unhealthy(UnhealthyReason::Stopping)
        } else if self.leader_id == 0 {
            Health::Unhealthy(UnhealthyReason::NoLeader)
        } else {
            Health::Healthy
        }
    }

    fn status(&self) -> proto::StatusResponse {
        let status = self.raft.status();
        proto::StatusResponse {
            header: self.header(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_size_bytes: data_size_bytes(&self.config.data_dir),
            leader_id: status.leader_id,
            raft_term: status.term,
            raft_commit_index: status.commit,
            raft_applied_index: self.applied_index,
            compact_revision: i64::try_from(self.store.compact_revision()).unwrap_or(i64::MAX),
            is_learner: self.raft.conf_state().learners.contains(&self.config.member_id),
            errors: Vec::new(),
        }
    }

    /// The member table; before it is known (a joining member), the
    /// initial members, with client URLs only for this member.
    fn members(&self) -> Vec<proto::Member> {
        if !self.sections.members.is_empty() {
            return self.sections.members.iter().map(super::members::member_of).collect();
        }
        let mut members: Vec<proto::Member> = Vec::new();
        for m in &self.config.initial_cluster {
            let peer_urls = m.peer_addrs.iter().map(|a| format!("http://{a}")).collect();
            let client_urls = if m.id == self.config.member_id {
                self.config.advertise_client_addrs.iter().map(|a| format!("http://{a}")).collect()
            } else {
                Vec::new()
            };
            members.push(proto::Member {
                id: m.id,
                name: m.name.clone(),
                peer_urls,
                client_urls,
                is_learner: false,
            });
        }
        members
    }

    fn create_watch(&mut self, waiter: Waiter, r: proto::WatchCreateRequest) {
        let next_main = if r.start_revision > 0 {
            r.start_revision as u64
        } else {
            self.store.current_revision() + 1
        };
        let header = self.header();
        let Some(conn) = self.conns.get_mut(waiter.slot).and_then(Option::as_mut) else { return };
        if conn.watchers.len() >= MAX_WATCHES_PER_CONN {
            return self.answer(waiter, Err(ErrorBody::new(ErrorCode::TooManyWatches)));
        }
        let id = if r.watch_id != 0 {
            if conn.watchers.contains_key(&r.watch_id) {
                return self.answer(waiter, Err(ErrorBody::new(ErrorCode::WatchIdExists)));
            }
            r.watch_id
        } else {
            while conn.watchers.contains_key(&conn.next_watch_id) {
                conn.next_watch_id += 1;
            }
            conn.next_watch_id
        };
        let watcher = Watcher {
            key: r.key,
            range_end: r.range_end,
            next: Revision { main: next_main, sub: 0 },
            prev_kv: r.prev_kv,
            no_put: r.no_put,
            no_delete: r.no_delete,
            progress_notify: r.progress_notify,
        };
        conn.watchers.insert(id, watcher);
        self.answer(
            waiter,
            Ok(Response::WatchCreate(proto::WatchCreateResponse { header, watch_id: id })),
        );
        self.busy = true;
    }

    fn cancel_watch(&mut self, waiter: Waiter, watch_id: u64) {
        let header = self.header();
        let Some(conn) = self.conns.get_mut(waiter.slot).and_then(Option::as_mut) else { return };
        let result = match conn.watchers.remove(&watch_id) {
            Some(_) => Ok(Response::WatchCancel(proto::WatchCancelResponse { header, watch_id })),
            None => Err(ErrorBody::new(ErrorCode::WatchNotFound)),
        };
        self.answer(waiter, result);
    }

    /// Answers with the revision up to which every watch of the connection
    /// has been sent its events.
    fn watch_progress(&mut self, waiter: Waiter, _session: Session) {
        self.feed_conn(waiter.slot);
        let mut header = self.header();
        if let Some(conn) = self.conns.get(waiter.slot).and_then(Option::as_ref) {
            let sent = conn.watchers.values().map(|w| w.next.main.saturating_sub(1)).min();
            if let Some(sent) = sent {
                header.revision = header.revision.min(i64::try_from(sent).unwrap_or(i64::MAX));
            }
        }
        self.answer(waiter, Ok(Response::WatchProgress(header)));
    }

    /// Feeds every watch that has changes to send; true when some are still
    /// behind and the connection can take more.
    pub(super) fn feed_watches(&mut self) -> bool {
        let mut behind = false;
        for slot in 0..self.conns.len() {
            behind |= self.feed_conn(slot);
        }
        behind
    }

    fn feed_conn(&mut self, slot: usize) -> bool {
        let header = self.header();
        let current = self.store.current_revision();
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return false };
        let Phase::Open(session) = conn.phase else { return false };
        let mut behind = false;
        let mut cancelled = Vec::new();
        for (id, watcher) in conn.watchers.iter_mut() {
            if watcher.next.main > current {
                continue;
            }
            if conn.write_buf.len() - conn.written_bytes > WATCH_FEED_LIMIT_BYTES {
                // The writable event of the drained socket wakes the loop.
                break;
            }
            let max = session.client_max_frame_bytes;
            match watch::pass(&self.store, *id, watcher, header, max, &mut conn.write_buf) {
                PassOutcome::CaughtUp => {}
                PassOutcome::Behind => behind = true,
                PassOutcome::Cancelled => cancelled.push(*id),
            }
        }
        for id in cancelled {
            conn.watchers.remove(&id);
        }
        behind
    }

    /// Sends a progress message to every caught-up watch that asked for them.
    pub(super) fn notify_progress(&mut self) {
        let header = self.header();
        let current = self.store.current_revision();
        for conn in self.conns.iter_mut().flatten() {
            let Phase::Open(session) = conn.phase else { continue };
            for (id, watcher) in &conn.watchers {
                if watcher.progress_notify && watcher.next.main > current {
                    let max = session.client_max_frame_bytes;
                    watch::progress(*id, header, max, &mut conn.write_buf);
                }
            }
        }
    }

    pub(super) fn flush_conn(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        if conn.pending_write_bytes() > 0 && conn.flush().is_err() {
            return self.close_conn(slot);
        }
        if conn.done_closing() {
            self.close_conn(slot);
        }
    }

    pub(super) fn flush_conns(&mut self) {
        for slot in 0..self.conns.len() {
            self.flush_conn(slot);
        }
    }

    pub(super) fn close_conn(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns[slot].take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// Fails every request waiting anywhere with `code`, and ends every watch.
    pub(super) fn fail_everything(&mut self, code: ErrorCode) {
        self.fail_pending(code);
        for (waiter, _) in std::mem::take(&mut self.unproposed) {
            self.answer(waiter, Err(ErrorBody::new(code)));
        }
        for read in std::mem::take(&mut self.unread) {
            self.answer(read.waiter, Err(ErrorBody::new(code)));
        }
        let header = self.header();
        for conn in self.conns.iter_mut().flatten() {
            let Phase::Open(session) = conn.phase else { continue };
            for id in std::mem::take(&mut conn.watchers).into_keys() {
                let reason = CancelReason::ServerStopping;
                let max = session.client_max_frame_bytes;
                watch::cancel(id, header, reason, 0, max, &mut conn.write_buf);
            }
        }
    }

    /// Fails writes and reads already handed to Raft.
    pub(super) fn fail_pending(&mut self, code: ErrorCode) {
        for (_, pending) in std::mem::take(&mut self.pending_writes) {
            self.answer(pending.waiter, Err(ErrorBody::new(code)));
        }
        let rounds = std::mem::take(&mut self.read_rounds).into_values().map(|r| r.reads);
        let ready = std::mem::take(&mut self.reads_ready).into_iter().map(|(_, reads)| reads);
        for read in rounds.chain(ready).flatten().collect::<Vec<_>>() {
            self.answer(read.waiter, Err(ErrorBody::new(code)));
        }
    }

    /// Fails requests past their deadline with `Timeout`.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.pending_writes.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            let pending = entry.remove();
            self.answer(pending.waiter, Err(ErrorBody::new(ErrorCode::Timeout)));
        }
        while let Some(entry) = self.read_rounds.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            for read in entry.remove().reads {
                self.answer(read.waiter, Err(ErrorBody::new(ErrorCode::Timeout)));
            }
        }
    }
}
