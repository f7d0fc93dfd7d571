//! The handshake: one fixed-size hello each way before any frame.
//!
//! Client hello, 16 bytes, all integers little-endian:
//!
//! ```text
//!  0          4             6             8                 12         16
//!  +----------+-------------+-------------+-----------------+----------+
//!  | "EMBR"   | min_version | max_version | max_frame_bytes | zero     |
//!  | 4 bytes  | u16         | u16         | u32             | 4 bytes  |
//!  +----------+-------------+-------------+-----------------+----------+
//! ```
//!
//! Server hello, 32 bytes, the same whether it accepts or refuses:
//!
//! ```text
//!  0        4        5      6         8          10         12                16           24          32
//!  +--------+--------+------+---------+----------+----------+-----------------+------------+-----------+
//!  | "EMBR" | status | zero | version | srv_min  | srv_max  | max_frame_bytes | cluster_id | member_id |
//!  |        | u8     | u8   | u16     | u16      | u16      | u32             | u64        | u64       |
//!  +--------+--------+------+---------+----------+----------+-----------------+------------+-----------+
//! ```
//!
//! `status` 0 accepts: `version` is the chosen version, the highest both
//! sides speak. Any other status is a `Refusal` and the server closes the
//! connection after the hello; `version`, `cluster_id` and `member_id` are
//! then zero, while `srv_min`/`srv_max` still tell the client what the server
//! speaks. Each side's `max_frame_bytes` is the largest frame body it accepts
//! from the other; a client may not ask for less than `MIN_FRAME_BYTES`, so
//! every error frame fits.

/// The first four bytes of every hello. They are no HTTP method, so the
/// server can tell the protocol from HTTP by the first bytes alone.
pub const MAGIC: [u8; 4] = *b"EMBR";

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes in a client hello.
pub const CLIENT_HELLO_BYTES: usize = 16;

/// Bytes in a server hello.
pub const SERVER_HELLO_BYTES: usize = 32;

/// The smallest frame body limit a client may announce: room for any error
/// frame (an error message is cut to fit, see `frame_codec`), so a server can
/// always answer.
pub const MIN_FRAME_BYTES: u32 = 4096;

/// What a client says first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// Invariant after `parse`: `min_version <= max_version`.
    pub min_version: u16,
    pub max_version: u16,
    /// The largest frame body the client accepts from the server.
    pub max_frame_bytes: u32,
}

/// Why a hello could not be read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The first four bytes are not `MAGIC`: this is not our protocol.
    BadMagic,
    /// Reserved bytes are not zero.
    ReservedBitsSet,
    /// A client hello with `min_version > max_version`.
    EmptyVersionRange,
    /// A server hello whose status byte names no refusal this build knows.
    UnknownStatus(u8),
    /// A server accepted a version outside the range the client offered.
    VersionNotOffered(u16),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::BadMagic => write!(f, "not an Ember hello (bad magic bytes)"),
            HandshakeError::ReservedBitsSet => write!(f, "reserved hello bytes are not zero"),
            HandshakeError::EmptyVersionRange => write!(f, "hello offers an empty version range"),
            HandshakeError::UnknownStatus(s) => write!(f, "server hello has unknown status {s}"),
            HandshakeError::VersionNotOffered(v) => {
                write!(f, "server chose version {v}, which the client did not offer")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

impl ClientHello {
    /// The hello of this build, accepting frames up to `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        ClientHello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            max_frame_bytes,
        }
    }

    pub fn to_bytes(&self) -> [u8; CLIENT_HELLO_BYTES] {
        let mut bytes = [0u8; CLIENT_HELLO_BYTES];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[4..6].copy_from_slice(&self.min_version.to_le_bytes());
        bytes[6..8].copy_from_slice(&self.max_version.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.max_frame_bytes.to_le_bytes());
        bytes
    }

    /// Reads a client hello from the front of `buffer`. `Ok(None)` means
    /// fewer than `CLIENT_HELLO_BYTES` have arrived; a wrong magic is
    /// reported as soon as the bytes present show it.
    pub fn parse(buffer: &[u8]) -> Result<Option<ClientHello>, HandshakeError> {
        check_magic_prefix(buffer)?;
        let Some(bytes) = buffer.first_chunk::<CLIENT_HELLO_BYTES>() else { return Ok(None) };
        if bytes[12..16] != [0; 4] {
            return Err(HandshakeError::ReservedBitsSet);
        }
        let hello = ClientHello {
            min_version: u16_at(bytes, 4),
            max_version: u16_at(bytes, 6),
            max_frame_bytes: u32_at(bytes, 8),
        };
        if hello.min_version > hello.max_version {
            return Err(HandshakeError::EmptyVersionRange);
        }
        Ok(Some(hello))
    }
}

