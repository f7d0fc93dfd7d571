//! `ember compaction REV` and `ember member list|add|remove|update|promote`.
//!
//! `compaction` drops the history before REV; a revision already compacted
//! is named with the current compact revision. `member list` prints the
//! members the answering node knows, in etcdctl's four formats. `member add`
//! prints, as etcdctl does, the settings the new member starts with, as
//! `EMBER_*` variables `ember serve` reads; member ids are hexadecimal.

use super::CliError;
use super::format::{self, emit};
use super::kv::write_op_failed;
use super::output::{connect, failed, write_failed};
use crate::flags::{Flag, Parsed, no_env};
use crate::proto::{MemberAddResponse, MemberChangeResponse, MemberListResponse};

pub const COMPACTION_FLAGS: &[Flag] = &[Flag {
    name: "physical",
    takes_value: false,
    help: "return only once the old history is removed from the store",
}];

pub const MEMBER_FLAGS: &[Flag] = &[
    Flag {
        name: "consistency",
        takes_value: true,
        help: "list: l (ask the leader's view, default) or s (this member's own view)",
    },
    Flag {
        name: "peer-urls",
        takes_value: true,
        help: "add, update: the member's peer URLs, comma separated",
    },
    Flag { name: "learner", takes_value: false, help: "add: add the member as a learner" },
];

pub fn run_compaction(parsed: &Parsed) -> Result<(), CliError> {
    // The format is checked but changes nothing: etcdctl prints the same
    // line whatever `-w` says.
    format::write_format(parsed)?;
    let [text] = parsed.positionals.as_slice() else {
        return Err(CliError::Usage("compaction takes one REVISION".to_string()));
    };
    let revision: i64 = text
        .parse()
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| CliError::Usage(format!("compaction: {text:?} is not a revision")))?;
    let physical = parsed.switch("physical", no_env)?;
    let mut client = connect(parsed)?;
    client.compact(revision, physical).map_err(|e| write_op_failed(&mut client, e))?;
    emit(&format::compaction(revision))
}

pub fn run_member(parsed: &Parsed) -> Result<(), CliError> {
    let format = format::write_format(parsed)?;
    let positionals: Vec<&str> = parsed.positionals.iter().map(String::as_str).collect();
    match positionals.as_slice() {
        ["list"] => {}
        ["add", name] => return member_add(parsed, format, name),
        ["remove", id] => {
            let id = member_id(id)?;
            let response = connect(parsed)?.member_remove(id).map_err(write_failed)?;
            return emit(&member_changed(format, &response, id, "removed from"));
        }
        ["update", id] => {
            let (id, urls) = (member_id(id)?, peer_urls(parsed)?);
            let response = connect(parsed)?.member_update(id, urls).map_err(write_failed)?;
            return emit(&member_changed(format, &response, id, "updated in"));
        }
        ["promote", id] => {
            let id = member_id(id)?;
            let response = connect(parsed)?.member_promote(id).map_err(write_failed)?;
            return emit(&member_changed(format, &response, id, "promoted in"));
        }
        _ => {
            return Err(CliError::Usage(
                "member takes list, add NAME, remove ID, update ID or promote ID".to_string(),
            ));
        }
    }
    let linearizable = match parsed.value("consistency", no_env).as_deref() {
        None | Some("l") => true,
        Some("s") => false,
        Some(other) => {
            return Err(CliError::Usage(format!(
                "invalid value {other:?} for --consistency: expected l or s"
            )));
        }
    };
    let mut client = connect(parsed)?;
    let response = client.member_list(linearizable).map_err(failed)?;
    emit(&format::member_list(format, &response))
}

/// A member id as `member list` prints it: hexadecimal.
fn member_id(text: &str) -> Result<u64, CliError> {
    u64::from_str_radix(text, 16)
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| CliError::Usage(format!("member: {text:?} is not a hexadecimal member ID")))
}

fn peer_urls(parsed: &Parsed) -> Result<Vec<String>, CliError> {
    let text = parsed
        .value("peer-urls", no_env)
        .ok_or_else(|| CliError::Usage("member: --peer-urls is required".to_string()))?;
    let urls: Vec<String> =
        text.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
    if urls.is_empty() {
        return Err(CliError::Usage("member: --peer-urls names no URL".to_string()));
    }
    Ok(urls)
}

fn member_add(parsed: &Parsed, format: format::Format, name: &str) -> Result<(), CliError> {
    let urls = peer_urls(parsed)?;
    let learner = parsed.switch("learner", no_env)?;
    let mut client = connect(parsed)?;
    let response = client.member_add(name, urls, learner).map_err(write_failed)?;
    emit(&member_added(format, &response))
}

/// The settings a new member starts with, etcdctl's lines with our names.
pub fn join_settings(response: &MemberAddResponse) -> String {
    let added = &response.member;
    let mut cluster = Vec::new();
    for member in &response.members {
        let name = if member.id == added.id { &added.name } else { &member.name };
        for url in &member.peer_urls {
            cluster.push(format!("{name}={url}"));
        }
    }
    format!(
        "EMBER_NAME=\"{}\"\nEMBER_INITIAL_CLUSTER=\"{}\"\n\
         EMBER_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\nEMBER_INITIAL_CLUSTER_STATE=\"existing\"\n",
        added.name,
        cluster.join(","),
        added.peer_urls.join(",")
    )
}

pub fn member_added(format: format::Format, response: &MemberAddResponse) -> Vec<u8> {
    let list = MemberListResponse { header: response.header, members: response.members.clone() };
    match format {
        format::Format::Simple => format!(
            "Member {:x} added to cluster {:x}\n\n{}",
            response.member.id,
            response.header.cluster_id,
            join_settings(response)
        )
        .into_bytes(),
        format::Format::Json => {
            let members = response.members.iter().map(format::json_member).collect();
            let json = format::JsonObject::default()
                .raw("header", format::json_member_header(&response.header))
                .raw("member", format::json_member(&response.member))
                .list("members", members)
                .finish();
            format!("{json}\n").into_bytes()
        }
        other => format::member_list(other, &list),
    }
}

pub fn member_changed(
    format: format::Format,
    response: &MemberChangeResponse,
    id: u64,
    what: &str,
) -> Vec<u8> {
    match format {
        format::Format::Simple => {
            format!("Member {id:x} {what} cluster {:x}\n", response.header.cluster_id).into_bytes()
        }
        other => {
            let list =
                MemberListResponse { header: response.header, members: response.members.clone() };
            format::member_list(other, &list)
        }
    }
}
