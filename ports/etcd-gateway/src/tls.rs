//! TLS on both sides of the gateway: its own listener (etcd's flags) and
//! its connections to members whose client port speaks TLS (`ember`'s
//! client flags). The configurations come from `ember::tls`, so the
//! gateway speaks as the members and `ember` do: its listener TLS 1.3
//! unless told otherwise, its links to members TLS 1.3 or 1.2 as the member
//! allows, ChaCha20-Poly1305 first, errors that name the file that failed.
//!
//! Handshakes on the listener run in tasks of their own, at most
//! `HANDSHAKES_MAX` at once and each for at most `HANDSHAKE_TIMEOUT`, so a
//! client that opens a connection and says nothing holds neither the
//! accept loop nor memory for long. A plaintext client fails its
//! handshake and is closed.
//!
//! The listener's certificate, key and CA bundle are loaded again on
//! SIGHUP and when the files change (`ember::tls::ReloadCheck`, the
//! node's rule): each new connection takes the newest configuration, open
//! ones keep theirs, and a load that fails is logged and the old
//! configuration kept.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ember::tls::{ReloadCheck, ServerFiles, TlsError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;

/// Handshakes in progress at once; further connections wait in the
/// kernel's backlog.
const HANDSHAKES_MAX: usize = 64;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the reload task wakes to ask `ReloadCheck` whether the files
/// are due a look (it looks every `ember::tls::FILES_CHECK_INTERVAL`).
const CHECK_TICK: Duration = Duration::from_secs(1);

/// The listener's configuration from etcd's flags. gRPC needs HTTP/2;
/// etcd's JSON API also serves HTTP/1.1 clients, so both are offered.
pub fn listener_config(files: &ServerFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = Arc::unwrap_or_clone(files.load()?);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client connection whose handshake finished.
pub struct Accepted(TlsStream<TcpStream>);

/// The connections of `listener` that complete a TLS handshake, in the
/// order they complete it, with the configuration `config` built from
/// `files` and reloaded from them.
pub fn incoming(
    listener: TcpListener,
    files: ServerFiles,
    config: Arc<ServerConfig>,
) -> ReceiverStream<io::Result<Accepted>> {
    let (sender, receiver) = mpsc::channel(HANDSHAKES_MAX);
    let (configs, config) = watch::channel(config);
    tokio::spawn(reload_loop(files, configs));
    tokio::spawn(accept_loop(listener, config, sender));
    ReceiverStream::new(receiver)
}

/// Loads the listener's files again when `ReloadCheck` says so, until the
/// accept loop is gone.
async fn reload_loop(files: ServerFiles, configs: watch::Sender<Arc<ServerConfig>>) {
    let mut hangups = signal(SignalKind::hangup()).ok();
    let mut check = ReloadCheck::new(files.fingerprint(), std::time::Instant::now());
    let mut ticks = tokio::time::interval(CHECK_TICK);
    while !configs.is_closed() {
        let signalled = tokio::select! {
            _ = hangup(&mut hangups) => true,
            _ = ticks.tick() => false,
        };
        let now = std::time::Instant::now();
        let Some(why) = check.maybe_due(signalled, now, || files.fingerprint()) else { continue };
        match listener_config(&files) {
            Ok(config) => {
                configs.send_replace(config);
                eprintln!("ember-etcd: listener TLS certificates reloaded ({why})");
            }
            Err(error) => eprintln!(
                "ember-etcd: listener TLS not reloaded, the old certificates stay: {error}"
            ),
        }
    }
}

/// The next SIGHUP; never, when its handler could not be installed.
async fn hangup(hangups: &mut Option<Signal>) {
    match hangups {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
    accepted: mpsc::Sender<io::Result<Accepted>>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    while !accepted.is_closed() {
        let Ok(turn) = handshakes.clone().acquire_owned().await else { return };
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(_) => {
                // Out of descriptors, or a connection reset before it was
                // taken: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Answers are small and many clients wait on them (see main).
        let _ = socket.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.borrow().clone());
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await;
            drop(turn);
            if let Ok(Ok(stream)) = shaken {
                let _ = accepted.send(Ok(Accepted(stream))).await;
            }
        });
    }
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Any connection to a member: plain TCP or TLS over it.
pub trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// TLS over `tcp` to the member at `endpoint` (`host:port`), its
/// certificate checked for that host.
pub async fn connect(
    config: &Arc<ClientConfig>,
    endpoint: &str,
    tcp: TcpStream,
) -> Result<Box<dyn Socket>, String> {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ember::tls::server_name(host).map_err(|error| error.to_string())?;
    let stream = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|error| format!("TLS handshake: {error}"))?;
    Ok(Box::new(stream))
}
