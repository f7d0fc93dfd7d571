//! Access control at the node: which token a connection carries, whether a
//! request may pass, the auth requests themselves, and the logins the
//! worker finished.
//!
//! A connection is bound to a token by `Authenticate` (a login, checked on
//! the worker) or `UseToken` (a token from any member, whose MAC is checked
//! once here). A connection without a token whose client certificate was
//! verified acts as the user the certificate's subject CN names, as etcd
//! does; a CN naming no user is denied everything but open requests. Every later request re-checks the bound token's expiry and
//! its user's epoch: two comparisons, no hashing. While auth is on a
//! request without a valid token gets `InvalidAuthToken`, except `Status`,
//! `AuthStatus`, `Authenticate` and `UseToken`; `/health` never reaches
//! here.
//!
//! Reads are checked here, where they are served; writes carry their
//! caller in the entry and are checked when applied (`state/auth.rs`), so
//! every member decides alike. Root-only reads (HashKv, user and role
//! lists) and the lease and member-list calls that need a user are checked
//! here too.

use std::time::{SystemTime, UNIX_EPOCH};

use super::clients::Identity;
use super::logins::{HashFor, Outcome, Refused, random_bytes};
use super::node::Node;
use super::proposals::Waiter;
use crate::auth::{self, AuthError, Need, Right, Span, password::SALT_BYTES, token};
use crate::proto::{self, ErrorBody, ErrorCode, Request, Response};
use crate::state::auth::{auth_error, permission, proto_permission};
use crate::state::{AuthOp, Caller, Op};

