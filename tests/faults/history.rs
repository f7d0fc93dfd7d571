//! The history recorder: client threads that load the cluster and write down
//! every operation with its invocation and completion instants (one
//! monotonic clock, nanoseconds since the recorder started) and its result.
//!
//! Each client thread talks to one member only (several threads per member),
//! one request in flight at a time, on a small set of keys so that
//! operations collide. Values are unique numbers (client in the high bits,
//! a counter in the low bits) written as decimal text, so a read names the
//! one write it saw. The mix: puts, linearizable and serializable gets,
//! deletes, and txn compare-and-swaps on version or on value.
//!
//! How an error is recorded: a write refused before it could apply (never
//! sent, or a server error whose code says it did not apply) is left out, as
//! it never happened; any other failed write (answer lost, timed out, ...)
//! gets an unknown outcome; a failed read is left out.
//!
//! A watcher thread per member watches the whole key prefix from revision 1
//! and keeps every event, for the watch checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use ember::client::{Client, ClientError, Config, ConnectOptions, Connection};
use ember::proto::{
    Compare as WireCompare, CompareResult, CompareTarget, EventKind, KeyValue, PutRequest,
    RangeRequest, Request, RequestOp, ServerMessage, TxnRequest, WatchCreateRequest, WatchMessage,
};

use super::checker::{Compare, Input, NEVER_WRITTEN, Observed, Operation, Output, Value};
use crate::support::rng::Rng;

/// Keys the clients share; few, so that they collide and the checker's
/// per-key search stays small.
pub const KEYS: u32 = 8;
const KEY_PREFIX: &str = "fk/";
/// A client waits this long after an error, so a dead member is not spun on.
const ERROR_BACKOFF: Duration = Duration::from_millis(30);
/// Events one watcher keeps; a scenario of minutes writes far fewer.
const WATCH_EVENTS_MAX: usize = 1 << 20;
/// A watch connection idle this long is dropped and the watch resumed, so
/// a watcher notices the stop flag soon after the load ends.
/// The compactor's period and how many revisions it leaves behind: a
/// watcher that falls further back than that must see a compaction cancel.
const COMPACT_EVERY: Duration = Duration::from_millis(300);
const COMPACT_KEEP_REVISIONS: i64 = 200;
const WATCH_IDLE: Duration = Duration::from_millis(500);

pub fn key_name(key: u32) -> Vec<u8> {
    format!("{KEY_PREFIX}{key:02}").into_bytes()
}

fn key_index(name: &[u8]) -> Option<u32> {
    std::str::from_utf8(name.strip_prefix(KEY_PREFIX.as_bytes())?).ok()?.parse().ok()
}

pub fn value_bytes(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn parse_value(bytes: &[u8]) -> Value {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(NEVER_WRITTEN)
}

pub fn observed(kv: &KeyValue) -> Observed {
    Observed { value: parse_value(&kv.value), mod_revision: kv.mod_revision, version: kv.version }
}

/// A watch event as kept: key, revision, value (`None` for a delete).
pub type WatchEvent = (u32, i64, Option<Value>);

/// Everything the clients did.
#[derive(Debug, Default)]
pub struct History {
    /// Writes and linearizable reads, for the linearizability check.
    pub ops: Vec<Operation>,
    /// Serializable reads, checked by the weaker rule.
    pub serializable: Vec<Operation>,
    /// Per watcher, the (key, revision, value or None for a delete) seen.
    pub watches: Vec<Vec<WatchEvent>>,
    /// Per watcher, the indices into its events where it resumed past a
    /// compaction: the one place a gap is allowed.
    pub compaction_jumps: Vec<Vec<usize>>,
    /// Compactions the compactor made.
    pub compactions: usize,
}

/// The running recorder; `finish` stops the clients and returns the history.
pub struct Recorder {
    pub start: Instant,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<(Vec<Operation>, Vec<Operation>)>>,
    watchers: Vec<JoinHandle<(Vec<WatchEvent>, Vec<usize>)>>,
    compactor: Option<JoinHandle<usize>>,
}

impl Recorder {
    /// Starts `per_member` clients on each config and one watcher on each;
    /// with `compact`, also a compactor.
    pub fn start(configs: &[Config], per_member: usize, seed: u64, compact: bool) -> Recorder {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for (m, config) in configs.iter().enumerate() {
            for k in 0..per_member {
                let client = m * per_member + k;
                let (config, stop) = (config.clone(), stop.clone());
                let seed = seed ^ ((client as u64 + 1) << 48);
                clients.push(thread::spawn(move || run_client(config, client, seed, start, &stop)));
            }
        }
        let watchers = configs
            .iter()
            .map(|config| {
                let (config, stop) = (config.clone(), stop.clone());
                thread::spawn(move || run_watcher(config, &stop))
            })
            .collect();
        let compactor = compact.then(|| {
            let (configs, stop) = (configs.to_vec(), stop.clone());
            thread::spawn(move || run_compactor(&configs, &stop))
        });
        Recorder { start, stop, clients, watchers, compactor }
    }

    /// Nanoseconds since the start, on the recorder's clock.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn finish(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        let mut history = History::default();
        for handle in self.clients {
            let (ops, serializable) = handle.join().expect("client thread");
            history.ops.extend(ops);
            history.serializable.extend(serializable);
        }
        for handle in self.watchers {
            let (events, jumps) = handle.join().expect("watcher thread");
            history.watches.push(events);
            history.compaction_jumps.push(jumps);
        }
        if let Some(handle) = self.compactor {
            history.compactions = handle.join().expect("compactor thread");
        }
        history
    }
}

