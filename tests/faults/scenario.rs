//! The frame every fault scenario runs in: start a cluster, load it with the
//! recorder, inject the scenario's faults, heal, and check.
//!
//! Checks after every scenario: the history is linearizable (per key); the
//! serializable reads obey their weaker rule; every acknowledged write is in
//! the final state; every member holds the same keyspace at the same
//! revision, and gives the same `HashKv` hash at one revision; each watch
//! stream is ordered, unique, gap-free and agrees with the others and with
//! the writes; no member panicked; after each fault writes succeed again
//! within 3 election timeouts plus a second; and no member's RSS or open
//! descriptors passed the bounds of `bounds.rs` at any sample.
//!
//! `EMBER_FAULT_SECONDS` (default 3) sets how long the faults run;
//! `EMBER_FAULT_SEED` replays a run. Each scenario prints one line:
//! `faults scenario=<name> seed=<n> ops=<n> unknown_writes=<n> acked_lost=<n>
//! linearizable=<bool>`, where `unknown_writes` counts the writes whose
//! client was left not knowing whether they applied.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ember::client::Client;
use ember::proto::{HashKvResponse, RangeRequest};

use super::bounds::{self, Sampler};
use super::checker::{
    Input, Observed, Operation, Output, Verdict, acked_lost, check_history, check_serializable,
};
use super::history::{History, KEYS, Recorder, key_name, observed};
use crate::support::cluster::{Cluster, ELECTION_TIMEOUT_MS};
use crate::support::rng::Rng;

/// Clients per member: several, so one member's answers interleave.
const CLIENTS_PER_MEMBER: usize = 2;
/// Time for the linearizability search over the whole history.
const CHECK_BUDGET: Duration = Duration::from_secs(60);
const LEADER_WAIT: Duration = Duration::from_secs(15);
/// Load after the faults healed, so the final state has settled writes.
const SETTLE: Duration = Duration::from_millis(500);
/// The client id of the final reads.
const FINAL_CLIENT: usize = usize::MAX;

/// The most a recovery may take: 3 election timeouts plus a second.
pub fn recovery_bound() -> Duration {
    Duration::from_millis(3 * ELECTION_TIMEOUT_MS + 1000)
}

pub struct Settings {
    pub seconds: u64,
    pub seed: u64,
}

impl Settings {
    pub fn from_env() -> Settings {
        let seconds = env_number("EMBER_FAULT_SECONDS").unwrap_or(3);
        let seed = env_number("EMBER_FAULT_SEED").unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            nanos.as_nanos() as u64 ^ u64::from(std::process::id())
        });
        Settings { seconds, seed }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// What a scenario's fault step gets: the cluster, the recorder's clock, a
/// seeded generator, and where to note the instants faults began.
pub struct Run<'a> {
    pub cluster: &'a mut Cluster,
    pub recorder: &'a Recorder,
    pub rng: Rng,
    pub until: Instant,
    pub fault_instants_ns: Vec<u64>,
}

impl Run<'_> {
    /// Notes that a fault that stops writes (a kill, a partition) begins now.
    pub fn fault_now(&mut self) {
        self.fault_instants_ns.push(self.recorder.now_ns());
    }

    pub fn time_left(&self) -> bool {
        Instant::now() < self.until
    }

    pub fn leader(&self) -> usize {
        let live = self.cluster.live();
        self.cluster.find_leader(&live, LEADER_WAIT).expect("a leader among the live members")
    }
}

/// Options of a scenario beyond its faults.
#[derive(Clone, Copy, Default)]
pub struct Options {
    /// Run a compactor alongside the load.
    pub compact: bool,
    /// `--snapshot-count` of the members (0: the default).
    pub snapshot_count: u64,
    /// Report, rather than fail on, a serializable read whose revision went
    /// back for its client. Only for power loss: a member syncs its hard
    /// state only with new entries or a new vote (etcd's MustSync rule), so
    /// a commit index it applied up to may not be durable, and after a power
    /// cut it serves an older revision until the leader tells it the commit
    /// again. See `faults_power.rs` for the test that still asserts it.
    pub serializable_may_regress: bool,
    /// Milliseconds added to every WAL sync of every member, as a slow
    /// disk would (`EMBER_FAULT_SYNC_DELAY_MS`); 0 for none.
    pub sync_delay_ms: u64,
}

