//! Plain HTTP on the client port: telling it from the protocol, reading one
//! request head, routing it, and writing the answers of the probes
//! (`/health`, `/livez`, `/readyz`) and of a metrics scrape (`/metrics`).
//!
//! The client port speaks two languages. A protocol client opens with
//! `MAGIC` ("EMBR"); an HTTP client opens with a method and a space. `sniff`
//! decides from the first bytes. HTTP support is just enough for health
//! checks, load balancers and Prometheus: one request per connection, the
//! head read up to a hard cap, the body ignored, and `Connection: close` on
//! every answer. What the answers say comes from the caller: this module
//! only turns them into bytes.

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
    /// What follows the `?`, empty without one.
    pub query: &'a str,
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
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(HttpRequest { method, path, query, head_bytes }))
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
    /// The member's applied index is far behind the commit index it knows.
    NotCaughtUp,
}

impl UnhealthyReason {
    pub fn text(self) -> &'static str {
        match self {
            UnhealthyReason::NoLeader => "RAFT NO LEADER",
            UnhealthyReason::NoSpace => "ALARM NOSPACE",
            UnhealthyReason::Stopping => "SERVER STOPPING",
            UnhealthyReason::Corrupt => "ALARM CORRUPT",
            UnhealthyReason::NotCaughtUp => "NOT CAUGHT UP",
        }
    }
}

/// What a request head asks for, decided from its method, path and query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    pub route: Route,
    /// `HEAD`: the answer's head only.
    pub head_only: bool,
}

/// The endpoints of the client port (and of the metrics port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// etcd's `/health`; with `serializable=true` a member without a leader
    /// that can still serve local reads is healthy.
    Health {
        serializable: bool,
    },
    /// Kubernetes' liveness probe: the process serves local reads.
    /// `checks` are those asked for: all of `LIVEZ_CHECKS` but the ones
    /// `?exclude=` names, or the one of a sub-path (`/livez/<check>`).
    Livez {
        verbose: bool,
        checks: CheckSet,
    },
    /// Kubernetes' readiness probe: the member can serve linearizable
    /// requests; `checks` as for `Livez`, from `READYZ_CHECKS`.
    Readyz {
        verbose: bool,
        checks: CheckSet,
    },
    /// Prometheus' scrape.
    Metrics,
    /// A known path with a method other than GET or HEAD.
    MethodNotAllowed,
    NotFound,
}

impl Ask {
    /// Routes a request head. Query parameters other than the ones named
    /// are ignored, as etcd does.
    pub fn of(request: &HttpRequest<'_>) -> Ask {
        let head_only = request.method == "HEAD";
        let readable = matches!(request.method, "GET" | "HEAD");
        let verbose = query_has(request.query, "verbose");
        let livez = probe_checks(request, "/livez", LIVEZ_CHECKS);
        let readyz = probe_checks(request, "/readyz", READYZ_CHECKS);
        let known =
            matches!(request.path, "/health" | "/metrics") || livez.is_some() || readyz.is_some();
        let route = match (request.path, livez, readyz) {
            _ if known && !readable => Route::MethodNotAllowed,
            ("/health", _, _) => Route::Health {
                serializable: query_value(request.query, "serializable") == Some("true"),
            },
            ("/metrics", _, _) => Route::Metrics,
            (_, Some(checks), _) => Route::Livez { verbose, checks },
            (_, _, Some(checks)) => Route::Readyz { verbose, checks },
            _ => Route::NotFound,
        };
        Ask { route, head_only }
    }
}

/// The checks of a probe, etcd's names and meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckName {
    /// No `CORRUPT` alarm is raised in the cluster.
    DataCorruption,
    /// This member serves local reads.
    SerializableRead,
    /// This member serves linearizable reads: it knows a leader and has
    /// applied close to the commit index.
    LinearizableRead,
    /// This member is a voter, not a learner.
    NonLearner,
}

