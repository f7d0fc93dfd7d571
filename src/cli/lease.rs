//! `ember lease grant|revoke|timetolive|list|keep-alive`, as etcdctl's
//! `lease` commands, in the four output formats.
//!
//! Lease ids are written and read in hex, as etcdctl does (`694d77aa9e38260f`);
//! they travel as i64 and only their bits matter. `keep-alive` renews every
//! third of the TTL until the lease is gone or Ctrl-C (SIGINT) ends it with
//! exit 0; with `--once` it renews once.
//!
//! The renderers are pure (response in, bytes out) and tested below.

#![allow(unsafe_code)] // installing the SIGINT handler through libc

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::CliError;
use super::format::{
    self, Format, JsonObject, base64, emit, go_quote, json_header, json_header_inline, table,
};
use super::output::{connect, failed, write_failed};
use crate::client::Client;
use crate::flags::{Flag, Parsed, no_env};
use crate::proto::{
    ErrorCode, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseTimeToLiveResponse, ResponseHeader,
};

pub const LEASE_FLAGS: &[Flag] = &[
    Flag { name: "keys", takes_value: false, help: "timetolive: also list the attached keys" },
    Flag { name: "once", takes_value: false, help: "keep-alive: renew once and exit" },
    Flag { name: "id", takes_value: true, help: "grant: the id to use, in hex (default: chosen)" },
];

/// The shortest pause between two renewals of `keep-alive`, so a lease of a
/// second or two does not turn into a busy loop of requests.
const KEEP_ALIVE_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// How often the keep-alive loop looks for Ctrl-C while it waits.
const INTERRUPT_POLL: Duration = Duration::from_millis(50);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn run_lease(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format(parsed)?;
    let (verb, args) = match parsed.positionals.split_first() {
        Some((verb, args)) => (verb.as_str(), args),
        None => return Err(usage()),
    };
    match (verb, args) {
        ("grant", [ttl]) => grant(parsed, format, ttl),
        ("revoke", [id]) => revoke(parsed, format, parse_id(id)?),
        ("timetolive", [id]) => time_to_live(parsed, format, parse_id(id)?),
        ("list", []) => list(parsed, format),
        ("keep-alive", [id]) => keep_alive(parsed, format, parse_id(id)?),
        _ => Err(usage()),
    }
}

fn usage() -> CliError {
    CliError::Usage(
        "lease takes grant TTL, revoke ID, timetolive ID, list or keep-alive ID".to_string(),
    )
}

/// A lease id in hex (an optional `0x` allowed), as etcdctl prints them.
pub fn parse_id(text: &str) -> Result<i64, CliError> {
    let digits = text.trim_start_matches("0x");
    match u64::from_str_radix(digits, 16) {
        Ok(id) if id != 0 => Ok(id as i64),
        _ => Err(CliError::Usage(format!("invalid lease id {text:?}: expected nonzero hex"))),
    }
}

/// The id as etcdctl prints it: hex of its 64 bits.
pub fn hex_id(id: i64) -> String {
    format!("{:x}", id as u64)
}

fn grant(parsed: &Parsed, format: Format, ttl: &str) -> Result<(), CliError> {
    let ttl_secs: i64 =
        ttl.parse().ok().filter(|t| *t > 0).ok_or_else(|| {
            CliError::Usage(format!("invalid TTL {ttl:?}: expected whole seconds"))
        })?;
    let id = match parsed.value("id", no_env) {
        Some(text) => parse_id(&text)?,
        None => 0,
    };
    let mut client = connect(parsed)?;
    let response = client.lease_grant(ttl_secs, id).map_err(write_failed)?;
    emit(&render_grant(format, &response))
}

fn revoke(parsed: &Parsed, format: Format, id: i64) -> Result<(), CliError> {
    let mut client = connect(parsed)?;
    let response = client.lease_revoke(id).map_err(write_failed)?;
    emit(&render_revoke(format, &response.header, id))
}

fn time_to_live(parsed: &Parsed, format: Format, id: i64) -> Result<(), CliError> {
    let keys = parsed.switch("keys", no_env)?;
    let mut client = connect(parsed)?;
    let response = client.lease_time_to_live(id, keys).map_err(failed)?;
    emit(&render_time_to_live(format, &response, keys))
}

