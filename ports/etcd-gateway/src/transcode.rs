//! etcd's JSON mapping of its messages, both ways, driven by the field
//! tables build.rs writes from the .proto files.
//!
//! JSON to a message: each member is found by its proto name (`prev_kv`)
//! or its JSON name (`prevKv`), written as protobuf, and the bytes decoded
//! by prost; unknown members are ignored, as etcd's gateway ignores them.
//! A message to JSON: prost encodes it, and the bytes are read field by
//! field in declaration order. The mapping is etcd's: proto names, 64-bit
//! integers as strings, bytes as standard base64, enums by name, default
//! values left out (protobuf does not carry them, so neither does the JSON).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;

use crate::json::{self, Value};

pub struct MessageSchema {
    /// Fully qualified: ".etcdserverpb.RangeRequest".
    pub name: &'static str,
    /// In declaration order, which is the order etcd prints them in.
    pub fields: &'static [FieldSchema],
}

pub struct FieldSchema {
    pub number: u32,
    pub name: &'static str,
    pub json_name: &'static str,
    pub kind: Kind,
    pub repeated: bool,
}

#[derive(Clone, Copy)]
pub enum Kind {
    Bool,
    Int64,
    Uint32,
    Uint64,
    String,
    Bytes,
    /// An index into `ENUMS`.
    Enum(usize),
    /// An index into `MESSAGES`.
    Message(usize),
}

pub struct EnumSchema {
    /// The name Go gives the type, which etcd's errors quote.
    pub go_name: &'static str,
    pub values: &'static [(i32, &'static str)],
}

include!(concat!(env!("OUT_DIR"), "/json_schema.rs"));

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn schema_of<M: prost::Name>() -> &'static MessageSchema {
    let name = format!(".{}", M::full_name());
    MESSAGES
        .iter()
        .find(|schema| schema.name == name)
        .unwrap_or_else(|| panic!("build.rs wrote no schema for {name}"))
}

/// The message a JSON value describes, or why it describes none.
pub fn from_json<M: Message + Default + prost::Name>(value: &Value) -> Result<M, String> {
    let mut bytes = Vec::new();
    encode_message(schema_of::<M>(), value, &mut bytes)?;
    M::decode(bytes.as_slice()).map_err(|error| error.to_string())
}

/// `message` in etcd's JSON.
pub fn to_json<M: Message + prost::Name>(message: &M) -> String {
    let mut out = String::new();
    write_message(schema_of::<M>(), &message.encode_to_vec(), &mut out);
    out
}

fn encode_message(schema: &MessageSchema, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let members = match value {
        Value::Object(members) => members,
        Value::Null => return Ok(()),
        other => {
            return Err(format!("{} is not an object: {}", short_name(schema), kind_of(other)));
        }
    };
    for (key, value) in members {
        let field = schema.fields.iter().find(|f| f.name == key || f.json_name == key);
        let Some(field) = field else { continue };
        match (value, field.repeated) {
            (Value::Null, _) => {}
            (Value::Array(items), true) => {
                for item in items {
                    encode_field(field, item, out)?;
                }
            }
            (other, true) => {
                return Err(format!("{} must be an array, not {}", field.name, kind_of(other)));
            }
            (value, false) => encode_field(field, value, out)?,
        }
    }
    Ok(())
}

fn encode_field(field: &FieldSchema, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let wrong = || format!("bad value for {}: {}", field.name, kind_of(value));
    match (field.kind, value) {
        (Kind::Bool, Value::Bool(b)) => varint_field(field.number, u64::from(*b), out),
        (Kind::Int64 | Kind::Uint32 | Kind::Uint64, Value::Number(text))
        | (Kind::Int64 | Kind::Uint32 | Kind::Uint64, Value::String(text)) => {
            let number = integer(field, text)?;
            varint_field(field.number, number, out);
        }
        (Kind::String, Value::String(text)) => len_field(field.number, text.as_bytes(), out),
        (Kind::Bytes, Value::String(text)) => {
            let bytes = BASE64.decode(text).map_err(|error| format!("{}: {error}", field.name))?;
            len_field(field.number, &bytes, out);
        }
        (Kind::Enum(index), Value::String(name)) => {
            let schema = &ENUMS[index];
            let Some(&(number, _)) = schema.values.iter().find(|(_, n)| n == name) else {
                return Err(format!("unknown value {name:?} for enum {}", schema.go_name));
            };
            varint_field(field.number, i64::from(number) as u64, out);
        }
        (Kind::Enum(_), Value::Number(text)) => {
            let number: i32 = text.parse().map_err(|_| wrong())?;
            varint_field(field.number, i64::from(number) as u64, out);
        }
        (Kind::Message(index), value) => {
            let mut inner = Vec::new();
            encode_message(&MESSAGES[index], value, &mut inner)?;
            len_field(field.number, &inner, out);
        }
        _ => return Err(wrong()),
    }
    Ok(())
}

