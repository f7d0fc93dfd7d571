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

use super::block::{Version, encode_block, get_varint, put_varint};
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

/// Writes a store's image chunk by chunk. It borrows the store, so the store
/// cannot change between chunks.
pub struct ImageWriter<'s> {
    store: &'s Store,
    stage: Stage,
    /// The next key to start.
    cursor: Cursor,
    /// Versions of the key being written that are still to go, newest last.
    versions: Vec<Version<'s>>,
    next_version: usize,
    buf: Vec<u8>,
    keys_written: u64,
    versions_written: u64,
}

impl Store {
    /// An image writer over this store.
    pub fn image(&self) -> ImageWriter<'_> {
        ImageWriter {
            store: self,
            stage: Stage::Header,
            cursor: self.tree.first(),
            versions: Vec::new(),
            next_version: 0,
            buf: Vec::new(),
            keys_written: 0,
            versions_written: 0,
        }
    }
}

impl<'s> ImageWriter<'s> {
    /// The next chunk of at most `max_bytes` (≥ 1) bytes; `None` when the
    /// image is complete. Memory held is bounded by `max_bytes` plus one
    /// record.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Option<Vec<u8>> {
        let max_bytes = max_bytes.max(1);
        while self.buf.len() < max_bytes && self.stage != Stage::Done {
            self.emit_record();
        }
        if self.buf.is_empty() {
            return None;
        }
        let rest = self.buf.split_off(max_bytes.min(self.buf.len()));
        Some(std::mem::replace(&mut self.buf, rest))
    }

    fn emit_record(&mut self) {
        match self.stage {
            Stage::Header => {
                self.buf.extend_from_slice(MAGIC);
                self.buf.push(FORMAT);
                self.buf.extend_from_slice(&self.store.current_revision().to_le_bytes());
                self.buf.extend_from_slice(&self.store.compact_revision().to_le_bytes());
                self.stage = Stage::Keys;
            }
            Stage::Keys if self.next_version < self.versions.len() => {
                let v = self.versions[self.next_version];
                self.next_version += 1;
                self.versions_written += 1;
                encode_version_record(&mut self.buf, &v);
            }
            Stage::Keys => self.start_next_key(),
            Stage::Done => {}
        }
    }

    /// Emits the next key that keeps at least one version, or the end record.
    fn start_next_key(&mut self) {
        let store = self.store;
        while let Some(id) = store.tree.at(self.cursor) {
            self.cursor = store.tree.advance(self.cursor);
            let block = store.keys.get(id);
            let versions = retained(block, store.compact_revision());
            if versions.is_empty() {
                continue;
            }
            self.buf.push(TAG_KEY);
            put_varint(&mut self.buf, block.key().len() as u64);
            self.buf.extend_from_slice(block.key());
            self.keys_written += 1;
            (self.versions, self.next_version) = (versions, 0);
            return;
        }
        self.buf.push(TAG_END);
        put_varint(&mut self.buf, self.keys_written);
        put_varint(&mut self.buf, self.versions_written);
        self.stage = Stage::Done;
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
