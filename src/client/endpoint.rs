//! Endpoint addresses and dialing: `host:port` or `http://host:port`, each
//! tried address by address within the dial timeout.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::error::ClientError;

/// The `host:port` part of an endpoint as users write it (etcd accepts
/// `http://host:port` and `https://host:port` too). Whether a connection
/// speaks TLS is the client configuration's choice, not the scheme's: an
/// `https://` endpoint without it would otherwise be spoken to in plain
/// text, so the command line checks the two agree (`any_https`).
pub fn parse_endpoint(text: &str) -> Result<String, ClientError> {
    let text = text.trim();
    let bare = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(text)
        .trim_end_matches('/');
    let Some((host, port)) = bare.rsplit_once(':') else {
        return Err(ClientError::BadEndpoint(format!("{text}: expected host:port")));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ClientError::BadEndpoint(format!("{text}: expected host:port")));
    }
    Ok(bare.to_string())
}

/// A comma-separated endpoint list, each entry checked by `parse_endpoint`.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, ClientError> {
    let endpoints: Vec<String> = list
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(parse_endpoint)
        .collect::<Result<_, _>>()?;
    if endpoints.is_empty() {
        return Err(ClientError::BadEndpoint("the endpoint list is empty".to_string()));
    }
    Ok(endpoints)
}

/// Whether any endpoint of the list is written `https://`: the client then
/// needs a TLS configuration.
pub fn any_https(list: &str) -> bool {
    list.split(',').any(|part| part.trim().starts_with("https://"))
}

/// Opens a TCP connection to `endpoint` (`host:port`), trying each address
/// it resolves to. `Err` is the reason in words, for a `DialFailure`.
pub fn dial(endpoint: &str, dial_timeout: Duration) -> Result<TcpStream, String> {
    let addresses: Vec<SocketAddr> = endpoint
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {endpoint}: {}", io_cause(&error)))?
        .collect();
    let mut last = format!("{endpoint} resolves to no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, dial_timeout) {
            Ok(stream) => {
                // Requests are small and latency matters more than packet
                // count; the client batches its own writes.
                stream.set_nodelay(true).map_err(|error| io_cause(&error))?;
                return Ok(stream);
            }
            Err(error) if is_timeout(&error) => last = timed_out(endpoint, dial_timeout),
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                last = format!("connection refused by {address}: nothing listens there");
            }
            Err(error) => last = format!("connecting to {address}: {}", io_cause(&error)),
        }
    }
    Err(last)
}

/// The words of a dial or handshake that took longer than `timeout`.
pub fn timed_out(endpoint: &str, timeout: Duration) -> String {
    format!("timed out after {} connecting to {endpoint}", duration_words(timeout))
}

/// `2s`, `500ms`, `1500ms`: as the timeout flags are written.
fn duration_words(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// A socket read or write that gave up on its timeout (Linux reports an
/// expired `SO_RCVTIMEO` as `WouldBlock`).
pub fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// An I/O error in words, without the OS error number.
pub fn io_cause(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_io_errors_read_as_words() {
        let two_secs = timed_out("h:1", Duration::from_secs(2));
        assert_eq!(two_secs, "timed out after 2s connecting to h:1");
        let odd = timed_out("h:1", Duration::from_millis(1500));
        assert_eq!(odd, "timed out after 1500ms connecting to h:1");
        let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert!(!io_cause(&refused).contains("os error"));
        let numbered = std::io::Error::from_raw_os_error(11);
        let cause = io_cause(&numbered);
        assert!(!cause.contains("os error") && !cause.is_empty(), "{cause}");
    }

    #[test]
    fn endpoints_accept_etcd_spellings() {
        assert_eq!(parse_endpoint("http://10.0.0.1:2379/").unwrap(), "10.0.0.1:2379");
        assert_eq!(parse_endpoint(" localhost:7379").unwrap(), "localhost:7379");
        assert_eq!(
            parse_endpoints("a:1,http://b:2,").unwrap(),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert_eq!(parse_endpoint("[::1]:7379").unwrap(), "[::1]:7379");
        assert_eq!(parse_endpoint("https://b:2").unwrap(), "b:2");
        assert!(any_https("a:1, https://b:2") && !any_https("a:1,http://b:2"));
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_reason() {
        for bad in ["https://a", "a", "a:port", ":1", "a:99999"] {
            assert!(matches!(parse_endpoint(bad), Err(ClientError::BadEndpoint(_))), "{bad}");
        }
        assert!(parse_endpoints(" , ").is_err());
    }
}
