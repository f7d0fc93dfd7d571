//! A member joining an existing cluster learns its id from the cluster.
//!
//! A member added at runtime gets an id the cluster chose when it applied
//! the addition (`state::members::fresh_id`), which the new member cannot
//! derive. So on its first start with `--initial-cluster-state existing`
//! it asks the peers of `--initial-cluster`, over the peer port and under
//! the peer TLS and secret rules (`transport::ask_members`), for the member
//! table; finds itself by its advertised peer URLs; checks that the table
//! agrees with the names it was given; and takes the table's ids for itself
//! and for the members named, so that it accepts those members and no one
//! else. A member named that the table no longer has (removed since the
//! settings were printed, as in a replacement) is left out. An unnamed
//! member (`=URL`: not started when `member add` printed the settings) is
//! found by its URL alone. `identity.rs` then records its id; later starts use it.
//! A member restarted before its first snapshot asks again for its peers'
//! ids (`relearn_ids`): until the snapshot brings the table, nothing else
//! on disk names them.
//!
//! Runs before the loop exists, so blocking here stalls nothing.

use std::time::{Duration, Instant};

use super::ServeError;
use super::config::{Config, InitialMember};
use crate::state::MemberRecord;
use crate::transport::{self, ask_members};

/// How long a joining member keeps asking before it gives up: long enough
/// for peers being restarted, short enough that a wrong `--initial-cluster`
/// is reported while the operator is still looking.
pub const JOIN_ASK_WAIT: Duration = Duration::from_secs(30);
/// One attempt at one peer address.
pub const JOIN_ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between rounds over every peer.
const JOIN_ASK_RETRY: Duration = Duration::from_millis(500);

/// A joining member restarted before its first snapshot has its own id
/// (the identity file) but nothing that names its peers' ids: they are
/// asked for again, as at the first start, rather than derived from their
/// names (a member added at runtime has an id no name gives). The table
/// must still list this member under the id it recorded.
pub fn relearn_ids(config: &mut Config, ask: &transport::Config) -> Result<(), ServeError> {
    let recorded = config.member_id;
    learn_ids(config, ask)?;
    if config.member_id != recorded {
        return Err(ServeError::Config(format!(
            "the cluster's member table has this member's peer URLs under id {:016x}, but the \
             data directory belongs to member {recorded:016x}: the member was removed and added \
             again; start it with an empty data directory",
            config.member_id
        )));
    }
    Ok(())
}

/// Asks the peers for the member table and sets `config`'s ids from it.
pub fn learn_ids(config: &mut Config, ask: &transport::Config) -> Result<(), ServeError> {
    let table = fetch_table(config, ask)?;
    let ids = match_ids(config, &table).map_err(ServeError::Config)?;
    let named = std::mem::take(&mut config.initial_cluster);
    for (mut member, id) in named.into_iter().zip(ids) {
        let Some(id) = id else {
            // Removed since `member add` printed the settings (a replacement).
            let urls = urls_of(config, &member).join(",");
            log::warn!("{:?} at {urls} of --initial-cluster is no longer a member", member.name);
            continue;
        };
        member.id = id;
        merge_member(&mut config.initial_cluster, member);
    }
    config.initial_cluster.sort_by_key(|m| m.id);
    let own = config.initial_cluster.iter().find(|m| m.name == config.name);
    config.member_id = own.expect("match_ids found this member").id;
    log::info!("this member is {:016x} in the cluster's member table", config.member_id);
    Ok(())
}

/// Adds `member`, or merges it into the entry the table gave the same id:
/// an unnamed member with several peer URLs comes as one entry per URL.
fn merge_member(members: &mut Vec<InitialMember>, member: InitialMember) {
    let Some(known) = members.iter_mut().find(|m| m.id == member.id) else {
        members.push(member);
        return;
    };
    known.peer_addrs.extend(member.peer_addrs);
    known.peer_addrs.sort();
    known.peer_addrs.dedup();
    if known.name.is_empty() {
        known.name = member.name;
    }
}

