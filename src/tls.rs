//! TLS for the client port, the peer port and the client: rustls with ring.
//!
//! Owns: the crypto provider and its cipher order, loading certificates,
//! keys and CA bundles from PEM files into rustls configurations (with
//! errors that name the file), and [`Stream`], a non-blocking socket that
//! is plain TCP or TLS, driven by the mio loop.
//!
//! Must not touch: what the bytes mean. The server, the transport and the
//! client put their own protocols on top of a `Stream` (or, for the
//! blocking client, of rustls' `StreamOwned`).
//!
//! ## Choices
//!
//! - TLS 1.3 unless asked: every client this project serves (its own,
//!   etcd's Go clients, curl) speaks it. `--tls-min-version TLS1.2` lets
//!   the ports take TLS 1.2 as well, for older clients, with ECDHE key
//!   exchange and AEAD suites only (what rustls implements: no RSA key
//!   exchange, no CBC, no renegotiation); `--tls-max-version` caps the
//!   other end ([`TlsVersions`]). Our own clients (`ember`, the Rust
//!   client, the gateway's links) offer TLS 1.3 and 1.2 with exactly these
//!   suites, as etcdctl does, so they reach a member capped at TLS 1.2;
//!   the member's minimum stays the boundary. A client that offers both
//!   still gets TLS 1.3 from a member that speaks it: the server picks
//!   the newest version both know, and rustls refuses a TLS 1.2 answer
//!   that carries TLS 1.3's downgrade marker (RFC 8446, 4.1.3), so a man
//!   in the middle cannot push the connection down.
//! - ChaCha20-Poly1305 first, then AES-GCM, in both versions: boards before
//!   the Raspberry Pi 5 have no AES instructions, where ChaCha20 is about
//!   three times faster. The server's order wins over the client's, so a
//!   board serving a client that lists AES first still picks ChaCha20: the
//!   board does the work of every connection, the client of one.
//! - No session resumption in either version: clients of a board reconnect
//!   rarely, and a resumed session is state to keep and bytes to read.
//! - ring as the provider: it builds with a plain C compiler for ARM.
//!
//! ## The stream
//!
//! [`Stream`] follows mio's rules: `read` and `write` make all the progress
//! the socket allows and answer `WouldBlock` when it allows no more. A TLS
//! stream reads records until `WouldBlock`, hands them to rustls
//! (`process_new_packets`) and writes what rustls wants to send (handshake
//! messages, alerts, records) while it `wants_write`. Both buffers are
//! bounded: rustls holds at most `PLAINTEXT_BUFFER_BYTES` of outgoing data
//! (a `write` past it takes fewer bytes) and its own fixed limit of
//! received plaintext, which `read` drains before it reads the socket again.
//! `wants_write` says when bytes wait for the socket, so the owner asks for
//! WRITABLE events only then.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring as ring_provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, SupportedProtocolVersion,
};

/// Outgoing bytes rustls may hold for one connection, plaintext and records
/// together: enough for a large answer to leave in few system calls, small
/// enough that thousands of connections cost little. A `write` beyond it
/// takes fewer bytes; the caller keeps the rest in its own bounded buffer.
pub const PLAINTEXT_BUFFER_BYTES: usize = 64 * 1024;

/// The first byte of every TLS connection: a handshake record. Anything else
/// on a TLS port is a plaintext client.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A file that could not be made into TLS material, or material that does
/// not fit together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The file could not be read or held nothing usable.
    File { path: PathBuf, what: &'static str, reason: String },
    /// The files were read but rustls refused them together (a key that
    /// does not match its certificate, an empty CA bundle).
    Config { what: &'static str, reason: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File { path, what, reason } => {
                write!(f, "{what} {}: {reason}", path.display())
            }
            TlsError::Config { what, reason } => write!(f, "{what}: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn file_error(path: &Path, what: &'static str, reason: impl fmt::Display) -> TlsError {
    TlsError::File { path: path.to_path_buf(), what, reason: reason.to_string() }
}

/// A TLS version a port may speak, as etcd's flags name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// `TLS1.2` or `TLS1.3`; `None` for anything else (etcd's `TLS1.0` and
    /// `TLS1.1` included: they are refused, not quietly raised).
    pub fn parse(text: &str) -> Option<TlsVersion> {
        match text {
            "TLS1.2" => Some(TlsVersion::Tls12),
            "TLS1.3" => Some(TlsVersion::Tls13),
            _ => None,
        }
    }

    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS1.2",
            TlsVersion::Tls13 => "TLS1.3",
        })
    }
}