/// Milliseconds since the Unix epoch: tokens carry wall-clock times so
/// that any member can judge them.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// The caller a request of the waiter's connection is recorded as.
    pub(super) fn caller_of(&self, waiter: Waiter) -> Caller {
        match self.clients.identity(waiter) {
            Identity::Token(claims) => {
                Caller::User { name: claims.user.clone(), epoch: claims.epoch }
            }
            // The user's epoch as it is now: a certificate does not die
            // with a password change, but apply still refuses a user
            // deleted (or added again) since this request was admitted.
            Identity::Certificate(user) => {
                let epoch = self.state.auth().users.get(user).map_or(0, |u| u.epoch);
                Caller::User { name: user.to_string(), epoch }
            }
            Identity::Anonymous => Caller::Anonymous,
        }
    }

    /// The user the waiter acts as while auth is on, once its token (still
    /// valid) or its certificate (naming an existing user) checks out.
    fn acting_user(&self, waiter: Waiter) -> Result<&str, ErrorBody> {
        let auth = self.state.auth();
        match self.clients.identity(waiter) {
            Identity::Token(claims) => {
                auth.check_claims(claims, now_unix_ms())
                    .map_err(|_| ErrorCode::InvalidAuthToken)?;
                Ok(&claims.user)
            }
            Identity::Certificate(user) if auth.users.contains_key(user) => Ok(user),
            // etcd's rule: a certificate naming a missing user makes that
            // user all the same, one with no rights.
            Identity::Certificate(_) => Err(ErrorBody::new(ErrorCode::PermissionDenied)),
            Identity::Anonymous => Err(ErrorBody::new(ErrorCode::InvalidAuthToken)),
        }
    }

    /// Whether the request may go on: its connection's token is valid (when
    /// auth is on and the request needs one) and, for what is served here,
    /// its user has the rights it needs.
    pub(super) fn admit(&self, waiter: Waiter, request: &Request) -> Result<(), ErrorBody> {
        if let Request::Range(_) = request {
            // Checked where it is served (`check_read`), after a
            // linearizable read's ReadIndex round: a refusal then still
            // says the member reached a quorum, as a health probe needs.
            return Ok(());
        }
        self.check_served(waiter, request)
    }

    /// Whether the waiter may read what `r` selects, now.
    pub(super) fn check_read(
        &self,
        waiter: Waiter,
        r: &proto::RangeRequest,
    ) -> Result<(), ErrorBody> {
        let auth = self.state.auth();
        if !auth.enabled {
            return Ok(());
        }
        let user = self.acting_user(waiter)?;
        match auth.permits(user, Right::Read, &Span::of(&r.key, &r.range_end)) {
            true => Ok(()),
            false => Err(ErrorBody::new(ErrorCode::PermissionDenied)),
        }
    }

    fn check_served(&self, waiter: Waiter, request: &Request) -> Result<(), ErrorBody> {
        let auth = self.state.auth();
        let open = matches!(
            request,
            Request::Status | Request::AuthStatus | Request::Authenticate(_) | Request::UseToken(_)
        );
        if !auth.enabled || open {
            return Ok(());
        }
        let user = self.acting_user(waiter)?;
        if let Request::RoleGet(r) = request
            && auth.users.get(user).is_some_and(|u| u.roles.contains(&r.role))
        {
            // A user may see the roles it holds, as `user get --detail` does.
            return Ok(());
        }
        let needs = served_needs(request, user);
        auth.allows(Some(user), &needs).map_err(auth_error)
    }

    /// Handles an auth request; `false` for any other request.
    pub(super) fn auth_request(&mut self, waiter: Waiter, request: Request) -> bool {
        let caller = self.caller_of(waiter);
        let op = match request {
            Request::Authenticate(r) => return self.authenticate(waiter, r),
            Request::UseToken(r) => return self.use_token(waiter, &r.token),
            Request::AuthStatus => {
                let auth = self.state.auth();
                let response = proto::AuthStatusResponse {
                    header: self.header(),
                    enabled: auth.enabled,
                    auth_revision: auth.revision,
                };
                self.clients.answer(waiter, Ok(Response::AuthStatus(response)));
                return true;
            }
            Request::UserGet(_) | Request::UserList | Request::RoleGet(_) | Request::RoleList => {
                let result = self.auth_read(&request);
                self.clients.answer(waiter, result);
                return true;
            }
            Request::UserAdd(r) if !r.no_password => {
                return self.hash_then(waiter, r.password, HashFor::UserAdd { name: r.name });
            }
            Request::UserChangePassword(r) => {
                return self.hash_then(
                    waiter,
                    r.password,
                    HashFor::ChangePassword { name: r.name },
                );
            }
            Request::AuthEnable => match random_bytes::<{ token::KEY_BYTES }>() {
                Ok(key) => AuthOp::Enable { token_key: key.to_vec() },
                Err(_) => {
                    let error = ErrorBody::with_message(ErrorCode::Internal, "no random bytes");
                    self.clients.answer(waiter, Err(error));
                    return true;
                }
            },
            Request::AuthDisable => AuthOp::Disable,
            Request::UserAdd(r) => AuthOp::UserAdd { name: r.name, password: None },
            Request::UserDelete(r) => AuthOp::UserDelete(r.name),
            Request::UserGrantRole(r) => AuthOp::UserGrantRole { user: r.user, role: r.role },
            Request::UserRevokeRole(r) => AuthOp::UserRevokeRole { user: r.user, role: r.role },
            Request::RoleAdd(r) => AuthOp::RoleAdd(r.role),
            Request::RoleDelete(r) => AuthOp::RoleDelete(r.role),
            Request::RoleGrantPermission(r) => {
                AuthOp::RoleGrantPermission { role: r.role, permission: permission(&r.perm) }
            }
            Request::RoleRevokePermission(r) => {
                AuthOp::RoleRevokePermission { role: r.role, key: r.key, range_end: r.range_end }
            }
            _ => return false,
        };
        self.proposals.queue_write(waiter, Op::Auth(op), caller);
        true
    }

    fn authenticate(&mut self, waiter: Waiter, r: proto::AuthenticateRequest) -> bool {
        let auth = self.state.auth();
        if !auth.enabled {
            self.clients.answer(waiter, Err(ErrorBody::new(ErrorCode::AuthNotEnabled)));
            return true;
        }
        let now_ms = now_unix_ms();
        // No such user, or one without a password: `None`, which the
        // worker checks against a stand-in of the same cost and fails with
        // the same answer, so a login does not tell which names exist.
        let stored = auth.users.get(&r.name).and_then(|u| u.password.clone());
        if let Err(refused) = self.logins.verify(waiter, r.name, r.password, stored, now_ms) {
            self.clients.answer(waiter, Err(refused_error(refused)));
        }
        true
    }

    fn use_token(&mut self, waiter: Waiter, token: &str) -> bool {
        let auth = self.state.auth();
        let result = match auth.check_token(token, now_unix_ms()) {
            Ok(claims) => {
                self.clients.bind(waiter, claims);
                Ok(Response::UseToken(proto::AuthResponse { header: self.header() }))
            }
            Err(_) if !auth.enabled => Err(ErrorBody::new(ErrorCode::AuthNotEnabled)),
            Err(_) => Err(ErrorBody::new(ErrorCode::InvalidAuthToken)),
        };
        self.clients.answer(waiter, result);
        true
    }

    /// Hashes a new password on the worker; the write is proposed when the
    /// hash is back (`finish_logins`). Refused at once when the caller
    /// could not make the change anyway, so nobody spends the worker on a
    /// write that apply would refuse.
    fn hash_then(&mut self, waiter: Waiter, password: String, then: HashFor) -> bool {
        let auth = self.state.auth();
        let user = self.acting_user(waiter).ok();
        let own = matches!(&then, HashFor::ChangePassword { name } if user == Some(name.as_str()));
        if auth.enabled && !own && auth.allows(user, &[Need::Root]).is_err() {
            self.clients.answer(waiter, Err(ErrorBody::new(ErrorCode::PermissionDenied)));
            return true;
        }
        let result = match random_bytes::<SALT_BYTES>() {
            Ok(salt) => self.logins.hash(waiter, password, salt, then).map_err(refused_error),
            Err(_) => Err(ErrorBody::with_message(ErrorCode::Internal, "no random bytes")),
        };
        if let Err(error) = result {
            self.clients.answer(waiter, Err(error));
        }
        true
    }

    /// Answers the logins and proposes the password changes the worker
    /// finished.
    pub(super) fn finish_logins(&mut self) {
        let now_ms = now_unix_ms();
        for outcome in self.logins.finished(now_ms) {
            match outcome {
                Outcome::Verified { waiter, name, ok } => self.logged_in(waiter, &name, ok, now_ms),
                Outcome::Hashed { waiter, then, stored } => {
                    let op = match then {
                        HashFor::UserAdd { name } => {
                            AuthOp::UserAdd { name, password: Some(stored) }
                        }
                        HashFor::ChangePassword { name } => {
                            AuthOp::UserChangePassword { name, password: stored }
                        }
                    };
                    let caller = self.caller_of(waiter);
                    self.proposals.queue_write(waiter, Op::Auth(op), caller);
                }
            }
        }
    }

    fn logged_in(&mut self, waiter: Waiter, name: &str, ok: bool, now_ms: u64) {
        let auth = self.state.auth();
        let ttl_secs = self.config.auth_token_ttl_secs;
        let issued = match ok {
            true => auth.issue_token(name, now_ms, ttl_secs),
            false => Err(AuthError::AuthFailed),
        };
        let verified = issued.map_err(auth_error).and_then(|token| {
            let claims = auth.check_token(&token, now_ms).map_err(|_| ErrorCode::AuthFailed)?;
            Ok((token, claims))
        });
        let result = verified.map(|(token, claims)| {
            self.clients.bind(waiter, claims);
            let header = self.header();
            Response::Authenticate(proto::AuthenticateResponse { header, token })
        });
        self.clients.answer(waiter, result);
    }

    /// User and role reads, from this member's state.
    fn auth_read(&self, request: &Request) -> Result<Response, ErrorBody> {
        let auth = self.state.auth();
        let header = self.header();
        match request {
            Request::UserGet(r) => {
                let user = auth.users.get(&r.name).ok_or(ErrorCode::UserNotFound)?;
                let roles = user.roles.clone();
                Ok(Response::UserGet(proto::UserGetResponse { header, roles }))
            }
            Request::UserList => {
                let users = auth.users.keys().cloned().collect();
                Ok(Response::UserList(proto::UserListResponse { header, users }))
            }
            Request::RoleGet(r) => {
                let role = auth.roles.get(&r.role).ok_or(ErrorCode::RoleNotFound)?;
                let perm = role.permissions.iter().map(proto_permission).collect();
                Ok(Response::RoleGet(proto::RoleGetResponse { header, perm }))
            }
            Request::RoleList => {
                let roles = auth.roles.keys().cloned().collect();
                Ok(Response::RoleList(proto::RoleListResponse { header, roles }))
            }
            _ => Err(ErrorBody::new(ErrorCode::Internal)),
        }
    }

    /// After users or roles changed: watches whose user may no longer read
    /// their range (or whose token no longer holds) end with a reason.
    pub(super) fn recheck_watches(&mut self) {
        let header = self.header();
        let auth = self.state.auth();
        let now_ms = now_unix_ms();
        self.clients.cancel_watches_unless(header, |identity, key, range_end| {
            if !auth.enabled {
                return true;
            }
            let user = match identity {
                Identity::Token(claims) if auth.check_claims(claims, now_ms).is_ok() => {
                    claims.user.as_str()
                }
                Identity::Certificate(user) => user,
                Identity::Token(_) | Identity::Anonymous => return false,
            };
            auth.permits(user, Right::Read, &Span::of(key, range_end))
        });
    }

    /// The keys of a lease time-to-live answer the waiter's user may read.
    pub(super) fn readable_keys(&self, waiter: Waiter, keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let auth = self.state.auth();
        if !auth.enabled {
            return keys;
        }
        let Ok(user) = self.acting_user(waiter) else { return Vec::new() };
        keys.into_iter().filter(|k| auth.permits(user, Right::Read, &Span::of(k, &[]))).collect()
    }
}

