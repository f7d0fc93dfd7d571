//! The bytes on a peer connection: the handshake and the frames.
//!
//! Pure: no sockets, no clock. Everything a peer sends is checked here once,
//! into typed values; past this point nothing can panic on peer input.
//!
//! ## Handshake (both directions, 32 bytes, little-endian)
//!
//! ```text
//!  0        4        6        8                16               24               32
//!  +--------+--------+--------+----------------+----------------+----------------+
//!  | "EMBP" | version| flags=0|   cluster id   |  from member   |   to member    |
//!  +--------+--------+--------+----------------+----------------+----------------+
//! ```
//!
//! The dialing side sends its hello first. The accepting side checks it (same
//! magic, version and cluster; `to` is itself; `from` is a known member) and
//! answers with its own hello, or closes the connection. The dialer checks the
//! answer the same way and only then sends frames, so nothing is ever sent to
//! a node of another cluster or to the wrong member at a reused address.
//!
//! A member removed from the cluster is answered differently: the acceptor
//! sends its hello with flag bit 1 (`FLAG_REMOVED`) set, then closes. The
//! dialer learns it was removed and stops for good; a member that does not
//! know the flag ignores it, finds the connection closed, and is refused
//! as before. With a secret, the flagged answer carries its nonce and MAC
//! like any other, so only a member holding the secret can tell another
//! that it was removed.
//!
//! ## Asking for the member table (flag bit 2)
//!
//! A member joining an existing cluster does not know its own id yet: the
//! cluster chose it when the member was added. It dials a peer with a hello
//! from member 0 to member 0 with `FLAG_MEMBERS` set (and the secret's flag
//! and nonce when one is configured). The acceptor answers with its own
//! hello (and nonce and MAC), waits for the dialer's MAC when a secret is
//! set, then sends the table and closes:
//!
//! ```text
//!  acceptor → dialer:  length u32 (LE) | table (length bytes) | mac_t (32, with a secret)
//!  mac_t = HMAC-SHA256(secret, "ember peer members" 0x00 | transcript | length | table)
//! ```
//!
//! The table's bytes are the server's (postcard of its member records); the
//! transport only carries them, at most `MEMBERS_ANSWER_BYTES_MAX`.
//!
//! The ids in a hello are derived from public names, so they prove nothing.
//! Members prove who they are by their TLS certificates (peer TLS: the
//! connection is TLS and the hello travels inside it), or by a shared secret
//! (`--peer-secret-file`), or both:
//!
//! ## Hello with a shared secret (flag bit 0 set)
//!
//! ```text
//!  dialer   → acceptor:  hello_d (32) | nonce_d (32)
//!  acceptor → dialer:    hello_a (32) | nonce_a (32) | mac_a (32)
//!  dialer   → acceptor:  mac_d (32), then frames
//!
//!  transcript = hello_d | nonce_d | hello_a | nonce_a
//!  mac_a = HMAC-SHA256(secret, "ember peer acceptor" 0x00 | transcript)
//!  mac_d = HMAC-SHA256(secret, "ember peer dialer" 0x00 | transcript)
//! ```
//!
//! Nonces are 32 random bytes from each side, so no answer can be replayed
//! into another connection; the two labels keep one side's MAC from being
//! reflected as the other's. The acceptor reads no frame before `mac_d`
//! checks, the dialer sends none before `mac_a` does. Whether a secret is
//! required comes from the local configuration only: a hello whose flag
//! disagrees with it is refused, so no peer can talk a member down to an
//! unauthenticated hello.
//!
//! ## Frames (dialer to acceptor only)
//!
//! ```text
//!  +-------------------+------+---------------------------------+
//!  | length u32 (LE)   | kind | body (length - 1 bytes)         |
//!  +-------------------+------+---------------------------------+
//!    kind 1 message:       postcard(M)
//!    kind 2 stream start:  stream id u64 | postcard(M) header
//!    kind 3 stream chunk:  stream id u64 | data bytes
//!    kind 4 stream end:    stream id u64 | total bytes u64 | crc32 u32
//!    kind 5 stream abort:  stream id u64
//! ```
//!
//! `length` counts the kind byte and the body; it is at least 1 and at most
//! the configured `frame_bytes_max`, and is checked before any of the body is
//! buffered. A postcard body must be consumed exactly: trailing bytes mean
//! the two sides disagree about the message type, which is refused.

