//! Logging in: a client that holds credentials binds each connection it
//! dials to a token, first by presenting the token it already has (valid on
//! any member: tokens are signed with a key the cluster shares), else by
//! logging in with its password. When a request meets `InvalidAuthToken`
//! (the token expired, or its user's password changed) a client holding a
//! password logs in again and sends the request once more: the refusal
//! came before anything was applied, so the retry cannot apply twice.

use std::time::Instant;

use super::connection::Connection;
use super::error::ClientError;
use super::{Failure, call};
use crate::proto::{AuthenticateRequest, ErrorCode, Request, Response, UseTokenRequest};

/// Who the client acts as.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    /// Needed to log in, and to log in again when the token expires.
    pub password: Option<String>,
    /// The token of the last login, shared with the watches this client
    /// opens.
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the password or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

/// Binds `connection` to a token for `credentials`, logging in when the
/// token is missing or refused. A cluster with auth off accepts anyone.
pub fn log_in(
    connection: &mut Connection,
    credentials: &mut Credentials,
    deadline: Instant,
) -> Result<(), ClientError> {
    if let Some(token) = credentials.token.clone() {
        let request = Request::UseToken(UseTokenRequest { token });
        match call(connection, &request, deadline) {
            Ok(_) => return Ok(()),
            Err(Failure::Answered(e)) if code(&e) == Some(ErrorCode::AuthNotEnabled) => {
                return Ok(());
            }
            Err(Failure::Answered(e))
                if code(&e) == Some(ErrorCode::InvalidAuthToken)
                    && credentials.password.is_some() =>
            {
                credentials.token = None;
            }
            Err(failure) => return Err(failure.into_error()),
        }
    }
    let Some(password) = credentials.password.clone() else {
        let endpoint = connection.endpoint().to_string();
        let error = crate::proto::ErrorBody::new(ErrorCode::InvalidAuthToken);
        return Err(ClientError::Server { endpoint, error });
    };
    let request =
        Request::Authenticate(AuthenticateRequest { name: credentials.user.clone(), password });
    match call(connection, &request, deadline) {
        Ok(Response::Authenticate(r)) => {
            credentials.token = Some(r.token);
            Ok(())
        }
        Ok(_) => unreachable!("call checks the answer's variant"),
        Err(Failure::Answered(e)) if code(&e) == Some(ErrorCode::AuthNotEnabled) => Ok(()),
        Err(failure) => Err(failure.into_error()),
    }
}

fn code(error: &ClientError) -> Option<ErrorCode> {
    error.code()
}
