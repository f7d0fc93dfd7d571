//! This member's own version, and the refusal of a member too old for the
//! cluster: at start, from its snapshot and the committed entries of its
//! log, before the node exists; at runtime through `refuse_if_too_old`,
//! which the loop asks after every Ready (`cluster_version.rs`).
//!
//! The decisions themselves are pure and replicated (`state::version`).

use super::ServeError;
use crate::raft::Storage;
use crate::state::version;
use crate::state::{StateMachine, Version};
use crate::storage::DiskStorage;

/// Fault injection only: the version this member claims instead of its
/// own (`major.minor.patch`), so tests can run members of other versions
/// from one build.
#[cfg(feature = "fault-injection")]
pub const FAULT_VERSION_ENV: &str = "EMBER_FAULT_VERSION";

/// Bytes of committed entries read at a time by the check at start: the
/// log after the snapshot is read in pieces this size, never whole.
pub const START_CHECK_BATCH_BYTES: u64 = 4 << 20;

/// This build's version, from Cargo.
pub fn build_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is major.minor.patch")
}

/// The version this member runs and publishes: the build's, or under
/// fault injection the one `EMBER_FAULT_VERSION` names.
pub fn own_version() -> Result<Version, ServeError> {
    #[cfg(feature = "fault-injection")]
    if let Some(text) = crate::flags::process_env(FAULT_VERSION_ENV) {
        return Version::parse(&text).ok_or_else(|| {
            ServeError::Config(format!("{FAULT_VERSION_ENV}={text:?} is not major.minor.patch"))
        });
    }
    Ok(build_version())
}

/// Refuses to start a member older than the cluster version its snapshot
/// holds, or that the committed entries after it lead to. Reads only:
/// a refused member leaves its data directory as it found it.
pub fn check_at_start(
    own: Version,
    storage: &DiskStorage,
    state: &StateMachine,
) -> Result<(), ServeError> {
    let mut replay = state.version_replay();
    let commit = storage.wal.hard_state().commit.min(storage.wal.last_index());
    let mut next = state.applied_index() + 1;
    while next <= commit {
        let entries = storage
            .entries(next, commit + 1, START_CHECK_BATCH_BYTES)
            .map_err(|e| ServeError::Corrupt(format!("reading entries from {next}: {e:?}")))?;
        let Some(last) = entries.last() else { break };
        next = last.index + 1;
        entries.iter().for_each(|entry| replay.feed(entry));
    }
    refuse_if_too_old(own, replay.cluster_version())
}

/// `ServeError::TooOld` when `own` is below the cluster version.
pub(super) fn refuse_if_too_old(own: Version, cluster: Option<Version>) -> Result<(), ServeError> {
    match cluster {
        Some(cluster) if !version::can_run(own, Some(cluster)) => {
            let message = version::too_old_message(own, cluster);
            log::error!("{message}");
            Err(ServeError::TooOld(message))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_version_parses_and_the_refusal_names_both_versions() {
        let own = build_version();
        assert_eq!(own.to_string(), env!("CARGO_PKG_VERSION"));
        assert!(refuse_if_too_old(own, None).is_ok());
        assert!(refuse_if_too_old(own, Some(own.release())).is_ok());
        let above = Version::new(own.major, own.minor + 1, 0);
        let Err(ServeError::TooOld(message)) = refuse_if_too_old(own, Some(above)) else {
            panic!("a newer cluster version must refuse");
        };
        assert!(message.contains(&own.to_string()), "{message}");
        assert!(message.contains(&above.release_text()), "{message}");
    }
}
