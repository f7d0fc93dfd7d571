//! Plain HTTP on the client port: telling it from the protocol, reading one
//! request head, and writing the `GET /health` answer.
//!
//! The client port speaks two languages. A protocol client opens with
//! `MAGIC` ("EMBR"); an HTTP client opens with a method and a space. `sniff`
//! decides from the first bytes. HTTP support is just enough for health
//! checks and load balancers: one request per connection, the head read up to
//! a hard cap, the body ignored, and `Connection: close` on every answer.

use super::handshake::MAGIC;

/// Bytes the head of an HTTP request (request line plus headers) may take.
/// A health probe sends well under 1 KiB; 8 KiB leaves room for proxies'
/// headers, and anything longer is refused with 431, never buffered.
pub const HTTP_HEAD_BYTES_MAX: usize = 8 * 1024;

/// Methods recognised when sniffing. Others are garbage to this port.
const HTTP_METHODS: &[&[u8]] =
    &[b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH "];

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniff {
    /// The protocol's hello follows.
    Handshake,
    /// An HTTP request follows.
    Http,
    /// Too few bytes to tell; read more (at most `SNIFF_BYTES` are needed).
    NeedMore,
    /// Neither: close the connection.
    Garbage,
}

/// Bytes that always suffice to decide (the longest method plus its space).
pub const SNIFF_BYTES: usize = 8;

/// Decides what a connection speaks from its first bytes.
pub fn sniff(first: &[u8]) -> Sniff {
    let mut could_be_more = false;
    let candidates = std::iter::once(&MAGIC[..]).chain(HTTP_METHODS.iter().copied());
    for (index, pattern) in candidates.enumerate() {
        if first.starts_with(pattern) {
            return if index == 0 { Sniff::Handshake } else { Sniff::Http };
        }
        could_be_more |= pattern.starts_with(first);
    }
    if could_be_more { Sniff::NeedMore } else { Sniff::Garbage }
}

/// The parts of a request head the server acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The path with any query string removed.
    pub path: &'a str,
    /// Bytes the head took, blank line included.
    pub head_bytes: usize,
}

/// Why a request head was refused; each maps to the status to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// No blank line within `HTTP_HEAD_BYTES_MAX`: answer 431.
    HeadTooLarge,
    /// The request line is not `METHOD SP TARGET SP HTTP/1.x`: answer 400.
    BadRequestLine,
    /// Plain HTTP on a port that speaks only TLS: answer 400 saying so.
    TlsRequired,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::BadRequestLine | HttpError::TlsRequired => 400,
        }
    }
}

/// Reads a request head from the front of `buffer`. `Ok(None)`: the blank
/// line that ends the head has not arrived, and the cap is not reached.
/// Headers are skipped, not interpreted; a bare `\n` ends a line as well.
pub fn parse_request_head(buffer: &[u8]) -> Result<Option<HttpRequest<'_>>, HttpError> {
    let window = &buffer[..buffer.len().min(HTTP_HEAD_BYTES_MAX)];
    let Some(head_bytes) = head_end(window) else {
        return if buffer.len() >= HTTP_HEAD_BYTES_MAX {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    let line_end = window.iter().position(|&b| b == b'\n').unwrap_or(0);
    let line = window[..line_end].strip_suffix(b"\r").unwrap_or(&window[..line_end]);
    let line = std::str::from_utf8(line).map_err(|_| HttpError::BadRequestLine)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine);
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(HttpError::BadRequestLine);
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Some(HttpRequest { method, path, head_bytes }))
}

/// The length of the head through its blank line, if the window holds one.
fn head_end(window: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (at, &byte) in window.iter().enumerate() {
        if byte != b'\n' {
            continue;
        }
        let line = &window[line_start..at];
        if line.is_empty() || line == b"\r" {
            return Some(at + 1);
        }
        line_start = at + 1;
    }
    None
}

/// The node's health as `GET /health` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy(UnhealthyReason),
}

/// Why the node is unhealthy; the text is what the JSON `reason` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnhealthyReason {
    /// No leader is known, so nothing can be committed.
    NoLeader,
    /// A space alarm is raised; writes are refused.
    NoSpace,
    /// The node is shutting down.
    Stopping,
    /// This member's data disagrees with the majority's; it serves no reads.
    Corrupt,
}

