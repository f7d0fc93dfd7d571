//! `WatchStream`: one watch on a connection of its own, read as an iterator
//! of `WatchMessage`s, resumed on the next endpoint when its connection dies.
//!
//! A watch gets its own connection so that a burst of events never sits in
//! front of another call's answer, and a slow watch reader never holds up
//! the `Client` (the server stops reading a connection whose watches lag).
//!
//! Resuming: the stream remembers the revision after the last one it
//! delivered (events, or a progress notice). When the connection dies it
//! dials the next endpoint and creates the watch again from that revision,
//! so the caller sees no event twice and misses none, as long as that
//! revision is not compacted (then the new server cancels the watch with
//! `Compacted`, which the caller sees as usual). A watch cancelled because
//! its member is stopping or was removed resumes the same way, and so does
//! one cancelled as a slow reader (the caller took its events too slowly):
//! it gets again every event from the revision it had reached.

use std::time::Instant;

use super::connection::{ConnectOptions, Connection};
use super::error::ClientError;
use super::{Config, dial_first};
use crate::proto::{
    CancelReason, Request, Response, ServerMessage, WatchCancelRequest, WatchCreateRequest,
    WatchCreateResponse, WatchMessage,
};

/// A watch and its connection. Iterate it to get the watch's messages; it
/// ends after `Cancelled`, or after an error it could not resume from.
#[derive(Debug)]
pub struct WatchStream {
    config: Config,
    options: ConnectOptions,
    connection: Connection,
    /// Index of the endpoint `connection` goes to.
    endpoint_index: usize,
    /// The create request, its `start_revision` moved forward as messages
    /// are delivered: what to send to resume.
    request: WatchCreateRequest,
    watch_id: u64,
    /// The request id of an outstanding `WatchProgress`, answered as a
    /// `Progress` message of this stream.
    progress_request_id: Option<u64>,
    done: bool,
}

impl WatchStream {
    pub(super) fn open(
        config: Config,
        options: ConnectOptions,
        first_endpoint: usize,
        mut request: WatchCreateRequest,
    ) -> Result<WatchStream, ClientError> {
        // A watch may be idle for as long as nothing changes.
        let options = ConnectOptions { idle_timeout: None, ..options };
        let (mut connection, endpoint_index) =
            dial_first(&config.endpoints, first_endpoint, &options)?;
        let deadline = Instant::now() + config.command_timeout;
        let mut config = config;
        if let Some(credentials) = config.credentials.as_mut() {
            super::auth::log_in(&mut connection, credentials, deadline)?;
        }
        let created = create(&mut connection, &request, deadline)?;
        if request.start_revision <= 0 {
            // Resume after the revision the watch started from, not after
            // whatever is current when the connection dies.
            request.start_revision = created.header.revision + 1;
        }
        let watch_id = created.watch_id;
        Ok(WatchStream {
            config,
            options,
            connection,
            endpoint_index,
            request,
            watch_id,
            progress_request_id: None,
            done: false,
        })
    }

    /// The watch id the server gave (or accepted).
    pub fn watch_id(&self) -> u64 {
        self.watch_id
    }

    /// The endpoint the watch currently runs on.
    pub fn endpoint(&self) -> &str {
        self.connection.endpoint()
    }

    /// Asks the server for a `Progress` message, which comes through the
    /// stream like any other.
    pub fn request_progress(&mut self) -> Result<(), ClientError> {
        let id = self.connection.send(&Request::WatchProgress)?;
        self.connection.flush()?;
        self.progress_request_id = Some(id);
        Ok(())
    }

    /// Ends the watch; the messages still on their way are dropped.
    pub fn cancel(mut self) -> Result<(), ClientError> {
        let request = Request::WatchCancel(WatchCancelRequest { watch_id: self.watch_id });
        let id = self.connection.send(&request)?;
        let deadline = Instant::now() + self.config.command_timeout;
        loop {
            match self.connection.recv(Some(deadline))? {
                ServerMessage::Response { request_id, .. } if request_id == id => return Ok(()),
                ServerMessage::Error { request_id, error } if request_id == id => {
                    let endpoint = self.connection.endpoint().to_string();
                    return Err(ClientError::Server { endpoint, error });
                }
                _ => {}
            }
        }
    }