/// What a client remembers of each key, to aim its compare-and-swaps.
#[derive(Clone, Copy, Default)]
struct Seen {
    version: i64,
    value: Option<Value>,
}

fn run_client(
    config: Config,
    client: usize,
    seed: u64,
    start: Instant,
    stop: &AtomicBool,
) -> (Vec<Operation>, Vec<Operation>) {
    let mut rng = Rng::new(seed);
    let mut connection: Option<Client> = None;
    let mut ops = Vec::new();
    let mut serializable = Vec::new();
    let mut seen = vec![Seen::default(); KEYS as usize];
    let mut counter: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = connected(&mut connection, &config) else { continue };
        counter += 1;
        let value = ((client as u64 + 1) << 32) | counter;
        let key = rng.below(u64::from(KEYS)) as u32;
        let (input, is_serializable) = choose(&mut rng, seen[key as usize], value);
        let call_ns = start.elapsed().as_nanos() as u64;
        let result = perform(conn, key, &input, is_serializable);
        let return_ns = start.elapsed().as_nanos() as u64;
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                connection = None;
                sleep(ERROR_BACKOFF);
                if input == Input::Get || surely_not_applied(&e) {
                    continue;
                }
                Output::Unknown
            }
        };
        remember(&mut seen[key as usize], &output);
        let return_ns = (output != Output::Unknown).then_some(return_ns);
        let op = Operation { client, key, call_ns, return_ns, input, output };
        if is_serializable { serializable.push(op) } else { ops.push(op) }
    }
    (ops, serializable)
}

/// A write failed in a way that proves it was never applied: it was never
/// sent, or the server answered with a code it knows and that says so. Any
/// other failure (lost answer, timeout, protocol trouble, an unknown code)
/// leaves the outcome open.
fn surely_not_applied(error: &ClientError) -> bool {
    match error {
        ClientError::Unreachable { .. } => true,
        ClientError::Server { .. } => error.code().is_some() && !error.outcome_unknown(),
        _ => false,
    }
}

fn connected<'a>(slot: &'a mut Option<Client>, config: &Config) -> Option<&'a mut Client> {
    if slot.is_none() {
        match Client::connect(config.clone()) {
            Ok(client) => *slot = Some(client),
            Err(_) => {
                sleep(ERROR_BACKOFF);
                return None;
            }
        }
    }
    slot.as_mut()
}

/// The next operation: 30% put, 25% linearizable get, 15% serializable get,
/// 10% delete, 20% compare-and-swap (half on version, half on value).
fn choose(rng: &mut Rng, seen: Seen, value: Value) -> (Input, bool) {
    match rng.below(100) {
        0..30 => (Input::Put { value }, false),
        30..55 => (Input::Get, false),
        55..70 => (Input::Get, true),
        70..80 => (Input::Delete, false),
        n => {
            let compare = match seen.value {
                Some(old) if n % 2 == 0 => Compare::Value(old),
                _ => Compare::Version(seen.version),
            };
            (Input::Cas { compare, value }, false)
        }
    }
}

fn remember(seen: &mut Seen, output: &Output) {
    if let Output::Get { kv, .. } = output {
        *seen = match kv {
            Some(kv) => Seen { version: kv.version, value: Some(kv.value) },
            None => Seen::default(),
        };
    }
}