/// Why a server turned a client away. The byte value is the wire status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Refusal {
    /// The client's version range and the server's do not meet.
    NoCommonVersion = 1,
    /// The client accepts frames smaller than `MIN_FRAME_BYTES`.
    FrameLimitTooSmall = 2,
    /// The server has as many client connections as it may hold.
    TooManyConnections = 3,
    /// The server is shutting down.
    ShuttingDown = 4,
    /// The hello came in plaintext to a port that speaks only TLS.
    TlsRequired = 5,
}

impl Refusal {
    pub fn from_byte(byte: u8) -> Option<Refusal> {
        match byte {
            1 => Some(Refusal::NoCommonVersion),
            2 => Some(Refusal::FrameLimitTooSmall),
            3 => Some(Refusal::TooManyConnections),
            4 => Some(Refusal::ShuttingDown),
            5 => Some(Refusal::TlsRequired),
            _ => None,
        }
    }
}

/// What a server says about itself, to negotiate against a client hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerParams {
    pub min_version: u16,
    pub max_version: u16,
    /// The largest frame body the server accepts (`--max-request-bytes`).
    pub max_frame_bytes: u32,
    pub cluster_id: u64,
    pub member_id: u64,
}

/// The server's answer to a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerHello {
    Accepted {
        version: u16,
        /// The largest frame body the server accepts from the client.
        max_frame_bytes: u32,
        cluster_id: u64,
        member_id: u64,
    },
    Refused {
        reason: Refusal,
        server_min_version: u16,
        server_max_version: u16,
    },
}

/// The server's half of the handshake: the highest version both speak, or
/// the reason to refuse. Pure, so every case is testable without a socket.
pub fn negotiate(hello: &ClientHello, server: &ServerParams) -> ServerHello {
    let refuse = |reason| ServerHello::Refused {
        reason,
        server_min_version: server.min_version,
        server_max_version: server.max_version,
    };
    let version = hello.max_version.min(server.max_version);
    if version < hello.min_version.max(server.min_version) {
        return refuse(Refusal::NoCommonVersion);
    }
    if hello.max_frame_bytes < MIN_FRAME_BYTES {
        return refuse(Refusal::FrameLimitTooSmall);
    }
    ServerHello::Accepted {
        version,
        max_frame_bytes: server.max_frame_bytes,
        cluster_id: server.cluster_id,
        member_id: server.member_id,
    }
}

impl ServerHello {
    /// The 32 wire bytes; the server's version range goes in both cases,
    /// so a refused client learns what it could speak.
    pub fn to_bytes(
        &self,
        server_min_version: u16,
        server_max_version: u16,
    ) -> [u8; SERVER_HELLO_BYTES] {
        let mut bytes = [0u8; SERVER_HELLO_BYTES];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[8..10].copy_from_slice(&server_min_version.to_le_bytes());
        bytes[10..12].copy_from_slice(&server_max_version.to_le_bytes());
        match *self {
            ServerHello::Accepted { version, max_frame_bytes, cluster_id, member_id } => {
                bytes[6..8].copy_from_slice(&version.to_le_bytes());
                bytes[12..16].copy_from_slice(&max_frame_bytes.to_le_bytes());
                bytes[16..24].copy_from_slice(&cluster_id.to_le_bytes());
                bytes[24..32].copy_from_slice(&member_id.to_le_bytes());
            }
            ServerHello::Refused { reason, .. } => bytes[4] = reason as u8,
        }
        bytes
    }

    /// The wire bytes of a hello produced by `negotiate` against `server`.
    pub fn encode(&self, server: &ServerParams) -> [u8; SERVER_HELLO_BYTES] {
        self.to_bytes(server.min_version, server.max_version)
    }

