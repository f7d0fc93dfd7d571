//! The store's image for snapshots: every retained version, the current and
//! the compact revision, written and read in bounded chunks.
//!
//! ```text
//! header  = "EMBRMVCC" format:u8(=1) current:u64le compact:u64le
//! record  = 0x01 varint(len) key                         a key, ascending
//!         | 0x02 varint(main) varint(sub) tomb:u8 varint(create)
//!                varint(version) varint(lease) varint(len) value
//!                                                        a version of it
//!         | 0x03 varint(keys) varint(versions)           the end
//! ```
//!
//! The image holds what a compaction keeps, whether or not the physical
//! compaction has finished, so two members with the same history write the
//! same bytes and a restored store has the same hash. The image carries no
//! checksum: the snapshot file around it has one. The reader still trusts
//! nothing: every field is bounded and checked (order of keys and versions,
//! the fields implied by the version before, dense revisions), and a bad
//! image is an [`ImageError`], never a panic.
//!
//! Two writers produce the same bytes: [`ImageWriter`] borrows the store and
//! writes it as it is; [`LiveImage`] holds no borrow and writes the store as
//! it was at the revision it began at, while writes go on between chunks.

use super::block::{Block, Version, encode_block, get_varint, put_varint};
use super::store::{KeyTable, Store, retained};
use super::tree::{Cursor, Tree};
use super::types::{Revision, StoreConfig};

const MAGIC: &[u8; 8] = b"EMBRMVCC";
const FORMAT: u8 = 1;
const HEADER_BYTES: usize = 8 + 1 + 8 + 8;
const TAG_KEY: u8 = 1;
const TAG_VERSION: u8 = 2;
const TAG_END: u8 = 3;
/// The longest key or value a record may carry. Requests are capped at
/// 1.5 MiB, so no stored key or value is longer; 2 MiB leaves room and
/// bounds what the reader buffers for one record.
pub const IMAGE_MAX_FIELD_BYTES: usize = 2 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    BadMagic,
    UnsupportedFormat(u8),
    /// The image ended before its end record.
    Truncated,
    Malformed(&'static str),
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::BadMagic => write!(f, "not an mvcc image"),
            ImageError::UnsupportedFormat(v) => write!(f, "mvcc image format {v} is not supported"),
            ImageError::Truncated => write!(f, "mvcc image is truncated"),
            ImageError::Malformed(why) => write!(f, "mvcc image is malformed: {why}"),
        }
    }
}

impl std::error::Error for ImageError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Keys,
    Done,
}

/// Writes the image of a store at the revision it had when the image began,
/// a chunk at a time, while the store keeps changing between chunks.
///
/// It holds no borrow of the store: each [`LiveImage::next_chunk`] is handed
/// the store, seeks just after the last key it visited and writes, for each
/// further key, the versions a compaction at the captured compact revision
/// keeps that are no newer than the captured revision `R`. Changes applied
/// between chunks cannot alter that output:
///
/// * a put, delete or new key only adds versions above `R`, which are
///   skipped, and never changes which version below the compact revision is
///   the newest one there, so `retained` filtered to `R` is what the store
///   held at `R`;
/// * a logical `compact` after the start only moves the store's compact
///   revision; the image keeps the one captured at start;
/// * the physical compaction (`compact_step`) is what could remove versions
///   still needed, so the store pauses it while an image is open whenever
///   its compact revision is above the image's (see [`Store::begin_image`]);
///   steps of a compaction at the image's own compact revision only drop
///   versions the image skips anyway, so they go on;
/// * the writer remembers keys by their bytes, never by key id, so ids freed
///   and reused by compaction cannot confuse it.
///
/// The bytes are exactly those [`Store::image`] gives for the store at `R`.
/// Memory held is bounded by `max_bytes` plus the records of one key.
#[derive(Debug)]
pub struct LiveImage {
    /// The revision the image describes; newer versions are skipped.
    revision: u64,
    /// The compact revision at the start. Invariant: ≤ `revision`.
    compact_revision: u64,
    stage: Stage,
    /// The last key visited (written or skipped); `None` before the first.
    resume_after: Option<Vec<u8>>,
    /// Encoded bytes not yet handed out. Invariant: shorter than the last
    /// `max_bytes` asked for plus the records of one key.
    buf: Vec<u8>,
    keys_written: u64,
    versions_written: u64,
}

impl LiveImage {
    fn new(revision: u64, compact_revision: u64) -> LiveImage {
        assert!(compact_revision <= revision, "compact revision above current");
        LiveImage {
            revision,
            compact_revision,
            stage: Stage::Header,
            resume_after: None,
            buf: Vec::new(),
            keys_written: 0,
            versions_written: 0,
        }
    }