fn list(parsed: &Parsed, format: Format) -> Result<(), CliError> {
    let mut client = connect(parsed)?;
    let response = client.lease_leases().map_err(failed)?;
    emit(&render_list(format, &response))
}

/// Renews until the lease is gone (exit 1), or until Ctrl-C (exit 0).
fn keep_alive(parsed: &Parsed, format: Format, id: i64) -> Result<(), CliError> {
    let once = parsed.switch("once", no_env)?;
    let mut client = connect(parsed)?;
    if !once {
        let handler: extern "C" fn(libc::c_int) = on_interrupt;
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe, and it lives for the whole program.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
    }
    loop {
        let response = renew(&mut client, id)?;
        emit(&render_keep_alive(format, &response))?;
        if once {
            return Ok(());
        }
        let interval = Duration::from_secs(response.ttl_secs.max(0) as u64 / 3);
        if !wait_unless_interrupted(interval.max(KEEP_ALIVE_MIN_INTERVAL)) {
            return Ok(());
        }
    }
}

fn renew(client: &mut Client, id: i64) -> Result<LeaseKeepAliveResponse, CliError> {
    match client.lease_keep_alive(id) {
        Ok(response) => Ok(response),
        Err(error) if error.code() == Some(ErrorCode::LeaseNotFound) => {
            Err(CliError::Failed(format!("lease {} expired or revoked", hex_id(id))))
        }
        Err(error) => Err(failed(error)),
    }
}

/// Sleeps for `pause`; false when Ctrl-C came first.
fn wait_unless_interrupted(pause: Duration) -> bool {
    let until = Instant::now() + pause;
    while Instant::now() < until {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(INTERRUPT_POLL.min(until.saturating_duration_since(Instant::now())));
    }
    !INTERRUPTED.load(Ordering::SeqCst)
}

fn line(text: String) -> Vec<u8> {
    let mut out = text.into_bytes();
    out.push(b'\n');
    out
}

fn fields_header(out: &mut String, header: &ResponseHeader) {
    let _ = writeln!(out, "\"ClusterID\" : {}", header.cluster_id);
    let _ = writeln!(out, "\"MemberID\" : {}", header.member_id);
    let _ = writeln!(out, "\"Revision\" : {}", header.revision);
    let _ = writeln!(out, "\"RaftTerm\" : {}", header.raft_term);
}

/// `lease <hex> granted with TTL(<n>s)`. In JSON, etcdctl's shape: the
/// header's fields at the top, then `ID`, `TTL` and an `Error` that is
/// empty when the grant succeeded.
pub fn render_grant(format: Format, r: &LeaseGrantResponse) -> Vec<u8> {
    id_and_ttl(format, &r.header, (r.id, r.ttl_secs), true, || {
        format!("lease {} granted with TTL({}s)", hex_id(r.id), r.ttl_secs)
    })
}

/// `lease <hex> keepalived with TTL(<n>)`.
pub fn render_keep_alive(format: Format, r: &LeaseKeepAliveResponse) -> Vec<u8> {
    id_and_ttl(format, &r.header, (r.id, r.ttl_secs), false, || {
        format!("lease {} keepalived with TTL({})", hex_id(r.id), r.ttl_secs)
    })
}

/// An answer naming a lease and its TTL; in JSON the header's fields come
/// first and `ID`, `TTL` (and for a grant `Error`) are always written, zero
/// or not, as etcdctl does.
fn id_and_ttl(
    format: Format,
    header: &ResponseHeader,
    (id, ttl_secs): (i64, i64),
    json_error: bool,
    simple: impl FnOnce() -> String,
) -> Vec<u8> {
    match format {
        Format::Simple => line(simple()),
        Format::Json => {
            let mut object = JsonObject::default();
            json_header_inline(&mut object, header);
            object.raw("ID", id.to_string()).raw("TTL", ttl_secs.to_string());
            if json_error {
                object.raw("Error", "\"\"".to_string());
            }
            line(object.finish())
        }
        Format::Fields => {
            let mut out = String::new();
            fields_header(&mut out, header);
            let _ = writeln!(out, "\"ID\" : {id}");
            let _ = writeln!(out, "\"TTL\" : {ttl_secs}");
            out.into_bytes()
        }
        Format::Table => table(&["ID", "TTL"], &[vec![hex_id(id), ttl_secs.to_string()]]).into(),
    }
}