use std::fmt;
use std::io::{self, Read};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// "EMBP": Ember peer. Distinguishes a peer from an HTTP client or a
/// misdirected Ember client within the first four bytes.
pub const MAGIC: [u8; 4] = *b"EMBP";
/// Version of this wire format; a node refuses any other.
pub const VERSION: u16 = 1;
/// Size of a hello on the wire.
pub const HELLO_BYTES: usize = 32;
/// Size of the length prefix.
pub const LENGTH_BYTES: usize = 4;
/// Bytes of a chunk frame that are not data: kind and stream id.
pub const CHUNK_OVERHEAD_BYTES: usize = 1 + 8;
/// Smallest amount the decoder asks the socket for in one read, so that many
/// small frames arrive per system call.
pub const READ_BYTES_MIN: usize = 16 * 1024;

/// Hello flag: a nonce follows the hello, and MACs prove the shared secret.
pub const FLAG_SECRET: u16 = 1;
/// Hello flag, in an answer only: the dialer was removed from the cluster;
/// the acceptor closes the connection after this hello.
pub const FLAG_REMOVED: u16 = 2;
/// Hello flag, from a dialer: it asks for the member table (see above);
/// its `from` and `to` are 0.
pub const FLAG_MEMBERS: u16 = 4;
/// The largest member table answer: nine members of a few hundred bytes
/// each fit many times over, and the whole answer goes into the empty send
/// buffer of a new connection in one write.
pub const MEMBERS_ANSWER_BYTES_MAX: usize = 8 << 10;
/// Size of each side's random nonce.
pub const NONCE_BYTES: usize = 32;
/// Size of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;
/// Both hellos and both nonces, the bytes each MAC covers.
pub const TRANSCRIPT_BYTES: usize = 2 * (HELLO_BYTES + NONCE_BYTES);

const KIND_MESSAGE: u8 = 1;
const KIND_STREAM_START: u8 = 2;
const KIND_STREAM_CHUNK: u8 = 3;
const KIND_STREAM_END: u8 = 4;
const KIND_STREAM_ABORT: u8 = 5;

/// One side's introduction at the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
}

/// Why a hello was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// Not an Ember peer at all (an HTTP client, a port scanner, garbage).
    BadMagic([u8; 4]),
    Version {
        got: u16,
        want: u16,
    },
    /// The other side belongs to another cluster (another token or member list).
    WrongCluster {
        got: u64,
        want: u64,
    },
    /// The hello is meant for another member (an address reused by another node).
    WrongTarget {
        got: u64,
        want: u64,
    },
    /// The sender is not a member we know, or is not the member we dialed.
    UnknownMember(u64),
    /// This member requires the shared secret and the hello does not offer it.
    SecretMissing,
    /// The hello offers a shared secret this member has not been given.
    SecretUnexpected,
    /// The MAC does not prove the shared secret.
    BadMac,
    /// The TLS certificate is not valid for the member the hello names.
    CertificateMismatch {
        member: u64,
        name: String,
    },
    /// The sender was removed from the cluster; it was answered so.
    RemovedMember(u64),
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::BadMagic(m) => write!(f, "not an ember peer (first bytes {m:02x?})"),
            HelloError::Version { got, want } => {
                write!(f, "peer wire version {got}, this node speaks {want}")
            }
            HelloError::WrongCluster { got, want } => {
                write!(f, "peer is in cluster {got:016x}, this node in cluster {want:016x}")
            }
            HelloError::WrongTarget { got, want } => {
                write!(f, "hello addressed to member {got:016x}, this is member {want:016x}")
            }
            HelloError::UnknownMember(id) => write!(f, "member {id:016x} is not a known peer"),
            HelloError::SecretMissing => {
                write!(f, "this member requires the peer secret and the hello offers none")
            }
            HelloError::SecretUnexpected => {
                write!(f, "the hello offers a peer secret and this member has none configured")
            }
            HelloError::BadMac => write!(f, "the hello does not prove the peer secret"),
            HelloError::CertificateMismatch { member, name } => {
                write!(
                    f,
                    "the certificate is not valid for {name}, the host of member {member:016x}"
                )
            }
            HelloError::RemovedMember(id) => {
                write!(f, "member {id:016x} was removed from the cluster, and was told so")
            }
        }
    }
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        // Bytes 6..8 are flags: zero in version 1, and ignored on receipt so
        // that a later version can announce optional features in them.
        out[8..16].copy_from_slice(&self.cluster_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.from.to_le_bytes());
        out[24..32].copy_from_slice(&self.to.to_le_bytes());
        out
    }

    /// The hello with the secret flag set or not.
    pub fn encode_flagged(&self, secret: bool) -> [u8; HELLO_BYTES] {
        self.encode_flags(if secret { FLAG_SECRET } else { 0 })
    }

    /// The hello with `flags` (`FLAG_SECRET`, `FLAG_REMOVED`).
    pub fn encode_flags(&self, flags: u16) -> [u8; HELLO_BYTES] {
        let mut out = self.encode();
        out[6..8].copy_from_slice(&flags.to_le_bytes());
        out
    }

    /// Checks a received hello against what this node expects: the same
    /// cluster, addressed to `local_id`, from a member `is_expected` accepts.
    pub fn check(
        bytes: &[u8; HELLO_BYTES],
        cluster_id: u64,
        local_id: u64,
        is_expected: impl Fn(u64) -> bool,
    ) -> Result<Hello, HelloError> {
        let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(HelloError::BadMagic(magic));
        }
        let version = u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes"));
        if version != VERSION {
            return Err(HelloError::Version { got: version, want: VERSION });
        }
        let hello =
            Hello { cluster_id: u64_at(bytes, 8), from: u64_at(bytes, 16), to: u64_at(bytes, 24) };
        if hello.cluster_id != cluster_id {
            return Err(HelloError::WrongCluster { got: hello.cluster_id, want: cluster_id });
        }
        if hello.to != local_id {
            return Err(HelloError::WrongTarget { got: hello.to, want: local_id });
        }
        if hello.from == local_id || !is_expected(hello.from) {
            return Err(HelloError::UnknownMember(hello.from));
        }
        Ok(hello)
    }
}