    /// The revision the image describes.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The compact revision the image describes.
    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    /// Whether every byte was handed out.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done && self.buf.is_empty()
    }

    /// The next chunk of at most `max_bytes` (≥ 1) bytes; `None` when the
    /// image is complete. `store` must be the store the image began on
    /// (it may have changed since; its physical compaction must have been
    /// held back as [`Store::begin_image`] describes).
    pub fn next_chunk(&mut self, store: &Store, max_bytes: usize) -> Option<Vec<u8>> {
        debug_assert!(store.current_revision() >= self.revision, "a store from the past");
        let max_bytes = max_bytes.max(1);
        if self.buf.len() < max_bytes && self.stage != Stage::Done {
            self.fill(store, max_bytes);
        }
        if self.buf.is_empty() {
            return None;
        }
        let rest = self.buf.split_off(max_bytes.min(self.buf.len()));
        Some(std::mem::replace(&mut self.buf, rest))
    }

    /// Encodes records until `max_bytes` are buffered or the image ends.
    fn fill(&mut self, store: &Store, max_bytes: usize) {
        if self.stage == Stage::Header {
            self.buf.extend_from_slice(MAGIC);
            self.buf.push(FORMAT);
            self.buf.extend_from_slice(&self.revision.to_le_bytes());
            self.buf.extend_from_slice(&self.compact_revision.to_le_bytes());
            self.stage = Stage::Keys;
        }
        let mut cursor = self.resume_cursor(store);
        let mut visited = None;
        while self.buf.len() < max_bytes {
            let Some(id) = store.tree.at(cursor) else {
                self.buf.push(TAG_END);
                put_varint(&mut self.buf, self.keys_written);
                put_varint(&mut self.buf, self.versions_written);
                self.stage = Stage::Done;
                break;
            };
            cursor = store.tree.advance(cursor);
            visited = Some(id);
            self.write_key(store.keys.get(id));
        }
        if let Some(id) = visited {
            self.resume_after = Some(store.keys.get(id).key().to_vec());
        }
    }

    /// Where the walk goes on: the first key after the last one visited.
    fn resume_cursor(&self, store: &Store) -> Cursor {
        let Some(after) = &self.resume_after else { return store.tree.first() };
        let cursor = store.tree.seek(&store.keys, after);
        match store.tree.at(cursor) {
            Some(id) if store.keys.get(id).key() == after.as_slice() => store.tree.advance(cursor),
            _ => cursor,
        }
    }

    /// Writes one key and its versions as of the image, if it has any.
    fn write_key(&mut self, block: &Block) {
        let revision = self.revision;
        let kept = retained(block, self.compact_revision);
        let mut versions = kept.iter().filter(|v| v.main <= revision).peekable();
        if versions.peek().is_none() {
            return;
        }
        self.buf.push(TAG_KEY);
        put_varint(&mut self.buf, block.key().len() as u64);
        self.buf.extend_from_slice(block.key());
        self.keys_written += 1;
        for v in versions {
            encode_version_record(&mut self.buf, v);
            self.versions_written += 1;
        }
    }
}

/// Writes a store's image chunk by chunk. It borrows the store, so the store
/// cannot change between chunks; [`LiveImage`] is the writer that lets it.
pub struct ImageWriter<'s> {
    store: &'s Store,
    image: LiveImage,
}

impl Store {
    /// An image writer over this store as it is now.
    pub fn image(&self) -> ImageWriter<'_> {
        ImageWriter {
            store: self,
            image: LiveImage::new(self.current_revision(), self.compact_revision()),
        }
    }

    /// Begins an image of the store at its current revision that survives
    /// later writes, and holds back physical compaction beyond the image's
    /// compact revision until [`Store::end_image`]. One image at a time.
    pub fn begin_image(&mut self) -> LiveImage {
        assert!(self.image_pin.is_none(), "an image is already open");
        self.image_pin = Some(self.compact_revision());
        LiveImage::new(self.current_revision(), self.compact_revision())
    }

    /// Ends the open image (done or abandoned): compaction may go on.
    pub fn end_image(&mut self, image: LiveImage) {
        assert_eq!(self.image_pin, Some(image.compact_revision), "not this store's open image");
        self.image_pin = None;
    }

    /// Whether an image begun by [`Store::begin_image`] is open.
    pub fn image_open(&self) -> bool {
        self.image_pin.is_some()
    }
}

impl ImageWriter<'_> {
    /// The next chunk of at most `max_bytes` (≥ 1) bytes; `None` when the
    /// image is complete. Memory held is bounded by `max_bytes` plus the
    /// records of one key.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Option<Vec<u8>> {
        self.image.next_chunk(self.store, max_bytes)
    }
}

