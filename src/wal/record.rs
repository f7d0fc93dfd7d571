//! Record framing: pure functions that turn records into bytes and back.
//!
//! Nothing here touches a file. Recovery, the writer and `ember debug wal` all
//! parse through [`parse_record`], so the rules for what counts as a valid
//! record live in one place. The byte layout is drawn in `docs/FORMAT.md`.
//!
//! A record is a 24-byte header, its payload, and zero padding up to the next
//! multiple of 8 bytes:
//!
//! ```text
//!  0        4        8               16              24
//!  | crc32  | kind:8 | index: u64    | term: u64     | payload ... | pad |
//!  |        | len:24 |               |               |             |     |
//! ```
//!
//! The CRC covers the segment's sequence number and the record's own byte
//! offset (neither is stored), then header bytes 4..24 and the payload. A
//! record copied to another offset, or left in a segment from an earlier use of
//! the space, therefore fails its CRC exactly like a damaged one. Keeping the
//! identity out of the header saves 12 bytes per record; see FORMAT.md for the
//! bytes-per-record budget this serves.

use crate::raft::{EntryKind, HardState};

/// Bytes in a record header.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Records start at multiples of this many bytes, so a scan for valid records
/// after damage tries one offset in eight rather than every byte.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// The payload length field has 24 bits. The largest client request is
/// 1.5 MiB, so 16 MiB leaves room for any entry Raft will ever batch into one.
pub const PAYLOAD_MAX_BYTES: usize = (1 << 24) - 1;
/// Bytes of a hard-state payload: term, vote, commit as little-endian u64.
pub const HARD_STATE_BYTES: usize = 24;

/// Bytes in the segment header at offset 0 of every segment.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"EMBERWAL";
/// Version of the segment and record layout described in FORMAT.md.
pub const FORMAT_VERSION: u32 = 1;

/// What a record holds. The numbers are the on-disk kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A Raft entry of kind `Normal`; payload is the entry's data.
    Normal = 1,
    /// A Raft entry of kind `ConfChange`; payload is the entry's data.
    ConfChange = 2,
    /// The hard state; index 0, term = hard state term, 24-byte payload.
    HardState = 3,
    /// A snapshot marker; index and term of the snapshot, payload is the
    /// postcard encoding of its `ConfState`.
    SnapshotMarker = 4,
    /// The last record of a full segment; index = next entry index expected.
    Seal = 5,
    /// Skips to the next page so the next sync starts on a fresh page; its
    /// payload is the zeros that were skipped.
    Pad = 6,
}

impl RecordKind {
    pub fn from_byte(byte: u8) -> Option<RecordKind> {
        Some(match byte {
            1 => RecordKind::Normal,
            2 => RecordKind::ConfChange,
            3 => RecordKind::HardState,
            4 => RecordKind::SnapshotMarker,
            5 => RecordKind::Seal,
            6 => RecordKind::Pad,
            _ => return None,
        })
    }

    pub fn of_entry(kind: EntryKind) -> RecordKind {
        match kind {
            EntryKind::Normal => RecordKind::Normal,
            EntryKind::ConfChange => RecordKind::ConfChange,
        }
    }

    /// The entry kind of an entry record, `None` for the other kinds.
    pub fn entry_kind(self) -> Option<EntryKind> {
        match self {
            RecordKind::Normal => Some(EntryKind::Normal),
            RecordKind::ConfChange => Some(EntryKind::ConfChange),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Normal => "entry",
            RecordKind::ConfChange => "confchange",
            RecordKind::HardState => "hardstate",
            RecordKind::SnapshotMarker => "snapshot",
            RecordKind::Seal => "seal",
            RecordKind::Pad => "pad",
        }
    }
}

