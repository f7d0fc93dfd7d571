//! What the node counts for Prometheus, and the text it answers a scrape
//! with.
//!
//! Counting is plain integers and fixed-bucket histograms owned by the
//! loop (`LoopMetrics`), bumped where the event happens: no atomics, no
//! locks, no allocation after start. Nothing is formatted until a scrape
//! asks; `Exposition` then writes Prometheus' text format 0.0.4 (`# HELP`,
//! `# TYPE`, samples with labels, histograms as cumulative `_bucket{le}`
//! series with `_sum` and `_count`) into one buffer with a size cap.
//!
//! Names, types, label names and histogram buckets are etcd's wherever the
//! node has the same thing, so dashboards and alerts built for etcd read
//! them unchanged; the series only Ember has are prefixed `ember_`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The bounds of etcd's disk histograms (`etcd_disk_wal_fsync_duration_seconds`
/// and the backend's): 1 ms doubling to about 8 s, in seconds.
pub const DISK_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// The bounds of the loop's own histograms (one iteration, one snapshot
/// slice): 50 µs doubling to about 1.6 s. An iteration is normally well
/// under a millisecond, and one past a tenth of the election timeout
/// (100 ms) already delays heartbeats, so the interesting range is low.
pub const LOOP_BUCKETS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_4, 0.000_8, 0.001_6, 0.003_2, 0.006_4, 0.012_8, 0.025_6,
    0.051_2, 0.102_4, 0.204_8, 0.409_6, 0.819_2, 1.638_4,
];

/// The bounds of etcd's `etcd_network_peer_round_trip_time_seconds`:
/// 0.1 ms doubling to about 3.3 s, in seconds.
pub const PEER_RTT_BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_2, 0.000_4, 0.000_8, 0.001_6, 0.003_2, 0.006_4, 0.012_8, 0.025_6, 0.051_2,
    0.102_4, 0.204_8, 0.409_6, 0.819_2, 1.638_4, 3.276_8,
];

/// A heartbeat unanswered for this long is forgotten unmeasured: the peer
/// is down or the message was dropped, and timing the next response
/// against it would report the outage as a round trip. Twice the highest
/// bucket, so every round trip the histogram can tell apart is kept.
pub const PEER_RTT_PROBE_EXPIRY: Duration = Duration::from_millis(6_554);

/// The most bytes one scrape's answer may take. A node serves about a
/// hundred series plus a few per peer (at most `transport::PEER_SLOTS`),
/// some 20 KiB; the cap is the guard that an answer can never grow with
/// load, only with code.
pub const SCRAPE_BYTES_MAX: usize = 256 << 10;

/// An apply slower than this is counted as slow (etcd's threshold for its
/// `etcd_server_slow_apply_total`).
pub const SLOW_APPLY: Duration = Duration::from_millis(100);

