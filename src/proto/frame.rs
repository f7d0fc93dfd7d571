//! Frames: a fixed 16-byte header, then a postcard body.
//!
//! ```text
//!  0        4      5       6        8                16
//!  +--------+------+-------+--------+----------------+------------------+
//!  | body   | kind | flags | zero   | id             | body             |
//!  | u32 LE | u8   | u8    | u16    | u64 LE         | body_len bytes   |
//!  +--------+------+-------+--------+----------------+------------------+
//! ```
//!
//! `body` is the body length in bytes, not counting the header. `id` is the
//! request id for `Request`, `Response` and `Error` frames and the watch id for
//! `Watch` frames. `flags` and the two zero bytes are reserved: version 1
//! sends zeros and refuses anything else, so a later version can give them a
//! meaning without an old peer misreading them.
//!
//! The decoder checks the whole header, the length cap included, as soon as
//! the 16 header bytes are present and before any body byte is needed: a peer
//! announcing a 4 GiB frame is refused after 16 bytes, never buffered.

use serde::Serialize;

use super::error::ErrorCode;

/// Bytes in a frame header.
pub const FRAME_HEADER_BYTES: usize = 16;

/// What a frame carries; the byte value is the wire value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Client to server: a `Request` body; `id` chosen by the client.
    Request = 1,
    /// Server to client: a `Response` body answering request `id`.
    Response = 2,
    /// Server to client: an `ErrorBody` answering request `id`; `id` 0 means
    /// the connection as a whole (it closes after this frame).
    Error = 3,
    /// Server to client: a `WatchMessage` pushed for watch `id`.
    Watch = 4,
}

impl FrameKind {
    /// The kind for a wire byte, if it names one.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Request),
            2 => Some(FrameKind::Response),
            3 => Some(FrameKind::Error),
            4 => Some(FrameKind::Watch),
            _ => None,
        }
    }
}

/// A checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Invariant: at most the decoder's cap when produced by the decoder.
    pub body_len_bytes: u32,
    pub kind: FrameKind,
    /// Request id, or watch id for `Watch` frames.
    pub id: u64,
}

impl FrameHeader {
    /// The 16 wire bytes of this header.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes[0..4].copy_from_slice(&self.body_len_bytes.to_le_bytes());
        bytes[4] = self.kind as u8;
        bytes[8..16].copy_from_slice(&self.id.to_le_bytes());
        bytes
    }

    /// Parses and checks 16 header bytes against `max_body_bytes`.
    pub fn parse(
        bytes: &[u8; FRAME_HEADER_BYTES],
        max_body_bytes: u32,
    ) -> Result<Self, FrameError> {
        let body_len_bytes = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let id = u64::from_le_bytes([
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
        ]);
        let Some(kind) = FrameKind::from_byte(bytes[4]) else {
            return Err(FrameError::UnknownKind { kind: bytes[4], id });
        };
        if bytes[5] != 0 || bytes[6] != 0 || bytes[7] != 0 {
            return Err(FrameError::ReservedBitsSet { id });
        }
        if body_len_bytes > max_body_bytes {
            return Err(FrameError::TooLarge { kind, id, body_len_bytes, max_body_bytes });
        }
        Ok(FrameHeader { body_len_bytes, kind, id })
    }
}

/// A frame that broke the framing rules. After any of these the byte stream
/// has lost its alignment (or the body will not be read), so the connection
/// must be answered, if at all, and closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The declared body is longer than the cap. Nothing of the body was
    /// buffered; answer `RequestTooLarge` for `id`, then close.
    TooLarge { kind: FrameKind, id: u64, body_len_bytes: u32, max_body_bytes: u32 },
    /// The kind byte names no frame kind.
    UnknownKind { kind: u8, id: u64 },
    /// Flags or the reserved bytes are not zero.
    ReservedBitsSet { id: u64 },
}

impl FrameError {
    /// The id the offending header carried, to address the answer to.
    pub fn id(&self) -> u64 {
        match *self {
            FrameError::TooLarge { id, .. }
            | FrameError::UnknownKind { id, .. }
            | FrameError::ReservedBitsSet { id } => id,
        }
    }
}