/// No downgrade: a received hello must offer the secret exactly when the
/// local configuration has one.
pub fn check_secret_flag(
    bytes: &[u8; HELLO_BYTES],
    secret_required: bool,
) -> Result<(), HelloError> {
    let flags = u16::from_le_bytes(bytes[6..8].try_into().expect("2 bytes"));
    match (secret_required, flags & FLAG_SECRET != 0) {
        (true, false) => Err(HelloError::SecretMissing),
        (false, true) => Err(HelloError::SecretUnexpected),
        _ => Ok(()),
    }
}

/// Whether an answer says the dialer was removed from the cluster.
pub fn says_removed(bytes: &[u8; HELLO_BYTES]) -> bool {
    u16::from_le_bytes(bytes[6..8].try_into().expect("2 bytes")) & FLAG_REMOVED != 0
}

/// Whether a dialer's hello asks for the member table.
pub fn asks_members(bytes: &[u8; HELLO_BYTES]) -> bool {
    u16::from_le_bytes(bytes[6..8].try_into().expect("2 bytes")) & FLAG_MEMBERS != 0
}

/// Checks a hello that asks for the member table: the same magic, version
/// and cluster; no member named on either side.
pub fn check_members_query(bytes: &[u8; HELLO_BYTES], cluster_id: u64) -> Result<(), HelloError> {
    let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(HelloError::BadMagic(magic));
    }
    let version = u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes"));
    if version != VERSION {
        return Err(HelloError::Version { got: version, want: VERSION });
    }
    let got = u64_at(bytes, 8);
    if got != cluster_id {
        return Err(HelloError::WrongCluster { got, want: cluster_id });
    }
    match (u64_at(bytes, 16), u64_at(bytes, 24)) {
        (0, 0) => Ok(()),
        (from, _) => Err(HelloError::UnknownMember(from)),
    }
}

/// The MAC over a member table answer.
pub fn members_mac(
    secret: &[u8],
    transcript: &[u8; TRANSCRIPT_BYTES],
    answer: &[u8],
) -> [u8; MAC_BYTES] {
    let mut context = ring::hmac::Context::with_key(&mac_key(secret));
    context.update(b"ember peer members\0");
    context.update(transcript);
    context.update(answer);
    let tag = context.sign();
    tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
}

