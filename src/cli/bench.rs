//! `ember bench put|get`: a closed-loop load generator shaped like etcd's
//! `benchmark` tool, for side-by-side runs (../shared/bench/compare-etcd.sh).
//!
//! C logical clients share K connections, client `i` on connection `i % K`.
//! Each client sends its next request only when its previous one is
//! answered, so at most C requests are in flight. One thread drives each
//! connection: it answers to whichever of its clients' requests comes back,
//! queues that client's next request, and writes everything queued in one
//! go before it blocks on the socket again, so the generator spends a
//! syscall or two per batch, not per request.
//!
//! Keys are `--key-size` zero-padded decimals of a uniform random index in
//! `[0, --keyspace)`, from a xorshift generator seeded per client (runs
//! repeat exactly). Values are `--val-size` bytes of `v`. `get` reads what is
//! there without preloading; a missing key is an empty answer.
//!
//! Latency is from queuing a request to decoding its answer, in µs. The one
//! line on stdout is
//! `op=.. clients=.. conns=.. total=.. secs=.. ops_per_s=.. p50_us=.. p99_us=..`;
//! progress goes to stderr, only when stderr is a terminal.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::CliError;
use super::output::{client_config, failed, flag_number};
use crate::client::{ConnectOptions, Connection, Credentials, dial_first, log_in};
use crate::flags::{Flag, Parsed, no_env};
use crate::proto::{PutRequest, RangeRequest, Request, ServerMessage};

pub const BENCH_FLAGS: &[Flag] = &[
    Flag { name: "clients", takes_value: true, help: "logical clients (default 1)" },
    Flag { name: "conns", takes_value: true, help: "connections they share (default 1)" },
    Flag { name: "total", takes_value: true, help: "requests in all (default 10000)" },
    Flag { name: "key-size", takes_value: true, help: "key length in digits (default 8)" },
    Flag { name: "val-size", takes_value: true, help: "value length in bytes (default 8)" },
    Flag { name: "keyspace", takes_value: true, help: "distinct keys (default 1)" },
    Flag { name: "serializable", takes_value: false, help: "get: serializable reads" },
];

/// The most logical clients a run may have: each holds one request in
/// flight, and a connection keeps at most `IN_FLIGHT_MAX_DEFAULT`.
const CLIENTS_MAX: u64 = 100_000;

/// The most requests a run may make: latencies are kept in memory (4 bytes
/// each) to compute exact percentiles.
const TOTAL_MAX: u64 = 100_000_000;

/// Longest key the bench makes; a server's key limit is 32 KiB.
const KEY_SIZE_MAX: usize = 1024;

/// Longest value; a request must fit in the server's 1.5 MiB frame.
const VAL_SIZE_MAX: usize = 1024 * 1024;

/// How often progress is redrawn on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// One run's shape, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub op: Op,
    /// Invariant: `1 <= clients <= CLIENTS_MAX`, `1 <= conns <= clients`.
    pub clients: u64,
    pub conns: u64,
    /// Invariant: `1 <= total <= TOTAL_MAX`.
    pub total: u64,
    /// Invariant: `keyspace - 1` has at most `key_size` digits.
    pub key_size: usize,
    pub val_size: usize,
    pub keyspace: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    Get { serializable: bool },
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get { .. } => "get",
        }
    }
}

pub fn run_bench(parsed: &Parsed) -> Result<(), CliError> {
    let spec = spec(parsed)?;
    let config = client_config(parsed)?;
    let options = ConnectOptions {
        dial_timeout: config.dial_timeout,
        // A server that stops answering fails the run instead of hanging it.
        idle_timeout: Some(config.command_timeout),
        max_in_flight: spec.clients.div_ceil(spec.conns) as usize,
        tls: config.tls.clone(),
        ..ConnectOptions::default()
    };
    let report = run(&spec, &config.endpoints, &options, config.credentials)?;
    println!("{}", report.line(&spec));
    Ok(())
}

