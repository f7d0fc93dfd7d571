//! Client connections: bytes in, decoded requests out; answers in, bytes
//! out; and the watches each connection holds.
//!
//! Each connection follows `proto`'s recipe: the first bytes decide between
//! the handshake, an HTTP `GET /health` and garbage; after the handshake the
//! read buffer is cut into frames, each decoded and validated into a request.
//! A request that fails either step is answered here with an error for its
//! id only; a frame that breaks the framing closes the connection after its
//! error. Valid requests go out to the caller (`Intake`), which answers
//! them through `answer` in whatever order they complete.
//!
//! `Clients` never sees Raft, proposals or the state machine: watches read
//! the store they are handed, and the health an HTTP probe gets is the
//! caller's word.

use std::sync::Arc;

use mio::net::TcpListener;
use mio::{Interest, Registry, Token};

use super::conn::{
    Conn, Phase, READ_CHUNK_BYTES, ReadOutcome, WATCH_FEED_LIMIT_BYTES, WATCHES_PER_CONN_MAX,
};
use super::proposals::{Reply, Waiter};
use super::watch::{self, PassOutcome, Watcher};
use crate::auth::Claims;
use crate::mvcc::{Revision, Store};
use crate::proto::http::{self, Health};
use crate::proto::{
    self, CancelReason, ErrorBody, ErrorCode, FrameDecoder, Opening, Request, Response,
    ResponseHeader, ServerParams, encode_error, encode_response,
};
use crate::tls;

/// Client listen addresses one node may have.
pub const CLIENT_LISTENERS_MAX: usize = 8;
/// Client connections at once; more are closed as they are accepted.
pub const CLIENT_CONNS_MAX: usize = 4096;

/// Valid requests read in one pass, for the caller to handle.
pub type Intake = Vec<(Waiter, Request)>;

/// Where the tokens of client sockets start: listener `i` is `listener_base
/// + i`, connection slot `i` is `conn_base + i`.
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    pub listener_base: usize,
    pub conn_base: usize,
}

pub struct Clients {
    tokens: Tokens,
    /// Invariant: at most `CLIENT_LISTENERS_MAX`.
    listeners: Vec<TcpListener>,
    /// Invariant: at most `CLIENT_CONNS_MAX` slots.
    conns: Vec<Option<Conn>>,
    next_serial: u64,
    server_params: ServerParams,
    limits: proto::Limits,
    /// The read buffer bound of a connection: one largest frame plus a read.
    read_limit_bytes: usize,
    /// Where every connection's socket reads land before their bytes are
    /// copied to its read buffer; zeroed once. Invariant: `READ_CHUNK_BYTES`.
    scratch: Vec<u8>,
    /// TLS for connections accepted from now on; `None` serves plain TCP.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Clients {
    pub fn new(
        tokens: Tokens,
        listeners: Vec<TcpListener>,
        server_params: ServerParams,
        limits: proto::Limits,
    ) -> Clients {
        let read_limit_bytes =
            server_params.max_frame_bytes as usize + proto::FRAME_HEADER_BYTES + (64 << 10);
        Clients {
            tokens,
            listeners,
            conns: Vec::new(),
            next_serial: 1,
            server_params,
            limits,
            read_limit_bytes,
            scratch: vec![0; READ_CHUNK_BYTES],
            tls: None,
        }
    }

    /// Serves TLS with `config` to the connections accepted from now on;
    /// open connections keep the configuration they started with.
    pub fn set_tls(&mut self, config: Arc<rustls::ServerConfig>) {
        self.tls = Some(config);
    }

    /// The listener a token belongs to, if any.
    pub fn listener_of(&self, token: Token) -> Option<usize> {
        let at = token.0.checked_sub(self.tokens.listener_base)?;
        (at < self.listeners.len()).then_some(at)
    }

    /// The connection slot a token belongs to, if any.
    pub fn slot_of(&self, token: Token) -> Option<usize> {
        token.0.checked_sub(self.tokens.conn_base)
    }