/// The TLS versions a configuration speaks. The default is TLS 1.3 alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsVersions {
    /// Invariant: `min <= max`.
    min: TlsVersion,
    max: TlsVersion,
}

impl Default for TlsVersions {
    fn default() -> TlsVersions {
        TlsVersions { min: TlsVersion::Tls13, max: TlsVersion::Tls13 }
    }
}

impl TlsVersions {
    /// What our clients offer: TLS 1.3 and 1.2. The member's own
    /// versions decide which one a connection gets.
    pub const CLIENT_OFFER: TlsVersions =
        TlsVersions { min: TlsVersion::Tls12, max: TlsVersion::Tls13 };

    /// The versions from `min` to `max`; `None` when `min` is above `max`.
    pub fn new(min: TlsVersion, max: TlsVersion) -> Option<TlsVersions> {
        (min <= max).then_some(TlsVersions { min, max })
    }

    pub fn min(&self) -> TlsVersion {
        self.min
    }

    pub fn max(&self) -> TlsVersion {
        self.max
    }

    /// The versions for rustls, newest first.
    fn rustls(&self) -> Vec<&'static SupportedProtocolVersion> {
        let all = [TlsVersion::Tls13, TlsVersion::Tls12];
        all.into_iter().filter(|v| (self.min..=self.max).contains(v)).map(|v| v.rustls()).collect()
    }
}

/// ring's provider with ChaCha20-Poly1305 ahead of AES-GCM: TLS 1.3's
/// suites, then TLS 1.2's (ECDHE with an ECDSA or RSA certificate, AEAD
/// only), used only by configurations that allow TLS 1.2.
pub fn provider() -> Arc<CryptoProvider> {
    use ring_provider::cipher_suite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut provider = ring_provider::default_provider();
    provider.cipher_suites = vec![
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    Arc::new(provider)
}

/// Every certificate of a PEM file, leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    const WHAT: &str = "certificate file";
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, WHAT, pem_reason(e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, WHAT, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(file_error(path, WHAT, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, "key file", pem_reason(e)))
}

/// The CA certificates of a PEM bundle, as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    const WHAT: &str = "CA file";
    let certs = load_certs(path).map_err(|e| match e {
        TlsError::File { path, reason, .. } => TlsError::File { path, what: WHAT, reason },
        other => other,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| file_error(path, WHAT, e))?;
    }
    Ok(roots)
}

fn pem_reason(error: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "holds no PEM item of the expected kind".to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// The files of a server's TLS configuration (the client port's or the
/// peer port's), kept so the configuration can be built again when they
/// change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to.
    pub trusted_ca: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `trusted_ca`.
    /// Invariant: only set with `trusted_ca`.
    pub client_cert_auth: bool,
    /// `--tls-min-version` and `--tls-max-version`.
    pub versions: TlsVersions,
}