    /// The next message, waiting for it; `None` once the watch is over.
    fn next_message(&mut self) -> Option<Result<WatchMessage, ClientError>> {
        while !self.done {
            let message = match self.connection.recv(None) {
                Ok(message) => message,
                Err(ClientError::ConnectionLost { .. }) if self.resume().is_ok() => continue,
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            };
            match self.accept(message) {
                Some(message) if self.carries_on(&message) && self.resume().is_ok() => {
                    self.done = false;
                }
                Some(message) => return Some(Ok(message)),
                None => {}
            }
        }
        None
    }

    /// A cancel that says nothing about the watch itself: its member is
    /// going away (another member can carry it on), or this client fell
    /// behind reading it (any member can, from the revision reached).
    fn carries_on(&self, message: &WatchMessage) -> bool {
        let endpoints = self.config.endpoints.len();
        let WatchMessage::Cancelled { reason, .. } = message else { return false };
        match reason {
            CancelReason::ServerStopping | CancelReason::MemberRemoved | CancelReason::Corrupt => {
                endpoints > 1
            }
            CancelReason::SlowReader => true,
            _ => false,
        }
    }

    /// Keeps what belongs to this watch and moves the resume point past it.
    fn accept(&mut self, message: ServerMessage) -> Option<WatchMessage> {
        let message = match message {
            ServerMessage::Watch { watch_id, message } if watch_id == self.watch_id => message,
            ServerMessage::Response { request_id, response: Response::WatchProgress(header) }
                if Some(request_id) == self.progress_request_id =>
            {
                self.progress_request_id = None;
                WatchMessage::Progress { header }
            }
            _ => return None,
        };
        match &message {
            WatchMessage::Events { events, .. } => {
                let last = events.iter().map(|event| event.kv.mod_revision).max();
                if let Some(last) = last {
                    self.request.start_revision = last + 1;
                }
            }
            WatchMessage::Progress { header } => {
                self.request.start_revision = self.request.start_revision.max(header.revision + 1);
            }
            WatchMessage::Cancelled { .. } => self.done = true,
        }
        Some(message)
    }

    /// Creates the watch again on the next reachable endpoint.
    fn resume(&mut self) -> Result<(), ClientError> {
        let next = (self.endpoint_index + 1) % self.config.endpoints.len();
        let (mut connection, at) = dial_first(&self.config.endpoints, next, &self.options)?;
        let deadline = Instant::now() + self.config.command_timeout;
        if let Some(credentials) = self.config.credentials.as_mut() {
            super::auth::log_in(&mut connection, credentials, deadline)?;
        }
        self.watch_id = create(&mut connection, &self.request, deadline)?.watch_id;
        self.connection = connection;
        self.endpoint_index = at;
        self.progress_request_id = None;
        Ok(())
    }
}

impl Iterator for WatchStream {
    type Item = Result<WatchMessage, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_message()
    }
}

/// Sends the create request and waits for its answer.
fn create(
    connection: &mut Connection,
    request: &WatchCreateRequest,
    deadline: Instant,
) -> Result<WatchCreateResponse, ClientError> {
    let id = connection.send(&Request::WatchCreate(request.clone()))?;
    loop {
        match connection.recv(Some(deadline))? {
            ServerMessage::Response { request_id, response: Response::WatchCreate(created) }
                if request_id == id =>
            {
                return Ok(created);
            }
            ServerMessage::Error { request_id, error } if request_id == id => {
                let endpoint = connection.endpoint().to_string();
                return Err(ClientError::Server { endpoint, error });
            }
            ServerMessage::Response { request_id, response } if request_id == id => {
                return Err(ClientError::Protocol {
                    endpoint: connection.endpoint().to_string(),
                    detail: format!("a WatchCreate was answered with {response:?}"),
                });
            }
            _ => {}
        }
    }
}
