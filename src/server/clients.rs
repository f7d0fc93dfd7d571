//! Client connections: bytes in, decoded requests out; answers in, bytes
//! out; and the watches each connection holds.
//!
//! Each connection follows `proto`'s recipe: the first bytes decide between
//! the handshake, an HTTP request and garbage; after the handshake the
//! read buffer is cut into frames, each decoded and validated into a request.
//! A request that fails either step is answered here with an error for its
//! id only; a frame that breaks the framing closes the connection after its
//! error. Valid requests go out to the caller (`Intake`), which answers
//! them through `answer` in whatever order they complete.
//!
//! `Clients` never sees Raft, proposals or the state machine: watches read
//! the store they are handed, and an HTTP request it cannot answer alone
//! (a probe or a scrape) goes to the caller (`take_http_asks`), which
//! answers it (`answer_http`) in the same event, before anything is
//! flushed.
//!
//! Fairness and memory (`ClientLimits`):
//! - A connection must finish its hello within `hello_timeout`, and a frame
//!   it began within `frame_timeout`; one that stays silent past the
//!   idle timeout with nothing to answer and no watch is closed (without a
//!   frame: the Rust client sees the close before it sends and dials
//!   again).
//! - At the connection cap the longest-idle connection is closed to make
//!   room; when none is idle the newcomer gets the `TooManyConnections`
//!   refusal. Refusals are logged once per `REFUSAL_LOG_INTERVAL` with
//!   their count.
//! - One memory budget covers every connection's buffers and its requests
//!   waiting for answers, in two halves (`Conn::read_charge_bytes`,
//!   `Conn::answer_charge_bytes`). A connection past half its share stops
//!   being read until its answers drain. Once read buffers hold half the
//!   budget a connection reads at most `READ_OVER_BUDGET_BYTES` at a time,
//!   so partial frames cannot take the room of small requests; once
//!   answers hold a quarter of it, watches are not fed, so watchers that do not
//!   read cannot take the room of requests; while the whole budget is
//!   spent new requests are refused (`TooManyRequests`). What stays above
//!   the budget is bounded: one small read per connection, and the answers
//!   to requests read before it was spent.
//! - One turn of the loop reads at most `READ_ITERATION_BYTES_MAX` from all
//!   sockets together; connections left unread are paused and resumed in
//!   turns, so a flood of partial frames costs the loop a few milliseconds
//!   a turn however many connections send at once.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::conn::{
    Conn, Phase, READ_CHUNK_BYTES, ReadOutcome, WATCH_FEED_LIMIT_BYTES, WATCHES_PER_CONN_MAX,
};
use super::proposals::{Reply, Waiter};
use super::watch::{self, PassOutcome, Watcher};
use crate::auth::Claims;
use crate::mvcc::{Revision, Store};
use crate::proto::http::{self, Ask, Route};
use crate::proto::{
    self, CancelReason, ErrorBody, ErrorCode, FrameDecoder, Opening, Refusal, Request, Response,
    ResponseHeader, ServerHello, ServerParams, encode_error, encode_response,
};
use crate::tls;

