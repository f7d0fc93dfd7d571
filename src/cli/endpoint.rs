//! `ember endpoint status`, `health` and `hashkv`: each endpoint of
//! `--endpoints` asked on its own, as etcdctl does.
//!
//! `status` prints one line (or JSON object, or table row) per endpoint that
//! answered and names the others on stderr; `health` reads a key with a
//! linearizable range, which needs a leader and a quorum, and times it;
//! `hashkv` prints each member's keyspace hash at `--rev` (0: each member's
//! newest), so members can be compared at one revision. Each exits 1 when
//! any endpoint failed.

use std::time::Instant;

use super::CliError;
use super::format::{self, Format, JsonObject, json_header};
use super::output::{client_config, failed, flag_number, go_duration, json_string, si_bytes};
use crate::client::{Client, ClientError, Config, parse_endpoint};
use crate::flags::{Flag, Parsed, no_env};
use crate::proto::{ErrorCode, HashKvResponse, RangeRequest, StatusResponse};

pub const ENDPOINT_FLAGS: &[Flag] = &[
    Flag {
        name: "cluster",
        takes_value: false,
        help: "ask every member the cluster lists (with a client address), and --endpoints",
    },
    Flag { name: "rev", takes_value: true, help: "hashkv: hash at this revision (0: the newest)" },
];

/// The key `health` reads, as etcdctl's health check does.
const HEALTH_KEY: &[u8] = b"health";

pub fn run_endpoint(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format(parsed)?;
    let mut config = client_config(parsed)?;
    let what = match parsed.positionals.as_slice() {
        [what] if ["status", "health", "hashkv"].contains(&what.as_str()) => what.as_str(),
        _ => {
            return Err(CliError::Usage(
                "endpoint takes 'status', 'health' or 'hashkv'".to_string(),
            ));
        }
    };
    let revision: i64 = flag_number(parsed, "rev", 0)?;
    if revision < 0 {
        return Err(CliError::Usage("--rev must not be negative".to_string()));
    }
    if what == "health" && format == Format::Fields {
        // etcdctl has no fields form of health either.
        return Err(CliError::Usage(
            "endpoint health is not supported in fields format".to_string(),
        ));
    }
    let mut unlisted = Vec::new();
    if parsed.switch("cluster", no_env)? {
        (config.endpoints, unlisted) = cluster_endpoints(&config)?;
    }
    match what {
        "status" => status(&config, format, &unlisted),
        "hashkv" => hashkv(&config, format, &unlisted, revision),
        _ => health(&config, format, &unlisted),
    }
}

/// A member that lists no client address: its name and id.
type Unlisted = (String, u64);

/// The members of `unlisted` that none of `reached` (member ids) is; each
/// is named on stderr.
fn unreached(unlisted: &[Unlisted], reached: &[u64]) -> Vec<String> {
    let missing: Vec<&Unlisted> = unlisted.iter().filter(|(_, id)| !reached.contains(id)).collect();
    for (name, id) in &missing {
        eprintln!(
            "ember: member {name} ({id:x}) not reached: it lists no client address; \
             add its address to --endpoints"
        );
    }
    missing.into_iter().map(|(name, _)| format!("member {name}")).collect()
}

/// The client addresses of every member as the cluster lists them, then
/// those of `--endpoints` not among them, and the members that list no
/// client address (a member may know only its own): those are reached only
/// through an address given in `--endpoints`.
fn cluster_endpoints(config: &Config) -> Result<(Vec<String>, Vec<Unlisted>), CliError> {
    let mut client = Client::connect(config.clone()).map_err(failed)?;
    // The member's own view: a cluster without a leader is what one checks.
    let members = client.member_list(false).map_err(failed)?.members;
    let mut endpoints: Vec<String> = Vec::new();
    let mut unlisted = Vec::new();
    for member in &members {
        if member.client_urls.is_empty() {
            unlisted.push((member.name.clone(), member.id));
        }
        for url in &member.client_urls {
            endpoints.push(parse_endpoint(url).map_err(failed)?);
        }
    }
    endpoints.extend(config.endpoints.iter().cloned());
    let mut seen = Vec::new();
    endpoints.retain(|e| {
        let fresh = !seen.contains(e);
        seen.push(e.clone());
        fresh
    });
    Ok((endpoints, unlisted))
}