/// `lease <hex> revoked`.
pub fn render_revoke(format: Format, header: &ResponseHeader, id: i64) -> Vec<u8> {
    match format {
        Format::Simple => line(format!("lease {} revoked", hex_id(id))),
        Format::Json => line(JsonObject::default().raw("header", json_header(header)).finish()),
        Format::Fields => {
            let mut out = String::new();
            fields_header(&mut out, header);
            out.into_bytes()
        }
        Format::Table => table(&["ID", "REVOKED"], &[vec![hex_id(id), "true".into()]]).into(),
    }
}

/// `lease <hex> granted with TTL(<g>s), remaining(<n>s)[, attached keys([k ...])]`,
/// or `lease <hex> already expired` when the server answers a TTL of -1.
pub fn render_time_to_live(format: Format, r: &LeaseTimeToLiveResponse, keys: bool) -> Vec<u8> {
    let key_list = || {
        let names: Vec<String> = r.keys.iter().map(|k| String::from_utf8_lossy(k).into()).collect();
        names.join(" ")
    };
    match format {
        Format::Simple if r.ttl_secs == -1 => {
            line(format!("lease {} already expired", hex_id(r.id)))
        }
        Format::Simple => {
            let mut text = format!(
                "lease {} granted with TTL({}s), remaining({}s)",
                hex_id(r.id),
                r.granted_ttl_secs,
                r.ttl_secs
            );
            if keys {
                let _ = write!(text, ", attached keys([{}])", key_list());
            }
            line(text)
        }
        // etcdctl's names here are its client library's: lower case,
        // `granted-ttl`, and `keys` null when none were asked or attached.
        Format::Json => {
            let keys: Vec<String> = r.keys.iter().map(|k| format!("\"{}\"", base64(k))).collect();
            let keys =
                if keys.is_empty() { "null".to_string() } else { format!("[{}]", keys.join(",")) };
            let mut object = JsonObject::default();
            json_header_inline(&mut object, &r.header);
            object
                .raw("id", r.id.to_string())
                .raw("ttl", r.ttl_secs.to_string())
                .raw("granted-ttl", r.granted_ttl_secs.to_string())
                .raw("keys", keys);
            line(object.finish())
        }
        Format::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            let _ = writeln!(out, "\"ID\" : {}", r.id);
            let _ = writeln!(out, "\"TTL\" : {}", r.ttl_secs);
            let _ = writeln!(out, "\"GrantedTTL\" : {}", r.granted_ttl_secs);
            for key in &r.keys {
                let _ = writeln!(out, "\"Key\" : {}", go_quote(key));
            }
            out.into_bytes()
        }
        Format::Table => {
            let row = vec![
                hex_id(r.id),
                r.granted_ttl_secs.to_string(),
                r.ttl_secs.to_string(),
                key_list(),
            ];
            table(&["ID", "GRANTED TTL", "REMAINING", "KEYS"], &[row]).into()
        }
    }
}