impl CheckName {
    pub fn text(self) -> &'static str {
        match self {
            CheckName::DataCorruption => "data_corruption",
            CheckName::SerializableRead => "serializable_read",
            CheckName::LinearizableRead => "linearizable_read",
            CheckName::NonLearner => "non_learner",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The checks of `/livez`, as etcd's.
pub const LIVEZ_CHECKS: &[CheckName] = &[CheckName::SerializableRead];

/// The checks of `/readyz`, as etcd's, in the order they are answered.
pub const READYZ_CHECKS: &[CheckName] = &[
    CheckName::DataCorruption,
    CheckName::SerializableRead,
    CheckName::LinearizableRead,
    CheckName::NonLearner,
];

/// A set of checks, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckSet(u8);

impl CheckSet {
    pub fn of(checks: &[CheckName]) -> CheckSet {
        CheckSet(checks.iter().fold(0, |bits, c| bits | c.bit()))
    }

    pub fn contains(self, check: CheckName) -> bool {
        self.0 & check.bit() != 0
    }

    fn without(self, check: CheckName) -> CheckSet {
        CheckSet(self.0 & !check.bit())
    }
}

/// The checks a request for a probe asks for: on `root`, every one of
/// `all` but those `exclude=` names (names it does not know are ignored,
/// as etcd does); on `root/<check>`, that check alone. `None` when the
/// path is neither.
fn probe_checks(request: &HttpRequest<'_>, root: &str, all: &[CheckName]) -> Option<CheckSet> {
    let rest = request.path.strip_prefix(root)?;
    if rest.is_empty() {
        let excluded = request.query.split('&').filter_map(|pair| pair.strip_prefix("exclude="));
        let excluded = excluded.filter_map(|name| all.iter().find(|c| c.text() == name));
        return Some(excluded.fold(CheckSet::of(all), |set, c| set.without(*c)));
    }
    let name = rest.strip_prefix('/')?;
    all.iter().find(|c| c.text() == name).map(|c| CheckSet::of(&[*c]))
}

/// The value of `name` in a query string (`a=1&b=2`), if present.
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Whether the query names `name` at all (`?verbose`, `?verbose=1`).
fn query_has(query: &str, name: &str) -> bool {
    query_value(query, name).is_some()
}

/// The answers that need nothing from the node: 404 and 405.
pub fn write_refusal(ask: Ask, out: &mut Vec<u8>) {
    match ask.route {
        Route::MethodNotAllowed => {
            write_response(405, "text/plain", b"method not allowed\n", false, out)
        }
        _ => write_response(404, "text/plain", b"not found\n", ask.head_only, out),
    }
}

/// One check of `/livez` or `/readyz` and, if it failed, why (the error
/// a request of that kind would get, or the alarm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: CheckName,
    pub failure: Option<&'static str>,
}

/// The answer of `/livez` or `/readyz` as etcd writes it: 200 `ok\n` when
/// every check passed, each check's line before it with `verbose`
/// (`[+]name ok`); otherwise 503 with every check's line (`[-]name failed:
/// why`) and a blank line.
pub fn write_checks(checks: &[Check], verbose: bool, head_only: bool, out: &mut Vec<u8>) {
    let mut lines = String::new();
    for check in checks {
        let name = check.name.text();
        match check.failure {
            None => lines.push_str(&format!("[+]{name} ok\n")),
            Some(why) => lines.push_str(&format!("[-]{name} failed: {why}\n")),
        }
    }
    let text = "text/plain; charset=utf-8";
    if checks.iter().any(|c| c.failure.is_some()) {
        let body = format!("{lines}\n");
        write_response(503, text, body.as_bytes(), head_only, out);
    } else {
        let body = if verbose { format!("{lines}ok\n") } else { "ok\n".to_string() };
        write_response(200, text, body.as_bytes(), head_only, out);
    }
}

/// The content type of Prometheus' text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to a scrape: the exposition, or 500 when it would have
/// passed its size cap (`None`).
pub fn write_metrics(exposition: Option<&[u8]>, head_only: bool, out: &mut Vec<u8>) {
    match exposition {
        Some(body) => write_response(200, METRICS_CONTENT_TYPE, body, head_only, out),
        None => {
            write_response(500, "text/plain", b"metrics exceed their size cap\n", head_only, out)
        }
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
        500 => "Internal Server Error",
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
        assert_eq!(head.query, "serializable=true");
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
        let mut out = Vec::new();
        write_health(Health::Healthy, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"health\":\"true\"}"));
        let mut out = Vec::new();
        write_health(Health::Unhealthy(UnhealthyReason::NoLeader), false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.ends_with("{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}"));
    }