fn encode_version_record(out: &mut Vec<u8>, v: &Version<'_>) {
    out.push(TAG_VERSION);
    put_varint(out, v.main);
    put_varint(out, u64::from(v.sub));
    out.push(u8::from(v.tombstone));
    put_varint(out, v.create);
    put_varint(out, v.version);
    put_varint(out, v.lease as u64);
    put_varint(out, v.value.len() as u64);
    out.extend_from_slice(v.value);
}

/// One version as read from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageVersion {
    main: u64,
    sub: u32,
    tombstone: bool,
    create: u64,
    version: u64,
    lease: i64,
    value: Vec<u8>,
}

enum Record {
    Key(Vec<u8>),
    Version(ImageVersion),
    End { keys: u64, versions: u64 },
}

/// Rebuilds a store from image chunks fed in order.
pub struct ImageReader {
    config: StoreConfig,
    stage: Stage,
    /// Bytes of an incomplete record; bounded by one chunk plus one record.
    buf: Vec<u8>,
    current_revision: u64,
    compact_revision: u64,
    keys: KeyTable,
    tree: Tree,
    changes: Vec<(Revision, u32)>,
    key: Option<Vec<u8>>,
    versions: Vec<ImageVersion>,
    keys_read: u64,
    versions_read: u64,
}

impl ImageReader {
    pub fn new(config: StoreConfig) -> ImageReader {
        ImageReader {
            config,
            stage: Stage::Header,
            buf: Vec::new(),
            current_revision: 0,
            compact_revision: 0,
            keys: KeyTable::default(),
            tree: Tree::default(),
            changes: Vec::new(),
            key: None,
            versions: Vec::new(),
            keys_read: 0,
            versions_read: 0,
        }
    }

    /// Takes the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.buf.extend_from_slice(chunk);
        let mut at = 0;
        if self.stage == Stage::Header {
            if self.buf.len() < HEADER_BYTES {
                return Ok(());
            }
            self.read_header()?;
            at = HEADER_BYTES;
        }
        while at < self.buf.len() {
            if self.stage == Stage::Done {
                return Err(ImageError::Malformed("bytes after the end record"));
            }
            let Some((record, used)) = parse_record(&self.buf[at..])? else { break };
            at += used;
            self.take(record)?;
        }
        self.buf.drain(..at);
        Ok(())
    }

    fn read_header(&mut self) -> Result<(), ImageError> {
        if &self.buf[..8] != MAGIC {
            return Err(ImageError::BadMagic);
        }
        if self.buf[8] != FORMAT {
            return Err(ImageError::UnsupportedFormat(self.buf[8]));
        }
        let word =
            |at: usize| u64::from_le_bytes(self.buf[at..at + 8].try_into().expect("8 bytes"));
        (self.current_revision, self.compact_revision) = (word(9), word(17));
        if self.current_revision == 0 || self.compact_revision > self.current_revision {
            return Err(ImageError::Malformed("revisions in the header"));
        }
        self.stage = Stage::Keys;
        Ok(())
    }

    fn take(&mut self, record: Record) -> Result<(), ImageError> {
        match record {
            Record::Key(key) => {
                self.end_key()?;
                if key.is_empty() || self.key.as_ref().is_some_and(|last| *last >= key) {
                    return Err(ImageError::Malformed("keys out of order"));
                }
                self.key = Some(key);
                self.keys_read += 1;
            }
            Record::Version(v) => {
                if self.key.is_none() {
                    return Err(ImageError::Malformed("a version before any key"));
                }
                self.versions_read += 1;
                self.versions.push(v);
            }
            Record::End { keys, versions } => {
                self.end_key()?;
                if (keys, versions) != (self.keys_read, self.versions_read) {
                    return Err(ImageError::Malformed("counts in the end record"));
                }
                self.stage = Stage::Done;
            }
        }
        Ok(())
    }

    /// Checks and stores the versions gathered for the current key.
    fn end_key(&mut self) -> Result<(), ImageError> {
        let Some(key) = &self.key else { return Ok(()) };
        if self.versions.is_empty() {
            return Err(ImageError::Malformed("a key without versions"));
        }
        check_versions(&self.versions, self.current_revision, self.compact_revision)?;
        let versions: Vec<Version<'_>> = self.versions.iter().map(as_version).collect();
        let block = encode_block(key, &versions);
        let id = self.keys.alloc(block);
        if self.tree.insert(&self.keys, key, id).is_err() {
            return Err(ImageError::Malformed("duplicate key"));
        }
        let log_from = self.compact_revision;
        for v in self.versions.iter().filter(|v| v.main >= log_from) {
            self.changes.push((Revision { main: v.main, sub: v.sub }, id));
        }
        self.versions.clear();
        Ok(())
    }

    /// The restored store; fails unless the whole image was fed.
    pub fn finish(self) -> Result<Store, ImageError> {
        if self.stage != Stage::Done || !self.buf.is_empty() {
            return Err(ImageError::Truncated);
        }
        Store::restore(
            self.config,
            self.keys,
            self.tree,
            self.current_revision,
            self.compact_revision,
            self.changes,
        )
        .ok_or(ImageError::Malformed("revisions are not dense"))
    }
}