/// `found <n> leases`, then one hex id a line.
pub fn render_list(format: Format, r: &LeaseLeasesResponse) -> Vec<u8> {
    match format {
        Format::Simple => {
            let mut out = format!("found {} leases\n", r.leases.len());
            for id in &r.leases {
                let _ = writeln!(out, "{}", hex_id(*id));
            }
            out.into_bytes()
        }
        Format::Json => {
            let leases: Vec<String> =
                r.leases.iter().map(|id| format!("{{\"id\":{id}}}")).collect();
            let mut object = JsonObject::default();
            json_header_inline(&mut object, &r.header);
            object.raw("leases", format!("[{}]", leases.join(",")));
            line(object.finish())
        }
        Format::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            for id in &r.leases {
                let _ = writeln!(out, "\"ID\" : {id}");
            }
            out.into_bytes()
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = r.leases.iter().map(|id| vec![hex_id(*id)]).collect();
            table(&["ID"], &rows).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn ids_are_hex_both_ways() {
        assert_eq!(parse_id("694d77aa9e38260f").unwrap(), 0x694d77aa9e38260f);
        assert_eq!(parse_id("0x10").unwrap(), 16);
        assert_eq!(parse_id("ffffffffffffffff").unwrap(), -1);
        assert_eq!(hex_id(-1), "ffffffffffffffff");
        assert!(parse_id("0").is_err());
        assert!(parse_id("xyz").is_err());
    }

    #[test]
    fn simple_lines_read_as_etcdctl_writes_them() {
        let grant = LeaseGrantResponse { id: 0x2a, ttl_secs: 10, ..Default::default() };
        assert_eq!(text(render_grant(Format::Simple, &grant)), "lease 2a granted with TTL(10s)\n");
        let renewed = LeaseKeepAliveResponse { id: 0x2a, ttl_secs: 10, ..Default::default() };
        let keep_alive = text(render_keep_alive(Format::Simple, &renewed));
        assert_eq!(keep_alive, "lease 2a keepalived with TTL(10)\n");
        let ttl = LeaseTimeToLiveResponse {
            id: 0x2a,
            ttl_secs: 7,
            granted_ttl_secs: 10,
            keys: vec![b"a".to_vec(), b"b".to_vec()],
            ..Default::default()
        };
        assert_eq!(
            text(render_time_to_live(Format::Simple, &ttl, true)),
            "lease 2a granted with TTL(10s), remaining(7s), attached keys([a b])\n"
        );
        let gone = LeaseTimeToLiveResponse { id: 0x2a, ttl_secs: -1, ..Default::default() };
        let expired = text(render_time_to_live(Format::Simple, &gone, false));
        assert_eq!(expired, "lease 2a already expired\n");
        let list = LeaseLeasesResponse { leases: vec![1, 0x2a], ..Default::default() };
        assert_eq!(text(render_list(Format::Simple, &list)), "found 2 leases\n1\n2a\n");
    }

    #[test]
    fn json_and_fields_carry_the_numbers_in_etcdctls_shapes() {
        let header = ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 };
        let grant = LeaseGrantResponse { header, id: 42, ttl_secs: 10 };
        assert_eq!(
            text(render_grant(Format::Json, &grant)),
            "{\"cluster_id\":1,\"member_id\":2,\"revision\":3,\"raft_term\":4,\
             \"ID\":42,\"TTL\":10,\"Error\":\"\"}\n"
        );
        let renewed = LeaseKeepAliveResponse { header, id: 42, ttl_secs: 0 };
        assert_eq!(
            text(render_keep_alive(Format::Json, &renewed)),
            "{\"cluster_id\":1,\"member_id\":2,\"revision\":3,\"raft_term\":4,\"ID\":42,\"TTL\":0}\n"
        );
        assert!(
            text(render_grant(Format::Fields, &grant)).ends_with("\"ID\" : 42\n\"TTL\" : 10\n")
        );
        let ttl = LeaseTimeToLiveResponse {
            id: 42,
            ttl_secs: -1,
            keys: vec![b"foo".to_vec()],
            ..Default::default()
        };
        let json = text(render_time_to_live(Format::Json, &ttl, true));
        assert_eq!(json, "{\"id\":42,\"ttl\":-1,\"granted-ttl\":0,\"keys\":[\"Zm9v\"]}\n");
        let none = LeaseTimeToLiveResponse { id: 42, ttl_secs: 5, ..Default::default() };
        let json = text(render_time_to_live(Format::Json, &none, false));
        assert_eq!(json, "{\"id\":42,\"ttl\":5,\"granted-ttl\":0,\"keys\":null}\n");
        let empty = LeaseLeasesResponse::default();
        assert_eq!(text(render_list(Format::Json, &empty)), "{\"leases\":[]}\n");
        let list = LeaseLeasesResponse { leases: vec![5], ..Default::default() };
        assert_eq!(text(render_list(Format::Json, &list)), "{\"leases\":[{\"id\":5}]}\n");
        assert!(text(render_list(Format::Table, &list)).contains("|  5 |"));
    }
}
