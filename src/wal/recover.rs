//! Recovery: replays the segments' bytes into the live log and decides whether
//! damage is a torn tail (repair and start) or corruption (refuse to start).
//!
//! Pure: it reads byte slices and returns a verdict; opening files, keeping a
//! copy of damaged bytes and zeroing them is the caller's job. The same code
//! serves `Wal::open` and `ember debug wal`.
//!
//! The rule that separates the two verdicts rests on how the writer syncs:
//! every sync ends its batch of records with a `Pad` record (or a `Seal` when
//! the segment is full) and the next batch starts on a fresh page. A crash can
//! only damage the batch that was being synced, and the kernel may write that
//! batch's pages in any order, so valid records may follow damaged ones inside
//! it. But a valid record that comes after a batch terminator that itself comes
//! after the damage belongs to a later batch: the damaged one had been synced,
//! so it is corruption. Damage in any segment but the last is always
//! corruption, since a segment is synced and sealed before the next exists.

use super::index::{IndexError, LogIndex};
use super::record::{
    Parsed, Record, RecordKind, SEGMENT_HEADER_BYTES, SegmentHeader, decode_hard_state,
    decode_segment_header, find_valid_record, parse_record,
};
use crate::raft::{ConfState, HardState, SnapshotMeta};

/// One segment file as recovery sees it.
#[derive(Debug, Clone, Copy)]
pub struct SegmentView<'a> {
    pub file_name: &'a str,
    /// Sequence and first index as the file name states them.
    pub name_seq: u64,
    pub name_first_index: u64,
    pub bytes: &'a [u8],
}

/// A segment file read whole, for tools that look at a WAL they do not
/// open (`debug wal`, tests): its name, what the name states, its bytes.
pub struct SegmentFile {
    pub name: String,
    pub seq: u64,
    pub first_index: u64,
    pub bytes: Vec<u8>,
}

impl SegmentFile {
    pub fn view(&self) -> SegmentView<'_> {
        SegmentView {
            file_name: &self.name,
            name_seq: self.seq,
            name_first_index: self.first_index,
            bytes: &self.bytes,
        }
    }
}

/// Damage at the end of the last segment that recovery may cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file_name: String,
    /// Where the first damaged or missing record starts.
    pub offset: usize,
    /// Just past the last non-zero byte: `[offset, end)` is kept aside and
    /// zeroed.
    pub end: usize,
    pub why: String,
}

/// What the log looks like after replay.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub index: LogIndex,
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    /// Headers of the segments, in order.
    pub headers: Vec<SegmentHeader>,
    /// Whether the last segment ends with a seal (the next write needs a new
    /// segment).
    pub last_sealed: bool,
    /// Where the next record goes in the last segment.
    pub end_offset: usize,
    pub torn: Option<TornTail>,
}

