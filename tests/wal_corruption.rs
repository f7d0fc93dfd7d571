//! Damage on disk and its verdict: a torn tail is repaired (the damaged bytes
//! kept aside, a warning logged), anything else refuses to start with an
//! error naming the file and the offset. Never a panic, never a log that is
//! silently shorter.

mod wal_support;

use std::fs;
use std::path::{Path, PathBuf};

use ember::raft::{Entry, HardState};
use ember::wal::record::{Parsed, RecordKind, decode_segment_header, parse_record};
use ember::wal::{Corruption, Problem, Wal, WalError, parse_segment_name};
use wal_support::{TestDir, durable_dir, entry, read_log, segment_paths, small_config};

/// A WAL of at least three segments, written in synced batches of four
/// entries with the hard state trailing one batch behind (as a follower's
/// commit does), at least eight of them in the last segment, then a last
/// batch of ten entries with no hard state. Restored byte for byte before
/// each case.
struct Fixture {
    dir: TestDir,
    files: Vec<(PathBuf, Vec<u8>)>,
    log: Vec<Entry>,
    /// Index of the first entry of the last batch.
    last_batch_first: u64,
}

const PAYLOAD_BYTES: usize = 100;

impl Fixture {
    fn new(name: &str) -> Option<Fixture> {
        let dir = durable_dir(name)?;
        let mut wal = Wal::open(&dir, small_config()).unwrap();
        let mut log = Vec::new();
        let mut commit = 0;
        let (mut segments, mut batches_in_last) = (1, 0);
        while segments < 3 || batches_in_last < 8 {
            let batch_start = log.len() as u64 + 1;
            let batch: Vec<_> =
                (batch_start..batch_start + 4).map(|i| entry(i, 1, PAYLOAD_BYTES)).collect();
            wal.append(&batch).unwrap();
            wal.set_hard_state(&HardState { term: 1, vote: 1, commit }).unwrap();
            wal.sync().unwrap();
            commit = batch_start + 3;
            log.extend(batch);
            batches_in_last = if wal.segment_count() > segments { 1 } else { batches_in_last + 1 };
            segments = wal.segment_count();
        }
        let last_batch_first = log.len() as u64 + 1;
        let last: Vec<_> =
            (last_batch_first..last_batch_first + 10).map(|i| entry(i, 1, PAYLOAD_BYTES)).collect();
        wal.append(&last).unwrap();
        wal.sync().unwrap();
        log.extend(last);
        assert!(wal.segment_count() >= 3, "fixture spans {} segments", wal.segment_count());
        drop(wal);
        let files =
            segment_paths(&dir).into_iter().map(|p| (p.clone(), fs::read(p).unwrap())).collect();
        Some(Fixture { dir, files, log, last_batch_first })
    }

    fn restore(&self) {
        let wal_dir = self.dir.join("wal");
        for entry in fs::read_dir(&wal_dir).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for (path, bytes) in &self.files {
            fs::write(path, bytes).unwrap();
        }
    }

    fn segment(&self, position: usize) -> &(PathBuf, Vec<u8>) {
        &self.files[position]
    }

    fn last_segment(&self) -> &(PathBuf, Vec<u8>) {
        self.files.last().unwrap()
    }

    fn open(&self) -> Result<Wal, WalError> {
        Wal::open(&self.dir, small_config())
    }

    fn side_files(&self) -> Vec<PathBuf> {
        fs::read_dir(self.dir.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".torn-"))
            .collect()
    }
}

