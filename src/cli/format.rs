//! The four output formats of the client commands, as etcdctl writes them.
//!
//! - `simple`: what a person reads; keys and values as the raw bytes they are.
//! - `json`: one line per answer, field names and omissions as etcd's JSON
//!   (zero fields left out, keys and values base64), so tools written for
//!   etcdctl's JSON parse ours.
//! - `fields`: `"Name" : value` lines, strings Go-quoted.
//! - `table`: only where etcdctl has one (member list, endpoint status and
//!   health); elsewhere a usage error.
//!
//! Every renderer here is pure: it returns the bytes to print.

use std::fmt::Write as _;

use super::CliError;
use super::output::json_string;
use crate::flags::{Parsed, process_env};
use crate::proto::{
    DeleteRangeResponse, Event, EventKind, KeyValue, Member, MemberListResponse, PutResponse,
    RangeResponse, ResponseHeader, ResponseOp, TxnResponse,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Table,
}

/// `-w`/`--write-out` (also `EMBER_W`, `EMBER_WRITE_OUT`); simple by default.
pub fn write_format(parsed: &Parsed) -> Result<Format, CliError> {
    let text = parsed.value("w", process_env).or_else(|| parsed.value("write-out", process_env));
    match text.as_deref() {
        None | Some("simple") => Ok(Format::Simple),
        Some("json") => Ok(Format::Json),
        Some("fields") => Ok(Format::Fields),
        Some("table") => Ok(Format::Table),
        Some(other) => Err(CliError::Usage(format!(
            "invalid value {other:?} for -w: expected simple, json, fields or table"
        ))),
    }
}

/// The format, refusing `table` for a command etcdctl has no table for.
pub fn write_format_no_table(parsed: &Parsed, command: &str) -> Result<Format, CliError> {
    match write_format(parsed)? {
        Format::Table => {
            Err(CliError::Usage(format!("command {command:?} is not supported in table format")))
        }
        format => Ok(format),
    }
}

/// Standard base64 with padding, as Go's JSON writes `[]byte`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes the way Go's `%q` prints a string: quoted, escapes for quotes,
/// backslashes, control characters and bytes that are not UTF-8.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

/// A JSON object under construction; fields equal to zero are left out, as
/// etcd's `omitempty` does.
#[derive(Default)]
pub struct JsonObject {
    fields: Vec<String>,
}

impl JsonObject {
    pub fn raw(&mut self, name: &str, json: String) -> &mut Self {
        self.fields.push(format!("{}:{json}", json_string(name)));
        self
    }

    pub fn int(&mut self, name: &str, value: i128) -> &mut Self {
        if value != 0 {
            self.raw(name, value.to_string());
        }
        self
    }

    pub fn flag(&mut self, name: &str, value: bool) -> &mut Self {
        if value {
            self.raw(name, "true".to_string());
        }
        self
    }

    pub fn bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        if !value.is_empty() {
            self.raw(name, json_string(&base64(value)));
        }
        self
    }

    pub fn list(&mut self, name: &str, items: Vec<String>) -> &mut Self {
        if !items.is_empty() {
            self.raw(name, format!("[{}]", items.join(",")));
        }
        self
    }

    pub fn finish(&self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

pub fn json_header(header: &ResponseHeader) -> String {
    JsonObject::default()
        .int("cluster_id", header.cluster_id.into())
        .int("member_id", header.member_id.into())
        .int("revision", header.revision.into())
        .int("raft_term", header.raft_term.into())
        .finish()
}

/// The header's fields inside `object` itself: etcdctl prints the lease
/// answers of its client library, which embed the header rather than
/// nest it.
pub fn json_header_inline(object: &mut JsonObject, header: &ResponseHeader) {
    object
        .int("cluster_id", header.cluster_id.into())
        .int("member_id", header.member_id.into())
        .int("revision", header.revision.into())
        .int("raft_term", header.raft_term.into());
}

/// The header of an answer from the member table: etcd fills in no revision
/// there, since the store is not read.
pub fn json_member_header(header: &ResponseHeader) -> String {
    json_header(&ResponseHeader { revision: 0, ..*header })
}

pub fn json_kv(kv: &KeyValue) -> String {
    JsonObject::default()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision.into())
        .int("mod_revision", kv.mod_revision.into())
        .int("version", kv.version.into())
        .bytes("value", &kv.value)
        .int("lease", kv.lease.into())
        .finish()
}