/// A record that parsed and passed its CRC. Borrowed from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordKind,
    pub index: u64,
    pub term: u64,
    pub payload: &'a [u8],
    /// Bytes the record occupies, padding included.
    pub size_bytes: usize,
    pub crc: u32,
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The kind byte names no record kind.
    BadKind(u8),
    /// The record would run past the end of the segment.
    PastEnd { size_bytes: usize },
    /// The padding after the payload is not zero.
    Padding,
    /// The stored CRC does not match the bytes (damage, a torn write, or a
    /// record that belongs to another segment or offset).
    Crc { stored: u32, computed: u32 },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::BadKind(kind) => write!(f, "unknown record kind {kind}"),
            Invalid::PastEnd { size_bytes } => {
                write!(f, "record of {size_bytes} bytes runs past the segment end")
            }
            Invalid::Padding => f.write_str("non-zero padding"),
            Invalid::Crc { stored, computed } => {
                write!(f, "crc mismatch (stored {stored:08x}, computed {computed:08x})")
            }
        }
    }
}

/// What the bytes at an offset turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Record(Record<'a>),
    /// An all-zero header, or no room left for one: the end of written data
    /// (if nothing valid follows).
    Empty,
    Invalid(Invalid),
}

/// Bytes a record with `payload_bytes` of payload occupies.
pub fn record_size_bytes(payload_bytes: usize) -> usize {
    align_up(RECORD_HEADER_BYTES + payload_bytes, RECORD_ALIGN_BYTES)
}

pub fn align_up(value: usize, alignment: usize) -> usize {
    value.div_ceil(alignment) * alignment
}

fn record_crc(seq: u64, offset: usize, header_tail: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&(offset as u64).to_le_bytes());
    hasher.update(header_tail);
    hasher.update(payload);
    hasher.finalize()
}

/// The fields of a record to be written.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub kind: RecordKind,
    pub index: u64,
    pub term: u64,
    pub payload: &'a [u8],
}

