//! One owner per data directory: an exclusive `flock` on the file `lock`
//! in it, taken before anything in the directory is read and held for the
//! life of the process.
//!
//! Two processes on one directory would each append to the same WAL and
//! overwrite each other's hard state; the next start then finds entries it
//! acknowledged missing. A systemd restart racing a node started by hand is
//! enough for that on a real board, so the second process is refused at
//! once, naming the directory and the holder's pid. The kernel drops the
//! lock when its holder dies, however it dies (kill -9, power cut), so a
//! stale lock file never keeps a node down; its content is only a hint
//! for the operator.

#![allow(unsafe_code)] // flock through libc

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::ServeError;

pub const LOCK_FILE_NAME: &str = "lock";
/// Far above a pid and a newline; what a damaged file may make us read.
const LOCK_CONTENT_MAX_BYTES: u64 = 64;

/// Holds the data directory's lock until dropped (by the process's end).
#[derive(Debug)]
pub struct DirLock {
    /// Invariant: holds the exclusive flock while this value lives.
    _file: File,
}

impl DirLock {
    /// Locks `dir` (creating it if needed) and writes this process's pid
    /// into the lock file; `ServeError::Locked` if another process holds it.
    pub fn take(dir: &Path) -> Result<DirLock, ServeError> {
        let io = |what: &'static str| move |e| ServeError::io(what, e);
        fs::create_dir_all(dir).map_err(io("create the data directory"))?;
        let path = dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open the data directory's lock file"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder_pid = read_pid(&mut file);
                return Err(ServeError::Locked { dir: dir.to_path_buf(), holder_pid });
            }
            return Err(ServeError::io("lock the data directory", error));
        }
        // Only the holder writes, so the pid read by a refused process is
        // this one's (or nothing, in the instant before this write).
        file.set_len(0).map_err(io("write the data directory's lock file"))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io("write the data directory's lock file"))?;
        Ok(DirLock { _file: file })
    }
}

/// The pid the holder wrote, if the file holds one.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(LOCK_CONTENT_MAX_BYTES).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// The message for a directory another process holds.
pub fn locked_message(dir: &Path, holder_pid: Option<u32>) -> String {
    let holder = match holder_pid {
        Some(pid) => format!("process {pid}"),
        None => "another process".to_string(),
    };
    format!(
        "data directory {} is in use by {holder}: one process per data directory \
         (stop it, or give this one another --data-dir)",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-lock-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_on_a_held_directory_is_refused_with_the_holders_pid() {
        let dir = scratch("held");
        let first = DirLock::take(&dir).unwrap();
        // flock locks belong to the open file description: a second open
        // in this process conflicts exactly as another process would.
        match DirLock::take(&dir) {
            Err(ServeError::Locked { dir: named, holder_pid }) => {
                assert_eq!(named, dir);
                assert_eq!(holder_pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        let again = DirLock::take(&dir).unwrap();
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }
}