fn perform(
    client: &mut Client,
    key: u32,
    input: &Input,
    serializable: bool,
) -> Result<Output, ClientError> {
    let name = key_name(key);
    Ok(match *input {
        Input::Put { value } => {
            let response = client.put(&name, &value_bytes(value))?;
            Output::Put { revision: response.header.revision }
        }
        Input::Get => {
            let request = RangeRequest { key: name, serializable, ..RangeRequest::default() };
            let response = client.range(request)?;
            let kv = response.kvs.first().map(observed);
            Output::Get { kv, header_revision: response.header.revision }
        }
        Input::Delete => {
            let request = ember::proto::DeleteRangeRequest { key: name, ..Default::default() };
            let response = client.delete_range(request)?;
            Output::Delete { deleted: response.deleted > 0, revision: response.header.revision }
        }
        Input::Cas { compare, value } => {
            let response = client.txn(cas_request(name, compare, value))?;
            Output::Cas { succeeded: response.succeeded, revision: response.header.revision }
        }
    })
}

fn cas_request(key: Vec<u8>, compare: Compare, value: Value) -> TxnRequest {
    let target = match compare {
        Compare::Version(v) => CompareTarget::Version(v),
        Compare::Value(v) => CompareTarget::Value(value_bytes(v)),
    };
    let guard = WireCompare {
        result: CompareResult::Equal,
        target,
        key: key.clone(),
        range_end: Vec::new(),
    };
    let put = PutRequest { key, value: value_bytes(value), ..Default::default() };
    TxnRequest { compare: vec![guard], success: vec![RequestOp::Put(put)], failure: Vec::new() }
}

/// Watches every key of the workload from revision 1 until stopped. When a
/// stream ends (its member died, or nothing came for `WATCH_IDLE`), a new
/// one starts from the revision after the last event kept: the resumption
/// the watch guarantees promise. A start below the compacted revision is
/// cancelled with that revision; the watcher then resumes there and notes
/// the jump. It reads with deadlines (a raw `Connection`, not the blocking
/// `WatchStream`) so that it always notices the stop flag.
fn run_watcher(config: Config, stop: &AtomicBool) -> (Vec<WatchEvent>, Vec<usize>) {
    let options = ConnectOptions { dial_timeout: config.dial_timeout, ..Default::default() };
    let endpoint = &config.endpoints[0];
    let mut events: Vec<WatchEvent> = Vec::new();
    let mut jumps = Vec::new();
    let mut next_revision = 1;
    while !stop.load(Ordering::Relaxed) && events.len() < WATCH_EVENTS_MAX {
        let Ok(mut connection) = Connection::connect(endpoint, &options) else {
            sleep(ERROR_BACKOFF);
            continue;
        };
        if connection.send(&Request::WatchCreate(watch_request(next_revision))).is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            let message = match connection.recv(Some(Instant::now() + WATCH_IDLE)) {
                Ok(ServerMessage::Watch { message, .. }) => message,
                Ok(ServerMessage::Response { .. }) => continue,
                _ => break,
            };
            match message {
                WatchMessage::Events { events: batch, .. } => keep(&mut events, batch),
                WatchMessage::Cancelled { compact_revision, .. } if compact_revision > 0 => {
                    jumps.push(events.len());
                    next_revision = next_revision.max(compact_revision);
                    break;
                }
                WatchMessage::Cancelled { .. } => break,
                WatchMessage::Progress { .. } => {}
            }
            next_revision = events.last().map_or(next_revision, |e| e.1 + 1);
        }
    }
    (events, jumps)
}

fn watch_request(start_revision: i64) -> WatchCreateRequest {
    let mut range_end = KEY_PREFIX.as_bytes().to_vec();
    *range_end.last_mut().unwrap() += 1;
    WatchCreateRequest {
        key: KEY_PREFIX.as_bytes().to_vec(),
        range_end,
        start_revision,
        ..Default::default()
    }
}

fn keep(events: &mut Vec<WatchEvent>, batch: Vec<ember::proto::Event>) {
    for event in batch {
        let Some(key) = key_index(&event.kv.key) else { continue };
        let value = (event.kind == EventKind::Put).then(|| parse_value(&event.kv.value));
        events.push((key, event.kv.mod_revision, value));
    }
}

/// Compacts to a little below the current revision every `COMPACT_EVERY`,
/// through whichever member answers; returns how many compactions succeeded.
fn run_compactor(configs: &[Config], stop: &AtomicBool) -> usize {
    let mut done = 0;
    let mut turn = 0;
    while !stop.load(Ordering::Relaxed) {
        sleep(COMPACT_EVERY);
        turn += 1;
        let Ok(mut client) = Client::connect(configs[turn % configs.len()].clone()) else {
            continue;
        };
        let Ok(status) = client.status() else { continue };
        let target = status.header.revision - COMPACT_KEEP_REVISIONS;
        if target > status.compact_revision && client.compact(target, false).is_ok() {
            done += 1;
        }
    }
    done
}