/// Every member's client address as the cluster lists them, then those of
/// `--endpoints` not among them (`--cluster` of other commands).
pub(crate) fn cluster_client_urls(config: &Config) -> Result<Vec<String>, CliError> {
    let (endpoints, unlisted) = cluster_endpoints(config)?;
    for (name, id) in &unlisted {
        eprintln!("ember: member {name} ({id:x}) lists no client address; it is skipped");
    }
    Ok(endpoints)
}

/// A client for one endpoint of the list, with the list's timeouts.
fn one_endpoint(config: &Config, endpoint: &str) -> Result<Client, ClientError> {
    let mut single = config.clone();
    single.endpoints = vec![endpoint.to_string()];
    Client::connect(single)
}

/// Why one endpoint failed, without repeating its address.
fn cause(error: &ClientError) -> String {
    match error {
        ClientError::Unreachable { tried } if tried.len() == 1 => tried[0].reason.clone(),
        other => other.to_string(),
    }
}

fn status(config: &Config, format: Format, unlisted: &[Unlisted]) -> Result<(), CliError> {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for endpoint in &config.endpoints {
        match one_endpoint(config, endpoint).and_then(|mut client| client.status()) {
            Ok(status) => rows.push((endpoint.as_str(), status)),
            Err(error) => {
                let cause = cause(&error);
                eprintln!("ember: failed to get the status of endpoint {endpoint}: {cause}");
                failures.push(endpoint.to_string());
            }
        }
    }
    let reached: Vec<u64> = rows.iter().map(|(_, s)| s.header.member_id).collect();
    failures.extend(unreached(unlisted, &reached));
    match format {
        Format::Json => println!("{}", status_json(&rows)),
        Format::Table => print!("{}", status_table(&rows)),
        Format::Fields => print!("{}", status_fields(&rows)),
        Format::Simple => rows.iter().for_each(|(e, s)| println!("{}", status_line(e, s))),
    }
    finish(&failures, "could not get the status of")
}

fn finish(failures: &[String], what: &str) -> Result<(), CliError> {
    if failures.is_empty() {
        return Ok(());
    }
    Err(CliError::Failed(format!("{what} {}", failures.join(", "))))
}

/// The columns of `status`, in etcdctl's order with the cluster version
/// added after the version, and revision and leader id before the errors.
const STATUS_COLUMNS: [&str; 13] = [
    "ENDPOINT",
    "ID",
    "VERSION",
    "CLUSTER VERSION",
    "DB SIZE",
    "IS LEADER",
    "IS LEARNER",
    "RAFT TERM",
    "RAFT INDEX",
    "RAFT APPLIED INDEX",
    "REVISION",
    "LEADER ID",
    "ERRORS",
];

/// How a cluster version not decided yet is shown, in etcd's word.
const NOT_DECIDED: &str = "not_decided";

fn cluster_version(status: &StatusResponse) -> &str {
    match status.cluster_version.as_str() {
        "" => NOT_DECIDED,
        decided => decided,
    }
}

fn status_cells(endpoint: &str, status: &StatusResponse) -> [String; 13] {
    [
        endpoint.to_string(),
        format!("{:x}", status.header.member_id),
        status.version.clone(),
        cluster_version(status).to_string(),
        si_bytes(status.data_size_bytes),
        is_leader(status).to_string(),
        status.is_learner.to_string(),
        status.raft_term.to_string(),
        status.raft_commit_index.to_string(),
        status.raft_applied_index.to_string(),
        status.header.revision.to_string(),
        format!("{:x}", status.leader_id),
        status.errors.join(", "),
    ]
}