/// Dials `spec.conns` connections (connection `j` to endpoint `j % n`
/// first, the others if it is down), each logged in when `credentials`
/// are given, then runs the load; the clock starts once every connection
/// is up, as in etcd's tool.
pub fn run(
    spec: &Spec,
    endpoints: &[String],
    options: &ConnectOptions,
    mut credentials: Option<Credentials>,
) -> Result<Report, CliError> {
    let deadline = std::time::Instant::now() + options.dial_timeout * 5;
    let connections = (0..spec.conns as usize)
        .map(|index| {
            let first = index % endpoints.len();
            let (mut connection, _) = dial_first(endpoints, first, options)?;
            if let Some(credentials) = credentials.as_mut() {
                log_in(&mut connection, credentials, deadline)?;
            }
            Ok(connection)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    drive_all(spec, connections)
}

/// The flags as a `Spec`; out-of-range values are usage errors.
pub fn spec(parsed: &Parsed) -> Result<Spec, CliError> {
    let op = match parsed.positionals.as_slice() {
        [op] if op == "put" => Op::Put,
        [op] if op == "get" => Op::Get { serializable: parsed.switch("serializable", no_env)? },
        _ => return Err(CliError::Usage("bench takes 'put' or 'get'".to_string())),
    };
    let spec = Spec {
        op,
        clients: flag_number(parsed, "clients", 1)?,
        conns: flag_number(parsed, "conns", 1)?,
        total: flag_number(parsed, "total", 10_000)?,
        key_size: flag_number(parsed, "key-size", 8)?,
        val_size: flag_number(parsed, "val-size", 8)?,
        keyspace: flag_number(parsed, "keyspace", 1)?,
    };
    check(&spec).map_err(CliError::Usage)?;
    Ok(spec)
}

fn check(spec: &Spec) -> Result<(), String> {
    if !(1..=CLIENTS_MAX).contains(&spec.clients) {
        return Err(format!("--clients must be in 1..={CLIENTS_MAX}"));
    }
    if spec.conns < 1 || spec.conns > spec.clients {
        return Err("--conns must be at least 1 and at most --clients".to_string());
    }
    if !(1..=TOTAL_MAX).contains(&spec.total) {
        return Err(format!("--total must be in 1..={TOTAL_MAX}"));
    }
    if !(1..=KEY_SIZE_MAX).contains(&spec.key_size) || spec.val_size > VAL_SIZE_MAX {
        return Err(format!(
            "--key-size must be in 1..={KEY_SIZE_MAX} and --val-size at most {VAL_SIZE_MAX}"
        ));
    }
    let widest_key = (spec.keyspace.max(1) - 1).to_string().len();
    if spec.keyspace < 1 || widest_key > spec.key_size {
        return Err(format!(
            "--keyspace must be at least 1 and its keys fit in --key-size {} digits",
            spec.key_size
        ));
    }
    Ok(())
}

/// Latencies of every request, and how long the run took.
#[derive(Debug)]
pub struct Report {
    /// Invariant: sorted.
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
}

impl Report {
    /// The percentile `quantile` in [0, 1], picked as etcd's tool does.
    pub fn percentile_us(&self, quantile: f64) -> u32 {
        let last = self.latencies_us.len().saturating_sub(1);
        self.latencies_us.get((last as f64 * quantile) as usize).copied().unwrap_or(0)
    }

    pub fn line(&self, spec: &Spec) -> String {
        let secs = self.elapsed.as_secs_f64();
        let total = self.latencies_us.len();
        format!(
            "op={} clients={} conns={} total={total} secs={secs:.3} ops_per_s={:.0} p50_us={} p99_us={}",
            spec.op.name(),
            spec.clients,
            spec.conns,
            total as f64 / secs.max(1e-9),
            self.percentile_us(0.5),
            self.percentile_us(0.99),
        )
    }
}

/// Runs every connection's clients to the end, each connection on its own
/// thread, and merges their latencies.
fn drive_all(spec: &Spec, connections: Vec<Connection>) -> Result<Report, CliError> {
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let results: Vec<Result<Vec<u32>, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(index, connection)| {
                let clients = clients_of(spec, index as u64);
                let done = &done;
                scope.spawn(move || drive(spec, connection, clients, done))
            })
            .collect();
        show_progress(spec.total, &done, started, || workers.iter().all(|w| w.is_finished()));
        workers.into_iter().map(|w| w.join().expect("a bench worker panicked")).collect()
    });
    let elapsed = started.elapsed();
    let mut latencies_us = Vec::with_capacity(spec.total as usize);
    for result in results {
        latencies_us.extend(result.map_err(CliError::Failed)?);
    }
    latencies_us.sort_unstable();
    Ok(Report { latencies_us, elapsed })
}

fn show_progress(total: u64, done: &AtomicU64, started: Instant, finished: impl Fn() -> bool) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    while !finished() {
        std::thread::sleep(PROGRESS_INTERVAL);
        let count = done.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        eprint!("\r{count}/{total} requests, {secs:.1}s");
        let _ = std::io::stderr().flush();
    }
    eprintln!();
}

/// One logical client: its share of the requests and its key generator.
#[derive(Debug)]
struct LogicalClient {
    remaining: u64,
    keys: KeyGenerator,
    sent_at: Instant,
}

/// The clients of connection `conn`: `i % conns == conn`, each with
/// `total / clients` requests and the remainder spread over the first ones.
fn clients_of(spec: &Spec, conn: u64) -> Vec<LogicalClient> {
    (conn..spec.clients)
        .step_by(spec.conns as usize)
        .map(|index| LogicalClient {
            remaining: spec.total / spec.clients + u64::from(index < spec.total % spec.clients),
            keys: KeyGenerator::new(index),
            sent_at: Instant::now(),
        })
        .collect()
}

