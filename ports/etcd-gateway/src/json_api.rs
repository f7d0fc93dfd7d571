//! etcd's JSON API (its grpc-gateway): `POST /v3/kv/range` and the rest,
//! on the same listener as gRPC, under `/v3/` and the older `/v3beta/`.
//!
//! Each path is one gRPC method. The body is the request in etcd's JSON
//! mapping (`transcode`); the answer goes through the very service the
//! gRPC clients use, so both APIs answer alike; the response is printed in
//! the same mapping. Errors are etcd's JSON error body with the HTTP status
//! grpc-gateway gives each gRPC code. The streaming methods (watch, lease
//! keep-alive) read a sequence of JSON requests from the body and answer
//! with one `{"result":...}` line per message.
//!
//! Unlike etcd, requests from web pages are refused (they carry `Origin`)
//! and no CORS headers are sent: a page the operator happens to open can
//! neither read nor write the store through the browser.

use std::future::Future;
use std::pin::Pin;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, post};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::gateway::Gateway;
use crate::json::{self, ParseError};
use crate::pb::etcdserverpb as pb;
use crate::transcode;

/// The largest JSON body read for one request: etcd's largest gRPC message
/// with its bytes in base64 (4 characters for 3 bytes) and room for the
/// field names around them. Larger bodies are refused unread.
pub const BODY_BYTES_MAX: usize = crate::flags::GRPC_MESSAGE_BYTES_MAX / 3 * 4 + 64 * 1024;

/// Requests decoded from a streaming body and not yet taken by the stream.
const STREAM_REQUESTS_BUFFERED_MAX: usize = 16;

/// The prefixes etcd 3.4 serves its JSON API under.
const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

type Answer<T> = Result<tonic::Response<T>, Status>;
type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub fn routes(gateway: Gateway) -> Router {
    let mut router = Router::new();
    for prefix in PREFIXES {
        for (path, method) in methods(&gateway) {
            router = router.route(&format!("{prefix}{path}"), method);
        }
        router = router.route(&format!("{prefix}/{{*rest}}"), any(not_found));
    }
    router
}

/// A service method as the closure `unary` and `server_streaming` call.
macro_rules! via {
    ($service:ident :: $method:ident) => {
        |g: Gateway, r| async move { $service::$method(&g, r).await }
    };
}

/// Every method with its path, as etcd's .proto files bind them.
fn methods(g: &Gateway) -> Vec<(&'static str, MethodRouter)> {
    use pb::auth_server::Auth as A;
    use pb::cluster_server::Cluster as C;
    use pb::kv_server::Kv;
    use pb::lease_server::Lease as L;
    use pb::maintenance_server::Maintenance as M;
    vec![
        ("/kv/range", unary(g, via!(Kv::range))),
        ("/kv/put", unary(g, via!(Kv::put))),
        ("/kv/deleterange", unary(g, via!(Kv::delete_range))),
        ("/kv/txn", unary(g, via!(Kv::txn))),
        ("/kv/compaction", unary(g, via!(Kv::compact))),
        ("/watch", streaming(g, |g, m, r| async move { g.open_watch(&m, r).await })),
        ("/lease/grant", unary(g, via!(L::lease_grant))),
        ("/lease/revoke", unary(g, via!(L::lease_revoke))),
        ("/kv/lease/revoke", unary(g, via!(L::lease_revoke))),
        ("/lease/keepalive", streaming(g, |g, m, r| async move { g.open_keep_alive(&m, r).await })),
        ("/lease/timetolive", unary(g, via!(L::lease_time_to_live))),
        ("/kv/lease/timetolive", unary(g, via!(L::lease_time_to_live))),
        ("/lease/leases", unary(g, via!(L::lease_leases))),
        ("/kv/lease/leases", unary(g, via!(L::lease_leases))),
        ("/cluster/member/add", unary(g, via!(C::member_add))),
        ("/cluster/member/remove", unary(g, via!(C::member_remove))),
        ("/cluster/member/update", unary(g, via!(C::member_update))),
        ("/cluster/member/list", unary(g, via!(C::member_list))),
        ("/cluster/member/promote", unary(g, via!(C::member_promote))),
        ("/maintenance/alarm", unary(g, via!(M::alarm))),
        ("/maintenance/status", unary(g, via!(M::status))),
        ("/maintenance/defragment", unary(g, via!(M::defragment))),
        // etcd binds HashKV to this path as well, but Hash is the one that
        // answers it there.
        ("/maintenance/hash", unary(g, via!(M::hash))),
        ("/maintenance/snapshot", server_streaming(g, via!(M::snapshot))),
        ("/maintenance/transfer-leadership", unary(g, via!(M::move_leader))),
        ("/auth/enable", unary(g, via!(A::auth_enable))),
        ("/auth/disable", unary(g, via!(A::auth_disable))),
        ("/auth/authenticate", unary(g, via!(A::authenticate))),
        ("/auth/user/add", unary(g, via!(A::user_add))),
        ("/auth/user/get", unary(g, via!(A::user_get))),
        ("/auth/user/list", unary(g, via!(A::user_list))),
        ("/auth/user/delete", unary(g, via!(A::user_delete))),
        ("/auth/user/changepw", unary(g, via!(A::user_change_password))),
        ("/auth/user/grant", unary(g, via!(A::user_grant_role))),
        ("/auth/user/revoke", unary(g, via!(A::user_revoke_role))),
        ("/auth/role/add", unary(g, via!(A::role_add))),
        ("/auth/role/get", unary(g, via!(A::role_get))),
        ("/auth/role/list", unary(g, via!(A::role_list))),
        ("/auth/role/delete", unary(g, via!(A::role_delete))),
        ("/auth/role/grant", unary(g, via!(A::role_grant_permission))),
        ("/auth/role/revoke", unary(g, via!(A::role_revoke_permission))),
    ]
}