fn is_leader(status: &StatusResponse) -> bool {
    status.leader_id != 0 && status.leader_id == status.header.member_id
}

pub(crate) fn status_line(endpoint: &str, status: &StatusResponse) -> String {
    status_cells(endpoint, status).join(", ")
}

/// One JSON array as etcdctl 3.4 writes it: per endpoint `Endpoint` and
/// the `Status` in etcd's field names and order, zero fields left out.
/// etcd's `dbSizeInUse` is not written: Ember does not tell the space its
/// data uses from the space its files take. A member's compact revision,
/// which etcd's status does not carry, is in `endpoint hashkv`'s answer.
/// The cluster version, which etcd's status does not carry either, is in
/// the simple and table outputs only: this is etcdctl's JSON, byte for byte.
pub(crate) fn status_json(rows: &[(&str, StatusResponse)]) -> String {
    let objects: Vec<String> = rows
        .iter()
        .map(|(endpoint, s)| {
            let errors: Vec<String> = s.errors.iter().map(|e| json_string(e)).collect();
            let status = JsonObject::default()
                .raw("header", json_header(&s.header))
                .raw("version", json_string(&s.version))
                .int("dbSize", s.data_size_bytes.into())
                .int("leader", s.leader_id.into())
                .int("raftIndex", s.raft_commit_index.into())
                .int("raftTerm", s.raft_term.into())
                .int("raftAppliedIndex", s.raft_applied_index.into())
                .list("errors", errors)
                .flag("isLearner", s.is_learner)
                .finish();
            JsonObject::default()
                .raw("Endpoint", json_string(endpoint))
                .raw("Status", status)
                .finish()
        })
        .collect();
    format!("[{}]", objects.join(","))
}

/// `"Name" : value` lines per endpoint, a blank line after each.
fn status_fields(rows: &[(&str, StatusResponse)]) -> String {
    let mut out = String::new();
    for (endpoint, s) in rows {
        let h = &s.header;
        out.push_str(&format!(
            "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
            h.cluster_id, h.member_id, h.revision, h.raft_term
        ));
        out.push_str(&format!(
            "\"Version\" : {}\n\"DBSize\" : {}\n\"Leader\" : {}\n\"IsLearner\" : {}\n\
             \"RaftIndex\" : {}\n\"RaftTerm\" : {}\n\"RaftAppliedIndex\" : {}\n\"Errors\" : {:?}\n\
             \"Endpoint\" : {}\n\n",
            json_string(&s.version),
            s.data_size_bytes,
            s.leader_id,
            s.is_learner,
            s.raft_commit_index,
            s.raft_term,
            s.raft_applied_index,
            s.errors,
            json_string(endpoint),
        ));
    }
    out
}

fn status_table(rows: &[(&str, StatusResponse)]) -> String {
    let cells: Vec<[String; 13]> = rows.iter().map(|(e, s)| status_cells(e, s)).collect();
    let header = STATUS_COLUMNS.map(str::to_string);
    table(&header, &cells)
}

/// An ASCII table like etcdctl's `-w table`.
fn table<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let rule: String =
        widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let line = |row: &[String; N]| {
        let cells: String =
            row.iter().zip(&widths).map(|(cell, w)| format!("| {cell:^w$} ", w = *w)).collect();
        cells + "|\n"
    };
    let mut text = rule.clone() + &line(header) + &rule;
    for row in rows {
        text.push_str(&line(row));
    }
    text + &rule
}

/// One endpoint's health: how long the check took, or why it failed.
struct Health {
    endpoint: String,
    /// The member that answered the connection, when one did.
    member_id: Option<u64>,
    took: std::time::Duration,
    error: Option<String>,
}