fn as_version(v: &ImageVersion) -> Version<'_> {
    Version {
        main: v.main,
        sub: v.sub,
        tombstone: v.tombstone,
        create: v.create,
        version: v.version,
        lease: v.lease,
        value: &v.value,
    }
}

/// The rules a live store's history obeys: revisions ascend; a tombstone
/// carries nothing; a put continues its generation (same create revision,
/// version + 1) or starts one (create = its revision, version 1) after a
/// tombstone; only the first version may lie below the compact revision, and
/// then it is a put.
fn check_versions(versions: &[ImageVersion], current: u64, compact: u64) -> Result<(), ImageError> {
    let bad = |why| Err(ImageError::Malformed(why));
    for (i, v) in versions.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &versions[p]);
        if v.main < 2 || v.main > current {
            return bad("a version's revision is out of range");
        }
        if prev.is_some_and(|p| (p.main, p.sub) >= (v.main, v.sub)) {
            return bad("versions out of order");
        }
        if v.main < compact && (i > 0 || v.tombstone) {
            return bad("a compacted version was kept");
        }
        let fields_ok = match (v.tombstone, prev) {
            (true, _) => v.create == 0 && v.version == 0 && v.lease == 0 && v.value.is_empty(),
            (false, Some(p)) if !p.tombstone => {
                v.create == p.create && Some(v.version) == p.version.checked_add(1)
            }
            (false, Some(_)) => v.create == v.main && v.version == 1,
            (false, None) => v.create >= 1 && v.create <= v.main && v.version >= 1,
        };
        if !fields_ok {
            return bad("a version's fields do not follow the one before");
        }
    }
    Ok(())
}

/// Reads a varint; `Ok(None)` when more bytes are needed.
fn varint(buf: &[u8], at: &mut usize) -> Result<Option<u64>, ImageError> {
    let start = *at;
    match get_varint(buf, at) {
        Some(v) => Ok(Some(v)),
        None if buf.len() - start >= 10 => Err(ImageError::Malformed("a varint overflows")),
        None => Ok(None),
    }
}

/// Parses one record; `Ok(None)` when the buffer holds only part of it.
fn parse_record(buf: &[u8]) -> Result<Option<(Record, usize)>, ImageError> {
    let Some(&tag) = buf.first() else { return Ok(None) };
    let mut at = 1;
    macro_rules! field {
        () => {
            match varint(buf, &mut at)? {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    let record = match tag {
        TAG_KEY => {
            let Some(key) = bytes_field(buf, &mut at)? else { return Ok(None) };
            Record::Key(key)
        }
        TAG_VERSION => {
            let (main, sub) = (field!(), field!());
            let Some(&tomb) = buf.get(at) else { return Ok(None) };
            at += 1;
            let (create, version, lease) = (field!(), field!(), field!());
            let Some(value) = bytes_field(buf, &mut at)? else { return Ok(None) };
            let sub =
                u32::try_from(sub).map_err(|_| ImageError::Malformed("sub revision too large"))?;
            if tomb > 1 {
                return Err(ImageError::Malformed("tombstone flag"));
            }
            let tombstone = tomb == 1;
            Record::Version(ImageVersion {
                main,
                sub,
                tombstone,
                create,
                version,
                lease: lease as i64,
                value,
            })
        }
        TAG_END => {
            let (keys, versions) = (field!(), field!());
            Record::End { keys, versions }
        }
        _ => return Err(ImageError::Malformed("unknown record tag")),
    };
    Ok(Some((record, at)))
}

/// A length-prefixed byte field; `Ok(None)` when incomplete.
fn bytes_field(buf: &[u8], at: &mut usize) -> Result<Option<Vec<u8>>, ImageError> {
    let Some(len) = varint(buf, at)? else { return Ok(None) };
    if len > IMAGE_MAX_FIELD_BYTES as u64 {
        return Err(ImageError::Malformed("a field is too long"));
    }
    let len = len as usize;
    if buf.len() - *at < len {
        return Ok(None);
    }
    *at += len;
    Ok(Some(buf[*at - len..*at].to_vec()))
}