/// Why recovery refuses to start. Always names a file and a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub file_name: String,
    pub offset: u64,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    BadHeader(String),
    /// The header disagrees with the file name (a renamed segment).
    NameMismatch {
        name_seq: u64,
        header_seq: u64,
    },
    /// The file's length is not the size its header states.
    WrongLength {
        header_bytes: u64,
        file_bytes: u64,
    },
    /// A segment is missing between two others.
    SequenceGap {
        expected: u64,
        found: u64,
    },
    /// A record is invalid and later synced records follow it.
    InvalidRecord {
        why: String,
        later_valid_offset: Option<u64>,
    },
    /// A segment that is not the last one has no seal.
    MissingSeal,
    /// A valid record follows the seal.
    RecordAfterSeal,
    /// An entry leaves a hole in the log, or sits below the snapshot.
    IndexGap {
        index: u64,
        last_index: u64,
    },
    EntryBelowSnapshot {
        index: u64,
        snapshot_index: u64,
    },
    /// A seal or segment header names a different next index than the log.
    SealMismatch {
        expected: u64,
        found: u64,
    },
    /// A record passed its CRC but its payload is malformed.
    BadPayload(&'static str),
    /// The oldest segment starts after what the newest snapshot covers.
    LogStartsAfterSnapshot {
        first_index: u64,
        snapshot_index: u64,
    },
    /// The hard state says entries up to `commit` were committed, but the log
    /// ends before them: acknowledged writes are missing.
    CommittedEntriesMissing {
        commit: u64,
        last_index: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BadHeader(why) => write!(f, "bad segment header: {why}"),
            Problem::NameMismatch { name_seq, header_seq } => {
                write!(f, "file name says sequence {name_seq}, header says {header_seq}")
            }
            Problem::WrongLength { header_bytes, file_bytes } => {
                write!(f, "header says {header_bytes} bytes, file has {file_bytes}")
            }
            Problem::SequenceGap { expected, found } => {
                write!(f, "segment sequence {expected} is missing (next is {found})")
            }
            Problem::InvalidRecord { why, later_valid_offset: Some(later) } => {
                write!(f, "invalid record ({why}) followed by synced records at offset {later}")
            }
            Problem::InvalidRecord { why, later_valid_offset: None } => {
                write!(f, "invalid record ({why}) in a segment that is not the last")
            }
            Problem::MissingSeal => f.write_str("segment is not the last but has no seal"),
            Problem::RecordAfterSeal => f.write_str("valid record after the segment's seal"),
            Problem::IndexGap { index, last_index } => {
                write!(f, "entry {index} does not follow the log's last index {last_index}")
            }
            Problem::EntryBelowSnapshot { index, snapshot_index } => {
                write!(f, "entry {index} is at or below the snapshot at {snapshot_index}")
            }
            Problem::SealMismatch { expected, found } => {
                write!(f, "next index should be {expected}, segment says {found}")
            }
            Problem::BadPayload(what) => write!(f, "malformed {what} payload"),
            Problem::LogStartsAfterSnapshot { first_index, snapshot_index } => write!(
                f,
                "oldest segment starts at index {first_index} but the snapshot covers only up to {snapshot_index}: segments are missing"
            ),
            Problem::CommittedEntriesMissing { commit, last_index } => write!(
                f,
                "hard state commits index {commit} but the log ends at {last_index}: acknowledged entries are lost"
            ),
        }
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}: {}", self.file_name, self.offset, self.problem)
    }
}

/// A valid record as replay met it, for `ember debug wal`.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub file_name: &'a str,
    pub offset: usize,
    pub record: Record<'a>,
}

/// The replay state that carries from one segment to the next.
struct Replay {
    index: LogIndex,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Set when the oldest segment's entries start after the log's end (the
    /// segments before it were released): the newest snapshot must reach it.
    released_base: Option<u64>,
}

/// Replays `segments` (sorted by the sequence in their names) and returns the
/// log or the first corruption. `observe` sees every valid record replayed.
pub fn recover(
    segments: &[SegmentView],
    observe: &mut dyn FnMut(Seen),
) -> Result<Recovered, Corruption> {
    let mut replay = Replay {
        index: LogIndex::default(),
        hard_state: HardState::default(),
        snapshot: SnapshotMeta::default(),
        released_base: None,
    };
    let mut headers = Vec::with_capacity(segments.len());
    let mut end = SegmentEnd { offset: SEGMENT_HEADER_BYTES, sealed: false, torn: None };
    for (position, view) in segments.iter().enumerate() {
        let header = check_header(view, headers.last())?;
        headers.push(header);
        let is_last = position + 1 == segments.len();
        let at = Place { segments, view, header, is_first: position == 0, is_last };
        end = replay_segment(&at, &mut replay, observe)?;
    }
    finish(segments, replay, headers, end)
}

fn finish(
    segments: &[SegmentView],
    replay: Replay,
    headers: Vec<SegmentHeader>,
    end: SegmentEnd,
) -> Result<Recovered, Corruption> {
    let last_name = segments.last().map_or("", |view| view.file_name);
    let corrupt = |problem| Corruption {
        file_name: last_name.to_string(),
        offset: end.offset as u64,
        problem,
    };
    if let Some(base) = replay.released_base
        && replay.snapshot.index < base
    {
        return Err(Corruption {
            file_name: segments[0].file_name.to_string(),
            offset: SEGMENT_HEADER_BYTES as u64,
            problem: Problem::LogStartsAfterSnapshot {
                first_index: base + 1,
                snapshot_index: replay.snapshot.index,
            },
        });
    }
    let last_index = replay.index.last_index();
    if replay.hard_state.commit > last_index {
        let commit = replay.hard_state.commit;
        return Err(corrupt(Problem::CommittedEntriesMissing { commit, last_index }));
    }
    Ok(Recovered {
        index: replay.index,
        hard_state: replay.hard_state,
        snapshot: replay.snapshot,
        headers,
        last_sealed: end.sealed,
        end_offset: end.offset,
        torn: end.torn,
    })
}

fn check_header(
    view: &SegmentView,
    previous: Option<&SegmentHeader>,
) -> Result<SegmentHeader, Corruption> {
    let corrupt =
        |problem| Corruption { file_name: view.file_name.to_string(), offset: 0, problem };
    let header = decode_segment_header(view.bytes)
        .map_err(|bad| corrupt(Problem::BadHeader(bad.to_string())))?;
    if header.seq != view.name_seq || header.first_index != view.name_first_index {
        let header_seq = header.seq;
        return Err(corrupt(Problem::NameMismatch { name_seq: view.name_seq, header_seq }));
    }
    if header.segment_size_bytes != view.bytes.len() as u64 {
        let (header_bytes, file_bytes) = (header.segment_size_bytes, view.bytes.len() as u64);
        return Err(corrupt(Problem::WrongLength { header_bytes, file_bytes }));
    }
    if let Some(previous) = previous
        && header.seq != previous.seq + 1
    {
        let expected = previous.seq + 1;
        return Err(corrupt(Problem::SequenceGap { expected, found: header.seq }));
    }
    Ok(header)
}

/// Where a segment's valid records stop.
struct SegmentEnd {
    offset: usize,
    sealed: bool,
    torn: Option<TornTail>,
}

/// The segment being replayed and where it stands among the others.
struct Place<'s, 'a> {
    segments: &'s [SegmentView<'a>],
    view: &'s SegmentView<'a>,
    header: SegmentHeader,
    is_first: bool,
    is_last: bool,
}

