//! The free space of the data directory's file system, watched on a timer:
//! below `--disk-free-min-bytes` this member raises `NoSpace` for itself,
//! before the WAL could fail to allocate its next segment, and clears it
//! once the free space is back above the mark plus `DISK_FREE_HYSTERESIS`.
//!
//! One `statvfs` call every `DISK_CHECK_INTERVAL`: a few microseconds, off
//! the path of any request. The alarm goes through the log like any other,
//! so every member refuses the writes that take room while one member's
//! disk is short: that member would fail to log them.
//!
//! A member that raised the alarm remembers it only while it runs; after a
//! restart with room again it clears a `NoSpace` of its own that the quota
//! did not raise.

#![allow(unsafe_code)] // statvfs through libc

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::node::Node;
use crate::state::{AlarmKind, AlarmOp, Op};

/// How often the free space is read.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The alarm clears only once the free space is this much above the mark,
/// so a disk hovering at the mark does not raise and clear it by turns:
/// two default WAL segments.
pub const DISK_FREE_HYSTERESIS_BYTES: u64 = 2 * crate::wal::SEGMENT_SIZE_BYTES_DEFAULT;

/// Bytes an unprivileged process may still write on the file system that
/// holds `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a path with a NUL byte"))?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a NUL-terminated string that outlives the call, and
    // `stats` is a writable statvfs the call fills.
    if unsafe { libc::statvfs(name.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

/// What the free space asks for, with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskVerdict {
    Short,
    Roomy,
    /// Between the mark and the mark plus the hysteresis: no change.
    Hold,
}

pub fn verdict(free_bytes: u64, min_bytes: u64) -> DiskVerdict {
    if free_bytes < min_bytes {
        DiskVerdict::Short
    } else if free_bytes >= min_bytes.saturating_add(DISK_FREE_HYSTERESIS_BYTES) {
        DiskVerdict::Roomy
    } else {
        DiskVerdict::Hold
    }
}

impl Node {
    /// Reads the free space when due and proposes a raise or a clear of
    /// this member's `NoSpace` when the state disagrees with the disk.
    pub(super) fn check_disk(&mut self, now: Instant) {
        if now < self.next_disk_check || self.leader_id == 0 {
            return;
        }
        self.next_disk_check = now + DISK_CHECK_INTERVAL;
        let free = match free_bytes(&self.config.data_dir) {
            Ok(free) => free,
            Err(e) => {
                log::warn!("disk: free space of {} unknown: {e}", self.config.data_dir.display());
                return;
            }
        };
        let me = self.config.member_id;
        let raised = self.state.alarms().is_raised_for(me, AlarmKind::NoSpace);
        let raise = match verdict(free, self.config.disk_free_min_bytes) {
            DiskVerdict::Short if !raised => true,
            DiskVerdict::Roomy if raised && !self.state.usage().quota_alarmed() => false,
            _ => return,
        };
        match raise {
            true => log::warn!(
                "disk: {free} bytes free on the file system of {}, under --disk-free-min-bytes \
                 {}: raising NOSPACE",
                self.config.data_dir.display(),
                self.config.disk_free_min_bytes
            ),
            false => log::info!(
                "disk: {free} bytes free on the file system of {} again: clearing NOSPACE",
                self.config.data_dir.display()
            ),
        }
        let op = Op::Alarm(AlarmOp { member_id: me, kind: AlarmKind::NoSpace, raise });
        if let Err(e) = self.proposals.propose_unwaited(&mut self.raft, vec![op]) {
            log::debug!("proposing the disk alarm: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_holds_between_the_marks() {
        let min = 100 << 20;
        assert_eq!(verdict(min - 1, min), DiskVerdict::Short);
        assert_eq!(verdict(min, min), DiskVerdict::Hold);
        assert_eq!(verdict(min + DISK_FREE_HYSTERESIS_BYTES - 1, min), DiskVerdict::Hold);
        assert_eq!(verdict(min + DISK_FREE_HYSTERESIS_BYTES, min), DiskVerdict::Roomy);
    }

    #[test]
    fn the_free_space_of_a_directory_is_read() {
        let free = free_bytes(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(free > 0);
        assert!(free_bytes(Path::new("/no/such/directory/at/all")).is_err());
    }
}