impl ServerFiles {
    /// Reads the files and builds the configuration.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let certs = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions.rustls())
            .map_err(|e| config_error("TLS versions", e))?;
        let builder = match &self.trusted_ca {
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier =
                    if self.client_cert_auth { verifier } else { verifier.allow_unauthenticated() };
                let verifier = verifier.build().map_err(|e| file_error(ca, "CA file", e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| config_error("certificate and key", e))?;
        // No resumption: clients of a board reconnect rarely, and a TLS 1.3
        // ticket is bytes the client must read before it can see a close.
        // TLS 1.2 has no tickets without a ticketer; its session ids would
        // be a cache to keep.
        config.send_tls13_tickets = 0;
        config.ignore_client_order = true;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        Ok(Arc::new(config))
    }

    /// When each file last changed: a different answer means the
    /// configuration should be built again.
    pub fn fingerprint(&self) -> Vec<Option<SystemTime>> {
        let files = [Some(&self.cert), Some(&self.key), self.trusted_ca.as_ref()];
        files.into_iter().flatten().map(|p| modified(p)).collect()
    }
}

/// How often a server's certificate, key and CA files are looked at for
/// changes. Rotation tools replace them every few weeks at most; a minute
/// of delay costs nothing, and SIGHUP reloads at once.
pub const FILES_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// When a server's TLS files are loaded again: at once on SIGHUP, else
/// when their change times (`ServerFiles::fingerprint`) differ from those
/// of the last check, looked at every `FILES_CHECK_INTERVAL`. Pure: the
/// owner (the node's loop, the gateway's task) passes the time, the signal
/// and the fingerprint, and does the loading.
#[derive(Debug, Clone)]
pub struct ReloadCheck {
    next_check: Instant,
    fingerprint: Vec<Option<SystemTime>>,
}

impl ReloadCheck {
    /// Starts from the files as they were loaded at `now`.
    pub fn new(fingerprint: Vec<Option<SystemTime>>, now: Instant) -> ReloadCheck {
        ReloadCheck { next_check: now + FILES_CHECK_INTERVAL, fingerprint }
    }

    /// Why the files should be loaded again now (for the log), or `None`.
    /// `fingerprint` is only called when a check is due.
    pub fn maybe_due(
        &mut self,
        signalled: bool,
        now: Instant,
        fingerprint: impl FnOnce() -> Vec<Option<SystemTime>>,
    ) -> Option<&'static str> {
        if !signalled && now < self.next_check {
            return None;
        }
        self.next_check = now + FILES_CHECK_INTERVAL;
        let current = fingerprint();
        if !signalled && current == self.fingerprint {
            return None;
        }
        self.fingerprint = current;
        Some(if signalled { "SIGHUP" } else { "the files changed" })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn config_error(what: &'static str, error: impl fmt::Display) -> TlsError {
    TlsError::Config { what, reason: error.to_string() }
}

/// The files of a client's TLS configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA bundle the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// A certificate and key to present, for servers that ask for one.
    /// Invariant: both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Accept any server certificate. Encryption without authentication:
    /// anyone on the path can read and change the traffic.
    pub insecure_skip_verify: bool,
}

impl ClientFiles {
    /// Reads the files and builds a client's configuration: TLS 1.3 and
    /// 1.2 offered (`TlsVersions::CLIENT_OFFER`), ECDHE with AEAD suites
    /// only in 1.2.
    pub fn load(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.load_for(TlsVersions::CLIENT_OFFER)
    }

    /// Reads the files and builds the configuration, for `versions`: a
    /// member dials its peers with the versions its own peer port speaks.
    pub fn load_for(&self, versions: TlsVersions) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions.rustls())
            .map_err(|e| config_error("TLS versions", e))?;
        let builder = if self.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer { provider }))
        } else {
            let Some(ca) = &self.ca else {
                return Err(config_error(
                    "TLS",
                    "a CA file is needed to check the server (or skip the check, insecurely)",
                ));
            };
            builder.with_root_certificates(load_roots(ca)?)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| config_error("client certificate and key", e))?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(config_error("TLS", "a client certificate needs its key, and back")),
        };
        Ok(Arc::new(config))
    }
}

/// The verifier behind `--insecure-skip-tls-verify`: any certificate is
/// taken, though the handshake signatures are still checked (so the
/// session is at least bound to the key the server showed).
#[derive(Debug)]
struct AnyServer {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The server name to check a certificate against: a DNS name or an IP
/// address (brackets of an IPv6 literal removed).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string())
        .map_err(|e| config_error("server name", format!("{host}: {e}")))
}