/// Runs one scenario on `size` members and asserts every check.
pub fn run(name: &str, size: usize, faults: impl FnOnce(&mut Run)) {
    run_with(name, size, Options::default(), faults);
}

pub fn run_with(name: &str, size: usize, options: Options, faults: impl FnOnce(&mut Run)) {
    run_on(name, size, options, false, faults);
}

/// Like `run_with`, with peer TLS between the members
/// (`Cluster::start_behind_proxies_with_peer_tls`).
pub fn run_with_peer_tls(name: &str, size: usize, options: Options, faults: impl FnOnce(&mut Run)) {
    run_on(name, size, options, true, faults);
}

fn run_on(
    name: &str,
    size: usize,
    options: Options,
    peer_tls: bool,
    faults: impl FnOnce(&mut Run),
) {
    let settings = Settings::from_env();
    let extra_args = match options.snapshot_count {
        0 => Vec::new(),
        n => vec!["--snapshot-count".to_string(), n.to_string()],
    };
    // Printed first, so a run that panics early still says how to replay it.
    println!(
        "faults scenario={name} seed={} seconds={} members={size} peer_tls={peer_tls} starting",
        settings.seed, settings.seconds
    );
    let env = match options.sync_delay_ms {
        0 => Vec::new(),
        ms => vec![("EMBER_FAULT_SYNC_DELAY_MS".to_string(), ms.to_string())],
    };
    let mut cluster = match peer_tls {
        true => {
            assert!(env.is_empty(), "peer TLS scenarios take no member environment");
            Cluster::start_behind_proxies_with_peer_tls(name, size, settings.seed, extra_args)
        }
        false => Cluster::start_behind_proxies_with_env(name, size, settings.seed, extra_args, env),
    };
    let sampler = Sampler::start(cluster.pids.clone());
    let all: Vec<usize> = (0..size).collect();
    cluster.find_leader(&all, LEADER_WAIT).expect("the cluster elects a leader");
    let configs: Vec<_> = all.iter().map(|&i| cluster.client_config(i)).collect();
    let recorder = Recorder::start(&configs, CLIENTS_PER_MEMBER, settings.seed, options.compact);
    let until = Instant::now() + Duration::from_secs(settings.seconds);
    let mut run = Run {
        cluster: &mut cluster,
        recorder: &recorder,
        rng: Rng::new(settings.seed),
        until,
        fault_instants_ns: Vec::new(),
    };
    faults(&mut run);
    let fault_instants_ns = std::mem::take(&mut run.fault_instants_ns);
    restore(&mut cluster);
    std::thread::sleep(SETTLE);
    let clock = recorder.start;
    let mut history = recorder.finish();
    let final_kvs = final_reads(&cluster, &mut history, clock);
    let report = check(&cluster, &history, &final_kvs);
    let recoveries = recovery_times(&history, &fault_instants_ns);
    println!(
        "faults scenario={name} seed={} ops={} unknown_writes={} acked_lost={} linearizable={}",
        settings.seed,
        history.ops.len() + history.serializable.len(),
        history.ops.iter().filter(|op| op.output == Output::Unknown).count(),
        report.acked_lost,
        report.verdict == Verdict::Linearizable
    );
    print_recoveries(name, &recoveries);
    let maxima = sampler.finish();
    println!(
        "faults scenario={name} members={size} rss_mib_max={:.1} fds_max={} samples={}",
        maxima.rss_bytes as f64 / (1024.0 * 1024.0),
        maxima.fds,
        maxima.samples
    );
    if options.compact {
        println!("faults scenario={name} compactions={}", history.compactions);
        assert!(history.compactions > 0, "the compactor never compacted");
    }
    let mut report = report;
    if options.serializable_may_regress
        && let Err(regression) = std::mem::replace(&mut report.serializable, Ok(()))
    {
        println!("faults scenario={name} serializable_regression={regression:?}");
    }
    assert_report(&cluster, &report, &recoveries, settings.seed);
    assert_eq!(bounds::check(&maxima), Ok(()), "replay with EMBER_FAULT_SEED={}", settings.seed);
}

