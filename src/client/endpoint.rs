//! Endpoint addresses and dialing: `host:port` or `http://host:port`, each
//! tried address by address within the dial timeout.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::error::ClientError;

/// The `host:port` part of an endpoint as users write it (etcd accepts
/// `http://host:port` too). There is no TLS, so `https://` is refused rather
/// than silently spoken to in plain text.
pub fn parse_endpoint(text: &str) -> Result<String, ClientError> {
    let text = text.trim();
    if text.starts_with("https://") {
        return Err(ClientError::BadEndpoint(format!("{text}: TLS is not supported")));
    }
    let bare = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
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

/// Opens a TCP connection to `endpoint` (`host:port`), trying each address
/// it resolves to. `Err` is the reason, for a `DialFailure`.
pub fn dial(endpoint: &str, dial_timeout: Duration) -> Result<TcpStream, String> {
    let addresses: Vec<SocketAddr> =
        endpoint.to_socket_addrs().map_err(|error| format!("cannot resolve: {error}"))?.collect();
    let mut last = String::from("resolves to no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, dial_timeout) {
            Ok(stream) => {
                // Requests are small and latency matters more than packet
                // count; the client batches its own writes.
                stream.set_nodelay(true).map_err(|error| error.to_string())?;
                return Ok(stream);
            }
            Err(error) => last = error.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_etcd_spellings() {
        assert_eq!(parse_endpoint("http://10.0.0.1:2379/").unwrap(), "10.0.0.1:2379");
        assert_eq!(parse_endpoint(" localhost:7379").unwrap(), "localhost:7379");
        assert_eq!(
            parse_endpoints("a:1,http://b:2,").unwrap(),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert_eq!(parse_endpoint("[::1]:7379").unwrap(), "[::1]:7379");
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_reason() {
        for bad in ["https://a:1", "a", "a:port", ":1", "a:99999"] {
            assert!(matches!(parse_endpoint(bad), Err(ClientError::BadEndpoint(_))), "{bad}");
        }
        assert!(parse_endpoints(" , ").is_err());
    }
}
