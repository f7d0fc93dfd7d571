//! Who a data directory belongs to: the member's id, name, cluster id and
//! cluster token, written on first start and checked at every start.
//!
//! A data directory holds one member's log; started under another `--name`
//! or another `--initial-cluster-token` it would speak with the wrong
//! identity, so such a start is refused naming both values. The stored ids
//! win over the ones the flags derive: a member whose peer URLs were
//! updated keeps the id it was given.
//!
//! ```text
//! file "member" = "EMBRMEMB" format:u8(=1) len:u32le postcard(Identity) crc32:u32le
//! ```
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
const FORMAT: u8 = 1;
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
}

impl Identity {
    fn of(config: &Config) -> Identity {
        Identity {
            member_id: config.member_id,
            cluster_id: config.cluster_id,
            name: config.name.clone(),
            token: config.initial_cluster_token.clone(),
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
    if &bytes[..8] != MAGIC || bytes[8] != FORMAT {
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
    postcard::from_bytes(&covered[HEADER_BYTES..]).map_err(|_| "body does not decode".into())
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
        Identity { member_id: 7, cluster_id: 9, name: "pi-1".into(), token: "edge".into() }
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
