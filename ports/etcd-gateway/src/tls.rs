//! TLS on both sides of the gateway: its own listener (etcd's flags) and
//! its connections to members whose client port speaks TLS (`ember`'s
//! client flags). The configurations come from `ember::tls`, so the
//! gateway speaks as the members do: TLS 1.3 only, ChaCha20-Poly1305 first,
//! errors that name the file that failed.
//!
//! Handshakes on the listener run in tasks of their own, at most
//! `HANDSHAKES_MAX` at once and each for at most `HANDSHAKE_TIMEOUT`, so a
//! client that opens a connection and says nothing holds neither the
//! accept loop nor memory for long. A plaintext client fails its
//! handshake and is closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ember::tls::{ServerFiles, TlsError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;

/// Handshakes in progress at once; further connections wait in the
/// kernel's backlog.
const HANDSHAKES_MAX: usize = 64;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
/// order they complete it.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<io::Result<Accepted>> {
    let (sender, receiver) = mpsc::channel(HANDSHAKES_MAX);
    tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
    ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
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
        let (acceptor, accepted) = (acceptor.clone(), accepted.clone());
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