fn fields_header(out: &mut String, header: &ResponseHeader) {
    let _ = writeln!(out, "\"ClusterID\" : {}", header.cluster_id);
    let _ = writeln!(out, "\"MemberID\" : {}", header.member_id);
    let _ = writeln!(out, "\"Revision\" : {}", header.revision);
    let _ = writeln!(out, "\"RaftTerm\" : {}", header.raft_term);
}

fn fields_kv(out: &mut String, prefix: &str, kv: &KeyValue) {
    let _ = writeln!(out, "\"{prefix}Key\" : {}", go_quote(&kv.key));
    let _ = writeln!(out, "\"{prefix}CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(out, "\"{prefix}ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(out, "\"{prefix}Version\" : {}", kv.version);
    let _ = writeln!(out, "\"{prefix}Value\" : {}", go_quote(&kv.value));
    let _ = writeln!(out, "\"{prefix}Lease\" : {}", kv.lease);
}

/// Key then value on lines of their own; only the value with `value_only`.
fn simple_kv(out: &mut Vec<u8>, kv: &KeyValue, value_only: bool) {
    if !value_only {
        out.extend_from_slice(&kv.key);
        out.push(b'\n');
    }
    out.extend_from_slice(&kv.value);
    out.push(b'\n');
}

/// How `get` prints in simple format.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimpleGet {
    pub value_only: bool,
    pub count_only: bool,
}

pub fn put(format: Format, response: &PutResponse) -> Vec<u8> {
    match format {
        Format::Json => {
            let mut object = JsonObject::default();
            object.raw("header", json_header(&response.header));
            if let Some(prev) = &response.prev_kv {
                object.raw("prev_kv", json_kv(prev));
            }
            line(object.finish())
        }
        Format::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &response.header);
            if let Some(prev) = &response.prev_kv {
                fields_kv(&mut out, "Prev", prev);
            }
            out.into_bytes()
        }
        Format::Simple | Format::Table => {
            let mut out = b"OK\n".to_vec();
            if let Some(prev) = &response.prev_kv {
                simple_kv(&mut out, prev, false);
            }
            out
        }
    }
}

pub fn get(format: Format, response: &RangeResponse, simple: SimpleGet) -> Vec<u8> {
    match format {
        Format::Json => line(json_range(response)),
        Format::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &response.header);
            for kv in &response.kvs {
                fields_kv(&mut out, "", kv);
            }
            let _ = writeln!(out, "\"More\" : {}", response.more);
            let _ = writeln!(out, "\"Count\" : {}", response.count);
            out.into_bytes()
        }
        Format::Simple | Format::Table if simple.count_only => line(response.count.to_string()),
        Format::Simple | Format::Table => {
            let mut out = Vec::new();
            for kv in &response.kvs {
                simple_kv(&mut out, kv, simple.value_only);
            }
            out
        }
    }
}

fn json_range(response: &RangeResponse) -> String {
    JsonObject::default()
        .raw("header", json_header(&response.header))
        .list("kvs", response.kvs.iter().map(json_kv).collect())
        .flag("more", response.more)
        .int("count", response.count.into())
        .finish()
}

fn json_put(response: &PutResponse) -> String {
    let mut object = JsonObject::default();
    object.raw("header", json_header(&response.header));
    if let Some(prev) = &response.prev_kv {
        object.raw("prev_kv", json_kv(prev));
    }
    object.finish()
}

fn json_del(response: &DeleteRangeResponse) -> String {
    JsonObject::default()
        .raw("header", json_header(&response.header))
        .int("deleted", response.deleted.into())
        .list("prev_kvs", response.prev_kvs.iter().map(json_kv).collect())
        .finish()
}