fn replay_segment(
    place: &Place,
    replay: &mut Replay,
    observe: &mut dyn FnMut(Seen),
) -> Result<SegmentEnd, Corruption> {
    let Place { segments, view, is_first, is_last, .. } = *place;
    let seq = view.name_seq;
    let corrupt = |offset: usize, problem| Corruption {
        file_name: view.file_name.to_string(),
        offset: offset as u64,
        problem,
    };
    if !is_first && view.name_first_index != replay.index.last_index() + 1 {
        let (expected, found) = (replay.index.last_index() + 1, view.name_first_index);
        return Err(corrupt(0, Problem::SealMismatch { expected, found }));
    }
    let mut offset = place.header.records_offset as usize;
    // Batches end with a pad (or the seal), so the next batch starts here.
    let mut at_batch_start = true;
    let stop = loop {
        match parse_record(view.bytes, seq, offset) {
            Parsed::Record(record) => {
                observe(Seen { file_name: view.file_name, offset, record });
                let at = At { segments, seq, offset, is_first };
                apply(&record, &at, replay).map_err(|problem| corrupt(offset, problem))?;
                offset += record.size_bytes;
                at_batch_start = record.kind == RecordKind::Pad;
                if record.kind == RecordKind::Seal {
                    break None;
                }
            }
            Parsed::Empty => break Some("no record (zeros)".to_string()),
            Parsed::Invalid(why) => break Some(why.to_string()),
        }
    };
    match stop {
        None => after_seal(view, offset).map_err(|problem| corrupt(offset, problem)),
        Some(why) if is_last && place.header.is_recycled() => {
            let page_bytes = place.header.records_offset as usize;
            tail_of_recycled(view, Stop { offset, why, at_batch_start, page_bytes })
        }
        Some(why) if is_last => tail_of_last(view, offset, why),
        Some(why) => Err(unsealed_end(view, offset, why)),
    }
}

/// Where and why replay of the last segment stopped.
struct Stop {
    offset: usize,
    why: String,
    /// The record before `offset` closed a batch (or there is none).
    at_batch_start: bool,
    /// The writer's page size: its batches end on multiples of it.
    page_bytes: usize,
}