/// Whether the leaf certificate `cert` is valid for `host` (its subject
/// alternative names). Its chain is checked by rustls during the handshake;
/// this only binds it to a name.
pub fn certificate_names(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(name) = server_name(host) else { return false };
    let Ok(parsed) = ParsedCertificate::try_from(cert) else { return false };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// What a non-blocking stream speaks.
enum Mode {
    Plain,
    /// A TLS port before the first byte: a handshake record starts TLS,
    /// anything else is a plaintext client to refuse in words.
    Sniff(Arc<ServerConfig>),
    Tls(Box<rustls::Connection>),
    /// A plaintext client on a TLS port: bytes pass through so that the
    /// server can answer why it refuses.
    PlainOnTlsPort,
}

/// A socket accepted or dialed by the mio loop: plain TCP or TLS, with
/// mio's non-blocking `Read` and `Write`.
pub struct Stream {
    sock: TcpStream,
    mode: Mode,
}

impl Stream {
    /// A plain TCP stream.
    pub fn plain(sock: TcpStream) -> Stream {
        Stream { sock, mode: Mode::Plain }
    }

    /// An accepted connection on a port that serves TLS with `config`
    /// (or plain TCP when `None`).
    pub fn accepted(sock: TcpStream, config: Option<Arc<ServerConfig>>) -> Stream {
        match config {
            Some(config) => Stream { sock, mode: Mode::Sniff(config) },
            None => Stream::plain(sock),
        }
    }

    /// A TLS client connection on a socket being connected; the handshake
    /// runs as the stream is read and written.
    pub fn dialed(
        sock: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Stream, TlsError> {
        let conn =
            ClientConnection::new(config, name).map_err(|e| config_error("TLS client", e))?;
        Ok(Stream::tls(sock, rustls::Connection::Client(conn)))
    }

    fn tls(sock: TcpStream, conn: rustls::Connection) -> Stream {
        Stream { sock, mode: tls_mode(conn) }
    }

    /// The TCP socket under the stream.
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Whether this is a plaintext client on a TLS port.
    pub fn plaintext_on_tls_port(&self) -> bool {
        matches!(self.mode, Mode::PlainOnTlsPort)
    }

    /// Whether the stream speaks TLS (or will, once its first byte comes).
    pub fn is_tls(&self) -> bool {
        matches!(self.mode, Mode::Tls(_) | Mode::Sniff(_))
    }

    /// Whether the TLS handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        match &self.mode {
            Mode::Tls(conn) => conn.is_handshaking(),
            Mode::Sniff(_) => true,
            _ => false,
        }
    }

    /// The certificates the other side presented, leaf first, once the
    /// handshake is done.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.mode {
            Mode::Tls(conn) => conn.peer_certificates(),
            _ => None,
        }
    }

    /// Whether TLS bytes wait for the socket: the owner wants WRITABLE
    /// events until they are gone.
    pub fn wants_write(&self) -> bool {
        matches!(&self.mode, Mode::Tls(conn) if conn.wants_write())
    }

    /// The interest this stream needs: READABLE, and WRITABLE while
    /// `wants_write` or `more` (the owner's own bytes wait).
    pub fn interest(&self, more: bool) -> Interest {
        if more || self.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// Writes the TLS bytes rustls holds until the socket would block.
    /// `Ok` also when some are left (`wants_write` says so).
    pub fn flush_tls(&mut self) -> io::Result<()> {
        match &mut self.mode {
            Mode::Tls(conn) => flush_conn(conn, &mut self.sock),
            _ => Ok(()),
        }
    }

    /// Decides between TLS and plaintext from the first byte.
    fn sniff(&mut self) -> io::Result<()> {
        let Mode::Sniff(config) = &self.mode else { return Ok(()) };
        let config = config.clone();
        let mut first = [0u8; 1];
        let n = self.sock.peek(&mut first)?;
        if n == 0 {
            // Closed before a byte: the read that follows finds the end.
            self.mode = Mode::Plain;
            return Ok(());
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            self.mode = Mode::PlainOnTlsPort;
            return Ok(());
        }
        let conn = ServerConnection::new(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.mode = tls_mode(rustls::Connection::Server(conn));
        Ok(())
    }

    fn read_tls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Mode::Tls(conn) = &mut self.mode else { unreachable!("called for TLS only") };
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The other side closed without close_notify: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let processed = conn.process_new_packets();
            // Handshake answers, or the alert that explains a failure.
            flush_conn(conn, &mut self.sock)?;
            if let Err(e) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    fn write_tls_plaintext(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Mode::Tls(conn) = &mut self.mode else { unreachable!("called for TLS only") };
        flush_conn(conn, &mut self.sock)?;
        let mut taken = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            let n = conn.writer().write(buf)?;
            taken += n;
            if n < buf.len() {
                break;
            }
        }
        flush_conn(conn, &mut self.sock)?;
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }
}