/// Checks the MAC over a member table answer, in constant time.
pub fn verify_members_mac(
    secret: &[u8],
    transcript: &[u8; TRANSCRIPT_BYTES],
    answer: &[u8],
    mac: &[u8],
) -> Result<(), HelloError> {
    let mut message = Vec::with_capacity(32 + TRANSCRIPT_BYTES + answer.len());
    message.extend_from_slice(b"ember peer members\0");
    message.extend_from_slice(transcript);
    message.extend_from_slice(answer);
    ring::hmac::verify(&mac_key(secret), &message, mac).map_err(|_| HelloError::BadMac)
}

/// Which side of a hello a MAC speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacRole {
    Dialer,
    Acceptor,
}

fn mac_key(secret: &[u8]) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)
}

fn mac_label(role: MacRole) -> &'static [u8] {
    match role {
        MacRole::Dialer => b"ember peer dialer\0",
        MacRole::Acceptor => b"ember peer acceptor\0",
    }
}

/// The MAC one side sends over the transcript of both hellos.
pub fn hello_mac(
    secret: &[u8],
    role: MacRole,
    transcript: &[u8; TRANSCRIPT_BYTES],
) -> [u8; MAC_BYTES] {
    let mut context = ring::hmac::Context::with_key(&mac_key(secret));
    context.update(mac_label(role));
    context.update(transcript);
    let tag = context.sign();
    tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
}

/// Checks the other side's MAC, in constant time.
pub fn verify_hello_mac(
    secret: &[u8],
    role: MacRole,
    transcript: &[u8; TRANSCRIPT_BYTES],
    mac: &[u8],
) -> Result<(), HelloError> {
    let mut message = Vec::with_capacity(32 + TRANSCRIPT_BYTES);
    message.extend_from_slice(mac_label(role));
    message.extend_from_slice(transcript);
    ring::hmac::verify(&mac_key(secret), &message, mac).map_err(|_| HelloError::BadMac)
}

/// The transcript both MACs cover.
pub fn transcript(
    dialer: &[u8; HELLO_BYTES + NONCE_BYTES],
    acceptor: &[u8; HELLO_BYTES + NONCE_BYTES],
) -> [u8; TRANSCRIPT_BYTES] {
    let mut out = [0u8; TRANSCRIPT_BYTES];
    out[..HELLO_BYTES + NONCE_BYTES].copy_from_slice(dialer);
    out[HELLO_BYTES + NONCE_BYTES..].copy_from_slice(acceptor);
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// A frame, decoded and checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<M> {
    Message(M),
    StreamStart { stream: u64, header: M },
    StreamChunk { stream: u64, data: Vec<u8> },
    StreamEnd { stream: u64, total_bytes: u64, crc32: u32 },
    StreamAbort { stream: u64 },
}

/// Why the bytes of a connection cannot be frames. The connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix beyond the cap (or zero); refused before buffering.
    BadLength {
        length_bytes: u32,
        max_bytes: usize,
    },
    UnknownKind(u8),
    /// A body too short for its kind's fixed fields.
    Truncated {
        kind: u8,
    },
    /// The postcard body does not decode as the message type.
    Undecodable(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength { length_bytes, max_bytes } => {
                write!(f, "frame length {length_bytes} outside 1..={max_bytes}")
            }
            FrameError::UnknownKind(kind) => write!(f, "unknown frame kind {kind}"),
            FrameError::Truncated { kind } => write!(f, "frame of kind {kind} too short"),
            FrameError::Undecodable(why) => write!(f, "undecodable message: {why}"),
        }
    }
}

/// Why a frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoded frame would exceed the peer's frame cap.
    TooLarge {
        length_bytes: usize,
        max_bytes: usize,
    },
    Serialize(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { length_bytes, max_bytes } => {
                write!(f, "frame of {length_bytes} bytes exceeds the cap of {max_bytes}")
            }
            EncodeError::Serialize(why) => write!(f, "message does not serialize: {why}"),
        }
    }
}

/// Starts a frame: room for the length, then the kind.
fn frame_head(kind: u8, capacity: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(LENGTH_BYTES + 1 + capacity);
    frame.extend_from_slice(&[0; LENGTH_BYTES]);
    frame.push(kind);
    frame
}