/// The last segment is a recycled one and stopped at `stop.offset`. Past the
/// log's end it holds its previous life's records, which fail their CRC
/// here, not zeros; so the bytes there cannot tell a clean end from a batch
/// whose every record tore. Either way the log ends at `stop.offset` and no
/// record of this life lies behind it that could pass later, so a stop at a
/// batch start with nothing valid of this life after it is a clean end. A
/// stop inside a batch, or valid records of the same batch behind the stop,
/// is a torn tail; what gets kept aside and zeroed runs to the end of the
/// page and past the last of those records, not to the segment's end.
fn tail_of_recycled(view: &SegmentView, stop: Stop) -> Result<SegmentEnd, Corruption> {
    let Stop { offset, why, at_batch_start, page_bytes } = stop;
    let later = valid_records_after(view, offset);
    if later.terminated_then_valid.is_some() {
        return tail_of_last(view, offset, why);
    }
    if at_batch_start && later.end.is_none() {
        return Ok(SegmentEnd { offset, sealed: false, torn: None });
    }
    let page_end = offset.next_multiple_of(page_bytes).min(view.bytes.len());
    let end = later.end.map_or(page_end, |end| end.max(page_end));
    let torn = Some(TornTail { file_name: view.file_name.to_string(), offset, end, why });
    Ok(SegmentEnd { offset, sealed: false, torn })
}

/// Valid records of this segment's life found after an invalid one.
struct Later {
    /// Just past the last of them.
    end: Option<usize>,
    /// One that follows a valid batch terminator, which makes the damage
    /// corruption.
    terminated_then_valid: Option<usize>,
}

fn valid_records_after(view: &SegmentView, offset: usize) -> Later {
    let mut later = Later { end: None, terminated_then_valid: None };
    let mut at = offset + 8;
    let mut terminated = false;
    while let Some((found, record)) = find_valid_record(view.bytes, view.name_seq, at) {
        if terminated {
            later.terminated_then_valid = Some(found);
            return later;
        }
        terminated = matches!(record.kind, RecordKind::Pad | RecordKind::Seal);
        at = found + record.size_bytes;
        later.end = Some(at);
    }
    later
}

/// A segment that is not the last one stopped without a seal.
fn unsealed_end(view: &SegmentView, offset: usize, why: String) -> Corruption {
    let problem = if view.bytes[offset..].iter().all(|&b| b == 0) {
        Problem::MissingSeal
    } else {
        Problem::InvalidRecord { why, later_valid_offset: None }
    };
    Corruption { file_name: view.file_name.to_string(), offset: offset as u64, problem }
}

fn after_seal(view: &SegmentView, offset: usize) -> Result<SegmentEnd, Problem> {
    match find_valid_record(view.bytes, view.name_seq, offset) {
        Some(_) => Err(Problem::RecordAfterSeal),
        None => Ok(SegmentEnd { offset, sealed: true, torn: None }),
    }
}

/// The last segment stopped at `offset`: a clean end, a torn tail, or damage
/// followed by a later synced batch.
fn tail_of_last(view: &SegmentView, offset: usize, why: String) -> Result<SegmentEnd, Corruption> {
    if let Some(later) = valid_records_after(view, offset).terminated_then_valid {
        let problem = Problem::InvalidRecord { why, later_valid_offset: Some(later as u64) };
        let file_name = view.file_name.to_string();
        return Err(Corruption { file_name, offset: offset as u64, problem });
    }
    let end = view.bytes.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
    let torn = (end > offset).then(|| TornTail {
        file_name: view.file_name.to_string(),
        offset,
        end,
        why,
    });
    Ok(SegmentEnd { offset, sealed: false, torn })
}

/// Where the record being applied sits, and the segments to read terms from.
struct At<'s, 'a> {
    segments: &'s [SegmentView<'a>],
    seq: u64,
    offset: usize,
    is_first: bool,
}

fn apply(record: &Record, at: &At, replay: &mut Replay) -> Result<(), Problem> {
    match record.kind {
        RecordKind::Normal | RecordKind::ConfChange => apply_entry(record, at, replay),
        RecordKind::HardState => {
            replay.hard_state =
                decode_hard_state(record.payload).ok_or(Problem::BadPayload("hard state"))?;
            Ok(())
        }
        RecordKind::SnapshotMarker => apply_marker(record, at.segments, replay),
        RecordKind::Seal => {
            let expected = replay.index.last_index() + 1;
            if record.index != expected {
                return Err(Problem::SealMismatch { expected, found: record.index });
            }
            Ok(())
        }
        RecordKind::Pad => Ok(()),
    }
}