fn tls_mode(mut conn: rustls::Connection) -> Mode {
    conn.set_buffer_limit(Some(PLAINTEXT_BUFFER_BYTES));
    Mode::Tls(Box::new(conn))
}

/// Writes what the connection wants to send until the socket would block.
fn flush_conn(conn: &mut rustls::Connection, sock: &mut TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if matches!(self.mode, Mode::Sniff(_)) {
            self.sniff()?;
        }
        match self.mode {
            Mode::Plain | Mode::PlainOnTlsPort => self.sock.read(buf),
            Mode::Tls(_) => self.read_tls(buf),
            Mode::Sniff(_) => unreachable!("sniff decides or fails"),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.mode {
            Mode::Plain | Mode::PlainOnTlsPort => self.sock.write_vectored(bufs),
            Mode::Tls(_) => self.write_tls_plaintext(bufs),
            // Nothing is written before the client's first byte says what
            // it speaks; the server only answers.
            Mode::Sniff(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

impl mio::event::Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.sock.register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.sock.reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.sock.deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha20_comes_before_aes_in_both_versions() {
        let names: Vec<String> =
            provider().cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect();
        assert_eq!(
            names,
            [
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ]
        );
    }

    #[test]
    fn versions_parse_as_etcd_names_them_and_keep_their_order() {
        assert_eq!(TlsVersion::parse("TLS1.2"), Some(TlsVersion::Tls12));
        assert_eq!(TlsVersion::parse("TLS1.3"), Some(TlsVersion::Tls13));
        for refused in ["TLS1.1", "TLS1.0", "tls1.3", "1.3", ""] {
            assert_eq!(TlsVersion::parse(refused), None, "{refused}");
        }
        let (v12, v13) = (TlsVersion::Tls12, TlsVersion::Tls13);
        assert_eq!(TlsVersions::new(v13, v12), None);
        let names = |v: TlsVersions| v.rustls().iter().map(|p| p.version).collect::<Vec<_>>();
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(names(TlsVersions::default()), [TLSv1_3]);
        assert_eq!(names(TlsVersions::new(v12, v13).unwrap()), [TLSv1_3, TLSv1_2]);
        assert_eq!(names(TlsVersions::new(v12, v12).unwrap()), [TLSv1_2]);
        assert_eq!(names(TlsVersions::CLIENT_OFFER), [TLSv1_3, TLSv1_2]);
    }

    #[test]
    fn files_reload_on_a_signal_at_once_and_on_change_at_the_next_check() {
        let t0 = Instant::now();
        let old = vec![Some(SystemTime::UNIX_EPOCH)];
        let new = vec![Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1))];
        let mut check = ReloadCheck::new(old.clone(), t0);
        // Before the interval: nothing is looked at, even if files changed.
        assert_eq!(check.maybe_due(false, t0, || panic!("looked too early")), None);
        assert_eq!(check.maybe_due(true, t0, || old.clone()), Some("SIGHUP"));
        let later = t0 + FILES_CHECK_INTERVAL;
        assert_eq!(check.maybe_due(false, later, || old.clone()), None);
        let later = later + FILES_CHECK_INTERVAL;
        assert_eq!(check.maybe_due(false, later, || new.clone()), Some("the files changed"));
        let later = later + FILES_CHECK_INTERVAL;
        assert_eq!(check.maybe_due(false, later, || new.clone()), None, "loaded once");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("ember-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = load_certs(&missing).unwrap_err().to_string();
        assert!(e.starts_with("certificate file ") && e.contains("missing.pem"), "{e}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = load_roots(&junk).unwrap_err().to_string();
        assert!(e.starts_with("CA file ") && e.contains("junk.pem"), "{e}");
        let e = load_key(&junk).unwrap_err().to_string();
        assert!(e.starts_with("key file ") && e.contains("junk.pem"), "{e}");
        let files = ClientFiles { cert: Some(junk.clone()), ..ClientFiles::default() };
        assert!(files.load().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