fn fetch_table(config: &Config, ask: &transport::Config) -> Result<Vec<MemberRecord>, ServeError> {
    let deadline = Instant::now() + JOIN_ASK_WAIT;
    let mut last = String::from("no other member in --initial-cluster");
    loop {
        for member in config.initial_cluster.iter().filter(|m| m.name != config.name) {
            for addr in &member.peer_addrs {
                let Ok(found) = addr.resolve() else {
                    last = format!("{addr} does not resolve");
                    continue;
                };
                for sock in found {
                    match ask_members(sock, &addr.host, ask, JOIN_ASK_TIMEOUT) {
                        Ok(bytes) => return decode_table(&bytes, &member.name),
                        Err(e) => last = format!("member {} at {sock}: {e}", member.name),
                    }
                }
            }
        }
        if Instant::now() + JOIN_ASK_RETRY >= deadline {
            return Err(ServeError::Config(format!(
                "joining an existing cluster: no member gave its member table within {}s \
                 (the last answer: {last})",
                JOIN_ASK_WAIT.as_secs()
            )));
        }
        log::info!("asking for the member table: {last}; trying again");
        std::thread::sleep(JOIN_ASK_RETRY);
    }
}

fn decode_table(bytes: &[u8], from: &str) -> Result<Vec<MemberRecord>, ServeError> {
    postcard::from_bytes(bytes).map_err(|_| {
        ServeError::Config(format!("the member table member {from} sent does not decode"))
    })
}

/// The sorted peer URLs of an initial member, as the table writes them.
fn urls_of(config: &Config, member: &InitialMember) -> Vec<String> {
    let mut urls: Vec<String> = member.peer_addrs.iter().map(|a| config.peer_url(a)).collect();
    urls.sort();
    urls
}

/// The table's id for each member of `--initial-cluster`, in its order
/// (`None` for one the table no longer has); why the table and the flags
/// disagree otherwise: this member not in it, or a member at the same
/// peer URLs under another name.
fn match_ids(config: &Config, table: &[MemberRecord]) -> Result<Vec<Option<u64>>, String> {
    let mut ids = Vec::with_capacity(config.initial_cluster.len());
    for member in &config.initial_cluster {
        let urls = urls_of(config, member);
        let mut own_advertised: Vec<String> =
            config.initial_advertise_peer_addrs.iter().map(|a| config.peer_url(a)).collect();
        own_advertised.sort();
        let is_self = member.name == config.name;
        let wanted = if is_self { &own_advertised } else { &urls };
        let found = match member.name.is_empty() {
            // One URL of an unnamed member: the record that has it.
            true => table.iter().find(|r| urls.iter().all(|u| r.peer_urls.contains(u))),
            false => table.iter().find(|r| {
                let mut have = r.peer_urls.clone();
                have.sort();
                &have == wanted
            }),
        };
        let Some(record) = found else {
            if !is_self {
                ids.push(None);
                continue;
            }
            return Err(format!(
                "this member's peer URLs {} are not in the cluster's member table ({}); \
                 add it first (`ember member add {} --peer-urls ...`)",
                wanted.join(","),
                describe(table),
                config.name
            ));
        };
        // An unnamed member may have started and published a name since.
        if !record.name.is_empty() && !member.name.is_empty() && record.name != member.name {
            return Err(format!(
                "--initial-cluster calls the member at {} {:?}; the cluster calls it {:?}",
                wanted.join(","),
                member.name,
                record.name
            ));
        }
        ids.push(Some(record.id));
    }
    Ok(ids)
}

fn describe(table: &[MemberRecord]) -> String {
    let each = table.iter().map(|r| format!("{}={}", r.name, r.peer_urls.join(",")));
    each.collect::<Vec<_>>().join(" ")
}