fn apply_entry(record: &Record, at: &At, replay: &mut Replay) -> Result<(), Problem> {
    let index = &mut replay.index;
    let empty = index.last_index() == index.snapshot_index();
    if at.is_first && empty && record.index > index.last_index() + 1 {
        // The segments before this one were released after a snapshot; the
        // snapshot marker that justifies it comes later in the log.
        let base = record.index - 1;
        index.apply_snapshot(base, 0, |_| None);
        replay.released_base = Some(base);
    }
    index.push(record.index, at.seq, at.offset).map_err(index_problem)
}

fn apply_marker(
    record: &Record,
    segments: &[SegmentView],
    replay: &mut Replay,
) -> Result<(), Problem> {
    let conf_state: ConfState =
        postcard::from_bytes(record.payload).map_err(|_| Problem::BadPayload("snapshot marker"))?;
    if record.index > replay.snapshot.index {
        let index = &mut replay.index;
        let snapshot_term = record.term;
        let term_at = |i: u64| term_in(segments, index, i);
        let keep = term_at(record.index);
        index.apply_snapshot(record.index, snapshot_term, |_| keep);
        replay.snapshot = SnapshotMeta { index: record.index, term: record.term, conf_state };
    }
    Ok(())
}

/// The term of entry `i` as stored in the segments, if the log holds it.
fn term_in(segments: &[SegmentView], index: &LogIndex, i: u64) -> Option<u64> {
    let (seq, offset) = index.locate(i)?;
    let first_seq = segments.first()?.name_seq;
    let view = segments.get(usize::try_from(seq.checked_sub(first_seq)?).ok()?)?;
    match parse_record(view.bytes, seq, offset) {
        Parsed::Record(record) => Some(record.term),
        _ => None,
    }
}