/// An integer field's value as its varint: negative numbers as 64-bit two's
/// complement, as protobuf writes them.
fn integer(field: &FieldSchema, text: &str) -> Result<u64, String> {
    let out_of_range = || format!("bad value for {}: {text:?} is not a valid integer", field.name);
    match field.kind {
        Kind::Int64 => text.parse::<i64>().map(|n| n as u64).map_err(|_| out_of_range()),
        Kind::Uint64 => text.parse::<u64>().map_err(|_| out_of_range()),
        Kind::Uint32 => text.parse::<u32>().map(u64::from).map_err(|_| out_of_range()),
        _ => Err(out_of_range()),
    }
}

fn varint_field(number: u32, value: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, prost::encoding::WireType::Varint, out);
    prost::encoding::encode_varint(value, out);
}

fn len_field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn short_name(schema: &MessageSchema) -> &'static str {
    schema.name.rsplit('.').next().unwrap_or(schema.name)
}

/// One field as it sits on the wire.
enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
}

/// Reads the fields of an encoded message. The bytes come from prost in
/// this process, so a malformed message is a bug here: it ends the read,
/// and what was read so far is written.
fn wire_fields(mut bytes: &[u8]) -> Vec<(u32, Wire<'_>)> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else { break };
        let (number, wire_type) = ((key >> 3) as u32, (key & 7) as u32);
        let value = match wire_type {
            WIRE_VARINT => match prost::encoding::decode_varint(&mut bytes) {
                Ok(value) => Wire::Varint(value),
                Err(_) => break,
            },
            WIRE_LEN => {
                let Ok(len) = prost::encoding::decode_varint(&mut bytes) else { break };
                let Some((inner, rest)) = bytes.split_at_checked(len as usize) else { break };
                bytes = rest;
                Wire::Len(inner)
            }
            WIRE_FIXED64 if bytes.len() >= 8 => {
                bytes = &bytes[8..];
                continue;
            }
            WIRE_FIXED32 if bytes.len() >= 4 => {
                bytes = &bytes[4..];
                continue;
            }
            _ => break,
        };
        fields.push((number, value));
    }
    fields
}

fn write_message(schema: &MessageSchema, bytes: &[u8], out: &mut String) {
    let fields = wire_fields(bytes);
    out.push('{');
    let mut first = true;
    for field in schema.fields {
        let values: Vec<&Wire> =
            fields.iter().filter(|(n, _)| *n == field.number).map(|(_, v)| v).collect();
        let Some(&last) = values.last() else { continue };
        if !first {
            out.push(',');
        }
        first = false;
        json::write_string(out, field.name);
        out.push(':');
        if field.repeated {
            write_repeated(field, &values, out);
        } else {
            write_value(field.kind, last, out);
        }
    }
    out.push('}');
}

/// A repeated field; numbers may come packed into one length-delimited run.
fn write_repeated(field: &FieldSchema, values: &[&Wire], out: &mut String) {
    let packable = !matches!(field.kind, Kind::String | Kind::Bytes | Kind::Message(_));
    out.push('[');
    let mut first = true;
    let mut item = |wire: &Wire, out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
        write_value(field.kind, wire, out);
    };
    for wire in values {
        match wire {
            Wire::Len(packed) if packable => {
                let mut packed: &[u8] = packed;
                while let Ok(value) = prost::encoding::decode_varint(&mut packed) {
                    item(&Wire::Varint(value), out);
                }
            }
            wire => item(wire, out),
        }
    }
    out.push(']');
}