/// What a request served by this member needs beyond a valid token.
/// Writes are checked when applied, from the entry's caller.
fn served_needs(request: &Request, user: &str) -> Vec<Need> {
    let read = |key: &[u8], end: &[u8]| vec![Need::Key(Right::Read, Span::of(key, end))];
    match request {
        Request::Range(r) => read(&r.key, &r.range_end),
        Request::WatchCreate(r) => vec![auth::needs::watch(&r.key, &r.range_end)],
        Request::HashKv(_) | Request::UserList | Request::RoleList | Request::RoleGet(_) => {
            vec![Need::Root]
        }
        Request::UserGet(r) if r.name != user => vec![Need::Root],
        Request::MemberAdd(_)
        | Request::MemberRemove(_)
        | Request::MemberUpdate(_)
        | Request::MemberPromote(_) => vec![Need::Root],
        Request::Alarm(r) if r.action != proto::AlarmAction::Get => vec![Need::Root],
        // A backup holds every key and every user's password hash.
        Request::Snapshot(_) | Request::MoveLeader(_) | Request::Defragment => vec![Need::Root],
        _ => vec![Need::Authenticated],
    }
}

fn refused_error(refused: Refused) -> ErrorBody {
    match refused {
        Refused::Backoff => ErrorBody::new(ErrorCode::LoginBackoff),
        Refused::Busy => ErrorBody::with_message(
            ErrorCode::LoginBackoff,
            "ember: too many logins at once, retry later",
        ),
    }
}
