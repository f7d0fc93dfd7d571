//! The node's answers to HTTP: the probes (`/health`, `/livez`,
//! `/readyz`) and the metrics scrape (`/metrics`), from the node's state
//! as it is when the request is read.
//!
//! A scrape's answer is built once per request, within
//! `metrics::SCRAPE_BYTES_MAX`, from counters the loop keeps anyway and
//! from what Raft, the WAL, the store and the client port report through
//! their accessors; nothing here changes state.

use super::clients::{Clients, HttpAsk};
use super::metrics::{Exposition, Kind, Labels, ProcessStats, SCRAPE_BYTES_MAX};
use super::node::{Node, data_size_bytes};
use crate::proto::ErrorCode;
use crate::proto::http::UnhealthyReason;
use crate::proto::http::{self, Check, CheckName, CheckSet, Health, READYZ_CHECKS, Route};
use crate::raft::Role;

/// How far the applied index may trail the commit index this member knows
/// before `/readyz` says it has not caught up: a few seconds of writes at
/// a board's pace. A member replaying a long log after a restart, or
/// behind by a snapshot, is past it; one applying its last batch is not.
pub const READY_APPLY_LAG_ENTRIES_MAX: u64 = 5_000;

impl Node {
    /// Answers every HTTP request read in this event, on the client port
    /// and on the metrics ports.
    pub(super) fn answer_http_asks(&mut self) {
        for asked in self.clients.take_http_asks() {
            let answer = self.http_answer(asked);
            self.clients.answer_http(asked, &answer);
        }
        let asks = self.metrics_port.as_mut().map(Clients::take_http_asks).unwrap_or_default();
        for asked in asks {
            let answer = self.http_answer(asked);
            if let Some(port) = self.metrics_port.as_mut() {
                port.answer_http(asked, &answer);
            }
        }
    }

    fn http_answer(&self, asked: HttpAsk) -> Vec<u8> {
        let head_only = asked.ask.head_only;
        let mut out = Vec::new();
        match asked.ask.route {
            Route::Health { serializable } => {
                let health = if serializable { self.health_serializable() } else { self.health() };
                http::write_health(health, head_only, &mut out);
            }
            Route::Livez { verbose, checks } | Route::Readyz { verbose, checks } => {
                http::write_checks(&self.checks(checks), verbose, head_only, &mut out);
            }
            Route::Metrics => {
                let text = self.render_metrics();
                http::write_metrics(text.as_deref().map(str::as_bytes), head_only, &mut out);
            }
            Route::MethodNotAllowed | Route::NotFound => http::write_refusal(asked.ask, &mut out),
        }
        out
    }

    /// `/health?serializable=true`: as `/health`, except that a member
    /// without a leader still serves serializable reads.
    fn health_serializable(&self) -> Health {
        match self.health() {
            Health::Unhealthy(UnhealthyReason::NoLeader) => Health::Healthy,
            health => health,
        }
    }

    /// `/livez` and `/readyz`: etcd's checks, those asked for, in
    /// `READYZ_CHECKS` order. A check fails with the error a request of
    /// its kind would get here, or with the alarm that fails it.
    fn checks(&self, asked: CheckSet) -> Vec<Check> {
        let run = READYZ_CHECKS.iter().filter(|c| asked.contains(**c));
        run.map(|&name| Check { name, failure: self.check_failure(name) }).collect()
    }