fn write_value(kind: Kind, wire: &Wire, out: &mut String) {
    use std::fmt::Write;
    match (kind, wire) {
        (Kind::Bool, Wire::Varint(v)) => out.push_str(if *v != 0 { "true" } else { "false" }),
        (Kind::Int64, Wire::Varint(v)) => {
            let _ = write!(out, "\"{}\"", *v as i64);
        }
        (Kind::Uint64, Wire::Varint(v)) => {
            let _ = write!(out, "\"{v}\"");
        }
        (Kind::Uint32, Wire::Varint(v)) => {
            let _ = write!(out, "{}", *v as u32);
        }
        (Kind::Enum(index), Wire::Varint(v)) => {
            let number = *v as i32;
            match ENUMS[index].values.iter().find(|(n, _)| *n == number) {
                Some((_, name)) => json::write_string(out, name),
                None => {
                    let _ = write!(out, "{number}");
                }
            }
        }
        (Kind::String, Wire::Len(bytes)) => {
            json::write_string(out, &String::from_utf8_lossy(bytes))
        }
        (Kind::Bytes, Wire::Len(bytes)) => {
            out.push('"');
            out.push_str(&BASE64.encode(bytes));
            out.push('"');
        }
        (Kind::Message(index), Wire::Len(bytes)) => write_message(&MESSAGES[index], bytes, out),
        // A wire type that does not fit the field: prost never writes one.
        _ => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb as pb;
    use crate::pb::mvccpb;

    fn parse(text: &str) -> Value {
        json::parse_one(format!("{text} ").as_bytes()).unwrap().0
    }

    #[test]
    fn requests_read_proto_and_json_names_strings_and_numbers() {
        let text = r#"{"key":"Zm9v","range_end":"Zm9w","limit":"3","revision":7,
                       "sortOrder":"DESCEND","sort_target":4,"keys_only":true,"bogus":1}"#;
        let request: pb::RangeRequest = from_json(&parse(text)).unwrap();
        assert_eq!(request.key, b"foo");
        assert_eq!(request.range_end, b"fop");
        assert_eq!((request.limit, request.revision), (3, 7));
        assert_eq!(request.sort_order, pb::range_request::SortOrder::Descend as i32);
        assert_eq!(request.sort_target, pb::range_request::SortTarget::Value as i32);
        assert!(request.keys_only);
    }

    #[test]
    fn oneof_members_keep_their_zero_values() {
        let text = r#"{"compare":[{"key":"Zm9v","target":"CREATE","create_revision":"0"}],
                       "success":[{"request_put":{"key":"Zm9v","value":"YmFy"}}]}"#;
        let txn: pb::TxnRequest = from_json(&parse(text)).unwrap();
        use pb::compare::TargetUnion;
        assert_eq!(txn.compare[0].target_union, Some(TargetUnion::CreateRevision(0)));
        assert!(matches!(
            txn.success[0].request,
            Some(pb::request_op::Request::RequestPut(ref put)) if put.value == b"bar"
        ));
    }

    #[test]
    fn watch_requests_carry_their_filters_and_ids() {
        let text = r#"{"create_request":{"key":"Zm9v","filters":["NOPUT",1],"watch_id":"-3",
                       "progress_notify":true}}"#;
        let request: pb::WatchRequest = from_json(&parse(text)).unwrap();
        let Some(pb::watch_request::RequestUnion::CreateRequest(create)) = request.request_union
        else {
            panic!("not a create: {request:?}");
        };
        use pb::watch_create_request::FilterType;
        assert_eq!(create.filters, [FilterType::Noput as i32, FilterType::Nodelete as i32]);
        assert_eq!((create.watch_id, create.progress_notify), (-3, true));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let refused = |text: &str| from_json::<pb::RangeRequest>(&parse(text)).unwrap_err();
        assert_eq!(
            refused(r#"{"sort_order":"WRONG"}"#),
            "unknown value \"WRONG\" for enum etcdserverpb.RangeRequest_SortOrder"
        );
        assert!(refused(r#"{"key":"Zm9v!"}"#).starts_with("key: "));
        assert!(refused(r#"{"limit":"abc"}"#).contains("not a valid integer"));
        assert!(refused(r#"{"limit":1.5}"#).contains("not a valid integer"));
        assert!(refused(r#"{"limit":"99999999999999999999"}"#).contains("not a valid integer"));
        assert!(refused(r#"{"keys_only":"yes"}"#).contains("keys_only"));
        assert!(refused(r#"[1]"#).contains("not an object"));
    }

    #[test]
    fn responses_print_as_etcd_prints_them() {
        let response = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 15118495548433857066,
                member_id: 1,
                revision: 3,
                raft_term: 2,
            }),
            kvs: vec![mvccpb::KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                value: b"baz".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            to_json(&response),
            r#"{"header":{"cluster_id":"15118495548433857066","member_id":"1","revision":"3","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}],"count":"1"}"#
        );
    }

    #[test]
    fn enums_print_by_name_and_empty_messages_stay() {
        let response = pb::WatchResponse {
            header: Some(pb::ResponseHeader::default()),
            watch_id: -1,
            events: vec![mvccpb::Event {
                r#type: mvccpb::event::EventType::Delete as i32,
                kv: Some(mvccpb::KeyValue { key: b"a".to_vec(), ..Default::default() }),
                prev_kv: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            to_json(&response),
            r#"{"header":{},"watch_id":"-1","events":[{"type":"DELETE","kv":{"key":"YQ=="}}]}"#
        );
        let hash = pb::HashResponse { header: None, hash: 3424143788 };
        assert_eq!(to_json(&hash), r#"{"hash":3424143788}"#);
        let status = pb::StatusResponse { errors: vec!["a<b".into()], ..Default::default() };
        assert_eq!(to_json(&status), r#"{"errors":["a\u003cb"]}"#);
    }
}