pub fn del(format: Format, response: &DeleteRangeResponse) -> Vec<u8> {
    match format {
        Format::Json => line(json_del(response)),
        Format::Fields => {
            let mut out = String::new();
            fields_del(&mut out, response);
            out.into_bytes()
        }
        Format::Simple | Format::Table => {
            let mut out = line(response.deleted.to_string());
            for kv in &response.prev_kvs {
                simple_kv(&mut out, kv, false);
            }
            out
        }
    }
}

fn fields_del(out: &mut String, response: &DeleteRangeResponse) {
    fields_header(out, &response.header);
    let _ = writeln!(out, "\"Deleted\" : {}", response.deleted);
    for kv in &response.prev_kvs {
        fields_kv(out, "Prev", kv);
    }
}

pub fn txn(format: Format, response: &TxnResponse) -> Vec<u8> {
    match format {
        Format::Json => line(json_txn(response)),
        Format::Fields => fields_txn(response).into_bytes(),
        Format::Simple | Format::Table => {
            let verdict = if response.succeeded { "SUCCESS" } else { "FAILURE" };
            let mut out = line(verdict.to_string());
            for op in &response.responses {
                out.push(b'\n');
                out.extend(match op {
                    ResponseOp::Range(r) => get(Format::Simple, r, SimpleGet::default()),
                    ResponseOp::Put(r) => put(Format::Simple, r),
                    ResponseOp::DeleteRange(r) => del(Format::Simple, r),
                    ResponseOp::Txn(r) => txn(Format::Simple, r),
                });
            }
            out
        }
    }
}

/// etcdctl prints each answer under the names Go gives the oneof's types
/// (`{"Response":{"ResponsePut":...}}`), and, as etcd sends them, the
/// answers inside a txn carry only the revision in their headers (a nested
/// txn's own header is empty): who answered is said once, at the top.
fn json_txn(response: &TxnResponse) -> String {
    let ops = response.responses.iter().map(|op| {
        let (name, json) = match op {
            ResponseOp::Range(r) => (
                "ResponseRange",
                json_range(&RangeResponse { header: revision_only(&r.header), ..r.clone() }),
            ),
            ResponseOp::Put(r) => (
                "ResponsePut",
                json_put(&PutResponse { header: revision_only(&r.header), ..r.clone() }),
            ),
            ResponseOp::DeleteRange(r) => (
                "ResponseDeleteRange",
                json_del(&DeleteRangeResponse { header: revision_only(&r.header), ..r.clone() }),
            ),
            ResponseOp::Txn(r) => (
                "ResponseTxn",
                json_txn(&TxnResponse { header: ResponseHeader::default(), ..r.clone() }),
            ),
        };
        let inner = JsonObject::default().raw(name, json).finish();
        JsonObject::default().raw("Response", inner).finish()
    });
    JsonObject::default()
        .raw("header", json_header(&response.header))
        .flag("succeeded", response.succeeded)
        .list("responses", ops.collect())
        .finish()
}

fn revision_only(header: &ResponseHeader) -> ResponseHeader {
    ResponseHeader { revision: header.revision, ..ResponseHeader::default() }
}

fn fields_txn(response: &TxnResponse) -> String {
    let mut out = String::new();
    fields_header(&mut out, &response.header);
    let _ = writeln!(out, "\"Succeeded\" : {}", response.succeeded);
    for op in &response.responses {
        let bytes = match op {
            ResponseOp::Range(r) => get(Format::Fields, r, SimpleGet::default()),
            ResponseOp::Put(r) => put(Format::Fields, r),
            ResponseOp::DeleteRange(r) => del(Format::Fields, r),
            ResponseOp::Txn(r) => txn(Format::Fields, r),
        };
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
    out
}

/// `compacted revision N` in every format: etcdctl's compaction has no
/// other output, and scripts written for it read this line.
pub fn compaction(revision: i64) -> Vec<u8> {
    line(format!("compacted revision {revision}"))
}

/// `PUT` or `DELETE`, as etcd names event types.
pub fn event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Put => "PUT",
        EventKind::Delete => "DELETE",
    }
}