/// Writes `record` at the start of `out`, which sits at `offset` in segment
/// `seq`, and returns the bytes used. The caller checked that it fits.
pub fn encode_record(out: &mut [u8], seq: u64, offset: usize, record: &NewRecord) -> usize {
    let payload_bytes = record.payload.len();
    assert!(payload_bytes <= PAYLOAD_MAX_BYTES, "caller checks the payload size");
    let size_bytes = record_size_bytes(payload_bytes);
    assert!(out.len() >= size_bytes, "caller checks that the record fits");
    let len_kind = ((payload_bytes as u32) << 8) | record.kind as u32;
    out[4..8].copy_from_slice(&len_kind.to_le_bytes());
    out[8..16].copy_from_slice(&record.index.to_le_bytes());
    out[16..24].copy_from_slice(&record.term.to_le_bytes());
    let payload_end = RECORD_HEADER_BYTES + payload_bytes;
    out[RECORD_HEADER_BYTES..payload_end].copy_from_slice(record.payload);
    out[payload_end..size_bytes].fill(0);
    let crc = record_crc(seq, offset, &out[4..RECORD_HEADER_BYTES], record.payload);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
    size_bytes
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the record at `offset` of `segment` (the whole segment's bytes,
/// belonging to sequence `seq`). Never panics on any input.
pub fn parse_record(segment: &[u8], seq: u64, offset: usize) -> Parsed<'_> {
    let Some(header) = segment.get(offset..offset.saturating_add(RECORD_HEADER_BYTES)) else {
        return Parsed::Empty;
    };
    if header[..8].iter().all(|&b| b == 0) {
        return Parsed::Empty;
    }
    let len_kind = u32_at(header, 4);
    let Some(kind) = RecordKind::from_byte((len_kind & 0xff) as u8) else {
        return Parsed::Invalid(Invalid::BadKind((len_kind & 0xff) as u8));
    };
    let payload_bytes = (len_kind >> 8) as usize;
    let size_bytes = record_size_bytes(payload_bytes);
    if segment.len() - offset < size_bytes {
        return Parsed::Invalid(Invalid::PastEnd { size_bytes });
    }
    let payload_start = offset + RECORD_HEADER_BYTES;
    let payload = &segment[payload_start..payload_start + payload_bytes];
    let stored = u32_at(header, 0);
    let computed = record_crc(seq, offset, &header[4..], payload);
    if stored != computed {
        return Parsed::Invalid(Invalid::Crc { stored, computed });
    }
    let padding = &segment[payload_start + payload_bytes..offset + size_bytes];
    if padding.iter().any(|&b| b != 0) {
        return Parsed::Invalid(Invalid::Padding);
    }
    Parsed::Record(Record {
        kind,
        index: u64_at(header, 8),
        term: u64_at(header, 16),
        payload,
        size_bytes,
        crc: stored,
    })
}

/// The raw header fields at `offset`, unchecked, for diagnostics:
/// `(stored crc, kind byte, payload length, index, term)`.
pub fn peek_header(segment: &[u8], offset: usize) -> Option<(u32, u8, usize, u64, u64)> {
    let header = segment.get(offset..offset.checked_add(RECORD_HEADER_BYTES)?)?;
    let len_kind = u32_at(header, 4);
    let fields = (u32_at(header, 0), (len_kind & 0xff) as u8, (len_kind >> 8) as usize);
    Some((fields.0, fields.1, fields.2, u64_at(header, 8), u64_at(header, 16)))
}

/// The first offset at or after `from` (aligned) that holds a valid record.
/// Used after damage: a valid record behind an invalid one means the damage
/// is not a torn tail.
pub fn find_valid_record(segment: &[u8], seq: u64, from: usize) -> Option<(usize, Record<'_>)> {
    let mut offset = align_up(from, RECORD_ALIGN_BYTES);
    while offset + RECORD_HEADER_BYTES <= segment.len() {
        // Cheap filter first: most of a damaged tail is zeros.
        if RecordKind::from_byte(segment[offset + 4]).is_some()
            && let Parsed::Record(record) = parse_record(segment, seq, offset)
        {
            return Some((offset, record));
        }
        offset += RECORD_ALIGN_BYTES;
    }
    None
}

pub fn encode_hard_state(state: &HardState) -> [u8; HARD_STATE_BYTES] {
    let mut out = [0u8; HARD_STATE_BYTES];
    out[0..8].copy_from_slice(&state.term.to_le_bytes());
    out[8..16].copy_from_slice(&state.vote.to_le_bytes());
    out[16..24].copy_from_slice(&state.commit.to_le_bytes());
    out
}

/// `None` when the payload has the wrong length.
pub fn decode_hard_state(payload: &[u8]) -> Option<HardState> {
    if payload.len() != HARD_STATE_BYTES {
        return None;
    }
    Some(HardState {
        term: u64_at(payload, 0),
        vote: u64_at(payload, 8),
        commit: u64_at(payload, 16),
    })
}

/// The segment header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    /// Index the first entry written into this segment was expected to have
    /// (the log's last index + 1 when the segment was created).
    pub first_index: u64,
    pub segment_size_bytes: u64,
    /// Where the first record starts: the page after the header's page, so
    /// no later write ever rewrites the page that holds the header.
    /// Invariant (checked on decode): a multiple of 8 in
    /// `[SEGMENT_HEADER_BYTES, segment_size_bytes)`.
    pub records_offset: u32,
    /// The sequence number this file had before it was recycled, or 0 for a
    /// fresh file. A fresh file reads as zeros past its last record; a
    /// recycled one reads as records of its previous life, which fail their
    /// CRC (the sequence is sealed into it), so recovery cannot tell the end
    /// of the log by zeros there.
    pub previous_seq: u64,
}

impl SegmentHeader {
    pub fn is_recycled(&self) -> bool {
        self.previous_seq != 0
    }
}

/// Why a segment header is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHeader {
    Magic,
    Version(u32),
    Crc,
    Short,
    RecordsOffset(u32),
}

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadHeader::Magic => f.write_str("not a segment (bad magic)"),
            BadHeader::Version(version) => write!(f, "unsupported format version {version}"),
            BadHeader::Crc => f.write_str("segment header crc mismatch"),
            BadHeader::Short => f.write_str("file shorter than a segment header"),
            BadHeader::RecordsOffset(offset) => write!(f, "records offset {offset} out of range"),
        }
    }
}

fn header_crc(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..12]);
    hasher.update(&bytes[16..SEGMENT_HEADER_BYTES]);
    hasher.finalize()
}

