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
//! Which `NoSpace` of its own a member may clear is `disk_alarm.rs`'s.
//!
//! When the disk fills anyway (the mark set too low, another process
//! writing there), the write that fails stops the member: the WAL's next
//! segment is allocated whole before it is mapped, so a full disk is an
//! error there, never a SIGBUS; a snapshot's file is written with `write`.
//! Nothing that failed was acknowledged: an entry counts toward a commit
//! only once this member's sync returned. `name_full_disk` names the file
//! system in the message the member stops with; freed of the space, the
//! member starts again from its WAL and catches up from its peers.

#![allow(unsafe_code)] // statvfs through libc

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ServeError;
use super::disk_alarm::verdict;
use super::node::Node;
use crate::state::{AlarmKind, AlarmOp, Op};
use crate::wal::WalError;

/// How often the free space is read.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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

/// The file system a member stopped on for want of space: the device and
/// the mount point `/proc/self/mounts` lists for the data directory, and
/// what was free when it stopped.
#[derive(Debug)]
pub struct FullDisk {
    pub data_dir: PathBuf,
    /// (device, mount point); `None` when the mount table cannot be read.
    pub mount: Option<(String, String)>,
    pub free_bytes: Option<u64>,
}

impl std::fmt::Display for FullDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the disk is full: the file system of {}", self.data_dir.display())?;
        if let Some((device, mount_point)) = &self.mount {
            write!(f, " ({device} mounted at {mount_point})")?;
        }
        if let Some(free) = self.free_bytes {
            write!(f, " has {free} bytes free")?;
        }
        write!(f, "; free space there and start this member again, it catches up from its peers")
    }
}

/// `error`, or, when a full disk caused it, `ServeError::DiskFull` naming
/// the file system of `data_dir`.
pub fn name_full_disk(error: ServeError, data_dir: &Path) -> ServeError {
    if !is_disk_full(&error) {
        return error;
    }
    let dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let disk = FullDisk {
        data_dir: data_dir.to_path_buf(),
        mount: mount_of(&mounts, &dir),
        free_bytes: free_bytes(data_dir).ok(),
    };
    ServeError::DiskFull(disk, Box::new(error))
}

/// Whether `error` comes from a write the file system refused for want of
/// space (`ENOSPC`, or the WAL's `NoSpace` from `posix_fallocate`).
fn is_disk_full(error: &ServeError) -> bool {
    let cause: &dyn std::error::Error = match error {
        ServeError::Wal(WalError::NoSpace { .. }) => return true,
        ServeError::Io { source, .. } => source,
        ServeError::Wal(e) => e,
        ServeError::Snap(crate::snap::SnapError::Io { source, .. })
        | ServeError::Snap(crate::snap::SnapError::SyncFailed { source, .. }) => source,
        _ => return false,
    };
    let mut next = Some(cause);
    while let Some(e) = next {
        let io = e.downcast_ref::<std::io::Error>();
        if io.and_then(std::io::Error::raw_os_error) == Some(libc::ENOSPC) {
            return true;
        }
        next = e.source();
    }
    false
}

/// The device and mount point of the longest mount point in `mounts` (as
/// `/proc/self/mounts` lists them) that holds `path`. Spaces in names are
/// written `\040` there and compared as written.
fn mount_of(mounts: &str, path: &Path) -> Option<(String, String)> {
    let holds = |mount_point: &str| path.starts_with(mount_point.replace("\\040", " "));
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?))
        })
        .filter(|(_, mount_point)| holds(mount_point))
        .max_by_key(|(_, mount_point)| mount_point.len())
        .map(|(device, mount_point)| (device.to_string(), mount_point.to_string()))
}

impl Node {
    /// Reads the free space when due and proposes a raise or a clear of
    /// this member's `NoSpace` when the state disagrees with the disk.
    pub(super) fn check_disk(&mut self, now: Instant) {
        if self.leader_id == 0 || !self.disk.due(now, DISK_CHECK_INTERVAL) {
            return;
        }
        let free = match free_bytes(&self.config.data_dir) {
            Ok(free) => free,
            Err(e) => {
                log::warn!("disk: free space of {} unknown: {e}", self.config.data_dir.display());
                return;
            }
        };
        let me = self.config.member_id;
        let raised = self.state.alarms().is_raised_for(me, AlarmKind::NoSpace);
        let verdict = verdict(free, self.config.disk_free_min_bytes);
        let quota_alarmed = self.state.usage().quota_alarmed();
        let Some(raise) = self.disk.decide(verdict, raised, quota_alarmed) else {
            return;
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
    fn a_full_disk_is_told_from_other_stops_and_named() {
        let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let file = PathBuf::from("/data/member/wal/x.wal.tmp");
        let no_segment = ServeError::Wal(WalError::NoSpace { file: file.clone(), size_bytes: 8 });
        assert!(is_disk_full(&no_segment));
        let op = "write";
        let snap = crate::snap::SnapError::Io { file: file.clone(), op, source: enospc() };
        assert!(is_disk_full(&ServeError::Snap(snap)));
        let wal = WalError::Io { file: file.clone(), op, source: enospc() };
        assert!(is_disk_full(&ServeError::Wal(wal)));
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(!is_disk_full(&ServeError::Io { what: "x".into(), source: denied }));

        let mounts = "/dev/sda1 / ext4 rw 0 0\ntmpfs /data tmpfs rw 0 0\n\
                      tmpfs /data/member/wal\\040x tmpfs rw 0 0\n";
        let mount = |p: &str| mount_of(mounts, Path::new(p));
        assert_eq!(mount("/data/member"), Some(("tmpfs".into(), "/data".into())));
        assert_eq!(mount("/database"), Some(("/dev/sda1".into(), "/".into())));
        let spaced = Some(("tmpfs".into(), "/data/member/wal\\040x".into()));
        assert_eq!(mount("/data/member/wal x/1"), spaced);

        let named = name_full_disk(no_segment, Path::new("/no/such/dir"));
        let text = named.to_string();
        assert!(text.starts_with("the disk is full: the file system of /no/such/dir"), "{text}");
        assert!(text.ends_with("wal: no space for segment /data/member/wal/x.wal.tmp of 8 bytes"));
    }

    #[test]
    fn the_free_space_of_a_directory_is_read() {
        let free = free_bytes(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(free > 0);
        assert!(free_bytes(Path::new("/no/such/directory/at/all")).is_err());
    }
}