fn check_health(config: &Config, endpoint: &str) -> Health {
    let started = Instant::now();
    let (member_id, error) = match one_endpoint(config, endpoint) {
        Ok(mut client) => (client.member_id(), probe(&mut client).err()),
        Err(error) => (None, Some(cause(&error))),
    };
    Health { endpoint: endpoint.to_string(), member_id, took: started.elapsed(), error }
}

/// A linearizable read (it needs a leader and a quorum), then the member's
/// alarms, which make it unhealthy too.
fn probe(client: &mut Client) -> Result<(), String> {
    let request = RangeRequest { key: HEALTH_KEY.to_vec(), ..RangeRequest::default() };
    match client.range(request) {
        Ok(_) => {}
        // With access control on, a read refused for want of a token or a
        // right is refused after its ReadIndex round: the quorum answered.
        Err(error)
            if matches!(
                error.code(),
                Some(ErrorCode::PermissionDenied | ErrorCode::InvalidAuthToken)
            ) => {}
        Err(error) => return Err(error.to_string()),
    }
    let status = client.status().map_err(|error| error.to_string())?;
    if !status.errors.is_empty() {
        return Err(format!("active alarm(s): {}", status.errors.join(", ")));
    }
    Ok(())
}

fn health(config: &Config, format: Format, unlisted: &[Unlisted]) -> Result<(), CliError> {
    let checks: Vec<Health> = config.endpoints.iter().map(|e| check_health(config, e)).collect();
    match format {
        Format::Json => println!("{}", health_json(&checks)),
        Format::Table => print!("{}", health_table(&checks)),
        _ => checks.iter().for_each(print_health),
    }
    let mut failures: Vec<String> =
        checks.iter().filter(|c| c.error.is_some()).map(|c| c.endpoint.clone()).collect();
    let reached: Vec<u64> = checks.iter().filter_map(|c| c.member_id).collect();
    failures.extend(unreached(unlisted, &reached));
    finish(&failures, "unhealthy cluster:")
}