/// Drives one connection until all its clients are done; returns their
/// latencies in µs.
fn drive(
    spec: &Spec,
    mut connection: Connection,
    mut clients: Vec<LogicalClient>,
    done: &AtomicU64,
) -> Result<Vec<u32>, String> {
    let requests: u64 = clients.iter().map(|c| c.remaining).sum();
    let mut latencies_us = Vec::with_capacity(requests as usize);
    let mut request = template(spec);
    let mut client_of_id: HashMap<u64, usize> = HashMap::with_capacity(clients.len());
    for index in 0..clients.len() {
        send_next(spec, &mut connection, &mut clients, index, &mut request, &mut client_of_id)?;
    }
    while !client_of_id.is_empty() {
        let (id, answered_at) = match connection.recv(None).map_err(|e| e.to_string())? {
            ServerMessage::Response { request_id, .. } => (request_id, Instant::now()),
            ServerMessage::Error { error, .. } => {
                return Err(format!("{}: {error}", connection.endpoint()));
            }
            ServerMessage::Watch { .. } => continue,
        };
        let Some(index) = client_of_id.remove(&id) else {
            return Err(format!("{}: answer to unknown request {id}", connection.endpoint()));
        };
        let waited = answered_at.duration_since(clients[index].sent_at);
        latencies_us.push(u32::try_from(waited.as_micros()).unwrap_or(u32::MAX));
        done.fetch_add(1, Ordering::Relaxed);
        send_next(spec, &mut connection, &mut clients, index, &mut request, &mut client_of_id)?;
    }
    Ok(latencies_us)
}

/// Queues client `index`'s next request, if it has one left.
fn send_next(
    spec: &Spec,
    connection: &mut Connection,
    clients: &mut [LogicalClient],
    index: usize,
    request: &mut Request,
    client_of_id: &mut HashMap<u64, usize>,
) -> Result<(), String> {
    let client = &mut clients[index];
    if client.remaining == 0 {
        return Ok(());
    }
    client.remaining -= 1;
    let key_index = client.keys.next_below(spec.keyspace);
    let key = match request {
        Request::Put(put) => &mut put.key,
        Request::Range(range) => &mut range.key,
        _ => unreachable!("the template is a put or a range"),
    };
    key.clear();
    write!(key, "{key_index:0width$}", width = spec.key_size).expect("writing to a Vec");
    let id = connection.send(request).map_err(|e| e.to_string())?;
    client_of_id.insert(id, index);
    client.sent_at = Instant::now();
    Ok(())
}

/// The request every client sends, its key overwritten each time.
fn template(spec: &Spec) -> Request {
    match spec.op {
        Op::Put => Request::Put(PutRequest {
            key: Vec::with_capacity(spec.key_size),
            value: vec![b'v'; spec.val_size],
            ..PutRequest::default()
        }),
        Op::Get { serializable } => Request::Range(RangeRequest {
            key: Vec::with_capacity(spec.key_size),
            serializable,
            ..RangeRequest::default()
        }),
    }
}

/// xorshift64*: small, fast and good enough to spread keys uniformly.
#[derive(Clone, Debug)]
pub struct KeyGenerator {
    /// Invariant: never zero (xorshift would stay at zero).
    state: u64,
}

impl KeyGenerator {
    /// The generator of logical client `client`; distinct per client.
    pub fn new(client: u64) -> KeyGenerator {
        let state = (client.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        KeyGenerator { state }
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, bound)`, by the multiply-shift reduction (its bias is
    /// below 2^-40 for any keyspace a bench uses).
    pub fn next_below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_uniform_over_the_keyspace() {
        let mut keys = KeyGenerator::new(0);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[keys.next_below(10) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
        let (mut a, mut b) = (KeyGenerator::new(1), KeyGenerator::new(2));
        assert_ne!(a.next_u64(), b.next_u64(), "clients draw different keys");
    }

    fn spec() -> Spec {
        Spec {
            op: Op::Put,
            clients: 5,
            conns: 2,
            total: 12,
            key_size: 8,
            val_size: 8,
            keyspace: 100,
        }
    }

    #[test]
    fn requests_are_split_over_clients_and_clients_over_connections() {
        let spec = spec();
        let shares: Vec<Vec<u64>> =
            (0..2).map(|c| clients_of(&spec, c).iter().map(|l| l.remaining).collect()).collect();
        // Clients 0, 2, 4 on connection 0 and 1, 3 on connection 1; 12 = 3+3+2+2+2.
        assert_eq!(shares, vec![vec![3, 2, 2], vec![3, 2]]);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let good = spec();
        assert!(check(&good).is_ok());
        for bad in [
            Spec { conns: 6, ..good.clone() },
            Spec { clients: 0, ..good.clone() },
            Spec { total: 0, ..good.clone() },
            Spec { keyspace: 1_000_000_000, ..good.clone() },
            Spec { keyspace: 0, ..good.clone() },
            Spec { key_size: 0, ..good.clone() },
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percentiles_pick_like_etcds_tool() {
        let report = Report { latencies_us: (1..=100).collect(), elapsed: Duration::from_secs(2) };
        assert_eq!((report.percentile_us(0.5), report.percentile_us(0.99)), (50, 99));
        let line = report.line(&spec());
        assert_eq!(
            line,
            "op=put clients=5 conns=2 total=100 secs=2.000 ops_per_s=50 p50_us=50 p99_us=99"
        );
    }
}