/// One batch of watch events.
pub fn watch_events(format: Format, header: &ResponseHeader, events: &[Event]) -> Vec<u8> {
    match format {
        Format::Json => line(json_watch(header, events, 0, false)),
        Format::Fields => {
            let mut out = String::new();
            fields_header(&mut out, header);
            for event in events {
                let _ = writeln!(out, "\"Type\" : {}", event_type(event.kind));
                if let Some(prev) = &event.prev_kv {
                    fields_kv(&mut out, "Prev", prev);
                }
                fields_kv(&mut out, "", &event.kv);
            }
            out.into_bytes()
        }
        Format::Simple | Format::Table => {
            let mut out = Vec::new();
            for event in events {
                out.extend(line(event_type(event.kind).to_string()));
                if let Some(prev) = &event.prev_kv {
                    simple_kv(&mut out, prev, false);
                }
                simple_kv(&mut out, &event.kv, false);
            }
            out
        }
    }
}

/// A watch answer as Go's JSON writes clientv3's `WatchResponse`: its own
/// capitalised names, no omissions at the top level, and `Events` a list
/// even when empty (a progress notice, a cancel), as for every answer that
/// comes from a server.
pub fn json_watch(
    header: &ResponseHeader,
    events: &[Event],
    compact_revision: i64,
    canceled: bool,
) -> String {
    let events: Vec<String> = events
        .iter()
        .map(|event| {
            let mut object = JsonObject::default();
            object.int("type", i128::from(event.kind == EventKind::Delete));
            object.raw("kv", json_kv(&event.kv));
            if let Some(prev) = &event.prev_kv {
                object.raw("prev_kv", json_kv(prev));
            }
            object.finish()
        })
        .collect();
    format!(
        "{{\"Header\":{},\"Events\":[{}],\"CompactRevision\":{compact_revision},\"Canceled\":{canceled},\"Created\":false}}",
        json_header(header),
        events.join(","),
    )
}

/// `started` once a member has published its client URLs (it has run),
/// `unstarted` before: added members carry a name from the start.
fn member_status(member: &Member) -> &'static str {
    if member.client_urls.is_empty() { "unstarted" } else { "started" }
}

pub fn member_list(format: Format, response: &MemberListResponse) -> Vec<u8> {
    match format {
        Format::Json => line(json_members(response)),
        Format::Fields => fields_members(response).into_bytes(),
        Format::Table => table(
            &["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"],
            &response.members.iter().map(member_row).collect::<Vec<_>>(),
        )
        .into_bytes(),
        Format::Simple => {
            let rows: Vec<String> =
                response.members.iter().map(|m| member_row(m).join(", ")).collect();
            rows.iter().flat_map(|row| line(row.clone())).collect()
        }
    }
}

fn member_row(member: &Member) -> Vec<String> {
    vec![
        format!("{:x}", member.id),
        member_status(member).to_string(),
        member.name.clone(),
        member.peer_urls.join(","),
        member.client_urls.join(","),
        member.is_learner.to_string(),
    ]
}

/// A member as etcd's JSON writes it, empty fields left out.
pub fn json_member(member: &Member) -> String {
    let strings = |items: &[String]| items.iter().map(|s| json_string(s)).collect();
    let mut object = JsonObject::default();
    object.int("ID", member.id.into());
    if !member.name.is_empty() {
        object.raw("name", json_string(&member.name));
    }
    object
        .list("peerURLs", strings(&member.peer_urls))
        .list("clientURLs", strings(&member.client_urls))
        .flag("isLearner", member.is_learner)
        .finish()
}

fn json_members(response: &MemberListResponse) -> String {
    JsonObject::default()
        .raw("header", json_member_header(&response.header))
        .list("members", response.members.iter().map(json_member).collect())
        .finish()
}

fn fields_members(response: &MemberListResponse) -> String {
    let mut out = String::new();
    fields_header(&mut out, &response.header);
    for member in &response.members {
        let _ = writeln!(out, "\"ID\" : {}", member.id);
        let _ = writeln!(out, "\"Name\" : {}", go_quote(member.name.as_bytes()));
        for url in &member.peer_urls {
            let _ = writeln!(out, "\"PeerURL\" : {}", go_quote(url.as_bytes()));
        }
        for url in &member.client_urls {
            let _ = writeln!(out, "\"ClientURL\" : {}", go_quote(url.as_bytes()));
        }
        let _ = writeln!(out, "\"IsLearner\" : {}\n", member.is_learner);
    }
    out
}