    /// Reads a server hello from the front of `buffer` and checks it against
    /// the client's own hello. `Ok(None)`: not all 32 bytes are here yet.
    pub fn parse(buffer: &[u8], sent: &ClientHello) -> Result<Option<ServerHello>, HandshakeError> {
        check_magic_prefix(buffer)?;
        let Some(bytes) = buffer.first_chunk::<SERVER_HELLO_BYTES>() else { return Ok(None) };
        if bytes[5] != 0 {
            return Err(HandshakeError::ReservedBitsSet);
        }
        if bytes[4] != 0 {
            let reason =
                Refusal::from_byte(bytes[4]).ok_or(HandshakeError::UnknownStatus(bytes[4]))?;
            let (server_min_version, server_max_version) = (u16_at(bytes, 8), u16_at(bytes, 10));
            return Ok(Some(ServerHello::Refused {
                reason,
                server_min_version,
                server_max_version,
            }));
        }
        let version = u16_at(bytes, 6);
        if !(sent.min_version..=sent.max_version).contains(&version) {
            return Err(HandshakeError::VersionNotOffered(version));
        }
        Ok(Some(ServerHello::Accepted {
            version,
            max_frame_bytes: u32_at(bytes, 12),
            cluster_id: u64_at(bytes, 16),
            member_id: u64_at(bytes, 24),
        }))
    }
}

/// Fails as soon as the bytes present contradict `MAGIC`.
fn check_magic_prefix(buffer: &[u8]) -> Result<(), HandshakeError> {
    let present = buffer.len().min(MAGIC.len());
    if buffer[..present] == MAGIC[..present] { Ok(()) } else { Err(HandshakeError::BadMagic) }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: ServerParams = ServerParams {
        min_version: 1,
        max_version: 3,
        max_frame_bytes: 1 << 20,
        cluster_id: 0xC1,
        member_id: 0xA7,
    };

    #[test]
    fn client_hello_round_trips_and_waits_for_all_bytes() {
        let hello = ClientHello { min_version: 1, max_version: 2, max_frame_bytes: 65536 };
        let bytes = hello.to_bytes();
        assert_eq!(&bytes[..4], b"EMBR");
        for cut in 0..CLIENT_HELLO_BYTES {
            assert_eq!(ClientHello::parse(&bytes[..cut]), Ok(None));
        }
        assert_eq!(ClientHello::parse(&bytes), Ok(Some(hello)));
    }

    #[test]
    fn wrong_magic_is_seen_from_the_first_byte() {
        assert_eq!(ClientHello::parse(b"G"), Err(HandshakeError::BadMagic));
        assert_eq!(ClientHello::parse(b"EMBX"), Err(HandshakeError::BadMagic));
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let hello = ClientHello { min_version: 2, max_version: 9, max_frame_bytes: 8192 };
        let answer = negotiate(&hello, &SERVER);
        assert!(matches!(answer, ServerHello::Accepted { version: 3, cluster_id: 0xC1, .. }));
        assert_eq!(ServerHello::parse(&answer.encode(&SERVER), &hello), Ok(Some(answer)));
    }

    #[test]
    fn refusals_name_their_reason_and_the_server_range() {
        let too_new = ClientHello { min_version: 4, max_version: 5, max_frame_bytes: 8192 };
        let answer = negotiate(&too_new, &SERVER);
        let expected = ServerHello::Refused {
            reason: Refusal::NoCommonVersion,
            server_min_version: 1,
            server_max_version: 3,
        };
        assert_eq!(answer, expected);
        assert_eq!(ServerHello::parse(&answer.encode(&SERVER), &too_new), Ok(Some(expected)));
        let tiny = ClientHello { min_version: 1, max_version: 1, max_frame_bytes: 100 };
        assert!(matches!(
            negotiate(&tiny, &SERVER),
            ServerHello::Refused { reason: Refusal::FrameLimitTooSmall, .. }
        ));
    }

    #[test]
    fn a_client_rejects_a_version_it_did_not_offer() {
        let hello = ClientHello::new(8192);
        let lying =
            ServerHello::Accepted { version: 7, max_frame_bytes: 1, cluster_id: 1, member_id: 1 };
        assert_eq!(
            ServerHello::parse(&lying.encode(&SERVER), &hello),
            Err(HandshakeError::VersionNotOffered(7))
        );
    }
}