impl FrameError {
    /// The code to answer with before closing the connection.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::RequestTooLarge,
            FrameError::UnknownKind { .. } | FrameError::ReservedBitsSet { .. } => {
                ErrorCode::MalformedFrame
            }
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { body_len_bytes, max_body_bytes, .. } => {
                write!(
                    f,
                    "frame body of {body_len_bytes} bytes exceeds the cap of {max_body_bytes}"
                )
            }
            FrameError::UnknownKind { kind, .. } => write!(f, "unknown frame kind {kind}"),
            FrameError::ReservedBitsSet { .. } => write!(f, "reserved frame header bits are set"),
        }
    }
}

impl std::error::Error for FrameError {}

/// One complete frame, borrowing its body from the decoder's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    /// Invariant: `body.len() == header.body_len_bytes`.
    pub body: &'a [u8],
}

/// Walks a byte buffer and yields its complete frames in order.
///
/// The decoder holds no bytes of its own: the caller reads from its socket
/// into a buffer, runs a decoder over it, handles the frames, then drops the
/// first `consumed_bytes()` bytes of the buffer. A partial frame at the end
/// stays for the next read; `needed_bytes()` says how long the buffer must
/// grow, which the cap bounds. After an error the decoder yields nothing more.
#[derive(Debug)]
pub struct FrameDecoder<'a> {
    buffer: &'a [u8],
    max_body_bytes: u32,
    /// Invariant: `consumed_bytes <= buffer.len()`, and it always sits on a
    /// frame boundary.
    consumed_bytes: usize,
    failed: bool,
}

impl<'a> FrameDecoder<'a> {
    /// A decoder over `buffer` that refuses bodies longer than `max_body_bytes`.
    pub fn new(buffer: &'a [u8], max_body_bytes: u32) -> Self {
        FrameDecoder { buffer, max_body_bytes, consumed_bytes: 0, failed: false }
    }

    /// Bytes at the front of the buffer taken by the frames yielded so far.
    pub fn consumed_bytes(&self) -> usize {
        self.consumed_bytes
    }

    /// The bytes after the last yielded frame.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buffer[self.consumed_bytes..]
    }

    /// How many bytes the unconsumed part must hold before the next frame can
    /// be yielded: the header size until a header is there, then header plus
    /// body. `None` after an error, and when the header is already refused.
    pub fn needed_bytes(&self) -> Option<usize> {
        if self.failed {
            return None;
        }
        let rest = self.remaining();
        let Some(header) = rest.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Some(FRAME_HEADER_BYTES);
        };
        let header = FrameHeader::parse(header, self.max_body_bytes).ok()?;
        Some(FRAME_HEADER_BYTES + header.body_len_bytes as usize)
    }
}

impl<'a> Iterator for FrameDecoder<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.remaining();
        let header_bytes = rest.first_chunk::<FRAME_HEADER_BYTES>()?;
        let header = match FrameHeader::parse(header_bytes, self.max_body_bytes) {
            Ok(header) => header,
            Err(error) => {
                self.failed = true;
                return Some(Err(error));
            }
        };
        let frame_bytes = FRAME_HEADER_BYTES + header.body_len_bytes as usize;
        let body = rest.get(FRAME_HEADER_BYTES..frame_bytes)?;
        self.consumed_bytes += frame_bytes;
        Some(Ok(Frame { header, body }))
    }
}

/// Why a frame could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The body came out longer than the receiver's cap; nothing was appended.
    TooLarge { body_len_bytes: usize, max_body_bytes: u32 },
    /// The value could not be serialized (not expected for protocol types).
    Serialize(String),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::TooLarge { body_len_bytes, max_body_bytes } => {
                write!(
                    f,
                    "frame body of {body_len_bytes} bytes exceeds the cap of {max_body_bytes}"
                )
            }
            EncodeError::Serialize(why) => write!(f, "could not serialize frame body: {why}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Appends one frame to `out`: the header, then `body` serialized straight
/// into `out` (no intermediate buffer). Returns the frame's length in bytes.
///
/// `max_body_bytes` is the receiver's cap (from the handshake). When the body
/// comes out longer, `out` is truncated back to where it was and the caller
/// gets `TooLarge`, so it can send an error frame instead.
pub fn encode_frame<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    kind: FrameKind,
    id: u64,
    body: &T,
    max_body_bytes: u32,
) -> Result<usize, EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    if let Err(error) = postcard::serialize_with_flavor(body, AppendFlavor { out: &mut *out }) {
        out.truncate(start);
        return Err(EncodeError::Serialize(error.to_string()));
    }
    let body_len_bytes = out.len() - start - FRAME_HEADER_BYTES;
    let Some(body_len) = u32::try_from(body_len_bytes).ok().filter(|&n| n <= max_body_bytes) else {
        out.truncate(start);
        return Err(EncodeError::TooLarge { body_len_bytes, max_body_bytes });
    };
    let header = FrameHeader { body_len_bytes: body_len, kind, id };
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header.to_bytes());
    Ok(out.len() - start)
}