    fn check_failure(&self, name: CheckName) -> Option<&'static str> {
        let stopped = self.stopping.then_some(ErrorCode::Stopped.message());
        match name {
            // Only this member's CORRUPT fails it, where etcd fails on any
            // member's: here the corruption check names the member whose
            // data differs, that member alone refuses keyspace requests,
            // and the others serve the majority's data, so a readiness
            // probe keeps them in service. NOSPACE fails no check (reads
            // go on), as etcd's.
            CheckName::DataCorruption => self.is_corrupt().then_some("alarm activated: CORRUPT"),
            CheckName::SerializableRead => stopped,
            CheckName::LinearizableRead if stopped.is_some() => stopped,
            CheckName::LinearizableRead if self.leader_id == 0 => {
                Some(ErrorCode::NoLeader.message())
            }
            CheckName::LinearizableRead => (self.apply_lag_entries() > READY_APPLY_LAG_ENTRIES_MAX)
                .then_some("applied index far behind the commit index"),
            CheckName::NonLearner => self
                .raft
                .conf_state()
                .learners
                .contains(&self.config.member_id)
                .then_some("not supported for learner"),
        }
    }

    fn apply_lag_entries(&self) -> u64 {
        self.raft.status().commit.saturating_sub(self.state.applied_index())
    }

    /// The exposition of every series, or `None` past the size cap.
    pub(super) fn render_metrics(&self) -> Option<String> {
        let mut out = Exposition::new(SCRAPE_BYTES_MAX);
        self.render_server(&mut out);
        self.render_disk(&mut out);
        self.render_store(&mut out);
        self.render_network(&mut out);
        self.render_loop(&mut out);
        self.render_space(&mut out);
        render_process(&mut out);
        out.finish()
    }

    fn render_server(&self, out: &mut Exposition) {
        let status = self.raft.status();
        let m = &self.metrics;
        let is_leader = status.role == Role::Leader;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        out.gauge(
            "etcd_server_has_leader",
            "Whether a leader is known (1) or not (0).",
            flag(self.leader_id != 0),
        );
        out.gauge(
            "etcd_server_is_leader",
            "Whether this member is the leader (1) or not (0).",
            flag(is_leader),
        );
        out.counter(
            "etcd_server_leader_changes_seen_total",
            "Times this member saw a new leader.",
            m.leader_changes_seen_total,
        );
        out.gauge(
            "etcd_server_proposals_committed_total",
            "The Raft commit index this member knows.",
            status.commit as f64,
        );
        out.gauge(
            "etcd_server_proposals_applied_total",
            "The index of the last entry this member applied.",
            self.state.applied_index() as f64,
        );
        out.gauge(
            "etcd_server_proposals_pending",
            "Client writes and reads waiting for Raft on this member.",
            self.proposals.pending_count() as f64,
        );
        out.counter(
            "etcd_server_proposals_failed_total",
            "Client requests that failed in Raft: refused, timed out or cut by a leader change.",
            m.proposals_failed_total,
        );
        out.counter(
            "etcd_server_slow_apply_total",
            "Committed entries whose apply took longer than 100 ms.",
            m.slow_applies_total,
        );
        out.gauge(
            "etcd_server_snapshot_apply_in_progress_total",
            "Whether a snapshot from the leader is being received or applied (1) or not (0).",
            flag(self.inbox.in_progress()),
        );
        out.counter(
            "etcd_server_heartbeat_send_failures_total",
            "Heartbeats the transport could not queue for a peer.",
            m.heartbeat_send_failures_total,
        );
        let id = format!("{:x}", self.config.member_id);
        out.family(
            "etcd_server_id",
            "The id of this member, as a label.",
            Kind::Gauge,
            &[(&[("server_id", &id)], 1.0)],
        );
        let version = self.version.to_string();
        out.family(
            "etcd_server_version",
            "The version of Ember this member runs, as a label.",
            Kind::Gauge,
            &[(&[("server_version", &version)], 1.0)],
        );
        // No series until the cluster version is decided, as etcd does.
        let cluster_version = self.state.cluster_version().map(|v| v.release_text());
        let labels = cluster_version.as_deref().map(|v| [("cluster_version", v)]);
        let samples: Vec<(Labels<'_>, f64)> = labels.iter().map(|l| (l.as_slice(), 1.0)).collect();
        out.family(
            "etcd_cluster_version",
            "The cluster version every member has published at least (major.minor), as a label.",
            Kind::Gauge,
            &samples,
        );
    }

    fn render_disk(&self, out: &mut Exposition) {
        let wal = &self.raft.storage().wal;
        let m = &self.metrics;
        out.histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "Time each WAL sync took.",
            &m.wal_fsync,
        );
        out.gauge(
            "etcd_disk_wal_write_bytes_total",
            "Bytes of WAL records written since start, pads and seals included.",
            wal.written_bytes_total() as f64,
        );
        out.counter(
            "ember_wal_payload_bytes_total",
            "Bytes of entry payloads handed to the WAL since start.",
            m.wal_payload_bytes_total,
        );
        let per_payload_byte = if m.wal_payload_bytes_total == 0 {
            0.0
        } else {
            wal.written_bytes_total() as f64 / m.wal_payload_bytes_total as f64
        };
        out.gauge(
            "ember_wal_write_bytes_per_payload_byte",
            "WAL bytes written per payload byte since start (0 before the first entry).",
            per_payload_byte,
        );
        out.gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Bytes of the WAL and snapshot files, spare segments included.",
            data_size_bytes(&self.config.data_dir) as f64,
        );
    }

    fn render_store(&self, out: &mut Exposition) {
        let m = &self.metrics;
        let store = self.state.store();
        let clients = self.clients.gauges(store.current_revision());
        out.gauge(
            "etcd_debugging_mvcc_keys_total",
            "Keys the store holds, deleted ones included until compaction drops their history.",
            store.key_count() as f64,
        );
        out.counter("etcd_mvcc_put_total", "Puts applied, inside transactions too.", m.puts_total);
        out.counter(
            "etcd_mvcc_delete_total",
            "Deletes applied, inside transactions too.",
            m.deletes_total,
        );
        out.counter("etcd_mvcc_txn_total", "Transactions applied.", m.txns_total);
        out.counter(
            "etcd_mvcc_range_total",
            "Ranges served by this member, inside applied transactions too.",
            m.ranges_total,
        );
        out.gauge(
            "etcd_debugging_mvcc_watcher_total",
            "Watches open on this member.",
            clients.watchers as f64,
        );
        out.gauge(
            "etcd_debugging_mvcc_slow_watcher_total",
            "Watches with events not sent yet.",
            clients.watchers_behind as f64,
        );
        out.gauge(
            "ember_client_connections",
            "Client connections open.",
            clients.connections as f64,
        );
        out.gauge(
            "ember_client_connections_max",
            "The client connection cap.",
            clients.connections_max as f64,
        );
        out.gauge(
            "ember_client_memory_in_use_bytes",
            "Bytes the client connections hold against their memory budget.",
            clients.memory_in_use_bytes as f64,
        );
        out.gauge(
            "ember_client_memory_max_bytes",
            "The client connections' memory budget.",
            clients.memory_max_bytes as f64,
        );
        out.counter(
            "ember_client_slow_reader_cutoffs_total",
            "Connections whose watches were cancelled because they stopped reading.",
            clients.slow_reader_cutoffs_total,
        );
        out.family(
            "ember_client_refusals_total",
            "Client connections refused at the cap, and requests refused while the memory budget was spent.",
            Kind::Counter,
            &[
                (&[("reason", "connections_max")], clients.connections_refused_total as f64),
                (&[("reason", "memory_budget")], clients.requests_refused_total as f64),
            ],
        );
    }

    fn render_network(&self, out: &mut Exposition) {
        let transport = self.peers.transport();
        let mut sent = Vec::new();
        let mut received = Vec::new();
        for id in transport.peer_ids() {
            let Some(status) = transport.peer_status(id) else { continue };
            sent.push((format!("{id:x}"), status.sent_bytes_total));
            received.push((format!("{id:x}"), status.received_bytes_total));
        }
        let sent: Vec<_> = sent.iter().map(|(id, v)| ([("To", id.as_str())], *v as f64)).collect();
        let sent: Vec<_> = sent.iter().map(|(labels, v)| (&labels[..], *v)).collect();
        out.family(
            "etcd_network_peer_sent_bytes_total",
            "Bytes sent to each peer.",
            Kind::Counter,
            &sent,
        );
        let received: Vec<_> =
            received.iter().map(|(id, v)| ([("From", id.as_str())], *v as f64)).collect();
        let received: Vec<_> = received.iter().map(|(labels, v)| (&labels[..], *v)).collect();
        out.family(
            "etcd_network_peer_received_bytes_total",
            "Bytes received from each peer.",
            Kind::Counter,
            &received,
        );
        let peers = transport.peer_ids();
        let trips = self.metrics.peer_round_trips.histograms();
        let trips: Vec<_> = trips.filter(|(id, _)| peers.contains(id)).collect();
        let ids: Vec<String> = trips.iter().map(|(id, _)| format!("{id:x}")).collect();
        let labels: Vec<[(&str, &str); 1]> = ids.iter().map(|id| [("To", id.as_str())]).collect();
        let trips: Vec<_> = labels.iter().zip(&trips).map(|(l, (_, h))| (&l[..], *h)).collect();
        out.histograms(
            "etcd_network_peer_round_trip_time_seconds",
            "Time from a leader's heartbeat to a peer to the peer's response, the response \
             leaving once the peer's iteration is durable.",
            &trips,
        );
    }

    fn render_loop(&self, out: &mut Exposition) {
        out.histogram(
            "ember_loop_iteration_duration_seconds",
            "Time each loop iteration took, from the end of the poll to the end of the iteration.",
            &self.metrics.loop_iteration,
        );
        out.histogram(
            "ember_snapshot_slice_duration_seconds",
            "Time each slice of a snapshot image held the loop.",
            self.snapshots.slice_time(),
        );
        out.counter(
            "ember_write_batch_holds_total",
            "Batches of writes held after a slow sync for the clients it answered.",
            self.gather.holds_total(),
        );
    }
}