fn health_table(checks: &[Health]) -> String {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            let error = c.error.clone().unwrap_or_default();
            vec![c.endpoint.clone(), c.error.is_none().to_string(), go_duration(c.took), error]
        })
        .collect();
    format::table(&["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &rows)
}

fn print_health(check: &Health) {
    let took = go_duration(check.took);
    match &check.error {
        None => println!(
            "{} is healthy: successfully committed proposal: took = {took}",
            check.endpoint
        ),
        Some(error) => eprintln!(
            "{} is unhealthy: failed to commit proposal: {error} (took = {took})",
            check.endpoint
        ),
    }
}

fn health_json(checks: &[Health]) -> String {
    let objects: Vec<String> = checks
        .iter()
        .map(|check| {
            let error = match &check.error {
                Some(error) => format!(",\"error\":{}", json_string(error)),
                None => String::new(),
            };
            format!(
                "{{\"endpoint\":{},\"health\":{},\"took\":{}{error}}}",
                json_string(&check.endpoint),
                check.error.is_none(),
                json_string(&go_duration(check.took)),
            )
        })
        .collect();
    format!("[{}]", objects.join(","))
}

fn hashkv(
    config: &Config,
    format: Format,
    unlisted: &[Unlisted],
    revision: i64,
) -> Result<(), CliError> {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for endpoint in &config.endpoints {
        match one_endpoint(config, endpoint).and_then(|mut client| client.hash_kv(revision)) {
            Ok(hash) => rows.push((endpoint.as_str(), hash)),
            Err(error) => {
                let cause = cause(&error);
                eprintln!("ember: failed to get the hash of endpoint {endpoint}: {cause}");
                failures.push(endpoint.to_string());
            }
        }
    }
    let reached: Vec<u64> = rows.iter().map(|(_, h)| h.header.member_id).collect();
    failures.extend(unreached(unlisted, &reached));
    print!("{}", hashkv_text(&rows, format));
    finish(&failures, "could not get the hash of")
}

/// etcdctl's columns (endpoint, hash), then the revision the hash covers and
/// the member's compact revision: a hash means little without them.
const HASHKV_COLUMNS: [&str; 4] = ["ENDPOINT", "HASH", "HASH REVISION", "COMPACT REVISION"];

fn hashkv_cells(endpoint: &str, h: &HashKvResponse) -> Vec<String> {
    vec![
        endpoint.to_string(),
        h.hash.to_string(),
        h.hash_revision.to_string(),
        h.compact_revision.to_string(),
    ]
}

/// The answers of `hashkv` in one output format, newline-terminated.
pub(crate) fn hashkv_text(rows: &[(&str, HashKvResponse)], format: Format) -> String {
    match format {
        Format::Json => hashkv_json(rows) + "\n",
        Format::Table => {
            let cells: Vec<Vec<String>> = rows.iter().map(|(e, h)| hashkv_cells(e, h)).collect();
            format::table(&HASHKV_COLUMNS, &cells)
        }
        Format::Fields => hashkv_fields(rows),
        Format::Simple => rows.iter().map(|(e, h)| hashkv_cells(e, h).join(", ") + "\n").collect(),
    }
}

/// One JSON array as etcdctl 3.4 writes it: per endpoint `Endpoint` and
/// the `HashKV` answer in etcd's field names. The hash revision, which
/// etcd 3.4's answer does not carry, is in the table and simple formats.
fn hashkv_json(rows: &[(&str, HashKvResponse)]) -> String {
    let objects: Vec<String> = rows
        .iter()
        .map(|(endpoint, h)| {
            let answer = JsonObject::default()
                .raw("header", json_header(&h.header))
                .int("hash", h.hash.into())
                .int("compact_revision", h.compact_revision.into())
                .finish();
            JsonObject::default()
                .raw("Endpoint", json_string(endpoint))
                .raw("HashKV", answer)
                .finish()
        })
        .collect();
    format!("[{}]", objects.join(","))
}

/// `"Name" : value` lines per endpoint, a blank line after each.
fn hashkv_fields(rows: &[(&str, HashKvResponse)]) -> String {
    let mut out = String::new();
    for (endpoint, h) in rows {
        let head = &h.header;
        out.push_str(&format!(
            "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
            head.cluster_id, head.member_id, head.revision, head.raft_term
        ));
        out.push_str(&format!(
            "\"Endpoint\" : {}\n\"Hash\" : {}\n\"HashRevision\" : {}\n\"CompactRevision\" : {}\n\n",
            json_string(endpoint),
            h.hash,
            h.hash_revision,
            h.compact_revision,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ResponseHeader;

    fn rows() -> Vec<(&'static str, HashKvResponse)> {
        let header = ResponseHeader { cluster_id: 7, member_id: 9, revision: 12, raft_term: 3 };
        let answer =
            HashKvResponse { header, hash: 3_735_928_559, compact_revision: 4, hash_revision: 10 };
        vec![("127.0.0.1:2379", answer)]
    }

    #[test]
    fn hashkv_prints_every_format() {
        let rows = rows();
        assert_eq!(hashkv_text(&rows, Format::Simple), "127.0.0.1:2379, 3735928559, 10, 4\n");
        let json = hashkv_text(&rows, Format::Json);
        assert!(json.starts_with("[{\"Endpoint\":\"127.0.0.1:2379\",\"HashKV\":{\"header\":"));
        assert!(json.ends_with("\"hash\":3735928559,\"compact_revision\":4}}]\n"));
        let fields = hashkv_text(&rows, Format::Fields);
        assert!(fields.contains("\"MemberID\" : 9\n"));
        assert!(fields.contains("\"Hash\" : 3735928559\n\"HashRevision\" : 10\n"));
        let table = hashkv_text(&rows, Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[1].contains("HASH REVISION") && lines[3].contains("3735928559"));
    }
}