/// Writes the length prefix once the body is complete.
fn seal(mut frame: Vec<u8>, frame_bytes_max: usize) -> Result<Vec<u8>, EncodeError> {
    let length_bytes = frame.len() - LENGTH_BYTES;
    if length_bytes > frame_bytes_max {
        return Err(EncodeError::TooLarge { length_bytes, max_bytes: frame_bytes_max });
    }
    let length = u32::try_from(length_bytes).expect("frame_bytes_max fits in u32");
    frame[..LENGTH_BYTES].copy_from_slice(&length.to_le_bytes());
    Ok(frame)
}

fn append_postcard<M: Serialize>(frame: Vec<u8>, message: &M) -> Result<Vec<u8>, EncodeError> {
    postcard::to_extend(message, frame).map_err(|e| EncodeError::Serialize(e.to_string()))
}

/// A message frame.
pub fn encode_message<M: Serialize>(message: &M, max: usize) -> Result<Vec<u8>, EncodeError> {
    seal(append_postcard(frame_head(KIND_MESSAGE, 64), message)?, max)
}

/// The frame that opens a stream, carrying its header message.
pub fn encode_stream_start<M: Serialize>(
    stream: u64,
    header: &M,
    max: usize,
) -> Result<Vec<u8>, EncodeError> {
    let mut frame = frame_head(KIND_STREAM_START, 64);
    frame.extend_from_slice(&stream.to_le_bytes());
    seal(append_postcard(frame, header)?, max)
}

/// A chunk frame filled straight from `source`, with at most `chunk_bytes`
/// of data; `None` when the source is exhausted. Reading into the frame's own
/// buffer avoids a second copy of every chunk.
pub fn read_stream_chunk(
    stream: u64,
    source: &mut dyn Read,
    chunk_bytes: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut frame = frame_head(KIND_STREAM_CHUNK, 8 + chunk_bytes);
    frame.extend_from_slice(&stream.to_le_bytes());
    let data_at = frame.len();
    frame.resize(data_at + chunk_bytes, 0);
    let mut filled = 0;
    while filled < chunk_bytes {
        match source.read(&mut frame[data_at + filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if filled == 0 {
        return Ok(None);
    }
    frame.truncate(data_at + filled);
    let length = u32::try_from(frame.len() - LENGTH_BYTES).map_err(io::Error::other)?;
    frame[..LENGTH_BYTES].copy_from_slice(&length.to_le_bytes());
    Ok(Some(frame))
}

/// The data part of a chunk frame built by `read_stream_chunk`.
pub fn chunk_data(frame: &[u8]) -> &[u8] {
    &frame[LENGTH_BYTES + CHUNK_OVERHEAD_BYTES..]
}

/// The frame that closes a stream with its length and checksum.
pub fn encode_stream_end(stream: u64, total_bytes: u64, crc32: u32) -> Vec<u8> {
    let mut frame = frame_head(KIND_STREAM_END, 20);
    frame.extend_from_slice(&stream.to_le_bytes());
    frame.extend_from_slice(&total_bytes.to_le_bytes());
    frame.extend_from_slice(&crc32.to_le_bytes());
    seal(frame, usize::MAX).expect("fixed-size frame")
}

/// The frame that tells the receiver to discard a stream.
pub fn encode_stream_abort(stream: u64) -> Vec<u8> {
    let mut frame = frame_head(KIND_STREAM_ABORT, 8);
    frame.extend_from_slice(&stream.to_le_bytes());
    seal(frame, usize::MAX).expect("fixed-size frame")
}

/// Turns the bytes of one connection into frames.
///
/// Holds at most one frame plus one read: the buffer grows to the size of
/// the frame being received (never beyond `LENGTH_BYTES + frame_bytes_max +
/// READ_BYTES_MIN`) and shrinks back once it is empty.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Invariant: `start <= end <= buf.len()`; `buf[start..end]` is received
    /// and not yet decoded.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    frame_bytes_max: usize,
}

impl FrameDecoder {
    pub fn new(frame_bytes_max: usize) -> FrameDecoder {
        FrameDecoder { buf: Vec::new(), start: 0, end: 0, frame_bytes_max }
    }

    /// Bytes received and not yet decoded (a partial frame at most, once
    /// `next_frame` returned `None`).
    pub fn pending_bytes(&self) -> usize {
        self.end - self.start
    }

    /// The buffer's current allocation, for memory accounting.
    pub fn capacity_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Reads once from `source` into the buffer. `Ok(0)` is end of stream.
    pub fn fill(&mut self, source: &mut impl Read) -> io::Result<usize> {
        self.make_room();
        let n = source.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Copies `bytes` in, as `fill` would; for tests and for bytes read
    /// elsewhere.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            self.make_room();
            let n = bytes.len().min(self.buf.len() - self.end);
            self.buf[self.end..self.end + n].copy_from_slice(&bytes[..n]);
            self.end += n;
            bytes = &bytes[n..];
        }
    }

    /// Makes room after `end` for `READ_BYTES_MIN` or for the rest of the
    /// current frame, whichever is larger, so a big frame arrives in few reads.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 4 * READ_BYTES_MIN {
                self.buf = Vec::new(); // A big frame has passed; give the memory back.
            }
        }
        let want_bytes = READ_BYTES_MIN.max(self.frame_rest_bytes());
        if self.buf.len() - self.end >= want_bytes {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want_bytes {
            self.buf.resize(self.end + want_bytes, 0);
        }
    }

    /// Bytes still missing from the frame at `start`, when its length prefix
    /// is here and within the cap (a bad prefix is reported by `next_frame`).
    fn frame_rest_bytes(&self) -> usize {
        let pending = &self.buf[self.start..self.end];
        let Some(prefix) = pending.get(..LENGTH_BYTES) else { return 0 };
        let length = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if length > self.frame_bytes_max {
            return 0;
        }
        (LENGTH_BYTES + length).saturating_sub(pending.len())
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame<M: DeserializeOwned>(&mut self) -> Result<Option<Frame<M>>, FrameError> {
        let pending = &self.buf[self.start..self.end];
        let Some(length_prefix) = pending.get(..LENGTH_BYTES) else { return Ok(None) };
        let length_bytes = u32::from_le_bytes(length_prefix.try_into().expect("4 bytes"));
        let length = length_bytes as usize;
        if length == 0 || length > self.frame_bytes_max {
            return Err(FrameError::BadLength { length_bytes, max_bytes: self.frame_bytes_max });
        }
        let Some(body) = pending.get(LENGTH_BYTES..LENGTH_BYTES + length) else {
            return Ok(None);
        };
        let frame = decode_body(body)?;
        self.start += LENGTH_BYTES + length;
        Ok(Some(frame))
    }
}