/// Heals every link, starts every dead member and waits for one leader.
fn restore(cluster: &mut Cluster) {
    cluster.heal();
    for i in 0..cluster.members.len() {
        if !cluster.members[i].is_running() {
            cluster.spawn(i);
        }
    }
    let all: Vec<usize> = (0..cluster.members.len()).collect();
    cluster.find_leader(&all, LEADER_WAIT).expect("one leader once healed");
}

/// A linearizable read of every key, added to the history as operations.
fn final_reads(
    cluster: &Cluster,
    history: &mut History,
    clock: Instant,
) -> BTreeMap<u32, Option<Observed>> {
    let all: Vec<usize> = (0..cluster.members.len()).collect();
    let leader = cluster.find_leader(&all, LEADER_WAIT).expect("a leader for the final reads");
    let mut client = Client::connect(cluster.client_config(leader)).expect("the leader answers");
    let mut finals = BTreeMap::new();
    for key in 0..KEYS {
        let call_ns = clock.elapsed().as_nanos() as u64;
        let response =
            retry(|| client.range(RangeRequest { key: key_name(key), ..Default::default() }));
        let return_ns = clock.elapsed().as_nanos() as u64;
        let kv = response.kvs.first().map(observed);
        finals.insert(key, kv);
        history.ops.push(Operation {
            client: FINAL_CLIENT,
            key,
            call_ns,
            return_ns: Some(return_ns),
            input: Input::Get,
            output: Output::Get { kv, header_revision: response.header.revision },
        });
    }
    finals
}