/// Client listen addresses one node may have.
pub const CLIENT_LISTENERS_MAX: usize = 8;
/// The most a connection reads at a time while the memory budget is spent:
/// enough for small requests (to refuse them) and for the rest of a small
/// partial frame, so the connections together stay within the budget plus
/// this much each.
pub const READ_OVER_BUDGET_BYTES: usize = 4 << 10;
/// Bytes read from all client sockets together in one turn of the loop
/// (the events of one poll and the resumed connections after them): a few
/// milliseconds of reads, and more than two largest requests. Past it,
/// connections wait for the next turn, paused, so neither a burst of new
/// data nor the backlog of many connections let go at once (as when a
/// flood of partial frames closes and frees the budget) holds the loop.
pub const READ_ITERATION_BYTES_MAX: usize = 4 << 20;
/// How often refused connections are logged: one line with their count,
/// so a flood of connections cannot flood the journal.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds of the client port, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub conns_max: usize,
    pub idle_timeout: Duration,
    /// How long a new connection may take to send its hello (or its HTTP
    /// request head).
    pub hello_timeout: Duration,
    /// How long a frame may take to arrive whole once its first byte is
    /// in, while the server itself does not pause the connection.
    pub frame_timeout: Duration,
    /// How long a connection with events waiting may take no byte before
    /// its watches are cancelled as a slow reader.
    pub slow_watcher_timeout: Duration,
    /// The memory budget of all connections together.
    pub memory_max_bytes: usize,
    /// One connection's share of it. Invariant: at most half the budget.
    pub share_bytes: usize,
    /// The largest answer built, whatever the client announced.
    pub response_max_bytes: u32,
}

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
    /// Invariant: at most `bounds.conns_max` slots.
    conns: Vec<Option<Conn>>,
    next_serial: u64,
    server_params: ServerParams,
    limits: proto::Limits,
    bounds: ClientLimits,
    /// Invariant: the sums of `charged_bytes` over the open connections,
    /// reading side and answering side.
    read_charged_bytes: usize,
    answer_charged_bytes: usize,
    refusals: RefusalLog,
    /// The read buffer bound of a connection: one largest frame plus a read.
    read_limit_bytes: usize,
    /// Where every connection's socket reads land before their bytes are
    /// copied to its read buffer; zeroed once. Invariant: `READ_CHUNK_BYTES`.
    scratch: Vec<u8>,
    /// TLS for connections accepted from now on; `None` serves plain TCP.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP requests read and not answered yet. Invariant: empty between
    /// events (the caller takes and answers them after each read pass), so
    /// at most one per connection, and each connection is `Closing` with
    /// nothing to write until its answer comes.
    http_asks: Vec<HttpAsk>,
    /// Connections whose watches were cancelled as slow readers.
    slow_reader_cutoffs_total: u64,
    /// A metrics port: HTTP only, a protocol hello is closed as garbage.
    http_only: bool,
    /// Requests refused with `TooManyRequests` since start.
    requests_refused_total: u64,
    /// What watches may still pull before the next `feed_watches` ends:
    /// one budget per loop iteration, shared by every connection (progress
    /// requests included), so many watches catching up on a long history
    /// cannot hold the loop.
    feed_budget: watch::FeedBudget,
    /// The connection slot `feed_watches` starts at: the one after where
    /// the budget ran out, so every connection gets its turn.
    feed_from_slot: usize,
    /// Bytes read from sockets since the last `flush_all`. Invariant: at
    /// most `READ_ITERATION_BYTES_MAX`.
    read_this_iteration_bytes: usize,
    /// The slot `resume_paused` starts at: the one after the last it
    /// served when the read budget ran out, so paused connections take
    /// turns.
    resume_from_slot: usize,
}

/// Who a connection speaks for. A token, once presented, wins over the
/// certificate, as etcd has it: a client that logged in acts as that user.
#[derive(Debug, Clone, Copy)]
pub enum Identity<'a> {
    Token(&'a Claims),
    /// The user named by the verified client certificate; it may not
    /// exist, and then it is denied everything but stays that user.
    Certificate(&'a str),
    Anonymous,
}

impl<'a> Identity<'a> {
    fn of(conn: &'a Conn) -> Identity<'a> {
        match (&conn.claims, &conn.cert_user) {
            (Some(claims), _) => Identity::Token(claims),
            (None, Some(user)) => Identity::Certificate(user),
            (None, None) => Identity::Anonymous,
        }
    }
}

/// The user the verified client certificate of `stream` names, if any.
/// rustls has checked the chain against the trusted CA before the session
/// could open; a certificate whose subject names no single user leaves the
/// connection anonymous.
fn certificate_user(stream: &tls::Stream) -> Option<String> {
    let leaf = stream.peer_certificates()?.first()?;
    match crate::auth::cert::common_name(leaf) {
        Ok(user) => Some(user),
        Err(reason) => {
            log::debug!("a client certificate names no user: {reason:?}");
            None
        }
    }
}

/// An HTTP request the caller answers: a probe or a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAsk {
    pub slot: usize,
    pub serial: u64,
    pub ask: Ask,
}

/// What the client port holds, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientGauges {
    pub connections: usize,
    pub connections_max: usize,
    pub memory_in_use_bytes: usize,
    pub memory_max_bytes: usize,
    pub watchers: usize,
    /// Watchers that have events waiting they were not sent yet.
    pub watchers_behind: usize,
    pub slow_reader_cutoffs_total: u64,
    /// Connections refused at the cap, and requests refused while the
    /// memory budget was spent (`TooManyRequests`), since start.
    pub connections_refused_total: u64,
    pub requests_refused_total: u64,
}