impl UnhealthyReason {
    pub fn text(self) -> &'static str {
        match self {
            UnhealthyReason::NoLeader => "RAFT NO LEADER",
            UnhealthyReason::NoSpace => "ALARM NOSPACE",
            UnhealthyReason::Stopping => "SERVER STOPPING",
            UnhealthyReason::Corrupt => "ALARM CORRUPT",
        }
    }
}

/// What to answer to a request head: routing is pure, writing is separate.
pub fn respond(request: &HttpRequest<'_>, health: Health, out: &mut Vec<u8>) {
    match (request.method, request.path) {
        ("GET" | "HEAD", "/health") => write_health(health, request.method == "HEAD", out),
        (_, "/health") => write_response(405, "text/plain", b"method not allowed\n", false, out),
        _ => write_response(404, "text/plain", b"not found\n", request.method == "HEAD", out),
    }
}

/// The answer to a head `parse_request_head` refused; close afterwards.
pub fn write_http_error(error: HttpError, out: &mut Vec<u8>) {
    let body: &[u8] = match error {
        HttpError::HeadTooLarge => b"request head too large\n",
        HttpError::BadRequestLine => b"bad request line\n",
        HttpError::TlsRequired => b"this port speaks TLS only: use https://\n",
    };
    write_response(error.status(), "text/plain", body, false, out);
}

/// etcd's answer: 200 `{"health":"true"}`, or 503 with the reason.
pub fn write_health(health: Health, head_only: bool, out: &mut Vec<u8>) {
    match health {
        Health::Healthy => {
            write_response(200, "application/json", b"{\"health\":\"true\"}", head_only, out)
        }
        Health::Unhealthy(reason) => {
            let body = format!("{{\"health\":\"false\",\"reason\":\"{}\"}}", reason.text());
            write_response(503, "application/json", body.as_bytes(), head_only, out);
        }
    }
}

/// Appends a complete HTTP/1.1 response that closes the connection.
pub fn write_response(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    out: &mut Vec<u8>,
) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body);
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_tells_the_three_apart() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(b"E"), Sniff::NeedMore);
        assert_eq!(sniff(b"EMBR\x01\x00"), Sniff::Handshake);
        assert_eq!(sniff(b"GE"), Sniff::NeedMore);
        assert_eq!(sniff(b"GET /health HTTP/1.1\r\n"), Sniff::Http);
        assert_eq!(sniff(b"P"), Sniff::NeedMore);
        assert_eq!(sniff(b"PUT "), Sniff::Http);
        assert_eq!(sniff(b"GETX"), Sniff::Garbage);
        assert_eq!(sniff(b"\x16\x03\x01"), Sniff::Garbage);
        assert_eq!(sniff(b"\x00"), Sniff::Garbage);
    }

    #[test]
    fn parses_a_health_probe_and_waits_for_the_blank_line() {
        let probe = b"GET /health?serializable=true HTTP/1.1\r\nHost: a\r\n\r\nrest";
        assert_eq!(parse_request_head(&probe[..20]), Ok(None));
        let head = parse_request_head(probe).unwrap().unwrap();
        assert_eq!((head.method, head.path, head.head_bytes), ("GET", "/health", probe.len() - 4));
        assert!(parse_request_head(b"GET /health HTTP/1.0\n\n").unwrap().is_some());
    }

    #[test]
    fn refuses_bad_lines_and_endless_heads() {
        assert_eq!(
            parse_request_head(b"GET  /health HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(
            parse_request_head(b"GET health HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(
            parse_request_head(b"GET /health HTTP/2\r\n\r\n"),
            Err(HttpError::BadRequestLine)
        );
        let mut out = Vec::new();
        write_http_error(HttpError::HeadTooLarge, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let endless = vec![b'a'; HTTP_HEAD_BYTES_MAX];
        assert_eq!(parse_request_head(&endless), Err(HttpError::HeadTooLarge));
        assert_eq!(parse_request_head(&endless[..HTTP_HEAD_BYTES_MAX - 1]), Ok(None));
    }

    #[test]
    fn health_answers_follow_etcd() {
        let head = HttpRequest { method: "GET", path: "/health", head_bytes: 0 };
        let mut out = Vec::new();
        respond(&head, Health::Healthy, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"health\":\"true\"}"));
        let mut out = Vec::new();
        respond(&head, Health::Unhealthy(UnhealthyReason::NoLeader), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.ends_with("{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}"));
        let mut out = Vec::new();
        respond(&HttpRequest { path: "/metrics", ..head }, Health::Healthy, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }
}