pub fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[0..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&header.seq.to_le_bytes());
    out[24..32].copy_from_slice(&header.first_index.to_le_bytes());
    out[32..40].copy_from_slice(&header.segment_size_bytes.to_le_bytes());
    out[40..44].copy_from_slice(&header.records_offset.to_le_bytes());
    out[44..52].copy_from_slice(&header.previous_seq.to_le_bytes());
    let crc = header_crc(&out);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, BadHeader> {
    let bytes = bytes.get(..SEGMENT_HEADER_BYTES).ok_or(BadHeader::Short)?;
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(BadHeader::Magic);
    }
    if u32_at(bytes, 12) != header_crc(bytes) {
        return Err(BadHeader::Crc);
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(BadHeader::Version(version));
    }
    let header = SegmentHeader {
        seq: u64_at(bytes, 16),
        first_index: u64_at(bytes, 24),
        segment_size_bytes: u64_at(bytes, 32),
        records_offset: u32_at(bytes, 40),
        previous_seq: u64_at(bytes, 44),
    };
    let offset = header.records_offset as usize;
    if offset < SEGMENT_HEADER_BYTES
        || !offset.is_multiple_of(RECORD_ALIGN_BYTES)
        || offset as u64 >= header.segment_size_bytes
    {
        return Err(BadHeader::RecordsOffset(header.records_offset));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewRecord<'static> {
        NewRecord { kind: RecordKind::Normal, index: 7, term: 3, payload: b"hello" }
    }

    #[test]
    fn a_record_round_trips_and_is_padded_to_eight() {
        let mut segment = vec![0u8; 256];
        let size = encode_record(&mut segment[64..], 9, 64, &sample());
        assert_eq!(size, 32);
        let Parsed::Record(record) = parse_record(&segment, 9, 64) else { panic!() };
        assert_eq!((record.kind, record.index, record.term), (RecordKind::Normal, 7, 3));
        assert_eq!(record.payload, b"hello");
        assert_eq!(parse_record(&segment, 9, 96), Parsed::Empty);
    }

    #[test]
    fn identity_is_sealed_into_the_crc() {
        let mut segment = vec![0u8; 256];
        encode_record(&mut segment[64..], 9, 64, &sample());
        assert!(matches!(parse_record(&segment, 10, 64), Parsed::Invalid(Invalid::Crc { .. })));
        let copy = segment[64..96].to_vec();
        segment[128..160].copy_from_slice(&copy);
        assert!(matches!(parse_record(&segment, 9, 128), Parsed::Invalid(Invalid::Crc { .. })));
        assert_eq!(find_valid_record(&segment, 9, 72), None);
        assert_eq!(find_valid_record(&segment, 9, 0).map(|(offset, _)| offset), Some(64));
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut segment = vec![0u8; 128];
        encode_record(&mut segment[64..], 1, 64, &sample());
        for bit in 0..(32 * 8) {
            let mut damaged = segment.clone();
            damaged[64 + bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(parse_record(&damaged, 1, 64), Parsed::Record(_)),
                "bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut bytes = vec![0u8; 96];
            for byte in bytes.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            let _ = parse_record(&bytes, 1, (state % 100) as usize);
            let _ = decode_segment_header(&bytes);
        }
    }

    #[test]
    fn segment_headers_round_trip_and_reject_damage() {
        let header = SegmentHeader {
            seq: 4,
            first_index: 100,
            segment_size_bytes: 1 << 20,
            records_offset: 4096,
            previous_seq: 2,
        };
        let mut bytes = encode_segment_header(&header);
        assert_eq!(decode_segment_header(&bytes), Ok(header));
        bytes[20] ^= 1;
        assert_eq!(decode_segment_header(&bytes), Err(BadHeader::Crc));
        assert_eq!(decode_segment_header(&bytes[..10]), Err(BadHeader::Short));
    }

    #[test]
    fn hard_state_round_trips() {
        let state = HardState { term: 5, vote: 2, commit: 40 };
        assert_eq!(decode_hard_state(&encode_hard_state(&state)), Some(state));
        assert_eq!(decode_hard_state(&[0; 3]), None);
    }
}
