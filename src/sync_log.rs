//! Fault injection only (cargo feature `fault-injection`, off by default):
//! a side file that says, after each successful sync, what is durable, so a
//! power-loss test can roll a killed member's files back to exactly that.
//!
//! The file is named by the environment variable `EMBER_FAULT_SYNC_LOG`;
//! without it nothing is written and nothing else changes. Lines, appended
//! with one `write` each (so the snapshot thread and the loop never
//! interleave within a line):
//!
//! - `sync\t<path>\t<offset>`: bytes `[0, offset)` of the file are durable;
//! - `dir\t<path>\t<name>\t<name>...`: these are the directory's entries
//!   that would survive a power cut now (creations, renames and unlinks
//!   before this point are durable).
//!
//! A line is written only after its sync returned, so the log never claims
//! more than the disk holds; a kill between the sync and the line makes it
//! claim less, which looks like a crash just before the sync and is as
//! valid a power cut.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The environment variable that names the log.
pub const SYNC_LOG_ENV: &str = "EMBER_FAULT_SYNC_LOG";

/// The open log, or `None` when the variable is unset or the file cannot be
/// opened (then the test sees no lines and fails loudly on its side).
fn log_file() -> &'static Option<Mutex<File>> {
    static FILE: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::var_os(SYNC_LOG_ENV)?;
        let file = OpenOptions::new().create(true).append(true).open(path).ok()?;
        Some(Mutex::new(file))
    })
}

fn append(line: String) {
    let Some(file) = log_file() else { return };
    let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // A failed write only makes the log claim less; the node goes on.
    let _ = file.write_all(line.as_bytes());
}

/// After a data sync: `[0, offset)` of `path` is durable.
pub fn note_synced(path: &Path, offset: usize) {
    if log_file().is_some() {
        append(format!("sync\t{}\t{offset}\n", path.display()));
    }
}

/// After a directory sync: the entries of `dir` as they are now.
pub fn note_dir_synced(dir: &Path) {
    if log_file().is_none() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut names: Vec<String> =
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut line = format!("dir\t{}", dir.display());
    for name in names {
        line.push('\t');
        line.push_str(&name);
    }
    line.push('\n');
    append(line);
}
