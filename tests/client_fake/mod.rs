//! A scripted fake server for the client tests: a TcpListener in a thread,
//! speaking the protocol through `ember::proto` exactly as a server must.
//! Each test writes the server's side of the conversation as a script.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use ember::proto::*;

pub const CLUSTER_ID: u64 = 0xC1;

/// The server side of one accepted connection, after the handshake.
pub struct Peer {
    stream: TcpStream,
    buffer: Vec<u8>,
    pub hello: ClientHello,
    pub client_max_frame_bytes: u32,
}

impl Peer {
    /// Accepts the next connection on `listener` and answers its hello.
    pub fn accept(listener: &TcpListener, member_id: u64) -> Peer {
        let (stream, _) = listener.accept().expect("accept");
        Peer::greet(stream, member_id)
    }

    pub fn greet(stream: TcpStream, member_id: u64) -> Peer {
        Peer::greet_as(stream, server_params(member_id))
    }

    /// Answers the hello as the server `params` describes.
    pub fn greet_as(mut stream: TcpStream, params: ServerParams) -> Peer {
        let mut hello = [0u8; CLIENT_HELLO_BYTES];
        stream.read_exact(&mut hello).expect("client hello");
        let hello = ClientHello::parse(&hello).expect("valid hello").expect("whole hello");
        let answer = negotiate(&hello, &params);
        stream.write_all(&answer.encode(&params)).expect("server hello");
        Peer { stream, buffer: Vec::new(), hello, client_max_frame_bytes: hello.max_frame_bytes }
    }

    /// The next request, or `None` when the client closed the connection.
    pub fn read_request(&mut self) -> Option<(u64, Request)> {
        loop {
            let mut decoder = FrameDecoder::new(&self.buffer, REQUEST_BYTES_MAX_DEFAULT);
            if let Some(frame) = decoder.next() {
                let frame = frame.expect("well-framed request");
                let request = decode_request(&frame).expect("decodable request");
                let id = frame.header.id;
                let used = decoder.consumed_bytes();
                self.buffer.drain(..used);
                return Some((id, request));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }

    pub fn respond(&mut self, id: u64, response: &Response) {
        let mut out = Vec::new();
        encode_response(&mut out, id, response, self.client_max_frame_bytes).expect("fits");
        self.write(&out);
    }

    pub fn fail(&mut self, id: u64, code: ErrorCode) {
        let mut out = Vec::new();
        encode_error(&mut out, id, &ErrorBody::new(code), self.client_max_frame_bytes);
        self.write(&out);
    }

    pub fn push(&mut self, watch_id: u64, message: &WatchMessage) {
        let mut out = Vec::new();
        encode_watch(&mut out, watch_id, message, self.client_max_frame_bytes).expect("fits");
        self.write(&out);
    }

    /// Raw bytes, for answers that break the protocol on purpose.
    pub fn write(&mut self, bytes: &[u8]) {
        // The client may have gone already; the script does not care.
        let _ = self.stream.write_all(bytes);
    }
}

pub fn server_params(member_id: u64) -> ServerParams {
    ServerParams {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        max_frame_bytes: REQUEST_BYTES_MAX_DEFAULT,
        cluster_id: CLUSTER_ID,
        member_id,
    }
}

pub fn header(member_id: u64, revision: i64) -> ResponseHeader {
    ResponseHeader { cluster_id: CLUSTER_ID, member_id, revision, raft_term: 2 }
}

/// A listener on a free port and its `host:port`.
pub fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    (listener, address)
}

/// A `host:port` where nothing listens.
pub fn dead_endpoint() -> String {
    let (listener, address) = listen();
    drop(listener);
    address
}

/// Runs `script` against a fresh listener in a thread; returns the address
/// and the thread, whose join re-raises the script's assertion failures.
pub fn scripted(script: impl FnOnce(TcpListener) + Send + 'static) -> (String, JoinHandle<()>) {
    let (listener, address) = listen();
    (address, thread::spawn(move || script(listener)))
}

/// An in-memory store answering Range, Put, DeleteRange and Status in
/// order, on any number of connections, for as long as the test runs.
/// Every request it receives is recorded.
#[derive(Clone, Default)]
pub struct FakeStore {
    pub data: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub revision: Arc<Mutex<i64>>,
}

impl FakeStore {
    /// Serves forever on a fresh port with member id `member_id`.
    pub fn serve(&self, member_id: u64) -> String {
        let (listener, address) = listen();
        let store = self.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let store = store.clone();
                thread::spawn(move || store.session(stream, member_id));
            }
        });
        address
    }

    fn session(&self, stream: TcpStream, member_id: u64) {
        let mut peer = Peer::greet(stream, member_id);
        while let Some((id, request)) = peer.read_request() {
            self.requests.lock().unwrap().push(request.clone());
            match self.answer(&request, member_id) {
                Ok(response) => peer.respond(id, &response),
                Err(code) => peer.fail(id, code),
            }
        }
    }

    fn answer(&self, request: &Request, member_id: u64) -> Result<Response, ErrorCode> {
        let mut data = self.data.lock().unwrap();
        let mut revision = self.revision.lock().unwrap();
        let in_range = |key: &[u8], start: &[u8], end: &[u8]| match end {
            [] => key == start,
            [0] => key >= start,
            end => key >= start && key < end,
        };
        match request {
            Request::Put(put) => {
                *revision += 1;
                let old = data.insert(put.key.clone(), put.value.clone());
                let prev_kv = old.filter(|_| put.prev_kv).map(|value| kv(&put.key, &value));
                Ok(Response::Put(PutResponse { header: header(member_id, *revision), prev_kv }))
            }
            Request::Range(range) => {
                let mut kvs: Vec<KeyValue> = data
                    .iter()
                    .filter(|(key, _)| in_range(key, &range.key, &range.range_end))
                    .map(|(key, value)| kv(key, value))
                    .collect();
                let count = kvs.len() as i64;
                if range.limit > 0 {
                    kvs.truncate(range.limit as usize);
                }
                let more = (kvs.len() as i64) < count;
                let header = header(member_id, *revision);
                Ok(Response::Range(RangeResponse { header, kvs, more, count }))
            }
            Request::DeleteRange(delete) => {
                let doomed: Vec<Vec<u8>> = data
                    .keys()
                    .filter(|key| in_range(key, &delete.key, &delete.range_end))
                    .cloned()
                    .collect();
                let mut prev_kvs = Vec::new();
                for key in &doomed {
                    let value = data.remove(key).expect("listed just now");
                    if delete.prev_kv {
                        prev_kvs.push(kv(key, &value));
                    }
                }
                if !doomed.is_empty() {
                    *revision += 1;
                }
                Ok(Response::DeleteRange(DeleteRangeResponse {
                    header: header(member_id, *revision),
                    deleted: doomed.len() as i64,
                    prev_kvs,
                }))
            }
            Request::Status => Ok(Response::Status(StatusResponse {
                header: header(member_id, *revision),
                version: "0.1.0".to_string(),
                data_size_bytes: 4096,
                leader_id: 1,
                raft_term: 2,
                raft_commit_index: 40 + *revision as u64,
                raft_applied_index: 40 + *revision as u64,
                compact_revision: 0,
                is_learner: false,
                errors: Vec::new(),
                cluster_version: "0.1".to_string(),
            })),
            _ => Err(ErrorCode::Unsupported),
        }
    }
}

fn kv(key: &[u8], value: &[u8]) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        lease: 0,
    }
}