impl Clients {
    pub fn new(
        tokens: Tokens,
        listeners: Vec<TcpListener>,
        server_params: ServerParams,
        limits: proto::Limits,
        bounds: ClientLimits,
    ) -> Clients {
        let read_limit_bytes =
            server_params.max_frame_bytes as usize + proto::FRAME_HEADER_BYTES + READ_CHUNK_BYTES;
        Clients {
            tokens,
            listeners,
            conns: Vec::new(),
            next_serial: 1,
            server_params,
            limits,
            bounds,
            read_charged_bytes: 0,
            answer_charged_bytes: 0,
            refusals: RefusalLog::default(),
            read_limit_bytes,
            scratch: vec![0; READ_CHUNK_BYTES],
            tls: None,
            http_asks: Vec::new(),
            slow_reader_cutoffs_total: 0,
            http_only: false,
            requests_refused_total: 0,
            feed_budget: watch::FeedBudget::per_iteration(),
            feed_from_slot: 0,
            read_this_iteration_bytes: 0,
            resume_from_slot: 0,
        }
    }

    /// Serves TLS with `config` to the connections accepted from now on;
    /// open connections keep the configuration they started with.
    pub fn set_tls(&mut self, config: Arc<rustls::ServerConfig>) {
        self.tls = Some(config);
    }

    /// Serves HTTP only (`--listen-metrics-urls`): the protocol's hello
    /// is closed like garbage.
    pub fn serve_http_only(&mut self) {
        self.http_only = true;
    }

    /// The listener a token belongs to, if any.
    pub fn listener_of(&self, token: Token) -> Option<usize> {
        let at = token.0.checked_sub(self.tokens.listener_base)?;
        (at < self.listeners.len()).then_some(at)
    }

    /// The connection slot a token belongs to, if any.
    pub fn slot_of(&self, token: Token) -> Option<usize> {
        let slot = token.0.checked_sub(self.tokens.conn_base)?;
        (slot < self.bounds.conns_max).then_some(slot)
    }

    /// Accepts every waiting connection of `listener` and reads what each
    /// sent already.
    pub fn accept(&mut self, listener: usize, registry: &Registry, now: Instant, out: &mut Intake) {
        loop {
            let (stream, _) = match self.listeners[listener].accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accepting a client connection: {e}");
                    return;
                }
            };
            let slot = match self.free_slot() {
                Some(slot) => slot,
                None => match self.evict_idlest(registry) {
                    Some(slot) => slot,
                    None => {
                        self.refuse(stream, now);
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let stream = tls::Stream::accepted(stream, self.tls.clone());
            let mut conn = Conn::new(stream, self.next_serial, now);
            self.next_serial += 1;
            let token = Token(self.tokens.conn_base + slot);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut conn.stream, token, interest) {
                log::warn!("registering a client connection: {e}");
                continue;
            }
            self.conns[slot] = Some(conn);
            self.service(slot, registry, out);
        }
    }

    fn free_slot(&mut self) -> Option<usize> {
        if let Some(slot) = self.conns.iter().position(Option::is_none) {
            return Some(slot);
        }
        if self.conns.len() >= self.bounds.conns_max {
            return None;
        }
        self.conns.push(None);
        Some(self.conns.len() - 1)
    }