fn decode_body<M: DeserializeOwned>(body: &[u8]) -> Result<Frame<M>, FrameError> {
    let (kind, rest) = (body[0], &body[1..]);
    let truncated = FrameError::Truncated { kind };
    match kind {
        KIND_MESSAGE => Ok(Frame::Message(decode_exact(rest)?)),
        KIND_STREAM_START => {
            let (stream, rest) = split_u64(rest).ok_or(truncated)?;
            Ok(Frame::StreamStart { stream, header: decode_exact(rest)? })
        }
        KIND_STREAM_CHUNK => {
            let (stream, data) = split_u64(rest).ok_or(truncated)?;
            Ok(Frame::StreamChunk { stream, data: data.to_vec() })
        }
        KIND_STREAM_END => {
            if rest.len() != 20 {
                return Err(truncated);
            }
            let crc32 = u32::from_le_bytes(rest[16..20].try_into().expect("4 bytes"));
            Ok(Frame::StreamEnd { stream: u64_at(rest, 0), total_bytes: u64_at(rest, 8), crc32 })
        }
        KIND_STREAM_ABORT => {
            let (stream, rest) = split_u64(rest).ok_or(truncated.clone())?;
            if !rest.is_empty() {
                return Err(truncated);
            }
            Ok(Frame::StreamAbort { stream })
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_at_checked(8)?;
    Some((u64::from_le_bytes(head.try_into().ok()?), rest))
}

fn decode_exact<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| FrameError::Undecodable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Undecodable(format!("{} trailing bytes", rest.len())));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Msg {
        n: u32,
        text: String,
    }

    const MAX: usize = 1024;

    fn msg(n: u32) -> Msg {
        Msg { n, text: "x".repeat(n as usize % 50) }
    }

    fn accept_all(_: u64) -> bool {
        true
    }

    #[test]
    fn hello_round_trip_and_refusals() {
        let hello = Hello { cluster_id: 7, from: 2, to: 1 };
        let bytes = hello.encode();
        assert_eq!(Hello::check(&bytes, 7, 1, accept_all), Ok(hello));
        let wrong_cluster = Hello::check(&bytes, 8, 1, accept_all);
        assert_eq!(wrong_cluster, Err(HelloError::WrongCluster { got: 7, want: 8 }));
        assert_eq!(
            Hello::check(&bytes, 7, 3, accept_all),
            Err(HelloError::WrongTarget { got: 1, want: 3 })
        );
        assert_eq!(Hello::check(&bytes, 7, 1, |id| id == 3), Err(HelloError::UnknownMember(2)));
        let mut bad = bytes;
        bad[0] = b'G';
        assert!(matches!(Hello::check(&bad, 7, 1, accept_all), Err(HelloError::BadMagic(_))));
        let mut bad = bytes;
        bad[4] = 9;
        assert!(matches!(Hello::check(&bad, 7, 1, accept_all), Err(HelloError::Version { .. })));
    }

    #[test]
    fn a_hello_from_ourselves_is_refused() {
        let bytes = Hello { cluster_id: 7, from: 1, to: 1 }.encode();
        assert_eq!(Hello::check(&bytes, 7, 1, accept_all), Err(HelloError::UnknownMember(1)));
    }

    fn all_frames(decoder: &mut FrameDecoder) -> Result<Vec<Frame<Msg>>, FrameError> {
        let mut out = Vec::new();
        while let Some(frame) = decoder.next_frame()? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn frames_survive_every_split_point() {
        let mut wire = Vec::new();
        for n in 0..20 {
            wire.extend(encode_message(&msg(n), MAX).unwrap());
        }
        wire.extend(encode_stream_start(9, &msg(1), MAX).unwrap());
        let chunk = read_stream_chunk(9, &mut &b"abcdef"[..], 4).unwrap().unwrap();
        assert_eq!(chunk_data(&chunk), b"abcd");
        wire.extend(&chunk);
        wire.extend(encode_stream_end(9, 4, 123));
        wire.extend(encode_stream_abort(9));
        for step in [1, 2, 3, 7, 64, wire.len()] {
            let mut decoder = FrameDecoder::new(MAX);
            let mut frames = Vec::new();
            for piece in wire.chunks(step) {
                decoder.push(piece);
                frames.extend(all_frames(&mut decoder).unwrap());
            }
            assert_eq!(frames.len(), 24, "step {step}");
            for (n, frame) in frames.iter().take(20).enumerate() {
                assert_eq!(*frame, Frame::Message(msg(n as u32)));
            }
            assert_eq!(frames[20], Frame::StreamStart { stream: 9, header: msg(1) });
            assert_eq!(frames[21], Frame::StreamChunk { stream: 9, data: b"abcd".to_vec() });
            assert_eq!(frames[22], Frame::StreamEnd { stream: 9, total_bytes: 4, crc32: 123 });
            assert_eq!(frames[23], Frame::StreamAbort { stream: 9 });
            assert_eq!(decoder.pending_bytes(), 0);
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_body_arrives() {
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&(MAX as u32 + 1).to_le_bytes());
        let err = decoder.next_frame::<Msg>().unwrap_err();
        assert!(matches!(err, FrameError::BadLength { .. }));
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&0u32.to_le_bytes());
        assert!(decoder.next_frame::<Msg>().is_err());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            &[9],                        // unknown kind
            &[KIND_MESSAGE, 0xff, 0xff], // bad postcard
            &[KIND_STREAM_START, 1, 2],  // stream id cut short
            &[KIND_STREAM_CHUNK, 1],
            &[KIND_STREAM_END, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[KIND_STREAM_ABORT, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ];
        for body in cases {
            let mut decoder = FrameDecoder::new(MAX);
            decoder.push(&(body.len() as u32).to_le_bytes());
            decoder.push(body);
            assert!(decoder.next_frame::<Msg>().is_err(), "{body:?}");
        }
    }

    #[test]
    fn trailing_bytes_after_a_message_are_refused() {
        let mut frame = encode_message(&msg(3), MAX).unwrap();
        frame.push(0);
        let length = (frame.len() - LENGTH_BYTES) as u32;
        frame[..4].copy_from_slice(&length.to_le_bytes());
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&frame);
        assert!(matches!(decoder.next_frame::<Msg>(), Err(FrameError::Undecodable(_))));
    }

    #[test]
    fn messages_over_the_cap_are_not_encoded() {
        let big = Msg { n: 1, text: "y".repeat(MAX) };
        assert!(matches!(encode_message(&big, MAX), Err(EncodeError::TooLarge { .. })));
    }

    #[test]
    fn a_partial_frame_stays_pending() {
        let frame = encode_message(&msg(30), MAX).unwrap();
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&frame[..frame.len() - 1]);
        assert_eq!(decoder.next_frame::<Msg>(), Ok(None));
        assert_eq!(decoder.pending_bytes(), frame.len() - 1);
    }

    /// Seeded random bytes, valid frames with random corruption, and random
    /// split points: the decoder returns frames or errors, never panics, and
    /// never holds more than one frame plus one read.
    #[test]
    fn random_input_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000 {
            let mut bytes = Vec::new();
            for n in 0..(next() % 8) {
                bytes.extend(encode_message(&msg(n as u32), MAX).unwrap());
            }
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % (bytes.len() + 1);
                bytes.insert(at, next() as u8);
            }
            if round % 3 == 0 {
                bytes.extend((0..next() % 64).map(|_| next() as u8));
            }
            let mut decoder = FrameDecoder::new(MAX);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let step = 1 + (next() as usize) % rest.len();
                decoder.push(&rest[..step]);
                rest = &rest[step..];
                match all_frames(&mut decoder) {
                    Ok(_) => {
                        assert!(decoder.capacity_bytes() <= LENGTH_BYTES + MAX + READ_BYTES_MIN)
                    }
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn the_buffer_shrinks_after_a_big_frame() {
        let max = 1 << 20;
        let big = Msg { n: 1, text: "z".repeat(max - 100) };
        let mut decoder = FrameDecoder::new(max);
        decoder.push(&encode_message(&big, max).unwrap());
        assert_eq!(decoder.next_frame::<Msg>().unwrap(), Some(Frame::Message(big)));
        decoder.push(&encode_message(&msg(1), max).unwrap());
        assert!(decoder.capacity_bytes() <= 4 * READ_BYTES_MIN);
    }

    #[test]
    fn the_secret_flag_must_match_the_local_configuration() {
        let hello = Hello { cluster_id: 7, from: 2, to: 1 };
        let (plain, flagged) = (hello.encode(), hello.encode_flagged(true));
        assert_eq!(check_secret_flag(&plain, false), Ok(()));
        assert_eq!(check_secret_flag(&flagged, true), Ok(()));
        assert_eq!(check_secret_flag(&plain, true), Err(HelloError::SecretMissing));
        assert_eq!(check_secret_flag(&flagged, false), Err(HelloError::SecretUnexpected));
        // The flag does not change what the hello says.
        assert_eq!(Hello::check(&flagged, 7, 1, |_| true), Ok(hello));
    }

    #[test]
    fn macs_prove_the_secret_for_one_side_of_one_transcript() {
        let secret = [5u8; 32];
        let dialer = [1u8; HELLO_BYTES + NONCE_BYTES];
        let acceptor = [2u8; HELLO_BYTES + NONCE_BYTES];
        let t = transcript(&dialer, &acceptor);
        let mac = hello_mac(&secret, MacRole::Acceptor, &t);
        assert_eq!(verify_hello_mac(&secret, MacRole::Acceptor, &t, &mac), Ok(()));
        // Reflected as the other side's MAC, under another secret, over
        // another transcript (a replayed nonce), or cut short: refused.
        let bad = Err(HelloError::BadMac);
        assert_eq!(verify_hello_mac(&secret, MacRole::Dialer, &t, &mac), bad);
        assert_eq!(verify_hello_mac(&[6u8; 32], MacRole::Acceptor, &t, &mac), bad);
        let replayed = transcript(&dialer, &[3u8; HELLO_BYTES + NONCE_BYTES]);
        assert_eq!(verify_hello_mac(&secret, MacRole::Acceptor, &replayed, &mac), bad);
        assert_eq!(verify_hello_mac(&secret, MacRole::Acceptor, &t, &mac[..31]), bad);
    }
}