/// A table in the style etcdctl draws: `+---+` rules, `|` cells, centred
/// upper-case header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let rule: String =
        widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let mut out = rule.clone();
    for (title, width) in header.iter().zip(&widths) {
        let _ = write!(out, "| {title:^width$} ");
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for row in rows {
        for (cell, width) in row.iter().zip(&widths) {
            // Numbers line up on the right, text on the left.
            if cell.parse::<f64>().is_ok() {
                let _ = write!(out, "| {cell:>width$} ");
            } else {
                let _ = write!(out, "| {cell:<width$} ");
            }
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}

fn line(text: String) -> Vec<u8> {
    let mut out = text.into_bytes();
    out.push(b'\n');
    out
}

/// Writes `bytes` to stdout at once, so an answer is never interleaved.
pub fn emit(bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|error| CliError::Failed(format!("writing the answer: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn go_quote_escapes_like_percent_q() {
        assert_eq!(go_quote(b"foo"), "\"foo\"");
        assert_eq!(go_quote(b"a\"b\\\n"), "\"a\\\"b\\\\\\n\"");
        assert_eq!(go_quote(&[b'a', 0xff, 1]), "\"a\\xff\\x01\"");
    }

    #[test]
    fn json_leaves_out_zero_fields() {
        let kv = KeyValue { key: b"foo".to_vec(), version: 1, ..KeyValue::default() };
        assert_eq!(json_kv(&kv), r#"{"key":"Zm9v","version":1}"#);
        let header = ResponseHeader { revision: 5, ..ResponseHeader::default() };
        assert_eq!(json_header(&header), r#"{"revision":5}"#);
    }

    #[test]
    fn txn_answers_use_etcdctls_names_and_revision_only_headers() {
        let header = ResponseHeader { cluster_id: 1, member_id: 2, revision: 9, raft_term: 3 };
        let put = PutResponse { header, prev_kv: None };
        let inner =
            TxnResponse { header, succeeded: true, responses: vec![ResponseOp::Put(put.clone())] };
        let txn = TxnResponse {
            header,
            succeeded: true,
            responses: vec![ResponseOp::Put(put), ResponseOp::Txn(inner)],
        };
        assert_eq!(
            json_txn(&txn),
            r#"{"header":{"cluster_id":1,"member_id":2,"revision":9,"raft_term":3},"succeeded":true,"responses":[{"Response":{"ResponsePut":{"header":{"revision":9}}}},{"Response":{"ResponseTxn":{"header":{},"succeeded":true,"responses":[{"Response":{"ResponsePut":{"header":{"revision":9}}}}]}}}]}"#
        );
    }

    #[test]
    fn a_watch_answer_without_events_lists_none_rather_than_null() {
        let header = ResponseHeader { revision: 4, ..ResponseHeader::default() };
        assert_eq!(
            json_watch(&header, &[], 3, true),
            r#"{"Header":{"revision":4},"Events":[],"CompactRevision":3,"Canceled":true,"Created":false}"#
        );
    }

    #[test]
    fn members_leave_out_an_empty_name_and_their_header_the_revision() {
        let member = Member { id: 5, peer_urls: vec!["http://a:1".into()], ..Member::default() };
        let header = ResponseHeader { cluster_id: 1, member_id: 2, revision: 9, raft_term: 3 };
        let list = MemberListResponse { header, members: vec![member] };
        assert_eq!(
            json_members(&list),
            r#"{"header":{"cluster_id":1,"member_id":2,"raft_term":3},"members":[{"ID":5,"peerURLs":["http://a:1"]}]}"#
        );
    }

    #[test]
    fn tables_line_up() {
        let text = table(&["ID", "NAME"], &[vec!["1".to_string(), "node-one".to_string()]]);
        let rule = "+----+----------+\n";
        let expected = format!("{rule}| ID |   NAME   |\n{rule}|  1 | node-one |\n{rule}");
        assert_eq!(text, expected);
    }
}