/// A postcard output that appends to a borrowed `Vec`, so encoding a frame
/// writes each body byte exactly once, into the caller's send buffer.
struct AppendFlavor<'a> {
    out: &'a mut Vec<u8>,
}

impl postcard::ser_flavors::Flavor for AppendFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.out.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.out.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameKind, id: u64, body: &[u8]) -> Vec<u8> {
        let header = FrameHeader { body_len_bytes: body.len() as u32, kind, id };
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn header_round_trips() {
        let header = FrameHeader { body_len_bytes: 77, kind: FrameKind::Watch, id: u64::MAX - 3 };
        assert_eq!(FrameHeader::parse(&header.to_bytes(), 77), Ok(header));
    }

    #[test]
    fn yields_frames_in_order_and_keeps_a_partial_tail() {
        let mut stream = frame(FrameKind::Request, 1, b"one");
        stream.extend(frame(FrameKind::Request, 2, b""));
        stream.extend(frame(FrameKind::Request, 3, b"three"));
        let cut = stream.len() - 2;
        let mut decoder = FrameDecoder::new(&stream[..cut], 1024);
        let ids: Vec<u64> = decoder.by_ref().map(|f| f.unwrap().header.id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(decoder.consumed_bytes(), 16 + 3 + 16);
        assert_eq!(decoder.needed_bytes(), Some(16 + 5));
    }

    #[test]
    fn refuses_an_oversized_header_without_its_body() {
        let header = FrameHeader { body_len_bytes: u32::MAX, kind: FrameKind::Request, id: 9 };
        let bytes = header.to_bytes();
        let mut decoder = FrameDecoder::new(&bytes, 1 << 20);
        assert_eq!(decoder.needed_bytes(), None);
        let error = decoder.next().unwrap().unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { id: 9, body_len_bytes: u32::MAX, .. }));
        assert_eq!(decoder.next(), None);
    }

    #[test]
    fn refuses_unknown_kinds_and_reserved_bits() {
        let mut bytes = frame(FrameKind::Request, 5, b"");
        bytes[4] = 0;
        assert_eq!(
            FrameDecoder::new(&bytes, 64).next(),
            Some(Err(FrameError::UnknownKind { kind: 0, id: 5 }))
        );
        let mut bytes = frame(FrameKind::Request, 5, b"");
        bytes[6] = 1;
        assert_eq!(
            FrameDecoder::new(&bytes, 64).next(),
            Some(Err(FrameError::ReservedBitsSet { id: 5 }))
        );
    }

    #[test]
    fn encoding_appends_and_undoes_itself_when_too_large() {
        let mut out = b"prefix".to_vec();
        let written = encode_frame(&mut out, FrameKind::Response, 4, &(7u8, 9u32), 64).unwrap();
        assert_eq!(written, out.len() - 6);
        let frame = FrameDecoder::new(&out[6..], 64).next().unwrap().unwrap();
        assert_eq!(frame.header.id, 4);
        assert_eq!(postcard::from_bytes::<(u8, u32)>(frame.body).unwrap(), (7, 9));
        let big = vec![1u8; 100];
        let error = encode_frame(&mut out, FrameKind::Response, 5, &big, 64).unwrap_err();
        assert_eq!(error, EncodeError::TooLarge { body_len_bytes: 101, max_body_bytes: 64 });
        assert_eq!(out.len(), 6 + written);
    }
}