impl Node {
    /// The space quota as the state machine applies it, and the alarms
    /// raised: what `alarm list` says, one sample per raised alarm.
    fn render_space(&self, out: &mut Exposition) {
        let usage = self.state.usage();
        out.gauge(
            "etcd_server_quota_backend_bytes",
            "The space quota in force (--quota-backend-bytes, as the leader proposed it).",
            usage.quota_bytes() as f64,
        );
        out.gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "The store's size as the space quota counts it: live data, history kept, leases.",
            usage.size_bytes() as f64,
        );
        let raised: Vec<(String, &str)> = (self.state.alarms().records().iter())
            .map(|a| (format!("{:x}", a.member_id), a.kind.name()))
            .collect();
        let samples: Vec<([(&str, &str); 2], f64)> = raised
            .iter()
            .map(|(member, alarm)| ([("member_id", member.as_str()), ("alarm", *alarm)], 1.0))
            .collect();
        let samples: Vec<_> = samples.iter().map(|(labels, v)| (&labels[..], *v)).collect();
        out.family(
            "ember_server_alarm_active",
            "1 for each alarm raised in the cluster, by member (in hex) and kind.",
            Kind::Gauge,
            &samples,
        );
    }
}

fn render_process(out: &mut Exposition) {
    let p = ProcessStats::read();
    out.counter_f64(
        "process_cpu_seconds_total",
        "User and system CPU time the process spent, in seconds.",
        p.cpu_seconds_total,
    );
    out.gauge(
        "process_resident_memory_bytes",
        "Resident memory of the process.",
        p.resident_memory_bytes as f64,
    );
    out.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory of the process.",
        p.virtual_memory_bytes as f64,
    );
    out.gauge("process_open_fds", "File descriptors the process holds open.", p.open_fds as f64);
    out.gauge("process_max_fds", "The process' limit of open file descriptors.", p.max_fds as f64);
    out.gauge(
        "process_start_time_seconds",
        "When the process started, in seconds since the epoch.",
        p.start_time_seconds,
    );
}
