//! Power loss on a killed member: its data directory is rolled back to what
//! the member's sync log (`src/sync_log.rs`, built with the
//! `fault-injection` feature) says was durable, as a cut of the power would
//! leave it after the page cache is gone.
//!
//! - Directories with a logged listing lose every entry not in their last
//!   durable listing: creations and renames that no directory sync covered
//!   are undone. (Entries unlinked since that listing stay gone: the test has
//!   no copy of their bytes. The WAL and snapshot writer unlink only files
//!   that are already obsolete, so this is the milder outcome.)
//! - Each WAL segment keeps `[0, durable)`, its last synced offset (or its
//!   header page when no record of it was ever synced, since the header is
//!   synced before the rename). Past that, what was written but not synced
//!   goes one of three ways, chosen per roll-back by the seeded generator:
//!   all of it lost (zeros: segments are preallocated, so the old contents
//!   are zeros); the write-back got through a prefix of pages and tore the
//!   next one mid-page (a garbage sector); or pages at random were written,
//!   lost, or torn, since the kernel writes dirty pages back in no order.
//! - Other files in a durable listing (snapshots, torn-tail side files) are
//!   kept whole: their writers sync them before they are renamed into place.
//!
//! Every file removed is noted in the sync log as `reset`, so earlier lines
//! about the same name do not count for a file the member creates anew.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ember::wal::record::decode_segment_header;

use crate::support::rng::Rng;

/// The unit the kernel writes back mapped file pages in.
const PAGE_BYTES: usize = 4096;
/// The unit a disk writes atomically (or not at all) when power fails.
const SECTOR_BYTES: usize = 512;

/// What a sync log says is durable.
#[derive(Debug, Default)]
pub struct Durable {
    /// Last synced offset per file.
    pub synced: BTreeMap<PathBuf, usize>,
    /// Last durable listing per directory.
    pub listings: BTreeMap<PathBuf, BTreeSet<String>>,
}

/// Reads a sync log; unknown or malformed lines are an error, since they
/// would mean the test and the writer disagree on the format.
pub fn read_log(log: &Path) -> Result<Durable, String> {
    let text = fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut durable = Durable::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["sync", path, offset] => {
                let offset = offset.parse().map_err(|_| format!("bad line {line:?}"))?;
                durable.synced.insert(PathBuf::from(path), offset);
            }
            ["dir", path, names @ ..] => {
                let names = names.iter().map(|n| n.to_string()).collect();
                durable.listings.insert(PathBuf::from(path), names);
            }
            ["reset", path] => {
                durable.synced.remove(Path::new(path));
            }
            _ => return Err(format!("bad sync log line {line:?}")),
        }
    }
    Ok(durable)
}

/// How the unsynced bytes of segments are treated in one roll-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Nothing unsynced reached the disk.
    All,
    /// A prefix of pages did, then one page tore mid-way.
    TornPrefix,
    /// Each page independently: written, lost or torn.
    Scattered,
}

/// What one roll-back did, for the scenario's log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rolled {
    pub files_removed: usize,
    pub bytes_changed: usize,
}

/// Rolls `data_dir` back to the durable state `log` describes. The member
/// must be dead.
pub fn roll_back(data_dir: &Path, log: &Path, rng: &mut Rng) -> Result<Rolled, String> {
    let durable = read_log(log)?;
    if durable.listings.is_empty() {
        return Err(format!(
            "{} holds no directory sync: built without fault-injection?",
            log.display()
        ));
    }
    let loss = match rng.below(3) {
        0 => Loss::All,
        1 => Loss::TornPrefix,
        _ => Loss::Scattered,
    };
    let mut rolled = Rolled::default();
    let mut removed = Vec::new();
    for (dir, names) in durable.listings.iter().filter(|(dir, _)| dir.starts_with(data_dir)) {
        removed.extend(undo_entries(dir, names)?);
    }
    rolled.files_removed = removed.len();
    note_resets(log, &removed)?;
    let wal = data_dir.join("wal");
    for entry in fs::read_dir(&wal).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "wal") {
            let synced = durable.synced.get(&path).copied();
            rolled.bytes_changed += lose_unsynced(&path, synced, loss, rng)?;
        }
    }
    Ok(rolled)
}

/// Removes the entries of `dir` that its durable listing does not name.
fn undo_entries(dir: &Path, names: &BTreeSet<String>) -> Result<Vec<PathBuf>, String> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return Ok(removed) };
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        if names.contains(&*entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            fs::remove_dir_all(&path).map_err(|e| e.to_string())?;
        } else {
            fs::remove_file(&path).map_err(|e| e.to_string())?;
        }
        removed.push(path);
    }
    Ok(removed)
}

fn note_resets(log: &Path, removed: &[PathBuf]) -> Result<(), String> {
    let mut file = fs::OpenOptions::new().append(true).open(log).map_err(|e| e.to_string())?;
    for path in removed {
        writeln!(file, "reset\t{}", path.display()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Applies `loss` to the bytes of one segment past its durable offset;
/// returns how many bytes changed.
fn lose_unsynced(
    path: &Path,
    synced: Option<usize>,
    loss: Loss,
    rng: &mut Rng,
) -> Result<usize, String> {
    let mut bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let durable = match synced {
        Some(offset) => offset,
        None => match decode_segment_header(&bytes) {
            Ok(header) => header.records_offset as usize,
            // A segment whose header never became durable: nothing in it is.
            Err(_) => 0,
        },
    };
    // Never-written pages are zeros already; only written ones can change.
    let written_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
    if written_end <= durable {
        return Ok(0);
    }
    let before = bytes.clone();
    let end = written_end.next_multiple_of(PAGE_BYTES).min(bytes.len());
    let pages: Vec<usize> = (durable..end).step_by(PAGE_BYTES).collect();
    let kept_prefix = rng.index(pages.len() + 1);
    for (n, &start) in pages.iter().enumerate() {
        // The first "page" starts at the durable offset, which a sealed
        // segment may leave inside a page; the rest are whole pages.
        let stop = (start - start % PAGE_BYTES + PAGE_BYTES).min(end);
        let fate = match loss {
            Loss::All => Fate::Lost,
            Loss::TornPrefix if n < kept_prefix => Fate::Written,
            Loss::TornPrefix if n == kept_prefix => Fate::Torn,
            Loss::TornPrefix => Fate::Lost,
            Loss::Scattered => [Fate::Written, Fate::Lost, Fate::Torn][rng.index(3)],
        };
        apply(&mut bytes[start..stop], fate, rng);
    }
    let changed = bytes.iter().zip(&before).filter(|(a, b)| a != b).count();
    if changed > 0 {
        fs::write(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(changed)
}

#[derive(Clone, Copy)]
enum Fate {
    Written,
    Lost,
    Torn,
}

/// A torn page: some leading sectors made it, one holds garbage, the rest
/// are the old zeros.
fn apply(page: &mut [u8], fate: Fate, rng: &mut Rng) {
    match fate {
        Fate::Written => {}
        Fate::Lost => page.fill(0),
        Fate::Torn => {
            let sectors = page.len().div_ceil(SECTOR_BYTES);
            let good = rng.index(sectors) * SECTOR_BYTES;
            let bad_end = (good + SECTOR_BYTES).min(page.len());
            for byte in &mut page[good..bad_end] {
                *byte = rng.next_u64() as u8;
            }
            page[bad_end..].fill(0);
        }
    }
}