fn retry<T, E: std::fmt::Debug>(mut call: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        match call() {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => panic!("no answer: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub struct Report {
    pub verdict: Verdict,
    pub acked_lost: usize,
    pub serializable: Result<(), String>,
    pub watches: Result<(), String>,
    pub keyspace: Result<(), String>,
    pub panics: Vec<String>,
}

fn check(cluster: &Cluster, history: &History, finals: &BTreeMap<u32, Option<Observed>>) -> Report {
    Report {
        verdict: check_history(&history.ops, CHECK_BUDGET),
        acked_lost: acked_lost(&history.ops, finals),
        serializable: check_serializable(&history.ops, &history.serializable),
        watches: check_watches(history),
        keyspace: same_keyspace(cluster).and_then(|()| same_hash(cluster)),
        panics: cluster.panics(),
    }
}

fn assert_report(cluster: &Cluster, report: &Report, recoveries: &[Duration], seed: u64) {
    let replay = format!("replay with EMBER_FAULT_SEED={seed}");
    assert_eq!(report.verdict, Verdict::Linearizable, "{replay}");
    assert_eq!(report.acked_lost, 0, "acknowledged writes lost; {replay}");
    assert_eq!(report.serializable, Ok(()), "{replay}");
    assert_eq!(report.watches, Ok(()), "{replay}");
    assert_eq!(report.keyspace, Ok(()), "{replay}");
    assert!(report.panics.is_empty(), "{:?}\n{}", report.panics, cluster.logs());
    let bound = recovery_bound();
    assert!(
        recoveries.iter().all(|r| *r <= bound),
        "recovery over {bound:?}: {recoveries:?}; {replay}"
    );
}

/// For each fault, the time from its start to the completion of the first
/// acknowledged write invoked after it.
fn recovery_times(history: &History, fault_instants_ns: &[u64]) -> Vec<Duration> {
    fault_instants_ns
        .iter()
        .filter_map(|&at| {
            let first = history
                .ops
                .iter()
                .filter(|op| op.call_ns >= at && op.input != Input::Get)
                .filter_map(|op| op.return_ns)
                .min()?;
            Some(Duration::from_nanos(first - at))
        })
        .collect()
}

fn print_recoveries(name: &str, recoveries: &[Duration]) {
    if recoveries.is_empty() {
        return;
    }
    let mut ms: Vec<u128> = recoveries.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    let pick = |q: usize| ms[(ms.len() - 1) * q / 100];
    let all: Vec<String> = ms.iter().map(u128::to_string).collect();
    println!(
        "faults scenario={name} recoveries={} recovery_ms_min={} recovery_ms_p50={} recovery_ms_p90={} recovery_ms_max={} recovery_ms_all={}",
        ms.len(),
        ms[0],
        pick(50),
        pick(90),
        ms[ms.len() - 1],
        all.join(",")
    );
}

/// Each watcher's events: revisions step by exactly one (every revision of
/// the run is one event on the workload's keys, so a skipped revision is a
/// gap and a repeated one a duplicate), except across a compaction cancel,
/// where only order is required; all watchers agree on each revision;
/// every put event carries a value some client wrote to that key.
fn check_watches(history: &History) -> Result<(), String> {
    let mut by_revision: BTreeMap<i64, (u32, Option<u64>)> = BTreeMap::new();
    for (w, events) in history.watches.iter().enumerate() {
        for (i, pair) in events.windows(2).enumerate() {
            let compacted = history.compaction_jumps[w].contains(&(i + 1));
            if pair[1].1 <= pair[0].1 || (pair[1].1 != pair[0].1 + 1 && !compacted) {
                return Err(format!("watcher {w}: revision {} after {}", pair[1].1, pair[0].1));
            }
        }
        for &(key, revision, value) in events {
            let entry = by_revision.entry(revision).or_insert((key, value));
            if *entry != (key, value) {
                return Err(format!("watchers disagree at revision {revision}"));
            }
            if let Some(v) = value
                && !history.ops.iter().any(|op| op.key == key && writes(op, v))
            {
                return Err(format!("watcher {w}: revision {revision} has a value never written"));
            }
        }
    }
    Ok(())
}

fn writes(op: &Operation, value: u64) -> bool {
    matches!(op.input, Input::Put { value: v } | Input::Cas { value: v, .. } if v == value)
}

/// Every member's view of the workload's keys, read locally once all report
/// the same revision, must be the same.
fn same_keyspace(cluster: &Cluster) -> Result<(), String> {
    let deadline = Instant::now() + LEADER_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let views: Vec<_> = (0..cluster.members.len()).map(|i| local_view(cluster, i)).collect();
        if let Some(Some(first)) = views.first()
            && views.iter().all(|v| v.as_ref() == Some(first))
        {
            return Ok(());
        }
        last = format!("{views:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("members disagree: {last}"))
}

/// A member's header revision and its (key, mod revision, value) triples.
type LocalView = (i64, Vec<(Vec<u8>, i64, Vec<u8>)>);

fn local_view(cluster: &Cluster, i: usize) -> Option<LocalView> {
    let mut client = Client::connect(cluster.client_config(i)).ok()?;
    let mut range_end = b"fk/".to_vec();
    *range_end.last_mut().unwrap() += 1;
    let request =
        RangeRequest { key: b"fk/".to_vec(), range_end, serializable: true, ..Default::default() };
    let response = client.range(request).ok()?;
    let kvs = response.kvs.into_iter().map(|kv| (kv.key, kv.mod_revision, kv.value)).collect();
    Some((response.header.revision, kvs))
}

/// Every member's `HashKv` at one revision (the lowest newest revision among
/// them, so all can answer) must agree, once all report the same compact
/// revision: this covers every key and version, not only the workload's.
fn same_hash(cluster: &Cluster) -> Result<(), String> {
    let deadline = Instant::now() + LEADER_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match hashes_at_one_revision(cluster) {
            Some(hashes)
                if hashes.iter().all(|h| h.compact_revision == hashes[0].compact_revision) =>
            {
                if hashes.iter().all(|h| h.hash == hashes[0].hash) {
                    return Ok(());
                }
                return Err(format!("members' keyspace hashes differ: {hashes:?}"));
            }
            other => last = format!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no keyspace hash from every member at one revision: {last}"))
}

fn hashes_at_one_revision(cluster: &Cluster) -> Option<Vec<HashKvResponse>> {
    let mut clients = Vec::new();
    for i in 0..cluster.members.len() {
        clients.push(Client::connect(cluster.client_config(i)).ok()?);
    }
    let newest: Vec<i64> = clients
        .iter_mut()
        .map(|c| c.hash_kv(0).map(|h| h.hash_revision).ok())
        .collect::<Option<_>>()?;
    let revision = *newest.iter().min()?;
    clients.iter_mut().map(|c| c.hash_kv(revision).ok()).collect()
}
