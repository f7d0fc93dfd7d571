//! Ember's error codes as etcd's gRPC errors: the code and the exact
//! message text of etcd's `rpctypes`, since etcd's clients recognise errors
//! by that text ("required revision has been compacted" and friends).

use ember::proto::{ErrorBody, ErrorCode, GrpcCode};
use tonic::{Code, Status};

use crate::link::LinkError;

/// etcd's text for a request over `--max-request-bytes`; etcd answers it
/// with InvalidArgument.
pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";

/// The gRPC status an etcd member would answer for the same failure.
pub fn from_link(error: LinkError) -> Status {
    match error {
        LinkError::Server(body) => from_body(&body),
        LinkError::TooLarge => Status::invalid_argument(REQUEST_TOO_LARGE),
        // The request may have been applied: etcd's clients treat this
        // text as "outcome unknown" and do not retry a write on it.
        LinkError::Lost { sent: true, .. } => {
            Status::unavailable(ErrorCode::TimeoutDueToConnectionLost.message())
        }
        LinkError::Lost { sent: false, cause } => Status::unavailable(cause),
        LinkError::TimedOut => Status::unavailable(ErrorCode::Timeout.message()),
    }
}

/// An error frame from a node as etcd's status.
pub fn from_body(body: &ErrorBody) -> Status {
    let Some(code) = body.code() else {
        return Status::unknown(body.message.clone());
    };
    match code {
        // etcd prefixes these mvcc errors with the server's name.
        ErrorCode::Compacted | ErrorCode::FutureRevision => {
            Status::out_of_range(format!("etcdserver: {}", code.message()))
        }
        ErrorCode::RequestTooLarge => Status::invalid_argument(REQUEST_TOO_LARGE),
        _ => Status::new(grpc_code(code.grpc()), body.message.clone()),
    }
}

/// The status for a feature Ember does not have yet.
pub fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("ember: {what} is not implemented by Ember yet"))
}

fn grpc_code(code: GrpcCode) -> Code {
    Code::from_i32(code as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_errors_carry_etcds_exact_text() {
        let status = from_body(&ErrorBody::new(ErrorCode::Compacted));
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.message(), "etcdserver: mvcc: required revision has been compacted");
        let status = from_body(&ErrorBody::new(ErrorCode::FutureRevision));
        assert_eq!(status.message(), "etcdserver: mvcc: required revision is a future revision");
    }

    #[test]
    fn codes_follow_the_node_table() {
        let status = from_body(&ErrorBody::new(ErrorCode::TooManyOps));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "etcdserver: too many operations in txn request");
        let status = from_body(&ErrorBody::new(ErrorCode::NoLeader));
        assert_eq!((status.code(), status.message()), (Code::Unavailable, "etcdserver: no leader"));
        let status = from_body(&ErrorBody::new(ErrorCode::RequestTooLarge));
        assert_eq!(status.code(), Code::InvalidArgument);
        let unknown = ErrorBody { code_number: 4242, message: "later".into() };
        assert_eq!(from_body(&unknown).code(), Code::Unknown);
    }
}
