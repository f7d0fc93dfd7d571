//! Who a data directory belongs to: the member's id, name, cluster id and
//! cluster token, written on first start and checked at every start; and
//! whether the member was removed from the cluster.
//!
//! A data directory holds one member's log; started under another `--name`
//! or another `--initial-cluster-token` it would speak with the wrong
//! identity, so such a start is refused naming both values. The stored ids
//! win over the ones the flags derive: a member whose peer URLs were
//! updated keeps the id it was given.
//!
//! A member that learns it was removed from the cluster records it here
//! before it stops: its log can never be part of the cluster again, and
//! every later start is refused at once, saying how to rejoin, rather than
//! dialing peers that will only refuse it.
//!
//! ```text
//! file "member" = "EMBRMEMB" format:u8(=2) len:u32le postcard(Identity) crc32:u32le
//! ```
//!
//! Format 1, written before removals were recorded, has no `removed` field
//! and reads as not removed; it is rewritten only if the member is removed.
//!
//! The CRC covers everything before it. The file is written to a temporary
//! name, synced, renamed and the directory synced, so a crash leaves either
//! no file or a whole one.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ServeError;
use super::config::Config;

const FILE_NAME: &str = "member";
const MAGIC: &[u8; 8] = b"EMBRMEMB";
const FORMAT: u8 = 2;
/// The format before removals were recorded.
const FORMAT_WITHOUT_REMOVED: u8 = 1;
const HEADER_BYTES: usize = 8 + 1 + 4;
/// Far above a real identity (two ids, a name and a token of a few hundred
/// bytes at most); a bound on what a damaged length can allocate.
pub const IDENTITY_MAX_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub token: String,
    /// The member was removed from the cluster: the directory must not
    /// start again.
    pub removed: bool,
}

/// The identity of format 1.
#[derive(Deserialize)]
struct IdentityWithoutRemoved {
    member_id: u64,
    cluster_id: u64,
    name: String,
    token: String,
}

impl Identity {
    fn of(config: &Config) -> Identity {
        Identity {
            member_id: config.member_id,
            cluster_id: config.cluster_id,
            name: config.name.clone(),
            token: config.initial_cluster_token.clone(),
            removed: false,
        }
    }
}

pub fn encode(identity: &Identity) -> Vec<u8> {
    let body = postcard::to_allocvec(identity).expect("identities always serialize");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Result<Identity, String> {
    if bytes.len() < HEADER_BYTES + 4 || bytes.len() > IDENTITY_MAX_BYTES {
        return Err(format!("{} bytes is not the size of an identity", bytes.len()));
    }
    if &bytes[..8] != MAGIC || ![FORMAT, FORMAT_WITHOUT_REMOVED].contains(&bytes[8]) {
        return Err("not an identity file of a known format".into());
    }
    let len = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
    if HEADER_BYTES + len + 4 != bytes.len() {
        return Err("length does not match the file".into());
    }
    let (covered, crc) = bytes.split_at(HEADER_BYTES + len);
    if crc32fast::hash(covered) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("CRC mismatch".into());
    }
    let body = &covered[HEADER_BYTES..];
    let undecodable = |_| "body does not decode".to_string();
    if bytes[8] == FORMAT_WITHOUT_REMOVED {
        let old: IdentityWithoutRemoved = postcard::from_bytes(body).map_err(undecodable)?;
        let IdentityWithoutRemoved { member_id, cluster_id, name, token } = old;
        return Ok(Identity { member_id, cluster_id, name, token, removed: false });
    }
    postcard::from_bytes(body).map_err(undecodable)
}

/// Why a removed member's data directory does not start, and how to rejoin.
pub fn removed_message(member_id: u64, data_dir: &Path) -> String {
    format!(
        "member {member_id:016x} has been permanently removed from the cluster, and its data \
         directory {} cannot serve in it again; to rejoin, add the member again \
         (`ember member add`) and start it with an empty data directory and \
         --initial-cluster-state existing",
        data_dir.display()
    )
}

/// What is wrong with starting `stored`'s data directory with `config`.
fn mismatch(stored: &Identity, config: &Config) -> Option<String> {
    if stored.name != config.name {
        return Some(format!(
            "the data directory belongs to member {:?}, not --name {:?}",
            stored.name, config.name
        ));
    }
    if stored.token != config.initial_cluster_token {
        return Some(format!(
            "the data directory belongs to cluster token {:?}, not --initial-cluster-token {:?}",
            stored.token, config.initial_cluster_token
        ));
    }
    None
}

/// Whether the data directory has an identity yet (it has been started).
pub fn exists(dir: &Path) -> bool {
    dir.join(FILE_NAME).exists()
}

/// Checks the data directory's identity against `config` (writing it on
/// first start) and sets `config`'s ids to the stored ones.
pub fn check(config: &mut Config) -> Result<(), ServeError> {
    let dir = &config.data_dir;
    fs::create_dir_all(dir).map_err(|e| ServeError::io("create the data directory", e))?;
    let path = dir.join(FILE_NAME);
    let stored = match fs::read(&path) {
        Ok(bytes) => {
            decode(&bytes).map_err(|e| ServeError::Corrupt(format!("{}: {e}", path.display())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity::of(config);
            write(dir, &identity)?;
            return Ok(());
        }
        Err(e) => return Err(ServeError::io("read the member identity", e)),
    };
    if let Some(why) = mismatch(&stored, config) {
        return Err(ServeError::Config(format!("{why} ({})", path.display())));
    }
    if stored.removed {
        return Err(ServeError::Removed(removed_message(stored.member_id, dir)));
    }
    if stored.member_id != config.member_id {
        log::info!(
            "keeping member id {:016x} (the flags derive {:016x}: peer URLs changed)",
            stored.member_id,
            config.member_id
        );
    }
    config.member_id = stored.member_id;
    config.cluster_id = stored.cluster_id;
    Ok(())
}

/// Records in the data directory that its member was removed from the
/// cluster; `config` carries the stored ids (see `check`).
pub fn record_removed(config: &Config) -> Result<(), ServeError> {
    write(&config.data_dir, &Identity { removed: true, ..Identity::of(config) })
}

fn write(dir: &Path, identity: &Identity) -> Result<(), ServeError> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let io = |what: &'static str| move |e| ServeError::io(what, e);
    let mut file = fs::File::create(&tmp).map_err(io("create the member identity"))?;
    file.write_all(&encode(identity)).map_err(io("write the member identity"))?;
    file.sync_all().map_err(io("sync the member identity"))?;
    fs::rename(&tmp, dir.join(FILE_NAME)).map_err(io("rename the member identity"))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync the data directory"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Identity {
        Identity {
            member_id: 7,
            cluster_id: 9,
            name: "pi-1".into(),
            token: "edge".into(),
            removed: true,
        }
    }

    #[test]
    fn a_format_1_file_reads_as_not_removed() {
        let old = sample();
        let body = postcard::to_allocvec(&(old.member_id, old.cluster_id, &old.name, &old.token));
        let body = body.unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.push(FORMAT_WITHOUT_REMOVED);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes), Ok(Identity { removed: false, ..old }));
    }

    #[test]
    fn round_trip_and_every_damage_is_an_error() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes), Ok(sample()));
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes accepted");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {at} accepted");
        }
    }
}