/// A histogram with fixed bucket bounds, counted in place.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending; `+Inf` is implicit.
    bounds_seconds: &'static [f64],
    /// Observations per bucket (not cumulative): `counts[i]` those at most
    /// `bounds_seconds[i]` and above the bound before. Invariant: one more
    /// entry than `bounds_seconds`, the last for those above every bound.
    counts: Vec<u64>,
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds_seconds: &'static [f64]) -> Histogram {
        debug_assert!(bounds_seconds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds_seconds,
            counts: vec![0; bounds_seconds.len() + 1],
            sum_seconds: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self.bounds_seconds.partition_point(|&bound| bound < seconds);
        self.counts[bucket] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// What the loop counts between scrapes. Counters only grow; they start
/// at zero with the process, as Prometheus expects of a restart.
#[derive(Debug, Clone)]
pub struct LoopMetrics {
    /// Times a leader other than the last one known was seen (from none
    /// to one included), as etcd counts them.
    pub leader_changes_seen_total: u64,
    /// Client writes and reads that failed without an answer from the
    /// state machine: refused at proposal, timed out, or failed by a
    /// leader change.
    pub proposals_failed_total: u64,
    /// Committed entries whose apply took longer than `SLOW_APPLY`.
    pub slow_applies_total: u64,
    /// Heartbeats the transport could not queue for a peer.
    pub heartbeat_send_failures_total: u64,
    /// Bytes of entry payloads handed to the WAL, to set its bytes written
    /// against (`ember_wal_payload_bytes_total`).
    pub wal_payload_bytes_total: u64,
    /// Applied puts, deletes and transactions (inside transactions too),
    /// and ranges served by this member (inside transactions too).
    pub puts_total: u64,
    pub deletes_total: u64,
    pub txns_total: u64,
    pub ranges_total: u64,
    pub wal_fsync: Histogram,
    pub loop_iteration: Histogram,
    pub peer_round_trips: PeerRoundTrips,
}

impl Default for LoopMetrics {
    fn default() -> LoopMetrics {
        LoopMetrics {
            leader_changes_seen_total: 0,
            proposals_failed_total: 0,
            slow_applies_total: 0,
            heartbeat_send_failures_total: 0,
            wal_payload_bytes_total: 0,
            puts_total: 0,
            deletes_total: 0,
            txns_total: 0,
            ranges_total: 0,
            wal_fsync: Histogram::new(&DISK_BUCKETS_SECONDS),
            loop_iteration: Histogram::new(&LOOP_BUCKETS_SECONDS),
            peer_round_trips: PeerRoundTrips::default(),
        }
    }
}

/// Round trips to each peer, timed from what members exchange anyway: a
/// leader's heartbeat and the follower's response to it (which leaves
/// once the follower's iteration is durable, so a slow disk shows here
/// too, as it delays the leader). One heartbeat per peer is timed at a
/// time, told by its read round; responses come back in order on the
/// peer's stream. Only a leader sends heartbeats, so only a leader has
/// samples, as only a member that probes has them in etcd.
#[derive(Debug, Clone, Default)]
pub struct PeerRoundTrips {
    /// Invariant: at most `transport::PEER_SLOTS` entries, ids unique.
    peers: Vec<PeerRoundTrip>,
}

#[derive(Debug, Clone)]
struct PeerRoundTrip {
    id: u64,
    /// The read round and send time of the heartbeat being timed.
    probe: Option<(u64, Instant)>,
    last_sent: Instant,
    histogram: Histogram,
}

impl PeerRoundTrips {
    /// A heartbeat left for `to`: timed unless one is being timed already
    /// (and not expired).
    pub fn heartbeat_sent(&mut self, to: u64, read_round: u64, now: Instant) {
        let peer = self.peer_mut(to, now);
        peer.last_sent = now;
        let timing = peer.probe.is_some_and(|(_, at)| now - at < PEER_RTT_PROBE_EXPIRY);
        if !timing {
            peer.probe = Some((read_round, now));
        }
    }

    /// A heartbeat response came from `from`: the round trip of the timed
    /// heartbeat, if it answers that one.
    pub fn heartbeat_answered(&mut self, from: u64, read_round: u64, now: Instant) {
        let Some(peer) = self.peers.iter_mut().find(|p| p.id == from) else { return };
        let Some((round, at)) = peer.probe else { return };
        if round != read_round {
            return;
        }
        peer.probe = None;
        let took = now.saturating_duration_since(at);
        if took < PEER_RTT_PROBE_EXPIRY {
            peer.histogram.observe(took);
        }
    }

    /// The histogram of each peer timed so far.
    pub fn histograms(&self) -> impl Iterator<Item = (u64, &Histogram)> {
        self.peers.iter().map(|p| (p.id, &p.histogram))
    }

    /// The entry of `id`; when the table is full, a new peer takes the
    /// entry of the one sent to least recently: a heartbeat goes to every
    /// peer each tick, so that is a member no longer in the cluster.
    fn peer_mut(&mut self, id: u64, now: Instant) -> &mut PeerRoundTrip {
        let at = match self.peers.iter().position(|p| p.id == id) {
            Some(at) => at,
            None => {
                let histogram = Histogram::new(&PEER_RTT_BUCKETS_SECONDS);
                let entry = PeerRoundTrip { id, probe: None, last_sent: now, histogram };
                if self.peers.len() < crate::transport::PEER_SLOTS {
                    self.peers.push(entry);
                    self.peers.len() - 1
                } else {
                    let oldest = (0..self.peers.len()).min_by_key(|&i| self.peers[i].last_sent);
                    let oldest = oldest.expect("a full table has entries");
                    self.peers[oldest] = entry;
                    oldest
                }
            }
        };
        &mut self.peers[at]
    }
}

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn text(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The answer to a scrape, written family by family. Each family is
/// written whole (`# HELP`, `# TYPE`, its samples) with one method call,
/// so adding a series is one line where the node lists them.
pub struct Exposition {
    text: String,
    bytes_max: usize,
}

impl Exposition {
    pub fn new(bytes_max: usize) -> Exposition {
        Exposition { text: String::new(), bytes_max }
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, Kind::Counter, &[(&[], value as f64)]);
    }

    /// A counter the system keeps in fractions (CPU seconds).
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, Kind::Counter, &[(&[], value)]);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, Kind::Gauge, &[(&[], value)]);
    }

    /// A family of one or more samples told apart by labels.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind, samples: &[(Labels<'_>, f64)]) {
        self.head(name, help, kind);
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.histograms(name, help, &[(&[], histogram)]);
    }

    /// A family of histograms told apart by labels; each bucket sample
    /// carries them before `le`.
    pub fn histograms(&mut self, name: &str, help: &str, histograms: &[(Labels<'_>, &Histogram)]) {
        self.head(name, help, Kind::Histogram);
        let bucket = format!("{name}_bucket");
        for (labels, histogram) in histograms {
            let mut cumulative = 0;
            let bounds = histogram.bounds_seconds.iter().map(|b| format_value(*b));
            let bounds = bounds.chain(std::iter::once("+Inf".to_string()));
            for (le, count) in bounds.zip(&histogram.counts) {
                cumulative += count;
                let with_le: Vec<(&str, &str)> =
                    labels.iter().copied().chain([("le", le.as_str())]).collect();
                self.sample(&bucket, &with_le, cumulative as f64);
            }
            self.sample(&format!("{name}_sum"), labels, histogram.sum_seconds);
            self.sample(&format!("{name}_count"), labels, histogram.count as f64);
        }
    }

    /// The text, or `None` when it grew past the cap.
    pub fn finish(self) -> Option<String> {
        (self.text.len() <= self.bytes_max).then_some(self.text)
    }

    fn head(&mut self, name: &str, help: &str, kind: Kind) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.text());
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        // Past the cap nothing more is written: `finish` refuses the whole.
        if self.text.len() > self.bytes_max {
            return;
        }
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (at, (label, value)) in labels.iter().enumerate() {
                let comma = if at == 0 { "" } else { "," };
                let _ = write!(self.text, "{comma}{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }
}

/// Label names and values of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A sample value as the text format spells it.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        // Rust prints the shortest decimal that reads back to the same
        // value, never with an exponent.
        format!("{value}")
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// What Linux says about this process, for the `process_` family
/// Prometheus' client libraries export.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub cpu_seconds_total: f64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self`; a file that cannot be read leaves its fields
    /// at zero (the series are then served as zero, never invented).
    pub fn read() -> ProcessStats {
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        let mut stats = parse_stat(&read("/proc/self/stat"), &read("/proc/uptime"), USER_HZ);
        stats.resident_memory_bytes = parse_rss_bytes(&read("/proc/self/status"));
        stats.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
        stats.max_fds = parse_max_fds(&read("/proc/self/limits"));
        stats
    }
}

/// Fields of `/proc/self/stat` after the command name (which may hold
/// spaces and parentheses: it ends at the last `)`), with the system's
/// uptime to turn the start time into seconds since the epoch.
fn parse_stat(stat: &str, uptime: &str, ticks_per_second: u64) -> ProcessStats {
    let mut stats = ProcessStats::default();
    let Some((_, rest)) = stat.rsplit_once(')') else { return stats };
    // After the name: state is field 3; utime 14, stime 15, starttime 22,
    // vsize 23 (man 5 proc), so index = field - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field =
        |number: usize| -> u64 { fields.get(number - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let ticks = ticks_per_second.max(1) as f64;
    stats.cpu_seconds_total = (field(14) + field(15)) as f64 / ticks;
    stats.virtual_memory_bytes = field(23);
    let uptime_seconds: f64 =
        uptime.split_whitespace().next().and_then(|u| u.parse().ok()).unwrap_or(0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now_seconds = now.map_or(0.0, |d| d.as_secs_f64());
    if uptime_seconds > 0.0 {
        let boot_seconds = now_seconds - uptime_seconds;
        stats.start_time_seconds = (boot_seconds + field(22) as f64 / ticks).floor();
    }
    stats
}

/// The soft limit of open files from `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> u64 {
    let line = limits.lines().find(|l| l.starts_with("Max open files"));
    let soft = line.and_then(|l| l["Max open files".len()..].split_whitespace().next());
    soft.and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Linux reports CPU times in USER_HZ ticks, 100 a second on every
/// architecture it runs on, whatever the kernel's own tick rate.
const USER_HZ: u64 = 100;

/// `VmRSS` of `/proc/self/status`, in bytes (the file says kB).
fn parse_rss_bytes(status: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"));
    let kib = line.and_then(|l| l["VmRSS:".len()..].split_whitespace().next());
    kib.and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let mut histogram = Histogram::new(&DISK_BUCKETS_SECONDS);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(20));
        let mut out = Exposition::new(SCRAPE_BYTES_MAX);
        out.histogram("etcd_disk_wal_fsync_duration_seconds", "Fsync latency.", &histogram);
        let text = out.finish().unwrap();
        let name = "etcd_disk_wal_fsync_duration_seconds";
        assert!(
            text.starts_with(&format!("# HELP {name} Fsync latency.\n# TYPE {name} histogram\n"))
        );
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.001\"}} 2\n")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.002\"}} 2\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"0.004\"}} 3\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"8.192\"}} 3\n")));
        assert!(text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 4\n")));
        assert!(text.contains(&format!("{name}_sum 20.0045\n")));
        assert!(text.ends_with(&format!("{name}_count 4\n")));
    }

    #[test]
    fn a_heartbeat_and_its_response_time_one_round_trip() {
        let mut trips = PeerRoundTrips::default();
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        trips.heartbeat_sent(2, 7, ms(0));
        // A second heartbeat while the first is timed is not timed.
        trips.heartbeat_sent(2, 8, ms(100));
        // Another round's response does not end the probe.
        trips.heartbeat_answered(2, 6, ms(1));
        trips.heartbeat_answered(2, 7, ms(3));
        trips.heartbeat_answered(2, 8, ms(101));
        // A heartbeat never answered expires; the next one is timed.
        trips.heartbeat_sent(2, 9, ms(200));
        trips.heartbeat_sent(2, 10, ms(200 + 6_554));
        trips.heartbeat_answered(2, 10, ms(200 + 6_554 + 20));
        let (id, histogram) = trips.histograms().next().unwrap();
        assert_eq!((id, histogram.count), (2, 2));
        assert!((histogram.sum_seconds - 0.023).abs() < 1e-9, "{}", histogram.sum_seconds);
        // A full table makes room by forgetting the peer sent to last.
        for id in 3..3 + crate::transport::PEER_SLOTS as u64 {
            trips.heartbeat_sent(id, 1, ms(10_000 + id));
        }
        assert!(trips.histograms().all(|(id, _)| id != 2));
        assert_eq!(trips.histograms().count(), crate::transport::PEER_SLOTS);

        let mut out = Exposition::new(SCRAPE_BYTES_MAX);
        let mut one = Histogram::new(&PEER_RTT_BUCKETS_SECONDS);
        one.observe(Duration::from_millis(1));
        let labels: Labels<'_> = &[("To", "2")];
        out.histograms("etcd_network_peer_round_trip_time_seconds", "RTT.", &[(labels, &one)]);
        let text = out.finish().unwrap();
        let name = "etcd_network_peer_round_trip_time_seconds";
        assert!(text.contains(&format!("{name}_bucket{{To=\"2\",le=\"0.0008\"}} 0\n")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{To=\"2\",le=\"0.0016\"}} 1\n")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{To=\"2\",le=\"+Inf\"}} 1\n")), "{text}");
        assert!(text.ends_with(&format!("{name}_count{{To=\"2\"}} 1\n")), "{text}");
    }

    #[test]
    fn samples_carry_escaped_labels_and_plain_values() {
        let mut out = Exposition::new(SCRAPE_BYTES_MAX);
        out.counter("etcd_mvcc_put_total", "Puts.", 7);
        out.gauge("ember_ratio", "A ratio.", 1.5);
        let labels: Labels<'_> = &[("server_id", "a\"b\\c\nd")];
        out.family("etcd_server_id", "Id.", Kind::Gauge, &[(labels, 1.0)]);
        let text = out.finish().unwrap();
        assert!(text.contains("# TYPE etcd_mvcc_put_total counter\netcd_mvcc_put_total 7\n"));
        assert!(text.contains("ember_ratio 1.5\n"));
        assert!(text.contains("etcd_server_id{server_id=\"a\\\"b\\\\c\\nd\"} 1\n"), "{text}");
    }

    #[test]
    fn an_answer_past_its_cap_is_refused_whole() {
        let mut out = Exposition::new(64);
        out.counter("a_total", "A counter with a long help text to pass the cap.", 1);
        out.counter("b_total", "B.", 1);
        assert_eq!(out.finish(), None);
    }

    #[test]
    fn proc_stat_fields_are_read_past_a_name_with_spaces() {
        // pid (comm) state ppid ... utime=14 stime=15 ... starttime=22 vsize=23
        let mut fields = vec!["0"; 50];
        fields[14 - 3] = "250";
        fields[15 - 3] = "50";
        fields[22 - 3] = "1000";
        fields[23 - 3] = "8192000";
        let stat = format!("42 (ember (x) y) {}", fields.join(" "));
        let stats = parse_stat(&stat, "5000.5 100.0", 100);
        assert_eq!(stats.cpu_seconds_total, 3.0);
        assert_eq!(stats.virtual_memory_bytes, 8_192_000);
        assert!(stats.start_time_seconds > 1.0e9);
        assert_eq!(parse_stat("garbage", "", 100), ProcessStats::default());
        assert_eq!(parse_rss_bytes("Name:\tember\nVmRSS:\t  5120 kB\n"), 5120 * 1024);
        let limits = "Limit  Soft Limit  Hard Limit  Units\nMax open files  1024  4096  files\n";
        assert_eq!(parse_max_fds(limits), 1024);
    }
}