    /// Accepts every waiting connection of `listener` and reads what each
    /// sent already.
    pub fn accept(
        &mut self,
        listener: usize,
        registry: &Registry,
        health: Health,
        out: &mut Intake,
    ) {
        loop {
            let (stream, _) = match self.listeners[listener].accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accepting a client connection: {e}");
                    return;
                }
            };
            let Some(slot) = self.free_slot() else {
                log::warn!("refusing a client: {CLIENT_CONNS_MAX} connections are open");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let mut conn =
                Conn::new(tls::Stream::accepted(stream, self.tls.clone()), self.next_serial);
            self.next_serial += 1;
            let token = Token(self.tokens.conn_base + slot);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut conn.stream, token, interest) {
                log::warn!("registering a client connection: {e}");
                continue;
            }
            self.conns[slot] = Some(conn);
            self.service(slot, registry, health, out);
        }
    }

    fn free_slot(&mut self) -> Option<usize> {
        if let Some(slot) = self.conns.iter().position(Option::is_none) {
            return Some(slot);
        }
        if self.conns.len() == CLIENT_CONNS_MAX {
            return None;
        }
        self.conns.push(None);
        Some(self.conns.len() - 1)
    }

    /// Reads and decodes what the connection sent, within its bounds.
    pub fn service(&mut self, slot: usize, registry: &Registry, health: Health, out: &mut Intake) {
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
            let outcome = conn.fill(limit, &mut self.scratch);
            let progressed = self.process_input(slot, health, out);
            match outcome {
                ReadOutcome::Closed => return self.close(slot, registry),
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
    pub fn resume_paused(&mut self, registry: &Registry, health: Health, out: &mut Intake) {
        for slot in 0..self.conns.len() {
            if self.conns[slot].as_ref().is_some_and(resumable) {
                if let Some(conn) = self.conns[slot].as_mut() {
                    conn.paused = false;
                }
                self.service(slot, registry, health, out);
            }
        }
    }

    /// Whether a paused connection could read again.
    pub fn any_resumable(&self) -> bool {
        self.conns.iter().flatten().any(resumable)
    }

    /// Handles the buffered input; true when any of it was consumed.
    fn process_input(&mut self, slot: usize, health: Health, out: &mut Intake) -> bool {
        let params = self.server_params;
        let Some(conn) = self.conns[slot].as_mut() else { return false };
        match conn.phase {
            Phase::Opening => match super::conn::open(&conn.stream, &conn.read_buf, &params) {
                Opening::NeedMore => false,
                Opening::Hello { reply, session } => {
                    conn.write_buf.extend_from_slice(&reply);
                    conn.read_buf.drain(..proto::HELLO_BYTES);
                    conn.phase = session.map_or(Phase::Closing, Phase::Open);
                    self.process_frames(slot, out);
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
            Phase::Open(_) => self.process_frames(slot, out),
            Phase::Closing => false,
        }
    }

    /// Decodes the complete frames in the read buffer, as many as the
    /// connection's in-flight bound allows; answers the invalid ones.
    fn process_frames(&mut self, slot: usize, out: &mut Intake) -> bool {
        let limits = self.limits;
        let Some(conn) = self.conns[slot].as_mut() else { return false };
        let Phase::Open(session) = conn.phase else { return false };
        let budget = super::conn::IN_FLIGHT_PER_CONN_MAX - conn.in_flight;
        let mut decoded = Vec::new();
        let mut broken = None;
        let mut decoder = FrameDecoder::new(&conn.read_buf, session.server_max_frame_bytes);
        while decoded.len() < budget {
            match decoder.next() {
                None => break,
                Some(Ok(frame)) => {
                    let request = proto::decode_request(&frame).map_err(|e| e.code());
                    let valid = request.and_then(|r| proto::validate(r, &limits));
                    decoded.push((frame.header.id, valid));
                }
                Some(Err(error)) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        let consumed = decoder.consumed_bytes();
        conn.read_buf.drain(..consumed);
        conn.in_flight += decoded.len();
        let serial = conn.serial;
        if let Some(error) = broken {
            let body = ErrorBody::new(error.code());
            encode_error(&mut conn.write_buf, error.id(), &body, session.client_max_frame_bytes);
            conn.phase = Phase::Closing;
            conn.read_buf.clear();
        }
        let progressed = consumed > 0 || broken.is_some();
        for (request_id, request) in decoded {
            let waiter = Waiter { slot, serial, request_id };
            match request {
                Ok(valid) => out.push((waiter, valid.into_request())),
                Err(code) => self.answer(waiter, Err(ErrorBody::new(code))),
            }
        }
        progressed
    }

    /// Sends the answer to its connection if that connection still exists.
    pub fn answer(&mut self, waiter: Waiter, result: Result<Response, ErrorBody>) {
        let Some(conn) = self.conn_of(waiter) else { return };
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

    pub fn answer_all(&mut self, replies: Vec<Reply>) {
        for (waiter, result) in replies {
            self.answer(waiter, result);
        }
    }

    fn conn_of(&mut self, waiter: Waiter) -> Option<&mut Conn> {
        let conn = self.conns.get_mut(waiter.slot).and_then(Option::as_mut)?;
        (conn.serial == waiter.serial).then_some(conn)
    }

    /// Opens a watch on the waiter's connection; true when it was created
    /// (the loop should feed it soon).
    pub fn create_watch(
        &mut self,
        waiter: Waiter,
        r: proto::WatchCreateRequest,
        store: &Store,
        header: ResponseHeader,
    ) -> bool {
        let next_main = if r.start_revision > 0 {
            r.start_revision as u64
        } else {
            store.current_revision() + 1
        };
        let Some(conn) = self.conn_of(waiter) else { return false };
        let id = match new_watch_id(conn, r.watch_id) {
            Ok(id) => id,
            Err(code) => {
                self.answer(waiter, Err(ErrorBody::new(code)));
                return false;
            }
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
        let response = proto::WatchCreateResponse { header, watch_id: id };
        self.answer(waiter, Ok(Response::WatchCreate(response)));
        true
    }

    pub fn cancel_watch(&mut self, waiter: Waiter, watch_id: u64, header: ResponseHeader) {
        let Some(conn) = self.conn_of(waiter) else { return };
        let result = match conn.watchers.remove(&watch_id) {
            Some(_) => Ok(Response::WatchCancel(proto::WatchCancelResponse { header, watch_id })),
            None => Err(ErrorBody::new(ErrorCode::WatchNotFound)),
        };
        self.answer(waiter, result);
    }

    /// Answers with the revision up to which every watch of the connection
    /// has been sent its events.
    pub fn watch_progress(&mut self, waiter: Waiter, store: &Store, mut header: ResponseHeader) {
        self.feed_conn(waiter.slot, store, header);
        if let Some(conn) = self.conn_of(waiter) {
            let sent = conn.watchers.values().map(|w| w.next.main.saturating_sub(1)).min();
            if let Some(sent) = sent {
                header.revision = header.revision.min(i64::try_from(sent).unwrap_or(i64::MAX));
            }
        }
        self.answer(waiter, Ok(Response::WatchProgress(header)));
    }

    /// Feeds every watch that has changes to send; true when some are still
    /// behind and the connection can take more.
    pub fn feed_watches(&mut self, store: &Store, header: ResponseHeader) -> bool {
        let mut behind = false;
        for slot in 0..self.conns.len() {
            behind |= self.feed_conn(slot, store, header);
        }
        behind
    }

    fn feed_conn(&mut self, slot: usize, store: &Store, header: ResponseHeader) -> bool {
        let current = store.current_revision();
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
            match watch::pass(store, *id, watcher, header, max, &mut conn.write_buf) {
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

    /// The token the waiter's connection is bound to.
    pub fn claims(&self, waiter: Waiter) -> Option<&Claims> {
        let conn = self.conns.get(waiter.slot).and_then(Option::as_ref)?;
        (conn.serial == waiter.serial).then_some(conn.claims.as_ref()).flatten()
    }

    /// Binds the waiter's connection to a verified token.
    pub fn bind(&mut self, waiter: Waiter, claims: Claims) {
        if let Some(conn) = self.conn_of(waiter) {
            conn.claims = Some(claims);
        }
    }

    /// Ends with `PermissionRevoked` every watch for which `keep` (given
    /// the connection's token, the watch's key and range end) says no.
    pub fn cancel_watches_unless(
        &mut self,
        header: ResponseHeader,
        keep: impl Fn(Option<&Claims>, &[u8], &[u8]) -> bool,
    ) {
        for conn in self.conns.iter_mut().flatten() {
            let Phase::Open(session) = conn.phase else { continue };
            let claims = conn.claims.as_ref();
            let gone: Vec<u64> = conn
                .watchers
                .iter()
                .filter(|(_, w)| !keep(claims, &w.key, &w.range_end))
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                conn.watchers.remove(&id);
                let max = session.client_max_frame_bytes;
                let reason = CancelReason::PermissionRevoked;
                watch::cancel(id, header, reason, 0, max, &mut conn.write_buf);
            }
        }
    }

    /// Sends a progress message to every caught-up watch that asked for them.
    pub fn notify_progress(&mut self, store: &Store, header: ResponseHeader) {
        let current = store.current_revision();
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

    /// Ends every watch with `reason` (the server is stopping).
    pub fn cancel_all_watches(&mut self, header: ResponseHeader, reason: CancelReason) {
        for conn in self.conns.iter_mut().flatten() {
            let Phase::Open(session) = conn.phase else { continue };
            for id in std::mem::take(&mut conn.watchers).into_keys() {
                let max = session.client_max_frame_bytes;
                watch::cancel(id, header, reason, 0, max, &mut conn.write_buf);
            }
        }
    }

    pub fn flush(&mut self, slot: usize, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        if conn.has_output() && conn.flush().is_err() {
            return self.close(slot, registry);
        }
        if conn.done_closing() {
            self.close(slot, registry);
        }
    }

    pub fn flush_all(&mut self, registry: &Registry) {
        for slot in 0..self.conns.len() {
            self.flush(slot, registry);
        }
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns[slot].take() {
            let _ = registry.deregister(&mut conn.stream);
        }
    }
}

fn resumable(conn: &Conn) -> bool {
    conn.paused && conn.accepts_requests() && conn.phase != Phase::Closing
}

/// The id of a new watch: the one the client chose, or the next free one.
fn new_watch_id(conn: &mut Conn, asked: u64) -> Result<u64, ErrorCode> {
    if conn.watchers.len() >= WATCHES_PER_CONN_MAX {
        return Err(ErrorCode::TooManyWatches);
    }
    if asked != 0 {
        if conn.watchers.contains_key(&asked) {
            return Err(ErrorCode::WatchIdExists);
        }
        return Ok(asked);
    }
    while conn.watchers.contains_key(&conn.next_watch_id) {
        conn.next_watch_id += 1;
    }
    Ok(conn.next_watch_id)
}