fn index_problem(error: IndexError) -> Problem {
    match error {
        IndexError::Gap { index, last_index } => Problem::IndexGap { index, last_index },
        IndexError::BelowSnapshot { index, snapshot_index } => {
            Problem::EntryBelowSnapshot { index, snapshot_index }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ConfState;
    use crate::wal::record::{NewRecord, SegmentHeader, encode_record, encode_segment_header};

    const PAGE: usize = 4096;
    const NAME: &str = "0000000000000001-0000000000000001.wal";

    /// A segment holding two synced batches, each on its own page: entries
    /// 1..=2 then 3..=4, each batch closed by a pad. Returns the bytes and
    /// the record offsets.
    fn two_batches() -> (Vec<u8>, Vec<usize>) {
        let header = SegmentHeader {
            seq: 1,
            first_index: 1,
            segment_size_bytes: 4 * PAGE as u64,
            records_offset: PAGE as u32,
            previous_seq: 0,
        };
        let mut bytes = vec![0u8; 4 * PAGE];
        bytes[..SEGMENT_HEADER_BYTES].copy_from_slice(&encode_segment_header(&header));
        let mut offsets = Vec::new();
        let mut offset = PAGE;
        for batch in [[1u64, 2], [3, 4]] {
            for index in batch {
                let entry =
                    NewRecord { kind: RecordKind::Normal, index, term: 1, payload: b"data" };
                offsets.push(offset);
                offset += encode_record(&mut bytes[offset..], 1, offset, &entry);
            }
            let boundary = (offset + 24).next_multiple_of(PAGE);
            let zeros = vec![0u8; boundary - offset - 24];
            let pad = NewRecord { kind: RecordKind::Pad, index: 0, term: 0, payload: &zeros };
            offset += encode_record(&mut bytes[offset..], 1, offset, &pad);
        }
        (bytes, offsets)
    }

    fn run(bytes: &[u8]) -> Result<Recovered, Corruption> {
        let view = SegmentView { file_name: NAME, name_seq: 1, name_first_index: 1, bytes };
        recover(&[view], &mut |_| {})
    }

    #[test]
    fn damage_inside_the_last_batch_is_a_torn_tail_even_with_valid_records_behind_it() {
        let (mut bytes, offsets) = two_batches();
        bytes[offsets[2] + 30] ^= 1;
        let recovered = run(&bytes).unwrap();
        assert_eq!(recovered.index.last_index(), 2);
        let torn = recovered.torn.unwrap();
        assert_eq!((torn.offset, torn.end > offsets[3]), (offsets[2], true));
    }

    #[test]
    fn damage_before_a_later_batch_is_corruption_naming_the_offset() {
        let (mut bytes, offsets) = two_batches();
        bytes[offsets[1] + 30] ^= 1;
        let corruption = run(&bytes).unwrap_err();
        assert_eq!((corruption.file_name.as_str(), corruption.offset), (NAME, offsets[1] as u64));
        let later = Some(offsets[2] as u64);
        assert!(
            matches!(corruption.problem, Problem::InvalidRecord { later_valid_offset, .. } if later_valid_offset == later)
        );
    }

    /// Segment 1's two batches, recycled as segment 2 (previous sequence 1,
    /// released after a snapshot at 4) holding a batch of its own on its
    /// first page: the snapshot marker, then `entries`, no pad yet. Returns
    /// the bytes and each entry's offset.
    fn recycled(entries: &[u64], previous_seq: u64) -> (Vec<u8>, Vec<usize>) {
        let (mut bytes, _) = two_batches();
        let header = SegmentHeader {
            seq: 2,
            first_index: 5,
            segment_size_bytes: 4 * PAGE as u64,
            records_offset: PAGE as u32,
            previous_seq,
        };
        bytes[..SEGMENT_HEADER_BYTES].copy_from_slice(&encode_segment_header(&header));
        let conf_state = postcard::to_stdvec(&ConfState::default()).unwrap();
        let marker =
            NewRecord { kind: RecordKind::SnapshotMarker, index: 4, term: 1, payload: &conf_state };
        let mut offset = PAGE;
        offset += encode_record(&mut bytes[offset..], 2, offset, &marker);
        let mut offsets = Vec::new();
        for &index in entries {
            let entry = NewRecord { kind: RecordKind::Normal, index, term: 2, payload: b"new" };
            offsets.push(offset);
            offset += encode_record(&mut bytes[offset..], 2, offset, &entry);
        }
        offsets.push(offset);
        (bytes, offsets)
    }

    fn run_recycled(bytes: &[u8]) -> Result<Recovered, Corruption> {
        let name = "0000000000000002-0000000000000005.wal";
        let view = SegmentView { file_name: name, name_seq: 2, name_first_index: 5, bytes };
        recover(&[view], &mut |_| {})
    }

    #[test]
    fn a_recycled_segment_ends_cleanly_where_its_previous_life_shows_through() {
        let (mut bytes, offsets) = recycled(&[5, 6], 1);
        let end = offsets[2];
        let zeros = vec![0u8; 2 * PAGE - end - 24];
        let pad = NewRecord { kind: RecordKind::Pad, index: 0, term: 0, payload: &zeros };
        encode_record(&mut bytes[end..], 2, end, &pad);
        // The next page holds the previous life's second batch: valid for
        // sequence 1, invalid for sequence 2.
        assert!(matches!(parse_record(&bytes, 1, 2 * PAGE), Parsed::Record(_)));
        let recovered = run_recycled(&bytes).unwrap();
        assert_eq!((recovered.index.last_index(), recovered.torn), (6, None));
        assert_eq!(recovered.end_offset, 2 * PAGE);
    }

    #[test]
    fn a_torn_batch_in_a_recycled_segment_is_cut_within_its_own_bytes() {
        let (mut bytes, offsets) = recycled(&[5, 6, 7], 1);
        bytes[offsets[1] + 26] ^= 1;
        let recovered = run_recycled(&bytes).unwrap();
        assert_eq!(recovered.index.last_index(), 5);
        let torn = recovered.torn.unwrap();
        // Cut from the damaged record through entry 7 and the page, not to
        // the end of the segment the previous life filled.
        assert_eq!((torn.offset, torn.end), (offsets[1], 2 * PAGE));
    }

    #[test]
    fn a_fresh_segment_with_the_same_bytes_calls_them_a_torn_tail_to_the_last_byte() {
        let (bytes, offsets) = recycled(&[5], 0);
        let torn = run_recycled(&bytes).unwrap().torn.unwrap();
        assert_eq!((torn.offset, torn.end > 2 * PAGE), (offsets[1], true));
    }

    #[test]
    fn a_clean_log_replays_whole() {
        let (bytes, _) = two_batches();
        let recovered = run(&bytes).unwrap();
        assert_eq!((recovered.index.last_index(), recovered.torn), (4, None));
        assert_eq!(recovered.end_offset, 3 * PAGE);
    }
}
