//! A joining member asking a peer for the member table (see `wire`):
//! blocking, bounded by a deadline, run once at start-up before the loop
//! exists. The same rules as any dial: the hello travels inside peer TLS
//! when it is configured, and with a secret both sides prove it and the
//! table carries a MAC.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::Config;
use super::inbound::fill_random;
use super::wire::{self, HELLO_BYTES, Hello, HelloError, MAC_BYTES, MacRole, NONCE_BYTES};
use crate::tls;

/// Why a peer did not give the member table.
#[derive(Debug)]
pub enum AskError {
    Io(io::Error),
    Tls(String),
    /// Its answer was refused (another cluster, a bad MAC, ...).
    Refused(HelloError),
    /// It answered, but not with the table (it does not know the flag).
    NoTable,
    /// It closed the connection before answering the hello: it refused
    /// this member's hello (a peer requiring the secret does so).
    Closed,
    /// A table length beyond `wire::MEMBERS_ANSWER_BYTES_MAX`.
    TooLarge(usize),
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::Io(e) => write!(f, "{e}"),
            AskError::Tls(e) => write!(f, "TLS: {e}"),
            AskError::Refused(e) => write!(f, "refused its answer: {e}"),
            AskError::NoTable => write!(f, "it answered without the member table"),
            AskError::Closed => write!(
                f,
                "it closed the connection without answering: it refused this member's hello \
                 (does it require the peer secret or peer TLS, as this member was not given?)"
            ),
            AskError::TooLarge(n) => write!(f, "a member table of {n} bytes is beyond the bound"),
        }
    }
}

impl From<io::Error> for AskError {
    fn from(e: io::Error) -> AskError {
        AskError::Io(e)
    }
}

/// The member table's bytes as the peer at `addr` (whose URL names
/// `host`) holds them.
pub fn ask_members(
    addr: SocketAddr,
    host: &str,
    config: &Config,
    timeout: Duration,
) -> Result<Vec<u8>, AskError> {
    let sock = TcpStream::connect_timeout(&addr, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    let Some(peer_tls) = &config.tls else {
        return exchange(sock, config);
    };
    let name = peer_tls.allowed_hostname.as_deref().unwrap_or(host);
    let name = tls::server_name(name).map_err(|e| AskError::Tls(e.to_string()))?;
    let conn = rustls::ClientConnection::new(peer_tls.client.clone(), name)
        .map_err(|e| AskError::Tls(e.to_string()))?;
    exchange(rustls::StreamOwned::new(conn, sock), config).map_err(tls_failure)
}

/// rustls reports a refused handshake (a certificate not trusted, either
/// way) as invalid data on the stream: said as TLS.
fn tls_failure(error: AskError) -> AskError {
    match error {
        AskError::Io(e) if e.kind() == io::ErrorKind::InvalidData => AskError::Tls(e.to_string()),
        other => other,
    }
}

fn exchange(mut conn: impl Read + Write, config: &Config) -> Result<Vec<u8>, AskError> {
    let secret = config.secret.as_ref();
    let hello = Hello { cluster_id: config.cluster_id, from: 0, to: 0 };
    let flags = wire::FLAG_MEMBERS | if secret.is_some() { wire::FLAG_SECRET } else { 0 };
    let mut first = [0u8; HELLO_BYTES + NONCE_BYTES];
    first[..HELLO_BYTES].copy_from_slice(&hello.encode_flags(flags));
    let sent = if secret.is_some() {
        fill_random(&mut first[HELLO_BYTES..]).map_err(|_| AskError::NoTable)?;
        &first[..]
    } else {
        &first[..HELLO_BYTES]
    };
    conn.write_all(sent)?;
    conn.flush()?;
    let mut reply = [0u8; HELLO_BYTES + NONCE_BYTES + MAC_BYTES];
    let reply_bytes = if secret.is_some() { reply.len() } else { HELLO_BYTES };
    read_answer(&mut conn, &mut reply[..reply_bytes]).map_err(|e| match e {
        AskError::NoTable => AskError::Closed,
        other => other,
    })?;
    let head: &[u8; HELLO_BYTES] = reply.first_chunk().expect("hello fits");
    Hello::check(head, config.cluster_id, 0, |_| true).map_err(AskError::Refused)?;
    wire::check_secret_flag(head, secret.is_some()).map_err(AskError::Refused)?;
    if !wire::asks_members(head) {
        return Err(AskError::NoTable);
    }
    let transcript = secret.map(|secret| {
        let acceptor = reply[..HELLO_BYTES + NONCE_BYTES].try_into().expect("sized");
        (secret, wire::transcript(&first, acceptor))
    });
    if let Some((secret, transcript)) = &transcript {
        let mac = &reply[HELLO_BYTES + NONCE_BYTES..];
        wire::verify_hello_mac(secret.bytes(), MacRole::Acceptor, transcript, mac)
            .map_err(AskError::Refused)?;
        conn.write_all(&wire::hello_mac(secret.bytes(), MacRole::Dialer, transcript))?;
        conn.flush()?;
    }
    let mut answer = vec![0u8; 4];
    read_answer(&mut conn, &mut answer)?;
    let len = u32::from_le_bytes(answer[..4].try_into().expect("4 bytes")) as usize;
    if len > wire::MEMBERS_ANSWER_BYTES_MAX {
        return Err(AskError::TooLarge(len));
    }
    answer.resize(4 + len, 0);
    read_answer(&mut conn, &mut answer[4..])?;
    if let Some((secret, transcript)) = &transcript {
        let mut mac = [0u8; MAC_BYTES];
        read_answer(&mut conn, &mut mac)?;
        wire::verify_members_mac(secret.bytes(), transcript, &answer, &mac)
            .map_err(AskError::Refused)?;
    }
    answer.drain(..4);
    Ok(answer)
}

/// Reads exactly `buf`; a connection closed first means it was refused.
fn read_answer(conn: &mut impl Read, buf: &mut [u8]) -> Result<(), AskError> {
    conn.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => AskError::NoTable,
        _ => AskError::Io(e),
    })
}