    /// Closes the connection idle the longest, if any is idle, and returns
    /// its slot: a flood of silent sockets cannot keep an active client out.
    fn evict_idlest(&mut self, registry: &Registry) -> Option<usize> {
        let idlest = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(slot, conn)| Some((slot, conn.as_ref()?)))
            .filter(|(_, conn)| conn.is_idle() && conn.pending_write_bytes() == 0)
            .min_by_key(|(_, conn)| conn.active_at)
            .map(|(slot, _)| slot)?;
        log::debug!("closing the longest-idle client connection to make room");
        self.close(idlest, registry);
        Some(idlest)
    }

    /// Turns a connection away with the `TooManyConnections` hello. What
    /// the client sent already is read first, so that closing sends a FIN
    /// and not a reset that could discard the refusal before it is read.
    fn refuse(&mut self, mut stream: TcpStream, now: Instant) {
        // On a TLS port the refusal would need a handshake first: the
        // client sees the connection close instead.
        if self.tls.is_none() {
            let mut discard = [0u8; proto::CLIENT_HELLO_BYTES];
            let _ = stream.read(&mut discard);
            let refusal = ServerHello::Refused {
                reason: Refusal::TooManyConnections,
                server_min_version: self.server_params.min_version,
                server_max_version: self.server_params.max_version,
            };
            let _ = stream.write(&refusal.encode(&self.server_params));
        }
        if let Some(count) = self.refusals.note(now) {
            let open = self.bounds.conns_max;
            log::warn!(
                "refused {count} client connections in the last {} s: {open} are open and none is idle",
                REFUSAL_LOG_INTERVAL.as_secs()
            );
        }
    }

    /// Closes the connections that overstayed: a hello not sent in time, a
    /// frame begun and not finished, or silence past the idle timeout with
    /// nothing to answer. Called once per tick.
    pub fn expire(&mut self, now: Instant, registry: &Registry) {
        let bounds = self.bounds;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_ref() else { continue };
            if let Some(why) = overstayed(conn, now, &bounds) {
                log::debug!("closing a client connection: {why}");
                self.close(slot, registry);
            }
        }
        if let Some(count) = self.refusals.flush(now) {
            log::warn!(
                "refused {count} client connections in the last {} s: the connection cap was reached",
                REFUSAL_LOG_INTERVAL.as_secs()
            );
        }
    }

    /// Recounts what the connection holds against the budget.
    fn settle(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        let (read_was, answer_was) = conn.charged_bytes;
        let (read_now, answer_now) = (conn.read_charge_bytes(), conn.answer_charge_bytes());
        self.read_charged_bytes = self.read_charged_bytes - read_was + read_now;
        self.answer_charged_bytes = self.answer_charged_bytes - answer_was + answer_now;
        conn.charged_bytes = (read_now, answer_now);
    }

    /// Whether the connections together hold the whole budget.
    pub fn budget_spent(&self) -> bool {
        self.read_charged_bytes + self.answer_charged_bytes >= self.bounds.memory_max_bytes
    }

    /// Whether an answer of unknown size may be built for the waiter now:
    /// its connection's unsent answers are below half its share. A gone
    /// connection has room (the answer is dropped).
    pub fn has_room(&self, waiter: Waiter) -> bool {
        let Some(conn) = self.conns.get(waiter.slot).and_then(Option::as_ref) else { return true };
        conn.serial != waiter.serial || conn.pending_write_bytes() < self.bounds.share_bytes / 2
    }

    /// The most bytes an answer to the waiter may take: the server's limit,
    /// or the client's if lower.
    pub fn response_max_bytes(&self, waiter: Waiter) -> usize {
        let conn = self.conns.get(waiter.slot).and_then(Option::as_ref);
        let client = match conn.map(|c| c.phase) {
            Some(Phase::Open(session)) => session.client_max_frame_bytes,
            _ => self.bounds.response_max_bytes,
        };
        client.min(self.bounds.response_max_bytes) as usize
    }

    /// Reads and decodes what the connection sent, within its bounds.
    pub fn service(&mut self, slot: usize, registry: &Registry, out: &mut Intake) {
        self.service_within_bounds(slot, registry, out);
        self.finish_service(slot);
    }

    fn service_within_bounds(&mut self, slot: usize, registry: &Registry, out: &mut Intake) {
        loop {
            let limit = self.read_allowance_bytes();
            let share = self.bounds.share_bytes;
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
            if conn.phase == Phase::Closing {
                return;
            }
            if !conn.accepts_requests(share) {
                conn.paused = true;
                return;
            }
            let Some(unread) = READ_ITERATION_BYTES_MAX.checked_sub(self.read_this_iteration_bytes)
            else {
                // The next turn reads on, from `resume_paused`.
                conn.paused = true;
                return;
            };
            let held_bytes = conn.read_buf.len();
            let outcome = conn.fill(limit.min(held_bytes + unread), &mut self.scratch);
            self.read_this_iteration_bytes += conn.read_buf.len() - held_bytes;
            let progressed = self.process_input(slot, out);
            self.settle(slot);
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

    /// The read buffer's bound now: a whole largest frame while less than
    /// half the budget is used, a small read after that. Partial frames
    /// thus hold at most about half the budget, and the other half stays
    /// for small requests and the answers to them.
    fn read_allowance_bytes(&self) -> usize {
        if self.read_charged_bytes < self.bounds.memory_max_bytes / 2 {
            self.read_limit_bytes
        } else {
            READ_OVER_BUDGET_BYTES
        }
    }

    /// After a read pass: the buffer shrinks back once drained, and the
    /// clock of a partial frame starts or stops.
    fn finish_service(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        conn.shrink_read_buf();
        if conn.read_buf.is_empty() {
            conn.partial_since = None;
        } else if conn.partial_since.is_none() {
            conn.partial_since = Some(conn.active_at);
        }
        self.settle(slot);
    }

    /// Connections that stopped reading on a bound that has cleared, in
    /// turns from where the last call stopped, while the read budget of
    /// this turn of the loop lasts.
    pub fn resume_paused(&mut self, registry: &Registry, out: &mut Intake) {
        let slots = self.conns.len();
        let from = self.resume_from_slot.min(slots);
        for slot in (from..slots).chain(0..from) {
            if self.read_this_iteration_bytes >= READ_ITERATION_BYTES_MAX {
                self.resume_from_slot = slot;
                break;
            }
            if self.conns[slot].as_ref().is_some_and(|c| self.resumable(c)) {
                if let Some(conn) = self.conns[slot].as_mut() {
                    conn.paused = false;
                }
                self.service(slot, registry, out);
            }
        }
    }

    /// Whether a paused connection could read again.
    pub fn any_resumable(&self) -> bool {
        self.conns.iter().flatten().any(|c| self.resumable(c))
    }

    /// A paused connection can go on when its own bounds allow a request,
    /// and it either holds a whole frame or may read more than it holds.
    fn resumable(&self, conn: &Conn) -> bool {
        let readable = conn.read_buf.len() < self.read_allowance_bytes() || holds_whole_frame(conn);
        conn.paused
            && conn.accepts_requests(self.bounds.share_bytes)
            && conn.phase != Phase::Closing
            && readable
    }

    /// Handles the buffered input; true when any of it was consumed.
    fn process_input(&mut self, slot: usize, out: &mut Intake) -> bool {
        let params = self.server_params;
        let response_max_bytes = self.bounds.response_max_bytes;
        let http_only = self.http_only;
        let Some(conn) = self.conns[slot].as_mut() else { return false };
        match conn.phase {
            Phase::Opening => match super::conn::open(&conn.stream, &conn.read_buf, &params) {
                Opening::NeedMore => false,
                Opening::Hello { .. } if http_only => {
                    log::debug!("closing a protocol client on a metrics port");
                    conn.phase = Phase::Closing;
                    true
                }
                Opening::Hello { reply, session } => {
                    conn.write_buf.extend_from_slice(&reply);
                    conn.read_buf.drain(..proto::HELLO_BYTES);
                    // The server's own limit caps every answer, whatever
                    // the client is willing to take.
                    let session = session.map(|mut s| {
                        s.client_max_frame_bytes = s.client_max_frame_bytes.min(response_max_bytes);
                        s
                    });
                    conn.phase = session.map_or(Phase::Closing, Phase::Open);
                    conn.cert_user = certificate_user(&conn.stream);
                    conn.frames_start();
                    self.process_frames(slot, out);
                    true
                }
                Opening::Http(head) => {
                    let ask = Ask::of(&head);
                    match ask.route {
                        Route::MethodNotAllowed | Route::NotFound => {
                            http::write_refusal(ask, &mut conn.write_buf)
                        }
                        _ => self.http_asks.push(HttpAsk { slot, serial: conn.serial, ask }),
                    }
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
        let spent = self.budget_spent();
        let Some(conn) = self.conns[slot].as_mut() else { return false };
        let Phase::Open(session) = conn.phase else { return false };
        let room = super::conn::IN_FLIGHT_PER_CONN_MAX - conn.in_flight;
        let mut decoded = Vec::new();
        let mut broken = None;
        let mut decoder = FrameDecoder::new(&conn.read_buf, session.server_max_frame_bytes);
        while decoded.len() < room {
            match decoder.next() {
                None => break,
                Some(Ok(frame)) => {
                    let cost_bytes = request_cost_bytes(frame.body.len());
                    let request = proto::decode_request(&frame).map_err(|e| e.code());
                    let valid = request.and_then(|r| proto::validate(r, &limits));
                    // While the budget is spent new work is refused, not
                    // queued: its answer is a few bytes.
                    let valid = if spent { Err(ErrorCode::TooManyRequests) } else { valid };
                    decoded.push((frame.header.id, cost_bytes, valid));
                }
                Some(Err(error)) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        if spent {
            self.requests_refused_total += decoded.len() as u64;
        }
        let consumed = decoder.consumed_bytes();
        conn.read_buf.drain(..consumed);
        conn.in_flight += decoded.len();
        conn.in_flight_bytes += decoded.iter().map(|(_, cost, _)| *cost as usize).sum::<usize>();
        // Frames left in the buffer at the in-flight bound are read again
        // when answers make room, whether or not the client sends more.
        conn.paused |= decoded.len() == room;
        let serial = conn.serial;
        if let Some(error) = broken {
            let body = ErrorBody::new(error.code());
            encode_error(&mut conn.write_buf, error.id(), &body, session.client_max_frame_bytes);
            conn.phase = Phase::Closing;
            conn.read_buf.clear();
        }
        let progressed = consumed > 0 || broken.is_some();
        for (request_id, cost_bytes, request) in decoded {
            let waiter = Waiter { slot, serial, request_id, cost_bytes };
            match request {
                Ok(valid) => out.push((waiter, valid.into_request())),
                Err(code) => self.answer(waiter, Err(ErrorBody::new(code))),
            }
        }
        progressed
    }

    /// The HTTP requests read since the last call, for the caller to
    /// answer before anything is flushed.
    pub fn take_http_asks(&mut self) -> Vec<HttpAsk> {
        std::mem::take(&mut self.http_asks)
    }

    /// Writes the answer to an HTTP request; the connection closes once it
    /// is sent.
    pub fn answer_http(&mut self, asked: HttpAsk, answer: &[u8]) {
        let Some(conn) = self.conns.get_mut(asked.slot).and_then(Option::as_mut) else { return };
        if conn.serial == asked.serial {
            conn.write_buf.extend_from_slice(answer);
        }
        self.settle(asked.slot);
    }

    /// What the connections hold now, counted when scraped.
    pub fn gauges(&self, current_revision: u64) -> ClientGauges {
        let open = self.conns.iter().flatten();
        let watchers = open.clone().map(|c| c.watchers.len()).sum();
        let watchers_behind = open
            .clone()
            .flat_map(|c| c.watchers.values())
            .filter(|w| w.next.main <= current_revision)
            .count();
        ClientGauges {
            connections: open.count(),
            connections_max: self.bounds.conns_max,
            memory_in_use_bytes: self.read_charged_bytes + self.answer_charged_bytes,
            memory_max_bytes: self.bounds.memory_max_bytes,
            watchers,
            watchers_behind,
            slow_reader_cutoffs_total: self.slow_reader_cutoffs_total,
            connections_refused_total: self.refusals.total,
            requests_refused_total: self.requests_refused_total,
        }
    }

    /// Sends the answer to its connection if that connection still exists.
    pub fn answer(&mut self, waiter: Waiter, result: Result<Response, ErrorBody>) {
        self.answer_unsettled(waiter, result);
        self.settle(waiter.slot);
    }

    fn answer_unsettled(&mut self, waiter: Waiter, result: Result<Response, ErrorBody>) {
        let Some(conn) = self.conn_of(waiter) else { return };
        conn.in_flight -= 1;
        conn.in_flight_bytes -= waiter.cost_bytes as usize;
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
        self.settle(waiter.slot);
        if let Some(conn) = self.conn_of(waiter) {
            let sent = conn.watchers.values().map(|w| w.next.main.saturating_sub(1)).min();
            if let Some(sent) = sent {
                header.revision = header.revision.min(i64::try_from(sent).unwrap_or(i64::MAX));
            }
        }
        self.answer(waiter, Ok(Response::WatchProgress(header)));
    }

    /// Feeds every watch that has changes to send, within this iteration's
    /// budget, starting from where the last iteration's ran out; true when
    /// some are still behind and can take more (the loop comes back at
    /// once). The budget is renewed for the next iteration.
    pub fn feed_watches(&mut self, store: &Store, header: ResponseHeader, now: Instant) -> bool {
        let mut behind = false;
        let slots = self.conns.len();
        let from = self.feed_from_slot.min(slots);
        for slot in (from..slots).chain(0..from) {
            behind |= self.feed_conn(slot, store, header);
            if self.feed_budget.spent() {
                self.feed_from_slot = slot + 1;
                behind = true;
                break;
            }
        }
        for slot in 0..slots {
            self.cut_off_if_slow(slot, store, header, now);
            self.settle(slot);
        }
        self.feed_budget = watch::FeedBudget::per_iteration();
        behind
    }

    /// Unsent bytes past which a connection's watches are not fed, or
    /// `None` while answers hold a quarter of the budget: then no watch is
    /// fed (each waits at its place in the history), so watchers that do
    /// not read cannot take the room of requests. A quarter, not a half,
    /// because a pass may add `PULL_BYTES_MAX` to a buffer and double its
    /// capacity after the check.
    fn feed_limit_bytes(&self) -> Option<usize> {
        if self.answer_charged_bytes >= self.bounds.memory_max_bytes / 4 {
            return None;
        }
        Some(WATCH_FEED_LIMIT_BYTES.min(self.bounds.share_bytes / 2))
    }

    fn feed_conn(&mut self, slot: usize, store: &Store, header: ResponseHeader) -> bool {
        let current = store.current_revision();
        // Skipped watches are fed on a later iteration, which the ticks and
        // the sockets that drain bring on; saying "behind" would spin.
        let Some(feed_limit) = self.feed_limit_bytes() else { return false };
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return false };
        let Phase::Open(session) = conn.phase else { return false };
        let mut behind = false;
        let mut cancelled = Vec::new();
        for (id, watcher) in conn.watchers.iter_mut() {
            if watcher.next.main > current {
                continue;
            }
            if conn.write_buf.len() - conn.written_bytes > feed_limit {
                // The writable event of the drained socket wakes the loop.
                break;
            }
            if self.feed_budget.spent() {
                behind = true;
                break;
            }
            let max = session.client_max_frame_bytes;
            let budget = &mut self.feed_budget;
            match watch::pass(store, *id, watcher, header, max, budget, &mut conn.write_buf) {
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

    /// Who the waiter's connection speaks for: its token if it holds one,
    /// else the user its client certificate names.
    pub fn identity(&self, waiter: Waiter) -> Identity<'_> {
        let conn = self.conns.get(waiter.slot).and_then(Option::as_ref);
        match conn.filter(|c| c.serial == waiter.serial) {
            Some(conn) => Identity::of(conn),
            None => Identity::Anonymous,
        }
    }

    /// Binds the waiter's connection to a verified token.
    pub fn bind(&mut self, waiter: Waiter, claims: Claims) {
        if let Some(conn) = self.conn_of(waiter) {
            conn.claims = Some(claims);
        }
    }

    /// Ends with `PermissionRevoked` every watch for which `keep` (given
    /// the connection's identity, the watch's key and range end) says no.
    pub fn cancel_watches_unless(
        &mut self,
        header: ResponseHeader,
        keep: impl Fn(Identity<'_>, &[u8], &[u8]) -> bool,
    ) {
        for conn in self.conns.iter_mut().flatten() {
            let Phase::Open(session) = conn.phase else { continue };
            let gone: Vec<u64> = conn
                .watchers
                .iter()
                .filter(|(_, w)| !keep(Identity::of(conn), &w.key, &w.range_end))
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

    /// Cancels the watches of a connection that has not taken a byte for
    /// `slow_watcher_timeout` while events wait for it, with the
    /// slow-reader reason: each resumes from the revision its client
    /// reached, on a connection that reads. The writer never waits for it
    /// meanwhile: the events stay in the store's history, and the
    /// connection holds at most its feed limit of them.
    fn cut_off_if_slow(
        &mut self,
        slot: usize,
        store: &Store,
        header: ResponseHeader,
        now: Instant,
    ) {
        let current = store.current_revision();
        let slow_watcher_timeout = self.bounds.slow_watcher_timeout;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        let Phase::Open(session) = conn.phase else { return };
        let behind = conn.watchers.values().any(|w| w.next.main <= current);
        let stuck = now.saturating_duration_since(conn.written_at) >= slow_watcher_timeout;
        if !behind || conn.pending_write_bytes() == 0 || !stuck {
            return;
        }
        log::debug!("cancelling the watches of a client that does not read them");
        self.slow_reader_cutoffs_total += 1;
        // Its unsent frames go: the watches resume from the revision the
        // client reached, so the events among them come again; any answer
        // among them is lost with the connection, which closes once the
        // cancels are written.
        conn.drop_unsent_frames();
        let max = session.client_max_frame_bytes;
        for id in std::mem::take(&mut conn.watchers).into_keys() {
            watch::cancel(id, header, CancelReason::SlowReader, 0, max, &mut conn.write_buf);
        }
        conn.phase = Phase::Closing;
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
            return self.close(slot, registry);
        }
        self.settle(slot);
    }

    /// Writes every connection's output; the loop calls it in every turn,
    /// after the reads of that turn, so the read budget is renewed here.
    pub fn flush_all(&mut self, registry: &Registry) {
        for slot in 0..self.conns.len() {
            self.flush(slot, registry);
        }
        self.read_this_iteration_bytes = 0;
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns[slot].take() {
            self.read_charged_bytes -= conn.charged_bytes.0;
            self.answer_charged_bytes -= conn.charged_bytes.1;
            let _ = registry.deregister(&mut conn.stream);
        }
    }
}

/// Whether the read buffer holds at least one whole frame.
fn holds_whole_frame(conn: &Conn) -> bool {
    let Phase::Open(session) = conn.phase else { return false };
    let decoder = FrameDecoder::new(&conn.read_buf, session.server_max_frame_bytes);
    decoder.needed_bytes().is_some_and(|needed| needed <= conn.read_buf.len())
}

/// What a request holds until it is answered: its frame, and its decoded
/// form at about as much again, plus the bookkeeping around it.
fn request_cost_bytes(body_bytes: usize) -> u32 {
    let cost = 2 * body_bytes + REQUEST_OVERHEAD_BYTES;
    u32::try_from(cost).unwrap_or(u32::MAX)
}

/// The memory a waiting request costs beyond its bytes: the decoded
/// request's fixed part, its waiter and its place in a queue.
const REQUEST_OVERHEAD_BYTES: usize = 256;

/// Why a connection should close now, if it overstayed.
fn overstayed(conn: &Conn, now: Instant, bounds: &ClientLimits) -> Option<&'static str> {
    let idle_timeout = bounds.idle_timeout;
    let silent = now.saturating_duration_since(conn.active_at);
    match conn.phase {
        Phase::Opening if now.saturating_duration_since(conn.opened_at) > bounds.hello_timeout => {
            return Some("no hello in time");
        }
        Phase::Closing if silent > idle_timeout => {
            return Some("its last frames were not taken in time");
        }
        _ => {}
    }
    let partial_for = conn.partial_since.map(|since| now.saturating_duration_since(since));
    if !conn.paused && partial_for.is_some_and(|d| d > bounds.frame_timeout) {
        return Some("a frame begun and not finished in time");
    }
    (conn.is_idle() && silent > idle_timeout).then_some("idle")
}

/// Counts refused connections and says when to log them: the first at
/// once, then one line per interval with the count.
#[derive(Debug, Default)]
struct RefusalLog {
    /// Refusals not yet logged.
    count: u64,
    logged_at: Option<Instant>,
    /// Refusals since start, for the metrics.
    total: u64,
}

impl RefusalLog {
    /// Notes a refusal; the count to log now, if a line is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        self.total += 1;
        self.flush(now)
    }

    /// The count to log if the interval has passed since the last line.
    fn flush(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFUSAL_LOG_INTERVAL);
        if self.count == 0 || !due {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.count))
    }
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