/// `(offset, kind, index, size)` of every valid record of a segment image.
fn records(path: &Path, bytes: &[u8]) -> Vec<(usize, RecordKind, u64, usize)> {
    let (seq, _) = parse_segment_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
    let mut found = Vec::new();
    let mut offset = decode_segment_header(bytes).unwrap().records_offset as usize;
    while let Parsed::Record(record) = parse_record(bytes, seq, offset) {
        found.push((offset, record.kind, record.index, record.size_bytes));
        offset += record.size_bytes;
    }
    found
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn corruption(result: Result<Wal, WalError>) -> Corruption {
    match result {
        Err(WalError::Corrupt { corruption, .. }) => corruption,
        Err(other) => panic!("expected a corruption verdict, got {other}"),
        Ok(wal) => panic!("damage was accepted; log ends at {}", wal.last_index()),
    }
}

fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    let mut image = fs::read(path).unwrap();
    image[offset..offset + bytes.len()].copy_from_slice(bytes);
    fs::write(path, image).unwrap();
}

#[test]
fn torn_tails_of_every_length_are_cut_off_and_kept_aside() {
    let Some(fixture) = Fixture::new("corrupt-torn") else { return };
    let (path, bytes) = fixture.last_segment();
    let all = records(path, bytes);
    let &(offset, kind, index, size) =
        all.iter().rev().find(|r| r.1 == RecordKind::Normal).unwrap();
    let last_index = fixture.log.len() as u64;
    assert_eq!((kind, index), (RecordKind::Normal, last_index));
    let payload_end = 24 + PAYLOAD_BYTES;
    // Zeros (fresh space) at every length; 0xff (erased flash) at a sample.
    let lengths = |fill: u8| (0..size).filter(move |n| fill == 0 || n % 5 == 0 || *n < 24);
    for fill in [0x00u8, 0xff] {
        for written_bytes in lengths(fill) {
            fixture.restore();
            let mut image = bytes.clone();
            let tail_end = (offset + size).next_multiple_of(4096);
            image[offset + written_bytes..tail_end].fill(fill);
            fs::write(path, &image).unwrap();
            let wal = fixture.open().unwrap_or_else(|e| panic!("length {written_bytes}: {e}"));
            // With zeros, a record whose missing bytes were zeros anyway (its
            // padding, say) is whole: only the pad record after it is gone.
            let missing = &bytes[offset + written_bytes..offset + size];
            let whole = fill == 0 && missing.iter().all(|&b| b == 0);
            assert!(!whole || written_bytes >= payload_end - 1, "payload bytes missing");
            let expected_last = if whole { last_index } else { last_index - 1 };
            assert_eq!(wal.last_index(), expected_last, "length {written_bytes} fill {fill}");
            assert!(read_log(&wal) == fixture.log[..expected_last as usize]);
            let kept_any = bytes[offset..offset + written_bytes].iter().any(|&b| b != 0);
            let damaged = !whole && (fill != 0 || kept_any);
            assert_eq!(wal.repaired_tail().is_some(), damaged, "length {written_bytes}");
            assert_eq!(fixture.side_files().len(), usize::from(damaged));
        }
    }
    // The repair leaves a clean log: reopening finds nothing to repair, and
    // writing on continues the log on a fresh page, so the page holding the
    // surviving records is never written again.
    let mut wal = fixture.open().unwrap();
    assert!(wal.repaired_tail().is_none());
    let next = wal.last_index() + 1;
    wal.append(&[entry(next, 2, 10)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = fixture.open().unwrap();
    assert_eq!(wal.entry(next).unwrap(), entry(next, 2, 10));
    let written = fs::read(path).unwrap();
    let placed =
        records(path, &written).into_iter().find(|r| r.2 == next && r.1 == RecordKind::Normal);
    assert_eq!(placed.map(|r| r.0 % 4096), Some(0), "the next batch starts on a fresh page");
}

#[test]
fn garbage_after_the_tail_is_kept_aside_and_the_log_is_whole() {
    let Some(fixture) = Fixture::new("corrupt-garbage") else { return };
    fixture.restore();
    let (path, bytes) = fixture.last_segment();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let garbage: Vec<u8> = (0..700u32).map(|i| (i * 151 + 7) as u8).collect();
    write_at(path, end + 1000, &garbage);
    let wal = fixture.open().unwrap();
    assert!(read_log(&wal) == fixture.log);
    let torn = wal.repaired_tail().expect("garbage is reported");
    let side = fs::read(&fixture.side_files()[0]).unwrap();
    assert_eq!(side.len(), torn.end - torn.offset);
    assert!(side.ends_with(&garbage));
}

#[test]
fn a_zeroed_sector_in_synced_records_is_refused_but_in_the_last_batch_repaired() {
    let Some(fixture) = Fixture::new("corrupt-sector") else { return };
    let (path, bytes) = fixture.last_segment();
    let all = records(path, bytes);
    let middle = all[all.len() / 3];
    fixture.restore();
    let sector = middle.0 / 512 * 512;
    write_at(path, sector, &[0u8; 512]);
    let found = corruption(fixture.open());
    assert_eq!(found.file_name, name_of(path));
    assert!(
        found.offset as usize <= middle.0
            && found.offset as usize >= sector.saturating_sub(PAYLOAD_BYTES + 32)
    );
    assert!(
        matches!(found.problem, Problem::InvalidRecord { later_valid_offset: Some(_), .. }),
        "{found}"
    );
    // The same damage in the last batch is what a power cut mid-sync leaves
    // when the kernel wrote that batch's later sectors first.
    fixture.restore();
    let first = fixture.last_batch_first;
    let first_of_batch = all.iter().find(|r| r.1 == RecordKind::Normal && r.2 == first).unwrap();
    assert_eq!(first_of_batch.0 % 512, 0, "batches start on a fresh page");
    write_at(path, first_of_batch.0, &[0u8; 512]);
    let wal = fixture.open().unwrap();
    assert!(wal.repaired_tail().is_some());
    assert_eq!(wal.last_index(), first - 1);
}

#[test]
fn a_flipped_bit_in_a_synced_record_is_refused_with_file_and_offset() {
    let Some(fixture) = Fixture::new("corrupt-bitflip") else { return };
    for position in [fixture.files.len() - 1, 0, 1] {
        let (path, bytes) = fixture.segment(position);
        let all = records(path, bytes);
        let victim = all[all.len() / 2];
        fixture.restore();
        wal_support::flip_bit(path, victim.0 + 30, 3);
        let found = corruption(fixture.open());
        assert_eq!(
            (found.file_name.as_str(), found.offset as usize),
            (name_of(path).as_str(), victim.0)
        );
        let message =
            WalError::Corrupt { dir: fixture.dir.join("wal"), corruption: found }.to_string();
        assert!(
            message.contains(&name_of(path)) && message.contains(&victim.0.to_string()),
            "{message}"
        );
    }
}

#[test]
fn a_deleted_middle_segment_is_refused() {
    let Some(fixture) = Fixture::new("corrupt-deleted") else { return };
    fixture.restore();
    fs::remove_file(&fixture.segment(1).0).unwrap();
    let found = corruption(fixture.open());
    assert_eq!(found.file_name, name_of(&fixture.segment(2).0));
    assert!(matches!(found.problem, Problem::SequenceGap { expected: 2, found: 3 }), "{found}");
}

#[test]
fn a_deleted_first_segment_is_refused() {
    let Some(fixture) = Fixture::new("corrupt-deleted-first") else { return };
    fixture.restore();
    fs::remove_file(&fixture.segment(0).0).unwrap();
    let found = corruption(fixture.open());
    assert!(matches!(found.problem, Problem::LogStartsAfterSnapshot { .. }), "{found}");
}

#[test]
fn renamed_segments_are_refused() {
    let Some(fixture) = Fixture::new("corrupt-renamed") else { return };
    let path = &fixture.segment(1).0;
    let (seq, first_index) = parse_segment_name(&name_of(path)).unwrap();
    fixture.restore();
    let other = path.with_file_name(ember::wal::segment_file_name(seq, first_index + 1));
    fs::rename(path, &other).unwrap();
    let found = corruption(fixture.open());
    assert_eq!((found.file_name, found.offset), (name_of(&other), 0));
    assert!(matches!(found.problem, Problem::NameMismatch { .. }));
    fixture.restore();
    fs::rename(path, path.with_file_name("old.wal")).unwrap();
    assert!(matches!(fixture.open(), Err(WalError::StrayFile { .. })));
}

#[test]
fn a_shortened_segment_is_refused() {
    let Some(fixture) = Fixture::new("corrupt-short") else { return };
    fixture.restore();
    let (path, bytes) = fixture.segment(1);
    fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    let found = corruption(fixture.open());
    assert!(matches!(found.problem, Problem::WrongLength { .. }), "{found}");
    for length in [0, 10] {
        fs::write(path, &bytes[..length]).unwrap();
        let found = corruption(fixture.open());
        assert!(matches!(found.problem, Problem::BadHeader(_)), "{found}");
    }
}

#[test]
fn a_record_copied_to_the_wrong_offset_is_refused_or_ignored_past_the_tail() {
    let Some(fixture) = Fixture::new("corrupt-copied") else { return };
    let (path, bytes) = fixture.last_segment();
    let all = records(path, bytes);
    let entries: Vec<_> = all.iter().filter(|r| r.1 == RecordKind::Normal).collect();
    let (source, target) = (entries[1], entries[entries.len() / 2]);
    let copy = bytes[source.0..source.0 + source.3].to_vec();
    // Over a synced record mid-log: its CRC seals the old offset.
    fixture.restore();
    write_at(path, target.0, &copy);
    let found = corruption(fixture.open());
    assert_eq!((found.file_name, found.offset as usize), (name_of(path), target.0));
    // From an older segment to the same offset here: its CRC seals the old
    // segment's sequence.
    let (old_path, old_bytes) = fixture.segment(0);
    let old = records(old_path, old_bytes);
    let same_place = old
        .iter()
        .find(|r| {
            r.1 == RecordKind::Normal
                && all.iter().any(|a| a.0 == r.0 && a.3 == r.3 && a.1 == RecordKind::Normal)
        })
        .expect("records at the same offset");
    fixture.restore();
    write_at(path, same_place.0, &old_bytes[same_place.0..same_place.0 + same_place.3]);
    let found = corruption(fixture.open());
    assert_eq!(found.offset as usize, same_place.0);
    // Past the tail it is just garbage: cut off, and the log is whole.
    fixture.restore();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    write_at(path, end.next_multiple_of(8) + 4096, &copy);
    let wal = fixture.open().unwrap();
    assert!(read_log(&wal) == fixture.log);
    assert!(wal.repaired_tail().is_some());
}

#[test]
fn random_damage_never_panics_and_never_shortens_the_log_silently() {
    let Some(fixture) = Fixture::new("corrupt-random") else { return };
    let rounds: u64 =
        std::env::var("EMBER_WAL_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let mut rng = ember::raft::Rng::new(0x9e37_79b9_7f4a_7c15);
    let (mut refused, mut repaired, mut clean) = (0, 0, 0);
    for round in 0..rounds {
        fixture.restore();
        for _ in 0..1 + rng.below(3) {
            let (path, bytes) = &fixture.files[rng.below(fixture.files.len() as u64) as usize];
            let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 64;
            let offset = rng.below(end as u64) as usize;
            wal_support::flip_bit(path, offset, rng.below(8) as u8);
        }
        match fixture.open() {
            Err(WalError::Corrupt { .. }) => refused += 1,
            Err(other) => panic!("round {round}: unexpected error {other}"),
            Ok(wal) => {
                let log = read_log(&wal);
                assert!(log[..] == fixture.log[..log.len()], "round {round}: not a prefix");
                if log.len() < fixture.log.len() {
                    assert!(wal.repaired_tail().is_some(), "round {round}: silently shorter");
                    repaired += 1;
                } else {
                    clean += 1;
                }
            }
        }
    }
    eprintln!("random damage: {refused} refused, {repaired} repaired, {clean} harmless");
    assert!(refused > 0);
}