    fn ask(line: &str) -> Ask {
        let head = format!("{line}\r\n\r\n");
        Ask::of(&parse_request_head(head.as_bytes()).unwrap().unwrap())
    }

    #[test]
    fn routes_by_method_path_and_query() {
        let health = |serializable| Route::Health { serializable };
        assert_eq!(ask("GET /health HTTP/1.1").route, health(false));
        assert_eq!(ask("GET /health?serializable=true HTTP/1.1").route, health(true));
        assert_eq!(ask("GET /health?serializable=false HTTP/1.1").route, health(false));
        assert_eq!(ask("GET /health?x=1&serializable=true HTTP/1.1").route, health(true));
        assert_eq!(ask("GET /metrics HTTP/1.1").route, Route::Metrics);
        assert_eq!(ask("POST /metrics HTTP/1.1").route, Route::MethodNotAllowed);
        assert_eq!(ask("GET /metricsx HTTP/1.1").route, Route::NotFound);
        assert!(ask("HEAD /readyz HTTP/1.1").head_only);
        let mut out = Vec::new();
        write_refusal(ask("GET /nothing HTTP/1.1"), &mut out);
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }

    #[test]
    fn probes_route_to_their_checks() {
        let all = CheckSet::of(READYZ_CHECKS);
        let readyz = |verbose, checks| Route::Readyz { verbose, checks };
        let live = CheckSet::of(LIVEZ_CHECKS);
        assert_eq!(ask("GET /livez HTTP/1.1").route, Route::Livez { verbose: false, checks: live });
        assert_eq!(ask("GET /readyz?verbose HTTP/1.1").route, readyz(true, all));
        let linearizable = CheckSet::of(&[CheckName::LinearizableRead]);
        assert_eq!(
            ask("GET /readyz/linearizable_read HTTP/1.1").route,
            readyz(false, linearizable)
        );
        let some =
            ask("GET /readyz?exclude=non_learner&exclude=data_corruption&exclude=x HTTP/1.1");
        let rest = CheckSet::of(&[CheckName::SerializableRead, CheckName::LinearizableRead]);
        assert_eq!(some.route, readyz(false, rest));
        assert_eq!(ask("GET /livez/linearizable_read HTTP/1.1").route, Route::NotFound);
        assert_eq!(ask("GET /readyz/nothing HTTP/1.1").route, Route::NotFound);
        assert_eq!(ask("GET /readyzx HTTP/1.1").route, Route::NotFound);
        assert_eq!(ask("POST /readyz/non_learner HTTP/1.1").route, Route::MethodNotAllowed);
    }

    #[test]
    fn checks_answer_ok_or_list_the_failures() {
        let read = Check { name: CheckName::SerializableRead, failure: None };
        let mut out = Vec::new();
        write_checks(&[read], false, false, &mut out);
        assert!(String::from_utf8(out).unwrap().ends_with("\r\n\r\nok\n"));
        let mut out = Vec::new();
        write_checks(&[read], true, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n\r\n[+]serializable_read ok\nok\n"), "{text}");
        let corrupt =
            Check { name: CheckName::DataCorruption, failure: Some("alarm activated: CORRUPT") };
        let mut out = Vec::new();
        write_checks(&[corrupt, read], false, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        let body =
            "[-]data_corruption failed: alarm activated: CORRUPT\n[+]serializable_read ok\n\n";
        assert!(text.ends_with(body), "{text}");
    }
}