/// A unary method: one JSON request in, one JSON answer out.
fn unary<Req, Resp, F, Fut>(gateway: &Gateway, call: F) -> MethodRouter
where
    Req: prost::Message + prost::Name + Default + Send + 'static,
    Resp: prost::Message + prost::Name + Send + 'static,
    F: Fn(Gateway, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer<Resp>> + Send + 'static,
{
    let gateway = gateway.clone();
    post(move |headers: HeaderMap, body: Body| {
        let (gateway, call) = (gateway.clone(), call.clone());
        async move {
            let request = match grpc_request::<Req>(&headers, body).await {
                Ok(request) => request,
                Err(refusal) => return refusal,
            };
            match call(gateway, request).await {
                Ok(answer) => ok(transcode::to_json(answer.get_ref())),
                Err(status) => error(&status),
            }
        }
    })
}

/// A method with one request and a stream of answers (snapshot).
fn server_streaming<Req, Resp, F, Fut>(gateway: &Gateway, call: F) -> MethodRouter
where
    Req: prost::Message + prost::Name + Default + Send + 'static,
    Resp: prost::Message + prost::Name + Send + 'static,
    F: Fn(Gateway, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer<BoxedStream<Resp>>> + Send + 'static,
{
    let gateway = gateway.clone();
    post(move |headers: HeaderMap, body: Body| {
        let (gateway, call) = (gateway.clone(), call.clone());
        async move {
            let request = match grpc_request::<Req>(&headers, body).await {
                Ok(request) => request,
                Err(refusal) => return refusal,
            };
            match call(gateway, request).await {
                Ok(answers) => stream_response(answers.into_inner()),
                Err(status) => error(&status),
            }
        }
    })
}

/// A method with streams both ways (watch, keep-alive): the body is read
/// as a sequence of JSON requests while the answers go out.
fn streaming<Req, Resp, F, Fut>(gateway: &Gateway, open: F) -> MethodRouter
where
    Req: prost::Message + prost::Name + Default + Send + 'static,
    Resp: prost::Message + prost::Name + Send + 'static,
    F: Fn(Gateway, MetadataMap, BoxedStream<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<BoxedStream<Resp>, Status>> + Send + 'static,
{
    let gateway = gateway.clone();
    post(move |headers: HeaderMap, body: Body| {
        let (gateway, open) = (gateway.clone(), open.clone());
        async move {
            if let Some(refusal) = refuse_browsers(&headers) {
                return refusal;
            }
            let mut requests = RequestReader::new(body);
            // As etcd's gateway: a first request that cannot be read is
            // the answer's error; a later one ends the requests.
            let first = match requests.next::<Req>().await {
                Ok(first) => first,
                Err(why) => return error(&Status::unknown(why)),
            };
            let (sender, receiver) = mpsc::channel(STREAM_REQUESTS_BUFFERED_MAX);
            if let Some(first) = first {
                let _ = sender.try_send(Ok(first));
                tokio::spawn(requests.forward(sender));
            }
            match open(gateway, metadata(&headers), Box::pin(ReceiverStream::new(receiver))).await {
                Ok(answers) => stream_response(answers),
                Err(status) => error(&status),
            }
        }
    })
}

/// A request a web browser sent on a page's behalf, refused before it is
/// read. Browsers name the page's origin in `Origin` on every cross-origin
/// POST; etcd's clients, curl and scripts send none. Without this a page
/// the operator happens to visit could write to the store (a form POST
/// needs no permission), even though it could not read the answer.
fn refuse_browsers(headers: &HeaderMap) -> Option<Response> {
    headers
        .contains_key(header::ORIGIN)
        .then(|| error(&Status::permission_denied("ember: requests from web pages are refused")))
}

/// The gRPC request a one-request method gets: browsers refused, the body
/// read as one JSON request, the headers as its metadata.
async fn grpc_request<Req>(headers: &HeaderMap, body: Body) -> Result<tonic::Request<Req>, Response>
where
    Req: prost::Message + prost::Name + Default,
{
    if let Some(refusal) = refuse_browsers(headers) {
        return Err(refusal);
    }
    let request = read_request::<Req>(body).await?;
    Ok(tonic::Request::from_parts(metadata(headers), Default::default(), request))
}

/// The whole body as one request; an empty body is the empty request, as
/// with etcd.
async fn read_request<Req>(body: Body) -> Result<Req, Response>
where
    Req: prost::Message + prost::Name + Default,
{
    let invalid = |why: String| error(&Status::invalid_argument(why));
    let bytes = axum::body::to_bytes(body, BODY_BYTES_MAX)
        .await
        .map_err(|_| error(&Status::invalid_argument(crate::status::REQUEST_TOO_LARGE)))?;
    let start = json::whitespace_len(&bytes);
    if start == bytes.len() {
        return Ok(Req::default());
    }
    let value = match json::parse_one(&bytes[start..]) {
        Ok((value, used))
            if json::whitespace_len(&bytes[start + used..]) == bytes.len() - start - used =>
        {
            value
        }
        Ok(_) => return Err(invalid("invalid character after top-level value".into())),
        // A body that ends inside a value, or a bare number, which must
        // be an object anyway.
        Err(ParseError::Incomplete) => {
            return Err(invalid(not_an_object_or_truncated(&bytes[start..])));
        }
        Err(ParseError::Invalid(why)) => return Err(invalid(why)),
    };
    transcode::from_json(&value).map_err(invalid)
}

fn not_an_object_or_truncated(body: &[u8]) -> String {
    if body.first() == Some(&b'{') {
        "unexpected EOF".to_string()
    } else {
        "the request must be a JSON object".to_string()
    }
}

/// Reads JSON requests one after another from a streaming body, as they
/// arrive. At most `BODY_BYTES_MAX` bytes of one unfinished request wait
/// in memory.
struct RequestReader {
    body: axum::body::BodyDataStream,
    buffer: Vec<u8>,
    ended: bool,
}

impl RequestReader {
    fn new(body: Body) -> RequestReader {
        RequestReader { body: body.into_data_stream(), buffer: Vec::new(), ended: false }
    }

    /// The next request; `None` when the body ends cleanly.
    async fn next<Req>(&mut self) -> Result<Option<Req>, String>
    where
        Req: prost::Message + prost::Name + Default,
    {
        loop {
            let start = json::whitespace_len(&self.buffer);
            self.buffer.drain(..start);
            if !self.buffer.is_empty() {
                match json::parse_one(&self.buffer) {
                    Ok((value, used)) => {
                        self.buffer.drain(..used);
                        return transcode::from_json(&value).map(Some);
                    }
                    Err(ParseError::Invalid(why)) => return Err(why),
                    Err(ParseError::Incomplete) if self.ended => {
                        // A number closing the body is whole; anything
                        // else is cut short.
                        self.buffer.push(b' ');
                        if let Ok((value, _)) = json::parse_one(&self.buffer) {
                            self.buffer.clear();
                            return transcode::from_json(&value).map(Some);
                        }
                        return Err("unexpected EOF".into());
                    }
                    Err(ParseError::Incomplete) => {}
                }
            } else if self.ended {
                return Ok(None);
            }
            if self.buffer.len() > BODY_BYTES_MAX {
                return Err(crate::status::REQUEST_TOO_LARGE.into());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => return Err(error.to_string()),
                None => self.ended = true,
            }
        }
    }

    /// Hands every further request to `requests` until the body ends, a
    /// request cannot be read, or the stream stops taking them.
    async fn forward<Req>(mut self, requests: mpsc::Sender<Result<Req, Status>>)
    where
        Req: prost::Message + prost::Name + Default,
    {
        while let Ok(Some(request)) = self.next::<Req>().await {
            if requests.send(Ok(request)).await.is_err() {
                return;
            }
        }
    }
}

/// etcd's streamed answers: one `{"result":...}` line per message, and an
/// error as the last line.
fn stream_response<Resp>(answers: BoxedStream<Resp>) -> Response
where
    Resp: prost::Message + prost::Name + Send + 'static,
{
    let mut failed = false;
    let lines = answers.map_while(move |answer| {
        if failed {
            return None;
        }
        let line = match answer {
            Ok(message) => format!("{{\"result\":{}}}\n", transcode::to_json(&message)),
            Err(status) => {
                failed = true;
                format!("{{\"error\":{}}}\n", stream_error(&status))
            }
        };
        Some(Ok::<Bytes, std::convert::Infallible>(Bytes::from(line)))
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(lines))
        .into_response()
}

/// grpc-gateway's error inside a stream, which differs from its error body.
fn stream_error(status: &Status) -> String {
    let http = http_status(status.code());
    let mut out = format!(
        "{{\"grpc_code\":{},\"http_code\":{},\"message\":",
        status.code() as i32,
        http.as_u16()
    );
    json::write_string(&mut out, status.message());
    out.push_str(",\"http_status\":");
    json::write_string(&mut out, http.canonical_reason().unwrap_or(""));
    out.push('}');
    out
}

/// gRPC metadata from the headers grpc-gateway forwards: `Grpc-Metadata-X`
/// becomes `x` (a client asks for `hasleader` that way), and
/// `Authorization` stays `authorization` (the token a client got from
/// `/v3/auth/authenticate`).
fn metadata(headers: &HeaderMap) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let key = match name.as_str() {
            "authorization" => Some("authorization"),
            other => other.strip_prefix("grpc-metadata-"),
        };
        let Some(key) = key else { continue };
        let (Ok(key), Ok(value)) =
            (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_bytes()))
        else {
            continue;
        };
        metadata.insert(key, value);
    }
    metadata
}

fn ok(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// etcd's JSON error body: the message twice and the gRPC code.
fn error(status: &Status) -> Response {
    let mut body = String::from("{\"error\":");
    json::write_string(&mut body, status.message());
    body.push_str(",\"message\":");
    json::write_string(&mut body, status.message());
    body.push_str(&format!(",\"code\":{}}}", status.code() as i32));
    (http_status(status.code()), [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "Not Found\n")
        .into_response()
}

/// The HTTP status grpc-gateway answers each gRPC code with.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_carry_the_message_twice_and_the_grpc_code() {
        let status = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert_eq!(http_status(status.code()), StatusCode::BAD_REQUEST);
        assert_eq!(
            stream_error(&Status::unavailable("etcdserver: no leader")),
            r#"{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}"#
        );
    }

    #[test]
    fn grpc_metadata_headers_become_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-metadata-hasleader", "true".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        let metadata = metadata(&headers);
        assert_eq!(metadata.get("hasleader").unwrap(), "true");
        assert!(metadata.get("content-type").is_none());
    }
}
