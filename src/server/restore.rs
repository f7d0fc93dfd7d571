//! `ember snapshot restore`: a new member's data directory from a backup
//! file, for a new cluster that starts with the backed-up state.
//!
//! The file is checked whole (`snap::BackupFile`: magic, version, lengths,
//! SHA-256) and its payload decoded into a state machine before anything
//! is written, so a wrong, truncated or damaged file leaves no trace. Then,
//! under the directory's lock and only in an empty (or absent) directory:
//! the member's identity from the flags (a new cluster id from
//! `--initial-cluster-token`, the member id from its name and peer URLs),
//! and the state as the snapshot at index 1 of term 1, with the member
//! table the flags name in place of the backup's, exactly as a new
//! cluster's bootstrap writes its empty one. Every member restored with the
//! same file and flags holds the same state, so they start as one cluster
//! with `ember serve` and the same flags.
//!
//! Kept: the keyspace with its history back to the compacted revision,
//! revisions, leases (each with its granted TTL), users, roles and whether
//! auth is on. A lease's remaining time is not in a backup (it is local to
//! each member): every restored lease gets its full granted TTL again,
//! counted from when the new cluster's leader takes office, as a new leader
//! does for every lease.

use std::io::Read;
use std::path::Path;

use super::config::Config;
use super::dir_lock::{DirLock, LOCK_FILE_NAME};
use super::node::{identity_of, initial_members, install_first_snapshot, store_config};
use super::{ServeError, identity};
use crate::mvcc::StoreConfig;
use crate::snap::{BackupFile, RETAIN_COUNT_DEFAULT, SnapDir};
use crate::state::{Identity, Restorer, StateMachine};
use crate::storage::DiskStorage;
use crate::wal::{Wal, WalConfig};

/// Bytes of payload fed to the decoder per step.
const RESTORE_READ_BYTES: usize = 256 << 10;

/// What a restore wrote, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    pub revision: u64,
    pub keys: usize,
    pub members: usize,
}

/// Checks `backup`, then writes the data directory `config` names.
pub fn restore(backup: &Path, mut config: Config) -> Result<Restored, ServeError> {
    let file = BackupFile::open(backup).map_err(|e| ServeError::Corrupt(e.to_string()))?;
    let mut state = read_state(&file, identity_of(&config), store_config(&config))?;
    state.replace_members(initial_members(&config));
    refuse_non_empty(&config.data_dir, &[])?;
    let _lock = DirLock::take(&config.data_dir)?;
    // The lock file is ours; anything else appeared since the check above.
    refuse_non_empty(&config.data_dir, &[LOCK_FILE_NAME])?;
    identity::check(&mut config)?;
    let wal = Wal::open(&config.data_dir, WalConfig::default()).map_err(ServeError::Wal)?;
    let snaps = SnapDir::open(&config.data_dir, RETAIN_COUNT_DEFAULT).map_err(ServeError::Snap)?;
    let mut storage = DiskStorage { wal, snaps };
    install_first_snapshot(&mut storage, &config, &state)?;
    Ok(Restored {
        member_id: config.member_id,
        cluster_id: config.cluster_id,
        revision: state.store().current_revision(),
        keys: state.store().key_count(),
        members: state.members().len(),
    })
}

/// The state a checked backup holds, decoded a buffer at a time, as of
/// index 1 of a new cluster (`identity`'s).
pub fn read_state(
    file: &BackupFile,
    identity: Identity,
    store_config: StoreConfig,
) -> Result<StateMachine, ServeError> {
    let corrupt = |e: String| ServeError::Corrupt(format!("the snapshot's payload: {e}"));
    let mut restorer = Restorer::new(identity, store_config, (1, 1), 0);
    let mut payload = file.payload().map_err(|e| ServeError::Corrupt(e.to_string()))?;
    let mut buffer = vec![0u8; RESTORE_READ_BYTES];
    loop {
        let n = payload.read(&mut buffer).map_err(|e| ServeError::io("read the snapshot", e))?;
        if n == 0 {
            return restorer.finish().map_err(corrupt);
        }
        restorer.feed(&buffer[..n]).map_err(corrupt)?;
    }
}

/// Refuses a data directory that holds anything but the names in `ours`.
fn refuse_non_empty(dir: &Path, ours: &[&str]) -> Result<(), ServeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ServeError::io("list the data directory", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| ServeError::io("list the data directory", e))?;
        let name = entry.file_name();
        if !ours.iter().any(|ours| name == *ours) {
            return Err(ServeError::Config(format!(
                "the data directory {} is not empty ({} is there): restore writes only a \
                 new member's directory",
                dir.display(),
                name.to_string_lossy()
            )));
        }
    }
    Ok(())
}
